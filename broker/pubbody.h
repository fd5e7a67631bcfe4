/* pubbody.h — the body of an HTTP publish (POST /v1/apps/{app}/messages): one JSON object with
 * the fields to, data, ttl and collapse, read in one pass with yajl's event parser and "data"
 * written as msgpack while it is read, with no JSON tree in between.
 *
 * It accepts exactly the bodies a jansson parse (JSON_REJECT_DUPLICATES) followed by the
 * codec's JSON -> msgpack conversion accepts, and the msgpack bytes are the same
 * (tests/fuzz/fuzz_pubbody.c checks both against that path). Pure: no I/O, no globals. */
#ifndef HERALD_PUBBODY_H
#define HERALD_PUBBODY_H

#include <stddef.h>
#include <stdint.h>

typedef struct hd_pubbody {
  char *to;          /* NUL-terminated; NULL when absent or null */
  char *collapse;    /* the same */
  int64_t ttl_s;     /* >= 1; 0 when absent or null */
  char *data;        /* msgpack of "data" (nil when absent) */
  size_t data_len;
} hd_pubbody;

/* Reads body[0..len) into *out. 0, or HD_EINVAL with *why a reason the client can act on
 * (an invalid JSON text with its line and column; a field that is unknown, repeated or of
 * the wrong type; data nested deeper than HD_CODEC_MAX_DEPTH), or HD_ENOMEM. why points into
 * whybuf or at static text. On success the caller owns the strings: hd__pubbody_clear frees
 * them; on failure nothing is left to free. */
int hd__pubbody_parse(const char *body, size_t len, hd_pubbody *out, const char **why,
                      char *whybuf, size_t whylen);
void hd__pubbody_clear(hd_pubbody *pb);

#endif
