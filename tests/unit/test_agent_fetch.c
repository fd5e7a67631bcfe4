/* test_agent_fetch.c — herald-agent's HTTP client thread (clients/agent/fetch.h) against a
 * real HTTP server: Python's http.server, with Range / If-Range support written below, started
 * on a free loopback port for the test run. Whole downloads; resume from a partial file (the
 * Range and If-Range the server saw are checked); a changed validator answered with 200 starts
 * the file over; 416 and a 206 at the wrong offset leave the file alone; a connection cut
 * mid-body keeps what came and the next attempt resumes from there; error bodies never reach
 * the file; JSON POST to memory with the bearer token; a stalled transfer is dropped by the
 * stall limit, and one cancelled or still running at fetch_close() ends canceled. Every test
 * closes its loop cleanly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "fetch.h"

extern char **environ;

/* The package: PKG_LEN bytes, byte i = (i * 7 + 3) % 251, the same in both languages. */
#define PKG_LEN 300000

static const char SERVER_PY[] =
    "import http.server, socketserver, sys, time, json\n"
    "N = 300000\n"
    "PKG = bytes((i * 7 + 3) % 251 for i in range(N))\n"
    "ETAG = '\"v1\"'\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    protocol_version = 'HTTP/1.1'\n"
    "    def log_message(self, *a): pass\n"
    "    def send(self, code, body, extra=()):\n"
    "        self.send_response(code)\n"
    "        self.send_header('Content-Length', str(len(body)))\n"
    "        for k, v in extra: self.send_header(k, v)\n"
    "        self.send_header('X-Seen-Range', self.headers.get('Range', '-'))\n"
    "        self.send_header('X-Seen-If-Range', self.headers.get('If-Range', '-'))\n"
    "        self.end_headers()\n"
    "        self.wfile.write(body)\n"
    "    def do_GET(self):\n"
    "        p = self.path.split('?')[0]\n"
    "        rng = self.headers.get('Range')\n"
    "        ifr = self.headers.get('If-Range')\n"
    "        common = [('ETag', ETAG), ('X-Herald-Store', 'teststore'),\n"
    "                  ('Content-Type', 'application/octet-stream')]\n"
    "        if p == '/missing':\n"
    "            return self.send(404, b'{\"error\":\"not_found\"}')\n"
    "        if p == '/badrange':\n"
    "            return self.send(206, PKG[:100], common + [('Content-Range', 'bytes 0-99/%d' % N)])\n"
    "        if p == '/stall':\n"
    "            self.send_response(200)\n"
    "            self.send_header('Content-Length', str(N))\n"
    "            self.end_headers()\n"
    "            self.wfile.write(PKG[:1000]); self.wfile.flush()\n"
    "            time.sleep(30)\n"
    "            return\n"
    "        if p not in ('/pkg', '/cut'):\n"
    "            return self.send(404, b'no')\n"
    "        # /pkg honours Range; the validator must match for If-Range to allow a range\n"
    "        start = 0\n"
    "        if rng and rng.startswith('bytes=') and rng.endswith('-') and (ifr is None or ifr == ETAG):\n"
    "            start = int(rng[6:-1])\n"
    "            if start >= N:\n"
    "                return self.send(416, b'', [('Content-Range', 'bytes */%d' % N)])\n"
    "        body = PKG[start:]\n"
    "        hdrs = list(common)\n"
    "        code = 200\n"
    "        if start:\n"
    "            code = 206\n"
    "            hdrs.append(('Content-Range', 'bytes %d-%d/%d' % (start, N - 1, N)))\n"
    "        if p == '/cut':  # the headers promise everything, half comes, the line drops\n"
    "            self.send_response(code)\n"
    "            self.send_header('Content-Length', str(len(body)))\n"
    "            for k, v in hdrs: self.send_header(k, v)\n"
    "            self.end_headers()\n"
    "            self.wfile.write(body[:len(body) // 2]); self.wfile.flush()\n"
    "            self.close_connection = True\n"
    "            return\n"
    "        self.send(code, body, hdrs)\n"
    "    def do_POST(self):\n"
    "        n = int(self.headers.get('Content-Length', '0'))\n"
    "        body = self.rfile.read(n)\n"
    "        out = json.dumps({'auth': self.headers.get('Authorization'),\n"
    "                          'type': self.headers.get('Content-Type'),\n"
    "                          'got': json.loads(body)}).encode()\n"
    "        self.send(201, out, [('Content-Type', 'application/json')])\n"
    "class S(socketserver.ThreadingMixIn, http.server.HTTPServer):\n"
    "    daemon_threads = True\n"
    "s = S(('127.0.0.1', 0), H)\n"
    "print(s.server_address[1], flush=True)\n"
    "s.serve_forever()\n";

static pid_t server_pid;
static int server_port;
static char dir[64];

static int setup_all(void **state) {
  int pfd[2];
  if (pipe(pfd)) return -1;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
  posix_spawn_file_actions_addclose(&fa, pfd[0]);
  char *argv[] = {"python3", "-c", (char *)SERVER_PY, NULL};
  if (posix_spawn(&server_pid, "/usr/bin/python3", &fa, NULL, argv, environ)) return -1;
  posix_spawn_file_actions_destroy(&fa);
  close(pfd[1]);
  FILE *f = fdopen(pfd[0], "r");
  if (!f || fscanf(f, "%d", &server_port) != 1) return -1;
  fclose(f);
  snprintf(dir, sizeof dir, "/tmp/herald-fetch-ut-XXXXXX");
  if (!mkdtemp(dir)) return -1;
  return curl_global_init(CURL_GLOBAL_DEFAULT) ? -1 : 0;
}

static int teardown_all(void **state) {
  kill(server_pid, SIGTERM);
  waitpid(server_pid, NULL, 0);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  curl_global_cleanup();
  return system(cmd) ? -1 : 0;
}

/* ---- helpers ---- */
typedef struct got {
  int done;
  fetch_result r;
  char body[4096];
} got;

static void on_done(void *ud, const fetch_result *r) {
  got *g = ud;
  g->done++;
  g->r = *r;
  snprintf(g->body, sizeof g->body, "%s", r->body);
  g->r.body = g->body;
}

static void url(char *out, size_t cap, const char *path) {
  snprintf(out, cap, "http://127.0.0.1:%d%s", server_port, path);
}

static void path_of(char *out, size_t cap, const char *name) {
  snprintf(out, cap, "%s/%s", dir, name);
}

static unsigned char pkg_byte(size_t i) { return (unsigned char)((i * 7 + 3) % 251); }

/* Write the package's first n bytes (or junk) as a partial file. */
static void write_partial(const char *path, size_t n, int junk) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  for (size_t i = 0; i < n; i++) fputc(junk ? 0xEE : pkg_byte(i), f);
  fclose(f);
}

/* 1 if the file is exactly the package. */
static int file_is_pkg(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return 0;
  size_t i = 0;
  int c, ok = 1;
  while ((c = fgetc(f)) != EOF) {
    if (i >= PKG_LEN || c != pkg_byte(i)) ok = 0;
    i++;
  }
  fclose(f);
  return ok && i == PKG_LEN;
}

static int64_t size_of(const char *path) {
  struct stat st;
  return stat(path, &st) ? -1 : st.st_size;
}

/* One request on a fresh loop, run to its callback; the loop closes cleanly. */
static void run_one(const fetch_req *rq, got *g) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  fetch *f;
  assert_int_equal(fetch_new(&loop, &f), 0);
  memset(g, 0, sizeof *g);
  assert_int_equal(fetch_start(f, rq, on_done, g, NULL), 0);
  while (!g->done) uv_run(&loop, UV_RUN_ONCE);
  fetch_close(f);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&loop), 0);
  assert_int_equal(g->done, 1);
}

/* ---- tests ---- */
static void test_whole_download(void **state) {
  char u[128], p[128];
  got g;
  url(u, sizeof u, "/pkg?device=d1");
  path_of(p, sizeof p, "whole.part");
  fetch_req rq = {.url = u, .bearer = "tok", .file = p, .if_range = "\"v1\""};
  run_one(&rq, &g);
  assert_int_equal(g.r.curl_code, 0);
  assert_int_equal(g.r.status, 200);
  assert_int_equal(g.r.offset, 0);
  assert_int_equal(g.r.received, PKG_LEN);
  assert_int_equal(g.r.file_size, PKG_LEN);
  assert_string_equal(g.r.etag, "\"v1\"");
  assert_string_equal(g.r.store, "teststore");
  assert_true(file_is_pkg(p));
}

static void test_resume_from_partial(void **state) {
  char u[128], p[128];
  got g;
  url(u, sizeof u, "/pkg");
  path_of(p, sizeof p, "resume.part");
  write_partial(p, 123457, 0);
  fetch_req rq = {.url = u, .file = p, .if_range = "\"v1\""};
  run_one(&rq, &g);
  assert_int_equal(g.r.curl_code, 0);
  assert_int_equal(g.r.status, 206);
  assert_int_equal(g.r.offset, 123457);
  assert_int_equal(g.r.received, PKG_LEN - 123457);
  assert_int_equal(g.r.restarted, 0);
  assert_true(file_is_pkg(p));
}

static void test_changed_validator_starts_over(void **state) {
  char u[128], p[128];
  got g;
  url(u, sizeof u, "/pkg");
  path_of(p, sizeof p, "changed.part");
  write_partial(p, 5000, 1); /* bytes of some other package */
  fetch_req rq = {.url = u, .file = p, .if_range = "\"v0\""};
  run_one(&rq, &g);
  assert_int_equal(g.r.curl_code, 0);
  assert_int_equal(g.r.status, 200);
  assert_int_equal(g.r.offset, 5000);
  assert_int_equal(g.r.restarted, 1);
  assert_int_equal(g.r.file_size, PKG_LEN);
  assert_true(file_is_pkg(p));

  /* restart = 1: no Range at all, the file truncated first. */
  write_partial(p, 7000, 1);
  rq.restart = 1;
  run_one(&rq, &g);
  assert_int_equal(g.r.status, 200);
  assert_int_equal(g.r.offset, 0);
  assert_int_equal(g.r.restarted, 0);
  assert_true(file_is_pkg(p));
}

static void test_416_and_bad_range_leave_file(void **state) {
  char u[128], p[128];
  got g;
  url(u, sizeof u, "/pkg");
  path_of(p, sizeof p, "full.part");
  write_partial(p, PKG_LEN, 0);
  fetch_req rq = {.url = u, .file = p, .if_range = "\"v1\""};
  run_one(&rq, &g);
  assert_int_equal(g.r.curl_code, 0);
  assert_int_equal(g.r.status, 416);
  assert_int_equal(g.r.file_size, PKG_LEN);
  assert_true(file_is_pkg(p));

  url(u, sizeof u, "/badrange");
  path_of(p, sizeof p, "bad.part");
  write_partial(p, 1000, 0);
  rq.url = u;
  rq.file = p;
  run_one(&rq, &g);
  assert_int_equal(g.r.range_mismatch, 1);
  assert_int_not_equal(g.r.curl_code, 0);
  assert_int_equal(g.r.file_size, 1000);
  assert_int_equal(g.r.received, 0);
}

static void test_cut_then_resume(void **state) {
  char u[128], p[128];
  got g;
  url(u, sizeof u, "/cut");
  path_of(p, sizeof p, "cut.part");
  unlink(p);
  fetch_req rq = {.url = u, .file = p, .if_range = "\"v1\""};
  run_one(&rq, &g);
  assert_int_not_equal(g.r.curl_code, 0); /* a partial file: no complete answer */
  assert_int_equal(g.r.status, 200);
  assert_int_equal(g.r.received, PKG_LEN / 2);
  assert_int_equal(size_of(p), PKG_LEN / 2);
  /* Cut again, mid-way through the rest. */
  run_one(&rq, &g);
  assert_int_equal(g.r.status, 206);
  assert_int_equal(g.r.offset, PKG_LEN / 2);
  int64_t have = size_of(p);
  assert_int_equal(have, PKG_LEN / 2 + (PKG_LEN - PKG_LEN / 2) / 2);
  url(u, sizeof u, "/pkg");
  run_one(&rq, &g);
  assert_int_equal(g.r.curl_code, 0);
  assert_int_equal(g.r.status, 206);
  assert_int_equal(g.r.offset, have);
  assert_true(file_is_pkg(p));
}

static void test_error_body_not_in_file(void **state) {
  char u[128], p[128];
  got g;
  url(u, sizeof u, "/missing");
  path_of(p, sizeof p, "missing.part");
  write_partial(p, 10, 0);
  fetch_req rq = {.url = u, .file = p};
  run_one(&rq, &g);
  assert_int_equal(g.r.curl_code, 0);
  assert_int_equal(g.r.status, 404);
  assert_int_equal(g.r.received, 0);
  assert_int_equal(size_of(p), 10);
  assert_string_equal(g.body, "{\"error\":\"not_found\"}");
}

static void test_json_post_to_memory(void **state) {
  char u[128];
  got g;
  url(u, sizeof u, "/v1/devices/d1/update-check");
  fetch_req rq = {.method = "POST", .url = u, .bearer = "acme.1.0.mac",
                  .json = "{\"inventory\":[]}", .timeout_s = 10};
  run_one(&rq, &g);
  assert_int_equal(g.r.curl_code, 0);
  assert_int_equal(g.r.status, 201);
  assert_string_equal(g.body, "{\"auth\": \"Bearer acme.1.0.mac\", \"type\": "
                              "\"application/json\", \"got\": {\"inventory\": []}}");

  /* Bodies past max_body fail the request rather than being cut silently. */
  rq.max_body = 10;
  run_one(&rq, &g);
  assert_int_not_equal(g.r.curl_code, 0);
}

static void test_stall_cancel_close(void **state) {
  char u[128], p[128];
  got g;
  url(u, sizeof u, "/stall");
  path_of(p, sizeof p, "stall.part");
  unlink(p);
  fetch_req rq = {.url = u, .file = p, .stall_s = 1};
  run_one(&rq, &g);
  assert_int_equal(g.r.curl_code, CURLE_OPERATION_TIMEDOUT);
  assert_int_equal(g.r.received, 1000);
  assert_int_equal(g.r.canceled, 0);

  /* Cancelled while stalled; then one left running when the client closes. */
  uv_loop_t loop;
  uv_loop_init(&loop);
  fetch *f;
  assert_int_equal(fetch_new(&loop, &f), 0);
  got a = {0}, b = {0};
  fetch_op *op;
  char p2[128];
  path_of(p2, sizeof p2, "stall2.part");
  unlink(p);
  unlink(p2);
  fetch_req rq2 = rq;
  rq.stall_s = rq2.stall_s = 60;
  rq2.file = p2;
  assert_int_equal(fetch_start(f, &rq, on_done, &a, &op), 0);
  assert_int_equal(fetch_start(f, &rq2, on_done, &b, NULL), 0);
  while (size_of(p) < 1000 || size_of(p2) < 1000) uv_sleep(10); /* both are in the stall */
  fetch_cancel(op);
  while (!a.done) uv_run(&loop, UV_RUN_ONCE);
  assert_int_equal(a.r.canceled, 1);
  assert_int_equal(b.done, 0);
  fetch_close(f);
  assert_int_equal(b.done, 1);
  assert_int_equal(b.r.canceled, 1);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_unreachable(void **state) {
  got g;
  /* A port nobody listens on: bind one, close it. */
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
  socklen_t al = sizeof a;
  assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof a), 0);
  getsockname(s, (struct sockaddr *)&a, &al);
  close(s);
  char u[128], p[128];
  snprintf(u, sizeof u, "http://127.0.0.1:%d/pkg", ntohs(a.sin_port));
  path_of(p, sizeof p, "unreach.part");
  fetch_req rq = {.url = u, .file = p};
  run_one(&rq, &g);
  assert_int_equal(g.r.curl_code, CURLE_COULDNT_CONNECT);
  assert_string_equal(g.r.error, curl_easy_strerror(CURLE_COULDNT_CONNECT));
  assert_int_equal(g.r.status, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_whole_download),
      cmocka_unit_test(test_resume_from_partial),
      cmocka_unit_test(test_changed_validator_starts_over),
      cmocka_unit_test(test_416_and_bad_range_leave_file),
      cmocka_unit_test(test_cut_then_resume),
      cmocka_unit_test(test_error_body_not_in_file),
      cmocka_unit_test(test_json_post_to_memory),
      cmocka_unit_test(test_stall_cancel_close),
      cmocka_unit_test(test_unreachable),
  };
  return cmocka_run_group_tests(tests, setup_all, teardown_all);
}
