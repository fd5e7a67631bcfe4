#!/usr/bin/env python3
"""herald-bench's ingest scenarios against the real heraldd, over ZeroMQ (`ingest`) and HTTP
(`ingest-http`): what the client counts as acknowledged is what the broker counts as stored
(give or take the requests still in flight when the client stopped), every stored message is
the client's (data {"s": seq, "t": send time, "p": padding of --size - 24 bytes}), and a wrong
key is refused with a clear error and a failing exit code. The ingest figures of
docs/PERFORMANCE.md rest on these counts.
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from herald_harness import SLOW, HeraldTestCase, main  # noqa: E402
from ipconn_harness import HERALD_BENCH  # noqa: E402


class BenchIngest(HeraldTestCase):
    def bench(self, scenario, *args, key=None):
        d = self.d
        cmd = [HERALD_BENCH, scenario, "--http", "127.0.0.1:%d" % d.http_port,
               "--zmq", d.zmq_ingress, "--app", "news", "--duration", "1", "--json",
               "--connections", "2", "--window", "8", "--size", "64"] + list(args)
        cmd += ["--key", key] if key else ["--data-dir", d.data_dir]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60 * SLOW)
        self.assertNotRegex(p.stderr, r"Sanitizer|runtime error")
        return p

    def stored(self, ingress):
        return self.d.metric('herald_publishes_total{ingress="%s",result="ok"}' % ingress) or 0

    def check_counts(self, scenario, ingress):
        d = self.d
        before = self.stored(ingress)
        p = self.bench(scenario)
        self.assertEqual(p.returncode, 0, p.stderr)
        r = json.loads(p.stdout.strip().splitlines()[-1])
        self.assertEqual(r["scenario"], scenario)
        self.assertGreater(r["acked"], 0, r)
        self.assertEqual(r["refused"], 0, r)
        self.assertGreater(r["ack_latency_ms"]["p50"], 0, r)
        # Each of the 16 requests in flight at the end may have been stored after the client
        # stopped counting; nothing acknowledged may be missing.
        after = self.stored(ingress)
        self.assertGreaterEqual(after - before, r["acked"], (r, before, after))
        self.assertLessEqual(after - before, r["acked"] + 16, (r, before, after))
        return r

    def test_zmq_and_http_counts_match_the_broker(self):
        self.d = self.start_daemon()
        tok = self.d.provision("news", "dev")
        rz = self.check_counts("ingest", "zmq")
        rh = self.check_counts("ingest-http", "http")
        self.assertEqual(rh["connections"], 16)  # 2 x 8, one request in flight each
        # What the device gets is what the clients sent: oldest first, ZeroMQ's then HTTP's.
        msgs = self.d.poll("dev", tok, max=5)["messages"]
        self.assertEqual(len(msgs), 5)
        for m in msgs:
            self.assertEqual(sorted(m["data"]), ["p", "s", "t"])
            self.assertEqual(m["data"]["p"], "x" * 40)
        self.assertGreater(rz["publishes_per_s"], 0)

    def test_wrong_key_is_refused_with_the_reason(self):
        self.d = self.start_daemon()
        p = self.bench("ingest-http", key="not-the-key-0123456789abcdefghijklmnopq")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("refused: HTTP 401", p.stderr)
        r = json.loads(p.stdout.strip().splitlines()[-1])
        self.assertEqual(r["acked"], 0, r)
        self.assertGreater(r["refused"], 0, r)
        p = self.bench("ingest-http", "--batch", "10")
        self.assertEqual(p.returncode, 2)
        self.assertIn("one message per request", p.stderr)


if __name__ == "__main__":
    main()
