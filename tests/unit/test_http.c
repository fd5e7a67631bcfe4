/* test_http.c — the HTTP server against a real client on loopback.
 *
 * Each test runs the server's loop on the test thread and a blocking-socket client on a second
 * thread. The client only records what it saw; every assertion runs on the test thread after
 * the client has been joined (cmocka cannot fail from another thread). When the client is
 * done it wakes the loop through a uv_async_t, which closes the server; the test then frees
 * it and checks that uv_loop_close() returns 0, so a leaked handle fails the test.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem, strcasestr; the CMake build defines it already */
#endif
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "http.h"
#include "static.h"

/* ------------------------------------------------------------------------------------------ */
/* fixture */

typedef struct resp {
  int status;
  char head[2048];
  char body[8192];
  size_t body_len;
} resp;

typedef struct fx fx;
typedef void (*client_fn)(fx *f);

struct fx {
  uv_loop_t loop;
  hd_http_server *s;
  uv_async_t done;
  pthread_t th;
  int port;
  client_fn client;
  atomic_int signaled;
  int closed;
  hd_http_stats stats; /* snapshot taken just before hd__http_close */

  /* what the client saw */
  resp r[32];
  int nr;
  int ints[16];

  /* what the handlers saw (loop thread; read after the loop ended) */
  atomic_int held;
  atomic_int aborts;
  int abort_before_close;
  char abort_path[64];
  char log[256];
  uv_timer_t slow_timer;
  hd_http_req *slow_req;
  unsigned slow_ms;
};

/* hd__http_close's callback carries no user data. */
static fx *g_fx;

static void on_closed(hd_http_server *s) {
  assert_ptr_equal(s, g_fx->s);
  g_fx->closed++;
}

static void on_done(uv_async_t *a) {
  fx *f = a->data;
  f->stats = *hd__http_stats(f->s);
  hd__http_close(f->s, on_closed);
  uv_close((uv_handle_t *)a, NULL);
}

static void fx_signal(fx *f) {
  if (atomic_exchange(&f->signaled, 1) == 0) uv_async_send(&f->done);
}

static void *client_main(void *arg) {
  fx *f = arg;
  f->client(f);
  fx_signal(f);
  return NULL;
}

static fx *fx_new(const hd_http_opts *o) {
  hd_http_opts def = {.max_header = 8192,
                      .max_body = 65536,
                      .idle_timeout_ms = 5000,
                      .max_connections = 100};
  fx *f = calloc(1, sizeof *f);
  assert_non_null(f);
  assert_int_equal(uv_loop_init(&f->loop), 0);
  assert_int_equal(hd__http_new(&f->loop, o ? o : &def, &f->s), 0);
  f->slow_ms = 100;
  g_fx = f;
  return f;
}

static void fx_run(fx *f, client_fn fn) {
  assert_int_equal(hd__http_listen(f->s, "127.0.0.1", 0), 0);
  f->port = hd__http_port(f->s);
  assert_true(f->port > 0);
  assert_int_equal(uv_async_init(&f->loop, &f->done, on_done), 0);
  f->done.data = f;
  f->client = fn;
  assert_int_equal(pthread_create(&f->th, NULL, client_main, f), 0);
  assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(pthread_join(f->th, NULL), 0);
  assert_int_equal(f->closed, 1);
}

static void fx_free(fx *f) {
  hd__http_free(f->s);
  assert_int_equal(uv_loop_close(&f->loop), 0);
  g_fx = NULL;
  free(f);
}

static void logf_(fx *f, const char *s) {
  strncat(f->log, s, sizeof f->log - strlen(f->log) - 1);
}

/* ------------------------------------------------------------------------------------------ */
/* the blocking client (client thread only) */

typedef struct client {
  int fd;
  size_t len;
  char buf[65536];
} client;

static client *cl_open(int port) {
  client *c = calloc(1, sizeof *c);
  c->fd = socket(AF_INET, SOCK_STREAM, 0);
  if (c->fd < 0) abort();
  struct timeval tv = {.tv_sec = 5};
  setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) != 0) abort();
  return c;
}

static void cl_free(client *c) {
  if (c->fd >= 0) close(c->fd);
  free(c);
}

static int cl_send(client *c, const char *data) {
  size_t n = strlen(data), off = 0;
  while (off < n) {
    ssize_t w = send(c->fd, data + off, n - off, MSG_NOSIGNAL);
    if (w <= 0) return -1;
    off += (size_t)w;
  }
  return 0;
}

/* Reads one response into *out. Returns 0, or -1 on EOF, error or timeout. */
static int cl_read(client *c, resp *out) {
  memset(out, 0, sizeof *out);
  for (;;) {
    char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (end) {
      size_t hlen = (size_t)(end - c->buf) + 4;
      size_t blen = 0;
      char head[sizeof out->head];
      size_t cp = hlen < sizeof head - 1 ? hlen : sizeof head - 1;
      memcpy(head, c->buf, cp);
      head[cp] = 0;
      const char *cl = strcasestr(head, "\r\nContent-Length:");
      if (cl) blen = strtoul(cl + 17, NULL, 10);
      if (c->len >= hlen + blen) {
        memcpy(out->head, head, cp + 1);
        out->status = atoi(head + 9);
        size_t bcp = blen < sizeof out->body - 1 ? blen : sizeof out->body - 1;
        memcpy(out->body, c->buf + hlen, bcp);
        out->body[bcp] = 0;
        out->body_len = blen;
        memmove(c->buf, c->buf + hlen + blen, c->len - hlen - blen);
        c->len -= hlen + blen;
        return 0;
      }
    }
    if (c->len == sizeof c->buf) return -1;
    ssize_t n = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
    if (n <= 0) return -1;
    c->len += (size_t)n;
  }
}

/* Sends a request and reads one response into f->r[f->nr++]. */
static void cl_roundtrip(fx *f, client *c, const char *req) {
  if (cl_send(c, req) != 0 || cl_read(c, &f->r[f->nr]) != 0) f->r[f->nr].status = -1;
  f->nr++;
}

/* 1 when the server closed the connection (EOF or reset) with nothing more to read. */
static int cl_eof(client *c) {
  if (c->len) return 0;
  char b[256];
  for (;;) {
    ssize_t n = recv(c->fd, b, sizeof b, 0);
    if (n == 0) return 1;
    if (n < 0) return errno == ECONNRESET;
    /* Data after the last response: not what we expect. */
    return 0;
  }
}

static void sleep_ms(int ms) {
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static int wait_atomic(atomic_int *v, int want) {
  for (int i = 0; i < 500; i++) {
    if (atomic_load(v) == want) return 1;
    sleep_ms(10);
  }
  return 0;
}

static long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* ------------------------------------------------------------------------------------------ */
/* handlers (loop thread) */

static void h_text(void *ud, hd_http_req *r) {
  const char *t = ud;
  hd__http_reply(r, 200, "text/plain", t, strlen(t));
}

static void h_info(void *ud, hd_http_req *r) {
  (void)ud;
  char b[1024];
  const char *missing = hd__http_query(r, "missing");
  int n = snprintf(b, sizeof b,
                   "method=%s path=%s device=%s after=%s q=%s flag=[%s] missing=%s hdr=[%s] "
                   "peer=%s",
                   hd__http_method(r), hd__http_path(r), hd__http_param(r, "device"),
                   hd__http_query(r, "after"), hd__http_query(r, "q"), hd__http_query(r, "flag"),
                   missing ? missing : "(null)", hd__http_header(r, "x-TEST"), hd__http_peer(r));
  hd__http_reply(r, 200, "text/plain", b, (size_t)n);
}

static void h_echo(void *ud, hd_http_req *r) {
  (void)ud;
  size_t len;
  const char *b = hd__http_body(r, &len);
  hd__http_reply(r, 200, "application/octet-stream", b, len);
}

static void h_param(void *ud, hd_http_req *r) {
  (void)ud;
  const char *v = hd__http_param(r, "n");
  hd__http_reply(r, 200, "text/plain", v, strlen(v));
}

static void slow_timer_cb(uv_timer_t *t) {
  fx *f = t->data;
  logf_(f, "slow-reply;");
  hd_http_req *r = f->slow_req;
  f->slow_req = NULL;
  hd__http_reply(r, 200, "text/plain", "slow", 4);
  uv_close((uv_handle_t *)t, NULL);
}

/* Answers later, without holding: the pipelined request behind it must wait. */
static void h_slow(void *ud, hd_http_req *r) {
  fx *f = ud;
  logf_(f, "slow-start;");
  f->slow_req = r;
  uv_timer_init(&f->loop, &f->slow_timer);
  f->slow_timer.data = f;
  uv_timer_start(&f->slow_timer, slow_timer_cb, f->slow_ms, 0);
}

static void h_fast(void *ud, hd_http_req *r) {
  fx *f = ud;
  logf_(f, "fast;");
  hd__http_reply(r, 200, "text/plain", "fast", 4);
}

static void on_abort(void *ud, hd_http_req *r) {
  fx *f = ud;
  if (!atomic_load(&f->signaled)) f->abort_before_close = 1;
  snprintf(f->abort_path, sizeof f->abort_path, "%s", hd__http_path(r));
  atomic_fetch_add(&f->aborts, 1);
}

static void h_hold(void *ud, hd_http_req *r) {
  fx *f = ud;
  hd__http_hold(r, on_abort, f);
  atomic_store(&f->held, 1);
}

static void h_bearer(void *ud, hd_http_req *r) {
  (void)ud;
  const char *b = hd__http_bearer(r);
  if (!b) b = "(none)";
  hd__http_reply(r, 200, "text/plain", b, strlen(b));
}

static const char RATE_MSG[] = "slow \"down\"\n\\ \x01 caf\xc3\xa9";

static void h_err(void *ud, hd_http_req *r) {
  int err = (int)(intptr_t)ud;
  hd__http_reply_error(r, err, err == HD_ERATE ? RATE_MSG : NULL);
}

/* ------------------------------------------------------------------------------------------ */
/* tests */

static int setup(void **state) {
  (void)state;
  alarm(60); /* a hung test fails instead of blocking the suite */
  return 0;
}

static int teardown(void **state) {
  (void)state;
  alarm(0);
  return 0;
}

static void c_get_params(fx *f) {
  client *c = cl_open(f->port);
  cl_roundtrip(f, c,
               "GET /v1/devices/a%20b%2Bc+d/messages?after=12&q=x+y%21&flag HTTP/1.1\r\n"
               "Host: x\r\nX-Test:   Hello there  \r\n\r\n");
  cl_roundtrip(f, c, "GET /v1/devices/a%2Fb/messages HTTP/1.1\r\nHost: x\r\n\r\n");
  cl_roundtrip(f, c, "GET /v1/devices/a%00b/messages HTTP/1.1\r\nHost: x\r\n\r\n");
  cl_roundtrip(f, c, "GET /v1/devices/ab/messages?q=%zz HTTP/1.1\r\nHost: x\r\n\r\n");
  /* absolute-form target, still routed by its path */
  cl_roundtrip(f, c, "GET http://x:1/v1/devices/z/messages?after=1 HTTP/1.1\r\nHost: x\r\n\r\n");
  cl_free(c);
}

static void test_get_params_query(void **state) {
  (void)state;
  fx *f = fx_new(NULL);
  assert_int_equal(hd__http_route(f->s, "GET", "/v1/devices/{device}/messages", h_info, f), 0);
  fx_run(f, c_get_params);
  assert_int_equal(f->nr, 5);
  assert_int_equal(f->r[0].status, 200);
  assert_string_equal(f->r[0].body,
                      "method=GET path=/v1/devices/a%20b%2Bc+d/messages device=a b+c+d after=12 "
                      "q=x y! flag=[] missing=(null) hdr=[Hello there] peer=127.0.0.1");
  assert_non_null(strstr(f->r[0].head, "Content-Type: text/plain\r\n"));
  assert_null(strstr(f->r[0].head, "Connection:"));
  for (int i = 1; i <= 3; i++) {
    assert_int_equal(f->r[i].status, 400);
    assert_non_null(strstr(f->r[i].body, "\"bad_request\""));
  }
  assert_int_equal(f->r[4].status, 200);
  assert_non_null(strstr(f->r[4].body, "path=/v1/devices/z/messages device=z after=1 "));
  assert_int_equal(f->stats.connections_total, 1);
  assert_int_equal(f->stats.requests_total, 5);
  assert_int_equal(f->stats.responses_4xx, 3);
  fx_free(f);
}

static void c_post(fx *f) {
  client *c = cl_open(f->port);
  cl_roundtrip(f, c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world");
  cl_roundtrip(f, c,
               "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
  /* Expect: 100-continue gets an interim answer before the body is sent. */
  cl_roundtrip(f, c,
               "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
               "Expect: 100-continue\r\n\r\n");
  cl_roundtrip(f, c, "abc");
  cl_roundtrip(f, c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
  cl_free(c);
}

static void test_post_body(void **state) {
  (void)state;
  fx *f = fx_new(NULL);
  assert_int_equal(hd__http_route(f->s, "POST", "/echo", h_echo, f), 0);
  fx_run(f, c_post);
  assert_int_equal(f->nr, 5);
  assert_int_equal(f->r[0].status, 200);
  assert_string_equal(f->r[0].body, "hello world");
  assert_non_null(strstr(f->r[0].head, "Content-Length: 11\r\n"));
  assert_int_equal(f->r[1].status, 200);
  assert_string_equal(f->r[1].body, "hello world");
  assert_int_equal(f->r[2].status, 100);
  assert_int_equal(f->r[3].status, 200);
  assert_string_equal(f->r[3].body, "abc");
  assert_int_equal(f->r[4].status, 200);
  assert_int_equal(f->r[4].body_len, 0);
  fx_free(f);
}

/* Header lines: kept in one buffer per request, each name and value NUL-terminated there. */
static void h_hdrs(void *ud, hd_http_req *r) {
  (void)ud;
  char b[512];
  const char *m = hd__http_header(r, "X-Missing");
  int n = snprintf(b, sizeof b, "a=[%s] e=[%s] b=[%s] t=[%s] host=[%s] missing=%s",
                   hd__http_header(r, "x-a"), hd__http_header(r, "X-Empty"),
                   hd__http_header(r, "X-B"), hd__http_header(r, "X-T"),
                   hd__http_header(r, "Host"), m ? m : "(null)");
  hd__http_reply(r, 200, "text/plain", b, (size_t)n);
}

static void c_header_lines(fx *f) {
  client *c = cl_open(f->port);
  cl_roundtrip(f, c, "GET /h HTTP/1.1\r\nHost: x\r\nX-A: one  \r\nX-Empty:\r\nX-B:\t two\r\n\r\n");
  /* fragments cut inside a name and inside a value arrive in separate reads */
  static const char *parts[] = {"GET /h HTTP/1.1\r\nHo", "st: y\r\nX-", "A: o", "ne\r\nX-B: t",
                                "wo\r\nX-Empty:", "\r\n\r\n"};
  for (size_t i = 0; i < sizeof parts / sizeof *parts; i++) {
    cl_send(c, parts[i]);
    sleep_ms(5);
  }
  if (cl_read(c, &f->r[f->nr]) != 0) f->r[f->nr].status = -1;
  f->nr++;
  /* a chunked body's trailer line reads as a header too */
  cl_roundtrip(f, c, "POST /h HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nX-A: before\r\n"
                     "\r\n3\r\nabc\r\n0\r\nX-T: trailer\r\n\r\n");
  /* more lines than the first array holds, more bytes than the first buffer */
  char big[2048], *p = big + sprintf(big, "GET /h HTTP/1.1\r\nHost: z\r\n");
  for (int i = 0; i < 20; i++) p += sprintf(p, "X-N%d: value-%d-%s\r\n", i, i, "padding-padding");
  sprintf(p, "X-B: last\r\nX-A: a\r\nX-Empty: \r\n\r\n");
  cl_roundtrip(f, c, big);
  cl_free(c);
}

static void test_header_lines(void **state) {
  (void)state;
  fx *f = fx_new(NULL);
  assert_int_equal(hd__http_route(f->s, "GET", "/h", h_hdrs, f), 0);
  assert_int_equal(hd__http_route(f->s, "POST", "/h", h_hdrs, f), 0);
  fx_run(f, c_header_lines);
  assert_int_equal(f->nr, 4);
  assert_string_equal(f->r[0].body, "a=[one] e=[] b=[two] t=[(null)] host=[x] missing=(null)");
  assert_string_equal(f->r[1].body, "a=[one] e=[] b=[two] t=[(null)] host=[y] missing=(null)");
  assert_string_equal(f->r[2].body,
                      "a=[before] e=[(null)] b=[(null)] t=[trailer] host=[x] missing=(null)");
  assert_string_equal(f->r[3].body, "a=[a] e=[] b=[last] t=[(null)] host=[z] missing=(null)");
  fx_free(f);
}

static void c_keepalive(fx *f) {
  client *c = cl_open(f->port);
  cl_roundtrip(f, c, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
  sleep_ms(20);
  cl_roundtrip(f, c, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
  /* the client asks to close */
  cl_roundtrip(f, c, "GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  f->ints[0] = cl_eof(c);
  cl_free(c);
  /* HTTP/1.0: closes unless asked otherwise */
  c = cl_open(f->port);
  cl_roundtrip(f, c, "GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
  cl_roundtrip(f, c, "GET /a HTTP/1.0\r\n\r\n");
  f->ints[1] = cl_eof(c);
  cl_free(c);
}

static void test_keepalive(void **state) {
  (void)state;
  fx *f = fx_new(NULL);
  assert_int_equal(hd__http_route(f->s, "GET", "/a", h_text, "A"), 0);
  fx_run(f, c_keepalive);
  assert_int_equal(f->nr, 5);
  for (int i = 0; i < 5; i++) {
    assert_int_equal(f->r[i].status, 200);
    assert_string_equal(f->r[i].body, "A");
  }
  assert_null(strstr(f->r[0].head, "Connection:"));
  assert_null(strstr(f->r[1].head, "Connection:"));
  assert_non_null(strstr(f->r[2].head, "Connection: close\r\n"));
  assert_int_equal(f->ints[0], 1);
  assert_non_null(strstr(f->r[3].head, "Connection: keep-alive\r\n"));
  assert_non_null(strstr(f->r[4].head, "Connection: close\r\n"));
  assert_int_equal(f->ints[1], 1);
  assert_int_equal(f->stats.connections_total, 2);
  assert_int_equal(f->stats.requests_total, 5);
  fx_free(f);
}

static void c_pipeline(fx *f) {
  client *c = cl_open(f->port);
  cl_send(c, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /fast HTTP/1.1\r\nHost: x\r\n\r\n");
  for (int i = 0; i < 2; i++)
    if (cl_read(c, &f->r[f->nr++]) != 0) f->r[f->nr - 1].status = -1;
  cl_free(c);
}

static void test_pipelining_async_first(void **state) {
  (void)state;
  fx *f = fx_new(NULL);
  assert_int_equal(hd__http_route(f->s, "GET", "/slow", h_slow, f), 0);
  assert_int_equal(hd__http_route(f->s, "GET", "/fast", h_fast, f), 0);
  fx_run(f, c_pipeline);
  assert_int_equal(f->nr, 2);
  assert_int_equal(f->r[0].status, 200);
  assert_string_equal(f->r[0].body, "slow");
  assert_int_equal(f->r[1].status, 200);
  assert_string_equal(f->r[1].body, "fast");
  /* the second handler ran only after the first one answered */
  assert_string_equal(f->log, "slow-start;slow-reply;fast;");
  fx_free(f);
}

static void c_pipeline_many(fx *f) {
  client *c = cl_open(f->port);
  char all[4096] = "";
  for (int i = 0; i < 20; i++) {
    char one[128];
    snprintf(one, sizeof one, "GET /n/%d HTTP/1.1\r\nHost: x\r\n%s\r\n", i,
             i == 19 ? "Connection: close\r\n" : "");
    strcat(all, one);
  }
  cl_send(c, all);
  for (int i = 0; i < 20; i++)
    if (cl_read(c, &f->r[f->nr++]) != 0) f->r[f->nr - 1].status = -1;
  f->ints[0] = cl_eof(c);
  cl_free(c);
}

static void test_pipelining_many(void **state) {
  (void)state;
  fx *f = fx_new(NULL);
  assert_int_equal(hd__http_route(f->s, "GET", "/n/{n}", h_param, f), 0);
  fx_run(f, c_pipeline_many);
  assert_int_equal(f->nr, 20);
  for (int i = 0; i < 20; i++) {
    char want[16];
    snprintf(want, sizeof want, "%d", i);
    assert_int_equal(f->r[i].status, 200);
    assert_string_equal(f->r[i].body, want);
  }
  assert_non_null(strstr(f->r[19].head, "Connection: close\r\n"));
  assert_int_equal(f->ints[0], 1);
  fx_free(f);
}

/* Many pipelined requests behind a slow one: more than the server buffers while a request is
 * in flight (max_header + max_body = 1280 bytes here), so reading stops and resumes. */
static void c_pipeline_backlog(fx *f) {
  client *c = cl_open(f->port);
  char *all = calloc(1, 64 * 1024);
  strcpy(all, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
  for (int i = 0; i < 300; i++) {
    char one[64];
    snprintf(one, sizeof one, "GET /n/%d HTTP/1.1\r\n\r\n", i);
    strcat(all, one);
  }
  cl_send(c, all);
  free(all);
  resp r;
  f->ints[0] = cl_read(c, &r) == 0 && r.status == 200 && strcmp(r.body, "slow") == 0;
  int in_order = 1;
  for (int i = 0; i < 300; i++) {
    char want[16];
    snprintf(want, sizeof want, "%d", i);
    if (cl_read(c, &r) != 0 || r.status != 200 || strcmp(r.body, want) != 0) in_order = 0;
  }
  f->ints[1] = in_order;
  cl_free(c);
}

static void test_pipelining_backlog(void **state) {
  (void)state;
  hd_http_opts o = {.max_header = 256, .max_body = 1024, .idle_timeout_ms = 5000};
  fx *f = fx_new(&o);
  f->slow_ms = 150;
  assert_int_equal(hd__http_route(f->s, "GET", "/slow", h_slow, f), 0);
  assert_int_equal(hd__http_route(f->s, "GET", "/n/{n}", h_param, f), 0);
  fx_run(f, c_pipeline_backlog);
  assert_int_equal(f->ints[0], 1);
  assert_int_equal(f->ints[1], 1);
  assert_int_equal(f->stats.requests_total, 301);
  fx_free(f);
}

static void h_big(void *ud, hd_http_req *r) {
  (void)ud;
  static char body[16 * 1024];
  memset(body, 'x', sizeof body);
  size_t n = strlen(hd__http_param(r, "n"));
  memcpy(body, hd__http_param(r, "n"), n);
  body[n] = ';';
  hd__http_reply(r, 200, "text/plain", body, sizeof body);
}

/* The client pipelines 8 MB worth of answers and reads nothing for a while: the server must
 * stop parsing while its write queue is long, then finish everything in order. */
static void c_pipeline_unread(fx *f) {
  client *c = cl_open(f->port);
  char *all = calloc(1, 64 * 1024);
  for (int i = 0; i < 500; i++) {
    char one[64];
    snprintf(one, sizeof one, "GET /big/%d HTTP/1.1\r\n\r\n", i);
    strcat(all, one);
  }
  cl_send(c, all);
  free(all);
  sleep_ms(300);
  int in_order = 1;
  for (int i = 0; i < 500; i++) {
    resp r;
    char want[16];
    snprintf(want, sizeof want, "%d;", i);
    if (cl_read(c, &r) != 0 || r.status != 200 || r.body_len != 16 * 1024 ||
        strncmp(r.body, want, strlen(want)) != 0)
      in_order = 0;
  }
  f->ints[0] = in_order;
  cl_free(c);
}

static void test_pipelining_unread_answers(void **state) {
  (void)state;
  hd_http_opts o = {.max_header = 1024, .max_body = 1024, .idle_timeout_ms = 5000};
  fx *f = fx_new(&o);
  assert_int_equal(hd__http_route(f->s, "GET", "/big/{n}", h_big, f), 0);
  fx_run(f, c_pipeline_unread);
  assert_int_equal(f->ints[0], 1);
  assert_int_equal(f->stats.requests_total, 500);
  fx_free(f);
}

static void c_404_405(fx *f) {
  client *c = cl_open(f->port);
  cl_roundtrip(f, c, "GET /no/thing HTTP/1.1\r\nHost: x\r\n\r\n");
  cl_roundtrip(f, c, "DELETE /things HTTP/1.1\r\nHost: x\r\n\r\n");
  cl_roundtrip(f, c, "GET /things/ HTTP/1.1\r\nHost: x\r\n\r\n");
  cl_roundtrip(f, c, "GET /things/7 HTTP/1.1\r\nHost: x\r\n\r\n");
  cl_roundtrip(f, c, "POST /things HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
  /* as many segments as a route may have, then one more: no route has that path */
  cl_roundtrip(f, c, "GET /a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p HTTP/1.1\r\nHost: x\r\n\r\n");
  cl_roundtrip(f, c, "GET /a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q HTTP/1.1\r\nHost: x\r\n\r\n");
  cl_roundtrip(f, c, "PUT /a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p HTTP/1.1\r\nHost: x\r\n\r\n");
  cl_free(c);
}

static void check_json_error(const resp *r, const char *code, const char *message) {
  json_error_t e;
  json_t *j = json_loadb(r->body, r->body_len, 0, &e);
  if (!j) fail_msg("body is not JSON: %s (%s)", r->body, e.text);
  assert_non_null(strstr(r->head, "Content-Type: application/json\r\n"));
  assert_string_equal(json_string_value(json_object_get(j, "error")), code);
  const char *m = json_string_value(json_object_get(j, "message"));
  assert_non_null(m);
  if (message) assert_string_equal(m, message);
  json_decref(j);
}

static void test_404_405(void **state) {
  (void)state;
  fx *f = fx_new(NULL);
  assert_int_equal(hd__http_route(f->s, "POST", "/things", h_text, "made"), 0);
  assert_int_equal(hd__http_route(f->s, "PUT", "/things", h_text, "put"), 0);
  assert_int_equal(hd__http_route(f->s, "GET", "/things/{id}", h_text, "one"), 0);
  /* the same method twice on a path is listed once in Allow */
  assert_int_equal(hd__http_route(f->s, "POST", "/{any}", h_text, "any"), 0);
  assert_int_equal(hd__http_route(f->s, "GET", "/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/{last}", h_text,
                                  "deep"), 0);
  fx_run(f, c_404_405);
  assert_int_equal(f->nr, 8);
  assert_int_equal(f->r[5].status, 200);
  assert_string_equal(f->r[5].body, "deep");
  assert_int_equal(f->r[6].status, 404);
  assert_int_equal(f->r[7].status, 405);
  assert_non_null(strstr(f->r[7].head, "\r\nAllow: GET\r\n"));
  assert_int_equal(f->r[0].status, 404);
  check_json_error(&f->r[0], "not_found", NULL);
  assert_int_equal(f->r[1].status, 405);
  check_json_error(&f->r[1], "method_not_allowed", NULL);
  assert_non_null(strstr(f->r[1].head, "\r\nAllow: POST, PUT\r\n"));
  assert_int_equal(f->r[2].status, 404); /* an empty segment is no {id} */
  assert_int_equal(f->r[3].status, 200);
  assert_string_equal(f->r[3].body, "one");
  assert_int_equal(f->r[4].status, 200);
  assert_string_equal(f->r[4].body, "made"); /* first route added wins */
  assert_int_equal(f->stats.responses_4xx, 5);
  fx_free(f);
}

static void c_too_large(fx *f) {
  client *c = cl_open(f->port);
  cl_roundtrip(f, c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n");
  f->ints[0] = cl_eof(c);
  cl_free(c);
  c = cl_open(f->port);
  cl_roundtrip(f, c,
               "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               "a\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n");
  f->ints[1] = cl_eof(c);
  cl_free(c);
  c = cl_open(f->port);
  cl_roundtrip(f, c,
               "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 16\r\n\r\n0123456789abcdef");
  cl_free(c);
}

static void test_body_too_large(void **state) {
  (void)state;
  hd_http_opts o = {.max_header = 4096, .max_body = 16, .idle_timeout_ms = 5000};
  fx *f = fx_new(&o);
  assert_int_equal(hd__http_route(f->s, "POST", "/echo", h_echo, f), 0);
  fx_run(f, c_too_large);
  assert_int_equal(f->nr, 3);
  assert_int_equal(f->r[0].status, 413);
  check_json_error(&f->r[0], "too_large", NULL);
  assert_non_null(strstr(f->r[0].head, "Connection: close\r\n"));
  assert_int_equal(f->ints[0], 1);
  assert_int_equal(f->r[1].status, 413);
  assert_int_equal(f->ints[1], 1);
  assert_int_equal(f->r[2].status, 200);
  assert_string_equal(f->r[2].body, "0123456789abcdef");
  fx_free(f);
}

static void c_headers_large(fx *f) {
  char req[2048];
  char big[1001];
  memset(big, 'a', 1000);
  big[1000] = 0;
  client *c = cl_open(f->port);
  snprintf(req, sizeof req, "GET /a HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", big);
  cl_roundtrip(f, c, req);
  f->ints[0] = cl_eof(c);
  cl_free(c);
  /* many small headers count too */
  c = cl_open(f->port);
  strcpy(req, "GET /a HTTP/1.1\r\n");
  for (int i = 0; i < 80; i++) strcat(req, "X: y\r\n");
  strcat(req, "\r\n");
  cl_roundtrip(f, c, req);
  f->ints[1] = cl_eof(c);
  cl_free(c);
  /* a long URL */
  c = cl_open(f->port);
  snprintf(req, sizeof req, "GET /a?x=%s HTTP/1.1\r\n\r\n", big);
  cl_roundtrip(f, c, req);
  f->ints[2] = cl_eof(c);
  cl_free(c);
  c = cl_open(f->port);
  cl_roundtrip(f, c, "GET /a HTTP/1.1\r\nHost: x\r\nX-Small: 1\r\n\r\n");
  cl_free(c);
}

static void test_headers_too_large(void **state) {
  (void)state;
  hd_http_opts o = {.max_header = 256, .max_body = 1024, .idle_timeout_ms = 5000};
  fx *f = fx_new(&o);
  assert_int_equal(hd__http_route(f->s, "GET", "/a", h_text, "A"), 0);
  fx_run(f, c_headers_large);
  assert_int_equal(f->nr, 4);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(f->r[i].status, 431);
    check_json_error(&f->r[i], "too_large", NULL);
    assert_non_null(strstr(f->r[i].head, "Connection: close\r\n"));
    assert_int_equal(f->ints[i], 1);
  }
  assert_int_equal(f->r[3].status, 200);
  assert_int_equal(f->stats.requests_total, 1);
  fx_free(f);
}

static void c_garbage(fx *f) {
  static const char *bad[] = {
      "HELLO WORLD\r\n\r\n",
      "GET /a HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
      "GET /a HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      "GET /a HTTP/1.1\r\nNoColon\r\n\r\n",
      "GET /a HTTP/1.x\r\n\r\n",
      "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    client *c = cl_open(f->port);
    cl_roundtrip(f, c, bad[i]);
    f->ints[i] = cl_eof(c);
    cl_free(c);
  }
  /* a request with garbage behind it: answered, then 400 */
  client *c = cl_open(f->port);
  cl_send(c, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n\x01\x02garbage\r\n\r\n");
  for (int i = 0; i < 2; i++)
    if (cl_read(c, &f->r[f->nr++]) != 0) f->r[f->nr - 1].status = -1;
  f->ints[7] = cl_eof(c);
  cl_free(c);
}

static void test_garbage(void **state) {
  (void)state;
  fx *f = fx_new(NULL);
  assert_int_equal(hd__http_route(f->s, "GET", "/a", h_text, "A"), 0);
  fx_run(f, c_garbage);
  assert_int_equal(f->nr, 8);
  for (int i = 0; i < 6; i++) {
    assert_int_equal(f->r[i].status, 400);
    check_json_error(&f->r[i], "bad_request", NULL);
    assert_non_null(strstr(f->r[i].head, "Connection: close\r\n"));
    assert_int_equal(f->ints[i], 1);
  }
  assert_int_equal(f->r[6].status, 200);
  assert_int_equal(f->r[7].status, 400);
  assert_int_equal(f->ints[7], 1);
  assert_int_equal(f->stats.responses_4xx, 7);
  fx_free(f);
}

static void c_held_disconnect(fx *f) {
  client *c = cl_open(f->port);
  cl_send(c, "GET /poll HTTP/1.1\r\nHost: x\r\n\r\n");
  f->ints[0] = wait_atomic(&f->held, 1);
  cl_free(c); /* the client goes away while the request is held */
  f->ints[1] = wait_atomic(&f->aborts, 1);
  sleep_ms(50); /* room for a second (wrong) abort */
}

static void test_held_disconnect(void **state) {
  (void)state;
  fx *f = fx_new(NULL);
  assert_int_equal(hd__http_route(f->s, "GET", "/poll", h_hold, f), 0);
  fx_run(f, c_held_disconnect);
  assert_int_equal(f->ints[0], 1);
  assert_int_equal(f->ints[1], 1);
  assert_int_equal(atomic_load(&f->aborts), 1);
  assert_int_equal(f->abort_before_close, 1);
  assert_string_equal(f->abort_path, "/poll");
  assert_int_equal(f->stats.requests_held, 0);
  assert_int_equal(f->stats.connections_open, 0);
  fx_free(f);
}

static void c_held_close(fx *f) {
  client *c = cl_open(f->port);
  cl_send(c, "GET /poll HTTP/1.1\r\nHost: x\r\n\r\n");
  f->ints[0] = wait_atomic(&f->held, 1);
  fx_signal(f); /* the server closes while the request is held */
  f->ints[1] = cl_eof(c);
  cl_free(c);
}

static void test_held_close(void **state) {
  (void)state;
  fx *f = fx_new(NULL);
  assert_int_equal(hd__http_route(f->s, "GET", "/poll", h_hold, f), 0);
  fx_run(f, c_held_close);
  assert_int_equal(f->ints[0], 1);
  assert_int_equal(f->ints[1], 1);
  assert_int_equal(atomic_load(&f->aborts), 1);
  assert_int_equal(f->abort_before_close, 0);
  assert_int_equal(f->stats.requests_held, 1); /* snapshot taken before the close */
  assert_int_equal(hd__http_stats(f->s)->requests_held, 0);
  fx_free(f);
}

static void c_inflight_gone(fx *f) {
  client *c = cl_open(f->port);
  cl_send(c, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
  sleep_ms(30);
  cl_free(c); /* gone before the (not held) answer */
  sleep_ms(250);
  /* server close while a not-held request is in flight waits for its answer */
  c = cl_open(f->port);
  cl_send(c, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
  sleep_ms(30);
  fx_signal(f);
  f->ints[0] = cl_eof(c);
  cl_free(c);
}

static void test_inflight_client_gone(void **state) {
  (void)state;
  fx *f = fx_new(NULL);
  f->slow_ms = 150;
  assert_int_equal(hd__http_route(f->s, "GET", "/slow", h_slow, f), 0);
  fx_run(f, c_inflight_gone);
  assert_string_equal(f->log, "slow-start;slow-reply;slow-start;slow-reply;");
  assert_int_equal(f->ints[0], 1);
  assert_int_equal(hd__http_stats(f->s)->connections_open, 0);
  fx_free(f);
}

static void c_maxconn(fx *f) {
  client *a = cl_open(f->port), *b = cl_open(f->port);
  cl_roundtrip(f, a, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
  cl_roundtrip(f, b, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
  client *c = cl_open(f->port);
  f->ints[0] = cl_eof(c);
  cl_free(c);
  cl_free(a);
  /* once a slot is free, new connections are served again */
  for (int i = 0; i < 100 && !f->ints[1]; i++) {
    c = cl_open(f->port);
    resp r;
    if (cl_send(c, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n") == 0 && cl_read(c, &r) == 0 &&
        r.status == 200)
      f->ints[1] = 1;
    cl_free(c);
    if (!f->ints[1]) sleep_ms(10);
  }
  cl_free(b);
}

static void test_max_connections(void **state) {
  (void)state;
  hd_http_opts o = {.max_header = 4096, .max_body = 1024, .idle_timeout_ms = 5000,
                    .max_connections = 2};
  fx *f = fx_new(&o);
  assert_int_equal(hd__http_route(f->s, "GET", "/a", h_text, "A"), 0);
  fx_run(f, c_maxconn);
  assert_int_equal(f->r[0].status, 200);
  assert_int_equal(f->r[1].status, 200);
  assert_int_equal(f->ints[0], 1);
  assert_int_equal(f->ints[1], 1);
  assert_true(f->stats.connections_refused >= 1);
  assert_int_equal(f->stats.connections_total, 3);
  fx_free(f);
}

static void c_idle(fx *f) {
  client *c = cl_open(f->port);
  cl_roundtrip(f, c, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
  long t0 = now_ms();
  f->ints[0] = cl_eof(c);
  f->ints[1] = (int)(now_ms() - t0);
  cl_free(c);
  /* a held request is not idle */
  c = cl_open(f->port);
  cl_send(c, "GET /poll HTTP/1.1\r\nHost: x\r\n\r\n");
  wait_atomic(&f->held, 1);
  sleep_ms(400);
  f->ints[2] = atomic_load(&f->aborts);
  cl_free(c);
  wait_atomic(&f->aborts, 1);
}

static void test_idle_timeout(void **state) {
  (void)state;
  hd_http_opts o = {.max_header = 4096, .max_body = 1024, .idle_timeout_ms = 100};
  fx *f = fx_new(&o);
  assert_int_equal(hd__http_route(f->s, "GET", "/a", h_text, "A"), 0);
  assert_int_equal(hd__http_route(f->s, "GET", "/poll", h_hold, f), 0);
  fx_run(f, c_idle);
  assert_int_equal(f->r[0].status, 200);
  assert_int_equal(f->ints[0], 1);
  assert_true(f->ints[1] >= 50);
  assert_true(f->ints[1] < 3000);
  assert_int_equal(f->ints[2], 0);
  assert_int_equal(atomic_load(&f->aborts), 1);
  fx_free(f);
}

static void c_bearer(fx *f) {
  static const char *hdrs[] = {
      "Authorization: Bearer abc.def-_~+/=\r\n",
      "authorization: bearer   tok  \r\n",
      "Authorization: Basic dXNlcjpwYXNz\r\n",
      "Authorization: Bearer\r\n",
      "Authorization: Bearer   \r\n",
      "Authorization: Bearerx tok\r\n",
      "",
  };
  client *c = cl_open(f->port);
  for (size_t i = 0; i < sizeof hdrs / sizeof *hdrs; i++) {
    char req[256];
    snprintf(req, sizeof req, "GET /b HTTP/1.1\r\nHost: x\r\n%s\r\n", hdrs[i]);
    cl_roundtrip(f, c, req);
  }
  cl_free(c);
}

static void test_bearer(void **state) {
  (void)state;
  fx *f = fx_new(NULL);
  assert_int_equal(hd__http_route(f->s, "GET", "/b", h_bearer, f), 0);
  fx_run(f, c_bearer);
  static const char *want[] = {"abc.def-_~+/=", "tok",    "(none)", "(none)",
                               "(none)",        "(none)", "(none)"};
  assert_int_equal(f->nr, 7);
  for (int i = 0; i < 7; i++) {
    assert_int_equal(f->r[i].status, 200);
    assert_string_equal(f->r[i].body, want[i]);
  }
  fx_free(f);
}

static void c_errors(fx *f) {
  client *c = cl_open(f->port);
  cl_roundtrip(f, c, "GET /rate HTTP/1.1\r\nHost: x\r\n\r\n");
  cl_roundtrip(f, c, "GET /auth HTTP/1.1\r\nHost: x\r\n\r\n");
  cl_roundtrip(f, c, "GET /full HTTP/1.1\r\nHost: x\r\n\r\n");
  cl_roundtrip(f, c, "GET /other HTTP/1.1\r\nHost: x\r\n\r\n");
  cl_free(c);
}

static void test_reply_error(void **state) {
  (void)state;
  fx *f = fx_new(NULL);
  assert_int_equal(hd__http_route(f->s, "GET", "/rate", h_err, (void *)(intptr_t)HD_ERATE), 0);
  assert_int_equal(hd__http_route(f->s, "GET", "/auth", h_err, (void *)(intptr_t)HD_EAUTH), 0);
  assert_int_equal(hd__http_route(f->s, "GET", "/full", h_err, (void *)(intptr_t)HD_EFULL), 0);
  assert_int_equal(hd__http_route(f->s, "GET", "/other", h_err, (void *)(intptr_t)-999), 0);
  fx_run(f, c_errors);
  assert_int_equal(f->nr, 4);
  assert_int_equal(f->r[0].status, 429);
  assert_non_null(strstr(f->r[0].head, "HTTP/1.1 429 Too Many Requests\r\n"));
  check_json_error(&f->r[0], "rate_limited", RATE_MSG);
  assert_int_equal(f->r[1].status, 401);
  check_json_error(&f->r[1], "unauthorized", hd_strerror(HD_EAUTH));
  assert_non_null(strstr(f->r[1].head, "\r\nWWW-Authenticate: Bearer\r\n"));
  assert_int_equal(f->r[2].status, 507);
  check_json_error(&f->r[2], "store_full", NULL);
  assert_int_equal(f->r[3].status, 500);
  check_json_error(&f->r[3], "internal", NULL);
  assert_int_equal(f->stats.responses_4xx, 2);
  assert_int_equal(f->stats.responses_5xx, 2);
  fx_free(f);
}

/* ------------------------------------------------------------------------------------------ */
/* CORS */

typedef struct cors_seen {
  int calls;
  char last_origin[128];
  char last_method[16];
} cors_seen;

static cors_seen g_cors;
static atomic_int g_hits;

static int cors_policy(void *ud, hd_http_req *r, const char *origin) {
  cors_seen *cs = ud;
  cs->calls++;
  snprintf(cs->last_origin, sizeof cs->last_origin, "%s", origin);
  snprintf(cs->last_method, sizeof cs->last_method, "%s", hd__http_method(r));
  return strcmp(origin, "http://ok.test:8080") == 0;
}

static void h_count(void *ud, hd_http_req *r) {
  atomic_fetch_add(&g_hits, 1);
  h_text(ud, r);
}

static void c_cors(fx *f) {
  client *c = cl_open(f->port);
  /* 0: no Origin: no CORS headers but Vary, no policy call */
  cl_roundtrip(f, c, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
  /* 1: allowed origin */
  cl_roundtrip(f, c, "GET /a HTTP/1.1\r\nHost: x\r\nOrigin: http://ok.test:8080\r\n\r\n");
  /* 2, 3: refused origin, GET and a "simple" POST: 403 and the handler never runs */
  cl_roundtrip(f, c, "GET /a HTTP/1.1\r\nHost: x\r\nOrigin: http://bad.test\r\n\r\n");
  cl_roundtrip(f, c,
               "POST /a HTTP/1.1\r\nHost: x\r\nOrigin: http://bad.test\r\n"
               "Content-Length: 2\r\n\r\nhi");
  /* 4: the server's own pages (Origin authority = Host): allowed without asking */
  cl_roundtrip(f, c,
               "GET /a HTTP/1.1\r\nHost: Self.test:81\r\nOrigin: https://self.test:81\r\n\r\n");
  /* 5: preflight from an allowed origin */
  cl_roundtrip(f, c,
               "OPTIONS /a HTTP/1.1\r\nHost: x\r\nOrigin: http://ok.test:8080\r\n"
               "Access-Control-Request-Method: POST\r\n"
               "Access-Control-Request-Headers: authorization, content-type\r\n\r\n");
  /* 6: preflight from a refused origin */
  cl_roundtrip(f, c,
               "OPTIONS /a HTTP/1.1\r\nHost: x\r\nOrigin: http://bad.test\r\n"
               "Access-Control-Request-Method: POST\r\n\r\n");
  /* 7: preflight on a path nothing routes */
  cl_roundtrip(f, c,
               "OPTIONS /nope HTTP/1.1\r\nHost: x\r\nOrigin: http://ok.test:8080\r\n"
               "Access-Control-Request-Method: GET\r\n\r\n");
  /* 8: OPTIONS that is not a preflight: the usual 405 */
  cl_roundtrip(f, c, "OPTIONS /a HTTP/1.1\r\nHost: x\r\nOrigin: http://ok.test:8080\r\n\r\n");
  /* 9: an Origin no browser sends (a space): refused without asking the policy */
  cl_roundtrip(f, c, "GET /a HTTP/1.1\r\nHost: x\r\nOrigin: http://ok.test:8080 x\r\n\r\n");
  /* 10: unknown path from a refused origin: still 404 */
  cl_roundtrip(f, c, "GET /zzz HTTP/1.1\r\nHost: x\r\nOrigin: http://bad.test\r\n\r\n");
  /* 11: a path parameter route, allowed */
  cl_roundtrip(f, c, "GET /b/7 HTTP/1.1\r\nHost: x\r\nOrigin: http://ok.test:8080\r\n\r\n");
  cl_free(c);
}

static void test_cors(void **state) {
  (void)state;
  memset(&g_cors, 0, sizeof g_cors);
  atomic_store(&g_hits, 0);
  fx *f = fx_new(NULL);
  assert_int_equal(hd__http_route(f->s, "GET", "/a", h_count, "A"), 0);
  assert_int_equal(hd__http_route(f->s, "POST", "/a", h_count, "posted"), 0);
  assert_int_equal(hd__http_route(f->s, "GET", "/b/{n}", h_param, f), 0);
  hd__http_set_cors(f->s, cors_policy, &g_cors);
  fx_run(f, c_cors);
  assert_int_equal(f->nr, 12);

  assert_int_equal(f->r[0].status, 200);
  assert_null(strstr(f->r[0].head, "Access-Control-"));
  assert_non_null(strstr(f->r[0].head, "\r\nVary: Origin\r\n"));

  assert_int_equal(f->r[1].status, 200);
  assert_string_equal(f->r[1].body, "A");
  assert_non_null(strstr(f->r[1].head, "\r\nAccess-Control-Allow-Origin: http://ok.test:8080\r\n"));
  assert_non_null(strstr(f->r[1].head, "\r\nVary: Origin\r\n"));
  assert_null(strstr(f->r[1].head, "Access-Control-Allow-Credentials"));
  assert_null(strstr(f->r[1].head, "Access-Control-Expose-Headers"));

  for (int i = 2; i <= 3; i++) {
    assert_int_equal(f->r[i].status, 403);
    check_json_error(&f->r[i], "forbidden", NULL);
    assert_null(strstr(f->r[i].head, "Access-Control-"));
  }
  assert_int_equal(f->r[4].status, 200);
  assert_non_null(
      strstr(f->r[4].head, "\r\nAccess-Control-Allow-Origin: https://self.test:81\r\n"));

  assert_int_equal(f->r[5].status, 204);
  assert_int_equal(f->r[5].body_len, 0);
  assert_null(strstr(f->r[5].head, "Content-Length"));
  assert_non_null(strstr(f->r[5].head, "\r\nAccess-Control-Allow-Origin: http://ok.test:8080\r\n"));
  assert_non_null(strstr(f->r[5].head, "\r\nAccess-Control-Allow-Methods: GET, POST\r\n"));
  assert_non_null(strstr(f->r[5].head,
                         "\r\nAccess-Control-Allow-Headers: Authorization, Content-Type, "
                         "Herald-Tenant\r\n"));
  assert_non_null(strstr(f->r[5].head, "\r\nAccess-Control-Max-Age: 600\r\n"));
  assert_non_null(strstr(f->r[5].head, "\r\nVary: Origin\r\n"));

  assert_int_equal(f->r[6].status, 403);
  check_json_error(&f->r[6], "forbidden", NULL);
  assert_null(strstr(f->r[6].head, "Access-Control-"));

  assert_int_equal(f->r[7].status, 404);
  check_json_error(&f->r[7], "not_found", NULL);

  assert_int_equal(f->r[8].status, 405);
  assert_non_null(strstr(f->r[8].head, "\r\nAllow: GET, POST\r\n"));

  assert_int_equal(f->r[9].status, 403);
  assert_null(strstr(f->r[9].head, "Access-Control-"));

  assert_int_equal(f->r[10].status, 404);
  assert_int_equal(f->r[11].status, 200);
  assert_string_equal(f->r[11].body, "7");
  assert_non_null(
      strstr(f->r[11].head, "\r\nAccess-Control-Allow-Origin: http://ok.test:8080\r\n"));

  /* Counting handlers ran for 0, 1 and 4 (11 went to h_param): never for a refused origin. */
  assert_int_equal(atomic_load(&g_hits), 3);
  /* Asked for 1, 2, 3, 5, 6, 7, 8, 10, 11: not without Origin, not for its own origin, not for
   * an Origin with a space. */
  assert_int_equal(g_cors.calls, 9);
  assert_string_equal(g_cors.last_origin, "http://ok.test:8080");
  assert_string_equal(g_cors.last_method, "GET");
  fx_free(f);
}

static void c_cors_off(fx *f) {
  client *c = cl_open(f->port);
  cl_roundtrip(f, c, "GET /a HTTP/1.1\r\nHost: x\r\nOrigin: http://ok.test:8080\r\n\r\n");
  cl_roundtrip(f, c,
               "OPTIONS /a HTTP/1.1\r\nHost: x\r\nOrigin: http://ok.test:8080\r\n"
               "Access-Control-Request-Method: GET\r\n\r\n");
  cl_free(c);
}

/* Without a policy: no CORS headers at all, and preflights are refused. */
static void test_cors_off(void **state) {
  (void)state;
  fx *f = fx_new(NULL);
  assert_int_equal(hd__http_route(f->s, "GET", "/a", h_text, "A"), 0);
  fx_run(f, c_cors_off);
  assert_int_equal(f->nr, 2);
  assert_int_equal(f->r[0].status, 200);
  assert_null(strstr(f->r[0].head, "Access-Control-"));
  assert_null(strstr(f->r[0].head, "Vary:"));
  assert_int_equal(f->r[1].status, 403);
  assert_null(strstr(f->r[1].head, "Access-Control-"));
  fx_free(f);
}

/* ------------------------------------------------------------------------------------------ */
/* the embedded browser files (static.c) */

static void c_static(fx *f) {
  const hd_static_file *js = hd__static_find("/v1/client/herald.js");
  char req[512];
  client *c = cl_open(f->port);
  cl_roundtrip(f, c, "GET /v1/client/herald.js HTTP/1.1\r\nHost: x\r\n\r\n");
  snprintf(req, sizeof req,
           "GET /v1/client/herald.js?v=1 HTTP/1.1\r\nHost: x\r\n"
           "If-None-Match: \"zz\", W/%s\r\n\r\n",
           js->etag);
  cl_roundtrip(f, c, req);
  cl_roundtrip(f, c,
               "GET /v1/client/herald.js HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"zz\"\r\n\r\n");
  cl_roundtrip(f, c, "GET /demo/ HTTP/1.1\r\nHost: x\r\n\r\n");
  cl_roundtrip(f, c, "GET /demo HTTP/1.1\r\nHost: x\r\n\r\n");
  cl_roundtrip(f, c, "GET /demo/demo.css HTTP/1.1\r\nHost: x\r\n\r\n");
  cl_roundtrip(f, c, "GET /demo/nothing.js HTTP/1.1\r\nHost: x\r\n\r\n");
  cl_free(c);
}

static void test_static_files(void **state) {
  (void)state;
  fx *f = fx_new(NULL);
  assert_int_equal(hd__static_init(f->s), 0);
  fx_run(f, c_static);
  const hd_static_file *js = hd__static_find("/v1/client/herald.js");
  assert_non_null(js);
  assert_int_equal(f->nr, 7);
  assert_int_equal(f->r[0].status, 200);
  assert_non_null(
      strstr(f->r[0].head, "\r\nContent-Type: application/javascript; charset=utf-8\r\n"));
  assert_non_null(strstr(f->r[0].head, "\r\nCache-Control: public, max-age=300\r\n"));
  assert_non_null(strstr(f->r[0].head, "\r\nX-Content-Type-Options: nosniff\r\n"));
  char etag[128];
  snprintf(etag, sizeof etag, "\r\nETag: %s\r\n", js->etag);
  assert_non_null(strstr(f->r[0].head, etag));
  assert_int_equal(f->r[0].body_len, js->len);
  assert_memory_equal(f->r[0].body, js->data, 64);
  assert_non_null(strstr((const char *)js->data, "export class Herald"));
  assert_int_equal(f->r[1].status, 304);
  assert_int_equal(f->r[1].body_len, 0);
  assert_non_null(strstr(f->r[1].head, etag));
  assert_int_equal(f->r[2].status, 200);
  assert_int_equal(f->r[3].status, 200);
  assert_non_null(strstr(f->r[3].head, "\r\nContent-Type: text/html; charset=utf-8\r\n"));
  assert_non_null(strstr(f->r[3].head, "\r\nCache-Control: no-cache\r\n"));
  assert_non_null(strstr(f->r[3].body, "<!doctype html>"));
  assert_int_equal(f->r[4].status, 301);
  assert_non_null(strstr(f->r[4].head, "\r\nLocation: /demo/\r\n"));
  assert_int_equal(f->r[5].status, 200);
  assert_non_null(strstr(f->r[5].head, "\r\nContent-Type: text/css; charset=utf-8\r\n"));
  assert_int_equal(f->r[6].status, 404);
  fx_free(f);
}

static void test_static_etag_matching(void **state) {
  (void)state;
  const char *e = "\"abc\"";
  assert_true(hd__static_etag_matches("\"abc\"", e));
  assert_true(hd__static_etag_matches("W/\"abc\"", e));
  assert_true(hd__static_etag_matches("\"x\", \"abc\"", e));
  assert_true(hd__static_etag_matches("\"x\",\"abc\" ", e));
  assert_true(hd__static_etag_matches("*", e));
  assert_false(hd__static_etag_matches("\"abcd\"", e));
  assert_false(hd__static_etag_matches("abc", e));
  assert_false(hd__static_etag_matches("", e));
  assert_false(hd__static_etag_matches(NULL, e));
  assert_false(hd__static_etag_matches(" , ,", e));
  /* every embedded file has a distinct path and a quoted 24-hex-digit ETag */
  assert_true(hd__static_nfiles >= 4);
  for (size_t i = 0; i < hd__static_nfiles; i++) {
    const hd_static_file *sf = &hd__static_files[i];
    assert_ptr_equal(hd__static_find(sf->path), sf);
    assert_int_equal(strlen(sf->etag), 26);
    assert_int_equal(sf->data[sf->len], 0);
  }
  assert_null(hd__static_find("/demo/missing"));
  assert_null(hd__static_find(NULL));
}

static void test_status_for(void **state) {
  (void)state;
  assert_int_equal(hd__http_status_for(HD_EINVAL), 400);
  assert_int_equal(hd__http_status_for(HD_EAUTH), 401);
  assert_int_equal(hd__http_status_for(HD_EFORBID), 403);
  assert_int_equal(hd__http_status_for(HD_ENOTFOUND), 404);
  assert_int_equal(hd__http_status_for(HD_ETOOBIG), 413);
  assert_int_equal(hd__http_status_for(HD_ERATE), 429);
  assert_int_equal(hd__http_status_for(HD_EFULL), 507);
  assert_int_equal(hd__http_status_for(HD_ECLOSED), 503);
  assert_int_equal(hd__http_status_for(HD_EAGAIN), 503);
  assert_int_equal(hd__http_status_for(HD_EIO), 500);
  assert_int_equal(hd__http_status_for(HD_ENOMEM), 500);
  assert_int_equal(hd__http_status_for(-12345), 500);
}

static void test_routes_and_listen(void **state) {
  (void)state;
  uv_loop_t loop;
  hd_http_server *a, *b;
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(hd__http_new(&loop, NULL, &a), 0);
  assert_int_equal(hd__http_route(a, "GET", "/a/{x}", h_text, "1"), 0);
  assert_int_equal(hd__http_route(a, "GET", "/a/{y}", h_text, "2"), HD_EEXIST);
  assert_int_equal(hd__http_route(a, "POST", "/a/{y}", h_text, "3"), 0);
  assert_int_equal(hd__http_route(a, "GET", "/a/b", h_text, "4"), 0);
  assert_int_equal(hd__http_route(a, "GET", "/", h_text, "5"), 0);
  assert_int_equal(hd__http_route(a, "GET", "/", h_text, "5"), HD_EEXIST);
  assert_int_equal(hd__http_route(a, "GET", "a", h_text, "x"), HD_EINVAL);
  assert_int_equal(hd__http_route(a, "GET", "/a/{}", h_text, "x"), HD_EINVAL);
  assert_int_equal(hd__http_route(a, "GET", "/a/{x", h_text, "x"), HD_EINVAL);
  assert_int_equal(hd__http_route(a, "GET", "/{x}/{x}", h_text, "x"), HD_EINVAL);
  assert_int_equal(hd__http_route(a, "get", "/c", h_text, "x"), HD_EINVAL);
  assert_int_equal(hd__http_route(a, "GET", "/c", NULL, "x"), HD_EINVAL);
  /* at most 16 segments (HTTP_MAX_SEGS): a longer pattern could never match */
  assert_int_equal(hd__http_route(a, "GET", "/1/2/3/4/5/6/7/8/9/10/11/12/13/14/15/{x}", h_text,
                                  "16"), 0);
  assert_int_equal(hd__http_route(a, "GET", "/1/2/3/4/5/6/7/8/9/10/11/12/13/14/15/16/17",
                                  h_text, "x"), HD_EINVAL);
  assert_int_equal(hd__http_listen(a, "not-an-ip", 0), HD_EINVAL);

  assert_int_equal(hd__http_listen(a, "127.0.0.1", 0), 0);
  assert_int_equal(hd__http_listen(a, "127.0.0.1", 0), HD_EINVAL); /* already listening */
  assert_int_equal(hd__http_new(&loop, NULL, &b), 0);
  assert_int_not_equal(hd__http_listen(b, "127.0.0.1", hd__http_port(a)), 0);
  assert_true(strlen(hd__http_listen_error(b)) > 0);

  hd__http_close(a, NULL);
  hd__http_close(b, NULL);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  hd__http_free(a);
  hd__http_free(b);
  assert_int_equal(uv_loop_close(&loop), 0);

  /* IPv6 loopback, when the host has it */
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(hd__http_new(&loop, NULL, &a), 0);
  int rc = hd__http_listen(a, "::1", 0);
  if (rc == 0) assert_true(hd__http_port(a) > 0);
  hd__http_close(a, NULL);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  hd__http_free(a);
  assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_status_for),
      cmocka_unit_test_setup_teardown(test_routes_and_listen, setup, teardown),
      cmocka_unit_test_setup_teardown(test_get_params_query, setup, teardown),
      cmocka_unit_test_setup_teardown(test_post_body, setup, teardown),
      cmocka_unit_test_setup_teardown(test_header_lines, setup, teardown),
      cmocka_unit_test_setup_teardown(test_keepalive, setup, teardown),
      cmocka_unit_test_setup_teardown(test_pipelining_async_first, setup, teardown),
      cmocka_unit_test_setup_teardown(test_pipelining_many, setup, teardown),
      cmocka_unit_test_setup_teardown(test_pipelining_backlog, setup, teardown),
      cmocka_unit_test_setup_teardown(test_pipelining_unread_answers, setup, teardown),
      cmocka_unit_test_setup_teardown(test_404_405, setup, teardown),
      cmocka_unit_test_setup_teardown(test_body_too_large, setup, teardown),
      cmocka_unit_test_setup_teardown(test_headers_too_large, setup, teardown),
      cmocka_unit_test_setup_teardown(test_garbage, setup, teardown),
      cmocka_unit_test_setup_teardown(test_held_disconnect, setup, teardown),
      cmocka_unit_test_setup_teardown(test_held_close, setup, teardown),
      cmocka_unit_test_setup_teardown(test_inflight_client_gone, setup, teardown),
      cmocka_unit_test_setup_teardown(test_max_connections, setup, teardown),
      cmocka_unit_test_setup_teardown(test_idle_timeout, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bearer, setup, teardown),
      cmocka_unit_test_setup_teardown(test_reply_error, setup, teardown),
      cmocka_unit_test_setup_teardown(test_cors, setup, teardown),
      cmocka_unit_test_setup_teardown(test_cors_off, setup, teardown),
      cmocka_unit_test_setup_teardown(test_static_files, setup, teardown),
      cmocka_unit_test(test_static_etag_matching),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
