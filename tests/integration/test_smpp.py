#!/usr/bin/env python3
"""The sms transport (transports/smpp, smpp.so) against a real SMSC (tests/smsc/smsc.js, npm
smpp), with what crossed the wire decoded by tshark:

- text notices in the GSM 7-bit default alphabet (extension characters included) and in UCS-2
  arrive intact, and a release notice is rendered through the tenant/app template;
- a long text goes out as concatenated SMS (UDH reference, total, sequence) that tshark
  reassembles;
- a delivery receipt marks the message delivered to the handset ("receipt" event, the
  deliveries API), also when it overtakes the submit_sm_resp and the SMSC writes the id in hex
  in the response and in decimal in the receipt;
- mobile-originated messages (a concatenated UCS-2 one too) become "inbound" events;
- a wrong bind password is a clear error in the log and the metrics, and long-poll keeps
  working meanwhile.
"""
import collections

import herald_harness as H
import smpp_harness as S


class Sms(S.SmppTestCase):
    def sent(self, d, n):
        H.wait_for(lambda: (d.metrics().get("herald_sms_messages_total") or 0) >= n, 30,
                   what="%d SMS message(s) accepted by the SMSC" % n)

    def test_gsm7_ucs2_and_template_texts_arrive_intact(self):
        smsc, cap = self.start_smsc()
        d = self.herald(smsc, smsc_kw={"source_addr": "HERALD"},
                        sms={"template": "{app} {version} is ready",
                             "template.default.fw": "Update {app} {version} ({size}): {url}",
                             "template.other": "not this tenant's",
                             "base_url": "https://dl.example.com"})
        self.wait_bound(d)
        self.register(d, "h1", "+49 151 1234 5678")
        gsm = "Grüße @ £5: {x} [y] ~ €10 ^_^ \\o/ |"
        ucs = "Обновление 2.1.4 готово ✓ — 更新"
        emoji = "Update ready 🎉"
        for text in (gsm, ucs, emoji):
            d.publish("fw", {"text": text}, to="h1")
        d.publish("fw", {"kind": "release", "app": "fw", "version": "2.1.4",
                         "url": "/v1/apps/fw/releases/2.1.4/package", "size": 1234567,
                         "sha256": "cd" * 32}, to="h1")
        self.sent(d, 4)
        cap.stop()

        subs = S.smpp_layers(S.pdml(cap, *S.GSM7_OPTS), 0x00000004)
        self.assertEqual(len(subs), 4, [s[1].first("smpp.message") for s in subs])
        by_text = {}
        for fr, sm, under in subs:
            self.assertEqual(sm.first("smpp.destination_addr"), "4915112345678")
            self.assertEqual((sm.first("smpp.dest_addr_ton"), sm.first("smpp.dest_addr_npi")),
                             ("0x01", "0x01"))
            self.assertEqual(sm.first("smpp.source_addr"), "HERALD")
            self.assertEqual((sm.first("smpp.source_addr_ton"), sm.first("smpp.source_addr_npi")),
                             ("0x05", "0x00"), "alphanumeric sender")
            self.assertEqual(sm.first("smpp.esm.submit.features"), "0x00", "no UDH")
            self.assertEqual(sm.first("smpp.regdel.receipt"), "0x01")
            self.assertIsNotNone(sm.first("smpp.validity_period"))
            by_text[sm.first("smpp.message_text")] = sm
        self.assertIn(gsm, by_text, "GSM text as tshark decodes it (7-bit, unpacked)")
        self.assertEqual(by_text[gsm].first("smpp.data_coding"), "0x00")
        self.assertIn(ucs, by_text)
        self.assertEqual(by_text[ucs].first("smpp.data_coding"), "0x08")
        notice = "Update fw 2.1.4 (1.2 MB): https://dl.example.com/v1/apps/fw/releases/2.1.4/package"
        self.assertIn(notice, by_text, "template.<tenant>.<app> with every placeholder")
        # tshark reads dcs 8 as UCS-2 proper, so a character outside the BMP is checked in the
        # octets: UTF-16BE with its surrogate pair.
        raws = [sm.raw("smpp.message") for _, sm, _ in subs]
        self.assertIn(emoji.encode("utf-16-be"), raws)

    def test_long_text_is_concatenated(self):
        smsc, cap = self.start_smsc()
        d = self.herald(smsc)
        self.wait_bound(d)
        self.register(d, "h1", "4915112345678")
        text = " ".join("part%03d" % i for i in range(50))  # 399 septets: 153 + 153 + 93
        d.publish("fw", {"text": text}, to="h1")
        self.sent(d, 1)
        cap.stop()

        subs = S.smpp_layers(S.pdml(cap, *S.GSM7_OPTS), 0x00000004)
        self.assertEqual(len(subs), 3)
        refs, pieces = set(), []
        for i, (fr, sm, under) in enumerate(subs, 1):
            self.assertEqual(sm.first("smpp.esm.submit.features"), "0x01", "UDHI")
            self.assertEqual(sm.first("smpp.data_coding"), "0x00")
            ud = [p for p in under if p.name == "gsm_sms_ud"][0]
            self.assertEqual(ud.get("gsm_sms.ie_identifier"), ["0x00"], "concatenation IE")
            self.assertEqual(ud.first("gsm_sms.udh.mm.msg_parts"), "3")
            self.assertEqual(ud.first("gsm_sms.udh.mm.msg_part"), str(i))
            refs.add(ud.first("gsm_sms.udh.mm.msg_id"))
            pieces.append(sm.first("smpp.message_text"))
            if i == 3:
                self.assertEqual(ud.first("gsm_sms_ud.fragment.count"), "3")
                self.assertEqual(ud.first("gsm_sms_ud.reassembled.length"), str(len(text)))
        self.assertEqual(len(refs), 1)
        self.assertEqual([len(p) for p in pieces], [153, 153, 93])
        self.assertEqual("".join(pieces), text)
        # Every part was accepted once, each with its own message id (its own receipt).
        acc = smsc.accepted()
        self.assertEqual(len(acc), 3)
        self.assertEqual(len({a["message_id"] for a in acc}), 3)

    def test_receipt_marks_message_delivered(self):
        # Hex ids in submit_sm_resp, decimal in the receipt text, no TLVs, and the receipt
        # sent before the submit_sm_resp: the ids must still match.
        smsc, cap = self.start_smsc("--id-format", "hex", "--receipt-id", "dec",
                                    "--receipt-tlv", "no", "--receipt-first")
        d = self.herald(smsc, smsc_kw={"msg_id_type": "hex_dec"})
        sub = self.events_socket(d, b"default.receipt")
        self.wait_bound(d)
        self.register(d, "h1", "4915112345678")
        mid = d.publish("fw", {"text": "receipt please"}, to="h1")
        ev = self.next_event(sub, lambda t, e: e.get("id") == str(mid), 30, "receipt event")
        self.assertEqual((ev["state"], ev["to"], ev["app"], ev["transport"]),
                         ("delivered", "h1", "fw", "sms"), ev)
        self.assertIn("stat=DELIVRD", ev.get("detail") or "", ev)
        r = H.curl("GET", d.u("/v1/apps/fw/messages/%s/deliveries" % mid), token=d.key)
        self.assertEqual(r.status, 200, r)
        self.assertIn({"device": "h1", "transport": "sms", "state": "delivered"},
                      r.json()["deliveries"], r.json())
        self.assertEqual(d.metric("herald_sms_smsc_main_receipts_total"), 1)
        cap.stop()

        frames = S.pdml(cap)
        resp = S.smpp_layers(frames, 0x80000004)
        rcpt = S.smpp_layers(frames, 0x00000005)
        self.assertEqual(len(resp), 1)
        self.assertEqual(len(rcpt), 1)
        self.assertEqual(resp[0][1].first("smpp.message_id"), "000003E8")
        self.assertTrue(rcpt[0][1].raw("smpp.message").startswith(b"id:1000 "))
        self.assertLess(rcpt[0][0].number, resp[0][0].number,
                        "the receipt overtook the submit_sm_resp on the wire")
        self.assertEqual(len(S.smpp_layers(frames, 0x80000005)), 1, "receipt answered")

    def test_mobile_originated_messages_are_inbound_events(self):
        smsc, _ = self.start_smsc(capture=False)
        d = self.herald(smsc)
        sub = self.events_socket(d, b"*.inbound")
        self.wait_bound(d)
        # GSM default alphabet, unpacked: these characters have the same codes as ASCII.
        smsc.command({"cmd": "mo", "from": "4915112345678", "to": "12345",
                      "sm_hex": b"STOP please".hex(), "dcs": 0})
        ev = self.next_event(sub, lambda t, e: True, 20, "inbound event")
        self.assertEqual((ev["from"], ev["to"], ev["text"], ev["transport"]),
                         ("4915112345678", "12345", "STOP please", "sms"), ev)
        # A UCS-2 reply in two parts, cut between the halves of a surrogate pair.
        text = "Привет 👋 мир"
        b = text.encode("utf-16-be")
        cut = b.index("👋".encode("utf-16-be")) + 2
        for seq, chunk in ((2, b[cut:]), (1, b[:cut])):  # out of order, too
            udh = bytes([5, 0, 3, 0x42, 2, seq])
            smsc.command({"cmd": "mo", "from": "4915112345678", "to": "12345",
                          "sm_hex": (udh + chunk).hex(), "esm": 0x40, "dcs": 8})
        ev = self.next_event(sub, lambda t, e: True, 20, "reassembled inbound event")
        self.assertEqual(ev["text"], text, ev)
        H.wait_for(lambda: d.metric("herald_sms_smsc_main_mo_total") == 2, 10,
                   what="mo_total == 2")
        resps = smsc.all("deliver_sm_resp")
        self.assertEqual(len(resps), 3)
        self.assertTrue(all(r["status"] == 0 for r in resps), resps)

    def test_bad_password_is_a_clear_error_and_long_poll_still_works(self):
        smsc, cap = self.start_smsc()
        self.expect_log_error(r"event=smpp_bind_failed")
        d = self.herald(smsc, smsc_kw={"password": "wrong"})
        line = d.wait_log(r"event=smpp_bind_failed", 20)
        for part in ("smsc=main", "status=ESME_RINVPASWD", "system_id=herald",
                     'reason="the SMSC refused the password"'):
            self.assertIn(part, line)
        # Backoff reconnects, each refused and counted.
        H.wait_for(lambda: (d.metric("herald_sms_smsc_main_bind_failures_total") or 0) >= 2, 20,
                   what="a second refused bind")
        self.assertEqual(d.metric("herald_sms_smsc_main_bound"), 0)
        # The rest of the broker is untouched.
        tok = d.provision("fw", "lp1")
        mid = d.publish("fw", {"text": "over long-poll"}, to="lp1")
        self.assertEqual([m["id"] for m in d.poll("lp1", tok)["messages"]], [mid])
        self.assertEqual(H.curl("GET", d.u("/healthz")).status, 200)
        d.stop()
        cap.stop()
        binds = smsc.all("bind")
        self.assertGreaterEqual(len(binds), 2)
        self.assertTrue(all(b["status"] == 0x0E and b["command"] == "bind_transceiver"
                            for b in binds), binds)
        self.assertEqual(smsc.all("submit_sm"), [])
        resps = S.smpp_layers(S.pdml(cap), 0x80000009)
        self.assertGreaterEqual(len(resps), 2)
        self.assertEqual(collections.Counter(r[1].first("smpp.command_status") for r in resps),
                         {"0x0000000e": len(resps)})


if __name__ == "__main__":
    S.main()
