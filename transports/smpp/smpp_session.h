/* smpp_session.h — one SMPP 3.4 ESME session: a TCP connection to an SMSC and its bind.
 *
 * The session owns its socket, its state machine (DOWN → CONNECTING → BINDING → BOUND →
 * UNBINDING), one timer that serves every deadline (reconnect backoff, connect and bind
 * timeout, enquire_link, response timeouts, throttle pauses), the window of outstanding
 * submit_sm keyed by sequence number, and the per-session rate limit. PDUs are packed and
 * unpacked with libsmpp34; the 16-octet framing, the sequence numbers and everything with a
 * clock are ours. It runs on one libuv loop and never blocks.
 *
 * It decides nothing about messages: a submit comes in (hd_smpp_session_submit), exactly one
 * `submitted` callback reports what became of it; deliver_sm (receipts and mobile-originated
 * messages) are handed up raw through `deliver`; what to do with them is the pool's business
 * (smpp_pool.h).
 *
 * Ownership: the caller owns each hd_smpp_submit until its `submitted` callback has run (the
 * session keeps a pointer while it is outstanding). The session copies its conf. After
 * hd_smpp_session_stop() the `closed` callback runs exactly once, when every handle is closed;
 * only then may hd_smpp_session_free() be called. Loop thread only.
 */
#ifndef HD_SMPP_SESSION_H
#define HD_SMPP_SESSION_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define HD_SMPP_SM_MAX 254 /* short_message octets SMPP allows (one GSM SMS carries 140) */

/* Everything one [smsc NAME] section says. Durations in milliseconds. */
typedef struct hd_smpp_conf {
  char name[65];
  char host[256];
  int port;
  char system_id[16];      /* C-strings sized as SMPP 3.4 §4.1 (with the NUL) */
  char password[9];
  char system_type[13];
  int split_bind;          /* 0: bind_transceiver; 1: bind_transmitter + bind_receiver */
  int window;              /* outstanding submit_sm */
  double rate;             /* submit_sm per second; 0 = unlimited */
  int64_t enquire_ms, response_ms, reconnect_min_ms, reconnect_max_ms, throttle_ms;
  char source_addr[21];
  uint8_t source_ton, source_npi, dest_ton, dest_npi, registered_delivery;
  int id_type;             /* enum hd_smpp_id_type (smpp_receipt.h) */
} hd_smpp_conf;

enum hd_smpp_mode { HD_SMPP_TRX = 0, HD_SMPP_TX = 1, HD_SMPP_RX = 2 };

enum hd_smpp_state {
  HD_SMPP_DOWN = 0,        /* not connected; waiting for the reconnect timer */
  HD_SMPP_CONNECTING = 1,  /* resolving or connecting */
  HD_SMPP_BINDING = 2,     /* bind sent, no bind_resp yet */
  HD_SMPP_BOUND = 3,
  HD_SMPP_UNBINDING = 4,   /* unbind sent on stop */
  HD_SMPP_STOPPED = 5,     /* stop() called; handles closing or closed */
};

/* What became of one submit_sm. */
enum hd_smpp_result {
  HD_SMPP_OK = 0,            /* submit_sm_resp status 0; message_id given */
  HD_SMPP_THROTTLED = 1,     /* ESME_RTHROTTLED / ESME_RMSGQFUL: send again later */
  HD_SMPP_REJECTED_TEMP = 2, /* an error status that may pass (system error, …) */
  HD_SMPP_REJECTED_PERM = 3, /* an error status about the message itself (bad address, …) */
  HD_SMPP_TIMEOUT = 4,       /* no response in time: the SMSC may or may not have it */
  HD_SMPP_LINK_LOST = 5,     /* the link dropped while it was outstanding: same uncertainty */
  HD_SMPP_CANCELED = 6,      /* never sent (stop) */
};

typedef struct hd_smpp_submit {
  /* set by the caller */
  char dest[21];               /* destination_addr, digits */
  char validity[17];           /* validity_period (SMPP time format), "" = SMSC default */
  uint8_t esm_class, data_coding, sm_len;
  uint8_t sm[HD_SMPP_SM_MAX];
  void *ud;
  /* the session's, while outstanding */
  uint32_t seq;
} hd_smpp_submit;

/* An incoming deliver_sm as it came (pointers valid during the callback only). */
typedef struct hd_smpp_deliver {
  const char *source_addr, *dest_addr;
  uint8_t esm_class, data_coding;
  const uint8_t *sm;           /* short_message, or the message_payload TLV when that is set */
  size_t sm_len;
  const char *receipted_id;    /* TLV 0x001E, or NULL */
  int message_state;           /* TLV 0x0427, or -1 */
} hd_smpp_deliver;

typedef struct hd_smpp_session hd_smpp_session;

typedef struct hd_smpp_handler {
  /* The state changed. On a failed bind `status` is the bind_resp's command_status. */
  void (*state)(void *ud, hd_smpp_session *s, int state, uint32_t status);
  /* Exactly once per accepted submit. message_id is the raw id (HD_SMPP_OK only). */
  void (*submitted)(void *ud, hd_smpp_session *s, hd_smpp_submit *sub, int result,
                    uint32_t status, const char *message_id);
  /* A deliver_sm; returns the command_status for its deliver_sm_resp (0 = taken). */
  uint32_t (*deliver)(void *ud, hd_smpp_session *s, const hd_smpp_deliver *dv);
  /* The session may take a submit again (window slot freed, pause over, just bound). */
  void (*ready)(void *ud, hd_smpp_session *s);
  /* After stop(): every handle is closed. */
  void (*closed)(void *ud, hd_smpp_session *s);
  /* One log line: event name, then key=value fields. */
  void (*log)(void *ud, hd_smpp_session *s, int level, const char *event, const char *fmt, ...)
      __attribute__((format(printf, 5, 6)));
} hd_smpp_handler;

/* A session in state DOWN. Returns 0 or HD_ENOMEM. */
int hd_smpp_session_new(uv_loop_t *loop, const hd_smpp_conf *conf, int mode,
                        const hd_smpp_handler *h, void *ud, hd_smpp_session **out);
/* Connect now (and reconnect with backoff whenever the link drops, until stop). */
void hd_smpp_session_start(hd_smpp_session *s);
/* Unbind if bound (waiting up to response_ms for unbind_resp), then close. Outstanding
 * submits end with HD_SMPP_LINK_LOST. `closed` runs when done. */
void hd_smpp_session_stop(hd_smpp_session *s);
void hd_smpp_session_free(hd_smpp_session *s);

/* 0 when a submit may go out now; > 0: milliseconds until the rate limit or a throttle pause
 * allows one; -1: not now (not bound, window full, receiver-only, stopping) — `ready` says
 * when that changes. */
int64_t hd_smpp_session_wait_ms(const hd_smpp_session *s);
/* Send one submit_sm. Returns 0 (ends in one `submitted`), or HD_EAGAIN when wait_ms != 0,
 * or HD_EINVAL when it cannot be packed. */
int hd_smpp_session_submit(hd_smpp_session *s, hd_smpp_submit *sub);

int hd_smpp_session_state(const hd_smpp_session *s);
int hd_smpp_session_mode(const hd_smpp_session *s);
int hd_smpp_session_outstanding(const hd_smpp_session *s); /* submit_sm in the window */
const hd_smpp_conf *hd_smpp_session_conf(const hd_smpp_session *s);

/* Name of a command_status for logs ("ESME_RTHROTTLED"), or "0x…". buf >= 16 octets. */
const char *hd_smpp_status_name(uint32_t status, char *buf, size_t len);

#endif
