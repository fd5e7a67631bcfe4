/* release.c — the release catalog behind release.h: version order, rollout, the LMDB tables,
 * packages on disk, update-check, install reports and counters. Release notices (the fan-out)
 * are release_fanout.c; what both files share is release_int.h. */
#include "release.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "broker.h"
#include "bytes.h"
#include "clock.h"
#include "events.h"
#include "herald/error.h"
#include "http.h"
#include "log.h"
#include "push.h"
#include "release_int.h"

#define REASONS_MAX 64        /* distinct failure reasons counted per release; then "other" */
#define REC_FORMAT 1
#define REC_HDR 66            /* see rec_encode */

/* ------------------------------------------------------------------------------------------ */
/* pure: version order, rollout */

int hd__release_valid_version(const char *v) {
  size_t n = 0;
  if (!v) return 0;
  for (const char *p = v; *p; p++, n++) {
    char c = *p;
    int alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    if (!alnum && !(n > 0 && (c == '.' || c == '-' || c == '+' || c == '_'))) return 0;
  }
  return n >= 1 && n <= HD_REL_MAX_VERSION;
}

static int is_sep(char c) { return c == '.' || c == '-' || c == '+'; }

static int all_digits(const char *s, size_t n) {
  if (!n) return 0;
  for (size_t i = 0; i < n; i++)
    if (s[i] < '0' || s[i] > '9') return 0;
  return 1;
}

/* Numeric strings of any length: without leading zeros, longer is larger. */
static int numcmp(const char *a, size_t an, const char *b, size_t bn) {
  while (an > 1 && *a == '0') a++, an--;
  while (bn > 1 && *b == '0') b++, bn--;
  if (an != bn) return an < bn ? -1 : 1;
  int c = memcmp(a, b, an);
  return c < 0 ? -1 : c > 0;
}

int hd__release_vercmp(const char *a, int has_a, int64_t code_a, const char *b, int has_b,
                       int64_t code_b) {
  if (has_a && has_b) return code_a < code_b ? -1 : code_a > code_b;
  const char *p = a, *q = b;
  for (;;) {
    int pend = *p == 0, qend = *q == 0;
    if (pend && qend) return 0;
    size_t pn = 0, qn = 0;
    while (p[pn] && !is_sep(p[pn])) pn++;
    while (q[qn] && !is_sep(q[qn])) qn++;
    int pd = !pend && all_digits(p, pn), qd = !qend && all_digits(q, qn);
    int c;
    if (pend) c = qd ? numcmp("0", 1, q, qn) : 1;        /* "1.0" == "1.0.0"; "1.0" > "1.0-rc1" */
    else if (qend) c = pd ? numcmp(p, pn, "0", 1) : -1;
    else if (pd && qd) c = numcmp(p, pn, q, qn);
    else if (pd != qd) c = pd ? 1 : -1;                  /* numeric above non-numeric */
    else {
      size_t m = pn < qn ? pn : qn;
      c = memcmp(p, q, m);
      c = c ? (c < 0 ? -1 : 1) : (pn < qn ? -1 : pn > qn);
    }
    if (c) return c;
    if (!pend) p += pn + (p[pn] ? 1 : 0);
    if (!qend) q += qn + (q[qn] ? 1 : 0);
  }
}

int hd__release_parse_rollout(const char *s, uint32_t *bp) {
  if (!s || !*s) return HD_EINVAL;
  uint64_t whole = 0, frac = 0;
  size_t nd = 0, nf = 0;
  const char *p = s;
  for (; *p >= '0' && *p <= '9'; p++, nd++) {
    whole = whole * 10 + (uint64_t)(*p - '0');
    if (whole > 100) return HD_EINVAL;
  }
  if (*p == '.') {
    for (p++; *p >= '0' && *p <= '9'; p++, nf++) {
      if (nf >= 2) return HD_EINVAL;
      frac = frac * 10 + (uint64_t)(*p - '0');
    }
    if (nf == 0) return HD_EINVAL;
    if (nf == 1) frac *= 10;
  }
  if (*p == '%') p++;
  if (*p || nd == 0) return HD_EINVAL;
  uint64_t v = whole * 100 + frac;
  if (v > 10000) return HD_EINVAL;
  *bp = (uint32_t)v;
  return 0;
}

int hd__release_in_rollout(const char *tenant, const char *app, const char *version,
                           const char *device, uint32_t rollout_bp) {
  if (rollout_bp >= 10000) return 1;
  if (rollout_bp == 0) return 0;
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned mdlen = 0;
  EVP_MD_CTX *c = EVP_MD_CTX_new();
  int ok = c && EVP_DigestInit_ex(c, EVP_sha256(), NULL) == 1 &&
           EVP_DigestUpdate(c, tenant, strlen(tenant)) == 1 &&
           EVP_DigestUpdate(c, "/", 1) == 1 && EVP_DigestUpdate(c, app, strlen(app)) == 1 &&
           EVP_DigestUpdate(c, "/", 1) == 1 &&
           EVP_DigestUpdate(c, version, strlen(version)) == 1 &&
           EVP_DigestUpdate(c, "/", 1) == 1 &&
           EVP_DigestUpdate(c, device, strlen(device)) == 1 &&
           EVP_DigestFinal_ex(c, md, &mdlen) == 1;
  EVP_MD_CTX_free(c);
  if (!ok) return 0; /* cannot hash: nobody is inside, which sends nothing wrong */
  return hd_rd32(md) % 10000 < rollout_bp;
}

/* ------------------------------------------------------------------------------------------ */
/* keys and records */


void hd__rel_hex(const unsigned char *sha, char *out) {
  static const char hx[] = "0123456789abcdef";
  for (int i = 0; i < 32; i++) {
    out[2 * i] = hx[sha[i] >> 4];
    out[2 * i + 1] = hx[sha[i] & 15];
  }
  out[64] = 0;
}

/* rel, fanout: app(4) version */
size_t hd__rel_key(unsigned char *k, uint32_t app, const char *version) {
  size_t n = strlen(version);
  hd_be32(k, app);
  memcpy(k + 4, version, n);
  return 4 + n;
}

/* notified: app(4) vlen(1) version dev(8); counts: app(4) vlen(1) version kind(1) [reason] */
size_t hd__rel_vprefix(unsigned char *k, uint32_t app, const char *version) {
  size_t n = strlen(version);
  hd_be32(k, app);
  k[4] = (unsigned char)n;
  memcpy(k + 5, version, n);
  return 5 + n;
}

/* rel record: format(1) state(1) flags(1) 0(1) rollout(4) code(8) created(8) size(8)
 * sha256(32) notes_len(2) notes */
static size_t rec_encode(unsigned char *b, const hd_release *r) {
  size_t nl = strlen(r->notes);
  b[0] = REC_FORMAT;
  b[1] = (unsigned char)r->state;
  b[2] = r->has_code ? 1 : 0;
  b[3] = 0;
  hd_be32(b + 4, r->rollout_bp);
  hd_be64(b + 8, (uint64_t)r->code);
  hd_be64(b + 16, (uint64_t)r->created_ms);
  hd_be64(b + 24, r->size);
  memcpy(b + 32, r->sha256, 32);
  b[64] = (unsigned char)(nl >> 8);
  b[65] = (unsigned char)nl;
  memcpy(b + REC_HDR, r->notes, nl);
  return REC_HDR + nl;
}

static int rec_decode(const MDB_val *v, hd_release *r) {
  const unsigned char *b = v->mv_data;
  if (v->mv_size < REC_HDR || b[0] != REC_FORMAT) return HD_EIO;
  size_t nl = (size_t)b[64] << 8 | b[65];
  if (REC_HDR + nl != v->mv_size || nl > HD_REL_MAX_NOTES) return HD_EIO;
  r->state = b[1];
  r->has_code = b[2] & 1;
  r->rollout_bp = hd_rd32(b + 4);
  r->code = (int64_t)hd_rd64(b + 8);
  r->created_ms = (int64_t)hd_rd64(b + 16);
  r->size = hd_rd64(b + 24);
  memcpy(r->sha256, b + 32, 32);
  memcpy(r->notes, b + REC_HDR, nl);
  r->notes[nl] = 0;
  return 0;
}

/* Read a release by app number (any transaction). */
int hd__rel_read(hd_releases *rs, MDB_txn *t, uint32_t app_num, const char *version,
                    hd_release *out) {
  unsigned char kb[4 + HD_REL_MAX_VERSION];
  if (strlen(version) > HD_REL_MAX_VERSION) return HD_ENOTFOUND;
  MDB_val k = MV(kb, hd__rel_key(kb, app_num, version)), v;
  int rc = mdb_get(t, rs->rel, &k, &v);
  if (rc) return hd_err_from_mdb(rc);
  memset(out, 0, sizeof *out);
  if ((rc = rec_decode(&v, out))) return rc;
  out->app_num = app_num;
  snprintf(out->version, sizeof out->version, "%s", version);
  return 0;
}

static int app_flags(hd_releases *rs, MDB_txn *t, uint32_t tenant, uint32_t app_num) {
  unsigned char kb[8];
  hd_be32(kb, tenant);
  hd_be32(kb + 4, app_num);
  MDB_val k = MV(kb, 8), v;
  if (mdb_get(t, rs->apps, &k, &v) || v.mv_size < 1) return 0;
  return ((const unsigned char *)v.mv_data)[0];
}

/* A counter's increment, inside a write transaction. */
int hd__rel_count_add(hd_releases *rs, MDB_txn *t, uint32_t app, const char *version, int kind,
                     const char *reason, uint64_t delta) {
  unsigned char kb[5 + HD_REL_MAX_VERSION + 1 + HD_REL_MAX_REASON];
  size_t n = hd__rel_vprefix(kb, app, version);
  kb[n++] = (unsigned char)kind;
  if (reason) {
    size_t rl = strlen(reason);
    memcpy(kb + n, reason, rl);
    n += rl;
  }
  MDB_val k = MV(kb, n), v;
  uint64_t cur = 0;
  int rc = mdb_get(t, rs->counts, &k, &v);
  if (rc == 0 && v.mv_size == 8) cur = hd_rd64(v.mv_data);
  else if (rc && rc != MDB_NOTFOUND) return hd_err_from_mdb(rc);
  unsigned char vb[8];
  hd_be64(vb, cur + delta);
  v = MV(vb, 8);
  return hd_err_from_mdb(mdb_put(t, rs->counts, &k, &v, 0));
}

/* Distinct reasons already counted for the release (stops at REASONS_MAX). */
static size_t reasons_known(hd_releases *rs, MDB_txn *t, uint32_t app, const char *version) {
  unsigned char kb[5 + HD_REL_MAX_VERSION + 1];
  size_t n = hd__rel_vprefix(kb, app, version);
  kb[n++] = K_REASON;
  MDB_cursor *c;
  if (mdb_cursor_open(t, rs->counts, &c)) return REASONS_MAX;
  MDB_val k = MV(kb, n), v;
  size_t count = 0;
  for (int rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0 && count < REASONS_MAX;
       rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
    if (k.mv_size < n || memcmp(k.mv_data, kb, n) != 0) break;
    count++;
  }
  mdb_cursor_close(c);
  return count;
}

hd_tenant *hd__rel_tenant_by_num(hd_releases *rs, uint32_t num) {
  for (size_t i = 0; i < rs->b->tenants.n; i++)
    if (rs->b->tenants.v[i]->num == num) return rs->b->tenants.v[i];
  return NULL;
}

void hd__release_url(const hd_releases *rs, const char *app, const char *version, char *buf,
                     size_t buflen) {
  snprintf(buf, buflen, "%s/v1/apps/%s/releases/%s/package", rs->public_url, app, version);
}

static void pkg_path(const hd_releases *rs, const unsigned char *sha, char *buf, size_t len) {
  char hex[65];
  hd__rel_hex(sha, hex);
  snprintf(buf, len, "%s/%.2s/%s", rs->pkg_dir, hex, hex);
}

/* ------------------------------------------------------------------------------------------ */
/* reads (loop thread) */

int hd__release_get(hd_releases *rs, uint32_t tenant_num, const char *app, const char *version,
                    hd_release *out) {
  MDB_txn *t;
  uint32_t app_num;
  int rc = hd__store_rbegin(rs->store, &t);
  if (rc) return rc;
  rc = hd__store_r_app_num(rs->store, t, tenant_num, app, &app_num);
  if (rc == 0) rc = hd__rel_read(rs, t, app_num, version, out);
  if (rc == 0) {
    out->tenant_num = tenant_num;
    snprintf(out->app, sizeof out->app, "%s", app);
    out->required = app_flags(rs, t, tenant_num, app_num) & 1;
  }
  hd__store_rend(rs->store, t);
  return rc;
}

int hd__release_lookup(hd_releases *rs, uint32_t tenant_num, const char *app,
                       const char *version, hd_release_info *out) {
  hd_release r;
  int rc = hd__release_get(rs, tenant_num, app, version, &r);
  if (rc) return rc;
  memset(out, 0, sizeof *out);
  pkg_path(rs, r.sha256, out->path, sizeof out->path);
  out->size = r.size;
  hd__rel_hex(r.sha256, out->sha256);
  out->state = r.state;
  out->rollout_bp = r.rollout_bp;
  out->created_ms = r.created_ms;
  out->has_code = r.has_code;
  out->code = r.code;
  out->app_num = r.app_num;
  return 0;
}

/* Every release of app_num (in t), unsorted. */
static int rel_scan(hd_releases *rs, MDB_txn *t, uint32_t app_num, hd_release **out,
                    size_t *n) {
  MDB_cursor *c;
  unsigned char kb[4];
  hd_be32(kb, app_num);
  *out = NULL;
  *n = 0;
  size_t cap = 0;
  int oom = 0;
  int rc = mdb_cursor_open(t, rs->rel, &c);
  if (rc) return hd_err_from_mdb(rc);
  MDB_val k = MV(kb, 4), v;
  for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
       rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
    if (k.mv_size < 5 || hd_rd32(k.mv_data) != app_num) break;
    if (k.mv_size - 4 > HD_REL_MAX_VERSION) continue;
    if (*n == cap) {
      cap = cap ? cap * 2 : 8;
      hd_release *p = realloc(*out, cap * sizeof **out);
      if (!p) {
        oom = 1;
        break;
      }
      *out = p;
    }
    hd_release *r = &(*out)[*n];
    memset(r, 0, sizeof *r);
    if (rec_decode(&v, r)) continue;
    r->app_num = app_num;
    memcpy(r->version, (const char *)k.mv_data + 4, k.mv_size - 4);
    r->version[k.mv_size - 4] = 0;
    (*n)++;
  }
  mdb_cursor_close(c);
  if (oom) {
    free(*out);
    *out = NULL;
    *n = 0;
    return HD_ENOMEM;
  }
  return rc && rc != MDB_NOTFOUND ? hd_err_from_mdb(rc) : 0;
}

static int newest_first(const void *x, const void *y) {
  const hd_release *a = x, *b = y;
  int c = hd__release_vercmp(b->version, b->has_code, b->code, a->version, a->has_code, a->code);
  if (c) return c;
  return strcmp(b->version, a->version); /* equal forms ("1.0", "1.0.0"): a stable order */
}

int hd__release_list(hd_releases *rs, uint32_t tenant_num, const char *app, hd_release **out,
                     size_t *n) {
  MDB_txn *t;
  uint32_t app_num;
  *out = NULL;
  *n = 0;
  int rc = hd__store_rbegin(rs->store, &t);
  if (rc) return rc;
  rc = hd__store_r_app_num(rs->store, t, tenant_num, app, &app_num);
  if (rc == HD_ENOTFOUND) {
    hd__store_rend(rs->store, t);
    return 0;
  }
  if (rc == 0) rc = rel_scan(rs, t, app_num, out, n);
  int req = rc == 0 ? app_flags(rs, t, tenant_num, app_num) & 1 : 0;
  hd__store_rend(rs->store, t);
  if (rc) return rc;
  for (size_t i = 0; i < *n; i++) {
    (*out)[i].tenant_num = tenant_num;
    (*out)[i].required = req;
    snprintf((*out)[i].app, sizeof (*out)[i].app, "%s", app);
  }
  if (*n > 1) qsort(*out, *n, sizeof **out, newest_first);
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* add */

typedef struct addctx {
  hd_op op;
  uv_work_t work;
  hd_releases *rs;
  hd_tenant *tenant;
  hd_release_cb cb;
  void *ud;
  hd_release rel;            /* what to commit; the result after done */
  char tmp[4096];            /* the spooled upload */
  char final[4096];
  int work_err;
  int created;               /* result: 1 new, 0 same bytes again */
  int flags;                 /* result: the app's flags after the commit */
} addctx;

/* Pool thread: move the upload to its content address, durably. */
static void add_place(uv_work_t *w) {
  addctx *c = w->data;
  char dir[4096];
  struct stat st;
  snprintf(dir, sizeof dir, "%s", c->final);
  char *slash = strrchr(dir, '/');
  *slash = 0;
  int made = 0;
  if (mkdir(dir, 0700) == 0) made = 1;
  else if (errno != EEXIST) goto fail;
  if (stat(c->final, &st) == 0 && (uint64_t)st.st_size == c->rel.size) {
    unlink(c->tmp); /* the same bytes are there already: content addressed */
    return;
  }
  if (rename(c->tmp, c->final) != 0) goto fail;
  /* The rename is durable once its directory is; a new directory's own entry too. */
  for (int i = 0; i < 1 + made; i++) {
    int fd = open(i ? c->rs->pkg_dir : dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) goto fail;
    int rc = fsync(fd);
    close(fd);
    if (rc != 0) goto fail;
  }
  return;
fail:
  c->work_err = errno == ENOSPC || errno == EDQUOT ? HD_EFULL : HD_EIO;
  unlink(c->tmp);
}

static int add_apply(hd_store *s, MDB_txn *t, hd_op *op, int64_t now_ms) {
  addctx *c = op->u.fn.arg;
  hd_releases *rs = c->rs;
  uint32_t app_num;
  int rc = hd__store_w_app(s, t, c->tenant->num, c->rel.app, c->tenant->any_app, &app_num);
  if (rc) {
    if (rc == HD_ENOTFOUND) op->reason = "no such app";
    return rc;
  }
  c->rel.app_num = app_num;
  hd_release old;
  rc = hd__rel_read(rs, t, app_num, c->rel.version, &old);
  if (rc == 0) {
    if (memcmp(old.sha256, c->rel.sha256, 32) != 0) {
      op->reason = "this version exists with another package";
      return HD_EEXIST;
    }
    snprintf(old.app, sizeof old.app, "%s", c->rel.app);
    old.tenant_num = c->rel.tenant_num;
    c->rel = old;
    c->created = 0;
    c->flags = app_flags(rs, t, c->tenant->num, app_num);
    return 0;
  }
  if (rc != HD_ENOTFOUND) return rc;
  /* Version codes order releases only when every release of the app has one: mixing coded and
   * uncoded releases makes the order intransitive ("2" code 1 < "1" code 2 < "1.5" < "2"), so
   * which release update-check offers would depend on scan order. One rule per app. */
  {
    MDB_cursor *cur;
    unsigned char pk[4];
    hd_be32(pk, app_num);
    if ((rc = mdb_cursor_open(t, rs->rel, &cur))) return hd_err_from_mdb(rc);
    MDB_val ck = MV(pk, 4), cv;
    int mixed = 0;
    rc = mdb_cursor_get(cur, &ck, &cv, MDB_SET_RANGE);
    if (rc == 0 && ck.mv_size >= 4 && hd_rd32(ck.mv_data) == app_num) {
      hd_release first;
      if (rec_decode(&cv, &first) == 0 && !first.has_code != !c->rel.has_code) mixed = 1;
    }
    mdb_cursor_close(cur);
    if (mixed) {
      op->reason = c->rel.has_code
                       ? "this app's releases have no version code: leave code out"
                       : "this app's releases have version codes: give code too";
      return HD_EINVAL;
    }
  }
  c->rel.created_ms = now_ms;
  c->created = 1;
  unsigned char kb[4 + HD_REL_MAX_VERSION], vb[REC_HDR + HD_REL_MAX_NOTES], ab[8], fb[12];
  MDB_val k = MV(kb, hd__rel_key(kb, app_num, c->rel.version));
  MDB_val v = MV(vb, rec_encode(vb, &c->rel));
  if ((rc = mdb_put(t, rs->rel, &k, &v, 0))) return hd_err_from_mdb(rc);
  int flags = app_flags(rs, t, c->tenant->num, app_num) | (c->rel.required ? 1 : 0);
  unsigned char f = (unsigned char)flags;
  hd_be32(ab, c->tenant->num);
  hd_be32(ab + 4, app_num);
  MDB_val ak = MV(ab, 8), av = MV(&f, 1);
  if ((rc = mdb_put(t, rs->apps, &ak, &av, 0))) return hd_err_from_mdb(rc);
  c->flags = flags;
  if (c->rel.state == HD_REL_ACTIVE && c->rel.rollout_bp > 0) {
    hd_be64(fb, 0);
    hd_be32(fb + 8, 1);
    MDB_val fv = MV(fb, 12);
    if ((rc = mdb_put(t, rs->fanout, &k, &fv, 0))) return hd_err_from_mdb(rc);
  }
  return 0;
}

static double rollout_pct(uint32_t bp) { return bp / 100.0; }

static const char *state_name(int s) {
  return s == HD_REL_ACTIVE ? "active" : s == HD_REL_PAUSED ? "paused" : "withdrawn";
}

static void on_added(hd_op *op) {
  addctx *c = (addctx *)op;
  hd_releases *rs = c->rs;
  if (op->status) {
    c->cb(c->ud, op->status, NULL, 0, op->reason);
    free(c);
    return;
  }
  c->rel.required = c->flags & 1;
  if (c->created) {
    hd__log(HD_LOG_INFO, "release_added", "tenant=%s app=%s version=%s size=%llu rollout=%.2f",
            c->tenant->name, c->rel.app, c->rel.version, (unsigned long long)c->rel.size,
            rollout_pct(c->rel.rollout_bp));
    hd__events_release(rs->b->events, c->tenant->name, c->rel.app, c->rel.version,
                       rollout_pct(c->rel.rollout_bp), state_name(c->rel.state));
  }
  c->cb(c->ud, 0, &c->rel, c->created, NULL);
  if (c->created && c->rel.state == HD_REL_ACTIVE && c->rel.rollout_bp > 0)
    hd__rel_fanout_start(rs, c->tenant, c->rel.app_num, c->rel.app, c->rel.version, 0, 1);
  free(c);
}

static void add_placed(uv_work_t *w, int status) {
  addctx *c = w->data;
  (void)status;
  if (c->work_err) {
    hd__log(HD_LOG_ERROR, "release_package_not_stored", "tenant=%s app=%s version=%s error=%s",
            c->tenant->name, c->rel.app, c->rel.version, hd_err_code(c->work_err));
    c->cb(c->ud, c->work_err, NULL, 0, "cannot store the package");
    free(c);
    return;
  }
  int rc = hd__writer_submit_fn(c->rs->b->writer, &c->op, add_apply, c, on_added);
  if (rc) {
    c->cb(c->ud, rc, NULL, 0, "broker is shutting down");
    free(c);
  }
}

void hd__release_add(hd_releases *rs, const hd_release_new *req, hd_release_cb cb, void *ud) {
  addctx *c = calloc(1, sizeof *c);
  if (!c) { /* the upload stays in tmp/, which the next start empties */
    cb(ud, HD_ENOMEM, NULL, 0, NULL);
    return;
  }
  c->rs = rs;
  c->tenant = req->tenant;
  c->cb = cb;
  c->ud = ud;
  hd_release *r = &c->rel;
  r->tenant_num = req->tenant->num;
  snprintf(r->app, sizeof r->app, "%s", req->app);
  snprintf(r->version, sizeof r->version, "%s", req->version);
  snprintf(r->notes, sizeof r->notes, "%s", req->notes ? req->notes : "");
  r->has_code = req->has_code;
  r->code = req->code;
  r->rollout_bp = req->rollout_bp > 10000 ? 10000 : req->rollout_bp;
  r->state = HD_REL_ACTIVE;
  r->required = req->required;
  r->size = req->size;
  memcpy(r->sha256, req->sha256, 32);
  snprintf(c->tmp, sizeof c->tmp, "%s", req->file);
  pkg_path(rs, r->sha256, c->final, sizeof c->final);
  c->work.data = c;
  int rc = uv_queue_work(rs->b->loop, &c->work, add_place, add_placed);
  if (rc) {
    cb(ud, hd_err_from_uv(rc), NULL, 0, NULL);
    free(c);
  }
}

/* ------------------------------------------------------------------------------------------ */
/* patch */

typedef struct patchctx {
  hd_op op;
  hd_releases *rs;
  hd_tenant *tenant;
  hd_release_cb cb;
  void *ud;
  hd_release_patch p;
  char app[HD_STORE_MAX_ID + 1];
  char version[HD_REL_MAX_VERSION + 1];
  hd_release rel;            /* result */
  int notify;                /* result: the fan-out row was (re)started */
  uint32_t gen;              /* its generation */
  int changed;
} patchctx;

static int patch_apply(hd_store *s, MDB_txn *t, hd_op *op, int64_t now_ms) {
  patchctx *c = op->u.fn.arg;
  hd_releases *rs = c->rs;
  uint32_t app_num;
  (void)now_ms;
  int rc = hd__store_w_app(s, t, c->tenant->num, c->app, 0, &app_num);
  if (rc == 0) rc = hd__rel_read(rs, t, app_num, c->version, &c->rel);
  if (rc) {
    if (rc == HD_ENOTFOUND) op->reason = "no such release";
    return rc;
  }
  snprintf(c->rel.app, sizeof c->rel.app, "%s", c->app);
  hd_release old = c->rel;
  if (c->p.set_rollout) c->rel.rollout_bp = c->p.rollout_bp;
  if (c->p.state >= 0) c->rel.state = c->p.state;
  int flags = app_flags(rs, t, c->tenant->num, app_num);
  int nflags = c->p.required < 0 ? flags : (flags & ~1) | (c->p.required ? 1 : 0);
  unsigned char kb[4 + HD_REL_MAX_VERSION], vb[REC_HDR + HD_REL_MAX_NOTES], ab[8], fb[12];
  MDB_val k = MV(kb, hd__rel_key(kb, app_num, c->rel.version));
  MDB_val v = MV(vb, rec_encode(vb, &c->rel));
  if ((rc = mdb_put(t, rs->rel, &k, &v, 0))) return hd_err_from_mdb(rc);
  if (nflags != flags) {
    unsigned char f = (unsigned char)nflags;
    hd_be32(ab, c->tenant->num);
    hd_be32(ab + 4, app_num);
    MDB_val ak = MV(ab, 8), av = MV(&f, 1);
    if ((rc = mdb_put(t, rs->apps, &ak, &av, 0))) return hd_err_from_mdb(rc);
  }
  c->rel.required = nflags & 1;
  c->changed = old.rollout_bp != c->rel.rollout_bp || old.state != c->rel.state;
  int live = c->rel.state == HD_REL_ACTIVE && c->rel.rollout_bp > 0;
  int more = live && (old.state != HD_REL_ACTIVE || c->rel.rollout_bp > old.rollout_bp);
  MDB_val fv;
  rc = mdb_get(t, rs->fanout, &k, &fv);
  if (rc && rc != MDB_NOTFOUND) return hd_err_from_mdb(rc);
  uint32_t gen = rc == 0 && fv.mv_size == 12 ? hd_rd32((const unsigned char *)fv.mv_data + 8) : 0;
  if (!live && rc == 0) {
    if ((rc = mdb_del(t, rs->fanout, &k, NULL))) return hd_err_from_mdb(rc);
  } else if (more) {
    /* Walk again from the first device: those newly inside can be anywhere. */
    c->gen = gen + 1;
    hd_be64(fb, 0);
    hd_be32(fb + 8, c->gen);
    fv = MV(fb, 12);
    if ((rc = mdb_put(t, rs->fanout, &k, &fv, 0))) return hd_err_from_mdb(rc);
    c->notify = 1;
  }
  c->rel.app_num = app_num;
  return 0;
}

static void on_patched(hd_op *op) {
  patchctx *c = (patchctx *)op;
  hd_releases *rs = c->rs;
  if (op->status) {
    c->cb(c->ud, op->status, NULL, 0, op->reason);
    free(c);
    return;
  }
  c->rel.tenant_num = c->tenant->num;
  if (c->changed) {
    hd__log(HD_LOG_INFO, "release_changed", "tenant=%s app=%s version=%s rollout=%.2f state=%s",
            c->tenant->name, c->rel.app, c->rel.version, rollout_pct(c->rel.rollout_bp),
            state_name(c->rel.state));
    hd__events_release(rs->b->events, c->tenant->name, c->rel.app, c->rel.version,
                       rollout_pct(c->rel.rollout_bp), state_name(c->rel.state));
  }
  c->cb(c->ud, 0, &c->rel, 0, NULL);
  if (c->notify)
    hd__rel_fanout_start(rs, c->tenant, c->rel.app_num, c->rel.app, c->rel.version, 0, c->gen);
  free(c);
}

void hd__release_patch(hd_releases *rs, hd_tenant *t, const char *app, const char *version,
                       const hd_release_patch *p, hd_release_cb cb, void *ud) {
  patchctx *c = calloc(1, sizeof *c);
  if (!c) {
    cb(ud, HD_ENOMEM, NULL, 0, NULL);
    return;
  }
  c->rs = rs;
  c->tenant = t;
  c->cb = cb;
  c->ud = ud;
  c->p = *p;
  snprintf(c->app, sizeof c->app, "%s", app);
  snprintf(c->version, sizeof c->version, "%s", version);
  int rc = hd__writer_submit_fn(rs->b->writer, &c->op, patch_apply, c, on_patched);
  if (rc) {
    free(c);
    cb(ud, rc, NULL, 0, "broker is shutting down");
  }
}

/* ------------------------------------------------------------------------------------------ */
/* update-check */

typedef struct invent {
  char app[HD_STORE_MAX_ID + 1];
  char version[HD_REL_MAX_VERSION + 1];
  uint32_t app_num;          /* result: 0 when the tenant has no such app */
} invent;

typedef struct checkctx {
  hd_op op;
  hd_releases *rs;
  hd_tenant *tenant;
  hd_update_cb cb;
  void *ud;
  uint64_t dev_num;
  char device[HD_STORE_MAX_ID + 1];
  char msisdn[24];
  int has_msisdn;
  size_t n;
  invent inv[];
} checkctx;

static int check_apply(hd_store *s, MDB_txn *t, hd_op *op, int64_t now_ms) {
  checkctx *c = op->u.fn.arg;
  hd_releases *rs = c->rs;
  (void)now_ms;
  int rc;
  for (size_t i = 0; i < c->n; i++) {
    c->inv[i].app_num = 0;
    rc = hd__store_w_app(s, t, c->tenant->num, c->inv[i].app, 0, &c->inv[i].app_num);
    if (rc && rc != HD_ENOTFOUND) return rc;
  }
  /* Replace the device's inventory: drop apps no longer listed, then write the list. */
  MDB_cursor *cur;
  unsigned char kb[12];
  hd_be64(kb, c->dev_num);
  hd_be32(kb + 8, 0);
  if ((rc = mdb_cursor_open(t, rs->inv, &cur))) return hd_err_from_mdb(rc);
  MDB_val k = MV(kb, 12), v;
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
       rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    if (k.mv_size != 12 || hd_rd64(k.mv_data) != c->dev_num) break;
    uint32_t app = hd_rd32((const unsigned char *)k.mv_data + 8);
    int listed = 0;
    for (size_t i = 0; i < c->n && !listed; i++) listed = c->inv[i].app_num == app;
    if (listed) continue;
    unsigned char ib[12];
    hd_be32(ib, app);
    hd_be64(ib + 4, c->dev_num);
    MDB_val ik = MV(ib, 12);
    if ((rc = mdb_cursor_del(cur, 0))) break;
    rc = mdb_del(t, rs->inv_devs, &ik, NULL);
    if (rc && rc != MDB_NOTFOUND) break;
  }
  mdb_cursor_close(cur);
  if (rc && rc != MDB_NOTFOUND) return hd_err_from_mdb(rc);
  for (size_t i = 0; i < c->n; i++) {
    if (!c->inv[i].app_num) continue;
    unsigned char ib[12];
    hd_be64(kb, c->dev_num);
    hd_be32(kb + 8, c->inv[i].app_num);
    hd_be32(ib, c->inv[i].app_num);
    hd_be64(ib + 4, c->dev_num);
    k = MV(kb, 12);
    v = MV(c->inv[i].version, strlen(c->inv[i].version));
    MDB_val ik = MV(ib, 12), iv = MV("", 0);
    if ((rc = mdb_put(t, rs->inv, &k, &v, 0)) || (rc = mdb_put(t, rs->inv_devs, &ik, &iv, 0)))
      return hd_err_from_mdb(rc);
  }
  if (c->has_msisdn && rs->b->push)
    if ((rc = hd__push_w_msisdn(rs->b->push, t, c->dev_num, c->msisdn))) return rc;
  return 0;
}

/* The newest release of app_num the device may install now, or 0. */
static int best_offer(hd_releases *rs, MDB_txn *t, hd_tenant *tenant, const char *device,
                      uint32_t app_num, const char *app, hd_release *out) {
  hd_release *all;
  size_t n;
  if (rel_scan(rs, t, app_num, &all, &n)) return 0;
  int found = 0;
  for (size_t i = 0; i < n; i++) {
    hd_release *r = &all[i];
    if (r->state != HD_REL_ACTIVE ||
        !hd__release_in_rollout(tenant->name, app, r->version, device, r->rollout_bp))
      continue;
    if (!found || newest_first(r, out) < 0) *out = *r;
    found = 1;
  }
  free(all);
  if (found) {
    out->tenant_num = tenant->num;
    out->required = app_flags(rs, t, tenant->num, app_num) & 1;
    snprintf(out->app, sizeof out->app, "%s", app);
  }
  return found;
}

static void on_checked(hd_op *op) {
  checkctx *c = (checkctx *)op;
  hd_releases *rs = c->rs;
  MDB_txn *t;
  if (op->status) {
    c->cb(c->ud, op->status, NULL, 0, op->reason);
    free(c);
    return;
  }
  int rc = hd__store_rbegin(rs->store, &t);
  if (rc) {
    c->cb(c->ud, rc, NULL, 0, NULL);
    free(c);
    return;
  }
  size_t cap = c->n + 8, n = 0;
  hd_release_offer *offers = malloc(cap * sizeof *offers);
  for (size_t i = 0; offers && i < c->n; i++) {
    invent *e = &c->inv[i];
    hd_release_offer *o = &offers[n];
    if (!e->app_num || !best_offer(rs, t, c->tenant, c->device, e->app_num, e->app, &o->rel))
      continue;
    /* The installed version's code, when the catalog knows that version. */
    hd_release inst;
    int has = hd__rel_read(rs, t, e->app_num, e->version, &inst) == 0 && inst.has_code;
    if (hd__release_vercmp(o->rel.version, o->rel.has_code, o->rel.code, e->version, has,
                           has ? inst.code : 0) <= 0)
      continue;
    o->install = 0;
    snprintf(o->from, sizeof o->from, "%s", e->version);
    n++;
  }
  /* Required apps the device does not have. */
  MDB_cursor *cur;
  unsigned char kb[8];
  hd_be32(kb, c->tenant->num);
  hd_be32(kb + 4, 0);
  if (offers && mdb_cursor_open(t, rs->apps, &cur) == 0) {
    MDB_val k = MV(kb, 8), v;
    for (int r = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); r == 0;
         r = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
      if (k.mv_size != 8 || hd_rd32(k.mv_data) != c->tenant->num) break;
      if (v.mv_size < 1 || !(((const unsigned char *)v.mv_data)[0] & 1)) continue;
      uint32_t app_num = hd_rd32((const unsigned char *)k.mv_data + 4), tn;
      int have = 0;
      for (size_t i = 0; i < c->n && !have; i++) have = c->inv[i].app_num == app_num;
      char app[HD_STORE_MAX_ID + 1];
      if (have || hd__store_r_app_name(rs->store, t, app_num, &tn, app, sizeof app)) continue;
      if (n == cap) {
        hd_release_offer *p = realloc(offers, (cap *= 2) * sizeof *offers);
        if (!p) break;
        offers = p;
      }
      if (!best_offer(rs, t, c->tenant, c->device, app_num, app, &offers[n].rel)) continue;
      offers[n].install = 1;
      offers[n].from[0] = 0;
      n++;
    }
    mdb_cursor_close(cur);
  }
  hd__store_rend(rs->store, t);
  if (!offers) c->cb(c->ud, HD_ENOMEM, NULL, 0, NULL);
  else c->cb(c->ud, 0, offers, n, NULL);
  free(offers);
  free(c);
}

void hd__release_update_check(hd_releases *rs, hd_tenant *t, const char *device,
                              uint64_t dev_num, const hd_release_inv *inv, size_t n,
                              const char *msisdn, hd_update_cb cb, void *ud) {
  if (n > HD_REL_MAX_INV) {
    cb(ud, HD_ETOOBIG, NULL, 0, "inventory too long");
    return;
  }
  checkctx *c = calloc(1, sizeof *c + n * sizeof(invent));
  if (!c) {
    cb(ud, HD_ENOMEM, NULL, 0, NULL);
    return;
  }
  c->rs = rs;
  c->tenant = t;
  c->cb = cb;
  c->ud = ud;
  c->dev_num = dev_num;
  snprintf(c->device, sizeof c->device, "%s", device);
  if (msisdn) {
    c->has_msisdn = 1;
    snprintf(c->msisdn, sizeof c->msisdn, "%s", msisdn);
  }
  c->n = n;
  for (size_t i = 0; i < n; i++) {
    snprintf(c->inv[i].app, sizeof c->inv[i].app, "%s", inv[i].app);
    snprintf(c->inv[i].version, sizeof c->inv[i].version, "%s", inv[i].version);
  }
  int rc = hd__writer_submit_fn(rs->b->writer, &c->op, check_apply, c, on_checked);
  if (rc) {
    free(c);
    cb(ud, rc, NULL, 0, "broker is shutting down");
  }
}

/* ------------------------------------------------------------------------------------------ */
/* install reports */

typedef struct reportctx {
  hd_op op;
  hd_releases *rs;
  hd_tenant *tenant;
  void (*cb)(void *ud, int status, const char *reason);
  void *ud;
  uint64_t dev_num;
  char device[HD_STORE_MAX_ID + 1];
  char app[HD_STORE_MAX_ID + 1];
  char version[HD_REL_MAX_VERSION + 1];
  char reason[HD_REL_MAX_REASON + 1];
  char action[16];
  int success;
  int64_t ts;
} reportctx;

static int report_apply(hd_store *s, MDB_txn *t, hd_op *op, int64_t now_ms) {
  reportctx *c = op->u.fn.arg;
  hd_releases *rs = c->rs;
  uint32_t app_num;
  hd_release r;
  int rc = hd__store_w_app(s, t, c->tenant->num, c->app, 0, &app_num);
  if (rc == 0) rc = hd__rel_read(rs, t, app_num, c->version, &r);
  if (rc) {
    if (rc == HD_ENOTFOUND) op->reason = "no such release";
    return rc;
  }
  c->ts = now_ms;
  /* installs: dev(8) app(4) ts(8) n(4) -> JSON of the report, as received */
  json_t *j = json_pack("{s:s, s:s, s:s?, s:s?, s:I}", "version", c->version, "result",
                        c->success ? "success" : "failure", "reason",
                        c->success ? NULL : c->reason, "action", *c->action ? c->action : NULL,
                        "ts", (json_int_t)now_ms);
  char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
  json_decref(j);
  if (!text) return HD_ENOMEM;
  size_t len = strlen(text);
  unsigned char kb[24];
  hd_be64(kb, c->dev_num);
  hd_be32(kb + 8, app_num);
  hd_be64(kb + 12, (uint64_t)now_ms);
  MDB_val k = MV(kb, 24), v = MV(text, len);
  rc = MDB_KEYEXIST;
  for (uint32_t i = 0; rc == MDB_KEYEXIST && i < 1000; i++) {
    hd_be32(kb + 20, i);
    rc = mdb_put(t, rs->installs, &k, &v, MDB_NOOVERWRITE);
  }
  free(text);
  if (rc) return hd_err_from_mdb(rc);
  int kind = c->success ? K_SUCCESS : K_FAILURE;
  if ((rc = hd__rel_count_add(rs, t, app_num, c->version, kind, NULL, 1))) return rc;
  if (!c->success) {
    /* Reasons are free text: past REASONS_MAX distinct ones a release counts "other". */
    const char *reason = c->reason;
    unsigned char kb2[5 + HD_REL_MAX_VERSION + 1 + HD_REL_MAX_REASON];
    size_t n = hd__rel_vprefix(kb2, app_num, c->version);
    kb2[n++] = K_REASON;
    size_t rl = strlen(reason);
    memcpy(kb2 + n, reason, rl);
    MDB_val rk = MV(kb2, n + rl), rv;
    if (mdb_get(t, rs->counts, &rk, &rv) == MDB_NOTFOUND &&
        reasons_known(rs, t, app_num, c->version) >= REASONS_MAX)
      reason = "other";
    if ((rc = hd__rel_count_add(rs, t, app_num, c->version, K_REASON, reason, 1))) return rc;
  }
  return 0;
}

static void on_reported(hd_op *op) {
  reportctx *c = (reportctx *)op;
  hd_releases *rs = c->rs;
  if (op->status == 0) {
    hd__metric_add(c->success ? rs->m_install_ok : rs->m_install_fail, 1);
    hd__events_install(rs->b->events, c->tenant->name, c->device, c->app, c->version,
                       c->success ? "success" : "failure", c->success ? NULL : c->reason,
                       *c->action ? c->action : NULL);
  }
  c->cb(c->ud, op->status, op->reason);
  free(c);
}

void hd__release_install_report(hd_releases *rs, hd_tenant *t, const char *device,
                                uint64_t dev_num, const hd_install_report *rep,
                                void (*cb)(void *ud, int status, const char *reason), void *ud) {
  reportctx *c = calloc(1, sizeof *c);
  if (!c) {
    cb(ud, HD_ENOMEM, NULL);
    return;
  }
  c->rs = rs;
  c->tenant = t;
  c->cb = cb;
  c->ud = ud;
  c->dev_num = dev_num;
  c->success = rep->success;
  snprintf(c->device, sizeof c->device, "%s", device);
  snprintf(c->app, sizeof c->app, "%s", rep->app);
  snprintf(c->version, sizeof c->version, "%s", rep->version);
  snprintf(c->reason, sizeof c->reason, "%s", rep->reason ? rep->reason : "");
  snprintf(c->action, sizeof c->action, "%s", rep->action ? rep->action : "");
  int rc = hd__writer_submit_fn(rs->b->writer, &c->op, report_apply, c, on_reported);
  if (rc) {
    free(c);
    cb(ud, rc, "broker is shutting down");
  }
}

/* ------------------------------------------------------------------------------------------ */
/* downloads counter */

typedef struct dlctx {
  hd_op op;
  hd_releases *rs;
  uint32_t tenant_num;
  char app[HD_STORE_MAX_ID + 1];
  char version[HD_REL_MAX_VERSION + 1];
} dlctx;

static int dl_apply(hd_store *s, MDB_txn *t, hd_op *op, int64_t now_ms) {
  dlctx *c = op->u.fn.arg;
  uint32_t app_num;
  hd_release r;
  (void)now_ms;
  int rc = hd__store_w_app(s, t, c->tenant_num, c->app, 0, &app_num);
  if (rc == 0) rc = hd__rel_read(c->rs, t, app_num, c->version, &r);
  if (rc == 0) rc = hd__rel_count_add(c->rs, t, app_num, c->version, K_DOWNLOAD, NULL, 1);
  return rc;
}

static void on_dl_counted(hd_op *op) {
  dlctx *c = (dlctx *)op;
  if (op->status)
    hd__log(HD_LOG_WARN, "download_not_counted", "app=%s version=%s error=%s", c->app,
            c->version, hd_err_code(op->status));
  free(c);
}

void hd__release_count_download(hd_releases *rs, uint32_t tenant_num, const char *app,
                                const char *version) {
  dlctx *c = calloc(1, sizeof *c);
  if (!c) return;
  c->rs = rs;
  c->tenant_num = tenant_num;
  snprintf(c->app, sizeof c->app, "%s", app);
  snprintf(c->version, sizeof c->version, "%s", version);
  if (hd__writer_submit_fn(rs->b->writer, &c->op, dl_apply, c, on_dl_counted)) free(c);
}

/* ------------------------------------------------------------------------------------------ */
/* reports */

static int counts_read(hd_releases *rs, MDB_txn *t, uint32_t app_num, const char *version,
                       hd_release_counts *out, hd_release_reason *reasons) {
  unsigned char kb[5 + HD_REL_MAX_VERSION];
  size_t n = hd__rel_vprefix(kb, app_num, version);
  MDB_cursor *c;
  memset(out, 0, sizeof *out);
  out->reasons = reasons;
  int rc = mdb_cursor_open(t, rs->counts, &c);
  if (rc) return hd_err_from_mdb(rc);
  MDB_val k = MV(kb, n), v;
  for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
       rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
    if (k.mv_size <= n || memcmp(k.mv_data, kb, n) != 0) break;
    if (v.mv_size != 8) continue;
    const unsigned char *kp = k.mv_data;
    uint64_t val = hd_rd64(v.mv_data);
    switch (kp[n]) {
    case K_SUCCESS: out->success = val; break;
    case K_FAILURE: out->failure = val; break;
    case K_DOWNLOAD: out->downloads = val; break;
    case K_NOTIFIED: out->notified = val; break;
    case K_REASON:
      if (out->nreasons < REASONS_MAX + 1) {
        reasons[out->nreasons].text = (const char *)kp + n + 1;
        reasons[out->nreasons].len = k.mv_size - n - 1;
        reasons[out->nreasons].n = val;
        out->nreasons++;
      }
      break;
    }
  }
  mdb_cursor_close(c);
  return rc && rc != MDB_NOTFOUND ? hd_err_from_mdb(rc) : 0;
}

int hd__release_reports(hd_releases *rs, uint32_t tenant_num, const char *app,
                        const char *version,
                        int (*cb)(void *ud, const hd_release *rel, const hd_release_counts *c),
                        void *ud) {
  MDB_txn *t;
  int rc = hd__store_rbegin(rs->store, &t);
  if (rc) return rc;
  hd_release_reason reasons[REASONS_MAX + 1];
  unsigned char kb[8];
  hd_be32(kb, tenant_num);
  hd_be32(kb + 4, 0);
  MDB_cursor *cur;
  if ((rc = hd_err_from_mdb(mdb_cursor_open(t, rs->apps, &cur)))) goto out;
  MDB_val k = MV(kb, 8), v;
  int r;
  for (r = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); r == 0 && rc == 0;
       r = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    if (k.mv_size != 8 || hd_rd32(k.mv_data) != tenant_num) break;
    uint32_t app_num = hd_rd32((const unsigned char *)k.mv_data + 4), tn;
    int req = v.mv_size >= 1 && (((const unsigned char *)v.mv_data)[0] & 1);
    char name[HD_STORE_MAX_ID + 1];
    if (hd__store_r_app_name(rs->store, t, app_num, &tn, name, sizeof name)) continue;
    if (app && strcmp(app, name) != 0) continue;
    hd_release *all;
    size_t n;
    if ((rc = rel_scan(rs, t, app_num, &all, &n))) break;
    if (n > 1) qsort(all, n, sizeof *all, newest_first);
    for (size_t i = 0; i < n && rc == 0; i++) {
      if (version && strcmp(version, all[i].version) != 0) continue;
      all[i].tenant_num = tenant_num;
      all[i].required = req;
      snprintf(all[i].app, sizeof all[i].app, "%s", name);
      hd_release_counts cn;
      if ((rc = counts_read(rs, t, app_num, all[i].version, &cn, reasons))) break;
      rc = cb(ud, &all[i], &cn);
    }
    free(all);
  }
  mdb_cursor_close(cur);
out:
  hd__store_rend(rs->store, t);
  return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* lifecycle */

static int mkdir_one(const char *p) { return mkdir(p, 0700) == 0 || errno == EEXIST ? 0 : -1; }

int hd__release_open(hd_broker *b, hd_releases **out, char *err, size_t errlen) {
  hd_releases *rs = calloc(1, sizeof *rs);
  if (!rs) return HD_ENOMEM;
  rs->b = b;
  rs->store = b->store;
  rs->chunk = b->cfg.release.fanout_batch > 0 ? (size_t)b->cfg.release.fanout_batch
                                              : HD_REL_FANOUT_CHUNK;
  static const char *const names[] = {"rel",          "rel_apps",  "rel_notified",
                                      "rel_fanout",   "inventory", "inv_devs",
                                      "rel_counts",   "installs"};
  MDB_dbi *dbis[] = {&rs->rel, &rs->apps, &rs->notified, &rs->fanout,
                     &rs->inv, &rs->inv_devs, &rs->counts, &rs->installs};
  int rc = 0;
  for (size_t i = 0; i < sizeof names / sizeof names[0] && !rc; i++)
    rc = hd__store_dbi(b->store, names[i], dbis[i]);
  if (rc) {
    snprintf(err, errlen, "release tables: %s", hd_strerror(rc));
    free(rs);
    return rc;
  }
  if ((size_t)snprintf(rs->pkg_dir, sizeof rs->pkg_dir, "%s/packages", b->cfg.data_dir) >=
      sizeof rs->pkg_dir) {
    snprintf(err, errlen, "data_dir is too long for the package directory");
    free(rs);
    return HD_ECONFIG;
  }
  snprintf(rs->tmp_dir, sizeof rs->tmp_dir, "%s/tmp", rs->pkg_dir);
  if (mkdir_one(rs->pkg_dir) || mkdir_one(rs->tmp_dir)) {
    snprintf(err, errlen, "%s: cannot create: %s", rs->tmp_dir, strerror(errno));
    free(rs);
    return HD_EIO;
  }
  /* Uploads a crash interrupted: nothing refers to them. */
  DIR *d = opendir(rs->tmp_dir);
  if (d) {
    struct dirent *e;
    while ((e = readdir(d)))
      if (strncmp(e->d_name, "upload-", 7) == 0) unlinkat(dirfd(d), e->d_name, 0);
    closedir(d);
  }
  rs->m_notices = hd__metric_new(b->metrics, "herald_release_notices_total",
                                 "Release notices committed (at most one per release and device)",
                                 HD_METRIC_COUNTER, NULL);
  const char *ih = "Install reports stored, by result";
  rs->m_install_ok = hd__metric_new(b->metrics, "herald_install_reports_total", ih,
                                    HD_METRIC_COUNTER, "result=\"success\"");
  rs->m_install_fail = hd__metric_new(b->metrics, "herald_install_reports_total", ih,
                                      HD_METRIC_COUNTER, "result=\"failure\"");
  *out = rs;
  return 0;
}

const char *hd__release_tmp_dir(const hd_releases *rs) { return rs->tmp_dir; }

void hd__release_start(hd_releases *rs) {
  hd_broker *b = rs->b;
  char host[256];
  int port = 0;
  if (b->cfg.release.public_url) {
    snprintf(rs->public_url, sizeof rs->public_url, "%s", b->cfg.release.public_url);
  } else if (hd__config_parse_hostport(b->cfg.http.listen, host, sizeof host, &port) == 0) {
    snprintf(rs->public_url, sizeof rs->public_url, "%s://%s%s%s:%d",
             b->cfg.http.tls_cert ? "https" : "http", strchr(host, ':') ? "[" : "", host,
             strchr(host, ':') ? "]" : "", hd__http_port(b->http));
  }
  size_t ul = strlen(rs->public_url);
  while (ul && rs->public_url[ul - 1] == '/') rs->public_url[--ul] = 0;
  hd__rel_fanout_init(rs); /* resumes the fan-outs a stop or a crash interrupted */
}

void hd__release_stop(hd_releases *rs) {
  if (!rs || rs->stopping) return;
  rs->stopping = 1;
  hd__rel_fanout_stop(rs);
}

void hd__release_free(hd_releases *rs) {
  if (!rs) return;
  hd__rel_fanout_free(rs);
  free(rs);
}
