/* store.h — Herald's durable state in LMDB: tenants, apps, devices, registrations, messages,
 * acknowledgements, collapse keys and expiry. The layout is described in docs/ARCHITECTURE.md.
 *
 * Threads: one writer thread (writer.c) calls the hd__store_w* functions inside a write
 * transaction it owns; the loop thread reads with hd__store_r* inside a read transaction
 * (hd__store_rbegin/rend reuse one MDB_txn handle, so a read costs no allocation). LMDB lets
 * both run at once: readers never wait for the writer.
 *
 * Ids: every message gets the next value of one global sequence, so a message id is a u64
 * that is also a cursor; commits are serialized, so once id N is visible every smaller id that
 * will ever exist is visible too.
 *
 * Errors: HD_E* codes. HD_EFULL means the LMDB map is full; the transaction that hit it must be
 * aborted (the writer does that) and the store stays readable.
 */
#ifndef HERALD_STORE_H
#define HERALD_STORE_H

#include <lmdb.h>
#include <stddef.h>
#include <stdint.h>

typedef struct hd_store hd_store;

#define HD_STORE_MAX_ID 128       /* longest device / app id in bytes */
#define HD_STORE_MAX_COLLAPSE 128 /* longest collapse key */

/* A message as read from the store. Points into LMDB memory: valid only until the read
 * transaction ends, so callers copy what they keep. */
typedef struct hd_store_msg {
  uint64_t seq;
  uint32_t app_num;
  uint64_t dev_num;      /* 0: broadcast to the app */
  int64_t created_ms;
  int64_t expires_ms;
  const char *collapse;  /* not NUL-terminated */
  size_t collapse_len;
  const void *data;      /* msgpack */
  size_t data_len;
} hd_store_msg;

typedef struct hd_store_device {
  uint32_t tenant_num;
  uint64_t dev_num;
  uint32_t gen;          /* token generation; bumping it revokes old tokens */
  int64_t created_ms;
} hd_store_device;

typedef struct hd_store_reg {
  uint32_t app_num;
  uint64_t floor;        /* every broadcast with seq <= floor is done for this device */
} hd_store_reg;

typedef struct hd_store_stats {
  uint64_t map_size;
  uint64_t used_bytes;
  uint64_t last_seq;
} hd_store_stats;

/* Open (creating) the environment in dir with the given map size. *out owned by caller. */
int hd__store_open(const char *dir, uint64_t map_size, hd_store **out);
/* Close the environment. No transaction may be open. */
void hd__store_close(hd_store *s);
MDB_env *hd__store_env(hd_store *s);
/* Databases other modules keep in the same environment (release.c, push.c): open (creating)
 * the named database and return its handle, valid until hd__store_close. Call at start-up,
 * before the writer thread runs, with no transaction open in this thread. At most
 * HD_STORE_MAX_EXTRA_DBS names. Their rows are written inside the writer's group commit
 * through HD_OP_FN ops, and read on the loop thread inside hd__store_rbegin's transaction. */
#define HD_STORE_MAX_EXTRA_DBS 24
int hd__store_dbi(hd_store *s, const char *name, MDB_dbi *out);
int hd__store_stats(hd_store *s, hd_store_stats *out);

/* ---- write side: writer thread (or start-up, before it runs) ---- */
int hd__store_wbegin(hd_store *s, MDB_txn *parent, MDB_txn **out);
/* Commit a transaction begun with hd__store_wbegin (a child too): first writes what the store
 * kept back for it (the sequence counter, written once per transaction rather than once per
 * publish), then mdb_txn_commit. Returns LMDB's code (hd__store_commit_error maps it). A write
 * transaction that published MUST be committed through this. */
int hd__store_wcommit(hd_store *s, MDB_txn *t);

/* Find or create the tenant's number. */
int hd__store_w_tenant(hd_store *s, MDB_txn *t, const char *name, uint32_t *num);
/* The tenant's number if the store knows the name, else HD_ENOTFOUND. Any transaction: the
 * writer's, or the loop thread's read transaction. */
int hd__store_tenant_find(hd_store *s, MDB_txn *t, const char *name, uint32_t *num);
/* Find the app; create it when `create` is set. HD_ENOTFOUND otherwise. */
int hd__store_w_app(hd_store *s, MDB_txn *t, uint32_t tenant, const char *appid, int create,
                    uint32_t *app_num);

typedef struct hd_store_pub {
  uint32_t app_num;
  uint64_t dev_num;       /* 0: every device registered to the app */
  int64_t now_ms;
  int64_t expires_ms;
  const char *collapse;   /* may be NULL */
  size_t collapse_len;
  const void *data;       /* msgpack */
  size_t data_len;
} hd_store_pub;
/* Append one message: O(1) writes whatever the number of devices. *seq gets its id.
 * *replaced gets the id of the undelivered message it collapsed, or 0. */
int hd__store_w_publish(hd_store *s, MDB_txn *t, const hd_store_pub *p, uint64_t *seq,
                        uint64_t *replaced);

/* Look a device up in a write txn; HD_ENOTFOUND if unknown. */
int hd__store_w_device(hd_store *s, MDB_txn *t, uint32_t tenant, const char *device_id,
                       hd_store_device *out);
/* Create the device (HD_EEXIST if it exists). */
int hd__store_w_device_create(hd_store *s, MDB_txn *t, uint32_t tenant, const char *device_id,
                              int64_t now_ms, hd_store_device *out);
/* Bump the device's token generation, so every token minted before stops verifying; *out
 * gets the device with its new generation. HD_ENOTFOUND if unknown, HD_ETOOBIG if the
 * generation is exhausted (it never wraps). */
int hd__store_w_device_bump(hd_store *s, MDB_txn *t, uint32_t tenant, const char *device_id,
                            hd_store_device *out);
/* Register the device for the app if not yet; new registrations start after the current
 * last id, so a device does not receive what was broadcast before it registered. */
int hd__store_w_register(hd_store *s, MDB_txn *t, uint64_t dev_num, uint32_t app_num);
/* Is the device registered for the app? 0 yes, HD_ENOTFOUND no. */
int hd__store_w_is_registered(hd_store *s, MDB_txn *t, uint64_t dev_num, uint32_t app_num);
/* Acknowledge ids for the device. Unknown, foreign or already acked ids are ignored (acks are
 * idempotent). *acked counts the ids that took effect. */
int hd__store_w_ack(hd_store *s, MDB_txn *t, uint64_t dev_num, const uint64_t *ids, size_t n,
                    int64_t now_ms, size_t *acked);
/* Bytes the map can still hand out: its never-used tail, plus (only when the tail is shorter
 * than `want`, since it costs a scan) the pages on LMDB's free list. Opens its own read
 * transaction: call it with no write transaction open in this thread. */
int hd__store_room(hd_store *s, uint64_t want, uint64_t *room);
/* hd_err_from_mdb() for the result of committing a write transaction. LMDB turns a short
 * write into EIO (its source says "short write, filesystem full?"): when the filesystem under
 * the store then has next to no space left, that is reported as HD_EFULL like ENOSPC, since
 * the cure is the same (free space; nothing of the transaction was kept). */
int hd__store_commit_error(hd_store *s, int mdb_rc);
/* Commit an otherwise empty change. LMDB reuses pages freed by transaction N only from
 * transaction N+2 on, and aborted transactions do not count: after a failure for lack of
 * space, this makes the space that deletes just freed usable again. */
int hd__store_touch(hd_store *s);
/* What a publish of these sizes costs in map space, pessimistically (page rounding, index rows,
 * copy-on-write of the B-tree path). */
uint64_t hd__store_pub_cost(hd_store *s, size_t data_len, size_t collapse_len);
/* Look at up to `max` messages whose expiry row is due by now_ms and delete those expired.
 * *deleted counts the deleted; *more (may be NULL) is set when it stopped at max with more
 * rows due, so the caller can run it again at once. */
int hd__store_w_sweep(hd_store *s, MDB_txn *t, int64_t now_ms, size_t max, size_t *deleted,
                      int *more);

/* ---- read side: loop thread ---- */
/* Start (or renew) the loop thread's read transaction. Pair with hd__store_rend. */
int hd__store_rbegin(hd_store *s, MDB_txn **out);
void hd__store_rend(hd_store *s, MDB_txn *t);

int hd__store_r_device(hd_store *s, MDB_txn *t, uint32_t tenant, const char *device_id,
                       hd_store_device *out);
#define HD_STORE_MAX_REGS 256 /* apps one device may register for */
/* The device's registrations, up to max; *n gets how many. */
int hd__store_r_regs(hd_store *s, MDB_txn *t, uint64_t dev_num, hd_store_reg *regs, size_t max,
                     size_t *n);
/* App number -> app id (NUL-terminated into buf) and tenant number. */
int hd__store_r_app_name(hd_store *s, MDB_txn *t, uint32_t app_num, uint32_t *tenant, char *buf,
                         size_t buflen);
/* (tenant, app id) -> app number; HD_ENOTFOUND if the tenant has no such app. */
int hd__store_r_app_num(hd_store *s, MDB_txn *t, uint32_t tenant, const char *appid,
                        uint32_t *app_num);
/* Device number -> device id (NUL-terminated into buf) and tenant number. */
int hd__store_r_dev_name(hd_store *s, MDB_txn *t, uint64_t dev_num, uint32_t *tenant, char *buf,
                         size_t buflen);
/* Up to max device numbers registered to the app with dev_num > after, ascending; *n gets how
 * many. Page through an app's devices with after = the last one returned. */
int hd__store_r_app_devs_page(hd_store *s, MDB_txn *t, uint32_t app_num, uint64_t after,
                              uint64_t *devs, size_t max, size_t *n);
/* 1 if message seq of the app is done for the device (acked, or under its floor), 0 if not,
 * or a negative HD_E*. */
int hd__store_r_is_done(hd_store *s, MDB_txn *t, uint64_t dev_num, uint32_t app_num,
                        uint64_t seq);
/* One message by its key (dev_num 0: the app's log). HD_ENOTFOUND once acked away or expired.
 * *out points into the transaction's memory. */
int hd__store_r_msg(hd_store *s, MDB_txn *t, uint32_t app_num, uint64_t dev_num, uint64_t seq,
                    hd_store_msg *out);
/* Count of devices registered to the app. */
int hd__store_r_app_devices(hd_store *s, MDB_txn *t, uint32_t app_num, uint64_t *count);

/* Collect the device's pending messages with seq > after (after == 0: from each app's floor),
 * not acked, not expired at now_ms, oldest first, at most max. cb is called for each, in
 * order; a non-zero return from cb stops the walk and is returned. */
typedef int (*hd_store_msg_cb)(void *ud, const hd_store_msg *m);
int hd__store_r_pending(hd_store *s, MDB_txn *t, uint64_t dev_num, uint64_t after, size_t max,
                        int64_t now_ms, hd_store_msg_cb cb, void *ud);

#endif
