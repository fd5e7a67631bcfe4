/* release_api.c — the release service's HTTP routes (see release_api.h). */
#include "release_api.h"

#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herald/error.h"
#include "http.h"
#include "jsonbody.h"
#include "push.h"
#include "release.h"

static void reply_json(hd_http_req *r, int status, json_t *j) {
  char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
  json_decref(j);
  if (!s) {
    hd__http_reply_error(r, HD_ENOMEM, NULL);
    return;
  }
  hd__http_reply(r, status, "application/json", s, strlen(s));
  free(s);
}

/* hd__http_reply_error, except that HD_EEXIST (a version uploaded before with other bytes) is
 * 409 Conflict here. */
static void reply_error(hd_http_req *r, int err, const char *message) {
  if (err != HD_EEXIST) {
    hd__http_reply_error(r, err, message);
    return;
  }
  json_t *j = json_pack("{s:s, s:s}", "error", hd_err_code(err), "message",
                        message ? message : hd_strerror(err));
  reply_json(r, 409, j);
}

static json_t *rollout_json(uint32_t bp) {
  return bp % 100 == 0 ? json_integer(bp / 100) : json_real(bp / 100.0);
}

static const char *state_name(int s) {
  return s == HD_REL_ACTIVE ? "active" : s == HD_REL_PAUSED ? "paused" : "withdrawn";
}

static void hex(const unsigned char *sha, char *out) {
  static const char hx[] = "0123456789abcdef";
  for (int i = 0; i < 32; i++) {
    out[2 * i] = hx[sha[i] >> 4];
    out[2 * i + 1] = hx[sha[i] & 15];
  }
  out[64] = 0;
}

static json_t *release_json(hd_broker *b, const hd_release *rel) {
  char sha[65], url[2048];
  hex(rel->sha256, sha);
  hd__release_url(b->releases, rel->app, rel->version, url, sizeof url);
  hd_tenant *t = NULL;
  for (size_t i = 0; i < b->tenants.n; i++)
    if (b->tenants.v[i]->num == rel->tenant_num) t = b->tenants.v[i];
  return json_pack("{s:s, s:s, s:o, s:I, s:s, s:s, s:s, s:o, s:s, s:I, s:s, s:b}", "app",
                   rel->app, "version", rel->version, "code",
                   rel->has_code ? json_integer(rel->code) : json_null(), "size",
                   (json_int_t)rel->size, "sha256", sha, "url", url, "notes", rel->notes,
                   "rollout", rollout_json(rel->rollout_bp), "state", state_name(rel->state),
                   "created", (json_int_t)rel->created_ms, "tenant", t ? t->name : "",
                   "required", rel->required);
}

/* The publish key's tenant, or NULL after answering 401. */
static hd_tenant *publisher(hd_broker *b, hd_http_req *r) {
  const char *key = hd__http_bearer(r);
  hd_tenant *t = key ? hd__tenant_by_key(&b->tenants, key) : NULL;
  if (!t) hd__http_reply_error(r, HD_EAUTH, "missing or wrong publish key");
  return t;
}

/* The device token's tenant, with the device's number, or NULL after answering 401/400. The
 * token must name this device and be of its current generation. */
static hd_tenant *device_auth(hd_broker *b, hd_http_req *r, const char *device,
                              uint64_t *dev_num) {
  const char *tok = hd__http_bearer(r);
  hd_tenant *t;
  uint32_t gen;
  hd_store_device d;
  MDB_txn *txn;
  if (!hd__valid_id(device)) {
    hd__http_reply_error(r, HD_EINVAL, "device id must be 1-128 of A-Z a-z 0-9 . _ : -");
    return NULL;
  }
  int rc = tok ? hd__token_verify(&b->tenants, device, tok, &t, &gen) : HD_EAUTH;
  if (rc == 0 && (rc = hd__store_rbegin(b->store, &txn)) == 0) {
    rc = hd__store_r_device(b->store, txn, t->num, device, &d);
    hd__store_rend(b->store, txn);
    if (rc == HD_ENOTFOUND || (rc == 0 && d.gen != gen)) rc = HD_EAUTH;
  }
  if (rc) {
    hd__http_reply_error(r, rc, rc == HD_EAUTH ? "missing or wrong device token" : NULL);
    return NULL;
  }
  *dev_num = d.dev_num;
  return t;
}


/* ---- upload ---- */

typedef struct upload_params {
  hd_tenant *tenant;
  const char *app, *version, *notes;
  int has_code;
  int64_t code;
  uint32_t rollout_bp;
  int required;
} upload_params;

/* 1 if s is valid UTF-8 without control characters other than \n and \t. */
static int clean_text(const char *s) {
  json_t *j = json_string(s); /* jansson checks UTF-8 */
  json_decref(j);
  if (!j) return 0;
  for (const unsigned char *p = (const unsigned char *)s; *p; p++)
    if ((*p < 0x20 && *p != '\n' && *p != '\t') || *p == 0x7f) return 0;
  return 1;
}

/* Everything the upload needs, from its headers and query. 0, or HD_E* with *why. */
static int upload_parse(hd_broker *b, hd_http_req *r, upload_params *u, const char **why) {
  memset(u, 0, sizeof *u);
  const char *key = hd__http_bearer(r);
  if (!key || !(u->tenant = hd__tenant_by_key(&b->tenants, key))) {
    *why = "missing or wrong publish key";
    return HD_EAUTH;
  }
  u->app = hd__http_param(r, "appid");
  if (!hd__tenant_has_app(u->tenant, u->app)) {
    *why = "no such app";
    return HD_ENOTFOUND;
  }
  u->version = hd__http_query(r, "version");
  if (!u->version || !hd__release_valid_version(u->version)) {
    *why = "version= is required: 1-64 of A-Z a-z 0-9 . _ + - starting with a letter or digit";
    return HD_EINVAL;
  }
  u->notes = hd__http_query(r, "notes");
  if (u->notes && (strlen(u->notes) > HD_REL_MAX_NOTES || !clean_text(u->notes))) {
    *why = "notes must be UTF-8 text of at most 1024 bytes";
    return HD_EINVAL;
  }
  const char *ro = hd__http_query(r, "rollout");
  u->rollout_bp = 10000;
  if (ro && hd__release_parse_rollout(ro, &u->rollout_bp)) {
    *why = "rollout must be a percentage from 0 to 100, at most two decimals";
    return HD_EINVAL;
  }
  const char *code = hd__http_query(r, "code");
  if (code) {
    char *end;
    long long v = strtoll(code, &end, 10);
    if (!*code || *end || v < 0 || (v == LLONG_MAX)) {
      *why = "code must be a non-negative integer";
      return HD_EINVAL;
    }
    u->has_code = 1;
    u->code = v;
  }
  const char *req = hd__http_query(r, "required");
  if (req) {
    if (strcmp(req, "1") == 0 || strcmp(req, "true") == 0 || strcmp(req, "yes") == 0) {
      u->required = 1;
    } else if (!(strcmp(req, "0") == 0 || strcmp(req, "false") == 0 || strcmp(req, "no") == 0)) {
      *why = "required must be 1 or 0";
      return HD_EINVAL;
    }
  }
  return 0;
}

/* Before the body is read: a wrong key or a bad parameter costs the client no upload. */
static int upload_admit(void *ud, hd_http_req *r, const char **message) {
  upload_params u;
  return upload_parse(ud, r, &u, message);
}

/* What an asynchronous answer needs: the request and the broker. */
typedef struct reqctx {
  hd_broker *b;
  hd_http_req *r;
} reqctx;

static reqctx *ctx_new(hd_broker *b, hd_http_req *r) {
  reqctx *c = malloc(sizeof *c);
  if (!c) {
    hd__http_reply_error(r, HD_ENOMEM, NULL);
    return NULL;
  }
  c->b = b;
  c->r = r;
  return c;
}

static void on_release(void *ud, int status, const hd_release *rel, int created,
                       const char *reason) {
  reqctx *c = ud;
  if (status)
    reply_error(c->r, status,
                status == HD_EEXIST && !reason ? "this version exists with another package"
                                               : reason);
  else
    reply_json(c->r, created ? 201 : 200, release_json(c->b, rel));
  free(c);
}

static void h_upload(void *ud, hd_http_req *r) {
  hd_broker *b = ud;
  upload_params u;
  const char *why = NULL;
  int rc = upload_parse(b, r, &u, &why);
  if (rc) { /* admit passed; the key may have been rotated out since */
    hd__http_reply_error(r, rc, why);
    return;
  }
  uint64_t size;
  unsigned char sha[32];
  const char *file = hd__http_spool(r, &size, sha);
  if (!file) {
    hd__http_reply_error(r, HD_EIO, "the upload was not stored");
    return;
  }
  if (size == 0) {
    hd__http_reply_error(r, HD_EINVAL, "the package is empty");
    return;
  }
  hd_release old;
  rc = hd__release_get(b->releases, u.tenant->num, u.app, u.version, &old);
  if (rc == 0) {
    /* Uploaded before: the same bytes are a retry (200), others a conflict. The spooled file
     * is deleted with the request. */
    if (memcmp(old.sha256, sha, 32) != 0)
      reply_error(r, HD_EEXIST, "this version exists with another package");
    else
      reply_json(r, 200, release_json(b, &old));
    return;
  }
  if (rc != HD_ENOTFOUND) {
    hd__http_reply_error(r, rc, NULL);
    return;
  }
  reqctx *c = ctx_new(b, r);
  if (!c) return;
  hd_release_new req = {
      .tenant = u.tenant,
      .app = u.app,
      .version = u.version,
      .notes = u.notes,
      .has_code = u.has_code,
      .code = u.code,
      .rollout_bp = u.rollout_bp,
      .required = u.required,
      .file = file,
      .size = size,
      .sha256 = sha,
  };
  hd__http_spool_keep(r); /* hd__release_add moves or deletes it */
  hd__release_add(b->releases, &req, on_release, c);
}

/* ---- catalog ---- */

static void h_list(void *ud, hd_http_req *r) {
  hd_broker *b = ud;
  hd_tenant *t = publisher(b, r);
  if (!t) return;
  const char *app = hd__http_param(r, "appid");
  if (!hd__tenant_has_app(t, app)) {
    hd__http_reply_error(r, HD_ENOTFOUND, "no such app");
    return;
  }
  hd_release *all;
  size_t n;
  int rc = hd__release_list(b->releases, t->num, app, &all, &n);
  if (rc) {
    hd__http_reply_error(r, rc, NULL);
    return;
  }
  json_t *arr = json_array();
  for (size_t i = 0; arr && i < n; i++) json_array_append_new(arr, release_json(b, &all[i]));
  free(all);
  reply_json(r, 200, arr ? json_pack("{s:o}", "releases", arr) : NULL);
}

static void h_get(void *ud, hd_http_req *r) {
  hd_broker *b = ud;
  hd_tenant *t = publisher(b, r);
  if (!t) return;
  hd_release rel;
  const char *app = hd__http_param(r, "appid"), *version = hd__http_param(r, "version");
  int rc = !hd__tenant_has_app(t, app) ? HD_ENOTFOUND
           : hd__release_get(b->releases, t->num, app, version, &rel);
  if (rc) hd__http_reply_error(r, rc, rc == HD_ENOTFOUND ? "no such release" : NULL);
  else reply_json(r, 200, release_json(b, &rel));
}

static void h_patch(void *ud, hd_http_req *r) {
  hd_broker *b = ud;
  hd_tenant *t = publisher(b, r);
  if (!t) return;
  const char *app = hd__http_param(r, "appid"), *version = hd__http_param(r, "version");
  if (!hd__tenant_has_app(t, app) || !hd__release_valid_version(version)) {
    hd__http_reply_error(r, HD_ENOTFOUND, "no such release");
    return;
  }
  json_t *j = hd__json_body(r, 0);
  if (!j) return;
  static const char *const fields[] = {"rollout", "state", "required", NULL};
  hd_release_patch p = {.state = -1, .required = -1};
  json_t *ro = json_object_get(j, "rollout"), *st = json_object_get(j, "state");
  json_t *rq = json_object_get(j, "required");
  const char *why = NULL;
  if (!hd__json_only_fields(r, j, fields)) goto out;
  if (!ro && !st && !rq) {
    why = "give rollout, state or required";
  } else if (ro) {
    double v = json_is_number(ro) ? json_number_value(ro) : -1;
    uint32_t bp;
    if (json_is_string(ro) && hd__release_parse_rollout(json_string_value(ro), &bp) == 0)
      v = bp / 100.0;
    double scaled = v * 100;
    if (v < 0 || v > 100 || fabs(scaled - round(scaled)) > 1e-6)
      why = "rollout must be a percentage from 0 to 100, at most two decimals";
    p.set_rollout = 1;
    p.rollout_bp = (uint32_t)llround(scaled);
  }
  if (!why && st) {
    const char *s = json_string_value(st);
    p.state = !s ? -2
              : strcmp(s, "active") == 0   ? HD_REL_ACTIVE
              : strcmp(s, "paused") == 0   ? HD_REL_PAUSED
              : strcmp(s, "withdrawn") == 0 ? HD_REL_WITHDRAWN
                                            : -2;
    if (p.state == -2) why = "state must be \"active\", \"paused\" or \"withdrawn\"";
  }
  if (!why && rq) {
    if (!json_is_boolean(rq)) why = "required must be true or false";
    p.required = json_is_true(rq);
  }
  if (why) {
    hd__http_reply_error(r, HD_EINVAL, why);
    goto out;
  }
  reqctx *c = ctx_new(b, r);
  if (c) hd__release_patch(b->releases, t, app, version, &p, on_release, c);
out:
  json_decref(j);
}

/* ---- reports ---- */

static int report_one(void *ud, const hd_release *rel, const hd_release_counts *cn) {
  json_t *arr = ud, *reasons = json_object();
  if (!reasons) return HD_ENOMEM;
  for (size_t i = 0; i < cn->nreasons; i++) {
    char *text = strndup(cn->reasons[i].text, cn->reasons[i].len);
    if (text) json_object_set_new(reasons, text, json_integer((json_int_t)cn->reasons[i].n));
    free(text);
  }
  json_t *o = json_pack("{s:s, s:s, s:I, s:I, s:o, s:I, s:I, s:s, s:o}", "app", rel->app,
                        "version", rel->version, "success", (json_int_t)cn->success, "failure",
                        (json_int_t)cn->failure, "reasons", reasons, "downloads",
                        (json_int_t)cn->downloads, "notified", (json_int_t)cn->notified,
                        "state", state_name(rel->state), "rollout",
                        rollout_json(rel->rollout_bp));
  return o && json_array_append_new(arr, o) == 0 ? 0 : HD_ENOMEM;
}

static void h_reports(void *ud, hd_http_req *r) {
  hd_broker *b = ud;
  hd_tenant *t = publisher(b, r);
  if (!t) return;
  json_t *arr = json_array();
  if (!arr) {
    hd__http_reply_error(r, HD_ENOMEM, NULL);
    return;
  }
  int rc = hd__release_reports(b->releases, t->num, hd__http_query(r, "app"),
                               hd__http_query(r, "version"), report_one, arr);
  if (rc) {
    json_decref(arr);
    hd__http_reply_error(r, rc, NULL);
    return;
  }
  reply_json(r, 200, json_pack("{s:o}", "reports", arr));
}

/* ---- device side ---- */

static void on_checked(void *ud, int status, const hd_release_offer *offers, size_t n,
                       const char *reason) {
  reqctx *c = ud;
  if (status) {
    hd__http_reply_error(c->r, status, reason);
    free(c);
    return;
  }
  json_t *arr = json_array();
  for (size_t i = 0; arr && i < n; i++) {
    const hd_release *rel = &offers[i].rel;
    char sha[65], url[2048];
    hex(rel->sha256, sha);
    hd__release_url(c->b->releases, rel->app, rel->version, url, sizeof url);
    json_array_append_new(
        arr, json_pack("{s:s, s:s, s:s, s:o, s:s, s:s, s:I, s:o, s:s}", "app", rel->app,
                       "version", rel->version, "action", offers[i].install ? "install" : "upgrade",
                       "from", offers[i].install ? json_null() : json_string(offers[i].from),
                       "url", url, "sha256", sha, "size", (json_int_t)rel->size, "code",
                       rel->has_code ? json_integer(rel->code) : json_null(), "notes",
                       rel->notes));
  }
  reply_json(c->r, 200, arr ? json_pack("{s:o}", "updates", arr) : NULL);
  free(c);
}

static void h_update_check(void *ud, hd_http_req *r) {
  hd_broker *b = ud;
  const char *device = hd__http_param(r, "device");
  uint64_t dev_num;
  hd_tenant *t = device_auth(b, r, device, &dev_num);
  if (!t) return;
  json_t *j = hd__json_body(r, 0);
  if (!j) return;
  static const char *const fields[] = {"inventory", "msisdn", NULL};
  hd_release_inv *inv = NULL;
  const char *why = NULL;
  char msisdn[24];
  int has_msisdn = 0;
  if (!hd__json_only_fields(r, j, fields)) goto out;
  json_t *list = json_object_get(j, "inventory"), *ms = json_object_get(j, "msisdn");
  size_t n = list ? json_array_size(list) : 0;
  if (list && !json_is_array(list)) why = "inventory must be an array";
  else if (n > HD_REL_MAX_INV) why = "inventory has more than 256 entries";
  if (!why && ms && !json_is_null(ms)) {
    if (!json_is_string(ms) ||
        hd__push_msisdn_norm(json_string_value(ms), msisdn, sizeof msisdn) != 0)
      why = "msisdn must be 5-15 digits (E.164)";
    has_msisdn = 1;
  }
  if (!why && n && !(inv = calloc(n, sizeof *inv))) {
    hd__http_reply_error(r, HD_ENOMEM, NULL);
    goto out;
  }
  for (size_t i = 0; !why && i < n; i++) {
    json_t *e = json_array_get(list, i);
    const char *app = json_string_value(json_object_get(e, "app"));
    const char *ver = json_string_value(json_object_get(e, "version"));
    if (!json_is_object(e) || json_object_size(e) != 2 || !app || !ver)
      why = "each inventory entry is {\"app\": id, \"version\": text}";
    else if (!hd__valid_id(app) || !hd__release_valid_version(ver))
      why = "inventory: bad app id or version";
    for (size_t k = 0; !why && k < i; k++)
      if (strcmp(inv[k].app, app) == 0) why = "inventory lists an app twice";
    inv[i].app = app;
    inv[i].version = ver;
  }
  if (why) {
    hd__http_reply_error(r, HD_EINVAL, why);
    goto out;
  }
  reqctx *c = ctx_new(b, r);
  if (c)
    hd__release_update_check(b->releases, t, device, dev_num, inv, n,
                             has_msisdn ? msisdn : NULL, on_checked, c);
out:
  free(inv);
  json_decref(j);
}

static void on_reported(void *ud, int status, const char *reason) {
  hd_http_req *r = ud;
  if (status) hd__http_reply_error(r, status, reason);
  else hd__http_reply(r, 201, "application/json", "{\"ok\":true}", 11);
}

static void h_install_report(void *ud, hd_http_req *r) {
  hd_broker *b = ud;
  const char *device = hd__http_param(r, "device");
  uint64_t dev_num;
  hd_tenant *t = device_auth(b, r, device, &dev_num);
  if (!t) return;
  json_t *j = hd__json_body(r, 0);
  if (!j) return;
  static const char *const fields[] = {"app", "version", "result", "reason", "action", NULL};
  const char *why = NULL;
  if (!hd__json_only_fields(r, j, fields)) goto out;
  hd_install_report rep = {
      .app = json_string_value(json_object_get(j, "app")),
      .version = json_string_value(json_object_get(j, "version")),
  };
  const char *result = json_string_value(json_object_get(j, "result"));
  json_t *reason = json_object_get(j, "reason"), *action = json_object_get(j, "action");
  if (!rep.app || !hd__valid_id(rep.app)) why = "app must be an app id";
  else if (!rep.version || !hd__release_valid_version(rep.version)) why = "version is required";
  else if (!result || (strcmp(result, "success") && strcmp(result, "failure")))
    why = "result must be \"success\" or \"failure\"";
  else if (reason && !json_is_null(reason) && !json_is_string(reason))
    why = "reason must be a string";
  else if (action && !json_is_null(action) &&
           (!json_is_string(action) || (strcmp(json_string_value(action), "install") &&
                                        strcmp(json_string_value(action), "upgrade"))))
    why = "action must be \"install\" or \"upgrade\"";
  if (!why) {
    rep.success = strcmp(result, "success") == 0;
    rep.reason = json_is_string(reason) ? json_string_value(reason) : NULL;
    rep.action = json_is_string(action) ? json_string_value(action) : NULL;
    if (!rep.success && (!rep.reason || !*rep.reason))
      why = "a failure needs its reason";
    else if (rep.reason && (strlen(rep.reason) > HD_REL_MAX_REASON || !clean_text(rep.reason)))
      why = "reason must be text of at most 256 bytes";
    if (rep.success) rep.reason = NULL;
  }
  if (why) {
    hd__http_reply_error(r, HD_EINVAL, why);
    goto out;
  }
  if (!hd__tenant_has_app(t, rep.app)) {
    hd__http_reply_error(r, HD_ENOTFOUND, "no such release");
    goto out;
  }
  hd__release_install_report(b->releases, t, device, dev_num, &rep, on_reported, r);
out:
  json_decref(j);
}

int hd__release_api_init(hd_broker *b) {
  hd_http_server *s = b->http;
  int rc = hd__http_route_spool(s, "POST", "/v1/apps/{appid}/releases", h_upload, b,
                                hd__release_tmp_dir(b->releases), b->cfg.release.max_package,
                                upload_admit);
  rc = rc ? rc : hd__http_route(s, "GET", "/v1/apps/{appid}/releases", h_list, b);
  rc = rc ? rc : hd__http_route(s, "GET", "/v1/apps/{appid}/releases/{version}", h_get, b);
  rc = rc ? rc : hd__http_route(s, "PATCH", "/v1/apps/{appid}/releases/{version}", h_patch, b);
  rc = rc ? rc : hd__http_route(s, "GET", "/v1/reports", h_reports, b);
  rc = rc ? rc : hd__http_route(s, "POST", "/v1/devices/{device}/update-check", h_update_check,
                                b);
  rc = rc ? rc : hd__http_route(s, "POST", "/v1/devices/{device}/install-reports",
                                h_install_report, b);
  return rc;
}
