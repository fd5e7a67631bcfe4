#!/bin/bash
# herald.sh start DIR PORT | stop DIR — heraldd from this build on 127.0.0.1: HTTP PORT, ZeroMQ
# ingress PORT+1, events PORT+2, ipconn PORT+3; data in DIR/data; long-poll and ipconn loaded.
# HERALD_PLUGINS_EXTRA=sms loads more transports; HERALD_CONF_EXTRA=FILE is appended to the
# config (bench/peers/smsc.sh conf PORT writes the one of herald-bench smpp); HERALD_STORE_CONF
# adds lines to [store] (an A/B of a store setting: HERALD_STORE_CONF='ack_delay = 0').
# HERALD_TENANTS=N declares N more tenants (t0000..., each its own random publish key, any app)
# before 'default', the one herald-bench uses: a platform of many stores.
. "$(dirname "$0")/lib.sh"
set -e
cmd=$1 dir=$2 port=${3:-18470}
build=${HERALD_BUILD:-$(cd "$(dirname "$0")/../.." && pwd)/build/release}
case $cmd in
start)
  mkdir -p "$dir/data"
  cat >"$dir/herald.conf" <<CONF
data_dir = $dir/data
log_level = warn
[http]
listen = 127.0.0.1:$port
max_connections = 30000
max_connections_per_address = 0
[zmq]
ingress = tcp://127.0.0.1:$((port + 1))
events = tcp://127.0.0.1:$((port + 2))
[store]
# One broker serves every round: batched ingest alone stores millions of messages (kept for the
# default day), more than the default 1 GiB map. The map file only grows as it is used.
map_size = 32GiB
${HERALD_STORE_CONF:-}
[plugins]
dir = $build/transports
load = longpoll, ipconn${HERALD_PLUGINS_EXTRA:+, $HERALD_PLUGINS_EXTRA}
[transport ipconn]
listen = 127.0.0.1:$((port + 3))
CONF
  if [ "${HERALD_TENANTS:-0}" -gt 0 ]; then
    python3 - "$HERALD_TENANTS" >>"$dir/herald.conf" <<'PY'
import secrets, sys
for i in range(int(sys.argv[1])):
    print("[tenant t%04d]\npublish_key = %s\napps = *\n" % (i, secrets.token_urlsafe(32)))
print("[tenant default]\napps = *\n")  # last: a lookup by name walks past every other
PY
  fi
  [ -n "${HERALD_CONF_EXTRA:-}" ] && cat "$HERALD_CONF_EXTRA" >>"$dir/herald.conf"
  ulimit -n "$(ulimit -Hn)"
  "$build/heraldd" -c "$dir/herald.conf" >"$dir/herald.log" 2>&1 &
  echo $! >"$dir/herald.pid"
  wait_port "$port"
  i=0; while [ ! -s "$dir/data/tenants/default/publish.key" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
  cat "$dir/herald.pid"
  ;;
stop) stop_pidfile "$dir/herald.pid" ;;
esac
