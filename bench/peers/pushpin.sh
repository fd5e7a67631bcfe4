#!/bin/bash
# pushpin.sh start DIR PORT | stop DIR — Pushpin 1.36 (Debian) on 127.0.0.1:PORT in front of its
# origin, bench/peers/grip_origin.js (node) on PORT+1, which keeps each channel's history, answers
# GET /lp/CH?since=N at once or with a GRIP hold (Grip-Channel: CH; prev-id=N), and publishes what
# is POSTed to /pub/CH to Pushpin's HTTP publish API on PORT+2. Pushpin's ZeroMQ control sockets
# use PORT+3..PORT+5; every runtime file stays in DIR (no system service, nothing in /var/run).
#
# Pushpin's runner starts condure (client connections), pushpin-proxy, pushpin-handler and zurl
# (the proxy's HTTP client to the origin). Debian's /usr/lib/pushpin/internal.conf points the
# proxy at the system zurl service (ipc:///var/run/zurl/zurl-*), which we do not run: without the
# overrides below the proxy's requests to the origin go nowhere ("-> ... error" after the client
# gives up), so they point it at the runner's own zurl in DIR/run.
#
# Logging as the other systems run it: warnings only (PUSHPIN_LOG_LEVEL=2 logs every request,
# 3 everything; at 10,000 subscribers that is hundreds of MB and a share of the CPU). Pushpin's
# handler has no count of held requests to ask for over HTTP, but it reports each channel's
# subscriber count on its stats socket: herald-bench --peer-stats ipc://DIR/run/pushpin-stats.
#
# Prints the pids of the whole system, comma-separated (pushpin-handler first, then
# pushpin-proxy, condure, zurl and the origin), for herald-bench --pid, which sums their CPU and RSS.
. "$(dirname "$0")/lib.sh"
set -e
cmd=$1 dir=$2 port=${3:-18486}
here=$(cd "$(dirname "$0")" && pwd)
case $cmd in
start)
  if [ -f "$dir/pushpin.pid" ] && kill -0 "$(cat "$dir/pushpin.pid")" 2>/dev/null; then
    echo "pushpin.sh: already running in $dir" >&2
    exit 1
  fi
  mkdir -p "$dir/run" "$dir/log"
  ulimit -n "$(ulimit -Hn)"
  node "$here/grip_origin.js" $((port + 1)) "http://127.0.0.1:$((port + 2))/publish/" \
    >"$dir/origin.log" 2>&1 &
  echo $! >"$dir/origin.pid"
  echo "* 127.0.0.1:$((port + 1))" >"$dir/routes"
  sed -e "s#^rundir=.*#rundir=$dir/run#" -e "s#^logdir=.*#logdir=$dir/log#" \
      -e "s#^http_port=.*#http_port=127.0.0.1:$port#" \
      -e "s#^routesfile=.*#routesfile=$dir/routes#" \
      -e "s#^push_in_spec=.*#push_in_spec=tcp://127.0.0.1:$((port + 3))#" \
      -e "s#^push_in_sub_specs=.*#push_in_sub_specs=tcp://127.0.0.1:$((port + 4))#" \
      -e "s#^command_spec=.*#command_spec=tcp://127.0.0.1:$((port + 5))#" \
      -e "s#^push_in_http_port=.*#push_in_http_port=$((port + 2))#" \
      -e "s#^message_rate=.*#message_rate=1000000#" -e "s#^message_hwm=.*#message_hwm=1000000#" \
      -e "s#^updates_check=.*#updates_check=off#" \
      -e "s#^log_level=.*#log_level=${PUSHPIN_LOG_LEVEL:-1}#" \
      -e "s#^services=.*#services=condure,zurl,pushpin-proxy,pushpin-handler#" \
      -e 's#^\[proxy\]$#[proxy]\nzurl_out_specs=ipc://{rundir}/{ipc_prefix}zurl-in\nzurl_out_stream_specs=ipc://{rundir}/{ipc_prefix}zurl-in-stream\nzurl_in_specs=ipc://{rundir}/{ipc_prefix}zurl-out#' \
      /etc/pushpin/pushpin.conf >"$dir/pushpin.conf"
  grep -q '^zurl_out_specs=ipc://{rundir}' "$dir/pushpin.conf" ||
    { echo "pushpin.sh: no [proxy] section in /etc/pushpin/pushpin.conf to override" >&2; exit 1; }
  pushpin --config "$dir/pushpin.conf" >"$dir/pushpin.log" 2>&1 &
  echo $! >"$dir/pushpin.pid"
  wait_port $((port + 1))
  wait_port "$port"
  wait_port $((port + 2))
  i=0
  while [ $i -lt 50 ]; do
    pids=""
    for p in pushpin-handler pushpin-proxy condure zurl; do
      [ -s "$dir/run/$p.pid" ] && pids="$pids${pids:+,}$(cat "$dir/run/$p.pid")"
    done
    [ "$(echo "$pids" | tr ',' '\n' | wc -l)" = 4 ] && break
    sleep 0.1; i=$((i + 1))
  done
  echo "$pids,$(cat "$dir/origin.pid")" | tee "$dir/pids"
  ;;
stop)
  # The runner stops its children (it waits up to ~4 s for the proxy); any it left behind, or
  # all of them if it was killed, are stopped by the pids recorded at start.
  stop_pidfile "$dir/pushpin.pid"
  if [ -f "$dir/pids" ]; then
    for p in $(tr ',' ' ' <"$dir/pids"); do
      # only a process of this instance (a recorded pid may have been reused since)
      tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" | grep -q -e "$dir" -e grip_origin || continue
      echo "$p" >"$dir/one.pid"
      stop_pidfile "$dir/one.pid"
    done
    rm -f "$dir/pids"
  fi
  stop_pidfile "$dir/origin.pid"
  ;;
esac
