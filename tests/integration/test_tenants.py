#!/usr/bin/python3
"""Tenants as stores (issue 6) and the per-tenant publish rate cap (issue 8), on a real heraldd.

- the admin API: refused without the admin key (401; the 403 for peers that are not loopback
  is a unit test, test_admin.c, since every test here runs on loopback), from another origin,
  and it never shows a key except the one just made;
- a tenant created at run time: its publish key publishes, its devices get tokens that poll,
  rotate and see its messages; the list shows it (and the config's), never a key; name clashes
  are 409; rotate-key: the old key works during the overlap, then 401;
- a restart keeps runtime tenants (keys, devices, pending messages, a key overlap);
- two tenants with the same app id (and the same device id) never see each other's messages,
  registrations or tokens;
- herald tenant add | list | rotate-key (the CLI);
- the rate cap: publishing far faster than max_publish_rate over HTTP and over ZeroMQ is
  refused with 429 / rate_limited (counted per tenant), the two ingresses share one budget, and
  every accepted publish, and nothing else, is delivered. Counts are asserted, never times: the
  upper bound on what may be accepted is computed from the time the flood took.
"""
import itertools
import json
import os
import stat
import subprocess
import time

import zmq

import herald_harness as H

KEY_S = "static-tenant-key-0123456789abcdefghijklmnopqrs"
KEY_H = "capped-http-key-0123456789abcdefghijklmnopqrstu"
KEY_Z = "capped-zmq-key-0123456789abcdefghijklmnopqrstuv"
KEY_M = "capped-mix-key-0123456789abcdefghijklmnopqrstuv"
RATE, BURST, FLOOD = 50, 50, 500
_n = itertools.count(1)


def uniq(prefix):
    return "%s%d" % (prefix, next(_n))


CONF = {
    "tenant static": {"publish_key": KEY_S, "apps": "shared, news"},
    "tenant caph": {"publish_key": KEY_H, "apps": "cap", "max_publish_rate": RATE,
                    "publish_burst": BURST},
    "tenant capz": {"publish_key": KEY_Z, "apps": "cap", "max_publish_rate": RATE,
                    "publish_burst": BURST},
    "tenant capmix": {"publish_key": KEY_M, "apps": "cap", "max_publish_rate": 1,
                      "publish_burst": 5},
}


class Admin:
    """The admin API of one daemon, through curl."""

    def __init__(self, d):
        self.d = d
        with open(os.path.join(d.data_dir, "admin.key")) as f:
            self.key = f.read().strip()

    def call(self, method, path, body=None, key=None, headers=()):
        return H.curl(method, self.d.u("/v1/admin" + path), body,
                      token=self.key if key is None else key, headers=headers)

    def create(self, name, expect=201, **fields):
        spec = dict(fields, name=name)
        r = self.call("POST", "/tenants", spec)
        assert r.status == expect, "create %s: %r" % (name, r)
        return r.json()

    def rotate(self, name, overlap=None, expect=200):
        r = self.call("POST", "/tenants/%s/rotate-key" % name,
                      None if overlap is None else {"overlap": overlap})
        assert r.status == expect, "rotate %s: %r" % (name, r)
        return r.json()

    def tenants(self):
        r = self.call("GET", "/tenants")
        assert r.status == 200, r
        return r, {t["name"]: t for t in r.json()["tenants"]}


def poll_all(d, dev, tok, want, timeout=30.0):
    """Poll (acking nothing) until `want` messages have come; returns them (id order)."""
    got, cursor = [], None
    end = H.deadline(timeout)
    while len(got) < want and time.monotonic() < end:
        j = d.poll(dev, tok, cursor=cursor, wait=1, max=100)
        got += j["messages"]
        cursor = j["cursor"] if j["messages"] else cursor
    return got


class Tenants(H.HeraldTestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = cls.start_class_daemon(CONF)
        cls.admin = Admin(cls.d)

    # -- the admin API's door --
    def test_admin_key_required(self):
        d, a = self.d, self.admin
        path = os.path.join(d.data_dir, "admin.key")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertGreaterEqual(len(a.key), 32)
        for key in ["", "wrong-admin-key-0123456789abcdefghijklmnop", a.key[:-1], a.key + "x",
                    KEY_S]:
            for method, path, body in [("GET", "/tenants", None),
                                       ("POST", "/tenants", {"name": uniq("nokey")}),
                                       ("GET", "/tenants/static", None),
                                       ("POST", "/tenants/static/rotate-key", None)]:
                r = a.call(method, path, body, key=key)
                self.assertJsonError(r, 401, "unauthorized")
        r = H.curl("GET", d.u("/v1/admin/tenants"))
        self.assertJsonError(r, 401, "unauthorized")
        self.assertEqual(r.headers.get("www-authenticate"), "Bearer")
        # no tenant was made by any of those
        _, ts = a.tenants()
        self.assertFalse([n for n in ts if n.startswith("nokey")], ts)
        # a page of another origin gets nothing, even with the key
        r = a.call("GET", "/tenants", headers=["Origin: https://evil.example"])
        self.assertJsonError(r, 403, "forbidden")

    # -- a tenant made at run time works like a configured one --
    def test_create_publish_devices_list(self):
        d, a = self.d, self.admin
        name = uniq("shop")
        j = a.create(name, apps=["news", "games"], self_register=["games"])
        key = j["publish_key"]
        self.assertEqual(j["name"], name)
        self.assertEqual(j["source"], "admin")
        self.assertEqual(j["apps"], ["news", "games"])
        self.assertGreaterEqual(len(key), 32)
        self.assertNotIn(key, (KEY_S, a.key))
        kf = os.path.join(d.data_dir, "tenants", name, "publish.key")
        self.assertEqual(stat.S_IMODE(os.stat(kf).st_mode), 0o600)
        with open(kf) as f:
            self.assertEqual(f.read().strip(), key)
        # its devices: provisioned with its key, tokens name the tenant and poll
        tok = d.provision("news", "phone-1", key=key)
        self.assertTrue(tok.startswith(name + "."), tok)
        mid = d.publish("news", {"hello": name}, key=key)
        got = d.poll("phone-1", tok)["messages"]
        self.assertEqual([(m["id"], m["data"]) for m in got], [(mid, {"hello": name})])
        # a device rotates its own token; the old one stops, the new one polls
        r = H.curl("POST", d.u("/v1/devices/phone-1/token"), token=tok)
        self.assertEqual(r.status, 200, r)
        tok2 = r.json()["token"]
        self.assertJsonError(H.curl("GET", d.u("/v1/devices/phone-1/messages"), token=tok), 401)
        self.assertEqual(d.poll("phone-1", tok2)["messages"][0]["id"], mid)
        # self-registration where the tenant opened it, and only there
        r = H.curl("POST", d.u("/v1/apps/games/registrations?tenant=%s" % name), b"")
        self.assertEqual(r.status, 201, r)
        self.assertTrue(r.json()["token"].startswith(name + "."))
        r = H.curl("POST", d.u("/v1/apps/news/registrations?tenant=%s" % name), b"")
        self.assertJsonError(r, 401, "unauthorized")
        # an app it did not declare does not exist for it
        self.assertJsonError(H.curl("POST", d.u("/v1/apps/shared/messages"), {"data": 1},
                                    token=key), 404, "not_found")
        # ZeroMQ takes its key too, for its tenant name only
        rep = H.zmq_req(d.zmq_ingress, {"tenant": name, "key": key, "app": "news", "data": 2})
        self.assertIn("id", rep, rep)
        rep = H.zmq_req(d.zmq_ingress, {"key": key, "app": "news", "data": 2})
        self.assertEqual(rep["error"], "unauthorized", rep)
        # the list: configured and created tenants, settings, never a key
        r, ts = a.tenants()
        self.assertEqual(ts[name]["apps"], ["news", "games"])
        self.assertEqual(ts[name]["self_register"], ["games"])
        self.assertEqual(ts[name]["source"], "admin")
        self.assertIsInstance(ts[name]["created"], int)
        self.assertEqual(ts["static"]["source"], "config")
        self.assertIsNone(ts["static"]["created"])
        self.assertEqual(ts["caph"]["max_publish_rate"], RATE)
        for secret in (key, KEY_S, KEY_H, a.key):
            self.assertNotIn(secret, r.text)
        self.assertNotIn("publish_key", r.text)
        one = a.call("GET", "/tenants/" + name)
        self.assertEqual(one.status, 200, one)
        self.assertEqual(one.json(), ts[name])
        self.assertNotIn(key, one.text)
        self.assertJsonError(a.call("GET", "/tenants/" + uniq("nobody")), 404, "not_found")

    def test_name_clashes_and_bad_settings(self):
        a = self.admin
        name = uniq("dup")
        a.create(name)
        for taken in (name, "static", "caph"):
            r = a.call("POST", "/tenants", {"name": taken})
            self.assertJsonError(r, 409, "exists")
        # two at once for one name: exactly one is made
        other = uniq("race")
        res = H.curl_parallel([{"method": "POST", "url": self.d.u("/v1/admin/tenants"),
                                "token": a.key, "body": {"name": other}}] * 6,
                              os.path.join(self.d.tmp, uniq("race")))
        self.assertEqual(sorted(s for s, _ in res), [201] + [409] * 5, res)
        for body, why in [({"name": "Bad"}, "name"), ({}, "name"),
                          ({"name": uniq("x"), "apps": []}, "apps must not be empty"),
                          ({"name": uniq("x"), "apps": ["a"], "self_register": ["b"]},
                           "self_register app 'b'"),
                          ({"name": uniq("x"), "publish_key": "k" * 40}, "unknown field"),
                          ({"name": uniq("x"), "max_publish_rate": -5}, "max_publish_rate")]:
            r = a.call("POST", "/tenants", body)
            j = self.assertJsonError(r, 400, "bad_request")
            self.assertIn(why, j["message"])
        self.assertJsonError(a.call("POST", "/tenants", "{nope"), 400, "bad_request")
        _, ts = a.tenants()
        self.assertNotIn("Bad", ts)

    # -- rotate-key --
    def test_rotate_key_overlap_then_refused(self):
        d, a = self.d, self.admin
        name = uniq("rot")
        old = a.create(name, apps=["news"])["publish_key"]
        tok = d.provision("news", "dev", key=old)
        j = a.rotate(name, overlap=3)
        new = j["publish_key"]
        self.assertNotEqual(new, old)
        until = j["previous_key_valid_until"]
        self.assertIsInstance(until, int)
        # during the overlap both keys publish, over HTTP and ZeroMQ
        ids = [d.publish("news", "old", key=old), d.publish("news", "new", key=new)]
        rep = H.zmq_req(d.zmq_ingress, {"tenant": name, "key": old, "app": "news", "data": "z"})
        self.assertIn("id", rep, rep)
        ids.append(rep["id"])
        self.assertEqual([m["id"] for m in d.poll("dev", tok)["messages"]], ids)
        self.assertEqual(a.tenants()[1][name]["previous_key_valid_until"], until)
        # after it, the old key is refused everywhere; the new one goes on
        while time.time() * 1000 < until + 50:
            time.sleep(0.05)
        self.assertJsonError(H.curl("POST", d.u("/v1/apps/news/messages"), {"data": 1},
                                    token=old), 401, "unauthorized")
        rep = H.zmq_req(d.zmq_ingress, {"tenant": name, "key": old, "app": "news", "data": 1})
        self.assertEqual(rep["error"], "unauthorized", rep)
        d.publish("news", "still", key=new)
        # overlap 0: the old key stops at once
        newer = a.rotate(name, overlap=0)
        self.assertIsNone(newer["previous_key_valid_until"])
        self.assertJsonError(H.curl("POST", d.u("/v1/apps/news/messages"), {"data": 1},
                                    token=new), 401, "unauthorized")
        d.publish("news", "newest", key=newer["publish_key"])
        with open(os.path.join(d.data_dir, "tenants", name, "publish.key")) as f:
            self.assertEqual(f.read().strip(), newer["publish_key"])
        # without a body the configured overlap (1 day by default) applies
        j = a.rotate(name)
        self.assertGreater(j["previous_key_valid_until"], time.time() * 1000 + 3600 * 1000)
        d.publish("news", "prev", key=newer["publish_key"])
        # configured tenants keep their keys in the config; unknown ones do not exist
        self.assertJsonError(a.call("POST", "/tenants/static/rotate-key"), 409, "exists")
        self.assertJsonError(a.call("POST", "/tenants/%s/rotate-key" % uniq("nobody")), 404)
        self.assertJsonError(a.call("POST", "/tenants/%s/rotate-key" % name, {"overlap": "1"}),
                             400)
        self.assertJsonError(a.call("POST", "/tenants/%s/rotate-key" % name, {"overlap": -1}),
                             400)

    # -- two stores, one app id --
    def test_same_app_id_in_two_tenants_never_mixes(self):
        d, a = self.d, self.admin
        ta, tb = uniq("storea"), uniq("storeb")
        ka = a.create(ta, apps=["shared", "a-only"])["publish_key"]
        kb = a.create(tb, apps=["shared", "b-only"])["publish_key"]
        # the same device id in both tenants, and one device only each has
        tok_a = d.provision("shared", "dev1", key=ka)
        tok_b = d.provision("shared", "dev1", key=kb)
        tok_b2 = d.provision("b-only", "dev-b", key=kb)
        tok_a2 = d.provision("a-only", "dev-a", key=ka)
        # the config tenant "static" has an app "shared" too
        tok_s = d.provision("shared", "dev1", key=KEY_S)
        cur_a = d.poll("dev1", tok_a)["cursor"]
        # A's device waits; B publishes to the app id they share, and directly to "dev1"
        held = H.CurlProcess("GET", d.u("/v1/devices/dev1/messages?wait=20&cursor=%s" % cur_a),
                             token=tok_a)
        b_ids = [d.publish("shared", "from-b", key=kb),
                 d.publish("shared", "to-b-dev1", key=kb, to="dev1"),
                 d.publish("shared", "from-static", key=KEY_S)]
        a_id = d.publish("shared", "from-a", key=ka)
        r = held.result()
        self.assertEqual(r.status, 200, r)
        got = r.json()["messages"]
        self.assertEqual([(m["id"], m["data"]) for m in got], [(a_id, "from-a")])
        # each device sees its own tenant's messages only
        self.assertEqual([m["data"] for m in d.poll("dev1", tok_b)["messages"]],
                         ["from-b", "to-b-dev1"])
        self.assertEqual([m["data"] for m in d.poll("dev1", tok_s)["messages"]],
                         ["from-static"])
        self.assertEqual([m["data"] for m in d.poll("dev1", tok_a, cursor=cur_a)["messages"]],
                         ["from-a"])
        self.assertNotIn(b_ids[0], [m["id"] for m in d.poll("dev1", tok_a)["messages"]])
        # tokens: A's on a device path of B, or B's on A's, refused like a wrong token, and the
        # same answer as for a device that exists nowhere
        for tok, dev in [(tok_a, "dev-b"), (tok_a2, "dev-b"), (tok_b, "dev-a"),
                         (tok_b2, "dev-a"), (tok_a, "nowhere")]:
            r = H.curl("GET", d.u("/v1/devices/%s/messages" % dev), token=tok)
            self.assertJsonError(r, 401, "unauthorized")
            r = H.curl("POST", d.u("/v1/devices/%s/acks" % dev), {"ids": [b_ids[0]]}, token=tok)
            self.assertJsonError(r, 401, "unauthorized")
            r = H.curl("POST", d.u("/v1/devices/%s/token" % dev), token=tok)
            self.assertJsonError(r, 401, "unauthorized")
        # keys: A's key cannot publish into B's app, nor provision there, nor touch B's device
        r1 = H.curl("POST", d.u("/v1/apps/b-only/messages"), {"data": 1}, token=ka)
        r2 = H.curl("POST", d.u("/v1/apps/nowhere/messages"), {"data": 1}, token=ka)
        self.assertJsonError(r1, 404, "not_found")
        self.assertEqual((r1.status, r1.body), (r2.status, r2.body))
        self.assertJsonError(H.curl("POST", d.u("/v1/apps/b-only/registrations"),
                                    {"device": "x"}, token=ka), 404, "not_found")
        r1 = H.curl("DELETE", d.u("/v1/devices/dev-b/token"), token=ka)
        r2 = H.curl("DELETE", d.u("/v1/devices/nowhere/token"), token=ka)
        self.assertJsonError(r1, 404, "not_found")
        self.assertEqual((r1.status, r1.body), (r2.status, r2.body))
        self.assertEqual(d.poll("dev-b", tok_b2)["messages"], [])  # B's device: untouched
        # ZeroMQ: A's key under B's name is refused
        rep = H.zmq_req(d.zmq_ingress, {"tenant": tb, "key": ka, "app": "shared", "data": 1})
        self.assertEqual(rep["error"], "unauthorized", rep)
        # registrations: B's self-registration does not exist for A's name, and A's token
        # cannot add B's app to A's device
        r = H.curl("POST", d.u("/v1/apps/b-only/registrations"), {"device": "dev1"},
                   token=tok_a)
        self.assertJsonError(r, 401, "unauthorized")

    # -- the CLI --
    def test_cli_tenant_add_list_rotate(self):
        d = self.d
        name = uniq("cli")
        base = [H.HERALD_CLI, "--url", d.url, "--data-dir", d.data_dir]
        p = subprocess.run(base + ["tenant", "add", name, "--app", "news", "--app", "extra",
                                   "--max-publish-rate", "7"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        key = p.stdout.strip()
        self.assertGreaterEqual(len(key), 32)
        d.publish("news", "via cli tenant", key=key)
        p = subprocess.run(base + ["tenant", "list"], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        line = [l for l in p.stdout.splitlines() if l.split()[:1] == [name]]
        self.assertEqual(len(line), 1, p.stdout)
        self.assertEqual(line[0].split()[1:3], ["admin", "7"])
        self.assertTrue(line[0].endswith("news,extra"), line)
        self.assertNotIn(key, p.stdout)
        # the admin key from the environment (the file is not there for this data dir)
        env = dict(os.environ, HERALD_ADMIN_KEY=self.admin.key)
        p = subprocess.run([H.HERALD_CLI, "--url", d.url, "--data-dir", "/nonexistent",
                            "tenant", "rotate-key", name, "--overlap", "0"],
                           capture_output=True, text=True, timeout=60, env=env)
        self.assertEqual(p.returncode, 0, p.stderr)
        new = p.stdout.strip()
        self.assertNotEqual(new, key)
        self.assertJsonError(H.curl("POST", d.u("/v1/apps/news/messages"), {"data": 1},
                                    token=key), 401)
        d.publish("news", "new key", key=new)
        # failures: a name taken, a wrong admin key
        p = subprocess.run(base + ["tenant", "add", name], capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(p.returncode, 1)
        self.assertIn("409", p.stderr)
        p = subprocess.run(base + ["--admin-key", "w" * 40, "tenant", "list"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 1)
        self.assertIn("401", p.stderr)

    # -- the publish rate cap --
    def refused_metric(self, tenant):
        return self.d.metrics().get(
            'herald_publish_refused_total{tenant="%s",reason="rate_limited"}' % tenant, 0.0)

    def check_delivered(self, dev, tok, accepted_ids):
        got = poll_all(self.d, dev, tok, len(accepted_ids))
        self.assertEqual(sorted(m["id"] for m in got), sorted(accepted_ids))
        # and nothing more: a refused publish was never stored
        j = self.d.poll(dev, tok, cursor=max(accepted_ids, key=int), wait=0)
        self.assertEqual(j["messages"], [])

    def test_rate_cap_http(self):
        d = self.d
        dev = uniq("capdev")
        tok = d.provision("cap", dev, key=KEY_H)
        before = self.refused_metric("caph")
        req = {"method": "POST", "url": d.u("/v1/apps/cap/messages"), "token": KEY_H,
               "body": {"data": "flood"}}
        t0 = time.monotonic()
        res = H.curl_parallel([req] * FLOOD, os.path.join(d.tmp, uniq("flood")))
        elapsed = time.monotonic() - t0
        ok = [json.loads(b)["id"] for s, b in res if s == 202]
        limited = [json.loads(b) for s, b in res if s == 429]
        self.assertEqual(len(ok) + len(limited), FLOOD, sorted({s for s, _ in res}))
        # at least the burst; at most the burst plus what the rate refills while flooding
        self.assertGreaterEqual(len(ok), BURST)
        self.assertLessEqual(len(ok), BURST + RATE * (elapsed + 1), (len(ok), elapsed))
        self.assertLess(len(ok), FLOOD)
        for j in limited:
            self.assertEqual(j["error"], "rate_limited", j)
        self.assertEqual(self.refused_metric("caph") - before, len(limited))
        # one refusal seen whole: 429, Retry-After, the JSON error
        # One refusal seen whole: requests on one kept-alive connection from this process (no
        # process per request, so they outrun the refill of RATE per second at once).
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", d.http_port, timeout=30 * H.SLOW)
        self.addCleanup(conn.close)
        r = None
        for _ in range(20 * BURST):
            conn.request("POST", "/v1/apps/cap/messages", body=json.dumps({"data": "x"}),
                         headers={"Authorization": "Bearer " + KEY_H,
                                  "Content-Type": "application/json"})
            resp = conn.getresponse()
            body = resp.read()
            if resp.status == 429:
                r = H.Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body)
                break
            self.assertEqual(resp.status, 202, body)
            ok.append(json.loads(body)["id"])
        self.assertIsNotNone(r, "never refused")
        j = self.assertJsonError(r, 429, "rate_limited")
        self.assertIn("max_publish_rate", j["message"])
        self.assertGreaterEqual(int(r.headers["retry-after"]), 1)
        # other tenants are not slowed by it
        d.publish("shared", "not capped", key=KEY_S)
        self.check_delivered(dev, tok, ok)

    def test_rate_cap_zmq(self):
        d = self.d
        dev = uniq("capdev")
        tok = d.provision("cap", dev, key=KEY_Z)
        before = self.refused_metric("capz")
        body = H.pack({"tenant": "capz", "key": KEY_Z, "app": "cap", "data": "flood"})
        s = H.zsocket(zmq.DEALER, d.zmq_ingress)
        ok, limited = [], []
        try:
            t0 = time.monotonic()
            for _ in range(FLOOD):
                s.send_multipart([b"", body])
            for _ in range(FLOOD):
                rep = H.unpack(s.recv_multipart()[-1])
                if "id" in rep:
                    ok.append(rep["id"])
                else:
                    limited.append(rep)
            elapsed = time.monotonic() - t0
        finally:
            s.close()
        self.assertGreaterEqual(len(ok), BURST)
        self.assertLessEqual(len(ok), BURST + RATE * (elapsed + 1), (len(ok), elapsed))
        self.assertLess(len(ok), FLOOD)
        for rep in limited:
            self.assertEqual(rep["error"], "rate_limited", rep)
            self.assertIn("max_publish_rate", rep["message"])
        self.assertEqual(self.refused_metric("capz") - before, len(limited))
        self.check_delivered(dev, tok, ok)

    def test_rate_cap_shared_by_http_and_zmq(self):
        # burst 5, 1 per second: what HTTP takes, ZeroMQ does not get again
        d = self.d
        t0 = time.monotonic()
        http_ok = 0
        for _ in range(5):
            r = H.curl("POST", d.u("/v1/apps/cap/messages"), {"data": 1}, token=KEY_M)
            self.assertIn(r.status, (202, 429), r)
            http_ok += r.status == 202
        s = H.zsocket(zmq.DEALER, d.zmq_ingress)
        try:
            body = H.pack({"tenant": "capmix", "key": KEY_M, "app": "cap", "data": 2})
            for _ in range(20):
                s.send_multipart([b"", body])
            reps = [H.unpack(s.recv_multipart()[-1]) for _ in range(20)]
        finally:
            s.close()
        elapsed = time.monotonic() - t0
        zmq_ok = sum("id" in r for r in reps)
        self.assertEqual(http_ok, 5)
        self.assertLessEqual(http_ok + zmq_ok, 5 + 1 * (elapsed + 1), (zmq_ok, elapsed))
        self.assertIn("rate_limited", [r.get("error") for r in reps])


class Restart(H.HeraldTestCase):
    def test_restart_keeps_runtime_tenants(self):
        d = self.start_daemon({"admin": {"key_overlap": "10m"}})
        a = Admin(d)
        j = a.create("kept", apps=["news"], max_publish_rate=1000, publish_burst=10)
        key = j["publish_key"]
        tok = d.provision("news", "dev", key=key)
        first = d.publish("news", "before restart", key=key)
        rotated = a.rotate("kept")
        new = rotated["publish_key"]
        second = d.publish("news", "after rotation", key=new)
        admin_key = a.key
        d.restart()
        a = Admin(d)
        self.assertEqual(a.key, admin_key)  # generated once, then read back
        _, ts = a.tenants()
        self.assertEqual(ts["kept"]["apps"], ["news"])
        self.assertEqual(ts["kept"]["max_publish_rate"], 1000)
        self.assertEqual(ts["kept"]["publish_burst"], 10)
        self.assertEqual(ts["kept"]["created"], j["created"])
        self.assertEqual(ts["kept"]["previous_key_valid_until"],
                         rotated["previous_key_valid_until"])
        # the device's token, the pending messages, both keys of the overlap: all still there
        self.assertEqual([m["id"] for m in d.poll("dev", tok)["messages"]], [first, second])
        third = d.publish("news", "old key, still in its overlap", key=key)
        fourth = d.publish("news", "new key", key=new)
        self.assertEqual([m["id"] for m in d.poll("dev", tok)["messages"]],
                         [first, second, third, fourth])
        self.assertJsonError(a.call("POST", "/tenants", {"name": "kept"}), 409, "exists")
        self.assertTrue(any("runtime_tenants_loaded" in l and "count=1" in l for l in d.log()))

    def test_many_tenants_each_key_its_own(self):
        # More tenants than the broker compares key by key: their keys are found through its
        # keyed-hash index, which must follow creations, rotations and a restart.
        d = self.start_daemon()
        a = Admin(d)
        keys = {"m%02d" % i: a.create("m%02d" % i, apps=["news"])["publish_key"]
                for i in range(12)}
        toks = {n: d.provision("news", "dev", key=k) for n, k in keys.items()}

        def publishes_only_as(name, key):
            d.publish("news", "to " + name, key=key)
            rep = H.zmq_req(d.zmq_ingress, {"tenant": name, "key": key, "app": "news",
                                            "data": "z"})
            self.assertIn("id", rep, rep)
            other = "m00" if name != "m00" else "m01"
            rep = H.zmq_req(d.zmq_ingress, {"tenant": other, "key": key, "app": "news",
                                            "data": 1})
            self.assertEqual(rep["error"], "unauthorized", rep)

        for n, k in keys.items():
            publishes_only_as(n, k)
            got = [m["data"] for m in d.poll("dev", toks[n])["messages"]]
            self.assertEqual(got, ["to " + n, "z"], n)
        new = a.rotate("m05", overlap=0)["publish_key"]
        self.assertJsonError(H.curl("POST", d.u("/v1/apps/news/messages"), {"data": 1},
                                    token=keys["m05"]), 401, "unauthorized")
        d.publish("news", "rotated", key=new)
        keys["m05"] = new
        d.restart()
        for n, k in keys.items():
            d.publish("news", "after restart", key=k)
            got = [m["data"] for m in d.poll("dev", toks[n])["messages"]]
            self.assertEqual(got[-1], "after restart", n)
        self.assertJsonError(H.curl("POST", d.u("/v1/apps/news/messages"), {"data": 1},
                                    token="x" * 43), 401, "unauthorized")

    def test_config_tenant_of_the_same_name_wins_at_start(self):
        d = self.start_daemon()
        a = Admin(d)
        key = a.create("later", apps=["news"])["publish_key"]
        tok = d.provision("news", "dev", key=key)
        d.stop()
        # the operator now declares it in the config: that one is used, with the same keys,
        # devices and store rows (its keys are read from the same files)
        d.sections["tenant later"] = {"apps": "news, more"}
        with open(d.config_path, "w") as f:
            f.write(H.render_config(d.sections))
        d.start()
        d.wait_log(r"event=runtime_tenant_shadowed tenant=later")
        _, ts = Admin(d).tenants()
        self.assertEqual(ts["later"]["source"], "config")
        self.assertEqual(ts["later"]["apps"], ["news", "more"])
        mid = d.publish("news", "x", key=key)
        self.assertEqual([m["id"] for m in d.poll("dev", tok)["messages"]], [mid])

    def test_name_of_a_removed_config_tenant_is_refused(self):
        d = self.start_daemon({"tenant old": {"apps": "news"}})
        d.stop()
        del d.sections["tenant old"]
        d.sections["tenant default"] = {"apps": "*"}
        with open(d.config_path, "w") as f:
            f.write(H.render_config(d.sections))
        d.start()
        # its devices and messages are still in the store: a new tenant must not inherit them
        r = Admin(d).call("POST", "/tenants", {"name": "old"})
        self.assertJsonError(r, 409, "exists")

    def test_configured_admin_key(self):
        key = "configured-admin-key-0123456789abcdefghijkl"
        d = self.start_daemon({"admin": {"key": key}})
        self.assertFalse(os.path.exists(os.path.join(d.data_dir, "admin.key")))
        r = H.curl("GET", d.u("/v1/admin/tenants"), token=key)
        self.assertEqual(r.status, 200, r)
        self.assertEqual([t["name"] for t in r.json()["tenants"]], ["default"])


if __name__ == "__main__":
    H.main()
