/* rtenant.h — tenants created at run time (through the admin API, admin.c): their durable
 * records, their key files, loading them at start, creating them and rotating their keys.
 *
 * Durable state, for each runtime tenant:
 *   - a row in the LMDB database "rt_tenants": name -> JSON of its settings (the fields the
 *     admin API took) and "created" (Unix ms). It is committed through the writer (HD_OP_FN)
 *     in the same transaction that gives the tenant its number and creates its declared apps,
 *     so the tenant exists in the store entirely or not at all;
 *   - its keys under <data_dir>/tenants/<name>/, laid out as for a configured tenant
 *     (publish.key, device.secret; previous.key while a rotated-out key still works), written
 *     on the libuv thread pool, never on the loop, and before the commit: a crash in between
 *     leaves key files without a row, which is no tenant, and creating it again rewrites them.
 *
 * A runtime tenant's settings are validated by the config parser itself: the JSON becomes the
 * [tenant NAME] section it would be in herald.conf, so it takes the same keys with the same
 * checks and defaults as a configured tenant (except self_register, empty unless given).
 *
 * Names are unique across config and runtime tenants. A name the store already knows (a
 * tenant once declared in the config, since removed) is refused too: a new tenant must not
 * inherit an old one's devices and messages. At start, a runtime tenant whose name the config
 * now declares is skipped with a warning: the config's tenant is the one that exists (it reads
 * the same key files and store rows).
 *
 * Ownership: hd_rtenants belongs to the admin module; tenants it creates or loads are handed
 * to the broker's hd_tenants, which owns them from then on. Loop thread only, except where
 * said.
 */
#ifndef HERALD_RTENANT_H
#define HERALD_RTENANT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "broker.h"

typedef struct hd_rtenants hd_rtenants;

/* Open the records' database and load every runtime tenant into b->tenants (after the
 * config's). Start-up only: before the writer thread runs (it blocks on the disk). err says
 * which tenant and why on failure. */
int hd__rtenants_open(hd_broker *b, hd_rtenants **out, char *err, size_t errlen);
void hd__rtenants_free(hd_rtenants *rt);

/* A tenant's settings as JSON -> a config holding just that tenant (out->tenants[0]), checked
 * as a [tenant NAME] section would be. Fields: "name" (required), "apps" (array of app ids or
 * "*"; default "*"), "self_register" (array, "*" or true; default none),
 * "self_register_per_min", "allowed_origins" (array or "*"), "device_token_ttl" (seconds),
 * "max_publish_rate", "publish_burst" (integers). With stored set, "created" is allowed too
 * (a record read back). Returns 0, or HD_EINVAL with the reason in why; free out with
 * hd__config_free after success. Any thread. */
int hd__rtenant_parse(const json_t *spec, int stored, hd_config *out, char *why, size_t whylen);

/* status 0: t is the tenant (created, or with its new key); else an HD_E* code and a reason
 * (static text or NULL). Runs exactly once, possibly before the call returns. */
typedef void (*hd_rtenant_cb)(void *ud, int status, hd_tenant *t, const char *reason);

/* Create a tenant from its JSON settings (see hd__rtenant_parse): key files written off the
 * loop, then the record committed; only then does the tenant exist (added to b->tenants) and
 * cb see it, with its publish key in t->publish_key. HD_EEXIST if the name is taken (config
 * or runtime tenant, a creation in flight, or a name the store knew before); HD_EINVAL for bad
 * settings. spec is not kept. */
void hd__rtenant_create(hd_rtenants *rt, const json_t *spec, hd_rtenant_cb cb, void *ud);

/* Give a runtime tenant a new publish key; the current one stays valid overlap_s more seconds
 * (0: not at all), replacing any older key still in its overlap. The files are written off the
 * loop, previous.key first; the new key works once cb runs. HD_EEXIST ("conflict") for a
 * tenant of the config (its keys are the config's to change) or one already rotating. */
void hd__rtenant_rotate_key(hd_rtenants *rt, hd_tenant *t, int64_t overlap_s, hd_rtenant_cb cb,
                            void *ud);

#endif
