/* jcache.h — the JSON text of recently rendered message payloads, by message id.
 *
 * A broadcast is fetched by every device that holds a long-poll, each fetch into its own
 * hd_msg; rendering the msgpack payload as JSON once per device cost the long-poll fan-out
 * about a seventh of the loop's time. Ids are never reused and a stored payload never changes,
 * so an id names one rendering for good: the cache is never invalidated, only overwritten.
 *
 * Direct-mapped by id (consecutive ids take consecutive slots), HD_JCACHE_SLOTS entries of at
 * most HD_JCACHE_MAX_TEXT bytes each, so it holds at most a few MiB. Loop thread only.
 *
 * Ownership: the cache owns its copies; hd__jcache_get hands out a fresh malloc'd copy (the
 * caller frees), hd__jcache_put copies what it is given.
 */
#ifndef HERALD_JCACHE_H
#define HERALD_JCACHE_H

#include <stddef.h>
#include <stdint.h>

#define HD_JCACHE_SLOTS 1024
#define HD_JCACHE_MAX_TEXT 4096

typedef struct hd_jcache hd_jcache;

/* NULL when out of memory (callers then render every time). */
hd_jcache *hd__jcache_new(void);
void hd__jcache_free(hd_jcache *c);
/* 0 with *out (malloc'd, NUL-terminated, caller frees) and *len; HD_ENOTFOUND when not
 * cached; HD_ENOMEM. On failure *out and *len are left as they were. */
int hd__jcache_get(hd_jcache *c, uint64_t seq, char **out, size_t *len);
/* Remember the rendering of message seq (len bytes, no NUL needed). Too long, or no memory:
 * not cached, which only costs a rendering later. */
void hd__jcache_put(hd_jcache *c, uint64_t seq, const char *json, size_t len);

#endif
