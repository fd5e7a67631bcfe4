/* release.h — the release catalog: which versions of which app a tenant (store) publishes,
 * their packages on disk, their staged rollout and state; the release notices pushed to
 * devices; device inventories and install reports; the counters behind GET /v1/reports.
 * The HTTP routes are release_api.c; the protocol is docs/protocols/releases.md.
 *
 * Packages are content-addressed: <data_dir>/packages/<sha256[0:2]>/<sha256> (hex, lower
 * case), written once (temp file, fsync, rename, directory fsync) before the metadata that
 * names them is committed, so a committed release always has its file. Two releases with
 * the same bytes share one file.
 *
 * Tables (LMDB, in the store's environment, opened by hd__release_open; numbers big-endian;
 * "vl" is the version's length in one byte):
 *   rel          app u32 · version             -> release record (release.c: rec_encode)
 *   rel_apps     tenant u32 · app u32          -> flags u8 (1: required)   apps with releases
 *   rel_notified app u32 · vl · version · dev u64 -> notified at (ms)      at most one notice
 *   rel_fanout   app u32 · version             -> cursor dev u64 · gen u32  fan-out to resume
 *   inventory    dev u64 · app u32             -> version                  update-check
 *   inv_devs     app u32 · dev u64             -> -                        devices with the app
 *   rel_counts   app u32 · vl · version · kind u8 [· reason] -> u64        report counters
 *   installs     dev u64 · app u32 · ts i64 · n u32 -> JSON of the report  as received
 * The MSISDN an update-check carries goes to push.c's dev_msisdn. app u32 is the store's app
 * number, which belongs to exactly one tenant, so no tenant ever reads another's rows.
 *
 * Threads: every function here runs on the loop thread. Writes go through the writer
 * (HD_OP_FN) and are durable before any callback says so; reads use the store's read
 * transaction. Ownership is said per function.
 */
#ifndef HERALD_RELEASE_H
#define HERALD_RELEASE_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

typedef struct hd_broker hd_broker;
typedef struct hd_releases hd_releases;

#define HD_REL_MAX_VERSION 64 /* bytes of a version string: [A-Za-z0-9._+-]{1,64} */
#define HD_REL_MAX_NOTES 1024

enum hd_release_state {
  HD_REL_ACTIVE = 0,    /* offered and notified inside its rollout */
  HD_REL_PAUSED = 1,    /* no new notices nor update-check offers; downloads still work */
  HD_REL_WITHDRAWN = 2, /* gone from update-check; downloads answer 410 */
};

/* One release as the download path needs it. Plain data, copied out of the store. */
typedef struct hd_release_info {
  char path[4096];      /* the package file: <data_dir>/packages/<sha[0:2]>/<sha> */
  uint64_t size;        /* bytes */
  char sha256[65];      /* lower-case hex, NUL-terminated */
  int state;            /* enum hd_release_state */
  uint32_t rollout_bp;  /* rollout in hundredths of a percent: 0..10000 (1000 = 10%) */
  int64_t created_ms;   /* Unix ms */
  int has_code;         /* 1 if the release has an integer version code */
  int64_t code;
  uint32_t app_num;     /* the store's app number (unique across tenants) */
} hd_release_info;

/* Look up (tenant, app, version). Loop thread (opens, or shares, the store's read
 * transaction; never waits for the writer). Returns 0 and fills *out, HD_ENOTFOUND when the
 * tenant has no such app or release (another tenant's release is simply not found), or
 * another HD_E*. The caller decides what the state means (withdrawn: 410). */
int hd__release_lookup(hd_releases *rs, uint32_t tenant_num, const char *app,
                       const char *version, hd_release_info *out);

/* Is the device inside the release's rollout? 1 yes, 0 no. Pure and thread-safe: a device is
 * inside when the first 4 bytes of SHA-256(tenant "/" app "/" version "/" device), read as a
 * big-endian u32, mod 10000 are < rollout_bp. rollout_bp >= 10000: everyone; 0: no one. */
int hd__release_in_rollout(const char *tenant, const char *app, const char *version,
                           const char *device, uint32_t rollout_bp);

/* Count one completed download of (tenant, app, version) (the response covered the last
 * byte). Queued to the writer; durable at its next commit; best effort (a failure is
 * logged, not returned). Loop thread; strings are copied. */
void hd__release_count_download(hd_releases *rs, uint32_t tenant_num, const char *app,
                                const char *version);

/* ---- version order ---- */
/* Compare two versions: <0, 0, >0. When both have a code (has_a, has_b) the codes decide;
 * otherwise the strings, segment by segment (split on '.', '-', '+'): numeric segments
 * numerically, others bytewise, a numeric segment above a non-numeric one, a missing
 * numeric segment counts as 0 ("1.0" == "1.0.0"), and a version that continues with a
 * non-numeric segment where the other has ended is a pre-release, so lower ("1.0.0-rc1" <
 * "1.0.0"). Pure. */
int hd__release_vercmp(const char *a, int has_a, int64_t code_a, const char *b, int has_b,
                       int64_t code_b);
/* 1 if v is a valid version string: [A-Za-z0-9._+-]{1,64} starting with a letter or digit. */
int hd__release_valid_version(const char *v);
/* Parse a rollout percentage ("10", "10%", "0.5", "12.25") into hundredths of a percent.
 * Returns 0 or HD_EINVAL (not a number, < 0, > 100, more than two decimals). */
int hd__release_parse_rollout(const char *s, uint32_t *bp);

/* ---- the catalog, for release_api.c (loop thread) ---- */
typedef struct hd_tenant hd_tenant;

/* A release with everything the API shows. Plain data. */
typedef struct hd_release {
  uint32_t tenant_num;
  uint32_t app_num;
  char app[HD_STORE_MAX_ID + 1];
  char version[HD_REL_MAX_VERSION + 1];
  int has_code;
  int64_t code;
  uint64_t size;
  unsigned char sha256[32];
  int state;
  uint32_t rollout_bp;
  int64_t created_ms;
  int required;         /* the app is marked as one every device of the tenant must have */
  char notes[HD_REL_MAX_NOTES + 1];
} hd_release;

/* The release (tenant, app, version) into *out: 0, HD_ENOTFOUND, or another HD_E*. */
int hd__release_get(hd_releases *rs, uint32_t tenant_num, const char *app, const char *version,
                    hd_release *out);
/* Every release of the app, newest first (version order): *out is malloc'd (caller frees),
 * *n its count (0 and NULL when none, or the tenant has no such app). */
int hd__release_list(hd_releases *rs, uint32_t tenant_num, const char *app, hd_release **out,
                     size_t *n);
/* The download URL of a release: <public_url>/v1/apps/<app>/releases/<version>/package. */
void hd__release_url(const hd_releases *rs, const char *app, const char *version, char *buf,
                     size_t buflen);

/* status 0: rel is the release as committed; created 1 when it is new (201), 0 when the same
 * bytes were uploaded again for the version (200). HD_EEXIST: the version exists with other
 * bytes (409). rel is valid during the call only; reason may be NULL. */
typedef void (*hd_release_cb)(void *ud, int status, const hd_release *rel, int created,
                              const char *reason);

typedef struct hd_release_new {
  hd_tenant *tenant;
  const char *app, *version;
  const char *notes;        /* may be NULL */
  int has_code;
  int64_t code;
  uint32_t rollout_bp;
  int required;
  const char *file;         /* the package, complete and fsync'd (the spooled upload) */
  uint64_t size;
  const unsigned char *sha256;
} hd_release_new;
/* Add a release. Takes the file: it is moved to <data_dir>/packages/<sha[0:2]>/<sha> (or
 * deleted when that package exists already) on the libuv pool, then the metadata is committed
 * and the notices start. Strings are copied. cb runs exactly once, after the commit (or on
 * failure), possibly before this returns. */
void hd__release_add(hd_releases *rs, const hd_release_new *req, hd_release_cb cb, void *ud);

typedef struct hd_release_patch {
  int set_rollout;          /* 1: rollout_bp is the new rollout */
  uint32_t rollout_bp;
  int state;                /* enum hd_release_state, or -1: unchanged */
  int required;             /* 0 / 1, or -1: unchanged */
} hd_release_patch;
/* Change a release's rollout, state or the app's required mark. A raised rollout, or the
 * state becoming active, notifies the devices newly inside. cb as for hd__release_add
 * (created 0). HD_ENOTFOUND when the tenant has no such release. */
void hd__release_patch(hd_releases *rs, hd_tenant *t, const char *app, const char *version,
                       const hd_release_patch *p, hd_release_cb cb, void *ud);

/* update-check */
typedef struct hd_release_inv {
  const char *app;
  const char *version;
} hd_release_inv;
typedef struct hd_release_offer {
  hd_release rel;           /* what to install */
  int install;              /* 1: the app is missing (required app); 0: an upgrade */
  char from[HD_REL_MAX_VERSION + 1]; /* the installed version, "" for an install */
} hd_release_offer;
/* status 0: offers[n] (valid during the call). */
typedef void (*hd_update_cb)(void *ud, int status, const hd_release_offer *offers, size_t n,
                             const char *reason);
/* Record the device's inventory (replacing the previous one; apps the tenant does not have
 * are left out) and, when given, its MSISDN (normalized digits); after the commit, offer the
 * newest active release inside the rollout of each installed app that is newer than the
 * installed version, and of each required app that is missing. At most HD_REL_MAX_INV
 * entries. Strings are copied. */
#define HD_REL_MAX_INV 256
void hd__release_update_check(hd_releases *rs, hd_tenant *t, const char *device,
                              uint64_t dev_num, const hd_release_inv *inv, size_t n,
                              const char *msisdn, hd_update_cb cb, void *ud);

/* install reports */
#define HD_REL_MAX_REASON 256
typedef struct hd_install_report {
  const char *app, *version;
  int success;              /* 1 success, 0 failure */
  const char *reason;       /* failure: required, <= HD_REL_MAX_REASON bytes; else NULL */
  const char *action;       /* "install", "upgrade" or NULL */
} hd_install_report;
/* Store the report, count it, and publish the "install" event, in that order; cb(ud, status,
 * reason) after the commit. HD_ENOTFOUND when the tenant has no such release. */
void hd__release_install_report(hd_releases *rs, hd_tenant *t, const char *device,
                                uint64_t dev_num, const hd_install_report *rep,
                                void (*cb)(void *ud, int status, const char *reason), void *ud);

/* reports: per release of the tenant (optionally one app, one version), its counters. */
typedef struct hd_release_reason {
  const char *text;         /* not NUL-terminated; valid during the callback */
  size_t len;
  uint64_t n;
} hd_release_reason;
typedef struct hd_release_counts {
  uint64_t success, failure, downloads, notified;
  const hd_release_reason *reasons;
  size_t nreasons;
} hd_release_counts;
int hd__release_reports(hd_releases *rs, uint32_t tenant_num, const char *app,
                        const char *version,
                        int (*cb)(void *ud, const hd_release *rel, const hd_release_counts *c),
                        void *ud);

/* ---- lifecycle (broker.c) ---- */
/* Open the tables and the package directory (<data_dir>/packages, tmp/ inside it, whose
 * leftovers from a crash are removed). Start-up, before the writer runs. *out owned by the
 * caller until hd__release_free. */
int hd__release_open(hd_broker *b, hd_releases **out, char *err, size_t errlen);
/* <data_dir>/packages/tmp: where uploads are spooled (same filesystem as the packages). */
const char *hd__release_tmp_dir(const hd_releases *rs);
/* After the HTTP listener, the writer and the transports started: work out the public URL,
 * resume fan-outs a restart interrupted. */
void hd__release_start(hd_releases *rs);
/* Stop fan-outs (their in-flight writes still complete) and close handles; the loop must
 * run afterwards for them to close. */
void hd__release_stop(hd_releases *rs);
void hd__release_free(hd_releases *rs);

#endif
