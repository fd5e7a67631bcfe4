/* agent_conf.h — herald-agent's settings: a config file (see clients/agent/README.md) and
 * command-line flags that override it, both going through agent_conf_set().
 *
 * File format (the same as heraldd's): `key = value` lines, `#` comments (whole line, or after
 * a space), an optional "quoted value", sections `[app NAME]` holding `handler = COMMAND`;
 * `[app *]` is the handler of apps without their own. Durations are seconds or take s/m/h/d.
 *
 * Ownership: every string is owned by the agent_conf; agent_conf_free() releases them.
 */
#ifndef HERALD_AGENT_CONF_H
#define HERALD_AGENT_CONF_H

#include <stddef.h>
#include <stdint.h>

typedef struct agent_handler {
  char *app;   /* app id, or "*" */
  char *cmd;   /* run with /bin/sh -c */
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
