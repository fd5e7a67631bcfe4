/* inbox.h — the handset's message center: herald-agent's own LMDB store
 * (<data_dir>/agent.mdb), written before anything is acked to the broker.
 *
 * Databases (keys are message ids, 8 bytes big-endian, so scans run oldest first):
 *   inbox     notices received and not yet handled (PENDING), and those kept for the user
 *             without a handler (UNROUTED) or given up on (FAILED). Header + the JSON the
 *             handler reads.
 *   handled   ids whose handler succeeded, until the broker confirms the ack ("acked"): a
 *             redelivered id found here is acked again, never handled twice.
 *   releases  release notices: the ask hook's answer (release.h).
 *   updates   update jobs, one per (app, version): where each stands (release.h). Key
 *             "<app>\0<version>"; value a format byte and the job as JSON.
 *   inventory what is installed: app -> {"version", "code"}; seeded from the settings, then
 *             written by successful installs (in the same transaction as their job).
 *
 * Every write is its own synchronous LMDB transaction (durable when the call returns). One
 * thread only (the agent's loop). Errors: 0 or a negative HD_E* code (herald/error.h).
 */
#ifndef HERALD_AGENT_INBOX_H
#define HERALD_AGENT_INBOX_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "release.h"

enum note_state {
  NOTE_PENDING = 0,  /* waiting for its handler (or its retry) */
  NOTE_UNROUTED = 1, /* no handler for its app: kept, acked; handled if one is configured */
  NOTE_FAILED = 2,   /* the handler failed max_attempts times: kept, acked */
};
enum note_kind { NOTE_NOTICE = 0, NOTE_RELEASE = 1 };

typedef struct note {
  uint64_t id;
  uint8_t state, kind;
  uint8_t confirmed;    /* UNROUTED/FAILED: the broker confirmed our ack */
  uint32_t attempts;    /* handler runs that failed */
  int64_t next_try_ms;  /* PENDING: not before (Unix ms) */
  int64_t expires_ms;   /* the broker's expiry of the message; 0 = none */
  int64_t received_ms;
  char app[129];
} note;

typedef struct inbox inbox;

/* Where a message id stands. */
enum { SEEN_NEW = 0, SEEN_PENDING = 1, SEEN_SETTLED = 2 /* handled, unrouted or failed */ };

int inbox_open(const char *data_dir, uint64_t map_size, inbox **out, char *err,
               size_t errlen);
void inbox_close(inbox *ib);

int inbox_seen(inbox *ib, uint64_t id, int *seen);
/* Store a new note with its JSON (copied). */
int inbox_put(inbox *ib, const note *n, const char *json, size_t len);
/* Rewrite a note's header, keeping its JSON. HD_ENOTFOUND if gone. */
int inbox_update(inbox *ib, const note *n);
/* A note and a malloc'd NUL-terminated copy of its JSON (caller frees). */
int inbox_get(inbox *ib, uint64_t id, note *n, char **json, size_t *len);
/* Handled: remove from the inbox and remember in `handled`, in one transaction. */
int inbox_handled(inbox *ib, uint64_t id, int64_t now_ms);
/* Drop a note (expired). */
int inbox_delete(inbox *ib, uint64_t id);
/* The broker confirmed these acks: forget handled ids, mark settled notes confirmed. */
int inbox_confirm(inbox *ib, const uint64_t *ids, size_t n);
/* Every id whose ack the broker has not confirmed: handled ids and unconfirmed settled notes.
 * *ids is malloc'd (caller frees). */
int inbox_unconfirmed(inbox *ib, uint64_t **ids, size_t *n);
/* Call cb for every note, oldest first; a non-zero return stops the walk. */
int inbox_each(inbox *ib, int (*cb)(void *ud, const note *n), void *ud);
/* Forget handled ids older than this (a backstop: confirmations normally do it). */
int inbox_prune_handled(inbox *ib, int64_t before_ms);

/* ---- releases (release.h defines the states) ---- */
typedef struct release_rec {
  uint64_t id;
  uint8_t state;
  int64_t updated_ms;
  char app[129];
} release_rec;

int inbox_release_put(inbox *ib, const release_rec *r, const char *json, size_t len);
int inbox_release_get(inbox *ib, uint64_t id, release_rec *r);

/* ---- update jobs and the inventory ---- */
typedef struct inv_entry {
  char app[UPD_APP_MAX + 1];
  char version[UPD_VERSION_MAX + 1];
  int has_code;
  int64_t code;
  int64_t updated_ms;
} inv_entry;

int inbox_job_put(inbox *ib, const upd_job *j);
/* HD_ENOTFOUND when (app, version) has no job. */
int inbox_job_get(inbox *ib, const char *app, const char *version, upd_job *j);
/* Call cb for every job (app order); a non-zero return stops the walk. Callbacks may write. */
int inbox_job_each(inbox *ib, int (*cb)(void *ud, const upd_job *j), void *ud);
/* A successful install: the job and the inventory entry in one transaction. */
int inbox_job_installed(inbox *ib, const upd_job *j, const inv_entry *e);

/* HD_ENOTFOUND when the app is not installed. */
int inbox_inv_get(inbox *ib, const char *app, inv_entry *e);
int inbox_inv_put(inbox *ib, const inv_entry *e);
/* Every entry, app order; *out is malloc'd (caller frees). */
int inbox_inv_all(inbox *ib, inv_entry **out, size_t *n);

/* Write every inbox note, handled id, release, update job and inventory entry as JSON lines
 * (for --dump). */
int inbox_dump(inbox *ib, FILE *f);

#endif
