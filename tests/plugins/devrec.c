/* devrec.c — a per-device transport for testing the broker's side of ABI 1.1 (push policy,
 * escalation, durable queue, carrier receipts), independent of any carrier protocol. Two
 * transports in one object (`herald_transports`): devrec_a and devrec_b, sharing one counter
 * to show that state is shared.
 *
 * Each delivery appends one JSON line to `file` (synchronously: a test fixture, the files are
 * tiny) and ends with done_refs(): {"transport","id","app","device","msisdn","tenant",
 * "attempt","label","data"}.
 *
 * Config ([transport devrec_a] / [transport devrec_b]):
 *   file        where to append (required)
 *   fail_first  the first N attempts report HD_FAILED_TEMP (default 0)
 *   refs        how many carrier refs each delivery names (default 1)
 *   receipt     none | after | before: send a DELIVERED receipt for each ref after done_refs(),
 *               or before it (the broker must hold it until the refs are committed)
 *   link        name of a [devrec_link NAME] section whose `label` goes into each line
 *   tag.*       prefix keys, walked with config_key_at() and written as "tags"
 */
#include <herald/transport.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct dr {
  const hd_host *h;
  hd_plugin *self;
  const char *name;
  const char *path;
  const char *label;
  const char *receipt;
  int64_t fail_first, refs;
  uint64_t attempts;
} dr;

static uint64_t shared_refs; /* shared by both transports in this object */

static const char *const dr_keys[] = {"file", "fail_first", "refs", "receipt", "link", "tag.*",
                                      NULL};
static const char *const dr_kinds[] = {"devrec_link", NULL};
static const char *const dr_section_keys[] = {"label", NULL};

static int dr_deliver(void *state, hd_delivery *d) {
  dr *t = state;
  const hd_host *h = t->h;
  if (t->attempts++ < (uint64_t)t->fail_first) {
    h->done(d, HD_FAILED_TEMP, "fail_first says so");
    return 0;
  }
  const hd_msg *m = h->delivery_msg(d);
  size_t jl = 0;
  const char *data = h->msg_data_json(m, &jl);
  if (!data || !h->delivery_device(d) || !h->delivery_msisdn(d)) return HD_EINVAL;
  char tags[512] = "";
  size_t tl = 0;
  const char *v;
  for (size_t i = 0; h->config_key_at(t->self, i, &v); i++) {
    const char *k = h->config_key_at(t->self, i, &v);
    if (strncmp(k, "tag.", 4) == 0 && tl < sizeof tags - 100)
      tl += (size_t)snprintf(tags + tl, sizeof tags - tl, "%s\"%s\":\"%s\"", tl ? "," : "",
                             k + 4, v);
  }
  char refs[8][32];
  const char *refp[8];
  size_t n = t->refs > 8 ? 8 : (size_t)t->refs;
  for (size_t i = 0; i < n; i++) {
    snprintf(refs[i], sizeof refs[i], "r%" PRIu64, ++shared_refs);
    refp[i] = refs[i];
  }
  FILE *f = fopen(t->path, "a");
  if (!f) return HD_EAGAIN;
  fprintf(f,
          "{\"transport\":\"%s\",\"id\":\"%" PRIu64 "\",\"app\":\"%s\",\"device\":\"%s\","
          "\"msisdn\":\"%s\",\"tenant\":\"%s\",\"attempt\":%u,\"label\":\"%s\","
          "\"tags\":{%s},\"refs\":%zu,\"data\":%s}\n",
          t->name, h->msg_id(m), h->msg_app(m), h->delivery_device(d), h->delivery_msisdn(d),
          h->delivery_tenant(d), h->delivery_attempt(d), t->label ? t->label : "", tags, n,
          data);
  fclose(f);
  int before = strcmp(t->receipt, "before") == 0, after = strcmp(t->receipt, "after") == 0;
  for (size_t i = 0; before && i < n; i++)
    h->receipt(t->self, refp[i], HD_RECEIPT_DELIVERED, "stat=DELIVRD (before)");
  h->done_refs(d, HD_DELIVERED, NULL, refp, n);
  for (size_t i = 0; after && i < n; i++)
    h->receipt(t->self, refp[i], HD_RECEIPT_DELIVERED, "stat=DELIVRD");
  return 0;
}

static void dr_cancel(void *state, hd_delivery *d) {
  (void)state;
  (void)d; /* every delivery ends inside deliver(): nothing is ever pending */
}

static int dr_create_named(const hd_host *h, hd_plugin *self, void **state, const char *name) {
  dr *t = calloc(1, sizeof *t);
  if (!t) return HD_ENOMEM;
  t->h = h;
  t->self = self;
  t->name = name;
  t->path = h->config_str(self, "file", NULL);
  t->receipt = h->config_str(self, "receipt", "none");
  const char *link = h->config_str(self, "link", NULL);
  if (link) t->label = h->section_str(self, "devrec_link", link, "label", NULL);
  if (!t->path || h->config_int(self, "fail_first", 0, &t->fail_first) ||
      h->config_int(self, "refs", 1, &t->refs) || t->refs < 0 || (link && !t->label) ||
      (strcmp(t->receipt, "none") && strcmp(t->receipt, "after") && strcmp(t->receipt, "before"))) {
    h->log(self, HD_LOG_ERROR, "bad_config", "reason=%s", "\"file, fail_first, refs, receipt\"");
    free(t);
    return HD_ECONFIG;
  }
  *state = t;
  return 0;
}

static int dr_create_a(const hd_host *h, hd_plugin *self, void **state) {
  return dr_create_named(h, self, state, "devrec_a");
}
static int dr_create_b(const hd_host *h, hd_plugin *self, void **state) {
  return dr_create_named(h, self, state, "devrec_b");
}
static int dr_start(void *state) {
  (void)state;
  return 0;
}
static void dr_stop(void *state) { (void)state; }
static void dr_destroy(void *state) { free(state); }

#define DR_OPS(NAME, CREATE)                                                                    \
  {                                                                                             \
    .abi_major = HD_TRANSPORT_ABI_MAJOR, .abi_minor = HD_TRANSPORT_ABI_MINOR,                   \
    .struct_size = sizeof(hd_transport_ops), .name = NAME, .version = "1.0.0",                  \
    .config_keys = dr_keys, .create = CREATE, .start = dr_start, .deliver = dr_deliver,         \
    .cancel = dr_cancel, .stop = dr_stop, .destroy = dr_destroy,                                \
    .flags = HD_TRANSPORT_PER_DEVICE, .section_kinds = dr_kinds,                                \
    .section_keys = dr_section_keys,                                                            \
  }

static const hd_transport_ops dr_a = DR_OPS("devrec_a", dr_create_a);
static const hd_transport_ops dr_b = DR_OPS("devrec_b", dr_create_b);

HD_TRANSPORT_EXPORT const hd_transport_ops *const herald_transports[] = {&dr_a, &dr_b, NULL};
