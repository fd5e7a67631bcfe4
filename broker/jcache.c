/* jcache.c — the JSON renderings of recent payloads (see jcache.h). */
#include "jcache.h"

#include <stdlib.h>
#include <string.h>

#include "herald/error.h"

typedef struct slot {
  uint64_t seq; /* 0: empty (ids start at 1) */
  char *text;
  size_t len;
} slot;

struct hd_jcache {
  slot s[HD_JCACHE_SLOTS];
};

hd_jcache *hd__jcache_new(void) { return calloc(1, sizeof(hd_jcache)); }

void hd__jcache_free(hd_jcache *c) {
  if (!c) return;
  for (size_t i = 0; i < HD_JCACHE_SLOTS; i++) free(c->s[i].text);
  free(c);
}

int hd__jcache_get(hd_jcache *c, uint64_t seq, char **out, size_t *len) {
  slot *x = &c->s[seq % HD_JCACHE_SLOTS];
  if (!seq || x->seq != seq) return HD_ENOTFOUND;
  char *t = malloc(x->len + 1);
  if (!t) return HD_ENOMEM;
  memcpy(t, x->text, x->len + 1);
  *out = t;
  *len = x->len;
  return 0;
}

void hd__jcache_put(hd_jcache *c, uint64_t seq, const char *json, size_t len) {
  if (!seq || len > HD_JCACHE_MAX_TEXT) return;
  slot *x = &c->s[seq % HD_JCACHE_SLOTS];
  if (x->seq == seq) return;
  char *t = realloc(x->text, len + 1);
  if (!t) return; /* the old entry stays whole */
  memcpy(t, json, len);
  t[len] = 0;
  x->text = t;
  x->len = len;
  x->seq = seq;
}
