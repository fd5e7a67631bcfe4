/* libFuzzer target: the bytes one HTTP client sends on one connection, through the broker's
 * real connection code (read buffering, http-parser callbacks, limits, routing, pipelining,
 * held requests, closing) over a socketpair: see hd__http_fuzz_feed() in broker/http.c. The
 * feed aborts on a leaked handle or a held request left behind. */
#include <stdint.h>
#include <stdlib.h>

#include "http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (hd__http_fuzz_feed(data, size) != 0) abort(); /* socketpair or loop setup failed */
  return 0;
}
