#!/usr/bin/python3
"""Fan-out: one publish to an app with 1,000 registered devices reaches every device."""
import json
import os
import threading

import herald_harness as H

N = 1000


class Fanout(H.HeraldTestCase):
    def test_publish_reaches_1000_devices(self):
        d = self.start_daemon()
        work = os.path.join(d.tmp, "curl")
        app = "fan"
        devices = ["dev-%04d" % i for i in range(N)]
        # provision all of them concurrently, with the publish key, in one curl --parallel
        res = H.curl_parallel([{"method": "POST", "url": d.u("/v1/apps/%s/registrations" % app),
                                "token": d.key, "body": {"device": dev}} for dev in devices],
                              os.path.join(work, "reg"))
        tokens = {}
        for dev, (status, body) in zip(devices, res):
            self.assertEqual(status, 201, (dev, body))
            j = json.loads(body)
            self.assertEqual(j["device"], dev)
            tokens[dev] = j["token"]
        self.assertEqual(len(set(tokens.values())), N)
        regs = d.metric("herald_registrations_total")
        self.assertEqual(regs, N)

        deliveries0 = d.metric("herald_deliveries_total")
        mid = d.publish(app, {"to": "everyone", "n": N})
        direct = d.publish(app, "only 500", to="dev-0500")

        # poll every device, concurrently again
        res = H.curl_parallel([{"method": "GET", "url": d.u("/v1/devices/%s/messages" % dev),
                                "token": tokens[dev]} for dev in devices],
                              os.path.join(work, "poll"))
        for dev, (status, body) in zip(devices, res):
            self.assertEqual(status, 200, (dev, body))
            msgs = json.loads(body)["messages"]
            want = [mid, direct] if dev == "dev-0500" else [mid]
            self.assertEqual([m["id"] for m in msgs], want, dev)
            self.assertEqual(msgs[0]["data"], {"to": "everyone", "n": N})
        self.assertGreaterEqual(d.metric("herald_deliveries_total"), deliveries0 + N + 1)

        # every device acks; then nobody has anything pending
        res = H.curl_parallel([{"method": "POST", "url": d.u("/v1/devices/%s/acks" % dev),
                                "token": tokens[dev], "body": {"ids": [mid]}}
                               for dev in devices], os.path.join(work, "ack"))
        self.assertEqual({s for s, _ in res}, {200})
        res = H.curl_parallel([{"method": "GET", "url": d.u("/v1/devices/%s/messages" % dev),
                                "token": tokens[dev]} for dev in devices[:50]],
                              os.path.join(work, "poll2"))
        for dev, (status, body) in zip(devices[:50], res):
            self.assertEqual(status, 200)
            want = [direct] if dev == "dev-0500" else []
            self.assertEqual([m["id"] for m in json.loads(body)["messages"]], want)

    def test_held_polls_of_many_devices_all_wake(self):
        # 200 devices hold a long-poll at once; one publish answers all of them
        d = self.start_daemon()
        app = "wake"
        n = 200
        devices = ["w%03d" % i for i in range(n)]
        res = H.curl_parallel([{"method": "POST", "url": d.u("/v1/apps/%s/registrations" % app),
                                "token": d.key, "body": {"device": dev}} for dev in devices],
                              os.path.join(d.tmp, "reg"))
        tokens = {dev: json.loads(b)["token"] for dev, (s, b) in zip(devices, res)}
        out = {}

        def run():
            out["res"] = H.curl_parallel(
                [{"method": "GET", "url": d.u("/v1/devices/%s/messages?wait=30" % dev),
                  "token": tokens[dev]} for dev in devices], os.path.join(d.tmp, "poll"),
                parallel_max=n)

        t = threading.Thread(target=run)
        t.start()
        try:
            H.wait_for(lambda: d.metric("herald_held_polls") == n, 30,
                       what="%d held polls" % n)
            mid = d.publish(app, "wake up")
        finally:
            t.join(120 * H.SLOW)
        self.assertFalse(t.is_alive())
        for dev, (status, body) in zip(devices, out["res"]):
            self.assertEqual(status, 200, dev)
            self.assertEqual([m["id"] for m in json.loads(body)["messages"]], [mid], dev)
        self.assertEqual(d.metric("herald_held_polls"), 0)


if __name__ == "__main__":
    H.main()
