# Sourced by the peer scripts: wait_port PORT (bounded, 15 s), stop_pidfile FILE,
# bench_server_start NAME DIR PORT ARG... (the floors: herald-bench's own servers).
wait_port() {
  i=0
  while [ $i -lt 150 ]; do
    if (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; then return 0; fi
    sleep 0.1; i=$((i + 1))
  done
  echo "port $1 did not open" >&2
  return 1
}
stop_pidfile() {
  [ -f "$1" ] || return 0
  pid=$(cat "$1")
  kill "$pid" 2>/dev/null || true
  i=0
  while kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$1"
}
# `herald-bench NAME ARG...` in the background (HERALD_BUILD's, else this tree's release build),
# its log and pid file in DIR as NAME.log and NAME.pid; waits for PORT and prints the pid.
bench_server_start() {
  local name=$1 dir=$2 port=$3 build
  shift 3
  build=${HERALD_BUILD:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/build/release}
  mkdir -p "$dir"
  "$build/herald-bench" "$name" "$@" >"$dir/$name.log" 2>&1 &
  echo $! >"$dir/$name.pid"
  wait_port "$port"
  cat "$dir/$name.pid"
}
