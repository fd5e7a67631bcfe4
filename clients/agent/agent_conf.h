/* agent_conf.h — herald-agent's settings: a config file (see clients/agent/README.md) and
 * command-line flags that override it, both going through agent_conf_set().
 *
 * File format (the same as heraldd's): `key = value` lines, `#` comments (whole line, or after
 * a space), an optional "quoted value", sections `[app NAME]` holding `handler = COMMAND`
 * and `installed = VERSION` (the app is on the device at that version when the agent first
 * starts); `[app *]` is the handler of apps without their own. Durations are seconds or take
 * s/m/h/d.
 *
 * Ownership: every string is owned by the agent_conf; agent_conf_free() releases them.
 */
#ifndef HERALD_AGENT_CONF_H
#define HERALD_AGENT_CONF_H

#include <stddef.h>
#include <stdint.h>

typedef struct agent_handler {
  char *app;       /* app id, or "*" */
  char *cmd;       /* run with /bin/sh -c; NULL: no handler of its own */
  char *installed; /* the version installed before the agent's first start; NULL: none */
} agent_handler;

typedef struct agent_conf {
  char *broker;           /* host:port, default 127.0.0.1:8473 */
  char *host;             /* parsed from broker */
  int port;
  char *device;           /* required */
  char *tenant;           /* default: the token's prefix ("<tenant>.<gen>.<mac>") */
  char *token;            /* required (token or token_file) */
  char *data_dir;         /* default ./var/agent */
  char *ask;              /* release "ask the user" hook; NULL: answer yes */
  agent_handler *handlers;
  size_t nhandlers;
  int64_t handler_timeout_s; /* a handler running longer is killed (failure); default 60 */
  int64_t retry_base_s;      /* first retry of a failed handler; default 2, doubling */
  int64_t retry_max_s;       /* longest wait between handler retries; default 300 */
  int64_t max_attempts;      /* then the notice is marked failed and acked; 0 = never; 10 */
  int64_t reconnect_min_s;   /* reconnect backoff; default 1 */
  int64_t reconnect_max_s;   /* default 300 */
  int64_t parallel;          /* handlers running at once; default 1 */
  uint64_t map_size;         /* the agent's LMDB map; default 64 MiB */
  char *log_level;           /* debug|info|warn|error, default info */
  char *tls_ca;              /* PEM CA file: TLS to the broker, verified against it; NULL: plain */
  char *tls_name;            /* name or address the certificate must carry; NULL: broker host */
  /* the update service (update.h) */
  char *http;                /* the broker's HTTP base URL; default http(s)://<broker host>:8470 */
  char *install;             /* install hook; NULL: a verified package counts as installed */
  int64_t install_timeout_s; /* an install hook running longer is killed; default 600 */
  int64_t downloads;         /* package downloads at once; default 4 */
  int64_t download_attempts; /* failed downloads in a row (no progress) before giving up; 10 */
  int64_t download_stall_s;  /* a download slower than 1 byte/s this long is dropped; 60 */
  char *msisdn;              /* sent with update-check; NULL: not sent */
} agent_conf;

/* Built-in defaults. */
void agent_conf_init(agent_conf *c);
/* Read a file into c. err gets "file:line: reason". 0 or -1. */
int agent_conf_load(agent_conf *c, const char *path, char *err, size_t errlen);
/* Set one key (section "" for top-level keys, or "app NAME"). 0 or -1 with err set. */
int agent_conf_set(agent_conf *c, const char *section, const char *key, const char *value,
                   char *err, size_t errlen);
/* After loading and flags: required keys, derived values. 0 or -1 with err set. */
int agent_conf_finish(agent_conf *c, char *err, size_t errlen);
/* The handler command for an app (its own, else [app *]), or NULL. */
const char *agent_conf_handler(const agent_conf *c, const char *app);
void agent_conf_free(agent_conf *c);

#endif
