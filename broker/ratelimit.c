/* ratelimit.c — fixed-table token buckets (see ratelimit.h). */
#include "ratelimit.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bytes.h"

#define EPS 1e-9

typedef struct bucket {
  double tokens;
  uint64_t last_ms;
  int used;               /* 0: never taken from, so full (a time of 0 is a valid time) */
} bucket;

struct hd_ratelimit {
  double per_ms;
  double burst;
  size_t nslots;
  bucket *slots;          /* NULL until the first take */
};

hd_ratelimit *hd__ratelimit_new(double per_min, double burst, size_t slots) {
  hd_ratelimit *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  r->nslots = slots ? slots : 1;
  r->per_ms = per_min > 0 ? per_min / 60000.0 : 0;
  r->burst = burst < 1 ? 1 : burst;
  return r;
}

int hd__ratelimit_take_wait(hd_ratelimit *r, const char *key, uint64_t now_ms,
                            uint64_t *wait_ms) {
  /* The table comes with the first take: a tenant's self-registration limiter (4,096 slots,
   * 96 KiB) is made for every tenant, and most never see a browser register. */
  if (!r->slots && !(r->slots = calloc(r->nslots, sizeof *r->slots))) {
    if (wait_ms) *wait_ms = 1000; /* out of memory: refused, as the stricter answer */
    return 0;
  }
  bucket *b = &r->slots[hd_fnv1a(key) % r->nslots];
  if (!b->used) {
    b->used = 1;
    b->tokens = r->burst;
    b->last_ms = now_ms;
  }
  if (now_ms > b->last_ms) {
    b->tokens += (double)(now_ms - b->last_ms) * r->per_ms;
    if (b->tokens > r->burst) b->tokens = r->burst;
  }
  /* Never backwards: a clock stepping back must not refill the bucket when it comes forward. */
  if (now_ms > b->last_ms) b->last_ms = now_ms;
  /* EPS: sums of per-millisecond fractions are not exact in binary; a token that is there
   * but for rounding is there. */
  if (b->tokens >= 1.0 - EPS) {
    b->tokens = b->tokens > 1.0 ? b->tokens - 1.0 : 0;
    return 1;
  }
  if (wait_ms) {
    double w = r->per_ms > 0 ? ceil((1.0 - b->tokens) / r->per_ms - EPS) : (double)UINT64_MAX;
    *wait_ms = w < 1 ? 1 : w >= (double)UINT64_MAX ? UINT64_MAX : (uint64_t)w;
  }
  return 0;
}

int hd__ratelimit_take(hd_ratelimit *r, const char *key, uint64_t now_ms) {
  return hd__ratelimit_take_wait(r, key, now_ms, NULL);
}

void hd__ratelimit_free(hd_ratelimit *r) {
  if (!r) return;
  free(r->slots);
  free(r);
}
