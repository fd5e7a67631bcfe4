/* test_metrics.c — the metric registry and its Prometheus text (metrics.h): HELP/TYPE once per
 * name with every labelled series under it, counters and gauges, cumulative histogram buckets
 * with _sum and _count, gauges computed at scrape time; and the token-bucket rate limiter
 * (ratelimit.h): a burst, then refusals, then refills with time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "herald/error.h"
#include "metrics.h"
#include "ratelimit.h"

/* ---- helpers ----------------------------------------------------------------------------- */

static char *render(hd_metrics *m) {
  char *out = NULL;
  size_t len = 0;
  assert_int_equal(hd__metrics_render(m, &out, &len), 0);
  assert_non_null(out);
  assert_int_equal(strlen(out), len);
  return out;
}

static size_t occurrences(const char *hay, const char *needle) {
  size_t n = 0, nl = strlen(needle);
  for (const char *p = hay; (p = strstr(p, needle)); p += nl) n++;
  return n;
}

/* The line that starts with `prefix` followed by a space; its value parsed into *v. */
static const char *find_line(const char *text, const char *prefix, double *v) {
  size_t pl = strlen(prefix);
  for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
    if (strncmp(p, prefix, pl) == 0 && p[pl] == ' ') {
      if (v) *v = strtod(p + pl + 1, NULL);
      return p;
    }
  }
  return NULL;
}

static double value_of(const char *text, const char *prefix) {
  double v = NAN;
  if (!find_line(text, prefix, &v)) fail_msg("no line '%s ...' in:\n%s", prefix, text);
  return v;
}

/* ---- metrics ----------------------------------------------------------------------------- */

static void test_help_and_type_once_per_name(void **state) {
  (void)state;
  hd_metrics *m = NULL;
  assert_int_equal(hd__metrics_new(&m), 0);
  hd_metric *zmq = hd__metric_new(m, "herald_published_total", "Messages published",
                                  HD_METRIC_COUNTER, "ingress=\"zmq\"");
  hd_metric *conns = hd__metric_new(m, "herald_connections", "Open connections",
                                    HD_METRIC_GAUGE, NULL);
  /* Registered after another name: still rendered with its own kind. */
  hd_metric *http = hd__metric_new(m, "herald_published_total", "Messages published",
                                   HD_METRIC_COUNTER, "ingress=\"http\"");
  hd_metric *plain = hd__metric_new(m, "herald_errors_total", "", HD_METRIC_COUNTER, "");
  assert_non_null(zmq);
  assert_non_null(conns);
  assert_non_null(http);
  assert_non_null(plain);

  hd__metric_add(zmq, 3);
  hd__metric_add(zmq, 2);
  hd__metric_add(http, 1);
  hd__metric_set(conns, 10);
  hd__metric_add(conns, -3);
  assert_true(hd__metric_get(zmq) == 5);
  assert_true(hd__metric_get(conns) == 7);
  assert_true(hd__metric_get(plain) == 0);
  hd__metric_add(NULL, 1); /* NULL metrics are ignored */
  hd__metric_set(NULL, 1);
  assert_true(hd__metric_get(NULL) == 0);

  char *out = render(m);
  assert_int_equal(occurrences(out, "# HELP herald_published_total "), 1);
  assert_int_equal(occurrences(out, "# TYPE herald_published_total counter\n"), 1);
  assert_int_equal(occurrences(out, "# HELP herald_connections Open connections\n"), 1);
  assert_int_equal(occurrences(out, "# TYPE herald_connections gauge\n"), 1);
  assert_int_equal(occurrences(out, "# TYPE herald_errors_total counter\n"), 1);
  assert_true(value_of(out, "herald_published_total{ingress=\"zmq\"}") == 5);
  assert_true(value_of(out, "herald_published_total{ingress=\"http\"}") == 1);
  assert_true(value_of(out, "herald_connections") == 7);
  assert_true(value_of(out, "herald_errors_total") == 0); /* "" labels: no braces */
  assert_null(strstr(out, "{}"));

  /* Both series of a name sit together under its one HELP/TYPE, before the next name. */
  const char *help = strstr(out, "# HELP herald_published_total");
  const char *s1 = find_line(out, "herald_published_total{ingress=\"zmq\"}", NULL);
  const char *s2 = find_line(out, "herald_published_total{ingress=\"http\"}", NULL);
  const char *next = strstr(help, "# HELP herald_connections");
  assert_non_null(next);
  assert_true(help < s1 && s1 < s2 && s2 < next);
  assert_int_equal(out[strlen(out) - 1], '\n');
  free(out);
  hd__metrics_free(m);
}

static void test_invalid_names_are_refused(void **state) {
  (void)state;
  hd_metrics *m = NULL;
  assert_int_equal(hd__metrics_new(&m), 0);
  assert_null(hd__metric_new(m, "", "x", HD_METRIC_COUNTER, NULL));
  assert_null(hd__metric_new(m, NULL, "x", HD_METRIC_COUNTER, NULL));
  assert_null(hd__metric_new(m, "bad-name", "x", HD_METRIC_COUNTER, NULL));
  assert_null(hd__metric_new(m, "bad name", "x", HD_METRIC_COUNTER, NULL));
  assert_null(hd__metric_new(m, "bad{x}", "x", HD_METRIC_COUNTER, NULL));
  assert_non_null(hd__metric_new(m, "ns:sub_total", NULL, HD_METRIC_COUNTER, NULL));
  char *out = render(m);
  assert_non_null(strstr(out, "# TYPE ns:sub_total counter\n"));
  assert_null(strstr(out, "bad"));
  free(out);
  hd__metrics_free(m);
  hd__metrics_free(NULL);
}

static void test_histogram_buckets_are_cumulative(void **state) {
  (void)state;
  hd_metrics *m = NULL;
  char buf[128];
  assert_int_equal(hd__metrics_new(&m), 0);
  hd_metric *h = hd__metric_new(m, "herald_commit_seconds", "Commit latency",
                                HD_METRIC_HISTOGRAM, NULL);
  hd_metric *hl = hd__metric_new(m, "herald_op_seconds", "Op latency", HD_METRIC_HISTOGRAM,
                                 "op=\"publish\"");
  assert_non_null(h);
  assert_non_null(hl);
  const double obs[] = {0.00003, 0.0001, 0.003, 0.003, 0.3, 20};
  double sum = 0;
  for (size_t i = 0; i < sizeof obs / sizeof obs[0]; i++) {
    hd__metric_observe(h, obs[i]);
    sum += obs[i];
  }
  hd__metric_observe(hl, 0.002);
  hd__metric_observe(NULL, 1); /* ignored */

  char *out = render(m);
  assert_int_equal(occurrences(out, "# TYPE herald_commit_seconds histogram\n"), 1);
  assert_int_equal(occurrences(out, "# HELP herald_commit_seconds Commit latency\n"), 1);
  assert_true(value_of(out, "herald_commit_seconds_bucket{le=\"5e-05\"}") == 1);
  assert_true(value_of(out, "herald_commit_seconds_bucket{le=\"0.0001\"}") == 2); /* le is <= */
  assert_true(value_of(out, "herald_commit_seconds_bucket{le=\"0.001\"}") == 2);
  assert_true(value_of(out, "herald_commit_seconds_bucket{le=\"0.005\"}") == 4);
  assert_true(value_of(out, "herald_commit_seconds_bucket{le=\"0.5\"}") == 5);
  assert_true(value_of(out, "herald_commit_seconds_bucket{le=\"10\"}") == 5);
  assert_true(value_of(out, "herald_commit_seconds_bucket{le=\"+Inf\"}") == 6);
  assert_true(value_of(out, "herald_commit_seconds_count") == 6);
  assert_true(fabs(value_of(out, "herald_commit_seconds_sum") - sum) < 1e-9);

  /* Every bucket line of the histogram, in order: non-decreasing, ending at the count. */
  size_t nb = 0;
  double prev = 0;
  for (const char *p = strstr(out, "herald_commit_seconds_bucket{"); p;
       p = strstr(p + 1, "herald_commit_seconds_bucket{")) {
    const char *sp = strchr(p, ' ');
    assert_non_null(sp);
    double v = strtod(sp + 1, NULL);
    assert_true(v >= prev);
    prev = v;
    nb++;
  }
  assert_int_equal(nb, 18); /* 17 bounds (50us .. 10s) and +Inf */
  assert_true(prev == 6);

  /* Labels come first, then le; _sum and _count carry the labels too. */
  snprintf(buf, sizeof buf, "herald_op_seconds_bucket{op=\"publish\",le=\"0.001\"}");
  assert_true(value_of(out, buf) == 0);
  assert_true(value_of(out, "herald_op_seconds_bucket{op=\"publish\",le=\"0.0025\"}") == 1);
  assert_true(value_of(out, "herald_op_seconds_bucket{op=\"publish\",le=\"+Inf\"}") == 1);
  assert_true(value_of(out, "herald_op_seconds_count{op=\"publish\"}") == 1);
  assert_true(fabs(value_of(out, "herald_op_seconds_sum{op=\"publish\"}") - 0.002) < 1e-12);
  free(out);
  hd__metrics_free(m);
}

static double read_double(void *ud) { return *(double *)ud; }

static void test_fn_gauges_are_read_at_render(void **state) {
  (void)state;
  hd_metrics *m = NULL;
  double queue = 3, a = 1.5, b = 2.5;
  assert_int_equal(hd__metrics_new(&m), 0);
  assert_int_equal(hd__metric_fn(m, "herald_queue", "Ops waiting", NULL, read_double, &queue),
                   0);
  assert_int_equal(hd__metric_fn(m, "herald_ratio", "Ratio", "kind=\"a\"", read_double, &a), 0);
  assert_int_equal(hd__metric_fn(m, "herald_ratio", "Ratio", "kind=\"b\"", read_double, &b), 0);
  assert_int_not_equal(hd__metric_fn(m, "bad-name", "x", NULL, read_double, &a), 0);

  char *out = render(m);
  assert_int_equal(occurrences(out, "# TYPE herald_queue gauge\n"), 1);
  assert_int_equal(occurrences(out, "# TYPE herald_ratio gauge\n"), 1);
  assert_true(value_of(out, "herald_queue") == 3);
  assert_true(value_of(out, "herald_ratio{kind=\"a\"}") == 1.5);
  assert_true(value_of(out, "herald_ratio{kind=\"b\"}") == 2.5);
  free(out);

  queue = 1234567;
  a = -0.25;
  out = render(m);
  assert_true(value_of(out, "herald_queue") == 1234567);
  assert_true(value_of(out, "herald_ratio{kind=\"a\"}") == -0.25);
  free(out);
  hd__metrics_free(m);
}

static void test_render_grows_past_its_first_buffer(void **state) {
  (void)state;
  hd_metrics *m = NULL;
  char name[64], labels[64], line[160];
  assert_int_equal(hd__metrics_new(&m), 0);
  for (int i = 0; i < 300; i++) {
    snprintf(name, sizeof name, "herald_metric_%d", i % 50);
    snprintf(labels, sizeof labels, "n=\"%d\"", i);
    hd_metric *x = hd__metric_new(m, name, "A metric with a fairly long help text, to grow",
                                  i % 2 ? HD_METRIC_GAUGE : HD_METRIC_COUNTER, labels);
    assert_non_null(x);
    hd__metric_set(x, i);
  }
  char *out = render(m);
  assert_true(strlen(out) > 4096);
  assert_int_equal(occurrences(out, "# HELP "), 50);
  for (int i = 0; i < 300; i++) {
    snprintf(line, sizeof line, "herald_metric_%d{n=\"%d\"}", i % 50, i);
    assert_true(value_of(out, line) == i);
  }
  free(out);
  hd__metrics_free(m);
}

/* ---- rate limiter ------------------------------------------------------------------------ */

static void test_ratelimit_burst_then_refill(void **state) {
  (void)state;
  /* 60 a minute = one a second, bursts of 3. Times start well above 0. */
  hd_ratelimit *r = hd__ratelimit_new(60, 3, 1024);
  uint64_t t = 1000000;
  assert_non_null(r);
  assert_int_equal(hd__ratelimit_take(r, "10.0.0.1", t), 1);
  assert_int_equal(hd__ratelimit_take(r, "10.0.0.1", t), 1);
  assert_int_equal(hd__ratelimit_take(r, "10.0.0.1", t), 1);
  assert_int_equal(hd__ratelimit_take(r, "10.0.0.1", t), 0);
  assert_int_equal(hd__ratelimit_take(r, "10.0.0.1", t + 500), 0); /* half a token */
  assert_int_equal(hd__ratelimit_take(r, "10.0.0.1", t + 1100), 1); /* a second on: one more */
  assert_int_equal(hd__ratelimit_take(r, "10.0.0.1", t + 1100), 0);
  /* Another key (a different slot: keys that differ only in the last byte hash apart in a
   * power-of-two table) has its own full bucket. */
  assert_int_equal(hd__ratelimit_take(r, "10.0.0.2", t + 1100), 1);
  /* A long pause refills to the burst, not beyond. */
  t += 3600 * 1000;
  for (int i = 0; i < 3; i++) assert_int_equal(hd__ratelimit_take(r, "10.0.0.1", t), 1);
  assert_int_equal(hd__ratelimit_take(r, "10.0.0.1", t), 0);
  /* Time going backwards grants nothing. */
  assert_int_equal(hd__ratelimit_take(r, "10.0.0.1", t - 10000), 0);
  hd__ratelimit_free(r);
  hd__ratelimit_free(NULL);
}

static void test_ratelimit_shared_slot_and_tiny_burst(void **state) {
  (void)state;
  /* One slot: every key shares one budget (stricter, never looser). */
  hd_ratelimit *r = hd__ratelimit_new(6, 2, 1);
  uint64_t t = 5000;
  assert_non_null(r);
  assert_int_equal(hd__ratelimit_take(r, "a", t), 1);
  assert_int_equal(hd__ratelimit_take(r, "b", t), 1);
  assert_int_equal(hd__ratelimit_take(r, "c", t), 0);
  assert_int_equal(hd__ratelimit_take(r, "a", t + 9000), 0); /* 6/min: 10 s per token */
  assert_int_equal(hd__ratelimit_take(r, "z", t + 11000), 1);
  assert_int_equal(hd__ratelimit_take(r, "a", t + 11000), 0);
  hd__ratelimit_free(r);

  /* A burst below one still lets one request through; zero rate never refills. */
  r = hd__ratelimit_new(0, 0.2, 0);
  assert_non_null(r);
  assert_int_equal(hd__ratelimit_take(r, "k", t), 1);
  assert_int_equal(hd__ratelimit_take(r, "k", t), 0);
  assert_int_equal(hd__ratelimit_take(r, "k", t + 86400000), 0);
  hd__ratelimit_free(r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_help_and_type_once_per_name),
      cmocka_unit_test(test_invalid_names_are_refused),
      cmocka_unit_test(test_histogram_buckets_are_cumulative),
      cmocka_unit_test(test_fn_gauges_are_read_at_render),
      cmocka_unit_test(test_render_grows_past_its_first_buffer),
      cmocka_unit_test(test_ratelimit_burst_then_refill),
      cmocka_unit_test(test_ratelimit_shared_slot_and_tiny_burst),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
