/* ratelimit.h — token buckets keyed by a string (a client address, a tenant), in a fixed-size
 * table.
 *
 * Keys hash into `slots` buckets; two keys that share a slot share a budget, which can only
 * make the limit stricter, never looser, and keeps memory fixed whatever the number of
 * clients (one slot: a single bucket, e.g. a tenant's publish cap). A bucket starts full.
 * Time is whatever monotonic or wall clock the caller passes in milliseconds, 0 included; a
 * clock that steps back adds nothing and takes nothing away. Loop thread only. The caller owns
 * the limiter (hd__ratelimit_free). The table is allocated at the first take, so a limiter
 * nobody takes from costs a few bytes; a take that cannot allocate it is refused.
 */
#ifndef HERALD_RATELIMIT_H
#define HERALD_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

typedef struct hd_ratelimit hd_ratelimit;

/* `per_min` tokens per minute, bursts up to `burst` (at least 1). NULL on ENOMEM. */
hd_ratelimit *hd__ratelimit_new(double per_min, double burst, size_t slots);
/* Take one token for key at time now_ms: 1 if allowed, 0 if over the limit. */
int hd__ratelimit_take(hd_ratelimit *r, const char *key, uint64_t now_ms);
/* The same; when refused, *wait_ms (if not NULL) gets how long until a token is there (at
 * least 1). */
int hd__ratelimit_take_wait(hd_ratelimit *r, const char *key, uint64_t now_ms,
                            uint64_t *wait_ms);
void hd__ratelimit_free(hd_ratelimit *r);

#endif
