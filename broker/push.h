/* push.h — the push policy: which per-device transports (SMS, WAP Push) a message escalates to
 * when the device has not acked it in time, and the durable queue that drives them.
 *
 * Policy. A tenant's `push_policy` (or `push_policy.<app>` for one app) is an ordered list such
 * as "ipconn, wappush after 30s, sms after 2m": the pull transports named first are how the
 * device normally gets the message; each per-device transport (ops.flags has
 * HD_TRANSPORT_PER_DEVICE) is tried for every device of the message that has an MSISDN and has
 * not acked it (nor had it delivered by an earlier step) once `after` has passed since the
 * message was stored. Offsets are measured from the message's creation and must not decrease.
 *
 * Durability. Scheduling is written in the same commit as the message (an hd_op "also" hook),
 * expansion to devices and every per-device delivery are rows in LMDB, removed only when the
 * delivery ended; a restart resumes them. Tables (docs/ARCHITECTURE.md):
 *   push_sched  due_ms(8) seq(8)            -> step(1) app_num(4) dev_num(8) cursor(8)
 *   push_q      seq(8) dev_num(8)           -> step(1) app_num(4) transport name
 *   push_done   seq(8) dev_num(8)           -> state(1) nrefs(1) ndelivered(1) created(8) transport
 *   push_refs   transport "\0" ref          -> seq(8) dev_num(8)
 *   dev_msisdn  dev_num(8)                  -> digits
 * A device is pushed a message at most once per transport step, and not at all once an earlier
 * step delivered it: "sent" (the carrier accepted it) stops the escalation; receipts then move
 * it to "handset" (reached the handset) or "failed".
 *
 * The publisher reads a message's per-device state at GET /v1/apps/{app}/messages/{id}/
 * deliveries (publish key): [{"device", "transport", "state": pending | sent | delivered |
 * failed | send_failed}].
 *
 * Threads: everything on the loop thread, except the hd__push_w_* functions and the "also"
 * hooks, which run on the writer thread inside its transaction. Ownership: the broker owns the
 * hd_push; it keeps pointers to the broker's config, tenants, store and plugins.
 */
#ifndef HERALD_PUSH_H
#define HERALD_PUSH_H

#include <lmdb.h>
#include <stddef.h>
#include <stdint.h>

#include "broker.h"
#include "writer.h"

typedef struct hd_push hd_push;

/* After the plugins are loaded: parse and check every policy (names must be loaded
 * transports; offsets must not decrease), open the tables. err names the tenant and line. */
int hd__push_init(hd_broker *b, hd_push **out, char *err, size_t errlen);
/* After the writer and the plugins started: resume queued deliveries, start the timer. */
int hd__push_start(hd_push *ps);
/* Stop the timer; deliveries in flight end as "abandoned" through the plugins' stop. */
void hd__push_stop(hd_push *ps);
void hd__push_free(hd_push *ps);

/* Publish path (loop thread): if the tenant's policy for the app has a per-device step, hook
 * the op so the commit that stores the message also schedules its escalation. */
void hd__push_on_publish(hd_push *ps, const char *tenant, uint32_t tenant_num, const char *appid,
                         hd_op *op);
/* Registration path: record the device's MSISDN in the registration's commit. msisdn must be
 * normalized (hd__push_msisdn_norm) and live until the op is done. */
void hd__push_on_register(hd_push *ps, hd_op *op, const char *msisdn);
/* "+49 151 1234-5678" -> "4915112345678": digits only, 5-15 of them (E.164). 0, or HD_EINVAL. */
int hd__push_msisdn_norm(const char *in, char *out, size_t outlen);
/* Writer thread, inside a transaction (for modules with their own ops, e.g. update-check):
 * set (or with msisdn NULL/"" clear) the device's MSISDN. */
int hd__push_w_msisdn(hd_push *ps, MDB_txn *t, uint64_t dev_num, const char *msisdn);

/* A carrier receipt from transport for ref (see hd_host.receipt). 0, or HD_EINVAL. */
int hd__push_receipt(hd_push *ps, const char *transport, const char *ref, int state,
                     const char *detail);

/* For /metrics and tests: deliveries queued on disk and receipts held in memory. */
size_t hd__push_queued(const hd_push *ps);

#endif
