/* updates_bench.c — herald-bench `updates`: N agents doing update-check, download and install
 * report at once, simulated in-process on libuv like the longpoll devices (no herald-agent
 * processes).
 *
 *   herald-bench updates [--devices N] [--package-size B | --release V --app A] [--stall K]
 *                        [--threads T] [--parallel P]
 *
 * 1. A release of B random bytes (default 4 MiB) is uploaded through the HTTP API with the
 *    publish key (POST /v1/apps/APP/releases?version=1.0.<ms>), or --release V of --app A is
 *    used as it is. Without --app, APP is a fresh app of this run (upd-<tag>): no device of an
 *    earlier run has it, so the upload sends no release notices while we measure.
 * 2. N devices (and K) are registered for APP (prov.h).
 * 3. --stall K: K more agents check, start their download and stop reading after the first
 *    bytes, on sockets with a small receive buffer so the broker's sendfile really blocks on
 *    them; they stay stalled while the N run, and their state is reported at the end.
 * 4. At t0 every agent sends update-check with APP at version "0" in its inventory (so the
 *    newest release is offered as an upgrade; at most P checks in flight), downloads the offered
 *    package as soon as the answer is in, hashes it as it arrives (SHA-256, OpenSSL EVP),
 *    compares size and digest with the offer and reports the install as the agent does: success,
 *    or failure with the agent's reasons (sha256_mismatch, download_failed: ...). An agent is
 *    done when its report is acknowledged (durable). A 503 (no download slot) is retried after
 *    its Retry-After, and counted.
 *
 * Reported: downloads/s and bytes/s (t0 to the last download's end), the spread of the agents'
 * completion times from t0 and of their download times, failures by kind, the broker's own counts
 * (GET /v1/reports), broker CPU and RSS. Loopback only. Benchmarks measure; they never assert.
 *
 * Memory: a package is never held by the client; each download is hashed chunk by chunk from one
 * 64 KiB read buffer per thread, so N agents cost N sockets, not N packages.
 */
#include <http_parser.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "httpc.h"
#include "plot.h"
#include "prov.h"

/* ================= one streamed HTTP exchange per connection ================= */
/* The request (head, and a body the caller keeps alive) goes out on a fresh connection; the
 * answer is parsed with http-parser as it arrives: 2xx body bytes go to on_body (not kept),
 * the start of any other body is kept in text. on_end runs once, with the HTTP status or a
 * negative libuv error; the handle then closes on its own (x->open drops to 0 when it has). */
typedef struct xfer xfer;
typedef void (*xfer_body_cb)(xfer *x, const char *at, size_t n);
typedef void (*xfer_end_cb)(xfer *x, int status);

struct xfer {
  uv_tcp_t tcp;
  uv_connect_t creq;
  uv_write_t wreq;
  http_parser parser;
  char *head;
  size_t head_len;
  const char *body;
  size_t body_len;
  int status;       /* HTTP status once the head is in */
  int retry_after;  /* the answer's Retry-After, seconds (0: none) */
  int in_ra;        /* the header being parsed is Retry-After */
  int stall;        /* stop reading after the first body bytes */
  int stalled, ended, open;
  uint64_t got;     /* body bytes received */
  char text[2048];
  size_t text_len;
  xfer_body_cb on_body;
  xfer_end_cb on_end;
  void *ud;
};

static void xfer_closed(uv_handle_t *h) {
  xfer *x = h->data;
  free(x->head);
  x->head = NULL;
  x->open = 0;
}

/* Close without calling on_end (shutting down, or done). */
static void xfer_close(xfer *x) {
  x->ended = 1;
  if (x->open && !uv_is_closing((uv_handle_t *)&x->tcp))
    uv_close((uv_handle_t *)&x->tcp, xfer_closed);
}

static void xfer_finish(xfer *x, int status) {
  if (x->ended) return;
  x->ended = 1;
  x->on_end(x, status);
  xfer_close(x);
}

static int x_headers_done(http_parser *p) {
  ((xfer *)p->data)->status = (int)p->status_code;
  return 0;
}

static int x_hfield(http_parser *p, const char *at, size_t n) {
  ((xfer *)p->data)->in_ra = n == 11 && strncasecmp(at, "Retry-After", 11) == 0;
  return 0;
}

static int x_hvalue(http_parser *p, const char *at, size_t n) {
  xfer *x = p->data;
  if (x->in_ra) {
    char b[16];
    snprintf(b, sizeof b, "%.*s", (int)(n < 15 ? n : 15), at);
    x->retry_after = atoi(b);
  }
  return 0;
}

static int x_body(http_parser *p, const char *at, size_t n) {
  xfer *x = p->data;
  x->got += n;
  if (x->on_body && x->status / 100 == 2) {
    x->on_body(x, at, n);
  } else {
    size_t room = sizeof x->text - 1 - x->text_len;
    if (n > room) n = room;
    memcpy(x->text + x->text_len, at, n);
    x->text_len += n;
    x->text[x->text_len] = 0;
  }
  return 0;
}

static int x_complete(http_parser *p) {
  xfer_finish(p->data, ((xfer *)p->data)->status);
  return 0;
}

static const http_parser_settings x_settings = {
    .on_headers_complete = x_headers_done, .on_header_field = x_hfield,
    .on_header_value = x_hvalue, .on_body = x_body, .on_message_complete = x_complete};

static void x_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b) {
  static __thread char buf[65536];
  b->base = buf;
  b->len = sizeof buf;
}

static void x_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  xfer *x = s->data;
  if (x->ended) return;
  if (n < 0) {
    if (n == UV_EOF) http_parser_execute(&x->parser, &x_settings, NULL, 0);
    xfer_finish(x, (int)n);
    return;
  }
  if (n == 0) return; /* EAGAIN; http-parser would take a zero length for EOF */
  size_t used = http_parser_execute(&x->parser, &x_settings, b->base, (size_t)n);
  if (x->ended) return;
  if (used != (size_t)n) {
    xfer_finish(x, UV_EPROTO);
    return;
  }
  if (x->stall && x->got > 0 && !x->stalled) {
    x->stalled = 1;
    uv_read_stop(s);
  }
}

static void x_written(uv_write_t *w, int status) {
  xfer *x = w->data;
  if (status && !x->ended) xfer_finish(x, status);
}

static void x_connected(uv_connect_t *r, int status) {
  xfer *x = r->data;
  if (x->ended) return;
  if (status) {
    xfer_finish(x, status);
    return;
  }
  uv_buf_t bufs[2] = {uv_buf_init(x->head, (unsigned)x->head_len),
                      uv_buf_init((char *)x->body, (unsigned)x->body_len)};
  x->wreq.data = x;
  int rc = uv_write(&x->wreq, (uv_stream_t *)&x->tcp, bufs, x->body_len ? 2 : 1, x_written);
  if (!rc) rc = uv_read_start((uv_stream_t *)&x->tcp, x_alloc, x_read);
  if (rc) xfer_finish(x, rc);
}

/* Start the exchange; head is copied, body (may be NULL) must outlive it. rcvbuf > 0 sets a
 * small SO_RCVBUF before connecting (a stalled client). x must not be open. Returns 0 or a
 * libuv error (then on_end is not called). */
static int xfer_start(xfer *x, uv_loop_t *loop, const struct sockaddr_in *addr, const char *head,
                      const char *body, size_t body_len, int rcvbuf) {
  xfer_body_cb ob = x->on_body;
  xfer_end_cb oe = x->on_end;
  void *ud = x->ud;
  int stall = x->stall;
  memset(x, 0, sizeof *x);
  x->on_body = ob;
  x->on_end = oe;
  x->ud = ud;
  x->stall = stall;
  x->head = strdup(head);
  x->head_len = strlen(head);
  x->body = body;
  x->body_len = body_len;
  http_parser_init(&x->parser, HTTP_RESPONSE);
  x->parser.data = x;
  int rc = uv_tcp_init_ex(loop, &x->tcp, AF_INET);
  if (rc) {
    free(x->head);
    x->head = NULL;
    return rc;
  }
  x->open = 1;
  x->tcp.data = x;
  uv_tcp_nodelay(&x->tcp, 1);
  if (rcvbuf > 0) uv_recv_buffer_size((uv_handle_t *)&x->tcp, &rcvbuf);
  x->creq.data = x;
  rc = uv_tcp_connect(&x->creq, &x->tcp, (const struct sockaddr *)addr, x_connected);
  if (rc) {
    x->ended = 1;
    uv_close((uv_handle_t *)&x->tcp, xfer_closed);
  }
  return rc;
}

/* ================= the agents ================= */
enum { F_NONE, F_CHECK, F_DOWNLOAD, F_VERIFY, F_REPORT, F_UNFINISHED, F_KINDS };
static const char *const fail_names[F_KINDS] = {"none", "check", "download", "verify", "report",
                                                "unfinished"};

typedef struct ushared {
  opts *o;
  const char *app;
  struct sockaddr_in addr;
  atomic_int stopping;
} ushared;

typedef struct agent agent;

/* The agents of one loop: a client thread's, or the stalled ones on the main thread. */
typedef struct uctx {
  ushared *sh;
  uv_loop_t loop;
  uv_async_t stop;
  pthread_t thread;
  agent *ag;
  long n, next, inflight, maxinflight;
  _Atomic uint64_t bytes;
  atomic_long finished, busy;
} uctx;

struct agent {
  uctx *cx;
  hb_reg reg;
  hb_conn *api;
  xfer dl;
  uv_timer_t retry;
  int retry_init;
  EVP_MD_CTX *md;
  int stall, ok, fail, finished, checking;
  char version[72], sha256[65], path[512];
  uint64_t size;
  uint64_t t_dl0, t_dl1, t_done; /* ns */
  char why[128];
};

static void agent_download(agent *a);

static void agent_end(agent *a) {
  if (a->finished) return;
  a->finished = 1;
  if (a->md) {
    EVP_MD_CTX_free(a->md);
    a->md = NULL;
  }
  if (!a->t_done) a->t_done = now_ns();
  atomic_fetch_add(&a->cx->finished, 1);
}

static void agent_fail(agent *a, int kind, const char *why) {
  if (!a->fail) {
    a->fail = kind;
    snprintf(a->why, sizeof a->why, "%s", why);
  }
}

static void pace(uctx *cx);

static void check_settled(agent *a) {
  if (!a->checking) return;
  a->checking = 0;
  a->cx->inflight--;
  pace(a->cx);
}

static void on_reported(hb_conn *c, void *ud, int status, const char *body, size_t len) {
  agent *a = ud;
  if (atomic_load(&a->cx->sh->stopping)) return;
  if (status == 201) {
    if (!a->fail) a->ok = 1;
  } else {
    char why[96];
    snprintf(why, sizeof why, "install-reports: HTTP %d", status);
    agent_fail(a, F_REPORT, why);
  }
  a->t_done = now_ns();
  agent_end(a);
}

/* The install report, as herald-agent sends it. */
static void agent_report(agent *a, const char *reason) {
  char path[256], body[512];
  snprintf(path, sizeof path, "/v1/devices/%s/install-reports", a->reg.id);
  json_t *j = json_pack("{s:s, s:s, s:s, s:s}", "app", a->cx->sh->app, "version", a->version,
                        "result", reason ? "failure" : "success", "action", "upgrade");
  if (reason) json_object_set_new(j, "reason", json_string(reason));
  char *s = json_dumps(j, JSON_COMPACT);
  snprintf(body, sizeof body, "%s", s);
  free(s);
  json_decref(j);
  if (hb_conn_request(a->api, "POST", path, a->reg.token, body, on_reported, a))
    on_reported(a->api, a, -1, "", 0);
}

static void to_hex(const unsigned char *d, unsigned n, char *out) {
  for (unsigned i = 0; i < n; i++) sprintf(out + 2 * i, "%02x", d[i]);
  out[2 * n] = 0;
}

static void on_dl_body(xfer *x, const char *at, size_t n) {
  agent *a = x->ud;
  EVP_DigestUpdate(a->md, at, n);
  atomic_fetch_add_explicit(&a->cx->bytes, n, memory_order_relaxed);
}

static void on_retry(uv_timer_t *t) {
  agent *a = t->data;
  if (atomic_load(&a->cx->sh->stopping)) return;
  if (a->dl.open) { /* the last connection is still closing */
    uv_timer_start(t, on_retry, 10, 0);
    return;
  }
  agent_download(a);
}

static void on_dl_end(xfer *x, int status) {
  agent *a = x->ud;
  if (atomic_load(&a->cx->sh->stopping)) return;
  if (status == 503) { /* every download slot taken: come back as told */
    atomic_fetch_add(&a->cx->busy, 1);
    if (!a->retry_init) {
      uv_timer_init(&a->cx->loop, &a->retry);
      a->retry.data = a;
      a->retry_init = 1;
    }
    uv_timer_start(&a->retry, on_retry, (uint64_t)(x->retry_after > 0 ? x->retry_after : 1) * 1000,
                   0);
    return;
  }
  a->t_dl1 = now_ns();
  char why[128];
  const char *reason = NULL;
  if (status == UV_EPROTO) {
    snprintf(why, sizeof why, "download_failed: %s (HTTP %d, %s after %llu bytes)",
             uv_err_name(status), x->status, http_errno_name(HTTP_PARSER_ERRNO(&x->parser)),
             (unsigned long long)x->got);
    agent_fail(a, F_DOWNLOAD, why);
    reason = why;
  } else if (status < 0) {
    snprintf(why, sizeof why, "download_failed: %s", uv_err_name(status));
    agent_fail(a, F_DOWNLOAD, why);
    reason = why;
  } else if (status != 200) {
    snprintf(why, sizeof why, "download_failed: HTTP %d", status);
    agent_fail(a, F_DOWNLOAD, why);
    reason = why;
  } else {
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned dl = 0;
    char hex[2 * EVP_MAX_MD_SIZE + 1];
    EVP_DigestFinal_ex(a->md, d, &dl);
    to_hex(d, dl, hex);
    if (x->got != a->size || strcmp(hex, a->sha256) != 0) {
      agent_fail(a, F_VERIFY, "sha256_mismatch");
      reason = "sha256_mismatch";
    }
  }
  if (a->stall) { /* it got through anyway: nothing more to do */
    agent_end(a);
    return;
  }
  agent_report(a, reason);
}

static void agent_download(agent *a) {
  uctx *cx = a->cx;
  char head[1024];
  snprintf(head, sizeof head,
           "GET %s%sdevice=%s HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer %s\r\n\r\n", a->path,
           strchr(a->path, '?') ? "&" : "?", a->reg.id, a->reg.token);
  if (!a->md) a->md = EVP_MD_CTX_new();
  EVP_DigestInit_ex(a->md, EVP_sha256(), NULL);
  if (!a->t_dl0) a->t_dl0 = now_ns();
  a->dl.on_body = on_dl_body;
  a->dl.on_end = on_dl_end;
  a->dl.ud = a;
  a->dl.stall = a->stall;
  int rc = xfer_start(&a->dl, &cx->loop, &cx->sh->addr, head, NULL, 0, a->stall ? 8192 : 0);
  if (rc) on_dl_end(&a->dl, rc);
}

/* The path of the offer's url: relative ("/v1/...") or absolute (public_url); we always go to
 * the broker we were pointed at. */
static void url_path(const char *url, char *out, size_t len) {
  const char *p = strstr(url, "://");
  p = p ? strchr(p + 3, '/') : url;
  snprintf(out, len, "%s", p ? p : "/");
}

static void on_checked(hb_conn *c, void *ud, int status, const char *body, size_t len) {
  agent *a = ud;
  if (atomic_load(&a->cx->sh->stopping)) return;
  check_settled(a);
  char why[128];
  if (status != 200) {
    snprintf(why, sizeof why, "update-check: HTTP %d %.60s", status, body);
    agent_fail(a, F_CHECK, why);
    agent_end(a);
    return;
  }
  json_t *j = json_loadb(body, len, 0, NULL), *u;
  size_t i;
  int found = 0;
  json_array_foreach(json_object_get(j, "updates"), i, u) {
    const char *app = json_string_value(json_object_get(u, "app"));
    const char *ver = json_string_value(json_object_get(u, "version"));
    const char *sha = json_string_value(json_object_get(u, "sha256"));
    const char *url = json_string_value(json_object_get(u, "url"));
    if (!app || strcmp(app, a->cx->sh->app) != 0 || !ver || !sha || !url) continue;
    snprintf(a->version, sizeof a->version, "%s", ver);
    snprintf(a->sha256, sizeof a->sha256, "%s", sha);
    url_path(url, a->path, sizeof a->path);
    a->size = (uint64_t)json_integer_value(json_object_get(u, "size"));
    found = 1;
    break;
  }
  json_decref(j);
  if (!found) {
    agent_fail(a, F_CHECK, "update-check: no offer for the app");
    agent_end(a);
    return;
  }
  agent_download(a);
}

static void agent_check(agent *a) {
  char path[256], body[256];
  snprintf(path, sizeof path, "/v1/devices/%s/update-check", a->reg.id);
  snprintf(body, sizeof body, "{\"inventory\":[{\"app\":\"%s\",\"version\":\"0\"}]}",
           a->cx->sh->app);
  a->checking = 1;
  if (hb_conn_request(a->api, "POST", path, a->reg.token, body, on_checked, a))
    on_checked(a->api, a, -1, "", 0);
}

static void pace(uctx *cx) {
  while (!atomic_load(&cx->sh->stopping) && cx->next < cx->n && cx->inflight < cx->maxinflight) {
    agent *a = &cx->ag[cx->next++];
    cx->inflight++;
    a->cx = cx;
    a->api = hb_conn_new(&cx->loop, &cx->sh->addr);
    agent_check(a);
  }
}

static void agent_close(agent *a) {
  if (a->api) hb_conn_close(a->api);
  a->api = NULL;
  xfer_close(&a->dl);
  if (a->retry_init && !uv_is_closing((uv_handle_t *)&a->retry))
    uv_close((uv_handle_t *)&a->retry, NULL);
  if (a->md) EVP_MD_CTX_free(a->md);
  a->md = NULL;
}

static void on_ctx_stop(uv_async_t *h) {
  uctx *cx = h->data;
  for (long i = 0; i < cx->n; i++) agent_close(&cx->ag[i]);
  uv_close((uv_handle_t *)h, NULL);
}

static void *uctx_main(void *arg) {
  uctx *cx = arg;
  pace(cx);
  uv_run(&cx->loop, UV_RUN_DEFAULT);
  return NULL;
}

static void uctx_init(uctx *cx, ushared *sh, agent *ag, long n, long maxinflight) {
  memset(cx, 0, sizeof *cx);
  cx->sh = sh;
  cx->ag = ag;
  cx->n = n;
  cx->maxinflight = maxinflight < 1 ? 1 : maxinflight;
  for (long i = 0; i < n; i++) ag[i].cx = cx;
  uv_loop_init(&cx->loop);
  uv_async_init(&cx->loop, &cx->stop, on_ctx_stop);
  cx->stop.data = cx;
}

/* ================= setup: the release, the broker's counts ================= */
/* One blocking request over the HTTP API on a loop of its own (before or after measuring). */
typedef struct sync_req {
  int status, done;
  char *body;
} sync_req;

static void on_sync(hb_conn *c, void *ud, int status, const char *body, size_t len) {
  sync_req *r = ud;
  r->status = status;
  r->body = strndup(body, len);
  r->done = 1;
}

static json_t *api_json(const opts *o, const char *method, const char *path, const char *auth,
                        int *status) {
  struct sockaddr_in addr;
  uv_ip4_addr(o->url_host, o->http_port, &addr);
  uv_loop_t loop;
  uv_loop_init(&loop);
  sync_req r = {0};
  hb_conn *c = hb_conn_new(&loop, &addr);
  if (hb_conn_request(c, method, path, auth, NULL, on_sync, &r) == 0)
    while (!r.done) uv_run(&loop, UV_RUN_ONCE);
  hb_conn_close(c);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  *status = r.done ? r.status : -1;
  json_t *j = r.body ? json_loads(r.body, 0, NULL) : NULL;
  free(r.body);
  return j;
}

static void on_upload_end(xfer *x, int status) { *(int *)x->ud = status ? status : -1; }

/* Upload size random bytes as version `version` of app; fills the release's sha256 and checks
 * it against our own digest of the bytes. Returns 0 or 1 (said on stderr). */
static int upload_release(const opts *o, const char *key, const char *app, const char *version,
                          uint64_t size, char *sha_out, double *secs) {
  char *pkg = malloc(size ? size : 1);
  if (!pkg) {
    fprintf(stderr, "herald-bench: no memory for a %llu-byte package\n", (unsigned long long)size);
    return 1;
  }
  uint64_t s = now_ns() | 1;
  for (uint64_t i = 0; i < size; i += 8) { /* xorshift64*: incompressible, new every run */
    s ^= s >> 12, s ^= s << 25, s ^= s >> 27;
    uint64_t v = s * 2685821657736338717ull;
    memcpy(pkg + i, &v, size - i < 8 ? size - i : 8);
  }
  unsigned char d[EVP_MAX_MD_SIZE];
  unsigned dl = 0;
  char mine[2 * EVP_MAX_MD_SIZE + 1];
  EVP_Digest(pkg, size, d, &dl, EVP_sha256(), NULL);
  to_hex(d, dl, mine);

  char head[1024];
  snprintf(head, sizeof head,
           "POST /v1/apps/%s/releases?version=%s&notes=herald-bench HTTP/1.1\r\nHost: bench\r\n"
           "Authorization: Bearer %s\r\nContent-Type: application/octet-stream\r\n"
           "Content-Length: %llu\r\n\r\n",
           app, version, key, (unsigned long long)size);
  struct sockaddr_in addr;
  uv_ip4_addr(o->url_host, o->http_port, &addr);
  uv_loop_t loop;
  uv_loop_init(&loop);
  int status = 0;
  xfer *x = calloc(1, sizeof *x);
  x->on_end = on_upload_end;
  x->ud = &status;
  uint64_t t0 = now_ns();
  int rc = xfer_start(x, &loop, &addr, head, pkg, size, 0);
  if (rc) status = rc;
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  *secs = (now_ns() - t0) / 1e9;
  json_t *j = json_loads(x->text, 0, NULL);
  const char *sha = json_string_value(json_object_get(j, "sha256"));
  int bad = status != 201 || !sha || strcmp(sha, mine) != 0;
  if (bad)
    fprintf(stderr, "herald-bench: uploading %s %s: answer %d %.300s\n", app, version, status,
            x->text);
  else
    snprintf(sha_out, 65, "%s", sha);
  json_decref(j);
  free(x);
  free(pkg);
  return bad;
}

/* ================= the scenario ================= */
int run_updates(opts *o) {
  if (o->stall < 0 || (!o->release && o->package_size < 1)) {
    fprintf(stderr, "herald-bench: --stall must be 0 or more, --package-size 1 or more\n");
    return 2;
  }
  rlim_t lim = raise_nofile();
  long K = o->stall;
  /* Each agent holds two sockets at most (the API connection and its download). */
  long maxdev = ((long)lim - 64) / 2 - K;
  if (o->devices > maxdev) {
    fprintf(stderr, "herald-bench: the fd limit (%llu) caps agents at %ld (asked %ld)\n",
            (unsigned long long)lim, maxdev, o->devices);
    o->devices = maxdev;
  }
  if (o->devices < 1) return 1;
  long N = o->devices;
  char key[256];
  if (load_key(o, key, sizeof key)) return 1;
  int pid = o->pid ? o->pid : find_broker_pid(o->http_port);

  /* 1. The release. */
  char app[128], version[72], sha[65] = "";
  unsigned long tag = (unsigned long)(now_ns() & 0xffffff);
  if (o->app_set) snprintf(app, sizeof app, "%s", o->app);
  else snprintf(app, sizeof app, "upd-%lx", tag);
  uint64_t size = 0;
  double upload_s = 0;
  int status;
  if (o->release) {
    if (!o->app_set) {
      fprintf(stderr, "herald-bench: --release needs --app\n");
      return 2;
    }
    snprintf(version, sizeof version, "%s", o->release);
    char path[512];
    snprintf(path, sizeof path, "/v1/apps/%s/releases/%s", app, version);
    json_t *r = api_json(o, "GET", path, key, &status);
    const char *s = json_string_value(json_object_get(r, "sha256"));
    if (status != 200 || !s) {
      fprintf(stderr, "herald-bench: release %s of %s: answer %d\n", version, app, status);
      json_decref(r);
      return 1;
    }
    snprintf(sha, sizeof sha, "%s", s);
    size = (uint64_t)json_integer_value(json_object_get(r, "size"));
    json_decref(r);
  } else {
    size = o->package_size;
    snprintf(version, sizeof version, "1.0.%llu", (unsigned long long)(time(NULL) * 1000ull +
                                                                        (now_ns() / 1000000) % 1000));
    if (upload_release(o, key, app, version, size, sha, &upload_s)) return 1;
  }

  /* 2. The devices: N agents, then the K stalled ones. */
  agent *all = calloc((size_t)(N + K), sizeof *all);
  opts po = *o;
  po.app = app;
  double prov_s;
  if (hb_provision(&po, key, "upd", &all[0].reg, sizeof *all, N + K, &prov_s)) return 1;
  for (long i = N; i < N + K; i++) all[i].stall = 1;

  ushared sh = {.o = o, .app = app};
  uv_ip4_addr(o->url_host, o->http_port, &sh.addr);

  /* 3. The stalled downloads start first and stay stalled while the others run. */
  uctx scx;
  uctx_init(&scx, &sh, all + N, K, K);
  if (K) {
    pace(&scx);
    uint64_t until = now_ns() + 30ull * 1000000000u;
    for (;;) {
      long ready = 0;
      for (long i = N; i < N + K; i++) ready += all[i].dl.stalled || all[i].finished;
      if (ready == K || now_ns() > until) break;
      uv_run(&scx.loop, UV_RUN_NOWAIT);
      usleep(1000);
    }
  }

  /* 4. Every agent at once, spread over the client threads. */
  int T = o->threads;
  uctx *cxs = calloc((size_t)T, sizeof *cxs);
  long per = (N + T - 1) / T;
  usage u0 = broker_usage(pid);
  uint64_t t0 = now_ns();
  for (int t = 0; t < T; t++) {
    long first = (long)t * per, n = first + per > N ? N - first : per;
    if (n < 0) n = 0;
    uctx_init(&cxs[t], &sh, all + first, n, (o->parallel + T - 1) / T);
    pthread_create(&cxs[t].thread, NULL, uctx_main, &cxs[t]);
  }
  uint64_t last_progress = now_ns(), seen = 0, last_print = 0;
  long finished = 0;
  while (finished < N) {
    uint64_t bytes = 0;
    long busy = 0;
    finished = 0;
    for (int t = 0; t < T; t++) {
      bytes += atomic_load(&cxs[t].bytes);
      finished += atomic_load(&cxs[t].finished);
      busy += atomic_load(&cxs[t].busy);
    }
    if (bytes + (uint64_t)finished + (uint64_t)busy != seen) {
      seen = bytes + (uint64_t)finished + (uint64_t)busy;
      last_progress = now_ns();
    }
    if (now_ns() - last_progress > 60ull * 1000000000u) {
      fprintf(stderr, "herald-bench: no progress for 60 s; %ld of %ld agents unfinished\n",
              N - finished, N);
      break;
    }
    if (K) uv_run(&scx.loop, UV_RUN_NOWAIT);
    if (!o->json && isatty(2) && now_ns() - last_print > 500000000u) {
      last_print = now_ns();
      fprintf(stderr, "\r  %.1f s  finished %ld/%ld  %.0f MiB   ", (now_ns() - t0) / 1e9, finished,
              N, bytes / 1048576.0);
    }
    usleep(2000);
  }
  usage u1 = broker_usage(pid);
  uint64_t t_end = now_ns();
  if (!o->json && isatty(2)) fprintf(stderr, "\n");

  /* The stalled agents' state, read before anything of theirs is closed. */
  long st_count[4] = {0}, st_done = 0, st_failed = 0;
  uint64_t st_read = 0, st_queued = 0;
  for (long i = N; i < N + K; i++) {
    agent *a = &all[i];
    st_read += a->dl.got;
    if (a->finished) {
      if (a->fail) st_failed++;
      else st_done++;
      continue;
    }
    int fd = -1, q = 0;
    struct tcp_info ti;
    socklen_t tl = sizeof ti;
    if (!a->dl.open || uv_fileno((uv_handle_t *)&a->dl.tcp, &fd) ||
        getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &tl)) {
      st_count[3]++;
      continue;
    }
    if (ioctl(fd, FIONREAD, &q) == 0) st_queued += (uint64_t)q;
    int s = ti.tcpi_state == 1 ? 0 : ti.tcpi_state == 8 ? 1 : ti.tcpi_state == 7 ? 2 : 3;
    st_count[s]++;
  }

  atomic_store(&sh.stopping, 1);
  for (int t = 0; t < T; t++) uv_async_send(&cxs[t].stop);
  for (int t = 0; t < T; t++) {
    pthread_join(cxs[t].thread, NULL);
    uv_loop_close(&cxs[t].loop);
  }
  uv_async_send(&scx.stop);
  uv_run(&scx.loop, UV_RUN_DEFAULT);
  uv_loop_close(&scx.loop);

  /* 5. Figures, from the agents' own records. */
  hb_hist done_h, dl_h;
  hb_hist_init(&done_h);
  hb_hist_init(&dl_h);
  long ok = 0, fails[F_KINDS] = {0}, busy = 0;
  uint64_t bytes = 0, last_dl = 0;
  const char *first_why[F_KINDS] = {0};
  for (int t = 0; t < T; t++) busy += atomic_load(&cxs[t].busy);
  long other_version = 0; /* --release V, but update-check offered a newer one */
  for (long i = 0; i < N; i++) {
    agent *a = &all[i];
    if (a->version[0] && strcmp(a->version, version) != 0) other_version++;
    bytes += a->dl.got;
    if (a->t_dl1 > last_dl) last_dl = a->t_dl1;
    if (a->ok) {
      ok++;
      hb_hist_record(&done_h, a->t_done - t0);
      hb_hist_record(&dl_h, a->t_dl1 - a->t_dl0);
      continue;
    }
    int k = a->fail ? a->fail : F_UNFINISHED;
    fails[k]++;
    if (!first_why[k]) first_why[k] = a->fail ? a->why : "no answer before the end";
  }
  long failed = N - ok;
  double span = ((last_dl ? last_dl : t_end) - t0) / 1e9;
  double wall = (t_end - t0) / 1e9;
  double cpu = wall > 0 ? 100 * (u1.cpu_s - u0.cpu_s) / wall : 0;

  /* The broker's own counts of this release (downloads count once the client acked every
   * byte; give the last ones a moment). */
  usleep(500000);
  char rpath[512];
  snprintf(rpath, sizeof rpath, "/v1/reports?app=%s&version=%s", app, version);
  json_t *rep = api_json(o, "GET", rpath, key, &status);
  json_t *r0 = json_array_get(json_object_get(rep, "reports"), 0);
  long b_dl = r0 ? (long)json_integer_value(json_object_get(r0, "downloads")) : -1;
  long b_ok = r0 ? (long)json_integer_value(json_object_get(r0, "success")) : -1;
  long b_fail = r0 ? (long)json_integer_value(json_object_get(r0, "failure")) : -1;
  json_decref(rep);

  if (o->json) {
    printf("{\"scenario\": \"updates\", \"devices\": %ld, \"threads\": %d, \"parallel\": %d, "
           "\"app\": \"%s\", \"version\": \"%s\", \"package_bytes\": %llu, \"upload_s\": %.3f, "
           "\"ok\": %ld, \"failed\": %ld, \"failures\": {",
           N, T, o->parallel, app, version, (unsigned long long)size, upload_s, ok, failed);
    for (int k = 1; k < F_KINDS; k++)
      printf("%s\"%s\": %ld", k > 1 ? ", " : "", fail_names[k], fails[k]);
    printf("}, \"offered_other_version\": %ld, \"busy_retries\": %ld, \"seconds\": %.3f, \"downloads_per_s\": %.1f, "
           "\"bytes\": %llu, \"bytes_per_s\": %.0f, \"mib_per_s\": %.1f, ",
           other_version, busy, span, span > 0 ? ok / span : 0, (unsigned long long)bytes,
           span > 0 ? bytes / span : 0, span > 0 ? bytes / span / 1048576.0 : 0);
    print_lat("completion", &done_h, 1);
    printf(", ");
    print_lat("download", &dl_h, 1);
    printf(", \"broker_downloads\": %ld, \"broker_success\": %ld, \"broker_failure\": %ld, "
           "\"broker_cpu_pct\": %.1f, \"broker_rss_kb\": %ld, \"provision_s\": %.2f",
           b_dl, b_ok, b_fail, cpu, u1.rss_kb, prov_s);
    if (K)
      printf(", \"stall\": {\"clients\": %ld, \"bytes_read\": %llu, \"bytes_queued\": %llu, "
             "\"established\": %ld, \"peer_closed\": %ld, \"reset_or_closed\": %ld, "
             "\"other\": %ld, \"completed\": %ld, \"failed\": %ld}",
             K, (unsigned long long)st_read, (unsigned long long)st_queued, st_count[0],
             st_count[1], st_count[2], st_count[3], st_done, st_failed);
    printf("}\n");
  } else {
    printf("updates: %ld agents (%d client threads, %d update-checks in flight at most), "
           "release %s %s of %llu bytes%s\n",
           N, T, o->parallel, app, version, (unsigned long long)size,
           o->release ? "" : " (uploaded)");
    if (!o->release) printf("  upload          %.3f s\n", upload_s);
    printf("  installed       %ld of %ld verified and reported (failed %ld:", ok, N, failed);
    for (int k = 1; k < F_KINDS; k++) printf(" %s %ld", fail_names[k], fails[k]);
    printf(")\n");
    for (int k = 1; k < F_KINDS; k++)
      if (first_why[k]) printf("    first %s failure: %s\n", fail_names[k], first_why[k]);
    printf("  downloads/s     %.1f  (%.1f MiB/s, %llu bytes; t0 to the last download's end: "
           "%.3f s)\n", span > 0 ? ok / span : 0, span > 0 ? bytes / span / 1048576.0 : 0,
           (unsigned long long)bytes, span);
    if (busy) printf("  503 busy        %ld retries after Retry-After\n", busy);
    if (other_version)
      printf("  note            %ld agents were offered another (newer) version than %s\n",
             other_version, version);
    print_lat("completion from t0", &done_h, 0);
    print_lat("download time", &dl_h, 0);
    printf("  broker counts   downloads %ld, success %ld, failure %ld (GET /v1/reports)\n", b_dl,
           b_ok, b_fail);
    if (pid)
      printf("  broker CPU %.0f %%  RSS %ld KiB (pid %d)\n", cpu, u1.rss_kb, pid);
    printf("  provisioning    %.2f s for %ld devices\n", prov_s, N + K);
    if (K)
      printf("  stalled         %ld clients read %llu bytes, %llu more queued unread in their "
             "receive buffers; at the end %ld established, %ld closed by the broker (FIN), %ld "
             "reset, %ld other; %ld completed anyway, %ld failed\n",
             K, (unsigned long long)st_read, (unsigned long long)st_queued, st_count[0],
             st_count[1], st_count[2], st_count[3], st_done, st_failed);
  }
  hb_plot_run(o, "updates: completion time from t0", &done_h);
  free(cxs);
  free(all);
  return 0;
}
