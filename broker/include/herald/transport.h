/* herald/transport.h — Transport plugin ABI, version 1.
 *
 * A transport is a shared object that exports one const data symbol,
 *
 *     const hd_transport_ops herald_transport = { .abi_major = HD_TRANSPORT_ABI_MAJOR, ... };
 *
 * and nothing else the broker looks at. The broker dlopen()s it from the plugin directory named
 * in the config, checks the version fields first and refuses it with a clear reason when
 *   - abi_major differs from the broker's, or
 *   - abi_minor is newer than the broker's, or
 *   - struct_size is smaller than the v1.0 layout.
 * It then calls create() once with the host table (hd_host) and a handle (hd_plugin) that the
 * plugin passes back on every host call.
 *
 * Since 1.1 a shared object may instead export
 *
 *     const hd_transport_ops *const herald_transports[] = { &a_ops, &b_ops, NULL };
 *
 * to provide several transports that share state (the SMS and WAP Push transports share their
 * SMSC links this way). Each is loaded, configured and named on its own ([plugins] load lists
 * the transport names; the file is found by any of its names or by the file name).
 *
 * PER-DEVICE PUSH (1.1). A transport with HD_TRANSPORT_PER_DEVICE in ops.flags is not handed
 * every message. The broker's push policy (docs/ARCHITECTURE.md, "push policy") decides, per
 * tenant or app, which per-device transports to try and after how long a message not yet acked
 * by the device escalates to the next one; it then hands the transport one delivery per device
 * that has an MSISDN (delivery_msisdn()). A delivery the carrier accepted ends with done() or,
 * when the carrier will confirm later, done_refs() naming the carrier's ids; receipt() then
 * records the handset's delivery state. Escalation stops at the first transport that reports
 * HD_DELIVERED for that device and message.
 *
 * ABI changelog (append only; a change of layout bumps the major):
 *   2026-11-21  1.0  first version: push (deliver/done) and pull (fetch/watch/ack) transports,
 *                    HTTP routes on the broker's listener. The ack callback's status is the
 *                    number of ids that took effect (>= 0) or a negative HD_E*: test for
 *                    `status < 0`, not `status != 0`.
 *   2026-11-22  1.1  per-device push transports (SMS, WAP Push): ops.flags with
 *                    HD_TRANSPORT_PER_DEVICE, delivery_device/msisdn/tenant, done_refs() and
 *                    receipt() for carrier delivery receipts, inbound() for mobile-originated
 *                    messages, plugin-declared config sections ([smsc NAME]) with
 *                    section_* getters, prefix keys ("template.*") with config_key_at(),
 *                    several transports in one shared object (`herald_transports`), and
 *                    ops.device_revoked, so connections of a device whose tokens were
 *                    revoked or rotated are closed at once.
 *
 * THE CONTRACT
 *   MUST  1. Every callback runs on the broker's loop thread, and every host function except
 *            post() must be called from it.
 *   MUST  2. No callback blocks: no sleeping, no blocking socket or disk I/O. Use the loop
 *            (host->loop()) or post() from a thread of your own.
 *   MUST  3. Push transports: every delivery accepted by deliver() (it returned 0) ends in
 *            exactly one host->done(), also when cancel() or stop() ends it early. The delivery
 *            and the message it points to stay valid until done() returns; do not touch them
 *            afterwards.
 *   MUST  4. Retry, storage and expiry belong to the broker. A transport reports an outcome:
 *            HD_DELIVERED, HD_FAILED_TEMP (the broker retries later) or HD_FAILED_PERM.
 *   MUST  5. stop() stops accepting new work and answers every held request; destroy() frees
 *            everything the plugin allocated. After stop() the broker calls no deliver().
 *   MUST  6. Pull transports authenticate every device with host->device_auth() before
 *            they fetch, watch or ack for it.
 *   MAY   7. A transport may be push-only (fetch/watch unused), pull-only (deliver == NULL) or
 *            both.
 *   MAY   8. Fields of hd_transport_ops after struct_size are treated as absent, so a plugin
 *            built against an older minor keeps working.
 *
 * OWNERSHIP, in one place
 *   - hd_plugin, hd_host: owned by the broker, valid from create() until destroy() returns.
 *   - hd_device: returned by device_auth(); the plugin owns it and frees it with device_free().
 *   - hd_batch: returned by fetch(); the plugin owns it and frees it with batch_free(). The
 *     hd_msg pointers inside are valid until then.
 *   - hd_watch: returned by watch(); valid until unwatch() or until its callback has run
 *     (a watch fires at most once; the callback owns nothing and must not call unwatch()).
 *   - hd_http_req: owned by the broker; valid until the plugin replies, or until the abort
 *     callback it set has run (then the plugin must not reply).
 *   - Strings returned by host getters are owned by the object they came from.
 */
#ifndef HERALD_TRANSPORT_H
#define HERALD_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "herald/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HD_TRANSPORT_ABI_MAJOR 1
#define HD_TRANSPORT_ABI_MINOR 1
/* Name of the data symbol every transport exports. */
#define HD_TRANSPORT_SYMBOL "herald_transport"
/* Or, since 1.1, a NULL-terminated array of transports in one shared object. */
#define HD_TRANSPORTS_SYMBOL "herald_transports"
/* Put this in front of the exported symbol so it survives -fvisibility=hidden. */
#define HD_TRANSPORT_EXPORT __attribute__((visibility("default")))

typedef struct hd_plugin hd_plugin;       /* the broker's handle of one loaded transport */
typedef struct hd_device hd_device;       /* an authenticated device */
typedef struct hd_msg hd_msg;             /* a read-only view of a stored message */
typedef struct hd_batch hd_batch;         /* messages fetched for a device */
typedef struct hd_watch hd_watch;         /* a one-shot wake-up for a device */
typedef struct hd_delivery hd_delivery;   /* one message handed to a push transport */
typedef struct hd_http_req hd_http_req;   /* one HTTP request routed to a plugin */

enum hd_log_level { HD_LOG_DEBUG = 0, HD_LOG_INFO = 1, HD_LOG_WARN = 2, HD_LOG_ERROR = 3 };

enum hd_outcome {
  HD_DELIVERED = 0,     /* reached the device (or its carrier accepted it for good) */
  HD_FAILED_TEMP = 1,   /* try again later; the broker schedules the retry */
  HD_FAILED_PERM = 2,   /* will never succeed (bad address, rejected); the broker gives up */
};

enum hd_metric_type { HD_METRIC_COUNTER = 0, HD_METRIC_GAUGE = 1 };

/* ops.flags (1.1) */
#define HD_TRANSPORT_PER_DEVICE 0x1u /* one delivery per device with an MSISDN, by push policy */

/* receipt() states (1.1) */
enum hd_receipt_state {
  HD_RECEIPT_DELIVERED = 0,  /* the handset has it */
  HD_RECEIPT_FAILED = 1,     /* the carrier gave up (undeliverable, rejected, deleted) */
  HD_RECEIPT_EXPIRED = 2,    /* its validity ran out in the carrier's store */
};
typedef struct hd_metric hd_metric;

/* Called when a watched device may have new messages; the watch is spent afterwards. */
typedef void (*hd_wake_cb)(void *ud);
/* Called when an ack has been committed: status is the number of ids that took effect
 * (unknown, foreign and already acked ids do not count), or a negative HD_E* on failure. */
typedef void (*hd_ack_cb)(void *ud, int status);
/* Called for an HTTP request matching a route the plugin registered. */
typedef void (*hd_http_handler)(void *ud, hd_http_req *req);
/* Called when the client of a held request went away or the broker is stopping. */
typedef void (*hd_http_abort_cb)(void *ud, hd_http_req *req);

/* The services the broker offers a transport. All pointers are set; abi_minor tells which
 * later additions exist. */
typedef struct hd_host {
  uint32_t abi_major;
  uint32_t abi_minor;
  uint32_t struct_size;

  /* --- loop, logging, config, metrics --- */
  uv_loop_t *(*loop)(hd_plugin *p);
  /* One log line: level, event name, then "key=value ..." fields formatted printf-style. */
  void (*log)(hd_plugin *p, int level, const char *event, const char *fields_fmt, ...)
      __attribute__((format(printf, 4, 5)));
  /* Value of `key` in this transport's [transport NAME] section, or `def` when absent. */
  const char *(*config_str)(hd_plugin *p, const char *key, const char *def);
  /* Integer value of `key` (accepts k/M/G and s/m/h/d suffixes); `def` when absent.
   * Returns 0, or HD_ECONFIG when the value is not a number. */
  int (*config_int)(hd_plugin *p, const char *key, int64_t def, int64_t *out);
  /* Registers a metric "herald_<plugin>_<name>"; the broker owns it. NULL on bad name. */
  hd_metric *(*metric_new)(hd_plugin *p, const char *name, const char *help, int type);
  void (*metric_add)(hd_metric *m, double delta);
  void (*metric_set)(hd_metric *m, double value);

  /* --- HTTP routes on the broker's listener --- */
  /* pattern: a path with {name} segments, e.g. "/v1/devices/{device}/messages". */
  int (*http_route)(hd_plugin *p, const char *method, const char *pattern,
                    hd_http_handler cb, void *ud);
  const char *(*http_param)(hd_http_req *r, const char *name);   /* path {name}, decoded */
  const char *(*http_query)(hd_http_req *r, const char *name);   /* ?name=, decoded, or NULL */
  const char *(*http_header)(hd_http_req *r, const char *name);  /* case-insensitive, or NULL */
  const char *(*http_body)(hd_http_req *r, size_t *len);
  /* The bearer token of the Authorization header, or NULL. */
  const char *(*http_bearer)(hd_http_req *r);
  /* Hold the request: cb runs if the client disconnects or the broker stops first. Read what
   * you need first: from 1.1 on, holding releases the request's path parameters, query,
   * headers (except Origin) and body (a held request then costs only what its answer needs). */
  void (*http_hold)(hd_http_req *r, hd_http_abort_cb cb, void *ud);
  /* Answer; the broker copies body. After this call r is gone. */
  void (*http_reply)(hd_http_req *r, int status, const char *content_type,
                     const char *body, size_t len);
  /* Answer with {"error": hd_err_code(err), "message": message} and the status matching err. */
  void (*http_reply_error)(hd_http_req *r, int err, const char *message);

  /* --- devices and their messages (pull) --- */
  /* Verify `token` for device `device_id`; on success *out is a handle the caller frees. */
  int (*device_auth)(hd_plugin *p, const char *device_id, const char *token, hd_device **out);
  void (*device_free)(hd_device *d);
  const char *(*device_id)(const hd_device *d);
  const char *(*device_tenant)(const hd_device *d);
  /* Messages pending for the device with id greater than `after` (0: everything not acked and
   * not expired), at most `max`, oldest first. Reads committed state; never blocks. A message
   * shows once its commit has woken the watches (the moment its publisher is acknowledged);
   * `after` at or above the newest such id returns an empty batch without reading the store. */
  int (*fetch)(hd_plugin *p, const hd_device *d, uint64_t after, size_t max, hd_batch **out);
  size_t (*batch_count)(const hd_batch *b);
  const hd_msg *(*batch_msg)(const hd_batch *b, size_t i);
  /* The cursor to pass as `after` next time: the highest id in the batch, or `after`. */
  uint64_t (*batch_cursor)(const hd_batch *b);
  void (*batch_free)(hd_batch *b);
  /* Wake cb once when something for the device is committed (or at once if shutting down). */
  hd_watch *(*watch)(hd_plugin *p, const hd_device *d, hd_wake_cb cb, void *ud);
  void (*unwatch)(hd_watch *w);
  /* Acknowledge (dismiss) messages for the device; cb runs after the commit, which the broker
   * may hold back up to [store] ack_delay (2 ms by default) to commit acks together. */
  int (*ack)(hd_plugin *p, const hd_device *d, const uint64_t *ids, size_t n,
             hd_ack_cb cb, void *ud);

  /* --- message accessors --- */
  uint64_t (*msg_id)(const hd_msg *m);
  const char *(*msg_app)(const hd_msg *m);
  const char *(*msg_to)(const hd_msg *m);                   /* device id, or NULL: broadcast */
  int64_t (*msg_created_ms)(const hd_msg *m);                /* Unix time in milliseconds */
  int64_t (*msg_expires_ms)(const hd_msg *m);
  const void *(*msg_data)(const hd_msg *m, size_t *len);     /* the payload as msgpack */
  /* The payload rendered as JSON text (NUL-terminated); owned by the message. NULL on ENOMEM. */
  const char *(*msg_data_json)(const hd_msg *m, size_t *len);

  /* --- push --- */
  const hd_msg *(*delivery_msg)(const hd_delivery *d);
  unsigned (*delivery_attempt)(const hd_delivery *d);       /* 1 on the first try */
  void (*done)(hd_delivery *d, int outcome, const char *reason);

  /* --- threads --- */
  /* The only thread-safe call: run fn(arg) on the loop thread soon. Returns 0 or HD_ECLOSED. */
  int (*post)(hd_plugin *p, void (*fn)(void *arg), void *arg);

  /* --- added in 1.1 (present when abi_minor >= 1) --- */
  /* Per-device deliveries: the device id, its MSISDN (digits only, international form,
   * e.g. "4915112345678") and its tenant. NULL for a per-message delivery. Owned by d. */
  const char *(*delivery_device)(const hd_delivery *d);
  const char *(*delivery_msisdn)(const hd_delivery *d);
  const char *(*delivery_tenant)(const hd_delivery *d);
  /* done() for a carrier that confirms later: with HD_DELIVERED, refs[0..nrefs) name what the
   * carrier accepted (one per SMS part, e.g. "smsc1:0a1b2c"); the message counts as reached
   * the handset once a DELIVERED receipt came for every ref, as failed once one FAILED or
   * EXPIRED. refs are copied. Otherwise exactly like done(). */
  void (*done_refs)(hd_delivery *d, int outcome, const char *reason,
                    const char *const *refs, size_t nrefs);
  /* A carrier's delivery receipt for a ref given to done_refs(); detail is free text for the
   * event ("stat=DELIVRD err=000"). A receipt may come before the done_refs() that names its
   * ref (an SMSC may send it before the submit_sm_resp): the broker holds it for a minute.
   * Returns 0 (recorded or held) or HD_EINVAL. Normalize carrier ids first (the broker
   * compares refs as strings). */
  int (*receipt)(hd_plugin *p, const char *ref, int state, const char *detail);
  /* A mobile-originated message (from/to: MSISDNs or short codes; data: the text as UTF-8).
   * The broker emits it as an "inbound" event on the ZeroMQ events socket. */
  void (*inbound)(hd_plugin *p, const char *from, const char *to, const char *text,
                  size_t len);
  /* [KIND NAME] sections of a kind this transport declared in ops.section_kinds. */
  size_t (*section_count)(hd_plugin *p, const char *kind);
  const char *(*section_name)(hd_plugin *p, const char *kind, size_t i);
  const char *(*section_str)(hd_plugin *p, const char *kind, const char *name, const char *key,
                             const char *def);
  int (*section_int)(hd_plugin *p, const char *kind, const char *name, const char *key,
                     int64_t def, int64_t *out);
  /* The i-th key of this transport's [transport NAME] section and its value (*value), for
   * walking prefix keys declared as "prefix.*" in config_keys. NULL past the end. */
  const char *(*config_key_at)(hd_plugin *p, size_t i, const char **value);

  void *reserved[5];
} hd_host;

/* What a transport exports as `herald_transport`. */
typedef struct hd_transport_ops {
  uint32_t abi_major;      /* HD_TRANSPORT_ABI_MAJOR */
  uint32_t abi_minor;      /* HD_TRANSPORT_ABI_MINOR the plugin was built against */
  uint32_t struct_size;    /* sizeof(hd_transport_ops) */
  const char *name;        /* [a-z0-9_]+, used in config sections and metric names */
  const char *version;     /* the plugin's own version, for logs */
  /* Keys accepted in [transport NAME]; NULL-terminated. Others are a config error. */
  const char *const *config_keys;

  /* Build the instance. Must not start I/O yet. *state is passed to every other call. */
  int (*create)(const hd_host *host, hd_plugin *self, void **state);
  /* Start listening / connecting. */
  int (*start)(void *state);
  /* Push: take one delivery. 0 = accepted (ends in exactly one done()); <0 = refused now
   * (HD_EAGAIN: busy, the broker retries; other: permanent for this delivery). May be NULL. */
  int (*deliver)(void *state, hd_delivery *d);
  /* Push: end an accepted delivery early (expired, shutting down); it still ends in done().
   * May be NULL when deliver is NULL. */
  void (*cancel)(void *state, hd_delivery *d);
  /* Stop accepting; answer everything held. The loop keeps running until handles close. */
  void (*stop)(void *state);
  /* Free everything; called once, after stop() and after the loop has drained. */
  void (*destroy)(void *state);

  /* --- added in 1.1 --- */
  uint32_t flags;                        /* HD_TRANSPORT_PER_DEVICE */
  /* Section kinds this transport reads with section_*() (e.g. {"smsc", NULL}) and the keys
   * allowed in them; [KIND NAME] sections of a kind no loaded transport declared, or with a
   * key not listed, are a config error naming the file and line. NULL: none. */
  const char *const *section_kinds;
  const char *const *section_keys;
  /* The device's tokens were revoked or rotated (committed): end whatever this transport holds
   * on behalf of that device (held polls, persistent connections) now; the device must
   * authenticate again with a current token. May be NULL. */
  void (*device_revoked)(void *state, const char *tenant, const char *device);

  void *reserved[4];
} hd_transport_ops;

#ifdef __cplusplus
}
#endif
#endif
