#!/usr/bin/env python3
"""Every endpoint and frame type against every kind of bad credential (issue 8):

- HTTP routes (publish, the three registration modes, poll, ack, token rotate and revoke),
  ZeroMQ publish and the ipconn hello, each × (no credentials, another tenant's credentials,
  a revoked device token, an expired device token): refused with 401 (HTTP), the "auth" deny
  reason (ipconn) or "unauthorized" (ZeroMQ);
- nothing of another tenant is revealed: the answer for an app or device that exists in
  another tenant is byte for byte the answer for one that exists nowhere;
- rotation: a publish key overlap (the previous key works until previous_key_until, then 401);
  device token rotation (the old token is refused at once, the new one works) and revocation.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import herald_harness as H  # noqa: E402
from ipconn_harness import RawClient, ipconn_conf, ipconn_port  # noqa: E402

KEY_A = "matrix-a-key-0123456789abcdefghijklmnopqrstuvwxyz"
KEY_B = "matrix-b-key-9876543210ZYXWVUTSRQPONMLKJIHGFEDCBA"
KEY_E = "matrix-e-key-000000000000000000000000000000000000"
TTL = 2  # seconds a token of tenant e lives


def conf():
    c = ipconn_conf(auth_fail_delay=0)  # no throttling: this test fails many hellos on purpose
    c.update({
        "tenant a": {"publish_key": KEY_A, "apps": "app-a, open-a", "self_register": "open-a",
                     "self_register_per_min": "0"},
        "tenant b": {"publish_key": KEY_B, "apps": "app-b, open-b", "self_register": "open-b",
                     "self_register_per_min": "0"},
        "tenant e": {"publish_key": KEY_E, "apps": "app-e", "device_token_ttl": "%ds" % TTL},
    })
    return c


class AuthMatrix(H.HeraldTestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = cls.start_class_daemon(conf())
        d = cls.d
        cls.port = ipconn_port(d)
        # a: a live device, and one whose token was revoked
        cls.tok_a = d.provision("app-a", "dev-a", key=KEY_A)
        cls.tok_rev = d.provision("app-a", "dev-rev", key=KEY_A)
        r = H.curl("DELETE", d.u("/v1/devices/dev-rev/token"), token=KEY_A)
        assert r.status == 204, r
        # b: a device only b has, and one with the same id as a's
        cls.tok_b = d.provision("app-b", "dev-b", key=KEY_B)
        cls.tok_b_same = d.provision("app-b", "dev-a", key=KEY_B)
        # e: a token that expires
        t0 = time.time()
        cls.tok_exp = d.provision("app-e", "dev-exp", key=KEY_E)
        cls.exp_at = int(cls.tok_exp.split(".")[2])
        assert t0 < cls.exp_at <= t0 + TTL + 2, (t0, cls.tok_exp)
        while time.time() < cls.exp_at + 0.2:
            time.sleep(0.1)

    # -- helpers --
    def http(self, method, path, body=None, token=None, headers=()):
        return H.curl(method, self.d.u(path), body, token=token, headers=headers)

    def refused(self, r, status=401, code="unauthorized"):
        return self.assertJsonError(r, status, code)

    def same(self, r1, r2, status):
        """Two answers that must not tell apart "in another tenant" and "nowhere"."""
        self.assertEqual(r1.status, status, r1)
        self.assertEqual((r1.status, r1.body), (r2.status, r2.body))

    def bad_tokens(self):
        """(device, token) pairs a device-token endpoint must refuse, by kind."""
        return {"none": ("dev-a", None),
                "other tenant": ("dev-a", self.tok_b),  # a token of b's, at a's device
                "revoked": ("dev-rev", self.tok_rev),
                "expired": ("dev-exp", self.tok_exp)}

    # -- HTTP --
    def test_publish(self):
        for kind, tok in [("none", None), ("revoked", self.tok_rev), ("expired", self.tok_exp),
                          ("device token", self.tok_a)]:
            with self.subTest(kind):
                self.refused(self.http("POST", "/v1/apps/app-a/messages", {"data": 1}, tok))
        # another tenant's key: b's app and an app of nobody answer alike
        self.same(self.http("POST", "/v1/apps/app-b/messages", {"data": 1}, KEY_A),
                  self.http("POST", "/v1/apps/nowhere/messages", {"data": 1}, KEY_A), 404)
        self.refused(self.http("POST", "/v1/apps/app-a/messages", {"data": 1}, KEY_B), 404,
                     "not_found")
        self.assertEqual(self.http("POST", "/v1/apps/app-a/messages", {"data": 1}, KEY_A).status,
                         202)

    def test_register_provision(self):
        body = {"device": "new-dev"}
        for kind, tok in [("none", None), ("revoked", self.tok_rev), ("expired", self.tok_exp)]:
            with self.subTest(kind):
                self.refused(self.http("POST", "/v1/apps/app-a/registrations", body, tok))
        self.same(self.http("POST", "/v1/apps/app-b/registrations", body, KEY_A),
                  self.http("POST", "/v1/apps/nowhere/registrations", body, KEY_A), 404)

    def test_register_existing_device(self):
        for kind, (dev, tok) in self.bad_tokens().items():
            with self.subTest(kind):
                self.refused(self.http("POST", "/v1/apps/open-a/registrations",
                                       {"device": dev}, tok))
        # a's token for b's open app, and for an app of nobody
        self.same(self.http("POST", "/v1/apps/open-b/registrations", {"device": "dev-a"},
                            self.tok_a),
                  self.http("POST", "/v1/apps/nowhere/registrations", {"device": "dev-a"},
                            self.tok_a), 401)
        r = self.http("POST", "/v1/apps/open-a/registrations", {"device": "dev-a"}, self.tok_a)
        self.assertEqual(r.status, 201, r)

    def test_register_keyless(self):
        # the tenant named owns no such app: the same as an app of nobody in a tenant of nobody
        self.same(self.http("POST", "/v1/apps/open-b/registrations?tenant=a", b""),
                  self.http("POST", "/v1/apps/nowhere/registrations?tenant=nosuch", b""), 401)
        self.same(self.http("POST", "/v1/apps/open-b/registrations?tenant=a", b""),
                  self.http("POST", "/v1/apps/nowhere/registrations?tenant=a", b""), 401)
        # a revoked or expired token with no device named is not a keyless registration
        for kind, tok in [("revoked", self.tok_rev), ("expired", self.tok_exp)]:
            with self.subTest(kind):
                self.refused(self.http("POST", "/v1/apps/open-a/registrations?tenant=a", b"",
                                       tok))

    def test_poll_and_ack(self):
        for kind, (dev, tok) in self.bad_tokens().items():
            with self.subTest(kind):
                self.refused(self.http("GET", "/v1/devices/%s/messages" % dev, token=tok))
                self.refused(self.http("POST", "/v1/devices/%s/acks" % dev, {"ids": ["1"]},
                                       tok))
        # a's token at b's device and at a device of nobody: alike
        for path, body in [("/v1/devices/%s/messages", None), ("/v1/devices/%s/acks",
                                                               {"ids": ["1"]})]:
            method = "GET" if body is None else "POST"
            self.same(self.http(method, path % "dev-b", body, self.tok_a),
                      self.http(method, path % "nobody", body, self.tok_a), 401)
        self.assertEqual(self.http("GET", "/v1/devices/dev-a/messages", token=self.tok_a).status,
                         200)

    def test_token_rotate_and_revoke(self):
        for kind, (dev, tok) in self.bad_tokens().items():
            with self.subTest(kind):
                self.refused(self.http("POST", "/v1/devices/%s/token" % dev, token=tok))
                self.refused(self.http("DELETE", "/v1/devices/%s/token" % dev, token=tok))
        # a device's own (valid) token may rotate but never revoke
        self.refused(self.http("DELETE", "/v1/devices/dev-a/token", token=self.tok_a))
        # b's token for its own device of the same id does not reach a's device: it names b
        r = self.http("GET", "/v1/devices/dev-a/messages", token=self.tok_b_same)
        self.assertEqual(r.status, 200, r)
        # another tenant's key: b's device and a device of nobody answer alike
        for method in ["POST", "DELETE"]:
            self.same(self.http(method, "/v1/devices/dev-b/token", token=KEY_A),
                      self.http(method, "/v1/devices/nobody/token", token=KEY_A), 404)
            self.same(self.http(method, "/v1/devices/dev-b/token", token=self.tok_a),
                      self.http(method, "/v1/devices/nobody/token", token=self.tok_a), 401)
        # b's own devices are untouched
        self.assertEqual(self.http("GET", "/v1/devices/dev-b/messages", token=self.tok_b).status,
                         200)

    # -- ZeroMQ --
    def test_zmq_publish(self):
        cases = {"none": {"tenant": "a", "app": "app-a", "data": 1},
                 "other tenant": {"tenant": "a", "key": KEY_B, "app": "app-a", "data": 1},
                 "revoked": {"tenant": "a", "key": self.tok_rev, "app": "app-a", "data": 1},
                 "expired": {"tenant": "e", "key": self.tok_exp, "app": "app-e", "data": 1}}
        for kind, req in cases.items():
            with self.subTest(kind):
                rep = H.zmq_req(self.d.zmq_ingress, req)
                self.assertEqual(rep.get("error"), "unauthorized", rep)
                self.assertNotIn("id", rep)
        ok = H.zmq_req(self.d.zmq_ingress, {"tenant": "a", "key": KEY_A, "app": "app-a",
                                            "data": 1})
        self.assertIn("id", ok)

    # -- ipconn --
    def hello(self, device, token, tenant):
        c = RawClient(self.port)
        try:
            return c.hello(device, token, tenant=tenant)
        finally:
            c.close()

    def test_ipconn_hello(self):
        # a hello must carry a token: without one it is malformed, refused before any lookup
        c = RawClient(self.port)
        c.send({"t": "hello", "v": 1, "device": "dev-a", "tenant": "a"})
        f = c.recv()
        c.close()
        self.assertEqual((f["t"], f["code"]), ("deny", "proto"), f)
        cases = {"garbage": ("dev-a", "x", "a"),
                 "other tenant": ("dev-a", self.tok_b, "a"),
                 "other tenant named": ("dev-a", self.tok_b, "b"),
                 "same id in the other tenant": ("dev-a", self.tok_b_same, "a"),
                 "revoked": ("dev-rev", self.tok_rev, "a"),
                 "expired": ("dev-exp", self.tok_exp, "e")}
        answers = []
        for kind, (dev, tok, tenant) in cases.items():
            with self.subTest(kind):
                f = self.hello(dev, tok, tenant)
                self.assertEqual((f["t"], f["code"]), ("deny", "auth"), f)
                answers.append(f)
        self.assertEqual(len({repr(sorted(f.items())) for f in answers}), 1, answers)
        # b's device with a's token: the same as a device of nobody
        self.assertEqual(self.hello("dev-b", self.tok_a, "a"),
                         self.hello("nobody", self.tok_a, "a"))
        f = self.hello("dev-a", self.tok_a, "a")
        self.assertEqual(f["t"], "welcome", f)


class Rotation(H.HeraldTestCase):
    def test_publish_key_overlap(self):
        new, old = KEY_A, "matrix-old-key-00000000000000000000000000000000"
        until = int(time.time()) + 4
        d = self.start_daemon({"tenant a": {"publish_key": new, "previous_publish_key": old,
                                            "previous_key_until": str(until), "apps": "app"}})
        pub = lambda k: H.curl("POST", d.u("/v1/apps/app/messages"), {"data": 1}, token=k)
        self.assertEqual(pub(new).status, 202)
        self.assertEqual(pub(old).status, 202)
        rep = H.zmq_req(d.zmq_ingress, {"tenant": "a", "key": old, "app": "app", "data": 1})
        self.assertIn("id", rep)
        while time.time() < until + 0.2:
            time.sleep(0.1)
        self.assertJsonError(pub(old), 401, "unauthorized")
        rep = H.zmq_req(d.zmq_ingress, {"tenant": "a", "key": old, "app": "app", "data": 1})
        self.assertEqual(rep.get("error"), "unauthorized", rep)
        self.assertEqual(pub(new).status, 202)

    def test_overlap_time_rfc3339(self):
        # an overlap that ended long ago, written as RFC 3339: the old key is refused
        new, old = KEY_A, "matrix-old-key-00000000000000000000000000000000"
        d = self.start_daemon({"tenant a": {"publish_key": new, "previous_publish_key": old,
                                            "previous_key_until": "2001-02-03T04:05:06Z",
                                            "apps": "app"}})
        r = H.curl("POST", d.u("/v1/apps/app/messages"), {"data": 1}, token=old)
        self.assertJsonError(r, 401, "unauthorized")

    def test_device_token_rotate_and_revoke(self):
        d = self.start_daemon(conf())
        port = ipconn_port(d)
        t1 = d.provision("app-a", "phone", key=KEY_A)
        m1 = d.publish("app-a", "one", key=KEY_A)
        # the device rotates its own token
        r = H.curl("POST", d.u("/v1/devices/phone/token"), token=t1)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["device"], "phone")
        t2 = r.json()["token"]
        self.assertNotEqual(t1, t2)
        self.assertTrue(t2.startswith("a.2.0."), t2)
        self.assertJsonError(H.curl("GET", d.u("/v1/devices/phone/messages"), token=t1), 401,
                             "unauthorized")
        self.assertJsonError(H.curl("POST", d.u("/v1/devices/phone/token"), token=t1), 401,
                             "unauthorized")
        self.assertEqual([m["id"] for m in d.poll("phone", t2)["messages"]], [m1])
        c = RawClient(port)
        self.assertEqual(c.hello("phone", t1, tenant="a")["code"], "auth")
        c.close()
        c = RawClient(port)
        self.assertEqual(c.hello("phone", t2, tenant="a")["t"], "welcome")
        c.close()
        # the back end rotates it with the publish key
        r = H.curl("POST", d.u("/v1/devices/phone/token"), token=KEY_A)
        self.assertEqual(r.status, 200, r)
        t3 = r.json()["token"]
        self.assertJsonError(H.curl("GET", d.u("/v1/devices/phone/messages"), token=t2), 401,
                             "unauthorized")
        self.assertEqual(d.poll("phone", t3)["messages"][0]["id"], m1)
        # revoked: no token works, not even for registering another app or rotating
        r = H.curl("DELETE", d.u("/v1/devices/phone/token"), token=KEY_A)
        self.assertEqual((r.status, r.body), (204, b""), r)
        self.assertJsonError(H.curl("GET", d.u("/v1/devices/phone/messages"), token=t3), 401,
                             "unauthorized")
        self.assertJsonError(H.curl("POST", d.u("/v1/apps/open-a/registrations"),
                                    {"device": "phone"}, token=t3), 401, "unauthorized")
        self.assertJsonError(H.curl("POST", d.u("/v1/devices/phone/token"), token=t3), 401,
                             "unauthorized")
        # the publish key can hand it a new one; messages were kept all along
        r = H.curl("POST", d.u("/v1/devices/phone/token"), token=KEY_A)
        t5 = r.json()["token"]
        self.assertTrue(t5.startswith("a.5.0."), t5)
        self.assertEqual([m["id"] for m in d.poll("phone", t5)["messages"]], [m1])
        # a bad device id with the key is a bad request, not a lookup
        self.assertJsonError(H.curl("POST", d.u("/v1/devices/bad%20id/token"), token=KEY_A), 400,
                             "bad_request")


if __name__ == "__main__":
    H.main()
