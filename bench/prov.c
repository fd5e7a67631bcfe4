/* prov.c — registrations and /metrics over Herald's HTTP API (see prov.h). */
#include "prov.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "httpc.h"

#define PROV_CONNS 32

typedef struct prov {
  const opts *o;
  const char *key;
  char *first;
  size_t stride;
  long n, next, done, failed;
} prov;

typedef struct prov_conn {
  prov *p;
  hb_conn *c;
  hb_reg *r;
  char body[128];
} prov_conn;

static hb_reg *reg_at(prov *p, long i) { return (hb_reg *)(p->first + (size_t)i * p->stride); }

static void prov_next(prov_conn *pc);

static void on_registered(hb_conn *c, void *ud, int status, const char *body, size_t len) {
  prov_conn *pc = ud;
  json_t *j = status == 201 ? json_loadb(body, len, 0, NULL) : NULL;
  const char *tok = json_string_value(json_object_get(j, "token"));
  if (tok && strlen(tok) < sizeof pc->r->token) {
    snprintf(pc->r->token, sizeof pc->r->token, "%s", tok);
  } else {
    if (!pc->p->failed)
      fprintf(stderr, "herald-bench: registering %s: answer %d %.*s\n", pc->r->id, status,
              (int)(len > 200 ? 200 : len), body);
    pc->p->failed++;
  }
  json_decref(j);
  pc->p->done++;
  prov_next(pc);
}

static void prov_next(prov_conn *pc) {
  prov *p = pc->p;
  if (p->next >= p->n) {
    hb_conn_close(pc->c);
    pc->c = NULL;
    return;
  }
  pc->r = reg_at(p, p->next++);
  char path[256];
  snprintf(path, sizeof path, "/v1/apps/%s/registrations", p->o->app);
  snprintf(pc->body, sizeof pc->body, "{\"device\":\"%s\"}", pc->r->id);
  if (hb_conn_request(pc->c, "POST", path, p->key, pc->body, on_registered, pc))
    on_registered(pc->c, pc, -1, "", 0);
}

int hb_provision(const opts *o, const char *key, const char *prefix, hb_reg *first,
                 size_t stride, long n, double *secs) {
  prov p = {.o = o, .key = key, .first = (char *)first, .stride = stride, .n = n};
  char run[16];
  snprintf(run, sizeof run, "%lx", (unsigned long)(now_ns() & 0xffffff));
  for (long i = 0; i < n; i++)
    snprintf(reg_at(&p, i)->id, sizeof first->id, "%s-%s-%ld", prefix, run, i);
  struct sockaddr_in addr;
  uv_ip4_addr(o->url_host, o->http_port, &addr);
  uv_loop_t loop;
  uv_loop_init(&loop);
  prov_conn pcs[PROV_CONNS];
  int npc = n < PROV_CONNS ? (int)n : PROV_CONNS;
  uint64_t t0 = now_ns();
  for (int i = 0; i < npc; i++) {
    pcs[i] = (prov_conn){.p = &p, .c = hb_conn_new(&loop, &addr)};
    prov_next(&pcs[i]);
  }
  while (p.done < n) uv_run(&loop, UV_RUN_ONCE);
  uv_run(&loop, UV_RUN_DEFAULT); /* the connections' sockets finish closing */
  uv_loop_close(&loop);
  *secs = (now_ns() - t0) / 1e9;
  if (p.failed) fprintf(stderr, "herald-bench: %ld of %ld registrations failed\n", p.failed, n);
  return p.failed ? 1 : 0;
}

typedef struct scrape {
  const char *name;
  double value;
  int done;
} scrape;

static void on_metrics(hb_conn *c, void *ud, int status, const char *body, size_t len) {
  scrape *s = ud;
  char needle[128];
  snprintf(needle, sizeof needle, "\n%s ", s->name);
  const char *p = status == 200 ? strstr(body, needle) : NULL;
  s->value = p ? atof(p + strlen(needle)) : -1;
  s->done = 1;
}

double hb_metric(const opts *o, const char *name) {
  struct sockaddr_in addr;
  uv_ip4_addr(o->url_host, o->http_port, &addr);
  uv_loop_t loop;
  uv_loop_init(&loop);
  scrape s = {name, -1, 0};
  hb_conn *c = hb_conn_new(&loop, &addr);
  if (hb_conn_request(c, "GET", "/metrics", NULL, NULL, on_metrics, &s) == 0)
    while (!s.done) uv_run(&loop, UV_RUN_ONCE);
  hb_conn_close(c);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  return s.value;
}
