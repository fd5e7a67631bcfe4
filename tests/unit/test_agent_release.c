/* test_agent_release.c — herald-agent's update state machine (clients/agent/release.h), walked
 * outcome by outcome: the ask hook's answers and its give-up, downloads (complete, resumed,
 * cut with and without progress, 4xx final, 5xx retried, 416 and a bad range starting over),
 * the SHA-256 verdicts, the install hook's exit / signal / timeout reasons, reports retried
 * until a 2xx, backoff doubling to its cap, and the offer rules (not newer, in progress, done,
 * restart after a failure, older than a job under way, superseding). Then the agent's own
 * LMDB: jobs and the inventory survive a reopen, and an install writes both at once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "herald/error.h"
#include "inbox.h"
/* inbox.h brings clients/agent/release.h (broker/release.h is another file) */

static const upd_policy POL = {.retry_base_ms = 1000, .retry_max_ms = 8000, .ask_attempts = 3,
                               .download_attempts = 4};

static upd_job job(const char *app, const char *version, int state) {
  upd_job j;
  memset(&j, 0, sizeof j);
  snprintf(j.app, sizeof j.app, "%s", app);
  snprintf(j.version, sizeof j.version, "%s", version);
  j.state = state;
  j.size = 1000;
  memset(j.sha256, 'a', 64);
  snprintf(j.url, sizeof j.url, "/v1/apps/%s/releases/%s/package", app, version);
  return j;
}

static void test_backoff_doubles_to_cap(void **state) {
  assert_int_equal(upd_backoff_ms(&POL, 1), 1000);
  assert_int_equal(upd_backoff_ms(&POL, 2), 2000);
  assert_int_equal(upd_backoff_ms(&POL, 4), 8000);
  assert_int_equal(upd_backoff_ms(&POL, 5), 8000);
  assert_int_equal(upd_backoff_ms(&POL, 1000000), 8000);
}

static void test_ask_answers(void **state) {
  upd_job j = job("a", "2", UPD_ASKING);
  upd_after_ask(&j, &POL, 100, 0, 0, 0, 0);
  assert_int_equal(j.state, UPD_DOWNLOADING);
  assert_int_equal(j.next_try_ms, 0);

  j = job("a", "2", UPD_ASKING);
  upd_after_ask(&j, &POL, 100, 1, 0, 0, 0);
  assert_int_equal(j.state, UPD_REPORTING);
  assert_string_equal(j.result, "failure");
  assert_string_equal(j.reason, "hook_declined");

  /* No answer (exit 2, a signal, a timeout, no hook binary): asked again, then given up. */
  j = job("a", "2", UPD_ASKING);
  upd_after_ask(&j, &POL, 100, 2, 0, 0, 0);
  assert_int_equal(j.state, UPD_ASKING);
  assert_int_equal(j.attempts, 1);
  assert_int_equal(j.next_try_ms, 1100);
  upd_after_ask(&j, &POL, 200, 0, 9, 0, 0);
  assert_int_equal(j.state, UPD_ASKING);
  assert_int_equal(j.next_try_ms, 2200);
  upd_after_ask(&j, &POL, 300, -1, 0, 0, -2);
  assert_int_equal(j.state, UPD_REPORTING);
  assert_string_equal(j.reason, "hook_declined");
  assert_int_equal(j.attempts, 0); /* a new state starts its own count */
}

static void test_download_complete_and_resumed(void **state) {
  upd_job j = job("a", "2", UPD_DOWNLOADING);
  upd_fetched f = {.status = 200, .received = 1000, .file_size = 1000};
  upd_after_download(&j, &POL, 5, &f);
  assert_int_equal(j.state, UPD_VERIFYING);

  j = job("a", "2", UPD_DOWNLOADING);
  f = (upd_fetched){.status = 206, .received = 400, .file_size = 1000};
  upd_after_download(&j, &POL, 5, &f);
  assert_int_equal(j.state, UPD_VERIFYING);

  /* Unknown size: whatever came is checked. */
  j = job("a", "2", UPD_DOWNLOADING);
  j.size = 0;
  f = (upd_fetched){.status = 200, .received = 10, .file_size = 10};
  upd_after_download(&j, &POL, 5, &f);
  assert_int_equal(j.state, UPD_VERIFYING);
}

static void test_download_cut_retries_and_progress_resets(void **state) {
  upd_job j = job("a", "2", UPD_DOWNLOADING);
  upd_fetched cut = {.transport_error = 7, .error_text = "Couldn't connect to server"};
  for (int i = 1; i <= 3; i++) {
    upd_after_download(&j, &POL, 0, &cut);
    assert_int_equal(j.state, UPD_DOWNLOADING);
    assert_int_equal(j.attempts, i);
    assert_int_equal(j.next_try_ms, upd_backoff_ms(&POL, (uint32_t)i));
  }
  /* A cut after some progress: the count starts over. */
  upd_fetched partial = {.transport_error = 18, .error_text = "Transferred a partial file",
                         .status = 206, .received = 300, .file_size = 600};
  upd_after_download(&j, &POL, 0, &partial);
  assert_int_equal(j.state, UPD_DOWNLOADING);
  assert_int_equal(j.attempts, 1);
  assert_int_equal(j.restart, 0); /* resume, do not start over */
  for (int i = 2; i < 4; i++) upd_after_download(&j, &POL, 0, &cut);
  assert_int_equal(j.state, UPD_DOWNLOADING);
  upd_after_download(&j, &POL, 0, &cut);
  assert_int_equal(j.state, UPD_REPORTING);
  assert_string_equal(j.reason, "download_failed: Couldn't connect to server");

  /* A clean end short of the size: the rest is fetched. */
  j = job("a", "2", UPD_DOWNLOADING);
  upd_fetched shortb = {.status = 200, .received = 500, .file_size = 500};
  upd_after_download(&j, &POL, 0, &shortb);
  assert_int_equal(j.state, UPD_DOWNLOADING);
  assert_true(j.next_try_ms > 0);
}

static void test_download_statuses(void **state) {
  upd_job j = job("a", "2", UPD_DOWNLOADING);
  upd_fetched f = {.status = 404};
  upd_after_download(&j, &POL, 0, &f);
  assert_int_equal(j.state, UPD_REPORTING);
  assert_string_equal(j.reason, "download_failed: HTTP 404");
  assert_int_equal(j.restart, 1);

  j = job("a", "2", UPD_DOWNLOADING);
  f = (upd_fetched){.status = 410};
  upd_after_download(&j, &POL, 0, &f);
  assert_string_equal(j.reason, "download_failed: HTTP 410");

  j = job("a", "2", UPD_DOWNLOADING);
  f = (upd_fetched){.status = 503};
  for (int i = 1; i < 4; i++) {
    upd_after_download(&j, &POL, 0, &f);
    assert_int_equal(j.state, UPD_DOWNLOADING);
  }
  upd_after_download(&j, &POL, 0, &f);
  assert_int_equal(j.state, UPD_REPORTING);
  assert_string_equal(j.reason, "download_failed: HTTP 503");

  /* 416 with the whole file here: check it; otherwise start over at once. */
  j = job("a", "2", UPD_DOWNLOADING);
  f = (upd_fetched){.status = 416, .file_size = 1000};
  upd_after_download(&j, &POL, 0, &f);
  assert_int_equal(j.state, UPD_VERIFYING);
  j = job("a", "2", UPD_DOWNLOADING);
  f = (upd_fetched){.status = 416, .file_size = 1500};
  upd_after_download(&j, &POL, 77, &f);
  assert_int_equal(j.state, UPD_DOWNLOADING);
  assert_int_equal(j.restart, 1);
  assert_int_equal(j.next_try_ms, 77);

  j = job("a", "2", UPD_DOWNLOADING);
  f = (upd_fetched){.transport_error = 23, .status = 206, .range_mismatch = 1};
  upd_after_download(&j, &POL, 9, &f);
  assert_int_equal(j.state, UPD_DOWNLOADING);
  assert_int_equal(j.restart, 1);
  assert_int_equal(j.next_try_ms, 9);
}

static void test_verify_install_report(void **state) {
  upd_job j = job("a", "2", UPD_VERIFYING);
  upd_after_verify(&j, &POL, 0, UPD_VERIFY_OK);
  assert_int_equal(j.state, UPD_INSTALLING);

  j = job("a", "2", UPD_VERIFYING);
  upd_after_verify(&j, &POL, 0, UPD_VERIFY_MISMATCH);
  assert_int_equal(j.state, UPD_REPORTING);
  assert_string_equal(j.reason, "sha256_mismatch");
  assert_int_equal(j.restart, 1);

  j = job("a", "2", UPD_VERIFYING);
  upd_after_verify(&j, &POL, 0, UPD_VERIFY_SHORT);
  assert_int_equal(j.state, UPD_DOWNLOADING);
  assert_int_equal(j.restart, 0);

  j = job("a", "2", UPD_INSTALLING);
  upd_after_install(&j, 0, 0, 0, 0, 0);
  assert_int_equal(j.state, UPD_REPORTING);
  assert_string_equal(j.result, "success");
  assert_string_equal(j.reason, "");

  static const struct {
    int64_t st;
    int sig, to, sp;
    const char *why;
  } c[] = {{3, 0, 0, 0, "install_failed: exit 3"},
           {0, 9, 0, 0, "install_failed: signal 9"},
           {0, 9, 1, 0, "install_failed: timeout"},
           {-1, 0, 0, -2, "install_failed: cannot start"}};
  for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
    j = job("a", "2", UPD_INSTALLING);
    upd_after_install(&j, 0, c[i].st, c[i].sig, c[i].to, c[i].sp);
    assert_string_equal(j.result, "failure");
    assert_string_equal(j.reason, c[i].why);
  }

  j = job("a", "2", UPD_REPORTING);
  upd_after_report(&j, &POL, 0, 0, 500);
  assert_int_equal(j.state, UPD_REPORTING);
  assert_int_equal(j.next_try_ms, 1000);
  upd_after_report(&j, &POL, 0, 7, 0);
  assert_int_equal(j.state, UPD_REPORTING);
  assert_int_equal(j.next_try_ms, 2000);
  for (int i = 0; i < 20; i++) upd_after_report(&j, &POL, 0, 0, 503); /* never gives up */
  assert_int_equal(j.state, UPD_REPORTING);
  upd_after_report(&j, &POL, 0, 0, 201);
  assert_int_equal(j.state, UPD_DONE);
  assert_true(upd_final(j.state));
}

static void test_offers(void **state) {
  upd_job o = job("a", "2.0", 0);
  assert_int_equal(upd_offer(&o, NULL, 0, 0, NULL, NULL, 0), UPD_OFFER_TAKE);
  assert_int_equal(upd_offer(&o, "1.9", 0, 0, NULL, NULL, 0), UPD_OFFER_TAKE);
  assert_int_equal(upd_offer(&o, "2.0.0", 0, 0, NULL, NULL, 0), UPD_OFFER_NOT_NEWER);
  assert_int_equal(upd_offer(&o, "2.1", 0, 0, NULL, NULL, 1), UPD_OFFER_NOT_NEWER);
  o.has_code = 1;
  o.code = 20;
  assert_int_equal(upd_offer(&o, "9.9", 1, 19, NULL, NULL, 0), UPD_OFFER_TAKE); /* codes */

  o = job("a", "2.0", 0);
  upd_job same = job("a", "2.0", UPD_DOWNLOADING);
  assert_int_equal(upd_offer(&o, NULL, 0, 0, &same, NULL, 1), UPD_OFFER_IN_PROGRESS);
  same.state = UPD_REPORTING;
  assert_int_equal(upd_offer(&o, NULL, 0, 0, &same, NULL, 1), UPD_OFFER_IN_PROGRESS);
  same.state = UPD_DONE;
  snprintf(same.result, sizeof same.result, "failure");
  assert_int_equal(upd_offer(&o, NULL, 0, 0, &same, NULL, 0), UPD_OFFER_DONE);
  assert_int_equal(upd_offer(&o, NULL, 0, 0, &same, NULL, 1), UPD_OFFER_RESTART);
  snprintf(same.result, sizeof same.result, "success");
  assert_int_equal(upd_offer(&o, NULL, 0, 0, &same, NULL, 1), UPD_OFFER_DONE);
  same.state = UPD_SUPERSEDED;
  assert_int_equal(upd_offer(&o, NULL, 0, 0, &same, NULL, 1), UPD_OFFER_RESTART);

  upd_job newer = job("a", "2.1", UPD_DOWNLOADING);
  assert_int_equal(upd_offer(&o, NULL, 0, 0, NULL, &newer, 1), UPD_OFFER_OLDER);
  upd_job older = job("a", "1.5", UPD_DOWNLOADING);
  assert_int_equal(upd_offer(&o, NULL, 0, 0, NULL, &older, 1), UPD_OFFER_TAKE);

  /* A newer version pushes out an older one that has not started installing. */
  assert_true(upd_supersedes(&o, &older));
  older.state = UPD_VERIFYING;
  assert_true(upd_supersedes(&o, &older));
  older.state = UPD_INSTALLING;
  assert_false(upd_supersedes(&o, &older));
  older.state = UPD_DOWNLOADING;
  assert_false(upd_supersedes(&older, &o));
  upd_job other = job("b", "1.0", UPD_DOWNLOADING);
  assert_false(upd_supersedes(&o, &other));
}

static void test_store_roundtrip(void **state) {
  char dir[] = "/tmp/herald-agent-ut-XXXXXX";
  assert_non_null(mkdtemp(dir));
  char err[256];
  inbox *ib;
  assert_int_equal(inbox_open(dir, 8u << 20, &ib, err, sizeof err), 0);
  upd_job j = job("news", "1.10.0", UPD_DOWNLOADING);
  j.has_code = 1;
  j.code = 110;
  j.notice = 42;
  snprintf(j.etag, sizeof j.etag, "\"%s\"", j.sha256);
  snprintf(j.store, sizeof j.store, "acme");
  assert_int_equal(inbox_job_put(ib, &j), 0);
  upd_job k = job("news", "1.9.0", UPD_DONE);
  assert_int_equal(inbox_job_put(ib, &k), 0);
  inv_entry e = {.updated_ms = 5};
  snprintf(e.app, sizeof e.app, "news");
  snprintf(e.version, sizeof e.version, "1.9.0");
  assert_int_equal(inbox_inv_put(ib, &e), 0);
  inbox_close(ib);

  assert_int_equal(inbox_open(dir, 8u << 20, &ib, err, sizeof err), 0);
  upd_job g;
  assert_int_equal(inbox_job_get(ib, "news", "1.10.0", &g), 0);
  assert_string_equal(g.version, "1.10.0");
  assert_int_equal(g.state, UPD_DOWNLOADING);
  assert_int_equal(g.has_code, 1);
  assert_int_equal(g.code, 110);
  assert_int_equal(g.notice, 42);
  assert_string_equal(g.etag, j.etag);
  assert_string_equal(g.store, "acme");
  assert_string_equal(g.sha256, j.sha256);
  assert_int_equal(inbox_job_get(ib, "news", "1.10", &g), HD_ENOTFOUND);
  assert_int_equal(inbox_job_get(ib, "new", "s", &g), HD_ENOTFOUND);

  /* Installed: job and inventory in one transaction. */
  g.state = UPD_REPORTING;
  snprintf(g.result, sizeof g.result, "success");
  inv_entry n = {.has_code = 1, .code = 110};
  snprintf(n.app, sizeof n.app, "news");
  snprintf(n.version, sizeof n.version, "1.10.0");
  assert_int_equal(inbox_job_installed(ib, &g, &n), 0);
  inv_entry got;
  assert_int_equal(inbox_inv_get(ib, "news", &got), 0);
  assert_string_equal(got.version, "1.10.0");
  assert_int_equal(got.code, 110);
  assert_int_equal(inbox_job_get(ib, "news", "1.10.0", &g), 0);
  assert_int_equal(g.state, UPD_REPORTING);
  assert_int_equal(inbox_inv_get(ib, "mail", &got), HD_ENOTFOUND);
  inv_entry *all;
  size_t cnt;
  assert_int_equal(inbox_inv_all(ib, &all, &cnt), 0);
  assert_int_equal(cnt, 1);
  free(all);
  inbox_close(ib);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  assert_int_equal(system(cmd), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_backoff_doubles_to_cap),
      cmocka_unit_test(test_ask_answers),
      cmocka_unit_test(test_download_complete_and_resumed),
      cmocka_unit_test(test_download_cut_retries_and_progress_resets),
      cmocka_unit_test(test_download_statuses),
      cmocka_unit_test(test_verify_install_report),
      cmocka_unit_test(test_offers),
      cmocka_unit_test(test_store_roundtrip),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
