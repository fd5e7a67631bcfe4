/* test_wap_codec.c — transports/smpp/codec/wap_codec: SI/SL WBXML against the byte-exact examples
 * in PROTOCOLS.md §2.4 (verified there against Kannel and libwbxml), the SI date OPAQUE rule,
 * the WSP connectionless Push PDU bytes of §2.2, the SMS parts of §2.1, and the refusals (bad
 * href, bad dates, text XML cannot carry). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "herald/error.h"
#include "wap_codec.h"

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

/* Byte strings with inline text: S("abc") expands to its characters. */
#define ASSERT_BYTES(got, got_len, want) \
  assert_bytes((got), (got_len), (const uint8_t *)(want), sizeof(want) - 1)

/* PROTOCOLS.md §2.4 "Full SI example", byte for byte. */
static const char si_example[] =
    "\x02\x05\x6A\x00"                       /* WBXML 1.2, SI 1.0, UTF-8, no string table */
    "\x45"                                   /* <si> with content */
    "\xC6"                                   /* <indication> with attributes and content */
    "\x0D\x03" "example" "\x00" "\x85"       /* href="http://www." "example" ".com/" */
    "\x03" "fw/2.1.4" "\x00"                 /*   "fw/2.1.4" */
    "\x11\x03" "upd-0001@broker.example" "\x00" /* si-id */
    "\x08"                                   /* action="signal-high" */
    "\x0A\xC3\x06\x20\x24\x03\x05\x10\x20"   /* created=2024-03-05T10:20:00Z */
    "\x10\xC3\x04\x20\x24\x04\x01"           /* si-expires=2024-04-01T00:00:00Z */
    "\x01"                                   /* end of attributes */
    "\x03" "Firmware 2.1.4 available" "\x00" /* text */
    "\x01\x01";                              /* </indication></si> */

static const hd_wap_si_t si_doc = {
    .href = "http://www.example.com/fw/2.1.4",
    .text = "Firmware 2.1.4 available",
    .si_id = "upd-0001@broker.example",
    .created = "2024-03-05T10:20:00Z",
    .expires = "2024-04-01T00:00:00Z",
    .action = HD_WAP_SI_SIGNAL_HIGH,
};

static void test_si_example_bytes(void **state) {
  uint8_t *wb;
  size_t len;
  assert_int_equal(hd_wap_si_wbxml(&si_doc, &wb, &len, NULL), 0);
  ASSERT_BYTES(wb, len, si_example);
  assert_int_equal(len, 99); /* the 99 octets of Kannel's worked example (§2.2) */
  free(wb);
}

static void test_sl_example_bytes(void **state) {
  /* PROTOCOLS.md §2.4 SL example (libwbxml's tokenization) */
  static const char want[] = "\x02\x06\x6A\x00"
                             "\x85"                          /* <sl/> with attributes only */
                             "\x0A\x03" "example" "\x00"     /* href="http://www." "example" */
                             "\x85\x03" "ota/fw214.dd" "\x00" /* ".com/" "ota/fw214.dd" */
                             "\x05"                          /* action="execute-low" */
                             "\x01";
  const hd_wap_sl_t sl = {"http://www.example.com/ota/fw214.dd", HD_WAP_SL_EXECUTE_LOW};
  uint8_t *wb;
  size_t len;
  assert_int_equal(hd_wap_sl_wbxml(&sl, &wb, &len, NULL), 0);
  ASSERT_BYTES(wb, len, want);
  free(wb);

  /* https + cache, and the default action leaves the attribute out */
  static const char want2[] = "\x02\x06\x6A\x00\x85"
                              "\x0B\x03" "a.example/x" "\x00" /* href="https://" "a.example/x" */
                              "\x07"                          /* action="cache" */
                              "\x01";
  const hd_wap_sl_t sl2 = {"https://a.example/x", HD_WAP_SL_CACHE};
  assert_int_equal(hd_wap_sl_wbxml(&sl2, &wb, &len, NULL), 0);
  ASSERT_BYTES(wb, len, want2);
  free(wb);
  static const char want3[] = "\x02\x06\x6A\x00\x85\x0B\x03" "a.example/x" "\x00\x01";
  const hd_wap_sl_t sl3 = {"https://a.example/x", HD_WAP_SL_DEFAULT};
  assert_int_equal(hd_wap_sl_wbxml(&sl3, &wb, &len, NULL), 0);
  ASSERT_BYTES(wb, len, want3);
  free(wb);
}

/* The date rule of PROTOCOLS.md §2.4 / WAP-167 §9.2.2: OPAQUE BCD, trailing 0x00 octets dropped,
 * zero octets inside kept. */
static void test_si_dates_opaque(void **state) {
  static const struct {
    const char *date;
    const char *opaque;
    size_t n;
  } v[] = {
      {"2024-03-05T10:20:30Z", "\xC3\x07\x20\x24\x03\x05\x10\x20\x30", 9},
      {"2024-03-05T10:20:00Z", "\xC3\x06\x20\x24\x03\x05\x10\x20", 8},
      {"2024-04-01T00:00:00Z", "\xC3\x04\x20\x24\x04\x01", 6},
      {"2024-03-05T10:00:05Z", "\xC3\x07\x20\x24\x03\x05\x10\x00\x05", 9},
      {"2000-01-01T00:00:00Z", "\xC3\x04\x20\x00\x01\x01", 6},
      {"2024-02-29T23:59:59Z", "\xC3\x07\x20\x24\x02\x29\x23\x59\x59", 9},
  };
  for (size_t i = 0; i < sizeof v / sizeof *v; i++) {
    const hd_wap_si_t si = {.href = "https://a.example/", .created = v[i].date};
    uint8_t *wb;
    size_t len;
    assert_int_equal(hd_wap_si_wbxml(&si, &wb, &len, NULL), 0);
    /* 02 05 6A 00 | 45 | 86 (indication, attributes only) | 0E 03 "a.example/" 00 | 0A <opaque> |
     * 01 | 01 */
    char want[64];
    size_t w = 0;
    memcpy(want + w, "\x02\x05\x6A\x00\x45\x86\x0E\x03" "a.example/" "\x00\x0A", 20);
    w += 20;
    memcpy(want + w, v[i].opaque, v[i].n);
    w += v[i].n;
    memcpy(want + w, "\x01\x01", 2);
    w += 2;
    assert_bytes(wb, len, (const uint8_t *)want, w);
    free(wb);
  }
}

static void test_bad_dates(void **state) {
  const char *bad[] = {
      "2024-03-05",                /* date only: libwbxml would encode it */
      "2024-03-05T10:20:30",       /* no Z */
      "2024-03-05T10:20:30+01:00", /* not UTC */
      "2024-03-05 10:20:30Z",
      "2024-13-01T00:00:00Z",
      "2024-00-10T00:00:00Z",
      "2024-02-30T00:00:00Z",
      "2023-02-29T00:00:00Z", /* not a leap year */
      "1900-02-29T00:00:00Z", /* nor this */
      "2024-04-31T00:00:00Z",
      "2024-03-05T24:00:00Z",
      "2024-03-05T10:60:00Z",
      "2024-03-05T10:20:60Z",
      "2024-3-5T10:20:30Z",
      "",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    const char *why = NULL;
    hd_wap_si_t si = {.href = "https://a.example/", .created = bad[i]};
    uint8_t *wb = (uint8_t *)1;
    size_t len = 5;
    assert_int_equal(hd_wap_si_wbxml(&si, &wb, &len, &why), HD_EINVAL);
    assert_null(wb);
    assert_int_equal(len, 0);
    assert_non_null(strstr(why, "created"));
    si.created = NULL;
    si.expires = bad[i];
    why = NULL;
    assert_int_equal(hd_wap_si_check(&si, &why), HD_EINVAL);
    assert_non_null(strstr(why, "si-expires"));
  }
  const hd_wap_si_t ok = {.href = "https://a.example/", .created = "2000-02-29T00:00:00Z"};
  assert_int_equal(hd_wap_si_check(&ok, NULL), 0);
}

static void test_bad_href(void **state) {
  const char *bad[] = {
      NULL,
      "",
      "ftp://a.example/x",
      "example.com/x",
      "//a.example/x",
      "HTTP:/a.example",
      "http://",
      "http:///path",
      "https://?q",
      "http://a.example/with space",
      "http://a.example/\"quote",
      "http://a.example/<tag>",
      "http://a.example/caf\xC3\xA9", /* non-ASCII must be %-escaped */
      "http://a.example/\n",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    const char *why = NULL;
    const hd_wap_si_t si = {.href = bad[i], .text = "x"};
    assert_int_equal(hd_wap_si_check(&si, &why), HD_EINVAL);
    assert_non_null(strstr(why, "href"));
    const hd_wap_sl_t sl = {.href = bad[i]};
    hd_sms_parts_t ps = {(hd_sms_part_t *)1, 3};
    why = NULL;
    assert_int_equal(hd_wap_sl_sms(&sl, NULL, 0, &ps, &why), HD_EINVAL);
    assert_null(ps.part);
    assert_int_equal(ps.n, 0);
    assert_non_null(strstr(why, "href"));
  }
  char longer[1100];
  memcpy(longer, "http://a.example/", 17);
  memset(longer + 17, 'x', sizeof longer - 18);
  longer[sizeof longer - 1] = '\0';
  const hd_wap_sl_t sl = {.href = longer};
  assert_int_equal(hd_wap_sl_check(&sl, NULL), HD_EINVAL);
  /* Accepted: query strings, %-escapes, ports, & (escaped into the XML). */
  const hd_wap_sl_t good = {.href = "https://a.example:8443/p%20q?a=1&b=2#frag"};
  assert_int_equal(hd_wap_sl_check(&good, NULL), 0);
}

static void test_si_delete_and_actions(void **state) {
  const char *why = NULL;
  /* delete by si-id alone */
  const hd_wap_si_t del = {.si_id = "upd-0001", .action = HD_WAP_SI_DELETE};
  uint8_t *wb;
  size_t len;
  assert_int_equal(hd_wap_si_wbxml(&del, &wb, &len, NULL), 0);
  static const char want[] = "\x02\x05\x6A\x00\x45\x86"
                             "\x11\x03" "upd-0001" "\x00" /* si-id */
                             "\x09"                       /* action="delete" */
                             "\x01\x01";
  ASSERT_BYTES(wb, len, want);
  free(wb);
  const hd_wap_si_t del2 = {.action = HD_WAP_SI_DELETE};
  assert_int_equal(hd_wap_si_check(&del2, &why), HD_EINVAL);
  const hd_wap_si_t bad_action = {.href = "http://a.example/", .action = 99};
  assert_int_equal(hd_wap_si_check(&bad_action, NULL), HD_EINVAL);
  const hd_wap_si_t empty_id = {.href = "http://a.example/", .si_id = ""};
  assert_int_equal(hd_wap_si_check(&empty_id, NULL), HD_EINVAL);

  /* action tokens 0x05–0x08 (PROTOCOLS.md §2.4) */
  const struct {
    hd_wap_si_action_t a;
    uint8_t tok;
  } acts[] = {{HD_WAP_SI_SIGNAL_NONE, 0x05},
              {HD_WAP_SI_SIGNAL_LOW, 0x06},
              {HD_WAP_SI_SIGNAL_MEDIUM, 0x07},
              {HD_WAP_SI_SIGNAL_HIGH, 0x08}};
  for (size_t i = 0; i < 4; i++) {
    const hd_wap_si_t si = {.href = "https://a.example/", .action = acts[i].a};
    assert_int_equal(hd_wap_si_wbxml(&si, &wb, &len, NULL), 0);
    /* ... 0E 03 "a.example/" 00 <action> 01 01 */
    assert_int_equal(len, 4 + 2 + 2 + 10 + 1 + 1 + 2);
    assert_int_equal(wb[len - 3], acts[i].tok);
    free(wb);
  }
}

static void test_text_escaping(void **state) {
  const hd_wap_si_t si = {.href = "http://a.example/?a=1&b=2",
                          .text = "5 < 6 & \"quotes\" 'too' > ∑",
                          .si_id = "id&<>"};
  char *xml;
  size_t xml_len;
  assert_int_equal(hd_wap_si_xml(&si, &xml, &xml_len, NULL), 0);
  assert_int_equal(strlen(xml), xml_len);
  assert_non_null(strstr(xml, "href=\"http://a.example/?a=1&amp;b=2\""));
  assert_non_null(strstr(xml, "si-id=\"id&amp;&lt;&gt;\""));
  assert_non_null(strstr(xml, ">5 &lt; 6 &amp; &quot;quotes&quot; &apos;too&apos; &gt; ∑<"));
  assert_non_null(strstr(xml, "<!DOCTYPE si PUBLIC \"-//WAPFORUM//DTD SI 1.0//EN\""));
  free(xml);

  /* In the WBXML the values come back unescaped, as inline strings. */
  uint8_t *wb;
  size_t len;
  assert_int_equal(hd_wap_si_wbxml(&si, &wb, &len, NULL), 0);
  static const char text[] = "\x03" "5 < 6 & \"quotes\" 'too' > ∑" "\x00\x01\x01";
  assert_true(len > sizeof text);
  assert_memory_equal(wb + len - (sizeof text - 1), text, sizeof text - 1);
  static const char href[] = "\x0C\x03" "a.example/?a=1&b=2" "\x00";
  assert_memory_equal(wb + 6, href, sizeof href - 1);
  free(wb);

  /* Text XML 1.0 cannot carry, and invalid UTF-8, are refused. */
  const char *bad[] = {"bell\a", "nul-free but \x01", "\xC3", "\xED\xA0\x80", "\xEF\xBF\xBF"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    const char *why = NULL;
    hd_wap_si_t b = {.href = "http://a.example/", .text = bad[i]};
    assert_int_equal(hd_wap_si_wbxml(&b, &wb, &len, &why), HD_EINVAL);
    assert_non_null(strstr(why, "text"));
    b.text = NULL;
    b.si_id = bad[i];
    assert_int_equal(hd_wap_si_check(&b, &why), HD_EINVAL);
    assert_non_null(strstr(why, "si-id"));
  }
  /* Tabs and newlines are fine. */
  const hd_wap_si_t nl = {.href = "http://a.example/", .text = "line 1\nline\t2"};
  assert_int_equal(hd_wap_si_check(&nl, NULL), 0);
}

/* ---- WSP ---------------------------------------------------------------------------------- */

static void test_wsp_push_pdu(void **state) {
  const uint8_t body[] = {0x02, 0x05, 0x6A, 0x00};
  uint8_t *pdu;
  size_t len;
  /* default: TID 0, Push, HeadersLen 3, application/vnd.wap.sic, X-Wap-Application-Id wml.ua */
  assert_int_equal(hd_wap_push_pdu(NULL, HD_WAP_CT_SIC, body, sizeof body, &pdu, &len), 0);
  ASSERT_BYTES(pdu, len, "\x00\x06\x03\xAE\xAF\x82\x02\x05\x6A\x00");
  free(pdu);

  /* SL content type, push.sia, TID 7 (the `AE AF 81` form of Kannel's second push, §2.2) */
  hd_wap_push_opts_t o = {.tid = 7, .app_id = HD_WAP_APP_PUSH_SIA};
  assert_int_equal(hd_wap_push_pdu(&o, HD_WAP_CT_SLC, body, 1, &pdu, &len), 0);
  ASSERT_BYTES(pdu, len, "\x07\x06\x03\xB0\xAF\x81\x02");
  free(pdu);

  /* no application id: HeadersLen 1 */
  o.app_id = HD_WAP_APP_NONE;
  assert_int_equal(hd_wap_push_pdu(&o, HD_WAP_CT_SIC, NULL, 0, &pdu, &len), 0);
  ASSERT_BYTES(pdu, len, "\x07\x06\x01\xAE");
  free(pdu);

  o.app_id = 128;
  assert_int_equal(hd_wap_push_pdu(&o, HD_WAP_CT_SIC, body, 4, &pdu, &len), HD_EINVAL);
  assert_null(pdu);
  o.app_id = -2;
  assert_int_equal(hd_wap_push_pdu(&o, HD_WAP_CT_SIC, body, 4, &pdu, &len), HD_EINVAL);
  assert_int_equal(hd_wap_push_pdu(NULL, 0xAE, body, 4, &pdu, &len), HD_EINVAL);
}

/* ---- the whole stack as SMS ----------------------------------------------------------------- */

static void test_si_single_sms(void **state) {
  hd_sms_parts_t ps;
  assert_int_equal(hd_wap_si_sms(&si_doc, NULL, 0x33, &ps, NULL), 0);
  assert_int_equal(ps.n, 1);
  const hd_sms_part_t *p = &ps.part[0];
  assert_int_equal(p->data_coding, 0x04);
  assert_int_equal(p->esm_class, 0x40);
  assert_int_equal(p->udh_len, 7);
  assert_int_equal(p->sm_len, 7 + 6 + 99);
  /* UDH ports 2948/9200, then WSP 00 06 03 AE AF 82, then the SI example */
  ASSERT_BYTES(p->sm, 13, "\x06\x05\x04\x0B\x84\x23\xF0\x00\x06\x03\xAE\xAF\x82");
  assert_memory_equal(p->sm + 13, si_example, 99);
  hd_sms_parts_free(&ps);
}

static void test_si_multi_sms(void **state) {
  /* A long text makes the WSP PDU span parts; they must carry ports + concat, 128 octets each,
   * and concatenate back to exactly the PDU. */
  char text[301];
  memset(text, 'T', sizeof text - 1);
  text[sizeof text - 1] = '\0';
  const hd_wap_si_t si = {.href = "https://updates.example.org/fw/2.1.4",
                          .text = text,
                          .si_id = "rel-2.1.4",
                          .expires = "2030-01-01T00:00:00Z",
                          .action = HD_WAP_SI_SIGNAL_MEDIUM};
  uint8_t *wb, *pdu;
  size_t wb_len, pdu_len;
  assert_int_equal(hd_wap_si_wbxml(&si, &wb, &wb_len, NULL), 0);
  hd_wap_push_opts_t o = {.tid = 3, .app_id = HD_WAP_APP_WML_UA};
  assert_int_equal(hd_wap_push_pdu(&o, HD_WAP_CT_SIC, wb, wb_len, &pdu, &pdu_len), 0);
  free(wb);
  assert_true(pdu_len > 256 && pdu_len <= 384); /* three parts */

  hd_sms_parts_t ps;
  assert_int_equal(hd_wap_si_sms(&si, &o, 0xA5, &ps, NULL), 0);
  assert_int_equal(ps.n, 3);
  uint8_t cat[512];
  size_t cl = 0;
  for (unsigned i = 0; i < ps.n; i++) {
    const hd_sms_part_t *p = &ps.part[i];
    const uint8_t udh[] = {0x0B, 0x05, 0x04, 0x0B, 0x84, 0x23, 0xF0, 0x00, 0x03, 0xA5, 0x03,
                           (uint8_t)(i + 1)};
    assert_bytes(p->sm, 12, udh, sizeof udh);
    assert_int_equal(p->udh_len, 12);
    assert_true(p->sm_len <= 140);
    if (i < 2)
      assert_int_equal(p->sm_len, 140);
    memcpy(cat + cl, p->sm + 12, p->sm_len - 12u);
    cl += p->sm_len - 12u;
  }
  assert_bytes(cat, cl, pdu, pdu_len);
  free(pdu);
  hd_sms_parts_free(&ps);

  /* Too large for 255 parts */
  static char huge[255 * 128 + 10];
  memset(huge, 'h', sizeof huge - 1);
  huge[sizeof huge - 1] = '\0';
  const hd_wap_si_t big = {.href = "https://a.example/", .text = huge};
  ps.part = (hd_sms_part_t *)1;
  assert_int_equal(hd_wap_si_sms(&big, NULL, 0, &ps, NULL), HD_ETOOBIG);
  assert_null(ps.part);
}

static void test_sl_sms(void **state) {
  const hd_wap_sl_t sl = {"https://a.example/x", HD_WAP_SL_EXECUTE_HIGH};
  hd_sms_parts_t ps;
  assert_int_equal(hd_wap_sl_sms(&sl, NULL, 0, &ps, NULL), 0);
  assert_int_equal(ps.n, 1);
  ASSERT_BYTES(ps.part[0].sm, ps.part[0].sm_len,
               "\x06\x05\x04\x0B\x84\x23\xF0"       /* UDH */
               "\x00\x06\x03\xB0\xAF\x82"           /* WSP: slc, wml.ua */
               "\x02\x06\x6A\x00\x85\x0B\x03" "a.example/x" "\x00\x06\x01"); /* execute-high */
  hd_sms_parts_free(&ps);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_si_example_bytes),
      cmocka_unit_test(test_sl_example_bytes),
      cmocka_unit_test(test_si_dates_opaque),
      cmocka_unit_test(test_bad_dates),
      cmocka_unit_test(test_bad_href),
      cmocka_unit_test(test_si_delete_and_actions),
      cmocka_unit_test(test_text_escaping),
      cmocka_unit_test(test_wsp_push_pdu),
      cmocka_unit_test(test_si_single_sms),
      cmocka_unit_test(test_si_multi_sms),
      cmocka_unit_test(test_sl_sms),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
