/* download.h — package downloads: GET/HEAD /v1/apps/{app}/releases/{version}/package.
 *
 * Two layers in one module:
 *   - the engine (hd__download_new/serve/stop): HTTP semantics of a file answer (ETag,
 *     If-None-Match, If-Range, one Range, HEAD) and the transfer of the bytes on a thread of
 *     its own, knowing nothing about tenants or the store;
 *   - the route (hd__download_routes): device authentication, the release catalog lookup
 *     (release.h), the rollout and state checks, and what a finished download tells the rest
 *     of the broker (the "download" event, the catalog's download counter).
 *
 * How a body travels. The loop thread decides the answer from metadata alone (304, 416, the
 * head of a 200/206). For a GET with a body it takes a transfer slot (max_active; beyond it
 * 503 with Retry-After), opens and fstat()s the file on libuv's thread pool, then hands the
 * answer to http.c (hd__http_reply_stream), which writes the head and gives the socket (and
 * on TLS listeners the connection's SSL object) away. The download thread owns it from then
 * on: plain sockets get the file with non-blocking sendfile(2) as the socket takes it; TLS
 * connections get it read with pread(2) in 16 KiB records, encrypted with SSL_write into the
 * memory BIO and sent from there. Neither path ever blocks the loop thread, and no lock is
 * held while a byte moves: one stalled client holds its socket, its file and its slot, and
 * nothing else.
 *
 * Timeouts: a transfer that sends nothing for send_timeout_ms is cut (its socket closed). Once
 * the kernel has every byte, the write side is shut down and the transfer lasts until the
 * client has acknowledged them all (SIOCOUTQ reaches 0) or closed, reading and dropping
 * whatever the client sends (so that closing never resets the connection under bytes not yet
 * read); a client that acknowledges nothing more for send_timeout_ms is cut there too. So a
 * download counts as complete only when the client's side has every byte.
 *
 * Keep-alive: a download with a body ends its connection ("Connection: close"); HEAD, 304 and
 * error answers keep it.
 *
 * Ownership: hd_downloads is the caller's until hd__download_free. Every function here runs on
 * the loop thread; subscribers are called there too.
 */
#ifndef HERALD_DOWNLOAD_H
#define HERALD_DOWNLOAD_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "http.h"
#include "metrics.h"

typedef struct hd_downloads hd_downloads;
typedef struct hd_broker hd_broker;

typedef struct hd_download_opts {
  uint64_t max_active;      /* transfers at once (0: 4096); beyond: 503 + Retry-After */
  uint64_t send_timeout_ms; /* cut a transfer that sends nothing this long (0: 60 s) */
  hd_metrics *metrics;      /* NULL: no metrics */
} hd_download_opts;

/* What to serve. Strings are copied as needed; the spec need only live through the call. */
typedef struct hd_download_spec {
  const char *path;     /* the package file */
  uint64_t size;        /* its size per the catalog: a file of another size is a 500 */
  const char *sha256;   /* lower-case hex; the ETag is "\"<sha256>\"" */
  uint32_t tenant_num;
  const char *tenant;   /* store id: in the file name and in X-Herald-Store */
  const char *app;
  const char *version;
  const char *device;
} hd_download_spec;

/* How one transfer ended. Strings valid during the callback only. */
typedef struct hd_download_result {
  uint32_t tenant_num;
  const char *tenant, *app, *version, *device;
  uint64_t size;     /* the package's size */
  uint64_t offset;   /* first byte of this response (Range) */
  uint64_t length;   /* bytes this response announced */
  uint64_t bytes;    /* bytes sent */
  /* 1 when every announced byte was sent and the response reached the package's last byte:
   * count a download only then (a resumed download counts once, on its last part). */
  int complete;
  const char *reason; /* "complete", "timeout", "closed" (by the client), "error", "shutdown" */
} hd_download_result;

typedef void (*hd_download_cb)(void *ud, const hd_download_result *res);

/* Start the engine and its thread. Returns 0 or an HD_E* code. */
int hd__download_new(uv_loop_t *loop, const hd_download_opts *opts, hd_downloads **out);
/* Be told of every transfer that ended (complete or not; an answer without body, and a client
 * gone before the head was written, are not transfers). Up to 8 subscribers; HD_EFULL
 * beyond. Before or after start. */
int hd__download_subscribe(hd_downloads *d, hd_download_cb cb, void *ud);
/* Answer r (GET or HEAD, authorized already) with the package: 304 when If-None-Match
 * matches, 416 for a Range that cannot be satisfied, 206 for one satisfiable Range (unless
 * If-Range names another validator), else 200; 503 when every slot is taken or the engine
 * stopped. r is answered exactly once, now or later. */
void hd__download_serve(hd_downloads *d, hd_http_req *r, const hd_download_spec *spec);
/* Transfers taking place now (slots in use). */
uint64_t hd__download_active(const hd_downloads *d);
/* Cut every transfer (reason "shutdown"), stop and join the thread, close the loop handles;
 * later requests get 503. The loop must run afterwards until the handles have closed. */
void hd__download_stop(hd_downloads *d);
void hd__download_free(hd_downloads *d);

/* ---- the route (broker side) ---- */
/* Register GET and HEAD /v1/apps/{app}/releases/{version}/package on the broker's HTTP
 * server, answered through b->downloads with b->releases as the catalog:
 *   401 without a bearer token or device id (?device= or X-Herald-Device), with a token that
 *       does not verify for that device, or of an older generation than the device's current
 *       one (as every device endpoint);
 *   404 when the token's tenant has no such release (another tenant's release included);
 *   410 withdrawn; 403 outside the rollout; then hd__download_serve.
 * Every transfer that ends emits a "download" event; a complete one is counted with
 * hd__release_count_download and in herald_downloads_total{tenant,app}. */
int hd__download_routes(hd_broker *b);

/* ---- pure helpers (exposed for the unit tests) ---- */
enum {
  HD_RANGE_NONE = 0,  /* no usable Range: answer the whole (absent, other unit, malformed,
                       * several ranges — RFC 9110 lets a server ignore those) */
  HD_RANGE_OK = 1,    /* one satisfiable range: [*first, *last] within the size */
  HD_RANGE_UNSATISFIABLE = 2, /* 416 */
};
/* Parse a Range header value ("bytes=0-99", "bytes=100-", "bytes=-500") against a
 * representation of `size` bytes. */
int hd__download_parse_range(const char *value, uint64_t size, uint64_t *first,
                             uint64_t *last);

#endif
