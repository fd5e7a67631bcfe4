/* zpub.c — DEALER publisher on libuv (see zpub.h). */
#include "zpub.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

typedef struct pending {
  struct pending *next;
  uint64_t corr;
  size_t len;
  char body[];
} pending;

struct hb_zpub {
  void *sock;
  uv_poll_t poll;
  hb_zack_cb cb;
  void *ud;
  pending *head, *tail;  /* not yet accepted by the socket (HWM) */
  size_t inflight;
  int draining;          /* a reply callback's send must not start a nested drain */
};

static void drain(hb_zpub *z);

static void on_poll(uv_poll_t *p, int status, int events) { drain(p->data); }

/* [corr][body]; -1 if the socket takes nothing now (HWM): once the first frame is in, the
 * body follows. libzmq copies both. */
static int send_request(hb_zpub *z, uint64_t corr, const void *body, size_t len) {
  if (zmq_send(z->sock, &corr, 8, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) return -1;
  zmq_send(z->sock, body, len, 0);
  return 0;
}

/* Take one reply and hand it to the callback. 1 if one was taken, 0 if none was waiting. */
static int recv_reply(hb_zpub *z) {
  zmq_msg_t parts[2];
  int n = 0, more = 1;
  while (more && n < 2) {
    zmq_msg_init(&parts[n]);
    if (zmq_msg_recv(&parts[n], z->sock, ZMQ_DONTWAIT) < 0) {
      zmq_msg_close(&parts[n]);
      break;
    }
    more = zmq_msg_more(&parts[n]);
    n++;
  }
  int ours = !more;
  while (more) { /* not a reply of ours: skip the rest of it */
    zmq_msg_t extra;
    zmq_msg_init(&extra);
    if (zmq_msg_recv(&extra, z->sock, ZMQ_DONTWAIT) < 0) more = 0;
    else more = zmq_msg_more(&extra);
    zmq_msg_close(&extra);
  }
  if (ours && n == 2 && zmq_msg_size(&parts[0]) == 8) {
    uint64_t corr;
    memcpy(&corr, zmq_msg_data(&parts[0]), 8);
    const char *r = zmq_msg_data(&parts[1]);
    size_t len = zmq_msg_size(&parts[1]);
    /* {"id": ...} is a fixmap of one entry whose key is "id": 0x81 0xa2 'i' 'd'. */
    int ok = len > 4 && (unsigned char)r[0] == 0x81 && r[2] == 'i' && r[3] == 'd';
    z->inflight--;
    z->cb(z->ud, corr, ok, r, len);
  }
  for (int i = 0; i < n; i++) zmq_msg_close(&parts[i]);
  return n > 0;
}

/* Replies first (each may queue a request), then queued requests, until libzmq reports
 * nothing left to do: its fd is edge-triggered, so only then may the loop wait on it. One
 * ZMQ_EVENTS check per round, not per message (each costs libzmq a mailbox poll). */
static void drain(hb_zpub *z) {
  if (z->draining) return;
  z->draining = 1;
  for (;;) {
    while (recv_reply(z)) {
    }
    while (z->head && send_request(z, z->head->corr, z->head->body, z->head->len) == 0) {
      pending *p = z->head;
      z->head = p->next;
      if (!z->head) z->tail = NULL;
      free(p);
    }
    int ev = 0;
    size_t sz = sizeof ev;
    if (zmq_getsockopt(z->sock, ZMQ_EVENTS, &ev, &sz)) break;
    if (!(ev & ZMQ_POLLIN) && !((ev & ZMQ_POLLOUT) && z->head)) break;
  }
  z->draining = 0;
}

hb_zpub *hb_zpub_new(uv_loop_t *loop, void *zctx, const char *endpoint, hb_zack_cb cb, void *ud) {
  hb_zpub *z = calloc(1, sizeof *z);
  z->sock = zmq_socket(zctx, ZMQ_DEALER);
  int hwm = 1000000, linger = 0, fd;
  size_t fdsz = sizeof fd;
  zmq_setsockopt(z->sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
  zmq_setsockopt(z->sock, ZMQ_RCVHWM, &hwm, sizeof hwm);
  zmq_setsockopt(z->sock, ZMQ_LINGER, &linger, sizeof linger);
  if (zmq_connect(z->sock, endpoint) || zmq_getsockopt(z->sock, ZMQ_FD, &fd, &fdsz)) {
    zmq_close(z->sock);
    free(z);
    return NULL;
  }
  z->cb = cb;
  z->ud = ud;
  uv_poll_init(loop, &z->poll, fd);
  z->poll.data = z;
  uv_poll_start(&z->poll, UV_READABLE, on_poll);
  return z;
}

int hb_zpub_send(hb_zpub *z, uint64_t corr, const void *body, size_t len) {
  z->inflight++;
  /* Straight from the caller's buffer when nothing waits before it and the socket takes it. */
  if (!z->head && send_request(z, corr, body, len) == 0) {
    drain(z); /* inside a reply callback: the running drain goes on */
    return 0;
  }
  pending *p = malloc(sizeof *p + len);
  if (!p) {
    z->inflight--;
    return -1;
  }
  p->next = NULL;
  p->corr = corr;
  p->len = len;
  memcpy(p->body, body, len);
  if (z->tail) z->tail->next = p;
  else z->head = p;
  z->tail = p;
  drain(z);
  return 0;
}

size_t hb_zpub_inflight(const hb_zpub *z) { return z->inflight; }

static void on_closed(uv_handle_t *h) { free(h->data); }

void hb_zpub_close(hb_zpub *z) {
  while (z->head) {
    pending *p = z->head;
    z->head = p->next;
    free(p);
  }
  uv_poll_stop(&z->poll); /* before zmq_close: the polled fd belongs to the socket */
  zmq_close(z->sock);
  uv_close((uv_handle_t *)&z->poll, on_closed);
}
