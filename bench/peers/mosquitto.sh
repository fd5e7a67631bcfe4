#!/bin/bash
# mosquitto.sh start DIR PORT | stop DIR — Mosquitto on 127.0.0.1:PORT, anonymous, persistence
# on (database in DIR; Mosquitto writes it on autosave_interval and at exit, not per message),
# no limit on queued or in-flight QoS 1 messages so none is dropped.
. "$(dirname "$0")/lib.sh"
set -e
cmd=$1 dir=$2 port=${3:-18483}
case $cmd in
start)
  mkdir -p "$dir"
  cat >"$dir/mosquitto.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
persistence true
persistence_location $dir/
autosave_interval 30
max_queued_messages 0
max_inflight_messages 0
max_connections -1
log_dest file $dir/mosquitto.log
log_type error
log_type warning
CONF
  ulimit -n "$(ulimit -Hn)"
  mosquitto -c "$dir/mosquitto.conf" >"$dir/stdout.log" 2>&1 &
  echo $! >"$dir/mosquitto.pid"
  wait_port "$port"
  cat "$dir/mosquitto.pid"
  ;;
stop) stop_pidfile "$dir/mosquitto.pid" ;;
esac
