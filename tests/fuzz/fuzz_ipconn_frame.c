/* libFuzzer target: the ipconn byte stream as a broker or client reads it — the incremental
 * frame splitter (hdc_framer) cut at fuzzer-chosen read boundaries, then the frame decoder and
 * the ack id reader on every body. The first input byte picks the read sizes and the frame
 * limit. Checks: the split never changes which frames come out (fed whole vs. in pieces), a
 * refused stream is refused the same way, and an idle splitter holds no memory. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hdc_proto.h"

typedef struct seen {
  uint64_t hash; /* FNV-1a over the bodies, with their lengths */
  size_t frames;
} seen;

static int on_frame(void *ud, const uint8_t *body, size_t len) {
  seen *s = ud;
  uint64_t h = s->hash ^ len;
  for (size_t i = 0; i < len; i++) h = (h ^ body[i]) * 1099511628211ull;
  s->hash = h * 1099511628211ull;
  s->frames++;
  hdc_frame f;
  if (hdc_frame_decode(body, len, &f) == 0) {
    if (f.type == HDC_T_ACK || f.type == HDC_T_ACKED) {
      uint64_t ids[HDC_MAX_ACK_IDS];
      if (hdc_frame_ids(&f, ids, HDC_MAX_ACK_IDS) > f.nids) abort();
    }
    if (f.type == HDC_T_MSG && (!f.data || hdc_mp_validate(f.data, f.data_len) != 0)) abort();
    char tmp[64];
    (void)hdc_str_copy(f.device, tmp, sizeof tmp);
    (void)hdc_str_eq(f.type_name, "msg");
  }
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  uint8_t ctl = data[0];
  data++, size--;
  uint32_t max_body = ctl & 0x80 ? HDC_MAX_HELLO : 64 * 1024;
  size_t step = (size_t)(ctl & 0x7f) + 1;

  seen whole = {14695981039346656037ull, 0};
  hdc_framer a = {0};
  int rw = hdc_framer_feed(&a, data, size, max_body, on_frame, &whole);

  seen parts = {14695981039346656037ull, 0};
  hdc_framer b = {0};
  int rp = 0;
  for (size_t off = 0; off < size && rp == 0; off += step) {
    size_t n = size - off < step ? size - off : step;
    rp = hdc_framer_feed(&b, data + off, n, max_body, on_frame, &parts);
  }
  if (rw != rp || whole.frames != parts.frames || whole.hash != parts.hash) abort();
  if (rw == 0 && a.len != b.len) abort();
  if (a.len == 0 && a.buf) abort();
  hdc_framer_free(&a);
  hdc_framer_free(&b);
  return 0;
}
