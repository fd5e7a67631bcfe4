/* test_jcache.c — the cache of JSON renderings (jcache.h): a miss until put, a hit hands out a
 * copy of its own, an id taking another's slot replaces it (and the old id misses), a put of
 * an id already there keeps the first, renderings over the size cap and id 0 are not kept. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "herald/error.h"
#include "jcache.h"

static void test_miss_put_hit(void **state) {
  (void)state;
  hd_jcache *c = hd__jcache_new();
  assert_non_null(c);
  char *t = NULL;
  size_t n = 0;
  assert_int_equal(hd__jcache_get(c, 7, &t, &n), HD_ENOTFOUND);
  hd__jcache_put(c, 7, "{\"a\":1}xx", 7); /* only len bytes count */
  assert_int_equal(hd__jcache_get(c, 7, &t, &n), 0);
  assert_int_equal(n, 7);
  assert_string_equal(t, "{\"a\":1}");
  char *u = NULL;
  assert_int_equal(hd__jcache_get(c, 7, &u, &n), 0);
  assert_ptr_not_equal(t, u); /* each caller gets its own copy */
  t[0] = 'X';                 /* and changing it changes nothing in the cache */
  assert_string_equal(u, "{\"a\":1}");
  free(t);
  free(u);
  hd__jcache_free(c);
}

static void test_slot_taken_over(void **state) {
  (void)state;
  hd_jcache *c = hd__jcache_new();
  uint64_t a = 5, b = 5 + HD_JCACHE_SLOTS; /* same slot */
  hd__jcache_put(c, a, "1", 1);
  hd__jcache_put(c, b, "22", 2);
  char *t;
  size_t n;
  assert_int_equal(hd__jcache_get(c, a, &t, &n), HD_ENOTFOUND);
  assert_int_equal(hd__jcache_get(c, b, &t, &n), 0);
  assert_string_equal(t, "22");
  free(t);
  hd__jcache_put(c, b, "333", 3); /* the id is there already: an id names one rendering */
  assert_int_equal(hd__jcache_get(c, b, &t, &n), 0);
  assert_string_equal(t, "22");
  free(t);
  hd__jcache_free(c);
}

static void test_not_kept(void **state) {
  (void)state;
  hd_jcache *c = hd__jcache_new();
  char *big = malloc(HD_JCACHE_MAX_TEXT + 1);
  memset(big, 'x', HD_JCACHE_MAX_TEXT + 1);
  char *t;
  size_t n;
  hd__jcache_put(c, 9, big, HD_JCACHE_MAX_TEXT + 1);
  assert_int_equal(hd__jcache_get(c, 9, &t, &n), HD_ENOTFOUND);
  hd__jcache_put(c, 9, big, HD_JCACHE_MAX_TEXT); /* at the cap: kept */
  assert_int_equal(hd__jcache_get(c, 9, &t, &n), 0);
  assert_int_equal(n, HD_JCACHE_MAX_TEXT);
  free(t);
  hd__jcache_put(c, 0, "0", 1); /* ids start at 1: 0 marks an empty slot */
  assert_int_equal(hd__jcache_get(c, 0, &t, &n), HD_ENOTFOUND);
  free(big);
  hd__jcache_free(c);
  hd__jcache_free(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_miss_put_hit),
      cmocka_unit_test(test_slot_taken_over),
      cmocka_unit_test(test_not_kept),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
