#!/usr/bin/env python3
"""herald-agent completes the update flow (issue 6), with real heraldd and herald-agent
processes:

- a release is added -> connected agents get the notice, download the package, check its
  SHA-256, run the install hook (which records what it was told: HERALD_ACTION install or
  upgrade, the version it replaces, the file, its SHA-256, the store) and report success,
  visible in GET /v1/reports and as "install" events; the inventory moves on, so the next
  release is an upgrade from the new version; an agent whose installed version is newer
  acknowledges the notice and ignores it;
- a package corrupted on the broker's disk after the upload is caught by the SHA-256 check and
  reported as failure "sha256_mismatch"; the install hook never runs;
- an agent that was not there when the release went out gets it from update-check at start
  (an upgrade, and a required app it lacks as an install); an agent without a push connection
  gets one when asked (SIGUSR1);
- a download whose connection is killed half-way (a throttled relay in front of the broker's
  package URL, [release] public_url) resumes with "Range: bytes=<what it has>-" and If-Range;
  the broker serves the rest (its "download" event says so) and the package checks out;
- failures come back with their reasons: the user says no ("hook_declined"), the install
  hook fails ("install_failed: exit 3"), the release is withdrawn before the download
  ("download_failed: HTTP 410");
- over TLS (https downloads and reports, TLS ipconn) with --tls-ca; an agent trusting another
  CA gets nothing;
- many agents (500 herald-agent processes; 100 under the sanitizers, where each costs far
  more; HERALD_AGENT_UPDATE_AGENTS overrides) update at once while a raw client holds a
  download stalled: every one of them reports success.

No timing is asserted: every wait is a poll with a generous deadline.
"""
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import zmq

import herald_harness as H
from herald_harness import HeraldTestCase, main, wait_for  # noqa: E402
from ipconn_harness import ASK, Agent, free_port, ipconn_conf, ipconn_port, write_script

APP = "game"
MANY = int(os.environ.get("HERALD_AGENT_UPDATE_AGENTS", "100" if H.SANITIZED else "500"))

INSTALL = """#!/bin/sh
# The install hook: $1 is the record file. One JSON line per run with what the agent said,
# and the SHA-256 of the file as the hook sees it. Exit status from $INSTALL_EXIT. With $GATE
# set it marks $GATE.installing and waits for the file $GATE first.
if [ -n "$GATE" ]; then
  echo "$HERALD_VERSION" >> "$GATE.installing"
  while [ ! -e "$GATE" ]; do sleep 0.05; done
fi
sum=$(sha256sum "$HERALD_FILE" | cut -d' ' -f1)
doc=$(cat)
printf '{"action":"%s","app":"%s","version":"%s","from":"%s","file":"%s","sha256":"%s","store":"%s","device":"%s","kind":"%s","file_sha256":"%s","stdin":%s}\\n' \
  "$HERALD_ACTION" "$HERALD_APP" "$HERALD_VERSION" "$HERALD_FROM_VERSION" "$HERALD_FILE" \
  "$HERALD_SHA256" "$HERALD_STORE" "$HERALD_DEVICE" "$HERALD_KIND" "$sum" "$doc" >> "$1"
exit "${INSTALL_EXIT:-0}"
"""

ASK_WAIT = """#!/bin/sh
# The ask hook: note that it was asked, then say yes once the file $1 exists.
cat > /dev/null
touch "$1.asked"
while [ ! -e "$1" ]; do sleep 0.05; done
exit 0
"""


def blob(n, seed):
    out = bytearray()
    h = hashlib.sha256(seed.encode()).digest()
    while len(out) < n:
        h = hashlib.sha256(h).digest()
        out += h * 64
    return bytes(out[:n])


def sha(b):
    return hashlib.sha256(b).hexdigest()


def records(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


class Events:
    """A SUB socket on the broker's events, collecting (kind, map) in a thread."""

    def __init__(self, endpoint, prefix=b"store1."):
        self.s = H.zctx().socket(zmq.SUB)
        self.s.setsockopt(zmq.LINGER, 0)
        self.s.setsockopt(zmq.RCVTIMEO, 200)
        self.s.setsockopt(zmq.SUBSCRIBE, prefix)
        self.s.connect(endpoint)
        self.got = []
        self.stop = False
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.stop:
            try:
                topic, body = self.s.recv_multipart()
            except zmq.Again:
                continue
            self.got.append((topic.decode().split(".", 1)[1], H.unpack(body)))

    def of(self, kind):
        return [e for k, e in list(self.got) if k == kind]

    def close(self):
        self.stop = True
        self.t.join(5)
        self.s.close()


class Throttle:
    """TCP relay 127.0.0.1:port -> 127.0.0.1:target (target set later). Broker-to-client bytes
    go at `rate` bytes/s while rate is set; cut() kills every relayed connection. Each
    connection's request head (what the client sent first) is kept in `heads`."""

    def __init__(self):
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(16)
        self.port = self.ls.getsockname()[1]
        self.target = None
        self.rate = None
        self.down = 0  # bytes relayed to clients
        self.heads = []
        self.pairs = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            try:
                # A small receive buffer towards the broker: otherwise the kernel would take
                # (and acknowledge) megabytes the throttle has not passed on, and the broker
                # would count a download complete that the client never got.
                u = socket.socket()
                u.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
                u.connect(("127.0.0.1", self.target))
            except OSError:
                c.close()
                continue
            head = {"data": b""}
            with self.lock:
                self.pairs.append((c, u))
                self.heads.append(head)
            threading.Thread(target=self._up, args=(c, u, head), daemon=True).start()
            threading.Thread(target=self._down, args=(u, c), daemon=True).start()

    def _up(self, c, u, head):
        try:
            while True:
                d = c.recv(65536)
                if not d:
                    break
                if len(head["data"]) < 8192:
                    head["data"] += d
                u.sendall(d)
        except OSError:
            pass
        self._close(c, u)

    def _down(self, u, c):
        try:
            while True:
                rate = self.rate
                d = u.recv(max(1024, rate // 20) if rate else 65536)
                if not d:
                    break
                c.sendall(d)
                with self.lock:
                    self.down += len(d)
                if rate:
                    time.sleep(len(d) / rate)
        except OSError:
            pass
        self._close(c, u)

    @staticmethod
    def _close(*socks):
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass

    def ranges(self):
        """The Range header of each request seen so far (None when it had none)."""
        out = []
        for h in list(self.heads):
            text = h["data"].decode("iso-8859-1")
            if not text.startswith("GET "):
                continue
            m = re.search(r"^Range: *(.+?)\r$", text, re.M | re.I)
            ir = re.search(r"^If-Range: *(.+?)\r$", text, re.M | re.I)
            out.append((m.group(1) if m else None, ir.group(1) if ir else None))
        return out

    def cut(self):
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for c, u in pairs:
            self._close(c, u)
        return len(pairs)

    def close(self):
        self.cut()
        self.ls.close()


class UpdateCase(HeraldTestCase):
    def setUp(self):
        super().setUp()
        self.work = tempfile.mkdtemp(prefix="herald-agent-update-")
        self.install = write_script(os.path.join(self.work, "install.sh"), INSTALL)
        self.agents = []

    def tearDown(self):
        for a in self.agents:
            a.cleanup()
        bad = [l for a in self.agents for l in a.sanitizer_reports()]
        super().tearDown()
        if not bad:
            shutil.rmtree(self.work, ignore_errors=True)
        self.assertEqual(bad, [], "sanitizer reports in herald-agent's log")

    # -- the broker --
    def broker(self, release=None, download=None, http_port=0, ipconn_port_=0):
        conf = ipconn_conf()
        conf["transport ipconn"]["listen"] = "127.0.0.1:%d" % ipconn_port_
        conf.update({"http": {"max_body": "64MiB", "listen": "127.0.0.1:%d" % http_port},
                     "tenant store1": {"apps": "*"}})
        if release:
            conf["release"] = release
        if download:
            conf["download"] = download
        d = self.start_daemon(conf)
        d.port = ipconn_port(d)
        return d

    def key(self, d):
        return d.publish_key("store1")

    def register(self, d, device, app=APP):
        return d.provision(app, device, key=self.key(d))

    def upload(self, d, data, version, app=APP, extra=""):
        url = d.u("/v1/apps/%s/releases?version=%s%s" % (app, version, extra))
        r = H.curl("POST", url, data, token=self.key(d),
                   headers=["Content-Type: application/octet-stream"], timeout=120)
        self.assertIn(r.status, (200, 201), r)
        rel = r.json()
        self.assertEqual(rel["sha256"], sha(data))
        return rel

    def reports(self, d, app=APP, version=None):
        q = "?app=%s" % app + ("&version=%s" % version if version else "")
        r = H.curl("GET", d.u("/v1/reports" + q), token=self.key(d))
        self.assertEqual(r.status, 200, r)
        return {(x["app"], x["version"]): x for x in r.json()["reports"]}

    def report_of(self, d, version, app=APP):
        return self.reports(d, app, version).get((app, version))

    def wait_reports(self, d, version, success=0, failure=0, app=APP, timeout=60):
        def done():
            r = self.report_of(d, version, app)
            return r if r and r["success"] >= success and r["failure"] >= failure else None
        return wait_for(done, timeout, interval=0.2,
                        what="%d success / %d failure reports of %s %s" %
                        (success, failure, app, version))

    # -- agents --
    def agent(self, d, device, installed=None, ask=None, token=None, register=True, port=None,
              extra=(), hook_env=""):
        if token is None:
            token = self.register(d, device) if register else self.register(d, device, "demo")
        out = os.path.join(self.work, device + ".installs")
        args = ["--http", d.url, "--install", "%s %s %s" % (hook_env, self.install, out)]
        for app, ver in (installed or {}).items():
            args += ["--installed", "%s=%s" % (app, ver)]
        a = Agent(self.work, device, port or d.port, device, token, ask=ask,
                  extra=args + list(extra))
        a.out = out
        a.token = token
        self.agents.append(a)
        return a.start()

    def inventory(self, a):
        return {x["app"]: x["version"] for x in a.dump() if x["db"] == "inventory"}

    def jobs(self, a):
        return {(x["app"], x["version"]): x for x in a.dump() if x["db"] == "updates"}

    def leftovers(self, a):
        dl = os.path.join(a.data, "downloads")
        return sorted(os.listdir(dl)) if os.path.isdir(dl) else []

    # ---------------------------------------------------------------------------------------
    def test_notice_install_upgrade_report(self):
        d = self.broker()
        ev = Events(d.zmq_events)
        self.addCleanup(ev.close)
        up = self.agent(d, "up-1", installed={APP: "1.0"})
        new = self.agent(d, "new-1")
        ahead = self.agent(d, "ahead-1", installed={APP: "2.0"})
        for a in (up, new, ahead):
            a.wait_log(r"event=connected")
            a.wait_log(r"event=update_check_done offers=0")
        pkg = blob(300000, "1.1")
        rel = self.upload(d, pkg, "1.1", extra="&code=11&notes=fixes")
        rep = self.wait_reports(d, "1.1", success=2)
        self.assertEqual((rep["success"], rep["failure"], rep["reasons"]), (2, 0, {}))

        (u,) = records(up.out)
        self.assertEqual((u["action"], u["app"], u["version"], u["from"]),
                         ("upgrade", APP, "1.1", "1.0"))
        (n,) = records(new.out)
        self.assertEqual((n["action"], n["version"], n["from"]), ("install", "1.1", ""))
        for r, dev in ((u, "up-1"), (n, "new-1")):
            self.assertEqual(r["sha256"], sha(pkg))
            self.assertEqual(r["file_sha256"], sha(pkg))  # the file is the package
            self.assertEqual(r["store"], "store1")         # X-Herald-Store
            self.assertEqual(r["device"], dev)
            self.assertEqual(r["kind"], "install")
            self.assertEqual(r["stdin"]["url"], rel["url"])
            self.assertEqual(r["stdin"]["code"], 11)
        for a in (up, new):
            a.wait_log(r"event=report_sent app=%s version=1.1 result=success" % APP)
            self.assertEqual(self.inventory(a), {APP: "1.1"})
            job = self.jobs(a)[(APP, "1.1")]
            self.assertEqual((job["state"], job["result"]), ("done", "success"))
            self.assertEqual(self.leftovers(a), [])  # the hook had its file; it is gone now
            self.assertRegex(a.log(), r"event=received id=\d+ app=%s kind=release" % APP)
        # Newer already installed: acknowledged, ignored, nobody asked, nothing installed.
        ahead.wait_log(r"event=release_ignored id=\d+ app=%s reason=not_newer" % APP)
        wait_for(lambda: not d.poll("ahead-1", ahead.token, wait=0)["messages"], 20,
                 what="the ignored notice to be acked")
        self.assertEqual(records(ahead.out), [])
        self.assertEqual(self.inventory(ahead), {APP: "2.0"})
        installs = wait_for(lambda: len(ev.of("install")) >= 2 and ev.of("install"), 20,
                            what="install events")
        self.assertEqual(sorted((e["device"], e["result"], e["action"]) for e in installs),
                         [("new-1", "success", "install"), ("up-1", "success", "upgrade")])

        # The next release: both upgrade from 1.1 now.
        pkg2 = blob(200000, "1.2")
        self.upload(d, pkg2, "1.2", extra="&code=12")
        self.wait_reports(d, "1.2", success=2)
        for a in (up, new):
            last = records(a.out)[-1]
            self.assertEqual((last["action"], last["from"], last["version"]),
                             ("upgrade", "1.1", "1.2"))
            self.assertEqual(last["file_sha256"], sha(pkg2))
            wait_for(lambda: self.inventory(a) == {APP: "1.2"}, 10, what="inventory 1.2")
        self.assertEqual(len(records(up.out)), 2)
        self.assertEqual(len(records(new.out)), 2)
        for a in (up, new, ahead):
            self.assertEqual(a.stop(), 0)

    def test_corrupted_package_is_reported_as_sha256_mismatch(self):
        d = self.broker()
        gate = os.path.join(self.work, "go")
        ask = write_script(os.path.join(self.work, "ask.sh"), ASK_WAIT)
        a = self.agent(d, "tamper-1", installed={APP: "1.0"}, ask="%s %s" % (ask, gate))
        a.wait_log(r"event=connected")
        pkg = blob(500000, "bad")
        self.upload(d, pkg, "1.1")
        wait_for(lambda: os.path.exists(gate + ".asked"), 20, what="the ask hook")
        # While the user thinks about it, the stored package rots: one byte flipped, same size.
        h = sha(pkg)
        path = os.path.join(d.data_dir, "packages", h[:2], h)
        with open(path, "r+b") as f:
            f.seek(250000)
            b = f.read(1)
            f.seek(250000)
            f.write(bytes([b[0] ^ 0x5A]))
        open(gate, "w").close()
        rep = self.wait_reports(d, "1.1", failure=1)
        self.assertEqual((rep["success"], rep["failure"]), (0, 1))
        self.assertEqual(rep["reasons"], {"sha256_mismatch": 1})
        a.wait_log(r"event=verify_failed app=%s version=1.1 reason=sha256_mismatch" % APP)
        a.wait_log(r"event=report_sent app=%s version=1.1 result=failure" % APP)
        self.assertEqual(records(a.out), [])  # never installed
        self.assertEqual(self.inventory(a), {APP: "1.0"})
        job = self.jobs(a)[(APP, "1.1")]
        self.assertEqual((job["state"], job["result"], job["reason"], job["action"]),
                         ("done", "failure", "sha256_mismatch", "upgrade"))
        wait_for(lambda: self.leftovers(a) == [], 10, what="the bad file to be removed")
        self.assertEqual(a.stop(), 0)

    def test_missed_notice_comes_with_update_check_at_start(self):
        d = self.broker()
        tok = self.register(d, "late-1", app="demo")  # not registered for game or tool
        pkg = blob(100000, "late")
        self.upload(d, pkg, "1.1")
        tool = blob(50000, "tool")
        self.upload(d, tool, "3.0", app="tool", extra="&required=1")
        a = self.agent(d, "late-1", installed={APP: "1.0"}, token=tok)
        self.wait_reports(d, "1.1", success=1)
        self.wait_reports(d, "3.0", success=1, app="tool")
        a.wait_log(r"event=update_queued app=%s version=1.1 source=update-check" % APP)
        a.wait_log(r"event=update_queued app=tool version=3.0 source=update-check")
        got = {(r["app"], r["action"], r["from"], r["file_sha256"]) for r in records(a.out)}
        self.assertEqual(got, {(APP, "upgrade", "1.0", sha(pkg)),
                               ("tool", "install", "", sha(tool))})
        self.assertNotRegex(a.log(), r"kind=release")  # no notice: the check did it
        self.assertEqual(self.inventory(a), {APP: "1.1", "tool": "3.0"})
        # Started again: nothing new to do, nothing done twice.
        a.stop()
        a.start()
        a.wait_log(r"event=update_check_done offers=0")
        self.assertEqual(len(records(a.out)), 2)
        self.assertEqual(a.stop(), 0)

    def test_sigusr1_checks_without_a_push_connection(self):
        d = self.broker()
        tok = self.register(d, "usr-1", app="demo")
        # No ipconn at all (nothing listens there): only update-check can tell it anything.
        a = self.agent(d, "usr-1", installed={APP: "1.0"}, token=tok, port=free_port())
        a.wait_log(r"event=update_check_done offers=0")
        pkg = blob(80000, "usr")
        self.upload(d, pkg, "1.1")
        time.sleep(0.5)
        self.assertEqual(records(a.out), [])
        a.p.send_signal(signal.SIGUSR1)
        a.wait_log(r"event=update_check_requested by=signal")
        self.wait_reports(d, "1.1", success=1)
        (r,) = records(a.out)
        self.assertEqual((r["action"], r["from"], r["file_sha256"]), ("upgrade", "1.0", sha(pkg)))
        self.assertEqual(a.stop(), 0)

    def test_download_cut_midway_resumes_with_range(self):
        relay = Throttle()
        self.addCleanup(relay.close)
        d = self.broker(release={"public_url": "http://127.0.0.1:%d" % relay.port})
        relay.target = d.http_port
        ev = Events(d.zmq_events)
        self.addCleanup(ev.close)
        size = 3 << 20
        relay.rate = 400 << 10  # bytes/s: several seconds for the whole package
        a = self.agent(d, "slow-1", installed={APP: "1.0"})
        a.wait_log(r"event=connected")
        pkg = blob(size, "slow")
        self.upload(d, pkg, "1.1")
        wait_for(lambda: relay.down > size // 4, 30, what="a quarter of the package")
        self.assertEqual(relay.cut(), 1)  # the line drops mid-way ...
        relay.rate = None                 # ... and comes back fast
        a.wait_log(r"event=download_interrupted app=%s version=1.1 from=0 " % APP)
        have = int(re.search(r"event=download_interrupted .* have=(\d+)", a.log()).group(1))
        self.assertGreater(have, 0)
        self.assertLess(have, size)
        self.wait_reports(d, "1.1", success=1)
        # The second request asked for the rest, with the package's ETag as If-Range.
        ranges = relay.ranges()
        self.assertEqual(ranges, [(None, None), ("bytes=%d-" % have, '"%s"' % sha(pkg))])
        a.wait_log(r"event=download_done app=%s version=1.1 bytes=%d from=%d status=206" %
                   (APP, size, have))
        (r,) = records(a.out)
        self.assertEqual(r["file_sha256"], sha(pkg))
        # The broker's side of it: a cut transfer, then one that served the rest.
        dl = wait_for(lambda: [e for e in ev.of("download") if e["complete"]], 20,
                      what="the complete download event")
        self.assertEqual(dl[0]["bytes"], size - have)
        self.assertTrue(any(not e["complete"] for e in ev.of("download")))
        self.assertEqual(self.report_of(d, "1.1")["downloads"], 1)
        self.assertEqual(a.stop(), 0)

    def test_notice_and_update_check_of_one_version_install_once(self):
        d = self.broker()
        tok = self.register(d, "both-1")  # registered: the notice waits for it at the broker
        pkg = blob(150000, "both")
        self.upload(d, pkg, "1.1")
        # Started after the release: the queued notice and the check at start both offer 1.1.
        a = self.agent(d, "both-1", installed={APP: "1.0"}, token=tok)
        self.wait_reports(d, "1.1", success=1)
        a.wait_log(r"event=handled id=\d+ app=%s result=" % APP)  # the notice, one way or other
        a.wait_log(r"event=update_check_done offers=1")
        a.wait_log(r"event=(update_ignored app=%s version=1.1 source=update-check|"
                   r"release_ignored id=\d+ app=%s reason=known)" % (APP, APP))
        a.wait_log(r"event=report_sent app=%s version=1.1" % APP)
        self.assertEqual(len(records(a.out)), 1)
        self.assertEqual(self.report_of(d, "1.1")["success"], 1)
        self.assertEqual(a.stop(), 0)

    def test_agent_killed_mid_download_resumes_after_restart(self):
        relay = Throttle()
        self.addCleanup(relay.close)
        d = self.broker(release={"public_url": "http://127.0.0.1:%d" % relay.port})
        relay.target = d.http_port
        size = 3 << 20
        relay.rate = 400 << 10
        a = self.agent(d, "crash-1", installed={APP: "1.0"})
        a.wait_log(r"event=connected")
        pkg = blob(size, "crash")
        self.upload(d, pkg, "1.1")
        part = os.path.join(a.data, "downloads", "%s-1.1.part" % APP)
        wait_for(lambda: os.path.exists(part) and os.path.getsize(part) > size // 4, 30,
                 what="a quarter of the package on disk")
        a.kill9()
        have = os.path.getsize(part)
        self.assertLess(have, size)
        self.assertEqual(self.jobs(a)[(APP, "1.1")]["state"], "downloading")
        relay.rate = None
        a.start()
        self.wait_reports(d, "1.1", success=1)
        self.assertEqual(relay.ranges()[-1], ("bytes=%d-" % have, '"%s"' % sha(pkg)))
        a.wait_log(r"event=download_done app=%s version=1.1 bytes=%d from=%d status=206" %
                   (APP, size, have))
        (r,) = records(a.out)
        self.assertEqual(r["file_sha256"], sha(pkg))
        self.assertEqual(a.stop(), 0)

    def test_report_survives_broker_outage_and_agent_kill(self):
        d = self.broker(http_port=free_port(), ipconn_port_=free_port())
        gate = os.path.join(self.work, "gate")
        a = self.agent(d, "dur-1", installed={APP: "1.0"}, hook_env="GATE=%s" % gate)
        a.wait_log(r"event=connected")
        pkg = blob(120000, "dur")
        self.upload(d, pkg, "1.1")
        wait_for(lambda: os.path.exists(gate + ".installing"), 20, what="the install hook")
        d.stop()                 # the broker goes away while the hook runs ...
        open(gate, "w").close()  # ... the install succeeds, the report cannot go out
        a.wait_log(r"event=installed app=%s version=1.1 action=upgrade from=1.0" % APP)
        a.wait_log(r"event=report_failed app=%s version=1.1 status=0" % APP)
        a.kill9()                # and the agent dies before it could
        job = self.jobs(a)[(APP, "1.1")]
        self.assertEqual((job["state"], job["result"]), ("reporting", "success"))
        self.assertEqual(self.inventory(a), {APP: "1.1"})
        d.start()
        a.start()                # the report is still owed, and goes out now
        self.wait_reports(d, "1.1", success=1)
        a.wait_log(r"event=report_sent app=%s version=1.1 result=success" % APP)
        self.assertEqual(len(records(a.out)), 1)  # installed once
        with open(gate + ".installing") as f:
            self.assertEqual(f.read().split(), ["1.1"])
        a.wait_log(r"event=update_check_done offers=0")  # 1.1 is what the broker now knows
        self.assertEqual(a.stop(), 0)

    def test_failures_are_reported_with_their_reasons(self):
        d = self.broker()
        answer = os.path.join(self.work, "answer")
        with open(answer, "w") as f:
            f.write("no")
        ask_no = write_script(os.path.join(self.work, "ask-no.sh"), ASK)
        gate = os.path.join(self.work, "go")
        ask_wait = write_script(os.path.join(self.work, "ask-wait.sh"), ASK_WAIT)
        no = self.agent(d, "no-1", installed={APP: "1.0"}, ask="%s %s" % (ask_no, answer))
        bad = self.agent(d, "bad-1", hook_env="INSTALL_EXIT=3")
        gone = self.agent(d, "gone-1", installed={APP: "1.0"}, ask="%s %s" % (ask_wait, gate))
        for a in (no, bad, gone):
            a.wait_log(r"event=connected")
        self.upload(d, blob(60000, "fail"), "1.1")
        self.wait_reports(d, "1.1", failure=2)
        wait_for(lambda: os.path.exists(gate + ".asked"), 20, what="gone-1's ask hook")
        r = H.curl("PATCH", d.u("/v1/apps/%s/releases/1.1" % APP), {"state": "withdrawn"},
                   token=self.key(d))
        self.assertEqual(r.status, 200, r)
        open(gate, "w").close()
        rep = self.wait_reports(d, "1.1", failure=3)
        self.assertEqual(rep["success"], 0)
        self.assertEqual(rep["reasons"], {"hook_declined": 1, "install_failed: exit 3": 1,
                                          "download_failed: HTTP 410": 1})
        (b,) = records(bad.out)  # the hook ran, said no
        self.assertEqual(b["action"], "install")
        self.assertEqual(records(no.out), [])
        self.assertEqual(records(gone.out), [])
        no.wait_log(r"event=release_declined id=\d+ app=%s" % APP)
        for a, inv in ((no, {APP: "1.0"}), (bad, {}), (gone, {APP: "1.0"})):
            self.assertEqual(self.inventory(a), inv)
            self.assertEqual(a.stop(), 0)

    def test_tls_downloads_and_reports_with_tls_ca(self):
        pki = os.path.join(self.work, "pki")
        os.makedirs(pki)
        p = lambda n: os.path.join(pki, n)

        def openssl(*args):
            r = subprocess.run(["openssl"] + list(args), capture_output=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
        for ca in ("ca", "other-ca"):
            openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", p(ca + ".key"), "-out", p(ca + ".pem"), "-days", "2",
                    "-subj", "/CN=Herald throwaway " + ca)
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", p("srv.key"), "-out", p("srv.csr"), "-subj", "/CN=127.0.0.1")
        with open(p("ext.cnf"), "w") as f:
            f.write("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                    "extendedKeyUsage=serverAuth\n")
        openssl("x509", "-req", "-in", p("srv.csr"), "-CA", p("ca.pem"), "-CAkey", p("ca.key"),
                "-CAcreateserial", "-out", p("srv.pem"), "-days", "2", "-extfile", p("ext.cnf"))
        old = os.environ.get("CURL_CA_BUNDLE")
        os.environ["CURL_CA_BUNDLE"] = p("ca.pem")  # the harness's curl trusts it too
        self.addCleanup(lambda: os.environ.pop("CURL_CA_BUNDLE") if old is None else
                        os.environ.__setitem__("CURL_CA_BUNDLE", old))
        conf = ipconn_conf(tls_cert=p("srv.pem"), tls_key=p("srv.key"))
        conf.update({"http": {"tls_cert": p("srv.pem"), "tls_key": p("srv.key")},
                     "tenant store1": {"apps": "*"}})
        d = self.start_daemon(conf)
        d.port = ipconn_port(d)
        self.assertTrue(d.url.startswith("https://"))
        ok = self.agent(d, "tls-1", installed={APP: "1.0"}, extra=["--tls-ca", p("ca.pem")])
        wrong = self.agent(d, "tls-2", installed={APP: "1.0"},
                           extra=["--tls-ca", p("other-ca.pem")])
        ok.wait_log(r"event=connected")
        pkg = blob(200000, "tls")
        rel = self.upload(d, pkg, "1.1")
        self.assertTrue(rel["url"].startswith("https://"), rel)
        self.wait_reports(d, "1.1", success=1)
        (r,) = records(ok.out)
        self.assertEqual((r["action"], r["file_sha256"]), ("upgrade", sha(pkg)))
        # The other CA: neither the push connection nor HTTPS gets through.
        wrong.wait_log(r"event=update_check_failed status=0 error=\"[^\"]*(SSL|certificate)")
        wrong.wait_log(r"event=tls_failed")
        self.assertEqual(records(wrong.out), [])
        self.assertEqual(self.report_of(d, "1.1")["success"], 1)
        for a in (ok, wrong):
            self.assertEqual(a.stop(), 0)

    def test_many_agents_update_while_a_download_stalls(self):
        n = MANY
        d = self.broker(download={"download_send_timeout": "600s"})
        names = ["many-%04d" % i for i in range(n)]
        res = H.curl_parallel([{"method": "POST", "url": d.u("/v1/apps/%s/registrations" % APP),
                                "token": self.key(d), "body": {"device": dev}} for dev in names],
                              os.path.join(self.work, "reg"), parallel_max=20)
        tokens = []
        for (status, body), dev in zip(res, names):
            self.assertEqual(status, 201, body)
            tokens.append(json.loads(body)["token"])
        agents = [self.agent(d, dev, installed={APP: "1.0"}, token=tok,
                             extra=["--log-level", "info"])
                  for dev, tok in zip(names, tokens)]
        for a in agents:
            a.wait_log(r"event=connected", timeout=60)
        # A client stalls in the middle of a big download (of another app) ...
        big = blob(24 << 20, "big")
        self.upload(d, big, "1.0", app="big")
        stall_tok = self.register(d, "staller", app="big")
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", d.http_port))
        s.sendall(("GET /v1/apps/big/releases/1.0/package?device=staller HTTP/1.1\r\n"
                   "Host: x\r\nAuthorization: Bearer %s\r\n\r\n" % stall_tok).encode())
        s.settimeout(10 * H.SLOW)
        first = s.recv(4096)
        self.assertTrue(first.startswith(b"HTTP/1.1 200"), first[:100])
        # ... while every agent updates.
        pkg = blob(256 << 10, "many")
        self.upload(d, pkg, "1.1")
        rep = self.wait_reports(d, "1.1", success=n, timeout=120)
        self.assertEqual((rep["success"], rep["failure"]), (n, 0))
        for a in agents:
            (r,) = records(a.out)
            self.assertEqual((r["action"], r["from"], r["file_sha256"]),
                             ("upgrade", "1.0", sha(pkg)))
        # The stalled client was never cut: its transfer is still there, bytes waiting.
        s.setblocking(False)
        more = s.recv(65536)
        self.assertTrue(more, "the stalled download was closed")
        s.close()
        for a in agents:  # all at once, then collect: a clean exit each
            a.p.send_signal(signal.SIGTERM)
        for a in agents:
            self.assertEqual(a.p.wait(30 * H.SLOW), 0, a.dir)
            a.log_f.close()


if __name__ == "__main__":
    main()
