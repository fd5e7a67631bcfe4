#!/usr/bin/python3
"""Publishing over HTTP and ZeroMQ, long-poll delivery, acks, cursors, collapse, TTL, direct
messages, auto-created apps."""
import itertools
import json
import time

import zmq

import herald_harness as H

_n = itertools.count(1)


def uniq(prefix):
    return "%s-%d" % (prefix, next(_n))


PAYLOADS = [
    {"a": 1, "nested": {"list": [1, "two", 3.5, None, True, False]}, "empty": {}, "arr": []},
    "plain string",
    "unicode: héllo wörld ☃ 日本語 𝄞 😀",
    {"ключ": "значение", "quote\"back\\slash": "line\nbreak\ttab"},
    42,
    -7,
    0,
    12345678901234,
    -9007199254740993,
    3.25,
    -0.5,
    True,
    False,
    None,
    [1, [2, [3, []]], {"x": "y"}],
    "",
]


class PublishPoll(H.HeraldTestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = cls.start_class_daemon({"store": {"sweep_interval": "1s"}})

    def no_held_polls(self):
        """Wait until no poll of an earlier test is held any more; returns 0."""
        H.wait_for(lambda: self.d.metric("herald_held_polls") == 0, 15,
                   what="no held polls")
        return 0

    def hold_poll(self, dev, tok):
        """A poll from the device's current cursor, started and held (its CurlProcess)."""
        d = self.d
        cur = d.poll(dev, tok)["cursor"]
        held0 = self.no_held_polls()
        p = H.CurlProcess("GET", d.u("/v1/devices/%s/messages?wait=20&cursor=%s" % (dev, cur)),
                          token=tok)
        try:
            H.wait_for(lambda: d.metric("herald_held_polls") == held0 + 1, 15,
                       what="the poll to be held")
        except BaseException:
            p.kill()
            raise
        return p

    def register(self, app, device=None):
        device = device or uniq("dev")
        return device, self.d.provision(app, device)

    # -- 1. HTTP publish -> long-poll, payloads round-trip --
    def test_http_publish_roundtrip(self):
        d = self.d
        app = uniq("app")
        dev, tok = self.register(app)
        ids = [d.publish(app, p) for p in PAYLOADS]
        self.assertEqual(len(set(ids)), len(ids))
        got = d.poll(dev, tok)
        msgs = got["messages"]
        self.assertEqual([m["id"] for m in msgs], ids)
        for m, p in zip(msgs, PAYLOADS):
            self.assertEqual(m["data"], p)
            self.assertEqual(type(m["data"]), type(p))
            self.assertEqual(m["app"], app)
            self.assertIsInstance(m["created"], int)
            self.assertGreater(m["created"], 1_500_000_000_000)  # milliseconds since the epoch
            self.assertNotIn("to", m)  # a broadcast
        self.assertEqual(got["cursor"], ids[-1])

    def test_http_publish_without_data_is_null(self):
        d = self.d
        app = uniq("app")
        dev, tok = self.register(app)
        mid = d.publish(app, raw={})
        msgs = d.poll(dev, tok)["messages"]
        self.assertEqual([(m["id"], m["data"]) for m in msgs], [(mid, None)])

    # -- 1. ZeroMQ publish (REQ) --
    def test_zmq_req_publish(self):
        d = self.d
        app = uniq("app")
        dev, tok = self.register(app)
        ids = []
        for p in PAYLOADS:
            rep = H.zmq_req(d.zmq_ingress, {"key": d.key, "app": app, "data": p})
            self.assertEqual(set(rep), {"id"}, rep)
            self.assertIsInstance(rep["id"], str)
            ids.append(rep["id"])
        # explicit tenant, ttl and nil optional fields
        rep = H.zmq_req(d.zmq_ingress, {"tenant": "default", "key": d.key, "app": app,
                                         "data": {"k": "v"}, "ttl": 60, "to": None,
                                         "collapse": None})
        ids.append(rep["id"])
        msgs = d.poll(dev, tok)["messages"]
        self.assertEqual([m["id"] for m in msgs], ids)
        for m, p in zip(msgs, PAYLOADS + [{"k": "v"}]):
            self.assertEqual(m["data"], p)
            self.assertEqual(type(m["data"]), type(p))

    def test_zmq_batch_publish(self):
        d = self.d
        app = uniq("app")
        dev, tok = self.register(app)
        other, otok = self.register(app)
        batch = [{"data": {"n": 0}},
                 {"data": {"n": 1}, "to": dev, "ttl": 60},
                 {"data": {"n": 2}, "to": "nobody-here"},     # refused: not registered
                 {"data": {"n": 3}, "collapse": "c", "to": None}]
        rep = H.zmq_req(d.zmq_ingress, {"key": d.key, "app": app, "batch": batch})
        self.assertEqual(set(rep), {"ids", "errors"}, rep)
        ids = rep["ids"]
        self.assertEqual(len(ids), 4)
        self.assertIsNone(ids[2])
        self.assertEqual([e["index"] for e in rep["errors"]], [2])
        self.assertEqual(rep["errors"][0]["error"], "not_found")
        self.assertTrue(all(isinstance(i, str) for i in ids[:2] + ids[3:]))
        self.assertEqual(ids, sorted(ids[:2] + ids[3:], key=int)[:2] + [None] +
                         sorted(ids[:2] + ids[3:], key=int)[2:])  # batch order = id order
        got = d.poll(dev, tok)["messages"]
        self.assertEqual([(m["id"], m["data"]) for m in got],
                         [(ids[0], {"n": 0}), (ids[1], {"n": 1}), (ids[3], {"n": 3})])
        got = d.poll(other, otok)["messages"]
        self.assertEqual([m["id"] for m in got], [ids[0], ids[3]])  # not the direct one
        # All accepted: just the ids.
        rep = H.zmq_req(d.zmq_ingress, {"key": d.key, "app": app,
                                         "batch": [{"data": i} for i in range(1000)]})
        self.assertEqual(set(rep), {"ids"})
        self.assertEqual(len(rep["ids"]), 1000)
        self.assertEqual(len(set(rep["ids"])), 1000)
        # Malformed batches are refused whole, with a reason.
        for bad in [{"batch": []}, {"batch": [{"data": 1}] * 1001}, {"batch": "x"},
                    {"batch": [1]}, {"batch": [{"data": 1, "tll": 5}]},
                    {"batch": [{"data": 1}], "data": 2}, {"batch": [{"to": 5}]}]:
            body = {"key": d.key, "app": app}
            body.update(bad)
            rep = H.zmq_req(d.zmq_ingress, body)
            self.assertEqual(rep.get("error"), "bad_request", (bad, rep))
            self.assertIsInstance(rep["message"], str)
        # A wrong key refuses the whole batch at once.
        rep = H.zmq_req(d.zmq_ingress, {"key": "x" * 40, "app": app, "batch": [{"data": 1}]})
        self.assertEqual(rep["error"], "unauthorized")

    def test_zmq_binary_payload_shows_as_null(self):
        # Documented in longpoll.c: a payload JSON cannot show is sent as null.
        d = self.d
        app = uniq("app")
        dev, tok = self.register(app)
        rep = H.zmq_req(d.zmq_ingress, {"key": d.key, "app": app, "data": b"\x00\x01\xff"})
        rep2 = H.zmq_req(d.zmq_ingress, {"key": d.key, "app": app, "data": "after"})
        msgs = d.poll(dev, tok)["messages"]
        self.assertEqual([(m["id"], m["data"]) for m in msgs],
                         [(rep["id"], None), (rep2["id"], "after")])

    # -- 1. ZeroMQ DEALER, many requests in flight, with and without the empty delimiter --
    def _dealer_batch(self, envelope, n=50):
        d = self.d
        app = uniq("app")
        dev, tok = self.register(app)
        s = H.zsocket(zmq.DEALER, d.zmq_ingress)
        try:
            sent = {}
            for i in range(n):
                data = {"i": i, "s": "dealer ✓ %d" % i}
                env = envelope(i)
                s.send_multipart(env + [H.pack({"key": d.key, "app": app, "data": data})])
                sent[i] = data
            replies = {}
            for _ in range(n):
                frames = s.recv_multipart()
                rep = H.unpack(frames[-1])
                self.assertIn("id", rep, rep)
                env = frames[:-1]
                replies[rep["id"]] = env
            self.assertEqual(len(replies), n)
        finally:
            s.close()
        got = d.poll(dev, tok, max=100)["messages"]
        self.assertEqual(len(got), n)
        self.assertEqual({m["id"] for m in got}, set(replies))
        by_i = {m["data"]["i"]: m for m in got}
        for i in range(n):
            self.assertEqual(by_i[i]["data"], sent[i])
            # the reply carried back exactly the envelope of its own request
            self.assertEqual(replies[by_i[i]["id"]], envelope(i))
        return got

    def test_zmq_dealer_with_delimiter(self):
        self._dealer_batch(lambda i: [b""])

    def test_zmq_dealer_without_delimiter(self):
        self._dealer_batch(lambda i: [])

    def test_zmq_dealer_with_correlation_frames(self):
        self._dealer_batch(lambda i: [b"corr-%d" % i, b""])

    def test_zmq_req_and_dealer_share_one_stream(self):
        d = self.d
        app = uniq("app")
        dev, tok = self.register(app)
        ids = [d.publish(app, "http-1")]
        ids.append(H.zmq_req(d.zmq_ingress, {"key": d.key, "app": app, "data": "zmq-2"})["id"])
        ids.append(d.publish(app, "http-3"))
        msgs = d.poll(dev, tok)["messages"]
        self.assertEqual([m["data"] for m in msgs], ["http-1", "zmq-2", "http-3"])
        self.assertEqual([m["id"] for m in msgs], ids)
        self.assertEqual([int(i) for i in ids], sorted(int(i) for i in ids))

    # -- 2. a held poll is answered the moment a message commits --
    def test_held_poll_answered_on_publish(self):
        d = self.d
        app = uniq("app")
        dev, tok = self.register(app)
        p = self.hold_poll(dev, tok)
        try:
            self.assertFalse(p.done(), "the poll returned without a message")
            t0 = time.monotonic()
            mid = d.publish(app, {"wake": "up"})
            r = p.result(30)
            elapsed = time.monotonic() - t0
        finally:
            p.kill()
        self.assertEqual(r.status, 200, r)
        j = r.json()
        self.assertEqual([(m["id"], m["data"]) for m in j["messages"]], [(mid, {"wake": "up"})])
        self.assertEqual(j["cursor"], mid)
        # well before the 20 s wait ran out: it was the publish that answered it
        self.assertLess(elapsed, 10.0)

    def test_held_poll_answers_an_app_registered_while_it_waits(self):
        # The held poll watches the apps its device had when it was held; a registration for
        # another app wakes it to watch that one too.
        d = self.d
        app, other = uniq("app"), uniq("app")
        dev, tok = self.register(app)
        p = self.hold_poll(dev, tok)
        try:
            self.assertEqual(d.provision(other, dev), tok)
            H.wait_for(lambda: d.metric("herald_held_polls") == 1, 15,
                       what="the poll to be held again")
            self.assertFalse(p.done(), "the registration answered the poll empty")
            t0 = time.monotonic()
            mid = d.publish(other, {"new": "app"})
            r = p.result(30)
            elapsed = time.monotonic() - t0
        finally:
            p.kill()
        self.assertEqual(r.status, 200, r)
        self.assertEqual([(m["id"], m["app"]) for m in r.json()["messages"]], [(mid, other)])
        self.assertLess(elapsed, 10.0)

    def test_two_held_polls_of_one_device_both_answered(self):
        d = self.d
        app = uniq("app")
        dev, tok = self.register(app)
        cur = d.poll(dev, tok)["cursor"]
        held0 = self.no_held_polls()
        url = d.u("/v1/devices/%s/messages?wait=20&cursor=%s" % (dev, cur))
        ps = [H.CurlProcess("GET", url, token=tok) for _ in range(2)]
        try:
            H.wait_for(lambda: d.metric("herald_held_polls") == held0 + 2, 15,
                       what="two held polls")
            mid = d.publish(app, "both")
            for p in ps:
                r = p.result(30)
                self.assertEqual([m["id"] for m in r.json()["messages"]], [mid])
        finally:
            for p in ps:
                p.kill()

    def test_held_poll_times_out_empty(self):
        d = self.d
        app = uniq("app")
        dev, tok = self.register(app)
        t0 = time.monotonic()
        j = d.poll(dev, tok, wait=1)
        self.assertEqual(j["messages"], [])
        self.assertGreaterEqual(time.monotonic() - t0, 0.9)

    def test_held_polls_of_different_waits_each_end_at_their_own(self):
        # Held polls share one deadline timer, a FIFO list per distinct wait: a longer wait
        # held first must not delay a shorter one behind it, and a poll answered by a message
        # from the middle of a list must leave the others' deadlines alone.
        d = self.d
        app = uniq("app")
        devs = [self.register(app) for _ in range(4)]
        held0 = self.no_held_polls()
        waits = [4, 1, 4, 2]
        ps = []
        try:
            for (dev, tok), w in zip(devs, waits):
                cur = d.poll(dev, tok)["cursor"]
                ps.append(H.CurlProcess(
                    "GET", d.u("/v1/devices/%s/messages?wait=%d&cursor=%s" % (dev, w, cur)),
                    token=tok))
                H.wait_for(lambda: d.metric("herald_held_polls") == held0 + len(ps), 15,
                           what="the poll to be held")
            # The first 4-second poll is the head of its list: answer it with a direct message.
            mid = d.publish(app, "to the first", to=devs[0][0])
            r = ps[0].result(30)
            self.assertEqual([m["id"] for m in r.json()["messages"]], [mid])
            self.assertLess(ps[0].elapsed(), 3.5)
            for i in (1, 3, 2):
                r = ps[i].result(30)
                self.assertEqual(r.json()["messages"], [], "poll %d" % i)
                self.assertGreaterEqual(ps[i].elapsed(), waits[i] - 0.1, "poll %d" % i)
            # Each ended at its own deadline: the 1 s and 2 s polls before the 4 s one.
            self.assertLess(ps[1].finished, ps[3].finished)
            self.assertLess(ps[3].finished, ps[2].finished)
            self.assertEqual(d.metric("herald_held_polls"), held0)
        finally:
            for p in ps:
                p.kill()

    # -- 3. acks --
    def test_ack_never_redelivered_and_idempotent(self):
        d = self.d
        app = uniq("app")
        dev, tok = self.register(app)
        ids = [d.publish(app, i) for i in range(4)]
        msgs = d.poll(dev, tok)["messages"]
        self.assertEqual([m["id"] for m in msgs], ids)
        acks0 = d.metric("herald_acks_total")
        # ids as strings and as integers
        self.assertEqual(d.ack(dev, tok, [ids[0], int(ids[2])])["acked"], 2)
        H.wait_for(lambda: d.metric("herald_acks_total") == acks0 + 2, 10,
                   what="herald_acks_total to count 2 acks")
        again = d.poll(dev, tok)["messages"]  # no cursor: everything still pending
        self.assertEqual([m["id"] for m in again], [ids[1], ids[3]])
        # idempotent: acking again succeeds, changes nothing, and says so
        self.assertEqual(d.ack(dev, tok, [ids[0], ids[2]])["acked"], 0)
        self.assertEqual(d.ack(dev, tok, [ids[0]])["acked"], 0)
        self.assertEqual([m["id"] for m in d.poll(dev, tok)["messages"]], [ids[1], ids[3]])
        self.assertEqual(d.metric("herald_acks_total"), acks0 + 2)
        # ack the rest (one duplicated in the same request), then nothing is left
        self.assertEqual(d.ack(dev, tok, [ids[1], ids[3], ids[3]])["acked"], 2)
        self.assertEqual(d.poll(dev, tok)["messages"], [])
        self.assertEqual(d.metric("herald_acks_total"), acks0 + 4)
        # acking an id that never existed is harmless
        self.assertEqual(d.ack(dev, tok, [str(int(ids[-1]) + 100000)])["acked"], 0)
        self.assertEqual(d.poll(dev, tok)["messages"], [])
        # new messages still come
        mid = d.publish(app, "later")
        self.assertEqual([m["id"] for m in d.poll(dev, tok)["messages"]], [mid])

    def test_ack_of_someone_elses_message_does_nothing(self):
        d = self.d
        app = uniq("app")
        a, ta = self.register(app)
        b, tb = self.register(app)
        direct = d.publish(app, "for a only", to=a)
        bcast = d.publish(app, "for everyone")
        # b acks a's direct message and the broadcast: a keeps both
        d.ack(b, tb, [direct, bcast])
        self.assertEqual([m["id"] for m in d.poll(a, ta)["messages"]], [direct, bcast])
        self.assertEqual([m["id"] for m in d.poll(b, tb)["messages"]], [])
        # b cannot ack on a's behalf with its own token
        r = H.curl("POST", d.u("/v1/devices/%s/acks" % a), {"ids": [direct]}, token=tb)
        self.assertJsonError(r, 401, "unauthorized")
        self.assertEqual([m["id"] for m in d.poll(a, ta)["messages"]], [direct, bcast])

    def test_ack_bad_bodies(self):
        d = self.d
        app = uniq("app")
        dev, tok = self.register(app)
        url = d.u("/v1/devices/%s/acks" % dev)
        for body in ['{"ids": []}', '{"ids": "1"}', '{}', '[1]', 'nope', '{"ids": [-1]}',
                     '{"ids": ["x"]}', '{"ids": [1.5]}', '{"ids": [0]}',
                     json.dumps({"ids": list(range(1, 1002))})]:
            self.assertJsonError(H.curl("POST", url, body, token=tok), 400, "bad_request")
        self.assertJsonError(H.curl("POST", url, {"ids": ["1"]}), 401, "unauthorized")

    # -- 17. cursor semantics --
    def test_cursor_semantics(self):
        d = self.d
        app = uniq("app")
        dev, tok = self.register(app)
        first = d.poll(dev, tok)
        self.assertEqual(first["messages"], [])
        ids = [d.publish(app, i) for i in range(3)]
        j = d.poll(dev, tok)
        self.assertEqual([m["id"] for m in j["messages"]], ids)
        cur = j["cursor"]
        self.assertEqual(cur, ids[-1])
        # with the returned cursor: not the same messages again
        j2 = d.poll(dev, tok, cursor=cur)
        self.assertEqual(j2["messages"], [])
        self.assertGreaterEqual(int(j2["cursor"]), int(cur))
        later = d.publish(app, "later")
        j3 = d.poll(dev, tok, cursor=cur)
        self.assertEqual([m["id"] for m in j3["messages"]], [later])
        # max pages through, the cursor moves by what was returned
        p1 = d.poll(dev, tok, max=2)
        self.assertEqual([m["id"] for m in p1["messages"]], ids[:2])
        self.assertEqual(p1["cursor"], ids[1])
        p2 = d.poll(dev, tok, max=2, cursor=p1["cursor"])
        self.assertEqual([m["id"] for m in p2["messages"]], [ids[2], later])
        # without a cursor everything unacked comes again
        self.assertEqual([m["id"] for m in d.poll(dev, tok)["messages"]], ids + [later])
        # bad parameters
        for q in ["cursor=abc", "cursor=-1", "wait=x", "max=0", "max=-3", "wait=1.5"]:
            r = H.curl("GET", d.u("/v1/devices/%s/messages?%s" % (dev, q)), token=tok)
            self.assertJsonError(r, 400, "bad_request")

    def test_held_poll_with_cursor_ignores_older(self):
        d = self.d
        app = uniq("app")
        dev, tok = self.register(app)
        old = d.publish(app, "old")
        cur = d.poll(dev, tok)["cursor"]
        self.assertEqual(cur, old)
        self.no_held_polls()
        p = H.CurlProcess("GET", d.u("/v1/devices/%s/messages?wait=20&cursor=%s" % (dev, cur)),
                          token=tok)
        try:
            H.wait_for(lambda: d.metric("herald_held_polls") == 1, 15, what="held poll")
            new = d.publish(app, "new")
            r = p.result(30)
        finally:
            p.kill()
        self.assertEqual([m["id"] for m in r.json()["messages"]], [new])

    # -- 17. apps = * auto-creates the app on publish --
    def test_publish_auto_creates_app(self):
        d = self.d
        app = uniq("brand.new_app")
        mid = d.publish(app, "nobody yet")  # no device, app never seen: created, 202
        self.assertTrue(mid.isdigit())
        dev, tok = self.register(app)
        # registered after that publish: only later messages are its business
        self.assertEqual(d.poll(dev, tok)["messages"], [])
        mid2 = d.publish(app, "hello")
        self.assertEqual([m["id"] for m in d.poll(dev, tok)["messages"]], [mid2])
        rep = H.zmq_req(d.zmq_ingress, {"key": d.key, "app": uniq("zmq.created"), "data": 1})
        self.assertIn("id", rep)

    # -- 9. collapse --
    def test_collapse_keeps_only_newest(self):
        d = self.d
        app = uniq("app")
        dev, tok = self.register(app)
        c0 = d.metric("herald_collapsed_total")
        d.publish(app, {"v": 1}, collapse="score")
        other = d.publish(app, {"v": "other"}, collapse="news")
        newer = d.publish(app, {"v": 2}, collapse="score")
        plain = d.publish(app, {"v": "plain"})
        msgs = d.poll(dev, tok)["messages"]
        self.assertEqual([(m["id"], m["data"]) for m in msgs],
                         [(other, {"v": "other"}), (newer, {"v": 2}), (plain, {"v": "plain"})])
        self.assertGreaterEqual(d.metric("herald_collapsed_total"), c0 + 1)
        # the same over ZeroMQ, and for a direct message
        z1 = H.zmq_req(d.zmq_ingress, {"key": d.key, "app": app, "to": dev, "data": "z1",
                                        "collapse": "direct"})
        z2 = H.zmq_req(d.zmq_ingress, {"key": d.key, "app": app, "to": dev, "data": "z2",
                                        "collapse": "direct"})
        self.assertNotEqual(z1["id"], z2["id"])
        msgs = d.poll(dev, tok, cursor=plain)["messages"]
        self.assertEqual([(m["id"], m["data"]) for m in msgs], [(z2["id"], "z2")])

    def test_collapse_bad(self):
        d = self.d
        r = d.publish("collapse-app", "x", collapse="", expect=400)
        self.assertJsonError(r, 400, "bad_request")
        r = d.publish("collapse-app", "x", collapse="k" * 129, expect=400)
        self.assertJsonError(r, 400, "bad_request")

    # -- 9. TTL and the sweeper --
    def test_ttl_expiry_and_sweep(self):
        d = self.d
        app = uniq("app")
        dev, tok = self.register(app)
        exp0 = d.metric("herald_expired_total")
        short = d.publish(app, "short-lived", ttl=1)
        t_ack = time.monotonic()
        zshort = H.zmq_req(d.zmq_ingress, {"key": d.key, "app": app, "data": "z", "ttl": 1})
        keep = d.publish(app, "long-lived", ttl=3600)
        # before expiry it is there (unless this machine is very slow: then skip the check)
        j = d.poll(dev, tok)
        if time.monotonic() - t_ack < 0.8:
            self.assertIn(short, [m["id"] for m in j["messages"]])
        # after expiry it is never delivered
        while time.monotonic() < t_ack + 2.5:
            time.sleep(0.1)
        ids = [m["id"] for m in d.poll(dev, tok)["messages"]]
        self.assertEqual(ids, [keep])
        self.assertNotIn(zshort["id"], ids)
        # and the sweeper (every 1 s here) deletes both
        H.wait_for(lambda: d.metric("herald_expired_total") >= exp0 + 2, 15,
                   what="herald_expired_total to go up by 2")
        self.assertEqual([m["id"] for m in d.poll(dev, tok)["messages"]], [keep])

    # -- 10. direct messages --
    def test_direct_message_reaches_only_its_device(self):
        d = self.d
        app = uniq("app")
        a, ta = self.register(app)
        b, tb = self.register(app)
        other_app = uniq("app")
        c, tc = self.register(other_app)
        mid = d.publish(app, {"secret": "for a"}, to=a)
        ja = d.poll(a, ta)
        self.assertEqual([(m["id"], m["data"], m.get("to")) for m in ja["messages"]],
                         [(mid, {"secret": "for a"}, a)])
        self.assertEqual(d.poll(b, tb)["messages"], [])
        self.assertEqual(d.poll(c, tc)["messages"], [])
        # over ZeroMQ too
        z = H.zmq_req(d.zmq_ingress, {"key": d.key, "app": app, "to": b, "data": "for b"})
        self.assertEqual([(m["id"], m["to"]) for m in d.poll(b, tb)["messages"]], [(z["id"], b)])
        self.assertEqual([m["id"] for m in d.poll(a, ta)["messages"]], [mid])

    def test_direct_message_to_unregistered_device_is_404(self):
        d = self.d
        app = uniq("app")
        dev, tok = self.register(app)
        other_app = uniq("app")
        elsewhere, _ = self.register(other_app)
        self.assertJsonError(d.publish(app, "x", to="no-such-device", expect=404), 404,
                             "not_found")
        # a device that exists, but is not registered for this app
        self.assertJsonError(d.publish(app, "x", to=elsewhere, expect=404), 404, "not_found")
        self.assertJsonError(d.publish(app, "x", to="bad id!", expect=400), 400)
        rep = H.zmq_req(d.zmq_ingress, {"key": d.key, "app": app, "to": "nobody", "data": 1})
        self.assertEqual(rep.get("error"), "not_found", rep)
        self.assertIn("message", rep)
        self.assertEqual(d.poll(dev, tok)["messages"], [])

    def test_device_token_is_per_device(self):
        d = self.d
        app = uniq("app")
        a, ta = self.register(app)
        b, tb = self.register(app)
        url = d.u("/v1/devices/%s/messages?wait=0" % a)
        self.assertJsonError(H.curl("GET", url, token=tb), 401, "unauthorized")
        self.assertJsonError(H.curl("GET", url), 401, "unauthorized")
        self.assertJsonError(H.curl("GET", url, token=ta + "x"), 401, "unauthorized")
        self.assertJsonError(H.curl("GET", url, token=d.key), 401, "unauthorized")
        self.assertEqual(H.curl("GET", url, token=ta).status, 200)


if __name__ == "__main__":
    H.main()
