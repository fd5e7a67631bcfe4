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
/* Validate that buf holds exactly one well-formed msgpack value within the depth cap. */
int hd__codec_msgpack_validate(const void *buf, size_t len);

#endif
