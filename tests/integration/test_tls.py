#!/usr/bin/python3
"""TLS on the HTTP and ipconn listeners (issue 8): a throwaway CA and a server certificate for 127.0.0.1
are made with the `openssl` command line at test time; curl trusts that CA through
CURL_CA_BUNDLE, so the harness's helpers speak HTTPS unchanged. Also: plain HTTP to the TLS
port, a wrong CA, old protocol versions, pipelining and large bodies through the memory BIOs,
certificate errors at start, and the rule that a non-loopback listen needs TLS or
allow_plaintext_public; herald-agent over TLS to ipconn with --tls-ca."""
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time

import herald_harness as H
from ipconn_harness import HANDLER, Agent, handled_lines, ipconn_conf, ipconn_port, write_script

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
PKI = None  # temp dir with ca.pem, srv.pem, srv.key, other-ca.pem


def openssl(*args):
    p = subprocess.run([OPENSSL] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=60)
    assert p.returncode == 0, "openssl %s: %s" % (" ".join(args), p.stderr.decode())


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", os.path.join(d, name + ".key"), "-out", os.path.join(d, name + ".pem"),
            "-days", "2", "-subj", "/CN=Herald throwaway %s" % name)


def setUpModule():
    global PKI
    PKI = tempfile.mkdtemp(prefix="herald-tls-")
    make_ca(PKI, "ca")
    make_ca(PKI, "other-ca")
    p = lambda n: os.path.join(PKI, n)
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", p("srv.key"), "-out", p("srv.csr"), "-subj", "/CN=127.0.0.1")
    with open(p("ext.cnf"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                "extendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", p("srv.csr"), "-CA", p("ca.pem"), "-CAkey", p("ca.key"),
            "-CAcreateserial", "-out", p("srv.pem"), "-days", "2", "-extfile", p("ext.cnf"))
    # every curl the harness runs (publish, poll, metrics...) trusts the throwaway CA
    os.environ["CURL_CA_BUNDLE"] = p("ca.pem")


def tearDownModule():
    os.environ.pop("CURL_CA_BUNDLE", None)
    if PKI:
        shutil.rmtree(PKI, ignore_errors=True)


def tls_conf(**extra):
    http = {"tls_cert": os.path.join(PKI, "srv.pem"), "tls_key": os.path.join(PKI, "srv.key")}
    http.update(extra)
    return {"http": http}


def tls_socket(port, timeout=20.0):
    ctx = ssl.create_default_context(cafile=os.path.join(PKI, "ca.pem"))
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout * H.SLOW)
    return ctx.wrap_socket(raw, server_hostname="127.0.0.1")


def read_responses(s, n):
    """Reads n HTTP responses (Content-Length bodies) from a TLS socket; returns (status, body)."""
    buf = b""
    out = []
    while len(out) < n:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            head = buf[:end].decode("iso-8859-1")
            clen = 0
            for ln in head.split("\r\n")[1:]:
                k, _, v = ln.partition(":")
                if k.strip().lower() == "content-length":
                    clen = int(v)
            if len(buf) >= end + 4 + clen:
                out.append((int(head.split(" ")[1]), buf[end + 4:end + 4 + clen]))
                buf = buf[end + 4 + clen:]
                continue
        chunk = s.recv(65536)
        if not chunk:
            raise AssertionError("connection closed after %d of %d answers" % (len(out), n))
        buf += chunk
    return out


class HttpTls(H.HeraldTestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = cls.start_class_daemon(tls_conf())

    def test_healthz_with_cacert(self):
        d = self.d
        self.assertTrue(d.url.startswith("https://"), d.url)
        r = H.curl("GET", d.u("/healthz"), args=["--cacert", os.path.join(PKI, "ca.pem")])
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json(), {"status": "ok"})

    def test_publish_and_long_poll(self):
        d = self.d
        tok = d.provision("tlsapp", "tlsdev")
        cur = d.poll("tlsdev", tok)["cursor"]
        p = H.CurlProcess("GET", d.u("/v1/devices/tlsdev/messages?wait=20&cursor=%s" % cur),
                          token=tok)
        try:
            H.wait_for(lambda: d.metric("herald_held_polls") >= 1, 15, what="a held poll")
            mid = d.publish("tlsapp", {"over": "tls"})
            r = p.result(30)
        finally:
            p.kill()
        self.assertEqual(r.status, 200, r)
        self.assertEqual([(m["id"], m["data"]) for m in r.json()["messages"]],
                         [(mid, {"over": "tls"})])

    def test_large_body(self):
        # bigger than one socket read: decrypted bytes arrive over many reads and records
        d = self.d
        tok = d.provision("tlsbig", "bigdev")
        blob = "x" * (600 * 1024)
        mid = d.publish("tlsbig", blob)
        msgs = d.poll("bigdev", tok)["messages"]
        self.assertEqual([(m["id"], len(m["data"])) for m in msgs], [(mid, len(blob))])

    def test_pipelined_requests_in_one_write(self):
        # ~100 KiB of requests in one TLS write: more plaintext than one read of ciphertext,
        # with requests cut across records; answers must come back complete and in order
        d = self.d
        n = 400
        req = (b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"p" * 200 + b"\r\n\r\n")
        with tls_socket(d.http_port) as s:
            s.sendall(req * n)
            got = read_responses(s, n)
        self.assertEqual([st for st, _ in got], [200] * n)
        self.assertEqual(json.loads(got[-1][1]), {"status": "ok"})

    def test_ciphertext_dribbled_in_small_pieces(self):
        # Every read gives OpenSSL part of a record (decryption yields nothing), then a read
        # completes several records at once: the request must still parse, and the daemon
        # must ask for more rather than stall.
        d = self.d
        ctx = ssl.create_default_context(cafile=os.path.join(PKI, "ca.pem"))
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(inc, out, server_hostname="127.0.0.1")
        raw = socket.create_connection(("127.0.0.1", d.http_port), timeout=20 * H.SLOW)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def dribble(data, step=7):
            for i in range(0, len(data), step):
                raw.sendall(data[i:i + step])
                time.sleep(0.001)

        def pump_in():
            chunk = raw.recv(65536)
            if not chunk:
                raise AssertionError("server closed the connection")
            inc.write(chunk)

        with raw:
            while True:
                try:
                    obj.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    dribble(out.read())
                    pump_in()
            dribble(out.read())
            body = json.dumps({"data": {"piece": "meal"}}).encode()
            req = (b"POST /v1/apps/dribble/messages HTTP/1.1\r\nHost: x\r\n"
                   b"Authorization: Bearer " + d.key.encode() + b"\r\n"
                   b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
                   + body)
            # one TLS record per 10 bytes of plaintext, each dribbled in 7-byte pieces
            for i in range(0, len(req), 10):
                obj.write(req[i:i + 10])
            dribble(out.read())
            got = b""
            while b"\r\n\r\n" not in got or not got.rstrip().endswith(b"}"):
                try:
                    got += obj.read(65536)
                except ssl.SSLWantReadError:
                    pump_in()
        self.assertTrue(got.startswith(b"HTTP/1.1 202 "), got)

    def test_plain_http_to_tls_port_fails_cleanly(self):
        d = self.d
        name = 'herald_tls_handshake_failures_total{listener="http"}'
        before = d.metric(name)
        self.assertIsNotNone(before)
        with self.assertRaises(H.CurlError):
            H.curl("GET", "http://%s/healthz" % d.http_addr, timeout=10)
        H.wait_for(lambda: d.metric(name) > before, 10,
                   what="the handshake failure to be counted")
        self.assertTrue(d.running())
        self.assertEqual(d.healthz().status, 200)

    def test_wrong_ca_is_refused_by_curl(self):
        d = self.d
        with self.assertRaises(H.CurlError) as cm:
            H.curl("GET", d.u("/healthz"), args=["--cacert", os.path.join(PKI, "other-ca.pem")])
        self.assertIn("certificate", str(cm.exception))
        self.assertEqual(d.healthz().status, 200)

    def test_tls_1_1_is_refused(self):
        d = self.d
        with self.assertRaises(H.CurlError):
            H.curl("GET", d.u("/healthz"), args=["--tlsv1.0", "--tls-max", "1.1"])
        r = H.curl("GET", d.u("/healthz"), args=["--tlsv1.2", "--tls-max", "1.2"])
        self.assertEqual(r.status, 200)

    def test_client_gone_mid_handshake(self):
        d = self.d
        s = socket.create_connection(("127.0.0.1", d.http_port), timeout=10 * H.SLOW)
        s.sendall(b"\x16\x03\x01\x00\xff\x01")  # the start of a ClientHello, then nothing
        s.close()
        self.assertEqual(d.healthz().status, 200)


class StartRules(H.HeraldTestCase):
    def failed_start(self, conf):
        d = H.Daemon(conf, name="refused")
        self.addCleanup(d.remove_files)
        self.addCleanup(d.cleanup)
        with self.assertRaises(H.DaemonError):
            d.start()
        self.assertNotEqual(d.proc.returncode, 0)
        return "\n".join(d.log())

    def test_public_listen_without_tls_is_refused(self):
        log = self.failed_start({"http": {"listen": "0.0.0.0:0"}})
        self.assertRegex(log, r"herald\.conf:\d+: \[http\] listen 0\.0\.0\.0:0 is not a "
                              r"loopback address and has no TLS")

    def test_public_listen_with_allow_plaintext_public_starts(self):
        # bound to port 0 on every interface; no traffic is sent to it
        d = self.start_daemon({"http": {"listen": "0.0.0.0:0", "allow_plaintext_public": "yes"}})
        self.assertTrue(d.running())
        self.assertTrue(d.http_addr.startswith("0.0.0.0:"), d.http_addr)

    def test_public_listen_with_tls_starts(self):
        d = self.start_daemon(tls_conf(listen="0.0.0.0:0"))
        self.assertTrue(d.running())

    def test_cert_without_key_is_refused(self):
        log = self.failed_start({"http": {"tls_cert": os.path.join(PKI, "srv.pem")}})
        self.assertRegex(log, r"herald\.conf:\d+: tls_cert and tls_key go together")

    def test_missing_cert_file_names_path_and_reason(self):
        missing = os.path.join(PKI, "no-such.pem")
        log = self.failed_start(tls_conf(tls_cert=missing))
        self.assertIn("tls_cert %s: " % missing, log)

    def test_key_not_matching_cert_is_refused(self):
        log = self.failed_start(tls_conf(tls_key=os.path.join(PKI, "other-ca.key")))
        self.assertIn("tls_key %s: " % os.path.join(PKI, "other-ca.key"), log)

    def test_tls_ca_checks_the_chain(self):
        d = self.start_daemon(tls_conf(tls_ca=os.path.join(PKI, "ca.pem")))
        self.assertEqual(d.healthz().status, 200)
        log = self.failed_start(tls_conf(tls_ca=os.path.join(PKI, "other-ca.pem")))
        self.assertIn("checked against tls_ca", log)


def tls_ipconn_conf(**extra):
    conf = ipconn_conf(tls_cert=os.path.join(PKI, "srv.pem"), tls_key=os.path.join(PKI, "srv.key"),
                       **extra)
    conf.update(tls_conf())
    return conf


class IpconnTls(H.HeraldTestCase):
    def setUp(self):
        super().setUp()
        self.work = tempfile.mkdtemp(prefix="herald-tls-agent-")
        self.handler = write_script(os.path.join(self.work, "handler.sh"), HANDLER)
        self.agents = []

    def tearDown(self):
        for a in self.agents:
            a.cleanup()
        bad = [l for a in self.agents for l in a.sanitizer_reports()]
        super().tearDown()
        shutil.rmtree(self.work, ignore_errors=True)
        self.assertEqual(bad, [], "sanitizer reports in herald-agent's log")

    def agent(self, d, port, device, ca):
        token = d.provision("demo", device)
        out = os.path.join(self.work, device + ".out")
        extra = ["--tls-ca", ca] if ca else []
        a = Agent(self.work, device, port, device, token,
                  handlers={"demo": "%s %s" % (self.handler, out)}, extra=extra)
        a.out = out
        self.agents.append(a)
        return a.start()

    def test_agent_over_tls_receives_a_message(self):
        d = self.start_daemon(tls_ipconn_conf())
        port = ipconn_port(d)
        a = self.agent(d, port, "phone-tls", os.path.join(PKI, "ca.pem"))
        a.wait_log(r"event=connected")
        mid = d.publish("demo", {"secret": "stays secret"})
        lines = H.wait_for(lambda: handled_lines(a.out), 20, what="the handler to run")
        self.assertEqual([(l[0], l[2]["data"]) for l in lines], [(mid, {"secret": "stays secret"})])
        # acked over TLS too: nothing pending at the broker
        tok = a.args[a.args.index("--token") + 1]
        H.wait_for(lambda: not d.poll("phone-tls", tok, wait=0)["messages"], 20,
                   what="the ack")
        self.assertEqual(a.stop(), 0)

    def test_agent_with_wrong_ca_refuses_the_broker(self):
        d = self.start_daemon(tls_ipconn_conf())
        port = ipconn_port(d)
        a = self.agent(d, port, "phone-wrong-ca", os.path.join(PKI, "other-ca.pem"))
        a.wait_log(r"event=tls_failed reason=.*certificate")
        self.assertNotRegex(a.log(), r"event=connected")
        self.assertEqual(a.stop(), 0)

    def test_plain_agent_to_tls_port_is_refused(self):
        d = self.start_daemon(tls_ipconn_conf())
        port = ipconn_port(d)
        a = self.agent(d, port, "phone-plain", None)
        H.wait_for(lambda: (d.metric("herald_ipconn_tls_handshake_failures_total") or 0) >= 1,
                   20, what="the handshake failure to be counted")
        self.assertNotRegex(a.log(), r"event=connected")
        self.assertEqual(a.stop(), 0)
        self.assertEqual(d.healthz().status, 200)

    def test_public_ipconn_listen_without_tls_is_refused(self):
        conf = ipconn_conf()
        conf["transport ipconn"]["listen"] = "0.0.0.0:0"
        d = H.Daemon(conf, name="refused")
        self.addCleanup(d.remove_files)
        self.addCleanup(d.cleanup)
        with self.assertRaises(H.DaemonError):
            d.start()
        self.assertRegex("\n".join(d.log()), r"bad_config transport=ipconn key=listen reason=\"0\.0\.0\.0:0 is "
                                              r"not a loopback address and has no TLS")
        conf["transport ipconn"]["allow_plaintext_public"] = "yes"
        d2 = self.start_daemon(conf)
        self.assertTrue(d2.running())


if __name__ == "__main__":
    H.main()
