#!/usr/bin/env python3
"""Crash safety under load: kill -9 heraldd at random moments while publishers (ZeroMQ and
HTTP) and devices (long-poll + ack) keep going; restart it and repeat. At the end every publish
that was acknowledged must have reached every device. Duplicates (a device receiving a message
again because its ack died with the broker) are allowed and reported.

    chaos.py [--duration S] [--min-kills N] [--devices D] [--seed X] [--json]

The short run (about a minute, at least 10 kills) is part of `make test`; `make chaos` runs the
long one. Only loopback addresses are used; every loop is bounded in time.
"""
import argparse
import http.client
import json
import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
import herald_harness as H  # noqa: E402

KEY = "c" * 40
APP = "chaos"


class Broker:
    """The daemon plus its current endpoints (they change at every restart)."""

    def __init__(self):
        self.d = H.Daemon({"tenant default": {"publish_key": KEY, "apps": APP},
                           "store": {"map_size": "256MiB"}}, name="chaos")
        self.lock = threading.Lock()
        self.up = threading.Event()
        self.generation = 0

    def start(self):
        self.d.start(timeout=60)
        with self.lock:
            self.generation += 1
        self.up.set()

    def kill(self):
        self.up.clear()
        self.d.kill9()

    def endpoints(self):
        with self.lock:
            return self.d.http_port, self.d.zmq_ingress, self.generation


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.acked = {}          # message id -> (source, seq): acknowledged to a publisher
        self.refused = 0
        self.delivered = {}      # device -> {id: times}

    def add_ack(self, mid, src, seq):
        with self.lock:
            self.acked[mid] = (src, seq)

    def add_delivery(self, dev, mid):
        with self.lock:
            per = self.delivered.setdefault(dev, {})
            per[mid] = per.get(mid, 0) + 1


def http_json(port, method, path, body=None, token=None, timeout=30):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = "Bearer " + token
        c.request(method, path, json.dumps(body) if body is not None else None, headers)
        r = c.getresponse()
        data = r.read()
        return r.status, (json.loads(data) if data else None)
    finally:
        c.close()


def zmq_publisher(b, tally, stop, window=32):
    seq = 0
    while not stop.is_set():
        if not b.up.wait(0.2):
            continue
        _, endpoint, gen = b.endpoints()
        s = H.zsocket(H.zmq.DEALER, endpoint, timeout=0.5)
        inflight = {}
        try:
            while not stop.is_set() and b.up.is_set() and b.endpoints()[2] == gen:
                while len(inflight) < window:
                    seq += 1
                    corr = seq.to_bytes(8, "big")
                    s.send_multipart([corr, b"", H.pack({"key": KEY, "app": APP,
                                                         "data": {"src": "z", "seq": seq}})])
                    inflight[corr] = seq
                try:
                    corr, _, body = s.recv_multipart()
                except H.zmq.Again:
                    continue  # the broker is gone or slow: requests in flight are unknown
                rep = H.unpack(body)
                n = inflight.pop(corr, None)
                if n is None:
                    continue
                if "id" in rep:
                    tally.add_ack(rep["id"], "z", n)
                else:
                    tally.refused += 1
        finally:
            s.close(0)


def http_publisher(b, tally, stop):
    seq = 0
    while not stop.is_set():
        if not b.up.wait(0.2):
            continue
        port, _, _ = b.endpoints()
        seq += 1
        try:
            st, body = http_json(port, "POST", "/v1/apps/%s/messages" % APP,
                                 {"data": {"src": "h", "seq": seq}}, KEY, timeout=5)
        except (OSError, http.client.HTTPException):
            continue  # killed mid-request: not acknowledged, nothing promised
        if st == 202:
            tally.add_ack(body["id"], "h", seq)
        else:
            tally.refused += 1


def device_loop(b, tally, stop, dev, token):
    cursor = None
    while not stop.is_set():
        if not b.up.wait(0.2):
            continue
        port, _, _ = b.endpoints()
        q = "?wait=2" + ("&cursor=%s" % cursor if cursor else "")
        try:
            st, body = http_json(port, "GET", "/v1/devices/%s/messages%s" % (dev, q), token=token,
                                 timeout=10)
            if st != 200:
                continue
            ids = [m["id"] for m in body["messages"]]
            for mid in ids:
                tally.add_delivery(dev, mid)
            cursor = body["cursor"]
            if ids:
                http_json(port, "POST", "/v1/devices/%s/acks" % dev, {"ids": ids}, token=token,
                          timeout=10)
        except (OSError, http.client.HTTPException, ValueError):
            # The broker died under us. After a restart, poll from the floor again: whatever
            # was not acked comes back (and counts as a duplicate if it had arrived).
            cursor = None


def drain(b, tally, dev, token):
    port, _, _ = b.endpoints()
    end = time.monotonic() + 120
    while time.monotonic() < end:
        st, body = http_json(port, "GET", "/v1/devices/%s/messages?max=1000" % dev, token=token)
        assert st == 200, (st, body)
        ids = [m["id"] for m in body["messages"]]
        if not ids:
            return
        for mid in ids:
            tally.add_delivery(dev, mid)
        st, _ = http_json(port, "POST", "/v1/devices/%s/acks" % dev, {"ids": ids}, token=token)
        assert st == 200
    raise AssertionError("drain of %s did not finish" % dev)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=60)
    ap.add_argument("--min-kills", type=int, default=10)
    ap.add_argument("--devices", type=int, default=4)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    rnd = random.Random(a.seed)
    b = Broker()
    tally = Tally()
    stop = threading.Event()
    b.start()
    port, _, _ = b.endpoints()
    tokens = {}
    for i in range(a.devices):
        dev = "dev%d" % i
        st, body = http_json(port, "POST", "/v1/apps/%s/registrations" % APP, {"device": dev}, KEY)
        assert st == 201, body
        tokens[dev] = body["token"]
    threads = [threading.Thread(target=zmq_publisher, args=(b, tally, stop), daemon=True),
               threading.Thread(target=http_publisher, args=(b, tally, stop), daemon=True)]
    threads += [threading.Thread(target=device_loop, args=(b, tally, stop, dev, tok), daemon=True)
                for dev, tok in tokens.items()]
    for t in threads:
        t.start()
    kills = 0
    t0 = time.monotonic()
    slow = 3 if H.SANITIZED else 1
    try:
        while kills < a.min_kills or time.monotonic() - t0 < a.duration:
            # Let it run a random while (often short: kills land during commits), then kill.
            time.sleep(rnd.uniform(0.2, 2.5) * slow)
            b.kill()
            kills += 1
            if time.monotonic() - t0 > a.duration * 3 + 300:
                break
            b.start()
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    if not b.d.running():
        b.start()
    for dev, tok in tokens.items():
        drain(b, tally, dev, tok)
    b.d.stop()
    lost = {dev: [m for m in tally.acked if m not in tally.delivered.get(dev, {})]
            for dev in tokens}
    dups = sum(n - 1 for per in tally.delivered.values() for n in per.values() if n > 1)
    report = {
        "seed": a.seed, "seconds": round(time.monotonic() - t0, 1), "kills": kills,
        "acknowledged": len(tally.acked),
        "acknowledged_zmq": sum(1 for s, _ in tally.acked.values() if s == "z"),
        "acknowledged_http": sum(1 for s, _ in tally.acked.values() if s == "h"),
        "refused": tally.refused, "devices": a.devices,
        "lost": sum(len(v) for v in lost.values()), "duplicates": dups,
    }
    if a.json:
        print(json.dumps(report))
    else:
        print("chaos: %(kills)d kills in %(seconds)s s (seed %(seed)d), %(acknowledged)d "
              "acknowledged publishes (%(acknowledged_zmq)d ZeroMQ, %(acknowledged_http)d HTTP), "
              "%(devices)d devices: lost %(lost)d, duplicates %(duplicates)d" % report)
    ok = report["lost"] == 0 and kills >= a.min_kills and report["acknowledged"] > 0
    if not ok:
        for dev, ids in lost.items():
            if ids:
                print("LOST for %s: %s" % (dev, ids[:20]), file=sys.stderr)
        print("1 passed, 0 failed" if ok else "0 passed, 1 failed")
        sys.exit(1)
    print("1 passed, 0 failed")


if __name__ == "__main__":
    main()
