#!/usr/bin/env python3
"""The authentication matrix of issue 8 over what came after test_auth_matrix.py: releases,
downloads, update-check, install reports, reports, per-device deliveries, the admin API, the
registration's "msisdn" and ZeroMQ publish batches.

Every endpoint × (no credentials, the other tenant's credentials, a revoked device token, an
expired device token, a publish key where a device token is needed and a device token where a
publish key is needed, garbage) → refused with the right code; and nothing of another tenant is
revealed: the answer for an app, release, version, message or device that exists in the other
tenant is byte for byte the answer for one that exists nowhere (ids apart).

Tenants a and b both have an app "mail" with a release "1.0.0" (different bytes) and a device
"dev-a"; b alone has the app "only-b" and the release "mail 2.0.0-b"; b's messages go out
through a per-device push transport (devrec_a, standing in for SMS) so that its deliveries
exist. Tenant e's tokens live 2 seconds (the expired token).
"""
import hashlib
import json
import os
import shutil
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import herald_harness as H  # noqa: E402

KEY_A = "relmatrix-a-key-0123456789abcdefghijklmnopqrstuvwx"
KEY_B = "relmatrix-b-key-9876543210ZYXWVUTSRQPONMLKJIHGFEDC"
KEY_E = "relmatrix-e-key-00000000000000000000000000000000000"
ADMIN = "relmatrix-admin-key-0123456789abcdefghijklmnopqrs"
TTL = 2  # seconds a token of tenant e lives

PKG_A = b"package of tenant a " * 512
PKG_B = b"package of tenant b " * 700
PKG_B2 = b"tenant b, version 2.0.0-b " * 300
PKG_ONLY_B = b"only-b 1.0.0 " * 300
PKG_E = b"tenant e " * 300


def sha(b):
    return hashlib.sha256(b).hexdigest()


def conf(tmp):
    plugins = os.path.join(tmp, "plugins")
    os.makedirs(plugins, exist_ok=True)
    shutil.copy(os.path.join(H.BUILD, "transports", "longpoll.so"), plugins)
    shutil.copy(os.path.join(H.BUILD, "test-plugins", "devrec.so"), plugins)
    return {
        "http": {"max_body": "4MiB"},
        "admin": {"key": ADMIN},
        "plugins": {"dir": plugins, "load": "longpoll, devrec_a"},
        "transport devrec_a": {"file": os.path.join(tmp, "devrec_a.jsonl")},
        "tenant a": {"publish_key": KEY_A, "apps": "mail, open-a", "self_register": "open-a",
                     "self_register_per_min": "0"},
        "tenant b": {"publish_key": KEY_B, "apps": "mail, only-b", "push_policy": "devrec_a"},
        "tenant e": {"publish_key": KEY_E, "apps": "mail", "device_token_ttl": "%ds" % TTL},
    }


class ReleaseAuthMatrix(H.HeraldTestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = H.tempfile.mkdtemp(prefix="herald-relmatrix-")
        cls.addClassCleanup(shutil.rmtree, cls.tmp, True)
        cls.d = d = cls.start_class_daemon(conf(cls.tmp))
        # e first: its token expires while the rest is set up
        t0 = time.time()
        cls.tok_exp = d.provision("mail", "dev-exp", key=KEY_E)
        cls.exp_at = int(cls.tok_exp.split(".")[2])
        assert t0 < cls.exp_at <= t0 + TTL + 2, (t0, cls.tok_exp)
        cls.upload(KEY_E, "mail", "1.0.0", PKG_E)
        # a: a live device, and one whose tokens were revoked
        cls.tok_a = d.provision("mail", "dev-a", key=KEY_A)
        cls.tok_rev = d.provision("mail", "dev-rev", key=KEY_A)
        r = H.curl("DELETE", d.u("/v1/devices/dev-rev/token"), token=KEY_A)
        assert r.status == 204, r
        cls.upload(KEY_A, "mail", "1.0.0", PKG_A)
        # b: the same app and version with other bytes, a version and an app a does not have,
        # a device of its own (with an MSISDN, for the push transport) and one named as a's
        cls.upload(KEY_B, "mail", "1.0.0", PKG_B)
        cls.upload(KEY_B, "mail", "2.0.0-b", PKG_B2)
        cls.upload(KEY_B, "only-b", "1.0.0", PKG_ONLY_B)
        r = H.curl("POST", d.u("/v1/apps/mail/registrations"),
                   {"device": "dev-b", "msisdn": "+49 170 0000001"}, token=KEY_B)
        assert r.status == 201, r
        cls.tok_b = r.json()["token"]
        cls.tok_b_same = d.provision("mail", "dev-a", key=KEY_B)
        cls.mid_b = d.publish("mail", {"for": "b"}, key=KEY_B, to="dev-b")
        H.wait_for(lambda: cls.deliveries(KEY_B, "mail", cls.mid_b).json()["deliveries"], 20,
                   what="b's message handed to devrec_a")
        while time.time() < cls.exp_at + 0.2:
            time.sleep(0.1)

    # -- helpers --
    @classmethod
    def upload(cls, key, app, version, data):
        r = H.curl("POST", cls.d.u("/v1/apps/%s/releases?version=%s" % (app, version)), data,
                   token=key, headers=["Content-Type: application/octet-stream"])
        assert r.status == 201, r
        assert r.json()["sha256"] == sha(data), r
        return r.json()

    @classmethod
    def deliveries(cls, key, app, mid):
        return H.curl("GET", cls.d.u("/v1/apps/%s/messages/%s/deliveries" % (app, mid)),
                      token=key)

    def http(self, method, path, body=None, token=None, headers=()):
        if method == "HEAD":
            return self.head(path, token, headers)
        return H.curl(method, self.d.u(path), body, token=token, headers=headers)

    def head(self, path, token=None, headers=()):
        """HEAD over a raw socket (curl -X HEAD would wait for the announced body)."""
        s = socket.create_connection(("127.0.0.1", self.d.http_port), timeout=20 * H.SLOW)
        try:
            hs = list(headers) + (["Authorization: Bearer " + token] if token else [])
            s.sendall(H.http_request_bytes("HEAD", path, headers=hs + ["Connection: close"]))
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = s.recv(65536)
                self.assertTrue(chunk, "closed before the head: %r" % buf)
                buf += chunk
        finally:
            s.close()
        head = buf.split(b"\r\n\r\n", 1)[0]
        lines = head.decode("iso-8859-1").split("\r\n")
        hdrs = dict((k.strip().lower(), v.strip()) for k, v in
                    (ln.split(":", 1) for ln in lines[1:]))
        # What follows the head is not looked at here: see test_head_error_has_no_body.
        r = H.Response(int(lines[0].split(" ")[1]), hdrs, b"", head.decode("iso-8859-1"))
        r.is_head = True
        return r

    def refused(self, r, status=401, code="unauthorized"):
        if getattr(r, "is_head", False):  # the head of what a GET would answer
            self.assertEqual(r.status, status, r)
            self.assertTrue(r.headers.get("content-type", "").startswith("application/json"), r)
            return None
        return self.assertJsonError(r, status, code)

    def same(self, r1, r2, status, ids=()):
        """Two answers that must not tell apart "in the other tenant" and "nowhere": the same
        status, headers and body bytes once each answer's own ids (pairs (id1, id2)) are put
        aside."""
        self.assertEqual(r1.status, status, r1)
        b1, b2 = r1.body, r2.body
        for i1, i2 in ids:
            b1 = b1.replace(i1.encode(), b"<id>")
            b2 = b2.replace(i2.encode(), b"<id>")
        self.assertEqual((r1.status, b1), (r2.status, b2))
        drop = ("date", "content-length") if ids else ("date",)
        self.assertEqual({k: v for k, v in r1.headers.items() if k not in drop},
                         {k: v for k, v in r2.headers.items() if k not in drop})

    def bad_publisher_creds(self):
        """What a publish-key endpoint must refuse with 401, by kind (the other tenant's key is
        a valid key: it gets that tenant's "not found", checked apart)."""
        return {"none": None, "device token": self.tok_a, "revoked": self.tok_rev,
                "expired": self.tok_exp, "garbage": "x" * 40, "admin key": ADMIN}

    def bad_device_creds(self):
        """(device, token) a device endpoint must refuse with 401, by kind."""
        return {"none": ("dev-a", None),
                "other tenant's token": ("dev-a", self.tok_b),
                "another device's token": ("dev-b", self.tok_b_same),
                "revoked": ("dev-rev", self.tok_rev),
                "expired": ("dev-exp", self.tok_exp),
                "publish key": ("dev-a", KEY_A),
                "other tenant's publish key": ("dev-a", KEY_B),
                "admin key": ("dev-a", ADMIN),
                "garbage": ("dev-a", "a.1.0.AAAA")}

    # -- the release catalog (publish key) --
    def test_catalog_refuses_bad_credentials(self):
        routes = [("POST", "/v1/apps/mail/releases?version=3.0.0", b"new package"),
                  ("GET", "/v1/apps/mail/releases", None),
                  ("GET", "/v1/apps/mail/releases/1.0.0", None),
                  ("PATCH", "/v1/apps/mail/releases/1.0.0", {"state": "withdrawn"}),
                  ("GET", "/v1/reports", None),
                  ("GET", "/v1/reports?app=mail&version=1.0.0", None),
                  ("GET", "/v1/apps/mail/messages/%s/deliveries" % self.mid_b, None)]
        for method, path, body in routes:
            for kind, tok in self.bad_publisher_creds().items():
                with self.subTest(route=(method, path), kind=kind):
                    self.refused(self.http(method, path, body, tok))
        # nothing of that happened: no 3.0.0, a's 1.0.0 still active
        r = self.http("GET", "/v1/apps/mail/releases", token=KEY_A)
        self.assertEqual([(x["version"], x["state"]) for x in r.json()["releases"]],
                         [("1.0.0", "active")])

    def test_catalog_reveals_nothing_of_the_other_tenant(self):
        pairs = [
            # an app only b has, and an app of nobody
            ("POST", "/v1/apps/only-b/releases?version=1.0.0",
             "/v1/apps/nowhere/releases?version=1.0.0", b"pkg", 404),
            ("GET", "/v1/apps/only-b/releases", "/v1/apps/nowhere/releases", None, 404),
            ("GET", "/v1/apps/only-b/releases/1.0.0", "/v1/apps/nowhere/releases/1.0.0", None,
             404),
            ("PATCH", "/v1/apps/only-b/releases/1.0.0", "/v1/apps/nowhere/releases/1.0.0",
             {"state": "paused"}, 404),
            # a version of the shared app id that only b published, and one nobody did
            ("GET", "/v1/apps/mail/releases/2.0.0-b", "/v1/apps/mail/releases/9.9.9", None, 404),
            ("PATCH", "/v1/apps/mail/releases/2.0.0-b", "/v1/apps/mail/releases/9.9.9",
             {"rollout": 0}, 404),
            ("GET", "/v1/reports?app=only-b", "/v1/reports?app=nowhere", None, 200),
            ("GET", "/v1/reports?app=mail&version=2.0.0-b", "/v1/reports?app=mail&version=9.9.9",
             None, 200),
            ("GET", "/v1/reports?app=only-b&version=1.0.0",
             "/v1/reports?app=nowhere&version=1.0.0", None, 200),
        ]
        for method, theirs, nowhere, body, status in pairs:
            with self.subTest(route=(method, theirs)):
                self.same(self.http(method, theirs, body, KEY_A),
                          self.http(method, nowhere, body, KEY_A), status)
        # a's own view of the shared app id: its own release only, its own bytes
        r = self.http("GET", "/v1/apps/mail/releases/1.0.0", token=KEY_A)
        self.assertEqual((r.status, r.json()["sha256"], r.json()["tenant"]), (200, sha(PKG_A),
                                                                            "a"))
        rels = self.http("GET", "/v1/apps/mail/releases", token=KEY_A).json()["releases"]
        self.assertEqual([x["sha256"] for x in rels], [sha(PKG_A)])
        reps = self.http("GET", "/v1/reports", token=KEY_A).json()["reports"]
        self.assertEqual(sorted((x["app"], x["version"]) for x in reps), [("mail", "1.0.0")])
        self.assertEqual(self.http("GET", "/v1/reports?app=mail&version=2.0.0-b",
                                   token=KEY_A).json(), {"reports": []})
        # and b's, through b's key (so that the comparisons above could fail)
        r = self.http("GET", "/v1/apps/mail/releases/2.0.0-b", token=KEY_B)
        self.assertEqual((r.status, r.json()["state"]), (200, "active"))
        self.assertEqual(len(self.http("GET", "/v1/reports?app=only-b",
                                       token=KEY_B).json()["reports"]), 1)

    def test_patch_touches_only_its_own_tenant(self):
        # the same app id and version in both: b pausing its own leaves a's active
        r = self.http("PATCH", "/v1/apps/mail/releases/1.0.0", {"state": "paused"}, KEY_B)
        self.assertEqual((r.status, r.json()["state"], r.json()["tenant"]), (200, "paused", "b"))
        try:
            r = self.http("GET", "/v1/apps/mail/releases/1.0.0", token=KEY_A)
            self.assertEqual((r.json()["state"], r.json()["sha256"]), ("active", sha(PKG_A)))
            # and a's update-check still offers a's release
            r = self.http("POST", "/v1/devices/dev-a/update-check",
                          {"inventory": [{"app": "mail", "version": "0.1"}]}, self.tok_a)
            self.assertEqual([(u["version"], u["sha256"]) for u in r.json()["updates"]],
                             [("1.0.0", sha(PKG_A))])
        finally:
            r = self.http("PATCH", "/v1/apps/mail/releases/1.0.0", {"state": "active"}, KEY_B)
            self.assertEqual(r.status, 200, r)
        # a version only b has, uploaded by another tenant with other bytes: a new release of
        # its own (201), not a conflict (409 would tell that b has it)
        r = self.http("POST", "/v1/apps/mail/releases?version=2.0.0-b", b"other bytes", KEY_E)
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.json()["tenant"], "e")

    def test_deliveries(self):
        d = self.d
        # b sees its message's per-device delivery
        r = self.deliveries(KEY_B, "mail", self.mid_b)
        self.assertEqual(r.status, 200, r)
        self.assertEqual([x["device"] for x in r.json()["deliveries"]], ["dev-b"])
        # a, with the same app id and b's message id, sees what it sees for an id of nobody
        nobody = str(int(self.mid_b) + 1000000)
        self.same(self.deliveries(KEY_A, "mail", self.mid_b),
                  self.deliveries(KEY_A, "mail", nobody), 200, ids=[(self.mid_b, nobody)])
        self.same(self.deliveries(KEY_A, "only-b", self.mid_b),
                  self.deliveries(KEY_A, "nowhere", self.mid_b), 404)
        # a's own message id, asked by b: the same
        mid_a = d.publish("mail", {"for": "a"}, key=KEY_A)
        self.same(self.deliveries(KEY_B, "mail", mid_a),
                  self.deliveries(KEY_B, "mail", nobody), 200, ids=[(mid_a, nobody)])

    # -- device endpoints (device token) --
    def test_update_check_and_install_reports_refuse_bad_credentials(self):
        check = {"inventory": [{"app": "mail", "version": "0.1"}], "msisdn": "491700000009"}
        report = {"app": "mail", "version": "1.0.0", "result": "failure", "reason": "no space"}
        for kind, (dev, tok) in self.bad_device_creds().items():
            with self.subTest(kind=kind):
                self.refused(self.http("POST", "/v1/devices/%s/update-check" % dev, check, tok))
                self.refused(self.http("POST", "/v1/devices/%s/install-reports" % dev, report,
                                       tok))
        # none of these was counted, in either tenant
        for key in (KEY_A, KEY_B):
            reps = self.http("GET", "/v1/reports?app=mail&version=1.0.0", token=key).json()
            self.assertEqual(reps["reports"][0]["failure"], 0, reps)

    def test_update_check_reveals_nothing(self):
        # a's token at b's device and at a device of nobody: alike
        body = {"inventory": [{"app": "mail", "version": "0.1"}]}
        self.same(self.http("POST", "/v1/devices/dev-b/update-check", body, self.tok_a),
                  self.http("POST", "/v1/devices/nobody/update-check", body, self.tok_a), 401)
        # b's app in the inventory of a's device: as an app of nobody
        self.same(self.http("POST", "/v1/devices/dev-a/update-check",
                            {"inventory": [{"app": "only-b", "version": "0.1"}]}, self.tok_a),
                  self.http("POST", "/v1/devices/dev-a/update-check",
                            {"inventory": [{"app": "nowhere", "version": "0.1"}]}, self.tok_a),
                  200)
        # the same app id: each tenant's device is offered its own tenant's newest release
        r = self.http("POST", "/v1/devices/dev-a/update-check", body, self.tok_a)
        self.assertEqual([(u["version"], u["sha256"]) for u in r.json()["updates"]],
                         [("1.0.0", sha(PKG_A))])
        r = self.http("POST", "/v1/devices/dev-a/update-check", body, self.tok_b_same)
        self.assertEqual([(u["version"], u["sha256"]) for u in r.json()["updates"]],
                         [("2.0.0-b", sha(PKG_B2))])

    def test_install_reports_reveal_nothing(self):
        def rep(app, version):
            return self.http("POST", "/v1/devices/dev-a/install-reports",
                             {"app": app, "version": version, "result": "success"}, self.tok_a)
        self.same(rep("only-b", "1.0.0"), rep("nowhere", "1.0.0"), 404)
        self.same(rep("mail", "2.0.0-b"), rep("mail", "9.9.9"), 404)
        self.same(self.http("POST", "/v1/devices/dev-b/install-reports",
                            {"app": "mail", "version": "1.0.0", "result": "success"}, self.tok_a),
                  self.http("POST", "/v1/devices/nobody/install-reports",
                            {"app": "mail", "version": "1.0.0", "result": "success"}, self.tok_a),
                  401)
        # a's report of the shared (app, version) counts for a only
        before_b = self.http("GET", "/v1/reports?app=mail&version=1.0.0",
                             token=KEY_B).json()["reports"][0]["success"]
        self.assertEqual(rep("mail", "1.0.0").status, 201)
        ra = self.http("GET", "/v1/reports?app=mail&version=1.0.0", token=KEY_A).json()
        rb = self.http("GET", "/v1/reports?app=mail&version=1.0.0", token=KEY_B).json()
        self.assertGreaterEqual(ra["reports"][0]["success"], 1)
        self.assertEqual(rb["reports"][0]["success"], before_b)

    # -- downloads (device token + ?device=) --
    def pkg(self, app, version, device=None):
        return "/v1/apps/%s/releases/%s/package%s" % (app, version,
                                                      "?device=" + device if device else "")

    def test_download_refuses_bad_credentials(self):
        for method in ("GET", "HEAD"):
            for kind, (dev, tok) in self.bad_device_creds().items():
                with self.subTest(method=method, kind=kind):
                    self.refused(self.http(method, self.pkg("mail", "1.0.0", dev), token=tok))
                    # the device named in the header instead of the query
                    self.refused(self.http(method, self.pkg("mail", "1.0.0"), token=tok,
                                           headers=["X-Herald-Device: " + dev]))
            with self.subTest(method=method, kind="no device named"):
                self.refused(self.http(method, self.pkg("mail", "1.0.0"), token=self.tok_a))
            with self.subTest(method=method, kind="another device named"):
                self.refused(self.http(method, self.pkg("mail", "1.0.0", "dev-rev"),
                                       token=self.tok_a))

    def test_head_error_has_no_body(self):
        """An error answer to HEAD (401, 404, 416 ...) carries no body (RFC 9112 §6.3): a
        client reads the head only, so a body would be taken for the start of the next answer
        on the connection. Here a HEAD 401 with a GET /healthz pipelined behind it."""
        s = socket.create_connection(("127.0.0.1", self.d.http_port), timeout=20 * H.SLOW)
        self.addCleanup(s.close)
        s.sendall(H.http_request_bytes("HEAD", self.pkg("mail", "1.0.0", "dev-a")) +
                  H.http_request_bytes("GET", "/healthz", headers=["Connection: close"]))
        buf = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        head, rest = buf.split(b"\r\n\r\n", 1)
        self.assertTrue(head.startswith(b"HTTP/1.1 401 "), head)
        # the next bytes must be the second answer's status line
        self.assertTrue(rest.startswith(b"HTTP/1.1 200 "), rest[:120])

    def test_download_reveals_nothing(self):
        for method in ("GET", "HEAD"):
            with self.subTest(method=method):
                self.same(self.http(method, self.pkg("mail", "2.0.0-b", "dev-a"), token=self.tok_a),
                          self.http(method, self.pkg("mail", "9.9.9", "dev-a"), token=self.tok_a),
                          404)
                self.same(self.http(method, self.pkg("only-b", "1.0.0", "dev-a"), token=self.tok_a),
                          self.http(method, self.pkg("nowhere", "1.0.0", "dev-a"),
                                    token=self.tok_a), 404)
                self.same(self.http(method, self.pkg("mail", "1.0.0", "dev-b"), token=self.tok_a),
                          self.http(method, self.pkg("mail", "1.0.0", "nobody"), token=self.tok_a),
                          401)
        # the same app id, version and device id in both: each gets its own tenant's bytes
        for tok, data, store in [(self.tok_a, PKG_A, "a"), (self.tok_b_same, PKG_B, "b")]:
            r = self.http("GET", self.pkg("mail", "1.0.0", "dev-a"), token=tok)
            self.assertEqual((r.status, sha(r.body), r.headers["x-herald-store"]),
                             (200, sha(data), store))

    # -- registration with an MSISDN --
    def test_registration_msisdn(self):
        body = {"device": "new-dev", "msisdn": "491700000042"}
        for kind, tok in [("none", None), ("revoked", self.tok_rev), ("expired", self.tok_exp),
                          ("garbage", "x" * 40), ("admin key", ADMIN)]:
            with self.subTest(kind=kind):
                self.refused(self.http("POST", "/v1/apps/mail/registrations", body, tok))
        # the other tenant's key: b's app and an app of nobody alike
        self.same(self.http("POST", "/v1/apps/only-b/registrations", body, KEY_A),
                  self.http("POST", "/v1/apps/nowhere/registrations", body, KEY_A), 404)
        # a device token adding an app: b's app, an app of nobody; b's device, a device of
        # nobody
        self.same(self.http("POST", "/v1/apps/only-b/registrations",
                            {"device": "dev-a", "msisdn": "491700000042"}, self.tok_a),
                  self.http("POST", "/v1/apps/nowhere/registrations",
                            {"device": "dev-a", "msisdn": "491700000042"}, self.tok_a), 401)
        self.same(self.http("POST", "/v1/apps/mail/registrations",
                            {"device": "dev-b", "msisdn": "491700000042"}, self.tok_a),
                  self.http("POST", "/v1/apps/mail/registrations",
                            {"device": "nobody", "msisdn": "491700000042"}, self.tok_a), 401)
        # keyless: b's app named with tenant a, and an app of nobody in a tenant of nobody
        self.same(self.http("POST", "/v1/apps/only-b/registrations?tenant=a",
                            {"msisdn": "491700000042"}),
                  self.http("POST", "/v1/apps/nowhere/registrations?tenant=nosuch",
                            {"msisdn": "491700000042"}), 401)
        # b's device kept its own number: its deliveries still go to it (devrec records it)
        with open(os.path.join(self.tmp, "devrec_a.jsonl")) as f:
            got = [json.loads(ln) for ln in f if ln.strip()]
        self.assertEqual({(x["device"], x["msisdn"]) for x in got}, {("dev-b", "491700000001")})

    # -- the admin API (admin key; loopback) --
    def test_admin_api(self):
        routes = [("GET", "/v1/admin/tenants", None),
                  ("POST", "/v1/admin/tenants", {"name": "made-by-matrix"}),
                  ("GET", "/v1/admin/tenants/a", None),
                  ("POST", "/v1/admin/tenants/a/rotate-key", {}),
                  ("POST", "/v1/admin/tenants/b/rotate-key", {})]
        creds = {"none": None, "publish key": KEY_A, "other publish key": KEY_B,
                 "device token": self.tok_a, "revoked": self.tok_rev, "expired": self.tok_exp,
                 "garbage": "y" * len(ADMIN), "admin key with one byte more": ADMIN + "x"}
        for method, path, body in routes:
            for kind, tok in creds.items():
                with self.subTest(route=(method, path), kind=kind):
                    self.refused(self.http(method, path, body, tok))
        # a publish key learns nothing about which tenants exist
        self.same(self.http("GET", "/v1/admin/tenants/b", token=KEY_A),
                  self.http("GET", "/v1/admin/tenants/nosuch", token=KEY_A), 401)
        # nothing was created or rotated: both keys still work
        r = self.http("GET", "/v1/admin/tenants", token=ADMIN)
        self.assertEqual(r.status, 200, r)
        self.assertNotIn("made-by-matrix", [t["name"] for t in r.json()["tenants"]])
        for key in (KEY_A, KEY_B):
            self.assertEqual(self.http("GET", "/v1/apps/mail/releases", token=key).status, 200)

    # -- ZeroMQ publish with "batch" --
    def test_zmq_batch(self):
        batch = [{"data": 1}, {"data": 2, "to": "dev-a"}]
        cases = {"none": {"tenant": "a", "app": "mail", "batch": batch},
                 "other tenant's key": {"tenant": "a", "key": KEY_B, "app": "mail",
                                        "batch": batch},
                 "other tenant named": {"tenant": "b", "key": KEY_A, "app": "mail",
                                        "batch": batch},
                 "device token": {"tenant": "a", "key": self.tok_a, "app": "mail",
                                  "batch": batch},
                 "revoked": {"tenant": "a", "key": self.tok_rev, "app": "mail", "batch": batch},
                 "expired": {"tenant": "e", "key": self.tok_exp, "app": "mail", "batch": batch},
                 "admin key": {"tenant": "a", "key": ADMIN, "app": "mail", "batch": batch},
                 "tenant of nobody": {"tenant": "nosuch", "key": KEY_A, "app": "mail",
                                      "batch": batch}}
        answers = []
        for kind, req in cases.items():
            with self.subTest(kind=kind):
                rep = H.zmq_req(self.d.zmq_ingress, req)
                self.assertEqual(rep.get("error"), "unauthorized", rep)
                self.assertNotIn("ids", rep)
                if "key" in req:
                    answers.append(rep)
        # one answer for every key that does not open the tenant named, whether that tenant
        # exists or not
        self.assertEqual(len({repr(sorted(a.items())) for a in answers}), 1, answers)
        # b's app with a's key: each message refused as for an app of nobody
        theirs = H.zmq_req(self.d.zmq_ingress, {"tenant": "a", "key": KEY_A, "app": "only-b",
                                                "batch": batch})
        nowhere = H.zmq_req(self.d.zmq_ingress, {"tenant": "a", "key": KEY_A, "app": "nowhere",
                                                 "batch": batch})
        self.assertEqual(theirs, nowhere)
        self.assertEqual(theirs["ids"], [None, None], theirs)
        self.assertEqual([e["error"] for e in theirs["errors"]], ["not_found", "not_found"])
        # a's batch to the shared app id reaches a's devices only
        ok = H.zmq_req(self.d.zmq_ingress, {"tenant": "a", "key": KEY_A, "app": "mail",
                                            "batch": batch})
        self.assertNotIn("errors", ok)
        ids = ok["ids"]
        got_a = [m["id"] for m in self.d.poll("dev-a", self.tok_a)["messages"]]
        self.assertTrue(set(ids) <= set(got_a), (ids, got_a))
        got_b = [m["id"] for m in self.d.poll("dev-a", self.tok_b_same)["messages"]]
        self.assertFalse(set(ids) & set(got_b), (ids, got_b))


if __name__ == "__main__":
    H.main()
