#!/usr/bin/env python3
"""A client that authenticates and then never reads does not grow the broker's memory.

One device connects with a tiny receive buffer and stops reading; another keeps reading and
acking. About 24 MB of messages are published to both (the window is set wide, 1000, so that
only the send buffer limits the silent one). The broker queues at most send_buffer bytes plus
one frame for the silent client, closes it after slow_grace, and the reader gets every message
meanwhile. Heap memory (RssAnon of heraldd: the LMDB map's file pages are not counted, they
are the store itself) stays well under what buffering the flood would take. Under ASan the
allocator keeps freed memory (quarantine, size-class caches), so there the broker's own count of
queued bytes is the measure and RSS is not asserted.
"""
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from herald_harness import SANITIZED, HeraldTestCase, main, wait_for, zmq_req  # noqa: E402
from ipconn_harness import RawClient, ipconn_conf, ipconn_port, rss_kb  # noqa: E402

MSG_BYTES = 48 * 1024
MESSAGES = 500  # ~24 MB, several times what the kernel's socket buffers can absorb


class SlowReader(HeraldTestCase):
    def test_never_reading_client_is_bounded_and_closed(self):
        d = self.start_daemon(ipconn_conf(max_inflight=1000, send_buffer="64KiB",
                                          slow_grace=2, heartbeat=60))
        port = ipconn_port(d)
        t_slow = d.provision("news", "silent")
        t_fast = d.provision("news", "reader")
        slow = RawClient(port, rcvbuf=4096)
        self.addCleanup(slow.close)
        self.assertEqual(slow.hello("silent", t_slow)["t"], "welcome")
        fast = RawClient(port)
        self.addCleanup(fast.close)
        self.assertEqual(fast.hello("reader", t_fast)["t"], "welcome")

        got, errors = [], []

        def read_all():
            try:
                while len(got) < MESSAGES:
                    m = fast.recv_type("msg", timeout=60)
                    got.append(m["id"])
                    fast.ack([m["id"]])
            except Exception as e:  # reported by the main thread
                errors.append(e)

        reader = threading.Thread(target=read_all, daemon=True)
        reader.start()
        pid = d.proc.pid
        base = rss_kb(pid)
        peak_anon, peak_queued = 0, 0
        pad = "x" * MSG_BYTES
        for i in range(MESSAGES):
            r = zmq_req(d.zmq_ingress, {"key": d.key, "app": "news", "data": {"i": i, "p": pad}})
            self.assertIn("id", r, r)
            if i % 50 == 0:
                peak_anon = max(peak_anon, rss_kb(pid)["RssAnon"])
                peak_queued = max(peak_queued, d.metric("herald_ipconn_queued_bytes") or 0)
        # The silent client is closed once it has been at the limit for slow_grace.
        wait_for(lambda: d.metric("herald_ipconn_slow_closed_total") == 1, 30,
                 what="the slow reader to be closed")
        reader.join(120)
        self.assertFalse(errors, errors)
        self.assertEqual(len(got), MESSAGES)  # the other client got everything, in order
        self.assertEqual(got, sorted(got))
        peak_anon = max(peak_anon, rss_kb(pid)["RssAnon"])
        grown_mb = (peak_anon - base["RssAnon"]) / 1024
        published_mb = MESSAGES * MSG_BYTES / 2**20
        if not SANITIZED:
            self.assertLess(grown_mb, 16, "heap grew %.1f MB while %.1f MB were published" %
                            (grown_mb, published_mb))
        # Queued output never passed the limit by more than one message frame.
        self.assertLessEqual(peak_queued, 64 * 1024 + MSG_BYTES + 1024)
        self.assertTrue(any("event=ipconn_slow_reader_closed" in l and "device=silent" in l
                            for l in d.log()))
        self.assertEqual(d.metric("herald_ipconn_authenticated"), 1)
        self.assertEqual(d.metric("herald_ipconn_queued_bytes"), 0)


if __name__ == "__main__":
    main()
