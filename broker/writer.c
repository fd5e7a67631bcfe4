/* writer.c — the group-commit thread behind writer.h. */
#include "writer.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "herald/error.h"
#include "log.h"

struct hd_writer {
  uv_loop_t *loop;
  hd_store *store;
  size_t max_batch;
  uint64_t reserve;
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  hd_op *in_head, *in_tail;     /* submitted, not yet taken */
  hd_op *out_head, *out_tail;   /* committed, waiting for the loop */
  hd_op *ack_head, *ack_tail;   /* acks held back until ack_due_ns (ack_delay_ns > 0) */
  size_t nacks;
  uint64_t ack_delay_ns;
  uint64_t ack_due_ns;          /* when the oldest held ack must be in a commit */
  size_t queued;
  int stopping;
  int thread_started;
  uv_async_t async;
  hd_writer_stats stats;        /* guarded by mu */
};


/* 1 if the error leaves the LMDB transaction unusable. */
static int poisons(int status) {
  return status == HD_EFULL || status == HD_EIO || status == HD_ENOMEM || status == HD_EAGAIN;
}

static int apply_publish(hd_store *s, MDB_txn *t, hd_op *op, int64_t now) {
  /* Validate before writing anything: an op that fails must leave no trace in the batch's
   * transaction (a direct message to an unknown device must not create its app). */
  int rc = hd__store_w_app(s, t, op->u.pub.tenant_num, op->u.pub.appid, 0, &op->u.pub.app_num);
  if (rc == HD_ENOTFOUND && op->u.pub.create_app && !op->u.pub.to)
    rc = hd__store_w_app(s, t, op->u.pub.tenant_num, op->u.pub.appid, 1, &op->u.pub.app_num);
  if (rc) {
    op->reason = rc == HD_ENOTFOUND ? "no such app" : NULL;
    return rc;
  }
  op->u.pub.dev_num = 0;
  if (op->u.pub.to) {
    hd_store_device d;
    /* A message to a device that is not registered for the app could never be fetched. */
    if ((rc = hd__store_w_device(s, t, op->u.pub.tenant_num, op->u.pub.to, &d)) == 0 &&
        op->u.pub.hook) {
      op->u.pub.dev_num = d.dev_num;
      if ((rc = op->u.pub.hook(s, t, op, op->u.pub.hook_arg))) return rc;
    }
    if (rc == 0) rc = hd__store_w_is_registered(s, t, d.dev_num, op->u.pub.app_num);
    if (rc) {
      op->reason = rc == HD_ENOTFOUND ? "no such device registered for this app" : NULL;
      return rc;
    }
    op->u.pub.dev_num = d.dev_num;
  }
  hd_store_pub p = {
      .app_num = op->u.pub.app_num,
      .dev_num = op->u.pub.dev_num,
      .now_ms = now,
      .expires_ms = now + op->u.pub.ttl_s * 1000,
      .collapse = op->u.pub.collapse,
      .collapse_len = op->u.pub.collapse_len,
      .data = op->u.pub.data,
      .data_len = op->u.pub.data_len,
  };
  op->u.pub.created_ms = now;
  return hd__store_w_publish(s, t, &p, &op->u.pub.seq, &op->u.pub.replaced);
}

static int apply_register(hd_store *s, MDB_txn *t, hd_op *op, int64_t now) {
  int rc = hd__store_w_app(s, t, op->u.reg.tenant_num, op->u.reg.appid, op->u.reg.create_app,
                           &op->u.reg.app_num);
  if (rc) {
    op->reason = rc == HD_ENOTFOUND ? "no such app" : NULL;
    return rc;
  }
  uint32_t tn = op->u.reg.tenant_num;
  switch (op->u.reg.mode) {
  case HD_REG_PROVISION:
    rc = hd__store_w_device(s, t, tn, op->u.reg.device_id, &op->u.reg.dev);
    if (rc == HD_ENOTFOUND)
      rc = hd__store_w_device_create(s, t, tn, op->u.reg.device_id, now, &op->u.reg.dev);
    break;
  case HD_REG_EXISTING:
    rc = hd__store_w_device(s, t, tn, op->u.reg.device_id, &op->u.reg.dev);
    /* A revoked token (older generation) or a device that no longer exists: refused alike. */
    if (rc == HD_ENOTFOUND || (rc == 0 && op->u.reg.dev.gen != op->u.reg.token_gen)) {
      op->reason = "wrong publish key or device token";
      return HD_EAUTH;
    }
    break;
  case HD_REG_NEW:
    rc = hd__store_w_device_create(s, t, tn, op->u.reg.device_id, now, &op->u.reg.dev);
    break;
  default:
    rc = HD_EINVAL;
  }
  if (rc == HD_EEXIST) op->reason = "device id already exists";
  else if (rc == HD_ENOTFOUND) op->reason = "no such device";
  if (rc) return rc;
  rc = hd__store_w_register(s, t, op->u.reg.dev.dev_num, op->u.reg.app_num);
  if (rc == HD_ETOOBIG) op->reason = "device is registered for too many apps";
  return rc;
}

static int apply_tenant(hd_store *s, MDB_txn *t, hd_op *op) {
  int rc = hd__store_w_tenant(s, t, op->u.tenant.name, &op->u.tenant.tenant_num);
  for (size_t i = 0; rc == 0 && i < op->u.tenant.napps; i++) {
    uint32_t app;
    if (strcmp(op->u.tenant.apps[i], "*") == 0) continue;
    rc = hd__store_w_app(s, t, op->u.tenant.tenant_num, op->u.tenant.apps[i], 1, &app);
  }
  return rc;
}

static int apply_device_gen(hd_store *s, MDB_txn *t, hd_op *op) {
  uint32_t tn = op->u.devgen.tenant_num, want = op->u.devgen.expect_gen;
  int rc = hd__store_w_device(s, t, tn, op->u.devgen.device_id, &op->u.devgen.dev);
  if (want && (rc == HD_ENOTFOUND || (rc == 0 && op->u.devgen.dev.gen != want))) {
    /* A token of an older generation or for a device gone: refused alike. */
    op->reason = "wrong publish key or device token";
    return HD_EAUTH;
  }
  if (rc == 0) rc = hd__store_w_device_bump(s, t, tn, op->u.devgen.device_id, &op->u.devgen.dev);
  if (rc == HD_ENOTFOUND) op->reason = "no such device";
  else if (rc == HD_ETOOBIG) op->reason = "the device's token generation is exhausted";
  return rc;
}

static int apply_kind(hd_store *s, MDB_txn *t, hd_op *op, int64_t now) {
  switch (op->kind) {
  case HD_OP_PUBLISH: return apply_publish(s, t, op, now);
  case HD_OP_REGISTER: return apply_register(s, t, op, now);
  case HD_OP_ACK:
    return hd__store_w_ack(s, t, op->u.ack.dev_num, op->u.ack.ids, op->u.ack.n, now,
                           &op->u.ack.acked);
  case HD_OP_SWEEP:
    return hd__store_w_sweep(s, t, now, op->u.sweep.max ? op->u.sweep.max : 1000,
                             &op->u.sweep.deleted, &op->u.sweep.more);
  case HD_OP_TENANT: return apply_tenant(s, t, op);
  case HD_OP_DEVICE_GEN: return apply_device_gen(s, t, op);
  case HD_OP_FN: return op->u.fn.apply ? op->u.fn.apply(s, t, op, now) : HD_EINVAL;
  }
  return HD_EINVAL;
}

static int apply(hd_store *s, MDB_txn *t, hd_op *op, int64_t now) {
  op->reason = NULL;
  int rc = apply_kind(s, t, op, now);
  if (rc == 0 && op->also) rc = op->also(s, t, op, now);
  return rc;
}

/* Apply a batch in one transaction; on a poisoning error replay it op by op in nested
 * transactions. Sets every op's status. Returns 0, or the error that lost the whole batch. */
/* Refuse a publish that would eat into the reserve; *room is what the batch has left, or
 * UINT64_MAX when the map is far from full (nothing to track). */
static int over_reserve(hd_writer *w, hd_op *op, uint64_t *room) {
  if (op->kind != HD_OP_PUBLISH || *room == UINT64_MAX) return 0;
  uint64_t cost = hd__store_pub_cost(w->store, op->u.pub.data_len, op->u.pub.collapse_len);
  if (*room < w->reserve + cost) {
    op->reason = "message store is full";
    return 1;
  }
  *room -= cost;
  return 0;
}

/* What the batch may use before it reaches the reserve (UINT64_MAX: plenty, do not track). */
static uint64_t batch_room(hd_writer *w, hd_op *batch) {
  uint64_t need = 0;
  if (!w->reserve) return UINT64_MAX;
  for (hd_op *op = batch; op; op = op->next)
    if (op->kind == HD_OP_PUBLISH)
      need += hd__store_pub_cost(w->store, op->u.pub.data_len, op->u.pub.collapse_len);
  if (!need) return UINT64_MAX;
  uint64_t room;
  if (hd__store_room(w->store, w->reserve + need, &room)) return UINT64_MAX;
  return room >= w->reserve + need ? UINT64_MAX : room;
}

static int commit_batch(hd_writer *w, hd_op *batch, uint64_t *commit_ns, int *replayed) {
  hd_store *s = w->store;
  MDB_txn *t;
  int64_t now = hd__wall_ms();
  uint64_t room0 = batch_room(w, batch), room = room0;
  int rc = hd__store_wbegin(s, NULL, &t);
  *replayed = 0;
  if (rc) goto fail_all;
  int poisoned = 0;
  for (hd_op *op = batch; op; op = op->next) {
    if (over_reserve(w, op, &room)) {
      op->status = HD_EFULL;
      continue;
    }
    op->status = apply(s, t, op, now);
    if (poisons(op->status)) {
      poisoned = 1;
      break;
    }
  }
  if (poisoned) {
    mdb_txn_abort(t);
    *replayed = 1;
    if ((rc = hd__store_wbegin(s, NULL, &t))) goto fail_all;
    room = room0;
    for (hd_op *op = batch; op; op = op->next) {
      MDB_txn *child;
      if (over_reserve(w, op, &room)) {
        op->status = HD_EFULL;
        continue;
      }
      if ((rc = hd__store_wbegin(s, t, &child))) {
        op->status = rc;
        continue;
      }
      op->status = apply(s, child, op, now);
      if (op->status) mdb_txn_abort(child);
      else if ((rc = hd_err_from_mdb(hd__store_wcommit(s, child)))) op->status = rc;
    }
  }
  uint64_t t0 = hd__mono_ns();
  rc = hd__store_commit_error(s, hd__store_wcommit(s, t));
  *commit_ns = hd__mono_ns() - t0;
  if (rc) goto fail_all;
  for (hd_op *op = batch; op; op = op->next)
    if (op->status == HD_EFULL) {
      hd__store_touch(s); /* let the next batch reuse what deletes just freed */
      break;
    }
  return 0;
fail_all:
  /* Nothing of this batch is durable: every op fails, none may be acknowledged. */
  if (!rc) rc = HD_EIO;
  for (hd_op *op = batch; op; op = op->next) op->status = rc;
  return rc;
}

/* Held acks are due once the oldest has waited ack_delay_ns, or so many are held, or the
 * writer stops. Called with mu held. */
#define ACK_HOLD_MAX 65536
static int acks_due(hd_writer *w, uint64_t now_ns) {
  return w->ack_head && (w->stopping || now_ns >= w->ack_due_ns || w->nacks >= ACK_HOLD_MAX);
}

/* Cuts up to `room` ops (at least one: the queue is not empty) off the front of the queue
 * head..tail; *end gets the last one cut. Returns how many. */
static size_t queue_cut(hd_op **head, hd_op **tail, size_t room, hd_op **end) {
  hd_op *e = *head;
  size_t k = 1;
  while (e->next && k < room) {
    e = e->next;
    k++;
  }
  *head = e->next;
  if (!*head) *tail = NULL;
  e->next = NULL;
  *end = e;
  return k;
}

/* The next batch, at most max_batch ops: everything that queued while the last commit ran,
 * then, if due, held acks in the room left (the rest stay due and lead the batch after).
 * Until acks are due batches leave them out, so a publish's commit writes only its own pages.
 * Called with mu held; NULL if nothing is ready. */
static hd_op *take_batch(hd_writer *w, hd_op **lastp, size_t *np) {
  hd_op *batch = NULL, *last = NULL;
  size_t n = 0;
  if (w->in_head) {
    batch = w->in_head;
    n = queue_cut(&w->in_head, &w->in_tail, w->max_batch, &last);
    w->queued -= n;
  }
  if (n < w->max_batch && acks_due(w, hd__mono_ns())) {
    hd_op *first = w->ack_head, *end;
    size_t k = queue_cut(&w->ack_head, &w->ack_tail, w->max_batch - n, &end);
    w->nacks -= k;
    w->queued -= k;
    w->ack_due_ns = 0; /* due as a group: what did not fit is due at once too */
    if (last) last->next = first;
    else batch = first;
    last = end;
    n += k;
  }
  *lastp = last;
  *np = n;
  return batch;
}

static void wait_for_work(hd_writer *w) {
  for (;;) {
    if (w->in_head || acks_due(w, hd__mono_ns())) return;
    if (w->stopping) return;
    if (!w->ack_head) {
      pthread_cond_wait(&w->cv, &w->mu);
      continue;
    }
    /* The cv runs on CLOCK_MONOTONIC (hd__writer_start), like ack_due_ns. */
    struct timespec ts = {.tv_sec = (time_t)(w->ack_due_ns / 1000000000u),
                          .tv_nsec = (long)(w->ack_due_ns % 1000000000u)};
    pthread_cond_timedwait(&w->cv, &w->mu, &ts);
  }
}

static void *writer_main(void *arg) {
  hd_writer *w = arg;
  pthread_mutex_lock(&w->mu);
  for (;;) {
    wait_for_work(w);
    hd_op *last;
    size_t n;
    hd_op *batch = take_batch(w, &last, &n);
    if (!batch) break; /* stopping with nothing left */
    pthread_mutex_unlock(&w->mu);

    uint64_t commit_ns = 0;
    int replayed = 0;
    int lost = commit_batch(w, batch, &commit_ns, &replayed);
    /* One clock read for the batch: every op in it became durable at the same moment. */
    uint64_t done_ns = hd__mono_ns();
    for (hd_op *op = batch; op; op = op->next) op->committed_ns = done_ns;

    pthread_mutex_lock(&w->mu);
    w->stats.commits++;
    w->stats.ops += n;
    w->stats.last_batch = n;
    w->stats.commit_ns_total += commit_ns;
    w->stats.replays += (uint64_t)replayed;
    w->stats.failed_commits += lost != 0;
    if (w->out_tail) w->out_tail->next = batch;
    else w->out_head = batch;
    w->out_tail = last;
    pthread_mutex_unlock(&w->mu);
    uv_async_send(&w->async);
    pthread_mutex_lock(&w->mu);
  }
  pthread_mutex_unlock(&w->mu);
  return NULL;
}

static void deliver_results(hd_writer *w) {
  pthread_mutex_lock(&w->mu);
  hd_op *op = w->out_head;
  w->out_head = w->out_tail = NULL;
  pthread_mutex_unlock(&w->mu);
  while (op) {
    hd_op *next = op->next;
    op->next = NULL;
    if (op->done) op->done(op); /* may free op */
    op = next;
  }
}

static void on_async(uv_async_t *a) { deliver_results(a->data); }

int hd__writer_start(uv_loop_t *loop, hd_store *store, size_t max_batch, uint64_t reserve,
                     hd_writer **out) {
  hd_writer *w = calloc(1, sizeof *w);
  if (!w) return HD_ENOMEM;
  w->loop = loop;
  w->store = store;
  w->max_batch = max_batch ? max_batch : 4096;
  w->reserve = reserve;
  pthread_mutex_init(&w->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&w->cv, &ca);
  pthread_condattr_destroy(&ca);
  int rc = uv_async_init(loop, &w->async, on_async);
  if (rc) {
    free(w);
    return hd_err_from_uv(rc);
  }
  w->async.data = w;
  if (pthread_create(&w->thread, NULL, writer_main, w)) {
    uv_close((uv_handle_t *)&w->async, NULL);
    w->stopping = 1;
    *out = w; /* the caller frees after the loop closes the handle */
    return HD_ENOMEM;
  }
  w->thread_started = 1;
  *out = w;
  return 0;
}

int hd__writer_submit(hd_writer *w, hd_op *op) {
  op->next = NULL;
  op->submitted_ns = hd__mono_ns();
  pthread_mutex_lock(&w->mu);
  if (w->stopping) {
    pthread_mutex_unlock(&w->mu);
    return HD_ECLOSED;
  }
  w->queued++;
  if (op->kind == HD_OP_ACK && w->ack_delay_ns) {
    if (!w->ack_head) w->ack_due_ns = op->submitted_ns + w->ack_delay_ns;
    if (w->ack_tail) w->ack_tail->next = op;
    else w->ack_head = op;
    w->ack_tail = op;
    /* The first held ack sets the writer's deadline; later ones change nothing it waits on. */
    if (++w->nacks == 1 || w->nacks >= ACK_HOLD_MAX) pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    return 0;
  }
  if (w->in_tail) w->in_tail->next = op;
  else w->in_head = op;
  w->in_tail = op;
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->mu);
  return 0;
}

void hd__writer_set_ack_delay(hd_writer *w, uint64_t ms) {
  pthread_mutex_lock(&w->mu);
  w->ack_delay_ns = ms * 1000000u;
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->mu);
}

int hd__writer_submit_fn(hd_writer *w, hd_op *op,
                         int (*fn)(hd_store *s, MDB_txn *t, hd_op *op, int64_t now_ms),
                         void *arg, void (*done)(hd_op *op)) {
  op->kind = HD_OP_FN;
  op->u.fn.apply = fn;
  op->u.fn.arg = arg;
  op->done = done;
  return hd__writer_submit(w, op);
}

int hd__writer_run_now(hd_store *store, hd_op *op) {
  hd_writer tmp = {.store = store};
  uint64_t ns;
  int replayed;
  op->next = NULL;
  commit_batch(&tmp, op, &ns, &replayed);
  return op->status;
}

void hd__writer_stop(hd_writer *w) {
  pthread_mutex_lock(&w->mu);
  int was = w->stopping;
  w->stopping = 1;
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->mu);
  if (was) return;
  /* Shutdown only: the queue is drained and committed before the thread exits, so joining
   * here waits for in-flight commits, which is exactly what SIGTERM promises. */
  if (w->thread_started) pthread_join(w->thread, NULL);
  deliver_results(w);
  uv_close((uv_handle_t *)&w->async, NULL);
}

void hd__writer_free(hd_writer *w) {
  if (!w) return;
  pthread_mutex_destroy(&w->mu);
  pthread_cond_destroy(&w->cv);
  free(w);
}

void hd__writer_stats(hd_writer *w, hd_writer_stats *out) {
  pthread_mutex_lock(&w->mu);
  *out = w->stats;
  out->queued = w->queued;
  pthread_mutex_unlock(&w->mu);
}
