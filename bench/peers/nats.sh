#!/bin/bash
# nats.sh start DIR PORT | stop DIR — nats-server with JetStream on 127.0.0.1:PORT, file
# storage in DIR/js. herald-bench nats-ingest creates the stream itself.
. "$(dirname "$0")/lib.sh"
set -e
cmd=$1 dir=$2 port=${3:-18484}
case $cmd in
start)
  mkdir -p "$dir/js"
  cat >"$dir/nats.conf" <<CONF
listen: 127.0.0.1:$port
http: 127.0.0.1:$((port + 1))
max_payload: 1MB
jetstream {
  store_dir: "$dir/js"
  max_file_store: 4GB
  max_memory_store: 256MB
}
CONF
  nats-server -c "$dir/nats.conf" -l "$dir/nats.log" >"$dir/stdout.log" 2>&1 &
  echo $! >"$dir/nats.pid"
  wait_port "$port"
  cat "$dir/nats.pid"
  ;;
stop) stop_pidfile "$dir/nats.pid" ;;
esac
