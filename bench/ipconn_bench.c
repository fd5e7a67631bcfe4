/* ipconn_bench.c — herald-bench scenarios for the ipconn transport, on the client library the
 * handset agent uses (clients/libherald/hdc_client.h).
 *
 *   idle:   provision N devices, open N authenticated connections that then only exchange
 *           heartbeats, and read the broker's RSS before and after: (after - before) / N is
 *           what one idle connection costs (VmRSS, and RssAnon, which leaves out file pages
 *           such as the LMDB map). The fd limits of both processes cap N, and we say so.
 *   ipconn: provision N devices and connect them, then publish M broadcasts at R per second
 *           over ZeroMQ; each client acks every message as it arrives. Counts deliveries,
 *           losses, duplicates, acks confirmed, and publish->deliver latency.
 *
 * Connections are spread over T client threads, each with its own loop; at most P connects are
 * in flight at once (a burst of 20,000 SYNs would overflow the listen backlog). Benchmarks
 * measure; they never assert.
 */
#include <dirent.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "bench.h"
#include "hdc_client.h"
#include "httpc.h"
#include "plot.h"
#include "prov.h"
#include "zpub.h"

typedef struct idev {
  struct ithread *th;
  hb_reg reg;
  hdc_conn *c;
  uint8_t *seen; /* ipconn: bitmap of sequence numbers received */
  long received;
  int ready;     /* the welcome arrived (once) */
  int attempts;
} idev;

typedef struct ishared {
  opts *o;
  int deliver;            /* 1: the ipconn scenario (parse, dedupe, ack) */
  atomic_long ready, failed, done_devices, dropped;
  atomic_int stopping;
} ishared;

typedef struct ithread {
  ishared *sh;
  uv_loop_t loop;
  uv_async_t stop;
  pthread_t thread;
  idev *devs;
  long ndev, next, inflight, maxinflight;
  hb_rx rx;
  uint64_t acks_sent, acks_confirmed;
  long denied;
  char deny_code[64];
} ithread;

/* How many more descriptors the broker may open: its soft limit minus what it holds. */
static long broker_fd_room(int pid, long *soft) {
  char path[64], buf[256];
  *soft = 0;
  snprintf(path, sizeof path, "/proc/%d/limits", pid);
  FILE *f = pid ? fopen(path, "r") : NULL;
  if (!f) return -1;
  while (fgets(buf, sizeof buf, f))
    if (strncmp(buf, "Max open files", 14) == 0) *soft = atol(buf + 14);
  fclose(f);
  snprintf(path, sizeof path, "/proc/%d/fd", pid);
  DIR *d = opendir(path);
  if (!d) return -1;
  long open = 0;
  for (struct dirent *e; (e = readdir(d));)
    if (e->d_name[0] != '.') open++;
  closedir(d);
  return *soft - open;
}

static void sleep_s(double s) {
  struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
  nanosleep(&ts, NULL);
}

/* ---- the client threads ---- */
static void dev_connect(idev *d);

static void pace(ithread *th) {
  while (!atomic_load(&th->sh->stopping) && th->next < th->ndev &&
         th->inflight < th->maxinflight) {
    th->inflight++;
    dev_connect(&th->devs[th->next++]);
  }
}

static void on_ready(hdc_conn *c, void *ud, const hdc_frame *w) {
  idev *d = ud;
  ithread *th = d->th;
  if (!d->ready) {
    d->ready = 1;
    th->inflight--;
    atomic_fetch_add(&th->sh->ready, 1);
    pace(th);
  }
}

/* Read "s" and "t" of the payload {"s": seq, "t": ns, "p": ...}. */
static int payload_seq(const hdc_frame *f, uint64_t *s, uint64_t *t) {
  hdc_rd r = {f->data, f->data + f->data_len};
  uint32_t n;
  int got = 0;
  if (hdc_rd_map(&r, &n)) return -1;
  for (uint32_t i = 0; i < n; i++) {
    const char *k;
    uint32_t kl;
    if (hdc_rd_str(&r, &k, &kl)) return -1;
    if (kl == 1 && k[0] == 's' && hdc_rd_uint(&r, s) == 0) got |= 1;
    else if (kl == 1 && k[0] == 't' && hdc_rd_uint(&r, t) == 0) got |= 2;
    else if (hdc_rd_skip(&r, NULL, NULL)) return -1;
  }
  return got == 3 ? 0 : -1;
}

static void on_msg(hdc_conn *c, void *ud, const hdc_frame *f) {
  idev *d = ud;
  ithread *th = d->th;
  uint64_t now = now_ns(), s, t;
  if (hdc_conn_ack(c, &f->id, 1) == 0) th->acks_sent++;
  if (!th->sh->deliver || payload_seq(f, &s, &t)) return;
  if (s <= INT64_MAX && hb_rx_got(&th->rx, d->seen, &d->received, th->sh->o->messages,
                                  (int64_t)s, t, now))
    atomic_fetch_add(&th->sh->done_devices, 1);
}

static void on_acked(hdc_conn *c, void *ud, const uint64_t *ids, size_t n) {
  ((idev *)ud)->th->acks_confirmed += n;
}

static void on_close(hdc_conn *c, void *ud, const hdc_close_info *why) {
  idev *d = ud;
  ithread *th = d->th;
  d->c = NULL;
  if (atomic_load(&th->sh->stopping)) return;
  if (why->status == HDC_EDENIED) {
    /* A deny is an answer, not a glitch: count it and do not retry. */
    th->denied++;
    snprintf(th->deny_code, sizeof th->deny_code, "%s", why->code);
    if (!d->ready) {
      th->inflight--;
      atomic_fetch_add(&th->sh->failed, 1);
      pace(th);
    }
    return;
  }
  if (d->ready) {
    /* Dropped after the welcome: reconnect (unacked messages come again). */
    atomic_fetch_add(&th->sh->dropped, 1);
    dev_connect(d);
    return;
  }
  if (++d->attempts < 5) { /* e.g. a full accept queue: try again shortly */
    dev_connect(d);
    return;
  }
  th->inflight--;
  atomic_fetch_add(&th->sh->failed, 1);
  fprintf(stderr, "herald-bench: %s could not connect: %s %s\n", d->reg.id,
          hdc_strerror(why->status), why->sys_err ? uv_strerror(why->sys_err) : "");
  pace(th);
}

static void dev_connect(idev *d) {
  ithread *th = d->th;
  opts *o = th->sh->o;
  static const hdc_conn_cbs cbs = {
      .on_ready = on_ready, .on_msg = on_msg, .on_acked = on_acked, .on_close = on_close};
  hdc_conn_opts co = {.host = o->ipc_host,
                      .port = o->ipc_port,
                      .device = d->reg.id,
                      .tenant = o->tenant,
                      .token = d->reg.token,
                      .agent = "herald-bench",
                      .connect_timeout_ms = 60000};
  if (hdc_conn_open(&th->loop, &co, &cbs, d, &d->c)) {
    d->c = NULL;
    th->inflight--;
    atomic_fetch_add(&th->sh->failed, 1);
  }
}

static void on_thread_stop(uv_async_t *a) {
  ithread *th = a->data;
  for (long i = 0; i < th->ndev; i++)
    if (th->devs[i].c) hdc_conn_close(th->devs[i].c);
  uv_close((uv_handle_t *)a, NULL);
}

static void *thread_main(void *arg) {
  ithread *th = arg;
  pace(th);
  uv_run(&th->loop, UV_RUN_DEFAULT);
  return NULL;
}

/* ---- common set-up: limits, devices, connections ---- */
typedef struct run {
  opts *o;
  int pid;
  char key[256];
  idev *devs;
  ithread *ths;
  ishared sh;
  double prov_s, connect_s;
} run;

static int setup(run *r, opts *o, int deliver) {
  r->o = o;
  r->sh.o = o;
  r->sh.deliver = deliver;
  rlim_t lim = raise_nofile();
  r->pid = o->pid ? o->pid : find_broker_pid(o->http_port);
  /* Client side: one descriptor per connection, plus a margin for the loop, threads, HTTP
   * and ZeroMQ. */
  long cap = (long)lim - 100;
  if (o->devices > cap) {
    fprintf(stderr,
            "herald-bench: this process's fd limit (%llu, the hard limit) caps connections at "
            "%ld (asked %ld)\n",
            (unsigned long long)lim, cap, o->devices);
    o->devices = cap;
  }
  long bsoft;
  long room = r->pid ? broker_fd_room(r->pid, &bsoft) : -1;
  if (room >= 0 && o->devices > room - 50) {
    fprintf(stderr,
            "herald-bench: the broker's fd limit (%ld, pid %d) caps connections at %ld "
            "(asked %ld)\n",
            bsoft, r->pid, room - 50, o->devices);
    o->devices = room - 50;
  }
  if (o->devices < 1) return 1;
  if (!r->pid) fprintf(stderr, "herald-bench: broker pid not found: no RSS figures\n");
  if (load_key(o, r->key, sizeof r->key)) return 1;
  r->devs = calloc((size_t)o->devices, sizeof *r->devs);
  size_t bitmap = (size_t)(o->messages + 7) / 8;
  for (long i = 0; deliver && i < o->devices; i++) r->devs[i].seen = calloc(bitmap, 1);
  if (hb_provision(o, r->key, "ipb", &r->devs[0].reg, sizeof *r->devs, o->devices, &r->prov_s))
    return 1;
  return 0;
}

static void connect_all(run *r) {
  opts *o = r->o;
  int T = o->threads;
  r->ths = calloc((size_t)T, sizeof *r->ths);
  long per = (o->devices + T - 1) / T;
  uint64_t t0 = now_ns();
  for (int t = 0; t < T; t++) {
    ithread *th = &r->ths[t];
    th->sh = &r->sh;
    th->devs = r->devs + (long)t * per;
    th->ndev = (long)(t + 1) * per > o->devices ? o->devices - (long)t * per : per;
    if (th->ndev < 0) th->ndev = 0;
    th->maxinflight = o->parallel / T > 0 ? o->parallel / T : 1;
    for (long i = 0; i < th->ndev; i++) th->devs[i].th = th;
    hb_rx_init(&th->rx);
    uv_loop_init(&th->loop);
    uv_async_init(&th->loop, &th->stop, on_thread_stop);
    th->stop.data = th;
    pthread_create(&th->thread, NULL, thread_main, th);
  }
  uint64_t deadline = now_ns() + 600ull * 1000000000u;
  long last = -1;
  while (atomic_load(&r->sh.ready) + atomic_load(&r->sh.failed) < o->devices &&
         now_ns() < deadline) {
    long rd = atomic_load(&r->sh.ready);
    if (!o->json && isatty(2) && rd != last) {
      fprintf(stderr, "\r  connected %ld/%ld   ", rd, o->devices);
      last = rd;
    }
    sleep_s(0.05);
  }
  if (!o->json && isatty(2)) fprintf(stderr, "\n");
  r->connect_s = (now_ns() - t0) / 1e9;
}

static void teardown(run *r) {
  atomic_store(&r->sh.stopping, 1);
  for (int t = 0; t < r->o->threads; t++) uv_async_send(&r->ths[t].stop);
  for (int t = 0; t < r->o->threads; t++) {
    pthread_join(r->ths[t].thread, NULL);
    uv_loop_close(&r->ths[t].loop);
  }
}

static void free_run(run *r) {
  for (long i = 0; r->devs && i < r->o->devices; i++) free(r->devs[i].seen);
  free(r->devs);
  free(r->ths);
}

static const char *first_deny(run *r, long *n) {
  *n = 0;
  const char *code = "";
  for (int t = 0; r->ths && t < r->o->threads; t++) {
    *n += r->ths[t].denied;
    if (r->ths[t].denied) code = r->ths[t].deny_code;
  }
  return code;
}

/* ================= idle ================= */
int run_ipconn_idle(opts *o) {
  run r = {0};
  if (setup(&r, o, 0)) {
    free_run(&r);
    return 1;
  }
  sleep_s(1.0); /* let the registrations' commits and the broker settle */
  usage m0 = broker_usage(r.pid);
  connect_all(&r);
  long ready = atomic_load(&r.sh.ready), failed = atomic_load(&r.sh.failed);
  sleep_s(2.0);
  usage m1 = broker_usage(r.pid);
  double auth = hb_metric(o, "herald_ipconn_authenticated");
  double per_rss = ready ? (m1.rss_kb - m0.rss_kb) * 1024.0 / ready : 0;
  double per_anon = ready ? (m1.anon_kb - m0.anon_kb) * 1024.0 / ready : 0;
  usage m2 = m1;
  if (o->hold > 0) {
    sleep_s(o->hold);
    m2 = broker_usage(r.pid);
  }
  long dropped = atomic_load(&r.sh.dropped), ndeny;
  const char *deny = first_deny(&r, &ndeny);
  teardown(&r);
  if (o->json) {
    printf("{\"scenario\": \"idle\", \"connections\": %ld, \"failed\": %ld, \"denied\": %ld, "
           "\"dropped\": %ld, \"broker_authenticated\": %.0f, \"connect_s\": %.2f, "
           "\"provision_s\": %.2f, \"broker_rss_kb_before\": %ld, \"broker_rss_kb_after\": %ld, "
           "\"broker_rss_kb_after_hold\": %ld, \"rss_per_conn_bytes\": %.0f, "
           "\"anon_per_conn_bytes\": %.0f, \"pid\": %d}\n",
           ready, failed, ndeny, dropped, auth, r.connect_s, r.prov_s, m0.rss_kb, m1.rss_kb,
           m2.rss_kb, per_rss, per_anon, r.pid);
  } else {
    printf("idle: %ld authenticated ipconn connections (%ld failed, %ld denied%s%s, %ld "
           "dropped)\n",
           ready, failed, ndeny, ndeny ? ": " : "", deny, dropped);
    printf("  broker counts   %.0f authenticated\n", auth);
    printf("  connect         %.2f s (provisioning %.2f s)\n", r.connect_s, r.prov_s);
    if (r.pid) {
      printf("  broker RSS      %ld KiB before, %ld KiB after (pid %d)\n", m0.rss_kb, m1.rss_kb,
             r.pid);
      printf("  per connection  %.0f bytes RSS, %.0f bytes anonymous\n", per_rss, per_anon);
      if (o->hold > 0)
        printf("  after %.0f s     %ld KiB RSS\n", o->hold, m2.rss_kb);
    }
  }
  free_run(&r);
  return 0;
}

/* ================= ipconn ================= */

int run_ipconn(opts *o) {
  run r = {0};
  if (setup(&r, o, 1)) {
    free_run(&r);
    return 1;
  }
  connect_all(&r);
  long ready = atomic_load(&r.sh.ready);
  if (ready < o->devices)
    fprintf(stderr, "herald-bench: only %ld of %ld devices connected\n", ready, o->devices);
  uv_loop_t loop;
  uv_loop_init(&loop);
  void *zctx = zmq_ctx_new();
  hb_paced pub;
  usage u0 = broker_usage(r.pid);
  uint64_t t0 = now_ns();
  if (hb_paced_start(&pub, &loop, zctx, o, r.key)) {
    fprintf(stderr, "herald-bench: cannot connect %s\n", o->zmq);
    return 1;
  }
  uint64_t end_by = 0;
  while (atomic_load(&r.sh.done_devices) < ready) {
    uv_run(&loop, UV_RUN_NOWAIT);
    if (pub.next >= o->messages && !end_by) end_by = now_ns() + 30ull * 1000000000u;
    if (end_by && now_ns() > end_by) break;
    if (!o->json && isatty(2)) {
      static uint64_t last;
      if (now_ns() - last > 500000000u) {
        last = now_ns();
        uint64_t dl = 0;
        for (int t = 0; t < o->threads; t++) dl += r.ths[t].rx.deliveries;
        fprintf(stderr, "\r  published %ld/%ld  deliveries %llu   ", pub.next, o->messages,
                (unsigned long long)dl);
      }
    }
    sleep_s(0.001);
  }
  uint64_t t_end = now_ns();
  usage u1 = broker_usage(r.pid);
  /* Give the last acks a moment to be committed and confirmed. */
  uint64_t ack_by = now_ns() + 5ull * 1000000000u;
  for (;;) {
    uint64_t sent = 0, conf = 0;
    for (int t = 0; t < o->threads; t++) {
      sent += r.ths[t].acks_sent;
      conf += r.ths[t].acks_confirmed;
    }
    if (conf >= sent || now_ns() > ack_by) break;
    uv_run(&loop, UV_RUN_NOWAIT);
    sleep_s(0.01);
  }
  if (!o->json && isatty(2)) fprintf(stderr, "\n");
  long dropped = atomic_load(&r.sh.dropped), ndeny;
  const char *deny = first_deny(&r, &ndeny);
  teardown(&r);
  hb_rx rx;
  hb_rx_init(&rx);
  uint64_t acks = 0, confirmed = 0;
  for (int t = 0; t < o->threads; t++) {
    hb_rx_merge(&rx, &r.ths[t].rx);
    acks += r.ths[t].acks_sent;
    confirmed += r.ths[t].acks_confirmed;
  }
  uint64_t deliveries = rx.deliveries, dups = rx.dups, last = rx.last_ns;
  const hb_hist *lat = &rx.lat;
  hb_paced_close(&pub);
  uv_run(&loop, UV_RUN_DEFAULT);
  zmq_ctx_term(zctx);
  uv_loop_close(&loop);
  long expected = ready * o->messages;
  double span = ((last ? last : t_end) - t0) / 1e9;
  double cpu = 100 * (u1.cpu_s - u0.cpu_s) / ((t_end - t0) / 1e9);
  if (o->json) {
    printf("{\"scenario\": \"ipconn\", \"devices\": %ld, \"connected\": %ld, \"messages\": %ld, "
           "\"rate\": %.1f, \"threads\": %d, \"deliveries\": %llu, \"expected\": %ld, "
           "\"lost\": %ld, \"duplicates\": %llu, \"acks_sent\": %llu, \"acks_confirmed\": %llu, "
           "\"dropped\": %ld, \"denied\": %ld, \"seconds\": %.3f, \"deliveries_per_s\": %.0f, ",
           o->devices, ready, o->messages, o->rate, o->threads,
           (unsigned long long)deliveries, expected, expected - (long)deliveries,
           (unsigned long long)dups, (unsigned long long)acks, (unsigned long long)confirmed,
           dropped, ndeny, span, deliveries / span);
    print_lat("latency", lat, 1);
    printf(", \"broker_cpu_pct\": %.1f, \"broker_rss_kb\": %ld, \"provision_s\": %.2f, "
           "\"connect_s\": %.2f}\n", cpu, u1.rss_kb, r.prov_s, r.connect_s);
  } else {
    printf("ipconn: %ld devices connected (of %ld), %ld broadcasts at %s%.0f/s, %d client "
           "threads\n",
           ready, o->devices, o->messages, o->rate > 0 ? "" : "max ", o->rate, o->threads);
    printf("  deliveries      %llu of %ld  (lost %ld, duplicates %llu)\n",
           (unsigned long long)deliveries, expected, expected - (long)deliveries,
           (unsigned long long)dups);
    printf("  acks            %llu sent, %llu confirmed by the broker\n",
           (unsigned long long)acks, (unsigned long long)confirmed);
    if (dropped || ndeny)
      printf("  connections     %ld dropped and reconnected, %ld denied %s\n", dropped, ndeny,
             deny);
    printf("  deliveries/s    %.0f  (first publish to last delivery: %.3f s)\n",
           deliveries / span, span);
    print_lat("publish->deliver", lat, 0);
    if (r.pid) printf("  broker CPU %.0f %%  RSS %ld KiB (pid %d)\n", cpu, u1.rss_kb, r.pid);
    printf("  provisioning    %.2f s, connecting %.2f s\n", r.prov_s, r.connect_s);
  }
  hb_plot_run(o, "ipconn: publish->deliver", lat);
  hb_paced_free(&pub);
  free_run(&r);
  return 0;
}
