/* codec.c — JSON (jansson) <-> msgpack conversion; see codec.h for the mapping.
 *
 * The byte-level decoder is our own rather than msgpack_unpack_next(): msgpack-c 4.0's C
 * unpacker has a fixed 32-level stack (it refuses depth 33..64, which our cap allows) and it
 * allocates room for a container's declared element count before reading any element, so
 * five hostile bytes ("dd ff ff ff ff") reserve ~96 GiB of zone. Our reader never allocates
 * ahead of the bytes actually present, stops at HD_CODEC_MAX_DEPTH, and builds json_t
 * directly. Recursion is bounded by the depth cap (a few dozen small frames at most).
 *
 * Depth counts containers: a scalar at the top is depth 0, [[1]] is depth 2. Every walker
 * here refuses the container that would open level HD_CODEC_MAX_DEPTH + 1.
 *
 * Errors: HD_EINVAL for anything the input itself makes impossible; HD_ENOMEM when jansson,
 * the packer's writer or malloc fail.
 */
#include "codec.h"

#include "herald/error.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- shared helpers ---------------------------------------------------------------------- */

/* Strict UTF-8 check (RFC 3629): no overlong forms, no surrogates, nothing past U+10FFFF.
 * NUL is allowed; jansson's *n APIs keep it. This is exactly what json_stringn() accepts, so
 * after it the *_nocheck constructors are safe and a NULL from them can only mean OOM. */
int hd__codec_utf8_valid(const unsigned char *s, size_t len) {
  size_t i = 0;
  while (i < len) {
    unsigned char c = s[i];
    size_t n;
    unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c < 0x80) {
      i++;
      continue;
    } else if (c >= 0xC2 && c <= 0xDF) {
      n = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 2;
      if (c == 0xE0) lo = 0xA0;      /* overlong */
      else if (c == 0xED) hi = 0x9F; /* UTF-16 surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 3;
      if (c == 0xF0) lo = 0x90;      /* overlong */
      else if (c == 0xF4) hi = 0x8F; /* past U+10FFFF */
    } else {
      return 0;
    }
    if (len - i - 1 < n) return 0;
    if (s[i + 1] < lo || s[i + 1] > hi) return 0;
    for (size_t k = 2; k <= n; k++)
      if ((s[i + k] & 0xC0) != 0x80) return 0;
    i += n + 1;
  }
  return 1;
}

static int make_string(const char *p, size_t len, json_t **out) {
  if (!hd__codec_utf8_valid((const unsigned char *)p, len)) return HD_EINVAL;
  *out = json_stringn_nocheck(p, len);
  return *out ? 0 : HD_ENOMEM;
}

static int make_uint(uint64_t u, json_t **out) {
  if (u > (uint64_t)INT64_MAX) return HD_EINVAL; /* a JSON integer is int64 in jansson */
  *out = json_integer((json_int_t)u);
  return *out ? 0 : HD_ENOMEM;
}

static int make_int(int64_t i, json_t **out) {
  *out = json_integer((json_int_t)i);
  return *out ? 0 : HD_ENOMEM;
}

static int make_real(double d, json_t **out) {
  if (!isfinite(d)) return HD_EINVAL; /* JSON has no NaN or infinity */
  *out = json_real(d);
  return *out ? 0 : HD_ENOMEM;
}

/* ---- JSON -> msgpack --------------------------------------------------------------------- */

static int pack_str(msgpack_packer *pk, const char *s, size_t len) {
  if (len > UINT32_MAX) return HD_EINVAL; /* msgpack_pack_str would silently truncate */
  if (msgpack_pack_str(pk, len) != 0) return HD_ENOMEM;
  if (len > 0 && msgpack_pack_str_body(pk, s, len) != 0) return HD_ENOMEM;
  return 0;
}

static int pack_value(const json_t *v, msgpack_packer *pk, int depth) {
  int rc;

  if (v == NULL) return HD_EINVAL;
  switch (json_typeof(v)) {
  case JSON_NULL:
    return msgpack_pack_nil(pk) == 0 ? 0 : HD_ENOMEM;
  case JSON_TRUE:
    return msgpack_pack_true(pk) == 0 ? 0 : HD_ENOMEM;
  case JSON_FALSE:
    return msgpack_pack_false(pk) == 0 ? 0 : HD_ENOMEM;
  case JSON_INTEGER:
    return msgpack_pack_int64(pk, (int64_t)json_integer_value(v)) == 0 ? 0 : HD_ENOMEM;
  case JSON_REAL:
    /* Always float64, even for 1.0, so the value comes back as a real. */
    return msgpack_pack_double(pk, json_real_value(v)) == 0 ? 0 : HD_ENOMEM;
  case JSON_STRING:
    return pack_str(pk, json_string_value(v), json_string_length(v));
  case JSON_ARRAY: {
    size_t n = json_array_size(v);
    if (depth >= HD_CODEC_MAX_DEPTH || n > UINT32_MAX) return HD_EINVAL;
    if (msgpack_pack_array(pk, n) != 0) return HD_ENOMEM;
    for (size_t i = 0; i < n; i++)
      if ((rc = pack_value(json_array_get(v, i), pk, depth + 1)) != 0) return rc;
    return 0;
  }
  case JSON_OBJECT: {
    size_t n = json_object_size(v);
    const char *key;
    size_t keylen;
    json_t *val;
    if (depth >= HD_CODEC_MAX_DEPTH || n > UINT32_MAX) return HD_EINVAL;
    if (msgpack_pack_map(pk, n) != 0) return HD_ENOMEM;
    /* jansson 2.14 iterates in insertion order; the keylen variant keeps keys with NUL. */
    json_object_keylen_foreach((json_t *)v, key, keylen, val) {
      if ((rc = pack_str(pk, key, keylen)) != 0) return rc;
      if ((rc = pack_value(val, pk, depth + 1)) != 0) return rc;
    }
    return 0;
  }
  }
  return HD_EINVAL;
}

int hd__codec_json_to_msgpack(const json_t *v, msgpack_packer *pk) {
  if (v == NULL || pk == NULL) return HD_EINVAL;
  return pack_value(v, pk, 0);
}

int hd__codec_json_to_mpbuf(const json_t *v, char **out, size_t *outlen) {
  msgpack_sbuffer sb;
  msgpack_packer pk;
  int rc;

  if (out == NULL || outlen == NULL) return HD_EINVAL;
  *out = NULL;
  *outlen = 0;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  rc = hd__codec_json_to_msgpack(v, &pk);
  if (rc != 0) goto out;
  /* sbuffer memory comes from malloc/realloc, so the caller's free() matches. */
  *outlen = sb.size;
  *out = msgpack_sbuffer_release(&sb);
out:
  msgpack_sbuffer_destroy(&sb);
  return rc;
}

/* ---- msgpack_object -> JSON -------------------------------------------------------------- */

static int object_to_json(const msgpack_object *o, json_t **out, int depth) {
  json_t *c = NULL, *item = NULL;
  int rc = 0;

  *out = NULL;
  switch (o->type) {
  case MSGPACK_OBJECT_NIL:
    *out = json_null();
    return 0;
  case MSGPACK_OBJECT_BOOLEAN:
    *out = json_boolean(o->via.boolean);
    return 0;
  case MSGPACK_OBJECT_POSITIVE_INTEGER:
    return make_uint(o->via.u64, out);
  case MSGPACK_OBJECT_NEGATIVE_INTEGER:
    return make_int(o->via.i64, out);
  case MSGPACK_OBJECT_FLOAT32: /* msgpack-c widens float32 into f64 */
  case MSGPACK_OBJECT_FLOAT64:
    return make_real(o->via.f64, out);
  case MSGPACK_OBJECT_STR:
    if (o->via.str.size > 0 && o->via.str.ptr == NULL) return HD_EINVAL;
    return make_string(o->via.str.size ? o->via.str.ptr : "", o->via.str.size, out);
  case MSGPACK_OBJECT_ARRAY:
    if (depth >= HD_CODEC_MAX_DEPTH) return HD_EINVAL;
    if (o->via.array.size > 0 && o->via.array.ptr == NULL) return HD_EINVAL;
    if ((c = json_array()) == NULL) return HD_ENOMEM;
    for (uint32_t i = 0; i < o->via.array.size; i++) {
      if ((rc = object_to_json(&o->via.array.ptr[i], &item, depth + 1)) != 0) goto out;
      if (json_array_append_new(c, item) != 0) {
        rc = HD_ENOMEM;
        goto out;
      }
    }
    break;
  case MSGPACK_OBJECT_MAP:
    if (depth >= HD_CODEC_MAX_DEPTH) return HD_EINVAL;
    if (o->via.map.size > 0 && o->via.map.ptr == NULL) return HD_EINVAL;
    if ((c = json_object()) == NULL) return HD_ENOMEM;
    for (uint32_t i = 0; i < o->via.map.size; i++) {
      const msgpack_object_kv *kv = &o->via.map.ptr[i];
      const char *key;
      size_t keylen;
      if (kv->key.type != MSGPACK_OBJECT_STR) {
        rc = HD_EINVAL;
        goto out;
      }
      keylen = kv->key.via.str.size;
      key = keylen ? kv->key.via.str.ptr : "";
      if (key == NULL || !hd__codec_utf8_valid((const unsigned char *)key, keylen)) {
        rc = HD_EINVAL;
        goto out;
      }
      if ((rc = object_to_json(&kv->val, &item, depth + 1)) != 0) goto out;
      /* A repeated key keeps the last value, as JSON parsers commonly do. */
      if (json_object_setn_new_nocheck(c, key, keylen, item) != 0) {
        rc = HD_ENOMEM;
        goto out;
      }
    }
    break;
  case MSGPACK_OBJECT_BIN:
  case MSGPACK_OBJECT_EXT:
  default:
    return HD_EINVAL;
  }
out:
  if (rc != 0) {
    json_decref(c);
    return rc;
  }
  *out = c;
  return 0;
}

int hd__codec_msgpack_to_json(const msgpack_object *o, json_t **out) {
  if (out == NULL) return HD_EINVAL;
  *out = NULL;
  if (o == NULL) return HD_EINVAL;
  return object_to_json(o, out, 0);
}

/* ---- msgpack bytes -> JSON / validation -------------------------------------------------- */

static int rd_take(hd_mp *r, uint64_t n, const unsigned char **at) {
  if ((uint64_t)(r->end - r->p) < n) return HD_EINVAL; /* 64-bit: ext32's n + 1 can't wrap */
  *at = r->p;
  r->p += n;
  return 0;
}

/* Read a big-endian unsigned integer of n (1, 2, 4 or 8) bytes. */
static int rd_be(hd_mp *r, size_t n, uint64_t *v) {
  const unsigned char *b;
  if (rd_take(r, n, &b) != 0) return HD_EINVAL;
  *v = 0;
  for (size_t i = 0; i < n; i++) *v = (*v << 8) | b[i];
  return 0;
}

/* Read one value starting at r->p. With out == NULL the value is only checked for being
 * well-formed msgpack (any type, any key type); otherwise it must map onto JSON and *out gets
 * a new reference. The format itself is hd__mp_next's: this decides what each kind becomes. */
static int rd_value(hd_mp *r, json_t **out, int depth) {
  hd_mp_val v;
  json_t *c = NULL, *item = NULL;
  int rc = 0;

  if (out) *out = NULL;
  if (hd__mp_next(r, &v) != 0) return HD_EINVAL;
  switch (v.kind) {
  case HD_MP_NIL:
    if (out) *out = json_null();
    return 0;
  case HD_MP_BOOL:
    if (out) *out = json_boolean(v.u);
    return 0;
  case HD_MP_UINT: return out ? make_uint(v.u, out) : 0;
  case HD_MP_NINT: return out ? make_int(v.i, out) : 0;
  case HD_MP_FLOAT: return out ? make_real(v.f, out) : 0;
  case HD_MP_STR: return out ? make_string(v.s, v.n, out) : 0;
  case HD_MP_BIN: /* JSON has neither */
  case HD_MP_EXT: return out ? HD_EINVAL : 0;
  case HD_MP_ARRAY:
  case HD_MP_MAP: break;
  }

  int is_map = v.kind == HD_MP_MAP;
  uint64_t n = v.n;
  if (depth >= HD_CODEC_MAX_DEPTH) return HD_EINVAL;
  /* Every element takes at least one byte: refuse impossible counts before looping. */
  if (n > (uint64_t)(r->end - r->p) || (is_map && n * 2 > (uint64_t)(r->end - r->p)))
    return HD_EINVAL;
  if (out && (c = is_map ? json_object() : json_array()) == NULL) return HD_ENOMEM;
  for (uint64_t i = 0; i < n; i++) {
    hd_mp_val key;
    if (is_map) {
      if (out) {
        /* Keys must be str; the raw bytes become the member name. */
        if (hd__mp_next(r, &key) != 0 || key.kind != HD_MP_STR ||
            !hd__codec_utf8_valid((const unsigned char *)key.s, key.n))
          goto einval;
      } else if ((rc = rd_value(r, NULL, depth + 1)) != 0) {
        goto out;
      }
    }
    if ((rc = rd_value(r, out ? &item : NULL, depth + 1)) != 0) goto out;
    if (!out) continue;
    if (is_map ? json_object_setn_new_nocheck(c, key.s, key.n, item)
               : json_array_append_new(c, item)) {
      rc = HD_ENOMEM;
      goto out;
    }
  }
  if (out) *out = c;
  return 0;
einval:
  rc = HD_EINVAL;
out:
  json_decref(c);
  return rc;
}

static int rd_whole(const void *buf, size_t len, json_t **out) {
  hd_mp r;
  int rc;

  if (buf == NULL || len == 0) return HD_EINVAL;
  r.p = buf;
  r.end = r.p + len;
  rc = rd_value(&r, out, 0);
  if (rc == 0 && r.p != r.end) {
    rc = HD_EINVAL; /* trailing bytes */
    if (out) {
      json_decref(*out);
      *out = NULL;
    }
  }
  return rc;
}

int hd__codec_msgpack_validate(const void *buf, size_t len) {
  return rd_whole(buf, len, NULL);
}

/* ---- value-by-value reading (hd_mp) ------------------------------------------------------- */

int hd__mp_skip(hd_mp *r, int depth, const unsigned char **at, size_t *len) {
  hd_mp m = {r->p, r->end};
  int rc = rd_value(&m, NULL, depth);
  if (rc) return rc;
  *at = r->p;
  *len = (size_t)(m.p - r->p);
  r->p = m.p;
  return 0;
}

int hd__mp_next(hd_mp *r, hd_mp_val *v) {
  hd_mp m = {r->p, r->end};
  const unsigned char *b;
  uint64_t u, n;
  memset(v, 0, sizeof *v);
  if (rd_take(&m, 1, &b) != 0) return HD_EINVAL;
  unsigned char t = b[0];
  if (t <= 0x7f) {
    v->kind = HD_MP_UINT;
    v->u = t;
  } else if (t >= 0xe0) {
    v->kind = HD_MP_NINT;
    v->i = (int8_t)t;
  } else if (t >= 0xa0 && t <= 0xbf) {
    n = t & 0x1f;
    goto str;
  } else if (t <= 0x8f) {
    v->kind = HD_MP_MAP;
    v->n = t & 0x0f;
  } else if (t <= 0x9f) {
    v->kind = HD_MP_ARRAY;
    v->n = t & 0x0f;
  } else {
    switch (t) {
    case 0xc0: v->kind = HD_MP_NIL; break;
    case 0xc2:
    case 0xc3:
      v->kind = HD_MP_BOOL;
      v->u = t == 0xc3;
      break;
    case 0xc4:
    case 0xc5:
    case 0xc6:
      if (rd_be(&m, (size_t)1 << (t - 0xc4), &n) || rd_take(&m, n, &b)) return HD_EINVAL;
      v->kind = HD_MP_BIN;
      v->s = (const char *)b;
      v->n = n;
      break;
    case 0xc7:
    case 0xc8:
    case 0xc9:
      if (rd_be(&m, (size_t)1 << (t - 0xc7), &n) || rd_take(&m, n + 1, &b)) return HD_EINVAL;
      v->kind = HD_MP_EXT;
      v->s = (const char *)b + 1;
      v->n = n;
      break;
    case 0xd4:
    case 0xd5:
    case 0xd6:
    case 0xd7:
    case 0xd8:
      n = (uint64_t)1 << (t - 0xd4);
      if (rd_take(&m, n + 1, &b)) return HD_EINVAL;
      v->kind = HD_MP_EXT;
      v->s = (const char *)b + 1;
      v->n = n;
      break;
    case 0xca: { /* float 32 */
      float f;
      uint32_t w;
      if (rd_be(&m, 4, &u)) return HD_EINVAL;
      w = (uint32_t)u;
      memcpy(&f, &w, sizeof f);
      v->kind = HD_MP_FLOAT;
      v->f = f;
      break;
    }
    case 0xcb: /* float 64 */
      if (rd_be(&m, 8, &u)) return HD_EINVAL;
      v->kind = HD_MP_FLOAT;
      memcpy(&v->f, &u, sizeof v->f);
      break;
    case 0xcc:
    case 0xcd:
    case 0xce:
    case 0xcf:
      if (rd_be(&m, (size_t)1 << (t - 0xcc), &u)) return HD_EINVAL;
      v->kind = HD_MP_UINT;
      v->u = u;
      break;
    case 0xd0:
    case 0xd1:
    case 0xd2:
    case 0xd3: {
      size_t w = (size_t)1 << (t - 0xd0);
      if (rd_be(&m, w, &u)) return HD_EINVAL;
      if (w < 8 && (u >> (w * 8 - 1)) & 1) u |= ~(uint64_t)0 << (w * 8);
      if (u <= (uint64_t)INT64_MAX) { /* >= 0 in any width: unsigned, as msgpack-c has it */
        v->kind = HD_MP_UINT;
        v->u = u;
      } else {
        v->kind = HD_MP_NINT;
        v->i = -(int64_t)(~u) - 1;
      }
      break;
    }
    case 0xd9:
    case 0xda:
    case 0xdb:
      if (rd_be(&m, (size_t)1 << (t - 0xd9), &n)) return HD_EINVAL;
      goto str;
    case 0xdc:
    case 0xdd:
      if (rd_be(&m, (size_t)2 << (t - 0xdc), &n)) return HD_EINVAL;
      v->kind = HD_MP_ARRAY;
      v->n = n;
      break;
    case 0xde:
    case 0xdf:
      if (rd_be(&m, (size_t)2 << (t - 0xde), &n)) return HD_EINVAL;
      v->kind = HD_MP_MAP;
      v->n = n;
      break;
    default: /* 0xc1 */
      return HD_EINVAL;
    }
  }
  r->p = m.p;
  return 0;
str:
  if (rd_take(&m, n, &b)) return HD_EINVAL;
  v->kind = HD_MP_STR;
  v->s = (const char *)b;
  v->n = n;
  r->p = m.p;
  return 0;
}

struct dump_buf {
  char *data;
  size_t len, cap;
};

static int dump_cb(const char *s, size_t n, void *arg) {
  struct dump_buf *d = arg;
  if (n >= d->cap - d->len) {
    size_t cap = d->cap ? d->cap : 64;
    char *p;
    while (n >= cap - d->len) {
      if (cap > SIZE_MAX / 2) return -1;
      cap *= 2;
    }
    if ((p = realloc(d->data, cap)) == NULL) return -1;
    d->data = p;
    d->cap = cap;
  }
  memcpy(d->data + d->len, s, n);
  d->len += n;
  d->data[d->len] = '\0';
  return 0;
}

int hd__codec_mpbytes_to_json_text(const void *buf, size_t len, char **out, size_t *outlen) {
  json_t *v = NULL;
  struct dump_buf d = {0};
  int rc;

  if (out == NULL || outlen == NULL) return HD_EINVAL;
  *out = NULL;
  *outlen = 0;
  if ((rc = rd_whole(buf, len, &v)) != 0) goto out;
  /* Dump through a callback into our own malloc'd buffer: json_dumps() would hand back
   * memory from jansson's allocator, which need not be free()-compatible. */
  if (json_dump_callback(v, dump_cb, &d, JSON_COMPACT | JSON_ENCODE_ANY) != 0 ||
      d.data == NULL) {
    rc = HD_ENOMEM;
    goto out;
  }
  *out = d.data;
  *outlen = d.len;
  d.data = NULL;
out:
  free(d.data);
  json_decref(v);
  return rc;
}
