/* rtenant.c — tenants created at run time: records, key files, load, create, rotate (see
 * rtenant.h). */
#include "rtenant.h"

#include <lmdb.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "herald/error.h"
#include "log.h"
#include "writer.h"

#define RT_DB "rt_tenants"
#define SPEC_MAX 16384 /* bytes of config text one tenant's settings may take */

struct hd_rtenants {
  hd_broker *b;
  MDB_dbi dbi;
  struct createctx *creating; /* creations in flight: their names are taken */
};

/* ---- settings: JSON -> the [tenant NAME] section they would be in herald.conf ---- */

typedef struct sbuf {
  char *p;
  size_t len, cap;
  int full;
} sbuf;

static void sb_add(sbuf *b, const char *s) {
  size_t n = strlen(s);
  if (b->full || b->len + n + 1 > b->cap) {
    b->full = 1;
    return;
  }
  memcpy(b->p + b->len, s, n + 1);
  b->len += n;
}

/* A string that goes into the config text: nothing that could end the line or the quoted
 * value, or split a list item (the parser's own checks do the rest). */
static int plain_text(const char *s) {
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c < 0x20 || c == 0x7f || c == '"' || c == '\\' || c == ',') return 0;
  }
  return 1;
}

/* "key = "a, b"" from an array of strings, or "*" from the string "*". */
static int add_list(sbuf *b, const char *key, const json_t *v, char *why, size_t whylen) {
  sb_add(b, key);
  sb_add(b, " = \"");
  if (json_is_string(v) && strcmp(json_string_value(v), "*") == 0) {
    sb_add(b, "*");
  } else if (json_is_array(v)) {
    size_t i;
    json_t *x;
    json_array_foreach(v, i, x) {
      if (!json_is_string(x) || !plain_text(json_string_value(x))) {
        snprintf(why, whylen, "%s must be an array of strings without commas, quotes or control "
                              "characters, or \"*\"", key);
        return HD_EINVAL;
      }
      if (i) sb_add(b, ", ");
      sb_add(b, json_string_value(x));
    }
  } else {
    snprintf(why, whylen, "%s must be an array of strings or \"*\"", key);
    return HD_EINVAL;
  }
  sb_add(b, "\"\n");
  return 0;
}

static int add_int(sbuf *b, const char *key, const json_t *v, char *why, size_t whylen) {
  char line[128];
  if (!json_is_integer(v)) {
    snprintf(why, whylen, "%s must be an integer", key);
    return HD_EINVAL;
  }
  snprintf(line, sizeof line, "%s = %lld\n", key, (long long)json_integer_value(v));
  sb_add(b, line);
  return 0;
}

int hd__rtenant_parse(const json_t *spec, int stored, hd_config *out, char *why,
                      size_t whylen) {
  static const char *const lists[] = {"apps", "self_register", "allowed_origins", NULL};
  static const char *const ints[] = {"self_register_per_min", "device_token_ttl",
                                     "max_publish_rate", "publish_burst", NULL};
  char text[SPEC_MAX], err[512];
  sbuf b = {.p = text, .cap = sizeof text};
  const char *k;
  json_t *v;
  int rc;
  memset(out, 0, sizeof *out);
  if (!json_is_object(spec)) {
    snprintf(why, whylen, "body must be a JSON object");
    return HD_EINVAL;
  }
  json_t *name = json_object_get(spec, "name");
  if (!json_is_string(name) || !hd__config_valid_name(json_string_value(name))) {
    snprintf(why, whylen, "name must be 1-64 of a-z 0-9 _ -");
    return HD_EINVAL;
  }
  sb_add(&b, "[tenant ");
  sb_add(&b, json_string_value(name));
  sb_add(&b, "]\n");
  json_object_foreach((json_t *)spec, k, v) {
    int known = strcmp(k, "name") == 0 || (stored && strcmp(k, "created") == 0);
    for (size_t i = 0; !known && lists[i]; i++)
      if (strcmp(k, lists[i]) == 0) {
        known = 1;
        json_t *sv = v;
        /* self_register: true is every app of the tenant, false none. */
        if (strcmp(k, "self_register") == 0 && json_is_boolean(v))
          sv = json_is_true(v) ? json_string("*") : json_array();
        rc = add_list(&b, k, sv, why, whylen);
        if (sv != v) json_decref(sv);
        if (rc) return rc;
      }
    for (size_t i = 0; !known && ints[i]; i++)
      if (strcmp(k, ints[i]) == 0) {
        known = 1;
        if ((rc = add_int(&b, k, v, why, whylen))) return rc;
      }
    if (!known) {
      snprintf(why, whylen, "unknown field '%.100s'", k);
      return HD_EINVAL;
    }
  }
  if (b.full) {
    snprintf(why, whylen, "settings too long");
    return HD_EINVAL;
  }
  if (hd__config_parse(text, b.len, "tenant", out, err, sizeof err) != 0) {
    /* "tenant:3: bad item ..." -> "bad item ...": the line number means nothing here. */
    const char *m = err;
    if (strncmp(m, "tenant:", 7) == 0 && (m = strstr(m + 7, ": "))) m += 2;
    else m = err;
    snprintf(why, whylen, "%s", m);
    return HD_EINVAL;
  }
  return 0;
}

/* ---- load at start ---- */

static int load_record(hd_rtenants *rt, MDB_txn *txn, const MDB_val *k, const MDB_val *v,
                       char *err, size_t errlen) {
  hd_broker *b = rt->b;
  char name[80], why[300];
  hd_config cfg;
  int rc;
  if (k->mv_size == 0 || k->mv_size >= sizeof name) {
    snprintf(err, errlen, "runtime tenants: a record with a bad name");
    return HD_EIO;
  }
  memcpy(name, k->mv_data, k->mv_size);
  name[k->mv_size] = 0;
  json_error_t je;
  json_t *spec = json_loadb(v->mv_data, v->mv_size, JSON_REJECT_DUPLICATES, &je);
  if (!spec || hd__rtenant_parse(spec, 1, &cfg, why, sizeof why) != 0) {
    snprintf(err, errlen, "runtime tenant %s: stored settings: %s", name,
             spec ? why : je.text);
    json_decref(spec);
    return HD_EIO;
  }
  const hd_tenant_conf *tc = &cfg.tenants[0];
  json_t *created = json_object_get(spec, "created");
  if (strcmp(tc->name, name) != 0) {
    snprintf(err, errlen, "runtime tenant %s: its record names '%s'", name, tc->name);
    rc = HD_EIO;
    goto out;
  }
  if (hd__config_tenant(&b->cfg, name)) {
    hd__log(HD_LOG_WARN, "runtime_tenant_shadowed",
            "tenant=%s reason=\"the config declares a tenant of that name; it is the one used\"",
            name);
    rc = 0;
    goto out;
  }
  hd_tenant *t = hd__tenant_new(tc);
  if (!t) {
    rc = HD_ENOMEM;
    goto out;
  }
  t->runtime = 1;
  t->created_ms = json_is_integer(created) ? json_integer_value(created) : 0;
  if ((rc = hd__tenants_add(&b->tenants, t))) {
    hd__tenant_free(t);
    goto out;
  }
  if ((rc = hd__tenant_keys_load(t, tc, b->cfg.data_dir, 1, err, errlen))) goto out;
  hd__tenants_keys_changed(&b->tenants);
  if ((rc = hd__store_tenant_find(b->store, txn, name, &t->num))) {
    snprintf(err, errlen, "runtime tenant %s: not in the store: %s", name, hd_strerror(rc));
    goto out;
  }
out:
  hd__config_free(&cfg);
  json_decref(spec);
  return rc;
}

int hd__rtenants_open(hd_broker *b, hd_rtenants **out, char *err, size_t errlen) {
  hd_rtenants *rt = calloc(1, sizeof *rt);
  MDB_txn *txn;
  MDB_cursor *cur;
  MDB_val k, v;
  int rc;
  *out = NULL;
  if (!rt) return HD_ENOMEM;
  rt->b = b;
  if ((rc = hd__store_dbi(b->store, RT_DB, &rt->dbi))) {
    snprintf(err, errlen, "runtime tenants: store: %s", hd_strerror(rc));
    free(rt);
    return rc;
  }
  if ((rc = hd__store_rbegin(b->store, &txn))) {
    free(rt);
    return rc;
  }
  if ((rc = hd_err_from_mdb(mdb_cursor_open(txn, rt->dbi, &cur)))) goto out;
  size_t n = 0;
  int mrc;
  for (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); mrc == 0 && rc == 0;
       mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    rc = load_record(rt, txn, &k, &v, err, errlen);
    n++;
  }
  if (rc == 0 && mrc != MDB_NOTFOUND) rc = hd_err_from_mdb(mrc);
  mdb_cursor_close(cur);
  if (rc == 0 && n) hd__log(HD_LOG_INFO, "runtime_tenants_loaded", "count=%zu", n);
out:
  hd__store_rend(b->store, txn);
  if (rc) {
    if (!*err) snprintf(err, errlen, "runtime tenants: %s", hd_strerror(rc));
    free(rt);
    return rc;
  }
  *out = rt;
  return 0;
}

void hd__rtenants_free(hd_rtenants *rt) { free(rt); }

/* ---- create ---- */

typedef struct createctx {
  hd_op op;               /* first: the writer hands the op back */
  uv_work_t work;
  struct createctx *next; /* rt->creating */
  hd_rtenants *rt;
  hd_tenant *t;           /* ours until the commit, then the broker's */
  hd_config cfg;          /* the settings parsed (cfg.tenants[0]) */
  char *record;           /* JSON stored in rt_tenants */
  char *data_dir;
  int files_rc;
  hd_rtenant_cb cb;
  void *ud;
} createctx;

static void create_finish(createctx *c, int status, const char *reason) {
  hd_rtenants *rt = c->rt;
  for (createctx **p = &rt->creating; *p; p = &(*p)->next)
    if (*p == c) {
      *p = c->next;
      break;
    }
  hd_tenant *t = status == 0 ? c->t : NULL;
  if (status) hd__tenant_free(c->t);
  c->cb(c->ud, status, t, reason);
  hd__config_free(&c->cfg);
  free(c->record);
  free(c->data_dir);
  free(c);
}

/* Writer thread: the whole tenant in one transaction. Reads only what the loop does not
 * change while the op is queued (the tenant's name and the parsed settings). */
static int apply_create(hd_store *s, MDB_txn *txn, hd_op *op, int64_t now_ms) {
  createctx *c = op->u.fn.arg;
  const hd_tenant_conf *tc = &c->cfg.tenants[0];
  MDB_val k = {.mv_size = strlen(tc->name), .mv_data = (void *)tc->name}, v;
  uint32_t num;
  (void)now_ms;
  /* Checked again here: the loop's checks saw a snapshot, this is the truth. */
  int rc = mdb_get(txn, c->rt->dbi, &k, &v);
  if (rc == 0) rc = HD_EEXIST;
  else if (rc == MDB_NOTFOUND) rc = hd__store_tenant_find(s, txn, tc->name, &num);
  else return hd_err_from_mdb(rc);
  if (rc == 0 || rc == HD_EEXIST) {
    op->reason = "a tenant of that name exists";
    return HD_EEXIST;
  }
  if (rc != HD_ENOTFOUND) return rc;
  if ((rc = hd__store_w_tenant(s, txn, tc->name, &num))) return rc;
  for (size_t i = 0; i < tc->napps; i++) {
    uint32_t app;
    if (strcmp(tc->apps[i], "*") == 0) continue;
    if ((rc = hd__store_w_app(s, txn, num, tc->apps[i], 1, &app))) return rc;
  }
  v.mv_size = strlen(c->record);
  v.mv_data = c->record;
  if ((rc = mdb_put(txn, c->rt->dbi, &k, &v, MDB_NOOVERWRITE))) return hd_err_from_mdb(rc);
  c->t->num = num; /* the loop reads it only in done(), after the commit */
  return 0;
}

static void on_create_committed(hd_op *op) {
  createctx *c = (createctx *)op;
  hd_broker *b = c->rt->b;
  if (op->status) {
    create_finish(c, op->status, op->reason);
    return;
  }
  int rc = hd__tenants_add(&b->tenants, c->t);
  if (rc) {
    /* Committed but not in memory: it is there after a restart. */
    create_finish(c, rc, "tenant stored, but out of memory adding it: restart heraldd");
    return;
  }
  hd__log(HD_LOG_INFO, "tenant_created", "tenant=%s num=%u apps=%zu max_publish_rate=%lld",
          c->t->name, c->t->num, c->t->napps, (long long)c->t->max_publish_rate);
  create_finish(c, 0, NULL);
}

/* Pool thread: the key files, before the record exists. */
static void create_files(uv_work_t *w) {
  createctx *c = w->data;
  c->files_rc = hd__tenant_files_write(c->data_dir, c->t->name, c->t->publish_key,
                                       c->t->device_secret, NULL, 0);
}

static void on_create_files(uv_work_t *w, int status) {
  createctx *c = w->data;
  hd_broker *b = c->rt->b;
  if (status || c->files_rc) {
    hd__log(HD_LOG_ERROR, "tenant_create_failed", "tenant=%s reason=\"cannot write key files "
            "under %s/tenants: %s\"", c->t->name, c->data_dir,
            hd_strerror(status ? hd_err_from_uv(status) : c->files_rc));
    create_finish(c, HD_EIO, "cannot write the tenant's key files");
    return;
  }
  if (b->stopping) {
    create_finish(c, HD_ECLOSED, "broker is shutting down");
    return;
  }
  int rc = hd__writer_submit_fn(b->writer, &c->op, apply_create, c, on_create_committed);
  if (rc) create_finish(c, rc, "broker is shutting down");
}

void hd__rtenant_create(hd_rtenants *rt, const json_t *spec, hd_rtenant_cb cb, void *ud) {
  hd_broker *b = rt->b;
  char why[300];
  int64_t now = hd__wall_ms();
  createctx *c = calloc(1, sizeof *c);
  int rc;
  if (!c) {
    cb(ud, HD_ENOMEM, NULL, NULL);
    return;
  }
  c->rt = rt;
  c->cb = cb;
  c->ud = ud;
  if (b->stopping) {
    free(c);
    cb(ud, HD_ECLOSED, NULL, "broker is shutting down");
    return;
  }
  if ((rc = hd__rtenant_parse(spec, 0, &c->cfg, why, sizeof why))) {
    free(c);
    cb(ud, rc, NULL, why);
    return;
  }
  const hd_tenant_conf *tc = &c->cfg.tenants[0];
  int taken = hd__tenant_by_name(&b->tenants, tc->name) != NULL;
  for (createctx *o = rt->creating; o && !taken; o = o->next)
    taken = strcmp(o->t->name, tc->name) == 0;
  if (!taken) {
    /* A name the store knew before: a tenant removed from the config left its devices and
     * messages behind, which a new tenant must not inherit. */
    MDB_txn *txn;
    uint32_t num;
    if ((rc = hd__store_rbegin(b->store, &txn)) == 0) {
      taken = hd__store_tenant_find(b->store, txn, tc->name, &num) == 0;
      hd__store_rend(b->store, txn);
    }
  }
  if (taken || rc) {
    hd__config_free(&c->cfg);
    free(c);
    cb(ud, rc ? rc : HD_EEXIST, NULL, rc ? NULL : "a tenant of that name exists");
    return;
  }
  json_t *rec = json_deep_copy(spec);
  if (rec) json_object_set_new(rec, "created", json_integer(now));
  c->record = rec ? json_dumps(rec, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
  json_decref(rec);
  c->data_dir = strdup(b->cfg.data_dir);
  c->t = hd__tenant_new(tc);
  if (!c->record || !c->data_dir || !c->t) {
    create_finish(c, HD_ENOMEM, NULL);
    return;
  }
  c->t->runtime = 1;
  c->t->created_ms = now;
  if ((rc = hd__random_id(c->t->publish_key, sizeof c->t->publish_key, 32)) ||
      RAND_bytes(c->t->device_secret, sizeof c->t->device_secret) != 1) {
    create_finish(c, HD_EIO, "no randomness");
    return;
  }
  c->next = rt->creating;
  rt->creating = c;
  c->work.data = c;
  if ((rc = uv_queue_work(b->loop, &c->work, create_files, on_create_files)))
    create_finish(c, hd_err_from_uv(rc), NULL);
}

/* ---- rotate the publish key ---- */

typedef struct rotatectx {
  uv_work_t work;
  hd_rtenants *rt;
  hd_tenant *t;
  char name[80];
  char *data_dir;
  char new_key[HD_KEY_LEN + 1];
  char old_key[256];
  int64_t until_ms;       /* the old key's end; 0: it ends now */
  int rc;
  hd_rtenant_cb cb;
  void *ud;
} rotatectx;

static void rotatectx_free(rotatectx *c) {
  OPENSSL_cleanse(c->new_key, sizeof c->new_key);
  OPENSSL_cleanse(c->old_key, sizeof c->old_key);
  free(c->data_dir);
  free(c);
}

static void rotate_files(uv_work_t *w) {
  rotatectx *c = w->data;
  c->rc = hd__tenant_files_write(c->data_dir, c->name, c->new_key, NULL,
                                 c->until_ms ? c->old_key : NULL, c->until_ms);
}

static void on_rotate_files(uv_work_t *w, int status) {
  rotatectx *c = w->data;
  hd_tenant *t = c->t;
  t->rotating = 0;
  int rc = status ? hd_err_from_uv(status) : c->rc;
  if (rc) {
    /* publish.key is written last: if it was not, the old key is still the key on disk too. */
    hd__log(HD_LOG_ERROR, "publish_key_rotation_failed", "tenant=%s error=%s", t->name,
            hd_err_code(rc));
    c->cb(c->ud, HD_EIO, NULL, "cannot write the tenant's key files");
    rotatectx_free(c);
    return;
  }
  if (c->until_ms) {
    memcpy(t->previous_key, c->old_key, sizeof t->previous_key);
    t->previous_until_ms = c->until_ms;
  } else {
    OPENSSL_cleanse(t->previous_key, sizeof t->previous_key);
    t->previous_until_ms = 0;
  }
  snprintf(t->publish_key, sizeof t->publish_key, "%s", c->new_key);
  hd__tenants_keys_changed(&c->rt->b->tenants);
  hd__log(HD_LOG_INFO, "publish_key_rotated", "tenant=%s previous_valid_until_ms=%lld",
          t->name, (long long)c->until_ms);
  c->cb(c->ud, 0, t, NULL);
  rotatectx_free(c);
}

void hd__rtenant_rotate_key(hd_rtenants *rt, hd_tenant *t, int64_t overlap_s, hd_rtenant_cb cb,
                            void *ud) {
  hd_broker *b = rt->b;
  if (!t->runtime) {
    cb(ud, HD_EEXIST, NULL,
       "this tenant is declared in the config: rotate its key there (publish_key, "
       "previous_publish_key, previous_key_until)");
    return;
  }
  if (t->rotating) {
    cb(ud, HD_EEXIST, NULL, "a key rotation of this tenant is in progress");
    return;
  }
  if (b->stopping) {
    cb(ud, HD_ECLOSED, NULL, "broker is shutting down");
    return;
  }
  if (overlap_s < 0 || overlap_s > 3650LL * 86400) {
    cb(ud, HD_EINVAL, NULL, "overlap must be between 0 and 3650 days in seconds");
    return;
  }
  rotatectx *c = calloc(1, sizeof *c);
  if (!c || !(c->data_dir = strdup(b->cfg.data_dir))) {
    free(c);
    cb(ud, HD_ENOMEM, NULL, NULL);
    return;
  }
  c->rt = rt;
  c->t = t;
  c->cb = cb;
  c->ud = ud;
  snprintf(c->name, sizeof c->name, "%s", t->name);
  memcpy(c->old_key, t->publish_key, sizeof c->old_key);
  c->until_ms = overlap_s ? hd__wall_ms() + overlap_s * 1000 : 0;
  if (hd__random_id(c->new_key, sizeof c->new_key, 32)) {
    rotatectx_free(c);
    cb(ud, HD_EIO, NULL, "no randomness");
    return;
  }
  t->rotating = 1;
  c->work.data = c;
  int rc = uv_queue_work(b->loop, &c->work, rotate_files, on_rotate_files);
  if (rc) {
    t->rotating = 0;
    rotatectx_free(c);
    cb(ud, hd_err_from_uv(rc), NULL, NULL);
  }
}
