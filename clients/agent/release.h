/* release.h — release notices and the update flow's state machine.
 *
 * Two records, both in the agent's LMDB (inbox.h):
 *
 * 1. A release *notice* (a pushed message whose payload is a map with "kind": "release"),
 *    keyed by its message id in `releases`. It does not go to the app's handler: the agent
 *    asks the user through the `ask` hook (the notice as JSON on stdin; exit 0 = yes, 1 = no,
 *    anything else = ask again later), or answers yes itself without a hook:
 *
 *        ASKING ──yes──▶ ACCEPTED          (an update job is created, already asked)
 *           ├────no────▶ DECLINED          (an update job reporting "hook_declined")
 *           └─not newer than installed, or already being updated──▶ IGNORED (nobody asked)
 *
 * 2. An update *job*, one per (app, version), keyed by both in `updates`. Notices (once
 *    answered) and update-check offers create them; one (app, version) has one job, so it is
 *    never installed twice at once:
 *
 *     ASKING ──0──▶ DOWNLOADING ──complete──▶ VERIFYING ──sha256 ok──▶ INSTALLING ──▶ REPORTING ──2xx──▶ DONE
 *       │ 1 / gave up  │ 4xx, or gave up        │ mismatch                │ exit≠0          ▲ retried until 2xx
 *       └──────────────┴────────────────────────┴─────────────────────────┴──────(failure)──┘
 *     a newer version of the same app offered before INSTALLING ──▶ SUPERSEDED (nothing reported)
 *
 *    ASKING is only for update-check offers (a notice was asked before its job existed). A
 *    failed download is retried with backoff and resumes from the partial file; a download
 *    that made progress does not count as a failed attempt. Every state is stored; a restart
 *    continues where the job stood (INSTALLING runs the install hook again: hooks must be
 *    idempotent).
 *
 * Everything in this header is pure (no I/O, no clock): the agent's update service
 * (update.c) feeds outcomes in and stores what comes out; tests/unit/test_agent_release.c
 * walks the machine. The state numbers are stored: never renumber, only append.
 */
#ifndef HERALD_AGENT_RELEASE_H
#define HERALD_AGENT_RELEASE_H

#include <stddef.h>
#include <stdint.h>

/* ---- notices ---- */
enum release_state {
  REL_ASKING = 1,    /* the ask hook is being (or will be) asked */
  REL_ACCEPTED = 2,  /* the user said yes: the update job takes over */
  REL_DECLINED = 3,  /* the user said no: final (its job reports "hook_declined") */
  REL_IGNORED = 4,   /* not newer than the installed version, or already in progress: final */
};

/* What the agent does with a release notice in `state`. */
enum release_action {
  REL_DO_ASK = 1,    /* run the ask hook */
  REL_DO_NOTHING = 2 /* decided: settle the notice */
};

static inline const char *release_state_name(int s) {
  switch (s) {
  case REL_ASKING: return "asking";
  case REL_ACCEPTED: return "accepted";
  case REL_DECLINED: return "declined";
  case REL_IGNORED: return "ignored";
  default: return "unknown";
  }
}

static inline int release_next(int state) {
  return state == REL_ASKING ? REL_DO_ASK : REL_DO_NOTHING;
}

/* The state an answer of the ask hook leads to: exit 0 = ACCEPTED, 1 = DECLINED, else 0
 * (no answer: ask again later). */
static inline int release_answer(int64_t exit_status, int term_signal) {
  if (term_signal) return 0;
  return exit_status == 0 ? REL_ACCEPTED : exit_status == 1 ? REL_DECLINED : 0;
}

/* 1 if the msgpack payload is a map whose "kind" is the string "release". */
int release_is_notice(const uint8_t *data, size_t len);

/* ---- update jobs ---- */
enum update_state {
  UPD_ASKING = 1,      /* the ask hook decides (update-check offers) */
  UPD_DOWNLOADING = 2, /* fetch the package into <data_dir>/downloads/<app>-<version>.part */
  UPD_VERIFYING = 3,   /* SHA-256 of the complete file against the release's */
  UPD_INSTALLING = 4,  /* the install hook */
  UPD_REPORTING = 5,   /* result decided: POST install-reports until the broker answers 2xx */
  UPD_DONE = 6,        /* reported: final */
  UPD_SUPERSEDED = 7,  /* a newer version of the app took its place: final, not reported */
};

#define UPD_APP_MAX 128
#define UPD_VERSION_MAX 128
#define UPD_URL_MAX 2048
#define UPD_REASON_MAX 256 /* the contract's bound on a report's reason */

typedef struct upd_job {
  char app[UPD_APP_MAX + 1];
  char version[UPD_VERSION_MAX + 1];
  int has_code;
  int64_t code;
  int64_t size;            /* bytes, 0 = unknown */
  char sha256[65];         /* lowercase hex */
  char url[UPD_URL_MAX + 1];
  uint64_t notice;         /* the notice's message id, 0 = from an update-check */
  int state;               /* enum update_state */
  uint32_t attempts;       /* failures in the current state (reset when it changes) */
  int64_t next_try_ms;     /* not before (Unix ms) */
  int restart;             /* DOWNLOADING: throw the partial file away first */
  char etag[200];          /* the package's ETag, for If-Range */
  char store[80];          /* X-Herald-Store of the download (the tenant it came through) */
  /* Decided at INSTALLING (or when it failed before): */
  char action[8];          /* "install" | "upgrade" */
  char from[UPD_VERSION_MAX + 1]; /* the version it replaces, "" for an install */
  char result[8];          /* "success" | "failure" | "" (not decided) */
  char reason[UPD_REASON_MAX + 1];
  int64_t created_ms, updated_ms;
} upd_job;

/* The retry knobs the machine needs (from the agent's settings). */
typedef struct upd_policy {
  int64_t retry_base_ms, retry_max_ms; /* backoff: base, doubling per attempt, up to max */
  uint32_t ask_attempts;               /* unanswered asks before "hook_declined"; 0 = never */
  uint32_t download_attempts;          /* failed downloads without progress; 0 = retry forever */
} upd_policy;

const char *upd_state_name(int s);
/* 1 for DONE and SUPERSEDED. */
int upd_final(int s);
/* The backoff after `attempts` failures (1 = the first). */
int64_t upd_backoff_ms(const upd_policy *p, uint32_t attempts);

/* A result is known: REPORTING with it (reason "" for a success). */
void upd_fail(upd_job *j, int64_t now_ms, const char *reason);

/* The ask hook ended (the runner's view of it). ASKING -> DOWNLOADING, REPORTING
 * ("hook_declined": exit 1, or no answer ask_attempts times), or ASKING again later. */
void upd_after_ask(upd_job *j, const upd_policy *p, int64_t now_ms, int64_t exit_status,
                   int term_signal, int timed_out, int spawn_error);

/* One download attempt, as far as the state machine cares. */
typedef struct upd_fetched {
  int transport_error;     /* nonzero: no complete HTTP answer (libcurl's code) */
  const char *error_text;  /* libcurl's text for it */
  long status;             /* HTTP status, 0 when none */
  int64_t received;        /* body bytes written to the file in this attempt */
  int64_t file_size;       /* the partial file's size afterwards */
  int range_mismatch;      /* a 206 whose range did not start at the partial file's end */
} upd_fetched;

/* DOWNLOADING -> VERIFYING (complete), DOWNLOADING again (retry with backoff, or at once
 * from 0 after a 416/bad range), or REPORTING ("download_failed: HTTP 404", or the transport's
 * error once download_attempts failed without progress). */
void upd_after_download(upd_job *j, const upd_policy *p, int64_t now_ms, const upd_fetched *f);

enum upd_verdict {
  UPD_VERIFY_OK = 0,
  UPD_VERIFY_MISMATCH = 1, /* complete but another SHA-256 (or longer than announced) */
  UPD_VERIFY_SHORT = 2,    /* shorter than announced: download the rest */
  UPD_VERIFY_IOERR = 3,    /* could not read it: download again */
};
/* VERIFYING -> INSTALLING, REPORTING "sha256_mismatch", or DOWNLOADING. */
void upd_after_verify(upd_job *j, const upd_policy *p, int64_t now_ms, int verdict);

/* INSTALLING -> REPORTING, success or "install_failed: exit N" / "signal N" / "timeout" /
 * "cannot start". */
void upd_after_install(upd_job *j, int64_t now_ms, int64_t exit_status, int term_signal,
                       int timed_out, int spawn_error);

/* REPORTING -> DONE on a 2xx, else REPORTING again after a backoff (forever). */
void upd_after_report(upd_job *j, const upd_policy *p, int64_t now_ms, int transport_error,
                      long status);

/* What to do with an offer (a notice's or an update-check's) of j->app at j->version. */
enum upd_offer_verdict {
  UPD_OFFER_TAKE = 0,        /* create the job */
  UPD_OFFER_RESTART = 1,     /* a failed job of this version: start it over */
  UPD_OFFER_NOT_NEWER = 2,   /* installed version is the same or newer: ignore */
  UPD_OFFER_IN_PROGRESS = 3, /* this version already has a job: ignore */
  UPD_OFFER_DONE = 4,        /* this version was already dealt with: ignore */
  UPD_OFFER_OLDER = 5,       /* a newer version of the app has a job under way: ignore */
};
/* installed: the inventory's version (NULL: not installed); same: the job of this
 * (app, version) if any; newest_active: the newest other unfinished job of the app, if any.
 * may_restart: the offer may restart a job that ended in failure (update-check at start or
 * on request). */
int upd_offer(const upd_job *offer, const char *installed, int inst_has_code, int64_t inst_code,
              const upd_job *same, const upd_job *newest_active, int may_restart);

/* 1 if an unfinished job `old` of the same app should give way to `newer` (it has not
 * started installing). */
int upd_supersedes(const upd_job *newer, const upd_job *old);

#endif
