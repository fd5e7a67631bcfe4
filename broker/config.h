/* config.h — heraldd's configuration: the embedded defaults, the file format, validation.
 *
 * Format: UTF-8 text, one `key = value` per line, `#` starts a comment (whole line, or after
 * whitespace), sections are `[kind]` or `[kind name]`. Values run to the end of the line with
 * surrounding whitespace trimmed; a value may be wrapped in double quotes to keep `#` or
 * leading/trailing spaces. Lists are comma-separated. Sizes take k/M/G (and KiB/MiB/GiB, powers
 * of 1024 both ways); durations take s/m/h/d (plain number = seconds).
 *
 * Sections: (top), [http], [zmq], [store], [plugins], [admin], [download], [release],
 * [tenant NAME]
 * (repeatable),
 * [transport NAME] (repeatable; keys are checked later against the plugin's own list), and
 * [KIND NAME] of any other kind (e.g. [smsc NAME]), kept raw for the transports that declare
 * that kind (plugin.c rejects a kind no loaded transport declares).
 * Any unknown section or key, a repeated key, a bad value or a bad name is an error that names
 * the file, the line and the reason.
 *
 * Ownership: hd__config_parse()/hd__config_load() fill a caller-provided hd_config whose every
 * string and array is owned by it; hd__config_free() releases them (safe on a zeroed or
 * partially filled config). Not thread-safe; used at start-up only.
 */
#ifndef HERALD_CONFIG_H
#define HERALD_CONFIG_H

#include <stddef.h>
#include <stdint.h>

typedef struct hd_conf_kv {
  char *key;
  char *value;
  int line;
} hd_conf_kv;

/* A [transport NAME] section, or a [KIND NAME] section of a kind a transport declares (such
 * as [smsc NAME]), kept raw until its plugin says which keys it accepts. */
typedef struct hd_conf_section {
  char *kind;            /* NULL for [transport NAME]; else the section kind ("smsc") */
  char *name;
  int line;
  hd_conf_kv *kv;
  size_t nkv;
} hd_conf_section;

typedef struct hd_tenant_conf {
  char *name;            /* [a-z0-9_-]{1,64} */
  char *publish_key;     /* NULL: generated at first start, kept in <data_dir>/tenants/NAME/ */
  char **apps;           /* declared app ids; a single "*" means any app id */
  size_t napps;
  char **self_register;  /* apps open to keyless browser registration; "*" = all of apps */
  size_t nself_register;
  int64_t self_register_per_min; /* per client address; 0 = unlimited */
  char **allowed_origins; /* web origins ("scheme://host[:port]") whose pages may call the API
                           * cross-origin (CORS); "*" = any; empty (default) = none */
  size_t nallowed_origins;
  char *previous_publish_key; /* also valid until previous_key_until; NULL: none */
  char *previous_key_until;   /* RFC3339 UTC or Unix seconds (see hd__config_parse_time) */
  int64_t device_token_ttl_s; /* device tokens expire this long after minting; 0 = never */
  int64_t max_publish_rate; /* publishes per second over HTTP and ZeroMQ; 0 = unlimited */
  int64_t publish_burst;    /* bucket size of that cap; 0: as many as max_publish_rate */
  char *push_policy;     /* "ipconn, wappush after 30s, sms after 2m"; NULL: no per-device push
                          * (parsed and checked against the loaded transports by push.c) */
  hd_conf_kv *app_policies; /* push_policy.<appid> = ...: per-app overrides (key = app id) */
  size_t napp_policies;
  int line;
} hd_tenant_conf;

typedef struct hd_config {
  char *source;          /* file path, or "<defaults>" */
  char *data_dir;        /* default ./var/herald */
  char *log_level;       /* debug|info|warn|error, default info */

  struct {
    char *listen;        /* host:port, default 127.0.0.1:8470 ([::1]:port for IPv6) */
    uint64_t max_body;   /* bytes, default 1 MiB */
    uint64_t max_header; /* bytes of request line + headers, default 16 KiB */
    int64_t idle_timeout_s; /* close an idle keep-alive connection, default 60 */
    int64_t max_connections; /* default 10000 */
    int64_t max_connections_per_address; /* open connections per client address, default 1000 */
    char *tls_cert;      /* PEM certificate chain; NULL (default): plain HTTP */
    char *tls_key;       /* PEM private key; set together with tls_cert */
    char *tls_ca;        /* PEM CA bundle sent along with the chain; NULL: none */
    int allow_plaintext_public; /* plain HTTP on a non-loopback listen address; default 0 */
  } http;

  struct {
    char *ingress;       /* ROUTER endpoint, default tcp://127.0.0.1:8471 */
    char *events;        /* PUB endpoint, default tcp://127.0.0.1:8472 */
    uint64_t max_frame;  /* bytes, default 1 MiB */
  } zmq;

  struct {
    uint64_t map_size;   /* LMDB map size, default 1 GiB */
    int64_t default_ttl_s; /* default 86400 */
    int64_t max_ttl_s;   /* default 30 days */
    int64_t max_batch;   /* write ops per group commit, default 4096 */
    int64_t ack_delay_ms; /* acks held back to commit together, default 2 */
    int64_t sweep_interval_s; /* expiry sweep, default 10 */
  } store;

  struct {
    char *dir;           /* NULL (default; also `dir =`): the daemon uses <exe dir>/transports */
    char **load;         /* transports to load; default "longpoll" */
    size_t nload;
  } plugins;

  struct {
    char *key;           /* admin API key; NULL (default): generated into <data_dir>/admin.key */
    char **allow_from;   /* addresses / CIDR prefixes besides loopback that may use the admin
                          * API; "*" = any; default none (loopback only) */
    size_t nallow_from;
    int64_t key_overlap_s; /* a rotated publish key stays valid this long, default 1 day */
  } admin;

  struct {
    int64_t max_concurrent; /* max_concurrent_downloads: transfers at once, default 4096 */
    int64_t send_timeout_s; /* download_send_timeout: cut a transfer idle this long, default 60 */
  } download;

  struct {
    char *public_url;    /* base of download URLs in notices and answers; NULL (default):
                          * http(s)://<[http] listen host>:<the port bound> */
    uint64_t max_package; /* largest package upload, default 256 MiB */
    int64_t fanout_batch; /* devices one release-notice step examines, default 256 */
  } release;

  hd_tenant_conf *tenants;   /* at least one; default: one tenant "default" */
  size_t ntenants;
  hd_conf_section *transports;
  size_t ntransports;
  hd_conf_section *extra;    /* [KIND NAME] sections of kinds the broker does not know itself;
                              * a loaded transport must declare the kind (plugin.c checks) */
  size_t nextra;
} hd_config;

/* Parse `text` (len bytes, need not be NUL-terminated) named `source` into *out, on top of the
 * built-in defaults. Returns 0, or HD_ECONFIG with "source:line: reason" in err; on error *out
 * is left zeroed. *out is overwritten, not freed: free a previous config first. */
int hd__config_parse(const char *text, size_t len, const char *source, hd_config *out,
                     char *err, size_t errlen);
/* Read and parse a file; path NULL = defaults only. Same errors, plus unreadable file. */
int hd__config_load(const char *path, hd_config *out, char *err, size_t errlen);
void hd__config_free(hd_config *c);

const hd_conf_section *hd__config_transport(const hd_config *c, const char *name);
/* The [kind name] extension section, or NULL. */
const hd_conf_section *hd__config_extra(const hd_config *c, const char *kind, const char *name);
const hd_tenant_conf *hd__config_tenant(const hd_config *c, const char *name);

/* "1048576", "64k", "1M", "1GiB" -> bytes. Returns 0 or HD_ECONFIG. */
int hd__config_parse_size(const char *s, uint64_t *out);
/* "30", "30s", "5m", "2h", "7d" -> seconds. Returns 0 or HD_ECONFIG. */
int hd__config_parse_duration(const char *s, int64_t *out);
/* The same in milliseconds, and "250ms" besides. */
int hd__config_parse_duration_ms(const char *s, int64_t *out);
/* "2030-01-31T12:00:00Z" (RFC 3339 in UTC: "Z" or "+00:00", optional fraction ignored) or
 * plain Unix seconds -> Unix seconds. Returns 0 or HD_ECONFIG. */
int hd__config_parse_time(const char *s, int64_t *out);
/* Split "host:port" / "[v6]:port"; host is written NUL-terminated into host (hostlen bytes). */
int hd__config_parse_hostport(const char *s, char *host, size_t hostlen, int *port);
/* 1 if name matches [a-z0-9_-]{1,64}. */
int hd__config_valid_name(const char *name);
/* 1 if s is a web origin as browsers send it: scheme://host[:port], no path, no userinfo
 * (host a name, an IPv4 address or a [bracketed] IPv6 address; port 1-65535). */
int hd__config_valid_origin(const char *s);
/* "10.0.0.0/8", "::1", "192.0.2.7" -> the address (network byte order, 4 or 16 bytes used of
 * addr), its family (4 or 6) and the prefix length (the full length without a "/"). Returns 0
 * or HD_ECONFIG. */
int hd__config_parse_cidr(const char *s, unsigned char addr[16], int *family, int *bits);
/* 1 if host (as split by hd__config_parse_hostport) is a loopback address literal: 127.0.0.0/8
 * or ::1. Names, even "localhost", are not: what they resolve to is not known here. */
int hd__config_is_loopback(const char *host);

#endif
