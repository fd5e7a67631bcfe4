/* smpp_pool.c — the shared SMSC links, the part queue, receipts and MO (see smpp_pool.h). */
#include "smpp_pool.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "codec/sms_codec.h"
#include "smpp_receipt.h"

#define MAX_USERS 4
#define MAX_THROTTLES 20         /* a part throttled this often fails back to the broker */
#define OWNER_SLOTS 16384        /* recent refs → which transport submitted them */
#define HOLD_MS 30000            /* a receipt of unknown owner waits this long for its submit */
#define HOLD_MAX 2000
#define MO_GROUPS 32             /* concatenated MO messages being reassembled */
#define MO_MAX_AGE_MS (10 * 60 * 1000)

typedef struct slink {
  hd_smpp_pool *pool;
  int idx;
  hd_smpp_conf conf;
  hd_smpp_session *s[2];
  int ns;
  int bound;
  hd_metric *m_bound, *m_window, *m_submits, *m_rejected, *m_throttled, *m_timeouts, *m_lost,
      *m_bind_fail, *m_receipts, *m_mo, *m_connects;
} slink;

struct hd_smpp_user {
  hd_smpp_pool *pool;
  const hd_host *h;
  hd_plugin *p;
  int slot;
  int stopped;
};

typedef struct mo_group {
  int used;
  char from[21], to[21];
  uint16_t ref;
  uint8_t total, have, dcs;
  uint64_t t;
  uint8_t *part[HD_SMS_MAX_PARTS];
  uint16_t len[HD_SMS_MAX_PARTS];
} mo_group;

/* A receipt that overtook its submit_sm_resp while several transports share the links: which
 * of them submitted it is known only once the resp comes (the broker matches receipts per
 * transport). */
typedef struct held_receipt {
  struct held_receipt *next;
  uint64_t at;
  int state;
  char ref[HD_SMPP_REF_MAX];
  char detail[64];
} held_receipt;

struct hd_smpp_pool {
  uv_loop_t *loop;
  const hd_host *h; /* the first user's: logs and link metrics */
  hd_plugin *p;
  slink *links;
  int nlinks;
  hd_smpp_user *users[MAX_USERS];
  int nusers, nactive;
  int started, stopping, sessions_open;
  uv_timer_t timer;
  int timer_open;
  hd_smpp_part *qhead, *qtail;
  size_t nqueued;
  unsigned rr;
  uint8_t ref;
  int pumping, pump_again;
  struct {
    uint64_t hash;
    int user;
  } owners[OWNER_SLOTS];
  mo_group mo[MO_GROUPS];
  held_receipt *held;
  size_t nheld;
  hd_metric *m_queue;
};

static hd_smpp_pool *g_pool;

/* ---- small helpers ---- */
static void madd(hd_smpp_pool *pl, hd_metric *m, double d) {
  if (m) pl->h->metric_add(m, d);
}
static void mset(hd_smpp_pool *pl, hd_metric *m, double v) {
  if (m) pl->h->metric_set(m, v);
}

static uint64_t fnv(const char *s) {
  uint64_t h = 1469598103934665603ull;
  for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
  return h | 1; /* 0 marks an empty slot */
}

int hd_smpp_parse_ms(const char *v, int64_t *out) {
  if (!v) return -1;
  char *end;
  double d = strtod(v, &end);
  if (end == v || d < 0 || d > 1e12) return -1;
  while (*end == ' ') end++;
  double mult = 1000;
  if (!*end || strcmp(end, "s") == 0) mult = 1000;
  else if (strcmp(end, "ms") == 0) mult = 1;
  else if (strcmp(end, "m") == 0) mult = 60000;
  else if (strcmp(end, "h") == 0) mult = 3600000;
  else return -1;
  *out = (int64_t)(d * mult + 0.5);
  return 0;
}

static void pump(hd_smpp_pool *pl);

/* ---- config ---- */
__attribute__((format(printf, 4, 5))) static int conf_error(const hd_host *h, hd_plugin *p,
                                                            const char *name, const char *fmt,
                                                            ...) {
  char why[400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, sizeof why, fmt, ap);
  va_end(ap);
  h->log(p, HD_LOG_ERROR, "bad_config", "section=\"smsc %s\" reason=\"%s\"", name, why);
  return HD_ECONFIG;
}

static int str_key(const hd_host *h, hd_plugin *p, const char *name, const char *key,
                   const char *def, char *out, size_t cap, int required) {
  const char *v = h->section_str(p, "smsc", name, key, def);
  if (!v) {
    if (required) return conf_error(h, p, name, "%s is required", key);
    *out = 0;
    return 0;
  }
  /* libsmpp34 would cut an over-long value silently; refuse it here instead. */
  if (strlen(v) >= cap)
    return conf_error(h, p, name, "%s is longer than %zu characters", key, cap - 1);
  snprintf(out, cap, "%s", v);
  return 0;
}

static int int_key(const hd_host *h, hd_plugin *p, const char *name, const char *key,
                   int64_t def, int64_t lo, int64_t hi, int64_t *out) {
  if (h->section_int(p, "smsc", name, key, def, out) != 0 || *out < lo || *out > hi)
    return conf_error(h, p, name, "%s must be a number from %lld to %lld", key, (long long)lo,
                      (long long)hi);
  return 0;
}

static int ms_key(const hd_host *h, hd_plugin *p, const char *name, const char *key,
                  const char *def, int64_t lo, int64_t *out) {
  const char *v = h->section_str(p, "smsc", name, key, def);
  if (hd_smpp_parse_ms(v, out) != 0 || *out < lo)
    return conf_error(h, p, name, "%s must be a duration (e.g. 500ms, 10s, 1m) of at least "
                      "%lldms", key, (long long)lo);
  return 0;
}

static int read_conf(const hd_host *h, hd_plugin *p, const char *name, hd_smpp_conf *c) {
  int64_t v;
  memset(c, 0, sizeof *c);
  snprintf(c->name, sizeof c->name, "%s", name);
  if (str_key(h, p, name, "host", NULL, c->host, sizeof c->host, 1) ||
      int_key(h, p, name, "port", 2775, 1, 65535, &v))
    return HD_ECONFIG;
  c->port = (int)v;
  if (str_key(h, p, name, "system_id", NULL, c->system_id, sizeof c->system_id, 1) ||
      str_key(h, p, name, "password", "", c->password, sizeof c->password, 0) ||
      str_key(h, p, name, "system_type", "", c->system_type, sizeof c->system_type, 0) ||
      str_key(h, p, name, "source_addr", "", c->source_addr, sizeof c->source_addr, 0))
    return HD_ECONFIG;
  const char *bind = h->section_str(p, "smsc", name, "bind", "transceiver");
  if (strcmp(bind, "transceiver") == 0) c->split_bind = 0;
  else if (strcmp(bind, "transmitter+receiver") == 0) c->split_bind = 1;
  else
    return conf_error(h, p, name, "bind must be transceiver or transmitter+receiver, not '%s'",
                      bind);
  if (int_key(h, p, name, "window", 10, 1, 1000, &v)) return HD_ECONFIG;
  c->window = (int)v;
  const char *rate = h->section_str(p, "smsc", name, "rate", "0");
  char *end;
  c->rate = strtod(rate, &end);
  if (end == rate || *end || c->rate < 0 || c->rate > 100000)
    return conf_error(h, p, name, "rate must be submits per second (0 = unlimited), not '%s'",
                      rate);
  if (ms_key(h, p, name, "enquire_link", "30s", 0, &c->enquire_ms) ||
      ms_key(h, p, name, "response_timeout", "30s", 10, &c->response_ms) ||
      ms_key(h, p, name, "reconnect_min", "1s", 10, &c->reconnect_min_ms) ||
      ms_key(h, p, name, "reconnect_max", "60s", 10, &c->reconnect_max_ms) ||
      ms_key(h, p, name, "throttle_backoff", "1s", 1, &c->throttle_ms))
    return HD_ECONFIG;
  if (c->reconnect_max_ms < c->reconnect_min_ms) c->reconnect_max_ms = c->reconnect_min_ms;
  /* Source TON/NPI follow the address unless set: digits are an international number (1/1),
   * anything else an alphanumeric sender (5/0), none the SMSC's default (0/0). */
  int digits = *c->source_addr != 0, alnum = *c->source_addr != 0;
  for (const char *s = c->source_addr; *s; s++)
    if (!isdigit((unsigned char)*s)) digits = 0;
  int64_t dton = digits ? 1 : alnum ? 5 : 0, dnpi = digits ? 1 : 0;
  if (int_key(h, p, name, "source_ton", dton, 0, 255, &v)) return HD_ECONFIG;
  c->source_ton = (uint8_t)v;
  if (int_key(h, p, name, "source_npi", dnpi, 0, 255, &v)) return HD_ECONFIG;
  c->source_npi = (uint8_t)v;
  if (int_key(h, p, name, "dest_ton", 1, 0, 255, &v)) return HD_ECONFIG;
  c->dest_ton = (uint8_t)v;
  if (int_key(h, p, name, "dest_npi", 1, 0, 255, &v)) return HD_ECONFIG;
  c->dest_npi = (uint8_t)v;
  if (int_key(h, p, name, "registered_delivery", 1, 0, 255, &v)) return HD_ECONFIG;
  c->registered_delivery = (uint8_t)v;
  const char *tls = h->section_str(p, "smsc", name, "tls", "no");
  if (strcmp(tls, "no") != 0)
    return conf_error(h, p, name, "tls: only 'no' is supported (use a TLS tunnel such as "
                      "stunnel on loopback for an SMSC that needs TLS)");
  const char *idt = h->section_str(p, "smsc", name, "msg_id_type", "auto");
  if (hd_smpp_id_type_parse(idt, &c->id_type) != 0)
    return conf_error(h, p, name, "msg_id_type must be auto, hex, dec, hex_dec or dec_hex");
  return 0;
}

/* ---- metrics ---- */
static hd_metric *link_metric(hd_smpp_pool *pl, slink *l, const char *what, const char *help,
                              int type) {
  char name[200], mn[80];
  size_t n = 0;
  for (const char *s = l->conf.name; *s && n + 1 < sizeof mn; s++)
    mn[n++] = isalnum((unsigned char)*s) ? *s : '_';
  mn[n] = 0;
  snprintf(name, sizeof name, "smsc_%s_%s", mn, what);
  return pl->h->metric_new(pl->p, name, help, type);
}

static void link_metrics(hd_smpp_pool *pl, slink *l) {
  l->m_bound = link_metric(pl, l, "bound", "Sessions bound to this SMSC (1 per bind)",
                           HD_METRIC_GAUGE);
  l->m_window = link_metric(pl, l, "window", "submit_sm waiting for their response",
                            HD_METRIC_GAUGE);
  l->m_submits = link_metric(pl, l, "submits_total", "submit_sm the SMSC accepted",
                             HD_METRIC_COUNTER);
  l->m_rejected = link_metric(pl, l, "rejected_total",
                              "submit_sm refused with an error status (not throttling)",
                              HD_METRIC_COUNTER);
  l->m_throttled = link_metric(pl, l, "throttled_total",
                               "submit_sm answered ESME_RTHROTTLED or ESME_RMSGQFUL (sent again)",
                               HD_METRIC_COUNTER);
  l->m_timeouts = link_metric(pl, l, "timeouts_total", "submit_sm never answered in time",
                              HD_METRIC_COUNTER);
  l->m_lost = link_metric(pl, l, "lost_total",
                          "submit_sm outstanding when the link dropped (resent by the broker)",
                          HD_METRIC_COUNTER);
  l->m_bind_fail = link_metric(pl, l, "bind_failures_total",
                               "Binds the SMSC refused (wrong password, system_id, ...)",
                               HD_METRIC_COUNTER);
  l->m_receipts = link_metric(pl, l, "receipts_total", "Delivery receipts received",
                              HD_METRIC_COUNTER);
  l->m_mo = link_metric(pl, l, "mo_total", "Mobile-originated messages received",
                        HD_METRIC_COUNTER);
  l->m_connects = link_metric(pl, l, "connects_total", "TCP connection attempts",
                              HD_METRIC_COUNTER);
}

/* ---- session events ---- */
__attribute__((format(printf, 5, 6))) static void s_log(void *ud, hd_smpp_session *s, int level,
                                                        const char *event, const char *fmt,
                                                        ...) {
  slink *l = ud;
  char buf[1500];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  l->pool->h->log(l->pool->p, level, event, "smsc=%s %s", l->conf.name, buf);
}

static void update_window(slink *l) {
  int n = 0;
  for (int i = 0; i < l->ns; i++) n += hd_smpp_session_outstanding(l->s[i]);
  mset(l->pool, l->m_window, n);
}

static void s_state(void *ud, hd_smpp_session *s, int state, uint32_t status) {
  slink *l = ud;
  hd_smpp_pool *pl = l->pool;
  int bound = 0;
  for (int i = 0; i < l->ns; i++)
    if (l->s[i] && hd_smpp_session_state(l->s[i]) == HD_SMPP_BOUND) bound++;
  l->bound = bound;
  mset(pl, l->m_bound, bound);
  if (state == HD_SMPP_CONNECTING) madd(pl, l->m_connects, 1);
  if (state == HD_SMPP_DOWN && status) madd(pl, l->m_bind_fail, 1);
  if (state == HD_SMPP_BOUND) pump(pl);
}

static void s_ready(void *ud, hd_smpp_session *s) {
  slink *l = ud;
  update_window(l);
  pump(l->pool);
}

static void queue_front(hd_smpp_pool *pl, hd_smpp_part *pt) {
  pt->prev = NULL;
  pt->next = pl->qhead;
  if (pl->qhead) pl->qhead->prev = pt;
  else pl->qtail = pt;
  pl->qhead = pt;
  pt->queued = 1;
  pl->nqueued++;
}

static void queue_back(hd_smpp_pool *pl, hd_smpp_part *pt) {
  pt->next = NULL;
  pt->prev = pl->qtail;
  if (pl->qtail) pl->qtail->next = pt;
  else pl->qhead = pt;
  pl->qtail = pt;
  pt->queued = 1;
  pl->nqueued++;
}

static void unqueue(hd_smpp_pool *pl, hd_smpp_part *pt) {
  if (pt->prev) pt->prev->next = pt->next;
  else pl->qhead = pt->next;
  if (pt->next) pt->next->prev = pt->prev;
  else pl->qtail = pt->prev;
  pt->prev = pt->next = NULL;
  pt->queued = 0;
  pl->nqueued--;
}

static void remember_owner(hd_smpp_pool *pl, const char *ref, hd_smpp_user *u) {
  uint64_t hsh = fnv(ref);
  pl->owners[hsh % OWNER_SLOTS].hash = hsh;
  pl->owners[hsh % OWNER_SLOTS].user = u ? u->slot : 0;
}

/* The transport that submitted ref; NULL when unknown and more than one could have. */
static hd_smpp_user *owner_of(hd_smpp_pool *pl, const char *ref) {
  uint64_t hsh = fnv(ref);
  if (pl->owners[hsh % OWNER_SLOTS].hash == hsh) {
    hd_smpp_user *u = pl->users[pl->owners[hsh % OWNER_SLOTS].user];
    if (u) return u;
  }
  if (pl->nusers != 1) return NULL;
  for (int i = 0; i < MAX_USERS; i++)
    if (pl->users[i]) return pl->users[i];
  return NULL;
}

static hd_smpp_user *first_user(hd_smpp_pool *pl) {
  for (int i = 0; i < MAX_USERS; i++)
    if (pl->users[i]) return pl->users[i];
  return NULL;
}

static void forward_receipt(hd_smpp_pool *pl, hd_smpp_user *u, const char *ref, int state,
                            const char *detail) {
  if (!u) return;
  int rc = u->h->receipt(u->p, ref, state, detail);
  pl->h->log(pl->p, HD_LOG_DEBUG, "smpp_receipt", "ref=%s %s to=%s rc=%d", ref, detail,
             u == pl->users[0] ? "first" : "other", rc);
}

/* The submit of ref was just accepted: receipts held for it go to its transport now. */
static void release_held(hd_smpp_pool *pl, const char *ref, hd_smpp_user *u) {
  for (held_receipt **pp = &pl->held; *pp;) {
    held_receipt *h = *pp;
    if (strcmp(h->ref, ref) == 0) {
      *pp = h->next;
      pl->nheld--;
      forward_receipt(pl, u, h->ref, h->state, h->detail);
      free(h);
    } else {
      pp = &h->next;
    }
  }
}

/* Receipts held too long go to the first transport: the broker logs them as unmatched. */
static uint64_t expire_held(hd_smpp_pool *pl, uint64_t now) {
  uint64_t next = 0;
  for (held_receipt **pp = &pl->held; *pp;) {
    held_receipt *h = *pp;
    if (now >= h->at + HOLD_MS) {
      *pp = h->next;
      pl->nheld--;
      forward_receipt(pl, first_user(pl), h->ref, h->state, h->detail);
      free(h);
    } else {
      if (!next || h->at + HOLD_MS < next) next = h->at + HOLD_MS;
      pp = &h->next;
    }
  }
  return next;
}

static void s_submitted(void *ud, hd_smpp_session *s, hd_smpp_submit *sub, int result,
                        uint32_t status, const char *message_id) {
  slink *l = ud;
  hd_smpp_pool *pl = l->pool;
  hd_smpp_part *pt = sub->ud;
  update_window(l);
  char reason[160], b[16];
  switch (result) {
  case HD_SMPP_OK: {
    madd(pl, l->m_submits, 1);
    char id[HD_SMPP_ID_MAX], ref[HD_SMPP_REF_MAX];
    if (hd_smpp_id_normalize(message_id, strlen(message_id), l->conf.id_type, 0, id) != 0) {
      /* Accepted without an id: the SMSC has it, but no receipt can ever be tied to it. */
      snprintf(ref, sizeof ref, "%s:seq%u", l->conf.name, sub->seq);
    } else {
      snprintf(ref, sizeof ref, "%s:%s", l->conf.name, id);
    }
    hd_smpp_user *u = pt->user;
    remember_owner(pl, ref, u);
    pt->cb(pt->ud, pt, HD_DELIVERED, ref, NULL); /* may free pt */
    if (pl->held) release_held(pl, ref, u);
    return;
  }
  case HD_SMPP_THROTTLED:
    madd(pl, l->m_throttled, 1);
    if (++pt->throttles <= MAX_THROTTLES && !pl->stopping) {
      pl->h->log(pl->p, HD_LOG_DEBUG, "smpp_throttled", "smsc=%s status=%s", l->conf.name,
                 hd_smpp_status_name(status, b, sizeof b));
      /* First in line again: it goes out when the link's pause ends (or on another link). */
      queue_front(pl, pt);
      pump(pl);
      return;
    }
    snprintf(reason, sizeof reason, "throttled by SMSC %s %d times", l->conf.name,
             pt->throttles - 1);
    pt->cb(pt->ud, pt, HD_FAILED_TEMP, NULL, reason);
    return;
  case HD_SMPP_REJECTED_PERM:
  case HD_SMPP_REJECTED_TEMP:
    madd(pl, l->m_rejected, 1);
    snprintf(reason, sizeof reason, "SMSC %s refused the submit_sm: %s", l->conf.name,
             hd_smpp_status_name(status, b, sizeof b));
    pl->h->log(pl->p, HD_LOG_WARN, "smpp_submit_refused", "smsc=%s status=%s permanent=%d",
               l->conf.name, hd_smpp_status_name(status, b, sizeof b),
               result == HD_SMPP_REJECTED_PERM);
    pt->cb(pt->ud, pt, result == HD_SMPP_REJECTED_PERM ? HD_FAILED_PERM : HD_FAILED_TEMP, NULL,
           reason);
    return;
  case HD_SMPP_TIMEOUT:
    madd(pl, l->m_timeouts, 1);
    snprintf(reason, sizeof reason, "SMSC %s did not answer the submit_sm in time",
             l->conf.name);
    pt->cb(pt->ud, pt, HD_FAILED_TEMP, NULL, reason);
    return;
  default:
    madd(pl, l->m_lost, 1);
    snprintf(reason, sizeof reason, "link to SMSC %s lost before it answered", l->conf.name);
    pt->cb(pt->ud, pt, HD_FAILED_TEMP, NULL, reason);
    return;
  }
}

static void s_closed(void *ud, hd_smpp_session *s) {
  slink *l = ud;
  l->pool->sessions_open--;
}

/* ---- receipts and MO ---- */
static void on_receipt(slink *l, const hd_smpp_deliver *dv) {
  hd_smpp_pool *pl = l->pool;
  hd_smpp_receipt r;
  madd(pl, l->m_receipts, 1);
  if (hd_smpp_receipt_parse(dv->sm, dv->sm_len, dv->receipted_id, dv->message_state, &r) != 0) {
    pl->h->log(pl->p, HD_LOG_WARN, "smpp_bad_receipt", "smsc=%s text=\"%.*s\"", l->conf.name,
               (int)(dv->sm_len > 120 ? 120 : dv->sm_len), (const char *)dv->sm);
    return;
  }
  if (!hd_smpp_state_final(r.state)) return; /* ENROUTE / ACCEPTD: not the last word */
  char id[HD_SMPP_ID_MAX], ref[HD_SMPP_REF_MAX], detail[64];
  if (hd_smpp_id_normalize(r.id, strlen(r.id), l->conf.id_type, r.id_from_text, id) != 0) return;
  snprintf(ref, sizeof ref, "%s:%s", l->conf.name, id);
  snprintf(detail, sizeof detail, "stat=%s err=%s",
           *r.stat ? r.stat : hd_smpp_state_name(r.state), *r.err ? r.err : "-");
  int st = r.state == HD_SMPP_MS_DELIVERED ? HD_RECEIPT_DELIVERED
           : r.state == HD_SMPP_MS_EXPIRED ? HD_RECEIPT_EXPIRED
                                           : HD_RECEIPT_FAILED;
  hd_smpp_user *u = owner_of(pl, ref);
  if (u) {
    forward_receipt(pl, u, ref, st, detail);
    return;
  }
  held_receipt *h = calloc(1, sizeof *h);
  if (!h) return;
  h->at = uv_now(pl->loop);
  h->state = st;
  snprintf(h->ref, sizeof h->ref, "%s", ref);
  snprintf(h->detail, sizeof h->detail, "%s", detail);
  h->next = pl->held;
  pl->held = h;
  if (++pl->nheld > HOLD_MAX) expire_held(pl, UINT64_MAX);
  pump(pl); /* arms the timer for its expiry */
}

static void mo_free(mo_group *g) {
  for (int i = 0; i < HD_SMS_MAX_PARTS; i++) free(g->part[i]);
  memset(g, 0, sizeof *g);
}

static void mo_deliver(slink *l, const char *from, const char *to, const uint8_t *sm, size_t len,
                       uint8_t dcs) {
  hd_smpp_pool *pl = l->pool;
  char *text = NULL;
  size_t tl = 0;
  const char *why = NULL;
  if (hd_sms_decode(sm, len, dcs, 0, &text, &tl, NULL, &why) != 0) {
    pl->h->log(pl->p, HD_LOG_WARN, "smpp_mo_undecodable", "smsc=%s from=%s dcs=0x%02x reason=\"%s\"",
               l->conf.name, from, dcs, why ? why : "?");
    return;
  }
  madd(pl, l->m_mo, 1);
  hd_smpp_user *u = NULL;
  for (int i = 0; !u && i < MAX_USERS; i++) u = pl->users[i];
  if (u) u->h->inbound(u->p, from, to, text, tl);
  free(text);
}

static void on_mo(slink *l, const hd_smpp_deliver *dv) {
  hd_smpp_pool *pl = l->pool;
  hd_sms_udh_info_t udh = {0};
  if ((dv->esm_class & HD_SMS_ESM_UDHI) && hd_sms_udh_parse(dv->sm, dv->sm_len, &udh) != 0) {
    pl->h->log(pl->p, HD_LOG_WARN, "smpp_mo_undecodable", "smsc=%s from=%s reason=\"bad UDH\"",
               l->conf.name, dv->source_addr);
    return;
  }
  const uint8_t *pay = dv->sm + udh.udh_len;
  size_t plen = dv->sm_len - udh.udh_len;
  if (!udh.has_concat || udh.concat_total <= 1) {
    mo_deliver(l, dv->source_addr, dv->dest_addr, pay, plen, dv->data_coding);
    return;
  }
  if (udh.concat_seq < 1 || udh.concat_seq > udh.concat_total) return;
  uint64_t now = uv_now(pl->loop);
  mo_group *g = NULL, *freeg = NULL, *oldest = NULL;
  for (int i = 0; i < MO_GROUPS; i++) {
    mo_group *x = &pl->mo[i];
    if (x->used && now - x->t > MO_MAX_AGE_MS) mo_free(x);
    if (!x->used) {
      if (!freeg) freeg = x;
      continue;
    }
    if (x->ref == udh.concat_ref && x->total == udh.concat_total &&
        strcmp(x->from, dv->source_addr) == 0)
      g = x;
    if (!oldest || x->t < oldest->t) oldest = x;
  }
  if (!g) {
    g = freeg ? freeg : oldest;
    if (g->used) mo_free(g);
    g->used = 1;
    snprintf(g->from, sizeof g->from, "%s", dv->source_addr);
    snprintf(g->to, sizeof g->to, "%s", dv->dest_addr);
    g->ref = udh.concat_ref;
    g->total = udh.concat_total;
    g->dcs = dv->data_coding;
    g->t = now;
  }
  int i = udh.concat_seq - 1;
  if (g->part[i]) return; /* a repeat */
  g->part[i] = malloc(plen ? plen : 1);
  if (!g->part[i]) return;
  memcpy(g->part[i], pay, plen);
  g->len[i] = (uint16_t)plen;
  if (++g->have < g->total) return;
  size_t tot = 0;
  for (int k = 0; k < g->total; k++) tot += g->len[k];
  uint8_t *all = malloc(tot ? tot : 1);
  if (all) {
    size_t o = 0;
    for (int k = 0; k < g->total; k++) {
      memcpy(all + o, g->part[k], g->len[k]);
      o += g->len[k];
    }
    mo_deliver(l, g->from, g->to, all, tot, g->dcs);
    free(all);
  }
  mo_free(g);
}

static uint32_t s_deliver(void *ud, hd_smpp_session *s, const hd_smpp_deliver *dv) {
  slink *l = ud;
  /* esm_class bits 5-2: 0001 SMSC delivery receipt, 1000 intermediate notification. */
  int type = (dv->esm_class >> 2) & 0x0F;
  if (type == 0x1 || type == 0x8) on_receipt(l, dv);
  else if (type == 0) on_mo(l, dv);
  /* SME acknowledgements (0x2, 0x4) carry nothing for us. Every deliver_sm is answered OK so
   * the SMSC does not send it again. */
  return 0;
}

static const hd_smpp_handler handler = {
    .state = s_state,
    .submitted = s_submitted,
    .deliver = s_deliver,
    .ready = s_ready,
    .closed = s_closed,
    .log = s_log,
};

/* ---- the queue ---- */
static void on_pool_timer(uv_timer_t *t) { pump(t->data); }

static hd_smpp_session *pick(hd_smpp_pool *pl, uint64_t mask, int64_t *wait) {
  int nsess = pl->nlinks * 2;
  for (int k = 0; k < nsess; k++) {
    unsigned i = (pl->rr + (unsigned)k) % (unsigned)nsess;
    slink *l = &pl->links[i / 2];
    if (mask && !(mask & (1ull << (i / 2)))) continue;
    hd_smpp_session *s = (int)(i % 2) < l->ns ? l->s[i % 2] : NULL;
    if (!s) continue;
    int64_t w = hd_smpp_session_wait_ms(s);
    if (w == 0) {
      pl->rr = i + 1;
      return s;
    }
    if (w > 0 && (*wait < 0 || w < *wait)) *wait = w;
  }
  return NULL;
}

static void pump(hd_smpp_pool *pl) {
  if (!pl->started || !pl->timer_open || uv_is_closing((uv_handle_t *)&pl->timer)) return;
  if (pl->pumping) {
    pl->pump_again = 1;
    return;
  }
  pl->pumping = 1;
  int64_t wait;
  uint64_t next_deadline;
  do {
    pl->pump_again = 0;
    wait = -1;
    next_deadline = 0;
    uint64_t now = uv_now(pl->loop);
    /* Parts that waited too long for any link go back to the broker. A callback may withdraw
     * other parts, so start over after each. */
    for (hd_smpp_part *pt = pl->qhead; pt; pt = pt->next) {
      if (!pt->deadline) continue;
      if (now >= pt->deadline) {
        unqueue(pl, pt);
        pt->cb(pt->ud, pt, HD_FAILED_TEMP, NULL, "no SMSC link could take it in time");
        pl->pump_again = 1;
        break;
      }
      if (!next_deadline || pt->deadline < next_deadline) next_deadline = pt->deadline;
    }
    if (pl->pump_again) continue;
    /* Send, from the head, the first part some link can take now; again from the head after
     * each send (its callback may have changed the queue). When nothing at all can go, stop. */
    for (;;) {
      hd_smpp_part *pt = pl->qhead;
      hd_smpp_session *s = NULL;
      uint64_t failed[4];
      int nfailed = 0;
      for (; pt; pt = pt->next) {
        /* Parts mostly share a link mask: ask each mask once per scan. */
        int seen = 0;
        for (int i = 0; i < nfailed; i++) seen |= failed[i] == pt->links;
        if (seen) continue;
        if ((s = pick(pl, pt->links, &wait))) break;
        if (pt->links == 0) {
          pt = NULL; /* no link at all can send now */
          break;
        }
        if (nfailed < 4) failed[nfailed++] = pt->links;
      }
      if (!pt) break;
      unqueue(pl, pt);
      pt->sub.ud = pt;
      int rc = hd_smpp_session_submit(s, &pt->sub);
      if (rc == HD_EINVAL) {
        pt->cb(pt->ud, pt, HD_FAILED_PERM, NULL, "the SMS cannot be encoded as a submit_sm");
      } else if (rc != 0) {
        queue_front(pl, pt); /* not possible after wait_ms == 0, but never lose it */
        break;
      }
      for (int i = 0; i < pl->nlinks; i++) update_window(&pl->links[i]);
    }
  } while (pl->pump_again);
  pl->pumping = 0;
  mset(pl, pl->m_queue, (double)pl->nqueued);
  /* Wake up for the earliest rate slot, pause end or queue deadline; binds and window slots
   * call pump() themselves. */
  uint64_t now = uv_now(pl->loop), at = UINT64_MAX;
  if (pl->qhead && wait >= 0) at = now + (uint64_t)wait;
  if (next_deadline && next_deadline < at) at = next_deadline;
  uint64_t held_at = pl->held ? expire_held(pl, now) : 0;
  if (held_at && held_at < at) at = held_at;
  if (at == UINT64_MAX) uv_timer_stop(&pl->timer);
  else uv_timer_start(&pl->timer, on_pool_timer, at > now ? at - now : 0, 0);
}

void hd_smpp_pool_submit(hd_smpp_pool *pl, hd_smpp_user *u, hd_smpp_part *pt) {
  pt->user = u;
  pt->throttles = 0;
  queue_back(pl, pt);
  pump(pl);
}

int hd_smpp_pool_withdraw(hd_smpp_pool *pl, hd_smpp_part *pt) {
  if (!pt->queued) return 0;
  unqueue(pl, pt);
  return 1;
}

size_t hd_smpp_pool_queued(const hd_smpp_pool *pl) { return pl->nqueued; }

uint8_t hd_smpp_pool_next_ref(hd_smpp_pool *pl) { return pl->ref++; }

int hd_smpp_pool_links(hd_smpp_pool *pl, const char *list, uint64_t *mask, const char **bad) {
  static char badbuf[80];
  *mask = 0;
  if (!list || !*list || strcmp(list, "*") == 0) return 0;
  char *copy = strdup(list), *save = NULL;
  if (!copy) return HD_ENOMEM;
  int rc = 0;
  for (char *tok = strtok_r(copy, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
    int found = -1;
    for (int i = 0; i < pl->nlinks; i++)
      if (strcmp(pl->links[i].conf.name, tok) == 0) found = i;
    if (found < 0) {
      snprintf(badbuf, sizeof badbuf, "%s", tok);
      *bad = badbuf;
      rc = HD_ECONFIG;
      break;
    }
    *mask |= 1ull << found;
  }
  free(copy);
  return rc;
}

/* ---- lifecycle ---- */
static int pool_new(const hd_host *h, hd_plugin *p, hd_smpp_pool **out) {
  size_t n = h->section_count(p, "smsc");
  if (n == 0) {
    h->log(p, HD_LOG_ERROR, "bad_config", "reason=\"%s\"",
           "the sms and wappush transports need at least one [smsc NAME] section");
    return HD_ECONFIG;
  }
  if (n > HD_SMPP_MAX_LINKS) {
    h->log(p, HD_LOG_ERROR, "bad_config", "reason=\"at most %d [smsc] sections\"",
           HD_SMPP_MAX_LINKS);
    return HD_ECONFIG;
  }
  hd_smpp_pool *pl = calloc(1, sizeof *pl);
  if (!pl || !(pl->links = calloc(n, sizeof *pl->links))) {
    free(pl);
    return HD_ENOMEM;
  }
  pl->h = h;
  pl->p = p;
  pl->loop = h->loop(p);
  pl->nlinks = (int)n;
  /* Not 0 after every restart: a handset may still hold parts of a message from before. */
  pl->ref = (uint8_t)(uv_hrtime() >> 10);
  for (size_t i = 0; i < n; i++) {
    slink *l = &pl->links[i];
    l->pool = pl;
    l->idx = (int)i;
    const char *name = h->section_name(p, "smsc", i);
    if (!name || read_conf(h, p, name, &l->conf) != 0) {
      free(pl->links);
      free(pl);
      return HD_ECONFIG;
    }
    l->ns = l->conf.split_bind ? 2 : 1;
  }
  for (int i = 0; i < pl->nlinks; i++) link_metrics(pl, &pl->links[i]);
  pl->m_queue = h->metric_new(p, "smsc_queue", "SMS parts waiting for an SMSC link",
                              HD_METRIC_GAUGE);
  *out = pl;
  return 0;
}

int hd_smpp_pool_acquire(const hd_host *h, hd_plugin *p, hd_smpp_pool **pool,
                         hd_smpp_user **user) {
  if (!g_pool) {
    int rc = pool_new(h, p, &g_pool);
    if (rc) return rc;
  }
  hd_smpp_pool *pl = g_pool;
  int slot = -1;
  for (int i = 0; i < MAX_USERS; i++)
    if (!pl->users[i]) {
      slot = i;
      break;
    }
  hd_smpp_user *u = slot >= 0 ? calloc(1, sizeof *u) : NULL;
  if (!u) {
    if (!pl->nusers) hd_smpp_pool_release(pl, NULL);
    return HD_ENOMEM;
  }
  u->pool = pl;
  u->h = h;
  u->p = p;
  u->slot = slot;
  pl->users[slot] = u;
  pl->nusers++;
  pl->nactive++;
  *pool = pl;
  *user = u;
  return 0;
}

void hd_smpp_pool_start(hd_smpp_pool *pl) {
  if (pl->started) return;
  pl->started = 1;
  uv_timer_init(pl->loop, &pl->timer);
  pl->timer.data = pl;
  pl->timer_open = 1;
  for (int i = 0; i < pl->nlinks; i++) {
    slink *l = &pl->links[i];
    for (int k = 0; k < l->ns; k++) {
      int mode = !l->conf.split_bind ? HD_SMPP_TRX : k == 0 ? HD_SMPP_TX : HD_SMPP_RX;
      if (hd_smpp_session_new(pl->loop, &l->conf, mode, &handler, l, &l->s[k]) != 0) {
        l->ns = k;
        break;
      }
      pl->sessions_open++;
      mset(pl, l->m_bound, 0);
      hd_smpp_session_start(l->s[k]);
    }
  }
}

static void on_pool_timer_closed(uv_handle_t *hd) {
  hd_smpp_pool *pl = hd->data;
  pl->timer_open = 0;
}

void hd_smpp_pool_stop(hd_smpp_pool *pl, hd_smpp_user *u) {
  if (u && !u->stopped) {
    u->stopped = 1;
    pl->nactive--;
  }
  if (pl->nactive > 0 || pl->stopping) return;
  pl->stopping = 1;
  if (pl->held) expire_held(pl, UINT64_MAX);
  /* The transports took their parts back already; anything left goes back to its owner. */
  while (pl->qhead) {
    hd_smpp_part *pt = pl->qhead;
    unqueue(pl, pt);
    pt->cb(pt->ud, pt, HD_FAILED_TEMP, NULL, "shutting down");
  }
  if (!pl->started) return;
  for (int i = 0; i < pl->nlinks; i++)
    for (int k = 0; k < pl->links[i].ns; k++) hd_smpp_session_stop(pl->links[i].s[k]);
  if (pl->timer_open && !uv_is_closing((uv_handle_t *)&pl->timer))
    uv_close((uv_handle_t *)&pl->timer, on_pool_timer_closed);
}

void hd_smpp_pool_release(hd_smpp_pool *pl, hd_smpp_user *u) {
  if (u) {
    if (!u->stopped) hd_smpp_pool_stop(pl, u);
    pl->users[u->slot] = NULL;
    pl->nusers--;
    free(u);
  }
  if (pl->nusers > 0) return;
  /* Every handle closed during the drain after stop(); a session still open here would be a
   * broken contract, and freeing it would leave libuv a dangling handle. */
  for (int i = 0; i < pl->nlinks; i++)
    for (int k = 0; k < pl->links[i].ns; k++)
      if (pl->sessions_open == 0) hd_smpp_session_free(pl->links[i].s[k]);
  for (int i = 0; i < MO_GROUPS; i++) mo_free(&pl->mo[i]);
  while (pl->held) {
    held_receipt *h = pl->held;
    pl->held = h->next;
    free(h);
  }
  if (pl->sessions_open == 0 && !pl->timer_open) {
    free(pl->links);
    free(pl);
  }
  if (g_pool == pl) g_pool = NULL;
}
