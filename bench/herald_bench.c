/* herald_bench.c — load generator and meter for Herald, scenarios chosen by name.
 *
 *   herald-bench ingest   [--connections C] [--window W] [--duration S] [--size B]
 *   herald-bench longpoll [--devices N] [--messages M] [--rate R] [--threads T]
 *   herald-bench idle     [--devices N] [--hold S]                  (ipconn_bench.c)
 *   herald-bench ipconn   [--devices N] [--messages M] [--rate R] [--threads T]
 *   herald-bench updates  [--devices N] [--package-size B] [--stall K]  (updates_bench.c)
 *   herald-bench smpp     [--devices N] [--messages M] [--direct]       (smpp_bench.c)
 *
 * ingest:   C ZeroMQ DEALER publishers keep W requests each in flight with B-byte payloads and
 *           count acknowledgements (which Herald sends only after the group commit is durable).
 * longpoll: N devices are provisioned, each holds a long-poll on its own keep-alive connection;
 *           once the broker reports N held polls, M broadcasts are published to their app at R
 *           per second. Every payload carries a sequence number and its send time, so the
 *           harness counts deliveries, losses and duplicates and records publish→deliver
 *           latency; it also counts the poll answers that carried messages and the group
 *           commits the broadcasts took (herald_commits_total), which say how a burst reached
 *           the devices. Devices are spread over T client threads, each with its own loop.
 *
 * Peers (peers.c; bench/peers/ starts them, bench/run.sh runs everything side by side):
 *   herald-bench nchan | pushpin | mqtt-fanout | mqtt-ingest | nats-ingest --peer HOST:PORT ...
 * run the same workloads against Nchan, Pushpin, Mosquitto (MQTT QoS 1) and NATS JetStream.
 *
 * Results: a table on stdout, or --json (with the latency histogram's buckets). Broker CPU and
 * RSS come from /proc (--pid, or the process listening on the HTTP port). --plot FILE.png draws
 * the latency distribution after the run (plot.c); `herald-bench plot` draws saved ones side by
 * side (bench/report.py). Registrations and /metrics: prov.c. Benchmarks measure; they never
 * assert.
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <msgpack.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "../broker/bytes.h" /* hd_be64 */
#include "bench.h"
#include "json.h"
#include "hist.h"
#include "httpc.h"
#include "plot.h"
#include "prov.h"
#include "zpub.h"

uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int load_key(opts *o, char *buf, size_t len) {
  if (o->key) return snprintf(buf, len, "%s", o->key) >= (int)len;
  const char *env = getenv("HERALD_KEY");
  if (env && *env) return snprintf(buf, len, "%s", env) >= (int)len;
  char path[4096];
  snprintf(path, sizeof path, "%s/tenants/%s/publish.key", o->data_dir, o->tenant);
  FILE *f = fopen(path, "r");
  if (!f) {
    fprintf(stderr, "herald-bench: no publish key (--key, $HERALD_KEY, or %s)\n", path);
    return 1;
  }
  size_t n = fread(buf, 1, len - 1, f);
  fclose(f);
  while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) n--;
  buf[n] = 0;
  return n == 0;
}

/* ---- broker resource usage from /proc ---- */
/* The broker is the process that listens on the HTTP port: find the socket's inode in
 * /proc/net/tcp, then the process holding it. Other heraldd instances on the machine (tests,
 * other benches) are not mistaken for it. */
int find_broker_pid(int port) {
  char line[512], path[300], link[64], want[64];
  unsigned long inode = 0;
  FILE *f = fopen("/proc/net/tcp", "r");
  if (!f) return 0;
  while (fgets(line, sizeof line, f)) {
    unsigned lport, st;
    unsigned long ino;
    if (sscanf(line, " %*d: %*x:%x %*x:%*x %x %*x:%*x %*x:%*x %*x %*u %*u %lu", &lport, &st,
               &ino) == 3 && (int)lport == port && st == 0x0A) {
      inode = ino;
      break;
    }
  }
  fclose(f);
  if (!inode) return 0;
  snprintf(want, sizeof want, "socket:[%lu]", inode);
  DIR *proc = opendir("/proc");
  struct dirent *e;
  int found = 0;
  while (proc && !found && (e = readdir(proc))) {
    int pid = atoi(e->d_name);
    if (pid <= 0) continue;
    snprintf(path, sizeof path, "/proc/%d/fd", pid);
    DIR *fds = opendir(path);
    struct dirent *fe;
    while (fds && !found && (fe = readdir(fds))) {
      snprintf(path, sizeof path, "/proc/%d/fd/%s", pid, fe->d_name);
      ssize_t n = readlink(path, link, sizeof link - 1);
      if (n > 0) {
        link[n] = 0;
        if (strcmp(link, want) == 0) found = pid;
      }
    }
    if (fds) closedir(fds);
  }
  if (proc) closedir(proc);
  return found;
}

usage broker_usage(int pid) {
  usage u = {0, 0, 0};
  char path[64], buf[1024];
  if (!pid) return u;
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE *f = fopen(path, "r");
  if (f) {
    if (fgets(buf, sizeof buf, f)) {
      char *p = strrchr(buf, ')');
      unsigned long ut = 0, st = 0;
      /* fields after ")": state ppid pgrp session tty tpgid flags minflt cminflt majflt
       * cmajflt utime stime */
      if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) == 2)
        u.cpu_s = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
    }
    fclose(f);
  }
  snprintf(path, sizeof path, "/proc/%d/status", pid);
  if ((f = fopen(path, "r"))) {
    while (fgets(buf, sizeof buf, f)) {
      if (strncmp(buf, "VmRSS:", 6) == 0) u.rss_kb = atol(buf + 6);
      if (strncmp(buf, "RssAnon:", 8) == 0) u.anon_kb = atol(buf + 8);
    }
    fclose(f);
  }
  return u;
}

usage pids_usage(const opts *o) {
  usage sum = {0, 0, 0};
  for (int i = 0; i < o->npids; i++) {
    usage u = broker_usage(o->pids[i]);
    sum.cpu_s += u.cpu_s;
    sum.rss_kb += u.rss_kb;
    sum.anon_kb += u.anon_kb;
  }
  return sum;
}

rlim_t raise_nofile(void) {
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
  getrlimit(RLIMIT_NOFILE, &rl);
  return rl.rlim_cur;
}

static void pk_str(msgpack_packer *pk, const char *s) {
  msgpack_pack_str(pk, strlen(s));
  msgpack_pack_str_body(pk, s, strlen(s));
}

/* A publish request; `data` is a JSON-ish msgpack map {"s": seq, "t": ns, "p": padding}. */
void build_request(msgpack_sbuffer *sb, const opts *o, const char *key, uint64_t seq,
                   uint64_t t, int pad) {
  msgpack_packer pk;
  msgpack_sbuffer_clear(sb);
  msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
  msgpack_pack_map(&pk, 4);
  pk_str(&pk, "tenant");
  pk_str(&pk, o->tenant);
  pk_str(&pk, "key");
  pk_str(&pk, key);
  pk_str(&pk, "app");
  pk_str(&pk, o->app);
  pk_str(&pk, "data");
  msgpack_pack_map(&pk, 3);
  pk_str(&pk, "s");
  msgpack_pack_uint64(&pk, seq);
  pk_str(&pk, "t");
  msgpack_pack_uint64(&pk, t);
  pk_str(&pk, "p");
  static const char padding[4096] = {0};
  static char filled[4096];
  if (!filled[0]) memset(filled, 'x', sizeof filled);
  (void)padding;
  if (pad < 0) pad = 0;
  if (pad > 4096) pad = 4096;
  msgpack_pack_str(&pk, (size_t)pad);
  msgpack_pack_str_body(&pk, filled, (size_t)pad);
}

void print_lat(const char *what, const hb_hist *h, int json) {
  if (json) {
    printf("\"%s_ms\": {\"p50\": %.3f, \"p90\": %.3f, \"p99\": %.3f, \"p999\": %.3f, "
           "\"max\": %.3f, \"mean\": %.3f}",
           what, hb_hist_quantile(h, 0.5) / 1e6, hb_hist_quantile(h, 0.9) / 1e6,
           hb_hist_quantile(h, 0.99) / 1e6, hb_hist_quantile(h, 0.999) / 1e6, h->max / 1e6,
           hb_hist_mean(h) / 1e6);
    /* The histogram itself (non-empty buckets as [upper edge ns, count]), so bench/report.py
     * can merge rounds and draw each system's whole distribution (herald-bench plot). */
    printf(", \"%s_hist\": {\"min_ns\": %llu, \"max_ns\": %llu, \"buckets\": [", what,
           (unsigned long long)(h->count ? h->min : 0), (unsigned long long)h->max);
    const char *sep = "";
    for (unsigned i = 0; i < HB_HIST_BUCKETS; i++)
      if (h->b[i]) {
        printf("%s[%llu, %llu]", sep, (unsigned long long)hb_hist_bucket_upper(i),
               (unsigned long long)h->b[i]);
        sep = ", ";
      }
    printf("]}");
  } else {
    printf("  %-22s p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f ms\n", what,
           hb_hist_quantile(h, 0.5) / 1e6, hb_hist_quantile(h, 0.9) / 1e6,
           hb_hist_quantile(h, 0.99) / 1e6, hb_hist_quantile(h, 0.999) / 1e6, h->max / 1e6);
  }
}

/* ================= ingest ================= */
typedef struct ingest {
  opts *o;
  char key[256];
  hb_zpub **pubs;
  /* Per connection: its own correlation counter and a ring of (corr, send time), 4 windows
   * long, indexed by corr % ring. A connection has at most a window of requests in flight, so
   * a slot is reused only once its request is far behind; an ack whose slot holds another
   * corr has no send time any more and is counted in ack_unmatched, not in the histogram. */
  uint64_t *conn_corr;
  struct ingest_sent { uint64_t corr, t; } *sent;
  size_t ring;
  uint64_t unmatched;
  uint64_t acked, refused;
  uint64_t start_ns, end_ns;
  int stopping;
  hb_hist lat;
  msgpack_sbuffer sb;
  size_t s_off, t_off;  /* one message a request: where seq and time go in the template */
  uv_timer_t timer, progress;
} ingest;

/* One message a request: the request is the same bytes every time but for seq and send time,
 * so it is packed once, with both as fixed-width uint64s, and patched per send (packing it
 * anew cost the load client a fifth of its CPU). The broker sees the same map as from
 * build_request(). */
static void ingest_template(ingest *g) {
  const opts *o = g->o;
  msgpack_packer pk;
  int pad = o->size - 24 > 0 ? o->size - 24 : 0;
  static char filled[4096];
  if (!filled[0]) memset(filled, 'x', sizeof filled);
  if (pad > 4096) pad = 4096;
  msgpack_sbuffer_clear(&g->sb);
  msgpack_packer_init(&pk, &g->sb, msgpack_sbuffer_write);
  msgpack_pack_map(&pk, 4);
  pk_str(&pk, "tenant");
  pk_str(&pk, o->tenant);
  pk_str(&pk, "key");
  pk_str(&pk, g->key);
  pk_str(&pk, "app");
  pk_str(&pk, o->app);
  pk_str(&pk, "data");
  msgpack_pack_map(&pk, 3);
  pk_str(&pk, "s");
  g->s_off = g->sb.size + 1; /* after the 0xcf tag */
  msgpack_pack_fix_uint64(&pk, 0);
  pk_str(&pk, "t");
  g->t_off = g->sb.size + 1;
  msgpack_pack_fix_uint64(&pk, 0);
  pk_str(&pk, "p");
  msgpack_pack_str(&pk, (size_t)pad);
  msgpack_pack_str_body(&pk, filled, (size_t)pad);
}

/* A request of o->batch messages: {"tenant", "key", "app", "batch": [{"data": {...}}, ...]}. */
static void build_batch_request(msgpack_sbuffer *sb, const opts *o, const char *key,
                                uint64_t seq, uint64_t t, int pad) {
  msgpack_packer pk;
  msgpack_sbuffer_clear(sb);
  msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
  static char filled[4096];
  if (!filled[0]) memset(filled, 'x', sizeof filled);
  if (pad < 0) pad = 0;
  if (pad > 4096) pad = 4096;
  msgpack_pack_map(&pk, 4);
  pk_str(&pk, "tenant");
  pk_str(&pk, o->tenant);
  pk_str(&pk, "key");
  pk_str(&pk, key);
  pk_str(&pk, "app");
  pk_str(&pk, o->app);
  pk_str(&pk, "batch");
  msgpack_pack_array(&pk, (size_t)o->batch);
  for (int i = 0; i < o->batch; i++) {
    msgpack_pack_map(&pk, 1);
    pk_str(&pk, "data");
    msgpack_pack_map(&pk, 3);
    pk_str(&pk, "s");
    msgpack_pack_uint64(&pk, seq * (uint64_t)o->batch + (uint64_t)i);
    pk_str(&pk, "t");
    msgpack_pack_uint64(&pk, t);
    pk_str(&pk, "p");
    msgpack_pack_str(&pk, (size_t)pad);
    msgpack_pack_str_body(&pk, filled, (size_t)pad);
  }
}

/* Messages a batch reply acknowledged: the non-nil entries of "ids". */
static uint64_t batch_acked(const char *reply, size_t len) {
  msgpack_unpacked up;
  msgpack_unpacked_init(&up);
  uint64_t n = 0;
  size_t off = 0;
  if (msgpack_unpack_next(&up, reply, len, &off) == MSGPACK_UNPACK_SUCCESS &&
      up.data.type == MSGPACK_OBJECT_MAP)
    for (uint32_t i = 0; i < up.data.via.map.size; i++) {
      msgpack_object *k = &up.data.via.map.ptr[i].key, *v = &up.data.via.map.ptr[i].val;
      if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == 3 &&
          memcmp(k->via.str.ptr, "ids", 3) == 0 && v->type == MSGPACK_OBJECT_ARRAY)
        for (uint32_t j = 0; j < v->via.array.size; j++)
          n += v->via.array.ptr[j].type != MSGPACK_OBJECT_NIL;
    }
  msgpack_unpacked_destroy(&up);
  return n;
}

static void ingest_send(ingest *g, int conn) {
  uint64_t corr = g->conn_corr[conn]++;
  uint64_t t = now_ns();
  if (g->o->batch > 1) {
    build_batch_request(&g->sb, g->o, g->key, corr, t, g->o->size - 24 > 0 ? g->o->size - 24 : 0);
  } else {
    if (!g->t_off) ingest_template(g);
    hd_be64((unsigned char *)g->sb.data + g->s_off, corr);
    hd_be64((unsigned char *)g->sb.data + g->t_off, t);
  }
  g->sent[(size_t)conn * g->ring + corr % g->ring] = (struct ingest_sent){corr, t};
  /* The connection index rides in the top bits of the correlation id. */
  hb_zpub_send(g->pubs[conn], corr | ((uint64_t)conn << 48), g->sb.data, g->sb.size);
}

typedef struct ingest_conn {
  ingest *g;
  int idx;
} ingest_conn;

static void on_ingest_ack(void *ud, uint64_t corr, int ok, const char *reply, size_t len) {
  ingest_conn *ic = ud;
  ingest *g = ic->g;
  uint64_t c = corr & ((1ull << 48) - 1);
  const struct ingest_sent *st = &g->sent[(size_t)ic->idx * g->ring + c % g->ring];
  if (st->corr == c) hb_hist_record(&g->lat, now_ns() - st->t);
  else g->unmatched++;
  if (g->o->batch > 1) {
    uint64_t a = ok ? (uint64_t)g->o->batch : batch_acked(reply, len);
    g->acked += a;
    g->refused += (uint64_t)g->o->batch - a;
  } else if (ok) {
    g->acked++;
  } else {
    g->refused++;
  }
  if (!g->stopping) ingest_send(g, ic->idx);
}

static void on_ingest_end(uv_timer_t *t) {
  ingest *g = t->data;
  g->stopping = 1;
  g->end_ns = now_ns();
  uv_timer_stop(&g->progress);
  for (int i = 0; i < g->o->connections; i++) hb_zpub_close(g->pubs[i]);
  uv_close((uv_handle_t *)&g->timer, NULL);
  uv_close((uv_handle_t *)&g->progress, NULL);
}

static void on_ingest_progress(uv_timer_t *t) {
  ingest *g = t->data;
  double s = (now_ns() - g->start_ns) / 1e9;
  if (!g->o->json && isatty(2))
    fprintf(stderr, "\r  %.0f s  %llu acked  %.0f/s   ", s, (unsigned long long)g->acked,
            g->acked / s);
}

static int run_ingest(opts *o) {
  ingest g = {.o = o};
  if (load_key(o, g.key, sizeof g.key)) return 1;
  uv_loop_t loop;
  uv_loop_init(&loop);
  void *zctx = zmq_ctx_new();
  int pid = o->pid ? o->pid : find_broker_pid(o->http_port);
  g.pubs = calloc((size_t)o->connections, sizeof *g.pubs);
  g.ring = 4 * (size_t)o->window;
  g.sent = calloc((size_t)o->connections * g.ring, sizeof *g.sent);
  g.conn_corr = calloc((size_t)o->connections, sizeof *g.conn_corr);
  ingest_conn *ics = calloc((size_t)o->connections, sizeof *ics);
  msgpack_sbuffer_init(&g.sb);
  hb_hist_init(&g.lat);
  for (int i = 0; i < o->connections; i++) {
    ics[i] = (ingest_conn){&g, i};
    g.pubs[i] = hb_zpub_new(&loop, zctx, o->zmq, on_ingest_ack, &ics[i]);
    if (!g.pubs[i]) {
      fprintf(stderr, "herald-bench: cannot connect %s\n", o->zmq);
      return 1;
    }
  }
  usage u0 = broker_usage(pid);
  g.start_ns = now_ns();
  for (int i = 0; i < o->connections; i++)
    for (int w = 0; w < o->window; w++) ingest_send(&g, i);
  uv_timer_init(&loop, &g.timer);
  g.timer.data = &g;
  uv_timer_start(&g.timer, on_ingest_end, (uint64_t)(o->duration * 1000), 0);
  uv_timer_init(&loop, &g.progress);
  g.progress.data = &g;
  uv_timer_start(&g.progress, on_ingest_progress, 1000, 1000);
  uv_run(&loop, UV_RUN_DEFAULT);
  usage u1 = broker_usage(pid);
  double secs = (g.end_ns - g.start_ns) / 1e9;
  if (!o->json && isatty(2)) fprintf(stderr, "\n");
  if (o->json) {
    printf("{\"scenario\": \"ingest\", \"connections\": %d, \"window\": %d, \"batch\": %d, "
           "\"payload_bytes\": %d, "
           "\"seconds\": %.2f, \"acked\": %llu, \"refused\": %llu, \"publishes_per_s\": %.0f, ",
           o->connections, o->window, o->batch, o->size, secs, (unsigned long long)g.acked,
           (unsigned long long)g.refused, g.acked / secs);
    print_lat("ack_latency", &g.lat, 1);
    printf(", \"ack_unmatched\": %llu, \"broker_cpu_pct\": %.1f, \"broker_rss_kb\": %ld}\n",
           (unsigned long long)g.unmatched, 100 * (u1.cpu_s - u0.cpu_s) / secs, u1.rss_kb);
  } else {
    printf("ingest: %d ZeroMQ connections x %d requests in flight x %d messages each, "
           "%d-byte payloads, %.1f s\n", o->connections, o->window, o->batch, o->size, secs);
    printf("  acknowledged after commit  %llu (%llu refused)\n", (unsigned long long)g.acked,
           (unsigned long long)g.refused);
    printf("  publishes/s                %.0f\n", g.acked / secs);
    print_lat("ack latency", &g.lat, 0);
    if (g.unmatched)
      printf("  acks whose send time was overwritten (not in the latencies): %llu\n",
             (unsigned long long)g.unmatched);
    if (pid)
      printf("  broker CPU %.0f %%  RSS %ld KiB (pid %d)\n", 100 * (u1.cpu_s - u0.cpu_s) / secs,
             u1.rss_kb, pid);
  }
  hb_plot_run(o, "ingest: ack latency", &g.lat);
  zmq_ctx_term(zctx);
  uv_loop_close(&loop);
  msgpack_sbuffer_destroy(&g.sb);
  free(g.pubs);
  free(g.sent);
  free(g.conn_corr);
  free(ics);
  return 0;
}

/* ================= longpoll ================= */
typedef struct device {
  struct lpthread *th;
  long idx;
  hb_reg reg;
  char cursor[24];
  hb_conn *conn;
  uint8_t *seen; /* bitmap of sequence numbers received */
  long received;
} device;

typedef struct lpthread {
  struct lpshared *sh;
  uv_loop_t loop;
  uv_async_t stop;
  pthread_t thread;
  device *devs;
  long ndev;
  hb_rx rx;
  uint64_t errors;
  uint64_t answers;  /* poll answers that carried messages */
  struct sockaddr_in addr;
} lpthread;

typedef struct lpshared {
  opts *o;
  atomic_long polls_ok;
  atomic_long done_devices;
  atomic_int stopping;
} lpshared;

static void poll_device(device *d);

static void on_poll(hb_conn *c, void *ud, int status, const char *body, size_t len) {
  device *d = ud;
  lpthread *th = d->th;
  if (atomic_load(&th->sh->stopping)) return;
  if (status != 200) {
    th->errors++;
    poll_device(d);
    return;
  }
  uint64_t now = now_ns();
  hb_json j;
  long M = th->sh->o->messages;
  if (hb_json_parse(&j, body, len) != 0) {
    th->errors++;
  } else {
    int msgs = hb_json_key(&j, 0, "messages"), n = hb_json_count(&j, msgs);
    th->answers += n > 0;
    for (int k = 0, m = msgs + 1; k < n; k++, m = hb_json_next(&j, m)) {
      int data = hb_json_key(&j, m, "data");
      long long s = hb_json_int(&j, hb_json_key(&j, data, "s"));
      long long t = hb_json_int(&j, hb_json_key(&j, data, "t"));
      if (hb_rx_got(&th->rx, d->seen, &d->received, M, s, (uint64_t)t, now))
        atomic_fetch_add(&th->sh->done_devices, 1);
    }
    char cur[sizeof d->cursor];
    if (hb_json_str(&j, hb_json_key(&j, 0, "cursor"), cur, sizeof cur) == 0)
      memcpy(d->cursor, cur, sizeof cur);
  }
  poll_device(d);
}

static void poll_device(device *d) {
  char path[256];
  snprintf(path, sizeof path, "/v1/devices/%s/messages?wait=60%s%s", d->reg.id,
           d->cursor[0] ? "&cursor=" : "", d->cursor);
  if (hb_conn_request(d->conn, "GET", path, d->reg.token, NULL, on_poll, d)) d->th->errors++;
}

static void on_thread_stop(uv_async_t *a) {
  lpthread *th = a->data;
  for (long i = 0; i < th->ndev; i++) hb_conn_close(th->devs[i].conn);
  uv_close((uv_handle_t *)a, NULL);
}

static void *lp_thread_main(void *arg) {
  lpthread *th = arg;
  for (long i = 0; i < th->ndev; i++) {
    th->devs[i].conn = hb_conn_new(&th->loop, &th->addr);
    poll_device(&th->devs[i]);
  }
  uv_run(&th->loop, UV_RUN_DEFAULT);
  return NULL;
}

static void on_paced_ack(void *ud, uint64_t corr, int ok, const char *r, size_t len) {
  hb_paced *p = ud;
  if (ok) p->acked++;
  else p->refused++;
}

static void paced_send_one(hb_paced *p) {
  build_request(&p->sb, p->o, p->key, (uint64_t)p->next, now_ns(), 60);
  hb_zpub_send(p->z, (uint64_t)p->next, p->sb.data, p->sb.size);
  p->next++;
}

/* Every millisecond: send what is due by now on the schedule start + i / rate, so any rate is
 * kept on average (not only 1000/k per second) and a late tick catches up. */
static void on_paced_tick(uv_timer_t *t) {
  hb_paced *p = t->data;
  double elapsed = (double)(now_ns() - p->start_ns) / 1e9;
  long due = (long)(elapsed * p->o->rate) + 1;
  if (due > p->o->messages) due = p->o->messages;
  while (p->next < due) paced_send_one(p);
  if (p->next >= p->o->messages) uv_timer_stop(t);
}

int hb_paced_start(hb_paced *p, uv_loop_t *loop, void *zctx, const opts *o, const char *key) {
  memset(p, 0, sizeof *p);
  p->o = o;
  p->key = key;
  msgpack_sbuffer_init(&p->sb);
  uv_timer_init(loop, &p->timer);
  p->timer.data = p;
  if (!(p->z = hb_zpub_new(loop, zctx, o->zmq, on_paced_ack, p))) return -1;
  p->start_ns = now_ns();
  if (o->rate <= 0)
    while (p->next < o->messages) paced_send_one(p);
  else
    uv_timer_start(&p->timer, on_paced_tick, 0, 1);
  return 0;
}

void hb_paced_close(hb_paced *p) {
  uv_timer_stop(&p->timer);
  uv_close((uv_handle_t *)&p->timer, NULL);
  if (p->z) hb_zpub_close(p->z);
}

void hb_paced_free(hb_paced *p) { msgpack_sbuffer_destroy(&p->sb); }

/* --probe CMD: let an outside tool look at the broker (smaps, malloc statistics) at a phase of
 * the run, before anything is published; its output goes to stderr, next to ours. */
static void run_probe(const opts *o, const char *phase, int pid) {
  if (!o->probe) return;
  char cmd[4200];
  snprintf(cmd, sizeof cmd, "%s %s %d 1>&2", o->probe, phase, pid);
  int st = system(cmd);
  if (st != 0) fprintf(stderr, "herald-bench: probe '%s' exited with %d\n", cmd, st);
}

static int run_longpoll(opts *o) {
  rlim_t lim = raise_nofile();
  long maxdev = (long)lim - 64;
  if (o->devices > maxdev) {
    fprintf(stderr, "herald-bench: the fd limit (%llu) caps devices at %ld (asked %ld)\n",
            (unsigned long long)lim, maxdev, o->devices);
    o->devices = maxdev;
  }
  char key[256];
  if (load_key(o, key, sizeof key)) return 1;
  struct sockaddr_in addr;
  uv_ip4_addr(o->url_host, o->http_port, &addr);
  uv_loop_t loop;
  uv_loop_init(&loop);
  int pid = o->pid ? o->pid : find_broker_pid(o->http_port);

  /* 1. Devices and their tokens. */
  device *all = calloc((size_t)o->devices, sizeof *all);
  size_t bitmap = (size_t)(o->messages + 7) / 8;
  for (long i = 0; i < o->devices; i++) {
    all[i].idx = i;
    all[i].seen = calloc(bitmap, 1);
  }
  double prov_s;
  if (hb_provision(o, key, "bench", &all[0].reg, sizeof *all, o->devices, &prov_s)) return 1;

  /* 2. Every device holds a long-poll, spread over the client threads. The broker's memory is
   * read before (once the registrations' commits have settled) and once every poll is held. */
  usleep(1000000);
  run_probe(o, "idle", pid);
  usage u_idle0 = broker_usage(pid);
  lpshared sh = {.o = o};
  int T = o->threads;
  lpthread *ths = calloc((size_t)T, sizeof *ths);
  long per = (o->devices + T - 1) / T;
  for (int t = 0; t < T; t++) {
    lpthread *th = &ths[t];
    th->sh = &sh;
    th->addr = addr;
    th->devs = all + (long)t * per;
    th->ndev = (long)(t + 1) * per > o->devices ? o->devices - (long)t * per : per;
    if (th->ndev < 0) th->ndev = 0;
    for (long i = 0; i < th->ndev; i++) th->devs[i].th = th;
    hb_rx_init(&th->rx);
    uv_loop_init(&th->loop);
    uv_async_init(&th->loop, &th->stop, on_thread_stop);
    th->stop.data = th;
    pthread_create(&th->thread, NULL, lp_thread_main, th);
  }
  uint64_t deadline = now_ns() + 120ull * 1000000000u;
  long held = 0;
  while ((held = (long)hb_metric(o, "herald_held_polls")) < o->devices && now_ns() < deadline)
    usleep(100000);
  usage u_held = broker_usage(pid);
  if (held < o->devices) fprintf(stderr, "herald-bench: only %ld polls held\n", held);
  run_probe(o, "held", pid);

  /* 3. Publish M broadcasts at R per second. */
  void *zctx = zmq_ctx_new();
  hb_paced pub;
  double commits0 = hb_metric(o, "herald_commits_total");
  usage u0 = broker_usage(pid);
  uint64_t t0 = now_ns();
  if (hb_paced_start(&pub, &loop, zctx, o, key)) {
    fprintf(stderr, "herald-bench: cannot connect %s\n", o->zmq);
    return 1;
  }
  /* 4. Wait for every device to have every message (or 30 s after the last publish). */
  uint64_t end_by = 0;
  while (atomic_load(&sh.done_devices) < o->devices) {
    uv_run(&loop, UV_RUN_NOWAIT);
    if (pub.next >= o->messages && !end_by) end_by = now_ns() + 30ull * 1000000000u;
    if (end_by && now_ns() > end_by) break;
    if (!o->json && isatty(2)) {
      static uint64_t last;
      if (now_ns() - last > 500000000u) {
        last = now_ns();
        uint64_t dl = 0;
        for (int t = 0; t < T; t++) dl += ths[t].rx.deliveries;
        fprintf(stderr, "\r  published %ld/%ld  deliveries %llu   ", pub.next, o->messages,
                (unsigned long long)dl);
      }
    }
    usleep(1000);
  }
  usage u1 = broker_usage(pid);
  uint64_t t_end = now_ns();
  /* The group commits the broadcasts took: each one wakes the held polls, so together with the
   * answers it says how the burst was cut up (fewer, fuller answers are cheaper for both). */
  double commits1 = hb_metric(o, "herald_commits_total");
  double commits = commits0 >= 0 && commits1 >= 0 ? commits1 - commits0 : -1; /* -1: unread */
  atomic_store(&sh.stopping, 1);
  for (int t = 0; t < T; t++) uv_async_send(&ths[t].stop);
  hb_rx rx;
  hb_rx_init(&rx);
  uint64_t errors = 0, answers = 0;
  for (int t = 0; t < T; t++) {
    pthread_join(ths[t].thread, NULL);
    uv_loop_close(&ths[t].loop);
    hb_rx_merge(&rx, &ths[t].rx);
    errors += ths[t].errors;
    answers += ths[t].answers;
  }
  uint64_t deliveries = rx.deliveries, dups = rx.dups, last = rx.last_ns;
  const hb_hist *lat = &rx.lat;
  if (!o->json && isatty(2)) fprintf(stderr, "\n");
  hb_paced_close(&pub);
  uv_run(&loop, UV_RUN_DEFAULT);
  zmq_ctx_term(zctx);
  uv_loop_close(&loop);

  long expected = o->devices * o->messages;
  double span = ((last ? last : t_end) - t0) / 1e9;
  double cpu = span > 0 ? 100 * (u1.cpu_s - u0.cpu_s) / ((t_end - t0) / 1e9) : 0;
  double per_poll = held > 0 ? (u_held.rss_kb - u_idle0.rss_kb) * 1024.0 / (double)held : 0;
  double per_poll_anon = held > 0 ? (u_held.anon_kb - u_idle0.anon_kb) * 1024.0 / (double)held : 0;
  if (o->json) {
    printf("{\"scenario\": \"longpoll\", \"devices\": %ld, \"messages\": %ld, \"rate\": %.1f, "
           "\"threads\": %d, \"deliveries\": %llu, \"expected\": %ld, \"lost\": %ld, "
           "\"duplicates\": %llu, \"errors\": %llu, \"seconds\": %.3f, "
           "\"deliveries_per_s\": %.0f, ",
           o->devices, o->messages, o->rate, T, (unsigned long long)deliveries, expected,
           expected - (long)deliveries, (unsigned long long)dups, (unsigned long long)errors,
           span, deliveries / span);
    print_lat("latency", lat, 1);
    printf(", \"answers\": %llu, \"commits\": %.0f", (unsigned long long)answers, commits);
    printf(", \"broker_cpu_pct\": %.1f, \"broker_rss_kb\": %ld, \"held\": %ld, "
           "\"rss_per_held_poll_bytes\": %.0f, \"anon_per_held_poll_bytes\": %.0f, "
           "\"provision_s\": %.2f}\n", cpu, u1.rss_kb, held, per_poll, per_poll_anon, prov_s);
  } else {
    printf("longpoll: %ld devices, %ld broadcasts at %s%.0f/s, %d client threads\n", o->devices,
           o->messages, o->rate > 0 ? "" : "max ", o->rate, T);
    printf("  deliveries      %llu of %ld  (lost %ld, duplicates %llu, poll errors %llu)\n",
           (unsigned long long)deliveries, expected, expected - (long)deliveries,
           (unsigned long long)dups, (unsigned long long)errors);
    printf("  deliveries/s    %.0f  (first publish to last delivery: %.3f s)\n",
           deliveries / span, span);
    print_lat("publish->deliver", lat, 0);
    printf("  poll answers    %llu carrying messages (%.1f messages each); %.0f group commits\n",
           (unsigned long long)answers, answers ? (double)deliveries / (double)answers : 0,
           commits);
    if (pid)
      printf("  broker CPU %.0f %%  RSS %ld KiB; %ld held polls added %.0f B each (%.0f B "
             "anonymous) (pid %d)\n", cpu, u1.rss_kb, held, per_poll, per_poll_anon, pid);
    printf("  provisioning    %.2f s for %ld devices\n", prov_s, o->devices);
  }
  hb_plot_run(o, "longpoll: publish->deliver", lat);
  for (long i = 0; i < o->devices; i++) free(all[i].seen);
  free(all);
  free(ths);
  hb_paced_free(&pub);
  return 0;
}

/* HOST:PORT of option `name` into buf (HOST_MAX bytes; *host points at it) and *port. */
#define HOST_MAX 256
static int host_port(const char *name, const char *arg, char *buf, const char **host, int *port) {
  const char *colon = strrchr(arg, ':');
  if (!colon) {
    fprintf(stderr, "%s wants HOST:PORT\n", name);
    return -1;
  }
  snprintf(buf, HOST_MAX, "%.*s", (int)(colon - arg), arg);
  *host = buf;
  *port = atoi(colon + 1);
  return 0;
}

static void usage_text(FILE *f) {
  fprintf(f,
          "usage: herald-bench SCENARIO [options]\n"
          "scenarios:\n"
          "  ingest     ZeroMQ publishes acknowledged after commit\n"
          "  ingest-http  the same as HTTP publishes (POST /v1/apps/APP/messages, 202)\n"
          "  longpoll   broadcasts to devices holding HTTP long-polls\n"
          "  idle       N idle authenticated ipconn connections: broker RSS per connection\n"
          "  ipconn     broadcasts to devices on ipconn connections, acked\n"
          "  updates    N agents: update-check, download (SHA-256 checked), install report\n"
          "  smpp       messages escalated to SMS: submits into an SMSC, receipts, loss\n"
          "options:\n"
          "  --http HOST:PORT   (default 127.0.0.1:8470)    --zmq ENDPOINT (tcp://127.0.0.1:8471)\n"
          "  --key K | $HERALD_KEY | --data-dir D (./var/herald) --tenant T (default)\n"
          "  --app A            (default bench)\n"
          "  ingest:   --connections C (4) --window W (256) --duration S (10) --size B (100)\n"
          "            --batch N (1): N messages per request (the ingress's \"batch\")\n"
          "  ingest-http: C x W keep-alive connections, one publish in flight each\n"
          "  longpoll: --devices N (1000) --messages M (100) --rate R per second (10; 0 = all at\n"
          "            once) --threads T (1) --probe CMD (runs \"CMD idle|held PID\" before\n"
          "            the polls and once all are held: bench/heldpoll_mem.sh uses it)\n"
          "  idle, ipconn: --ipconn HOST:PORT (127.0.0.1:8473) --devices N --parallel P (256\n"
          "            connects in flight) --threads T; idle: --hold S (0) keeps them open\n"
          "            after measuring; ipconn: --messages M --rate R as for longpoll\n"
          "  updates:  --devices N (1000) --package-size B (4194304; K/M suffixes) uploads a\n"
          "            release, or --release V with --app A uses one; --stall K clients stop\n"
          "            reading their download; --threads T (1) --parallel P (256 checks in\n"
          "            flight); without --app a fresh app per run\n"
          "  smpp:     heraldd with the sms transport and push_policy = sms (bench/peers/\n"
          "            smsc.sh); --devices N (1000) --messages M (100) --rate R (10; 0 = all at\n"
          "            once) --direct (a message per device) --events ENDPOINT\n"
          "            (tcp://127.0.0.1:8472) --smsc-log FILE (the SMSC's JSON lines)\n"
          "            --smsc-name NAME (main) --smsc-pid P (its CPU too); without --app a\n"
          "            fresh app per run\n"
          "peers (bench/peers/ starts them; same workloads, --peer HOST:PORT, --pid P):\n"
          "  nchan, pushpin     as longpoll; --sub-path (/sub) --pub-path (/pub); pushpin:\n"
          "                     --publish HOST:PORT of its origin (bench/peers/pushpin.sh),\n"
          "                     --sub-path /lp --peer-stats ipc://DIR/run/pushpin-stats (its\n"
          "                     handler's stats socket: publish once every poll is held)\n"
          "  mqtt-fanout        as ipconn, MQTT 3.1.1 QoS 1 (--topic, default bench.in)\n"
          "  mqtt-ingest, nats-ingest  as ingest; MQTT QoS 1 PUBACK / JetStream ack (--stream)\n"
          "  zmq-echo           not a client: serves --zmq ENDPOINT, answering each request as\n"
          "                     an accepted publish at once (nothing parsed or stored); ingest\n"
          "                     against it is the floor of ZeroMQ and the load client;\n"
          "                     --sync-file F: the durable floor, each group of requests\n"
          "                     written to F (a 64 MiB ring) and fdatasync'd before its replies;\n"
          "                     --sync-grow: F grows as a log instead (a growing store's cost);\n"
          "                     --sync-lmdb DIR: each group stored in LMDB in DIR instead, as\n"
          "                     Herald's store keeps publishes, one durable commit per group\n"
          "  lp-echo            not a client: serves --http HOST:PORT as the part of Nchan's\n"
          "                     long-poll the nchan adapter uses (/sub/CH, /pub/CH), answering\n"
          "                     held polls with each message at once (no auth, store, JSON);\n"
          "                     nchan against it is the floor of HTTP long-poll and the client;\n"
          "                     --threads T: T loops on the port (SO_REUSEPORT), every core\n"
          "  --pid P[,P...]     broker pid for CPU/RSS (default: whoever listens on the HTTP port);\n"
          "                     a peer of several processes: their CPU and RSS added up\n"
          "  --json             one JSON object instead of the table\n"
          "  --plot FILE.png    after the run, draw the latency distribution (percentile\n"
          "                     spectrum) with gnuplot (Debian gnuplot-nox), when installed\n"
          "herald-bench plot --out FILE.png [--title T] LABEL=HISTFILE...\n"
          "                     several distributions side by side (bench/report.py uses it)\n");
}

int main(int argc, char **argv) {
  opts o = {.url_host = "127.0.0.1", .http_port = 8470, .zmq = "tcp://127.0.0.1:8471",
            .tenant = "default", .data_dir = "./var/herald", .app = "bench", .connections = 4,
            .window = 256, .batch = 1, .size = 100, .threads = 1, .duration = 10, .rate = 10,
            .devices = 1000, .messages = 100, .ipc_host = "127.0.0.1", .ipc_port = 8473,
            .parallel = 256, .peer_host = "127.0.0.1", .peer_port = 0, .pub_host = "127.0.0.1",
            .sub_path = "/sub", .pub_path = "/pub", .topic = "bench.in", .stream = "BENCH",
            .package_size = 4u << 20, .events = "tcp://127.0.0.1:8472", .smsc_name = "main"};
  if (argc < 2) {
    usage_text(stderr);
    return 2;
  }
  const char *scenario = argv[1];
  if (strcmp(scenario, "plot") == 0) return hb_plot_main(argc - 1, argv + 1);
  enum { O_HTTP = 256, O_ZMQ, O_KEY, O_DATA, O_TENANT, O_APP, O_CONN, O_WIN, O_DUR, O_SIZE,
         O_DEV, O_MSG, O_RATE, O_THR, O_PID, O_JSON, O_IPC, O_HOLD, O_PAR,
         O_PEER, O_PUBLISH, O_SUBP, O_PUBP, O_TOPIC, O_STREAM, O_BATCH, O_PLOT, O_PROBE, O_PSTATS,
         O_PKG, O_REL, O_STALL, O_EVENTS, O_SMSCLOG, O_SMSCNAME, O_DIRECTMSG, O_SMSCPID,
         O_SYNCF, O_SYNCG, O_SYNCL };
  static const struct option lo[] = {
      {"http", 1, 0, O_HTTP},       {"zmq", 1, 0, O_ZMQ},        {"key", 1, 0, O_KEY},
      {"data-dir", 1, 0, O_DATA},   {"tenant", 1, 0, O_TENANT},  {"app", 1, 0, O_APP},
      {"connections", 1, 0, O_CONN}, {"window", 1, 0, O_WIN},    {"duration", 1, 0, O_DUR},
      {"batch", 1, 0, O_BATCH},
      {"size", 1, 0, O_SIZE},       {"devices", 1, 0, O_DEV},    {"messages", 1, 0, O_MSG},
      {"rate", 1, 0, O_RATE},       {"threads", 1, 0, O_THR},    {"pid", 1, 0, O_PID},
      {"json", 0, 0, O_JSON},       {"help", 0, 0, 'h'},         {"ipconn", 1, 0, O_IPC},
      {"hold", 1, 0, O_HOLD},       {"parallel", 1, 0, O_PAR},
      {"peer", 1, 0, O_PEER},       {"publish", 1, 0, O_PUBLISH}, {"sub-path", 1, 0, O_SUBP},
      {"pub-path", 1, 0, O_PUBP},   {"topic", 1, 0, O_TOPIC},    {"stream", 1, 0, O_STREAM},
      {"plot", 1, 0, O_PLOT},       {"probe", 1, 0, O_PROBE},   {"peer-stats", 1, 0, O_PSTATS},
      {"package-size", 1, 0, O_PKG}, {"release", 1, 0, O_REL},  {"stall", 1, 0, O_STALL},
      {"events", 1, 0, O_EVENTS},   {"smsc-log", 1, 0, O_SMSCLOG}, {"smsc-name", 1, 0, O_SMSCNAME},
      {"direct", 0, 0, O_DIRECTMSG}, {"smsc-pid", 1, 0, O_SMSCPID},
      {"sync-file", 1, 0, O_SYNCF}, {"sync-grow", 0, 0, O_SYNCG},
      {"sync-lmdb", 1, 0, O_SYNCL},
      {0, 0, 0, 0}};
  int c;
  optind = 2;
  static char host[HOST_MAX], ipc_host[HOST_MAX], peer_host[HOST_MAX], pub_host[HOST_MAX];
  while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
    switch (c) {
    case O_HTTP:
      if (host_port("--http", optarg, host, &o.url_host, &o.http_port)) return 2;
      break;
    case O_ZMQ: o.zmq = optarg; break;
    case O_KEY: o.key = optarg; break;
    case O_DATA: o.data_dir = optarg; break;
    case O_TENANT: o.tenant = optarg; break;
    case O_APP: o.app = optarg; o.app_set = 1; break;
    case O_CONN: o.connections = atoi(optarg); break;
    case O_WIN: o.window = atoi(optarg); break;
    case O_BATCH: o.batch = atoi(optarg); break;
    case O_DUR: o.duration = atof(optarg); break;
    case O_SIZE: o.size = atoi(optarg); break;
    case O_DEV: o.devices = atol(optarg); break;
    case O_MSG: o.messages = atol(optarg); break;
    case O_RATE: o.rate = atof(optarg); break;
    case O_THR: o.threads = atoi(optarg); break;
    case O_PID: {
      o.pid_arg = optarg;
      o.npids = 0;
      for (const char *p = optarg; *p && o.npids < 16;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v <= 0) {
          fprintf(stderr, "--pid wants PID[,PID...]\n");
          return 2;
        }
        o.pids[o.npids++] = (int)v;
        p = *end == ',' ? end + 1 : end;
      }
      o.pid = o.npids ? o.pids[0] : 0;
      break;
    }
    case O_JSON: o.json = 1; break;
    case O_IPC:
      if (host_port("--ipconn", optarg, ipc_host, &o.ipc_host, &o.ipc_port)) return 2;
      break;
    case O_HOLD: o.hold = atof(optarg); break;
    case O_PAR: o.parallel = atoi(optarg); break;
    case O_PEER:
      if (host_port("--peer", optarg, peer_host, &o.peer_host, &o.peer_port)) return 2;
      break;
    case O_PUBLISH:
      if (host_port("--publish", optarg, pub_host, &o.pub_host, &o.pub_port)) return 2;
      break;
    case O_SUBP: o.sub_path = optarg; break;
    case O_PUBP: o.pub_path = optarg; break;
    case O_TOPIC: o.topic = optarg; break;
    case O_STREAM: o.stream = optarg; break;
    case O_PLOT: o.plot = optarg; break;
    case O_PROBE: o.probe = optarg; break;
    case O_PSTATS: o.peer_stats = optarg; break;
    case O_PKG: {
      char *end;
      double v = strtod(optarg, &end);
      o.package_size = (uint64_t)(v * (*end == 'K' || *end == 'k' ? 1024.0
                                       : *end == 'M' || *end == 'm' ? 1048576.0 : 1.0));
      break;
    }
    case O_REL: o.release = optarg; break;
    case O_STALL: o.stall = atol(optarg); break;
    case O_EVENTS: o.events = optarg; break;
    case O_SMSCLOG: o.smsc_log = optarg; break;
    case O_SMSCNAME: o.smsc_name = optarg; break;
    case O_DIRECTMSG: o.direct = 1; break;
    case O_SMSCPID: o.smsc_pid = atoi(optarg); break;
    case O_SYNCF: o.sync_file = optarg; break;
    case O_SYNCG: o.sync_grow = 1; break;
    case O_SYNCL: o.sync_lmdb = optarg; break;
    case 'h': usage_text(stdout); return 0;
    default: usage_text(stderr); return 2;
    }
  }
  if (o.batch < 1 || o.batch > 1000 || o.connections < 1 || o.window < 1 || o.threads < 1 || o.devices < 1 || o.messages < 1 ||
      o.duration <= 0 || o.parallel < 1) {
    fprintf(stderr, "herald-bench: counts must be positive\n");
    return 2;
  }
  if (strcmp(scenario, "ingest") == 0) return run_ingest(&o);
  if (strcmp(scenario, "ingest-http") == 0) return run_ingest_http(&o);
  if (strcmp(scenario, "longpoll") == 0) return run_longpoll(&o);
  if (strcmp(scenario, "idle") == 0) return run_ipconn_idle(&o);
  if (strcmp(scenario, "ipconn") == 0) return run_ipconn(&o);
  if (strcmp(scenario, "nchan") == 0) return run_peer_fanout(&o, 0);
  if (strcmp(scenario, "pushpin") == 0) return run_peer_fanout(&o, 1);
  if (strcmp(scenario, "mqtt-fanout") == 0) return run_peer_fanout(&o, 2);
  if (strcmp(scenario, "mqtt-ingest") == 0) return run_peer_ingest(&o, 0);
  if (strcmp(scenario, "nats-ingest") == 0) return run_peer_ingest(&o, 1);
  if (strcmp(scenario, "updates") == 0) return run_updates(&o);
  if (strcmp(scenario, "smpp") == 0) return run_smpp(&o);
  if (strcmp(scenario, "zmq-echo") == 0) return run_zmq_echo(&o);
  if (strcmp(scenario, "lp-echo") == 0) return run_lp_echo(&o);
  fprintf(stderr, "herald-bench: unknown scenario '%s'\n", scenario);
  usage_text(stderr);
  return 2;
}
