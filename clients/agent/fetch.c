/* fetch.c — herald-agent's HTTP client thread (see fetch.h). */
#include "fetch.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "herald/error.h"

#define DEFAULT_MAX_BODY (1u << 20)
#define ERROR_BODY_KEEP 512
#define IDLE_POLL_MS 600000

enum { MODE_UNDECIDED = 0, MODE_WRITE, MODE_DISCARD };

struct fetch_op {
  fetch *f;
  fetch_op *next;           /* in exactly one of: incoming, active, done */
  atomic_int cancel;
  fetch_cb cb;
  void *ud;
  /* the request (owned copies) */
  char *method, *url, *bearer, *json, *file, *if_range, *ca_file;
  int restart;
  long connect_timeout_s, stall_s, timeout_s;
  size_t max_body;
  /* fetch thread only, until it is on the done list */
  CURL *easy;
  struct curl_slist *headers;
  int fd;
  int mode;
  char content_range[128];
  char errbuf[CURL_ERROR_SIZE];
  char *body;
  size_t body_len, body_cap;
  int too_big;
  fetch_result res;
};

struct fetch {
  uv_loop_t *loop;
  uv_async_t async;
  pthread_t thread;
  int thread_live;
  CURLM *multi;
  pthread_mutex_t mu;
  fetch_op *incoming, *done; /* under mu */
  int quit;                  /* under mu */
  fetch_op *active;          /* the fetch thread's */
};

/* ---- the fetch thread ---- */
static char *trim_hdr(char *s, size_t n, size_t *len) {
  while (n && (*s == ' ' || *s == '\t')) s++, n--;
  while (n && (s[n - 1] == '\r' || s[n - 1] == '\n' || s[n - 1] == ' ')) n--;
  *len = n;
  return s;
}

static void copy_hdr(char *dst, size_t cap, const char *v, size_t n) {
  if (n >= cap) n = cap - 1;
  memcpy(dst, v, n);
  dst[n] = 0;
}

static size_t on_header(char *p, size_t sz, size_t n, void *ud) {
  fetch_op *o = ud;
  size_t len = sz * n;
  if (len >= 5 && strncmp(p, "HTTP/", 5) == 0) {
    /* A new answer (after a redirect or a 100): forget the last one's headers. */
    o->res.etag[0] = o->res.store[0] = o->content_range[0] = 0;
    return len;
  }
  const char *colon = memchr(p, ':', len);
  if (!colon) return len;
  size_t nl = (size_t)(colon - p), vl;
  char *v = trim_hdr((char *)colon + 1, len - nl - 1, &vl);
  if (nl == 4 && strncasecmp(p, "etag", 4) == 0) copy_hdr(o->res.etag, sizeof o->res.etag, v, vl);
  else if (nl == 14 && strncasecmp(p, "x-herald-store", 14) == 0)
    copy_hdr(o->res.store, sizeof o->res.store, v, vl);
  else if (nl == 13 && strncasecmp(p, "content-range", 13) == 0)
    copy_hdr(o->content_range, sizeof o->content_range, v, vl);
  return len;
}

static int keep(fetch_op *o, const char *p, size_t len, size_t cap) {
  if (o->body_len + len > cap) {
    o->too_big = 1;
    len = cap > o->body_len ? cap - o->body_len : 0;
  }
  if (o->body_len + len + 1 > o->body_cap) {
    size_t nc = o->body_cap ? o->body_cap : 4096;
    while (nc < o->body_len + len + 1) nc *= 2;
    char *b = realloc(o->body, nc);
    if (!b) return -1;
    o->body = b;
    o->body_cap = nc;
  }
  memcpy(o->body + o->body_len, p, len);
  o->body_len += len;
  o->body[o->body_len] = 0;
  return 0;
}

/* The first body bytes of a download decide where they go (fetch.h). */
static int decide(fetch_op *o) {
  long st = 0;
  curl_easy_getinfo(o->easy, CURLINFO_RESPONSE_CODE, &st);
  if (st == 206) {
    int64_t start = -1;
    if (sscanf(o->content_range, "bytes %" SCNd64 "-", &start) != 1 || start != o->res.offset) {
      o->res.range_mismatch = 1;
      return -1;
    }
    return MODE_WRITE;
  }
  if (st == 200) {
    if (o->res.offset > 0 && ftruncate(o->fd, 0)) {
      o->res.io_error = 1;
      o->res.sys_errno = errno;
      return -1;
    }
    o->res.restarted = o->res.offset > 0;
    return MODE_WRITE;
  }
  return MODE_DISCARD;
}

static size_t on_data(char *p, size_t sz, size_t n, void *ud) {
  fetch_op *o = ud;
  size_t len = sz * n;
  if (!o->file) {
    if (keep(o, p, len, o->max_body) || o->too_big) return 0;
    o->res.received += (int64_t)len;
    return len;
  }
  if (o->mode == MODE_UNDECIDED) {
    int m = decide(o);
    if (m < 0) return 0; /* aborts the transfer: CURLE_WRITE_ERROR */
    o->mode = m;
  }
  if (o->mode == MODE_DISCARD) {
    keep(o, p, len, ERROR_BODY_KEEP); /* for the log; never the package file */
    return len;
  }
  for (size_t off = 0; off < len;) {
    ssize_t w = write(o->fd, p + off, len - off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      o->res.io_error = 1;
      o->res.sys_errno = w < 0 ? errno : ENOSPC;
      return 0;
    }
    off += (size_t)w;
  }
  o->res.received += (int64_t)len;
  return len;
}

static void complete(fetch *f, fetch_op *o) {
  pthread_mutex_lock(&f->mu);
  o->next = f->done;
  f->done = o;
  pthread_mutex_unlock(&f->mu);
  uv_async_send(&f->async);
}

/* Set up one request; on failure it is completed at once. */
static void begin(fetch *f, fetch_op *o) {
  o->fd = -1;
  if (o->file) {
    o->fd = open(o->file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    struct stat st;
    if (o->fd < 0 || (o->restart && ftruncate(o->fd, 0)) || fstat(o->fd, &st)) {
      o->res.io_error = 1;
      o->res.sys_errno = errno;
      o->res.curl_code = CURLE_WRITE_ERROR;
      complete(f, o);
      return;
    }
    o->res.offset = st.st_size;
  }
  CURL *e = o->easy = curl_easy_init();
  if (!e) {
    o->res.curl_code = CURLE_OUT_OF_MEMORY;
    complete(f, o);
    return;
  }
  char line[600];
  if (o->bearer) {
    snprintf(line, sizeof line, "Authorization: Bearer %s", o->bearer);
    o->headers = curl_slist_append(o->headers, line);
  }
  if (o->json) o->headers = curl_slist_append(o->headers, "Content-Type: application/json");
  o->headers = curl_slist_append(o->headers, "Expect:");
  if (o->file && o->res.offset > 0) {
    char range[48];
    snprintf(range, sizeof range, "%" PRId64 "-", o->res.offset);
    curl_easy_setopt(e, CURLOPT_RANGE, range);
    if (o->if_range && *o->if_range) {
      snprintf(line, sizeof line, "If-Range: %s", o->if_range);
      o->headers = curl_slist_append(o->headers, line);
    }
  }
  curl_easy_setopt(e, CURLOPT_URL, o->url);
  curl_easy_setopt(e, CURLOPT_PRIVATE, o);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L); /* a CDN in front of the broker */
  curl_easy_setopt(e, CURLOPT_MAXREDIRS, 5L);
  curl_easy_setopt(e, CURLOPT_USERAGENT, "herald-agent/0.1.0");
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, o->headers);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, o->errbuf);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, o);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, o);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, o->connect_timeout_s ? o->connect_timeout_s : 30L);
  curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, o->stall_s ? o->stall_s : 60L);
  if (o->timeout_s) curl_easy_setopt(e, CURLOPT_TIMEOUT, o->timeout_s);
  curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
  if (o->ca_file) curl_easy_setopt(e, CURLOPT_CAINFO, o->ca_file);
  if (strcmp(o->method, "POST") == 0) {
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, o->json ? o->json : "");
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)(o->json ? strlen(o->json) : 0));
  } else if (strcmp(o->method, "GET") != 0) {
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, o->method);
  }
  if (curl_multi_add_handle(f->multi, e) != CURLM_OK) {
    o->res.curl_code = CURLE_FAILED_INIT;
    curl_easy_cleanup(e);
    o->easy = NULL;
    complete(f, o);
    return;
  }
  o->next = f->active;
  f->active = o;
}

/* Take o out of the active list and the multi handle, settle its result, hand it back. */
static void finish(fetch *f, fetch_op *o, CURLcode code) {
  for (fetch_op **pp = &f->active; *pp; pp = &(*pp)->next)
    if (*pp == o) {
      *pp = o->next;
      break;
    }
  curl_multi_remove_handle(f->multi, o->easy);
  if (!o->res.curl_code) o->res.curl_code = code;
  curl_easy_getinfo(o->easy, CURLINFO_RESPONSE_CODE, &o->res.status);
  if (o->fd >= 0) {
    /* A complete package must survive a crash between here and its check. */
    if (code == CURLE_OK && (o->res.status == 200 || o->res.status == 206)) fdatasync(o->fd);
    struct stat st;
    if (fstat(o->fd, &st) == 0) o->res.file_size = st.st_size;
    close(o->fd);
    o->fd = -1;
  }
  curl_easy_cleanup(o->easy);
  o->easy = NULL;
  curl_slist_free_all(o->headers);
  o->headers = NULL;
  complete(f, o);
}

static void *thread_main(void *arg) {
  fetch *f = arg;
  for (;;) {
    pthread_mutex_lock(&f->mu);
    fetch_op *in = NULL;
    while (f->incoming) { /* newest first there: reversed, they start in order */
      fetch_op *o = f->incoming;
      f->incoming = o->next;
      o->next = in;
      in = o;
    }
    int quit = f->quit;
    pthread_mutex_unlock(&f->mu);
    while (in) {
      fetch_op *o = in;
      in = in->next;
      if (quit || atomic_load(&o->cancel)) {
        o->res.canceled = 1;
        o->res.curl_code = CURLE_ABORTED_BY_CALLBACK;
        complete(f, o);
      } else {
        begin(f, o);
      }
    }
    for (fetch_op *o = f->active, *nx; o; o = nx) {
      nx = o->next;
      if (quit || atomic_load(&o->cancel)) {
        o->res.canceled = 1;
        finish(f, o, CURLE_ABORTED_BY_CALLBACK);
      }
    }
    if (quit) break;
    int running = 0;
    curl_multi_perform(f->multi, &running);
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(f->multi, &left)))
      if (m->msg == CURLMSG_DONE) {
        fetch_op *o = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&o);
        finish(f, o, m->data.result);
      }
    /* libcurl shortens the wait to its own next timer; new work and cancels wake it up
     * (curl_multi_wakeup), so an idle agent does not wake up for nothing. */
    curl_multi_poll(f->multi, NULL, 0, IDLE_POLL_MS, NULL);
  }
  return NULL;
}

/* ---- the loop side ---- */
static void op_free(fetch_op *o) {
  free(o->method);
  free(o->url);
  free(o->bearer);
  free(o->json);
  free(o->file);
  free(o->if_range);
  free(o->ca_file);
  free(o->body);
  free(o);
}

static void deliver(fetch *f) {
  pthread_mutex_lock(&f->mu);
  fetch_op *d = f->done;
  f->done = NULL;
  pthread_mutex_unlock(&f->mu);
  /* The list is newest first; callbacks in completion order read better in logs. */
  fetch_op *rev = NULL;
  while (d) {
    fetch_op *nx = d->next;
    d->next = rev;
    rev = d;
    d = nx;
  }
  while (rev) {
    fetch_op *o = rev;
    rev = rev->next;
    fetch_result *r = &o->res;
    if (o->too_big && !r->curl_code) r->curl_code = CURLE_WRITE_ERROR;
    r->error = curl_easy_strerror((CURLcode)r->curl_code);
    snprintf(r->detail, sizeof r->detail, "%s", o->errbuf[0] ? o->errbuf : r->error);
    r->body = o->body ? o->body : "";
    r->body_len = o->body_len;
    o->cb(o->ud, r);
    op_free(o);
  }
}

static void on_async(uv_async_t *a) { deliver(a->data); }

static void on_closed(uv_handle_t *h) {
  fetch *f = h->data;
  curl_multi_cleanup(f->multi);
  pthread_mutex_destroy(&f->mu);
  free(f);
}

int fetch_new(uv_loop_t *loop, fetch **out) {
  fetch *f = calloc(1, sizeof *f);
  if (!f) return HD_ENOMEM;
  f->loop = loop;
  f->multi = curl_multi_init();
  if (!f->multi) {
    free(f);
    return HD_ENOMEM;
  }
  pthread_mutex_init(&f->mu, NULL);
  uv_async_init(loop, &f->async, on_async);
  f->async.data = f;
  if (pthread_create(&f->thread, NULL, thread_main, f)) {
    uv_close((uv_handle_t *)&f->async, on_closed);
    return HD_ENOMEM;
  }
  f->thread_live = 1;
  *out = f;
  return 0;
}

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

int fetch_start(fetch *f, const fetch_req *r, fetch_cb cb, void *ud, fetch_op **out) {
  fetch_op *o = calloc(1, sizeof *o);
  if (!o) return HD_ENOMEM;
  o->f = f;
  o->cb = cb;
  o->ud = ud;
  o->fd = -1;
  o->method = strdup(r->method ? r->method : "GET");
  o->url = dup_or_null(r->url);
  o->bearer = dup_or_null(r->bearer);
  o->json = dup_or_null(r->json);
  o->file = dup_or_null(r->file);
  o->if_range = dup_or_null(r->if_range);
  o->ca_file = dup_or_null(r->ca_file);
  o->restart = r->restart;
  o->connect_timeout_s = r->connect_timeout_s;
  o->stall_s = r->stall_s;
  o->timeout_s = r->timeout_s;
  o->max_body = r->max_body ? r->max_body : DEFAULT_MAX_BODY;
  if (!o->method || !o->url || (r->bearer && !o->bearer) || (r->json && !o->json) ||
      (r->file && !o->file) || (r->if_range && !o->if_range) || (r->ca_file && !o->ca_file)) {
    op_free(o);
    return HD_ENOMEM;
  }
  pthread_mutex_lock(&f->mu);
  int quit = f->quit;
  if (!quit) {
    o->next = f->incoming;
    f->incoming = o;
  }
  pthread_mutex_unlock(&f->mu);
  if (quit) {
    op_free(o);
    return HD_ECLOSED;
  }
  curl_multi_wakeup(f->multi);
  if (out) *out = o;
  return 0;
}

void fetch_cancel(fetch_op *op) {
  if (!op) return;
  atomic_store(&op->cancel, 1);
  curl_multi_wakeup(op->f->multi);
}

void fetch_close(fetch *f) {
  if (!f) return;
  pthread_mutex_lock(&f->mu);
  f->quit = 1;
  pthread_mutex_unlock(&f->mu);
  if (f->thread_live) {
    curl_multi_wakeup(f->multi);
    pthread_join(f->thread, NULL); /* prompt: it only takes its transfers down */
    f->thread_live = 0;
  }
  deliver(f);
  uv_close((uv_handle_t *)&f->async, on_closed);
}
