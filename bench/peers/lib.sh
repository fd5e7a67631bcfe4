# Sourced by the peer scripts: wait_port PORT (bounded, 15 s), stop_pidfile FILE.
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
