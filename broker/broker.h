/* broker.h — the broker object: owns the loop's modules and runs the paths every ingress
 * shares (publish, register, ack), from validation through the group commit to fan-out.
 *
 * Publish path: an ingress (HTTP, ZeroMQ) fills an hd_pubreq and calls hd__broker_publish().
 * The broker validates it against the tenant, queues it to the writer, and when the commit is
 * durable: answers the ingress through its callback (only now may it acknowledge), wakes the
 * pull transports watching the app or device (router), hands the message to push transports
 * (plugin.c), and emits a "published" event on the ZeroMQ PUB socket.
 *
 * Ownership: hd_broker owns the config it was given, the store, writer, router, tenants,
 * metrics, HTTP server, ZeroMQ sockets and plugins. Requests passed in are copied as needed;
 * callbacks receive pointers valid only during the call. Loop thread only.
 */
#ifndef HERALD_BROKER_H
#define HERALD_BROKER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "metrics.h"
#include "router.h"
#include "store.h"
#include "tenant.h"
#include "writer.h"

typedef struct hd_http_server hd_http_server;
typedef struct hd_zmq_ingress hd_zmq_ingress;
typedef struct hd_events hd_events;
typedef struct hd_plugins hd_plugins;
typedef struct hd_push hd_push;
typedef struct hd_releases hd_releases;

typedef struct hd_broker {
  uv_loop_t *loop;
  hd_config cfg;
  hd_store *store;
  hd_writer *writer;
  hd_router *router;
  hd_tenants tenants;
  struct hd_admin *admin;       /* the admin API and runtime tenants (admin.c) */
  hd_metrics *metrics;
  hd_http_server *http;
  hd_zmq_ingress *zin;
  hd_events *events;
  hd_plugins *plugins;
  hd_push *push;               /* per-device push policy and its durable queue (push.c) */
  hd_releases *releases;       /* release catalog, notices, update-check, reports (release.c) */
  struct hd_downloads *downloads; /* package downloads: their thread and slots (download.c) */
  struct hd_jcache *jcache;    /* JSON renderings of recent payloads, shared by fetches */
  /* The highest message id whose commit has run its wake-ups (loop thread; at start, the
   * store's last id). A fetch after it can find nothing a wake-up will not announce. */
  uint64_t seq_woken;
  /* Bumped (loop thread) when a committed write may have added a registration: a register,
   * or a publish whose hook may register (release notices). Devices' cached app sets older
   * than it are read again. */
  uint64_t regs_gen;
  void *zctx;                  /* the ZeroMQ context */
  char plugin_dir[4096];
  uv_signal_t sigint, sigterm;
  uv_timer_t sweep_timer;
  int stopping;
  int exit_code;
  /* metrics the shared paths update */
  hd_metric *m_pub_ok_http, *m_pub_ok_zmq, *m_pub_err_http, *m_pub_err_zmq;
  hd_metric *m_deliveries, *m_acks, *m_registrations, *m_expired, *m_commit_seconds;
  hd_metric *m_collapsed;
} hd_broker;

enum hd_ingress { HD_INGRESS_HTTP = 0, HD_INGRESS_ZMQ = 1 };

typedef struct hd_pubreq {
  hd_tenant *tenant;
  const char *appid;
  const char *to;          /* NULL: broadcast */
  const void *data;        /* msgpack, already validated */
  size_t data_len;
  int64_t ttl_s;           /* 0: the store's default */
  const char *collapse;    /* NULL: none */
  int ingress;             /* enum hd_ingress, for metrics */
  /* Optional, direct messages only: runs in the publish's write transaction (see the hook of
   * hd_op.u.pub in writer.h); arg must outlive the callback. */
  int (*hook)(hd_store *s, MDB_txn *t, hd_op *op, void *arg);
  void *hook_arg;
} hd_pubreq;

/* status 0: id is the committed message id. Otherwise an HD_E* code and a reason. */
typedef void (*hd_publish_cb)(void *ud, int status, uint64_t id, const char *reason);
/* Count a publish an ingress refused before it reached hd__broker_publish (bad credentials,
 * malformed request), so herald_publishes_total{result="error"} sees every refusal. */
void hd__broker_count_refusal(hd_broker *b, int ingress);
/* Validate and queue. The callback always runs exactly once, possibly before this returns
 * (validation errors). */
void hd__broker_publish(hd_broker *b, const hd_pubreq *req, hd_publish_cb cb, void *ud);

typedef struct hd_regreq {
  hd_tenant *tenant;
  const char *appid;
  int mode;                /* enum hd_reg_mode */
  const char *device_id;   /* NULL with HD_REG_NEW: the broker makes one up */
  uint32_t token_gen;      /* HD_REG_EXISTING: generation of the verified token */
  const char *msisdn;      /* normalized (hd__push_msisdn_norm) or NULL: recorded with it */
} hd_regreq;
/* status 0: device id and a fresh token for it. */
typedef void (*hd_register_cb)(void *ud, int status, const char *device_id, const char *token,
                               const char *reason);
void hd__broker_register(hd_broker *b, const hd_regreq *req, hd_register_cb cb, void *ud);

/* Rotate (rotate = 1) or revoke (0) a device's tokens: bump its generation in the store, so
 * every token minted before stops working at once: every new request checks the generation,
 * and after the commit each transport's device_revoked() ends what the old token opened (held
 * long-polls get 401, an ipconn connection goaway "revoked").
 * expect_gen 0: the caller holds the publish key; else the generation of the device token the
 * caller presented, which must still be current. cb runs exactly once, after the commit, with
 * the new token when rotating (NULL when revoking). device is copied. */
void hd__broker_token(hd_broker *b, hd_tenant *tenant, const char *device, uint32_t expect_gen,
                      int rotate, hd_register_cb cb, void *ud);

/* Acknowledge ids for a device; cb(ud, status) after the commit, status being the number of
 * ids that took effect or a negative HD_E*. ids are copied; tenant and
 * device name the device in the "acked" event and must outlive the call only. */
int hd__broker_ack(hd_broker *b, const hd_tenant *tenant, const char *device, uint64_t dev_num,
                   const uint64_t *ids, size_t n, void (*cb)(void *ud, int status), void *ud);

/* Lifecycle. init takes ownership of *cfg (zeroing the caller's copy). */
int hd__broker_init(hd_broker *b, uv_loop_t *loop, hd_config *cfg, char *err, size_t errlen);
/* Start listeners and plugins. */
int hd__broker_start(hd_broker *b, char *err, size_t errlen);
/* Graceful stop: stop accepting, answer held requests, finish commits, close handles. */
void hd__broker_stop(hd_broker *b);
/* After the loop has drained. */
void hd__broker_free(hd_broker *b);

int64_t hd__now_ms(void);

#endif
