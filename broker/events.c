/* events.c — msgpack events on a ZeroMQ PUB socket (see events.h). */
#include "events.h"

#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "clock.h"
#include "herald/error.h"

struct hd_events {
  char endpoint[256];
  void *sock;
  uint64_t sent;
  msgpack_sbuffer sb;
};

int hd__events_open(void *zctx, const char *endpoint, hd_events **out, char *err,
                    size_t errlen) {
  hd_events *e = calloc(1, sizeof *e);
  if (!e) return HD_ENOMEM;
  e->sock = zmq_socket(zctx, ZMQ_PUB);
  int zero = 0;
  if (!e->sock) goto fail;
  zmq_setsockopt(e->sock, ZMQ_LINGER, &zero, sizeof zero);
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
  char b[24];
  snprintf(b, sizeof b, "%llu", (unsigned long long)v);
  pk_kv_str(pk, k, b);
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
  if (!e) return;
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
  if (!e) return;
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
  if (!e) return;
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
