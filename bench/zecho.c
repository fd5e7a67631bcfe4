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
 * each fdatasync then also writes the file's new size and block allocation (its metadata). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

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
} zecho_group;

typedef struct zecho_sync {
  int fd;
  int grow; /* append, the file growing as a log does, instead of the ring */
  off_t at;
  void *pipe; /* PAIR: receives a group pointer, answers it once durable */
  int err;
} zecho_sync;

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

static int run_durable(void *ctx, void *s, const char *file, int grow) {
  zecho_sync z = {.fd = open(file, O_RDWR | O_CREAT | O_TRUNC, 0600), .grow = grow};
  if (z.fd < 0) {
    fprintf(stderr, "herald-bench zmq-echo: %s: %s\n", file, strerror(errno));
    return 1;
  }
  /* Zero the ring once and sync it: later writes overwrite allocated blocks. */
  static char zeros[1 << 20];
  for (off_t at = 0; !grow && at < ZECHO_RING; at += (off_t)sizeof zeros)
    if (pwrite(z.fd, zeros, sizeof zeros, at) != (ssize_t)sizeof zeros) {
      fprintf(stderr, "herald-bench zmq-echo: %s: %s\n", file, strerror(errno));
      close(z.fd);
      return 1;
    }
  if (!grow) fsync(z.fd);
  zecho_group groups[2] = {{0}, {0}};
  for (int i = 0; i < 2; i++)
    if (!(groups[i].route = calloc(2 * ZECHO_GROUP_MAX, sizeof(zmq_msg_t)))) {
      fprintf(stderr, "herald-bench zmq-echo: out of memory\n");
      free(groups[0].route);
      close(z.fd);
      return 1;
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
        fprintf(stderr, "herald-bench zmq-echo: %s: %s\n", file, strerror(z.err));
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
  close(z.fd);
  for (int i = 0; i < 2; i++) { /* requests never answered: their route parts */
    for (size_t k = 0; k < 2 * groups[i].n; k++) zmq_msg_close(&groups[i].route[k]);
    free(groups[i].route);
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
  if (o->sync_file) {
    rc = run_durable(ctx, s, o->sync_file, o->sync_grow);
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
