/* test_sms_codec.c — transports/smpp/codec/sms_codec: GSM 03.38 mapping and packing against
 * vectors written out by hand from 3GPP TS 23.038 / 23.040, part limits at their boundaries
 * (160/161 septets, 70/71 UCS-2 units, an escape or a surrogate pair at a cut, 255 parts),
 * binary splitting with Kannel's UDH layout (PROTOCOLS.md §2.1), and MO decoding. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "herald/error.h"
#include "sms_codec.h"

/* ---- helpers ----------------------------------------------------------------------------- */

static void assert_bytes(const uint8_t *got, size_t got_len, const uint8_t *want, size_t want_len) {
  if (got_len != want_len || memcmp(got, want, want_len)) {
    fprintf(stderr, "got  (%zu):", got_len);
    for (size_t i = 0; i < got_len; i++)
      fprintf(stderr, " %02X", got[i]);
    fprintf(stderr, "\nwant (%zu):", want_len);
    for (size_t i = 0; i < want_len; i++)
      fprintf(stderr, " %02X", want[i]);
    fprintf(stderr, "\n");
    fail_msg("byte mismatch");
  }
}
#define ASSERT_BYTES(got, got_len, ...)                                                       \
  do {                                                                                         \
    static const uint8_t want_[] = {__VA_ARGS__};                                              \
    assert_bytes((got), (got_len), want_, sizeof want_);                                       \
  } while (0)

/* A string of n copies of the UTF-8 sequence `unit`, appended to buf at *len. */
static void repeat(char *buf, size_t *len, const char *unit, size_t n) {
  size_t k = strlen(unit);
  for (size_t i = 0; i < n; i++) {
    memcpy(buf + *len, unit, k);
    *len += k;
  }
  buf[*len] = '\0';
}

static const uint8_t *payload(const hd_sms_part_t *p) { return p->sm + p->udh_len; }
static size_t payload_len(const hd_sms_part_t *p) { return (size_t)(p->sm_len - p->udh_len); }

/* ---- GSM 03.38 mapping ------------------------------------------------------------------- */

static void test_gsm_mapping_vectors(void **state) {
  hd_sms_parts_t ps;
  /* TS 23.038 §6.2.1: @ 0x00, £ 0x01, $ 0x02, ¥ 0x03, è 0x04, LF 0x0A, Δ 0x10, _ 0x11,
   * ¤ 0x24, ¡ 0x40, Ä 0x5B, § 0x5F, ¿ 0x60, à 0x7F; §6.2.1.1: € 1B 65, [ 1B 3C, ~ 1B 3D,
   * ] 1B 3E, | 1B 40, ^ 1B 14, { 1B 28, } 1B 29, \ 1B 2F, FF 1B 0A. */
  const char *t = "@£$¥è\nΔ_¤¡Ä§¿à€[~]|^{}\\\f";
  assert_int_equal(hd_sms_split_text(t, strlen(t), 0, 0, &ps, NULL), 0);
  assert_int_equal(ps.n, 1);
  assert_int_equal(ps.part[0].data_coding, 0x00);
  assert_int_equal(ps.part[0].esm_class, 0x00);
  assert_int_equal(ps.part[0].udh_len, 0);
  ASSERT_BYTES(ps.part[0].sm, ps.part[0].sm_len, 0x00, 0x01, 0x02, 0x03, 0x04, 0x0A, 0x10, 0x11,
               0x24, 0x40, 0x5B, 0x5F, 0x60, 0x7F, 0x1B, 0x65, 0x1B, 0x3C, 0x1B, 0x3D, 0x1B,
               0x3E, 0x1B, 0x40, 0x1B, 0x14, 0x1B, 0x28, 0x1B, 0x29, 0x1B, 0x2F, 0x1B, 0x0A);
  assert_int_equal(ps.part[0].units, 34); /* 24 characters, 10 of them escaped */
  hd_sms_parts_free(&ps);
  assert_null(ps.part);

  /* Plain ASCII letters and digits keep their codes: "Hi 42!" */
  assert_int_equal(hd_sms_split_text("Hi 42!", 6, 0, 0, &ps, NULL), 0);
  ASSERT_BYTES(ps.part[0].sm, ps.part[0].sm_len, 0x48, 0x69, 0x20, 0x34, 0x32, 0x21);
  hd_sms_parts_free(&ps);
}

static void test_alphabet_choice(void **state) {
  hd_sms_text_info_t info;
  /* ` (grave accent), ç and U+001B have no GSM code: UCS-2. */
  const char *no_gsm[] = {"price `5`", "garçon", "a\x1b", "Ж", "😀", "tab\there"};
  for (size_t i = 0; i < sizeof no_gsm / sizeof *no_gsm; i++) {
    assert_int_equal(hd_sms_text_info(no_gsm[i], strlen(no_gsm[i]), 0, &info, NULL), 0);
    assert_int_equal(info.alphabet, HD_SMS_ALPHABET_UCS2);
  }
  assert_int_equal(hd_sms_text_info("café ÉÑ €", strlen("café ÉÑ €"), 0, &info, NULL), 0);
  assert_int_equal(info.alphabet, HD_SMS_ALPHABET_GSM7);
  assert_int_equal(info.units, 10); /* € counts 2 */
  assert_int_equal(info.parts, 1);
  assert_int_equal(hd_sms_text_info("abc", 3, HD_SMS_FORCE_UCS2, &info, NULL), 0);
  assert_int_equal(info.alphabet, HD_SMS_ALPHABET_UCS2);

  hd_sms_parts_t ps;
  assert_int_equal(hd_sms_split_text("a😀Ж", strlen("a😀Ж"), 0, 0, &ps, NULL), 0);
  assert_int_equal(ps.part[0].data_coding, 0x08);
  assert_int_equal(ps.part[0].units, 4);
  ASSERT_BYTES(ps.part[0].sm, ps.part[0].sm_len, 0x00, 0x61, 0xD8, 0x3D, 0xDE, 0x00, 0x04, 0x16);
  hd_sms_parts_free(&ps);

  /* An embedded NUL is U+0000, which GSM cannot carry (0x00 is '@'). */
  assert_int_equal(hd_sms_text_info("a\0b", 3, 0, &info, NULL), 0);
  assert_int_equal(info.alphabet, HD_SMS_ALPHABET_UCS2);
}

static void test_invalid_utf8(void **state) {
  const char *bad[] = {
      "\xC0\xAF",         /* overlong '/' */
      "\xE0\x80\xAF",     /* overlong, 3 octets */
      "\xED\xA0\x80",     /* UTF-16 surrogate D800 */
      "\xF4\x90\x80\x80", /* above U+10FFFF */
      "ok\xE2\x82",       /* truncated € */
      "\x80",             /* lone continuation */
      "\xFF",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    hd_sms_parts_t ps = {(hd_sms_part_t *)1, 7};
    const char *why = NULL;
    assert_int_equal(hd_sms_split_text(bad[i], strlen(bad[i]), 0, 0, &ps, &why), HD_EINVAL);
    assert_null(ps.part);
    assert_int_equal(ps.n, 0);
    assert_non_null(why);
    assert_non_null(strstr(why, "UTF-8"));
  }
}

static void test_empty_text(void **state) {
  hd_sms_parts_t ps;
  assert_int_equal(hd_sms_split_text("", 0, 0, 0, &ps, NULL), 0);
  assert_int_equal(ps.n, 1);
  assert_int_equal(ps.part[0].sm_len, 0);
  assert_int_equal(ps.part[0].data_coding, 0);
  hd_sms_parts_free(&ps);
  hd_sms_parts_free(&ps); /* twice is fine */
  hd_sms_parts_free(NULL);
}

/* ---- part limits ------------------------------------------------------------------------- */

static char big[255 * 160 * 4 + 64];

static void test_gsm_160_161(void **state) {
  hd_sms_parts_t ps;
  size_t n = 0;
  repeat(big, &n, "a", 160);
  assert_int_equal(hd_sms_split_text(big, n, 0x42, 0, &ps, NULL), 0);
  assert_int_equal(ps.n, 1);
  assert_int_equal(ps.part[0].sm_len, 160);
  assert_int_equal(ps.part[0].udh_len, 0);
  assert_int_equal(ps.part[0].esm_class, 0);
  assert_int_equal(ps.part[0].seq, 1);
  assert_int_equal(ps.part[0].total, 1);
  hd_sms_parts_free(&ps);

  repeat(big, &n, "b", 1); /* 161 septets */
  assert_int_equal(hd_sms_split_text(big, n, 0x42, 0, &ps, NULL), 0);
  assert_int_equal(ps.n, 2);
  /* TS 23.040 §9.2.3.24.1: UDHL 5, IEI 0, IEDL 3, ref, total, seq */
  ASSERT_BYTES(ps.part[0].sm, 6, 0x05, 0x00, 0x03, 0x42, 0x02, 0x01);
  ASSERT_BYTES(ps.part[1].sm, 6, 0x05, 0x00, 0x03, 0x42, 0x02, 0x02);
  for (unsigned i = 0; i < 2; i++) {
    assert_int_equal(ps.part[i].udh_len, 6);
    assert_int_equal(ps.part[i].esm_class, 0x40);
    assert_int_equal(ps.part[i].data_coding, 0x00);
    assert_int_equal(ps.part[i].seq, i + 1);
    assert_int_equal(ps.part[i].total, 2);
  }
  assert_int_equal(ps.part[0].units, 153);
  assert_int_equal(ps.part[0].sm_len, 6 + 153);
  assert_int_equal(ps.part[1].units, 8);
  ASSERT_BYTES(payload(&ps.part[1]), payload_len(&ps.part[1]), 'a', 'a', 'a', 'a', 'a', 'a',
               'a', 'b');
  hd_sms_parts_free(&ps);
}

static void test_escape_at_boundary(void **state) {
  hd_sms_parts_t ps;
  size_t n = 0;
  /* 158 'a' + € = 160 septets: still one part, the escape pair last. */
  repeat(big, &n, "a", 158);
  repeat(big, &n, "€", 1);
  assert_int_equal(hd_sms_split_text(big, n, 1, 0, &ps, NULL), 0);
  assert_int_equal(ps.n, 1);
  assert_int_equal(ps.part[0].sm_len, 160);
  ASSERT_BYTES(ps.part[0].sm + 158, 2, 0x1B, 0x65);
  hd_sms_parts_free(&ps);

  /* 152 'a' + € + 10 'b': the pair would straddle septets 153/154, so part 1 stops at 152. */
  n = 0;
  repeat(big, &n, "a", 152);
  repeat(big, &n, "€", 1);
  repeat(big, &n, "b", 10);
  assert_int_equal(hd_sms_split_text(big, n, 7, 0, &ps, NULL), 0);
  assert_int_equal(ps.n, 2);
  assert_int_equal(ps.part[0].units, 152);
  assert_int_equal(ps.part[0].sm[6 + 151], 'a');
  assert_int_equal(ps.part[1].units, 12);
  ASSERT_BYTES(payload(&ps.part[1]), 4, 0x1B, 0x65, 'b', 'b');
  hd_sms_parts_free(&ps);

  /* 151 'a' + €: the pair fits exactly at the end of part 1 (septets 152–153). */
  n = 0;
  repeat(big, &n, "a", 151);
  repeat(big, &n, "€", 1);
  repeat(big, &n, "b", 10);
  assert_int_equal(hd_sms_split_text(big, n, 7, 0, &ps, NULL), 0);
  assert_int_equal(ps.part[0].units, 153);
  ASSERT_BYTES(payload(&ps.part[0]) + 151, 2, 0x1B, 0x65);
  assert_int_equal(ps.part[1].units, 10);
  hd_sms_parts_free(&ps);
}

static void test_ucs2_70_71(void **state) {
  hd_sms_parts_t ps;
  size_t n = 0;
  repeat(big, &n, "Ж", 70); /* U+0416 */
  assert_int_equal(hd_sms_split_text(big, n, 9, 0, &ps, NULL), 0);
  assert_int_equal(ps.n, 1);
  assert_int_equal(ps.part[0].data_coding, 0x08);
  assert_int_equal(ps.part[0].sm_len, 140);
  ASSERT_BYTES(ps.part[0].sm, 4, 0x04, 0x16, 0x04, 0x16);
  hd_sms_parts_free(&ps);

  repeat(big, &n, "Ж", 1);
  assert_int_equal(hd_sms_split_text(big, n, 9, 0, &ps, NULL), 0);
  assert_int_equal(ps.n, 2);
  ASSERT_BYTES(ps.part[0].sm, 6, 0x05, 0x00, 0x03, 0x09, 0x02, 0x01);
  assert_int_equal(ps.part[0].units, 67);
  assert_int_equal(ps.part[0].sm_len, 6 + 134);
  assert_int_equal(ps.part[1].units, 4);
  assert_int_equal(ps.part[1].sm_len, 6 + 8);
  assert_int_equal(ps.part[1].esm_class, 0x40);
  hd_sms_parts_free(&ps);
}

static void test_surrogate_at_boundary(void **state) {
  hd_sms_parts_t ps;
  size_t n = 0;
  /* 66 Ж + 😀 (D83D DE00) + 5 Ж = 73 units: the pair would take units 67–68, so part 1 ends
   * after 66 units and part 2 starts with the whole pair. */
  repeat(big, &n, "Ж", 66);
  repeat(big, &n, "😀", 1);
  repeat(big, &n, "Ж", 5);
  assert_int_equal(hd_sms_split_text(big, n, 3, 0, &ps, NULL), 0);
  assert_int_equal(ps.n, 2);
  assert_int_equal(ps.part[0].units, 66);
  assert_int_equal(payload_len(&ps.part[0]), 132);
  ASSERT_BYTES(payload(&ps.part[0]) + 130, 2, 0x04, 0x16);
  assert_int_equal(ps.part[1].units, 7);
  ASSERT_BYTES(payload(&ps.part[1]), payload_len(&ps.part[1]), 0xD8, 0x3D, 0xDE, 0x00, 0x04,
               0x16, 0x04, 0x16, 0x04, 0x16, 0x04, 0x16, 0x04, 0x16);
  hd_sms_parts_free(&ps);

  /* 68 Ж + 😀 = 70 units: one part, the pair last. */
  n = 0;
  repeat(big, &n, "Ж", 68);
  repeat(big, &n, "😀", 1);
  assert_int_equal(hd_sms_split_text(big, n, 3, 0, &ps, NULL), 0);
  assert_int_equal(ps.n, 1);
  ASSERT_BYTES(ps.part[0].sm + 136, 4, 0xD8, 0x3D, 0xDE, 0x00);
  hd_sms_parts_free(&ps);
}

static void test_255_part_limit(void **state) {
  hd_sms_parts_t ps;
  hd_sms_text_info_t info;
  size_t n = 0;
  repeat(big, &n, "x", 255 * 153);
  assert_int_equal(hd_sms_split_text(big, n, 0xFE, 0, &ps, NULL), 0);
  assert_int_equal(ps.n, 255);
  ASSERT_BYTES(ps.part[254].sm, 6, 0x05, 0x00, 0x03, 0xFE, 0xFF, 0xFF);
  assert_int_equal(ps.part[254].units, 153);
  hd_sms_parts_free(&ps);

  repeat(big, &n, "x", 1);
  const char *why = NULL;
  assert_int_equal(hd_sms_split_text(big, n, 0xFE, 0, &ps, &why), HD_ETOOBIG);
  assert_null(ps.part);
  assert_non_null(why);
  assert_int_equal(hd_sms_text_info(big, n, 0, &info, NULL), 0);
  assert_int_equal(info.parts, 256);

  n = 0;
  repeat(big, &n, "Ж", 255 * 67);
  assert_int_equal(hd_sms_split_text(big, n, 0, 0, &ps, NULL), 0);
  assert_int_equal(ps.n, 255);
  hd_sms_parts_free(&ps);
  repeat(big, &n, "Ж", 1);
  assert_int_equal(hd_sms_split_text(big, n, 0, 0, &ps, NULL), HD_ETOOBIG);
}

/* Every part of a long mixed text, concatenated, gives back the septet stream, and decoding
 * the concatenation gives back the text. */
static void test_split_decode_roundtrip(void **state) {
  const char *unit = "Grüße {€} ";
  size_t n = 0;
  repeat(big, &n, unit, 100);
  hd_sms_parts_t ps;
  assert_int_equal(hd_sms_split_text(big, n, 5, 0, &ps, NULL), 0);
  assert_true(ps.n > 1);
  static uint8_t cat[255 * 160];
  size_t cl = 0;
  for (unsigned i = 0; i < ps.n; i++) {
    assert_true(ps.part[i].units <= 153);
    /* no part ends inside an escape pair */
    assert_int_not_equal(payload(&ps.part[i])[payload_len(&ps.part[i]) - 1], 0x1B);
    char *one;
    size_t one_len;
    hd_sms_udh_info_t udh;
    assert_int_equal(hd_sms_decode(ps.part[i].sm, ps.part[i].sm_len, ps.part[i].data_coding,
                                   ps.part[i].esm_class, &one, &one_len, &udh, NULL),
                     0);
    assert_int_equal(udh.udh_len, 6);
    assert_true(udh.has_concat);
    assert_int_equal(udh.concat_ref, 5);
    assert_int_equal(udh.concat_total, ps.n);
    assert_int_equal(udh.concat_seq, i + 1);
    free(one);
    memcpy(cat + cl, payload(&ps.part[i]), payload_len(&ps.part[i]));
    cl += payload_len(&ps.part[i]);
  }
  char *text;
  size_t text_len;
  assert_int_equal(hd_sms_decode(cat, cl, 0x00, 0x00, &text, &text_len, NULL, NULL), 0);
  assert_int_equal(text_len, n);
  assert_string_equal(text, big);
  free(text);
  hd_sms_parts_free(&ps);
}

/* ---- GSM 7-bit packing ------------------------------------------------------------------- */

static void test_gsm7_pack_vectors(void **state) {
  uint8_t out[64], back[64];
  /* TS 23.038 §6.1.2.1.1 worked example, "hellohello": E8 32 9B FD 46 97 D9 EC 37 */
  const uint8_t hello[] = {'h', 'e', 'l', 'l', 'o', 'h', 'e', 'l', 'l', 'o'};
  assert_int_equal(hd_sms_gsm7_pack(hello, 10, 0, out, sizeof out), 9);
  ASSERT_BYTES(out, 9, 0xE8, 0x32, 0x9B, 0xFD, 0x46, 0x97, 0xD9, 0xEC, 0x37);
  assert_int_equal(hd_sms_gsm7_unpack(out, 9, 0, 10, back, sizeof back), 10);
  assert_memory_equal(back, hello, 10);

  /* "Hi": 0x48 | 0x69 << 7 → C8 34 */
  const uint8_t hi[] = {0x48, 0x69};
  assert_int_equal(hd_sms_gsm7_pack(hi, 2, 0, out, sizeof out), 2);
  ASSERT_BYTES(out, 2, 0xC8, 0x34);

  /* Eight septets fill exactly seven octets: "12345678" → 31 D9 8C 56 B3 DD 70 */
  const uint8_t digits[] = {'1', '2', '3', '4', '5', '6', '7', '8'};
  assert_int_equal(hd_sms_gsm7_pack(digits, 8, 0, out, sizeof out), 7);
  ASSERT_BYTES(out, 7, 0x31, 0xD9, 0x8C, 0x56, 0xB3, 0xDD, 0x70);

  /* After a 6-octet UDH one fill bit aligns the septets (TS 23.040 §9.2.3.24): "Hi" → 90 69 */
  assert_int_equal(hd_sms_gsm7_pack(hi, 2, 1, out, sizeof out), 2);
  ASSERT_BYTES(out, 2, 0x90, 0x69);
  assert_int_equal(hd_sms_gsm7_unpack(out, 2, 1, 2, back, sizeof back), 2);
  assert_memory_equal(back, hi, 2);

  /* 153 septets + 1 fill bit = 134 octets: a full concatenated part is 6 + 134 = 140. */
  uint8_t s153[153];
  for (int i = 0; i < 153; i++)
    s153[i] = (uint8_t)(i & 0x7F);
  static uint8_t p153[200], b153[200];
  assert_int_equal(hd_sms_gsm7_pack(s153, 153, 1, p153, sizeof p153), 134);
  assert_int_equal(hd_sms_gsm7_unpack(p153, 134, 1, 153, b153, sizeof b153), 153);
  assert_memory_equal(b153, s153, 153);

  assert_int_equal(hd_sms_gsm7_pack(hello, 10, 0, out, 8), HD_ETOOBIG);
  assert_int_equal(hd_sms_gsm7_unpack(out, 8, 0, 10, back, sizeof back), HD_EINVAL);
}

/* ---- binary ------------------------------------------------------------------------------ */

static uint8_t bin[255 * 140];

static void test_binary_ports(void **state) {
  for (size_t i = 0; i < sizeof bin; i++)
    bin[i] = (uint8_t)(i * 7 + 1);
  const hd_sms_ports_t wap = {2948, 9200};
  hd_sms_parts_t ps;

  /* 133 octets: one SMS, UDH 06 05 04 0B 84 23 F0 (PROTOCOLS.md §2.1) */
  assert_int_equal(hd_sms_split_binary(bin, 133, &wap, 0x11, &ps, NULL), 0);
  assert_int_equal(ps.n, 1);
  ASSERT_BYTES(ps.part[0].sm, 7, 0x06, 0x05, 0x04, 0x0B, 0x84, 0x23, 0xF0);
  assert_int_equal(ps.part[0].sm_len, 140);
  assert_int_equal(ps.part[0].udh_len, 7);
  assert_int_equal(ps.part[0].esm_class, 0x40);
  assert_int_equal(ps.part[0].data_coding, 0x04);
  assert_memory_equal(payload(&ps.part[0]), bin, 133);
  hd_sms_parts_free(&ps);

  /* 134 octets: two parts, port IE first, then concat: 0B 05 04 0B 84 23 F0 00 03 ref 02 n */
  assert_int_equal(hd_sms_split_binary(bin, 134, &wap, 0x11, &ps, NULL), 0);
  assert_int_equal(ps.n, 2);
  ASSERT_BYTES(ps.part[0].sm, 12, 0x0B, 0x05, 0x04, 0x0B, 0x84, 0x23, 0xF0, 0x00, 0x03, 0x11,
               0x02, 0x01);
  ASSERT_BYTES(ps.part[1].sm, 12, 0x0B, 0x05, 0x04, 0x0B, 0x84, 0x23, 0xF0, 0x00, 0x03, 0x11,
               0x02, 0x02);
  assert_int_equal(payload_len(&ps.part[0]), 128);
  assert_int_equal(payload_len(&ps.part[1]), 6);
  assert_memory_equal(payload(&ps.part[1]), bin + 128, 6);
  hd_sms_parts_free(&ps);

  /* Kannel's verified split: 278 octets → 128 + 128 + 22 */
  assert_int_equal(hd_sms_split_binary(bin, 278, &wap, 0x11, &ps, NULL), 0);
  assert_int_equal(ps.n, 3);
  assert_int_equal(payload_len(&ps.part[0]), 128);
  assert_int_equal(payload_len(&ps.part[1]), 128);
  assert_int_equal(payload_len(&ps.part[2]), 22);
  for (unsigned i = 0; i < 3; i++) {
    assert_true(ps.part[i].sm_len <= 140);
    assert_int_equal(ps.part[i].sm[11], i + 1);
    assert_memory_equal(payload(&ps.part[i]), bin + 128 * i, payload_len(&ps.part[i]));
  }
  hd_sms_parts_free(&ps);

  /* 255 × 128 fits, one octet more does not. */
  assert_int_equal(hd_sms_split_binary(bin, 255 * 128, &wap, 0, &ps, NULL), 0);
  assert_int_equal(ps.n, 255);
  hd_sms_parts_free(&ps);
  assert_int_equal(hd_sms_split_binary(bin, 255 * 128 + 1, &wap, 0, &ps, NULL), HD_ETOOBIG);
  assert_null(ps.part);
}

static void test_binary_no_ports(void **state) {
  hd_sms_parts_t ps;
  assert_int_equal(hd_sms_split_binary(bin, 140, NULL, 0x22, &ps, NULL), 0);
  assert_int_equal(ps.n, 1);
  assert_int_equal(ps.part[0].udh_len, 0);
  assert_int_equal(ps.part[0].esm_class, 0);
  assert_int_equal(ps.part[0].sm_len, 140);
  assert_int_equal(ps.part[0].data_coding, 0x04);
  hd_sms_parts_free(&ps);

  assert_int_equal(hd_sms_split_binary(bin, 141, NULL, 0x22, &ps, NULL), 0);
  assert_int_equal(ps.n, 2);
  ASSERT_BYTES(ps.part[0].sm, 6, 0x05, 0x00, 0x03, 0x22, 0x02, 0x01);
  assert_int_equal(payload_len(&ps.part[0]), 134);
  assert_int_equal(payload_len(&ps.part[1]), 7);
  hd_sms_parts_free(&ps);

  /* empty payload with ports: one part that is only the UDH */
  const hd_sms_ports_t p = {0x1234, 0xABCD};
  assert_int_equal(hd_sms_split_binary(NULL, 0, &p, 0, &ps, NULL), 0);
  assert_int_equal(ps.n, 1);
  ASSERT_BYTES(ps.part[0].sm, ps.part[0].sm_len, 0x06, 0x05, 0x04, 0x12, 0x34, 0xAB, 0xCD);
  hd_sms_parts_free(&ps);
  assert_int_equal(hd_sms_split_binary(NULL, 3, &p, 0, &ps, NULL), HD_EINVAL);
}

/* ---- MO decoding ------------------------------------------------------------------------- */

static void decode_ok(const uint8_t *sm, size_t len, uint8_t dcs, uint8_t esm, const char *want) {
  char *out;
  size_t out_len;
  assert_int_equal(hd_sms_decode(sm, len, dcs, esm, &out, &out_len, NULL, NULL), 0);
  assert_string_equal(out, want);
  assert_int_equal(out_len, strlen(want));
  free(out);
}

static void test_decode(void **state) {
  /* GSM unpacked with the extension table: "@£ {€}" */
  const uint8_t g[] = {0x00, 0x01, 0x20, 0x1B, 0x28, 0x1B, 0x65, 0x1B, 0x29};
  decode_ok(g, sizeof g, 0x00, 0x00, "@£ {€}");
  /* 0xF1: GSM DCS message-class group, 7-bit */
  decode_ok(g, sizeof g, 0xF1, 0x00, "@£ {€}");
  /* an unknown escape shows the base character (TS 23.038 §6.2.1.1); a trailing ESC a space */
  const uint8_t ue[] = {0x1B, 0x41, 0x1B};
  decode_ok(ue, sizeof ue, 0x00, 0x00, "A ");
  /* UCS-2 with a surrogate pair, a lone low surrogate and an odd trailing octet */
  const uint8_t u[] = {0x00, 0x48, 0xD8, 0x3D, 0xDE, 0x00, 0xDC, 0x00, 0x04};
  decode_ok(u, sizeof u, 0x08, 0x00, "H😀\xEF\xBF\xBD\xEF\xBF\xBD");
  /* Latin-1 and ASCII */
  const uint8_t l[] = {'c', 'a', 'f', 0xE9};
  decode_ok(l, sizeof l, 0x03, 0x00, "café");
  decode_ok(l, 3, 0x01, 0x00, "caf");
  /* A UDH (concat 16-bit ref + ports) is skipped and described. */
  const uint8_t h[] = {0x0C, 0x08, 0x04, 0x12, 0x34, 0x03, 0x02, 0x05, 0x04, 0x0B,
                       0x84, 0x23, 0xF0, 'o', 'k'};
  char *out;
  size_t out_len;
  hd_sms_udh_info_t udh;
  assert_int_equal(hd_sms_decode(h, sizeof h, 0x00, 0x40, &out, &out_len, &udh, NULL), 0);
  assert_string_equal(out, "ok");
  free(out);
  assert_int_equal(udh.udh_len, 13);
  assert_true(udh.has_concat);
  assert_int_equal(udh.concat_ref, 0x1234);
  assert_int_equal(udh.concat_total, 3);
  assert_int_equal(udh.concat_seq, 2);
  assert_true(udh.has_ports);
  assert_int_equal(udh.dst_port, 2948);
  assert_int_equal(udh.src_port, 9200);
  /* Without UDHI the same octets are text. */
  assert_int_equal(hd_sms_decode(h + 13, 2, 0x00, 0x00, &out, &out_len, &udh, NULL), 0);
  assert_int_equal(udh.udh_len, 0);
  free(out);
  /* empty */
  decode_ok(NULL, 0, 0x08, 0x00, "");
}

static void test_decode_refusals(void **state) {
  char *out = (char *)1;
  size_t out_len = 9;
  const char *why = NULL;
  const uint8_t t[] = {'a', 'b'};
  /* binary and unknown codings are not text */
  const uint8_t not_text[] = {0x02, 0x04, 0xF5, 0x05, 0x10};
  for (size_t i = 0; i < sizeof not_text; i++) {
    assert_int_equal(hd_sms_decode(t, 2, not_text[i], 0, &out, &out_len, NULL, &why), HD_EINVAL);
    assert_null(out);
    assert_int_equal(out_len, 0);
  }
  assert_non_null(why);
  /* UDHL past the end; IE length past the UDH; empty with UDHI */
  const uint8_t b1[] = {0x05, 0x00, 0x03, 0x01};
  const uint8_t b2[] = {0x03, 0x00, 0x03, 0x01, 'x'};
  const uint8_t b3[] = {0x02, 0x00};
  assert_int_equal(hd_sms_decode(b1, sizeof b1, 0, 0x40, &out, &out_len, NULL, NULL), HD_EINVAL);
  assert_int_equal(hd_sms_decode(b2, sizeof b2, 0, 0x40, &out, &out_len, NULL, NULL), HD_EINVAL);
  assert_int_equal(hd_sms_decode(b3, sizeof b3, 0, 0x40, &out, &out_len, NULL, NULL), HD_EINVAL);
  assert_int_equal(hd_sms_decode(b3, 0, 0, 0x40, &out, &out_len, NULL, NULL), HD_EINVAL);
}

/* ---- seeded properties -------------------------------------------------------------------- */

static uint32_t rng = 0x9E3779B9u;
static uint32_t rnd(void) { /* xorshift32: reproducible across runs */
  rng ^= rng << 13;
  rng ^= rng >> 17;
  rng ^= rng << 5;
  return rng;
}

/* Random texts from a pool that mixes GSM base, GSM extension, BMP and astral characters:
 * whatever the split, the parts' payloads concatenated and decoded give back the text, no part
 * exceeds its limit or ends inside a pair, and the UDH numbers the parts. */
static void test_property_split_roundtrip(void **state) {
  static const char *pool[] = {"a", "Z", "0", " ", "@", "\n", "é", "Ä", "Δ", "€", "{", "]",
                               "~", "\\", "Ж", "✓", "😀", "𝄞", "ç", "`"};
  static char text[255 * 70 * 4];
  static uint8_t cat[255 * 160];
  for (int iter = 0; iter < 400; iter++) {
    size_t n = 0, chars = rnd() % 700;
    int gsm_only = rnd() % 2; /* half the texts stay within the GSM alphabet */
    size_t pool_n = gsm_only ? 14 : sizeof pool / sizeof *pool;
    for (size_t i = 0; i < chars; i++)
      repeat(text, &n, pool[rnd() % pool_n], 1);
    hd_sms_parts_t ps;
    uint8_t ref = (uint8_t)rnd();
    assert_int_equal(hd_sms_split_text(text, n, ref, 0, &ps, NULL), 0);
    int ucs2 = ps.part[0].data_coding == HD_SMS_DCS_UCS2;
    if (gsm_only)
      assert_false(ucs2);
    unsigned single = ucs2 ? 70 : 160, concat = ucs2 ? 67 : 153;
    size_t cl = 0;
    for (unsigned i = 0; i < ps.n; i++) {
      const hd_sms_part_t *p = &ps.part[i];
      assert_int_equal(p->seq, i + 1);
      assert_int_equal(p->total, ps.n);
      assert_int_equal(p->data_coding, ps.part[0].data_coding);
      assert_true(p->units <= (ps.n == 1 ? single : concat));
      assert_int_equal(payload_len(p), ucs2 ? 2u * p->units : p->units);
      if (ps.n > 1) {
        const uint8_t udh[] = {0x05, 0x00, 0x03, ref, (uint8_t)ps.n, (uint8_t)(i + 1)};
        assert_bytes(p->sm, 6, udh, 6);
        assert_int_equal(p->esm_class, 0x40);
      } else {
        assert_int_equal(p->udh_len, 0);
      }
      size_t pl = payload_len(p);
      if (pl && i + 1 < ps.n) { /* only the last part may be short of a full one by a pair */
        if (ucs2) {
          uint16_t last = (uint16_t)(payload(p)[pl - 2] << 8 | payload(p)[pl - 1]);
          assert_false(last >= 0xD800 && last <= 0xDBFF);
          assert_true(p->units >= concat - 1);
        } else {
          assert_int_not_equal(payload(p)[pl - 1], 0x1B);
          assert_true(p->units >= concat - 1);
        }
      }
      memcpy(cat + cl, payload(p), pl);
      cl += pl;
    }
    char *back;
    size_t back_len;
    assert_int_equal(hd_sms_decode(cat, cl, ps.part[0].data_coding, 0, &back, &back_len, NULL,
                                   NULL),
                     0);
    assert_int_equal(back_len, n);
    assert_memory_equal(back, text, n);
    free(back);
    hd_sms_parts_free(&ps);
  }
}

/* Arbitrary octets in any data_coding and esm_class: decode either refuses with HD_EINVAL or
 * returns valid UTF-8 (checked with the module's own strict validator); never reads past the
 * input (the ASan build checks that). */
static void test_property_decode_garbage(void **state) {
  static const uint8_t dcs[] = {0x00, 0x01, 0x03, 0x08, 0xF0, 0xF3, 0x04, 0x02, 0xF5, 0x11};
  for (int iter = 0; iter < 20000; iter++) {
    size_t len = rnd() % 170;
    uint8_t *buf = malloc(len ? len : 1); /* exact size, so ASan sees any overread */
    assert_non_null(buf);
    for (size_t i = 0; i < len; i++)
      buf[i] = (uint8_t)rnd();
    if (len && rnd() % 2)
      buf[0] = (uint8_t)(rnd() % (len + 2)); /* plausible UDHL */
    uint8_t d = dcs[rnd() % sizeof dcs], esm = (rnd() % 2) ? 0x40 : 0x00;
    char *out;
    size_t out_len;
    hd_sms_udh_info_t udh;
    int rc = hd_sms_decode(buf, len, d, esm, &out, &out_len, &udh, NULL);
    if (rc == 0) {
      hd_sms_text_info_t info;
      assert_int_equal(out[out_len], '\0'); /* U+0000 may occur inside: out_len counts */
      assert_int_equal(hd_sms_text_info(out, out_len, 0, &info, NULL), 0);
      assert_true(udh.udh_len <= len);
      free(out);
    } else {
      assert_int_equal(rc, HD_EINVAL);
      assert_null(out);
    }
    free(buf);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_gsm_mapping_vectors),
      cmocka_unit_test(test_alphabet_choice),
      cmocka_unit_test(test_invalid_utf8),
      cmocka_unit_test(test_empty_text),
      cmocka_unit_test(test_gsm_160_161),
      cmocka_unit_test(test_escape_at_boundary),
      cmocka_unit_test(test_ucs2_70_71),
      cmocka_unit_test(test_surrogate_at_boundary),
      cmocka_unit_test(test_255_part_limit),
      cmocka_unit_test(test_split_decode_roundtrip),
      cmocka_unit_test(test_gsm7_pack_vectors),
      cmocka_unit_test(test_binary_ports),
      cmocka_unit_test(test_binary_no_ports),
      cmocka_unit_test(test_decode),
      cmocka_unit_test(test_decode_refusals),
      cmocka_unit_test(test_property_split_roundtrip),
      cmocka_unit_test(test_property_decode_garbage),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
