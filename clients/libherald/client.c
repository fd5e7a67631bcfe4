/* client.c — one ipconn connection on a libuv loop (see hdc_client.h). */
#include "hdc_client.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
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
  /* TLS (opts.tls_ca): OpenSSL between two memory BIOs; frames sent before the handshake is
   * done wait in tls_pend. */
  SSL_CTX *tls_ctx;
  SSL *ssl;
  char *tls_name;
  hdc_buf tls_pend;
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
  SSL_free(c->ssl);
  SSL_CTX_free(c->tls_ctx);
  hdc_buf_free(&c->tls_pend);
  free(c->tls_name);
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

/* Writes the ciphertext OpenSSL produced. 0, or the connection failed. */
static int tls_flush(hdc_conn *c) {
  BIO *wb = SSL_get_wbio(c->ssl);
  size_t n = BIO_ctrl_pending(wb);
  if (!n) return 0;
  wreq *w = malloc(sizeof *w + n);
  if (!w) {
    conn_fail(c, HDC_ENOMEM, 0);
    return HDC_ENOMEM;
  }
  BIO_read(wb, w->data, (int)n);
  w->req.data = c;
  uv_buf_t ub = uv_buf_init((char *)w->data, (unsigned)n);
  int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &ub, 1, on_written);
  if (rc) {
    free(w);
    conn_fail(c, HDC_EIO, rc);
    return HDC_ECLOSED;
  }
  c->last_tx_ms = uv_now(c->loop);
  return 0;
}

static void tls_failed(hdc_conn *c) {
  long v = SSL_get_verify_result(c->ssl);
  unsigned long e = ERR_peek_last_error();
  const char *why = v != X509_V_OK ? X509_verify_cert_error_string(v)
                    : e            ? ERR_reason_error_string(e)
                                   : NULL;
  snprintf(c->why.text, sizeof c->why.text, "%s", why ? why : "TLS failure");
  ERR_clear_error();
  conn_fail(c, HDC_ETLS, 0);
}

/* Send whole frames: straight into the socket when it takes them, the rest through a write
 * request that owns a copy. */
static int send_buf(hdc_conn *c, hdc_buf *b) {
  if (c->state == ST_CLOSING) {
    hdc_buf_free(b);
    return HDC_ECLOSED;
  }
  if (c->ssl) {
    int rc = 0;
    if (!SSL_is_init_finished(c->ssl)) { /* the hello: it goes once the handshake is done */
      if (hdc_buf_reserve(&c->tls_pend, b->len) == 0) {
        memcpy(c->tls_pend.p + c->tls_pend.len, b->p, b->len);
        c->tls_pend.len += b->len;
      } else {
        conn_fail(c, HDC_ENOMEM, 0);
        rc = HDC_ENOMEM;
      }
    } else {
      ERR_clear_error();
      if (SSL_write(c->ssl, b->p, (int)b->len) <= 0) {
        tls_failed(c);
        rc = HDC_ECLOSED;
      } else {
        rc = tls_flush(c);
      }
    }
    hdc_buf_free(b);
    return rc;
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

static void feed(hdc_conn *c, const uint8_t *p, size_t n) {
  int rc = hdc_framer_feed(&c->fr, p, n, c->max_frame, on_frame, c);
  if (rc < 0) conn_fail(c, rc == HDC_ENOMEM ? HDC_ENOMEM : rc == HDC_ETOOBIG ? HDC_ETOOBIG
                                                                             : HDC_EPROTO, 0);
}

/* Ciphertext in buf: into the read BIO, then decrypt into the same (now free) buffer and
 * feed; once the handshake is done, the waiting hello goes out. */
static void tls_read(hdc_conn *c, const uv_buf_t *buf, size_t n) {
  if (BIO_write(SSL_get_rbio(c->ssl), buf->base, (int)n) != (int)n) {
    conn_fail(c, HDC_ENOMEM, 0);
    return;
  }
  while (c->state != ST_CLOSING) {
    ERR_clear_error();
    int r = SSL_read(c->ssl, buf->base, (int)buf->len);
    if (r > 0) {
      feed(c, (const uint8_t *)buf->base, (size_t)r);
      continue;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_ZERO_RETURN) {
      conn_fail(c, HDC_ECLOSED, 0);
      return;
    }
    if (e != SSL_ERROR_WANT_READ) {
      tls_failed(c);
      return;
    }
    break;
  }
  if (c->state == ST_CLOSING) return;
  if (c->tls_pend.len && SSL_is_init_finished(c->ssl)) {
    ERR_clear_error();
    int w = SSL_write(c->ssl, c->tls_pend.p, (int)c->tls_pend.len);
    hdc_buf_free(&c->tls_pend);
    if (w <= 0) {
      tls_failed(c);
      return;
    }
  }
  tls_flush(c);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  hdc_conn *c = s->data;
  if (nread == 0 || c->state == ST_CLOSING) return;
  if (nread < 0) {
    conn_fail(c, nread == UV_EOF ? HDC_ECLOSED : HDC_EIO, nread == UV_EOF ? 0 : (int)nread);
    return;
  }
  c->last_rx_ms = uv_now(c->loop);
  if (c->ssl) {
    tls_read(c, buf, (size_t)nread);
    return;
  }
  feed(c, (const uint8_t *)buf->base, (size_t)nread);
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
  if (c->tls_ctx) {
    BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
    c->ssl = SSL_new(c->tls_ctx);
    if (!c->ssl || !rb || !wb) {
      BIO_free(rb);
      BIO_free(wb);
      conn_fail(c, HDC_ENOMEM, 0);
      return;
    }
    BIO_set_mem_eof_return(rb, -1);
    SSL_set_bio(c->ssl, rb, wb);
    SSL_set_connect_state(c->ssl);
    const char *name = c->tls_name ? c->tls_name : c->host;
    /* An address is checked against the certificate's IP entries, a name against its DNS
     * entries (and sent as SNI). */
    if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), name) != 1) {
      ERR_clear_error();
      SSL_set_tlsext_host_name(c->ssl, name);
      SSL_set1_host(c->ssl, name);
    }
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r <= 0 && SSL_get_error(c->ssl, r) != SSL_ERROR_WANT_READ) {
      tls_failed(c);
      return;
    }
    if (tls_flush(c)) return;
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
  c->tls_name = o->tls_name ? strdup(o->tls_name) : NULL;
  if (o->tls_ca) {
    ERR_clear_error();
    c->tls_ctx = SSL_CTX_new(TLS_client_method());
    if (!c->tls_ctx || SSL_CTX_load_verify_locations(c->tls_ctx, o->tls_ca, NULL) != 1) {
      ERR_clear_error();
      SSL_CTX_free(c->tls_ctx);
      free(c->host);
      free(c->device);
      free(c->tenant);
      free(c->token);
      free(c->agent);
      free(c->tls_name);
      free(c);
      return HDC_EINVAL;
    }
    SSL_CTX_set_min_proto_version(c->tls_ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(c->tls_ctx, SSL_VERIFY_PEER, NULL);
  }
  if (!c->host || !c->device || !c->tenant || !c->token || (o->agent && !c->agent) ||
      (o->tls_name && !c->tls_name)) {
    SSL_CTX_free(c->tls_ctx);
    free(c->tls_name);
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
