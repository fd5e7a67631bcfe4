/* test_bench_json.c — the bench's JSON reader (bench/json.c on jsmn): what herald-bench takes
 * from a long-poll answer (each message's data.s and data.t, the cursor) must be what is there,
 * whatever the key order, nesting or whitespace, or the loss and duplicate counts are wrong. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "json.h"

static void test_herald_answer(void **state) {
  (void)state;
  /* data before id in one message, nested objects and arrays beside the keys we want */
  static const char body[] =
      "{\"messages\": [{\"id\":\"41\",\"app\":\"bench\",\"data\":{\"s\":7,\"t\":1700000000000000001,"
      "\"p\":\"x,}]\\\"\"},\"expires\":5},"
      " {\"data\" : {\"p\":{\"s\":99},\"t\":12,\"s\":8},\"id\":\"42\",\"extra\":[1,[2,{\"s\":3}]]}],"
      "\"cursor\":\"42\"}";
  hb_json j;
  assert_int_equal(hb_json_parse(&j, body, sizeof body - 1), 0);
  int msgs = hb_json_key(&j, 0, "messages");
  assert_int_equal(hb_json_count(&j, msgs), 2);
  long long s[2], t[2];
  for (int k = 0, m = msgs + 1; k < 2; k++, m = hb_json_next(&j, m)) {
    int data = hb_json_key(&j, m, "data");
    s[k] = hb_json_int(&j, hb_json_key(&j, data, "s"));
    t[k] = hb_json_int(&j, hb_json_key(&j, data, "t"));
  }
  assert_int_equal(s[0], 7);
  assert_true(t[0] == 1700000000000000001ll);
  assert_int_equal(s[1], 8); /* not the "s" nested in "p" */
  assert_int_equal(t[1], 12);
  char cur[24];
  assert_int_equal(hb_json_str(&j, hb_json_key(&j, 0, "cursor"), cur, sizeof cur), 0);
  assert_string_equal(cur, "42");
}

static void test_missing_and_wrong_types(void **state) {
  (void)state;
  static const char body[] = "{\"messages\":{},\"cursor\":42,\"s\":\"7\"}";
  hb_json j;
  char cur[4];
  assert_int_equal(hb_json_parse(&j, body, sizeof body - 1), 0);
  assert_int_equal(hb_json_count(&j, hb_json_key(&j, 0, "messages")), -1); /* not an array */
  assert_int_equal(hb_json_key(&j, 0, "nope"), -1);
  assert_int_equal(hb_json_str(&j, hb_json_key(&j, 0, "cursor"), cur, sizeof cur), -1);
  assert_int_equal(hb_json_int(&j, hb_json_key(&j, 0, "s")), 0); /* a string, not a number */
  assert_int_equal(hb_json_int(&j, -1), 0);
  assert_int_equal(hb_json_key(&j, -1, "s"), -1);
  static const char lng[] = "{\"cursor\":\"12345\"}";
  assert_int_equal(hb_json_parse(&j, lng, sizeof lng - 1), 0);
  assert_int_equal(hb_json_str(&j, hb_json_key(&j, 0, "cursor"), cur, sizeof cur), -1);
}

static void test_not_json(void **state) {
  (void)state;
  hb_json j;
  assert_int_equal(hb_json_parse(&j, "", 0), -1);
  assert_int_equal(hb_json_parse(&j, "{\"a\":", 5), -1);   /* cut short */
  assert_int_equal(hb_json_parse(&j, "{\"a\":[1}", 8), -1); /* mismatched */
  assert_int_equal(hb_json_key(&j, 0, "a"), -1);           /* nothing left from before */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_herald_answer),
      cmocka_unit_test(test_missing_and_wrong_types),
      cmocka_unit_test(test_not_json),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
