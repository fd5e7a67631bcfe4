/* static.h — the browser files heraldd serves from memory: the JS client library
 * (clients/js/herald.js at /v1/client/herald.js) and the demo page (clients/demo/ at /demo/).
 *
 * The files are compiled in: cmake/EmbedStatic.cmake turns them into a generated C table at
 * build time (re-run whenever one changes), so the daemon needs no file path at run time and a
 * build always serves exactly the client it was built with.
 *
 * What this module owns: that table and the GET routes for it. Answers carry the Content-Type
 * fixed at build time, a strong ETag (a SHA-256 prefix of the content), Cache-Control (the
 * client library: "public, max-age=300"; the demo: "no-cache", i.e. revalidate) and
 * X-Content-Type-Options: nosniff; a request whose If-None-Match names the ETag (or "*") gets
 * 304 with no body. GET /demo answers 301 to /demo/. The files are public: cross-origin pages
 * may load them (see api.c's origin policy).
 *
 * Loop thread only; the table is read-only data.
 */
#ifndef HERALD_STATIC_H
#define HERALD_STATIC_H

#include <stddef.h>

typedef struct hd_http_server hd_http_server;

typedef struct hd_static_file {
  const char *path;          /* URL path, e.g. "/demo/" */
  const char *content_type;
  const char *cache_control;
  const char *etag;          /* quoted, e.g. "\"3fa9...\"" */
  const unsigned char *data; /* len bytes, followed by a NUL that len does not count */
  size_t len;
} hd_static_file;

/* The generated table (build/.../generated/static_files.c). */
extern const hd_static_file hd__static_files[];
extern const size_t hd__static_nfiles;

/* Add a GET route for every file, and /demo -> /demo/. Returns 0 or an HD_E* code. */
int hd__static_init(hd_http_server *s);
/* The file served at exactly this URL path (no query), or NULL. */
const hd_static_file *hd__static_find(const char *path);
/* 1 if an If-None-Match header value (a list of entity tags, or "*") names etag. */
int hd__static_etag_matches(const char *if_none_match, const char *etag);

#endif
