/* libFuzzer target: one ZeroMQ publish request frame, as the ROUTER ingress parses it. */
#include <stdlib.h>
#include <string.h>

#include "ingress_zmq.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  hd_zmq_request r;
  const char *why = NULL;
  if (hd__zmq_request_parse((const char *)data, size, NULL, &r, &why) == 0) {
    if (!r.key || !r.app) abort(); /* accepted requests always carry both */
    hd__zmq_request_clear(&r);
  } else if (!why) {
    abort(); /* every refusal explains itself */
  }
  return 0;
}
