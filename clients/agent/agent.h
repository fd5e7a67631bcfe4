/* agent.h — herald-agent's core: one authenticated ipconn connection kept up with
 * reconnects, every notice stored in the inbox before anything else happens, handlers run one
 * notice at a time (or `parallel`), acks sent once a notice is settled.
 *
 *   receive ──▶ inbox (PENDING) ──▶ handler / ask hook ──exit 0──▶ handled ──▶ ack
 *      │ already handled: ack again          └─ other: retry later (backoff), then FAILED+ack
 *      └ no handler for the app: UNROUTED, kept, ack
 *
 * Reconnects: exponential backoff with jitter between reconnect_min and reconnect_max, reset
 * by a connection that got its welcome; a goaway's retry hint (and alternative address) is
 * followed; a deny "auth" or "version" is final (the process exits with status 3).
 *
 * Release notices, once answered, and update-check answers go to the update service
 * (update.h), which the agent starts and stops with itself.
 * Loop thread only.
 */
#ifndef HERALD_AGENT_H
#define HERALD_AGENT_H

#include <uv.h>

#include "agent_conf.h"
#include "inbox.h"

typedef struct agent agent;

/* Start on loop: recover the inbox, connect, run what is pending. The agent owns nothing of
 * conf or ib; both must outlive it. */
int agent_new(uv_loop_t *loop, const agent_conf *conf, inbox *ib, agent **out);
/* Stop: close the connection, stop running handlers (their notices stay pending), close every
 * handle; the loop then ends. */
void agent_stop(agent *a);
/* Ask the broker for updates now (SIGUSR1): see update.h. */
void agent_update_check(agent *a);
/* The process exit status the agent asks for (0, or 3 after a final deny). */
int agent_exit_code(const agent *a);
/* Free; after the loop has ended. */
void agent_free(agent *a);

#endif
