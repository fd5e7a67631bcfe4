/* tenant.c — tenants, their secrets on disk, and device tokens (see tenant.h). */
#include "tenant.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bytes.h"
#include "clock.h"
#include "herald/error.h"
#include "log.h"
#include "writer.h"

static void b64url(const unsigned char *in, size_t n, char *out) {
  static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  size_t o = 0, i = 0;
  for (; i + 2 < n; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
    out[o++] = tbl[v >> 18 & 63];
    out[o++] = tbl[v >> 12 & 63];
    out[o++] = tbl[v >> 6 & 63];
    out[o++] = tbl[v & 63];
  }
  if (n - i == 1) {
    uint32_t v = (uint32_t)in[i] << 16;
    out[o++] = tbl[v >> 18 & 63];
    out[o++] = tbl[v >> 12 & 63];
  } else if (n - i == 2) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
    out[o++] = tbl[v >> 18 & 63];
    out[o++] = tbl[v >> 12 & 63];
    out[o++] = tbl[v >> 6 & 63];
  }
  out[o] = 0;
}

int hd__random_id(char *out, size_t outlen, size_t nbytes) {
  unsigned char buf[64];
  if (nbytes > sizeof buf || outlen < (nbytes * 4 + 2) / 3 + 1) return HD_EINVAL;
  if (RAND_bytes(buf, (int)nbytes) != 1) return HD_EIO;
  b64url(buf, nbytes, out);
  return 0;
}

int hd__valid_id(const char *s) {
  size_t n = 0;
  for (; s[n]; n++) {
    char c = s[n];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          c == '.' || c == '_' || c == '-' || c == ':'))
      return 0;
  }
  return n >= 1 && n <= HD_STORE_MAX_ID;
}

static int mkdirs(const char *path) {
  char tmp[4096];
  if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp) return HD_EINVAL;
  for (char *p = tmp + 1; *p; p++) {
    if (*p != '/') continue;
    *p = 0;
    if (mkdir(tmp, 0700) != 0 && errno != EEXIST) return HD_EIO;
    *p = '/';
  }
  if (mkdir(tmp, 0700) != 0 && errno != EEXIST) return HD_EIO;
  return 0;
}

int hd__secret_read(const char *path, char *buf, size_t buflen, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return errno == ENOENT ? HD_ENOTFOUND : HD_EIO;
  size_t n = fread(buf, 1, buflen - 1, f);
  int bad = ferror(f);
  fclose(f);
  if (bad) return HD_EIO;
  while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ')) n--;
  buf[n] = 0;
  *len = n;
  return 0;
}

int hd__secret_write(const char *path, const void *data, size_t len) {
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return HD_EIO;
  ssize_t w = write(fd, data, len);
  int ok = w == (ssize_t)len && fsync(fd) == 0;
  close(fd);
  if (!ok || rename(tmp, path) != 0) {
    unlink(tmp);
    return HD_EIO;
  }
  return 0;
}

static char **copy_list(char **src, size_t n) {
  char **v = calloc(n ? n : 1, sizeof *v);
  if (!v) return NULL;
  for (size_t i = 0; i < n; i++)
    if (!(v[i] = strdup(src[i]))) {
      while (i) free(v[--i]);
      free(v);
      return NULL;
    }
  return v;
}

static void free_list(char **v, size_t n) {
  for (size_t i = 0; v && i < n; i++) free(v[i]);
  free(v);
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A sorted copy of the pointers of v (the strings stay v's). NULL on ENOMEM. */
static char **sorted_view(char **v, size_t n) {
  char **s = calloc(n ? n : 1, sizeof *s);
  if (!s) return NULL;
  if (n) memcpy(s, v, n * sizeof *s);
  qsort(s, n, sizeof *s, cmp_str);
  return s;
}

void hd__tenant_free(hd_tenant *t) {
  if (!t) return;
  free(t->name);
  free(t->apps_sorted);
  free(t->self_sorted);
  free_list(t->apps, t->napps);
  free_list(t->self_register, t->nself);
  free_list(t->origins, t->norigins);
  hd__ratelimit_free(t->self_limit);
  hd__ratelimit_free(t->pub_limit);
  EVP_MAC_CTX_free(t->token_mac);
  OPENSSL_cleanse(t->device_secret, sizeof t->device_secret);
  OPENSSL_cleanse(t->publish_key, sizeof t->publish_key);
  OPENSSL_cleanse(t->previous_key, sizeof t->previous_key);
  free(t);
}

hd_tenant *hd__tenant_new(const hd_tenant_conf *tc) {
  hd_tenant *t = calloc(1, sizeof *t);
  if (!t) return NULL;
  t->name = strdup(tc->name);
  t->any_app = tc->napps == 1 && strcmp(tc->apps[0], "*") == 0;
  t->napps = tc->napps;
  t->apps = copy_list(tc->apps, tc->napps);
  t->self_any = tc->nself_register == 1 && strcmp(tc->self_register[0], "*") == 0;
  t->nself = tc->nself_register;
  t->self_register = copy_list(tc->self_register, tc->nself_register);
  t->origins_any = tc->nallowed_origins == 1 && strcmp(tc->allowed_origins[0], "*") == 0;
  t->norigins = tc->nallowed_origins;
  t->origins = copy_list(tc->allowed_origins, tc->nallowed_origins);
  t->token_ttl_s = tc->device_token_ttl_s;
  int bad = !t->name || !t->apps || !t->self_register || !t->origins;
  if (!bad) {
    t->apps_sorted = sorted_view(t->apps, t->napps);
    t->self_sorted = sorted_view(t->self_register, t->nself);
    bad = !t->apps_sorted || !t->self_sorted;
  }
  if (tc->self_register_per_min > 0 &&
      !(t->self_limit = hd__ratelimit_new((double)tc->self_register_per_min,
                                          (double)tc->self_register_per_min, 4096)))
    bad = 1;
  if (tc->max_publish_rate > 0) {
    /* One bucket for the whole tenant: HTTP and ZeroMQ publishes draw from the same budget. */
    t->max_publish_rate = tc->max_publish_rate;
    t->publish_burst = tc->publish_burst > 0 ? tc->publish_burst : tc->max_publish_rate;
    if (!(t->pub_limit = hd__ratelimit_new((double)t->max_publish_rate * 60.0,
                                           (double)t->publish_burst, 1)))
      bad = 1;
  }
  if (bad) {
    hd__tenant_free(t);
    return NULL;
  }
  return t;
}

static void name_put(hd_tenant **slots, size_t n, hd_tenant *t) {
  size_t i = (size_t)hd_fnv1a(t->name) & (n - 1);
  while (slots[i]) i = (i + 1) & (n - 1);
  slots[i] = t;
}

/* Room in the name index for one more tenant (kept at most half full). 0 or HD_ENOMEM. */
static int names_reserve(hd_tenants *ts) {
  if ((ts->n + 1) * 2 <= ts->nnames) return 0;
  size_t n = ts->nnames ? ts->nnames * 2 : 16;
  hd_tenant **v = calloc(n, sizeof *v);
  if (!v) return HD_ENOMEM;
  for (size_t i = 0; i < ts->n; i++) name_put(v, n, ts->v[i]);
  free(ts->names);
  ts->names = v;
  ts->nnames = n;
  return 0;
}

int hd__tenants_add(hd_tenants *ts, hd_tenant *t) {
  if (names_reserve(ts)) return HD_ENOMEM;
  if (ts->n == ts->cap) {
    size_t cap = ts->cap ? ts->cap * 2 : 8;
    hd_tenant **v = realloc(ts->v, cap * sizeof *v);
    if (!v) return HD_ENOMEM;
    ts->v = v;
    ts->cap = cap;
  }
  ts->v[ts->n++] = t;
  name_put(ts->names, ts->nnames, t);
  ts->keys_stale = 1;
  return 0;
}

void hd__tenants_keys_changed(hd_tenants *ts) { ts->keys_stale = 1; }

/* previous.key of a runtime tenant: "<key>\n<until Unix ms>\n". */
static int read_previous(const char *dir, hd_tenant *t) {
  char path[4200], buf[400];
  size_t len;
  snprintf(path, sizeof path, "%s/previous.key", dir);
  int rc = hd__secret_read(path, buf, sizeof buf, &len);
  if (rc == HD_ENOTFOUND) return 0;
  if (rc) return rc;
  char *nl = strchr(buf, '\n');
  if (!nl) return HD_EIO;
  *nl = 0;
  char *end;
  long long until = strtoll(nl + 1, &end, 10);
  size_t kl = (size_t)(nl - buf);
  if (end == nl + 1 || kl >= sizeof t->previous_key) return HD_EIO;
  memcpy(t->previous_key, buf, kl + 1);
  t->previous_until_ms = until;
  OPENSSL_cleanse(buf, sizeof buf);
  return 0;
}

int hd__tenant_keys_load(hd_tenant *t, const hd_tenant_conf *tc, const char *data_dir,
                         int runtime, char *err, size_t errlen) {
  char dir[4096], path[4200], buf[512];
  size_t len;
  int rc;
  snprintf(dir, sizeof dir, "%s/tenants/%s", data_dir, tc->name);
  if ((rc = mkdirs(dir))) {
    snprintf(err, errlen, "tenant %s: cannot create %s", tc->name, dir);
    return rc;
  }
  /* Publish key: the config's, else the one kept on disk, else a new one. */
  snprintf(path, sizeof path, "%s/publish.key", dir);
  if (tc->publish_key) {
    snprintf(t->publish_key, sizeof t->publish_key, "%s", tc->publish_key);
  } else if ((rc = hd__secret_read(path, buf, sizeof t->publish_key, &len)) == 0 && len >= 32) {
    memcpy(t->publish_key, buf, len + 1);
  } else {
    if ((rc = hd__random_id(t->publish_key, sizeof t->publish_key, 32))) return rc;
    if ((rc = hd__secret_write(path, t->publish_key, strlen(t->publish_key)))) {
      snprintf(err, errlen, "tenant %s: cannot write %s", tc->name, path);
      return rc;
    }
    /* The one time the key is shown: operators copy it from here or read the file. */
    hd__log(HD_LOG_WARN, "publish_key_generated", "tenant=%s key=%s file=%s", tc->name,
            t->publish_key, path);
  }
  /* A key being rotated out: accepted alongside the current one until the overlap ends. */
  if (runtime) {
    if ((rc = read_previous(dir, t))) {
      snprintf(err, errlen, "tenant %s: cannot read %s/previous.key", tc->name, dir);
      return rc;
    }
  } else if (tc->previous_publish_key) {
    int64_t until;
    if (hd__config_parse_time(tc->previous_key_until, &until) != 0 ||
        until > INT64_MAX / 1000) {
      snprintf(err, errlen, "tenant %s: bad previous_key_until", tc->name);
      return HD_ECONFIG;
    }
    snprintf(t->previous_key, sizeof t->previous_key, "%s", tc->previous_publish_key);
    t->previous_until_ms = until * 1000;
  }
  /* Device-token secret: never configured, never shown. */
  snprintf(path, sizeof path, "%s/device.secret", dir);
  rc = hd__secret_read(path, buf, sizeof buf, &len);
  if (rc == 0 && len == 64) {
    for (size_t i = 0; i < 32; i++) {
      unsigned v;
      if (sscanf(buf + 2 * i, "%2x", &v) != 1) return HD_EIO;
      t->device_secret[i] = (unsigned char)v;
    }
  } else {
    if (RAND_bytes(t->device_secret, 32) != 1) return HD_EIO;
    for (size_t i = 0; i < 32; i++) snprintf(buf + 2 * i, 3, "%02x", t->device_secret[i]);
    if ((rc = hd__secret_write(path, buf, 64))) {
      snprintf(err, errlen, "tenant %s: cannot write %s", tc->name, path);
      return rc;
    }
  }
  OPENSSL_cleanse(buf, sizeof buf);
  return 0;
}

static int fsync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return HD_EIO;
  int rc = fsync(fd) == 0 ? 0 : HD_EIO;
  close(fd);
  return rc;
}

int hd__tenant_files_write(const char *data_dir, const char *name, const char *publish_key,
                           const unsigned char *secret, const char *previous_key,
                           int64_t previous_until_ms) {
  char dir[4096], path[4200], buf[400];
  int rc;
  if (snprintf(dir, sizeof dir, "%s/tenants/%s", data_dir, name) >= (int)sizeof dir)
    return HD_EINVAL;
  if ((rc = mkdirs(dir))) return rc;
  snprintf(path, sizeof path, "%s/previous.key", dir);
  if (previous_key) {
    int n = snprintf(buf, sizeof buf, "%s\n%lld\n", previous_key, (long long)previous_until_ms);
    if (n < 0 || n >= (int)sizeof buf) return HD_EINVAL;
    rc = hd__secret_write(path, buf, (size_t)n);
    OPENSSL_cleanse(buf, sizeof buf);
    if (rc) return rc;
  } else if (unlink(path) != 0 && errno != ENOENT) {
    return HD_EIO;
  }
  if (secret) {
    for (size_t i = 0; i < 32; i++) snprintf(buf + 2 * i, 3, "%02x", secret[i]);
    snprintf(path, sizeof path, "%s/device.secret", dir);
    rc = hd__secret_write(path, buf, 64);
    OPENSSL_cleanse(buf, sizeof buf);
    if (rc) return rc;
  }
  snprintf(path, sizeof path, "%s/publish.key", dir);
  if ((rc = hd__secret_write(path, publish_key, strlen(publish_key)))) return rc;
  /* The renames are durable only once the directory is. */
  return fsync_dir(dir);
}

static int load_one(hd_tenants *ts, const hd_tenant_conf *tc, const char *data_dir,
                    hd_store *store, char *err, size_t errlen) {
  int rc;
  hd_tenant *t = hd__tenant_new(tc);
  if (!t) return HD_ENOMEM;
  if ((rc = hd__tenants_add(ts, t))) {
    hd__tenant_free(t);
    return rc;
  }
  if ((rc = hd__tenant_keys_load(t, tc, data_dir, 0, err, errlen))) return rc;
  hd__tenants_keys_changed(ts);
  hd_op op = {.kind = HD_OP_TENANT};
  op.u.tenant.name = tc->name;
  op.u.tenant.apps = (const char *const *)tc->apps;
  op.u.tenant.napps = tc->napps;
  if ((rc = hd__writer_run_now(store, &op))) {
    snprintf(err, errlen, "tenant %s: store: %s", tc->name, hd_strerror(rc));
    return rc;
  }
  t->num = op.u.tenant.tenant_num;
  return 0;
}

int hd__tenants_load(hd_tenants *ts, const hd_config *cfg, hd_store *store, char *err,
                     size_t errlen) {
  memset(ts, 0, sizeof *ts);
  for (size_t i = 0; i < cfg->ntenants; i++) {
    int rc = load_one(ts, &cfg->tenants[i], cfg->data_dir, store, err, errlen);
    if (rc) {
      if (!*err) snprintf(err, errlen, "tenant %s: %s", cfg->tenants[i].name, hd_strerror(rc));
      return rc;
    }
  }
  return 0;
}

void hd__tenants_free(hd_tenants *ts) {
  for (size_t i = 0; i < ts->n; i++) hd__tenant_free(ts->v[i]);
  free(ts->v);
  free(ts->slots);
  free(ts->names);
  EVP_MAC_CTX_free(ts->sip);
  memset(ts, 0, sizeof *ts);
}

hd_tenant *hd__tenant_by_name(const hd_tenants *ts, const char *name) {
  if (!ts->nnames) return NULL; /* no tenant added yet */
  size_t mask = ts->nnames - 1;
  for (size_t i = (size_t)hd_fnv1a(name) & mask; ts->names[i]; i = (i + 1) & mask)
    if (strcmp(ts->names[i]->name, name) == 0) return ts->names[i];
  return NULL;
}

/* 1 if key equals k; the comparison costs the same wherever they differ. */
static int key_eq(const char *k, const char *key, size_t kl) {
  return strlen(k) == kl && CRYPTO_memcmp(k, key, kl) == 0;
}

/* The keyed hash of a publish key, in *h: 0, or -1 if OpenSSL fails. */
static int key_hash(hd_tenants *ts, const char *key, size_t kl, uint64_t *h) {
  if (!ts->sip) {
    static EVP_MAC *sip; /* fetched once for the process; loop thread only */
    unsigned char k[16];
    size_t out = 8;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_size_t(OSSL_MAC_PARAM_SIZE, &out),
                           OSSL_PARAM_construct_end()};
    if (!sip && !(sip = EVP_MAC_fetch(NULL, "SIPHASH", NULL))) return -1;
    EVP_MAC_CTX *c = EVP_MAC_CTX_new(sip);
    int ok = c && RAND_bytes(k, sizeof k) == 1 && EVP_MAC_init(c, k, sizeof k, params) == 1;
    OPENSSL_cleanse(k, sizeof k);
    if (!ok) {
      EVP_MAC_CTX_free(c);
      return -1;
    }
    ts->sip = c;
  }
  unsigned char d[8];
  size_t dl = 0;
  /* EVP_MAC_init with no key starts a new MAC under the key already set. */
  if (EVP_MAC_init(ts->sip, NULL, 0, NULL) != 1 ||
      EVP_MAC_update(ts->sip, (const unsigned char *)key, kl) != 1 ||
      EVP_MAC_final(ts->sip, d, &dl, sizeof d) != 1 || dl != sizeof d)
    return -1;
  *h = hd_rd64(d);
  return 0;
}

static int index_put(hd_tenants *ts, hd_tenant *t, int previous) {
  const char *k = previous ? t->previous_key : t->publish_key;
  uint64_t h;
  if (!*k) return 0; /* no key (yet): nothing a lookup could match */
  if (key_hash(ts, k, strlen(k), &h)) return -1;
  size_t i = (size_t)h & (ts->nslots - 1);
  while (ts->slots[i].t) i = (i + 1) & (ts->nslots - 1);
  ts->slots[i] = (hd_key_slot){.hash = h, .t = t, .previous = previous};
  return 0;
}

/* Build the index from every tenant's keys. 0, or -1 (ENOMEM, OpenSSL): no index. */
static int index_build(hd_tenants *ts) {
  size_t want = 16;
  while (want < 4 * ts->n) want *= 2; /* two keys a tenant at most: at most half full */
  if (want != ts->nslots) {
    hd_key_slot *v = realloc(ts->slots, want * sizeof *v);
    if (!v) return -1;
    ts->slots = v;
    ts->nslots = want;
  }
  memset(ts->slots, 0, ts->nslots * sizeof *ts->slots);
  for (size_t i = 0; i < ts->n; i++) {
    hd_tenant *t = ts->v[i];
    if (index_put(ts, t, 0) || index_put(ts, t, 1)) {
      ts->nslots = 0; /* half an index would refuse good keys */
      return -1;
    }
  }
  ts->keys_stale = 0;
  return 0;
}

/* 1 if the candidate slot's key is key and still valid at now_ms. */
static int slot_matches(const hd_key_slot *s, const char *key, size_t kl, int64_t now_ms) {
  if (s->previous)
    return key_eq(s->t->previous_key, key, kl) & (now_ms < s->t->previous_until_ms);
  return key_eq(s->t->publish_key, key, kl);
}

hd_tenant *hd__tenant_by_key_at(hd_tenants *ts, const char *key, int64_t now_ms) {
  size_t kl = strlen(key);
  hd_tenant *found = NULL;
  uint64_t h;
  if (kl == 0) return NULL;
  if (ts->n > HD_KEY_SCAN_MAX && (!ts->keys_stale || index_build(ts) == 0) && ts->nslots &&
      key_hash(ts, key, kl, &h) == 0) {
    /* Only keys with the same keyed hash are compared: which ones that is depends on a key
     * the caller does not know, so the time taken tells nothing about the stored keys. */
    for (size_t i = (size_t)h & (ts->nslots - 1); ts->slots[i].t; i = (i + 1) & (ts->nslots - 1))
      if (ts->slots[i].hash == h && slot_matches(&ts->slots[i], key, kl, now_ms))
        found = ts->slots[i].t;
    return found;
  }
  /* Few tenants (or no index): compare against every key of every tenant, always in full, so
   * timing tells nothing about the keys (nor whether a tenant is in a rotation). */
  for (size_t i = 0; i < ts->n; i++) {
    hd_tenant *t = ts->v[i];
    int cur = key_eq(t->publish_key, key, kl);
    int prev = key_eq(t->previous_key, key, kl) & (now_ms < t->previous_until_ms);
    if (cur | prev) found = t;
  }
  return found;
}

hd_tenant *hd__tenant_by_key(hd_tenants *ts, const char *key) {
  return hd__tenant_by_key_at(ts, key, hd__wall_ms());
}

static int in_sorted(char **v, size_t n, const char *s) {
  return n && bsearch(&s, v, n, sizeof *v, cmp_str) != NULL;
}

int hd__tenant_has_app(const hd_tenant *t, const char *appid) {
  return hd__valid_id(appid) && (t->any_app || in_sorted(t->apps_sorted, t->napps, appid));
}

int hd__tenant_self_register(const hd_tenant *t, const char *appid) {
  if (!hd__tenant_has_app(t, appid)) return 0;
  return t->self_any || in_sorted(t->self_sorted, t->nself, appid);
}

int hd__tenant_allows_origin(const hd_tenant *t, const char *origin) {
  if (!t || !origin || !*origin || strcmp(origin, "null") == 0) return 0;
  if (t->origins_any) return 1;
  for (size_t i = 0; i < t->norigins; i++)
    if (strcasecmp(t->origins[i], origin) == 0) return 1;
  return 0;
}

/* The tenant's keyed HMAC context, ready for a new message: made once (key schedule and the
 * algorithm fetch), then re-initialised with the same key. It is a cache of what device_secret
 * determines, hence the cast from const. NULL when OpenSSL fails. */
static EVP_MAC_CTX *token_ctx(const hd_tenant *ct) {
  hd_tenant *t = (hd_tenant *)ct;
  if (t->token_mac) return EVP_MAC_init(t->token_mac, NULL, 0, NULL) == 1 ? t->token_mac : NULL;
  static EVP_MAC *hmac; /* fetched once for the process; loop thread only */
  if (!hmac && !(hmac = EVP_MAC_fetch(NULL, "HMAC", NULL))) return NULL;
  EVP_MAC_CTX *c = EVP_MAC_CTX_new(hmac);
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
                         OSSL_PARAM_construct_end()};
  if (!c || EVP_MAC_init(c, t->device_secret, sizeof t->device_secret, params) != 1) {
    EVP_MAC_CTX_free(c);
    return NULL;
  }
  t->token_mac = c;
  return c;
}

static int token_mac(const hd_tenant *t, const char *device_id, uint32_t gen, int64_t exp_s,
                     char *out) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  size_t maclen = 0;
  /* "herald-device-v2" NUL tenant NUL device NUL gen NUL exp, numbers in decimal (built by
   * hand: snprintf was a third of a token check) */
  static const char tag[] = "herald-device-v2";
  char msg[512];
  size_t tl = strlen(t->name), dl = strlen(device_id), n = sizeof tag;
  if (exp_s < 0 || sizeof tag + tl + 1 + dl + 1 + 10 + 1 + 19 > sizeof msg) return HD_EINVAL;
  memcpy(msg, tag, sizeof tag); /* with its NUL */
  memcpy(msg + n, t->name, tl + 1);
  n += tl + 1;
  memcpy(msg + n, device_id, dl + 1);
  n += dl + 1;
  n += hd_u64_dec(msg + n, gen);
  msg[n++] = 0;
  n += hd_u64_dec(msg + n, (uint64_t)exp_s);
  EVP_MAC_CTX *c = token_ctx(t);
  if (!c || EVP_MAC_update(c, (unsigned char *)msg, n) != 1 ||
      EVP_MAC_final(c, mac, &maclen, sizeof mac) != 1)
    return HD_EIO;
  b64url(mac, maclen, out);
  return 0;
}

int hd__token_mint_exp(const hd_tenant *t, const char *device_id, uint32_t gen, int64_t exp_s,
                       char *out, size_t outlen) {
  char mac[64];
  if (exp_s < 0 || gen == 0) return HD_EINVAL;
  int rc = token_mac(t, device_id, gen, exp_s, mac);
  if (rc) return rc;
  if (snprintf(out, outlen, "%s.%u.%lld.%s", t->name, gen, (long long)exp_s, mac) >=
      (int)outlen)
    return HD_EINVAL;
  return 0;
}

int hd__token_mint(const hd_tenant *t, const char *device_id, uint32_t gen, char *out,
                   size_t outlen) {
  int64_t exp_s = t->token_ttl_s > 0 ? hd__wall_ms() / 1000 + t->token_ttl_s : 0;
  return hd__token_mint_exp(t, device_id, gen, exp_s, out, outlen);
}

/* Read one canonical decimal field ending at '.': "0" only when zero_ok, else no leading zero,
 * no sign, no space (strtoull alone would take "+1", " 1", "01" or wrap "-1": one MAC, many
 * tokens). *p moves past the dot. */
static int token_field(const char **p, int zero_ok, uint64_t max, uint64_t *out) {
  const char *s = *p;
  uint64_t v = 0;
  size_t n = 0;
  for (; s[n] >= '0' && s[n] <= '9'; n++) {
    if (n >= 19) return -1;
    v = v * 10 + (uint64_t)(s[n] - '0');
  }
  if (n == 0 || s[n] != '.' || v > max) return -1;
  if (s[0] == '0' && (n > 1 || !zero_ok)) return -1;
  *out = v;
  *p = s + n + 1;
  return 0;
}

int hd__token_verify_at(const hd_tenants *ts, const char *device_id, const char *token,
                        int64_t now_s, hd_tenant **tenant, uint32_t *gen) {
  char name[80], expect[64];
  const char *dot1 = token ? strchr(token, '.') : NULL;
  if (!dot1 || (size_t)(dot1 - token) >= sizeof name || !hd__valid_id(device_id))
    return HD_EAUTH;
  memcpy(name, token, (size_t)(dot1 - token));
  name[dot1 - token] = 0;
  const char *p = dot1 + 1;
  uint64_t g, exp;
  if (token_field(&p, 0, UINT32_MAX, &g) || token_field(&p, 1, INT64_MAX, &exp))
    return HD_EAUTH;
  hd_tenant *t = hd__tenant_by_name(ts, name);
  if (!t || token_mac(t, device_id, (uint32_t)g, (int64_t)exp, expect)) return HD_EAUTH;
  size_t el = strlen(expect);
  if (strlen(p) != el || CRYPTO_memcmp(p, expect, el) != 0) return HD_EAUTH;
  /* Checked after the MAC: only a genuine token's expiry means anything. */
  if (exp != 0 && (int64_t)exp <= now_s) return HD_EAUTH;
  *tenant = t;
  *gen = (uint32_t)g;
  return 0;
}

int hd__token_verify(const hd_tenants *ts, const char *device_id, const char *token,
                     hd_tenant **tenant, uint32_t *gen) {
  return hd__token_verify_at(ts, device_id, token, hd__wall_ms() / 1000, tenant, gen);
}

hd_tenant *hd__token_tenant_guess(const hd_tenants *ts, const char *token) {
  char name[80];
  const char *dot = token ? strchr(token, '.') : NULL;
  if (!dot || dot == token || (size_t)(dot - token) >= sizeof name) return NULL;
  memcpy(name, token, (size_t)(dot - token));
  name[dot - token] = 0;
  return hd__tenant_by_name(ts, name);
}
