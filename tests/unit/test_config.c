/* test_config.c — the config parser: defaults, the shipped file, every key, every error class
 * with its exact line, the value parsers, tenants, raw transport sections and the lexer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "herald/error.h"

#define KIB 1024ull
#define MIB (1024ull * KIB)
#define GIB (1024ull * MIB)

/* ---------------------------------------------------------------------------------------- */
/* Helpers */

static int parse_str(const char *text, hd_config *c, char *err, size_t errlen) {
  return hd__config_parse(text, strlen(text), "t.conf", c, err, errlen);
}

/* Parses text, which must fail with exactly `want` in err, and checks the config is left
 * zeroed (and so safe to free, twice even). */
#define assert_config_error(text, want)                                                      \
  do {                                                                                       \
    hd_config c_;                                                                            \
    char err_[512];                                                                          \
    assert_int_equal(parse_str((text), &c_, err_, sizeof err_), HD_ECONFIG);                 \
    assert_string_equal(err_, (want));                                                       \
    assert_null(c_.source);                                                                  \
    assert_null(c_.tenants);                                                                 \
    assert_int_equal(c_.ntenants, 0);                                                        \
    hd__config_free(&c_);                                                                    \
    hd__config_free(&c_);                                                                    \
  } while (0)

static void parse_ok(const char *text, hd_config *c) {
  char err[512] = "unset";
  int rc = parse_str(text, c, err, sizeof err);
  if (rc != 0) fail_msg("parse failed: %s", err);
  assert_string_equal(err, "");
}

static void assert_list(char *const *v, size_t n, const char *const *want, size_t nwant) {
  assert_int_equal(n, nwant);
  for (size_t i = 0; i < n; i++) assert_string_equal(v[i], want[i]);
}

#define ASSERT_LIST(v, n, ...)                                                               \
  do {                                                                                       \
    static const char *const want_[] = {__VA_ARGS__};                                        \
    assert_list((v), (n), want_, sizeof want_ / sizeof want_[0]);                            \
  } while (0)

static void assert_str_or_null_equal(const char *a, const char *b) {
  if (!a || !b)
    assert_ptr_equal(a, b);
  else
    assert_string_equal(a, b);
}

static void assert_defaults(const hd_config *c) {
  assert_string_equal(c->data_dir, "./var/herald");
  assert_string_equal(c->log_level, "info");
  assert_string_equal(c->http.listen, "127.0.0.1:8470");
  assert_int_equal(c->http.max_body, 1 * MIB);
  assert_int_equal(c->http.max_header, 16 * KIB);
  assert_int_equal(c->http.idle_timeout_s, 60);
  assert_int_equal(c->http.max_connections, 10000);
  assert_string_equal(c->zmq.ingress, "tcp://127.0.0.1:8471");
  assert_string_equal(c->zmq.events, "tcp://127.0.0.1:8472");
  assert_int_equal(c->zmq.max_frame, 1 * MIB);
  assert_int_equal(c->store.map_size, 1 * GIB);
  assert_int_equal(c->store.default_ttl_s, 86400);
  assert_int_equal(c->store.max_ttl_s, 30 * 86400);
  assert_int_equal(c->store.max_batch, 4096);
  assert_int_equal(c->store.ack_delay_ms, 2);
  assert_int_equal(c->store.sweep_interval_s, 10);
  assert_null(c->plugins.dir);
  ASSERT_LIST(c->plugins.load, c->plugins.nload, "longpoll");
  assert_int_equal(c->download.max_concurrent, 4096);
  assert_int_equal(c->download.send_timeout_s, 60);
  assert_int_equal(c->ntenants, 1);
  const hd_tenant_conf *t = &c->tenants[0];
  assert_string_equal(t->name, "default");
  assert_null(t->publish_key);
  ASSERT_LIST(t->apps, t->napps, "*");
  ASSERT_LIST(t->self_register, t->nself_register, "*");
  assert_int_equal(t->self_register_per_min, 60);
  assert_int_equal(t->nallowed_origins, 0); /* no cross-origin access unless configured */
  assert_int_equal(c->ntransports, 0);
  assert_null(c->transports);
}

static void shipped_conf_path(char *buf, size_t len) {
#ifdef HERALD_SRC_DIR
  snprintf(buf, len, "%s/conf/herald.conf", HERALD_SRC_DIR);
#else
  const char *src = getenv("HERALD_SRC");
  if (src && *src)
    snprintf(buf, len, "%s/conf/herald.conf", src);
  else
    snprintf(buf, len, "../../conf/herald.conf");
#endif
}

/* Writes text to a fresh temporary file; the caller unlinks it. */
static void write_temp(char *path, size_t len, const char *text) {
  snprintf(path, len, "/tmp/herald_test_config_XXXXXX");
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  size_t n = strlen(text);
  assert_int_equal(write(fd, text, n), (ssize_t)n);
  assert_int_equal(close(fd), 0);
}

/* ---------------------------------------------------------------------------------------- */
/* Defaults and the shipped file */

static void test_load_without_file_gives_defaults(void **state) {
  (void)state;
  hd_config c;
  char err[256] = "unset";
  assert_int_equal(hd__config_load(NULL, &c, err, sizeof err), 0);
  assert_string_equal(err, "");
  assert_string_equal(c.source, "<defaults>");
  assert_defaults(&c);
  hd__config_free(&c);
}

static void test_empty_text_gives_defaults_with_its_source(void **state) {
  (void)state;
  hd_config c;
  char err[64];
  assert_int_equal(hd__config_parse("", 0, "empty.conf", &c, err, sizeof err), 0);
  assert_string_equal(c.source, "empty.conf");
  assert_defaults(&c);
  hd__config_free(&c);
  /* Comments and blank lines only: still the defaults. */
  parse_ok("# nothing\n\n   \t\n# here\n", &c);
  assert_defaults(&c);
  hd__config_free(&c);
}

/* Issue 8: TLS keys, and plain HTTP only on loopback unless the operator says so. */
static void test_tls_keys_and_the_loopback_rule(void **state) {
  (void)state;
  hd_config c;
  parse_ok("", &c);
  assert_null(c.http.tls_cert);
  assert_null(c.http.tls_key);
  assert_null(c.http.tls_ca);
  assert_int_equal(c.http.allow_plaintext_public, 0);
  hd__config_free(&c);
  parse_ok("[http]\nlisten = 0.0.0.0:443\ntls_cert = /c.pem\ntls_key = /k.pem\ntls_ca = /ca.pem\n",
           &c);
  assert_string_equal(c.http.tls_cert, "/c.pem");
  assert_string_equal(c.http.tls_key, "/k.pem");
  assert_string_equal(c.http.tls_ca, "/ca.pem");
  hd__config_free(&c);
  const char *loopback[] = {"127.0.0.1:1", "127.1.2.3:0", "[::1]:8470"};
  for (size_t i = 0; i < 3; i++) {
    char text[128];
    snprintf(text, sizeof text, "[http]\nlisten = %s\n", loopback[i]);
    parse_ok(text, &c);
    hd__config_free(&c);
  }
  for (const char *v = "yes"; v; v = strcmp(v, "yes") == 0 ? "On" : strcmp(v, "On") == 0 ? "1" : NULL) {
    char text[128];
    snprintf(text, sizeof text, "[http]\nlisten = [::]:0\nallow_plaintext_public = %s\n", v);
    parse_ok(text, &c);
    assert_int_equal(c.http.allow_plaintext_public, 1);
    hd__config_free(&c);
  }
  assert_config_error("[http]\nlisten = 0.0.0.0:8470\n",
                      "t.conf:2: [http] listen 0.0.0.0:8470 is not a loopback address and has no "
                      "TLS: set tls_cert and tls_key, or allow_plaintext_public = yes");
  assert_config_error("[http]\nallow_plaintext_public = no\nlisten = 10.0.0.1:80\n",
                      "t.conf:3: [http] listen 10.0.0.1:80 is not a loopback address and has no "
                      "TLS: set tls_cert and tls_key, or allow_plaintext_public = yes");
  assert_config_error("[http]\nlisten = localhost:80\n",
                      "t.conf:2: [http] listen localhost:80 is not a loopback address and has no "
                      "TLS: set tls_cert and tls_key, or allow_plaintext_public = yes");
  assert_config_error("[http]\nallow_plaintext_public = maybe\n",
                      "t.conf:2: bad value 'maybe' for allow_plaintext_public (want yes or no)");
  assert_config_error("[http]\ntls_cert = /c.pem\n",
                      "t.conf:2: tls_cert and tls_key go together in [http]");
  assert_config_error("[http]\ntls_key = /k.pem\n\n",
                      "t.conf:2: tls_cert and tls_key go together in [http]");
  assert_config_error("[http]\ntls_ca = /ca.pem\n",
                      "t.conf:2: tls_ca needs tls_cert and tls_key in [http]");
  assert_true(hd__config_is_loopback("127.255.0.1"));
  assert_true(hd__config_is_loopback("::1"));
  assert_false(hd__config_is_loopback("128.0.0.1"));
  assert_false(hd__config_is_loopback("::"));
  assert_false(hd__config_is_loopback("::ffff:127.0.0.1"));
  assert_false(hd__config_is_loopback("localhost"));
}

static void test_shipped_conf_parses_to_exactly_the_defaults(void **state) {
  (void)state;
  char path[4096], err[512] = "unset";
  hd_config c;
  shipped_conf_path(path, sizeof path);
  int rc = hd__config_load(path, &c, err, sizeof err);
  if (rc != 0) fail_msg("%s", err);
  assert_string_equal(c.source, path);
  assert_defaults(&c);
  /* The shipped file re-declares the tenant; it must come out identical to the built-in one. */
  hd_config d;
  assert_int_equal(hd__config_load(NULL, &d, err, sizeof err), 0);
  assert_int_equal(c.ntenants, d.ntenants);
  assert_string_equal(c.tenants[0].name, d.tenants[0].name);
  assert_str_or_null_equal(c.tenants[0].publish_key, d.tenants[0].publish_key);
  hd__config_free(&d);
  hd__config_free(&c);
}

/* ---------------------------------------------------------------------------------------- */
/* Overrides */

static void test_file_overrides_every_key(void **state) {
  (void)state;
  hd_config c;
  parse_ok("data_dir = /srv/herald\n"
           "log_level = debug\n"
           "[http]\n"
           "listen = [::1]:9000\n"
           "max_body = 2M\n"
           "max_header = 32k\n"
           "idle_timeout = 2m\n"
           "max_connections = 500\n"
           "[zmq]\n"
           "ingress = ipc:///run/herald/in\n"
           "events = inproc://events\n"
           "max_frame = 64 KiB\n"
           "[store]\n"
           "map_size = 4GiB\n"
           "default_ttl = 1h\n"
           "max_ttl = 7d\n"
           "max_batch = 1000000\n"
           "ack_delay = 250ms\n"
           "sweep_interval = 30\n"
           "[plugins]\n"
           "dir = /usr/lib/herald/transports\n"
           "load = longpoll, webpush,sse\n",
           &c);
  assert_string_equal(c.data_dir, "/srv/herald");
  assert_string_equal(c.log_level, "debug");
  assert_string_equal(c.http.listen, "[::1]:9000");
  assert_int_equal(c.http.max_body, 2 * MIB);
  assert_int_equal(c.http.max_header, 32 * KIB);
  assert_int_equal(c.http.idle_timeout_s, 120);
  assert_int_equal(c.http.max_connections, 500);
  assert_string_equal(c.zmq.ingress, "ipc:///run/herald/in");
  assert_string_equal(c.zmq.events, "inproc://events");
  assert_int_equal(c.zmq.max_frame, 64 * KIB);
  assert_int_equal(c.store.map_size, 4 * GIB);
  assert_int_equal(c.store.default_ttl_s, 3600);
  assert_int_equal(c.store.max_ttl_s, 7 * 86400);
  assert_int_equal(c.store.max_batch, 1000000);
  assert_int_equal(c.store.ack_delay_ms, 250);
  assert_int_equal(c.store.sweep_interval_s, 30);
  assert_string_equal(c.plugins.dir, "/usr/lib/herald/transports");
  ASSERT_LIST(c.plugins.load, c.plugins.nload, "longpoll", "webpush", "sse");
  /* No tenant declared: the built-in one stays. */
  assert_int_equal(c.ntenants, 1);
  assert_string_equal(c.tenants[0].name, "default");
  hd__config_free(&c);
}

static void test_partial_file_keeps_other_defaults(void **state) {
  (void)state;
  hd_config c;
  parse_ok("[store]\nmax_batch = 10\n", &c);
  assert_int_equal(c.store.max_batch, 10);
  assert_int_equal(c.store.map_size, 1 * GIB);
  assert_string_equal(c.http.listen, "127.0.0.1:8470");
  hd__config_free(&c);
}

static void test_plugins_empty_load_means_none_and_empty_dir_means_default(void **state) {
  (void)state;
  hd_config c;
  parse_ok("[plugins]\ndir =\nload =\n", &c);
  assert_null(c.plugins.dir);
  assert_int_equal(c.plugins.nload, 0);
  hd__config_free(&c);
  parse_ok("[plugins]\ndir = \"\"  # quoted empty is empty too\nload = \"\"\n", &c);
  assert_null(c.plugins.dir);
  assert_int_equal(c.plugins.nload, 0);
  hd__config_free(&c);
}

static void test_listen_port_zero_allowed_for_ephemeral(void **state) {
  (void)state;
  hd_config c;
  parse_ok("[http]\nlisten = 127.0.0.1:0\n", &c);
  assert_string_equal(c.http.listen, "127.0.0.1:0");
  hd__config_free(&c);
}

/* ---------------------------------------------------------------------------------------- */
/* Errors, each with its exact line */

static void test_unknown_key_names_file_line_and_section(void **state) {
  (void)state;
  assert_config_error("# comment\n\n[http]\nlisten = 127.0.0.1:1\n\n\n\n\n\n\n\nmax_bdy = 1M\n",
                      "t.conf:12: unknown key 'max_bdy' in [http]");
  assert_config_error("bogus = 1\n", "t.conf:1: unknown key 'bogus' at top level");
  assert_config_error("[tenant acme]\nkey = x\n", "t.conf:2: unknown key 'key' in [tenant acme]");
  /* Keys belong to their section: listen is not a top-level key. */
  assert_config_error("listen = 127.0.0.1:1\n", "t.conf:1: unknown key 'listen' at top level");
}

static void test_load_error_uses_the_path_as_source(void **state) {
  (void)state;
  char path[64], err[512], want[600];
  hd_config c;
  write_temp(path, sizeof path, "[http]\nmax_body = 1M\nmax_body = abc\n");
  assert_int_equal(hd__config_load(path, &c, err, sizeof err), HD_ECONFIG);
  snprintf(want, sizeof want, "%s:3: duplicate key 'max_body' in [http] (first at line 2)", path);
  assert_string_equal(err, want);
  hd__config_free(&c);
  unlink(path);

  write_temp(path, sizeof path, "log_level = warn\n[http]\n\nmax_body = abc\n");
  assert_int_equal(hd__config_load(path, &c, err, sizeof err), HD_ECONFIG);
  snprintf(want, sizeof want, "%s:4: bad size 'abc' for max_body", path);
  assert_string_equal(err, want);
  hd__config_free(&c);
  unlink(path);
}

static void test_bad_size_value_names_line(void **state) {
  (void)state;
  assert_config_error("\n\n[http]\nmax_body = abc\n", "t.conf:4: bad size 'abc' for max_body");
  assert_config_error("[zmq]\nmax_frame = 1.5M\n", "t.conf:2: bad size '1.5M' for max_frame");
  assert_config_error("[store]\nmap_size = 1T\n", "t.conf:2: bad size '1T' for map_size");
  assert_config_error("[http]\nmax_body =\n", "t.conf:2: bad size '' for max_body");
}

static void test_section_header_errors(void **state) {
  (void)state;
  assert_config_error("[htp]\n", "t.conf:1: unknown section [htp]");
  assert_config_error("\n[http extra]\n", "t.conf:2: section [http] takes no name");
  assert_config_error("[tenant]\n", "t.conf:1: section [tenant] needs a name: [tenant NAME]");
  assert_config_error("[transport  ]\n",
                      "t.conf:1: section [transport] needs a name: [transport NAME]");
  assert_config_error("[tenant Acme]\n",
                      "t.conf:1: bad tenant name 'Acme' (want 1-64 of a-z 0-9 _ -)");
  assert_config_error("[transport web.push]\n",
                      "t.conf:1: bad transport name 'web.push' (want 1-64 of a-z 0-9 _ -)");
  assert_config_error("[http\n", "t.conf:1: missing ']' in section header");
  assert_config_error("[http] x\n", "t.conf:1: unexpected text after section header");
  assert_config_error("[http]\n[store]\n[http]\n",
                      "t.conf:3: duplicate section [http] (first at line 1)");
}

static void test_section_header_spacing_and_comment_allowed(void **state) {
  (void)state;
  hd_config c;
  parse_ok("[ http ]   # the HTTP side\nmax_connections = 7\n[ tenant   a ]\n", &c);
  assert_int_equal(c.http.max_connections, 7);
  assert_string_equal(c.tenants[0].name, "a");
  hd__config_free(&c);
}

static void test_duplicate_key_is_an_error(void **state) {
  (void)state;
  assert_config_error("log_level = info\nlog_level = debug\n",
                      "t.conf:2: duplicate key 'log_level' at top level (first at line 1)");
  assert_config_error("[tenant a]\napps = x\n\napps = y\n",
                      "t.conf:4: duplicate key 'apps' in [tenant a] (first at line 2)");
}

static void test_same_tenant_key_in_two_tenants_is_fine(void **state) {
  (void)state;
  hd_config c;
  parse_ok("[tenant a]\napps = x\n[tenant b]\napps = y\n", &c);
  assert_int_equal(c.ntenants, 2);
  hd__config_free(&c);
}

static void test_line_syntax_errors(void **state) {
  (void)state;
  assert_config_error("[http]\nlisten\n", "t.conf:2: expected 'key = value' or '[section]'");
  assert_config_error(" = 5\n", "t.conf:1: missing key before '='");
  assert_config_error("max body = 5\n", "t.conf:1: bad key 'max body'");
}

static void test_bad_log_level(void **state) {
  (void)state;
  assert_config_error("log_level = verbose\n",
                      "t.conf:1: bad value 'verbose' for log_level "
                      "(want debug, info, warn or error)");
  assert_config_error("log_level = INFO\n",
                      "t.conf:1: bad value 'INFO' for log_level "
                      "(want debug, info, warn or error)");
  assert_config_error("data_dir =\n", "t.conf:1: data_dir must not be empty");
}

static void test_bad_listen_address(void **state) {
  (void)state;
  static const char *const bad[] = {"8470", "127.0.0.1", "127.0.0.1:65536", "::1:8470",
                                    "[::1]8470", "[zz::1]:1", ":8470", "127.0.0.1:-1",
                                    "127.0.0.1:80x", "[]:80", "a b:80"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char text[128], want[256];
    snprintf(text, sizeof text, "[http]\nlisten = \"%s\"\n", bad[i]);
    snprintf(want, sizeof want,
             "t.conf:2: bad value '%s' for listen (want host:port or [ipv6]:port with port "
             "0-65535)",
             bad[i]);
    assert_config_error(text, want);
  }
}

static void test_bad_zmq_endpoint(void **state) {
  (void)state;
  assert_config_error("[zmq]\ningress = 127.0.0.1:8471\n",
                      "t.conf:2: bad value '127.0.0.1:8471' for ingress "
                      "(want tcp://, ipc:// or inproc:// followed by an address)");
  assert_config_error("[zmq]\n\nevents = tcp://\n",
                      "t.conf:3: bad value 'tcp://' for events "
                      "(want tcp://, ipc:// or inproc:// followed by an address)");
  assert_config_error("[zmq]\nevents = \"tcp://a b:1\"\n",
                      "t.conf:2: bad value 'tcp://a b:1' for events "
                      "(no spaces allowed in an endpoint)");
}

static void test_max_ttl_shorter_than_default_ttl(void **state) {
  (void)state;
  assert_config_error("[store]\nmax_ttl = 1h\n",
                      "t.conf:2: max_ttl (3600s) is shorter than default_ttl (86400s)");
  /* The error points at whichever of the two came last. */
  assert_config_error("[store]\nmax_ttl = 1h\n\ndefault_ttl = 2h\n",
                      "t.conf:4: max_ttl (3600s) is shorter than default_ttl (7200s)");
  hd_config c;
  parse_ok("[store]\ndefault_ttl = 1h\nmax_ttl = 1h\n", &c);
  assert_int_equal(c.store.max_ttl_s, c.store.default_ttl_s);
  hd__config_free(&c);
}

static void test_range_limits(void **state) {
  (void)state;
  assert_config_error("[store]\nmap_size = 512k\n", "t.conf:2: map_size must be at least 1MiB");
  assert_config_error("[store]\nmax_batch = 0\n",
                      "t.conf:2: max_batch must be between 1 and 1000000");
  assert_config_error("[store]\nmax_batch = 1000001\n",
                      "t.conf:2: max_batch must be between 1 and 1000000");
  assert_config_error("[store]\ndefault_ttl = 0\n",
                      "t.conf:2: default_ttl must be between 1 and 315360000 seconds");
  assert_config_error("[store]\nmax_ttl = 3651d\n",
                      "t.conf:2: max_ttl must be between 1 and 315360000 seconds");
  assert_config_error("[http]\nmax_body = 1023\n",
                      "t.conf:2: max_body must be between 1KiB and 1GiB");
  assert_config_error("[http]\nmax_header = 2G\n",
                      "t.conf:2: max_header must be between 1KiB and 1GiB");
  assert_config_error("[http]\nidle_timeout = 0s\n",
                      "t.conf:2: idle_timeout must be between 1 and 315360000 seconds");
  assert_config_error("[tenant a]\nself_register_per_min = -1\n",
                      "t.conf:2: self_register_per_min must be at least 0");

  hd_config c;
  parse_ok("[http]\nmax_body = 1KiB\n[store]\nmap_size = 1M\nmax_batch = 1\n", &c);
  assert_int_equal(c.http.max_body, KIB);
  assert_int_equal(c.store.map_size, MIB);
  assert_int_equal(c.store.max_batch, 1);
  hd__config_free(&c);
}

static void test_numbers_must_be_whole_non_negative_and_fit(void **state) {
  (void)state;
  assert_config_error("[store]\nmax_batch = 12x\n", "t.conf:2: bad number '12x' for max_batch");
  assert_config_error("[store]\nmax_batch = 1k\n", "t.conf:2: bad number '1k' for max_batch");
  assert_config_error("[store]\nmax_batch = +5\n", "t.conf:2: bad number '+5' for max_batch");
  assert_config_error("[store]\nmax_batch = 99999999999999999999\n",
                      "t.conf:2: bad number '99999999999999999999' for max_batch");
  assert_config_error("[http]\nmax_connections = -5\n",
                      "t.conf:2: max_connections must be between 1 and 10000000");
  assert_config_error("[http]\nmax_body = -1\n", "t.conf:2: bad size '-1' for max_body");
  assert_config_error("[store]\nmap_size = 17179869184G\n",
                      "t.conf:2: bad size '17179869184G' for map_size");
  assert_config_error("[store]\nsweep_interval = 5 min\n",
                      "t.conf:2: bad duration '5 min' for sweep_interval");
  assert_config_error("[store]\nack_delay = 2s\n",
                      "t.conf:2: ack_delay must be between 0 and 1000 ms");
  assert_config_error("[store]\nack_delay = 5 msec\n",
                      "t.conf:2: bad duration '5 msec' for ack_delay");
  assert_config_error("[store]\nsweep_interval = -5\n",
                      "t.conf:2: bad duration '-5' for sweep_interval");
  assert_config_error("[store]\nsweep_interval = 106751991167301d\n",
                      "t.conf:2: bad duration '106751991167301d' for sweep_interval");

  hd_config c;
  parse_ok("[tenant a]\nself_register_per_min = 0\n", &c);
  assert_int_equal(c.tenants[0].self_register_per_min, 0);
  hd__config_free(&c);
}

static void test_error_leaves_config_safe_to_free(void **state) {
  (void)state;
  hd_config c;
  char err[256];
  /* Fail late, after strings, lists, tenants and transports were allocated. */
  const char *text = "data_dir = /x\n[plugins]\nload = a, b\n[transport a]\nk = v\n"
                     "[tenant t]\napps = x\n[store]\nmap_size = 1\n";
  assert_int_equal(parse_str(text, &c, err, sizeof err), HD_ECONFIG);
  assert_string_equal(err, "t.conf:9: map_size must be at least 1MiB");
  hd_config zero;
  memset(&zero, 0, sizeof zero);
  assert_memory_equal(&c, &zero, sizeof c);
  hd__config_free(&c);
  hd__config_free(NULL);
}

static void test_err_buffer_may_be_null_or_small(void **state) {
  (void)state;
  hd_config c;
  assert_int_equal(parse_str("bogus = 1\n", &c, NULL, 0), HD_ECONFIG);
  hd__config_free(&c);
  char small[8];
  assert_int_equal(parse_str("bogus = 1\n", &c, small, sizeof small), HD_ECONFIG);
  assert_string_equal(small, "t.conf:");
  hd__config_free(&c);
  assert_int_equal(hd__config_load("/nonexistent/x", &c, NULL, 0), HD_ECONFIG);
  hd__config_free(&c);
}

/* ---------------------------------------------------------------------------------------- */
/* Value parsers */

static void test_parse_size_accepts_plain_and_suffixes(void **state) {
  (void)state;
  static const struct {
    const char *in;
    uint64_t want;
  } cases[] = {
      {"0", 0},           {"1048576", 1048576}, {"1024B", 1024},     {"64k", 64 * KIB},
      {"64K", 64 * KIB},  {"64KB", 64 * KIB},   {"64kB", 64 * KIB},  {"64KiB", 64 * KIB},
      {"1M", MIB},        {"1MB", MIB},         {"1MiB", MIB},       {"3G", 3 * GIB},
      {"3GB", 3 * GIB},   {"1GiB", GIB},        {"1 MiB", MIB},      {"16\tk", 16 * KIB},
      {"18446744073709551615", UINT64_MAX},     {"17179869183G", 17179869183ull * GIB},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    uint64_t v = 12345;
    if (hd__config_parse_size(cases[i].in, &v) != 0) fail_msg("rejected '%s'", cases[i].in);
    assert_int_equal(v, cases[i].want);
  }
}

static void test_parse_size_rejects_junk_and_overflow(void **state) {
  (void)state;
  static const char *const bad[] = {
      "",     "abc", "-1",  "+1",   " 1",    "1x",   "1m",   "1g",   "1.5M",  "1MiBx",
      "1 M B", "1KIB", "M",  "1e3", "0x10", "1T",   "18446744073709551616",
      "17179869184G" /* 2^64 */,    "18014398509481984K" /* 2^64 */,
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    uint64_t v = 7;
    if (hd__config_parse_size(bad[i], &v) != HD_ECONFIG) fail_msg("accepted '%s'", bad[i]);
    assert_int_equal(v, 7); /* untouched on error */
  }
  assert_int_equal(hd__config_parse_size(NULL, NULL), HD_ECONFIG);
}

static void test_parse_duration_accepts_units(void **state) {
  (void)state;
  static const struct {
    const char *in;
    int64_t want;
  } cases[] = {
      {"0", 0},       {"30", 30},       {"30s", 30},       {"5m", 300},
      {"2h", 7200},   {"7d", 604800},   {"30 d", 2592000}, {"9223372036854775807", INT64_MAX},
      {"106751991167300d", 106751991167300ll * 86400},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int64_t v = -1;
    if (hd__config_parse_duration(cases[i].in, &v) != 0) fail_msg("rejected '%s'", cases[i].in);
    assert_int_equal(v, cases[i].want);
  }
}

static void test_parse_duration_ms_units(void **state) {
  (void)state;
  static const struct {
    const char *in;
    int64_t want;
  } ok[] = {{"0", 0}, {"0ms", 0}, {"10ms", 10}, {"10 ms", 10}, {"2", 2000}, {"2s", 2000},
            {"1m", 60000}};
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    int64_t v = -1;
    if (hd__config_parse_duration_ms(ok[i].in, &v) != 0) fail_msg("rejected '%s'", ok[i].in);
    assert_int_equal(v, ok[i].want);
  }
  static const char *const bad[] = {"", "ms", "-5ms", "5mss", "5 m s", "1.5ms", "x5ms",
                                    "9223372036854776d"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int64_t v = 7;
    if (hd__config_parse_duration_ms(bad[i], &v) != HD_ECONFIG) fail_msg("accepted '%s'", bad[i]);
    assert_int_equal(v, 7);
  }
  assert_int_equal(hd__config_parse_duration_ms(NULL, NULL), HD_ECONFIG);
}

static void test_parse_duration_rejects_junk_and_overflow(void **state) {
  (void)state;
  static const char *const bad[] = {
      "", "s", "-5", "+5", "5M", "5H", "5ms", "5w", "1.5h", "5 m x", "9223372036854775808",
      "106751991167301d", "153722867280912931m", "2562047788015216h",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int64_t v = 7;
    if (hd__config_parse_duration(bad[i], &v) != HD_ECONFIG) fail_msg("accepted '%s'", bad[i]);
    assert_int_equal(v, 7);
  }
  assert_int_equal(hd__config_parse_duration(NULL, NULL), HD_ECONFIG);
}

static void test_parse_hostport_ipv4_ipv6_and_names(void **state) {
  (void)state;
  char host[64];
  int port = -1;
  assert_int_equal(hd__config_parse_hostport("127.0.0.1:8470", host, sizeof host, &port), 0);
  assert_string_equal(host, "127.0.0.1");
  assert_int_equal(port, 8470);
  assert_int_equal(hd__config_parse_hostport("[::1]:8470", host, sizeof host, &port), 0);
  assert_string_equal(host, "::1");
  assert_int_equal(port, 8470);
  assert_int_equal(hd__config_parse_hostport("[::]:1", host, sizeof host, &port), 0);
  assert_string_equal(host, "::");
  assert_int_equal(port, 1);
  assert_int_equal(
      hd__config_parse_hostport("[2001:db8::ff00:42:8329]:65535", host, sizeof host, &port), 0);
  assert_string_equal(host, "2001:db8::ff00:42:8329");
  assert_int_equal(port, 65535);
  assert_int_equal(hd__config_parse_hostport("localhost:0", host, sizeof host, &port), 0);
  assert_string_equal(host, "localhost");
  assert_int_equal(port, 0);
  /* host and port may be NULL to only validate. */
  assert_int_equal(hd__config_parse_hostport("0.0.0.0:80", NULL, 0, NULL), 0);
}

static void test_parse_hostport_rejects_malformed(void **state) {
  (void)state;
  static const char *const bad[] = {
      "",           "8470",          "127.0.0.1",      "127.0.0.1:",   ":8470",
      "::1:8470",   "[::1]",         "[::1]:",         "[::1]8470",    "[::1:8470",
      "[]:80",      "[1.2.3.4]:80",  "h:65536",        "h:99999999999999999999",
      "h:-1",       "h:+1",          "h:80 ",          "h h:80",       "[fe80::1%eth0]:80",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char host[64] = "keep";
    int port = -7;
    if (hd__config_parse_hostport(bad[i], host, sizeof host, &port) != HD_ECONFIG)
      fail_msg("accepted '%s'", bad[i]);
    assert_string_equal(host, "keep");
    assert_int_equal(port, -7);
  }
  assert_int_equal(hd__config_parse_hostport(NULL, NULL, 0, NULL), HD_ECONFIG);
  /* A host that does not fit the caller's buffer is an error, not a truncation. */
  char tiny[4];
  assert_int_equal(hd__config_parse_hostport("[::1]:80", tiny, sizeof tiny, NULL), 0);
  assert_int_equal(hd__config_parse_hostport("1.2.3.4:80", tiny, sizeof tiny, NULL),
                   HD_ECONFIG);
}

static void test_valid_name(void **state) {
  (void)state;
  char n64[65], n65[66];
  memset(n64, 'a', 64);
  n64[64] = 0;
  memset(n65, 'a', 65);
  n65[65] = 0;
  assert_true(hd__config_valid_name("default"));
  assert_true(hd__config_valid_name("a-b_c9"));
  assert_true(hd__config_valid_name(n64));
  assert_false(hd__config_valid_name(n65));
  assert_false(hd__config_valid_name(""));
  assert_false(hd__config_valid_name(NULL));
  assert_false(hd__config_valid_name("Default"));
  assert_false(hd__config_valid_name("a.b"));
  assert_false(hd__config_valid_name("a b"));
  assert_false(hd__config_valid_name("a/b"));
}

/* ---------------------------------------------------------------------------------------- */
/* Tenants */

static const char key32[] = "abcdefghijklmnopqrstuvwxyz_-0123";

static void test_declared_tenants_replace_the_default(void **state) {
  (void)state;
  hd_config c;
  char text[512];
  snprintf(text, sizeof text,
           "[tenant acme]\n"
           "publish_key = %s\n"
           "apps = chat, com.acme.mail\n"
           "self_register = chat\n"
           "self_register_per_min = 5\n"
           "[tenant other]\n"
           "apps = x\n",
           key32);
  parse_ok(text, &c);
  assert_int_equal(c.ntenants, 2);
  assert_null(hd__config_tenant(&c, "default"));
  const hd_tenant_conf *t = hd__config_tenant(&c, "acme");
  assert_non_null(t);
  assert_string_equal(t->name, "acme");
  assert_int_equal(t->line, 1);
  assert_string_equal(t->publish_key, key32);
  ASSERT_LIST(t->apps, t->napps, "chat", "com.acme.mail");
  ASSERT_LIST(t->self_register, t->nself_register, "chat");
  assert_int_equal(t->self_register_per_min, 5);
  t = hd__config_tenant(&c, "other");
  assert_non_null(t);
  assert_int_equal(t->line, 6);
  assert_null(t->publish_key);
  ASSERT_LIST(t->apps, t->napps, "x");
  /* A declared tenant is closed to keyless registration unless it opens apps itself. */
  assert_int_equal(t->nself_register, 0);
  assert_int_equal(t->self_register_per_min, 60);
  hd__config_free(&c);
}

static void test_tenant_without_apps_accepts_any_app(void **state) {
  (void)state;
  hd_config c;
  parse_ok("[tenant solo]\nself_register =\n", &c);
  assert_int_equal(c.ntenants, 1);
  ASSERT_LIST(c.tenants[0].apps, c.tenants[0].napps, "*");
  assert_int_equal(c.tenants[0].nself_register, 0);
  hd__config_free(&c);
}

static void test_tenant_lookup_misses_and_null(void **state) {
  (void)state;
  hd_config c;
  assert_int_equal(hd__config_load(NULL, &c, NULL, 0), 0);
  assert_non_null(hd__config_tenant(&c, "default"));
  assert_null(hd__config_tenant(&c, "nope"));
  assert_null(hd__config_tenant(NULL, "default"));
  assert_null(hd__config_tenant(&c, NULL));
  assert_null(hd__config_transport(&c, "longpoll"));
  assert_null(hd__config_transport(NULL, "longpoll"));
  hd__config_free(&c);
}

static void test_duplicate_tenant_is_an_error(void **state) {
  (void)state;
  assert_config_error("[tenant a]\n[tenant b]\n\n[tenant a]\n",
                      "t.conf:4: duplicate [tenant a] (first at line 1)");
}

/* Issue 6 / 8: the [admin] section and each tenant's publish rate cap. */
static void test_admin_section_and_publish_rate_cap(void **state) {
  (void)state;
  hd_config c;
  parse_ok("", &c);
  assert_null(c.admin.key);
  assert_int_equal(c.admin.nallow_from, 0);
  assert_int_equal(c.admin.key_overlap_s, 86400);
  assert_int_equal(c.tenants[0].max_publish_rate, 0);
  assert_int_equal(c.tenants[0].publish_burst, 0);
  hd__config_free(&c);
  parse_ok("[admin]\nkey = admin-key-0123456789abcdefghijklmnopqrstuvwxyz\n"
           "allow_from = 10.0.0.0/8, 192.0.2.7, 2001:db8::/32, ::1\nkey_overlap = 2h\n"
           "[tenant a]\nmax_publish_rate = 1000\npublish_burst = 2000\n[tenant b]\n",
           &c);
  assert_string_equal(c.admin.key, "admin-key-0123456789abcdefghijklmnopqrstuvwxyz");
  ASSERT_LIST(c.admin.allow_from, c.admin.nallow_from, "10.0.0.0/8", "192.0.2.7",
              "2001:db8::/32", "::1");
  assert_int_equal(c.admin.key_overlap_s, 7200);
  assert_int_equal(c.tenants[0].max_publish_rate, 1000);
  assert_int_equal(c.tenants[0].publish_burst, 2000);
  assert_int_equal(c.tenants[1].max_publish_rate, 0);
  hd__config_free(&c);
  parse_ok("[admin]\nallow_from = *\nkey_overlap = 0\n", &c);
  ASSERT_LIST(c.admin.allow_from, c.admin.nallow_from, "*");
  assert_int_equal(c.admin.key_overlap_s, 0);
  hd__config_free(&c);
  assert_config_error("[admin]\nkey = short\n",
                      "t.conf:2: bad value 'short' for key (want at least 32 characters)");
  assert_config_error("[admin]\nallow_from = 10.0.0.0/33\n",
                      "t.conf:2: bad item '10.0.0.0/33' in allow_from (want an IPv4 or IPv6 "
                      "address, optionally with /prefix bits)");
  assert_config_error("[admin]\nallow_from = example.com\n",
                      "t.conf:2: bad item 'example.com' in allow_from (want an IPv4 or IPv6 "
                      "address, optionally with /prefix bits)");
  assert_config_error("[admin]\nallow_from = ::/129\n",
                      "t.conf:2: bad item '::/129' in allow_from (want an IPv4 or IPv6 "
                      "address, optionally with /prefix bits)");
  assert_config_error("[admin]\nallow_from = 10.0.0.1/\n",
                      "t.conf:2: bad item '10.0.0.1/' in allow_from (want an IPv4 or IPv6 "
                      "address, optionally with /prefix bits)");
  assert_config_error("[admin]\n[admin]\n",
                      "t.conf:2: duplicate section [admin] (first at line 1)");
  assert_config_error("[admin x]\n", "t.conf:1: section [admin] takes no name");
  assert_config_error("[tenant a]\nmax_publish_rate = -1\n",
                      "t.conf:2: max_publish_rate must be between 0 and 10000000");
  assert_config_error("[tenant a]\npublish_burst = many\n",
                      "t.conf:2: bad number 'many' for publish_burst");
  unsigned char a[16];
  int fam, bits;
  assert_int_equal(hd__config_parse_cidr("10.1.2.3/16", a, &fam, &bits), 0);
  assert_int_equal(fam, 4);
  assert_int_equal(bits, 16);
  assert_int_equal(a[0], 10);
  assert_int_equal(a[3], 3);
  assert_int_equal(hd__config_parse_cidr("fe80::1", a, &fam, &bits), 0);
  assert_int_equal(fam, 6);
  assert_int_equal(bits, 128);
  assert_int_equal(hd__config_parse_cidr("0.0.0.0/0", a, &fam, &bits), 0);
  assert_int_equal(bits, 0);
  assert_int_equal(hd__config_parse_cidr("/8", a, &fam, &bits), HD_ECONFIG);
  assert_int_equal(hd__config_parse_cidr("1.2.3.4/8x", a, &fam, &bits), HD_ECONFIG);
}

static void test_tenant_publish_key_rules(void **state) {
  (void)state;
  assert_config_error("[tenant a]\npublish_key = short\n",
                      "t.conf:2: bad value 'short' for publish_key (want at least 32 characters)");
  assert_config_error("[tenant a]\npublish_key = abcdefghijklmnopqrstuvwxyz012345+\n",
                      "t.conf:2: bad value 'abcdefghijklmnopqrstuvwxyz012345+' for publish_key "
                      "(want only A-Z a-z 0-9 _ -)");
  assert_config_error("[tenant a]\npublish_key = abcdefghijklmnopq stuvwxyz0123456789\n",
                      "t.conf:2: bad value 'abcdefghijklmnopq stuvwxyz0123456789' for "
                      "publish_key (want only A-Z a-z 0-9 _ -)");
  hd_config c;
  parse_ok("[tenant a]\npublish_key =\n", &c);
  assert_null(c.tenants[0].publish_key);
  hd__config_free(&c);
}

static void test_tenant_app_list_rules(void **state) {
  (void)state;
  assert_config_error("[tenant a]\napps = ok, bad/app\n",
                      "t.conf:2: bad item 'bad/app' in apps (want 1-64 of A-Z a-z 0-9 . _ -)");
  assert_config_error("[tenant a]\napps = x, *\n", "t.conf:2: '*' must stand alone in apps");
  assert_config_error("[tenant a]\napps = x,,y\n", "t.conf:2: empty item in apps");
  assert_config_error("[tenant a]\napps = x,\n", "t.conf:2: empty item in apps");
  assert_config_error("[tenant a]\napps = x, y, x\n", "t.conf:2: duplicate item 'x' in apps");
  assert_config_error("[tenant a]\napps =\n", "t.conf:2: apps must not be empty (use * for any)");
  assert_config_error("[plugins]\nload = *\n", "t.conf:2: '*' is not allowed in load");
  assert_config_error("[plugins]\nload = LongPoll\n",
                      "t.conf:2: bad item 'LongPoll' in load (want 1-64 of a-z 0-9 _ -)");

  char text[256], want[256], id65[66];
  memset(id65, 'a', 65);
  id65[65] = 0;
  snprintf(text, sizeof text, "[tenant a]\napps = %s\n", id65);
  snprintf(want, sizeof want, "t.conf:2: bad item '%s' in apps (want 1-64 of A-Z a-z 0-9 . _ -)",
           id65);
  assert_config_error(text, want);

  hd_config c;
  parse_ok("[tenant a]\napps = A.b-C_9 ,  z\n", &c);
  ASSERT_LIST(c.tenants[0].apps, c.tenants[0].napps, "A.b-C_9", "z");
  hd__config_free(&c);
}

static void test_self_register_must_be_subset_of_apps(void **state) {
  (void)state;
  /* The error names the self_register line, even when apps comes later. */
  assert_config_error("[tenant a]\nself_register = chat, mail\napps = chat\n[tenant b]\n",
                      "t.conf:2: self_register app 'mail' is not in apps of tenant 'a'");
  assert_config_error("[tenant a]\napps = chat\nself_register = mail\n",
                      "t.conf:3: self_register app 'mail' is not in apps of tenant 'a'");
  /* Default self_register ("*") and explicit "*" fit any apps list; any app fits apps = *. */
  hd_config c;
  parse_ok("[tenant a]\napps = chat\n[tenant b]\napps = chat\nself_register = *\n"
           "[tenant c]\nself_register = whatever\n",
           &c);
  assert_int_equal(c.ntenants, 3);
  ASSERT_LIST(c.tenants[2].self_register, c.tenants[2].nself_register, "whatever");
  hd__config_free(&c);
}

static void test_allowed_origins_rules(void **state) {
  (void)state;
  hd_config c;
  parse_ok("[tenant a]\n"
           "allowed_origins = http://127.0.0.1:9000, https://app.example.com ,"
           " http://[::1]:8080, chrome-extension://abcdef, https://x-y.Example.org:443\n"
           "[tenant b]\nallowed_origins = *\n"
           "[tenant c]\nallowed_origins =\n"
           "[tenant d]\n",
           &c);
  ASSERT_LIST(c.tenants[0].allowed_origins, c.tenants[0].nallowed_origins,
              "http://127.0.0.1:9000", "https://app.example.com", "http://[::1]:8080",
              "chrome-extension://abcdef", "https://x-y.Example.org:443");
  ASSERT_LIST(c.tenants[1].allowed_origins, c.tenants[1].nallowed_origins, "*");
  assert_int_equal(c.tenants[2].nallowed_origins, 0);
  assert_int_equal(c.tenants[3].nallowed_origins, 0);
  hd__config_free(&c);

  static const char *const bad[] = {
      "http://example.com/",        "http://example.com/path", "example.com",
      "http://",                    "http://:80",              "http://a:0",
      "http://a:65536",             "http://a:",               "http://user@a",
      "HTTP://a",                   "http://a?x=1",            "http://a#f",
      "http://[::1",                "http://[]",               "http://a b",
      "1http://a",                  "http://a:80x",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    char text[256], want[512];
    snprintf(text, sizeof text, "[tenant a]\nallowed_origins = \"%s\"\n", bad[i]);
    snprintf(want, sizeof want,
             "t.conf:2: bad item '%s' in allowed_origins (want scheme://host[:port] with no path, "
             "or * for any)",
             bad[i]);
    /* "a b" is one item; a '#' in a quoted value is kept, so every case reaches the check. */
    assert_config_error(text, want);
  }
  assert_config_error("[tenant a]\nallowed_origins = http://a, *\n",
                      "t.conf:2: '*' must stand alone in allowed_origins");
  assert_config_error("[tenant a]\nallowed_origins = http://a, http://a\n",
                      "t.conf:2: duplicate item 'http://a' in allowed_origins");
  assert_true(hd__config_valid_origin("http://a"));
  assert_false(hd__config_valid_origin(NULL));
  assert_false(hd__config_valid_origin("null"));
}

/* ---------------------------------------------------------------------------------------- */
/* Transports */

static void test_transport_sections_are_kept_raw_with_lines(void **state) {
  (void)state;
  hd_config c;
  parse_ok("[transport webpush]\n"
           "vapid_subject = mailto:ops@example.com\n"
           "\n"
           "anything.goes-here = \"  spaced # kept \"  # comment\n"
           "empty =\n"
           "[transport sms]\n"
           "bind = 1.2.3.4:2775\n",
           &c);
  assert_int_equal(c.ntransports, 2);
  const hd_conf_section *s = hd__config_transport(&c, "webpush");
  assert_non_null(s);
  assert_string_equal(s->name, "webpush");
  assert_int_equal(s->line, 1);
  assert_int_equal(s->nkv, 3);
  assert_string_equal(s->kv[0].key, "vapid_subject");
  assert_string_equal(s->kv[0].value, "mailto:ops@example.com");
  assert_int_equal(s->kv[0].line, 2);
  assert_string_equal(s->kv[1].key, "anything.goes-here");
  assert_string_equal(s->kv[1].value, "  spaced # kept ");
  assert_int_equal(s->kv[1].line, 4);
  assert_string_equal(s->kv[2].key, "empty");
  assert_string_equal(s->kv[2].value, "");
  s = hd__config_transport(&c, "sms");
  assert_non_null(s);
  assert_int_equal(s->line, 6);
  assert_int_equal(s->nkv, 1);
  assert_int_equal(s->kv[0].line, 7);
  assert_null(hd__config_transport(&c, "longpoll"));
  hd__config_free(&c);

  /* An empty section still exists. */
  parse_ok("[transport longpoll]\n", &c);
  s = hd__config_transport(&c, "longpoll");
  assert_non_null(s);
  assert_int_equal(s->nkv, 0);
  hd__config_free(&c);
}

static void test_transport_duplicates_are_errors(void **state) {
  (void)state;
  assert_config_error("[transport a]\nk = 1\nj = 2\nk = 3\n",
                      "t.conf:4: duplicate key 'k' in [transport a] (first at line 2)");
  assert_config_error("[transport a]\n[transport b]\n[transport a]\n",
                      "t.conf:3: duplicate [transport a] (first at line 1)");
}

/* ---------------------------------------------------------------------------------------- */
/* Lexing: quotes, comments, BOM, CRLF, limits */

static void test_quoted_values_keep_hash_spaces_and_escapes(void **state) {
  (void)state;
  hd_config c;
  parse_ok("data_dir = \"  /a b/#c \\\"q\\\" \\\\x  \"   # trailing comment\n"
           "[plugins]\n"
           "dir=\"/x\"\n",
           &c);
  assert_string_equal(c.data_dir, "  /a b/#c \"q\" \\x  ");
  assert_string_equal(c.plugins.dir, "/x");
  hd__config_free(&c);
}

static void test_quote_errors(void **state) {
  (void)state;
  assert_config_error("\ndata_dir = \"/abc\n", "t.conf:2: unterminated quoted value");
  assert_config_error("data_dir = \"/abc\\\"\n", "t.conf:1: unterminated quoted value");
  assert_config_error("data_dir = \"/abc\\\n", "t.conf:1: unterminated quoted value");
  assert_config_error("data_dir = \"a\\nb\"\n",
                      "t.conf:1: bad escape '\\n' in quoted value (only \\\" and \\\\)");
  assert_config_error("data_dir = \"a\" b\n", "t.conf:1: unexpected text after quoted value");
}

static void test_comments_start_at_a_word(void **state) {
  (void)state;
  hd_config c;
  parse_ok("  # indented comment\n"
           "data_dir = /srv/a#b   # the # inside a word is kept\n"
           "log_level = warn\t# tab before comment\n"
           "[plugins]\n"
           "dir = # only a comment: empty\n"
           "load = a, b # c\n",
           &c);
  assert_string_equal(c.data_dir, "/srv/a#b");
  assert_string_equal(c.log_level, "warn");
  assert_null(c.plugins.dir);
  ASSERT_LIST(c.plugins.load, c.plugins.nload, "a", "b");
  hd__config_free(&c);
}

static void test_bom_and_crlf_are_tolerated(void **state) {
  (void)state;
  hd_config c;
  parse_ok("\xef\xbb\xbf"
           "log_level = error\r\n"
           "[http]\r\n"
           "max_connections = 3\r\n"
           "\r\n",
           &c);
  assert_string_equal(c.log_level, "error");
  assert_int_equal(c.http.max_connections, 3);
  hd__config_free(&c);
  /* Line numbers stay right with CRLF and a BOM. */
  assert_config_error("\xef\xbb\xbf\r\n\r\nnope = 1\r\n",
                      "t.conf:3: unknown key 'nope' at top level");
  /* A BOM anywhere else is not whitespace. */
  assert_config_error("\n\xef\xbb\xbflog_level = info\n",
                      "t.conf:2: bad key '\xef\xbb\xbflog_level'");
}

static void test_line_length_limit(void **state) {
  (void)state;
  size_t cap = 3 * 4096 + 64;
  char *text = malloc(cap);
  assert_non_null(text);
  hd_config c;

  /* Exactly 4096 bytes (CR not counted): accepted. */
  int n = snprintf(text, cap, "# first\ndata_dir = ");
  size_t fill = 4096 - strlen("data_dir = ");
  memset(text + n, 'd', fill);
  n += (int)fill;
  snprintf(text + n, cap - (size_t)n, "\r\n");
  parse_ok(text, &c);
  assert_int_equal(strlen(c.data_dir), fill);
  hd__config_free(&c);

  /* 4097 bytes: rejected, on its line. */
  n = snprintf(text, cap, "# first\n# second\n#");
  memset(text + n, '#', 4096);
  n += 4096;
  snprintf(text + n, cap - (size_t)n, "\nlog_level = info\n");
  assert_config_error(text, "t.conf:3: line is longer than 4096 bytes");

  /* Also when it is the last line, without a newline. */
  n = snprintf(text, cap, "#");
  memset(text + n, '#', 4096);
  text[n + 4096] = 0;
  assert_config_error(text, "t.conf:1: line is longer than 4096 bytes");
  free(text);
}

static void test_control_characters_and_bad_utf8_rejected(void **state) {
  (void)state;
  hd_config c;
  char err[256];
  static const char nul_text[] = "log_level = info\ndata_dir = a\0b\n";
  assert_int_equal(hd__config_parse(nul_text, sizeof nul_text - 1, "t.conf", &c, err, sizeof err),
                   HD_ECONFIG);
  assert_string_equal(err, "t.conf:2: control character 0x00 in line");
  hd__config_free(&c);
  assert_config_error("data_dir = a\x1b[0m\n", "t.conf:1: control character 0x1b in line");
  assert_config_error("data_dir = a\rb\n", "t.conf:1: control character 0x0d in line");
  assert_config_error("\ndata_dir = caf\xe9\n", "t.conf:2: invalid UTF-8");
  assert_config_error("data_dir = \xc0\xaf\n", "t.conf:1: invalid UTF-8");         /* overlong */
  assert_config_error("data_dir = \xed\xa0\x80\n", "t.conf:1: invalid UTF-8");     /* surrogate */
  assert_config_error("data_dir = \xe2\x82\n", "t.conf:1: invalid UTF-8");         /* truncated */

  parse_ok("data_dir = /srv/caf\xc3\xa9/\xf0\x9f\x93\xa8\n", &c);
  assert_string_equal(c.data_dir, "/srv/caf\xc3\xa9/\xf0\x9f\x93\xa8");
  hd__config_free(&c);
}

static void test_text_need_not_be_nul_terminated(void **state) {
  (void)state;
  /* Only the first len bytes count: the rest of the buffer is junk that must not be read. */
  static const char buf[] = "log_level = debug\n[http]\nmax_connections = 42GARBAGE";
  size_t len = strlen("log_level = debug\n[http]\nmax_connections = 42");
  hd_config c;
  char err[128];
  assert_int_equal(hd__config_parse(buf, len, "t.conf", &c, err, sizeof err), 0);
  assert_string_equal(c.log_level, "debug");
  assert_int_equal(c.http.max_connections, 42);
  hd__config_free(&c);
  /* A heap copy without terminator, so ASan would catch a read past the end. */
  char *copy = malloc(len);
  assert_non_null(copy);
  memcpy(copy, buf, len);
  assert_int_equal(hd__config_parse(copy, len, "t.conf", &c, err, sizeof err), 0);
  assert_int_equal(c.http.max_connections, 42);
  hd__config_free(&c);
  free(copy);
}

/* ---------------------------------------------------------------------------------------- */
/* Loading files */

static void test_load_unreadable_file_reports_strerror(void **state) {
  (void)state;
  hd_config c;
  char err[256], want[256];
  assert_int_equal(hd__config_load("/nonexistent/herald.conf", &c, err, sizeof err), HD_ECONFIG);
  snprintf(want, sizeof want, "/nonexistent/herald.conf: cannot read: %s", strerror(ENOENT));
  assert_string_equal(err, want);
  assert_null(c.source);
  hd__config_free(&c);

  assert_int_equal(hd__config_load("/tmp", &c, err, sizeof err), HD_ECONFIG);
  snprintf(want, sizeof want, "/tmp: cannot read: %s", strerror(EISDIR));
  assert_string_equal(err, want);
  hd__config_free(&c);
}

static void test_load_file_overrides_defaults(void **state) {
  (void)state;
  char path[64], err[256] = "unset";
  hd_config c;
  write_temp(path, sizeof path, "[http]\nlisten = [::1]:8470\n[transport longpoll]\nhold = 30s\n");
  assert_int_equal(hd__config_load(path, &c, err, sizeof err), 0);
  assert_string_equal(err, "");
  assert_string_equal(c.source, path);
  assert_string_equal(c.http.listen, "[::1]:8470");
  const hd_conf_section *s = hd__config_transport(&c, "longpoll");
  assert_non_null(s);
  assert_string_equal(s->kv[0].value, "30s");
  char host[64];
  int port;
  assert_int_equal(hd__config_parse_hostport(c.http.listen, host, sizeof host, &port), 0);
  assert_string_equal(host, "::1");
  assert_int_equal(port, 8470);
  hd__config_free(&c);
  unlink(path);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_load_without_file_gives_defaults),
      cmocka_unit_test(test_empty_text_gives_defaults_with_its_source),
      cmocka_unit_test(test_shipped_conf_parses_to_exactly_the_defaults),
      cmocka_unit_test(test_file_overrides_every_key),
      cmocka_unit_test(test_partial_file_keeps_other_defaults),
      cmocka_unit_test(test_plugins_empty_load_means_none_and_empty_dir_means_default),
      cmocka_unit_test(test_listen_port_zero_allowed_for_ephemeral),
      cmocka_unit_test(test_unknown_key_names_file_line_and_section),
      cmocka_unit_test(test_load_error_uses_the_path_as_source),
      cmocka_unit_test(test_bad_size_value_names_line),
      cmocka_unit_test(test_section_header_errors),
      cmocka_unit_test(test_section_header_spacing_and_comment_allowed),
      cmocka_unit_test(test_duplicate_key_is_an_error),
      cmocka_unit_test(test_same_tenant_key_in_two_tenants_is_fine),
      cmocka_unit_test(test_line_syntax_errors),
      cmocka_unit_test(test_bad_log_level),
      cmocka_unit_test(test_bad_listen_address),
      cmocka_unit_test(test_bad_zmq_endpoint),
      cmocka_unit_test(test_max_ttl_shorter_than_default_ttl),
      cmocka_unit_test(test_range_limits),
      cmocka_unit_test(test_numbers_must_be_whole_non_negative_and_fit),
      cmocka_unit_test(test_error_leaves_config_safe_to_free),
      cmocka_unit_test(test_err_buffer_may_be_null_or_small),
      cmocka_unit_test(test_parse_size_accepts_plain_and_suffixes),
      cmocka_unit_test(test_parse_size_rejects_junk_and_overflow),
      cmocka_unit_test(test_parse_duration_accepts_units),
      cmocka_unit_test(test_parse_duration_rejects_junk_and_overflow),
      cmocka_unit_test(test_parse_duration_ms_units),
      cmocka_unit_test(test_parse_hostport_ipv4_ipv6_and_names),
      cmocka_unit_test(test_parse_hostport_rejects_malformed),
      cmocka_unit_test(test_valid_name),
      cmocka_unit_test(test_declared_tenants_replace_the_default),
      cmocka_unit_test(test_tenant_without_apps_accepts_any_app),
      cmocka_unit_test(test_tenant_lookup_misses_and_null),
      cmocka_unit_test(test_duplicate_tenant_is_an_error),
      cmocka_unit_test(test_tenant_publish_key_rules),
      cmocka_unit_test(test_admin_section_and_publish_rate_cap),
      cmocka_unit_test(test_tenant_app_list_rules),
      cmocka_unit_test(test_self_register_must_be_subset_of_apps),
      cmocka_unit_test(test_allowed_origins_rules),
      cmocka_unit_test(test_transport_sections_are_kept_raw_with_lines),
      cmocka_unit_test(test_transport_duplicates_are_errors),
      cmocka_unit_test(test_quoted_values_keep_hash_spaces_and_escapes),
      cmocka_unit_test(test_quote_errors),
      cmocka_unit_test(test_comments_start_at_a_word),
      cmocka_unit_test(test_bom_and_crlf_are_tolerated),
      cmocka_unit_test(test_line_length_limit),
      cmocka_unit_test(test_control_characters_and_bad_utf8_rejected),
      cmocka_unit_test(test_text_need_not_be_nul_terminated),
      cmocka_unit_test(test_load_unreadable_file_reports_strerror),
      cmocka_unit_test(test_load_file_overrides_defaults),
      cmocka_unit_test(test_tls_keys_and_the_loopback_rule),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
