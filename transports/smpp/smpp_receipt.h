/* smpp_receipt.h — SMSC delivery receipts: the receipt text, the receipt TLVs and message ids.
 *
 * Pure functions (no I/O, no allocation): parse the short_message text of a receipt deliver_sm
 * (SMPP 3.4 Appendix B: "id:… sub:… dlvrd:… submit date:… done date:… stat:… err:… text:…",
 * read tolerantly), combine it with the receipted_message_id / message_state TLVs, and bring a
 * message id into one canonical form so that the id of a submit_sm_resp and the id in a receipt
 * of the same message compare equal as strings, whatever mix of hex and decimal, leading zeros
 * and letter case the SMSC uses (Kannel's msg-id-type problem). Safe on any thread.
 */
#ifndef HD_SMPP_RECEIPT_H
#define HD_SMPP_RECEIPT_H

#include <stddef.h>
#include <stdint.h>

#define HD_SMPP_ID_MAX 65 /* message_id is a C-string of at most 65 octets with its NUL */

/* How an SMSC writes its message ids, per [smsc NAME] msg_id_type. The submit_sm_resp id and
 * the receipted_message_id TLV use the "resp" form (SMPP 3.4 §5.3.2.12 says the TLV carries
 * the id the SMSC allocated at submit); the `id:` of the receipt text uses the "text" form. */
enum hd_smpp_id_type {
  HD_SMPP_ID_AUTO = 0,     /* opaque strings: compared without leading zeros, case-folded */
  HD_SMPP_ID_HEX = 1,      /* both hex */
  HD_SMPP_ID_DEC = 2,      /* both decimal */
  HD_SMPP_ID_HEX_DEC = 3,  /* submit_sm_resp hex, receipt text decimal (Kannel type 1) */
  HD_SMPP_ID_DEC_HEX = 4,  /* submit_sm_resp decimal, receipt text hex (Kannel type 2) */
};

/* Parses "auto", "hex", "dec", "hex_dec", "dec_hex". Returns 0 or -1. */
int hd_smpp_id_type_parse(const char *s, int *out);

/* Canonical form of an id as it appears in a submit_sm_resp or a receipted_message_id TLV
 * (from_text = 0) or in the `id:` field of a receipt text (from_text = 1): lower case, no
 * leading zeros ("0" for an all-zero id); a numeric id in a known base is re-written in the
 * submit_sm_resp's base, so both halves agree. An id too long for 64 bits, or not a number in
 * the base the type says, stays as the case-folded string without leading zeros. `out` gets at
 * most HD_SMPP_ID_MAX octets with the NUL. Returns 0, or -1 for an empty id. */
int hd_smpp_id_normalize(const char *id, size_t len, int type, int from_text, char *out);

/* Receipt states, as in the message_state TLV (SMPP 3.4 §5.3.2.35). */
enum hd_smpp_msg_state {
  HD_SMPP_MS_NONE = 0,
  HD_SMPP_MS_ENROUTE = 1,
  HD_SMPP_MS_DELIVERED = 2,
  HD_SMPP_MS_EXPIRED = 3,
  HD_SMPP_MS_DELETED = 4,
  HD_SMPP_MS_UNDELIVERABLE = 5,
  HD_SMPP_MS_ACCEPTED = 6,
  HD_SMPP_MS_UNKNOWN = 7,
  HD_SMPP_MS_REJECTED = 8,
};

typedef struct hd_smpp_receipt {
  char id[HD_SMPP_ID_MAX];  /* raw id from the TLV if present, else from the text; "" if none */
  int id_from_text;         /* 1 when id came from the text */
  int state;                /* hd_smpp_msg_state; the TLV wins over the text's stat: */
  char stat[8];             /* the text's stat: value, upper-cased ("" if none) */
  char err[8];              /* the text's err: value ("" if none) */
} hd_smpp_receipt;

/* Fills *r from a receipt's text (may be NULL/0) and TLVs (tlv_id NULL / tlv_state < 0 when
 * absent). Returns 0 when an id and a state were found, -1 otherwise. */
int hd_smpp_receipt_parse(const uint8_t *text, size_t len, const char *tlv_id, int tlv_state,
                          hd_smpp_receipt *r);

/* The message_state value for a stat: word (DELIVRD, EXPIRED, …), HD_SMPP_MS_NONE if unknown. */
int hd_smpp_stat_state(const char *stat);

/* Final states: 1 for DELIVERED, EXPIRED, DELETED, UNDELIVERABLE, REJECTED, UNKNOWN; 0 for
 * ENROUTE and ACCEPTED (intermediate notifications, not a receipt's last word). */
int hd_smpp_state_final(int state);

/* The upper-case stat: word for a state ("DELIVRD", "UNDELIV", …). */
const char *hd_smpp_state_name(int state);

#endif
