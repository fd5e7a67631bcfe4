/* test_wap_wire.c — an independent wire check of transports/smpp/codec: the SMS parts of a WAP
 * Push SI and of texts are packed into SMPP submit_sm PDUs by libsmpp34 (a second SMPP
 * implementation), written into a pcap file as one TCP stream on loopback addresses (a file
 * only: no socket is opened), and dissected by tshark (SMPP → GSM SMS UD → WSP → WBXML,
 * PROTOCOLS.md §1.7). The test reads tshark's text and checks that Wireshark's own decoders
 * find the href, the text and the si-id after reassembling the parts, and that GSM texts sent
 * unpacked (one septet per octet) decode with Wireshark's "GSM 7-bit, unpacked" settings.
 * Needs tshark (scripts/deps.sh installs it); without it the test fails rather than passing
 * untested. HERALD_WIRE_DUMP=1 prints tshark's output, HERALD_WIRE_KEEP=1 keeps the captures. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

/* libsmpp34 wants this order (PROTOCOLS.md §1.5) */
#include "smpp34.h"
#include "smpp34_structs.h"
#include "smpp34_params.h"

#include "herald/error.h"
#include "sms_codec.h"
#include "wap_codec.h"

/* ---- pcap writing (LINKTYPE_RAW: each record is an IPv4 packet) ---- */

typedef struct pcap {
  FILE *f;
  uint32_t seq; /* next TCP sequence number of the client side */
  uint16_t ip_id;
  uint32_t ts;
} pcap_t;

static void put16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}
static void put32(uint8_t *p, uint32_t v) {
  put16(p, (uint16_t)(v >> 16));
  put16(p + 2, (uint16_t)v);
}

static void pcap_open(pcap_t *pc, const char *path) {
  pc->f = fopen(path, "wb");
  assert_non_null(pc->f);
  pc->seq = 1000;
  pc->ip_id = 1;
  pc->ts = 1700000000;
  /* classic pcap global header, host byte order (readers detect it from the magic) */
  const struct {
    uint32_t magic;
    uint16_t major, minor;
    int32_t thiszone;
    uint32_t sigfigs, snaplen, linktype;
  } gh = {0xA1B2C3D4, 2, 4, 0, 0, 65535, 101};
  assert_int_equal(fwrite(&gh, sizeof gh, 1, pc->f), 1);
}

/* One TCP segment 127.0.0.1:40000 → 127.0.0.1:2775 (SMPP's usual port) carrying `data`. */
static void pcap_segment(pcap_t *pc, const uint8_t *data, size_t len) {
  uint8_t pkt[20 + 20 + 4096];
  assert_true(len <= 4096);
  size_t total = 40 + len;
  memset(pkt, 0, 40);
  pkt[0] = 0x45;
  put16(pkt + 2, (uint16_t)total);
  put16(pkt + 4, pc->ip_id++);
  pkt[8] = 64;
  pkt[9] = 6; /* TCP */
  put32(pkt + 12, 0x7F000001);
  put32(pkt + 16, 0x7F000001);
  uint32_t sum = 0;
  for (int i = 0; i < 20; i += 2)
    sum += (uint32_t)(pkt[i] << 8 | pkt[i + 1]);
  while (sum >> 16)
    sum = (sum & 0xFFFF) + (sum >> 16);
  put16(pkt + 10, (uint16_t)~sum);
  uint8_t *t = pkt + 20;
  put16(t, 40000);
  put16(t + 2, 2775);
  put32(t + 4, pc->seq);
  put32(t + 8, 1);
  t[12] = 5 << 4;
  t[13] = 0x18; /* PSH, ACK */
  put16(t + 14, 65535);
  memcpy(pkt + 40, data, len);
  pc->seq += (uint32_t)len;
  const struct {
    uint32_t sec, usec, incl, orig;
  } rh = {pc->ts++, 0, (uint32_t)total, (uint32_t)total};
  assert_int_equal(fwrite(&rh, sizeof rh, 1, pc->f), 1);
  assert_int_equal(fwrite(pkt, total, 1, pc->f), 1);
}

/* Packs every part as a submit_sm with libsmpp34 and appends it to the capture. */
static void pcap_parts(pcap_t *pc, const hd_sms_parts_t *ps, uint32_t *seqno) {
  for (unsigned i = 0; i < ps->n; i++) {
    const hd_sms_part_t *p = &ps->part[i];
    submit_sm_t sm;
    memset(&sm, 0, sizeof sm);
    sm.command_id = SUBMIT_SM;
    sm.sequence_number = (*seqno)++;
    sm.source_addr_ton = 5;
    snprintf((char *)sm.source_addr, sizeof sm.source_addr, "HERALD");
    sm.dest_addr_ton = 1;
    sm.dest_addr_npi = 1;
    snprintf((char *)sm.destination_addr, sizeof sm.destination_addr, "15551234567");
    sm.esm_class = p->esm_class;
    sm.data_coding = p->data_coding;
    sm.sm_length = (uint8_t)p->sm_len;
    memcpy(sm.short_message, p->sm, p->sm_len);
    uint8_t buf[512];
    int len = 0;
    if (smpp34_pack(SUBMIT_SM, buf, sizeof buf, &len, &sm) != 0)
      fail_msg("smpp34_pack: %s", smpp34_strerror);
    /* libsmpp34 wrote command_length itself; it must match what it returned */
    assert_int_equal((uint32_t)(buf[0] << 24 | buf[1] << 16 | buf[2] << 8 | buf[3]), len);
    pcap_segment(pc, buf, (size_t)len);
  }
}

/* Runs tshark on the capture and returns its whole output (malloc'd). */
static char *tshark(const char *pcap_path, const char *opts) {
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "tshark -n -r '%s' %s 2>&1", pcap_path, opts);
  FILE *p = popen(cmd, "r");
  assert_non_null(p);
  size_t cap = 1 << 16, len = 0;
  char *out = malloc(cap);
  assert_non_null(out);
  size_t n;
  while ((n = fread(out + len, 1, cap - len - 1, p)) > 0) {
    len += n;
    if (cap - len < 4096) {
      cap *= 2;
      out = realloc(out, cap);
      assert_non_null(out);
    }
  }
  out[len] = '\0';
  int st = pclose(p);
  if (getenv("HERALD_WIRE_DUMP"))
    fprintf(stderr, "---- %s\n%s\n", cmd, out);
  if (st != 0)
    fail_msg("tshark failed (status %d); is it installed (scripts/deps.sh)?\n%s", st, out);
  return out;
}

static void assert_contains(const char *hay, const char *needle) {
  if (!strstr(hay, needle))
    fail_msg("tshark output lacks \"%s\" (HERALD_WIRE_DUMP=1 shows it)", needle);
}

/* Some line of `hay`, leading blanks aside, starts with `prefix` and ends with `suffix`. */
static void assert_line(const char *hay, const char *prefix, const char *suffix) {
  size_t pl = strlen(prefix), sl = strlen(suffix);
  for (const char *l = hay; *l;) {
    const char *e = strchr(l, '\n');
    if (!e)
      e = l + strlen(l);
    const char *b = l;
    while (b < e && *b == ' ')
      b++;
    if ((size_t)(e - b) >= pl + sl && !memcmp(b, prefix, pl) && !memcmp(e - sl, suffix, sl))
      return;
    l = *e ? e + 1 : e;
  }
  fail_msg("tshark output has no line \"%s…%s\" (HERALD_WIRE_DUMP=1 shows it)", prefix, suffix);
}

static int count(const char *hay, const char *needle) {
  int n = 0;
  for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
    n++;
  return n;
}

static char tmpdir[64];

static int setup(void **state) {
  snprintf(tmpdir, sizeof tmpdir, "/tmp/herald-wire-XXXXXX");
  return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state) {
  if (getenv("HERALD_WIRE_KEEP")) {
    fprintf(stderr, "captures kept in %s\n", tmpdir);
    return 0;
  }
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  return system(cmd) == 0 ? 0 : -1;
}

static void test_si_through_tshark(void **state) {
  /* Long enough for several SMS, so tshark must reassemble the WSP PDU before WBXML sees it. */
  const char *text =
      "Herald firmware 2.1.4 is ready for your handset. This release fixes the radio "
           "wake-up bug, improves battery life on standby, adds support for the new charging "
           "dock and updates the certificate store. Open the link to install it now; the "
           "download is about 12 MB and the update takes five minutes to complete.";
  const hd_wap_si_t si = {.href = "https://updates.example.org/fw/2.1.4",
                          .text = text,
                          .si_id = "rel-2.1.4@herald.example",
                          .created = "2024-03-05T10:20:30Z",
                          .expires = "2024-04-01T00:00:00Z",
                          .action = HD_WAP_SI_SIGNAL_HIGH};
  hd_sms_parts_t ps;
  assert_int_equal(hd_wap_si_sms(&si, NULL, 0x5A, &ps, NULL), 0);
  assert_int_equal(ps.n, 4); /* 6 + 105 + 306 + … octets of WSP PDU, 128 per part */
  char frags[64];
  snprintf(frags, sizeof frags, "[%u Short Message fragments", ps.n);

  char path[128];
  snprintf(path, sizeof path, "%s/si.pcap", tmpdir);
  pcap_t pc;
  pcap_open(&pc, path);
  uint32_t seqno = 1;
  pcap_parts(&pc, &ps, &seqno);
  /* and a single-SMS SL after it */
  const hd_wap_sl_t sl = {"http://www.example.com/ota/fw214.dd", HD_WAP_SL_EXECUTE_HIGH};
  hd_sms_parts_free(&ps);
  assert_int_equal(hd_wap_sl_sms(&sl, NULL, 0x5B, &ps, NULL), 0);
  assert_int_equal(ps.n, 1);
  pcap_parts(&pc, &ps, &seqno);
  hd_sms_parts_free(&ps);
  assert_int_equal(fclose(pc.f), 0);

  char *out = tshark(path, "-O smpp,gsm_sms_ud,wsp,wbxml");
  /* SMPP: four submit_sm with UDHI and 8-bit data coding */
  assert_int_equal(count(out, "Operation: Submit_sm (0x00000004)"), 5);
  assert_true(count(out, "Malformed") == 0);
  assert_line(out, "Destination port:", "(2948)");
  assert_line(out, "Originator port:", "(9200)");
  /* reassembled from every fragment, then WSP Push with the SIC content type and app id */
  assert_contains(out, frags);
  assert_contains(out, "PDU Type: Push (0x06)");
  assert_line(out, "Content-Type:", "application/vnd.wap.sic");
  assert_line(out, "X-Wap-Application-Id:", "x-wap-application:wml.ua");
  /* WBXML: SI 1.0 and the values, token by token as tshark renders them. tshark cuts lines
   * at 240 characters, so the text is checked by its start; the END tokens after it show that
   * the whole reassembled document parsed. */
  assert_contains(out, "Public ID: \"-//WAPFORUM//DTD SI 1.0//EN");
  assert_line(out, "2 |  Attr | A   0    |   Known attrStart 0x0E", "href='https://'");
  assert_line(out, "2 |  Attr | A   0    | STR_I", "'updates.example'");
  assert_line(out, "2 |  Attr | A   0    |   Known attrValue 0x08", "'.org/'");
  assert_line(out, "2 |  Attr | A   0    | STR_I", "'fw/2.1.4'");
  assert_line(out, "2 |  Attr | A   0    |   Known attrStart 0x11", "si-id=");
  assert_line(out, "2 |  Attr | A   0    | STR_I", "'rel-2.1.4@herald.example'");
  assert_line(out, "2 |  Attr | A   0    |   Known attrStart 0x08", "action='signal-high'");
  assert_line(out, "2 |  Attr | A   0    | OPAQUE", "%DateTime: 2024-03-05T10:20:30Z");
  assert_line(out, "2 |  Attr | A   0    | OPAQUE", "%DateTime: 2024-04-01T00:00:00Z");
  assert_contains(out, "'Herald firmware 2.1.4 is ready for your handset. This release fixes");
  assert_line(out, "3 | Tag   | T   0    | END (Known Tag 0x06)", "</indication>");
  assert_line(out, "2 | Tag   | T   0    | END (Known Tag 0x05)", "</si>");
  /* the SL */
  assert_line(out, "Content-Type:", "application/vnd.wap.slc");
  assert_contains(out, "Public ID: \"-//WAPFORUM//DTD SL 1.0//EN");
  assert_line(out, "2 |  Attr | A   0    |   Known attrStart 0x0A", "href='http://www.'");
  assert_line(out, "2 |  Attr | A   0    | STR_I", "'ota/fw214.dd'");
  assert_line(out, "2 |  Attr | A   0    |   Known attrStart 0x06", "action='execute-high'");
  free(out);
}

static void test_text_through_tshark(void **state) {
  /* GSM text over two parts with an extension character, and a UCS-2 text with an emoji. */
  char gsm[400];
  snprintf(gsm, sizeof gsm, "%s",
           "Update 2.1.4: costs 0€, takes {5} minutes. Grüße aus Köln! This message is long "
           "enough to need two SMS parts, so it carries the concatenation header and each "
           "part stays within 153 septets. END-OF-GSM-TEXT");
  hd_sms_parts_t ps;
  assert_int_equal(hd_sms_split_text(gsm, strlen(gsm), 0x21, 0, &ps, NULL), 0);
  assert_int_equal(ps.n, 2);
  assert_int_equal(ps.part[0].data_coding, 0x00);

  char path[128];
  snprintf(path, sizeof path, "%s/text.pcap", tmpdir);
  pcap_t pc;
  pcap_open(&pc, path);
  uint32_t seqno = 1;
  pcap_parts(&pc, &ps, &seqno);
  hd_sms_parts_free(&ps);
  const char *ucs = "Обновление готово 😀 END-OF-UCS2-TEXT";
  assert_int_equal(hd_sms_split_text(ucs, strlen(ucs), 0x22, 0, &ps, NULL), 0);
  assert_int_equal(ps.n, 1);
  assert_int_equal(ps.part[0].data_coding, 0x08);
  pcap_parts(&pc, &ps, &seqno);
  hd_sms_parts_free(&ps);
  assert_int_equal(fclose(pc.f), 0);

  /* PROTOCOLS.md §1.7: dcs-0 text needs these two preferences; unpacked septets are ours. */
  char *out = tshark(path, "-o 'smpp.decode_sms_over_smpp:GSM 7-bit' -o 'smpp.gsm7_unpacked:TRUE' "
                           "-O smpp,gsm_sms_ud");
  assert_true(count(out, "Malformed") == 0);
  /* each part's septets, decoded by tshark as "GSM 7-bit" unpacked: part 1 ends exactly
   * after 153 septets (€, { and } count 2 each) */
  assert_line(out, "Message: ", "Update 2.1.4: costs 0€, takes {5} minutes. Grüße aus Köln! "
                                "This message is long enough to need two SMS parts, so it "
                                "carries the concatenation header a");
  assert_line(out, "Message: ", "nd each part stays within 153 septets. END-OF-GSM-TEXT");
  assert_contains(out, "[2 Short Message fragments (207 bytes): #1(153), #2(54)]");
  /* tshark 4.0's UCS-2 decoder does not join surrogate pairs (it shows the emoji as two
   * U+FFFD), so only the text around it is checked here; test_sms_codec checks the pair. */
  assert_line(out, "Message: Обновление готово ", " END-OF-UCS2-TEXT");
  free(out);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_si_through_tshark),
      cmocka_unit_test(test_text_through_tshark),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
