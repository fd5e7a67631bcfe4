/* release.h — release notices: "a new version of something is available".
 *
 * A notice is a release when its payload is a map with "kind": "release". It does not go to
 * the app's handler: the agent asks the user through the `ask` hook (the notice as JSON on
 * stdin; exit 0 = yes, 1 = no, anything else = ask again later), or answers yes itself when no
 * hook is configured. The answer is recorded in the inbox's `releases` database and the notice
 * is acked.
 *
 * Each release record moves through one explicit state machine:
 *
 *     ASKING ──yes──▶ ACCEPTED ──▶ (DOWNLOADING ▶ INSTALLING ▶ REPORTING ▶ DONE)
 *        └────no────▶ DECLINED
 *
 * This version implements ASKING, ACCEPTED and DECLINED. The update service adds the states
 * in brackets: it starts from the records left in ACCEPTED (release_next() says what comes
 * next for a state), so nothing here changes shape when it arrives. The numbers are stored:
 * never renumber, only append.
 */
#ifndef HERALD_AGENT_RELEASE_H
#define HERALD_AGENT_RELEASE_H

#include <stddef.h>
#include <stdint.h>

enum release_state {
  REL_ASKING = 1,    /* the ask hook is being (or will be) asked */
  REL_ACCEPTED = 2,  /* the user said yes: the update flow picks it up from here */
  REL_DECLINED = 3,  /* the user said no: final */
};

/* What the agent does with a release in `state`. */
enum release_action {
  REL_DO_ASK = 1,    /* run the ask hook */
  REL_DO_NOTHING = 2 /* final in this version (ACCEPTED waits for the update service) */
};

static inline const char *release_state_name(int s) {
  switch (s) {
  case REL_ASKING: return "asking";
  case REL_ACCEPTED: return "accepted";
  case REL_DECLINED: return "declined";
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

#endif
