/* httpc.h — a minimal keep-alive HTTP/1.1 client connection on libuv for the bench harness:
 * one request at a time per connection, responses parsed with http-parser, reconnect on a
 * closed keep-alive connection. Loop thread only; the caller owns the connection (hb_conn_free
 * after hb_conn_close's callback). */
#ifndef HERALD_BENCH_HTTPC_H
#define HERALD_BENCH_HTTPC_H

#include <netinet/in.h>
#include <stddef.h>
#include <uv.h>

typedef struct hb_conn hb_conn;
/* status: HTTP status, or a negative libuv error when the request failed. */
typedef void (*hb_resp_cb)(hb_conn *c, void *ud, int status, const char *body, size_t len);

hb_conn *hb_conn_new(uv_loop_t *loop, const struct sockaddr_in *addr);
/* Send a request (connecting first if needed). auth/body may be NULL. Copies everything. */
int hb_conn_request(hb_conn *c, const char *method, const char *path, const char *auth,
                    const char *body, hb_resp_cb cb, void *ud);
/* Drop any request in flight (its callback will not run) and free; the socket closes on its own. */
void hb_conn_close(hb_conn *c);
/* As hb_conn_request, with extra header lines (each ending in \r\n; NULL for none) and no
 * Authorization. Used by the peer adapters (peers.c). */
int hb_conn_request_h(hb_conn *c, const char *method, const char *path, const char *headers,
                      const char *body, hb_resp_cb cb, void *ud);
/* The last response's Last-Modified and Etag headers ("" if absent); valid in the callback. */
const char *hb_conn_last_modified(const hb_conn *c);
const char *hb_conn_etag(const hb_conn *c);
int hb_conn_busy(const hb_conn *c);

#endif
