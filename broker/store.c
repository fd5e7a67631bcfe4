/* store.c — the LMDB layout behind store.h. See docs/ARCHITECTURE.md for the table of
 * databases; every multi-byte number in a key is big-endian so that LMDB's byte order is the
 * numeric order and a prefix scan walks one app's log (or one device's rows) oldest first. */
#include "store.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "bytes.h"
#include "herald/error.h"

#define HD_STORE_SCHEMA 2 /* 2: ack rows carry the app */
#define MSG_HDR 32
#define EXP_OPEN 4 /* expiry groups a write transaction keeps open (seconds of expiry) */

enum {
  DB_META,
  DB_TENANTS,   /* name -> u32 tenant_num */
  DB_APPS,      /* tenant(4) appid -> u32 app_num */
  DB_APP_NAMES, /* app_num(4) -> tenant(4) appid */
  DB_DEVICES,   /* tenant(4) device_id -> dev_num(8) gen(4) created(8) */
  DB_DEV_NAMES, /* dev_num(8) -> tenant(4) device_id */
  DB_REGS,      /* dev_num(8) app_num(4) -> floor(8) */
  DB_APP_DEVS,  /* app_num(4) dev_num(8) -> "" */
  DB_LOG,       /* app_num(4) seq(8) -> message */
  DB_DIRECT,    /* dev_num(8) seq(8) -> message */
  DB_ACKS,      /* dev_num(8) app_num(4) seq(8) -> "" */
  DB_COLLAPSE,  /* app_num(4) dev_num(8) key -> seq(8) */
  DB_EXPIRY,    /* second_ms(8) first_seq(8) 'g' -> n x (seq(8) app_num(4) dev_num(8));
                 * rows written before groups: expires_ms(8) seq(8) -> app_num(4) dev_num(8) */
  DB_COUNT
};

static const char *const db_names[DB_COUNT] = {
    "meta", "tenants", "apps", "app_names", "devices", "dev_names", "regs",
    "app_devs", "log", "direct", "acks", "collapse", "expiry"};

struct hd_store {
  MDB_env *env;
  MDB_dbi dbi[DB_COUNT];
  MDB_txn *rtxn; /* the loop thread's reusable read transaction (reset between uses) */
  int rtxn_live;
  /* Writer thread: what the current write transaction already read, so that a batch of
   * publishes to one app does one lookup of the app and of the sequence counter, not one per
   * message. Valid only for wtxn: every hd__store_wbegin() forgets it (LMDB reuses the same
   * MDB_txn for every top-level write transaction, and a child transaction may be aborted). */
  MDB_txn *wtxn;
  uint64_t wseq;          /* the counter as this transaction has it; 0: not known */
  int wseq_dirty;         /* wseq is newer than the meta row: hd__store_wcommit writes it */
  uint32_t wapp_tenant, wapp_num;
  char wapp_id[HD_STORE_MAX_ID + 1]; /* "" : not known */
  /* The expiry rows wtxn still owes: its publishes grouped by the second they expire in, one
   * row per group written when the transaction commits instead of a row per message (that row
   * was a tenth of the broker's CPU per publish under ingest). Buffers are kept for reuse. */
  struct exp_group {
    int64_t second_ms;
    uint64_t first_seq;
    unsigned char *loc; /* n locators of EXP_LOC bytes */
    size_t n, cap;
  } wexp[EXP_OPEN];
  size_t nwexp;
};

#define MV(p, n) ((MDB_val){.mv_size = (n), .mv_data = (void *)(p)})

static int merr(int rc) { return hd_err_from_mdb(rc); }

/* ---- open / close ---- */
int hd__store_open(const char *dir, uint64_t map_size, hd_store **out) {
  int rc;
  MDB_txn *t = NULL;
  hd_store *s = calloc(1, sizeof *s);
  if (!s) return HD_ENOMEM;
  if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
    free(s);
    return HD_EIO;
  }
  if ((rc = mdb_env_create(&s->env))) goto fail;
  if ((rc = mdb_env_set_maxdbs(s->env, DB_COUNT + HD_STORE_MAX_EXTRA_DBS))) goto fail;
  if ((rc = mdb_env_set_mapsize(s->env, (size_t)map_size))) goto fail;
  /* MDB_NOTLS: the loop thread's read txn is not tied to thread-local slots, so the writer
   * thread and the loop can each hold one without surprises. Durability stays full: every
   * commit is fsync'd (no MDB_NOSYNC / MDB_NOMETASYNC). */
  if ((rc = mdb_env_open(s->env, dir, MDB_NOTLS, 0600))) goto fail;
  if ((rc = mdb_txn_begin(s->env, NULL, 0, &t))) goto fail;
  for (int i = 0; i < DB_COUNT; i++)
    if ((rc = mdb_dbi_open(t, db_names[i], MDB_CREATE, &s->dbi[i]))) goto fail;
  {
    MDB_val k = MV("schema", 6), v;
    rc = mdb_get(t, s->dbi[DB_META], &k, &v);
    if (rc == MDB_NOTFOUND) {
      unsigned char b[4];
      hd_be32(b, HD_STORE_SCHEMA);
      v = MV(b, 4);
      if ((rc = mdb_put(t, s->dbi[DB_META], &k, &v, 0))) goto fail;
    } else if (rc) {
      goto fail;
    } else if (v.mv_size != 4 || hd_rd32(v.mv_data) != HD_STORE_SCHEMA) {
      rc = EINVAL;
      goto fail;
    }
  }
  if ((rc = mdb_txn_commit(t))) {
    t = NULL;
    goto fail;
  }
  *out = s;
  return 0;
fail:
  if (t) mdb_txn_abort(t);
  if (s->env) mdb_env_close(s->env);
  free(s);
  return merr(rc);
}

void hd__store_close(hd_store *s) {
  if (!s) return;
  for (size_t i = 0; i < EXP_OPEN; i++) free(s->wexp[i].loc);
  if (s->rtxn) mdb_txn_abort(s->rtxn);
  mdb_env_close(s->env);
  free(s);
}

MDB_env *hd__store_env(hd_store *s) { return s->env; }

int hd__store_dbi(hd_store *s, const char *name, MDB_dbi *out) {
  MDB_txn *t;
  int rc = mdb_txn_begin(s->env, NULL, 0, &t);
  if (rc) return merr(rc);
  if ((rc = mdb_dbi_open(t, name, MDB_CREATE, out))) {
    mdb_txn_abort(t);
    return merr(rc);
  }
  return merr(mdb_txn_commit(t));
}

static uint64_t meta_u64(hd_store *s, MDB_txn *t, const char *name) {
  MDB_val k = MV(name, strlen(name)), v;
  if (mdb_get(t, s->dbi[DB_META], &k, &v) || v.mv_size != 8) return 0;
  return hd_rd64(v.mv_data);
}

/* LMDB's code, for callers that hand it to mdb-level error handling (hd__store_wcommit). */
static int meta_put_u64_mdb(hd_store *s, MDB_txn *t, const char *name, uint64_t val) {
  unsigned char b[8];
  hd_be64(b, val);
  MDB_val k = MV(name, strlen(name)), v = MV(b, 8);
  return mdb_put(t, s->dbi[DB_META], &k, &v, 0);
}

static int meta_put_u64(hd_store *s, MDB_txn *t, const char *name, uint64_t val) {
  return merr(meta_put_u64_mdb(s, t, name, val));
}

int hd__store_stats(hd_store *s, hd_store_stats *out) {
  MDB_envinfo info;
  MDB_stat st;
  if (mdb_env_info(s->env, &info) || mdb_env_stat(s->env, &st)) return HD_EIO;
  out->map_size = info.me_mapsize;
  out->used_bytes = (uint64_t)(info.me_last_pgno + 1) * st.ms_psize;
  MDB_txn *t;
  out->last_seq = 0;
  if (mdb_txn_begin(s->env, NULL, MDB_RDONLY, &t) == 0) {
    out->last_seq = meta_u64(s, t, "seq");
    mdb_txn_abort(t);
  }
  return 0;
}

/* ---- write side ---- */
/* The sequence counter as transaction t sees it: the kept-back value when t has one. */
static uint64_t seq_now(hd_store *s, MDB_txn *t) {
  return t == s->wtxn && s->wseq ? s->wseq : meta_u64(s, t, "seq");
}

static int exp_flush(hd_store *s, MDB_txn *t);

/* What wtxn kept back (the sequence counter, the expiry groups), written into it. */
static int wflush(hd_store *s, MDB_txn *t) {
  int rc = exp_flush(s, t);
  if (rc == 0 && s->wseq_dirty) {
    if ((rc = meta_put_u64_mdb(s, t, "seq", s->wseq))) return rc;
    s->wseq_dirty = 0;
  }
  return rc;
}

int hd__store_wcommit(hd_store *s, MDB_txn *t) {
  if (t == s->wtxn) {
    int rc = wflush(s, t);
    s->wtxn = NULL; /* ended: whatever comes next begins afresh */
    if (rc) {
      mdb_txn_abort(t);
      return rc;
    }
  }
  return mdb_txn_commit(t);
}

int hd__store_wbegin(hd_store *s, MDB_txn *parent, MDB_txn **out) {
  /* A child of wtxn: what the parent kept back goes into the parent first, or the child's
   * commit (and the parent's) would never write it. */
  if (parent && parent == s->wtxn) {
    int rc = wflush(s, parent);
    if (rc) return merr(rc);
  }
  s->wtxn = NULL;
  s->wseq = 0;
  s->wseq_dirty = 0;
  s->wapp_id[0] = 0;
  s->nwexp = 0;
  int rc = merr(mdb_txn_begin(s->env, parent, 0, out));
  if (rc == 0) s->wtxn = *out;
  return rc;
}

int hd__store_w_tenant(hd_store *s, MDB_txn *t, const char *name, uint32_t *num) {
  MDB_val k = MV(name, strlen(name)), v;
  int rc = mdb_get(t, s->dbi[DB_TENANTS], &k, &v);
  if (rc == 0 && v.mv_size == 4) {
    *num = hd_rd32(v.mv_data);
    return 0;
  }
  if (rc != MDB_NOTFOUND) return merr(rc ? rc : EINVAL);
  uint64_t n = meta_u64(s, t, "next_tenant") + 1;
  unsigned char b[4];
  hd_be32(b, (uint32_t)n);
  v = MV(b, 4);
  if ((rc = mdb_put(t, s->dbi[DB_TENANTS], &k, &v, 0))) return merr(rc);
  *num = (uint32_t)n;
  return meta_put_u64(s, t, "next_tenant", n);
}

int hd__store_tenant_find(hd_store *s, MDB_txn *t, const char *name, uint32_t *num) {
  size_t n = strlen(name);
  if (n == 0 || n > 511) return HD_ENOTFOUND;
  MDB_val k = MV(name, n), v;
  int rc = mdb_get(t, s->dbi[DB_TENANTS], &k, &v);
  if (rc) return merr(rc);
  if (v.mv_size != 4) return HD_EIO;
  *num = hd_rd32(v.mv_data);
  return 0;
}

static size_t app_key(unsigned char *k, uint32_t tenant, const char *appid) {
  size_t n = strlen(appid);
  hd_be32(k, tenant);
  memcpy(k + 4, appid, n);
  return 4 + n;
}

int hd__store_w_app(hd_store *s, MDB_txn *t, uint32_t tenant, const char *appid, int create,
                    uint32_t *app_num) {
  unsigned char kb[4 + HD_STORE_MAX_ID];
  if (strlen(appid) > HD_STORE_MAX_ID || !*appid) return HD_EINVAL;
  if (t == s->wtxn && s->wapp_id[0] && s->wapp_tenant == tenant &&
      strcmp(s->wapp_id, appid) == 0) {
    *app_num = s->wapp_num;
    return 0;
  }
  MDB_val k = MV(kb, app_key(kb, tenant, appid)), v;
  int rc = mdb_get(t, s->dbi[DB_APPS], &k, &v);
  if (rc == 0) {
    *app_num = hd_rd32(v.mv_data);
    if (t == s->wtxn) {
      s->wapp_tenant = tenant;
      s->wapp_num = *app_num;
      strcpy(s->wapp_id, appid);
    }
    return 0;
  }
  if (rc != MDB_NOTFOUND) return merr(rc);
  if (!create) return HD_ENOTFOUND;
  uint64_t n = meta_u64(s, t, "next_app") + 1;
  if (n > UINT32_MAX) return HD_EFULL;
  unsigned char nb[4];
  hd_be32(nb, (uint32_t)n);
  v = MV(nb, 4);
  if ((rc = mdb_put(t, s->dbi[DB_APPS], &k, &v, 0))) return merr(rc);
  MDB_val nk = MV(nb, 4), nv = k; /* app_num -> tenant(4) appid: the same bytes as the key */
  if ((rc = mdb_put(t, s->dbi[DB_APP_NAMES], &nk, &nv, 0))) return merr(rc);
  *app_num = (uint32_t)n;
  return meta_put_u64(s, t, "next_app", n);
}

static int msg_decode(uint64_t seq, const MDB_val *v, hd_store_msg *m) {
  const unsigned char *b = v->mv_data;
  if (v->mv_size < MSG_HDR || b[0] != 1) return HD_EIO;
  size_t clen = (size_t)b[2] << 8 | b[3];
  if (MSG_HDR + clen > v->mv_size) return HD_EIO;
  m->seq = seq;
  m->app_num = hd_rd32(b + 4);
  m->created_ms = (int64_t)hd_rd64(b + 8);
  m->expires_ms = (int64_t)hd_rd64(b + 16);
  m->dev_num = hd_rd64(b + 24);
  m->collapse = (const char *)b + MSG_HDR;
  m->collapse_len = clen;
  m->data = b + MSG_HDR + clen;
  m->data_len = v->mv_size - MSG_HDR - clen;
  return 0;
}

/* The key of a message in DB_LOG (broadcast) or DB_DIRECT (one device). */
static MDB_dbi msg_key(hd_store *s, uint32_t app_num, uint64_t dev_num, uint64_t seq,
                       unsigned char *k, MDB_val *kv) {
  if (dev_num) {
    hd_be64(k, dev_num);
    hd_be64(k + 8, seq);
    *kv = MV(k, 16);
    return s->dbi[DB_DIRECT];
  }
  hd_be32(k, app_num);
  hd_be64(k + 4, seq);
  *kv = MV(k, 12);
  return s->dbi[DB_LOG];
}

static size_t collapse_key(unsigned char *k, uint32_t app_num, uint64_t dev_num, const char *c,
                           size_t clen) {
  hd_be32(k, app_num);
  hd_be64(k + 4, dev_num);
  memcpy(k + 12, c, clen);
  return 12 + clen;
}

static void expiry_key(unsigned char *k, int64_t expires_ms, uint64_t seq) {
  hd_be64(k, (uint64_t)expires_ms);
  hd_be64(k + 8, seq);
}

/* Expiry rows. A group row holds the messages of one transaction that expire within the same
 * second: key second_ms(8) first_seq(8) 'g' (17 bytes, so it never equals a 16-byte single
 * row's key), value EXP_LOC bytes per message. The sweeper takes a row once its second is
 * over, so a message's space is freed up to a second after it expired (reads hide it at
 * once). Single rows (expires_ms(8) seq(8) -> app(4) dev(8)) were written before groups; the
 * sweeper still reads them. */
#define EXP_LOC 20       /* seq(8) app_num(4) dev_num(8) */
#define EXP_KEY 17
#define EXP_ROW_MAX 512  /* locators per row: a sweep that stops inside a row rewrites <= 10 KiB */

static void exp_group_key(unsigned char *k, int64_t second_ms, uint64_t first_seq) {
  hd_be64(k, (uint64_t)second_ms);
  hd_be64(k + 8, first_seq);
  k[16] = 'g';
}

static int exp_row_put(hd_store *s, MDB_txn *t, int64_t second_ms, uint64_t first_seq,
                       const unsigned char *loc, size_t n) {
  unsigned char kb[EXP_KEY];
  exp_group_key(kb, second_ms, first_seq);
  MDB_val k = MV(kb, EXP_KEY), v = MV(loc, n * EXP_LOC);
  return mdb_put(t, s->dbi[DB_EXPIRY], &k, &v, 0);
}

/* Writes wtxn's open groups as rows. An LMDB code. */
static int exp_flush(hd_store *s, MDB_txn *t) {
  int rc = 0;
  for (size_t i = 0; i < s->nwexp && rc == 0; i++) {
    struct exp_group *g = &s->wexp[i];
    if (g->n) rc = exp_row_put(s, t, g->second_ms, g->first_seq, g->loc, g->n);
  }
  s->nwexp = 0;
  return rc;
}

/* Records that message seq (app, dev) expires at expires_ms: into one of wtxn's groups, or
 * (any other transaction) a row of its own at once. An LMDB code. */
static int exp_add(hd_store *s, MDB_txn *t, int64_t expires_ms, uint64_t seq, uint32_t app,
                   uint64_t dev) {
  unsigned char one[EXP_LOC];
  hd_be64(one, seq);
  hd_be32(one + 8, app);
  hd_be64(one + 12, dev);
  int64_t second = expires_ms - expires_ms % 1000;
  if (t != s->wtxn) return exp_row_put(s, t, second, seq, one, 1);
  struct exp_group *g = NULL;
  for (size_t i = 0; i < s->nwexp && !g; i++)
    if (s->wexp[i].second_ms == second) g = &s->wexp[i];
  int rc;
  if (g && g->n == EXP_ROW_MAX) { /* full: write it and go on in a new row */
    if ((rc = exp_row_put(s, t, g->second_ms, g->first_seq, g->loc, g->n))) return rc;
    g->n = 0;
  } else if (!g && s->nwexp < EXP_OPEN) {
    g = &s->wexp[s->nwexp++];
    g->n = 0;
  } else if (!g) { /* more seconds than open groups (mixed TTLs): the first one is written */
    g = &s->wexp[0];
    if ((rc = exp_row_put(s, t, g->second_ms, g->first_seq, g->loc, g->n))) return rc;
    g->n = 0;
  }
  if (g->n == 0) {
    g->second_ms = second;
    g->first_seq = seq;
  }
  if (g->n == g->cap) {
    size_t cap = g->cap ? g->cap * 2 : 64;
    unsigned char *l = realloc(g->loc, cap * EXP_LOC);
    if (!l) return ENOMEM;
    g->loc = l;
    g->cap = cap;
  }
  memcpy(g->loc + g->n * EXP_LOC, one, EXP_LOC);
  g->n++;
  return 0;
}

/* Remove a stored message and the rows that point at it, if it expired by due_ms (INT64_MAX:
 * whenever). 0 removed, 1 not due yet (kept), HD_ENOTFOUND if gone. A group expiry row keeps
 * its locator of the message (rewriting the row for one message would cost more than the
 * sweeper skipping it later); a single expiry row goes with it. */
static int msg_delete_due(hd_store *s, MDB_txn *t, uint32_t app_num, uint64_t dev_num,
                          uint64_t seq, int64_t due_ms) {
  unsigned char kb[16], eb[16], cb[12 + HD_STORE_MAX_COLLAPSE];
  MDB_val k, v;
  MDB_dbi dbi = msg_key(s, app_num, dev_num, seq, kb, &k);
  int rc = mdb_get(t, dbi, &k, &v);
  if (rc) return merr(rc);
  hd_store_msg m;
  if ((rc = msg_decode(seq, &v, &m))) return rc;
  if (m.expires_ms > due_ms) return 1;
  expiry_key(eb, m.expires_ms, seq);
  MDB_val ek = MV(eb, 16);
  rc = mdb_del(t, s->dbi[DB_EXPIRY], &ek, NULL);
  if (rc && rc != MDB_NOTFOUND) return merr(rc);
  if (m.collapse_len) {
    MDB_val ck = MV(cb, collapse_key(cb, m.app_num, m.dev_num, m.collapse, m.collapse_len)), cv;
    /* Only drop the collapse row if it still names this message, not a newer one. */
    if (mdb_get(t, s->dbi[DB_COLLAPSE], &ck, &cv) == 0 && cv.mv_size == 8 &&
        hd_rd64(cv.mv_data) == seq) {
      if ((rc = mdb_del(t, s->dbi[DB_COLLAPSE], &ck, NULL))) return merr(rc);
    }
  }
  return merr(mdb_del(t, dbi, &k, NULL));
}

static int msg_delete(hd_store *s, MDB_txn *t, uint32_t app_num, uint64_t dev_num, uint64_t seq) {
  return msg_delete_due(s, t, app_num, dev_num, seq, INT64_MAX);
}

int hd__store_w_publish(hd_store *s, MDB_txn *t, const hd_store_pub *p, uint64_t *seq,
                        uint64_t *replaced) {
  int rc;
  if (p->collapse_len > HD_STORE_MAX_COLLAPSE) return HD_EINVAL;
  uint64_t n = seq_now(s, t) + 1;
  *replaced = 0;
  if (p->collapse_len) {
    unsigned char cb[12 + HD_STORE_MAX_COLLAPSE], sb[8];
    MDB_val ck = MV(cb, collapse_key(cb, p->app_num, p->dev_num, p->collapse, p->collapse_len));
    MDB_val cv;
    rc = mdb_get(t, s->dbi[DB_COLLAPSE], &ck, &cv);
    if (rc == 0 && cv.mv_size == 8) {
      uint64_t old = hd_rd64(cv.mv_data);
      rc = msg_delete(s, t, p->app_num, p->dev_num, old);
      if (rc == 0) *replaced = old;
      else if (rc != HD_ENOTFOUND) return rc;
    } else if (rc && rc != MDB_NOTFOUND) {
      return merr(rc);
    }
    hd_be64(sb, n);
    cv = MV(sb, 8);
    if ((rc = mdb_put(t, s->dbi[DB_COLLAPSE], &ck, &cv, 0))) return merr(rc);
  }
  unsigned char kb[16];
  MDB_val k, v;
  MDB_dbi dbi = msg_key(s, p->app_num, p->dev_num, n, kb, &k);
  v.mv_size = MSG_HDR + p->collapse_len + p->data_len;
  /* MDB_RESERVE: LMDB hands us the page space and we write the record in place, one copy. */
  if ((rc = mdb_put(t, dbi, &k, &v, MDB_RESERVE))) return merr(rc);
  unsigned char *b = v.mv_data;
  b[0] = 1;
  b[1] = p->dev_num ? 1 : 0;
  b[2] = (unsigned char)(p->collapse_len >> 8);
  b[3] = (unsigned char)p->collapse_len;
  hd_be32(b + 4, p->app_num);
  hd_be64(b + 8, (uint64_t)p->now_ms);
  hd_be64(b + 16, (uint64_t)p->expires_ms);
  hd_be64(b + 24, p->dev_num);
  if (p->collapse_len) memcpy(b + MSG_HDR, p->collapse, p->collapse_len);
  if (p->data_len) memcpy(b + MSG_HDR + p->collapse_len, p->data, p->data_len);
  /* where the message lives, for the sweeper */
  if ((rc = exp_add(s, t, p->expires_ms, n, p->app_num, p->dev_num))) return merr(rc);
  if (t == s->wtxn) {
    s->wseq = n; /* the meta row is written once, by hd__store_wcommit */
    s->wseq_dirty = 1;
  } else if ((rc = meta_put_u64(s, t, "seq", n))) {
    return rc;
  }
  *seq = n;
  return 0;
}

static size_t device_key(unsigned char *k, uint32_t tenant, const char *id) {
  size_t n = strlen(id);
  hd_be32(k, tenant);
  memcpy(k + 4, id, n);
  return 4 + n;
}

static int device_get(hd_store *s, MDB_txn *t, uint32_t tenant, const char *id,
                      hd_store_device *out) {
  unsigned char kb[4 + HD_STORE_MAX_ID];
  if (strlen(id) > HD_STORE_MAX_ID || !*id) return HD_EINVAL;
  MDB_val k = MV(kb, device_key(kb, tenant, id)), v;
  int rc = mdb_get(t, s->dbi[DB_DEVICES], &k, &v);
  if (rc) return merr(rc);
  if (v.mv_size < 20) return HD_EIO;
  out->tenant_num = tenant;
  out->dev_num = hd_rd64(v.mv_data);
  out->gen = hd_rd32((const unsigned char *)v.mv_data + 8);
  out->created_ms = (int64_t)hd_rd64((const unsigned char *)v.mv_data + 12);
  return 0;
}

int hd__store_w_device(hd_store *s, MDB_txn *t, uint32_t tenant, const char *device_id,
                       hd_store_device *out) {
  return device_get(s, t, tenant, device_id, out);
}

int hd__store_w_device_create(hd_store *s, MDB_txn *t, uint32_t tenant, const char *device_id,
                              int64_t now_ms, hd_store_device *out) {
  unsigned char kb[4 + HD_STORE_MAX_ID], vb[20], nb[8];
  if (strlen(device_id) > HD_STORE_MAX_ID || !*device_id) return HD_EINVAL;
  uint64_t n = meta_u64(s, t, "next_dev") + 1;
  hd_be64(vb, n);
  hd_be32(vb + 8, 1);
  hd_be64(vb + 12, (uint64_t)now_ms);
  MDB_val k = MV(kb, device_key(kb, tenant, device_id)), v = MV(vb, 20);
  int rc = mdb_put(t, s->dbi[DB_DEVICES], &k, &v, MDB_NOOVERWRITE);
  if (rc) return merr(rc);
  hd_be64(nb, n);
  MDB_val nk = MV(nb, 8);
  if ((rc = mdb_put(t, s->dbi[DB_DEV_NAMES], &nk, &k, 0))) return merr(rc);
  if ((rc = meta_put_u64(s, t, "next_dev", n))) return rc;
  out->tenant_num = tenant;
  out->dev_num = n;
  out->gen = 1;
  out->created_ms = now_ms;
  return 0;
}

int hd__store_w_device_bump(hd_store *s, MDB_txn *t, uint32_t tenant, const char *device_id,
                            hd_store_device *out) {
  unsigned char kb[4 + HD_STORE_MAX_ID], vb[20];
  int rc = device_get(s, t, tenant, device_id, out);
  if (rc) return rc;
  /* Wrapping to 1 would make the oldest tokens valid again. */
  if (out->gen == UINT32_MAX) return HD_ETOOBIG;
  out->gen++;
  hd_be64(vb, out->dev_num);
  hd_be32(vb + 8, out->gen);
  hd_be64(vb + 12, (uint64_t)out->created_ms);
  MDB_val k = MV(kb, device_key(kb, tenant, device_id)), v = MV(vb, 20);
  return merr(mdb_put(t, s->dbi[DB_DEVICES], &k, &v, 0));
}

static void reg_key(unsigned char *k, uint64_t dev_num, uint32_t app_num) {
  hd_be64(k, dev_num);
  hd_be32(k + 8, app_num);
}

int hd__store_w_is_registered(hd_store *s, MDB_txn *t, uint64_t dev_num, uint32_t app_num) {
  unsigned char kb[12];
  reg_key(kb, dev_num, app_num);
  MDB_val k = MV(kb, 12), v;
  return merr(mdb_get(t, s->dbi[DB_REGS], &k, &v));
}

/* Registrations of one device, read through whichever txn is given. */
static int regs_list(hd_store *s, MDB_txn *t, uint64_t dev_num, hd_store_reg *regs, size_t max,
                     size_t *n) {
  MDB_cursor *c;
  unsigned char kb[12];
  int rc = mdb_cursor_open(t, s->dbi[DB_REGS], &c);
  if (rc) return merr(rc);
  reg_key(kb, dev_num, 0);
  MDB_val k = MV(kb, 12), v;
  *n = 0;
  for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
       rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
    if (k.mv_size != 12 || hd_rd64(k.mv_data) != dev_num) break;
    if (*n == max) {
      mdb_cursor_close(c);
      return HD_ETOOBIG;
    }
    regs[*n].app_num = hd_rd32((const unsigned char *)k.mv_data + 8);
    regs[*n].floor = v.mv_size == 8 ? hd_rd64(v.mv_data) : 0;
    (*n)++;
  }
  mdb_cursor_close(c);
  return rc && rc != MDB_NOTFOUND ? merr(rc) : 0;
}

int hd__store_w_register(hd_store *s, MDB_txn *t, uint64_t dev_num, uint32_t app_num) {
  int rc = hd__store_w_is_registered(s, t, dev_num, app_num);
  if (rc != HD_ENOTFOUND) return rc; /* 0: already registered */
  hd_store_reg regs[HD_STORE_MAX_REGS];
  size_t n;
  if ((rc = regs_list(s, t, dev_num, regs, HD_STORE_MAX_REGS, &n))) return rc;
  if (n >= HD_STORE_MAX_REGS) return HD_ETOOBIG;
  unsigned char kb[12], fb[8], ab[12];
  reg_key(kb, dev_num, app_num);
  hd_be64(fb, seq_now(s, t));
  MDB_val k = MV(kb, 12), v = MV(fb, 8);
  if ((rc = mdb_put(t, s->dbi[DB_REGS], &k, &v, 0))) return merr(rc);
  hd_be32(ab, app_num);
  hd_be64(ab + 4, dev_num);
  MDB_val ak = MV(ab, 12), av = MV("", 0);
  return merr(mdb_put(t, s->dbi[DB_APP_DEVS], &ak, &av, 0));
}

/* An ack row: per device and app, so the floor can drop every row below it with one range
 * delete, including rows of messages that collapse or expiry removed meanwhile. */
static void ack_key(unsigned char *k, uint64_t dev_num, uint32_t app_num, uint64_t seq) {
  hd_be64(k, dev_num);
  hd_be32(k + 8, app_num);
  hd_be64(k + 12, seq);
}

static void dseq_key(unsigned char *k, uint64_t dev_num, uint64_t seq) {
  hd_be64(k, dev_num);
  hd_be64(k + 8, seq);
}

/* Raise the device's floor for one app (from r->floor, which may already be ahead of the
 * stored value `stored`) over every message that is acked or expired, then drop the ack rows at
 * or below the new floor, so the acks table only ever holds acks above it; store the floor if
 * it moved from `stored`. */
static int floor_advance(hd_store *s, MDB_txn *t, uint64_t dev_num, hd_store_reg *r,
                         uint64_t stored, int64_t now_ms) {
  MDB_cursor *c;
  unsigned char kb[12], ab[20];
  int rc = mdb_cursor_open(t, s->dbi[DB_LOG], &c);
  if (rc) return merr(rc);
  uint64_t floor = r->floor;
  hd_be32(kb, r->app_num);
  hd_be64(kb + 4, floor + 1);
  MDB_val k = MV(kb, 12), v;
  for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
       rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
    if (k.mv_size != 12 || hd_rd32(k.mv_data) != r->app_num) break;
    uint64_t seq = hd_rd64((const unsigned char *)k.mv_data + 4);
    hd_store_msg m;
    if (msg_decode(seq, &v, &m)) break;
    ack_key(ab, dev_num, r->app_num, seq);
    MDB_val akey = MV(ab, 20), av;
    int arc = mdb_get(t, s->dbi[DB_ACKS], &akey, &av);
    if (arc == MDB_NOTFOUND) {
      if (m.expires_ms > now_ms) break; /* first message still pending: the floor stops */
    } else if (arc) {
      rc = arc;
      break;
    }
    floor = seq;
  }
  mdb_cursor_close(c);
  if (rc && rc != MDB_NOTFOUND) return merr(rc);
  if (floor == stored) return 0;
  /* Every ack row of this device and app up to the floor goes, whether its message is still
   * in the log or was collapsed or swept since. */
  if ((rc = mdb_cursor_open(t, s->dbi[DB_ACKS], &c))) return merr(rc);
  ack_key(ab, dev_num, r->app_num, 0);
  k = MV(ab, 20);
  for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
       rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
    const unsigned char *kp = k.mv_data;
    if (k.mv_size != 20 || hd_rd64(kp) != dev_num || hd_rd32(kp + 8) != r->app_num ||
        hd_rd64(kp + 12) > floor)
      break;
    if ((rc = mdb_cursor_del(c, 0))) break;
  }
  mdb_cursor_close(c);
  if (rc && rc != MDB_NOTFOUND) return merr(rc);
  r->floor = floor;
  unsigned char rk[12], fb[8];
  reg_key(rk, dev_num, r->app_num);
  hd_be64(fb, floor);
  MDB_val rkey = MV(rk, 12), fv = MV(fb, 8);
  return merr(mdb_put(t, s->dbi[DB_REGS], &rkey, &fv, 0));
}

/* 1 if seq is the first message of the app's log after r's floor: acking it only moves the
 * floor (no ack row to write now and delete again), which is what a device acking in order
 * does. 0 if not (something unacked or expired lies between), or a negative HD_E*. */
static int next_after_floor(MDB_cursor *log, const hd_store_reg *r, uint64_t seq) {
  unsigned char kb[12];
  hd_be32(kb, r->app_num);
  hd_be64(kb + 4, r->floor + 1);
  MDB_val k = MV(kb, 12), v;
  int rc = mdb_cursor_get(log, &k, &v, MDB_SET_RANGE);
  if (rc == MDB_NOTFOUND) return 0;
  if (rc) return merr(rc);
  return k.mv_size == 12 && hd_rd32(k.mv_data) == r->app_num &&
         hd_rd64((const unsigned char *)k.mv_data + 4) == seq;
}

int hd__store_w_ack(hd_store *s, MDB_txn *t, uint64_t dev_num, const uint64_t *ids, size_t n,
                    int64_t now_ms, size_t *acked) {
  hd_store_reg regs[HD_STORE_MAX_REGS];
  uint64_t stored[HD_STORE_MAX_REGS];
  unsigned char dirty[HD_STORE_MAX_REGS] = {0};
  size_t nregs;
  MDB_cursor *log = NULL;
  int rc = regs_list(s, t, dev_num, regs, HD_STORE_MAX_REGS, &nregs);
  if (rc) return rc;
  for (size_t r = 0; r < nregs; r++) stored[r] = regs[r].floor;
  *acked = 0;
  for (size_t i = 0; i < n; i++) {
    uint64_t seq = ids[i];
    rc = msg_delete(s, t, 0, dev_num, seq); /* a message sent to this device alone */
    if (rc == 0) {
      (*acked)++;
      continue;
    }
    if (rc != HD_ENOTFOUND) goto out;
    for (size_t r = 0; r < nregs; r++) {
      if (seq <= regs[r].floor) continue;
      if (!log && (rc = merr(mdb_cursor_open(t, s->dbi[DB_LOG], &log)))) goto out;
      if ((rc = next_after_floor(log, &regs[r], seq)) < 0) goto out;
      if (rc == 1) {
        regs[r].floor = seq; /* floor_advance below stores it and goes on from there */
        (*acked)++;
        dirty[r] = 1;
        break;
      }
      unsigned char kb[12], ab[20];
      MDB_val k, v;
      msg_key(s, regs[r].app_num, 0, seq, kb, &k);
      rc = mdb_get(t, s->dbi[DB_LOG], &k, &v);
      if (rc == MDB_NOTFOUND) continue;
      if (rc) {
        rc = merr(rc);
        goto out;
      }
      ack_key(ab, dev_num, regs[r].app_num, seq);
      MDB_val akey = MV(ab, 20), aval = MV("", 0);
      rc = mdb_put(t, s->dbi[DB_ACKS], &akey, &aval, MDB_NOOVERWRITE);
      if (rc == 0) {
        (*acked)++;
        dirty[r] = 1;
      } else if (rc != MDB_KEYEXIST) {
        rc = merr(rc);
        goto out;
      }
      break;
    }
  }
  rc = 0;
  for (size_t r = 0; r < nregs && rc == 0; r++)
    if (dirty[r]) rc = floor_advance(s, t, dev_num, &regs[r], stored[r], now_ms);
out:
  if (log) mdb_cursor_close(log);
  return rc;
}

/* One expiry row due, copied out of the cursor's page before anything is deleted. */
typedef struct exp_due {
  unsigned char key[EXP_KEY];
  size_t klen;
  unsigned char *loc; /* locators, EXP_LOC bytes each (a single row's one, converted) */
  size_t n;
} exp_due;

/* The rows due by now_ms, oldest first, until they hold `max` messages: a group row once its
 * whole second has passed (every message in it has expired), a single row at its expiry. */
static int exp_collect(hd_store *s, MDB_txn *t, int64_t now_ms, size_t max, exp_due **out,
                       size_t *nout) {
  MDB_cursor *c;
  MDB_val k, v;
  exp_due *rows = NULL;
  size_t n = 0, cap = 0, locs = 0;
  int rc = mdb_cursor_open(t, s->dbi[DB_EXPIRY], &c);
  if (rc) return merr(rc);
  for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0 && locs < max;
       rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
    if (k.mv_size < 16) break;
    int64_t at = (int64_t)hd_rd64(k.mv_data);
    if (at > now_ms) break;
    if (k.mv_size == EXP_KEY && at > now_ms - 1000) continue; /* its second is not over */
    if (n == cap) {
      cap = cap ? cap * 2 : 16;
      exp_due *r = realloc(rows, cap * sizeof *rows);
      if (!r) {
        rc = ENOMEM;
        break;
      }
      rows = r;
    }
    exp_due *d = &rows[n];
    d->klen = k.mv_size < EXP_KEY ? k.mv_size : EXP_KEY;
    memcpy(d->key, k.mv_data, d->klen);
    int single = k.mv_size == 16 && v.mv_size == 12;
    int group = k.mv_size == EXP_KEY && v.mv_size % EXP_LOC == 0;
    d->n = single ? 1 : group ? v.mv_size / EXP_LOC : 0; /* 0: malformed, only deleted */
    d->loc = d->n ? malloc(d->n * EXP_LOC) : NULL;
    if (d->n && !d->loc) {
      rc = ENOMEM;
      break;
    }
    if (single) {
      memcpy(d->loc, (const unsigned char *)k.mv_data + 8, 8);
      memcpy(d->loc + 8, v.mv_data, 12);
    } else if (group) {
      memcpy(d->loc, v.mv_data, v.mv_size);
    }
    n++;
    locs += d->n ? d->n : 1;
  }
  mdb_cursor_close(c);
  if (rc && rc != MDB_NOTFOUND) {
    for (size_t i = 0; i < n; i++) free(rows[i].loc);
    free(rows);
    return merr(rc);
  }
  *out = rows;
  *nout = n;
  return 0;
}

int hd__store_w_sweep(hd_store *s, MDB_txn *t, int64_t now_ms, size_t max, size_t *deleted,
                      int *more) {
  *deleted = 0;
  if (more) *more = 0;
  exp_due *rows = NULL;
  size_t nrows = 0, budget = max;
  int rc = exp_collect(s, t, now_ms, max, &rows, &nrows);
  if (rc) return rc;
  for (size_t r = 0; r < nrows && rc == 0; r++) {
    exp_due *d = &rows[r];
    size_t kept = 0;
    /* Each message is looked at once per sweep (budget), deleted or already gone (collapsed,
     * acked). Those past the budget, and any not expired after all, stay in the row, written
     * back at its front. */
    for (size_t i = 0; i < d->n && rc == 0; i++) {
      unsigned char *l = d->loc + i * EXP_LOC;
      int out = 1;
      if (budget) {
        budget--;
        out = msg_delete_due(s, t, hd_rd32(l + 8), hd_rd64(l + 12), hd_rd64(l), now_ms);
        if (out == 0) (*deleted)++;
        if (out == HD_ENOTFOUND) out = 0;
        if (out < 0) rc = out;
      }
      if (out == 1) memmove(d->loc + kept++ * EXP_LOC, l, EXP_LOC);
    }
    if (rc) break;
    if (d->n == 0 && budget) budget--;
    MDB_val k = MV(d->key, d->klen);
    if (kept == 0) {
      int drc = mdb_del(t, s->dbi[DB_EXPIRY], &k, NULL);
      if (drc && drc != MDB_NOTFOUND) rc = merr(drc);
    } else if (kept < d->n && d->klen == EXP_KEY) {
      MDB_val v = MV(d->loc, kept * EXP_LOC);
      rc = merr(mdb_put(t, s->dbi[DB_EXPIRY], &k, &v, 0));
    }
  }
  /* exp_collect stops gathering rows at max messages: used up, there may be more due. */
  if (more && rc == 0 && budget == 0) *more = 1;
  for (size_t r = 0; r < nrows; r++) free(rows[r].loc);
  free(rows);
  return rc;
}

uint64_t hd__store_pub_cost(hd_store *s, size_t data_len, size_t collapse_len) {
  MDB_stat st;
  uint64_t psize = mdb_env_stat(s->env, &st) == 0 ? st.ms_psize : 4096;
  uint64_t rec = MSG_HDR + data_len + collapse_len;
  /* Values over about half a page go to overflow pages, whole pages each; small ones share a
   * leaf. Add the expiry and collapse rows and a copy-on-write path of a few pages. */
  uint64_t body = rec > psize / 2 ? (rec + 16 + psize - 1) / psize * psize : rec + 64;
  return body + 4 * psize;
}

/* Less free space than this on the store's filesystem after a failed write means it is full:
 * LMDB writes up to 64 pages at a time, and stops at the first short write. */
#define STORE_FS_FULL_BYTES ((uint64_t)1 << 20)

int hd__store_commit_error(hd_store *s, int mdb_rc) {
  int rc = hd_err_from_mdb(mdb_rc);
  const char *dir = NULL;
  struct statvfs fs;
  if (rc == HD_EIO && mdb_rc == EIO && mdb_env_get_path(s->env, &dir) == 0 && dir &&
      statvfs(dir, &fs) == 0 && (uint64_t)fs.f_bavail * fs.f_frsize < STORE_FS_FULL_BYTES)
    rc = HD_EFULL;
  return rc;
}

int hd__store_room(hd_store *s, uint64_t want, uint64_t *room) {
  MDB_envinfo info;
  MDB_stat st;
  int rc = mdb_env_info(s->env, &info);
  if (!rc) rc = mdb_env_stat(s->env, &st);
  if (rc) return merr(rc);
  uint64_t psize = st.ms_psize;
  uint64_t total = info.me_mapsize / psize, used = info.me_last_pgno + 1;
  uint64_t tail = total > used ? (total - used) * psize : 0;
  *room = tail;
  if (tail >= want) return 0;
  /* Short on never-used pages: count the free list (database 0), whose values are page
   * lists that start with their length. LMDB forbids cursors on it inside a write
   * transaction, hence the read transaction. Pages an old reader still sees are counted too,
   * so this errs towards optimism; LMDB's own map-full error stays the last line of defence. */
  MDB_txn *t;
  MDB_cursor *c;
  if ((rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &t))) return merr(rc);
  if ((rc = mdb_cursor_open(t, 0, &c))) {
    mdb_txn_abort(t);
    return merr(rc);
  }
  MDB_val k, v;
  uint64_t freepages = 0;
  for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT))
    if (v.mv_size >= sizeof(size_t)) freepages += *(const size_t *)v.mv_data;
  mdb_cursor_close(c);
  mdb_txn_abort(t);
  *room = tail + freepages * psize;
  return 0;
}

int hd__store_touch(hd_store *s) {
  MDB_txn *t;
  int rc = mdb_txn_begin(s->env, NULL, 0, &t);
  if (rc) return merr(rc);
  rc = meta_put_u64(s, t, "touch", meta_u64(s, t, "touch") + 1);
  if (rc) {
    mdb_txn_abort(t);
    return rc;
  }
  return merr(mdb_txn_commit(t));
}

/* ---- read side ---- */
int hd__store_rbegin(hd_store *s, MDB_txn **out) {
  int rc;
  if (s->rtxn_live) { /* nested use on the loop thread: share the open snapshot */
    *out = s->rtxn;
    s->rtxn_live++;
    return 0;
  }
  if (s->rtxn) rc = mdb_txn_renew(s->rtxn);
  else rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &s->rtxn);
  if (rc) return merr(rc);
  s->rtxn_live = 1;
  *out = s->rtxn;
  return 0;
}

void hd__store_rend(hd_store *s, MDB_txn *t) {
  (void)t;
  if (--s->rtxn_live == 0) mdb_txn_reset(s->rtxn);
}

int hd__store_r_device(hd_store *s, MDB_txn *t, uint32_t tenant, const char *device_id,
                       hd_store_device *out) {
  return device_get(s, t, tenant, device_id, out);
}

int hd__store_r_regs(hd_store *s, MDB_txn *t, uint64_t dev_num, hd_store_reg *regs, size_t max,
                     size_t *n) {
  return regs_list(s, t, dev_num, regs, max, n);
}

int hd__store_r_app_name(hd_store *s, MDB_txn *t, uint32_t app_num, uint32_t *tenant, char *buf,
                         size_t buflen) {
  unsigned char kb[4];
  hd_be32(kb, app_num);
  MDB_val k = MV(kb, 4), v;
  int rc = mdb_get(t, s->dbi[DB_APP_NAMES], &k, &v);
  if (rc) return merr(rc);
  if (v.mv_size < 5 || v.mv_size - 4 >= buflen) return HD_EIO;
  *tenant = hd_rd32(v.mv_data);
  memcpy(buf, (const char *)v.mv_data + 4, v.mv_size - 4);
  buf[v.mv_size - 4] = 0;
  return 0;
}

int hd__store_r_app_num(hd_store *s, MDB_txn *t, uint32_t tenant, const char *appid,
                        uint32_t *app_num) {
  unsigned char kb[4 + HD_STORE_MAX_ID];
  size_t n = strlen(appid);
  if (n == 0 || n > HD_STORE_MAX_ID) return HD_ENOTFOUND;
  hd_be32(kb, tenant);
  memcpy(kb + 4, appid, n);
  MDB_val k = MV(kb, 4 + n), v;
  int rc = mdb_get(t, s->dbi[DB_APPS], &k, &v);
  if (rc) return merr(rc);
  if (v.mv_size != 4) return HD_EIO;
  *app_num = hd_rd32(v.mv_data);
  return 0;
}

int hd__store_r_dev_name(hd_store *s, MDB_txn *t, uint64_t dev_num, uint32_t *tenant, char *buf,
                         size_t buflen) {
  unsigned char kb[8];
  hd_be64(kb, dev_num);
  MDB_val k = MV(kb, 8), v;
  int rc = mdb_get(t, s->dbi[DB_DEV_NAMES], &k, &v);
  if (rc) return merr(rc);
  if (v.mv_size < 5 || v.mv_size - 4 >= buflen) return HD_EIO;
  *tenant = hd_rd32(v.mv_data);
  memcpy(buf, (const char *)v.mv_data + 4, v.mv_size - 4);
  buf[v.mv_size - 4] = 0;
  return 0;
}

int hd__store_r_app_devs_page(hd_store *s, MDB_txn *t, uint32_t app_num, uint64_t after,
                              uint64_t *devs, size_t max, size_t *n) {
  MDB_cursor *c;
  unsigned char kb[12];
  *n = 0;
  if (after == UINT64_MAX) return 0;
  int rc = mdb_cursor_open(t, s->dbi[DB_APP_DEVS], &c);
  if (rc) return merr(rc);
  hd_be32(kb, app_num);
  hd_be64(kb + 4, after + 1);
  MDB_val k = MV(kb, 12), v;
  for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0 && *n < max;
       rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
    if (k.mv_size != 12 || hd_rd32(k.mv_data) != app_num) break;
    devs[(*n)++] = hd_rd64((const unsigned char *)k.mv_data + 4);
  }
  mdb_cursor_close(c);
  return rc && rc != MDB_NOTFOUND ? merr(rc) : 0;
}

int hd__store_r_is_done(hd_store *s, MDB_txn *t, uint64_t dev_num, uint32_t app_num,
                        uint64_t seq) {
  hd_store_reg regs[HD_STORE_MAX_REGS];
  size_t n = 0;
  int rc = regs_list(s, t, dev_num, regs, HD_STORE_MAX_REGS, &n);
  if (rc) return rc;
  for (size_t i = 0; i < n; i++)
    if (regs[i].app_num == app_num && seq <= regs[i].floor) return 1;
  unsigned char ab[20];
  ack_key(ab, dev_num, app_num, seq);
  MDB_val k = MV(ab, 20), v;
  rc = mdb_get(t, s->dbi[DB_ACKS], &k, &v);
  if (rc == 0) return 1;
  return rc == MDB_NOTFOUND ? 0 : merr(rc);
}

int hd__store_r_msg(hd_store *s, MDB_txn *t, uint32_t app_num, uint64_t dev_num, uint64_t seq,
                    hd_store_msg *out) {
  unsigned char kb[16];
  MDB_val k, v;
  MDB_dbi dbi = msg_key(s, app_num, dev_num, seq, kb, &k);
  int rc = mdb_get(t, dbi, &k, &v);
  if (rc) return merr(rc);
  return msg_decode(seq, &v, out);
}

int hd__store_r_app_devices(hd_store *s, MDB_txn *t, uint32_t app_num, uint64_t *count) {
  MDB_cursor *c;
  unsigned char kb[12];
  int rc = mdb_cursor_open(t, s->dbi[DB_APP_DEVS], &c);
  if (rc) return merr(rc);
  hd_be32(kb, app_num);
  hd_be64(kb + 4, 0);
  MDB_val k = MV(kb, 12), v;
  *count = 0;
  for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
       rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
    if (k.mv_size != 12 || hd_rd32(k.mv_data) != app_num) break;
    (*count)++;
  }
  mdb_cursor_close(c);
  return rc && rc != MDB_NOTFOUND ? merr(rc) : 0;
}

/* One source of a device's messages: an app log (from the device's floor) or its own direct
 * log. pending_merge() walks all sources in id order like a k-way merge. */
typedef struct src {
  MDB_cursor *c;
  uint32_t app_num; /* 0: the direct log */
  int valid;
  hd_store_msg m;
} src;

static int src_settle(hd_store *s, MDB_txn *t, src *x, uint64_t dev_num, int64_t now_ms, int rc,
                      MDB_val *k, MDB_val *v) {
  for (; rc == 0; rc = mdb_cursor_get(x->c, k, v, MDB_NEXT)) {
    uint64_t seq;
    if (x->app_num) {
      if (k->mv_size != 12 || hd_rd32(k->mv_data) != x->app_num) break;
      seq = hd_rd64((const unsigned char *)k->mv_data + 4);
    } else {
      if (k->mv_size != 16 || hd_rd64(k->mv_data) != dev_num) break;
      seq = hd_rd64((const unsigned char *)k->mv_data + 8);
    }
    if (msg_decode(seq, v, &x->m)) continue;
    if (x->m.expires_ms <= now_ms) continue;
    if (x->app_num) {
      unsigned char ab[20];
      MDB_val akey = MV(ab, 20), av;
      ack_key(ab, dev_num, x->app_num, seq);
      int arc = mdb_get(t, s->dbi[DB_ACKS], &akey, &av);
      if (arc == 0) continue;
      if (arc != MDB_NOTFOUND) return merr(arc);
    }
    x->valid = 1;
    return 0;
  }
  x->valid = 0;
  return rc && rc != MDB_NOTFOUND ? merr(rc) : 0;
}

int hd__store_r_pending(hd_store *s, MDB_txn *t, uint64_t dev_num, uint64_t after, size_t max,
                        int64_t now_ms, hd_store_msg_cb cb, void *ud) {
  hd_store_reg regs[HD_STORE_MAX_REGS];
  src srcs[HD_STORE_MAX_REGS + 1];
  size_t nregs, ns = 0;
  int rc = regs_list(s, t, dev_num, regs, HD_STORE_MAX_REGS, &nregs);
  if (rc) return rc;
  for (size_t i = 0; i <= nregs; i++) {
    src *x = &srcs[ns];
    unsigned char kb[16];
    MDB_val k, v;
    memset(x, 0, sizeof *x);
    if (i < nregs) {
      x->app_num = regs[i].app_num;
      uint64_t from = (after > regs[i].floor ? after : regs[i].floor) + 1;
      hd_be32(kb, x->app_num);
      hd_be64(kb + 4, from);
      k = MV(kb, 12);
      rc = mdb_cursor_open(t, s->dbi[DB_LOG], &x->c);
    } else {
      dseq_key(kb, dev_num, after + 1);
      k = MV(kb, 16);
      rc = mdb_cursor_open(t, s->dbi[DB_DIRECT], &x->c);
    }
    if (rc) {
      rc = merr(rc);
      goto out;
    }
    ns++;
    rc = src_settle(s, t, x, dev_num, now_ms, mdb_cursor_get(x->c, &k, &v, MDB_SET_RANGE), &k, &v);
    if (rc) goto out;
  }
  for (size_t sent = 0; sent < max; sent++) {
    src *best = NULL;
    for (size_t i = 0; i < ns; i++)
      if (srcs[i].valid && (!best || srcs[i].m.seq < best->m.seq)) best = &srcs[i];
    if (!best) break;
    if ((rc = cb(ud, &best->m))) goto out;
    MDB_val k, v;
    rc = src_settle(s, t, best, dev_num, now_ms, mdb_cursor_get(best->c, &k, &v, MDB_NEXT), &k,
                    &v);
    if (rc) goto out;
  }
  rc = 0;
out:
  for (size_t i = 0; i < ns; i++) mdb_cursor_close(srcs[i].c);
  return rc;
}
