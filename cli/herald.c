/* herald — the operator's command line for a running heraldd.
 *
 *   herald publish --app A [--to DEVICE] [--ttl S] [--collapse K] [--count N --window W] DATA
 *   herald tail    --app A --device D [--ack] [--wait S]
 *   herald stats
 *   herald tenant add NAME [--app A ...] [--self-register A ...] [--max-publish-rate N]
 *                          [--publish-burst N]
 *   herald tenant list
 *   herald tenant rotate-key NAME [--overlap S]
 *   herald release add --app A --version V --file PKG [--notes N] [--rollout 10%] [--code C]
 *                      [--required]
 *   herald release list --app A
 *   herald release set --app A --version V [--rollout P] [--pause|--resume|--withdraw]
 *   herald report [--app A] [--version V]
 *
 * It finds the tenant's publish key on its own: --key, else $HERALD_KEY, else
 * <data dir>/tenants/<tenant>/publish.key (data dir: --data-dir, default ./var/herald), which
 * is where heraldd keeps a key it generated. Publishing goes over ZeroMQ (DEALER, so many
 * requests can be in flight); tail and stats over HTTP with libcurl. The tenant commands use
 * heraldd's admin API (loopback only unless [admin] allow_from says otherwise) with the admin
 * key: --admin-key, else $HERALD_ADMIN_KEY, else <data dir>/admin.key.
 */
#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <zmq.h>

typedef struct opts {
  const char *tenant, *key, *data_dir, *zmq, *url, *app, *to, *collapse, *device;
  const char *admin_key;
  long ttl, count, window, wait;
  int ack;
} opts;

static void usage(FILE *f) {
  fprintf(f,
          "usage: herald [common options] COMMAND [options]\n"
          "commands:\n"
          "  publish --app A [--to DEVICE] [--ttl S] [--collapse K] [--count N] [--window W] DATA\n"
          "          DATA is JSON if it parses as JSON, else a string. --count N publishes N\n"
          "          copies with up to W in flight and prints the acknowledged rate.\n"
          "  tail    --app A --device D [--ack] [--wait S]   follow a device's messages\n"
          "  stats                                          key figures from /metrics\n"
          "  tenant add NAME [--app A ...] [--self-register A ...] [--max-publish-rate N]\n"
          "                  [--publish-burst N]   create a tenant; prints its publish key\n"
          "  tenant list                            every tenant and its settings\n"
          "  tenant rotate-key NAME [--overlap S]   new publish key; the old one works S\n"
          "                                         more seconds (default: [admin] key_overlap)\n"
          "  release add --app A --version V --file PKG [--notes N] [--rollout 10%%]\n"
          "              [--code C] [--required]      upload a release (streamed from PKG)\n"
          "  release list --app A                   the app's releases, newest first\n"
          "  release set --app A --version V [--rollout P] [--pause|--resume|--withdraw]\n"
          "              [--required|--not-required]\n"
          "  report [--app A] [--version V]         notices, downloads and install results\n"
          "          (release and report take --json for one JSON object per line)\n"
          "common options:\n"
          "  --tenant T     tenant (default: default)\n"
          "  --key K        publish key (default: $HERALD_KEY, then the key file)\n"
          "  --data-dir D   heraldd's data dir, to find the key file (default ./var/herald)\n"
          "  --zmq E        ZeroMQ ingress (default tcp://127.0.0.1:8471)\n"
          "  --url U        HTTP base URL (default http://127.0.0.1:8470)\n"
          "  --admin-key K  admin key for tenant commands (default: $HERALD_ADMIN_KEY, then\n"
          "                 <data dir>/admin.key)\n");
}

static int load_key(opts *o, char *buf, size_t len) {
  if (o->key) return snprintf(buf, len, "%s", o->key) < (int)len ? 0 : -1;
  const char *env = getenv("HERALD_KEY");
  if (env && *env) return snprintf(buf, len, "%s", env) < (int)len ? 0 : -1;
  char path[4096];
  snprintf(path, sizeof path, "%s/tenants/%s/publish.key", o->data_dir, o->tenant);
  FILE *f = fopen(path, "r");
  if (!f) {
    fprintf(stderr, "herald: no publish key: give --key, set HERALD_KEY, or run where %s "
                    "exists (%s)\n", path, strerror(errno));
    return -1;
  }
  size_t n = fread(buf, 1, len - 1, f);
  fclose(f);
  while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) n--;
  buf[n] = 0;
  return n ? 0 : -1;
}

/* ---- JSON <-> msgpack for the payload ---- */
static void pack_json(msgpack_packer *pk, json_t *v) {
  switch (json_typeof(v)) {
  case JSON_OBJECT: {
    const char *k;
    json_t *x;
    msgpack_pack_map(pk, json_object_size(v));
    json_object_foreach(v, k, x) {
      msgpack_pack_str(pk, strlen(k));
      msgpack_pack_str_body(pk, k, strlen(k));
      pack_json(pk, x);
    }
    break;
  }
  case JSON_ARRAY: {
    size_t i;
    json_t *x;
    msgpack_pack_array(pk, json_array_size(v));
    json_array_foreach(v, i, x) pack_json(pk, x);
    break;
  }
  case JSON_STRING:
    msgpack_pack_str(pk, json_string_length(v));
    msgpack_pack_str_body(pk, json_string_value(v), json_string_length(v));
    break;
  case JSON_INTEGER: msgpack_pack_int64(pk, json_integer_value(v)); break;
  case JSON_REAL: msgpack_pack_double(pk, json_real_value(v)); break;
  case JSON_TRUE: msgpack_pack_true(pk); break;
  case JSON_FALSE: msgpack_pack_false(pk); break;
  default: msgpack_pack_nil(pk);
  }
}

static void pk_kv(msgpack_packer *pk, const char *k, const char *v) {
  msgpack_pack_str(pk, strlen(k));
  msgpack_pack_str_body(pk, k, strlen(k));
  msgpack_pack_str(pk, strlen(v));
  msgpack_pack_str_body(pk, v, strlen(v));
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Print a reply map; returns 0 for {"id"}, 1 for {"error"}. */
static int show_reply(const char *buf, size_t len, int quiet) {
  msgpack_unpacked up;
  size_t off = 0;
  int rc = 1;
  msgpack_unpacked_init(&up);
  if (msgpack_unpack_next(&up, buf, len, &off) == MSGPACK_UNPACK_SUCCESS &&
      up.data.type == MSGPACK_OBJECT_MAP) {
    const char *err = NULL, *msg = NULL, *id = NULL;
    int errl = 0, msgl = 0, idl = 0;
    for (uint32_t i = 0; i < up.data.via.map.size; i++) {
      msgpack_object *k = &up.data.via.map.ptr[i].key, *v = &up.data.via.map.ptr[i].val;
      if (k->type != MSGPACK_OBJECT_STR || v->type != MSGPACK_OBJECT_STR) continue;
      if (k->via.str.size == 2 && !memcmp(k->via.str.ptr, "id", 2)) {
        id = v->via.str.ptr;
        idl = (int)v->via.str.size;
      } else if (k->via.str.size == 5 && !memcmp(k->via.str.ptr, "error", 5)) {
        err = v->via.str.ptr;
        errl = (int)v->via.str.size;
      } else if (k->via.str.size == 7 && !memcmp(k->via.str.ptr, "message", 7)) {
        msg = v->via.str.ptr;
        msgl = (int)v->via.str.size;
      }
    }
    if (id) {
      if (!quiet) printf("%.*s\n", idl, id);
      rc = 0;
    } else if (err) {
      fprintf(stderr, "herald: %.*s: %.*s\n", errl, err, msgl, msg ? msg : "");
    }
  }
  msgpack_unpacked_destroy(&up);
  return rc;
}

static int cmd_publish(opts *o, const char *data) {
  char key[512];
  if (!o->app || !data) {
    fprintf(stderr, "herald publish: needs --app and DATA\n");
    return 2;
  }
  if (load_key(o, key, sizeof key)) return 1;
  json_error_t je;
  json_t *payload = json_loads(data, JSON_DECODE_ANY, &je);
  if (!payload) payload = json_string(data);
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_map(&pk, 4 + (o->to != NULL) + (o->ttl > 0) + (o->collapse != NULL));
  pk_kv(&pk, "tenant", o->tenant);
  pk_kv(&pk, "key", key);
  pk_kv(&pk, "app", o->app);
  if (o->to) pk_kv(&pk, "to", o->to);
  if (o->collapse) pk_kv(&pk, "collapse", o->collapse);
  if (o->ttl > 0) {
    msgpack_pack_str(&pk, 3);
    msgpack_pack_str_body(&pk, "ttl", 3);
    msgpack_pack_int64(&pk, o->ttl);
  }
  msgpack_pack_str(&pk, 4);
  msgpack_pack_str_body(&pk, "data", 4);
  pack_json(&pk, payload);
  json_decref(payload);

  void *ctx = zmq_ctx_new();
  void *s = zmq_socket(ctx, ZMQ_DEALER);
  int linger = 0, tmo = 10000, immediate = 1;
  zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
  zmq_setsockopt(s, ZMQ_RCVTIMEO, &tmo, sizeof tmo);
  /* Without a connected broker a DEALER send would wait forever: give up after 10 s too. */
  zmq_setsockopt(s, ZMQ_SNDTIMEO, &tmo, sizeof tmo);
  zmq_setsockopt(s, ZMQ_IMMEDIATE, &immediate, sizeof immediate);
  if (zmq_connect(s, o->zmq) != 0) {
    fprintf(stderr, "herald: connect %s: %s\n", o->zmq, zmq_strerror(zmq_errno()));
    return 1;
  }
  long count = o->count > 0 ? o->count : 1, window = o->window > 0 ? o->window : 1;
  long sent = 0, got = 0, failed = 0;
  double t0 = now_s();
  while (got < count) {
    while (sent < count && sent - got < window) {
      /* DEALER: an empty delimiter frame makes the reply look like a REQ reply. */
      if (zmq_send(s, "", 0, ZMQ_SNDMORE) < 0 || zmq_send(s, sb.data, sb.size, 0) < 0) {
        fprintf(stderr, "herald: cannot send to %s within 10 s (is heraldd running?)\n",
                o->zmq);
        return 1;
      }
      sent++;
    }
    char buf[4096];
    int n = zmq_recv(s, buf, sizeof buf, 0); /* the empty delimiter */
    if (n >= 0) n = zmq_recv(s, buf, sizeof buf, 0);
    if (n < 0) {
      fprintf(stderr, "herald: no reply from %s within 10 s (is heraldd running?)\n", o->zmq);
      return 1;
    }
    failed += show_reply(buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf, count > 1);
    got++;
  }
  double dt = now_s() - t0;
  if (count > 1)
    printf("%ld published (%ld refused), %.0f/s acknowledged after commit, window %ld\n",
           count - failed, failed, count / dt, window);
  zmq_close(s);
  zmq_ctx_term(ctx);
  msgpack_sbuffer_destroy(&sb);
  return failed ? 1 : 0;
}

/* ---- HTTP ---- */
typedef struct buf {
  char *p;
  size_t len;
} buf;

static size_t on_body(char *d, size_t sz, size_t n, void *ud) {
  buf *b = ud;
  char *p = realloc(b->p, b->len + sz * n + 1);
  if (!p) return 0;
  memcpy(p + b->len, d, sz * n);
  b->p = p;
  b->len += sz * n;
  b->p[b->len] = 0;
  return sz * n;
}

static long http(const char *method, const char *url, const char *auth, const char *body,
                 buf *out, long timeout_s) {
  CURL *c = curl_easy_init();
  struct curl_slist *hs = NULL;
  char hdr[700];
  long status = -1;
  out->p = NULL;
  out->len = 0;
  if (auth) {
    snprintf(hdr, sizeof hdr, "Authorization: Bearer %s", auth);
    hs = curl_slist_append(hs, hdr);
  }
  hs = curl_slist_append(hs, "Content-Type: application/json");
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, hs);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, timeout_s);
  if (body) curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
  CURLcode rc = curl_easy_perform(c);
  if (rc == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  else fprintf(stderr, "herald: %s %s: %s\n", method, url, curl_easy_strerror(rc));
  curl_slist_free_all(hs);
  curl_easy_cleanup(c);
  return status;
}

static int cmd_tail(opts *o) {
  char key[512], url[2048], body[512];
  buf b;
  if (!o->app || !o->device) {
    fprintf(stderr, "herald tail: needs --app and --device\n");
    return 2;
  }
  if (load_key(o, key, sizeof key)) return 1;
  snprintf(url, sizeof url, "%s/v1/apps/%s/registrations", o->url, o->app);
  snprintf(body, sizeof body, "{\"device\":\"%s\"}", o->device);
  long st = http("POST", url, key, body, &b, 10);
  json_t *j = st == 201 ? json_loads(b.p, 0, NULL) : NULL;
  const char *tok = j ? json_string_value(json_object_get(j, "token")) : NULL;
  if (!tok) {
    fprintf(stderr, "herald tail: registration failed (%ld): %s\n", st, b.p ? b.p : "");
    free(b.p);
    return 1;
  }
  char token[256];
  snprintf(token, sizeof token, "%s", tok);
  json_decref(j);
  free(b.p);
  char cursor[32] = "";
  for (;;) {
    snprintf(url, sizeof url, "%s/v1/devices/%s/messages?wait=%ld%s%s", o->url, o->device,
             o->wait, *cursor ? "&cursor=" : "", cursor);
    st = http("GET", url, token, NULL, &b, o->wait + 10);
    if (st != 200) {
      fprintf(stderr, "herald tail: poll failed (%ld): %s\n", st, b.p ? b.p : "");
      free(b.p);
      struct timespec ts = {1, 0};
      nanosleep(&ts, NULL);
      continue;
    }
    j = json_loads(b.p, 0, NULL);
    free(b.p);
    json_t *msgs = json_object_get(j, "messages"), *m;
    size_t i;
    json_t *ids = json_array();
    json_array_foreach(msgs, i, m) {
      char *line = json_dumps(m, JSON_COMPACT);
      printf("%s\n", line);
      free(line);
      json_array_append(ids, json_object_get(m, "id"));
    }
    fflush(stdout);
    const char *c = json_string_value(json_object_get(j, "cursor"));
    if (c) snprintf(cursor, sizeof cursor, "%s", c);
    if (o->ack && json_array_size(ids)) {
      json_t *ab = json_pack("{s:O}", "ids", ids);
      char *s = json_dumps(ab, JSON_COMPACT);
      snprintf(url, sizeof url, "%s/v1/devices/%s/acks", o->url, o->device);
      http("POST", url, token, s, &b, 10);
      free(b.p);
      free(s);
      json_decref(ab);
    }
    json_decref(ids);
    json_decref(j);
  }
}

static int cmd_stats(opts *o) {
  char url[2048];
  buf b;
  snprintf(url, sizeof url, "%s/metrics", o->url);
  long st = http("GET", url, NULL, NULL, &b, 10);
  if (st != 200) {
    free(b.p);
    return 1;
  }
  /* Show the broker's own series, one per line, without the HELP/TYPE and bucket noise. */
  for (char *line = strtok(b.p, "\n"); line; line = strtok(NULL, "\n")) {
    if (line[0] == '#' || strstr(line, "_bucket{")) continue;
    printf("%s\n", line);
  }
  free(b.p);
  return 0;
}

/* ---- tenants (admin API) ---- */
static int load_admin_key(const char *given, const char *data_dir, char *out, size_t len) {
  if (!given || !*given) given = getenv("HERALD_ADMIN_KEY");
  if (given && *given) return snprintf(out, len, "%s", given) < (int)len ? 0 : -1;
  char path[4096];
  snprintf(path, sizeof path, "%s/admin.key", data_dir);
  FILE *f = fopen(path, "r");
  if (!f) {
    fprintf(stderr, "herald: no admin key: give --admin-key, set HERALD_ADMIN_KEY, or run "
                    "where %s exists (%s)\n", path, strerror(errno));
    return -1;
  }
  size_t n = fread(out, 1, len - 1, f);
  fclose(f);
  while (n && (out[n - 1] == '\n' || out[n - 1] == '\r')) n--;
  out[n] = 0;
  return n ? 0 : -1;
}

/* An admin API answer: 0 and the parsed JSON if the status is the one expected, else 1 after
 * saying why. */
static int admin_call(const char *method, const char *url, const char *key, const char *body,
                      long want, json_t **out) {
  buf b;
  long st = http(method, url, key, body, &b, 30);
  json_t *j = b.p ? json_loads(b.p, 0, NULL) : NULL;
  if (st != want || !j) {
    const char *m = j ? json_string_value(json_object_get(j, "message")) : NULL;
    if (st > 0)
      fprintf(stderr, "herald: %s %s: %ld %s\n", method, url, st, m ? m : (b.p ? b.p : ""));
    json_decref(j);
    free(b.p);
    return 1;
  }
  free(b.p);
  *out = j;
  return 0;
}

static void print_list(FILE *f, json_t *a) {
  size_t i;
  json_t *x;
  json_array_foreach(a, i, x) fprintf(f, "%s%s", i ? "," : "", json_string_value(x));
  if (!json_array_size(a)) fprintf(f, "-");
}

enum { T_APP = 1000, T_SELF, T_RATE, T_BURST, T_OVERLAP, T_ADMIN_KEY, T_URL, T_DATA };

static int cmd_tenant(opts *o, int argc, char **argv) {
  static const struct option lo[] = {
      {"app", 1, 0, T_APP},           {"self-register", 1, 0, T_SELF},
      {"max-publish-rate", 1, 0, T_RATE}, {"publish-burst", 1, 0, T_BURST},
      {"overlap", 1, 0, T_OVERLAP},   {"admin-key", 1, 0, T_ADMIN_KEY},
      {"url", 1, 0, T_URL},           {"data-dir", 1, 0, T_DATA},
      {0, 0, 0, 0}};
  const char *sub = NULL, *name = NULL, *admin_key = o->admin_key;
  long rate = -1, burst = -1, overlap = -1;
  json_t *apps = json_array(), *self = json_array();
  int c, rc = 2;
  /* A fresh scan of what follows "tenant" (optind 0 makes getopt start over, with this
   * optstring's ordering); "-": operands come back as option 1, so NAME may stand before or
   * after the options. */
  int first = optind - 1;
  argc -= first;
  argv += first;
  optind = 0;
  while ((c = getopt_long(argc, argv, "-", lo, NULL)) != -1) {
    switch (c) {
    case 1:
      if (!sub) sub = optarg;
      else if (!name) name = optarg;
      else {
        fprintf(stderr, "herald tenant: unexpected '%s'\n", optarg);
        goto out;
      }
      break;
    case T_APP: json_array_append_new(apps, json_string(optarg)); break;
    case T_SELF: json_array_append_new(self, json_string(optarg)); break;
    case T_RATE: rate = atol(optarg); break;
    case T_BURST: burst = atol(optarg); break;
    case T_OVERLAP: overlap = atol(optarg); break;
    case T_ADMIN_KEY: admin_key = optarg; break;
    case T_URL: o->url = optarg; break;
    case T_DATA: o->data_dir = optarg; break;
    default: goto out;
    }
  }
  if (!sub || (strcmp(sub, "list") != 0 && !name)) {
    fprintf(stderr, "herald tenant: add NAME | list | rotate-key NAME\n");
    goto out;
  }
  char key[512], url[2048];
  rc = 1;
  if (load_admin_key(admin_key, o->data_dir, key, sizeof key)) goto out;
  json_t *j = NULL;
  if (strcmp(sub, "add") == 0) {
    json_t *spec = json_pack("{s:s}", "name", name);
    if (json_array_size(apps)) json_object_set(spec, "apps", apps);
    if (json_array_size(self)) json_object_set(spec, "self_register", self);
    if (rate >= 0) json_object_set_new(spec, "max_publish_rate", json_integer(rate));
    if (burst >= 0) json_object_set_new(spec, "publish_burst", json_integer(burst));
    char *body = json_dumps(spec, JSON_COMPACT);
    json_decref(spec);
    snprintf(url, sizeof url, "%s/v1/admin/tenants", o->url);
    rc = admin_call("POST", url, key, body, 201, &j);
    free(body);
    if (rc == 0) {
      /* The key alone on stdout, for scripts; it is shown this once. */
      printf("%s\n", json_string_value(json_object_get(j, "publish_key")));
      fprintf(stderr, "herald: tenant %s created; its publish key (above) is shown only once, "
                      "and kept in %s/tenants/%s/publish.key on the broker\n",
              name, o->data_dir, name);
    }
  } else if (strcmp(sub, "rotate-key") == 0) {
    char body[64] = "";
    if (overlap >= 0) snprintf(body, sizeof body, "{\"overlap\":%ld}", overlap);
    snprintf(url, sizeof url, "%s/v1/admin/tenants/%s/rotate-key", o->url, name);
    rc = admin_call("POST", url, key, overlap >= 0 ? body : NULL, 200, &j);
    if (rc == 0) {
      printf("%s\n", json_string_value(json_object_get(j, "publish_key")));
      json_t *until = json_object_get(j, "previous_key_valid_until");
      if (json_is_integer(until)) {
        time_t t = (time_t)(json_integer_value(until) / 1000);
        char when[64];
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
        fprintf(stderr, "herald: new key for %s (above); the old one works until %s\n", name,
                when);
      } else {
        fprintf(stderr, "herald: new key for %s (above); the old one no longer works\n", name);
      }
    }
  } else if (strcmp(sub, "list") == 0) {
    snprintf(url, sizeof url, "%s/v1/admin/tenants", o->url);
    rc = admin_call("GET", url, key, NULL, 200, &j);
    if (rc == 0) {
      size_t i;
      json_t *t;
      printf("%-20s %-7s %-10s %-24s %s\n", "NAME", "SOURCE", "RATE/S", "CREATED", "APPS");
      json_array_foreach(json_object_get(j, "tenants"), i, t) {
        char when[64] = "-", rate_s[32] = "-";
        json_t *cr = json_object_get(t, "created");
        if (json_is_integer(cr)) {
          time_t tt = (time_t)(json_integer_value(cr) / 1000);
          strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime(&tt));
        }
        long long r = json_integer_value(json_object_get(t, "max_publish_rate"));
        if (r > 0) snprintf(rate_s, sizeof rate_s, "%lld", r);
        printf("%-20s %-7s %-10s %-24s ", json_string_value(json_object_get(t, "name")),
               json_string_value(json_object_get(t, "source")), rate_s, when);
        print_list(stdout, json_object_get(t, "apps"));
        printf("\n");
      }
    }
  } else {
    fprintf(stderr, "herald tenant: unknown subcommand '%s' (add, list, rotate-key)\n", sub);
    rc = 2;
  }
  json_decref(j);
out:
  json_decref(apps);
  json_decref(self);
  return rc;
}

enum { O_TENANT = 256, O_KEY, O_DATA, O_ZMQ, O_URL, O_ADMIN_KEY, O_APP, O_TO, O_TTL, O_COLLAPSE, O_COUNT,
       O_WINDOW, O_DEVICE, O_ACK, O_WAIT };

/* Options before the command are the common ones; after it, the command's too. Returns 0, or
 * the exit code (help: -1 meaning "done, exit 0"). */
static int parse_opts(int argc, char **argv, opts *o, int command_opts) {
  static const struct option lo[] = {
      {"tenant", 1, 0, O_TENANT}, {"key", 1, 0, O_KEY},     {"data-dir", 1, 0, O_DATA},
      {"zmq", 1, 0, O_ZMQ},       {"url", 1, 0, O_URL},     {"app", 1, 0, O_APP},
      {"to", 1, 0, O_TO},         {"ttl", 1, 0, O_TTL},     {"collapse", 1, 0, O_COLLAPSE},
      {"count", 1, 0, O_COUNT},   {"window", 1, 0, O_WINDOW}, {"device", 1, 0, O_DEVICE},
      {"ack", 0, 0, O_ACK},       {"wait", 1, 0, O_WAIT},   {"help", 0, 0, 'h'},
      {"admin-key", 1, 0, O_ADMIN_KEY},
      {0, 0, 0, 0}};
  int c;
  while ((c = getopt_long(argc, argv, "+h", lo, NULL)) != -1) {
    if (!command_opts && c >= O_APP) {
      fprintf(stderr, "herald: --app, --to, --ttl, --collapse, --count, --window, --device, "
                      "--ack and --wait go after the command\n");
      return 2;
    }
    switch (c) {
    case O_TENANT: o->tenant = optarg; break;
    case O_KEY: o->key = optarg; break;
    case O_DATA: o->data_dir = optarg; break;
    case O_ZMQ: o->zmq = optarg; break;
    case O_URL: o->url = optarg; break;
    case O_ADMIN_KEY: o->admin_key = optarg; break;
    case O_APP: o->app = optarg; break;
    case O_TO: o->to = optarg; break;
    case O_TTL: o->ttl = atol(optarg); break;
    case O_COLLAPSE: o->collapse = optarg; break;
    case O_COUNT: o->count = atol(optarg); break;
    case O_WINDOW: o->window = atol(optarg); break;
    case O_DEVICE: o->device = optarg; break;
    case O_ACK: o->ack = 1; break;
    case O_WAIT: o->wait = atol(optarg); break;
    case 'h': usage(stdout); return -1;
    default: usage(stderr); return 2;
    }
  }
  return 0;
}

/* ---- releases and reports (publish key) ---- */

/* --rollout "10%" / "0.5" -> what the API takes ("10", "0.5"). */
static const char *rollout_arg(const char *v, char *out, size_t len) {
  snprintf(out, len, "%s", v);
  size_t n = strlen(out);
  if (n && out[n - 1] == '%') out[n - 1] = 0;
  return out;
}

static size_t read_file(char *d, size_t sz, size_t n, void *ud) {
  return fread(d, 1, sz * n, (FILE *)ud); /* 0 at the end; a read error ends the body short */
}

/* POST the package as the request body, streamed from the file (never whole in memory). */
static long http_upload(const char *url, const char *key, const char *path, buf *out) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "herald: %s: %s\n", path, strerror(errno));
    return -1;
  }
  struct stat st;
  if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
    fprintf(stderr, "herald: %s: not a regular file\n", path);
    fclose(f);
    return -1;
  }
  CURL *c = curl_easy_init();
  struct curl_slist *hs = NULL;
  char hdr[700];
  long status = -1;
  out->p = NULL;
  out->len = 0;
  snprintf(hdr, sizeof hdr, "Authorization: Bearer %s", key);
  hs = curl_slist_append(hs, hdr);
  hs = curl_slist_append(hs, "Content-Type: application/octet-stream");
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "POST");
  curl_easy_setopt(c, CURLOPT_READFUNCTION, read_file);
  curl_easy_setopt(c, CURLOPT_READDATA, f);
  curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)st.st_size);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, hs);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
  CURLcode rc = curl_easy_perform(c);
  if (rc == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  else fprintf(stderr, "herald: POST %s: %s\n", url, curl_easy_strerror(rc));
  curl_slist_free_all(hs);
  curl_easy_cleanup(c);
  fclose(f);
  return status;
}

/* An answer with one of the two statuses wanted: 0 and its JSON, else 1 after saying why. */
static int api_answer(long st, buf *b, long want, long want2, json_t **out) {
  json_t *j = b->p ? json_loads(b->p, 0, NULL) : NULL;
  if ((st != want && st != want2) || !j) {
    const char *m = j ? json_string_value(json_object_get(j, "message")) : NULL;
    if (st > 0) fprintf(stderr, "herald: %ld %s\n", st, m ? m : (b->p ? b->p : ""));
    json_decref(j);
    free(b->p);
    return 1;
  }
  free(b->p);
  *out = j;
  return 0;
}

static void print_release(json_t *r, int as_json) {
  if (as_json) {
    char *s = json_dumps(r, JSON_COMPACT);
    printf("%s\n", s);
    free(s);
    return;
  }
  json_t *code = json_object_get(r, "code"), *ro = json_object_get(r, "rollout");
  printf("%-16s %-10s %-9s %7g%% %12lld  %.16s  %s%s\n",
         json_string_value(json_object_get(r, "version")),
         json_is_integer(code) ? "" : "-", json_string_value(json_object_get(r, "state")),
         json_number_value(ro), (long long)json_integer_value(json_object_get(r, "size")),
         json_string_value(json_object_get(r, "sha256")),
         json_is_true(json_object_get(r, "required")) ? "required " : "",
         json_string_value(json_object_get(r, "notes")));
  if (json_is_integer(code)) printf("%16s code %lld\n", "", (long long)json_integer_value(code));
}

enum { R_APP = 2000, R_VERSION, R_FILE, R_NOTES, R_ROLLOUT, R_CODE, R_REQUIRED, R_NOT_REQUIRED,
       R_PAUSE, R_RESUME, R_WITHDRAW, R_JSON, R_TENANT, R_KEY, R_URL, R_DATA };

/* herald release add|list|set and herald report: options after the command word(s). */
static int cmd_release(opts *o, int argc, char **argv, int report) {
  static const struct option lo[] = {
      {"app", 1, 0, R_APP},         {"version", 1, 0, R_VERSION},   {"file", 1, 0, R_FILE},
      {"notes", 1, 0, R_NOTES},     {"rollout", 1, 0, R_ROLLOUT},   {"code", 1, 0, R_CODE},
      {"required", 0, 0, R_REQUIRED}, {"not-required", 0, 0, R_NOT_REQUIRED},
      {"pause", 0, 0, R_PAUSE},     {"resume", 0, 0, R_RESUME},
      {"withdraw", 0, 0, R_WITHDRAW},
      {"json", 0, 0, R_JSON},       {"tenant", 1, 0, R_TENANT},     {"key", 1, 0, R_KEY},
      {"url", 1, 0, R_URL},         {"data-dir", 1, 0, R_DATA},     {0, 0, 0, 0}};
  const char *sub = report ? "report" : NULL, *app = NULL, *version = NULL, *file = NULL;
  const char *notes = NULL, *rollout = NULL, *code = NULL, *state = NULL;
  int required = -1, as_json = 0, c;
  int first = optind - 1; /* see cmd_tenant: a fresh scan of what follows the command */
  argc -= first;
  argv += first;
  optind = 0;
  while ((c = getopt_long(argc, argv, "-", lo, NULL)) != -1) {
    switch (c) {
    case 1:
      if (sub) {
        fprintf(stderr, "herald %s: unexpected '%s'\n", report ? "report" : "release", optarg);
        return 2;
      }
      sub = optarg;
      break;
    case R_APP: app = optarg; break;
    case R_VERSION: version = optarg; break;
    case R_FILE: file = optarg; break;
    case R_NOTES: notes = optarg; break;
    case R_ROLLOUT: rollout = optarg; break;
    case R_CODE: code = optarg; break;
    case R_REQUIRED: required = 1; break;
    case R_NOT_REQUIRED: required = 0; break;
    case R_PAUSE: state = "paused"; break;
    case R_RESUME: state = "active"; break;
    case R_WITHDRAW: state = "withdrawn"; break;
    case R_JSON: as_json = 1; break;
    case R_TENANT: o->tenant = optarg; break;
    case R_KEY: o->key = optarg; break;
    case R_URL: o->url = optarg; break;
    case R_DATA: o->data_dir = optarg; break;
    default: return 2;
    }
  }
  int add = sub && !strcmp(sub, "add"), list = sub && !strcmp(sub, "list");
  int set = sub && !strcmp(sub, "set");
  if (!report && !add && !list && !set) {
    fprintf(stderr, "herald release: add | list | set (see herald --help)\n");
    return 2;
  }
  if ((!report && !app) || ((add || set) && !version) || (add && !file)) {
    fprintf(stderr, "herald %s: needs %s\n", report ? "report" : sub,
            add ? "--app, --version and --file" : set ? "--app and --version" : "--app");
    return 2;
  }
  char key[512], url[4096], rbuf[32];
  if (load_key(o, key, sizeof key)) return 1;
  CURL *esc = curl_easy_init();
  char *e_app = app ? curl_easy_escape(esc, app, 0) : NULL;
  char *e_ver = version ? curl_easy_escape(esc, version, 0) : NULL;
  buf b;
  json_t *j = NULL;
  int rc = 1;
  if (add) {
    char *e_notes = notes ? curl_easy_escape(esc, notes, 0) : NULL;
    char *e_ro =
        rollout ? curl_easy_escape(esc, rollout_arg(rollout, rbuf, sizeof rbuf), 0) : NULL;
    char *e_code = code ? curl_easy_escape(esc, code, 0) : NULL;
    snprintf(url, sizeof url, "%s/v1/apps/%s/releases?version=%s%s%s%s%s%s%s%s", o->url, e_app,
             e_ver, e_notes ? "&notes=" : "", e_notes ? e_notes : "", e_ro ? "&rollout=" : "",
             e_ro ? e_ro : "", e_code ? "&code=" : "", e_code ? e_code : "",
             required == 1 ? "&required=1" : "");
    curl_free(e_notes);
    curl_free(e_ro);
    curl_free(e_code);
    long st = http_upload(url, key, file, &b);
    if (api_answer(st, &b, 201, 200, &j)) goto out;
    if (!as_json)
      printf("%s %s %s\n", st == 201 ? "added" : "already there (same package):", app, version);
    print_release(j, as_json);
  } else if (list) {
    snprintf(url, sizeof url, "%s/v1/apps/%s/releases", o->url, e_app);
    long st = http("GET", url, key, NULL, &b, 30);
    if (api_answer(st, &b, 200, 200, &j)) goto out;
    json_t *arr = json_object_get(j, "releases"), *r;
    size_t i;
    if (!as_json)
      printf("%-16s %-10s %-9s %8s %12s  %-16s  %s\n", "VERSION", "", "STATE", "ROLLOUT", "SIZE",
             "SHA256", "NOTES");
    json_array_foreach(arr, i, r) print_release(r, as_json);
  } else if (set) {
    json_t *body = json_object();
    if (rollout) {
      json_object_set_new(body, "rollout", json_string(rollout_arg(rollout, rbuf, sizeof rbuf)));
    }
    if (state) json_object_set_new(body, "state", json_string(state));
    if (required >= 0) json_object_set_new(body, "required", json_boolean(required));
    if (!json_object_size(body)) {
      fprintf(stderr, "herald release set: give --rollout P, --pause, --resume, --withdraw, "
                      "--required or --not-required\n");
      json_decref(body);
      rc = 2;
      goto out;
    }
    char *s = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    snprintf(url, sizeof url, "%s/v1/apps/%s/releases/%s", o->url, e_app, e_ver);
    long st = http("PATCH", url, key, s, &b, 30);
    free(s);
    if (api_answer(st, &b, 200, 200, &j)) goto out;
    print_release(j, as_json);
  } else {
    snprintf(url, sizeof url, "%s/v1/reports%s%s%s%s", o->url, e_app ? "?app=" : "",
             e_app ? e_app : "", e_ver ? (e_app ? "&version=" : "?version=") : "",
             e_ver ? e_ver : "");
    long st = http("GET", url, key, NULL, &b, 30);
    if (api_answer(st, &b, 200, 200, &j)) goto out;
    json_t *arr = json_object_get(j, "reports"), *r;
    size_t i;
    if (!as_json)
      printf("%-20s %-16s %9s %9s %9s %9s  %s\n", "APP", "VERSION", "NOTIFIED", "DOWNLOADS",
             "SUCCESS", "FAILURE", "REASONS");
    json_array_foreach(arr, i, r) {
      if (as_json) {
        char *s = json_dumps(r, JSON_COMPACT);
        printf("%s\n", s);
        free(s);
        continue;
      }
      printf("%-20s %-16s %9lld %9lld %9lld %9lld  ",
             json_string_value(json_object_get(r, "app")),
             json_string_value(json_object_get(r, "version")),
             (long long)json_integer_value(json_object_get(r, "notified")),
             (long long)json_integer_value(json_object_get(r, "downloads")),
             (long long)json_integer_value(json_object_get(r, "success")),
             (long long)json_integer_value(json_object_get(r, "failure")));
      const char *reason;
      json_t *n;
      int k = 0;
      json_object_foreach(json_object_get(r, "reasons"), reason, n)
        printf("%s%s=%lld", k++ ? ", " : "", reason, (long long)json_integer_value(n));
      printf("%s\n", k ? "" : "-");
    }
  }
  rc = 0;
out:
  json_decref(j);
  curl_free(e_app);
  curl_free(e_ver);
  curl_easy_cleanup(esc);
  return rc;
}

int main(int argc, char **argv) {
  opts o = {.tenant = "default", .data_dir = "./var/herald", .zmq = "tcp://127.0.0.1:8471",
            .url = "http://127.0.0.1:8470", .wait = 30};
  int rc = parse_opts(argc, argv, &o, 0);
  if (rc) return rc < 0 ? 0 : rc;
  if (optind >= argc) {
    usage(stderr);
    return 2;
  }
  const char *cmd = argv[optind];
  optind++;
  if (strcmp(cmd, "tenant") == 0) {
    /* Subcommands with options of their own: parsed there. */
    curl_global_init(CURL_GLOBAL_DEFAULT);
    rc = cmd_tenant(&o, argc, argv);
    curl_global_cleanup();
    return rc;
  }
  if (strcmp(cmd, "release") == 0 || strcmp(cmd, "report") == 0) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    rc = cmd_release(&o, argc, argv, strcmp(cmd, "report") == 0);
    curl_global_cleanup();
    return rc;
  }
  if ((rc = parse_opts(argc, argv, &o, 1))) return rc < 0 ? 0 : rc;
  curl_global_init(CURL_GLOBAL_DEFAULT);
  if (strcmp(cmd, "publish") == 0) rc = cmd_publish(&o, optind < argc ? argv[optind] : NULL);
  else if (strcmp(cmd, "tail") == 0) rc = cmd_tail(&o);
  else if (strcmp(cmd, "stats") == 0) rc = cmd_stats(&o);
  else {
    fprintf(stderr, "herald: unknown command '%s'\n", cmd);
    usage(stderr);
    rc = 2;
  }
  curl_global_cleanup();
  return rc;
}
