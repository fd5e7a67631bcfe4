/* plugin.h — loading transports (dlopen), checking their ABI, driving their lifecycle, and
 * handing committed messages to push transports with retry.
 *
 * Load: for each name in [plugins] load, <dir>/<name>.so is opened and its `herald_transport`
 * symbol checked: same ABI major, minor not newer than ours, struct_size at least v1.0's, a
 * valid name equal to the file's, and every key of its [transport NAME] section listed in its
 * config_keys (the host itself takes `apps`). Any failure names the file and the reason.
 *
 * Push: after each commit the broker calls hd__plugins_offer(); every push transport whose
 * `apps` covers the app gets an hd_delivery. TEMP failures are retried with exponential
 * backoff (1 s doubling to 60 s) until the message expires; PERM failures and expiry end it.
 * Retry state is in memory: per-message deliveries in flight when heraldd stops are not resumed
 * after a restart (pull transports are unaffected: their state is the store). Per-device
 * deliveries (SMS, WAP Push) are driven by push.c, whose queue is durable.
 *
 * Ownership: hd_plugins owns every plugin, delivery and dl handle. Loop thread only, except
 * the host's post().
 */
#ifndef HERALD_PLUGIN_H
#define HERALD_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#include "broker.h"

/* What a push transport is offered: a committed message, copied by the callee. */
typedef struct hd_offer {
  uint64_t seq;
  const char *appid;
  const char *to;          /* NULL: broadcast */
  int64_t created_ms;
  int64_t expires_ms;
  const void *data;
  size_t data_len;
} hd_offer;

/* How a per-device delivery ended, for push.c: what is "delivered", "failed" (permanently),
 * "expired" or "abandoned" (the broker is stopping; it resumes after a restart). refs are the
 * carrier's ids from done_refs() (nrefs 0 otherwise). Runs once, on the loop thread. */
typedef void (*hd_delivery_finish_cb)(void *ud, const char *what, const char *reason,
                                      const char *const *refs, size_t nrefs);
typedef struct hd_device_target {
  const char *device;      /* device id */
  const char *msisdn;      /* normalized digits */
  const char *tenant;      /* tenant name */
} hd_device_target;
/* Hand one message to one per-device transport for one device. The broker retries TEMP
 * failures with backoff until the message expires; finish(ud, ...) runs when it ends. Returns
 * 0, or HD_ENOMEM / HD_ECLOSED (then finish does not run). */
int hd__plugin_deliver_device(hd_plugin *p, const hd_offer *o, const hd_device_target *dt,
                              hd_delivery_finish_cb finish, void *ud);
/* Tell every transport (1.1, device_revoked) that the device's tokens no longer hold. */
void hd__plugins_device_revoked(hd_plugins *ps, const char *tenant, const char *device);
/* The loaded transport called name, or NULL. */
hd_plugin *hd__plugins_find(hd_plugins *ps, const char *name);
/* ops.flags of a loaded transport (0 for an ABI 1.0 one). */
uint32_t hd__plugin_flags(const hd_plugin *p);
const char *hd__plugin_name(const hd_plugin *p);

/* The directory transports load from: [plugins] dir, else <directory of heraldd>/transports. */
void hd__plugin_dir(const hd_config *cfg, char *buf, size_t len);
/* For heraldd --check: open every transport the config loads, check its ABI and the keys of
 * its [transport] section, and close it again, without creating or starting anything. */
int hd__plugins_check(const hd_config *cfg, char *err, size_t errlen);
int hd__plugins_load(hd_broker *b, char *err, size_t errlen);
int hd__plugins_start(hd_plugins *ps, char *err, size_t errlen);
void hd__plugins_offer(hd_plugins *ps, const hd_offer *o);
/* Call every plugin's stop(), cancel pending retries. */
void hd__plugins_stop(hd_plugins *ps);
/* destroy() every plugin and dlclose; after the loop drained. */
void hd__plugins_free(hd_plugins *ps);
size_t hd__plugins_inflight(const hd_plugins *ps);

/* The host table (host.c). */
const hd_host *hd__host_table(void);

#endif
