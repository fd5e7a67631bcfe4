#!/usr/bin/python3
"""Operations: /metrics, /healthz, configuration errors, --check, the ZeroMQ events socket,
the `herald` CLI, connection limits, large payloads."""
import json
import os
import re
import subprocess
import tempfile
import time

import zmq

import herald_harness as H

METRICS = ["herald_publishes_total", "herald_deliveries_total", "herald_held_polls",
           "herald_http_connections", "herald_publish_commit_seconds", "herald_lmdb_used_bytes",
           "herald_acks_total", "herald_registrations_total", "herald_expired_total"]


def run(cmd, timeout=30, **kw):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=timeout * H.SLOW, **kw)


class Metrics(H.HeraldTestCase):
    def test_metrics_and_healthz(self):
        d = self.start_daemon()
        r = d.healthz()
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json(), {"status": "ok"})
        r = H.curl("GET", d.u("/metrics"))
        self.assertEqual(r.status, 200)
        self.assertTrue(r.headers["content-type"].startswith("text/plain"), r.headers)
        for name in METRICS:
            self.assertRegex(r.text, r"(?m)^# TYPE %s " % name)
        self.assertRegex(r.text, r"(?m)^# TYPE herald_publish_commit_seconds histogram$")
        m = H.parse_metrics(r.text)
        self.assertGreater(m["herald_lmdb_used_bytes"], 0)
        self.assertGreaterEqual(m["herald_http_connections"], 1)  # this very request
        self.assertEqual(m["herald_held_polls"], 0)

        tok = d.provision("m", "dev")
        ok_http = 'herald_publishes_total{ingress="http",result="ok"}'
        err_http = 'herald_publishes_total{ingress="http",result="error"}'
        ok_zmq = 'herald_publishes_total{ingress="zmq",result="ok"}'
        err_zmq = 'herald_publishes_total{ingress="zmq",result="error"}'
        before = d.metrics()
        d.publish("m", 1)
        d.publish("m", 2)
        d.publish("m", "x", to="nobody", expect=404)
        H.zmq_req(d.zmq_ingress, {"key": d.key, "app": "m", "data": 3})
        H.zmq_req(d.zmq_ingress, {"key": d.key, "app": "m", "to": "nobody", "data": 3})
        # refusals before the queue count too: a wrong key, a malformed body, a bad frame
        d.publish("m", 4, key="w" * 40, expect=401)
        self.assertEqual(H.curl("POST", d.u("/v1/apps/m/messages"), b"{not json",
                                token=d.key).status, 400)
        H.zmq_req(d.zmq_ingress, {"key": "w" * 40, "app": "m", "data": 3})
        H.zmq_req(d.zmq_ingress, b"\xc1")
        after = d.metrics()
        self.assertEqual(after[ok_http] - before[ok_http], 2)
        self.assertEqual(after[err_http] - before[err_http], 3)
        self.assertEqual(after[ok_zmq] - before[ok_zmq], 1)
        self.assertEqual(after[err_zmq] - before[err_zmq], 3)
        self.assertGreaterEqual(after["herald_publish_commit_seconds_count"] -
                                before["herald_publish_commit_seconds_count"], 3)
        self.assertIn('herald_publish_commit_seconds_bucket{le="+Inf"}', after)

        msgs = d.poll("dev", tok)["messages"]
        self.assertEqual(len(msgs), 3)
        self.assertGreaterEqual(d.metric("herald_deliveries_total") -
                                before["herald_deliveries_total"], 3)

        # held polls: 1 while one is held, 0 after it is answered
        p = H.CurlProcess("GET", d.u("/v1/devices/dev/messages?wait=20&cursor=%s" %
                                     msgs[-1]["id"]), token=tok)
        try:
            H.wait_for(lambda: d.metric("herald_held_polls") == 1, 15, what="held poll")
            m = d.metrics()
            self.assertEqual(m["herald_held_polls"], 1)
            self.assertEqual(m["herald_longpoll_held"], 1)
            self.assertGreaterEqual(m["herald_http_connections"], 2)
            d.publish("m", "wake")
            self.assertEqual(p.result(30).status, 200)
        finally:
            p.kill()
        H.wait_for(lambda: d.metric("herald_held_polls") == 0, 10, what="held polls back to 0")

    def test_connection_limit(self):
        d = self.start_daemon({"http": {"max_connections": "4"}})
        conns = []
        try:
            for _ in range(4):
                c = H.RawHttp(d.http_port)
                c.send(H.http_request_bytes("GET", "/healthz"))
                self.assertEqual(c.read_response().status, 200)
                conns.append(c)
            # a fifth connection is refused (closed at once, no answer)
            with self.assertRaises(H.CurlError):
                H.curl("GET", d.u("/healthz"), timeout=10)
            conns.pop().close()
            # once one is gone, new connections are served again
            H.wait_for(lambda: self._healthz_ok(d), 10, what="a free connection slot")
        finally:
            for c in conns:
                c.close()

    @staticmethod
    def _healthz_ok(d):
        try:
            return d.healthz().status == 200
        except H.CurlError:
            return False

    def test_idle_keepalive_connection_is_closed(self):
        d = self.start_daemon({"http": {"idle_timeout": "1s"}})
        c = H.RawHttp(d.http_port)
        try:
            c.send(H.http_request_bytes("GET", "/healthz"))
            self.assertEqual(c.read_response().status, 200)
            self.assertTrue(c.closed_by_peer())  # blocks until heraldd closes it (socket timeout)
        finally:
            c.close()
        # a held poll longer than the idle timeout is not idle
        tok = d.provision("idle", "dev")
        j = d.poll("dev", tok, wait=2)
        self.assertEqual(j["messages"], [])
        # The idle timer is armed once and checks the last read or answer when it fires: a
        # connection used more often than the timeout outlives several timeouts.
        c = H.RawHttp(d.http_port)
        try:
            for _ in range(8):
                c.send(H.http_request_bytes("GET", "/healthz"))
                self.assertEqual(c.read_response().status, 200)
                time.sleep(0.4)
            self.assertTrue(c.closed_by_peer())  # and once idle for 1 s, it is closed
        finally:
            c.close()

    def test_large_payloads(self):
        d = self.start_daemon()
        tok = d.provision("big", "dev")
        text = "é" * 100000 + "end"
        # curl sends "Expect: 100-continue" for a body this size
        r = H.curl("POST", d.u("/v1/apps/big/messages"), {"data": {"text": text}}, token=d.key,
                   expect100=True)
        self.assertEqual(r.status, 202, r)
        rep = H.zmq_req(d.zmq_ingress, {"key": d.key, "app": "big", "data": [text, 1]})
        self.assertIn("id", rep)
        msgs = d.poll("dev", tok)["messages"]
        self.assertEqual(msgs[0]["data"], {"text": text})
        self.assertEqual(msgs[1]["data"], [text, 1])


BAD_CONFIGS = [
    # (text, line, reason regex)
    ("data_dir = /tmp/x\n[http]\nmax_bdy = 1M\n", 3, r"unknown key 'max_bdy' in \[http\]"),
    ("[http]\nmax_body = 12Q\n", 2, r"max_body"),
    ("[http]\nmax_body = 10\n", 2, r"max_body"),
    ("# comment\n\n[nosuch]\n", 3, r"unknown section"),
    ("log_level = loud\n", 1, r"log_level"),
    ("[http]\nlisten = 127.0.0.1:1\nlisten = 127.0.0.1:2\n", 3, r"duplicate key 'listen'"),
    ("[http]\nlisten = 127.0.0.1:1\n[http]\nmax_body = 2K\n", 3, r"duplicate section"),
    ("[tenant Bad!]\n", 1, r"tenant name"),
    ("[tenant a]\npublish_key = short\n", 2, r"publish_key"),
    ("[tenant a]\npublish_key = has spaces and is long enough to pass 32\n", 2, r"publish_key"),
    ("[store]\ndefault_ttl = 10d\nmax_ttl = 1d\n", 3, r"max_ttl"),
    ("[tenant a]\napps = x\nself_register = y\n", 3, r"self_register app 'y'"),
    ("garbage line\n", 1, r"expected 'key = value'"),
    ("[store]\nsweep_interval = 5x\n", 2, r"sweep_interval"),
    ("[zmq]\ningress = bogus://x\n", 2, r"ingress"),
    ("[tenant a]\napps = bad app\n", 2, r"apps|app id"),
    ("[tenant a]\n[tenant a]\n", 2, r"duplicate \[tenant a\]"),
    ("[http]\nidle_timeout = 0s\n", 2, r"idle_timeout"),
]


class Config(H.HeraldTestCase):
    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix="herald-it-conf-")
        self.addCleanup(lambda: subprocess.run(["rm", "-rf", self.tmp]))

    def write(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_bad_configs_rejected_with_file_line_reason(self):
        for i, (text, line, reason) in enumerate(BAD_CONFIGS):
            path = self.write("bad%d.conf" % i, "data_dir = %s/d%d\n" % (self.tmp, i) + text
                              if not text.startswith("data_dir") else text)
            line += 0 if text.startswith("data_dir") else 1
            for extra in (["--check"], []):
                with self.subTest(config=text, args=extra):
                    p = run([H.HERALDD, "-c", path] + extra, timeout=20)
                    err = p.stderr.decode()
                    self.assertNotEqual(p.returncode, 0, err)
                    self.assertRegex(err, r"%s:%d: " % (re.escape(path), line))
                    self.assertRegex(err, r"%s:%d: .*(%s)" % (re.escape(path), line, reason))
                    self.assertNotIn("event=started", err)

    def test_transport_section_errors_at_start(self):
        base = ("data_dir = %s/t\n[http]\nlisten = 127.0.0.1:0\n[zmq]\n"
                "ingress = tcp://127.0.0.1:*\nevents = tcp://127.0.0.1:*\n" % self.tmp)
        path = self.write("tr.conf", base + "[transport longpoll]\nmax_wiat = 5\n")
        p = run([H.HERALDD, "-c", path])
        self.assertNotEqual(p.returncode, 0)
        self.assertRegex(p.stderr.decode(), r"%s:8: unknown key 'max_wiat'" % re.escape(path))
        path = self.write("tr2.conf", base + "[transport nosuch]\nx = 1\n")
        p = run([H.HERALDD, "-c", path])
        self.assertNotEqual(p.returncode, 0)
        self.assertRegex(p.stderr.decode(), r"%s:7: .*nosuch" % re.escape(path))
        path = self.write("tr3.conf", base + "[plugins]\nload = longpoll, nosuch\n")
        p = run([H.HERALDD, "-c", path])
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("nosuch", p.stderr.decode())

    def test_unreadable_config(self):
        p = run([H.HERALDD, "-c", os.path.join(self.tmp, "missing.conf")])
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("missing.conf", p.stderr.decode())

    def test_check_shipped_config(self):
        path = os.path.join(H.SRC, "conf", "herald.conf")
        p = run([H.HERALDD, "--check", "-c", path])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.decode().strip(), "%s: ok" % path)
        p = run([H.HERALDD, "--check"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("ok", p.stdout.decode())

    def test_command_line(self):
        p = run([H.HERALDD, "--version"])
        self.assertEqual(p.returncode, 0)
        self.assertRegex(p.stdout.decode(), r"^heraldd \d+\.\d+\.\d+")
        p = run([H.HERALDD, "--no-such-option"])
        self.assertNotEqual(p.returncode, 0)
        p = run([H.HERALDD, "stray-argument"])
        self.assertNotEqual(p.returncode, 0)

    def test_ports_in_use(self):
        d = self.start_daemon()
        # a second daemon on the first one's HTTP port fails to start, cleanly
        d2 = H.Daemon({"http": {"listen": d.http_addr}}, name="second")
        self.addCleanup(d2.remove_files)
        self.addCleanup(d2.cleanup)
        with self.assertRaises(H.DaemonError):
            d2.start()
        self.assertNotEqual(d2.proc.returncode, 0)
        self.assertTrue(any("start_failed" in l for l in d2.log()), d2.log_tail())
        self.assertEqual(d.healthz().status, 200)


class Events(H.HeraldTestCase):
    def test_published_event(self):
        d = self.start_daemon()
        sub = H.zctx().socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"default.")
        sub.connect(d.zmq_events)
        self.addCleanup(sub.close)
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)

        def next_event(timeout_s):
            if poller.poll(int(timeout_s * 1000)):
                topic, body = sub.recv_multipart()
                return topic.decode(), H.unpack(body)
            return None

        # a SUB socket misses what is sent before its subscription arrives: publish probes
        # until one event comes through
        end = H.deadline(20)
        while True:
            d.publish("ev-probe", "probe")
            if next_event(0.2):
                break
            self.assertLess(time.monotonic(), end, "no event on the events socket")
        while next_event(0.05):
            pass
        tok = d.provision("ev", "dev")
        mid = d.publish("ev", {"x": 1}, to="dev")
        zid = H.zmq_req(d.zmq_ingress, {"key": d.key, "app": "ev", "data": 2})["id"]
        seen = {}
        end = H.deadline(20)
        while not ({mid, zid} <= set(seen)) and time.monotonic() < end:
            ev = next_event(0.5)
            if ev and ev[0] == "default.published":
                seen[str(ev[1]["id"])] = ev
        self.assertIn(mid, seen)
        self.assertIn(zid, seen)
        topic, e = seen[mid]
        self.assertEqual(e["event"], "published")
        self.assertEqual(e["tenant"], "default")
        self.assertEqual(e["app"], "ev")
        self.assertEqual(e["to"], "dev")
        self.assertIsInstance(e["ts"], int)
        self.assertEqual(seen[zid][1]["to"], None)
        # acks are announced too
        d.ack("dev", tok, [mid])
        end = H.deadline(20)
        while time.monotonic() < end:
            ev = next_event(0.5)
            if ev and ev[0] == "default.acked":
                self.assertEqual(ev[1]["device"], "dev")
                self.assertEqual(ev[1]["count"], 1)
                break
        else:
            self.fail("no acked event")


class Cli(H.HeraldTestCase):
    def test_cli_publish_and_stats(self):
        d = self.start_daemon()
        tok = d.provision("cli-app", "dev")
        p = run([H.HERALD_CLI, "--data-dir", d.data_dir, "--zmq", d.zmq_ingress, "publish",
                 "--app", "cli-app", '{"from": "cli", "n": [1, 2]}'])
        self.assertEqual(p.returncode, 0, p.stderr)
        mid = p.stdout.decode().strip()
        self.assertRegex(mid, r"^\d+$")
        p = run([H.HERALD_CLI, "--data-dir", d.data_dir, "--zmq", d.zmq_ingress, "publish",
                 "--app", "cli-app", "--to", "dev", "--ttl", "60", "not json, a string"])
        self.assertEqual(p.returncode, 0, p.stderr)
        mid2 = p.stdout.decode().strip()
        msgs = d.poll("dev", tok)["messages"]
        self.assertEqual([(m["id"], m["data"]) for m in msgs],
                         [(mid, {"from": "cli", "n": [1, 2]}), (mid2, "not json, a string")])
        self.assertEqual(msgs[1]["to"], "dev")
        # many with a window
        p = run([H.HERALD_CLI, "--key", d.key, "--zmq", d.zmq_ingress, "publish",
                 "--app", "cli-app", "--count", "50", "--window", "10", "7"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout.decode(), r"50 published \(0 refused\)")
        self.assertEqual(len(d.poll("dev", tok, cursor=mid2, max=100)["messages"]), 50)
        # a wrong key is reported and fails
        p = run([H.HERALD_CLI, "--key", "wrong-key-000000000000000000000000000000",
                 "--zmq", d.zmq_ingress, "publish", "--app", "cli-app", "1"])
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("unauthorized", p.stderr.decode())
        # stats
        p = run([H.HERALD_CLI, "--url", d.url, "stats"])
        self.assertEqual(p.returncode, 0, p.stderr)
        out = p.stdout.decode()
        self.assertRegex(out, r'(?m)^herald_publishes_total\{ingress="zmq",result="ok"\} 52$')
        self.assertIn("herald_lmdb_used_bytes", out)
        self.assertNotIn("# TYPE", out)
        self.assertNotIn("_bucket{", out)

    def test_cli_tail(self):
        d = self.start_daemon()
        p = subprocess.Popen([H.HERALD_CLI, "--data-dir", d.data_dir, "--url", d.url, "tail",
                              "--app", "tail-app", "--device", "tailer", "--wait", "5", "--ack"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            # tail provisions the device itself; wait for its poll, then publish
            H.wait_for(lambda: d.metric("herald_held_polls") == 1, 20, what="tail's poll")
            mid = d.publish("tail-app", {"tail": "me"})
            line = p.stdout.readline().decode()
            j = json.loads(line)
            self.assertEqual((j["id"], j["data"]), (mid, {"tail": "me"}))
            H.wait_for(lambda: d.metric("herald_acks_total") == 1, 20, what="tail's ack")
        finally:
            p.kill()
            p.communicate()

    def test_cli_errors(self):
        p = run([H.HERALD_CLI, "--url", "http://127.0.0.1:1", "stats"])
        self.assertNotEqual(p.returncode, 0)
        p = run([H.HERALD_CLI, "frobnicate"])
        self.assertNotEqual(p.returncode, 0)
        p = run([H.HERALD_CLI, "--data-dir", "/nonexistent", "publish", "--app", "a", "x"])
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("publish key", p.stderr.decode())


if __name__ == "__main__":
    H.main()
