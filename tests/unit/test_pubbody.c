/* test_pubbody.c — the HTTP publish body read in one pass (broker/pubbody.c): its fields, its
 * "data" as the same msgpack bytes the jansson path made, and every refusal with its reason,
 * including the inputs yajl alone would let through. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "codec.h"
#include "herald/error.h"
#include "pubbody.h"

/* "data" of body as the jansson path made it: json_loadb, then the codec. */
static void jansson_data(const char *body, char **mp, size_t *len) {
  json_error_t e;
  json_t *j = json_loadb(body, strlen(body), JSON_REJECT_DUPLICATES, &e);
  assert_non_null(j);
  json_t *d = json_object_get(j, "data"), *null = json_null();
  assert_int_equal(hd__codec_json_to_mpbuf(d ? d : null, mp, len), 0);
  json_decref(null);
  json_decref(j);
}

static void accepts_as_jansson(const char *body) {
  hd_pubbody pb;
  const char *why = NULL;
  char wb[300];
  int rc = hd__pubbody_parse(body, strlen(body), &pb, &why, wb, sizeof wb);
  if (rc) fail_msg("refused %.80s: %s", body, why);
  char *want;
  size_t wlen;
  jansson_data(body, &want, &wlen);
  assert_int_equal(pb.data_len, wlen);
  assert_memory_equal(pb.data, want, wlen);
  free(want);
  hd__pubbody_clear(&pb);
}

/* Refused with HD_EINVAL and a reason containing `reason`. */
static void refuses(const char *body, size_t len, const char *reason) {
  hd_pubbody pb;
  const char *why = NULL;
  char wb[300];
  int rc = hd__pubbody_parse(body, len, &pb, &why, wb, sizeof wb);
  if (rc != HD_EINVAL) fail_msg("accepted %.80s", body);
  assert_non_null(why);
  if (!strstr(why, reason)) fail_msg("%.80s: reason '%s' lacks '%s'", body, why, reason);
  assert_null(pb.data);
  assert_null(pb.to);
}

#define REFUSES(lit, reason) refuses(lit, sizeof lit - 1, reason)

static void test_fields(void **state) {
  (void)state;
  const char *b = "{\"to\": \"dev-1\", \"ttl\": 60, \"collapse\": \"news\", \"data\": {\"a\": 1}}";
  hd_pubbody pb;
  const char *why;
  char wb[300];
  assert_int_equal(hd__pubbody_parse(b, strlen(b), &pb, &why, wb, sizeof wb), 0);
  assert_string_equal(pb.to, "dev-1");
  assert_string_equal(pb.collapse, "news");
  assert_int_equal(pb.ttl_s, 60);
  const unsigned char want[] = {0x81, 0xa1, 'a', 0x01};
  assert_int_equal(pb.data_len, sizeof want);
  assert_memory_equal(pb.data, want, sizeof want);
  hd__pubbody_clear(&pb);

  /* null is "not given"; no data is nil */
  b = "{\"to\": null, \"ttl\": null, \"collapse\": null}";
  assert_int_equal(hd__pubbody_parse(b, strlen(b), &pb, &why, wb, sizeof wb), 0);
  assert_null(pb.to);
  assert_null(pb.collapse);
  assert_int_equal(pb.ttl_s, 0);
  assert_int_equal(pb.data_len, 1);
  assert_int_equal((unsigned char)pb.data[0], 0xc0);
  hd__pubbody_clear(&pb);
  assert_int_equal(hd__pubbody_parse("{}", 2, &pb, &why, wb, sizeof wb), 0);
  assert_int_equal((unsigned char)pb.data[0], 0xc0);
  hd__pubbody_clear(&pb);
}

static void test_data_bytes_as_jansson(void **state) {
  (void)state;
  accepts_as_jansson("{\"data\":{\"s\":1,\"t\":1763840000123456,\"p\":\"xxxx\"}}");
  accepts_as_jansson("{\"data\": [1, -1, 127, 128, -33, 65536, 2.5, -0, -0.0, 1e-400, "
                     "0.5E+3, true, false, null, \"\", {}, []]}");
  accepts_as_jansson("{\"data\": 9223372036854775807}");
  accepts_as_jansson("{\"data\": -9223372036854775808}"); /* yajl's own reader refuses it */
  accepts_as_jansson("{\"data\": \"\\u00e9\\ud83d\\ude00 \\n\\t\\\"\\\\\\/\"}");
  accepts_as_jansson("{\"data\": {\"m\": {\"deep\": [[[[1, 2, [3, {\"x\": []}]]]]]}, \"\": 1}}");
  accepts_as_jansson(" \r\n\t{\"data\" :\n[ ]\t} \n");
  accepts_as_jansson("{\"data\": \"caf\xc3\xa9 \xf0\x9f\x98\x80\"}");
}

/* Container headers at the edges of msgpack's forms: fixmap/fixarray to 15, 16-bit to 65,535,
 * 32-bit beyond; written as placeholders and rewritten, they must come out as msgpack-c's. */
static void test_container_sizes(void **state) {
  (void)state;
  static const size_t sizes[] = {0, 15, 16, 17, 65535, 65536};
  for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
    size_t n = sizes[i];
    char *b = malloc(n * 12 + 64), *p = b;
    p += sprintf(p, "{\"data\": [[");
    for (size_t k = 0; k < n; k++) p += sprintf(p, k ? ",%zu" : "%zu", k % 200);
    p += sprintf(p, "], {");
    for (size_t k = 0; k < (n > 70 ? 70 : n); k++) p += sprintf(p, k ? ",\"k%zu\":1" : "\"k%zu\":1", k);
    sprintf(p, "}]}");
    accepts_as_jansson(b);
    free(b);
  }
}

static void test_depth_cap(void **state) {
  (void)state;
  char b[400];
  for (int d = HD_CODEC_MAX_DEPTH; d <= HD_CODEC_MAX_DEPTH + 1; d++) {
    char *p = b + sprintf(b, "{\"data\": ");
    for (int i = 0; i < d; i++) *p++ = '[';
    for (int i = 0; i < d; i++) *p++ = ']';
    strcpy(p, "}");
    if (d == HD_CODEC_MAX_DEPTH) accepts_as_jansson(b);
    else refuses(b, strlen(b), "nested too deeply");
  }
}

static void test_refusals(void **state) {
  (void)state;
  REFUSES("", "invalid JSON");
  REFUSES("[1]", "body must be a JSON object");
  REFUSES("\"x\"", "body must be a JSON object");
  REFUSES("{\"data\": 1, \"tll\": 5}", "unknown field 'tll'");
  REFUSES("{\"data\": 1, \"data\": 2}", "given twice");
  REFUSES("{\"to\": 5}", "to and collapse must be strings");
  REFUSES("{\"collapse\": [\"a\"]}", "to and collapse must be strings");
  REFUSES("{\"ttl\": 0}", "ttl must be a positive integer");
  REFUSES("{\"ttl\": -3}", "ttl must be a positive integer");
  REFUSES("{\"ttl\": 1.5}", "ttl must be a positive integer");
  REFUSES("{\"ttl\": \"60\"}", "ttl must be a positive integer");
  REFUSES("{\"ttl\": {}}", "ttl must be a positive integer");
  REFUSES("{\"data\": 9223372036854775808}", "64-bit range");
  REFUSES("{\"data\": -9223372036854775809}", "64-bit range");
  REFUSES("{\"data\": 1e400}", "overflow");
  REFUSES("{\"data\": tru}", "invalid JSON at line 1");
  REFUSES("{\n  \"data\": 1,\n  \"to\": x\n}", "invalid JSON at line 3 column");
  REFUSES("{\"data\": 1,}", "invalid JSON");
  REFUSES("{\"data\": [1 2]}", "invalid JSON");
  REFUSES("{\"data\": 01}", "invalid JSON");
  REFUSES("{\"data\": 1} {}", "invalid JSON");
  REFUSES("{\"data\": 1} x", "invalid JSON");
  REFUSES("{\"data\": /* c */ 1}", "invalid JSON");
  REFUSES("{\"data\": \"a\nb\"}", "invalid JSON"); /* a raw control character in a string */
  REFUSES("{\"data\": 1}\0", "invalid JSON");
  /* What yajl alone lets through. */
  REFUSES("{}\"", "trailing garbage");
  REFUSES("{\"data\":\v1}", "invalid whitespace");
  REFUSES("{\"data\":\f1}", "invalid whitespace");
  REFUSES("{\"data\": \"a\\u0000b\"}", "\\u0000");
  REFUSES("{\"to\": \"\\u0000\"}", "\\u0000");
  REFUSES("{\"data\": \"\\ud800\"}", "high surrogate");
  REFUSES("{\"data\": \"\\ud800x\"}", "high surrogate");
  REFUSES("{\"data\": \"\\ud800\\u0041\"}", "high surrogate");
  REFUSES("{\"data\": \"\\udc00\"}", "low surrogate");
  REFUSES("{\"data\": \"\xc0\x80\"}", "UTF");          /* overlong NUL */
  REFUSES("{\"data\": \"\xed\xa0\x80\"}", "UTF");      /* a surrogate in UTF-8 */
  REFUSES("{\"data\": \"\xf4\x90\x80\x80\"}", "UTF");  /* past U+10FFFF */
  REFUSES("{\"data\": {\"\xff\": 1}}", "UTF");
  /* An escaped backslash before "u0000" is no escape of NUL. */
  accepts_as_jansson("{\"data\": \"\\\\u0000\"}");
}

static void test_repeated_keys(void **state) {
  (void)state;
  REFUSES("{\"data\": {\"x\": 1, \"x\": 2}}", "repeated");
  REFUSES("{\"data\": [{\"a\": {\"b\": 1, \"b\": 1}}]}", "repeated");
  /* the same key in two objects, or in an object and the one inside it, is no repeat */
  accepts_as_jansson("{\"data\": [{\"x\": 1}, {\"x\": 2, \"y\": {\"x\": 3}}]}");
  /* escaped and plain spellings of one key are the same key */
  REFUSES("{\"data\": {\"a\": 1, \"\\u0061\": 2}}", "repeated");
  /* many keys: sorted rather than compared pairwise; the repeat first and last */
  char b[8000], *p = b + sprintf(b, "{\"data\": {\"k499\": 0");
  for (int k = 0; k < 500; k++) p += sprintf(p, ",\"k%d\":%d", k, k);
  strcpy(p, "}}");
  refuses(b, strlen(b), "repeated");
  p = b + sprintf(b, "{\"data\": {\"k0\": 0");
  for (int k = 1; k < 500; k++) p += sprintf(p, ",\"k%d\":%d", k, k);
  strcpy(p, "}}");
  accepts_as_jansson(b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fields),
      cmocka_unit_test(test_data_bytes_as_jansson),
      cmocka_unit_test(test_container_sizes),
      cmocka_unit_test(test_depth_cap),
      cmocka_unit_test(test_refusals),
      cmocka_unit_test(test_repeated_keys),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
