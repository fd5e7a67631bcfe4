/* client.c — one ipconn connection on a libuv loop (see hdc_client.h). */
#include "hdc_client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { ST_RESOLVING, ST_CONNECTING, ST_HELLO, ST_READY, ST_CLOSING };

struct hdc_conn {
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_connect_t creq;
  uv_getaddrinfo_t gai;
  uv_loop_t *loop;
  hdc_conn_cbs cbs;
  void *ud;
  char *host, *device, *tenant, *token, *agent;
  int port;
  uint32_t max_frame, connect_timeout_ms;
  hdc_framer fr;
  int state;
  int open_parts; /* handles not yet closed + a getaddrinfo still running */
  int tcp_inited;
  uint64_t started_ms, last_rx_ms, last_tx_ms;
  uint32_t hb_ms, idle_ms;
  uint64_t ping_n;
  hdc_close_info why;
};

typedef struct wreq {
  uv_write_t req;
  uint8_t data[];
} wreq;

static void conn_fail(hdc_conn *c, int status, int sys_err);
static void on_tick(uv_timer_t *t);

/* ---- end of life ---- */
/* One part (a handle, or a running getaddrinfo) is over; the last one frees the conn. */
static void part_done(hdc_conn *c) {
  if (--c->open_parts > 0) return;
  c->cbs.on_close(c, c->ud, &c->why);
  hdc_framer_free(&c->fr);
  free(c->host);
  free(c->device);
  free(c->tenant);
  free(c->token);
  free(c->agent);
  free(c);
}

static void part_closed(uv_handle_t *h) { part_done(h->data); }

static void conn_fail(hdc_conn *c, int status, int sys_err) {
  if (c->state == ST_CLOSING) return;
  int was = c->state;
  c->state = ST_CLOSING;
  if (!c->why.status) {
    c->why.status = status;
    c->why.sys_err = sys_err;
  }
  c->why.was_ready = was == ST_READY || c->why.was_ready;
  if (was == ST_RESOLVING) uv_cancel((uv_req_t *)&c->gai); /* its callback still runs */
  uv_timer_stop(&c->timer);
  uv_close((uv_handle_t *)&c->timer, part_closed);
  if (c->tcp_inited) uv_close((uv_handle_t *)&c->tcp, part_closed);
}

void hdc_conn_close(hdc_conn *c) {
  if (c) conn_fail(c, HDC_ECANCELED, 0);
}

int hdc_conn_is_ready(const hdc_conn *c) { return c->state == ST_READY; }

size_t hdc_conn_write_queue(const hdc_conn *c) {
  return c->tcp_inited ? uv_stream_get_write_queue_size((const uv_stream_t *)&c->tcp) : 0;
}

/* ---- writing ---- */
static void on_written(uv_write_t *req, int status) {
  hdc_conn *c = req->data;
  free(req);
  if (status && status != UV_ECANCELED) conn_fail(c, HDC_EIO, status);
}

/* Send whole frames: straight into the socket when it takes them, the rest through a write
 * request that owns a copy. */
static int send_buf(hdc_conn *c, hdc_buf *b) {
  if (c->state == ST_CLOSING) {
    hdc_buf_free(b);
    return HDC_ECLOSED;
  }
  uv_buf_t ub = uv_buf_init((char *)b->p, b->len);
  int n = uv_try_write((uv_stream_t *)&c->tcp, &ub, 1);
  if (n == UV_EAGAIN) n = 0;
  if (n < 0) {
    hdc_buf_free(b);
    conn_fail(c, HDC_EIO, n);
    return HDC_ECLOSED;
  }
  c->last_tx_ms = uv_now(c->loop);
  if ((uint32_t)n < b->len) {
    size_t left = b->len - (size_t)n;
    wreq *w = malloc(sizeof *w + left);
    if (!w) {
      hdc_buf_free(b);
      conn_fail(c, HDC_ENOMEM, 0);
      return HDC_ENOMEM;
    }
    memcpy(w->data, b->p + n, left);
    w->req.data = c;
    ub = uv_buf_init((char *)w->data, (unsigned)left);
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &ub, 1, on_written);
    if (rc) {
      free(w);
      hdc_buf_free(b);
      conn_fail(c, HDC_EIO, rc);
      return HDC_ECLOSED;
    }
  }
  hdc_buf_free(b);
  return 0;
}

int hdc_conn_ack(hdc_conn *c, const uint64_t *ids, size_t n) {
  if (c->state != ST_READY) return HDC_ECLOSED;
  hdc_buf b = {0};
  for (size_t i = 0; i < n; i += HDC_MAX_ACK_IDS) {
    size_t k = n - i < HDC_MAX_ACK_IDS ? n - i : HDC_MAX_ACK_IDS;
    if (hdc_enc_ack(&b, ids + i, k)) {
      hdc_buf_free(&b);
      return HDC_ENOMEM;
    }
  }
  return b.len ? send_buf(c, &b) : 0;
}

int hdc_conn_ping(hdc_conn *c) {
  if (c->state != ST_READY) return HDC_ECLOSED;
  hdc_buf b = {0};
  if (hdc_enc_ping(&b, ++c->ping_n)) return HDC_ENOMEM;
  return send_buf(c, &b);
}

/* ---- reading ---- */
static void copy_reason(hdc_conn *c, const hdc_frame *f, int status) {
  c->why.status = status;
  hdc_str_copy(f->code, c->why.code, sizeof c->why.code);
  hdc_str_copy(f->text, c->why.text, sizeof c->why.text);
  hdc_str_copy(f->alt, c->why.alt, sizeof c->why.alt);
  c->why.retry_s = f->retry;
}

static int on_frame(void *ud, const uint8_t *body, size_t len) {
  hdc_conn *c = ud;
  hdc_frame f;
  int rc = hdc_frame_decode(body, len, &f);
  if (rc) {
    conn_fail(c, HDC_EPROTO, 0);
    return 1;
  }
  switch (f.type) {
  case HDC_T_WELCOME:
    if (c->state != ST_HELLO) break;
    if (f.v != HDC_PROTO_VERSION) {
      conn_fail(c, HDC_EPROTO, 0);
      return 1;
    }
    c->state = ST_READY;
    c->hb_ms = (uint32_t)(f.heartbeat > 86400 ? 86400000 : f.heartbeat * 1000);
    c->idle_ms = (uint32_t)(f.idle > 86400 ? 86400000 : f.idle * 1000);
    if (!c->idle_ms) c->idle_ms = 3 * c->hb_ms;
    {
      /* Tick often enough that a ping is never much later than the heartbeat asks. */
      uint64_t tick = c->hb_ms / 4 < 250 ? 250 : c->hb_ms / 4;
      uv_timer_start(&c->timer, on_tick, tick, tick);
    }
    if (c->cbs.on_ready) c->cbs.on_ready(c, c->ud, &f);
    break;
  case HDC_T_MSG:
    if (c->state != ST_READY) {
      conn_fail(c, HDC_EPROTO, 0);
      return 1;
    }
    if (c->cbs.on_msg) c->cbs.on_msg(c, c->ud, &f);
    break;
  case HDC_T_ACKED:
    if (c->cbs.on_acked && c->state == ST_READY) {
      uint64_t ids[HDC_MAX_ACK_IDS];
      size_t n = hdc_frame_ids(&f, ids, HDC_MAX_ACK_IDS);
      c->cbs.on_acked(c, c->ud, ids, n);
    }
    break;
  case HDC_T_PING:
    if (c->state == ST_READY || c->state == ST_HELLO) {
      hdc_buf b = {0};
      if (hdc_enc_pong(&b, f.n) == 0) send_buf(c, &b);
    }
    break;
  case HDC_T_DENY:
    copy_reason(c, &f, HDC_EDENIED);
    conn_fail(c, HDC_EDENIED, 0);
    return 1;
  case HDC_T_GOAWAY:
    copy_reason(c, &f, HDC_EGOAWAY);
    c->why.was_ready = c->state == ST_READY;
    conn_fail(c, HDC_EGOAWAY, 0);
    return 1;
  default: /* pong, and types of later versions */
    break;
  }
  return c->state == ST_CLOSING; /* a callback closed it: stop reading */
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  /* One buffer per thread: read_cb consumes it before the next alloc, and the splitter
   * copies only the tail of a split frame. */
  static _Thread_local char shared[65536];
  *buf = uv_buf_init(shared, sizeof shared);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  hdc_conn *c = s->data;
  if (nread == 0 || c->state == ST_CLOSING) return;
  if (nread < 0) {
    conn_fail(c, nread == UV_EOF ? HDC_ECLOSED : HDC_EIO, nread == UV_EOF ? 0 : (int)nread);
    return;
  }
  c->last_rx_ms = uv_now(c->loop);
  int rc = hdc_framer_feed(&c->fr, (const uint8_t *)buf->base, (size_t)nread, c->max_frame,
                           on_frame, c);
  if (rc < 0) conn_fail(c, rc == HDC_ENOMEM ? HDC_ENOMEM : rc == HDC_ETOOBIG ? HDC_ETOOBIG
                                                                             : HDC_EPROTO, 0);
}

/* ---- connecting ---- */
static void on_tick(uv_timer_t *t) {
  hdc_conn *c = t->data;
  uint64_t now = uv_now(c->loop);
  if (c->state != ST_READY) {
    if (now - c->started_ms >= c->connect_timeout_ms) conn_fail(c, HDC_ETIMEDOUT, 0);
    return;
  }
  if (now - c->last_rx_ms >= c->idle_ms) {
    conn_fail(c, HDC_ETIMEDOUT, 0);
    return;
  }
  if (now - c->last_tx_ms >= c->hb_ms) hdc_conn_ping(c);
}

static void on_connect(uv_connect_t *req, int status) {
  hdc_conn *c = req->data;
  if (c->state == ST_CLOSING) return;
  if (status) {
    conn_fail(c, HDC_EIO, status);
    return;
  }
  c->state = ST_HELLO;
  c->last_rx_ms = uv_now(c->loop);
  uv_tcp_nodelay(&c->tcp, 1);
  int rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  if (rc) {
    conn_fail(c, HDC_EIO, rc);
    return;
  }
  hdc_buf b = {0};
  if (hdc_enc_hello(&b, c->device, c->tenant, c->token, c->agent)) {
    hdc_buf_free(&b);
    conn_fail(c, HDC_ENOMEM, 0);
    return;
  }
  send_buf(c, &b);
}

static void start_connect(hdc_conn *c, const struct sockaddr *sa) {
  int rc = uv_tcp_init(c->loop, &c->tcp);
  if (rc) {
    conn_fail(c, HDC_EIO, rc);
    return;
  }
  c->tcp_inited = 1;
  c->open_parts++;
  c->tcp.data = c;
  c->state = ST_CONNECTING;
  c->creq.data = c;
  if ((rc = uv_tcp_connect(&c->creq, &c->tcp, sa, on_connect))) conn_fail(c, HDC_EIO, rc);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *ai) {
  hdc_conn *c = req->data;
  if (c->state == ST_CLOSING || status) {
    if (ai) uv_freeaddrinfo(ai);
    conn_fail(c, HDC_EIO, status ? status : 0);
    part_done(c); /* the getaddrinfo part is over */
    return;
  }
  c->open_parts--; /* resolution done; tcp takes its place below */
  start_connect(c, ai->ai_addr);
  uv_freeaddrinfo(ai);
}

int hdc_conn_open(uv_loop_t *loop, const hdc_conn_opts *o, const hdc_conn_cbs *cbs, void *ud,
                  hdc_conn **out) {
  if (!o || !o->host || !o->device || !o->tenant || !o->token || !cbs || !cbs->on_close ||
      o->port <= 0 || o->port > 65535)
    return HDC_EINVAL;
  hdc_conn *c = calloc(1, sizeof *c);
  if (!c) return HDC_ENOMEM;
  c->loop = loop;
  c->cbs = *cbs;
  c->ud = ud;
  c->port = o->port;
  c->max_frame = o->max_frame ? o->max_frame : HDC_MAX_FRAME_HARD;
  c->connect_timeout_ms = o->connect_timeout_ms ? o->connect_timeout_ms : 10000;
  c->why.retry_s = -1;
  c->host = strdup(o->host);
  c->device = strdup(o->device);
  c->tenant = strdup(o->tenant);
  c->token = strdup(o->token);
  c->agent = o->agent ? strdup(o->agent) : NULL;
  if (!c->host || !c->device || !c->tenant || !c->token || (o->agent && !c->agent)) {
    free(c->host);
    free(c->device);
    free(c->tenant);
    free(c->token);
    free(c->agent);
    free(c);
    return HDC_ENOMEM;
  }
  uv_timer_init(loop, &c->timer);
  c->timer.data = c;
  c->open_parts = 1;
  c->started_ms = uv_now(loop);
  uv_timer_start(&c->timer, on_tick, 250, 250);
  *out = c;
  union {
    struct sockaddr sa;
    struct sockaddr_in v4;
    struct sockaddr_in6 v6;
  } addr;
  if (uv_ip4_addr(c->host, c->port, &addr.v4) == 0 ||
      uv_ip6_addr(c->host, c->port, &addr.v6) == 0) {
    start_connect(c, &addr.sa);
    return 0;
  }
  char port[8];
  snprintf(port, sizeof port, "%d", c->port);
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
  c->state = ST_RESOLVING;
  c->gai.data = c;
  c->open_parts++;
  int rc = uv_getaddrinfo(loop, &c->gai, on_resolved, c->host, port, &hints);
  if (rc) {
    c->open_parts--;
    conn_fail(c, HDC_EIO, rc);
  }
  return 0;
}
