/* events.h — the ZeroMQ PUB socket on which the broker tells back ends what happened.
 *
 * Each event is two frames: a topic "<tenant>.<kind>" (subscribe by prefix: "default." for
 * one tenant, "" for all) and a msgpack map with at least "event", "tenant", "id" and "ts"
 * (Unix ms). Kinds so far: published, acked, expired, registered, and delivery outcomes of push
 * transports (delivered, failed, expired, abandoned) as "delivery" with a "result" field.
 * Sending never blocks: PUB drops for slow subscribers at the high-water mark, as PUB does.
 * Loop thread only. The broker owns the hd_events.
 */
#ifndef HERALD_EVENTS_H
#define HERALD_EVENTS_H

#include <stddef.h>
#include <stdint.h>

typedef struct hd_events hd_events;

int hd__events_open(void *zctx, const char *endpoint, hd_events **out, char *err, size_t errlen);
void hd__events_close(hd_events *e);
void hd__events_published(hd_events *e, const char *tenant, const char *app, uint64_t id,
                          const char *to, uint64_t replaced);
void hd__events_acked(hd_events *e, const char *tenant, const char *device, size_t count);
void hd__events_registered(hd_events *e, const char *tenant, const char *app,
                           const char *device);
void hd__events_expired(hd_events *e, size_t count);
/* A push transport's outcome for one message. tenant unknown here: topic "*.delivery". */
void hd__events_delivery(hd_events *e, const char *transport, const char *result, uint64_t id,
                         const char *app, const char *to, unsigned attempt, const char *reason);
uint64_t hd__events_sent(const hd_events *e);
/* The endpoint actually bound (wildcard port resolved). */
const char *hd__events_endpoint(const hd_events *e);

#endif
