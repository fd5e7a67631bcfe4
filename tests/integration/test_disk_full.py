#!/usr/bin/python3
"""The filesystem under the data dir fills up (not the LMDB map: map_size is larger than the
disk). Publishers get 507 store_full, nothing acknowledged is lost, reads go on, and publishing
works again once space returns.

The data dir lives on a 4 MiB tmpfs mounted for the test (needs root and mount(2); skipped
with the reason otherwise). A filler file taken out of that space beforehand is deleted to
give the space back."""
import json
import os
import subprocess
import tempfile
import unittest

import herald_harness as H

TMPFS_SIZE = "4m"


class DiskFull(H.HeraldTestCase):
    def setUp(self):
        super().setUp()
        self.mnt = tempfile.mkdtemp(prefix="herald-tmpfs-")
        self.addCleanup(os.rmdir, self.mnt)
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + TMPFS_SIZE, "tmpfs",
                            self.mnt], capture_output=True, text=True)
        if p.returncode != 0:
            why = (p.stderr or p.stdout).strip() or "exit %d" % p.returncode
            print("test_disk_full: skipped: cannot mount a tmpfs: %s" % why)
            self.skipTest("cannot mount a tmpfs: %s" % why)
        # Cleanups run last-in first-out: the daemon (registered later) stops before this.
        self.addCleanup(subprocess.run, ["umount", "-l", self.mnt], check=False)

    def test_enospc_refuses_publishes_keeps_data_and_recovers(self):
        data_dir = os.path.join(self.mnt, "data")
        filler = os.path.join(self.mnt, "filler")
        with open(filler, "wb") as f:
            f.write(b"\0" * (1024 * 1024))  # real pages on tmpfs: not sparse
        d = self.start_daemon({"": {"data_dir": data_dir},
                               "http": {"max_body": "256KiB"},
                               "store": {"map_size": "64MiB"}})
        d.data_dir = data_dir  # where its publish key is
        # A store that refuses writes is worth an operator's attention: logged at error.
        self.expect_log_error(r"publish_not_stored .*error=store_full")
        tok = d.provision("disk", "dev1")
        stored, refusal = [], None
        big = "x" * 100_000
        for i in range(80):  # 8 MB at most, twice the filesystem
            r = d.publish("disk", {"i": i, "pad": big}, to="dev1", expect=None)
            if not isinstance(r, H.Response):  # an id: accepted
                stored.append(r)
                continue
            refusal = r
            break
        self.assertIsNotNone(refusal, "a 4 MiB filesystem must fill up with 8 MB of messages")
        self.assertEqual(refusal.status, 507, refusal)
        self.assertEqual(refusal.json()["error"], "store_full", refusal)
        self.assertGreater(len(stored), 3)
        # still full: refused again, the same way
        r = d.publish("disk", {"pad": big}, to="dev1", expect=None)
        self.assertIsInstance(r, H.Response)
        self.assertEqual(r.status, 507, r)

        # the daemon keeps serving reads, and every acknowledged publish is there, intact
        self.assertEqual(d.healthz().status, 200)
        got, cursor = [], None
        while True:
            j = d.poll("dev1", tok, cursor=cursor, wait=0)
            if not j["messages"]:
                break
            got += j["messages"]
            cursor = j["cursor"]
        self.assertEqual([m["id"] for m in got], stored)
        for n, m in enumerate(got):
            self.assertEqual(m["data"], {"i": n, "pad": big})

        # space comes back: publishing works again
        os.unlink(filler)
        last = d.publish("disk", {"after": True}, to="dev1")
        j = d.poll("dev1", tok, cursor=cursor, wait=0)
        self.assertEqual([m["id"] for m in j["messages"]], [last])
        self.assertGreater(d.metric('herald_publishes_total{ingress="http",result="error"}'), 0)


if __name__ == "__main__":
    unittest.main()
