#!/usr/bin/env python3
"""The push policy and its durable per-device queue (broker/push.c), through the ABI 1.1 host
calls, with a recording per-device transport pair (tests/plugins/devrec.c: devrec_a and
devrec_b exported from one object) standing in for SMS and WAP Push:

- a message escalates to the first per-device step only for devices that have an MSISDN and
  have not acked it in time, and to the next step only if the first did not deliver it;
- at most once per device and message: a delivered step stops the escalation;
- temporary failures are retried, and the queue survives a restart;
- carrier receipts (also ones that overtake the submit) mark the message as reached the handset
  and come out as "receipt" events on the ZeroMQ events socket;
- policy, prefix keys and [KIND NAME] sections are checked at start with file and line.
"""
import json
import os
import shutil
import time
import unittest

import msgpack
import zmq

import herald_harness as H


def plugin_dir(tmp):
    """longpoll.so (for polling and acking) beside devrec.so, in one [plugins] dir."""
    d = os.path.join(tmp, "plugins")
    os.makedirs(d, exist_ok=True)
    shutil.copy(os.path.join(H.BUILD, "transports", "longpoll.so"), d)
    shutil.copy(os.path.join(H.BUILD, "test-plugins", "devrec.so"), d)
    return d


def lines(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


class PushPolicy(H.HeraldTestCase):
    def conf(self, tmp, policy, a=None, b=None, extra=None):
        c = {
            "plugins": {"dir": plugin_dir(tmp), "load": "longpoll, devrec_a, devrec_b"},
            "tenant default": {"apps": "news, other", "push_policy": policy},
            "transport devrec_a": dict({"file": os.path.join(tmp, "a.jsonl")}, **(a or {})),
            "transport devrec_b": dict({"file": os.path.join(tmp, "b.jsonl")}, **(b or {})),
        }
        c.update(extra or {})
        return c

    def register(self, d, app, device, msisdn=None):
        body = {"device": device}
        if msisdn:
            body["msisdn"] = msisdn
        r = H.curl("POST", d.u("/v1/apps/%s/registrations" % app), body, token=d.key)
        self.assertEqual(r.status, 201, r)
        return r.json()["token"]

    def test_escalation_receipts_and_restart(self):
        tmp = H.tempfile.mkdtemp(prefix="herald-push-")
        self.addCleanup(shutil.rmtree, tmp, True)
        conf = self.conf(tmp, "longpoll, devrec_a after 1s, devrec_b after 3s",
                         a={"receipt": "before", "refs": "2", "link": "main", "tag.region": "eu"},
                         b={"receipt": "after"},
                         extra={"devrec_link main": {"label": "link-one"},
                                "tenant default": {"apps": "news, other",
                                                   "push_policy": "longpoll, devrec_a after 1s, "
                                                                  "devrec_b after 3s",
                                                   "push_policy.other": "devrec_b"}})
        d = self.start_daemon(conf)
        a_file, b_file = os.path.join(tmp, "a.jsonl"), os.path.join(tmp, "b.jsonl")
        sub = H.zctx().socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"default.receipt")
        sub.setsockopt(zmq.LINGER, 0)
        sub.connect(d.zmq_events)
        self.addCleanup(sub.close)

        tok_fast = self.register(d, "news", "fast", "+49 151 0000-0001")
        self.register(d, "news", "slow", "491510000002")
        self.register(d, "news", "nonumber")
        # A bad number is refused with a clear error.
        r = H.curl("POST", d.u("/v1/apps/news/registrations"), {"device": "x", "msisdn": "12ab"},
                   token=d.key)
        self.assertJsonError(r, 400)

        mid = d.publish("news", {"text": "hello"})
        # "fast" acks at once over long-poll: it must never be pushed.
        got = d.poll("fast", tok_fast)["messages"]
        self.assertEqual([m["id"] for m in got], [mid])
        d.ack("fast", tok_fast, [mid])

        H.wait_for(lambda: len(lines(a_file)) >= 1, 15 * H.SLOW, what="devrec_a delivery")
        time.sleep(4 * H.SLOW)  # past devrec_b's step too
        a, b = lines(a_file), lines(b_file)
        self.assertEqual([(x["device"], x["id"]) for x in a], [("slow", mid)], a)
        x = a[0]
        self.assertEqual(x["msisdn"], "491510000002")
        self.assertEqual(x["tenant"], "default")
        self.assertEqual(x["label"], "link-one")        # [devrec_link main] via section_str
        self.assertEqual(x["tags"], {"region": "eu"})   # tag.* via config_key_at
        self.assertEqual(x["data"], {"text": "hello"})
        self.assertEqual(b, [], "devrec_a delivered it: no escalation to devrec_b")

        # Both receipts overtook the submit (receipt=before): held, then matched.
        ev = []
        end = H.deadline(10)
        while time.monotonic() < end and not ev:
            if sub.poll(200):
                topic, body = sub.recv_multipart()
                ev.append(msgpack.unpackb(body, raw=False))
        self.assertTrue(ev, "no receipt event")
        self.assertEqual((ev[0]["state"], ev[0]["to"], ev[0]["app"], ev[0]["id"]),
                         ("delivered", "slow", "news", str(mid)))
        self.assertEqual(d.metric("herald_push_receipts_total"), 2)
        self.assertEqual(d.metric("herald_push_receipts_held"), 0)
        # The publisher reads each device's state of the message.
        r = H.curl("GET", d.u("/v1/apps/news/messages/%s/deliveries" % mid), token=d.key)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["deliveries"],
                         [{"device": "slow", "transport": "devrec_a", "state": "delivered"}])
        self.assertJsonError(H.curl("GET", d.u("/v1/apps/news/messages/%s/deliveries" % mid)),
                             401)
        self.assertJsonError(H.curl("GET", d.u("/v1/apps/nosuch/messages/%s/deliveries" % mid),
                                    token=d.key), 404)

        # Per-app policy: "other" goes to devrec_b at once, direct messages too.
        self.register(d, "other", "slow")
        mid2 = d.publish("other", {"text": "direct"}, to="slow")
        H.wait_for(lambda: len(lines(b_file)) >= 1, 15 * H.SLOW, what="devrec_b delivery")
        self.assertEqual([(x["device"], x["id"], x["app"]) for x in lines(b_file)],
                         [("slow", mid2, "other")])

    def test_queue_survives_restart_and_retries(self):
        tmp = H.tempfile.mkdtemp(prefix="herald-push-")
        self.addCleanup(shutil.rmtree, tmp, True)
        # devrec_a fails its first 3 attempts (retried after 1 s, 2 s, 4 s).
        conf = self.conf(tmp, "devrec_a", a={"fail_first": "3"})
        d = self.start_daemon(conf)
        a_file = os.path.join(tmp, "a.jsonl")
        self.register(d, "news", "h1", "4930000001")
        self.register(d, "news", "h2", "4930000002")
        mid = d.publish("news", {"text": "survive"})
        H.wait_for(lambda: (d.metric("herald_push_device_inflight") or 0) >= 2, 10 * H.SLOW,
                   what="deliveries queued")
        self.assertEqual(lines(a_file), [])
        # Restart while both are waiting for a retry: the queue is on disk.
        d.restart()
        H.wait_for(lambda: len(lines(a_file)) >= 2, 30 * H.SLOW, what="resumed deliveries")
        got = sorted((x["device"], x["id"]) for x in lines(a_file))
        self.assertEqual(got, [("h1", mid), ("h2", mid)])
        time.sleep(1.5)
        self.assertEqual(len(lines(a_file)), 2, "each device exactly once")
        self.assertEqual(d.metric("herald_push_device_inflight"), 0)
        # And after another restart nothing is pushed again.
        d.restart()
        time.sleep(2 * H.SLOW)
        self.assertEqual(len(lines(a_file)), 2)

    def test_bad_policies_are_refused_with_file_and_line(self):
        tmp = H.tempfile.mkdtemp(prefix="herald-push-")
        self.addCleanup(shutil.rmtree, tmp, True)
        cases = [
            ("devrec_a, nosuch after 5s", r"herald\.conf:\d+: push_policy of tenant default: "
                                          r"'nosuch' is not a loaded transport"),
            ("devrec_a after 10s, devrec_b after 5s", r"comes before the previous step"),
            ("devrec_a after soon", r"bad duration"),
        ]
        for policy, want in cases:
            d = self.start_daemon(self.conf(tmp, policy), start=False)
            rc, log = self.run_once(d)
            self.assertNotEqual(rc, 0, policy)
            self.assertRegex(log, want)
        # A [KIND NAME] section no loaded transport reads, and an undeclared key in one.
        for extra, want in [({"nolink main": {"label": "x"}}, r"unknown section \[nolink main\]"),
                            ({"devrec_link main": {"colour": "x"}},
                             r"unknown key 'colour' in \[devrec_link main\]")]:
            d = self.start_daemon(self.conf(tmp, "devrec_a", extra=extra), start=False)
            rc, log = self.run_once(d)
            self.assertNotEqual(rc, 0)
            self.assertRegex(log, want)

    def run_once(self, d):
        p = H.subprocess.run([H.HERALDD, "-c", d.config_path], capture_output=True, text=True,
                             timeout=30 * H.SLOW, cwd=d.tmp)
        return p.returncode, p.stderr


if __name__ == "__main__":
    H.main()
