/* http.c — the broker's HTTP/1.1 server (see http.h for what it guarantees).
 *
 * Shape: one uv_tcp_t listener; per connection an hd_http_conn holding the socket, an idle
 * timer, an http_parser and the bytes read but not parsed yet. The parser runs over the read
 * buffer until a request is complete; on_message_complete pauses it, so the bytes of any
 * pipelined request stay in the buffer until the handler has answered. A connection therefore
 * has at most one request in a handler's hands (`active`), and answers leave in request order.
 *
 * Lifetime: a connection is freed only when both its handles have closed AND no handler holds
 * its active request. A handler that answers after the client went away writes nothing; its
 * answer just releases the connection. A held request is instead aborted through its callback
 * when the connection closes, so a long-poll that never completes does not pin memory.
 * hd__http_close() closes every socket at once but calls its callback only after every
 * request still in a handler's hands (not held) has been answered: a handler that neither
 * holds nor ever answers keeps the server from closing. EOF from the client counts as gone
 * (a half-closing client loses the answers to requests still in flight).
 *
 * Closing after an answer (errors, "Connection: close"): the write side is shut down and the
 * input is read and dropped for up to HTTP_LINGER_MS, so that the kernel does not reset the
 * connection under an answer the client has not read yet.
 *
 * TLS (hd__http_set_tls): see "TLS" below and http.h. The socket carries ciphertext; what
 * tls_pump() decrypts lands in the same buffers (shared or own) and goes through the same
 * conn_parse() as plain bytes, bounded the same way; conn_send() is the one place answers
 * leave, encrypted when the connection has an SSL.
 *
 * Spooled bodies (hd__http_route_spool): the route is chosen when the headers are in; body
 * bytes then go to a temp file through the libuv pool instead of into the request (see
 * "spooled bodies" below), and the handler runs once the file is fsync'd.
 *
 * Options: max_header 0 and max_body 0 mean the config defaults (16 KiB, 1 MiB);
 * idle_timeout_ms 0 means no idle timeout; max_connections 0 means no limit.
 */
#include "http.h"

#include <dirent.h> /* the fuzz feed's spool directory */
#include <fcntl.h>
#include <errno.h>
#include <http_parser.h>
#include <limits.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bytes.h"
#include "herald/error.h"

#define HTTP_DEFAULT_MAX_HEADER ((uint64_t)16 * 1024)
#define HTTP_DEFAULT_MAX_BODY ((uint64_t)1024 * 1024)
/* Room offered to each read; the buffer grows only while a request is in flight. */
#define HTTP_READ_CHUNK (64 * 1024)
/* How long a connection we are closing keeps reading (and dropping) the client's bytes after
 * the last answer: closing with unread input makes the kernel send RST, which can destroy the
 * answer (a 413, say) before the client has read it. */
#define HTTP_LINGER_MS 2000
/* Connections the kernel queues before we accept them (it caps this at net.core.somaxconn):
 * thousands of devices connect at once after a restart or a network blip, and a connect that
 * finds the queue full waits out a SYN retransmit, a whole second (with 511, 1,024 publishers
 * connecting together saw p99.9 1.0 s). The same as the ipconn listener. */
#define HTTP_BACKLOG 4096
/* What a preflight lets a page send, and how long the browser may reuse that answer. */
#define HTTP_CORS_ALLOW_HEADERS "Authorization, Content-Type, Herald-Tenant"
#define HTTP_CORS_MAX_AGE "600"

/* Magic numbers so that a stale pointer or a second answer fails at once (see STYLE.md). */
#define HTTP_REQ_MAGIC 0x48545251u  /* "HTRQ" */
#define HTTP_CONN_MAGIC 0x48544343u /* "HTCC" */

/* Stays on in release builds: these catch contract violations by handlers, where going on
 * would mean a use-after-free. */
#define HTTP_CHECK(cond)                                                                \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      fprintf(stderr, "%s:%d: %s: check failed: %s\n", __FILE__, __LINE__, __func__, \
              #cond);                                                                   \
      abort();                                                                          \
    }                                                                                   \
  } while (0)

/* ------------------------------------------------------------------------------------------ */
/* memory: like the rest of the broker, running out of memory aborts; error paths are for real
 * limits. */

static void *xrealloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  if (!q) {
    fputs("herald: out of memory\n", stderr);
    abort();
  }
  return q;
}

static void *xcalloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size ? size : 1);
  if (!p) {
    fputs("herald: out of memory\n", stderr);
    abort();
  }
  return p;
}

static char *xstrndup(const char *s, size_t n) {
  char *p = xrealloc(NULL, n + 1);
  memcpy(p, s, n);
  p[n] = '\0';
  return p;
}

/* A growable byte string, always NUL-terminated once something was added. */
typedef struct sbuf {
  char *p;
  size_t len;
  size_t cap;
} sbuf;

static void sbuf_reserve(sbuf *b, size_t extra) {
  if (b->len + extra + 1 <= b->cap) return;
  size_t cap = b->cap ? b->cap : 32;
  while (cap < b->len + extra + 1) cap *= 2;
  b->p = xrealloc(b->p, cap);
  b->cap = cap;
}

static void sbuf_add(sbuf *b, const char *d, size_t n) {
  sbuf_reserve(b, n);
  if (n) memcpy(b->p + b->len, d, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static void sbuf_adds(sbuf *b, const char *s) { sbuf_add(b, s, strlen(s)); }

/* ------------------------------------------------------------------------------------------ */
/* types */

typedef struct hd_kv {
  char *name;
  char *value;
} hd_kv;

/* A header line: its name and value as offsets into the request's hbuf, each NUL-terminated
 * there once the headers are complete. */
typedef struct hd_hdr {
  uint32_t name, nlen;
  uint32_t value, vlen;
} hd_hdr;

typedef struct hd_http_conn hd_http_conn;

struct hd_http_req {
  uint32_t magic;
  unsigned short http_major; /* beside the magic, in what would be padding: a held request */
  unsigned short http_minor; /* stays allocated, so its size is part of every held poll's cost */
  hd_http_conn *c;
  const char *method;  /* static string from http_method_str() */
  sbuf url;            /* request target as received */
  char *path;          /* raw path (no query), NUL-terminated */
  sbuf hbuf;           /* every header name and value, back to back: one allocation, not two
                        * per line (a publish's six lines were twelve mallocs) */
  hd_hdr *headers;
  uint32_t nheaders;
  uint32_t capheaders;
  hd_kv *params;
  hd_kv *query;
  uint32_t nparams;
  uint32_t nquery;
  sbuf body;
  int keep_alive;
  int held;
  int cors;            /* CORS verdict on its Origin: 0 none asked, 1 allowed, -1 refused */
  unsigned route_looked : 1;
  unsigned path_known : 1;   /* some route has this path (for any method) */
  const struct route *route; /* route_find()'s answer once route_looked */
  hd_http_abort_cb abort_cb;
  void *abort_ud;
  hd_http_req *next_abort; /* list of aborts to run once the connections are closed */
  struct spool *spool;     /* spool routes: the body's temp file (see "spooled bodies") */
};

enum { HDR_NONE = 0, HDR_FIELD, HDR_VALUE };

struct hd_http_conn {
  uint32_t magic;
  uv_tcp_t tcp;
  uv_timer_t timer;
  uint64_t idle_since; /* uv_now() of the last read or answer: the idle timer is lazy */
  http_parser parser;
  hd_http_server *s;
  hd_http_conn *prev;
  hd_http_conn *next;
  char *buf;           /* bytes read; [off, len) not parsed yet */
  size_t off;
  size_t len;
  size_t cap;
  hd_http_req *cur;    /* being parsed */
  hd_http_req *ready;  /* complete, set by on_message_complete for conn_parse to dispatch */
  hd_http_req *active; /* in a handler's hands, not answered yet */
  uint64_t header_bytes;
  /* Bytes of answers handed to libuv whose write callback has not run yet, written to the
   * kernel or not: libuv calls back only on the next loop turn, so its own write queue size
   * misses answers it already wrote, and a client that pipelines hundreds of requests per
   * read would otherwise have every answer allocated at once. */
  uint64_t out_bytes;
  int err_status;      /* a parser callback refused the request with this status */
  int last_cb;         /* HDR_*: which header callback ran last, to join fragments */
  int handles;         /* handles still open; the conn is freed at 0 (and no active) */
  unsigned reading : 1;
  unsigned closing : 1;   /* uv_close() called on the handles */
  unsigned finishing : 1; /* the last answer is queued; no more parsing */
  unsigned lingering : 1; /* write side shut down; draining input until EOF or timer */
  unsigned peer_eof : 1;
  unsigned in_parse : 1;  /* conn_parse() is on the stack: do not re-enter */
  unsigned shared : 1;    /* buf is the server's shared read buffer (during one read only) */
  unsigned pumping : 1;   /* tls_pump() is on the stack */
  unsigned tls_up : 1;    /* the TLS handshake finished */
  unsigned spool_wait : 1; /* parser paused until the spool's disk writes catch up */
  int fail_err;           /* admit() refused the request (HD_E*), fail_msg says why */
  const char *fail_msg;
  SSL *ssl;               /* NULL unless the server has TLS; owns its two memory BIOs */
  /* hd__http_reply_stream(): who takes the socket once the head is written (NULL: nobody). */
  hd_http_take_cb take;
  void *take_ud;
  char peer[64];
};

typedef struct route_seg {
  char *text; /* literal text, or the parameter name */
  size_t len;
  int param;
} route_seg;

/* The most segments a route pattern may have; a longer path matches no route. */
#define HTTP_MAX_SEGS 16

typedef struct route {
  char *method;
  char *pattern;
  route_seg *segs;
  size_t nsegs;
  hd_http_handler cb;
  void *ud;
  char *spool_dir;        /* NULL: body in memory; else spooled to a temp file here */
  uint64_t spool_max;
  hd_http_admit_cb admit;
} route;

enum { LST_NONE = 0, LST_OPEN, LST_CLOSING, LST_CLOSED };

struct hd_http_server {
  uv_loop_t *loop;
  hd_http_opts opts;
  http_parser_settings settings;
  uv_tcp_t listener;
  int lstate;
  int port;
  int listen_err; /* libuv code of the last failed hd__http_listen() */
  route *routes;
  size_t nroutes;
  size_t nspool;          /* spool routes among them */
  hd_http_conn *conns;
  uint64_t nconns;
  uint64_t refused_pending; /* refused sockets whose close has not completed */
  int closing;
  int done;
  void (*close_cb)(hd_http_server *s);
  hd_http_origin_cb cors_cb; /* NULL: no cross-origin policy (no CORS headers at all) */
  void *cors_ud;
  hd_http_stats stats;
  /* One read buffer for every connection: libuv reads one stream at a time (alloc, read,
   * callback), so a connection only needs bytes of its own while something is left unparsed.
   * That keeps an idle or held connection at a few hundred bytes instead of 64 KiB. */
  char *rbuf;
  SSL_CTX *tls;           /* NULL: plain HTTP */
  char *tls_rbuf;         /* ciphertext of one read; copied into a BIO at once, so shared */
  hd_http_conn *reading;  /* the TLS connection whose read callback runs (may use rbuf) */
};

typedef struct wreq {
  uv_write_t req;
  hd_http_conn *c;
  int last;
  size_t charge; /* bytes (with this struct) counted in c->out_bytes until the callback */
  char data[];
} wreq;

static void conn_close(hd_http_conn *c);
static void conn_parse(hd_http_conn *c);
static void conn_on_timer(uv_timer_t *t);
static void conn_update_reading(hd_http_conn *c);
static void conn_run_aborts(hd_http_server *s, hd_http_req *list);
static void server_maybe_done(hd_http_server *s);
static void conn_on_write(uv_write_t *req, int status);
static void spool_detach(struct spool *sp);
static const route *spool_route(hd_http_conn *c, hd_http_req *r);
static int spool_start(hd_http_conn *c, hd_http_req *r, const route *rt);
static int spool_body(hd_http_conn *c, hd_http_req *r, const char *at, size_t n);
static void spool_complete(hd_http_req *r, const route *rt);
static void conn_hand_over(hd_http_conn *c);

/* ------------------------------------------------------------------------------------------ */
/* TLS: the socket's bytes pass through memory BIOs (see http.h). */

/* Writes what OpenSSL has produced (records, alerts, close_notify) to the socket; `last` makes
 * it the connection's last write (shutdown follows). Returns 0, or -1: close the connection. */
static int tls_flush(hd_http_conn *c, int last) {
  BIO *wbio = SSL_get_wbio(c->ssl);
  size_t n = BIO_ctrl_pending(wbio);
  if (!n && !last) return 0;
  wreq *w = xrealloc(NULL, sizeof *w + (n ? n : 1));
  w->c = c;
  w->last = last;
  if (n && BIO_read(wbio, w->data, (int)n) != (int)n) {
    free(w);
    return -1;
  }
  uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
  if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, conn_on_write) != 0) {
    free(w);
    return -1;
  }
  w->charge = sizeof *w + n;
  c->out_bytes += w->charge;
  return 0;
}

/* Queues w->data[0..len) (an answer, plaintext) on the socket, through TLS when it is on.
 * Takes w. Returns 0, or -1 after which the caller closes the connection. */
static int conn_send(hd_http_conn *c, wreq *w, size_t len) {
  if (!c->ssl) {
    uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
    /* Most answers fit the socket's buffer at once: written here, they need no write request
     * in libuv, no completion callback, and no epoll_ctl (libuv 1.44 re-arms the socket after
     * every completed write). A connection's last answer keeps the callback: the shutdown
     * or hand-over runs from it. uv_try_write refuses while earlier writes are queued, so
     * the bytes stay in order. Not for a client with more requests already read (pipelining)
     * or answers still unread: those keep the write request, whose bytes count against the
     * connection until written, so parsing pauses for a client that does not read (answered
     * at once, 10,000 of them pushed the kernel's TCP memory past its pressure mark). */
    if (!w->last && len && c->off >= c->len && !c->out_bytes) {
      int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
      if (n == (int)len) {
        free(w);
        return 0;
      }
      if (n > 0) b = uv_buf_init(w->data + n, (unsigned)(len - (size_t)n));
    }
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, conn_on_write) == 0) {
      w->charge = sizeof *w + len; /* what it really costs, bookkeeping included */
      c->out_bytes += w->charge;
      return 0;
    }
    free(w);
    return -1;
  }
  int last = w->last;
  ERR_clear_error();
  /* A memory BIO never says "would block", so SSL_write takes everything at once. */
  int n = len ? SSL_write(c->ssl, w->data, (int)len) : 1;
  free(w);
  if (n <= 0) {
    ERR_clear_error();
    return -1;
  }
  /* close_notify leaves with the last answer, unless the body follows from its taker. */
  if (last && !c->take) (void)SSL_shutdown(c->ssl);
  ERR_clear_error();
  return tls_flush(c, last);
}

static uint64_t buffer_bound(const hd_http_server *s) {
  return s->opts.max_header + s->opts.max_body;
}

/* ------------------------------------------------------------------------------------------ */
/* JSON error bodies */

/* Appends s as a JSON string. Invalid UTF-8 becomes U+FFFD so the body always parses. */
static void json_str(sbuf *b, const char *s) {
  const unsigned char *p = (const unsigned char *)s;
  sbuf_add(b, "\"", 1);
  while (*p) {
    unsigned char ch = *p;
    char esc[8];
    if (ch == '"' || ch == '\\') {
      esc[0] = '\\';
      esc[1] = (char)ch;
      sbuf_add(b, esc, 2);
      p++;
    } else if (ch == '\n') {
      sbuf_add(b, "\\n", 2), p++;
    } else if (ch == '\r') {
      sbuf_add(b, "\\r", 2), p++;
    } else if (ch == '\t') {
      sbuf_add(b, "\\t", 2), p++;
    } else if (ch < 0x20 || ch == 0x7f) {
      snprintf(esc, sizeof esc, "\\u%04x", ch);
      sbuf_add(b, esc, 6);
      p++;
    } else if (ch < 0x80) {
      sbuf_add(b, (const char *)p, 1);
      p++;
    } else {
      /* Validate one UTF-8 sequence: lead byte, continuation count, no overlongs or
       * surrogates. */
      size_t n = ch >= 0xf0 && ch <= 0xf4 ? 4 : ch >= 0xe0 ? 3 : ch >= 0xc2 && ch < 0xe0 ? 2 : 0;
      int ok = n > 0 && ch < 0xf5;
      for (size_t i = 1; ok && i < n; i++)
        if ((p[i] & 0xc0) != 0x80) ok = 0;
      if (ok && n == 3 && ((ch == 0xe0 && p[1] < 0xa0) || (ch == 0xed && p[1] >= 0xa0))) ok = 0;
      if (ok && n == 4 && ((ch == 0xf0 && p[1] < 0x90) || (ch == 0xf4 && p[1] >= 0x90))) ok = 0;
      if (ok) {
        sbuf_add(b, (const char *)p, n);
        p += n;
      } else {
        sbuf_add(b, "\\ufffd", 6);
        p++;
      }
    }
  }
  sbuf_add(b, "\"", 1);
}

static void json_error_body(sbuf *b, const char *code, const char *message) {
  sbuf_adds(b, "{\"error\": ");
  json_str(b, code);
  sbuf_adds(b, ", \"message\": ");
  json_str(b, message);
  sbuf_adds(b, "}");
}

int hd__http_status_for(int err) {
  switch (err) {
  case HD_EINVAL: return 400;
  case HD_EAUTH: return 401;
  case HD_EFORBID: return 403;
  case HD_ENOTFOUND: return 404;
  case HD_ETOOBIG: return 413;
  case HD_ERATE: return 429;
  case HD_EFULL: return 507;
  case HD_ECLOSED:
  case HD_EAGAIN:
    return 503;
  default: return 500;
  }
}

static const char *reason_phrase(int status) {
  const char *r = http_status_str((enum http_status)status);
  /* http-parser answers "<unknown>" for codes it has no name for. */
  if (!r || r[0] == '<') return "Unknown";
  return r;
}

/* ------------------------------------------------------------------------------------------ */
/* requests */

static hd_http_req *req_new(hd_http_conn *c) {
  hd_http_req *r = xcalloc(1, sizeof *r);
  r->magic = HTTP_REQ_MAGIC;
  r->c = c;
  return r;
}

static void kv_free(hd_kv *kv, size_t n) {
  for (size_t i = 0; i < n; i++) {
    free(kv[i].name);
    free(kv[i].value);
  }
  free(kv);
}

static void req_free(hd_http_req *r) {
  if (!r) return;
  free(r->url.p);
  free(r->path);
  free(r->hbuf.p);
  free(r->headers);
  kv_free(r->params, r->nparams);
  kv_free(r->query, r->nquery);
  free(r->body.p);
  if (r->spool) spool_detach(r->spool);
  r->magic = 0;
  free(r);
}

/* Percent-decodes in[0..len) into a new string; '+' becomes ' ' when `plus`. Returns NULL on a
 * bad escape, on a decoded NUL (it would cut the C string short) and, when `no_slash`, on a
 * decoded '/' (a path parameter is one segment). */
static char *pct_decode(const char *in, size_t len, int plus, int no_slash) {
  char *out = xrealloc(NULL, len + 1);
  size_t o = 0;
  for (size_t i = 0; i < len; i++) {
    int ch = (unsigned char)in[i];
    if (ch == '%') {
      if (i + 2 >= len || hd_hexval((unsigned char)in[i + 1]) < 0 ||
          hd_hexval((unsigned char)in[i + 2]) < 0)
        goto bad;
      ch = hd_hexval((unsigned char)in[i + 1]) * 16 + hd_hexval((unsigned char)in[i + 2]);
      i += 2;
    } else if (plus && ch == '+') {
      ch = ' ';
    }
    if (ch == 0 || (no_slash && ch == '/')) goto bad;
    out[o++] = (char)ch;
  }
  out[o] = '\0';
  return out;
bad:
  free(out);
  return NULL;
}

/* Splits the request target into the raw path and the decoded query pairs. Returns 0 or
 * HD_EINVAL. */
static int req_split_target(hd_http_req *r) {
  const char *u = r->url.p ? r->url.p : "";
  size_t n = r->url.len;
  size_t start = 0;
  if (n == 0) return HD_EINVAL;
  if (u[0] != '/') {
    /* absolute-form ("http://host/path"): the path starts after the authority. */
    const char *sch = strstr(u, "://");
    if (!sch) return HD_EINVAL; /* "*" and other forms have no path we route */
    const char *slash = strchr(sch + 3, '/');
    const char *q = strchr(sch + 3, '?');
    if (!slash || (q && q < slash)) {
      r->path = xstrndup("/", 1);
      start = q ? (size_t)(q - u) : n;
      goto query;
    }
    start = (size_t)(slash - u);
  }
  size_t end = start;
  while (end < n && u[end] != '?' && u[end] != '#') end++;
  r->path = xstrndup(u + start, end - start);
  start = end;
query:
  if (start >= n || u[start] != '?') return 0;
  start++;
  size_t qend = start;
  while (qend < n && u[qend] != '#') qend++;
  size_t cap = 0;
  for (size_t i = start; i < qend;) {
    size_t amp = i;
    while (amp < qend && u[amp] != '&') amp++;
    if (amp > i) {
      size_t eq = i;
      while (eq < amp && u[eq] != '=') eq++;
      char *name = pct_decode(u + i, eq - i, 1, 0);
      char *value = eq < amp ? pct_decode(u + eq + 1, amp - eq - 1, 1, 0) : xstrndup("", 0);
      if (!name || !value) {
        free(name);
        free(value);
        return HD_EINVAL;
      }
      if (r->nquery == cap) {
        cap = cap ? cap * 2 : 4;
        r->query = xrealloc(r->query, cap * sizeof *r->query);
      }
      r->query[r->nquery].name = name;
      r->query[r->nquery].value = value;
      r->nquery++;
    }
    i = amp + 1;
  }
  return 0;
}

/* A request path split into segments once, so that finding its route compares lengths and
 * bytes per route instead of scanning the path again for each of them. Segments are the text
 * after the leading '/' split on '/' ("/" is one empty segment); patterns are split the same
 * way so that both sides agree on trailing slashes. */
typedef struct path_segs {
  size_t n; /* HTTP_MAX_SEGS + 1: too many to match any route */
  const char *p[HTTP_MAX_SEGS];
  size_t len[HTTP_MAX_SEGS];
} path_segs;

static void path_split(const char *path, path_segs *ps) {
  ps->n = 0;
  if (path[0] != '/') {
    ps->n = HTTP_MAX_SEGS + 1;
    return;
  }
  const char *p = path + 1;
  for (;;) {
    if (ps->n == HTTP_MAX_SEGS) {
      ps->n++;
      return;
    }
    const char *slash = strchr(p, '/');
    ps->p[ps->n] = p;
    ps->len[ps->n++] = slash ? (size_t)(slash - p) : strlen(p);
    if (!slash) return;
    p = slash + 1;
  }
}

static int route_match_segs(const route *rt, const path_segs *ps) {
  if (ps->n != rt->nsegs) return 0;
  for (size_t i = 0; i < ps->n; i++) {
    const route_seg *seg = &rt->segs[i];
    if (seg->param ? ps->len[i] == 0
                   : ps->len[i] != seg->len || memcmp(ps->p[i], seg->text, seg->len) != 0)
      return 0;
  }
  return 1;
}

/* The route for the request's method and path (NULL: none), looked up once per request: at
 * headers time for spool routes, then by conn_dispatch. r->path_known says whether any route
 * has the path (405 rather than 404). */
static const route *route_find(const hd_http_server *s, hd_http_req *r) {
  if (r->route_looked) return r->route;
  path_segs ps;
  path_split(r->path, &ps);
  r->route = NULL;
  r->path_known = 0;
  for (size_t i = 0; i < s->nroutes; i++) {
    if (!route_match_segs(&s->routes[i], &ps)) continue;
    r->path_known = 1;
    if (strcmp(s->routes[i].method, r->method) == 0) {
      r->route = &s->routes[i];
      break;
    }
  }
  r->route_looked = 1;
  return r->route;
}

/* Decodes the {name} segments of a path known to match rt. Returns 0 or HD_EINVAL. */
static int req_extract_params(hd_http_req *r, const route *rt) {
  size_t nparams = 0;
  for (size_t i = 0; i < rt->nsegs; i++) nparams += rt->segs[i].param ? 1 : 0;
  if (!nparams) return 0;
  r->params = xcalloc(nparams, sizeof *r->params);
  path_segs ps;
  path_split(r->path, &ps); /* as many segments as rt has: it matched */
  for (size_t i = 0; i < rt->nsegs; i++) {
    if (!rt->segs[i].param) continue;
    char *v = pct_decode(ps.p[i], ps.len[i], 0, 1);
    if (!v) return HD_EINVAL;
    r->params[r->nparams].name = xstrndup(rt->segs[i].text, rt->segs[i].len);
    r->params[r->nparams].value = v;
    r->nparams++;
  }
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* writing answers */

static void conn_on_shutdown(uv_shutdown_t *req, int status) {
  hd_http_conn *c = req->handle->data;
  free(req); /* allocated at shutdown: most connections never get here */
  if (c->closing) return;
  if (status < 0 || c->peer_eof) {
    conn_close(c);
    return;
  }
  c->lingering = 1;
  uv_timer_start(&c->timer, conn_on_timer, HTTP_LINGER_MS, 0);
  conn_update_reading(c);
}

static void conn_on_write(uv_write_t *req, int status) {
  wreq *w = (wreq *)req;
  hd_http_conn *c = w->c;
  int last = w->last;
  c->out_bytes -= w->charge;
  free(w);
  if (c->closing) return;
  if (status < 0) {
    conn_close(c);
    return;
  }
  if (last && c->take) {
    conn_hand_over(c);
    return;
  }
  if (last) {
    uv_shutdown_t *sd = malloc(sizeof *sd);
    if (!sd || uv_shutdown(sd, (uv_stream_t *)&c->tcp, conn_on_shutdown) != 0) {
      free(sd);
      conn_close(c);
    }
    return;
  }
  /* Parsing waits while the client leaves our answers unread (see conn_parse); this write
   * may have made room. */
  if (!c->active && !c->finishing && c->off < c->len) conn_parse(c);
}

/* Status line, then Content-Type, Content-Length, the caller's extra lines, Connection. */
static char *put_str(char *p, const char *s) {
  size_t n = strlen(s);
  memcpy(p, s, n);
  return p + n;
}

/* Decimal digits of v at p (no NUL); returns the end. Not snprintf: every answer has one or
 * two numbers and a long-poll fan-out writes tens of thousands of answers a second. */
static char *put_u64(char *p, uint64_t v) { return p + hd_u64_dec(p, v); }

/* Queues one answer. keep == 0 makes it the last one on the connection. Content-Length is
 * `announce`, or len when announce is HTTP_LEN_OF_BODY: a streamed body (hd__http_reply_stream)
 * announces bytes that are not in `body`. */
#define HTTP_LEN_OF_BODY UINT64_MAX
static void conn_write_answer(hd_http_conn *c, int status, const char *content_type,
                              const char *extra, const char *body, size_t len,
                              uint64_t announce, int keep, int http_1_0) {
  hd_http_server *s = c->s;
  int no_body = (status >= 100 && status < 200) || status == 204 || status == 304;
  if (no_body) len = 0;
  const char *conn_hdr = !keep ? "Connection: close\r\n"
                         : http_1_0 ? "Connection: keep-alive\r\n"
                                    : "";
  const char *ct = content_type && !no_body ? content_type : NULL;
  const char *reason = reason_phrase(status);
  HTTP_CHECK(status >= 100 && status <= 999);
  /* An upper bound of the head: fixed text, three numbers of at most 20 digits, the strings. */
  size_t cap = 96 + strlen(reason) + (ct ? strlen(ct) : 0) + (extra ? strlen(extra) : 0) +
               strlen(conn_hdr);
  wreq *w = xrealloc(NULL, sizeof *w + cap + len);
  w->c = c;
  w->last = !keep;
  char *p = put_str(w->data, "HTTP/1.1 ");
  p = put_u64(p, (uint64_t)status);
  *p++ = ' ';
  p = put_str(p, reason);
  p = put_str(p, "\r\n");
  if (ct) {
    p = put_str(p, "Content-Type: ");
    p = put_str(p, ct);
    p = put_str(p, "\r\n");
  }
  if (!no_body) {
    p = put_str(p, "Content-Length: ");
    p = put_u64(p, announce == HTTP_LEN_OF_BODY ? len : announce);
    p = put_str(p, "\r\n");
  }
  if (extra) p = put_str(p, extra);
  p = put_str(p, conn_hdr);
  p = put_str(p, "\r\n");
  size_t hlen = (size_t)(p - w->data);
  HTTP_CHECK(hlen <= cap);
  if (len) memcpy(w->data + hlen, body, len);
  if (status >= 400 && status < 500) s->stats.responses_4xx++;
  if (status >= 500 && status < 600) s->stats.responses_5xx++;
  if (!keep) {
    c->finishing = 1;
    /* A client that does not read its last answer is dropped like an idle one. */
    if (s->opts.idle_timeout_ms)
      uv_timer_start(&c->timer, conn_on_timer, s->opts.idle_timeout_ms, 0);
    else
      uv_timer_stop(&c->timer);
  }
  if (conn_send(c, w, (size_t)hlen + len) != 0) conn_close(c);
}

static void conn_write_response(hd_http_conn *c, int status, const char *content_type,
                                const char *extra, const char *body, size_t len, int keep,
                                int http_1_0) {
  conn_write_answer(c, status, content_type, extra, body, len, HTTP_LEN_OF_BODY, keep,
                    http_1_0);
}

/* The head of a streamed answer is in the kernel: the socket (a duplicate of it) and the TLS
 * state leave for the taker, and the connection closes here without a shutdown, so the
 * socket itself stays open. */
static void conn_hand_over(hd_http_conn *c) {
  hd_http_take_cb take = c->take;
  void *ud = c->take_ud;
  c->take = NULL;
  c->take_ud = NULL;
  int sock = -1;
  SSL *ssl = NULL;
  uv_os_fd_t fd;
  if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0) sock = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (sock >= 0) {
    ssl = c->ssl;
    c->ssl = NULL;
  }
  conn_close(c);
  take(ud, sock, ssl);
}

/* An error answer not tied to a routed request (parse errors, limits): JSON, then close. */
static void conn_fail(hd_http_conn *c, int status, const char *code, const char *message) {
  sbuf b = {0};
  json_error_body(&b, code, message);
  req_free(c->cur);
  c->cur = NULL;
  conn_write_response(c, status, "application/json", NULL, b.p, b.len, 0, 0);
  free(b.p);
}

/* ------------------------------------------------------------------------------------------ */
/* connections */

static void conn_unshare(hd_http_conn *c);

/* How much one read may bring in: never so much that the unparsed bytes a connection keeps
 * for itself exceed the buffer bound (a client pipelining faster than it reads our answers
 * would otherwise park a whole read chunk per connection), but at least a few KiB so that an
 * ordinary request takes one read. */
static size_t read_budget(const hd_http_conn *c) {
  uint64_t bound = buffer_bound(c->s), pending = c->len - c->off;
  uint64_t room = bound > pending ? bound - pending : 0;
  if (room < 4096) room = 4096;
  return room < HTTP_READ_CHUNK ? (size_t)room : HTTP_READ_CHUNK;
}

/* Makes room after c->len for the next bytes: the shared buffer when nothing is pending and
 * may_share (only inside this connection's read callback), else a buffer of its own, grown by
 * no more than one read may bring in (read_budget): a connection paused with bytes pending
 * keeps a buffer that follows the bound, not a whole read chunk more each time. */
static inline void conn_room(hd_http_conn *c, int may_share) {
  if (c->finishing) c->off = c->len = 0; /* input is only drained from now on */
  if (c->off == c->len) c->off = c->len = 0;
  if (c->len == 0 && may_share && c->s->rbuf) {
    /* Nothing of our own pending: read into the shared buffer (see hd_http_server.rbuf). */
    if (!c->shared) free(c->buf);
    c->buf = c->s->rbuf;
    c->cap = HTTP_READ_CHUNK;
    c->shared = 1;
  } else {
    size_t want = read_budget(c); /* of the pending bytes: moving them changes nothing */
    if (c->cap - c->len >= want) return;
    /* Only TLS gets here with the shared buffer: a record decrypted into it left bytes. */
    if (c->shared) conn_unshare(c);
    if (c->off) {
      memmove(c->buf, c->buf + c->off, c->len - c->off);
      c->len -= c->off;
      c->off = 0;
    }
    if (c->cap - c->len < want) {
      c->cap = c->len + want;
      c->buf = xrealloc(c->buf, c->cap);
    }
  }
}

static void conn_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  hd_http_conn *c = h->data;
  (void)suggested;
  conn_room(c, 1);
  size_t budget = read_budget(c);
  buf->base = c->buf + c->len;
  buf->len = c->cap - c->len < budget ? c->cap - c->len : budget;
}

/* The idle timer is lazy: a read or an answer notes the time, and the timer, armed once,
 * checks when it fires whether the connection sat idle the whole time (else it sleeps for the
 * rest). Restarting it per read, request and answer was libuv timer-heap work three times a
 * request (~3 % of the loop in a long-poll fan-out). */
static void conn_restart_idle(hd_http_conn *c) {
  if (c->closing || c->finishing || c->active) return;
  c->idle_since = uv_now(c->s->loop);
  if (c->s->opts.idle_timeout_ms && !uv_is_active((uv_handle_t *)&c->timer))
    uv_timer_start(&c->timer, conn_on_timer, c->s->opts.idle_timeout_ms, 0);
}

/* After a read into the shared buffer: keep what is left unparsed in a buffer of our own (or
 * nothing), so the shared one is free for the next connection. */
static void conn_unshare(hd_http_conn *c) {
  if (!c->shared) return;
  size_t left = c->len - c->off;
  c->shared = 0;
  if (left == 0 || c->closing) {
    c->buf = NULL;
    c->cap = c->off = c->len = 0;
    return;
  }
  size_t cap = left; /* exactly what is left: a slow client must not keep a whole chunk */
  char *own = xrealloc(NULL, cap);
  memcpy(own, c->buf + c->off, left);
  c->buf = own;
  c->cap = cap;
  c->off = 0;
  c->len = left;
}

static void conn_on_read_inner(uv_stream_t *st, ssize_t nread);

static void conn_on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
  (void)buf;
  conn_on_read_inner(st, nread);
  conn_unshare(st->data);
}

/* The client closed its side (nread UV_EOF, or a TLS close_notify) or the read failed. */
static void conn_on_eof(hd_http_conn *c, ssize_t nread) {
  uv_read_stop((uv_stream_t *)&c->tcp);
  c->reading = 0;
  c->peer_eof = 1;
  /* A half-closing client still gets its last answer: the write and the shutdown that
   * follow it close the connection. */
  if (nread == UV_EOF && c->finishing && !c->lingering) return;
  conn_close(c);
}

static void conn_on_read_inner(uv_stream_t *st, ssize_t nread) {
  hd_http_conn *c = st->data;
  if (nread == 0 || c->closing) return;
  if (nread < 0) {
    conn_on_eof(c, nread);
    return;
  }
  if (c->finishing) return; /* drained and dropped */
  c->len += (size_t)nread;
  conn_restart_idle(c);
  conn_parse(c);
}

/* A failed handshake: send OpenSSL's alert, then close as after a last answer. */
static void tls_fail(hd_http_conn *c) {
  c->s->stats.tls_handshake_failures++;
  c->finishing = 1;
  if (c->s->opts.idle_timeout_ms)
    uv_timer_start(&c->timer, conn_on_timer, c->s->opts.idle_timeout_ms, 0);
  if (tls_flush(c, 1) != 0) conn_close(c);
}

/* Decrypts what the read BIO holds into the connection's buffer and parses it, while the
 * unparsed bytes stay within the same bound as plain reads (what is left waits in OpenSSL's
 * buffers, and conn_update_reading() comes back for it). Never re-entered. */
static void tls_pump(hd_http_conn *c) {
  hd_http_server *s = c->s;
  if (c->pumping) return;
  c->pumping = 1;
  while (!c->closing && !c->finishing && (uint64_t)(c->len - c->off) <= buffer_bound(s)) {
    conn_room(c, s->reading == c);
    size_t room = c->cap - c->len;
    ERR_clear_error();
    int n = SSL_read(c->ssl, c->buf + c->len, room > INT_MAX ? INT_MAX : (int)room);
    if (!c->tls_up && SSL_is_init_finished(c->ssl)) c->tls_up = 1;
    int e = n > 0 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, n);
    ERR_clear_error();
    if (e == SSL_ERROR_NONE || e == SSL_ERROR_WANT_READ) {
      /* handshake records, and TLS 1.3 session tickets after it */
      if (tls_flush(c, 0) != 0) {
        conn_close(c);
        break;
      }
      if (e == SSL_ERROR_WANT_READ) break;
      c->len += (size_t)n;
      conn_parse(c);
    } else if (e == SSL_ERROR_ZERO_RETURN) {
      conn_on_eof(c, UV_EOF);
      break;
    } else if (!c->tls_up) {
      tls_fail(c);
      break;
    } else {
      conn_close(c);
      break;
    }
  }
  c->pumping = 0;
}

static void conn_on_alloc_tls(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  hd_http_conn *c = h->data;
  (void)suggested;
  *buf = uv_buf_init(c->s->tls_rbuf, HTTP_READ_CHUNK);
}

static void conn_on_read_tls(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
  hd_http_conn *c = st->data;
  if (nread == 0 || c->closing) return;
  if (nread < 0) {
    conn_on_eof(c, nread);
    return;
  }
  if (c->finishing) return; /* drained and dropped */
  if (BIO_write(SSL_get_rbio(c->ssl), buf->base, (int)nread) != (int)nread) {
    conn_close(c);
    return;
  }
  conn_restart_idle(c);
  c->s->reading = c;
  tls_pump(c);
  c->s->reading = NULL;
  conn_unshare(c);
}

/* Starts or stops reading: unparsed bytes are bounded while a request is in flight. */
static void conn_update_reading(hd_http_conn *c) {
  if (c->closing || c->peer_eof) return;
  int want = c->finishing || (uint64_t)(c->len - c->off) <= buffer_bound(c->s);
  if (want && !c->reading) {
    int rc = c->ssl ? uv_read_start((uv_stream_t *)&c->tcp, conn_on_alloc_tls, conn_on_read_tls)
                    : uv_read_start((uv_stream_t *)&c->tcp, conn_on_alloc, conn_on_read);
    if (rc == 0)
      c->reading = 1;
    else
      conn_close(c);
  } else if (!want && c->reading) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
  }
  /* Bytes OpenSSL already holds bring no read event of their own. */
  if (want && c->reading && c->ssl && !c->pumping && !c->finishing &&
      (SSL_has_pending(c->ssl) || BIO_ctrl_pending(SSL_get_rbio(c->ssl))))
    tls_pump(c);
}

static void conn_on_timer(uv_timer_t *t) {
  hd_http_conn *c = t->data;
  if (c->closing || c->active) return; /* the answer re-arms it */
  if (!c->finishing && !c->lingering) {
    uint64_t idle = uv_now(c->s->loop) - c->idle_since, limit = c->s->opts.idle_timeout_ms;
    if (idle < limit) {
      uv_timer_start(t, conn_on_timer, limit - idle, 0);
      return;
    }
  }
  conn_close(c);
}

static void conn_free(hd_http_conn *c) {
  hd_http_server *s = c->s;
  if (c->take) {
    /* A streamed answer whose head never made it out: its taker gets nothing. */
    hd_http_take_cb take = c->take;
    c->take = NULL;
    take(c->take_ud, -1, NULL);
  }
  if (c->prev) c->prev->next = c->next;
  else s->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  s->nconns--;
  s->stats.connections_open--;
  req_free(c->cur);
  if (!c->shared) free(c->buf);
  SSL_free(c->ssl);
  c->magic = 0;
  free(c);
  server_maybe_done(s);
}

static void conn_maybe_free(hd_http_conn *c) {
  if (c->closing && c->handles == 0 && !c->active) conn_free(c);
}

static void conn_on_close(uv_handle_t *h) {
  hd_http_conn *c = h->data;
  c->handles--;
  conn_maybe_free(c);
}

/* Closes the handles and detaches a held request, which is returned for the caller to abort
 * (after it is done walking connections: the abort callback may answer other requests). A
 * request in flight that is not held stays until its handler answers (see conn_maybe_free). */
static hd_http_req *conn_close_handles(hd_http_conn *c) {
  if (c->closing) return NULL;
  c->closing = 1;
  if (c->reading) uv_read_stop((uv_stream_t *)&c->tcp);
  c->reading = 0;
  uv_timer_stop(&c->timer);
  uv_close((uv_handle_t *)&c->tcp, conn_on_close);
  uv_close((uv_handle_t *)&c->timer, conn_on_close);
  c->handles = 2;
  req_free(c->cur);
  c->cur = NULL;
  hd_http_req *r = c->active;
  if (r && r->held) {
    c->active = NULL;
    return r;
  }
  return NULL;
}

static void conn_close(hd_http_conn *c) {
  hd_http_req *r = conn_close_handles(c);
  if (r) {
    r->next_abort = NULL;
    conn_run_aborts(c->s, r);
  }
}

static void conn_run_aborts(hd_http_server *s, hd_http_req *list) {
  while (list) {
    hd_http_req *r = list;
    list = r->next_abort;
    s->stats.requests_held--;
    r->held = 0;
    if (r->abort_cb) r->abort_cb(r->abort_ud, r);
    req_free(r);
  }
}

/* Appends "GET, POST" — each method routed for path, once, in route order. */
static void add_methods(const hd_http_server *s, const char *path, sbuf *out) {
  size_t first = out->len;
  path_segs ps;
  path_split(path, &ps);
  for (size_t i = 0; i < s->nroutes; i++) {
    const char *m = s->routes[i].method;
    if (!route_match_segs(&s->routes[i], &ps)) continue;
    /* list each method once: look for M in "A, B, ..." written so far */
    int seen = 0;
    for (const char *p = out->p + first; *p && !seen;) {
      size_t ml = strcspn(p, ",");
      if (ml == strlen(m) && memcmp(p, m, ml) == 0) seen = 1;
      p += ml;
      while (*p == ',' || *p == ' ') p++;
    }
    if (seen) continue;
    if (out->len > first) sbuf_adds(out, ", ");
    sbuf_adds(out, m);
  }
}

/* 1 when origin ("scheme://host[:port]") names the authority the request was sent to (its Host
 * header): the page was served by this server. The scheme is not compared, since a TLS proxy in
 * front makes the browser's scheme differ from ours. */
static int cors_same_origin(hd_http_req *r, const char *origin) {
  const char *host = hd__http_header(r, "Host");
  const char *auth = strstr(origin, "://");
  return host && *host && auth && strcasecmp(auth + 3, host) == 0;
}

/* The verdict on a request's Origin: 1 allowed, -1 refused. An origin with bytes a browser
 * never sends (spaces, controls, non-ASCII) is refused without asking, so what is echoed back
 * in Access-Control-Allow-Origin is always a plain token. */
static int cors_verdict(hd_http_server *s, hd_http_req *r, const char *origin) {
  size_t n = 0;
  for (const unsigned char *p = (const unsigned char *)origin; *p; p++, n++)
    if (*p <= 0x20 || *p >= 0x7f) return -1;
  if (n == 0 || n > 512) return -1;
  if (cors_same_origin(r, origin)) return 1;
  return s->cors_cb(s->cors_ud, r, origin) ? 1 : -1;
}

/* Hands a complete request to its route, or answers it when none fits. */
static void conn_dispatch(hd_http_conn *c, hd_http_req *r) {
  hd_http_server *s = c->s;
  s->stats.requests_total++;
  c->active = r; /* not idle: the idle timer lets it be */
  if (!r->path && req_split_target(r) != 0) { /* a spool route's was split with its headers */
    hd__http_reply_error(r, HD_EINVAL, "malformed request target");
    return;
  }
  const char *origin = s->cors_cb ? hd__http_header(r, "Origin") : NULL;
  if (origin) r->cors = cors_verdict(s, r, origin);
  const route *found = route_find(s, r);
  int path_known = r->path_known;
  sbuf body = {0};
  int answered = 1;
  if (path_known && r->cors < 0) {
    /* Refused before the handler: a "simple" cross-origin POST would otherwise still act,
     * even though the browser then hides the answer from the page. */
    json_error_body(&body, hd_err_code(HD_EFORBID), "this origin may not use this server");
    hd__http_reply_ex(r, 403, "application/json", NULL, body.p, body.len);
  } else if (!found && path_known && strcmp(r->method, "OPTIONS") == 0 &&
             hd__http_header(r, "Access-Control-Request-Method") && hd__http_header(r, "Origin")) {
    /* A CORS preflight. Allowed only when a policy said yes to this origin (r->cors == 1). */
    if (r->cors > 0) {
      sbuf h = {0};
      sbuf_adds(&h, "Access-Control-Allow-Methods: ");
      add_methods(s, r->path, &h);
      sbuf_adds(&h, "\r\nAccess-Control-Allow-Headers: " HTTP_CORS_ALLOW_HEADERS "\r\n"
                    "Access-Control-Max-Age: " HTTP_CORS_MAX_AGE "\r\n");
      hd__http_reply_ex(r, 204, NULL, h.p, NULL, 0);
      free(h.p);
    } else {
      json_error_body(&body, hd_err_code(HD_EFORBID), "cross-origin requests are not allowed");
      hd__http_reply_ex(r, 403, "application/json", NULL, body.p, body.len);
    }
  } else if (!found && !path_known) {
    json_error_body(&body, hd_err_code(HD_ENOTFOUND), "no such resource");
    hd__http_reply_ex(r, 404, "application/json", NULL, body.p, body.len);
  } else if (!found) {
    sbuf allow = {0};
    sbuf_adds(&allow, "Allow: ");
    add_methods(s, r->path, &allow);
    sbuf_adds(&allow, "\r\n");
    json_error_body(&body, "method_not_allowed", "method not allowed for this resource");
    hd__http_reply_ex(r, 405, "application/json", allow.p, body.p, body.len);
    free(allow.p);
  } else {
    answered = 0;
  }
  free(body.p);
  if (answered) return;
  if (!r->params && req_extract_params(r, found) != 0) {
    hd__http_reply_error(r, HD_EINVAL, "malformed path parameter");
    return;
  }
  if (r->spool) {
    spool_complete(r, found); /* the handler runs once the file is on disk */
    return;
  }
  found->cb(found->ud, r);
}

/* Parses buffered bytes while no request is in flight. Never re-entered: an answer given
 * synchronously from a handler only unpauses, and the loop here goes on. */
static void conn_parse(hd_http_conn *c) {
  hd_http_server *s = c->s;
  if (c->in_parse) return;
  c->in_parse = 1;
  while (!c->closing && !c->finishing && !c->active && c->off < c->len) {
    /* A client that pipelines without reading our answers would make the write queue grow
     * without bound; wait for it to drain (conn_on_write calls us again). */
    if (c->out_bytes > buffer_bound(s)) break;
    size_t n = http_parser_execute(&c->parser, &s->settings, c->buf + c->off, c->len - c->off);
    c->off += n;
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    if (e == HPE_PAUSED && c->spool_wait) break; /* resumed by the spool's write callback */
    if (e == HPE_PAUSED) {
      hd_http_req *r = c->ready;
      c->ready = NULL;
      HTTP_CHECK(r != NULL); /* only on_message_complete pauses */
      conn_dispatch(c, r);
      continue;
    }
    if (e != HPE_OK) {
      if (c->fail_err) {
        conn_fail(c, hd__http_status_for(c->fail_err), hd_err_code(c->fail_err),
                  c->fail_msg ? c->fail_msg : hd_strerror(c->fail_err));
      } else if (c->err_status == 413) {
        s->stats.refused_body++;
        conn_fail(c, 413, hd_err_code(HD_ETOOBIG), "request body too large");
      } else if (c->err_status == 431 || e == HPE_HEADER_OVERFLOW) {
        s->stats.refused_header++;
        conn_fail(c, 431, hd_err_code(HD_ETOOBIG), "request header fields too large");
      } else
        conn_fail(c, 400, hd_err_code(HD_EINVAL), http_errno_description(e));
      break;
    }
  }
  if (c->off == c->len) {
    c->off = c->len = 0;
    if (!c->shared && c->buf) { /* an idle connection keeps no buffer */
      free(c->buf);
      c->buf = NULL;
      c->cap = 0;
    }
  }
  c->in_parse = 0;
  conn_update_reading(c);
}

/* After an answer: let the parser go on with pipelined bytes. */
static void conn_resume(hd_http_conn *c) {
  http_parser_pause(&c->parser, 0);
  conn_restart_idle(c);
  if (!c->in_parse) conn_parse(c);
}

/* ------------------------------------------------------------------------------------------ */
/* spooled bodies (hd__http_route_spool): the body goes to a temp file, written and hashed by a
 * libuv pool thread, one job at a time per request. The loop gathers bytes into `buf` while
 * the worker writes `wbuf`; the two swap when a job is queued. Past SPOOL_HIGH gathered bytes
 * the parser pauses (c->spool_wait) until a job completes, so a disk slower than the client
 * bounds memory instead of growing it. The spool outlives its request while a job runs: a
 * request freed meanwhile only detaches it, and the job's callback discards the file. */

#define SPOOL_WRITE ((size_t)256 * 1024) /* gathered bytes worth a write job */
#define SPOOL_HIGH ((size_t)1024 * 1024) /* gathered bytes at which parsing waits */

enum { SPOOL_JOB_WRITE = 1, SPOOL_JOB_FINISH, SPOOL_JOB_DISCARD };

typedef struct spool {
  uv_work_t work;
  uv_loop_t *loop;
  hd_http_conn *c;        /* NULL once the request is gone */
  hd_http_req *r;
  hd_http_handler cb;     /* the route's handler, set when the body is complete */
  void *ud;
  char path[4096];        /* mkstemp template, then the file */
  int fd;                 /* worker's; -1 before the first job and after FINISH */
  int job;                /* SPOOL_JOB_*, of the job queued or running */
  int busy;               /* a job is queued or running */
  int complete;           /* the whole body was parsed (cb set) */
  int kept;               /* the handler owns the file */
  int made;               /* the worker created the file */
  int err;                /* first failure, HD_E*: later bytes are dropped */
  char *buf, *wbuf;
  size_t len, cap, wlen, wcap;
  uint64_t size, max;
  EVP_MD_CTX *md;
  unsigned char sha[32];
} spool;

static int spool_errno(int e) { return e == ENOSPC || e == EDQUOT ? HD_EFULL : HD_EIO; }

/* Pool thread: create the file on first use, write and hash wbuf, and on FINISH fsync and
 * close it; DISCARD closes and unlinks. Touches only the spool's worker fields. */
static void spool_work(uv_work_t *w) {
  spool *sp = w->data;
  if (sp->job == SPOOL_JOB_DISCARD) {
    if (sp->fd >= 0) close(sp->fd);
    sp->fd = -1;
    if (!sp->kept && sp->made) unlink(sp->path);
    return;
  }
  if (!sp->err && !sp->made) {
    if ((sp->fd = mkostemp(sp->path, O_CLOEXEC)) < 0) sp->err = spool_errno(errno);
    else sp->made = 1;
  }
  for (size_t off = 0; !sp->err && off < sp->wlen;) {
    ssize_t n = write(sp->fd, sp->wbuf + off, sp->wlen - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) sp->err = spool_errno(n < 0 ? errno : ENOSPC);
    else off += (size_t)n;
  }
  if (!sp->err && sp->wlen && EVP_DigestUpdate(sp->md, sp->wbuf, sp->wlen) != 1)
    sp->err = HD_EIO;
  sp->wlen = 0;
  if (sp->job == SPOOL_JOB_FINISH && !sp->err) {
    unsigned len = 0;
    if (fsync(sp->fd) != 0) sp->err = spool_errno(errno);
    else if (EVP_DigestFinal_ex(sp->md, sp->sha, &len) != 1 || len != 32) sp->err = HD_EIO;
  }
  if (sp->job == SPOOL_JOB_FINISH && sp->fd >= 0) {
    close(sp->fd);
    sp->fd = -1;
  }
}

static void spool_free(spool *sp) {
  free(sp->buf);
  free(sp->wbuf);
  EVP_MD_CTX_free(sp->md);
  free(sp);
}

static void spool_after(uv_work_t *w, int status);

static void spool_queue(spool *sp, int job) {
  sp->job = job;
  if (job != SPOOL_JOB_DISCARD) {
    char *t = sp->wbuf;
    size_t tc = sp->wcap;
    sp->wbuf = sp->buf;
    sp->wcap = sp->cap;
    sp->wlen = sp->len;
    sp->buf = t;
    sp->cap = tc;
    sp->len = 0;
  }
  sp->busy = 1;
  sp->work.data = sp;
  /* Fails only for a NULL loop or callback: programming errors. */
  HTTP_CHECK(uv_queue_work(sp->loop, &sp->work, spool_work, spool_after) == 0);
}

/* Queue what is due: everything once the body is complete, else a write once enough is
 * gathered. */
static void spool_kick(spool *sp) {
  if (sp->busy) return;
  if (sp->complete) spool_queue(sp, SPOOL_JOB_FINISH);
  else if (sp->len >= SPOOL_WRITE && !sp->err) spool_queue(sp, SPOOL_JOB_WRITE);
}

static void spool_after(uv_work_t *w, int status) {
  spool *sp = w->data;
  (void)status;
  sp->busy = 0;
  if (sp->job == SPOOL_JOB_DISCARD) {
    spool_free(sp);
    return;
  }
  hd_http_conn *c = sp->c;
  if (!c) { /* the request went away while the job ran */
    spool_queue(sp, SPOOL_JOB_DISCARD);
    return;
  }
  if (sp->job == SPOOL_JOB_FINISH) {
    hd_http_req *r = sp->r;
    if (sp->err) hd__http_reply_error(r, sp->err, "cannot store the request body");
    else sp->cb(sp->ud, r);
    return;
  }
  spool_kick(sp);
  if (c->spool_wait && sp->len < SPOOL_HIGH) {
    c->spool_wait = 0;
    http_parser_pause(&c->parser, 0);
    if (!c->closing && !c->in_parse) conn_parse(c);
  }
}

/* The request is being freed: its file goes unless kept; the spool goes once no job runs. */
static void spool_detach(spool *sp) {
  if (sp->c && sp->c->cur == sp->r) sp->c->spool_wait = 0;
  sp->c = NULL;
  sp->r = NULL;
  if (sp->busy) return; /* spool_after sees c == NULL and discards */
  if (sp->fd >= 0 || (sp->made && !sp->kept)) spool_queue(sp, SPOOL_JOB_DISCARD);
  else spool_free(sp);
}

/* At headers time: the spool route this request goes to, or NULL. The target is split now
 * (conn_dispatch then skips that); a malformed one is left for conn_dispatch to refuse. */
static const route *spool_route(hd_http_conn *c, hd_http_req *r) {
  hd_http_server *s = c->s;
  if (req_split_target(r) != 0) {
    free(r->path);
    r->path = NULL;
    kv_free(r->query, r->nquery);
    r->query = NULL;
    r->nquery = 0;
    return NULL;
  }
  const route *rt = route_find(s, r);
  return rt && rt->spool_dir ? rt : NULL;
}

/* Headers are in and the length is within the route's bound: ask admit(), then set up the
 * spool. Returns 0, or -1 with c->fail_err set (conn_parse answers and closes). */
static int spool_start(hd_http_conn *c, hd_http_req *r, const route *rt) {
  if (req_extract_params(r, rt) != 0) {
    c->fail_err = HD_EINVAL;
    c->fail_msg = "malformed path parameter";
    return -1;
  }
  if (rt->admit) {
    const char *msg = NULL;
    int rc = rt->admit(rt->ud, r, &msg);
    if (rc) {
      c->fail_err = rc;
      c->fail_msg = msg;
      return -1;
    }
  }
  spool *sp = xcalloc(1, sizeof *sp);
  sp->loop = c->s->loop;
  sp->c = c;
  sp->r = r;
  sp->fd = -1;
  sp->max = rt->spool_max;
  sp->md = EVP_MD_CTX_new();
  if (!sp->md || EVP_DigestInit_ex(sp->md, EVP_sha256(), NULL) != 1 ||
      snprintf(sp->path, sizeof sp->path, "%s/upload-XXXXXX", rt->spool_dir) >=
          (int)sizeof sp->path) {
    spool_free(sp);
    c->fail_err = HD_EIO;
    c->fail_msg = "cannot store the request body";
    return -1;
  }
  r->spool = sp;
  return 0;
}

/* Body bytes of a spooled request. Returns 0, or -1 with err_status 413. */
static int spool_body(hd_http_conn *c, hd_http_req *r, const char *at, size_t n) {
  spool *sp = r->spool;
  if (sp->size + n > sp->max) {
    c->err_status = 413;
    return -1;
  }
  sp->size += n;
  if (sp->err) return 0; /* dropped: the failure is answered once the body is in */
  if (sp->len + n > sp->cap) {
    size_t cap = sp->cap ? sp->cap * 2 : HTTP_READ_CHUNK;
    while (cap < sp->len + n) cap *= 2;
    sp->buf = xrealloc(sp->buf, cap);
    sp->cap = cap;
  }
  memcpy(sp->buf + sp->len, at, n);
  sp->len += n;
  spool_kick(sp);
  if (sp->len >= SPOOL_HIGH) {
    c->spool_wait = 1;
    http_parser_pause(&c->parser, 1);
  }
  return 0;
}

/* The whole body is parsed and the request routed: flush, fsync, then run the handler. */
static void spool_complete(hd_http_req *r, const route *rt) {
  spool *sp = r->spool;
  sp->cb = rt->cb;
  sp->ud = rt->ud;
  sp->complete = 1;
  spool_kick(sp);
}

/* ------------------------------------------------------------------------------------------ */
/* parser callbacks */

static int count_header(hd_http_conn *c, size_t n) {
  c->header_bytes += n;
  if (c->header_bytes > c->s->opts.max_header) {
    c->err_status = 431;
    return -1;
  }
  return 0;
}

static int on_message_begin(http_parser *p) {
  hd_http_conn *c = p->data;
  req_free(c->cur);
  c->cur = req_new(c);
  /* "GET " and " HTTP/1.1\r\n" and the final CRLF, roughly, so the count tracks the wire. */
  c->header_bytes = 16;
  c->last_cb = HDR_NONE;
  c->err_status = 0;
  c->fail_err = 0;
  c->fail_msg = NULL;
  return 0;
}

static int on_url(http_parser *p, const char *at, size_t n) {
  hd_http_conn *c = p->data;
  if (count_header(c, n)) return -1;
  sbuf_add(&c->cur->url, at, n);
  return 0;
}

/* The name of the line being read is complete: NUL-terminate it, its value starts after. */
static void hdr_end_name(hd_http_req *r) {
  hd_hdr *h = &r->headers[r->nheaders - 1];
  h->nlen = (uint32_t)(r->hbuf.len - h->name);
  sbuf_add(&r->hbuf, "", 1);
  h->value = (uint32_t)r->hbuf.len;
}

static void hdr_end_value(hd_http_req *r) {
  hd_hdr *h = &r->headers[r->nheaders - 1];
  h->vlen = (uint32_t)(r->hbuf.len - h->value);
  sbuf_add(&r->hbuf, "", 1);
}

/* The last line read is complete: after the head, and after a chunked body's trailer lines
 * (http-parser reports those as header lines too). */
static void hdrs_finish(hd_http_conn *c, hd_http_req *r) {
  if (c->last_cb == HDR_FIELD) hdr_end_name(r); /* a last line without a value */
  if (c->last_cb != HDR_NONE) hdr_end_value(r);
  c->last_cb = HDR_NONE;
}

static int on_header_field(http_parser *p, const char *at, size_t n) {
  hd_http_conn *c = p->data;
  hd_http_req *r = c->cur;
  /* ": " and CRLF of each line count too, so many tiny headers also hit the limit. */
  if (count_header(c, n + (c->last_cb != HDR_FIELD ? 4 : 0))) return -1;
  if (c->last_cb != HDR_FIELD) {
    if (c->last_cb == HDR_VALUE) hdr_end_value(r);
    if (r->nheaders == r->capheaders) {
      r->capheaders = r->capheaders ? r->capheaders * 2 : 8;
      r->headers = xrealloc(r->headers, r->capheaders * sizeof *r->headers);
    }
    if (!r->hbuf.cap) sbuf_reserve(&r->hbuf, 256 - 1); /* a usual request's lines fit */
    r->headers[r->nheaders++] = (hd_hdr){.name = (uint32_t)r->hbuf.len};
  }
  sbuf_add(&r->hbuf, at, n);
  c->last_cb = HDR_FIELD;
  return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n) {
  hd_http_conn *c = p->data;
  hd_http_req *r = c->cur;
  if (count_header(c, n)) return -1;
  if (r->nheaders == 0) return -1;
  if (c->last_cb != HDR_VALUE) hdr_end_name(r);
  sbuf_add(&r->hbuf, at, n);
  c->last_cb = HDR_VALUE;
  return 0;
}

static int on_headers_complete(http_parser *p) {
  hd_http_conn *c = p->data;
  hd_http_req *r = c->cur;
  r->method = http_method_str((enum http_method)p->method);
  r->http_major = p->http_major;
  r->http_minor = p->http_minor;
  hdrs_finish(c, r);
  for (size_t i = 0; i < r->nheaders; i++) {
    hd_hdr *h = &r->headers[i];
    char *v = r->hbuf.p + h->value;
    /* http-parser drops leading whitespace of a value but keeps the trailing one. */
    while (h->vlen && (v[h->vlen - 1] == ' ' || v[h->vlen - 1] == '\t')) v[--h->vlen] = 0;
  }
  int chunked = (p->flags & F_CHUNKED) != 0;
  int has_length = !chunked && p->content_length != ULLONG_MAX;
  const route *srt = c->s->nspool ? spool_route(c, r) : NULL;
  if (has_length && p->content_length > (srt ? srt->spool_max : c->s->opts.max_body)) {
    c->err_status = 413;
    return -1;
  }
  if (srt && spool_start(c, r, srt) != 0) return -1;
  if (has_length && p->content_length && !srt)
    sbuf_reserve(&r->body, (size_t)p->content_length);
  if ((chunked || (has_length && p->content_length > 0)) &&
      (p->http_major > 1 || (p->http_major == 1 && p->http_minor >= 1))) {
    const char *e = hd__http_header(r, "Expect");
    if (e && strcasecmp(e, "100-continue") == 0) {
      /* Clients (curl) otherwise wait a second before sending a larger body. A failure
       * here shows up on the real answer's write. */
      static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
      wreq *w = xrealloc(NULL, sizeof *w + sizeof cont);
      w->c = c;
      w->last = 0;
      memcpy(w->data, cont, sizeof cont);
      (void)conn_send(c, w, sizeof cont - 1);
    }
  }
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t n) {
  hd_http_conn *c = p->data;
  hd_http_req *r = c->cur;
  if (r->spool) return spool_body(c, r, at, n);
  if ((uint64_t)r->body.len + n > c->s->opts.max_body) {
    c->err_status = 413;
    return -1;
  }
  sbuf_add(&r->body, at, n);
  return 0;
}

static int on_message_complete(http_parser *p) {
  hd_http_conn *c = p->data;
  hd_http_req *r = c->cur;
  hdrs_finish(c, r); /* trailer lines */
  sbuf_add(&r->body, "", 0);
  r->keep_alive = http_should_keep_alive(p);
  /* We speak no other protocol: answer, then close instead of parsing what follows. */
  if (p->upgrade) r->keep_alive = 0;
  c->ready = r;
  c->cur = NULL;
  http_parser_pause(p, 1);
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* the listener */

static void server_maybe_done(hd_http_server *s) {
  if (!s->closing || s->done) return;
  if (s->lstate == LST_OPEN || s->lstate == LST_CLOSING) return;
  if (s->conns || s->refused_pending) return;
  s->done = 1;
  /* Last thing we do: the callback may free s. */
  if (s->close_cb) s->close_cb(s);
}

static void on_refused_close(uv_handle_t *h) {
  hd_http_server *s = h->data;
  free(h);
  s->refused_pending--;
  server_maybe_done(s);
}

static void on_listener_close(uv_handle_t *h) {
  hd_http_server *s = h->data;
  s->lstate = LST_CLOSED;
  server_maybe_done(s);
}

/* A connection on its way in: handles initialised and counted, nothing read yet. NULL when
 * libuv cannot set up the handle. */
static hd_http_conn *conn_new(hd_http_server *s) {
  hd_http_conn *c = xcalloc(1, sizeof *c);
  c->magic = HTTP_CONN_MAGIC;
  c->s = s;
  if (uv_tcp_init(s->loop, &c->tcp) != 0) {
    free(c);
    return NULL;
  }
  uv_timer_init(s->loop, &c->timer); /* cannot fail */
  c->tcp.data = c;
  c->timer.data = c;
  c->next = s->conns;
  if (s->conns) s->conns->prev = c;
  s->conns = c;
  s->nconns++;
  s->stats.connections_open++;
  s->stats.connections_total++;
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  strcpy(c->peer, "unknown");
  return c;
}

/* Open connections from `peer`, c itself excluded. A scan: accepts are rare next to reads,
 * and it runs only when a per-address cap is set. */
static uint64_t conns_from(const hd_http_server *s, const hd_http_conn *c) {
  uint64_t n = 0;
  for (const hd_http_conn *o = s->conns; o; o = o->next)
    if (o != c && !o->closing && strcmp(o->peer, c->peer) == 0) n++;
  return n;
}

/* The socket is open: learn the peer, apply the per-address cap, start reading. */
static void conn_start(hd_http_conn *c) {
  hd_http_server *s = c->s;
  uv_tcp_nodelay(&c->tcp, 1);
  struct sockaddr_storage ss;
  int sl = sizeof ss;
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) == 0) {
    if (ss.ss_family == AF_INET)
      uv_ip4_name((struct sockaddr_in *)&ss, c->peer, sizeof c->peer);
    else if (ss.ss_family == AF_INET6)
      uv_ip6_name((struct sockaddr_in6 *)&ss, c->peer, sizeof c->peer);
  }
  if (s->opts.max_per_address && conns_from(s, c) >= s->opts.max_per_address) {
    /* Closed without an answer, like the max_connections refusal: an HTTP error would cost
     * a write per refused socket to the one client that is flooding us. */
    s->stats.refused_per_address++;
    if (s->opts.on_refused) s->opts.on_refused(s->opts.on_refused_ud, "per_address", c->peer);
    conn_close(c);
    return;
  }
  if (s->tls) {
    BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
    c->ssl = SSL_new(s->tls);
    if (!c->ssl || !rb || !wb) {
      BIO_free(rb);
      BIO_free(wb);
      ERR_clear_error();
      conn_close(c);
      return;
    }
    /* An empty memory BIO reads as "retry later", not as end of file. */
    BIO_set_mem_eof_return(rb, -1);
    SSL_set_bio(c->ssl, rb, wb);
    SSL_set_accept_state(c->ssl);
  }
  conn_restart_idle(c);
  conn_update_reading(c);
}

static void on_connection(uv_stream_t *server, int status) {
  hd_http_server *s = server->data;
  if (status == UV_EMFILE || status == UV_ENFILE) {
    /* Only when libuv's spare-fd trick (accept and close what waits, so the listener does
     * not spin) could not run; usually the trick hides EMFILE from us, which is why the
     * broker keeps max_connections below the fd limit. */
    s->stats.refused_fd_limit++;
    if (s->opts.on_refused) s->opts.on_refused(s->opts.on_refused_ud, "fd_limit", NULL);
    return;
  }
  if (status < 0 || s->closing || s->lstate != LST_OPEN) return;
  if (s->opts.max_connections && s->nconns >= s->opts.max_connections) {
    /* Accept and close at once: left in the backlog it would make libuv call us again and
     * again, and the client would hang instead of seeing the refusal. */
    uv_tcp_t *t = xcalloc(1, sizeof *t);
    if (uv_tcp_init(s->loop, t) != 0) {
      free(t);
      return;
    }
    t->data = s;
    (void)uv_accept(server, (uv_stream_t *)t);
    s->stats.connections_refused++;
    s->refused_pending++;
    if (s->opts.on_refused) s->opts.on_refused(s->opts.on_refused_ud, "max_connections", NULL);
    uv_close((uv_handle_t *)t, on_refused_close);
    return;
  }
  hd_http_conn *c = conn_new(s);
  if (!c) return;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
    conn_close(c);
    return;
  }
  conn_start(c);
}

/* ------------------------------------------------------------------------------------------ */
/* public: server */

int hd__http_new(uv_loop_t *loop, const hd_http_opts *opts, hd_http_server **out) {
  if (!loop || !out) return HD_EINVAL;
  hd_http_server *s = xcalloc(1, sizeof *s);
  s->rbuf = xrealloc(NULL, HTTP_READ_CHUNK);
  s->loop = loop;
  if (opts) s->opts = *opts;
  if (!s->opts.max_header) s->opts.max_header = HTTP_DEFAULT_MAX_HEADER;
  if (!s->opts.max_body) s->opts.max_body = HTTP_DEFAULT_MAX_BODY;
  http_parser_settings_init(&s->settings);
  s->settings.on_message_begin = on_message_begin;
  s->settings.on_url = on_url;
  s->settings.on_header_field = on_header_field;
  s->settings.on_header_value = on_header_value;
  s->settings.on_headers_complete = on_headers_complete;
  s->settings.on_body = on_body;
  s->settings.on_message_complete = on_message_complete;
  s->lstate = LST_NONE;
  *out = s;
  return 0;
}

static void route_free_fields(route *rt) {
  free(rt->spool_dir);
  for (size_t i = 0; i < rt->nsegs; i++) free(rt->segs[i].text);
  free(rt->segs);
  free(rt->method);
  free(rt->pattern);
}

/* Two patterns are the same route when they match the same paths: param names do not count. */
static int route_same_shape(const route *a, const route *b) {
  if (a->nsegs != b->nsegs) return 0;
  for (size_t i = 0; i < a->nsegs; i++) {
    if (a->segs[i].param != b->segs[i].param) return 0;
    if (!a->segs[i].param &&
        (a->segs[i].len != b->segs[i].len || memcmp(a->segs[i].text, b->segs[i].text,
                                                    a->segs[i].len) != 0))
      return 0;
  }
  return 1;
}

int hd__http_route(hd_http_server *s, const char *method, const char *pattern,
                   hd_http_handler cb, void *ud) {
  if (!s || !method || !pattern || !cb || pattern[0] != '/' || !method[0]) return HD_EINVAL;
  for (const char *m = method; *m; m++)
    if (!((*m >= 'A' && *m <= 'Z') || *m == '-')) return HD_EINVAL;
  route rt = {0};
  rt.method = xstrndup(method, strlen(method));
  rt.pattern = xstrndup(pattern, strlen(pattern));
  rt.cb = cb;
  rt.ud = ud;
  size_t nsegs = 1;
  for (const char *p = pattern + 1; *p; p++) nsegs += *p == '/';
  if (nsegs > HTTP_MAX_SEGS) {
    route_free_fields(&rt);
    return HD_EINVAL;
  }
  rt.segs = xcalloc(nsegs, sizeof *rt.segs);
  const char *p = pattern + 1;
  for (;;) {
    const char *slash = strchr(p, '/');
    size_t sl = slash ? (size_t)(slash - p) : strlen(p);
    route_seg *seg = &rt.segs[rt.nsegs++];
    if (sl >= 2 && p[0] == '{' && p[sl - 1] == '}') {
      seg->param = 1;
      seg->text = xstrndup(p + 1, sl - 2);
      seg->len = sl - 2;
      if (!seg->len) goto bad;
      for (size_t i = 0; i < seg->len; i++) {
        char ch = seg->text[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-'))
          goto bad;
      }
      for (size_t j = 0; j + 1 < rt.nsegs; j++)
        if (rt.segs[j].param && strcmp(rt.segs[j].text, seg->text) == 0) goto bad;
    } else {
      seg->text = xstrndup(p, sl);
      seg->len = sl;
      if (strpbrk(seg->text, "{}?#%")) goto bad;
    }
    if (!slash) break;
    p = slash + 1;
  }
  for (size_t i = 0; i < s->nroutes; i++) {
    if (strcmp(s->routes[i].method, rt.method) == 0 && route_same_shape(&s->routes[i], &rt)) {
      route_free_fields(&rt);
      return HD_EEXIST;
    }
  }
  s->routes = xrealloc(s->routes, (s->nroutes + 1) * sizeof *s->routes);
  s->routes[s->nroutes++] = rt;
  return 0;
bad:
  route_free_fields(&rt);
  return HD_EINVAL;
}

int hd__http_route_spool(hd_http_server *s, const char *method, const char *pattern,
                         hd_http_handler cb, void *ud, const char *dir, uint64_t max_body,
                         hd_http_admit_cb admit) {
  if (!dir || !dir[0] || !max_body) return HD_EINVAL;
  int rc = hd__http_route(s, method, pattern, cb, ud);
  if (rc) return rc;
  route *rt = &s->routes[s->nroutes - 1];
  rt->spool_dir = xstrndup(dir, strlen(dir));
  rt->spool_max = max_body;
  rt->admit = admit;
  s->nspool++;
  return 0;
}

int hd__http_listen(hd_http_server *s, const char *host, int port) {
  if (!s || !host || port < 0 || port > 65535) return HD_EINVAL;
  if (s->lstate != LST_NONE || s->closing) return HD_EINVAL;
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
      uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0) {
    s->listen_err = UV_EINVAL;
    return HD_EINVAL;
  }
  int rc = uv_tcp_init(s->loop, &s->listener);
  if (rc) {
    s->listen_err = rc;
    return hd_err_from_uv(rc);
  }
  s->listener.data = s;
  s->lstate = LST_OPEN;
  rc = uv_tcp_bind(&s->listener, (const struct sockaddr *)&ss, 0);
  /* libuv may report a busy address only at listen time. */
  if (!rc) rc = uv_listen((uv_stream_t *)&s->listener, HTTP_BACKLOG, on_connection);
  if (!rc) {
    struct sockaddr_storage name;
    int nl = sizeof name;
    rc = uv_tcp_getsockname(&s->listener, (struct sockaddr *)&name, &nl);
    if (!rc)
      s->port = ntohs(name.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&name)->sin6_port
                                                 : ((struct sockaddr_in *)&name)->sin_port);
  }
  if (rc) {
    s->listen_err = rc;
    s->lstate = LST_CLOSING;
    uv_close((uv_handle_t *)&s->listener, on_listener_close);
    return hd_err_from_uv(rc);
  }
  s->listen_err = 0;
  return 0;
}

/* "path: reason" from OpenSSL's error queue, which it then empties. */
static int tls_error(char *err, size_t errlen, const char *what, const char *path) {
  unsigned long e = ERR_peek_last_error();
  char why[256];
  if (e)
    ERR_error_string_n(e, why, sizeof why);
  else
    snprintf(why, sizeof why, "unknown error");
  const char *r = e ? ERR_reason_error_string(e) : NULL;
  if (err && errlen) snprintf(err, errlen, "%s %s: %s", what, path, r ? r : why);
  ERR_clear_error();
  return HD_ECONFIG;
}

int hd__http_set_tls(hd_http_server *s, const char *cert, const char *key, const char *ca,
                     char *err, size_t errlen) {
  if (!s || !cert || !key || s->lstate != LST_NONE || s->tls) return HD_EINVAL;
  ERR_clear_error();
  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx) return tls_error(err, errlen, "TLS", "context");
  int rc = 0;
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  /* An idle or held connection keeps no record buffers: long-polls are most of them. */
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
    rc = tls_error(err, errlen, "tls_cert", cert);
    goto out;
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
    rc = tls_error(err, errlen, "tls_key", key);
    goto out;
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    rc = tls_error(err, errlen, "tls_key", key);
    goto out;
  }
  if (ca) {
    /* Completes the chain sent to clients from the bundle, and checks at start that the
     * certificate does chain to it. */
    if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) {
      rc = tls_error(err, errlen, "tls_ca", ca);
      goto out;
    }
    if (SSL_CTX_build_cert_chain(ctx, SSL_BUILD_CHAIN_FLAG_NO_ROOT) != 1) {
      rc = tls_error(err, errlen, "tls_cert (checked against tls_ca)", cert);
      goto out;
    }
  }
  s->tls = ctx;
  ctx = NULL;
  if (!s->tls_rbuf) s->tls_rbuf = xrealloc(NULL, HTTP_READ_CHUNK);
out:
  SSL_CTX_free(ctx);
  return rc;
}

const char *hd__http_listen_error(const hd_http_server *s) {
  return s && s->listen_err ? uv_strerror(s->listen_err) : "";
}

int hd__http_port(const hd_http_server *s) { return s ? s->port : 0; }

void hd__http_stop_accepting(hd_http_server *s) {
  if (s->lstate != LST_OPEN) return;
  s->lstate = LST_CLOSING;
  uv_close((uv_handle_t *)&s->listener, on_listener_close);
}

void hd__http_close(hd_http_server *s, void (*cb)(hd_http_server *s)) {
  if (s->closing) return;
  s->closing = 1;
  s->close_cb = cb;
  hd__http_stop_accepting(s);
  /* Close everything first, abort afterwards: an abort callback may answer requests of
   * other connections, and so free them under our feet. */
  hd_http_req *aborts = NULL;
  for (hd_http_conn *c = s->conns; c; c = c->next) {
    hd_http_req *r = conn_close_handles(c);
    if (r) {
      r->next_abort = aborts;
      aborts = r;
    }
  }
  conn_run_aborts(s, aborts);
  server_maybe_done(s);
}

void hd__http_free(hd_http_server *s) {
  if (!s) return;
  /* Freeing with handles still open would leave dangling handles in the loop. */
  HTTP_CHECK(!s->conns && !s->refused_pending);
  HTTP_CHECK(s->lstate != LST_OPEN && s->lstate != LST_CLOSING);
  for (size_t i = 0; i < s->nroutes; i++) route_free_fields(&s->routes[i]);
  free(s->routes);
  free(s->rbuf);
  free(s->tls_rbuf);
  SSL_CTX_free(s->tls);
  free(s);
}

const hd_http_stats *hd__http_stats(const hd_http_server *s) { return &s->stats; }

void hd__http_set_cors(hd_http_server *s, hd_http_origin_cb cb, void *ud) {
  s->cors_cb = cb;
  s->cors_ud = ud;
}

/* ------------------------------------------------------------------------------------------ */
/* public: requests */

static void req_check(const hd_http_req *r) {
  HTTP_CHECK(r != NULL && r->magic == HTTP_REQ_MAGIC);
}

const char *hd__http_method(const hd_http_req *r) {
  req_check(r);
  return r->method;
}

const char *hd__http_path(const hd_http_req *r) {
  req_check(r);
  return r->path ? r->path : "";
}

const char *hd__http_param(hd_http_req *r, const char *name) {
  req_check(r);
  for (size_t i = 0; i < r->nparams; i++)
    if (strcmp(r->params[i].name, name) == 0) return r->params[i].value;
  return NULL;
}

const char *hd__http_query(hd_http_req *r, const char *name) {
  req_check(r);
  for (size_t i = 0; i < r->nquery; i++)
    if (strcmp(r->query[i].name, name) == 0) return r->query[i].value;
  return NULL;
}

const char *hd__http_header(hd_http_req *r, const char *name) {
  req_check(r);
  for (size_t i = 0; i < r->nheaders; i++)
    if (strcasecmp(r->hbuf.p + r->headers[i].name, name) == 0)
      return r->hbuf.p + r->headers[i].value;
  return NULL;
}

const char *hd__http_body(hd_http_req *r, size_t *len) {
  req_check(r);
  if (len) *len = r->body.len;
  return r->body.p ? r->body.p : "";
}

const char *hd__http_spool(hd_http_req *r, uint64_t *size, unsigned char sha256[32]) {
  req_check(r);
  spool *sp = r->spool;
  if (!sp || !sp->complete || sp->busy || sp->err) return NULL;
  if (size) *size = sp->size;
  if (sha256) memcpy(sha256, sp->sha, 32);
  return sp->path;
}

void hd__http_spool_keep(hd_http_req *r) {
  req_check(r);
  if (r->spool) r->spool->kept = 1;
}

const char *hd__http_bearer(hd_http_req *r) {
  const char *v = hd__http_header(r, "Authorization");
  if (!v || strncasecmp(v, "Bearer", 6) != 0 || (v[6] != ' ' && v[6] != '\t')) return NULL;
  v += 6;
  while (*v == ' ' || *v == '\t') v++;
  return *v ? v : NULL;
}

const char *hd__http_peer(const hd_http_req *r) {
  req_check(r);
  return r->c->peer;
}

/* A held request keeps only what its answer needs (the Origin to echo; the verdicts and the
 * version are fields of their own) and its path (for logs): its URL, parameters, query, other
 * headers and body go. A held long-poll's parsed request was over half of what it cost (docs/PERFORMANCE.md). */
static void req_strip(hd_http_req *r) {
  if (r->spool) return; /* a spooled body's request is still being read */
  size_t keep = r->nheaders;
  for (size_t i = 0; i < r->nheaders; i++)
    if (r->cors > 0 && keep == r->nheaders &&
        strcasecmp(r->hbuf.p + r->headers[i].name, "Origin") == 0)
      keep = i;
  if (keep < r->nheaders) {
    /* "Origin\0<value>\0" in a buffer of its own, the one line left */
    hd_hdr h = r->headers[keep];
    sbuf one = {0};
    sbuf_add(&one, r->hbuf.p + h.name, (size_t)h.nlen + 1);
    sbuf_add(&one, r->hbuf.p + h.value, h.vlen);
    free(r->hbuf.p);
    r->hbuf = one;
    hd_hdr *arr = realloc(r->headers, sizeof *arr);
    if (arr) r->headers = arr;
    r->headers[0] = (hd_hdr){0, h.nlen, h.nlen + 1, h.vlen};
    r->nheaders = r->capheaders = 1;
  } else {
    free(r->hbuf.p);
    memset(&r->hbuf, 0, sizeof r->hbuf);
    free(r->headers);
    r->headers = NULL;
    r->nheaders = r->capheaders = 0;
  }
  free(r->url.p);
  memset(&r->url, 0, sizeof r->url);
  kv_free(r->params, r->nparams);
  r->params = NULL;
  r->nparams = 0;
  kv_free(r->query, r->nquery);
  r->query = NULL;
  r->nquery = 0;
  free(r->body.p);
  memset(&r->body, 0, sizeof r->body);
}

void hd__http_hold(hd_http_req *r, hd_http_abort_cb cb, void *ud) {
  req_check(r);
  HTTP_CHECK(r->c->active == r);
  if (!r->held) r->c->s->stats.requests_held++;
  r->held = 1;
  r->abort_cb = cb;
  r->abort_ud = ud;
  req_strip(r);
}

void hd__http_reply(hd_http_req *r, int status, const char *content_type, const char *body,
                    size_t len) {
  hd__http_reply_ex(r, status, content_type, NULL, body, len);
}

/* hd__http_reply_ex(), hd__http_reply_stream(): take NULL answers in full (body, or the head
 * alone announcing `announce` bytes); a taker gets the socket after the head. */
static void reply_common(hd_http_req *r, int status, const char *content_type,
                         const char *extra_headers, const char *body, size_t len,
                         uint64_t announce, hd_http_take_cb take, void *take_ud) {
  req_check(r);
  hd_http_conn *c = r->c;
  HTTP_CHECK(c->magic == HTTP_CONN_MAGIC && c->active == r); /* answered twice, or aborted */
  hd_http_server *s = c->s;
  c->active = NULL;
  if (r->held) s->stats.requests_held--;
  if (c->closing) {
    /* The client is gone: nobody to answer, but the connection waited for us. */
    if (status >= 400 && status < 500) s->stats.responses_4xx++;
    if (status >= 500 && status < 600) s->stats.responses_5xx++;
    req_free(r);
    if (take) take(take_ud, -1, NULL);
    conn_maybe_free(c); /* may free s's last connection and call the close callback */
    return;
  }
  sbuf hdrs = {0};
  if (s->cors_cb) {
    /* Vary on every answer, not only on allowed ones: a cache must not hand an answer made
     * without Access-Control-Allow-Origin to a page of another origin, or the reverse. */
    if (r->cors > 0) {
      sbuf_adds(&hdrs, "Access-Control-Allow-Origin: ");
      sbuf_adds(&hdrs, hd__http_header(r, "Origin"));
      sbuf_adds(&hdrs, "\r\n");
    }
    sbuf_adds(&hdrs, "Vary: Origin\r\n");
    if (extra_headers) sbuf_adds(&hdrs, extra_headers);
    extra_headers = hdrs.p;
  }
  /* HEAD: the head announces the body's length, the body is not sent (RFC 9112 6.3); an
   * error answer's JSON after it would read as the next response on the connection. */
  if (!take && announce == HTTP_LEN_OF_BODY && strcmp(r->method, "HEAD") == 0) {
    announce = len;
    len = 0;
  }
  /* Set before the write: conn_send() must leave out TLS close_notify, and a failed write
   * closes the connection, whose end then tells the taker. */
  c->take = take;
  c->take_ud = take_ud;
  conn_write_answer(c, status, content_type, extra_headers, body, len, announce,
                    take ? 0 : r->keep_alive, r->http_major == 1 && r->http_minor == 0);
  free(hdrs.p);
  req_free(r);
  if (!c->closing && !c->finishing) conn_resume(c);
}

void hd__http_reply_ex(hd_http_req *r, int status, const char *content_type,
                       const char *extra_headers, const char *body, size_t len) {
  reply_common(r, status, content_type, extra_headers, body, len, HTTP_LEN_OF_BODY, NULL, NULL);
}

void hd__http_reply_stream(hd_http_req *r, int status, const char *content_type,
                           const char *extra_headers, uint64_t length, hd_http_take_cb take,
                           void *ud) {
  HTTP_CHECK(length != HTTP_LEN_OF_BODY);
  reply_common(r, status, content_type, extra_headers, NULL, 0, length, take, ud);
}

void hd__http_reply_error(hd_http_req *r, int err, const char *message) {
  int status = hd__http_status_for(err);
  sbuf b = {0};
  json_error_body(&b, hd_err_code(err), message ? message : hd_strerror(err));
  /* RFC 9110: a 401 names the scheme the client should use. */
  hd__http_reply_ex(r, status, "application/json",
                    status == 401 ? "WWW-Authenticate: Bearer\r\n" : NULL, b.p, b.len);
  free(b.p);
}

/* ------------------------------------------------------------------------------------------ */
/* fuzzing entry point (see http.h): one client connection over a socketpair */

typedef struct fz_state {
  uv_loop_t loop;
  hd_http_server *s;
  uv_pipe_t cli;      /* the client's end: writes the input, reads and drops answers */
  uv_write_t wr;
  uv_shutdown_t sh;
  uv_timer_t later;   /* answers a held request on the next loop turn (a long-poll wake) */
  uv_timer_t guard;   /* a held request and a stalled client would wait for each other */
  hd_http_req *held;
  int cli_open;
  char rbuf[16 * 1024];
} fz_state;

static void fz_timers_stop(fz_state *z) {
  uv_timer_stop(&z->later);
  uv_timer_stop(&z->guard);
}

static void fz_cli_closed(uv_handle_t *h) {
  fz_state *z = h->data;
  z->cli_open = 0;
  fz_timers_stop(z);
}

static void fz_cli_close(fz_state *z) {
  if (z->cli_open && !uv_is_closing((uv_handle_t *)&z->cli))
    uv_close((uv_handle_t *)&z->cli, fz_cli_closed);
}

static void fz_alloc(uv_handle_t *h, size_t sug, uv_buf_t *b) {
  fz_state *z = h->data;
  (void)sug;
  *b = uv_buf_init(z->rbuf, sizeof z->rbuf);
}

static void fz_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b) {
  (void)b;
  if (n < 0) fz_cli_close(st->data); /* the server closed: done */
}

static void fz_written(uv_write_t *w, int status) { (void)w, (void)status; }
static void fz_shut(uv_shutdown_t *r, int status) { (void)r, (void)status; }

static void fz_guard(uv_timer_t *t) { fz_cli_close(t->data); }

static void fz_abort(void *ud, hd_http_req *r) {
  fz_state *z = ud;
  (void)r;
  z->held = NULL;
  uv_timer_stop(&z->later);
}

static void fz_later(uv_timer_t *t) {
  fz_state *z = t->data;
  hd_http_req *r = z->held;
  z->held = NULL;
  if (r) hd__http_reply(r, 200, "application/json", "{\"messages\": []}", 16);
}

static void fz_item(void *ud, hd_http_req *r) {
  (void)ud;
  sbuf b = {0};
  sbuf_adds(&b, "{\"id\": ");
  json_str(&b, hd__http_param(r, "id"));
  const char *q = hd__http_query(r, "q");
  const char *tok = hd__http_bearer(r);
  const char *ct = hd__http_header(r, "Content-Type");
  sbuf_adds(&b, ", \"q\": ");
  json_str(&b, q ? q : "");
  sbuf_adds(&b, ", \"auth\": ");
  json_str(&b, tok ? tok : "");
  sbuf_adds(&b, ", \"ct\": ");
  json_str(&b, ct ? ct : "");
  sbuf_adds(&b, ", \"peer\": ");
  json_str(&b, hd__http_peer(r));
  sbuf_adds(&b, "}");
  hd__http_reply_ex(r, 200, "application/json", "Cache-Control: no-store\r\n", b.p, b.len);
  free(b.p);
}

static void fz_echo(void *ud, hd_http_req *r) {
  (void)ud;
  size_t n;
  const char *body = hd__http_body(r, &n);
  hd__http_reply(r, 200, "application/octet-stream", body, n);
}

static void fz_err(void *ud, hd_http_req *r) {
  (void)ud;
  hd__http_reply_error(r, HD_ERATE, hd__http_query(r, "why"));
}

static void fz_hold(void *ud, hd_http_req *r) {
  fz_state *z = ud;
  hd__http_hold(r, fz_abort, z);
  z->held = r;
  if (hd__http_query(r, "later")) uv_timer_start(&z->later, fz_later, 0, 0);
}

static int fz_origin(void *ud, hd_http_req *r, const char *origin) {
  (void)ud, (void)r;
  return strcmp(origin, "http://ok.example") == 0;
}

/* Spooled uploads go to a directory of this process's own, made on first use: after each
 * feed it must be empty again (a file left behind is a leak), and the handler checks that the
 * file holds exactly the body it was told of (size and SHA-256). */
static char fz_spool_dir[256];

static void fz_spool_rmdir(void) { rmdir(fz_spool_dir); }

static const char *fz_spool_dir_get(void) {
  if (!fz_spool_dir[0]) {
    const char *t = getenv("TMPDIR");
    snprintf(fz_spool_dir, sizeof fz_spool_dir, "%s/herald-fuzz-spool-XXXXXX",
             t && *t ? t : "/tmp");
    HTTP_CHECK(mkdtemp(fz_spool_dir) != NULL);
    atexit(fz_spool_rmdir);
  }
  return fz_spool_dir;
}

static int fz_spool_files(void) {
  DIR *d = opendir(fz_spool_dir);
  HTTP_CHECK(d != NULL);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) n++;
  closedir(d);
  return n;
}

static int fz_admit(void *ud, hd_http_req *r, const char **message) {
  (void)ud;
  if (!hd__http_query(r, "deny")) return 0;
  *message = "refused before the body";
  return HD_EAUTH;
}

static void fz_upload(void *ud, hd_http_req *r) {
  (void)ud;
  uint64_t size, got = 0;
  unsigned char sha[32], mine[32];
  const char *path = hd__http_spool(r, &size, sha);
  HTTP_CHECK(path != NULL);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  HTTP_CHECK(fd >= 0);
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  HTTP_CHECK(md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1);
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) {
    HTTP_CHECK(EVP_DigestUpdate(md, buf, (size_t)n) == 1);
    got += (uint64_t)n;
  }
  close(fd);
  unsigned len = 0;
  HTTP_CHECK(n == 0 && EVP_DigestFinal_ex(md, mine, &len) == 1 && len == 32);
  EVP_MD_CTX_free(md);
  HTTP_CHECK(got == size && memcmp(sha, mine, 32) == 0);
  if (hd__http_query(r, "keep")) {
    hd__http_spool_keep(r);
    HTTP_CHECK(unlink(path) == 0); /* the handler's file now */
  }
  char body[64];
  int bl = snprintf(body, sizeof body, "{\"size\": %llu}", (unsigned long long)size);
  hd__http_reply(r, 201, "application/json", body, (size_t)bl);
}

/* A body sent by whoever takes the socket (as downloads do), or the head alone for HEAD. */
static void fz_take(void *ud, int sock, struct ssl_st *ssl) {
  static const char zeros[64];
  HTTP_CHECK(ssl == NULL); /* no TLS here */
  if (sock < 0) return;
  /* A short write is the client's loss: it sees the end of the connection early. */
  ssize_t n = write(sock, zeros, (size_t)(uintptr_t)ud);
  (void)n;
  close(sock);
}

static void fz_stream(void *ud, hd_http_req *r) {
  (void)ud;
  const char *q = hd__http_query(r, "n");
  size_t n = q ? strtoul(q, NULL, 10) % 65 : 5;
  int head = strcmp(hd__http_method(r), "HEAD") == 0;
  hd__http_reply_stream(r, 200, "application/octet-stream", "Accept-Ranges: bytes\r\n", n,
                        head ? NULL : fz_take, (void *)(uintptr_t)n);
}

static void fz_server_closed(hd_http_server *s) { (void)s; }

int hd__http_fuzz_feed(const uint8_t *data, size_t len) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return HD_EIO;
  fz_state *z = xcalloc(1, sizeof *z);
  int rc = HD_EIO;
  if (uv_loop_init(&z->loop) != 0) {
    close(sv[0]);
    close(sv[1]);
    free(z);
    return HD_EIO;
  }
  /* Small limits, so that inputs of a few KiB reach them. */
  hd_http_opts o = {.max_header = 1024, .max_body = 4096, .max_per_address = 0};
  HTTP_CHECK(hd__http_new(&z->loop, &o, &z->s) == 0);
  HTTP_CHECK(hd__http_route(z->s, "GET", "/v1/items/{id}", fz_item, z) == 0);
  HTTP_CHECK(hd__http_route(z->s, "DELETE", "/v1/items/{id}", fz_item, z) == 0);
  HTTP_CHECK(hd__http_route(z->s, "POST", "/v1/echo", fz_echo, z) == 0);
  HTTP_CHECK(hd__http_route(z->s, "GET", "/v1/err", fz_err, z) == 0);
  HTTP_CHECK(hd__http_route(z->s, "GET", "/v1/devices/{device}/messages", fz_hold, z) == 0);
  HTTP_CHECK(hd__http_route_spool(z->s, "POST", "/v1/upload/{name}", fz_upload, z,
                                  fz_spool_dir_get(), 8192, fz_admit) == 0);
  HTTP_CHECK(hd__http_route(z->s, "GET", "/v1/stream", fz_stream, z) == 0);
  HTTP_CHECK(hd__http_route(z->s, "HEAD", "/v1/stream", fz_stream, z) == 0);
  hd__http_set_cors(z->s, fz_origin, z);
  uv_timer_init(&z->loop, &z->later);
  uv_timer_init(&z->loop, &z->guard);
  z->later.data = z->guard.data = z;
  hd_http_conn *c = conn_new(z->s);
  HTTP_CHECK(c != NULL);
  if (uv_tcp_open(&c->tcp, sv[0]) != 0) {
    close(sv[0]);
    close(sv[1]);
    conn_close(c);
    goto out;
  }
  conn_start(c);
  uv_pipe_init(&z->loop, &z->cli, 0);
  z->cli.data = z;
  if (uv_pipe_open(&z->cli, sv[1]) != 0) {
    close(sv[1]);
    conn_close(c);
    uv_close((uv_handle_t *)&z->cli, NULL);
    goto out;
  }
  z->cli_open = 1;
  uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
  if (len) uv_write(&z->wr, (uv_stream_t *)&z->cli, &b, 1, fz_written);
  uv_shutdown(&z->sh, (uv_stream_t *)&z->cli, fz_shut);
  uv_read_start((uv_stream_t *)&z->cli, fz_alloc, fz_read);
  uv_timer_start(&z->guard, fz_guard, 200, 0);
  rc = 0;
out:
  uv_run(&z->loop, UV_RUN_DEFAULT);
  fz_timers_stop(z);
  hd__http_close(z->s, fz_server_closed);
  uv_close((uv_handle_t *)&z->later, NULL);
  uv_close((uv_handle_t *)&z->guard, NULL);
  uv_run(&z->loop, UV_RUN_DEFAULT);
  HTTP_CHECK(z->held == NULL);
  hd__http_free(z->s);
  HTTP_CHECK(uv_loop_close(&z->loop) == 0); /* a handle left open is a leak */
  HTTP_CHECK(fz_spool_files() == 0);         /* so is an upload's file */
  free(z);
  return rc;
}
