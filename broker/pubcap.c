/* pubcap.c — per-tenant publish rate caps (see pubcap.h). */
#include "pubcap.h"

#include <stdio.h>

#include "clock.h"
#include "herald/error.h"
#include "http.h"

static hd_metric *refused_metric(hd_broker *b, hd_tenant *t) {
  if (!t->m_rate_limited) {
    char labels[128];
    snprintf(labels, sizeof labels, "tenant=\"%s\",reason=\"rate_limited\"", t->name);
    t->m_rate_limited = hd__metric_new(b->metrics, "herald_publish_refused_total",
                                       "Publishes refused before storing, by tenant and reason",
                                       HD_METRIC_COUNTER, labels);
  }
  return t->m_rate_limited;
}

int hd__pubcap_admit(hd_broker *b, hd_tenant *t, int ingress, uint64_t *retry_ms) {
  uint64_t wait = 0;
  if (!t->pub_limit ||
      hd__ratelimit_take_wait(t->pub_limit, "", hd__mono_ns() / 1000000u, &wait))
    return 1;
  hd__broker_count_refusal(b, ingress);
  hd_metric *m = refused_metric(b, t);
  if (m) hd__metric_add(m, 1);
  if (retry_ms) *retry_ms = wait;
  return 0;
}

int hd__pubcap_admit_http(hd_broker *b, hd_tenant *t, hd_http_req *r) {
  uint64_t wait = 0;
  if (hd__pubcap_admit(b, t, HD_INGRESS_HTTP, &wait)) return 1;
  char hdr[64], body[256];
  unsigned long long secs = (wait + 999) / 1000;
  snprintf(hdr, sizeof hdr, "Retry-After: %llu\r\n", secs ? secs : 1);
  int n = snprintf(body, sizeof body,
                   "{\"error\":\"%s\",\"message\":\"tenant %s is over its max_publish_rate of "
                   "%lld per second\"}",
                   hd_err_code(HD_ERATE), t->name, (long long)t->max_publish_rate);
  hd__http_reply_ex(r, hd__http_status_for(HD_ERATE), "application/json", hdr, body,
                    (size_t)n);
  return 0;
}
