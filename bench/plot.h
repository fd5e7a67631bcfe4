/* plot.h — latency distributions drawn with gnuplot, after a run (never on the measuring path).
 * The picture is the HDR-style percentile spectrum: x = percentile on a log axis of 1/(1-p)
 * (labelled 50 %, 90 %, 99 %, 99.9 %, 99.99 %…), y = latency in ms, one line per histogram.
 * gnuplot runs as a separate process fed the script and the data on a pipe; when it is not
 * installed we say so and draw nothing. */
#ifndef HERALD_BENCH_PLOT_H
#define HERALD_BENCH_PLOT_H

#include "bench.h"
#include "hist.h"

/* Draw n histograms side by side into png. Returns 0, or -1 (the reason on stderr). */
int hb_plot(const char *png, const char *title, const char *const *labels,
            const hb_hist *const *hists, int n);
/* --plot FILE: after a scenario, draw its one distribution; failing to draw does not fail the
 * run (the figures are already printed). */
void hb_plot_run(const opts *o, const char *scenario, const hb_hist *h);
/* herald-bench plot --out PNG [--title T] LABEL=FILE...: each FILE is a histogram as bench/
 * report.py writes it from the --json results ("min NS", "max NS", then "UPPER_NS COUNT"
 * lines); one line per LABEL. argv[0] is "plot". Returns the exit status. */
int hb_plot_main(int argc, char **argv);

#endif
