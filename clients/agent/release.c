/* release.c — recognising release notices (see release.h). */
#include "release.h"

#include "hdc_proto.h"

int release_is_notice(const uint8_t *data, size_t len) {
  hdc_rd r = {data, data + len};
  uint32_t n;
  if (hdc_rd_map(&r, &n)) return 0;
  for (uint32_t i = 0; i < n; i++) {
    const char *k, *v;
    uint32_t kl, vl;
    if (hdc_rd_str(&r, &k, &kl)) return 0;
    if (kl == 4 && k[0] == 'k' && k[1] == 'i' && k[2] == 'n' && k[3] == 'd') {
      hdc_rd save = r;
      if (hdc_rd_str(&r, &v, &vl) == 0)
        return vl == 7 && v[0] == 'r' && v[1] == 'e' && v[2] == 'l' && v[3] == 'e' &&
               v[4] == 'a' && v[5] == 's' && v[6] == 'e';
      r = save;
    }
    if (hdc_rd_skip(&r, NULL, NULL)) return 0;
  }
  return 0;
}
