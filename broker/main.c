/* main.c — heraldd: parse the command line, load the config, run the broker until a signal. */
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "broker.h"
#include "herald/error.h"
#include "log.h"
#include "plugin.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: heraldd [-c FILE] [--check]\n"
          "  -c, --config FILE  configuration file (default: built-in defaults, see\n"
          "                     conf/herald.conf for every key)\n"
          "      --check        validate the configuration and exit\n"
          "  -V, --version      print the version\n");
}

/* Connections are file descriptors: take all the kernel lets this process have. */
static void raise_nofile(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
    hd__log(HD_LOG_INFO, "fd_limit", "soft=%llu hard=%llu", (unsigned long long)rl.rlim_cur,
            (unsigned long long)rl.rlim_max);
}

int main(int argc, char **argv) {
  const char *path = NULL;
  int check = 0;
  static const struct option opts[] = {{"config", required_argument, 0, 'c'},
                                       {"check", no_argument, 0, 'k'},
                                       {"version", no_argument, 0, 'V'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
  int o;
  while ((o = getopt_long(argc, argv, "c:Vh", opts, NULL)) != -1) {
    switch (o) {
    case 'c': path = optarg; break;
    case 'k': check = 1; break;
    case 'V': printf("heraldd 0.1.0 (transport ABI %d.%d)\n", HD_TRANSPORT_ABI_MAJOR,
                     HD_TRANSPORT_ABI_MINOR);
      return 0;
    case 'h': usage(stdout); return 0;
    default: usage(stderr); return 2;
    }
  }
  if (optind != argc) {
    usage(stderr);
    return 2;
  }
  /* The loop allocates and frees in bursts (thousands of requests a turn, then their replies).
   * With glibc's defaults the freed top of the heap goes back to the kernel after each burst
   * and the next one faults the same pages in again: a quarter of the loop's time under
   * ingest. Keep up to 32 MiB of free heap and grow it 4 MiB at a time; only blocks of 1 MiB
   * and more get their own mapping. (An environment GLIBC_TUNABLES still overrides.) */
  if (!getenv("GLIBC_TUNABLES")) {
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
    mallopt(M_TRIM_THRESHOLD, 32 << 20);
    mallopt(M_TOP_PAD, 4 << 20);
  }
  hd_config cfg;
  char err[1024] = "";
  if (hd__config_load(path, &cfg, err, sizeof err)) {
    fprintf(stderr, "heraldd: %s\n", err);
    return 1;
  }
  if (check) {
    if (hd__plugins_check(&cfg, err, sizeof err)) {
      fprintf(stderr, "heraldd: %s\n", err);
      hd__config_free(&cfg);
      return 1;
    }
    printf("%s: ok\n", cfg.source);
    hd__config_free(&cfg);
    return 0;
  }
  raise_nofile();
  /* A peer that closes while we write must cost an EPIPE on that socket, not the process:
   * libuv writes with write(2), which raises SIGPIPE by default. */
  signal(SIGPIPE, SIG_IGN);
  uv_loop_t loop;
  uv_loop_init(&loop);
  hd_broker b;
  int rc = hd__broker_init(&b, &loop, &cfg, err, sizeof err);
  if (rc == 0) rc = hd__broker_start(&b, err, sizeof err);
  if (rc) {
    hd__log(HD_LOG_ERROR, "start_failed", "error=%s reason=\"%s\"", hd_err_code(rc), err);
    fprintf(stderr, "heraldd: %s\n", err);
    hd__broker_stop(&b);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  hd__broker_free(&b);
  int lc = uv_loop_close(&loop);
  if (lc) hd__log(HD_LOG_WARN, "loop_not_empty", "error=%s", uv_strerror(lc));
  return rc ? 1 : 0;
}
