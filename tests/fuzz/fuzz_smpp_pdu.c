/* libFuzzer target: the byte stream an SMSC sends to an ESME, read as smpp_session.c reads it
 * — framed by hd_smpp_frame (transports/smpp/smpp_pdu.c) at fuzzer-chosen read boundaries,
 * each PDU's header read, each PDU decoded as a deliver_sm (hd_smpp_decode_deliver, libsmpp34
 * underneath) and as a submit_sm_resp (hd_smpp_submit_resp_id), and a decoded receipt handed
 * on to hd_smpp_receipt_parse and hd_smpp_id_normalize as smpp_pool.c does.
 *
 * Input: a control byte (bits 0-6: read size - 1; bit 7: a small PDU limit, 512, instead of
 * the session's 70000), then the stream.
 * Checks: the split never changes which PDUs come out or where a bad length stops the stream
 * (fed whole vs in pieces, through a buffer that keeps only the unframed tail as the session's
 * does); a framed PDU is 16..max octets and its header's command_length is its length; decoded
 * strings are NUL-terminated in their fields, the message is at most 1024 octets, the UDH flag
 * is esm_class's bit, message_state is -1 or an octet; a submit_sm_resp id is at most 65
 * octets; decoding is deterministic (the same PDU decodes the same twice). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smpp_pdu.h"
#include "smpp_receipt.h"

#define SESSION_MAX 70000 /* smpp_session.c's PDU_MAX */

typedef struct seen {
  uint64_t hash; /* FNV-1a over the PDUs, with their lengths */
  size_t pdus;
  int bad;       /* the stream ended on a bad command_length */
  uint32_t bad_len;
} seen;

static uint64_t fnv(uint64_t h, const uint8_t *p, size_t n) {
  h ^= n;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
  return h * 1099511628211ull;
}

static void check_str(const char *s, size_t size) {
  if (strnlen(s, size) >= size) abort();
}

/* What smpp_pool.c's on_receipt does with a receipt (esm_class type 1 or 8). */
static void receipt(const hd_smpp_deliver_pdu *d) {
  hd_smpp_receipt r;
  int rc = hd_smpp_receipt_parse(d->sm_len ? d->sm : NULL, d->sm_len,
                                 d->has_receipted_id ? d->receipted_id : NULL, d->message_state,
                                 &r);
  check_str(r.id, sizeof r.id);
  if (rc != 0) return;
  if (!*r.id || r.state < 1 || r.state > 8) abort();
  (void)hd_smpp_state_final(r.state);
  for (int type = 0; type <= 4; type++) {
    char id[HD_SMPP_ID_MAX];
    if (hd_smpp_id_normalize(r.id, strlen(r.id), type, r.id_from_text, id) == 0)
      check_str(id, sizeof id);
  }
}

static void on_pdu(seen *sn, const uint8_t *p, uint32_t len, uint32_t max) {
  sn->hash = fnv(sn->hash, p, len);
  sn->pdus++;
  if (len < HD_SMPP_HDR_LEN || len > max) abort();
  hd_smpp_hdr h;
  if (hd_smpp_header(p, len, &h) != 0 || h.command_length != len) abort();

  /* The decoders get the PDU in a buffer of exactly its length, so ASan sees any overread. */
  uint8_t *copy = malloc(len);
  if (!copy) abort();
  memcpy(copy, p, len);

  static hd_smpp_deliver_pdu d, d2;
  char err[256];
  int rc = hd_smpp_decode_deliver(copy, len, &d, err, sizeof err);
  if (rc == 0) {
    check_str(d.source_addr, sizeof d.source_addr);
    check_str(d.dest_addr, sizeof d.dest_addr);
    check_str(d.receipted_id, sizeof d.receipted_id);
    if (d.sm_len > sizeof d.sm) abort();
    if (d.udhi != ((d.esm_class & 0x40) != 0)) abort();
    if (d.message_state < -1 || d.message_state > 255) abort();
    if (hd_smpp_decode_deliver(copy, len, &d2, err, sizeof err) != 0 ||
        strcmp(d.source_addr, d2.source_addr) != 0 || strcmp(d.dest_addr, d2.dest_addr) != 0 ||
        d.sm_len != d2.sm_len || memcmp(d.sm, d2.sm, d.sm_len) != 0 ||
        d.has_receipted_id != d2.has_receipted_id ||
        strcmp(d.receipted_id, d2.receipted_id) != 0 || d.message_state != d2.message_state)
      abort();
    int type = (d.esm_class >> 2) & 0x0F;
    if (type == 0x1 || type == 0x8) receipt(&d);
  } else {
    check_str(err, sizeof err);
  }

  char id[66], id2[66];
  size_t n = hd_smpp_submit_resp_id(copy, len, id);
  if (n > 65 || strlen(id) != n) abort();
  if (hd_smpp_submit_resp_id(copy, len, id2) != n || strcmp(id, id2) != 0) abort();
  if (n) {
    char norm[HD_SMPP_ID_MAX];
    if (hd_smpp_id_normalize(id, n, HD_SMPP_ID_AUTO, 0, norm) == 0) check_str(norm, sizeof norm);
  }
  free(copy);
}

/* Frames everything in buf[0..*blen) as the session's on_read does; keeps the unframed tail.
 * Returns -1 once a bad length was seen. */
static int drain(seen *sn, uint8_t *buf, size_t *blen, uint32_t max) {
  size_t off = 0;
  for (;;) {
    uint32_t len = 0;
    int fr = hd_smpp_frame(buf + off, *blen - off, max, &len);
    if (fr == HD_SMPP_FRAME_BAD) {
      if (*blen - off < 4 || (len >= HD_SMPP_HDR_LEN && len <= max)) abort();
      sn->bad = 1;
      sn->bad_len = len;
      return -1;
    }
    if (fr == HD_SMPP_FRAME_MORE) {
      if (*blen - off >= 4 && len <= *blen - off) abort();
      break;
    }
    if (fr != HD_SMPP_FRAME_PDU || len > *blen - off) abort();
    on_pdu(sn, buf + off, len, max);
    off += len;
  }
  memmove(buf, buf + off, *blen - off);
  *blen -= off;
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  uint8_t ctl = data[0];
  data++, size--;
  uint32_t max = ctl & 0x80 ? 512 : SESSION_MAX;
  size_t step = (size_t)(ctl & 0x7f) + 1;

  seen whole = {14695981039346656037ull, 0, 0, 0};
  uint8_t *a = malloc(size ? size : 1);
  if (!a) abort();
  memcpy(a, data, size);
  size_t alen = size;
  drain(&whole, a, &alen, max);

  seen parts = {14695981039346656037ull, 0, 0, 0};
  uint8_t *b = malloc(size ? size : 1);
  if (!b) abort();
  size_t blen = 0;
  for (size_t off = 0; off < size; off += step) {
    size_t n = size - off < step ? size - off : step;
    memcpy(b + blen, data + off, n);
    blen += n;
    if (drain(&parts, b, &blen, max) != 0) break;
  }
  if (whole.pdus != parts.pdus || whole.hash != parts.hash || whole.bad != parts.bad ||
      whole.bad_len != parts.bad_len)
    abort();
  if (!whole.bad && (alen != blen || memcmp(a, b, alen) != 0)) abort();
  free(a);
  free(b);
  return 0;
}
