#!/bin/bash
# smsc.sh start DIR [PORT [SMSC.JS OPTIONS...]] | stop DIR | conf PORT — the SMSC that
# `herald-bench smpp` submits into: tests/smsc/smsc.js (the npm `smpp` package in server mode;
# `make smsc-deps` installs it) on 127.0.0.1:PORT with delivery receipts on (DELIVRD, 50 ms
# after each submit_sm_resp; more smsc.js options after PORT, e.g. --receipt-delay 0).
#
#   start  PORT 0 or none: a free port. Prints the port it listens on. Every PDU is one JSON line
#          in DIR/smsc.jsonl (smsc.js's stdout): pass it as herald-bench smpp --smsc-log.
#          smsc.js stops when its stdin closes; here stdin is a FIFO it holds open itself.
#   stop   stops it (the log stays).
#   conf   prints what heraldd needs besides the usual (bench/peers/herald.sh reads it from
#          HERALD_CONF_EXTRA, with HERALD_PLUGINS_EXTRA=sms):
#            [tenant default] push_policy = sms  — every message of the tenant's apps goes to the
#                devices with an MSISDN by SMS at once (the policy's 1 s tick); use a broker of
#                its own for this: other workloads' broadcasts would pay the policy's cost
#            [smsc main] → this SMSC, window 100 (submit_sm in flight; the default 10 would make
#                the window, not the broker, the limit), no rate limit.
. "$(dirname "$0")/lib.sh"
set -e
cmd=$1
root=$(cd "$(dirname "$0")/../.." && pwd)
case $cmd in
start)
  dir=$2 port=${3:-0}
  shift 3 2>/dev/null || shift $#
  if [ ! -d "$root/tests/smsc/node_modules/smpp" ]; then
    echo "smsc.sh: tests/smsc/node_modules/smpp is missing: run make smsc-deps" >&2
    exit 1
  fi
  mkdir -p "$dir"
  rm -f "$dir/stdin"
  mkfifo "$dir/stdin"
  : >"$dir/smsc.jsonl"
  # <> opens the FIFO read-write without waiting for a writer, so stdin never reaches EOF.
  node "$root/tests/smsc/smsc.js" --port "$port" --receipts yes "$@" <>"$dir/stdin" \
    >"$dir/smsc.jsonl" 2>"$dir/smsc.err" &
  echo $! >"$dir/smsc.pid"
  i=0
  while ! grep -q '"event":"listening"' "$dir/smsc.jsonl" && [ $i -lt 150 ]; do
    kill -0 "$(cat "$dir/smsc.pid")" 2>/dev/null || { cat "$dir/smsc.err" >&2; exit 1; }
    sleep 0.1; i=$((i + 1))
  done
  p=$(sed -n 's/.*"event":"listening","port":\([0-9]*\).*/\1/p' "$dir/smsc.jsonl" | head -1)
  [ -n "$p" ] || { echo "smsc.sh: smsc.js did not start (see $dir/smsc.err)" >&2; exit 1; }
  echo "$p"
  ;;
stop)
  stop_pidfile "$2/smsc.pid"
  rm -f "$2/stdin"
  ;;
conf)
  cat <<CONF
[tenant default]
push_policy = sms
[smsc main]
host = 127.0.0.1
port = $2
system_id = herald
password = secret
window = 100
CONF
  ;;
*) echo "usage: smsc.sh start DIR [PORT [smsc.js options]] | stop DIR | conf PORT" >&2; exit 2 ;;
esac
