/* test_release.c — the release catalog (release.h) and spooled uploads (http.h):
 *   - version order: dotted versions, integer codes, pre-releases, equal forms; valid versions;
 *     rollout percentages;
 *   - the [release] config section: defaults, values, refusals with file:line;
 *   - rollout: deterministic, the documented formula, and 1000 device ids at 10% land between
 *     70 and 130 (a SHA-256 spreads them; 100 expected);
 *   - catalog rows on a real store and writer: add (the package moved to its content address),
 *     same bytes again, other bytes for the same version, list order, another tenant sees
 *     nothing, lookup, patch (state, required, rollout), install reports and their counters,
 *     download counter, update-check (upgrade, equal forms, install of a required app,
 *     paused and withdrawn releases);
 *   - a spooled upload through the real HTTP server: the handler sees the file, its size and
 *     SHA-256; admit() refuses before the body; over max_body is 413; a file not kept is
 *     deleted.
 * Every test closes its loop and asserts uv_loop_close() == 0. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <arpa/inet.h>
#include <ftw.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "broker.h"
#include "bytes.h"
#include "herald/error.h"
#include "http.h"
#include "release.h"

/* ---- version order ------------------------------------------------------------------------ */

static int vc(const char *a, const char *b) { return hd__release_vercmp(a, 0, 0, b, 0, 0); }

static void test_version_order(void **state) {
  (void)state;
  static const struct {
    const char *a, *b;
    int want;
  } cases[] = {
      {"1.10.0", "1.9.3", 1},    {"1.9.3", "1.10.0", -1},  {"1.0", "1.0.0", 0},
      {"1.0.0", "1.0", 0},       {"1.0.0.0", "1", 0},      {"1.0.1", "1.0", 1},
      {"1.0.0-rc1", "1.0.0", -1}, {"1.0.0", "1.0.0-rc1", 1}, {"1.0.0-rc1", "1.0.0-rc2", -1},
      {"1.0.0-1", "1.0.0-rc1", 1}, {"2", "10", -1},          {"010", "10", 0},
      {"1.2.3", "1.2.3", 0},     {"1.2a", "1.2b", -1},     {"1.2", "1.2-beta", 1},
      {"99999999999999999999", "99999999999999999998", 1},
      {"1.0+build5", "1.0", -1}, /* '+' splits like '.': what follows counts as a pre-release */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int got = vc(cases[i].a, cases[i].b);
    if (got != cases[i].want)
      fail_msg("vercmp(%s, %s) = %d, want %d", cases[i].a, cases[i].b, got, cases[i].want);
  }
  /* Codes decide when both have one, whatever the strings say. */
  assert_int_equal(hd__release_vercmp("1.0", 1, 20, "9.0", 1, 10), 1);
  assert_int_equal(hd__release_vercmp("9.0", 1, 10, "1.0", 1, 20), -1);
  assert_int_equal(hd__release_vercmp("a", 1, 7, "b", 1, 7), 0);
  /* Only one code: the strings decide. */
  assert_int_equal(hd__release_vercmp("1.0", 1, 20, "9.0", 0, 0), -1);
}

static void test_valid_version_and_rollout(void **state) {
  (void)state;
  static const char *const ok[] = {"1", "1.0.0", "1.0.0-rc1", "2024.01.02+b7", "v1_2", "A"};
  static const char *const bad[] = {"", ".1", "-1", "1 0", "1/0", "1..0\n", "é",
                                    "12345678901234567890123456789012345678901234567890123456789"
                                    "0123456"};
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
    if (!hd__release_valid_version(ok[i])) fail_msg("refused '%s'", ok[i]);
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    if (hd__release_valid_version(bad[i])) fail_msg("accepted '%s'", bad[i]);
  static const struct {
    const char *in;
    uint32_t bp;
  } r[] = {{"10", 1000}, {"10%", 1000}, {"0.5", 50}, {"12.25", 1225}, {"100", 10000},
           {"0", 0},     {"7.1", 710},  {"100.00", 10000}};
  for (size_t i = 0; i < sizeof r / sizeof r[0]; i++) {
    uint32_t bp = 12345;
    if (hd__release_parse_rollout(r[i].in, &bp) != 0 || bp != r[i].bp)
      fail_msg("rollout '%s' -> %u, want %u", r[i].in, bp, r[i].bp);
  }
  static const char *const rbad[] = {"", "-1", "101", "100.01", "1.234", "ten", "5%%", ".5",
                                     "5.", "1e2"};
  for (size_t i = 0; i < sizeof rbad / sizeof rbad[0]; i++) {
    uint32_t bp;
    if (hd__release_parse_rollout(rbad[i], &bp) != HD_EINVAL) fail_msg("accepted '%s'", rbad[i]);
  }
}

/* ---- rollout ------------------------------------------------------------------------------ */

/* The documented formula, computed here on its own. */
static uint32_t bucket(const char *tenant, const char *app, const char *version, const char *dev) {
  char in[512];
  unsigned char md[32];
  unsigned len = 0;
  int n = snprintf(in, sizeof in, "%s/%s/%s/%s", tenant, app, version, dev);
  assert_true(EVP_Digest(in, (size_t)n, md, &len, EVP_sha256(), NULL) == 1);
  return hd_rd32(md) % 10000;
}

static void test_rollout(void **state) {
  (void)state;
  int inside = 0;
  for (int i = 0; i < 1000; i++) {
    char dev[32];
    snprintf(dev, sizeof dev, "device-%04d", i);
    int in = hd__release_in_rollout("acme", "mail", "2.0.0", dev, 1000);
    /* Deterministic, and the formula of the contract. */
    assert_int_equal(in, hd__release_in_rollout("acme", "mail", "2.0.0", dev, 1000));
    assert_int_equal(in, bucket("acme", "mail", "2.0.0", dev) < 1000);
    /* Raising the rollout only adds devices. */
    if (in) assert_true(hd__release_in_rollout("acme", "mail", "2.0.0", dev, 2500));
    inside += in;
  }
  if (inside < 70 || inside > 130) fail_msg("10%% of 1000 devices: %d inside", inside);
  /* Another version (or tenant) draws other devices: not the same 10% every time. */
  int same = 0;
  for (int i = 0; i < 1000; i++) {
    char dev[32];
    snprintf(dev, sizeof dev, "device-%04d", i);
    same += hd__release_in_rollout("acme", "mail", "2.0.0", dev, 1000) &&
            hd__release_in_rollout("acme", "mail", "2.0.1", dev, 1000);
  }
  assert_true(same < 40);
  assert_false(hd__release_in_rollout("acme", "mail", "2.0.0", "x", 0));
  assert_true(hd__release_in_rollout("acme", "mail", "2.0.0", "x", 10000));
}

/* ---- [release] config ---------------------------------------------------------------------- */

static void test_release_config(void **state) {
  (void)state;
  hd_config c;
  char err[512];
  assert_int_equal(hd__config_parse("", 0, "t.conf", &c, err, sizeof err), 0);
  assert_null(c.release.public_url);
  assert_int_equal(c.release.max_package, 256ull << 20);
  assert_int_equal(c.release.fanout_batch, 256);
  hd__config_free(&c);
  static const char good[] =
      "[release]\npublic_url = https://updates.example.com/herald\nmax_package = 2GiB\n"
      "fanout_batch = 10\n";
  assert_int_equal(hd__config_parse(good, sizeof good - 1, "t.conf", &c, err, sizeof err), 0);
  assert_string_equal(c.release.public_url, "https://updates.example.com/herald");
  assert_int_equal(c.release.max_package, 2ull << 30);
  assert_int_equal(c.release.fanout_batch, 10);
  hd__config_free(&c);
  static const char *const bad[] = {
      "[release]\npublic_url = ftp://x\n",         "[release]\npublic_url = http://\n",
      "[release]\npublic_url = http://a/b?c=d\n",  "[release]\nmax_package = 100\n",
      "[release]\nfanout_batch = 0\n",             "[release]\nmax_packages = 1M\n",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    memset(&c, 0, sizeof c);
    if (hd__config_parse(bad[i], strlen(bad[i]), "t.conf", &c, err, sizeof err) != HD_ECONFIG)
      fail_msg("accepted: %s", bad[i]);
    if (!strstr(err, "t.conf:")) fail_msg("no file:line in '%s'", err);
  }
}

/* ---- catalog rows on a real store --------------------------------------------------------- */

typedef struct fx {
  char dir[256];
  uv_loop_t loop;
  hd_broker b;
  hd_releases *rs;
  int loop_closed;
} fx;

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  return remove(path);
}

static int setup(void **state) {
  fx *f = calloc(1, sizeof *f);
  const char *tmp = getenv("TMPDIR");
  char err[512], text[1024], path[512];
  if (!f) return -1;
  snprintf(f->dir, sizeof f->dir, "%s/herald-release-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(f->dir) || uv_loop_init(&f->loop) != 0) return -1;
  *state = f;
  hd_broker *b = &f->b;
  b->loop = &f->loop;
  int n = snprintf(text, sizeof text,
                   "data_dir = %s\n[release]\npublic_url = http://pkg.example:8080/\n"
                   "fanout_batch = 3\n[tenant a]\napps = *\n[tenant b]\napps = *\n",
                   f->dir);
  if (hd__config_parse(text, (size_t)n, "t.conf", &b->cfg, err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    return -1;
  }
  snprintf(path, sizeof path, "%s/store", f->dir);
  if (hd__store_open(path, 64ull << 20, &b->store) ||
      hd__tenants_load(&b->tenants, &b->cfg, b->store, err, sizeof err) ||
      hd__metrics_new(&b->metrics) || hd__release_open(b, &f->rs, err, sizeof err) ||
      hd__writer_start(&f->loop, b->store, 64, 1 << 20, &b->writer)) {
    fprintf(stderr, "setup: %s\n", err);
    return -1;
  }
  b->releases = f->rs;
  hd__release_start(f->rs);
  return 0;
}

static int teardown(void **state) {
  fx *f = *state;
  hd_broker *b = &f->b;
  if (!f->loop_closed) {
    hd__release_stop(f->rs);
    if (b->writer) hd__writer_stop(b->writer);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0); /* a handle left open is a leak */
  }
  hd__writer_free(b->writer);
  hd__release_free(f->rs);
  hd__tenants_free(&b->tenants);
  hd__store_close(b->store);
  hd__metrics_free(b->metrics);
  hd__config_free(&b->cfg);
  nftw(f->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
  free(f);
  return 0;
}

/* Runs the loop until *flag is set. */
static void run_until(fx *f, const int *flag) {
  for (int i = 0; !*flag && i < 100000; i++) uv_run(&f->loop, UV_RUN_ONCE);
  assert_true(*flag);
}

typedef struct answer {
  int done, status, created;
  hd_release rel;
  hd_release_offer offers[8];
  size_t noffers;
} answer;

static void on_rel(void *ud, int status, const hd_release *rel, int created, const char *reason) {
  answer *a = ud;
  (void)reason;
  a->done = 1;
  a->status = status;
  a->created = created;
  if (rel) a->rel = *rel;
}

static void on_offers(void *ud, int status, const hd_release_offer *o, size_t n,
                      const char *reason) {
  answer *a = ud;
  (void)reason;
  a->done = 1;
  a->status = status;
  a->noffers = n < 8 ? n : 8;
  if (n) memcpy(a->offers, o, a->noffers * sizeof *o);
}

static void on_status(void *ud, int status, const char *reason) {
  answer *a = ud;
  (void)reason;
  a->done = 1;
  a->status = status;
}

/* A spooled upload as http.c leaves it: a file in packages/tmp, with its size and SHA-256. */
static void make_upload(fx *f, const char *content, char *path, size_t len, unsigned char sha[32]) {
  static int seq;
  snprintf(path, len, "%s/upload-test%d", hd__release_tmp_dir(f->rs), seq++);
  FILE *fp = fopen(path, "wb");
  assert_non_null(fp);
  fputs(content, fp);
  fclose(fp);
  unsigned mdlen;
  assert_true(EVP_Digest(content, strlen(content), sha, &mdlen, EVP_sha256(), NULL) == 1);
}

static answer add(fx *f, const char *tenant, const char *app, const char *version,
                  const char *content, uint32_t rollout_bp, int required, int has_code,
                  int64_t code) {
  char path[512];
  unsigned char sha[32];
  answer a = {0};
  make_upload(f, content, path, sizeof path, sha);
  hd_release_new req = {
      .tenant = hd__tenant_by_name(&f->b.tenants, tenant),
      .app = app,
      .version = version,
      .notes = "n",
      .has_code = has_code,
      .code = code,
      .rollout_bp = rollout_bp,
      .required = required,
      .file = path,
      .size = strlen(content),
      .sha256 = sha,
  };
  hd__release_add(f->rs, &req, on_rel, &a);
  run_until(f, &a.done);
  struct stat st;
  assert_int_equal(stat(path, &st), -1); /* moved, or deleted as a duplicate */
  return a;
}

static answer patch(fx *f, const char *tenant, const char *app, const char *version, int bp,
                    int state, int required) {
  answer a = {0};
  hd_release_patch p = {.set_rollout = bp >= 0, .rollout_bp = bp >= 0 ? (uint32_t)bp : 0,
                        .state = state, .required = required};
  hd__release_patch(f->rs, hd__tenant_by_name(&f->b.tenants, tenant), app, version, &p, on_rel,
                    &a);
  run_until(f, &a.done);
  return a;
}

static answer check(fx *f, const char *tenant, const char *device, uint64_t dev_num,
                    const hd_release_inv *inv, size_t n) {
  answer a = {0};
  hd__release_update_check(f->rs, hd__tenant_by_name(&f->b.tenants, tenant), device, dev_num,
                           inv, n, NULL, on_offers, &a);
  run_until(f, &a.done);
  assert_int_equal(a.status, 0);
  return a;
}

typedef struct tally {
  int n;
  char versions[8][HD_REL_MAX_VERSION + 1];
  hd_release_counts c[8];
  char reason0[64];
} tally;

static int on_report(void *ud, const hd_release *rel, const hd_release_counts *c) {
  tally *t = ud;
  if (t->n < 8) {
    snprintf(t->versions[t->n], sizeof t->versions[0], "%s", rel->version);
    t->c[t->n] = *c;
    if (c->nreasons) snprintf(t->reason0, sizeof t->reason0, "%.*s", (int)c->reasons[0].len,
                              c->reasons[0].text);
  }
  t->n++;
  return 0;
}

static void test_catalog(void **state) {
  fx *f = *state;
  hd_releases *rs = f->rs;
  uint32_t ta = hd__tenant_by_name(&f->b.tenants, "a")->num;
  uint32_t tb = hd__tenant_by_name(&f->b.tenants, "b")->num;

  answer a = add(f, "a", "mail", "1.9.3", "package one", 0, 0, 0, 0);
  assert_int_equal(a.status, 0);
  assert_int_equal(a.created, 1);
  assert_string_equal(a.rel.version, "1.9.3");
  assert_int_equal(a.rel.size, strlen("package one"));
  assert_int_equal(a.rel.state, HD_REL_ACTIVE);
  /* The same bytes again: idempotent, the first release unchanged. */
  answer again = add(f, "a", "mail", "1.9.3", "package one", 5000, 0, 0, 0);
  assert_int_equal(again.status, 0);
  assert_int_equal(again.created, 0);
  assert_int_equal(again.rel.rollout_bp, 0);
  assert_int_equal(again.rel.created_ms, a.rel.created_ms);
  /* Other bytes for that version: a conflict. */
  assert_int_equal(add(f, "a", "mail", "1.9.3", "package two", 0, 0, 0, 0).status, HD_EEXIST);
  assert_int_equal(add(f, "a", "mail", "1.10.0", "package two", 0, 0, 0, 0).status, 0);
  assert_int_equal(add(f, "a", "mail", "1.10.0-rc1", "package rc", 0, 0, 0, 0).status, 0);

  /* Content-addressed on disk. */
  hd_release_info info;
  assert_int_equal(hd__release_lookup(rs, ta, "mail", "1.9.3", &info), 0);
  char want[512];
  snprintf(want, sizeof want, "%s/packages/%.2s/%s", f->dir, info.sha256, info.sha256);
  assert_string_equal(info.path, want);
  assert_int_equal(info.size, strlen("package one"));
  assert_int_equal(info.rollout_bp, 0);
  struct stat st;
  assert_int_equal(stat(info.path, &st), 0);
  assert_int_equal(st.st_size, (off_t)strlen("package one"));
  assert_int_equal(hd__release_lookup(rs, ta, "mail", "9.9", &info), HD_ENOTFOUND);

  /* Newest first. */
  hd_release *all;
  size_t n;
  assert_int_equal(hd__release_list(rs, ta, "mail", &all, &n), 0);
  assert_int_equal(n, 3);
  assert_string_equal(all[0].version, "1.10.0");
  assert_string_equal(all[1].version, "1.10.0-rc1");
  assert_string_equal(all[2].version, "1.9.3");
  free(all);

  /* Tenant b has an app of the same id: it sees none of a's releases. */
  assert_int_equal(hd__release_list(rs, tb, "mail", &all, &n), 0);
  assert_int_equal(n, 0);
  free(all);
  hd_release r;
  assert_int_equal(hd__release_get(rs, tb, "mail", "1.9.3", &r), HD_ENOTFOUND);
  assert_int_equal(hd__release_lookup(rs, tb, "mail", "1.9.3", &info), HD_ENOTFOUND);
  assert_int_equal(add(f, "b", "mail", "1.9.3", "b's own", 0, 0, 0, 0).status, 0);
  assert_int_equal(hd__release_get(rs, tb, "mail", "1.9.3", &r), 0);
  assert_int_equal(hd__release_get(rs, ta, "mail", "1.9.3", &r), 0);
  assert_int_equal(r.size, strlen("package one")); /* a's, untouched */

  /* update-check: rollout 0 offers nothing. */
  hd_release_inv inv[] = {{"mail", "1.0"}};
  assert_int_equal(check(f, "a", "dev1", 1001, inv, 1).noffers, 0);
  /* Rollout 100% (no device is registered: the notice fan-out walks and finds none). */
  answer p = patch(f, "a", "mail", "1.10.0", 10000, -1, -1);
  assert_int_equal(p.status, 0);
  assert_int_equal(p.rel.rollout_bp, 10000);
  answer c = check(f, "a", "dev1", 1001, inv, 1);
  assert_int_equal(c.noffers, 1);
  assert_string_equal(c.offers[0].rel.version, "1.10.0");
  assert_int_equal(c.offers[0].install, 0);
  assert_string_equal(c.offers[0].from, "1.0");
  /* Current (also in an equal form), or newer: nothing. */
  hd_release_inv cur[] = {{"mail", "1.10"}};
  assert_int_equal(check(f, "a", "dev1", 1001, cur, 1).noffers, 0);
  hd_release_inv newer[] = {{"mail", "2.0"}};
  assert_int_equal(check(f, "a", "dev1", 1001, newer, 1).noffers, 0);
  /* Tenant b's device with the same app id is not offered a's release. */
  assert_int_equal(check(f, "b", "dev1", 2002, inv, 1).noffers, 0);
  /* Paused: no offer; active again: offered. */
  assert_int_equal(patch(f, "a", "mail", "1.10.0", -1, HD_REL_PAUSED, -1).rel.state,
                   HD_REL_PAUSED);
  assert_int_equal(check(f, "a", "dev1", 1001, inv, 1).noffers, 0);
  assert_int_equal(patch(f, "a", "mail", "1.10.0", -1, HD_REL_ACTIVE, -1).status, 0);
  assert_int_equal(check(f, "a", "dev1", 1001, inv, 1).noffers, 1);
  /* Withdrawn: the next one down (1.9.3 at 100%) is offered instead. */
  assert_int_equal(patch(f, "a", "mail", "1.9.3", 10000, -1, -1).status, 0);
  assert_int_equal(patch(f, "a", "mail", "1.10.0", -1, HD_REL_WITHDRAWN, -1).status, 0);
  c = check(f, "a", "dev1", 1001, inv, 1);
  assert_int_equal(c.noffers, 1);
  assert_string_equal(c.offers[0].rel.version, "1.9.3");
  assert_int_equal(patch(f, "a", "nope", "1.0", -1, HD_REL_PAUSED, -1).status, HD_ENOTFOUND);

  /* A required app the device does not have: an install. Codes order its releases. */
  assert_int_equal(add(f, "a", "store", "3.0", "store 3", 10000, 1, 1, 30).status, 0);
  assert_int_equal(add(f, "a", "store", "2.9", "store 2.9", 10000, 0, 1, 31).status, 0);
  c = check(f, "a", "dev1", 1001, inv, 1);
  assert_int_equal(c.noffers, 2);
  assert_string_equal(c.offers[1].rel.app, "store");
  assert_string_equal(c.offers[1].rel.version, "2.9"); /* code 31 > 30 */
  assert_int_equal(c.offers[1].install, 1);
  assert_true(c.offers[1].rel.required);
  /* Installed at 3.0 (code 30, known from the catalog): 2.9 (code 31) is an upgrade. */
  hd_release_inv both[] = {{"mail", "1.9.3"}, {"store", "3.0"}};
  c = check(f, "a", "dev1", 1001, both, 2);
  assert_int_equal(c.noffers, 1);
  assert_string_equal(c.offers[0].rel.version, "2.9");
  assert_string_equal(c.offers[0].from, "3.0");
  /* No longer required: no install for a device without it. */
  assert_false(patch(f, "a", "store", "3.0", -1, -1, 0).rel.required);
  assert_int_equal(check(f, "a", "dev1", 1001, inv, 1).noffers, 1);

  /* Install reports and downloads, counted per release; b's counters stay apart. */
  hd_tenant *tn = hd__tenant_by_name(&f->b.tenants, "a");
  hd_install_report ok = {.app = "mail", .version = "1.9.3", .success = 1, .action = "upgrade"};
  hd_install_report bad = {.app = "mail", .version = "1.9.3", .success = 0,
                           .reason = "sha256_mismatch"};
  hd_install_report none = {.app = "mail", .version = "7.7", .success = 1};
  const hd_install_report *reps[] = {&ok, &ok, &bad};
  for (size_t i = 0; i < 3; i++) {
    answer s = {0};
    hd__release_install_report(rs, tn, "dev1", 1001, reps[i], on_status, &s);
    run_until(f, &s.done);
    assert_int_equal(s.status, 0);
  }
  answer s = {0};
  hd__release_install_report(rs, tn, "dev1", 1001, &none, on_status, &s);
  run_until(f, &s.done);
  assert_int_equal(s.status, HD_ENOTFOUND);
  hd__release_count_download(rs, ta, "mail", "1.9.3");
  hd__release_count_download(rs, ta, "mail", "1.9.3");
  hd__release_count_download(rs, tb, "mail", "1.9.3");
  answer sync = patch(f, "a", "mail", "1.9.3", -1, -1, -1); /* after the counters commit */
  assert_int_equal(sync.status, 0);
  tally t = {0};
  assert_int_equal(hd__release_reports(rs, ta, "mail", "1.9.3", on_report, &t), 0);
  assert_int_equal(t.n, 1);
  assert_int_equal(t.c[0].success, 2);
  assert_int_equal(t.c[0].failure, 1);
  assert_int_equal(t.c[0].downloads, 2);
  assert_int_equal(t.c[0].nreasons, 1);
  assert_string_equal(t.reason0, "sha256_mismatch");
  tally tbt = {0};
  assert_int_equal(hd__release_reports(rs, tb, NULL, NULL, on_report, &tbt), 0);
  assert_int_equal(tbt.n, 1);
  assert_int_equal(tbt.c[0].success, 0);
  assert_int_equal(tbt.c[0].downloads, 1);
  tally all_a = {0};
  assert_int_equal(hd__release_reports(rs, ta, NULL, NULL, on_report, &all_a), 0);
  assert_int_equal(all_a.n, 5); /* mail 1.10.0, 1.10.0-rc1, 1.9.3; store 2.9, 3.0 */
}

/* ---- spooled uploads through the HTTP server --------------------------------------------- */

typedef struct spool_fx {
  uv_loop_t loop;
  hd_http_server *s;
  int port;
  char dir[256];
  char seen_path[4096];
  uint64_t seen_size;
  unsigned char seen_sha[32];
  int handled;
  /* the client thread */
  const char *request;
  size_t request_len;
  char response[4096];
  int leave;
  int closed;
} spool_fx;

static void h_spooled(void *ud, hd_http_req *r) {
  spool_fx *z = ud;
  const char *p = hd__http_spool(r, &z->seen_size, z->seen_sha);
  assert_non_null(p);
  snprintf(z->seen_path, sizeof z->seen_path, "%s", p);
  struct stat st;
  assert_int_equal(stat(p, &st), 0);
  assert_int_equal((uint64_t)st.st_size, z->seen_size);
  z->handled++;
  hd__http_reply(r, 200, "text/plain", "ok", 2); /* not kept: the server deletes the file */
}

static int admit(void *ud, hd_http_req *r, const char **message) {
  (void)ud;
  const char *k = hd__http_bearer(r);
  if (!k || strcmp(k, "good") != 0) {
    *message = "bad key";
    return HD_EAUTH;
  }
  return 0;
}

static void *client(void *arg) {
  spool_fx *z = arg;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)z->port)};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) return NULL;
  size_t off = 0, got = 0;
  /* Send until done or the server closes (a refusal before the body). */
  while (off < z->request_len) {
    ssize_t n = send(fd, z->request + off, z->request_len - off, MSG_NOSIGNAL);
    if (n <= 0) break;
    off += (size_t)n;
  }
  /* A half-close would count as the client leaving: either wait for the answer (the request
   * says Connection: close), or leave mid-body on purpose. */
  for (; !z->leave;) {
    ssize_t n = recv(fd, z->response + got, sizeof z->response - 1 - got, 0);
    if (n <= 0) break;
    got += (size_t)n;
  }
  z->response[got] = 0;
  close(fd);
  z->closed = 1;
  return NULL;
}

static void run_client(spool_fx *z, const char *req, size_t len) {
  pthread_t th;
  z->request = req;
  z->request_len = len;
  z->closed = 0;
  z->response[0] = 0;
  assert_int_equal(pthread_create(&th, NULL, client, z), 0);
  while (!__atomic_load_n(&z->closed, __ATOMIC_SEQ_CST)) uv_run(&z->loop, UV_RUN_NOWAIT);
  pthread_join(th, NULL);
  /* Let the discard of a file not kept finish. */
  for (int i = 0; i < 200; i++) uv_run(&z->loop, UV_RUN_NOWAIT), usleep(1000);
}

static void on_closed(hd_http_server *s) { (void)s; }

static int count_files(const char *dir) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "ls -A %s | wc -l", dir);
  FILE *p = popen(cmd, "r");
  int n = -1;
  if (p) {
    if (fscanf(p, "%d", &n) != 1) n = -1;
    pclose(p);
  }
  return n;
}

static void test_spool(void **state) {
  (void)state;
  spool_fx *z = calloc(1, sizeof *z);
  const char *tmp = getenv("TMPDIR");
  snprintf(z->dir, sizeof z->dir, "%s/herald-spool-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  assert_non_null(mkdtemp(z->dir));
  assert_int_equal(uv_loop_init(&z->loop), 0);
  hd_http_opts o = {.max_body = 4096, .idle_timeout_ms = 20000};
  assert_int_equal(hd__http_new(&z->loop, &o, &z->s), 0);
  assert_int_equal(hd__http_route_spool(z->s, "POST", "/up/{name}", h_spooled, z, z->dir,
                                        (uint64_t)8 << 20, admit),
                   0);
  assert_int_equal(hd__http_listen(z->s, "127.0.0.1", 0), 0);
  z->port = hd__http_port(z->s);

  /* 5 MiB (far over max_body 4096): written to the file as it comes, hashed on the way. */
  size_t body = (size_t)5 << 20;
  char head[256];
  int hl = snprintf(head, sizeof head,
                    "POST /up/x HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer good\r\n"
                    "Content-Length: %zu\r\nConnection: close\r\n\r\n", body);
  char *req = malloc((size_t)hl + body);
  memcpy(req, head, (size_t)hl);
  for (size_t i = 0; i < body; i++) req[hl + i] = (char)(i * 7 + i / 1000);
  unsigned char want[32];
  unsigned mdlen;
  assert_true(EVP_Digest(req + hl, body, want, &mdlen, EVP_sha256(), NULL) == 1);
  run_client(z, req, (size_t)hl + body);
  assert_int_equal(z->handled, 1);
  assert_int_equal(z->seen_size, body);
  assert_memory_equal(z->seen_sha, want, 32);
  if (!strstr(z->response, "200 OK")) fail_msg("response: %s", z->response);
  assert_int_equal(count_files(z->dir), 0); /* not kept: deleted */

  /* A wrong key is refused before the body: 401, and no file. */
  memcpy(req, head, (size_t)hl);
  char *auth = strstr(req, "Bearer good");
  memcpy(auth, "Bearer nope", 11);
  run_client(z, req, (size_t)hl + body);
  assert_non_null(strstr(z->response, "401"));
  assert_non_null(strstr(z->response, "bad key"));
  assert_int_equal(z->handled, 1);
  assert_int_equal(count_files(z->dir), 0);

  /* Over the route's bound: 413 from the Content-Length alone. */
  hl = snprintf(req, 256,
                "POST /up/x HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer good\r\n"
                "Content-Length: %llu\r\nConnection: close\r\n\r\n",
                (unsigned long long)(9ull << 20));
  run_client(z, req, (size_t)hl);
  assert_non_null(strstr(z->response, "413"));
  assert_int_equal(z->handled, 1);

  /* Chunked, and a client that leaves mid-body: no handler, no file left behind. */
  hl = snprintf(req, 256,
                "POST /up/y HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer good\r\n"
                "Transfer-Encoding: chunked\r\n\r\n100000\r\n");
  memset(req + hl, 'z', 300000);
  z->leave = 1;
  run_client(z, req, (size_t)hl + 300000);
  assert_int_equal(z->handled, 1);
  assert_int_equal(count_files(z->dir), 0);
  free(req);

  hd__http_close(z->s, on_closed);
  uv_run(&z->loop, UV_RUN_DEFAULT);
  hd__http_free(z->s);
  assert_int_equal(uv_loop_close(&z->loop), 0);
  rmdir(z->dir);
  free(z);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_version_order),
      cmocka_unit_test(test_valid_version_and_rollout),
      cmocka_unit_test(test_rollout),
      cmocka_unit_test(test_release_config),
      cmocka_unit_test_setup_teardown(test_catalog, setup, teardown),
      cmocka_unit_test(test_spool),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
