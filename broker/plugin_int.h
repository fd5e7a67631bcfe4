/* plugin_int.h — the structures behind the opaque handles of herald/transport.h, shared by the
 * loader (plugin.c) and the host table (host.c) only. */
#ifndef HERALD_PLUGIN_INT_H
#define HERALD_PLUGIN_INT_H

#include <pthread.h>

#include "plugin.h"

#define HD_DELIVERY_MAGIC 0x48444c56u /* "HDLV": catches stale or doubly completed deliveries */

struct hd_msg {
  uint64_t seq;
  int64_t created_ms;
  int64_t expires_ms;
  char app[HD_STORE_MAX_ID + 1];
  char to[HD_STORE_MAX_ID + 1];
  int has_to;
  unsigned char *data;
  size_t data_len;
  char *json;              /* rendered on first request */
  size_t json_len;
  struct hd_jcache *jc;    /* renderings shared between fetches (jcache.h), or NULL */
};

struct hd_batch {
  hd_msg *v;
  size_t n, cap;
  uint64_t cursor;
};

struct hd_device {
  hd_tenant *tenant;
  uint64_t dev_num;
  /* The device's app numbers as of hd_broker.regs_gen == apps_gen (NULL: not read yet): a
   * connection re-arms its watch after every wake-up, and the app set changes only with a
   * registration. Owned by the device, freed with it. */
  uint32_t *apps;
  uint32_t napps;
  uint64_t apps_gen;
  char id[]; /* sized to the id: one is kept per held poll and per connection */
};

typedef struct hd_post {
  struct hd_post *next;
  void (*fn)(void *);
  void *arg;
} hd_post;

struct hd_plugin {
  hd_broker *b;
  hd_plugins *set;
  const hd_transport_ops *ops;
  void *state;
  void *dl;
  char *name;
  const hd_conf_section *conf;
  char **apps;             /* host key `apps`: which apps push deliveries cover; NULL = all */
  size_t napps;
  int created, started, stopped;
  uv_async_t async;        /* post() */
  pthread_mutex_t post_mu;
  hd_post *posts;
  int post_closed;
  hd_delivery *deliveries; /* in flight or waiting for retry */
};

struct hd_delivery {
  uint32_t magic;
  hd_plugin *p;
  hd_delivery *prev, *next;
  hd_msg msg;
  unsigned attempt;
  int in_transport;        /* accepted by deliver(), done() not yet called */
  uv_timer_t retry;
  /* Per-device deliveries (push.c): NULL finish for a per-message one. */
  hd_delivery_finish_cb finish;
  void *finish_ud;
  char device[HD_STORE_MAX_ID + 1];
  char msisdn[24];
  char tenant[72];
};

struct hd_plugins {
  hd_broker *b;
  hd_plugin **v;
  size_t n;
  size_t inflight;
};

void hd__msg_clear(hd_msg *m);
/* done_refs() from the host table. */
void hd__delivery_done_refs(hd_delivery *d, int outcome, const char *reason,
                            const char *const *refs, size_t nrefs);
/* Finish a delivery (called by host done()). */
void hd__delivery_done(hd_delivery *d, int outcome, const char *reason);

#endif
