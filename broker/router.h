/* router.h — who is waiting for what: wake-ups of pull transports when messages commit.
 *
 * A watch covers one device: its own direct messages and every app it is registered for. When
 * the writer commits a broadcast to app A, hd__router_wake_app(A) fires every watch that covers
 * A; a direct message fires the device's watches. A watch fires once and is then spent (the
 * transport fetches and, if it still waits, watches again), which keeps the bookkeeping O(1)
 * per watch and makes a lost wake-up impossible: the transport always fetches after the wake.
 * A watch knows the apps of its device when it was armed, so a committed registration wakes
 * the device (broker.c): it fetches again and watches the new app too.
 *
 * Watches are kept in hash tables keyed by app number and by device number, each bucket an
 * intrusive list, so arming, firing and cancelling a watch cost O(number of its apps).
 * Loop thread only. The router owns every hd_watch; the caller owns the callback's data.
 * This interface is what a clustered back end replaces to fan wake-ups across nodes.
 */
#ifndef HERALD_ROUTER_H
#define HERALD_ROUTER_H

#include <stddef.h>
#include <stdint.h>

#include "herald/transport.h" /* hd_watch, hd_wake_cb */

typedef struct hd_router hd_router;

int hd__router_new(hd_router **out);
/* Fire every remaining watch (shutdown), then free. */
void hd__router_free(hd_router *r);
/* Arm a watch. apps: the device's app numbers. NULL on ENOMEM. */
hd_watch *hd__router_watch(hd_router *r, uint64_t dev_num, const uint32_t *apps, size_t napps,
                           hd_wake_cb cb, void *ud);
/* Cancel an armed watch; the callback will not run. */
void hd__router_unwatch(hd_watch *w);
void hd__router_wake_app(hd_router *r, uint32_t app_num);
void hd__router_wake_device(hd_router *r, uint64_t dev_num);
/* Fire every watch (shutdown: held requests answer at once). */
void hd__router_wake_all(hd_router *r);
size_t hd__router_watches(const hd_router *r);

#endif
