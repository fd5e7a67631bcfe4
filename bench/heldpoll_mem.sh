#!/bin/bash
# heldpoll_mem.sh [N] — where the broker memory of a held long-poll goes (docs/PERFORMANCE.md).
#
# Starts a fresh heraldd (HERALD_BUILD, default build/release) on loopback ports PORT..PORT+3
# (HERALD_MEM_PORT, default 18690), registers N devices (default 10000) and holds N long-polls
# with `herald-bench longpoll --probe`. At the two phases herald-bench stops at ("idle": devices
# registered, nothing held; "held": every poll held, before anything is published) the probe
# (this script, "probe" mode) saves /proc/PID/smaps_rollup and glibc's malloc_stats(), which
# gdb makes heraldd print on its stderr (gdb -p, a few milliseconds' pause; no LD_PRELOAD, no
# rebuild; on some VMs gdb warns "Couldn't write extended state status" after the call, which
# did not disturb heraldd here). Then it prints the deltas per held poll. When the build has
# debug info (cmake -DCMAKE_BUILD_TYPE=RelWithDebInfo: same allocations as Release), it also
# walks up to 100 held connections in the live process (bench/heldpoll_objects.py, memory reads
# only) and prints what each block of a held poll costs on the heap, and the struct sizes from
# DWARF. Everything it starts it stops; files stay in $HERALD_MEM_DIR (default a new
# /tmp/herald-mem.XXXXXX), which it prints.
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")

if [ "${1:-}" = probe ]; then # probe DIR PHASE PID (called by herald-bench)
  dir=$2 phase=$3 pid=$4
  cp "/proc/$pid/smaps_rollup" "$dir/$phase.smaps"
  log=$dir/h/herald.log
  before=$(stat -c %s "$log")
  timeout 60 gdb -p "$pid" -batch -ex 'call (void)malloc_stats()' >"$dir/$phase.gdb" 2>&1
  sleep 0.3
  tail -c +$((before + 1)) "$log" | sed -n '/^Total (incl. mmap):/,/^max mmap bytes/p' >"$dir/$phase.malloc"
  if [ "$phase" = held ] && [ -f "$dir/debug" ]; then
    timeout 300 gdb -p "$pid" -batch -x "$here/heldpoll_objects.py" >"$dir/held.gdb-objects" 2>&1
    sed -n '/^HELD POLLS SAMPLED/,/TOTAL heap per held poll/p' "$dir/held.gdb-objects" >"$dir/held.objects"
  fi
  exit 0
fi

n=${1:-10000}
build=$(cd "${HERALD_BUILD:-$root/build/release}" && pwd) || exit 1
port=${HERALD_MEM_PORT:-18690}
dir=${HERALD_MEM_DIR:-$(mktemp -d /tmp/herald-mem.XXXXXX)}
mkdir -p "$dir"
rm -f "$dir/debug"
readelf -S "$build/heraldd" 2>/dev/null | grep -q debug_info && : >"$dir/debug"
command -v gdb >/dev/null || { echo "heldpoll_mem: needs gdb (apt-get install gdb)" >&2; exit 1; }
for p in $port $((port + 1)) $((port + 2)) $((port + 3)); do
  if (exec 3<>/dev/tcp/127.0.0.1/"$p") 2>/dev/null; then
    echo "heldpoll_mem: port $p is in use; set HERALD_MEM_PORT" >&2
    exit 1
  fi
done
ulimit -n "$(ulimit -Hn)"
export HERALD_BUILD=$build
pid=$("$here/peers/herald.sh" start "$dir/h" "$port") || exit 1
trap '"$here/peers/herald.sh" stop "$dir/h"' EXIT
"$build/herald-bench" longpoll --http 127.0.0.1:$port --zmq tcp://127.0.0.1:$((port + 1)) \
  --data-dir "$dir/h/data" --pid "$pid" --devices "$n" --messages 1 --rate 0 --threads 2 \
  --json --probe "$0 probe $dir" >"$dir/result.json" 2>"$dir/stderr.log"
echo "heraldd pid $pid, $n devices; files in $dir"
python3 - "$dir" "$n" "$build" <<'PY'
import json, os, re, subprocess, sys
d, n, build = sys.argv[1], int(sys.argv[2]), sys.argv[3]
res = json.load(open(f"{d}/result.json"))
held = res.get("held", n)
def kv(path, pat):
    out = {}
    for line in open(path):
        m = re.match(pat, line)
        if m: out[m.group(1).strip()] = int(m.group(2))
    return out
sm = {p: kv(f"{d}/{p}.smaps", r"^(\w+):\s+(\d+) kB") for p in ("idle", "held")}
ma = {p: kv(f"{d}/{p}.malloc", r"^([a-z ]+?)\s*=\s*(\d+)") for p in ("idle", "held")}
print(f"held polls: {held} (herald-bench: {res['rss_per_held_poll_bytes']} B RSS, "
      f"{res['anon_per_held_poll_bytes']} B anonymous per poll)\n")
print(f"{'smaps_rollup':<22}{'idle KiB':>12}{'held KiB':>12}{'B per poll':>12}")
for k in ("Rss", "Anonymous", "Private_Dirty", "Pss_File", "Shared_Clean", "Private_Clean"):
    if k in sm["idle"]:
        a, b = sm["idle"][k], sm["held"][k]
        print(f"{k:<22}{a:>12}{b:>12}{(b - a) * 1024 / held:>12.0f}")
print(f"\n{'malloc_stats (total)':<22}{'idle B':>12}{'held B':>12}{'B per poll':>12}")
for k in ("system bytes", "in use bytes"):
    if k in ma["idle"] and k in ma["held"]:
        a, b = ma["idle"][k], ma["held"][k]
        print(f"{k:<22}{a:>12}{b:>12}{(b - a) / held:>12.0f}")
if not ma["idle"] or not ma["held"]:
    print("(no malloc_stats: see *.gdb in the directory)")
if os.path.exists(f"{d}/held.objects"):
    print("\nheap blocks of one held poll (average over the sampled connections):")
    print(open(f"{d}/held.objects").read().rstrip())
if os.path.exists(f"{d}/debug"):
    types = ["struct hd_http_conn", "struct hd_http_req", "hd_hdr", "hd_kv", "struct hd_device",
             "struct hd_watch", "wlink", "uv_tcp_t", "uv_timer_t", "uv_shutdown_t", "http_parser"]
    def sizes(binary, names):
        cmd = ["gdb", "-batch"] + sum((["-ex", f"p sizeof({t})"] for t in names), []) + [binary]
        out = subprocess.run(cmd, capture_output=True, text=True).stdout
        return [int(x) for x in re.findall(r"^\$\d+ = (\d+)", out, re.M)]
    got = dict(zip(types, sizes(f"{build}/heraldd", types)))
    lp = sizes(f"{build}/transports/longpoll.so", ["poll_req"])
    if lp: got["poll_req (longpoll.so)"] = lp[0]
    chunk = lambda s: max(32, (s + 8 + 15) & ~15)  # glibc: 8-byte header, 16-byte alignment
    print(f"\n{'struct (debug info)':<28}{'sizeof':>8}{'malloc chunk':>14}")
    for t, s in got.items():
        print(f"{t:<28}{s:>8}{chunk(s):>14}")
PY
