/* release.c — recognising release notices (see release.h). */
#include "release.h"

#include "hdc_proto.h"

int release_is_notice(const uint8_t *data, size_t len) {
  hdc_rd r = {data, data + len};
  uint32_t n;
  if (hdc_rd_map(&r, &n)) return 0;
  for (uint32_t i = 0; i < n; i++) {
    const char *k, *v;
    uint32_t kl, vl;
    if (hdc_rd_str(&r, &k, &kl)) return 0;
    if (kl == 4 && k[0] == 'k' && k[1] == 'i' && k[2] == 'n' && k[3] == 'd') {
      hdc_rd save = r;
      if (hdc_rd_str(&r, &v, &vl) == 0)
        return vl == 7 && v[0] == 'r' && v[1] == 'e' && v[2] == 'l' && v[3] == 'e' &&
               v[4] == 'a' && v[5] == 's' && v[6] == 'e';
      r = save;
    }
    if (hdc_rd_skip(&r, NULL, NULL)) return 0;
  }
  return 0;
}

/* ---- the update job's state machine (see release.h) ---- */
#include <stdio.h>
#include <string.h>

#include "version.h"

const char *upd_state_name(int s) {
  switch (s) {
  case UPD_ASKING: return "asking";
  case UPD_DOWNLOADING: return "downloading";
  case UPD_VERIFYING: return "verifying";
  case UPD_INSTALLING: return "installing";
  case UPD_REPORTING: return "reporting";
  case UPD_DONE: return "done";
  case UPD_SUPERSEDED: return "superseded";
  default: return "unknown";
  }
}

int upd_final(int s) { return s == UPD_DONE || s == UPD_SUPERSEDED; }

int64_t upd_backoff_ms(const upd_policy *p, uint32_t attempts) {
  int64_t d = p->retry_base_ms;
  for (uint32_t i = 1; i < attempts && d < p->retry_max_ms; i++) d *= 2;
  return d > p->retry_max_ms ? p->retry_max_ms : d;
}

static void enter(upd_job *j, int64_t now, int state) {
  if (j->state != state) j->attempts = 0;
  j->state = state;
  j->next_try_ms = 0;
  j->updated_ms = now;
}

/* Stay in the state, one more failed attempt, next try after the backoff. */
static void again(upd_job *j, const upd_policy *p, int64_t now) {
  j->attempts++;
  j->next_try_ms = now + upd_backoff_ms(p, j->attempts);
  j->updated_ms = now;
}

void upd_fail(upd_job *j, int64_t now_ms, const char *reason) {
  enter(j, now_ms, UPD_REPORTING);
  snprintf(j->result, sizeof j->result, "failure");
  snprintf(j->reason, sizeof j->reason, "%s", reason);
}

void upd_after_ask(upd_job *j, const upd_policy *p, int64_t now_ms, int64_t exit_status,
                   int term_signal, int timed_out, int spawn_error) {
  int answer = spawn_error || timed_out ? 0 : release_answer(exit_status, term_signal);
  if (answer == REL_ACCEPTED) {
    enter(j, now_ms, UPD_DOWNLOADING);
  } else if (answer == REL_DECLINED) {
    upd_fail(j, now_ms, "hook_declined");
  } else {
    again(j, p, now_ms);
    if (p->ask_attempts && j->attempts >= p->ask_attempts) upd_fail(j, now_ms, "hook_declined");
  }
}

static int retryable_status(long s) { return s == 408 || s == 425 || s == 429 || s >= 500; }

void upd_after_download(upd_job *j, const upd_policy *p, int64_t now_ms, const upd_fetched *f) {
  char why[UPD_REASON_MAX + 1];
  if (f->range_mismatch) {
    /* The server's idea of the file is not ours: start over, now. */
    j->restart = 1;
    j->attempts++;
    j->next_try_ms = now_ms;
    j->updated_ms = now_ms;
    if (p->download_attempts && j->attempts >= p->download_attempts)
      upd_fail(j, now_ms, "download_failed: bad range");
    return;
  }
  if (f->transport_error) {
    /* Progress means the link works, just not for long: the count starts over, so a slow
     * line that drops every few megabytes still gets there. */
    if (f->received > 0) j->attempts = 0;
    again(j, p, now_ms);
    if (p->download_attempts && j->attempts >= p->download_attempts) {
      snprintf(why, sizeof why, "download_failed: %s",
               f->error_text && *f->error_text ? f->error_text : "transfer error");
      upd_fail(j, now_ms, why);
    }
    return;
  }
  if (f->status == 200 || f->status == 206) {
    if (j->size > 0 && f->file_size < j->size) {
      if (f->received > 0) j->attempts = 0; /* cut short without an error: get the rest */
      again(j, p, now_ms);
      if (p->download_attempts && j->attempts >= p->download_attempts)
        upd_fail(j, now_ms, "download_failed: short body");
      return;
    }
    j->restart = 0;
    enter(j, now_ms, UPD_VERIFYING);
    return;
  }
  if (f->status == 416) {
    /* The partial file already covers the whole package (a crash after the last byte), or
     * the package changed under it: check it, or start over. */
    if (j->size > 0 && f->file_size == j->size) {
      enter(j, now_ms, UPD_VERIFYING);
      return;
    }
    j->restart = 1;
    j->attempts++;
    j->next_try_ms = now_ms;
    j->updated_ms = now_ms;
    if (p->download_attempts && j->attempts >= p->download_attempts)
      upd_fail(j, now_ms, "download_failed: HTTP 416");
    return;
  }
  snprintf(why, sizeof why, "download_failed: HTTP %ld", f->status);
  if (retryable_status(f->status)) {
    again(j, p, now_ms);
    if (p->download_attempts && j->attempts >= p->download_attempts) upd_fail(j, now_ms, why);
    return;
  }
  j->restart = 1; /* whatever the partial file is, it is of no use now */
  upd_fail(j, now_ms, why);
}

void upd_after_verify(upd_job *j, const upd_policy *p, int64_t now_ms, int verdict) {
  switch (verdict) {
  case UPD_VERIFY_OK: enter(j, now_ms, UPD_INSTALLING); break;
  case UPD_VERIFY_MISMATCH:
    j->restart = 1;
    upd_fail(j, now_ms, "sha256_mismatch");
    break;
  case UPD_VERIFY_SHORT: enter(j, now_ms, UPD_DOWNLOADING); break;
  default:
    enter(j, now_ms, UPD_DOWNLOADING);
    j->restart = 1;
    again(j, p, now_ms);
    break;
  }
}

void upd_after_install(upd_job *j, int64_t now_ms, int64_t exit_status, int term_signal,
                       int timed_out, int spawn_error) {
  char why[UPD_REASON_MAX + 1];
  if (!spawn_error && !timed_out && !term_signal && exit_status == 0) {
    enter(j, now_ms, UPD_REPORTING);
    snprintf(j->result, sizeof j->result, "success");
    j->reason[0] = 0;
    return;
  }
  if (spawn_error) snprintf(why, sizeof why, "install_failed: cannot start");
  else if (timed_out) snprintf(why, sizeof why, "install_failed: timeout");
  else if (term_signal) snprintf(why, sizeof why, "install_failed: signal %d", term_signal);
  else snprintf(why, sizeof why, "install_failed: exit %lld", (long long)exit_status);
  upd_fail(j, now_ms, why);
}

void upd_after_report(upd_job *j, const upd_policy *p, int64_t now_ms, int transport_error,
                      long status) {
  if (!transport_error && status >= 200 && status < 300) {
    enter(j, now_ms, UPD_DONE);
    return;
  }
  again(j, p, now_ms);
}

int upd_offer(const upd_job *offer, const char *installed, int inst_has_code, int64_t inst_code,
              const upd_job *same, const upd_job *newest_active, int may_restart) {
  if (installed && release_cmp(offer->version, offer->has_code, offer->code, installed,
                               inst_has_code, inst_code) <= 0)
    return UPD_OFFER_NOT_NEWER;
  if (same) {
    if (!upd_final(same->state)) return UPD_OFFER_IN_PROGRESS;
    int failed = same->state == UPD_SUPERSEDED || strcmp(same->result, "success") != 0;
    return failed && may_restart ? UPD_OFFER_RESTART : UPD_OFFER_DONE;
  }
  if (newest_active && release_cmp(newest_active->version, newest_active->has_code,
                                   newest_active->code, offer->version, offer->has_code,
                                   offer->code) >= 0)
    return UPD_OFFER_OLDER;
  return UPD_OFFER_TAKE;
}

int upd_supersedes(const upd_job *newer, const upd_job *old) {
  if (strcmp(newer->app, old->app) != 0) return 0;
  if (old->state != UPD_ASKING && old->state != UPD_DOWNLOADING && old->state != UPD_VERIFYING)
    return 0;
  return release_cmp(newer->version, newer->has_code, newer->code, old->version, old->has_code,
                     old->code) > 0;
}
