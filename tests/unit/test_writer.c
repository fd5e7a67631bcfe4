/* test_writer.c — the group-commit writer (writer.h): many ops per transaction with done() on
 * the loop thread in submit order, replay of a batch that hit a full map so only the ops that
 * do not fit fail, errors that fail one op alone, draining on stop, HD_ECLOSED after it,
 * hd__writer_run_now, and acks held back by an ack delay (committed after later publishes, at
 * stop, or once many are held, max_batch at a time). Every test closes its loop and asserts uv_loop_close() == 0.
 *
 * To make batching deterministic without timing, a test may hold LMDB's write lock (an open
 * write transaction of its own) while it submits: the writer thread then blocks in its
 * mdb_txn_begin, and everything submitted meanwhile queues up for the next batches. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "herald/error.h"
#include "store.h"
#include "writer.h"

#define MIB (1024ull * 1024ull)

/* ---- fixture ----------------------------------------------------------------------------- */

typedef struct fx {
  char dir[256];
  hd_store *s;
  uv_loop_t loop;
  uint32_t tenant, app;
  uint64_t dev;
  /* Released by teardown if a failed assertion left them behind. */
  hd_writer *w;
  MDB_txn *hold;
  int loop_closed;
  void *mem[2];
} fx;

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

static int setup(void **state) {
  fx *f = calloc(1, sizeof *f);
  const char *tmp = getenv("TMPDIR");
  if (!f) return -1;
  snprintf(f->dir, sizeof f->dir, "%s/herald-writer-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(f->dir) || uv_loop_init(&f->loop) != 0) {
    free(f);
    return -1;
  }
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fx *f = *state;
  if (f->hold) mdb_txn_abort(f->hold);
  if (f->w) hd__writer_stop(f->w);
  if (!f->loop_closed) {
    uv_run(&f->loop, UV_RUN_DEFAULT);
    uv_loop_close(&f->loop);
  }
  hd__writer_free(f->w);
  for (int i = 0; i < 2; i++) free(f->mem[i]);
  hd__store_close(f->s);
  nftw(f->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
  free(f);
  return 0;
}

/* Done callbacks record the order they ran in. */
typedef struct tally {
  size_t done;
  size_t cap;
  hd_op **order;
} tally;

static void on_done(hd_op *op) {
  tally *t = op->ud;
  assert_non_null(t);
  assert_null(op->next);
  if (t->order && t->done < t->cap) t->order[t->done] = op;
  t->done++;
}

static void tenant_op(hd_op *op, const char *name, const char *const *apps, size_t napps) {
  memset(op, 0, sizeof *op);
  op->kind = HD_OP_TENANT;
  op->u.tenant.name = name;
  op->u.tenant.apps = apps;
  op->u.tenant.napps = napps;
}

static void pub_op(hd_op *op, fx *f, tally *t, const char *appid, const char *to,
                   const void *data, size_t len) {
  memset(op, 0, sizeof *op);
  op->kind = HD_OP_PUBLISH;
  op->done = on_done;
  op->ud = t;
  op->status = 12345; /* must be overwritten */
  op->u.pub.tenant_num = f->tenant;
  op->u.pub.appid = appid;
  op->u.pub.to = to;
  op->u.pub.ttl_s = 3600;
  op->u.pub.data = data;
  op->u.pub.data_len = len;
}

static void reg_op(hd_op *op, fx *f, tally *t, const char *appid, int mode, const char *dev,
                   uint32_t gen) {
  memset(op, 0, sizeof *op);
  op->kind = HD_OP_REGISTER;
  op->done = on_done;
  op->ud = t;
  op->status = 12345;
  op->u.reg.tenant_num = f->tenant;
  op->u.reg.appid = appid;
  op->u.reg.mode = mode;
  op->u.reg.device_id = dev;
  op->u.reg.token_gen = gen;
}

/* Store in f->dir/<sub> with tenant "acme", app "news" and device "phone" registered to it,
 * all through hd__writer_run_now, as the broker does at start-up. */
static void world(fx *f, const char *sub, uint64_t map_size) {
  char dir[300];
  static const char *const apps[] = {"news", "*"};
  hd_op op;
  snprintf(dir, sizeof dir, "%s/%s", f->dir, sub);
  assert_int_equal(hd__store_open(dir, map_size, &f->s), 0);
  tenant_op(&op, "acme", apps, 2);
  assert_int_equal(hd__writer_run_now(f->s, &op), 0);
  f->tenant = op.u.tenant.tenant_num;
  reg_op(&op, f, NULL, "news", HD_REG_PROVISION, "phone", 0);
  op.done = NULL;
  assert_int_equal(hd__writer_run_now(f->s, &op), 0);
  f->app = op.u.reg.app_num;
  f->dev = op.u.reg.dev.dev_num;
  assert_int_not_equal(f->app, 0);
  assert_int_not_equal(f->dev, 0);
}

static void hold_write_lock(fx *f) {
  assert_int_equal(mdb_txn_begin(hd__store_env(f->s), NULL, 0, &f->hold), 0);
}

static void release_write_lock(fx *f) {
  mdb_txn_abort(f->hold);
  f->hold = NULL;
}

static void run_until(fx *f, tally *t, size_t n) {
  while (t->done < n) uv_run(&f->loop, UV_RUN_ONCE);
  assert_int_equal(t->done, n);
}

static void finish(fx *f) {
  hd__writer_stop(f->w);
  assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
  hd__writer_free(f->w);
  f->w = NULL;
  f->loop_closed = 1;
  assert_int_equal(uv_loop_close(&f->loop), 0);
}

/* Pending ids of f->dev, read through the loop thread's read transaction. */
typedef struct ids {
  size_t n;
  uint64_t v[8192];
  char first_data[32];
} ids;

static int collect(void *ud, const hd_store_msg *m) {
  ids *x = ud;
  assert_true(x->n < 8192);
  if (x->n == 0)
    snprintf(x->first_data, sizeof x->first_data, "%.*s", (int)m->data_len,
             (const char *)m->data);
  x->v[x->n++] = m->seq;
  return 0;
}

static void pending(fx *f, uint64_t dev, ids *x) {
  MDB_txn *t;
  memset(x, 0, sizeof *x);
  assert_int_equal(hd__store_rbegin(f->s, &t), 0);
  assert_int_equal(hd__store_r_pending(f->s, t, dev, 0, 100000, 0, collect, x), 0);
  hd__store_rend(f->s, t);
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_group_commit_of_many_publishes(void **state) {
  fx *f = *state;
  enum { N = 5000, MAX_BATCH = 1000 };
  hd_writer *w = NULL;
  hd_writer_stats st;
  hd_op *ops = f->mem[0] = calloc(N, sizeof *ops);
  hd_op **order = f->mem[1] = calloc(N, sizeof *order);
  tally t = {.cap = N, .order = order};
  static ids x;
  assert_non_null(ops);
  assert_non_null(order);
  world(f, "db", 64 * MIB);
  assert_int_equal(hd__writer_start(&f->loop, f->s, MAX_BATCH, 0, &f->w), 0);
  w = f->w;

  hold_write_lock(f);
  for (size_t i = 0; i < N; i++) {
    pub_op(&ops[i], f, &t, "news", NULL, "{}", 2);
    assert_int_equal(hd__writer_submit(w, &ops[i]), 0);
  }
  assert_int_equal(t.done, 0); /* done() only ever runs from the loop */
  release_write_lock(f);
  run_until(f, &t, N);

  for (size_t i = 0; i < N; i++) {
    assert_ptr_equal(order[i], &ops[i]); /* results come back in submit order */
    assert_int_equal(ops[i].status, 0);
    assert_null(ops[i].reason);
    assert_int_equal(ops[i].u.pub.app_num, f->app);
    assert_int_equal(ops[i].u.pub.dev_num, 0);
    assert_int_equal(ops[i].u.pub.replaced, 0);
    assert_true(ops[i].u.pub.created_ms > 0);
    if (i) assert_int_equal(ops[i].u.pub.seq, ops[i - 1].u.pub.seq + 1);
  }
  hd__writer_stats(w, &st);
  assert_int_equal(st.ops, N);
  assert_int_equal(st.queued, 0);
  assert_int_equal(st.failed_commits, 0);
  assert_int_equal(st.replays, 0);
  assert_true(st.last_batch >= 1 && st.last_batch <= MAX_BATCH);
  /* Everything queued behind the held lock: one batch that was already taken, then full
   * batches of at most MAX_BATCH. Group commit means far fewer commits than ops. */
  assert_in_range(st.commits, N / MAX_BATCH, 1 + N / MAX_BATCH);
  assert_true(st.commits < st.ops);

  pending(f, f->dev, &x);
  assert_int_equal(x.n, N);
  assert_int_equal(x.v[0], ops[0].u.pub.seq);
  assert_int_equal(x.v[N - 1], ops[N - 1].u.pub.seq);
  hd_store_stats ss;
  assert_int_equal(hd__store_stats(f->s, &ss), 0);
  assert_int_equal(ss.last_seq, ops[N - 1].u.pub.seq);

  finish(f);
}

static void test_map_full_fails_only_the_ops_that_do_not_fit(void **state) {
  fx *f = *state;
  hd_writer *w = NULL;
  hd_writer_stats st;
  hd_op before[3], ops[7];
  tally t = {0};
  static ids x;
  size_t big_len = 2 * MIB; /* larger than the whole map */
  char *big = f->mem[0] = malloc(big_len);
  assert_non_null(big);
  memset(big, 0xa5, big_len);
  world(f, "small", 1 * MIB);
  assert_int_equal(hd__writer_start(&f->loop, f->s, 0, 0, &f->w), 0);
  w = f->w;

  for (int i = 0; i < 3; i++) {
    pub_op(&before[i], f, &t, "news", NULL, "before", 6);
    assert_int_equal(hd__writer_submit(w, &before[i]), 0);
  }
  run_until(f, &t, 3);
  for (int i = 0; i < 3; i++) assert_int_equal(before[i].status, 0);

  uint64_t ack_ids[1] = {before[0].u.pub.seq};
  pub_op(&ops[0], f, &t, "news", NULL, "small-1", 7);
  pub_op(&ops[1], f, &t, "news", NULL, big, big_len);
  memset(&ops[2], 0, sizeof ops[2]);
  ops[2].kind = HD_OP_ACK;
  ops[2].done = on_done;
  ops[2].ud = &t;
  ops[2].u.ack.dev_num = f->dev;
  ops[2].u.ack.ids = ack_ids;
  ops[2].u.ack.n = 1;
  pub_op(&ops[3], f, &t, "news", "phone", "small-2", 7);
  pub_op(&ops[4], f, &t, "news", NULL, big, big_len);
  reg_op(&ops[5], f, &t, "news", HD_REG_NEW, "tablet", 0);
  pub_op(&ops[6], f, &t, "news", NULL, "small-3", 7);

  hold_write_lock(f);
  for (int i = 0; i < 7; i++) assert_int_equal(hd__writer_submit(w, &ops[i]), 0);
  release_write_lock(f);
  run_until(f, &t, 10);

  assert_int_equal(ops[0].status, 0);
  assert_int_equal(ops[1].status, HD_EFULL);
  assert_int_equal(ops[2].status, 0);
  assert_int_equal(ops[2].u.ack.acked, 1);
  assert_int_equal(ops[3].status, 0);
  assert_int_equal(ops[3].u.pub.dev_num, f->dev);
  assert_int_equal(ops[4].status, HD_EFULL);
  assert_int_equal(ops[5].status, 0);
  assert_int_equal(ops[6].status, 0);
  assert_true(ops[0].u.pub.seq < ops[3].u.pub.seq);
  assert_true(ops[3].u.pub.seq < ops[6].u.pub.seq);
  hd__writer_stats(w, &st);
  assert_true(st.replays > 0);
  assert_int_equal(st.failed_commits, 0);
  assert_int_equal(st.ops, 10);

  /* before[0] acked; before[1..2] intact; the small ones committed; no big one anywhere. */
  pending(f, f->dev, &x);
  assert_int_equal(x.n, 5);
  assert_int_equal(x.v[0], before[1].u.pub.seq);
  assert_string_equal(x.first_data, "before");
  assert_int_equal(x.v[1], before[2].u.pub.seq);
  assert_int_equal(x.v[2], ops[0].u.pub.seq);
  assert_int_equal(x.v[3], ops[3].u.pub.seq);
  assert_int_equal(x.v[4], ops[6].u.pub.seq);
  pending(f, ops[5].u.reg.dev.dev_num, &x);
  assert_int_equal(x.n, 1);
  assert_int_equal(x.v[0], ops[6].u.pub.seq);

  finish(f);
}

/* With a reserve, a publish that would eat into it is refused up front (HD_EFULL) while
 * acks and small publishes in the same batch go through. */
static void test_reserve_refuses_big_publish_keeps_acks(void **state) {
  fx *f = *state;
  hd_writer *w = NULL;
  hd_op before, ops[4];
  tally t = {0};
  static ids x;
  size_t big_len = 900 * 1024; /* would fit the map, not the map minus the reserve */
  char *big = f->mem[0] = malloc(big_len);
  assert_non_null(big);
  memset(big, 0x5a, big_len);
  world(f, "small", 1 * MIB);
  assert_int_equal(hd__writer_start(&f->loop, f->s, 0, 256 * 1024, &f->w), 0);
  w = f->w;

  pub_op(&before, f, &t, "news", NULL, "before", 6);
  assert_int_equal(hd__writer_submit(w, &before), 0);
  run_until(f, &t, 1);
  assert_int_equal(before.status, 0);

  uint64_t ack_ids[1] = {before.u.pub.seq};
  pub_op(&ops[0], f, &t, "news", NULL, "small-1", 7);
  pub_op(&ops[1], f, &t, "news", NULL, big, big_len);
  memset(&ops[2], 0, sizeof ops[2]);
  ops[2].kind = HD_OP_ACK;
  ops[2].done = on_done;
  ops[2].ud = &t;
  ops[2].u.ack.dev_num = f->dev;
  ops[2].u.ack.ids = ack_ids;
  ops[2].u.ack.n = 1;
  pub_op(&ops[3], f, &t, "news", NULL, "small-2", 7);
  hold_write_lock(f);
  for (int i = 0; i < 4; i++) assert_int_equal(hd__writer_submit(w, &ops[i]), 0);
  release_write_lock(f);
  run_until(f, &t, 5);

  assert_int_equal(ops[0].status, 0);
  assert_int_equal(ops[1].status, HD_EFULL);
  assert_int_equal(ops[2].status, 0);
  assert_int_equal(ops[2].u.ack.acked, 1);
  assert_int_equal(ops[3].status, 0);
  pending(f, f->dev, &x);
  assert_int_equal(x.n, 2);
  assert_int_equal(x.v[0], ops[0].u.pub.seq);
  assert_int_equal(x.v[1], ops[3].u.pub.seq);
  finish(f);
}

static void test_failed_op_does_not_poison_its_batch(void **state) {
  fx *f = *state;
  hd_writer *w = NULL;
  hd_writer_stats st;
  hd_op ops[12];
  tally t = {0};
  static ids x;
  world(f, "db", 64 * MIB);
  assert_int_equal(hd__writer_start(&f->loop, f->s, 0, 0, &f->w), 0);
  w = f->w;

  /* A message that expired two seconds ago, for the sweep below: the sweeper takes an expiry
   * row once the second its messages expire in is over. */
  pub_op(&ops[0], f, &t, "news", NULL, "ephemeral", 9);
  ops[0].u.pub.ttl_s = -2;
  assert_int_equal(hd__writer_submit(w, &ops[0]), 0);
  run_until(f, &t, 1);
  assert_int_equal(ops[0].status, 0);

  pub_op(&ops[1], f, &t, "nope", NULL, "x", 1);           /* undeclared app */
  pub_op(&ops[2], f, &t, "news", "ghost", "x", 1);        /* no such device */
  reg_op(&ops[3], f, &t, "news", HD_REG_NEW, "phone", 0); /* exists already */
  reg_op(&ops[4], f, &t, "news", HD_REG_EXISTING, "phone", 2); /* revoked generation */
  reg_op(&ops[5], f, &t, "news", HD_REG_EXISTING, "ghost", 1); /* unknown device */
  reg_op(&ops[6], f, &t, "news", HD_REG_EXISTING, "phone", 1); /* fine */
  reg_op(&ops[7], f, &t, "news", HD_REG_PROVISION, "phone", 0); /* fine, same device */
  reg_op(&ops[8], f, &t, "other", HD_REG_PROVISION, "tablet", 0);
  ops[8].u.reg.create_app = 1; /* tenant takes any app id */
  pub_op(&ops[9], f, &t, "news", "tablet", "x", 1); /* tablet is not registered for news */
  pub_op(&ops[10], f, &t, "news", "phone", "direct", 6);
  memset(&ops[11], 0, sizeof ops[11]);
  ops[11].kind = HD_OP_SWEEP;
  ops[11].done = on_done;
  ops[11].ud = &t;

  hold_write_lock(f);
  for (int i = 1; i < 12; i++) assert_int_equal(hd__writer_submit(w, &ops[i]), 0);
  release_write_lock(f);
  run_until(f, &t, 12);

  assert_int_equal(ops[1].status, HD_ENOTFOUND);
  assert_string_equal(ops[1].reason, "no such app");
  assert_int_equal(ops[2].status, HD_ENOTFOUND);
  assert_non_null(ops[2].reason);
  assert_int_equal(ops[3].status, HD_EEXIST);
  assert_string_equal(ops[3].reason, "device id already exists");
  assert_int_equal(ops[4].status, HD_EAUTH);
  assert_int_equal(ops[5].status, HD_EAUTH);
  assert_int_equal(ops[6].status, 0);
  assert_null(ops[6].reason);
  assert_int_equal(ops[6].u.reg.dev.dev_num, f->dev);
  assert_int_equal(ops[6].u.reg.app_num, f->app);
  assert_int_equal(ops[7].status, 0);
  assert_int_equal(ops[7].u.reg.dev.dev_num, f->dev);
  assert_int_equal(ops[8].status, 0);
  assert_int_not_equal(ops[8].u.reg.app_num, f->app);
  assert_int_not_equal(ops[8].u.reg.dev.dev_num, f->dev);
  assert_int_equal(ops[9].status, HD_ENOTFOUND);
  assert_non_null(ops[9].reason);
  assert_int_equal(ops[10].status, 0);
  assert_int_equal(ops[10].u.pub.dev_num, f->dev);
  assert_int_equal(ops[11].status, 0);
  assert_int_equal(ops[11].u.sweep.deleted, 1);

  hd__writer_stats(w, &st);
  assert_int_equal(st.replays, 0); /* plain errors need no replay */
  assert_int_equal(st.failed_commits, 0);
  pending(f, f->dev, &x);
  assert_int_equal(x.n, 1);
  assert_int_equal(x.v[0], ops[10].u.pub.seq);
  assert_string_equal(x.first_data, "direct");
  finish(f);
}

static void test_stop_drains_queued_ops_then_refuses(void **state) {
  fx *f = *state;
  enum { N = 300 };
  hd_writer *w = NULL;
  hd_writer_stats st;
  hd_op *ops = f->mem[0] = calloc(N + 1, sizeof *ops);
  tally t = {0};
  static ids x;
  assert_non_null(ops);
  world(f, "db", 64 * MIB);
  assert_int_equal(hd__writer_start(&f->loop, f->s, 16, 0, &f->w), 0);
  w = f->w;

  hold_write_lock(f);
  for (size_t i = 0; i < N; i++) {
    pub_op(&ops[i], f, &t, "news", NULL, "q", 1);
    assert_int_equal(hd__writer_submit(w, &ops[i]), 0);
  }
  hd__writer_stats(w, &st);
  assert_true(st.queued >= N - 16); /* at most one batch taken while the lock is held */
  release_write_lock(f);

  /* No loop turn in between: stop itself commits the queue and runs every done(). */
  hd__writer_stop(w);
  assert_int_equal(t.done, N);
  for (size_t i = 0; i < N; i++) {
    assert_int_equal(ops[i].status, 0);
    if (i) assert_int_equal(ops[i].u.pub.seq, ops[i - 1].u.pub.seq + 1);
  }
  hd__writer_stats(w, &st);
  assert_int_equal(st.ops, N);
  assert_int_equal(st.queued, 0);

  pub_op(&ops[N], f, &t, "news", NULL, "late", 4);
  assert_int_equal(hd__writer_submit(w, &ops[N]), HD_ECLOSED);
  hd__writer_stop(w); /* a second stop is harmless */
  assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(t.done, N); /* the refused op's done() never runs */
  hd__writer_free(w);
  f->w = NULL;
  f->loop_closed = 1;
  assert_int_equal(uv_loop_close(&f->loop), 0);

  pending(f, f->dev, &x);
  assert_int_equal(x.n, N);
}

static void ack_op(hd_op *op, fx *f, tally *t, const uint64_t *idv, size_t n) {
  memset(op, 0, sizeof *op);
  op->kind = HD_OP_ACK;
  op->done = on_done;
  op->ud = t;
  op->status = 12345;
  op->u.ack.dev_num = f->dev;
  op->u.ack.ids = idv;
  op->u.ack.n = n;
}

/* With an ack delay, an ack waits (up to the delay) and the publish queued after it commits
 * first, in a batch of its own: publishes do not carry the pages of acks that are not due. */
static void test_held_ack_commits_after_later_publish(void **state) {
  fx *f = *state;
  enum { DELAY_MS = 300 };
  hd_op first, ack, second;
  hd_op *order[3];
  tally t = {.cap = 3, .order = order};
  static ids x;
  world(f, "db", 64 * MIB);
  assert_int_equal(hd__writer_start(&f->loop, f->s, 0, 0, &f->w), 0);
  hd__writer_set_ack_delay(f->w, DELAY_MS);

  pub_op(&first, f, &t, "news", NULL, "one", 3);
  assert_int_equal(hd__writer_submit(f->w, &first), 0);
  run_until(f, &t, 1);
  uint64_t ack_ids[1] = {first.u.pub.seq};
  ack_op(&ack, f, &t, ack_ids, 1);
  pub_op(&second, f, &t, "news", NULL, "two", 3);
  assert_int_equal(hd__writer_submit(f->w, &ack), 0);
  assert_int_equal(hd__writer_submit(f->w, &second), 0);
  run_until(f, &t, 3);

  assert_ptr_equal(order[1], &second); /* queued after the ack, committed before it */
  assert_ptr_equal(order[2], &ack);
  assert_int_equal(second.status, 0);
  assert_int_equal(ack.status, 0);
  assert_int_equal(ack.u.ack.acked, 1);
  assert_true(ack.committed_ns - ack.submitted_ns >= DELAY_MS * 1000000ull);
  assert_true(second.committed_ns < ack.committed_ns);
  pending(f, f->dev, &x);
  assert_int_equal(x.n, 1);
  assert_int_equal(x.v[0], second.u.pub.seq);
  finish(f);
}

/* Stopping does not wait for held acks to fall due: they commit with the last batch. */
static void test_stop_commits_held_acks(void **state) {
  fx *f = *state;
  hd_op pub, ack;
  tally t = {0};
  static ids x;
  world(f, "db", 64 * MIB);
  assert_int_equal(hd__writer_start(&f->loop, f->s, 0, 0, &f->w), 0);
  hd__writer_set_ack_delay(f->w, 3600 * 1000); /* an hour: only stop can commit it */

  pub_op(&pub, f, &t, "news", NULL, "one", 3);
  assert_int_equal(hd__writer_submit(f->w, &pub), 0);
  run_until(f, &t, 1);
  uint64_t ack_ids[1] = {pub.u.pub.seq};
  ack_op(&ack, f, &t, ack_ids, 1);
  assert_int_equal(hd__writer_submit(f->w, &ack), 0);
  hd__writer_stop(f->w);
  assert_int_equal(t.done, 2);
  assert_int_equal(ack.status, 0);
  assert_int_equal(ack.u.ack.acked, 1);
  finish(f);
  pending(f, f->dev, &x);
  assert_int_equal(x.n, 0);
}

/* A flood of acks is committed once enough are held, without waiting out the delay. */
static void test_many_held_acks_commit_before_the_delay(void **state) {
  fx *f = *state;
  enum { N = 65536 };
  hd_op pub;
  hd_op *ops = f->mem[0] = calloc(N, sizeof *ops);
  tally t = {0};
  assert_non_null(ops);
  world(f, "db", 64 * MIB);
  assert_int_equal(hd__writer_start(&f->loop, f->s, 0, 0, &f->w), 0);
  hd__writer_set_ack_delay(f->w, 3600 * 1000);

  pub_op(&pub, f, &t, "news", NULL, "one", 3);
  assert_int_equal(hd__writer_submit(f->w, &pub), 0);
  run_until(f, &t, 1);
  uint64_t ack_ids[1] = {pub.u.pub.seq};
  for (size_t i = 0; i < N; i++) {
    ack_op(&ops[i], f, &t, ack_ids, 1);
    assert_int_equal(hd__writer_submit(f->w, &ops[i]), 0);
  }
  run_until(f, &t, 1 + N); /* would wait an hour if only the delay released them */
  size_t acked = 0;
  for (size_t i = 0; i < N; i++) {
    assert_int_equal(ops[i].status, 0);
    acked += ops[i].u.ack.acked;
  }
  assert_int_equal(acked, 1); /* the first took effect, the rest found it acked */
  finish(f);
}

/* Held acks that fall due together still commit at most max_batch ops at a time. */
static void test_held_acks_respect_max_batch(void **state) {
  fx *f = *state;
  enum { MAX_BATCH = 16, N = 40 };
  hd_op pub, ops[N];
  tally t = {0};
  hd_writer_stats st;
  world(f, "db", 64 * MIB);
  assert_int_equal(hd__writer_start(&f->loop, f->s, MAX_BATCH, 0, &f->w), 0);
  hd__writer_set_ack_delay(f->w, 3600 * 1000); /* due only at stop */

  pub_op(&pub, f, &t, "news", NULL, "one", 3);
  assert_int_equal(hd__writer_submit(f->w, &pub), 0);
  run_until(f, &t, 1);
  hd__writer_stats(f->w, &st);
  uint64_t commits0 = st.commits;
  uint64_t ack_ids[1] = {pub.u.pub.seq};
  for (size_t i = 0; i < N; i++) {
    ack_op(&ops[i], f, &t, ack_ids, 1);
    assert_int_equal(hd__writer_submit(f->w, &ops[i]), 0);
  }
  hd__writer_stop(f->w);
  assert_int_equal(t.done, 1 + N);
  hd__writer_stats(f->w, &st);
  assert_true(st.last_batch <= MAX_BATCH);
  assert_true(st.commits - commits0 >= (N + MAX_BATCH - 1) / MAX_BATCH); /* 3 at least */
  size_t acked = 0;
  for (size_t i = 0; i < N; i++) {
    assert_int_equal(ops[i].status, 0);
    acked += ops[i].u.ack.acked;
  }
  assert_int_equal(acked, 1);
  finish(f);
}

static void test_run_now_applies_tenant_op(void **state) {
  fx *f = *state;
  static const char *const apps[] = {"news", "*", "chat"};
  static const char *const more[] = {"alerts"};
  hd_op op, op2;
  tally t = {0};
  char dir[300];
  snprintf(dir, sizeof dir, "%s/db", f->dir);
  assert_int_equal(hd__store_open(dir, 64 * MIB, &f->s), 0);

  tenant_op(&op, "acme", apps, 3);
  op.done = on_done;
  op.ud = &t;
  assert_int_equal(hd__writer_run_now(f->s, &op), 0);
  assert_int_equal(op.status, 0);
  assert_int_not_equal(op.u.tenant.tenant_num, 0);
  assert_int_equal(t.done, 0); /* run_now never calls done() */

  tenant_op(&op2, "acme", more, 1); /* again, declaring one more app */
  assert_int_equal(hd__writer_run_now(f->s, &op2), 0);
  assert_int_equal(op2.u.tenant.tenant_num, op.u.tenant.tenant_num);
  tenant_op(&op2, "beta", NULL, 0);
  assert_int_equal(hd__writer_run_now(f->s, &op2), 0);
  assert_int_not_equal(op2.u.tenant.tenant_num, op.u.tenant.tenant_num);

  uint32_t tn = op.u.tenant.tenant_num, app = 0;
  MDB_txn *txn;
  assert_int_equal(hd__store_wbegin(f->s, NULL, &txn), 0);
  assert_int_equal(hd__store_w_app(f->s, txn, tn, "news", 0, &app), 0);
  assert_int_equal(hd__store_w_app(f->s, txn, tn, "chat", 0, &app), 0);
  assert_int_equal(hd__store_w_app(f->s, txn, tn, "alerts", 0, &app), 0);
  assert_int_equal(hd__store_w_app(f->s, txn, tn, "*", 0, &app), HD_ENOTFOUND);
  assert_int_equal(hd__store_w_app(f->s, txn, op2.u.tenant.tenant_num, "news", 0, &app),
                   HD_ENOTFOUND);
  mdb_txn_abort(txn);

  /* Other kinds work too, each in its own committed transaction. */
  f->tenant = tn;
  pub_op(&op, f, &t, "news", NULL, "hi", 2);
  assert_int_equal(hd__writer_run_now(f->s, &op), 0);
  assert_int_not_equal(op.u.pub.seq, 0);
  pub_op(&op, f, &t, "undeclared", NULL, "hi", 2);
  assert_int_equal(hd__writer_run_now(f->s, &op), HD_ENOTFOUND);
  assert_int_equal(op.status, HD_ENOTFOUND);
  assert_string_equal(op.reason, "no such app");
  assert_int_equal(t.done, 0);
  hd_store_stats ss;
  assert_int_equal(hd__store_stats(f->s, &ss), 0);
  assert_int_equal(ss.last_seq, 1);

  f->loop_closed = 1;
  assert_int_equal(uv_loop_close(&f->loop), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_group_commit_of_many_publishes, setup, teardown),
      cmocka_unit_test_setup_teardown(test_map_full_fails_only_the_ops_that_do_not_fit, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_reserve_refuses_big_publish_keeps_acks, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_failed_op_does_not_poison_its_batch, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_stop_drains_queued_ops_then_refuses, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_run_now_applies_tenant_op, setup, teardown),
      cmocka_unit_test_setup_teardown(test_held_ack_commits_after_later_publish, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_stop_commits_held_acks, setup, teardown),
      cmocka_unit_test_setup_teardown(test_held_acks_respect_max_batch, setup, teardown),
      cmocka_unit_test_setup_teardown(test_many_held_acks_commit_before_the_delay, setup,
                                      teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
