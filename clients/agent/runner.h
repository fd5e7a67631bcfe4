/* runner.h — run one handler command: `/bin/sh -c COMMAND` with a document on its stdin, its
 * stdout and stderr going to the agent's, a few HERALD_* variables added to its environment,
 * and a time limit after which it is killed (SIGKILL) and counts as failed.
 *
 * The child stays in the agent's process group, so a supervisor that stops the group stops
 * running handlers too. Loop thread only; the runner frees itself after its callback.
 */
#ifndef HERALD_AGENT_RUNNER_H
#define HERALD_AGENT_RUNNER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct runner runner;

/* exit_status/term_signal as libuv reports them; timed_out when the limit killed it;
 * spawn_error when it could not start at all (a libuv error). */
typedef void (*runner_cb)(void *ud, int64_t exit_status, int term_signal, int timed_out,
                          int spawn_error);

/* env: extra "NAME=value" strings (NULL-terminated), copied. input is copied. The callback
 * always runs exactly once, later (never from inside runner_start). */
int runner_start(uv_loop_t *loop, const char *cmd, const char *input, size_t len,
                 const char *const *env, uint64_t timeout_ms, runner_cb cb, void *ud,
                 runner **out);
/* Ask it to stop (SIGTERM); the callback still runs. */
void runner_stop(runner *r);

#endif
