/* hdc_client.h — one ipconn connection on a libuv loop: connect, hello, welcome, messages,
 * acks and heartbeats (docs/protocols/ipconn.md). Used by herald-agent and herald-bench.
 *
 * Model (libuv's): hdc_conn_open() starts connecting and returns a handle; the connection
 * reports through callbacks on the loop thread and ends in exactly one on_close(), whatever
 * ends it (the broker's deny or goaway, a network error, silence, or hdc_conn_close()). The
 * handle is freed right after on_close() returns. Reconnecting is the caller's policy: this
 * layer never reconnects by itself (hdc_backoff in hdc_proto.h paces it).
 *
 * Heartbeats are automatic once the welcome arrived: a ping whenever nothing was sent for the
 * broker's `heartbeat` seconds, pongs to the broker's pings, and the connection ends with
 * HDC_ETIMEDOUT when nothing arrived for the broker's `idle` seconds.
 *
 * Every function is for the loop thread only. Strings in opts are copied.
 */
#ifndef HERALD_HDC_CLIENT_H
#define HERALD_HDC_CLIENT_H

#include <stdint.h>
#include <uv.h>

#include "hdc_proto.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hdc_conn hdc_conn;

/* Why a connection ended. */
typedef struct hdc_close_info {
  int status;       /* HDC_EDENIED, HDC_EGOAWAY, HDC_ECLOSED (peer closed), HDC_ETIMEDOUT,
                     * HDC_ETLS (handshake or certificate check failed; the reason in text),
                     * HDC_EIO (see sys_err), HDC_EPROTO / HDC_ETOOBIG (the broker broke the
                     * protocol), HDC_ECANCELED (hdc_conn_close), HDC_ENOMEM */
  int sys_err;      /* the libuv error behind HDC_EIO (e.g. UV_ECONNREFUSED), else 0 */
  int was_ready;    /* 1 if the welcome had arrived */
  char code[64];    /* deny / goaway code ("auth", "shutdown", ...), else "" */
  char text[256];   /* deny / goaway text, the TLS failure's reason, else "" */
  char alt[300];    /* goaway: another host:port to use, else "" */
  int64_t retry_s;  /* deny / goaway retry hint in seconds, -1 when none */
} hdc_close_info;

typedef struct hdc_conn_cbs {
  /* The broker accepted the hello; `welcome` holds heartbeat, idle, window, max_frame. */
  void (*on_ready)(hdc_conn *c, void *ud, const hdc_frame *welcome);
  /* One message. The frame (and its data) is valid during the call only. */
  void (*on_msg)(hdc_conn *c, void *ud, const hdc_frame *msg);
  /* The broker committed these acks: they will never be sent again. May be NULL. */
  void (*on_acked)(hdc_conn *c, void *ud, const uint64_t *ids, size_t n);
  /* The end; exactly once. `c` is freed when this returns. */
  void (*on_close)(hdc_conn *c, void *ud, const hdc_close_info *why);
} hdc_conn_cbs;

typedef struct hdc_conn_opts {
  const char *host;            /* IPv4/IPv6 literal or a name (resolved with getaddrinfo) */
  int port;
  const char *device, *tenant, *token;
  const char *agent;           /* "name/version" sent in the hello; may be NULL */
  uint32_t max_frame;          /* largest frame accepted from the broker; 0 = 16 MiB */
  uint32_t connect_timeout_ms; /* connect + hello + welcome; 0 = 10 s */
  /* TLS: a PEM file of CA certificates to verify the broker against; NULL = plain TCP. Read at
   * hdc_conn_open(), which fails with HDC_EINVAL if it cannot be loaded. TLS 1.2 or newer. */
  const char *tls_ca;
  /* The name (or IP address) the broker's certificate must carry; NULL = host. */
  const char *tls_name;
} hdc_conn_opts;

/* Start a connection. On success *out is the handle and on_close() will run exactly once;
 * on failure (HDC_EINVAL, HDC_ENOMEM) nothing was started and no callback runs. */
int hdc_conn_open(uv_loop_t *loop, const hdc_conn_opts *o, const hdc_conn_cbs *cbs, void *ud,
                  hdc_conn **out);
/* Acknowledge ids (any number: sent as frames of up to HDC_MAX_ACK_IDS). 0, HDC_ECLOSED when
 * the connection is not ready, HDC_ENOMEM. */
int hdc_conn_ack(hdc_conn *c, const uint64_t *ids, size_t n);
/* Send a ping now (heartbeats are automatic; this is for tests and impatience). */
int hdc_conn_ping(hdc_conn *c);
/* 1 between on_ready() and the start of the close. */
int hdc_conn_is_ready(const hdc_conn *c);
/* Bytes queued in the socket's libuv write queue. */
size_t hdc_conn_write_queue(const hdc_conn *c);
/* End the connection; on_close() follows (asynchronously) with HDC_ECANCELED unless it was
 * already ending for another reason. Safe to call from any callback, and more than once. */
void hdc_conn_close(hdc_conn *c);

#ifdef __cplusplus
}
#endif
#endif
