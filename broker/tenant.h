/* tenant.h — tenants at run time: their publish keys, device-token secrets, which apps they
 * declare and which of those browsers may self-register for; and device tokens.
 *
 * Keys and secrets live in <data_dir>/tenants/<name>/ (publish.key, device.secret, mode 0600):
 * a publish key the config does not name is generated at first start and logged once, then
 * read back on every later start. During a key rotation the previous key
 * (previous_publish_key) stays valid too, until previous_key_until; a tenant created at run
 * time (rtenant.c) keeps its previous key and that time in previous.key instead.
 *
 * Tenants come from the config and, at run time, from the admin API (rtenant.c). Each hd_tenant
 * is its own allocation and is never freed or moved before hd__tenants_free, so a pointer to
 * one (held by a request in flight, a plugin, a queued op) stays valid while tenants are added.
 *
 * A device token is
 *     <tenant>.<generation>.<expiry>.<base64url(HMAC-SHA256(device secret,
 *                                                 tenant|device|generation|expiry))>
 * so the broker verifies it with no lookup. expiry is in Unix seconds (0: never; set from the
 * tenant's device_token_ttl when minted). The generation lets a device's tokens be revoked or
 * rotated by bumping it (the store keeps the current generation per device).
 *
 * Ownership: hd_tenants owns every hd_tenant and its strings; config strings are copied.
 * Loop thread only (the token functions too: they share the tenant's keyed HMAC context),
 * except hd__tenant_files_write, which is thread-safe.
 */
#ifndef HERALD_TENANT_H
#define HERALD_TENANT_H

#include <openssl/evp.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "ratelimit.h"
#include "store.h"

typedef struct hd_metric hd_metric;

#define HD_KEY_LEN 43     /* base64url of 32 random bytes */
#define HD_TOKEN_MAX 160

typedef struct hd_tenant {
  char *name;
  uint32_t num;
  char publish_key[256];
  char previous_key[256];  /* "" when none */
  int64_t previous_until_ms; /* previous_key is accepted while now < this */
  int64_t token_ttl_s;     /* device_token_ttl; 0: tokens never expire */
  unsigned char device_secret[32];
  /* HMAC-SHA256 keyed with device_secret, made on the first token minted or checked: a token
   * is checked on every device request, and a one-shot HMAC() looks up the algorithm and
   * hashes the key each time (a fifth of the loop's time under a long-poll fan-out). */
  EVP_MAC_CTX *token_mac;
  int any_app;             /* apps = * */
  char **apps;             /* as declared (the admin API lists them in this order) */
  size_t napps;
  int self_any;            /* self_register = * */
  char **self_register;
  size_t nself;
  /* The same strings sorted (borrowed pointers): every publish asks whether its app is
   * declared, and a store may declare hundreds (a scan of 641 halved the ingest rate). */
  char **apps_sorted, **self_sorted;
  hd_ratelimit *self_limit; /* NULL: unlimited */
  int origins_any;         /* allowed_origins = * */
  char **origins;          /* allowed_origins: web origins that may call the API (CORS) */
  size_t norigins;
  int64_t max_publish_rate; /* publishes per second; 0: unlimited */
  int64_t publish_burst;    /* the bucket's size (max_publish_rate when not configured) */
  hd_ratelimit *pub_limit;  /* that cap's bucket; NULL: unlimited (pubcap.c takes from it) */
  hd_metric *m_rate_limited; /* its refusal counter, registered on first use (pubcap.c) */
  int runtime;             /* created through the admin API (rtenant.c), not the config */
  int64_t created_ms;      /* runtime tenants: when created (Unix ms); config tenants: 0 */
  int rotating;            /* a key rotation is writing its files (rtenant.c) */
} hd_tenant;

/* A publish key's slot in the key index: the key's keyed hash, whose key it is. */
typedef struct hd_key_slot {
  uint64_t hash;
  hd_tenant *t;            /* NULL: empty */
  int previous;            /* the tenant's previous_key, not its publish_key */
} hd_key_slot;

typedef struct hd_tenants {
  hd_tenant **v;           /* one allocation per tenant: pointers survive growth */
  size_t n, cap;
  /* Key index, so that finding a key's tenant costs the same with a thousand tenants as with
   * one: open addressing on a SipHash of each key under a random per-process key (the probe
   * sequence tells nothing about the stored keys), rebuilt on the next lookup after a change
   * (keys_stale). Up to HD_KEY_SCAN_MAX tenants no index is used: comparing every key costs
   * less than the hash. */
  hd_key_slot *slots;
  size_t nslots;           /* a power of two, or 0 */
  int keys_stale;
  EVP_MAC_CTX *sip;        /* SipHash-2-4, keyed once; NULL until the first index */
  /* Names, for a device token's tenant (checked on every device request): open addressing
   * on an FNV-1a hash of the name (names are not secret), filled as tenants are added. */
  hd_tenant **names;
  size_t nnames;           /* slots: a power of two, or 0 */
} hd_tenants;

#define HD_KEY_SCAN_MAX 8

/* Load or create every tenant of cfg: key files under data_dir, and the tenant and its
 * declared apps in the store. On error, err says which tenant and why. */
int hd__tenants_load(hd_tenants *ts, const hd_config *cfg, hd_store *store, char *err,
                     size_t errlen);
void hd__tenants_free(hd_tenants *ts);

/* A tenant's settings from tc (lists copied, rate limiters made); no keys yet, num 0. NULL on
 * ENOMEM. Freed with hd__tenant_free unless handed to hd__tenants_add. */
hd_tenant *hd__tenant_new(const hd_tenant_conf *tc);
void hd__tenant_free(hd_tenant *t);
/* Append t: ts owns it once this returns 0 (on HD_ENOMEM the caller still does). */
int hd__tenants_add(hd_tenants *ts, hd_tenant *t);
/* Say that a tenant's publish_key, previous_key or previous_until_ms changed (a rotation), or
 * keys were loaded after hd__tenants_add: the key index is rebuilt before the next lookup. */
void hd__tenants_keys_changed(hd_tenants *ts);
/* Read the tenant's key files under data_dir (publish.key, device.secret), creating what is
 * missing (a generated publish key is logged once). tc->publish_key, when set, is the key
 * instead of the file's; tc's previous_publish_key/previous_key_until the overlap. With
 * runtime set, the overlap comes from previous.key instead (see hd__tenant_files_write).
 * Start-up only: it blocks on the disk. */
int hd__tenant_keys_load(hd_tenant *t, const hd_tenant_conf *tc, const char *data_dir,
                         int runtime, char *err, size_t errlen);
/* Write a runtime tenant's key files under <data_dir>/tenants/<name>/, creating the
 * directories: previous.key first (previous_key and previous_until_ms, or removed when
 * previous_key is NULL), then device.secret (when secret is not NULL, 32 bytes), then
 * publish.key. Each file is written with mode 0600, fsync'd and renamed into place, and the
 * directory is fsync'd, so a crash leaves every file either old or new; the order keeps the
 * old key valid whichever file a crash stops at. Any thread (it blocks: not the loop's). */
int hd__tenant_files_write(const char *data_dir, const char *name, const char *publish_key,
                           const unsigned char *secret, const char *previous_key,
                           int64_t previous_until_ms);

hd_tenant *hd__tenant_by_name(const hd_tenants *ts, const char *name);
/* The tenant whose publish key this is, or whose previous key while its overlap lasts
 * (now_ms < previous_until_ms), or NULL. A candidate key is compared in full, in constant
 * time; with more than HD_KEY_SCAN_MAX tenants only the keys whose keyed hash matches are
 * candidates, otherwise all. hd__tenant_by_key uses the wall clock. */
hd_tenant *hd__tenant_by_key(hd_tenants *ts, const char *key);
hd_tenant *hd__tenant_by_key_at(hd_tenants *ts, const char *key, int64_t now_ms);
/* 1 if appid is a well-formed id (hd__valid_id: callers need not check it first) and the
 * tenant declares it (or takes any app id). */
int hd__tenant_has_app(const hd_tenant *t, const char *appid);
/* 1 if browsers may register for the app without a key. */
int hd__tenant_self_register(const hd_tenant *t, const char *appid);
/* 1 if a page of `origin` ("http://host:port", as browsers send it) may use the tenant's API
 * cross-origin: it is in allowed_origins (compared without regard to case), or the list is *.
 * The opaque origin "null" (files, sandboxed frames) never matches, not even *. */
int hd__tenant_allows_origin(const hd_tenant *t, const char *origin);

/* Write a token for the device into out (HD_TOKEN_MAX bytes), expiring the tenant's
 * device_token_ttl from now (never when that is 0). */
int hd__token_mint(const hd_tenant *t, const char *device_id, uint32_t gen, char *out,
                   size_t outlen);
/* The same with an explicit expiry in Unix seconds (0: never). */
int hd__token_mint_exp(const hd_tenant *t, const char *device_id, uint32_t gen, int64_t exp_s,
                       char *out, size_t outlen);
/* Check a token's MAC for device_id and that it has not expired; *tenant and *gen say whose
 * and which generation. HD_EAUTH when malformed, wrong or expired. The caller still compares
 * gen with the store's. hd__token_verify_at takes the time (Unix seconds) to judge expiry by;
 * hd__token_verify uses the wall clock. */
int hd__token_verify(const hd_tenants *ts, const char *device_id, const char *token,
                     hd_tenant **tenant, uint32_t *gen);
int hd__token_verify_at(const hd_tenants *ts, const char *device_id, const char *token,
                        int64_t now_s, hd_tenant **tenant, uint32_t *gen);
/* The tenant a token names (its first field), unverified, or NULL: for choosing a CORS
 * policy before the token is checked. */
hd_tenant *hd__token_tenant_guess(const hd_tenants *ts, const char *token);

/* Read a small secret file (trailing newlines and spaces cut) into buf, NUL-terminated; *len
 * gets its length. HD_ENOTFOUND if absent. Any thread. */
int hd__secret_read(const char *path, char *buf, size_t buflen, size_t *len);
/* Write a secret with mode 0600 from the start (never readable by others, not even briefly),
 * fsync'd, then renamed into place so a crash leaves either nothing or the whole file. Any
 * thread. */
int hd__secret_write(const char *path, const void *data, size_t len);

/* A random unguessable id: base64url of nbytes random bytes, NUL-terminated into out. */
int hd__random_id(char *out, size_t outlen, size_t nbytes);
/* 1 if s is a valid app or device id: [A-Za-z0-9._:-]{1,128}. */
int hd__valid_id(const char *s);

#endif
