/* metrics.h — counters, gauges and histograms, rendered in the Prometheus text format.
 *
 * A metric is registered once (name, help, type, optional fixed label set such as
 * `transport="zmq"`) and updated through its pointer; the registry owns every metric.
 * Gauges may instead be computed at scrape time by a callback. Loop thread only.
 */
#ifndef HERALD_METRICS_H
#define HERALD_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "herald/transport.h" /* hd_metric, HD_METRIC_* */

#define HD_METRIC_HISTOGRAM 2

typedef struct hd_metrics hd_metrics;
typedef double (*hd_metric_fn)(void *ud);

int hd__metrics_new(hd_metrics **out);
void hd__metrics_free(hd_metrics *m);
/* Register; labels is NULL or `k="v",k2="v2"`. Same name with other labels shares HELP/TYPE.
 * NULL on ENOMEM or invalid name. */
hd_metric *hd__metric_new(hd_metrics *m, const char *name, const char *help, int type,
                          const char *labels);
/* A metric whose value is fn(ud) at scrape time: a counter when its name ends in "_total"
 * (Prometheus' convention; fn must then never go down), a gauge otherwise. */
int hd__metric_fn(hd_metrics *m, const char *name, const char *help, const char *labels,
                  hd_metric_fn fn, void *ud);
void hd__metric_add(hd_metric *x, double d);
void hd__metric_set(hd_metric *x, double v);
double hd__metric_get(const hd_metric *x);
/* Histogram with fixed buckets (seconds): 50us .. 10s. */
void hd__metric_observe(hd_metric *x, double v);
/* Render everything; *out is malloc'd (caller frees). */
int hd__metrics_render(hd_metrics *m, char **out, size_t *len);

#endif
