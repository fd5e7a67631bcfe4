/* hist.c — log-linear histogram (see hist.h). */
#include "hist.h"

#include <string.h>

void hb_hist_init(hb_hist *h) {
  memset(h, 0, sizeof *h);
  h->min = UINT64_MAX;
}

/* Values below 64 get exact buckets; above, the top 6 bits after the leading one pick the
 * sub-bucket of the value's power of two. */
static unsigned idx(uint64_t v) {
  if (v < HB_HIST_SUB) return (unsigned)v;
  unsigned e = 63u - (unsigned)__builtin_clzll(v); /* >= 6 */
  unsigned sub = (unsigned)(v >> (e - 6)) & (HB_HIST_SUB - 1);
  return (e - 5) * HB_HIST_SUB + sub;
}

static uint64_t upper(unsigned i) {
  if (i < HB_HIST_SUB) return i;
  unsigned e = i / HB_HIST_SUB + 5, sub = i % HB_HIST_SUB;
  return ((uint64_t)(HB_HIST_SUB + sub + 1) << (e - 6)) - 1;
}

void hb_hist_record(hb_hist *h, uint64_t v) { hb_hist_record_n(h, v, 1); }

void hb_hist_record_n(hb_hist *h, uint64_t v, uint64_t n) {
  if (!n) return;
  h->b[idx(v)] += n;
  h->count += n;
  h->sum += (double)v * (double)n;
  if (v < h->min) h->min = v;
  if (v > h->max) h->max = v;
}

uint64_t hb_hist_bucket_upper(unsigned i) { return i < HB_HIST_BUCKETS ? upper(i) : UINT64_MAX; }

void hb_hist_merge(hb_hist *into, const hb_hist *from) {
  for (unsigned i = 0; i < HB_HIST_BUCKETS; i++) into->b[i] += from->b[i];
  into->count += from->count;
  into->sum += from->sum;
  if (from->min < into->min) into->min = from->min;
  if (from->max > into->max) into->max = from->max;
}

uint64_t hb_hist_quantile(const hb_hist *h, double q) {
  if (!h->count) return 0;
  uint64_t want = (uint64_t)(q * (double)h->count + 0.5);
  if (want < 1) want = 1;
  if (want > h->count) want = h->count;
  uint64_t seen = 0;
  for (unsigned i = 0; i < HB_HIST_BUCKETS; i++) {
    seen += h->b[i];
    if (seen >= want) {
      uint64_t u = upper(i);
      return u > h->max ? h->max : (u < h->min ? h->min : u);
    }
  }
  return h->max;
}

double hb_hist_mean(const hb_hist *h) { return h->count ? h->sum / (double)h->count : 0; }
