#!/bin/bash
# lp-echo.sh start DIR PORT [THREADS] | stop DIR — `herald-bench lp-echo` on 127.0.0.1:PORT: a
# minimal long-poll server speaking the part of Nchan's protocol the nchan adapter uses, that
# answers every held poll with each message at once and does nothing else (no auth, store or
# JSON).
# The paced long-poll workloads run against it as their floor: what loopback HTTP and the load
# client allow here. THREADS (default 1) loop threads share the port (SO_REUSEPORT): the floor
# for a server that fans out on every core.
. "$(dirname "$0")/lib.sh"
set -e
cmd=$1 dir=$2 port=${3:-18479}
case $cmd in
start) bench_server_start lp-echo "$dir" "$port" --http "127.0.0.1:$port" --threads "${4:-1}" ;;
stop) stop_pidfile "$dir/lp-echo.pid" ;;
esac
