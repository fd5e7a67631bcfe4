#!/usr/bin/env python3
"""herald-bench's `longpoll` scenario against the real heraldd: every device holding a long-poll
gets every broadcast exactly once, and what the client reports about how the burst reached them
(the poll answers that carried messages, the group commits the broadcasts took) agrees with
what happened: a device needs at least one answer and at most one per message, a paced stream
slower than a commit is a commit and an answer per message and device. The long-poll figures of
docs/PERFORMANCE.md rest on these counts.
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from herald_harness import SLOW, HeraldTestCase, main  # noqa: E402
from ipconn_harness import HERALD_BENCH  # noqa: E402

DEVICES, MESSAGES = 20, 10


class BenchLongPoll(HeraldTestCase):
    def run_longpoll(self, rate):
        d = self.d
        p = subprocess.run(
            [HERALD_BENCH, "longpoll", "--http", "127.0.0.1:%d" % d.http_port,
             "--zmq", d.zmq_ingress, "--data-dir", d.data_dir, "--app", "news",
             "--devices", str(DEVICES), "--messages", str(MESSAGES), "--rate", rate, "--json"],
            capture_output=True, text=True, timeout=120 * SLOW)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertNotRegex(p.stderr, r"Sanitizer|runtime error")
        r = json.loads(p.stdout.strip().splitlines()[-1])
        self.assertEqual((r["deliveries"], r["lost"], r["duplicates"], r["errors"]),
                         (DEVICES * MESSAGES, 0, 0, 0), r)
        self.assertGreaterEqual(r["answers"], DEVICES, r)
        self.assertLessEqual(r["answers"], DEVICES * MESSAGES, r)
        self.assertGreaterEqual(r["commits"], 1, r)
        return r

    def test_burst_and_paced_stream(self):
        self.d = self.start_daemon()
        burst = self.run_longpoll("0")
        self.assertLessEqual(burst["commits"], MESSAGES, burst)
        # 5 a second: each broadcast commits and is answered long before the next is sent.
        paced = self.run_longpoll("5")
        self.assertGreaterEqual(paced["commits"], MESSAGES, paced)
        self.assertEqual(paced["answers"], DEVICES * MESSAGES, paced)


if __name__ == "__main__":
    main()
