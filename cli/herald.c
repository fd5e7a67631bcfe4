/* herald — the operator's command line for a running heraldd.
 *
 *   herald publish --app A [--to DEVICE] [--ttl S] [--collapse K] [--count N --window W] DATA
 *   herald tail    --app A --device D [--ack] [--wait S]
 *   herald stats
 *
 * It finds the tenant's publish key on its own: --key, else $HERALD_KEY, else
 * <data dir>/tenants/<tenant>/publish.key (data dir: --data-dir, default ./var/herald), which
 * is where heraldd keeps a key it generated. Publishing goes over ZeroMQ (DEALER, so many
 * requests can be in flight); tail and stats over HTTP with libcurl.
 */
#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

typedef struct opts {
  const char *tenant, *key, *data_dir, *zmq, *url, *app, *to, *collapse, *device;
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
          "common options:\n"
          "  --tenant T     tenant (default: default)\n"
          "  --key K        publish key (default: $HERALD_KEY, then the key file)\n"
          "  --data-dir D   heraldd's data dir, to find the key file (default ./var/herald)\n"
          "  --zmq E        ZeroMQ ingress (default tcp://127.0.0.1:8471)\n"
          "  --url U        HTTP base URL (default http://127.0.0.1:8470)\n");
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

enum { O_TENANT = 256, O_KEY, O_DATA, O_ZMQ, O_URL, O_APP, O_TO, O_TTL, O_COLLAPSE, O_COUNT,
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
