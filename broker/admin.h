/* admin.h — the admin API, on the HTTP listener, for the operator's tools (herald tenant ...):
 *
 *   POST /v1/admin/tenants                     create a tenant at run time (rtenant.c), 201
 *        {"name", "publish_key", ...}: the only time its key is shown
 *   GET  /v1/admin/tenants                     {"tenants": [...]}: every tenant, configured and
 *        created, with its settings and "created"; never a key
 *   GET  /v1/admin/tenants/{name}              one tenant, the same object
 *   POST /v1/admin/tenants/{name}/rotate-key   body {"overlap": seconds} optional (default
 *        [admin] key_overlap): 200 {"name", "publish_key", "previous_key_valid_until"}; the old
 *        key works until then
 *
 * Who may call it: a peer with a loopback address (127.0.0.0/8, ::1, IPv4-mapped too), or one
 * [admin] allow_from lists; anyone else gets 403 whatever they send. Then the admin key, as
 * Authorization: Bearer: [admin] key, else <data_dir>/admin.key, generated at first start
 * (mode 0600); compared in constant time; 401 without it. Cross-origin pages never get in
 * (no tenant's allowed_origins covers an admin key). Errors are {"error", "message"}; a name
 * taken is 409 "exists", an unknown one 404.
 *
 * Ownership: the broker holds the hd_admin (b->admin) from hd__admin_open to hd__admin_free.
 * Loop thread only.
 */
#ifndef HERALD_ADMIN_H
#define HERALD_ADMIN_H

#include <stddef.h>

#include "broker.h"

typedef struct hd_admin hd_admin;

/* Start-up, after the config's tenants are loaded and before the writer thread runs: the
 * admin key (read or generated) and the runtime tenants (added to b->tenants). Sets b->admin.
 * On error err says why. */
int hd__admin_open(hd_broker *b, char *err, size_t errlen);
/* Add the routes above to b->http. */
int hd__admin_routes(hd_broker *b);
void hd__admin_free(hd_admin *a);

/* 1 if a peer address (as hd__http_peer gives it: "127.0.0.1", "::1", "::ffff:10.0.0.1") may
 * use the admin API: loopback, or inside one of allow (addresses or CIDR prefixes, as
 * [admin] allow_from takes them; "*" is any). "unknown" or anything unparsable: 0. */
int hd__admin_peer_allowed(const char *peer, char *const *allow, size_t nallow);

#endif
