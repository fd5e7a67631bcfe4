#!/usr/bin/env python3
"""The ipconn transport's protocol, against the real heraldd, with a client written from
docs/protocols/ipconn.md in Python (not the C library the agent uses):

- hello -> welcome -> pending messages oldest first -> new ones as they are published; acks
  are confirmed with "acked" and acked messages never come again; unacked ones come again on
  the next connection with the same ids; direct messages carry "to" and reach only their device;
  an app the device registers for while connected is delivered at once;
- the window: at most max_inflight unacked messages, more as acks arrive;
- refusals with their reason codes: wrong token, a valid token under another tenant name (the
  same answer), a frame before the hello, garbage, a newer protocol version, an oversized
  hello, no hello in time, too many connections; repeated failures from one address are
  throttled with a retry hint;
- heartbeats: the broker probes a quiet client and answers pings; a silent client is closed
  with goaway "idle"; a device connecting again replaces its old connection;
- SIGTERM sends goaway "shutdown" with the retry hint and the redirect address.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import herald_harness as H  # noqa: E402
from herald_harness import SANITIZED, HeraldTestCase, deadline, main  # noqa: E402
from ipconn_harness import RawClient, ipconn_conf, ipconn_port  # noqa: E402


class IpconnProtocol(HeraldTestCase):
    def start(self, **kw):
        d = self.start_daemon(ipconn_conf(**kw))
        return d, ipconn_port(d)

    def connect(self, d, port, device, token=None, app="news"):
        token = token or d.provision(app, device)
        c = RawClient(port)
        self.addCleanup(c.close)
        w = c.hello(device, token)
        self.assertEqual(w["t"], "welcome", w)
        return c, token, w

    def test_welcome_pending_new_ack_and_redelivery(self):
        d, port = self.start(heartbeat=30)
        token = d.provision("news", "phone-1")
        ids = [d.publish("news", {"n": i}) for i in range(3)]  # before the device connects
        c, _, w = self.connect(d, port, "phone-1", token)
        self.assertEqual((w["v"], w["heartbeat"], w["idle"], w["window"], w["max_frame"]),
                         (1, 30, 90, 64, 65536))
        got = [c.recv_type("msg") for _ in range(3)]
        self.assertEqual([str(m["id"]) for m in got], ids)  # oldest first
        self.assertEqual([m["data"] for m in got], [{"n": 0}, {"n": 1}, {"n": 2}])
        for m in got:
            self.assertEqual(m["app"], "news")
            self.assertNotIn("to", m)
            self.assertGreater(m["expires"], m["created"])
        new = d.publish("news", {"n": 3})  # published while connected: comes at once
        m = c.recv_type("msg")
        self.assertEqual((str(m["id"]), m["data"]), (new, {"n": 3}))
        c.ack([got[0]["id"], got[1]["id"]])
        self.assertEqual(c.recv_type("acked")["ids"], [got[0]["id"], got[1]["id"]])
        c.close()
        # Reconnect: what was not acked comes again, same ids, oldest first.
        c2, _, _ = self.connect(d, port, "phone-1", token)
        again = [c2.recv_type("msg") for _ in range(2)]
        self.assertEqual([m["id"] for m in again], [got[2]["id"], int(new)])
        c2.ack([x["id"] for x in again])
        c2.recv_type("acked")
        c2.close()
        c3, _, _ = self.connect(d, port, "phone-1", token)
        c3.send({"t": "ping", "n": 5})
        self.assertEqual(c3.recv_type("pong"), {"t": "pong", "n": 5})  # and no message first
        m = d.metrics()
        self.assertEqual(m["herald_ipconn_acks_total"], 4)
        self.assertEqual(m["herald_ipconn_authenticated"], 1)

    def test_revoked_token_ends_the_connection_and_held_polls_at_once(self):
        import threading
        from herald_harness import curl
        d, port = self.start(heartbeat=30)
        c, token, _ = self.connect(d, port, "phone-r")
        held = {}

        def hold():  # a long-poll of the same device, held when the token is revoked
            held["r"] = curl("GET", d.u("/v1/devices/phone-r/messages?wait=60"), token=token,
                             timeout=90)
        th = threading.Thread(target=hold)
        th.start()
        from herald_harness import wait_for
        wait_for(lambda: d.metric("herald_longpoll_held") == 1, 10, what="poll held")
        r = curl("DELETE", d.u("/v1/devices/phone-r/token"), token=d.key)
        self.assertEqual(r.status, 204, r)
        g = c.recv_type("goaway")
        self.assertEqual(g["code"], "revoked")
        self.assertTrue(c.closed_by_peer())
        th.join(20)
        self.assertFalse(th.is_alive())
        self.assertEqual(held["r"].status, 401, held["r"])
        # and the old token no longer opens a connection
        c2 = RawClient(port)
        self.addCleanup(c2.close)
        self.assertEqual(c2.hello("phone-r", token)["t"], "deny")

    def test_direct_message_reaches_only_its_device(self):
        d, port = self.start()
        a, _, _ = self.connect(d, port, "dev-a")
        b, _, _ = self.connect(d, port, "dev-b")
        mid = d.publish("news", {"secret": 1}, to="dev-a")
        m = a.recv_type("msg")
        self.assertEqual((str(m["id"]), m["to"], m["data"]), (mid, "dev-a", {"secret": 1}))
        bid = d.publish("news", {"all": 1})
        self.assertEqual(str(b.recv_type("msg")["id"]), bid)  # b's first message: the broadcast
        self.assertEqual(str(a.recv_type("msg")["id"]), bid)

    def catch_up(self, d, c):
        """A message to "news", received and acked: the connection is caught up."""
        first = d.publish("news", {"n": 1})
        m = c.recv_type("msg")
        self.assertEqual(str(m["id"]), first)
        c.ack([m["id"]])
        c.recv_type("acked")

    def test_app_registered_while_connected_is_delivered_at_once(self):
        # A caught-up connection watches the apps its device had when it last fetched: a
        # registration for another app must make it fetch and watch again, or that app's
        # messages would wait for some other wake-up (or the next connection).
        d, port = self.start(heartbeat=30)
        c, token, _ = self.connect(d, port, "phone-a")
        self.catch_up(d, c)  # its watch covers "news" only
        self.assertEqual(d.provision("sports", "phone-a"), token)
        later = d.publish("sports", {"goal": 1})
        m = c.recv_type("msg", timeout=5.0)
        self.assertEqual((str(m["id"]), m["app"], m["data"]), (later, "sports", {"goal": 1}))

    def test_app_registered_by_a_release_notice_is_watched_at_once(self):
        # A release notice registers a device that only reported the app in an update-check
        # inventory (in the notice's own commit). The connection re-arms its watch from its
        # device's cached app set, which that commit must invalidate like a registration, or
        # the app's broadcasts would wait for some other wake-up.
        d, port = self.start(heartbeat=30)
        c, token, _ = self.connect(d, port, "phone-n")
        self.catch_up(d, c)

        def upload(version):
            r = H.curl("POST", d.u("/v1/apps/mail/releases?version=%s&rollout=100" % version),
                       os.urandom(1000), token=d.key,
                       headers=["Content-Type: application/octet-stream"])
            self.assertEqual(r.status, 201, r)
        upload("1.0.0")
        r = H.curl("POST", d.u("/v1/devices/phone-n/update-check"),
                   {"inventory": [{"app": "mail", "version": "1.0.0"}]}, token=token)
        self.assertEqual(r.status, 200, r)
        upload("1.1.0")
        n = c.recv_type("msg", timeout=10.0)
        self.assertEqual((n["app"], n["data"]["kind"], n["data"]["version"]),
                         ("mail", "release", "1.1.0"))
        c.ack([n["id"]])
        c.recv_type("acked")
        later = d.publish("mail", {"m": 1})
        m = c.recv_type("msg", timeout=5.0)
        self.assertEqual((str(m["id"]), m["app"]), (later, "mail"))

    def test_window_limits_unacked_messages(self):
        d, port = self.start(max_inflight=4)
        c, token, w = self.connect(d, port, "phone-1")
        self.assertEqual(w["window"], 4)
        ids = [int(d.publish("news", {"n": i})) for i in range(10)]
        first = [c.recv_type("msg")["id"] for _ in range(4)]
        self.assertEqual(first, ids[:4])
        c.send({"t": "ping", "n": 1})  # nothing but the pong may come while the window is full
        self.assertEqual(c.recv_type("pong")["n"], 1)
        c.ack(first[:2])
        nxt = [c.recv_type("msg")["id"] for _ in range(2)]
        self.assertEqual(nxt, ids[4:6])
        c.ack(first[2:] + nxt)
        rest = [c.recv_type("msg")["id"] for _ in range(4)]
        self.assertEqual(rest, ids[6:])

    def test_refusals_and_their_reasons(self):
        d, port = self.start(auth_fail_delay=0)
        token = d.provision("news", "phone-1")
        cases = [
            ({"t": "hello", "v": 1, "device": "phone-1", "tenant": "default",
              "token": token[:-2] + "xx"}, "auth"),
            ({"t": "hello", "v": 1, "device": "nobody", "tenant": "default", "token": token},
             "auth"),
            # the token is good, the tenant named is not its tenant: the same answer
            ({"t": "hello", "v": 1, "device": "phone-1", "tenant": "other", "token": token},
             "auth"),
            ({"t": "ack", "ids": [1]}, "proto"),
            ({"t": "hello", "v": 2, "device": "phone-1", "tenant": "default", "token": token},
             "version"),
            ({"t": "hello", "device": "phone-1", "token": token}, "proto"),
        ]
        for frame, code in cases:
            c = RawClient(port)
            c.send(frame)
            f = c.recv()
            self.assertEqual((f["t"], f["code"]), ("deny", code), (frame, f))
            self.assertIsInstance(f["text"], str)
            self.assertTrue(c.closed_by_peer(), frame)
            c.close()
        c = RawClient(port)
        c.send_raw(b"\xc1\xc1\xc1")  # not msgpack
        self.assertEqual(c.recv()["code"], "proto")
        c.close()
        c = RawClient(port)
        c.send_raw(b"\x80", length=100000)  # a hello cannot be that big
        self.assertEqual(c.recv()["code"], "too_big")
        c.close()
        self.assertEqual(d.metric("herald_ipconn_auth_failures_total"), 3)
        self.assertEqual(d.metric("herald_ipconn_authenticated"), 0)
        # and the right token still works
        self.connect(d, port, "phone-1", token)

    def test_hello_timeout_and_connection_limit(self):
        d, port = self.start(hello_timeout=1, max_connections=2)
        c = RawClient(port)
        f = c.recv(timeout=10)
        self.assertEqual((f["t"], f["code"]), ("deny", "timeout"))
        self.assertTrue(c.closed_by_peer())
        a, _, _ = self.connect(d, port, "d1")
        b, _, _ = self.connect(d, port, "d2")
        x = RawClient(port)
        f = x.recv()
        self.assertEqual((f["t"], f["code"]), ("deny", "busy"))
        self.assertGreaterEqual(f["retry"], 0)

    def test_repeated_failures_are_throttled(self):
        delay = 6 if SANITIZED else 3  # long enough for the asserts made inside the window
        d, port = self.start(auth_fail_delay=delay)
        token = d.provision("news", "phone-1")
        bad = token[:-2] + "xx"
        codes = []
        for _ in range(3):
            c = RawClient(port)
            codes.append(c.hello("phone-1", bad))
            c.close()
        self.assertEqual([f["code"] for f in codes], ["auth", "auth", "throttled"])
        self.assertIn(codes[2]["retry"], range(1, delay + 1))
        # throttled means not even checked: the right token waits too ...
        c = RawClient(port)
        self.assertEqual(c.hello("phone-1", token)["code"], "throttled")
        c.close()
        self.assertEqual(d.metric("herald_ipconn_throttled_total"), 2)
        # ... until the delay has passed
        time.sleep(delay + 0.3)
        c = RawClient(port)
        self.assertEqual(c.hello("phone-1", token)["t"], "welcome")
        c.close()

    def test_heartbeat_probe_idle_close_and_replacement(self):
        d, port = self.start(heartbeat=1, idle_timeout=3)
        c, token, _ = self.connect(d, port, "phone-1")
        # Quiet client: the broker probes it; a pong keeps it alive past idle_timeout.
        end = deadline(5)
        pings = 0
        while time.monotonic() < end:
            f = c.recv(timeout=5)
            self.assertIsNotNone(f)
            if f["t"] == "ping":
                pings += 1
                c.send({"t": "pong", "n": f.get("n", 0)})
        self.assertGreaterEqual(pings, 2)
        # Now silent: closed with goaway "idle".
        f = c.recv(timeout=10)
        while f and f["t"] == "ping":
            f = c.recv(timeout=10)
        self.assertEqual((f["t"], f["code"]), ("goaway", "idle"))
        self.assertTrue(c.closed_by_peer())
        self.assertEqual(d.metric("herald_ipconn_idle_closed_total"), 1)
        # The same device twice: the newer connection wins.
        a, _, _ = self.connect(d, port, "phone-1", token)
        b, _, _ = self.connect(d, port, "phone-1", token)
        f = a.recv_type("goaway")
        self.assertEqual(f["code"], "replaced")
        self.assertTrue(a.closed_by_peer())
        b.send({"t": "ping", "n": 9})
        self.assertEqual(b.recv_type("pong")["n"], 9)
        self.assertEqual(d.metric("herald_ipconn_replaced_total"), 1)

    def test_shutdown_sends_goaway_with_hint(self):
        d, port = self.start(goaway_retry=7, redirect="127.0.0.1:9999")
        c, _, _ = self.connect(d, port, "phone-1")
        d.stop()
        f = c.recv_type("goaway")
        self.assertEqual((f["code"], f["retry"], f["alt"]), ("shutdown", 7, "127.0.0.1:9999"))
        self.assertTrue(c.closed_by_peer())
        self.assertTrue(any("event=ipconn_stopped" in l and "goaway_sent=1" in l
                            for l in d.log()))

    def test_bad_config_is_refused_at_start(self):
        d = self.start_daemon(ipconn_conf(heartbeat=10, idle_timeout=5), start=False)
        with self.assertRaises(AssertionError):
            d.start()
        self.assertTrue(any("key=idle_timeout" in l for l in d.log()), d.log_tail())
        self.expect_log_error(r"event=bad_config|event=start_failed|create failed")


if __name__ == "__main__":
    main()
