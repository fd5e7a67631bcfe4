#!/usr/bin/env python3
"""herald-bench's floors, the servers that are not brokers and say what the machine allows:
the long-poll floor (`herald-bench lp-echo`, bench/lpecho.c) answers the part of Nchan's protocol
the nchan adapter uses (held polls, If-None-Match catch-up, channel info) and the adapter counts
every message exactly once; the durable ingest floor (`zmq-echo --sync-file`, bench/zecho.c)
writes every request's body to its file before the reply, the LMDB floor (`--sync-lmdb`)
stores each as a message row with an expiry entry, and the ingest client times every ack from its
own request's send. The figures measured against them (docs/PERFORMANCE.md) rest
on these.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from herald_harness import SLOW, RawHttp, http_request_bytes, main, wait_for  # noqa: E402
from ipconn_harness import HERALD_BENCH, free_port  # noqa: E402


class LongPollFloor(unittest.TestCase):
    THREADS = 1

    def setUp(self):
        self.port = free_port()
        self.proc = subprocess.Popen([HERALD_BENCH, "lp-echo", "--http", "127.0.0.1:%d" % self.port,
                                      "--threads", str(self.THREADS)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.addCleanup(self.stop)

        def up():
            try:
                RawHttp(self.port).close()
                return True
            except OSError:
                return False
        wait_for(up, 10 * SLOW, what="lp-echo to listen")

    def stop(self):
        self.proc.terminate()
        _, err = self.proc.communicate(timeout=10)
        self.assertNotRegex(err.decode(errors="replace"), r"Sanitizer|runtime error")

    def req(self, conn, method, path, body=b"", headers=()):
        conn.send(http_request_bytes(method, path, body, headers))
        return conn.read_response()

    def test_held_poll_is_answered_by_the_next_publish_and_catch_up_by_etag(self):
        pub, sub = RawHttp(self.port), RawHttp(self.port)
        self.assertIn(b"active subscribers: 0", self.req(pub, "GET", "/pub/ch").body)
        sub.send(http_request_bytes("GET", "/sub/ch"))
        wait_for(lambda: b"active subscribers: 1" in self.req(pub, "GET", "/pub/ch").body,
                 5 * SLOW, what="the poll to be held")
        r = self.req(pub, "POST", "/pub/ch", b'{"s":0,"t":1}')
        self.assertEqual(r.status, 202)
        a = sub.read_response()
        self.assertEqual((a.status, a.headers["etag"], a.body), (200, "1", b'{"s":0,"t":1}'))
        self.assertIn("last-modified", a.headers)
        self.req(pub, "POST", "/pub/ch", b"second")
        self.req(pub, "POST", "/pub/ch", b"third")
        # A client that has message 1 gets 2 at once, then 3: one message per answer, in order.
        b = self.req(sub, "GET", "/sub/ch", headers=["If-None-Match: 1"])
        c = self.req(sub, "GET", "/sub/ch", headers=["If-None-Match: %s" % b.headers["etag"]])
        self.assertEqual((b.body, c.body, c.headers["etag"]), (b"second", b"third", "3"))
        # Another channel is another message list.
        self.assertIn(b"active subscribers: 0", self.req(pub, "GET", "/pub/other").body)
        self.assertEqual(self.req(pub, "GET", "/nowhere").status, 404)
        pub.close()
        sub.close()

    def test_malformed_request_gets_400(self):
        c = RawHttp(self.port)
        c.send(b"NOT HTTP AT ALL\r\n\r\n")
        self.assertEqual(c.read_response().status, 400)
        c.close()

    def test_nchan_adapter_counts_every_message_once(self):
        for rate in ("0", "200"):
            with self.subTest(rate=rate):
                p = subprocess.run(
                    [HERALD_BENCH, "nchan", "--peer", "127.0.0.1:%d" % self.port,
                     "--pid", str(self.proc.pid), "--devices", "50", "--messages", "40",
                     "--rate", rate, "--json"],
                    capture_output=True, text=True, timeout=120 * SLOW)
                self.assertEqual(p.returncode, 0, p.stderr)
                r = json.loads(p.stdout.strip().splitlines()[-1])
                self.assertEqual((r["deliveries"], r["lost"], r["duplicates"]), (2000, 0, 0), r)


class LongPollFloorThreads(LongPollFloor):
    """The same with three loop threads on one port: connections land on any of them, so a
    publish read by one thread is answered to polls held by the others, each poll once, and
    the channel's subscriber count spans every thread."""
    THREADS = 3

    def test_polls_on_every_thread_are_answered(self):
        pub = RawHttp(self.port)
        subs = [RawHttp(self.port) for _ in range(24)]
        for s in subs:
            s.send(http_request_bytes("GET", "/sub/many"))
        wait_for(lambda: b"active subscribers: 24" in self.req(pub, "GET", "/pub/many").body,
                 5 * SLOW, what="every poll to be held")
        self.assertEqual(self.req(pub, "POST", "/pub/many", b"m1").status, 202)
        for s in subs:
            a = s.read_response()
            self.assertEqual((a.status, a.headers["etag"], a.body), (200, "1", b"m1"))
        self.assertIn(b"active subscribers: 0", self.req(pub, "GET", "/pub/many").body)
        for s in subs + [pub]:
            s.close()


class IngestFloor(unittest.TestCase):
    def run_ingest(self, endpoint, pid):
        p = subprocess.run(
            [HERALD_BENCH, "ingest", "--zmq", endpoint, "--key", "unused", "--pid", str(pid),
             "--connections", "3", "--window", "32", "--duration", "1", "--json"],
            capture_output=True, text=True, timeout=60 * SLOW)
        self.assertEqual(p.returncode, 0, p.stderr)
        r = json.loads(p.stdout.strip().splitlines()[-1])
        self.assertGreater(r["acked"], 0, r)
        self.assertEqual((r["refused"], r["ack_unmatched"]), (0, 0), r)
        # Every ack was timed from its own request's send: the histogram holds each of them.
        self.assertEqual(sum(n for _, n in r["ack_latency_hist"]["buckets"]), r["acked"], r)
        return r

    def start_echo(self, *extra):
        port = free_port()
        proc = subprocess.Popen([HERALD_BENCH, "zmq-echo", "--zmq", "tcp://127.0.0.1:%d" % port]
                                + list(extra), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.addCleanup(lambda: (proc.terminate(), proc.communicate(timeout=10)))
        return "tcp://127.0.0.1:%d" % port, proc

    def test_durable_echo_writes_every_body_before_its_reply(self):
        work = tempfile.mkdtemp(prefix="herald-zecho-")
        self.addCleanup(shutil.rmtree, work, True)
        ring = os.path.join(work, "ring")
        endpoint, proc = self.start_echo("--sync-file", ring)
        wait_for(lambda: os.path.exists(ring) and os.path.getsize(ring) == 64 << 20, 30 * SLOW,
                 what="the ring to be zeroed")
        r = self.run_ingest(endpoint, proc.pid)
        with open(ring, "rb") as f:
            data = f.read()
        # The client's payloads are 'x'-padded: every acknowledged body is in the ring (the run
        # may wrap it only past 64 MiB / ~100 B = ~670,000 requests).
        written = data.count(b"x" * 32)
        self.assertGreaterEqual(written, min(r["acked"], 600000), r)
        self.assertEqual(os.path.getsize(ring), 64 << 20)

    def test_growing_durable_echo_appends_every_body(self):
        work = tempfile.mkdtemp(prefix="herald-zecho-")
        self.addCleanup(shutil.rmtree, work, True)
        log = os.path.join(work, "log")
        endpoint, proc = self.start_echo("--sync-file", log, "--sync-grow")
        wait_for(lambda: os.path.exists(log), 10 * SLOW, what="the log to be created")
        r = self.run_ingest(endpoint, proc.pid)
        # Nothing is overwritten: the log holds every request's body, the acknowledged ones
        # and those still in flight when the run ended.
        with open(log, "rb") as f:
            self.assertGreaterEqual(f.read().count(b"x" * 32), 2 * r["acked"], r)

    def test_lmdb_echo_stores_every_body_with_its_expiry_entry(self):
        work = tempfile.mkdtemp(prefix="herald-zecho-")
        self.addCleanup(shutil.rmtree, work, True)
        env = os.path.join(work, "lmdb")
        os.mkdir(env)
        endpoint, proc = self.start_echo("--sync-lmdb", env)
        wait_for(lambda: os.path.exists(os.path.join(env, "data.mdb")), 10 * SLOW,
                 what="the environment to be created")
        r = self.run_ingest(endpoint, proc.pid)
        proc.terminate()
        proc.communicate(timeout=10)

        def entries(table):
            out = subprocess.run(["mdb_stat", "-s", table, env], capture_output=True, text=True,
                                 check=True).stdout
            return int(out.split("Entries:")[1].split()[0])
        # Every acknowledged request (and any still in flight whose group committed) has its
        # message row and its expiry entry (512 to a row), and the meta row holds the last
        # sequence.
        stored = entries("messages")
        self.assertGreaterEqual(stored, r["acked"], r)
        expiry = subprocess.run(["mdb_dump", "-s", "expiry", env], capture_output=True,
                                text=True, check=True).stdout.splitlines()
        data = expiry[expiry.index("HEADER=END") + 1:expiry.index("DATA=END")]
        keys, values = data[0::2], data[1::2]
        self.assertTrue(all(len(k.strip()) == 2 * 17 for k in keys), keys[:3])
        self.assertEqual(sum(len(v.strip()) // 2 // 20 for v in values), stored)
        self.assertTrue(all(len(v.strip()) // 2 <= 512 * 20 for v in values))
        dump = subprocess.run(["mdb_dump", "-s", "meta", env], capture_output=True,
                              text=True, check=True).stdout.splitlines()
        # mdb_dump's data section: a line per key, then a line per value, both in hex
        seq_hex = dump[dump.index(" " + b"seq".hex()) + 1].strip()
        self.assertEqual(int(seq_hex, 16), stored)
        # The bodies are what the client sent ('x'-padded payloads), after a 32-byte header.
        rows = subprocess.run(["mdb_dump", "-s", "messages", env], capture_output=True,
                              text=True, check=True).stdout
        self.assertGreaterEqual(rows.count("78" * 32), stored)

    def test_plain_echo_times_every_ack(self):
        endpoint, proc = self.start_echo()
        self.run_ingest(endpoint, proc.pid)


if __name__ == "__main__":
    main()
