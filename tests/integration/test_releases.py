#!/usr/bin/python3
"""Releases (issue 6, broker side): the catalog over HTTP and with the `herald` CLI, release
notices to long-poll devices, update-check, staged rollout over 1,000 devices, pause and
withdraw, install reports (HTTP, CLI, ZeroMQ events), two stores (tenants) with the same app id
that never see each other's releases, reports or notices, and a restart in the middle of a
notice fan-out that loses nothing and duplicates nothing.

The rollout sets are computed here from the contract's formula (SHA-256 of
tenant/app/version/device), independently of the broker."""
import hashlib
import json
import os
import struct
import subprocess
import time

import zmq

import herald_harness as H

KEY_A = "alpha_key_0123456789abcdefghijklmnopqrstuv"
KEY_B = "beta_key_0123456789abcdefghijklmnopqrstuvw"
CONF = {
    "tenant alpha": {"publish_key": KEY_A, "apps": "*"},
    "tenant beta": {"publish_key": KEY_B, "apps": "*"},
}


def in_rollout(tenant, app, version, device, percent):
    h = hashlib.sha256(("%s/%s/%s/%s" % (tenant, app, version, device)).encode()).digest()
    return struct.unpack(">I", h[:4])[0] % 10000 < round(percent * 100)


def cli(d, key, *args):
    p = subprocess.run([H.HERALD_CLI, "--url", d.url, "--key", key] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60 * H.SLOW)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


class Releases(H.HeraldTestCase):
    # -- helpers --
    def write_pkg(self, d, name, data):
        path = os.path.join(d.tmp, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def upload(self, d, key, app, version, data, query="", expect=201):
        r = H.curl("POST", d.u("/v1/apps/%s/releases?version=%s%s" % (app, version, query)),
                   data, token=key, headers=["Content-Type: application/octet-stream"])
        self.assertEqual(r.status, expect, r)
        return r.json()

    def provision(self, d, key, app, devices, work):
        res = H.curl_parallel([{"method": "POST", "url": d.u("/v1/apps/%s/registrations" % app),
                                "token": key, "body": {"device": dev}} for dev in devices],
                              os.path.join(d.tmp, work), parallel_max=100)
        tokens = {}
        for dev, (status, body) in zip(devices, res):
            self.assertEqual(status, 201, (dev, body))
            tokens[dev] = json.loads(body)["token"]
        return tokens

    def notices(self, d, tokens, work, app=None):
        """Every device's pending release notices: {device: [data, ...]}."""
        devices = sorted(tokens)
        res = H.curl_parallel([{"method": "GET", "url": d.u("/v1/devices/%s/messages" % dev),
                                "token": tokens[dev]} for dev in devices],
                              os.path.join(d.tmp, work), parallel_max=100)
        out = {}
        for dev, (status, body) in zip(devices, res):
            self.assertEqual(status, 200, (dev, body))
            out[dev] = [m["data"] for m in json.loads(body)["messages"]
                        if isinstance(m["data"], dict) and m["data"].get("kind") == "release"
                        and (app is None or m["data"]["app"] == app)]
        return out

    def report(self, d, key, app=None, version=None):
        q = "&".join(x for x in ["app=%s" % app if app else "",
                                 "version=%s" % version if version else ""] if x)
        r = H.curl("GET", d.u("/v1/reports" + ("?" + q if q else "")), token=key)
        self.assertEqual(r.status, 200, r)
        return r.json()["reports"]

    def check(self, d, device, token, inventory, expect=200, msisdn=None):
        body = {"inventory": inventory}
        if msisdn:
            body["msisdn"] = msisdn
        r = H.curl("POST", d.u("/v1/devices/%s/update-check" % device), body, token=token)
        self.assertEqual(r.status, expect, r)
        return r.json()["updates"] if expect == 200 else r

    def install(self, d, device, token, body, expect=201):
        r = H.curl("POST", d.u("/v1/devices/%s/install-reports" % device), body, token=token)
        self.assertEqual(r.status, expect, r)
        return r

    def fanouts_done(self, d, version):
        return sum(1 for ln in d.log() if "event=release_fanout_done" in ln
                   and "version=%s " % version in ln + " ")

    # -- tests --
    def test_catalog_notices_update_check_reports_and_two_stores(self):
        d = self.start_daemon(CONF)
        sub = H.zctx().socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVTIMEO, int(10000 * H.SLOW))
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(d.zmq_events)
        self.addCleanup(sub.close)
        # The same device id and app id in both stores.
        ta = d.provision("mail", "phone", key=KEY_A)
        tb = d.provision("mail", "phone", key=KEY_B)
        # A PUB socket drops what it sends before the subscription arrives: wait for it.
        H.wait_for(lambda: self._sync_events(d, sub), timeout=20, what="events subscription")

        # A long-poll of alpha's device is held when the release comes.
        held = H.CurlProcess("GET", d.u("/v1/devices/phone/messages?wait=20"), token=ta)
        pkg1 = os.urandom(300000)
        rel = self.upload(d, KEY_A, "mail", "1.0.0", pkg1, "&notes=first&rollout=100")
        sha1 = hashlib.sha256(pkg1).hexdigest()
        self.assertEqual(rel["app"], "mail")
        self.assertEqual(rel["version"], "1.0.0")
        self.assertEqual(rel["sha256"], sha1)
        self.assertEqual(rel["size"], len(pkg1))
        self.assertEqual(rel["rollout"], 100)
        self.assertEqual(rel["state"], "active")
        self.assertEqual(rel["tenant"], "alpha")
        self.assertIsNone(rel["code"])
        self.assertEqual(rel["notes"], "first")
        self.assertEqual(rel["url"], d.url + "/v1/apps/mail/releases/1.0.0/package")
        self.assertIsInstance(rel["created"], int)
        # Stored once, content-addressed, beside the store.
        with open(os.path.join(d.data_dir, "packages", sha1[:2], sha1), "rb") as f:
            self.assertEqual(f.read(), pkg1)
        r = held.result()
        self.assertEqual(r.status, 200, r)
        msgs = r.json()["messages"]
        self.assertEqual(len(msgs), 1, msgs)
        n = msgs[0]["data"]
        self.assertEqual({k: n[k] for k in ("kind", "app", "version", "size", "sha256", "url",
                                            "notes", "code")},
                         {"kind": "release", "app": "mail", "version": "1.0.0",
                          "size": len(pkg1), "sha256": sha1, "url": rel["url"],
                          "notes": "first", "code": None})
        self.assertIsInstance(n["ts"], int)
        # beta's device of the same id and app got nothing; beta sees no release.
        self.assertEqual(d.poll("phone", tb)["messages"], [])
        r = H.curl("GET", d.u("/v1/apps/mail/releases"), token=KEY_B)
        self.assertEqual((r.status, r.json()), (200, {"releases": []}))
        self.assertJsonError(H.curl("GET", d.u("/v1/apps/mail/releases/1.0.0"), token=KEY_B),
                             404, "not_found")
        self.assertJsonError(H.curl("PATCH", d.u("/v1/apps/mail/releases/1.0.0"),
                                    {"state": "paused"}, token=KEY_B), 404, "not_found")
        self.assertEqual(self.report(d, KEY_B), [])

        # Same bytes again: 200, the same release. Other bytes: 409. Refusals before the body.
        again = self.upload(d, KEY_A, "mail", "1.0.0", pkg1, expect=200)
        self.assertEqual(again["created"], rel["created"])
        self.assertJsonError(H.curl("POST", d.u("/v1/apps/mail/releases?version=1.0.0"),
                                    b"other bytes", token=KEY_A), 409, "exists")
        self.assertJsonError(H.curl("POST", d.u("/v1/apps/mail/releases?version=2.0"),
                                    pkg1, token="wrong" * 8), 401, "unauthorized")
        self.assertJsonError(H.curl("POST", d.u("/v1/apps/mail/releases?version=bad/v"),
                                    pkg1, token=KEY_A), 400, "bad_request")
        self.assertJsonError(H.curl("POST", d.u("/v1/apps/mail/releases?version=3&rollout=101"),
                                    pkg1, token=KEY_A), 400, "bad_request")
        self.assertJsonError(H.curl("POST", d.u("/v1/apps/mail/releases?version=3"), b"",
                                    token=KEY_A), 400, "bad_request")

        # The CLI: upload streamed from a file, list, set.
        pkg2 = os.urandom(2 * 1024 * 1024 + 17)
        path2 = self.write_pkg(d, "mail-1.1.0.pkg", pkg2)
        rc, out, err = cli(d, KEY_A, "release", "add", "--app", "mail", "--version", "1.1.0",
                           "--file", path2, "--rollout", "100%", "--notes", "second", "--json")
        self.assertEqual(rc, 0, err)
        rel2 = json.loads(out.strip().splitlines()[-1])
        self.assertEqual(rel2["sha256"], hashlib.sha256(pkg2).hexdigest())
        self.assertEqual(rel2["size"], len(pkg2))
        rc, out, err = cli(d, KEY_A, "release", "list", "--app", "mail", "--json")
        self.assertEqual(rc, 0, err)
        self.assertEqual([json.loads(l)["version"] for l in out.split()], ["1.1.0", "1.0.0"])
        rc, out, err = cli(d, KEY_A, "release", "list", "--app", "mail")
        self.assertEqual(rc, 0, err)
        self.assertIn("1.1.0", out)
        self.assertIn("second", out)
        # alpha's device gets the second notice; it replaces the first, still unacked one
        # (a newer notice of the same app collapses an older one the device has not acked).
        H.wait_for(lambda: [n["version"] for n in self.notices(d, {"phone": ta}, "n1")["phone"]]
                   == ["1.1.0"], what="second notice")

        # update-check: upgrade, nothing when current (also in an equal form).
        up = self.check(d, "phone", ta, [{"app": "mail", "version": "1.0.0"}])
        self.assertEqual(up, [{"app": "mail", "version": "1.1.0", "action": "upgrade",
                               "from": "1.0.0", "url": rel2["url"], "sha256": rel2["sha256"],
                               "size": len(pkg2), "code": None, "notes": "second"}])
        self.assertEqual(self.check(d, "phone", ta, [{"app": "mail", "version": "1.1.0"}]), [])
        self.assertEqual(self.check(d, "phone", ta, [{"app": "mail", "version": "1.1"}]), [])
        # beta's device of the same id, same app: nothing from alpha.
        self.assertEqual(self.check(d, "phone", tb, [{"app": "mail", "version": "0.1"}]), [])
        # A required app (code given): install for a device that does not have it.
        path3 = self.write_pkg(d, "store.pkg", b"store app " * 1000)
        rc, out, err = cli(d, KEY_A, "release", "add", "--app", "store", "--version", "5.0",
                           "--file", path3, "--code", "50", "--required")
        self.assertEqual(rc, 0, err)
        self.assertIn("added store 5.0", out)
        up = self.check(d, "phone", ta, [{"app": "mail", "version": "1.1.0"}])
        self.assertEqual([(u["app"], u["version"], u["action"], u["from"], u["code"])
                          for u in up], [("store", "5.0", "install", None, 50)])
        self.assertEqual(self.check(d, "phone", ta, [{"app": "mail", "version": "1.1.0"},
                                                     {"app": "store", "version": "5.0"}]), [])
        self.assertEqual(self.check(d, "phone", tb, []), [])  # beta has no required app
        # Bad requests and credentials.
        self.assertJsonError(self.check(d, "phone", ta, [{"app": "mail"}], expect=400), 400)
        self.assertJsonError(H.curl("POST", d.u("/v1/devices/phone/update-check"),
                                    {"inventory": []}, token=KEY_A), 401, "unauthorized")

        # A device that only reported the app in its inventory gets the next notice.
        tother = d.provision("other", "tablet", key=KEY_A)
        self.assertEqual([u["app"] for u in self.check(
            d, "tablet", tother, [{"app": "mail", "version": "1.1.0"}],
            msisdn="+49 151 0000 0001")], ["store"])  # required, and missing
        # mail's releases have no version code: one with a code would make the order
        # intransitive, so it is refused (and nothing is stored).
        r = H.curl("POST", d.u("/v1/apps/mail/releases?version=1.2.0&code=120"),
                   b"third" * 1000, token=KEY_A, headers=["Content-Type: application/octet-stream"])
        self.assertJsonError(r, 400)
        self.assertIn("version code", r.json()["message"])
        self.upload(d, KEY_A, "mail", "1.2.0", b"third" * 1000, "&rollout=100")
        H.wait_for(lambda: [n["version"] for n in
                            self.notices(d, {"tablet": tother}, "n2")["tablet"]] == ["1.2.0"],
                   what="notice to the inventory-only device")

        # Pause: no offer (1.1.0 is what the device has); withdraw: 410-worthy, gone.
        r = H.curl("PATCH", d.u("/v1/apps/mail/releases/1.2.0"), {"state": "paused"},
                   token=KEY_A)
        self.assertEqual((r.status, r.json()["state"]), (200, "paused"))
        self.assertEqual(self.check(d, "phone", ta, [{"app": "mail", "version": "1.1.0"},
                                                     {"app": "store", "version": "5.0"}]), [])
        rc, out, err = cli(d, KEY_A, "release", "set", "--app", "mail", "--version", "1.2.0",
                           "--resume", "--json")
        self.assertEqual((rc, json.loads(out)["state"]), (0, "active"), err)
        self.assertEqual([u["version"] for u in self.check(
            d, "phone", ta, [{"app": "mail", "version": "1.1.0"}, {"app": "store",
                                                                  "version": "5.0"}])],
                         ["1.2.0"])
        rc, out, err = cli(d, KEY_A, "release", "set", "--app", "mail", "--version", "1.2.0",
                           "--withdraw", "--json")
        self.assertEqual((rc, json.loads(out)["state"]), (0, "withdrawn"), err)
        self.assertEqual(self.check(d, "phone", ta, [{"app": "mail", "version": "1.1.0"},
                                                     {"app": "store", "version": "5.0"}]), [])
        self.assertEqual([u["version"] for u in self.check(
            d, "phone", ta, [{"app": "mail", "version": "0.9"}, {"app": "store",
                                                                "version": "5.0"}])],
                         ["1.1.0"])

        # Install reports: durable before 201, counted, visible over HTTP, CLI and ZeroMQ.
        self.install(d, "phone", ta, {"app": "mail", "version": "1.1.0", "result": "success",
                                      "action": "upgrade"})
        self.install(d, "phone", ta, {"app": "mail", "version": "1.1.0", "result": "failure",
                                      "reason": "sha256_mismatch", "action": "upgrade"})
        self.install(d, "tablet", tother, {"app": "mail", "version": "1.1.0",
                                           "result": "failure", "reason": "hook_declined"})
        self.install(d, "tablet", tother, {"app": "mail", "version": "1.1.0",
                                           "result": "failure", "reason": "sha256_mismatch"})
        self.assertJsonError(self.install(d, "phone", ta, {"app": "mail", "version": "1.1.0",
                                                           "result": "failure"}, expect=400),
                             400, "bad_request")
        self.assertJsonError(self.install(d, "phone", ta, {"app": "mail", "version": "9.9",
                                                           "result": "success"}, expect=404),
                             404, "not_found")
        # beta reports on its own app id "mail": there is no such release in beta.
        self.assertJsonError(self.install(d, "phone", tb, {"app": "mail", "version": "1.1.0",
                                                           "result": "success"}, expect=404),
                             404, "not_found")
        rep = {(x["app"], x["version"]): x for x in self.report(d, KEY_A)}
        self.assertEqual(set(rep), {("mail", "1.0.0"), ("mail", "1.1.0"), ("mail", "1.2.0"),
                                    ("store", "5.0")})
        m = rep[("mail", "1.1.0")]
        self.assertEqual((m["success"], m["failure"], m["reasons"], m["notified"]),
                         (1, 3, {"sha256_mismatch": 2, "hook_declined": 1}, 1))
        self.assertEqual(rep[("mail", "1.2.0")]["notified"], 2)  # phone and tablet
        self.assertEqual(self.report(d, KEY_A, app="store"),
                         [dict(rep[("store", "5.0")])])
        self.assertEqual(self.report(d, KEY_B), [])
        rc, out, err = cli(d, KEY_A, "report", "--app", "mail", "--version", "1.1.0", "--json")
        self.assertEqual(rc, 0, err)
        self.assertEqual([json.loads(l) for l in out.splitlines()], [m])
        rc, out, err = cli(d, KEY_A, "report", "--app", "mail")
        self.assertEqual(rc, 0, err)
        line = [l for l in out.splitlines() if " 1.1.0 " in l][0]
        self.assertIn("sha256_mismatch=2", line)
        rc, out, err = cli(d, KEY_B, "report")
        self.assertEqual((rc, out.splitlines()[1:]), (0, []), err)

        # The events: install (x4 valid ones), release (adds and changes), all alpha's.
        seen = self._drain_events(sub, lambda evs: sum(1 for t, e in evs
                                                       if e["event"] == "install") >= 4)
        installs = [e for t, e in seen if e["event"] == "install"]
        self.assertEqual([(e["tenant"], e["device"], e["app"], e["version"], e["result"],
                           e["reason"]) for e in installs],
                         [("alpha", "phone", "mail", "1.1.0", "success", None),
                          ("alpha", "phone", "mail", "1.1.0", "failure", "sha256_mismatch"),
                          ("alpha", "tablet", "mail", "1.1.0", "failure", "hook_declined"),
                          ("alpha", "tablet", "mail", "1.1.0", "failure", "sha256_mismatch")])
        self.assertEqual({t for t, e in seen if e["event"] == "install"}, {"alpha.install"})
        self.assertEqual(installs[0]["action"], "upgrade")
        releases = [(e["app"], e["version"], e["state"], e["rollout"]) for t, e in seen
                    if e["event"] == "release"]
        for want in [("mail", "1.0.0", "active", 100), ("mail", "1.1.0", "active", 100),
                     ("store", "5.0", "active", 100), ("mail", "1.2.0", "paused", 100),
                     ("mail", "1.2.0", "withdrawn", 100)]:
            self.assertIn(want, releases)

        # beta publishes its own "mail" 1.0.0: beta's device gets it, alpha's does not.
        pkgb = b"beta's mail" * 100
        self.upload(d, KEY_B, "mail", "1.0.0", pkgb, "&rollout=100")
        H.wait_for(lambda: [n["sha256"] for n in self.notices(d, {"phone": tb}, "n3")["phone"]]
                   == [hashlib.sha256(pkgb).hexdigest()], what="beta's notice")
        self.assertEqual([n["version"] for n in self.notices(d, {"phone": ta}, "n4")["phone"]],
                         ["1.2.0"])
        self.assertEqual([(x["app"], x["version"], x["notified"])
                          for x in self.report(d, KEY_B)], [("mail", "1.0.0", 1)])
        self.assertEqual(self.report(d, KEY_A, "mail", "1.0.0")[0]["notified"], 1)

    def _sync_events(self, d, sub):
        d.provision("sync", "sync-device", key=KEY_A)
        try:
            while True:
                topic, body = sub.recv_multipart(flags=zmq.NOBLOCK)
                if H.unpack(body).get("event") == "registered":
                    return True
        except zmq.Again:
            return False

    def _drain_events(self, sub, enough):
        seen = []
        end = H.deadline(20)
        while not enough(seen):
            self.assertLess(time.monotonic(), end, "events: %r" % seen[-10:])
            try:
                topic, body = sub.recv_multipart()
            except zmq.Again:
                continue
            seen.append((topic.decode(), H.unpack(body)))
        try:
            while True:
                topic, body = sub.recv_multipart(flags=zmq.NOBLOCK)
                seen.append((topic.decode(), H.unpack(body)))
        except zmq.Again:
            pass
        return seen

    def test_rollout_over_1000_devices(self):
        d = self.start_daemon(CONF)
        devices = ["dev-%04d" % i for i in range(1000)]
        tokens = self.provision(d, KEY_A, "fleet", devices, "reg")
        self.upload(d, KEY_A, "fleet", "2.0", b"fleet 2.0" * 500, "&rollout=10%25")
        H.wait_for(lambda: self.fanouts_done(d, "2.0") >= 1, timeout=60, what="fan-out")
        want10 = {x for x in devices if in_rollout("alpha", "fleet", "2.0", x, 10)}
        self.assertTrue(70 <= len(want10) <= 130, len(want10))
        got = self.notices(d, tokens, "p1", "fleet")
        self.assertEqual({x for x, n in got.items() if n}, want10)
        self.assertTrue(all(len(n) == 1 for n in got.values() if n))
        self.assertEqual(self.report(d, KEY_A, "fleet", "2.0")[0]["notified"], len(want10))
        # update-check agrees with the notices: offered inside the rollout only.
        inside, outside = sorted(want10)[0], sorted(set(devices) - want10)[0]
        inv = [{"app": "fleet", "version": "1.0"}]
        self.assertEqual([u["version"] for u in self.check(d, inside, tokens[inside], inv)],
                         ["2.0"])
        self.assertEqual(self.check(d, outside, tokens[outside], inv), [])
        # Raise to 25%: only the devices newly inside get a notice; nobody gets two.
        r = H.curl("PATCH", d.u("/v1/apps/fleet/releases/2.0"), {"rollout": 25}, token=KEY_A)
        self.assertEqual((r.status, r.json()["rollout"]), (200, 25))
        H.wait_for(lambda: self.fanouts_done(d, "2.0") >= 2, timeout=60, what="second fan-out")
        want25 = {x for x in devices if in_rollout("alpha", "fleet", "2.0", x, 25)}
        self.assertTrue(want10 <= want25)
        got = self.notices(d, tokens, "p2", "fleet")
        self.assertEqual({x for x, n in got.items() if n}, want25)
        self.assertEqual({len(n) for n in got.values() if n}, {1})
        self.assertEqual(self.report(d, KEY_A, "fleet", "2.0")[0]["notified"], len(want25))
        # Lowering and raising again to the same level notifies nobody new.
        for pct in (5, 25):
            r = H.curl("PATCH", d.u("/v1/apps/fleet/releases/2.0"), {"rollout": pct},
                       token=KEY_A)
            self.assertEqual(r.status, 200, r)
        H.wait_for(lambda: self.fanouts_done(d, "2.0") >= 3, timeout=60, what="third fan-out")
        self.assertEqual(self.report(d, KEY_A, "fleet", "2.0")[0]["notified"], len(want25))
        got = self.notices(d, tokens, "p3", "fleet")
        self.assertEqual({len(n) for n in got.values() if n}, {1})

    def test_restart_mid_fanout_loses_and_duplicates_nothing(self):
        # Small steps (2 devices each, every step two group commits) make the fan-out take
        # long enough that a kill right after the upload's answer lands in its middle: fewer
        # than all devices notified just before the kill, and the log line
        # release_fanout_resumed after the restart, prove it did.
        conf = dict(CONF)
        conf["release"] = {"fanout_batch": "2"}
        d = self.start_daemon(conf)
        # Half the devices are registered for the app, the other half only report it in an
        # update-check inventory; provisioned concurrently, so the two kinds interleave in
        # device-number order and a step takes devices from both lists.
        devices = ["r-%03d" % i for i in range(300)]
        res = H.curl_parallel([{"method": "POST", "token": KEY_A, "body": {"device": dev},
                                "url": d.u("/v1/apps/%s/registrations" %
                                           ("crash" if i % 2 == 0 else "other"))}
                               for i, dev in enumerate(devices)], os.path.join(d.tmp, "reg"),
                              parallel_max=100)
        self.assertEqual({st for st, _ in res}, {201}, res[:3])
        tokens = {dev: json.loads(body)["token"] for dev, (st, body) in zip(devices, res)}
        res = H.curl_parallel([{"method": "POST",
                                "url": d.u("/v1/devices/%s/update-check" % dev),
                                "token": tokens[dev],
                                "body": {"inventory": [{"app": "crash", "version": "0.1"}]}}
                               for dev in devices[1::2]], os.path.join(d.tmp, "inv"))
        self.assertEqual({st for st, _ in res}, {200}, res[:3])
        resumed_once = False
        for attempt in range(3):
            version = "1.%d" % attempt
            mark = len(d.log())
            self.upload(d, KEY_A, "crash", version, b"crash %d" % attempt * 100, "&rollout=100")
            before = self.report(d, KEY_A, "crash", version)[0]["notified"]
            d.kill9()
            d.start()
            if before < 300 and any("event=release_fanout_resumed" in l
                                    for l in d.log()[mark:]):
                resumed_once = True
            H.wait_for(lambda: self.fanouts_done(d, version) >= 1, timeout=60,
                       what="fan-out of %s after the restart" % version)
            self.assertEqual(self.report(d, KEY_A, "crash", version)[0]["notified"], 300)
            got = self.notices(d, tokens, "p%d" % attempt, "crash")
            for dev in devices:
                self.assertEqual([n["version"] for n in got[dev]].count(version), 1,
                                 (dev, got[dev]))
            if resumed_once:
                break
        self.assertTrue(resumed_once, "no kill landed in the middle of a fan-out")


if __name__ == "__main__":
    H.main()
