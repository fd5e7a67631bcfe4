/* test_download.c — package downloads: Range parsing (RFC 9110 §14.2), then the engine itself (download.c with http.c's hand-over) against a real client
 * on loopback: whole file, ranges, 304/416, HEAD on a kept-alive connection, If-Range, and a
 * client that stops reading and is cut at the send timeout.
 *
 * As in test_http.c the loop runs on the test thread and a blocking client on a second one;
 * the client records, the test thread asserts after joining it, and uv_loop_close() must
 * return 0 at the end (a leaked handle fails the test). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
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

#include "download.h"
#include "http.h"

/* Expect `value` against `size` to give rc and, for HD_RANGE_OK, [first, last]. */
static void check_range(const char *value, uint64_t size, int rc, uint64_t first,
                        uint64_t last) {
  uint64_t f = 12345, l = 67890;
  int got = hd__download_parse_range(value, size, &f, &l);
  if (got != rc) print_error("Range %s (size %llu)\n", value ? value : "(null)",
                             (unsigned long long)size);
  assert_int_equal(got, rc);
  if (rc == HD_RANGE_OK) {
    assert_int_equal(f, first);
    assert_int_equal(l, last);
  }
}

static void test_range_first_middle_last(void **state) {
  (void)state;
  check_range("bytes=0-0", 1000, HD_RANGE_OK, 0, 0);
  check_range("bytes=0-99", 1000, HD_RANGE_OK, 0, 99);
  check_range("bytes=100-199", 1000, HD_RANGE_OK, 100, 199);
  check_range("bytes=999-999", 1000, HD_RANGE_OK, 999, 999);
  check_range("bytes=990-", 1000, HD_RANGE_OK, 990, 999);
  check_range("bytes=0-", 1000, HD_RANGE_OK, 0, 999);
  /* a last position past the end is cut to the end */
  check_range("bytes=500-5000", 1000, HD_RANGE_OK, 500, 999);
  check_range("bytes=500-18446744073709551615", 1000, HD_RANGE_OK, 500, 999);
  check_range("bytes=500-99999999999999999999999", 1000, HD_RANGE_OK, 500, 999);
}

static void test_range_suffix(void **state) {
  (void)state;
  check_range("bytes=-1", 1000, HD_RANGE_OK, 999, 999);
  check_range("bytes=-100", 1000, HD_RANGE_OK, 900, 999);
  check_range("bytes=-1000", 1000, HD_RANGE_OK, 0, 999);
  check_range("bytes=-5000", 1000, HD_RANGE_OK, 0, 999); /* longer than the file: all */
  check_range("bytes=-0", 1000, HD_RANGE_UNSATISFIABLE, 0, 0);
  check_range("bytes=-10", 0, HD_RANGE_UNSATISFIABLE, 0, 0);
}

static void test_range_unsatisfiable(void **state) {
  (void)state;
  check_range("bytes=1000-", 1000, HD_RANGE_UNSATISFIABLE, 0, 0);
  check_range("bytes=1000-2000", 1000, HD_RANGE_UNSATISFIABLE, 0, 0);
  check_range("bytes=5000-", 1000, HD_RANGE_UNSATISFIABLE, 0, 0);
  check_range("bytes=99999999999999999999999-", 1000, HD_RANGE_UNSATISFIABLE, 0, 0);
  check_range("bytes=0-", 0, HD_RANGE_UNSATISFIABLE, 0, 0); /* an empty file has no byte 0 */
}

static void test_range_ignored(void **state) {
  (void)state;
  /* Not a usable single byte range: the whole file is sent (RFC 9110 lets a server ignore
   * Range), never a 416. */
  check_range(NULL, 1000, HD_RANGE_NONE, 0, 0);
  check_range("", 1000, HD_RANGE_NONE, 0, 0);
  check_range("bytes=", 1000, HD_RANGE_NONE, 0, 0);
  check_range("bytes=,", 1000, HD_RANGE_NONE, 0, 0);
  check_range("items=0-1", 1000, HD_RANGE_NONE, 0, 0);
  check_range("bytes 0-1", 1000, HD_RANGE_NONE, 0, 0);
  check_range("bytes=abc", 1000, HD_RANGE_NONE, 0, 0);
  check_range("bytes=5-1", 1000, HD_RANGE_NONE, 0, 0);   /* last < first: invalid */
  check_range("bytes=-", 1000, HD_RANGE_NONE, 0, 0);
  check_range("bytes=1-2x", 1000, HD_RANGE_NONE, 0, 0);
  check_range("bytes=--1", 1000, HD_RANGE_NONE, 0, 0);
  check_range("bytes=+1-2", 1000, HD_RANGE_NONE, 0, 0);
  check_range("bytes=0-1,5-9", 1000, HD_RANGE_NONE, 0, 0); /* several ranges: not served */
  check_range("bytes=0-1, -5", 1000, HD_RANGE_NONE, 0, 0);
}

static void test_range_syntax_tolerance(void **state) {
  (void)state;
  /* unit case-insensitive, optional whitespace and empty list elements */
  check_range("Bytes=1-2", 1000, HD_RANGE_OK, 1, 2);
  check_range("BYTES=-3", 1000, HD_RANGE_OK, 997, 999);
  check_range("  bytes=1-2  ", 1000, HD_RANGE_OK, 1, 2);
  check_range("bytes= 1-2", 1000, HD_RANGE_OK, 1, 2);
  check_range("bytes=1-2,", 1000, HD_RANGE_OK, 1, 2);
  check_range("bytes=,1-2", 1000, HD_RANGE_OK, 1, 2);
  check_range("bytes=, ,1-2 ,", 1000, HD_RANGE_OK, 1, 2);
}

/* ------------------------------------------------------------------------------------------ */
/* the engine against a real client */

#define PKG_SIZE (3u << 20)
#define SHA "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define ETAG "\"" SHA "\""

typedef struct got {
  int status;
  char head[2048];
  unsigned char *body; /* malloc'd */
  size_t body_len;
  int eof;             /* the server closed after the answer */
} got;

typedef struct efx {
  uv_loop_t loop;
  hd_http_server *s;
  hd_downloads *d;
  uv_async_t done;
  pthread_t th;
  int port;
  char path[64];
  unsigned char *pkg;
  /* the client's record */
  got g[16];
  int ng;
  long stalled_read;    /* bytes the stalled client got in all */
  int stalled_cut;      /* the stalled client saw the connection end */
  /* the engine's reports (loop thread) */
  hd_download_result res[16];
  char reasons[16][16];
  int nres;
  atomic_int timeouts;
} efx;

static void e_serve(void *ud, hd_http_req *r) {
  efx *f = ud;
  hd_download_spec sp = {.path = f->path, .size = PKG_SIZE, .sha256 = SHA, .tenant_num = 7,
                         .tenant = "store1", .app = "com.example", .version = "1.2.3",
                         .device = "dev-1"};
  hd__download_serve(f->d, r, &sp);
}

static void e_report(void *ud, const hd_download_result *res) {
  efx *f = ud;
  if (f->nres < 16) {
    f->res[f->nres] = *res;
    snprintf(f->reasons[f->nres], sizeof f->reasons[0], "%s", res->reason);
    f->nres++;
  }
  if (strcmp(res->reason, "timeout") == 0) atomic_fetch_add(&f->timeouts, 1);
}

static void e_closed(hd_http_server *s) { (void)s; }

static void e_on_done(uv_async_t *a) {
  efx *f = a->data;
  hd__download_stop(f->d);
  hd__http_close(f->s, e_closed);
  uv_close((uv_handle_t *)a, NULL);
}

static int e_connect(int port, int rcvbuf) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) abort();
  if (rcvbuf) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  struct timeval tv = {.tv_sec = 10};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) abort();
  return fd;
}

static int e_send(int fd, const char *req) {
  size_t n = strlen(req), off = 0;
  while (off < n) {
    ssize_t w = send(fd, req + off, n - off, MSG_NOSIGNAL);
    if (w <= 0) return -1;
    off += (size_t)w;
  }
  return 0;
}

/* Reads one answer: the head, then Content-Length bytes (none for HEAD or 304); with
 * want_eof, then waits for the server to close. Bytes past the answer are kept in *pend. */
static void e_read(int fd, got *g, int head_only, int want_eof, char *pend, size_t *npend) {
  size_t cap = 1 << 16, len = *npend;
  char *buf = malloc(cap);
  memcpy(buf, pend, len);
  *npend = 0;
  g->status = -1;
  size_t hlen = 0, blen = 0;
  for (;;) {
    char *end = hlen ? NULL : memmem(buf, len, "\r\n\r\n", 4);
    if (end) {
      hlen = (size_t)(end - buf) + 4;
      size_t cp = hlen < sizeof g->head - 1 ? hlen : sizeof g->head - 1;
      memcpy(g->head, buf, cp);
      g->head[cp] = 0;
      g->status = atoi(g->head + 9);
      const char *cl = strcasestr(g->head, "\r\nContent-Length:");
      blen = cl && !head_only && g->status != 304 ? strtoul(cl + 17, NULL, 10) : 0;
    }
    if (hlen && len >= hlen + blen) break;
    if (len == cap) buf = realloc(buf, cap *= 2);
    ssize_t n = recv(fd, buf + len, cap - len, 0);
    if (n <= 0) {
      free(buf);
      g->status = -1;
      return;
    }
    len += (size_t)n;
  }
  g->body = malloc(blen ? blen : 1);
  memcpy(g->body, buf + hlen, blen);
  g->body_len = blen;
  if (len > hlen + blen) {
    memcpy(pend, buf + hlen + blen, len - hlen - blen);
    *npend = len - hlen - blen;
  }
  free(buf);
  if (want_eof) {
    char b[64];
    g->eof = recv(fd, b, sizeof b, 0) == 0;
  }
}

/* One request on a fresh connection; with want_eof the answer is read to the server's close
 * (a body ends its connection; error answers keep it). */
static void e_one(efx *f, const char *req, int want_eof) {
  int fd = e_connect(f->port, 0);
  char pend[256];
  size_t npend = 0;
  got *g = &f->g[f->ng++];
  if (e_send(fd, req) == 0) e_read(fd, g, 0, want_eof, pend, &npend);
  close(fd);
}

static void *e_client(void *arg) {
  efx *f = arg;
  /* 0: the whole file; 1: a middle range; 2: a suffix range; 3: out of range */
  e_one(f, "GET /pkg HTTP/1.1\r\nHost: x\r\n\r\n", 1);
  e_one(f, "GET /pkg HTTP/1.1\r\nHost: x\r\nRange: bytes=1000-1999\r\n\r\n", 1);
  e_one(f, "GET /pkg HTTP/1.1\r\nHost: x\r\nRange: bytes=-10\r\n\r\n", 1);
  e_one(f, "GET /pkg HTTP/1.1\r\nHost: x\r\nRange: bytes=4000000-\r\n\r\n", 0);
  /* 4, 5, 6: 304, then HEAD, then a resumed GET on the same kept-alive connection */
  {
    int fd = e_connect(f->port, 0);
    char pend[256];
    size_t npend = 0;
    e_send(fd, "GET /pkg HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"zz\", " ETAG "\r\n\r\n");
    e_read(fd, &f->g[f->ng++], 0, 0, pend, &npend);
    e_send(fd, "HEAD /pkg HTTP/1.1\r\nHost: x\r\n\r\n");
    e_read(fd, &f->g[f->ng++], 1, 0, pend, &npend);
    e_send(fd, "GET /pkg HTTP/1.1\r\nHost: x\r\nRange: bytes=3000000-\r\nIf-Range: " ETAG
               "\r\n\r\n");
    e_read(fd, &f->g[f->ng++], 0, 1, pend, &npend);
    close(fd);
  }
  /* 7: If-Range naming another version: the whole file */
  e_one(f, "GET /pkg HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\nIf-Range: \"other\"\r\n\r\n", 1);
  /* A client that reads a little, then nothing: cut at the send timeout. */
  int fd = e_connect(f->port, 4096);
  e_send(fd, "GET /pkg HTTP/1.1\r\nHost: x\r\n\r\n");
  char b[4096];
  ssize_t n = recv(fd, b, sizeof b, 0);
  f->stalled_read = n > 0 ? n : 0;
  for (int i = 0; i < 2000 && atomic_load(&f->timeouts) == 0; i++) usleep(10000);
  for (;;) {
    n = recv(fd, b, sizeof b, 0);
    if (n <= 0) {
      f->stalled_cut = n == 0 || errno == ECONNRESET;
      break;
    }
    f->stalled_read += n;
  }
  close(fd);
  uv_async_send(&f->done);
  return NULL;
}

static void check_body(efx *f, const got *g, size_t off, size_t len) {
  assert_int_equal(g->body_len, len);
  assert_memory_equal(g->body, f->pkg + off, len);
}

static void test_engine(void **state) {
  (void)state;
  efx *f = calloc(1, sizeof *f);
  f->pkg = malloc(PKG_SIZE);
  for (size_t i = 0; i < PKG_SIZE; i++) f->pkg[i] = (unsigned char)(i * 7 + (i >> 11));
  snprintf(f->path, sizeof f->path, "/tmp/herald-dl-XXXXXX");
  int fd = mkstemp(f->path);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, f->pkg, PKG_SIZE), PKG_SIZE);
  close(fd);

  assert_int_equal(uv_loop_init(&f->loop), 0);
  hd_http_opts ho = {.idle_timeout_ms = 10000, .max_connections = 100};
  assert_int_equal(hd__http_new(&f->loop, &ho, &f->s), 0);
  /* Long enough that a client thread descheduled on a loaded machine is not cut; the stalled
   * client waits for its cut. */
  hd_download_opts dopt = {.max_active = 8, .send_timeout_ms = 2000};
  assert_int_equal(hd__download_new(&f->loop, &dopt, &f->d), 0);
  assert_int_equal(hd__download_subscribe(f->d, e_report, f), 0);
  assert_int_equal(hd__http_route(f->s, "GET", "/pkg", e_serve, f), 0);
  assert_int_equal(hd__http_route(f->s, "HEAD", "/pkg", e_serve, f), 0);
  assert_int_equal(hd__http_listen(f->s, "127.0.0.1", 0), 0);
  f->port = hd__http_port(f->s);
  assert_int_equal(uv_async_init(&f->loop, &f->done, e_on_done), 0);
  f->done.data = f;
  assert_int_equal(pthread_create(&f->th, NULL, e_client, f), 0);
  assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(pthread_join(f->th, NULL), 0);
  hd__http_free(f->s);
  hd__download_free(f->d);
  assert_int_equal(uv_loop_close(&f->loop), 0);
  unlink(f->path);

  assert_int_equal(f->ng, 8);
  got *g = f->g;
  /* the whole file, with the store in the name and header, then the close */
  assert_int_equal(g[0].status, 200);
  check_body(f, &g[0], 0, PKG_SIZE);
  assert_true(g[0].eof);
  assert_non_null(strstr(g[0].head, "\r\nETag: " ETAG "\r\n"));
  assert_non_null(strstr(g[0].head, "\r\nX-Herald-Store: store1\r\n"));
  assert_non_null(strstr(g[0].head,
                         "filename=\"com.example-1.2.3.store1.pkg\""));
  assert_non_null(strstr(g[0].head, "\r\nAccept-Ranges: bytes\r\n"));
  assert_non_null(strstr(g[0].head, "\r\nConnection: close\r\n"));
  /* ranges */
  assert_int_equal(g[1].status, 206);
  check_body(f, &g[1], 1000, 1000);
  assert_true(g[1].eof);
  assert_non_null(strstr(g[1].head, "\r\nContent-Range: bytes 1000-1999/3145728\r\n"));
  assert_int_equal(g[2].status, 206);
  check_body(f, &g[2], PKG_SIZE - 10, 10);
  assert_int_equal(g[3].status, 416);
  assert_non_null(strstr(g[3].head, "\r\nContent-Range: bytes */3145728\r\n"));
  /* 304 and HEAD keep the connection; the resumed GET after them gets the tail */
  assert_int_equal(g[4].status, 304);
  assert_non_null(strstr(g[4].head, "\r\nETag: " ETAG "\r\n"));
  assert_int_equal(g[5].status, 200);
  assert_non_null(strstr(g[5].head, "\r\nContent-Length: 3145728\r\n"));
  assert_null(strstr(g[5].head, "Connection: close"));
  assert_int_equal(g[6].status, 206);
  check_body(f, &g[6], 3000000, PKG_SIZE - 3000000);
  assert_true(g[6].eof);
  /* If-Range with another tag: the Range is ignored */
  assert_int_equal(g[7].status, 200);
  check_body(f, &g[7], 0, PKG_SIZE);
  /* the stalled client was cut before the end */
  assert_true(f->stalled_cut);
  assert_true(f->stalled_read < (long)PKG_SIZE);

  /* What the engine reported: one result per body sent, in order of their ends. The
   * stalled one ends last (after its timeout), the others in request order. */
  assert_int_equal(f->nres, 6);
  const int complete[] = {1, 0, 1, 1, 1, 0};
  const uint64_t bytes[] = {PKG_SIZE, 1000, 10, PKG_SIZE - 3000000, PKG_SIZE};
  for (int i = 0; i < 6; i++) {
    if (f->res[i].complete != complete[i])
      print_error("result %d: complete %d reason %s\n", i, f->res[i].complete, f->reasons[i]);
    assert_int_equal(f->res[i].complete, complete[i]);
    if (i < 5) {
      assert_string_equal(f->reasons[i], "complete");
      assert_int_equal(f->res[i].bytes, bytes[i]);
    }
    assert_int_equal(f->res[i].tenant_num, 7);
  }
  assert_string_equal(f->reasons[5], "timeout");
  assert_true(f->res[5].bytes < PKG_SIZE);
  for (int i = 0; i < f->ng; i++) free(f->g[i].body);
  free(f->pkg);
  free(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_range_first_middle_last),
      cmocka_unit_test(test_range_suffix),
      cmocka_unit_test(test_range_unsatisfiable),
      cmocka_unit_test(test_range_ignored),
      cmocka_unit_test(test_range_syntax_tolerance),
      cmocka_unit_test(test_engine),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
