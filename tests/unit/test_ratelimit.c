/* test_ratelimit.c — the token buckets of ratelimit.h: a bucket starts full, refills at its
 * rate up to its burst and no further, time 0 is a time like any other, a clock going back
 * neither refills nor drains, the wait told on refusal is exactly when the next token is there,
 * keys sharing a slot share a budget, and a zero rate never refills. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ratelimit.h"

/* Take until refused at `now`; returns how many were allowed (stops at 1000000). */
static int drain(hd_ratelimit *r, const char *key, uint64_t now) {
  int n = 0;
  while (n < 1000000 && hd__ratelimit_take(r, key, now)) n++;
  return n;
}

static void test_starts_full_with_the_burst(void **state) {
  (void)state;
  hd_ratelimit *r = hd__ratelimit_new(60 * 50.0, 50, 1); /* 50/s, burst 50 */
  assert_non_null(r);
  assert_int_equal(drain(r, "", 1000), 50);
  hd__ratelimit_free(r);
}

/* Regression: "never used" was once last_ms == 0, so at time 0 the bucket refilled on every
 * call and never refused. */
static void test_time_zero_is_a_real_time(void **state) {
  (void)state;
  hd_ratelimit *r = hd__ratelimit_new(60.0, 3, 1);
  assert_int_equal(drain(r, "k", 0), 3);
  assert_false(hd__ratelimit_take(r, "k", 0));
  /* one per second: the next token at t = 1000 ms */
  assert_false(hd__ratelimit_take(r, "k", 999));
  assert_true(hd__ratelimit_take(r, "k", 1000));
  assert_false(hd__ratelimit_take(r, "k", 1000));
  hd__ratelimit_free(r);
}

static void test_refill_rate_and_burst_cap(void **state) {
  (void)state;
  hd_ratelimit *r = hd__ratelimit_new(60 * 100.0, 10, 1); /* 100/s = 1 per 10 ms, burst 10 */
  assert_int_equal(drain(r, "", 5000), 10);
  assert_int_equal(drain(r, "", 5050), 5);    /* 50 ms: 5 tokens */
  assert_int_equal(drain(r, "", 5055), 0);    /* half a token is not one */
  assert_int_equal(drain(r, "", 5060), 1);    /* the half counts towards the next */
  assert_int_equal(drain(r, "", 500000), 10); /* a long pause refills to the burst only */
  hd__ratelimit_free(r);
}

static void test_clock_going_back(void **state) {
  (void)state;
  hd_ratelimit *r = hd__ratelimit_new(60.0, 2, 1); /* 1/s */
  assert_int_equal(drain(r, "", 10000), 2);
  /* back in time: nothing added, and nothing taken away... */
  assert_int_equal(drain(r, "", 5000), 0);
  /* ...and coming forward again counts from the latest time seen, not from the step back */
  assert_int_equal(drain(r, "", 10999), 0);
  assert_int_equal(drain(r, "", 11000), 1);
  hd__ratelimit_free(r);
}

static void test_wait_says_when_the_next_token_is_there(void **state) {
  (void)state;
  hd_ratelimit *r = hd__ratelimit_new(60 * 4.0, 1, 1); /* 4/s: one per 250 ms */
  uint64_t wait = 0;
  assert_true(hd__ratelimit_take_wait(r, "", 100, &wait));
  assert_false(hd__ratelimit_take_wait(r, "", 100, &wait));
  assert_int_equal(wait, 250);
  assert_false(hd__ratelimit_take_wait(r, "", 300, &wait));
  assert_int_equal(wait, 50);
  assert_false(hd__ratelimit_take_wait(r, "", 349, &wait));
  assert_int_equal(wait, 1);
  assert_true(hd__ratelimit_take_wait(r, "", 350, &wait));
  /* refused with a fraction of a millisecond to go: at least 1, never 0 */
  hd_ratelimit *q = hd__ratelimit_new(60 * 3.0, 1, 1); /* one per 333.3 ms */
  assert_true(hd__ratelimit_take_wait(q, "", 0, &wait));
  assert_false(hd__ratelimit_take_wait(q, "", 333, &wait));
  assert_int_equal(wait, 1);
  assert_true(hd__ratelimit_take_wait(q, "", 334, &wait));
  hd__ratelimit_free(q);
  hd__ratelimit_free(r);
}

static void test_zero_rate_never_refills(void **state) {
  (void)state;
  hd_ratelimit *r = hd__ratelimit_new(0, 2, 1);
  uint64_t wait = 0;
  assert_int_equal(drain(r, "", 0), 2);
  assert_false(hd__ratelimit_take_wait(r, "", UINT64_MAX / 2, &wait));
  assert_int_equal(wait, UINT64_MAX);
  hd__ratelimit_free(r);
}

static void test_burst_below_one_is_one(void **state) {
  (void)state;
  hd_ratelimit *r = hd__ratelimit_new(60.0, 0, 1);
  assert_int_equal(drain(r, "", 7), 1);
  hd__ratelimit_free(r);
}

static void test_keys_have_their_own_buckets_and_one_slot_is_shared(void **state) {
  (void)state;
  hd_ratelimit *r = hd__ratelimit_new(60.0, 2, 4096);
  assert_int_equal(drain(r, "10.0.0.1", 0), 2);
  assert_int_equal(drain(r, "10.0.0.2", 0), 2); /* another address: its own budget */
  assert_int_equal(drain(r, "10.0.0.1", 0), 0);
  hd__ratelimit_free(r);
  /* one slot: every key draws from the same bucket (a tenant's one publish budget) */
  r = hd__ratelimit_new(60.0, 2, 1);
  assert_true(hd__ratelimit_take(r, "a", 0));
  assert_true(hd__ratelimit_take(r, "b", 0));
  assert_false(hd__ratelimit_take(r, "c", 0));
  hd__ratelimit_free(r);
  hd__ratelimit_free(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_starts_full_with_the_burst),
      cmocka_unit_test(test_time_zero_is_a_real_time),
      cmocka_unit_test(test_refill_rate_and_burst_cap),
      cmocka_unit_test(test_clock_going_back),
      cmocka_unit_test(test_wait_says_when_the_next_token_is_there),
      cmocka_unit_test(test_zero_rate_never_refills),
      cmocka_unit_test(test_burst_below_one_is_one),
      cmocka_unit_test(test_keys_have_their_own_buckets_and_one_slot_is_shared),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
