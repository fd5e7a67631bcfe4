#!/usr/bin/python3
"""Malformed, oversized and hostile input over HTTP and ZeroMQ; HTTP keep-alive and
pipelining. After each test the daemon must still be up and serving."""
import json

import zmq

import herald_harness as H

CONF = {
    "http": {"max_body": "1KiB", "max_header": "1KiB"},
    "zmq": {"max_frame": "1KiB"},
}


class BadInput(H.HeraldTestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = cls.start_class_daemon(CONF)
        cls.dev = "victim"
        cls.tok = cls.d.provision("app", cls.dev)

    def tearDown(self):
        # whatever the test threw at it, heraldd is alive and serves publish -> poll
        d = self.d
        self.assertTrue(d.running(), "heraldd died")
        r = d.healthz()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"status": "ok"})
        mid = d.publish("app", {"still": "serving"})
        # (stragglers of the test may be pending too: read and ack until ours comes)
        seen = []
        cursor = None
        while mid not in seen:
            j = d.poll(self.dev, self.tok, cursor=cursor, max=100)
            self.assertTrue(j["messages"], "the publish never reached the device")
            seen += [m["id"] for m in j["messages"]]
            cursor = j["cursor"]
        for k in range(0, len(seen), 500):
            d.ack(self.dev, self.tok, seen[k:k + 500])

    def pub(self, body, token=True, **kw):
        return H.curl("POST", self.d.u("/v1/apps/app/messages"), body,
                      token=self.d.key if token else None, **kw)

    # -- 8. HTTP bodies --
    def test_malformed_json(self):
        for body in ['{"data": ', "{data: 1}", "{} x", "{'data': 1}", '{"data": 1,}',
                     b'{"data": "\xff\xfe"}', '{"data": 1, "data": 2}', "\x00", "{",
                     '{"data": "\\u0000"}']:
            j = self.assertJsonError(self.pub(body), 400, "bad_request")
            self.assertTrue(j["message"])

    def test_json_a_lax_parser_would_take(self):
        # What yajl 2.1 alone accepts and a strict parser refuses (broker/pubbody.c): each a
        # 400 that says where and what, and nothing stored.
        for body, what in [('{"data": "\\ud800"}', "surrogate"),
                           ('{"data": "\\ud800\\u0041"}', "surrogate"),
                           ('{"data": "\\udc00"}', "surrogate"),
                           ('{"data": "a\\u0000b"}', "u0000"),
                           ('{"data":\v1}', "whitespace"),
                           ('{"data":1}"', "trailing garbage"),
                           (b'{"data": "\xc0\x80"}', "UTF"),
                           (b'{"data": "\xed\xa0\x80"}', "UTF"),
                           ('{"data": 9223372036854775808}', "64-bit")]:
            j = self.assertJsonError(self.pub(body), 400, "bad_request")
            self.assertIn(what, j["message"], body)
            self.assertIn("line 1" if what not in ("UTF", "64-bit") else "", j["message"])

    def test_json_edges_accepted_as_sent(self):
        # The one-pass reader keeps what a strict parser keeps: the smallest int64, escapes,
        # a surrogate pair, -0.0, and an object of many keys, delivered as they were sent.
        d = self.d
        data = {"min": -9223372036854775808, "max": 9223372036854775807, "s": "\u00e9\U0001F600\n\"",
                "neg0": -0.0, "many": {"k%d" % i: i for i in range(40)}, "deep": [[[[[]]]]]}
        body = json.dumps({"data": data, "ttl": 60})
        r = self.pub(body)
        self.assertEqual(r.status, 202, r)
        mid = r.json()["id"]
        got, cursor = None, None
        while got is None:
            j = d.poll(self.dev, self.tok, cursor=cursor, max=100)
            self.assertTrue(j["messages"], "the publish never reached the device")
            for m in j["messages"]:
                if m["id"] == mid:
                    got = m["data"]
            cursor = j["cursor"]
        self.assertEqual(got, json.loads(json.dumps(data)))
        self.assertEqual(json.dumps(got["neg0"]), "-0.0")

    def test_non_object_json(self):
        for body in ["[1]", '"string"', "1", "null", "true", "[]", "3.5"]:
            self.assertJsonError(self.pub(body), 400, "bad_request")

    def test_empty_body(self):
        self.assertJsonError(self.pub(b""), 400, "bad_request")

    def test_unknown_fields(self):
        for body in [{"data": 1, "tll": 5}, {"data": 1, "extra": None}, {"payload": 1},
                     {"data": 1, "key": "k"}]:
            j = self.assertJsonError(self.pub(body), 400, "bad_request")
            self.assertIn("unknown field", j["message"])

    def test_bad_ttl(self):
        for ttl in [0, -1, "10", 1.5, True, [], {}, 10 ** 12, 2 ** 63 - 1, 31 * 86400]:
            j = self.assertJsonError(self.pub({"data": 1, "ttl": ttl}), 400, "bad_request")
            self.assertIn("ttl", j["message"])
        # the largest allowed TTL (max_ttl, 30 days by default) is fine
        self.assertEqual(self.pub({"data": 1, "ttl": 30 * 86400}).status, 202)

    def test_bad_to_and_collapse_types(self):
        for body in [{"data": 1, "to": 5}, {"data": 1, "to": ["a"]}, {"data": 1, "collapse": 1},
                     {"data": 1, "collapse": {}}]:
            self.assertJsonError(self.pub(body), 400, "bad_request")

    def test_bad_app_id(self):
        # not a valid app id: 404 (nothing to reveal) or 400, never accepted
        r = H.curl("POST", self.d.u("/v1/apps/bad%20app/messages"), {"data": 1},
                   token=self.d.key)
        self.assertIn(r.status, (400, 404), r)
        self.assertJsonError(r, r.status)
        r = H.curl("POST", self.d.u("/v1/apps/%s/messages" % ("a" * 200)), {"data": 1},
                   token=self.d.key)
        self.assertIn(r.status, (400, 404), r)

    def test_too_deep_payload(self):
        deep = "[" * 100 + "]" * 100
        r = self.pub('{"data": %s}' % deep)
        self.assertJsonError(r, 400, "bad_request")

    def test_oversized_body_is_413(self):
        body = json.dumps({"data": "x" * 2000})
        r = self.pub(body)
        self.assertJsonError(r, 413, "too_large")
        # with curl's Expect: 100-continue, and chunked
        r = self.pub(body, expect100=True)
        self.assertJsonError(r, 413, "too_large")
        r = self.pub(body, headers=["Transfer-Encoding: chunked"])
        self.assertJsonError(r, 413, "too_large")
        # just under the limit is fine
        ok = json.dumps({"data": "y" * 900})
        self.assertLessEqual(len(ok), 1024)
        self.assertEqual(self.pub(ok).status, 202)
        # unauthenticated oversized: still 413 or 401, never a crash
        r = self.pub(body, token=False)
        self.assertIn(r.status, (401, 413))

    def test_oversized_header_is_431(self):
        r = self.pub({"data": 1}, headers=["X-Big: " + "h" * 2000])
        self.assertJsonError(r, 431, "too_large")

    def test_unknown_route_and_method(self):
        d = self.d
        self.assertJsonError(H.curl("GET", d.u("/nope")), 404, "not_found")
        self.assertJsonError(H.curl("GET", d.u("/v1/apps/app/messages"), token=d.key), 405)
        r = H.curl("DELETE", d.u("/healthz"))
        self.assertJsonError(r, 405)
        self.assertIn("GET", r.headers.get("allow", ""))
        self.assertJsonError(H.curl("POST", d.u("/v1/apps//messages"), {"data": 1},
                                    token=d.key), 404)

    def test_malformed_http(self):
        d = self.d
        for raw in [b"GARBAGE\r\n\r\n", b"\x16\x03\x01\x02\x00\x01",
                    b"POST /v1/apps/app/messages HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
                    b"GET /healthz HTTP/1.1\r\nBad Header Line\r\n\r\n"]:
            c = H.RawHttp(d.http_port)
            try:
                c.send(raw)
                r = c.read_response()
                self.assertEqual(r.status, 400, (raw, r))
                self.assertEqual(r.json()["error"], "bad_request")
                self.assertTrue(c.closed_by_peer())
            finally:
                c.close()
        # a client that connects and leaves, or sends half a request and leaves
        for raw in [b"", b"GET /heal", b"POST /v1/apps/app/messages HTTP/1.1\r\n"
                    b"Content-Length: 100\r\n\r\n{\"da"]:
            c = H.RawHttp(d.http_port)
            if raw:
                c.send(raw)
            c.close()

    def test_clients_that_leave_early(self):
        # publishes and held polls whose client is gone before the answer: the answer is
        # dropped, nothing leaks or crashes (ASan builds check the memory side)
        d = self.d
        pub = H.http_request_bytes("POST", "/v1/apps/app/messages", json.dumps({"data": "gone"}),
                                   ["Authorization: Bearer " + d.key])
        poll = H.http_request_bytes("GET", "/v1/devices/%s/messages?wait=30&cursor=%s" % (
            self.dev, 10 ** 15), b"", ["Authorization: Bearer " + self.tok])
        for _ in range(30):
            c = H.RawHttp(d.http_port)
            c.send(pub + pub)
            c.close()
        H.wait_for(lambda: d.metric("herald_held_polls") == 0, 15, what="no held polls")
        held = []
        for _ in range(10):
            c = H.RawHttp(d.http_port)
            c.send(poll)
            held.append(c)
        H.wait_for(lambda: d.metric("herald_held_polls") == 10, 15, what="10 held polls")
        for c in held:
            c.close()
        H.wait_for(lambda: d.metric("herald_held_polls") == 0, 15, what="aborted polls freed")
        # a DEALER that sends many requests and leaves before the replies
        s = H.zsocket(zmq.DEALER, d.zmq_ingress)
        for i in range(100):
            s.send_multipart([b"", H.pack({"key": d.key, "app": "app", "data": i})])
        s.close()
        # and a REQ whose reply goes nowhere
        s = H.zsocket(zmq.REQ, d.zmq_ingress)
        s.send(H.pack({"key": d.key, "app": "app", "data": "bye"}))
        s.close()
        H.wait_for(lambda: d.metric("herald_zmq_inflight") == 0, 15, what="zmq publishes done")

    # -- 16. keep-alive and pipelining --
    def test_keep_alive_and_pipelining(self):
        d = self.d
        cur = d.poll(self.dev, self.tok)["cursor"]
        c = H.RawHttp(d.http_port)
        try:
            pub = json.dumps({"data": "pipelined"})
            batch = (H.http_request_bytes("GET", "/healthz") +
                     H.http_request_bytes("GET", "/nope") +
                     H.http_request_bytes("POST", "/v1/apps/app/messages", pub,
                                          ["Authorization: Bearer " + d.key,
                                           "Content-Type: application/json"]) +
                     H.http_request_bytes("GET", "/v1/devices/%s/messages?cursor=%s"
                                          % (self.dev, cur), b"",
                                          ["Authorization: Bearer " + self.tok]))
            c.send(batch)  # one write, four requests
            r1, r2, r3, r4 = (c.read_response() for _ in range(4))
            self.assertEqual((r1.status, r2.status, r3.status, r4.status), (200, 404, 202, 200))
            self.assertEqual(r1.json(), {"status": "ok"})
            mid = r3.json()["id"]
            self.assertIn(mid, [m["id"] for m in r4.json()["messages"]])
            # the connection stays open for more
            c.send(H.http_request_bytes("POST", "/v1/devices/%s/acks" % self.dev,
                                        json.dumps({"ids": [mid]}),
                                        ["Authorization: Bearer " + self.tok]))
            self.assertEqual(c.read_response().status, 200)
            c.send(H.http_request_bytes("GET", "/healthz"))
            self.assertEqual(c.read_response().status, 200)
        finally:
            c.close()

    def test_pipelined_behind_a_held_poll(self):
        # the second request waits for the held poll's answer: answers stay in order
        d = self.d
        cur = d.poll(self.dev, self.tok)["cursor"]
        c = H.RawHttp(d.http_port)
        try:
            c.send(H.http_request_bytes(
                "GET", "/v1/devices/%s/messages?wait=1&cursor=%s" % (self.dev, cur), b"",
                ["Authorization: Bearer " + self.tok]) + H.http_request_bytes("GET", "/healthz"))
            r1 = c.read_response()
            r2 = c.read_response()
            self.assertEqual(r1.status, 200)
            self.assertIn("messages", r1.json())
            self.assertEqual(r2.json(), {"status": "ok"})
        finally:
            c.close()

    def test_pipelined_error_closes_after_answer(self):
        d = self.d
        c = H.RawHttp(d.http_port)
        try:
            c.send(H.http_request_bytes("GET", "/healthz") + b"BROKEN\r\n\r\n" +
                   H.http_request_bytes("GET", "/healthz"))
            self.assertEqual(c.read_response().status, 200)
            self.assertEqual(c.read_response().status, 400)
            self.assertTrue(c.closed_by_peer())
        finally:
            c.close()

    def test_connection_close_header(self):
        d = self.d
        c = H.RawHttp(d.http_port)
        try:
            c.send(H.http_request_bytes("GET", "/healthz", b"", ["Connection: close"]))
            r = c.read_response()
            self.assertEqual(r.status, 200)
            self.assertEqual(r.headers.get("connection", "").lower(), "close")
            self.assertTrue(c.closed_by_peer())
        finally:
            c.close()

    # -- 8. ZeroMQ --
    def zreq(self, body):
        return H.zmq_req(self.d.zmq_ingress, body)

    def assertZmqError(self, rep, code):
        self.assertEqual(rep.get("error"), code, rep)
        self.assertIsInstance(rep.get("message"), str, rep)
        self.assertNotIn("id", rep)

    def test_zmq_malformed_msgpack(self):
        good = H.pack({"key": self.d.key, "app": "app", "data": 1})
        for raw in [b"\xc1", b"", good[:-1], good + b"\x01", b"\x81", b"\xdf\xff\xff\xff\xff",
                    b"\xdb\xff\xff\xff\xff", b"\x92\x01", b"{\"json\": 1}"]:
            self.assertZmqError(self.zreq(raw), "bad_request")

    def test_zmq_non_map(self):
        for v in [[1, 2], "string", 5, None, True, 1.5, b"bin"]:
            self.assertZmqError(self.zreq(v), "bad_request")

    def test_zmq_bad_fields(self):
        k = self.d.key
        self.assertZmqError(self.zreq({"key": k, "data": 1}), "bad_request")  # missing app
        self.assertZmqError(self.zreq({"key": k}), "bad_request")
        self.assertZmqError(self.zreq({"app": "app", "data": 1}), "unauthorized")  # no key
        self.assertZmqError(self.zreq({}), "unauthorized")
        for body in [
            {"key": k, "app": 5, "data": 1},
            {"key": 5, "app": "app", "data": 1},
            {"key": k, "app": "app", "to": 5},
            {"key": k, "app": "app", "collapse": ["x"]},
            {"key": k, "app": "app", "ttl": "10"},
            {"key": k, "app": "app", "ttl": -1},
            {"key": k, "app": "app", "ttl": 1.5},
            {"key": k, "app": "app", "ttl": 10 ** 12},
            {"key": k, "app": "app", "ttl": 2 ** 64 - 1},
            {"key": k, "app": "app", "bogus": 1},
            {"key": k, "app": "bad app id", "data": 1},
            {"key": k, "app": "a\x00b", "data": 1},
            {"key": k, "app": "app", "to": "bad device!"},
            {"key": k, "app": "app", "collapse": ""},
            {1: 2, "key": k, "app": "app"},
        ]:
            self.assertZmqError(self.zreq(body), "bad_request")
        deep = 1
        for _ in range(100):
            deep = [deep]
        self.assertZmqError(self.zreq({"key": k, "app": "app", "data": deep}), "bad_request")

    def test_zmq_oversized_frame(self):
        d = self.d
        big = {"key": d.key, "app": "app", "data": "x" * 2000}
        self.assertZmqError(self.zreq(big), "too_large")
        # several at once on a DEALER, mixed with a good one
        s = H.zsocket(zmq.DEALER, d.zmq_ingress)
        try:
            s.send_multipart([b"", H.pack(big)])
            s.send_multipart([b"", H.pack({"key": d.key, "app": "app", "data": "small"})])
            s.send_multipart([b"", H.pack(big)])
            reps = [H.unpack(s.recv_multipart()[-1]) for _ in range(3)]
        finally:
            s.close()
        self.assertEqual(sorted(r.get("error", "id") for r in reps),
                         ["id", "too_large", "too_large"])
        ok = [r["id"] for r in reps if "id" in r]
        d.ack(self.dev, self.tok, ok)

    def test_zmq_frame_past_hard_cap_is_dropped(self):
        # far past max_frame: libzmq drops the connection; nothing else is affected
        d = self.d
        s = H.zsocket(zmq.DEALER, d.zmq_ingress, timeout=1.0)
        try:
            s.send_multipart([b"", b"\x00" * 200000])
            with self.assertRaises(zmq.Again):
                s.recv_multipart()
        finally:
            s.close()
        rep = self.zreq({"key": d.key, "app": "app", "data": "after"})
        self.assertIn("id", rep)
        d.ack(self.dev, self.tok, [rep["id"]])

    def test_zmq_absurd_envelope_is_dropped(self):
        d = self.d
        s = H.zsocket(zmq.DEALER, d.zmq_ingress, timeout=1.0)
        try:
            s.send_multipart([b"e"] * 20 + [H.pack({"key": d.key, "app": "app", "data": 1})])
            with self.assertRaises(zmq.Again):
                s.recv_multipart()
        finally:
            s.close()
        d.wait_log(r"event=zmq_request_dropped")

    def test_zmq_ttl_zero(self):
        # Same rule as HTTP: a ttl must be a positive number of seconds.
        rep = self.zreq({"key": self.d.key, "app": "app", "data": "ttl0", "ttl": 0})
        self.assertZmqError(rep, "bad_request")


if __name__ == "__main__":
    H.main()
