#!/usr/bin/env python3
"""A full LMDB map: publishers get a clear error, nothing stored is lost or corrupted, reads
keep working, and publishing works again once expiry frees space."""
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
KEY = "f" * 40


def curl(method, url, key=None, body=None):
    args = ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "-X", method, url]
    if key:
        args += ["-H", f"Authorization: Bearer {key}"]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
    out = subprocess.run(args, input=body, capture_output=True, text=True, timeout=60).stdout
    text, _, code = out.rpartition("\n")
    return int(code), text


class StoreFull(unittest.TestCase):
    def test_full_map_refuses_publishes_and_keeps_serving(self):
        with tempfile.TemporaryDirectory() as d:
            conf = os.path.join(d, "herald.conf")
            with open(conf, "w") as f:
                f.write(f"data_dir = {d}/data\n[http]\nlisten = 127.0.0.1:0\nmax_body = 256k\n"
                        "[zmq]\ningress = tcp://127.0.0.1:*\nevents = tcp://127.0.0.1:*\n"
                        "max_frame = 256k\n[store]\nmap_size = 1M\nsweep_interval = 1s\n"
                        f"[tenant default]\npublish_key = {KEY}\napps = big\n")
            log = open(os.path.join(d, "log"), "w+")
            p = subprocess.Popen([HERALDD, "-c", conf], stderr=log)
            try:
                deadline = time.time() + 30
                m = None
                while not m and time.time() < deadline:
                    time.sleep(0.05)
                    log.seek(0)
                    m = re.search(r"event=started http=[\d.]+:(\d+) zmq_ingress=(\S+)", log.read())
                self.assertTrue(m, "heraldd did not start")
                url = f"http://127.0.0.1:{m.group(1)}"
                code, body = curl("POST", f"{url}/v1/apps/big/registrations", KEY, '{"device":"dev1"}')
                self.assertEqual(code, 201, body)
                token = json.loads(body)["token"]

                # Fill the map with 100 KB messages that expire in 3 s.
                big = json.dumps({"data": "x" * 100_000, "ttl": 3})
                stored, refusal = [], None
                for _ in range(40):
                    code, body = curl("POST", f"{url}/v1/apps/big/messages", KEY, big)
                    if code == 202:
                        stored.append(json.loads(body)["id"])
                        continue
                    refusal = (code, json.loads(body))
                    break
                self.assertIsNotNone(refusal, "a 1 MiB map must fill up with 4 MB of messages")
                self.assertEqual(refusal[0], 507, refusal)
                self.assertEqual(refusal[1]["error"], "store_full")
                self.assertGreater(len(stored), 2)

                # ZeroMQ publishers get the same clear error.
                ctx = zmq.Context()
                req = ctx.socket(zmq.REQ)
                req.setsockopt(zmq.RCVTIMEO, 20000)
                req.connect(m.group(2))
                req.send(msgpack.packb({"key": KEY, "app": "big", "data": "y" * 100_000, "ttl": 3}))
                reply = msgpack.unpackb(req.recv(), raw=False)
                self.assertEqual(reply.get("error"), "store_full", reply)

                # Reads still work and every acknowledged message is intact.
                code, body = curl("GET", f"{url}/v1/devices/dev1/messages?max=100", token)
                self.assertEqual(code, 200, body)
                got = json.loads(body)["messages"]
                self.assertEqual([x["id"] for x in got], stored)
                self.assertTrue(all(x["data"] == "x" * 100_000 for x in got))
                code, body = curl("GET", f"{url}/healthz")
                self.assertEqual(code, 200)

                # A big message does not fit until the messages expire and the sweeper deletes
                # them; then space returns.
                code, body = curl("POST", f"{url}/v1/apps/big/messages", KEY, big)
                self.assertEqual(code, 507, body)
                deadline = time.time() + 30
                ok = False
                while time.time() < deadline and not ok:
                    time.sleep(0.5)
                    code, body = curl("POST", f"{url}/v1/apps/big/messages", KEY,
                                      json.dumps({"data": "z" * 100_000, "ttl": 60}))
                    ok = code == 202
                self.assertTrue(ok, f"publishing must recover after expiry: {code} {body}")
                req.close(0)
                ctx.term()
            finally:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
                    p.wait(30)
            self.assertEqual(p.returncode, 0)
            log.seek(0)
            text = log.read()
            log.close()
            # The refusals are logged as errors (an operator must see a full store); nothing else.
            errors = [l for l in text.splitlines() if "level=error" in l]
            self.assertTrue(errors)
            self.assertTrue(all("event=publish_not_stored" in l for l in errors), errors)


if __name__ == "__main__":
    unittest.main(verbosity=2)
