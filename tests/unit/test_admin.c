/* test_admin.c — the parts of runtime tenants that need no running broker: who may call the
 * admin API (loopback, [admin] allow_from, IPv4-mapped addresses: the 403 an integration test
 * on loopback cannot provoke), the admin API's tenant settings checked through the config
 * parser (and never able to inject other config lines), a runtime tenant's key files written
 * and read back (previous key and its end included), and tenants added at run time keeping
 * every earlier hd_tenant pointer valid. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <ftw.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "admin.h"
#include "config.h"
#include "herald/error.h"
#include "rtenant.h"
#include "tenant.h"

/* ---- who may call ------------------------------------------------------------------------ */

static void test_loopback_only_by_default(void **state) {
  (void)state;
  const char *yes[] = {"127.0.0.1", "127.200.1.2", "::1", "::ffff:127.0.0.1"};
  const char *no[] = {"10.0.0.1",   "192.168.1.1", "::",      "::2", "fe80::1",
                      "128.0.0.1",  "unknown",     "",        "127.0.0.1x",
                      "::ffff:10.0.0.1"};
  for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
    assert_true(hd__admin_peer_allowed(yes[i], NULL, 0));
  for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
    if (hd__admin_peer_allowed(no[i], NULL, 0)) fail_msg("%s allowed", no[i]);
  }
  assert_false(hd__admin_peer_allowed(NULL, NULL, 0));
}

static void test_allow_from_prefixes(void **state) {
  (void)state;
  char *allow[] = {"10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "172.16.0.0/12"};
  size_t n = sizeof allow / sizeof allow[0];
  const char *yes[] = {"10.1.2.3",        "10.255.255.255", "192.0.2.7", "::ffff:10.9.9.9",
                       "2001:db8:1::1",   "2001:db8::",     "172.31.255.1", "127.0.0.1",
                       "::1"};
  const char *no[] = {"11.0.0.1",      "192.0.2.8",   "2001:db9::1", "172.32.0.1",
                      "::ffff:11.0.0.1", "::a00:1" /* 10.0.0.1 as IPv6, not mapped */};
  for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
    if (!hd__admin_peer_allowed(yes[i], allow, n)) fail_msg("%s refused", yes[i]);
  for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
    if (hd__admin_peer_allowed(no[i], allow, n)) fail_msg("%s allowed", no[i]);
  char *any[] = {"*"};
  assert_true(hd__admin_peer_allowed("203.0.113.9", any, 1));
  assert_true(hd__admin_peer_allowed("2001:db8::9", any, 1));
  assert_false(hd__admin_peer_allowed("unknown", any, 1));
  char *all4[] = {"0.0.0.0/0"};
  assert_true(hd__admin_peer_allowed("203.0.113.9", all4, 1));
  assert_false(hd__admin_peer_allowed("2001:db8::9", all4, 1)); /* another family */
}

/* ---- settings ---------------------------------------------------------------------------- */

static int parse(const char *json, int stored, hd_config *c, char *why) {
  json_error_t je;
  json_t *j = json_loads(json, 0, &je);
  if (!j) fail_msg("bad test JSON %s: %s", json, je.text);
  int rc = hd__rtenant_parse(j, stored, c, why, 300);
  json_decref(j);
  return rc;
}

static void expect_refused(const char *json, const char *why_part) {
  hd_config c;
  char why[300] = "";
  int rc = parse(json, 0, &c, why);
  if (rc != HD_EINVAL) fail_msg("%s: accepted (rc %d)", json, rc);
  if (!strstr(why, why_part)) fail_msg("%s: reason '%s' lacks '%s'", json, why, why_part);
}

static void test_settings_through_the_config_parser(void **state) {
  (void)state;
  hd_config c;
  char why[300] = "";
  assert_int_equal(parse("{\"name\": \"acme\", \"apps\": [\"news\", \"chat\"], "
                         "\"self_register\": [\"news\"], \"max_publish_rate\": 50, "
                         "\"publish_burst\": 80, \"device_token_ttl\": 3600, "
                         "\"allowed_origins\": [\"https://a.example\"], "
                         "\"self_register_per_min\": 5}",
                         0, &c, why),
                   0);
  assert_int_equal(c.ntenants, 1);
  const hd_tenant_conf *t = &c.tenants[0];
  assert_string_equal(t->name, "acme");
  assert_int_equal(t->napps, 2);
  assert_string_equal(t->apps[0], "news");
  assert_string_equal(t->apps[1], "chat");
  assert_int_equal(t->nself_register, 1);
  assert_int_equal(t->max_publish_rate, 50);
  assert_int_equal(t->publish_burst, 80);
  assert_int_equal(t->device_token_ttl_s, 3600);
  assert_int_equal(t->self_register_per_min, 5);
  assert_int_equal(t->nallowed_origins, 1);
  assert_null(t->publish_key);
  hd__config_free(&c);
  /* defaults: any app, nothing open, no cap */
  assert_int_equal(parse("{\"name\": \"b\"}", 0, &c, why), 0);
  assert_int_equal(c.tenants[0].napps, 1);
  assert_string_equal(c.tenants[0].apps[0], "*");
  assert_int_equal(c.tenants[0].nself_register, 0);
  assert_int_equal(c.tenants[0].max_publish_rate, 0);
  hd__config_free(&c);
  /* self_register: true is "*", false none */
  assert_int_equal(parse("{\"name\": \"b\", \"self_register\": true}", 0, &c, why), 0);
  assert_int_equal(c.tenants[0].nself_register, 1);
  assert_string_equal(c.tenants[0].self_register[0], "*");
  hd__config_free(&c);
  assert_int_equal(parse("{\"name\": \"b\", \"self_register\": false}", 0, &c, why), 0);
  assert_int_equal(c.tenants[0].nself_register, 0);
  hd__config_free(&c);
  /* a stored record carries "created"; a request may not */
  assert_int_equal(parse("{\"name\": \"b\", \"created\": 12345}", 1, &c, why), 0);
  hd__config_free(&c);
  expect_refused("{\"name\": \"b\", \"created\": 12345}", "unknown field 'created'");
}

static void test_bad_settings_are_refused_with_the_reason(void **state) {
  (void)state;
  expect_refused("{}", "name must be");
  expect_refused("{\"name\": \"Acme\"}", "name must be");
  expect_refused("{\"name\": 5}", "name must be");
  expect_refused("{\"name\": \"a]\\n[http\"}", "name must be");
  expect_refused("[1]", "body must be a JSON object");
  expect_refused("{\"name\": \"a\", \"publish_key\": \"x\"}", "unknown field 'publish_key'");
  expect_refused("{\"name\": \"a\", \"apps\": []}", "apps must not be empty");
  expect_refused("{\"name\": \"a\", \"apps\": \"news\"}", "apps must be an array");
  expect_refused("{\"name\": \"a\", \"apps\": [\"a b\"]}", "bad item 'a b' in apps");
  expect_refused("{\"name\": \"a\", \"apps\": [1]}", "apps must be an array of strings");
  expect_refused("{\"name\": \"a\", \"apps\": [\"x\", \"x\"]}", "duplicate item 'x'");
  expect_refused("{\"name\": \"a\", \"apps\": [\"x\"], \"self_register\": [\"y\"]}",
                 "self_register app 'y' is not in apps");
  expect_refused("{\"name\": \"a\", \"max_publish_rate\": -1}",
                 "max_publish_rate must be between 0 and 10000000");
  expect_refused("{\"name\": \"a\", \"max_publish_rate\": 1.5}",
                 "max_publish_rate must be an integer");
  expect_refused("{\"name\": \"a\", \"publish_burst\": \"9\"}", "publish_burst must be an integer");
  expect_refused("{\"name\": \"a\", \"allowed_origins\": [\"ftp:/x\"]}",
                 "bad item 'ftp:/x' in allowed_origins");
  /* Nothing can leave its line or its quotes in the config text the settings become. */
  expect_refused("{\"name\": \"a\", \"apps\": [\"x\\\"\\n[http]\\nlisten = 0.0.0.0:1\"]}",
                 "without commas, quotes or control characters");
  expect_refused("{\"name\": \"a\", \"apps\": [\"x\\\\\"]}", "without commas");
  expect_refused("{\"name\": \"a\", \"apps\": [\"x,y\"]}", "without commas");
  expect_refused("{\"name\": \"a\", \"apps\": [\"x\\u0001y\"]}", "control characters");
  expect_refused("{\"name\": \"a\", \"allowed_origins\": [\"http://a.b#c\"]}",
                 "bad item 'http://a.b#c'");
}

/* ---- key files --------------------------------------------------------------------------- */

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

static void mode_is_0600(const char *path) {
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0600);
}

static void test_key_files_round_trip(void **state) {
  (void)state;
  char dir[256], path[512], err[256] = "";
  snprintf(dir, sizeof dir, "/tmp/herald-admin-XXXXXX");
  assert_non_null(mkdtemp(dir));
  unsigned char secret[32];
  for (int i = 0; i < 32; i++) secret[i] = (unsigned char)(i * 7 + 1);
  const char *key1 = "first-key-0123456789abcdefghijklmnopqrstu";
  const char *key2 = "second-key-0123456789abcdefghijklmnopqrst";
  assert_int_equal(hd__tenant_files_write(dir, "rt", key1, secret, NULL, 0), 0);
  snprintf(path, sizeof path, "%s/tenants/rt/publish.key", dir);
  mode_is_0600(path);
  snprintf(path, sizeof path, "%s/tenants/rt/device.secret", dir);
  mode_is_0600(path);

  hd_config c;
  char why[300];
  assert_int_equal(parse("{\"name\": \"rt\"}", 0, &c, why), 0);
  hd_tenant *t = hd__tenant_new(&c.tenants[0]);
  assert_non_null(t);
  assert_int_equal(hd__tenant_keys_load(t, &c.tenants[0], dir, 1, err, sizeof err), 0);
  assert_string_equal(t->publish_key, key1);
  assert_memory_equal(t->device_secret, secret, 32);
  assert_string_equal(t->previous_key, "");
  hd__tenant_free(t);

  /* a rotation: the old key with its end, the new key current, the secret untouched */
  assert_int_equal(hd__tenant_files_write(dir, "rt", key2, NULL, key1, 1234567890123LL), 0);
  snprintf(path, sizeof path, "%s/tenants/rt/previous.key", dir);
  mode_is_0600(path);
  t = hd__tenant_new(&c.tenants[0]);
  assert_int_equal(hd__tenant_keys_load(t, &c.tenants[0], dir, 1, err, sizeof err), 0);
  assert_string_equal(t->publish_key, key2);
  assert_string_equal(t->previous_key, key1);
  assert_int_equal(t->previous_until_ms, 1234567890123LL);
  assert_memory_equal(t->device_secret, secret, 32);
  hd__tenant_free(t);
  /* a config tenant of the same name does not take previous.key: its overlap is the config's */
  t = hd__tenant_new(&c.tenants[0]);
  assert_int_equal(hd__tenant_keys_load(t, &c.tenants[0], dir, 0, err, sizeof err), 0);
  assert_string_equal(t->previous_key, "");
  hd__tenant_free(t);

  /* a rotation without overlap removes previous.key */
  assert_int_equal(hd__tenant_files_write(dir, "rt", key1, NULL, NULL, 0), 0);
  struct stat st;
  assert_int_equal(stat(path, &st), -1);
  t = hd__tenant_new(&c.tenants[0]);
  assert_int_equal(hd__tenant_keys_load(t, &c.tenants[0], dir, 1, err, sizeof err), 0);
  assert_string_equal(t->publish_key, key1);
  assert_string_equal(t->previous_key, "");
  hd__tenant_free(t);
  hd__config_free(&c);
  nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- tenants added at run time ----------------------------------------------------------- */

static void test_added_tenants_keep_earlier_pointers(void **state) {
  (void)state;
  hd_tenants ts = {0};
  hd_tenant *first = NULL;
  char name[32], why[300];
  for (int i = 0; i < 200; i++) {
    hd_config c;
    char json[64];
    snprintf(json, sizeof json, "{\"name\": \"t%d\", \"max_publish_rate\": %d}", i, i % 3);
    assert_int_equal(parse(json, 0, &c, why), 0);
    hd_tenant *t = hd__tenant_new(&c.tenants[0]);
    hd__config_free(&c);
    assert_non_null(t);
    snprintf(t->publish_key, sizeof t->publish_key, "key-of-tenant-%03d-0123456789abcdefghijkl",
             i);
    assert_int_equal(hd__tenants_add(&ts, t), 0);
    if (i == 0) first = t;
    /* the cap's bucket exists exactly when a rate is set */
    assert_int_equal(t->pub_limit != NULL, i % 3 != 0);
    assert_int_equal(t->publish_burst, i % 3);
  }
  assert_int_equal(ts.n, 200);
  assert_ptr_equal(hd__tenant_by_name(&ts, "t0"), first);
  assert_string_equal(first->name, "t0");
  for (int i = 0; i < 200; i += 37) {
    snprintf(name, sizeof name, "t%d", i);
    char key[64];
    snprintf(key, sizeof key, "key-of-tenant-%03d-0123456789abcdefghijkl", i);
    assert_ptr_equal(hd__tenant_by_key(&ts, key), hd__tenant_by_name(&ts, name));
  }
  hd__tenants_free(&ts);
  assert_int_equal(ts.n, 0);
  assert_null(ts.v);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_loopback_only_by_default),
      cmocka_unit_test(test_allow_from_prefixes),
      cmocka_unit_test(test_settings_through_the_config_parser),
      cmocka_unit_test(test_bad_settings_are_refused_with_the_reason),
      cmocka_unit_test(test_key_files_round_trip),
      cmocka_unit_test(test_added_tenants_keep_earlier_pointers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
