/* codec.h — converting payloads between JSON (jansson) and msgpack, in both directions.
 *
 * Message payloads are stored as msgpack. HTTP publishers send JSON, long-poll clients read
 * JSON, ZeroMQ publishers send msgpack. These functions are pure: no I/O, no globals,
 * thread-safe.
 *
 * Mapping: nil<->null, bool<->true/false, positive/negative int<->integer, float32/64<->real,
 * str<->string (must be valid UTF-8 when going to JSON), array<->array, map<->object (msgpack
 * map keys must be strings to go to JSON), bin/ext -> refused when going to JSON (HD_EINVAL).
 * Depth is capped at HD_CODEC_MAX_DEPTH (HD_EINVAL beyond) so hostile input cannot exhaust
 * the stack.
 */
#ifndef HERALD_CODEC_H
#define HERALD_CODEC_H

#include <jansson.h>
#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

#define HD_CODEC_MAX_DEPTH 64

/* Append the msgpack encoding of `v` to `pk`. Returns 0 or HD_EINVAL. */
int hd__codec_json_to_msgpack(const json_t *v, msgpack_packer *pk);
/* Convenience: encode `v` into a malloc'd buffer (*out, *outlen), caller frees. */
int hd__codec_json_to_mpbuf(const json_t *v, char **out, size_t *outlen);
/* Build a new json_t (caller json_decref()s) from a msgpack object. Returns 0 or HD_EINVAL. */
int hd__codec_msgpack_to_json(const msgpack_object *o, json_t **out);
/* Decode one complete msgpack value from bytes and render it as compact JSON text:
 * *out is malloc'd and NUL-terminated (caller frees), *outlen its length.
 * Returns 0, HD_EINVAL for malformed/trailing bytes or unrepresentable values. */
int hd__codec_mpbytes_to_json_text(const void *buf, size_t len, char **out, size_t *outlen);
/* 1 if s[0..len) is strict UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing past
 * U+10FFFF; NUL allowed), as jansson requires of every string; else 0. */
int hd__codec_utf8_valid(const unsigned char *s, size_t len);
/* Validate that buf holds exactly one well-formed msgpack value within the depth cap. */
int hd__codec_msgpack_validate(const void *buf, size_t len);

/* Reading msgpack bytes value by value, without building objects: what a request parser needs
 * to pick a few fields out of a map and keep another field's bytes as they are. Bounds are
 * checked on every read, so it is safe on any bytes; run hd__codec_msgpack_validate first to
 * also have the depth cap and no trailing bytes. */
typedef struct hd_mp {
  const unsigned char *p, *end;
} hd_mp;

enum hd_mp_kind {
  HD_MP_NIL, HD_MP_BOOL,
  HD_MP_UINT,  /* any integer >= 0, whatever its encoding (as msgpack-c's POSITIVE_INTEGER) */
  HD_MP_NINT,  /* an integer < 0 */
  HD_MP_FLOAT, HD_MP_STR, HD_MP_BIN, HD_MP_EXT,
  HD_MP_ARRAY, /* n elements follow */
  HD_MP_MAP,   /* n key/value pairs follow */
};

typedef struct hd_mp_val {
  enum hd_mp_kind kind;
  uint64_t u;          /* HD_MP_UINT, HD_MP_BOOL (0/1) */
  int64_t i;           /* HD_MP_NINT */
  double f;            /* HD_MP_FLOAT (a float 32 widened) */
  const char *s;       /* HD_MP_STR, HD_MP_BIN, HD_MP_EXT: the bytes (ext: after the type byte) */
  uint64_t n;          /* their length; HD_MP_ARRAY / HD_MP_MAP: the element count */
} hd_mp_val;

/* Take the next value's header: a scalar whole, a container's header only (its elements are
 * read next). 0, or HD_EINVAL when the bytes end early or hold no msgpack value. */
int hd__mp_next(hd_mp *r, hd_mp_val *v);
/* Skip the next value whole (elements included, depth-capped); *at and *len say where its
 * bytes were. 0 or HD_EINVAL. depth is how deep the value sits in what is being read (0: it is
 * the whole of it), so that the cap counts from the outermost value as
 * hd__codec_msgpack_validate's does. */
int hd__mp_skip(hd_mp *r, int depth, const unsigned char **at, size_t *len);

#endif
