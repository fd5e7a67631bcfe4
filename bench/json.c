/* json.c — hb_json on jsmn (see json.h). */
#include "json.h"

#include <stdlib.h>
#include <string.h>

#define JSMN_STATIC
#include <jsmn.h>

/* A long-poll answer holds at most a few hundred messages of about a dozen tokens each. */
#define HB_JSON_TOKENS 16384
static __thread jsmntok_t toks[HB_JSON_TOKENS];

int hb_json_parse(hb_json *j, const char *js, size_t len) {
  jsmn_parser p;
  jsmn_init(&p);
  int n = jsmn_parse(&p, js, len, toks, HB_JSON_TOKENS);
  j->js = js;
  j->tok = toks;
  j->n = n > 0 ? n : 0;
  return n > 0 ? 0 : -1;
}

static const jsmntok_t *T(const hb_json *j) { return j->tok; }

int hb_json_next(const hb_json *j, int i) {
  /* Skip the subtree at i: an object or array's children follow it, each with its own. */
  int pending = 1;
  while (pending > 0 && i < j->n) {
    const jsmntok_t *t = &T(j)[i];
    pending--;
    if (t->type == JSMN_OBJECT) pending += 2 * t->size;
    else if (t->type == JSMN_ARRAY) pending += t->size;
    i++;
  }
  return i;
}

int hb_json_key(const hb_json *j, int obj, const char *key) {
  if (obj < 0 || obj >= j->n || T(j)[obj].type != JSMN_OBJECT) return -1;
  size_t kl = strlen(key);
  int i = obj + 1;
  for (int k = 0; k < T(j)[obj].size && i < j->n; k++) {
    const jsmntok_t *t = &T(j)[i];
    int v = i + 1;
    if (t->type == JSMN_STRING && (size_t)(t->end - t->start) == kl &&
        memcmp(j->js + t->start, key, kl) == 0)
      return v < j->n ? v : -1;
    i = hb_json_next(j, v);
  }
  return -1;
}

int hb_json_count(const hb_json *j, int arr) {
  if (arr < 0 || arr >= j->n || T(j)[arr].type != JSMN_ARRAY) return -1;
  return T(j)[arr].size;
}

long long hb_json_int(const hb_json *j, int i) {
  if (i < 0 || i >= j->n || T(j)[i].type != JSMN_PRIMITIVE) return 0;
  /* the token ends at a delimiter strtoll stops at: , } ] or space */
  return strtoll(j->js + T(j)[i].start, NULL, 10);
}

int hb_json_str(const hb_json *j, int i, char *out, size_t outlen) {
  if (i < 0 || i >= j->n || T(j)[i].type != JSMN_STRING) return -1;
  size_t l = (size_t)(T(j)[i].end - T(j)[i].start);
  if (l >= outlen) return -1;
  memcpy(out, j->js + T(j)[i].start, l);
  out[l] = 0;
  return 0;
}
