#!/bin/bash
# zmq-echo.sh start DIR PORT [durable] | stop DIR — `herald-bench zmq-echo` on
# tcp://127.0.0.1:PORT: a ZeroMQ ROUTER that answers every request as an accepted publish and
# does nothing else. The ingest workload runs against it as its floor: what ZeroMQ and the load
# client allow here. With "durable", each group of requests is first appended to DIR/log and
# fdatasync'd (--sync-file, --sync-grow: the file grows, as a store that keeps what it is given
# does): the floor of durable ingest on DIR's filesystem.
. "$(dirname "$0")/lib.sh"
set -e
cmd=$1 dir=$2 port=${3:-18478} mode=${4:-}
build=${HERALD_BUILD:-$(cd "$(dirname "$0")/../.." && pwd)/build/release}
case $cmd in
start)
  mkdir -p "$dir"
  sync=()
  [ "$mode" = durable ] && sync=(--sync-file "$dir/log" --sync-grow)
  "$build/herald-bench" zmq-echo --zmq "tcp://127.0.0.1:$port" "${sync[@]}" >"$dir/zmq-echo.log" 2>&1 &
  echo $! >"$dir/zmq-echo.pid"
  wait_port "$port"
  cat "$dir/zmq-echo.pid"
  ;;
stop) stop_pidfile "$dir/zmq-echo.pid" ;;
esac
