/* wap_codec.h — WAP Push over SMS: Service Indication / Service Loading documents in WBXML, the
 * WSP connectionless Push PDU around them, and the binary SMS parts that carry it. Pure code:
 * no I/O, thread-safe, never blocks (safe on the loop thread).
 *
 * What this module owns (PROTOCOLS.md §2):
 *   - validating SI/SL parameters (href absolute http(s) URL, dates ISO 8601 UTC
 *     "YYYY-MM-DDThh:mm:ssZ", text and attribute values well-formed) and writing the SI/SL XML
 *     with every value XML-escaped;
 *   - compiling it with libwbxml2 into WBXML 1.2, no string table, public id SI 1.0 (0x05) or
 *     SL 1.0 (0x06), charset UTF-8 (§2.3, §2.4);
 *   - the WSP connectionless Push PDU: TID, 0x06, headers length, content type, optional
 *     X-Wap-Application-Id, body (WAP-230 §8.2.4.1, PROTOCOLS.md §2.2);
 *   - the whole stack as binary SMS parts with the WDP port UDH 2948/9200 (+ concatenation),
 *     through sms_codec.h (§2.1).
 *
 * Ownership: inputs are borrowed for the duration of the call. Byte outputs (*out) are malloc'd:
 * free() them. SMS parts are returned in a caller-provided hd_sms_parts_t: hd_sms_parts_free().
 * On error nothing is allocated (*out = NULL, *out_len = 0, parts {NULL, 0}).
 *
 * Errors: 0 or a negative HD_E* code (herald/error.h): HD_EINVAL for invalid parameters (and
 * then `why`, when not NULL, points to a static English sentence naming the bad field),
 * HD_ETOOBIG when the push needs more than 255 SMS, HD_ENOMEM.
 */
#ifndef HERALD_WAP_CODEC_H
#define HERALD_WAP_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "sms_codec.h"

#ifdef __cplusplus
extern "C" {
#endif

/* SI action (WAP-167, PROTOCOLS.md §2.4). DEFAULT leaves the attribute out: the handset then uses
 * signal-medium. */
typedef enum {
  HD_WAP_SI_DEFAULT = 0,
  HD_WAP_SI_SIGNAL_NONE,
  HD_WAP_SI_SIGNAL_LOW,
  HD_WAP_SI_SIGNAL_MEDIUM,
  HD_WAP_SI_SIGNAL_HIGH,
  HD_WAP_SI_DELETE,
} hd_wap_si_action_t;

/* A Service Indication. Every string is NUL-terminated UTF-8; NULL leaves the item out.
 * href is required, except with action DELETE, where si_id is required instead (delete names the
 * SI to remove by its si-id, PROTOCOLS.md §2.4). */
typedef struct hd_wap_si {
  const char *href;    /* absolute http:// or https:// URL, printable ASCII, ≤ 1024 octets */
  const char *text;    /* what the user sees; may be NULL or empty */
  const char *si_id;   /* stable id per release so that a newer SI replaces the older */
  const char *created; /* "YYYY-MM-DDThh:mm:ssZ" or NULL */
  const char *expires; /* si-expires, same format, or NULL */
  hd_wap_si_action_t action;
} hd_wap_si_t;

/* SL action (WAP-168, PROTOCOLS.md §2.4). DEFAULT leaves the attribute out: execute-low. */
typedef enum {
  HD_WAP_SL_DEFAULT = 0,
  HD_WAP_SL_EXECUTE_LOW,
  HD_WAP_SL_EXECUTE_HIGH,
  HD_WAP_SL_CACHE,
} hd_wap_sl_action_t;

/* A Service Loading document. */
typedef struct hd_wap_sl {
  const char *href; /* required, as for SI */
  hd_wap_sl_action_t action;
} hd_wap_sl_t;

/* Validate an SI/SL without encoding it. Returns 0 or HD_EINVAL (with *why). */
int hd_wap_si_check(const hd_wap_si_t *si, const char **why);
int hd_wap_sl_check(const hd_wap_sl_t *sl, const char **why);

/* Write the SI/SL as XML text (with the WAP DOCTYPE), every value escaped. For logs, for a PAP
 * push to a real PPG, and for tests that compare with another encoder. *out is malloc'd and
 * NUL-terminated. Returns 0, HD_EINVAL or HD_ENOMEM. */
int hd_wap_si_xml(const hd_wap_si_t *si, char **out, size_t *out_len, const char **why);
int hd_wap_sl_xml(const hd_wap_sl_t *sl, char **out, size_t *out_len, const char **why);

/* Encode as WBXML 1.2 (`02 05 6A 00 …` for SI, `02 06 6A 00 …` for SL) with libwbxml2. Dates
 * are OPAQUE BCD with trailing zero octets dropped (WAP-167 §9.2.2, PROTOCOLS.md §2.4); text
 * loses leading and trailing white space (libwbxml2 does not preserve it). Returns 0, HD_EINVAL
 * or HD_ENOMEM. */
int hd_wap_si_wbxml(const hd_wap_si_t *si, uint8_t **out, size_t *out_len, const char **why);
int hd_wap_sl_wbxml(const hd_wap_sl_t *sl, uint8_t **out, size_t *out_len, const char **why);

/* WSP well-known content types (WAP-230 Appendix A table 40), as used in the Push PDU. */
#define HD_WAP_CT_SIC 0x2E /* application/vnd.wap.sic → 0xAE on the wire */
#define HD_WAP_CT_SLC 0x30 /* application/vnd.wap.slc → 0xB0 */

/* Push application ids (WINA registry), sent as short-integers. */
#define HD_WAP_APP_NONE (-1)  /* leave X-Wap-Application-Id out (the handset assumes wml.ua) */
#define HD_WAP_APP_PUSH_SIA 1 /* x-wap-application:push.sia */
#define HD_WAP_APP_WML_UA 2   /* x-wap-application:wml.ua → `AF 82` */

/* Options of the WSP Push PDU. Zero-initialised is NOT the default: use HD_WAP_PUSH_DEFAULTS. */
typedef struct hd_wap_push_opts {
  uint8_t tid;  /* WSP transaction id; any value (Kannel counts 0, 1, 2, …) */
  int app_id;   /* 0–127, or HD_WAP_APP_NONE */
} hd_wap_push_opts_t;
#define HD_WAP_PUSH_DEFAULTS ((hd_wap_push_opts_t){.tid = 0, .app_id = HD_WAP_APP_WML_UA})

/* Build the WSP connectionless Push PDU (WAP-230 §8.2.4.1):
 *   TID, 0x06, uintvar HeadersLen, content type (0x80 | content_type), [0xAF, 0x80 | app_id],
 *   body.
 * content_type is HD_WAP_CT_SIC or HD_WAP_CT_SLC (any well-known value < 0x80 is accepted).
 * No Content-Length or Encoding-Version header: the SMS length bounds the body and they cost
 * octets (PROTOCOLS.md §2.7). opts NULL = HD_WAP_PUSH_DEFAULTS. Returns 0, HD_EINVAL (bad
 * content type or app id) or HD_ENOMEM. */
int hd_wap_push_pdu(const hd_wap_push_opts_t *opts, uint8_t content_type, const uint8_t *body,
                    size_t body_len, uint8_t **out, size_t *out_len);

/* The whole stack: SI/SL → WBXML → WSP Push PDU → binary SMS parts with the 16-bit port IE
 * (destination 2948, source 9200) in every part, plus the concatenation IE with reference `ref`
 * when the PDU needs more than one SMS (133 octets in one SMS, 128 per part otherwise). The
 * parts have data_coding 0x04 and esm_class 0x40. opts NULL = HD_WAP_PUSH_DEFAULTS. Returns 0,
 * HD_EINVAL, HD_ETOOBIG or HD_ENOMEM. */
int hd_wap_si_sms(const hd_wap_si_t *si, const hd_wap_push_opts_t *opts, uint8_t ref,
                  hd_sms_parts_t *out, const char **why);
int hd_wap_sl_sms(const hd_wap_sl_t *sl, const hd_wap_push_opts_t *opts, uint8_t ref,
                  hd_sms_parts_t *out, const char **why);

#ifdef __cplusplus
}
#endif
#endif
