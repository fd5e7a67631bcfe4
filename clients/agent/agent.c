/* agent.c — herald-agent's core (see agent.h). */
#include "agent.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "codec.h"
#include "config.h"
#include "hdc_client.h"
#include "herald/error.h"
#include "log.h"
#include "release.h"
#include "runner.h"
#include "update.h"

#define MAX_PARALLEL 64
#define HANDLED_KEEP_MS (30ll * 86400 * 1000) /* backstop for never-confirmed acks */

typedef struct job {
  agent *a;
  runner *r;
  uint64_t id;
  int kind;
} job;

struct agent {
  uv_loop_t *loop;
  const agent_conf *conf;
  inbox *ib;
  updater *up;
  hdc_conn *conn;
  int ready, welcomed; /* welcomed: some connection of this run got its welcome */
  uv_timer_t reconnect, retry;
  hdc_backoff backoff;
  char alt_host[256];
  int alt_port;
  job *jobs[MAX_PARALLEL];
  int running;
  int stopping, exit_code;
  int handles; /* timers not yet closed */
};

static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void kick(agent *a);
static void connect_now(agent *a);

/* ---- acks ---- */
static void ack(agent *a, uint64_t id) {
  /* Not connected: the id stays unconfirmed in the inbox and goes out after the welcome. */
  if (a->ready && a->conn) hdc_conn_ack(a->conn, &id, 1);
}

static void ack_unconfirmed(agent *a) {
  uint64_t *ids = NULL;
  size_t n = 0;
  if (inbox_unconfirmed(a->ib, &ids, &n) == 0 && n) {
    hd__log(HD_LOG_DEBUG, "acks_resent", "count=%zu", n);
    hdc_conn_ack(a->conn, ids, n);
  }
  free(ids);
}

/* A notice is done with: handled (or answered), remembered, acked. */
static void settle(agent *a, uint64_t id, const char *app, const char *how) {
  int rc = inbox_handled(a->ib, id, wall_ms());
  if (rc) {
    /* Not recorded: do not ack, so it comes again rather than being lost. */
    hd__log(HD_LOG_ERROR, "store_failed", "id=%" PRIu64 " error=%s", id, hd_err_code(rc));
    return;
  }
  hd__log(HD_LOG_INFO, "handled", "id=%" PRIu64 " app=%s result=%s", id, app, how);
  ack(a, id);
}

/* ---- running handlers ---- */
static int64_t retry_delay_ms(const agent *a, uint32_t attempts) {
  int64_t d = a->conf->retry_base_s * 1000;
  for (uint32_t i = 1; i < attempts && d < a->conf->retry_max_s * 1000; i++) d *= 2;
  return d > a->conf->retry_max_s * 1000 ? a->conf->retry_max_s * 1000 : d;
}

static void release_decided(agent *a, const note *n, int state, const char *by);

static void job_failed(agent *a, note *n, const char *why) {
  n->attempts++;
  if (a->conf->max_attempts && n->attempts >= (uint32_t)a->conf->max_attempts) {
    n->state = NOTE_FAILED;
    hd__log(HD_LOG_WARN, "handler_gave_up", "id=%" PRIu64 " app=%s attempts=%u reason=%s",
            n->id, n->app, n->attempts, why);
    /* Nobody answered the question: for the update flow that is a "no". */
    if (n->kind == NOTE_RELEASE) release_decided(a, n, REL_DECLINED, NULL);
  } else {
    int64_t d = retry_delay_ms(a, n->attempts);
    n->next_try_ms = wall_ms() + d;
    hd__log(HD_LOG_WARN, "handler_failed",
            "id=%" PRIu64 " app=%s attempt=%u reason=%s retry_in_ms=%lld", n->id, n->app,
            n->attempts, why, (long long)d);
  }
  int rc = inbox_update(a->ib, n);
  if (rc) hd__log(HD_LOG_ERROR, "store_failed", "id=%" PRIu64 " error=%s", n->id,
                  hd_err_code(rc));
  else if (n->state == NOTE_FAILED) ack(a, n->id);
}

static void record_release(agent *a, const note *n, int state, const char *json, size_t len) {
  release_rec r = {.id = n->id, .state = (uint8_t)state, .updated_ms = wall_ms()};
  snprintf(r.app, sizeof r.app, "%s", n->app);
  int rc = inbox_release_put(a->ib, &r, json ? json : "null", json ? len : 4);
  if (rc) hd__log(HD_LOG_ERROR, "store_failed", "id=%" PRIu64 " error=%s", n->id,
                  hd_err_code(rc));
}

/* The notice got its answer (by = NULL: it stays a FAILED note, nothing to settle): recorded,
 * handed to the update service, settled. Each step is idempotent, so a crash between two of
 * them only repeats the first ones after the restart. */
static void release_decided(agent *a, const note *n, int state, const char *by) {
  char *json = NULL;
  size_t len = 0;
  note tmp;
  inbox_get(a->ib, n->id, &tmp, &json, &len);
  record_release(a, n, state, json, len);
  if (by)
    hd__log(HD_LOG_INFO, state == REL_ACCEPTED ? "release_accepted" : "release_declined",
            "id=%" PRIu64 " app=%s%s%s", n->id, n->app, *by ? " by=" : "", by);
  if (json) updater_notice_answered(a->up, n->id, json, state);
  free(json);
  if (by) settle(a, n->id, n->app, release_state_name(state));
}

static void on_job_done(void *ud, int64_t status, int sig, int timed_out, int spawn_error) {
  job *j = ud;
  agent *a = j->a;
  for (int i = 0; i < MAX_PARALLEL; i++)
    if (a->jobs[i] == j) a->jobs[i] = NULL;
  a->running--;
  note n;
  int rc = a->stopping ? -1 : inbox_get(a->ib, j->id, &n, NULL, NULL);
  if (rc == 0) {
    char why[64];
    if (spawn_error) snprintf(why, sizeof why, "\"cannot start: %s\"", uv_strerror(spawn_error));
    else if (timed_out) snprintf(why, sizeof why, "timeout");
    else if (sig) snprintf(why, sizeof why, "signal_%d", sig);
    else snprintf(why, sizeof why, "exit_%lld", (long long)status);
    if (j->kind == NOTE_RELEASE) {
      int st = spawn_error || timed_out ? 0 : release_answer(status, sig);
      if (st) {
        release_decided(a, &n, st, "");
      } else {
        job_failed(a, &n, why);
      }
    } else if (!spawn_error && !timed_out && !sig && status == 0) {
      settle(a, n.id, n.app, "ok");
    } else {
      job_failed(a, &n, why);
    }
  }
  /* While stopping the notice stays as it was: pending, the same attempt count. */
  free(j);
  if (!a->stopping) kick(a);
}

static int start_job(agent *a, const note *n) {
  char *json = NULL;
  size_t len = 0;
  note cur;
  int rc = inbox_get(a->ib, n->id, &cur, &json, &len);
  if (rc) return rc;
  const char *cmd;
  if (cur.kind == NOTE_RELEASE) {
    release_rec r;
    if (inbox_release_get(a->ib, cur.id, &r)) {
      r = (release_rec){.id = cur.id, .state = REL_ASKING, .updated_ms = wall_ms()};
      snprintf(r.app, sizeof r.app, "%s", cur.app);
      inbox_release_put(a->ib, &r, json, len);
    }
    if (release_next(r.state) != REL_DO_ASK) {
      /* Decided before a crash, not yet settled: make sure its job exists, settle now. */
      if (r.state == REL_ACCEPTED || r.state == REL_DECLINED)
        updater_notice_answered(a->up, cur.id, json, r.state);
      settle(a, cur.id, cur.app, release_state_name(r.state));
      free(json);
      return 0;
    }
    /* Nobody is asked about a version that is installed already or being updated to. */
    int v = updater_notice_verdict(a->up, json);
    if (v != -1 && v != UPD_OFFER_TAKE && v != UPD_OFFER_RESTART) {
      record_release(a, &cur, REL_IGNORED, json, len);
      hd__log(HD_LOG_INFO, "release_ignored", "id=%" PRIu64 " app=%s reason=%s", cur.id,
              cur.app, v == UPD_OFFER_NOT_NEWER ? "not_newer" : "known");
      settle(a, cur.id, cur.app, release_state_name(REL_IGNORED));
      free(json);
      return 0;
    }
    if (!a->conf->ask) { /* no hook: the answer is yes */
      free(json);
      release_decided(a, &cur, REL_ACCEPTED, "default");
      return 0;
    }
    cmd = a->conf->ask;
  } else {
    cmd = agent_conf_handler(a->conf, cur.app);
    if (!cmd) { /* the handler went away from the config: keep it for the user */
      cur.state = NOTE_UNROUTED;
      inbox_update(a->ib, &cur);
      ack(a, cur.id);
      free(json);
      return 0;
    }
  }
  job *j = calloc(1, sizeof *j);
  if (!j) {
    free(json);
    return HD_ENOMEM;
  }
  j->a = a;
  j->id = cur.id;
  j->kind = cur.kind;
  char e_id[40], e_app[160], e_try[40], e_kind[40], e_dev[160];
  snprintf(e_id, sizeof e_id, "HERALD_ID=%" PRIu64, cur.id);
  snprintf(e_app, sizeof e_app, "HERALD_APP=%s", cur.app);
  snprintf(e_try, sizeof e_try, "HERALD_ATTEMPT=%u", cur.attempts + 1);
  snprintf(e_kind, sizeof e_kind, "HERALD_KIND=%s",
           cur.kind == NOTE_RELEASE ? "release" : "notice");
  snprintf(e_dev, sizeof e_dev, "HERALD_DEVICE=%s", a->conf->device);
  const char *env[] = {e_id, e_app, e_try, e_kind, e_dev, NULL};
  rc = runner_start(a->loop, cmd, json, len, env, (uint64_t)a->conf->handler_timeout_s * 1000,
                    on_job_done, j, &j->r);
  free(json);
  if (rc) {
    free(j);
    return HD_ENOMEM;
  }
  for (int i = 0; i < MAX_PARALLEL; i++)
    if (!a->jobs[i]) {
      a->jobs[i] = j;
      break;
    }
  a->running++;
  hd__log(HD_LOG_DEBUG, "handler_started", "id=%" PRIu64 " app=%s attempt=%u", cur.id,
          cur.app, cur.attempts + 1);
  return 0;
}

/* ---- the scheduler: the oldest due pending notice next ---- */
typedef struct pick {
  agent *a;
  int64_t now, next_due;
  note found;
  int have;
} pick;

static int is_running(const agent *a, uint64_t id) {
  for (int i = 0; i < MAX_PARALLEL; i++)
    if (a->jobs[i] && a->jobs[i]->id == id) return 1;
  return 0;
}

static int pick_cb(void *ud, const note *n) {
  pick *p = ud;
  if (n->state != NOTE_PENDING || is_running(p->a, n->id)) return 0;
  if (n->expires_ms && n->expires_ms < p->now) {
    /* The broker has dropped it too; running it now would be stale news. */
    hd__log(HD_LOG_INFO, "expired", "id=%" PRIu64 " app=%s", n->id, n->app);
    inbox_delete(p->a->ib, n->id);
    ack(p->a, n->id);
    return 0;
  }
  if (n->next_try_ms > p->now) {
    if (!p->next_due || n->next_try_ms < p->next_due) p->next_due = n->next_try_ms;
    return 0;
  }
  p->found = *n;
  p->have = 1;
  return 1;
}

static void on_retry_timer(uv_timer_t *t) { kick(t->data); }

static void kick(agent *a) {
  while (!a->stopping && a->running < a->conf->parallel) {
    pick p = {.a = a, .now = wall_ms()};
    if (inbox_each(a->ib, pick_cb, &p) || !p.have) {
      uv_timer_stop(&a->retry);
      if (p.next_due) uv_timer_start(&a->retry, on_retry_timer, (uint64_t)(p.next_due - p.now), 0);
      return;
    }
    int rc = start_job(a, &p.found);
    if (rc) {
      hd__log(HD_LOG_ERROR, "handler_not_started", "id=%" PRIu64 " error=%s", p.found.id,
              hd_err_code(rc));
      return;
    }
  }
}

/* ---- receiving ---- */
/* The document a handler reads: {"id","app","created","expires"[,"to"],"data"}. */
static char *render(const hdc_frame *f) {
  char buf[32];
  json_t *o = json_object();
  snprintf(buf, sizeof buf, "%" PRIu64, f->id);
  json_object_set_new(o, "id", json_string(buf));
  json_object_set_new(o, "app", json_stringn(f->app.p, f->app.len));
  json_object_set_new(o, "created", json_integer(f->created));
  json_object_set_new(o, "expires", json_integer(f->expires));
  if (f->to.p) json_object_set_new(o, "to", json_stringn(f->to.p, f->to.len));
  char *text = NULL;
  size_t tl;
  json_t *data = NULL;
  if (hd__codec_mpbytes_to_json_text(f->data, f->data_len, &text, &tl) == 0)
    data = json_loadb(text, tl, JSON_DECODE_ANY, NULL);
  free(text);
  json_object_set_new(o, "data", data ? data : json_null());
  char *s = json_dumps(o, JSON_COMPACT);
  json_decref(o);
  return s;
}

static void on_msg(hdc_conn *c, void *ud, const hdc_frame *f) {
  agent *a = ud;
  int seen;
  int rc = inbox_seen(a->ib, f->id, &seen);
  if (!rc && seen != SEEN_NEW) {
    /* Sent again after a reconnect: our ack was lost with the connection, or the notice is
     * still being handled (then it is acked when it is). Never handled twice. */
    hd__log(HD_LOG_DEBUG, "duplicate", "id=%" PRIu64 " state=%s", f->id,
            seen == SEEN_SETTLED ? "settled" : "pending");
    if (seen == SEEN_SETTLED) ack(a, f->id);
    return;
  }
  note n = {.id = f->id, .state = NOTE_PENDING, .received_ms = wall_ms(),
            .expires_ms = f->expires};
  hdc_str_copy(f->app, n.app, sizeof n.app);
  n.kind = release_is_notice(f->data, f->data_len) ? NOTE_RELEASE : NOTE_NOTICE;
  if (n.kind == NOTE_NOTICE && !agent_conf_handler(a->conf, n.app)) n.state = NOTE_UNROUTED;
  char *json = rc ? NULL : render(f);
  if (!rc) rc = json ? inbox_put(a->ib, &n, json, strlen(json)) : HD_ENOMEM;
  free(json);
  if (rc) {
    /* Not stored, so not ours yet: drop the connection and let the broker send it again. */
    hd__log(HD_LOG_ERROR, "store_failed", "id=%" PRIu64 " error=%s", f->id, hd_err_code(rc));
    hdc_conn_close(c);
    return;
  }
  hd__log(HD_LOG_INFO, "received", "id=%" PRIu64 " app=%s kind=%s%s", n.id, n.app,
          n.kind == NOTE_RELEASE ? "release" : "notice",
          n.state == NOTE_UNROUTED ? " handler=none" : "");
  if (n.state == NOTE_UNROUTED) ack(a, n.id);
  else kick(a);
}

static void on_acked(hdc_conn *c, void *ud, const uint64_t *ids, size_t n) {
  agent *a = ud;
  int rc = inbox_confirm(a->ib, ids, n);
  if (rc) hd__log(HD_LOG_WARN, "store_failed", "what=confirm error=%s", hd_err_code(rc));
}

/* ---- the connection ---- */
static void on_reconnect_timer(uv_timer_t *t) { connect_now(t->data); }

static void on_ready(hdc_conn *c, void *ud, const hdc_frame *w) {
  agent *a = ud;
  a->ready = 1;
  hdc_backoff_reset(&a->backoff);
  hd__log(HD_LOG_INFO, "connected", "broker=%s:%d heartbeat=%" PRIu64 " window=%" PRIu64,
          a->alt_port ? a->alt_host : a->conf->host, a->alt_port ? a->alt_port : a->conf->port,
          w->heartbeat, w->window);
  ack_unconfirmed(a);
  /* Notices sent while we were away are gone for good once they expired, and the broker may
   * have released something meanwhile: ask. (The first welcome is covered by the check at
   * start.) */
  if (a->welcomed) updater_check(a->up, UPD_CHECK_RECONNECT);
  a->welcomed = 1;
}

static void on_close(hdc_conn *c, void *ud, const hdc_close_info *why) {
  agent *a = ud;
  a->conn = NULL;
  a->ready = 0;
  if (a->stopping) return;
  uint64_t delay = hdc_backoff_next(&a->backoff);
  char q[300];
  if (why->status == HDC_EDENIED) {
    hd__log(HD_LOG_ERROR, "denied", "code=%s text=%s retry=%lld", why->code,
            hd__log_q(why->text, q, sizeof q), (long long)why->retry_s);
    if (strcmp(why->code, "auth") == 0 || strcmp(why->code, "version") == 0) {
      /* Retrying cannot help and only feeds the broker's throttle: stop. */
      a->exit_code = 3;
      agent_stop(a);
      return;
    }
  } else if (why->status == HDC_EGOAWAY) {
    hd__log(HD_LOG_INFO, "goaway", "code=%s retry=%lld alt=%s", why->code,
            (long long)why->retry_s, *why->alt ? why->alt : "-");
    if (*why->alt) {
      char host[256];
      int port;
      if (hd__config_parse_hostport(why->alt, host, sizeof host, &port) == 0 && port > 0) {
        snprintf(a->alt_host, sizeof a->alt_host, "%s", host);
        a->alt_port = port;
      }
    }
  } else if (why->status == HDC_ETLS) {
    hd__log(HD_LOG_WARN, "tls_failed", "reason=%s", hd__log_q(why->text, q, sizeof q));
  } else {
    hd__log(why->was_ready ? HD_LOG_INFO : HD_LOG_WARN, "disconnected", "reason=%s%s%s",
            hdc_strerror(why->status), why->sys_err ? " error=" : "",
            why->sys_err ? uv_err_name(why->sys_err) : "");
  }
  /* A retry hint is a floor; the jitter on top spreads a fleet told the same thing. */
  if (why->retry_s >= 0) delay += (uint64_t)why->retry_s * 1000;
  hd__log(HD_LOG_DEBUG, "reconnect_in", "ms=%llu", (unsigned long long)delay);
  uv_timer_start(&a->reconnect, on_reconnect_timer, delay, 0);
}

static void connect_now(agent *a) {
  static const hdc_conn_cbs cbs = {
      .on_ready = on_ready, .on_msg = on_msg, .on_acked = on_acked, .on_close = on_close};
  hdc_conn_opts o = {.host = a->alt_port ? a->alt_host : a->conf->host,
                     .port = a->alt_port ? a->alt_port : a->conf->port,
                     .device = a->conf->device,
                     .tenant = a->conf->tenant,
                     .token = a->conf->token,
                     .agent = "herald-agent/0.1.0",
                     .tls_ca = a->conf->tls_ca,
                     .tls_name = a->conf->tls_name};
  if (a->alt_port) a->alt_port = 0; /* one try elsewhere; then home again */
  int rc = hdc_conn_open(a->loop, &o, &cbs, a, &a->conn);
  if (rc) {
    a->conn = NULL;
    hd__log(HD_LOG_ERROR, "connect_failed", "error=%s", hdc_strerror(rc));
    uv_timer_start(&a->reconnect, on_reconnect_timer, hdc_backoff_next(&a->backoff), 0);
  }
}

/* ---- lifecycle ---- */
typedef struct recover {
  agent *a;
  size_t pending, rerouted;
} recover;

static int recover_cb(void *ud, const note *n) {
  recover *r = ud;
  if (n->state == NOTE_PENDING) r->pending++;
  if (n->state == NOTE_UNROUTED && n->kind == NOTE_NOTICE &&
      agent_conf_handler(r->a->conf, n->app)) {
    note m = *n; /* a handler was configured since: handle it after all (it is acked) */
    m.state = NOTE_PENDING;
    m.next_try_ms = 0;
    if (inbox_update(r->a->ib, &m) == 0) r->rerouted++;
  }
  return 0;
}

int agent_new(uv_loop_t *loop, const agent_conf *conf, inbox *ib, agent **out) {
  agent *a = calloc(1, sizeof *a);
  if (!a) return HD_ENOMEM;
  a->loop = loop;
  a->conf = conf;
  a->ib = ib;
  a->backoff = (hdc_backoff){.base_ms = (uint32_t)conf->reconnect_min_s * 1000,
                             .max_ms = (uint32_t)conf->reconnect_max_s * 1000,
                             .rng = (uint64_t)wall_ms() * 6364136223846793005ull ^
                                    (uint64_t)getpid()};
  int rc = updater_new(loop, conf, ib, &a->up);
  if (rc) {
    free(a);
    return rc;
  }
  uv_timer_init(loop, &a->reconnect);
  uv_timer_init(loop, &a->retry);
  a->reconnect.data = a->retry.data = a;
  a->handles = 2;
  inbox_prune_handled(ib, wall_ms() - HANDLED_KEEP_MS);
  recover r = {.a = a};
  inbox_each(ib, recover_cb, &r);
  hd__log(HD_LOG_INFO, "agent_started",
          "device=%s tenant=%s broker=%s:%d pending=%zu rerouted=%zu handlers=%zu ask=%s",
          conf->device, conf->tenant, conf->host, conf->port, r.pending, r.rerouted,
          conf->nhandlers, conf->ask ? "hook" : "auto-yes");
  *out = a;
  connect_now(a);
  kick(a);
  updater_check(a->up, UPD_CHECK_START);
  return 0;
}

static void on_timer_closed(uv_handle_t *h) { ((agent *)h->data)->handles--; }

void agent_stop(agent *a) {
  if (a->stopping) return;
  a->stopping = 1;
  if (a->conn) hdc_conn_close(a->conn);
  uv_close((uv_handle_t *)&a->reconnect, on_timer_closed);
  uv_close((uv_handle_t *)&a->retry, on_timer_closed);
  for (int i = 0; i < MAX_PARALLEL; i++)
    if (a->jobs[i]) runner_stop(a->jobs[i]->r);
  updater_stop(a->up);
}

void agent_update_check(agent *a) {
  hd__log(HD_LOG_INFO, "update_check_requested", "by=signal");
  updater_check(a->up, UPD_CHECK_USER);
}

int agent_exit_code(const agent *a) { return a->exit_code; }

void agent_free(agent *a) {
  updater_free(a->up);
  free(a);
}
