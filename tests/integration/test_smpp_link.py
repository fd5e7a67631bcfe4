#!/usr/bin/env python3
"""The SMPP link of smpp.so (transports/smpp/smpp_session.c, smpp_pool.c) against a real SMSC
(tests/smsc/smsc.js, npm smpp) that misbehaves on request, checked in the SMSC's own log of
every submit_sm and on the wire with tshark:

- a throttling SMSC (ESME_RTHROTTLED on every 3rd submit_sm) delays messages but loses none,
  and none is accepted twice;
- an SMSC that drops the link while submits are outstanding: what it had accepted is not sent
  again, what it had not answered is sent again after the reconnect, and every message is
  accepted exactly once;
- two SMSCs: parts go round-robin over both, a transport's `smsc` key keeps it on the links it
  names, and when one SMSC goes away the other takes everything;
- the session protocol: transmitter + receiver binds, enquire_link from both sides, a
  generic_nack for an unknown command, receipts over the receiver, unbind on shutdown.
"""
import collections

import herald_harness as H
import smpp_harness as S


def msisdn(i):
    return "4915100000%03d" % i


class Link(S.SmppTestCase):
    def broadcast_to(self, d, n):
        """n devices with MSISDNs; one broadcast reaches them all in one push step."""
        for i in range(n):
            self.register(d, "h%d" % i, msisdn(i))
        return d.publish("fw", {"text": "Release 2.1.4 is out"})

    def test_throttling_smsc_delays_but_loses_nothing(self):
        smsc, cap = self.start_smsc("--throttle-every", "3")
        # A rate limit too, so its code path runs (its timing is not asserted).
        d = self.herald(smsc, smsc_kw={"throttle_backoff": "100ms", "rate": "200"})
        self.wait_bound(d)
        n = 9
        self.broadcast_to(d, n)
        H.wait_for(lambda: (d.metrics().get("herald_sms_messages_total") or 0) >= n, 60,
                   what="%d messages accepted" % n)
        cap.stop()
        accepted = collections.Counter(a["dst"] for a in smsc.accepted())
        self.assertEqual(accepted, {msisdn(i): 1 for i in range(n)}, "each exactly once")
        throttled = [r for r in smsc.all("submit_sm_resp") if r["status"] == 0x58]
        self.assertGreaterEqual(len(throttled), n // 3)
        m = d.metrics()
        self.assertEqual(m["herald_sms_smsc_main_throttled_total"], len(throttled))
        self.assertEqual(m["herald_sms_smsc_main_submits_total"], n)
        self.assertEqual(m["herald_sms_failed_temp_total"], 0, "throttling is not a failure")
        # On the wire: the 0x58 answers, and each throttled number submitted again later.
        frames = S.pdml(cap)
        st = collections.Counter(r[1].first("smpp.command_status")
                                 for r in S.smpp_layers(frames, 0x80000004))
        self.assertEqual(st, {"0x00000000": n, "0x00000058": len(throttled)})
        self.assertEqual(len(S.smpp_layers(frames, 0x00000004)), n + len(throttled))

    def test_link_drop_mid_window_loses_nothing_and_accepts_each_once(self):
        # Answers come 300 ms late, so the window fills; the 5th submit_sm drops the link with
        # it and the ones before it still unanswered.
        smsc, cap = self.start_smsc("--resp-delay", "300", "--drop-after", "5",
                                    "--receipts", "no")
        d = self.herald(smsc, smsc_kw={"window": "10"})
        self.wait_bound(d)
        n = 10
        self.broadcast_to(d, n)
        H.wait_for(lambda: (d.metrics().get("herald_sms_messages_total") or 0) >= n, 90,
                   what="%d messages accepted" % n)
        cap.stop()
        accepted = collections.Counter(a["dst"] for a in smsc.accepted())
        self.assertEqual(accepted, {msisdn(i): 1 for i in range(n)}, "each exactly once")
        first = [e for e in smsc.all("submit_sm") if e["conn"] == 1]
        answered_first = {e["seq"] for e in smsc.all("submit_sm_resp") if e["conn"] == 1}
        unanswered = [e for e in first if e["seq"] not in answered_first]
        self.assertGreaterEqual(len(first), 5)
        self.assertGreaterEqual(len(unanswered), 2, "several submits outstanding at the drop")
        # Every one left unanswered went out again on the new connection and was accepted.
        later = {a["dst"] for a in smsc.accepted() if a["conn"] != 1}
        for e in unanswered:
            self.assertIn(e["dst"], later)
        self.assertEqual(len(smsc.all("drop")), 1)
        self.assertEqual(len([b for b in smsc.all("bind") if b["status"] == 0]), 2,
                         "reconnected and bound again")
        m = d.metrics()
        self.assertEqual(m["herald_sms_smsc_main_lost_total"], len(unanswered))
        self.assertEqual(m["herald_sms_failed_temp_total"], len(unanswered),
                         "each lost submit went back to the broker, which resent it")
        binds = S.smpp_layers(S.pdml(cap), 0x00000009)
        self.assertEqual(len(binds), 2)

    def test_two_smscs_round_robin_failover_and_link_choice(self):
        alpha, _ = self.start_smsc("--receipts", "no", capture=False)
        beta, _ = self.start_smsc("--receipts", "no", "--first-id", "5000", capture=False)
        d = self.start_daemon({
            "plugins": {"load": "longpoll, sms, wappush"},
            "tenant default": {"apps": "fw, other", "push_policy": "sms",
                               "push_policy.other": "wappush"},
            "transport sms": {},
            "transport wappush": {"smsc": "beta"},
            "smsc alpha": self.smsc_section(alpha),
            "smsc beta": self.smsc_section(beta),
        })
        for name in ("alpha", "beta"):
            H.wait_for(lambda: d.metric("herald_sms_smsc_%s_bound" % name) == 1, 20,
                       what="%s bound" % name)
        n = 6
        for i in range(n):
            for app in ("fw", "other"):
                self.register(d, "h%d" % i, msisdn(i), app=app)
        everyone = {msisdn(i): 1 for i in range(n)}

        def accepted(smsc, dcs):
            return collections.Counter(a["dst"] for a in smsc.accepted()
                                       if next(s for s in smsc.all("submit_sm")
                                               if s["conn"] == a["conn"] and
                                               s["seq"] == a["seq"])["dcs"] == dcs)

        # Both bound: sms parts go round-robin over both links.
        d.publish("fw", {"text": "round robin"})
        H.wait_for(lambda: len(alpha.accepted()) + len(beta.accepted()) >= n, 30,
                   what="%d messages over two SMSCs" % n)
        self.assertEqual(accepted(alpha, 0) + accepted(beta, 0), everyone)
        self.assertGreaterEqual(len(alpha.accepted()), 1)
        self.assertGreaterEqual(len(beta.accepted()), 1)
        # wappush may use beta only.
        d.publish("other", {"url": "https://example.org/x", "text": "link choice"})
        H.wait_for(lambda: sum(accepted(beta, 4).values()) >= n, 30, what="WAP pushes on beta")
        self.assertEqual(accepted(beta, 4), everyone)
        self.assertEqual(accepted(alpha, 4), collections.Counter())
        # beta goes away: alpha takes everything.
        before = len(alpha.accepted())
        beta.stop()
        H.wait_for(lambda: d.metric("herald_sms_smsc_beta_bound") == 0, 20, what="beta down")
        d.publish("fw", {"text": "failover"})
        H.wait_for(lambda: len(alpha.accepted()) >= before + n, 30, what="failover to alpha")
        self.assertEqual(collections.Counter(a["dst"] for a in alpha.accepted()[before:]),
                         everyone)

    def test_session_protocol_split_bind_enquire_nack_unbind(self):
        smsc, cap = self.start_smsc()
        d = self.herald(smsc, smsc_kw={"bind": "transmitter+receiver", "enquire_link": "500ms"})
        sub = self.events_socket(d, b"default.receipt")
        H.wait_for(lambda: d.metric("herald_sms_smsc_main_bound") == 2, 20,
                   what="transmitter and receiver bound")
        self.assertEqual(sorted(b["command"] for b in smsc.all("bind")),
                         ["bind_receiver", "bind_transmitter"])
        # Idle sessions probe the SMSC with enquire_link...
        smsc.wait_count("enquire_link", 2, 20)
        # ... and answer the SMSC's own.
        smsc.command({"cmd": "enquire_link"})
        smsc.wait_count("enquire_link_resp", 2, 20)
        self.assertTrue(all(e["status"] == 0 for e in smsc.all("enquire_link_resp")))
        # An unknown command (0x77, seq 0x42) gets a generic_nack with ESME_RINVCMDID.
        smsc.command({"cmd": "raw", "hex": "00000010" "00000077" "00000000" "00000042"})
        smsc.wait_count("generic_nack", 2, 20)
        self.assertEqual({(e["seq"], e["status"]) for e in smsc.all("generic_nack")},
                         {(0x42, 3)})
        # A submit over the transmitter, its receipt over the receiver.
        self.register(d, "h1", "4915112345678")
        mid = d.publish("fw", {"text": "split binds"}, to="h1")
        ev = self.next_event(sub, lambda t, e: e.get("id") == str(mid), 30, "receipt event")
        self.assertEqual(ev["state"], "delivered")
        tx = {b["conn"] for b in smsc.all("bind") if b["command"] == "bind_transmitter"}
        self.assertEqual({s["conn"] for s in smsc.all("submit_sm")}, tx)
        d.stop()
        smsc.wait_count("unbind", 2, 10)
        cap.stop()
        frames = S.pdml(cap)
        self.assertEqual(len(S.smpp_layers(frames, 0x00000006)), 2, "unbind on both sessions")
        self.assertEqual(len(S.smpp_layers(frames, 0x80000006)), 2, "unbind_resp")
        nacks = S.smpp_layers(frames, 0x80000000)
        self.assertEqual([(x[1].first("smpp.command_status"), x[1].first("smpp.sequence_number"))
                          for x in nacks], [("0x00000003", "66")] * 2)
        self.assertGreaterEqual(len(S.smpp_layers(frames, 0x80000015)), 2,
                                "enquire_link_resp from us")


if __name__ == "__main__":
    S.main()
