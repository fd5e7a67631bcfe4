/* lpecho.c — `herald-bench lp-echo`: the floor under the long-poll workloads. libuv loop
 * threads (one unless --threads T) that speak the part of Nchan's long-poll protocol the
 * `nchan` adapter uses, and nothing more: no authentication, no store, no fsync, no JSON, no
 * timers. Run against it, the paced long-poll workloads measure what the kernel's loopback TCP,
 * the HTTP parsing every server needs (http-parser, as heraldd) and the load client alone allow
 * on this machine, so a broker's publish->deliver latency can be read against that.
 *
 *   POST /pub/CH      the body is message K+1 of channel CH (kept in memory for the channel's
 *                     life); answered 202, then every poll held on CH is answered with it.
 *   GET  /pub/CH      "active subscribers: N" (the polls held on CH), as Nchan's channel info.
 *   GET  /sub/CH      If-None-Match: K (the Etag of the last message the client has): message
 *                     K+1 at once if there is one, else the poll is held for the next. Without
 *                     the header the poll waits for the next message.
 *
 * Each message's whole answer (status line, headers, body) is built once and written, the same
 * bytes, to every poll it answers: the least a server can do per delivery. Channels and their
 * messages stay in memory until the process ends (a bench run's worth). Runs until killed.
 *
 * With T > 1 threads each has its own loop and its own listening socket on the same port
 * (SO_REUSEPORT: the kernel spreads the connections), so a broadcast's answers are written by
 * every core at once: the floor for a server that fans out on all cores. A channel's messages
 * are shared (under one lock, appended only); its held polls belong to the thread that read
 * them, and a publish wakes the other threads (uv_async) to answer theirs. */
#include <errno.h>
#include <http_parser.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "bench.h"

#define LPE_MAX_URL 256
#define LPE_MAX_BODY 65536

#define LPE_MAX_THREADS 16

typedef struct lpe_msg {
  uv_buf_t answer; /* the complete HTTP answer carrying this message */
} lpe_msg;

typedef struct lpe_conn lpe_conn;
typedef struct lpe_thread lpe_thread;

/* A channel's messages, shared by the threads (lpe_lock). The answer bytes never move once
 * written; only the array of them grows. */
typedef struct lpe_gchan {
  char name[LPE_MAX_URL];
  lpe_msg *msgs; /* msgs[k] is message k+1 */
  size_t n, cap;
  size_t nheld;  /* polls held on it, over every thread */
  struct lpe_gchan *next;
} lpe_gchan;

/* A channel as one thread sees it: the polls that thread holds on it. */
typedef struct lpe_chan {
  lpe_gchan *g;
  lpe_conn **held;
  size_t nheld, capheld;
  struct lpe_chan *next;
} lpe_chan;

struct lpe_conn {
  uv_tcp_t tcp;
  http_parser parser;
  lpe_thread *th;
  char url[LPE_MAX_URL];
  size_t url_len;
  char *body;
  size_t body_len;
  int hdr_inm;      /* the header being read is If-None-Match */
  long have;        /* If-None-Match: the last message the client has; -1 none */
  size_t next;      /* held: the index of the message it waits for */
  lpe_chan *waiting; /* held on this channel */
  int closing;
  char rbuf[16384];
};

struct lpe_thread {
  uv_loop_t loop;
  uv_tcp_t server;
  uv_async_t wake;   /* another thread published: answer the polls held here */
  lpe_chan *chans;
  pthread_t tid;
};

static pthread_mutex_t lpe_lock = PTHREAD_MUTEX_INITIALIZER;
static lpe_gchan *lpe_gchans;
static lpe_thread lpe_threads[LPE_MAX_THREADS];
static int lpe_nthreads = 1;
static http_parser_settings lpe_settings;

static lpe_gchan *gchan_get_locked(const char *name) {
  for (lpe_gchan *g = lpe_gchans; g; g = g->next)
    if (strcmp(g->name, name) == 0) return g;
  lpe_gchan *g = calloc(1, sizeof *g);
  if (!g) return NULL;
  snprintf(g->name, sizeof g->name, "%s", name);
  g->next = lpe_gchans;
  lpe_gchans = g;
  return g;
}

static lpe_chan *chan_get(lpe_thread *th, const char *name) {
  for (lpe_chan *c = th->chans; c; c = c->next)
    if (strcmp(c->g->name, name) == 0) return c;
  pthread_mutex_lock(&lpe_lock);
  lpe_gchan *g = gchan_get_locked(name);
  pthread_mutex_unlock(&lpe_lock);
  lpe_chan *c = g ? calloc(1, sizeof *c) : NULL;
  if (!c) return NULL;
  c->g = g;
  c->next = th->chans;
  th->chans = c;
  return c;
}

typedef struct lpe_write {
  uv_write_t req;
  char *own;    /* an answer of its own, freed once written (a shared message answer: NULL) */
  int then_close; /* the connection closes once this is written (an answer to junk) */
  lpe_conn *c;
} lpe_write;

static void conn_close(lpe_conn *c);

static void on_written(uv_write_t *req, int status) {
  lpe_write *w = (lpe_write *)req;
  (void)status;
  if (w->then_close) conn_close(w->c); /* idempotent; c outlives its writes' callbacks */
  free(w->own);
  free(w);
}

/* Write buf on c; own != 0: buf.base is freed once written. */
static void conn_write(lpe_conn *c, uv_buf_t buf, int own, int then_close) {
  lpe_write *w = calloc(1, sizeof *w);
  if (!w) {
    if (own) free(buf.base);
    if (then_close) conn_close(c);
    return;
  }
  w->own = own ? buf.base : NULL;
  w->then_close = then_close;
  w->c = c;
  if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, on_written) != 0)
    on_written(&w->req, -1);
}

static void answer_text(lpe_conn *c, int status, const char *reason, const char *text,
                        int then_close) {
  size_t tl = strlen(text), cap = tl + 160;
  char *b = malloc(cap);
  if (!b) {
    if (then_close) conn_close(c);
    return;
  }
  int n = snprintf(b, cap,
                   "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n\r\n%s",
                   status, reason, tl, text);
  conn_write(c, uv_buf_init(b, (unsigned)n), 1, then_close);
}

static void unhold(lpe_conn *c) {
  lpe_chan *ch = c->waiting;
  if (!ch) return;
  for (size_t i = 0; i < ch->nheld; i++)
    if (ch->held[i] == c) {
      ch->held[i] = ch->held[--ch->nheld];
      pthread_mutex_lock(&lpe_lock);
      ch->g->nheld--;
      pthread_mutex_unlock(&lpe_lock);
      break;
    }
  c->waiting = NULL;
}

/* Answer every poll this thread holds on ch whose message has come; keep the others. */
static void chan_answer(lpe_chan *ch) {
  lpe_conn **due = malloc(ch->nheld * sizeof *due);
  uv_buf_t *bufs = malloc(ch->nheld * sizeof *bufs);
  size_t kept = 0, ndue = 0;
  pthread_mutex_lock(&lpe_lock);
  for (size_t i = 0; i < ch->nheld; i++) {
    lpe_conn *c = ch->held[i];
    if (c->next < ch->g->n && due && bufs) {
      /* The answer's bytes never move; only the array of them may, so the buffer is read
       * under the lock and written after it. */
      bufs[ndue] = ch->g->msgs[c->next].answer;
      due[ndue++] = c;
      c->waiting = NULL;
    } else {
      ch->held[kept++] = c;
    }
  }
  ch->g->nheld -= ndue;
  pthread_mutex_unlock(&lpe_lock);
  ch->nheld = kept;
  for (size_t i = 0; i < ndue; i++) conn_write(due[i], bufs[i], 0, 0);
  free(due);
  free(bufs);
}

static void on_wake(uv_async_t *a) {
  lpe_thread *th = a->data;
  for (lpe_chan *ch = th->chans; ch; ch = ch->next)
    if (ch->nheld) chan_answer(ch);
}

static int chan_publish(lpe_thread *th, lpe_chan *ch, const char *body, size_t len) {
  lpe_gchan *g = ch->g;
  size_t cap = len + 200;
  char *b = malloc(cap);
  if (!b) return -1;
  pthread_mutex_lock(&lpe_lock);
  if (g->n == g->cap) {
    size_t ncap = g->cap ? g->cap * 2 : 1024;
    lpe_msg *m = realloc(g->msgs, ncap * sizeof *m);
    if (!m) {
      pthread_mutex_unlock(&lpe_lock);
      free(b);
      return -1;
    }
    g->msgs = m;
    g->cap = ncap;
  }
  int n = snprintf(b, cap,
                   "HTTP/1.1 200 OK\r\nLast-Modified: Thu, 01 Jan 2026 00:00:00 GMT\r\n"
                   "Etag: %zu\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n\r\n",
                   g->n + 1, len);
  memcpy(b + n, body, len);
  g->msgs[g->n++].answer = uv_buf_init(b, (unsigned)(n + (int)len));
  pthread_mutex_unlock(&lpe_lock);
  /* Every held poll is caught up: each gets the message it waits for, the same bytes for all
   * that wait for the same one. Other threads answer theirs. */
  for (int t = 0; t < lpe_nthreads; t++)
    if (&lpe_threads[t] != th) uv_async_send(&lpe_threads[t].wake);
  if (ch->nheld) chan_answer(ch);
  return 0;
}

static void serve(lpe_conn *c, int method) {
  const char *u = c->url;
  char *q = strchr(c->url, '?');
  char t[64];
  if (q) *q = 0;
  int pub = strncmp(u, "/pub/", 5) == 0, sub = strncmp(u, "/sub/", 5) == 0 && method == HTTP_GET;
  if (!pub && !sub) {
    answer_text(c, 404, "Not Found", "not found\n", 0);
    return;
  }
  lpe_chan *ch = chan_get(c->th, u + 5);
  if (!ch) {
    answer_text(c, 500, "Internal Server Error", "out of memory\n", 0);
    return;
  }
  if (pub && method == HTTP_POST) {
    if (chan_publish(c->th, ch, c->body ? c->body : "", c->body_len)) {
      answer_text(c, 500, "Internal Server Error", "out of memory\n", 0);
      return;
    }
    pthread_mutex_lock(&lpe_lock);
    snprintf(t, sizeof t, "queued messages: %zu\n", ch->g->n);
    pthread_mutex_unlock(&lpe_lock);
    answer_text(c, 202, "Accepted", t, 0);
    return;
  }
  if (pub) {
    pthread_mutex_lock(&lpe_lock);
    snprintf(t, sizeof t, "active subscribers: %zu\n", ch->g->nheld);
    pthread_mutex_unlock(&lpe_lock);
    answer_text(c, 200, "OK", t, 0);
    return;
  }
  /* Room to hold it first, so that looking at the channel and holding the poll are one step
   * under the lock: a publish by another thread after it wakes this one to answer. */
  int room = ch->nheld < ch->capheld;
  if (!room) {
    size_t cap = ch->capheld ? ch->capheld * 2 : 1024;
    lpe_conn **h = realloc(ch->held, cap * sizeof *h);
    if (h) {
      ch->held = h;
      ch->capheld = cap;
      room = 1;
    }
  }
  uv_buf_t next = {0};
  pthread_mutex_lock(&lpe_lock);
  if (c->have >= 0 && (size_t)c->have < ch->g->n) {
    next = ch->g->msgs[c->have].answer;
  } else if (room) {
    /* It has every message there is (or says it has more, or did not say): it waits for the
     * next one published, as a held poll always has. */
    c->next = ch->g->n;
    ch->g->nheld++;
  }
  pthread_mutex_unlock(&lpe_lock);
  if (next.base) {
    conn_write(c, next, 0, 0); /* behind: the next message at once */
    return;
  }
  if (!room) {
    answer_text(c, 500, "Internal Server Error", "out of memory\n", 0);
    return;
  }
  ch->held[ch->nheld++] = c;
  c->waiting = ch;
}

static int on_begin(http_parser *p) {
  lpe_conn *c = p->data;
  c->url_len = 0;
  c->url[0] = 0;
  c->body_len = 0;
  c->have = -1;
  c->hdr_inm = 0;
  return 0;
}

static int on_url(http_parser *p, const char *at, size_t n) {
  lpe_conn *c = p->data;
  if (c->url_len + n >= sizeof c->url) return -1;
  memcpy(c->url + c->url_len, at, n);
  c->url_len += n;
  c->url[c->url_len] = 0;
  return 0;
}

static int on_hfield(http_parser *p, const char *at, size_t n) {
  lpe_conn *c = p->data;
  c->hdr_inm = n == 13 && strncasecmp(at, "If-None-Match", 13) == 0;
  return 0;
}

static int on_hvalue(http_parser *p, const char *at, size_t n) {
  lpe_conn *c = p->data;
  if (c->hdr_inm && n > 0 && n < 24) {
    char t[24];
    memcpy(t, at, n);
    t[n] = 0;
    c->have = strtol(t, NULL, 10);
  }
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t n) {
  lpe_conn *c = p->data;
  if (c->body_len + n > LPE_MAX_BODY) return -1;
  if (!c->body && !(c->body = malloc(LPE_MAX_BODY))) return -1;
  memcpy(c->body + c->body_len, at, n);
  c->body_len += n;
  return 0;
}

static int on_complete(http_parser *p) {
  lpe_conn *c = p->data;
  serve(c, p->method);
  return 0;
}

static void on_closed(uv_handle_t *h) {
  lpe_conn *c = h->data;
  free(c->body);
  free(c);
}

static void conn_close(lpe_conn *c) {
  if (c->closing) return;
  c->closing = 1;
  unhold(c);
  uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void on_alloc(uv_handle_t *h, size_t want, uv_buf_t *b) {
  (void)want;
  lpe_conn *c = h->data;
  *b = uv_buf_init(c->rbuf, sizeof c->rbuf);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  lpe_conn *c = s->data;
  if (n < 0) {
    conn_close(c);
    return;
  }
  if (n == 0) return;
  size_t used = http_parser_execute(&c->parser, &lpe_settings, b->base, (size_t)n);
  if (c->parser.http_errno != HPE_OK || used != (size_t)n) {
    /* Nothing more is read from it: answer, then close once the answer is out. */
    uv_read_stop(s);
    answer_text(c, 400, "Bad Request", "bad request\n", 1);
  }
}

static void on_conn(uv_stream_t *server, int status) {
  if (status < 0) return;
  lpe_conn *c = calloc(1, sizeof *c);
  if (!c) return;
  uv_tcp_init(server->loop, &c->tcp);
  c->tcp.data = c;
  c->th = server->data;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
    uv_close((uv_handle_t *)&c->tcp, on_closed);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  c->have = -1;
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* A listening socket of its own for each thread, on the same address: SO_REUSEPORT. */
static int listen_on(lpe_thread *th, const opts *o) {
  struct sockaddr_in a;
  int rc = uv_ip4_addr(o->url_host, o->http_port, &a);
  if (rc) return rc;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
  if (fd < 0) return uv_translate_sys_error(errno);
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
      (lpe_nthreads > 1 && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one)) ||
      bind(fd, (const struct sockaddr *)&a, sizeof a)) {
    rc = uv_translate_sys_error(errno);
    close(fd);
    return rc;
  }
  uv_tcp_init(&th->loop, &th->server);
  th->server.data = th;
  if ((rc = uv_tcp_open(&th->server, fd))) {
    close(fd);
    return rc;
  }
  return uv_listen((uv_stream_t *)&th->server, 4096, on_conn);
}

static void *thread_main(void *arg) {
  lpe_thread *th = arg;
  uv_run(&th->loop, UV_RUN_DEFAULT);
  return NULL;
}

int run_lp_echo(opts *o) {
  raise_nofile();
  http_parser_settings_init(&lpe_settings);
  lpe_settings.on_message_begin = on_begin;
  lpe_settings.on_url = on_url;
  lpe_settings.on_header_field = on_hfield;
  lpe_settings.on_header_value = on_hvalue;
  lpe_settings.on_body = on_body;
  lpe_settings.on_message_complete = on_complete;
  if (o->threads > LPE_MAX_THREADS) {
    fprintf(stderr, "herald-bench lp-echo: at most %d threads\n", LPE_MAX_THREADS);
    return 1;
  }
  lpe_nthreads = o->threads;
  for (int t = 0; t < lpe_nthreads; t++) {
    lpe_thread *th = &lpe_threads[t];
    int rc = uv_loop_init(&th->loop);
    if (!rc) rc = uv_async_init(&th->loop, &th->wake, on_wake);
    th->wake.data = th;
    if (!rc) rc = listen_on(th, o);
    if (rc) {
      fprintf(stderr, "herald-bench lp-echo: cannot listen on %s:%d: %s\n", o->url_host,
              o->http_port, uv_strerror(rc));
      return 1;
    }
  }
  for (int t = 1; t < lpe_nthreads; t++)
    if (pthread_create(&lpe_threads[t].tid, NULL, thread_main, &lpe_threads[t])) {
      fprintf(stderr, "herald-bench lp-echo: cannot start thread %d\n", t);
      return 1;
    }
  thread_main(&lpe_threads[0]);
  return 0;
}
