#!/usr/bin/env python3
"""One broadcast reaches 1,020 devices connected at once: 1,000 connections of herald-bench's
ipconn scenario (the C client library the agent uses; 1,000 agent processes would be more
than two cores can start) and 20 real herald-agent processes, all registered for one app.

Every bench device gets the broadcast exactly once and acks it (the broker confirms every ack);
every agent runs its handler for it exactly once and acks it; nothing stays pending.
"""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from herald_harness import SLOW, HeraldTestCase, main, wait_for  # noqa: E402
from ipconn_harness import (HANDLER, HERALD_BENCH, Agent, handled_lines,  # noqa: E402
                            ipconn_conf, ipconn_port, write_script)

AGENTS = 20
BENCH_DEVICES = 1000


class Fanout(HeraldTestCase):
    def test_one_broadcast_to_1020_connected_devices(self):
        d = self.start_daemon(ipconn_conf())
        port = ipconn_port(d)
        work = tempfile.mkdtemp(prefix="herald-fanout-")
        handler = write_script(os.path.join(work, "handler.sh"), HANDLER)
        agents = []
        self.addCleanup(lambda: [a.cleanup() for a in agents])
        for i in range(AGENTS):
            dev = "agent-%02d" % i
            out = os.path.join(work, dev + ".out")
            a = Agent(work, dev, port, dev, d.provision("fan", dev),
                      handlers={"fan": "%s %s" % (handler, out)})
            a.out = out
            agents.append(a.start())
        wait_for(lambda: d.metric("herald_ipconn_authenticated") == AGENTS, 60,
                 what="%d agents to connect" % AGENTS)
        # The bench connects its 1,000 devices, then publishes one broadcast to the app.
        p = subprocess.run(
            [HERALD_BENCH, "ipconn", "--http", "127.0.0.1:%d" % d.http_port,
             "--zmq", d.zmq_ingress, "--ipconn", "127.0.0.1:%d" % port, "--key", d.key,
             "--app", "fan", "--devices", str(BENCH_DEVICES), "--messages", "1",
             "--rate", "0", "--threads", "2", "--pid", str(d.proc.pid), "--json"],
            capture_output=True, text=True, timeout=240 * SLOW)
        self.assertEqual(p.returncode, 0, p.stderr)
        r = json.loads(p.stdout)
        self.assertEqual(r["connected"], BENCH_DEVICES, r)
        self.assertEqual((r["deliveries"], r["lost"], r["duplicates"]), (BENCH_DEVICES, 0, 0), r)
        self.assertEqual(r["acks_confirmed"], BENCH_DEVICES, r)
        self.assertEqual((r["dropped"], r["denied"]), (0, 0), r)
        # Every agent handled the same broadcast exactly once.
        wait_for(lambda: all(handled_lines(a.out) for a in agents), 60,
                 what="every agent's handler")
        ids = set()
        for a in agents:
            lines = handled_lines(a.out)
            self.assertEqual(len(lines), 1, a.out)
            self.assertEqual(lines[0][2]["data"]["s"], 0)
            ids.add(lines[0][0])
        self.assertEqual(len(ids), 1)
        for a in agents:
            tok = a.args[a.args.index("--token") + 1]
            wait_for(lambda: not d.poll(a.device, tok, wait=0)["messages"], 30,
                     what="%s's ack" % a.device)
        m = d.metrics()
        self.assertEqual(m["herald_ipconn_acks_total"], BENCH_DEVICES + AGENTS)
        for a in agents:
            self.assertEqual(a.stop(), 0)
            self.assertEqual(a.sanitizer_reports(), [], a.logpath)


if __name__ == "__main__":
    main()
