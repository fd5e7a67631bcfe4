#!/bin/bash
# bench/run.sh — Herald and its peers side by side (make bench calls it).
#
#   bench/run.sh            3 rounds of every workload, alternating Herald and each peer
#   BENCH_QUICK=1 bench/run.sh   1 round, smaller N (a smoke test: a few minutes)
#   BENCH_ROUNDS=N          override the number of rounds
#   BENCH_OUT=DIR           where results go (default build/bench/<date>)
#   BENCH_WORKLOADS="..."   a subset of: longpoll longpoll10k fanout ingest ingestbatch ingesthttp
#                           latency memory updates smpp (default all)
#   BENCH_PORT_BASE=P       first of the 22 loopback ports used (default 18470)
#
# Every broker runs from its own binary on a private config in a temp dir, on loopback ports
# P..P+21, and is stopped at the end (also on Ctrl-C). Results: DIR/results.jsonl (one line
# per run), DIR/tables.md (medians, min-max, Herald/peer ratios; bench/report.py) and
# DIR/WORKLOAD-latency.png (every system's latency distribution, drawn with gnuplot).
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
bin=${HERALD_BUILD:-$root/build/release}/herald-bench
quick=${BENCH_QUICK:-0}
rounds=${BENCH_ROUNDS:-$([ "$quick" = 1 ] && echo 1 || echo 3)}
out=${BENCH_OUT:-$root/build/bench/$(date +%Y%m%d-%H%M%S)}
tmp=$(mktemp -d /tmp/herald-bench.XXXXXX)
mkdir -p "$out"
res=$out/results.jsonl
: >"$res"
ulimit -n "$(ulimit -Hn)"

if [ "$quick" = 1 ]; then
  LP_N=200; LP_M=50; F1_M=200; F2_M=50; ING_S=3; HOLD_N=2000; IDLE_N=2000; LAT_S=2
  LPX_N=2000; LPX_M=20
  UPD_N=200; UPD_B=1M; SMS_N=100; SMS_M=10
else
  LP_N=1000; LP_M=100; F1_M=500; F2_M=100; ING_S=5; HOLD_N=19000; IDLE_N=19000; LAT_S=3
  LPX_N=10000; LPX_M=100
  UPD_N=1000; UPD_B=4M; SMS_N=1000; SMS_M=20
fi

base=${BENCH_PORT_BASE:-18470}
HPORT=$base EPORT=$((base + 8)) LPORT=$((base + 9)) NPORT=$((base + 10)) DPORT=$((base + 12))
SPORT=$((base + 11))
MPORT=$((base + 13)) JPORT=$((base + 14)) PPORT=$((base + 16))
# A broker of someone else's on one of our ports would answer in our broker's place.
for p in $(seq "$base" $((base + 21))); do
  if (exec 3<>/dev/tcp/127.0.0.1/"$p") 2>/dev/null; then
    echo "bench: port $p is in use; choose other ports with BENCH_PORT_BASE" >&2
    exit 1
  fi
done
stop_all() {
  for s in herald:h zmq-echo:ze zmq-echo:de zmq-echo:se lp-echo:le nchan:nchan mosquitto:mq nats:nats pushpin:pp smsc:smsc; do
    "$here/peers/${s%%:*}.sh" stop "$tmp/${s##*:}" 2>/dev/null
  done
}
# Whatever way the script ends (done, Ctrl-C, an error), nothing it started keeps running.
trap 'stop_all; rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

"$here/peers/install.sh" >/dev/null || { echo "bench: installing the peers failed" >&2; exit 1; }
hpid=$("$here/peers/herald.sh" start "$tmp/h" $HPORT) || { echo "bench: heraldd did not start" >&2; exit 1; }
npid=$("$here/peers/nchan.sh" start "$tmp/nchan" $NPORT) || npid=
mpid=$("$here/peers/mosquitto.sh" start "$tmp/mq" $MPORT) || mpid=
jpid=$("$here/peers/nats.sh" start "$tmp/nats" $JPORT) || jpid=
# Not a broker: the ingest workload's floor (ZeroMQ and the load client, nothing stored).
epid=$("$here/peers/zmq-echo.sh" start "$tmp/ze" $EPORT) || epid=
# The durable floor: the same echo, each group of requests appended to a growing log in $tmp
# (the filesystem Herald's store is on) and fdatasync'd before its replies.
dpid=$("$here/peers/zmq-echo.sh" start "$tmp/de" $DPORT durable) || dpid=
# The durable floor with LMDB as the store: each group stored as Herald's store keeps publishes
# (a row each, their expiry entries in rows of 512) in one durable LMDB commit, with nothing
# else a broker does.
spid=$("$here/peers/zmq-echo.sh" start "$tmp/se" $SPORT lmdb) || spid=
# Not a broker either: the paced long-poll workloads' floor (loopback HTTP and the load client).
lpid=$("$here/peers/lp-echo.sh" start "$tmp/le" $LPORT) || lpid=
# Pushpin and its origin: several processes, their pids comma-separated for --pid
ppids=$("$here/peers/pushpin.sh" start "$tmp/pp" $PPORT) || ppids=
[ -z "$ppids" ] && echo "bench: pushpin did not start (see $tmp/pp); left out" >&2
H=(--http 127.0.0.1:$HPORT --zmq tcp://127.0.0.1:$((HPORT + 1)) --ipconn 127.0.0.1:$((HPORT + 3))
   --data-dir "$tmp/h/data" --pid "$hpid" --json)
pushpin_args() {
  P=(pushpin --peer 127.0.0.1:$PPORT --publish 127.0.0.1:$((PPORT + 1)) --sub-path /lp
     --pub-path /pub --peer-stats "ipc://$tmp/pp/run/pushpin-stats" --pid "$ppids" --json)
}
pushpin_args
# A fresh Pushpin after a run that may have overwhelmed it, so the next rounds do not inherit
# its backlog (or its absence, if it died).
restart_pushpin() {
  "$here/peers/pushpin.sh" stop "$tmp/pp"
  rm -rf "$tmp/pp"
  ppids=$("$here/peers/pushpin.sh" start "$tmp/pp" $PPORT) || ppids=
  [ -z "$ppids" ] && echo "bench: pushpin did not restart; left out from here on" >&2
  pushpin_args
}

# The machine's CPU time stolen by the hypervisor (/proc/stat "steal") and its total, in ticks:
# a shared VM's neighbours show up here, so each run says how noisy its machine was.
cpu_ticks() { awk '/^cpu /{t = 0; for (i = 2; i <= 9; i++) t += $i; print $9, t}' /proc/stat; }

# run WORKLOAD SYSTEM ROUND herald-bench-args... — one bounded run, one line of results.jsonl
run() {
  local w=$1 s=$2 r=$3
  shift 3
  echo "bench: round $r  $w  $s" >&2
  local j st0 tt0 st1 tt1 steal
  read -r st0 tt0 < <(cpu_ticks)
  j=$(timeout 300 "$bin" "$@" 2>>"$out/stderr.log" | tail -1)
  read -r st1 tt1 < <(cpu_ticks)
  steal=$(awk -v s=$((st1 - st0)) -v t=$((tt1 - tt0)) 'BEGIN { printf "%.1f", (t > 0 ? 100 * s / t : 0) }')
  case $j in
  \{*) echo "{\"workload\":\"$w\",\"system\":\"$s\",\"round\":$r,\"steal_pct\":$steal,\"result\":$j}" >>"$res" ;;
  *) echo "{\"workload\":\"$w\",\"system\":\"$s\",\"round\":$r,\"failed\":true}" >>"$res"
     echo "bench: $w $s failed (see $out/stderr.log)" >&2 ;;
  esac
  sleep 1
}

want() { case " ${BENCH_WORKLOADS:-longpoll longpoll10k fanout ingest ingestbatch ingesthttp latency memory updates smpp} " in *" $1 "*) return 0 ;; esac; return 1; }
for r in $(seq 1 "$rounds"); do
  want longpoll && {
  run longpoll herald "$r" longpoll "${H[@]}" --devices $LP_N --messages $LP_M --rate 0
  [ -n "$npid" ] && run longpoll nchan "$r" nchan --peer 127.0.0.1:$NPORT --pid "$npid" --json \
    --devices $LP_N --messages $LP_M --rate 0
  [ -n "$ppids" ] && run longpoll pushpin "$r" "${P[@]}" --devices $LP_N --messages $LP_M --rate 0
  }
  # The issue's reference point: 10,000 subscribers, where Pushpin is said to fall over on two
  # cores; whatever happens (errors, losses, a run that never completes) is recorded as it is.
  want longpoll10k && {
  run longpoll10k herald "$r" longpoll "${H[@]}" --devices $LPX_N --messages $LPX_M --rate 0 \
    --threads 2
  [ -n "$npid" ] && run longpoll10k nchan "$r" nchan --peer 127.0.0.1:$NPORT --pid "$npid" \
    --json --devices $LPX_N --messages $LPX_M --rate 0 --threads 2
  [ -n "$ppids" ] && run longpoll10k pushpin "$r" "${P[@]}" --devices $LPX_N --messages $LPX_M \
    --rate 0 --threads 2 && restart_pushpin
  }
  want fanout && {
  run fanout100 herald "$r" ipconn "${H[@]}" --devices 100 --messages $F1_M --rate 0
  [ -n "$mpid" ] && run fanout100 mosquitto "$r" mqtt-fanout --peer 127.0.0.1:$MPORT \
    --pid "$mpid" --json --devices 100 --messages $F1_M --rate 0
  run fanout1000 herald "$r" ipconn "${H[@]}" --devices 1000 --messages $F2_M --rate 0
  [ -n "$mpid" ] && run fanout1000 mosquitto "$r" mqtt-fanout --peer 127.0.0.1:$MPORT \
    --pid "$mpid" --json --devices 1000 --messages $F2_M --rate 0
  }
  want ingest && {
  run ingest herald "$r" ingest "${H[@]}" --connections 4 --window 256 --duration $ING_S
  [ -n "$mpid" ] && run ingest mosquitto "$r" mqtt-ingest --peer 127.0.0.1:$MPORT --pid "$mpid" \
    --json --connections 4 --window 256 --duration $ING_S
  [ -n "$jpid" ] && run ingest nats-jetstream "$r" nats-ingest --peer 127.0.0.1:$JPORT \
    --pid "$jpid" --json --connections 4 --window 256 --duration $ING_S
  [ -n "$epid" ] && run ingest zeromq-echo "$r" ingest --zmq tcp://127.0.0.1:$EPORT --key unused \
    --pid "$epid" --json --connections 4 --window 256 --duration $ING_S
  [ -n "$dpid" ] && run ingest durable-echo "$r" ingest --zmq tcp://127.0.0.1:$DPORT --key unused \
    --pid "$dpid" --json --connections 4 --window 256 --duration $ING_S
  [ -n "$spid" ] && run ingest lmdb-echo "$r" ingest --zmq tcp://127.0.0.1:$SPORT --key unused \
    --pid "$spid" --json --connections 4 --window 256 --duration $ING_S
  }
  # The same durable ingest with 100 messages per request ("batch"): each message still gets
  # its own id, acknowledged after the fsync'd commit. No peer has an equivalent.
  want ingestbatch && run ingestbatch herald "$r" ingest "${H[@]}" --connections 4 --window 16 \
    --batch 100 --duration $ING_S
  # The same durable ingest as HTTP publishes: 4 x 256 keep-alive connections, one publish in
  # flight each (the same number in flight as over ZeroMQ). No peer takes publishes over HTTP.
  want ingesthttp && run ingesthttp herald "$r" ingest-http "${H[@]}" --connections 4 \
    --window 256 --duration $ING_S
  # Update rush, Herald only (no peer serves update-check): a fresh app and release each round.
  want updates && run updates herald "$r" updates "${H[@]}" --devices $UPD_N \
    --package-size $UPD_B --threads 2
done

# Latency against offered load: broadcasts paced at doubling rates, LAT_S seconds each, over
# ipconn and long-poll to 100 devices (250..8000/s) and long-poll to 1,000 (25..800/s).
# report.py takes the highest rate Herald kept up with (delivered >= 97 % of offered) as its
# sustained peak and reads p99 at half of it. A burst's deliveries/s (the tables above) is no
# peak to halve: it comes from many messages per write and per poll answer, which a paced
# stream does not have.
# The same paced long-poll to Nchan and to the floor (lp-echo: loopback HTTP and the load client,
# nothing else), through the nchan adapter; ipconn's to Mosquitto QoS 1.
lat_lp_peers() {
  [ -n "$npid" ] && run "$1" nchan "$r" nchan --peer 127.0.0.1:$NPORT --pid "$npid" --json \
    --devices "$2" --messages $(($3 * LAT_S)) --rate "$3"
  [ -n "$lpid" ] && run "$1" longpoll-echo "$r" nchan --peer 127.0.0.1:$LPORT --pid "$lpid" \
    --json --devices "$2" --messages $(($3 * LAT_S)) --rate "$3"
}
want latency && for r in $(seq 1 "$rounds"); do
  for rate in 250 500 1000 2000 4000 8000; do
    run latency-ipconn100 herald "$r" ipconn "${H[@]}" --app "li$r-$rate" --devices 100 \
      --messages $((rate * LAT_S)) --rate $rate
    [ -n "$mpid" ] && run latency-ipconn100 mosquitto "$r" mqtt-fanout --peer 127.0.0.1:$MPORT \
      --pid "$mpid" --json --devices 100 --messages $((rate * LAT_S)) --rate $rate
    run latency-longpoll100 herald "$r" longpoll "${H[@]}" --devices 100 \
      --messages $((rate * LAT_S)) --rate $rate
    lat_lp_peers latency-longpoll100 100 $rate
  done
  for rate in 25 50 100 200 400 800; do
    run latency-longpoll1000 herald "$r" longpoll "${H[@]}" --devices $LP_N \
      --messages $((rate * LAT_S)) --rate $rate
    lat_lp_peers latency-longpoll1000 $LP_N $rate
  done
done
# Memory per held long-poll and per idle IP connection, at what the fd limit allows (once each),
# each on a fresh heraldd: on a broker that has already served the runs above, freed memory is
# reused and the RSS growth understates the cost.
fresh_herald() {
  "$here/peers/herald.sh" stop "$tmp/h"
  rm -rf "$tmp/h"
  hpid=$("$here/peers/herald.sh" start "$tmp/h" $HPORT)
  H=(--http 127.0.0.1:$HPORT --zmq tcp://127.0.0.1:$((HPORT + 1)) --ipconn 127.0.0.1:$((HPORT + 3))
     --data-dir "$tmp/h/data" --pid "$hpid" --json)
}
if want memory; then
  fresh_herald
  run heldpoll herald 1 longpoll "${H[@]}" --devices $HOLD_N --messages 1 --rate 0 --threads 2
  fresh_herald
  run idle herald 1 idle "${H[@]}" --devices $IDLE_N --threads 2
fi
# SMS escalation: a heraldd of its own with the sms transport bound to the SMSC peer and
# push_policy = sms (bench/peers/smsc.sh conf), so no other workload pays the policy's cost.
if want smpp; then
  if sport=$("$here/peers/smsc.sh" start "$tmp/smsc" 0); then
    "$here/peers/smsc.sh" conf "$sport" >"$tmp/sms.conf"
    export HERALD_PLUGINS_EXTRA=sms HERALD_CONF_EXTRA=$tmp/sms.conf
    fresh_herald
    unset HERALD_PLUGINS_EXTRA HERALD_CONF_EXTRA
    for r in $(seq 1 "$rounds"); do
      run smpp herald "$r" smpp "${H[@]}" --events tcp://127.0.0.1:$((HPORT + 2)) \
        --smsc-log "$tmp/smsc/smsc.jsonl" --smsc-pid "$(cat "$tmp/smsc/smsc.pid")" \
        --devices $SMS_N --messages $SMS_M --rate 0
    done
  else
    echo "bench: the SMSC peer did not start (make smsc-deps); smpp left out" >&2
  fi
fi
stop_all
python3 "$here/report.py" "$res" --plots "$out" --bench "$bin" >"$out/tables.md"
cat "$out/tables.md"
echo "bench: results in $out" >&2
