/* peers.c — herald-bench's protocol adapters for the peers Herald is compared with
 * (bench/peers/ starts and stops them). Each runs the same workload as a Herald scenario:
 *
 *   nchan        = longpoll: N subscribers long-poll one Nchan channel (GET with If-Modified-Since
 *                  / If-None-Match from the previous message's Last-Modified / Etag), M messages
 *                  POSTed to the publisher location at R per second (0: as fast as 16 publisher
 *                  connections go).
 *   pushpin      = longpoll through Pushpin and its origin (bench/peers/grip_origin.js): N
 *                  subscribers GET /lp/CH?since=CURSOR through Pushpin; the origin answers with
 *                  what came after the cursor, or with a GRIP hold (prev-id = the cursor, so
 *                  Pushpin asks the origin again when it misses a message); M messages are POSTed
 *                  to the origin (--publish HOST:PORT, /pub/CH), which stores each and publishes
 *                  it to Pushpin. Answers are {"messages": [...], "cursor": "K"}, as Herald's.
 *   mqtt-fanout  = ipconn: N MQTT 3.1.1 clients SUBSCRIBE QoS 1, one publisher sends M QoS 1
 *                  PUBLISHes; subscribers PUBACK each, the publisher counts PUBACKs.
 *   mqtt-ingest  = ingest: C MQTT connections keep W QoS 1 PUBLISHes each in flight; a PUBACK
 *                  is the acknowledgement.
 *   nats-ingest  = ingest: C NATS connections keep W PUBs each in flight to a JetStream stream's
 *                  subject (created first with $JS.API.STREAM.CREATE, file storage); the
 *                  JetStream ack on the reply inbox is the acknowledgement.
 *
 * The peer's address is --peer HOST:PORT; its pid (--pid) gives CPU and RSS. Payloads carry the
 * sequence number and send time, as Herald's do. JSON output has the same keys as the Herald
 * scenarios so bench/report.py can put them side by side. Benchmarks measure; they never assert.
 */
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "bench.h"
#include "json.h"
#include "hist.h"
#include "httpc.h"
#include "pconn.h"
#include "plot.h"

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static void peer_addr(const opts *o, struct sockaddr_in *a) {
  uv_ip4_addr(o->peer_host, o->peer_port, a);
}

static void print_result(const char *scenario, const opts *o, long devices, long expected,
                         uint64_t deliveries, uint64_t dups, uint64_t errors, double span,
                         const hb_hist *lat, double cpu, long rss_kb) {
  if (o->json) {
    printf("{\"scenario\": \"%s\", \"devices\": %ld, \"messages\": %ld, \"rate\": %.1f, "
           "\"threads\": %d, \"deliveries\": %llu, \"expected\": %ld, \"lost\": %ld, "
           "\"duplicates\": %llu, \"errors\": %llu, \"seconds\": %.3f, "
           "\"deliveries_per_s\": %.0f, ",
           scenario, devices, o->messages, o->rate, o->threads, (unsigned long long)deliveries,
           expected, expected - (long)deliveries, (unsigned long long)dups,
           (unsigned long long)errors, span, span > 0 ? deliveries / span : 0);
    print_lat("latency", lat, 1);
    printf(", \"broker_cpu_pct\": %.1f, \"broker_rss_kb\": %ld}\n", cpu, rss_kb);
  } else {
    printf("%s: %ld subscribers, %ld messages at %s%.0f/s, %d client threads\n", scenario,
           devices, o->messages, o->rate > 0 ? "" : "max ", o->rate, o->threads);
    printf("  deliveries      %llu of %ld  (lost %ld, duplicates %llu, errors %llu)\n",
           (unsigned long long)deliveries, expected, expected - (long)deliveries,
           (unsigned long long)dups, (unsigned long long)errors);
    printf("  deliveries/s    %.0f  (first publish to last delivery: %.3f s)\n",
           span > 0 ? deliveries / span : 0, span);
    print_lat("publish->deliver", lat, 0);
    if (o->npids) printf("  peer CPU %.0f %%  RSS %ld KiB (pid %s)\n", cpu, rss_kb, o->pid_arg);
  }
  char what[64];
  snprintf(what, sizeof what, "%s: publish->deliver", scenario);
  hb_plot_run(o, what, lat);
}

/* ---- what every subscriber thread shares ---- */
typedef struct sub {
  struct sthread *th;
  long idx;
  hb_conn *http;   /* nchan, pushpin */
  uv_timer_t *backoff; /* http: re-poll after an error answer (made on the first error) */
  pconn *mq;       /* mqtt */
  char last_mod[64], etag[64];
  char cursor[24]; /* pushpin: the origin's cursor */
  uint8_t *seen;
  long received;
  int ready;
} sub;

typedef struct sshared {
  opts *o;
  int kind; /* 0 nchan, 1 pushpin, 2 mqtt */
  atomic_long ready, done_devices, failed;
  atomic_int stopping;
} sshared;

typedef struct sthread {
  sshared *sh;
  uv_loop_t loop;
  uv_async_t stop;
  uv_timer_t ping;
  pthread_t thread;
  sub *subs;
  long n, next, inflight;
  hb_rx rx;
  uint64_t errors;
  struct sockaddr_in addr;
} sthread;

static void got_seq(sub *d, int64_t s, uint64_t t, uint64_t now) {
  sthread *th = d->th;
  if (hb_rx_got(&th->rx, d->seen, &d->received, th->sh->o->messages, s, t, now))
    atomic_fetch_add(&th->sh->done_devices, 1);
}

/* ---- HTTP long-poll subscribers (nchan, pushpin) ---- */
static void lp_poll(sub *d);

static void on_backoff(uv_timer_t *t) { lp_poll(t->data); }

/* After an error answer a client waits LP_BACKOFF_MS before it polls again, as a real one would,
 * rather than hammering a peer that is refusing work. */
#define LP_BACKOFF_MS 100

static void on_lp(hb_conn *c, void *ud, int status, const char *body, size_t len) {
  sub *d = ud;
  sthread *th = d->th;
  if (atomic_load(&th->sh->stopping)) return;
  if (status == 200) {
    uint64_t now = now_ns();
    hb_json j;
    if (hb_json_parse(&j, body, len) != 0) {
      th->errors++;
    } else if (th->sh->kind == 1) { /* {"messages": [{"s","t","p"}...], "cursor": "K"} */
      int msgs = hb_json_key(&j, 0, "messages"), n = hb_json_count(&j, msgs);
      for (int k = 0, m = msgs + 1; k < n; k++, m = hb_json_next(&j, m))
        got_seq(d, hb_json_int(&j, hb_json_key(&j, m, "s")),
                (uint64_t)hb_json_int(&j, hb_json_key(&j, m, "t")), now);
      if (hb_json_str(&j, hb_json_key(&j, 0, "cursor"), d->cursor, sizeof d->cursor) != 0)
        th->errors++;
    } else {
      got_seq(d, hb_json_int(&j, hb_json_key(&j, 0, "s")),
              (uint64_t)hb_json_int(&j, hb_json_key(&j, 0, "t")), now);
    }
    snprintf(d->last_mod, sizeof d->last_mod, "%s", hb_conn_last_modified(c));
    snprintf(d->etag, sizeof d->etag, "%s", hb_conn_etag(c));
  } else if (status != 304 && status != 408) {
    /* What the peer said when it refused, for the record (the first few per thread). */
    if (th->errors < 3) {
      size_t n = len > 120 ? 120 : len;
      while (n && (body[n - 1] == '\n' || body[n - 1] == '\r')) n--;
      fprintf(stderr, "herald-bench: poll answered %d %.*s\n", status, (int)n, body);
    }
    th->errors++;
    if (!d->backoff && (d->backoff = malloc(sizeof *d->backoff))) {
      uv_timer_init(&th->loop, d->backoff);
      d->backoff->data = d;
    }
    if (d->backoff) {
      uv_timer_start(d->backoff, on_backoff, LP_BACKOFF_MS, 0);
      return;
    }
  }
  lp_poll(d);
}

static void lp_poll(sub *d) {
  sthread *th = d->th;
  opts *o = th->sh->o;
  char hdr[256] = "", path[300];
  if (th->sh->kind == 0 && d->last_mod[0])
    snprintf(hdr, sizeof hdr, "If-Modified-Since: %s\r\nIf-None-Match: %s\r\n", d->last_mod,
             d->etag);
  if (th->sh->kind == 1)
    snprintf(path, sizeof path, "%s?since=%s", o->sub_path, d->cursor[0] ? d->cursor : "0");
  else
    snprintf(path, sizeof path, "%s", o->sub_path);
  if (hb_conn_request_h(d->http, "GET", path, hdr, NULL, on_lp, d)) th->errors++;
  if (!d->ready) {
    d->ready = 1;
    atomic_fetch_add(&th->sh->ready, 1);
  }
}

/* ---- MQTT 3.1.1 ---- */
static size_t mq_varint(uint8_t *p, size_t n) {
  size_t i = 0;
  do {
    uint8_t b = n % 128;
    n /= 128;
    if (n) b |= 0x80;
    p[i++] = b;
  } while (n);
  return i;
}

/* Parse one MQTT packet: returns its total length (0 if incomplete); *type, *body, *blen. */
static size_t mq_packet(const char *buf, size_t len, uint8_t *hdr, const uint8_t **body,
                        size_t *blen) {
  if (len < 2) return 0;
  size_t rl = 0, mul = 1, i = 1;
  for (;; i++) {
    if (i >= len || i > 4) return 0;
    uint8_t b = (uint8_t)buf[i];
    rl += (b & 127) * mul;
    mul *= 128;
    if (!(b & 128)) break;
  }
  i++;
  if (len < i + rl) return 0;
  *hdr = (uint8_t)buf[0];
  *body = (const uint8_t *)buf + i;
  *blen = rl;
  return i + rl;
}

static void mq_connect(pconn *c, const char *client_id) {
  uint8_t p[128];
  size_t idl = strlen(client_id), rl = 10 + 2 + idl, n = 0;
  p[n++] = 0x10;
  n += mq_varint(p + n, rl);
  memcpy(p + n, "\0\4MQTT\4\2\0\x3c", 10); /* level 4, clean session, keep-alive 60 s */
  n += 10;
  p[n++] = (uint8_t)(idl >> 8);
  p[n++] = (uint8_t)idl;
  memcpy(p + n, client_id, idl);
  pconn_write(c, p, n + idl);
}

static void mq_subscribe(pconn *c, const char *topic) {
  uint8_t p[128];
  size_t tl = strlen(topic), n = 0;
  p[n++] = 0x82;
  n += mq_varint(p + n, 2 + 2 + tl + 1);
  p[n++] = 0;
  p[n++] = 1;
  p[n++] = (uint8_t)(tl >> 8);
  p[n++] = (uint8_t)tl;
  memcpy(p + n, topic, tl);
  n += tl;
  p[n++] = 1; /* QoS 1 */
  pconn_write(c, p, n);
}

/* PUBLISH QoS 1 with payload {seq, t, pad to size}. */
static void mq_publish(pconn *c, const char *topic, uint16_t id, uint64_t seq, uint64_t t,
                       int size) {
  uint8_t p[4200];
  size_t tl = strlen(topic), n = 0;
  if (size < 16) size = 16;
  if (size > 4096) size = 4096;
  p[n++] = 0x32;
  n += mq_varint(p + n, 2 + tl + 2 + (size_t)size);
  p[n++] = (uint8_t)(tl >> 8);
  p[n++] = (uint8_t)tl;
  memcpy(p + n, topic, tl);
  n += tl;
  p[n++] = (uint8_t)(id >> 8);
  p[n++] = (uint8_t)id;
  memcpy(p + n, &seq, 8);
  memcpy(p + n + 8, &t, 8);
  memset(p + n + 16, 'x', (size_t)size - 16);
  pconn_write(c, p, n + (size_t)size);
}

static void mq_puback(pconn *c, uint16_t id) {
  uint8_t p[4] = {0x40, 2, (uint8_t)(id >> 8), (uint8_t)id};
  pconn_write(c, p, 4);
}

static void sub_next(sthread *th);

static size_t on_mq_sub(pconn *c, void *ud, const char *buf, size_t len) {
  sub *d = ud;
  sthread *th = d->th;
  uint8_t h;
  const uint8_t *b;
  size_t bl, k = mq_packet(buf, len, &h, &b, &bl);
  if (!k) return 0;
  switch (h >> 4) {
  case 2: /* CONNACK */
    if (bl < 2 || b[1] != 0) {
      th->errors++;
      atomic_fetch_add(&th->sh->failed, 1);
    }
    break;
  case 9: /* SUBACK */
    if (!d->ready) {
      d->ready = 1;
      th->inflight--;
      atomic_fetch_add(&th->sh->ready, 1);
      sub_next(th);
    }
    break;
  case 3: { /* PUBLISH */
    int qos = (h >> 1) & 3;
    if (bl < 2) break;
    size_t tl = (size_t)b[0] << 8 | b[1], off = 2 + tl;
    uint16_t id = 0;
    if (qos) {
      id = (uint16_t)(b[off] << 8 | b[off + 1]);
      off += 2;
    }
    if (qos == 1) mq_puback(c, id);
    if (bl >= off + 16) {
      uint64_t s, t;
      memcpy(&s, b + off, 8);
      memcpy(&t, b + off + 8, 8);
      got_seq(d, (int64_t)s, t, now_ns());
    }
    break;
  }
  default: break; /* PINGRESP */
  }
  return k;
}

static void on_mq_sub_event(pconn *c, void *ud, int status) {
  sub *d = ud;
  if (status == 0) return;
  if (!atomic_load(&d->th->sh->stopping)) {
    d->th->errors++;
    if (!d->ready) {
      d->th->inflight--;
      atomic_fetch_add(&d->th->sh->failed, 1);
    }
  }
  pconn_close(c);
  d->mq = NULL;
}

static void sub_start(sub *d) {
  sthread *th = d->th;
  opts *o = th->sh->o;
  if (th->sh->kind == 2) {
    char id[48];
    snprintf(id, sizeof id, "hb-%lx-%ld", (unsigned long)(now_ns() & 0xffffff), d->idx);
    d->mq = pconn_new(&th->loop, &th->addr, on_mq_sub, on_mq_sub_event, d);
    if (!d->mq) {
      th->inflight--;
      atomic_fetch_add(&th->sh->failed, 1);
      return;
    }
    mq_connect(d->mq, id);
    mq_subscribe(d->mq, o->topic);
  } else {
    d->http = hb_conn_new(&th->loop, &th->addr);
    lp_poll(d);
    th->inflight--;
  }
}

static void sub_next(sthread *th) {
  long cap = th->sh->o->parallel / th->sh->o->threads;
  if (cap < 1) cap = 1;
  while (th->next < th->n && th->inflight < cap) {
    th->inflight++;
    sub_start(&th->subs[th->next++]);
  }
}

static void on_ping(uv_timer_t *t) {
  sthread *th = t->data;
  static const uint8_t ping[2] = {0xC0, 0};
  for (long i = 0; i < th->n; i++)
    if (th->subs[i].mq) pconn_write(th->subs[i].mq, ping, 2);
}

static void on_backoff_closed(uv_handle_t *h) { free(h); }

static void on_sthread_stop(uv_async_t *a) {
  sthread *th = a->data;
  for (long i = 0; i < th->n; i++) {
    if (th->subs[i].http) hb_conn_close(th->subs[i].http);
    if (th->subs[i].backoff) uv_close((uv_handle_t *)th->subs[i].backoff, on_backoff_closed);
    if (th->subs[i].mq) pconn_close(th->subs[i].mq);
    th->subs[i].http = NULL;
    th->subs[i].mq = NULL;
  }
  uv_close((uv_handle_t *)&th->ping, NULL);
  uv_close((uv_handle_t *)a, NULL);
}

static void *sthread_main(void *arg) {
  sthread *th = arg;
  sub_next(th);
  uv_run(&th->loop, UV_RUN_DEFAULT);
  return NULL;
}

/* ---- publishers for the fan-out scenarios (main loop) ---- */
#define NPUB 16
typedef struct fpub {
  opts *o;
  int kind;
  long next, acked, refused;
  hb_conn *http[NPUB];
  int busy[NPUB];
  pconn *mq;
  int mq_ready;
  uv_timer_t timer;
  uint64_t start_ns;          /* paced: the schedule is start + i / rate */
  char body[8192];
} fpub;

static void fpub_send(fpub *p, int slot);

/* The callback data for slot i is &slot_ud[i], which holds the publisher. */
typedef struct pub_slot {
  fpub *p;
  int i;
} pub_slot;
static pub_slot slots[NPUB];

static void on_pub_done(hb_conn *c, void *ud, int status, const char *body, size_t len) {
  pub_slot *s = ud;
  fpub *p = s->p;
  if (status >= 200 && status < 300) p->acked++;
  else {
    p->refused++;
    if (p->refused < 5) fprintf(stderr, "herald-bench: publish answered %d %.*s\n", status,
                                (int)(len > 200 ? 200 : len), body);
  }
  p->busy[s->i] = 0;
  if (p->o->rate <= 0) fpub_send(p, s->i);
}

static void fpub_send(fpub *p, int slot) {
  opts *o = p->o;
  if (p->next >= o->messages) return;
  uint64_t t = now_ns();
  char pad[4097];
  int ps = o->size > 4096 ? 4096 : o->size;
  memset(pad, 'x', (size_t)ps);
  pad[ps] = 0;
  if (p->kind == 2) {
    mq_publish(p->mq, o->topic, (uint16_t)(p->next % 65535 + 1), (uint64_t)p->next, t, o->size);
    p->next++;
    return;
  }
  /* nchan stores the body as the message; the pushpin origin stores and publishes it */
  snprintf(p->body, sizeof p->body, "{\"s\":%ld,\"t\":%llu,\"p\":\"%s\"}", p->next,
           (unsigned long long)t, pad);
  p->busy[slot] = 1;
  p->next++;
  if (hb_conn_request_h(p->http[slot], "POST", o->pub_path, NULL, p->body, on_pub_done,
                        &slots[slot])) {
    p->busy[slot] = 0;
    p->refused++;
  }
}

/* Every millisecond: send what is due by now on the schedule start + i / rate (as Herald's
 * paced publisher does), so any rate is kept on average; over HTTP only as many as there are
 * free publishing connections, the rest on a later tick. */
static void on_fpub_tick(uv_timer_t *t) {
  fpub *p = t->data;
  double elapsed = (double)(now_ns() - p->start_ns) / 1e9;
  long due = (long)(elapsed * p->o->rate) + 1;
  if (due > p->o->messages) due = p->o->messages;
  while (p->next < due) {
    long before = p->next;
    if (p->kind == 2) {
      fpub_send(p, 0);
    } else {
      for (int i = 0; i < NPUB; i++)
        if (!p->busy[i]) {
          fpub_send(p, i);
          break;
        }
    }
    if (p->next == before) break; /* every connection busy: the next tick goes on */
  }
  if (p->next >= p->o->messages) uv_timer_stop(t);
}

static size_t on_mq_pub(pconn *c, void *ud, const char *buf, size_t len) {
  fpub *p = ud;
  uint8_t h;
  const uint8_t *b;
  size_t bl, k = mq_packet(buf, len, &h, &b, &bl);
  if (!k) return 0;
  if ((h >> 4) == 2) p->mq_ready = bl >= 2 && b[1] == 0 ? 1 : -1;
  if ((h >> 4) == 4) p->acked++;
  return k;
}

static void on_mq_pub_event(pconn *c, void *ud, int status) {
  fpub *p = ud;
  if (status) {
    fprintf(stderr, "herald-bench: publisher connection: %s\n", uv_strerror(status));
    p->mq_ready = -1;
  }
}

/* How many subscribers the peer reports (nchan's channel info; for pushpin, how many holds the
 * origin has handed out on the channel), -1 if unknown. */
typedef struct cscrape {
  long v;
  int done;
} cscrape;

static void on_chinfo(hb_conn *c, void *ud, int status, const char *body, size_t len) {
  cscrape *s = ud;
  const char *p = status == 200 ? strstr(body, "subscribers") : NULL;
  if (!p && status == 200) p = strstr(body, "holds");
  if (p) p = strpbrk(p, "0123456789");
  s->v = p ? atol(p) : (status == 404 ? 0 : -1);
  s->done = 1;
}

static long peer_subscribers(uv_loop_t *loop, const struct sockaddr_in *a, const char *path) {
  cscrape s = {-1, 0};
  hb_conn *c = hb_conn_new(loop, a);
  hb_conn_request_h(c, "GET", path, "Accept: text/json\r\n", NULL, on_chinfo, &s);
  uint64_t by = now_ns() + 5000000000ull;
  while (!s.done && now_ns() < by) uv_run(loop, UV_RUN_NOWAIT);
  hb_conn_close(c);
  uv_run(loop, UV_RUN_NOWAIT);
  return s.v;
}

/* The value after tnetstring key `key` (e.g. "11:subscribers,") in msg: its text and length. */
static const char *tns_value(const char *msg, size_t len, const char *key, size_t *vlen) {
  const char *k = memmem(msg, len, key, strlen(key));
  if (!k) return NULL;
  const char *p = k + strlen(key), *end = msg + len;
  size_t n = 0;
  while (p < end && *p >= '0' && *p <= '9') n = n * 10 + (size_t)(*p++ - '0');
  if (p >= end || *p != ':' || (size_t)(end - p - 1) < n) return NULL;
  *vlen = n;
  return p + 1;
}

/* Pushpin's handler says on its stats socket (ZeroMQ PUB, tnetstring) how many sessions a channel
 * holds: "sub" packets {"channel": CH, "subscribers": N, ...}. Listen until CH has o->devices
 * (or the deadline); returns the last count seen, -1 if none. */
static long pushpin_wait_held(const opts *o, const char *ch, uint64_t deadline) {
  void *ctx = zmq_ctx_new(), *s = zmq_socket(ctx, ZMQ_SUB);
  long n = -1;
  int linger = 0;
  zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
  zmq_setsockopt(s, ZMQ_SUBSCRIBE, "sub ", 4);
  if (zmq_connect(s, o->peer_stats) != 0) {
    fprintf(stderr, "herald-bench: --peer-stats %s: %s\n", o->peer_stats, zmq_strerror(errno));
  } else {
    char msg[2048];
    while (n < o->devices && now_ns() < deadline) {
      zmq_pollitem_t pi = {s, 0, ZMQ_POLLIN, 0};
      if (zmq_poll(&pi, 1, 200) <= 0) continue;
      int len = zmq_recv(s, msg, sizeof msg, 0);
      if (len <= 0 || len > (int)sizeof msg) continue;
      size_t cl = 0, sl = 0;
      const char *c = tns_value(msg, (size_t)len, "7:channel,", &cl);
      const char *v = tns_value(msg, (size_t)len, "11:subscribers,", &sl);
      if (c && v && cl == strlen(ch) && memcmp(c, ch, cl) == 0) n = atol(v);
    }
  }
  zmq_close(s);
  zmq_ctx_term(ctx);
  return n;
}

/* nchan, pushpin, mqtt-fanout */
int run_peer_fanout(opts *o, int kind) {
  static const char *names[] = {"nchan", "pushpin", "mqtt-fanout"};
  rlim_t lim = raise_nofile();
  if (o->devices > (long)lim - 100) o->devices = (long)lim - 100;
  struct sockaddr_in sa, pa;
  peer_addr(o, &sa);
  if (kind == 1) uv_ip4_addr(o->pub_host, o->pub_port, &pa);
  else pa = sa;
  sshared sh = {.o = o, .kind = kind};
  if (kind <= 1) { /* a channel of its own per run: no message of an earlier run comes back */
    static char sp[256], pp[256];
    unsigned long run = (unsigned long)(now_ns() & 0xffffffff);
    snprintf(sp, sizeof sp, "%s/r%lx", o->sub_path, run);
    snprintf(pp, sizeof pp, "%s/r%lx", o->pub_path, run);
    o->sub_path = sp;
    o->pub_path = pp;
  }
  int T = o->threads;
  sthread *ths = calloc((size_t)T, sizeof *ths);
  sub *subs = calloc((size_t)o->devices, sizeof *subs);
  size_t bitmap = (size_t)(o->messages + 7) / 8;
  long per = (o->devices + T - 1) / T;
  uint64_t t_conn = now_ns();
  for (int t = 0; t < T; t++) {
    sthread *th = &ths[t];
    th->sh = &sh;
    th->addr = sa;
    th->subs = subs + (long)t * per;
    th->n = (long)(t + 1) * per > o->devices ? o->devices - (long)t * per : per;
    if (th->n < 0) th->n = 0;
    for (long i = 0; i < th->n; i++) {
      th->subs[i].th = th;
      th->subs[i].idx = (long)t * per + i;
      th->subs[i].seen = calloc(bitmap, 1);
    }
    hb_rx_init(&th->rx);
    uv_loop_init(&th->loop);
    uv_async_init(&th->loop, &th->stop, on_sthread_stop);
    th->stop.data = th;
    uv_timer_init(&th->loop, &th->ping);
    th->ping.data = th;
    if (kind == 2) uv_timer_start(&th->ping, on_ping, 20000, 20000);
    pthread_create(&th->thread, NULL, sthread_main, th);
  }
  uv_loop_t loop;
  uv_loop_init(&loop);
  /* Wait until every subscriber is in place (bounded: 120 s). */
  uint64_t deadline = now_ns() + 120ull * 1000000000u;
  while (atomic_load(&sh.ready) + atomic_load(&sh.failed) < o->devices && now_ns() < deadline)
    sleep_ms(20);
  if (kind == 1 && o->peer_stats) { /* the GETs are sent; wait until Pushpin holds them all */
    long n = pushpin_wait_held(o, strrchr(o->pub_path, '/') + 1, deadline);
    if (n < o->devices) fprintf(stderr, "herald-bench: pushpin reports %ld subscribers\n", n);
  } else if (kind <= 1) {
    char info[300];
    long n = 0;
    /* Without its stats socket, Pushpin has no count to ask for: its origin counts the holds
     * it answered with, and Pushpin registers each some time after (a second at a guess). */
    snprintf(info, sizeof info, kind == 0 ? "%s" : "/stats/%s",
             kind == 0 ? o->pub_path : strrchr(o->pub_path, '/') + 1);
    while ((n = peer_subscribers(&loop, &pa, info)) < o->devices && now_ns() < deadline)
      sleep_ms(100);
    if (n < o->devices) fprintf(stderr, "herald-bench: %s reports %ld subscribers\n", names[kind], n);
    if (kind == 1) sleep_ms(1000);
  }
  double connect_s = (now_ns() - t_conn) / 1e9;
  long ready = atomic_load(&sh.ready);
  if (ready < o->devices)
    fprintf(stderr, "herald-bench: only %ld of %ld subscribers in place\n", ready, o->devices);

  fpub pub = {.o = o, .kind = kind};
  for (int i = 0; i < NPUB; i++) {
    slots[i] = (pub_slot){&pub, i};
    if (kind != 2) pub.http[i] = hb_conn_new(&loop, &pa);
  }
  if (kind == 2) {
    pub.mq = pconn_new(&loop, &pa, on_mq_pub, on_mq_pub_event, &pub);
    mq_connect(pub.mq, "hb-publisher");
    while (!pub.mq_ready && now_ns() < deadline) uv_run(&loop, UV_RUN_NOWAIT);
  }
  uv_timer_init(&loop, &pub.timer);
  pub.timer.data = &pub;
  usage u0 = pids_usage(o);
  uint64_t t0 = now_ns();
  if (o->rate > 0) {
    pub.start_ns = t0;
    uv_timer_start(&pub.timer, on_fpub_tick, 0, 1);
  } else if (kind == 2) {
    while (pub.next < o->messages) fpub_send(&pub, 0);
  } else {
    for (int i = 0; i < NPUB; i++) fpub_send(&pub, i);
  }
  uint64_t end_by = 0;
  while (atomic_load(&sh.done_devices) < ready) {
    uv_run(&loop, UV_RUN_NOWAIT);
    if (pub.next >= o->messages && !end_by) end_by = now_ns() + 30ull * 1000000000u;
    if (end_by && now_ns() > end_by) break;
    if (now_ns() > t0 + 300ull * 1000000000u) break;
    sleep_ms(1);
  }
  uint64_t t_end = now_ns();
  usage u1 = pids_usage(o);
  atomic_store(&sh.stopping, 1);
  for (int t = 0; t < T; t++) uv_async_send(&ths[t].stop);
  hb_rx rx;
  hb_rx_init(&rx);
  uint64_t errors = 0;
  for (int t = 0; t < T; t++) {
    pthread_join(ths[t].thread, NULL);
    uv_run(&ths[t].loop, UV_RUN_DEFAULT);
    uv_loop_close(&ths[t].loop);
    hb_rx_merge(&rx, &ths[t].rx);
    errors += ths[t].errors;
  }
  uint64_t last = rx.last_ns;
  uv_timer_stop(&pub.timer);
  uv_close((uv_handle_t *)&pub.timer, NULL);
  for (int i = 0; i < NPUB; i++)
    if (pub.http[i]) hb_conn_close(pub.http[i]);
  if (pub.mq) pconn_close(pub.mq);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  double span = ((last ? last : t_end) - t0) / 1e9;
  double cpu = 100 * (u1.cpu_s - u0.cpu_s) / ((t_end - t0) / 1e9);
  print_result(names[kind], o, ready, ready * o->messages, rx.deliveries, rx.dups, errors, span,
               &rx.lat, cpu, u1.rss_kb);
  if (!o->json)
    printf("  publishes       %ld acknowledged, %ld refused; subscribers in place in %.2f s\n",
           pub.acked, pub.refused, connect_s);
  for (long i = 0; i < o->devices; i++) free(subs[i].seen);
  free(subs);
  free(ths);
  return 0;
}

/* ================= ingest against MQTT and NATS JetStream ================= */
typedef struct iconn {
  struct ising *g;
  int idx;
  pconn *c;
  uint64_t seq;
  uint64_t *sent_at; /* indexed by seq % window */
  int ready;
} iconn;

typedef struct ising {
  opts *o;
  int kind; /* 0 mqtt, 1 nats */
  iconn *conns;
  uint64_t acked, refused;
  int stopping, created, failed;
  hb_hist lat;
  char payload[4200];
} ising;

static void ing_send(iconn *ic) {
  ising *g = ic->g;
  opts *o = g->o;
  uint64_t t = now_ns(), seq = ic->seq++;
  ic->sent_at[seq % (uint64_t)o->window] = t;
  if (g->kind == 0) {
    /* the packet id carries seq; PUBACKs come back in order */
    mq_publish(ic->c, o->topic, (uint16_t)(seq % 65535 + 1), seq, t, o->size);
    return;
  }
  int size = o->size < 16 ? 16 : o->size > 4096 ? 4096 : o->size;
  char hdr[160];
  int n = snprintf(hdr, sizeof hdr, "PUB %s _INBOX.hb%d.%llu %d\r\n", o->topic, ic->idx,
                   (unsigned long long)seq, size);
  memcpy(g->payload, &seq, 8);
  memcpy(g->payload + 8, &t, 8);
  memset(g->payload + 16, 'x', (size_t)size - 16);
  memcpy(g->payload + size, "\r\n", 2);
  pconn_write(ic->c, hdr, (size_t)n);
  pconn_write(ic->c, g->payload, (size_t)size + 2);
}

static void ing_acked(iconn *ic, uint64_t seq, int ok) {
  ising *g = ic->g;
  hb_hist_record(&g->lat, now_ns() - ic->sent_at[seq % (uint64_t)g->o->window]);
  if (ok) g->acked++;
  else g->refused++;
  if (!g->stopping) ing_send(ic);
}

static size_t on_ing_mqtt(pconn *c, void *ud, const char *buf, size_t len) {
  iconn *ic = ud;
  uint8_t h;
  const uint8_t *b;
  size_t bl, k = mq_packet(buf, len, &h, &b, &bl);
  if (!k) return 0;
  if ((h >> 4) == 2) ic->ready = bl >= 2 && b[1] == 0 ? 1 : -1;
  if ((h >> 4) == 4 && bl >= 2) {
    uint16_t id = (uint16_t)(b[0] << 8 | b[1]);
    /* the in-flight seq with this id: the oldest one, acks being in order */
    uint64_t base = ic->seq - (uint64_t)ic->g->o->window, s = base;
    for (uint64_t q = ic->seq > (uint64_t)ic->g->o->window ? base : 0; q < ic->seq; q++)
      if ((uint16_t)(q % 65535 + 1) == id) {
        s = q;
        break;
      }
    ing_acked(ic, s, 1);
  }
  return k;
}

/* NATS: INFO, PING, +OK, -ERR lines; MSG subject sid [reply] len\r\npayload\r\n */
static size_t on_ing_nats(pconn *c, void *ud, const char *buf, size_t len) {
  iconn *ic = ud;
  ising *g = ic->g;
  const char *eol = memchr(buf, '\n', len);
  if (!eol) return 0;
  size_t ll = (size_t)(eol - buf) + 1;
  if (strncmp(buf, "PING", 4) == 0) {
    pconn_write(c, "PONG\r\n", 6);
    return ll;
  }
  if (strncmp(buf, "-ERR", 4) == 0) {
    fprintf(stderr, "herald-bench: nats: %.*s", (int)ll, buf);
    return ll;
  }
  if (strncmp(buf, "MSG ", 4) != 0) return ll;
  char subj[128];
  long blen = 0;
  char f[4][128];
  int nf = sscanf(buf + 4, "%127s %127s %127s %127s", f[0], f[1], f[2], f[3]);
  if (nf < 3) return ll;
  snprintf(subj, sizeof subj, "%s", f[0]);
  blen = atol(nf == 4 ? f[3] : f[2]);
  if (len < ll + (size_t)blen + 2) return 0;
  const char *body = buf + ll;
  int ok = memmem(body, (size_t)blen, "\"error\"", 7) == NULL;
  if (!ok && g->refused < 3)
    fprintf(stderr, "herald-bench: jetstream: %.*s\n", (int)blen, body);
  const char *dot = strrchr(subj, '.');
  if (strstr(subj, ".create")) {
    g->created = ok || memmem(body, (size_t)blen, "already in use", 14) ? 1 : -1;
    if (g->created < 0) fprintf(stderr, "herald-bench: stream create: %.*s\n", (int)blen, body);
  } else if (dot) {
    ing_acked(ic, strtoull(dot + 1, NULL, 10), ok);
  }
  return ll + (size_t)blen + 2;
}

static void on_ing_event(pconn *c, void *ud, int status) {
  iconn *ic = ud;
  if (status && !ic->g->stopping) {
    fprintf(stderr, "herald-bench: connection %d: %s\n", ic->idx, uv_strerror(status));
    ic->ready = -1;
    ic->g->failed++;
  }
}

typedef struct ing_timer {
  ising *g;
  uint64_t end_ns;
} ing_timer;

static void on_ing_end(uv_timer_t *t) {
  ising *g = t->data;
  g->stopping = 1;
  uv_close((uv_handle_t *)t, NULL);
}

/* mqtt-ingest (kind 0), nats-ingest (kind 1) */
int run_peer_ingest(opts *o, int kind) {
  struct sockaddr_in a;
  peer_addr(o, &a);
  uv_loop_t loop;
  uv_loop_init(&loop);
  ising g = {.o = o, .kind = kind};
  hb_hist_init(&g.lat);
  if (o->window > 30000) o->window = 30000;
  g.conns = calloc((size_t)o->connections, sizeof *g.conns);
  for (int i = 0; i < o->connections; i++) {
    iconn *ic = &g.conns[i];
    *ic = (iconn){.g = &g, .idx = i};
    ic->sent_at = calloc((size_t)o->window, sizeof(uint64_t));
    ic->c = pconn_new(&loop, &a, kind ? on_ing_nats : on_ing_mqtt, on_ing_event, ic);
    if (!ic->c) return 1;
    if (kind == 0) {
      char id[48];
      snprintf(id, sizeof id, "hb-ingest-%d", i);
      mq_connect(ic->c, id);
    } else {
      char cmd[256];
      int n = snprintf(cmd, sizeof cmd,
                       "CONNECT {\"verbose\":false,\"pedantic\":false,\"name\":\"hb%d\"}\r\n"
                       "SUB _INBOX.hb%d.* %d\r\n",
                       i, i, i + 1);
      pconn_write(ic->c, cmd, (size_t)n);
      ic->ready = 1;
    }
  }
  uint64_t deadline = now_ns() + 20ull * 1000000000u;
  if (kind == 1) { /* the stream, file storage, on the first connection */
    char body[512], cmd[700];
    int bl = snprintf(body, sizeof body,
                      "{\"name\":\"%s\",\"subjects\":[\"%s\"],\"storage\":\"file\","
                      "\"retention\":\"limits\",\"max_bytes\":2000000000,\"discard\":\"old\","
                      "\"num_replicas\":1}",
                      o->stream, o->topic);
    int n = snprintf(cmd, sizeof cmd, "PUB $JS.API.STREAM.CREATE.%s _INBOX.hb0.create %d\r\n%s\r\n",
                     o->stream, bl, body);
    pconn_write(g.conns[0].c, cmd, (size_t)n);
    while (!g.created && now_ns() < deadline) uv_run(&loop, UV_RUN_NOWAIT);
    if (g.created != 1) {
      fprintf(stderr, "herald-bench: could not create the JetStream stream\n");
      return 1;
    }
  }
  for (;;) {
    int n = 0;
    for (int i = 0; i < o->connections; i++) n += g.conns[i].ready != 0;
    if (n == o->connections || now_ns() > deadline) break;
    uv_run(&loop, UV_RUN_NOWAIT);
  }
  for (int i = 0; i < o->connections; i++)
    if (g.conns[i].ready != 1) {
      fprintf(stderr, "herald-bench: connection %d not ready\n", i);
      return 1;
    }
  usage u0 = pids_usage(o);
  uint64_t t0 = now_ns();
  for (int i = 0; i < o->connections; i++)
    for (int w = 0; w < o->window; w++) ing_send(&g.conns[i]);
  uv_timer_t timer;
  uv_timer_init(&loop, &timer);
  timer.data = &g;
  uv_timer_start(&timer, on_ing_end, (uint64_t)(o->duration * 1000), 0);
  while (!g.stopping) uv_run(&loop, UV_RUN_ONCE);
  uint64_t t1 = now_ns();
  usage u1 = pids_usage(o);
  for (int i = 0; i < o->connections; i++) {
    pconn_close(g.conns[i].c);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  double secs = (t1 - t0) / 1e9;
  const char *name = kind ? "nats-ingest" : "mqtt-ingest";
  if (o->json) {
    printf("{\"scenario\": \"%s\", \"connections\": %d, \"window\": %d, \"payload_bytes\": %d, "
           "\"seconds\": %.2f, \"acked\": %llu, \"refused\": %llu, \"publishes_per_s\": %.0f, ",
           name, o->connections, o->window, o->size, secs, (unsigned long long)g.acked,
           (unsigned long long)g.refused, g.acked / secs);
    print_lat("ack_latency", &g.lat, 1);
    printf(", \"broker_cpu_pct\": %.1f, \"broker_rss_kb\": %ld}\n",
           100 * (u1.cpu_s - u0.cpu_s) / secs, u1.rss_kb);
  } else {
    printf("%s: %d connections x %d in flight, %d-byte payloads, %.1f s\n", name,
           o->connections, o->window, o->size, secs);
    printf("  acknowledged    %llu (%llu refused)\n", (unsigned long long)g.acked,
           (unsigned long long)g.refused);
    printf("  publishes/s     %.0f\n", g.acked / secs);
    print_lat("ack latency", &g.lat, 0);
    if (o->npids)
      printf("  peer CPU %.0f %%  RSS %ld KiB (pid %s)\n", 100 * (u1.cpu_s - u0.cpu_s) / secs,
             u1.rss_kb, o->pid_arg);
  }
  char what[64];
  snprintf(what, sizeof what, "%s: ack latency", name);
  hb_plot_run(o, what, &g.lat);
  for (int i = 0; i < o->connections; i++) free(g.conns[i].sent_at);
  free(g.conns);
  return 0;
}
