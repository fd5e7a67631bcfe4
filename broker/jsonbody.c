/* jsonbody.c — JSON request bodies (see jsonbody.h). */
#include "jsonbody.h"

#include <stdio.h>
#include <string.h>

#include "herald/error.h"

json_t *hd__json_body(hd_http_req *r, int allow_empty) {
  size_t len;
  const char *body = hd__http_body(r, &len);
  if (len == 0 && allow_empty) return json_object();
  json_error_t e;
  json_t *j = json_loadb(body ? body : "", len, JSON_REJECT_DUPLICATES, &e);
  if (!j) {
    char msg[300];
    snprintf(msg, sizeof msg, "invalid JSON at line %d column %d: %s", e.line, e.column, e.text);
    hd__http_reply_error(r, HD_EINVAL, msg);
    return NULL;
  }
  if (!json_is_object(j)) {
    json_decref(j);
    hd__http_reply_error(r, HD_EINVAL, "body must be a JSON object");
    return NULL;
  }
  return j;
}

int hd__json_only_fields(hd_http_req *r, json_t *j, const char *const *allowed) {
  const char *k;
  json_t *v;
  json_object_foreach(j, k, v) {
    int ok = 0;
    for (const char *const *a = allowed; *a && !ok; a++) ok = strcmp(*a, k) == 0;
    if (!ok) {
      char msg[200];
      snprintf(msg, sizeof msg, "unknown field '%.100s'", k);
      hd__http_reply_error(r, HD_EINVAL, msg);
      return 0;
    }
  }
  return 1;
}
