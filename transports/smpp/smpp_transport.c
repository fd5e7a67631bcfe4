/* smpp_transport.c — the `sms` and `wappush` transports: one shared object (smpp.so) exporting
 * both through `herald_transports`, sharing the SMSC links of smpp_pool.h.
 *
 * Both are per-device push transports (HD_TRANSPORT_PER_DEVICE): the broker hands them one
 * delivery per device with an MSISDN, when the tenant's or app's push policy says so. A delivery
 * becomes one message of one or more SMS parts:
 *   sms      a text notice: a release notice ({"kind":"release",…}) rendered through the
 *            template chosen for its tenant and app; any other payload's "text" (or "alert")
 *            field, else its JSON. GSM 7-bit when the text fits, UCS-2 otherwise, concatenated
 *            when long (codec/sms_codec.h).
 *   wappush  a WAP Push Service Indication (or Service Loading with document = sl): href = the
 *            release's "url" (or a payload's "url"/"href"), text "<app> <version>", si-id
 *            "<tenant>/<message id>", created and si-expires from the message; WBXML in a WSP
 *            push PDU in binary SMS with the WDP port UDH (codec/wap_codec.h).
 * The parts go to the pool; when the SMSC accepted every part the delivery ends with
 * done_refs(HD_DELIVERED, "<smsc>:<id>" per part), and the receipts that follow tell the broker
 * whether the handset got it. A part that fails ends the delivery at once with that outcome;
 * its other parts still queued are taken back (MUST 3: exactly one done per delivery).
 *
 * Ownership: a job (one accepted delivery) owns its parts; it lives until its delivery is done
 * and no part of it is queued or on the wire any more.
 */
#include <herald/transport.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec/sms_codec.h"
#include "codec/wap_codec.h"
#include "smpp_pool.h"

enum { K_SMS = 0, K_WAP = 1 };
#define MAX_QUEUE 20000 /* parts waiting for a link before deliver() answers HD_EAGAIN */
#define JOB_BUCKETS 1024 /* cancel() finds a delivery's job here (stop cancels them all) */

typedef struct job job;

typedef struct tp {
  int kind;
  const hd_host *h;
  hd_plugin *self;
  hd_smpp_pool *pool;
  hd_smpp_user *user;
  uint64_t links;
  int64_t queue_timeout_ms, max_parts;
  int validity;
  const char *base_url;
  /* wappush */
  int sl, app_id, si_action, sl_action;
  job *jobs;
  job *by_delivery[JOB_BUCKETS];
  uint8_t tid;
  int stopping;
  hd_metric *m_messages, *m_parts, *m_failed_temp, *m_failed_perm;
} tp;

struct job {
  tp *t;
  hd_delivery *d;      /* NULL once done() was called */
  job *prev, *next;
  job *hnext;          /* by_delivery chain, while d is set */
  unsigned n, accepted, live; /* live: parts queued or on the wire */
  char (*refs)[HD_SMPP_REF_MAX];
  hd_smpp_part parts[];
};

static const char *const sms_keys[] = {"smsc",      "template", "template.*", "queue_timeout",
                                       "max_parts", "validity", "base_url",   NULL};
static const char *const wap_keys[] = {"smsc",     "document",  "action",   "app_id", "base_url",
                                       "queue_timeout", "max_parts", "validity", NULL};
static const char *const section_kinds[] = {"smsc", NULL};
static const char *const smsc_keys[] = {
    "host",         "port",          "system_id",        "password",      "system_type",
    "bind",         "window",        "rate",             "enquire_link",  "response_timeout",
    "reconnect_min", "reconnect_max", "throttle_backoff", "source_addr",   "source_ton",
    "source_npi",   "dest_ton",      "dest_npi",         "registered_delivery", "tls",
    "msg_id_type",  NULL};

/* ---- jobs ---- */
static job **bucket(tp *t, const hd_delivery *d) {
  return &t->by_delivery[((uintptr_t)d >> 4) % JOB_BUCKETS];
}

static void job_index(job *j) {
  job **b = bucket(j->t, j->d);
  j->hnext = *b;
  *b = j;
}

/* The delivery ends: forget it (the caller calls done() next). */
static hd_delivery *job_release_delivery(job *j) {
  hd_delivery *d = j->d;
  for (job **pp = bucket(j->t, d); *pp; pp = &(*pp)->hnext)
    if (*pp == j) {
      *pp = j->hnext;
      break;
    }
  j->d = NULL;
  return d;
}

static void job_maybe_free(job *j) {
  if (j->d || j->live) return;
  tp *t = j->t;
  if (j->prev) j->prev->next = j->next;
  else t->jobs = j->next;
  if (j->next) j->next->prev = j->prev;
  free(j->refs);
  free(j);
}

/* End the delivery now (exactly once), taking back its parts still queued. */
static void job_finish(job *j, int outcome, const char *reason) {
  tp *t = j->t;
  if (!j->d) return;
  for (unsigned i = 0; i < j->n; i++)
    if (hd_smpp_pool_withdraw(t->pool, &j->parts[i])) j->live--;
  hd_delivery *d = job_release_delivery(j);
  t->h->metric_add(outcome == HD_FAILED_PERM ? t->m_failed_perm : t->m_failed_temp, 1);
  t->h->done(d, outcome, reason);
}

static void on_part(void *ud, hd_smpp_part *pt, int outcome, const char *ref,
                    const char *reason) {
  job *j = ud;
  tp *t = j->t;
  unsigned i = (unsigned)(pt - j->parts);
  j->live--;
  if (outcome == HD_DELIVERED) {
    snprintf(j->refs[i], HD_SMPP_REF_MAX, "%s", ref);
    j->accepted++;
    t->h->metric_add(t->m_parts, 1);
    if (j->d && j->accepted == j->n) {
      const char *refs[HD_SMS_MAX_PARTS];
      for (unsigned k = 0; k < j->n; k++) refs[k] = j->refs[k];
      hd_delivery *d = job_release_delivery(j);
      t->h->metric_add(t->m_messages, 1);
      t->h->done_refs(d, HD_DELIVERED, NULL, refs, j->n);
    }
  } else {
    job_finish(j, outcome, reason);
  }
  job_maybe_free(j);
}

/* ---- payload → text / SI ---- */
typedef struct notice {
  json_t *root;        /* the payload, or NULL when it is not JSON */
  int release;
  const char *app, *version, *text, *url;
  char version_buf[32], url_buf[2048];
  json_int_t size;
} notice;

static const char *jstr(json_t *o, const char *key) {
  json_t *v = json_object_get(o, key);
  return json_is_string(v) ? json_string_value(v) : NULL;
}

static void read_notice(tp *t, const hd_msg *m, notice *n) {
  const hd_host *h = t->h;
  memset(n, 0, sizeof *n);
  size_t len = 0;
  const char *js = h->msg_data_json(m, &len);
  n->app = h->msg_app(m);
  if (!js) return;
  n->root = json_loadb(js, len, JSON_DECODE_ANY, NULL);
  if (!json_is_object(n->root)) return;
  const char *kind = jstr(n->root, "kind");
  n->release = kind && strcmp(kind, "release") == 0;
  if (jstr(n->root, "app")) n->app = jstr(n->root, "app");
  json_t *ver = json_object_get(n->root, "version");
  if (json_is_string(ver)) n->version = json_string_value(ver);
  else if (json_is_integer(ver)) {
    snprintf(n->version_buf, sizeof n->version_buf, "%lld", (long long)json_integer_value(ver));
    n->version = n->version_buf;
  }
  n->text = jstr(n->root, "text");
  if (!n->text) n->text = jstr(n->root, n->release ? "notes" : "alert");
  const char *url = jstr(n->root, "url");
  if (!url && !n->release) url = jstr(n->root, "href");
  /* Release notices carry the download path relative to the broker; make it absolute. */
  if (url && url[0] == '/' && t->base_url) {
    size_t bl = strlen(t->base_url);
    while (bl && t->base_url[bl - 1] == '/') bl--;
    snprintf(n->url_buf, sizeof n->url_buf, "%.*s%s", (int)bl, t->base_url, url);
    url = n->url_buf;
  }
  n->url = url;
  json_t *sz = json_object_get(n->root, "size");
  n->size = json_is_integer(sz) ? json_integer_value(sz) : -1;
}

/* Appends to a growing buffer; returns -1 on ENOMEM. */
typedef struct sbuf {
  char *p;
  size_t len, cap;
} sbuf;

static int sb_add(sbuf *b, const char *s, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = (b->len + n + 1) * 2;
    char *np = realloc(b->p, cap);
    if (!np) return -1;
    b->p = np;
    b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = 0;
  return 0;
}

static void human_size(json_int_t n, char *buf, size_t len) {
  if (n < 0) snprintf(buf, len, "?");
  else if (n < 1000) snprintf(buf, len, "%lld B", (long long)n);
  else if (n < 1000000) snprintf(buf, len, "%.1f kB", (double)n / 1e3);
  else if (n < 1000000000) snprintf(buf, len, "%.1f MB", (double)n / 1e6);
  else snprintf(buf, len, "%.1f GB", (double)n / 1e9);
}

/* The template for this tenant and app: template.<tenant>.<app>, template.<tenant>, template,
 * then the built-in one. */
static const char *pick_template(tp *t, const char *tenant, const char *app) {
  char key[300];
  const char *v = NULL;
  if (tenant && app) {
    snprintf(key, sizeof key, "template.%s.%s", tenant, app);
    v = t->h->config_str(t->self, key, NULL);
  }
  if (!v && tenant) {
    snprintf(key, sizeof key, "template.%s", tenant);
    v = t->h->config_str(t->self, key, NULL);
  }
  if (!v) v = t->h->config_str(t->self, "template", NULL);
  return v ? v : "{app} {version} is available: {url}";
}

static char *render(const char *tpl, const notice *n) {
  sbuf b = {0};
  char size[32];
  human_size(n->size, size, sizeof size);
  if (sb_add(&b, "", 0)) return NULL;
  for (const char *p = tpl; *p;) {
    const char *val = NULL;
    size_t skip = 0;
    if (*p == '{') {
      static const char *const names[] = {"{app}", "{version}", "{url}", "{text}", "{size}"};
      const char *vals[] = {n->app, n->version, n->url, n->text, size};
      for (int i = 0; i < 5; i++)
        if (strncmp(p, names[i], strlen(names[i])) == 0) {
          val = vals[i] ? vals[i] : "";
          skip = strlen(names[i]);
        }
    }
    int rc = val ? sb_add(&b, val, strlen(val)) : sb_add(&b, p, 1);
    if (rc) {
      free(b.p);
      return NULL;
    }
    p += val ? skip : 1;
  }
  return b.p;
}

static char *sms_text(tp *t, hd_delivery *d, const hd_msg *m, const notice *n) {
  if (n->release) return render(pick_template(t, t->h->delivery_tenant(d), n->app), n);
  if (n->root && json_is_object(n->root)) {
    const char *s = jstr(n->root, "text");
    if (!s) s = jstr(n->root, "alert");
    if (s) return strdup(s);
  }
  size_t len = 0;
  const char *js = t->h->msg_data_json(m, &len);
  return js ? strndup(js, len) : NULL;
}

static void iso_time(int64_t ms, char *buf, size_t len) {
  time_t s = (time_t)(ms / 1000);
  struct tm tm;
  gmtime_r(&s, &tm);
  strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* SMPP absolute time (§7.1.1) in UTC: YYMMDDhhmmss, tenths, quarter hours offset, '+'. */
static void smpp_time(int64_t ms, char *buf, size_t len) {
  time_t s = (time_t)(ms / 1000);
  struct tm tm;
  gmtime_r(&s, &tm);
  char tmp[80];
  snprintf(tmp, sizeof tmp, "%02d%02d%02d%02d%02d%02d000+", tm.tm_year % 100, tm.tm_mon + 1,
           tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
  snprintf(buf, len, "%.16s", tmp);
}

/* Builds the SMS parts for the delivery. Returns 0, or an HD_E* with *why. */
static int build_parts(tp *t, hd_delivery *d, const hd_msg *m, hd_sms_parts_t *parts,
                       const char **why, char *whybuf, size_t whylen) {
  notice n;
  read_notice(t, m, &n);
  int rc;
  if (t->kind == K_SMS) {
    char *text = sms_text(t, d, m, &n);
    if (!text) {
      json_decref(n.root);
      return HD_ENOMEM;
    }
    rc = hd_sms_split_text(text, strlen(text), hd_smpp_pool_next_ref(t->pool), 0, parts, why);
    free(text);
  } else {
    if (!n.url) {
      *why = n.release ? "release notice without a url" : "payload has no \"url\" or \"href\"";
      json_decref(n.root);
      return HD_EINVAL;
    }
    hd_wap_push_opts_t opts = HD_WAP_PUSH_DEFAULTS;
    opts.tid = t->tid++;
    opts.app_id = t->app_id;
    if (t->sl) {
      hd_wap_sl_t sl = {.href = n.url, .action = t->sl_action};
      rc = hd_wap_sl_sms(&sl, &opts, hd_smpp_pool_next_ref(t->pool), parts, why);
    } else {
      char text[512], si_id[200], created[32], expires[32];
      const char *tenant = t->h->delivery_tenant(d);
      if (n.release)
        snprintf(text, sizeof text, "%s%s%s", n.app ? n.app : "", n.version ? " " : "",
                 n.version ? n.version : "");
      else
        snprintf(text, sizeof text, "%s", n.text ? n.text : "");
      snprintf(si_id, sizeof si_id, "%s/%llu", tenant ? tenant : "herald",
               (unsigned long long)t->h->msg_id(m));
      iso_time(t->h->msg_created_ms(m), created, sizeof created);
      int64_t exp = t->h->msg_expires_ms(m);
      if (exp > 0) iso_time(exp, expires, sizeof expires);
      hd_wap_si_t si = {.href = n.url, .text = text, .si_id = si_id, .created = created,
                        .expires = exp > 0 ? expires : NULL, .action = t->si_action};
      rc = hd_wap_si_sms(&si, &opts, hd_smpp_pool_next_ref(t->pool), parts, why);
    }
  }
  json_decref(n.root);
  if (rc == 0 && (int64_t)parts->n > t->max_parts) {
    snprintf(whybuf, whylen, "the message needs %u SMS, max_parts is %lld", parts->n,
             (long long)t->max_parts);
    *why = whybuf;
    hd_sms_parts_free(parts);
    return HD_ETOOBIG;
  }
  return rc;
}

/* ---- ops ---- */
static int t_deliver(void *state, hd_delivery *d) {
  tp *t = state;
  const hd_host *h = t->h;
  if (t->stopping) return HD_ECLOSED;
  const char *msisdn = h->delivery_msisdn(d);
  size_t ml = msisdn ? strlen(msisdn) : 0;
  int ok = ml > 0 && ml <= 20;
  for (size_t i = 0; ok && i < ml; i++) ok = msisdn[i] >= '0' && msisdn[i] <= '9';
  if (!ok) {
    h->metric_add(t->m_failed_perm, 1);
    h->done(d, HD_FAILED_PERM, msisdn ? "MSISDN is not 1-20 digits" : "device has no MSISDN");
    return 0;
  }
  if (hd_smpp_pool_queued(t->pool) >= MAX_QUEUE) return HD_EAGAIN;
  const hd_msg *m = h->delivery_msg(d);
  hd_sms_parts_t parts = {0};
  const char *why = NULL;
  char whybuf[120];
  int rc = build_parts(t, d, m, &parts, &why, whybuf, sizeof whybuf);
  if (rc == HD_ENOMEM) return HD_EAGAIN;
  if (rc) {
    h->log(t->self, HD_LOG_WARN, "smpp_unencodable", "id=%llu reason=\"%s\"",
           (unsigned long long)h->msg_id(m), why ? why : hd_strerror(rc));
    h->metric_add(t->m_failed_perm, 1);
    h->done(d, HD_FAILED_PERM, why ? why : hd_strerror(rc));
    return 0;
  }
  job *j = calloc(1, sizeof *j + parts.n * sizeof(hd_smpp_part));
  if (!j || !(j->refs = calloc(parts.n, sizeof *j->refs))) {
    free(j);
    hd_sms_parts_free(&parts);
    return HD_EAGAIN;
  }
  j->t = t;
  j->d = d;
  j->n = parts.n;
  char validity[17] = "";
  int64_t exp = h->msg_expires_ms(m);
  if (t->validity && exp > 0) smpp_time(exp, validity, sizeof validity);
  uint64_t deadline = t->queue_timeout_ms > 0 ? uv_now(h->loop(t->self)) +
                                                    (uint64_t)t->queue_timeout_ms
                                              : 0;
  for (unsigned i = 0; i < parts.n; i++) {
    hd_smpp_part *pt = &j->parts[i];
    const hd_sms_part_t *sp = &parts.part[i];
    snprintf(pt->sub.dest, sizeof pt->sub.dest, "%s", msisdn);
    memcpy(pt->sub.validity, validity, sizeof validity);
    pt->sub.esm_class = sp->esm_class;
    pt->sub.data_coding = sp->data_coding;
    pt->sub.sm_len = (uint8_t)sp->sm_len;
    memcpy(pt->sub.sm, sp->sm, sp->sm_len);
    pt->links = t->links;
    pt->deadline = deadline;
    pt->cb = on_part;
    pt->ud = j;
  }
  hd_sms_parts_free(&parts);
  j->next = t->jobs;
  if (t->jobs) t->jobs->prev = j;
  t->jobs = j;
  job_index(j);
  /* deliver() holds one count of its own, so a part failing from inside submit (ending the
   * job) cannot free it while the loop still runs; parts after such a failure are not sent. */
  j->live = 1;
  for (unsigned i = 0; i < j->n && j->d; i++) {
    j->live++;
    hd_smpp_pool_submit(t->pool, t->user, &j->parts[i]);
  }
  j->live--;
  job_maybe_free(j);
  return 0;
}

static void t_cancel(void *state, hd_delivery *d) {
  tp *t = state;
  for (job *j = *bucket(t, d); j; j = j->hnext)
    if (j->d == d) {
      job_finish(j, HD_FAILED_TEMP, "canceled");
      job_maybe_free(j);
      return;
    }
}

static int parse_action(tp *t, const char *v) {
  static const struct {
    const char *name;
    int si, sl;
  } acts[] = {
      {"signal-none", HD_WAP_SI_SIGNAL_NONE, -1},   {"signal-low", HD_WAP_SI_SIGNAL_LOW, -1},
      {"signal-medium", HD_WAP_SI_SIGNAL_MEDIUM, -1}, {"signal-high", HD_WAP_SI_SIGNAL_HIGH, -1},
      {"execute-low", -1, HD_WAP_SL_EXECUTE_LOW},   {"execute-high", -1, HD_WAP_SL_EXECUTE_HIGH},
      {"cache", -1, HD_WAP_SL_CACHE},
  };
  if (!v) return 0;
  for (size_t i = 0; i < sizeof acts / sizeof acts[0]; i++)
    if (strcmp(v, acts[i].name) == 0) {
      int a = t->sl ? acts[i].sl : acts[i].si;
      if (a < 0) return -1;
      if (t->sl) t->sl_action = a;
      else t->si_action = a;
      return 0;
    }
  return -1;
}

static int bad_key(tp *t, const char *key, const char *want) {
  t->h->log(t->self, HD_LOG_ERROR, "bad_config", "key=%s reason=\"%s\"", key, want);
  return HD_ECONFIG;
}

static int t_create_kind(const hd_host *h, hd_plugin *self, void **state, int kind) {
  if (h->abi_minor < 1 || h->struct_size < offsetof(hd_host, reserved)) {
    h->log(self, HD_LOG_ERROR, "abi_too_old", "reason=\"%s\"",
           "needs a broker with transport ABI 1.1 (per-device deliveries, receipts)");
    return HD_EABI;
  }
  tp *t = calloc(1, sizeof *t);
  if (!t) return HD_ENOMEM;
  t->kind = kind;
  t->h = h;
  t->self = self;
  int rc = HD_ECONFIG;
  if (h->config_int(self, "max_parts", kind == K_SMS ? 6 : 10, &t->max_parts) ||
      t->max_parts < 1 || t->max_parts > HD_SMS_MAX_PARTS) {
    rc = bad_key(t, "max_parts", "a number from 1 to 255");
    goto fail;
  }
  if (hd_smpp_parse_ms(h->config_str(self, "queue_timeout", "60s"), &t->queue_timeout_ms)) {
    rc = bad_key(t, "queue_timeout", "a duration such as 60s (0 = wait for a link forever)");
    goto fail;
  }
  const char *v = h->config_str(self, "validity", "yes");
  if (strcmp(v, "yes") && strcmp(v, "no")) {
    rc = bad_key(t, "validity", "yes (validity_period = the message's expiry) or no");
    goto fail;
  }
  t->validity = strcmp(v, "yes") == 0;
  t->base_url = h->config_str(self, "base_url", NULL);
  if (t->base_url && strncmp(t->base_url, "http://", 7) && strncmp(t->base_url, "https://", 8)) {
    rc = bad_key(t, "base_url", "an absolute http:// or https:// URL");
    goto fail;
  }
  if (kind == K_WAP) {
    const char *doc = h->config_str(self, "document", "si");
    if (strcmp(doc, "si") && strcmp(doc, "sl")) {
      rc = bad_key(t, "document", "si or sl");
      goto fail;
    }
    t->sl = strcmp(doc, "sl") == 0;
    if (parse_action(t, h->config_str(self, "action", NULL))) {
      rc = bad_key(t, "action", t->sl ? "execute-low, execute-high or cache"
                                      : "signal-none, signal-low, signal-medium or signal-high");
      goto fail;
    }
    const char *app = h->config_str(self, "app_id", "wml.ua");
    if (strcmp(app, "wml.ua") == 0) t->app_id = HD_WAP_APP_WML_UA;
    else if (strcmp(app, "push.sia") == 0) t->app_id = HD_WAP_APP_PUSH_SIA;
    else if (strcmp(app, "none") == 0) t->app_id = HD_WAP_APP_NONE;
    else {
      char *end;
      long n = strtol(app, &end, 10);
      if (*end || end == app || n < 0 || n > 127) {
        rc = bad_key(t, "app_id", "wml.ua, push.sia, none or a WINA number 0-127");
        goto fail;
      }
      t->app_id = (int)n;
    }
  } else {
    /* template.<tenant> and template.<tenant>.<app>: names must be there, not empty. */
    const char *val;
    const char *k;
    for (size_t i = 0; (k = h->config_key_at(self, i, &val)); i++) {
      if (strncmp(k, "template.", 9) != 0) continue;
      const char *rest = k + 9, *dot = strchr(rest, '.');
      if (!*rest || *rest == '.' || (dot && (!dot[1] || strchr(dot + 1, '.')))) {
        rc = bad_key(t, k, "template.<tenant> or template.<tenant>.<app>");
        goto fail;
      }
    }
  }
  if ((rc = hd_smpp_pool_acquire(h, self, &t->pool, &t->user))) goto fail;
  const char *bad = NULL;
  if (hd_smpp_pool_links(t->pool, h->config_str(self, "smsc", NULL), &t->links, &bad)) {
    char why[160];
    snprintf(why, sizeof why, "no [smsc %s] section", bad ? bad : "?");
    rc = bad_key(t, "smsc", why);
    hd_smpp_pool_release(t->pool, t->user);
    goto fail;
  }
  t->m_messages = h->metric_new(self, "messages_total",
                                "Messages whose every SMS part the SMSC accepted",
                                HD_METRIC_COUNTER);
  t->m_parts = h->metric_new(self, "parts_total", "SMS parts the SMSC accepted",
                             HD_METRIC_COUNTER);
  t->m_failed_temp = h->metric_new(self, "failed_temp_total",
                                   "Deliveries failed temporarily (the broker retries)",
                                   HD_METRIC_COUNTER);
  t->m_failed_perm = h->metric_new(self, "failed_perm_total",
                                   "Deliveries failed for good (no MSISDN, unencodable, refused)",
                                   HD_METRIC_COUNTER);
  *state = t;
  return 0;
fail:
  free(t);
  return rc;
}

static int sms_create(const hd_host *h, hd_plugin *self, void **state) {
  return t_create_kind(h, self, state, K_SMS);
}
static int wap_create(const hd_host *h, hd_plugin *self, void **state) {
  return t_create_kind(h, self, state, K_WAP);
}

static int t_start(void *state) {
  tp *t = state;
  hd_smpp_pool_start(t->pool);
  return 0;
}

static void t_stop(void *state) {
  tp *t = state;
  t->stopping = 1;
  for (job *j = t->jobs, *nx; j; j = nx) {
    nx = j->next;
    job_finish(j, HD_FAILED_TEMP, "transport stopping");
    job_maybe_free(j);
  }
  hd_smpp_pool_stop(t->pool, t->user);
}

static void t_destroy(void *state) {
  tp *t = state;
  /* After the drain every part has had its callback; free what is left regardless. */
  for (job *j = t->jobs, *nx; j; j = nx) {
    nx = j->next;
    free(j->refs);
    free(j);
  }
  hd_smpp_pool_release(t->pool, t->user);
  free(t);
}

static const hd_transport_ops sms_ops = {
    .abi_major = HD_TRANSPORT_ABI_MAJOR,
    .abi_minor = HD_TRANSPORT_ABI_MINOR,
    .struct_size = sizeof(hd_transport_ops),
    .name = "sms",
    .version = "1.0.0",
    .config_keys = sms_keys,
    .create = sms_create,
    .start = t_start,
    .deliver = t_deliver,
    .cancel = t_cancel,
    .stop = t_stop,
    .destroy = t_destroy,
    .flags = HD_TRANSPORT_PER_DEVICE,
    .section_kinds = section_kinds,
    .section_keys = smsc_keys,
};

static const hd_transport_ops wap_ops = {
    .abi_major = HD_TRANSPORT_ABI_MAJOR,
    .abi_minor = HD_TRANSPORT_ABI_MINOR,
    .struct_size = sizeof(hd_transport_ops),
    .name = "wappush",
    .version = "1.0.0",
    .config_keys = wap_keys,
    .create = wap_create,
    .start = t_start,
    .deliver = t_deliver,
    .cancel = t_cancel,
    .stop = t_stop,
    .destroy = t_destroy,
    .flags = HD_TRANSPORT_PER_DEVICE,
    .section_kinds = section_kinds,
    .section_keys = smsc_keys,
};

HD_TRANSPORT_EXPORT const hd_transport_ops *const herald_transports[] = {&sms_ops, &wap_ops,
                                                                         NULL};
