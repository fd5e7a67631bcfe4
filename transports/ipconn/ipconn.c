/* ipconn.c — "IP push": persistent authenticated TCP connections from handset update agents.
 *
 * A pull transport on the public ABI only (herald/transport.h): for each authenticated
 * connection it fetches what is pending for the device, sends it, arms a watch, and sends
 * again when the watch fires; acks from the device go to host->ack(). The wire protocol is
 * docs/protocols/ipconn.md, encoded and decoded by the codec shared with the clients
 * (clients/libherald/hdc_proto.h).
 *
 * Memory is the design constraint: an idle authenticated connection costs its struct conn
 * (the uv_poll_t plus ~100 bytes), the hd_device from device_auth and one router watch, and
 * nothing else:
 *   - one read buffer for all connections (t->rbuf); only a frame split across reads is kept,
 *     in a heap buffer that exists while the frame is incomplete (hdc_framer);
 *   - the output buffer and the in-flight id list exist only while non-empty;
 *   - no timer per connection: one sweep a second walks the connection array for hello
 *     timeouts, heartbeat probes, idle and slow-reader deadlines, with coarse second clocks.
 * Raw non-blocking sockets under uv_poll_t (160 bytes) rather than uv_tcp_t (248 bytes plus a
 * 192-byte uv_write_t per blocked write) keep the socket cost down and give exact control of
 * the send buffer: bytes are queued in c->out only when the kernel will not take them.
 *
 * Flow control: at most max_inflight unacked messages per connection, and no new message is
 * queued while c->out holds send_buffer bytes or more. A connection that stays at that limit
 * for slow_grace is closed; its unacked messages stay pending in the store and go out on the
 * device's next connection.
 */
#include <errno.h>
#include <herald/transport.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hdc_proto.h"

#define SWEEP_MS 1000
#define CLOSE_WAIT_S 5      /* a closing connection gets this long to take its last frame */
#define FAIL_SLOTS 1024     /* per-address auth failure records (direct-mapped) */
#define FAIL_FORGET_MS (10 * 60 * 1000) /* failures older than this are forgotten */
#define FAIL_MAX_SHIFT 6    /* the delay doubles up to 64x auth_fail_delay */
#define ACCEPT_BURST 128    /* accepts per readiness event, so one burst cannot starve others */
#define READ_BURST 4        /* reads per readiness event */
#define CONFIRM_DELAY_MS 5  /* longest an `acked` waits for a message frame to ride with */

typedef struct ipc ipc;

enum { C_HELLO = 0, C_READY = 1, C_CLOSING = 2 };
enum {
  F_PINGED = 1,        /* a probe ping went out since the peer last spoke */
  F_WPOLL = 2,         /* polling for writable */
  F_CLOSED = 4,        /* close requested: no more I/O */
  F_HANDLE_GONE = 8,   /* uv_close callback ran */
  F_SLOW = 16,         /* out reached send_buffer; `since` holds when */
  F_CONFIRM = 32,      /* an `acked` is queued and the conn is in ipc.confirmq */
};

/* One connection. Kept small on purpose (see the top of the file). */
typedef struct conn {
  uv_poll_t poll;      /* first: the handle pointer is the conn pointer; poll.data = ipc */
  hd_device *dev;      /* set once authenticated */
  hd_watch *watch;     /* armed while caught up */
  struct conn *hnext;  /* device table chain */
  uint64_t *infl;      /* ids sent and not acked, ascending; NULL when none */
  hdc_framer in;       /* partial incoming frame */
  hdc_buf out;         /* bytes the kernel did not take yet; out_off of them are sent */
  uint64_t cursor;     /* highest id sent on this connection */
  uint32_t out_off;
  uint32_t ninfl;
  uint32_t idx;        /* position in ipc.conns */
  uint32_t last_rx;    /* coarse seconds (ipc.now_s) */
  uint32_t since;      /* hello: accepted at; ready+F_SLOW: slow since; closing: closing since */
  uint16_t pending_acks;
  uint8_t state, flags;
  SSL *ssl;            /* with TLS: between two memory BIOs; c->out holds plaintext not yet
                        * encrypted, the write BIO the ciphertext the kernel did not take */
} conn;

typedef struct failrec {
  uint8_t addr[16];
  uint32_t fails;
  uint64_t until_ms, last_ms;
} failrec;

struct ipc {
  const hd_host *h;
  hd_plugin *self;
  uv_loop_t *loop;
  uint64_t *ackq;       /* acks of the read being handled (handle_ack, ack_flush) */
  size_t nackq, capackq;
  /* config */
  const char *listen_addr;
  int64_t heartbeat_s, idle_s, hello_s, max_frame, send_buffer, slow_grace_s, max_inflight,
      auth_fail_s, max_conns, goaway_retry_s;
  const char *redirect;
  /* listener */
  int lfd;
  uv_poll_t lpoll;
  int accept_paused;
  char bound[80];
  /* connections */
  conn **conns;
  uint32_t nconns, cap;
  uint32_t nopen, nready;
  conn **dtab;         /* authenticated connections by (tenant, device) */
  uint32_t dmask, ndev;
  uv_timer_t sweep;
  uv_timer_t confirm;   /* sends the queued `acked` frames no message frame took along */
  conn **confirmq;      /* conns with F_CONFIRM */
  uint32_t nconfirm, capconfirm;
  uint64_t t0_ms;
  uint32_t now_s;
  int stopping;
  uint64_t queued_bytes; /* sum of every conn's unsent output */
  failrec fails[FAIL_SLOTS];
  hd_metric *m_conns, *m_ready, *m_accepted, *m_refused, *m_auth_fail, *m_throttled, *m_sent,
      *m_acks, *m_slow, *m_idle, *m_replaced, *m_queued, *m_proto;
  SSL_CTX *tls;        /* NULL: plain TCP */
  hd_metric *m_tls_fail;
  uint8_t rbuf[65536]; /* the one read buffer (ciphertext, then plaintext, with TLS) */
  uint8_t scratch[16384]; /* ciphertext drained from a write BIO after send() took it */
};

static const char *const ipc_keys[] = {
    "listen",       "heartbeat",   "idle_timeout", "hello_timeout",   "max_frame",
    "send_buffer",  "slow_grace",  "max_inflight", "auth_fail_delay", "max_connections",
    "goaway_retry", "redirect",    "allow_plaintext_public", "tls_cert", "tls_key", NULL};

static void conn_close_hard(conn *c);
static void conn_close_soft(conn *c);
static void pump(conn *c);
static void flush(conn *c);
static void confirm_forget(conn *c);
static void on_conn_io(uv_poll_t *p, int status, int events);

static inline ipc *T(const conn *c) { return c->poll.data; }
static inline int conn_fd(const conn *c) {
  uv_os_fd_t fd = -1;
  uv_fileno((const uv_handle_t *)&c->poll, &fd);
  return fd;
}
/* Output not yet taken by the kernel: plaintext in c->out plus, with TLS, the ciphertext
 * waiting in the write BIO. */
static inline uint32_t out_pending(const conn *c) {
  uint32_t n = c->out.len - c->out_off;
  if (c->ssl) n += (uint32_t)BIO_ctrl_pending(SSL_get_wbio(c->ssl));
  return n;
}

static void tick(ipc *t) { t->now_s = (uint32_t)((uv_now(t->loop) - t->t0_ms) / 1000); }

/* ---- connection array and device table ---- */
static int conns_add(ipc *t, conn *c) {
  if (t->nconns == t->cap) {
    uint32_t cap = t->cap ? t->cap * 2 : 1024;
    conn **v = realloc(t->conns, cap * sizeof *v);
    if (!v) return HD_ENOMEM;
    t->conns = v;
    t->cap = cap;
  }
  c->idx = t->nconns;
  t->conns[t->nconns++] = c;
  return 0;
}

static void conns_remove(ipc *t, conn *c) {
  conn *last = t->conns[--t->nconns];
  t->conns[c->idx] = last;
  last->idx = c->idx;
}

static uint32_t dev_hash(const char *tenant, const char *id) {
  uint32_t x = 2166136261u; /* FNV-1a over "tenant\0id" */
  for (const char *s = tenant; *s; s++) x = (x ^ (uint8_t)*s) * 16777619u;
  x = (x ^ 0) * 16777619u;
  for (const char *s = id; *s; s++) x = (x ^ (uint8_t)*s) * 16777619u;
  return x;
}

static int same_device(ipc *t, const hd_device *a, const hd_device *b) {
  return strcmp(t->h->device_id(a), t->h->device_id(b)) == 0 &&
         strcmp(t->h->device_tenant(a), t->h->device_tenant(b)) == 0;
}

static conn **dtab_slot(ipc *t, const hd_device *d) {
  return &t->dtab[dev_hash(t->h->device_tenant(d), t->h->device_id(d)) & t->dmask];
}

static void dtab_grow(ipc *t) {
  uint32_t n = t->dtab ? (t->dmask + 1) * 2 : 1024;
  conn **v = calloc(n, sizeof *v);
  if (!v) return; /* keep the old table: longer chains, still correct */
  conn **old = t->dtab;
  uint32_t oldn = old ? t->dmask + 1 : 0;
  t->dtab = v;
  t->dmask = n - 1;
  for (uint32_t i = 0; i < oldn; i++)
    for (conn *c = old[i], *nx; c; c = nx) {
      nx = c->hnext;
      conn **s = dtab_slot(t, c->dev);
      c->hnext = *s;
      *s = c;
    }
  free(old);
}

/* Insert c; returns a connection of the same device that c replaces, or NULL. */
static conn *dtab_put(ipc *t, conn *c) {
  if (!t->dtab || t->ndev >= t->dmask + 1) dtab_grow(t);
  if (!t->dtab) return NULL;
  conn **s = dtab_slot(t, c->dev), *old = NULL;
  for (conn *o = *s; o; o = o->hnext)
    if (same_device(t, o->dev, c->dev)) old = o;
  c->hnext = *s;
  *s = c;
  t->ndev++;
  return old;
}

static void dtab_del(ipc *t, conn *c) {
  if (!t->dtab || !c->dev || c->state != C_READY) return;
  for (conn **s = dtab_slot(t, c->dev); *s; s = &(*s)->hnext)
    if (*s == c) {
      *s = c->hnext;
      c->hnext = NULL;
      t->ndev--;
      return;
    }
}

/* ---- output ---- */
static void want_write(conn *c, int on) {
  if (!!(c->flags & F_WPOLL) == on || (c->flags & F_CLOSED)) return;
  c->flags ^= F_WPOLL;
  uv_poll_start(&c->poll, on ? UV_READABLE | UV_WRITABLE : UV_READABLE, on_conn_io);
}

static void account(ipc *t, int64_t delta) {
  t->queued_bytes = (uint64_t)((int64_t)t->queued_bytes + delta);
  t->h->metric_set(t->m_queued, (double)t->queued_bytes);
}

/* Push queued bytes into the socket; when that takes a slow reader back under the limit,
 * queue more (pump) and go on. Leaves the conn closed on a socket error. */
static void flush(conn *c) {
  ipc *t = T(c);
  for (;;) {
    if (c->flags & F_CLOSED) return;
    uint32_t before = out_pending(c);
    while (out_pending(c)) {
      if (c->ssl) {
        /* Encrypt everything queued (a memory BIO takes it all), then send ciphertext. */
        uint32_t plain = c->out.len - c->out_off;
        if (plain) {
          ERR_clear_error();
          int w = SSL_write(c->ssl, c->out.p + c->out_off, (int)plain);
          ERR_clear_error();
          if (w <= 0) {
            account(t, (int64_t)out_pending(c) - (int64_t)before);
            conn_close_hard(c);
            return;
          }
          c->out_off += (uint32_t)w;
        }
        BIO *wb = SSL_get_wbio(c->ssl);
        char *p;
        long m = BIO_get_mem_data(wb, &p);
        if (m <= 0) break;
        ssize_t n = send(conn_fd(c), p, (size_t)m, MSG_NOSIGNAL);
        if (n > 0) {
          for (ssize_t done = 0; done < n;) {
            size_t k = (size_t)(n - done) < sizeof t->scratch ? (size_t)(n - done)
                                                              : sizeof t->scratch;
            done += BIO_read(wb, t->scratch, (int)k);
          }
          continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        account(t, (int64_t)out_pending(c) - (int64_t)before);
        conn_close_hard(c);
        return;
      }
      ssize_t n = send(conn_fd(c), c->out.p + c->out_off, out_pending(c), MSG_NOSIGNAL);
      if (n > 0) {
        c->out_off += (uint32_t)n;
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      account(t, (int64_t)out_pending(c) - (int64_t)before);
      conn_close_hard(c); /* the peer is gone */
      return;
    }
    uint32_t left = out_pending(c);
    account(t, (int64_t)left - (int64_t)before);
    if (!left) {
      hdc_buf_free(&c->out);
      c->out_off = 0;
    } else if (c->out_off > c->out.len / 2) { /* compact so the buffer does not creep */
      hdc_buf_consume(&c->out, c->out_off);
      c->out_off = 0;
    }
    want_write(c, left != 0);
    if (c->state == C_CLOSING) {
      if (!left) conn_close_soft(c);
      return;
    }
    /* Under the limit again after being at it: the reader caught up, sending resumes. */
    if (((c->flags & F_SLOW) || before >= (uint64_t)t->send_buffer) &&
        left < (uint64_t)t->send_buffer) {
      c->flags &= (uint8_t)~F_SLOW;
      c->since = 0;
      pump(c);
      if (out_pending(c) > left) continue;
    }
    return;
  }
}

/* Bytes appended to c->out since `before`: count them. */
static void queued(conn *c, uint32_t before) {
  account(T(c), (int64_t)out_pending(c) - (int64_t)before);
}

static int over_limit(const conn *c) { return out_pending(c) >= (uint64_t)T(c)->send_buffer; }

/* ---- closing ---- */
static void on_conn_closed(uv_handle_t *hd) {
  conn *c = (conn *)hd;
  ipc *t = hd->data;
  c->flags |= F_HANDLE_GONE;
  if (c->pending_acks) return; /* freed when the last ack commits */
  conns_remove(t, c);
  free(c);
}

/* Release everything but the struct; the socket is closed now, the struct when the handle's
 * close callback ran and no ack of it is waiting for its commit. */
static void conn_release(conn *c, int rst) {
  ipc *t = T(c);
  if (c->flags & F_CLOSED) return;
  int fd = conn_fd(c);
  confirm_forget(c);
  if (c->watch) t->h->unwatch(c->watch);
  c->watch = NULL;
  dtab_del(t, c);
  if (c->state == C_READY) {
    t->nready--;
    t->h->metric_add(t->m_ready, -1);
  }
  account(t, -(int64_t)out_pending(c));
  hdc_buf_free(&c->out);
  c->out_off = 0;
  SSL_free(c->ssl);
  c->ssl = NULL;
  hdc_framer_free(&c->in);
  free(c->infl);
  c->infl = NULL;
  c->ninfl = 0;
  if (c->dev) t->h->device_free(c->dev);
  c->dev = NULL;
  c->flags |= F_CLOSED;
  c->state = C_CLOSING;
  t->nopen--;
  t->h->metric_add(t->m_conns, -1);
  if (rst) { /* drop whatever the kernel still holds for a peer that does not read */
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  }
  uv_close((uv_handle_t *)&c->poll, on_conn_closed);
  close(fd); /* uv_close has taken it out of epoll */
}

static void conn_close_hard(conn *c) { conn_release(c, 1); }

/* Everything queued is sent: read what the peer still sent (closing with unread input would
 * reset the connection and could lose our last frame), then FIN. */
static void conn_close_soft(conn *c) {
  if (c->flags & F_CLOSED) return;
  int fd = conn_fd(c);
  ipc *t = T(c);
  for (int i = 0; i < 16 && recv(fd, t->rbuf, sizeof t->rbuf, 0) > 0; i++) {
  }
  shutdown(fd, SHUT_WR);
  conn_release(c, 0);
}

/* Stop processing the connection's input, send what is queued (the last frame included),
 * then close; the sweep closes it hard if the peer does not take it in CLOSE_WAIT_S. */
static void conn_end(conn *c) {
  ipc *t = T(c);
  if (c->flags & F_CLOSED || c->state == C_CLOSING) return;
  if (c->watch) t->h->unwatch(c->watch);
  c->watch = NULL;
  dtab_del(t, c);
  if (c->state == C_READY) {
    t->nready--;
    t->h->metric_add(t->m_ready, -1);
  }
  c->state = C_CLOSING;
  c->since = t->now_s;
  flush(c);
  if (!(c->flags & F_CLOSED) && !out_pending(c)) conn_close_soft(c);
}

static void deny(conn *c, const char *code, const char *text, int64_t retry_s) {
  uint32_t before = out_pending(c);
  if (hdc_enc_deny(&c->out, code, text, retry_s) == 0) queued(c, before);
  T(c)->h->metric_add(T(c)->m_refused, 1);
  conn_end(c);
}

static void goaway(conn *c, const char *code, const char *text, int64_t retry_s,
                   const char *alt) {
  uint32_t before = out_pending(c);
  if (hdc_enc_goaway(&c->out, code, text, retry_s, alt) == 0) queued(c, before);
  conn_end(c);
}

/* ---- sending messages ---- */
static void on_wake(void *ud) {
  conn *c = ud;
  c->watch = NULL; /* spent */
  tick(T(c));
  pump(c);
  flush(c);
}

/* Queue what is pending for the device, within the window and the send buffer; when caught
 * up, arm a watch. Does not flush. */
static void pump(conn *c) {
  ipc *t = T(c);
  const hd_host *h = t->h;
  if (c->state != C_READY || t->stopping) return;
  if (over_limit(c)) {
    if (!(c->flags & F_SLOW)) { /* wanted to send, but the peer has not read the last lot */
      c->flags |= F_SLOW;
      c->since = t->now_s;
    }
    return;
  }
  uint32_t room = (uint32_t)t->max_inflight - c->ninfl;
  if (room == 0) return; /* acks reopen the window */
  hd_batch *b;
  int rc = h->fetch(t->self, c->dev, c->cursor, room, &b);
  if (rc) {
    h->log(t->self, HD_LOG_WARN, "ipconn_fetch_failed", "device=%s error=%s",
           h->device_id(c->dev), hd_err_code(rc));
    goaway(c, "internal", "cannot read pending messages", t->goaway_retry_s, NULL);
    return;
  }
  size_t n = h->batch_count(b), i;
  if (n && !c->infl) {
    c->infl = malloc((size_t)t->max_inflight * sizeof *c->infl);
    if (!c->infl) {
      h->batch_free(b);
      goaway(c, "internal", "out of memory", t->goaway_retry_s, NULL);
      return;
    }
  }
  uint32_t before = out_pending(c);
  for (i = 0; i < n; i++) {
    if (over_limit(c)) break; /* the rest is fetched again once the peer reads */
    const hd_msg *m = h->batch_msg(b, i);
    size_t dl;
    const void *data = h->msg_data(m, &dl);
    uint64_t id = h->msg_id(m);
    if (hdc_enc_msg(&c->out, id, h->msg_app(m), h->msg_created_ms(m), h->msg_expires_ms(m),
                    h->msg_to(m), data, dl))
      break; /* out of memory, or a payload over 16 MiB: it stays pending */
    c->infl[c->ninfl++] = id;
    c->cursor = id;
  }
  h->batch_free(b);
  queued(c, before);
  if (i) h->metric_add(t->m_sent, (double)i);
  if (over_limit(c)) {
    if (!(c->flags & F_SLOW)) {
      c->flags |= F_SLOW;
      c->since = t->now_s;
    }
    return;
  }
  if (i == n && n < room && !c->watch) { /* caught up */
    c->watch = h->watch(t->self, c->dev, on_wake, c);
    if (!c->watch) goaway(c, "internal", "cannot watch for messages", t->goaway_retry_s, NULL);
  }
}

/* ---- acks ---- */
typedef struct ack_req {
  conn *c;
  uint32_t n;
  uint64_t ids[];
} ack_req;

static void on_confirm(uv_timer_t *tm) {
  ipc *t = tm->data;
  /* F_CONFIRM is cleared before flush(), so a conn that flush() closes is not looked for in the
   * queue while it is being emptied. */
  while (t->nconfirm) {
    conn *c = t->confirmq[--t->nconfirm];
    c->flags &= (uint8_t)~F_CONFIRM;
    flush(c);
  }
}

static void confirm_later(conn *c) {
  ipc *t = T(c);
  if (c->flags & F_CONFIRM) return;
  if (t->nconfirm == t->capconfirm) {
    uint32_t cap = t->capconfirm ? t->capconfirm * 2 : 256;
    conn **q = realloc(t->confirmq, cap * sizeof *q);
    if (!q) {
      flush(c); /* no room to remember it: send now */
      return;
    }
    t->confirmq = q;
    t->capconfirm = cap;
  }
  t->confirmq[t->nconfirm++] = c;
  c->flags |= F_CONFIRM;
  if (!uv_is_active((uv_handle_t *)&t->confirm))
    uv_timer_start(&t->confirm, on_confirm, CONFIRM_DELAY_MS, 0);
}

static void confirm_forget(conn *c) {
  ipc *t = T(c);
  if (!(c->flags & F_CONFIRM)) return;
  c->flags &= (uint8_t)~F_CONFIRM;
  for (uint32_t i = 0; i < t->nconfirm; i++)
    if (t->confirmq[i] == c) {
      t->confirmq[i] = t->confirmq[--t->nconfirm];
      break;
    }
}

static void on_acked(void *ud, int status) {
  ack_req *a = ud;
  conn *c = a->c;
  ipc *t = T(c);
  tick(t);
  c->pending_acks--;
  if (c->flags & F_CLOSED) {
    if (!c->pending_acks && (c->flags & F_HANDLE_GONE)) {
      conns_remove(t, c);
      free(c);
    }
  } else if (status >= 0) { /* status: how many of the ids took effect */
    t->h->metric_add(t->m_acks, status);
    /* The confirmation is a courtesy: a peer that does not read gets none. It does not go
     * out at once: it rides with the next message frame, or leaves with the others of this
     * connection within CONFIRM_DELAY_MS (a write per ack would double the syscalls of a
     * paced stream, where every message is acked on its own). */
    if (c->state == C_READY && !over_limit(c)) {
      uint32_t before = out_pending(c);
      if (hdc_enc_acked(&c->out, a->ids, a->n) == 0) {
        queued(c, before);
        confirm_later(c);
      }
    }
  } else {
    t->h->log(t->self, HD_LOG_WARN, "ipconn_ack_failed", "device=%s error=%s",
              t->h->device_id(c->dev), hd_err_code(status));
  }
  free(a);
}

static void take_acked(conn *c, uint64_t id) {
  /* infl is ascending (ids are sent in order): binary search, then close the gap */
  uint32_t lo = 0, hi = c->ninfl;
  while (lo < hi) {
    uint32_t mid = (lo + hi) / 2;
    if (c->infl[mid] < id) lo = mid + 1;
    else hi = mid;
  }
  if (lo < c->ninfl && c->infl[lo] == id) {
    memmove(&c->infl[lo], &c->infl[lo + 1], (c->ninfl - lo - 1) * sizeof *c->infl);
    c->ninfl--;
  }
}

/* Acks of one read are gathered (in the transport's one buffer: a read is handled to the end
 * before the next connection's) and go to the broker as one ack when the read is done: a
 * client that acks every message separately then costs one store write per read, not one per
 * message. */
static void handle_ack(conn *c, const hdc_frame *f) {
  ipc *t = T(c);
  if (t->nackq + f->nids > t->capackq) {
    size_t cap = (t->nackq + f->nids) * 2 + 64;
    uint64_t *q = realloc(t->ackq, cap * sizeof *q);
    if (!q) {
      goaway(c, "internal", "out of memory", t->goaway_retry_s, NULL);
      return;
    }
    t->ackq = q;
    t->capackq = cap;
  }
  size_t n = hdc_frame_ids(f, t->ackq + t->nackq, f->nids);
  for (size_t i = 0; i < n; i++) take_acked(c, t->ackq[t->nackq + i]);
  t->nackq += n;
  if (c->ninfl == 0) {
    free(c->infl);
    c->infl = NULL;
  }
}

/* The read is done: hand its acks to the broker in one go. */
static void ack_flush(conn *c) {
  ipc *t = T(c);
  size_t n = t->nackq;
  t->nackq = 0;
  if (!n || (c->flags & F_CLOSED)) return; /* closed: they stay pending and come again */
  ack_req *a = malloc(sizeof *a + n * sizeof(uint64_t));
  if (!a) {
    goaway(c, "internal", "out of memory", t->goaway_retry_s, NULL);
    return;
  }
  a->c = c;
  a->n = (uint32_t)n;
  memcpy(a->ids, t->ackq, n * sizeof *a->ids);
  int rc = t->h->ack(t->self, c->dev, a->ids, a->n, on_acked, a);
  if (rc) {
    free(a); /* shutting down: the messages stay pending and come again */
  } else {
    c->pending_acks++;
  }
  /* With a watch armed the connection is caught up and the next commit wakes it: reading the
   * store again now would find nothing. Without one, the window or the send buffer held
   * messages back, and this ack may have made room. */
  if (!c->watch) pump(c);
}

/* ---- hello ---- */
static void peer_key(conn *c, uint8_t key[16]) {
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  memset(key, 0, 16);
  if (getpeername(conn_fd(c), (struct sockaddr *)&ss, &sl) != 0) return;
  if (ss.ss_family == AF_INET) {
    key[10] = key[11] = 0xff; /* as an IPv4-mapped IPv6 address */
    memcpy(key + 12, &((struct sockaddr_in *)&ss)->sin_addr, 4);
  } else if (ss.ss_family == AF_INET6) {
    memcpy(key, &((struct sockaddr_in6 *)&ss)->sin6_addr, 16);
  }
}

static failrec *fail_slot(ipc *t, const uint8_t key[16]) {
  uint32_t x = 2166136261u;
  for (int i = 0; i < 16; i++) x = (x ^ key[i]) * 16777619u;
  return &t->fails[x % FAIL_SLOTS];
}

/* Milliseconds this address must still wait, or 0. */
static uint64_t throttled_for(ipc *t, const uint8_t key[16]) {
  if (!t->auth_fail_s) return 0;
  failrec *r = fail_slot(t, key);
  uint64_t now = uv_now(t->loop);
  if (memcmp(r->addr, key, 16) != 0 || now >= r->until_ms) return 0;
  return r->until_ms - now;
}

/* A failed authentication from this address: the first is free, then the address waits
 * auth_fail_delay, doubling with each further failure (up to 64x). */
static void fail_record(ipc *t, const uint8_t key[16]) {
  if (!t->auth_fail_s) return;
  failrec *r = fail_slot(t, key);
  uint64_t now = uv_now(t->loop);
  if (memcmp(r->addr, key, 16) != 0 || now - r->last_ms > FAIL_FORGET_MS) {
    memcpy(r->addr, key, 16); /* a slot taken by another address, or stale: start over */
    r->fails = 0;
    r->until_ms = 0;
  }
  r->fails++;
  r->last_ms = now;
  if (r->fails >= 2) {
    uint32_t sh = r->fails - 2 > FAIL_MAX_SHIFT ? FAIL_MAX_SHIFT : r->fails - 2;
    r->until_ms = now + ((uint64_t)t->auth_fail_s * 1000u << sh);
  }
}

static void handle_hello(conn *c, const hdc_frame *f) {
  ipc *t = T(c);
  const hd_host *h = t->h;
  if (f->v != HDC_PROTO_VERSION) {
    deny(c, "version", "this broker speaks ipconn version 1", -1);
    return;
  }
  uint8_t key[16];
  peer_key(c, key);
  uint64_t wait_ms = throttled_for(t, key);
  if (wait_ms) {
    h->metric_add(t->m_throttled, 1);
    deny(c, "throttled", "too many failed logins from this address",
         (int64_t)((wait_ms + 999) / 1000));
    return;
  }
  char device[129], tenant[129], token[513];
  hdc_str_copy(f->device, device, sizeof device);
  hdc_str_copy(f->tenant, tenant, sizeof tenant);
  hdc_str_copy(f->token, token, sizeof token);
  hd_device *d = NULL;
  int rc = h->device_auth(t->self, device, token, &d);
  if (rc == 0 && strcmp(h->device_tenant(d), tenant) != 0) {
    h->device_free(d); /* the same answer as a bad token: a handshake reveals nothing */
    d = NULL;
    rc = HD_EAUTH;
  }
  if (rc == HD_EAUTH) {
    fail_record(t, key);
    h->metric_add(t->m_auth_fail, 1);
    h->log(t->self, HD_LOG_DEBUG, "ipconn_auth_failed", "fd=%d", conn_fd(c));
    deny(c, "auth", "unknown device or wrong token", -1);
    return;
  }
  if (rc) {
    h->log(t->self, HD_LOG_WARN, "ipconn_auth_error", "error=%s", hd_err_code(rc));
    deny(c, "internal", "cannot check the token now", t->goaway_retry_s);
    return;
  }
  c->dev = d;
  c->state = C_READY;
  c->since = 0;
  t->nready++;
  h->metric_add(t->m_ready, 1);
  conn *old = dtab_put(t, c);
  if (old) {
    h->metric_add(t->m_replaced, 1);
    goaway(old, "replaced", "the device connected again", -1, NULL);
  }
  uint32_t before = out_pending(c);
  if (hdc_enc_welcome(&c->out, (uint64_t)t->heartbeat_s, (uint64_t)t->idle_s,
                      (uint64_t)t->max_inflight, (uint64_t)t->max_frame)) {
    conn_close_hard(c);
    return;
  }
  queued(c, before);
  pump(c); /* everything pending, oldest first */
}

/* ---- reading ---- */
static int on_frame(void *ud, const uint8_t *body, size_t len) {
  conn *c = ud;
  ipc *t = T(c);
  hdc_frame f;
  if (c->state == C_CLOSING) return 1;
  if (hdc_frame_decode(body, len, &f)) {
    t->h->metric_add(t->m_proto, 1);
    deny(c, "proto", "malformed frame", -1);
    return 1;
  }
  if (c->state == C_HELLO) {
    if (f.type != HDC_T_HELLO) {
      t->h->metric_add(t->m_proto, 1);
      deny(c, "proto", "the first frame must be a hello", -1);
      return 1;
    }
    handle_hello(c, &f);
    return c->state != C_READY;
  }
  switch (f.type) {
  case HDC_T_ACK: handle_ack(c, &f); break;
  case HDC_T_PING:
    if (!over_limit(c)) { /* a peer that pings but never reads gets no pongs */
      uint32_t before = out_pending(c);
      if (hdc_enc_pong(&c->out, f.n) == 0) queued(c, before);
    }
    break;
  case HDC_T_PONG:
  case HDC_T_UNKNOWN: break; /* liveness only; types of later versions are ignored */
  default:
    t->h->metric_add(t->m_proto, 1);
    deny(c, "proto", "unexpected frame type", -1);
    return 1;
  }
  return c->state != C_READY;
}

/* Frames from plaintext bytes. */
static void feed(conn *c, const uint8_t *p, size_t n) {
  ipc *t = T(c);
  uint32_t max = c->state == C_HELLO ? HDC_MAX_HELLO : (uint32_t)t->max_frame;
  int rc = hdc_framer_feed(&c->in, p, n, max, on_frame, c);
  if (rc < 0 && !(c->flags & F_CLOSED) && c->state != C_CLOSING) {
    t->h->metric_add(t->m_proto, 1);
    if (rc == HDC_ETOOBIG) deny(c, "too_big", "frame larger than max_frame", -1);
    else if (rc == HDC_ENOMEM) conn_close_hard(c);
    else deny(c, "proto", "malformed frame", -1);
  }
  if (c->state == C_CLOSING) hdc_framer_free(&c->in);
}

/* n bytes of ciphertext are in t->rbuf: into the read BIO, then decrypt (into t->rbuf, free
 * again once copied) and feed, until OpenSSL wants more. Returns 1 when the connection ended. */
static int tls_read(conn *c, size_t n) {
  ipc *t = T(c);
  if (BIO_write(SSL_get_rbio(c->ssl), t->rbuf, (int)n) != (int)n) {
    conn_close_hard(c);
    return 1;
  }
  while (!(c->flags & F_CLOSED) && c->state != C_CLOSING) {
    ERR_clear_error();
    int r = SSL_read(c->ssl, t->rbuf, (int)sizeof t->rbuf);
    int e = r > 0 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, r);
    ERR_clear_error();
    if (e == SSL_ERROR_NONE) {
      feed(c, t->rbuf, (size_t)r);
      continue;
    }
    if (e == SSL_ERROR_WANT_READ) return 0; /* handshake output goes out with flush() */
    if (e != SSL_ERROR_ZERO_RETURN && !SSL_is_init_finished(c->ssl)) {
      t->h->metric_add(t->m_tls_fail, 1);
      flush(c); /* the alert, best effort */
    }
    conn_close_hard(c);
    return 1;
  }
  return 0;
}

static void do_read(conn *c) {
  ipc *t = T(c);
  for (int i = 0; i < READ_BURST && !(c->flags & F_CLOSED); i++) {
    ssize_t n = recv(conn_fd(c), t->rbuf, sizeof t->rbuf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (n <= 0) { /* EOF or error: the peer is gone, nothing more can reach it */
      conn_close_hard(c);
      return;
    }
    if (c->state == C_CLOSING) continue; /* discard: we are only sending a last frame */
    c->last_rx = t->now_s;
    c->flags &= (uint8_t)~F_PINGED;
    if (c->ssl) {
      if (tls_read(c, (size_t)n)) return;
    } else {
      feed(c, t->rbuf, (size_t)n);
    }
    if ((size_t)n < sizeof t->rbuf) return; /* drained */
  }
}

static void on_conn_io(uv_poll_t *p, int status, int events) {
  conn *c = (conn *)p;
  tick(T(c));
  if (status < 0) {
    conn_close_hard(c);
    return;
  }
  if (events & UV_WRITABLE) flush(c);
  if (!(c->flags & F_CLOSED) && (events & (UV_READABLE | UV_DISCONNECT))) {
    do_read(c);
    ack_flush(c);
  }
  if (!(c->flags & F_CLOSED)) flush(c);
}

/* ---- accepting ---- */
static void refuse_now(int fd, const char *code, const char *text, int64_t retry) {
  hdc_buf b = {0};
  if (hdc_enc_deny(&b, code, text, retry) == 0) {
    ssize_t n = send(fd, b.p, b.len, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)n;
  }
  hdc_buf_free(&b);
  shutdown(fd, SHUT_WR);
  close(fd);
}

static void on_accept(uv_poll_t *lp, int status, int events) {
  ipc *t = lp->data;
  tick(t);
  for (int i = 0; i < ACCEPT_BURST; i++) {
    int fd = accept4(t->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        /* Out of descriptors: stop accepting until the next sweep instead of spinning on a
         * listener that stays readable. */
        if (!t->accept_paused)
          t->h->log(t->self, HD_LOG_WARN, "ipconn_accept_paused", "reason=%s open=%u",
                    strerror(errno), t->nopen);
        t->accept_paused = 1;
        uv_poll_stop(&t->lpoll);
      }
      return;
    }
    if (t->nopen >= (uint64_t)t->max_conns) {
      t->h->metric_add(t->m_refused, 1);
      if (t->tls) /* a deny frame in clear text means nothing to a TLS client */
        close(fd);
      else
        refuse_now(fd, "busy", "too many connections", t->goaway_retry_s);
      continue;
    }
    conn *c = calloc(1, sizeof *c);
    if (!c || conns_add(t, c)) {
      free(c);
      close(fd);
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (t->tls) {
      BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
      c->ssl = SSL_new(t->tls);
      if (!c->ssl || !rb || !wb) {
        SSL_free(c->ssl);
        BIO_free(rb);
        BIO_free(wb);
        ERR_clear_error();
        conns_remove(t, c);
        free(c);
        close(fd);
        continue;
      }
      BIO_set_mem_eof_return(rb, -1); /* empty means "more later", not end of file */
      SSL_set_bio(c->ssl, rb, wb);
      SSL_set_accept_state(c->ssl);
    }
    if (uv_poll_init(t->loop, &c->poll, fd)) {
      SSL_free(c->ssl);
      conns_remove(t, c);
      free(c);
      close(fd);
      continue;
    }
    c->poll.data = t;
    uv_poll_start(&c->poll, UV_READABLE, on_conn_io); /* cannot fail on a fresh socket */
    c->state = C_HELLO;
    c->since = c->last_rx = t->now_s;
    t->nopen++;
    t->h->metric_add(t->m_conns, 1);
    t->h->metric_add(t->m_accepted, 1);
  }
}

/* ---- the sweep: every timeout of every connection, once a second ---- */
static void on_sweep(uv_timer_t *tm) {
  ipc *t = tm->data;
  tick(t);
  uint32_t now = t->now_s;
  if (t->accept_paused && !t->stopping) {
    t->accept_paused = 0;
    uv_poll_start(&t->lpoll, UV_READABLE, on_accept);
  }
  /* Walk backwards: closing a conn may move the last one into its slot. */
  for (uint32_t i = t->nconns; i-- > 0;) {
    if (i >= t->nconns) continue;
    conn *c = t->conns[i];
    if (c->flags & F_CLOSED) continue;
    switch (c->state) {
    case C_HELLO:
      if (now - c->since >= (uint32_t)t->hello_s) deny(c, "timeout", "no hello in time", -1);
      break;
    case C_READY:
      if ((c->flags & F_SLOW) && now - c->since >= (uint32_t)t->slow_grace_s) {
        t->h->metric_add(t->m_slow, 1);
        t->h->log(t->self, HD_LOG_INFO, "ipconn_slow_reader_closed",
                  "device=%s queued=%u inflight=%u", t->h->device_id(c->dev), out_pending(c),
                  c->ninfl);
        conn_close_hard(c);
      } else if (now - c->last_rx >= (uint32_t)t->idle_s) {
        t->h->metric_add(t->m_idle, 1);
        goaway(c, "idle", "nothing heard for idle_timeout", 0, NULL);
      } else if (now - c->last_rx >= (uint32_t)t->heartbeat_s && !(c->flags & F_PINGED) &&
                 !over_limit(c)) {
        /* The peer is quiet: probe it. Its pong (or anything) counts as life. */
        c->flags |= F_PINGED;
        uint32_t before = out_pending(c);
        if (hdc_enc_ping(&c->out, now) == 0) queued(c, before);
        flush(c);
      }
      break;
    case C_CLOSING:
      if (now - c->since >= CLOSE_WAIT_S) conn_close_hard(c);
      break;
    }
  }
}

/* ---- lifecycle ---- */
static int parse_listen(const char *s, struct sockaddr_storage *ss) {
  char host[64];
  const char *colon = strrchr(s, ':');
  if (!colon || colon == s || strlen(colon + 1) == 0 || strlen(colon + 1) > 5) return -1;
  size_t hl = (size_t)(colon - s);
  if (s[0] == '[') {
    if (hl < 3 || s[hl - 1] != ']') return -1;
    s++;
    hl -= 2;
  }
  if (hl >= sizeof host) return -1;
  memcpy(host, s, hl);
  host[hl] = 0;
  char *end;
  long port = strtol(colon + 1, &end, 10);
  if (*end || port < 0 || port > 65535) return -1;
  if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss) == 0) return 0;
  if (uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)ss) == 0) return 0;
  return -1;
}

/* 1 for 127.0.0.0/8 and ::1. */
static int is_loopback(const struct sockaddr_storage *ss) {
  if (ss->ss_family == AF_INET)
    return (ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24) == 127;
  if (ss->ss_family == AF_INET6)
    return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)ss)->sin6_addr);
  return 0;
}

/* yes/no, true/false, on/off, 1/0 -> 1/0; -1 for anything else. */
static int parse_bool(const char *v) {
  static const char *const yes[] = {"yes", "true", "on", "1"}, *const no[] = {"no", "false",
                                                                                 "off", "0"};
  for (size_t i = 0; i < 4; i++) {
    if (strcasecmp(v, yes[i]) == 0) return 1;
    if (strcasecmp(v, no[i]) == 0) return 0;
  }
  return -1;
}

/* The server context: TLS 1.2 or newer, certificate chain and key from PEM files. Errors are
 * logged with the path and OpenSSL's reason. */
static int tls_setup(ipc *t, const char *cert, const char *key) {
  const char *what = "tls_cert", *path = cert;
  ERR_clear_error();
  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx) goto fail;
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS); /* idle connections are most of them */
  if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) goto fail;
  what = "tls_key", path = key;
  if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) goto fail;
  if (SSL_CTX_check_private_key(ctx) != 1) goto fail;
  t->tls = ctx;
  return 0;
fail:;
  unsigned long e = ERR_peek_last_error();
  const char *why = e ? ERR_reason_error_string(e) : NULL;
  t->h->log(t->self, HD_LOG_ERROR, "bad_config", "key=%s file=%s reason=\"%s\"", what, path,
            why ? why : "cannot set up TLS");
  ERR_clear_error();
  SSL_CTX_free(ctx);
  return HD_ECONFIG;
}

static int cfg_int(ipc *t, const char *key, int64_t def, int64_t lo, int64_t hi, int64_t *out,
                   const char *what) {
  int rc = t->h->config_int(t->self, key, def, out);
  if (rc || *out < lo || *out > hi) {
    t->h->log(t->self, HD_LOG_ERROR, "bad_config", "key=%s reason=\"must be %s\"", key, what);
    return HD_ECONFIG;
  }
  return 0;
}

static int ipc_create(const hd_host *h, hd_plugin *self, void **state) {
  ipc *t = calloc(1, sizeof *t);
  if (!t) return HD_ENOMEM;
  t->h = h;
  t->self = self;
  t->loop = h->loop(self);
  t->lfd = -1;
  struct sockaddr_storage ss;
  t->listen_addr = h->config_str(self, "listen", "127.0.0.1:8473");
  int rc = 0;
  if (parse_listen(t->listen_addr, &ss)) {
    h->log(self, HD_LOG_ERROR, "bad_config", "key=listen reason=\"%s\"",
           "must be IPv4:port or [IPv6]:port");
    rc = HD_ECONFIG;
  }
  if (!rc) {
    /* The protocol carries device tokens: in clear text only on loopback, unless the operator
     * says so (TLS for ipconn is not implemented yet). */
    int allow = parse_bool(h->config_str(self, "allow_plaintext_public", "no"));
    const char *cert = h->config_str(self, "tls_cert", NULL), *key = h->config_str(self,
                                                                                  "tls_key", NULL);
    if (cert && !*cert) cert = NULL;
    if (key && !*key) key = NULL;
    if (allow < 0) {
      h->log(self, HD_LOG_ERROR, "bad_config", "key=allow_plaintext_public reason=\"%s\"",
             "must be yes or no");
      rc = HD_ECONFIG;
    } else if (!cert != !key) {
      h->log(self, HD_LOG_ERROR, "bad_config", "key=tls_cert reason=\"%s\"",
             "tls_cert and tls_key go together");
      rc = HD_ECONFIG;
    } else if (cert) {
      rc = tls_setup(t, cert, key);
    } else if (!allow && !is_loopback(&ss)) {
      h->log(self, HD_LOG_ERROR, "bad_config",
             "key=listen reason=\"%s is not a loopback address and has no TLS: set tls_cert "
             "and tls_key, or allow_plaintext_public = yes\"",
             t->listen_addr);
      rc = HD_ECONFIG;
    }
  }
  if (!rc) rc = cfg_int(t, "heartbeat", 30, 1, 3600, &t->heartbeat_s, "1s to 1h");
  if (!rc)
    rc = cfg_int(t, "idle_timeout", 3 * t->heartbeat_s, t->heartbeat_s + 1, 3 * 3600,
                 &t->idle_s, "longer than heartbeat, at most 3h");
  if (!rc) rc = cfg_int(t, "hello_timeout", 10, 1, 600, &t->hello_s, "1s to 10m");
  if (!rc)
    rc = cfg_int(t, "max_frame", 65536, HDC_MAX_HELLO, HDC_MAX_FRAME_HARD, &t->max_frame,
                 "4KiB to 16MiB");
  if (!rc)
    rc = cfg_int(t, "send_buffer", 65536, 1024, 1ll << 30, &t->send_buffer, "1KiB to 1GiB");
  if (!rc) rc = cfg_int(t, "slow_grace", 10, 1, 3600, &t->slow_grace_s, "1s to 1h");
  if (!rc) rc = cfg_int(t, "max_inflight", 64, 1, 10000, &t->max_inflight, "1 to 10000");
  if (!rc)
    rc = cfg_int(t, "auth_fail_delay", 1, 0, 3600, &t->auth_fail_s, "0 (off) to 1h");
  if (!rc)
    rc = cfg_int(t, "max_connections", 100000, 1, 10000000, &t->max_conns, "1 to 10000000");
  if (!rc) rc = cfg_int(t, "goaway_retry", 5, 0, 86400, &t->goaway_retry_s, "0 to 1d");
  t->redirect = h->config_str(self, "redirect", NULL);
  if (t->redirect && !*t->redirect) t->redirect = NULL;
  if (rc) {
    SSL_CTX_free(t->tls);
    free(t);
    return rc;
  }
  t->m_tls_fail = h->metric_new(self, "tls_handshake_failures_total",
                                "TLS connections closed because the handshake failed",
                                HD_METRIC_COUNTER);
  t->m_conns = h->metric_new(self, "connections", "Open connections", HD_METRIC_GAUGE);
  t->m_ready = h->metric_new(self, "authenticated", "Authenticated connections",
                             HD_METRIC_GAUGE);
  t->m_accepted = h->metric_new(self, "accepted_total", "Connections accepted",
                                HD_METRIC_COUNTER);
  t->m_refused = h->metric_new(self, "denied_total", "Connections refused with a deny frame",
                               HD_METRIC_COUNTER);
  t->m_auth_fail = h->metric_new(self, "auth_failures_total", "Hellos with a bad token",
                                 HD_METRIC_COUNTER);
  t->m_throttled = h->metric_new(self, "throttled_total",
                                 "Hellos refused unchecked after repeated failures",
                                 HD_METRIC_COUNTER);
  t->m_proto = h->metric_new(self, "protocol_errors_total", "Malformed or unexpected frames",
                             HD_METRIC_COUNTER);
  t->m_sent = h->metric_new(self, "messages_sent_total", "Message frames queued",
                            HD_METRIC_COUNTER);
  t->m_acks = h->metric_new(self, "acks_total", "Message ids acknowledged (committed)",
                            HD_METRIC_COUNTER);
  t->m_slow = h->metric_new(self, "slow_closed_total",
                            "Connections closed for not reading within slow_grace",
                            HD_METRIC_COUNTER);
  t->m_idle = h->metric_new(self, "idle_closed_total",
                            "Connections closed after idle_timeout of silence",
                            HD_METRIC_COUNTER);
  t->m_replaced = h->metric_new(self, "replaced_total",
                                "Connections replaced by a newer one of the same device",
                                HD_METRIC_COUNTER);
  t->m_queued = h->metric_new(self, "queued_bytes", "Bytes waiting in send buffers",
                              HD_METRIC_GAUGE);
  *state = t;
  return 0;
}

static int ipc_start(void *state) {
  ipc *t = state;
  struct sockaddr_storage ss;
  parse_listen(t->listen_addr, &ss); /* checked in create */
  socklen_t sl = ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                          : sizeof(struct sockaddr_in);
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
      bind(fd, (struct sockaddr *)&ss, sl) || listen(fd, 4096)) {
    t->h->log(t->self, HD_LOG_ERROR, "ipconn_listen_failed", "addr=%s reason=\"%s\"",
              t->listen_addr, strerror(errno));
    if (fd >= 0) close(fd);
    return HD_EIO;
  }
  sl = sizeof ss;
  getsockname(fd, (struct sockaddr *)&ss, &sl);
  char ip[64] = "?";
  int port = 0;
  if (ss.ss_family == AF_INET6) {
    uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof ip);
    port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    snprintf(t->bound, sizeof t->bound, "[%s]:%d", ip, port);
  } else {
    uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof ip);
    port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    snprintf(t->bound, sizeof t->bound, "%s:%d", ip, port);
  }
  t->lfd = fd;
  uv_poll_init(t->loop, &t->lpoll, fd);
  t->lpoll.data = t;
  uv_poll_start(&t->lpoll, UV_READABLE, on_accept);
  uv_timer_init(t->loop, &t->sweep);
  t->sweep.data = t;
  uv_timer_init(t->loop, &t->confirm);
  t->confirm.data = t;
  t->t0_ms = uv_now(t->loop);
  uv_timer_start(&t->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
  t->h->log(t->self, HD_LOG_INFO, "ipconn_listening",
            "addr=%s heartbeat=%llds idle_timeout=%llds max_inflight=%lld send_buffer=%lld "
            "max_connections=%lld",
            t->bound, (long long)t->heartbeat_s, (long long)t->idle_s,
            (long long)t->max_inflight, (long long)t->send_buffer, (long long)t->max_conns);
  return 0;
}

/* Tell every client to go elsewhere or come back later, then close. */
static void ipc_stop(void *state) {
  ipc *t = state;
  tick(t);
  t->stopping = 1;
  if (t->lfd >= 0) {
    uv_close((uv_handle_t *)&t->lpoll, NULL);
    close(t->lfd);
    t->lfd = -1;
    uv_close((uv_handle_t *)&t->sweep, NULL);
    on_confirm(&t->confirm); /* the confirmations still waiting go before the goaways */
    uv_close((uv_handle_t *)&t->confirm, NULL);
  }
  uint32_t told = 0;
  for (uint32_t i = t->nconns; i-- > 0;) {
    if (i >= t->nconns) continue;
    conn *c = t->conns[i];
    if (c->flags & F_CLOSED) continue;
    if (c->state != C_CLOSING) {
      goaway(c, "shutdown", "the broker is restarting", t->goaway_retry_s, t->redirect);
      told++;
    }
    /* No second chance: what the socket did not take now is dropped with the connection
     * (only a peer that does not read loses its goaway). */
    if (!(c->flags & F_CLOSED)) conn_close_soft(c);
  }
  t->h->log(t->self, HD_LOG_INFO, "ipconn_stopped", "goaway_sent=%u", told);
}

static void ipc_destroy(void *state) {
  ipc *t = state;
  /* Connections whose ack was still committing when the loop ended. */
  for (uint32_t i = 0; i < t->nconns; i++) free(t->conns[i]);
  free(t->conns);
  free(t->dtab);
  free(t->ackq);
  free(t->confirmq);
  SSL_CTX_free(t->tls);
  free(t);
}

/* The device's tokens were revoked or rotated: its connection authenticated with the old one,
 * so it goes now (goaway "revoked"), not at its next hello. */
static void ipc_device_revoked(void *state, const char *tenant, const char *device) {
  ipc *t = state;
  if (!t->dtab) return;
  uint32_t slot = dev_hash(tenant, device) & t->dmask;
  for (conn *c = t->dtab[slot], *nx; c; c = nx) {
    nx = c->hnext;
    if (strcmp(t->h->device_id(c->dev), device) == 0 &&
        strcmp(t->h->device_tenant(c->dev), tenant) == 0) {
      t->h->log(t->self, HD_LOG_INFO, "ipconn_revoked", "tenant=%s device=%s", tenant, device);
      goaway(c, "revoked", "the device's token was revoked or rotated", -1, NULL);
    }
  }
}

HD_TRANSPORT_EXPORT const hd_transport_ops herald_transport = {
    .abi_major = HD_TRANSPORT_ABI_MAJOR,
    .abi_minor = HD_TRANSPORT_ABI_MINOR,
    .struct_size = sizeof(hd_transport_ops),
    .name = "ipconn",
    .version = "1.0.0",
    .config_keys = ipc_keys,
    .create = ipc_create,
    .start = ipc_start,
    .deliver = NULL,
    .cancel = NULL,
    .stop = ipc_stop,
    .destroy = ipc_destroy,
    .device_revoked = ipc_device_revoked,
};
