/* version.c — release version order (see version.h). */
#include "version.h"

#include <string.h>

typedef struct seg {
  const char *p;
  size_t len;
  int numeric; /* only digits (a missing segment is the number 0: len 0, numeric) */
} seg;

static int is_sep(char c) { return c == '.' || c == '-' || c == '+'; }

/* The next segment at *s (NULL when the string is used up: then the number 0). */
static seg next_seg(const char **s) {
  seg g = {"", 0, 1};
  if (!*s || !**s) { /* used up (a trailing separator ends it too: "1." == "1") */
    *s = NULL;
    return g;
  }
  const char *p = *s, *e = p;
  while (*e && !is_sep(*e)) e++;
  g.p = p;
  g.len = (size_t)(e - p);
  g.numeric = g.len > 0;
  for (const char *q = p; q < e; q++)
    if (*q < '0' || *q > '9') g.numeric = 0;
  *s = *e ? e + 1 : NULL;
  return g;
}

/* Numbers of any length, without overflow: leading zeros off, then length, then digits. */
static int num_cmp(seg a, seg b) {
  while (a.len && *a.p == '0') a.p++, a.len--;
  while (b.len && *b.p == '0') b.p++, b.len--;
  if (a.len != b.len) return a.len < b.len ? -1 : 1;
  int c = a.len ? memcmp(a.p, b.p, a.len) : 0;
  return c < 0 ? -1 : c > 0;
}

static int str_cmp(seg a, seg b) {
  size_t n = a.len < b.len ? a.len : b.len;
  int c = n ? memcmp(a.p, b.p, n) : 0;
  if (c) return c < 0 ? -1 : 1;
  return a.len == b.len ? 0 : a.len < b.len ? -1 : 1;
}

int version_cmp(const char *a, const char *b) {
  if (!a || !b) return a ? 1 : b ? -1 : 0;
  while (a || b) {
    seg x = next_seg(&a), y = next_seg(&b);
    int c;
    if (x.numeric && y.numeric) c = num_cmp(x, y);
    else if (x.numeric != y.numeric) c = x.numeric ? 1 : -1;
    else c = str_cmp(x, y);
    if (c) return c;
  }
  return 0;
}

int release_cmp(const char *va, int has_code_a, int64_t code_a, const char *vb, int has_code_b,
                int64_t code_b) {
  if (has_code_a && has_code_b) return code_a < code_b ? -1 : code_a > code_b;
  return version_cmp(va, vb);
}
