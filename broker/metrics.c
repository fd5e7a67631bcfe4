/* metrics.c — the metric registry and its Prometheus rendering (see metrics.h). */
#include "metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herald/error.h"

static const double hist_bounds[] = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                     0.01,    0.025,  0.05,    0.1,    0.25,  0.5,    1,
                                     2.5,     5,      10};
#define NBOUNDS (sizeof hist_bounds / sizeof hist_bounds[0])

struct hd_metric {
  struct hd_metric *next;
  char *name;
  char *help;
  char *labels;
  int type;
  double value;      /* counter/gauge; histogram: sum */
  uint64_t count;    /* histogram */
  uint64_t buckets[NBOUNDS];
  hd_metric_fn fn;
  void *ud;
};

struct hd_metrics {
  hd_metric *head, *tail;
};

int hd__metrics_new(hd_metrics **out) {
  *out = calloc(1, sizeof **out);
  return *out ? 0 : HD_ENOMEM;
}

void hd__metrics_free(hd_metrics *m) {
  if (!m) return;
  for (hd_metric *x = m->head, *n; x; x = n) {
    n = x->next;
    free(x->name);
    free(x->help);
    free(x->labels);
    free(x);
  }
  free(m);
}

static int valid_name(const char *s) {
  if (!s || !*s) return 0;
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
          *s == '_' || *s == ':'))
      return 0;
  return 1;
}

hd_metric *hd__metric_new(hd_metrics *m, const char *name, const char *help, int type,
                          const char *labels) {
  if (!valid_name(name)) return NULL;
  hd_metric *x = calloc(1, sizeof *x);
  if (!x) return NULL;
  x->name = strdup(name);
  x->help = strdup(help ? help : "");
  x->labels = labels && *labels ? strdup(labels) : NULL;
  x->type = type;
  if (!x->name || !x->help) {
    free(x->name);
    free(x->help);
    free(x->labels);
    free(x);
    return NULL;
  }
  /* Keep metrics of one name together so HELP/TYPE print once. */
  hd_metric *after = NULL;
  for (hd_metric *y = m->head; y; y = y->next)
    if (strcmp(y->name, name) == 0) after = y;
  if (after) {
    x->next = after->next;
    after->next = x;
    if (m->tail == after) m->tail = x;
  } else {
    if (m->tail) m->tail->next = x;
    else m->head = x;
    m->tail = x;
  }
  return x;
}

int hd__metric_fn(hd_metrics *m, const char *name, const char *help, const char *labels,
                  hd_metric_fn fn, void *ud) {
  size_t n = strlen(name);
  int counter = n > 6 && strcmp(name + n - 6, "_total") == 0;
  hd_metric *x = hd__metric_new(m, name, help, counter ? HD_METRIC_COUNTER : HD_METRIC_GAUGE,
                                labels);
  if (!x) return HD_ENOMEM;
  x->fn = fn;
  x->ud = ud;
  return 0;
}

void hd__metric_add(hd_metric *x, double d) {
  if (x) x->value += d;
}
void hd__metric_set(hd_metric *x, double v) {
  if (x) x->value = v;
}
double hd__metric_get(const hd_metric *x) { return x ? (x->fn ? x->fn(x->ud) : x->value) : 0; }

void hd__metric_observe(hd_metric *x, double v) {
  if (!x) return;
  x->count++;
  x->value += v;
  for (size_t i = 0; i < NBOUNDS; i++)
    if (v <= hist_bounds[i]) x->buckets[i]++;
}

typedef struct sbuf {
  char *p;
  size_t len, cap;
  int oom;
} sbuf;

__attribute__((format(printf, 2, 3))) static void sb_printf(sbuf *b, const char *fmt, ...) {
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < b->cap - b->len) {
      b->len += (size_t)n;
      return;
    }
    size_t cap = b->cap * 2 + (size_t)n;
    char *p = realloc(b->p, cap);
    if (!p) {
      b->oom = 1;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
}

int hd__metrics_render(hd_metrics *m, char **out, size_t *len) {
  sbuf b = {.p = malloc(4096), .cap = 4096};
  if (!b.p) return HD_ENOMEM;
  b.p[0] = 0;
  const char *prev = NULL;
  for (hd_metric *x = m->head; x; x = x->next) {
    static const char *const tn[] = {"counter", "gauge", "histogram"};
    if (!prev || strcmp(prev, x->name) != 0) {
      sb_printf(&b, "# HELP %s %s\n# TYPE %s %s\n", x->name, x->help, x->name, tn[x->type]);
      prev = x->name;
    }
    const char *l = x->labels ? x->labels : "";
    if (x->type == HD_METRIC_HISTOGRAM) {
      for (size_t i = 0; i < NBOUNDS; i++)
        sb_printf(&b, "%s_bucket{%s%sle=\"%g\"} %llu\n", x->name, l, *l ? "," : "",
                  hist_bounds[i], (unsigned long long)x->buckets[i]);
      sb_printf(&b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", x->name, l, *l ? "," : "",
                (unsigned long long)x->count);
      sb_printf(&b, "%s_sum%s%s%s %.9g\n", x->name, *l ? "{" : "", l, *l ? "}" : "", x->value);
      sb_printf(&b, "%s_count%s%s%s %llu\n", x->name, *l ? "{" : "", l, *l ? "}" : "",
                (unsigned long long)x->count);
    } else {
      sb_printf(&b, "%s%s%s%s %.17g\n", x->name, *l ? "{" : "", l, *l ? "}" : "",
                hd__metric_get(x));
    }
  }
  if (b.oom) {
    free(b.p);
    return HD_ENOMEM;
  }
  *out = b.p;
  *len = b.len;
  return 0;
}
