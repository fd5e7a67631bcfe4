/* events.c — msgpack events on a ZeroMQ PUB socket (see events.h). */
#include "events.h"

#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "bytes.h"
#include "clock.h"
#include "herald/error.h"

#define HD_EVENTS_SNDHWM 100000

struct hd_events {
  char endpoint[256];
  void *sock;
  uint64_t sent;
  msgpack_sbuffer sb;
  /* XPUB tells us about subscriptions: with none, events are not even built. */
  int64_t nsubs;
  uv_timer_t subs_timer;
  int timer_live;
};

int hd__events_open(void *zctx, const char *endpoint, hd_events **out, char *err,
                    size_t errlen) {
  hd_events *e = calloc(1, sizeof *e);
  if (!e) return HD_ENOMEM;
  /* XPUB rather than PUB: it hands us each topic's first subscription and its last
   * unsubscription (also when the subscriber goes away), so with nobody listening the broker
   * does not pack and send an event per publish (a few percent of a publish's cost). */
  e->sock = zmq_socket(zctx, ZMQ_XPUB);
  int zero = 0;
  if (!e->sock) goto fail;
  zmq_setsockopt(e->sock, ZMQ_LINGER, &zero, sizeof zero);
  /* Bursts are normal (a broadcast's receipts, a fan-out's deliveries): with libzmq's default
   * of 1,000 queued per subscriber a reading subscriber still lost events in a 20,000-SMS
   * burst. 100,000 (about 15 MB for a subscriber that stops reading) absorbs them; a
   * subscriber that falls further behind loses events, as PUB/SUB always does. */
  int hwm = HD_EVENTS_SNDHWM;
  zmq_setsockopt(e->sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
  if (zmq_bind(e->sock, endpoint) != 0) goto fail;
  size_t eplen = sizeof e->endpoint;
  if (zmq_getsockopt(e->sock, ZMQ_LAST_ENDPOINT, e->endpoint, &eplen) != 0)
    snprintf(e->endpoint, sizeof e->endpoint, "%s", endpoint);
  msgpack_sbuffer_init(&e->sb);
  *out = e;
  return 0;
fail:
  snprintf(err, errlen, "events socket %s: %s", endpoint, zmq_strerror(zmq_errno()));
  if (e->sock) zmq_close(e->sock);
  free(e);
  return HD_EIO;
}

/* Read the subscription changes XPUB queued: first byte 1 = subscribe, 0 = unsubscribe. */
static void read_subscriptions(hd_events *e) {
  char buf[256];
  for (int i = 0; i < 10000; i++) {
    int n = zmq_recv(e->sock, buf, sizeof buf, ZMQ_DONTWAIT);
    if (n < 1) break;
    if (buf[0] == 1) e->nsubs++;
    else if (buf[0] == 0 && e->nsubs > 0) e->nsubs--;
  }
}

static void on_subs_timer(uv_timer_t *t) { read_subscriptions(t->data); }

int hd__events_watch(hd_events *e, uv_loop_t *loop) {
  if (!e) return 0;
  int rc = uv_timer_init(loop, &e->subs_timer);
  if (rc) return hd_err_from_uv(rc);
  e->subs_timer.data = e;
  e->timer_live = 1;
  read_subscriptions(e);
  uv_timer_start(&e->subs_timer, on_subs_timer, 50, 50);
  return 0;
}

void hd__events_stop(hd_events *e) {
  if (!e || !e->timer_live) return;
  e->timer_live = 0;
  uv_timer_stop(&e->subs_timer);
  uv_close((uv_handle_t *)&e->subs_timer, NULL);
}

int hd__events_listened(const hd_events *e) { return e && e->nsubs > 0; }

void hd__events_close(hd_events *e) {
  if (!e) return;
  zmq_close(e->sock);
  msgpack_sbuffer_destroy(&e->sb);
  free(e);
}

uint64_t hd__events_sent(const hd_events *e) { return e ? e->sent : 0; }

const char *hd__events_endpoint(const hd_events *e) { return e->endpoint; }

static void pk_str(msgpack_packer *pk, const char *s) {
  size_t n = strlen(s);
  msgpack_pack_str(pk, n);
  msgpack_pack_str_body(pk, s, n);
}

static void pk_kv_str(msgpack_packer *pk, const char *k, const char *v) {
  pk_str(pk, k);
  if (v) pk_str(pk, v);
  else msgpack_pack_nil(pk);
}

static void pk_kv_u64(msgpack_packer *pk, const char *k, uint64_t v) {
  pk_str(pk, k);
  msgpack_pack_uint64(pk, v);
}

/* Message ids travel as decimal strings everywhere (HTTP, ZeroMQ replies, events): a u64 does
 * not fit every client's number type. */
static void pk_kv_id(msgpack_packer *pk, const char *k, uint64_t v) {
  char b[20];
  size_t n = hd_u64_dec(b, v);
  pk_str(pk, k);
  msgpack_pack_str(pk, n);
  msgpack_pack_str_body(pk, b, n);
}


/* Begin a map of n+2 entries with "event" and "ts" already in it. */
static msgpack_packer begin(hd_events *e, const char *kind, size_t n) {
  msgpack_packer pk;
  msgpack_sbuffer_clear(&e->sb);
  msgpack_packer_init(&pk, &e->sb, msgpack_sbuffer_write);
  msgpack_pack_map(&pk, n + 2);
  pk_kv_str(&pk, "event", kind);
  pk_str(&pk, "ts");
  msgpack_pack_int64(&pk, hd__wall_ms());
  return pk;
}

static void send_event(hd_events *e, const char *tenant, const char *kind) {
  char topic[160];
  int n = snprintf(topic, sizeof topic, "%s.%s", tenant ? tenant : "*", kind);
  if (n < 0 || (size_t)n >= sizeof topic) return;
  /* ZMQ_DONTWAIT: a PUB socket never blocks anyway, but say so. */
  if (zmq_send(e->sock, topic, (size_t)n, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) return;
  if (zmq_send(e->sock, e->sb.data, e->sb.size, ZMQ_DONTWAIT) >= 0) e->sent++;
}

void hd__events_published(hd_events *e, const char *tenant, const char *app, uint64_t id,
                          const char *to, uint64_t replaced) {
  if (!e || !e->nsubs) return;
  msgpack_packer pk = begin(e, "published", 5);
  pk_kv_str(&pk, "tenant", tenant);
  pk_kv_str(&pk, "app", app);
  pk_kv_id(&pk, "id", id);
  pk_kv_str(&pk, "to", to);
  if (replaced) pk_kv_id(&pk, "replaced", replaced);
  else pk_kv_str(&pk, "replaced", NULL);
  send_event(e, tenant, "published");
}

void hd__events_acked(hd_events *e, const char *tenant, const char *device, size_t count) {
  if (!e || !e->nsubs) return; /* one per ack: like "published", only for a listener */
  msgpack_packer pk = begin(e, "acked", 3);
  pk_kv_str(&pk, "tenant", tenant);
  pk_kv_str(&pk, "device", device);
  pk_kv_u64(&pk, "count", count);
  send_event(e, tenant, "acked");
}

void hd__events_registered(hd_events *e, const char *tenant, const char *app,
                           const char *device) {
  if (!e) return;
  msgpack_packer pk = begin(e, "registered", 3);
  pk_kv_str(&pk, "tenant", tenant);
  pk_kv_str(&pk, "app", app);
  pk_kv_str(&pk, "device", device);
  send_event(e, tenant, "registered");
}

void hd__events_expired(hd_events *e, size_t count) {
  if (!e || !count) return;
  msgpack_packer pk = begin(e, "expired", 1);
  pk_kv_u64(&pk, "count", count);
  send_event(e, NULL, "expired");
}

void hd__events_delivery(hd_events *e, const char *transport, const char *result, uint64_t id,
                         const char *app, const char *to, unsigned attempt, const char *reason) {
  if (!e || !e->nsubs) return; /* one per push attempt: only for a listener */
  msgpack_packer pk = begin(e, "delivery", 7);
  pk_kv_str(&pk, "transport", transport);
  pk_kv_str(&pk, "result", result);
  pk_kv_id(&pk, "id", id);
  pk_kv_str(&pk, "app", app);
  pk_kv_str(&pk, "to", to);
  pk_kv_u64(&pk, "attempt", attempt);
  pk_kv_str(&pk, "reason", reason);
  send_event(e, NULL, "delivery");
}

void hd__events_inbound(hd_events *e, const char *transport, const char *from, const char *to,
                        const char *text, size_t len) {
  if (!e) return;
  msgpack_packer pk = begin(e, "inbound", 4);
  pk_kv_str(&pk, "transport", transport);
  pk_kv_str(&pk, "from", from);
  pk_kv_str(&pk, "to", to);
  msgpack_pack_str(&pk, 4);
  msgpack_pack_str_body(&pk, "text", 4);
  msgpack_pack_str(&pk, len);
  msgpack_pack_str_body(&pk, text ? text : "", len);
  send_event(e, NULL, "inbound");
}

void hd__events_receipt(hd_events *e, const char *transport, const char *tenant, uint64_t id,
                        const char *app, const char *device, const char *state,
                        const char *detail) {
  if (!e) return;
  msgpack_packer pk = begin(e, "receipt", 7);
  pk_kv_str(&pk, "transport", transport);
  pk_kv_str(&pk, "tenant", tenant);
  pk_kv_id(&pk, "id", id);
  pk_kv_str(&pk, "app", app);
  pk_kv_str(&pk, "to", device);
  pk_kv_str(&pk, "state", state);
  pk_kv_str(&pk, "detail", detail);
  send_event(e, tenant, "receipt");
}

void hd__events_download(hd_events *e, const char *tenant, const char *device, const char *app,
                         const char *version, uint64_t bytes, int complete) {
  if (!e) return;
  msgpack_packer pk = begin(e, "download", 6);
  pk_kv_str(&pk, "tenant", tenant);
  pk_kv_str(&pk, "device", device);
  pk_kv_str(&pk, "app", app);
  pk_kv_str(&pk, "version", version);
  pk_kv_u64(&pk, "bytes", bytes);
  pk_str(&pk, "complete");
  if (complete) msgpack_pack_true(&pk);
  else msgpack_pack_false(&pk);
  send_event(e, tenant, "download");
}

void hd__events_install(hd_events *e, const char *tenant, const char *device, const char *app,
                        const char *version, const char *result, const char *reason,
                        const char *action) {
  if (!e) return;
  msgpack_packer pk = begin(e, "install", 7);
  pk_kv_str(&pk, "tenant", tenant);
  pk_kv_str(&pk, "device", device);
  pk_kv_str(&pk, "app", app);
  pk_kv_str(&pk, "version", version);
  pk_kv_str(&pk, "result", result);
  pk_kv_str(&pk, "reason", reason);
  pk_kv_str(&pk, "action", action);
  send_event(e, tenant, "install");
}

void hd__events_release(hd_events *e, const char *tenant, const char *app, const char *version,
                        double rollout, const char *state) {
  if (!e) return;
  msgpack_packer pk = begin(e, "release", 5);
  pk_kv_str(&pk, "tenant", tenant);
  pk_kv_str(&pk, "app", app);
  pk_kv_str(&pk, "version", version);
  pk_str(&pk, "rollout");
  msgpack_pack_double(&pk, rollout);
  pk_kv_str(&pk, "state", state);
  send_event(e, tenant, "release");
}
