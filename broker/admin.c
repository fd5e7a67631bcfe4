/* admin.c — the admin API: who may call it, and its routes (see admin.h). */
#include "admin.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herald/error.h"
#include "http.h"
#include "jsonbody.h"
#include "log.h"
#include "rtenant.h"

struct hd_admin {
  hd_broker *b;
  char key[256];
  hd_rtenants *rt;
};

/* ---- who may call ---- */

/* peer -> family (4/6) and address; an IPv4-mapped IPv6 address is the IPv4 one. */
static int peer_addr(const char *peer, unsigned char a[16], int *family) {
  memset(a, 0, 16);
  if (inet_pton(AF_INET, peer, a) == 1) {
    *family = 4;
    return 0;
  }
  if (inet_pton(AF_INET6, peer, a) != 1) return -1;
  static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (memcmp(a, mapped, 12) == 0) {
    memmove(a, a + 12, 4);
    memset(a + 4, 0, 12);
    *family = 4;
  } else {
    *family = 6;
  }
  return 0;
}

static int prefix_match(const unsigned char *a, const unsigned char *net, int bits) {
  int whole = bits / 8, rest = bits % 8;
  if (memcmp(a, net, (size_t)whole) != 0) return 0;
  if (!rest) return 1;
  unsigned char mask = (unsigned char)(0xff << (8 - rest));
  return (a[whole] & mask) == (net[whole] & mask);
}

int hd__admin_peer_allowed(const char *peer, char *const *allow, size_t nallow) {
  static const unsigned char lo4[4] = {127, 0, 0, 0}, lo6[16] = {[15] = 1};
  unsigned char a[16], net[16];
  int fam, nfam, bits;
  if (!peer || peer_addr(peer, a, &fam) != 0) return 0;
  if (fam == 4 ? prefix_match(a, lo4, 8) : prefix_match(a, lo6, 128)) return 1;
  for (size_t i = 0; i < nallow; i++) {
    if (strcmp(allow[i], "*") == 0) return 1;
    if (hd__config_parse_cidr(allow[i], net, &nfam, &bits) != 0 || nfam != fam) continue;
    if (prefix_match(a, net, bits)) return 1;
  }
  return 0;
}

/* ---- replies ---- */

static int status_for(int err) { return err == HD_EEXIST ? 409 : hd__http_status_for(err); }

static void reply_json(hd_http_req *r, int status, json_t *j, int secret) {
  char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
  json_decref(j);
  if (!s) {
    hd__http_reply_error(r, HD_ENOMEM, NULL);
    return;
  }
  /* An answer carrying a key must not be kept by any cache on the way. */
  hd__http_reply_ex(r, status, "application/json", secret ? "Cache-Control: no-store\r\n" : NULL,
                    s, strlen(s));
  OPENSSL_cleanse(s, strlen(s));
  free(s);
}

static void reply_error(hd_http_req *r, int err, const char *message) {
  if (err != HD_EEXIST) {
    hd__http_reply_error(r, err, message);
    return;
  }
  reply_json(r, status_for(err),
             json_pack("{s:s, s:s}", "error", hd_err_code(err), "message",
                       message ? message : hd_strerror(err)),
             0);
}

/* The peer rule, then the key. 1 if the request may go on; else it is answered. */
static int authorized(hd_admin *a, hd_http_req *r) {
  const hd_config *cfg = &a->b->cfg;
  if (!hd__admin_peer_allowed(hd__http_peer(r), cfg->admin.allow_from, cfg->admin.nallow_from)) {
    hd__http_reply_error(r, HD_EFORBID,
                         "the admin API takes requests from loopback addresses only (see "
                         "[admin] allow_from)");
    return 0;
  }
  const char *key = hd__http_bearer(r);
  size_t kl = key ? strlen(key) : 0, al = strlen(a->key);
  if (!key || kl != al || CRYPTO_memcmp(key, a->key, al) != 0) {
    hd__http_reply_error(r, HD_EAUTH, "missing or wrong admin key");
    return 0;
  }
  return 1;
}

static json_t *str_list(char **v, size_t n, int star) {
  json_t *a = json_array();
  if (star) json_array_append_new(a, json_string("*"));
  else
    for (size_t i = 0; i < n; i++) json_array_append_new(a, json_string(v[i]));
  return a;
}

/* A tenant as the admin API shows it: settings, never a key. */
static json_t *tenant_json(const hd_tenant *t) {
  int64_t now = hd__now_ms();
  json_t *j = json_pack(
      "{s:s, s:s, s:o, s:o, s:o, s:I, s:I, s:I}", "name", t->name, "source",
      t->runtime ? "admin" : "config", "apps", str_list(t->apps, t->napps, t->any_app),
      "self_register", str_list(t->self_register, t->nself, t->self_any), "allowed_origins",
      str_list(t->origins, t->norigins, t->origins_any), "device_token_ttl",
      (json_int_t)t->token_ttl_s, "max_publish_rate", (json_int_t)t->max_publish_rate,
      "publish_burst", (json_int_t)t->publish_burst);
  if (!j) return NULL;
  json_object_set_new(j, "created", t->created_ms ? json_integer(t->created_ms) : json_null());
  json_object_set_new(j, "previous_key_valid_until",
                      t->previous_key[0] && now < t->previous_until_ms
                          ? json_integer(t->previous_until_ms)
                          : json_null());
  return j;
}

/* ---- routes ---- */

static void on_created(void *ud, int status, hd_tenant *t, const char *reason) {
  hd_http_req *r = ud;
  if (status) {
    reply_error(r, status, reason);
    return;
  }
  json_t *j = tenant_json(t);
  if (j) json_object_set_new(j, "publish_key", json_string(t->publish_key));
  reply_json(r, 201, j, 1);
}

static void h_create(void *ud, hd_http_req *r) {
  hd_admin *a = ud;
  if (!authorized(a, r)) return;
  json_t *j = hd__json_body(r, 1);
  if (!j) return;
  hd__rtenant_create(a->rt, j, on_created, r);
  json_decref(j);
}

static void h_list(void *ud, hd_http_req *r) {
  hd_admin *a = ud;
  if (!authorized(a, r)) return;
  json_t *arr = json_array();
  for (size_t i = 0; arr && i < a->b->tenants.n; i++)
    json_array_append_new(arr, tenant_json(a->b->tenants.v[i]));
  reply_json(r, 200, arr ? json_pack("{s:o}", "tenants", arr) : NULL, 0);
}

static void h_get(void *ud, hd_http_req *r) {
  hd_admin *a = ud;
  if (!authorized(a, r)) return;
  hd_tenant *t = hd__tenant_by_name(&a->b->tenants, hd__http_param(r, "name"));
  if (!t) {
    hd__http_reply_error(r, HD_ENOTFOUND, "no such tenant");
    return;
  }
  reply_json(r, 200, tenant_json(t), 0);
}

static void on_rotated(void *ud, int status, hd_tenant *t, const char *reason) {
  hd_http_req *r = ud;
  if (status) {
    reply_error(r, status, reason);
    return;
  }
  json_t *j = json_pack("{s:s, s:s}", "name", t->name, "publish_key", t->publish_key);
  if (j)
    json_object_set_new(j, "previous_key_valid_until",
                        t->previous_key[0] ? json_integer(t->previous_until_ms) : json_null());
  reply_json(r, 200, j, 1);
}

static void h_rotate(void *ud, hd_http_req *r) {
  hd_admin *a = ud;
  if (!authorized(a, r)) return;
  hd_tenant *t = hd__tenant_by_name(&a->b->tenants, hd__http_param(r, "name"));
  if (!t) {
    hd__http_reply_error(r, HD_ENOTFOUND, "no such tenant");
    return;
  }
  json_t *j = hd__json_body(r, 1);
  if (!j) return;
  int64_t overlap = a->b->cfg.admin.key_overlap_s;
  const char *k;
  json_t *v;
  json_object_foreach(j, k, v) {
    if (strcmp(k, "overlap") != 0 || !json_is_integer(v)) {
      json_decref(j);
      hd__http_reply_error(r, HD_EINVAL, "the only field is \"overlap\": seconds, an integer");
      return;
    }
    overlap = json_integer_value(v);
  }
  json_decref(j);
  hd__rtenant_rotate_key(a->rt, t, overlap, on_rotated, r);
}

int hd__admin_routes(hd_broker *b) {
  hd_admin *a = b->admin;
  int rc = 0;
  rc = rc ? rc : hd__http_route(b->http, "POST", "/v1/admin/tenants", h_create, a);
  rc = rc ? rc : hd__http_route(b->http, "GET", "/v1/admin/tenants", h_list, a);
  rc = rc ? rc : hd__http_route(b->http, "GET", "/v1/admin/tenants/{name}", h_get, a);
  rc = rc ? rc : hd__http_route(b->http, "POST", "/v1/admin/tenants/{name}/rotate-key", h_rotate,
                                a);
  return rc;
}

/* ---- lifecycle ---- */

static int admin_key(hd_admin *a, char *err, size_t errlen) {
  const hd_config *cfg = &a->b->cfg;
  char path[4200];
  size_t len;
  int rc;
  if (cfg->admin.key) {
    snprintf(a->key, sizeof a->key, "%s", cfg->admin.key);
    return 0;
  }
  snprintf(path, sizeof path, "%s/admin.key", cfg->data_dir);
  rc = hd__secret_read(path, a->key, sizeof a->key, &len);
  if (rc == 0 && len >= 32) return 0;
  if (rc != 0 && rc != HD_ENOTFOUND) {
    snprintf(err, errlen, "admin key %s: cannot read", path);
    return rc;
  }
  if ((rc = hd__random_id(a->key, sizeof a->key, 32)) ||
      (rc = hd__secret_write(path, a->key, strlen(a->key)))) {
    snprintf(err, errlen, "admin key %s: cannot write", path);
    return rc;
  }
  /* The key itself stays in the file (mode 0600): logs travel further than data dirs. */
  hd__log(HD_LOG_WARN, "admin_key_generated", "file=%s", path);
  return 0;
}

int hd__admin_open(hd_broker *b, char *err, size_t errlen) {
  hd_admin *a = calloc(1, sizeof *a);
  int rc;
  if (!a) return HD_ENOMEM;
  a->b = b;
  if ((rc = admin_key(a, err, errlen)) || (rc = hd__rtenants_open(b, &a->rt, err, errlen))) {
    hd__admin_free(a);
    return rc;
  }
  b->admin = a;
  return 0;
}

void hd__admin_free(hd_admin *a) {
  if (!a) return;
  hd__rtenants_free(a->rt);
  OPENSSL_cleanse(a->key, sizeof a->key);
  free(a);
}
