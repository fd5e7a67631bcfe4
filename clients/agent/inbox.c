/* inbox.c — herald-agent's LMDB message center (see inbox.h). */
#include "inbox.h"

#include <errno.h>
#include <jansson.h>
#include <lmdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "herald/error.h"
#include "release.h"

#define REC_VERSION 1

struct inbox {
  MDB_env *env;
  MDB_dbi inbox, handled, releases, updates, inventory;
};

/* On-disk header of an inbox record (this device's own store: native byte order). */
typedef struct rec {
  uint8_t version, state, kind, confirmed;
  uint32_t attempts;
  int64_t next_try_ms, expires_ms, received_ms;
  char app[129];
} rec;

typedef struct relrec {
  uint8_t version, state;
  int64_t updated_ms;
  char app[129];
} relrec;

static void key_of(uint64_t id, unsigned char k[8]) {
  for (int i = 0; i < 8; i++) k[i] = (unsigned char)(id >> (56 - 8 * i));
}

static uint64_t id_of(const MDB_val *k) {
  uint64_t id = 0;
  const unsigned char *p = k->mv_data;
  for (size_t i = 0; i < 8 && i < k->mv_size; i++) id = (id << 8) | p[i];
  return id;
}

#define KEY(name, id)          \
  unsigned char name##b[8];    \
  key_of(id, name##b);         \
  MDB_val name = {8, name##b}

static int mkdirs(const char *path) {
  char tmp[4096];
  if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp) return -1;
  for (char *p = tmp + 1; *p; p++) {
    if (*p != '/') continue;
    *p = 0;
    if (mkdir(tmp, 0700) && errno != EEXIST) return -1;
    *p = '/';
  }
  return mkdir(tmp, 0700) && errno != EEXIST ? -1 : 0;
}

int inbox_open(const char *data_dir, uint64_t map_size, inbox **out, char *err,
               size_t errlen) {
  char path[4200];
  inbox *ib = calloc(1, sizeof *ib);
  if (!ib) return HD_ENOMEM;
  if (mkdirs(data_dir)) {
    snprintf(err, errlen, "data_dir %s: cannot create: %s", data_dir, strerror(errno));
    free(ib);
    return HD_EIO;
  }
  snprintf(path, sizeof path, "%s/agent.mdb", data_dir);
  MDB_txn *t = NULL;
  int rc = mdb_env_create(&ib->env);
  if (!rc) rc = mdb_env_set_mapsize(ib->env, (size_t)map_size);
  if (!rc) rc = mdb_env_set_maxdbs(ib->env, 8);
  if (!rc) rc = mdb_env_open(ib->env, path, MDB_NOSUBDIR | MDB_NOTLS, 0600);
  if (!rc) rc = mdb_txn_begin(ib->env, NULL, 0, &t);
  if (!rc) rc = mdb_dbi_open(t, "inbox", MDB_CREATE, &ib->inbox);
  if (!rc) rc = mdb_dbi_open(t, "handled", MDB_CREATE, &ib->handled);
  if (!rc) rc = mdb_dbi_open(t, "releases", MDB_CREATE, &ib->releases);
  if (!rc) rc = mdb_dbi_open(t, "updates", MDB_CREATE, &ib->updates);
  if (!rc) rc = mdb_dbi_open(t, "inventory", MDB_CREATE, &ib->inventory);
  if (!rc) {
    rc = mdb_txn_commit(t);
    t = NULL;
  }
  if (rc) {
    snprintf(err, errlen, "%s: %s", path, mdb_strerror(rc));
    if (t) mdb_txn_abort(t);
    if (ib->env) mdb_env_close(ib->env);
    free(ib);
    return hd_err_from_mdb(rc);
  }
  *out = ib;
  return 0;
}

void inbox_close(inbox *ib) {
  if (!ib) return;
  mdb_env_close(ib->env);
  free(ib);
}

static int rbegin(inbox *ib, MDB_txn **t) {
  return hd_err_from_mdb(mdb_txn_begin(ib->env, NULL, MDB_RDONLY, t));
}
static int wbegin(inbox *ib, MDB_txn **t) {
  return hd_err_from_mdb(mdb_txn_begin(ib->env, NULL, 0, t));
}
/* Commit, or abort when rc says the transaction went wrong. */
static int finish(MDB_txn *t, int rc) {
  if (rc) {
    mdb_txn_abort(t);
    return rc;
  }
  return hd_err_from_mdb(mdb_txn_commit(t));
}

static void note_to_rec(const note *n, rec *r) {
  memset(r, 0, sizeof *r);
  r->version = REC_VERSION;
  r->state = n->state;
  r->kind = n->kind;
  r->confirmed = n->confirmed;
  r->attempts = n->attempts;
  r->next_try_ms = n->next_try_ms;
  r->expires_ms = n->expires_ms;
  r->received_ms = n->received_ms;
  memcpy(r->app, n->app, sizeof r->app);
  r->app[sizeof r->app - 1] = 0;
}

static int rec_to_note(uint64_t id, const MDB_val *v, note *n) {
  rec r;
  if (v->mv_size < sizeof r) return HD_EIO;
  memcpy(&r, v->mv_data, sizeof r);
  if (r.version != REC_VERSION) return HD_EIO;
  memset(n, 0, sizeof *n);
  n->id = id;
  n->state = r.state;
  n->kind = r.kind;
  n->confirmed = r.confirmed;
  n->attempts = r.attempts;
  n->next_try_ms = r.next_try_ms;
  n->expires_ms = r.expires_ms;
  n->received_ms = r.received_ms;
  memcpy(n->app, r.app, sizeof n->app);
  n->app[sizeof n->app - 1] = 0;
  return 0;
}

int inbox_seen(inbox *ib, uint64_t id, int *seen) {
  MDB_txn *t;
  MDB_val v;
  KEY(k, id);
  int rc = rbegin(ib, &t);
  if (rc) return rc;
  *seen = SEEN_NEW;
  int r = mdb_get(t, ib->handled, &k, &v);
  if (r == 0) {
    *seen = SEEN_SETTLED;
  } else if ((r = mdb_get(t, ib->inbox, &k, &v)) == 0) {
    note n;
    rc = rec_to_note(id, &v, &n);
    if (!rc) *seen = n.state == NOTE_PENDING ? SEEN_PENDING : SEEN_SETTLED;
  } else if (r != MDB_NOTFOUND) {
    rc = hd_err_from_mdb(r);
  }
  mdb_txn_abort(t);
  return rc;
}

static int put_rec(inbox *ib, MDB_txn *t, const note *n, const char *json, size_t len,
                   unsigned flags) {
  KEY(k, n->id);
  rec r;
  note_to_rec(n, &r);
  MDB_val v = {sizeof r + len, NULL};
  int rc = mdb_put(t, ib->inbox, &k, &v, flags | MDB_RESERVE);
  if (rc) return hd_err_from_mdb(rc);
  memcpy(v.mv_data, &r, sizeof r);
  if (len) memcpy((char *)v.mv_data + sizeof r, json, len);
  return 0;
}

int inbox_put(inbox *ib, const note *n, const char *json, size_t len) {
  MDB_txn *t;
  int rc = wbegin(ib, &t);
  if (rc) return rc;
  return finish(t, put_rec(ib, t, n, json, len, MDB_NOOVERWRITE));
}

int inbox_update(inbox *ib, const note *n) {
  MDB_txn *t;
  MDB_val v;
  KEY(k, n->id);
  int rc = wbegin(ib, &t);
  if (rc) return rc;
  int r = mdb_get(t, ib->inbox, &k, &v);
  if (r) return finish(t, r == MDB_NOTFOUND ? HD_ENOTFOUND : hd_err_from_mdb(r));
  if (v.mv_size < sizeof(rec)) return finish(t, HD_EIO);
  size_t len = v.mv_size - sizeof(rec);
  char *json = malloc(len ? len : 1);
  if (!json) return finish(t, HD_ENOMEM);
  memcpy(json, (char *)v.mv_data + sizeof(rec), len);
  rc = put_rec(ib, t, n, json, len, 0);
  free(json);
  return finish(t, rc);
}

int inbox_get(inbox *ib, uint64_t id, note *n, char **json, size_t *len) {
  MDB_txn *t;
  MDB_val v;
  KEY(k, id);
  int rc = rbegin(ib, &t);
  if (rc) return rc;
  int r = mdb_get(t, ib->inbox, &k, &v);
  if (r) rc = r == MDB_NOTFOUND ? HD_ENOTFOUND : hd_err_from_mdb(r);
  if (!rc) rc = rec_to_note(id, &v, n);
  if (!rc && json) {
    size_t l = v.mv_size - sizeof(rec);
    if (!(*json = malloc(l + 1))) {
      rc = HD_ENOMEM;
    } else {
      memcpy(*json, (char *)v.mv_data + sizeof(rec), l);
      (*json)[l] = 0;
      if (len) *len = l;
    }
  }
  mdb_txn_abort(t);
  return rc;
}

int inbox_handled(inbox *ib, uint64_t id, int64_t now_ms) {
  MDB_txn *t;
  KEY(k, id);
  MDB_val v = {sizeof now_ms, &now_ms};
  int rc = wbegin(ib, &t);
  if (rc) return rc;
  int r = mdb_del(t, ib->inbox, &k, NULL);
  if (r && r != MDB_NOTFOUND) return finish(t, hd_err_from_mdb(r));
  return finish(t, hd_err_from_mdb(mdb_put(t, ib->handled, &k, &v, 0)));
}

int inbox_delete(inbox *ib, uint64_t id) {
  MDB_txn *t;
  KEY(k, id);
  int rc = wbegin(ib, &t);
  if (rc) return rc;
  int r = mdb_del(t, ib->inbox, &k, NULL);
  return finish(t, r == MDB_NOTFOUND ? 0 : hd_err_from_mdb(r));
}

int inbox_confirm(inbox *ib, const uint64_t *ids, size_t n) {
  MDB_txn *t;
  int rc = wbegin(ib, &t);
  if (rc) return rc;
  for (size_t i = 0; i < n && !rc; i++) {
    KEY(k, ids[i]);
    MDB_val v;
    int r = mdb_del(t, ib->handled, &k, NULL);
    if (r && r != MDB_NOTFOUND) rc = hd_err_from_mdb(r);
    if (rc || (r = mdb_get(t, ib->inbox, &k, &v)) == MDB_NOTFOUND) continue;
    if (r) {
      rc = hd_err_from_mdb(r);
      continue;
    }
    note nt;
    if (rec_to_note(ids[i], &v, &nt) || nt.state == NOTE_PENDING || nt.confirmed) continue;
    /* In place: the header is the first bytes of the value; LMDB needs a put to change it. */
    size_t len = v.mv_size - sizeof(rec);
    char *json = malloc(len ? len : 1);
    if (!json) {
      rc = HD_ENOMEM;
      continue;
    }
    memcpy(json, (char *)v.mv_data + sizeof(rec), len);
    nt.confirmed = 1;
    rc = put_rec(ib, t, &nt, json, len, 0);
    free(json);
  }
  return finish(t, rc);
}

typedef struct idvec {
  uint64_t *v;
  size_t n, cap;
} idvec;

static int idvec_push(idvec *iv, uint64_t id) {
  if (iv->n == iv->cap) {
    size_t cap = iv->cap ? iv->cap * 2 : 64;
    uint64_t *v = realloc(iv->v, cap * sizeof *v);
    if (!v) return HD_ENOMEM;
    iv->v = v;
    iv->cap = cap;
  }
  iv->v[iv->n++] = id;
  return 0;
}

int inbox_unconfirmed(inbox *ib, uint64_t **ids, size_t *n) {
  MDB_txn *t;
  MDB_cursor *c;
  MDB_val k, v;
  idvec iv = {0};
  int rc = rbegin(ib, &t);
  if (rc) return rc;
  if (mdb_cursor_open(t, ib->handled, &c) == 0) {
    for (int r = mdb_cursor_get(c, &k, &v, MDB_FIRST); r == 0 && !rc;
         r = mdb_cursor_get(c, &k, &v, MDB_NEXT))
      rc = idvec_push(&iv, id_of(&k));
    mdb_cursor_close(c);
  }
  if (!rc && mdb_cursor_open(t, ib->inbox, &c) == 0) {
    for (int r = mdb_cursor_get(c, &k, &v, MDB_FIRST); r == 0 && !rc;
         r = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
      note nt;
      if (rec_to_note(id_of(&k), &v, &nt) == 0 && nt.state != NOTE_PENDING && !nt.confirmed)
        rc = idvec_push(&iv, nt.id);
    }
    mdb_cursor_close(c);
  }
  mdb_txn_abort(t);
  if (rc) {
    free(iv.v);
    return rc;
  }
  *ids = iv.v;
  *n = iv.n;
  return 0;
}

int inbox_each(inbox *ib, int (*cb)(void *ud, const note *n), void *ud) {
  /* Collect first, then call back outside the read transaction: callbacks write. */
  MDB_txn *t;
  MDB_cursor *c;
  MDB_val k, v;
  note *all = NULL;
  size_t n = 0, cap = 0;
  int rc = rbegin(ib, &t);
  if (rc) return rc;
  if ((rc = hd_err_from_mdb(mdb_cursor_open(t, ib->inbox, &c)))) {
    mdb_txn_abort(t);
    return rc;
  }
  for (int r = mdb_cursor_get(c, &k, &v, MDB_FIRST); r == 0;
       r = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
    if (n == cap) {
      cap = cap ? cap * 2 : 32;
      note *nv = realloc(all, cap * sizeof *nv);
      if (!nv) {
        rc = HD_ENOMEM;
        break;
      }
      all = nv;
    }
    if (rec_to_note(id_of(&k), &v, &all[n]) == 0) n++;
  }
  mdb_cursor_close(c);
  mdb_txn_abort(t);
  for (size_t i = 0; i < n && !rc; i++)
    if (cb(ud, &all[i])) break;
  free(all);
  return rc;
}

int inbox_prune_handled(inbox *ib, int64_t before_ms) {
  MDB_txn *t;
  MDB_cursor *c;
  MDB_val k, v;
  int rc = wbegin(ib, &t);
  if (rc) return rc;
  if ((rc = hd_err_from_mdb(mdb_cursor_open(t, ib->handled, &c)))) return finish(t, rc);
  for (int r = mdb_cursor_get(c, &k, &v, MDB_FIRST); r == 0 && !rc;
       r = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
    int64_t at;
    if (v.mv_size != sizeof at) continue;
    memcpy(&at, v.mv_data, sizeof at);
    if (at < before_ms) rc = hd_err_from_mdb(mdb_cursor_del(c, 0));
  }
  mdb_cursor_close(c);
  return finish(t, rc);
}

int inbox_release_put(inbox *ib, const release_rec *r, const char *json, size_t len) {
  MDB_txn *t;
  KEY(k, r->id);
  relrec rr;
  memset(&rr, 0, sizeof rr);
  rr.version = REC_VERSION;
  rr.state = r->state;
  rr.updated_ms = r->updated_ms;
  memcpy(rr.app, r->app, sizeof rr.app);
  rr.app[sizeof rr.app - 1] = 0;
  int rc = wbegin(ib, &t);
  if (rc) return rc;
  MDB_val v = {sizeof rr + len, NULL};
  int x = mdb_put(t, ib->releases, &k, &v, MDB_RESERVE);
  if (x) return finish(t, hd_err_from_mdb(x));
  memcpy(v.mv_data, &rr, sizeof rr);
  if (len) memcpy((char *)v.mv_data + sizeof rr, json, len);
  return finish(t, 0);
}

int inbox_release_get(inbox *ib, uint64_t id, release_rec *r) {
  MDB_txn *t;
  MDB_val v;
  KEY(k, id);
  int rc = rbegin(ib, &t);
  if (rc) return rc;
  int x = mdb_get(t, ib->releases, &k, &v);
  if (x) rc = x == MDB_NOTFOUND ? HD_ENOTFOUND : hd_err_from_mdb(x);
  relrec rr;
  if (!rc && v.mv_size < sizeof rr) rc = HD_EIO;
  if (!rc) {
    memcpy(&rr, v.mv_data, sizeof rr);
    r->id = id;
    r->state = rr.state;
    r->updated_ms = rr.updated_ms;
    memcpy(r->app, rr.app, sizeof r->app);
  }
  mdb_txn_abort(t);
  return rc;
}

/* ---- update jobs and the inventory: a format byte, then JSON (easy to extend) ---- */
#define JOB_FORMAT 1

static json_t *job_json(const upd_job *j) {
  json_t *o = json_object();
  char id[24];
  snprintf(id, sizeof id, "%llu", (unsigned long long)j->notice);
#define S(k, v) json_object_set_new(o, k, json_string(v))
#define I(k, v) json_object_set_new(o, k, json_integer((json_int_t)(v)))
  S("app", j->app);
  S("version", j->version);
  json_object_set_new(o, "code", j->has_code ? json_integer(j->code) : json_null());
  I("size", j->size);
  S("sha256", j->sha256);
  S("url", j->url);
  json_object_set_new(o, "notice", j->notice ? json_string(id) : json_null());
  S("state", upd_state_name(j->state));
  I("state_n", j->state);
  I("attempts", j->attempts);
  I("next_try", j->next_try_ms);
  json_object_set_new(o, "restart", json_boolean(j->restart));
  S("etag", j->etag);
  S("store", j->store);
  S("action", j->action);
  S("from", j->from);
  S("result", j->result);
  S("reason", j->reason);
  I("created", j->created_ms);
  I("updated", j->updated_ms);
#undef S
#undef I
  return o;
}

static void str_field(json_t *o, const char *k, char *dst, size_t cap) {
  const char *v = json_string_value(json_object_get(o, k));
  snprintf(dst, cap, "%s", v ? v : "");
}

static int job_parse(const MDB_val *v, upd_job *j) {
  if (v->mv_size < 2 || ((const unsigned char *)v->mv_data)[0] != JOB_FORMAT) return HD_EIO;
  json_t *o = json_loadb((const char *)v->mv_data + 1, v->mv_size - 1, 0, NULL);
  if (!o) return HD_EIO;
  memset(j, 0, sizeof *j);
  str_field(o, "app", j->app, sizeof j->app);
  str_field(o, "version", j->version, sizeof j->version);
  json_t *code = json_object_get(o, "code");
  j->has_code = json_is_integer(code);
  j->code = j->has_code ? json_integer_value(code) : 0;
  j->size = json_integer_value(json_object_get(o, "size"));
  str_field(o, "sha256", j->sha256, sizeof j->sha256);
  str_field(o, "url", j->url, sizeof j->url);
  const char *n = json_string_value(json_object_get(o, "notice"));
  j->notice = n ? strtoull(n, NULL, 10) : 0;
  j->state = (int)json_integer_value(json_object_get(o, "state_n"));
  j->attempts = (uint32_t)json_integer_value(json_object_get(o, "attempts"));
  j->next_try_ms = json_integer_value(json_object_get(o, "next_try"));
  j->restart = json_is_true(json_object_get(o, "restart"));
  str_field(o, "etag", j->etag, sizeof j->etag);
  str_field(o, "store", j->store, sizeof j->store);
  str_field(o, "action", j->action, sizeof j->action);
  str_field(o, "from", j->from, sizeof j->from);
  str_field(o, "result", j->result, sizeof j->result);
  str_field(o, "reason", j->reason, sizeof j->reason);
  j->created_ms = json_integer_value(json_object_get(o, "created"));
  j->updated_ms = json_integer_value(json_object_get(o, "updated"));
  json_decref(o);
  return 0;
}

/* "<app>\0<version>" */
static size_t job_key(const char *app, const char *version, char *buf, size_t cap) {
  size_t a = strlen(app), v = strlen(version);
  if (a + 1 + v > cap) return 0;
  memcpy(buf, app, a);
  buf[a] = 0;
  memcpy(buf + a + 1, version, v);
  return a + 1 + v;
}

static int put_json(MDB_txn *t, MDB_dbi dbi, MDB_val *k, json_t *o) {
  char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  if (!text) return HD_ENOMEM;
  size_t len = strlen(text);
  MDB_val v = {len + 1, NULL};
  int rc = hd_err_from_mdb(mdb_put(t, dbi, k, &v, MDB_RESERVE));
  if (!rc) {
    ((unsigned char *)v.mv_data)[0] = JOB_FORMAT;
    memcpy((char *)v.mv_data + 1, text, len);
  }
  free(text);
  return rc;
}

static int job_put_txn(inbox *ib, MDB_txn *t, const upd_job *j) {
  char kb[UPD_APP_MAX + UPD_VERSION_MAX + 2];
  MDB_val k = {job_key(j->app, j->version, kb, sizeof kb), kb};
  if (!k.mv_size) return HD_EINVAL;
  return put_json(t, ib->updates, &k, job_json(j));
}

int inbox_job_put(inbox *ib, const upd_job *j) {
  MDB_txn *t;
  int rc = wbegin(ib, &t);
  if (rc) return rc;
  return finish(t, job_put_txn(ib, t, j));
}

int inbox_job_get(inbox *ib, const char *app, const char *version, upd_job *j) {
  char kb[UPD_APP_MAX + UPD_VERSION_MAX + 2];
  MDB_val k = {job_key(app, version, kb, sizeof kb), kb}, v;
  if (!k.mv_size) return HD_ENOTFOUND;
  MDB_txn *t;
  int rc = rbegin(ib, &t);
  if (rc) return rc;
  int x = mdb_get(t, ib->updates, &k, &v);
  rc = x == MDB_NOTFOUND ? HD_ENOTFOUND : x ? hd_err_from_mdb(x) : job_parse(&v, j);
  mdb_txn_abort(t);
  return rc;
}

int inbox_job_each(inbox *ib, int (*cb)(void *ud, const upd_job *j), void *ud) {
  MDB_txn *t;
  MDB_cursor *c;
  MDB_val k, v;
  upd_job *all = NULL;
  size_t n = 0, cap = 0;
  int rc = rbegin(ib, &t);
  if (rc) return rc;
  if ((rc = hd_err_from_mdb(mdb_cursor_open(t, ib->updates, &c)))) {
    mdb_txn_abort(t);
    return rc;
  }
  for (int r = mdb_cursor_get(c, &k, &v, MDB_FIRST); r == 0;
       r = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
    if (n == cap) {
      cap = cap ? cap * 2 : 16;
      upd_job *nv = realloc(all, cap * sizeof *nv);
      if (!nv) {
        rc = HD_ENOMEM;
        break;
      }
      all = nv;
    }
    if (job_parse(&v, &all[n]) == 0) n++;
  }
  mdb_cursor_close(c);
  mdb_txn_abort(t);
  for (size_t i = 0; i < n && !rc; i++)
    if (cb(ud, &all[i])) break;
  free(all);
  return rc;
}

static json_t *inv_json(const inv_entry *e) {
  return json_pack("{s:s,s:o,s:I}", "version", e->version, "code",
                   e->has_code ? json_integer(e->code) : json_null(), "updated",
                   (json_int_t)e->updated_ms);
}

static int inv_parse(const MDB_val *k, const MDB_val *v, inv_entry *e) {
  if (v->mv_size < 2 || ((const unsigned char *)v->mv_data)[0] != JOB_FORMAT) return HD_EIO;
  json_t *o = json_loadb((const char *)v->mv_data + 1, v->mv_size - 1, 0, NULL);
  if (!o) return HD_EIO;
  memset(e, 0, sizeof *e);
  size_t al = k->mv_size < UPD_APP_MAX ? k->mv_size : UPD_APP_MAX;
  memcpy(e->app, k->mv_data, al);
  str_field(o, "version", e->version, sizeof e->version);
  json_t *code = json_object_get(o, "code");
  e->has_code = json_is_integer(code);
  e->code = e->has_code ? json_integer_value(code) : 0;
  e->updated_ms = json_integer_value(json_object_get(o, "updated"));
  json_decref(o);
  return 0;
}

static int inv_put_txn(inbox *ib, MDB_txn *t, const inv_entry *e) {
  MDB_val k = {strlen(e->app), (void *)e->app};
  if (!k.mv_size) return HD_EINVAL;
  return put_json(t, ib->inventory, &k, inv_json(e));
}

int inbox_job_installed(inbox *ib, const upd_job *j, const inv_entry *e) {
  MDB_txn *t;
  int rc = wbegin(ib, &t);
  if (rc) return rc;
  rc = job_put_txn(ib, t, j);
  if (!rc) rc = inv_put_txn(ib, t, e);
  return finish(t, rc);
}

int inbox_inv_put(inbox *ib, const inv_entry *e) {
  MDB_txn *t;
  int rc = wbegin(ib, &t);
  if (rc) return rc;
  return finish(t, inv_put_txn(ib, t, e));
}

int inbox_inv_get(inbox *ib, const char *app, inv_entry *e) {
  MDB_val k = {strlen(app), (void *)app}, v;
  if (!k.mv_size) return HD_ENOTFOUND;
  MDB_txn *t;
  int rc = rbegin(ib, &t);
  if (rc) return rc;
  int x = mdb_get(t, ib->inventory, &k, &v);
  rc = x == MDB_NOTFOUND ? HD_ENOTFOUND : x ? hd_err_from_mdb(x) : inv_parse(&k, &v, e);
  mdb_txn_abort(t);
  return rc;
}

int inbox_inv_all(inbox *ib, inv_entry **out, size_t *nout) {
  MDB_txn *t;
  MDB_cursor *c;
  MDB_val k, v;
  inv_entry *all = NULL;
  size_t n = 0, cap = 0;
  int rc = rbegin(ib, &t);
  if (rc) return rc;
  if ((rc = hd_err_from_mdb(mdb_cursor_open(t, ib->inventory, &c)))) {
    mdb_txn_abort(t);
    return rc;
  }
  for (int r = mdb_cursor_get(c, &k, &v, MDB_FIRST); r == 0 && !rc;
       r = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
    if (n == cap) {
      cap = cap ? cap * 2 : 16;
      inv_entry *nv = realloc(all, cap * sizeof *nv);
      if (!nv) {
        rc = HD_ENOMEM;
        break;
      }
      all = nv;
    }
    if (inv_parse(&k, &v, &all[n]) == 0) n++;
  }
  mdb_cursor_close(c);
  mdb_txn_abort(t);
  if (rc) {
    free(all);
    return rc;
  }
  *out = all;
  *nout = n;
  return 0;
}

static const char *const state_names[] = {"pending", "unrouted", "failed"};

int inbox_dump(inbox *ib, FILE *f) {
  MDB_txn *t;
  MDB_cursor *c;
  MDB_val k, v;
  int rc = rbegin(ib, &t);
  if (rc) return rc;
  if (mdb_cursor_open(t, ib->inbox, &c) == 0) {
    for (int r = mdb_cursor_get(c, &k, &v, MDB_FIRST); r == 0;
         r = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
      note n;
      if (rec_to_note(id_of(&k), &v, &n)) continue;
      fprintf(f,
              "{\"db\":\"inbox\",\"id\":\"%llu\",\"app\":\"%s\",\"state\":\"%s\",\"kind\":\"%s\","
              "\"attempts\":%u,\"confirmed\":%s,\"message\":%.*s}\n",
              (unsigned long long)n.id, n.app, n.state < 3 ? state_names[n.state] : "?",
              n.kind == NOTE_RELEASE ? "release" : "notice", n.attempts,
              n.confirmed ? "true" : "false", (int)(v.mv_size - sizeof(rec)),
              (const char *)v.mv_data + sizeof(rec));
    }
    mdb_cursor_close(c);
  }
  if (mdb_cursor_open(t, ib->handled, &c) == 0) {
    for (int r = mdb_cursor_get(c, &k, &v, MDB_FIRST); r == 0;
         r = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
      int64_t at = 0;
      if (v.mv_size == sizeof at) memcpy(&at, v.mv_data, sizeof at);
      fprintf(f, "{\"db\":\"handled\",\"id\":\"%llu\",\"at\":%lld}\n",
              (unsigned long long)id_of(&k), (long long)at);
    }
    mdb_cursor_close(c);
  }
  if (mdb_cursor_open(t, ib->releases, &c) == 0) {
    for (int r = mdb_cursor_get(c, &k, &v, MDB_FIRST); r == 0;
         r = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
      relrec rr;
      if (v.mv_size < sizeof rr) continue;
      memcpy(&rr, v.mv_data, sizeof rr);
      fprintf(f, "{\"db\":\"releases\",\"id\":\"%llu\",\"app\":\"%s\",\"state\":\"%s\","
                 "\"updated\":%lld,\"message\":%.*s}\n",
              (unsigned long long)id_of(&k), rr.app, release_state_name(rr.state),
              (long long)rr.updated_ms,
              (int)(v.mv_size - sizeof rr), (const char *)v.mv_data + sizeof rr);
    }
    mdb_cursor_close(c);
  }
  if (mdb_cursor_open(t, ib->updates, &c) == 0) {
    for (int r = mdb_cursor_get(c, &k, &v, MDB_FIRST); r == 0;
         r = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
      upd_job j;
      if (job_parse(&v, &j)) continue;
      json_t *o = job_json(&j);
      if (!o) continue;
      json_object_set_new(o, "db", json_string("updates"));
      json_object_del(o, "state_n");
      char *s = json_dumps(o, JSON_COMPACT);
      json_decref(o);
      if (s) fprintf(f, "%s\n", s);
      free(s);
    }
    mdb_cursor_close(c);
  }
  if (mdb_cursor_open(t, ib->inventory, &c) == 0) {
    for (int r = mdb_cursor_get(c, &k, &v, MDB_FIRST); r == 0;
         r = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
      inv_entry e;
      if (inv_parse(&k, &v, &e)) continue;
      json_t *o = inv_json(&e);
      if (!o) continue;
      json_object_set_new(o, "db", json_string("inventory"));
      json_object_set_new(o, "app", json_string(e.app));
      char *s = json_dumps(o, JSON_COMPACT);
      json_decref(o);
      if (s) fprintf(f, "%s\n", s);
      free(s);
    }
    mdb_cursor_close(c);
  }
  mdb_txn_abort(t);
  return 0;
}
