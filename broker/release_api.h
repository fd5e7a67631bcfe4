/* release_api.h — the HTTP routes of the release service (docs/protocols/releases.md):
 *
 * Publisher side (Authorization: Bearer <publish key>; acts for the key's tenant only):
 *   POST  /v1/apps/{appid}/releases?version=V[&notes=N][&rollout=P][&code=C][&required=1]
 *         body = the package (spooled to disk, up to [release] max_package; 413 beyond):
 *         201 the release, 200 when the same bytes were uploaded for V before, 409 when V
 *         exists with other bytes. Credentials and parameters are checked before the body is
 *         read.
 *   GET   /v1/apps/{appid}/releases              {"releases": [release, ...]} newest first
 *   GET   /v1/apps/{appid}/releases/{version}    the release
 *   PATCH /v1/apps/{appid}/releases/{version}    {"rollout": 0-100} | {"state": "active" |
 *         "paused" | "withdrawn"} | {"required": bool}, any combination: the release
 *   GET   /v1/reports[?app=A][&version=V]        {"reports": [per release counters]}
 * Device side (Authorization: Bearer <device token>; the token's tenant):
 *   POST  /v1/devices/{device}/update-check      {"inventory": [{"app","version"}],
 *         "msisdn"?} -> {"updates": [...]}
 *   POST  /v1/devices/{device}/install-reports   {"app","version","result","reason"?,
 *         "action"?} -> 201 {"ok": true}, after the commit
 * A release object is {"app","version","code","size","sha256","url","notes","rollout","state",
 * "created","tenant","required"}. An app or release of another tenant is 404, like one that
 * does not exist. Loop thread only.
 */
#ifndef HERALD_RELEASE_API_H
#define HERALD_RELEASE_API_H

#include "broker.h"

/* Register the routes on b->http; b->releases must be open. 0 or HD_E*. */
int hd__release_api_init(hd_broker *b);

#endif
