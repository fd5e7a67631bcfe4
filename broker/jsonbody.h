/* jsonbody.h — JSON request bodies of the broker's own HTTP routes (api.c, release_api.c,
 * admin.c): one object, duplicate keys refused, unknown fields refused, each refusal answered
 * with 400 and a reason the client can act on. Loop thread only. */
#ifndef HERALD_JSONBODY_H
#define HERALD_JSONBODY_H

#include <jansson.h>

#include "http.h"

/* The body as a JSON object (an empty body is {} when allow_empty), owned by the caller; or
 * NULL after answering 400 (invalid JSON with line and column, or not an object). */
json_t *hd__json_body(hd_http_req *r, int allow_empty);
/* 1 if every field of j is in the NULL-terminated allowed list; else 0 after answering 400
 * naming the field (a typo such as "tll" must not silently mean "default"). */
int hd__json_only_fields(hd_http_req *r, json_t *j, const char *const *allowed);

#endif
