/* api.h — the broker's own HTTP routes (transports add theirs through the plugin ABI):
 *
 *   POST /v1/apps/{appid}/messages        publish (Bearer publish key), 202 {"id"} after commit
 *   POST /v1/apps/{appid}/registrations   register a device for an app, 201 {"device","token"}
 *        - Bearer publish key + {"device": id}: provision (creates the device if new);
 *        - Bearer device token + {"device": id}: add the app to that existing device (the app
 *          must be open to self-registration);
 *        - no credentials, no device: a new unguessable device (open apps only, rate-limited
 *          per client address). The tenant is ?tenant= or the Herald-Tenant header, default
 *          "default".
 *   POST   /v1/devices/{d}/token          rotate the device's tokens, 200 {"device","token"}
 *          (Bearer publish key or the device's current token); every older token stops working
 *   DELETE /v1/devices/{d}/token          revoke every token of the device, 204 (publish key)
 *   GET  /metrics                          Prometheus text
 *   GET  /healthz                          {"status": "ok"} or 503 while stopping
 *   GET  /v1/client/herald.js, /demo/...   the embedded browser files (static.c)
 *
 * It also installs the cross-origin policy (CORS, see http.h): a page of another origin may use
 * the API of the tenant its request acts for (publish key's tenant; the tenant a device token
 * names; else ?tenant=, Herald-Tenant or "default") when that tenant's allowed_origins lists
 * the origin; a preflight passes when any tenant lists it; the embedded files are public.
 *
 * Every error is JSON {"error", "message"}; a wrong key is 401; an app of another tenant (or
 * none) is 404 and reveals nothing else. Loop thread only.
 */
#ifndef HERALD_API_H
#define HERALD_API_H

#include "broker.h"

int hd__api_init(hd_broker *b);

#endif
