/* agent_conf.c — herald-agent's settings (see agent_conf.h). */
#include "agent_conf.h"

#include <errno.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h" /* heraldd's size, duration and host:port parsers */
#include "log.h"

void agent_conf_init(agent_conf *c) {
  memset(c, 0, sizeof *c);
  c->broker = strdup("127.0.0.1:8473");
  c->data_dir = strdup("./var/agent");
  c->log_level = strdup("info");
  c->handler_timeout_s = 60;
  c->retry_base_s = 2;
  c->retry_max_s = 300;
  c->max_attempts = 10;
  c->reconnect_min_s = 1;
  c->reconnect_max_s = 300;
  c->parallel = 1;
  c->map_size = 64u << 20;
  c->install_timeout_s = 600;
  c->downloads = 4;
  c->download_attempts = 10;
  c->download_stall_s = 60;
}

static int set_str(char **slot, const char *v) {
  char *s = strdup(v);
  if (!s) return -1;
  free(*slot);
  *slot = s;
  return 0;
}

static int set_dur(int64_t *slot, const char *v, int64_t lo, int64_t hi) {
  int64_t x;
  if (hd__config_parse_duration(v, &x) || x < lo || x > hi) return -1;
  *slot = x;
  return 0;
}

static int set_num(int64_t *slot, const char *v, int64_t lo, int64_t hi) {
  char *end;
  long long x = strtoll(v, &end, 10);
  if (!*v || *end || x < lo || x > hi) return -1;
  *slot = x;
  return 0;
}

/* The broker's rule for versions (docs/protocols/releases.md): an inventory it would refuse
 * would make every update-check fail. */
static int valid_version(const char *v) {
  size_t n = 0;
  for (; v[n]; n++) {
    char ch = v[n];
    int alnum = (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
    if (!alnum && !(n > 0 && (ch == '.' || ch == '-' || ch == '+' || ch == '_'))) return 0;
  }
  return n >= 1 && n <= 64;
}

int agent_conf_set(agent_conf *c, const char *section, const char *key, const char *value,
                   char *err, size_t errlen) {
  int bad = 0;
  const char *why = NULL;
  if (strncmp(section, "app ", 4) == 0) {
    const char *app = section + 4;
    int is_handler = strcmp(key, "handler") == 0;
    if (!is_handler && strcmp(key, "installed") != 0) {
      snprintf(err, errlen, "unknown key '%s' in [%s] (handler or installed)", key, section);
      return -1;
    }
    if (!is_handler && (strcmp(app, "*") == 0 || !valid_version(value))) {
      snprintf(err, errlen, "installed: a version of one app (not [app *]): 1-64 of A-Z a-z 0-9 "
                            ". _ + - starting with a letter or digit");
      return -1;
    }
    agent_handler *h = NULL;
    for (size_t i = 0; i < c->nhandlers && !h; i++)
      if (strcmp(c->handlers[i].app, app) == 0) h = &c->handlers[i];
    if (!h) {
      agent_handler *v = realloc(c->handlers, (c->nhandlers + 1) * sizeof *v);
      if (!v) return -1;
      c->handlers = v;
      h = &v[c->nhandlers++];
      memset(h, 0, sizeof *h);
      if (!(h->app = strdup(app))) return -1;
    }
    return set_str(is_handler ? &h->cmd : &h->installed, value);
  }
  if (*section) {
    snprintf(err, errlen, "unknown section [%s]", section);
    return -1;
  }
  if (strcmp(key, "broker") == 0) bad = set_str(&c->broker, value);
  else if (strcmp(key, "device") == 0) bad = set_str(&c->device, value);
  else if (strcmp(key, "tenant") == 0) bad = set_str(&c->tenant, value);
  else if (strcmp(key, "token") == 0) bad = set_str(&c->token, value);
  else if (strcmp(key, "tls_ca") == 0) {
    free(c->tls_ca);
    c->tls_ca = *value ? strdup(value) : NULL;
  } else if (strcmp(key, "tls_name") == 0) {
    free(c->tls_name);
    c->tls_name = *value ? strdup(value) : NULL;
  }
  else if (strcmp(key, "token_file") == 0) {
    FILE *f = fopen(value, "r");
    char buf[600];
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) fclose(f);
    while (n && isspace((unsigned char)buf[n - 1])) n--;
    buf[n] = 0;
    if (!n) {
      snprintf(err, errlen, "token_file %s: cannot read a token from it", value);
      return -1;
    }
    bad = set_str(&c->token, buf);
  } else if (strcmp(key, "data_dir") == 0) bad = set_str(&c->data_dir, value);
  else if (strcmp(key, "ask") == 0) {
    free(c->ask);
    c->ask = *value ? strdup(value) : NULL;
  } else if (strcmp(key, "install") == 0) {
    free(c->install);
    c->install = *value ? strdup(value) : NULL;
  } else if (strcmp(key, "http") == 0) {
    if (*value && strncmp(value, "http://", 7) != 0 && strncmp(value, "https://", 8) != 0)
      why = "an http:// or https:// URL";
    else {
      free(c->http);
      c->http = *value ? strdup(value) : NULL;
    }
  } else if (strcmp(key, "msisdn") == 0) {
    const char *dg = *value == '+' ? value + 1 : value; /* E.164: 5 to 15 digits */
    if (*value && (strlen(dg) < 5 || strlen(dg) > 15 || strspn(dg, "0123456789") != strlen(dg)))
      why = "5 to 15 digits, optionally after a '+'";
    else {
      free(c->msisdn);
      c->msisdn = *value ? strdup(value) : NULL;
    }
  } else if (strcmp(key, "install_timeout") == 0) {
    if (set_dur(&c->install_timeout_s, value, 1, 86400)) why = "a duration of 1s to 1d";
  } else if (strcmp(key, "download_stall") == 0) {
    if (set_dur(&c->download_stall_s, value, 1, 86400)) why = "a duration of 1s to 1d";
  } else if (strcmp(key, "downloads") == 0) {
    if (set_num(&c->downloads, value, 1, 64)) why = "1 to 64";
  } else if (strcmp(key, "download_attempts") == 0) {
    if (set_num(&c->download_attempts, value, 0, 1000000)) why = "0 (retry forever) to 1000000";
  } else if (strcmp(key, "log_level") == 0) {
    if (hd__log_level_from_name(value) < 0) why = "debug, info, warn or error";
    else bad = set_str(&c->log_level, value);
  } else if (strcmp(key, "handler_timeout") == 0) {
    if (set_dur(&c->handler_timeout_s, value, 1, 86400)) why = "a duration of 1s to 1d";
  } else if (strcmp(key, "retry_base") == 0) {
    if (set_dur(&c->retry_base_s, value, 1, 86400)) why = "a duration of 1s to 1d";
  } else if (strcmp(key, "retry_max") == 0) {
    if (set_dur(&c->retry_max_s, value, 1, 7 * 86400)) why = "a duration of 1s to 7d";
  } else if (strcmp(key, "reconnect_min") == 0) {
    if (set_dur(&c->reconnect_min_s, value, 1, 3600)) why = "a duration of 1s to 1h";
  } else if (strcmp(key, "reconnect_max") == 0) {
    if (set_dur(&c->reconnect_max_s, value, 1, 86400)) why = "a duration of 1s to 1d";
  } else if (strcmp(key, "max_attempts") == 0) {
    if (set_num(&c->max_attempts, value, 0, 1000000)) why = "0 (retry forever) to 1000000";
  } else if (strcmp(key, "parallel") == 0) {
    if (set_num(&c->parallel, value, 1, 64)) why = "1 to 64";
  } else if (strcmp(key, "map_size") == 0) {
    if (hd__config_parse_size(value, &c->map_size) || c->map_size < (1u << 20))
      why = "a size of at least 1MiB";
  } else {
    snprintf(err, errlen, "unknown key '%s'", key);
    return -1;
  }
  if (why) {
    snprintf(err, errlen, "%s: must be %s", key, why);
    return -1;
  }
  if (bad) snprintf(err, errlen, "out of memory");
  return bad ? -1 : 0;
}

static char *trim(char *s) {
  while (isspace((unsigned char)*s)) s++;
  char *e = s + strlen(s);
  while (e > s && isspace((unsigned char)e[-1])) *--e = 0;
  return s;
}

int agent_conf_load(agent_conf *c, const char *path, char *err, size_t errlen) {
  FILE *f = fopen(path, "r");
  if (!f) {
    snprintf(err, errlen, "%s: cannot open", path);
    return -1;
  }
  char line[4096], section[200] = "", why[512];
  int ln = 0, rc = 0;
  while (!rc && fgets(line, sizeof line, f)) {
    ln++;
    char *s = trim(line);
    if (!*s || *s == '#') continue;
    if (*s == '[') {
      char *e = strchr(s, ']');
      if (!e || e[1]) {
        snprintf(err, errlen, "%s:%d: a section is [app NAME]", path, ln);
        rc = -1;
        break;
      }
      *e = 0;
      char *name = trim(s + 1);
      if (strncmp(name, "app", 3) != 0 || !isspace((unsigned char)name[3])) {
        snprintf(err, errlen, "%s:%d: unknown section [%s]", path, ln, name);
        rc = -1;
        break;
      }
      snprintf(section, sizeof section, "app %s", trim(name + 4));
      continue;
    }
    char *eq = strchr(s, '=');
    if (!eq) {
      snprintf(err, errlen, "%s:%d: expected key = value", path, ln);
      rc = -1;
      break;
    }
    *eq = 0;
    char *key = trim(s), *val = trim(eq + 1);
    if (*val == '"') { /* quoted: up to the closing quote, \" and \\ escaped */
      char *o = val, *i = val + 1;
      while (*i && *i != '"') {
        if (*i == '\\' && (i[1] == '"' || i[1] == '\\')) i++;
        *o++ = *i++;
      }
      if (*i != '"') {
        snprintf(err, errlen, "%s:%d: unterminated quote", path, ln);
        rc = -1;
        break;
      }
      *o = 0;
    } else {
      for (char *h = val; *h; h++) /* a comment after a space */
        if (*h == '#' && h > val && isspace((unsigned char)h[-1])) {
          *h = 0;
          break;
        }
      val = trim(val);
    }
    if (agent_conf_set(c, section, key, val, why, sizeof why)) {
      snprintf(err, errlen, "%s:%d: %s", path, ln, why);
      rc = -1;
    }
  }
  fclose(f);
  return rc;
}

int agent_conf_finish(agent_conf *c, char *err, size_t errlen) {
  char host[256];
  if (hd__config_parse_hostport(c->broker, host, sizeof host, &c->port) || c->port <= 0) {
    snprintf(err, errlen, "broker '%s' is not host:port", c->broker);
    return -1;
  }
  if (set_str(&c->host, host)) return -1;
  if (!c->device || !*c->device) {
    snprintf(err, errlen, "device is required");
    return -1;
  }
  if (!c->token || !*c->token) {
    snprintf(err, errlen, "token (or token_file) is required");
    return -1;
  }
  if (!c->tenant) { /* tokens are "<tenant>.<generation>.<mac>" */
    const char *dot = strchr(c->token, '.');
    if (!dot || dot == c->token) {
      snprintf(err, errlen, "tenant is required (the token does not name one)");
      return -1;
    }
    c->tenant = strndup(c->token, (size_t)(dot - c->token));
  }
  if (c->tls_ca) { /* checked now: at connect time it would only fail again and again */
    FILE *f = fopen(c->tls_ca, "r");
    if (!f) {
      snprintf(err, errlen, "tls_ca %s: %s", c->tls_ca, strerror(errno));
      return -1;
    }
    fclose(f);
  }
  if (!c->http) { /* the broker's HTTP listener on its default port, on the same host */
    const char *scheme = c->tls_ca ? "https" : "http";
    int v6 = strchr(c->host, ':') != NULL;
    if (asprintf(&c->http, "%s://%s%s%s:8470", scheme, v6 ? "[" : "", c->host, v6 ? "]" : "") <
        0) {
      c->http = NULL;
      return -1;
    }
  }
  for (size_t n = strlen(c->http); n > 0 && c->http[n - 1] == '/'; n--) c->http[n - 1] = 0;
  if (c->retry_max_s < c->retry_base_s) c->retry_max_s = c->retry_base_s;
  if (c->reconnect_max_s < c->reconnect_min_s) c->reconnect_max_s = c->reconnect_min_s;
  return 0;
}

const char *agent_conf_handler(const agent_conf *c, const char *app) {
  const char *any = NULL;
  for (size_t i = 0; i < c->nhandlers; i++) {
    if (!c->handlers[i].cmd) continue; /* only an installed version */
    if (strcmp(c->handlers[i].app, app) == 0) return c->handlers[i].cmd;
    if (strcmp(c->handlers[i].app, "*") == 0) any = c->handlers[i].cmd;
  }
  return any;
}

void agent_conf_free(agent_conf *c) {
  free(c->broker);
  free(c->host);
  free(c->device);
  free(c->tenant);
  free(c->token);
  free(c->data_dir);
  free(c->ask);
  free(c->log_level);
  free(c->tls_ca);
  free(c->tls_name);
  free(c->http);
  free(c->install);
  free(c->msisdn);
  for (size_t i = 0; i < c->nhandlers; i++) {
    free(c->handlers[i].app);
    free(c->handlers[i].cmd);
    free(c->handlers[i].installed);
  }
  free(c->handlers);
  memset(c, 0, sizeof *c);
}
