#!/usr/bin/env python3
"""herald-agent against the real heraldd, both real processes:

- a published notice runs the app's handler with the message as JSON on stdin, and is acked
  (nothing stays pending at the broker); a notice for an app without a handler is kept in the
  agent's message center and acked; a handler that fails is run again later;
- release notices go to the ask hook, not the handler; the answer is recorded; without a hook
  the answer is yes;
- the agent killed (with its handler) mid-delivery: after a restart the notice is handled
  exactly once;
- the agent's connection cut mid-delivery (a TCP relay between it and the broker): the broker
  sends the notice again after the reconnect, the agent acks it without handling it twice;
- a wrong token: the broker refuses it with reason "auth", the agent exits with status 3;
- the broker stopped (goaway) or killed before the agent acked, then restarted: the agent
  reconnects, acks what it had handled, and gets what was published meanwhile.
"""
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from herald_harness import HeraldTestCase, main, wait_for  # noqa: E402
from ipconn_harness import (ASK, HANDLER, Agent, Proxy, free_port, handled_lines,  # noqa: E402
                            ipconn_conf, ipconn_port, write_script)


class AgentCase(HeraldTestCase):
    def setUp(self):
        super().setUp()
        self.work = tempfile.mkdtemp(prefix="herald-agent-it-")
        self.handler = write_script(os.path.join(self.work, "handler.sh"), HANDLER)
        self.agents = []

    def tearDown(self):
        for a in self.agents:
            a.cleanup()
        bad = [l for a in self.agents for l in a.sanitizer_reports()]
        super().tearDown()
        self.assertEqual(bad, [], "sanitizer reports in herald-agent's log")

    def broker(self, port=0, **kw):
        kw.setdefault("goaway_retry", 1)
        conf = ipconn_conf(**kw)
        conf["transport ipconn"]["listen"] = "127.0.0.1:%d" % port
        d = self.start_daemon(conf)
        return d, ipconn_port(d)

    def agent(self, d, port, device, app="demo", env="", token=None, **kw):
        token = token or d.provision(app, device)
        out = os.path.join(self.work, device + ".out")
        handlers = kw.pop("handlers", {app: "%s %s %s" % (env, self.handler, out)})
        a = Agent(self.work, device, port, device, token, handlers=handlers, **kw)
        a.out = out
        a.token = token
        self.agents.append(a)
        return a.start()

    def pending(self, d, device, token):
        return d.poll(device, token, wait=0)["messages"]

    def test_notice_runs_handler_and_is_acked(self):
        d, port = self.broker()
        a = self.agent(d, port, "phone-1")
        a.wait_log(r"event=connected")
        d.provision("other", "phone-1")  # a second app, with no handler on the device
        mid = d.publish("demo", {"title": "hello", "n": [1, 2]})
        lines = wait_for(lambda: handled_lines(a.out), 20, what="the handler to run")
        self.assertEqual(len(lines), 1)
        hid, attempt, doc = lines[0]
        self.assertEqual((hid, attempt), (mid, 1))
        self.assertEqual(doc["id"], mid)
        self.assertEqual(doc["app"], "demo")
        self.assertEqual(doc["data"], {"title": "hello", "n": [1, 2]})
        self.assertGreater(doc["expires"], doc["created"])
        self.assertNotIn("to", doc)
        direct = d.publish("demo", {"just": "you"}, to="phone-1")
        wait_for(lambda: len(handled_lines(a.out)) == 2, 20, what="the direct message")
        self.assertEqual(handled_lines(a.out)[1][2]["to"], "phone-1")
        self.assertEqual(handled_lines(a.out)[1][0], direct)
        other = d.publish("other", {"x": 1})
        a.wait_log(r"event=received id=%s app=other kind=notice handler=none" % other)
        # Everything acked: nothing pending at the broker; the unrouted one kept on the device.
        wait_for(lambda: not self.pending(d, "phone-1", a.token), 20,
                 what="the broker to have no pending message")
        dump = wait_for(lambda: [x for x in a.dump()
                                 if x["db"] != "inbox" or x["confirmed"]] or None, 20,
                        what="the unrouted notice to be confirmed")
        inbox = [x for x in a.dump() if x["db"] == "inbox"]
        self.assertEqual([(x["id"], x["state"]) for x in inbox], [(other, "unrouted")])
        self.assertEqual(inbox[0]["message"]["data"], {"x": 1})
        self.assertEqual([x for x in dump if x["db"] == "handled"], [])  # confirmed, forgotten
        self.assertEqual(a.stop(), 0)

    def test_failed_handler_is_retried(self):
        d, port = self.broker()
        a = self.agent(d, port, "phone-1", env="FAIL_ONCE=1")
        a.wait_log(r"event=connected")
        mid = d.publish("demo", {"try": "again"})
        a.wait_log(r"event=handler_failed id=%s .*attempt=1 reason=exit_1" % mid)
        lines = wait_for(lambda: handled_lines(a.out), 30, what="the retry")
        self.assertEqual([(l[0], l[1]) for l in lines], [(mid, 2)])
        wait_for(lambda: not self.pending(d, "phone-1", a.token), 20, what="the ack")

    def test_release_notices_ask_the_user(self):
        d, port = self.broker()
        answer = os.path.join(self.work, "answer")
        ask = write_script(os.path.join(self.work, "ask.sh"), ASK)
        with open(answer, "w") as f:
            f.write("no")
        a = self.agent(d, port, "phone-1", ask="%s %s" % (ask, answer))
        b = self.agent(d, port, "phone-2")  # no hook: yes
        a.wait_log(r"event=connected")
        b.wait_log(r"event=connected")
        r1 = d.publish("demo", {"kind": "release", "version": "2.0"})
        a.wait_log(r"event=release_declined id=%s" % r1)
        b.wait_log(r"event=release_accepted id=%s app=demo by=default" % r1)
        with open(answer, "w") as f:
            f.write("yes")
        r2 = d.publish("demo", {"kind": "release", "version": "2.1"})
        a.wait_log(r"event=release_accepted id=%s" % r2)
        rel = {x["id"]: x for x in a.dump() if x["db"] == "releases"}
        self.assertEqual((rel[r1]["state"], rel[r2]["state"]), ("declined", "accepted"))
        self.assertEqual(rel[r2]["message"]["data"], {"kind": "release", "version": "2.1"})
        with open(answer + ".log") as f:
            self.assertIn('"version":"2.0"', f.read())  # the hook saw the notice
        self.assertEqual(handled_lines(a.out), [])  # releases do not go to the app handler
        for ag in (a, b):
            wait_for(lambda: not self.pending(d, ag.device, ag.token), 20, what="acks")

    def test_agent_killed_mid_delivery_handles_once(self):
        d, port = self.broker()
        a = self.agent(d, port, "phone-1", env="SLEEP=3")
        a.wait_log(r"event=connected")
        mid = d.publish("demo", {"slow": True})
        wait_for(lambda: os.path.exists(a.out + ".started"), 20, what="the handler to start")
        a.kill9()  # the agent and its handler, before anything was acked
        self.assertEqual(handled_lines(a.out), [])
        self.assertEqual([m["id"] for m in self.pending(d, "phone-1", a.token)], [mid])
        a.start()
        a.wait_log(r"event=agent_started .*pending=1")
        wait_for(lambda: handled_lines(a.out), 30, what="the notice to be handled")
        wait_for(lambda: not self.pending(d, "phone-1", a.token), 20, what="the ack")
        time.sleep(0.5)
        self.assertEqual([l[0] for l in handled_lines(a.out)], [mid])  # exactly once
        with open(a.out + ".started") as f:
            self.assertEqual(f.read().split(), [mid, mid])  # started twice, finished once

    def test_connection_cut_mid_delivery_redelivered_handled_once(self):
        d, port = self.broker()
        relay = Proxy(port)
        self.addCleanup(relay.close)
        a = self.agent(d, relay.port, "phone-1", env="SLEEP=2")
        a.wait_log(r"event=connected")
        mid = d.publish("demo", {"cut": True})
        wait_for(lambda: os.path.exists(a.out + ".started"), 20, what="the handler to start")
        self.assertEqual(relay.cut(), 1)  # while the handler runs: its ack cannot go out
        a.wait_log(r"event=disconnected")
        wait_for(lambda: handled_lines(a.out), 20, what="the handler to finish")
        a.wait_log(r"event=connected", count=2)
        a.wait_log(r"event=duplicate id=%s" % mid)  # the broker sent it again ...
        wait_for(lambda: not self.pending(d, "phone-1", a.token), 20, what="the ack")
        self.assertEqual([l[0] for l in handled_lines(a.out)], [mid])  # ... handled once
        self.assertGreaterEqual(d.metric("herald_ipconn_messages_sent_total"), 2)

    def test_wrong_token_is_refused_with_reason(self):
        d, port = self.broker()
        token = d.provision("demo", "phone-1")
        a = self.agent(d, port, "phone-1", token=token[:-3] + "abc")
        self.assertEqual(a.wait_exit(), 3)
        log = a.log()
        self.assertRegex(log, r"level=error event=denied code=auth text=\"unknown device")
        self.assertEqual(d.metric("herald_ipconn_auth_failures_total"), 1)

    def test_broker_restart_agent_reconnects_and_gets_what_was_published(self):
        port = free_port()
        d, _ = self.broker(port=port)
        a = self.agent(d, port, "phone-1", env="SLEEP=2")
        a.wait_log(r"event=connected")
        m1 = d.publish("demo", {"n": 1})
        wait_for(lambda: os.path.exists(a.out + ".started"), 20, what="the handler to start")
        d.stop()  # graceful: goaway with a retry hint, before the agent could ack m1
        a.wait_log(r"event=goaway code=shutdown retry=1")
        wait_for(lambda: handled_lines(a.out), 20, what="the handler to finish")
        d.start()
        self.assertEqual(ipconn_port(d, d._run_first_line), port)
        m2 = d.publish("demo", {"n": 2})  # before the agent is back
        wait_for(lambda: len(handled_lines(a.out)) == 2, 30, what="m2 after the restart")
        wait_for(lambda: not self.pending(d, "phone-1", a.token), 20, what="the acks")
        self.assertEqual([l[0] for l in handled_lines(a.out)], [m1, m2])
        # And killed outright before the ack: the message survives in the store.
        m3 = d.publish("demo", {"n": 3})
        wait_for(lambda: len(open(a.out + ".started").read().split()) == 3, 20,
                 what="the handler of m3 to start")
        d.kill9()
        d.start()
        wait_for(lambda: len(handled_lines(a.out)) == 3, 30, what="m3")
        wait_for(lambda: not self.pending(d, "phone-1", a.token), 30, what="the ack of m3")
        self.assertEqual([l[0] for l in handled_lines(a.out)], [m1, m2, m3])
        self.assertEqual(a.stop(), 0)


if __name__ == "__main__":
    main()
