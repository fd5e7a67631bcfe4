/* fetch.h — herald-agent's HTTP(S) client: one thread of its own running a libcurl multi
 * handle, serving any number of requests at once; results come back on the loop thread.
 *
 * Why a thread of its own, and not libcurl on the loop or uv_queue_work:
 *   - the loop never blocks: name resolution, TLS handshakes, and the disk writes of a
 *     download all happen on this thread;
 *   - libuv's thread pool (4 threads) also resolves the broker's name for every ipconn
 *     reconnect (uv_getaddrinfo): a few stalled downloads parked on it, one per pool thread
 *     for minutes, would hold the agent's reconnects back. Here a stalled transfer costs one
 *     socket in one poll set, nothing else;
 *   - cancelling is immediate (the transfer is taken out of the multi handle), and one thread
 *     serves every download, update-check and report however many there are.
 *
 * Two kinds of request: to memory (JSON POSTs: update-check, install reports), and to a file
 * (package downloads), which resume: when the file has bytes already, "Range: bytes=<size>-"
 * goes out with "If-Range: <etag>"; a 206 is appended, a 200 (the package changed, or the
 * server ignores ranges) starts the file over, a 206 that does not start at the file's end is
 * refused (range_mismatch) and nothing is written. Error bodies never reach the file.
 *
 * Threads: fetch_new/start/cancel/close on the loop thread only; callbacks run there too.
 * Ownership: every string of a request is copied; the result (and its body) is valid during
 * the callback only. Every started request ends in exactly one callback.
 */
#ifndef HERALD_AGENT_FETCH_H
#define HERALD_AGENT_FETCH_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct fetch fetch;
typedef struct fetch_op fetch_op;

typedef struct fetch_req {
  const char *method;     /* "GET" (default, also when NULL) or "POST" */
  const char *url;
  const char *bearer;     /* Authorization: Bearer <bearer>; NULL: none */
  const char *json;       /* the body of a POST, sent as application/json; NULL: none */
  const char *file;       /* download into this file; NULL: keep the body in memory */
  int restart;            /* file: truncate it first instead of resuming from its end */
  const char *if_range;   /* file: the validator (ETag) sent as If-Range with the Range */
  const char *ca_file;    /* PEM CA certificates for https; NULL: the system's */
  long connect_timeout_s; /* 0: 30 */
  long stall_s;           /* give up when less than 1 byte/s came for this long; 0: 60 */
  long timeout_s;         /* the whole request; 0: no limit (downloads) */
  size_t max_body;        /* memory: largest body kept; 0: 1 MiB (more fails the request) */
} fetch_req;

typedef struct fetch_result {
  int curl_code;          /* CURLE_OK, or why there is no complete answer */
  const char *error;      /* curl_easy_strerror(curl_code): short and stable, for reports */
  char detail[256];       /* libcurl's own message (host, port, ...), for the log */
  int canceled;           /* fetch_cancel() or fetch_close() ended it */
  int io_error;           /* the file could not be opened or written (sys_errno) */
  int sys_errno;
  long status;            /* the HTTP status of the last answer, 0 without one */
  int64_t offset;         /* file: the Range start sent, 0 = the whole file was asked for */
  int64_t received;       /* body bytes written to the file (or kept in memory) */
  int64_t file_size;      /* file: its size afterwards */
  int restarted;          /* file: a 200 answered the Range: the file was started over */
  int range_mismatch;     /* file: a 206 that did not start at the file's end */
  char etag[200];         /* the ETag header of the answer, "" if none */
  char store[80];         /* the X-Herald-Store header, "" if none */
  const char *body;       /* memory: the body, NUL-terminated ("" if none) */
  size_t body_len;
} fetch_result;

typedef void (*fetch_cb)(void *ud, const fetch_result *r);

/* Start the thread. The client owns a uv_async_t on loop: fetch_close() closes it. */
int fetch_new(uv_loop_t *loop, fetch **out);
/* Queue a request; it starts on the fetch thread at once. *out (may be NULL) can be passed
 * to fetch_cancel() until the callback has run. 0 or HD_ENOMEM / HD_ECLOSED. */
int fetch_start(fetch *f, const fetch_req *r, fetch_cb cb, void *ud, fetch_op **out);
/* End a request early; its callback still runs (canceled = 1), later. */
void fetch_cancel(fetch_op *op);
/* Stop: every request still running ends (canceled) and its callback runs before this
 * returns; the thread is joined; the client frees itself once its handle is closed. */
void fetch_close(fetch *f);

#endif
