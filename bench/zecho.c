/* zecho.c — `herald-bench zmq-echo`: the floor under the ingest workload. A ROUTER on one
 * thread that answers every request [corr][body] at once with the reply Herald gives an
 * accepted publish ({"id": "1"}), reading nothing and storing nothing. Run against it, the
 * ingest scenario measures what ZeroMQ and the load client alone allow on this machine, so a
 * broker's ingest figure can be read as a share of that. */
#include <errno.h>
#include <stdio.h>
#include <zmq.h>

#include "bench.h"

int run_zmq_echo(opts *o) {
  void *ctx = zmq_ctx_new();
  void *s = zmq_socket(ctx, ZMQ_ROUTER);
  int hwm = 1000000;
  zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
  zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm);
  if (zmq_bind(s, o->zmq) != 0) {
    fprintf(stderr, "herald-bench zmq-echo: cannot bind %s: %s\n", o->zmq, zmq_strerror(errno));
    zmq_close(s);
    zmq_ctx_term(ctx);
    return 1;
  }
  /* msgpack {"id": "1"}: what zpub.c takes for an accepted publish */
  static const char ok[] = "\x81\xa2id\xa1"
                           "1";
  for (;;) {
    zmq_msg_t part;
    int more = 1, n = 0;
    /* [identity][corr][body]: the first two go back as they came, the body is dropped */
    while (more) {
      zmq_msg_init(&part);
      if (zmq_msg_recv(&part, s, 0) < 0) {
        zmq_msg_close(&part);
        goto out; /* interrupted: the caller kills us to stop */
      }
      more = zmq_msg_more(&part);
      if (more && n < 2) zmq_msg_send(&part, s, ZMQ_SNDMORE); /* takes the part */
      else zmq_msg_close(&part);
      n++;
    }
    if (n >= 3) zmq_send(s, ok, sizeof ok - 1, 0);
    else if (n == 2) zmq_send(s, "", 0, 0); /* a malformed request still ends its reply */
  }
out:
  zmq_close(s);
  zmq_ctx_term(ctx);
  return 0;
}
