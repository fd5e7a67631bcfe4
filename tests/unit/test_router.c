/* test_router.c — wake-ups (router.h): a watch fires once, through any of its apps or its
 * device, and is then spent; unwatch cancels; a callback that re-arms during a wake-up waits
 * for the next one (also with more watches than one internal round takes); wake_all and free
 * fire everything; 10,000 watches on one app all fire exactly once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "herald/error.h"
#include "router.h"

static int setup(void **state) { return hd__router_new((hd_router **)state) == 0 ? 0 : -1; }

static int teardown(void **state) {
  hd__router_free(*state);
  return 0;
}

static void count(void *ud) { (*(int *)ud)++; }

static hd_watch *watch(hd_router *r, uint64_t dev, const uint32_t *apps, size_t napps,
                       int *counter) {
  hd_watch *w = hd__router_watch(r, dev, apps, napps, count, counter);
  assert_non_null(w);
  return w;
}

static void test_watch_fires_once_via_app(void **state) {
  hd_router *r = *state;
  int n = 0;
  const uint32_t apps[] = {10, 20};
  assert_int_equal(hd__router_watches(r), 0);
  watch(r, 1, apps, 2, &n);
  assert_int_equal(hd__router_watches(r), 1);

  hd__router_wake_app(r, 30);     /* an app it does not cover */
  hd__router_wake_device(r, 2);   /* another device */
  hd__router_wake_device(r, 10);  /* a device whose number is one of its app numbers */
  assert_int_equal(n, 0);
  assert_int_equal(hd__router_watches(r), 1);

  hd__router_wake_app(r, 10);
  assert_int_equal(n, 1);
  assert_int_equal(hd__router_watches(r), 0);
  hd__router_wake_app(r, 10);     /* spent: nothing through any of its keys */
  hd__router_wake_app(r, 20);
  hd__router_wake_device(r, 1);
  assert_int_equal(n, 1);
}

static void test_watch_fires_once_via_device(void **state) {
  hd_router *r = *state;
  int a = 0, b = 0;
  const uint32_t apps[] = {5};
  watch(r, 7, apps, 1, &a);
  watch(r, 5, NULL, 0, &b); /* device 5, no apps: app 5 is not device 5 */
  hd__router_wake_app(r, 7);
  assert_int_equal(a, 0);
  hd__router_wake_device(r, 7);
  assert_int_equal(a, 1);
  assert_int_equal(b, 0);
  hd__router_wake_app(r, 5);
  assert_int_equal(a, 1);
  assert_int_equal(b, 0);
  hd__router_wake_device(r, 5);
  assert_int_equal(b, 1);
  assert_int_equal(hd__router_watches(r), 0);
}

static void test_unwatch_prevents_firing(void **state) {
  hd_router *r = *state;
  int a = 0, b = 0, c = 0;
  const uint32_t apps[] = {10, 11};
  hd_watch *wa = watch(r, 1, apps, 2, &a);
  watch(r, 2, apps, 2, &b);
  hd_watch *wc = watch(r, 3, apps + 1, 1, &c);
  assert_int_equal(hd__router_watches(r), 3);
  hd__router_unwatch(wa);
  hd__router_unwatch(wc);
  hd__router_unwatch(NULL); /* harmless */
  assert_int_equal(hd__router_watches(r), 1);
  hd__router_wake_app(r, 11);
  hd__router_wake_device(r, 1);
  hd__router_wake_device(r, 3);
  assert_int_equal(a, 0);
  assert_int_equal(b, 1);
  assert_int_equal(c, 0);
  assert_int_equal(hd__router_watches(r), 0);
}

static void test_watch_on_several_apps_fires_once(void **state) {
  hd_router *r = *state;
  int n = 0, d = 0;
  const uint32_t apps[] = {1, 2, 3};
  const uint32_t twice[] = {4, 4}; /* the same app listed twice */
  watch(r, 100, apps, 3, &n);
  watch(r, 101, twice, 2, &d);
  hd__router_wake_app(r, 2);
  hd__router_wake_app(r, 1);
  hd__router_wake_app(r, 3);
  hd__router_wake_device(r, 100);
  assert_int_equal(n, 1);
  hd__router_wake_app(r, 4);
  hd__router_wake_app(r, 4);
  assert_int_equal(d, 1);
  assert_int_equal(hd__router_watches(r), 0);

  /* The tables are intact afterwards: new watches on the same keys work. */
  int m = 0;
  watch(r, 100, twice, 2, &m);
  watch(r, 101, apps, 3, &m);
  hd__router_wake_app(r, 4);
  assert_int_equal(m, 1);
  hd__router_wake_app(r, 3);
  assert_int_equal(m, 2);
  assert_int_equal(hd__router_watches(r), 0);
}

/* A callback that watches the same key again, as a long-poll does when its fetch is empty. */
typedef struct rearm {
  hd_router *r;
  uint32_t app;
  int fired;
  int budget; /* re-arms left; bounds the test if re-armed watches wrongly fire at once */
} rearm;

static void on_rearm(void *ud) {
  rearm *c = ud;
  c->fired++;
  if (c->budget > 0) {
    c->budget--;
    assert_non_null(hd__router_watch(c->r, 9, &c->app, 1, on_rearm, c));
  }
}

static void check_rearm(hd_router *r, int n) {
  rearm c = {.r = r, .app = 42, .budget = n};
  for (int i = 0; i < n; i++) assert_non_null(hd__router_watch(r, 9, &c.app, 1, on_rearm, &c));
  hd__router_wake_app(r, 42);
  assert_int_equal(c.fired, n);  /* each armed watch once, none of the re-armed ones */
  assert_int_equal(c.budget, 0);
  assert_int_equal(hd__router_watches(r), n);
  hd__router_wake_app(r, 42);    /* the next commit fires the re-armed ones */
  assert_int_equal(c.fired, 2 * n);
  assert_int_equal(hd__router_watches(r), 0);
}

static void test_rearm_during_wake_waits_for_next_wake(void **state) { check_rearm(*state, 3); }

static void test_rearm_during_wake_many_watches(void **state) {
  check_rearm(*state, 64);
  check_rearm(*state, 65);
  check_rearm(*state, 1000);
}

/* A callback that arms a watch on another key: untouched by the wake in progress. */
typedef struct hop {
  hd_router *r;
  int fired, next_fired;
} hop;

static void on_next(void *ud) { ((hop *)ud)->next_fired++; }
static void on_hop(void *ud) {
  hop *h = ud;
  const uint32_t other = 8;
  h->fired++;
  assert_non_null(hd__router_watch(h->r, 2, &other, 1, on_next, h));
}

static void test_callback_may_watch_other_keys(void **state) {
  hd_router *r = *state;
  hop h = {.r = r};
  const uint32_t app = 7;
  for (int i = 0; i < 100; i++) assert_non_null(hd__router_watch(r, 1, &app, 1, on_hop, &h));
  hd__router_wake_app(r, 7);
  assert_int_equal(h.fired, 100);
  assert_int_equal(h.next_fired, 0);
  assert_int_equal(hd__router_watches(r), 100);
  hd__router_wake_device(r, 2);
  assert_int_equal(h.next_fired, 100);
  assert_int_equal(hd__router_watches(r), 0);
}

/* A callback that cancels another watch woken by the same wake-up, before that one has run:
 * still valid by the contract (its callback has not run), so unwatch must take effect. */
typedef struct pair {
  hd_watch *w[2];
  int fired[2];
} pair;

static void on_pair(pair *p, int me) {
  p->fired[me]++;
  hd__router_unwatch(p->w[1 - me]);
  p->w[1 - me] = NULL;
}
static void on_pair0(void *ud) { on_pair(ud, 0); }
static void on_pair1(void *ud) { on_pair(ud, 1); }

static void test_unwatch_of_watch_pending_in_same_wake(void **state) {
  hd_router *r = *state;
  pair p = {0};
  const uint32_t app = 12;
  int bystander = 0;
  p.w[0] = hd__router_watch(r, 1, &app, 1, on_pair0, &p);
  p.w[1] = hd__router_watch(r, 2, &app, 1, on_pair1, &p);
  watch(r, 3, &app, 1, &bystander);
  assert_non_null(p.w[0]);
  assert_non_null(p.w[1]);
  hd__router_wake_app(r, app);
  assert_int_equal(p.fired[0] + p.fired[1], 1); /* whichever ran first cancelled the other */
  assert_int_equal(bystander, 1);
  assert_int_equal(hd__router_watches(r), 0);
  int later = 0;
  watch(r, 4, &app, 1, &later); /* the table is intact */
  hd__router_wake_app(r, app);
  assert_int_equal(later, 1);
}

static void test_wake_all_fires_every_watch(void **state) {
  hd_router *r = *state;
  enum { N = 500 };
  static int fired[N];
  memset(fired, 0, sizeof fired);
  for (int i = 0; i < N; i++) {
    uint32_t apps[2] = {(uint32_t)(i % 7) + 1, (uint32_t)(i % 13) + 100};
    watch(r, (uint64_t)i + 1, apps, (size_t)(i % 3), &fired[i]);
  }
  assert_int_equal(hd__router_watches(r), N);
  hd__router_wake_all(r);
  assert_int_equal(hd__router_watches(r), 0);
  for (int i = 0; i < N; i++) assert_int_equal(fired[i], 1);
  hd__router_wake_all(r);
  for (int i = 0; i < N; i++) assert_int_equal(fired[i], 1);
}

static void test_free_fires_remaining_watches(void **state) {
  (void)state;
  hd_router *r = NULL;
  int a = 0, b = 0;
  const uint32_t app = 3;
  assert_int_equal(hd__router_new(&r), 0);
  watch(r, 1, &app, 1, &a);
  watch(r, 2, NULL, 0, &b);
  hd__router_free(r);
  assert_int_equal(a, 1);
  assert_int_equal(b, 1);
  hd__router_free(NULL);
}

static void test_ten_thousand_watches_on_one_app(void **state) {
  hd_router *r = *state;
  enum { N = 10000 };
  static int fired[N], other[N];
  const uint32_t app = 77, app2 = 78;
  memset(fired, 0, sizeof fired);
  memset(other, 0, sizeof other);
  for (int i = 0; i < N; i++) {
    watch(r, (uint64_t)i + 1, &app, 1, &fired[i]);
    watch(r, (uint64_t)i + 1, &app2, 1, &other[i]);
  }
  assert_int_equal(hd__router_watches(r), 2 * N);
  hd__router_wake_app(r, app);
  assert_int_equal(hd__router_watches(r), N);
  for (int i = 0; i < N; i++) {
    assert_int_equal(fired[i], 1);
    assert_int_equal(other[i], 0);
  }
  hd__router_wake_app(r, app);
  for (int i = 0; i < N; i++) assert_int_equal(fired[i], 1);
  hd__router_wake_app(r, app2);
  assert_int_equal(hd__router_watches(r), 0);
  for (int i = 0; i < N; i++) assert_int_equal(other[i], 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_watch_fires_once_via_app, setup, teardown),
      cmocka_unit_test_setup_teardown(test_watch_fires_once_via_device, setup, teardown),
      cmocka_unit_test_setup_teardown(test_unwatch_prevents_firing, setup, teardown),
      cmocka_unit_test_setup_teardown(test_watch_on_several_apps_fires_once, setup, teardown),
      cmocka_unit_test_setup_teardown(test_rearm_during_wake_waits_for_next_wake, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_rearm_during_wake_many_watches, setup, teardown),
      cmocka_unit_test_setup_teardown(test_callback_may_watch_other_keys, setup, teardown),
      cmocka_unit_test_setup_teardown(test_unwatch_of_watch_pending_in_same_wake, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_wake_all_fires_every_watch, setup, teardown),
      cmocka_unit_test(test_free_fires_remaining_watches),
      cmocka_unit_test_setup_teardown(test_ten_thousand_watches_on_one_app, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
