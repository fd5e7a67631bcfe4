/* tenant.h — tenants at run time: their publish keys, device-token secrets, which apps they
 * declare and which of those browsers may self-register for; and device tokens.
 *
 * Keys and secrets live in <data_dir>/tenants/<name>/ (publish.key, device.secret, mode 0600):
 * a publish key the config does not name is generated at first start and logged once, then
 * read back on every later start. A device token is
 *     <tenant>.<generation>.<base64url(HMAC-SHA256(device secret, tenant|device|generation))>
 * so the broker verifies it with no lookup; the generation lets a device's tokens be revoked
 * by bumping it (the store keeps the current generation per device).
 *
 * Ownership: hd_tenants owns every hd_tenant and its strings; config strings are copied.
 * Loop thread only, except the pure token functions, which are thread-safe.
 */
#ifndef HERALD_TENANT_H
#define HERALD_TENANT_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "ratelimit.h"
#include "store.h"

#define HD_KEY_LEN 43     /* base64url of 32 random bytes */
#define HD_TOKEN_MAX 160

typedef struct hd_tenant {
  char *name;
  uint32_t num;
  char publish_key[256];
  unsigned char device_secret[32];
  int any_app;             /* apps = * */
  char **apps;
  size_t napps;
  int self_any;            /* self_register = * */
  char **self_register;
  size_t nself;
  hd_ratelimit *self_limit; /* NULL: unlimited */
  int origins_any;         /* allowed_origins = * */
  char **origins;          /* allowed_origins: web origins that may call the API (CORS) */
  size_t norigins;
} hd_tenant;

typedef struct hd_tenants {
  hd_tenant *v;
  size_t n;
} hd_tenants;

/* Load or create every tenant of cfg: key files under data_dir, and the tenant and its
 * declared apps in the store. On error, err says which tenant and why. */
int hd__tenants_load(hd_tenants *ts, const hd_config *cfg, hd_store *store, char *err,
                     size_t errlen);
void hd__tenants_free(hd_tenants *ts);

hd_tenant *hd__tenant_by_name(const hd_tenants *ts, const char *name);
/* The tenant whose publish key this is (compared in constant time), or NULL. */
hd_tenant *hd__tenant_by_key(const hd_tenants *ts, const char *key);
/* 1 if the tenant declares the app (or takes any app id). */
int hd__tenant_has_app(const hd_tenant *t, const char *appid);
/* 1 if browsers may register for the app without a key. */
int hd__tenant_self_register(const hd_tenant *t, const char *appid);
/* 1 if a page of `origin` ("http://host:port", as browsers send it) may use the tenant's API
 * cross-origin: it is in allowed_origins (compared without regard to case), or the list is *.
 * The opaque origin "null" (files, sandboxed frames) never matches, not even *. */
int hd__tenant_allows_origin(const hd_tenant *t, const char *origin);

/* Write a token for the device into out (HD_TOKEN_MAX bytes). */
int hd__token_mint(const hd_tenant *t, const char *device_id, uint32_t gen, char *out,
                   size_t outlen);
/* Check a token's MAC for device_id; *tenant and *gen say whose and which generation.
 * HD_EAUTH when malformed or wrong. The caller still compares gen with the store's. */
int hd__token_verify(const hd_tenants *ts, const char *device_id, const char *token,
                     hd_tenant **tenant, uint32_t *gen);

/* A random unguessable id: base64url of nbytes random bytes, NUL-terminated into out. */
int hd__random_id(char *out, size_t outlen, size_t nbytes);
/* 1 if s is a valid app or device id: [A-Za-z0-9._:-]{1,128}. */
int hd__valid_id(const char *s);

#endif
