/* router.c — watch tables (see router.h). */
#include "router.h"

#include <stdlib.h>
#include <string.h>

#include "herald/error.h"

typedef struct wlink {
  struct wlink *prev, *next;
  hd_watch *w;
  uint64_t key;
} wlink;

struct hd_watch {
  hd_router *r;
  hd_wake_cb cb;
  void *ud;
  hd_watch *fire_next; /* detached by a wake-up, waiting for its callback */
  int pending;         /* on a fire list: no longer linked */
  int cancelled;       /* unwatched while pending: free it, do not call it */
  size_t nlinks;
  wlink links[]; /* [0] the device, then one per app */
};

/* Keys: devices as themselves, apps with the top bit set, so one table serves both. */
#define APP_KEY(a) ((uint64_t)(a) | (1ull << 63))

typedef struct bucket {
  wlink head; /* sentinel of a circular list */
} bucket;

struct hd_router {
  bucket *b;
  size_t nb; /* power of two */
  size_t nwatches;
};

static uint64_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  return x;
}

int hd__router_new(hd_router **out) {
  hd_router *r = calloc(1, sizeof *r);
  if (!r) return HD_ENOMEM;
  r->nb = 1u << 16;
  r->b = malloc(r->nb * sizeof *r->b);
  if (!r->b) {
    free(r);
    return HD_ENOMEM;
  }
  for (size_t i = 0; i < r->nb; i++) r->b[i].head.prev = r->b[i].head.next = &r->b[i].head;
  *out = r;
  return 0;
}

static void unlink_all(hd_router *r, hd_watch *w) {
  for (size_t i = 0; i < w->nlinks; i++) {
    wlink *l = &w->links[i];
    l->prev->next = l->next;
    l->next->prev = l->prev;
  }
  r->nwatches--;
}

hd_watch *hd__router_watch(hd_router *r, uint64_t dev_num, const uint32_t *apps, size_t napps,
                           hd_wake_cb cb, void *ud) {
  hd_watch *w = malloc(sizeof *w + (napps + 1) * sizeof(wlink));
  if (!w) return NULL;
  w->r = r;
  w->cb = cb;
  w->ud = ud;
  w->fire_next = NULL;
  w->pending = w->cancelled = 0;
  w->nlinks = napps + 1;
  for (size_t i = 0; i < w->nlinks; i++) {
    wlink *l = &w->links[i];
    l->w = w;
    l->key = i == 0 ? dev_num : APP_KEY(apps[i - 1]);
    wlink *h = &r->b[mix(l->key) & (r->nb - 1)].head;
    l->next = h->next;
    l->prev = h;
    h->next->prev = l;
    h->next = l;
  }
  r->nwatches++;
  return w;
}

void hd__router_unwatch(hd_watch *w) {
  if (!w) return;
  /* Detached by a wake-up in progress but not fired yet (another callback of that wake-up
   * cancels it): its links are gone and the fire list still holds it. */
  if (w->pending) {
    w->cancelled = 1;
    return;
  }
  unlink_all(w->r, w);
  free(w);
}

/* Detach every watch on key into a private list first, then fire: callbacks may arm new
 * watches on the same key, and those must wait for the next commit. The list is unbounded:
 * firing in rounds and rescanning would pick up the re-armed watches and never end. */
static void wake_key(hd_router *r, uint64_t key) {
  wlink *h = &r->b[mix(key) & (r->nb - 1)].head;
  hd_watch *fire = NULL, **tail = &fire;
  for (wlink *l = h->next; l != h;) {
    wlink *next = l->next;
    if (l->key == key) {
      hd_watch *w = l->w;
      /* Unlinking w removes all its links (it may have several in this bucket): step past
       * those so that `next` is still in the list afterwards. */
      while (next != h && next->w == w) next = next->next;
      unlink_all(r, w);
      w->pending = 1;
      w->fire_next = NULL;
      *tail = w;
      tail = &w->fire_next;
    }
    l = next;
  }
  while (fire) {
    hd_watch *w = fire;
    hd_wake_cb cb = w->cb;
    void *ud = w->ud;
    int cancelled = w->cancelled;
    fire = w->fire_next;
    free(w);
    if (!cancelled) cb(ud);
  }
}

void hd__router_wake_app(hd_router *r, uint32_t app_num) { wake_key(r, APP_KEY(app_num)); }
void hd__router_wake_device(hd_router *r, uint64_t dev_num) { wake_key(r, dev_num); }

void hd__router_wake_all(hd_router *r) {
  for (size_t i = 0; i < r->nb; i++) {
    wlink *h = &r->b[i].head;
    while (h->next != h) wake_key(r, h->next->key);
  }
}

size_t hd__router_watches(const hd_router *r) { return r->nwatches; }

void hd__router_free(hd_router *r) {
  if (!r) return;
  hd__router_wake_all(r);
  free(r->b);
  free(r);
}
