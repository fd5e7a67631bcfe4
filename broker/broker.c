/* broker.c — lifecycle of the broker and the paths every ingress shares (see broker.h). */
#include "broker.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <zmq.h>

#include "admin.h"
#include "api.h"
#include "download.h"
#include "clock.h"
#include "events.h"
#include "herald/error.h"
#include "http.h"
#include "ingress_zmq.h"
#include "jcache.h"
#include "log.h"
#include "plugin.h"
#include "push.h"
#include "release.h"
#include "release_api.h"

#define SWEEP_MAX 2000 /* messages one sweep op looks at; a full sweep means "run again" */

int64_t hd__now_ms(void) { return hd__wall_ms(); }

/* ---- publish ---- */
typedef struct pubctx {
  hd_op op;
  hd_broker *b;
  hd_tenant *tenant;
  hd_publish_cb cb;
  void *ud;
  int ingress;
  char *appid, *to, *collapse;
  void *data;
} pubctx;

/* The context, its strings and the payload copy live in one allocation: a publish costs one
 * malloc and one free on the loop thread, not five of each. */
static void pubctx_free(pubctx *c) { free(c); }

static void on_publish_done(hd_op *op) {
  pubctx *c = (pubctx *)op;
  hd_broker *b = c->b;
  double secs = (double)(op->committed_ns - op->submitted_ns) / 1e9;
  hd__metric_observe(b->m_commit_seconds, secs);
  if (op->status == 0) {
    hd__metric_add(c->ingress == HD_INGRESS_ZMQ ? b->m_pub_ok_zmq : b->m_pub_ok_http, 1);
    if (op->u.pub.replaced) hd__metric_add(b->m_collapsed, 1);
    /* Acknowledge first: the message is durable and the publisher waits on nothing else. */
    c->cb(c->ud, 0, op->u.pub.seq, NULL);
    if (op->u.pub.seq > b->seq_woken) b->seq_woken = op->u.pub.seq;
    if (op->u.pub.hook) b->regs_gen++; /* it may have registered the device */
    if (op->u.pub.dev_num) hd__router_wake_device(b->router, op->u.pub.dev_num);
    else hd__router_wake_app(b->router, op->u.pub.app_num);
    hd__events_published(b->events, c->tenant->name, c->appid, op->u.pub.seq, c->to,
                         op->u.pub.replaced);
    hd_offer o = {
        .seq = op->u.pub.seq,
        .appid = c->appid,
        .to = c->to,
        .created_ms = op->u.pub.created_ms,
        .expires_ms = op->u.pub.created_ms + op->u.pub.ttl_s * 1000,
        .data = op->u.pub.data,
        .data_len = op->u.pub.data_len,
    };
    hd__plugins_offer(b->plugins, &o);
  } else {
    hd__metric_add(c->ingress == HD_INGRESS_ZMQ ? b->m_pub_err_zmq : b->m_pub_err_http, 1);
    if (op->status == HD_EFULL || op->status == HD_EIO) {
      /* An operator must see a full or failing store, but one line a second is enough: a
       * full disk must not also flood the log. The count says how many were refused. */
      static uint64_t last_ns, suppressed;
      uint64_t now = hd__mono_ns();
      if (now - last_ns >= 1000000000u) {
        hd__log(HD_LOG_ERROR, "publish_not_stored",
                "tenant=%s app=%s error=%s refused_since_last=%llu", c->tenant->name, c->appid,
                hd_err_code(op->status), (unsigned long long)suppressed + 1);
        last_ns = now;
        suppressed = 0;
      } else {
        suppressed++;
      }
    }
    c->cb(c->ud, op->status, 0, op->reason);
  }
  pubctx_free(c);
}

void hd__broker_count_refusal(hd_broker *b, int ingress) {
  hd__metric_add(ingress == HD_INGRESS_ZMQ ? b->m_pub_err_zmq : b->m_pub_err_http, 1);
}

void hd__broker_publish(hd_broker *b, const hd_pubreq *req, hd_publish_cb cb, void *ud) {
  const char *why = NULL;
  int rc = HD_EINVAL;
  int64_t ttl = req->ttl_s ? req->ttl_s : b->cfg.store.default_ttl_s;
  size_t clen = req->collapse ? strlen(req->collapse) : 0;
  if (b->stopping) {
    rc = HD_ECLOSED;
    why = "broker is shutting down";
  } else if (!hd__valid_id(req->appid)) {
    why = "app id must be 1-128 of A-Z a-z 0-9 . _ : -";
  } else if (!hd__tenant_has_app(req->tenant, req->appid)) {
    rc = HD_ENOTFOUND;
    why = "no such app";
  } else if (req->to && !hd__valid_id(req->to)) {
    why = "device id must be 1-128 of A-Z a-z 0-9 . _ : -";
  } else if (req->collapse && (clen == 0 || clen > HD_STORE_MAX_COLLAPSE)) {
    why = "collapse key must be 1-128 bytes";
  } else if (ttl < 1 || ttl > b->cfg.store.max_ttl_s) {
    why = "ttl must be between 1 and the configured max_ttl";
  } else {
    rc = 0;
  }
  if (rc) {
    hd__metric_add(req->ingress == HD_INGRESS_ZMQ ? b->m_pub_err_zmq : b->m_pub_err_http, 1);
    cb(ud, rc, 0, why);
    return;
  }
  size_t alen = strlen(req->appid) + 1, tlen = req->to ? strlen(req->to) + 1 : 0;
  pubctx *c = malloc(sizeof *c + alen + tlen + (req->collapse ? clen + 1 : 0) + req->data_len);
  if (!c) {
    cb(ud, HD_ENOMEM, 0, NULL);
    return;
  }
  memset(c, 0, sizeof *c);
  char *p = (char *)(c + 1);
  c->appid = memcpy(p, req->appid, alen);
  p += alen;
  if (req->to) {
    c->to = memcpy(p, req->to, tlen);
    p += tlen;
  }
  if (req->collapse) {
    c->collapse = memcpy(p, req->collapse, clen + 1);
    p += clen + 1;
  }
  c->data = p;
  memcpy(c->data, req->data, req->data_len);
  c->b = b;
  c->tenant = req->tenant;
  c->cb = cb;
  c->ud = ud;
  c->ingress = req->ingress;
  c->op.kind = HD_OP_PUBLISH;
  c->op.done = on_publish_done;
  c->op.u.pub.tenant_num = req->tenant->num;
  c->op.u.pub.appid = c->appid;
  c->op.u.pub.create_app = req->tenant->any_app;
  c->op.u.pub.to = c->to;
  c->op.u.pub.ttl_s = ttl;
  c->op.u.pub.collapse = c->collapse;
  c->op.u.pub.collapse_len = clen;
  c->op.u.pub.data = c->data;
  c->op.u.pub.data_len = req->data_len;
  c->op.u.pub.hook = req->to ? req->hook : NULL;
  c->op.u.pub.hook_arg = req->hook_arg;
  hd__push_on_publish(b->push, req->tenant->name, req->tenant->num, c->appid, &c->op);
  if ((rc = hd__writer_submit(b->writer, &c->op))) {
    pubctx_free(c);
    cb(ud, rc, 0, "broker is shutting down");
  }
}

/* ---- register ---- */
typedef struct regctx {
  hd_op op;
  hd_broker *b;
  hd_tenant *tenant;
  hd_register_cb cb;
  void *ud;
  char appid[HD_STORE_MAX_ID + 1];
  char device[HD_STORE_MAX_ID + 1];
  unsigned char push_arg[sizeof(void *) + 24]; /* hd__push_on_register's: push + MSISDN */
} regctx;

static void on_register_done(hd_op *op) {
  regctx *c = (regctx *)op;
  if (op->status) {
    c->cb(c->ud, op->status, NULL, NULL, op->reason);
    free(c);
    return;
  }
  c->b->regs_gen++; /* committed: cached app sets must be read again */
  char token[HD_TOKEN_MAX];
  int rc = hd__token_mint(c->tenant, c->device, op->u.reg.dev.gen, token, sizeof token);
  if (rc) {
    c->cb(c->ud, rc, NULL, NULL, "cannot mint token");
  } else {
    hd__metric_add(c->b->m_registrations, 1);
    hd__events_registered(c->b->events, c->tenant->name, c->appid, c->device);
    /* A connection or held poll of this device watches the apps it had when it last fetched:
     * woken, it fetches again and watches the new app too, or that app's messages would wait
     * for some other wake-up. */
    hd__router_wake_device(c->b->router, op->u.reg.dev.dev_num);
    c->cb(c->ud, 0, c->device, token, NULL);
  }
  free(c);
}

void hd__broker_register(hd_broker *b, const hd_regreq *req, hd_register_cb cb, void *ud) {
  if (b->stopping) {
    cb(ud, HD_ECLOSED, NULL, NULL, "broker is shutting down");
    return;
  }
  if (!hd__tenant_has_app(req->tenant, req->appid)) {
    cb(ud, HD_ENOTFOUND, NULL, NULL, "no such app");
    return;
  }
  regctx *c = calloc(1, sizeof *c);
  if (!c) {
    cb(ud, HD_ENOMEM, NULL, NULL, NULL);
    return;
  }
  if (req->device_id) {
    if (!hd__valid_id(req->device_id)) {
      free(c);
      cb(ud, HD_EINVAL, NULL, NULL, "device id must be 1-128 of A-Z a-z 0-9 . _ : -");
      return;
    }
    snprintf(c->device, sizeof c->device, "%s", req->device_id);
  } else if (hd__random_id(c->device, sizeof c->device, 16)) {
    free(c);
    cb(ud, HD_EIO, NULL, NULL, "no randomness");
    return;
  }
  snprintf(c->appid, sizeof c->appid, "%s", req->appid);
  c->b = b;
  c->tenant = req->tenant;
  c->cb = cb;
  c->ud = ud;
  c->op.kind = HD_OP_REGISTER;
  c->op.done = on_register_done;
  c->op.u.reg.tenant_num = req->tenant->num;
  c->op.u.reg.appid = c->appid;
  c->op.u.reg.create_app = req->tenant->any_app;
  c->op.u.reg.mode = req->mode;
  c->op.u.reg.device_id = c->device;
  c->op.u.reg.token_gen = req->token_gen;
  if (req->msisdn) {
    c->op.also_arg = c->push_arg;
    hd__push_on_register(b->push, &c->op, req->msisdn);
  }
  int rc = hd__writer_submit(b->writer, &c->op);
  if (rc) {
    free(c);
    cb(ud, rc, NULL, NULL, "broker is shutting down");
  }
}

/* ---- token rotation and revocation ---- */
typedef struct tokctx {
  hd_op op;
  hd_broker *b;
  hd_tenant *tenant;
  hd_register_cb cb;
  void *ud;
  int rotate;
  char device[HD_STORE_MAX_ID + 1];
} tokctx;

static void on_token_done(hd_op *op) {
  tokctx *c = (tokctx *)op;
  char token[HD_TOKEN_MAX];
  int rc = op->status;
  if (rc) {
    c->cb(c->ud, rc, NULL, NULL, op->reason);
  } else if (!c->rotate) {
    hd__log(HD_LOG_INFO, "device_token_revoked", "tenant=%s device=%s gen=%u", c->tenant->name,
            c->device, op->u.devgen.dev.gen);
    hd__plugins_device_revoked(c->b->plugins, c->tenant->name, c->device);
    c->cb(c->ud, 0, c->device, NULL, NULL);
  } else if ((rc = hd__token_mint(c->tenant, c->device, op->u.devgen.dev.gen, token,
                                  sizeof token))) {
    c->cb(c->ud, rc, NULL, NULL, "cannot mint token");
  } else {
    hd__log(HD_LOG_INFO, "device_token_rotated", "tenant=%s device=%s gen=%u", c->tenant->name,
            c->device, op->u.devgen.dev.gen);
    hd__plugins_device_revoked(c->b->plugins, c->tenant->name, c->device);
    c->cb(c->ud, 0, c->device, token, NULL);
  }
  free(c);
}

void hd__broker_token(hd_broker *b, hd_tenant *tenant, const char *device, uint32_t expect_gen,
                      int rotate, hd_register_cb cb, void *ud) {
  if (b->stopping) {
    cb(ud, HD_ECLOSED, NULL, NULL, "broker is shutting down");
    return;
  }
  if (!hd__valid_id(device)) {
    cb(ud, HD_EINVAL, NULL, NULL, "device id must be 1-128 of A-Z a-z 0-9 . _ : -");
    return;
  }
  tokctx *c = calloc(1, sizeof *c);
  if (!c) {
    cb(ud, HD_ENOMEM, NULL, NULL, NULL);
    return;
  }
  snprintf(c->device, sizeof c->device, "%s", device);
  c->b = b;
  c->tenant = tenant;
  c->cb = cb;
  c->ud = ud;
  c->rotate = rotate;
  c->op.kind = HD_OP_DEVICE_GEN;
  c->op.done = on_token_done;
  c->op.u.devgen.tenant_num = tenant->num;
  c->op.u.devgen.device_id = c->device;
  c->op.u.devgen.expect_gen = expect_gen;
  int rc = hd__writer_submit(b->writer, &c->op);
  if (rc) {
    free(c);
    cb(ud, rc, NULL, NULL, "broker is shutting down");
  }
}

/* ---- ack ---- */
typedef struct ackctx {
  hd_op op;
  hd_broker *b;
  const hd_tenant *tenant;
  char device[HD_STORE_MAX_ID + 1];
  void (*cb)(void *, int);
  void *ud;
  uint64_t ids[];
} ackctx;

static void on_ack_done(hd_op *op) {
  ackctx *c = (ackctx *)op;
  if (op->status == 0 && op->u.ack.acked) {
    hd__metric_add(c->b->m_acks, (double)op->u.ack.acked);
    hd__events_acked(c->b->events, c->tenant->name, c->device, op->u.ack.acked);
  }
  c->cb(c->ud, op->status ? op->status : (int)op->u.ack.acked);
  free(c);
}

int hd__broker_ack(hd_broker *b, const hd_tenant *tenant, const char *device, uint64_t dev_num,
                   const uint64_t *ids, size_t n, void (*cb)(void *ud, int status), void *ud) {
  if (n > 10000) return HD_ETOOBIG;
  ackctx *c = calloc(1, sizeof *c + n * sizeof(uint64_t));
  if (!c) return HD_ENOMEM;
  memcpy(c->ids, ids, n * sizeof(uint64_t));
  c->b = b;
  c->tenant = tenant;
  snprintf(c->device, sizeof c->device, "%s", device);
  c->cb = cb;
  c->ud = ud;
  c->op.kind = HD_OP_ACK;
  c->op.done = on_ack_done;
  c->op.u.ack.dev_num = dev_num;
  c->op.u.ack.ids = c->ids;
  c->op.u.ack.n = n;
  int rc = hd__writer_submit(b->writer, &c->op);
  if (rc) free(c);
  return rc;
}

/* ---- expiry sweep ---- */
typedef struct sweepctx {
  hd_op op;
  hd_broker *b;
} sweepctx;

static void sweep_submit(hd_broker *b);

static void on_sweep_done(hd_op *op) {
  sweepctx *c = (sweepctx *)op;
  hd_broker *b = c->b;
  size_t n = op->status == 0 ? op->u.sweep.deleted : 0;
  int more = op->status == 0 && op->u.sweep.more;
  if (op->status)
    hd__log(HD_LOG_WARN, "sweep_failed", "error=%s", hd_err_code(op->status));
  free(c);
  if (n) {
    hd__metric_add(b->m_expired, (double)n);
    hd__events_expired(b->events, n);
  }
  /* A full sweep means more is due: go on at once rather than waiting for the timer. */
  if (more && !b->stopping) sweep_submit(b);
}

static void sweep_submit(hd_broker *b) {
  sweepctx *c = calloc(1, sizeof *c);
  if (!c) return;
  c->b = b;
  c->op.kind = HD_OP_SWEEP;
  c->op.u.sweep.max = SWEEP_MAX;
  c->op.done = on_sweep_done;
  if (hd__writer_submit(b->writer, &c->op)) free(c);
}

static void on_sweep_timer(uv_timer_t *t) { sweep_submit(t->data); }

/* ---- computed gauges ---- */
static double g_map_used(void *ud) {
  hd_store_stats st;
  return hd__store_stats(((hd_broker *)ud)->store, &st) ? 0 : (double)st.used_bytes;
}
static double g_map_size(void *ud) {
  hd_store_stats st;
  return hd__store_stats(((hd_broker *)ud)->store, &st) ? 0 : (double)st.map_size;
}
static double g_conns(void *ud) {
  hd_broker *b = ud;
  return b->http ? (double)hd__http_stats(b->http)->connections_open : 0;
}
/* herald_http_refused_total{reason=...}: one counter function per field of hd_http_stats. */
#define G_REFUSED(name, field)                                                    \
  static double name(void *ud) {                                                \
    hd_broker *b = ud;                                                          \
    return b->http ? (double)hd__http_stats(b->http)->field : 0;                \
  }
G_REFUSED(g_ref_max, connections_refused)
G_REFUSED(g_ref_addr, refused_per_address)
G_REFUSED(g_ref_fd, refused_fd_limit)
G_REFUSED(g_ref_body, refused_body)
G_REFUSED(g_ref_header, refused_header)
G_REFUSED(g_tls_hs_fail, tls_handshake_failures)
#undef G_REFUSED
static double g_held(void *ud) {
  hd_broker *b = ud;
  return b->http ? (double)hd__http_stats(b->http)->requests_held : 0;
}
static double g_watches(void *ud) { return (double)hd__router_watches(((hd_broker *)ud)->router); }
static double g_queue(void *ud) {
  hd_writer_stats st;
  hd__writer_stats(((hd_broker *)ud)->writer, &st);
  return (double)st.queued;
}
static double g_commits(void *ud) {
  hd_writer_stats st;
  hd__writer_stats(((hd_broker *)ud)->writer, &st);
  return (double)st.commits;
}
static double g_commit_fsync(void *ud) {
  hd_writer_stats st;
  hd__writer_stats(((hd_broker *)ud)->writer, &st);
  return (double)st.commit_ns_total / 1e9;
}
static double g_push_inflight(void *ud) {
  return (double)hd__plugins_inflight(((hd_broker *)ud)->plugins);
}
static double g_zmq_inflight(void *ud) {
  return (double)hd__zmq_ingress_inflight(((hd_broker *)ud)->zin);
}

static int metrics_init(hd_broker *b) {
  hd_metrics *m = b->metrics;
  const char *pub_help = "Publish requests by ingress and result";
  b->m_pub_ok_http = hd__metric_new(m, "herald_publishes_total", pub_help, HD_METRIC_COUNTER,
                                    "ingress=\"http\",result=\"ok\"");
  b->m_pub_err_http = hd__metric_new(m, "herald_publishes_total", pub_help, HD_METRIC_COUNTER,
                                     "ingress=\"http\",result=\"error\"");
  b->m_pub_ok_zmq = hd__metric_new(m, "herald_publishes_total", pub_help, HD_METRIC_COUNTER,
                                   "ingress=\"zmq\",result=\"ok\"");
  b->m_pub_err_zmq = hd__metric_new(m, "herald_publishes_total", pub_help, HD_METRIC_COUNTER,
                                    "ingress=\"zmq\",result=\"error\"");
  b->m_deliveries = hd__metric_new(m, "herald_deliveries_total",
                                   "Messages handed to devices, by every transport",
                                   HD_METRIC_COUNTER, NULL);
  b->m_acks = hd__metric_new(m, "herald_acks_total", "Messages acknowledged (dismissed)",
                             HD_METRIC_COUNTER, NULL);
  b->m_registrations = hd__metric_new(m, "herald_registrations_total",
                                      "Device registrations committed", HD_METRIC_COUNTER, NULL);
  b->m_expired = hd__metric_new(m, "herald_expired_total", "Messages deleted by TTL expiry",
                                HD_METRIC_COUNTER, NULL);
  b->m_collapsed = hd__metric_new(m, "herald_collapsed_total",
                                  "Undelivered messages replaced through a collapse key",
                                  HD_METRIC_COUNTER, NULL);
  b->m_commit_seconds = hd__metric_new(m, "herald_publish_commit_seconds",
                                       "From publish queued to its group commit being durable",
                                       HD_METRIC_HISTOGRAM, NULL);
  int rc = 0;
  rc |= hd__metric_fn(m, "herald_lmdb_used_bytes", "Bytes of the LMDB map in use", NULL,
                      g_map_used, b);
  rc |= hd__metric_fn(m, "herald_lmdb_map_bytes", "Configured LMDB map size", NULL, g_map_size,
                      b);
  rc |= hd__metric_fn(m, "herald_http_connections", "Open HTTP connections", NULL, g_conns, b);
  const char *ref_help = "HTTP connections closed at accept, or requests refused, by reason";
  rc |= hd__metric_fn(m, "herald_http_refused_total", ref_help, "reason=\"max_connections\"",
                      g_ref_max, b);
  rc |= hd__metric_fn(m, "herald_http_refused_total", ref_help, "reason=\"per_address\"",
                      g_ref_addr, b);
  rc |= hd__metric_fn(m, "herald_http_refused_total", ref_help, "reason=\"fd_limit\"",
                      g_ref_fd, b);
  rc |= hd__metric_fn(m, "herald_http_refused_total", ref_help, "reason=\"body_too_large\"",
                      g_ref_body, b);
  rc |= hd__metric_fn(m, "herald_http_refused_total", ref_help, "reason=\"header_too_large\"",
                      g_ref_header, b);
  rc |= hd__metric_fn(m, "herald_tls_handshake_failures_total",
                      "TLS connections closed because the handshake failed", "listener=\"http\"",
                      g_tls_hs_fail, b);
  rc |= hd__metric_fn(m, "herald_held_polls", "HTTP requests held open (long-polls)", NULL,
                      g_held, b);
  rc |= hd__metric_fn(m, "herald_watches", "Devices waiting for a wake-up", NULL, g_watches, b);
  rc |= hd__metric_fn(m, "herald_commit_queue", "Write operations waiting for the writer", NULL,
                      g_queue, b);
  rc |= hd__metric_fn(m, "herald_commits_total", "Group commits (LMDB transactions)", NULL,
                      g_commits, b);
  rc |= hd__metric_fn(m, "herald_commit_fsync_seconds_total",
                      "Seconds spent in LMDB commit (fsync)", NULL, g_commit_fsync, b);
  rc |= hd__metric_fn(m, "herald_push_inflight", "Push deliveries in flight or awaiting retry",
                      NULL, g_push_inflight, b);
  rc |= hd__metric_fn(m, "herald_zmq_inflight", "ZeroMQ publishes waiting for their commit",
                      NULL, g_zmq_inflight, b);
  return rc || !b->m_pub_ok_http || !b->m_commit_seconds ? HD_ENOMEM : 0;
}

/* ---- lifecycle ---- */
/* Sockets the broker needs besides HTTP connections: LMDB, ZeroMQ, the loop, logs, plugins. */
#define FD_RESERVE 64

/* max_connections, lowered to fit the process's file limit: past it accept() fails with
 * EMFILE, which libuv absorbs by closing waiting connections unseen, so the refusal would be
 * neither counted nor logged. Keeping the cap below the limit makes it an ordinary,
 * counted max_connections refusal. */
static uint64_t http_max_connections(int64_t want) {
  struct rlimit rl;
  uint64_t max = (uint64_t)want;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return max;
  uint64_t room = rl.rlim_cur > 2 * FD_RESERVE ? (uint64_t)rl.rlim_cur - FD_RESERVE
                                               : (uint64_t)rl.rlim_cur / 2;
  if (max > room) {
    hd__log(HD_LOG_WARN, "max_connections_lowered",
            "configured=%lld effective=%llu reason=\"file limit (ulimit -n) is %llu\"",
            (long long)want, (unsigned long long)room, (unsigned long long)rl.rlim_cur);
    max = room;
  }
  return max;
}

/* Logs refusals, at most one line per second per reason (a flood must not flood the log);
 * the herald_http_refused_total counters see every one. */
static void on_http_refused(void *ud, const char *reason, const char *peer) {
  static const char *const reasons[] = {"max_connections", "per_address", "fd_limit"};
  static uint64_t last_ns[3], skipped[3];
  (void)ud;
  size_t i = 0;
  while (i < 2 && strcmp(reasons[i], reason) != 0) i++;
  uint64_t now = hd__mono_ns();
  if (last_ns[i] && now - last_ns[i] < 1000000000ull) {
    skipped[i]++;
    return;
  }
  hd__log(HD_LOG_WARN, "http_refused", "reason=%s peer=%s also_refused=%llu", reason,
          peer ? peer : "-", (unsigned long long)skipped[i]);
  last_ns[i] = now;
  skipped[i] = 0;
}

static void on_signal(uv_signal_t *s, int signum) {
  hd_broker *b = s->data;
  hd__log(HD_LOG_INFO, "signal", "signal=%s", signum == SIGINT ? "SIGINT" : "SIGTERM");
  hd__broker_stop(b);
}

static int mkdir_p(const char *path) {
  char tmp[4096];
  if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp) return HD_EINVAL;
  for (char *p = tmp + 1; *p; p++) {
    if (*p != '/') continue;
    *p = 0;
    if (mkdir(tmp, 0700) != 0 && errno != EEXIST) return HD_EIO;
    *p = '/';
  }
  return mkdir(tmp, 0700) != 0 && errno != EEXIST ? HD_EIO : 0;
}

int hd__broker_init(hd_broker *b, uv_loop_t *loop, hd_config *cfg, char *err, size_t errlen) {
  int rc;
  memset(b, 0, sizeof *b);
  b->loop = loop;
  b->cfg = *cfg;
  memset(cfg, 0, sizeof *cfg);
  hd__log_set_level(hd__log_level_from_name(b->cfg.log_level));

  char path[4200];
  if ((rc = mkdir_p(b->cfg.data_dir))) {
    snprintf(err, errlen, "data_dir %s: cannot create: %s", b->cfg.data_dir, strerror(errno));
    return rc;
  }
  snprintf(path, sizeof path, "%s/store", b->cfg.data_dir);
  if ((rc = hd__store_open(path, b->cfg.store.map_size, &b->store))) {
    snprintf(err, errlen, "store %s: %s", path, hd_strerror(rc));
    return rc;
  }
  hd_store_stats st;
  if ((rc = hd__store_stats(b->store, &st))) {
    snprintf(err, errlen, "store %s: %s", path, hd_strerror(rc));
    return rc;
  }
  b->seq_woken = st.last_seq; /* every stored message is there to fetch; none will wake */
  if ((rc = hd__tenants_load(&b->tenants, &b->cfg, b->store, err, errlen))) return rc;
  /* Tenants created at run time, beside the config's; before the writer thread runs. */
  if ((rc = hd__admin_open(b, err, errlen))) return rc;
  b->jcache = hd__jcache_new(); /* NULL only costs renderings */
  if ((rc = hd__metrics_new(&b->metrics)) || (rc = hd__router_new(&b->router))) {
    snprintf(err, errlen, "out of memory");
    return rc;
  }
  if ((rc = metrics_init(b))) {
    snprintf(err, errlen, "metrics: %s", hd_strerror(rc));
    return rc;
  }
  /* The release catalog's tables and package directory; before the writer thread runs. */
  if ((rc = hd__release_open(b, &b->releases, err, errlen))) return rc;
  /* Keep 1/16 of the map (at least 64 KiB) for deletes, so a full store can always be
   * emptied by acks and expiry. */
  uint64_t reserve = b->cfg.store.map_size / 16;
  if (reserve < 65536) reserve = 65536;
  if ((rc = hd__writer_start(loop, b->store, (size_t)b->cfg.store.max_batch, reserve,
                             &b->writer))) {
    snprintf(err, errlen, "writer thread: %s", hd_strerror(rc));
    return rc;
  }
  hd__writer_set_ack_delay(b->writer, (uint64_t)b->cfg.store.ack_delay_ms);
  hd_http_opts ho = {
      .max_header = b->cfg.http.max_header,
      .max_body = b->cfg.http.max_body,
      .idle_timeout_ms = (uint64_t)b->cfg.http.idle_timeout_s * 1000,
      .max_connections = http_max_connections(b->cfg.http.max_connections),
      .max_per_address = (uint64_t)b->cfg.http.max_connections_per_address,
      .on_refused = on_http_refused,
      .on_refused_ud = b,
  };
  if ((rc = hd__http_new(loop, &ho, &b->http))) {
    snprintf(err, errlen, "http: %s", hd_strerror(rc));
    return rc;
  }
  if (b->cfg.http.tls_cert && (rc = hd__http_set_tls(b->http, b->cfg.http.tls_cert,
                                                     b->cfg.http.tls_key, b->cfg.http.tls_ca,
                                                     err, errlen)))
    return rc;
  if ((rc = hd__api_init(b)) || (rc = hd__admin_routes(b))) {
    snprintf(err, errlen, "http routes: %s", hd_strerror(rc));
    return rc;
  }
  if ((rc = hd__release_api_init(b))) {
    snprintf(err, errlen, "release routes: %s", hd_strerror(rc));
    return rc;
  }
  /* Package downloads: a thread of their own sends the bytes (download.h). */
  hd_download_opts dopt = {
      .max_active = (uint64_t)b->cfg.download.max_concurrent,
      .send_timeout_ms = (uint64_t)b->cfg.download.send_timeout_s * 1000,
      .metrics = b->metrics,
  };
  if ((rc = hd__download_new(loop, &dopt, &b->downloads)) || (rc = hd__download_routes(b))) {
    snprintf(err, errlen, "downloads: %s", hd_strerror(rc));
    return rc;
  }
  hd__plugin_dir(&b->cfg, b->plugin_dir, sizeof b->plugin_dir);
  if ((rc = hd__plugins_load(b, err, errlen))) return rc;
  if ((rc = hd__push_init(b, &b->push, err, errlen))) return rc;
  return 0;
}

int hd__broker_start(hd_broker *b, char *err, size_t errlen) {
  int rc, port;
  char host[256];
  if (hd__config_parse_hostport(b->cfg.http.listen, host, sizeof host, &port)) {
    snprintf(err, errlen, "http listen '%s' is not host:port", b->cfg.http.listen);
    return HD_ECONFIG;
  }
  if ((rc = hd__http_listen(b->http, host, port))) {
    const char *why = hd__http_listen_error(b->http);
    snprintf(err, errlen, "http listen %s: %s", b->cfg.http.listen,
             why && *why ? why : hd_strerror(rc));
    return rc;
  }
  if (!(b->zctx = zmq_ctx_new())) {
    snprintf(err, errlen, "zmq context: %s", zmq_strerror(zmq_errno()));
    return HD_EIO;
  }
  if ((rc = hd__zmq_ingress_open(b, b->cfg.zmq.ingress, (size_t)b->cfg.zmq.max_frame, &b->zin,
                                 err, errlen)))
    return rc;
  if ((rc = hd__events_open(b->zctx, b->cfg.zmq.events, &b->events, err, errlen))) return rc;
  if ((rc = hd__events_watch(b->events, b->loop))) return rc;
  if ((rc = hd__plugins_start(b->plugins, err, errlen))) return rc;
  if ((rc = hd__push_start(b->push))) {
    snprintf(err, errlen, "push queue: %s", hd_strerror(rc));
    return rc;
  }
  hd__release_start(b->releases); /* resumes interrupted release notices */
  uv_signal_init(b->loop, &b->sigint);
  uv_signal_init(b->loop, &b->sigterm);
  b->sigint.data = b->sigterm.data = b;
  uv_signal_start(&b->sigint, on_signal, SIGINT);
  uv_signal_start(&b->sigterm, on_signal, SIGTERM);
  uv_timer_init(b->loop, &b->sweep_timer);
  b->sweep_timer.data = b;
  uint64_t every = (uint64_t)b->cfg.store.sweep_interval_s * 1000;
  uv_timer_start(&b->sweep_timer, on_sweep_timer, every, every);
  hd__log(HD_LOG_INFO, "started",
          "http=%s:%d zmq_ingress=%s zmq_events=%s data_dir=%s plugins=%zu config=%s tls=%s", host,
          hd__http_port(b->http), hd__zmq_ingress_endpoint(b->zin),
          hd__events_endpoint(b->events), b->cfg.data_dir,
          b->cfg.plugins.nload, b->cfg.source, b->cfg.http.tls_cert ? "yes" : "no");
  return 0;
}

static void on_http_closed(hd_http_server *s) { (void)s; }

static void close_handle(uv_handle_t *h) {
  if (h->loop && !uv_is_closing(h)) uv_close(h, NULL);
}

/* Last step of a stop: everything is answered; close the remaining handles. */
static void on_grace(uv_timer_t *t) {
  hd_broker *b = t->data;
  hd__zmq_ingress_close(b->zin);
  b->zin = NULL;
  if (b->http) hd__http_close(b->http, on_http_closed);
  close_handle((uv_handle_t *)&b->sigint);
  close_handle((uv_handle_t *)&b->sigterm);
  close_handle((uv_handle_t *)&b->sweep_timer);
  hd__events_stop(b->events);
  uv_close((uv_handle_t *)t, (uv_close_cb)free);
}

void hd__broker_stop(hd_broker *b) {
  if (b->stopping) return;
  b->stopping = 1;
  hd__log(HD_LOG_INFO, "stopping", "%s", "");
  /* 1. No new work: no new connections, no new ZeroMQ requests. */
  if (b->http) hd__http_stop_accepting(b->http);
  hd__zmq_ingress_stop(b->zin);
  uv_timer_stop(&b->sweep_timer);
  /* Transfers in progress are cut (clients resume them with Range after the restart). */
  hd__download_stop(b->downloads);
  /* 2. Transports answer what they hold (long-polls get their reply now); per-device pushes
   * still queued resume after a restart. */
  hd__push_stop(b->push);
  hd__release_stop(b->releases); /* notices not sent yet go out after the restart */
  hd__plugins_stop(b->plugins);
  if (b->router) hd__router_wake_all(b->router);
  /* 3. Finish every queued commit; their acknowledgements go out. */
  if (b->writer) hd__writer_stop(b->writer);
  /* 4. Give the replies a moment on the wire, then close the sockets. */
  uv_timer_t *grace = malloc(sizeof *grace);
  if (grace) {
    uv_timer_init(b->loop, grace);
    grace->data = b;
    uv_timer_start(grace, on_grace, 200, 0);
  }
}

void hd__broker_free(hd_broker *b) {
  hd__plugins_free(b->plugins);
  hd__push_free(b->push);
  if (b->http) hd__http_free(b->http);
  hd__download_free(b->downloads);
  hd__events_close(b->events);
  if (b->zctx) zmq_ctx_term(b->zctx);
  hd__writer_free(b->writer);
  hd__router_free(b->router);
  hd__jcache_free(b->jcache);
  b->jcache = NULL;
  hd__admin_free(b->admin);
  hd__release_free(b->releases);
  hd__tenants_free(&b->tenants);
  hd__store_close(b->store);
  hd__metrics_free(b->metrics);
  hd__config_free(&b->cfg);
  hd__log(HD_LOG_INFO, "stopped", "%s", "");
}
