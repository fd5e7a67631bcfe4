/* test_agent_conf.c — herald-agent's settings for the update service (clients/agent/
 * agent_conf.h): [app NAME] installed = VERSION beside handler = CMD, the http base URL and its
 * default from the broker's host (IPv6 in brackets, https with tls_ca), install hook,
 * downloads, msisdn; and the refusals (a version the broker would refuse, installed for
 * [app *], a non-URL, a short msisdn). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent_conf.h"

static void set_ok(agent_conf *c, const char *sec, const char *k, const char *v) {
  char err[256] = "";
  if (agent_conf_set(c, sec, k, v, err, sizeof err)) fail_msg("%s = %s: %s", k, v, err);
}

static void set_bad(agent_conf *c, const char *sec, const char *k, const char *v,
                    const char *why) {
  char err[256] = "";
  assert_int_equal(agent_conf_set(c, sec, k, v, err, sizeof err), -1);
  if (!strstr(err, why)) fail_msg("%s = %s: error '%s' lacks '%s'", k, v, err, why);
}

static void test_file_with_installed_apps(void **state) {
  char path[] = "/tmp/herald-agent-conf-XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  static const char text[] =
      "broker = 10.0.0.7:8473\n"
      "device = phone-1\n"
      "token = acme.1.0.mac\n"
      "install = /usr/libexec/install-pkg\n"
      "downloads = 2\n"
      "msisdn = +4915112345678\n"
      "[app game]\n"
      "installed = 1.9.3\n"
      "[app news]\n"
      "handler = /usr/bin/notify\n"
      "installed = 2.0-rc1\n"
      "[app *]\n"
      "handler = /usr/bin/any\n";
  assert_int_equal(write(fd, text, sizeof text - 1), (ssize_t)(sizeof text - 1));
  close(fd);
  agent_conf c;
  agent_conf_init(&c);
  char err[256];
  assert_int_equal(agent_conf_load(&c, path, err, sizeof err), 0);
  unlink(path);
  assert_int_equal(agent_conf_finish(&c, err, sizeof err), 0);
  assert_string_equal(c.http, "http://10.0.0.7:8470"); /* the broker's host, default port */
  assert_string_equal(c.install, "/usr/libexec/install-pkg");
  assert_int_equal(c.downloads, 2);
  assert_string_equal(c.msisdn, "+4915112345678");
  assert_string_equal(c.tenant, "acme");
  int seen = 0;
  for (size_t i = 0; i < c.nhandlers; i++) {
    if (strcmp(c.handlers[i].app, "game") == 0) {
      assert_string_equal(c.handlers[i].installed, "1.9.3");
      assert_null(c.handlers[i].cmd);
      seen++;
    }
    if (strcmp(c.handlers[i].app, "news") == 0) {
      assert_string_equal(c.handlers[i].installed, "2.0-rc1");
      seen++;
    }
  }
  assert_int_equal(seen, 2);
  /* An app with only a version falls back to [app *] for its notices. */
  assert_string_equal(agent_conf_handler(&c, "game"), "/usr/bin/any");
  assert_string_equal(agent_conf_handler(&c, "news"), "/usr/bin/notify");
  agent_conf_free(&c);
}

static void test_http_default_and_explicit(void **state) {
  agent_conf c;
  char err[256];
  agent_conf_init(&c);
  set_ok(&c, "", "broker", "[::1]:8473");
  set_ok(&c, "", "device", "d");
  set_ok(&c, "", "token", "t.1.x");
  assert_int_equal(agent_conf_finish(&c, err, sizeof err), 0);
  assert_string_equal(c.http, "http://[::1]:8470");
  agent_conf_free(&c);

  agent_conf_init(&c);
  set_ok(&c, "", "device", "d");
  set_ok(&c, "", "token", "t.1.x");
  set_ok(&c, "", "tls_ca", "/etc/hostname"); /* any readable file will do here */
  assert_int_equal(agent_conf_finish(&c, err, sizeof err), 0);
  assert_string_equal(c.http, "https://127.0.0.1:8470");
  agent_conf_free(&c);

  agent_conf_init(&c);
  set_ok(&c, "", "device", "d");
  set_ok(&c, "", "token", "t.1.x");
  set_ok(&c, "", "http", "https://store.example:443/herald///");
  assert_int_equal(agent_conf_finish(&c, err, sizeof err), 0);
  assert_string_equal(c.http, "https://store.example:443/herald"); /* paths are appended */
  agent_conf_free(&c);
}

static void test_refusals(void **state) {
  agent_conf c;
  agent_conf_init(&c);
  set_bad(&c, "app game", "installed", "../1", "installed");
  set_bad(&c, "app game", "installed", "", "installed");
  set_bad(&c, "app game", "installed",
          "1234567890123456789012345678901234567890123456789012345678901234567890", "installed");
  set_bad(&c, "app *", "installed", "1.0", "not [app *]");
  set_bad(&c, "app game", "version", "1.0", "handler or installed");
  set_bad(&c, "", "http", "ftp://x", "http:// or https://");
  set_bad(&c, "", "msisdn", "1234", "5 to 15 digits");
  set_bad(&c, "", "msisdn", "12345x", "5 to 15 digits");
  set_bad(&c, "", "downloads", "0", "1 to 64");
  set_bad(&c, "", "download_attempts", "-1", "0 (retry forever)");
  set_bad(&c, "", "install_timeout", "0", "duration");
  set_ok(&c, "", "download_stall", "2m");
  assert_int_equal(c.download_stall_s, 120);
  agent_conf_free(&c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_file_with_installed_apps),
      cmocka_unit_test(test_http_default_and_explicit),
      cmocka_unit_test(test_refusals),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
