/* writer.h — group commit: one thread applies queued write operations to the store, many per
 * LMDB transaction, commits (fsync) once, and only then hands each operation back to the loop
 * thread with its result. The loop never waits for the disk.
 *
 * Flow: the loop fills an hd_op and calls hd__writer_submit(); the writer thread takes every
 * queued op (up to max_batch) in one go, applies them in order inside one write transaction and
 * commits. While it commits, new ops queue up and form the next batch, so the number of fsyncs
 * per second stays bounded while throughput grows with load. After the commit the ops go back
 * through a uv_async and each op's done() runs on the loop thread: an acknowledgement is never
 * sent before the data is durable.
 *
 * Acks (HD_OP_ACK) may be held back (hd__writer_set_ack_delay, [store] ack_delay): they are
 * applied in submit order among themselves but commit together once the oldest has waited the
 * delay (or 65,536 are held, or the writer stops), in the room max_batch leaves in the batch
 * then due (what does not fit leads the next one). A device
 * that acks every message of a paced stream would otherwise put its ack pages into every
 * publish's commit; held back, each page is written once per delay and a publish commits
 * alone. An ack is a dismissal: a crash loses at most the acks of the last delay, and those
 * messages are delivered again (at least once, as always).
 *
 * If any op fails in a way that poisons the transaction (LMDB map full, I/O error), the batch is
 * aborted and replayed with every op in its own nested transaction, so only the ops that really
 * do not fit fail (HD_EFULL) and the rest commit.
 *
 * Ownership: the caller owns each hd_op and everything it points to; the writer only borrows
 * it between submit and done(). Strings inside ops must stay valid until done().
 */
#ifndef HERALD_WRITER_H
#define HERALD_WRITER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "store.h"

typedef struct hd_writer hd_writer;
typedef struct hd_op hd_op;

enum hd_op_kind {
  HD_OP_PUBLISH = 1,
  HD_OP_REGISTER,
  HD_OP_ACK,
  HD_OP_SWEEP,
  HD_OP_TENANT, /* ensure a tenant (and its declared apps) exist */
  HD_OP_DEVICE_GEN, /* bump a device's token generation: rotate or revoke its tokens */
  HD_OP_FN,      /* a module's own write: u.fn.apply runs inside the group commit */
};

enum hd_reg_mode {
  HD_REG_PROVISION = 1, /* publish key: create the device if it does not exist */
  HD_REG_EXISTING,      /* device token verified: device must exist */
  HD_REG_NEW,           /* keyless: device id is new; it must not exist yet */
};

struct hd_op {
  hd_op *next;                 /* queue link, the writer's */
  int kind;
  int status;                  /* result: 0 or HD_E*, set before done() */
  const char *reason;          /* static text saying why status is not 0, or NULL */
  void (*done)(hd_op *op);     /* loop thread, after the commit (or failure) */
  void *ud;
  uint64_t submitted_ns;       /* for the commit latency metric */
  uint64_t committed_ns;       /* set by the writer when the op's commit returned */
  /* Optional: a further write by another module, run on the writer thread in the same
   * transaction right after the op itself succeeded (e.g. push.c schedules a message's SMS
   * escalation in the commit that stores it, so neither exists without the other). Its error
   * fails the op. */
  int (*also)(hd_store *s, MDB_txn *t, hd_op *op, int64_t now_ms);
  void *also_arg;
  union {
    struct {
      uint32_t tenant_num;
      const char *appid;
      int create_app;          /* tenant allows any app id */
      const char *to;          /* device id or NULL */
      int64_t ttl_s;
      const char *collapse;
      size_t collapse_len;
      const void *data;        /* msgpack */
      size_t data_len;
      /* Optional, for a direct message (release notices): runs inside the publish's
       * transaction once the app and device are found (dev_num and app_num are set), before
       * the registration check and the write. It may write rows of its own (and register the
       * device). A non-zero return fails the publish with that status; it must then have
       * written nothing. */
      int (*hook)(hd_store *s, MDB_txn *t, hd_op *op, void *arg);
      void *hook_arg;
      /* results */
      uint64_t seq;
      uint64_t replaced;
      uint32_t app_num;
      uint64_t dev_num;
      int64_t created_ms;
    } pub;
    struct {
      uint32_t tenant_num;
      const char *appid;
      int create_app;
      int mode;                /* enum hd_reg_mode */
      const char *device_id;
      uint32_t token_gen;      /* HD_REG_EXISTING: the token's generation, must be current */
      /* results */
      uint32_t app_num;
      hd_store_device dev;
    } reg;
    struct {
      uint64_t dev_num;
      const uint64_t *ids;
      size_t n;
      size_t acked;            /* result */
    } ack;
    struct {
      size_t max;              /* most messages to look at in this op */
      size_t deleted;          /* result */
      int more;                /* result: it stopped at max, more may be due */
    } sweep;
    struct {
      const char *name;
      const char *const *apps; /* declared apps, may be NULL */
      size_t napps;
      uint32_t tenant_num;     /* result */
    } tenant;
    struct {
      /* Runs on the writer thread inside the batch's transaction (or a nested one when the
       * batch is replayed): only LMDB calls on t, no loop-thread state. Returns 0 or HD_E*;
       * it may set op->reason. Results go back through arg, read in done(). */
      int (*apply)(hd_store *s, MDB_txn *t, hd_op *op, int64_t now_ms);
      void *arg;
    } fn;
    struct {
      uint32_t tenant_num;
      const char *device_id;
      uint32_t expect_gen;     /* 0: any (publish key); else the caller's token generation,
                                * which must still be current (HD_EAUTH otherwise) */
      hd_store_device dev;     /* result: the device with its new generation */
    } devgen;
  } u;
};

typedef struct hd_writer_stats {
  uint64_t commits;
  uint64_t ops;
  uint64_t failed_commits;
  uint64_t replays;            /* batches replayed op by op after an error */
  uint64_t commit_ns_total;    /* time spent in mdb_txn_commit */
  uint64_t last_batch;
  uint64_t queued;             /* ops waiting now */
} hd_writer_stats;

/* Start the writer thread. done() callbacks run on `loop`. */
/* reserve: bytes of the map kept free for deletes (acks, expiry, collapse): a publish that
 * would eat into it fails with HD_EFULL, so a full store can always be emptied again. */
int hd__writer_start(uv_loop_t *loop, hd_store *store, size_t max_batch, uint64_t reserve,
                     hd_writer **out);
/* Hold acks (HD_OP_ACK) back for up to ms milliseconds and commit them together, in a batch
 * of their own or with whatever commits when they are due (0, the default: like any op). */
void hd__writer_set_ack_delay(hd_writer *w, uint64_t ms);
/* Queue an op (loop thread). Returns HD_ECLOSED once stopping; done() is then not called. */
int hd__writer_submit(hd_writer *w, hd_op *op);
/* hd__writer_submit for a module's own write: sets op's kind (HD_OP_FN), u.fn.apply = fn,
 * u.fn.arg = arg and done, then queues it. Same return and ownership as hd__writer_submit. */
int hd__writer_submit_fn(hd_writer *w, hd_op *op,
                         int (*fn)(hd_store *s, MDB_txn *t, hd_op *op, int64_t now_ms),
                         void *arg, void (*done)(hd_op *op));
/* Run an op synchronously on the calling thread in its own transaction (start-up only, before
 * the loop runs). done() is not called. Returns op->status. */
int hd__writer_run_now(hd_store *store, hd_op *op);
/* Finish every queued op (their done() still runs), stop the thread, close the async handle.
 * The loop must run afterwards for the handle to close; hd__writer_free after that. */
void hd__writer_stop(hd_writer *w);
void hd__writer_free(hd_writer *w);
void hd__writer_stats(hd_writer *w, hd_writer_stats *out);

#endif
