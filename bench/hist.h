/* hist.h — a small HDR-style latency histogram: log-linear buckets (64 per power of two, so
 * about 1.6 % relative precision) over 1 ns .. 2^63 ns, fixed 32 KiB, O(1) record.
 * Not thread-safe; merge histograms from several threads with hb_hist_merge. */
#ifndef HERALD_BENCH_HIST_H
#define HERALD_BENCH_HIST_H

#include <stdint.h>

#define HB_HIST_SUB 64
#define HB_HIST_BUCKETS (64 * HB_HIST_SUB)

typedef struct hb_hist {
  uint64_t count;
  uint64_t min, max;
  double sum;
  uint64_t b[HB_HIST_BUCKETS];
} hb_hist;

void hb_hist_init(hb_hist *h);
void hb_hist_record(hb_hist *h, uint64_t v);
void hb_hist_merge(hb_hist *into, const hb_hist *from);
/* Value at quantile q in [0,1] (the bucket's upper edge, capped at max). 0 if empty. */
uint64_t hb_hist_quantile(const hb_hist *h, double q);
double hb_hist_mean(const hb_hist *h);
/* Record value v n times (rebuilding a histogram from its buckets, herald-bench plot). */
void hb_hist_record_n(hb_hist *h, uint64_t v, uint64_t n);
/* The largest value bucket i holds (its edge; what the JSON output lists per bucket). */
uint64_t hb_hist_bucket_upper(unsigned i);

#endif
