/* zecho.c — `herald-bench zmq-echo`: the floor under the ingest workload. A ROUTER on one
 * thread that answers every request [corr][body] at once with the reply Herald gives an
 * accepted publish ({"id": "1"}), reading nothing and storing nothing. Run against it, the
 * ingest scenario measures what ZeroMQ and the load client alone allow on this machine, so a
 * broker's ingest figure can be read as a share of that.
 *
 * With --sync-file F it is the durable floor: the least a server can do to make every request
 * durable before its reply, in the shape of Herald's group commit. The ROUTER thread gathers
 * requests while a second thread writes the previous group's bodies to F with one pwrite and
 * fdatasyncs it; once that returns, the ROUTER thread sends the group's replies and hands over
 * what gathered meanwhile. F is a 64 MiB ring written over and over (zeroed first, so no write
 * allocates a block or changes the file's size): no parsing, no index, no B-tree, no metadata.
 * With --sync-grow F is a log that grows instead, as a store that keeps what it is given does:
 * each fdatasync then also writes the file's new size and block allocation (its metadata).
 *
 * With --sync-lmdb DIR the group goes into an LMDB environment instead, in the shape of
 * Herald's store and nothing more: per request a message row (12-byte key: app and sequence;
 * a 32-byte header then the body, written in place with MDB_RESERVE), per 512 requests an
 * expiry row, one "seq" meta row per group, one durable commit per group (LMDB's default: data
 * pages, fdatasync, meta page, fdatasync). No parsing, validation, authentication or
 * delivery: the floor of durable ingest with LMDB as the store. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <lmdb.h>
#include <zmq.h>

#include "../broker/bytes.h" /* the store's own key packing: hd_be32, hd_be64 */
#include "bench.h"

/* msgpack {"id": "1"}: what zpub.c takes for an accepted publish */
static const char zecho_ok[] = "\x81\xa2id\xa1"
                               "1";

#define ZECHO_RING ((off_t)64 << 20)
#define ZECHO_GROUP_MAX 65536

typedef struct zecho_group {
  zmq_msg_t *route;   /* [identity, corr] of each request, in pairs */
  size_t n;           /* requests in the group */
  char *data;         /* their bodies, back to back */
  size_t len, cap;
  size_t *ends;       /* where each body ends in data (LMDB mode stores them one by one) */
} zecho_group;

typedef struct zecho_sync {
  int fd;
  int grow; /* append, the file growing as a log does, instead of the ring */
  off_t at;
  void *pipe; /* PAIR: receives a group pointer, answers it once durable */
  int err;
  MDB_env *env; /* --sync-lmdb: the store instead of fd */
  MDB_dbi msgs, expiry, meta;
  uint64_t seq;
} zecho_sync;

/* One group as Herald's writer stores a batch of publishes: a message row per request (12-byte
 * key: app and sequence; a 32-byte header then the body, written in place), the group's
 * expiry entries (20 bytes each: they all expire in the same second) in rows of up to 512, the
 * sequence in the meta table once, one commit. Returns 0 or an LMDB/errno code. */
#define ZECHO_EXP_ROW 512
static int lmdb_store_group(zecho_sync *z, const zecho_group *g) {
  static unsigned char loc[ZECHO_EXP_ROW * 20];
  MDB_txn *t;
  int rc = mdb_txn_begin(z->env, NULL, 0, &t);
  if (rc) return rc;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  uint64_t now = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
  uint64_t second = (now + 86400000u) / 1000 * 1000, first = z->seq + 1;
  size_t start = 0, nloc = 0;
  for (size_t i = 0; i < g->n && !rc; i++) {
    size_t n = g->ends[i] - start;
    uint64_t seq = ++z->seq;
    unsigned char kb[12];
    hd_be32(kb, 1); /* the app */
    hd_be64(kb + 4, seq);
    MDB_val k = {sizeof kb, kb}, v = {32 + n, NULL};
    if ((rc = mdb_put(t, z->msgs, &k, &v, MDB_RESERVE))) break;
    memset(v.mv_data, 0, 32);
    memcpy((char *)v.mv_data + 32, g->data + start, n);
    start = g->ends[i];
    unsigned char *l = loc + nloc++ * 20;
    hd_be64(l, seq);
    hd_be32(l + 8, 1);
    hd_be64(l + 12, 0);
    if (nloc == ZECHO_EXP_ROW || i + 1 == g->n) { /* the row is full, or the group ends */
      unsigned char eb[17];
      hd_be64(eb, second);
      hd_be64(eb + 8, first);
      eb[16] = 'g';
      MDB_val ek = {sizeof eb, eb}, ev = {nloc * 20, loc};
      rc = mdb_put(t, z->expiry, &ek, &ev, 0);
      first = seq + 1;
      nloc = 0;
    }
  }
  if (!rc) {
    unsigned char sb[8];
    hd_be64(sb, z->seq);
    MDB_val k = {3, "seq"}, v = {8, sb};
    rc = mdb_put(t, z->meta, &k, &v, 0);
  }
  if (rc) {
    mdb_txn_abort(t);
    return rc;
  }
  return mdb_txn_commit(t);
}

static int group_add_body(zecho_group *g, const void *p, size_t n) {
  if (g->len + n > g->cap) {
    size_t cap = g->cap ? g->cap : 1 << 20;
    while (cap < g->len + n) cap *= 2;
    char *d = realloc(g->data, cap);
    if (!d) return -1;
    g->data = d;
    g->cap = cap;
  }
  memcpy(g->data + g->len, p, n);
  g->len += n;
  return 0;
}

static void *sync_main(void *arg) {
  zecho_sync *z = arg;
  zecho_group *g;
  while (zmq_recv(z->pipe, &g, sizeof g, 0) == (int)sizeof g) {
    if (!g) break;
    if (z->env) {
      int rc = z->err ? 0 : lmdb_store_group(z, g);
      if (rc) z->err = rc;
      zmq_send(z->pipe, &g, sizeof g, 0);
      continue;
    }
    size_t off = 0;
    while (off < g->len && !z->err) {
      size_t n = g->len - off;
      if (!z->grow && (off_t)n > ZECHO_RING - z->at) n = (size_t)(ZECHO_RING - z->at);
      ssize_t w = pwrite(z->fd, g->data + off, n, z->at);
      if (w <= 0) {
        z->err = errno ? errno : EIO;
        break;
      }
      off += (size_t)w;
      z->at = z->grow ? z->at + w : (z->at + w) % ZECHO_RING;
    }
    if (!z->err && fdatasync(z->fd) != 0) z->err = errno;
    zmq_send(z->pipe, &g, sizeof g, 0);
  }
  return NULL;
}

/* Take one request [identity][corr][body...] into g, the socket having one ready. 1 taken, 0
 * none (EAGAIN), -1 interrupted. A malformed request (fewer than 3 parts) gets an empty reply
 * at once, as the plain echo does. */
static int take_request(void *s, zecho_group *g) {
  zmq_msg_t part;
  int more = 1, n = 0;
  zmq_msg_t *route = &g->route[2 * g->n];
  while (more) {
    zmq_msg_init(&part);
    if (zmq_msg_recv(&part, s, n == 0 ? ZMQ_DONTWAIT : 0) < 0) {
      int e = errno;
      zmq_msg_close(&part);
      if (n == 0 && e == EAGAIN) return 0;
      return -1;
    }
    more = zmq_msg_more(&part);
    if (n < 2) {
      zmq_msg_init(&route[n]);
      zmq_msg_move(&route[n], &part);
    } else {
      int full = group_add_body(g, zmq_msg_data(&part), zmq_msg_size(&part));
      zmq_msg_close(&part);
      if (full) return -1; /* out of memory: the caller stops */
      g->ends[g->n] = g->len; /* a later body part of the same request extends it */
    }
    n++;
  }
  if (n >= 3) {
    g->n++;
  } else if (n == 2) { /* [identity][corr] only: an empty reply now, outside the group */
    zmq_msg_send(&route[0], s, ZMQ_SNDMORE);
    zmq_msg_send(&route[1], s, ZMQ_SNDMORE);
    zmq_send(s, "", 0, 0);
  } else {
    zmq_msg_close(&route[0]);
  }
  return 1;
}

static void group_reply(void *s, zecho_group *g) {
  for (size_t i = 0; i < g->n; i++) {
    zmq_msg_send(&g->route[2 * i], s, ZMQ_SNDMORE); /* takes the parts */
    zmq_msg_send(&g->route[2 * i + 1], s, ZMQ_SNDMORE);
    zmq_send(s, zecho_ok, sizeof zecho_ok - 1, 0);
  }
  g->n = 0;
  g->len = 0;
}

/* The LMDB floor's environment in dir, opened as Herald opens its store (MDB_NOTLS, every
 * commit durable) with the map size of bench/peers/herald.sh. 0, or an LMDB/errno code. */
static int lmdb_open(zecho_sync *z, const char *dir) {
  MDB_txn *t;
  int rc = mdb_env_create(&z->env);
  if (!rc) rc = mdb_env_set_maxdbs(z->env, 4);
  if (!rc) rc = mdb_env_set_mapsize(z->env, (size_t)32 << 30);
  if (!rc) rc = mdb_env_open(z->env, dir, MDB_NOTLS, 0600);
  if (!rc) rc = mdb_txn_begin(z->env, NULL, 0, &t);
  if (rc) return rc;
  if (!(rc = mdb_dbi_open(t, "messages", MDB_CREATE, &z->msgs)) &&
      !(rc = mdb_dbi_open(t, "expiry", MDB_CREATE, &z->expiry)) &&
      !(rc = mdb_dbi_open(t, "meta", MDB_CREATE, &z->meta)))
    return mdb_txn_commit(t);
  mdb_txn_abort(t);
  return rc;
}

static void sync_close(zecho_sync *z) {
  if (z->env) mdb_env_close(z->env);
  if (z->fd >= 0) close(z->fd);
}

/* The file floor's F (--sync-file), or the LMDB floor's environment (--sync-lmdb). */
static int sync_open(zecho_sync *z, const opts *o) {
  const char *what = o->sync_lmdb ? o->sync_lmdb : o->sync_file;
  int rc = 0;
  z->fd = -1;
  z->grow = o->sync_grow;
  if (o->sync_lmdb) {
    if ((rc = lmdb_open(z, o->sync_lmdb))) goto fail;
    return 0;
  }
  if ((z->fd = open(o->sync_file, O_RDWR | O_CREAT | O_TRUNC, 0600)) < 0) goto fail_errno;
  /* Zero the ring once and sync it: later writes overwrite allocated blocks. */
  static char zeros[1 << 20];
  for (off_t at = 0; !z->grow && at < ZECHO_RING; at += (off_t)sizeof zeros)
    if (pwrite(z->fd, zeros, sizeof zeros, at) != (ssize_t)sizeof zeros) goto fail_errno;
  if (!z->grow && fsync(z->fd) != 0) goto fail_errno;
  return 0;
fail_errno:
  rc = errno ? errno : EIO;
fail:
  fprintf(stderr, "herald-bench zmq-echo: %s: %s\n", what, mdb_strerror(rc));
  sync_close(z);
  return 1;
}

static int run_durable(void *ctx, void *s, const opts *o) {
  zecho_sync z = {0};
  const char *what = o->sync_lmdb ? o->sync_lmdb : o->sync_file;
  if (sync_open(&z, o)) return 1;
  zecho_group groups[2] = {{0}, {0}};
  for (int i = 0; i < 2; i++) {
    groups[i].route = calloc(2 * ZECHO_GROUP_MAX, sizeof(zmq_msg_t));
    groups[i].ends = calloc(ZECHO_GROUP_MAX, sizeof(size_t));
    if (!groups[i].route || !groups[i].ends) {
      fprintf(stderr, "herald-bench zmq-echo: out of memory\n");
      for (int j = 0; j <= i; j++) {
        free(groups[j].route);
        free(groups[j].ends);
      }
      sync_close(&z);
      return 1;
    }
  }
  void *mine = zmq_socket(ctx, ZMQ_PAIR);
  z.pipe = zmq_socket(ctx, ZMQ_PAIR);
  zmq_bind(mine, "inproc://zecho-sync");
  zmq_connect(z.pipe, "inproc://zecho-sync");
  zecho_group *gathering = &groups[0], *syncing = NULL;
  pthread_t th;
  pthread_create(&th, NULL, sync_main, &z);
  int rc = 0;
  for (;;) {
    zmq_pollitem_t pi[2] = {{s, 0, ZMQ_POLLIN, 0}, {mine, 0, ZMQ_POLLIN, 0}};
    /* While a group syncs, gather only up to the cap; else wait for either side. */
    if (gathering->n >= ZECHO_GROUP_MAX) pi[0].events = 0;
    if (zmq_poll(pi, 2, -1) < 0) break;
    if (pi[1].revents & ZMQ_POLLIN) {
      zecho_group *done;
      if (zmq_recv(mine, &done, sizeof done, 0) != (int)sizeof done) break;
      if (z.err) {
        fprintf(stderr, "herald-bench zmq-echo: %s: %s\n", what, mdb_strerror(z.err));
        rc = 1;
        break;
      }
      group_reply(s, done);
      syncing = NULL;
    }
    if (pi[0].revents & ZMQ_POLLIN) {
      int t = 0;
      while (gathering->n < ZECHO_GROUP_MAX && (t = take_request(s, gathering)) > 0) {
      }
      if (t < 0) break;
    }
    if (!syncing && gathering->n) {
      syncing = gathering;
      gathering = syncing == &groups[0] ? &groups[1] : &groups[0];
      zmq_send(mine, &syncing, sizeof syncing, 0);
    }
  }
  zecho_group *stop = NULL;
  zmq_send(mine, &stop, sizeof stop, ZMQ_DONTWAIT);
  pthread_join(th, NULL);
  zmq_close(mine);
  zmq_close(z.pipe);
  sync_close(&z);
  for (int i = 0; i < 2; i++) { /* requests never answered: their route parts */
    for (size_t k = 0; k < 2 * groups[i].n; k++) zmq_msg_close(&groups[i].route[k]);
    free(groups[i].route);
    free(groups[i].ends);
    free(groups[i].data);
  }
  return rc;
}

int run_zmq_echo(opts *o) {
  void *ctx = zmq_ctx_new();
  void *s = zmq_socket(ctx, ZMQ_ROUTER);
  int hwm = 1000000, rc = 0;
  zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
  zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm);
  if (zmq_bind(s, o->zmq) != 0) {
    fprintf(stderr, "herald-bench zmq-echo: cannot bind %s: %s\n", o->zmq, zmq_strerror(errno));
    zmq_close(s);
    zmq_ctx_term(ctx);
    return 1;
  }
  if (o->sync_file || o->sync_lmdb) {
    rc = run_durable(ctx, s, o);
    goto out;
  }
  for (;;) {
    zmq_msg_t part;
    int more = 1, n = 0;
    /* [identity][corr][body]: the first two go back as they came, the body is dropped */
    while (more) {
      zmq_msg_init(&part);
      if (zmq_msg_recv(&part, s, 0) < 0) {
        zmq_msg_close(&part);
        goto out; /* interrupted: the caller kills us to stop */
      }
      more = zmq_msg_more(&part);
      if (more && n < 2) zmq_msg_send(&part, s, ZMQ_SNDMORE); /* takes the part */
      else zmq_msg_close(&part);
      n++;
    }
    if (n >= 3) zmq_send(s, zecho_ok, sizeof zecho_ok - 1, 0);
    else if (n == 2) zmq_send(s, "", 0, 0); /* a malformed request still ends its reply */
  }
out:
  zmq_close(s);
  zmq_ctx_term(ctx);
  return rc;
}
