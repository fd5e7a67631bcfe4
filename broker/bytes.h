/* bytes.h — numbers as bytes. Big-endian packing for LMDB keys: every multi-byte number in a key
 * is big-endian so that LMDB's byte order is the numeric order; store.c and every module that
 * keeps its own tables (release.c, push.c) use these. And decimal text for the wire, where a
 * hot path writes ids and lengths without snprintf (ingress_zmq.c, http.c), and a hex digit's
 * value (http.c's percent escapes, pubbody.c's \u escapes). And FNV-1a of a
 * string, the hash of the in-memory tables keyed by names that are not secret (ratelimit.c,
 * tenant.c). Header-only, no state. */
#ifndef HERALD_BYTES_H
#define HERALD_BYTES_H

#include <stddef.h>
#include <stdint.h>

static inline void hd_be32(unsigned char *p, uint32_t v) {
  p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16);
  p[2] = (unsigned char)(v >> 8); p[3] = (unsigned char)v;
}
static inline void hd_be64(unsigned char *p, uint64_t v) {
  hd_be32(p, (uint32_t)(v >> 32));
  hd_be32(p + 4, (uint32_t)v);
}
static inline uint32_t hd_rd32(const void *q) {
  const unsigned char *p = q;
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint64_t hd_rd64(const void *q) {
  const unsigned char *p = q;
  return (uint64_t)hd_rd32(p) << 32 | hd_rd32(p + 4);
}

/* The value of a hex digit, or -1. */
static inline int hd_hexval(int ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

/* The decimal digits of v at out (at most 20, no NUL); returns how many. */
static inline size_t hd_u64_dec(char *out, uint64_t v) {
  char buf[20], *q = buf + sizeof buf;
  do {
    *--q = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  size_t n = (size_t)(buf + sizeof buf - q);
  for (size_t i = 0; i < n; i++) out[i] = q[i];
  return n;
}

/* 64-bit FNV-1a of the NUL-terminated s. */
static inline uint64_t hd_fnv1a(const char *s) {
  uint64_t h = 1469598103934665603ull;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h;
}

#endif
