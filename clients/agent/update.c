/* update.c — herald-agent's update service (see update.h; the states are in release.h). */
#include "update.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fetch.h"
#include "herald/error.h"
#include "log.h"
#include "release.h"
#include "runner.h"
#include "version.h"

#define VERIFY_AT_ONCE 2
#define HTTP_TIMEOUT_S 60 /* update-check and reports: small JSON both ways */
#define DIR_CAP 4000
#define PATH_CAP (DIR_CAP + 2 * 130 + 16)

enum { T_ASK = 1, T_DOWNLOAD, T_VERIFY, T_INSTALL, T_REPORT };

/* Something running for one job: a hook, a transfer, or a hash on the thread pool. */
typedef struct task {
  updater *u;
  struct task *next;
  int kind;
  char app[UPD_APP_MAX + 1], version[UPD_VERSION_MAX + 1];
  fetch_op *op;
  runner *r;
  /* T_VERIFY, on the pool */
  uv_work_t work;
  char part[PATH_CAP], pkg[PATH_CAP];
  char sha256[65];
  int64_t size;
  int verdict, sys_err;
} task;

struct updater {
  uv_loop_t *loop;
  const agent_conf *conf;
  inbox *ib;
  fetch *fx;
  upd_policy pol;
  uv_timer_t timer, check_timer;
  task *tasks;
  int n[T_REPORT + 1]; /* running tasks per kind */
  int stopping, handles;
  int in_kick, dirty;  /* kick() is not reentrant: a nested call asks for another round */
  char dir[DIR_CAP];   /* <data_dir>/downloads */
  /* update-check */
  fetch_op *check_op;
  int check_restart;             /* the check in flight may restart failed jobs */
  int check_again, again_restart;
  uint32_t check_failures;
};

static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void kick(updater *u);

/* ---- small helpers ---- */
static void store_job(updater *u, const upd_job *j) {
  int rc = inbox_job_put(u->ib, j);
  if (rc)
    hd__log(HD_LOG_ERROR, "store_failed", "what=update app=%s version=%s error=%s", j->app,
            j->version, hd_err_code(rc));
}

/* File names under downloads/: the app and version with anything unusual made '_'. */
static void safe_name(char *dst, size_t cap, const char *s) {
  size_t i = 0;
  for (; *s && i + 1 < cap; s++)
    dst[i++] = ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
                *s == '.' || *s == '_' || *s == '+' || *s == '-')
                   ? *s
                   : '_';
  dst[i] = 0;
}

static void job_path(const updater *u, const upd_job *j, const char *ext, char *out, size_t cap) {
  char a[UPD_APP_MAX + 1], v[UPD_VERSION_MAX + 1];
  safe_name(a, sizeof a, j->app);
  safe_name(v, sizeof v, j->version);
  snprintf(out, cap, "%s/%s-%s.%s", u->dir, a, v, ext);
}

static void on_unlinked(uv_fs_t *req) {
  uv_fs_req_cleanup(req);
  free(req);
}

/* Remove a file on the thread pool (a large unlink can take a while). */
static void unlink_async(updater *u, const char *path) {
  uv_fs_t *req = malloc(sizeof *req);
  if (req && uv_fs_unlink(u->loop, req, path, on_unlinked)) free(req);
}

static void drop_files(updater *u, const upd_job *j, int keep_pkg) {
  char p[PATH_CAP];
  job_path(u, j, "part", p, sizeof p);
  unlink_async(u, p);
  if (!keep_pkg) {
    job_path(u, j, "pkg", p, sizeof p);
    unlink_async(u, p);
  }
}

/* Percent-encode a path segment / query value (RFC 3986 unreserved kept). */
static void esc(char *dst, size_t cap, const char *s) {
  static const char hex[] = "0123456789ABCDEF";
  size_t i = 0;
  for (; *s && i + 4 < cap; s++) {
    unsigned char c = (unsigned char)*s;
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '.' || c == '_' || c == '~') {
      dst[i++] = (char)c;
    } else {
      dst[i++] = '%';
      dst[i++] = hex[c >> 4];
      dst[i++] = hex[c & 15];
    }
  }
  dst[i] = 0;
}

static char *device_url(const updater *u, const char *what) {
  char dev[600], *url = NULL;
  esc(dev, sizeof dev, u->conf->device);
  if (asprintf(&url, "%s/v1/devices/%s/%s", u->conf->http, dev, what) < 0) return NULL;
  return url;
}

/* The package URL: the release's (absolute, or relative to the broker's base) with
 * ?device=<id> added, which is how the download authenticates besides the bearer token. */
static char *package_url(const updater *u, const upd_job *j) {
  char dev[600], *url = NULL;
  esc(dev, sizeof dev, u->conf->device);
  int abs = strncmp(j->url, "http://", 7) == 0 || strncmp(j->url, "https://", 8) == 0;
  if (asprintf(&url, "%s%s%s%sdevice=%s", abs ? "" : u->conf->http,
               abs || j->url[0] == '/' ? "" : "/", j->url, strchr(j->url, '?') ? "&" : "?",
               dev) < 0)
    return NULL;
  return url;
}

static task *find_task(updater *u, const char *app, const char *version) {
  for (task *t = u->tasks; t; t = t->next)
    if (strcmp(t->app, app) == 0 && strcmp(t->version, version) == 0) return t;
  return NULL;
}

static task *task_new(updater *u, int kind, const upd_job *j) {
  task *t = calloc(1, sizeof *t);
  if (!t) return NULL;
  t->u = u;
  t->kind = kind;
  snprintf(t->app, sizeof t->app, "%s", j->app);
  snprintf(t->version, sizeof t->version, "%s", j->version);
  t->next = u->tasks;
  u->tasks = t;
  u->n[kind]++;
  return t;
}

static void task_free(task *t) {
  updater *u = t->u;
  for (task **pp = &u->tasks; *pp; pp = &(*pp)->next)
    if (*pp == t) {
      *pp = t->next;
      break;
    }
  u->n[t->kind]--;
  free(t);
}

/* The job a finished task was for, if it is still in the state the task served. */
static int job_still(updater *u, const task *t, int state, upd_job *j) {
  return inbox_job_get(u->ib, t->app, t->version, j) == 0 && j->state == state;
}

/* install or upgrade, decided from the inventory as it is now. */
static void fill_action(updater *u, upd_job *j) {
  inv_entry e;
  if (inbox_inv_get(u->ib, j->app, &e) == 0) {
    snprintf(j->action, sizeof j->action, "upgrade");
    snprintf(j->from, sizeof j->from, "%s", e.version);
  } else {
    snprintf(j->action, sizeof j->action, "install");
    j->from[0] = 0;
  }
}

/* A job that just got its result: log it, and clear away its files. */
static void concluded(updater *u, upd_job *j) {
  char q[300];
  if (!j->action[0]) fill_action(u, j);
  if (strcmp(j->result, "success") == 0)
    hd__log(HD_LOG_INFO, "installed", "app=%s version=%s action=%s from=%s", j->app, j->version,
            j->action, j->from[0] ? j->from : "-");
  else
    hd__log(HD_LOG_WARN, "update_failed", "app=%s version=%s action=%s reason=%s", j->app,
            j->version, j->action, hd__log_q(j->reason, q, sizeof q));
  /* Without an install hook the verified package stays for whatever installs it. */
  drop_files(u, j, strcmp(j->result, "success") == 0 && !u->conf->install);
}

/* ---- the ask hook (update-check offers; notices are asked by agent.c) ---- */
static char *offer_doc(const upd_job *j, const char *source) {
  json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:I,s:s,s:s,s:s,s:s}", "kind", "release", "source",
                        source, "app", j->app, "version", j->version, "size",
                        (json_int_t)j->size, "sha256", j->sha256, "url", j->url, "action",
                        j->action, "from", j->from);
  if (!o) return NULL;
  json_object_set_new(o, "code", j->has_code ? json_integer(j->code) : json_null());
  char *s = json_dumps(o, JSON_COMPACT);
  json_decref(o);
  return s;
}

static void on_ask_done(void *ud, int64_t status, int sig, int timed_out, int spawn_error) {
  task *t = ud;
  updater *u = t->u;
  upd_job j;
  if (!u->stopping && job_still(u, t, UPD_ASKING, &j)) {
    upd_after_ask(&j, &u->pol, wall_ms(), status, sig, timed_out, spawn_error);
    if (j.state == UPD_DOWNLOADING) {
      hd__log(HD_LOG_INFO, "release_accepted", "app=%s version=%s source=update-check", j.app,
              j.version);
    } else if (j.state == UPD_REPORTING) {
      hd__log(HD_LOG_INFO, "release_declined", "app=%s version=%s source=update-check", j.app,
              j.version);
      concluded(u, &j);
    } else {
      hd__log(HD_LOG_WARN, "ask_failed",
              "app=%s version=%s attempt=%u exit=%lld signal=%d timeout=%d retry_in_ms=%lld",
              j.app, j.version, j.attempts, (long long)status, sig, timed_out,
              (long long)(j.next_try_ms - j.updated_ms));
    }
    store_job(u, &j);
  }
  task_free(t);
  kick(u);
}

static void start_ask(updater *u, upd_job *j) {
  fill_action(u, j);
  char *doc = offer_doc(j, "update-check");
  task *t = doc ? task_new(u, T_ASK, j) : NULL;
  if (!t) {
    free(doc);
    return;
  }
  char e_app[200], e_ver[200], e_act[40], e_from[200], e_dev[300], e_try[40];
  snprintf(e_app, sizeof e_app, "HERALD_APP=%s", j->app);
  snprintf(e_ver, sizeof e_ver, "HERALD_VERSION=%s", j->version);
  snprintf(e_act, sizeof e_act, "HERALD_ACTION=%s", j->action);
  snprintf(e_from, sizeof e_from, "HERALD_FROM_VERSION=%s", j->from);
  snprintf(e_dev, sizeof e_dev, "HERALD_DEVICE=%s", u->conf->device);
  snprintf(e_try, sizeof e_try, "HERALD_ATTEMPT=%u", j->attempts + 1);
  const char *env[] = {"HERALD_KIND=release", e_app, e_ver, e_act, e_from, e_dev, e_try, NULL};
  int rc = runner_start(u->loop, u->conf->ask, doc, strlen(doc), env,
                        (uint64_t)u->conf->handler_timeout_s * 1000, on_ask_done, t, &t->r);
  free(doc);
  if (rc) task_free(t);
}

/* ---- downloads ---- */
static void on_download_done(void *ud, const fetch_result *r) {
  task *t = ud;
  updater *u = t->u;
  upd_job j;
  t->op = NULL;
  if (r->canceled || u->stopping || !job_still(u, t, UPD_DOWNLOADING, &j)) {
    task_free(t);
    if (!u->stopping) kick(u);
    return;
  }
  int64_t now = wall_ms();
  char q[300], q2[300];
  if (!(r->io_error && r->file_size == 0 && r->received == 0)) j.restart = 0; /* done by now */
  if (r->etag[0]) snprintf(j.etag, sizeof j.etag, "%s", r->etag);
  if (r->store[0]) snprintf(j.store, sizeof j.store, "%s", r->store);
  upd_fetched f = {.transport_error = r->curl_code || r->io_error,
                   .error_text = r->error,
                   .status = r->status,
                   .received = r->received,
                   .file_size = r->file_size,
                   .range_mismatch = r->range_mismatch};
  if (r->io_error) {
    hd__log(HD_LOG_ERROR, "download_io_error", "app=%s version=%s error=%s", j.app, j.version,
            strerror(r->sys_errno));
  }
  upd_after_download(&j, &u->pol, now, &f);
  if (j.state == UPD_VERIFYING) {
    hd__log(HD_LOG_INFO, "download_done",
            "app=%s version=%s bytes=%" PRId64 " from=%" PRId64 " status=%ld%s", j.app,
            j.version, r->file_size, r->offset, r->status, r->restarted ? " restarted=1" : "");
  } else if (j.state == UPD_REPORTING) {
    concluded(u, &j);
  } else {
    hd__log(HD_LOG_WARN, "download_interrupted",
            "app=%s version=%s from=%" PRId64 " received=%" PRId64 " have=%" PRId64
            " status=%ld error=%s detail=%s attempt=%u retry_in_ms=%lld",
            j.app, j.version, r->offset, r->received, r->file_size, r->status,
            hd__log_q(r->curl_code ? r->error : "none", q, sizeof q),
            hd__log_q(r->curl_code ? r->detail : r->body, q2, sizeof q2), j.attempts,
            (long long)(j.next_try_ms > now ? j.next_try_ms - now : 0));
  }
  store_job(u, &j);
  task_free(t);
  kick(u);
}

static void start_download(updater *u, upd_job *j) {
  char part[PATH_CAP], etag[200];
  char *url = package_url(u, j);
  task *t = url ? task_new(u, T_DOWNLOAD, j) : NULL;
  if (!t) {
    free(url);
    return;
  }
  job_path(u, j, "part", part, sizeof part);
  /* Without an ETag seen yet, the broker's own: the package's SHA-256, quoted. */
  if (j->etag[0]) snprintf(etag, sizeof etag, "%s", j->etag);
  else snprintf(etag, sizeof etag, "\"%s\"", j->sha256);
  fetch_req rq = {.url = url,
                  .bearer = u->conf->token,
                  .file = part,
                  .restart = j->restart,
                  .if_range = etag,
                  .ca_file = u->conf->tls_ca,
                  .stall_s = u->conf->download_stall_s};
  hd__log(HD_LOG_DEBUG, "download_started", "app=%s version=%s restart=%d", j->app, j->version,
          j->restart);
  int rc = fetch_start(u->fx, &rq, on_download_done, t, &t->op);
  free(url);
  if (rc) task_free(t);
}

/* ---- SHA-256 on the thread pool ---- */
static void verify_work(uv_work_t *w) {
  task *t = w->data;
  const char *path = t->part;
  int fd = open(t->part, O_RDONLY | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) { /* checked before a crash, renamed, not installed yet */
    path = t->pkg;
    fd = open(t->pkg, O_RDONLY | O_CLOEXEC);
  }
  struct stat st;
  if (fd < 0 || fstat(fd, &st)) {
    t->verdict = UPD_VERIFY_IOERR;
    t->sys_err = errno;
    if (fd >= 0) close(fd);
    return;
  }
  if (t->size > 0 && st.st_size < t->size) {
    close(fd);
    t->verdict = UPD_VERIFY_SHORT;
    return;
  }
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  unsigned char buf[1 << 16], dig[EVP_MAX_MD_SIZE];
  unsigned dl = 0;
  int ok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1;
  for (ssize_t n; ok && (n = read(fd, buf, sizeof buf)) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      t->sys_err = errno;
      ok = 0;
      break;
    }
    ok = EVP_DigestUpdate(md, buf, (size_t)n) == 1;
  }
  if (ok) ok = EVP_DigestFinal_ex(md, dig, &dl) == 1;
  EVP_MD_CTX_free(md);
  close(fd);
  if (!ok) {
    t->verdict = UPD_VERIFY_IOERR;
    return;
  }
  char hex[65];
  for (unsigned i = 0; i < dl && i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", dig[i]);
  if (strcmp(hex, t->sha256) != 0) {
    t->verdict = UPD_VERIFY_MISMATCH;
    return;
  }
  /* Checked: it gets its final name, which the install hook is told. */
  if (path == t->part && rename(t->part, t->pkg)) {
    t->verdict = UPD_VERIFY_IOERR;
    t->sys_err = errno;
    return;
  }
  t->verdict = UPD_VERIFY_OK;
}

static void verify_done(uv_work_t *w, int status) {
  task *t = w->data;
  updater *u = t->u;
  upd_job j;
  if (!u->stopping && status == 0 && job_still(u, t, UPD_VERIFYING, &j)) {
    upd_after_verify(&j, &u->pol, wall_ms(), t->verdict);
    if (t->verdict == UPD_VERIFY_OK)
      hd__log(HD_LOG_INFO, "verified", "app=%s version=%s sha256=%s", j.app, j.version,
              j.sha256);
    else if (t->verdict == UPD_VERIFY_MISMATCH)
      hd__log(HD_LOG_WARN, "verify_failed", "app=%s version=%s reason=sha256_mismatch", j.app,
              j.version);
    else
      hd__log(HD_LOG_WARN, "verify_incomplete", "app=%s version=%s verdict=%d error=%s", j.app,
              j.version, t->verdict, t->sys_err ? strerror(t->sys_err) : "-");
    if (j.state == UPD_REPORTING) concluded(u, &j);
    store_job(u, &j);
  } else if (!u->stopping && inbox_job_get(u->ib, t->app, t->version, &j) == 0 &&
             upd_final(j.state)) {
    drop_files(u, &j, 0); /* superseded while it was being hashed: the rename may have won */
  }
  task_free(t);
  if (!u->stopping) kick(u);
}

static void start_verify(updater *u, upd_job *j) {
  task *t = task_new(u, T_VERIFY, j);
  if (!t) return;
  job_path(u, j, "part", t->part, sizeof t->part);
  job_path(u, j, "pkg", t->pkg, sizeof t->pkg);
  snprintf(t->sha256, sizeof t->sha256, "%s", j->sha256);
  t->size = j->size;
  t->work.data = t;
  if (uv_queue_work(u->loop, &t->work, verify_work, verify_done)) task_free(t);
}

/* ---- the install hook ---- */
static void record_installed(updater *u, upd_job *j) {
  inv_entry e = {.has_code = j->has_code, .code = j->code, .updated_ms = wall_ms()};
  snprintf(e.app, sizeof e.app, "%s", j->app);
  snprintf(e.version, sizeof e.version, "%s", j->version);
  int rc = inbox_job_installed(u->ib, j, &e);
  if (rc)
    hd__log(HD_LOG_ERROR, "store_failed", "what=installed app=%s version=%s error=%s", j->app,
            j->version, hd_err_code(rc));
}

static void on_install_done(void *ud, int64_t status, int sig, int timed_out, int spawn_error) {
  task *t = ud;
  updater *u = t->u;
  upd_job j;
  /* Stopped by us: the job stays INSTALLING and the hook runs again after the restart. */
  if (!u->stopping && job_still(u, t, UPD_INSTALLING, &j)) {
    upd_after_install(&j, wall_ms(), status, sig, timed_out, spawn_error);
    concluded(u, &j);
    if (strcmp(j.result, "success") == 0) record_installed(u, &j);
    else store_job(u, &j);
  }
  task_free(t);
  if (!u->stopping) kick(u);
}

static void start_install(updater *u, upd_job *j) {
  char pkg[PATH_CAP], q[300];
  inv_entry e;
  int have = inbox_inv_get(u->ib, j->app, &e) == 0;
  if (have && release_cmp(j->version, j->has_code, j->code, e.version, e.has_code, e.code) <= 0) {
    /* Something newer (or this very version) got installed meanwhile. */
    hd__log(HD_LOG_INFO, "update_superseded", "app=%s version=%s installed=%s", j->app,
            j->version, e.version);
    j->state = UPD_SUPERSEDED;
    j->updated_ms = wall_ms();
    drop_files(u, j, 0);
    store_job(u, j);
    return;
  }
  job_path(u, j, "pkg", pkg, sizeof pkg);
  if (access(pkg, F_OK)) { /* gone (cleaned up by hand?): fetch it again */
    j->state = UPD_DOWNLOADING;
    j->restart = 1;
    store_job(u, j);
    kick(u);
    return;
  }
  fill_action(u, j); /* decided now, from what is installed now */
  store_job(u, j);
  if (!u->conf->install) {
    upd_after_install(j, wall_ms(), 0, 0, 0, 0);
    concluded(u, j);
    record_installed(u, j);
    kick(u);
    return;
  }
  char *doc = offer_doc(j, j->notice ? "notice" : "update-check");
  task *t = doc ? task_new(u, T_INSTALL, j) : NULL;
  if (!t) {
    free(doc);
    return;
  }
  char e_app[200], e_ver[200], e_act[40], e_from[200], e_file[PATH_CAP + 20], e_sha[100],
      e_store[120], e_dev[300], e_size[60];
  snprintf(e_act, sizeof e_act, "HERALD_ACTION=%s", j->action);
  snprintf(e_app, sizeof e_app, "HERALD_APP=%s", j->app);
  snprintf(e_ver, sizeof e_ver, "HERALD_VERSION=%s", j->version);
  snprintf(e_from, sizeof e_from, "HERALD_FROM_VERSION=%s", j->from);
  snprintf(e_file, sizeof e_file, "HERALD_FILE=%s", pkg);
  snprintf(e_sha, sizeof e_sha, "HERALD_SHA256=%s", j->sha256);
  snprintf(e_store, sizeof e_store, "HERALD_STORE=%s", j->store[0] ? j->store : u->conf->tenant);
  snprintf(e_dev, sizeof e_dev, "HERALD_DEVICE=%s", u->conf->device);
  snprintf(e_size, sizeof e_size, "HERALD_SIZE=%" PRId64, j->size);
  const char *env[] = {"HERALD_KIND=install", e_act, e_app, e_ver, e_from, e_file, e_sha,
                       e_store, e_dev, e_size, NULL};
  hd__log(HD_LOG_INFO, "install_started", "app=%s version=%s action=%s from=%s file=%s", j->app,
          j->version, j->action, j->from[0] ? j->from : "-", hd__log_q(pkg, q, sizeof q));
  int rc = runner_start(u->loop, u->conf->install, doc, strlen(doc), env,
                        (uint64_t)u->conf->install_timeout_s * 1000, on_install_done, t, &t->r);
  free(doc);
  if (rc) task_free(t);
}

/* ---- install reports ---- */
static void on_report_done(void *ud, const fetch_result *r) {
  task *t = ud;
  updater *u = t->u;
  upd_job j;
  t->op = NULL;
  if (!r->canceled && !u->stopping && job_still(u, t, UPD_REPORTING, &j)) {
    int64_t now = wall_ms();
    upd_after_report(&j, &u->pol, now, r->curl_code, r->status);
    if (j.state == UPD_DONE) {
      hd__log(HD_LOG_INFO, "report_sent", "app=%s version=%s result=%s status=%ld", j.app,
              j.version, j.result, r->status);
    } else {
      char q[300];
      hd__log(HD_LOG_WARN, "report_failed",
              "app=%s version=%s status=%ld error=%s attempt=%u retry_in_ms=%lld", j.app,
              j.version, r->status,
              hd__log_q(r->curl_code ? r->detail : r->body, q, sizeof q), j.attempts,
              (long long)(j.next_try_ms - now));
    }
    store_job(u, &j);
  }
  task_free(t);
  if (!u->stopping) kick(u);
}

static void start_report(updater *u, upd_job *j) {
  if (!j->action[0]) fill_action(u, j);
  json_t *o = json_pack("{s:s,s:s,s:s,s:s}", "app", j->app, "version", j->version, "result",
                        j->result, "action", j->action);
  if (o && strcmp(j->result, "success") != 0)
    json_object_set_new(o, "reason", json_string(j->reason[0] ? j->reason : "unknown"));
  char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  char *url = device_url(u, "install-reports");
  task *t = body && url ? task_new(u, T_REPORT, j) : NULL;
  if (t) {
    fetch_req rq = {.method = "POST", .url = url, .bearer = u->conf->token, .json = body,
                    .ca_file = u->conf->tls_ca, .timeout_s = HTTP_TIMEOUT_S,
                    .stall_s = HTTP_TIMEOUT_S};
    if (fetch_start(u->fx, &rq, on_report_done, t, &t->op)) task_free(t);
  }
  free(body);
  free(url);
}

/* ---- the scheduler: every due job whose kind of work has room ---- */
typedef struct collect {
  upd_job *v;
  size_t n, cap;
} collect;

static int collect_cb(void *ud, const upd_job *j) {
  collect *c = ud;
  if (upd_final(j->state)) return 0;
  if (c->n == c->cap) {
    size_t cap = c->cap ? c->cap * 2 : 8;
    upd_job *v = realloc(c->v, cap * sizeof *v);
    if (!v) return 1;
    c->v = v;
    c->cap = cap;
  }
  c->v[c->n++] = *j;
  return 0;
}

static void on_timer(uv_timer_t *h) { kick(h->data); }

static void kick_once(updater *u) {
  collect c = {0};
  inbox_job_each(u->ib, collect_cb, &c);
  int64_t now = wall_ms(), next_due = 0;
  for (size_t i = 0; i < c.n && !u->stopping; i++) {
    upd_job *j = &c.v[i];
    if (find_task(u, j->app, j->version)) continue;
    if (j->next_try_ms > now) {
      if (!next_due || j->next_try_ms < next_due) next_due = j->next_try_ms;
      continue;
    }
    switch (j->state) {
    case UPD_ASKING:
      if (!u->conf->ask) { /* the hook went away from the settings: the answer is yes */
        j->state = UPD_DOWNLOADING;
        store_job(u, j);
        u->dirty = 1;
      } else if (!u->n[T_ASK]) {
        start_ask(u, j);
      }
      break;
    case UPD_DOWNLOADING:
      if (u->n[T_DOWNLOAD] < u->conf->downloads) start_download(u, j);
      break;
    case UPD_VERIFYING:
      if (u->n[T_VERIFY] < VERIFY_AT_ONCE) start_verify(u, j);
      break;
    case UPD_INSTALLING:
      if (!u->n[T_INSTALL]) start_install(u, j);
      break;
    case UPD_REPORTING: start_report(u, j); break;
    default: break;
    }
  }
  free(c.v);
  if (u->stopping) return;
  uv_timer_stop(&u->timer);
  if (next_due) uv_timer_start(&u->timer, on_timer, (uint64_t)(next_due - now), 0);
}

static void kick(updater *u) {
  if (u->stopping) return;
  if (u->in_kick) {
    u->dirty = 1;
    return;
  }
  u->in_kick = 1;
  do {
    u->dirty = 0;
    kick_once(u);
  } while (u->dirty && !u->stopping);
  u->in_kick = 0;
}

/* ---- offers ---- */
static int hex64(const char *s) {
  for (int i = 0; i < 64; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
  return s[64] == 0;
}

static int printable(const char *s) {
  for (; *s; s++)
    if ((unsigned char)*s < 0x21 || (unsigned char)*s == 0x7f) return 0;
  return 1;
}

/* An offer from a JSON object ({"app","version","code","size","sha256","url"}); app_default
 * when it names none. 0, or -1 when something a download needs is missing or malformed. */
static int offer_from_json(json_t *o, const char *app_default, upd_job *j) {
  memset(j, 0, sizeof *j);
  const char *app = json_string_value(json_object_get(o, "app"));
  const char *ver = json_string_value(json_object_get(o, "version"));
  const char *sha = json_string_value(json_object_get(o, "sha256"));
  const char *url = json_string_value(json_object_get(o, "url"));
  json_t *code = json_object_get(o, "code"), *size = json_object_get(o, "size");
  if (!app) app = app_default;
  if (!app || !ver || !sha || !url || !*app || !*ver || !*url || strlen(app) > UPD_APP_MAX ||
      strlen(ver) > UPD_VERSION_MAX || strlen(url) > UPD_URL_MAX || !printable(app) ||
      !printable(ver) || !printable(url))
    return -1;
  snprintf(j->sha256, sizeof j->sha256, "%s", sha);
  for (char *p = j->sha256; *p; p++)
    if (*p >= 'A' && *p <= 'F') *p = (char)(*p - 'A' + 'a');
  if (strlen(sha) != 64 || !hex64(j->sha256)) return -1;
  snprintf(j->app, sizeof j->app, "%s", app);
  snprintf(j->version, sizeof j->version, "%s", ver);
  snprintf(j->url, sizeof j->url, "%s", url);
  j->has_code = json_is_integer(code);
  j->code = j->has_code ? json_integer_value(code) : 0;
  j->size = json_is_integer(size) && json_integer_value(size) > 0 ? json_integer_value(size) : 0;
  return 0;
}

typedef struct app_scan {
  const upd_job *offer;
  upd_job newest; /* the newest unfinished job of the app (other versions) */
  int have;
} app_scan;

static int active_state(int s) { return s >= UPD_ASKING && s <= UPD_INSTALLING; }

static int scan_cb(void *ud, const upd_job *j) {
  app_scan *s = ud;
  if (strcmp(j->app, s->offer->app) != 0 || strcmp(j->version, s->offer->version) == 0 ||
      !active_state(j->state))
    return 0;
  if (!s->have || release_cmp(j->version, j->has_code, j->code, s->newest.version,
                              s->newest.has_code, s->newest.code) > 0)
    s->newest = *j;
  s->have = 1;
  return 0;
}

static int verdict_of(updater *u, const upd_job *o, int may_restart, upd_job *same,
                      int *have_same) {
  inv_entry e;
  int inst = inbox_inv_get(u->ib, o->app, &e) == 0;
  *have_same = inbox_job_get(u->ib, o->app, o->version, same) == 0;
  app_scan s = {.offer = o};
  inbox_job_each(u->ib, scan_cb, &s);
  return upd_offer(o, inst ? e.version : NULL, inst && e.has_code, e.code,
                   *have_same ? same : NULL, s.have ? &s.newest : NULL, may_restart);
}

typedef struct supersede {
  updater *u;
  const upd_job *newer;
} supersede;

static int supersede_cb(void *ud, const upd_job *j) {
  supersede *s = ud;
  if (!upd_supersedes(s->newer, j)) return 0;
  upd_job old = *j;
  task *t = find_task(s->u, old.app, old.version);
  if (t && t->op) fetch_cancel(t->op);
  if (t && t->r) runner_stop(t->r);
  old.state = UPD_SUPERSEDED;
  old.updated_ms = wall_ms();
  hd__log(HD_LOG_INFO, "update_superseded", "app=%s version=%s by=%s", old.app, old.version,
          s->newer->version);
  store_job(s->u, &old);
  drop_files(s->u, &old, 0);
  return 0;
}

static const char *const verdict_names[] = {"take", "restart", "not_newer", "in_progress",
                                            "done", "older"};

/* asked: the user already said yes (a notice); declined: said no. */
static void offer(updater *u, upd_job *o, int asked, int declined, int may_restart,
                  const char *source) {
  upd_job same;
  int have_same;
  int v = verdict_of(u, o, may_restart, &same, &have_same);
  if (v != UPD_OFFER_TAKE && v != UPD_OFFER_RESTART) {
    hd__log(HD_LOG_INFO, "update_ignored", "app=%s version=%s source=%s reason=%s", o->app,
            o->version, source, verdict_names[v]);
    return;
  }
  supersede s = {u, o};
  inbox_job_each(u->ib, supersede_cb, &s);
  int64_t now = wall_ms();
  o->created_ms = o->updated_ms = now;
  o->restart = v == UPD_OFFER_RESTART; /* whatever a failed try left behind goes */
  if (declined) {
    upd_fail(o, now, "hook_declined");
    concluded(u, o);
  } else {
    o->state = asked || !u->conf->ask ? UPD_DOWNLOADING : UPD_ASKING;
  }
  hd__log(HD_LOG_INFO, "update_queued", "app=%s version=%s source=%s state=%s%s", o->app,
          o->version, source, upd_state_name(o->state), v == UPD_OFFER_RESTART ? " restart=1" : "");
  store_job(u, o);
  kick(u);
}

/* The notice document's release: its "data", with the message's app as the default. */
static int notice_offer(const char *notice_json, upd_job *o) {
  json_t *doc = json_loads(notice_json, 0, NULL);
  if (!doc) return -1;
  json_t *data = json_object_get(doc, "data");
  int rc = json_is_object(data)
               ? offer_from_json(data, json_string_value(json_object_get(doc, "app")), o)
               : -1;
  json_decref(doc);
  return rc;
}

int updater_notice_verdict(updater *u, const char *notice_json) {
  upd_job o, same;
  int have_same;
  if (notice_offer(notice_json, &o)) return -1;
  return verdict_of(u, &o, 0, &same, &have_same);
}

void updater_notice_answered(updater *u, uint64_t id, const char *notice_json, int answer) {
  upd_job o;
  if (u->stopping) return;
  if (notice_offer(notice_json, &o)) {
    hd__log(HD_LOG_WARN, "release_incomplete",
            "id=%" PRIu64 " reason=\"no version, url or sha256: nothing to download\"", id);
    return;
  }
  o.notice = id;
  offer(u, &o, answer == REL_ACCEPTED, answer == REL_DECLINED, 0, "notice");
}

/* ---- update-check ---- */
static void send_check(updater *u);

static void on_check_timer(uv_timer_t *h) { send_check(h->data); }

static void on_check_done(void *ud, const fetch_result *r) {
  updater *u = ud;
  u->check_op = NULL;
  if (r->canceled || u->stopping) return;
  json_t *doc = NULL, *ups = NULL;
  if (!r->curl_code && r->status == 200) {
    doc = json_loadb(r->body, r->body_len, 0, NULL);
    ups = json_object_get(doc, "updates");
  }
  if (!json_is_array(ups)) {
    char q[300];
    u->check_failures++;
    int64_t d = upd_backoff_ms(&u->pol, u->check_failures);
    hd__log(HD_LOG_WARN, "update_check_failed", "status=%ld error=%s retry_in_ms=%lld",
            r->status, hd__log_q(r->curl_code ? r->detail : r->body, q, sizeof q),
            (long long)d);
    json_decref(doc);
    if (!u->check_again) { /* else a fresh check goes out below, at once */
      uv_timer_start(&u->check_timer, on_check_timer, (uint64_t)d, 0);
      return;
    }
  } else {
    u->check_failures = 0;
    hd__log(HD_LOG_INFO, "update_check_done", "offers=%zu", json_array_size(ups));
    size_t i;
    json_t *it;
    json_array_foreach(ups, i, it) {
      upd_job o;
      if (!json_is_object(it) || offer_from_json(it, NULL, &o)) {
        hd__log(HD_LOG_WARN, "update_invalid", "index=%zu reason=\"incomplete offer\"", i);
        continue;
      }
      offer(u, &o, 0, 0, u->check_restart, "update-check");
    }
    json_decref(doc);
  }
  if (u->check_again) {
    u->check_again = 0;
    u->check_restart = u->again_restart;
    u->again_restart = 0;
    send_check(u);
  }
}

static void send_check(updater *u) {
  if (u->stopping || u->check_op) return;
  inv_entry *inv = NULL;
  size_t n = 0;
  if (inbox_inv_all(u->ib, &inv, &n)) n = 0;
  json_t *list = json_array();
  for (size_t i = 0; i < n; i++)
    json_array_append_new(list, json_pack("{s:s,s:s}", "app", inv[i].app, "version",
                                          inv[i].version));
  free(inv);
  json_t *o = json_pack("{s:o}", "inventory", list);
  if (o && u->conf->msisdn) json_object_set_new(o, "msisdn", json_string(u->conf->msisdn));
  char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  char *url = device_url(u, "update-check");
  if (body && url) {
    fetch_req rq = {.method = "POST", .url = url, .bearer = u->conf->token, .json = body,
                    .ca_file = u->conf->tls_ca, .timeout_s = HTTP_TIMEOUT_S,
                    .stall_s = HTTP_TIMEOUT_S};
    hd__log(HD_LOG_INFO, "update_check", "inventory=%zu restart_failed=%d", n, u->check_restart);
    if (fetch_start(u->fx, &rq, on_check_done, u, &u->check_op)) u->check_op = NULL;
  }
  free(body);
  free(url);
}

void updater_check(updater *u, int why) {
  if (u->stopping) return;
  int may_restart = why != UPD_CHECK_RECONNECT;
  if (u->check_op) {
    u->check_again = 1;
    u->again_restart |= may_restart;
    return;
  }
  uv_timer_stop(&u->check_timer); /* a pending retry is this check now */
  u->check_restart = may_restart;
  send_check(u);
}

/* ---- lifecycle ---- */
int updater_new(uv_loop_t *loop, const agent_conf *conf, inbox *ib, updater **out) {
  updater *u = calloc(1, sizeof *u);
  if (!u) return HD_ENOMEM;
  u->loop = loop;
  u->conf = conf;
  u->ib = ib;
  u->pol = (upd_policy){.retry_base_ms = conf->retry_base_s * 1000,
                        .retry_max_ms = conf->retry_max_s * 1000,
                        .ask_attempts = (uint32_t)conf->max_attempts,
                        .download_attempts = (uint32_t)conf->download_attempts};
  snprintf(u->dir, sizeof u->dir, "%s/downloads", conf->data_dir);
  if (mkdir(u->dir, 0700) && errno != EEXIST) {
    int e = errno;
    free(u);
    hd__log(HD_LOG_ERROR, "downloads_dir", "path=%s error=%s", conf->data_dir, strerror(e));
    return HD_EIO;
  }
  int rc = fetch_new(loop, &u->fx);
  if (rc) {
    free(u);
    return rc;
  }
  /* The settings say what was installed before the agent first ran; after that, the agent's
   * own record (written by installs) is the truth. */
  for (size_t i = 0; i < conf->nhandlers; i++) {
    const agent_handler *h = &conf->handlers[i];
    inv_entry e;
    if (!h->installed || inbox_inv_get(ib, h->app, &e) == 0) continue;
    memset(&e, 0, sizeof e);
    snprintf(e.app, sizeof e.app, "%s", h->app);
    snprintf(e.version, sizeof e.version, "%s", h->installed);
    e.updated_ms = wall_ms();
    if (inbox_inv_put(ib, &e) == 0)
      hd__log(HD_LOG_INFO, "inventory_seeded", "app=%s version=%s", e.app, e.version);
  }
  uv_timer_init(loop, &u->timer);
  uv_timer_init(loop, &u->check_timer);
  u->timer.data = u->check_timer.data = u;
  u->handles = 2;
  *out = u;
  kick(u);
  return 0;
}

static void on_handle_closed(uv_handle_t *h) { ((updater *)h->data)->handles--; }

void updater_stop(updater *u) {
  if (!u || u->stopping) return;
  u->stopping = 1;
  uv_close((uv_handle_t *)&u->timer, on_handle_closed);
  uv_close((uv_handle_t *)&u->check_timer, on_handle_closed);
  for (task *t = u->tasks; t; t = t->next)
    if (t->r) runner_stop(t->r);
  /* Runs the callbacks of every transfer (canceled) before it returns. */
  fetch_close(u->fx);
  u->fx = NULL;
}

void updater_free(updater *u) { free(u); }
