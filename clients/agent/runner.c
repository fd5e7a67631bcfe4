/* runner.c — run one handler command with a document on its stdin (see runner.h). */
#include "runner.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

struct runner {
  uv_process_t proc;
  uv_pipe_t in;
  uv_timer_t timer;
  uv_write_t wreq;
  char *input;
  runner_cb cb;
  void *ud;
  int64_t exit_status;
  int term_signal, timed_out, spawn_error;
  int open;       /* handles not yet closed */
  int proc_live;  /* spawned and not exited */
};

static void part_closed(uv_handle_t *h) {
  runner *r = h->data;
  if (--r->open > 0) return;
  r->cb(r->ud, r->exit_status, r->term_signal, r->timed_out, r->spawn_error);
  free(r->input);
  free(r);
}

static void close_part(uv_handle_t *h) {
  if (!uv_is_closing(h)) uv_close(h, part_closed);
}

static void on_exit_cb(uv_process_t *p, int64_t status, int sig) {
  runner *r = p->data;
  r->proc_live = 0;
  r->exit_status = status;
  r->term_signal = sig;
  close_part((uv_handle_t *)&r->proc);
  close_part((uv_handle_t *)&r->timer);
  close_part((uv_handle_t *)&r->in); /* it may not have read everything: fine */
}

static void on_written(uv_write_t *w, int status) {
  runner *r = w->data;
  close_part((uv_handle_t *)&r->in); /* EOF for the handler (or EPIPE if it did not read) */
}

static void on_timeout(uv_timer_t *t) {
  runner *r = t->data;
  if (!r->proc_live) return;
  r->timed_out = 1;
  uv_process_kill(&r->proc, SIGKILL);
}

void runner_stop(runner *r) {
  if (r && r->proc_live) uv_process_kill(&r->proc, SIGTERM);
}

/* environ without the names `extra` sets, then `extra`. */
static char **make_env(const char *const *extra) {
  size_t ne = 0, nx = 0;
  while (environ[ne]) ne++;
  while (extra && extra[nx]) nx++;
  char **env = calloc(ne + nx + 1, sizeof *env);
  if (!env) return NULL;
  size_t k = 0;
  for (size_t i = 0; i < ne; i++) {
    const char *eq = strchr(environ[i], '=');
    size_t nl = eq ? (size_t)(eq - environ[i]) : strlen(environ[i]);
    int shadowed = 0;
    for (size_t j = 0; j < nx && !shadowed; j++)
      shadowed = strncmp(extra[j], environ[i], nl) == 0 && extra[j][nl] == '=';
    if (!shadowed) env[k++] = environ[i];
  }
  for (size_t j = 0; j < nx; j++) env[k++] = (char *)extra[j];
  return env;
}

int runner_start(uv_loop_t *loop, const char *cmd, const char *input, size_t len,
                 const char *const *env, uint64_t timeout_ms, runner_cb cb, void *ud,
                 runner **out) {
  runner *r = calloc(1, sizeof *r);
  if (!r) return UV_ENOMEM;
  r->cb = cb;
  r->ud = ud;
  r->input = malloc(len ? len : 1);
  char **envp = make_env(env);
  if (!r->input || !envp) {
    free(r->input);
    free(envp);
    free(r);
    return UV_ENOMEM;
  }
  memcpy(r->input, input, len);
  uv_pipe_init(loop, &r->in, 0);
  uv_timer_init(loop, &r->timer);
  r->in.data = r->timer.data = r->proc.data = r->wreq.data = r;
  r->open = 2;
  char *args[] = {"sh", "-c", (char *)cmd, NULL};
  uv_stdio_container_t stdio[3] = {
      {.flags = UV_CREATE_PIPE | UV_READABLE_PIPE, .data.stream = (uv_stream_t *)&r->in},
      {.flags = UV_INHERIT_FD, .data.fd = 1},
      {.flags = UV_INHERIT_FD, .data.fd = 2},
  };
  uv_process_options_t po = {
      .exit_cb = on_exit_cb,
      .file = "/bin/sh",
      .args = args,
      .env = envp,
      .stdio_count = 3,
      .stdio = stdio,
  };
  int rc = uv_spawn(loop, &r->proc, &po);
  free(envp);
  if (rc) {
    /* Report through the callback all the same, once the handles are closed. */
    r->spawn_error = rc;
    r->exit_status = -1;
    r->open = 3; /* uv_spawn initialised the handle: it must be closed too */
    close_part((uv_handle_t *)&r->proc);
    close_part((uv_handle_t *)&r->in);
    close_part((uv_handle_t *)&r->timer);
    *out = r;
    return 0;
  }
  r->open = 3;
  r->proc_live = 1;
  uv_timer_start(&r->timer, on_timeout, timeout_ms, 0);
  uv_buf_t b = uv_buf_init(r->input, (unsigned)len);
  if (uv_write(&r->wreq, (uv_stream_t *)&r->in, &b, 1, on_written))
    close_part((uv_handle_t *)&r->in);
  *out = r;
  return 0;
}
