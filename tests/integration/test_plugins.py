#!/usr/bin/env python3
"""Transport plugin loader and the push path, against the real heraldd.

- every deliberately broken plugin in tests/plugins/ is refused at start with a clear reason;
- config keys the plugin does not declare, and sections for transports not loaded, are errors
  naming the file and line;
- the example push transport (plugins/example) receives every published message, a temporary
  failure is retried by the broker, and the outcomes appear on the ZeroMQ events socket.
"""
import json
import os
import re
import signal
import subprocess
import tempfile
import time
import unittest

import msgpack
import zmq

BUILD = os.environ.get("HERALD_BUILD", os.path.join(os.path.dirname(__file__), "../../build/release"))
HERALDD = os.path.join(BUILD, "heraldd")
KEY = "k" * 40


def write_conf(d, body):
    path = os.path.join(d, "herald.conf")
    with open(path, "w") as f:
        f.write(f"data_dir = {d}/data\n[http]\nlisten = 127.0.0.1:0\n"
                f"[zmq]\ningress = tcp://127.0.0.1:*\nevents = tcp://127.0.0.1:*\n" + body)
    return path


def run_to_exit(conf, timeout=30):
    p = subprocess.run([HERALDD, "-c", conf], capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stderr


def curl(method, url, key=None, body=None):
    args = ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "-X", method, url]
    if key:
        args += ["-H", f"Authorization: Bearer {key}"]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "--data-binary", body]
    out = subprocess.run(args, capture_output=True, text=True, timeout=30).stdout
    text, _, code = out.rpartition("\n")
    return int(code), text


class Daemon:
    def __init__(self, conf):
        self.err = open(conf + ".log", "w+")
        self.p = subprocess.Popen([HERALDD, "-c", conf], stderr=self.err)
        deadline = time.time() + 30
        while time.time() < deadline:
            self.err.seek(0)
            m = re.search(r"event=started http=([\d.]+):(\d+) zmq_ingress=(\S+) zmq_events=(\S+)",
                          self.err.read())
            if m:
                self.url = f"http://127.0.0.1:{m.group(2)}"
                self.zin, self.zev = m.group(3), m.group(4)
                return
            if self.p.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise AssertionError("heraldd did not start:\n" + self.log())

    def log(self):
        self.err.seek(0)
        return self.err.read()

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(30)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        return self.p.returncode


class LoaderRefusals(unittest.TestCase):
    def refused(self, name, pattern):
        with tempfile.TemporaryDirectory() as d:
            conf = write_conf(d, f"[plugins]\ndir = {BUILD}/test-plugins\nload = {name}\n")
            code, err = run_to_exit(conf)
            self.assertNotEqual(code, 0, err)
            self.assertRegex(err, pattern)

    def test_future_major_is_refused(self):
        self.refused("bad_major", r"bad_major\.so: transport ABI major 2, broker speaks 1")

    def test_newer_minor_is_refused(self):
        self.refused("bad_minor", r"bad_minor\.so: transport built for ABI 1\.2, broker has 1\.1")

    def test_missing_symbol_is_refused(self):
        self.refused("no_symbol", r"no_symbol\.so: no 'herald_transport' or 'herald_transports' symbol")

    def test_name_must_match_file(self):
        self.refused("wrong_name", r"calls itself 'something_else', expected 'wrong_name'")

    def test_missing_operation_is_refused(self):
        self.refused("no_create", r"no_create\.so: transport lacks a required operation")

    def test_create_failure_stops_start(self):
        self.refused("create_fails", r"transport create_fails: create failed")

    def test_missing_file_is_refused(self):
        self.refused("does_not_exist", r"does_not_exist\.so: cannot load")

    def test_unknown_transport_key_names_line(self):
        with tempfile.TemporaryDirectory() as d:
            conf = write_conf(d, "[plugins]\nload = longpoll\n[transport longpoll]\n"
                                 "max_wait = 30\nmax_wiat = 3\n")
            code, err = run_to_exit(conf)
            self.assertNotEqual(code, 0)
            self.assertRegex(err, r"herald\.conf:11: unknown key 'max_wiat' in \[transport longpoll\]")

    def test_check_mode_validates_transport_sections(self):
        with tempfile.TemporaryDirectory() as d:
            conf = write_conf(d, "[plugins]\nload = longpoll\n[transport longpoll]\nmax_wiat = 3\n")
            p = subprocess.run([HERALDD, "-c", conf, "--check"], capture_output=True, text=True,
                               timeout=30)
            self.assertNotEqual(p.returncode, 0)
            self.assertRegex(p.stderr, r"herald\.conf:10: unknown key 'max_wiat'")
            self.assertFalse(os.path.exists(os.path.join(d, "data")), "--check must not write")
            conf = write_conf(d, f"[plugins]\ndir = {BUILD}/test-plugins\nload = bad_major\n")
            p = subprocess.run([HERALDD, "-c", conf, "--check"], capture_output=True, text=True,
                               timeout=30)
            self.assertNotEqual(p.returncode, 0)
            self.assertIn("transport ABI major 2", p.stderr)

    def test_section_for_unloaded_transport(self):
        with tempfile.TemporaryDirectory() as d:
            conf = write_conf(d, "[plugins]\nload = longpoll\n[transport example]\nfile = /dev/null\n")
            code, err = run_to_exit(conf)
            self.assertNotEqual(code, 0)
            self.assertRegex(err, r"herald\.conf:9: \[transport example\] but 'example' is not in")


class ExamplePushTransport(unittest.TestCase):
    def test_push_deliveries_with_retry_and_events(self):
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "deliveries.jsonl")
            conf = write_conf(d, "[plugins]\nload = longpoll, example\n"
                                 f"[transport example]\nfile = {out}\nfail_every = 2\napps = news\n"
                                 f"[tenant default]\npublish_key = {KEY}\napps = news, other\n")
            dm = Daemon(conf)
            try:
                ctx = zmq.Context()
                sub = ctx.socket(zmq.SUB)
                sub.setsockopt(zmq.SUBSCRIBE, b"")
                sub.setsockopt(zmq.RCVTIMEO, 20000)
                sub.connect(dm.zev)
                time.sleep(0.3)  # PUB/SUB joins asynchronously
                ids = []
                for i in range(3):
                    code, body = curl("POST", f"{dm.url}/v1/apps/news/messages", KEY,
                                      json.dumps({"data": {"n": i}}))
                    self.assertEqual(code, 202, body)
                    ids.append(json.loads(body)["id"])
                # Not covered by apps = news: never offered to the transport.
                code, body = curl("POST", f"{dm.url}/v1/apps/other/messages", KEY, '{"data": 9}')
                self.assertEqual(code, 202, body)
                deadline = time.time() + 30
                lines = []
                while time.time() < deadline:
                    if os.path.exists(out):
                        with open(out) as f:
                            lines = [json.loads(x) for x in f if x.strip()]
                    if len(lines) >= 3:
                        break
                    time.sleep(0.1)
                self.assertEqual(sorted(l["id"] for l in lines), sorted(ids))
                self.assertEqual(sorted(l["data"]["n"] for l in lines), [0, 1, 2])
                self.assertTrue(any(l["attempt"] > 1 for l in lines),
                                f"fail_every=2 must force a retry: {lines}")
                self.assertTrue(all(l["app"] == "news" for l in lines))
                delivered = set()
                deadline = time.time() + 20
                while len(delivered) < 3 and time.time() < deadline:
                    topic, body = sub.recv_multipart()
                    ev = msgpack.unpackb(body, raw=False)
                    if ev["event"] == "delivery" and ev["result"] == "delivered":
                        self.assertEqual(ev["transport"], "example")
                        delivered.add(str(ev["id"]))
                self.assertEqual(delivered, set(ids))
                code, metrics = curl("GET", f"{dm.url}/metrics")
                self.assertRegex(metrics, r"herald_example_written_total 3\b")
                self.assertRegex(metrics, r"herald_deliveries_total [1-9]")
                sub.close(0)
                ctx.term()
            finally:
                self.assertEqual(dm.stop(), 0, dm.log())
            log = dm.log()
            dm.err.close()
            self.assertNotIn("level=error", log)


if __name__ == "__main__":
    unittest.main(verbosity=2)
