/* libFuzzer target: what an SMSC sends back about a message — the delivery receipt text
 * ("id:… sub:… dlvrd:… stat:… err:… text:…") with its receipted_message_id and message_state
 * TLVs (hd_smpp_receipt_parse), and message ids (hd_smpp_id_normalize), transports/smpp/
 * smpp_receipt.c. The PDUs around them (framing, deliver_sm, submit_sm_resp) are fuzz_smpp_pdu's,
 * which hands its decoded receipts on to the same functions.
 *
 * Input: a control byte (TLV state, whether the TLV id is given, id type), the receipt text,
 * a NUL, the TLV id.
 * Checks: a parsed receipt has an id and a state 1..8, its stat: upper-cased, every string
 * NUL-terminated in its field; the TLVs win over the text; normalized ids fit, have no upper
 * case; and the same number written as the SMSC may write it (the submit_sm_resp's base and
 * the receipt text's base per id type, any case, leading zeros) normalizes to one string on
 * both sides, as does an opaque id in another case with leading zeros. */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smpp_receipt.h"

static void check_norm(const char *id, size_t len) {
  char out[HD_SMPP_ID_MAX + 8];
  for (int type = 0; type <= 4; type++)
    for (int ft = 0; ft <= 1; ft++) {
      memset(out, 'Z', sizeof out);
      if (hd_smpp_id_normalize(id, len, type, ft, out) != 0) continue;
      size_t n = strnlen(out, sizeof out);
      if (n == 0 || n >= HD_SMPP_ID_MAX) abort();
      for (size_t i = 0; i < n; i++)
        if (isupper((unsigned char)out[i])) abort();
    }
}

/* v written in base 10 or 16, with `zeros` leading zeros, upper case when `up`. */
static void write_id(char *buf, size_t len, uint64_t v, int base, int zeros, int up) {
  int o = 0;
  for (int i = 0; i < zeros; i++) buf[o++] = '0';
  snprintf(buf + o, len - (size_t)o, base == 16 ? (up ? "%llX" : "%llx") : "%llu",
           (unsigned long long)v);
}

static void check_same_message(uint64_t v, uint8_t how) {
  static const int resp_base[5] = {0, 16, 10, 16, 10}, text_base[5] = {0, 16, 10, 10, 16};
  for (int type = 1; type <= 4; type++) {
    char resp[40], text[40], a[HD_SMPP_ID_MAX], b[HD_SMPP_ID_MAX];
    write_id(resp, sizeof resp, v, resp_base[type], how & 3, how & 4);
    write_id(text, sizeof text, v, text_base[type], (how >> 3) & 3, how & 32);
    if (hd_smpp_id_normalize(resp, strlen(resp), type, 0, a) != 0 ||
        hd_smpp_id_normalize(text, strlen(text), type, 1, b) != 0 || strcmp(a, b) != 0)
      abort();
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  uint8_t ctl = data[0];
  data++, size--;
  const uint8_t *nul = memchr(data, 0, size);
  size_t tlen = nul ? (size_t)(nul - data) : size;
  char *tlv = NULL;
  if (nul && (ctl & 0x10)) {
    size_t n = size - tlen - 1;
    tlv = malloc(n + 1);
    if (!tlv) return 0;
    memcpy(tlv, nul + 1, n);
    tlv[n] = 0;
  }
  int tlv_state = (int)(ctl & 0x0f) - 1; /* -1 (absent) .. 14 */
  /* the text exactly as long as it is: no NUL after it */
  uint8_t *text = malloc(tlen ? tlen : 1);
  if (!text) abort();
  memcpy(text, data, tlen);

  hd_smpp_receipt r;
  int rc = hd_smpp_receipt_parse(tlen ? text : NULL, tlen, tlv, tlv_state, &r);
  if (strnlen(r.id, sizeof r.id) >= sizeof r.id || strnlen(r.stat, sizeof r.stat) >= sizeof r.stat ||
      strnlen(r.err, sizeof r.err) >= sizeof r.err)
    abort();
  for (const char *c = r.stat; *c; c++)
    if (islower((unsigned char)*c)) abort();
  if (rc == 0 && (!*r.id || r.state < 1 || r.state > 8)) abort();
  if (tlv_state >= 1 && tlv_state <= 8 && r.state != tlv_state) abort();
  if (tlv && *tlv && (r.id_from_text || strncmp(r.id, tlv, sizeof r.id - 1) != 0)) abort();
  (void)hd_smpp_state_final(r.state);
  (void)hd_smpp_state_name(r.state);
  (void)hd_smpp_stat_state(r.stat);
  if (*r.id) check_norm(r.id, strlen(r.id));
  check_norm((const char *)text, tlen);

  /* Ids from the input's first 8 bytes, written each way an SMSC may. */
  uint64_t v = 0;
  memcpy(&v, data, size < 8 ? size : 8);
  if (ctl & 0x20) v &= 0xffffffffu;
  check_same_message(v, ctl);
  /* An opaque id (letters and digits): case and leading zeros do not matter. */
  char opq[HD_SMPP_ID_MAX], up[HD_SMPP_ID_MAX + 3], a[HD_SMPP_ID_MAX], b[HD_SMPP_ID_MAX];
  size_t n = 0;
  for (size_t i = 0; i < tlen && n < 40; i++)
    if (isalnum(text[i])) opq[n++] = (char)text[i];
  opq[n] = 0;
  if (n) {
    snprintf(up, sizeof up, "00%s", opq);
    for (char *c = up; *c; c++) *c = (char)toupper((unsigned char)*c);
    if (hd_smpp_id_normalize(opq, n, HD_SMPP_ID_AUTO, 0, a) != 0 ||
        hd_smpp_id_normalize(up, strlen(up), HD_SMPP_ID_AUTO, 1, b) != 0 || strcmp(a, b) != 0)
      abort();
  }
  free(text);
  free(tlv);
  return 0;
}
