/* ingress_zmq.c — the ZeroMQ ROUTER publish ingress (see ingress_zmq.h). */
#include "ingress_zmq.h"

#include <errno.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "bytes.h"
#include "codec.h"
#include "herald/error.h"
#include "log.h"
#include "pubcap.h"

#define MAX_ENVELOPE 16         /* frames before the body; more is not a real client */
#define MAX_INFLIGHT 65536      /* requests waiting for their commit */

typedef struct zreq zreq;

/* One message of a batch in flight: where its outcome goes. */
typedef struct zitem {
  zreq *r;
  uint64_t id;
  int status;
  const char *reason;           /* static text */
} zitem;

struct zreq {
  struct zreq *next;
  hd_zmq_ingress *z;
  size_t nenv;
  size_t envlen[MAX_ENVELOPE];
  char *env;                    /* envelope frames back to back: env_inline or malloc'd */
  char env_inline[32];          /* a DEALER's routing id + a correlation frame fit */
  char *reply;                  /* reply_inline or malloc'd */
  size_t reply_len;
  char reply_inline[32];        /* {"id": "<20 digits>"} fits */
  hd_zmq_request q;
  zitem *items;                 /* a batch: one per message; NULL otherwise */
  size_t pending;               /* batch messages not yet committed or refused */
};

struct hd_zmq_ingress {
  hd_broker *b;
  void *sock;
  uv_poll_t poll;
  uv_timer_t retry;             /* replies blocked by a peer's full pipe */
  uv_check_t flush;             /* sends the replies queued during this loop turn */
  size_t max_frame;
  size_t inflight;
  zreq *outq, *outq_tail;
  int draining, redrain;        /* drain() is running; a nested call asked for another round */
  int stopping;
  int closed;
  char endpoint[256];
};

static void drain(hd_zmq_ingress *z);

void hd__zmq_request_clear(hd_zmq_request *r) {
  free(r->items);
  free(r->mem);
  memset(r, 0, sizeof *r);
}

static void zreq_free(zreq *r) {
  free(r->items);
  if (r->env != r->env_inline) free(r->env);
  if (r->reply != r->reply_inline) free(r->reply);
  hd__zmq_request_clear(&r->q);
  free(r);
}

static void pk_str(msgpack_packer *pk, const char *s) {
  size_t n = strlen(s);
  msgpack_pack_str(pk, n);
  msgpack_pack_str_body(pk, s, n);
}

/* Ids go out as decimal strings (a u64 does not fit every client's number type). Not
 * snprintf: a batch reply writes a thousand of them. */
static void pk_id(msgpack_packer *pk, uint64_t id) {
  char buf[20];
  size_t n = hd_u64_dec(buf, id);
  msgpack_pack_str(pk, n);
  msgpack_pack_str_body(pk, buf, n);
}

static void enqueue(zreq *r, msgpack_sbuffer *sb);
static void enqueue_bytes(zreq *r, char *reply, size_t len);
static void on_flush(uv_check_t *c);

/* msgpack writer into a zreq's reply_inline (the common reply needs no allocation). */
static int inline_write(void *data, const char *buf, size_t len) {
  zreq *r = data;
  if (sizeof r->reply_inline - r->reply_len < len) return -1;
  memcpy(r->reply_inline + r->reply_len, buf, len);
  r->reply_len += len;
  return 0;
}

/* The one reply of a batch: ids in order (nil where refused), and the refusals. */
static void reply_batch(zreq *r) {
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  size_t n = r->q.nitems, nerr = 0;
  for (size_t i = 0; i < n; i++) nerr += r->items[i].status != 0;
  msgpack_pack_map(&pk, nerr ? 2 : 1);
  pk_str(&pk, "ids");
  msgpack_pack_array(&pk, n);
  for (size_t i = 0; i < n; i++) {
    if (r->items[i].status) msgpack_pack_nil(&pk);
    else pk_id(&pk, r->items[i].id);
  }
  if (nerr) {
    pk_str(&pk, "errors");
    msgpack_pack_array(&pk, nerr);
    for (size_t i = 0; i < n; i++) {
      zitem *it = &r->items[i];
      if (!it->status) continue;
      msgpack_pack_map(&pk, 3);
      pk_str(&pk, "index");
      msgpack_pack_uint64(&pk, i);
      pk_str(&pk, "error");
      pk_str(&pk, hd_err_code(it->status));
      pk_str(&pk, "message");
      pk_str(&pk, it->reason ? it->reason : hd_strerror(it->status));
    }
  }
  enqueue(r, &sb);
}

/* Queue the reply and push the socket along. */
static void reply(zreq *r, int status, uint64_t id, const char *reason) {
  msgpack_sbuffer sb;
  msgpack_packer pk;
  if (status == 0) {
    r->reply_len = 0;
    msgpack_packer_init(&pk, r, inline_write);
    msgpack_pack_map(&pk, 1);
    pk_str(&pk, "id");
    pk_id(&pk, id);
    enqueue_bytes(r, r->reply_inline, r->reply_len);
    return;
  }
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_map(&pk, 2);
  pk_str(&pk, "error");
  pk_str(&pk, hd_err_code(status));
  pk_str(&pk, "message");
  pk_str(&pk, reason ? reason : hd_strerror(status));
  enqueue(r, &sb);
}

static void enqueue(zreq *r, msgpack_sbuffer *sb) {
  enqueue_bytes(r, sb->data, sb->size); /* the sbuffer's malloc'd block becomes ours */
}

static void enqueue_bytes(zreq *r, char *reply, size_t len) {
  r->reply = reply;
  r->reply_len = len;
  hd_zmq_ingress *z = r->z;
  if (z->closed) {
    zreq_free(r);
    return;
  }
  r->next = NULL;
  if (z->outq_tail) z->outq_tail->next = r;
  else z->outq = r;
  z->outq_tail = r;
  /* Not drain() per reply: a commit completes ~100 publishes in one loop turn, and draining
   * after each would take in (and hold back) new requests between the replies of the batch.
   * The check handle runs once the turn's callbacks are done, so the whole batch leaves
   * together. */
  if (z->draining) z->redrain = 1;
  else if (!uv_is_active((uv_handle_t *)&z->flush)) uv_check_start(&z->flush, on_flush);
}

static void on_published(void *ud, int status, uint64_t id, const char *reason) {
  zreq *r = ud;
  r->z->inflight--;
  reply(r, status, id, reason);
}

static void on_item_published(void *ud, int status, uint64_t id, const char *reason) {
  zitem *it = ud;
  zreq *r = it->r;
  r->z->inflight--;
  it->status = status;
  it->id = id;
  it->reason = reason;
  if (--r->pending == 0) reply_batch(r);
}

/* Where a request's strings and data go: one block per request instead of an allocation per
 * field. It is sized from the frame: a string's copy with its NUL is no longer than its msgpack
 * encoding (at least one header byte), and data is kept as the bytes it came in, so every field
 * of one frame fits in the frame's length. The bound is still checked on every copy. */
typedef struct arena {
  char *p;
  size_t used, cap;
} arena;

static char *arena_copy(arena *a, const void *src, size_t n, int nul) {
  if (a->cap - a->used < n + (size_t)nul) return NULL;
  char *d = a->p + a->used;
  memcpy(d, src, n);
  if (nul) d[n] = 0;
  a->used += n + (size_t)nul;
  return d;
}

/* A string field's copy: NULL if v is not a str or holds a NUL (ids and keys never do). */
static char *val_str(arena *a, const hd_mp_val *v) {
  if (v->kind != HD_MP_STR || memchr(v->s, 0, v->n)) return NULL;
  return arena_copy(a, v->s, v->n, 1);
}

#define KEY_IS(lit) (k->n == sizeof(lit) - 1 && memcmp(k->s, lit, sizeof(lit) - 1) == 0)

/* A field of one message (to, collapse, ttl, data) whose key is k, value next in r, into *it:
 * 1 if k names one of them (the value taken), 0 if not (nothing taken), or a negative HD_E*
 * with *why. The top level of a request and each batch element share it. */
static int msg_field(arena *a, hd_mp *r, int depth, const hd_mp_val *k, hd_zmq_item *it,
                     const char **why) {
  hd_mp_val v;
  char **dst;
  if (KEY_IS("data")) {
    /* Kept as it came: any one well-formed msgpack value, its depth counted from the body's
     * top (depth is that of the map holding it). */
    const unsigned char *at;
    size_t n;
    if (hd__mp_skip(r, depth + 1, &at, &n) || !(it->data = arena_copy(a, at, n, 0))) {
      *why = "body is not one well-formed msgpack value";
      return HD_EINVAL;
    }
    it->data_len = n;
    return 1;
  }
  if (KEY_IS("ttl")) {
    int ok = hd__mp_next(r, &v) == 0;
    if (ok && v.kind == HD_MP_UINT && v.u >= 1 && v.u <= INT64_MAX) {
      it->ttl = (int64_t)v.u;
      return 1;
    }
    if (ok && v.kind == HD_MP_NIL) return 1;
    *why = "ttl must be a positive integer (seconds)";
    return HD_EINVAL;
  }
  if (KEY_IS("to")) dst = &it->to;
  else if (KEY_IS("collapse")) dst = &it->collapse;
  else return 0;
  if (hd__mp_next(r, &v) == 0 && v.kind == HD_MP_NIL) return 1;
  if (!(*dst = val_str(a, &v))) {
    *why = "to and collapse must be strings";
    return HD_EINVAL;
  }
  return 1;
}

/* One element of "batch" (a map at depth 2: body, batch, element): to, data, ttl, collapse.
 * 0, or HD_E* with *why. */
static int parse_item(arena *a, hd_mp *r, hd_zmq_item *it, const char **why) {
  hd_mp_val m, k;
  if (hd__mp_next(r, &m) || m.kind != HD_MP_MAP) {
    *why = "each batch element must be a msgpack map";
    return HD_EINVAL;
  }
  for (uint64_t i = 0; i < m.n; i++) {
    if (hd__mp_next(r, &k) || k.kind != HD_MP_STR) {
      *why = "map keys must be strings";
      return HD_EINVAL;
    }
    int rc = msg_field(a, r, 2, &k, it, why);
    if (rc < 0) return rc;
    if (rc == 0) {
      *why = "unknown field in a batch element (allowed: to, data, ttl, collapse)";
      return HD_EINVAL;
    }
  }
  return 0;
}

/* Our own reader rather than msgpack-c's unpacker: one pass that builds nothing and checks as
 * it reads (every read bounded by the frame, "data" depth-capped from the body's top, nothing
 * after the map), and "data" kept as the bytes it came in, not unpacked and packed again (the
 * two were a fifth of the loop's time under ingest; a separate validating pass before this
 * one was another tenth). It accepts exactly the bodies hd__codec_msgpack_validate does that
 * are publish requests. */
int hd__zmq_request_parse(const char *body, size_t len, hd_zmq_request *r, const char **why) {
  hd_zmq_item one = {0}; /* a single message's fields, moved into r once all is well */
  memset(r, 0, sizeof *r);
  int rc = HD_EINVAL;
  if (!(r->mem = malloc(len + 1))) {
    *why = "out of memory";
    return HD_ENOMEM;
  }
  arena ar = {.p = r->mem, .cap = len + 1};
  hd_mp mp = {(const unsigned char *)body, (const unsigned char *)body + len};
  hd_mp_val top, kv, v;
  if (hd__mp_next(&mp, &top) || top.kind != HD_MP_MAP) {
    *why = "body must be a msgpack map";
    goto out;
  }
  int single = 0; /* a field of one message was given: exclusive with batch */
  for (uint64_t i = 0; i < top.n; i++) {
    const hd_mp_val *k = &kv;
    if (hd__mp_next(&mp, &kv) || kv.kind != HD_MP_STR) {
      *why = "map keys must be strings";
      goto out;
    }
    char **dst = NULL;
    if (KEY_IS("tenant")) dst = &r->tenant;
    else if (KEY_IS("key")) dst = &r->key;
    else if (KEY_IS("app")) dst = &r->app;
    else if (KEY_IS("batch")) {
      if (hd__mp_next(&mp, &v) || v.kind != HD_MP_ARRAY || v.n < 1 ||
          v.n > HD_ZMQ_MAX_BATCH || r->items) {
        *why = "batch must be an array of 1 to 1000 maps";
        goto out;
      }
      r->items = calloc(v.n, sizeof *r->items);
      if (!r->items) {
        rc = HD_ENOMEM;
        *why = "out of memory";
        goto out;
      }
      r->nitems = v.n;
      for (uint64_t j = 0; j < v.n; j++)
        if ((rc = parse_item(&ar, &mp, &r->items[j], why))) goto out;
      rc = HD_EINVAL;
      continue;
    } else {
      int f = msg_field(&ar, &mp, 0, k, &one, why);
      if (f < 0) {
        rc = f;
        goto out;
      }
      if (f == 0) {
        *why = "unknown field (allowed: tenant, key, app, to, data, ttl, collapse, batch)";
        goto out;
      }
      single = 1;
      continue;
    }
    if (hd__mp_next(&mp, &v) || !(*dst = val_str(&ar, &v))) {
      *why = "tenant, key and app must be strings";
      goto out;
    }
  }
  if (mp.p != mp.end) {
    *why = "body is not one well-formed msgpack value";
    goto out;
  }
  if (!r->key) {
    rc = HD_EAUTH;
    *why = "missing publish key";
    goto out;
  }
  if (!r->app) {
    *why = "missing app";
    goto out;
  }
  if (single && r->items) {
    *why = "batch and a single message's to, data, ttl, collapse are exclusive";
    goto out;
  }
  r->to = one.to;
  r->collapse = one.collapse;
  r->data = one.data;
  r->data_len = one.data_len;
  r->ttl = one.ttl;
  rc = 0;
out:
  if (rc) hd__zmq_request_clear(r);
  return rc;
}

#undef KEY_IS

static void handle_request(hd_zmq_ingress *z, zreq *r, const char *body, size_t len,
                           int too_big) {
  const char *why = NULL;
  int rc;
  if (too_big) {
    hd__broker_count_refusal(z->b, HD_INGRESS_ZMQ);
    reply(r, HD_ETOOBIG, 0, "request larger than zmq max_frame");
    return;
  }
  if ((rc = hd__zmq_request_parse(body, len, &r->q, &why))) {
    hd__broker_count_refusal(z->b, HD_INGRESS_ZMQ);
    reply(r, rc, 0, why);
    return;
  }
  hd_zmq_request *q = &r->q;
  hd_tenant *t = hd__tenant_by_key(&z->b->tenants, q->key);
  /* One answer for a wrong key and an unknown tenant: nothing is revealed about either. */
  if (!t || strcmp(t->name, q->tenant ? q->tenant : "default") != 0) {
    hd__broker_count_refusal(z->b, HD_INGRESS_ZMQ);
    reply(r, HD_EAUTH, 0, "wrong publish key for this tenant");
    return;
  }
  static const unsigned char nil = 0xc0;
  if (q->nitems) {
    r->items = calloc(q->nitems, sizeof *r->items);
    if (!r->items) {
      reply(r, HD_ENOMEM, 0, NULL);
      return;
    }
    /* pending counts down to the reply; hold one extra until every publish was handed over,
     * so a batch whose messages all fail validation at once still replies exactly once. */
    r->pending = q->nitems + 1;
    for (size_t i = 0; i < q->nitems; i++) {
      hd_zmq_item *it = &q->items[i];
      r->items[i].r = r;
      if (!hd__pubcap_admit(z->b, t, HD_INGRESS_ZMQ, NULL)) {
        r->items[i].status = HD_ERATE;
        r->items[i].reason = "tenant is over its max_publish_rate";
        r->pending--;
        continue;
      }
      hd_pubreq ipr = {
          .tenant = t,
          .appid = q->app,
          .to = it->to,
          .data = it->data ? (const void *)it->data : &nil,
          .data_len = it->data ? it->data_len : 1,
          .ttl_s = it->ttl,
          .collapse = it->collapse,
          .ingress = HD_INGRESS_ZMQ,
      };
      z->inflight++;
      hd__broker_publish(z->b, &ipr, on_item_published, &r->items[i]);
    }
    if (--r->pending == 0) reply_batch(r);
    return;
  }
  if (!hd__pubcap_admit(z->b, t, HD_INGRESS_ZMQ, NULL)) {
    reply(r, HD_ERATE, 0, "tenant is over its max_publish_rate");
    return;
  }
  hd_pubreq pr = {
      .tenant = t,
      .appid = q->app,
      .to = q->to,
      .data = q->data ? (const void *)q->data : &nil,
      .data_len = q->data ? q->data_len : 1,
      .ttl_s = q->ttl,
      .collapse = q->collapse,
      .ingress = HD_INGRESS_ZMQ,
  };
  z->inflight++;
  hd__broker_publish(z->b, &pr, on_published, r);
}

/* Receive one whole multipart message. Returns 1 if one was taken, 0 if none was waiting. */
static int recv_one(hd_zmq_ingress *z) {
  zmq_msg_t part;
  zreq *r = calloc(1, sizeof *r);
  if (!r) return 0;
  r->z = z;
  r->env = r->env_inline;
  size_t envcap = sizeof r->env_inline, envused = 0;
  int too_big = 0, bad = 0, got = 0, body = 0;
  for (;;) {
    zmq_msg_init(&part);
    if (zmq_msg_recv(&part, z->sock, ZMQ_DONTWAIT) < 0) {
      zmq_msg_close(&part);
      break; /* EAGAIN on the first part: nothing waiting */
    }
    got = 1;
    size_t n = zmq_msg_size(&part);
    if (!zmq_msg_more(&part)) {
      body = 1; /* parsed in place below, then closed */
      break;
    }
    /* Envelope frame: keep it to route the reply back. */
    if (r->nenv < MAX_ENVELOPE && n <= 256 && !bad) {
      if (envused + n > envcap) {
        envcap = (envused + n) * 2 + 64;
        char *e = r->env == r->env_inline ? malloc(envcap) : realloc(r->env, envcap);
        if (!e) {
          bad = 1;
        } else {
          if (r->env == r->env_inline) memcpy(e, r->env_inline, envused);
          r->env = e;
        }
      }
      if (!bad) {
        memcpy(r->env + envused, zmq_msg_data(&part), n);
        envused += n;
        r->envlen[r->nenv++] = n;
      }
    } else {
      bad = 1;
    }
    zmq_msg_close(&part);
  }
  if (!got) {
    zreq_free(r);
    return 0;
  }
  if (bad || !body || r->nenv == 0) {
    /* No way to answer (no identity) or an envelope no client sends: drop it, say why. */
    hd__log(HD_LOG_WARN, "zmq_request_dropped", "reason=%s",
            r->nenv == 0 ? "no_envelope" : "bad_envelope");
    if (body) zmq_msg_close(&part);
    zreq_free(r);
    return 1;
  }
  if (zmq_msg_size(&part) > z->max_frame) too_big = 1;
  handle_request(z, r, zmq_msg_data(&part), zmq_msg_size(&part), too_big);
  zmq_msg_close(&part);
  return 1;
}

/* Send one queued reply. Returns 1 if sent or dropped, 0 if the peer's pipe is full. */
static int send_one(hd_zmq_ingress *z) {
  zreq *r = z->outq;
  size_t off = 0;
  for (size_t i = 0; i < r->nenv; i++) {
    /* The first frame decides: once it is accepted the rest of the message follows. */
    if (zmq_send(z->sock, r->env + off, r->envlen[i], ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
      if (i == 0 && zmq_errno() == EAGAIN) return 0;
      goto drop; /* EHOSTUNREACH: the client is gone */
    }
    off += r->envlen[i];
  }
  zmq_send(z->sock, r->reply, r->reply_len, ZMQ_DONTWAIT);
drop:
  z->outq = r->next;
  if (!z->outq) z->outq_tail = NULL;
  zreq_free(r);
  return 1;
}

static void on_retry(uv_timer_t *t) { drain(t->data); }

static void on_flush(uv_check_t *c) {
  uv_check_stop(c);
  drain(c->data);
}

/* Most requests taken per drain before the loop gets a turn (the rest continue from a 0 ms
 * timer, since the edge-triggered fd will not tell again). */
#define DRAIN_BUDGET 4096

static void drain(hd_zmq_ingress *z) {
  if (z->closed) return;
  /* A reply queued from inside a drain (a request refused at once) must not recurse: the
   * running drain goes round once more instead. */
  if (z->draining) {
    z->redrain = 1;
    return;
  }
  z->draining = 1;
  size_t taken = 0;
  do {
    z->redrain = 0;
    int blocked = 0;
    while (z->outq && !blocked) {
      if (!send_one(z)) {
        blocked = 1;
        if (!uv_is_active((uv_handle_t *)&z->retry))
          uv_timer_start(&z->retry, on_retry, 5, 0); /* a peer's pipe is full: try again soon */
      }
    }
    /* Receive until none is waiting: one ZMQ_EVENTS check per round, not per request (each
     * costs libzmq a poll of its mailbox). */
    while (!z->stopping && z->inflight < MAX_INFLIGHT && taken < DRAIN_BUDGET && recv_one(z))
      taken++;
    if (taken >= DRAIN_BUDGET) {
      if (!uv_is_active((uv_handle_t *)&z->retry)) uv_timer_start(&z->retry, on_retry, 0, 0);
      break;
    }
    /* The fd is edge-triggered: only return once libzmq says nothing we can act on is left. */
    int ev = 0;
    size_t sz = sizeof ev;
    if (zmq_getsockopt(z->sock, ZMQ_EVENTS, &ev, &sz) != 0) break;
    if ((ev & ZMQ_POLLIN) && !z->stopping && z->inflight < MAX_INFLIGHT) z->redrain = 1;
    if ((ev & ZMQ_POLLOUT) && z->outq && !blocked) z->redrain = 1;
  } while (z->redrain);
  z->draining = 0;
}

static void on_poll(uv_poll_t *p, int status, int events) { drain(p->data); }

int hd__zmq_ingress_open(hd_broker *b, const char *endpoint, size_t max_frame,
                         hd_zmq_ingress **out, char *err, size_t errlen) {
  hd_zmq_ingress *z = calloc(1, sizeof *z);
  if (!z) return HD_ENOMEM;
  z->b = b;
  z->max_frame = max_frame;
  z->sock = zmq_socket(b->zctx, ZMQ_ROUTER);
  if (!z->sock) goto zfail;
  int one = 1, linger = 2000;
  /* Hard cap well above max_frame: a frame past max_frame gets a too_large reply, one past
   * this is dropped by libzmq with the connection, so nobody can make us buffer gigabytes. */
  int64_t hard = (int64_t)max_frame * 4 + 4096;
  zmq_setsockopt(z->sock, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
  zmq_setsockopt(z->sock, ZMQ_LINGER, &linger, sizeof linger);
  zmq_setsockopt(z->sock, ZMQ_MAXMSGSIZE, &hard, sizeof hard);
  if (zmq_bind(z->sock, endpoint) != 0) goto zfail;
  size_t eplen = sizeof z->endpoint;
  if (zmq_getsockopt(z->sock, ZMQ_LAST_ENDPOINT, z->endpoint, &eplen) != 0)
    snprintf(z->endpoint, sizeof z->endpoint, "%s", endpoint);
  int fd;
  size_t fdsz = sizeof fd;
  if (zmq_getsockopt(z->sock, ZMQ_FD, &fd, &fdsz) != 0) goto zfail;
  uv_poll_init(b->loop, &z->poll, fd);
  z->poll.data = z;
  uv_timer_init(b->loop, &z->retry);
  z->retry.data = z;
  uv_check_init(b->loop, &z->flush);
  z->flush.data = z;
  uv_poll_start(&z->poll, UV_READABLE, on_poll);
  *out = z;
  return 0;
zfail:
  snprintf(err, errlen, "zmq ingress %s: %s", endpoint, zmq_strerror(zmq_errno()));
  if (z->sock) zmq_close(z->sock);
  free(z);
  return HD_EIO;
}

void hd__zmq_ingress_stop(hd_zmq_ingress *z) {
  if (z) z->stopping = 1;
}

size_t hd__zmq_ingress_inflight(const hd_zmq_ingress *z) { return z ? z->inflight : 0; }

const char *hd__zmq_ingress_endpoint(const hd_zmq_ingress *z) { return z->endpoint; }

static void on_closed(uv_handle_t *h) {
  hd_zmq_ingress *z = h->data;
  if (--z->closed == 0) free(z);
}

void hd__zmq_ingress_close(hd_zmq_ingress *z) {
  if (!z) return;
  drain(z); /* last replies out before the socket goes (linger covers the wire) */
  while (z->outq) {
    zreq *r = z->outq;
    z->outq = r->next;
    zreq_free(r);
  }
  z->outq_tail = NULL;
  uv_poll_stop(&z->poll); /* before zmq_close: the polled fd belongs to the socket */
  zmq_close(z->sock);
  z->closed = 3;
  uv_close((uv_handle_t *)&z->poll, on_closed);
  uv_close((uv_handle_t *)&z->retry, on_closed);
  uv_close((uv_handle_t *)&z->flush, on_closed);
}
