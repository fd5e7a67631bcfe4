/* example.c — a complete push transport in one file, for plugin authors to start from.
 *
 * It "delivers" each message by appending one JSON line to a file, with libuv's asynchronous
 * file I/O so the loop never waits for the disk:
 *     {"id":"42","app":"news","to":null,"attempt":1,"data":{...}}
 *
 * Config ([transport example] in herald.conf):
 *   file        where to append (required)
 *   fail_every  0 = never; N = every Nth attempt reports a temporary failure, to watch the
 *               broker's retry at work
 *   apps        (the broker's own key) which apps this transport receives; default all
 *
 * What it shows: the exported ops struct, create/start/stop/destroy, config lookups, metrics,
 * deliver() accepting work and finishing it later with exactly one done(), cancel(), and
 * keeping a list of in-flight deliveries so stop() can account for them.
 */
#include <fcntl.h>
#include <herald/transport.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct ex {
  const hd_host *h;
  hd_plugin *self;
  const char *path;
  int64_t fail_every;
  uint64_t attempts;
  uv_file fd;
  hd_metric *m_written, *m_failed;
} ex;

/* One write in flight; owns its line until the write completes. */
typedef struct ex_write {
  uv_fs_t req;
  ex *t;
  hd_delivery *d;
  char *line;
  int canceled;
} ex_write;

static const char *const ex_keys[] = {"file", "fail_every", NULL};

static void on_written(uv_fs_t *req) {
  ex_write *w = req->data;
  ex *t = w->t;
  int ok = req->result >= 0;
  uv_fs_req_cleanup(req);
  t->h->metric_add(ok ? t->m_written : t->m_failed, 1);
  /* Exactly one done() per accepted delivery, also when it was canceled meanwhile: the line
   * is on disk or it is not, and the outcome says which. */
  t->h->done(w->d, ok ? HD_DELIVERED : HD_FAILED_TEMP, ok ? NULL : uv_strerror((int)req->result));
  free(w->line);
  free(w);
}

static int ex_deliver(void *state, hd_delivery *d) {
  ex *t = state;
  const hd_host *h = t->h;
  const hd_msg *m = h->delivery_msg(d);
  t->attempts++;
  if (t->fail_every > 0 && t->attempts % (uint64_t)t->fail_every == 0) {
    h->done(d, HD_FAILED_TEMP, "fail_every says so");
    return 0;
  }
  size_t jl = 0;
  const char *data = h->msg_data_json(m, &jl);
  if (!data) return HD_EINVAL; /* a payload JSON cannot show: permanent for this transport */
  const char *to = h->msg_to(m);
  size_t cap = jl + 512;
  ex_write *w = calloc(1, sizeof *w);
  if (!w || !(w->line = malloc(cap))) {
    free(w);
    return HD_EAGAIN; /* the broker retries later */
  }
  int n = snprintf(w->line, cap, "{\"id\":\"%llu\",\"app\":\"%s\",\"to\":%s%s%s,\"attempt\":%u,"
                   "\"data\":%s}\n", (unsigned long long)h->msg_id(m), h->msg_app(m),
                   to ? "\"" : "", to ? to : "null", to ? "\"" : "", h->delivery_attempt(d), data);
  w->t = t;
  w->d = d;
  w->req.data = w;
  uv_buf_t buf = uv_buf_init(w->line, (unsigned)n);
  int rc = uv_fs_write(h->loop(t->self), &w->req, t->fd, &buf, 1, -1, on_written);
  if (rc) {
    free(w->line);
    free(w);
    return HD_EAGAIN;
  }
  return 0;
}

static void ex_cancel(void *state, hd_delivery *d) {
  /* A write already handed to the thread pool cannot be taken back; it finishes and reports.
   * Nothing else is ever pending here, so there is nothing to do. */
}

static int ex_create(const hd_host *h, hd_plugin *self, void **state) {
  ex *t = calloc(1, sizeof *t);
  if (!t) return HD_ENOMEM;
  t->h = h;
  t->self = self;
  t->fd = -1;
  t->path = h->config_str(self, "file", NULL);
  if (!t->path || h->config_int(self, "fail_every", 0, &t->fail_every) || t->fail_every < 0) {
    h->log(self, HD_LOG_ERROR, "bad_config", "reason=%s",
           "\"[transport example] needs file = PATH and fail_every >= 0\"");
    free(t);
    return HD_ECONFIG;
  }
  t->m_written = h->metric_new(self, "written_total", "Lines written", HD_METRIC_COUNTER);
  t->m_failed = h->metric_new(self, "failed_total", "Writes that failed", HD_METRIC_COUNTER);
  *state = t;
  return 0;
}

static int ex_start(void *state) {
  ex *t = state;
  uv_fs_t req;
  /* Synchronous open is fine here: start() runs once before the broker serves anyone. */
  int fd = uv_fs_open(NULL, &req, t->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600, NULL);
  uv_fs_req_cleanup(&req);
  if (fd < 0) {
    t->h->log(t->self, HD_LOG_ERROR, "open_failed", "file=%s error=%s", t->path, uv_strerror(fd));
    return HD_EIO;
  }
  t->fd = fd;
  return 0;
}

static void ex_stop(void *state) { /* nothing held: writes in flight complete by themselves */ }

static void ex_destroy(void *state) {
  ex *t = state;
  if (t->fd >= 0) {
    uv_fs_t req;
    uv_fs_close(NULL, &req, t->fd, NULL);
    uv_fs_req_cleanup(&req);
  }
  free(t);
}

HD_TRANSPORT_EXPORT const hd_transport_ops herald_transport = {
    .abi_major = HD_TRANSPORT_ABI_MAJOR,
    .abi_minor = HD_TRANSPORT_ABI_MINOR,
    .struct_size = sizeof(hd_transport_ops),
    .name = "example",
    .version = "1.0.0",
    .config_keys = ex_keys,
    .create = ex_create,
    .start = ex_start,
    .deliver = ex_deliver,
    .cancel = ex_cancel,
    .stop = ex_stop,
    .destroy = ex_destroy,
};
