/* zpub.h — a ZeroMQ DEALER publisher on libuv for the bench harness: requests go out with an
 * 8-byte correlation frame before the body (the broker echoes every frame before the body),
 * replies are matched back by it; ZMQ_FD is watched with uv_poll and drained edge-triggered. Loop
 * thread only; the caller owns it (hb_zpub_close frees). */
#ifndef HERALD_BENCH_ZPUB_H
#define HERALD_BENCH_ZPUB_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct hb_zpub hb_zpub;
/* ok: 1 for {"id"}, 0 for {"error"}; reply points at the raw msgpack reply. */
typedef void (*hb_zack_cb)(void *ud, uint64_t corr, int ok, const char *reply, size_t len);

hb_zpub *hb_zpub_new(uv_loop_t *loop, void *zctx, const char *endpoint, hb_zack_cb cb, void *ud);
/* Queue a request; copies body. */
int hb_zpub_send(hb_zpub *z, uint64_t corr, const void *body, size_t len);
size_t hb_zpub_inflight(const hb_zpub *z);
void hb_zpub_close(hb_zpub *z);

#endif
