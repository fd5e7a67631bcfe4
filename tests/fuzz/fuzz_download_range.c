/* libFuzzer target: the validator headers of a package download, as broker/download.c reads
 * them — Range (hd__download_parse_range) against a fuzzer-chosen package size, and
 * If-None-Match (hd__static_etag_matches) against the package's entity tag. The first byte
 * picks the size's form (a small one, where ranges meet the end often, or any 64-bit one).
 * Checks: a served range lies inside the package (first <= last < size), nothing is served
 * from an empty package, a served range written back as "bytes=first-last" parses to itself,
 * another unit is ignored; "*", the tag itself, W/ + the tag, and any list with the tag
 * appended match. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "download.h"
#include "static.h"

static const char etag[] = "\"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 9) return 0;
  uint64_t pkg;
  if (data[0] & 1) {
    memcpy(&pkg, data + 1, 8);
  } else {
    pkg = (uint64_t)data[1] | (uint64_t)data[2] << 8;
  }
  data += 9, size -= 9;
  char *v = malloc(size + 1);
  if (!v) return 0;
  memcpy(v, data, size);
  v[size] = 0;

  uint64_t first = 1, last = 0;
  int rc = hd__download_parse_range(v, pkg, &first, &last);
  if (rc != HD_RANGE_NONE && rc != HD_RANGE_OK && rc != HD_RANGE_UNSATISFIABLE) abort();
  if (rc == HD_RANGE_OK) {
    if (pkg == 0 || first > last || last >= pkg) abort();
    char again[64];
    snprintf(again, sizeof again, "bytes=%llu-%llu", (unsigned long long)first,
             (unsigned long long)last);
    uint64_t f2 = 1, l2 = 0;
    if (hd__download_parse_range(again, pkg, &f2, &l2) != HD_RANGE_OK || f2 != first ||
        l2 != last)
      abort();
  }
  const char *p = v + strspn(v, " \t");
  if (strncasecmp(p, "bytes=", 6) != 0 && rc != HD_RANGE_NONE) abort();

  /* If-None-Match: the same bytes as a tag list. */
  (void)hd__static_etag_matches(v, etag);
  char *w = malloc(size + sizeof etag + 8);
  if (!w) abort();
  snprintf(w, size + sizeof etag + 8, "%s, %s", v, etag);
  if (hd__static_etag_matches(w, etag) != 1) abort();
  snprintf(w, size + sizeof etag + 8, "W/%s", etag);
  if (hd__static_etag_matches(w, etag) != 1 || hd__static_etag_matches("*", etag) != 1 ||
      hd__static_etag_matches(etag, etag) != 1)
    abort();
  free(w);
  free(v);
  return 0;
}
