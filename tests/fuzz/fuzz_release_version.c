/* libFuzzer target: what the release API reads from its query and bodies besides JSON —
 * version strings (hd__release_valid_version), version order (hd__release_vercmp), rollout
 * percentages (hd__release_parse_rollout) and ids (hd__valid_id), broker/release.c.
 *
 * Input: one control byte (which of three versions carry an integer code, and the codes),
 * then up to four lines: versions a, b, c and a rollout string.
 * Checks on the order, for versions that hd__release_valid_version accepts and whose codes
 * are all given or all absent (mixing them is the documented exception: codes decide only
 * when both sides have one, so no order spans both kinds):
 *   - reflexive: a == a;
 *   - antisymmetric: sign(a ? b) == -sign(b ? a);
 *   - transitive on a, b, c: a <= b <= c implies a <= c, and a == b implies that a and b
 *     compare alike with c;
 *   - equal forms compare equal: leading zeros on numeric segments ("1.02" == "1.2") and a
 *     trailing ".0" ("1.0" == "1.0.0").
 * Checks on the rest: an accepted version is 1-64 characters of the documented set starting
 * with a letter or digit; an accepted rollout is 0..10000 hundredths and "%u.%02u" of it
 * parses back to the same value. */
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "herald/error.h"
#include "release.h"
#include "tenant.h"

static int sgn(int x) { return (x > 0) - (x < 0); }

static int is_sep(char c) { return c == '.' || c == '-' || c == '+'; }

static void check_valid_version(const char *v) {
  if (!hd__release_valid_version(v)) return;
  size_t n = strlen(v);
  if (n < 1 || n > HD_REL_MAX_VERSION) abort();
  for (size_t i = 0; i < n; i++) {
    char c = v[i];
    int alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    if (!alnum && (i == 0 || !(is_sep(c) || c == '_'))) abort();
  }
}

/* v with a '0' put before every numeric segment, into out (room for 2x + 1). */
static void pad_zeros(const char *v, char *out) {
  size_t o = 0;
  for (const char *p = v; *p;) {
    size_t n = strcspn(p, ".-+");
    int digits = n > 0;
    for (size_t i = 0; i < n; i++) digits &= p[i] >= '0' && p[i] <= '9';
    if (digits) out[o++] = '0';
    memcpy(out + o, p, n);
    o += n;
    p += n;
    if (*p) out[o++] = *p++;
  }
  out[o] = 0;
}

static int cmp(const char *a, int ha, int64_t ca, const char *b, int hb, int64_t cb) {
  return hd__release_vercmp(a, ha, ca, b, hb, cb);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  uint8_t ctl = data[0];
  data++, size--;
  char *buf = malloc(size + 1);
  if (!buf) return 0;
  memcpy(buf, data, size);
  buf[size] = 0;
  const char *f[4] = {"", "", "", ""};
  char *p = buf;
  for (int i = 0; i < 4 && p; i++) {
    f[i] = p;
    p = strchr(p, '\n');
    if (p) *p++ = 0;
  }
  /* codes: all three (ctl bit 0) or none; small values so that they collide */
  int coded = ctl & 1;
  int64_t code[3] = {(ctl >> 1) & 3, (ctl >> 3) & 3, (ctl >> 5) & 3};

  for (int i = 0; i < 4; i++) {
    check_valid_version(f[i]);
    (void)hd__valid_id(f[i]);
  }
  /* Any bytes: no crash, no read past the end (ASan). */
  (void)cmp(f[0], 0, 0, f[1], 0, 0);
  (void)cmp(f[1], 0, 0, f[2], 0, 0);

  int valid = hd__release_valid_version(f[0]) && hd__release_valid_version(f[1]) &&
              hd__release_valid_version(f[2]);
  if (valid) {
    const char *v[3] = {f[0], f[1], f[2]};
    for (int i = 0; i < 3; i++) {
      if (cmp(v[i], coded, code[i], v[i], coded, code[i]) != 0) abort();
      for (int j = 0; j < 3; j++) {
        int x = cmp(v[i], coded, code[i], v[j], coded, code[j]);
        int y = cmp(v[j], coded, code[j], v[i], coded, code[i]);
        if (sgn(x) != -sgn(y)) abort();
      }
    }
    for (int i = 0; i < 3; i++)
      for (int j = 0; j < 3; j++)
        for (int k = 0; k < 3; k++) {
          int ij = cmp(v[i], coded, code[i], v[j], coded, code[j]);
          int jk = cmp(v[j], coded, code[j], v[k], coded, code[k]);
          int ik = cmp(v[i], coded, code[i], v[k], coded, code[k]);
          if (ij <= 0 && jk <= 0 && ik > 0) abort();
          if (ij == 0 && sgn(ik) != sgn(jk)) abort();
        }
    /* equal forms (strings only: a code would decide otherwise) */
    for (int i = 0; i < 3; i++) {
      size_t n = strlen(v[i]);
      char *padded = malloc(2 * n + 8);
      if (!padded) abort();
      pad_zeros(v[i], padded);
      if (cmp(v[i], 0, 0, padded, 0, 0) != 0) abort();
      if (!is_sep(v[i][n - 1])) {
        memcpy(padded, v[i], n);
        memcpy(padded + n, ".0", 3);
        if (cmp(v[i], 0, 0, padded, 0, 0) != 0) abort();
        if (cmp(padded, 0, 0, v[i], 0, 0) != 0) abort();
      }
      free(padded);
    }
  }

  uint32_t bp = 123456;
  if (hd__release_parse_rollout(f[3], &bp) == 0) {
    if (bp > 10000) abort();
    char again[32];
    uint32_t bp2 = 654321;
    snprintf(again, sizeof again, "%u.%02u", bp / 100, bp % 100);
    if (hd__release_parse_rollout(again, &bp2) != 0 || bp2 != bp) abort();
  } else if (bp != 123456) {
    abort(); /* a refused value leaves the output alone */
  }
  free(buf);
  return 0;
}
