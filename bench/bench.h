/* bench.h — what the scenarios of herald-bench share: the options and the helpers in
 * herald_bench.c (clock, publish key, the broker's pid and /proc usage, the fd limit, publish
 * requests, latency printing). The ipconn scenarios live in ipconn_bench.c. */
#ifndef HERALD_BENCH_H
#define HERALD_BENCH_H

#include <msgpack.h>
#include <stdint.h>
#include <sys/resource.h>

#include <uv.h>

#include "hist.h"
#include "zpub.h"

typedef struct opts {
  const char *url_host;
  int http_port;
  const char *zmq;
  const char *key;
  const char *tenant;
  const char *data_dir;
  const char *app;
  int connections, window, size, threads, json;
  double duration, rate;
  long devices, messages;
  int pid;
  /* ipconn scenarios */
  const char *ipc_host;  /* --ipconn HOST:PORT (default 127.0.0.1:8473) */
  int ipc_port;
  double hold;           /* idle: seconds to keep the connections open after measuring */
  int parallel;          /* connects (and registrations) in flight at once */
  /* peer adapters (peers.c) */
  const char *peer_host; /* --peer HOST:PORT: the peer's subscriber / broker address */
  int peer_port;
  const char *pub_host;  /* --publish HOST:PORT: a separate publish endpoint (Pushpin) */
  int pub_port;
  const char *sub_path, *pub_path; /* --sub-path, --pub-path (HTTP peers) */
  const char *topic;     /* --topic: MQTT topic / NATS subject (bench.in) */
  const char *stream;    /* --stream: JetStream stream name (BENCH) */
  const char *plot;      /* --plot FILE.png: latency distribution via gnuplot */
} opts;

typedef struct usage {
  double cpu_s;
  long rss_kb;
} usage;

uint64_t now_ns(void);
int load_key(opts *o, char *buf, size_t len);
/* The pid of the process listening on this TCP port (0 if none found). */
int find_broker_pid(int port);
usage broker_usage(int pid);
/* Raise the soft fd limit to the hard one; returns the soft limit now in force. */
rlim_t raise_nofile(void);
/* A ZeroMQ publish request whose data is {"s": seq, "t": ns, "p": pad bytes}. */
void build_request(msgpack_sbuffer *sb, const opts *o, const char *key, uint64_t seq,
                   uint64_t t, int pad);
void print_lat(const char *what, const hb_hist *h, int json);

/* Loss and duplicate accounting of one receiver: mark sequence number s (of m sent) in its
 * bitmap. Returns 1 the first time, 0 for a duplicate, -1 when s is not one we sent. */
static inline int hb_seen_mark(uint8_t *seen, long m, int64_t s) {
  if (s < 0 || s >= m) return -1;
  uint8_t bit = (uint8_t)(1u << (s % 8));
  if (seen[s / 8] & bit) return 0;
  seen[s / 8] |= bit;
  return 1;
}

/* The publisher of the delivery scenarios: o->messages broadcasts to o->app over ZeroMQ at
 * o->rate per second (0: all at once, before hb_paced_start returns), each built by
 * build_request with its sequence number and send time. key must outlive it. Loop thread. */
typedef struct hb_paced {
  const opts *o;
  const char *key;
  hb_zpub *z;
  long next, acked, refused;
  msgpack_sbuffer sb;
  uv_timer_t timer;
} hb_paced;
int hb_paced_start(hb_paced *p, uv_loop_t *loop, void *zctx, const opts *o, const char *key);
/* Stop publishing and close the socket; run the loop until the handles close, then free. */
void hb_paced_close(hb_paced *p);
void hb_paced_free(hb_paced *p);

int run_ipconn_idle(opts *o);
int run_ipconn(opts *o);
/* kind: 0 nchan, 1 pushpin, 2 mqtt-fanout */
int run_peer_fanout(opts *o, int kind);
/* kind: 0 mqtt-ingest, 1 nats-ingest */
int run_peer_ingest(opts *o, int kind);

#endif
