/* pubcap.h — each tenant's publish rate cap (max_publish_rate, publish_burst): the check both
 * ingresses make once a publish key has named the tenant, and its refusal counter.
 *
 * The cap is one token bucket per tenant (hd_tenant.pub_limit), shared by HTTP and ZeroMQ, on
 * the monotonic clock. A refused publish is answered at once: it never reaches the writer, so
 * it costs no disk. Refusals count in herald_publishes_total{ingress,result="error"} like
 * every refusal, and in herald_publish_refused_total{tenant,reason="rate_limited"}, registered
 * when the tenant is first refused (a tenant never refused has no such series). Internal
 * publishes (release notices) do not go through here. Loop thread only.
 */
#ifndef HERALD_PUBCAP_H
#define HERALD_PUBCAP_H

#include <stdint.h>

#include "broker.h"
#include "herald/transport.h" /* hd_http_req */

/* 1 if the tenant may publish one more message now (a token is taken), 0 if it is over its
 * cap: then the refusal is counted and *retry_ms (may be NULL) says when a token is there. */
int hd__pubcap_admit(hd_broker *b, hd_tenant *t, int ingress, uint64_t *retry_ms);
/* hd__pubcap_admit for an HTTP publish: on refusal it answers the request itself, 429 with
 * Retry-After (whole seconds, at least 1) and {"error": "rate_limited", "message": ...}, and
 * returns 0; the handler must then not touch r again. */
int hd__pubcap_admit_http(hd_broker *b, hd_tenant *t, hd_http_req *r);

#endif
