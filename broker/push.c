/* push.c — push policy, durable escalation schedule and per-device deliveries (see push.h). */
#include "push.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "bytes.h"
#include "events.h"
#include "http.h"
#include "herald/error.h"
#include "herald/transport.h"
#include "log.h"
#include "plugin.h"

#define PUSH_TICK_MS 1000
#define PUSH_PAGE 500          /* devices of a broadcast expanded per commit */
#define PUSH_HOLD_MS 60000     /* a receipt waits this long for the submit it belongs to */
#define PUSH_HOLD_MAX 10000    /* receipts held at once; beyond, the oldest is dropped */
#define MAX_NAME 64

enum { DONE_SENT = 1, DONE_HANDSET = 2, DONE_CARRIER_FAILED = 3, DONE_SEND_FAILED = 4 };

typedef struct step {
  char name[MAX_NAME + 1];
  int64_t after_ms;
  hd_plugin *p;            /* set for per-device transports; NULL for pull ones */
} step;

typedef struct policy {
  hd_push *ps;
  char tenant[MAX_NAME + 1];
  char app[HD_STORE_MAX_ID + 1]; /* "" = the tenant's default */
  step *steps;
  size_t n;
} policy;

typedef struct held {
  struct held *next;
  int64_t at_ms;
  int state;
  char transport[MAX_NAME + 1];
  char ref[128];
  char detail[160];
} held;

struct hd_push {
  hd_broker *b;
  int64_t keep_ms;         /* push_done rows outlive their message by at most this */
  int64_t next_janitor_ms;
  int janitor_busy;
  unsigned char refs_cursor[512]; /* where the janitor's walk of push_refs goes on */
  size_t refs_cursor_len;
  MDB_dbi sched, q, done, refs, msisdn;
  policy *pol;
  size_t npol;
  uv_timer_t timer;
  int timer_live;
  int busy;                /* an expansion op is in flight */
  int stopping;
  size_t live;             /* per-device deliveries in the transports' hands or retrying */
  held *held;
  size_t nheld;
  hd_metric *m_receipts, *m_escalations;
};

/* ---- policies ---- */

static int first_device_step(const policy *pl, size_t from) {
  for (size_t i = from; i < pl->n; i++)
    if (pl->steps[i].p) return (int)i;
  return -1;
}

static int parse_policy(hd_push *ps, policy *pl, const char *text, char *err, size_t errlen) {
  char *copy = strdup(text), *save = NULL;
  if (!copy) return HD_ENOMEM;
  int rc = 0;
  int64_t last = 0;
  for (char *item = strtok_r(copy, ",", &save); item && !rc; item = strtok_r(NULL, ",", &save)) {
    char name[MAX_NAME + 1], word[16], dur[32], extra[8];
    int k = sscanf(item, " %64[a-z0-9_-] %15s %31s %7s", name, word, dur, extra);
    int64_t after_s = 0;
    if (k == 3 && strcmp(word, "after") == 0) {
      if (hd__config_parse_duration(dur, &after_s)) {
        snprintf(err, errlen, "bad duration '%s'", dur);
        rc = HD_ECONFIG;
        break;
      }
    } else if (k != 1) {
      snprintf(err, errlen, "bad step '%s' (want NAME or NAME after DURATION)", item);
      rc = HD_ECONFIG;
      break;
    }
    hd_plugin *p = hd__plugins_find(ps->b->plugins, name);
    if (!p) {
      snprintf(err, errlen, "'%s' is not a loaded transport ([plugins] load)", name);
      rc = HD_ECONFIG;
      break;
    }
    if (after_s * 1000 < last) {
      snprintf(err, errlen, "'%s after %s' comes before the previous step's time", name, dur);
      rc = HD_ECONFIG;
      break;
    }
    last = after_s * 1000;
    step *nv = realloc(pl->steps, (pl->n + 1) * sizeof *nv);
    if (!nv) {
      rc = HD_ENOMEM;
      break;
    }
    pl->steps = nv;
    step *s = &pl->steps[pl->n++];
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    s->after_ms = after_s * 1000;
    s->p = (hd__plugin_flags(p) & HD_TRANSPORT_PER_DEVICE) ? p : NULL;
  }
  free(copy);
  return rc;
}

static int add_policy(hd_push *ps, const char *tenant, const char *app, const char *text,
                      int line, char *err, size_t errlen) {
  policy *nv = realloc(ps->pol, (ps->npol + 1) * sizeof *nv);
  if (!nv) return HD_ENOMEM;
  ps->pol = nv;
  policy *pl = &ps->pol[ps->npol++];
  memset(pl, 0, sizeof *pl);
  pl->ps = ps;
  snprintf(pl->tenant, sizeof pl->tenant, "%s", tenant);
  snprintf(pl->app, sizeof pl->app, "%s", app ? app : "");
  char why[300] = "";
  int rc = parse_policy(ps, pl, text, why, sizeof why);
  if (rc == HD_ECONFIG)
    snprintf(err, errlen, "%s:%d: push_policy%s%s of tenant %s: %s", ps->b->cfg.source, line,
             app ? "." : "", app ? app : "", tenant, why);
  return rc;
}

static const policy *policy_for(const hd_push *ps, const char *tenant, const char *app) {
  const policy *def = NULL;
  for (size_t i = 0; i < ps->npol; i++) {
    const policy *pl = &ps->pol[i];
    if (strcmp(pl->tenant, tenant) != 0) continue;
    if (strcmp(pl->app, app) == 0) return pl;
    if (!pl->app[0]) def = pl;
  }
  return def;
}

/* ---- MSISDN ---- */

int hd__push_msisdn_norm(const char *in, char *out, size_t outlen) {
  size_t n = 0;
  if (!in) return HD_EINVAL;
  const char *p = in;
  while (*p == ' ') p++;
  if (*p == '+') p++;
  for (; *p; p++) {
    if (*p >= '0' && *p <= '9') {
      if (n + 1 >= outlen || n >= 15) return HD_EINVAL;
      out[n++] = *p;
    } else if (*p != ' ' && *p != '-' && *p != '(' && *p != ')' && *p != '.') {
      return HD_EINVAL;
    }
  }
  if (n < 5) return HD_EINVAL;
  out[n] = 0;
  return 0;
}

int hd__push_w_msisdn(hd_push *ps, MDB_txn *t, uint64_t dev_num, const char *msisdn) {
  unsigned char kb[8];
  hd_be64(kb, dev_num);
  MDB_val k = {8, kb};
  if (!msisdn || !*msisdn) {
    int rc = mdb_del(t, ps->msisdn, &k, NULL);
    return rc == MDB_NOTFOUND ? 0 : hd_err_from_mdb(rc);
  }
  MDB_val v = {strlen(msisdn), (void *)msisdn};
  return hd_err_from_mdb(mdb_put(t, ps->msisdn, &k, &v, 0));
}

static int also_register(hd_store *s, MDB_txn *t, hd_op *op, int64_t now) {
  (void)s;
  (void)now;
  hd_push *ps;
  memcpy(&ps, op->also_arg, sizeof ps); /* the caller's buffer need not be aligned */
  const char *msisdn = (const char *)op->also_arg + sizeof(hd_push *);
  return hd__push_w_msisdn(ps, t, op->u.reg.dev.dev_num, msisdn);
}

void hd__push_on_register(hd_push *ps, hd_op *op, const char *msisdn) {
  /* also_arg points at a buffer the caller keeps with the op: [hd_push*][msisdn\0]. */
  if (!ps || !msisdn || !*msisdn || !op->also_arg) return;
  memcpy(op->also_arg, &ps, sizeof ps);
  snprintf((char *)op->also_arg + sizeof ps, 24, "%s", msisdn);
  op->also = also_register;
}

static int msisdn_get(hd_push *ps, MDB_txn *t, uint64_t dev_num, char *out, size_t outlen) {
  unsigned char kb[8];
  hd_be64(kb, dev_num);
  MDB_val k = {8, kb}, v;
  int rc = mdb_get(t, ps->msisdn, &k, &v);
  if (rc) return rc == MDB_NOTFOUND ? HD_ENOTFOUND : hd_err_from_mdb(rc);
  if (v.mv_size == 0 || v.mv_size >= outlen) return HD_ENOTFOUND;
  memcpy(out, v.mv_data, v.mv_size);
  out[v.mv_size] = 0;
  return 0;
}

/* ---- the schedule, written with the message ---- */

/* push_sched value: step(1) app_num(4) dev_num(8) cursor(8) tlen(1) tenant */
static int sched_put(hd_push *ps, MDB_txn *t, int64_t due, uint64_t seq, int stepi,
                     uint32_t app_num, uint64_t dev_num, uint64_t cursor, const char *tenant) {
  unsigned char kb[16], vb[22 + MAX_NAME];
  size_t tl = strlen(tenant);
  if (tl > MAX_NAME) return HD_EINVAL;
  hd_be64(kb, (uint64_t)due);
  hd_be64(kb + 8, seq);
  vb[0] = (unsigned char)stepi;
  hd_be32(vb + 1, app_num);
  hd_be64(vb + 5, dev_num);
  hd_be64(vb + 13, cursor);
  vb[21] = (unsigned char)tl;
  memcpy(vb + 22, tenant, tl);
  MDB_val k = {16, kb}, v = {22 + tl, vb};
  return hd_err_from_mdb(mdb_put(t, ps->sched, &k, &v, 0));
}

static int also_publish(hd_store *s, MDB_txn *t, hd_op *op, int64_t now) {
  (void)s;
  (void)now;
  const policy *pl = op->also_arg;
  int i = first_device_step(pl, 0);
  if (i < 0) return 0;
  return sched_put(pl->ps, t, op->u.pub.created_ms + pl->steps[i].after_ms, op->u.pub.seq, i,
                   op->u.pub.app_num, op->u.pub.dev_num, 0, pl->tenant);
}

void hd__push_on_publish(hd_push *ps, const char *tenant, uint32_t tenant_num, const char *appid,
                         hd_op *op) {
  (void)tenant_num;
  if (!ps) return;
  const policy *pl = policy_for(ps, tenant, appid);
  if (!pl || first_device_step(pl, 0) < 0) return;
  op->also = also_publish;
  op->also_arg = (void *)pl; /* policies live as long as the broker */
}

/* ---- per-device deliveries ---- */

typedef struct dctx {
  hd_op op;
  hd_push *ps;
  uint64_t seq, dev_num;
  uint32_t app_num;
  int64_t created_ms;
  int state;               /* DONE_* to record, 0: only drop the queue row */
  char transport[MAX_NAME + 1];
  char tenant[MAX_NAME + 1];
  char **refs;
  size_t nrefs;
} dctx;

static void q_key(unsigned char *kb, uint64_t seq, uint64_t dev_num) {
  hd_be64(kb, seq);
  hd_be64(kb + 8, dev_num);
}

static size_t ref_key(unsigned char *kb, size_t cap, const char *transport, const char *ref) {
  size_t a = strlen(transport), r = strlen(ref);
  if (a + 1 + r > cap) return 0;
  memcpy(kb, transport, a);
  kb[a] = 0;
  memcpy(kb + a + 1, ref, r);
  return a + 1 + r;
}

static int apply_finish(hd_store *s, MDB_txn *t, hd_op *op, int64_t now) {
  (void)s;
  (void)now;
  dctx *c = op->u.fn.arg;
  hd_push *ps = c->ps;
  unsigned char kb[16];
  q_key(kb, c->seq, c->dev_num);
  MDB_val k = {16, kb};
  int rc = mdb_del(t, ps->q, &k, NULL);
  if (rc && rc != MDB_NOTFOUND) return hd_err_from_mdb(rc);
  if (!c->state) return 0;
  /* push_done value: state(1) nrefs(1) ndelivered(1) created(8) app_num(4) transport */
  unsigned char vb[15 + MAX_NAME];
  size_t tl = strlen(c->transport);
  vb[0] = (unsigned char)c->state;
  vb[1] = (unsigned char)(c->nrefs > 255 ? 255 : c->nrefs);
  vb[2] = 0;
  hd_be64(vb + 3, (uint64_t)c->created_ms);
  hd_be32(vb + 11, c->app_num);
  memcpy(vb + 15, c->transport, tl);
  MDB_val v = {15 + tl, vb};
  if ((rc = mdb_put(t, ps->done, &k, &v, 0))) return hd_err_from_mdb(rc);
  for (size_t i = 0; i < c->nrefs; i++) {
    unsigned char rk[512];
    size_t rl = ref_key(rk, sizeof rk, c->transport, c->refs[i]);
    if (!rl) continue;
    MDB_val rkv = {rl, rk}, rv = {16, kb};
    if ((rc = mdb_put(t, ps->refs, &rkv, &rv, 0))) return hd_err_from_mdb(rc);
  }
  return 0;
}

static void dctx_free(dctx *c) {
  for (size_t i = 0; i < c->nrefs; i++) free(c->refs[i]);
  free(c->refs);
  free(c);
}

static void replay_held(hd_push *ps, const char *transport, const char *ref);

static void on_finish_done(hd_op *op) {
  dctx *c = op->u.fn.arg;
  hd_push *ps = c->ps;
  if (op->status)
    hd__log(HD_LOG_ERROR, "push_state_not_stored", "transport=%s id=%llu error=%s",
            c->transport, (unsigned long long)c->seq, hd_err_code(op->status));
  for (size_t i = 0; i < c->nrefs && op->status == 0; i++)
    replay_held(ps, c->transport, c->refs[i]);
  dctx_free(c);
}

static void on_delivery_finish(void *ud, const char *what, const char *reason,
                               const char *const *refs, size_t nrefs) {
  dctx *c = ud;
  hd_push *ps = c->ps;
  (void)reason;
  ps->live--;
  if (strcmp(what, "abandoned") == 0) { /* stopping: the queue row resumes it after restart */
    dctx_free(c);
    return;
  }
  if (strcmp(what, "delivered") == 0) {
    c->state = DONE_SENT;
    if (nrefs) {
      c->refs = calloc(nrefs, sizeof *c->refs);
      for (size_t i = 0; c->refs && i < nrefs; i++)
        if (refs[i] && (c->refs[c->nrefs] = strdup(refs[i]))) c->nrefs++;
    }
  } else if (strcmp(what, "failed") == 0) {
    c->state = DONE_SEND_FAILED; /* a later step may still reach the device */
  }
  if (hd__writer_submit_fn(ps->b->writer, &c->op, apply_finish, c, on_finish_done))
    dctx_free(c); /* stopping: resumes later */
}

typedef struct target {
  uint64_t dev_num;
  char device[HD_STORE_MAX_ID + 1];
  char msisdn[24];
} target;

/* Start one per-device delivery; c is consumed. */
static void start_delivery(hd_push *ps, dctx *c, const char *appid, const hd_store_msg *m,
                           const target *tg) {
  hd_plugin *p = hd__plugins_find(ps->b->plugins, c->transport);
  if (!p || !(hd__plugin_flags(p) & HD_TRANSPORT_PER_DEVICE)) {
    hd__log(HD_LOG_WARN, "push_transport_gone", "transport=%s id=%llu", c->transport,
            (unsigned long long)c->seq);
    dctx_free(c);
    return;
  }
  hd_offer o = {.seq = m->seq,
                .appid = appid,
                .to = tg->device,
                .created_ms = m->created_ms,
                .expires_ms = m->expires_ms,
                .data = m->data,
                .data_len = m->data_len};
  hd_device_target dt = {.device = tg->device, .msisdn = tg->msisdn, .tenant = c->tenant};
  c->created_ms = m->created_ms;
  if (hd__plugin_deliver_device(p, &o, &dt, on_delivery_finish, c) == 0) {
    ps->live++;
    hd__metric_add(ps->m_escalations, 1);
  } else {
    dctx_free(c);
  }
}

static dctx *dctx_new(hd_push *ps, uint64_t seq, uint64_t dev_num, uint32_t app_num,
                      const char *transport, const char *tenant) {
  dctx *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->ps = ps;
  c->seq = seq;
  c->dev_num = dev_num;
  c->app_num = app_num;
  snprintf(c->transport, sizeof c->transport, "%s", transport);
  snprintf(c->tenant, sizeof c->tenant, "%s", tenant);
  return c;
}

/* ---- expansion: a due schedule row becomes queued per-device deliveries ---- */

typedef struct expand {
  hd_op op;
  hd_push *ps;
  unsigned char key[16];
  int64_t due;
  uint64_t seq;
  int stepi, next_stepi;
  int64_t next_due;
  uint32_t app_num;
  uint64_t dev_num, cursor;
  int exhausted;
  char tenant[MAX_NAME + 1];
  char app[HD_STORE_MAX_ID + 1];
  char transport[MAX_NAME + 1];
  hd_store_msg msg;        /* data points at msgdata */
  unsigned char *msgdata;
  target *tg;
  size_t ntg;
} expand;

static void expand_free(expand *x) {
  free(x->msgdata);
  free(x->tg);
  free(x);
}

/* q row value: step(1) app_num(4) tlen(1) tenant nlen(1) transport */
static int apply_expand(hd_store *s, MDB_txn *t, hd_op *op, int64_t now) {
  (void)s;
  (void)now;
  expand *x = op->u.fn.arg;
  hd_push *ps = x->ps;
  int rc;
  for (size_t i = 0; i < x->ntg; i++) {
    unsigned char kb[16], vb[8 + 2 * MAX_NAME];
    size_t tl = strlen(x->tenant), nl = strlen(x->transport);
    q_key(kb, x->seq, x->tg[i].dev_num);
    vb[0] = (unsigned char)x->stepi;
    hd_be32(vb + 1, x->app_num);
    vb[5] = (unsigned char)tl;
    memcpy(vb + 6, x->tenant, tl);
    vb[6 + tl] = (unsigned char)nl;
    memcpy(vb + 7 + tl, x->transport, nl);
    MDB_val k = {16, kb}, v = {7 + tl + nl, vb};
    if ((rc = mdb_put(t, ps->q, &k, &v, 0))) return hd_err_from_mdb(rc);
  }
  MDB_val k = {16, x->key};
  rc = mdb_del(t, ps->sched, &k, NULL);
  if (rc && rc != MDB_NOTFOUND) return hd_err_from_mdb(rc);
  if (!x->exhausted)
    return sched_put(ps, t, x->due, x->seq, x->stepi, x->app_num, x->dev_num, x->cursor,
                     x->tenant);
  if (x->next_stepi >= 0)
    return sched_put(ps, t, x->next_due, x->seq, x->next_stepi, x->app_num, x->dev_num, 0,
                     x->tenant);
  return 0;
}

static void tick_soon(hd_push *ps, uint64_t ms);

static void on_expand_done(hd_op *op) {
  expand *x = op->u.fn.arg;
  hd_push *ps = x->ps;
  ps->busy = 0;
  if (op->status) {
    hd__log(HD_LOG_ERROR, "push_schedule_not_stored", "id=%llu error=%s",
            (unsigned long long)x->seq, hd_err_code(op->status));
    expand_free(x);
    tick_soon(ps, PUSH_TICK_MS);
    return;
  }
  for (size_t i = 0; i < x->ntg && !ps->stopping; i++) {
    dctx *c = dctx_new(ps, x->seq, x->tg[i].dev_num, x->app_num, x->transport, x->tenant);
    if (c) start_delivery(ps, c, x->app, &x->msg, &x->tg[i]);
  }
  expand_free(x);
  tick_soon(ps, 0); /* more may be due */
}

static int done_blocks(hd_push *ps, MDB_txn *t, uint64_t seq, uint64_t dev_num) {
  unsigned char kb[16];
  q_key(kb, seq, dev_num);
  MDB_val k = {16, kb}, v;
  /* Still queued by an earlier step (retrying): one per-device push at a time. */
  if (mdb_get(t, ps->q, &k, &v) == 0) return 1;
  if (mdb_get(t, ps->done, &k, &v) == 0 && v.mv_size >= 1) {
    int st = ((const unsigned char *)v.mv_data)[0];
    return st == DONE_SENT || st == DONE_HANDSET;
  }
  return 0;
}

/* Build the expansion of one schedule row (read side). Returns 1 if x is ready to submit, 0
 * if the row is simply dropped (x->ntg 0, exhausted), or <0 on error. */
static int expand_row(hd_push *ps, MDB_txn *t, const MDB_val *k, const MDB_val *v, int64_t now,
                      expand *x) {
  hd_store *st = ps->b->store;
  memcpy(x->key, k->mv_data, 16);
  x->due = (int64_t)hd_rd64(x->key);
  x->seq = hd_rd64(x->key + 8);
  const unsigned char *vb = v->mv_data;
  if (v->mv_size < 22 || v->mv_size < 22u + vb[21]) return 0;
  x->stepi = vb[0];
  x->app_num = hd_rd32(vb + 1);
  x->dev_num = hd_rd64(vb + 5);
  x->cursor = hd_rd64(vb + 13);
  memcpy(x->tenant, vb + 22, vb[21]);
  x->tenant[vb[21]] = 0;
  x->exhausted = 1;
  x->next_stepi = -1;
  uint32_t tn;
  if (hd__store_r_app_name(st, t, x->app_num, &tn, x->app, sizeof x->app)) return 0;
  const policy *pl = policy_for(ps, x->tenant, x->app);
  if (!pl || x->stepi >= (int)pl->n || !pl->steps[x->stepi].p) return 0; /* policy changed */
  snprintf(x->transport, sizeof x->transport, "%s", pl->steps[x->stepi].name);
  hd_store_msg m;
  if (hd__store_r_msg(st, t, x->app_num, x->dev_num, x->seq, &m) || m.expires_ms <= now)
    return 0; /* acked away or expired: nothing left to push */
  x->msgdata = malloc(m.data_len ? m.data_len : 1);
  if (!x->msgdata) return HD_ENOMEM;
  memcpy(x->msgdata, m.data, m.data_len);
  x->msg = m;
  x->msg.data = x->msgdata;
  x->msg.collapse = NULL;
  x->msg.collapse_len = 0;
  x->next_stepi = first_device_step(pl, (size_t)x->stepi + 1);
  if (x->next_stepi >= 0) x->next_due = m.created_ms + pl->steps[x->next_stepi].after_ms;

  uint64_t devs[PUSH_PAGE];
  size_t n = 0;
  if (x->dev_num) {
    devs[0] = x->dev_num;
    n = 1;
  } else {
    int rc = hd__store_r_app_devs_page(st, t, x->app_num, x->cursor, devs, PUSH_PAGE, &n);
    if (rc) return rc;
    if (n == PUSH_PAGE) {
      x->exhausted = 0;
      x->cursor = devs[n - 1];
    }
  }
  x->tg = calloc(n ? n : 1, sizeof *x->tg);
  if (!x->tg) return HD_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    target *tg = &x->tg[x->ntg];
    if (hd__store_r_is_done(st, t, devs[i], x->app_num, x->seq) != 0) continue;
    if (done_blocks(ps, t, x->seq, devs[i])) continue;
    if (msisdn_get(ps, t, devs[i], tg->msisdn, sizeof tg->msisdn)) continue;
    uint32_t dtn;
    if (hd__store_r_dev_name(st, t, devs[i], &dtn, tg->device, sizeof tg->device)) continue;
    tg->dev_num = devs[i];
    x->ntg++;
  }
  return 1;
}

static void push_tick(hd_push *ps) {
  if (ps->busy || ps->stopping) return;
  int64_t now = hd__now_ms();
  /* Receipts that never found their submit: give up on them. */
  for (held **pp = &ps->held; *pp;) {
    if (now - (*pp)->at_ms > PUSH_HOLD_MS) {
      held *h = *pp;
      *pp = h->next;
      ps->nheld--;
      hd__log(HD_LOG_WARN, "receipt_unmatched", "transport=%s ref=%s state=%d", h->transport,
              h->ref, h->state);
      free(h);
    } else {
      pp = &(*pp)->next;
    }
  }
  MDB_txn *t;
  if (hd__store_rbegin(ps->b->store, &t)) return;
  MDB_cursor *c;
  if (mdb_cursor_open(t, ps->sched, &c)) {
    hd__store_rend(ps->b->store, t);
    return;
  }
  MDB_val k, v;
  int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
  expand *x = NULL;
  if (rc == 0 && k.mv_size == 16 && (int64_t)hd_rd64(k.mv_data) <= now) {
    x = calloc(1, sizeof *x);
    if (x) {
      x->ps = ps;
      int r = expand_row(ps, t, &k, &v, now, x);
      if (r < 0) {
        expand_free(x);
        x = NULL;
      } else if (r == 0) {
        x->ntg = 0;
        x->exhausted = 1;
        x->next_stepi = -1; /* drop the row */
      }
    }
  }
  mdb_cursor_close(c);
  hd__store_rend(ps->b->store, t);
  if (!x) return;
  ps->busy = 1;
  if (hd__writer_submit_fn(ps->b->writer, &x->op, apply_expand, x, on_expand_done)) {
    ps->busy = 0;
    expand_free(x);
  }
}

/* ---- janitor: push_done and push_refs must not grow forever ---- */

typedef struct janitor {
  hd_op op;
  hd_push *ps;
  int64_t cutoff_ms;
  unsigned char cursor[512];
  size_t cursor_len;
  size_t deleted;
} janitor;

#define JANITOR_CHUNK 1000
#define JANITOR_EVERY_MS 60000

static int apply_janitor(hd_store *s, MDB_txn *t, hd_op *op, int64_t now) {
  (void)s;
  (void)now;
  janitor *j = op->u.fn.arg;
  hd_push *ps = j->ps;
  MDB_cursor *c;
  MDB_val k, v;
  int rc = mdb_cursor_open(t, ps->done, &c);
  if (rc) return hd_err_from_mdb(rc);
  /* push_done is keyed by message id, so the oldest rows come first. */
  size_t n = 0;
  for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0 && n < JANITOR_CHUNK;
       rc = mdb_cursor_get(c, &k, &v, MDB_NEXT), n++) {
    if (v.mv_size < 11 || (int64_t)hd_rd64((const unsigned char *)v.mv_data + 3) >= j->cutoff_ms)
      break;
    if ((rc = mdb_cursor_del(c, 0))) break;
    j->deleted++;
  }
  mdb_cursor_close(c);
  if (rc && rc != MDB_NOTFOUND) return hd_err_from_mdb(rc);
  /* A ref whose receipt never came: drop it once its push_done row is gone. */
  if ((rc = mdb_cursor_open(t, ps->refs, &c))) return hd_err_from_mdb(rc);
  k.mv_size = j->cursor_len;
  k.mv_data = j->cursor;
  rc = j->cursor_len ? mdb_cursor_get(c, &k, &v, MDB_SET_RANGE)
                     : mdb_cursor_get(c, &k, &v, MDB_FIRST);
  for (n = 0; rc == 0 && n < JANITOR_CHUNK; n++) {
    MDB_val dv;
    MDB_val dk = {16, v.mv_data};
    if (v.mv_size != 16 || mdb_get(t, ps->done, &dk, &dv) == MDB_NOTFOUND) {
      if ((rc = mdb_cursor_del(c, 0))) break;
      j->deleted++;
      rc = mdb_cursor_get(c, &k, &v, MDB_GET_CURRENT);
      if (rc == MDB_NOTFOUND || rc == EINVAL) rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
      continue;
    }
    rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
  }
  j->cursor_len = 0;
  if (rc == 0 && k.mv_size <= sizeof j->cursor) {
    memcpy(j->cursor, k.mv_data, k.mv_size);
    j->cursor_len = k.mv_size;
  }
  mdb_cursor_close(c);
  return rc && rc != MDB_NOTFOUND ? hd_err_from_mdb(rc) : 0;
}

static void on_janitor_done(hd_op *op) {
  janitor *j = op->u.fn.arg;
  j->ps->janitor_busy = 0;
  if (op->status == 0) {
    memcpy(j->ps->refs_cursor, j->cursor, j->cursor_len);
    j->ps->refs_cursor_len = j->cursor_len;
    if (j->deleted) hd__log(HD_LOG_DEBUG, "push_janitor", "deleted=%zu", j->deleted);
  }
  free(j);
}

static void janitor_maybe(hd_push *ps, int64_t now) {
  if (ps->janitor_busy || now < ps->next_janitor_ms) return;
  ps->next_janitor_ms = now + JANITOR_EVERY_MS;
  janitor *j = calloc(1, sizeof *j);
  if (!j) return;
  j->ps = ps;
  j->cutoff_ms = now - ps->keep_ms;
  memcpy(j->cursor, ps->refs_cursor, ps->refs_cursor_len);
  j->cursor_len = ps->refs_cursor_len;
  ps->janitor_busy = 1;
  if (hd__writer_submit_fn(ps->b->writer, &j->op, apply_janitor, j, on_janitor_done)) {
    ps->janitor_busy = 0;
    free(j);
  }
}

static void on_timer(uv_timer_t *tm) {
  hd_push *ps = tm->data;
  janitor_maybe(ps, hd__now_ms());
  push_tick(ps);
  if (!ps->stopping && !ps->busy) uv_timer_start(&ps->timer, on_timer, PUSH_TICK_MS, 0);
}

static void tick_soon(hd_push *ps, uint64_t ms) {
  if (ps->stopping || !ps->timer_live) return;
  uv_timer_start(&ps->timer, on_timer, ms, 0);
}

/* ---- receipts ---- */

typedef struct rctx {
  hd_op op;
  hd_push *ps;
  int state;               /* the receipt's HD_RECEIPT_* */
  int newstate;            /* result: DONE_* after it, 0 if unchanged */
  uint64_t seq, dev_num;
  uint32_t app_num;
  unsigned char refkey[512];
  size_t refkey_len;
  char transport[MAX_NAME + 1];
  char detail[160];
} rctx;

static int apply_receipt(hd_store *s, MDB_txn *t, hd_op *op, int64_t now) {
  (void)s;
  (void)now;
  rctx *c = op->u.fn.arg;
  hd_push *ps = c->ps;
  unsigned char kb[16];
  q_key(kb, c->seq, c->dev_num);
  MDB_val k = {16, kb}, v;
  int rc = mdb_get(t, ps->done, &k, &v);
  if (rc) return rc == MDB_NOTFOUND ? 0 : hd_err_from_mdb(rc);
  if (v.mv_size < 15) return 0;
  unsigned char vb[15 + MAX_NAME + 1];
  size_t vl = v.mv_size > sizeof vb ? sizeof vb : v.mv_size;
  memcpy(vb, v.mv_data, vl);
  c->app_num = hd_rd32(vb + 11);
  if (vb[0] == DONE_SENT) {
    if (c->state == HD_RECEIPT_DELIVERED) {
      if (vb[2] < 255) vb[2]++;
      if (vb[2] >= vb[1]) vb[0] = DONE_HANDSET;
    } else {
      vb[0] = DONE_CARRIER_FAILED;
    }
    if (vb[0] != DONE_SENT) c->newstate = vb[0];
    MDB_val nv = {vl, vb};
    if ((rc = mdb_put(t, ps->done, &k, &nv, 0))) return hd_err_from_mdb(rc);
  }
  MDB_val rk = {c->refkey_len, c->refkey};
  rc = mdb_del(t, ps->refs, &rk, NULL);
  return rc && rc != MDB_NOTFOUND ? hd_err_from_mdb(rc) : 0;
}

static void on_receipt_done(hd_op *op) {
  rctx *c = op->u.fn.arg;
  hd_push *ps = c->ps;
  if (op->status == 0 && c->newstate) {
    MDB_txn *t;
    char app[HD_STORE_MAX_ID + 1] = "?", device[HD_STORE_MAX_ID + 1] = "?";
    uint32_t tn = 0;
    if (hd__store_rbegin(ps->b->store, &t) == 0) {
      uint32_t dtn;
      hd__store_r_app_name(ps->b->store, t, c->app_num, &tn, app, sizeof app);
      hd__store_r_dev_name(ps->b->store, t, c->dev_num, &dtn, device, sizeof device);
      hd__store_rend(ps->b->store, t);
    }
    const char *what = c->newstate == DONE_HANDSET ? "delivered"
                       : c->state == HD_RECEIPT_EXPIRED ? "expired" : "failed";
    /* The tenant name is in the queue row of the policy; find it through the app's tenant. */
    const char *tenant = NULL;
    for (size_t i = 0; i < ps->npol && !tenant; i++) {
      hd_tenant *tt = hd__tenant_by_name(&ps->b->tenants, ps->pol[i].tenant);
      if (tt && tt->num == tn) tenant = tt->name;
    }
    hd__events_receipt(ps->b->events, c->transport, tenant, c->seq, app, device, what,
                       c->detail[0] ? c->detail : NULL);
    hd__log(HD_LOG_INFO, "push_receipt", "transport=%s id=%llu device=%s state=%s",
            c->transport, (unsigned long long)c->seq, device, what);
  }
  free(c);
}

/* 0 if the ref is known (an op was queued), HD_ENOTFOUND if not (yet). */
static int receipt_apply(hd_push *ps, const char *transport, const char *ref, int state,
                         const char *detail) {
  rctx *c = calloc(1, sizeof *c);
  if (!c) return HD_ENOMEM;
  c->refkey_len = ref_key(c->refkey, sizeof c->refkey, transport, ref);
  if (!c->refkey_len) {
    free(c);
    return HD_EINVAL;
  }
  MDB_txn *t;
  int rc = hd__store_rbegin(ps->b->store, &t);
  if (rc) {
    free(c);
    return rc;
  }
  MDB_val k = {c->refkey_len, c->refkey}, v;
  rc = mdb_get(t, ps->refs, &k, &v);
  if (rc == 0 && v.mv_size == 16) {
    c->seq = hd_rd64(v.mv_data);
    c->dev_num = hd_rd64((const unsigned char *)v.mv_data + 8);
  }
  hd__store_rend(ps->b->store, t);
  if (rc || v.mv_size != 16) {
    free(c);
    return HD_ENOTFOUND;
  }
  c->ps = ps;
  c->state = state;
  snprintf(c->transport, sizeof c->transport, "%s", transport);
  snprintf(c->detail, sizeof c->detail, "%s", detail ? detail : "");
  if ((rc = hd__writer_submit_fn(ps->b->writer, &c->op, apply_receipt, c, on_receipt_done)))
    free(c);
  return rc;
}

int hd__push_receipt(hd_push *ps, const char *transport, const char *ref, int state,
                     const char *detail) {
  if (!ps) return HD_EINVAL;
  hd__metric_add(ps->m_receipts, 1);
  int rc = receipt_apply(ps, transport, ref, state, detail);
  if (rc != HD_ENOTFOUND) return rc == HD_EINVAL ? rc : 0;
  /* The submit this receipt belongs to is not committed yet (a receipt may overtake the
   * submit_sm_resp): hold it until it is, or for PUSH_HOLD_MS. */
  held *h = calloc(1, sizeof *h);
  if (!h) return HD_ENOMEM;
  h->at_ms = hd__now_ms();
  h->state = state;
  snprintf(h->transport, sizeof h->transport, "%s", transport);
  snprintf(h->ref, sizeof h->ref, "%s", ref);
  snprintf(h->detail, sizeof h->detail, "%s", detail ? detail : "");
  h->next = ps->held;
  ps->held = h;
  if (++ps->nheld > PUSH_HOLD_MAX) {
    held **pp = &ps->held; /* drop the oldest: the list's tail */
    while ((*pp)->next) pp = &(*pp)->next;
    free(*pp);
    *pp = NULL;
    ps->nheld--;
  }
  return 0;
}

static void replay_held(hd_push *ps, const char *transport, const char *ref) {
  for (held **pp = &ps->held; *pp;) {
    held *h = *pp;
    if (strcmp(h->transport, transport) == 0 && strcmp(h->ref, ref) == 0 &&
        receipt_apply(ps, h->transport, h->ref, h->state, h->detail) == 0) {
      *pp = h->next;
      ps->nheld--;
      free(h);
    } else {
      pp = &h->next;
    }
  }
}

/* ---- GET /v1/apps/{appid}/messages/{id}/deliveries (publish key) ---- */

static const char *done_state_name(int st) {
  switch (st) {
  case DONE_SENT: return "sent";
  case DONE_HANDSET: return "delivered";
  case DONE_CARRIER_FAILED: return "failed";
  case DONE_SEND_FAILED: return "send_failed";
  }
  return "unknown";
}

/* Walk one table's rows of message seq (keys seq·dev) and add {device, transport, state}. */
static int list_rows(hd_push *ps, MDB_txn *t, MDB_dbi dbi, int queued, uint64_t seq,
                     uint32_t app_num, json_t *arr) {
  MDB_cursor *c;
  int rc = mdb_cursor_open(t, dbi, &c);
  if (rc) return hd_err_from_mdb(rc);
  unsigned char kb[16];
  q_key(kb, seq, 0);
  MDB_val k = {16, kb}, v;
  size_t n = 0;
  for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0 && n < 10000;
       rc = mdb_cursor_get(c, &k, &v, MDB_NEXT), n++) {
    if (k.mv_size != 16 || hd_rd64(k.mv_data) != seq) break;
    const unsigned char *vb = v.mv_data;
    char transport[MAX_NAME + 1] = "", device[HD_STORE_MAX_ID + 1];
    uint32_t row_app, dtn;
    const char *state;
    if (queued) { /* step(1) app(4) tlen(1) tenant nlen(1) transport */
      if (v.mv_size < 7 || v.mv_size < 7u + vb[5] + vb[6 + vb[5]]) continue;
      row_app = hd_rd32(vb + 1);
      size_t nl = vb[6 + vb[5]];
      memcpy(transport, vb + 7 + vb[5], nl > MAX_NAME ? MAX_NAME : nl);
      transport[nl > MAX_NAME ? MAX_NAME : nl] = 0;
      state = "pending";
    } else { /* state(1) nrefs(1) ndelivered(1) created(8) app(4) transport */
      if (v.mv_size < 15) continue;
      row_app = hd_rd32(vb + 11);
      size_t nl = v.mv_size - 15 > MAX_NAME ? MAX_NAME : v.mv_size - 15;
      memcpy(transport, vb + 15, nl);
      transport[nl] = 0;
      state = done_state_name(vb[0]);
    }
    if (row_app != app_num) continue;
    if (hd__store_r_dev_name(ps->b->store, t, hd_rd64((const unsigned char *)k.mv_data + 8), &dtn,
                             device, sizeof device))
      continue;
    json_array_append_new(arr, json_pack("{s:s, s:s, s:s}", "device", device, "transport",
                                         transport, "state", state));
  }
  mdb_cursor_close(c);
  return rc && rc != MDB_NOTFOUND ? hd_err_from_mdb(rc) : 0;
}

static void h_deliveries(void *ud, hd_http_req *r) {
  hd_push *ps = ud;
  hd_broker *b = ps->b;
  const char *appid = hd__http_param(r, "appid"), *ids = hd__http_param(r, "id");
  const char *key = hd__http_bearer(r);
  hd_tenant *tn = key ? hd__tenant_by_key(&b->tenants, key) : NULL;
  if (!tn) {
    hd__http_reply_error(r, HD_EAUTH, "wrong or missing publish key");
    return;
  }
  char *end = NULL;
  unsigned long long seq = ids ? strtoull(ids, &end, 10) : 0;
  if (!ids || !*ids || *end || seq == 0) {
    hd__http_reply_error(r, HD_EINVAL, "message id must be a positive decimal number");
    return;
  }
  MDB_txn *t;
  int rc = hd__store_rbegin(b->store, &t);
  if (rc) {
    hd__http_reply_error(r, rc, NULL);
    return;
  }
  uint32_t app_num;
  json_t *arr = json_array();
  /* Another tenant's app is "no such app", like an unknown one: nothing is revealed. */
  rc = hd__store_r_app_num(b->store, t, tn->num, appid, &app_num);
  if (rc == 0) rc = list_rows(ps, t, ps->done, 0, seq, app_num, arr);
  if (rc == 0) rc = list_rows(ps, t, ps->q, 1, seq, app_num, arr);
  hd__store_rend(b->store, t);
  if (rc) {
    json_decref(arr);
    hd__http_reply_error(r, rc, rc == HD_ENOTFOUND ? "no such app" : NULL);
    return;
  }
  json_t *j = json_pack("{s:s, s:o}", "id", ids, "deliveries", arr);
  char *body = json_dumps(j, JSON_COMPACT);
  json_decref(j);
  if (!body) {
    hd__http_reply_error(r, HD_ENOMEM, NULL);
    return;
  }
  hd__http_reply(r, 200, "application/json", body, strlen(body));
  free(body);
}

/* ---- lifecycle ---- */

static double g_live(void *ud) { return (double)((hd_push *)ud)->live; }
static double g_held(void *ud) { return (double)((hd_push *)ud)->nheld; }

size_t hd__push_queued(const hd_push *ps) { return ps ? ps->live : 0; }

int hd__push_init(hd_broker *b, hd_push **out, char *err, size_t errlen) {
  hd_push *ps = calloc(1, sizeof *ps);
  if (!ps) return HD_ENOMEM;
  ps->b = b;
  /* A message lives at most max_ttl; its push state a day longer, for late receipts. */
  ps->keep_ms = (b->cfg.store.max_ttl_s + 86400) * 1000;
  ps->next_janitor_ms = hd__now_ms() + JANITOR_EVERY_MS;
  *out = ps;
  int rc = 0;
  for (size_t i = 0; i < b->cfg.ntenants && !rc; i++) {
    const hd_tenant_conf *tc = &b->cfg.tenants[i];
    if (tc->push_policy)
      rc = add_policy(ps, tc->name, NULL, tc->push_policy, tc->line, err, errlen);
    for (size_t j = 0; j < tc->napp_policies && !rc; j++)
      rc = add_policy(ps, tc->name, tc->app_policies[j].key, tc->app_policies[j].value,
                      tc->app_policies[j].line, err, errlen);
  }
  if (rc) return rc;
  hd_store *st = b->store;
  if ((rc = hd__store_dbi(st, "push_sched", &ps->sched)) ||
      (rc = hd__store_dbi(st, "push_q", &ps->q)) ||
      (rc = hd__store_dbi(st, "push_done", &ps->done)) ||
      (rc = hd__store_dbi(st, "push_refs", &ps->refs)) ||
      (rc = hd__store_dbi(st, "dev_msisdn", &ps->msisdn))) {
    snprintf(err, errlen, "push tables: %s", hd_strerror(rc));
    return rc;
  }
  ps->m_receipts = hd__metric_new(b->metrics, "herald_push_receipts_total",
                                  "Carrier delivery receipts received", 0, NULL);
  ps->m_escalations = hd__metric_new(b->metrics, "herald_push_device_deliveries_total",
                                     "Per-device pushes (SMS, WAP Push) started by the policy",
                                     0, NULL);
  hd__metric_fn(b->metrics, "herald_push_device_inflight",
                "Per-device pushes in a transport's hands or waiting for a retry", NULL, g_live,
                ps);
  hd__metric_fn(b->metrics, "herald_push_receipts_held",
                "Receipts waiting for the submit they belong to", NULL, g_held, ps);
  if ((rc = hd__http_route(b->http, "GET", "/v1/apps/{appid}/messages/{id}/deliveries",
                           h_deliveries, ps))) {
    snprintf(err, errlen, "push routes: %s", hd_strerror(rc));
    return rc;
  }
  return 0;
}

/* Resume every queued per-device delivery (after a restart). */
static int resume_queue(hd_push *ps) {
  MDB_txn *t;
  int rc = hd__store_rbegin(ps->b->store, &t);
  if (rc) return rc;
  MDB_cursor *c;
  if ((rc = mdb_cursor_open(t, ps->q, &c))) {
    hd__store_rend(ps->b->store, t);
    return hd_err_from_mdb(rc);
  }
  MDB_val k, v;
  size_t resumed = 0, nstale = 0;
  dctx **stale = NULL;
  int64_t now = hd__now_ms();
  for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
    const unsigned char *vb = v.mv_data;
    if (k.mv_size != 16 || v.mv_size < 7 || v.mv_size < 7u + vb[5] + vb[6 + vb[5]]) continue;
    uint64_t seq = hd_rd64(k.mv_data), dev_num = hd_rd64((const unsigned char *)k.mv_data + 8);
    uint32_t app_num = hd_rd32(vb + 1);
    char tenant[MAX_NAME + 1], transport[MAX_NAME + 1], app[HD_STORE_MAX_ID + 1];
    size_t tl = vb[5], nl = vb[6 + tl];
    if (tl > MAX_NAME || nl > MAX_NAME) continue;
    memcpy(tenant, vb + 6, tl);
    tenant[tl] = 0;
    memcpy(transport, vb + 7 + tl, nl);
    transport[nl] = 0;
    target tg = {.dev_num = dev_num};
    uint32_t tn;
    hd_store_msg m;
    hd_store *st = ps->b->store;
    /* The row does not say whether the message went to the app or to the device: try both. */
    int gone = hd__store_r_app_name(st, t, app_num, &tn, app, sizeof app) != 0 ||
               (hd__store_r_msg(st, t, app_num, 0, seq, &m) != 0 &&
                hd__store_r_msg(st, t, app_num, dev_num, seq, &m) != 0) ||
               m.expires_ms <= now || hd__store_r_is_done(st, t, dev_num, app_num, seq) == 1 ||
               msisdn_get(ps, t, dev_num, tg.msisdn, sizeof tg.msisdn) != 0 ||
               hd__store_r_dev_name(st, t, dev_num, &tn, tg.device, sizeof tg.device) != 0;
    if (gone) {
      /* Acked, expired, or the device lost its MSISDN while we were down: drop the row. */
      dctx *d = dctx_new(ps, seq, dev_num, app_num, transport, tenant);
      if (d && (stale = realloc(stale, (nstale + 1) * sizeof *stale))) stale[nstale++] = d;
      else if (d) dctx_free(d);
      continue;
    }
    dctx *d = dctx_new(ps, seq, dev_num, app_num, transport, tenant);
    if (d) {
      start_delivery(ps, d, app, &m, &tg);
      resumed++;
    }
  }
  mdb_cursor_close(c);
  hd__store_rend(ps->b->store, t);
  for (size_t i = 0; i < nstale; i++) {
    /* apply_finish with state 0: only drops the queue row */
    if (hd__writer_submit_fn(ps->b->writer, &stale[i]->op, apply_finish, stale[i],
                             on_finish_done))
      dctx_free(stale[i]);
  }
  free(stale);
  if (resumed || nstale)
    hd__log(HD_LOG_INFO, "push_resumed", "deliveries=%zu dropped=%zu", resumed, nstale);
  return 0;
}

int hd__push_start(hd_push *ps) {
  if (!ps) return 0;
  int rc = uv_timer_init(ps->b->loop, &ps->timer);
  if (rc) return hd_err_from_uv(rc);
  ps->timer.data = ps;
  ps->timer_live = 1;
  if ((rc = resume_queue(ps))) return rc;
  uv_timer_start(&ps->timer, on_timer, 0, 0);
  return 0;
}

void hd__push_stop(hd_push *ps) {
  if (!ps || ps->stopping) return;
  ps->stopping = 1;
  if (ps->timer_live) {
    uv_timer_stop(&ps->timer);
    uv_close((uv_handle_t *)&ps->timer, NULL);
  }
}

void hd__push_free(hd_push *ps) {
  if (!ps) return;
  for (size_t i = 0; i < ps->npol; i++) free(ps->pol[i].steps);
  free(ps->pol);
  while (ps->held) {
    held *h = ps->held;
    ps->held = h->next;
    free(h);
  }
  free(ps);
}
