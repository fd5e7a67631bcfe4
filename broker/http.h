/* http.h — the broker's HTTP/1.1 server: one listener on the loop, connections, parsing with
 * http-parser, routing by method and path pattern, replies.
 *
 * What it guarantees:
 *   - keep-alive, and pipelining-safe: requests on one connection are handled strictly one at
 *     a time in order (the parser is paused while a request is in flight; bytes that arrived
 *     behind it wait in the buffer and are parsed after the reply is queued);
 *   - limits: request line + headers > max_header -> 431; body > max_body -> 413 (the length
 *     is checked from Content-Length before the body is read, and while reading chunked
 *     bodies); malformed request -> 400; each of these answers and then closes the connection;
 *   - unknown path -> 404, known path but other method -> 405 with Allow, all as JSON
 *     {"error": code, "message": text};
 *   - an idle keep-alive connection is closed after idle_timeout_ms; a held request (see
 *     hd__http_hold) is not idle;
 *   - when the peer disconnects while a request is held, the hold's abort callback runs and the
 *     request is freed; the handler must not reply afterwards.
 *
 * Cross-origin requests (CORS), once hd__http_set_cors() gave a policy callback:
 *   - a request with an Origin header is judged before its handler runs: an Origin whose
 *     authority equals the Host header is the server's own pages (allowed); otherwise the
 *     callback decides. A refused origin gets 403 JSON without CORS headers and the handler
 *     never runs (a cross-origin "simple" POST would otherwise act unseen);
 *   - answers to allowed origins carry Access-Control-Allow-Origin: <origin>; every answer
 *     carries Vary: Origin. No Allow-Credentials (auth is Bearer tokens, never cookies) and no
 *     Expose-Headers (clients read only bodies and status codes);
 *   - a preflight (OPTIONS with Origin and Access-Control-Request-Method, on a path some route
 *     matches and no OPTIONS route takes) is answered by the server: 204 with Allow-Origin,
 *     Allow-Methods (the methods routed for the path), Allow-Headers (Authorization,
 *     Content-Type, Herald-Tenant) and Max-Age 600 when allowed, else 403; unknown path 404.
 * Without a policy, no CORS header is sent and every preflight gets 403.
 *
 * Routes: pattern segments are literal or "{name}"; a {name} segment matches one non-empty
 * path segment, percent-decoded. The query string is parsed into name/value pairs
 * (percent- and '+'-decoded). Header names are matched case-insensitively.
 *
 * TLS (hd__http_set_tls): every connection gets an OpenSSL object between two memory BIOs:
 * bytes read from the socket go into one, what SSL_read gives is parsed exactly as plain bytes
 * are, answers go through SSL_write and the other BIO's bytes are written to the socket. A
 * handshake that fails closes the connection and counts in tls_handshake_failures. Without
 * TLS no connection carries any of this.
 *
 * Ownership: the server owns every connection and request. A hd_http_req is valid from the
 * handler call until hd__http_reply*() returns, or until its abort callback has returned.
 * Everything runs on the loop thread.
 */
#ifndef HERALD_HTTP_H
#define HERALD_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "herald/transport.h" /* hd_http_req, hd_http_handler, hd_http_abort_cb */

typedef struct hd_http_server hd_http_server;
struct ssl_st; /* OpenSSL's SSL, for hd__http_reply_stream() */

typedef struct hd_http_opts {
  uint64_t max_header;       /* bytes */
  uint64_t max_body;         /* bytes */
  uint64_t idle_timeout_ms;
  uint64_t max_connections;  /* further accepts are closed at once */
  uint64_t max_per_address;  /* open connections per peer address; more are closed; 0 = any */
  /* Told of each refused connection (loop thread): reason "max_connections", "per_address"
   * (peer is its address) or "fd_limit" (peer NULL). For logs; may be NULL. */
  void (*on_refused)(void *ud, const char *reason, const char *peer);
  void *on_refused_ud;
} hd_http_opts;

typedef struct hd_http_stats {
  uint64_t connections_open;
  uint64_t connections_total;
  uint64_t connections_refused;  /* over max_connections */
  uint64_t refused_per_address;  /* over max_per_address */
  uint64_t refused_fd_limit;     /* accept failed with EMFILE/ENFILE */
  uint64_t refused_body;         /* 413: body over max_body */
  uint64_t refused_header;       /* 431: request line + headers over max_header */
  uint64_t requests_total;
  uint64_t requests_held;        /* currently held */
  uint64_t responses_4xx;
  uint64_t responses_5xx;
  uint64_t tls_handshake_failures; /* TLS connections closed before the handshake finished */
} hd_http_stats;

/* Create a server on `loop`. *out is owned by the caller until hd__http_close(). */
int hd__http_new(uv_loop_t *loop, const hd_http_opts *opts, hd_http_server **out);
/* Add a route. Method is "GET", "POST", ... ; the pattern string is copied. Routes added later
 * never shadow earlier ones with the same method and pattern (HD_EEXIST). */
int hd__http_route(hd_http_server *s, const char *method, const char *pattern,
                   hd_http_handler cb, void *ud);
/* Spooled bodies, for uploads far larger than max_body (release packages). A spool route's
 * body never sits in memory: it is written, as it arrives, to a new temp file in `dir` by a
 * libuv pool thread, which also hashes it (SHA-256); the handler runs only once the whole body
 * is in the file and fsync'd. About 2 MiB of the body per upload is buffered (besides the
 * connection's usual read bound): while the disk lags, parsing (and then reading) waits. Flow:
 *   1. headers in: the route is chosen, Content-Length is checked against max_body (413), then
 *      admit(), if given, may refuse at once (path parameters, query and headers are there; no
 *      body yet): it returns 0 or an HD_E* code with *message (static text, or owned by r);
 *      the answer is then sent and the connection closed without reading the body. Only
 *      after that is "100 Continue" sent.
 *   2. body: written to <dir>/upload-XXXXXX; a write error (HD_EFULL for a full disk, else
 *      HD_EIO) drops the rest of the body and is answered when it has arrived.
 *   3. handler: hd__http_spool() gives the file's path, size and SHA-256. The file is deleted
 *      when the request is freed (answered, or its connection gone), unless the handler called
 *      hd__http_spool_keep(): it then owns the file (typically it renames it, off the loop).
 * dir must exist, on the filesystem where the file will end up (rename). Loop thread. */
typedef int (*hd_http_admit_cb)(void *ud, hd_http_req *r, const char **message);
int hd__http_route_spool(hd_http_server *s, const char *method, const char *pattern,
                         hd_http_handler cb, void *ud, const char *dir, uint64_t max_body,
                         hd_http_admit_cb admit);
/* The spooled body of r: its file (NUL-terminated path, owned by r), size and SHA-256. NULL
 * when r's route is not a spool route. */
const char *hd__http_spool(hd_http_req *r, uint64_t *size, unsigned char sha256[32]);
/* The handler takes the spooled file: the server will not delete it. */
void hd__http_spool_keep(hd_http_req *r);
/* Bind and listen on host:port (IPv4 or IPv6 literal). Returns 0 or an HD_E* code; err gets
 * a human reason ("address in use"). */
int hd__http_listen(hd_http_server *s, const char *host, int port);
/* Serve HTTPS instead of HTTP: cert is a PEM chain (leaf first), key its PEM private key, ca
 * (may be NULL) a PEM bundle of further chain certificates to send. TLS 1.2 or newer; no client
 * certificates. Before hd__http_listen(). Returns 0, or HD_ECONFIG with "path: reason" (the
 * reason OpenSSL gave) in err. Paths are read now and not kept. Loop thread. */
int hd__http_set_tls(hd_http_server *s, const char *cert, const char *key, const char *ca,
                     char *err, size_t errlen);
/* The human reason of the last failed hd__http_listen() ("address already in use"), or "".
 * Owned by libuv (static text). */
const char *hd__http_listen_error(const hd_http_server *s);
/* The port actually bound (useful with port 0). */
int hd__http_port(const hd_http_server *s);
/* Stop accepting new connections; existing ones go on. */
void hd__http_stop_accepting(hd_http_server *s);
/* Close every connection (held requests get their abort callback first) and the listener;
 * cb(s) runs when every handle is closed, after which the caller frees with hd__http_free. */
void hd__http_close(hd_http_server *s, void (*cb)(hd_http_server *s));
void hd__http_free(hd_http_server *s);
const hd_http_stats *hd__http_stats(const hd_http_server *s);

/* For fuzzing only (tests/fuzz/fuzz_http.c); compiled in every build so that the fuzzer
 * tests the code that ships. Runs `data` as the bytes one client sends on one connection
 * through the real connection code (reads, parser, routing, pipelining, limits, holds, close)
 * on a private loop, over a socketpair instead of an accepted socket, with a few test
 * routes; answers are read and dropped. Returns 0, or an HD_E* code if the socketpair or loop
 * could not be set up. Blocking; not for use inside a running broker. */
int hd__http_fuzz_feed(const uint8_t *data, size_t len);

/* The cross-origin policy: return 1 to let a page of `origin` use the request's resource, 0 to
 * refuse. Called once per request that carries an Origin not naming this server itself, after
 * the target is parsed and before routing, so path parameters are not available yet (method,
 * path, query, headers and bearer are). `origin` is owned by the request. */
typedef int (*hd_http_origin_cb)(void *ud, hd_http_req *r, const char *origin);
/* Install (or with cb NULL remove) the policy; ud is passed to cb. Before listening. */
void hd__http_set_cors(hd_http_server *s, hd_http_origin_cb cb, void *ud);

/* Request accessors (see herald/transport.h for the contract). */
const char *hd__http_method(const hd_http_req *r);
const char *hd__http_path(const hd_http_req *r);
const char *hd__http_param(hd_http_req *r, const char *name);
const char *hd__http_query(hd_http_req *r, const char *name);
const char *hd__http_header(hd_http_req *r, const char *name);
/* The body (never NULL: "" when there is none), its length in *len. */
const char *hd__http_body(hd_http_req *r, size_t *len);
const char *hd__http_bearer(hd_http_req *r);
/* The peer address as text ("127.0.0.1"), for rate limits and logs. */
const char *hd__http_peer(const hd_http_req *r);
void hd__http_hold(hd_http_req *r, hd_http_abort_cb cb, void *ud);
/* Reply; body is copied. Adds Content-Length, Content-Type, Connection, Date-free headers. */
void hd__http_reply(hd_http_req *r, int status, const char *content_type, const char *body,
                    size_t len);
/* Same, with extra header lines ("Name: value\r\n..."), may be NULL. */
void hd__http_reply_ex(hd_http_req *r, int status, const char *content_type,
                       const char *extra_headers, const char *body, size_t len);
/* Answers whose body is not in memory (package downloads, broker/download.c). The head is
 * written like any answer's (status, Content-Type, the CORS lines, extra_headers) with
 * "Content-Length: <length>"; the body is not sent from here.
 *   - take NULL (a HEAD request): the head is the whole answer; the connection goes on as
 *     after any answer (keep-alive as the client asked).
 *   - take set: the answer says "Connection: close". Once the head is in the kernel the
 *     connection leaves the server: it stops reading (bytes the client sent after this
 *     request are dropped), its handles close, and take(ud, sock, ssl) gets a duplicate of
 *     the socket (non-blocking, close-on-exec) and, on a TLS connection, the connection's
 *     SSL object (handshake done, memory BIOs, nothing left in the write BIO; NULL on plain
 *     connections). The taker owns both from then on, on any thread: it sends exactly
 *     `length` body bytes (through SSL_write and the write BIO when ssl is set, then
 *     close_notify), and closes and frees them. The server no longer counts the connection
 *     (max_connections, idle_timeout): bounding and timing out such transfers is the
 *     taker's job.
 *     When the head cannot be delivered (the client went away or does not read it within
 *     idle_timeout, the server closes, dup fails), take runs once with sock -1 and ssl NULL
 *     instead; it may then run before this function returns (client already gone).
 * take runs exactly once, on the loop thread. r is invalid after the call, as after any
 * reply. The ssl argument is an OpenSSL `SSL *`. */
typedef void (*hd_http_take_cb)(void *ud, int sock, struct ssl_st *ssl);
void hd__http_reply_stream(hd_http_req *r, int status, const char *content_type,
                           const char *extra_headers, uint64_t length, hd_http_take_cb take,
                           void *ud);
/* {"error": hd_err_code(err), "message": message or hd_strerror(err)} with the status that
 * fits err (EINVAL 400, EAUTH 401, EFORBID 403, ENOTFOUND 404, ETOOBIG 413, ERATE 429,
 * EFULL 507, ECLOSED/EAGAIN 503, other 500). */
void hd__http_reply_error(hd_http_req *r, int err, const char *message);
int hd__http_status_for(int err);

#endif
