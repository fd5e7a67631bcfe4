/* httpc.c — keep-alive HTTP/1.1 client connection (see httpc.h).
 *
 * Each TCP connection is its own heap object, so an old socket can finish closing while a new
 * one connects; a request that meets a keep-alive socket the server already closed (error before
 * any byte of the answer) is sent once more on a fresh connection. */
#include "httpc.h"

#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct sock {
  uv_tcp_t tcp;
  uv_connect_t creq;
  hb_conn *c;       /* NULL once detached from its hb_conn */
  int connected;
} sock;

struct hb_conn {
  uv_loop_t *loop;
  struct sockaddr_in addr;
  sock *s;
  http_parser parser;
  http_parser_settings settings;
  char *req;
  size_t req_len;
  int resent;
  hb_resp_cb cb;
  void *ud;
  char *body;
  size_t body_len, body_cap;
  int done, got_bytes;
  const char *extra;   /* extra header lines for the request being built */
  char hname[32];      /* the header field being parsed (truncated) */
  int hwant;           /* 1 Last-Modified, 2 Etag, 0 other */
  char last_mod[64], etag[64];
};

static int on_hfield(http_parser *p, const char *at, size_t n) {
  hb_conn *c = p->data;
  c->hwant = (n == 13 && strncasecmp(at, "Last-Modified", 13) == 0) ? 1
             : (n == 4 && strncasecmp(at, "Etag", 4) == 0)          ? 2
                                                                     : 0;
  if (c->hwant) (c->hwant == 1 ? c->last_mod : c->etag)[0] = 0;
  return 0;
}

static int on_hvalue(http_parser *p, const char *at, size_t n) {
  hb_conn *c = p->data;
  if (!c->hwant) return 0;
  char *dst = c->hwant == 1 ? c->last_mod : c->etag;
  size_t have = strlen(dst);
  if (have + n >= 64) n = 63 - have;
  memcpy(dst + have, at, n);
  dst[have + n] = 0;
  return 0;
}

static void on_sock_closed(uv_handle_t *h) { free(h->data); }

static void sock_drop(hb_conn *c) {
  sock *s = c->s;
  if (!s) return;
  c->s = NULL;
  s->c = NULL;
  s->tcp.data = s;
  uv_close((uv_handle_t *)&s->tcp, on_sock_closed);
}

static void finish(hb_conn *c, int status) {
  hb_resp_cb cb = c->cb;
  c->cb = NULL;
  if (cb) cb(c, c->ud, status, c->body ? c->body : "", c->body_len);
}

static int on_body(http_parser *p, const char *at, size_t n) {
  hb_conn *c = p->data;
  if (c->body_len + n + 1 > c->body_cap) {
    c->body_cap = (c->body_len + n + 1) * 2;
    c->body = realloc(c->body, c->body_cap);
  }
  memcpy(c->body + c->body_len, at, n);
  c->body_len += n;
  c->body[c->body_len] = 0;
  return 0;
}

static int on_complete(http_parser *p) {
  ((hb_conn *)p->data)->done = 1;
  return 0;
}

static void alloc_cb(uv_handle_t *h, size_t sz, uv_buf_t *b) {
  static __thread char buf[65536];
  b->base = buf;
  b->len = sizeof buf;
}

static int start(hb_conn *c);

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b) {
  sock *s = st->data;
  hb_conn *c = s->c;
  if (!c) return;
  if (n < 0) {
    sock_drop(c);
    if (!c->cb) return;
    if (!c->got_bytes && !c->resent) { /* stale keep-alive socket: one more try */
      c->resent = 1;
      if (start(c) == 0) return;
    }
    finish(c, (int)n);
    return;
  }
  if (n == 0) return;
  c->got_bytes = 1;
  size_t used = http_parser_execute(&c->parser, &c->settings, b->base, (size_t)n);
  if (used != (size_t)n && !c->done) {
    sock_drop(c);
    finish(c, UV_EPROTO);
    return;
  }
  if (c->done) {
    if (!http_should_keep_alive(&c->parser)) sock_drop(c);
    finish(c, (int)c->parser.status_code);
  }
}

static void on_written(uv_write_t *w, int status) { free(w); }

static int send_req(hb_conn *c) {
  http_parser_init(&c->parser, HTTP_RESPONSE);
  c->parser.data = c;
  c->body_len = 0;
  c->done = 0;
  c->got_bytes = 0;
  uv_write_t *w = malloc(sizeof *w);
  uv_buf_t b = uv_buf_init(c->req, (unsigned)c->req_len);
  int rc = uv_write(w, (uv_stream_t *)&c->s->tcp, &b, 1, on_written);
  if (rc) free(w);
  return rc;
}

static void on_connect(uv_connect_t *r, int status) {
  sock *s = r->data;
  hb_conn *c = s->c;
  if (!c) return;
  if (status || send_req(c)) {
    sock_drop(c);
    finish(c, status ? status : UV_EPIPE);
    return;
  }
  s->connected = 1;
  uv_read_start((uv_stream_t *)&s->tcp, alloc_cb, on_read);
}

static int start(hb_conn *c) {
  if (c->s && c->s->connected) return send_req(c);
  if (c->s) return 0; /* connecting: on_connect sends */
  sock *s = calloc(1, sizeof *s);
  if (!s) return UV_ENOMEM;
  s->c = c;
  uv_tcp_init(c->loop, &s->tcp);
  s->tcp.data = s;
  uv_tcp_nodelay(&s->tcp, 1);
  s->creq.data = s;
  c->s = s;
  int rc = uv_tcp_connect(&s->creq, &s->tcp, (const struct sockaddr *)&c->addr, on_connect);
  if (rc) sock_drop(c);
  return rc;
}

hb_conn *hb_conn_new(uv_loop_t *loop, const struct sockaddr_in *addr) {
  hb_conn *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->loop = loop;
  c->addr = *addr;
  c->settings.on_body = on_body;
  c->settings.on_message_complete = on_complete;
  c->settings.on_header_field = on_hfield;
  c->settings.on_header_value = on_hvalue;
  return c;
}

int hb_conn_busy(const hb_conn *c) { return c->cb != NULL; }

int hb_conn_request(hb_conn *c, const char *method, const char *path, const char *auth,
                    const char *body, hb_resp_cb cb, void *ud) {
  if (c->cb) return UV_EBUSY;
  size_t bl = body ? strlen(body) : 0;
  size_t cap = strlen(path) + bl + (auth ? strlen(auth) : 0) + (c->extra ? strlen(c->extra) : 0) +
               256;
  free(c->req);
  c->req = malloc(cap);
  int n = snprintf(c->req, cap,
                   "%s %s HTTP/1.1\r\nHost: bench\r\n%s%s%s%sContent-Length: %zu\r\n"
                   "Content-Type: application/json\r\n\r\n",
                   method, path, auth ? "Authorization: Bearer " : "", auth ? auth : "",
                   auth ? "\r\n" : "", c->extra ? c->extra : "", bl);
  if (bl) memcpy(c->req + n, body, bl);
  c->req_len = (size_t)n + bl;
  c->cb = cb;
  c->ud = ud;
  c->resent = 0;
  int rc = start(c);
  if (rc) c->cb = NULL;
  return rc;
}

int hb_conn_request_h(hb_conn *c, const char *method, const char *path, const char *headers,
                      const char *body, hb_resp_cb cb, void *ud) {
  c->extra = headers;
  int rc = hb_conn_request(c, method, path, NULL, body, cb, ud);
  c->extra = NULL;
  return rc;
}

const char *hb_conn_last_modified(const hb_conn *c) { return c->last_mod; }
const char *hb_conn_etag(const hb_conn *c) { return c->etag; }

void hb_conn_close(hb_conn *c) {
  c->cb = NULL;
  sock_drop(c);
  free(c->req);
  free(c->body);
  free(c);
}
