"""ipconn_harness.py — what the ipconn integration tests share (on top of herald_harness.py).

  - ipconn_conf(): heraldd config sections loading longpoll and ipconn on a free port;
    ipconn_port(daemon): the port from the `ipconn_listening addr=...` log line.
  - RawClient: the ipconn protocol written again from docs/protocols/ipconn.md with Python's
    msgpack, independent of the C codec: hello, frames, acks, closed-by-peer detection.
  - Agent: a real herald-agent process (its own session, so kill9() takes its handlers with
    it), log polling, exit code, --dump of its message center.
  - Handler scripts that append "<id> <attempt> <json>" to a file when they finish, and a
    "started" marker when they begin.
  - Proxy: a TCP relay between agents and heraldd whose connections a test can cut.
  - free_port(), rss_kb(pid) (VmRSS and RssAnon).
"""
import json
import os
import re
import select
import signal
import socket
import struct
import subprocess
import threading
import time

import msgpack

from herald_harness import BUILD, SLOW, deadline, wait_for

HERALD_AGENT = os.path.join(BUILD, "herald-agent")
SANITIZER_RE = re.compile(r"ERROR: \w+Sanitizer|runtime error:|SUMMARY: \w+Sanitizer")
HERALD_BENCH = os.path.join(BUILD, "herald-bench")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def ipconn_conf(**kw):
    """Config sections for a daemon with ipconn; kw become [transport ipconn] keys."""
    t = {"listen": "127.0.0.1:0"}
    t.update({k: str(v) for k, v in kw.items()})
    return {"plugins": {"load": "longpoll, ipconn"}, "transport ipconn": t}


def ipconn_port(d, run_start=0):
    line = d.wait_log(r"event=ipconn_listening .*addr=", start=run_start)
    return int(re.search(r"addr=[\d.]+:(\d+)", line).group(1))


def rss_kb(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            k, _, v = ln.partition(":")
            if k in ("VmRSS", "RssAnon"):
                out[k] = int(v.split()[0])
    return out


# ---------------------------------------------------------------------------------------------
class RawClient:
    """One ipconn connection spoken by hand: 4-byte big-endian length + one msgpack map."""

    def __init__(self, port, rcvbuf=None, timeout=10.0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout * SLOW)
        self.sock.connect(("127.0.0.1", port))
        self.buf = b""

    def send(self, obj):
        self.send_raw(msgpack.packb(obj, use_bin_type=True))

    def send_raw(self, body, length=None):
        n = len(body) if length is None else length
        self.sock.sendall(struct.pack(">I", n) + body)

    def recv(self, timeout=10.0):
        """The next frame as a dict, or None when the broker closed the connection."""
        self.sock.settimeout(timeout * SLOW)
        while True:
            if len(self.buf) >= 4:
                n = struct.unpack(">I", self.buf[:4])[0]
                if len(self.buf) >= 4 + n:
                    body, self.buf = self.buf[4:4 + n], self.buf[4 + n:]
                    return msgpack.unpackb(body, raw=False)
            try:
                d = self.sock.recv(65536)
            except ConnectionResetError:
                return None
            if not d:
                return None
            self.buf += d

    def recv_type(self, t, timeout=10.0, skip=("ping", "pong", "acked")):
        """The next frame of type t, answering pings and skipping the types in skip."""
        end = deadline(timeout)
        while True:
            f = self.recv(max(0.1, (end - time.monotonic()) / SLOW))
            if f is None:
                raise AssertionError("connection closed while waiting for %r" % t)
            if f["t"] == t:
                return f
            if f["t"] == "ping":
                self.send({"t": "pong", "n": f.get("n", 0)})
            if f["t"] not in skip:
                raise AssertionError("expected %r, got %r" % (t, f))

    def hello(self, device, token, tenant="default", v=1):
        self.send({"t": "hello", "v": v, "device": device, "tenant": tenant, "token": token})
        return self.recv()

    def ack(self, ids):
        self.send({"t": "ack", "ids": list(ids)})

    def closed_by_peer(self, timeout=10.0):
        """Read until EOF (True) or timeout (False), dropping frames."""
        end = deadline(timeout)
        while time.monotonic() < end:
            self.sock.settimeout(max(0.05, end - time.monotonic()))
            try:
                d = self.sock.recv(65536)
            except socket.timeout:
                return False
            except ConnectionResetError:
                return True
            if not d:
                return True
        return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------------------------------------
HANDLER = """#!/bin/sh
# $1: output file. Marks the start, reads the notice, optionally sleeps ($SLEEP seconds) or
# fails ($FAIL_ONCE: exit 1 the first time for a given id), then appends one line.
echo "$HERALD_ID" >> "$1.started"
input=$(cat)
if [ -n "$FAIL_ONCE" ] && [ ! -e "$1.failed.$HERALD_ID" ]; then
  touch "$1.failed.$HERALD_ID"
  exit 1
fi
[ -n "$SLEEP" ] && sleep "$SLEEP"
printf '%s %s %s\\n' "$HERALD_ID" "$HERALD_ATTEMPT" "$input" >> "$1"
"""

ASK = """#!/bin/sh
# Release notices: answer what the file $1 says (yes or no), and log the question to $1.log.
cat >> "$1.log"; echo >> "$1.log"
[ "$(cat "$1")" = yes ]
"""


def write_script(path, text):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o755)
    return path


def handled_lines(path):
    """[(id, attempt, json)] from a handler's output file."""
    if not os.path.exists(path):
        return []
    out = []
    with open(path) as f:
        for ln in f:
            i, a, j = ln.rstrip("\n").split(" ", 2)
            out.append((i, int(a), json.loads(j)))
    return out


class Agent:
    """A herald-agent process."""

    def __init__(self, workdir, name, port, device, token, handlers=None, ask=None,
                 extra=(), tenant=None):
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.data = os.path.join(self.dir, "data")
        self.logpath = os.path.join(self.dir, "agent.log")
        self.port = port
        self.device = device
        self.args = [HERALD_AGENT, "--broker", "127.0.0.1:%d" % port, "--device", device,
                     "--token", token, "--data-dir", self.data, "--log-level", "debug",
                     "--set", "reconnect_min=1", "--set", "reconnect_max=2",
                     "--set", "retry_base=1"]
        if tenant:
            self.args += ["--tenant", tenant]
        for app, cmd in (handlers or {}).items():
            self.args += ["--handler", "%s=%s" % (app, cmd)]
        if ask:
            self.args += ["--ask", ask]
        self.args += list(extra)
        self.p = None
        self.runs = 0

    def start(self):
        self.log_f = open(self.logpath, "a")
        self.mark = self._size()
        self.p = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=self.log_f,
                                  stderr=self.log_f, start_new_session=True)
        self.runs += 1
        return self

    def _size(self):
        try:
            return os.path.getsize(self.logpath)
        except OSError:
            return 0

    def log(self, whole=True):
        with open(self.logpath, errors="replace") as f:
            if not whole:
                f.seek(self.mark)
            return f.read()

    def wait_log(self, pattern, timeout=20.0, count=1, this_run=True):
        rx = re.compile(pattern)
        return wait_for(lambda: len(rx.findall(self.log(whole=not this_run))) >= count,
                        timeout, what="agent log /%s/ x%d in %s" % (pattern, count, self.dir))

    def running(self):
        return self.p is not None and self.p.poll() is None

    def wait_exit(self, timeout=20.0):
        return self.p.wait(timeout * SLOW)

    def stop(self, timeout=20.0):
        if self.running():
            self.p.send_signal(signal.SIGTERM)
        code = self.p.wait(timeout * SLOW)
        self.log_f.close()
        return code

    def kill9(self):
        """SIGKILL the agent and every process of its session (its handlers)."""
        if self.p is not None:
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.p.wait()
            self.log_f.close()

    def dump(self):
        out = subprocess.run([HERALD_AGENT, "--data-dir", self.data, "--dump"],
                             capture_output=True, text=True, timeout=30 * SLOW)
        assert out.returncode == 0, out.stderr
        return [json.loads(l) for l in out.stdout.splitlines() if l.strip()]

    def cleanup(self):
        if self.p is not None and self.p.poll() is None:
            self.kill9()

    def sanitizer_reports(self):
        """Lines of ASan/UBSan reports in the agent's log (the agent is built like heraldd)."""
        try:
            return [l for l in self.log().splitlines() if SANITIZER_RE.search(l)]
        except OSError:
            return []


# ---------------------------------------------------------------------------------------------
class Proxy:
    """TCP relay 127.0.0.1:port -> 127.0.0.1:target; cut() drops every relayed connection."""

    def __init__(self, target):
        self.target = target
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(64)
        self.port = self.ls.getsockname()[1]
        self.pairs = []
        self.accepted = 0
        self.lock = threading.Lock()
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                c.close()
                continue
            with self.lock:
                self.pairs.append((c, u))
                self.accepted += 1
            threading.Thread(target=self._pump, args=(c, u), daemon=True).start()

    def _pump(self, a, b):
        socks = [a, b]
        try:
            while True:
                r, _, _ = select.select(socks, [], [], 0.5)
                for s in r:
                    d = s.recv(65536)
                    if not d:
                        raise OSError("eof")
                    (b if s is a else a).sendall(d)
        except (OSError, ValueError):
            pass
        for s in socks:
            try:
                s.close()
            except OSError:
                pass

    def cut(self):
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for a, b in pairs:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        return len(pairs)

    def close(self):
        self.stopping = True
        self.cut()
        self.ls.close()
