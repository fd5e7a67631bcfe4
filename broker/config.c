/* config.c — heraldd's configuration: built-in defaults, the file parser, validation.
 *
 * The parser walks the text line by line, copies each line into a bounded buffer (the input
 * need not be NUL-terminated) and writes straight into the caller's hd_config, which starts out
 * as the built-in defaults. Known keys are described once, in the `keys` table, so a key's
 * type, range and check live in one place. On any error the config is freed and zeroed: a
 * caller can always hd__config_free() it and can never start on half a file.
 */
#include "config.h"

#include "codec.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "herald/error.h"

#define LINE_MAX_BYTES 4096
/* A config file is a few KiB; refusing huge inputs keeps a wrong path (a log, a device) from
 * being slurped into memory. */
#define FILE_MAX_BYTES (16u << 20)

#define KIB 1024ull
#define MIB (1024ull * KIB)
#define GIB (1024ull * MIB)
#define DAY_S 86400ll
/* Durations are turned into milliseconds and added to Unix times downstream; ten years keeps
 * every such sum far from int64 overflow while being longer than anyone needs. */
#define DURATION_MAX_S (3650 * DAY_S)

/* ------------------------------------------------------------------------------------------ */
/* Allocation. As everywhere in the broker, running out of memory aborts: error paths are for
 * real limits, not for malloc. */

static void *xrealloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  if (!q) abort();
  return q;
}

static char *xstrndup(const char *s, size_t n) {
  char *d = xrealloc(NULL, n + 1);
  memcpy(d, s, n);
  d[n] = 0;
  return d;
}

static char *xstrdup(const char *s) { return xstrndup(s, strlen(s)); }

static void list_free(char **v, size_t n) {
  for (size_t i = 0; i < n; i++) free(v[i]);
  free(v);
}

static char **list_of_one(const char *s) {
  char **v = xrealloc(NULL, sizeof *v);
  v[0] = xstrdup(s);
  return v;
}

static int list_is_star(char *const *v, size_t n) { return n == 1 && strcmp(v[0], "*") == 0; }

/* ------------------------------------------------------------------------------------------ */
/* Small lexical helpers. */

static int is_ws(int c) { return c == ' ' || c == '\t'; }
static int is_digit(int c) { return c >= '0' && c <= '9'; }
static int is_lower_alnum(int c) { return (c >= 'a' && c <= 'z') || is_digit(c); }
static int is_alnum(int c) { return is_lower_alnum(c) || (c >= 'A' && c <= 'Z'); }

static char *trim(char *s) {
  while (is_ws(*s)) s++;
  size_t n = strlen(s);
  while (n > 0 && is_ws(s[n - 1])) s[--n] = 0;
  return s;
}

/* ------------------------------------------------------------------------------------------ */
/* Value parsers, shared with the rest of the broker (e.g. for [transport] values). */

/* Reads a run of decimal digits without overflow; *s is left after the digits. */
static int read_u64(const char **s, uint64_t *out) {
  const char *p = *s;
  uint64_t v = 0;
  if (!is_digit(*p)) return HD_ECONFIG;
  for (; is_digit(*p); p++) {
    unsigned d = (unsigned)(*p - '0');
    if (v > (UINT64_MAX - d) / 10) return HD_ECONFIG;
    v = v * 10 + d;
  }
  *s = p;
  *out = v;
  return 0;
}

int hd__config_parse_size(const char *s, uint64_t *out) {
  /* Powers of 1024 whichever spelling: nobody sizing a buffer means 1000. Lower-case m and g
   * are left out on purpose so that "5m" can only ever be a duration. */
  static const struct {
    const char *suffix;
    uint64_t mult;
  } units[] = {
      {"", 1},        {"B", 1},         {"k", KIB},   {"K", KIB},   {"kB", KIB},
      {"KB", KIB},    {"KiB", KIB},     {"M", MIB},   {"MB", MIB},  {"MiB", MIB},
      {"G", GIB},     {"GB", GIB},      {"GiB", GIB},
  };
  uint64_t v;
  if (!s || read_u64(&s, &v) != 0) return HD_ECONFIG;
  while (is_ws(*s)) s++;
  for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
    if (strcmp(s, units[i].suffix) != 0) continue;
    if (v > UINT64_MAX / units[i].mult) return HD_ECONFIG;
    if (out) *out = v * units[i].mult;
    return 0;
  }
  return HD_ECONFIG;
}

typedef struct unit {
  const char *suffix;
  int64_t mult;
} unit;

/* A count followed by one of units' suffixes (compared whole, so "ms" is never "m"), scaled. */
static int parse_scaled(const char *s, const unit *units, size_t nunits, int64_t *out) {
  uint64_t v;
  if (!s || read_u64(&s, &v) != 0 || v > (uint64_t)INT64_MAX) return HD_ECONFIG;
  while (is_ws(*s)) s++;
  for (size_t i = 0; i < nunits; i++) {
    if (strcmp(s, units[i].suffix) != 0) continue;
    if ((int64_t)v > INT64_MAX / units[i].mult) return HD_ECONFIG;
    if (out) *out = (int64_t)v * units[i].mult;
    return 0;
  }
  return HD_ECONFIG;
}

int hd__config_parse_duration(const char *s, int64_t *out) {
  static const unit units[] = {{"", 1}, {"s", 1}, {"m", 60}, {"h", 3600}, {"d", DAY_S}};
  return parse_scaled(s, units, sizeof units / sizeof units[0], out);
}

int hd__config_parse_duration_ms(const char *s, int64_t *out) {
  static const unit units[] = {{"ms", 1},        {"", 1000},           {"s", 1000},
                               {"m", 60 * 1000}, {"h", 3600 * 1000}, {"d", DAY_S * 1000}};
  return parse_scaled(s, units, sizeof units / sizeof units[0], out);
}

int hd__config_parse_time(const char *s, int64_t *out) {
  int y, mo, d, h, mi, sec, n = 0;
  if (!s || !*s) return HD_ECONFIG;
  const char *p = s;
  while (is_digit(*p)) p++;
  if (!*p) { /* Unix seconds */
    int64_t v = 0;
    for (p = s; *p; p++) {
      if (v > (INT64_MAX - 9) / 10) return HD_ECONFIG;
      v = v * 10 + (*p - '0');
    }
    *out = v;
    return 0;
  }
  if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6 || n != 19 ||
      y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60 ||
      s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':')
    return HD_ECONFIG;
  for (int i = 0; i < 19; i++)
    if (i != 4 && i != 7 && i != 10 && i != 13 && i != 16 && !is_digit(s[i])) return HD_ECONFIG;
  p = s + 19;
  if (*p == '.') {
    p++;
    if (!is_digit(*p)) return HD_ECONFIG;
    while (is_digit(*p)) p++;
  }
  if (strcmp(p, "Z") != 0 && strcmp(p, "+00:00") != 0) return HD_ECONFIG;
  /* Days since 1970-01-01 for a proleptic Gregorian date (no timegm: it depends on TZ data). */
  static const int cum[] = {0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334};
  int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (d > mdays[mo - 1] + (mo == 2 && leap)) return HD_ECONFIG;
  int64_t yy = y - 1970;
  int64_t days = yy * 365 + (y - 1969) / 4 - (y - 1901) / 100 + (y - 1601) / 400 +
                 cum[mo - 1] + (mo > 2 && leap) + d - 1;
  *out = days * DAY_S + h * 3600 + mi * 60 + sec;
  return 0;
}

/* A plain decimal integer, optionally negative; the caller's range check says whether a
 * negative value is allowed, which gives a better message than "bad number". */
static int parse_int(const char *s, int64_t *out) {
  int neg = 0;
  uint64_t v;
  if (*s == '-') {
    neg = 1;
    s++;
  }
  if (read_u64(&s, &v) != 0 || *s) return HD_ECONFIG;
  if (neg) {
    if (v > (uint64_t)INT64_MAX + 1) return HD_ECONFIG;
    *out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
  } else {
    if (v > (uint64_t)INT64_MAX) return HD_ECONFIG;
    *out = (int64_t)v;
  }
  return 0;
}

int hd__config_parse_hostport(const char *s, char *host, size_t hostlen, int *port) {
  const char *h, *he, *ps;
  uint64_t pv;
  if (!s) return HD_ECONFIG;
  if (*s == '[') {
    h = s + 1;
    he = strchr(h, ']');
    if (!he || he[1] != ':') return HD_ECONFIG;
    ps = he + 2;
    /* Check the literal now, so a typo is reported with its line rather than at bind time. */
    char v6[64];
    size_t n = (size_t)(he - h);
    if (n == 0 || n >= sizeof v6) return HD_ECONFIG;
    memcpy(v6, h, n);
    v6[n] = 0;
    struct in6_addr a;
    if (inet_pton(AF_INET6, v6, &a) != 1) return HD_ECONFIG;
  } else {
    const char *colon = strrchr(s, ':');
    if (!colon) return HD_ECONFIG;
    h = s;
    he = colon;
    ps = colon + 1;
    if (he == h) return HD_ECONFIG;
    /* IPv4 literal or host name; a bare IPv6 address (a second colon) must be bracketed. */
    for (const char *q = h; q < he; q++)
      if (!is_alnum((unsigned char)*q) && *q != '.' && *q != '-' && *q != '_') return HD_ECONFIG;
    if (he - h > 253) return HD_ECONFIG;
  }
  /* Port 0 asks the kernel for a free port; tests use it. */
  if (read_u64(&ps, &pv) != 0 || *ps || pv > 65535) return HD_ECONFIG;
  size_t hl = (size_t)(he - h);
  if (host) {
    if (hl + 1 > hostlen) return HD_ECONFIG;
    memcpy(host, h, hl);
    host[hl] = 0;
  }
  if (port) *port = (int)pv;
  return 0;
}

int hd__config_valid_name(const char *name) {
  size_t n = 0;
  if (!name) return 0;
  for (; name[n]; n++)
    if (n >= 64 || !(is_lower_alnum((unsigned char)name[n]) || name[n] == '_' || name[n] == '-'))
      return 0;
  return n > 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Checks for single values and list items: NULL when fine, else what was expected. */

static const char *check_log_level(const char *v) {
  static const char *const levels[] = {"debug", "info", "warn", "error"};
  for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++)
    if (strcmp(v, levels[i]) == 0) return NULL;
  return "want debug, info, warn or error";
}

static const char *check_listen(const char *v) {
  return hd__config_parse_hostport(v, NULL, 0, NULL) == 0
             ? NULL
             : "want host:port or [ipv6]:port with port 0-65535";
}

static const char *check_endpoint(const char *v) {
  static const char *const schemes[] = {"tcp://", "ipc://", "inproc://"};
  for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++) {
    size_t n = strlen(schemes[i]);
    if (strncmp(v, schemes[i], n) != 0 || v[n] == 0) continue;
    for (const char *q = v + n; *q; q++)
      if (is_ws(*q)) return "no spaces allowed in an endpoint";
    return NULL;
  }
  return "want tcp://, ipc:// or inproc:// followed by an address";
}

static const char *check_publish_key(const char *v) {
  size_t n = 0;
  for (; v[n]; n++)
    if (!is_alnum((unsigned char)v[n]) && v[n] != '_' && v[n] != '-')
      return "want only A-Z a-z 0-9 _ -";
  return n >= 32 ? NULL : "want at least 32 characters";
}

static const char *check_time(const char *v) {
  int64_t t;
  return hd__config_parse_time(v, &t) == 0 ? NULL
                                           : "want Unix seconds or YYYY-MM-DDTHH:MM:SSZ (UTC)";
}

static const char *check_app_id(const char *v) {
  size_t n = 0;
  for (; v[n]; n++)
    if (n >= 64 || !(is_alnum((unsigned char)v[n]) || v[n] == '.' || v[n] == '_' || v[n] == '-'))
      return "want 1-64 of A-Z a-z 0-9 . _ -";
  return n > 0 ? NULL : "want 1-64 of A-Z a-z 0-9 . _ -";
}

int hd__config_valid_origin(const char *s) {
  if (!s) return 0;
  const char *p = s;
  if (!(*p >= 'a' && *p <= 'z')) return 0;
  while (is_lower_alnum((unsigned char)*p) || *p == '+' || *p == '.' || *p == '-') p++;
  if (strncmp(p, "://", 3) != 0) return 0;
  p += 3;
  const char *host = p;
  if (*p == '[') {
    p++;
    while (is_digit(*p) || (*p >= 'a' && *p <= 'f') || (*p >= 'A' && *p <= 'F') || *p == ':' ||
           *p == '.')
      p++;
    if (*p != ']' || p == host + 1) return 0;
    p++;
  } else {
    while (is_alnum((unsigned char)*p) || *p == '.' || *p == '-') p++;
    if (p == host) return 0;
  }
  if (*p == ':') {
    p++;
    uint64_t port = 0;
    const char *d = p;
    while (is_digit(*p) && p - d < 6) port = port * 10 + (uint64_t)(*p++ - '0');
    if (p == d || port < 1 || port > 65535) return 0;
  }
  return *p == 0 && p - s <= 300;
}

static const char *check_origin(const char *v) {
  return hd__config_valid_origin(v) ? NULL
                                    : "want scheme://host[:port] with no path, or * for any";
}

static const char *check_cidr(const char *v) {
  unsigned char a[16];
  int fam, bits;
  return hd__config_parse_cidr(v, a, &fam, &bits) == 0
             ? NULL
             : "want an IPv4 or IPv6 address, optionally with /prefix bits";
}

int hd__config_parse_cidr(const char *s, unsigned char addr[16], int *family, int *bits) {
  char buf[64];
  const char *slash = strchr(s, '/');
  size_t n = slash ? (size_t)(slash - s) : strlen(s);
  if (n == 0 || n >= sizeof buf) return HD_ECONFIG;
  memcpy(buf, s, n);
  buf[n] = 0;
  memset(addr, 0, 16);
  if (inet_pton(AF_INET, buf, addr) == 1) *family = 4;
  else if (inet_pton(AF_INET6, buf, addr) == 1) *family = 6;
  else return HD_ECONFIG;
  int max = *family == 4 ? 32 : 128;
  *bits = max;
  if (slash) {
    const char *d = slash + 1;
    uint64_t v;
    if (read_u64(&d, &v) != 0 || *d || v > (uint64_t)max) return HD_ECONFIG;
    *bits = (int)v;
  }
  return 0;
}

/* [release] public_url: an absolute http(s) URL, no query or fragment (paths are appended). */
static const char *check_public_url(const char *v) {
  const char *rest = strncmp(v, "https://", 8) == 0 ? v + 8
                     : strncmp(v, "http://", 7) == 0 ? v + 7
                                                      : NULL;
  if (!rest || !*rest || *rest == '/') return "want http://host[:port][/path] or https://...";
  for (const char *p = v; *p; p++)
    if ((unsigned char)*p <= 0x20 || *p == '?' || *p == '#' || (unsigned char)*p >= 0x7f)
      return "no spaces, query or fragment in public_url";
  return NULL;
}

static const char *check_plugin_name(const char *v) {
  return hd__config_valid_name(v) ? NULL : "want 1-64 of a-z 0-9 _ -";
}

/* ------------------------------------------------------------------------------------------ */
/* The key table. */

enum sect {
  S_TOP, S_HTTP, S_ZMQ, S_STORE, S_PLUGINS, S_TENANT, S_TRANSPORT, S_ADMIN, S_DOWNLOAD,
  S_RELEASE, S__COUNT
};
static const char *const sect_names[S__COUNT] = {"",        "http",   "zmq",       "store",
                                                 "plugins", "tenant", "transport", "admin",
                                                 "download", "release"};

enum vtype {
  V_STR,     /* non-empty string */
  V_STR_OPT, /* string; empty means NULL (use the built-in behaviour) */
  V_SIZE,    /* uint64_t bytes */
  V_DURATION, /* int64_t seconds */
  V_DURATION_MS, /* int64_t milliseconds ("10ms", or any V_DURATION) */
  V_INT,     /* int64_t */
  V_LIST,    /* char ** plus size_t count; empty value = empty list */
  V_BOOL     /* int: yes/no, true/false, on/off, 1/0 */
};

#define LIST_STAR 1u     /* a lone "*" is allowed */
#define LIST_NONEMPTY 2u /* an empty list is an error */

typedef const char *(*check_fn)(const char *v);

typedef struct keydef {
  enum sect sect;
  const char *name;
  enum vtype type;
  size_t off;       /* into hd_config, or into hd_tenant_conf for S_TENANT */
  size_t count_off; /* V_LIST: where the item count goes */
  int64_t min, max; /* V_INT, V_DURATION */
  uint64_t umin, umax; /* V_SIZE */
  check_fn check;   /* V_STR, V_STR_OPT, and each item of a V_LIST */
  unsigned flags;
} keydef;

#define CF(m) offsetof(hd_config, m)
#define TF(m) offsetof(hd_tenant_conf, m)

static const keydef keys[] = {
    {.sect = S_TOP, .name = "data_dir", .type = V_STR, .off = CF(data_dir)},
    {.sect = S_TOP, .name = "log_level", .type = V_STR, .off = CF(log_level),
     .check = check_log_level},

    {.sect = S_HTTP, .name = "listen", .type = V_STR, .off = CF(http.listen),
     .check = check_listen},
    {.sect = S_HTTP, .name = "max_body", .type = V_SIZE, .off = CF(http.max_body),
     .umin = KIB, .umax = GIB},
    {.sect = S_HTTP, .name = "max_header", .type = V_SIZE, .off = CF(http.max_header),
     .umin = KIB, .umax = GIB},
    {.sect = S_HTTP, .name = "idle_timeout", .type = V_DURATION, .off = CF(http.idle_timeout_s),
     .min = 1, .max = DURATION_MAX_S},
    {.sect = S_HTTP, .name = "max_connections", .type = V_INT,
     .off = CF(http.max_connections), .min = 1, .max = 10000000},
    {.sect = S_HTTP, .name = "max_connections_per_address", .type = V_INT,
     .off = CF(http.max_connections_per_address), .min = 0, .max = 10000000},
    {.sect = S_HTTP, .name = "tls_cert", .type = V_STR_OPT, .off = CF(http.tls_cert)},
    {.sect = S_HTTP, .name = "tls_key", .type = V_STR_OPT, .off = CF(http.tls_key)},
    {.sect = S_HTTP, .name = "tls_ca", .type = V_STR_OPT, .off = CF(http.tls_ca)},
    {.sect = S_HTTP, .name = "allow_plaintext_public", .type = V_BOOL,
     .off = CF(http.allow_plaintext_public)},

    {.sect = S_ZMQ, .name = "ingress", .type = V_STR, .off = CF(zmq.ingress),
     .check = check_endpoint},
    {.sect = S_ZMQ, .name = "events", .type = V_STR, .off = CF(zmq.events),
     .check = check_endpoint},
    {.sect = S_ZMQ, .name = "max_frame", .type = V_SIZE, .off = CF(zmq.max_frame),
     .umin = KIB, .umax = GIB},

    {.sect = S_STORE, .name = "map_size", .type = V_SIZE, .off = CF(store.map_size),
     .umin = MIB, .umax = UINT64_MAX},
    {.sect = S_STORE, .name = "default_ttl", .type = V_DURATION,
     .off = CF(store.default_ttl_s), .min = 1, .max = DURATION_MAX_S},
    {.sect = S_STORE, .name = "max_ttl", .type = V_DURATION, .off = CF(store.max_ttl_s),
     .min = 1, .max = DURATION_MAX_S},
    {.sect = S_STORE, .name = "max_batch", .type = V_INT, .off = CF(store.max_batch), .min = 1,
     .max = 1000000},
    {.sect = S_STORE, .name = "ack_delay", .type = V_DURATION_MS, .off = CF(store.ack_delay_ms),
     .min = 0, .max = 1000},
    {.sect = S_STORE, .name = "sweep_interval", .type = V_DURATION,
     .off = CF(store.sweep_interval_s), .min = 1, .max = DURATION_MAX_S},

    {.sect = S_PLUGINS, .name = "dir", .type = V_STR_OPT, .off = CF(plugins.dir)},
    {.sect = S_PLUGINS, .name = "load", .type = V_LIST, .off = CF(plugins.load),
     .count_off = CF(plugins.nload), .check = check_plugin_name},

    {.sect = S_TENANT, .name = "publish_key", .type = V_STR_OPT, .off = TF(publish_key),
     .check = check_publish_key},
    {.sect = S_TENANT, .name = "previous_publish_key", .type = V_STR_OPT,
     .off = TF(previous_publish_key), .check = check_publish_key},
    {.sect = S_TENANT, .name = "previous_key_until", .type = V_STR_OPT,
     .off = TF(previous_key_until), .check = check_time},
    {.sect = S_TENANT, .name = "device_token_ttl", .type = V_DURATION,
     .off = TF(device_token_ttl_s), .min = 0, .max = DURATION_MAX_S},
    {.sect = S_TENANT, .name = "apps", .type = V_LIST, .off = TF(apps), .count_off = TF(napps),
     .check = check_app_id, .flags = LIST_STAR | LIST_NONEMPTY},
    {.sect = S_TENANT, .name = "self_register", .type = V_LIST, .off = TF(self_register),
     .count_off = TF(nself_register), .check = check_app_id, .flags = LIST_STAR},
    {.sect = S_TENANT, .name = "self_register_per_min", .type = V_INT,
     .off = TF(self_register_per_min), .min = 0, .max = INT64_MAX},
    {.sect = S_TENANT, .name = "allowed_origins", .type = V_LIST, .off = TF(allowed_origins),
     .count_off = TF(nallowed_origins), .check = check_origin, .flags = LIST_STAR},
    {.sect = S_TENANT, .name = "max_publish_rate", .type = V_INT, .off = TF(max_publish_rate),
     .min = 0, .max = 10000000},
    {.sect = S_TENANT, .name = "publish_burst", .type = V_INT, .off = TF(publish_burst),
     .min = 0, .max = 10000000},

    {.sect = S_ADMIN, .name = "key", .type = V_STR_OPT, .off = CF(admin.key),
     .check = check_publish_key},
    {.sect = S_ADMIN, .name = "allow_from", .type = V_LIST, .off = CF(admin.allow_from),
     .count_off = CF(admin.nallow_from), .check = check_cidr, .flags = LIST_STAR},
    {.sect = S_ADMIN, .name = "key_overlap", .type = V_DURATION, .off = CF(admin.key_overlap_s),
     .min = 0, .max = DURATION_MAX_S},

    {.sect = S_DOWNLOAD, .name = "max_concurrent_downloads", .type = V_INT,
     .off = CF(download.max_concurrent), .min = 1, .max = 1000000},
    {.sect = S_DOWNLOAD, .name = "download_send_timeout", .type = V_DURATION,
     .off = CF(download.send_timeout_s), .min = 1, .max = DAY_S},

    {.sect = S_RELEASE, .name = "public_url", .type = V_STR_OPT, .off = CF(release.public_url),
     .check = check_public_url},
    {.sect = S_RELEASE, .name = "max_package", .type = V_SIZE, .off = CF(release.max_package),
     .umin = KIB, .umax = (uint64_t)64 * GIB},
    {.sect = S_RELEASE, .name = "fanout_batch", .type = V_INT, .off = CF(release.fanout_batch),
     .min = 1, .max = 100000},
    {.sect = S_TENANT, .name = "push_policy", .type = V_STR_OPT, .off = TF(push_policy)},
};

#define NKEYS (sizeof keys / sizeof keys[0])

/* ------------------------------------------------------------------------------------------ */
/* Defaults. */

static void tenant_defaults(hd_tenant_conf *t, const char *name, int line) {
  memset(t, 0, sizeof *t);
  t->name = xstrdup(name);
  t->publish_key = NULL;
  t->apps = list_of_one("*");
  t->napps = 1;
  t->self_register = list_of_one("*");
  t->nself_register = 1;
  t->self_register_per_min = 60;
  t->line = line;
}

static void tenant_free(hd_tenant_conf *t) {
  free(t->name);
  free(t->publish_key);
  free(t->previous_publish_key);
  free(t->previous_key_until);
  list_free(t->apps, t->napps);
  list_free(t->self_register, t->nself_register);
  list_free(t->allowed_origins, t->nallowed_origins);
  free(t->push_policy);
  for (size_t i = 0; i < t->napp_policies; i++) {
    free(t->app_policies[i].key);
    free(t->app_policies[i].value);
  }
  free(t->app_policies);
  memset(t, 0, sizeof *t);
}

static void config_defaults(hd_config *c, const char *source) {
  memset(c, 0, sizeof *c);
  c->source = xstrdup(source);
  c->data_dir = xstrdup("./var/herald");
  c->log_level = xstrdup("info");

  c->http.listen = xstrdup("127.0.0.1:8470");
  c->http.max_body = 1 * MIB;
  c->http.max_header = 16 * KIB;
  c->http.idle_timeout_s = 60;
  c->http.max_connections = 10000;
  c->http.max_connections_per_address = 1000;

  c->zmq.ingress = xstrdup("tcp://127.0.0.1:8471");
  c->zmq.events = xstrdup("tcp://127.0.0.1:8472");
  c->zmq.max_frame = 1 * MIB;

  c->store.map_size = 1 * GIB;
  c->store.default_ttl_s = DAY_S;
  c->store.max_ttl_s = 30 * DAY_S;
  c->store.max_batch = 4096;
  c->store.ack_delay_ms = 2;
  c->store.sweep_interval_s = 10;

  c->plugins.dir = NULL; /* the daemon falls back to <exe dir>/transports */
  c->plugins.load = list_of_one("longpoll");
  c->plugins.nload = 1;

  c->admin.key_overlap_s = DAY_S;

  c->download.max_concurrent = 4096;
  c->download.send_timeout_s = 60;

  c->release.public_url = NULL; /* the broker uses http(s)://<listen address and bound port> */
  c->release.max_package = 256 * MIB;
  c->release.fanout_batch = 256;

  c->tenants = xrealloc(NULL, sizeof *c->tenants);
  c->ntenants = 1;
  tenant_defaults(&c->tenants[0], "default", 0);
}

static void section_free(hd_conf_section *s) {
  for (size_t k = 0; k < s->nkv; k++) {
    free(s->kv[k].key);
    free(s->kv[k].value);
  }
  free(s->kv);
  free(s->name);
  free(s->kind);
}

void hd__config_free(hd_config *c) {
  if (!c) return;
  free(c->source);
  free(c->data_dir);
  free(c->log_level);
  free(c->http.listen);
  free(c->http.tls_cert);
  free(c->http.tls_key);
  free(c->http.tls_ca);
  free(c->zmq.ingress);
  free(c->zmq.events);
  free(c->plugins.dir);
  free(c->release.public_url);
  list_free(c->plugins.load, c->plugins.nload);
  free(c->admin.key);
  list_free(c->admin.allow_from, c->admin.nallow_from);
  for (size_t i = 0; i < c->ntenants; i++) tenant_free(&c->tenants[i]);
  free(c->tenants);
  for (size_t i = 0; i < c->ntransports; i++) section_free(&c->transports[i]);
  free(c->transports);
  for (size_t i = 0; i < c->nextra; i++) section_free(&c->extra[i]);
  free(c->extra);
  memset(c, 0, sizeof *c);
}

/* ------------------------------------------------------------------------------------------ */
/* The parser. */

typedef struct parser {
  const char *src;
  char *err;
  size_t errlen;
  hd_config *c;
  enum sect sect;
  size_t cur;                 /* index of the current tenant or transport */
  int file_tenants;           /* the file declared a tenant: the built-in one is gone */
  int sect_seen[S__COUNT];    /* line of each fixed section's header, 0 = not yet */
  int key_line[NKEYS];        /* line each key was set on, 0 = not set (tenant keys: per tenant) */
} parser;

static int fail(parser *p, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(parser *p, int line, const char *fmt, ...) {
  if (!p->err || p->errlen == 0) return HD_ECONFIG;
  int n = line > 0 ? snprintf(p->err, p->errlen, "%s:%d: ", p->src, line)
                   : snprintf(p->err, p->errlen, "%s: ", p->src);
  if (n >= 0 && (size_t)n < p->errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
    va_end(ap);
  }
  return HD_ECONFIG;
}

/* "[http]", "[tenant acme]" — for messages. */
static const char *sect_label(const parser *p, char *buf, size_t len) {
  if (p->sect == S_TOP)
    snprintf(buf, len, "at top level");
  else if (p->sect == S_TENANT)
    snprintf(buf, len, "in [tenant %s]", p->c->tenants[p->cur].name);
  else if (p->sect == S_TRANSPORT)
    snprintf(buf, len, "in [transport %s]", p->c->transports[p->cur].name);
  else if (p->sect == S__COUNT)
    snprintf(buf, len, "in [%s %s]", p->c->extra[p->cur].kind, p->c->extra[p->cur].name);
  else
    snprintf(buf, len, "in [%s]", sect_names[p->sect]);
  return buf;
}

static const char *fmt_size(uint64_t v, char *buf, size_t len) {
  if (v >= GIB && v % GIB == 0)
    snprintf(buf, len, "%lluGiB", (unsigned long long)(v / GIB));
  else if (v >= MIB && v % MIB == 0)
    snprintf(buf, len, "%lluMiB", (unsigned long long)(v / MIB));
  else if (v >= KIB && v % KIB == 0)
    snprintf(buf, len, "%lluKiB", (unsigned long long)(v / KIB));
  else
    snprintf(buf, len, "%llu", (unsigned long long)v);
  return buf;
}

static int range_error(parser *p, int line, const keydef *k) {
  if (k->max == INT64_MAX)
    return fail(p, line, "%s must be at least %lld", k->name, (long long)k->min);
  return fail(p, line, "%s must be between %lld and %lld%s", k->name, (long long)k->min,
              (long long)k->max,
              k->type == V_DURATION ? " seconds" : k->type == V_DURATION_MS ? " ms" : "");
}

/* Splits a comma-separated list, validating each item. */
static int parse_list(parser *p, int line, const keydef *k, char *v, char ***out, size_t *nout) {
  char **items = NULL;
  size_t n = 0;
  int rc = 0;
  if (*v) {
    for (char *s = v;;) {
      char *comma = strchr(s, ',');
      if (comma) *comma = 0;
      char *item = trim(s);
      const char *why;
      if (!*item) {
        rc = fail(p, line, "empty item in %s", k->name);
        goto out;
      }
      if (strcmp(item, "*") == 0) {
        if (!(k->flags & LIST_STAR)) {
          rc = fail(p, line, "'*' is not allowed in %s", k->name);
          goto out;
        }
      } else if (k->check && (why = k->check(item)) != NULL) {
        rc = fail(p, line, "bad item '%s' in %s (%s)", item, k->name, why);
        goto out;
      }
      for (size_t i = 0; i < n; i++) {
        if (strcmp(items[i], item) == 0) {
          rc = fail(p, line, "duplicate item '%s' in %s", item, k->name);
          goto out;
        }
      }
      items = xrealloc(items, (n + 1) * sizeof *items);
      items[n++] = xstrdup(item);
      if (!comma) break;
      s = comma + 1;
    }
  }
  if (n == 0 && (k->flags & LIST_NONEMPTY)) {
    rc = fail(p, line, "%s must not be empty%s", k->name,
              (k->flags & LIST_STAR) ? " (use * for any)" : "");
    goto out;
  }
  if (n > 1) {
    for (size_t i = 0; i < n; i++) {
      if (strcmp(items[i], "*") == 0) {
        rc = fail(p, line, "'*' must stand alone in %s", k->name);
        goto out;
      }
    }
  }
  *out = items;
  *nout = n;
  items = NULL;
  n = 0;
out:
  list_free(items, n);
  return rc;
}

/* Stores the value of a known key. v is the unquoted value, which may be modified. */
static int apply(parser *p, int line, const keydef *k, char *v) {
  char *base = k->sect == S_TENANT ? (char *)&p->c->tenants[p->cur] : (char *)p->c;
  void *field = base + k->off;
  const char *why;
  char b1[32], b2[32];

  switch (k->type) {
  case V_STR:
  case V_STR_OPT: {
    if (!*v && k->type == V_STR) return fail(p, line, "%s must not be empty", k->name);
    if (*v && k->check && (why = k->check(v)) != NULL)
      return fail(p, line, "bad value '%s' for %s (%s)", v, k->name, why);
    char **s = field;
    free(*s);
    *s = *v ? xstrdup(v) : NULL;
    return 0;
  }
  case V_SIZE: {
    uint64_t u;
    if (hd__config_parse_size(v, &u) != 0) return fail(p, line, "bad size '%s' for %s", v, k->name);
    if (u < k->umin || u > k->umax) {
      if (k->umax == UINT64_MAX)
        return fail(p, line, "%s must be at least %s", k->name, fmt_size(k->umin, b1, sizeof b1));
      return fail(p, line, "%s must be between %s and %s", k->name,
                  fmt_size(k->umin, b1, sizeof b1), fmt_size(k->umax, b2, sizeof b2));
    }
    *(uint64_t *)field = u;
    return 0;
  }
  case V_DURATION:
  case V_DURATION_MS:
  case V_INT: {
    int64_t i;
    int rc = k->type == V_DURATION      ? hd__config_parse_duration(v, &i)
             : k->type == V_DURATION_MS ? hd__config_parse_duration_ms(v, &i)
                                        : parse_int(v, &i);
    if (rc != 0)
      return fail(p, line, "bad %s '%s' for %s", k->type == V_INT ? "number" : "duration", v,
                  k->name);
    if (i < k->min || i > k->max) return range_error(p, line, k);
    *(int64_t *)field = i;
    return 0;
  }
  case V_BOOL: {
    static const char *const yes[] = {"yes", "true", "on", "1"}, *const no[] = {"no", "false",
                                                                                   "off", "0"};
    for (size_t i = 0; i < 4; i++) {
      if (strcasecmp(v, yes[i]) == 0 || strcasecmp(v, no[i]) == 0) {
        *(int *)field = strcasecmp(v, yes[i]) == 0;
        return 0;
      }
    }
    return fail(p, line, "bad value '%s' for %s (want yes or no)", v, k->name);
  }
  case V_LIST: {
    char **items = NULL;
    size_t n = 0;
    int rc = parse_list(p, line, k, v, &items, &n);
    if (rc != 0) return rc;
    char ***list = field;
    size_t *count = (size_t *)(base + k->count_off);
    list_free(*list, *count);
    *list = items;
    *count = n;
    return 0;
  }
  }
  return fail(p, line, "internal: bad key type for %s", k->name);
}

/* Checks that need the whole [tenant] section: self_register against apps. */
static int tenant_finish(parser *p) {
  const hd_tenant_conf *t = &p->c->tenants[p->cur];
  if (!t->previous_publish_key != !t->previous_key_until)
    return fail(p, t->line, "tenant '%s': previous_publish_key and previous_key_until go together",
                t->name);
  if (t->previous_publish_key && t->publish_key &&
      strcmp(t->previous_publish_key, t->publish_key) == 0)
    return fail(p, t->line, "tenant '%s': previous_publish_key equals publish_key", t->name);
  if (list_is_star(t->apps, t->napps)) return 0;
  int line = t->line;
  for (size_t k = 0; k < NKEYS; k++)
    if (keys[k].sect == S_TENANT && strcmp(keys[k].name, "self_register") == 0 && p->key_line[k])
      line = p->key_line[k];
  for (size_t i = 0; i < t->nself_register; i++) {
    const char *app = t->self_register[i];
    if (strcmp(app, "*") == 0) continue;
    size_t j = 0;
    while (j < t->napps && strcmp(t->apps[j], app) != 0) j++;
    if (j == t->napps)
      return fail(p, line, "self_register app '%s' is not in apps of tenant '%s'", app, t->name);
  }
  return 0;
}

static int section_finish(parser *p) { return p->sect == S_TENANT ? tenant_finish(p) : 0; }

static int open_tenant(parser *p, int line, const char *name) {
  hd_config *c = p->c;
  if (!p->file_tenants) {
    /* A file that names tenants says exactly which exist; the built-in one is not merged in. */
    for (size_t i = 0; i < c->ntenants; i++) tenant_free(&c->tenants[i]);
    c->ntenants = 0;
    p->file_tenants = 1;
  }
  for (size_t i = 0; i < c->ntenants; i++)
    if (strcmp(c->tenants[i].name, name) == 0)
      return fail(p, line, "duplicate [tenant %s] (first at line %d)", name, c->tenants[i].line);
  c->tenants = xrealloc(c->tenants, (c->ntenants + 1) * sizeof *c->tenants);
  tenant_defaults(&c->tenants[c->ntenants], name, line);
  /* A tenant the operator declares is closed to keyless registration unless it says which
   * apps are open: only the built-in demo tenant starts open. */
  list_free(c->tenants[c->ntenants].self_register, c->tenants[c->ntenants].nself_register);
  c->tenants[c->ntenants].self_register = NULL;
  c->tenants[c->ntenants].nself_register = 0;
  p->cur = c->ntenants++;
  for (size_t k = 0; k < NKEYS; k++)
    if (keys[k].sect == S_TENANT) p->key_line[k] = 0;
  return 0;
}

static int open_transport(parser *p, int line, const char *name) {
  hd_config *c = p->c;
  for (size_t i = 0; i < c->ntransports; i++)
    if (strcmp(c->transports[i].name, name) == 0)
      return fail(p, line, "duplicate [transport %s] (first at line %d)", name,
                  c->transports[i].line);
  c->transports = xrealloc(c->transports, (c->ntransports + 1) * sizeof *c->transports);
  hd_conf_section *s = &c->transports[c->ntransports];
  memset(s, 0, sizeof *s);
  s->name = xstrdup(name);
  s->line = line;
  p->cur = c->ntransports++;
  return 0;
}

/* [KIND NAME] of a kind the broker does not know: kept raw for the transport that declares it.
 * p->sect is S__COUNT while inside one. */
static int open_extra(parser *p, int line, const char *kind, const char *name) {
  hd_config *c = p->c;
  for (size_t i = 0; i < c->nextra; i++)
    if (strcmp(c->extra[i].kind, kind) == 0 && strcmp(c->extra[i].name, name) == 0)
      return fail(p, line, "duplicate [%s %s] (first at line %d)", kind, name, c->extra[i].line);
  c->extra = xrealloc(c->extra, (c->nextra + 1) * sizeof *c->extra);
  hd_conf_section *s = &c->extra[c->nextra];
  memset(s, 0, sizeof *s);
  s->kind = xstrdup(kind);
  s->name = xstrdup(name);
  s->line = line;
  p->cur = c->nextra++;
  return 0;
}

/* `s` points at '['. */
static int parse_section(parser *p, int line, char *s) {
  char *close = strchr(s, ']');
  if (!close) return fail(p, line, "missing ']' in section header");
  char *rest = close + 1;
  while (is_ws(*rest)) rest++;
  if (*rest && *rest != '#') return fail(p, line, "unexpected text after section header");
  *close = 0;
  char *kind = trim(s + 1);
  char *name = kind;
  while (*name && !is_ws(*name)) name++;
  if (*name) *name++ = 0;
  name = trim(name);

  int rc = section_finish(p);
  if (rc != 0) return rc;

  enum sect sect = S__COUNT;
  for (int i = S_HTTP; i < S__COUNT; i++)
    if (strcmp(kind, sect_names[i]) == 0) sect = (enum sect)i;
  if (sect == S__COUNT) {
    /* Only [kind name] can be a transport's section; a bare unknown [kind] is a typo. */
    if (!*name || !hd__config_valid_name(kind))
      return fail(p, line, "unknown section [%s]", kind);
    if (!hd__config_valid_name(name))
      return fail(p, line, "bad %s name '%s' (want 1-64 of a-z 0-9 _ -)", kind, name);
    if ((rc = open_extra(p, line, kind, name))) return rc;
    p->sect = S__COUNT;
    return 0;
  }

  if (sect == S_TENANT || sect == S_TRANSPORT) {
    if (!*name) return fail(p, line, "section [%s] needs a name: [%s NAME]", kind, kind);
    if (!hd__config_valid_name(name))
      return fail(p, line, "bad %s name '%s' (want 1-64 of a-z 0-9 _ -)", kind, name);
    rc = sect == S_TENANT ? open_tenant(p, line, name) : open_transport(p, line, name);
    if (rc != 0) return rc;
  } else {
    if (*name) return fail(p, line, "section [%s] takes no name", kind);
    if (p->sect_seen[sect])
      return fail(p, line, "duplicate section [%s] (first at line %d)", kind, p->sect_seen[sect]);
    p->sect_seen[sect] = line;
  }
  p->sect = sect;
  return 0;
}

/* Unquotes or uncomments the value in place. Returns the value or NULL after fail(). */
static char *parse_value(parser *p, int line, char *v, int *rc) {
  while (is_ws(*v)) v++;
  if (*v == '"') {
    char *o = v, *i = v + 1;
    for (;; i++) {
      if (*i == 0) {
        *rc = fail(p, line, "unterminated quoted value");
        return NULL;
      }
      if (*i == '"') break;
      if (*i == '\\') {
        i++;
        if (*i != '"' && *i != '\\') {
          *rc = *i ? fail(p, line, "bad escape '\\%c' in quoted value (only \\\" and \\\\)", *i)
                   : fail(p, line, "unterminated quoted value");
          return NULL;
        }
      }
      *o++ = *i;
    }
    char *rest = i + 1;
    while (is_ws(*rest)) rest++;
    if (*rest && *rest != '#') {
      *rc = fail(p, line, "unexpected text after quoted value");
      return NULL;
    }
    *o = 0;
    return v;
  }
  /* A '#' that begins a word starts a comment; one inside a word (a#b) is kept. */
  for (char *q = v; *q; q++) {
    if (*q == '#' && (q == v || is_ws(q[-1]))) {
      *q = 0;
      break;
    }
  }
  return trim(v);
}

static int parse_kv(parser *p, int line, char *s) {
  char *eq = strchr(s, '=');
  if (!eq) return fail(p, line, "expected 'key = value' or '[section]'");
  *eq = 0;
  char *key = trim(s);
  if (!*key) return fail(p, line, "missing key before '='");
  for (char *q = key; *q; q++)
    if (!is_alnum((unsigned char)*q) && *q != '_' && *q != '-' && *q != '.')
      return fail(p, line, "bad key '%s'", key);
  int rc = 0;
  char *v = parse_value(p, line, eq + 1, &rc);
  if (!v) return rc;
  char where[96];

  if (p->sect == S_TENANT && strncmp(key, "push_policy.", 12) == 0) {
    hd_tenant_conf *tc = &p->c->tenants[p->cur];
    const char *app = key + 12;
    if (!*app || strlen(app) > 128)
      return fail(p, line, "bad app id in '%s' %s", key, sect_label(p, where, sizeof where));
    for (size_t i = 0; i < tc->napp_policies; i++)
      if (strcmp(tc->app_policies[i].key, app) == 0)
        return fail(p, line, "duplicate key '%s' %s (first at line %d)", key,
                    sect_label(p, where, sizeof where), tc->app_policies[i].line);
    tc->app_policies = xrealloc(tc->app_policies, (tc->napp_policies + 1) * sizeof *tc->app_policies);
    tc->app_policies[tc->napp_policies].key = xstrdup(app);
    tc->app_policies[tc->napp_policies].value = xstrdup(v);
    tc->app_policies[tc->napp_policies].line = line;
    tc->napp_policies++;
    return 0;
  }

  if (p->sect == S_TRANSPORT || p->sect == S__COUNT) {
    hd_conf_section *t = p->sect == S_TRANSPORT ? &p->c->transports[p->cur] : &p->c->extra[p->cur];
    for (size_t i = 0; i < t->nkv; i++)
      if (strcmp(t->kv[i].key, key) == 0)
        return fail(p, line, "duplicate key '%s' %s (first at line %d)", key,
                    sect_label(p, where, sizeof where), t->kv[i].line);
    t->kv = xrealloc(t->kv, (t->nkv + 1) * sizeof *t->kv);
    t->kv[t->nkv].key = xstrdup(key);
    t->kv[t->nkv].value = xstrdup(v);
    t->kv[t->nkv].line = line;
    t->nkv++;
    return 0;
  }

  for (size_t k = 0; k < NKEYS; k++) {
    if (keys[k].sect != p->sect || strcmp(keys[k].name, key) != 0) continue;
    if (p->key_line[k])
      return fail(p, line, "duplicate key '%s' %s (first at line %d)", key,
                  sect_label(p, where, sizeof where), p->key_line[k]);
    rc = apply(p, line, &keys[k], v);
    if (rc == 0) p->key_line[k] = line;
    return rc;
  }
  return fail(p, line, "unknown key '%s' %s", key, sect_label(p, where, sizeof where));
}

static int parse_line(parser *p, int line, char *s) {
  while (is_ws(*s)) s++;
  if (*s == 0 || *s == '#') return 0;
  if (*s == '[') return parse_section(p, line, s);
  return parse_kv(p, line, s);
}

static size_t key_index(const char *name) {
  for (size_t k = 0; k < NKEYS; k++)
    if (keys[k].sect != S_TENANT && strcmp(keys[k].name, name) == 0) return k;
  abort(); /* a name missing from the table is a bug in this file */
}

/* Checks across keys, once the whole text is read. */
static int config_finish(parser *p) {
  const hd_config *c = p->c;
  if (c->store.max_ttl_s < c->store.default_ttl_s) {
    int l1 = p->key_line[key_index("default_ttl")], l2 = p->key_line[key_index("max_ttl")];
    return fail(p, l1 > l2 ? l1 : l2, "max_ttl (%llds) is shorter than default_ttl (%llds)",
                (long long)c->store.max_ttl_s, (long long)c->store.default_ttl_s);
  }
  int lc = p->key_line[key_index("tls_cert")], lk = p->key_line[key_index("tls_key")];
  if (!c->http.tls_cert != !c->http.tls_key)
    return fail(p, lc > lk ? lc : lk, "tls_cert and tls_key go together in [http]");
  if (c->http.tls_ca && !c->http.tls_cert)
    return fail(p, p->key_line[key_index("tls_ca")], "tls_ca needs tls_cert and tls_key in [http]");
  char host[256];
  if (!c->http.tls_cert && !c->http.allow_plaintext_public &&
      (hd__config_parse_hostport(c->http.listen, host, sizeof host, NULL) != 0 ||
       !hd__config_is_loopback(host)))
    return fail(p, p->key_line[key_index("listen")],
                "[http] listen %s is not a loopback address and has no TLS: set tls_cert and "
                "tls_key, or allow_plaintext_public = yes",
                c->http.listen);
  return 0;
}

int hd__config_is_loopback(const char *host) {
  struct in_addr a4;
  struct in6_addr a6;
  if (!host) return 0;
  if (inet_pton(AF_INET, host, &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
  if (inet_pton(AF_INET6, host, &a6) == 1) return IN6_IS_ADDR_LOOPBACK(&a6);
  return 0;
}

int hd__config_parse(const char *text, size_t len, const char *source, hd_config *out,
                     char *err, size_t errlen) {
  parser p;
  char buf[LINE_MAX_BYTES + 1];
  int rc = 0, line = 0;
  size_t pos = 0;

  if (!source) source = "<input>";
  if (!text) len = 0;
  if (err && errlen) err[0] = 0;
  config_defaults(out, source);
  memset(&p, 0, sizeof p);
  p.src = source;
  p.err = err;
  p.errlen = errlen;
  p.c = out;
  p.sect = S_TOP;

  /* Editors on some systems still write a byte-order mark. */
  if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0) pos = 3;

  while (pos < len) {
    const char *start = text + pos;
    const char *nl = memchr(start, '\n', len - pos);
    size_t n = nl ? (size_t)(nl - start) : len - pos;
    pos += n + (nl ? 1 : 0);
    line++;
    if (n > 0 && start[n - 1] == '\r') n--;
    if (n > LINE_MAX_BYTES) {
      rc = fail(&p, line, "line is longer than %d bytes", LINE_MAX_BYTES);
      goto out;
    }
    for (size_t i = 0; i < n; i++) {
      unsigned char ch = (unsigned char)start[i];
      if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
        rc = fail(&p, line, "control character 0x%02x in line", ch);
        goto out;
      }
    }
    if (!hd__codec_utf8_valid((const unsigned char *)start, n)) {
      rc = fail(&p, line, "invalid UTF-8");
      goto out;
    }
    memcpy(buf, start, n);
    buf[n] = 0;
    rc = parse_line(&p, line, buf);
    if (rc != 0) goto out;
  }
  rc = section_finish(&p);
  if (rc == 0) rc = config_finish(&p);

out:
  if (rc != 0) hd__config_free(out);
  return rc;
}

int hd__config_load(const char *path, hd_config *out, char *err, size_t errlen) {
  char *data = NULL;
  size_t len = 0, cap = 0;
  int fd = -1, rc;

  if (!path) return hd__config_parse(NULL, 0, "<defaults>", out, err, errlen);
  memset(out, 0, sizeof *out);

  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) goto read_error;
  for (;;) {
    if (len == cap) {
      cap = cap ? cap * 2 : 8192;
      data = xrealloc(data, cap);
    }
    ssize_t r = read(fd, data + len, cap - len);
    if (r < 0) {
      if (errno == EINTR) continue;
      goto read_error;
    }
    if (r == 0) break;
    len += (size_t)r;
    if (len > FILE_MAX_BYTES) {
      if (err && errlen)
        snprintf(err, errlen, "%s: file is larger than %u MiB", path, FILE_MAX_BYTES >> 20);
      rc = HD_ECONFIG;
      goto out;
    }
  }
  rc = hd__config_parse(data, len, path, out, err, errlen);
  goto out;

read_error:
  if (err && errlen) snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
  rc = HD_ECONFIG;
out:
  if (fd >= 0) close(fd);
  free(data);
  return rc;
}

const hd_conf_section *hd__config_extra(const hd_config *c, const char *kind, const char *name) {
  for (size_t i = 0; i < c->nextra; i++)
    if (strcmp(c->extra[i].kind, kind) == 0 && strcmp(c->extra[i].name, name) == 0)
      return &c->extra[i];
  return NULL;
}

const hd_conf_section *hd__config_transport(const hd_config *c, const char *name) {
  if (!c || !name) return NULL;
  for (size_t i = 0; i < c->ntransports; i++)
    if (strcmp(c->transports[i].name, name) == 0) return &c->transports[i];
  return NULL;
}

const hd_tenant_conf *hd__config_tenant(const hd_config *c, const char *name) {
  if (!c || !name) return NULL;
  for (size_t i = 0; i < c->ntenants; i++)
    if (strcmp(c->tenants[i].name, name) == 0) return &c->tenants[i];
  return NULL;
}
