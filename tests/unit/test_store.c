/* test_store.c — the LMDB store (store.h): stable numbers for tenants, apps and devices;
 * registrations that start after the last id; broadcast and direct messages; the pending merge
 * with its max and cursor; acks and the per-app floor; collapse keys; expiry and the sweeper;
 * a full map; the registration cap. Every test gets a fresh directory (mkdtemp) for the LMDB
 * environment and removes it afterwards. */
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

#define NOW 1700000000000LL /* a fixed "now" in Unix ms: tests never read the clock */
#define HOUR (3600LL * 1000)
#define LATER (NOW + HOUR) /* default expiry */
#define MIB (1024ull * 1024ull)

/* ---- fixture ----------------------------------------------------------------------------- */

typedef struct fx {
  char dir[256];
  hd_store *s;
} fx;

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

static void rmtree(const char *dir) { nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS); }

static int setup(void **state) {
  fx *f = calloc(1, sizeof *f);
  const char *tmp = getenv("TMPDIR");
  if (!f) return -1;
  snprintf(f->dir, sizeof f->dir, "%s/herald-store-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(f->dir) || hd__store_open(f->dir, 64 * MIB, &f->s) != 0) {
    free(f);
    return -1;
  }
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fx *f = *state;
  hd__store_close(f->s);
  rmtree(f->dir);
  free(f);
  return 0;
}

/* ---- write helpers (each asserts success) ------------------------------------------------ */

/* The store of the test running: publishes keep their sequence counter back until
 * hd__store_wcommit writes it, so every commit goes through it. */
static hd_store *cur;

static MDB_txn *wbegin(hd_store *s) {
  MDB_txn *t = NULL;
  cur = s;
  assert_int_equal(hd__store_wbegin(s, NULL, &t), 0);
  assert_non_null(t);
  return t;
}

static void commit(MDB_txn *t) { assert_int_equal(hd__store_wcommit(cur, t), 0); }

static uint32_t mk_tenant(hd_store *s, MDB_txn *t, const char *name) {
  uint32_t n = 0;
  assert_int_equal(hd__store_w_tenant(s, t, name, &n), 0);
  assert_int_not_equal(n, 0);
  return n;
}

static uint32_t mk_app(hd_store *s, MDB_txn *t, uint32_t tenant, const char *appid) {
  uint32_t n = 0;
  assert_int_equal(hd__store_w_app(s, t, tenant, appid, 1, &n), 0);
  assert_int_not_equal(n, 0);
  return n;
}

static uint64_t mk_device(hd_store *s, MDB_txn *t, uint32_t tenant, const char *id) {
  hd_store_device d;
  assert_int_equal(hd__store_w_device_create(s, t, tenant, id, NOW, &d), 0);
  assert_int_not_equal(d.dev_num, 0);
  return d.dev_num;
}

static void reg(hd_store *s, MDB_txn *t, uint64_t dev, uint32_t app) {
  assert_int_equal(hd__store_w_register(s, t, dev, app), 0);
}

static int try_publish(hd_store *s, MDB_txn *t, uint32_t app, uint64_t dev, int64_t expires,
                       const char *collapse, const void *data, size_t len, uint64_t *seq,
                       uint64_t *replaced) {
  hd_store_pub p = {
      .app_num = app,
      .dev_num = dev,
      .now_ms = NOW,
      .expires_ms = expires,
      .collapse = collapse,
      .collapse_len = collapse ? strlen(collapse) : 0,
      .data = data,
      .data_len = len,
  };
  uint64_t r = 12345;
  int rc = hd__store_w_publish(s, t, &p, seq, replaced ? replaced : &r);
  return rc;
}

/* Publish a text payload; returns its id. *replaced (if given) gets the collapsed id. */
static uint64_t pub(hd_store *s, MDB_txn *t, uint32_t app, uint64_t dev, int64_t expires,
                    const char *collapse, const char *data, uint64_t *replaced) {
  uint64_t seq = 0, r = 12345;
  assert_int_equal(
      try_publish(s, t, app, dev, expires, collapse, data, strlen(data), &seq, &r), 0);
  assert_int_not_equal(seq, 0);
  if (replaced) *replaced = r;
  else assert_int_equal(r, 0);
  return seq;
}

static size_t ack(hd_store *s, uint64_t dev, const uint64_t *ids, size_t n, int64_t now) {
  size_t acked = 999;
  MDB_txn *t = wbegin(s);
  assert_int_equal(hd__store_w_ack(s, t, dev, ids, n, now, &acked), 0);
  commit(t);
  return acked;
}
#define ACK(s, dev, now, ...)                                                                  \
  ack(s, dev, (const uint64_t[]){__VA_ARGS__},                                                 \
      sizeof((const uint64_t[]){__VA_ARGS__}) / sizeof(uint64_t), now)

/* Entries in one of the store's databases (names from store.c), read in a txn of our own. */
static size_t db_entries(hd_store *s, const char *name) {
  MDB_txn *t;
  MDB_dbi dbi;
  MDB_stat st;
  assert_int_equal(mdb_txn_begin(hd__store_env(s), NULL, MDB_RDONLY, &t), 0);
  assert_int_equal(mdb_dbi_open(t, name, 0, &dbi), 0);
  assert_int_equal(mdb_stat(t, dbi, &st), 0);
  mdb_txn_abort(t);
  return st.ms_entries;
}

static uint64_t floor_of(hd_store *s, uint64_t dev, uint32_t app) {
  hd_store_reg regs[300];
  size_t n = 0;
  MDB_txn *t;
  assert_int_equal(hd__store_rbegin(s, &t), 0);
  assert_int_equal(hd__store_r_regs(s, t, dev, regs, 300, &n), 0);
  hd__store_rend(s, t);
  for (size_t i = 0; i < n; i++)
    if (regs[i].app_num == app) return regs[i].floor;
  fail_msg("device %llu is not registered for app %u", (unsigned long long)dev, app);
  return 0;
}

/* ---- reading pending messages ------------------------------------------------------------ */

#define MAXGOT 512
typedef struct got {
  size_t n;
  uint64_t seq[MAXGOT];
  uint32_t app[MAXGOT];
  uint64_t dev[MAXGOT];
  int64_t created[MAXGOT];
  int64_t expires[MAXGOT];
  char data[MAXGOT][24];
  char collapse[MAXGOT][24];
  size_t stop_at; /* cb returns stop_rc when n reaches this (0: never) */
  int stop_rc;
} got;

static int collect(void *ud, const hd_store_msg *m) {
  got *g = ud;
  assert_true(g->n < MAXGOT);
  size_t i = g->n++;
  g->seq[i] = m->seq;
  g->app[i] = m->app_num;
  g->dev[i] = m->dev_num;
  g->created[i] = m->created_ms;
  g->expires[i] = m->expires_ms;
  snprintf(g->data[i], sizeof g->data[i], "%.*s", (int)m->data_len, (const char *)m->data);
  snprintf(g->collapse[i], sizeof g->collapse[i], "%.*s", (int)m->collapse_len, m->collapse);
  return g->stop_at && g->n == g->stop_at ? g->stop_rc : 0;
}

static int pending(hd_store *s, uint64_t dev, uint64_t after, size_t max, int64_t now, got *g) {
  MDB_txn *t;
  assert_int_equal(hd__store_rbegin(s, &t), 0);
  int rc = hd__store_r_pending(s, t, dev, after, max, now, collect, g);
  hd__store_rend(s, t);
  return rc;
}

/* Compare the ids pending for dev with the expected list, as text so that a failure prints
 * both lists (and the calling line). */
static void expect_pending(hd_store *s, int line, uint64_t dev, uint64_t after, size_t max,
                           int64_t now, const uint64_t *want, size_t nwant) {
  static got g;
  char a[4096], b[4096];
  size_t la, lb;
  memset(&g, 0, sizeof g);
  assert_int_equal(pending(s, dev, after, max, now, &g), 0);
  la = (size_t)snprintf(a, sizeof a, "line %d:", line);
  lb = (size_t)snprintf(b, sizeof b, "line %d:", line);
  for (size_t i = 0; i < g.n && la < sizeof a - 32; i++)
    la += (size_t)snprintf(a + la, sizeof a - la, " %llu", (unsigned long long)g.seq[i]);
  for (size_t i = 0; i < nwant && lb < sizeof b - 32; i++)
    lb += (size_t)snprintf(b + lb, sizeof b - lb, " %llu", (unsigned long long)want[i]);
  assert_string_equal(a, b);
}
#define EXPECT_PENDING(s, dev, after, max, now, ...)                                           \
  expect_pending(s, __LINE__, dev, after, max, now, (const uint64_t[]){__VA_ARGS__},          \
                 sizeof((const uint64_t[]){__VA_ARGS__}) / sizeof(uint64_t))
#define EXPECT_NONE(s, dev, after, max, now)                                                   \
  expect_pending(s, __LINE__, dev, after, max, now, NULL, 0)

/* The usual world: tenant "acme" with app "news" (*app) and `ndev` devices registered to it. */
static void world(hd_store *s, uint32_t *tenant, uint32_t *app, uint64_t *devs, size_t ndev) {
  MDB_txn *t = wbegin(s);
  *tenant = mk_tenant(s, t, "acme");
  *app = mk_app(s, t, *tenant, "news");
  for (size_t i = 0; i < ndev; i++) {
    char id[32];
    snprintf(id, sizeof id, "dev-%zu", i + 1);
    devs[i] = mk_device(s, t, *tenant, id);
    reg(s, t, devs[i], *app);
  }
  commit(t);
}

/* ---- open / numbering -------------------------------------------------------------------- */

static void test_reopen_keeps_data(void **state) {
  fx *f = *state;
  MDB_txn *t = wbegin(f->s);
  uint32_t tn = mk_tenant(f->s, t, "acme");
  uint32_t an = mk_app(f->s, t, tn, "news");
  hd_store_device d, d2;
  assert_int_equal(hd__store_w_device_create(f->s, t, tn, "phone-1", NOW, &d), 0);
  reg(f->s, t, d.dev_num, an);
  uint64_t m1 = pub(f->s, t, an, 0, LATER, "k", "hello", NULL);
  commit(t);

  hd_store_stats st;
  assert_int_equal(hd__store_stats(f->s, &st), 0);
  assert_int_equal(st.last_seq, m1);
  assert_int_equal(st.map_size, 64 * MIB);
  assert_true(st.used_bytes > 0 && st.used_bytes <= st.map_size);

  hd__store_close(f->s);
  f->s = NULL;
  assert_int_equal(hd__store_open(f->dir, 64 * MIB, &f->s), 0);

  assert_int_equal(hd__store_stats(f->s, &st), 0);
  assert_int_equal(st.last_seq, m1);

  t = wbegin(f->s);
  assert_int_equal(mk_tenant(f->s, t, "acme"), tn);
  uint32_t an2 = 0;
  assert_int_equal(hd__store_w_app(f->s, t, tn, "news", 0, &an2), 0);
  assert_int_equal(an2, an);
  assert_int_equal(hd__store_w_device(f->s, t, tn, "phone-1", &d2), 0);
  assert_int_equal(d2.dev_num, d.dev_num);
  assert_int_equal(d2.gen, 1);
  assert_int_equal(d2.created_ms, NOW);
  assert_int_equal(d2.tenant_num, tn);
  assert_int_equal(hd__store_w_is_registered(f->s, t, d.dev_num, an), 0);
  /* Counters survive too: new numbers do not collide with the old ones. */
  assert_int_not_equal(mk_tenant(f->s, t, "other"), tn);
  assert_int_not_equal(mk_app(f->s, t, tn, "chat"), an);
  assert_int_not_equal(mk_device(f->s, t, tn, "phone-2"), d.dev_num);
  uint64_t m2 = pub(f->s, t, an, 0, LATER, NULL, "again", NULL);
  assert_int_equal(m2, m1 + 1);
  /* The collapse row survived as well. */
  uint64_t replaced = 0;
  uint64_t m3 = pub(f->s, t, an, 0, LATER, "k", "newer", &replaced);
  assert_int_equal(replaced, m1);
  commit(t);

  MDB_txn *r;
  char name[HD_STORE_MAX_ID + 1];
  uint32_t owner = 0;
  uint64_t count = 0;
  assert_int_equal(hd__store_rbegin(f->s, &r), 0);
  assert_int_equal(hd__store_r_device(f->s, r, tn, "phone-1", &d2), 0);
  assert_int_equal(d2.dev_num, d.dev_num);
  assert_int_equal(hd__store_r_app_name(f->s, r, an, &owner, name, sizeof name), 0);
  assert_int_equal(owner, tn);
  assert_string_equal(name, "news");
  assert_int_equal(hd__store_r_app_devices(f->s, r, an, &count), 0);
  assert_int_equal(count, 1);
  hd__store_rend(f->s, r);

  static got g;
  memset(&g, 0, sizeof g);
  assert_int_equal(pending(f->s, d.dev_num, 0, 10, NOW, &g), 0);
  assert_int_equal(g.n, 2);
  assert_int_equal(g.seq[0], m2);
  assert_string_equal(g.data[0], "again");
  assert_int_equal(g.seq[1], m3);
  assert_string_equal(g.data[1], "newer");
  assert_string_equal(g.collapse[1], "k");
  assert_int_equal(g.app[1], an);
  assert_int_equal(g.dev[1], 0);
  assert_int_equal(g.created[1], NOW);
  assert_int_equal(g.expires[1], LATER);
}

static void test_tenant_and_app_numbers_are_stable(void **state) {
  fx *f = *state;
  char longid[HD_STORE_MAX_ID + 2];
  MDB_txn *t = wbegin(f->s);
  uint32_t ta = mk_tenant(f->s, t, "acme");
  uint32_t tb = mk_tenant(f->s, t, "beta");
  assert_int_not_equal(ta, tb);
  assert_int_equal(mk_tenant(f->s, t, "acme"), ta);

  uint32_t news = mk_app(f->s, t, ta, "news"), n = 0;
  uint32_t chat = mk_app(f->s, t, ta, "chat");
  uint32_t news_b = mk_app(f->s, t, tb, "news"); /* same id, other tenant: another app */
  assert_int_not_equal(news, chat);
  assert_int_not_equal(news_b, news);
  assert_int_not_equal(news_b, chat);
  assert_int_equal(mk_app(f->s, t, ta, "news"), news); /* create on an existing app: lookup */
  assert_int_equal(hd__store_w_app(f->s, t, ta, "news", 0, &n), 0);
  assert_int_equal(n, news);
  assert_int_equal(hd__store_w_app(f->s, t, ta, "nope", 0, &n), HD_ENOTFOUND);
  assert_int_equal(hd__store_w_app(f->s, t, tb, "chat", 0, &n), HD_ENOTFOUND);
  assert_int_equal(hd__store_w_app(f->s, t, ta, "", 1, &n), HD_EINVAL);
  memset(longid, 'a', sizeof longid - 1);
  longid[sizeof longid - 1] = 0; /* 129 bytes */
  assert_int_equal(hd__store_w_app(f->s, t, ta, longid, 1, &n), HD_EINVAL);
  longid[HD_STORE_MAX_ID] = 0; /* 128 bytes: the longest allowed */
  uint32_t longest = mk_app(f->s, t, ta, longid);
  commit(t);

  /* Same numbers from a later transaction; "nope" was never created. */
  t = wbegin(f->s);
  assert_int_equal(mk_tenant(f->s, t, "beta"), tb);
  assert_int_equal(hd__store_w_app(f->s, t, ta, "chat", 0, &n), 0);
  assert_int_equal(n, chat);
  assert_int_equal(hd__store_w_app(f->s, t, tb, "news", 0, &n), 0);
  assert_int_equal(n, news_b);
  assert_int_equal(hd__store_w_app(f->s, t, ta, longid, 0, &n), 0);
  assert_int_equal(n, longest);
  assert_int_equal(hd__store_w_app(f->s, t, ta, "nope", 0, &n), HD_ENOTFOUND);
  mdb_txn_abort(t);

  MDB_txn *r;
  char name[HD_STORE_MAX_ID + 1];
  uint32_t owner = 0;
  assert_int_equal(hd__store_rbegin(f->s, &r), 0);
  assert_int_equal(hd__store_r_app_name(f->s, r, news_b, &owner, name, sizeof name), 0);
  assert_int_equal(owner, tb);
  assert_string_equal(name, "news");
  assert_int_equal(hd__store_r_app_name(f->s, r, longest, &owner, name, sizeof name), 0);
  assert_string_equal(name, longid);
  assert_int_equal(hd__store_r_app_name(f->s, r, 9999, &owner, name, sizeof name), HD_ENOTFOUND);
  hd__store_rend(f->s, r);
}

static void test_device_create_duplicate_lookup(void **state) {
  fx *f = *state;
  hd_store_device a, b, c, x;
  MDB_txn *t = wbegin(f->s);
  uint32_t ta = mk_tenant(f->s, t, "acme"), tb = mk_tenant(f->s, t, "beta");
  assert_int_equal(hd__store_w_device(f->s, t, ta, "phone", &x), HD_ENOTFOUND);
  assert_int_equal(hd__store_w_device_create(f->s, t, ta, "phone", NOW, &a), 0);
  assert_int_equal(a.tenant_num, ta);
  assert_int_equal(a.gen, 1);
  assert_int_equal(a.created_ms, NOW);
  assert_int_equal(hd__store_w_device_create(f->s, t, ta, "phone", NOW + 5, &x), HD_EEXIST);
  assert_int_equal(hd__store_w_device_create(f->s, t, ta, "tablet", NOW + 1, &b), 0);
  assert_int_not_equal(b.dev_num, a.dev_num);
  /* Same id in another tenant: another device. */
  assert_int_equal(hd__store_w_device_create(f->s, t, tb, "phone", NOW + 2, &c), 0);
  assert_int_not_equal(c.dev_num, a.dev_num);
  assert_int_not_equal(c.dev_num, b.dev_num);
  assert_int_equal(hd__store_w_device(f->s, t, ta, "phone", &x), 0);
  assert_int_equal(x.dev_num, a.dev_num);
  assert_int_equal(x.created_ms, NOW); /* the duplicate create changed nothing */
  assert_int_equal(hd__store_w_device_create(f->s, t, ta, "", NOW, &x), HD_EINVAL);
  commit(t);

  t = wbegin(f->s);
  assert_int_equal(hd__store_w_device_create(f->s, t, tb, "phone", NOW, &x), HD_EEXIST);
  mdb_txn_abort(t);

  MDB_txn *r;
  assert_int_equal(hd__store_rbegin(f->s, &r), 0);
  assert_int_equal(hd__store_r_device(f->s, r, ta, "tablet", &x), 0);
  assert_int_equal(x.dev_num, b.dev_num);
  assert_int_equal(x.tenant_num, ta);
  assert_int_equal(x.gen, 1);
  assert_int_equal(x.created_ms, NOW + 1);
  assert_int_equal(hd__store_r_device(f->s, r, tb, "phone", &x), 0);
  assert_int_equal(x.dev_num, c.dev_num);
  assert_int_equal(hd__store_r_device(f->s, r, tb, "tablet", &x), HD_ENOTFOUND);
  hd__store_rend(f->s, r);
}

/* ---- registrations and fan-out ----------------------------------------------------------- */

static void test_registration_starts_after_last_id(void **state) {
  fx *f = *state;
  MDB_txn *t = wbegin(f->s);
  uint32_t tn = mk_tenant(f->s, t, "acme"), an = mk_app(f->s, t, tn, "news");
  uint64_t d1 = mk_device(f->s, t, tn, "d1"), d2 = mk_device(f->s, t, tn, "d2");
  assert_int_equal(hd__store_w_is_registered(f->s, t, d1, an), HD_ENOTFOUND);
  uint64_t m1 = pub(f->s, t, an, 0, LATER, NULL, "before both", NULL);
  reg(f->s, t, d1, an);
  assert_int_equal(hd__store_w_is_registered(f->s, t, d1, an), 0);
  assert_int_equal(hd__store_w_is_registered(f->s, t, d2, an), HD_ENOTFOUND);
  commit(t);

  t = wbegin(f->s);
  uint64_t m2 = pub(f->s, t, an, 0, LATER, NULL, "before d2", NULL);
  commit(t);
  t = wbegin(f->s);
  reg(f->s, t, d2, an);
  reg(f->s, t, d1, an); /* again: nothing changes */
  uint64_t m3 = pub(f->s, t, an, 0, LATER, NULL, "after both", NULL);
  commit(t);

  assert_int_equal(floor_of(f->s, d1, an), m1);
  assert_int_equal(floor_of(f->s, d2, an), m2);
  EXPECT_PENDING(f->s, d1, 0, 100, NOW, m2, m3);
  EXPECT_PENDING(f->s, d2, 0, 100, NOW, m3);
  /* A cursor below the floor does not reach behind the registration. */
  EXPECT_PENDING(f->s, d2, 1, 100, NOW, m3);

  hd_store_reg regs[4];
  size_t n = 0;
  uint64_t count = 0;
  MDB_txn *r;
  assert_int_equal(hd__store_rbegin(f->s, &r), 0);
  assert_int_equal(hd__store_r_regs(f->s, r, d1, regs, 4, &n), 0);
  assert_int_equal(n, 1);
  assert_int_equal(regs[0].app_num, an);
  assert_int_equal(hd__store_r_app_devices(f->s, r, an, &count), 0);
  assert_int_equal(count, 2);
  hd__store_rend(f->s, r);
}

/* The sequence counter is kept back while a transaction publishes and written once by
 * hd__store_wcommit: ids stay consecutive in one transaction, an aborted child transaction gives
 * its ids back, a committed one's are never handed out again (the writer's replay path), and
 * the counter survives reopening. */
static void test_sequence_across_child_transactions(void **state) {
  fx *f = *state;
  MDB_txn *t = wbegin(f->s);
  uint32_t tn = mk_tenant(f->s, t, "acme"), an = mk_app(f->s, t, tn, "news");
  uint64_t a = pub(f->s, t, an, 0, LATER, NULL, "a", NULL);
  uint64_t b = pub(f->s, t, an, 0, LATER, NULL, "b", NULL);
  assert_int_equal(b, a + 1);
  commit(t);

  MDB_txn *parent = wbegin(f->s), *child;
  assert_int_equal(hd__store_wbegin(f->s, parent, &child), 0);
  uint64_t c = pub(f->s, child, an, 0, LATER, NULL, "c", NULL);
  assert_int_equal(hd__store_wcommit(f->s, child), 0);
  assert_int_equal(hd__store_wbegin(f->s, parent, &child), 0);
  uint64_t gone = pub(f->s, child, an, 0, LATER, NULL, "aborted", NULL);
  mdb_txn_abort(child);
  assert_int_equal(hd__store_wbegin(f->s, parent, &child), 0);
  uint64_t d = pub(f->s, child, an, 0, LATER, NULL, "d", NULL);
  assert_int_equal(hd__store_wcommit(f->s, child), 0);
  commit(parent);
  assert_int_equal(c, b + 1);
  assert_int_equal(gone, c + 1);
  assert_int_equal(d, c + 1); /* the aborted child's id was never stored */

  hd__store_close(f->s);
  assert_int_equal(hd__store_open(f->dir, 64 * MIB, &f->s), 0);
  t = wbegin(f->s);
  uint64_t e = pub(f->s, t, an, 0, LATER, NULL, "e", NULL);
  commit(t);
  assert_int_equal(e, d + 1);
  hd_store_stats st;
  assert_int_equal(hd__store_stats(f->s, &st), 0);
  assert_int_equal(st.last_seq, e);
}

static void test_broadcast_reaches_every_registered_device(void **state) {
  fx *f = *state;
  uint32_t tn, news;
  uint64_t devs[8];
  world(f->s, &tn, &news, devs, 8);

  MDB_txn *t = wbegin(f->s);
  uint32_t chat = mk_app(f->s, t, tn, "chat");
  uint64_t chatter = mk_device(f->s, t, tn, "chatter");
  reg(f->s, t, chatter, chat);
  uint32_t tb = mk_tenant(f->s, t, "beta");
  uint32_t news_b = mk_app(f->s, t, tb, "news");
  uint64_t stranger = mk_device(f->s, t, tb, "dev-1"); /* same id, other tenant */
  reg(f->s, t, stranger, news_b);
  uint64_t unregistered = mk_device(f->s, t, tn, "lonely");
  uint64_t m = pub(f->s, t, news, 0, LATER, NULL, "to all", NULL);
  commit(t);

  for (size_t i = 0; i < 8; i++) {
    static got g;
    memset(&g, 0, sizeof g);
    assert_int_equal(pending(f->s, devs[i], 0, 100, NOW, &g), 0);
    assert_int_equal(g.n, 1);
    assert_int_equal(g.seq[0], m);
    assert_int_equal(g.app[0], news);
    assert_int_equal(g.dev[0], 0);
    assert_string_equal(g.data[0], "to all");
  }
  EXPECT_NONE(f->s, chatter, 0, 100, NOW);
  EXPECT_NONE(f->s, stranger, 0, 100, NOW);
  EXPECT_NONE(f->s, unregistered, 0, 100, NOW);
  EXPECT_NONE(f->s, 987654, 0, 100, NOW); /* no such device at all */
}

static void test_direct_message_only_for_its_device(void **state) {
  fx *f = *state;
  uint32_t tn, news;
  uint64_t d[3];
  world(f->s, &tn, &news, d, 3);

  MDB_txn *t = wbegin(f->s);
  uint64_t x = pub(f->s, t, news, d[1], LATER, NULL, "just you", NULL);
  uint64_t b = pub(f->s, t, news, 0, LATER, NULL, "everyone", NULL);
  commit(t);

  static got g;
  memset(&g, 0, sizeof g);
  assert_int_equal(pending(f->s, d[1], 0, 100, NOW, &g), 0);
  assert_int_equal(g.n, 2);
  assert_int_equal(g.seq[0], x);
  assert_int_equal(g.dev[0], d[1]);
  assert_int_equal(g.app[0], news);
  assert_string_equal(g.data[0], "just you");
  assert_int_equal(g.seq[1], b);
  assert_int_equal(g.dev[1], 0);
  EXPECT_PENDING(f->s, d[0], 0, 100, NOW, b);
  EXPECT_PENDING(f->s, d[2], 0, 100, NOW, b);
}

static void test_pending_merges_apps_and_direct_in_id_order(void **state) {
  fx *f = *state;
  MDB_txn *t = wbegin(f->s);
  uint32_t tn = mk_tenant(f->s, t, "acme");
  uint32_t A = mk_app(f->s, t, tn, "a"), B = mk_app(f->s, t, tn, "b"), C = mk_app(f->s, t, tn, "c");
  uint64_t d = mk_device(f->s, t, tn, "d"), e = mk_device(f->s, t, tn, "e");
  /* Registered in an order unlike the app numbers, to show the merge does not depend on it. */
  reg(f->s, t, d, C);
  reg(f->s, t, d, A);
  reg(f->s, t, d, B);
  reg(f->s, t, e, A);
  commit(t);

  t = wbegin(f->s);
  uint64_t a1 = pub(f->s, t, A, 0, LATER, NULL, "a1", NULL);
  uint64_t b1 = pub(f->s, t, B, 0, LATER, NULL, "b1", NULL);
  uint64_t x1 = pub(f->s, t, A, d, LATER, NULL, "x1", NULL);
  uint64_t c1 = pub(f->s, t, C, 0, LATER, NULL, "c1", NULL);
  commit(t);
  t = wbegin(f->s);
  uint64_t a2 = pub(f->s, t, A, 0, LATER, NULL, "a2", NULL);
  uint64_t y1 = pub(f->s, t, A, e, LATER, NULL, "y1", NULL); /* e's, not d's */
  uint64_t b2 = pub(f->s, t, B, 0, LATER, NULL, "b2", NULL);
  uint64_t x2 = pub(f->s, t, C, d, LATER, NULL, "x2", NULL);
  uint64_t c2 = pub(f->s, t, C, 0, LATER, NULL, "c2", NULL);
  uint64_t b3 = pub(f->s, t, B, 0, LATER, NULL, "b3", NULL);
  commit(t);

  EXPECT_PENDING(f->s, d, 0, 100, NOW, a1, b1, x1, c1, a2, b2, x2, c2, b3);
  EXPECT_PENDING(f->s, e, 0, 100, NOW, a1, a2, y1);
  /* Paging with max and the cursor. */
  EXPECT_PENDING(f->s, d, 0, 3, NOW, a1, b1, x1);
  EXPECT_PENDING(f->s, d, x1, 3, NOW, c1, a2, b2);
  EXPECT_PENDING(f->s, d, b2, 3, NOW, x2, c2, b3);
  EXPECT_NONE(f->s, d, b3, 3, NOW);
  EXPECT_PENDING(f->s, d, a2, 100, NOW, b2, x2, c2, b3);
  EXPECT_PENDING(f->s, d, y1, 100, NOW, b2, x2, c2, b3); /* another device's id as cursor */
  EXPECT_NONE(f->s, d, 0, 0, NOW);

  /* A non-zero return from the callback stops the walk and is returned. */
  static got g;
  memset(&g, 0, sizeof g);
  g.stop_at = 2;
  g.stop_rc = 42;
  assert_int_equal(pending(f->s, d, 0, 100, NOW, &g), 42);
  assert_int_equal(g.n, 2);
  assert_int_equal(g.seq[1], b1);
}

/* ---- acks and the floor ------------------------------------------------------------------ */

static void test_ack_broadcast_hides_it_for_that_device_only(void **state) {
  fx *f = *state;
  uint32_t tn, news;
  uint64_t d[3];
  world(f->s, &tn, &news, d, 3);
  MDB_txn *t = wbegin(f->s);
  uint64_t m1 = pub(f->s, t, news, 0, LATER, NULL, "one", NULL);
  uint64_t m2 = pub(f->s, t, news, 0, LATER, NULL, "two", NULL);
  commit(t);

  assert_int_equal(ACK(f->s, d[0], NOW, m1), 1);
  assert_int_equal(ACK(f->s, d[1], NOW, m2), 1);
  EXPECT_PENDING(f->s, d[0], 0, 100, NOW, m2);
  EXPECT_PENDING(f->s, d[1], 0, 100, NOW, m1);
  EXPECT_PENDING(f->s, d[2], 0, 100, NOW, m1, m2);
  /* The messages stay in the log for the others. */
  assert_int_equal(db_entries(f->s, "log"), 2);
}

static void test_ack_is_idempotent_and_ignores_foreign_ids(void **state) {
  fx *f = *state;
  MDB_txn *t = wbegin(f->s);
  uint32_t tn = mk_tenant(f->s, t, "acme");
  uint32_t news = mk_app(f->s, t, tn, "news"), chat = mk_app(f->s, t, tn, "chat");
  uint64_t d1 = mk_device(f->s, t, tn, "d1"), d2 = mk_device(f->s, t, tn, "d2");
  reg(f->s, t, d2, news);
  reg(f->s, t, d2, chat);
  uint64_t early = pub(f->s, t, news, 0, LATER, NULL, "before d1", NULL);
  reg(f->s, t, d1, news);
  uint64_t n1 = pub(f->s, t, news, 0, LATER, NULL, "n1", NULL);
  uint64_t c1 = pub(f->s, t, chat, 0, LATER, NULL, "c1", NULL);
  uint64_t x2 = pub(f->s, t, news, d2, LATER, NULL, "for d2", NULL);
  uint64_t n2 = pub(f->s, t, news, 0, LATER, NULL, "n2", NULL);
  commit(t);

  assert_int_equal(ACK(f->s, d1, NOW, n1), 1);
  assert_int_equal(ACK(f->s, d1, NOW, n1), 0);       /* again */
  assert_int_equal(ACK(f->s, d1, NOW, 999999), 0);   /* unknown */
  assert_int_equal(ACK(f->s, d1, NOW, 0), 0);        /* never an id */
  assert_int_equal(ACK(f->s, d1, NOW, c1), 0);       /* app d1 is not registered for */
  assert_int_equal(ACK(f->s, d1, NOW, x2), 0);       /* another device's direct message */
  assert_int_equal(ACK(f->s, d1, NOW, early), 0);    /* before d1 registered */
  assert_int_equal(ACK(f->s, d1, NOW, n2, n2, 424242, n1), 1); /* duplicates count once */
  assert_int_equal(ACK(f->s, 777777, NOW, n1, n2), 0); /* unknown device */
  size_t acked = 5;
  MDB_txn *w = wbegin(f->s);
  assert_int_equal(hd__store_w_ack(f->s, w, d1, NULL, 0, NOW, &acked), 0);
  assert_int_equal(acked, 0);
  commit(w);

  EXPECT_NONE(f->s, d1, 0, 100, NOW);
  /* Nothing d1 did touched d2. */
  EXPECT_PENDING(f->s, d2, 0, 100, NOW, early, n1, c1, x2, n2);
  /* Ignored acks leave no rows behind, and d1's own were folded into its floor. */
  assert_int_equal(db_entries(f->s, "acks"), 0);
  assert_int_equal(floor_of(f->s, d1, news), n2);
  assert_int_equal(floor_of(f->s, d2, chat), 0);
}

static void test_floor_advance_drops_ack_rows(void **state) {
  fx *f = *state;
  uint32_t tn, news;
  uint64_t d[2], m[8];
  world(f->s, &tn, &news, d, 2);
  uint64_t floor0 = floor_of(f->s, d[0], news);
  MDB_txn *t = wbegin(f->s);
  for (int i = 1; i <= 5; i++) m[i] = pub(f->s, t, news, 0, LATER, NULL, "m", NULL);
  m[6] = pub(f->s, t, news, 0, NOW + 1000, NULL, "short-lived", NULL);
  m[7] = pub(f->s, t, news, 0, LATER, NULL, "m7", NULL);
  commit(t);

  /* Acks out of order: held as rows above the floor until the gap closes. */
  assert_int_equal(ACK(f->s, d[0], NOW, m[4], m[2]), 2);
  assert_int_equal(db_entries(f->s, "acks"), 2);
  assert_int_equal(floor_of(f->s, d[0], news), floor0);
  EXPECT_PENDING(f->s, d[0], 0, 100, NOW, m[1], m[3], m[5], m[6], m[7]);

  assert_int_equal(ACK(f->s, d[0], NOW, m[1]), 1);
  assert_int_equal(floor_of(f->s, d[0], news), m[2]);
  assert_int_equal(db_entries(f->s, "acks"), 1); /* m2's row folded into the floor */
  EXPECT_PENDING(f->s, d[0], 0, 100, NOW, m[3], m[5], m[6], m[7]);

  assert_int_equal(ACK(f->s, d[0], NOW, m[3]), 1);
  assert_int_equal(floor_of(f->s, d[0], news), m[4]);
  assert_int_equal(db_entries(f->s, "acks"), 0);
  EXPECT_PENDING(f->s, d[0], 0, 100, NOW, m[5], m[6], m[7]);

  /* An expired message does not hold the floor back. */
  assert_int_equal(ACK(f->s, d[0], NOW + 5000, m[7], m[5]), 2);
  assert_int_equal(floor_of(f->s, d[0], news), m[7]);
  assert_int_equal(db_entries(f->s, "acks"), 0);
  EXPECT_NONE(f->s, d[0], 0, 100, NOW);

  /* The other device is untouched. */
  assert_int_equal(floor_of(f->s, d[1], news), floor0);
  EXPECT_PENDING(f->s, d[1], 0, 100, NOW, m[1], m[2], m[3], m[4], m[5], m[6], m[7]);
}

static void test_ack_direct_deletes_it(void **state) {
  fx *f = *state;
  uint32_t tn, news;
  uint64_t d[2];
  world(f->s, &tn, &news, d, 2);
  MDB_txn *t = wbegin(f->s);
  uint64_t x = pub(f->s, t, news, d[0], LATER, "k", "direct", NULL);
  uint64_t y = pub(f->s, t, news, d[1], LATER, NULL, "other", NULL);
  commit(t);
  assert_int_equal(db_entries(f->s, "direct"), 2);
  assert_int_equal(db_entries(f->s, "expiry"), 1); /* one transaction, one second: one row */
  assert_int_equal(db_entries(f->s, "collapse"), 1);

  assert_int_equal(ACK(f->s, d[1], NOW, x), 0); /* not d[1]'s */
  assert_int_equal(ACK(f->s, d[0], NOW, x), 1);
  assert_int_equal(ACK(f->s, d[0], NOW, x), 0);
  assert_int_equal(db_entries(f->s, "direct"), 1);
  /* The group row stays (y is in it); x's locator in it is skipped by the sweeper. */
  assert_int_equal(db_entries(f->s, "expiry"), 1);
  assert_int_equal(db_entries(f->s, "collapse"), 0);
  assert_int_equal(db_entries(f->s, "acks"), 0);
  EXPECT_NONE(f->s, d[0], 0, 100, NOW);
  EXPECT_PENDING(f->s, d[1], 0, 100, NOW, y);

  /* Its collapse key is free again. */
  uint64_t replaced = 1;
  t = wbegin(f->s);
  uint64_t z = pub(f->s, t, news, d[0], LATER, "k", "again", &replaced);
  commit(t);
  assert_int_equal(replaced, 0);
  EXPECT_PENDING(f->s, d[0], 0, 100, NOW, z);
}

/* ---- collapse ---------------------------------------------------------------------------- */

static void test_collapse_replaces_within_app_and_device_only(void **state) {
  fx *f = *state;
  uint32_t tn, news;
  uint64_t d[2], r;
  char big[HD_STORE_MAX_COLLAPSE + 2];
  world(f->s, &tn, &news, d, 2);
  MDB_txn *t = wbegin(f->s);
  uint32_t chat = mk_app(f->s, t, tn, "chat");
  reg(f->s, t, d[0], chat);
  uint64_t b1 = pub(f->s, t, news, 0, LATER, "score", "1-0", &r);
  assert_int_equal(r, 0);
  commit(t);

  t = wbegin(f->s);
  uint64_t b2 = pub(f->s, t, news, 0, LATER, "score", "2-0", &r);
  assert_int_equal(r, b1);
  uint64_t c1 = pub(f->s, t, chat, 0, LATER, "score", "chat", &r); /* other app */
  assert_int_equal(r, 0);
  uint64_t x0 = pub(f->s, t, news, d[0], LATER, "score", "x0", &r); /* a device's own */
  assert_int_equal(r, 0);
  uint64_t x1 = pub(f->s, t, news, d[1], LATER, "score", "x1", &r); /* another device's */
  assert_int_equal(r, 0);
  uint64_t p1 = pub(f->s, t, news, 0, LATER, "sc", "prefix", &r); /* a prefix is another key */
  assert_int_equal(r, 0);
  uint64_t n1 = pub(f->s, t, news, 0, LATER, NULL, "plain", NULL);
  uint64_t n2 = pub(f->s, t, news, 0, LATER, NULL, "plain", NULL); /* no key: no collapse */
  commit(t);

  static got g;
  memset(&g, 0, sizeof g);
  assert_int_equal(pending(f->s, d[0], 0, 100, NOW, &g), 0);
  assert_int_equal(g.n, 6);
  assert_int_equal(g.seq[0], b2);
  assert_string_equal(g.data[0], "2-0");
  assert_string_equal(g.collapse[0], "score");
  EXPECT_PENDING(f->s, d[0], 0, 100, NOW, b2, c1, x0, p1, n1, n2);
  EXPECT_PENDING(f->s, d[1], 0, 100, NOW, b2, x1, p1, n1, n2);

  /* A device's own key collapses its own earlier message. */
  t = wbegin(f->s);
  uint64_t x0b = pub(f->s, t, news, d[0], LATER, "score", "x0b", &r);
  assert_int_equal(r, x0);
  uint64_t b3 = pub(f->s, t, news, 0, LATER, "score", "3-0", &r);
  assert_int_equal(r, b2);
  memset(big, 'k', sizeof big - 1);
  big[sizeof big - 1] = 0;
  uint64_t seq;
  assert_int_equal(try_publish(f->s, t, news, 0, LATER, big, "x", 1, &seq, &r), HD_EINVAL);
  commit(t);
  EXPECT_PENDING(f->s, d[0], 0, 100, NOW, c1, p1, n1, n2, x0b, b3);
  EXPECT_PENDING(f->s, d[1], 0, 100, NOW, x1, p1, n1, n2, b3);
  assert_int_equal(db_entries(f->s, "collapse"), 5); /* news, chat, d0, d1, "sc" */
}

/* Acks of a message that later leaves the log (collapsed or swept) must not resurrect
 * anything, and once the floor passes its id the ack row has no purpose. */
static void test_acks_of_collapsed_and_swept_messages(void **state) {
  fx *f = *state;
  uint32_t tn, news;
  uint64_t d[2], r;
  world(f->s, &tn, &news, d, 2);
  MDB_txn *t = wbegin(f->s);
  uint64_t m1 = pub(f->s, t, news, 0, LATER, NULL, "m1", NULL);
  uint64_t m2 = pub(f->s, t, news, 0, LATER, "k", "m2", &r);
  uint64_t m3 = pub(f->s, t, news, 0, NOW + 1000, NULL, "m3 short-lived", NULL);
  commit(t);
  assert_int_equal(ACK(f->s, d[0], NOW, m2, m3), 2); /* m1 still pending: rows kept */
  assert_int_equal(db_entries(f->s, "acks"), 2);

  t = wbegin(f->s);
  uint64_t m4 = pub(f->s, t, news, 0, LATER, "k", "m4", &r);
  assert_int_equal(r, m2);
  size_t deleted = 0;
  assert_int_equal(hd__store_w_sweep(f->s, t, NOW + 5000, 100, &deleted, NULL), 0);
  assert_int_equal(deleted, 1); /* m3 */
  commit(t);

  EXPECT_PENDING(f->s, d[0], 0, 100, NOW + 5000, m1, m4);
  EXPECT_PENDING(f->s, d[1], 0, 100, NOW + 5000, m1, m4);
  assert_int_equal(ACK(f->s, d[0], NOW + 5000, m1, m4), 2);
  EXPECT_NONE(f->s, d[0], 0, 100, NOW + 5000);
  assert_int_equal(floor_of(f->s, d[0], news), m4);

  /* The rows of m2 (collapsed) and m3 (swept) went with the floor too. */
  assert_int_equal(db_entries(f->s, "acks"), 0);
}

/* ---- expiry ------------------------------------------------------------------------------ */

static void test_ttl_hides_expired_and_sweep_deletes(void **state) {
  fx *f = *state;
  uint32_t tn, news;
  uint64_t d[2], r;
  world(f->s, &tn, &news, d, 2);
  MDB_txn *t = wbegin(f->s);
  uint64_t s1 = pub(f->s, t, news, 0, NOW + 1000, NULL, "short", NULL);
  uint64_t k1 = pub(f->s, t, news, 0, NOW + 100000, "k", "keyed", &r);
  uint64_t s2 = pub(f->s, t, news, d[0], NOW + 2000, "dk", "short direct", &r);
  uint64_t s3 = pub(f->s, t, news, 0, NOW + 3000, NULL, "short 3", NULL);
  uint64_t l1 = pub(f->s, t, news, 0, LATER, NULL, "long", NULL);
  commit(t);

  EXPECT_PENDING(f->s, d[0], 0, 100, NOW, s1, k1, s2, s3, l1);
  EXPECT_PENDING(f->s, d[0], 0, 100, NOW + 1500, k1, s2, s3, l1);
  EXPECT_PENDING(f->s, d[0], 0, 100, NOW + 10000, k1, l1);
  EXPECT_PENDING(f->s, d[1], 0, 100, NOW + 10000, k1, l1);
  EXPECT_PENDING(f->s, d[0], 0, 100, NOW + 200000, l1);
  EXPECT_NONE(f->s, d[0], 0, 100, LATER + 1);
  EXPECT_PENDING(f->s, d[0], 0, 1, NOW + 10000, k1); /* max counts live messages only */

  size_t deleted = 99;
  t = wbegin(f->s);
  assert_int_equal(hd__store_w_sweep(f->s, t, NOW, 100, &deleted, NULL), 0);
  assert_int_equal(deleted, 0); /* nothing expired yet */
  assert_int_equal(hd__store_w_sweep(f->s, t, NOW + 10000, 1, &deleted, NULL), 0);
  assert_int_equal(deleted, 1); /* bounded by max: the oldest expiry first */
  assert_int_equal(hd__store_w_sweep(f->s, t, NOW + 10000, 100, &deleted, NULL), 0);
  assert_int_equal(deleted, 2);
  assert_int_equal(hd__store_w_sweep(f->s, t, NOW + 10000, 100, &deleted, NULL), 0);
  assert_int_equal(deleted, 0);
  commit(t);
  assert_int_equal(db_entries(f->s, "log"), 2);
  assert_int_equal(db_entries(f->s, "direct"), 0);
  assert_int_equal(db_entries(f->s, "expiry"), 2);
  assert_int_equal(db_entries(f->s, "collapse"), 1); /* "dk" went with s2 */
  /* Swept messages are gone even for a reader that thinks it is earlier. */
  EXPECT_PENDING(f->s, d[0], 0, 100, NOW, k1, l1);

  t = wbegin(f->s);
  assert_int_equal(hd__store_w_sweep(f->s, t, NOW + 200000, 100, &deleted, NULL), 0);
  assert_int_equal(deleted, 1); /* k1 */
  assert_int_equal(db_entries(f->s, "collapse"), 1); /* not yet visible: other txn */
  uint64_t k2 = pub(f->s, t, news, 0, LATER, "k", "keyed again", &r);
  assert_int_equal(r, 0); /* its collapse row went with it */
  uint64_t s4 = pub(f->s, t, news, d[0], LATER, "dk", "direct again", &r);
  assert_int_equal(r, 0);
  commit(t);
  EXPECT_PENDING(f->s, d[0], 0, 100, NOW, l1, k2, s4);
  assert_int_equal(db_entries(f->s, "collapse"), 2);
}

/* ---- limits ------------------------------------------------------------------------------ */

/* One sweep in a transaction of its own: how many it deleted; *more (may be NULL) as the
 * sweeper says. */
static size_t sweep_at(hd_store *s, int64_t now, size_t max, int *more) {
  size_t deleted = 12345;
  MDB_txn *t = wbegin(s);
  assert_int_equal(hd__store_w_sweep(s, t, now, max, &deleted, more), 0);
  commit(t);
  return deleted;
}

/* Expiry rows group a transaction's messages by the second they expire in, at most 512 a row
 * (one row per message was a tenth of the broker's CPU under ingest); a transaction that is
 * not the writer's (a child) writes its own row at once. */
static void test_expiry_rows_group_a_transactions_messages(void **state) {
  fx *f = *state;
  uint32_t tn, news;
  uint64_t d[1];
  world(f->s, &tn, &news, d, 1);
  MDB_txn *t = wbegin(f->s);
  for (int i = 0; i < 1000; i++) pub(f->s, t, news, 0, LATER + i % 1000, NULL, "x", NULL);
  pub(f->s, t, news, 0, NOW + 1000, NULL, "a", NULL);
  pub(f->s, t, news, 0, NOW + 1999, NULL, "b", NULL); /* the same second as "a" */
  commit(t);
  assert_int_equal(db_entries(f->s, "expiry"), 3); /* 512 + 488, and a + b */
  assert_int_equal(db_entries(f->s, "log"), 1002);

  MDB_txn *parent = wbegin(f->s), *child;
  pub(f->s, parent, news, 0, LATER, NULL, "in the parent", NULL);
  assert_int_equal(hd__store_wbegin(f->s, parent, &child), 0);
  pub(f->s, child, news, 0, LATER, NULL, "in a child", NULL);
  assert_int_equal(hd__store_wcommit(f->s, child), 0);
  commit(parent);
  assert_int_equal(db_entries(f->s, "expiry"), 5); /* the parent's, written as the child began */
  assert_int_equal(db_entries(f->s, "log"), 1004);

  assert_int_equal(sweep_at(f->s, LATER + 1999, 100000, NULL), 1004);
  assert_int_equal(db_entries(f->s, "expiry"), 0);
  assert_int_equal(db_entries(f->s, "log"), 0);
}

/* A row is taken once its second is over (its messages have all expired; reads hid each at
 * its own expiry); messages that left before (collapsed) are skipped, not counted; max bounds
 * the messages looked at, and the rest of the row is written back for the next sweep. */
static void test_sweep_takes_a_row_once_its_second_is_over(void **state) {
  fx *f = *state;
  uint32_t tn, news;
  uint64_t d[1], r;
  world(f->s, &tn, &news, d, 1);
  MDB_txn *t = wbegin(f->s);
  pub(f->s, t, news, 0, NOW + 100, NULL, "early", NULL);
  uint64_t k1 = pub(f->s, t, news, 0, NOW + 200, "k", "collapsed", NULL);
  pub(f->s, t, news, 0, NOW + 300, "k", "kept key", &r);
  assert_int_equal(r, k1);
  uint64_t late = pub(f->s, t, news, 0, NOW + 900, NULL, "late", NULL);
  for (int i = 0; i < 300; i++) pub(f->s, t, news, 0, LATER, NULL, "later", NULL);
  commit(t);
  assert_int_equal(db_entries(f->s, "expiry"), 2);
  EXPECT_PENDING(f->s, d[0], 0, 1, NOW + 500, late); /* hidden at once, still stored */
  assert_int_equal(db_entries(f->s, "log"), 303);

  int more = 1;
  assert_int_equal(sweep_at(f->s, NOW + 999, 1000, &more), 0); /* the second is not over */
  assert_int_equal(more, 0);
  /* early, the kept key, late; the collapsed one was gone */
  assert_int_equal(sweep_at(f->s, NOW + 1000, 1000, &more), 3);
  assert_int_equal(more, 0);
  assert_int_equal(db_entries(f->s, "expiry"), 1);
  assert_int_equal(db_entries(f->s, "log"), 300);

  assert_int_equal(sweep_at(f->s, LATER + 1000, 100, &more), 100);
  assert_int_equal(more, 1); /* stopped at max */
  assert_int_equal(db_entries(f->s, "log"), 200);
  assert_int_equal(db_entries(f->s, "expiry"), 1);
  assert_int_equal(sweep_at(f->s, LATER + 1000, 1000, &more), 200);
  assert_int_equal(more, 0);
  assert_int_equal(db_entries(f->s, "log"), 0);
  assert_int_equal(db_entries(f->s, "expiry"), 0);
}

/* A store written before groups has a row per message (expires_ms, seq -> app, dev): the
 * sweeper still deletes those messages and rows, and a collapse still removes the row. */
static void test_sweep_reads_single_expiry_rows(void **state) {
  fx *f = *state;
  uint32_t tn, news;
  uint64_t d[1], r;
  world(f->s, &tn, &news, d, 1);
  MDB_txn *t = wbegin(f->s);
  uint64_t a = pub(f->s, t, news, 0, NOW + 1234, NULL, "old a", NULL);
  uint64_t b = pub(f->s, t, news, 0, LATER, "k", "old b", NULL);
  commit(t);
  /* Rewrite the index as the old layout had it. */
  MDB_dbi dbi;
  assert_int_equal(hd__store_dbi(f->s, "expiry", &dbi), 0);
  assert_int_equal(mdb_txn_begin(hd__store_env(f->s), NULL, 0, &t), 0);
  assert_int_equal(mdb_drop(t, dbi, 0), 0);
  int64_t exp[2] = {NOW + 1234, LATER};
  uint64_t seq[2] = {a, b};
  for (int i = 0; i < 2; i++) {
    unsigned char kb[16], vb[12];
    for (int j = 0; j < 8; j++) {
      kb[j] = (unsigned char)((uint64_t)exp[i] >> (56 - 8 * j));
      kb[8 + j] = (unsigned char)(seq[i] >> (56 - 8 * j));
      vb[4 + j] = 0; /* dev 0: a broadcast */
    }
    for (int j = 0; j < 4; j++) vb[j] = (unsigned char)(news >> (24 - 8 * j));
    MDB_val k = {16, kb}, v = {12, vb};
    assert_int_equal(mdb_put(t, dbi, &k, &v, 0), 0);
  }
  assert_int_equal(mdb_txn_commit(t), 0);
  assert_int_equal(db_entries(f->s, "expiry"), 2);

  t = wbegin(f->s);
  uint64_t c = pub(f->s, t, news, 0, LATER, "k", "new c", &r);
  assert_int_equal(r, b); /* b's single row went with it */
  size_t deleted = 0;
  assert_int_equal(hd__store_w_sweep(f->s, t, NOW + 1234, 100, &deleted, NULL), 0);
  commit(t);
  assert_int_equal(deleted, 1); /* a */
  assert_int_equal(db_entries(f->s, "expiry"), 1); /* c's group row */
  EXPECT_PENDING(f->s, d[0], 0, 100, NOW, c);
}

static void test_map_full_is_efull_and_store_stays_readable(void **state) {
  fx *f = *state;
  char dir[300];
  hd_store *s = NULL;
  snprintf(dir, sizeof dir, "%s/small", f->dir);
  assert_int_equal(hd__store_open(dir, 1 * MIB, &s), 0);

  MDB_txn *t = wbegin(s);
  uint32_t tn = mk_tenant(s, t, "acme"), news = mk_app(s, t, tn, "news");
  uint64_t d = mk_device(s, t, tn, "d");
  reg(s, t, d, news);
  uint64_t m1 = pub(s, t, news, 0, LATER, NULL, "kept-1", NULL);
  uint64_t m2 = pub(s, t, news, d, LATER, NULL, "kept-2", NULL);
  commit(t);

  size_t big = 64 * 1024;
  char *payload = malloc(big);
  assert_non_null(payload);
  memset(payload, 'x', big);
  t = wbegin(s);
  int rc = 0;
  int i;
  for (i = 0; i < 100 && rc == 0; i++) {
    uint64_t seq, r;
    rc = try_publish(s, t, news, 0, LATER, NULL, payload, big, &seq, &r);
  }
  assert_int_equal(rc, HD_EFULL);
  assert_true(i > 1); /* a few fitted before the map ran out */
  mdb_txn_abort(t);
  free(payload);

  /* Readable, and what was committed before is intact. */
  static got g;
  memset(&g, 0, sizeof g);
  assert_int_equal(pending(s, d, 0, 100, NOW, &g), 0);
  assert_int_equal(g.n, 2);
  assert_int_equal(g.seq[0], m1);
  assert_string_equal(g.data[0], "kept-1");
  assert_int_equal(g.seq[1], m2);
  assert_string_equal(g.data[1], "kept-2");
  hd_store_stats st;
  assert_int_equal(hd__store_stats(s, &st), 0);
  assert_int_equal(st.last_seq, m2);

  /* And writable again for what fits. */
  t = wbegin(s);
  uint64_t m3 = pub(s, t, news, 0, LATER, NULL, "small", NULL);
  commit(t);
  assert_int_equal(m3, m2 + 1);
  EXPECT_PENDING(s, d, 0, 100, NOW, m1, m2, m3);
  hd__store_close(s);
}

static void test_registration_cap_is_etoobig(void **state) {
  fx *f = *state;
  uint32_t apps[257];
  MDB_txn *t = wbegin(f->s);
  uint32_t tn = mk_tenant(f->s, t, "acme");
  uint64_t d = mk_device(f->s, t, tn, "busy"), other = mk_device(f->s, t, tn, "other");
  for (int i = 0; i < 257; i++) {
    char id[16];
    snprintf(id, sizeof id, "app%03d", i);
    apps[i] = mk_app(f->s, t, tn, id);
  }
  for (int i = 0; i < 256; i++) reg(f->s, t, d, apps[i]);
  assert_int_equal(hd__store_w_register(f->s, t, d, apps[256]), HD_ETOOBIG);
  assert_int_equal(hd__store_w_is_registered(f->s, t, d, apps[256]), HD_ENOTFOUND);
  reg(f->s, t, d, apps[17]); /* already registered: still fine at the cap */
  reg(f->s, t, other, apps[256]); /* the cap is per device */
  commit(t);

  hd_store_reg regs[256];
  size_t n = 0;
  MDB_txn *r;
  assert_int_equal(hd__store_rbegin(f->s, &r), 0);
  assert_int_equal(hd__store_r_regs(f->s, r, d, regs, 256, &n), 0);
  hd__store_rend(f->s, r);
  assert_int_equal(n, 256);

  /* A device at the cap still works: the merge covers all 256 apps. */
  t = wbegin(f->s);
  uint64_t first = pub(f->s, t, apps[0], 0, LATER, NULL, "first", NULL);
  uint64_t last = pub(f->s, t, apps[255], 0, LATER, NULL, "last", NULL);
  pub(f->s, t, apps[256], 0, LATER, NULL, "not for busy", NULL);
  commit(t);
  EXPECT_PENDING(f->s, d, 0, 100, NOW, first, last);
  assert_int_equal(ACK(f->s, d, NOW, last, first), 2);
  EXPECT_NONE(f->s, d, 0, 100, NOW);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_reopen_keeps_data, setup, teardown),
      cmocka_unit_test_setup_teardown(test_tenant_and_app_numbers_are_stable, setup, teardown),
      cmocka_unit_test_setup_teardown(test_device_create_duplicate_lookup, setup, teardown),
      cmocka_unit_test_setup_teardown(test_registration_starts_after_last_id, setup, teardown),
      cmocka_unit_test_setup_teardown(test_sequence_across_child_transactions, setup, teardown),
      cmocka_unit_test_setup_teardown(test_broadcast_reaches_every_registered_device, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_direct_message_only_for_its_device, setup, teardown),
      cmocka_unit_test_setup_teardown(test_pending_merges_apps_and_direct_in_id_order, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_ack_broadcast_hides_it_for_that_device_only, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_ack_is_idempotent_and_ignores_foreign_ids, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_floor_advance_drops_ack_rows, setup, teardown),
      cmocka_unit_test_setup_teardown(test_ack_direct_deletes_it, setup, teardown),
      cmocka_unit_test_setup_teardown(test_collapse_replaces_within_app_and_device_only, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_acks_of_collapsed_and_swept_messages, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_ttl_hides_expired_and_sweep_deletes, setup, teardown),
      cmocka_unit_test_setup_teardown(test_expiry_rows_group_a_transactions_messages, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_sweep_takes_a_row_once_its_second_is_over, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_sweep_reads_single_expiry_rows, setup, teardown),
      cmocka_unit_test_setup_teardown(test_map_full_is_efull_and_store_stays_readable, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_registration_cap_is_etoobig, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
