/* test_codec.c — JSON <-> msgpack codec: round trips, refusals, depth cap, and a seeded
 * mutation fuzz loop cross-checked against msgpack-c's own unpacker. */
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

/* ---- helpers ----------------------------------------------------------------------------- */

static char *dump_compact(const json_t *v) {
  char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
  assert_non_null(s);
  return s;
}

/* msgpack bytes -> msgpack_object (msgpack-c) -> json_t via hd__codec_msgpack_to_json. */
static int unpack_to_json(const char *buf, size_t len, json_t **out) {
  msgpack_unpacked u;
  size_t off = 0;
  int rc;

  msgpack_unpacked_init(&u);
  assert_int_equal(msgpack_unpack_next(&u, buf, len, &off), MSGPACK_UNPACK_SUCCESS);
  assert_int_equal(off, len);
  rc = hd__codec_msgpack_to_json(&u.data, out);
  msgpack_unpacked_destroy(&u);
  return rc;
}

/* Encode v, then decode it both ways (own byte reader, and msgpack-c + object walker) and
 * check both give back the same compact text and type. Text equality is stricter than
 * json_equal() (key order, -0.0, %.17g reals), and jansson 2.14's json_equal() wrongly finds
 * two identical objects unequal when a key contains NUL. */
static void check_roundtrip(const json_t *v) {
  char *mp = NULL, *text = NULL, *want = dump_compact(v);
  size_t mplen = 0, textlen = 0;
  json_t *back = NULL;

  assert_int_equal(hd__codec_json_to_mpbuf(v, &mp, &mplen), 0);
  assert_non_null(mp);
  assert_true(mplen > 0);
  assert_int_equal(hd__codec_msgpack_validate(mp, mplen), 0);

  assert_int_equal(hd__codec_mpbytes_to_json_text(mp, mplen, &text, &textlen), 0);
  assert_non_null(text);
  assert_int_equal(textlen, strlen(text));
  assert_string_equal(text, want);

  assert_int_equal(unpack_to_json(mp, mplen, &back), 0);
  assert_non_null(back);
  assert_int_equal(json_typeof(back), json_typeof(v));
  free(text);
  text = dump_compact(back);
  assert_string_equal(text, want);

  free(text);
  free(want);
  free(mp);
  json_decref(back);
}

static void check_roundtrip_text(const char *json_text) {
  json_error_t err;
  json_t *v = json_loads(json_text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
  if (v == NULL) fail_msg("bad test JSON %s: %s", json_text, err.text);
  check_roundtrip(v);
  json_decref(v);
}

/* Expect mpbytes_to_json_text to refuse, and validate to give `want_valid`. */
static void check_refused(const void *buf, size_t len, int want_valid) {
  char *text = (char *)0x1;
  size_t textlen = 99;
  assert_int_equal(hd__codec_mpbytes_to_json_text(buf, len, &text, &textlen), HD_EINVAL);
  assert_null(text);
  assert_int_equal(textlen, 0);
  assert_int_equal(hd__codec_msgpack_validate(buf, len), want_valid);
}

#define REFUSED(want_valid, ...)                                                              \
  do {                                                                                        \
    static const unsigned char b_[] = {__VA_ARGS__};                                          \
    check_refused(b_, sizeof b_, (want_valid));                                               \
  } while (0)

static void check_text(const void *buf, size_t len, const char *want) {
  char *text = NULL;
  size_t textlen = 0;
  assert_int_equal(hd__codec_mpbytes_to_json_text(buf, len, &text, &textlen), 0);
  assert_string_equal(text, want);
  assert_int_equal(textlen, strlen(want));
  free(text);
}

#define TEXT(want, ...)                                                                       \
  do {                                                                                        \
    static const unsigned char b_[] = {__VA_ARGS__};                                          \
    check_text(b_, sizeof b_, (want));                                                        \
  } while (0)

/* ---- round trips ------------------------------------------------------------------------- */

static void test_roundtrip_scalars(void **state) {
  (void)state;
  const char *cases[] = {
      "null", "true", "false", "0", "1", "-1", "127", "128", "-32", "-33", "255", "256",
      "65535", "65536", "-129", "-32769", "4294967295", "4294967296", "-2147483649",
      "9223372036854775807", "-9223372036854775808", "\"\"", "\"abc\"",
      "\"a string longer than thirty-one bytes, so not a fixstr\"",
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_roundtrip_text(cases[i]);

  json_t *v = json_integer(INT64_MIN);
  check_roundtrip(v);
  json_decref(v);
  v = json_integer(INT64_MAX);
  check_roundtrip(v);
  json_decref(v);
}

static void test_roundtrip_reals(void **state) {
  (void)state;
  const double cases[] = {1.0, 0.0, -0.0, -0.5, 3.141592653589793, 1e300, -1e-300,
                          5e-324, 9007199254740993.0, 123456789.0};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    json_t *v = json_real(cases[i]);
    check_roundtrip(v);
    json_decref(v);
  }

  /* 1.0 must come back as a real, not the integer 1. */
  json_t *one = json_real(1.0), *back = NULL;
  char *mp = NULL, *text = NULL;
  size_t mplen, textlen;
  assert_int_equal(hd__codec_json_to_mpbuf(one, &mp, &mplen), 0);
  assert_int_equal(mplen, 9); /* float64 */
  assert_int_equal((unsigned char)mp[0], 0xcb);
  assert_int_equal(hd__codec_mpbytes_to_json_text(mp, mplen, &text, &textlen), 0);
  assert_string_equal(text, "1.0");
  assert_int_equal(unpack_to_json(mp, mplen, &back), 0);
  assert_true(json_is_real(back));
  assert_true(json_real_value(back) == 1.0);
  free(text);
  free(mp);
  json_decref(back);
  json_decref(one);

  /* float32 from other producers decodes as a real too. */
  TEXT("1.5", 0xca, 0x3f, 0xc0, 0x00, 0x00);
  TEXT("-2.0", 0xca, 0xc0, 0x00, 0x00, 0x00);
}

static void test_roundtrip_unicode(void **state) {
  (void)state;
  check_roundtrip_text("\"caf\\u00e9 \\u4e2d\\u6587 \\ud83d\\ude00 \\u0001 \\\"q\\\" \\\\\"");
  check_roundtrip_text("\"\xe2\x82\xac\xf0\x9f\x8e\x89\xef\xbf\xbf\xf4\x8f\xbf\xbf\"");
  check_roundtrip_text("{\"cl\\u00e9\":\"\\ud834\\udd1e\"}");

  /* Embedded NUL, in a value and in a key. */
  json_t *s = json_stringn("a\0b", 3), *back = NULL;
  char *mp = NULL, *text = NULL;
  size_t mplen, textlen;
  assert_non_null(s);
  check_roundtrip(s);
  assert_int_equal(hd__codec_json_to_mpbuf(s, &mp, &mplen), 0);
  assert_int_equal(mplen, 4);
  assert_memory_equal(mp, "\xa3" "a\0b", 4);
  assert_int_equal(hd__codec_mpbytes_to_json_text(mp, mplen, &text, &textlen), 0);
  assert_string_equal(text, "\"a\\u0000b\"");
  assert_int_equal(unpack_to_json(mp, mplen, &back), 0);
  assert_int_equal(json_string_length(back), 3);
  assert_memory_equal(json_string_value(back), "a\0b", 3);
  free(text);
  free(mp);
  json_decref(back);
  json_decref(s);

  json_t *o = json_object();
  assert_int_equal(json_object_setn_new(o, "k\0ey", 4, json_integer(7)), 0);
  assert_int_equal(json_object_setn_new(o, "k", 1, json_integer(8)), 0);
  check_roundtrip(o);
  json_decref(o);
  TEXT("{\"k\\u0000\":1}", 0x81, 0xa2, 'k', 0x00, 0x01);
}

static void test_roundtrip_nested(void **state) {
  (void)state;
  check_roundtrip_text("[]");
  check_roundtrip_text("{}");
  check_roundtrip_text("[[],{},[[]],{\"a\":{}}]");
  check_roundtrip_text("{\"z\":1,\"a\":[true,null,false,{\"m\":-1.25,\"b\":\"x\"}],"
                       "\"m\":{\"deep\":[[[[1,2,[3,{\"x\":[]}]]]]]},\"\":\"empty key\"}");

  /* 20 elements: array16 / map16 headers. */
  json_t *a = json_array(), *o = json_object();
  for (int i = 0; i < 20; i++) {
    char k[8];
    snprintf(k, sizeof k, "k%02d", 19 - i);
    json_array_append_new(a, json_integer(i * 1000));
    json_object_set_new(o, k, json_integer(i));
  }
  check_roundtrip(a);
  check_roundtrip(o);
  json_decref(a);
  json_decref(o);
}

static void test_exact_encoding_and_key_order(void **state) {
  (void)state;
  json_t *v = json_loads("{\"z\":1,\"a\":[true,null]}", 0, NULL);
  char *mp = NULL;
  size_t mplen = 0;
  assert_non_null(v);
  assert_int_equal(hd__codec_json_to_mpbuf(v, &mp, &mplen), 0);
  static const unsigned char want[] = {0x82, 0xa1, 'z', 0x01, 0xa1, 'a', 0x92, 0xc3, 0xc0};
  assert_int_equal(mplen, sizeof want);
  assert_memory_equal(mp, want, sizeof want);
  free(mp);
  json_decref(v);

  /* The packer variant appends to what is already there. */
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_nil(&pk);
  v = json_integer(-1);
  assert_int_equal(hd__codec_json_to_msgpack(v, &pk), 0);
  assert_int_equal(sb.size, 2);
  assert_memory_equal(sb.data, "\xc0\xff", 2);
  json_decref(v);
  msgpack_sbuffer_destroy(&sb);

  /* Integers from every msgpack int format. */
  TEXT("5", 0xd0, 0x05);
  TEXT("-128", 0xd0, 0x80);
  TEXT("-32768", 0xd1, 0x80, 0x00);
  TEXT("-2147483648", 0xd2, 0x80, 0x00, 0x00, 0x00);
  TEXT("-9223372036854775808", 0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0);
  TEXT("9223372036854775807", 0xcf, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff);
  TEXT("65535", 0xcd, 0xff, 0xff);
  TEXT("-1", 0xff);
  TEXT("\"ab\"", 0xd9, 0x02, 'a', 'b');
  TEXT("\"ab\"", 0xdb, 0, 0, 0, 0x02, 'a', 'b');
  TEXT("[1]", 0xdd, 0, 0, 0, 1, 0x01);
  TEXT("{\"a\":null}", 0xde, 0, 1, 0xd9, 1, 'a', 0xc0);
  /* A repeated key keeps the last value. */
  TEXT("{\"a\":2}", 0x82, 0xa1, 'a', 0x01, 0xa1, 'a', 0x02);
}

/* ---- refusals ---------------------------------------------------------------------------- */

static void test_refuse_bin_ext(void **state) {
  (void)state;
  REFUSED(0, 0xc4, 0x01, 0x00);             /* bin8 */
  REFUSED(0, 0xc5, 0x00, 0x00);             /* empty bin16 */
  REFUSED(0, 0xd4, 0x01, 0x00);             /* fixext1 */
  REFUSED(0, 0xc7, 0x01, 0x05, 0x00);       /* ext8 */
  REFUSED(0, 0x91, 0xd6, 0xff, 0, 0, 0, 0); /* timestamp32 inside an array */
  REFUSED(0, 0x81, 0xa1, 'a', 0xc4, 0x00);  /* bin as a map value */
}

static void test_refuse_non_string_key(void **state) {
  (void)state;
  REFUSED(0, 0x81, 0x01, 0x01);             /* int key */
  REFUSED(0, 0x81, 0xc0, 0x01);             /* nil key */
  REFUSED(0, 0x81, 0x90, 0x01);             /* array key */
  REFUSED(0, 0x81, 0xc4, 0x01, 'a', 0x01);  /* bin key */
  REFUSED(0, 0x82, 0xa1, 'a', 0x01, 0x02, 0x03);

  /* The msgpack_object walker too. */
  static const unsigned char b[] = {0x81, 0x01, 0x01};
  json_t *v = (json_t *)0x1;
  assert_int_equal(unpack_to_json((const char *)b, sizeof b, &v), HD_EINVAL);
  assert_null(v);
}

static void test_refuse_invalid_utf8(void **state) {
  (void)state;
  REFUSED(0, 0xa2, 0xc3, 0x28);             /* bad continuation */
  REFUSED(0, 0xa2, 0xc0, 0x80);             /* overlong NUL */
  REFUSED(0, 0xa3, 0xe0, 0x80, 0x80);       /* overlong */
  REFUSED(0, 0xa3, 0xed, 0xa0, 0x80);       /* lone surrogate */
  REFUSED(0, 0xa4, 0xf4, 0x90, 0x80, 0x80); /* past U+10FFFF */
  REFUSED(0, 0xa1, 0xff);
  REFUSED(0, 0xa1, 0x80);                   /* stray continuation */
  REFUSED(0, 0xa2, 0xe2, 0x82);             /* cut sequence */
  REFUSED(0, 0x81, 0xa1, 0xff, 0x01);       /* in a key */
  REFUSED(0, 0x91, 0xa1, 0xfe);             /* in an array element */

  static const unsigned char b[] = {0x81, 0xa1, 0xff, 0x01};
  static const unsigned char c[] = {0xa3, 0xed, 0xa0, 0x80};
  json_t *v = NULL;
  assert_int_equal(unpack_to_json((const char *)b, sizeof b, &v), HD_EINVAL);
  assert_int_equal(unpack_to_json((const char *)c, sizeof c, &v), HD_EINVAL);
  assert_null(v);
}

static void test_refuse_uint64_over_int64(void **state) {
  (void)state;
  REFUSED(0, 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff);
  REFUSED(0, 0xcf, 0x80, 0, 0, 0, 0, 0, 0, 0);
  REFUSED(0, 0x91, 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff);

  msgpack_object o = {.type = MSGPACK_OBJECT_POSITIVE_INTEGER, .via.u64 = UINT64_MAX};
  json_t *v = NULL;
  assert_int_equal(hd__codec_msgpack_to_json(&o, &v), HD_EINVAL);
  assert_null(v);
  o.via.u64 = INT64_MAX;
  assert_int_equal(hd__codec_msgpack_to_json(&o, &v), 0);
  assert_true(json_integer_value(v) == INT64_MAX);
  json_decref(v);
}

static void test_refuse_nan_inf(void **state) {
  (void)state;
  REFUSED(0, 0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0); /* NaN: well-formed, not JSON */
  REFUSED(0, 0xcb, 0xff, 0xf0, 0, 0, 0, 0, 0, 0); /* -inf */
  REFUSED(0, 0xca, 0x7f, 0x80, 0x00, 0x00);       /* float32 +inf */
}

static void test_refuse_truncated(void **state) {
  (void)state;
  json_t *v = json_loads("{\"a\":[1,-200,3.5,\"xyz\",{\"b\":null}],\"c\":70000,"
                         "\"d\":\"a string longer than thirty-one bytes........\"}",
                         0, NULL);
  char *mp = NULL;
  size_t mplen = 0;
  assert_non_null(v);
  assert_int_equal(hd__codec_json_to_mpbuf(v, &mp, &mplen), 0);
  for (size_t cut = 0; cut < mplen; cut++) check_refused(mp, cut, HD_EINVAL);
  free(mp);
  json_decref(v);

  REFUSED(HD_EINVAL, 0xda, 0x00, 0x05, 'a');          /* str16 short of its length */
  REFUSED(HD_EINVAL, 0xcb, 0x00);                     /* float64 body missing */
  REFUSED(HD_EINVAL, 0xc4, 0x05, 0x00);               /* bin short */
  REFUSED(HD_EINVAL, 0xd8, 0x00, 0x00);               /* fixext16 short */
  /* Huge declared lengths in a few bytes: refused without allocating. */
  REFUSED(HD_EINVAL, 0xdd, 0xff, 0xff, 0xff, 0xff);
  REFUSED(HD_EINVAL, 0xdf, 0xff, 0xff, 0xff, 0xff, 0xc0);
  REFUSED(HD_EINVAL, 0xdb, 0xff, 0xff, 0xff, 0xff, 'a');
  REFUSED(HD_EINVAL, 0xc6, 0xff, 0xff, 0xff, 0xff);
  REFUSED(HD_EINVAL, 0xc9, 0xff, 0xff, 0xff, 0xff, 0x01);
  REFUSED(HD_EINVAL, 0x82, 0xa1, 'a', 0x01);          /* second pair missing */
}

static void test_refuse_trailing_and_empty(void **state) {
  (void)state;
  REFUSED(HD_EINVAL, 0xc0, 0xc0);
  REFUSED(HD_EINVAL, 0x01, 0x00);
  REFUSED(HD_EINVAL, 0x90, 0x90);
  REFUSED(HD_EINVAL, 0x81, 0xa1, 'a', 0x01, 0xff);
  REFUSED(HD_EINVAL, 0xc1);                           /* never-used byte */
  REFUSED(HD_EINVAL, 0x91, 0xc1);
  check_refused("", 0, HD_EINVAL);
  check_refused(NULL, 0, HD_EINVAL);
}

static void test_bad_arguments(void **state) {
  (void)state;
  char *out = NULL;
  size_t outlen = 0;
  json_t *v = NULL;
  assert_int_equal(hd__codec_json_to_mpbuf(NULL, &out, &outlen), HD_EINVAL);
  assert_null(out);
  assert_int_equal(hd__codec_msgpack_to_json(NULL, &v), HD_EINVAL);
  assert_int_equal(hd__codec_mpbytes_to_json_text("\xc0", 1, NULL, &outlen), HD_EINVAL);
  msgpack_object o = {.type = MSGPACK_OBJECT_BIN};
  assert_int_equal(hd__codec_msgpack_to_json(&o, &v), HD_EINVAL);
  o.type = MSGPACK_OBJECT_EXT;
  assert_int_equal(hd__codec_msgpack_to_json(&o, &v), HD_EINVAL);
  assert_null(v);
}

/* ---- depth cap --------------------------------------------------------------------------- */

static json_t *nested_json(int depth) {
  json_t *v = json_integer(1);
  for (int i = 0; i < depth; i++) {
    json_t *c;
    if (i % 2) {
      c = json_object();
      json_object_set_new(c, "k", v);
    } else {
      c = json_array();
      json_array_append_new(c, v);
    }
    v = c;
  }
  return v;
}

static void test_depth_cap(void **state) {
  (void)state;
  unsigned char buf[HD_CODEC_MAX_DEPTH + 8];
  char *text = NULL, *mp = NULL;
  size_t textlen, mplen;

  /* Bytes: 64 nested arrays decode (beyond msgpack-c's own 32-level stack), 65 do not. */
  memset(buf, 0x91, sizeof buf);
  buf[HD_CODEC_MAX_DEPTH] = 0x2a;
  assert_int_equal(hd__codec_msgpack_validate(buf, HD_CODEC_MAX_DEPTH + 1), 0);
  assert_int_equal(hd__codec_mpbytes_to_json_text(buf, HD_CODEC_MAX_DEPTH + 1, &text, &textlen),
                   0);
  char want64[2 * HD_CODEC_MAX_DEPTH + 3];
  memset(want64, '[', HD_CODEC_MAX_DEPTH);
  memcpy(want64 + HD_CODEC_MAX_DEPTH, "42", 2);
  memset(want64 + HD_CODEC_MAX_DEPTH + 2, ']', HD_CODEC_MAX_DEPTH);
  want64[2 * HD_CODEC_MAX_DEPTH + 2] = '\0';
  assert_string_equal(text, want64);
  assert_int_equal(textlen, strlen(want64));
  free(text);
  buf[HD_CODEC_MAX_DEPTH] = 0x91;
  buf[HD_CODEC_MAX_DEPTH + 1] = 0x2a;
  check_refused(buf, HD_CODEC_MAX_DEPTH + 2, HD_EINVAL);
  /* An empty container at level 65 counts too, and so does a map key. */
  buf[HD_CODEC_MAX_DEPTH] = 0x90;
  check_refused(buf, HD_CODEC_MAX_DEPTH + 1, HD_EINVAL);
  memset(buf, 0x91, sizeof buf);
  buf[HD_CODEC_MAX_DEPTH - 1] = 0x81;
  buf[HD_CODEC_MAX_DEPTH] = 0x90; /* key: array at level 65 (invalid for JSON anyway) */
  buf[HD_CODEC_MAX_DEPTH + 1] = 0xc0;
  check_refused(buf, HD_CODEC_MAX_DEPTH + 2, HD_EINVAL);

  /* JSON -> msgpack applies the same cap. */
  json_t *ok = nested_json(HD_CODEC_MAX_DEPTH), *deep = nested_json(HD_CODEC_MAX_DEPTH + 1);
  assert_int_equal(hd__codec_json_to_mpbuf(ok, &mp, &mplen), 0);
  assert_int_equal(hd__codec_mpbytes_to_json_text(mp, mplen, &text, &textlen), 0);
  char *want = dump_compact(ok);
  assert_string_equal(text, want);
  free(want);
  free(text);
  free(mp);
  mp = NULL;
  assert_int_equal(hd__codec_json_to_mpbuf(deep, &mp, &mplen), HD_EINVAL);
  assert_null(mp);
  json_decref(ok);
  json_decref(deep);

  /* msgpack_object walker: a hand-built chain, since msgpack-c cannot unpack it. */
  msgpack_object chain[HD_CODEC_MAX_DEPTH + 2];
  json_t *v = NULL;
  for (int i = 0; i <= HD_CODEC_MAX_DEPTH; i++) {
    chain[i].type = MSGPACK_OBJECT_ARRAY;
    chain[i].via.array.size = 1;
    chain[i].via.array.ptr = &chain[i + 1];
  }
  chain[HD_CODEC_MAX_DEPTH + 1].type = MSGPACK_OBJECT_NIL;
  assert_int_equal(hd__codec_msgpack_to_json(&chain[1], &v), 0); /* 64 levels */
  json_decref(v);
  v = NULL;
  assert_int_equal(hd__codec_msgpack_to_json(&chain[0], &v), HD_EINVAL); /* 65 */
  assert_null(v);
}

/* ---- differential checks and fuzzing ----------------------------------------------------- */

static uint64_t rng_next(uint64_t *s) { /* xorshift64*, local state: deterministic */
  *s ^= *s >> 12;
  *s ^= *s << 25;
  *s ^= *s >> 27;
  return *s * 0x2545F4914F6CDD1DULL;
}

/* Our UTF-8 check must agree exactly with jansson's json_stringn(). */
static void test_utf8_matches_jansson(void **state) {
  (void)state;
  uint64_t seed = 0x5eed0001;
  unsigned char buf[1 + 8];
  for (int iter = 0; iter < 200000; iter++) {
    size_t n = 1 + rng_next(&seed) % 6;
    buf[0] = (unsigned char)(0xa0 | n);
    for (size_t i = 0; i < n; i++) {
      uint64_t r = rng_next(&seed);
      /* Bias towards the interesting lead and continuation bytes. */
      buf[1 + i] = (r & 0x300) ? (unsigned char)(0x80 | (r & 0x7f)) : (unsigned char)r;
    }
    json_t *j = json_stringn((const char *)buf + 1, n);
    char *text = NULL;
    size_t textlen;
    int rc = hd__codec_mpbytes_to_json_text(buf, n + 1, &text, &textlen);
    if ((rc == 0) != (j != NULL))
      fail_msg("utf8 disagreement on %zu bytes starting %02x: codec %d, jansson %s", n, buf[1],
               rc, j ? "ok" : "refused");
    free(text);
    json_decref(j);
  }
}

static void fuzz_one(const unsigned char *buf, size_t len, int *n_ok) {
  char *text = NULL;
  size_t textlen = 0;
  int rv = hd__codec_msgpack_validate(buf, len);
  int rt = hd__codec_mpbytes_to_json_text(buf, len, &text, &textlen);

  if (rv != 0 && rv != HD_EINVAL) fail_msg("validate returned %d", rv);
  if (rt != 0 && rt != HD_EINVAL) fail_msg("to_json_text returned %d", rt);
  if (rt == 0) {
    assert_int_equal(rv, 0); /* representable implies well-formed */
    assert_non_null(text);
    assert_int_equal(strlen(text), textlen);
    (*n_ok)++;
  } else {
    assert_null(text);
  }

  /* When we call it well-formed, msgpack-c must agree and the object walker must produce the
   * same JSON. (Only then: on hostile counts msgpack-c itself would reserve gigabytes.) */
  if (rv == 0) {
    msgpack_unpacked u;
    size_t off = 0;
    msgpack_unpacked_init(&u);
    int mrc = msgpack_unpack_next(&u, (const char *)buf, len, &off);
    if (mrc != MSGPACK_UNPACK_NOMEM_ERROR) { /* msgpack-c's 32-level stack */
      assert_int_equal(mrc, MSGPACK_UNPACK_SUCCESS);
      assert_int_equal(off, len);
      json_t *v = (json_t *)0x1;
      int ro = hd__codec_msgpack_to_json(&u.data, &v);
      assert_int_equal(ro, rt);
      if (ro == 0) {
        char *t2 = dump_compact(v);
        assert_string_equal(t2, text);
        free(t2);
        json_decref(v);
      } else {
        assert_null(v);
      }
    }
    msgpack_unpacked_destroy(&u);
  }
  free(text);
}

static void test_fuzz_mutations(void **state) {
  (void)state;
  const char *corpus_json[] = {
      ("{\"id\":\"m-1\",\"n\":42,\"x\":-7,\"pi\":3.25,\"ok\":true,\"nil\":null,"
       "\"list\":[1,2,[3,{\"deep\":\"\\u00e9\\ud83d\\ude00\"}]],\"big\":9223372036854775807}"),
      "[0,-1,128,-129,65536,-2147483649,1.5,\"a string longer than thirty-one bytes..\",{}]",
      "{\"title\":\"hello\",\"body\":{\"text\":\"x\",\"tags\":[\"a\",\"b\",\"c\"]},\"ttl\":3600}",
      "\"just a string\"",
  };
  unsigned char *corpus[8];
  size_t corpus_len[8], ncorpus = 0;
  for (size_t i = 0; i < sizeof corpus_json / sizeof corpus_json[0]; i++) {
    json_t *v = json_loads(corpus_json[i], JSON_DECODE_ANY, NULL);
    char *mp;
    assert_non_null(v);
    assert_int_equal(hd__codec_json_to_mpbuf(v, &mp, &corpus_len[ncorpus]), 0);
    corpus[ncorpus++] = (unsigned char *)mp;
    json_decref(v);
  }
  /* Hand-written msgpack with types JSON never produces. */
  static const unsigned char extra[] = {0x84, 0xa1, 'b', 0xc4, 0x02, 0x01, 0x02, 0xa1, 'e', 0xd6,
                                        0x01, 0, 0, 0, 0, 0xa1, 'f', 0xca, 0x3f, 0x80, 0x00,
                                        0x00, 0x01, 0xcf, 0, 0, 0, 0, 0, 0, 0, 9};
  corpus[ncorpus] = malloc(sizeof extra);
  memcpy(corpus[ncorpus], extra, sizeof extra);
  corpus_len[ncorpus++] = sizeof extra;

  uint64_t seed = 0x48657261ULL; /* fixed: failures reproduce */
  int n_ok = 0;
  unsigned char buf[512];
  for (int iter = 0; iter < 10000; iter++) {
    size_t ci = rng_next(&seed) % ncorpus;
    size_t len = corpus_len[ci];
    assert_true(len + 8 <= sizeof buf);
    memcpy(buf, corpus[ci], len);
    int nmut = 1 + (int)(rng_next(&seed) % 4);
    for (int m = 0; m < nmut; m++) {
      uint64_t r = rng_next(&seed);
      switch (r % 8) {
      case 0: /* truncate */
        len = (size_t)(r >> 8) % (len + 1);
        break;
      case 1: /* append a byte */
        buf[len++] = (unsigned char)(r >> 8);
        break;
      case 2: /* turn a byte into a container/str/bin header */
        if (len) buf[(r >> 16) % len] = (unsigned char)(0xc4 + (r >> 8) % 28);
        break;
      default: /* random byte */
        if (len) buf[(r >> 16) % len] = (unsigned char)(r >> 8);
        break;
      }
    }
    fuzz_one(buf, len, &n_ok);
  }
  /* Unmutated corpus items must all be well-formed. */
  for (size_t i = 0; i < ncorpus; i++) {
    assert_int_equal(hd__codec_msgpack_validate(corpus[i], corpus_len[i]), 0);
    fuzz_one(corpus[i], corpus_len[i], &n_ok);
    free(corpus[i]);
  }
  assert_true(n_ok > 0); /* the loop must exercise the success path too */
}

/* hd_mp: integers >= 0 are HD_MP_UINT in every encoding (as msgpack-c's POSITIVE_INTEGER),
 * negatives HD_MP_NINT; str/bin/ext hand out their bytes; containers their counts; skip steps
 * over a whole value and says where it was; a truncated value or 0xc1 is HD_EINVAL. */
/* The next value is an integer of this kind and value (UINT in v.u, NINT in v.i). */
static void next_int(hd_mp *r, enum hd_mp_kind kind, int64_t want) {
  hd_mp_val v;
  assert_int_equal(hd__mp_next(r, &v), 0);
  assert_int_equal(v.kind, kind);
  if (kind == HD_MP_UINT) assert_int_equal(v.u, (uint64_t)want);
  else assert_int_equal(v.i, want);
}

static void test_mp_reader(void **state) {
  (void)state;
  static const unsigned char b[] = {
      0x05,                               /* fixint 5 */
      0xd0, 0x07,                         /* int8 7 */
      0xd1, 0xff, 0xfe,                   /* int16 -2 */
      0xcf, 0, 0, 0, 0, 0, 0, 1, 0,       /* uint64 256 */
      0xff,                               /* fixint -1 */
      0xa2, 'h', 'i',                     /* "hi" */
      0xc4, 0x01, 0x00,                   /* bin 1 */
      0xd4, 0x09, 0x2a,                   /* fixext 1, type 9 */
      0x82, 0xa1, 'a', 0x91, 0xc0, 0xa1, 'b', 0xc3, /* {"a": [nil], "b": true} */
      0xc0,
  };
  hd_mp r = {b, b + sizeof b};
  hd_mp_val v;
  next_int(&r, HD_MP_UINT, 5);
  next_int(&r, HD_MP_UINT, 7);
  next_int(&r, HD_MP_NINT, -2);
  next_int(&r, HD_MP_UINT, 256);
  next_int(&r, HD_MP_NINT, -1);
  assert_int_equal(hd__mp_next(&r, &v), 0);
  assert_int_equal(v.kind, HD_MP_STR);
  assert_int_equal(v.n, 2);
  assert_memory_equal(v.s, "hi", 2);
  assert_int_equal(hd__mp_next(&r, &v), 0);
  assert_int_equal(v.kind, HD_MP_BIN);
  assert_int_equal(v.n, 1);
  assert_int_equal(hd__mp_next(&r, &v), 0);
  assert_int_equal(v.kind, HD_MP_EXT);
  assert_int_equal(v.n, 1);
  assert_int_equal(v.s[0], 0x2a);
  const unsigned char *at = NULL;
  size_t n = 0;
  const unsigned char *map = r.p;
  assert_int_equal(hd__mp_skip(&r, 0, &at, &n), 0);
  assert_ptr_equal(at, map);
  assert_int_equal(n, 8);
  /* The depth cap counts from where the value sits: a map holding an array is two levels. */
  hd_mp deep = {map, map + 8};
  assert_int_equal(hd__mp_skip(&deep, HD_CODEC_MAX_DEPTH - 2, &at, &n), 0);
  deep = (hd_mp){map, map + 8};
  assert_int_equal(hd__mp_skip(&deep, HD_CODEC_MAX_DEPTH - 1, &at, &n), HD_EINVAL);
  at = NULL;
  n = 0;
  assert_int_equal(hd__mp_next(&r, &v), 0);
  assert_int_equal(v.kind, HD_MP_NIL);
  assert_ptr_equal(r.p, b + sizeof b);
  assert_int_equal(hd__mp_next(&r, &v), HD_EINVAL); /* nothing left */

  r = (hd_mp){map, map + 8};
  assert_int_equal(hd__mp_next(&r, &v), 0);
  assert_int_equal(v.kind, HD_MP_MAP);
  assert_int_equal(v.n, 2);
  assert_int_equal(hd__mp_next(&r, &v), 0); /* "a" */
  assert_int_equal(hd__mp_next(&r, &v), 0);
  assert_int_equal(v.kind, HD_MP_ARRAY);
  assert_int_equal(v.n, 1);

  static const unsigned char trunc[] = {0xda, 0x00, 0x05, 'a', 'b'}; /* str16 of 5, 2 there */
  r = (hd_mp){trunc, trunc + sizeof trunc};
  const unsigned char *p0 = r.p;
  assert_int_equal(hd__mp_next(&r, &v), HD_EINVAL);
  assert_ptr_equal(r.p, p0); /* nothing taken */
  assert_int_equal(hd__mp_skip(&r, 0, &at, &n), HD_EINVAL);
  static const unsigned char never[] = {0xc1};
  r = (hd_mp){never, never + 1};
  assert_int_equal(hd__mp_next(&r, &v), HD_EINVAL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_mp_reader),
      cmocka_unit_test(test_roundtrip_scalars),
      cmocka_unit_test(test_roundtrip_reals),
      cmocka_unit_test(test_roundtrip_unicode),
      cmocka_unit_test(test_roundtrip_nested),
      cmocka_unit_test(test_exact_encoding_and_key_order),
      cmocka_unit_test(test_refuse_bin_ext),
      cmocka_unit_test(test_refuse_non_string_key),
      cmocka_unit_test(test_refuse_invalid_utf8),
      cmocka_unit_test(test_refuse_uint64_over_int64),
      cmocka_unit_test(test_refuse_nan_inf),
      cmocka_unit_test(test_refuse_truncated),
      cmocka_unit_test(test_refuse_trailing_and_empty),
      cmocka_unit_test(test_bad_arguments),
      cmocka_unit_test(test_depth_cap),
      cmocka_unit_test(test_utf8_matches_jansson),
      cmocka_unit_test(test_fuzz_mutations),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
