/* api.c — the broker's own HTTP routes (see api.h). */
#include "api.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bytes.h"
#include "herald/error.h"
#include "http.h"
#include "jsonbody.h"
#include "pubbody.h"
#include "pubcap.h"
#include "push.h"
#include "static.h"

static void reply_json(hd_http_req *r, int status, json_t *j) {
  char *s = json_dumps(j, JSON_COMPACT);
  json_decref(j);
  if (!s) {
    hd__http_reply_error(r, HD_ENOMEM, NULL);
    return;
  }
  hd__http_reply(r, status, "application/json", s, strlen(s));
  free(s);
}

/* ---- publish ---- */
static void on_http_published(void *ud, int status, uint64_t id, const char *reason) {
  hd_http_req *r = ud;
  if (status) {
    hd__http_reply_error(r, status, reason);
    return;
  }
  char body[64] = "{\"id\":\"";
  size_t n = 7 + hd_u64_dec(body + 7, id);
  memcpy(body + n, "\"}", 2);
  hd__http_reply(r, 202, "application/json", body, n + 2);
}

/* A publish refused before it reaches the broker's queue: answer and count it. */
static void refuse(hd_broker *b, hd_http_req *r, int err, const char *why) {
  hd__broker_count_refusal(b, HD_INGRESS_HTTP);
  hd__http_reply_error(r, err, why);
}

static void h_publish(void *ud, hd_http_req *r) {
  hd_broker *b = ud;
  const char *key = hd__http_bearer(r);
  hd_tenant *t = key ? hd__tenant_by_key(&b->tenants, key) : NULL;
  if (!t) {
    refuse(b, r, HD_EAUTH, "missing or wrong publish key");
    return;
  }
  const char *appid = hd__http_param(r, "appid");
  if (!hd__tenant_has_app(t, appid)) {
    refuse(b, r, HD_ENOTFOUND, "no such app");
    return;
  }
  /* Over the tenant's max_publish_rate: 429 before the body is even parsed. */
  if (!hd__pubcap_admit_http(b, t, r)) return;
  size_t len;
  const char *body = hd__http_body(r, &len);
  hd_pubbody pb;
  const char *why;
  char whybuf[300];
  int rc = hd__pubbody_parse(body, len, &pb, &why, whybuf, sizeof whybuf);
  if (rc) {
    refuse(b, r, rc, why);
    return;
  }
  hd_pubreq pr = {
      .tenant = t,
      .appid = appid,
      .to = pb.to,
      .data = pb.data,
      .data_len = pb.data_len,
      .ttl_s = pb.ttl_s,
      .collapse = pb.collapse,
      .ingress = HD_INGRESS_HTTP,
  };
  hd__broker_publish(b, &pr, on_http_published, r);
  hd__pubbody_clear(&pb);
}

/* ---- registrations ---- */
static void on_http_registered(void *ud, int status, const char *device, const char *token,
                               const char *reason) {
  hd_http_req *r = ud;
  if (status) {
    /* HD_EEXIST from a keyless registration must not tell which ids exist. */
    hd__http_reply_error(r, status, reason);
    return;
  }
  reply_json(r, 201, json_pack("{s:s, s:s}", "device", device, "token", token));
}

static void h_register(void *ud, hd_http_req *r) {
  hd_broker *b = ud;
  const char *appid = hd__http_param(r, "appid");
  const char *bearer = hd__http_bearer(r);
  json_t *j = hd__json_body(r, 1);
  if (!j) return;
  static const char *const fields[] = {"device", "msisdn", NULL};
  if (!hd__json_only_fields(r, j, fields)) goto out;
  json_t *dv = json_object_get(j, "device");
  if (dv && !json_is_string(dv)) {
    hd__http_reply_error(r, HD_EINVAL, "device must be a string");
    goto out;
  }
  const char *device = dv ? json_string_value(dv) : NULL;
  hd_regreq rq = {.appid = appid, .device_id = device};
  /* The handset's number, for SMS and WAP Push (the push policy decides whether they are used). */
  char msisdn[24];
  json_t *mv = json_object_get(j, "msisdn");
  if (mv && (!json_is_string(mv) ||
             hd__push_msisdn_norm(json_string_value(mv), msisdn, sizeof msisdn))) {
    hd__http_reply_error(r, HD_EINVAL,
                         "msisdn must be a phone number in international form: 5-15 digits");
    goto out;
  }
  if (mv) rq.msisdn = msisdn;

  hd_tenant *t = bearer ? hd__tenant_by_key(&b->tenants, bearer) : NULL;
  if (t) {
    /* An operator's back end: it names the device and may create it. */
    if (!device) {
      hd__http_reply_error(r, HD_EINVAL, "provisioning needs {\"device\": id}");
      goto out;
    }
    if (!hd__tenant_has_app(t, appid)) {
      hd__http_reply_error(r, HD_ENOTFOUND, "no such app");
      goto out;
    }
    rq.tenant = t;
    rq.mode = HD_REG_PROVISION;
    hd__broker_register(b, &rq, on_http_registered, r);
    goto out;
  }
  if (bearer) {
    /* A device adding an app: the token must be that device's. */
    uint32_t gen;
    if (!device || hd__token_verify(&b->tenants, device, bearer, &t, &gen)) {
      hd__http_reply_error(r, HD_EAUTH, "wrong publish key or device token");
      goto out;
    }
    rq.mode = HD_REG_EXISTING;
    rq.token_gen = gen;
  } else {
    if (device) {
      hd__http_reply_error(r, HD_EAUTH,
                           "naming a device needs the publish key or that device's token");
      goto out;
    }
    const char *tn = hd__http_query(r, "tenant");
    if (!tn) tn = hd__http_header(r, "Herald-Tenant");
    t = hd__tenant_by_name(&b->tenants, tn ? tn : "default");
    rq.mode = HD_REG_NEW;
  }
  /* Closed, unknown, or another tenant's app: one answer, so nothing is revealed. */
  if (!t || !hd__tenant_self_register(t, appid)) {
    hd__http_reply_error(r, HD_EAUTH, "this app needs the publish key to register devices");
    goto out;
  }
  if (t->self_limit && !hd__ratelimit_take(t->self_limit, hd__http_peer(r),
                                           (uint64_t)hd__now_ms())) {
    hd__http_reply_error(r, HD_ERATE, "too many registrations from this address");
    goto out;
  }
  rq.tenant = t;
  hd__broker_register(b, &rq, on_http_registered, r);
out:
  json_decref(j);
}

/* ---- device tokens: rotate and revoke ---- */
static void on_http_token(void *ud, int status, const char *device, const char *token,
                          const char *reason) {
  hd_http_req *r = ud;
  if (status) {
    hd__http_reply_error(r, status, reason);
    return;
  }
  if (token) reply_json(r, 200, json_pack("{s:s, s:s}", "device", device, "token", token));
  else hd__http_reply(r, 204, NULL, NULL, 0);
}

/* POST rotates (publish key, or the device's own current token); DELETE revokes (publish key
 * only). A device of no tenant, or of another one, is "no such device" for a publish key, the
 * same answer whichever: nothing of another tenant is revealed. */
static void h_token(void *ud, hd_http_req *r) {
  hd_broker *b = ud;
  int rotate = strcmp(hd__http_method(r), "POST") == 0;
  const char *device = hd__http_param(r, "device");
  const char *bearer = hd__http_bearer(r);
  hd_tenant *t = bearer ? hd__tenant_by_key(&b->tenants, bearer) : NULL;
  if (t) {
    hd__broker_token(b, t, device, 0, rotate, on_http_token, r);
    return;
  }
  uint32_t gen;
  if (!rotate) {
    hd__http_reply_error(r, HD_EAUTH, "revoking a device's tokens needs the publish key");
    return;
  }
  if (!bearer || hd__token_verify(&b->tenants, device, bearer, &t, &gen)) {
    hd__http_reply_error(r, HD_EAUTH, "wrong publish key or device token");
    return;
  }
  hd__broker_token(b, t, device, gen, 1, on_http_token, r);
}

/* ---- operations ---- */
static void h_metrics(void *ud, hd_http_req *r) {
  hd_broker *b = ud;
  char *text;
  size_t len;
  int rc = hd__metrics_render(b->metrics, &text, &len);
  if (rc) {
    hd__http_reply_error(r, rc, NULL);
    return;
  }
  hd__http_reply(r, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
  free(text);
}

static void h_healthz(void *ud, hd_http_req *r) {
  hd_broker *b = ud;
  if (b->stopping) {
    hd__http_reply_error(r, HD_ECLOSED, NULL);
    return;
  }
  static const char ok[] = "{\"status\":\"ok\"}";
  hd__http_reply(r, 200, "application/json", ok, sizeof ok - 1);
}

/* ---- cross-origin policy (CORS) ---- */

/* The tenant a request acts for, as far as can be told before its handler runs: the owner of a
 * publish key; the tenant a device token names ("<tenant>.<gen>.<exp>.<mac>": not verified
 * here, the handler does that); without credentials ?tenant=, Herald-Tenant, or "default". */
static hd_tenant *request_tenant(hd_broker *b, hd_http_req *r) {
  const char *bearer = hd__http_bearer(r);
  if (bearer) {
    hd_tenant *t = hd__tenant_by_key(&b->tenants, bearer);
    return t ? t : hd__token_tenant_guess(&b->tenants, bearer);
  }
  const char *tn = hd__http_query(r, "tenant");
  if (!tn) tn = hd__http_header(r, "Herald-Tenant");
  return hd__tenant_by_name(&b->tenants, tn ? tn : "default");
}

/* Which pages of other origins may use the API: each tenant's allowed_origins. The embedded
 * browser files are public (any page may load the client library). A preflight carries no
 * credentials, so it cannot say its tenant: it passes when any tenant allows the origin, and
 * the real request that follows is judged again on its own credentials. */
static int api_origin_allowed(void *ud, hd_http_req *r, const char *origin) {
  hd_broker *b = ud;
  const char *method = hd__http_method(r);
  if (strcmp(method, "GET") == 0 && hd__static_find(hd__http_path(r))) return 1;
  if (strcmp(method, "OPTIONS") == 0 && hd__http_header(r, "Access-Control-Request-Method")) {
    for (size_t i = 0; i < b->tenants.n; i++)
      if (hd__tenant_allows_origin(b->tenants.v[i], origin)) return 1;
    return 0;
  }
  return hd__tenant_allows_origin(request_tenant(b, r), origin);
}

int hd__api_init(hd_broker *b) {
  int rc = 0;
  hd__http_set_cors(b->http, api_origin_allowed, b);
  rc = rc ? rc : hd__static_init(b->http);
  rc = rc ? rc : hd__http_route(b->http, "POST", "/v1/apps/{appid}/messages", h_publish, b);
  rc = rc ? rc : hd__http_route(b->http, "POST", "/v1/apps/{appid}/registrations", h_register, b);
  rc = rc ? rc : hd__http_route(b->http, "POST", "/v1/devices/{device}/token", h_token, b);
  rc = rc ? rc : hd__http_route(b->http, "DELETE", "/v1/devices/{device}/token", h_token, b);
  rc = rc ? rc : hd__http_route(b->http, "GET", "/metrics", h_metrics, b);
  rc = rc ? rc : hd__http_route(b->http, "GET", "/healthz", h_healthz, b);
  return rc;
}
