/* download.c — package downloads (see download.h).
 *
 * A transfer (struct xfer) lives in four places in turn:
 *   1. loop thread: slot taken, file opened on the thread pool (uv_queue_work: open + fstat),
 *      head handed to http.c with hd__http_reply_stream();
 *   2. the `in` queue (mutex): http.c gave us the socket, the download thread has not seen it;
 *   3. the download thread: a uv_poll_t on the socket in the thread's own loop, sendfile (or
 *      pread + SSL_write) whenever the socket is writable, then shutdown and linger;
 *   4. the `out` queue (mutex) and back on the loop thread: the slot is released, subscribers
 *      hear how it ended, the xfer is freed.
 * The mutex guards the two queues and the quit flag only; it is never held around I/O.
 *
 * Deadlines: one repeating timer on the thread sweeps the live transfers (a per-transfer
 * timer would be restarted on every sendfile). A transfer's deadline moves on each byte
 * sent; in linger it is fixed.
 */
#include "download.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <linux/sockios.h> /* SIOCOUTQ */
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clock.h"
#include "herald/error.h"
#include "log.h"
#include "static.h" /* hd__static_etag_matches: the same If-None-Match rules */

#define DL_DEFAULT_MAX_ACTIVE 4096
#define DL_DEFAULT_SEND_TIMEOUT_MS 60000
/* Retry-After of a 503 for lack of slots, seconds: long enough not to come straight back. */
#define DL_RETRY_AFTER_S 5
/* Bytes one writable event may move for one transfer: more waits for the next loop turn, so a
 * fast client on a big socket buffer does not keep the others waiting. */
#define DL_PUMP_MAX (4u << 20)
#define DL_SENDFILE_MAX (1u << 20)
/* Plaintext per TLS record: the largest a record carries. */
#define DL_TLS_CHUNK 16384
#define DL_MAX_SUBS 8

#define DL_XFER_MAGIC 0x444c5846u /* "DLXF" */

enum xstate { X_OPENING = 0, X_HANDING, X_QUEUED, X_SENDING, X_LINGER, X_DONE };

typedef struct app_metrics {
  struct app_metrics *next;
  uint32_t tenant_num;
  char *app;
  hd_metric *count, *bytes;
} app_metrics;

typedef struct xfer xfer;

struct hd_downloads {
  uv_loop_t *loop;
  hd_download_opts opts;

  /* loop thread */
  uv_async_t done_async;
  uint64_t active;
  int stopped;
  struct {
    hd_download_cb cb;
    void *ud;
  } subs[DL_MAX_SUBS];
  size_t nsubs;
  hd_metric *m_refused, *m_cut_timeout, *m_cut_closed, *m_cut_error, *m_cut_shutdown;
  app_metrics *apps;

  /* shared, under mu */
  uv_mutex_t mu;
  xfer *in_head, *in_tail;
  xfer *out_head, *out_tail;
  int quit;

  /* the download thread */
  uv_thread_t thread;
  int thread_started;
  uv_loop_t tloop;
  uv_async_t in_async;
  uv_timer_t sweep;
  xfer *live;            /* doubly linked through prev/next */
  char tls_plain[DL_TLS_CHUNK];
  char drain[4096];
};

struct xfer {
  uint32_t magic;
  hd_downloads *d;
  xfer *next, *prev;
  int state;

  /* what */
  char *path;
  uint64_t size, off, len;
  int status;            /* 200 or 206 */
  char *headers;         /* extra header lines of the answer */
  uint32_t tenant_num;
  char *tenant, *app, *version, *device;

  /* loop thread, before the hand-over */
  uv_work_t work;
  hd_http_req *r;
  int open_err;          /* errno of open/fstat, or -1 for a size mismatch */

  /* the transfer */
  int file;
  int sock;
  SSL *ssl;
  uv_poll_t poll;
  int poll_init;
  uint64_t sent;         /* body bytes the kernel took (plain) or whose records it took (TLS) */
  uint64_t encrypted;    /* TLS: plaintext bytes turned into records so far */
  char *tbuf;            /* TLS: records not yet sent */
  size_t tlen, toff, tcap;
  int notified;          /* TLS: close_notify is in tbuf (or sent) */
  uint64_t deadline;     /* uv_now() of the thread's loop */
  uint64_t wire;         /* bytes handed to the kernel (TLS: records, overhead included) */
  uint64_t acked;        /* of those, acknowledged by the client when last looked at */
  const char *reason;    /* how it ended (static string) */
};

/* ------------------------------------------------------------------------------------------ */
/* memory: as everywhere in the broker, out of memory aborts */

static void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) {
    fputs("herald: out of memory\n", stderr);
    abort();
  }
  return p;
}

static char *xstrdup(const char *s) {
  size_t n = strlen(s ? s : "") + 1;
  char *p = xmalloc(n);
  memcpy(p, s ? s : "", n);
  return p;
}

static void xfer_free(xfer *x) {
  free(x->path);
  free(x->headers);
  free(x->tenant);
  free(x->app);
  free(x->version);
  free(x->device);
  free(x->tbuf);
  x->magic = 0;
  free(x);
}

/* ------------------------------------------------------------------------------------------ */
/* pure helpers */

/* Digits at *p into *out, saturating at UINT64_MAX. Returns the count of digits. */
static size_t parse_u64_sat(const char **p, uint64_t *out) {
  const char *s = *p;
  uint64_t v = 0;
  size_t n = 0;
  while (*s >= '0' && *s <= '9') {
    unsigned dgt = (unsigned)(*s - '0');
    v = v > (UINT64_MAX - dgt) / 10 ? UINT64_MAX : v * 10 + dgt;
    s++;
    n++;
  }
  *p = s;
  *out = v;
  return n;
}

static const char *skip_ows(const char *s) {
  while (*s == ' ' || *s == '\t') s++;
  return s;
}

int hd__download_parse_range(const char *value, uint64_t size, uint64_t *first,
                             uint64_t *last) {
  if (!value) return HD_RANGE_NONE;
  const char *p = skip_ows(value);
  if (strncasecmp(p, "bytes=", 6) != 0) return HD_RANGE_NONE; /* another unit: ignore */
  p += 6;
  /* range-set = 1#range-spec: empty list elements are allowed, more than one range is not
   * served (ignored, as RFC 9110 permits). */
  int found = 0;
  uint64_t a = 0, b = 0;
  int suffix = 0, open_end = 0;
  for (;;) {
    p = skip_ows(p);
    if (*p == ',') {
      p++;
      continue;
    }
    if (!*p) break;
    if (found) return HD_RANGE_NONE; /* a second range */
    found = 1;
    if (*p == '-') {
      p++;
      suffix = 1;
      if (!parse_u64_sat(&p, &b)) return HD_RANGE_NONE;
    } else {
      if (!parse_u64_sat(&p, &a) || *p != '-') return HD_RANGE_NONE;
      p++;
      if (parse_u64_sat(&p, &b)) {
        if (b < a) return HD_RANGE_NONE; /* invalid range-spec: the header is ignored */
      } else {
        open_end = 1;
      }
    }
    p = skip_ows(p);
    if (*p && *p != ',') return HD_RANGE_NONE;
  }
  if (!found) return HD_RANGE_NONE;
  if (suffix) {
    /* "-N": the last N bytes; N = 0, or an empty representation, selects nothing. */
    if (b == 0 || size == 0) return HD_RANGE_UNSATISFIABLE;
    *first = b >= size ? 0 : size - b;
    *last = size - 1;
    return HD_RANGE_OK;
  }
  if (a >= size) return HD_RANGE_UNSATISFIABLE;
  *first = a;
  *last = open_end || b >= size ? size - 1 : b;
  return HD_RANGE_OK;
}

/* If-Range: the Range applies only when the validator is our entity tag, strongly compared.
 * A date (we send no Last-Modified) or a weak tag never matches: the whole file is sent. */
static int if_range_matches(const char *v, const char *etag) {
  v = skip_ows(v);
  size_t n = strlen(v);
  while (n && (v[n - 1] == ' ' || v[n - 1] == '\t')) n--;
  return n == strlen(etag) && memcmp(v, etag, n) == 0;
}

/* The file name part from an id: what a file name and a quoted-string may carry as is;
 * anything else becomes '_'. */
static void name_part(char *out, size_t outlen, const char *s) {
  size_t o = 0;
  for (; *s && o + 1 < outlen; s++) {
    char ch = *s;
    int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
             ch == '.' || ch == '_' || ch == '-' || ch == '+';
    out[o++] = ok ? ch : '_';
  }
  out[o] = '\0';
}

/* ------------------------------------------------------------------------------------------ */
/* the download thread */

static uint64_t tick_ms(const hd_downloads *d) {
  uint64_t t = d->opts.send_timeout_ms / 4;
  return t < 50 ? 50 : t > 1000 ? 1000 : t;
}

/* Hands a finished transfer back to the loop thread. */
static void post_done(xfer *x) {
  hd_downloads *d = x->d;
  x->state = X_DONE;
  x->next = NULL;
  uv_mutex_lock(&d->mu);
  if (d->out_tail) d->out_tail->next = x;
  else d->out_head = x;
  d->out_tail = x;
  uv_mutex_unlock(&d->mu);
  uv_async_send(&d->done_async);
}

static void on_poll_closed(uv_handle_t *h) { post_done(h->data); }

static void live_unlink(xfer *x) {
  hd_downloads *d = x->d;
  if (x->prev) x->prev->next = x->next;
  else if (d->live == x) d->live = x->next;
  if (x->next) x->next->prev = x->prev;
  x->next = x->prev = NULL;
}

/* Bytes the kernel holds for the socket that the client has not acknowledged. */
static uint64_t unacked(const xfer *x) {
  int n = 0;
  return ioctl(x->sock, SIOCOUTQ, &n) == 0 && n > 0 ? (uint64_t)n : 0;
}

/* Ends a transfer on the thread: closes everything it holds, then hands it back. */
static void x_finish(xfer *x, const char *reason) {
  if (x->state == X_DONE) return;
  x->reason = reason;
  /* Cut short: count what the client acknowledged, not what the kernel still held for it
   * (plain only: with TLS the kernel holds records, not package bytes). */
  if (strcmp(reason, "complete") != 0 && !x->ssl && x->sock >= 0 &&
      (x->state == X_SENDING || x->state == X_LINGER)) {
    uint64_t q = unacked(x);
    x->sent = x->sent > q ? x->sent - q : 0;
  }
  if (x->state == X_SENDING || x->state == X_LINGER) live_unlink(x);
  x->state = X_DONE;
  /* Closing the poll handle takes the socket out of the thread's epoll set at once, so the
   * socket may be closed right after. */
  if (x->poll_init) uv_close((uv_handle_t *)&x->poll, on_poll_closed);
  if (x->ssl) {
    SSL_free(x->ssl);
    x->ssl = NULL;
  }
  ERR_clear_error();
  if (x->sock >= 0 && strcmp(reason, "complete") != 0) {
    /* A cut connection is reset, not closed: a plain close would leave the kernel holding
     * (and retrying) up to several MiB for a client that reads nothing. */
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    (void)setsockopt(x->sock, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  }
  if (x->sock >= 0) close(x->sock);
  x->sock = -1;
  if (x->file >= 0) close(x->file);
  x->file = -1;
  if (!x->poll_init) post_done(x);
}

static void on_poll(uv_poll_t *h, int status, int events);

/* Whether the client made progress: bytes it acknowledged since the last look move the
 * deadline, as bytes we hand to the kernel do. A slow client reading steadily from a full
 * socket buffer may leave the socket unwritable for longer than the send timeout (writable
 * means much of the buffer is free again), yet it is alive. Returns the unacknowledged
 * bytes. */
static uint64_t x_progress(xfer *x) {
  hd_downloads *d = x->d;
  uint64_t q = unacked(x);
  uint64_t acked = x->wire > q ? x->wire - q : 0;
  if (acked > x->acked) {
    x->acked = acked;
    x->deadline = uv_now(&d->tloop) + d->opts.send_timeout_ms;
  }
  return q;
}

/* Lingering: done when the client has acknowledged every byte; cut when it acknowledged
 * nothing more for the send timeout. */
static void x_linger_check(xfer *x) {
  hd_downloads *d = x->d;
  if (x_progress(x) == 0) x_finish(x, "complete");
  else if (uv_now(&d->tloop) >= x->deadline) x_finish(x, "timeout");
}

/* Everything is in the kernel: no more from our side. The transfer (and its slot) lasts until
 * the client has acknowledged it all, so that "complete" means the client got every byte
 * and a client stalled near the end is cut like any other; meanwhile what the client sends is
 * read and dropped, so that closing never resets the connection. */
static void x_linger(xfer *x) {
  x->state = X_LINGER;
  close(x->file);
  x->file = -1;
  (void)shutdown(x->sock, SHUT_WR);
  if (uv_poll_start(&x->poll, UV_READABLE, on_poll) != 0) {
    x_finish(x, "error");
    return;
  }
  x_linger_check(x);
}

enum { PUMP_DONE = 0, PUMP_WAIT = 1, PUMP_CLOSED = -1, PUMP_ERROR = -2 };

static int send_errno_kind(int e) {
  return e == EPIPE || e == ECONNRESET || e == ENOTCONN || e == ETIMEDOUT ? PUMP_CLOSED
                                                                          : PUMP_ERROR;
}

static int pump_plain(xfer *x) {
  hd_downloads *d = x->d;
  uint64_t budget = DL_PUMP_MAX;
  while (x->sent < x->len) {
    if (budget == 0) return PUMP_WAIT; /* level-triggered: we are called again next turn */
    uint64_t want = x->len - x->sent;
    if (want > DL_SENDFILE_MAX) want = DL_SENDFILE_MAX;
    if (want > budget) want = budget;
    off_t off = (off_t)(x->off + x->sent);
    ssize_t n = sendfile(x->sock, x->file, &off, (size_t)want);
    if (n > 0) {
      x->sent += (uint64_t)n;
      x->wire += (uint64_t)n;
      budget -= (uint64_t)n; /* n <= want <= budget */
      x->deadline = uv_now(&d->tloop) + d->opts.send_timeout_ms;
      continue;
    }
    if (n == 0) return PUMP_ERROR; /* the file is shorter than it was: damaged under us */
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return PUMP_WAIT;
    return send_errno_kind(errno);
  }
  return PUMP_DONE;
}

/* Moves what OpenSSL wrote into its memory BIO to x->tbuf (which is empty). */
static int tls_take_records(xfer *x) {
  BIO *wb = SSL_get_wbio(x->ssl);
  size_t n = BIO_ctrl_pending(wb);
  if (n > x->tcap) {
    free(x->tbuf);
    x->tbuf = xmalloc(n);
    x->tcap = n;
  }
  if (n && BIO_read(wb, x->tbuf, (int)n) != (int)n) return -1;
  x->tlen = n;
  x->toff = 0;
  return 0;
}

static int pump_tls(xfer *x) {
  hd_downloads *d = x->d;
  uint64_t budget = DL_PUMP_MAX;
  for (;;) {
    while (x->toff < x->tlen) {
      ssize_t n = send(x->sock, x->tbuf + x->toff, x->tlen - x->toff, MSG_NOSIGNAL);
      if (n > 0) {
        x->toff += (size_t)n;
        x->wire += (uint64_t)n;
        x->deadline = uv_now(&d->tloop) + d->opts.send_timeout_ms;
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return PUMP_WAIT;
      return n < 0 ? send_errno_kind(errno) : PUMP_CLOSED;
    }
    x->tlen = x->toff = 0;
    x->sent = x->encrypted; /* every record so far is in the kernel */
    if (x->encrypted == x->len) {
      if (x->notified) return PUMP_DONE;
      x->notified = 1;
      ERR_clear_error();
      (void)SSL_shutdown(x->ssl); /* close_notify, into the write BIO */
      ERR_clear_error();
      if (tls_take_records(x)) return PUMP_ERROR;
      continue;
    }
    if (budget == 0) return PUMP_WAIT;
    uint64_t want = x->len - x->encrypted;
    if (want > DL_TLS_CHUNK) want = DL_TLS_CHUNK;
    ssize_t n = pread(x->file, d->tls_plain, (size_t)want, (off_t)(x->off + x->encrypted));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return PUMP_ERROR;
    ERR_clear_error();
    /* A memory BIO never says "would block": SSL_write takes it all or fails. */
    int w = SSL_write(x->ssl, d->tls_plain, (int)n);
    ERR_clear_error();
    if (w != (int)n) return PUMP_ERROR;
    x->encrypted += (uint64_t)n;
    budget -= (uint64_t)n < budget ? (uint64_t)n : budget; /* n <= want, not <= budget */
    if (tls_take_records(x)) return PUMP_ERROR;
  }
}

static void x_pump(xfer *x) {
  int rc = x->ssl ? pump_tls(x) : pump_plain(x);
  if (rc == PUMP_DONE) {
    x_linger(x);
  } else if (rc == PUMP_WAIT) {
    if (uv_poll_start(&x->poll, UV_WRITABLE, on_poll) != 0) x_finish(x, "error");
  } else {
    x_finish(x, rc == PUMP_CLOSED ? "closed" : "error");
  }
}

/* Lingering and the client sent something: read and drop it. Its close (EOF) after reading
 * everything is a download; a reset means it closed with our bytes unread (it gave up, or
 * the connection dropped, near the end). */
static void x_drain(xfer *x) {
  hd_downloads *d = x->d;
  for (;;) {
    ssize_t n = recv(x->sock, d->drain, sizeof d->drain, 0);
    if (n > 0) continue;
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      x_linger_check(x);
      return;
    }
    /* An EOF is a download only if the client acknowledged every byte first: a relay or a
     * client that gives up mid-way may close its side (FIN) while megabytes of ours are still
     * unacknowledged in the kernel; that is a cut, not a download. */
    x_finish(x, n == 0 && unacked(x) == 0 ? "complete" : "closed");
    return;
  }
}

static void on_poll(uv_poll_t *h, int status, int events) {
  xfer *x = h->data;
  (void)events;
  if (x->state == X_DONE) return;
  if (x->state == X_LINGER) {
    if (status < 0) {
      x_finish(x, "closed");
      return;
    }
    x_drain(x);
    return;
  }
  if (status < 0) {
    x_finish(x, "closed");
    return;
  }
  x_pump(x);
}

static void x_start(xfer *x) {
  hd_downloads *d = x->d;
  x->state = X_SENDING;
  x->next = d->live;
  x->prev = NULL;
  if (d->live) d->live->prev = x;
  d->live = x;
  x->deadline = uv_now(&d->tloop) + d->opts.send_timeout_ms;
  if (uv_poll_init_socket(&d->tloop, &x->poll, x->sock) != 0) {
    x_finish(x, "error");
    return;
  }
  x->poll_init = 1;
  x->poll.data = x;
  x_pump(x);
}

static void cut_all(hd_downloads *d) {
  while (d->live) x_finish(d->live, "shutdown");
}

static void on_in(uv_async_t *a) {
  hd_downloads *d = a->data;
  uv_mutex_lock(&d->mu);
  xfer *list = d->in_head;
  d->in_head = d->in_tail = NULL;
  int quit = d->quit;
  uv_mutex_unlock(&d->mu);
  while (list) {
    xfer *x = list;
    list = x->next;
    x->next = NULL;
    if (quit) x_finish(x, "shutdown");
    else x_start(x);
  }
  if (quit) {
    cut_all(d);
    uv_close((uv_handle_t *)&d->in_async, NULL);
    uv_close((uv_handle_t *)&d->sweep, NULL);
  }
}

static void on_sweep(uv_timer_t *t) {
  hd_downloads *d = t->data;
  uint64_t now = uv_now(&d->tloop);
  static uint64_t last_log_ms, unlogged;
  for (xfer *x = d->live, *next; x; x = next) {
    next = x->next;
    if (x->state == X_LINGER) {
      x_linger_check(x);
      continue;
    }
    (void)x_progress(x); /* acknowledgements count as progress too */
    if (now < x->deadline) continue;
    /* One line a second at most: thousands of stalled clients must not flood the log; the
     * herald_downloads_cut_total counter sees every one. */
    if (!last_log_ms || now - last_log_ms >= 1000) {
      hd__log(HD_LOG_INFO, "download_cut",
              "reason=timeout tenant=%s app=%s version=%s device=%s sent=%llu of=%llu "
              "also_cut=%llu",
              x->tenant, x->app, x->version, x->device, (unsigned long long)x->sent,
              (unsigned long long)x->len, (unsigned long long)unlogged);
      last_log_ms = now;
      unlogged = 0;
    } else {
      unlogged++;
    }
    x_finish(x, "timeout");
  }
}

static void thread_main(void *arg) {
  hd_downloads *d = arg;
  uv_run(&d->tloop, UV_RUN_DEFAULT);
  /* Every handle is closed once on_in saw quit. */
  (void)uv_loop_close(&d->tloop);
  ERR_clear_error();
}

/* ------------------------------------------------------------------------------------------ */
/* the loop thread: ends of transfers */

static app_metrics *app_metrics_for(hd_downloads *d, uint32_t tenant_num, const char *tenant,
                                    const char *app) {
  if (!d->opts.metrics) return NULL;
  for (app_metrics *a = d->apps; a; a = a->next)
    if (a->tenant_num == tenant_num && strcmp(a->app, app) == 0) return a;
  /* Label values are written as they are: store ids and app ids never carry '"' or '\',
   * which is checked rather than escaped. */
  if (strpbrk(tenant, "\"\\\n") || strpbrk(app, "\"\\\n")) return NULL;
  char labels[512];
  snprintf(labels, sizeof labels, "tenant=\"%s\",app=\"%s\"", tenant, app);
  app_metrics *a = calloc(1, sizeof *a);
  if (!a) return NULL;
  a->tenant_num = tenant_num;
  a->app = xstrdup(app);
  a->count = hd__metric_new(d->opts.metrics, "herald_downloads_total",
                            "Complete package downloads (the response reached the last byte)",
                            HD_METRIC_COUNTER, labels);
  a->bytes = hd__metric_new(d->opts.metrics, "herald_download_bytes_total",
                            "Package bytes sent", HD_METRIC_COUNTER, labels);
  a->next = d->apps;
  d->apps = a;
  return a;
}

static void x_report(hd_downloads *d, xfer *x) {
  int complete = x->reason && strcmp(x->reason, "complete") == 0 && x->sent == x->len &&
                 x->off + x->len == x->size;
  hd_download_result res = {
      .tenant_num = x->tenant_num,
      .tenant = x->tenant,
      .app = x->app,
      .version = x->version,
      .device = x->device,
      .size = x->size,
      .offset = x->off,
      .length = x->len,
      .bytes = x->sent,
      .complete = complete,
      .reason = x->reason ? x->reason : "error",
  };
  app_metrics *am = app_metrics_for(d, x->tenant_num, x->tenant, x->app);
  if (am) {
    if (am->bytes) hd__metric_add(am->bytes, (double)x->sent);
    if (complete && am->count) hd__metric_add(am->count, 1);
  }
  hd_metric *cut = NULL;
  if (strcmp(res.reason, "timeout") == 0) cut = d->m_cut_timeout;
  else if (strcmp(res.reason, "closed") == 0) cut = d->m_cut_closed;
  else if (strcmp(res.reason, "error") == 0) cut = d->m_cut_error;
  else if (strcmp(res.reason, "shutdown") == 0) cut = d->m_cut_shutdown;
  if (cut) hd__metric_add(cut, 1);
  if (strcmp(res.reason, "error") == 0)
    hd__log(HD_LOG_WARN, "download_failed",
            "tenant=%s app=%s version=%s device=%s sent=%llu of=%llu", x->tenant, x->app,
            x->version, x->device, (unsigned long long)x->sent, (unsigned long long)x->len);
  for (size_t i = 0; i < d->nsubs; i++) d->subs[i].cb(d->subs[i].ud, &res);
}

static void on_done(uv_async_t *a) {
  hd_downloads *d = a->data;
  uv_mutex_lock(&d->mu);
  xfer *list = d->out_head;
  d->out_head = d->out_tail = NULL;
  uv_mutex_unlock(&d->mu);
  while (list) {
    xfer *x = list;
    list = x->next;
    d->active--;
    x_report(d, x);
    xfer_free(x);
  }
}

/* ------------------------------------------------------------------------------------------ */
/* the loop thread: answers */

/* http.c is done with the head: the socket is ours (sock >= 0), or the client is gone. */
static void on_taken(void *ud, int sock, struct ssl_st *ssl) {
  xfer *x = ud;
  if (x->magic != DL_XFER_MAGIC || x->state != X_HANDING) abort(); /* taken twice */
  hd_downloads *d = x->d;
  x->sock = sock;
  x->ssl = ssl;
  if (sock < 0 || d->stopped) {
    if (ssl) SSL_free(ssl);
    ERR_clear_error();
    if (sock >= 0) close(sock);
    close(x->file);
    d->active--;
    xfer_free(x);
    return;
  }
  x->state = X_QUEUED;
  x->next = NULL;
  uv_mutex_lock(&d->mu);
  if (d->in_tail) d->in_tail->next = x;
  else d->in_head = x;
  d->in_tail = x;
  uv_mutex_unlock(&d->mu);
  uv_async_send(&d->in_async);
}

/* Thread pool: open and check the file, so that the loop thread never waits on the disk. */
static void open_work(uv_work_t *w) {
  xfer *x = w->data;
  x->open_err = 0;
  x->file = open(x->path, O_RDONLY | O_CLOEXEC);
  if (x->file < 0) {
    x->open_err = errno;
    return;
  }
  struct stat st;
  if (fstat(x->file, &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size != x->size) {
    x->open_err = -1;
    close(x->file);
    x->file = -1;
    return;
  }
  (void)posix_fadvise(x->file, (off_t)x->off, (off_t)x->len, POSIX_FADV_SEQUENTIAL);
}

static void open_done(uv_work_t *w, int status) {
  xfer *x = w->data;
  hd_downloads *d = x->d;
  hd_http_req *r = x->r;
  x->r = NULL;
  if (status != 0 || x->open_err || d->stopped) {
    if (x->file >= 0) close(x->file);
    if (d->stopped) {
      hd__http_reply_error(r, HD_ECLOSED, NULL);
    } else {
      /* The catalog names a file that is not there (or not whole): the server's fault. */
      hd__log(HD_LOG_WARN, "download_file_unusable", "tenant=%s app=%s version=%s path=%s why=%s",
              x->tenant, x->app, x->version, x->path,
              x->open_err > 0 ? strerror(x->open_err) : "size differs from the catalog");
      hd__http_reply_error(r, HD_EIO, "the package file cannot be read");
    }
    d->active--;
    xfer_free(x);
    return;
  }
  x->state = X_HANDING;
  hd__http_reply_stream(r, x->status, "application/octet-stream", x->headers, x->len, on_taken,
                        x);
}

static void refuse(hd_http_req *r, int status, const char *code, const char *msg,
                   const char *extra) {
  char body[512];
  int n = snprintf(body, sizeof body, "{\"error\": \"%s\", \"message\": \"%s\"}", code, msg);
  hd__http_reply_ex(r, status, "application/json", extra, body, (size_t)n);
}

void hd__download_serve(hd_downloads *d, hd_http_req *r, const hd_download_spec *sp) {
  int head = strcmp(hd__http_method(r), "HEAD") == 0;
  char etag[80];
  snprintf(etag, sizeof etag, "\"%.64s\"", sp->sha256);
  char app[130], version[130], tenant[130];
  name_part(app, sizeof app, sp->app);
  name_part(version, sizeof version, sp->version);
  name_part(tenant, sizeof tenant, sp->tenant);
  /* Validators and the store id go with every answer about the package, 304 included. */
  char common[1024];
  snprintf(common, sizeof common,
           "ETag: %s\r\nX-Herald-Store: %s\r\nCache-Control: private\r\n", etag, tenant);

  const char *inm = hd__http_header(r, "If-None-Match");
  if (inm && hd__static_etag_matches(inm, etag)) {
    hd__http_reply_ex(r, 304, NULL, common, NULL, 0);
    return;
  }
  uint64_t first = 0, last = 0;
  int partial = 0;
  const char *range = hd__http_header(r, "Range");
  const char *if_range = hd__http_header(r, "If-Range");
  if (range && (!if_range || if_range_matches(if_range, etag))) {
    int rc = hd__download_parse_range(range, sp->size, &first, &last);
    if (rc == HD_RANGE_UNSATISFIABLE) {
      char h[1200];
      snprintf(h, sizeof h, "%sContent-Range: bytes */%llu\r\n", common,
               (unsigned long long)sp->size);
      refuse(r, 416, "range_not_satisfiable", "the range is outside the package", h);
      return;
    }
    partial = rc == HD_RANGE_OK;
  }
  uint64_t len = partial ? last - first + 1 : sp->size;
  char headers[2048];
  int hl = snprintf(headers, sizeof headers,
                    "%sAccept-Ranges: bytes\r\n"
                    "Content-Disposition: attachment; filename=\"%s-%s.%s.pkg\"\r\n",
                    common, app, version, tenant);
  if (partial && hl > 0 && (size_t)hl < sizeof headers)
    snprintf(headers + hl, sizeof headers - (size_t)hl, "Content-Range: bytes %llu-%llu/%llu\r\n",
             (unsigned long long)first, (unsigned long long)last, (unsigned long long)sp->size);
  int status = partial ? 206 : 200;
  if (head) {
    hd__http_reply_stream(r, status, "application/octet-stream", headers, len, NULL, NULL);
    return;
  }
  if (d->stopped) {
    hd__http_reply_error(r, HD_ECLOSED, NULL);
    return;
  }
  if (d->active >= d->opts.max_active) {
    if (d->m_refused) hd__metric_add(d->m_refused, 1);
    char h[64];
    snprintf(h, sizeof h, "Retry-After: %d\r\n", DL_RETRY_AFTER_S);
    refuse(r, 503, "busy", "too many downloads at once; retry later", h);
    return;
  }
  xfer *x = calloc(1, sizeof *x);
  if (!x) {
    hd__http_reply_error(r, HD_ENOMEM, NULL);
    return;
  }
  x->magic = DL_XFER_MAGIC;
  x->d = d;
  x->state = X_OPENING;
  x->path = xstrdup(sp->path);
  x->size = sp->size;
  x->off = first;
  x->len = len;
  x->status = status;
  x->headers = xstrdup(headers);
  x->tenant_num = sp->tenant_num;
  x->tenant = xstrdup(sp->tenant);
  x->app = xstrdup(sp->app);
  x->version = xstrdup(sp->version);
  x->device = xstrdup(sp->device);
  x->file = -1;
  x->sock = -1;
  x->r = r;
  x->work.data = x;
  d->active++;
  int rc = uv_queue_work(d->loop, &x->work, open_work, open_done);
  if (rc) {
    d->active--;
    xfer_free(x);
    hd__http_reply_error(r, hd_err_from_uv(rc), NULL);
  }
}

/* ------------------------------------------------------------------------------------------ */
/* lifecycle */

static double g_active(void *ud) { return (double)((hd_downloads *)ud)->active; }

static void metrics_init(hd_downloads *d) {
  hd_metrics *m = d->opts.metrics;
  if (!m) return;
  d->m_refused = hd__metric_new(m, "herald_downloads_refused_total",
                                "Downloads answered 503 because every slot was taken",
                                HD_METRIC_COUNTER, NULL);
  const char *cut = "Downloads that ended before their last byte, by reason";
  d->m_cut_timeout = hd__metric_new(m, "herald_downloads_cut_total", cut, HD_METRIC_COUNTER,
                                    "reason=\"timeout\"");
  d->m_cut_closed = hd__metric_new(m, "herald_downloads_cut_total", cut, HD_METRIC_COUNTER,
                                   "reason=\"closed\"");
  d->m_cut_error = hd__metric_new(m, "herald_downloads_cut_total", cut, HD_METRIC_COUNTER,
                                  "reason=\"error\"");
  d->m_cut_shutdown = hd__metric_new(m, "herald_downloads_cut_total", cut, HD_METRIC_COUNTER,
                                     "reason=\"shutdown\"");
  (void)hd__metric_fn(m, "herald_downloads_active", "Package downloads in progress", NULL,
                      g_active, d);
}

static void free_on_close(uv_handle_t *h) {
  hd_downloads *d = h->data;
  uv_mutex_destroy(&d->mu);
  free(d);
}

int hd__download_new(uv_loop_t *loop, const hd_download_opts *opts, hd_downloads **out) {
  hd_downloads *d = calloc(1, sizeof *d);
  if (!d) return HD_ENOMEM;
  d->loop = loop;
  if (opts) d->opts = *opts;
  if (!d->opts.max_active) d->opts.max_active = DL_DEFAULT_MAX_ACTIVE;
  if (!d->opts.send_timeout_ms) d->opts.send_timeout_ms = DL_DEFAULT_SEND_TIMEOUT_MS;
  int rc = uv_mutex_init(&d->mu);
  if (rc) {
    free(d);
    return hd_err_from_uv(rc);
  }
  if ((rc = uv_async_init(loop, &d->done_async, on_done))) {
    uv_mutex_destroy(&d->mu);
    free(d);
    return hd_err_from_uv(rc);
  }
  d->done_async.data = d;
  /* The thread's loop and handles are set up here, before the thread runs them. */
  if ((rc = uv_loop_init(&d->tloop))) goto fail;
  if ((rc = uv_async_init(&d->tloop, &d->in_async, on_in))) {
    (void)uv_loop_close(&d->tloop);
    goto fail;
  }
  d->in_async.data = d;
  uv_timer_init(&d->tloop, &d->sweep);
  d->sweep.data = d;
  uint64_t tick = tick_ms(d);
  uv_timer_start(&d->sweep, on_sweep, tick, tick);
  if ((rc = uv_thread_create(&d->thread, thread_main, d))) {
    uv_close((uv_handle_t *)&d->in_async, NULL);
    uv_close((uv_handle_t *)&d->sweep, NULL);
    uv_run(&d->tloop, UV_RUN_DEFAULT);
    (void)uv_loop_close(&d->tloop);
    goto fail;
  }
  d->thread_started = 1;
  metrics_init(d);
  *out = d;
  return 0;
fail:
  /* d goes when its handle on the caller's loop has closed (the loop must run). */
  uv_close((uv_handle_t *)&d->done_async, free_on_close);
  return hd_err_from_uv(rc);
}

int hd__download_subscribe(hd_downloads *d, hd_download_cb cb, void *ud) {
  if (!d || !cb) return HD_EINVAL;
  if (d->nsubs == DL_MAX_SUBS) return HD_EFULL;
  d->subs[d->nsubs].cb = cb;
  d->subs[d->nsubs].ud = ud;
  d->nsubs++;
  return 0;
}

uint64_t hd__download_active(const hd_downloads *d) { return d ? d->active : 0; }

void hd__download_stop(hd_downloads *d) {
  if (!d || d->stopped) return;
  d->stopped = 1;
  uv_mutex_lock(&d->mu);
  d->quit = 1;
  uv_mutex_unlock(&d->mu);
  uv_async_send(&d->in_async);
  /* Shutdown only: the thread closes its sockets and handles and returns at once. */
  if (d->thread_started) uv_thread_join(&d->thread);
  d->thread_started = 0;
  on_done(&d->done_async); /* what the thread handed back last */
  uv_close((uv_handle_t *)&d->done_async, NULL);
}

void hd__download_free(hd_downloads *d) {
  if (!d) return;
  /* Freeing a running engine would leave its thread using freed memory. */
  if (!d->stopped || d->thread_started) abort();
  for (app_metrics *a = d->apps, *n; a; a = n) {
    n = a->next;
    free(a->app);
    free(a);
  }
  uv_mutex_destroy(&d->mu);
  free(d);
}
