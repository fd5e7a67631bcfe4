"""smpp_harness.py — shared code of the SMS / WAP Push integration tests (test_smpp*.py).

The peers are real:
  - Smsc: tests/smsc/smsc.js, the npm `smpp` package (pinned by tests/smsc/package-lock.json,
    installed by `make smsc-deps`, which `make test` runs) as an SMSC on 127.0.0.1 and an
    ephemeral port. Every event it sees is a JSON line on its stdout, collected here.
  - Capture: tshark capturing the SMSC's port on the loopback interface into a file, stopped
    after the traffic, then dissected from the file (so reassembly sees every frame) with
    Wireshark's own SMPP, GSM SMS UD, WSP and WBXML dissectors: what crossed the wire is checked
    by a decoder that shares no code with ours. Capturing needs root (or the wireshark group).
  - heraldd itself, through herald_harness.Daemon, with smpp.so (sms + wappush) loaded from the
    build's transports directory.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import herald_harness as H

SMSC_DIR = os.path.join(H.SRC, "tests", "smsc")
NODE = shutil.which("node")
TSHARK = shutil.which("tshark")
SYSTEM_ID, PASSWORD = "herald", "secret"


def require_peers():
    """Fail (not skip) with what is missing: a test that cannot run must not pass."""
    missing = []
    if not NODE:
        missing.append("node (scripts/deps.sh installs nodejs)")
    if not os.path.isdir(os.path.join(SMSC_DIR, "node_modules", "smpp")):
        missing.append("the npm smpp package in tests/smsc (run `make smsc-deps`)")
    if not TSHARK:
        missing.append("tshark (scripts/deps.sh installs it)")
    if not os.path.exists(os.path.join(H.BUILD, "transports", "smpp.so")):
        missing.append("smpp.so in %s/transports (build the tree)" % H.BUILD)
    if missing:
        raise AssertionError("SMPP tests need: " + "; ".join(missing))


class Smsc:
    """One smsc.js process. args: its command-line options (see tests/smsc/smsc.js)."""

    def __init__(self, *args):
        require_peers()
        self.args = [str(a) for a in args]
        self.events = []
        self._lock = threading.Lock()
        self.p = subprocess.Popen([NODE, os.path.join(SMSC_DIR, "smsc.js"), "--port", "0"] +
                                  self.args, cwd=SMSC_DIR, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  preexec_fn=H._die_with_parent)
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()
        threading.Thread(target=self._drain_err, daemon=True).start()
        ev = self.wait(lambda e: e["event"] == "listening", 20, "smsc.js listening")
        self.port = ev["port"]

    def _read(self):
        for raw in self.p.stdout:
            try:
                ev = json.loads(raw.decode("utf-8", "replace"))
            except ValueError:
                ev = {"event": "garbage", "line": raw.decode("utf-8", "replace")}
            with self._lock:
                self.events.append(ev)

    def _drain_err(self):
        self.stderr = []
        for raw in self.p.stderr:
            self.stderr.append(raw.decode("utf-8", "replace"))

    def all(self, kind=None):
        with self._lock:
            return [e for e in self.events if kind is None or e["event"] == kind]

    def wait(self, pred, timeout=20.0, what="smsc event"):
        def find():
            with self._lock:
                for e in self.events:
                    if pred(e):
                        return e
            if self.p.poll() is not None:
                raise AssertionError("smsc.js exited (%s) while waiting for %s: %s" %
                                     (self.p.returncode, what, "".join(self.stderr[-20:])))
            return None
        return H.wait_for(find, timeout, what=what)

    def wait_count(self, kind, n, timeout=30.0, pred=None):
        return H.wait_for(lambda: len([e for e in self.all(kind) if pred is None or pred(e)]) >= n,
                          timeout, what="%d %s event(s) at the SMSC" % (n, kind))

    def accepted(self):
        """submit_sm_resp with status 0, in order."""
        return [e for e in self.all("submit_sm_resp") if e["status"] == 0]

    def command(self, obj):
        self.p.stdin.write((json.dumps(obj) + "\n").encode())
        self.p.stdin.flush()

    def stop(self):
        if self.p.poll() is None:
            try:
                self.p.stdin.close()
            except OSError:
                pass
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self._t.join(5)


class Capture:
    """tshark on lo for one TCP port, written to a file; decode() after stop()."""

    def __init__(self, port, tmp):
        require_peers()
        self.path = os.path.join(tmp, "smpp-%d.pcapng" % port)
        self.err = open(os.path.join(tmp, "tshark-%d.err" % port), "w+")
        self.p = subprocess.Popen([TSHARK, "-n", "-i", "lo", "-f", "tcp port %d" % port,
                                   "-w", self.path], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=self.err,
                                  preexec_fn=H._die_with_parent)

        def capturing():
            self.err.seek(0)
            text = self.err.read()
            if self.p.poll() is not None:
                raise AssertionError("tshark could not capture on lo (it needs root or the "
                                     "wireshark group): %s" % text)
            return "Capturing on" in text
        H.wait_for(capturing, 20, what="tshark to start capturing")
        # dumpcap reports "Capturing on" as it opens the interface; give the filter a moment.
        time.sleep(0.3)

    def stop(self):
        if self.p.poll() is None:
            time.sleep(0.5 * H.SLOW)  # frames on their way through the capture buffer
            self.p.send_signal(signal.SIGINT)
            try:
                self.p.wait(20)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.err.close()

    def run(self, *args):
        p = subprocess.run([TSHARK, "-n", "-r", self.path] + list(args), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=120)
        if p.returncode != 0:
            raise AssertionError("tshark %s failed: %s" % (" ".join(args),
                                                         p.stderr.decode(errors="replace")))
        return p.stdout.decode("utf-8", "replace")

    def text(self, *opts):
        """The verbose dissection of every layer that matters here (for debugging a test)."""
        return self.run(*opts, "-O", "smpp,gsm_sms_ud,wsp,wbxml")


class Proto:
    """One protocol layer of one frame, its fields flattened in document order."""

    def __init__(self, name, showname, fields):
        self.name, self.showname, self.fields = name, showname, fields

    def get(self, name):
        """The show values of every field of that name, in order."""
        return [f["show"] for f in self.fields if f["name"] == name]

    def first(self, name, default=None):
        v = self.get(name)
        return v[0] if v else default

    def raw(self, name):
        """The bytes of the first field of that name (from its value attribute)."""
        for f in self.fields:
            if f["name"] == name and f.get("value") is not None:
                return bytes.fromhex(f["value"])
        return None


class Frame:
    def __init__(self, number, protos):
        self.number, self.protos = number, protos

    def layers(self, name):
        return [p for p in self.protos if p.name == name]


def pdml(cap, *opts):
    """The capture dissected as PDML: a list of Frames. Field values are not cut at 240
    characters there, unlike the text output."""
    import xml.etree.ElementTree as ET
    root = ET.fromstring(cap.run(*opts, "-T", "pdml"))
    frames = []
    for pkt in root.iter("packet"):
        protos, number = [], None
        for pr in pkt.findall("proto"):
            fields = []

            def walk(el):
                for f in el.findall("field"):
                    fields.append({"name": f.get("name"), "show": f.get("show"),
                                   "showname": f.get("showname"), "value": f.get("value")})
                    walk(f)
            walk(pr)
            if pr.get("name") == "frame":
                number = int(next(f["show"] for f in fields if f["name"] == "frame.number"))
            protos.append(Proto(pr.get("name"), pr.get("showname") or "", fields))
        frames.append(Frame(number, protos))
    return frames


def smpp_layers(frames, command_id):
    """Every SMPP PDU of one command id (e.g. 0x00000004), with the gsm_sms_ud / wsp / wbxml
    layers tshark hung under it, as (frame, smpp Proto, [following non-SMPP Protos])."""
    out = []
    for fr in frames:
        cur = None
        for p in fr.protos:
            if p.name == "smpp":
                cur = (fr, p, [])
                if int(p.first("smpp.command_id", "0"), 16) == command_id:
                    out.append(cur)
            elif cur is not None:
                cur[2].append(p)
    return out


def wbxml_document(proto):
    """Rebuild the SI/SL tags, attributes and text from tshark's WBXML token fields: a decoder
    independent of libwbxml. Returns {"tags": [...], "attrs": {name: value}, "text": [...]}"""
    doc = {"tags": [], "attrs": {}, "text": []}
    attr = None
    in_attrs = False

    def unquote(s):
        return s[1:-1] if len(s) >= 2 and s[0] == s[-1] == "'" else s
    for f in proto.fields:
        n, show, showname = f["name"], f["show"] or "", f["showname"] or ""
        if n == "wbxml.known_tag":
            doc["tags"].append(show)
            in_attrs = "(A" in showname  # "(AC)" / "(A.)": the tag has attributes
            attr = None
        elif n == "wbxml.known_attrstart":
            name, _, val = show.partition("=")
            attr = name
            doc["attrs"][attr] = unquote(val)
        elif n == "wbxml.known_attrvalue" and attr:
            doc["attrs"][attr] += unquote(show)
        elif n == "wbxml.str_i":
            if in_attrs and attr:
                doc["attrs"][attr] += show
            else:
                doc["text"].append(show)
        elif n == "wbxml.opaque_data" and attr:
            m = re.search(r"%DateTime: (\S+)", showname)
            doc["attrs"][attr] += m.group(1) if m else show
        elif n == "wbxml.end_attribute_list":
            in_attrs, attr = False, None
    return doc


GSM7_OPTS = ("-o", "smpp.decode_sms_over_smpp:GSM 7-bit", "-o", "smpp.gsm7_unpacked:TRUE")


class SmppTestCase(H.HeraldTestCase):
    """A test with one SMSC, one capture and one heraldd using them."""

    def setUp(self):
        super().setUp()
        require_peers()
        self.tmp = tempfile.mkdtemp(prefix="herald-smpp-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def start_smsc(self, *args, capture=True):
        s = Smsc(*args)
        self.addCleanup(s.stop)
        cap = None
        if capture:
            cap = Capture(s.port, self.tmp)
            self.addCleanup(cap.stop)
        return s, cap

    def smsc_section(self, smsc, **kw):
        sec = {"host": "127.0.0.1", "port": smsc.port, "system_id": SYSTEM_ID,
               "password": PASSWORD, "reconnect_min": "200ms", "reconnect_max": "2s",
               "response_timeout": "10s", "enquire_link": "30s"}
        sec.update(kw)
        return sec

    def herald(self, smsc, policy="sms", smsc_kw=None, sms=None, wappush=None, extra=None,
               apps="fw"):
        conf = {
            "plugins": {"load": "longpoll, sms, wappush"},
            "tenant default": {"apps": apps, "push_policy": policy},
            "transport sms": sms or {},
            "transport wappush": dict({"base_url": "https://updates.example.com"},
                                      **(wappush or {})),
            "smsc main": self.smsc_section(smsc, **(smsc_kw or {})),
        }
        for k, v in (extra or {}).items():
            conf.setdefault(k, {}).update(v)
        return self.start_daemon(conf)

    def wait_bound(self, d, smsc="main"):
        H.wait_for(lambda: (d.metrics().get("herald_sms_smsc_%s_bound" % smsc) or 0) >= 1, 20,
                   what="the SMPP link to be bound")

    def register(self, d, device, msisdn, app="fw"):
        r = H.curl("POST", d.u("/v1/apps/%s/registrations" % app),
                   {"device": device, "msisdn": msisdn}, token=d.key)
        self.assertEqual(r.status, 201, r)
        return r.json()["token"]

    def events_socket(self, d, topic=b""):
        import zmq
        sub = H.zctx().socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, topic)
        sub.setsockopt(zmq.LINGER, 0)
        sub.connect(d.zmq_events)
        self.addCleanup(sub.close)
        time.sleep(0.3)  # PUB/SUB joins asynchronously
        return sub

    def next_event(self, sub, pred, timeout=20.0, what="event"):
        import msgpack
        end = H.deadline(timeout)
        seen = []
        while time.monotonic() < end:
            if sub.poll(200):
                topic, body = sub.recv_multipart()
                ev = msgpack.unpackb(body, raw=False)
                seen.append((topic, ev))
                if pred(topic.decode(), ev):
                    return ev
        raise AssertionError("no %s on the events socket; saw %r" % (what, seen[-10:]))


main = H.main
