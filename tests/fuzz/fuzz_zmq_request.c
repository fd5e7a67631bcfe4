/* libFuzzer target: one ZeroMQ publish request frame, as the ROUTER ingress parses it in one
 * pass. An accepted request is one well-formed msgpack value within the depth cap as the
 * separate validator sees it, carries a key and an app, and every "data" it kept (copied into
 * the request's one block) is one well-formed msgpack value. */
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "ingress_zmq.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  hd_zmq_request r;
  const char *why = NULL;
  if (hd__zmq_request_parse((const char *)data, size, &r, &why) == 0) {
    if (!r.key || !r.app) abort(); /* accepted requests always carry both */
    if (hd__codec_msgpack_validate(data, size) != 0) abort(); /* the pass checked it all */
    if (r.data && hd__codec_msgpack_validate(r.data, r.data_len) != 0) abort();
    for (size_t i = 0; i < r.nitems; i++)
      if (r.items[i].data && hd__codec_msgpack_validate(r.items[i].data, r.items[i].data_len))
        abort();
    hd__zmq_request_clear(&r);
  } else if (!why) {
    abort(); /* every refusal explains itself */
  }
  return 0;
}
