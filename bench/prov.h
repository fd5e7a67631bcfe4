/* prov.h — what the Herald scenarios ask of Herald's HTTP API before they measure: device
 * registrations (POST /v1/apps/APP/registrations with the publish key) and one value from
 * /metrics. Each call runs a loop of its own until it is done, so it never shares a loop with
 * the measurement. */
#ifndef HERALD_BENCH_PROV_H
#define HERALD_BENCH_PROV_H

#include <stddef.h>

#include "bench.h"

/* A device's identity as the scenarios keep it (embedded in their own device structs). */
typedef struct hb_reg {
  char id[48];
  char token[160];
} hb_reg;

/* Name n devices PREFIX-RUN-i (RUN: a per-run hex tag, so runs never share a device) and
 * register them all, 32 registrations in flight at once. The hb_reg of device i is at
 * (char *)first + i * stride: the caller's array of its own device structs. Fills each token;
 * *secs is the time it took. Returns 0, or 1 if any registration failed (said on stderr). */
int hb_provision(const opts *o, const char *key, const char *prefix, hb_reg *first,
                 size_t stride, long n, double *secs);

/* The value of metric `name` (a line "name VALUE" of /metrics), or -1. */
double hb_metric(const opts *o, const char *name);

#endif
