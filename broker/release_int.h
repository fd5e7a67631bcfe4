/* release_int.h — what the release module's two files share: release.c (catalog, update-check,
 * reports) and release_fanout.c (release notices). Not for other modules: they use release.h.
 * Loop thread, except the key and record helpers, which the writer thread uses too. */
#ifndef HERALD_RELEASE_INT_H
#define HERALD_RELEASE_INT_H

#include <lmdb.h>
#include <uv.h>

#include "metrics.h"
#include "release.h"

#define HD_REL_MV(p, n) ((MDB_val){.mv_size = (n), .mv_data = (void *)(p)})
#define MV HD_REL_MV

/* Devices one fan-out step examines by default ([release] fanout_batch). */
#define HD_REL_FANOUT_CHUNK 256

/* rel_counts kinds */
enum { K_SUCCESS = 'S', K_FAILURE = 'F', K_REASON = 'R', K_DOWNLOAD = 'D', K_NOTIFIED = 'N' };

typedef struct hd_rel_fanout hd_rel_fanout;

struct hd_releases {
  hd_broker *b;
  hd_store *store;
  MDB_dbi rel, apps, notified, fanout, inv, inv_devs, counts, installs;
  char pkg_dir[3968];         /* <data_dir>/packages: leaves room for "/xx/<sha256>" */
  char tmp_dir[4000];
  char public_url[1024];
  size_t chunk;               /* devices per fan-out step */
  hd_rel_fanout *jobs;        /* release_fanout.c */
  uv_timer_t timer;           /* runs the fan-out steps */
  int timer_live;
  int stopping;
  hd_metric *m_notices, *m_install_ok, *m_install_fail;
};

/* Keys: rel / rel_fanout "app u32 · version"; rel_notified / rel_counts start with
 * "app u32 · vl · version". Both return the bytes written into k. */
size_t hd__rel_key(unsigned char *k, uint32_t app, const char *version);
size_t hd__rel_vprefix(unsigned char *k, uint32_t app, const char *version);
/* A release of app_num, in any transaction: 0, HD_ENOTFOUND, HD_EIO. */
int hd__rel_read(hd_releases *rs, MDB_txn *t, uint32_t app_num, const char *version,
                 hd_release *out);
/* Add delta to a counter (kind K_*, reason only for K_REASON), in a write transaction. */
int hd__rel_count_add(hd_releases *rs, MDB_txn *t, uint32_t app, const char *version, int kind,
                      const char *reason, uint64_t delta);
/* 32 bytes -> 64 lower-case hex digits and a NUL. */
void hd__rel_hex(const unsigned char *sha, char *out);
hd_tenant *hd__rel_tenant_by_num(hd_releases *rs, uint32_t num);

/* release_fanout.c: start (or restart from `cursor` with generation `gen`) the notices of a
 * release whose rel_fanout row says so; set up the timer and resume every row (start-up);
 * stop (the timer closes; steps in flight end without a successor); free the jobs. */
void hd__rel_fanout_start(hd_releases *rs, hd_tenant *tenant, uint32_t app_num, const char *app,
                          const char *version, uint64_t cursor, uint32_t gen);
void hd__rel_fanout_init(hd_releases *rs);
void hd__rel_fanout_stop(hd_releases *rs);
void hd__rel_fanout_free(hd_releases *rs);

#endif
