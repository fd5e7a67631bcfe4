/* events.h — the ZeroMQ PUB socket on which the broker tells back ends what happened.
 *
 * The socket is an XPUB (subscribers see a PUB). Each event is two frames: a topic "<tenant>.<kind>" (subscribe by prefix: "default." for
 * one tenant, "" for all) and a msgpack map with at least "event", "tenant", "id" and "ts"
 * (Unix ms). Kinds so far: published, acked, expired, registered, and delivery outcomes of push
 * transports (delivered, failed, expired, abandoned) as "delivery" with a "result" field.
 * Sending never blocks: up to 100,000 events queue per subscriber (bursts of receipts or
 * deliveries are normal); past that a subscriber that does not keep up loses events, as
 * PUB/SUB does.
 * Loop thread only. The broker owns the hd_events.
 */
#ifndef HERALD_EVENTS_H
#define HERALD_EVENTS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct hd_events hd_events;

int hd__events_open(void *zctx, const char *endpoint, hd_events **out, char *err, size_t errlen);
/* Follow subscriptions (a 50 ms timer on loop reads XPUB's subscription messages): the
 * per-message events ("published", "acked", "delivery") are not even built while nobody is
 * subscribed; rarer events are always sent. Stop with hd__events_stop before the loop drains. */
int hd__events_watch(hd_events *e, uv_loop_t *loop);
void hd__events_stop(hd_events *e);
/* 1 while at least one subscriber is subscribed to something. */
int hd__events_listened(const hd_events *e);
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
/* A mobile-originated message a transport received (text as UTF-8, len bytes). */
void hd__events_inbound(hd_events *e, const char *transport, const char *from, const char *to,
                        const char *text, size_t len);
/* A carrier's delivery receipt for a per-device push: state "delivered" (reached the handset),
 * "failed" or "expired"; detail is the carrier's text. Topic "<tenant>.receipt". */
void hd__events_receipt(hd_events *e, const char *transport, const char *tenant, uint64_t id,
                        const char *app, const char *device, const char *state,
                        const char *detail);
/* A package transfer ended (download.c): bytes of the package sent by this response;
 * complete when it reached the package's last byte. Topic "<tenant>.download". */
void hd__events_download(hd_events *e, const char *tenant, const char *device, const char *app,
                         const char *version, uint64_t bytes, int complete);
/* A device's install report (release.c): result "success" or "failure", reason (failures
 * only) and action ("install"/"upgrade") may be NULL. Topic "<tenant>.install". */
void hd__events_install(hd_events *e, const char *tenant, const char *device, const char *app,
                        const char *version, const char *result, const char *reason,
                        const char *action);
/* A release was added or changed (release.c): rollout in percent, state "active", "paused"
 * or "withdrawn". Topic "<tenant>.release". */
void hd__events_release(hd_events *e, const char *tenant, const char *app, const char *version,
                        double rollout, const char *state);
uint64_t hd__events_sent(const hd_events *e);
/* The endpoint actually bound (wildcard port resolved). */
const char *hd__events_endpoint(const hd_events *e);

#endif
