/* smpp_session.c — one SMPP 3.4 ESME session on libuv (see smpp_session.h).
 *
 * Framing: every PDU starts with command_length (big-endian, header included); bytes are
 * collected in s->rbuf until a whole PDU is there, then dispatched. A length below 16 or above
 * PDU_MAX cannot be resynchronised: generic_nack ESME_RINVCMDLEN and drop the link. Framing and
 * the decoding of received bodies are smpp_pdu.c's (pure, fuzzed); acting on them is ours.
 *
 * Timers: one uv_timer_t per session, always armed for the earliest deadline of the state
 * (reconnect, connect/bind timeout, enquire_link due, the oldest outstanding request's response
 * deadline, the end of a throttle pause, the unbind timeout).
 *
 * libsmpp34 packs and unpacks bodies; it keeps its error text in globals, which is fine on the
 * one loop thread. It silently truncates over-long C-strings, so the conf is length-checked
 * where it is read (smpp_pool.c) and destination addresses here.
 */
#include "smpp_session.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <stdint.h>
/* libsmpp34's headers need <stdint.h> first and in this order. */
#include <smpp34.h>
#include <smpp34_structs.h>
#include <smpp34_params.h>

#include "herald/error.h"
#include "smpp_pdu.h"

#define PDU_MAX 70000          /* largest PDU accepted (message_payload can reach 64 KiB) */
#define OUT_EXTRA 4            /* outstanding slots beyond the window: bind, enquire, unbind */
#define SEQ_MAX 0x7FFFFFFFu
#define UNBIND_WAIT_MS 2000    /* on stop, at most this long for unbind_resp: shutdown waits */

enum { OUT_BIND = 1, OUT_ENQUIRE, OUT_UNBIND, OUT_SUBMIT };

typedef struct outstanding {
  uint32_t seq;            /* 0 = free slot */
  int kind;
  uint64_t deadline;
  hd_smpp_submit *sub;
} outstanding;

struct hd_smpp_session {
  uv_loop_t *loop;
  hd_smpp_conf conf;
  int mode;
  const hd_smpp_handler *h;
  void *ud;
  int state;
  int stopping;
  /* handles */
  uv_timer_t timer;
  uv_tcp_t tcp;
  uv_connect_t creq;
  uv_getaddrinfo_t gai;
  int tcp_open, gai_pending, timer_open, closing_handles, closed_sent;
  uint32_t gai_gen;         /* conn_gen when the resolution started */
  uint32_t conn_gen;       /* bumps per connection: late callbacks of an old one are ignored */
  /* input */
  uint8_t *rbuf;
  size_t rlen, rcap;
  /* sequence numbers and requests in flight */
  uint32_t next_seq;
  outstanding *out;
  int nout_cap, nsubmits;
  /* deadlines (uv_now milliseconds) */
  uint64_t reconnect_at, connect_deadline, last_rx, pause_until;
  int64_t backoff_ms, throttle_backoff_ms;
  double next_send_at;     /* rate limit: earliest time of the next submit */
};

#define LOG(s, lvl, ev, ...) (s)->h->log((s)->ud, (s), (lvl), (ev), __VA_ARGS__)
enum { L_DEBUG = 0, L_INFO = 1, L_WARN = 2, L_ERROR = 3 };

static void arm_timer(hd_smpp_session *s);
static void drop(hd_smpp_session *s, const char *why);
static void begin_connect(hd_smpp_session *s);

static const char *mode_name(int mode) {
  return mode == HD_SMPP_TX ? "transmitter" : mode == HD_SMPP_RX ? "receiver" : "transceiver";
}

const char *hd_smpp_status_name(uint32_t status, char *buf, size_t len) {
  static const struct {
    uint32_t v;
    const char *n;
  } names[] = {
      {ESME_ROK, "ESME_ROK"},             {ESME_RINVMSGLEN, "ESME_RINVMSGLEN"},
      {ESME_RINVCMDLEN, "ESME_RINVCMDLEN"}, {ESME_RINVCMDID, "ESME_RINVCMDID"},
      {ESME_RINVBNDSTS, "ESME_RINVBNDSTS"}, {ESME_RALYBND, "ESME_RALYBND"},
      {ESME_RSYSERR, "ESME_RSYSERR"},     {ESME_RINVSRCADR, "ESME_RINVSRCADR"},
      {ESME_RINVDSTADR, "ESME_RINVDSTADR"}, {ESME_RBINDFAIL, "ESME_RBINDFAIL"},
      {ESME_RINVPASWD, "ESME_RINVPASWD"}, {ESME_RINVSYSID, "ESME_RINVSYSID"},
      {ESME_RMSGQFUL, "ESME_RMSGQFUL"},   {ESME_RINVESMCLASS, "ESME_RINVESMCLASS"},
      {ESME_RSUBMITFAIL, "ESME_RSUBMITFAIL"}, {ESME_RINVSRCTON, "ESME_RINVSRCTON"},
      {ESME_RINVSRCNPI, "ESME_RINVSRCNPI"}, {ESME_RINVDSTTON, "ESME_RINVDSTTON"},
      {ESME_RINVDSTNPI, "ESME_RINVDSTNPI"}, {ESME_RINVSYSTYP, "ESME_RINVSYSTYP"},
      {ESME_RTHROTTLED, "ESME_RTHROTTLED"}, {ESME_RINVEXPIRY, "ESME_RINVEXPIRY"},
      {ESME_RX_T_APPN, "ESME_RX_T_APPN"}, {ESME_RX_P_APPN, "ESME_RX_P_APPN"},
      {ESME_RX_R_APPN, "ESME_RX_R_APPN"}, {ESME_RUNKNOWNERR, "ESME_RUNKNOWNERR"},
  };
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (names[i].v == status) return names[i].n;
  snprintf(buf, len, "0x%08x", status);
  return buf;
}

/* Statuses that say something about the message itself: sending it again cannot help. The
 * rest (system errors, unknown codes, submit failures) may pass, and the broker retries. */
static int status_permanent(uint32_t st) {
  switch (st) {
  case ESME_RINVMSGLEN: case ESME_RINVSRCADR: case ESME_RINVDSTADR: case ESME_RINVESMCLASS:
  case ESME_RINVSRCTON: case ESME_RINVSRCNPI: case ESME_RINVDSTTON: case ESME_RINVDSTNPI:
  case ESME_RINVEXPIRY: case ESME_RX_P_APPN: case ESME_RX_R_APPN: case ESME_RINVSERTYP:
  case ESME_RINVREGDLVFLG: case ESME_RINVPRTFLG: case ESME_RINVSUBREP:
    return 1;
  default:
    return 0;
  }
}

static void set_state(hd_smpp_session *s, int st, uint32_t status) {
  if (s->state == st) return;
  s->state = st;
  if (s->h->state) s->h->state(s->ud, s, st, status);
}

static uint32_t take_seq(hd_smpp_session *s) {
  uint32_t q = s->next_seq;
  s->next_seq = q >= SEQ_MAX ? 1 : q + 1;
  return q;
}

/* ---- output ---- */
typedef struct wreq {
  uv_write_t req;
  size_t len;
  uint8_t data[];
} wreq;

static void on_written(uv_write_t *req, int status) {
  hd_smpp_session *s = req->data;
  wreq *w = (wreq *)req;
  free(w);
  /* A failed write shows up as a read error or EOF too; drop here in case it does not. */
  if (status < 0 && status != UV_ECANCELED && s->tcp_open && !s->closing_handles)
    drop(s, uv_strerror(status));
}

static int send_bytes(hd_smpp_session *s, const uint8_t *p, size_t n) {
  if (!s->tcp_open || s->closing_handles) return HD_ECLOSED;
  wreq *w = malloc(sizeof *w + n);
  if (!w) return HD_ENOMEM;
  memcpy(w->data, p, n);
  w->len = n;
  w->req.data = s;
  uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)n);
  int rc = uv_write(&w->req, (uv_stream_t *)&s->tcp, &b, 1, on_written);
  if (rc) {
    free(w);
    return hd_err_from_uv(rc);
  }
  return 0;
}

/* Pack with libsmpp34 and send. */
static int send_pdu(hd_smpp_session *s, uint32_t type, void *pdu) {
  uint8_t buf[1024];
  int len = 0;
  if (smpp34_pack(type, buf, (int)sizeof buf, &len, pdu) != 0) {
    LOG(s, L_ERROR, "smpp_pack_failed", "command=0x%08x error=\"%.200s\"", type,
        smpp34_strerror);
    return HD_EINVAL;
  }
  return send_bytes(s, buf, (size_t)len);
}

/* Header-only PDU written by hand: libsmpp34 refuses sequence_number 0, which a generic_nack
 * for an unreadable PDU must carry. */
static void send_header(hd_smpp_session *s, uint32_t cmd, uint32_t status, uint32_t seq) {
  uint8_t b[16];
  uint32_t v[4] = {16, cmd, status, seq};
  for (int i = 0; i < 4; i++) {
    b[i * 4] = (uint8_t)(v[i] >> 24);
    b[i * 4 + 1] = (uint8_t)(v[i] >> 16);
    b[i * 4 + 2] = (uint8_t)(v[i] >> 8);
    b[i * 4 + 3] = (uint8_t)v[i];
  }
  send_bytes(s, b, sizeof b);
}

static outstanding *out_add(hd_smpp_session *s, uint32_t seq, int kind, hd_smpp_submit *sub) {
  for (int i = 0; i < s->nout_cap; i++)
    if (!s->out[i].seq) {
      s->out[i] = (outstanding){.seq = seq, .kind = kind, .sub = sub,
                                .deadline = uv_now(s->loop) + (uint64_t)s->conf.response_ms};
      if (kind == OUT_SUBMIT) s->nsubmits++;
      return &s->out[i];
    }
  return NULL;
}

static outstanding *out_find(hd_smpp_session *s, uint32_t seq) {
  for (int i = 0; i < s->nout_cap; i++)
    if (s->out[i].seq == seq) return &s->out[i];
  return NULL;
}

static void out_clear(hd_smpp_session *s, outstanding *o) {
  if (o->kind == OUT_SUBMIT) s->nsubmits--;
  memset(o, 0, sizeof *o);
}

/* Ends every outstanding request of a connection that is gone. */
static void fail_outstanding(hd_smpp_session *s, int result) {
  for (int i = 0; i < s->nout_cap; i++) {
    outstanding *o = &s->out[i];
    if (!o->seq) continue;
    hd_smpp_submit *sub = o->sub;
    int kind = o->kind;
    out_clear(s, o);
    if (kind == OUT_SUBMIT) s->h->submitted(s->ud, s, sub, result, 0, NULL);
  }
}

/* ---- connection lifecycle ---- */
/* After stop(): report `closed` once nothing is open any more. */
static void maybe_closed(hd_smpp_session *s) {
  if (s->stopping && !s->tcp_open && !s->timer_open && !s->gai_pending && !s->closed_sent) {
    s->closed_sent = 1;
    s->h->closed(s->ud, s);
  }
}

static void on_timer_closed(uv_handle_t *hd) {
  hd_smpp_session *s = hd->data;
  s->timer_open = 0;
  maybe_closed(s);
}

static void on_tcp_closed(uv_handle_t *hd);

/* Close everything for good (stop). */
static void close_all(hd_smpp_session *s) {
  s->stopping = 1;
  if (s->state != HD_SMPP_STOPPED) set_state(s, HD_SMPP_STOPPED, 0);
  fail_outstanding(s, HD_SMPP_LINK_LOST);
  if (s->gai_pending) uv_cancel((uv_req_t *)&s->gai);
  if (s->tcp_open && !s->closing_handles) {
    s->closing_handles = 1;
    uv_close((uv_handle_t *)&s->tcp, on_tcp_closed);
  }
  if (s->timer_open && !uv_is_closing((uv_handle_t *)&s->timer))
    uv_close((uv_handle_t *)&s->timer, on_timer_closed);
  maybe_closed(s);
}

static void on_tcp_closed(uv_handle_t *hd) {
  hd_smpp_session *s = hd->data;
  s->tcp_open = 0;
  s->closing_handles = 0;
  s->rlen = 0;
  if (s->stopping) {
    close_all(s);
    return;
  }
  arm_timer(s);
}

/* Close the connection; outstanding requests end as lost. Reconnects after the backoff unless
 * stopping. The state is DOWN at once (before the callbacks of the lost submits run), so
 * nothing new is put on a connection that is going away. */
static void drop(hd_smpp_session *s, const char *why) {
  if (s->closing_handles) return;
  int was = s->state;
  if (was == HD_SMPP_BOUND || was == HD_SMPP_BINDING || was == HD_SMPP_UNBINDING)
    LOG(s, s->stopping ? L_INFO : L_WARN, "smpp_link_down", "bind=%s reason=\"%s\"",
        mode_name(s->mode), why);
  s->conn_gen++;
  uint64_t now = uv_now(s->loop);
  s->reconnect_at = now + (uint64_t)s->backoff_ms;
  s->backoff_ms = s->backoff_ms * 2 > s->conf.reconnect_max_ms ? s->conf.reconnect_max_ms
                                                               : s->backoff_ms * 2;
  if (s->tcp_open) {
    s->closing_handles = 1;
    uv_close((uv_handle_t *)&s->tcp, on_tcp_closed);
  }
  if (!s->stopping) set_state(s, HD_SMPP_DOWN, 0);
  fail_outstanding(s, HD_SMPP_LINK_LOST);
  arm_timer(s);
}

static void send_bind(hd_smpp_session *s) {
  /* The three bind bodies are identical (§4.1); bind_transceiver_t serves for all. */
  bind_transceiver_t b;
  memset(&b, 0, sizeof b);
  uint32_t cmd = s->mode == HD_SMPP_TX ? BIND_TRANSMITTER
                 : s->mode == HD_SMPP_RX ? BIND_RECEIVER : BIND_TRANSCEIVER;
  b.command_id = cmd;
  b.sequence_number = take_seq(s);
  snprintf((char *)b.system_id, sizeof b.system_id, "%s", s->conf.system_id);
  snprintf((char *)b.password, sizeof b.password, "%s", s->conf.password);
  snprintf((char *)b.system_type, sizeof b.system_type, "%s", s->conf.system_type);
  b.interface_version = SMPP_VERSION;
  if (send_pdu(s, cmd, &b) != 0 || !out_add(s, b.sequence_number, OUT_BIND, NULL)) {
    drop(s, "cannot send bind");
    return;
  }
  set_state(s, HD_SMPP_BINDING, 0);
  arm_timer(s);
}

static void on_alloc(uv_handle_t *hd, size_t suggested, uv_buf_t *buf) {
  hd_smpp_session *s = hd->data;
  if (s->rcap - s->rlen < 4096) {
    size_t cap = s->rcap ? s->rcap * 2 : 8192;
    if (cap > PDU_MAX + 8192) cap = PDU_MAX + 8192;
    uint8_t *nb = cap > s->rcap ? realloc(s->rbuf, cap) : NULL;
    if (nb) {
      s->rbuf = nb;
      s->rcap = cap;
    }
  }
  *buf = uv_buf_init((char *)s->rbuf + s->rlen, (unsigned)(s->rcap - s->rlen));
}

static void handle_pdu(hd_smpp_session *s, const uint8_t *p, uint32_t len);

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf) {
  hd_smpp_session *s = st->data;
  if (n < 0) {
    drop(s, n == UV_EOF ? "closed by the SMSC" : uv_strerror((int)n));
    return;
  }
  if (n == 0) return;
  s->rlen += (size_t)n;
  s->last_rx = uv_now(s->loop);
  uint32_t gen = s->conn_gen;
  size_t off = 0;
  while (gen == s->conn_gen) {
    uint32_t len = 0;
    int fr = hd_smpp_frame(s->rbuf + off, s->rlen - off, PDU_MAX, &len);
    if (fr == HD_SMPP_FRAME_BAD) {
      /* The stream cannot be resynchronised after a bad length. */
      hd_smpp_hdr h;
      uint32_t seq = hd_smpp_header(s->rbuf + off, s->rlen - off, &h) == 0 ? h.sequence_number
                                                                            : 0;
      LOG(s, L_WARN, "smpp_bad_pdu", "command_length=%u", len);
      send_header(s, GENERIC_NACK, ESME_RINVCMDLEN, seq <= SEQ_MAX ? seq : 0);
      drop(s, "invalid command_length");
      return;
    }
    if (fr == HD_SMPP_FRAME_MORE) break;
    handle_pdu(s, s->rbuf + off, len);
    off += len;
  }
  if (gen != s->conn_gen) return; /* dropped while handling: rbuf was reset */
  if (off) {
    memmove(s->rbuf, s->rbuf + off, s->rlen - off);
    s->rlen -= off;
  }
  if (s->rlen >= s->rcap) drop(s, "read buffer exhausted");
}

static void on_connect(uv_connect_t *req, int status) {
  hd_smpp_session *s = req->data;
  if (status == UV_ECANCELED || s->closing_handles) return;
  if (status < 0) {
    LOG(s, L_WARN, "smpp_connect_failed", "host=%s port=%d error=\"%s\"", s->conf.host,
        s->conf.port, uv_strerror(status));
    drop(s, uv_strerror(status));
    return;
  }
  uv_tcp_nodelay(&s->tcp, 1);
  uv_tcp_keepalive(&s->tcp, 1, 60);
  s->last_rx = uv_now(s->loop);
  int rc = uv_read_start((uv_stream_t *)&s->tcp, on_alloc, on_read);
  if (rc) {
    drop(s, uv_strerror(rc));
    return;
  }
  send_bind(s);
}

static void connect_addr(hd_smpp_session *s, const struct sockaddr *sa) {
  int rc = uv_tcp_init(s->loop, &s->tcp);
  if (rc) {
    drop(s, uv_strerror(rc));
    return;
  }
  s->tcp.data = s;
  s->tcp_open = 1;
  s->creq.data = s;
  rc = uv_tcp_connect(&s->creq, &s->tcp, sa, on_connect);
  if (rc) {
    LOG(s, L_WARN, "smpp_connect_failed", "host=%s port=%d error=\"%s\"", s->conf.host,
        s->conf.port, uv_strerror(rc));
    drop(s, uv_strerror(rc));
  }
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  hd_smpp_session *s = req->data;
  s->gai_pending = 0;
  if (s->stopping) {
    uv_freeaddrinfo(res);
    maybe_closed(s);
    return;
  }
  if (s->gai_gen != s->conn_gen) { /* that attempt timed out meanwhile */
    uv_freeaddrinfo(res);
    return;
  }
  if (status < 0 || !res) {
    LOG(s, L_WARN, "smpp_resolve_failed", "host=%s error=\"%s\"", s->conf.host,
        uv_strerror(status));
    uv_freeaddrinfo(res);
    drop(s, "cannot resolve host");
    return;
  }
  connect_addr(s, res->ai_addr);
  uv_freeaddrinfo(res);
}

static void begin_connect(hd_smpp_session *s) {
  if (s->stopping) return;
  if (s->tcp_open || s->gai_pending) {
    /* The previous attempt's handle or resolution has not finished yet: a little later. */
    s->reconnect_at = uv_now(s->loop) + 100;
    arm_timer(s);
    return;
  }
  set_state(s, HD_SMPP_CONNECTING, 0);
  s->connect_deadline = uv_now(s->loop) + (uint64_t)s->conf.response_ms * 2;
  arm_timer(s);
  struct sockaddr_storage ss;
  if (uv_ip4_addr(s->conf.host, s->conf.port, (struct sockaddr_in *)&ss) == 0 ||
      uv_ip6_addr(s->conf.host, s->conf.port, (struct sockaddr_in6 *)&ss) == 0) {
    connect_addr(s, (struct sockaddr *)&ss);
    return;
  }
  char port[16];
  snprintf(port, sizeof port, "%d", s->conf.port);
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
  s->gai.data = s;
  s->gai_gen = s->conn_gen;
  int rc = uv_getaddrinfo(s->loop, &s->gai, on_resolved, s->conf.host, port, &hints);
  if (rc) {
    drop(s, uv_strerror(rc));
    return;
  }
  s->gai_pending = 1;
}

/* ---- incoming PDUs ---- */
static void on_bind_resp(hd_smpp_session *s, uint32_t status, const uint8_t *p, uint32_t len) {
  if (s->state != HD_SMPP_BINDING) return;
  if (status != ESME_ROK) {
    char b[16];
    /* The operator must see this: a wrong password never heals by itself. */
    LOG(s, L_ERROR, "smpp_bind_failed",
        "bind=%s system_id=%s host=%s port=%d status=%s reason=\"%s\"", mode_name(s->mode),
        s->conf.system_id, s->conf.host, s->conf.port, hd_smpp_status_name(status, b, sizeof b),
        status == ESME_RINVPASWD   ? "the SMSC refused the password"
        : status == ESME_RINVSYSID ? "the SMSC does not know this system_id"
                                   : "the SMSC refused the bind");
    set_state(s, HD_SMPP_DOWN, status);
    drop(s, "bind refused");
    return;
  }
  char sysid[17] = "";
  if (len > 16) {
    size_t n = strnlen((const char *)p + 16, len - 16);
    if (n > 16) n = 16;
    memcpy(sysid, p + 16, n);
    sysid[n] = 0;
    for (char *c = sysid; *c; c++)
      if (*c < 0x21 || *c > 0x7e) *c = '?';
  }
  LOG(s, L_INFO, "smpp_bound", "bind=%s host=%s port=%d smsc_system_id=%s", mode_name(s->mode),
      s->conf.host, s->conf.port, *sysid ? sysid : "-");
  s->backoff_ms = s->conf.reconnect_min_ms;
  s->throttle_backoff_ms = s->conf.throttle_ms;
  s->pause_until = 0;
  set_state(s, HD_SMPP_BOUND, 0);
  arm_timer(s);
  if (s->h->ready && s->mode != HD_SMPP_RX) s->h->ready(s->ud, s);
}

static void on_submit_resp(hd_smpp_session *s, outstanding *o, uint32_t status,
                           const uint8_t *p, uint32_t len) {
  hd_smpp_submit *sub = o->sub;
  out_clear(s, o);
  if (status == ESME_RTHROTTLED || status == ESME_RMSGQFUL) {
    /* Slow the whole session down: nothing goes out until the pause ends, and each further
     * throttle in a row doubles the pause (up to 32x). */
    uint64_t now = uv_now(s->loop);
    s->pause_until = now + (uint64_t)s->throttle_backoff_ms;
    if (s->throttle_backoff_ms < s->conf.throttle_ms * 32) s->throttle_backoff_ms *= 2;
    s->h->submitted(s->ud, s, sub, HD_SMPP_THROTTLED, status, NULL);
    arm_timer(s);
    return;
  }
  if (status != ESME_ROK) {
    s->h->submitted(s->ud, s, sub,
                    status_permanent(status) ? HD_SMPP_REJECTED_PERM : HD_SMPP_REJECTED_TEMP,
                    status, NULL);
    goto ready;
  }
  s->throttle_backoff_ms = s->conf.throttle_ms;
  char id[66];
  if (hd_smpp_submit_resp_id(p, len, id) == 0) {
    /* Accepted without an id: it cannot be matched to a receipt but it was accepted. */
    hd_smpp_hdr h;
    hd_smpp_header(p, len, &h);
    LOG(s, L_WARN, "smpp_no_message_id", "seq=%u", h.sequence_number);
  }
  s->h->submitted(s->ud, s, sub, HD_SMPP_OK, 0, id);
ready:
  if (s->state == HD_SMPP_BOUND && s->h->ready) s->h->ready(s->ud, s);
}

static void on_deliver(hd_smpp_session *s, uint32_t seq, const uint8_t *p, uint32_t len) {
  deliver_sm_resp_t resp;
  memset(&resp, 0, sizeof resp);
  resp.command_id = DELIVER_SM_RESP;
  resp.sequence_number = seq;
  if (s->state != HD_SMPP_BOUND || s->mode == HD_SMPP_TX) {
    resp.command_status = ESME_RINVBNDSTS;
    send_pdu(s, DELIVER_SM_RESP, &resp);
    return;
  }
  hd_smpp_deliver_pdu d; /* ~1.1 KiB: the loop thread's stack has room */
  char err[256];
  if (hd_smpp_decode_deliver(p, len, &d, err, sizeof err) != 0) {
    LOG(s, L_WARN, "smpp_bad_deliver_sm", "seq=%u error=\"%.200s\"", seq, err);
    resp.command_status = ESME_RSYSERR;
    send_pdu(s, DELIVER_SM_RESP, &resp);
    return;
  }
  hd_smpp_deliver dv = {.source_addr = d.source_addr, .dest_addr = d.dest_addr,
                        .esm_class = d.esm_class, .data_coding = d.data_coding,
                        .sm = d.sm, .sm_len = d.sm_len,
                        .receipted_id = d.has_receipted_id ? d.receipted_id : NULL,
                        .message_state = d.message_state};
  resp.command_status = s->h->deliver(s->ud, s, &dv);
  send_pdu(s, DELIVER_SM_RESP, &resp);
}

static void handle_pdu(hd_smpp_session *s, const uint8_t *p, uint32_t len) {
  hd_smpp_hdr h;
  hd_smpp_header(p, len, &h); /* framed: len >= 16 */
  uint32_t cmd = h.command_id, status = h.command_status, seq = h.sequence_number;
  if (cmd & 0x80000000u) {
    outstanding *o = out_find(s, seq);
    if (!o) {
      LOG(s, L_DEBUG, "smpp_unexpected_resp", "command=0x%08x seq=%u", cmd, seq);
      return;
    }
    if (cmd == GENERIC_NACK) {
      char b[16];
      LOG(s, L_WARN, "smpp_generic_nack", "seq=%u status=%s", seq,
          hd_smpp_status_name(status, b, sizeof b));
      if (o->kind == OUT_SUBMIT) {
        /* A nack for a submit is the SMSC not understanding us, or throttling us its way. */
        on_submit_resp(s, o, status ? status : ESME_RSYSERR, p, 16);
      } else if (o->kind == OUT_BIND) {
        on_bind_resp(s, status ? status : ESME_RBINDFAIL, p, 16);
      } else {
        out_clear(s, o);
      }
      return;
    }
    switch (o->kind) {
    case OUT_BIND:
      out_clear(s, o);
      on_bind_resp(s, status, p, len);
      return;
    case OUT_SUBMIT:
      if (cmd != SUBMIT_SM_RESP) break;
      on_submit_resp(s, o, status, p, len);
      return;
    case OUT_ENQUIRE:
      out_clear(s, o);
      arm_timer(s);
      return;
    case OUT_UNBIND:
      out_clear(s, o);
      drop(s, "unbound");
      return;
    }
    LOG(s, L_WARN, "smpp_unexpected_resp", "command=0x%08x seq=%u", cmd, seq);
    return;
  }
  switch (cmd) {
  case ENQUIRE_LINK: {
    enquire_link_resp_t r;
    memset(&r, 0, sizeof r);
    r.command_id = ENQUIRE_LINK_RESP;
    r.sequence_number = seq;
    if (seq) send_pdu(s, ENQUIRE_LINK_RESP, &r);
    return;
  }
  case DELIVER_SM:
    on_deliver(s, seq, p, len);
    return;
  case UNBIND: {
    unbind_resp_t r;
    memset(&r, 0, sizeof r);
    r.command_id = UNBIND_RESP;
    r.sequence_number = seq;
    if (seq) send_pdu(s, UNBIND_RESP, &r);
    LOG(s, L_WARN, "smpp_unbound_by_smsc", "bind=%s", mode_name(s->mode));
    drop(s, "unbind from the SMSC");
    return;
  }
  case ALERT_NOTIFICATION:
  case OUTBIND:
    return; /* no response defined; nothing for us in them */
  default: {
    /* Unknown or unsupported request (data_sm, …): §4.3 generic_nack. */
    LOG(s, L_DEBUG, "smpp_unsupported", "command=0x%08x seq=%u", cmd, seq);
    send_header(s, GENERIC_NACK, ESME_RINVCMDID, seq <= SEQ_MAX ? seq : 0);
    return;
  }
  }
}

/* ---- the timer ---- */
static uint64_t earliest(hd_smpp_session *s, uint64_t now) {
  uint64_t t = UINT64_MAX;
#define MIN_AT(x) do { if ((x) < t) t = (x); } while (0)
  switch (s->state) {
  case HD_SMPP_DOWN:
    MIN_AT(s->reconnect_at);
    break;
  case HD_SMPP_CONNECTING:
    MIN_AT(s->connect_deadline);
    break;
  case HD_SMPP_BOUND:
    if (s->conf.enquire_ms > 0) MIN_AT(s->last_rx + (uint64_t)s->conf.enquire_ms);
    if (s->pause_until > now) MIN_AT(s->pause_until);
    /* fall through */
  case HD_SMPP_BINDING:
  case HD_SMPP_UNBINDING:
    for (int i = 0; i < s->nout_cap; i++)
      if (s->out[i].seq) MIN_AT(s->out[i].deadline);
    break;
  default:
    break;
  }
#undef MIN_AT
  return t;
}

static void on_timer(uv_timer_t *tm);

static void arm_timer(hd_smpp_session *s) {
  if (!s->timer_open || uv_is_closing((uv_handle_t *)&s->timer)) return;
  uint64_t now = uv_now(s->loop), t = earliest(s, now);
  if (t == UINT64_MAX) {
    uv_timer_stop(&s->timer);
    return;
  }
  uv_timer_start(&s->timer, on_timer, t > now ? t - now : 0, 0);
}

static void send_enquire(hd_smpp_session *s) {
  enquire_link_t e;
  memset(&e, 0, sizeof e);
  e.command_id = ENQUIRE_LINK;
  e.sequence_number = take_seq(s);
  if (send_pdu(s, ENQUIRE_LINK, &e) == 0) out_add(s, e.sequence_number, OUT_ENQUIRE, NULL);
}

static void on_timer(uv_timer_t *tm) {
  hd_smpp_session *s = tm->data;
  uint64_t now = uv_now(s->loop);
  switch (s->state) {
  case HD_SMPP_DOWN:
    if (!s->stopping && now >= s->reconnect_at) {
      begin_connect(s);
      return;
    }
    break;
  case HD_SMPP_CONNECTING:
    if (now >= s->connect_deadline) {
      LOG(s, L_WARN, "smpp_connect_timeout", "host=%s port=%d", s->conf.host, s->conf.port);
      if (s->gai_pending) {
        /* Resolution still running: the callback sees the new generation and drops. */
        uv_cancel((uv_req_t *)&s->gai);
      }
      drop(s, "connect timeout");
      return;
    }
    break;
  case HD_SMPP_BINDING:
  case HD_SMPP_BOUND:
  case HD_SMPP_UNBINDING:
    for (int i = 0; i < s->nout_cap; i++) {
      outstanding *o = &s->out[i];
      if (!o->seq || o->deadline > now) continue;
      static const char *const what[] = {"", "bind_resp", "enquire_link_resp", "unbind_resp",
                                         "submit_sm_resp"};
      LOG(s, s->state == HD_SMPP_UNBINDING ? L_INFO : L_WARN, "smpp_response_timeout",
          "waiting_for=%s seq=%u", what[o->kind], o->seq);
      hd_smpp_submit *sub = o->sub;
      int kind = o->kind;
      out_clear(s, o);
      if (kind == OUT_SUBMIT) s->h->submitted(s->ud, s, sub, HD_SMPP_TIMEOUT, 0, NULL);
      /* A link that leaves a request unanswered is not trusted with the next: reconnect. */
      drop(s, "response timeout");
      return;
    }
    if (s->state == HD_SMPP_BOUND) {
      if (s->conf.enquire_ms > 0 && now >= s->last_rx + (uint64_t)s->conf.enquire_ms) {
        int pending = 0;
        for (int i = 0; i < s->nout_cap; i++)
          if (s->out[i].seq && s->out[i].kind == OUT_ENQUIRE) pending = 1;
        if (!pending) send_enquire(s);
        s->last_rx = now; /* the next probe one interval later; its own deadline guards it */
      }
      if (s->pause_until && now >= s->pause_until) {
        s->pause_until = 0;
        if (s->h->ready && s->mode != HD_SMPP_RX) s->h->ready(s->ud, s);
      }
    }
    break;
  }
  arm_timer(s);
}

/* ---- public ---- */
int hd_smpp_session_new(uv_loop_t *loop, const hd_smpp_conf *conf, int mode,
                        const hd_smpp_handler *h, void *ud, hd_smpp_session **out) {
  hd_smpp_session *s = calloc(1, sizeof *s);
  if (!s) return HD_ENOMEM;
  s->loop = loop;
  s->conf = *conf;
  s->mode = mode;
  s->h = h;
  s->ud = ud;
  s->next_seq = 1;
  s->nout_cap = (mode == HD_SMPP_RX ? 0 : conf->window) + OUT_EXTRA;
  s->out = calloc((size_t)s->nout_cap, sizeof *s->out);
  if (!s->out) {
    free(s);
    return HD_ENOMEM;
  }
  s->backoff_ms = conf->reconnect_min_ms;
  s->throttle_backoff_ms = conf->throttle_ms;
  s->state = HD_SMPP_DOWN;
  uv_timer_init(loop, &s->timer);
  s->timer.data = s;
  s->timer_open = 1;
  *out = s;
  return 0;
}

void hd_smpp_session_start(hd_smpp_session *s) { begin_connect(s); }

void hd_smpp_session_stop(hd_smpp_session *s) {
  if (s->stopping) return;
  s->stopping = 1;
  if (s->state == HD_SMPP_BOUND && s->tcp_open && !s->closing_handles) {
    /* Polite goodbye (§4.2): unbind, wait for unbind_resp (or response_ms), then close. The
     * outstanding submits keep their chance to be answered meanwhile. */
    unbind_t u;
    memset(&u, 0, sizeof u);
    u.command_id = UNBIND;
    u.sequence_number = take_seq(s);
    outstanding *o;
    if (send_pdu(s, UNBIND, &u) == 0 && (o = out_add(s, u.sequence_number, OUT_UNBIND, NULL))) {
      uint64_t cap = uv_now(s->loop) + UNBIND_WAIT_MS;
      if (o->deadline > cap) o->deadline = cap;
      s->state = HD_SMPP_UNBINDING;
      if (s->h->state) s->h->state(s->ud, s, HD_SMPP_UNBINDING, 0);
      arm_timer(s);
      return;
    }
  }
  close_all(s);
}

void hd_smpp_session_free(hd_smpp_session *s) {
  if (!s) return;
  free(s->out);
  free(s->rbuf);
  free(s);
}

int64_t hd_smpp_session_wait_ms(const hd_smpp_session *s) {
  if (s->stopping || s->closing_handles || s->mode == HD_SMPP_RX || s->state != HD_SMPP_BOUND)
    return -1;
  if (s->nsubmits >= s->conf.window) return -1;
  uint64_t now = uv_now(s->loop);
  if (s->pause_until > now) return (int64_t)(s->pause_until - now);
  if (s->conf.rate > 0 && s->next_send_at > (double)now)
    return (int64_t)(s->next_send_at - (double)now) + 1;
  return 0;
}

int hd_smpp_session_submit(hd_smpp_session *s, hd_smpp_submit *sub) {
  if (hd_smpp_session_wait_ms(s) != 0) return HD_EAGAIN;
  if (!*sub->dest || strlen(sub->dest) > 20) return HD_EINVAL;
  submit_sm_t m;
  memset(&m, 0, sizeof m);
  m.command_id = SUBMIT_SM;
  m.sequence_number = take_seq(s);
  m.source_addr_ton = s->conf.source_ton;
  m.source_addr_npi = s->conf.source_npi;
  snprintf((char *)m.source_addr, sizeof m.source_addr, "%s", s->conf.source_addr);
  m.dest_addr_ton = s->conf.dest_ton;
  m.dest_addr_npi = s->conf.dest_npi;
  snprintf((char *)m.destination_addr, sizeof m.destination_addr, "%s", sub->dest);
  m.esm_class = sub->esm_class;
  snprintf((char *)m.validity_period, sizeof m.validity_period, "%s", sub->validity);
  m.registered_delivery = s->conf.registered_delivery;
  m.data_coding = sub->data_coding;
  m.sm_length = sub->sm_len;
  memcpy(m.short_message, sub->sm, sub->sm_len);
  int rc = send_pdu(s, SUBMIT_SM, &m);
  if (rc == HD_EINVAL) return rc;
  sub->seq = m.sequence_number;
  if (rc != 0 || !out_add(s, m.sequence_number, OUT_SUBMIT, sub)) {
    /* The socket is going away (its close is under way); report through the callback so the
     * caller's bookkeeping has one path. */
    s->h->submitted(s->ud, s, sub, HD_SMPP_LINK_LOST, 0, NULL);
    return 0;
  }
  uint64_t now = uv_now(s->loop);
  if (s->conf.rate > 0) {
    double gap = 1000.0 / s->conf.rate;
    s->next_send_at = (s->next_send_at > (double)now ? s->next_send_at : (double)now) + gap;
  }
  arm_timer(s);
  return 0;
}

int hd_smpp_session_state(const hd_smpp_session *s) { return s->state; }
int hd_smpp_session_mode(const hd_smpp_session *s) { return s->mode; }
int hd_smpp_session_outstanding(const hd_smpp_session *s) { return s->nsubmits; }
const hd_smpp_conf *hd_smpp_session_conf(const hd_smpp_session *s) { return &s->conf; }
