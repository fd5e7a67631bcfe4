#!/usr/bin/python3
"""Package downloads (issue 6, "Downloads"): GET /v1/apps/{app}/releases/{version}/package
with a device token, through curl and raw sockets against a real heraldd.

What is checked: the whole package with its SHA-256; Range (first, middle and last bytes, a
suffix, an open end, 416 out of range, several ranges ignored); resuming an interrupted
download with `curl -C -` (and If-Range); ETag / If-None-Match 304; HEAD; device
authentication (wrong token 401, missing device 401, an old token generation 401, another
tenant's device 404); Content-Disposition and X-Herald-Store carrying the store (tenant) id;
the "download" event and the per-store counter; 410 withdrawn and 403 outside the rollout;
a client that stalls mid-download while 200 concurrent downloads all finish intact, and is cut
at the send timeout afterwards; 503 + Retry-After beyond max_concurrent_downloads; the same
over TLS.

No timing is asserted: the send timeout is short only so that the test does not wait long.
"""
import hashlib
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import unittest

import zmq

import herald_harness as H

APP = "com.example.app"
# The stall test needs more than the kernel's socket buffers hold (several MiB on loopback).
BIG = 24 << 20
MULTI = 2 << 20
SMALL = 3 << 20
# Short, so that the test that waits for a cut does not wait long (elsewhere: 60 s, so that no
# healthy download on a loaded machine is ever cut).
SEND_TIMEOUT = int(4 * H.SLOW)
# The stalled client of the 200-downloads test must still be stalled, not cut yet, when the
# others are done: far more than 200 x 2 MiB over loopback take (well under a second alone).
STALL_TIMEOUT = int(10 * H.SLOW)


def blob(n, seed):
    """n deterministic bytes that are not a repeating pattern at any small period."""
    out = bytearray()
    h = hashlib.sha256(seed.encode()).digest()
    while len(out) < n:
        h = hashlib.sha256(h).digest()
        out += h * 64
    return bytes(out[:n])


def sha(b):
    return hashlib.sha256(b).hexdigest()


def store_conf(timeout=60, **download):
    dl = {"max_concurrent_downloads": "500", "download_send_timeout": "%ds" % timeout}
    dl.update(download)
    return {
        # packages are uploaded in one request body
        "http": {"max_body": "64MiB"},
        "download": dl,
        "tenant store1": {"apps": "*"},
        "tenant store2": {"apps": "*"},
    }


class Store:
    """Helpers around one daemon with tenants store1 and store2."""

    def __init__(self, d):
        self.d = d

    def upload(self, data, version, app=APP, tenant="store1", extra=""):
        url = self.d.u("/v1/apps/%s/releases?version=%s%s" % (app, version, extra))
        r = H.curl("POST", url, data, token=self.d.publish_key(tenant),
                   headers=["Content-Type: application/octet-stream"], timeout=120)
        assert r.status in (200, 201), "upload %s %s: %r" % (app, version, r)
        rel = r.json()
        assert rel["sha256"] == sha(data), rel
        assert rel["size"] == len(data), rel
        return rel

    def device(self, name, tenant="store1", app=APP):
        return self.d.provision(app, name, key=self.d.publish_key(tenant))

    def path(self, version, app=APP):
        return "/v1/apps/%s/releases/%s/package" % (app, version)

    def url(self, version, device, app=APP):
        return self.d.u(self.path(version, app) + "?device=" + device)

    def get(self, version, device, token, headers=(), method="GET", app=APP, args=()):
        return H.curl(method, self.url(version, device, app), token=token, headers=headers,
                      timeout=120, args=args)


def metric_value(d, name):
    return d.metrics().get(name, 0.0)


class Downloads(H.HeraldTestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = cls.start_class_daemon(store_conf())
        cls.s = Store(cls.d)
        cls.pkg = blob(SMALL, "small")
        cls.rel = cls.s.upload(cls.pkg, "1.0.0")
        cls.tok = cls.s.device("dev-a")

    def test_whole_package_and_store_headers(self):
        r = self.s.get("1.0.0", "dev-a", self.tok)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(len(r.body), SMALL)
        self.assertEqual(sha(r.body), sha(self.pkg))
        h = r.headers
        self.assertEqual(h["content-type"], "application/octet-stream")
        self.assertEqual(h["content-length"], str(SMALL))
        self.assertEqual(h["etag"], '"%s"' % sha(self.pkg))
        self.assertEqual(h["accept-ranges"], "bytes")
        self.assertEqual(h["x-herald-store"], "store1")
        self.assertEqual(h["content-disposition"],
                         'attachment; filename="%s-1.0.0.store1.pkg"' % APP)
        self.assertEqual(h["connection"], "close")
        # the device may also be named in a header
        r = H.curl("GET", self.d.u(self.s.path("1.0.0")), token=self.tok,
                   headers=["X-Herald-Device: dev-a"], timeout=60)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(sha(r.body), sha(self.pkg))
        # curl's own file name from Content-Disposition
        out = tempfile.mkdtemp(prefix="herald-dl-")
        self.addCleanup(shutil.rmtree, out, True)
        p = subprocess.run([H.CURL, "-sS", "-f", "-O", "-J", "-H", "Authorization: Bearer " +
                            self.tok, self.s.url("1.0.0", "dev-a")], cwd=out, timeout=60 * H.SLOW)
        self.assertEqual(p.returncode, 0)
        self.assertEqual(os.listdir(out), ["%s-1.0.0.store1.pkg" % APP])
        with open(os.path.join(out, os.listdir(out)[0]), "rb") as f:
            self.assertEqual(sha(f.read()), sha(self.pkg))

    def test_head(self):
        # HEAD answers the head alone and keeps the connection: a request pipelined behind it
        # is answered next, with nothing in between
        s = socket.create_connection(("127.0.0.1", self.d.http_port), timeout=30 * H.SLOW)
        self.addCleanup(s.close)
        path = self.s.path("1.0.0") + "?device=dev-a"
        auth = ["Authorization: Bearer " + self.tok]
        s.sendall(H.http_request_bytes("HEAD", path, headers=auth) +
                  H.http_request_bytes("GET", path, headers=auth + [
                      'If-None-Match: "%s"' % sha(self.pkg)]))
        buf = b""
        while buf.count(b"\r\n\r\n") < 2:
            chunk = s.recv(65536)
            self.assertTrue(chunk, "connection closed: %r" % buf)
            buf += chunk
        head, rest = buf.split(b"\r\n\r\n", 1)
        head = head.decode("iso-8859-1").split("\r\n")
        self.assertEqual(head[0], "HTTP/1.1 200 OK")
        h = dict((k.strip().lower(), v.strip()) for k, v in
                 (ln.split(":", 1) for ln in head[1:]))
        self.assertEqual(h["content-length"], str(SMALL))
        self.assertEqual(h["etag"], '"%s"' % sha(self.pkg))
        self.assertEqual(h["x-herald-store"], "store1")
        self.assertNotIn("connection", h)
        self.assertTrue(rest.startswith(b"HTTP/1.1 304 "), rest[:100])

    def test_ranges(self):
        n = SMALL
        cases = [
            ("bytes=0-99", 0, 99),                  # first bytes
            ("bytes=1048576-1049599", 1048576, 1049599),  # middle
            ("bytes=%d-%d" % (n - 100, n - 1), n - 100, n - 1),  # last bytes
            ("bytes=-4096", n - 4096, n - 1),       # suffix
            ("bytes=%d-" % (n - 5000), n - 5000, n - 1),  # open end
            ("bytes=%d-%d" % (n - 10, n + 1000), n - 10, n - 1),  # end past the file
        ]
        for rng, a, b in cases:
            r = self.s.get("1.0.0", "dev-a", self.tok, headers=["Range: " + rng])
            self.assertEqual(r.status, 206, (rng, r))
            self.assertEqual(r.headers["content-range"], "bytes %d-%d/%d" % (a, b, n), rng)
            self.assertEqual(r.headers["content-length"], str(b - a + 1), rng)
            self.assertEqual(r.body, self.pkg[a:b + 1], rng)
            self.assertEqual(r.headers["x-herald-store"], "store1")
        for rng in ("bytes=%d-" % n, "bytes=%d-%d" % (n + 5, n + 10), "bytes=-0"):
            r = self.s.get("1.0.0", "dev-a", self.tok, headers=["Range: " + rng])
            self.assertJsonError(r, 416, "range_not_satisfiable")
            self.assertEqual(r.headers["content-range"], "bytes */%d" % n, rng)
        # several ranges, or a malformed one: the whole package (a server may ignore Range)
        for rng in ("bytes=0-1,5-9", "bytes=9-1", "lines=1-2"):
            r = self.s.get("1.0.0", "dev-a", self.tok, headers=["Range: " + rng])
            self.assertEqual(r.status, 200, (rng, r))
            self.assertEqual(sha(r.body), sha(self.pkg), rng)

    def test_etag_if_none_match(self):
        etag = '"%s"' % sha(self.pkg)
        for inm in (etag, "W/" + etag, '"nope", ' + etag, "*"):
            r = self.s.get("1.0.0", "dev-a", self.tok, headers=["If-None-Match: " + inm])
            self.assertEqual(r.status, 304, (inm, r))
            self.assertEqual(r.body, b"")
            self.assertEqual(r.headers["etag"], etag)
        r = self.s.get("1.0.0", "dev-a", self.tok, headers=['If-None-Match: "other"'])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(sha(r.body), sha(self.pkg))

    def test_if_range(self):
        etag = '"%s"' % sha(self.pkg)
        r = self.s.get("1.0.0", "dev-a", self.tok, headers=["Range: bytes=100-199",
                                                            "If-Range: " + etag])
        self.assertEqual(r.status, 206, r)
        self.assertEqual(r.body, self.pkg[100:200])
        # another version's tag (or a date): the whole, current package
        for ir in ('"%s"' % ("0" * 64), "W/" + etag, "Sat, 01 Jan 2000 00:00:00 GMT"):
            r = self.s.get("1.0.0", "dev-a", self.tok, headers=["Range: bytes=100-199",
                                                                "If-Range: " + ir])
            self.assertEqual(r.status, 200, (ir, r))
            self.assertEqual(sha(r.body), sha(self.pkg))

    def test_resume_interrupted_download(self):
        out = tempfile.mkdtemp(prefix="herald-dl-")
        self.addCleanup(shutil.rmtree, out, True)
        f = os.path.join(out, "pkg")
        # A download whose connection drops part way: the client keeps what it got.
        s = socket.create_connection(("127.0.0.1", self.d.http_port), timeout=30 * H.SLOW)
        s.sendall(H.http_request_bytes("GET", self.s.path("1.0.0") + "?device=dev-a",
                                       headers=["Authorization: Bearer " + self.tok]))
        buf = b""
        while b"\r\n\r\n" not in buf or len(buf.split(b"\r\n\r\n", 1)[1]) < 300000:
            chunk = s.recv(65536)
            self.assertTrue(chunk)
            buf += chunk
        s.close()
        part = buf.split(b"\r\n\r\n", 1)[1][:300000]
        self.assertEqual(part, self.pkg[:len(part)])
        with open(f, "wb") as fh:
            fh.write(part)
        # curl -C - asks for the rest (Range: bytes=<size of the file>-), with the tag it was
        # made from
        p = subprocess.run([H.CURL, "-sS", "-f", "-C", "-", "-o", f, "-D", "-", "-H",
                            'If-Range: "%s"' % sha(self.pkg), "-H",
                            "Authorization: Bearer " + self.tok, self.s.url("1.0.0", "dev-a")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60 * H.SLOW)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(b" 206 ", p.stdout.split(b"\r\n")[0])
        self.assertIn(("content-range: bytes %d-%d/%d" % (len(part), SMALL - 1, SMALL)).encode(),
                      p.stdout.lower())
        with open(f, "rb") as fh:
            self.assertEqual(sha(fh.read()), sha(self.pkg))
        # the broker saw the dropped one as cut by the client, not as a download
        H.wait_for(lambda: metric_value(self.d, 'herald_downloads_cut_total{reason="closed"}')
                   >= 1, 20, what="the dropped download counted as closed")

    def test_device_authentication(self):
        url = self.s.url("1.0.0", "dev-a")
        # no token
        self.assertJsonError(H.curl("GET", url), 401, "unauthorized")
        # a token that is not this device's
        other = self.s.device("dev-b")
        self.assertJsonError(H.curl("GET", url, token=other), 401, "unauthorized")
        self.assertJsonError(H.curl("GET", url, token="store1.1.0.AAAA"), 401, "unauthorized")
        # no device named
        self.assertJsonError(H.curl("GET", self.d.u(self.s.path("1.0.0")), token=self.tok), 401,
                             "unauthorized")
        # a token of an older generation (rotated away) no longer works
        tok_c = self.s.device("dev-c")
        r = H.curl("POST", self.d.u("/v1/devices/dev-c/token"), token=tok_c)
        self.assertEqual(r.status, 200, r)
        new_c = r.json()["token"]
        self.assertJsonError(self.s.get("1.0.0", "dev-c", tok_c), 401, "unauthorized")
        r = self.s.get("1.0.0", "dev-c", new_c)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(sha(r.body), sha(self.pkg))
        # another store's device, with its own valid token: that store has no such release
        tok_x = self.s.device("dev-x", tenant="store2")
        self.assertJsonError(self.s.get("1.0.0", "dev-x", tok_x), 404, "not_found")
        # no such version, no such app
        self.assertJsonError(self.s.get("9.9.9", "dev-a", self.tok), 404, "not_found")
        self.assertJsonError(self.s.get("1.0.0", "dev-a", self.tok, app="no.such.app"), 404,
                             "not_found")

    def test_same_app_in_two_stores(self):
        # store2 publishes other bytes under the same app id and version: each store's
        # devices get their own store's package, named after that store
        other = blob(100000, "store2")
        self.s.upload(other, "1.0.0", tenant="store2")
        tok_y = self.s.device("dev-y", tenant="store2")
        r = self.s.get("1.0.0", "dev-y", tok_y)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(sha(r.body), sha(other))
        self.assertEqual(r.headers["x-herald-store"], "store2")
        self.assertIn(".store2.pkg", r.headers["content-disposition"])
        r = self.s.get("1.0.0", "dev-a", self.tok, headers=["Range: bytes=0-9"])
        self.assertEqual(r.body, self.pkg[:10])
        self.assertEqual(r.headers["x-herald-store"], "store1")

    def test_download_event_and_counter(self):
        d = self.d
        sub = H.zctx().socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"store1.download")
        sub.connect(d.zmq_events)
        self.addCleanup(sub.close)
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)

        def next_event(timeout_s):
            if poller.poll(int(timeout_s * 1000)):
                topic, body = sub.recv_multipart()
                return topic.decode(), H.unpack(body)
            return None

        name = 'herald_downloads_total{tenant="store1",app="%s"}' % APP
        before = metric_value(d, name)
        # A SUB socket misses what is sent before its subscription arrives: download small
        # ranges until one event comes through, then drain.
        end = H.deadline(20)
        while True:
            self.s.get("1.0.0", "dev-a", self.tok, headers=["Range: bytes=0-0"])
            if next_event(0.2):
                break
            self.assertLess(time.monotonic(), end, "no download event")
        while next_event(0.1):
            pass
        # a partial response is not a download; one that reaches the last byte is
        mid = metric_value(d, name)
        self.assertEqual(mid, before)
        r = self.s.get("1.0.0", "dev-a", self.tok, headers=["Range: bytes=%d-" % (SMALL - 10)])
        self.assertEqual(r.status, 206)
        ev = next_event(10 * H.SLOW)
        self.assertIsNotNone(ev)
        topic, e = ev
        self.assertEqual(topic, "store1.download")
        self.assertEqual(e["event"], "download")
        self.assertEqual(e["tenant"], "store1")
        self.assertEqual(e["device"], "dev-a")
        self.assertEqual(e["app"], APP)
        self.assertEqual(e["version"], "1.0.0")
        self.assertEqual(e["bytes"], 10)
        self.assertIs(e["complete"], True)
        self.assertIsInstance(e["ts"], int)
        H.wait_for(lambda: metric_value(d, name) == mid + 1, 10, what="the download counted")
        # the durable per-store count behind GET /v1/reports
        def reported():
            r = H.curl("GET", d.u("/v1/reports?app=%s&version=1.0.0" % APP),
                       token=d.publish_key("store1"))
            if r.status != 200:
                return None
            rows = [x for x in r.json().get("reports", r.json() if isinstance(r.json(), list)
                                            else []) if x.get("version") == "1.0.0"]
            return rows and rows[0].get("downloads", 0) >= 1 and rows[0]
        H.wait_for(reported, 10, what="downloads in /v1/reports")

    def test_rollout_and_withdrawn(self):
        data = blob(50000, "staged")
        self.s.upload(data, "2.0.0", extra="&rollout=0")
        r = self.s.get("2.0.0", "dev-a", self.tok)
        self.assertJsonError(r, 403, "forbidden")
        pk = self.d.publish_key("store1")
        r = H.curl("PATCH", self.d.u("/v1/apps/%s/releases/2.0.0" % APP), {"rollout": 100},
                   token=pk)
        self.assertEqual(r.status, 200, r)
        r = self.s.get("2.0.0", "dev-a", self.tok)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(sha(r.body), sha(data))
        r = H.curl("PATCH", self.d.u("/v1/apps/%s/releases/2.0.0" % APP), {"state": "withdrawn"},
                   token=pk)
        self.assertEqual(r.status, 200, r)
        self.assertJsonError(self.s.get("2.0.0", "dev-a", self.tok), 410)


def stalled_download(port, path, token, rcvbuf=4096, read=8192):
    """A client that asks for a package, reads a few KiB and then stops reading."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(30 * H.SLOW)
    s.connect(("127.0.0.1", port))
    s.sendall(H.http_request_bytes("GET", path, headers=["Authorization: Bearer " + token]))
    got = b""
    while len(got) < read:
        chunk = s.recv(read - len(got))
        if not chunk:
            break
        got += chunk
    assert got.startswith(b"HTTP/1.1 200 "), got[:200]
    return s, len(got)


def read_to_end(s):
    """Reads until the server closes (EOF or reset); returns the byte count."""
    n = 0
    s.settimeout(30 * H.SLOW)
    try:
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                return n
            n += len(chunk)
    except ConnectionResetError:
        return n


class StalledClient(H.HeraldTestCase):
    def test_one_stalls_while_200_finish(self):
        d = self.start_daemon(store_conf(timeout=STALL_TIMEOUT))
        s = Store(d)
        big = blob(BIG, "big")
        multi = blob(MULTI, "multi")
        s.upload(big, "big-1")
        s.upload(multi, "multi-1")
        toks = [(("dev%02d" % i), s.device("dev%02d" % i)) for i in range(10)]
        dev, tok = toks[0]
        # one client stops reading a few KiB into the big package...
        stalled, first = stalled_download(d.http_port, s.path("big-1") + "?device=" + dev, tok)
        self.addCleanup(stalled.close)
        H.wait_for(lambda: metric_value(d, "herald_downloads_active") >= 1, 10,
                   what="the stalled download in progress")
        # ...while 200 others download all of theirs
        reqs = [{"url": s.url("multi-1", toks[i % 10][0]), "token": toks[i % 10][1]}
                for i in range(200)]
        work = tempfile.mkdtemp(prefix="herald-dl-")
        self.addCleanup(shutil.rmtree, work, True)
        res = H.curl_parallel(reqs, work, parallel_max=200, timeout=120)
        self.assertEqual([st for st, _ in res], [200] * 200)
        want = sha(multi)
        bad = [i for i, (_, body) in enumerate(res) if sha(body) != want]
        self.assertEqual(bad, [])
        # They finished while the stalled one was still held: had they waited on it, they
        # would have ended only after its cut.
        m = d.metrics()
        self.assertEqual(m.get('herald_downloads_cut_total{reason="timeout"}'), 0,
                         "the stalled download was cut before the 200 others finished: they "
                         "waited for it, or took longer than its %d s timeout" % STALL_TIMEOUT)
        self.assertGreaterEqual(m.get("herald_downloads_active"), 1)
        # Then it is cut at its send timeout: the socket ends short of the package.
        H.wait_for(lambda: metric_value(d, 'herald_downloads_cut_total{reason="timeout"}') >= 1,
                   STALL_TIMEOUT * 2 + 30, what="the stalled download cut")
        got = first + read_to_end(stalled)
        self.assertLess(got, BIG)
        H.wait_for(lambda: metric_value(d, "herald_downloads_active") == 0, 20,
                   what="every slot free again")
        d.wait_log(r"event=download_cut reason=timeout .*version=big-1")

    def test_503_beyond_max_concurrent(self):
        d = self.start_daemon(store_conf(timeout=SEND_TIMEOUT, max_concurrent_downloads="1"))
        s = Store(d)
        big = blob(BIG, "big")
        s.upload(big, "big-1")
        tok = s.device("dev1")
        stalled, _ = stalled_download(d.http_port, s.path("big-1") + "?device=dev1", tok)
        self.addCleanup(stalled.close)
        r = s.get("big-1", "dev1", tok)
        self.assertJsonError(r, 503, "busy")
        self.assertEqual(r.headers["retry-after"], "5")
        self.assertGreaterEqual(metric_value(d, "herald_downloads_refused_total"), 1)
        # HEAD, 304 and errors need no slot
        self.assertEqual(s.get("big-1", "dev1", tok, method="HEAD", args=["-I"]).status, 200)
        r = s.get("big-1", "dev1", tok, headers=['If-None-Match: "%s"' % sha(big)])
        self.assertEqual(r.status, 304)
        # once the stalled one is cut, the slot serves again
        H.wait_for(lambda: metric_value(d, "herald_downloads_active") == 0,
                   SEND_TIMEOUT * 3 + 30, what="the stalled download cut")
        stalled.close()
        r = s.get("big-1", "dev1", tok, headers=["Range: bytes=-1000"])
        self.assertEqual(r.status, 206, r)
        self.assertEqual(r.body, big[-1000:])


    def test_stop_during_downloads(self):
        # SIGTERM with a download in progress: it is reset, and heraldd exits 0 with nothing
        # leaked (the sanitizer build checks)
        d = self.start_daemon(store_conf())
        s = Store(d)
        s.upload(blob(BIG, "big"), "big-1")
        tok = s.device("dev1")
        stalled, first = stalled_download(d.http_port, s.path("big-1") + "?device=dev1", tok)
        self.addCleanup(stalled.close)
        H.wait_for(lambda: metric_value(d, "herald_downloads_active") >= 1, 10,
                   what="the download in progress")
        d.stop()
        self.assertLess(first + read_to_end(stalled), BIG)


# ---------------------------------------------------------------------------------------------
# TLS: the bytes cannot go out with sendfile, they are encrypted on the download thread

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"


def openssl(*args):
    p = subprocess.run([OPENSSL] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=60)
    assert p.returncode == 0, "openssl %s: %s" % (" ".join(args), p.stderr.decode())


class DownloadsOverTls(H.HeraldTestCase):
    @classmethod
    def setUpClass(cls):
        cls.pki = tempfile.mkdtemp(prefix="herald-dl-tls-")
        p = lambda n: os.path.join(cls.pki, n)
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", p("ca.key"), "-out", p("ca.pem"), "-days", "2", "-subj",
                "/CN=Herald throwaway download CA")
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", p("srv.key"), "-out", p("srv.csr"), "-subj", "/CN=127.0.0.1")
        with open(p("ext.cnf"), "w") as f:
            f.write("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
        openssl("x509", "-req", "-in", p("srv.csr"), "-CA", p("ca.pem"), "-CAkey", p("ca.key"),
                "-CAcreateserial", "-out", p("srv.pem"), "-days", "2", "-extfile", p("ext.cnf"))
        os.environ["CURL_CA_BUNDLE"] = p("ca.pem")
        conf = store_conf()
        conf["http"].update({"tls_cert": p("srv.pem"), "tls_key": p("srv.key")})
        cls.d = cls.start_class_daemon(conf)
        cls.s = Store(cls.d)

    @classmethod
    def tearDownClass(cls):
        os.environ.pop("CURL_CA_BUNDLE", None)
        shutil.rmtree(cls.pki, ignore_errors=True)

    def test_download_over_tls(self):
        self.assertTrue(self.d.url.startswith("https://"))
        pkg = blob(SMALL + 12345, "tls")  # not a whole number of TLS records
        self.s.upload(pkg, "3.0.0")
        tok = self.s.device("tls-dev")
        r = self.s.get("3.0.0", "tls-dev", tok)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(sha(r.body), sha(pkg))
        self.assertEqual(r.headers["x-herald-store"], "store1")
        r = self.s.get("3.0.0", "tls-dev", tok, headers=["Range: bytes=70000-"])
        self.assertEqual(r.status, 206, r)
        self.assertEqual(r.body, pkg[70000:])
        # Python's ssl module sees a clean TLS close (close_notify) after the body
        ctx = ssl.create_default_context(cafile=os.path.join(self.pki, "ca.pem"))
        raw = socket.create_connection(("127.0.0.1", self.d.http_port), timeout=30 * H.SLOW)
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as t:
            t.sendall(H.http_request_bytes("GET", self.s.path("3.0.0") + "?device=tls-dev",
                                           headers=["Authorization: Bearer " + tok,
                                                    "Range: bytes=0-99999"]))
            buf = b""
            while True:
                chunk = t.recv(65536)  # raises SSLEOFError on a close without close_notify
                if not chunk:
                    break
                buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 206 "), head)
        self.assertEqual(body, pkg[:100000])


if __name__ == "__main__":
    H.main()
