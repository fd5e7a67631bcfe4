/* plugin.c — transport loading, lifecycle and push deliveries (see plugin.h). */
#include "plugin_int.h"

#include <dirent.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "events.h"
#include "herald/error.h"
#include "log.h"

#define HD_OPS_V1_0_SIZE (offsetof(hd_transport_ops, flags))
#define RETRY_MAX_MS 60000

static void on_post(uv_async_t *a) {
  hd_plugin *p = a->data;
  pthread_mutex_lock(&p->post_mu);
  hd_post *list = p->posts;
  p->posts = NULL;
  pthread_mutex_unlock(&p->post_mu);
  /* The list was built newest first; run in submission order. */
  hd_post *rev = NULL;
  while (list) {
    hd_post *n = list->next;
    list->next = rev;
    rev = list;
    list = n;
  }
  while (rev) {
    hd_post *n = rev->next;
    rev->fn(rev->arg);
    free(rev);
    rev = n;
  }
}

static int check_ops(const hd_transport_ops *o, const char *file, const char *want,
                     char *err, size_t errlen) {
  if (o->abi_major != HD_TRANSPORT_ABI_MAJOR) {
    snprintf(err, errlen, "%s: transport ABI major %u, broker speaks %u", file, o->abi_major,
             HD_TRANSPORT_ABI_MAJOR);
    return HD_EABI;
  }
  if (o->abi_minor > HD_TRANSPORT_ABI_MINOR) {
    snprintf(err, errlen, "%s: transport built for ABI %u.%u, broker has %u.%u", file,
             o->abi_major, o->abi_minor, HD_TRANSPORT_ABI_MAJOR, HD_TRANSPORT_ABI_MINOR);
    return HD_EABI;
  }
  if (o->struct_size < HD_OPS_V1_0_SIZE) {
    snprintf(err, errlen, "%s: struct_size %u smaller than ABI 1.0's %zu", file, o->struct_size,
             (size_t)HD_OPS_V1_0_SIZE);
    return HD_EABI;
  }
  if (!o->name || !hd__config_valid_name(o->name) || strcmp(o->name, want) != 0) {
    snprintf(err, errlen, "%s: transport calls itself '%s', expected '%s'", file,
             o->name ? o->name : "(null)", want);
    return HD_EABI;
  }
  if (!o->create || !o->start || !o->stop || !o->destroy || (o->deliver && !o->cancel)) {
    snprintf(err, errlen, "%s: transport lacks a required operation", file);
    return HD_EABI;
  }
  return 0;
}

/* A declared key matches itself; "prefix.*" matches every "prefix.<something>". */
static int key_in(const char *const *list, const char *key) {
  for (const char *const *k = list; k && *k; k++) {
    size_t n = strlen(*k);
    if (n >= 2 && strcmp(*k + n - 2, ".*") == 0) {
      if (strncmp(*k, key, n - 1) == 0 && key[n - 1]) return 1;
    } else if (strcmp(*k, key) == 0) {
      return 1;
    }
  }
  return 0;
}

static int key_allowed(const hd_transport_ops *o, const char *key) {
  if (strcmp(key, "apps") == 0) return 1; /* the host's own key */
  return key_in(o->config_keys, key);
}

/* 1.1 fields of ops, or zero for a 1.0 transport (its reserved slots were zero). */
static const char *const *ops_section_kinds(const hd_transport_ops *o) {
  return o->abi_minor >= 1 ? o->section_kinds : NULL;
}
static uint32_t hd__ops_flags(const hd_transport_ops *o) { return o->abi_minor >= 1 ? o->flags : 0; }

static int split_apps(hd_plugin *p, const char *v) {
  if (!v || strcmp(v, "*") == 0) return 0;
  char *copy = strdup(v), *save = NULL;
  if (!copy) return HD_ENOMEM;
  for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    while (*tok == ' ') tok++;
    char *e = tok + strlen(tok);
    while (e > tok && e[-1] == ' ') *--e = 0;
    if (!*tok) continue;
    char **nv = realloc(p->apps, (p->napps + 1) * sizeof *nv);
    if (!nv) {
      free(copy);
      return HD_ENOMEM;
    }
    p->apps = nv;
    p->apps[p->napps++] = strdup(tok);
  }
  free(copy);
  if (!p->apps) p->apps = calloc(1, sizeof *p->apps); /* "apps =" empty: none */
  return 0;
}

void hd__plugin_dir(const hd_config *cfg, char *buf, size_t len) {
  if (cfg->plugins.dir) {
    snprintf(buf, len, "%s", cfg->plugins.dir);
    return;
  }
  /* Next to the executable: works in the build tree and in an installed prefix alike. */
  char exe[4000];
  size_t n = sizeof exe;
  if (uv_exepath(exe, &n) == 0) {
    char *slash = strrchr(exe, '/');
    if (slash) *slash = 0;
    snprintf(buf, len, "%s/transports", exe);
  } else {
    snprintf(buf, len, "transports");
  }
}

/* The ops named `want` in an opened object: its single `herald_transport`, or the entry of
 * its `herald_transports` array (1.1) with that name. NULL if neither. */
static const hd_transport_ops *find_ops(void *dl, const char *want) {
  const hd_transport_ops *o = dlsym(dl, HD_TRANSPORT_SYMBOL);
  if (o) return o;
  const hd_transport_ops *const *arr = dlsym(dl, HD_TRANSPORTS_SYMBOL);
  for (size_t i = 0; arr && arr[i] && i < 64; i++)
    if (arr[i]->name && strcmp(arr[i]->name, want) == 0) return arr[i];
  return arr && arr[0] ? arr[0] : NULL; /* check_ops names the mismatch */
}

/* Another object in dir that provides `want` through its herald_transports array (several
 * transports in one file, like smpp.so's sms and wappush). 0 and *dl set, or HD_ENOTFOUND. */
static int find_in_dir(const char *dir, const char *want, void **dl, char *file, size_t filelen) {
  DIR *d = opendir(dir);
  if (!d) return HD_ENOTFOUND;
  struct dirent *e;
  int rc = HD_ENOTFOUND;
  while (rc && (e = readdir(d))) {
    size_t n = strlen(e->d_name);
    if (n < 4 || strcmp(e->d_name + n - 3, ".so") != 0) continue;
    snprintf(file, filelen, "%s/%s", dir, e->d_name);
    void *h = dlopen(file, RTLD_NOW | RTLD_LOCAL);
    if (!h) continue;
    const hd_transport_ops *const *arr = dlsym(h, HD_TRANSPORTS_SYMBOL);
    for (size_t i = 0; arr && arr[i] && i < 64 && rc; i++)
      if (arr[i]->name && strcmp(arr[i]->name, want) == 0) rc = 0;
    if (rc) dlclose(h);
    else *dl = h;
  }
  closedir(d);
  return rc;
}

/* Open <dir>/<name>.so (or the object whose herald_transports provides name) and check the
 * exported ops; *dl and *ops on success. */
static int open_checked(const char *dir, const char *name, void **dl, const hd_transport_ops **ops,
                        char *file, size_t filelen, char *err, size_t errlen) {
  snprintf(file, filelen, "%s/%s.so", dir, name);
  *dl = dlopen(file, RTLD_NOW | RTLD_LOCAL);
  if (!*dl) {
    char first[512];
    snprintf(first, sizeof first, "%s", dlerror());
    if (find_in_dir(dir, name, dl, file, filelen) != 0) {
      snprintf(file, filelen, "%s/%s.so", dir, name);
      snprintf(err, errlen, "%s: cannot load: %s (and no other object in %s provides '%s')",
               file, first, dir, name);
      return HD_ECONFIG;
    }
  }
  *ops = find_ops(*dl, name);
  if (!*ops) {
    snprintf(err, errlen, "%s: no '%s' or '%s' symbol: not a Herald transport", file,
             HD_TRANSPORT_SYMBOL, HD_TRANSPORTS_SYMBOL);
    dlclose(*dl);
    return HD_EABI;
  }
  int rc = check_ops(*ops, file, name, err, errlen);
  if (rc) dlclose(*dl);
  return rc;
}

/* Every [KIND NAME] extension section must be of a kind one of the transports declares, with
 * only the keys it declares for it. ops[i] for the n transports being loaded. */
static int check_extra(const hd_config *cfg, const hd_transport_ops *const *ops, size_t n,
                       char *err, size_t errlen) {
  for (size_t i = 0; i < cfg->nextra; i++) {
    const hd_conf_section *x = &cfg->extra[i];
    const hd_transport_ops *owner = NULL;
    for (size_t j = 0; j < n && !owner; j++)
      if (key_in(ops_section_kinds(ops[j]), x->kind)) owner = ops[j];
    if (!owner) {
      snprintf(err, errlen, "%s:%d: unknown section [%s %s] (no loaded transport reads [%s])",
               cfg->source, x->line, x->kind, x->name, x->kind);
      return HD_ECONFIG;
    }
    for (size_t k = 0; k < x->nkv; k++)
      if (!key_in(owner->section_keys, x->kv[k].key)) {
        snprintf(err, errlen, "%s:%d: unknown key '%s' in [%s %s]", cfg->source, x->kv[k].line,
                 x->kv[k].key, x->kind, x->name);
        return HD_ECONFIG;
      }
  }
  return 0;
}

/* Every key of the transport's section must be one it declares (or the host's `apps`). */
static int check_keys(const hd_config *cfg, const hd_transport_ops *o, const char *name,
                      char *err, size_t errlen) {
  const hd_conf_section *sec = hd__config_transport(cfg, name);
  for (size_t i = 0; sec && i < sec->nkv; i++)
    if (!key_allowed(o, sec->kv[i].key)) {
      snprintf(err, errlen, "%s:%d: unknown key '%s' in [transport %s]", cfg->source,
               sec->kv[i].line, sec->kv[i].key, name);
      return HD_ECONFIG;
    }
  return 0;
}

/* A section for a transport that is not loaded is almost always a typo. */
static int check_sections(const hd_config *cfg, char *err, size_t errlen) {
  for (size_t i = 0; i < cfg->ntransports; i++) {
    int found = 0;
    for (size_t j = 0; j < cfg->plugins.nload; j++)
      if (strcmp(cfg->plugins.load[j], cfg->transports[i].name) == 0) found = 1;
    if (!found) {
      snprintf(err, errlen, "%s:%d: [transport %s] but '%s' is not in [plugins] load",
               cfg->source, cfg->transports[i].line, cfg->transports[i].name,
               cfg->transports[i].name);
      return HD_ECONFIG;
    }
  }
  return 0;
}

int hd__plugins_check(const hd_config *cfg, char *err, size_t errlen) {
  char dir[4096], file[4200];
  hd__plugin_dir(cfg, dir, sizeof dir);
  int rc = check_sections(cfg, err, errlen);
  void **dls = calloc(cfg->plugins.nload + 1, sizeof *dls);
  const hd_transport_ops **ops = calloc(cfg->plugins.nload + 1, sizeof *ops);
  size_t n = 0;
  if (!dls || !ops) rc = HD_ENOMEM;
  for (size_t i = 0; rc == 0 && i < cfg->plugins.nload; i++) {
    if ((rc = open_checked(dir, cfg->plugins.load[i], &dls[n], &ops[n], file, sizeof file, err,
                           errlen)))
      break;
    n++;
    rc = check_keys(cfg, ops[n - 1], cfg->plugins.load[i], err, errlen);
  }
  if (rc == 0) rc = check_extra(cfg, ops, n, err, errlen);
  for (size_t i = 0; i < n; i++) dlclose(dls[i]);
  free(dls);
  free(ops);
  return rc;
}

static int load_one(hd_broker *b, hd_plugins *ps, const char *name, char *err, size_t errlen) {
  char file[4200];
  void *dl;
  const hd_transport_ops *o;
  int rc = open_checked(b->plugin_dir, name, &dl, &o, file, sizeof file, err, errlen);
  if (rc) return rc;
  hd_plugin *p = calloc(1, sizeof *p);
  if (!p) {
    dlclose(dl);
    return HD_ENOMEM;
  }
  p->b = b;
  p->set = ps;
  p->ops = o;
  p->dl = dl;
  p->name = strdup(name);
  p->conf = hd__config_transport(&b->cfg, name);
  pthread_mutex_init(&p->post_mu, NULL);
  ps->v[ps->n++] = p;
  if ((rc = check_keys(&b->cfg, o, name, err, errlen))) return rc;
  for (size_t i = 0; p->conf && i < p->conf->nkv; i++)
    if (strcmp(p->conf->kv[i].key, "apps") == 0 && (rc = split_apps(p, p->conf->kv[i].value)))
      return rc;
  if ((rc = uv_async_init(b->loop, &p->async, on_post))) return hd_err_from_uv(rc);
  p->async.data = p;
  if ((rc = o->create(hd__host_table(), p, &p->state))) {
    snprintf(err, errlen, "transport %s: create failed: %s (see its log line above)", name,
             hd_strerror(rc));
    return rc;
  }
  p->created = 1;
  hd__log(HD_LOG_INFO, "transport_loaded", "transport=%s version=%s abi=%u.%u file=%s", name,
          o->version ? o->version : "?", o->abi_major, o->abi_minor, file);
  return 0;
}

int hd__plugins_load(hd_broker *b, char *err, size_t errlen) {
  hd_plugins *ps = calloc(1, sizeof *ps);
  if (!ps) return HD_ENOMEM;
  ps->b = b;
  b->plugins = ps;
  ps->v = calloc(b->cfg.plugins.nload + 1, sizeof *ps->v);
  if (!ps->v) return HD_ENOMEM;
  int rc = check_sections(&b->cfg, err, errlen);
  for (size_t i = 0; rc == 0 && i < b->cfg.plugins.nload; i++)
    rc = load_one(b, ps, b->cfg.plugins.load[i], err, errlen);
  if (rc == 0) {
    const hd_transport_ops **ops = calloc(ps->n + 1, sizeof *ops);
    if (!ops) return HD_ENOMEM;
    for (size_t i = 0; i < ps->n; i++) ops[i] = ps->v[i]->ops;
    rc = check_extra(&b->cfg, ops, ps->n, err, errlen);
    free(ops);
  }
  return rc;
}

int hd__plugins_start(hd_plugins *ps, char *err, size_t errlen) {
  for (size_t i = 0; i < ps->n; i++) {
    hd_plugin *p = ps->v[i];
    int rc = p->ops->start(p->state);
    if (rc) {
      snprintf(err, errlen, "transport %s: start failed: %s", p->name, hd_strerror(rc));
      return rc;
    }
    p->started = 1;
  }
  return 0;
}

/* ---- push deliveries ---- */
static int covers(const hd_plugin *p, const char *app) {
  if (!p->apps) return 1;
  for (size_t i = 0; i < p->napps; i++)
    if (strcmp(p->apps[i], app) == 0) return 1;
  return 0;
}

static void delivery_unlink(hd_delivery *d) {
  hd_plugin *p = d->p;
  if (d->prev) d->prev->next = d->next;
  else p->deliveries = d->next;
  if (d->next) d->next->prev = d->prev;
  d->prev = d->next = NULL;
}

static void on_retry_closed(uv_handle_t *h) {
  hd_delivery *d = h->data;
  hd__msg_clear(&d->msg);
  free(d);
}

static void delivery_free(hd_delivery *d) {
  delivery_unlink(d);
  d->p->set->inflight--;
  d->magic = 0;
  uv_close((uv_handle_t *)&d->retry, on_retry_closed);
}

static void delivery_try(hd_delivery *d);

static void on_retry(uv_timer_t *t) { delivery_try(t->data); }

static void delivery_event(hd_delivery *d, const char *what, const char *reason) {
  hd__events_delivery(d->p->b->events, d->p->name, what, d->msg.seq, d->msg.app,
                      d->msg.has_to ? d->msg.to : NULL, d->attempt, reason);
}

/* A delivery ended for good (not a retry): tell its owner, then free it. */
static void delivery_end(hd_delivery *d, const char *what, const char *reason,
                         const char *const *refs, size_t nrefs) {
  delivery_event(d, what, reason);
  if (d->finish) {
    hd_delivery_finish_cb f = d->finish;
    d->finish = NULL;
    f(d->finish_ud, what, reason, refs, nrefs);
  }
  delivery_free(d);
}

static void delivery_schedule_retry(hd_delivery *d, const char *reason) {
  int64_t now = hd__now_ms();
  uint64_t backoff = 1000u << (d->attempt < 7 ? d->attempt - 1 : 6);
  if (backoff > RETRY_MAX_MS) backoff = RETRY_MAX_MS;
  if (d->p->stopped || now + (int64_t)backoff >= d->msg.expires_ms) {
    delivery_end(d, d->p->stopped ? "abandoned" : "expired", reason, NULL, 0);
    return;
  }
  uv_timer_start(&d->retry, on_retry, backoff, 0);
}

static void delivery_try(hd_delivery *d) {
  hd_plugin *p = d->p;
  if (p->stopped) {
    delivery_end(d, "abandoned", NULL, NULL, 0);
    return;
  }
  d->attempt++;
  d->in_transport = 1;
  int rc = p->ops->deliver(p->state, d);
  if (rc == 0) return; /* it ends in done() */
  d->in_transport = 0;
  if (rc == HD_EAGAIN) {
    delivery_schedule_retry(d, "busy");
  } else {
    delivery_end(d, "failed", hd_strerror(rc), NULL, 0);
  }
}

void hd__delivery_done_refs(hd_delivery *d, int outcome, const char *reason,
                            const char *const *refs, size_t nrefs) {
  if (!d || d->magic != HD_DELIVERY_MAGIC || !d->in_transport) {
    hd__log(HD_LOG_ERROR, "delivery_done_misuse", "reason=%s",
            "done() on a delivery that is not in flight (completed twice or stale pointer)");
    return;
  }
  d->in_transport = 0;
  switch (outcome) {
  case HD_DELIVERED:
    hd__metric_add(d->p->b->m_deliveries, 1);
    delivery_end(d, "delivered", NULL, refs, nrefs);
    break;
  case HD_FAILED_TEMP:
    delivery_schedule_retry(d, reason);
    break;
  default:
    delivery_end(d, "failed", reason, NULL, 0);
  }
}

void hd__delivery_done(hd_delivery *d, int outcome, const char *reason) {
  hd__delivery_done_refs(d, outcome, reason, NULL, 0);
}

static hd_delivery *delivery_new(hd_plugin *p, const hd_offer *o) {
  hd_delivery *d = calloc(1, sizeof *d);
  if (!d || !(d->msg.data = malloc(o->data_len ? o->data_len : 1))) {
    free(d);
    hd__log(HD_LOG_ERROR, "delivery_dropped", "transport=%s id=%llu reason=no_memory",
            p->name, (unsigned long long)o->seq);
    return NULL;
  }
  hd_plugins *ps = p->set;
  {
    d->magic = HD_DELIVERY_MAGIC;
    d->p = p;
    d->msg.seq = o->seq;
    d->msg.created_ms = o->created_ms;
    d->msg.expires_ms = o->expires_ms;
    snprintf(d->msg.app, sizeof d->msg.app, "%s", o->appid);
    if (o->to) {
      d->msg.has_to = 1;
      snprintf(d->msg.to, sizeof d->msg.to, "%s", o->to);
    }
    memcpy(d->msg.data, o->data, o->data_len);
    d->msg.data_len = o->data_len;
    uv_timer_init(p->b->loop, &d->retry);
    d->retry.data = d;
    d->next = p->deliveries;
    if (d->next) d->next->prev = d;
    p->deliveries = d;
    ps->inflight++;
  }
  return d;
}

void hd__plugins_offer(hd_plugins *ps, const hd_offer *o) {
  if (!ps) return;
  for (size_t i = 0; i < ps->n; i++) {
    hd_plugin *p = ps->v[i];
    /* Per-device transports are driven by the push policy (push.c), not by every commit. */
    if (!p->ops->deliver || !p->started || p->stopped || !covers(p, o->appid) ||
        (hd__ops_flags(p->ops) & HD_TRANSPORT_PER_DEVICE))
      continue;
    hd_delivery *d = delivery_new(p, o);
    if (d) delivery_try(d);
  }
}

int hd__plugin_deliver_device(hd_plugin *p, const hd_offer *o, const hd_device_target *dt,
                              hd_delivery_finish_cb finish, void *ud) {
  if (!p->ops->deliver || !p->started || p->stopped) return HD_ECLOSED;
  hd_delivery *d = delivery_new(p, o);
  if (!d) return HD_ENOMEM;
  d->finish = finish;
  d->finish_ud = ud;
  snprintf(d->device, sizeof d->device, "%s", dt->device);
  snprintf(d->msisdn, sizeof d->msisdn, "%s", dt->msisdn ? dt->msisdn : "");
  snprintf(d->tenant, sizeof d->tenant, "%s", dt->tenant ? dt->tenant : "");
  d->msg.has_to = 1; /* events and msg_to() name the device this copy is for */
  snprintf(d->msg.to, sizeof d->msg.to, "%s", dt->device);
  delivery_try(d);
  return 0;
}

void hd__plugins_device_revoked(hd_plugins *ps, const char *tenant, const char *device) {
  for (size_t i = 0; ps && i < ps->n; i++) {
    hd_plugin *p = ps->v[i];
    if (p->started && !p->stopped && p->ops->abi_minor >= 1 && p->ops->device_revoked)
      p->ops->device_revoked(p->state, tenant, device);
  }
}

hd_plugin *hd__plugins_find(hd_plugins *ps, const char *name) {
  for (size_t i = 0; ps && i < ps->n; i++)
    if (strcmp(ps->v[i]->name, name) == 0) return ps->v[i];
  return NULL;
}

uint32_t hd__plugin_flags(const hd_plugin *p) { return hd__ops_flags(p->ops); }
const char *hd__plugin_name(const hd_plugin *p) { return p->name; }

size_t hd__plugins_inflight(const hd_plugins *ps) { return ps ? ps->inflight : 0; }

void hd__plugins_stop(hd_plugins *ps) {
  if (!ps) return;
  for (size_t i = 0; i < ps->n; i++) {
    hd_plugin *p = ps->v[i];
    if (p->stopped) continue;
    /* Cancel what is in the transport's hands (it still ends in done()), drop waiting
     * retries, then let the transport answer everything it holds. */
    for (hd_delivery *d = p->deliveries, *n; d; d = n) {
      n = d->next;
      if (d->in_transport && p->ops->cancel) p->ops->cancel(p->state, d);
    }
    p->stopped = 1;
    for (hd_delivery *d = p->deliveries, *n; d; d = n) {
      n = d->next;
      if (!d->in_transport) {
        uv_timer_stop(&d->retry);
        delivery_end(d, "abandoned", "broker stopping", NULL, 0);
      }
    }
    if (p->started) p->ops->stop(p->state);
    pthread_mutex_lock(&p->post_mu);
    p->post_closed = 1;
    pthread_mutex_unlock(&p->post_mu);
    if (p->async.data) uv_close((uv_handle_t *)&p->async, NULL);
  }
}

void hd__plugins_free(hd_plugins *ps) {
  if (!ps) return;
  for (size_t i = 0; i < ps->n; i++) {
    hd_plugin *p = ps->v[i];
    if (p->created) p->ops->destroy(p->state);
    /* Deliveries the transport never completed: free them now that it is gone. */
    for (hd_delivery *d = p->deliveries, *n; d; d = n) {
      n = d->next;
      hd__msg_clear(&d->msg);
      free(d);
    }
    for (hd_post *q = p->posts, *n; q; q = n) {
      n = q->next;
      free(q);
    }
    for (size_t j = 0; j < p->napps; j++) free(p->apps[j]);
    free(p->apps);
    pthread_mutex_destroy(&p->post_mu);
    /* Keep sanitizer reports readable: leak checkers resolve symbols of unloaded objects
     * badly, so only unload in normal builds. */
#if !defined(__SANITIZE_ADDRESS__)
    dlclose(p->dl);
#endif
    free(p->name);
    free(p);
  }
  free(ps->v);
  free(ps);
}
