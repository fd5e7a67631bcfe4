/* pconn.c — plain TCP byte stream for the peer adapters (see pconn.h). */
#include "pconn.h"

#include <stdlib.h>
#include <string.h>

struct pconn {
  uv_tcp_t tcp;
  uv_connect_t creq;
  uv_write_t wreq;
  pconn_parse_cb parse;
  pconn_event_cb event;
  void *ud;
  char *in, *out, *wbuf;
  size_t in_len, in_cap, out_len, out_cap, wbuf_cap;
  int connected, writing, closing;
};

static void grow(char **b, size_t *cap, size_t need) {
  if (need <= *cap) return;
  size_t n = *cap ? *cap : 4096;
  while (n < need) n *= 2;
  *b = realloc(*b, n);
  *cap = n;
}

static void flush(pconn *c);

static void on_written(uv_write_t *w, int status) {
  pconn *c = w->data;
  c->writing = 0;
  if (c->closing) return;
  if (status) {
    c->event(c, c->ud, status);
    return;
  }
  flush(c);
}

static void flush(pconn *c) {
  if (!c->connected || c->writing || c->closing || !c->out_len) return;
  /* Swap the output buffer into the write buffer so new bytes can queue meanwhile. */
  char *t = c->wbuf;
  size_t tc = c->wbuf_cap;
  c->wbuf = c->out;
  c->wbuf_cap = c->out_cap;
  c->out = t;
  c->out_cap = tc;
  uv_buf_t b = uv_buf_init(c->wbuf, (unsigned)c->out_len);
  c->out_len = 0;
  c->wreq.data = c;
  c->writing = 1;
  if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_written)) {
    c->writing = 0;
    c->event(c, c->ud, UV_EPIPE);
  }
}

static void alloc_cb(uv_handle_t *h, size_t sz, uv_buf_t *b) {
  pconn *c = h->data;
  grow(&c->in, &c->in_cap, c->in_len + 65536);
  b->base = c->in + c->in_len;
  b->len = c->in_cap - c->in_len;
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b) {
  pconn *c = st->data;
  if (c->closing) return;
  if (n < 0) {
    uv_read_stop(st);
    c->event(c, c->ud, (int)n);
    return;
  }
  c->in_len += (size_t)n;
  size_t used = 0;
  while (used < c->in_len && !c->closing) {
    size_t k = c->parse(c, c->ud, c->in + used, c->in_len - used);
    if (!k) break;
    used += k;
  }
  if (c->closing) return;
  memmove(c->in, c->in + used, c->in_len - used);
  c->in_len -= used;
  flush(c);
}

static void on_connect(uv_connect_t *r, int status) {
  pconn *c = r->data;
  if (c->closing) return;
  if (status) {
    c->event(c, c->ud, status);
    return;
  }
  c->connected = 1;
  uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, on_read);
  c->event(c, c->ud, 0);
  flush(c);
}

pconn *pconn_new(uv_loop_t *loop, const struct sockaddr_in *addr, pconn_parse_cb parse,
                 pconn_event_cb event, void *ud) {
  pconn *c = calloc(1, sizeof *c);
  c->parse = parse;
  c->event = event;
  c->ud = ud;
  uv_tcp_init(loop, &c->tcp);
  c->tcp.data = c;
  uv_tcp_nodelay(&c->tcp, 1);
  c->creq.data = c;
  if (uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)addr, on_connect)) {
    c->closing = 1;
    uv_close((uv_handle_t *)&c->tcp, NULL);
    return NULL; /* leaks the struct on a failed connect call: rare, bench only */
  }
  return c;
}

void pconn_write(pconn *c, const void *buf, size_t len) {
  if (c->closing) return;
  grow(&c->out, &c->out_cap, c->out_len + len);
  memcpy(c->out + c->out_len, buf, len);
  c->out_len += len;
  if (!c->writing && c->connected) flush(c);
}

static void on_closed(uv_handle_t *h) {
  pconn *c = h->data;
  free(c->in);
  free(c->out);
  free(c->wbuf);
  free(c);
}

void pconn_close(pconn *c) {
  if (!c || c->closing) return;
  c->closing = 1;
  uv_close((uv_handle_t *)&c->tcp, on_closed);
}
