/* inbox.c — herald-agent's LMDB message center (see inbox.h). */
#include "inbox.h"

#include <errno.h>
#include <lmdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "herald/error.h"
#include "release.h"

#define REC_VERSION 1

struct inbox {
  MDB_env *env;
  MDB_dbi inbox, handled, releases;
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
  if (!rc) rc = mdb_env_set_maxdbs(ib->env, 4);
  if (!rc) rc = mdb_env_open(ib->env, path, MDB_NOSUBDIR | MDB_NOTLS, 0600);
  if (!rc) rc = mdb_txn_begin(ib->env, NULL, 0, &t);
  if (!rc) rc = mdb_dbi_open(t, "inbox", MDB_CREATE, &ib->inbox);
  if (!rc) rc = mdb_dbi_open(t, "handled", MDB_CREATE, &ib->handled);
  if (!rc) rc = mdb_dbi_open(t, "releases", MDB_CREATE, &ib->releases);
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
  mdb_txn_abort(t);
  return 0;
}
