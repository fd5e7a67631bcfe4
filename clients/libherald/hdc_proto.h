/* hdc_proto.h — the ipconn wire format: frames, a bounded msgpack reader and writer, frame
 * builders and an incremental frame splitter. Pure code: no I/O, no globals, thread-safe.
 *
 * The protocol itself is specified in docs/protocols/ipconn.md; this is one implementation of
 * it, shared by both ends (transports/ipconn in the broker, clients/agent and herald-bench), so
 * the code that writes a frame and the code that reads it are the same. The Python integration
 * tests speak the protocol with their own msgpack library, which keeps this file honest.
 *
 * A frame on the wire is a 4-byte big-endian body length, then the body: one msgpack map whose
 * key "t" names the frame type. Strings handed out by the decoder point into the frame body
 * and are NOT NUL-terminated: they live as long as the body does.
 *
 * Errors are 0 or a negative HDC_E* code from the one table below.
 */
#ifndef HERALD_HDC_PROTO_H
#define HERALD_HDC_PROTO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HDC_PROTO_VERSION 1
#define HDC_HEADER 4                      /* bytes of the length prefix */
#define HDC_MAX_FRAME_HARD (16u << 20)    /* no frame body is ever larger (16 MiB) */
#define HDC_MAX_HELLO 4096                /* largest frame accepted before the welcome */
#define HDC_MAX_ACK_IDS 1000              /* ids in one ack / acked frame */
#define HDC_MAX_DEPTH 64                  /* nesting accepted inside a payload */

/* X(name, value, text) */
#define HDC_ERRNO_MAP(X)                                              \
  X(EPROTO,    -1, "malformed frame or protocol violation")           \
  X(ETOOBIG,   -2, "frame larger than the limit")                     \
  X(ENOMEM,    -3, "out of memory")                                   \
  X(ETRUNC,    -4, "value runs past the end of the frame")            \
  X(ETYPE,     -5, "value of another type than expected")             \
  X(ECLOSED,   -6, "connection closed by the peer")                   \
  X(EDENIED,   -7, "the broker refused the connection (deny)")        \
  X(EGOAWAY,   -8, "the broker asked the client to go away")          \
  X(ETIMEDOUT, -9, "peer silent for too long")                        \
  X(EIO,       -10, "network error")                                  \
  X(ECANCELED, -11, "closed by this side")                            \
  X(EINVAL,    -12, "invalid argument")                              \
  X(ETLS,      -13, "TLS handshake or certificate verification failed")

typedef enum {
#define HDC__ERR_ENUM(name, val, text) HDC_##name = (val),
  HDC_ERRNO_MAP(HDC__ERR_ENUM)
#undef HDC__ERR_ENUM
} hdc_errno_t;

/* Text for an HDC_E* code; never NULL. */
const char *hdc_strerror(int err);

/* ---- growable byte buffer ---- */
typedef struct hdc_buf {
  uint8_t *p;
  uint32_t len, cap;
} hdc_buf;

/* Make room for n more bytes. 0 or HDC_ENOMEM (also when the buffer would pass 4 GiB). */
int hdc_buf_reserve(hdc_buf *b, size_t n);
/* Drop the first n bytes (already sent). Frees the storage when the buffer becomes empty. */
void hdc_buf_consume(hdc_buf *b, size_t n);
void hdc_buf_free(hdc_buf *b);

/* ---- msgpack writer: each returns 0 or HDC_ENOMEM ---- */
int hdc_mp_map(hdc_buf *b, uint32_t n);
int hdc_mp_array(hdc_buf *b, uint32_t n);
int hdc_mp_str(hdc_buf *b, const char *s, size_t len);
int hdc_mp_cstr(hdc_buf *b, const char *s);
int hdc_mp_uint(hdc_buf *b, uint64_t v);
int hdc_mp_int(hdc_buf *b, int64_t v);
int hdc_mp_bool(hdc_buf *b, int v);
int hdc_mp_nil(hdc_buf *b);
/* Append bytes that already are one msgpack value (a payload), as they are. */
int hdc_mp_raw(hdc_buf *b, const void *p, size_t len);

/* ---- msgpack reader over one buffer; never allocates, never reads past end ---- */
typedef struct hdc_rd {
  const uint8_t *p, *end;
} hdc_rd;

int hdc_rd_map(hdc_rd *r, uint32_t *n);
int hdc_rd_array(hdc_rd *r, uint32_t *n);
/* A str (not NUL-terminated; points into the buffer). */
int hdc_rd_str(hdc_rd *r, const char **s, uint32_t *len);
/* A non-negative integer of any msgpack integer encoding. */
int hdc_rd_uint(hdc_rd *r, uint64_t *v);
/* Any integer that fits int64_t. */
int hdc_rd_int(hdc_rd *r, int64_t *v);
/* Skip one complete value (any type, nesting up to HDC_MAX_DEPTH); start and len (either may be
 * NULL) give the bytes it occupied. Work is bounded by the buffer length. */
int hdc_rd_skip(hdc_rd *r, const uint8_t **start, size_t *len);
/* 0 if buf holds exactly one well-formed value within the depth cap. */
int hdc_mp_validate(const void *buf, size_t len);

/* ---- frames ---- */
typedef enum hdc_type {
  HDC_T_UNKNOWN = 0, /* a type this version does not know: ignore it */
  HDC_T_HELLO,
  HDC_T_WELCOME,
  HDC_T_DENY,
  HDC_T_MSG,
  HDC_T_ACK,
  HDC_T_ACKED,
  HDC_T_PING,
  HDC_T_PONG,
  HDC_T_GOAWAY,
} hdc_type;

/* Name of a frame type as on the wire ("hello"...); "unknown" for others. */
const char *hdc_type_name(hdc_type t);

typedef struct hdc_str {
  const char *p; /* NULL when the field is absent */
  uint32_t len;
} hdc_str;

/* A decoded frame. Only the fields of its type are meaningful; absent optional numbers are
 * left at the value noted. Strings and `data` point into the body that was decoded. */
typedef struct hdc_frame {
  hdc_type type;
  hdc_str type_name;        /* "t" as sent, also for HDC_T_UNKNOWN */
  uint64_t v;               /* hello, welcome, deny: protocol version (0 = absent) */
  hdc_str device, tenant, token, agent;                  /* hello */
  uint64_t heartbeat, idle, window, max_frame;           /* welcome (seconds, count, bytes) */
  hdc_str code, text, alt;                               /* deny, goaway */
  int64_t retry;            /* deny, goaway: seconds to wait before reconnecting (-1 = absent) */
  uint64_t id;              /* msg */
  hdc_str app, to;          /* msg (to: absent for broadcasts) */
  int64_t created, expires; /* msg: Unix ms */
  const uint8_t *data;      /* msg: the payload, one msgpack value */
  size_t data_len;
  const uint8_t *ids_raw;   /* ack, acked: the array's elements, read with hdc_frame_ids() */
  uint32_t nids, ids_len;   /* element count, bytes */
  uint64_t n;               /* ping, pong: echo token (0 = absent) */
} hdc_frame;

/* Decode one frame body. Checks every field's type, that the fields a type requires are
 * there, string limits (ids and tenant up to 128 bytes, token 512) and the payload's
 * well-formedness. Returns 0, HDC_EPROTO (missing/invalid field), HDC_ETRUNC or HDC_ETYPE.
 * Unknown keys are skipped; an unknown "t" decodes as HDC_T_UNKNOWN. */
int hdc_frame_decode(const uint8_t *body, size_t len, hdc_frame *f);
/* Copy up to cap ids of an ack/acked frame into out; returns how many were copied. */
size_t hdc_frame_ids(const hdc_frame *f, uint64_t *out, size_t cap);

/* A NUL-terminated copy of a frame string into out (truncated to outlen-1); returns out. */
char *hdc_str_copy(hdc_str s, char *out, size_t outlen);
/* 1 if s equals the C string z. */
int hdc_str_eq(hdc_str s, const char *z);

/* ---- frame builders: append one whole frame (length prefix included) to b ---- */
/* Start a frame: reserves the length prefix; returns its offset for hdc_frame_end, or -1
 * (HDC_ENOMEM). */
int64_t hdc_frame_begin(hdc_buf *b);
/* Patch the length of the frame begun at `at`. HDC_ETOOBIG past HDC_MAX_FRAME_HARD. */
int hdc_frame_end(hdc_buf *b, int64_t at);

int hdc_enc_hello(hdc_buf *b, const char *device, const char *tenant, const char *token,
                  const char *agent /* may be NULL */);
int hdc_enc_welcome(hdc_buf *b, uint64_t heartbeat_s, uint64_t idle_s, uint64_t window,
                    uint64_t max_frame);
/* retry_s < 0: no retry hint. */
int hdc_enc_deny(hdc_buf *b, const char *code, const char *text, int64_t retry_s);
/* to: NULL for a broadcast. data: one msgpack value, copied as is. */
int hdc_enc_msg(hdc_buf *b, uint64_t id, const char *app, int64_t created_ms,
                int64_t expires_ms, const char *to, const void *data, size_t data_len);
int hdc_enc_ack(hdc_buf *b, const uint64_t *ids, size_t n);   /* 1..HDC_MAX_ACK_IDS */
int hdc_enc_acked(hdc_buf *b, const uint64_t *ids, size_t n); /* 1..HDC_MAX_ACK_IDS */
int hdc_enc_ping(hdc_buf *b, uint64_t n);
int hdc_enc_pong(hdc_buf *b, uint64_t n);
/* retry_s < 0: no hint; alt: another "host:port" to use, or NULL. */
int hdc_enc_goaway(hdc_buf *b, const char *code, const char *text, int64_t retry_s,
                   const char *alt);

/* ---- incremental splitter ----
 * Feed it the bytes as they arrive. Complete frames inside the fed bytes are handed to the
 * callback in place (no copy); only a frame split across reads is kept, in a heap buffer that
 * grows with the bytes actually received (never to the declared size up front) and is freed
 * as soon as the frame is complete. An idle splitter holds no memory: 16 bytes in all. */
typedef struct hdc_framer {
  uint8_t *buf;   /* partial frame, prefix included; NULL when none */
  uint32_t len;   /* bytes in buf */
  uint32_t need;  /* whole frame size (prefix + body) once the prefix is known, else 0 */
} hdc_framer;

/* Called for each complete body. Return 0 to go on, anything else to stop feeding (the
 * value is returned by hdc_framer_feed; the rest of the input is dropped). */
typedef int (*hdc_frame_cb)(void *ud, const uint8_t *body, size_t len);

/* Split data into frames of at most max_body bytes. Returns 0, the callback's non-zero
 * value, HDC_ETOOBIG (a prefix above max_body), HDC_EPROTO (an empty frame) or HDC_ENOMEM. */
int hdc_framer_feed(hdc_framer *fr, const uint8_t *data, size_t len, uint32_t max_body,
                    hdc_frame_cb cb, void *ud);
/* Bytes held for a partial frame. */
static inline uint32_t hdc_framer_pending(const hdc_framer *fr) { return fr->len; }
void hdc_framer_free(hdc_framer *fr);

/* ---- reconnect pacing: exponential backoff with full jitter ---- */
typedef struct hdc_backoff {
  uint32_t base_ms, max_ms;
  uint32_t attempt;
  uint64_t rng; /* xorshift state; seed it (e.g. from the clock and pid) */
} hdc_backoff;

/* The next delay in ms: with cap = min(max, base * 2^attempt), uniform in [cap/2, cap]
 * ("equal jitter": never a burst of immediate reconnects); then attempt++. */
uint32_t hdc_backoff_next(hdc_backoff *b);
/* After a connection that worked: start again from base. */
static inline void hdc_backoff_reset(hdc_backoff *b) { b->attempt = 0; }

#ifdef __cplusplus
}
#endif
#endif
