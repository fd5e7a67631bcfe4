/* static.c — serving the embedded browser files (see static.h). */
#include "static.h"

#include <stdio.h>
#include <string.h>

#include "herald/error.h"
#include "http.h"

const hd_static_file *hd__static_find(const char *path) {
  for (size_t i = 0; path && i < hd__static_nfiles; i++)
    if (strcmp(hd__static_files[i].path, path) == 0) return &hd__static_files[i];
  return NULL;
}

int hd__static_etag_matches(const char *inm, const char *etag) {
  if (!inm || !etag) return 0;
  size_t el = strlen(etag);
  const char *p = inm;
  for (;;) {
    while (*p == ' ' || *p == '\t' || *p == ',') p++;
    if (!*p) return 0;
    if (*p == '*') return 1;
    /* If-None-Match compares weakly (RFC 9110 13.1.2): W/"x" matches "x". */
    if (p[0] == 'W' && p[1] == '/') p += 2;
    size_t n = strcspn(p, ",");
    size_t t = n;
    while (t && (p[t - 1] == ' ' || p[t - 1] == '\t')) t--;
    if (t == el && memcmp(p, etag, el) == 0) return 1;
    p += n;
  }
}

static void h_file(void *ud, hd_http_req *r) {
  const hd_static_file *f = ud;
  char hdrs[512];
  snprintf(hdrs, sizeof hdrs,
           "ETag: %s\r\nCache-Control: %s\r\nX-Content-Type-Options: nosniff\r\n", f->etag,
           f->cache_control);
  if (hd__static_etag_matches(hd__http_header(r, "If-None-Match"), f->etag)) {
    hd__http_reply_ex(r, 304, NULL, hdrs, NULL, 0);
    return;
  }
  hd__http_reply_ex(r, 200, f->content_type, hdrs, (const char *)f->data, f->len);
}

static void h_demo_redirect(void *ud, hd_http_req *r) {
  static const char body[] = "{\"location\":\"/demo/\"}";
  hd__http_reply_ex(r, 301, "application/json", "Location: /demo/\r\n", body, sizeof body - 1);
}

int hd__static_init(hd_http_server *s) {
  int rc = 0;
  for (size_t i = 0; i < hd__static_nfiles && !rc; i++)
    rc = hd__http_route(s, "GET", hd__static_files[i].path, h_file,
                        (void *)&hd__static_files[i]);
  if (!rc && hd__static_find("/demo/"))
    rc = hd__http_route(s, "GET", "/demo", h_demo_redirect, NULL);
  return rc;
}
