/* ingest_http.c — herald-bench ingest-http: the ingest workload over HTTP. Publishes are POSTed
 * to /v1/apps/{app}/messages with the publish key, and each counts once its 202 came back, which
 * the broker sends only after the message's commit. A keep-alive HTTP/1.1 connection carries
 * one request at a time, so the same load as `ingest --connections C --window W` (C x W
 * requests in flight) is C x W connections here. Every message's data is
 * {"s": seq, "t": send time (ns), "p": padding}, as over ZeroMQ. One loop thread. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "bench.h"
#include "httpc.h"
#include "plot.h"

typedef struct hin hin;

typedef struct hin_conn {
  hin *g;
  hb_conn *c;
  uint64_t sent_ns;
} hin_conn;

struct hin {
  opts *o;
  char key[256];
  char path[300];
  char pad[4097];
  hin_conn *conns;
  size_t n;
  uint64_t next_seq, acked, refused, failed;
  int said_why;           /* the first refusal was printed */
  uint64_t start_ns, end_ns;
  int stopping;
  hb_hist lat;
  uv_timer_t timer, progress;
};

static void on_resp(hb_conn *c, void *ud, int status, const char *body, size_t len);

static void send_one(hin_conn *hc) {
  hin *g = hc->g;
  char body[4200];
  hc->sent_ns = now_ns();
  snprintf(body, sizeof body, "{\"data\":{\"s\":%llu,\"t\":%llu,\"p\":\"%s\"}}",
           (unsigned long long)g->next_seq++, (unsigned long long)hc->sent_ns, g->pad);
  int rc = hb_conn_request(hc->c, "POST", g->path, g->key, body, on_resp, hc);
  if (rc) {
    fprintf(stderr, "herald-bench: cannot send a publish: %s\n", uv_strerror(rc));
    g->failed++;
  }
}

static void on_resp(hb_conn *c, void *ud, int status, const char *body, size_t len) {
  (void)c;
  hin_conn *hc = ud;
  hin *g = hc->g;
  if (status == 202) {
    g->acked++;
    hb_hist_record(&g->lat, now_ns() - hc->sent_ns);
  } else {
    if (status < 0) g->failed++;
    else g->refused++;
    if (!g->said_why) {
      g->said_why = 1;
      if (status < 0)
        fprintf(stderr, "herald-bench: a publish failed: %s\n", uv_strerror(status));
      else
        fprintf(stderr, "herald-bench: a publish was refused: HTTP %d %.*s\n", status,
                (int)(len > 300 ? 300 : len), body ? body : "");
    }
  }
  if (!g->stopping) send_one(hc);
}

static void on_end(uv_timer_t *t) {
  hin *g = t->data;
  g->stopping = 1;
  g->end_ns = now_ns();
  uv_timer_stop(&g->progress);
  for (size_t i = 0; i < g->n; i++) hb_conn_close(g->conns[i].c);
  uv_close((uv_handle_t *)&g->timer, NULL);
  uv_close((uv_handle_t *)&g->progress, NULL);
}

static void on_progress(uv_timer_t *t) {
  hin *g = t->data;
  double s = (now_ns() - g->start_ns) / 1e9;
  if (!g->o->json && isatty(2))
    fprintf(stderr, "\r  %.0f s  %llu acked  %.0f/s   ", s, (unsigned long long)g->acked,
            g->acked / s);
}

int run_ingest_http(opts *o) {
  if (o->batch != 1) {
    fprintf(stderr, "herald-bench: ingest-http sends one message per request (no --batch)\n");
    return 2;
  }
  hin *g = calloc(1, sizeof *g);
  if (!g) return 1;
  g->o = o;
  if (load_key(o, g->key, sizeof g->key)) {
    free(g);
    return 1;
  }
  int pad = o->size - 24 > 0 ? o->size - 24 : 0;
  if (pad > 4096) pad = 4096;
  memset(g->pad, 'x', (size_t)pad);
  snprintf(g->path, sizeof g->path, "/v1/apps/%s/messages", o->app);
  g->n = (size_t)o->connections * (size_t)o->window;
  rlim_t lim = raise_nofile();
  if ((rlim_t)g->n + 64 > lim) {
    fprintf(stderr, "herald-bench: %zu connections need more open files than the limit (%llu)\n",
            g->n, (unsigned long long)lim);
    free(g);
    return 1;
  }
  uv_loop_t loop;
  uv_loop_init(&loop);
  struct sockaddr_in addr;
  uv_ip4_addr(o->url_host, o->http_port, &addr);
  int pid = o->pid ? o->pid : find_broker_pid(o->http_port);
  g->conns = calloc(g->n, sizeof *g->conns);
  hb_hist_init(&g->lat);
  for (size_t i = 0; g->conns && i < g->n; i++) {
    g->conns[i] = (hin_conn){.g = g, .c = hb_conn_new(&loop, &addr)};
    if (!g->conns[i].c) {
      fprintf(stderr, "herald-bench: out of memory for connection %zu\n", i);
      while (i) hb_conn_close(g->conns[--i].c);
      uv_run(&loop, UV_RUN_DEFAULT);
      uv_loop_close(&loop);
      free(g->conns);
      free(g);
      return 1;
    }
  }
  if (!g->conns) {
    free(g);
    return 1;
  }
  usage u0 = broker_usage(pid);
  g->start_ns = now_ns();
  for (size_t i = 0; i < g->n; i++) send_one(&g->conns[i]);
  uv_timer_init(&loop, &g->timer);
  g->timer.data = g;
  uv_timer_start(&g->timer, on_end, (uint64_t)(o->duration * 1000), 0);
  uv_timer_init(&loop, &g->progress);
  g->progress.data = g;
  uv_timer_start(&g->progress, on_progress, 1000, 1000);
  uv_run(&loop, UV_RUN_DEFAULT);
  usage u1 = broker_usage(pid);
  double secs = (g->end_ns - g->start_ns) / 1e9;
  if (!o->json && isatty(2)) fprintf(stderr, "\n");
  if (o->json) {
    printf("{\"scenario\": \"ingest-http\", \"connections\": %zu, \"window\": 1, "
           "\"payload_bytes\": %d, "
           "\"seconds\": %.2f, \"acked\": %llu, \"refused\": %llu, \"failed\": %llu, "
           "\"publishes_per_s\": %.0f, ",
           g->n, o->size, secs, (unsigned long long)g->acked, (unsigned long long)g->refused,
           (unsigned long long)g->failed, g->acked / secs);
    print_lat("ack_latency", &g->lat, 1);
    printf(", \"broker_cpu_pct\": %.1f, \"broker_rss_kb\": %ld}\n",
           100 * (u1.cpu_s - u0.cpu_s) / secs, u1.rss_kb);
  } else {
    printf("ingest-http: %zu keep-alive HTTP connections, one publish in flight each, "
           "%d-byte payloads, %.1f s\n", g->n, o->size, secs);
    printf("  acknowledged after commit  %llu (%llu refused, %llu failed)\n",
           (unsigned long long)g->acked, (unsigned long long)g->refused,
           (unsigned long long)g->failed);
    printf("  publishes/s                %.0f\n", g->acked / secs);
    print_lat("ack latency", &g->lat, 0);
    if (pid)
      printf("  broker CPU %.0f %%  RSS %ld KiB (pid %d)\n", 100 * (u1.cpu_s - u0.cpu_s) / secs,
             u1.rss_kb, pid);
  }
  hb_plot_run(o, "ingest-http: ack latency", &g->lat);
  /* The closed connections' sockets finish closing in this last run. */
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  int rc = g->acked ? 0 : 1;
  free(g->conns);
  free(g);
  return rc;
}
