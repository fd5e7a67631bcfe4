/* test_client_proto.c — the ipconn client library (clients/libherald): the bounded msgpack
 * reader and writer at every encoding boundary; every frame builder decoded back; the
 * decoder's refusals (missing fields, limits, truncation at every length, trailing bytes,
 * nesting past the cap); the hex examples of docs/protocols/ipconn.md; the splitter fed one
 * byte at a time, its limits and its memory (nothing kept between frames, growth only by
 * bytes received); backoff bounds; and hdc_conn against a scripted fake broker on loopback:
 * hello, welcome, messages, acks, pings, deny and goaway reasons, refused connections. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "hdc_client.h"
#include "hdc_proto.h"

/* ---- helpers ---- */
static void frame_body(const hdc_buf *b, const uint8_t **body, size_t *len) {
  assert_true(b->len >= HDC_HEADER);
  uint32_t n = (uint32_t)b->p[0] << 24 | (uint32_t)b->p[1] << 16 | (uint32_t)b->p[2] << 8 |
               b->p[3];
  assert_int_equal(n, b->len - HDC_HEADER);
  *body = b->p + HDC_HEADER;
  *len = n;
}

static void decode_ok(const hdc_buf *b, hdc_frame *f) {
  const uint8_t *body;
  size_t len;
  frame_body(b, &body, &len);
  assert_int_equal(hdc_frame_decode(body, len, f), 0);
}

static size_t unhex(const char *hex, uint8_t *out, size_t cap) {
  size_t n = 0;
  for (const char *p = hex; *p && n < cap;) {
    if (*p == ' ' || *p == '\n') {
      p++;
      continue;
    }
    unsigned v;
    assert_int_equal(sscanf(p, "%2x", &v), 1);
    out[n++] = (uint8_t)v;
    p += 2;
  }
  return n;
}

/* ---- msgpack ---- */
static void test_uint_roundtrip_every_width(void **state) {
  const uint64_t vals[] = {0,          1,          127,         128,
                           255,        256,        65535,       65536,
                           UINT32_MAX, 1ull << 32, INT64_MAX,   (uint64_t)INT64_MAX + 1,
                           UINT64_MAX};
  const size_t sizes[] = {1, 1, 1, 2, 2, 3, 3, 5, 5, 9, 9, 9, 9};
  for (size_t i = 0; i < sizeof vals / sizeof *vals; i++) {
    hdc_buf b = {0};
    assert_int_equal(hdc_mp_uint(&b, vals[i]), 0);
    assert_int_equal(b.len, sizes[i]);
    hdc_rd r = {b.p, b.p + b.len};
    uint64_t v = 0;
    assert_int_equal(hdc_rd_uint(&r, &v), 0);
    assert_true(v == vals[i]);
    assert_ptr_equal(r.p, r.end);
    hdc_buf_free(&b);
  }
}

static void test_int_roundtrip_and_sign(void **state) {
  const int64_t vals[] = {0, -1, -32, -33, -128, -129, -32768, -32769, INT32_MIN,
                          (int64_t)INT32_MIN - 1, INT64_MIN, 5, INT64_MAX};
  for (size_t i = 0; i < sizeof vals / sizeof *vals; i++) {
    hdc_buf b = {0};
    assert_int_equal(hdc_mp_int(&b, vals[i]), 0);
    hdc_rd r = {b.p, b.p + b.len};
    int64_t v = 1;
    assert_int_equal(hdc_rd_int(&r, &v), 0);
    assert_true(v == vals[i]);
    /* A negative number is not a uint, and the reader does not move on a refusal. */
    hdc_rd r2 = {b.p, b.p + b.len};
    uint64_t u;
    if (vals[i] < 0) {
      assert_int_equal(hdc_rd_uint(&r2, &u), HDC_ETYPE);
      assert_ptr_equal(r2.p, b.p);
    }
    hdc_buf_free(&b);
  }
  /* uint64 above INT64_MAX is not an int64 */
  hdc_buf b = {0};
  hdc_mp_uint(&b, UINT64_MAX);
  hdc_rd r = {b.p, b.p + b.len};
  int64_t v;
  assert_int_equal(hdc_rd_int(&r, &v), HDC_ETYPE);
  hdc_buf_free(&b);
}

static void test_str_roundtrip_every_width(void **state) {
  const size_t lens[] = {0, 1, 31, 32, 255, 256, 65535, 65536};
  const size_t hdr[] = {1, 1, 1, 2, 2, 3, 3, 5};
  char *s = malloc(65536);
  memset(s, 'x', 65536);
  for (size_t i = 0; i < sizeof lens / sizeof *lens; i++) {
    hdc_buf b = {0};
    assert_int_equal(hdc_mp_str(&b, s, lens[i]), 0);
    assert_int_equal(b.len, lens[i] + hdr[i]);
    hdc_rd r = {b.p, b.p + b.len};
    const char *p;
    uint32_t n;
    assert_int_equal(hdc_rd_str(&r, &p, &n), 0);
    assert_int_equal(n, lens[i]);
    assert_ptr_equal(r.p, r.end);
    /* cut one byte short: truncated, never a read past the end */
    hdc_rd t = {b.p, b.p + b.len - 1};
    assert_int_equal(hdc_rd_str(&t, &p, &n), HDC_ETRUNC);
    hdc_buf_free(&b);
  }
  free(s);
}

static void test_skip_every_type(void **state) {
  /* nil false true fixint negfixint u8 u16 u32 u64 i8 i16 i32 i64 f32 f64 str8 bin8 bin16
   * fixext1 fixext16 ext8 array16 map32 */
  const char *hex =
      "c0 c2 c3 05 ff cc01 cd0102 ce01020304 cf0102030405060708 d0ff d1ffff d2ffffffff "
      "d3ffffffffffffffff ca3f800000 cb3ff0000000000000 d903616263 c4020102 c5000101 "
      "d40101 d801000102030405060708090a0b0c0d0e0f c7020101 02 dc000201 02 df00000001a16101";
  uint8_t buf[256];
  size_t n = unhex(hex, buf, sizeof buf);
  hdc_rd r = {buf, buf + n};
  int values = 0;
  while (r.p < r.end) {
    assert_int_equal(hdc_rd_skip(&r, NULL, NULL), 0);
    values++;
  }
  assert_int_equal(values, 23);
  uint8_t never = 0xc1;
  hdc_rd bad = {&never, &never + 1};
  assert_int_equal(hdc_rd_skip(&bad, NULL, NULL), HDC_EPROTO);
}

static void test_skip_depth_cap_and_huge_counts(void **state) {
  uint8_t deep[70];
  memset(deep, 0x91, sizeof deep); /* [[[[...]]]] */
  deep[HDC_MAX_DEPTH] = 0xc0;
  /* HDC_MAX_DEPTH arrays around nil: accepted */
  assert_int_equal(hdc_mp_validate(deep, HDC_MAX_DEPTH + 1), 0);
  deep[HDC_MAX_DEPTH] = 0x91;
  deep[HDC_MAX_DEPTH + 1] = 0xc0;
  assert_int_equal(hdc_mp_validate(deep, HDC_MAX_DEPTH + 2), HDC_EPROTO);
  /* An array declaring 4 billion elements in 5 bytes is refused at once, without walking. */
  const uint8_t huge[] = {0xdd, 0xff, 0xff, 0xff, 0xff};
  assert_int_equal(hdc_mp_validate(huge, sizeof huge), HDC_ETRUNC);
  const uint8_t hugemap[] = {0xdf, 0x80, 0, 0, 0, 0xc0};
  assert_int_equal(hdc_mp_validate(hugemap, sizeof hugemap), HDC_ETRUNC);
  /* a string longer than the buffer */
  const uint8_t longstr[] = {0xdb, 0, 0, 1, 0, 'a'};
  assert_int_equal(hdc_mp_validate(longstr, sizeof longstr), HDC_ETRUNC);
  /* trailing bytes after the one value */
  const uint8_t two[] = {0x01, 0x02};
  assert_int_equal(hdc_mp_validate(two, sizeof two), HDC_EPROTO);
}

/* ---- frames ---- */
static void test_hello_roundtrip(void **state) {
  hdc_buf b = {0};
  assert_int_equal(hdc_enc_hello(&b, "phone-1", "default", "default.1.abc", "agent/1"), 0);
  hdc_frame f;
  decode_ok(&b, &f);
  assert_int_equal(f.type, HDC_T_HELLO);
  assert_int_equal(f.v, HDC_PROTO_VERSION);
  assert_true(hdc_str_eq(f.device, "phone-1"));
  assert_true(hdc_str_eq(f.tenant, "default"));
  assert_true(hdc_str_eq(f.token, "default.1.abc"));
  assert_true(hdc_str_eq(f.agent, "agent/1"));
  hdc_buf_free(&b);
  assert_int_equal(hdc_enc_hello(&b, "d", "t", "k", NULL), 0);
  decode_ok(&b, &f);
  assert_null(f.agent.p);
  hdc_buf_free(&b);
  assert_int_equal(hdc_enc_hello(&b, NULL, "t", "k", NULL), HDC_EINVAL);
  assert_int_equal(b.len, 0);
}

static void test_welcome_deny_goaway_roundtrip(void **state) {
  hdc_buf b = {0};
  hdc_frame f;
  assert_int_equal(hdc_enc_welcome(&b, 30, 90, 64, 65536), 0);
  decode_ok(&b, &f);
  assert_int_equal(f.type, HDC_T_WELCOME);
  assert_int_equal(f.heartbeat, 30);
  assert_int_equal(f.idle, 90);
  assert_int_equal(f.window, 64);
  assert_int_equal(f.max_frame, 65536);
  hdc_buf_free(&b);

  assert_int_equal(hdc_enc_deny(&b, "throttled", "slow down", 8), 0);
  decode_ok(&b, &f);
  assert_int_equal(f.type, HDC_T_DENY);
  assert_true(hdc_str_eq(f.code, "throttled"));
  assert_true(hdc_str_eq(f.text, "slow down"));
  assert_int_equal(f.retry, 8);
  hdc_buf_free(&b);
  assert_int_equal(hdc_enc_deny(&b, "auth", NULL, -1), 0);
  decode_ok(&b, &f);
  assert_int_equal(f.retry, -1);
  assert_null(f.text.p);
  hdc_buf_free(&b);

  assert_int_equal(hdc_enc_goaway(&b, "shutdown", "restart", 5, "10.0.0.2:8473"), 0);
  decode_ok(&b, &f);
  assert_int_equal(f.type, HDC_T_GOAWAY);
  assert_true(hdc_str_eq(f.code, "shutdown"));
  assert_true(hdc_str_eq(f.alt, "10.0.0.2:8473"));
  assert_int_equal(f.retry, 5);
  char alt[8];
  assert_string_equal(hdc_str_copy(f.alt, alt, sizeof alt), "10.0.0."); /* truncated, terminated */
  hdc_buf_free(&b);
}

static void test_msg_roundtrip_with_raw_payload(void **state) {
  hdc_buf p = {0}, b = {0};
  hdc_mp_map(&p, 2);
  hdc_mp_cstr(&p, "kind");
  hdc_mp_cstr(&p, "release");
  hdc_mp_cstr(&p, "n");
  hdc_mp_array(&p, 3);
  hdc_mp_uint(&p, 1);
  hdc_mp_nil(&p);
  hdc_mp_bool(&p, 1);
  assert_int_equal(hdc_enc_msg(&b, 1ull << 40, "news", 1700000000000, 1700000060000,
                               "phone-1", p.p, p.len), 0);
  hdc_frame f;
  decode_ok(&b, &f);
  assert_int_equal(f.type, HDC_T_MSG);
  assert_true(f.id == 1ull << 40);
  assert_true(hdc_str_eq(f.app, "news"));
  assert_true(hdc_str_eq(f.to, "phone-1"));
  assert_true(f.created == 1700000000000);
  assert_true(f.expires == 1700000060000);
  assert_int_equal(f.data_len, p.len);
  assert_memory_equal(f.data, p.p, p.len);
  hdc_buf_free(&b);
  /* broadcast: no "to"; an empty payload goes out as nil */
  assert_int_equal(hdc_enc_msg(&b, 7, "news", 1, 2, NULL, NULL, 0), 0);
  decode_ok(&b, &f);
  assert_null(f.to.p);
  assert_int_equal(f.data_len, 1);
  assert_int_equal(f.data[0], 0xc0);
  hdc_buf_free(&b);
  hdc_buf_free(&p);
}

static void test_ack_limits(void **state) {
  uint64_t ids[HDC_MAX_ACK_IDS + 1], out[HDC_MAX_ACK_IDS];
  for (size_t i = 0; i < HDC_MAX_ACK_IDS + 1; i++) ids[i] = (uint64_t)i * 1000003u + 1;
  hdc_buf b = {0};
  hdc_frame f;
  assert_int_equal(hdc_enc_ack(&b, ids, HDC_MAX_ACK_IDS), 0);
  decode_ok(&b, &f);
  assert_int_equal(f.type, HDC_T_ACK);
  assert_int_equal(f.nids, HDC_MAX_ACK_IDS);
  assert_int_equal(hdc_frame_ids(&f, out, HDC_MAX_ACK_IDS), HDC_MAX_ACK_IDS);
  assert_memory_equal(out, ids, sizeof out);
  assert_int_equal(hdc_frame_ids(&f, out, 3), 3); /* caps at the caller's room */
  hdc_buf_free(&b);
  assert_int_equal(hdc_enc_ack(&b, ids, 0), HDC_EINVAL);
  assert_int_equal(hdc_enc_ack(&b, ids, HDC_MAX_ACK_IDS + 1), HDC_EINVAL);
  assert_int_equal(b.len, 0);
  assert_int_equal(hdc_enc_acked(&b, ids, 2), 0);
  decode_ok(&b, &f);
  assert_int_equal(f.type, HDC_T_ACKED);
  hdc_buf_free(&b);
  /* A hand-made ack of 1001 ids is refused by the decoder. */
  hdc_buf_free(&b);
  hdc_mp_map(&b, 2);
  hdc_mp_cstr(&b, "t");
  hdc_mp_cstr(&b, "ack");
  hdc_mp_cstr(&b, "ids");
  hdc_mp_array(&b, HDC_MAX_ACK_IDS + 1);
  for (size_t i = 0; i < HDC_MAX_ACK_IDS + 1; i++) hdc_mp_uint(&b, 1);
  assert_int_equal(hdc_frame_decode(b.p, b.len, &f), HDC_EPROTO);
  hdc_buf_free(&b);
}

static void test_ping_pong_unknown(void **state) {
  hdc_buf b = {0};
  hdc_frame f;
  hdc_enc_ping(&b, 42);
  decode_ok(&b, &f);
  assert_int_equal(f.type, HDC_T_PING);
  assert_int_equal(f.n, 42);
  hdc_buf_free(&b);
  hdc_enc_pong(&b, 0);
  decode_ok(&b, &f);
  assert_int_equal(f.type, HDC_T_PONG);
  assert_int_equal(f.n, 0);
  hdc_buf_free(&b);
  /* a type from a later version, with a key nobody knows: decodes, to be ignored */
  hdc_mp_map(&b, 2);
  hdc_mp_cstr(&b, "t");
  hdc_mp_cstr(&b, "resume");
  hdc_mp_cstr(&b, "whatever");
  hdc_mp_map(&b, 1);
  hdc_mp_cstr(&b, "x");
  hdc_mp_array(&b, 0);
  assert_int_equal(hdc_frame_decode(b.p, b.len, &f), 0);
  assert_int_equal(f.type, HDC_T_UNKNOWN);
  assert_true(hdc_str_eq(f.type_name, "resume"));
  assert_string_equal(hdc_type_name(HDC_T_GOAWAY), "goaway");
  hdc_buf_free(&b);
}

static void test_decoder_refusals(void **state) {
  hdc_frame f;
  uint8_t buf[600];
  /* not a map */
  assert_int_equal(hdc_frame_decode((const uint8_t *)"\x91\x01", 2, &f), HDC_EPROTO);
  /* no "t" */
  assert_int_equal(hdc_frame_decode((const uint8_t *)"\x81\xa1v\x01", 4, &f), HDC_EPROTO);
  /* "t" not a string */
  assert_int_equal(hdc_frame_decode((const uint8_t *)"\x81\xa1t\x01", 4, &f), HDC_ETYPE);
  /* hello without its token */
  hdc_buf b = {0};
  hdc_mp_map(&b, 4);
  hdc_mp_cstr(&b, "t");
  hdc_mp_cstr(&b, "hello");
  hdc_mp_cstr(&b, "v");
  hdc_mp_uint(&b, 1);
  hdc_mp_cstr(&b, "device");
  hdc_mp_cstr(&b, "d");
  hdc_mp_cstr(&b, "tenant");
  hdc_mp_cstr(&b, "t");
  assert_int_equal(hdc_frame_decode(b.p, b.len, &f), HDC_EPROTO);
  hdc_buf_free(&b);
  /* a device id over 128 bytes, and one with a NUL in it */
  memset(buf, 'a', sizeof buf);
  buf[129] = 0;
  char longid[130];
  memcpy(longid, buf, 130);
  assert_int_equal(hdc_enc_hello(&b, longid, "t", "k", NULL), 0);
  const uint8_t *body;
  size_t len;
  frame_body(&b, &body, &len);
  assert_int_equal(hdc_frame_decode(body, len, &f), HDC_EPROTO);
  hdc_buf_free(&b);
  hdc_mp_map(&b, 5);
  hdc_mp_cstr(&b, "t");
  hdc_mp_cstr(&b, "hello");
  hdc_mp_cstr(&b, "v");
  hdc_mp_uint(&b, 1);
  hdc_mp_cstr(&b, "device");
  hdc_mp_str(&b, "a\0b", 3);
  hdc_mp_cstr(&b, "tenant");
  hdc_mp_cstr(&b, "t");
  hdc_mp_cstr(&b, "token");
  hdc_mp_cstr(&b, "k");
  assert_int_equal(hdc_frame_decode(b.p, b.len, &f), HDC_EPROTO);
  hdc_buf_free(&b);
  /* msg with id 0, and msg without data */
  hdc_enc_msg(&b, 0, "a", 1, 2, NULL, "\xc0", 1);
  frame_body(&b, &body, &len);
  assert_int_equal(hdc_frame_decode(body, len, &f), HDC_EPROTO);
  hdc_buf_free(&b);
  /* trailing garbage after the map */
  hdc_enc_ping(&b, 0);
  hdc_mp_nil(&b);
  assert_int_equal(hdc_frame_decode(b.p + HDC_HEADER, b.len - HDC_HEADER, &f), HDC_EPROTO);
  hdc_buf_free(&b);
}

static void test_truncation_at_every_length(void **state) {
  hdc_buf b = {0};
  hdc_enc_msg(&b, 99, "app", 1, 2, "dev", "\x82\xa1" "a\x01\xa1" "b\x92\x01\x02", 9);
  const uint8_t *body;
  size_t len;
  frame_body(&b, &body, &len);
  hdc_frame f;
  for (size_t n = 0; n < len; n++) {
    uint8_t *copy = malloc(n ? n : 1); /* exact size: ASan catches any read past it */
    memcpy(copy, body, n);
    int rc = hdc_frame_decode(copy, n, &f);
    if (rc != HDC_ETRUNC && rc != HDC_EPROTO) fail_msg("length %zu: %s", n, hdc_strerror(rc));
    free(copy);
  }
  assert_int_equal(hdc_frame_decode(body, len, &f), 0);
  hdc_buf_free(&b);
}

/* The examples in docs/protocols/ipconn.md, byte for byte (generated there with Python's
 * msgpack, an independent implementation). */
static void check_example(const char *hex, hdc_buf *b) {
  uint8_t buf[512];
  size_t n = unhex(hex, buf, sizeof buf);
  assert_int_equal(b->len, n);
  assert_memory_equal(b->p, buf, n);
  hdc_frame f;
  assert_int_equal(hdc_frame_decode(buf + HDC_HEADER, n - HDC_HEADER, &f), 0);
  hdc_buf_free(b);
}

static void test_documented_examples(void **state) {
  hdc_buf b = {0};
  uint64_t ids[] = {42, 43};
  hdc_enc_hello(&b, "phone-1", "default", "default.1.abCd", NULL);
  check_example("0000003f 85 a174 a568656c6c6f a176 01 a6646576696365 a770686f6e652d31"
                " a674656e616e74 a764656661756c74 a5746f6b656e ae64656661756c742e312e61624364",
                &b);
  hdc_enc_welcome(&b, 30, 90, 64, 65536);
  check_example("00000036 86 a174 a777656c636f6d65 a176 01 a9686561727462656174 1e"
                " a469646c65 5a a677696e646f77 40 a96d61785f6672616d65 ce00010000",
                &b);
  hdc_enc_msg(&b, 42, "news", 1700000000000, 1700003600000, NULL, "\x81\xa5title\xa2hi", 10);
  check_example("00000045 86 a174 a36d7367 a26964 2a a3617070 a46e657773"
                " a763726561746564 cf0000018bcfe56800 a765787069726573 cf0000018bd01c5680"
                " a464617461 81 a57469746c65 a26869",
                &b);
  hdc_enc_ack(&b, ids, 2);
  check_example("0000000e 82 a174 a361636b a3696473 92 2a 2b", &b);
  hdc_enc_acked(&b, ids, 2);
  check_example("00000010 82 a174 a561636b6564 a3696473 92 2a 2b", &b);
  hdc_enc_deny(&b, "auth", "unknown device or wrong token", -1);
  check_example("00000038 84 a174 a464656e79 a176 01 a4636f6465 a461757468 a474657874"
                " bd756e6b6e6f776e20646576696365206f722077726f6e6720746f6b656e",
                &b);
  hdc_enc_ping(&b, 7);
  check_example("0000000b 82 a174 a470696e67 a16e 07", &b);
  hdc_enc_pong(&b, 7);
  check_example("0000000b 82 a174 a4706f6e67 a16e 07", &b);
  hdc_enc_goaway(&b, "shutdown", "the broker is restarting", 5, NULL);
  check_example("0000003d 84 a174 a6676f61776179 a4636f6465 a873687574646f776e a474657874"
                " b87468652062726f6b65722069732072657374617274696e67 a5726574727905",
                &b);
}

/* ---- splitter ---- */
typedef struct got {
  int n;
  size_t lens[8];
  uint8_t first[8];
  int stop_after;
} got;

static int collect(void *ud, const uint8_t *body, size_t len) {
  got *g = ud;
  g->lens[g->n] = len;
  g->first[g->n] = body[0];
  g->n++;
  return g->stop_after && g->n == g->stop_after ? 7 : 0;
}

static void three_frames(hdc_buf *b) {
  uint8_t big[3000];
  memset(big, 'z', sizeof big);
  hdc_enc_ping(b, 1);
  hdc_enc_msg(b, 5, "a", 1, 2, NULL, NULL, 0);
  int64_t at = hdc_frame_begin(b);
  hdc_mp_str(b, (const char *)big, sizeof big);
  hdc_frame_end(b, at);
}

static void test_framer_byte_by_byte(void **state) {
  hdc_buf b = {0};
  three_frames(&b);
  for (size_t chunk = 1; chunk <= b.len; chunk = chunk < 16 ? chunk + 1 : chunk * 3) {
    hdc_framer fr = {0};
    got g = {0};
    for (size_t off = 0; off < b.len; off += chunk) {
      size_t n = b.len - off < chunk ? b.len - off : chunk;
      assert_int_equal(hdc_framer_feed(&fr, b.p + off, n, 1 << 20, collect, &g), 0);
    }
    assert_int_equal(g.n, 3);
    assert_int_equal(g.first[0], 0x82);                 /* ping {t, n} */
    assert_int_equal(g.first[1], 0x86);                 /* msg, 6 keys */
    assert_int_equal(g.lens[2], 3003);                  /* str16 header + 3000 */
    assert_null(fr.buf);                                /* nothing kept between frames */
    assert_int_equal(hdc_framer_pending(&fr), 0);
  }
  hdc_buf_free(&b);
}

static void test_framer_limits_and_memory(void **state) {
  hdc_framer fr = {0};
  got g = {0};
  /* a prefix over the limit */
  const uint8_t big[] = {0, 0, 0x10, 0x01};
  assert_int_equal(hdc_framer_feed(&fr, big, 4, 4096, collect, &g), HDC_ETOOBIG);
  hdc_framer_free(&fr);
  /* ... also when it arrives split */
  assert_int_equal(hdc_framer_feed(&fr, big, 2, 4096, collect, &g), 0);
  assert_int_equal(hdc_framer_feed(&fr, big + 2, 2, 4096, collect, &g), HDC_ETOOBIG);
  hdc_framer_free(&fr);
  /* an empty frame */
  const uint8_t empty[] = {0, 0, 0, 0};
  assert_int_equal(hdc_framer_feed(&fr, empty, 4, 4096, collect, &g), HDC_EPROTO);
  hdc_framer_free(&fr);
  /* A prefix announcing 60,000 bytes costs what arrived, not what was announced. */
  const uint8_t announce[] = {0, 0, 0xea, 0x60, 0x81};
  assert_int_equal(hdc_framer_feed(&fr, announce, 5, 65536, collect, &g), 0);
  assert_int_equal(hdc_framer_pending(&fr), 5);
  hdc_framer_free(&fr);
  assert_null(fr.buf);
  /* the callback's stop value comes back and the rest is not delivered */
  hdc_buf b = {0};
  three_frames(&b);
  got s = {.stop_after = 1};
  assert_int_equal(hdc_framer_feed(&fr, b.p, b.len, 1 << 20, collect, &s), 7);
  assert_int_equal(s.n, 1);
  hdc_framer_free(&fr);
  hdc_buf_free(&b);
}

static void test_backoff_bounds(void **state) {
  hdc_backoff bo = {.base_ms = 1000, .max_ms = 60000, .rng = 12345};
  uint32_t cap = 1000;
  for (int i = 0; i < 12; i++) {
    uint32_t d = hdc_backoff_next(&bo);
    assert_in_range(d, cap / 2, cap);
    cap = cap * 2 > 60000 ? 60000 : cap * 2;
  }
  hdc_backoff_reset(&bo);
  assert_in_range(hdc_backoff_next(&bo), 500, 1000);
  /* jitter: a fleet does not retry in lockstep */
  hdc_backoff a = {.base_ms = 10000, .max_ms = 10000, .rng = 1}, c = a;
  c.rng = 2;
  int differ = 0;
  for (int i = 0; i < 8; i++) differ |= hdc_backoff_next(&a) != hdc_backoff_next(&c);
  assert_true(differ);
  assert_string_equal(hdc_strerror(HDC_EDENIED), "the broker refused the connection (deny)");
}

/* ---- hdc_conn against a scripted fake broker ---- */
typedef struct fake {
  uv_loop_t *loop;
  uv_tcp_t server, peer;
  int port, peer_open;
  hdc_framer fr;
  int mode;            /* what to answer to the hello */
  int hellos, acks, pongs, pings;
  uint64_t acked_ids[8];
  /* client side */
  hdc_conn *c;
  int ready, msgs, closed, acked_cb;
  hdc_close_info why;
} fake;

enum { M_WELCOME, M_DENY, M_GOAWAY, M_SILENT };

static void fake_send(fake *fk, hdc_buf *b) {
  uv_buf_t ub = uv_buf_init((char *)b->p, b->len);
  assert_int_equal(uv_try_write((uv_stream_t *)&fk->peer, &ub, 1), (int)b->len);
  hdc_buf_free(b);
}

static int fake_frame(void *ud, const uint8_t *body, size_t len) {
  fake *fk = ud;
  hdc_frame f;
  assert_int_equal(hdc_frame_decode(body, len, &f), 0);
  hdc_buf b = {0};
  if (f.type == HDC_T_HELLO) {
    fk->hellos++;
    assert_true(hdc_str_eq(f.device, "dev-1"));
    assert_true(hdc_str_eq(f.token, "tok"));
    if (fk->mode == M_WELCOME) {
      hdc_enc_welcome(&b, 1, 3, 8, 65536);
      const uint8_t data[] = {0x81, 0xa1, 's', 0x07};
      hdc_enc_msg(&b, 11, "app", 1, 2, NULL, data, sizeof data);
      hdc_enc_msg(&b, 12, "app", 1, 2, "dev-1", data, sizeof data);
      hdc_enc_ping(&b, 99);
    } else if (fk->mode == M_DENY) {
      hdc_enc_deny(&b, "auth", "unknown device or wrong token", -1);
    } else if (fk->mode == M_GOAWAY) {
      hdc_enc_goaway(&b, "shutdown", "bye", 5, "127.0.0.1:1");
    }
    if (b.len) fake_send(fk, &b);
  } else if (f.type == HDC_T_ACK) {
    size_t n = hdc_frame_ids(&f, fk->acked_ids + fk->acks, 8 - (size_t)fk->acks);
    fk->acks += (int)n;
    hdc_enc_acked(&b, fk->acked_ids, (size_t)fk->acks);
    fake_send(fk, &b);
  } else if (f.type == HDC_T_PONG) {
    assert_int_equal(f.n, 99);
    fk->pongs++;
  } else if (f.type == HDC_T_PING) {
    fk->pings++;
  }
  return 0;
}

static void fake_alloc(uv_handle_t *h, size_t s, uv_buf_t *b) {
  static char buf[65536];
  *b = uv_buf_init(buf, sizeof buf);
}

static void fake_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  fake *fk = s->data;
  if (n > 0)
    assert_int_equal(hdc_framer_feed(&fk->fr, (uint8_t *)b->base, (size_t)n, 65536,
                                     fake_frame, fk), 0);
  else if (n < 0 && fk->peer_open) {
    fk->peer_open = 0;
    uv_close((uv_handle_t *)&fk->peer, NULL);
  }
}

static void fake_accept(uv_stream_t *srv, int status) {
  fake *fk = srv->data;
  assert_int_equal(status, 0);
  uv_tcp_init(fk->loop, &fk->peer);
  fk->peer.data = fk;
  assert_int_equal(uv_accept(srv, (uv_stream_t *)&fk->peer), 0);
  fk->peer_open = 1;
  uv_read_start((uv_stream_t *)&fk->peer, fake_alloc, fake_read);
}

static void c_ready(hdc_conn *c, void *ud, const hdc_frame *w) {
  fake *fk = ud;
  fk->ready++;
  assert_int_equal(w->heartbeat, 1);
  assert_int_equal(w->window, 8);
  assert_true(hdc_conn_is_ready(c));
}

static void c_msg(hdc_conn *c, void *ud, const hdc_frame *m) {
  fake *fk = ud;
  fk->msgs++;
  assert_int_equal(m->data_len, 4);
  if (m->id == 12) assert_true(hdc_str_eq(m->to, "dev-1"));
  assert_int_equal(hdc_conn_ack(c, &m->id, 1), 0);
}

static void c_acked(hdc_conn *c, void *ud, const uint64_t *ids, size_t n) {
  fake *fk = ud;
  fk->acked_cb = (int)n;
  if (n == 2) hdc_conn_close(c); /* closing from inside a callback is allowed */
}

static void c_close(hdc_conn *c, void *ud, const hdc_close_info *why) {
  fake *fk = ud;
  fk->closed++;
  fk->why = *why;
  if (fk->peer_open) {
    fk->peer_open = 0;
    uv_close((uv_handle_t *)&fk->peer, NULL);
  }
  uv_close((uv_handle_t *)&fk->server, NULL);
}

static void run_fake(fake *fk, int mode, int port_override) {
  static uv_loop_t loop;
  memset(fk, 0, sizeof *fk);
  uv_loop_init(&loop);
  fk->loop = &loop;
  fk->mode = mode;
  uv_tcp_init(&loop, &fk->server);
  fk->server.data = fk;
  struct sockaddr_in sa;
  uv_ip4_addr("127.0.0.1", 0, &sa);
  assert_int_equal(uv_tcp_bind(&fk->server, (struct sockaddr *)&sa, 0), 0);
  assert_int_equal(uv_listen((uv_stream_t *)&fk->server, 16, fake_accept), 0);
  int sl = sizeof sa;
  uv_tcp_getsockname(&fk->server, (struct sockaddr *)&sa, &sl);
  fk->port = ntohs(sa.sin_port);
  static const hdc_conn_cbs cbs = {
      .on_ready = c_ready, .on_msg = c_msg, .on_acked = c_acked, .on_close = c_close};
  hdc_conn_opts o = {.host = "127.0.0.1",
                     .port = port_override ? port_override : fk->port,
                     .device = "dev-1",
                     .tenant = "t",
                     .token = "tok",
                     .connect_timeout_ms = mode == M_SILENT ? 300 : 5000};
  assert_int_equal(hdc_conn_open(&loop, &o, &cbs, fk, &fk->c), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  hdc_framer_free(&fk->fr);
  assert_int_equal(uv_loop_close(&loop), 0); /* every handle closed: nothing leaked */
  assert_int_equal(fk->closed, 1);           /* exactly one on_close */
}

static void test_conn_welcome_msgs_acks_ping(void **state) {
  fake fk;
  run_fake(&fk, M_WELCOME, 0);
  assert_int_equal(fk.hellos, 1);
  assert_int_equal(fk.ready, 1);
  assert_int_equal(fk.msgs, 2);
  assert_int_equal(fk.acks, 2);
  assert_int_equal(fk.acked_ids[0], 11);
  assert_int_equal(fk.acked_ids[1], 12);
  assert_int_equal(fk.pongs, 1);
  assert_int_equal(fk.acked_cb, 2);
  assert_int_equal(fk.why.status, HDC_ECANCELED);
  assert_int_equal(fk.why.was_ready, 1);
}

static void test_conn_deny_reason(void **state) {
  fake fk;
  run_fake(&fk, M_DENY, 0);
  assert_int_equal(fk.ready, 0);
  assert_int_equal(fk.why.status, HDC_EDENIED);
  assert_string_equal(fk.why.code, "auth");
  assert_string_equal(fk.why.text, "unknown device or wrong token");
  assert_int_equal(fk.why.retry_s, -1);
  assert_int_equal(fk.why.was_ready, 0);
}

static void test_conn_goaway_hint(void **state) {
  fake fk;
  run_fake(&fk, M_GOAWAY, 0);
  assert_int_equal(fk.why.status, HDC_EGOAWAY);
  assert_string_equal(fk.why.code, "shutdown");
  assert_string_equal(fk.why.alt, "127.0.0.1:1");
  assert_int_equal(fk.why.retry_s, 5);
}

static void test_conn_silent_broker_times_out(void **state) {
  fake fk;
  run_fake(&fk, M_SILENT, 0);
  assert_int_equal(fk.hellos, 1);
  assert_int_equal(fk.why.status, HDC_ETIMEDOUT);
}

static void test_conn_refused(void **state) {
  /* Bind a port, close it, connect there: nothing listens. */
  uv_loop_t loop;
  uv_loop_init(&loop);
  uv_tcp_t t;
  uv_tcp_init(&loop, &t);
  struct sockaddr_in sa;
  uv_ip4_addr("127.0.0.1", 0, &sa);
  uv_tcp_bind(&t, (struct sockaddr *)&sa, 0);
  int sl = sizeof sa;
  uv_tcp_getsockname(&t, (struct sockaddr *)&sa, &sl);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  fake fk;
  run_fake(&fk, M_WELCOME, ntohs(sa.sin_port));
  assert_int_equal(fk.why.status, HDC_EIO);
  assert_int_equal(fk.why.sys_err, UV_ECONNREFUSED);
  assert_int_equal(fk.hellos, 0);
}

static void test_conn_open_refuses_bad_options(void **state) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  static const hdc_conn_cbs cbs = {.on_close = c_close};
  hdc_conn *c;
  hdc_conn_opts o = {.host = "127.0.0.1", .port = 0, .device = "d", .tenant = "t",
                     .token = "k"};
  assert_int_equal(hdc_conn_open(&loop, &o, &cbs, NULL, &c), HDC_EINVAL);
  o.port = 1;
  o.token = NULL;
  assert_int_equal(hdc_conn_open(&loop, &o, &cbs, NULL, &c), HDC_EINVAL);
  assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_uint_roundtrip_every_width),
      cmocka_unit_test(test_int_roundtrip_and_sign),
      cmocka_unit_test(test_str_roundtrip_every_width),
      cmocka_unit_test(test_skip_every_type),
      cmocka_unit_test(test_skip_depth_cap_and_huge_counts),
      cmocka_unit_test(test_hello_roundtrip),
      cmocka_unit_test(test_welcome_deny_goaway_roundtrip),
      cmocka_unit_test(test_msg_roundtrip_with_raw_payload),
      cmocka_unit_test(test_ack_limits),
      cmocka_unit_test(test_ping_pong_unknown),
      cmocka_unit_test(test_decoder_refusals),
      cmocka_unit_test(test_truncation_at_every_length),
      cmocka_unit_test(test_documented_examples),
      cmocka_unit_test(test_framer_byte_by_byte),
      cmocka_unit_test(test_framer_limits_and_memory),
      cmocka_unit_test(test_backoff_bounds),
      cmocka_unit_test(test_conn_welcome_msgs_acks_ping),
      cmocka_unit_test(test_conn_deny_reason),
      cmocka_unit_test(test_conn_goaway_hint),
      cmocka_unit_test(test_conn_silent_broker_times_out),
      cmocka_unit_test(test_conn_refused),
      cmocka_unit_test(test_conn_open_refuses_bad_options),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
