/* smpp_pdu.h — the bytes of the SMPP 3.4 PDUs an SMSC sends: framing, the 16-octet header,
 * and the bodies the session reads (deliver_sm, submit_sm_resp).
 *
 * Pure functions (no I/O, no libuv): smpp_session.c frames its read buffer and decodes what it
 * receives with them, and tests/fuzz/fuzz_smpp_pdu.c feeds them arbitrary bytes. Bodies are
 * unpacked with libsmpp34, which keeps its error text in globals: call these from one thread
 * at a time (the session's loop thread). Every decoded field is copied into the caller's
 * struct; nothing points into the input and nothing is left for the caller to free.
 */
#ifndef HD_SMPP_PDU_H
#define HD_SMPP_PDU_H

#include <stddef.h>
#include <stdint.h>

#define HD_SMPP_HDR_LEN 16
#define HD_SMPP_PAYLOAD_MAX 1024 /* libsmpp34 keeps at most this much of one TLV (MAX_TLV_SIZE) */

typedef struct hd_smpp_hdr {
  uint32_t command_length, command_id, command_status, sequence_number;
} hd_smpp_hdr;

/* Reads the header of the PDU at p. Returns 0, or -1 when fewer than 16 octets are there. */
int hd_smpp_header(const uint8_t *p, size_t len, hd_smpp_hdr *h);

enum hd_smpp_frame_result {
  HD_SMPP_FRAME_MORE = 0, /* not a whole PDU yet: read more */
  HD_SMPP_FRAME_PDU = 1,  /* one whole PDU of *pdu_len octets starts at buf */
  HD_SMPP_FRAME_BAD = -1, /* command_length below 16 or above max: the stream cannot be
                           * resynchronised; *pdu_len is the length it claimed */
};

/* Frames the PDU at the start of buf (len octets received so far). */
int hd_smpp_frame(const uint8_t *buf, size_t len, uint32_t max, uint32_t *pdu_len);

/* One deliver_sm (a receipt or a mobile-originated message), copied out. */
typedef struct hd_smpp_deliver_pdu {
  char source_addr[21], dest_addr[21]; /* C-strings as SMPP 3.4 sizes them */
  uint8_t esm_class, data_coding;
  int udhi;                            /* esm_class UDH indicator (0x40): sm starts with a UDH */
  uint8_t sm[HD_SMPP_PAYLOAD_MAX];     /* short_message, or the message_payload TLV when
                                        * short_message is empty */
  size_t sm_len;
  int payload;                         /* 1 when sm came from message_payload */
  char receipted_id[66];               /* receipted_message_id TLV (0x001E), cut at 65 octets */
  int has_receipted_id;
  int message_state;                   /* message_state TLV (0x0427), or -1 */
} hd_smpp_deliver_pdu;

/* Decodes a whole deliver_sm PDU (header included; its command_length is len, as framed).
 * Returns 0, HD_EINVAL when libsmpp34 refuses it (or would lose memory reading its TLVs), or
 * HD_ENOMEM; then err (if given) gets the reason. */
int hd_smpp_decode_deliver(const uint8_t *pdu, size_t len, hd_smpp_deliver_pdu *out, char *err,
                           size_t errlen);

/* The message_id of a submit_sm_resp PDU (header included) into id: unpacked by libsmpp34, or,
 * when it refuses the body, the C-string after the header as it stands (at most 65 octets).
 * "" when there is no body. Returns strlen(id). */
size_t hd_smpp_submit_resp_id(const uint8_t *pdu, size_t len, char id[66]);

#endif
