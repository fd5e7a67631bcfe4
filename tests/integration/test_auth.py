#!/usr/bin/python3
"""Publish keys, tenants, device registration and its rate limit."""
import itertools

import herald_harness as H

KEY_A = "tenant-a-key-0123456789abcdefghijklmnopqrstuvwxyz"
KEY_B = "tenant_b_KEY_9876543210ZYXWVUTSRQPONMLKJIHGFEDCBA"
KEY_L = "limited-tenant-key-000000000000000000000000000000"
_n = itertools.count(1)


def uniq(prefix):
    return "%s-%d" % (prefix, next(_n))


CONF = {
    # the default tenant keeps a generated key, any app, everything open
    "tenant default": {"apps": "*", "self_register": "*"},
    "tenant a": {"publish_key": KEY_A, "apps": "app-a, open-a, closed-a",
                 "self_register": "open-a", "self_register_per_min": "0"},
    "tenant b": {"publish_key": KEY_B, "apps": "app-b, open-b", "self_register": "open-b",
                 "self_register_per_min": "0"},
    "tenant limited": {"publish_key": KEY_L, "apps": "rl", "self_register": "*",
                       "self_register_per_min": "3"},
}


class Auth(H.HeraldTestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = cls.start_class_daemon(CONF)

    def pub_url(self, app):
        return self.d.u("/v1/apps/%s/messages" % app)

    def reg_url(self, app, query=""):
        return self.d.u("/v1/apps/%s/registrations%s" % (app, query))

    # -- 6. publish keys --
    def test_http_publish_wrong_or_missing_key_is_401(self):
        d = self.d
        body = {"data": "x"}
        for token in [None, "wrong-key-but-long-enough-000000000000000", KEY_A[:-1], KEY_A + "x",
                      "", "default.1.notatoken"]:
            r = H.curl("POST", self.pub_url("app-a"), body, token=token)
            self.assertJsonError(r, 401, "unauthorized")
        for hdr in ["Authorization: Basic " + KEY_A, "Authorization: " + KEY_A,
                    "Authorization: Bearer"]:
            r = H.curl("POST", self.pub_url("app-a"), body, headers=[hdr])
            self.assertJsonError(r, 401, "unauthorized")
        self.assertEqual(H.curl("POST", self.pub_url("app-a"), body, token=KEY_A).status, 202)
        # the generated key of the default tenant works, and only for its tenant
        self.assertEqual(H.curl("POST", self.pub_url("anything"), body, token=d.key).status, 202)

    def test_other_tenants_app_is_404(self):
        body = {"data": "x"}
        # a's key, b's app (a does not declare it): not found, and the same answer as for an
        # app that exists nowhere
        r1 = H.curl("POST", self.pub_url("app-b"), body, token=KEY_A)
        r2 = H.curl("POST", self.pub_url("no-such-app"), body, token=KEY_A)
        j1 = self.assertJsonError(r1, 404, "not_found")
        j2 = self.assertJsonError(r2, 404, "not_found")
        self.assertEqual(j1, j2)
        self.assertJsonError(H.curl("POST", self.pub_url("app-a"), body, token=KEY_B), 404,
                             "not_found")
        # provisioning into another tenant's app: the same
        r = H.curl("POST", self.reg_url("app-b"), {"device": "x1"}, token=KEY_A)
        self.assertJsonError(r, 404, "not_found")
        # the right keys work
        self.assertEqual(H.curl("POST", self.pub_url("app-b"), body, token=KEY_B).status, 202)

    def test_zmq_wrong_or_missing_key(self):
        d = self.d
        cases = [
            {"key": "wrong-key-but-long-enough-000000000000000", "app": "app-a", "data": 1},
            {"tenant": "a", "key": "nope", "app": "app-a", "data": 1},
            {"app": "app-a", "data": 1},  # missing key
            {"tenant": "b", "key": KEY_A, "app": "app-b", "data": 1},  # a's key, b's tenant
            {"tenant": "a", "key": KEY_A[:-1], "app": "app-a", "data": 1},
            {"tenant": "no-such-tenant", "key": KEY_A, "app": "app-a", "data": 1},
            {"key": KEY_A, "app": "app-a", "data": 1},  # tenant defaults to "default"
        ]
        for c in cases:
            rep = H.zmq_req(d.zmq_ingress, c)
            self.assertEqual(rep.get("error"), "unauthorized", (c, rep))
            self.assertIsInstance(rep.get("message"), str)
            self.assertNotIn("id", rep)
        ok = H.zmq_req(d.zmq_ingress, {"tenant": "a", "key": KEY_A, "app": "app-a", "data": 1})
        self.assertIn("id", ok)

    def test_zmq_other_tenants_app(self):
        d = self.d
        rep = H.zmq_req(d.zmq_ingress, {"tenant": "a", "key": KEY_A, "app": "app-b", "data": 1})
        self.assertEqual(rep.get("error"), "not_found", rep)
        rep = H.zmq_req(d.zmq_ingress, {"tenant": "b", "key": KEY_B, "app": "app-b", "data": 1})
        self.assertIn("id", rep)

    def test_tenants_are_isolated(self):
        d = self.d
        # the same device id in two tenants is two devices
        ta = d.provision("app-a", "shared-id", key=KEY_A)
        tb = d.provision("app-b", "shared-id", key=KEY_B)
        self.assertNotEqual(ta, tb)
        ma = d.publish("app-a", "for a", key=KEY_A)
        mb = d.publish("app-b", "for b", key=KEY_B)
        self.assertEqual([m["id"] for m in d.poll("shared-id", ta)["messages"]], [ma])
        self.assertEqual([m["id"] for m in d.poll("shared-id", tb)["messages"]], [mb])
        # b's key cannot address a's device, even directly
        r = d.publish("app-b", "x", key=KEY_B, to="shared-id")  # b's own shared-id: fine
        self.assertEqual([m["id"] for m in d.poll("shared-id", tb, cursor=mb)["messages"]], [r])
        self.assertEqual(d.poll("shared-id", ta, cursor=ma)["messages"], [])

    # -- 7. registrations --
    def test_provision_is_repeatable(self):
        d = self.d
        dev = uniq("prov")
        t1 = d.provision("app-a", dev, key=KEY_A)
        t2 = d.provision("app-a", dev, key=KEY_A)
        self.assertEqual(t1, t2)  # provisioning again does not revoke the device's token
        self.assertEqual(d.poll(dev, t1)["messages"], [])
        r = H.curl("POST", self.reg_url("app-a"), {}, token=KEY_A)  # no device named
        self.assertJsonError(r, 400, "bad_request")
        r = H.curl("POST", self.reg_url("app-a"), {"device": "bad id!"}, token=KEY_A)
        self.assertJsonError(r, 400, "bad_request")
        r = H.curl("POST", self.reg_url("app-a"), {"device": 5}, token=KEY_A)
        self.assertJsonError(r, 400, "bad_request")

    def test_claiming_existing_device_is_refused(self):
        d = self.d
        victim = uniq("victim")
        tv = d.provision("open-a", victim, key=KEY_A)
        other = uniq("other")
        to = d.provision("open-a", other, key=KEY_A)
        # no credentials, naming the device
        r = H.curl("POST", self.reg_url("open-a"), {"device": victim})
        self.assertJsonError(r, 401, "unauthorized")
        r = H.curl("POST", self.reg_url("open-a", "?tenant=a"), {"device": victim})
        self.assertJsonError(r, 401, "unauthorized")
        # another device's token
        r = H.curl("POST", self.reg_url("open-a"), {"device": victim}, token=to)
        self.assertJsonError(r, 401, "unauthorized")
        # garbage and forged tokens
        for tok in ["x", "a.1.xxxx", tv.rsplit(".", 1)[0] + ".AAAA", tv.replace("a.1.", "a.2."),
                    tv.replace("a.1.", "b.1."), tv.replace("a.1.", "default.1.")]:
            r = H.curl("POST", self.reg_url("open-a"), {"device": victim}, token=tok)
            self.assertJsonError(r, 401, "unauthorized")
        # another tenant's publish key: that tenant has no such app
        r = H.curl("POST", self.reg_url("open-a"), {"device": victim}, token=KEY_B)
        self.assertJsonError(r, 404, "not_found")
        # a new device id without credentials is refused too (no naming without a key)
        r = H.curl("POST", self.reg_url("open-a"), {"device": uniq("fresh")})
        self.assertJsonError(r, 401, "unauthorized")
        # the victim's token still works, and nobody else got a token for it
        self.assertEqual(d.poll(victim, tv)["messages"], [])

    def test_device_token_adds_open_app(self):
        d = self.d
        dev = uniq("multi")
        tok = d.provision("app-a", dev, key=KEY_A)
        r = H.curl("POST", self.reg_url("open-a"), {"device": dev}, token=tok)
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.json()["device"], dev)
        # a closed app needs the publish key even with the device's own token
        r = H.curl("POST", self.reg_url("closed-a"), {"device": dev}, token=tok)
        self.assertJsonError(r, 401, "unauthorized")
        # another tenant's open app: the token names tenant a, so no
        r = H.curl("POST", self.reg_url("open-b"), {"device": dev}, token=tok)
        self.assertJsonError(r, 401, "unauthorized")
        m1 = d.publish("open-a", "via open", key=KEY_A)
        m2 = d.publish("app-a", "via provisioned", key=KEY_A)
        self.assertEqual([m["id"] for m in d.poll(dev, tok)["messages"]], [m1, m2])

    def test_self_registration_open_app(self):
        d = self.d
        # default tenant: everything open, no tenant given
        r = H.curl("POST", self.reg_url("selfreg"), b"")
        self.assertEqual(r.status, 201, r)
        j = r.json()
        dev, tok = j["device"], j["token"]
        self.assertGreaterEqual(len(dev), 16)
        self.assertEqual(d.poll(dev, tok)["messages"], [])
        mid = d.publish("selfreg", {"hi": "there"})
        self.assertEqual([(m["id"], m["data"]) for m in d.poll(dev, tok)["messages"]],
                         [(mid, {"hi": "there"})])
        # a second registration gets another device
        r2 = H.curl("POST", self.reg_url("selfreg"), b"")
        self.assertEqual(r2.status, 201, r2)
        self.assertNotEqual(r2.json()["device"], dev)
        # an empty JSON object counts as no body
        self.assertEqual(H.curl("POST", self.reg_url("selfreg"), {}).status, 201)

    def test_self_registration_other_tenant_by_query_and_header(self):
        d = self.d
        r = H.curl("POST", self.reg_url("open-a", "?tenant=a"), b"")
        self.assertEqual(r.status, 201, r)
        dev, tok = r.json()["device"], r.json()["token"]
        r = H.curl("POST", self.reg_url("open-b"), b"", headers=["Herald-Tenant: b"])
        self.assertEqual(r.status, 201, r)
        devb, tokb = r.json()["device"], r.json()["token"]
        ma = d.publish("open-a", "a", key=KEY_A)
        mb = d.publish("open-b", "b", key=KEY_B)
        self.assertEqual([m["id"] for m in d.poll(dev, tok)["messages"]], [ma])
        self.assertEqual([m["id"] for m in d.poll(devb, tokb)["messages"]], [mb])
        # the tenant must own the app: open-b in tenant a does not exist
        r = H.curl("POST", self.reg_url("open-b", "?tenant=a"), b"")
        self.assertJsonError(r, 401, "unauthorized")
        r = H.curl("POST", self.reg_url("open-a", "?tenant=nosuch"), b"")
        self.assertJsonError(r, 401, "unauthorized")

    def test_self_registration_closed_app_is_401(self):
        r = H.curl("POST", self.reg_url("closed-a", "?tenant=a"), b"")
        self.assertJsonError(r, 401, "unauthorized")
        r = H.curl("POST", self.reg_url("app-b"), b"", headers=["Herald-Tenant: b"])
        self.assertJsonError(r, 401, "unauthorized")
        # and publishing to it with the key provisions fine
        self.assertEqual(H.curl("POST", self.reg_url("closed-a"), {"device": uniq("c")},
                                token=KEY_A).status, 201)

    def test_self_registration_rate_limit(self):
        q = "?tenant=limited"
        codes = []
        for _ in range(3):
            r = H.curl("POST", self.reg_url("rl", q), b"")
            codes.append(r.status)
            self.assertEqual(r.status, 201, r)
        r = H.curl("POST", self.reg_url("rl", q), b"")
        self.assertJsonError(r, 429, "rate_limited")
        r = H.curl("POST", self.reg_url("rl", q), b"")
        self.assertJsonError(r, 429, "rate_limited")
        # provisioning with the key is not rate-limited
        for i in range(5):
            self.assertEqual(H.curl("POST", self.reg_url("rl"), {"device": uniq("rlp")},
                                    token=KEY_L).status, 201)
        # other tenants have their own limits (a: unlimited)
        for i in range(5):
            self.assertEqual(H.curl("POST", self.reg_url("open-a", "?tenant=a"), b"").status, 201)

    def test_register_bad_bodies(self):
        for body in ['{"device": "x", "extra": 1}', "[1]", "{bad", '"str"']:
            r = H.curl("POST", self.reg_url("open-a", "?tenant=a"), body)
            self.assertJsonError(r, 400, "bad_request")


if __name__ == "__main__":
    H.main()
