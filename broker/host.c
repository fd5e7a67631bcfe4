/* host.c — the hd_host table: what the broker offers transports, one thin function per entry
 * delegating to the module that owns the job (http.c, store.c, router.c, metrics.c, ...). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "herald/error.h"
#include "http.h"
#include "jcache.h"
#include "log.h"
#include "events.h"
#include "plugin_int.h"
#include "push.h"

/* ---- loop, log, config, metrics ---- */
static uv_loop_t *h_loop(hd_plugin *p) { return p->b->loop; }

__attribute__((format(printf, 4, 5))) static void h_log(hd_plugin *p, int level,
                                                        const char *event, const char *fmt,
                                                        ...) {
  if (!hd__log_enabled(level)) return;
  char fields[3000] = "";
  if (fmt) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(fields, sizeof fields, fmt, ap);
    va_end(ap);
  }
  hd__log(level, event, "transport=%s%s%s", p->name, *fields ? " " : "", fields);
}

static const char *h_config_str(hd_plugin *p, const char *key, const char *def) {
  if (p->conf)
    for (size_t i = 0; i < p->conf->nkv; i++)
      if (strcmp(p->conf->kv[i].key, key) == 0) return p->conf->kv[i].value;
  return def;
}

static int parse_int_value(const char *v, int64_t *out);

static int h_config_int(hd_plugin *p, const char *key, int64_t def, int64_t *out) {
  const char *v = h_config_str(p, key, NULL);
  if (!v) {
    *out = def;
    return 0;
  }
  return parse_int_value(v, out);
}

static hd_metric *h_metric_new(hd_plugin *p, const char *name, const char *help, int type) {
  char full[256];
  if (type != HD_METRIC_COUNTER && type != HD_METRIC_GAUGE) return NULL;
  snprintf(full, sizeof full, "herald_%s_%s", p->name, name);
  return hd__metric_new(p->b->metrics, full, help, type, NULL);
}

/* ---- HTTP ---- */
static int h_http_route(hd_plugin *p, const char *method, const char *pattern,
                        hd_http_handler cb, void *ud) {
  return hd__http_route(p->b->http, method, pattern, cb, ud);
}

/* ---- devices ---- */
static int h_device_auth(hd_plugin *p, const char *device_id, const char *token,
                         hd_device **out) {
  hd_tenant *t;
  uint32_t gen;
  *out = NULL;
  if (!token || !device_id) return HD_EAUTH;
  int rc = hd__token_verify(&p->b->tenants, device_id, token, &t, &gen);
  if (rc) return HD_EAUTH;
  MDB_txn *txn;
  if ((rc = hd__store_rbegin(p->b->store, &txn))) return rc;
  hd_store_device sd;
  rc = hd__store_r_device(p->b->store, txn, t->num, device_id, &sd);
  hd__store_rend(p->b->store, txn);
  /* Unknown device or an old generation: the same answer, so a token reveals nothing. */
  if (rc == HD_ENOTFOUND || (rc == 0 && sd.gen != gen)) return HD_EAUTH;
  if (rc) return rc;
  size_t idlen = strlen(device_id);
  hd_device *d = calloc(1, sizeof *d + idlen + 1);
  if (!d) return HD_ENOMEM;
  d->tenant = t;
  d->dev_num = sd.dev_num;
  memcpy(d->id, device_id, idlen + 1);
  *out = d;
  return 0;
}

static void h_device_free(hd_device *d) {
  if (d) free(d->apps);
  free(d);
}
static const char *h_device_id(const hd_device *d) { return d->id; }
static const char *h_device_tenant(const hd_device *d) { return d->tenant->name; }

void hd__msg_clear(hd_msg *m) {
  free(m->data);
  free(m->json);
  m->data = NULL;
  m->json = NULL;
}

typedef struct fetch_ctx {
  hd_broker *b;
  MDB_txn *txn;
  hd_batch *batch;
  const hd_device *dev;
} fetch_ctx;

static int fetch_one(void *ud, const hd_store_msg *sm) {
  fetch_ctx *fc = ud;
  hd_batch *bt = fc->batch;
  if (bt->n == bt->cap) {
    size_t cap = bt->cap ? bt->cap * 2 : 16;
    hd_msg *v = realloc(bt->v, cap * sizeof *v);
    if (!v) return HD_ENOMEM;
    bt->v = v;
    bt->cap = cap;
  }
  hd_msg *m = &bt->v[bt->n];
  memset(m, 0, sizeof *m);
  uint32_t tenant;
  if (hd__store_r_app_name(fc->b->store, fc->txn, sm->app_num, &tenant, m->app, sizeof m->app))
    snprintf(m->app, sizeof m->app, "?");
  m->seq = sm->seq;
  m->jc = fc->b->jcache;
  m->created_ms = sm->created_ms;
  m->expires_ms = sm->expires_ms;
  if (sm->dev_num) {
    m->has_to = 1;
    snprintf(m->to, sizeof m->to, "%s", fc->dev->id);
  }
  /* Copy out of the LMDB map: the read transaction ends when fetch returns. */
  m->data = malloc(sm->data_len ? sm->data_len : 1);
  if (!m->data) return HD_ENOMEM;
  memcpy(m->data, sm->data, sm->data_len);
  m->data_len = sm->data_len;
  bt->n++;
  bt->cursor = sm->seq;
  return 0;
}

static void h_batch_free(hd_batch *b) {
  if (!b) return;
  for (size_t i = 0; i < b->n; i++) hd__msg_clear(&b->v[i]);
  free(b->v);
  free(b);
}

static int h_fetch(hd_plugin *p, const hd_device *d, uint64_t after, size_t max,
                   hd_batch **out) {
  hd_batch *bt = calloc(1, sizeof *bt);
  if (!bt) return HD_ENOMEM;
  bt->cursor = after;
  /* A client that has seen every message id whose wake-ups ran (the usual re-poll of a caught
   * -up device) is not read for: a later message can only be one whose commit has yet to wake
   * the watch the caller arms next. */
  if (after >= p->b->seq_woken) {
    *out = bt;
    return 0;
  }
  fetch_ctx fc = {.b = p->b, .batch = bt, .dev = d};
  int rc = hd__store_rbegin(p->b->store, &fc.txn);
  if (rc == 0) {
    rc = hd__store_r_pending(p->b->store, fc.txn, d->dev_num, after, max, hd__now_ms(),
                             fetch_one, &fc);
    hd__store_rend(p->b->store, fc.txn);
  }
  if (rc) {
    h_batch_free(bt);
    return rc;
  }
  hd__metric_add(p->b->m_deliveries, (double)bt->n);
  *out = bt;
  return 0;
}

static size_t h_batch_count(const hd_batch *b) { return b->n; }
static const hd_msg *h_batch_msg(const hd_batch *b, size_t i) {
  return i < b->n ? &b->v[i] : NULL;
}
static uint64_t h_batch_cursor(const hd_batch *b) { return b->cursor; }

static hd_watch *h_watch(hd_plugin *p, const hd_device *cd, hd_wake_cb cb, void *ud) {
  hd_device *d = (hd_device *)cd; /* its app cache only; the ABI's const is for the plugin */
  if (!d->apps || d->apps_gen != p->b->regs_gen) {
    hd_store_reg regs[HD_STORE_MAX_REGS];
    size_t n = 0;
    MDB_txn *txn;
    if (hd__store_rbegin(p->b->store, &txn)) return NULL;
    int rc = hd__store_r_regs(p->b->store, txn, d->dev_num, regs, HD_STORE_MAX_REGS, &n);
    hd__store_rend(p->b->store, txn);
    if (rc) return NULL;
    uint32_t *apps = realloc(d->apps, (n ? n : 1) * sizeof *apps);
    if (!apps) return NULL;
    for (size_t i = 0; i < n; i++) apps[i] = regs[i].app_num;
    d->apps = apps;
    d->napps = (uint32_t)n;
    d->apps_gen = p->b->regs_gen;
  }
  return hd__router_watch(p->b->router, d->dev_num, d->apps, d->napps, cb, ud);
}


static int h_ack(hd_plugin *p, const hd_device *d, const uint64_t *ids, size_t n, hd_ack_cb cb,
                 void *ud) {
  return hd__broker_ack(p->b, d->tenant, d->id, d->dev_num, ids, n, cb, ud);
}

/* ---- messages ---- */
static uint64_t h_msg_id(const hd_msg *m) { return m->seq; }
static const char *h_msg_app(const hd_msg *m) { return m->app; }
static const char *h_msg_to(const hd_msg *m) { return m->has_to ? m->to : NULL; }
static int64_t h_msg_created(const hd_msg *m) { return m->created_ms; }
static int64_t h_msg_expires(const hd_msg *m) { return m->expires_ms; }
static const void *h_msg_data(const hd_msg *m, size_t *len) {
  *len = m->data_len;
  return m->data;
}
static const char *h_msg_data_json(const hd_msg *cm, size_t *len) {
  hd_msg *m = (hd_msg *)cm; /* the JSON rendering is a cache, not a change of the message */
  if (!m->json && m->jc) hd__jcache_get(m->jc, m->seq, &m->json, &m->json_len); /* or miss */
  if (!m->json) {
    if (hd__codec_mpbytes_to_json_text(m->data, m->data_len, &m->json, &m->json_len))
      return NULL;
    if (m->jc) hd__jcache_put(m->jc, m->seq, m->json, m->json_len);
  }
  if (len) *len = m->json_len;
  return m->json;
}

/* ---- push ---- */
static const hd_msg *h_delivery_msg(const hd_delivery *d) { return &d->msg; }
static unsigned h_delivery_attempt(const hd_delivery *d) { return d->attempt; }

/* ---- per-device push (1.1) ---- */
static const char *h_delivery_device(const hd_delivery *d) { return d->device[0] ? d->device : NULL; }
static const char *h_delivery_msisdn(const hd_delivery *d) { return d->msisdn[0] ? d->msisdn : NULL; }
static const char *h_delivery_tenant(const hd_delivery *d) { return d->tenant[0] ? d->tenant : NULL; }

static int h_receipt(hd_plugin *p, const char *ref, int state, const char *detail) {
  if (!ref || !*ref || state < HD_RECEIPT_DELIVERED || state > HD_RECEIPT_EXPIRED)
    return HD_EINVAL;
  return hd__push_receipt(p->b->push, p->name, ref, state, detail);
}

static void h_inbound(hd_plugin *p, const char *from, const char *to, const char *text,
                      size_t len) {
  hd__events_inbound(p->b->events, p->name, from, to, text, len);
}

/* ---- [KIND NAME] sections (1.1) ---- */
static size_t h_section_count(hd_plugin *p, const char *kind) {
  size_t n = 0;
  for (size_t i = 0; i < p->b->cfg.nextra; i++)
    if (strcmp(p->b->cfg.extra[i].kind, kind) == 0) n++;
  return n;
}

static const char *h_section_name(hd_plugin *p, const char *kind, size_t idx) {
  for (size_t i = 0; i < p->b->cfg.nextra; i++)
    if (strcmp(p->b->cfg.extra[i].kind, kind) == 0 && idx-- == 0) return p->b->cfg.extra[i].name;
  return NULL;
}

static const char *h_section_str(hd_plugin *p, const char *kind, const char *name,
                                 const char *key, const char *def) {
  const hd_conf_section *x = hd__config_extra(&p->b->cfg, kind, name);
  for (size_t i = 0; x && i < x->nkv; i++)
    if (strcmp(x->kv[i].key, key) == 0) return x->kv[i].value;
  return def;
}

static int parse_int_value(const char *v, int64_t *out) {
  size_t n = strlen(v);
  if (n && strchr("smhd", v[n - 1])) return hd__config_parse_duration(v, out);
  uint64_t u;
  int rc = hd__config_parse_size(v, &u);
  if (rc || u > INT64_MAX) return HD_ECONFIG;
  *out = (int64_t)u;
  return 0;
}

static int h_section_int(hd_plugin *p, const char *kind, const char *name, const char *key,
                         int64_t def, int64_t *out) {
  const char *v = h_section_str(p, kind, name, key, NULL);
  if (!v) {
    *out = def;
    return 0;
  }
  return parse_int_value(v, out);
}

static const char *h_config_key_at(hd_plugin *p, size_t i, const char **value) {
  if (!p->conf || i >= p->conf->nkv) return NULL;
  if (value) *value = p->conf->kv[i].value;
  return p->conf->kv[i].key;
}

/* ---- threads ---- */
static int h_post(hd_plugin *p, void (*fn)(void *), void *arg) {
  hd_post *q = malloc(sizeof *q);
  if (!q) return HD_ENOMEM;
  q->fn = fn;
  q->arg = arg;
  pthread_mutex_lock(&p->post_mu);
  if (p->post_closed) {
    pthread_mutex_unlock(&p->post_mu);
    free(q);
    return HD_ECLOSED;
  }
  q->next = p->posts;
  p->posts = q;
  uv_async_send(&p->async);
  pthread_mutex_unlock(&p->post_mu);
  return 0;
}

static const hd_host host_table = {
    .abi_major = HD_TRANSPORT_ABI_MAJOR,
    .abi_minor = HD_TRANSPORT_ABI_MINOR,
    .struct_size = sizeof(hd_host),
    .loop = h_loop,
    .log = h_log,
    .config_str = h_config_str,
    .config_int = h_config_int,
    .metric_new = h_metric_new,
    .metric_add = hd__metric_add,
    .metric_set = hd__metric_set,
    .http_route = h_http_route,
    .http_param = hd__http_param,
    .http_query = hd__http_query,
    .http_header = hd__http_header,
    .http_body = hd__http_body,
    .http_bearer = hd__http_bearer,
    .http_hold = hd__http_hold,
    .http_reply = hd__http_reply,
    .http_reply_error = hd__http_reply_error,
    .device_auth = h_device_auth,
    .device_free = h_device_free,
    .device_id = h_device_id,
    .device_tenant = h_device_tenant,
    .fetch = h_fetch,
    .batch_count = h_batch_count,
    .batch_msg = h_batch_msg,
    .batch_cursor = h_batch_cursor,
    .batch_free = h_batch_free,
    .watch = h_watch,
    .unwatch = hd__router_unwatch,
    .ack = h_ack,
    .msg_id = h_msg_id,
    .msg_app = h_msg_app,
    .msg_to = h_msg_to,
    .msg_created_ms = h_msg_created,
    .msg_expires_ms = h_msg_expires,
    .msg_data = h_msg_data,
    .msg_data_json = h_msg_data_json,
    .delivery_msg = h_delivery_msg,
    .delivery_attempt = h_delivery_attempt,
    .done = hd__delivery_done,
    .post = h_post,
    .delivery_device = h_delivery_device,
    .delivery_msisdn = h_delivery_msisdn,
    .delivery_tenant = h_delivery_tenant,
    .done_refs = hd__delivery_done_refs,
    .receipt = h_receipt,
    .inbound = h_inbound,
    .section_count = h_section_count,
    .section_name = h_section_name,
    .section_str = h_section_str,
    .section_int = h_section_int,
    .config_key_at = h_config_key_at,
};

const hd_host *hd__host_table(void) { return &host_table; }
