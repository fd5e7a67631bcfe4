/* pconn.h — a plain TCP byte-stream connection on libuv for the peer adapters (MQTT, NATS):
 * bytes read are appended to an input buffer and handed to a parse callback that says how many
 * it consumed; writes are appended to an output buffer with at most one uv_write in flight, so
 * everything queued while a write is pending goes out in the next one. Loop thread only; the
 * caller owns the object (pconn_close frees it once libuv is done with the handle). */
#ifndef HERALD_BENCH_PCONN_H
#define HERALD_BENCH_PCONN_H

#include <netinet/in.h>
#include <stddef.h>
#include <uv.h>

typedef struct pconn pconn;
/* Return bytes consumed from buf (0..len). */
typedef size_t (*pconn_parse_cb)(pconn *c, void *ud, const char *buf, size_t len);
/* status 0: connected; negative libuv error: the connection failed or closed. */
typedef void (*pconn_event_cb)(pconn *c, void *ud, int status);

pconn *pconn_new(uv_loop_t *loop, const struct sockaddr_in *addr, pconn_parse_cb parse,
                 pconn_event_cb event, void *ud);
/* Queue bytes (copied); they go out once connected. */
void pconn_write(pconn *c, const void *buf, size_t len);
void pconn_close(pconn *c);

#endif
