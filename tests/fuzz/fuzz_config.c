/* libFuzzer target: the config file parser, on arbitrary bytes. */
#include <stddef.h>
#include <stdint.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  hd_config c;
  char err[512];
  if (hd__config_parse((const char *)data, size, "fuzz.conf", &c, err, sizeof err) == 0)
    hd__config_free(&c);
  return 0;
}
