/* update.h — herald-agent's update service: from an accepted release to a reported result.
 *
 * It owns the update jobs (release.h: one per (app, version), stored in the inbox's `updates`
 * database), the inventory (`inventory`), the update-check and every HTTP exchange with the
 * broker's release API (docs/protocols/releases.md):
 *
 *   offer (notice answered, or update-check answer)
 *     ─▶ [ask hook] ─▶ download (fetch.h: resumable, Bearer device token + ?device=)
 *     ─▶ SHA-256 check (libuv's thread pool) ─▶ install hook (install | upgrade)
 *     ─▶ inventory ─▶ POST /v1/devices/{device}/install-reports (until 2xx)
 *
 * Concurrency: one ask hook and one install hook at a time (a person answers one question at
 * a time; package managers lock), `downloads` downloads at once, reports in parallel. Nothing
 * here blocks the loop: hooks are child processes, HTTP runs on the fetch thread, hashing on
 * the thread pool, the rest are short LMDB transactions.
 *
 * update-check: POST /v1/devices/{device}/update-check with the inventory (and msisdn) at
 * start, after every reconnect, and on request (SIGUSR1); retried with backoff until it gets
 * an answer. The checks at start and on request may restart a job that ended in failure; the
 * ones after a reconnect do not (a flapping link must not download a bad package again and
 * again).
 *
 * Loop thread only. The updater borrows conf and ib (they outlive it).
 */
#ifndef HERALD_AGENT_UPDATE_H
#define HERALD_AGENT_UPDATE_H

#include <stdint.h>
#include <uv.h>

#include "agent_conf.h"
#include "inbox.h"

typedef struct updater updater;

enum { UPD_CHECK_START = 1, UPD_CHECK_RECONNECT = 2, UPD_CHECK_USER = 3 };

/* Seed the inventory from the settings, start the fetch thread, continue every unfinished
 * job. curl_global_init() must have run. */
int updater_new(uv_loop_t *loop, const agent_conf *conf, inbox *ib, updater **out);

/* A release notice (the JSON document the inbox keeps), before anyone is asked: what an
 * offer of it would come to (enum upd_offer_verdict), or -1 when it is not a complete release
 * (no version, url or sha256): then only the ask hook's answer is recorded. */
int updater_notice_verdict(updater *u, const char *notice_json);
/* The notice `id` was answered (REL_ACCEPTED or REL_DECLINED): its job starts (downloading,
 * or reporting "hook_declined"). Idempotent: a job that exists is left alone. */
void updater_notice_answered(updater *u, uint64_t id, const char *notice_json, int answer);

/* Ask the broker what to update (UPD_CHECK_*). Coalesced with a check in flight. */
void updater_check(updater *u, int why);

/* Stop: cancel downloads, stop hooks (their jobs stay where they were, for the next start),
 * close the handles. The updater frees itself in updater_free() once the loop has ended. */
void updater_stop(updater *u);
void updater_free(updater *u);

#endif
