/* main.c — herald-agent: the handset's update agent (see README.md and agent.h). */
#include <curl/curl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "agent_conf.h"
#include "hdc_proto.h"
#include "inbox.h"
#include "log.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: herald-agent [-c FILE] [options]\n"
          "  -c, --config FILE        settings file (see clients/agent/README.md)\n"
          "      --broker HOST:PORT   the broker's ipconn listener (127.0.0.1:8473)\n"
          "      --device ID          this device's id (required)\n"
          "      --token TOKEN        its device token (or --token-file FILE)\n"
          "      --tenant NAME        default: the token's prefix\n"
          "      --tls-ca FILE        speak TLS, verifying the broker against these CAs (PEM)\n"
          "      --data-dir DIR       the agent's store (./var/agent)\n"
          "      --handler APP=CMD    run CMD (/bin/sh -c) for notices of APP; APP * = others\n"
          "      --ask CMD            release notices: exit 0 = yes, 1 = no (default: yes)\n"
          "      --install CMD        install hook: HERALD_ACTION, HERALD_FILE, ... (README)\n"
          "      --installed APP=VER  APP is installed at VER (until the agent installs one)\n"
          "      --http URL           the broker's HTTP base (default http://<broker host>:8470)\n"
          "      --msisdn DIGITS      this device's number, sent with update-check\n"
          "      --set KEY=VALUE      any other settings key\n"
          "      --log-level LEVEL    debug, info, warn, error\n"
          "      --dump               print the message center as JSON lines and exit\n"
          "  -V, --version\n");
}

static uv_signal_t sigterm, sigint, sigusr1;

static void on_usr1(uv_signal_t *s, int signum) { agent_update_check(s->data); }

static void on_signal(uv_signal_t *s, int signum) {
  hd__log(HD_LOG_INFO, "signal", "signal=%s", signum == SIGINT ? "SIGINT" : "SIGTERM");
  agent_stop(s->data);
}

int main(int argc, char **argv) {
  agent_conf conf;
  agent_conf_init(&conf);
  char err[1024];
  int dump = 0;
  enum { O_BROKER = 256, O_DEVICE, O_TOKEN, O_TOKEN_FILE, O_TENANT, O_DATA, O_HANDLER, O_ASK,
         O_SET, O_LOG, O_DUMP, O_TLS_CA, O_INSTALL, O_INSTALLED, O_HTTP, O_MSISDN };
  static const struct option lo[] = {{"config", 1, 0, 'c'},        {"broker", 1, 0, O_BROKER},
                                     {"device", 1, 0, O_DEVICE},   {"token", 1, 0, O_TOKEN},
                                     {"token-file", 1, 0, O_TOKEN_FILE},
                                     {"tenant", 1, 0, O_TENANT},   {"data-dir", 1, 0, O_DATA},
                                     {"handler", 1, 0, O_HANDLER}, {"ask", 1, 0, O_ASK},
                                     {"set", 1, 0, O_SET},         {"log-level", 1, 0, O_LOG},
                                     {"dump", 0, 0, O_DUMP},       {"version", 0, 0, 'V'},
                                     {"tls-ca", 1, 0, O_TLS_CA},
                                     {"install", 1, 0, O_INSTALL},
                                     {"installed", 1, 0, O_INSTALLED},
                                     {"http", 1, 0, O_HTTP},
                                     {"msisdn", 1, 0, O_MSISDN},
                                     {"help", 0, 0, 'h'},          {0, 0, 0, 0}};
  /* The file first, whatever its place on the line: flags override it. */
  for (int i = 1; i < argc - 1; i++)
    if (strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) {
      if (agent_conf_load(&conf, argv[i + 1], err, sizeof err)) {
        fprintf(stderr, "herald-agent: %s\n", err);
        return 2;
      }
    }
  int o;
  while ((o = getopt_long(argc, argv, "c:Vh", lo, NULL)) != -1) {
    const char *key = NULL;
    char section[200] = "", kv[4096];
    const char *val = optarg;
    switch (o) {
    case 'c': continue;
    case 'V': printf("herald-agent 0.1.0 (ipconn protocol %d)\n", HDC_PROTO_VERSION); return 0;
    case 'h': usage(stdout); return 0;
    case O_BROKER: key = "broker"; break;
    case O_DEVICE: key = "device"; break;
    case O_TOKEN: key = "token"; break;
    case O_TOKEN_FILE: key = "token_file"; break;
    case O_TENANT: key = "tenant"; break;
    case O_DATA: key = "data_dir"; break;
    case O_ASK: key = "ask"; break;
    case O_LOG: key = "log_level"; break;
    case O_TLS_CA: key = "tls_ca"; break;
    case O_INSTALL: key = "install"; break;
    case O_HTTP: key = "http"; break;
    case O_MSISDN: key = "msisdn"; break;
    case O_DUMP: dump = 1; continue;
    case O_HANDLER:
    case O_INSTALLED:
    case O_SET: {
      snprintf(kv, sizeof kv, "%s", optarg);
      char *eq = strchr(kv, '=');
      if (!eq) {
        fprintf(stderr, "herald-agent: %s wants NAME=VALUE\n", argv[optind - 2]);
        return 2;
      }
      *eq = 0;
      val = eq + 1;
      if (o == O_HANDLER || o == O_INSTALLED) {
        snprintf(section, sizeof section, "app %.150s", kv);
        key = o == O_HANDLER ? "handler" : "installed";
      } else {
        key = kv;
      }
      break;
    }
    default: usage(stderr); return 2;
    }
    if (agent_conf_set(&conf, section, key, val, err, sizeof err)) {
      fprintf(stderr, "herald-agent: %s\n", err);
      return 2;
    }
  }
  if (optind != argc) {
    usage(stderr);
    return 2;
  }
  if (!dump && agent_conf_finish(&conf, err, sizeof err)) {
    fprintf(stderr, "herald-agent: %s\n", err);
    return 2;
  }
  hd__log_set_level(hd__log_level_from_name(conf.log_level));
  inbox *ib;
  if (inbox_open(conf.data_dir, conf.map_size, &ib, err, sizeof err)) {
    fprintf(stderr, "herald-agent: %s\n", err);
    return 1;
  }
  if (dump) {
    inbox_dump(ib, stdout);
    inbox_close(ib);
    agent_conf_free(&conf);
    return 0;
  }
  signal(SIGPIPE, SIG_IGN); /* a handler that does not read its stdin must not kill us */
  /* Before any thread: libcurl's global state (OpenSSL's too) is set up once, here. */
  if (curl_global_init(CURL_GLOBAL_DEFAULT)) {
    fprintf(stderr, "herald-agent: libcurl did not initialise\n");
    return 1;
  }
  uv_loop_t loop;
  uv_loop_init(&loop);
  agent *a;
  if (agent_new(&loop, &conf, ib, &a)) {
    fprintf(stderr, "herald-agent: out of memory\n");
    return 1;
  }
  uv_signal_init(&loop, &sigterm);
  uv_signal_init(&loop, &sigint);
  uv_signal_init(&loop, &sigusr1);
  sigterm.data = sigint.data = sigusr1.data = a;
  uv_signal_start(&sigterm, on_signal, SIGTERM);
  uv_signal_start(&sigint, on_signal, SIGINT);
  uv_signal_start(&sigusr1, on_usr1, SIGUSR1); /* "check for updates now" */
  /* The agent's own handles keep the loop alive; the signal watchers must not, so that the
   * loop also ends when the agent stops by itself (a final deny). */
  uv_unref((uv_handle_t *)&sigterm);
  uv_unref((uv_handle_t *)&sigint);
  uv_unref((uv_handle_t *)&sigusr1);
  uv_run(&loop, UV_RUN_DEFAULT);
  int code = agent_exit_code(a);
  uv_close((uv_handle_t *)&sigterm, NULL);
  uv_close((uv_handle_t *)&sigint, NULL);
  uv_close((uv_handle_t *)&sigusr1, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  agent_free(a);
  int lc = uv_loop_close(&loop);
  if (lc) hd__log(HD_LOG_WARN, "loop_not_empty", "error=%s", uv_strerror(lc));
  inbox_close(ib);
  hd__log(HD_LOG_INFO, "agent_stopped", "exit=%d", code);
  agent_conf_free(&conf);
  curl_global_cleanup();
  return code;
}
