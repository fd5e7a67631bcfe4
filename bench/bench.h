/* bench.h — what the scenarios of herald-bench share: the options and the helpers in
 * herald_bench.c (clock, publish key, the broker's pid and /proc usage, the fd limit, publish
 * requests, latency printing). The ipconn scenarios live in ipconn_bench.c, updates in
 * updates_bench.c, smpp in smpp_bench.c. */
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
  int batch;             /* ingest: messages per request ("batch"), 1 = one per request */
  double duration, rate;
  long devices, messages;
  int pid;               /* --pid: the broker (the first of pids) */
  int pids[16], npids;   /* --pid P1,P2,...: a peer made of several processes (Pushpin) */
  const char *pid_arg;
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
  const char *peer_stats; /* --peer-stats ENDPOINT: Pushpin handler's stats socket */
  const char *plot;      /* --plot FILE.png: latency distribution via gnuplot */
  const char *probe;     /* longpoll --probe CMD: run "CMD PHASE PID" at idle and held */
  int app_set;           /* --app was given (updates, smpp: else a fresh app per run) */
  /* updates (updates_bench.c) */
  uint64_t package_size; /* --package-size B: the release uploaded (4 MiB) */
  const char *release;   /* --release V: use this release of --app, upload none */
  long stall;            /* --stall K: K more clients that stop reading their download */
  /* smpp (smpp_bench.c) */
  const char *events;    /* --events ENDPOINT: the broker's ZeroMQ events (receipts) */
  const char *smsc_log;  /* --smsc-log FILE: the SMSC's JSON lines (bench/peers/smsc.sh) */
  const char *smsc_name; /* --smsc-name NAME: the [smsc NAME] of the metrics (main) */
  int direct;            /* --direct: a message per device, not broadcasts */
  int smsc_pid;          /* --smsc-pid P: the SMSC's CPU too (what limits the rate) */
  /* zmq-echo */
  const char *sync_file; /* --sync-file F: each group of requests written to F and fdatasync'd
                          * before any of them is answered (the durable floor) */
  int sync_grow;         /* --sync-grow: F grows as a log instead of being a 64 MiB ring */
  const char *sync_lmdb; /* --sync-lmdb DIR: each group stored in an LMDB environment in DIR
                          * as Herald's store keeps publishes, one durable commit */
} opts;

typedef struct usage {
  double cpu_s;
  long rss_kb;
  long anon_kb; /* RssAnon: RSS less file pages (the LMDB map, the binary) */
} usage;

uint64_t now_ns(void);
int load_key(opts *o, char *buf, size_t len);
/* The pid of the process listening on this TCP port (0 if none found). */
int find_broker_pid(int port);
usage broker_usage(int pid);
/* CPU and RSS of every process in o->pids, added up. */
usage pids_usage(const opts *o);
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

/* What a receiving client thread counts: latency of every first delivery, deliveries,
 * duplicates, and when the last one came. */
typedef struct hb_rx {
  hb_hist lat;
  uint64_t deliveries, dups, last_ns;
} hb_rx;

static inline void hb_rx_init(hb_rx *rx) {
  hb_hist_init(&rx->lat);
  rx->deliveries = rx->dups = rx->last_ns = 0;
}

/* A device received sequence number s, sent at t (ns), now; seen and *received are the
 * device's bitmap and count of m messages. Returns 1 when this completes the device's set. */
static inline int hb_rx_got(hb_rx *rx, uint8_t *seen, long *received, long m, int64_t s,
                            uint64_t t, uint64_t now) {
  int fresh = hb_seen_mark(seen, m, s);
  if (fresh <= 0) {
    if (fresh == 0) rx->dups++;
    return 0;
  }
  (*received)++;
  rx->deliveries++;
  rx->last_ns = now;
  hb_hist_record(&rx->lat, now - t);
  return *received == m;
}

static inline void hb_rx_merge(hb_rx *into, const hb_rx *from) {
  hb_hist_merge(&into->lat, &from->lat);
  into->deliveries += from->deliveries;
  into->dups += from->dups;
  if (from->last_ns > into->last_ns) into->last_ns = from->last_ns;
}

/* The publisher of the delivery scenarios: o->messages broadcasts to o->app over ZeroMQ at
 * o->rate per second (0: all at once, before hb_paced_start returns), each built by
 * build_request with its sequence number and send time. key must outlive it. Loop thread. */
typedef struct hb_paced {
  const opts *o;
  const char *key;
  hb_zpub *z;
  long next, acked, refused;
  uint64_t start_ns;    /* message i is due at start_ns + i / rate */
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
/* ingest over HTTP (ingest_http.c): C x W keep-alive connections, one publish in flight each. */
int run_ingest_http(opts *o);
int run_updates(opts *o);
int run_smpp(opts *o);
/* zecho.c: serve --zmq as a ZeroMQ echo until killed (the ingest workload's floor); with
 * --sync-file, a durable one (group commit to a file, fdatasync before the replies); with
 * --sync-lmdb, the same into LMDB as Herald's store keeps publishes. */
int run_zmq_echo(opts *o);
/* lpecho.c: serve --http as a minimal Nchan-style long-poll server until killed (the floor of
 * the long-poll workloads, driven by the nchan adapter). */
int run_lp_echo(opts *o);

#endif
