/* test_agent_version.c — herald-agent's release version order (clients/agent/version.h): the
 * contract's examples, numeric versus string segments, missing segments, pre-releases, huge
 * numbers, codes first when both sides have one, that the order is antisymmetric over every
 * pair of a sorted list, and that it agrees with the broker's hd__release_vercmp on a few
 * hundred thousand generated pairs (the two must never disagree about "newer"). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "../../broker/release.h" /* the broker's: hd__release_vercmp */
#include "version.h"

#define LT(a, b)                                                            \
  do {                                                                      \
    if (!(version_cmp(a, b) < 0 && version_cmp(b, a) > 0))                  \
      fail_msg("expected %s < %s (cmp %d / %d)", a, b, version_cmp(a, b),   \
               version_cmp(b, a));                                          \
  } while (0)
#define EQ(a, b)                                                            \
  do {                                                                      \
    if (version_cmp(a, b) != 0 || version_cmp(b, a) != 0)                   \
      fail_msg("expected %s == %s (cmp %d)", a, b, version_cmp(a, b));      \
  } while (0)

static void test_contract_examples(void **state) {
  LT("1.9.3", "1.10.0");
  EQ("1.0", "1.0.0");
  LT("1.0.0-rc1", "1.0.0");
  LT("1.0.0-rc1", "1.0.0-rc2");
  LT("1.0", "1.0.1");
  LT("2", "10");
  EQ("1.02", "1.2"); /* numerically */
}

static void test_segments(void **state) {
  LT("1.0.0-alpha", "1.0.0-beta");     /* strings, byte order */
  LT("1.0.a", "1.0.0");                /* a number beats a non-number */
  LT("1.0-x", "1.0.1");
  LT("1.0.0+build", "1.0.0");          /* '+' splits like the others */
  LT("1.0.0-rc1", "1.0.0-rc1.1");
  EQ("1-0", "1.0");                    /* every separator is the same */
  LT("99999999999999999999998", "99999999999999999999999"); /* past 64 bits */
  LT("9", "99999999999999999999999");
  EQ("", "0");
  EQ("1.", "1");                       /* a trailing separator ends the version */
  LT("1..2", "1.0.2");                 /* an empty segment is a (non-numeric) string */
  LT(NULL, "0");
  EQ(NULL, NULL);
}

static void test_sorted_list_is_consistent(void **state) {
  static const char *const v[] = {"0.9", "1.0.0-alpha", "1.0.0-beta", "1.0.0-rc1",
                                  "1.0.0-rc2", "1.0", "1.0.1", "1.2", "1.9.3", "1.10.0",
                                  "1.10.0.1", "2.0.0", "10"};
  size_t n = sizeof v / sizeof *v;
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < n; j++) {
      int c = version_cmp(v[i], v[j]);
      int want = i < j ? -1 : i > j;
      if ((c > 0) - (c < 0) != want) fail_msg("%s vs %s: %d, want %d", v[i], v[j], c, want);
    }
}

static void test_codes_first(void **state) {
  /* Both have a code: the code decides, whatever the strings say. */
  assert_true(release_cmp("2.0", 1, 10, "1.0", 1, 11) < 0);
  assert_true(release_cmp("1.0", 1, 12, "9.0", 1, 11) > 0);
  assert_int_equal(release_cmp("1.0", 1, 5, "2.0", 1, 5), 0);
  /* Only one side has a code: the strings. */
  assert_true(release_cmp("2.0", 1, 1, "1.0", 0, 0) > 0);
  assert_true(release_cmp("1.0", 0, 0, "1.1", 1, 1) < 0);
}

static const char *const SEGS[] = {"0", "1", "2", "10", "01", "a", "b", "rc1", "rc2", ""};
static const char SEPS[] = ".-+";

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t next_rand(void) {
  rng = rng * 6364136223846793005ull + 1442695040888963407ull;
  return (uint32_t)(rng >> 33);
}

static void gen(char *out, size_t cap) {
  size_t n = 1 + next_rand() % 4, len = 0;
  out[0] = 0;
  for (size_t i = 0; i < n; i++) {
    const char *s = SEGS[next_rand() % (sizeof SEGS / sizeof *SEGS)];
    if (i == 0 && !*s) s = "1";
    len += (size_t)snprintf(out + len, cap - len, "%s%s", i ? (char[]){SEPS[next_rand() % 3], 0}
                                                           : "", s);
  }
}

static int sign(int c) { return (c > 0) - (c < 0); }

static void test_agrees_with_broker(void **state) {
  char a[64], b[64];
  for (int i = 0; i < 300000; i++) {
    gen(a, sizeof a);
    gen(b, sizeof b);
    int mine = sign(version_cmp(a, b)), theirs = sign(hd__release_vercmp(a, 0, 0, b, 0, 0));
    if (mine != theirs) fail_msg("%s vs %s: agent %d, broker %d", a, b, mine, theirs);
    int64_t ca = next_rand() % 5, cb = next_rand() % 5;
    mine = sign(release_cmp(a, 1, ca, b, 1, cb));
    theirs = sign(hd__release_vercmp(a, 1, ca, b, 1, cb));
    if (mine != theirs) fail_msg("codes %lld vs %lld: agent %d, broker %d", (long long)ca,
                                 (long long)cb, mine, theirs);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_contract_examples),
      cmocka_unit_test(test_segments),
      cmocka_unit_test(test_sorted_list_is_consistent),
      cmocka_unit_test(test_codes_first),
      cmocka_unit_test(test_agrees_with_broker),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
