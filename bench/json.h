/* json.h — reading the JSON answers the bench receives (long-poll bodies of Herald, Nchan and
 * Pushpin) with jsmn (Debian libjsmn-dev): a tokenizer that builds no tree and allocates
 * nothing, where a full DOM (jansson) cost the load client more CPU per answer than the broker
 * spent producing it. Only what the counters need is read: objects by key, integers, strings.
 *
 * Ownership: hb_json points into the caller's text and a per-thread token array; valid until
 * the next hb_json_parse on the same thread. */
#ifndef HB_JSON_H
#define HB_JSON_H

#include <stddef.h>

typedef struct hb_json {
  const char *js;
  const void *tok; /* jsmntok_t[n] */
  int n;
} hb_json;

/* 0, or -1 when the text is not JSON (or has more tokens than the array holds). */
int hb_json_parse(hb_json *j, const char *js, size_t len);
/* The value of key in the object at token obj, or -1. Token 0 is the root. */
int hb_json_key(const hb_json *j, int obj, const char *key);
/* Elements of the array at token arr: the first is arr + 1, the next hb_json_next(j, i);
 * hb_json_count gives how many. -1 when arr is not an array. */
int hb_json_count(const hb_json *j, int arr);
int hb_json_next(const hb_json *j, int i);
/* The integer at token i (0 if i < 0 or not a number). */
long long hb_json_int(const hb_json *j, int i);
/* Copies the string at token i (raw, without unescaping) into out; 0, or -1. */
int hb_json_str(const hb_json *j, int i, char *out, size_t outlen);

#endif
