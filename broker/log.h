/* log.h — one line per event on stderr: "ts=<RFC3339 ms> level=<l> event=<name> k=v ...".
 *
 * Values with spaces, quotes or '=' are the caller's to quote (use hd__log_q for strings that
 * come from outside). Thread-safe: each line is written with a single write(2).
 */
#ifndef HERALD_LOG_H
#define HERALD_LOG_H

#include <stdarg.h>

#include "herald/transport.h" /* enum hd_log_level */

void hd__log_set_level(int level);
/* "debug"/"info"/"warn"/"error" -> level, or -1. */
int hd__log_level_from_name(const char *name);
int hd__log_enabled(int level);
void hd__log(int level, const char *event, const char *fields_fmt, ...)
    __attribute__((format(printf, 3, 4)));
void hd__logv(int level, const char *event, const char *fields_fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
/* Quote a string for a log field: returns buf, always NUL-terminated; control characters,
 * quotes and backslashes are escaped and the value is wrapped in double quotes. */
const char *hd__log_q(const char *s, char *buf, unsigned buflen);

#define HD_LOG_ERRORF(ev, ...) hd__log(HD_LOG_ERROR, ev, __VA_ARGS__)
#define HD_LOG_WARNF(ev, ...) hd__log(HD_LOG_WARN, ev, __VA_ARGS__)
#define HD_LOG_INFOF(ev, ...) hd__log(HD_LOG_INFO, ev, __VA_ARGS__)
#define HD_LOG_DEBUGF(ev, ...) hd__log(HD_LOG_DEBUG, ev, __VA_ARGS__)

#endif
