/* sms_codec.h — SMS text and binary encoding for SMPP submit_sm / deliver_sm. Pure code: no I/O,
 * no globals, thread-safe, never blocks (safe on the loop thread).
 *
 * What this module owns:
 *   - choosing the alphabet of a UTF-8 text: the GSM 03.38 default alphabet (3GPP TS 23.038 §6.2.1,
 *     with the basic extension table of §6.2.1.1 behind the escape 0x1B, which costs 2 septets)
 *     when every character has a GSM code, otherwise UCS-2 (UTF-16BE, characters outside the BMP
 *     as surrogate pairs);
 *   - splitting a text or a binary payload into SMS parts ready for submit_sm, each with its
 *     short_message octets (UDH included), esm_class and data_coding;
 *   - decoding a mobile-originated short_message (deliver_sm) back into UTF-8.
 * The SMPP session (another module) owns sockets, sequence_numbers and the concatenation
 * reference counter: it passes the reference in, one fresh value per message.
 *
 * GSM 7-bit over SMPP is sent UNPACKED: one septet per octet (values 0x00–0x7F), data_coding 0x00.
 * That is what Kannel's smsc_smpp and SMSCs expect over SMPP 3.4 (sm_length counts octets, so a
 * packed text could not say whether its last 7 bits are a septet), and what tshark decodes with
 * `-o smpp.decode_sms_over_smpp:"GSM 7-bit" -o smpp.gsm7_unpacked:TRUE` (PROTOCOLS.md §1.7).
 * With a UDH the short_message is the UDH octets followed by the unpacked septets; the SMSC adds
 * the fill bits when it packs for the air interface. hd_sms_gsm7_pack()/unpack() are there for the
 * rare SMSC that wants packed septets and for tests.
 *
 * Limits (PROTOCOLS.md §1.3, 3GPP TS 23.040 §9.2.3.24):
 *   single part: 160 septets / 70 UTF-16 units / 140 octets;
 *   with the 6-octet concatenation UDH `05 00 03 ref total seq` (IEI 0x00, 8-bit reference):
 *   153 septets / 67 units / 134 octets per part. An escape pair (0x1B + septet) and a surrogate
 *   pair are never split across parts, so a part may carry one unit less. At most 255 parts.
 *
 * Ownership: the caller provides an hd_sms_parts_t (on its stack or in its own struct); the split
 * functions fill it with a library-allocated array of parts, which hd_sms_parts_free() releases.
 * On error nothing is allocated and the struct is left empty ({NULL, 0}).
 * hd_sms_decode() returns a malloc'd NUL-terminated string: free() it.
 *
 * Errors: 0 or a negative HD_E* code (herald/error.h): HD_EINVAL (bad input: invalid UTF-8,
 * malformed UDH, a data_coding that is not text), HD_ETOOBIG (more than HD_SMS_MAX_PARTS parts),
 * HD_ENOMEM. Where a function takes `const char **why`, it may be NULL; on error it is set to a
 * static English sentence saying what was wrong (for logs and API error details).
 */
#ifndef HERALD_SMS_CODEC_H
#define HERALD_SMS_CODEC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* SMPP 3.4 §5.2.19 data_coding values produced or understood here. */
#define HD_SMS_DCS_GSM7 0x00   /* SMSC default alphabet = GSM 03.38, unpacked */
#define HD_SMS_DCS_ASCII 0x01  /* IA5 (decode only) */
#define HD_SMS_DCS_LATIN1 0x03 /* ISO-8859-1 (decode only) */
#define HD_SMS_DCS_BINARY 0x04 /* 8-bit data, no message class */
#define HD_SMS_DCS_UCS2 0x08   /* UTF-16BE */

/* SMPP 3.4 §5.2.12: short_message starts with a UDH. The messaging-mode bits (1–0) are the
 * session's choice: OR them into hd_sms_part_t.esm_class (Kannel sends 0x43). */
#define HD_SMS_ESM_UDHI 0x40

#define HD_SMS_UD_MAX 140      /* octets of user data in one SMS on the air */
#define HD_SMS_SM_MAX 160      /* largest short_message produced (160 unpacked septets) */
#define HD_SMS_MAX_PARTS 255   /* the concatenation IE counts parts in one octet */

/* Well-known WDP ports (WAP-259 Appendix B), for hd_sms_split_binary(). */
#define HD_SMS_PORT_WAP_PUSH 2948 /* 0x0B84: connectionless WAP push */
#define HD_SMS_PORT_WSP_CL 9200   /* 0x23F0: WSP connectionless */

/* Flags for hd_sms_split_text() and hd_sms_text_info(). */
#define HD_SMS_FORCE_UCS2 0x01 /* UCS-2 even when the text fits the GSM alphabet */

typedef enum {
  HD_SMS_ALPHABET_GSM7 = 0,
  HD_SMS_ALPHABET_UCS2 = 1,
  HD_SMS_ALPHABET_BINARY = 2,
} hd_sms_alphabet_t;

/* One SMS, ready for the submit_sm fields of the same names. */
typedef struct hd_sms_part {
  uint8_t sm[HD_SMS_SM_MAX]; /* short_message: UDH (udh_len octets, UDHL first), then payload */
  uint16_t sm_len;           /* → sm_length; never above HD_SMS_SM_MAX */
  uint8_t udh_len;           /* octets of UDH including the UDHL octet; 0 = no UDH */
  uint8_t esm_class;         /* HD_SMS_ESM_UDHI when udh_len > 0, else 0 */
  uint8_t data_coding;       /* HD_SMS_DCS_GSM7, _UCS2 or _BINARY */
  uint8_t seq;               /* 1-based position of this part */
  uint8_t total;             /* number of parts of the message */
  uint16_t units;            /* payload size: septets (GSM7), UTF-16 units (UCS2) or octets */
} hd_sms_part_t;

/* The parts of one message. Caller-provided; `part` is allocated by the split functions. */
typedef struct hd_sms_parts {
  hd_sms_part_t *part; /* n entries, in sending order (part[i].seq == i + 1) */
  unsigned n;
} hd_sms_parts_t;

/* Frees p->part and sets *p to {NULL, 0}. NULL and empty structs are fine. */
void hd_sms_parts_free(hd_sms_parts_t *p);

/* What hd_sms_split_text() would do with a text, without allocating. */
typedef struct hd_sms_text_info {
  hd_sms_alphabet_t alphabet; /* GSM7 or UCS2 */
  unsigned units;             /* septets (escapes count 2) or UTF-16 units of the whole text */
  unsigned parts;             /* SMS parts needed (may exceed HD_SMS_MAX_PARTS) */
} hd_sms_text_info_t;

/* Classify and measure `len` octets of UTF-8 (no NUL needed; an embedded NUL is U+0000, which
 * has no GSM code and forces UCS-2). Returns 0, or HD_EINVAL for invalid UTF-8 (overlong forms,
 * surrogates, code points above U+10FFFF, truncated sequences). */
int hd_sms_text_info(const char *utf8, size_t len, unsigned flags, hd_sms_text_info_t *info,
                     const char **why);

/* Split a UTF-8 text into SMS parts. One part without UDH when it fits (160 septets / 70
 * units); otherwise parts with the concatenation UDH `05 00 03 ref total seq` and esm_class
 * 0x40. `ref` is the 8-bit concatenation reference (unused for a single part). An empty text
 * gives one empty GSM part. Returns 0 with *out filled, HD_EINVAL (invalid UTF-8), HD_ETOOBIG
 * (more than 255 parts) or HD_ENOMEM. */
int hd_sms_split_text(const char *utf8, size_t len, uint8_t ref, unsigned flags,
                      hd_sms_parts_t *out, const char **why);

/* 16-bit application port addressing (IEI 0x05, 3GPP TS 23.040 §9.2.3.24.4). */
typedef struct hd_sms_ports {
  uint16_t dst;
  uint16_t src;
} hd_sms_ports_t;

/* Split a binary payload into 8-bit SMS parts (data_coding 0x04), 140 octets of UD per part,
 * UDH included. With `ports` (NULL = none) every part's UDH starts with the port IE
 * `05 04 dstHi dstLo srcHi srcLo`; when more than one part is needed the concatenation IE
 * `00 03 ref total seq` follows it. That is Kannel's order, and it repeats the port IE in every
 * part (PROTOCOLS.md §2.1). Capacities: ports single 133, ports + concat 128 per part, no ports
 * single 140, concat only 134. Parts are cut at fixed boundaries; the last carries the rest. A
 * part with a UDH has esm_class 0x40. An empty payload gives one part holding only the UDH (or
 * nothing). Returns 0, HD_ETOOBIG (more than 255 parts), HD_EINVAL (data NULL with len > 0) or
 * HD_ENOMEM. */
int hd_sms_split_binary(const uint8_t *data, size_t len, const hd_sms_ports_t *ports,
                        uint8_t ref, hd_sms_parts_t *out, const char **why);

/* What a received UDH said (filled by hd_sms_decode() when asked). */
typedef struct hd_sms_udh_info {
  uint8_t udh_len;     /* octets of UDH including UDHL; 0 = none */
  uint8_t has_concat;  /* IEI 0x00 or 0x08 present */
  uint16_t concat_ref; /* 8- or 16-bit reference */
  uint8_t concat_total, concat_seq;
  uint8_t has_ports;   /* IEI 0x04 or 0x05 present */
  uint16_t dst_port, src_port;
} hd_sms_udh_info_t;

/* Parse the UDH at the start of `sm` (call only when esm_class has 0x40). Unknown IEs are
 * skipped. Returns 0, or HD_EINVAL when UDHL or an IE runs past the end. */
int hd_sms_udh_parse(const uint8_t *sm, size_t len, hd_sms_udh_info_t *info);

/* Decode a deliver_sm short_message into UTF-8. When esm_class has 0x40 the UDH is skipped (and
 * described in *udh when udh is not NULL; otherwise *udh is zeroed). Understood data_coding:
 * 0x00 GSM 03.38 unpacked (one septet per octet, extension table behind 0x1B; the high bit of
 * each octet is ignored), 0xF0–0xF3 likewise (GSM DCS "message class" group, 7-bit), 0x01
 * ASCII, 0x03 Latin-1, 0x08 UCS-2/UTF-16BE. Lenient with content: an unknown escape gives the
 * base-table character (TS 23.038 §6.2.1.1), a lone surrogate or a dangling odd octet gives
 * U+FFFD. Strict with structure: HD_EINVAL for a malformed UDH or a data_coding that is not text
 * (binary 0x02/0x04, 0xF4–0xF7, anything else).
 * To reassemble a concatenated message, concatenate the parts' payloads (sm + udh_len) in seq
 * order and decode that once with esm_class 0: an escape or surrogate pair split by a sender
 * then decodes whole.
 * On success *out is a malloc'd NUL-terminated string (free() it) and *out_len its length; a
 * U+0000 sent in UCS-2, Latin-1 or ASCII stays in it, so use *out_len, not strlen(). */
int hd_sms_decode(const uint8_t *sm, size_t len, uint8_t data_coding, uint8_t esm_class,
                  char **out, size_t *out_len, hd_sms_udh_info_t *udh, const char **why);

/* Pack `n` septets (values 0x00–0x7F) into GSM 7-bit octets, LSB first (TS 23.038 §6.1.2.1.1),
 * after `fill_bits` zero bits (0–6; what follows a UDH on the air). Returns the octets written,
 * HD_EINVAL when fill_bits > 6, or HD_ETOOBIG when `cap` is too small. */
int hd_sms_gsm7_pack(const uint8_t *septets, size_t n, unsigned fill_bits, uint8_t *out,
                     size_t cap);
/* The inverse: read `n` septets from packed octets after `fill_bits` bits. Returns n, or
 * HD_EINVAL when fill_bits > 6 or `len` octets cannot hold them, HD_ETOOBIG when `cap` < n. */
int hd_sms_gsm7_unpack(const uint8_t *packed, size_t len, unsigned fill_bits, size_t n,
                       uint8_t *out, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
