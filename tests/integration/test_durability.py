#!/usr/bin/python3
"""Durability: kill -9 and SIGTERM, restart on the same data dir."""
import time

import zmq

import herald_harness as H


def poll_all(d, dev, tok):
    """Every pending message of the device, paging with the cursor."""
    out = []
    cursor = None
    while True:
        j = d.poll(dev, tok, cursor=cursor, max=100)
        if not j["messages"]:
            return out
        out += j["messages"]
        cursor = j["cursor"]


def dealer_publish(d, app, n, window, data=lambda i: {"n": i}, stop_after=None, on_reply=None):
    """Publish n messages over one DEALER with up to `window` in flight. Returns
    {i: id} for the acknowledged ones (and stops reading after stop_after replies)."""
    s = H.zsocket(zmq.DEALER, d.zmq_ingress)
    acked = {}
    errors = []
    try:
        sent = got = 0
        while got < n:
            while sent < n and sent - got < window:
                s.send_multipart([b"%d" % sent, b"",
                                  H.pack({"key": d.key, "app": app, "data": data(sent)})])
                sent += 1
            frames = s.recv_multipart()
            i = int(frames[0])
            rep = H.unpack(frames[-1])
            if "id" in rep:
                acked[i] = rep["id"]
            else:
                errors.append(rep)
            got += 1
            if on_reply:
                on_reply(got)
            if stop_after is not None and got >= stop_after:
                break
    finally:
        s.close()
    return acked, errors


class Durability(H.HeraldTestCase):
    def test_kill9_keeps_acknowledged_unacked_messages(self):
        d = self.start_daemon()
        key = d.key
        tok = d.provision("dur", "phone")
        other = d.provision("dur", "tablet")
        acked_pub, errors = dealer_publish(d, "dur", 200, window=20)
        self.assertEqual(errors, [])
        self.assertEqual(len(acked_pub), 200)
        http_ids = [d.publish("dur", {"http": i}) for i in range(5)]
        direct = d.publish("dur", "direct", to="phone")
        all_ids = [acked_pub[i] for i in range(200)] + http_ids + [direct]
        msgs = poll_all(d, "phone", tok)
        self.assertEqual([m["id"] for m in msgs], all_ids)
        # the device acks about a third of them, in three requests, then heraldd dies
        to_ack = [m["id"] for k, m in enumerate(msgs) if k % 3 == 0]
        for k in range(0, len(to_ack), 30):
            d.ack("phone", tok, to_ack[k:k + 30])
        d.kill9()
        self.assertEqual(d.exit_codes[-1], -9)

        d.restart()
        self.assertEqual(d.key, key)  # the generated key is kept
        survivors = poll_all(d, "phone", tok)  # the device token is still valid
        expect = [i for i in all_ids if i not in set(to_ack)]
        self.assertEqual([m["id"] for m in survivors], expect)
        by_id = {m["id"]: m for m in msgs}
        for m in survivors:
            self.assertEqual(m["data"], by_id[m["id"]]["data"])
        # the other device acked nothing: it still has every broadcast
        self.assertEqual(len(poll_all(d, "tablet", other)), 205)
        # ids are never reused after a restart
        new = d.publish("dur", "after restart")
        self.assertGreater(int(new), max(int(i) for i in all_ids))
        # and acks still work on the recovered messages
        d.ack("phone", tok, expect)
        self.assertEqual([m["id"] for m in poll_all(d, "phone", tok)], [new])

    def test_kill9_with_publishes_in_flight(self):
        d = self.start_daemon()
        tok = d.provision("inflight", "dev")
        # kill -9 while a DEALER keeps 50 publishes in flight: every publish that was
        # acknowledged must be there after the restart
        acked, errors = dealer_publish(d, "inflight", 2000, window=50, stop_after=300,
                                       on_reply=lambda got: got == 300 and d.kill9())
        self.assertEqual(errors, [])
        self.assertGreaterEqual(len(acked), 300)
        d.restart()
        got = poll_all(d, "dev", tok)
        ids = [m["id"] for m in got]
        self.assertEqual(len(ids), len(set(ids)), "duplicates after recovery")
        self.assertEqual(ids, sorted(ids, key=int))
        have = set(ids)
        missing = [i for i, mid in acked.items() if mid not in have]
        self.assertEqual(missing, [], "acknowledged publishes lost by kill -9")
        for m in got:
            self.assertEqual(set(m["data"]), {"n"})

    def test_sigterm_answers_held_poll_and_keeps_zmq_publish(self):
        d = self.start_daemon()
        tok = d.provision("term", "poller")
        tok2 = d.provision("term", "sleeper")
        cur = d.poll("poller", tok)["cursor"]
        p = H.CurlProcess("GET", d.u("/v1/devices/poller/messages?wait=30&cursor=%s" % cur),
                          token=tok, timeout=60)
        try:
            H.wait_for(lambda: d.metric("herald_held_polls") == 1, 15, what="the held poll")
            # acknowledged over ZeroMQ right before the signal (for the other device, so the
            # held poll is not answered by it)
            rep = H.zmq_req(d.zmq_ingress, {"key": d.key, "app": "term", "to": "sleeper",
                                             "data": {"kept": True}})
            self.assertIn("id", rep)
            self.assertFalse(p.done())
            d.stop()  # SIGTERM, asserts exit code 0
            r = p.result(30)
            self.assertLess(p.elapsed(), 25)  # answered by the stop, not by its 30 s wait
        finally:
            p.kill()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["messages"], [])
        d.wait_log(r"event=stopped")
        d.restart()
        msgs = d.poll("sleeper", tok2)["messages"]
        self.assertEqual([(m["id"], m["data"]) for m in msgs], [(rep["id"], {"kept": True})])

    def test_sigterm_with_zmq_publishes_in_flight(self):
        d = self.start_daemon()
        tok = d.provision("drain", "dev")
        s = H.zsocket(zmq.DEALER, d.zmq_ingress, timeout=0.5)
        acked, refused = [], []
        try:
            for i in range(500):
                s.send_multipart([b"", H.pack({"key": d.key, "app": "drain", "data": i})])
            rep = H.unpack(s.recv_multipart()[-1])
            self.assertIn("id", rep)
            acked.append(rep["id"])
            d.proc.send_signal(15)
            # replies to requests already taken still come; the rest get none
            end = H.deadline(30)
            while time.monotonic() < end:
                try:
                    rep = H.unpack(s.recv_multipart()[-1])
                except zmq.Again:
                    if d.proc.poll() is not None:
                        break  # heraldd is gone: no more replies can come
                    continue
                (acked if "id" in rep else refused).append(rep.get("id") or rep["error"])
        finally:
            s.close()
        d.stop()  # already signalled: asserts exit code 0
        for e in refused:
            self.assertEqual(e, "shutting_down")
        d.restart()
        have = {m["id"] for m in poll_all(d, "dev", tok)}
        self.assertEqual([i for i in acked if i not in have], [])

    def test_clean_restart_keeps_cursor_and_config_key(self):
        key = "configured-key-0123456789-abcdefghijklmnop"
        d = self.start_daemon({"tenant default": {"publish_key": key, "apps": "*"}})
        tok = d.provision("c", "dev")
        ids = [d.publish("c", i) for i in range(3)]
        j = d.poll("dev", tok)
        self.assertEqual(j["cursor"], ids[-1])
        d.stop()
        d.restart()
        self.assertEqual(d.poll("dev", tok, cursor=j["cursor"])["messages"], [])
        self.assertEqual([m["id"] for m in d.poll("dev", tok)["messages"]], ids)
        new = d.publish("c", "new", key=key)
        self.assertEqual([m["id"] for m in d.poll("dev", tok, cursor=j["cursor"])["messages"]],
                         [new])


if __name__ == "__main__":
    H.main()
