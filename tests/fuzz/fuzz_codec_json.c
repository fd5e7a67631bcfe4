/* libFuzzer target: JSON bodies as HTTP publishers send them -> msgpack for the store -> JSON
 * again for the long-poll answer. The round trip must be lossless for what was accepted. */
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "herald/error.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  json_error_t e;
  json_t *j = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &e);
  if (!j) return 0;
  char *mp = NULL, *txt = NULL;
  size_t mplen = 0, tlen = 0;
  if (hd__codec_json_to_mpbuf(j, &mp, &mplen) == 0) {
    if (hd__codec_msgpack_validate(mp, mplen) != 0) abort();
    if (hd__codec_mpbytes_to_json_text(mp, mplen, &txt, &tlen) != 0) abort();
    char *want = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
    if (want && (strlen(want) != tlen || memcmp(want, txt, tlen) != 0)) abort();
    free(want);
    free(txt);
    free(mp);
  }
  json_decref(j);
  return 0;
}
