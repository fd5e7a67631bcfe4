#!/usr/bin/env python3
"""bench/report.py RESULTS.jsonl — PERFORMANCE.md-ready tables from bench/run.sh's results:
per workload and system the median and the spread (min-max) over rounds, and Herald/peer
ratios of the medians. Failed runs are listed, not hidden."""
import json
import statistics
import sys
from collections import OrderedDict, defaultdict

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
runs = defaultdict(list)
failed = []
order = OrderedDict()
for r in rows:
    order.setdefault(r["workload"], OrderedDict()).setdefault(r["system"], None)
    if r.get("failed"):
        failed.append(r)
    else:
        runs[(r["workload"], r["system"])].append(r["result"])


def get(res, key):
    v = res
    for k in key.split("."):
        v = v.get(k) if isinstance(v, dict) else None
    return v


def stat(vals, fmt):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "–", None
    m = statistics.median(vals)
    if len(vals) == 1:
        return fmt.format(m), m
    return f"{fmt.format(m)} ({fmt.format(min(vals))}–{fmt.format(max(vals))})", m


FANOUT = [("deliveries/s", "deliveries_per_s", "{:,.0f}", True),
          ("p50 ms", "latency_ms.p50", "{:.1f}", False),
          ("p99 ms", "latency_ms.p99", "{:.1f}", False),
          ("lost", "lost", "{:.0f}", False),
          ("dups", "duplicates", "{:.0f}", False),
          ("CPU %", "broker_cpu_pct", "{:.0f}", False),
          ("RSS KiB", "broker_rss_kb", "{:,.0f}", False)]
INGEST = [("publishes/s", "publishes_per_s", "{:,.0f}", True),
          ("ack p50 ms", "ack_latency_ms.p50", "{:.1f}", False),
          ("ack p99 ms", "ack_latency_ms.p99", "{:.1f}", False),
          ("refused", "refused", "{:.0f}", False),
          ("CPU %", "broker_cpu_pct", "{:.0f}", False),
          ("RSS KiB", "broker_rss_kb", "{:,.0f}", False)]
TITLES = {
    "longpoll": "Long-poll broadcast (Herald long-poll vs Nchan long-poll)",
    "fanout100": "Persistent connections, 100 subscribers (Herald ipconn vs Mosquitto MQTT QoS 1)",
    "fanout1000": "Persistent connections, 1,000 subscribers (Herald ipconn vs Mosquitto MQTT QoS 1)",
    "ingest": "Durable ingest (Herald ZeroMQ vs Mosquitto QoS 1 vs NATS JetStream)",
    "halfpeak": "Herald long-poll latency at half its own peak broadcast rate",
}

print(f"Rounds per system: up to {max((r['round'] for r in rows), default=0)}. "
      "Cells: median (min–max over rounds).\n")
for w, systems in order.items():
    if w in ("heldpoll", "idle"):
        continue
    cols = INGEST if w == "ingest" else FANOUT
    first = next((runs[(w, s)][0] for s in systems if runs[(w, s)]), {})
    shape = (f"{first.get('connections')} connections x {first.get('window')} in flight, "
             f"{first.get('payload_bytes')}-byte payloads" if w == "ingest" else
             f"{first.get('devices')} subscribers x {first.get('messages')} messages, "
             f"rate {first.get('rate') or 'max'}")
    print(f"### {TITLES.get(w, w)}\n\n{shape}\n")
    print("| system | runs | " + " | ".join(c[0] for c in cols) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in cols) + " |")
    med = {}
    for s in systems:
        rs = runs[(w, s)]
        cells = []
        for name, key, fmt, main in cols:
            txt, m = stat([get(r, key) for r in rs], fmt)
            cells.append(txt)
            if main:
                med[s] = m
        print(f"| {s} | {len(rs)} | " + " | ".join(cells) + " |")
    if "herald" in med and len(med) > 1:
        print()
        for s, m in med.items():
            if s != "herald" and m and med["herald"]:
                print(f"Herald/{s} ({cols[0][0]}, medians): **{med['herald'] / m:.2f}x**  ")
    print()

for w, key, what in (("heldpoll", "rss_per_held_poll_bytes", "held long-poll"),
                     ("idle", "rss_per_conn_bytes", "idle ipconn connection")):
    for r in runs.get((w, "herald"), []):
        n = r.get("devices") or r.get("connections")
        extra = f", {r['anon_per_conn_bytes']:.0f} B anonymous" if "anon_per_conn_bytes" in r else ""
        print(f"- Broker RSS per {what}: **{r[key]:.0f} B** at {n:,} "
              f"({r.get('broker_rss_kb', r.get('broker_rss_kb_after'))} KiB total{extra})")
if failed:
    print("\nFailed runs (see stderr.log):\n")
    for f in failed:
        print(f"- round {f['round']} {f['workload']} {f['system']}")
