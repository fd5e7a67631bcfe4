"""herald_harness.py — shared code of Herald's integration tests.

Each test file is a stdlib-unittest program run by Debian's /usr/bin/python3 (ctest runs every
tests/integration/test_*.py as one test, with HERALD_BUILD = the cmake build dir and HERALD_SRC =
the source tree). The peers are real: HTTP goes through the `curl` binary, ZeroMQ through pyzmq,
and the broker is the real `heraldd` started on a config written for the test.

What is here:
  - Daemon: start heraldd on a config (a dict of sections, merged onto a test base that listens
    on free ports) in a fresh temp dir, wait for its `started` line, expose the real ports, URLs
    and publish keys; stop() with SIGTERM and assert exit code 0; kill9(); restart() on the same
    data dir. Its stderr is collected line by line.
  - HeraldTestCase: daemons started through it are always stopped (even when the test fails),
    and at teardown the test FAILS if a `level=error` line (or any sanitizer report) appeared
    in a daemon's log, unless the test declared that error expected with expect_log_error().
  - curl() / curl_parallel(): HTTP through the curl binary; zmq helpers; metrics parsing.
  - main(): unittest runner that prints the daemon logs of failing tests and exits non-zero on
    failure.

No timing assertion is made anywhere: waits are polls with generous deadlines, scaled up when
HERALD_BUILD is a sanitizer build (about 3x slower).
"""
import atexit
import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import msgpack
import zmq

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("HERALD_SRC") or os.path.abspath(os.path.join(HERE, "..", ".."))
BUILD = os.environ.get("HERALD_BUILD") or os.path.join(SRC, "build", "release")
HERALDD = os.path.join(BUILD, "heraldd")
HERALD_CLI = os.path.join(BUILD, "herald")
CURL = shutil.which("curl") or "/usr/bin/curl"


def _is_sanitized_build():
    try:
        with open(os.path.join(BUILD, "CMakeCache.txt"), encoding="utf-8", errors="replace") as f:
            return re.search(r"^HERALD_SANITIZE:BOOL=(ON|TRUE|1)\s*$", f.read(), re.M) is not None
    except OSError:
        return False


SANITIZED = _is_sanitized_build()
# Every deadline is multiplied by this: generous, never a performance assertion.
SLOW = 4.0 if SANITIZED else 1.0


def deadline(seconds):
    return time.monotonic() + seconds * SLOW


def wait_for(pred, timeout=10.0, interval=0.02, what="condition"):
    """Poll pred() until it returns a truthy value; return it, or raise AssertionError."""
    end = deadline(timeout)
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError("timed out waiting for %s" % what)
        time.sleep(interval)


# ---------------------------------------------------------------------------------------------
# HTTP through curl

class Response:
    def __init__(self, status, headers, body, raw_headers=""):
        self.status = status
        self.headers = headers  # lower-cased name -> last value
        self.body = body  # bytes
        self.raw_headers = raw_headers

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def __repr__(self):
        return "<Response %s %r>" % (self.status, self.body[:300])


class CurlError(Exception):
    pass


def _parse_curl_output(out):
    """curl -D - writes every header block (1xx included) then the body to stdout."""
    pos = 0
    while True:
        end = out.find(b"\r\n\r\n", pos)
        if end < 0:
            raise CurlError("no header block in curl output: %r" % out[:200])
        block = out[pos:end].decode("iso-8859-1")
        lines = block.split("\r\n")
        m = re.match(r"HTTP/\S+ (\d{3})", lines[0])
        if not m:
            raise CurlError("bad status line %r" % lines[0])
        status = int(m.group(1))
        pos = end + 4
        if 100 <= status < 200:
            continue
        headers = {}
        for ln in lines[1:]:
            if ":" in ln:
                k, v = ln.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        return Response(status, headers, out[pos:], block)


def curl(method, url, body=None, token=None, headers=(), timeout=30.0, args=(),
         expect100=False):
    """One HTTP request through the curl binary. body: bytes, str, or a JSON-able object.
    Returns a Response; raises CurlError if curl itself fails (no HTTP answer). curl's
    "Expect: 100-continue" for bodies over 1 KiB is off unless expect100."""
    cmd = [CURL, "-sS", "-g", "-D", "-", "-X", method, "--max-time", str(timeout * SLOW)]
    if not expect100:
        cmd += ["-H", "Expect:"]
    if token is not None:
        cmd += ["-H", "Authorization: Bearer %s" % token]
    for h in headers:
        cmd += ["-H", h]
    data = None
    if body is not None:
        if isinstance(body, (bytes, bytearray)):
            data = bytes(body)
        elif isinstance(body, str):
            data = body.encode("utf-8")
        else:
            data = json.dumps(body).encode("utf-8")
        cmd += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
    cmd += list(args)
    cmd.append(url)
    p = subprocess.run(cmd, input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout * SLOW + 30)
    if p.returncode != 0:
        raise CurlError("curl %s %s failed (rc=%d): %s" % (method, url, p.returncode,
                                                           p.stderr.decode(errors="replace")))
    return _parse_curl_output(p.stdout)


class CurlProcess:
    """A request running in the background (e.g. a held long-poll)."""

    def __init__(self, method, url, token=None, timeout=60.0):
        cmd = [CURL, "-sS", "-g", "-D", "-", "-X", method, "--max-time", str(timeout * SLOW)]
        if token is not None:
            cmd += ["-H", "Authorization: Bearer %s" % token]
        cmd.append(url)
        self.started = time.monotonic()
        self.p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.finished = None

    def done(self):
        return self.p.poll() is not None

    def result(self, timeout=60.0):
        out, err = self.p.communicate(timeout=timeout * SLOW)
        if self.finished is None:
            self.finished = time.monotonic()
        if self.p.returncode != 0:
            raise CurlError("curl failed (rc=%d): %s" % (self.p.returncode,
                                                         err.decode(errors="replace")))
        return _parse_curl_output(out)

    def elapsed(self):
        return (self.finished or time.monotonic()) - self.started

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.communicate()


def _curl_cfg_quote(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def curl_parallel(requests, workdir, parallel_max=50, timeout=60.0):
    """Run many requests in one curl process (--parallel, options from a -K config file).
    requests: list of dicts {method, url, token?, body?}. Returns a list of (status, body bytes)
    in the same order. status is 0 when the transfer failed."""
    os.makedirs(workdir, exist_ok=True)
    cfg = []
    outs = []
    for i, r in enumerate(requests):
        out = os.path.join(workdir, "out.%d" % i)
        outs.append(out)
        if i:
            cfg.append("next")
        cfg.append("url = %s" % _curl_cfg_quote(r["url"]))
        cfg.append("request = %s" % _curl_cfg_quote(r.get("method", "GET")))
        cfg.append("output = %s" % _curl_cfg_quote(out))
        cfg.append('header = "Expect:"')
        if r.get("token") is not None:
            cfg.append("header = %s" % _curl_cfg_quote("Authorization: Bearer " + r["token"]))
        if r.get("body") is not None:
            b = r["body"] if isinstance(r["body"], str) else json.dumps(r["body"])
            cfg.append('header = "Content-Type: application/json"')
            cfg.append("data-binary = %s" % _curl_cfg_quote(b))
        cfg.append('write-out = "%{http_code} %{filename_effective}\\n"')
        cfg.append("max-time = %d" % int(timeout * SLOW))
    cfgpath = os.path.join(workdir, "curl.cfg")
    with open(cfgpath, "w") as f:
        f.write("\n".join(cfg) + "\n")
    p = subprocess.run([CURL, "-sS", "-g", "--parallel", "--parallel-immediate",
                        "--parallel-max", str(parallel_max),
                        "-K", cfgpath], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout * SLOW * 4 + 60)
    status = {}
    for line in p.stdout.decode().splitlines():
        parts = line.split(" ", 1)
        if len(parts) == 2 and parts[0].isdigit():
            status[parts[1]] = int(parts[0])
    res = []
    for out in outs:
        try:
            with open(out, "rb") as f:
                body = f.read()
        except OSError:
            body = b""
        res.append((status.get(out, 0), body))
    return res


# ---------------------------------------------------------------------------------------------
# raw HTTP (for pipelining and malformed requests only: everything else goes through curl)

class RawHttp:
    def __init__(self, port, host="127.0.0.1", timeout=20.0):
        import socket
        self.sock = socket.create_connection((host, port), timeout=timeout * SLOW)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed by heraldd")
        self.buf += chunk

    def read_response(self):
        """Read one response (Content-Length framed). Returns a Response."""
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("iso-8859-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for ln in lines[1:]:
            k, v = ln.split(":", 1)
            headers[k.strip().lower()] = v.strip()
        n = int(headers.get("content-length", "0"))
        while len(self.buf) < n:
            self._fill()
        body, self.buf = self.buf[:n], self.buf[n:]
        return Response(status, headers, body, head.decode("iso-8859-1"))

    def closed_by_peer(self):
        """True once the peer has closed (EOF), after any buffered bytes."""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except OSError:
            return True

    def close(self):
        self.sock.close()


def http_request_bytes(method, path, body=b"", headers=(), host="127.0.0.1"):
    if isinstance(body, str):
        body = body.encode()
    h = ["%s %s HTTP/1.1" % (method, path), "Host: %s" % host]
    h += list(headers)
    if body or method in ("POST", "PUT"):
        h.append("Content-Length: %d" % len(body))
    return ("\r\n".join(h) + "\r\n\r\n").encode() + body


# ---------------------------------------------------------------------------------------------
# ZeroMQ

_ZCTX = None


def zctx():
    global _ZCTX
    if _ZCTX is None:
        _ZCTX = zmq.Context()
    return _ZCTX


def zsocket(kind, endpoint, timeout=20.0):
    s = zctx().socket(kind)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, int(timeout * SLOW * 1000))
    s.setsockopt(zmq.SNDTIMEO, int(timeout * SLOW * 1000))
    s.connect(endpoint)
    return s


def pack(obj):
    return msgpack.packb(obj, use_bin_type=True)


def unpack(b):
    return msgpack.unpackb(b, raw=False)


def zmq_req(endpoint, body, timeout=20.0):
    """One request over a REQ socket; body is a dict (packed) or raw bytes. Returns the
    decoded reply map."""
    s = zsocket(zmq.REQ, endpoint, timeout)
    try:
        s.send(body if isinstance(body, (bytes, bytearray)) else pack(body))
        return unpack(s.recv())
    finally:
        s.close()


# ---------------------------------------------------------------------------------------------
# metrics

_METRIC_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def parse_metrics(text):
    """Prometheus text -> {"name{labels}" or "name": float}."""
    out = {}
    for ln in text.splitlines():
        if not ln or ln.startswith("#"):
            continue
        m = _METRIC_RE.match(ln)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


# ---------------------------------------------------------------------------------------------
# the daemon

def render_config(sections):
    """sections: {"": {top keys}, "http": {...}, "tenant a": {...}, ...} -> config text.
    Values are written as given (a value of None leaves the key out)."""
    lines = []
    for name, kv in sections.items():
        if name:
            lines.append("[%s]" % name)
        for k, v in kv.items():
            if v is None:
                continue
            lines.append("%s = %s" % (k, v))
        lines.append("")
    return "\n".join(lines)


_STARTED_RE = re.compile(r"\bevent=started\b")
_LEVEL_ERROR_RE = re.compile(r"\blevel=error\b")
_SANITIZER_RE = re.compile(r"(ERROR: (Address|Leak|Memory|Thread)Sanitizer|runtime error:|"
                           r"SUMMARY: \w+Sanitizer)")


class DaemonError(AssertionError):
    pass


_LIVE = set()  # every heraldd process started and not yet reaped


@atexit.register
def _kill_leftovers():
    for p in list(_LIVE):
        if p.poll() is None:
            p.kill()
            p.wait()


def _die_with_parent():
    """preexec_fn: heraldd gets SIGKILL if this test process dies (e.g. a ctest timeout)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class Daemon:
    """One heraldd process (and its successors after restart()) on one data dir."""

    def __init__(self, conf=None, name="herald", tmp=None):
        self.tmp = tmp or tempfile.mkdtemp(prefix="herald-it-")
        self.data_dir = os.path.join(self.tmp, "data")
        self.name = name
        base = {
            "": {"data_dir": self.data_dir, "log_level": "info"},
            "http": {"listen": "127.0.0.1:0"},
            "zmq": {"ingress": "tcp://127.0.0.1:*", "events": "tcp://127.0.0.1:*"},
            "store": {"map_size": "256MiB"},
        }
        for sec, kv in (conf or {}).items():
            base.setdefault(sec, {}).update(kv)
        self.sections = base
        self.config_path = os.path.join(self.tmp, "herald.conf")
        with open(self.config_path, "w") as f:
            f.write(render_config(base))
        self.proc = None
        self.lines = []  # stderr lines of every run, in order
        self._lock = threading.Lock()
        self._started = threading.Event()
        self._reader = None
        self.runs = 0
        self.exit_codes = []

    # -- lifecycle --
    def start(self, timeout=20.0):
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self._started.clear()
        self._run_first_line = len(self.lines)
        self.runs += 1
        env = dict(os.environ)
        if SANITIZED:
            env.setdefault("ASAN_OPTIONS", "abort_on_error=0:detect_leaks=1")
        self.proc = subprocess.Popen([HERALDD, "-c", self.config_path], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                     cwd=self.tmp, preexec_fn=_die_with_parent)
        _LIVE.add(self.proc)
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        threading.Thread(target=self._drain_stdout, args=(self.proc,), daemon=True).start()
        end = deadline(timeout)
        while not self._started.wait(0.02):
            if self.proc.poll() is not None:
                self._reader.join(5)
                raise DaemonError("heraldd exited with %s before 'started'\n%s" %
                                  (self.proc.returncode, self.log_tail()))
            if time.monotonic() > end:
                self.proc.kill()
                self.proc.wait()
                raise DaemonError("heraldd did not log 'started' in time\n%s" % self.log_tail())
        self._parse_started()
        return self

    def _drain_stdout(self, proc):
        for _ in proc.stdout:
            pass

    def _read(self, proc):
        for raw in proc.stderr:
            ln = raw.decode("utf-8", "replace").rstrip("\n")
            with self._lock:
                self.lines.append(ln)
            if _STARTED_RE.search(ln):
                self._started.set()
        proc.stderr.close()

    def _parse_started(self):
        with self._lock:
            ln = [l for l in self.lines[self._run_first_line:] if _STARTED_RE.search(l)][-1]
        kv = dict(re.findall(r"(\w+)=(\S+)", ln))
        self.http_addr = kv["http"]
        self.http_port = int(self.http_addr.rsplit(":", 1)[1])
        tls = self.sections.get("http", {}).get("tls_cert")
        self.url = "%s://%s" % ("https" if tls else "http", self.http_addr)
        self.zmq_ingress = kv["zmq_ingress"]
        self.zmq_events = kv["zmq_events"]

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=20.0, expect_code=0):
        """SIGTERM, wait, and assert the exit code (0: a clean stop)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout * SLOW)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self._reader.join(5)
            raise DaemonError("heraldd did not exit within %ss of SIGTERM\n%s" %
                              (timeout * SLOW, self.log_tail()))
        self._reader.join(10)
        self.exit_codes.append(code)
        if expect_code is not None and code != expect_code:
            raise DaemonError("heraldd exited with %s after SIGTERM, expected %s\n%s" %
                              (code, expect_code, self.log_tail()))
        return code

    def kill9(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()
            self._reader.join(10)
            self.exit_codes.append(self.proc.returncode)

    def restart(self, timeout=20.0):
        """Start again on the same data dir (a previous run must have ended)."""
        if self.running():
            self.stop()
        return self.start(timeout)

    def cleanup(self):
        """Make sure the process is gone (kill -9 if needed)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self._reader is not None:
            self._reader.join(10)

    def remove_files(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- log --
    def log(self):
        with self._lock:
            return list(self.lines)

    def log_tail(self, n=80):
        return "\n".join("    " + l for l in self.log()[-n:])

    def wait_log(self, pattern, timeout=10.0, start=0):
        rx = re.compile(pattern)
        return wait_for(lambda: next((l for l in self.log()[start:] if rx.search(l)), None),
                        timeout, what="log line /%s/" % pattern)

    # -- keys and urls --
    def publish_key(self, tenant="default"):
        sec = self.sections.get("tenant " + tenant, {})
        if sec.get("publish_key"):
            return sec["publish_key"]
        with open(os.path.join(self.data_dir, "tenants", tenant, "publish.key")) as f:
            return f.read().strip()

    @property
    def key(self):
        return self.publish_key("default")

    def u(self, path):
        return self.url + path

    # -- API shortcuts (through curl) --
    def publish(self, app, data=None, key=None, to=None, ttl=None, collapse=None, raw=None,
                expect=202):
        body = raw
        if body is None:
            body = {"data": data}
            if to is not None:
                body["to"] = to
            if ttl is not None:
                body["ttl"] = ttl
            if collapse is not None:
                body["collapse"] = collapse
        r = curl("POST", self.u("/v1/apps/%s/messages" % app), body,
                 token=self.key if key is None else key)
        if expect is not None:
            assert r.status == expect, "publish: expected %s, got %r" % (expect, r)
        return r.json()["id"] if r.status == 202 else r

    def provision(self, app, device, key=None):
        r = curl("POST", self.u("/v1/apps/%s/registrations" % app), {"device": device},
                 token=self.key if key is None else key)
        assert r.status == 201, "provision %s/%s: %r" % (app, device, r)
        j = r.json()
        assert j["device"] == device, j
        return j["token"]

    def poll(self, device, token, cursor=None, wait=0, max=None, expect=200):
        q = ["wait=%d" % wait]
        if cursor is not None:
            q.append("cursor=%s" % cursor)
        if max is not None:
            q.append("max=%d" % max)
        r = curl("GET", self.u("/v1/devices/%s/messages?%s" % (device, "&".join(q))),
                 token=token, timeout=wait + 30)
        assert r.status == expect, "poll %s: %r" % (device, r)
        return r.json() if expect == 200 else r

    def ack(self, device, token, ids, expect=200):
        r = curl("POST", self.u("/v1/devices/%s/acks" % device), {"ids": ids}, token=token)
        assert r.status == expect, "ack %s: %r" % (device, r)
        return r.json()

    def metrics(self):
        r = curl("GET", self.u("/metrics"))
        assert r.status == 200, r
        return parse_metrics(r.text)

    def metric(self, name):
        return self.metrics().get(name, None)

    def healthz(self):
        return curl("GET", self.u("/healthz"))


# ---------------------------------------------------------------------------------------------
# the test case base

class HeraldTestCase(unittest.TestCase):
    """Daemons from start_daemon() are stopped at cleanup (SIGTERM, exit code 0 asserted unless
    the test already stopped or killed them) and their logs are checked for level=error lines
    and sanitizer reports. Class-wide daemons (start_class_daemon in setUpClass) are checked
    per test for the log lines written during that test."""

    _class_daemons = ()

    def setUp(self):
        self._daemons = []
        self._expected_errors = []
        self._log_marks = {}
        for d in type(self)._class_daemons:
            self._log_marks[id(d)] = len(d.log())
            self.addCleanup(self._check_log, d, self._log_marks[id(d)])

    def expect_log_error(self, pattern):
        """Declare that a level=error log line matching pattern is expected in this test."""
        self._expected_errors.append(re.compile(pattern))

    def start_daemon(self, conf=None, start=True, **kw):
        d = Daemon(conf, **kw)
        self._daemons.append(d)
        self.addCleanup(self._finish_daemon, d)
        if start:
            d.start()
        return d

    def _finish_daemon(self, d):
        try:
            if d.running():
                d.stop()
            self._check_log(d, 0)
        finally:
            d.cleanup()
            d.remove_files()

    def _check_log(self, d, start):
        bad = []
        for ln in d.log()[start:]:
            if _SANITIZER_RE.search(ln):
                bad.append(ln)
            elif _LEVEL_ERROR_RE.search(ln) and not any(p.search(ln)
                                                        for p in self._expected_errors):
                bad.append(ln)
        if bad:
            raise AssertionError("unexpected error lines in heraldd's log:\n  " +
                                 "\n  ".join(bad[:20]))

    @classmethod
    def start_class_daemon(cls, conf=None, **kw):
        d = Daemon(conf, **kw)
        if not cls._class_daemons:
            cls._class_daemons = []
        cls._class_daemons.append(d)

        def fin():
            try:
                if d.running():
                    d.stop()
            finally:
                d.cleanup()
                bad = [l for l in d.log() if _SANITIZER_RE.search(l)]
                d.remove_files()
                if bad:
                    raise AssertionError("sanitizer report in heraldd's log:\n  " +
                                         "\n  ".join(bad[:40]))

        cls.addClassCleanup(fin)
        d.start()
        return d

    # -- helpers used by many tests --
    def assertJsonError(self, r, status, code=None):
        self.assertEqual(r.status, status, r)
        self.assertTrue(r.headers.get("content-type", "").startswith("application/json"), r)
        j = r.json()
        self.assertIsInstance(j, dict, r)
        self.assertIn("error", j, r)
        self.assertIn("message", j, r)
        self.assertIsInstance(j["message"], str)
        if code is not None:
            self.assertEqual(j["error"], code, r)
        return j


class _Result(unittest.TextTestResult):
    def _dump_logs(self, test):
        daemons = list(getattr(test, "_daemons", [])) + list(getattr(type(test),
                                                                     "_class_daemons", []))
        for d in daemons:
            self.stream.writeln("---- heraldd log (%s, %s) ----" % (d.name, d.tmp))
            self.stream.writeln(d.log_tail(60))

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._dump_logs(test)

    def addError(self, test, err):
        super().addError(test, err)
        self._dump_logs(test)


def main():
    if not os.access(HERALDD, os.X_OK):
        print("heraldd not found at %s (set HERALD_BUILD)" % HERALDD, file=sys.stderr)
        sys.exit(2)
    print("heraldd: %s%s" % (HERALDD, " (sanitized build)" if SANITIZED else ""), flush=True)
    runner = unittest.TextTestRunner(verbosity=2, resultclass=_Result, stream=sys.stdout)
    prog = unittest.main(module="__main__", testRunner=runner, exit=False)
    sys.exit(0 if prog.result.wasSuccessful() else 1)
