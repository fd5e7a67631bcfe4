/* pubbody.c — the HTTP publish body in one pass (see pubbody.h).
 *
 * Why not jansson here: building the JSON tree, converting it to msgpack and freeing it took
 * about 2.5 us of the loop's ~15 us per HTTP publish, the largest single item; yajl's events
 * written straight into msgpack take about 0.5 us. Other routes keep jansson (rare, and they
 * want the tree).
 *
 * Three things yajl 2.1 accepts that a strict JSON parser (jansson, RFC 8259) refuses are
 * refused here before or while parsing: \v and \f as whitespace, a \u escape of a lone or
 * mispaired UTF-16 surrogate (yajl writes '?' or a wrong character), \u0000; and it checks
 * UTF-8 only loosely (overlong forms, surrogates, past U+10FFFF), so every string is checked
 * with the codec's strict check. Numbers come to us as text and are read with strtoll/strtod
 * as jansson does (yajl's own integer reader refuses -9223372036854775808).
 *
 * msgpack wants a container's element count before its elements, an event parser knows it
 * after them: each container of "data" is written with a 5-byte placeholder header, its
 * count kept aside while its elements come, and one pass at the end writes every header in
 * the shortest form over its placeholder (msgpack-c's own choice, so the bytes equal
 * msgpack_pack_map/array's). */
#include "pubbody.h"

#include <errno.h>
#include <math.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_parse.h>

#include "bytes.h"
#include "codec.h"
#include "herald/error.h"

enum { F_NONE, F_TO, F_DATA, F_TTL, F_COLLAPSE };

/* A container of "data": where its placeholder header is, and its elements (map: pairs). */
typedef struct box {
  size_t off;
  uint32_t n;
  int map;
} box;

/* An open container: its box, and for a map where its keys begin in st.keys. */
typedef struct level {
  size_t box;
  size_t keys_begin;
} level;

/* A key of an open map of "data": its bytes in the output. */
typedef struct keyref {
  size_t off, len;
} keyref;

typedef struct st {
  msgpack_sbuffer sb; /* "data" as msgpack, headers not yet final */
  msgpack_packer pk;
  hd_pubbody *out;
  int depth;          /* containers open in the document: the body object is 1 */
  int field;          /* the body field whose value comes next */
  unsigned seen;      /* body fields given, a bit each */
  box *boxes;
  size_t nboxes, capboxes;
  level *open;        /* "data"'s open containers, innermost last */
  size_t nopen, capopen;
  keyref *keys;
  size_t nkeys, capkeys;
  yajl_handle h;
  size_t end;         /* where the body object closed */
  int oom;
  const char *why;
  char *whybuf;       /* for a reason that names something of the body */
  size_t whylen;
} st;

static int grow(void **v, size_t *cap, size_t need, size_t size) {
  if (need <= *cap) return 0;
  size_t n = *cap ? *cap * 2 : 16;
  while (n < need) n *= 2;
  void *p = realloc(*v, n * size);
  if (!p) return -1;
  *v = p;
  *cap = n;
  return 0;
}

static int fail(st *s, const char *why) {
  s->why = why;
  return 0; /* yajl stops: yajl_status_client_canceled */
}

static int nomem(st *s) {
  s->oom = 1;
  return fail(s, "out of memory");
}

/* A value is about to be read at the current position: 1 if it belongs to "data" (counted in
 * its container), 0 if it is a body field's own value (to, ttl, collapse), -1 if refused. */
static int data_value(st *s) {
  if (s->depth == 0) {
    fail(s, "body must be a JSON object");
    return -1;
  }
  if (s->depth == 1 && s->field != F_DATA) return 0;
  if (s->nopen) {
    box *b = &s->boxes[s->open[s->nopen - 1].box];
    if (!b->map) b->n++;
  }
  return 1;
}

static int field_type_error(st *s) {
  return fail(s, s->field == F_TTL ? "ttl must be a positive integer (seconds)"
                                   : "to and collapse must be strings");
}

static int ok(st *s, int rc) { return rc == 0 ? 1 : nomem(s); }

static int on_null(void *ctx) {
  st *s = ctx;
  int w = data_value(s);
  if (w < 0) return 0;
  if (w == 0) return 1; /* a field given as null is a field not given */
  return ok(s, msgpack_pack_nil(&s->pk));
}

static int on_boolean(void *ctx, int b) {
  st *s = ctx;
  int w = data_value(s);
  if (w <= 0) return w < 0 ? 0 : field_type_error(s);
  return ok(s, b ? msgpack_pack_true(&s->pk) : msgpack_pack_false(&s->pk));
}

/* A number as text, read as jansson reads it: an integer (no '.', 'e' or 'E') with strtoll,
 * refused beyond int64; else a real with strtod, refused when it overflows. */
static int on_number(void *ctx, const char *txt, size_t len) {
  st *s = ctx;
  int w = data_value(s);
  if (w < 0) return 0;
  char small[64], *z = len < sizeof small ? small : malloc(len + 1);
  if (!z) return nomem(s);
  memcpy(z, txt, len);
  z[len] = 0;
  int real = strpbrk(z, ".eE") != NULL, rc = 1;
  errno = 0;
  if (real) {
    double d = strtod(z, NULL);
    if ((d == HUGE_VAL || d == -HUGE_VAL) && errno == ERANGE) rc = fail(s, "invalid JSON: real number overflow");
    else if (w == 0) rc = field_type_error(s);
    else rc = ok(s, msgpack_pack_double(&s->pk, d));
  } else {
    long long v = strtoll(z, NULL, 10);
    if (errno == ERANGE) rc = fail(s, "invalid JSON: integer out of the 64-bit range");
    else if (w == 1) rc = ok(s, msgpack_pack_int64(&s->pk, (int64_t)v));
    else if (s->field == F_TTL && v >= 1) s->out->ttl_s = v;
    else rc = field_type_error(s);
  }
  if (z != small) free(z);
  return rc;
}

static int text_ok(st *s, const unsigned char *p, size_t n) {
  if (hd__codec_utf8_valid(p, n)) return 1;
  return fail(s, "invalid JSON: a string is not valid UTF-8");
}

static int pack_str(st *s, const unsigned char *p, size_t n) {
  return ok(s, msgpack_pack_str(&s->pk, n) || (n && msgpack_pack_str_body(&s->pk, p, n)));
}

static int on_string(void *ctx, const unsigned char *p, size_t n) {
  st *s = ctx;
  int w = data_value(s);
  if (w < 0 || !text_ok(s, p, n)) return 0;
  if (w == 1) return pack_str(s, p, n);
  if (s->field == F_TTL) return field_type_error(s);
  char *c = malloc(n + 1);
  if (!c) return nomem(s);
  memcpy(c, p, n);
  c[n] = 0;
  *(s->field == F_TO ? &s->out->to : &s->out->collapse) = c;
  return 1;
}

static int open_box(st *s, int map) {
  int w = data_value(s);
  if (w <= 0) return w < 0 ? 0 : field_type_error(s);
  /* The codec's cap, counted as it counts: "data" itself a container is level 1. */
  if (s->nopen >= HD_CODEC_MAX_DEPTH) return fail(s, "data is nested too deeply");
  if (grow((void **)&s->boxes, &s->capboxes, s->nboxes + 1, sizeof *s->boxes) ||
      grow((void **)&s->open, &s->capopen, s->nopen + 1, sizeof *s->open))
    return nomem(s);
  s->boxes[s->nboxes] = (box){s->sb.size, 0, map};
  s->open[s->nopen++] = (level){s->nboxes++, s->nkeys};
  static const char placeholder[5] = {(char)0xdf};
  return ok(s, msgpack_sbuffer_write(&s->sb, placeholder, sizeof placeholder));
}

static int on_start_map(void *ctx) {
  st *s = ctx;
  if (s->depth == 0) { /* the body itself */
    s->depth = 1;
    return 1;
  }
  if (!open_box(s, 1)) return 0;
  s->depth++;
  return 1;
}

static int on_start_array(void *ctx) {
  st *s = ctx;
  if (!open_box(s, 0)) return 0;
  s->depth++;
  return 1;
}

static int body_key(st *s, const unsigned char *k, size_t n) {
  static const struct {
    const char *name;
    int field;
  } fields[] = {{"to", F_TO}, {"data", F_DATA}, {"ttl", F_TTL}, {"collapse", F_COLLAPSE}};
  for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) {
    if (strlen(fields[i].name) != n || memcmp(fields[i].name, k, n) != 0) continue;
    unsigned bit = 1u << fields[i].field;
    if (s->seen & bit) return fail(s, "invalid JSON: a field is given twice");
    s->seen |= bit;
    s->field = fields[i].field;
    return 1;
  }
  /* A typo such as "tll" must not silently mean "default". */
  snprintf(s->whybuf, s->whylen, "unknown field '%.*s' (allowed: to, data, ttl, collapse)",
           (int)(n > 100 ? 100 : n), (const char *)k);
  return fail(s, s->whybuf);
}

static int on_map_key(void *ctx, const unsigned char *k, size_t n) {
  st *s = ctx;
  if (!text_ok(s, k, n)) return 0;
  if (s->depth == 1) return body_key(s, k, n);
  s->boxes[s->open[s->nopen - 1].box].n++;
  if (msgpack_pack_str(&s->pk, n)) return nomem(s);
  if (grow((void **)&s->keys, &s->capkeys, s->nkeys + 1, sizeof *s->keys)) return nomem(s);
  s->keys[s->nkeys++] = (keyref){s->sb.size, n};
  return ok(s, n ? msgpack_pack_str_body(&s->pk, k, n) : 0);
}

static int key_cmp(const void *a, const void *b, void *base) {
  const keyref *x = a, *y = b;
  if (x->len != y->len) return x->len < y->len ? -1 : 1;
  return memcmp((const char *)base + x->off, (const char *)base + y->off, x->len);
}

/* 1 if two of the n keys are the same: pairwise for a few, sorted beyond (a hostile object of
 * many keys costs n log n, not n squared). */
static int keys_repeat(st *s, keyref *k, size_t n) {
  if (n <= 16) {
    for (size_t i = 1; i < n; i++)
      for (size_t j = 0; j < i; j++)
        if (key_cmp(&k[i], &k[j], s->sb.data) == 0) return 1;
    return 0;
  }
  qsort_r(k, n, sizeof *k, key_cmp, s->sb.data);
  for (size_t i = 1; i < n; i++)
    if (key_cmp(&k[i], &k[i - 1], s->sb.data) == 0) return 1;
  return 0;
}

static int close_box(st *s) {
  if (--s->depth == 0) { /* the body object closed */
    s->end = yajl_get_bytes_consumed(s->h);
    return 1;
  }
  level l = s->open[--s->nopen];
  box *b = &s->boxes[l.box];
  if (b->map && s->nkeys - l.keys_begin > 1 &&
      keys_repeat(s, s->keys + l.keys_begin, s->nkeys - l.keys_begin))
    return fail(s, "invalid JSON: a key is repeated in an object of data");
  s->nkeys = l.keys_begin;
  return 1;
}

static int on_end_map(void *ctx) { return close_box(ctx); }
static int on_end_array(void *ctx) { return close_box(ctx); }

static const yajl_callbacks callbacks = {
    .yajl_null = on_null,
    .yajl_boolean = on_boolean,
    .yajl_number = on_number,
    .yajl_string = on_string,
    .yajl_start_map = on_start_map,
    .yajl_map_key = on_map_key,
    .yajl_end_map = on_end_map,
    .yajl_start_array = on_start_array,
    .yajl_end_array = on_end_array,
};

/* The 4 hex digits at p[at..] as a number, or -1 if they are not all there. */
static int hex4(const char *p, size_t len, size_t at) {
  int u = 0;
  for (size_t k = 0; k < 4; k++) {
    if (at + k >= len) return -1;
    int d = hd_hexval((unsigned char)p[at + k]);
    if (d < 0) return -1;
    u = u << 4 | d;
  }
  return u;
}

/* What yajl would let through: \v or \f (whitespace to yajl; never valid JSON, as raw control
 * characters are not allowed in strings either), \u0000, a \u escape of a surrogate that is
 * not a high one followed by an escaped low one. Returns the offset of the first, or len. */
static size_t prescan(const char *p, size_t len, const char **why) {
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)p[i];
    if (c == '\v' || c == '\f') {
      *why = "invalid whitespace";
      return i;
    }
    if (c != '\\' || i + 1 >= len) continue;
    if (p[i + 1] != 'u') {
      i++; /* \" \\ and the others: the escaped character is not looked at again */
      continue;
    }
    int u = hex4(p, len, i + 2);
    if (u < 0) continue; /* yajl refuses it */
    if (u == 0) {
      *why = "\\u0000 is not allowed";
      return i;
    }
    if (u >= 0xDC00 && u <= 0xDFFF) {
      *why = "a low surrogate escape without a high one";
      return i;
    }
    if (u >= 0xD800 && u <= 0xDBFF) {
      int lo = i + 7 < len && p[i + 6] == '\\' && p[i + 7] == 'u' ? hex4(p, len, i + 8) : -1;
      if (lo < 0xDC00 || lo > 0xDFFF) {
        *why = "a high surrogate escape without a low one";
        return i;
      }
      i += 6;
    }
    i += 5;
  }
  return len;
}

/* "invalid JSON at line L column C: what" in whybuf, for the byte at offset `at`. */
static const char *syntax_error(const char *p, size_t at, const char *what, int whatlen,
                                char *whybuf, size_t whylen) {
  int line = 1, col = 1;
  for (size_t i = 0; i < at; i++) {
    if (p[i] == '\n') {
      line++;
      col = 1;
    } else {
      col++;
    }
  }
  snprintf(whybuf, whylen, "invalid JSON at line %d column %d: %.*s", line, col, whatlen, what);
  return whybuf;
}

/* The header of a container of n elements as msgpack-c writes it, into h (at most 5 bytes). */
typedef struct hdr {
  char b[5];
  size_t n;
} hdr;

static int hdr_write(void *d, const char *p, size_t n) {
  hdr *h = d;
  if (h->n + n > sizeof h->b) return -1;
  memcpy(h->b + h->n, p, n);
  h->n += n;
  return 0;
}

/* Rewrites every placeholder header in its shortest form, closing the gaps: the output only
 * shrinks, so one forward pass in place does it. */
static void compact(st *s) {
  char *buf = s->sb.data;
  size_t rd = 0, wr = 0;
  for (size_t i = 0; i < s->nboxes; i++) {
    box *b = &s->boxes[i];
    memmove(buf + wr, buf + rd, b->off - rd);
    wr += b->off - rd;
    hdr h = {.n = 0};
    msgpack_packer hp;
    msgpack_packer_init(&hp, &h, hdr_write);
    if (b->map) msgpack_pack_map(&hp, b->n);
    else msgpack_pack_array(&hp, b->n);
    memcpy(buf + wr, h.b, h.n);
    wr += h.n;
    rd = b->off + 5;
  }
  memmove(buf + wr, buf + rd, s->sb.size - rd);
  s->sb.size = wr + (s->sb.size - rd);
}

void hd__pubbody_clear(hd_pubbody *pb) {
  free(pb->to);
  free(pb->collapse);
  free(pb->data);
  memset(pb, 0, sizeof *pb);
}

int hd__pubbody_parse(const char *body, size_t len, hd_pubbody *out, const char **why,
                      char *whybuf, size_t whylen) {
  memset(out, 0, sizeof *out);
  st s = {.out = out, .whybuf = whybuf, .whylen = whylen};
  int rc = HD_EINVAL;
  const char *bad;
  size_t at = prescan(body, len, &bad);
  if (at < len) {
    *why = syntax_error(body, at, bad, (int)strlen(bad), whybuf, whylen);
    return HD_EINVAL;
  }
  msgpack_sbuffer_init(&s.sb);
  msgpack_packer_init(&s.pk, &s.sb, msgpack_sbuffer_write);
  yajl_handle h = s.h = yajl_alloc(&callbacks, NULL, &s);
  if (!h) {
    *why = "out of memory";
    rc = HD_ENOMEM;
    goto out;
  }
  yajl_status ys = yajl_parse(h, (const unsigned char *)body, len);
  if (ys == yajl_status_ok) ys = yajl_complete_parse(h);
  if (ys == yajl_status_client_canceled) {
    rc = s.oom ? HD_ENOMEM : HD_EINVAL;
    *why = s.why;
    goto out;
  }
  if (ys != yajl_status_ok) {
    unsigned char *e = yajl_get_error(h, 0, NULL, 0);
    const char *t = e ? (const char *)e : "parse error";
    if (strncmp(t, "parse error: ", 13) == 0) t += 13;
    *why = syntax_error(body, yajl_get_bytes_consumed(h), t, (int)strcspn(t, "\n"), whybuf,
                        whylen);
    if (e) yajl_free_error(h, e);
    goto out;
  }
  /* yajl 2.1 takes an unfinished token after the value (a lone '"') for the end of input. */
  for (at = s.end; at < len && strchr(" \t\r\n", body[at]) && body[at]; at++) {
  }
  if (at < len) {
    *why = syntax_error(body, at, "trailing garbage", 16, whybuf, whylen);
    goto out;
  }
  if (!(s.seen & 1u << F_DATA) && msgpack_pack_nil(&s.pk)) {
    *why = "out of memory";
    rc = HD_ENOMEM;
    goto out;
  }
  compact(&s);
  out->data_len = s.sb.size;
  out->data = msgpack_sbuffer_release(&s.sb);
  rc = 0;
out:
  if (h) yajl_free(h);
  msgpack_sbuffer_destroy(&s.sb);
  free(s.boxes);
  free(s.open);
  free(s.keys);
  if (rc) hd__pubbody_clear(out);
  return rc;
}
