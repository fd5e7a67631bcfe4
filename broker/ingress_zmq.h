/* ingress_zmq.h — publishes over a ZeroMQ ROUTER socket.
 *
 * Request: any envelope frames, then one frame holding a msgpack map:
 *   tenant (str, optional, default "default"), key (str), app (str), to (str, optional),
 *   data (any msgpack value, optional: nil), ttl (positive int seconds, optional),
 *   collapse (str, optional).
 * Reply, sent only after the message is committed to disk: the request's envelope frames, then
 * a msgpack map {"id": "<id>"} or {"error": "<code>", "message": "<text>"}.
 *
 * Batches: instead of to/data/ttl/collapse a request may carry "batch": an array of 1 to
 * HD_ZMQ_MAX_BATCH maps with those four keys, all for the request's tenant and app. Each is
 * published on its own (its own id, its own validation, the rate cap counts each) and the one
 * reply comes once every one of them is committed or refused: {"ids": [id or nil, ...]} in the
 * batch's order, plus "errors": [{"index", "error", "message"}, ...] when any was refused. A
 * publisher then pays the ZeroMQ round trip once per batch instead of once per message. REQ clients (whose
 * envelope ends in an empty delimiter) and DEALER clients both work, and any number of
 * requests may be in flight per connection; replies may come back in another order than the
 * requests when they fail validation early, so DEALER clients should match by id or keep one
 * request in flight per correlation frame they add themselves.
 *
 * Integration with libuv: the socket's ZMQ_FD is watched with uv_poll for readability; since
 * that fd is edge-triggered, every wake-up drains ZMQ_EVENTS until neither POLLIN (with room
 * for more requests in flight) nor POLLOUT (with replies waiting) is left, and the same drain
 * runs after each reply is queued. Replies that meet the high-water mark wait in a queue and
 * go out when the socket is writable again; requests stop being read while `max_inflight`
 * are waiting for their commit, so a fast publisher is slowed by the disk, not by memory.
 *
 * Ownership: the ingress owns its socket and every request in flight. Loop thread only.
 */
#ifndef HERALD_INGRESS_ZMQ_H
#define HERALD_INGRESS_ZMQ_H

#include <stddef.h>

#include "broker.h"

typedef struct hd_zmq_ingress hd_zmq_ingress;

#define HD_ZMQ_MAX_BATCH 1000

/* One message of a batch. Its pointers point into the request's mem. */
typedef struct hd_zmq_item {
  char *to, *collapse;                      /* NUL-terminated; NULL when absent */
  char *data;                               /* msgpack of "data"; NULL when absent */
  size_t data_len;
  int64_t ttl;                              /* 0 when absent */
} hd_zmq_item;

/* One parsed publish request. Every string and data pointer points into mem, one block owned
 * by the request with items (hd__zmq_request_clear frees both). */
typedef struct hd_zmq_request {
  char *tenant, *key, *app, *to, *collapse; /* NUL-terminated; NULL when absent */
  char *data;                               /* msgpack of the "data" value; NULL when absent */
  size_t data_len;
  int64_t ttl;                              /* 0 when absent */
  hd_zmq_item *items;                       /* "batch": nitems >= 1; NULL for one message */
  size_t nitems;
  char *mem;
} hd_zmq_request;

/* Parse one request frame (bytes from the network). Returns 0, or an HD_E* code with a reason
 * for the client in *why (a static string). On error *r is cleared. Pure: no I/O. "data" is
 * kept as the msgpack bytes it came in. */
int hd__zmq_request_parse(const char *body, size_t len, hd_zmq_request *r, const char **why);
void hd__zmq_request_clear(hd_zmq_request *r);

int hd__zmq_ingress_open(hd_broker *b, const char *endpoint, size_t max_frame,
                         hd_zmq_ingress **out, char *err, size_t errlen);
/* Stop reading requests; replies to those in flight still go out. */
void hd__zmq_ingress_stop(hd_zmq_ingress *z);
/* Close the socket (after the writer has drained) and free once the poll handle closed. */
void hd__zmq_ingress_close(hd_zmq_ingress *z);
size_t hd__zmq_ingress_inflight(const hd_zmq_ingress *z);
/* The endpoint actually bound (a "tcp://host:*" wildcard resolved to its port). */
const char *hd__zmq_ingress_endpoint(const hd_zmq_ingress *z);

#endif
