/* log.c — key=value log lines on stderr. */
#include "log.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int g_level = HD_LOG_INFO;
static const char *const g_names[] = {"debug", "info", "warn", "error"};

void hd__log_set_level(int level) { g_level = level; }

int hd__log_level_from_name(const char *name) {
  for (int i = 0; i < 4; i++)
    if (strcmp(name, g_names[i]) == 0) return i;
  return -1;
}

int hd__log_enabled(int level) { return level >= g_level; }

void hd__logv(int level, const char *event, const char *fmt, va_list ap) {
  if (level < g_level) return;
  if (level < 0 || level > 3) level = HD_LOG_ERROR;
  char line[4096];
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  int n = snprintf(line, sizeof line, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s event=%s",
                   tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                   tm.tm_sec, ts.tv_nsec / 1000000, g_names[level], event);
  if (n < 0) return;
  if (fmt && *fmt && (size_t)n < sizeof line - 2) {
    line[n++] = ' ';
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    if (m > 0) n += m;
  }
  if ((size_t)n > sizeof line - 2) n = (int)sizeof line - 2;
  line[n++] = '\n';
  /* One write per line so lines from different threads never interleave. */
  ssize_t w = write(STDERR_FILENO, line, (size_t)n);
  (void)w;
}

void hd__log(int level, const char *event, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  hd__logv(level, event, fmt, ap);
  va_end(ap);
}

const char *hd__log_q(const char *s, char *buf, unsigned buflen) {
  unsigned o = 0;
  if (buflen < 3) {
    if (buflen) buf[0] = 0;
    return buf;
  }
  buf[o++] = '"';
  for (; s && *s && o + 5 < buflen; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') {
      buf[o++] = '\\';
      buf[o++] = (char)c;
    } else if (c < 0x20 || c == 0x7f) {
      o += (unsigned)snprintf(buf + o, buflen - o, "\\x%02x", c);
    } else {
      buf[o++] = (char)c;
    }
  }
  buf[o++] = '"';
  buf[o] = 0;
  return buf;
}
