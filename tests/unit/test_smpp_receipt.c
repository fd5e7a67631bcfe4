/* test_smpp_receipt.c — delivery receipts of the SMPP transport (transports/smpp/smpp_receipt.h):
 * the receipt text read tolerantly (SMPP 3.4 Appendix B and the variants SMSCs send), the
 * receipted_message_id / message_state TLVs preferred over the text, and message ids brought
 * into one form so that the submit_sm_resp's id and the receipt's id compare equal whatever
 * mix of hex, decimal, leading zeros and letter case the SMSC uses (msg_id_type). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <string.h>

#include <cmocka.h>

#include "smpp_receipt.h"

static const char *norm(const char *id, int type, int from_text) {
  static char out[HD_SMPP_ID_MAX];
  if (hd_smpp_id_normalize(id, strlen(id), type, from_text, out) != 0) return "(error)";
  return out;
}

static void test_id_types(void **state) {
  (void)state;
  int t = -1;
  assert_int_equal(hd_smpp_id_type_parse("hex_dec", &t), 0);
  assert_int_equal(t, HD_SMPP_ID_HEX_DEC);
  assert_int_equal(hd_smpp_id_type_parse("Auto", &t), 0);
  assert_int_equal(t, HD_SMPP_ID_AUTO);
  assert_int_equal(hd_smpp_id_type_parse("octal", &t), -1);
  assert_int_equal(hd_smpp_id_type_parse(NULL, &t), -1);
}

static void test_normalize_auto(void **state) {
  (void)state;
  /* Opaque ids: case and leading zeros do not matter, nothing else is assumed. */
  assert_string_equal(norm("0003E8", HD_SMPP_ID_AUTO, 0), "3e8");
  assert_string_equal(norm("3e8", HD_SMPP_ID_AUTO, 1), "3e8");
  assert_string_equal(norm("  00A1-B2 ", HD_SMPP_ID_AUTO, 0), "a1-b2");
  assert_string_equal(norm("0000", HD_SMPP_ID_AUTO, 0), "0");
  assert_string_equal(norm("1000", HD_SMPP_ID_AUTO, 1), "1000");
  assert_string_equal(norm("", HD_SMPP_ID_AUTO, 0), "(error)");
  assert_string_equal(norm("   ", HD_SMPP_ID_AUTO, 0), "(error)");
}

static void test_normalize_mixed_bases(void **state) {
  (void)state;
  /* Kannel's msg-id-type 1: hex in the resp, decimal in the receipt — both become hex. */
  assert_string_equal(norm("000003E8", HD_SMPP_ID_HEX_DEC, 0), "3e8");
  assert_string_equal(norm("1000", HD_SMPP_ID_HEX_DEC, 1), "3e8");
  /* Type 2: decimal in the resp, hex in the receipt — both become decimal. */
  assert_string_equal(norm("01000", HD_SMPP_ID_DEC_HEX, 0), "1000");
  assert_string_equal(norm("3E8", HD_SMPP_ID_DEC_HEX, 1), "1000");
  /* Both hex, both decimal. */
  assert_string_equal(norm("00FF", HD_SMPP_ID_HEX, 1), "ff");
  assert_string_equal(norm("0042", HD_SMPP_ID_DEC, 0), "42");
  /* The largest 64-bit values convert; one more digit falls back to the string form. */
  assert_string_equal(norm("18446744073709551615", HD_SMPP_ID_HEX_DEC, 1), "ffffffffffffffff");
  assert_string_equal(norm("18446744073709551616", HD_SMPP_ID_HEX_DEC, 1),
                      "18446744073709551616");
  /* Not a number in the base the type says: compared as an opaque string. */
  assert_string_equal(norm("XY-0012", HD_SMPP_ID_DEC, 0), "xy-0012");
  assert_string_equal(norm("3e8", HD_SMPP_ID_DEC_HEX, 0), "3e8");
}

static void test_receipt_text_appendix_b(void **state) {
  (void)state;
  const char *t = "id:1000 sub:001 dlvrd:001 submit date:2403051020 done date:2403051021 "
                  "stat:DELIVRD err:000 text:hello stat:UNDELIV id:9";
  hd_smpp_receipt r;
  assert_int_equal(hd_smpp_receipt_parse((const uint8_t *)t, strlen(t), NULL, -1, &r), 0);
  assert_string_equal(r.id, "1000");
  assert_int_equal(r.id_from_text, 1);
  assert_int_equal(r.state, HD_SMPP_MS_DELIVERED); /* not the "stat:" inside text: */
  assert_string_equal(r.stat, "DELIVRD");
  assert_string_equal(r.err, "000");
}

static void test_receipt_text_variants(void **state) {
  (void)state;
  hd_smpp_receipt r;
  /* Upper-case keys, a blank after the colon, seconds in the dates, no text: at all. */
  const char *t = "ID: 0A1B SUB:001 DLVRD:000 SUBMIT DATE:240305102030 DONE DATE:240305102131 "
                  "STAT:undeliv ERR:034";
  assert_int_equal(hd_smpp_receipt_parse((const uint8_t *)t, strlen(t), NULL, -1, &r), 0);
  assert_string_equal(r.id, "0A1B");
  assert_string_equal(r.stat, "UNDELIV");
  assert_int_equal(r.state, HD_SMPP_MS_UNDELIVERABLE);
  assert_string_equal(r.err, "034");
  /* "sub:" must not be taken for "id:" (it ends in neither), nor "submit date:". */
  t = "sub:001 id:77 stat:EXPIRED";
  assert_int_equal(hd_smpp_receipt_parse((const uint8_t *)t, strlen(t), NULL, -1, &r), 0);
  assert_string_equal(r.id, "77");
  assert_int_equal(r.state, HD_SMPP_MS_EXPIRED);
  /* Not NUL-terminated: the length bounds the parse. */
  char buf[] = {'i', 'd', ':', '5', ' ', 's', 't', 'a', 't', ':', 'R', 'E', 'J', 'E', 'C', 'T',
                'D', 'X', 'X'};
  assert_int_equal(hd_smpp_receipt_parse((uint8_t *)buf, 17, NULL, -1, &r), 0);
  assert_string_equal(r.stat, "REJECTD");
  assert_int_equal(r.state, HD_SMPP_MS_REJECTED);
}

static void test_receipt_tlvs_win(void **state) {
  (void)state;
  hd_smpp_receipt r;
  /* The TLVs say the id in resp form and the state; the text's id and stat lose. */
  const char *t = "id:1000 stat:UNDELIV err:001";
  assert_int_equal(hd_smpp_receipt_parse((const uint8_t *)t, strlen(t), "3E8", 2, &r), 0);
  assert_string_equal(r.id, "3E8");
  assert_int_equal(r.id_from_text, 0);
  assert_int_equal(r.state, HD_SMPP_MS_DELIVERED);
  assert_string_equal(r.err, "001");
  /* TLVs only, no text. */
  assert_int_equal(hd_smpp_receipt_parse(NULL, 0, "abc", 3, &r), 0);
  assert_int_equal(r.state, HD_SMPP_MS_EXPIRED);
  /* An out-of-range message_state falls back to the text. */
  assert_int_equal(hd_smpp_receipt_parse((const uint8_t *)t, strlen(t), NULL, 99, &r), 0);
  assert_int_equal(r.state, HD_SMPP_MS_UNDELIVERABLE);
}

static void test_receipt_incomplete(void **state) {
  (void)state;
  hd_smpp_receipt r;
  const char *t = "stat:DELIVRD err:000";
  assert_int_equal(hd_smpp_receipt_parse((const uint8_t *)t, strlen(t), NULL, -1, &r), -1);
  t = "id:12 stat:SOMETHING";
  assert_int_equal(hd_smpp_receipt_parse((const uint8_t *)t, strlen(t), NULL, -1, &r), -1);
  assert_int_equal(hd_smpp_receipt_parse(NULL, 0, NULL, -1, &r), -1);
  assert_int_equal(hd_smpp_receipt_parse(NULL, 0, "", 2, &r), -1);
}

static void test_states(void **state) {
  (void)state;
  assert_int_equal(hd_smpp_stat_state("delivrd"), HD_SMPP_MS_DELIVERED);
  assert_int_equal(hd_smpp_stat_state("DELETED"), HD_SMPP_MS_DELETED);
  assert_int_equal(hd_smpp_stat_state("UNKNOWN"), HD_SMPP_MS_UNKNOWN);
  assert_int_equal(hd_smpp_stat_state("nope"), HD_SMPP_MS_NONE);
  assert_true(hd_smpp_state_final(HD_SMPP_MS_DELIVERED));
  assert_true(hd_smpp_state_final(HD_SMPP_MS_REJECTED));
  assert_false(hd_smpp_state_final(HD_SMPP_MS_ENROUTE));
  assert_false(hd_smpp_state_final(HD_SMPP_MS_ACCEPTED));
  assert_false(hd_smpp_state_final(HD_SMPP_MS_NONE));
  assert_string_equal(hd_smpp_state_name(HD_SMPP_MS_UNDELIVERABLE), "UNDELIV");
  assert_string_equal(hd_smpp_state_name(42), "UNKNOWN");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_id_types),
      cmocka_unit_test(test_normalize_auto),
      cmocka_unit_test(test_normalize_mixed_bases),
      cmocka_unit_test(test_receipt_text_appendix_b),
      cmocka_unit_test(test_receipt_text_variants),
      cmocka_unit_test(test_receipt_tlvs_win),
      cmocka_unit_test(test_receipt_incomplete),
      cmocka_unit_test(test_states),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
