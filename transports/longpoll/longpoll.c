/* longpoll.c — the HTTP long-poll transport: a pull transport built only on the public ABI.
 *
 *   GET  /v1/devices/{device}/messages?cursor=C&wait=S&max=N   (Bearer device token)
 *        -> 200 {"messages": [{"id","app","data","created"[, "to"]}...], "cursor": "..."}
 *        Answers at once when something is pending after C (no C: everything pending), else
 *        holds the request up to S seconds (capped by max_wait) and answers the moment a
 *        message for the device commits, or with an empty list when the time is up.
 *   POST /v1/devices/{device}/acks {"ids": ["12", 13, ...]}       (Bearer device token)
 *        -> 200 {"acked": n} after the acks are committed; acked messages never come again.
 *
 * Every held poll costs one small struct and one router watch: no thread, no timer of its own,
 * no copy of any message until it is sent.
 */
#include <errno.h>
#include <herald/transport.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct lp lp;

typedef struct poll_req {
  lp *t;
  struct poll_req *prev, *next; /* its wait class's list, by deadline */
  hd_http_req *req;
  hd_device *dev;
  hd_watch *watch;
  uint64_t after;
  uint64_t deadline;            /* uv_now() ms at which it is answered (possibly empty) */
  size_t max;
  uint32_t wait_s;
} poll_req;

/* Held polls time out through one timer per transport instead of one each: polls with the
 * same wait reach their deadlines in the order they arrived, so each distinct wait keeps a
 * FIFO list, and the timer only ever needs the earliest head among the lists in use. Holding
 * and ending a poll is then O(1) list work; per-poll timers cost libuv's timer heap on both
 * and a handle to close (~5 % of the loop in a fan-out to 1,000 long-polls). */
typedef struct wait_class {
  poll_req *head, *tail;
  struct wait_class *anext, *aprev; /* the list of classes holding polls */
} wait_class;

struct lp {
  const hd_host *h;
  hd_plugin *self;
  int64_t max_wait_s;
  int64_t max_batch;
  int64_t max_held;  /* polls held at once; over it a poll that would wait gets 503 */
  int64_t nheld;
  wait_class *classes;  /* indexed by wait seconds, 0..max_wait_s */
  wait_class *active;   /* classes with held polls */
  uv_timer_t timer;     /* due at the earliest deadline (or before: it then re-arms) */
  uint64_t timer_due;
  int started, stopping;
  hd_metric *m_held, *m_polls, *m_timeouts, *m_acks, *m_refused;
};

static const char *const lp_keys[] = {"max_wait", "max_batch", "max_held", NULL};

/* ---- response ---- */
typedef struct sbuf {
  char *p;
  size_t len, cap;
} sbuf;

static int sb_put(sbuf *b, const char *s, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = (b->len + n + 1) * 2;
    char *p = realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = 0;
  return 0;
}

static int sb_str(sbuf *b, const char *s) { return sb_put(b, s, strlen(s)); }

/* A decimal number (a fan-out renders tens of thousands of answers a second: no snprintf). */
static int sb_u64(sbuf *b, uint64_t v) {
  char buf[24], *q = buf + sizeof buf;
  do {
    *--q = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  return sb_put(b, q, (size_t)(buf + sizeof buf - q));
}

static int sb_i64(sbuf *b, int64_t v) {
  if (v >= 0) return sb_u64(b, (uint64_t)v);
  return sb_put(b, "-", 1) | sb_u64(b, (uint64_t)0 - (uint64_t)v);
}

/* Render a batch. App and device ids are restricted to [A-Za-z0-9._:-] by the broker, so they
 * need no JSON escaping; the payload comes pre-rendered from the host. */
static void reply_batch(lp *t, hd_http_req *req, const hd_batch *bt) {
  const hd_host *h = t->h;
  sbuf b = {0};
  int bad = sb_str(&b, "{\"messages\":[");
  size_t n = h->batch_count(bt);
  for (size_t i = 0; i < n && !bad; i++) {
    const hd_msg *m = h->batch_msg(bt, i);
    size_t jl;
    const char *data = h->msg_data_json(m, &jl);
    if (!data) { /* a payload JSON cannot show (binary): send it as null, not fail the poll */
      data = "null";
      jl = 4;
    }
    bad |= sb_str(&b, i ? ",{\"id\":\"" : "{\"id\":\"") | sb_u64(&b, h->msg_id(m)) |
           sb_str(&b, "\",\"app\":\"") | sb_str(&b, h->msg_app(m)) |
           sb_str(&b, "\",\"data\":") | sb_put(&b, data, jl) | sb_str(&b, ",\"created\":") |
           sb_i64(&b, h->msg_created_ms(m));
    if (h->msg_to(m)) bad |= sb_str(&b, ",\"to\":\"") | sb_str(&b, h->msg_to(m)) | sb_str(&b, "\"");
    bad |= sb_str(&b, "}");
  }
  bad |= sb_str(&b, "],\"cursor\":\"") | sb_u64(&b, h->batch_cursor(bt)) | sb_str(&b, "\"}");
  if (bad) h->http_reply_error(req, HD_ENOMEM, NULL);
  else h->http_reply(req, 200, "application/json", b.p, b.len);
  free(b.p);
}

/* ---- held polls ---- */
static void on_deadline(uv_timer_t *tm);

static void timer_arm(lp *t, uint64_t due) {
  uint64_t now = uv_now(t->h->loop(t->self));
  uv_timer_start(&t->timer, on_deadline, due > now ? due - now : 0, 0);
  t->timer_due = due;
}

static void poll_link(poll_req *p) {
  lp *t = p->t;
  wait_class *w = &t->classes[p->wait_s];
  p->next = NULL;
  p->prev = w->tail;
  if (w->tail) {
    w->tail->next = p;
  } else {
    w->head = p;
    w->aprev = NULL;
    w->anext = t->active;
    if (t->active) t->active->aprev = w;
    t->active = w;
  }
  w->tail = p;
  t->nheld++;
  t->h->metric_add(t->m_held, 1);
  /* Only a shorter wait than any held can come due first; an ending poll leaves the timer as
   * it is (firing early costs one re-arm). */
  if (!uv_is_active((uv_handle_t *)&t->timer) || p->deadline < t->timer_due)
    timer_arm(t, p->deadline);
}

static void poll_unlink(poll_req *p) {
  lp *t = p->t;
  wait_class *w = &t->classes[p->wait_s];
  if (p->prev) p->prev->next = p->next;
  else w->head = p->next;
  if (p->next) p->next->prev = p->prev;
  else w->tail = p->prev;
  p->prev = p->next = NULL;
  if (!w->head) {
    if (w->aprev) w->aprev->anext = w->anext;
    else t->active = w->anext;
    if (w->anext) w->anext->aprev = w->aprev;
    w->anext = w->aprev = NULL;
  }
  t->nheld--;
  t->h->metric_add(t->m_held, -1);
}

/* End a held poll: unlink, cancel the watch, free. */
static void poll_end(poll_req *p) {
  poll_unlink(p);
  if (p->watch) p->t->h->unwatch(p->watch);
  p->t->h->device_free(p->dev);
  free(p);
}

/* Any held poll (the head of the first class in use), or NULL. */
static poll_req *poll_any(lp *t) { return t->active ? t->active->head : NULL; }

/* Fetch and answer if anything is there (or if forced). Returns 1 if answered. */
static int poll_try(poll_req *p, int force) {
  lp *t = p->t;
  hd_batch *bt;
  int rc = t->h->fetch(t->self, p->dev, p->after, p->max, &bt);
  if (rc) {
    t->h->http_reply_error(p->req, rc, "cannot read pending messages");
    return 1;
  }
  if (t->h->batch_count(bt) == 0 && !force) {
    t->h->batch_free(bt);
    return 0;
  }
  reply_batch(t, p->req, bt);
  t->h->batch_free(bt);
  return 1;
}

static void on_wake(void *ud);

static void on_wake(void *ud) {
  poll_req *p = ud;
  p->watch = NULL; /* spent */
  if (poll_try(p, p->t->stopping)) {
    poll_end(p);
    return;
  }
  /* Woken for a message another poll of this device took, or one since acked: wait on. */
  p->watch = p->t->h->watch(p->t->self, p->dev, on_wake, p);
  if (!p->watch) {
    p->t->h->http_reply_error(p->req, HD_ENOMEM, NULL);
    poll_end(p);
  }
}

/* Answer every poll whose wait is up, then sleep until the next deadline. */
static void on_deadline(uv_timer_t *tm) {
  lp *t = tm->data;
  uint64_t now = uv_now(t->h->loop(t->self)), next = UINT64_MAX;
  for (wait_class *w = t->active, *wn; w; w = wn) {
    wn = w->anext; /* w leaves the list when its last poll ends */
    poll_req *p;
    while ((p = w->head) && p->deadline <= now) {
      t->h->metric_add(t->m_timeouts, 1);
      poll_try(p, 1); /* one last look, then answer (possibly empty) */
      poll_end(p);
    }
    if (p && p->deadline < next) next = p->deadline;
  }
  if (next != UINT64_MAX) timer_arm(t, next);
}

static void on_abort(void *ud, hd_http_req *req) {
  poll_end(ud); /* the client left: nothing to answer */
}

/* ---- handlers ---- */
static int parse_u64(const char *s, uint64_t *out) {
  if (!s || !*s || *s == '-' || *s == '+') return -1;
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || *end) return -1;
  *out = v;
  return 0;
}

static hd_device *auth(lp *t, hd_http_req *req) {
  hd_device *d = NULL;
  const char *id = t->h->http_param(req, "device");
  int rc = t->h->device_auth(t->self, id, t->h->http_bearer(req), &d);
  if (rc) {
    t->h->http_reply_error(req, rc == HD_EAUTH ? HD_EAUTH : rc,
                           rc == HD_EAUTH ? "missing or wrong device token" : NULL);
    return NULL;
  }
  return d;
}

static void h_messages(void *ud, hd_http_req *req) {
  lp *t = ud;
  const hd_host *h = t->h;
  uint64_t after = 0, wait = 0, max = (uint64_t)t->max_batch;
  const char *c = h->http_query(req, "cursor"), *w = h->http_query(req, "wait");
  const char *mx = h->http_query(req, "max");
  if ((c && parse_u64(c, &after)) || (w && parse_u64(w, &wait)) || (mx && parse_u64(mx, &max)) ||
      max == 0) {
    h->http_reply_error(req, HD_EINVAL, "cursor, wait and max must be non-negative integers");
    return;
  }
  if (wait > (uint64_t)t->max_wait_s) wait = (uint64_t)t->max_wait_s;
  if (!t->started) wait = 0; /* no deadline timer before start (or after stop) */
  if (max > (uint64_t)t->max_batch) max = (uint64_t)t->max_batch;
  hd_device *d = auth(t, req);
  if (!d) return;
  h->metric_add(t->m_polls, 1);
  poll_req *p = calloc(1, sizeof *p);
  if (!p) {
    h->device_free(d);
    h->http_reply_error(req, HD_ENOMEM, NULL);
    return;
  }
  p->t = t;
  p->req = req;
  p->dev = d;
  p->after = after;
  p->max = (size_t)max;
  if (poll_try(p, wait == 0 || t->stopping)) {
    h->device_free(d);
    free(p);
    return;
  }
  if (t->nheld >= t->max_held) {
    /* Answered at once instead of held: the client retries after Retry-After, and one
     * more held poll cannot take the last file descriptors the broker has. */
    h->device_free(d);
    free(p);
    h->metric_add(t->m_refused, 1);
    h->http_reply_error(req, HD_EAGAIN, "too many long-polls held; retry later");
    return;
  }
  /* Nothing yet: hold. Watch first, so a commit between fetch and hold still wakes us. */
  p->watch = h->watch(t->self, d, on_wake, p);
  if (!p->watch) {
    h->device_free(d);
    free(p);
    h->http_reply_error(req, HD_ENOMEM, NULL);
    return;
  }
  p->wait_s = (uint32_t)wait;
  p->deadline = uv_now(h->loop(t->self)) + wait * 1000;
  h->http_hold(req, on_abort, p);
  poll_link(p);
  /* No race between the fetch above and the watch: wake-ups run on this loop thread, so a
   * commit that became visible meanwhile still reaches the watch on its way back. */
}

typedef struct ack_req {
  lp *t;
  hd_http_req *req;
  size_t n;
} ack_req;

static void on_acked(void *ud, int status) {
  ack_req *a = ud;
  if (status < 0) {
    a->t->h->http_reply_error(a->req, status, NULL);
  } else {
    /* The count that took effect: repeated, unknown or foreign ids are not acks. */
    char body[64];
    int n = snprintf(body, sizeof body, "{\"acked\":%d}", status);
    a->t->h->metric_add(a->t->m_acks, (double)status);
    a->t->h->http_reply(a->req, 200, "application/json", body, (size_t)n);
  }
  free(a);
}

static void h_acks(void *ud, hd_http_req *req) {
  lp *t = ud;
  const hd_host *h = t->h;
  size_t len;
  const char *body = h->http_body(req, &len);
  json_error_t e;
  json_t *j = json_loadb(body ? body : "", len, 0, &e);
  json_t *ids = j ? json_object_get(j, "ids") : NULL;
  size_t n = json_array_size(ids);
  if (!json_is_array(ids) || n == 0 || n > 1000) {
    json_decref(j);
    h->http_reply_error(req, HD_EINVAL, "body must be {\"ids\": [1 to 1000 message ids]}");
    return;
  }
  uint64_t *v = calloc(n, sizeof *v);
  if (!v) {
    json_decref(j);
    h->http_reply_error(req, HD_ENOMEM, NULL);
    return;
  }
  for (size_t i = 0; i < n; i++) {
    json_t *x = json_array_get(ids, i);
    if ((json_is_string(x) && parse_u64(json_string_value(x), &v[i]) == 0) ||
        (json_is_integer(x) && json_integer_value(x) > 0 &&
         (v[i] = (uint64_t)json_integer_value(x))))
      continue;
    free(v);
    json_decref(j);
    h->http_reply_error(req, HD_EINVAL, "ids must be message ids (strings or integers)");
    return;
  }
  json_decref(j);
  hd_device *d = auth(t, req);
  if (!d) {
    free(v);
    return;
  }
  ack_req *a = calloc(1, sizeof *a);
  int rc = a ? 0 : HD_ENOMEM;
  if (a) {
    a->t = t;
    a->req = req;
    a->n = n;
    rc = h->ack(t->self, d, v, n, on_acked, a);
  }
  h->device_free(d);
  free(v);
  if (rc) {
    free(a);
    h->http_reply_error(req, rc, NULL);
  }
}

/* ---- lifecycle ---- */
static int lp_create(const hd_host *h, hd_plugin *self, void **state) {
  lp *t = calloc(1, sizeof *t);
  if (!t) return HD_ENOMEM;
  t->h = h;
  t->self = self;
  int rc = h->config_int(self, "max_wait", 60, &t->max_wait_s);
  if (!rc) rc = h->config_int(self, "max_batch", 100, &t->max_batch);
  if (!rc) rc = h->config_int(self, "max_held", 100000, &t->max_held);
  if (rc || t->max_wait_s < 0 || t->max_wait_s > 3600 || t->max_batch < 1 ||
      t->max_batch > 1000 || t->max_held < 0 || t->max_held > 10000000) {
    h->log(self, HD_LOG_ERROR, "bad_config", "reason=%s",
           "\"max_wait must be 0..3600 seconds, max_batch 1..1000, max_held 0..10000000\"");
    free(t);
    return HD_ECONFIG;
  }
  t->classes = calloc((size_t)t->max_wait_s + 1, sizeof *t->classes);
  if (!t->classes) {
    free(t);
    return HD_ENOMEM;
  }
  t->m_held = h->metric_new(self, "held", "Long-polls held open now", HD_METRIC_GAUGE);
  t->m_polls = h->metric_new(self, "polls_total", "Long-poll requests", HD_METRIC_COUNTER);
  t->m_timeouts = h->metric_new(self, "timeouts_total", "Long-polls answered at their wait limit",
                                HD_METRIC_COUNTER);
  t->m_acks = h->metric_new(self, "acks_total", "Message ids acknowledged", HD_METRIC_COUNTER);
  t->m_refused = h->metric_new(self, "refused_total",
                               "Long-polls answered 503 because max_held were held",
                               HD_METRIC_COUNTER);
  rc = h->http_route(self, "GET", "/v1/devices/{device}/messages", h_messages, t);
  if (!rc) rc = h->http_route(self, "POST", "/v1/devices/{device}/acks", h_acks, t);
  if (rc) {
    free(t->classes);
    free(t);
    return rc;
  }
  *state = t;
  return 0;
}

static int lp_start(void *state) {
  lp *t = state;
  uv_timer_init(t->h->loop(t->self), &t->timer);
  t->timer.data = t;
  t->started = 1;
  return 0;
}

static void lp_stop(void *state) {
  lp *t = state;
  t->stopping = 1;
  /* Answer every held poll now with whatever is pending, so clients can reconnect at once. */
  for (poll_req *p; (p = poll_any(t));) {
    poll_try(p, 1);
    poll_end(p);
  }
  if (t->started) uv_close((uv_handle_t *)&t->timer, NULL); /* destroy() runs after the loop drained */
  t->started = 0;
}

/* A revoked (or rotated) token must not keep a poll it authenticated: answer 401 now. A linear
 * walk: revocations are rare next to polls, and the list is there already. */
static void lp_device_revoked(void *state, const char *tenant, const char *device) {
  lp *t = state;
  for (wait_class *w = t->active, *wn; w; w = wn) {
    wn = w->anext;
    for (poll_req *p = w->head, *nx; p; p = nx) {
      nx = p->next;
      if (strcmp(t->h->device_id(p->dev), device) == 0 &&
          strcmp(t->h->device_tenant(p->dev), tenant) == 0) {
        t->h->http_reply_error(p->req, HD_EAUTH, "the device's token was revoked or rotated");
        poll_end(p);
      }
    }
  }
}

static void lp_destroy(void *state) {
  lp *t = state;
  free(t->classes);
  free(t);
}

HD_TRANSPORT_EXPORT const hd_transport_ops herald_transport = {
    .abi_major = HD_TRANSPORT_ABI_MAJOR,
    .abi_minor = HD_TRANSPORT_ABI_MINOR,
    .struct_size = sizeof(hd_transport_ops),
    .name = "longpoll",
    .version = "1.0.0",
    .config_keys = lp_keys,
    .create = lp_create,
    .start = lp_start,
    .deliver = NULL,
    .cancel = NULL,
    .stop = lp_stop,
    .destroy = lp_destroy,
    .device_revoked = lp_device_revoked,
};
