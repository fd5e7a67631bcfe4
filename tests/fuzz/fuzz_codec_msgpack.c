/* libFuzzer target: msgpack bytes from publishers -> validation -> JSON text, as long-poll
 * clients get it. Whatever validates must also convert or be refused cleanly. */
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "herald/error.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *out = NULL;
  size_t len = 0;
  (void)hd__codec_msgpack_validate(data, size);
  int rc = hd__codec_mpbytes_to_json_text(data, size, &out, &len);
  if (rc == 0) {
    /* The JSON we produce must parse back and re-encode. (jansson cannot hold a NUL inside
     * an object key, which msgpack and JSON both allow: such output is skipped here.) */
    json_error_t e;
    json_t *j = json_loadb(out, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
    if (!j) {
      if (!strstr(out, "\\u0000")) abort();
      free(out);
      return 0;
    }
    char *mp = NULL;
    size_t mplen = 0;
    if (hd__codec_json_to_mpbuf(j, &mp, &mplen) == 0) free(mp);
    json_decref(j);
    free(out);
  } else if (rc != HD_EINVAL && rc != HD_ENOMEM) {
    abort();
  }
  return 0;
}
