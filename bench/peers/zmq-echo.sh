#!/bin/bash
# zmq-echo.sh start DIR PORT [durable|lmdb] | stop DIR — `herald-bench zmq-echo` on
# tcp://127.0.0.1:PORT: a ZeroMQ ROUTER that answers every request as an accepted publish and
# does nothing else. The ingest workload runs against it as its floor: what ZeroMQ and the load
# client allow here. With "durable", each group of requests is first appended to DIR/log and
# fdatasync'd (--sync-file, --sync-grow: the file grows, as a store that keeps what it is given
# does): the floor of durable ingest on DIR's filesystem. With "lmdb", each group is stored in
# an LMDB environment in DIR/lmdb as Herald's store keeps publishes (a row each, their expiry
# entries 512 a row, one durable commit per group; --sync-lmdb): the floor of durable ingest
# with LMDB as the store.
. "$(dirname "$0")/lib.sh"
set -e
cmd=$1 dir=$2 port=${3:-18478} mode=${4:-}
case $cmd in
start)
  sync=()
  [ "$mode" = durable ] && sync=(--sync-file "$dir/log" --sync-grow)
  [ "$mode" = lmdb ] && mkdir -p "$dir/lmdb" && sync=(--sync-lmdb "$dir/lmdb")
  bench_server_start zmq-echo "$dir" "$port" --zmq "tcp://127.0.0.1:$port" "${sync[@]}"
  ;;
stop) stop_pidfile "$dir/zmq-echo.pid" ;;
esac
