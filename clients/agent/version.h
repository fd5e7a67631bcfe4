/* version.h — the order of release versions, as the release contract defines it
 * (/work/notes/releases-contract.md, "Version order"; docs/protocols/releases.md):
 *
 *   - integer codes are compared when both sides have one;
 *   - otherwise the version strings, segment by segment (split on '.', '-', '+'): numeric
 *     segments numerically, others as byte strings, a numeric segment above a non-numeric one;
 *     a missing segment counts as the number 0, so "1.0" == "1.0.0" and "1.0.0-rc1" < "1.0.0".
 *
 * Pure functions, any thread. The broker has the same rule (hd__release_vercmp in
 * broker/release.c); the agent keeps its own few lines because linking that one pulls the
 * whole broker (store, writer, transports) into herald-agent. tests/unit/test_agent_version.c
 * checks that both agree on every pair it generates.
 */
#ifndef HERALD_AGENT_VERSION_H
#define HERALD_AGENT_VERSION_H

#include <stdint.h>

/* <0, 0 or >0 as a is older than, the same as, or newer than b. NULL sorts first. */
int version_cmp(const char *a, const char *b);

/* The same with codes: has_code says whether a side carries an integer code. */
int release_cmp(const char *va, int has_code_a, int64_t code_a, const char *vb, int has_code_b,
                int64_t code_b);

#endif
