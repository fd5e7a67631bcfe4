#!/usr/bin/python3
"""Configurable caps and what their refusals look like: connections per client address, held
long-polls, keyless registrations per address, and the process's file limit.

Loopback is a /8 on Linux, so 127.0.0.2 and 127.0.0.3 are two different client addresses for
the broker (it keys per-address limits on the peer address of the socket)."""
import os
import select
import signal
import socket
import time
import unittest

import herald_harness as H

A2, A3 = "127.0.0.2", "127.0.0.3"


def connect(d, src=None, timeout=10.0):
    s = socket.create_connection(("127.0.0.1", d.http_port), timeout=timeout * H.SLOW,
                                 source_address=(src, 0) if src else None)
    return s


def ask_healthz(s):
    """One keep-alive GET /healthz on s; returns the status, or None if the broker closed s."""
    try:
        s.sendall(H.http_request_bytes("GET", "/healthz"))
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                return None
            buf += chunk
        head, rest = buf.split(b"\r\n\r\n", 1)
        n = 0
        for ln in head.split(b"\r\n")[1:]:
            k, _, v = ln.partition(b":")
            if k.strip().lower() == b"content-length":
                n = int(v)
        while len(rest) < n:
            chunk = s.recv(65536)
            if not chunk:
                return None
            rest += chunk
        return int(head.split(b" ")[1])
    except (ConnectionResetError, BrokenPipeError):
        return None


def closed_soon(s, timeout=5.0):
    """True when the broker closes s without answering anything."""
    s.settimeout(timeout * H.SLOW)
    try:
        return s.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / float(__import__("os").sysconf("SC_CLK_TCK"))


class Limits(H.HeraldTestCase):
    def refused(self, d, reason):
        return d.metric('herald_http_refused_total{reason="%s"}' % reason)

    # -- connections per client address --
    def test_per_address_cap_refuses_next_connection_and_keeps_the_others(self):
        d = self.start_daemon({"http": {"max_connections_per_address": "5"}})
        self.assertEqual(self.refused(d, "per_address"), 0)
        held = [connect(d, A2) for _ in range(5)]
        for s in held:
            self.assertEqual(ask_healthz(s), 200)
        extra = connect(d, A2)  # accepted by the kernel, closed by heraldd at once
        self.assertTrue(closed_soon(extra), "6th connection from %s was not closed" % A2)
        extra.close()
        for s in held:  # the first five keep working, on the same connections
            self.assertEqual(ask_healthz(s), 200)
        other = connect(d, A3)  # another address is not affected
        self.assertEqual(ask_healthz(other), 200)
        other.close()
        self.assertEqual(self.refused(d, "per_address"), 1)
        d.wait_log(r"http_refused.*reason=per_address.*peer=127\.0\.0\.2")
        # once one closes, the address may connect again
        held.pop().close()
        H.wait_for(lambda: d.metric("herald_http_connections") == 4 + 1, 10,
                   what="closed connection counted")  # +1: the metrics request itself
        again = connect(d, A2)
        self.assertEqual(ask_healthz(again), 200)
        again.close()
        for s in held:
            s.close()

    # -- a burst of connects --
    def test_connect_burst_waits_in_the_listen_queue(self):
        # Thousands of devices connect at once after a restart. The kernel completes their
        # handshakes into the listen queue while heraldd is busy (here: stopped); a connect
        # that finds the queue full is dropped and waits for a SYN retransmit, a second or
        # more. With a backlog of 511 about half of 1,000 connects were left waiting.
        with open("/proc/sys/net/core/somaxconn") as f:
            cap = int(f.read())
        if cap < 1100:
            self.skipTest("net.core.somaxconn is %d: the kernel caps every backlog there" % cap)
        d = self.start_daemon({"http": {"max_connections_per_address": "0"}})
        n = 1000
        socks = []
        os.kill(d.proc.pid, signal.SIGSTOP)
        try:
            for _ in range(n):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", d.http_port))
                socks.append(s)
            p = select.poll()
            for s in socks:
                p.register(s, select.POLLOUT)
            pending, end = {s.fileno(): s for s in socks}, time.monotonic() + 5 * H.SLOW
            while pending and time.monotonic() < end:
                for fd, _ in p.poll(200):
                    p.unregister(fd)
                    pending.pop(fd, None)
            done = [s for s in socks if s.fileno() not in pending and
                    s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0]
        finally:
            os.kill(d.proc.pid, signal.SIGCONT)
        self.assertEqual(len(done), n, "%d of %d connects completed while heraldd was busy"
                         % (len(done), n))
        for s in socks[:3] + socks[-3:]:  # and they are served once it accepts again
            s.setblocking(True)
            s.settimeout(10 * H.SLOW)
            self.assertEqual(ask_healthz(s), 200)
        for s in socks:
            s.close()

    # -- held long-polls --
    def test_held_poll_cap_answers_503(self):
        d = self.start_daemon({"transport longpoll": {"max_held": "2"}})
        dev_tok = [("lim-%d" % i, d.provision("capapp", "lim-%d" % i)) for i in range(3)]
        polls = [H.CurlProcess("GET", d.u("/v1/devices/%s/messages?wait=30" % dev), token=tok)
                 for dev, tok in dev_tok[:2]]
        try:
            H.wait_for(lambda: d.metric("herald_held_polls") == 2, 15, what="2 held polls")
            dev, tok = dev_tok[2]
            t0 = time.monotonic()
            r = H.curl("GET", d.u("/v1/devices/%s/messages?wait=30" % dev), token=tok)
            self.assertLess(time.monotonic() - t0, 5)  # answered, not held
            self.assertEqual(r.status, 503, r)
            self.assertEqual(r.json()["error"], "try_again", r)
            self.assertEqual(d.metric("herald_longpoll_refused_total"), 1)
            # a poll that does not wait is still served
            self.assertEqual(d.poll(dev, tok, wait=0)["messages"], [])
            # a publish wakes a held poll; its slot frees and a new poll may be held
            d.publish("capapp", {"n": 1}, to=dev_tok[0][0])
            r0 = polls[0].result(30)
            self.assertEqual(r0.status, 200, r0)
            H.wait_for(lambda: d.metric("herald_held_polls") == 1, 15, what="1 held poll")
            polls.append(H.CurlProcess("GET", d.u("/v1/devices/%s/messages?wait=30" % dev),
                                       token=tok))
            H.wait_for(lambda: d.metric("herald_held_polls") == 2, 15, what="2 held again")
        finally:
            for p in polls:
                p.kill()

    # -- keyless registrations, per address --
    def test_registration_flood_from_one_address_is_throttled(self):
        d = self.start_daemon({"tenant default": {"apps": "*", "self_register": "*",
                                                  "self_register_per_min": "3"}})
        url = d.u("/v1/apps/flood/registrations")
        codes = [H.curl("POST", url, b"", args=("--interface", A2)).status for _ in range(6)]
        self.assertEqual(codes[:3], [201] * 3, codes)
        self.assertEqual(codes[3:], [429] * 3, codes)
        r = H.curl("POST", url, b"", args=("--interface", A2))
        self.assertEqual(r.json()["error"], "rate_limited", r)
        # another client address is served meanwhile
        for _ in range(3):
            r = H.curl("POST", url, b"", args=("--interface", A3))
            self.assertEqual(r.status, 201, r)

    # -- the process's file limit --
    def start_with_fd_limit(self, n):
        """heraldd started with a file limit of n (soft and hard: main() raises the soft
        limit to the hard one, so lowering only the soft one would not hold)."""
        wrapper = self.tmp_file("heraldd-ulimit.sh",
                                '#!/bin/sh\nulimit -n %d\nexec "%s" "$@"\n' % (n, H.HERALDD))
        real = H.HERALDD
        H.HERALDD = wrapper
        try:
            return self.start_daemon()
        finally:
            H.HERALDD = real

    def tmp_file(self, name, text):
        import os
        import tempfile
        d = tempfile.mkdtemp(prefix="herald-lim-")
        self.addCleanup(__import__("shutil").rmtree, d, True)
        path = os.path.join(d, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o755)
        return path

    def fill_until_refused(self, d, most):
        open_, refused = [], 0
        for _ in range(most):
            s = connect(d)
            if ask_healthz(s) == 200:
                open_.append(s)
            else:
                refused += 1
                s.close()
        return open_, refused

    def check_at_limit(self, d, open_):
        """Knocking at the limit costs little CPU; open connections keep answering; closing
        some lets new ones in."""
        cpu0, t0 = cpu_seconds(d.proc.pid), time.monotonic()
        knocks = []
        while time.monotonic() - t0 < 2.0:
            knocks.append(connect(d))
            if len(knocks) > 50:
                knocks.pop(0).close()
        cpu = (cpu_seconds(d.proc.pid) - cpu0) / (time.monotonic() - t0)
        for s in knocks:
            s.close()
        self.assertLess(cpu, 0.6, "heraldd used %.0f%% CPU while refusing" % (cpu * 100))
        for s in open_[:10] + open_[-10:]:
            self.assertEqual(ask_healthz(s), 200)
        for s in open_[:40]:
            s.close()
        del open_[:40]

        def healthy():
            s = connect(d)
            try:
                return ask_healthz(s) == 200
            finally:
                s.close()
        H.wait_for(healthy, 15, what="/healthz answering again")

    def test_fd_limit_at_start_lowers_max_connections(self):
        d = self.start_with_fd_limit(256)
        d.wait_log(r"max_connections_lowered.*configured=10000 effective=192")
        open_, refused = self.fill_until_refused(d, 260)
        try:
            self.assertEqual(len(open_), 192)
            self.assertGreater(refused, 0)
            self.check_at_limit(d, open_)
            d.wait_log(r"http_refused.*reason=max_connections")
            self.assertGreater(self.refused(d, "max_connections"), refused - 1)
        finally:
            for s in open_:
                s.close()

    def test_fd_limit_lowered_while_running_emfile(self):
        """The limit drops under a running broker (prlimit): accept() itself fails with
        EMFILE. libuv then accepts and closes what waits with a spare descriptor, so the
        listener does not spin; those refusals are not seen by heraldd."""
        import subprocess
        d = self.start_daemon()
        subprocess.run(["prlimit", "--pid", str(d.proc.pid), "--nofile=256:256"], check=True)
        open_, refused = self.fill_until_refused(d, 300)
        try:
            self.assertGreater(refused, 0)
            self.assertGreaterEqual(len(open_), 150)
            self.check_at_limit(d, open_)
        finally:
            for s in open_:
                s.close()

if __name__ == "__main__":
    unittest.main()
