/* smpp_pdu.c — framing and decoding of received SMPP PDUs (see smpp_pdu.h).
 *
 * Two traps of libsmpp34's smpp34_unpack (1.14) are kept away from it here:
 *  - it reads C-strings with strlen() before checking them against the buffer, so a string
 *    without its NUL runs past the PDU: it only ever gets a copy with a NUL after the end;
 *  - a TLV it cannot read (too long for the PDU or for its tag) is malloc'd but never linked
 *    into the list it returns, so destroy_tlv cannot free it: every such deliver_sm from an
 *    SMSC would leak 1 KiB. deliver_tlvs_ok() walks the TLVs exactly as its
 *    do_tlv_deliver_sm does (def_frame/deliver_sm.tlv) and refuses those PDUs first.
 */
#include "smpp_pdu.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <stdint.h>
/* libsmpp34's headers need <stdint.h> first and in this order. */
#include <smpp34.h>
#include <smpp34_structs.h>
#include <smpp34_params.h>

#include "herald/error.h"

_Static_assert(HD_SMPP_PAYLOAD_MAX == MAX_TLV_SIZE, "the payload buffer holds one libsmpp34 TLV");

static uint32_t be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int hd_smpp_header(const uint8_t *p, size_t len, hd_smpp_hdr *h) {
  if (len < HD_SMPP_HDR_LEN) return -1;
  h->command_length = be32(p);
  h->command_id = be32(p + 4);
  h->command_status = be32(p + 8);
  h->sequence_number = be32(p + 12);
  return 0;
}

int hd_smpp_frame(const uint8_t *buf, size_t len, uint32_t max, uint32_t *pdu_len) {
  if (len < 4) return HD_SMPP_FRAME_MORE;
  uint32_t n = be32(buf);
  *pdu_len = n;
  /* A length is judged as soon as its 4 octets are in: no point waiting for the rest. */
  if (n < HD_SMPP_HDR_LEN || n > max) return HD_SMPP_FRAME_BAD;
  return len < n ? HD_SMPP_FRAME_MORE : HD_SMPP_FRAME_PDU;
}

/* A copy of the PDU with a NUL after it (see the top). NULL when out of memory. */
static uint8_t *nul_copy(const uint8_t *pdu, size_t len) {
  uint8_t *c = malloc(len + 1);
  if (!c) return NULL;
  memcpy(c, pdu, len);
  c[len] = 0;
  return c;
}

/* Skips one C-string at *off; 0 when its NUL is inside the PDU. */
static int skip_cstr(const uint8_t *p, size_t len, size_t *off) {
  if (*off >= len) return -1;
  const uint8_t *z = memchr(p + *off, 0, len - *off);
  if (!z) return -1;
  *off = (size_t)(z - p) + 1;
  return 0;
}

/* How do_tlv_deliver_sm reads a tag's value: 1 or 2 (a fixed U08/U16, whatever the length
 * says), or -n for an octet string of at most n octets. */
static int tlv_kind(uint16_t tag) {
  switch (tag) {
  case TLVID_user_message_reference: case TLVID_source_port: case TLVID_destination_port:
  case TLVID_sar_msg_ref_num: case TLVID_its_session_info:
    return 2;
  case TLVID_sar_total_segments: case TLVID_sar_segment_seqnum: case TLVID_user_response_code:
  case TLVID_privacy_indicator: case TLVID_payload_type: case TLVID_language_indicator:
  case TLVID_message_state: case TLVID_set_dpf: case TLVID_source_network_type:
    return 1;
  case TLVID_callback_num:
    return -19;
  case TLVID_source_subaddress: case TLVID_dest_subaddress:
    return -23;
  case TLVID_network_error_code:
    return -3;
  case TLVID_receipted_message_id:
    return -65;
  default:
    return -MAX_TLV_SIZE;
  }
}

/* 0 when libsmpp34 either reads every TLV of this deliver_sm or fails before the first (and
 * so allocates none it would lose); -1 when it would fail inside one. The mandatory part is
 * walked only to find where the TLVs start: where this walk fails, libsmpp34's fails too. */
static int deliver_tlvs_ok(const uint8_t *p, size_t len, char *err, size_t errlen) {
  size_t off = HD_SMPP_HDR_LEN;
  if (skip_cstr(p, len, &off) != 0) return 0; /* service_type */
  off += 2;                                    /* source_addr_ton, _npi */
  if (skip_cstr(p, len, &off) != 0) return 0; /* source_addr */
  off += 2;
  if (skip_cstr(p, len, &off) != 0) return 0; /* destination_addr */
  off += 3;                                    /* esm_class, protocol_id, priority_flag */
  if (skip_cstr(p, len, &off) != 0) return 0; /* schedule_delivery_time */
  if (skip_cstr(p, len, &off) != 0) return 0; /* validity_period */
  off += 4;                        /* registered_delivery … sm_default_msg_id */
  if (off >= len) return 0;
  off += 1 + (size_t)p[off];       /* sm_length, short_message */
  if (off > len) return 0;
  while (off < len) {
    if (len - off < 4) {
      if (err && errlen) snprintf(err, errlen, "truncated TLV header at octet %zu", off);
      return -1;
    }
    uint16_t tag = (uint16_t)(p[off] << 8 | p[off + 1]);
    size_t tlen = (size_t)(p[off + 2] << 8 | p[off + 3]);
    off += 4;
    int kind = tlv_kind(tag);
    size_t need = kind > 0 ? (size_t)kind : tlen;
    if (need > len - off || (kind < 0 && tlen > (size_t)-kind)) {
      if (err && errlen)
        snprintf(err, errlen, "TLV 0x%04x: length %zu does not fit", (unsigned)tag, tlen);
      return -1;
    }
    off += need;
  }
  return 0;
}

int hd_smpp_decode_deliver(const uint8_t *pdu, size_t len, hd_smpp_deliver_pdu *out, char *err,
                           size_t errlen) {
  memset(out, 0, sizeof *out);
  out->message_state = -1;
  if (len > INT_MAX) {
    if (err && errlen) snprintf(err, errlen, "PDU too long");
    return HD_EINVAL;
  }
  if (deliver_tlvs_ok(pdu, len, err, errlen) != 0) return HD_EINVAL;
  uint8_t *c = nul_copy(pdu, len);
  if (!c) {
    if (err && errlen) snprintf(err, errlen, "out of memory");
    return HD_ENOMEM;
  }
  deliver_sm_t d;
  memset(&d, 0, sizeof d);
  /* What it did link into d.tlv before a later failure is ours to free: both paths. */
  int rc = smpp34_unpack(DELIVER_SM, &d, c, (int)len);
  free(c);
  if (rc != 0) {
    if (err && errlen) snprintf(err, errlen, "%s", smpp34_strerror);
    destroy_tlv(d.tlv);
    return HD_EINVAL;
  }
  /* libsmpp34 NUL-terminates within the field; %.*s keeps us inside it regardless. */
  snprintf(out->source_addr, sizeof out->source_addr, "%.*s", (int)sizeof d.source_addr,
           (const char *)d.source_addr);
  snprintf(out->dest_addr, sizeof out->dest_addr, "%.*s", (int)sizeof d.destination_addr,
           (const char *)d.destination_addr);
  out->esm_class = d.esm_class;
  out->data_coding = d.data_coding;
  out->udhi = (d.esm_class & 0x40) != 0;
  /* sm_length is one octet (up to 255) but the field holds 254: never read past it. */
  size_t sml = d.sm_length < sizeof d.short_message ? d.sm_length : sizeof d.short_message;
  memcpy(out->sm, d.short_message, sml);
  out->sm_len = sml;
  tlv_t *t;
  smpp34_tlv_for_each(t, d.tlv) {
    if (t->tag == TLVID_receipted_message_id) {
      size_t n = t->length < sizeof out->receipted_id - 1 ? t->length
                                                            : sizeof out->receipted_id - 1;
      memcpy(out->receipted_id, t->value.octet, n);
      out->receipted_id[n] = 0;
      out->has_receipted_id = 1;
    } else if (t->tag == TLVID_message_state && t->length >= 1) {
      out->message_state = t->value.val08;
    } else if (t->tag == TLVID_message_payload && d.sm_length == 0) {
      size_t n = t->length < sizeof out->sm ? t->length : sizeof out->sm;
      memcpy(out->sm, t->value.octet, n);
      out->sm_len = n;
      out->payload = 1;
    }
  }
  destroy_tlv(d.tlv);
  return 0;
}

size_t hd_smpp_submit_resp_id(const uint8_t *pdu, size_t len, char id[66]) {
  id[0] = 0;
  if (len <= HD_SMPP_HDR_LEN) return 0;
  submit_sm_resp_t r;
  memset(&r, 0, sizeof r);
  uint8_t *c = len <= INT_MAX ? nul_copy(pdu, len) : NULL;
  int rc = c ? smpp34_unpack(SUBMIT_SM_RESP, &r, c, (int)len) : -1;
  free(c);
  if (rc == 0) {
    snprintf(id, 66, "%.*s", (int)sizeof r.message_id, (const char *)r.message_id);
  } else {
    size_t n = strnlen((const char *)pdu + HD_SMPP_HDR_LEN, len - HD_SMPP_HDR_LEN);
    if (n > 65) n = 65;
    memcpy(id, pdu + HD_SMPP_HDR_LEN, n);
    id[n] = 0;
  }
  return strlen(id);
}
