/* download_api.c — the download route: who may download which package (see download.h,
 * "the route"). The bytes themselves are download.c's. */
#include <stdio.h>
#include <string.h>

#include "broker.h"
#include "download.h"
#include "events.h"
#include "herald/error.h"
#include "http.h"
#include "release.h"

/* The device named by the request (?device=, else X-Herald-Device), authenticated as every
 * device endpoint does (host.c's device_auth): the token verifies for that device, and its
 * generation is the device's current one. 0 and *tenant, or HD_EAUTH (one answer for every
 * way of failing, so a token reveals nothing), or another HD_E* from the store. */
static int device_auth(hd_broker *b, hd_http_req *r, const char *device, hd_tenant **tenant) {
  const char *token = hd__http_bearer(r);
  hd_tenant *t;
  uint32_t gen;
  if (!token || !device || hd__token_verify(&b->tenants, device, token, &t, &gen))
    return HD_EAUTH;
  MDB_txn *txn;
  int rc = hd__store_rbegin(b->store, &txn);
  if (rc) return rc;
  hd_store_device sd;
  rc = hd__store_r_device(b->store, txn, t->num, device, &sd);
  hd__store_rend(b->store, txn);
  if (rc == HD_ENOTFOUND || (rc == 0 && sd.gen != gen)) return HD_EAUTH;
  if (rc) return rc;
  *tenant = t;
  return 0;
}

static void h_package(void *ud, hd_http_req *r) {
  hd_broker *b = ud;
  const char *app = hd__http_param(r, "app");
  const char *version = hd__http_param(r, "version");
  const char *device = hd__http_query(r, "device");
  if (!device) device = hd__http_header(r, "X-Herald-Device");
  hd_tenant *t = NULL;
  int rc = device_auth(b, r, device, &t);
  if (rc) {
    hd__http_reply_error(r, rc, rc == HD_EAUTH ? "a device id and that device's current token "
                                                 "are needed"
                                               : NULL);
    return;
  }
  hd_release_info ri;
  rc = hd__release_lookup(b->releases, t->num, app, version, &ri);
  if (rc) {
    hd__http_reply_error(r, rc, rc == HD_ENOTFOUND ? "no such release" : NULL);
    return;
  }
  if (ri.state == HD_REL_WITHDRAWN) {
    static const char gone[] =
        "{\"error\": \"withdrawn\", \"message\": \"this release was withdrawn\"}";
    hd__http_reply(r, 410, "application/json", gone, sizeof gone - 1);
    return;
  }
  if (!hd__release_in_rollout(t->name, app, version, device, ri.rollout_bp)) {
    hd__http_reply_error(r, HD_EFORBID, "this device is outside the release's rollout");
    return;
  }
  hd_download_spec sp = {
      .path = ri.path,
      .size = ri.size,
      .sha256 = ri.sha256,
      .tenant_num = t->num,
      .tenant = t->name,
      .app = app,
      .version = version,
      .device = device,
  };
  hd__download_serve(b->downloads, r, &sp);
}

/* Every transfer's end: an event for the operator's back end; a complete download counted
 * durably by the catalog (GET /v1/reports). */
static void on_download(void *ud, const hd_download_result *res) {
  hd_broker *b = ud;
  hd__events_download(b->events, res->tenant, res->device, res->app, res->version, res->bytes,
                      res->complete);
  if (res->complete)
    hd__release_count_download(b->releases, res->tenant_num, res->app, res->version);
}

int hd__download_routes(hd_broker *b) {
  int rc = hd__download_subscribe(b->downloads, on_download, b);
  static const char path[] = "/v1/apps/{app}/releases/{version}/package";
  rc = rc ? rc : hd__http_route(b->http, "GET", path, h_package, b);
  rc = rc ? rc : hd__http_route(b->http, "HEAD", path, h_package, b);
  return rc;
}
