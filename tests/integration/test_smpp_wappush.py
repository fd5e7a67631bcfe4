#!/usr/bin/env python3
"""The wappush transport (transports/smpp, smpp.so) against a real SMSC (tests/smsc/smsc.js,
npm smpp), checked on the wire by tshark's own SMPP, GSM SMS UD, WSP and WBXML dissectors:

- a release notice becomes a WAP Push Service Indication whose href is the package URL: with a
  long URL it is split over several binary SMS (port UDH 2948/9200 and the concatenation IE in
  every part), and tshark reassembles the WSP push PDU (application/vnd.wap.sic) and decodes the
  SI: href, text "<app> <version>", si-id "<tenant>/<message id>", created and si-expires from
  the message, the configured action;
- with document = sl a payload's url becomes a Service Loading document in one SMS.
"""
import time

import herald_harness as H
import smpp_harness as S


def iso(ms):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms // 1000))


class WapPush(S.SmppTestCase):
    def sent(self, d, n):
        H.wait_for(lambda: (d.metrics().get("herald_wappush_messages_total") or 0) >= n, 30,
                   what="%d WAP push(es) accepted by the SMSC" % n)

    def test_si_with_long_url_is_split_and_reassembled(self):
        smsc, cap = self.start_smsc()
        d = self.herald(smsc, policy="wappush", wappush={"action": "signal-high"})
        self.wait_bound(d)
        tok = self.register(d, "h1", "+44 7700 900123")
        path = ("/v1/apps/fw/releases/2.1.4-rc1+build.20261122/package?device=handset-0001"
                "&channel=stable&region=eu-west-1&lang=en")
        mid = d.publish("fw", {"kind": "release", "app": "fw", "version": "2.1.4", "url": path,
                               "size": 7340032, "sha256": "ab" * 32, "notes": "radio fixes"},
                        to="h1", ttl=7200)
        self.sent(d, 1)
        created = d.poll("h1", tok)["messages"][0]["created"]
        cap.stop()

        frames = S.pdml(cap)
        self.assertFalse([f.number for f in frames if f.layers("_ws.malformed")],
                         "tshark found malformed packets")
        subs = S.smpp_layers(frames, 0x00000004)
        n = len(subs)
        self.assertGreaterEqual(n, 2, "a long SI must take more than one SMS")
        self.assertEqual(len(smsc.accepted()), n)
        ids = set()
        for i, (fr, sm, under) in enumerate(subs, 1):
            self.assertEqual(sm.first("smpp.destination_addr"), "447700900123")
            self.assertEqual(sm.first("smpp.dest_addr_ton"), "0x01")
            self.assertEqual(sm.first("smpp.dest_addr_npi"), "0x01")
            self.assertEqual(sm.first("smpp.esm.submit.features"), "0x01", "UDHI")
            self.assertEqual(sm.first("smpp.data_coding"), "0x04", "8-bit data")
            self.assertEqual(sm.first("smpp.regdel.receipt"), "0x01")
            self.assertLessEqual(len(sm.raw("smpp.message")), 140, "one SMS holds 140 octets")
            ud = [p for p in under if p.name == "gsm_sms_ud"]
            self.assertEqual(len(ud), 1, "frame %d: no GSM SMS UD under the submit_sm" % fr.number)
            ud = ud[0]
            # The WDP port IE in every part, then the concatenation IE.
            self.assertEqual(ud.get("gsm_sms.destination_port"), ["2948"])
            self.assertEqual(ud.get("gsm_sms.originator_port"), ["9200"])
            self.assertEqual(ud.get("gsm_sms.ie_identifier"), ["0x05", "0x00"])
            self.assertEqual(ud.first("gsm_sms.udh.mm.msg_parts"), str(n))
            self.assertEqual(ud.first("gsm_sms.udh.mm.msg_part"), str(i))
            ids.add(ud.first("gsm_sms.udh.mm.msg_id"))
        self.assertEqual(len(ids), 1, "one concatenation reference for all parts")

        # The last part completes the reassembly; WSP and WBXML are dissected on the whole.
        fr, sm, under = subs[-1]
        ud = [p for p in under if p.name == "gsm_sms_ud"][0]
        self.assertEqual(ud.first("gsm_sms_ud.fragment.count"), str(n))
        wsp = [p for p in under if p.name == "wsp"]
        wbxml = [p for p in under if p.name == "wbxml"]
        self.assertTrue(wsp and wbxml, "tshark did not reassemble the push: %r" %
                        [p.name for p in under])
        wsp, wbxml = wsp[0], wbxml[0]
        self.assertEqual(wsp.first("wsp.pdu_type"), "0x06", "WSP Push")
        self.assertEqual(wsp.first("wsp.header.content_type"), "application/vnd.wap.sic")
        self.assertEqual(wsp.first("wsp.header.x_wap_application_id"),
                         "x-wap-application:wml.ua")
        self.assertEqual(wbxml.first("wbxml.version"), "0x02", "WBXML 1.2")
        self.assertEqual(wbxml.first("wbxml.public_id.known"), "0x00000005", "SI 1.0")
        self.assertEqual(wbxml.first("wbxml.charset"), "106", "UTF-8")
        doc = S.wbxml_document(wbxml)
        self.assertEqual(doc["tags"], ["si", "indication"])
        self.assertEqual(doc["attrs"].get("href"), "https://updates.example.com" + path, doc)
        self.assertEqual(doc["attrs"].get("si-id"), "default/%s" % mid, doc)
        self.assertEqual(doc["attrs"].get("created"), iso(created), doc)
        self.assertEqual(doc["attrs"].get("si-expires"), iso(created + 7200 * 1000), doc)
        self.assertEqual(doc["attrs"].get("action"), "signal-high", doc)
        self.assertEqual(doc["text"], ["fw 2.1.4"])

    def test_sl_document_in_one_sms(self):
        smsc, cap = self.start_smsc()
        d = self.herald(smsc, policy="wappush",
                        wappush={"document": "sl", "action": "execute-high",
                                 "app_id": "push.sia"})
        self.wait_bound(d)
        self.register(d, "h2", "491701234567")
        url = "https://example.org/ota/fw214.dd"
        d.publish("fw", {"url": url, "text": "ignored by SL"}, to="h2")
        self.sent(d, 1)
        cap.stop()

        frames = S.pdml(cap)
        subs = S.smpp_layers(frames, 0x00000004)
        self.assertEqual(len(subs), 1)
        fr, sm, under = subs[0]
        self.assertEqual(sm.first("smpp.destination_addr"), "491701234567")
        self.assertEqual(sm.first("smpp.data_coding"), "0x04")
        ud = [p for p in under if p.name == "gsm_sms_ud"][0]
        self.assertEqual(ud.get("gsm_sms.ie_identifier"), ["0x05"], "ports only, no concat IE")
        self.assertEqual(ud.get("gsm_sms.destination_port"), ["2948"])
        wsp = [p for p in under if p.name == "wsp"][0]
        wbxml = [p for p in under if p.name == "wbxml"][0]
        self.assertEqual(wsp.first("wsp.header.content_type"), "application/vnd.wap.slc")
        self.assertEqual(wsp.first("wsp.header.x_wap_application_id"),
                         "x-wap-application:push.sia")
        self.assertEqual(wbxml.first("wbxml.public_id.known"), "0x00000006", "SL 1.0")
        doc = S.wbxml_document(wbxml)
        self.assertEqual(doc["tags"], ["sl"])
        self.assertEqual(doc["attrs"].get("href"), url, doc)
        self.assertEqual(doc["attrs"].get("action"), "execute-high", doc)


if __name__ == "__main__":
    S.main()
