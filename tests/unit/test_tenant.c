/* test_tenant.c — tenants at run time (tenant.h): key files generated once with mode 0600 and
 * read back on later starts, a configured publish key used as is, lookup by key, device tokens
 * (mint, verify, and every way a token can be wrong), which apps a tenant declares and opens to
 * self-registration, id validation and random ids. Each test works in a fresh mkdtemp
 * directory that holds both the tenants' key files and the LMDB store. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "config.h"
#include "herald/error.h"
#include "store.h"
#include "tenant.h"

#define BETA_KEY "beta-configured-key-0123456789abcdef"

/* ---- fixture ----------------------------------------------------------------------------- */

typedef struct fx {
  char dir[256];
  char dbdir[300];
  hd_config cfg;
  hd_store *s;
  hd_tenants ts;
} fx;

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

static int parse_config(fx *f, const char *data_dir) {
  char text[2048], err[256];
  snprintf(text, sizeof text,
           "data_dir = %s\n"
           "[tenant acme]\n"
           "apps = news, chat, alerts\n"
           "self_register = news\n"
           "allowed_origins = http://127.0.0.1:9000, https://App.Example.com\n"
           "[tenant beta]\n"
           "publish_key = " BETA_KEY "\n"
           "apps = *\n"
           "self_register = *\n"
           "self_register_per_min = 0\n"
           "allowed_origins = *\n"
           "[tenant gamma]\n"
           "apps = *\n",
           data_dir);
  int rc = hd__config_parse(text, strlen(text), "test.conf", &f->cfg, err, sizeof err);
  if (rc) print_error("config: %s\n", err);
  return rc;
}

static int setup(void **state) {
  fx *f = calloc(1, sizeof *f);
  const char *tmp = getenv("TMPDIR");
  if (!f) return -1;
  snprintf(f->dir, sizeof f->dir, "%s/herald-tenant-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(f->dir)) goto fail;
  snprintf(f->dbdir, sizeof f->dbdir, "%s/db", f->dir);
  if (parse_config(f, f->dir) || hd__store_open(f->dbdir, 16u << 20, &f->s)) goto fail;
  *state = f;
  return 0;
fail:
  free(f);
  return -1;
}

static int teardown(void **state) {
  fx *f = *state;
  hd__tenants_free(&f->ts);
  hd__store_close(f->s);
  hd__config_free(&f->cfg);
  nftw(f->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
  free(f);
  return 0;
}

static void load(fx *f, hd_tenants *ts) {
  char err[256] = "";
  int rc = hd__tenants_load(ts, &f->cfg, f->s, err, sizeof err);
  if (rc) print_error("load: %s\n", err);
  assert_int_equal(rc, 0);
  assert_int_equal(ts->n, 3);
}

static hd_tenant *by_name(const hd_tenants *ts, const char *name) {
  hd_tenant *t = hd__tenant_by_name(ts, name);
  assert_non_null(t);
  assert_string_equal(t->name, name);
  return t;
}

static void read_file(const char *path, char *buf, size_t len) {
  FILE *fp = fopen(path, "rb");
  assert_non_null(fp);
  size_t n = fread(buf, 1, len - 1, fp);
  buf[n] = 0;
  fclose(fp);
}

static void assert_mode(const char *path, unsigned mode) {
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_mode & 0777, mode);
}

static int b64url_only(const char *s) {
  for (; *s; s++)
    if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
          *s == '-' || *s == '_'))
      return 0;
  return 1;
}

/* ---- loading ----------------------------------------------------------------------------- */

static void test_load_generates_key_files_mode_0600(void **state) {
  fx *f = *state;
  char path[512], buf[512];
  load(f, &f->ts);
  hd_tenant *acme = by_name(&f->ts, "acme"), *beta = by_name(&f->ts, "beta");
  hd_tenant *gamma = by_name(&f->ts, "gamma");

  assert_int_equal(strlen(acme->publish_key), HD_KEY_LEN);
  assert_true(b64url_only(acme->publish_key));
  snprintf(path, sizeof path, "%s/tenants/acme", f->dir);
  assert_mode(path, 0700);
  snprintf(path, sizeof path, "%s/tenants/acme/publish.key", f->dir);
  assert_mode(path, 0600);
  read_file(path, buf, sizeof buf);
  assert_string_equal(buf, acme->publish_key);

  snprintf(path, sizeof path, "%s/tenants/acme/device.secret", f->dir);
  assert_mode(path, 0600);
  read_file(path, buf, sizeof buf);
  assert_int_equal(strlen(buf), 64);
  for (int i = 0; i < 32; i++) {
    unsigned v;
    assert_int_equal(sscanf(buf + 2 * i, "%2x", &v), 1);
    assert_int_equal(v, acme->device_secret[i]);
  }

  /* The configured key is used as it is; every tenant gets its own secret and key. */
  assert_string_equal(beta->publish_key, BETA_KEY);
  snprintf(path, sizeof path, "%s/tenants/beta/device.secret", f->dir);
  assert_mode(path, 0600);
  assert_int_equal(strlen(gamma->publish_key), HD_KEY_LEN);
  assert_string_not_equal(gamma->publish_key, acme->publish_key);
  assert_memory_not_equal(acme->device_secret, beta->device_secret, 32);
  assert_memory_not_equal(acme->device_secret, gamma->device_secret, 32);

  /* Tenants and their declared apps are in the store. */
  assert_int_not_equal(acme->num, 0);
  assert_int_not_equal(acme->num, beta->num);
  assert_int_not_equal(beta->num, gamma->num);
  assert_int_not_equal(acme->num, gamma->num);
  MDB_txn *t;
  uint32_t num = 0, app = 0;
  assert_int_equal(hd__store_wbegin(f->s, NULL, &t), 0);
  assert_int_equal(hd__store_w_tenant(f->s, t, "acme", &num), 0);
  assert_int_equal(num, acme->num);
  assert_int_equal(hd__store_w_app(f->s, t, acme->num, "chat", 0, &app), 0);
  assert_int_equal(hd__store_w_app(f->s, t, acme->num, "alerts", 0, &app), 0);
  assert_int_equal(hd__store_w_app(f->s, t, acme->num, "other", 0, &app), HD_ENOTFOUND);
  assert_int_equal(hd__store_w_app(f->s, t, beta->num, "*", 0, &app), HD_ENOTFOUND);
  mdb_txn_abort(t);
}

static void test_second_load_reads_the_same_keys(void **state) {
  fx *f = *state;
  hd_tenants again = {0};
  char tok[HD_TOKEN_MAX];
  load(f, &f->ts);
  hd_tenant *a1 = by_name(&f->ts, "acme");
  assert_int_equal(hd__token_mint(a1, "phone", 3, tok, sizeof tok), 0);

  /* As on a restart: the store closed and opened again, the keys read back from disk. */
  hd__store_close(f->s);
  f->s = NULL;
  assert_int_equal(hd__store_open(f->dbdir, 16u << 20, &f->s), 0);
  load(f, &again);
  hd_tenant *a2 = by_name(&again, "acme");
  assert_string_equal(a2->publish_key, a1->publish_key);
  assert_memory_equal(a2->device_secret, a1->device_secret, 32);
  assert_int_equal(a2->num, a1->num);
  assert_string_equal(by_name(&again, "gamma")->publish_key,
                      by_name(&f->ts, "gamma")->publish_key);
  assert_int_equal(by_name(&again, "beta")->num, by_name(&f->ts, "beta")->num);

  /* A token minted before the restart still verifies. */
  hd_tenant *who = NULL;
  uint32_t gen = 0;
  assert_int_equal(hd__token_verify(&again, "phone", tok, &who, &gen), 0);
  assert_ptr_equal(who, a2);
  assert_int_equal(gen, 3);
  hd__tenants_free(&again);
  assert_null(again.v);
  assert_int_equal(again.n, 0);
}

static void test_load_reports_unusable_data_dir(void **state) {
  fx *f = *state;
  char path[512], err[256] = "";
  hd_tenants ts = {0};
  /* data_dir is a regular file: the tenants directory cannot be made under it. */
  snprintf(path, sizeof path, "%s/not-a-dir", f->dir);
  FILE *fp = fopen(path, "w");
  assert_non_null(fp);
  fclose(fp);
  hd__config_free(&f->cfg);
  assert_int_equal(parse_config(f, path), 0);
  int rc = hd__tenants_load(&ts, &f->cfg, f->s, err, sizeof err);
  assert_int_equal(rc, HD_EIO);
  assert_non_null(strstr(err, "acme"));
  hd__tenants_free(&ts);
}

/* ---- lookup ------------------------------------------------------------------------------ */

static void test_tenant_by_key(void **state) {
  fx *f = *state;
  char key[300];
  load(f, &f->ts);
  hd_tenant *acme = by_name(&f->ts, "acme"), *beta = by_name(&f->ts, "beta");
  assert_ptr_equal(hd__tenant_by_key(&f->ts, acme->publish_key), acme);
  assert_ptr_equal(hd__tenant_by_key(&f->ts, BETA_KEY), beta);
  assert_ptr_equal(hd__tenant_by_key(&f->ts, by_name(&f->ts, "gamma")->publish_key),
                   by_name(&f->ts, "gamma"));

  snprintf(key, sizeof key, "%s", acme->publish_key);
  key[strlen(key) - 1] = 0; /* a prefix */
  assert_null(hd__tenant_by_key(&f->ts, key));
  key[5] = 0;
  assert_null(hd__tenant_by_key(&f->ts, key));
  snprintf(key, sizeof key, "%sx", acme->publish_key); /* longer */
  assert_null(hd__tenant_by_key(&f->ts, key));
  snprintf(key, sizeof key, "%s", acme->publish_key);
  key[10] = key[10] == 'A' ? 'B' : 'A'; /* one character off */
  assert_null(hd__tenant_by_key(&f->ts, key));
  assert_null(hd__tenant_by_key(&f->ts, ""));
  assert_null(hd__tenant_by_key(&f->ts, "acme"));

  assert_null(hd__tenant_by_name(&f->ts, "delta"));
  assert_null(hd__tenant_by_name(&f->ts, "acm"));
  assert_null(hd__tenant_by_name(&f->ts, ""));
}

/* n tenants k0..k(n-1) made in memory, publish key "key-<i>-" padded to 40 characters; tenant 3
 * is in a rotation: previous key "old-3-..." until until_ms. */
static void many_tenants(hd_tenants *ts, int n, int64_t until_ms) {
  char *apps[] = {"*"};
  for (int i = 0; i < n; i++) {
    char name[16];
    snprintf(name, sizeof name, "k%d", i);
    hd_tenant_conf tc = {.name = name, .apps = apps, .napps = 1};
    hd_tenant *t = hd__tenant_new(&tc);
    assert_non_null(t);
    snprintf(t->publish_key, sizeof t->publish_key, "key-%d-%040d", i, i);
    if (i == 3) {
      snprintf(t->previous_key, sizeof t->previous_key, "old-%d-%040d", i, i);
      t->previous_until_ms = until_ms;
    }
    assert_int_equal(hd__tenants_add(ts, t), 0);
  }
}

/* The same answers with few tenants (every key compared) as with many (the keyed-hash index):
 * each key finds its own tenant, nothing near a key finds any, a previous key only until its
 * time, and a rotated key is found at once (the index follows hd__tenants_keys_changed). */
static void test_key_lookup_few_and_many(void **state) {
  (void)state;
  const int sizes[] = {HD_KEY_SCAN_MAX, HD_KEY_SCAN_MAX + 1, 1000};
  const int64_t until = 5000;
  for (size_t z = 0; z < sizeof sizes / sizeof *sizes; z++) {
    hd_tenants ts = {0};
    int n = sizes[z];
    char key[300];
    many_tenants(&ts, n, until);
    for (int i = 0; i < n; i++) {
      snprintf(key, sizeof key, "key-%d-%040d", i, i);
      assert_ptr_equal(hd__tenant_by_key_at(&ts, key, 0), ts.v[i]);
      key[strlen(key) - 1] ^= 1; /* one character off */
      assert_null(hd__tenant_by_key_at(&ts, key, 0));
    }
    assert_int_equal(ts.nslots != 0, n > HD_KEY_SCAN_MAX); /* the index exactly when many */
    snprintf(key, sizeof key, "key-%d-%040d", 7, 7);
    key[strlen(key) - 1] = 0; /* a prefix */
    assert_null(hd__tenant_by_key_at(&ts, key, 0));
    snprintf(key, sizeof key, "key-%d-%040dx", 7, 7); /* longer */
    assert_null(hd__tenant_by_key_at(&ts, key, 0));
    assert_null(hd__tenant_by_key_at(&ts, "", 0));
    assert_null(hd__tenant_by_key_at(&ts, "k7", 0));

    snprintf(key, sizeof key, "old-%d-%040d", 3, 3);
    assert_ptr_equal(hd__tenant_by_key_at(&ts, key, until - 1), ts.v[3]);
    assert_null(hd__tenant_by_key_at(&ts, key, until));

    /* A rotation: tenant 5's new key works and its old one does not, from the next lookup. */
    hd_tenant *t5 = ts.v[5];
    snprintf(t5->publish_key, sizeof t5->publish_key, "new-5-%040d", 5);
    hd__tenants_keys_changed(&ts);
    assert_ptr_equal(hd__tenant_by_key_at(&ts, t5->publish_key, 0), t5);
    snprintf(key, sizeof key, "key-%d-%040d", 5, 5);
    assert_null(hd__tenant_by_key_at(&ts, key, 0));
    /* A tenant without a key yet (added, keys not loaded) is matched by nothing and leaves
     * the others found. */
    hd_tenant_conf kc = {.name = "keyless", .apps = (char *[]){"*"}, .napps = 1};
    hd_tenant *keyless = hd__tenant_new(&kc);
    assert_non_null(keyless);
    assert_int_equal(hd__tenants_add(&ts, keyless), 0);
    assert_null(hd__tenant_by_key_at(&ts, "", 0));
    assert_ptr_equal(hd__tenant_by_key_at(&ts, t5->publish_key, 0), t5);
    assert_int_equal(ts.nslots != 0, n + 1 > HD_KEY_SCAN_MAX);
    /* Tenants added after the index was built are found too. */
    hd_tenant_conf tc = {.name = "late", .apps = (char *[]){"*"}, .napps = 1};
    hd_tenant *late = hd__tenant_new(&tc);
    assert_non_null(late);
    snprintf(late->publish_key, sizeof late->publish_key, "late-key-%040d", 0);
    assert_int_equal(hd__tenants_add(&ts, late), 0);
    assert_ptr_equal(hd__tenant_by_key_at(&ts, late->publish_key, 0), late);
    /* And by name, through the name index's growth. */
    for (int i = 0; i < n; i++) {
      char name[16];
      snprintf(name, sizeof name, "k%d", i);
      assert_ptr_equal(hd__tenant_by_name(&ts, name), ts.v[i]);
    }
    assert_ptr_equal(hd__tenant_by_name(&ts, "late"), late);
    assert_ptr_equal(hd__tenant_by_name(&ts, "keyless"), keyless);
    assert_null(hd__tenant_by_name(&ts, "k"));
    assert_null(hd__tenant_by_name(&ts, "late2"));
    assert_null(hd__tenant_by_name(&ts, ""));
    hd__tenants_free(&ts);
    assert_null(hd__tenant_by_name(&ts, "late"));
  }
}

/* A store that declares hundreds of apps, in no order: each is found, nothing else is, and
 * self-registration is open exactly for its own list. */
static void test_many_declared_apps(void **state) {
  (void)state;
  enum { N = 500 };
  char *apps[N], *self[N / 10];
  char buf[40];
  for (int i = 0; i < N; i++) {
    snprintf(buf, sizeof buf, "app-%d", (i * 7919) % N); /* a permutation of 0..N-1 */
    apps[i] = strdup(buf);
    if (i % 10 == 0) self[i / 10] = apps[i];
  }
  hd_tenant_conf tc = {.name = "store", .apps = apps, .napps = N, .self_register = self,
                       .nself_register = N / 10};
  hd_tenant *t = hd__tenant_new(&tc);
  assert_non_null(t);
  assert_false(t->any_app);
  assert_string_equal(t->apps[1], apps[1]); /* the declared order is kept for listing */
  for (int i = 0; i < N; i++) {
    assert_true(hd__tenant_has_app(t, apps[i]));
    assert_int_equal(hd__tenant_self_register(t, apps[i]), i % 10 == 0);
  }
  assert_false(hd__tenant_has_app(t, "app-500"));
  assert_false(hd__tenant_has_app(t, "app-"));
  assert_false(hd__tenant_has_app(t, "app-1x"));
  assert_false(hd__tenant_has_app(t, "aaa"));
  assert_false(hd__tenant_has_app(t, "zzz"));
  assert_false(hd__tenant_self_register(t, "app-500"));
  hd__tenant_free(t);
  for (int i = 0; i < N; i++) free(apps[i]);
}

static void test_apps_and_self_register(void **state) {
  fx *f = *state;
  load(f, &f->ts);
  hd_tenant *acme = by_name(&f->ts, "acme"), *beta = by_name(&f->ts, "beta");
  hd_tenant *gamma = by_name(&f->ts, "gamma");

  /* A list: exactly its apps; self-registration only where listed. */
  assert_false(acme->any_app);
  assert_true(hd__tenant_has_app(acme, "news"));
  assert_true(hd__tenant_has_app(acme, "chat"));
  assert_true(hd__tenant_has_app(acme, "alerts"));
  assert_false(hd__tenant_has_app(acme, "other"));
  assert_false(hd__tenant_has_app(acme, "new"));
  assert_false(hd__tenant_has_app(acme, "*"));
  assert_false(hd__tenant_has_app(acme, ""));
  assert_true(hd__tenant_self_register(acme, "news"));
  assert_false(hd__tenant_self_register(acme, "chat"));
  assert_false(hd__tenant_self_register(acme, "other"));
  assert_false(hd__tenant_self_register(acme, "*"));
  assert_non_null(acme->self_limit); /* default 60 per minute */

  /* "*": any valid app id, and self-registration for all of them. */
  assert_true(beta->any_app);
  assert_true(beta->self_any);
  assert_true(hd__tenant_has_app(beta, "anything.at:all-1_2"));
  assert_false(hd__tenant_has_app(beta, "bad/id"));
  assert_false(hd__tenant_has_app(beta, "bad id"));
  assert_false(hd__tenant_has_app(beta, ""));
  assert_true(hd__tenant_self_register(beta, "whatever"));
  assert_false(hd__tenant_self_register(beta, "bad/id"));
  assert_null(beta->self_limit); /* self_register_per_min = 0: unlimited */

  /* Any app, but a declared tenant is closed to keyless registration by default. */
  assert_true(gamma->any_app);
  assert_false(gamma->self_any);
  assert_true(hd__tenant_has_app(gamma, "news"));
  assert_false(hd__tenant_self_register(gamma, "news"));
}

static void test_allowed_origins(void **state) {
  fx *f = *state;
  load(f, &f->ts);
  hd_tenant *acme = by_name(&f->ts, "acme"), *beta = by_name(&f->ts, "beta");
  hd_tenant *gamma = by_name(&f->ts, "gamma");

  /* A list: exactly those origins (scheme, host and port), case aside. */
  assert_true(hd__tenant_allows_origin(acme, "http://127.0.0.1:9000"));
  assert_true(hd__tenant_allows_origin(acme, "https://app.example.com"));
  assert_true(hd__tenant_allows_origin(acme, "HTTPS://APP.EXAMPLE.COM"));
  assert_false(hd__tenant_allows_origin(acme, "http://127.0.0.1:9001"));
  assert_false(hd__tenant_allows_origin(acme, "https://127.0.0.1:9000"));
  assert_false(hd__tenant_allows_origin(acme, "http://127.0.0.1"));
  assert_false(hd__tenant_allows_origin(acme, "http://app.example.com"));
  assert_false(hd__tenant_allows_origin(acme, "https://app.example.com.evil.test"));
  assert_false(hd__tenant_allows_origin(acme, ""));
  assert_false(hd__tenant_allows_origin(acme, NULL));

  /* "*": any origin, but never the opaque "null" of files and sandboxed frames. */
  assert_true(beta->origins_any);
  assert_true(hd__tenant_allows_origin(beta, "https://anything.test:8443"));
  assert_false(hd__tenant_allows_origin(beta, "null"));

  /* Not configured: no cross-origin access at all. */
  assert_int_equal(gamma->norigins, 0);
  assert_false(hd__tenant_allows_origin(gamma, "http://127.0.0.1:9000"));
  assert_false(hd__tenant_allows_origin(NULL, "http://127.0.0.1:9000"));
}

/* ---- tokens ------------------------------------------------------------------------------ */

static void expect_refused(const hd_tenants *ts, const char *dev, const char *token) {
  hd_tenant *who = (hd_tenant *)0x1;
  uint32_t gen = 77;
  int rc = hd__token_verify(ts, dev, token, &who, &gen);
  if (rc != HD_EAUTH)
    print_error("token '%s' for device '%s' was not refused\n", token ? token : "(null)", dev);
  assert_int_equal(rc, HD_EAUTH);
}

static void test_token_round_trip(void **state) {
  fx *f = *state;
  char tok[HD_TOKEN_MAX], longid[HD_STORE_MAX_ID + 1];
  hd_tenant *who = NULL;
  uint32_t gen = 0;
  load(f, &f->ts);
  hd_tenant *acme = by_name(&f->ts, "acme"), *beta = by_name(&f->ts, "beta");

  assert_int_equal(hd__token_mint(acme, "phone-1", 1, tok, sizeof tok), 0);
  assert_true(strncmp(tok, "acme.1.0.", 9) == 0);
  assert_int_equal(strlen(tok), 9 + 43); /* base64url of a SHA-256 MAC */
  assert_true(b64url_only(tok + 9));
  assert_int_equal(hd__token_verify(&f->ts, "phone-1", tok, &who, &gen), 0);
  assert_ptr_equal(who, acme);
  assert_int_equal(gen, 1);

  /* Deterministic: the same inputs give the same token. */
  char again[HD_TOKEN_MAX];
  assert_int_equal(hd__token_mint(acme, "phone-1", 1, again, sizeof again), 0);
  assert_string_equal(again, tok);

  assert_int_equal(hd__token_mint(beta, "phone-1", 4294967295u, tok, sizeof tok), 0);
  assert_int_equal(hd__token_verify(&f->ts, "phone-1", tok, &who, &gen), 0);
  assert_ptr_equal(who, beta);
  assert_int_equal(gen, 4294967295u);

  memset(longid, 'd', HD_STORE_MAX_ID);
  longid[HD_STORE_MAX_ID] = 0;
  assert_int_equal(hd__token_mint(acme, longid, 12, tok, sizeof tok), 0);
  assert_true(strlen(tok) < HD_TOKEN_MAX);
  assert_int_equal(hd__token_verify(&f->ts, longid, tok, &who, &gen), 0);
  assert_int_equal(gen, 12);

  assert_int_equal(hd__token_mint(acme, "phone-1", 1, tok, 20), HD_EINVAL); /* too small */
}

/* The MAC of a token, computed here with OpenSSL's one-shot HMAC() and base64url: the broker
 * keeps a keyed context per tenant and re-initialises it for every token, and must still give
 * exactly HMAC-SHA256(device secret, "herald-device-v2" NUL tenant NUL device NUL gen NUL exp). */
static void expected_mac(const hd_tenant *t, const char *dev, uint32_t gen, long long exp,
                         char *out) {
  char msg[512];
  unsigned char mac[EVP_MAX_MD_SIZE], b64[96];
  unsigned int maclen = 0;
  int n = snprintf(msg, sizeof msg, "herald-device-v2%c%s%c%s%c%u%c%lld", 0, t->name, 0, dev, 0,
                   gen, 0, exp);
  assert_non_null(HMAC(EVP_sha256(), t->device_secret, sizeof t->device_secret,
                       (unsigned char *)msg, (size_t)n, mac, &maclen));
  int len = EVP_EncodeBlock(b64, mac, (int)maclen);
  while (len > 0 && b64[len - 1] == '=') len--;
  for (int i = 0; i < len; i++) out[i] = b64[i] == '+' ? '-' : b64[i] == '/' ? '_' : (char)b64[i];
  out[len] = 0;
}

static void test_token_mac_matches_one_shot_hmac(void **state) {
  fx *f = *state;
  char tok[HD_TOKEN_MAX], want[96], prefix[64];
  load(f, &f->ts);
  hd_tenant *acme = by_name(&f->ts, "acme"), *beta = by_name(&f->ts, "beta");
  static const char *const devs[] = {"phone-1", "phone-2", "p", "phone-1"};
  /* Alternating tenants and devices: each MAC starts from the key, never from the last one. */
  for (int round = 0; round < 3; round++)
    for (size_t i = 0; i < sizeof devs / sizeof devs[0]; i++) {
      hd_tenant *t = (i + (size_t)round) % 2 ? beta : acme;
      uint32_t gen = (uint32_t)(i + 1);
      long long exp = round == 2 ? 4102444800ll : 0;
      assert_int_equal(hd__token_mint_exp(t, devs[i], gen, exp, tok, sizeof tok), 0);
      expected_mac(t, devs[i], gen, exp, want);
      snprintf(prefix, sizeof prefix, "%s.%u.%lld.", t->name, gen, exp);
      assert_int_equal(strncmp(tok, prefix, strlen(prefix)), 0);
      assert_string_equal(tok + strlen(prefix), want);
    }
}

static void test_token_refusals(void **state) {
  fx *f = *state;
  char tok[HD_TOKEN_MAX], bad[HD_TOKEN_MAX + 64];
  load(f, &f->ts);
  hd_tenant *acme = by_name(&f->ts, "acme");
  assert_int_equal(hd__token_mint(acme, "phone-1", 1, tok, sizeof tok), 0);
  const char *mac = tok + strlen("acme.1.0.");

  expect_refused(&f->ts, "phone-2", tok);   /* another device */
  expect_refused(&f->ts, "phone-1x", tok);
  expect_refused(&f->ts, "phone-", tok);
  expect_refused(&f->ts, "bad id", tok);    /* not a valid id at all */
  expect_refused(&f->ts, "", tok);

  snprintf(bad, sizeof bad, "%s", tok);     /* a tampered MAC, each position in turn */
  for (size_t i = 9; bad[i]; i++) {
    char c = bad[i];
    bad[i] = c == 'A' ? 'B' : 'A';
    expect_refused(&f->ts, "phone-1", bad);
    bad[i] = c;
  }
  snprintf(bad, sizeof bad, "%.*s", (int)strlen(tok) - 1, tok); /* truncated */
  expect_refused(&f->ts, "phone-1", bad);
  snprintf(bad, sizeof bad, "%sA", tok); /* extended */
  expect_refused(&f->ts, "phone-1", bad);
  snprintf(bad, sizeof bad, "%s.x", tok); /* an extra field */
  expect_refused(&f->ts, "phone-1", bad);

  /* The generation is part of the MAC. */
  snprintf(bad, sizeof bad, "acme.2.0.%s", mac);
  expect_refused(&f->ts, "phone-1", bad);
  snprintf(bad, sizeof bad, "acme.11.0.%s", mac);
  expect_refused(&f->ts, "phone-1", bad);
  snprintf(bad, sizeof bad, "acme.0.0.%s", mac);
  expect_refused(&f->ts, "phone-1", bad);
  snprintf(bad, sizeof bad, "acme.x.0.%s", mac);
  expect_refused(&f->ts, "phone-1", bad);
  snprintf(bad, sizeof bad, "acme..0.%s", mac);
  expect_refused(&f->ts, "phone-1", bad);
  snprintf(bad, sizeof bad, "acme.4294967297.0.%s", mac); /* 2^32 + 1 must not wrap to 1 */
  expect_refused(&f->ts, "phone-1", bad);
  /* Only the canonical spelling of a generation: one token per (device, generation). */
  snprintf(bad, sizeof bad, "acme.01.0.%s", mac);
  expect_refused(&f->ts, "phone-1", bad);
  snprintf(bad, sizeof bad, "acme.+1.0.%s", mac);
  expect_refused(&f->ts, "phone-1", bad);
  snprintf(bad, sizeof bad, "acme. 1.0.%s", mac);
  expect_refused(&f->ts, "phone-1", bad);
  snprintf(bad, sizeof bad, "acme.-18446744073709551615.0.%s", mac); /* strtoul: 1 */
  expect_refused(&f->ts, "phone-1", bad);

  /* Another tenant's name: verified with that tenant's secret, so the MAC fails. */
  snprintf(bad, sizeof bad, "beta.1.0.%s", mac);
  expect_refused(&f->ts, "phone-1", bad);
  snprintf(bad, sizeof bad, "gamma.1.0.%s", mac);
  expect_refused(&f->ts, "phone-1", bad);
  snprintf(bad, sizeof bad, "delta.1.0.%s", mac); /* no such tenant */
  expect_refused(&f->ts, "phone-1", bad);
  snprintf(bad, sizeof bad, ".1.0.%s", mac);
  expect_refused(&f->ts, "phone-1", bad);
  char token_b[HD_TOKEN_MAX]; /* beta's own token for the device, under acme's name */
  assert_int_equal(hd__token_mint(by_name(&f->ts, "beta"), "phone-1", 1, token_b,
                                  sizeof token_b), 0);
  snprintf(bad, sizeof bad, "acme.1.0.%s", token_b + strlen("beta.1.0."));
  expect_refused(&f->ts, "phone-1", bad);

  /* Garbage. */
  expect_refused(&f->ts, "phone-1", NULL);
  expect_refused(&f->ts, "phone-1", "");
  expect_refused(&f->ts, "phone-1", ".");
  expect_refused(&f->ts, "phone-1", "..");
  expect_refused(&f->ts, "phone-1", "...");
  expect_refused(&f->ts, "phone-1", "acme");
  expect_refused(&f->ts, "phone-1", "acme.1");
  expect_refused(&f->ts, "phone-1", "acme.1.");
  expect_refused(&f->ts, "phone-1", "garbage");
  expect_refused(&f->ts, "phone-1", "Bearer acme.1.xyz");
  memset(bad, 'a', sizeof bad - 1); /* a tenant name longer than any buffer */
  bad[sizeof bad - 1] = 0;
  bad[150] = '.';
  bad[152] = '.';
  bad[151] = '1';
  expect_refused(&f->ts, "phone-1", bad);
}

/* Expiry is part of the token and of its MAC; only the canonical spelling is accepted. */
static void test_token_expiry(void **state) {
  fx *f = *state;
  char tok[HD_TOKEN_MAX], bad[HD_TOKEN_MAX + 64];
  hd_tenant *who = NULL;
  uint32_t gen = 0;
  load(f, &f->ts);
  hd_tenant *acme = by_name(&f->ts, "acme");
  assert_int_equal(hd__token_mint_exp(acme, "phone-1", 2, 1000, tok, sizeof tok), 0);
  assert_true(strncmp(tok, "acme.2.1000.", 12) == 0);
  const char *mac = tok + 12;
  assert_int_equal(hd__token_verify_at(&f->ts, "phone-1", tok, 999, &who, &gen), 0);
  assert_ptr_equal(who, acme);
  assert_int_equal(gen, 2);
  /* Refused from the second it names on. */
  assert_int_equal(hd__token_verify_at(&f->ts, "phone-1", tok, 1000, &who, &gen), HD_EAUTH);
  assert_int_equal(hd__token_verify_at(&f->ts, "phone-1", tok, 5000, &who, &gen), HD_EAUTH);
  /* The wall clock is long past 1000. */
  expect_refused(&f->ts, "phone-1", tok);
  /* Moving or removing the expiry breaks the MAC; only the canonical spelling parses. */
  const char *forged[] = {"acme.2.0.",    "acme.2.99999999999.", "acme.2.01000.",
                          "acme.2.+1000.", "acme.2.-1.",         "acme.2. 1000.",
                          "acme.2..",     "acme.2.1000.1000.",   "acme.2."};
  for (size_t i = 0; i < sizeof forged / sizeof forged[0]; i++) {
    snprintf(bad, sizeof bad, "%s%s", forged[i], mac);
    assert_int_equal(hd__token_verify_at(&f->ts, "phone-1", bad, 0, &who, &gen), HD_EAUTH);
  }
  /* An expiry beyond int64 seconds is malformed. */
  snprintf(bad, sizeof bad, "acme.2.99999999999999999999.%s", mac);
  expect_refused(&f->ts, "phone-1", bad);
  /* No expiry (0) never expires; a negative one or generation 0 cannot be minted. */
  assert_int_equal(hd__token_mint_exp(acme, "phone-1", 2, 0, tok, sizeof tok), 0);
  assert_int_equal(hd__token_verify_at(&f->ts, "phone-1", tok, INT64_MAX, &who, &gen), 0);
  assert_int_equal(hd__token_mint_exp(acme, "phone-1", 2, -5, tok, sizeof tok), HD_EINVAL);
  assert_int_equal(hd__token_mint_exp(acme, "phone-1", 0, 0, tok, sizeof tok), HD_EINVAL);
  /* device_token_ttl: hd__token_mint stamps now + ttl. */
  acme->token_ttl_s = 3600;
  assert_int_equal(hd__token_mint(acme, "phone-1", 1, tok, sizeof tok), 0);
  long long exp = strtoll(tok + strlen("acme.1."), NULL, 10);
  long long now = (long long)time(NULL);
  assert_true(exp >= now + 3600 - 5 && exp <= now + 3600 + 5);
  assert_int_equal(hd__token_verify(&f->ts, "phone-1", tok, &who, &gen), 0);
  assert_int_equal(hd__token_verify_at(&f->ts, "phone-1", tok, exp, &who, &gen), HD_EAUTH);
  /* The tenant guess for CORS reads only the first field. */
  assert_ptr_equal(hd__token_tenant_guess(&f->ts, tok), acme);
  assert_null(hd__token_tenant_guess(&f->ts, "delta.1.0.x"));
  assert_null(hd__token_tenant_guess(&f->ts, ".1.0.x"));
  assert_null(hd__token_tenant_guess(&f->ts, "acme"));
}

/* previous_publish_key stays valid until previous_key_until, then only publish_key is. */
static void test_publish_key_overlap(void **state) {
  fx *f = *state;
  char text[1024], err[256] = "";
  hd__config_free(&f->cfg);
  snprintf(text, sizeof text,
           "data_dir = %s\n"
           "[tenant acme]\napps = *\n"
           "publish_key = acme-new-key-0123456789abcdefghijklmnop\n"
           "previous_publish_key = acme-old-key-0123456789abcdefghijklmnop\n"
           "previous_key_until = 2030-01-02T03:04:05Z\n"
           "device_token_ttl = 1h\n"
           "[tenant beta]\napps = *\npublish_key = " BETA_KEY "\n"
           "[tenant gamma]\napps = *\n",
           f->dir);
  assert_int_equal(hd__config_parse(text, strlen(text), "t.conf", &f->cfg, err, sizeof err), 0);
  load(f, &f->ts);
  hd_tenant *acme = by_name(&f->ts, "acme");
  assert_int_equal(acme->token_ttl_s, 3600);
  const int64_t until_ms = 1893553445000ll; /* 2030-01-02T03:04:05Z */
  assert_int_equal(acme->previous_until_ms, until_ms);
  const char *cur = "acme-new-key-0123456789abcdefghijklmnop";
  const char *old = "acme-old-key-0123456789abcdefghijklmnop";
  assert_ptr_equal(hd__tenant_by_key_at(&f->ts, cur, 0), acme);
  assert_ptr_equal(hd__tenant_by_key_at(&f->ts, cur, until_ms + 1), acme);
  assert_ptr_equal(hd__tenant_by_key_at(&f->ts, old, until_ms - 1), acme);
  assert_null(hd__tenant_by_key_at(&f->ts, old, until_ms));
  assert_null(hd__tenant_by_key_at(&f->ts, old, until_ms + 1000));
  assert_null(hd__tenant_by_key_at(&f->ts, "acme-old-key-0123456789abcdefghijklmno", 0));
  /* Tenants without a previous key are not matched by the empty string, ever. */
  assert_null(hd__tenant_by_key_at(&f->ts, "", INT64_MIN));
  assert_ptr_equal(hd__tenant_by_key(&f->ts, cur), acme);
  assert_ptr_equal(hd__tenant_by_key(&f->ts, BETA_KEY), by_name(&f->ts, "beta"));

  /* The time also takes Unix seconds and a fraction; nothing but UTC. */
  int64_t t;
  assert_int_equal(hd__config_parse_time("1893553445", &t), 0);
  assert_int_equal(t, 1893553445);
  assert_int_equal(hd__config_parse_time("2030-01-02T03:04:05.250+00:00", &t), 0);
  assert_int_equal(t, 1893553445);
  assert_int_equal(hd__config_parse_time("2024-02-29T00:00:00Z", &t), 0);
  assert_int_equal(t, 1709164800);
  assert_int_equal(hd__config_parse_time("1970-01-01T00:00:00Z", &t), 0);
  assert_int_equal(t, 0);
  const char *bad_times[] = {"",
                             "2030-01-02",
                             "2030-01-02T03:04:05",
                             "2030-01-02T03:04:05+01:00",
                             "2023-02-29T00:00:00Z",
                             "2030-13-01T00:00:00Z",
                             "-5",
                             "1h",
                             "2030-01-02 03:04:05Z",
                             "2030-1-02T03:04:05Z"};
  for (size_t i = 0; i < sizeof bad_times / sizeof bad_times[0]; i++) {
    if (hd__config_parse_time(bad_times[i], &t) != HD_ECONFIG)
      print_error("time '%s' was accepted\n", bad_times[i]);
    assert_int_equal(hd__config_parse_time(bad_times[i], &t), HD_ECONFIG);
  }
  /* The two keys go together and must differ. */
  const char *bad_confs[] = {
      "[tenant a]\nprevious_publish_key = acme-old-key-0123456789abcdefghijklmnop\n",
      "[tenant a]\nprevious_key_until = 1893553445\n",
      "[tenant a]\npublish_key = acme-old-key-0123456789abcdefghijklmnop\n"
      "previous_publish_key = acme-old-key-0123456789abcdefghijklmnop\n"
      "previous_key_until = 1893553445\n",
      "[tenant a]\nprevious_publish_key = short\nprevious_key_until = 1893553445\n",
      "[tenant a]\nprevious_publish_key = acme-old-key-0123456789abcdefghijklmnop\n"
      "previous_key_until = tomorrow\n",
      "[tenant a]\ndevice_token_ttl = -1\n"};
  for (size_t i = 0; i < sizeof bad_confs / sizeof bad_confs[0]; i++) {
    hd_config c;
    int rc = hd__config_parse(bad_confs[i], strlen(bad_confs[i]), "t.conf", &c, err, sizeof err);
    if (rc == 0) {
      print_error("config accepted:\n%s\n", bad_confs[i]);
      hd__config_free(&c);
    }
    assert_int_equal(rc, HD_ECONFIG);
  }
}

/* ---- ids --------------------------------------------------------------------------------- */

static void test_valid_id(void **state) {
  (void)state;
  char s[HD_STORE_MAX_ID + 2];
  assert_true(hd__valid_id("a"));
  assert_true(hd__valid_id("Device-01.home_2:x"));
  assert_true(hd__valid_id("0"));
  assert_true(hd__valid_id("..."));
  assert_false(hd__valid_id(""));
  assert_false(hd__valid_id("a b"));
  assert_false(hd__valid_id("a/b"));
  assert_false(hd__valid_id("a\tb"));
  assert_false(hd__valid_id("a\nb"));
  assert_false(hd__valid_id("a=b"));
  assert_false(hd__valid_id("a\"b"));
  assert_false(hd__valid_id("caf\xc3\xa9"));
  assert_false(hd__valid_id("*"));
  memset(s, 'x', sizeof s);
  s[HD_STORE_MAX_ID] = 0;
  assert_true(hd__valid_id(s)); /* 128 */
  s[HD_STORE_MAX_ID] = 'x';
  s[HD_STORE_MAX_ID + 1] = 0;
  assert_false(hd__valid_id(s)); /* 129 */
}

static int cmp_str(const void *a, const void *b) { return strcmp(a, b); }

static void test_random_id(void **state) {
  (void)state;
  static const size_t nbytes[] = {0, 1, 2, 3, 4, 16, 32, 63, 64};
  char buf[128];
  for (size_t i = 0; i < sizeof nbytes / sizeof nbytes[0]; i++) {
    size_t n = nbytes[i], want = (n * 4 + 2) / 3; /* base64url without padding */
    memset(buf, '#', sizeof buf);
    assert_int_equal(hd__random_id(buf, want + 1, n), 0); /* exactly enough room */
    assert_int_equal(strlen(buf), want);
    assert_true(b64url_only(buf));
    if (n) assert_int_equal(hd__random_id(buf, want, n), HD_EINVAL); /* one short */
  }
  assert_int_equal(hd__random_id(buf, sizeof buf, 32), 0);
  assert_int_equal(strlen(buf), HD_KEY_LEN);
  assert_int_equal(hd__random_id(buf, sizeof buf, 65), HD_EINVAL);

  enum { N = 2000 };
  static char ids[N][24];
  for (size_t i = 0; i < N; i++) assert_int_equal(hd__random_id(ids[i], sizeof ids[i], 16), 0);
  qsort(ids, N, sizeof ids[0], cmp_str);
  for (size_t i = 1; i < N; i++) assert_string_not_equal(ids[i - 1], ids[i]);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_load_generates_key_files_mode_0600, setup, teardown),
      cmocka_unit_test_setup_teardown(test_second_load_reads_the_same_keys, setup, teardown),
      cmocka_unit_test_setup_teardown(test_load_reports_unusable_data_dir, setup, teardown),
      cmocka_unit_test_setup_teardown(test_tenant_by_key, setup, teardown),
      cmocka_unit_test(test_key_lookup_few_and_many),
      cmocka_unit_test(test_many_declared_apps),
      cmocka_unit_test_setup_teardown(test_apps_and_self_register, setup, teardown),
      cmocka_unit_test_setup_teardown(test_allowed_origins, setup, teardown),
      cmocka_unit_test_setup_teardown(test_token_round_trip, setup, teardown),
      cmocka_unit_test_setup_teardown(test_token_mac_matches_one_shot_hmac, setup, teardown),
      cmocka_unit_test_setup_teardown(test_token_refusals, setup, teardown),
      cmocka_unit_test_setup_teardown(test_token_expiry, setup, teardown),
      cmocka_unit_test_setup_teardown(test_publish_key_overlap, setup, teardown),
      cmocka_unit_test(test_valid_id),
      cmocka_unit_test(test_random_id),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
