/* libFuzzer target: the HTTP publish body (broker/pubbody.c, yajl events straight to msgpack)
 * against the path it replaced, kept here as the reference: a jansson parse that refuses
 * duplicate keys, the field and type checks, then the codec's JSON -> msgpack. Both must
 * accept the same bodies and, for an accepted one, give the same fields and the same bytes.
 * Each input is tried as a whole body and as the value of "data" in {"data": ...}. */
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "herald/error.h"
#include "pubbody.h"

/* The reference: 0 and *o filled (strings and bytes malloc'd), or nonzero if refused. */
static int reference(const char *body, size_t len, hd_pubbody *o) {
  memset(o, 0, sizeof *o);
  /* A raw NUL byte is never valid JSON (not whitespace; unescaped in a string), but jansson
   * 2.14 skips one right after a number ({"data":0<NUL>} is accepted): not a rule to keep. */
  if (memchr(body, 0, len)) return 1;
  json_error_t e;
  json_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &e);
  if (!j) return 1;
  int rc = 1;
  if (!json_is_object(j)) goto out;
  const char *k;
  json_t *v;
  json_object_foreach(j, k, v) {
    if (strcmp(k, "to") && strcmp(k, "data") && strcmp(k, "ttl") && strcmp(k, "collapse"))
      goto out;
  }
  json_t *to = json_object_get(j, "to"), *data = json_object_get(j, "data");
  json_t *ttl = json_object_get(j, "ttl"), *collapse = json_object_get(j, "collapse");
  if ((to && !json_is_null(to) && !json_is_string(to)) ||
      (collapse && !json_is_null(collapse) && !json_is_string(collapse)))
    goto out;
  if (ttl && !json_is_null(ttl) && (!json_is_integer(ttl) || json_integer_value(ttl) < 1))
    goto out;
  json_t *null = json_null();
  int crc = hd__codec_json_to_mpbuf(data ? data : null, &o->data, &o->data_len);
  json_decref(null);
  if (crc) goto out;
  o->to = json_is_string(to) ? strdup(json_string_value(to)) : NULL;
  o->collapse = json_is_string(collapse) ? strdup(json_string_value(collapse)) : NULL;
  o->ttl_s = json_is_integer(ttl) ? json_integer_value(ttl) : 0;
  rc = 0;
out:
  json_decref(j);
  return rc;
}

static int same_str(const char *a, const char *b) {
  return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static void check(const char *body, size_t len) {
  hd_pubbody want, got;
  const char *why = NULL;
  char whybuf[300];
  int r = reference(body, len, &want);
  int g = hd__pubbody_parse(body, len, &got, &why, whybuf, sizeof whybuf);
  if (g == HD_ENOMEM) abort();
  if ((r == 0) != (g == 0)) abort(); /* one accepts what the other refuses */
  if (g && (!why || !*why)) abort(); /* a refusal always says why */
  if (r == 0) {
    if (!same_str(want.to, got.to) || !same_str(want.collapse, got.collapse) ||
        want.ttl_s != got.ttl_s || want.data_len != got.data_len ||
        memcmp(want.data, got.data, got.data_len) != 0)
      abort();
    if (hd__codec_msgpack_validate(got.data, got.data_len) != 0) abort();
  }
  hd__pubbody_clear(&want);
  hd__pubbody_clear(&got);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  check((const char *)data, size);
  char *wrapped = malloc(size + 10);
  if (!wrapped) return 0;
  memcpy(wrapped, "{\"data\":", 8);
  memcpy(wrapped + 8, data, size);
  wrapped[size + 8] = '}';
  check(wrapped, size + 9);
  free(wrapped);
  return 0;
}
