/* smpp_bench.c — herald-bench `smpp`: SMS submitted through Herald's sms transport
 * (transports/smpp) into a local SMSC peer, as its push policy escalates messages to SMS.
 *
 *   herald-bench smpp [--devices N] [--messages M] [--rate R] [--direct]
 *                     [--events ENDPOINT] [--smsc-log FILE] [--smsc-name NAME]
 *
 * It assumes heraldd runs with the sms transport bound to an SMSC and a push policy sending the
 * app's messages by SMS at once (push_policy = sms): bench/peers/smsc.sh starts the SMSC
 * (tests/smsc/smsc.js, receipts on) and prints that heraldd config; bench/run.sh does both.
 *
 * 1. N devices are registered for APP (a fresh app per run without --app, so devices of earlier
 *    runs get none of our SMS) and each is given its own MSISDN, 4999<tag><index>, through
 *    update-check's "msisdn" (the registration helper, prov.h, sends none).
 * 2. M messages {"text": "hb <seq>"} are published over ZeroMQ at R per second (0: all at once):
 *    broadcasts to APP, or with --direct one message per device each round (N x M publishes).
 * 3. What comes back is counted three ways:
 *    - the SMSC's JSON-lines log (--smsc-log, smsc.js's stdout), read as it grows: every
 *      accepted submit_sm (submit_sm_resp status 0) names its MSISDN and carries "hb <seq>", so
 *      each (device, message) pair is checked to arrive exactly once; submits per second as
 *      the SMSC saw them; publish -> accepted-by-SMSC latency; throttles, rejections, receipts;
 *    - "receipt" events on the ZeroMQ events socket (--events): every (device, message) pair
 *      must get one "delivered"; publish -> receipt latency (the broker's receipt of the
 *      carrier's delivery report), receipts per second;
 *    - the broker's metrics before and after (herald_sms_*, herald_push_*).
 * It ends when every pair has its SMS and its receipt, or 30 s after the last progress.
 * Latency includes the push policy's 1 s scheduling tick (broker/push.c): a policy step is
 * taken by a timer, not at commit. Broker CPU and RSS from /proc. Benchmarks measure; they
 * never assert.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "bench.h"
#include "httpc.h"
#include "plot.h"
#include "prov.h"
#include "zpub.h"

#define MSISDN_CONNS 32
#define SMPP_IDLE_S 30

typedef struct rcpt {
  uint64_t id, t;
  long dev;
  int delivered;
} rcpt;

typedef struct idcorr {
  uint64_t id;
  long corr;
} idcorr;

typedef struct srun {
  opts *o;
  const char *app;
  const char *key;
  hb_reg *regs;
  long N, M, ncorr; /* ncorr: publishes (M broadcasts, or M x N direct) */
  char devprefix[64], msisdn_prefix[16];
  size_t devprefix_len, msisdn_prefix_len;
  /* publishing */
  hb_zpub *z;
  msgpack_sbuffer sb;
  uv_timer_t tick;
  long next_seq, acked, refused;
  uint64_t *sent_ns, *ids; /* per publish */
  /* receipt events */
  rcpt *rc;
  size_t nrc, caprc;
  long rc_delivered;
  /* the SMSC's log */
  int logfd;
  char *lbuf;
  size_t llen, lcap;
  uint8_t *smsc_cnt; /* per (device, message) */
  long smsc_ok, smsc_unique, smsc_dups, smsc_other, smsc_throttled, smsc_rejected,
      smsc_receipts;
  uint64_t smsc_first, smsc_last;
  hb_hist submit_lat;
  uint64_t last_progress;
} srun;

/* ---- MSISDNs through update-check ---- */
typedef struct msp {
  srun *r;
  long next, done, failed;
} msp;

typedef struct msc {
  msp *p;
  hb_conn *c;
  long i;
  char body[128];
} msc;

static void msisdn_of(const srun *r, long i, char *out, size_t len) {
  snprintf(out, len, "%s%07ld", r->msisdn_prefix, i);
}

static void msisdn_next(msc *m);

static void on_msisdn(hb_conn *c, void *ud, int status, const char *body, size_t len) {
  msc *m = ud;
  msp *p = m->p;
  if (status != 200) {
    if (!p->failed)
      fprintf(stderr, "herald-bench: update-check with msisdn for %s: answer %d %.200s\n",
              p->r->regs[m->i].id, status, body);
    p->failed++;
  }
  p->done++;
  msisdn_next(m);
}

static void msisdn_next(msc *m) {
  msp *p = m->p;
  srun *r = p->r;
  if (p->next >= r->N) {
    hb_conn_close(m->c);
    m->c = NULL;
    return;
  }
  m->i = p->next++;
  char path[256], num[48];
  msisdn_of(r, m->i, num, sizeof num);
  snprintf(path, sizeof path, "/v1/devices/%s/update-check", r->regs[m->i].id);
  snprintf(m->body, sizeof m->body, "{\"inventory\":[],\"msisdn\":\"+%s\"}", num);
  if (hb_conn_request(m->c, "POST", path, r->regs[m->i].token, m->body, on_msisdn, m))
    on_msisdn(m->c, m, -1, "", 0);
}

static int set_msisdns(srun *r) {
  struct sockaddr_in addr;
  uv_ip4_addr(r->o->url_host, r->o->http_port, &addr);
  uv_loop_t loop;
  uv_loop_init(&loop);
  msp p = {.r = r};
  msc ms[MSISDN_CONNS];
  int n = r->N < MSISDN_CONNS ? (int)r->N : MSISDN_CONNS;
  for (int i = 0; i < n; i++) {
    ms[i] = (msc){.p = &p, .c = hb_conn_new(&loop, &addr)};
    msisdn_next(&ms[i]);
  }
  while (p.done < r->N) uv_run(&loop, UV_RUN_ONCE);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  if (p.failed) fprintf(stderr, "herald-bench: %ld of %ld MSISDNs refused\n", p.failed, r->N);
  return p.failed ? 1 : 0;
}

/* ---- publishing ---- */
static void pk_str(msgpack_packer *pk, const char *s) {
  msgpack_pack_str(pk, strlen(s));
  msgpack_pack_str_body(pk, s, strlen(s));
}

static void publish_one(srun *r, long corr, long seq, const char *to) {
  msgpack_packer pk;
  char text[32];
  snprintf(text, sizeof text, "hb %ld", seq);
  msgpack_sbuffer_clear(&r->sb);
  msgpack_packer_init(&pk, &r->sb, msgpack_sbuffer_write);
  msgpack_pack_map(&pk, to ? 5 : 4);
  pk_str(&pk, "tenant");
  pk_str(&pk, r->o->tenant);
  pk_str(&pk, "key");
  pk_str(&pk, r->key);
  pk_str(&pk, "app");
  pk_str(&pk, r->app);
  if (to) {
    pk_str(&pk, "to");
    pk_str(&pk, to);
  }
  pk_str(&pk, "data");
  msgpack_pack_map(&pk, 1);
  pk_str(&pk, "text");
  pk_str(&pk, text);
  r->sent_ns[corr] = now_ns();
  hb_zpub_send(r->z, (uint64_t)corr, r->sb.data, r->sb.size);
}

/* One round: message seq as a broadcast, or to each device. */
static void on_tick(uv_timer_t *t) {
  srun *r = t->data;
  if (r->next_seq >= r->M) {
    uv_timer_stop(t);
    return;
  }
  long seq = r->next_seq++;
  if (r->o->direct)
    for (long i = 0; i < r->N; i++) publish_one(r, seq * r->N + i, seq, r->regs[i].id);
  else
    publish_one(r, seq, seq, NULL);
}

static void on_ack(void *ud, uint64_t corr, int ok, const char *reply, size_t len) {
  srun *r = ud;
  if (!ok) {
    if (!r->refused)
      fprintf(stderr, "herald-bench: publish refused: %.*s\n", (int)(len > 200 ? 200 : len),
              reply);
    r->refused++;
    return;
  }
  r->acked++;
  /* {"id": "<decimal>"}: a fixmap of one entry, "id", then a string. */
  msgpack_unpacked up;
  msgpack_unpacked_init(&up);
  if (msgpack_unpack_next(&up, reply, len, NULL) == MSGPACK_UNPACK_SUCCESS &&
      up.data.type == MSGPACK_OBJECT_MAP && up.data.via.map.size == 1 &&
      up.data.via.map.ptr[0].val.type == MSGPACK_OBJECT_STR && corr < (uint64_t)r->ncorr) {
    char b[24];
    const msgpack_object_str *s = &up.data.via.map.ptr[0].val.via.str;
    snprintf(b, sizeof b, "%.*s", (int)(s->size < 23 ? s->size : 23), s->ptr);
    r->ids[corr] = strtoull(b, NULL, 10);
  }
  msgpack_unpacked_destroy(&up);
}

/* ---- receipt events ---- */
/* The device index of one of our device ids (PREFIX-RUN-i), or -1. */
static long our_device(const srun *r, const char *s, size_t n) {
  if (n <= r->devprefix_len || memcmp(s, r->devprefix, r->devprefix_len) != 0) return -1;
  long v = 0;
  for (size_t i = r->devprefix_len; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return -1;
    v = v * 10 + (s[i] - '0');
  }
  return v < r->N ? v : -1;
}

static int obj_is(const msgpack_object *o, const char *s) {
  return o->type == MSGPACK_OBJECT_STR && o->via.str.size == strlen(s) &&
         memcmp(o->via.str.ptr, s, o->via.str.size) == 0;
}

static void on_event(srun *r, const char *data, size_t len, uint64_t now) {
  msgpack_unpacked up;
  msgpack_unpacked_init(&up);
  if (msgpack_unpack_next(&up, data, len, NULL) != MSGPACK_UNPACK_SUCCESS ||
      up.data.type != MSGPACK_OBJECT_MAP) {
    msgpack_unpacked_destroy(&up);
    return;
  }
  rcpt c = {.t = now, .dev = -1};
  int is_app = 0;
  for (uint32_t i = 0; i < up.data.via.map.size; i++) {
    const msgpack_object *k = &up.data.via.map.ptr[i].key, *v = &up.data.via.map.ptr[i].val;
    if (v->type != MSGPACK_OBJECT_STR) continue;
    if (obj_is(k, "id")) {
      char b[24];
      snprintf(b, sizeof b, "%.*s", (int)(v->via.str.size < 23 ? v->via.str.size : 23),
               v->via.str.ptr);
      c.id = strtoull(b, NULL, 10);
    } else if (obj_is(k, "to")) {
      c.dev = our_device(r, v->via.str.ptr, v->via.str.size);
    } else if (obj_is(k, "state")) {
      c.delivered = obj_is(v, "delivered");
    } else if (obj_is(k, "app")) {
      is_app = obj_is(v, r->app);
    }
  }
  msgpack_unpacked_destroy(&up);
  if (!is_app || c.dev < 0) return;
  if (r->nrc == r->caprc) {
    r->caprc = r->caprc ? 2 * r->caprc : 1024;
    r->rc = realloc(r->rc, r->caprc * sizeof *r->rc);
  }
  r->rc[r->nrc++] = c;
  r->rc_delivered += c.delivered;
  r->last_progress = now;
}

static void drain_events(srun *r, void *sub) {
  for (;;) {
    zmq_msg_t topic, body;
    zmq_msg_init(&topic);
    if (zmq_msg_recv(&topic, sub, ZMQ_DONTWAIT) < 0) {
      zmq_msg_close(&topic);
      return;
    }
    uint64_t now = now_ns();
    zmq_msg_init(&body);
    if (zmq_msg_more(&topic) && zmq_msg_recv(&body, sub, 0) >= 0)
      on_event(r, zmq_msg_data(&body), zmq_msg_size(&body), now);
    zmq_msg_close(&topic);
    zmq_msg_close(&body);
  }
}

/* ---- the SMSC's log ---- */
static int unhex(const char *h, char *out, size_t cap) {
  size_t n = 0;
  for (; h[0] && h[1] && n + 1 < cap; h += 2) {
    unsigned v;
    if (sscanf(h, "%2x", &v) != 1) return -1;
    out[n++] = (char)v;
  }
  out[n] = 0;
  return (int)n;
}

static void smsc_line(srun *r, const char *line, size_t len, uint64_t now) {
  json_t *j = json_loadb(line, len, 0, NULL);
  const char *ev = json_string_value(json_object_get(j, "event"));
  if (!ev) goto out;
  if (strcmp(ev, "receipt") == 0) {
    r->smsc_receipts++;
    r->last_progress = now;
    goto out;
  }
  if (strcmp(ev, "submit_sm_resp") != 0) goto out;
  json_int_t st = json_integer_value(json_object_get(j, "status"));
  if (st == 0x58 || st == 0x14) {
    r->smsc_throttled++;
    goto out;
  }
  if (st != 0) {
    r->smsc_rejected++;
    goto out;
  }
  r->smsc_ok++;
  r->last_progress = now;
  if (!r->smsc_first) r->smsc_first = now;
  r->smsc_last = now;
  /* GSM 7-bit unpacked: "hb 123" has the same codes as ASCII. */
  const char *dst = json_string_value(json_object_get(j, "dst"));
  const char *sm = json_string_value(json_object_get(j, "sm"));
  char text[200];
  long seq = -1, dev = -1;
  if (dst && strncmp(dst, r->msisdn_prefix, r->msisdn_prefix_len) == 0 &&
      strlen(dst) == r->msisdn_prefix_len + 7) {
    dev = atol(dst + r->msisdn_prefix_len);
    if (dev >= r->N) dev = -1;
  }
  if (sm && unhex(sm, text, sizeof text) > 3 && sscanf(text, "hb %ld", &seq) == 1 &&
      (seq < 0 || seq >= r->M))
    seq = -1;
  if (dev < 0 || seq < 0) {
    r->smsc_other++;
    goto out;
  }
  uint8_t *c = &r->smsc_cnt[dev * r->M + seq];
  if (*c < 255) (*c)++;
  if (*c == 1) {
    r->smsc_unique++;
    long corr = r->o->direct ? seq * r->N + dev : seq;
    if (r->sent_ns[corr]) hb_hist_record(&r->submit_lat, now - r->sent_ns[corr]);
  } else {
    r->smsc_dups++;
  }
out:
  json_decref(j);
}

static void read_smsc(srun *r) {
  if (r->logfd < 0) return;
  for (;;) {
    if (r->lcap - r->llen < 65536) {
      r->lcap = r->lcap ? r->lcap * 2 : 1 << 17;
      r->lbuf = realloc(r->lbuf, r->lcap);
    }
    ssize_t n = read(r->logfd, r->lbuf + r->llen, r->lcap - r->llen);
    if (n <= 0) return;
    uint64_t now = now_ns();
    r->llen += (size_t)n;
    size_t start = 0;
    for (size_t i = 0; i < r->llen; i++)
      if (r->lbuf[i] == '\n') {
        smsc_line(r, r->lbuf + start, i - start, now);
        start = i + 1;
      }
    memmove(r->lbuf, r->lbuf + start, r->llen - start);
    r->llen -= start;
  }
}

/* ---- the scenario ---- */
static const char *const sms_metrics[] = {
    "herald_sms_messages_total",    "herald_sms_parts_total",
    "herald_sms_failed_temp_total", "herald_sms_failed_perm_total",
    "herald_push_device_deliveries_total", "herald_push_receipts_total",
    NULL, NULL, NULL, NULL /* the link's: submits, receipts, throttled (filled in) */};
#define M_PUSH_RECEIPTS 5
#define NMETRICS (sizeof sms_metrics / sizeof sms_metrics[0])

static void scrape(const opts *o, const char *const *names, double *v) {
  for (size_t i = 0; i < NMETRICS && names[i]; i++) v[i] = hb_metric(o, names[i]);
}

static int cmp_idcorr(const void *a, const void *b) {
  uint64_t x = ((const idcorr *)a)->id, y = ((const idcorr *)b)->id;
  return x < y ? -1 : x > y;
}

int run_smpp(opts *o) {
  srun r = {.o = o, .N = o->devices, .M = o->messages, .logfd = -1};
  if (r.N > 9999999) {
    fprintf(stderr, "herald-bench: smpp numbers at most 9,999,999 devices\n");
    return 2;
  }
  char key[256];
  if (load_key(o, key, sizeof key)) return 1;
  r.key = key;
  int pid = o->pid ? o->pid : find_broker_pid(o->http_port);
  uint64_t tag = now_ns();
  char app[128];
  if (o->app_set) snprintf(app, sizeof app, "%s", o->app);
  else snprintf(app, sizeof app, "sms-%lx", (unsigned long)(tag & 0xffffff));
  r.app = app;
  snprintf(r.msisdn_prefix, sizeof r.msisdn_prefix, "4999%04u", (unsigned)((tag / 1000) % 10000));
  r.msisdn_prefix_len = strlen(r.msisdn_prefix);

  /* 1. Devices with MSISDNs. */
  r.regs = calloc((size_t)r.N, sizeof *r.regs);
  opts po = *o;
  po.app = app;
  double prov_s, msisdn_s;
  if (hb_provision(&po, key, "sms", r.regs, sizeof *r.regs, r.N, &prov_s)) return 1;
  const char *dash = strrchr(r.regs[0].id, '-');
  r.devprefix_len = (size_t)(dash - r.regs[0].id) + 1;
  snprintf(r.devprefix, sizeof r.devprefix, "%.*s", (int)r.devprefix_len, r.regs[0].id);
  uint64_t tm = now_ns();
  if (set_msisdns(&r)) return 1;
  msisdn_s = (now_ns() - tm) / 1e9;

  /* 2. Listeners: the events socket (receipts) and the SMSC's log, from its end. */
  void *zctx = zmq_ctx_new();
  void *sub = zmq_socket(zctx, ZMQ_SUB);
  int linger = 0, hwm = 0;
  zmq_setsockopt(sub, ZMQ_LINGER, &linger, sizeof linger);
  zmq_setsockopt(sub, ZMQ_RCVHWM, &hwm, sizeof hwm);
  char topic[160];
  snprintf(topic, sizeof topic, "%s.receipt", o->tenant);
  zmq_setsockopt(sub, ZMQ_SUBSCRIBE, topic, strlen(topic));
  if (zmq_connect(sub, o->events)) {
    fprintf(stderr, "herald-bench: cannot connect %s\n", o->events);
    return 1;
  }
  if (o->smsc_log) {
    r.logfd = open(o->smsc_log, O_RDONLY);
    if (r.logfd < 0) {
      fprintf(stderr, "herald-bench: %s: %s\n", o->smsc_log, strerror(errno));
      return 1;
    }
    lseek(r.logfd, 0, SEEK_END);
  }
  const char *names[NMETRICS];
  char link_m[3][160];
  memcpy(names, sms_metrics, sizeof names);
  {
    char nm[64];
    snprintf(nm, sizeof nm, "%s", o->smsc_name);
    for (char *p = nm; *p; p++)
      if (*p == '-') *p = '_';
    const char *what[3] = {"submits", "receipts", "throttled"};
    size_t k = 0;
    while (names[k]) k++;
    for (int i = 0; i < 3; i++) {
      snprintf(link_m[i], sizeof link_m[i], "herald_sms_smsc_%s_%s_total", nm, what[i]);
      names[k + (size_t)i] = link_m[i];
    }
  }
  if (hb_metric(o, "herald_sms_messages_total") < 0)
    fprintf(stderr, "herald-bench: the broker has no sms transport metrics: is sms loaded?\n");
  double m0[NMETRICS] = {0}, m1[NMETRICS] = {0};
  scrape(o, names, m0);
  usleep(300000); /* the SUB socket's subscription reaches the broker */
  drain_events(&r, sub);
  read_smsc(&r);

  /* 3. Publish and watch. */
  r.ncorr = o->direct ? r.N * r.M : r.M;
  r.sent_ns = calloc((size_t)r.ncorr, sizeof *r.sent_ns);
  r.ids = calloc((size_t)r.ncorr, sizeof *r.ids);
  r.smsc_cnt = calloc((size_t)(r.N * r.M), 1);
  hb_hist_init(&r.submit_lat);
  uv_loop_t loop;
  uv_loop_init(&loop);
  msgpack_sbuffer_init(&r.sb);
  if (!(r.z = hb_zpub_new(&loop, zctx, o->zmq, on_ack, &r))) {
    fprintf(stderr, "herald-bench: cannot connect %s\n", o->zmq);
    return 1;
  }
  uv_timer_init(&loop, &r.tick);
  r.tick.data = &r;
  usage u0 = broker_usage(pid), s0 = broker_usage(o->smsc_pid);
  uint64_t t0 = now_ns();
  r.last_progress = t0;
  if (o->rate > 0)
    uv_timer_start(&r.tick, on_tick, 0, (uint64_t)(1000.0 / o->rate) ? (uint64_t)(1000.0 / o->rate) : 1);
  else
    while (r.next_seq < r.M) on_tick(&r.tick);
  long expected = r.N * r.M;
  uint64_t grace_until = 0, last_print = 0;
  int was_complete = 0;
  zmq_pollitem_t item = {.socket = sub, .events = ZMQ_POLLIN};
  for (;;) {
    uv_run(&loop, UV_RUN_NOWAIT);
    zmq_poll(&item, 1, 1);
    drain_events(&r, sub);
    read_smsc(&r);
    uint64_t now = now_ns();
    int published = r.next_seq >= r.M && r.acked + r.refused >= r.ncorr;
    int complete = published && r.rc_delivered >= expected &&
                   (r.logfd < 0 || r.smsc_ok >= expected);
    if (complete && !was_complete) { /* a second more for late duplicates */
      was_complete = 1;
      if (!grace_until || grace_until > now + 1000000000u) grace_until = now + 1000000000u;
    }
    /* Every SMS and every carrier receipt went through the SMSC: the receipt events still
     * missing get a few seconds (the events socket drops what overflows its queue). */
    if (!grace_until && published && r.logfd >= 0 && r.smsc_unique >= expected &&
        r.smsc_receipts >= expected)
      grace_until = now + 5000000000ull;
    if (grace_until && now > grace_until) break;
    if (published && now - r.last_progress > SMPP_IDLE_S * 1000000000ull) {
      fprintf(stderr, "herald-bench: nothing new for %d s; stopping\n", SMPP_IDLE_S);
      break;
    }
    if (!o->json && isatty(2) && now - last_print > 500000000u) {
      last_print = now;
      fprintf(stderr, "\r  %.1f s  published %ld/%ld  SMS at the SMSC %ld  receipts %ld/%ld   ",
              (now - t0) / 1e9, r.acked, r.ncorr, r.smsc_ok, r.rc_delivered, expected);
    }
  }
  usage u1 = broker_usage(pid), s1 = broker_usage(o->smsc_pid);
  uint64_t t_end = now_ns();
  if (!o->json && isatty(2)) fprintf(stderr, "\n");
  scrape(o, names, m1);
  uv_timer_stop(&r.tick);
  uv_close((uv_handle_t *)&r.tick, NULL);
  hb_zpub_close(r.z);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  zmq_close(sub);
  zmq_ctx_term(zctx);
  if (r.logfd >= 0) close(r.logfd);

  /* 4. Receipts against what was published: each (device, message) once, delivered. */
  idcorr *map = malloc((size_t)r.ncorr * sizeof *map);
  long nmap = 0;
  for (long c = 0; c < r.ncorr; c++)
    if (r.ids[c]) map[nmap++] = (idcorr){r.ids[c], c};
  qsort(map, (size_t)nmap, sizeof *map, cmp_idcorr);
  uint8_t *got = calloc((size_t)(r.N * r.M), 1);
  hb_hist lat;
  hb_hist_init(&lat);
  long rc_unique = 0, rc_dups = 0, rc_failed = 0, rc_unknown = 0;
  uint64_t last_rc = 0;
  for (size_t i = 0; i < r.nrc; i++) {
    rcpt *c = &r.rc[i];
    idcorr k = {c->id, 0}, *m = bsearch(&k, map, (size_t)nmap, sizeof *map, cmp_idcorr);
    if (!m || (o->direct && m->corr % r.N != c->dev)) {
      rc_unknown++;
      continue;
    }
    if (!c->delivered) {
      rc_failed++;
      continue;
    }
    long seq = o->direct ? m->corr / r.N : m->corr;
    uint8_t *g = &got[c->dev * r.M + seq];
    if ((*g)++ == 0) {
      rc_unique++;
      hb_hist_record(&lat, c->t - r.sent_ns[m->corr]);
      if (c->t > last_rc) last_rc = c->t;
    } else {
      rc_dups++;
    }
  }
  double wall = (t_end - t0) / 1e9;
  double cpu = wall > 0 ? 100 * (u1.cpu_s - u0.cpu_s) / wall : 0;
  double smsc_cpu = wall > 0 && o->smsc_pid ? 100 * (s1.cpu_s - s0.cpu_s) / wall : -1;
  double rc_span = last_rc ? (last_rc - t0) / 1e9 : 0;
  double rc_rate = rc_span > 0 ? rc_unique / rc_span : 0;
  double sms_span = r.smsc_last ? (r.smsc_last - t0) / 1e9 : 0;
  double sms_steady_s = r.smsc_last > r.smsc_first ? (r.smsc_last - r.smsc_first) / 1e9 : 0;
  double sms_steady = sms_steady_s > 0 ? (r.smsc_ok - 1) / sms_steady_s : 0;
  double sms_metric = m1[0] >= 0 && m0[0] >= 0 ? m1[0] - m0[0] : -1;
  /* SMS as the SMSC saw them; without its log, the broker's count of messages the SMSC
   * accepted, over the receipts' span. Loss and duplicates likewise: SMS per (device, message)
   * at the SMSC, else delivered receipts per pair. */
  int have_log = o->smsc_log != NULL;
  double sms_rate = have_log ? (sms_span > 0 ? r.smsc_ok / sms_span : 0)
                             : (rc_span > 0 && sms_metric > 0 ? sms_metric / rc_span : 0);
  long lost = have_log ? expected - r.smsc_unique : expected - rc_unique;
  long dups = have_log ? r.smsc_dups : rc_dups;

  if (o->json) {
    printf("{\"scenario\": \"smpp\", \"devices\": %ld, \"messages\": %ld, \"direct\": %s, "
           "\"rate\": %.1f, \"app\": \"%s\", \"expected\": %ld, \"published\": %ld, "
           "\"refused\": %ld, \"seconds\": %.3f, \"counted_at\": \"%s\", \"lost\": %ld, "
           "\"duplicates\": %ld, \"sms_per_s\": %.1f, ",
           r.N, r.M, o->direct ? "true" : "false", o->rate, app, expected, r.acked, r.refused,
           wall, have_log ? "smsc" : "receipts", lost, dups, sms_rate);
    if (have_log)
      printf("\"sms_per_s_steady\": %.1f, \"smsc\": {\"accepted\": %ld, \"unique\": %ld, "
             "\"duplicates\": %ld, \"missing\": %ld, \"other\": %ld, \"throttled\": %ld, "
             "\"rejected\": %ld, \"receipts_sent\": %ld}, ",
             sms_steady, r.smsc_ok, r.smsc_unique, r.smsc_dups, expected - r.smsc_unique,
             r.smsc_other, r.smsc_throttled, r.smsc_rejected, r.smsc_receipts);
    printf("\"receipts\": {\"delivered\": %ld, \"missing\": %ld, \"duplicates\": %ld, "
           "\"failed\": %ld, \"unmatched\": %ld}, \"receipts_per_s\": %.1f, ",
           rc_unique, expected - rc_unique, rc_dups, rc_failed, rc_unknown, rc_rate);
    print_lat("latency", &lat, 1);
    if (have_log) {
      printf(", ");
      print_lat("submit", &r.submit_lat, 1);
    }
    printf(", \"metrics\": {");
    for (size_t i = 0; i < NMETRICS && names[i]; i++)
      printf("%s\"%s\": %.0f", i ? ", " : "", names[i],
             m1[i] >= 0 && m0[i] >= 0 ? m1[i] - m0[i] : -1);
    printf("}, \"broker_cpu_pct\": %.1f, \"broker_rss_kb\": %ld, \"smsc_cpu_pct\": %.1f, "
           "\"provision_s\": %.2f, \"msisdn_s\": %.2f}\n",
           cpu, u1.rss_kb, smsc_cpu, prov_s, msisdn_s);
  } else {
    char pace[48];
    if (o->rate > 0) snprintf(pace, sizeof pace, "at %.1f/s", o->rate);
    else snprintf(pace, sizeof pace, "all at once");
    printf("smpp: %ld devices x %ld %s %s (app %s): %ld SMS expected\n", r.N, r.M,
           o->direct ? "direct messages each" : "broadcasts", pace, app, expected);
    printf("  published       %ld acknowledged (%ld refused)\n", r.acked, r.refused);
    if (have_log) {
      printf("  at the SMSC     %ld accepted: %ld of %ld (device, message) pairs, %ld missing, "
             "%ld duplicates, %ld not ours; %ld throttled, %ld rejected; %ld receipts sent\n",
             r.smsc_ok, r.smsc_unique, expected, expected - r.smsc_unique, r.smsc_dups,
             r.smsc_other, r.smsc_throttled, r.smsc_rejected, r.smsc_receipts);
      printf("  SMS/s           %.1f from the first publish (%.3f s); %.1f between the first and "
             "the last SMS\n", sms_rate, sms_span, sms_steady);
    } else {
      printf("  SMS/s           %.1f (herald_sms_messages_total +%.0f over the receipts' span; "
             "no --smsc-log)\n", sms_rate, sms_metric);
    }
    printf("  receipts        %ld of %ld delivered (missing %ld, duplicates %ld, failed %ld, "
           "unmatched %ld); %.1f/s from the first publish\n",
           rc_unique, expected, expected - rc_unique, rc_dups, rc_failed, rc_unknown, rc_rate);
    if (rc_unique < expected && m1[M_PUSH_RECEIPTS] - m0[M_PUSH_RECEIPTS] >= expected)
      printf("                  (the broker counted %.0f receipts, herald_push_receipts_total: "
             "the missing ones are receipt events the events socket did not deliver)\n",
             m1[M_PUSH_RECEIPTS] - m0[M_PUSH_RECEIPTS]);
    print_lat("publish->receipt", &lat, 0);
    if (have_log) print_lat("publish->SMSC accept", &r.submit_lat, 0);
    printf("  broker metrics ");
    for (size_t i = 0; i < NMETRICS && names[i]; i++)
      printf(" %s +%.0f", names[i] + 7, m1[i] - m0[i]);
    printf("\n");
    if (pid) printf("  broker CPU %.0f %%  RSS %ld KiB (pid %d)\n", cpu, u1.rss_kb, pid);
    if (o->smsc_pid) printf("  SMSC CPU %.0f %% (pid %d)\n", smsc_cpu, o->smsc_pid);
    printf("  provisioning    %.2f s for %ld devices, MSISDNs %.2f s\n", prov_s, r.N, msisdn_s);
  }
  hb_plot_run(o, "smpp: publish->receipt", &lat);
  msgpack_sbuffer_destroy(&r.sb);
  free(map);
  free(got);
  free(r.rc);
  free(r.lbuf);
  free(r.smsc_cnt);
  free(r.sent_ns);
  free(r.ids);
  free(r.regs);
  return 0;
}
