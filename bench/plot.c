/* plot.c — latency spectra through gnuplot (see plot.h). */
#include "plot.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Points per halving of the distance to 100 %, as HdrHistogram's percentile output has it. */
#define TICKS_PER_HALF 5

static int have_gnuplot(void) {
  const char *path = getenv("PATH");
  char dir[4096], exe[4200];
  for (const char *p = path ? path : "/usr/bin:/bin"; *p;) {
    size_t n = strcspn(p, ":");
    snprintf(dir, sizeof dir, "%.*s", (int)n, p);
    snprintf(exe, sizeof exe, "%s/gnuplot", n ? dir : ".");
    if (access(exe, X_OK) == 0) return 1;
    p += n + (p[n] == ':');
  }
  return 0;
}

/* A string as a gnuplot double-quoted literal's contents. */
static void gp_str(FILE *f, const char *s) {
  for (; *s; s++) {
    if (*s == '"' || *s == '\\') fputc('\\', f);
    fputc(*s, f);
  }
}

/* The spectrum of one histogram as a datablock: "x ms" with x = 1/(1-p), from p = 0 up to the
 * last percentile the count can resolve (x = count), where the value is the maximum. */
static void spectrum(FILE *f, int i, const hb_hist *h) {
  fprintf(f, "$d%d << EOD\n", i);
  if (h->count) {
    double last = (double)h->count;
    for (int k = 0;; k++) {
      double x = 1.0, p;
      for (int j = 0; j < k / TICKS_PER_HALF; j++) x *= 2;
      x *= 1.0 + (double)(k % TICKS_PER_HALF) / TICKS_PER_HALF; /* between two halvings */
      if (x >= last) break;
      p = 1.0 - 1.0 / x;
      fprintf(f, "%.6g %.6f\n", x, (double)hb_hist_quantile(h, p) / 1e6);
    }
    fprintf(f, "%.6g %.6f\n", last < 2 ? 2.0 : last, (double)h->max / 1e6);
  }
  fprintf(f, "EOD\n");
}

int hb_plot(const char *png, const char *title, const char *const *labels,
            const hb_hist *const *hists, int n) {
  if (!have_gnuplot()) {
    fprintf(stderr, "herald-bench: no plot: gnuplot is not installed (Debian: apt-get install "
                    "gnuplot-nox); %s not written\n", png);
    return -1;
  }
  FILE *f = popen("gnuplot", "w");
  if (!f) {
    fprintf(stderr, "herald-bench: no plot: cannot run gnuplot: %s\n", strerror(errno));
    return -1;
  }
  double xmax = 10;
  for (int i = 0; i < n; i++)
    if ((double)hists[i]->count > xmax) xmax = (double)hists[i]->count;
  fputs("set terminal pngcairo size 1000,650 noenhanced font 'sans,10'\nset output \"", f);
  gp_str(f, png);
  fputs("\"\nset title \"", f);
  gp_str(f, title);
  fprintf(f,
          "\"\nset logscale x\nset xrange [1:%g]\nset yrange [0:*]\n"
          /* tic labels are formats to gnuplot: %%%% here is a literal % there */
          "set xtics ('0%%%%' 1, '50%%%%' 2, '90%%%%' 10, '99%%%%' 100, '99.9%%%%' 1000, "
          "'99.99%%%%' 10000, '99.999%%%%' 100000, '99.9999%%%%' 1000000, "
          "'99.99999%%%%' 10000000)\n"
          "set mxtics 10\nset xlabel 'percentile'\nset ylabel 'latency (ms)'\n"
          "set grid xtics ytics\nset key below Left reverse\n",
          xmax);
  for (int i = 0; i < n; i++) spectrum(f, i, hists[i]);
  fputs("plot ", f);
  for (int i = 0; i < n; i++) {
    fprintf(f, "%s$d%d using 1:2 with lines linewidth 2 title \"", i ? ", " : "", i);
    gp_str(f, labels[i]);
    fprintf(f, " (n=%llu, p99 %.1f ms, max %.1f ms)\"", (unsigned long long)hists[i]->count,
            (double)hb_hist_quantile(hists[i], 0.99) / 1e6, (double)hists[i]->max / 1e6);
  }
  fputs("\n", f);
  int st = pclose(f);
  if (st != 0) {
    fprintf(stderr, "herald-bench: gnuplot failed (status %d); %s may be incomplete\n",
            WIFEXITED(st) ? WEXITSTATUS(st) : st, png);
    return -1;
  }
  return 0;
}

void hb_plot_run(const opts *o, const char *scenario, const hb_hist *h) {
  if (!o->plot) return;
  const char *label = scenario;
  const hb_hist *hs[1] = {h};
  if (hb_plot(o->plot, scenario, &label, hs, 1) == 0 && !o->json)
    printf("  latency plot    %s\n", o->plot);
}

static int load_hist(const char *file, hb_hist *h) {
  FILE *f = fopen(file, "r");
  if (!f) {
    fprintf(stderr, "herald-bench plot: %s: %s\n", file, strerror(errno));
    return -1;
  }
  hb_hist_init(h);
  char line[256];
  unsigned long long a, b, min = 0, max = 0;
  int have_min = 0, have_max = 0;
  while (fgets(line, sizeof line, f)) {
    if (sscanf(line, "min %llu", &a) == 1) min = a, have_min = 1;
    else if (sscanf(line, "max %llu", &a) == 1) max = a, have_max = 1;
    else if (sscanf(line, "%llu %llu", &a, &b) == 2) hb_hist_record_n(h, a, b);
  }
  fclose(f);
  /* The buckets give each value's bucket edge; the exact extremes come from the run. */
  if (h->count && have_max) h->max = max;
  if (h->count && have_min) h->min = min;
  return 0;
}

int hb_plot_main(int argc, char **argv) {
  const char *out = NULL, *title = "latency";
  const char *labels[16];
  hb_hist *hists[16];
  int n = 0, rc = 2;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--out") == 0 && i + 1 < argc) out = argv[++i];
    else if (strcmp(argv[i], "--title") == 0 && i + 1 < argc) title = argv[++i];
    else if (strchr(argv[i], '=') && n < 16) {
      char *eq = strchr(argv[i], '=');
      *eq = 0;
      labels[n] = argv[i];
      hists[n] = malloc(sizeof *hists[n]);
      if (!hists[n] || load_hist(eq + 1, hists[n])) {
        free(hists[n]);
        goto done;
      }
      n++;
    } else {
      fprintf(stderr, "usage: herald-bench plot --out FILE.png [--title T] LABEL=HISTFILE...\n");
      goto done;
    }
  }
  if (!out || !n) {
    fprintf(stderr, "usage: herald-bench plot --out FILE.png [--title T] LABEL=HISTFILE...\n");
    goto done;
  }
  rc = hb_plot(out, title, labels, (const hb_hist *const *)hists, n) ? 1 : 0;
done:
  for (int i = 0; i < n; i++) free(hists[i]);
  return rc;
}
