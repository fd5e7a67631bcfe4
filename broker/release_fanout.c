/* release_fanout.c — release notices (see release.h, docs/protocols/releases.md): the jobs
 * that walk an app's devices in bounded steps, notify those inside the rollout at most once,
 * and resume after a restart. */
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "bytes.h"
#include "clock.h"
#include "herald/error.h"
#include "log.h"
#include "release_int.h"

#define FANOUT_RETRY_MS 5000 /* after a failed step (store full, I/O error) */

/* How it works.
 *
 * A job walks the devices of the app (registered, or reported in an inventory) in device-number
 * order, `chunk` at a time. For each device inside the rollout and not notified yet it
 * publishes a direct message through hd__broker_publish, whose commit also writes the
 * "notified" row (notice_hook): a device is notified at most once per release whatever
 * happens. Once every publish of a step has its answer, the job's cursor is saved (the
 * rel_fanout row: cursor(8) gen(4)), then the next step runs from a zero timer, so the loop
 * serves other work in between. A restart resumes every row from its cursor. Raising the
 * rollout (or re-activating) sets the row to cursor 0 with the next generation: a job whose
 * save finds another generation walks again from the start; one that finds no row (paused,
 * withdrawn) ends. */

enum { FO_READY = 1, FO_PUBLISHING, FO_SAVING, FO_WAIT, FO_DONE };

struct hd_rel_fanout {
  hd_rel_fanout *next;
  hd_releases *rs;
  hd_tenant *tenant;
  uint32_t app_num;
  char app[HD_STORE_MAX_ID + 1];
  char version[HD_REL_MAX_VERSION + 1];
  uint64_t cursor;           /* every device <= cursor is settled */
  uint32_t gen;              /* of the rel_fanout row this job follows */
  int state;                 /* FO_* */
  int64_t wait_until_ms;     /* FO_WAIT */
  uint64_t chunk_end;        /* the step's last device */
  int chunk_last;            /* the step reached the end of the lists */
  size_t pending;            /* publishes of the step without an answer yet */
  int failed;                /* one of them failed for a reason that may pass: redo the step */
  char *payload;             /* the notice, msgpack */
  size_t payload_len;
  /* the save op: filled before submit, read by the writer thread, answered in done */
  hd_op op;
  uint64_t save_cursor;
  int save_delete;
  int save_result;           /* 0 saved, 1 other generation (restart), 2 no row (end) */
  uint32_t save_gen;         /* the row's generation when save_result is 1 */
};

static void fanout_schedule(hd_releases *rs, uint64_t delay_ms);

static void job_free(hd_rel_fanout *f) {
  free(f->payload);
  free(f);
}

static hd_rel_fanout *job_find(hd_releases *rs, uint32_t app_num, const char *version) {
  for (hd_rel_fanout *f = rs->jobs; f; f = f->next)
    if (f->app_num == app_num && strcmp(f->version, version) == 0) return f;
  return NULL;
}

static void pk_s(msgpack_packer *pk, const char *s) {
  size_t n = strlen(s);
  msgpack_pack_str(pk, n);
  msgpack_pack_str_body(pk, s, n);
}

/* {"kind":"release","app","version","code","size","sha256","url","notes","ts"} */
static int notice_payload(hd_releases *rs, const char *app, const hd_release *r, char **out,
                          size_t *len) {
  msgpack_sbuffer sb;
  msgpack_packer pk;
  char hex[65], url[2048];
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  hd__rel_hex(r->sha256, hex);
  hd__release_url(rs, app, r->version, url, sizeof url);
  msgpack_pack_map(&pk, 9);
  pk_s(&pk, "kind");
  pk_s(&pk, "release");
  pk_s(&pk, "app");
  pk_s(&pk, app);
  pk_s(&pk, "version");
  pk_s(&pk, r->version);
  pk_s(&pk, "code");
  if (r->has_code) msgpack_pack_int64(&pk, r->code);
  else msgpack_pack_nil(&pk);
  pk_s(&pk, "size");
  msgpack_pack_uint64(&pk, r->size);
  pk_s(&pk, "sha256");
  pk_s(&pk, hex);
  pk_s(&pk, "url");
  pk_s(&pk, url);
  pk_s(&pk, "notes");
  pk_s(&pk, r->notes);
  pk_s(&pk, "ts");
  msgpack_pack_int64(&pk, hd__wall_ms());
  *out = sb.data; /* msgpack_sbuffer's buffer is malloc'd: ours now */
  *len = sb.size;
  if (!sb.data) return HD_ENOMEM;
  return 0;
}

/* Start (or restart from the start) the job of a release. */
void hd__rel_fanout_start(hd_releases *rs, hd_tenant *tenant, uint32_t app_num, const char *app,
                          const char *version, uint64_t cursor, uint32_t gen) {
  if (rs->stopping) return;
  hd_rel_fanout *f = job_find(rs, app_num, version);
  if (f) {
    /* Running: its next save sees the new generation and walks again. Idle between steps
     * (ready, waiting, or ended and not freed yet): restart it now. */
    if (f->state == FO_READY || f->state == FO_WAIT || f->state == FO_DONE) {
      f->cursor = cursor;
      f->gen = gen;
      f->state = FO_READY;
      fanout_schedule(rs, 0);
    }
    return;
  }
  f = calloc(1, sizeof *f);
  if (!f) return; /* resumed from its row at the next start */
  f->rs = rs;
  f->tenant = tenant;
  f->app_num = app_num;
  snprintf(f->app, sizeof f->app, "%s", app);
  snprintf(f->version, sizeof f->version, "%s", version);
  f->cursor = cursor;
  f->gen = gen;
  f->state = FO_READY;
  f->next = rs->jobs;
  rs->jobs = f;
  fanout_schedule(rs, 0);
}

/* Writer thread, inside the notice's publish: at most once per (release, device). */
static int notice_hook(hd_store *s, MDB_txn *t, hd_op *op, void *arg) {
  hd_rel_fanout *f = arg;
  hd_releases *rs = f->rs;
  unsigned char kb[5 + HD_REL_MAX_VERSION + 8], tb[8];
  size_t n = hd__rel_vprefix(kb, op->u.pub.app_num, f->version);
  hd_be64(kb + n, op->u.pub.dev_num);
  MDB_val k = MV(kb, n + 8), v;
  int rc = mdb_get(t, rs->notified, &k, &v);
  if (rc == 0) {
    op->reason = "already notified";
    return HD_EEXIST;
  }
  if (rc != MDB_NOTFOUND) return hd_err_from_mdb(rc);
  /* A device that only reported the app in an inventory is registered for it now: a direct
   * message can only be fetched through a registration (writes nothing when it fails). */
  if ((rc = hd__store_w_register(s, t, op->u.pub.dev_num, op->u.pub.app_num))) {
    if (rc == HD_ETOOBIG) op->reason = "device is registered for too many apps";
    return rc;
  }
  hd_be64(tb, (uint64_t)hd__wall_ms());
  v = MV(tb, 8);
  if ((rc = mdb_put(t, rs->notified, &k, &v, 0))) return hd_err_from_mdb(rc);
  return hd__rel_count_add(rs, t, op->u.pub.app_num, f->version, K_NOTIFIED, NULL, 1);
}

static void job_save(hd_rel_fanout *f);

static void job_step_done(hd_rel_fanout *f) {
  hd_releases *rs = f->rs;
  if (rs->stopping) {
    f->state = FO_DONE;
    return;
  }
  if (f->failed) {
    f->failed = 0;
    f->state = FO_WAIT;
    f->wait_until_ms = hd__wall_ms() + FANOUT_RETRY_MS;
    fanout_schedule(rs, FANOUT_RETRY_MS);
    return;
  }
  f->save_cursor = f->chunk_end;
  f->save_delete = f->chunk_last;
  job_save(f);
}

static void on_notice(void *ud, int status, uint64_t id, const char *reason) {
  hd_rel_fanout *f = ud;
  (void)id;
  if (status == 0) {
    hd__metric_add(f->rs->m_notices, 1);
  } else if (status != HD_EEXIST && status != HD_ENOTFOUND && status != HD_ETOOBIG &&
             status != HD_EINVAL) {
    /* Store full, I/O, shutting down: the step is redone later (notified rows make that
     * harmless). The others cannot change by retrying: that device is skipped. */
    if (!f->failed)
      hd__log(HD_LOG_WARN, "release_notice_failed", "tenant=%s app=%s version=%s error=%s",
              f->tenant->name, f->app, f->version, hd_err_code(status));
    f->failed = 1;
  }
  (void)reason;
  if (--f->pending == 0 && f->state == FO_PUBLISHING) job_step_done(f);
}

/* Devices after `after` that have the app (registered or from an inventory), merged, at most
 * max; *last gets the step's boundary and *end whether the lists are exhausted. */
static int candidates(hd_releases *rs, MDB_txn *t, uint32_t app_num, uint64_t after,
                      uint64_t *out, size_t max, size_t *n, uint64_t *last, int *end) {
  uint64_t *a = malloc(max * sizeof *a), *b = malloc(max * sizeof *b);
  size_t na = 0, nb = 0;
  int rc = (!a || !b) ? HD_ENOMEM : 0;
  if (!rc) rc = hd__store_r_app_devs_page(rs->store, t, app_num, after, a, max, &na);
  if (!rc) {
    MDB_cursor *c;
    unsigned char kb[12];
    hd_be32(kb, app_num);
    hd_be64(kb + 4, after + 1);
    if (after == UINT64_MAX) {
      nb = 0;
    } else if ((rc = hd_err_from_mdb(mdb_cursor_open(t, rs->inv_devs, &c))) == 0) {
      MDB_val k = MV(kb, 12), v;
      int r;
      for (r = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); r == 0 && nb < max;
           r = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 12 || hd_rd32(k.mv_data) != app_num) break;
        b[nb++] = hd_rd64((const unsigned char *)k.mv_data + 4);
      }
      mdb_cursor_close(c);
      if (r && r != MDB_NOTFOUND) rc = hd_err_from_mdb(r);
    }
  }
  if (rc) {
    free(a);
    free(b);
    return rc;
  }
  /* A full page says nothing of what lies beyond its last entry: stop there. */
  uint64_t bound = UINT64_MAX;
  if (na == max) bound = a[na - 1];
  if (nb == max && b[nb - 1] < bound) bound = b[nb - 1];
  size_t i = 0, j = 0;
  int capped = 0;
  *n = 0;
  while (i < na || j < nb) {
    uint64_t x = j >= nb || (i < na && a[i] <= b[j]) ? a[i] : b[j];
    if (x > bound) break;
    if (*n == max) { /* the two lists together hold more than one step: stop before x */
      capped = 1;
      break;
    }
    if (i < na && a[i] == x) i++;
    if (j < nb && b[j] == x) j++;
    out[(*n)++] = x;
  }
  *end = bound == UINT64_MAX && !capped;
  *last = capped ? out[*n - 1] : bound != UINT64_MAX ? bound : (*n ? out[*n - 1] : after);
  free(a);
  free(b);
  return 0;
}

/* One step of a job (loop thread). */
static void job_step(hd_rel_fanout *f) {
  hd_releases *rs = f->rs;
  hd_broker *b = rs->b;
  MDB_txn *t;
  hd_release r;
  size_t chunk = rs->chunk, n = 0;
  uint64_t *devs = malloc(chunk * sizeof *devs);
  char (*names)[HD_STORE_MAX_ID + 1] = malloc(chunk * sizeof *names);
  size_t nsend = 0;
  int rc = devs && names ? hd__store_rbegin(rs->store, &t) : HD_ENOMEM;
  if (rc) goto fail;
  rc = hd__rel_read(rs, t, f->app_num, f->version, &r);
  if (rc == 0 && (r.state != HD_REL_ACTIVE || r.rollout_bp == 0)) {
    /* Paused, withdrawn or rolled back to 0 since: the patch removed the row; a later patch
     * that re-activates it starts a new job. */
    hd__store_rend(rs->store, t);
    f->state = FO_DONE;
    goto out;
  }
  if (rc == 0 && !f->payload)
    rc = notice_payload(rs, f->app, &r, &f->payload, &f->payload_len);
  if (rc == 0)
    rc = candidates(rs, t, f->app_num, f->cursor, devs, chunk, &n, &f->chunk_end,
                    &f->chunk_last);
  for (size_t i = 0; rc == 0 && i < n; i++) {
    uint32_t tn;
    char *name = names[nsend];
    if (hd__store_r_dev_name(rs->store, t, devs[i], &tn, name, HD_STORE_MAX_ID + 1) ||
        tn != f->tenant->num)
      continue;
    if (!hd__release_in_rollout(f->tenant->name, f->app, f->version, name, r.rollout_bp))
      continue;
    unsigned char kb[5 + HD_REL_MAX_VERSION + 8];
    size_t kn = hd__rel_vprefix(kb, f->app_num, f->version);
    hd_be64(kb + kn, devs[i]);
    MDB_val k = MV(kb, kn + 8), v;
    if (mdb_get(t, rs->notified, &k, &v) == 0) continue; /* settled before a restart */
    nsend++;
  }
  hd__store_rend(rs->store, t);
  if (rc) goto fail;
  f->state = FO_PUBLISHING;
  f->pending = nsend + 1; /* + 1: no step ends before every publish is submitted */
  for (size_t i = 0; i < nsend; i++) {
    hd_pubreq pr = {
        .tenant = f->tenant,
        .appid = f->app,
        .to = names[i],
        .data = f->payload,
        .data_len = f->payload_len,
        /* A newer release's notice replaces an older one the device has not fetched yet. */
        .collapse = "herald.release",
        .ingress = HD_INGRESS_HTTP,
        .hook = notice_hook,
        .hook_arg = f,
    };
    hd__broker_publish(b, &pr, on_notice, f);
  }
  free(devs);
  free(names);
  if (--f->pending == 0) job_step_done(f);
  return;
fail:
  hd__log(HD_LOG_WARN, "release_fanout_failed", "tenant=%s app=%s version=%s error=%s",
          f->tenant->name, f->app, f->version, hd_err_code(rc));
  f->state = FO_WAIT;
  f->wait_until_ms = hd__wall_ms() + FANOUT_RETRY_MS;
  fanout_schedule(rs, FANOUT_RETRY_MS);
out:
  free(devs);
  free(names);
}

/* Writer thread: save the cursor (or delete the row when the walk is complete), unless a
 * patch gave the row another generation or removed it meanwhile. */
static int save_apply(hd_store *s, MDB_txn *t, hd_op *op, int64_t now_ms) {
  hd_rel_fanout *f = op->u.fn.arg;
  hd_releases *rs = f->rs;
  (void)s, (void)now_ms;
  unsigned char kb[4 + HD_REL_MAX_VERSION], vb[12];
  MDB_val k = MV(kb, hd__rel_key(kb, f->app_num, f->version)), v;
  int rc = mdb_get(t, rs->fanout, &k, &v);
  if (rc == MDB_NOTFOUND) {
    f->save_result = 2;
    return 0;
  }
  if (rc) return hd_err_from_mdb(rc);
  uint32_t gen = v.mv_size == 12 ? hd_rd32((const unsigned char *)v.mv_data + 8) : 0;
  if (gen != f->gen) {
    f->save_result = 1;
    f->save_gen = gen;
    return 0;
  }
  f->save_result = 0;
  if (f->save_delete) return hd_err_from_mdb(mdb_del(t, rs->fanout, &k, NULL));
  hd_be64(vb, f->save_cursor);
  hd_be32(vb + 8, f->gen);
  v = MV(vb, 12);
  return hd_err_from_mdb(mdb_put(t, rs->fanout, &k, &v, 0));
}

static void on_saved(hd_op *op) {
  hd_rel_fanout *f = op->ud;
  hd_releases *rs = f->rs;
  if (rs->stopping) {
    f->state = FO_DONE;
    return;
  }
  if (op->status) {
    f->state = FO_WAIT;
    f->wait_until_ms = hd__wall_ms() + FANOUT_RETRY_MS;
    fanout_schedule(rs, FANOUT_RETRY_MS);
    return;
  }
  if (f->save_result == 2 || (f->save_result == 0 && f->save_delete)) {
    if (f->save_result == 0)
      hd__log(HD_LOG_INFO, "release_fanout_done", "tenant=%s app=%s version=%s", f->tenant->name,
              f->app, f->version);
    f->state = FO_DONE;
    fanout_schedule(rs, 0); /* frees it */
    return;
  }
  if (f->save_result == 1) {
    f->cursor = 0;
    f->gen = f->save_gen;
  } else {
    f->cursor = f->save_cursor;
  }
  f->state = FO_READY;
  fanout_schedule(rs, 0);
}

static void job_save(hd_rel_fanout *f) {
  f->state = FO_SAVING;
  memset(&f->op, 0, sizeof f->op);
  f->op.ud = f;
  if (hd__writer_submit_fn(f->rs->b->writer, &f->op, save_apply, f, on_saved))
    f->state = FO_DONE; /* stopping */
}

/* The timer: run every job that is ready (or whose wait is over), drop finished ones. */
static void on_fanout_timer(uv_timer_t *tm) {
  hd_releases *rs = tm->data;
  int64_t now = hd__wall_ms();
  int64_t next_wait = -1;
  for (hd_rel_fanout **pp = &rs->jobs; *pp;) {
    hd_rel_fanout *f = *pp;
    if (f->state == FO_DONE) {
      *pp = f->next;
      job_free(f);
      continue;
    }
    pp = &f->next;
    if (rs->stopping) continue;
    if (f->state == FO_WAIT && f->wait_until_ms <= now) f->state = FO_READY;
    if (f->state == FO_READY) job_step(f);
    else if (f->state == FO_WAIT && (next_wait < 0 || f->wait_until_ms - now < next_wait))
      next_wait = f->wait_until_ms - now;
  }
  if (next_wait >= 0 && !rs->stopping) fanout_schedule(rs, (uint64_t)next_wait);
}

static void fanout_schedule(hd_releases *rs, uint64_t delay_ms) {
  if (!rs->timer_live || rs->stopping) return;
  uint64_t due = uv_timer_get_due_in(&rs->timer);
  if (uv_is_active((uv_handle_t *)&rs->timer) && due <= delay_ms) return;
  uv_timer_start(&rs->timer, on_fanout_timer, delay_ms, 0);
}

void hd__rel_fanout_init(hd_releases *rs) {
  uv_timer_init(rs->b->loop, &rs->timer);
  rs->timer.data = rs;
  rs->timer_live = 1;
  MDB_txn *t;
  if (hd__store_rbegin(rs->store, &t)) return;
  MDB_cursor *cur;
  if (mdb_cursor_open(t, rs->fanout, &cur) == 0) {
    MDB_val k, v;
    size_t resumed = 0;
    for (int r = mdb_cursor_get(cur, &k, &v, MDB_FIRST); r == 0;
         r = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
      if (k.mv_size < 5 || k.mv_size - 4 > HD_REL_MAX_VERSION || v.mv_size != 12) continue;
      uint32_t app_num = hd_rd32(k.mv_data), tn;
      char app[HD_STORE_MAX_ID + 1], version[HD_REL_MAX_VERSION + 1];
      memcpy(version, (const char *)k.mv_data + 4, k.mv_size - 4);
      version[k.mv_size - 4] = 0;
      if (hd__store_r_app_name(rs->store, t, app_num, &tn, app, sizeof app)) continue;
      hd_tenant *tenant = hd__rel_tenant_by_num(rs, tn);
      if (!tenant) continue; /* no longer configured: its rows wait for it */
      hd__rel_fanout_start(rs, tenant, app_num, app, version, hd_rd64(v.mv_data),
                           hd_rd32((const unsigned char *)v.mv_data + 8));
      resumed++;
    }
    mdb_cursor_close(cur);
    if (resumed) hd__log(HD_LOG_INFO, "release_fanout_resumed", "releases=%zu", resumed);
  }
  hd__store_rend(rs->store, t);
}

void hd__rel_fanout_stop(hd_releases *rs) {
  if (!rs->timer_live) return;
  uv_timer_stop(&rs->timer);
  uv_close((uv_handle_t *)&rs->timer, NULL);
  rs->timer_live = 0;
}

void hd__rel_fanout_free(hd_releases *rs) {
  while (rs->jobs) {
    hd_rel_fanout *f = rs->jobs;
    rs->jobs = f->next;
    job_free(f);
  }
}
