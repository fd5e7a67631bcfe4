/* proto.c — the ipconn wire format (see hdc_proto.h and docs/protocols/ipconn.md). */
#include "hdc_proto.h"

#include <stdlib.h>
#include <string.h>

const char *hdc_strerror(int err) {
  switch (err) {
  case 0: return "ok";
#define HDC__ERR_TEXT(name, val, text) \
  case val: return text;
    HDC_ERRNO_MAP(HDC__ERR_TEXT)
#undef HDC__ERR_TEXT
  default: return "unknown error";
  }
}

/* ---- buffer ---- */
int hdc_buf_reserve(hdc_buf *b, size_t n) {
  size_t want = (size_t)b->len + n;
  if (want <= b->cap) return 0;
  if (want > UINT32_MAX) return HDC_ENOMEM;
  size_t cap = b->cap ? b->cap : 64;
  while (cap < want) cap *= 2;
  if (cap > UINT32_MAX) cap = UINT32_MAX;
  uint8_t *p = realloc(b->p, cap);
  if (!p) return HDC_ENOMEM;
  b->p = p;
  b->cap = (uint32_t)cap;
  return 0;
}

void hdc_buf_consume(hdc_buf *b, size_t n) {
  if (n >= b->len) {
    hdc_buf_free(b);
    return;
  }
  memmove(b->p, b->p + n, b->len - n);
  b->len -= (uint32_t)n;
}

void hdc_buf_free(hdc_buf *b) {
  free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
}

static int put(hdc_buf *b, const void *p, size_t n) {
  if (hdc_buf_reserve(b, n)) return HDC_ENOMEM;
  memcpy(b->p + b->len, p, n);
  b->len += (uint32_t)n;
  return 0;
}

static int put_be(hdc_buf *b, uint8_t tag, uint64_t v, int bytes) {
  uint8_t t[9];
  t[0] = tag;
  for (int i = 0; i < bytes; i++) t[1 + i] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
  return put(b, t, (size_t)bytes + 1);
}

/* ---- writer ---- */
int hdc_mp_map(hdc_buf *b, uint32_t n) {
  if (n < 16) return put_be(b, (uint8_t)(0x80 | n), 0, 0);
  if (n <= 0xffff) return put_be(b, 0xde, n, 2);
  return put_be(b, 0xdf, n, 4);
}

int hdc_mp_array(hdc_buf *b, uint32_t n) {
  if (n < 16) return put_be(b, (uint8_t)(0x90 | n), 0, 0);
  if (n <= 0xffff) return put_be(b, 0xdc, n, 2);
  return put_be(b, 0xdd, n, 4);
}

int hdc_mp_str(hdc_buf *b, const char *s, size_t len) {
  int rc;
  if (len > UINT32_MAX) return HDC_ENOMEM;
  if (len < 32) rc = put_be(b, (uint8_t)(0xa0 | len), 0, 0);
  else if (len <= 0xff) rc = put_be(b, 0xd9, len, 1);
  else if (len <= 0xffff) rc = put_be(b, 0xda, len, 2);
  else rc = put_be(b, 0xdb, len, 4);
  return rc ? rc : put(b, s, len);
}

int hdc_mp_cstr(hdc_buf *b, const char *s) { return hdc_mp_str(b, s, strlen(s)); }

int hdc_mp_uint(hdc_buf *b, uint64_t v) {
  if (v < 128) return put_be(b, (uint8_t)v, 0, 0);
  if (v <= 0xff) return put_be(b, 0xcc, v, 1);
  if (v <= 0xffff) return put_be(b, 0xcd, v, 2);
  if (v <= 0xffffffffu) return put_be(b, 0xce, v, 4);
  return put_be(b, 0xcf, v, 8);
}

int hdc_mp_int(hdc_buf *b, int64_t v) {
  if (v >= 0) return hdc_mp_uint(b, (uint64_t)v);
  if (v >= -32) return put_be(b, (uint8_t)(int8_t)v, 0, 0);
  if (v >= INT8_MIN) return put_be(b, 0xd0, (uint8_t)(int8_t)v, 1);
  if (v >= INT16_MIN) return put_be(b, 0xd1, (uint16_t)(int16_t)v, 2);
  if (v >= INT32_MIN) return put_be(b, 0xd2, (uint32_t)(int32_t)v, 4);
  return put_be(b, 0xd3, (uint64_t)v, 8);
}

int hdc_mp_bool(hdc_buf *b, int v) { return put_be(b, v ? 0xc3 : 0xc2, 0, 0); }
int hdc_mp_nil(hdc_buf *b) { return put_be(b, 0xc0, 0, 0); }
int hdc_mp_raw(hdc_buf *b, const void *p, size_t len) { return put(b, p, len); }

/* ---- reader ---- */
static int need(const hdc_rd *r, size_t n) {
  return (size_t)(r->end - r->p) >= n ? 0 : HDC_ETRUNC;
}

static uint64_t be(const uint8_t *p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; i++) v = (v << 8) | p[i];
  return v;
}

/* Read a length-carrying header: fix mask/fix tag, then the 16- and 32-bit tags. */
static int rd_len(hdc_rd *r, uint8_t fixmask, uint8_t fixtag, uint8_t fixbits, uint8_t t16,
                  uint8_t t32, uint32_t *n) {
  if (need(r, 1)) return HDC_ETRUNC;
  uint8_t c = r->p[0];
  if ((c & fixmask) == fixtag) {
    *n = c & fixbits;
    r->p++;
    return 0;
  }
  int w = c == t16 ? 2 : c == t32 ? 4 : 0;
  if (!w) return HDC_ETYPE;
  if (need(r, 1 + (size_t)w)) return HDC_ETRUNC;
  *n = (uint32_t)be(r->p + 1, w);
  r->p += 1 + w;
  return 0;
}

int hdc_rd_map(hdc_rd *r, uint32_t *n) { return rd_len(r, 0xf0, 0x80, 0x0f, 0xde, 0xdf, n); }
int hdc_rd_array(hdc_rd *r, uint32_t *n) { return rd_len(r, 0xf0, 0x90, 0x0f, 0xdc, 0xdd, n); }

int hdc_rd_str(hdc_rd *r, const char **s, uint32_t *len) {
  if (need(r, 1)) return HDC_ETRUNC;
  uint8_t c = r->p[0];
  uint32_t n;
  int w;
  if ((c & 0xe0) == 0xa0) {
    n = c & 0x1f;
    w = 0;
  } else if (c == 0xd9 || c == 0xda || c == 0xdb) {
    w = c == 0xd9 ? 1 : c == 0xda ? 2 : 4;
    if (need(r, 1 + (size_t)w)) return HDC_ETRUNC;
    n = (uint32_t)be(r->p + 1, w);
  } else {
    return HDC_ETYPE;
  }
  if (need(r, 1 + (size_t)w + n)) return HDC_ETRUNC;
  *s = (const char *)r->p + 1 + w;
  *len = n;
  r->p += 1 + w + n;
  return 0;
}

int hdc_rd_int(hdc_rd *r, int64_t *v) {
  if (need(r, 1)) return HDC_ETRUNC;
  uint8_t c = r->p[0];
  if (c < 0x80) {
    *v = c;
    r->p++;
    return 0;
  }
  if (c >= 0xe0) {
    *v = (int8_t)c;
    r->p++;
    return 0;
  }
  int w;
  switch (c) {
  case 0xcc: case 0xd0: w = 1; break;
  case 0xcd: case 0xd1: w = 2; break;
  case 0xce: case 0xd2: w = 4; break;
  case 0xcf: case 0xd3: w = 8; break;
  default: return HDC_ETYPE;
  }
  if (need(r, 1 + (size_t)w)) return HDC_ETRUNC;
  uint64_t u = be(r->p + 1, w);
  if (c >= 0xd0) { /* signed: sign-extend */
    int sh = 64 - 8 * w;
    *v = (int64_t)(u << sh) >> sh;
  } else {
    if (u > INT64_MAX) return HDC_ETYPE;
    *v = (int64_t)u;
  }
  r->p += 1 + w;
  return 0;
}

int hdc_rd_uint(hdc_rd *r, uint64_t *v) {
  if (need(r, 1)) return HDC_ETRUNC;
  if (r->p[0] == 0xcf) { /* the one encoding int64 cannot hold */
    if (need(r, 9)) return HDC_ETRUNC;
    *v = be(r->p + 1, 8);
    r->p += 9;
    return 0;
  }
  hdc_rd save = *r;
  int64_t s;
  int rc = hdc_rd_int(r, &s);
  if (rc) return rc;
  if (s < 0) {
    *r = save;
    return HDC_ETYPE;
  }
  *v = (uint64_t)s;
  return 0;
}

/* Size of the header of the value at p and how many bytes of payload / how many child values
 * follow it. Returns 0 or an error. */
static int head(hdc_rd *r, size_t *hdr, uint64_t *bytes, uint64_t *children) {
  if (need(r, 1)) return HDC_ETRUNC;
  uint8_t c = r->p[0];
  *bytes = 0;
  *children = 0;
  *hdr = 1;
  if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3) return 0;
  if ((c & 0xf0) == 0x80) { *children = 2u * (c & 0x0f); return 0; }
  if ((c & 0xf0) == 0x90) { *children = c & 0x0f; return 0; }
  if ((c & 0xe0) == 0xa0) { *bytes = c & 0x1f; return 0; }
  int w = 0;
  switch (c) {
  case 0xcc: case 0xd0: *bytes = 1; return 0;
  case 0xcd: case 0xd1: *bytes = 2; return 0;
  case 0xce: case 0xd2: case 0xca: *bytes = 4; return 0;
  case 0xcf: case 0xd3: case 0xcb: *bytes = 8; return 0;
  case 0xd4: *bytes = 2; return 0; /* fixext 1: type + 1 */
  case 0xd5: *bytes = 3; return 0;
  case 0xd6: *bytes = 5; return 0;
  case 0xd7: *bytes = 9; return 0;
  case 0xd8: *bytes = 17; return 0;
  case 0xc4: case 0xd9: w = 1; break;
  case 0xc5: case 0xda: w = 2; break;
  case 0xc6: case 0xdb: w = 4; break;
  case 0xc7: w = 1; break; /* ext 8/16/32: length, then type byte */
  case 0xc8: w = 2; break;
  case 0xc9: w = 4; break;
  case 0xdc: case 0xde: w = 2; break;
  case 0xdd: case 0xdf: w = 4; break;
  default: return HDC_EPROTO; /* 0xc1: never used */
  }
  if (need(r, 1 + (size_t)w)) return HDC_ETRUNC;
  uint64_t n = be(r->p + 1, w);
  *hdr = 1 + (size_t)w;
  if (c == 0xdc || c == 0xdd) *children = n;
  else if (c == 0xde || c == 0xdf) *children = 2 * n;
  else if (c >= 0xc7 && c <= 0xc9) *bytes = n + 1;
  else *bytes = n;
  return 0;
}

int hdc_rd_skip(hdc_rd *r, const uint8_t **start, size_t *len) {
  const uint8_t *s = r->p;
  uint64_t left[HDC_MAX_DEPTH + 1]; /* values still to read at each open level */
  int depth = 0;
  left[0] = 1;
  while (depth >= 0) {
    if (left[depth] == 0) {
      depth--;
      continue;
    }
    left[depth]--;
    size_t hdr;
    uint64_t bytes, children;
    int rc = head(r, &hdr, &bytes, &children);
    if (rc) return rc;
    if ((uint64_t)(r->end - r->p) < hdr + bytes) return HDC_ETRUNC;
    r->p += hdr + bytes;
    if (children) {
      /* Every child takes at least one byte: a declared count larger than what is left
       * is a truncation, found here without walking it. */
      if (children > (uint64_t)(r->end - r->p)) return HDC_ETRUNC;
      if (depth + 1 > HDC_MAX_DEPTH) return HDC_EPROTO;
      left[++depth] = children;
    }
  }
  if (start) *start = s;
  if (len) *len = (size_t)(r->p - s);
  return 0;
}

int hdc_mp_validate(const void *buf, size_t len) {
  hdc_rd r = {buf, (const uint8_t *)buf + len};
  int rc = hdc_rd_skip(&r, NULL, NULL);
  if (rc) return rc;
  return r.p == r.end ? 0 : HDC_EPROTO;
}

/* ---- frames ---- */
static const char *const type_names[] = {"unknown", "hello", "welcome", "deny",  "msg",
                                         "ack",     "acked", "ping",    "pong",  "goaway"};

const char *hdc_type_name(hdc_type t) {
  return (unsigned)t < sizeof type_names / sizeof *type_names ? type_names[t] : "unknown";
}

int hdc_str_eq(hdc_str s, const char *z) {
  size_t n = strlen(z);
  return s.p && s.len == n && memcmp(s.p, z, n) == 0;
}

char *hdc_str_copy(hdc_str s, char *out, size_t outlen) {
  if (!outlen) return out;
  size_t n = s.p ? s.len : 0;
  if (n >= outlen) n = outlen - 1;
  if (n) memcpy(out, s.p, n);
  out[n] = 0;
  return out;
}

static int key_is(const char *k, uint32_t kl, const char *z) {
  size_t n = strlen(z);
  return kl == n && memcmp(k, z, n) == 0;
}

static int rd_text(hdc_rd *r, hdc_str *s, uint32_t max) {
  int rc = hdc_rd_str(r, &s->p, &s->len);
  if (rc) return rc;
  if (s->len > max) return HDC_EPROTO;
  for (uint32_t i = 0; i < s->len; i++) /* no NULs: these become C strings somewhere */
    if (s->p[i] == 0) return HDC_EPROTO;
  return 0;
}

#define MAX_ID 128
#define MAX_TOKEN 512
#define MAX_TEXT 1024

int hdc_frame_decode(const uint8_t *body, size_t len, hdc_frame *f) {
  hdc_rd r = {body, body + len};
  uint32_t n;
  memset(f, 0, sizeof *f);
  f->retry = -1;
  int rc = hdc_rd_map(&r, &n);
  if (rc) return rc == HDC_ETYPE ? HDC_EPROTO : rc;
  int have_id = 0, have_created = 0, have_data = 0, have_ids = 0;
  for (uint32_t i = 0; i < n; i++) {
    const char *k;
    uint32_t kl;
    if ((rc = hdc_rd_str(&r, &k, &kl))) return rc;
    if (key_is(k, kl, "t")) rc = rd_text(&r, &f->type_name, 32);
    else if (key_is(k, kl, "v")) rc = hdc_rd_uint(&r, &f->v);
    else if (key_is(k, kl, "device")) rc = rd_text(&r, &f->device, MAX_ID);
    else if (key_is(k, kl, "tenant")) rc = rd_text(&r, &f->tenant, MAX_ID);
    else if (key_is(k, kl, "token")) rc = rd_text(&r, &f->token, MAX_TOKEN);
    else if (key_is(k, kl, "agent")) rc = rd_text(&r, &f->agent, MAX_TEXT);
    else if (key_is(k, kl, "heartbeat")) rc = hdc_rd_uint(&r, &f->heartbeat);
    else if (key_is(k, kl, "idle")) rc = hdc_rd_uint(&r, &f->idle);
    else if (key_is(k, kl, "window")) rc = hdc_rd_uint(&r, &f->window);
    else if (key_is(k, kl, "max_frame")) rc = hdc_rd_uint(&r, &f->max_frame);
    else if (key_is(k, kl, "code")) rc = rd_text(&r, &f->code, 64);
    else if (key_is(k, kl, "text")) rc = rd_text(&r, &f->text, MAX_TEXT);
    else if (key_is(k, kl, "alt")) rc = rd_text(&r, &f->alt, 300);
    else if (key_is(k, kl, "retry")) {
      uint64_t u;
      if (!(rc = hdc_rd_uint(&r, &u))) f->retry = u > 86400 * 365 ? 86400 * 365 : (int64_t)u;
    } else if (key_is(k, kl, "id")) {
      rc = hdc_rd_uint(&r, &f->id);
      have_id = 1;
    } else if (key_is(k, kl, "app")) rc = rd_text(&r, &f->app, MAX_ID);
    else if (key_is(k, kl, "to")) rc = rd_text(&r, &f->to, MAX_ID);
    else if (key_is(k, kl, "created")) {
      rc = hdc_rd_int(&r, &f->created);
      have_created = 1;
    } else if (key_is(k, kl, "expires")) rc = hdc_rd_int(&r, &f->expires);
    else if (key_is(k, kl, "data")) {
      rc = hdc_rd_skip(&r, &f->data, &f->data_len);
      have_data = 1;
    } else if (key_is(k, kl, "ids")) {
      uint32_t m;
      if ((rc = hdc_rd_array(&r, &m))) return rc;
      f->ids_raw = r.p;
      f->nids = m;
      for (uint32_t j = 0; j < m && !rc; j++) {
        uint64_t id;
        rc = hdc_rd_uint(&r, &id);
      }
      f->ids_len = (uint32_t)(r.p - f->ids_raw);
      have_ids = 1;
    } else if (key_is(k, kl, "n")) rc = hdc_rd_uint(&r, &f->n);
    else rc = hdc_rd_skip(&r, NULL, NULL);
    if (rc) return rc;
  }
  if (r.p != r.end) return HDC_EPROTO; /* one map, nothing after it */
  if (!f->type_name.p) return HDC_EPROTO;
  f->type = HDC_T_UNKNOWN;
  for (int t = HDC_T_HELLO; t <= HDC_T_GOAWAY; t++)
    if (hdc_str_eq(f->type_name, type_names[t])) f->type = (hdc_type)t;
  switch (f->type) {
  case HDC_T_HELLO:
    if (!f->v || !f->device.len || !f->tenant.len || !f->token.len) return HDC_EPROTO;
    break;
  case HDC_T_WELCOME:
    if (!f->v || !f->heartbeat || !f->window) return HDC_EPROTO;
    break;
  case HDC_T_DENY:
  case HDC_T_GOAWAY:
    if (!f->code.len) return HDC_EPROTO;
    break;
  case HDC_T_MSG:
    if (!have_id || !f->id || !f->app.len || !have_created || !have_data) return HDC_EPROTO;
    break;
  case HDC_T_ACK:
  case HDC_T_ACKED:
    if (!have_ids || f->nids == 0 || f->nids > HDC_MAX_ACK_IDS) return HDC_EPROTO;
    break;
  default: break;
  }
  return 0;
}

size_t hdc_frame_ids(const hdc_frame *f, uint64_t *out, size_t cap) {
  hdc_rd r = {f->ids_raw, f->ids_raw ? f->ids_raw + f->ids_len : NULL};
  size_t i = 0;
  for (; i < f->nids && i < cap; i++)
    if (hdc_rd_uint(&r, &out[i])) break;
  return i;
}

/* ---- builders ---- */
int64_t hdc_frame_begin(hdc_buf *b) {
  if (hdc_buf_reserve(b, HDC_HEADER)) return -1;
  int64_t at = b->len;
  b->len += HDC_HEADER;
  return at;
}

int hdc_frame_end(hdc_buf *b, int64_t at) {
  uint64_t n = b->len - (uint64_t)at - HDC_HEADER;
  if (n > HDC_MAX_FRAME_HARD) {
    b->len = (uint32_t)at;
    return HDC_ETOOBIG;
  }
  uint8_t *p = b->p + at;
  p[0] = (uint8_t)(n >> 24);
  p[1] = (uint8_t)(n >> 16);
  p[2] = (uint8_t)(n >> 8);
  p[3] = (uint8_t)n;
  return 0;
}

/* Builders run a sequence of writer calls; on failure they roll the buffer back so a half
 * frame never stays in it. */
#define BEGIN(b)                                                                            \
  int64_t at_ = hdc_frame_begin(b);                                                         \
  int rc_ = 0;                                                                              \
  if (at_ < 0) return HDC_ENOMEM
#define W(call)         \
  do {                  \
    if (!rc_) rc_ = (call); \
  } while (0)
#define END(b)                        \
  if (!rc_) rc_ = hdc_frame_end(b, at_); \
  else (b)->len = (uint32_t)at_;      \
  return rc_

static int kv_str(hdc_buf *b, const char *k, const char *v) {
  int rc = hdc_mp_cstr(b, k);
  return rc ? rc : hdc_mp_cstr(b, v);
}
static int kv_uint(hdc_buf *b, const char *k, uint64_t v) {
  int rc = hdc_mp_cstr(b, k);
  return rc ? rc : hdc_mp_uint(b, v);
}
static int kv_int(hdc_buf *b, const char *k, int64_t v) {
  int rc = hdc_mp_cstr(b, k);
  return rc ? rc : hdc_mp_int(b, v);
}

int hdc_enc_hello(hdc_buf *b, const char *device, const char *tenant, const char *token,
                  const char *agent) {
  if (!device || !tenant || !token) return HDC_EINVAL;
  BEGIN(b);
  W(hdc_mp_map(b, agent ? 6 : 5));
  W(kv_str(b, "t", "hello"));
  W(kv_uint(b, "v", HDC_PROTO_VERSION));
  W(kv_str(b, "device", device));
  W(kv_str(b, "tenant", tenant));
  W(kv_str(b, "token", token));
  if (agent) W(kv_str(b, "agent", agent));
  END(b);
}

int hdc_enc_welcome(hdc_buf *b, uint64_t heartbeat_s, uint64_t idle_s, uint64_t window,
                    uint64_t max_frame) {
  BEGIN(b);
  W(hdc_mp_map(b, 6));
  W(kv_str(b, "t", "welcome"));
  W(kv_uint(b, "v", HDC_PROTO_VERSION));
  W(kv_uint(b, "heartbeat", heartbeat_s));
  W(kv_uint(b, "idle", idle_s));
  W(kv_uint(b, "window", window));
  W(kv_uint(b, "max_frame", max_frame));
  END(b);
}

int hdc_enc_deny(hdc_buf *b, const char *code, const char *text, int64_t retry_s) {
  BEGIN(b);
  W(hdc_mp_map(b, 3 + (text != NULL) + (retry_s >= 0)));
  W(kv_str(b, "t", "deny"));
  W(kv_uint(b, "v", HDC_PROTO_VERSION));
  W(kv_str(b, "code", code));
  if (text) W(kv_str(b, "text", text));
  if (retry_s >= 0) W(kv_uint(b, "retry", (uint64_t)retry_s));
  END(b);
}

int hdc_enc_msg(hdc_buf *b, uint64_t id, const char *app, int64_t created_ms,
                int64_t expires_ms, const char *to, const void *data, size_t data_len) {
  BEGIN(b);
  W(hdc_mp_map(b, to ? 7 : 6));
  W(kv_str(b, "t", "msg"));
  W(kv_uint(b, "id", id));
  W(kv_str(b, "app", app));
  W(kv_int(b, "created", created_ms));
  W(kv_int(b, "expires", expires_ms));
  if (to) W(kv_str(b, "to", to));
  W(hdc_mp_cstr(b, "data"));
  if (data_len) W(hdc_mp_raw(b, data, data_len));
  else W(hdc_mp_nil(b)); /* an empty payload is not a value: send nil */
  END(b);
}

static int enc_ids(hdc_buf *b, const char *type, const uint64_t *ids, size_t n) {
  if (n == 0 || n > HDC_MAX_ACK_IDS) return HDC_EINVAL;
  BEGIN(b);
  W(hdc_mp_map(b, 2));
  W(kv_str(b, "t", type));
  W(hdc_mp_cstr(b, "ids"));
  W(hdc_mp_array(b, (uint32_t)n));
  for (size_t i = 0; i < n; i++) W(hdc_mp_uint(b, ids[i]));
  END(b);
}

int hdc_enc_ack(hdc_buf *b, const uint64_t *ids, size_t n) { return enc_ids(b, "ack", ids, n); }
int hdc_enc_acked(hdc_buf *b, const uint64_t *ids, size_t n) {
  return enc_ids(b, "acked", ids, n);
}

static int enc_pingpong(hdc_buf *b, const char *type, uint64_t n) {
  BEGIN(b);
  W(hdc_mp_map(b, n ? 2 : 1));
  W(kv_str(b, "t", type));
  if (n) W(kv_uint(b, "n", n));
  END(b);
}

int hdc_enc_ping(hdc_buf *b, uint64_t n) { return enc_pingpong(b, "ping", n); }
int hdc_enc_pong(hdc_buf *b, uint64_t n) { return enc_pingpong(b, "pong", n); }

int hdc_enc_goaway(hdc_buf *b, const char *code, const char *text, int64_t retry_s,
                   const char *alt) {
  BEGIN(b);
  W(hdc_mp_map(b, 2 + (text != NULL) + (retry_s >= 0) + (alt != NULL)));
  W(kv_str(b, "t", "goaway"));
  W(kv_str(b, "code", code));
  if (text) W(kv_str(b, "text", text));
  if (retry_s >= 0) W(kv_uint(b, "retry", (uint64_t)retry_s));
  if (alt) W(kv_str(b, "alt", alt));
  END(b);
}

/* ---- splitter ---- */
static uint32_t prefix(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

void hdc_framer_free(hdc_framer *fr) {
  free(fr->buf);
  fr->buf = NULL;
  fr->len = fr->need = 0;
}

/* Append n bytes to the partial frame, growing the buffer only by what arrived. */
static int keep(hdc_framer *fr, const uint8_t *p, size_t n) {
  uint8_t *nb = realloc(fr->buf, (size_t)fr->len + n);
  if (!nb) return HDC_ENOMEM;
  memcpy(nb + fr->len, p, n);
  fr->buf = nb;
  fr->len += (uint32_t)n;
  return 0;
}

static int check_prefix(uint32_t body, uint32_t max_body) {
  if (body == 0) return HDC_EPROTO;
  if (body > max_body || body > HDC_MAX_FRAME_HARD) return HDC_ETOOBIG;
  return 0;
}

int hdc_framer_feed(hdc_framer *fr, const uint8_t *data, size_t len, uint32_t max_body,
                    hdc_frame_cb cb, void *ud) {
  int rc;
  /* 1. Finish a frame begun in an earlier read. */
  if (fr->len) {
    if (!fr->need) {
      size_t take = HDC_HEADER - fr->len < len ? HDC_HEADER - fr->len : len;
      if ((rc = keep(fr, data, take))) return rc;
      data += take;
      len -= take;
      if (fr->len < HDC_HEADER) return 0;
      uint32_t body = prefix(fr->buf);
      if ((rc = check_prefix(body, max_body))) return rc;
      fr->need = HDC_HEADER + body;
    }
    size_t take = fr->need - fr->len < len ? fr->need - fr->len : len;
    if (take && (rc = keep(fr, data, take))) return rc;
    data += take;
    len -= take;
    if (fr->len < fr->need) return 0;
    /* Complete: hand it over, then free it before anything else can happen. */
    uint8_t *whole = fr->buf;
    uint32_t n = fr->len;
    fr->buf = NULL;
    fr->len = fr->need = 0;
    rc = cb(ud, whole + HDC_HEADER, n - HDC_HEADER);
    free(whole);
    if (rc) return rc;
  }
  /* 2. Whole frames straight out of the input. */
  while (len >= HDC_HEADER) {
    uint32_t body = prefix(data);
    if ((rc = check_prefix(body, max_body))) return rc;
    if (len - HDC_HEADER < body) break;
    if ((rc = cb(ud, data + HDC_HEADER, body))) return rc;
    data += HDC_HEADER + body;
    len -= HDC_HEADER + body;
  }
  /* 3. Keep the start of the next one. */
  if (len) {
    if ((rc = keep(fr, data, len))) return rc;
    if (len >= HDC_HEADER) fr->need = HDC_HEADER + prefix(data);
  }
  return 0;
}

/* ---- backoff ---- */
static uint64_t xorshift(uint64_t *s) {
  uint64_t x = *s ? *s : 0x9e3779b97f4a7c15ull;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *s = x;
}

uint32_t hdc_backoff_next(hdc_backoff *b) {
  uint64_t cap = b->base_ms ? b->base_ms : 1;
  for (uint32_t i = 0; i < b->attempt && cap < b->max_ms; i++) cap *= 2;
  if (b->max_ms && cap > b->max_ms) cap = b->max_ms;
  if (b->attempt < 64) b->attempt++;
  uint64_t lo = cap / 2;
  return (uint32_t)(lo + xorshift(&b->rng) % (cap - lo + 1));
}
