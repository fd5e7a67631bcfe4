#!/usr/bin/env node
// smsc.js — a real SMPP 3.4 SMSC for Herald's integration tests: the npm `smpp` package (0.5.1,
// pinned by package-lock.json) in server mode, plus the behaviour a test needs to provoke.
//
// It listens on 127.0.0.1 only. Every event is one JSON line on stdout, the first being
//   {"event":"listening","port":N}
// so a test can start it on port 0 and read the port. Each received submit_sm is logged with
// its raw fields (short_message as hex, UDH included) and with what became of it
// ("submit_sm_resp" lines: status and message_id), so a test can count exactly-once delivery.
//
// Options (all optional):
//   --port N               listen port (0 = ephemeral; default 0)
//   --system-id ID         accepted system_id (default "herald"); another one: ESME_RINVSYSID
//   --password PW          accepted password (default "secret"); another one: ESME_RINVPASWD
//   --id-format hex|dec    message_id in submit_sm_resp: "hex" = upper-case hex padded to 8
//                          digits (e.g. 000003E8), "dec" = decimal (default)
//   --receipt-id hex|dec   the id: in the receipt text (default: same as --id-format)
//   --receipt-tlv yes|no   add receipted_message_id (resp format) and message_state TLVs
//                          (default yes)
//   --receipts yes|no      send a delivery receipt when registered_delivery asks (default yes)
//   --receipt-stat WORD    the receipt's stat: (default DELIVRD)
//   --receipt-delay MS     receipt this long after the submit_sm_resp (default 50)
//   --receipt-first        send the receipt BEFORE the submit_sm_resp
//   --resp-delay MS        answer each submit_sm this late (default 0; makes a window fill up)
//   --throttle-every N     answer every Nth submit_sm with ESME_RTHROTTLED (0x58), not counted
//                          as accepted (default 0 = never)
//   --drop-after K         once, on the Kth submit_sm: leave it and every submit_sm not yet
//                          answered unanswered, and close the connection (FIN, after what was
//                          already answered has been written)
//   --first-id N           first message id (default 1000)
// Commands, one JSON object per line on stdin:
//   {"cmd":"mo","from":"…","to":"…","text":"…","dcs":0}  deliver_sm (mobile-originated) on every
//       bound receiver/transceiver; or "sm_hex" (raw short_message) with "esm" instead of "text"
//   {"cmd":"drop"}   close every connection now
//   {"cmd":"enquire_link"}   enquire_link on every bound session (answers: enquire_link_resp)
//   {"cmd":"raw","hex":"…"}   write these bytes as they are to every bound session
'use strict';
const smpp = require('smpp');
const { PDU } = require('smpp/lib/pdu');

function parseArgs(argv) {
  const o = {
    port: 0, systemId: 'herald', password: 'secret', idFormat: 'dec', receiptId: null,
    receiptTlv: true, receipts: true, receiptStat: 'DELIVRD', receiptDelay: 50,
    receiptFirst: false, respDelay: 0, throttleEvery: 0, dropAfter: 0, firstId: 1000,
  };
  for (let i = 2; i < argv.length; i++) {
    const a = argv[i], v = () => {
      if (i + 1 >= argv.length) throw new Error(a + ' needs a value');
      return argv[++i];
    };
    switch (a) {
      case '--port': o.port = +v(); break;
      case '--system-id': o.systemId = v(); break;
      case '--password': o.password = v(); break;
      case '--id-format': o.idFormat = v(); break;
      case '--receipt-id': o.receiptId = v(); break;
      case '--receipt-tlv': o.receiptTlv = v() === 'yes'; break;
      case '--receipts': o.receipts = v() === 'yes'; break;
      case '--receipt-stat': o.receiptStat = v(); break;
      case '--receipt-delay': o.receiptDelay = +v(); break;
      case '--receipt-first': o.receiptFirst = true; break;
      case '--resp-delay': o.respDelay = +v(); break;
      case '--throttle-every': o.throttleEvery = +v(); break;
      case '--drop-after': o.dropAfter = +v(); break;
      case '--first-id': o.firstId = +v(); break;
      default: throw new Error('unknown option ' + a);
    }
  }
  if (!['hex', 'dec'].includes(o.idFormat)) throw new Error('--id-format hex|dec');
  if (o.receiptId === null) o.receiptId = o.idFormat;
  return o;
}

const opt = parseArgs(process.argv);
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

// Keep each PDU's raw bytes: the package decodes short_message by data_coding, and the log must
// show exactly what crossed the wire.
const origFromBuffer = PDU.prototype.fromBuffer;
PDU.prototype.fromBuffer = function (buffer) {
  Object.defineProperty(this, '_raw', { value: Buffer.from(buffer), enumerable: false });
  return origFromBuffer.call(this, buffer);
};

// submit_sm body fields straight from the raw PDU (SMPP 3.4 §4.4.1).
function rawSubmit(buf) {
  let o = 16;
  const cstr = () => {
    const e = buf.indexOf(0, o);
    const s = buf.slice(o, e < 0 ? buf.length : e).toString('latin1');
    o = e < 0 ? buf.length : e + 1;
    return s;
  };
  const u8 = () => buf[o++];
  const r = {};
  r.service_type = cstr();
  r.src_ton = u8(); r.src_npi = u8(); r.src = cstr();
  r.dst_ton = u8(); r.dst_npi = u8(); r.dst = cstr();
  r.esm = u8(); r.pid = u8(); r.priority = u8();
  r.schedule = cstr(); r.validity = cstr();
  r.rd = u8(); r.replace = u8(); r.dcs = u8(); r.default_msg_id = u8();
  const len = u8();
  r.sm = buf.slice(o, o + len).toString('hex');
  o += len;
  r.tlvs = [];
  while (o + 4 <= buf.length) {
    const tag = buf.readUInt16BE(o), l = buf.readUInt16BE(o + 2);
    r.tlvs.push({ tag, value: buf.slice(o + 4, o + 4 + l).toString('hex') });
    o += 4 + l;
  }
  return r;
}

let nextId = opt.firstId, submits = 0, dropped = false, connSeq = 0;
const sessions = new Set();
const fmtId = (n, f) => (f === 'hex' ? n.toString(16).toUpperCase().padStart(8, '0') : String(n));
const smppDate = (d) => d.toISOString().replace(/[-T:]/g, '').slice(2, 12);

// Receipts go to a session that may receive: the submitting one when it is a transceiver, or
// a receiver bound with the same system_id (a transmitter + receiver pair).
function receiverFor(s) {
  if (s.bound === 'bind_transceiver') return s;
  for (const o of sessions)
    if (o.bound === 'bind_receiver' && o.systemId === s.systemId && !o.closed) return o;
  return null;
}

function sendReceipt(sub, p, id) {
  const s = receiverFor(sub);
  if (!s) {
    out({ event: 'receipt_undeliverable', conn: sub.conn, id: fmtId(id, opt.idFormat) });
    return;
  }
  const now = smppDate(new Date());
  const text = `id:${fmtId(id, opt.receiptId)} sub:001 dlvrd:001 submit date:${now} ` +
    `done date:${now} stat:${opt.receiptStat} err:000 text:`;
  const states = { DELIVRD: 2, EXPIRED: 3, DELETED: 4, UNDELIV: 5, ACCEPTD: 6, UNKNOWN: 7, REJECTD: 8 };
  const f = {
    source_addr_ton: p.dest_addr_ton, source_addr_npi: p.dest_addr_npi,
    source_addr: p.destination_addr, dest_addr_ton: p.source_addr_ton,
    dest_addr_npi: p.source_addr_npi, destination_addr: p.source_addr,
    esm_class: 0x04, data_coding: 0, short_message: Buffer.from(text, 'latin1'),
  };
  if (opt.receiptTlv) {
    f.receipted_message_id = fmtId(id, opt.idFormat);
    f.message_state = states[opt.receiptStat] || 7;
  }
  if (!s.closed) {
    s.deliver_sm(f);
    out({ event: 'receipt', conn: s.conn, id: fmtId(id, opt.idFormat), text });
  }
}

function onSubmit(s, p) {
  const r = rawSubmit(p._raw);
  submits++;
  const ev = Object.assign({ event: 'submit_sm', conn: s.conn, seq: p.sequence_number, n: submits }, r);
  if (s.dropping) {
    out(Object.assign(ev, { answered: false, why: 'link dropping' }));
    return;
  }
  if (opt.dropAfter && !dropped && submits >= opt.dropAfter) {
    // Mid-window: this one and every submit not answered yet stay unanswered.
    dropped = true;
    out(Object.assign(ev, { answered: false, why: 'drop' }));
    dropLink(s, 'drop-after');
    return;
  }
  out(ev);
  const answer = () => {
    s.pending.delete(timer);
    if (s.dropping || s.closed) return;
    if (p._throttle) {
      s.send(p.response({ command_status: smpp.ESME_RTHROTTLED }));
      out({ event: 'submit_sm_resp', conn: s.conn, seq: p.sequence_number, status: 0x58 });
      return;
    }
    const id = nextId++;
    const send = () => {
      s.send(p.response({ message_id: fmtId(id, opt.idFormat) }));
      out({ event: 'submit_sm_resp', conn: s.conn, seq: p.sequence_number, status: 0,
        message_id: fmtId(id, opt.idFormat), sm: r.sm, dst: r.dst });
    };
    const wantReceipt = opt.receipts && (r.rd & 0x03) !== 0;
    if (wantReceipt && opt.receiptFirst) {
      sendReceipt(s, p, id);
      setTimeout(() => { if (!s.closed) send(); }, Math.max(opt.receiptDelay, 20));
    } else {
      send();
      if (wantReceipt) setTimeout(() => sendReceipt(s, p, id), opt.receiptDelay);
    }
  };
  p._throttle = opt.throttleEvery > 0 && submits % opt.throttleEvery === 0;
  const timer = setTimeout(answer, opt.respDelay);
  s.pending.add(timer);
}

function dropLink(s, why) {
  s.dropping = true;
  for (const t of s.pending) clearTimeout(t);
  s.pending.clear();
  out({ event: 'drop', conn: s.conn, why });
  // FIN after everything answered so far has been written; keep reading until the ESME closes.
  s.socket.end();
}

const server = smpp.createServer((s) => {
  s.conn = ++connSeq;
  s.pending = new Set();
  s.bound = null;
  sessions.add(s);
  out({ event: 'connect', conn: s.conn });
  const bind = (p) => {
    let status = 0;
    if (p.system_id !== opt.systemId) status = smpp.ESME_RINVSYSID;
    else if (p.password !== opt.password) status = smpp.ESME_RINVPASWD;
    out({ event: 'bind', conn: s.conn, command: p.command, system_id: p.system_id,
      interface_version: p.interface_version, status });
    if (status) {
      s.send(p.response({ command_status: status }));
      return;
    }
    s.bound = p.command;
    s.systemId = p.system_id;
    s.send(p.response({ system_id: 'TESTSMSC' }));
  };
  ['bind_transmitter', 'bind_receiver', 'bind_transceiver'].forEach((c) => s.on(c, bind));
  s.on('enquire_link', (p) => {
    out({ event: 'enquire_link', conn: s.conn, seq: p.sequence_number });
    s.send(p.response());
  });
  s.on('unbind', (p) => {
    out({ event: 'unbind', conn: s.conn });
    s.send(p.response());
    s.close();
  });
  s.on('submit_sm', (p) => {
    if (!s.bound || s.bound === 'bind_receiver') {
      s.send(p.response({ command_status: smpp.ESME_RINVBNDSTS }));
      return;
    }
    onSubmit(s, p);
  });
  s.on('deliver_sm_resp', (p) => out({ event: 'deliver_sm_resp', conn: s.conn,
    seq: p.sequence_number, status: p.command_status }));
  s.on('enquire_link_resp', (p) => out({ event: 'enquire_link_resp', conn: s.conn,
    seq: p.sequence_number, status: p.command_status }));
  s.on('generic_nack', (p) => out({ event: 'generic_nack', conn: s.conn, seq: p.sequence_number,
    status: p.command_status }));
  s.on('unknown', (p) => {
    out({ event: 'unknown', conn: s.conn, command_id: p.command_id });
    s.send(p.response());
  });
  s.on('close', () => {
    s.closed = true;
    for (const t of s.pending) clearTimeout(t);
    sessions.delete(s);
    out({ event: 'close', conn: s.conn });
  });
  s.on('error', (e) => out({ event: 'error', conn: s.conn, message: e.message }));
});

server.listen(opt.port, '127.0.0.1', () => out({ event: 'listening', port: server.address().port }));

let inbuf = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => {
  inbuf += d;
  let i;
  while ((i = inbuf.indexOf('\n')) >= 0) {
    const line = inbuf.slice(0, i).trim();
    inbuf = inbuf.slice(i + 1);
    if (!line) continue;
    let c;
    try { c = JSON.parse(line); } catch (e) { out({ event: 'bad_command', line }); continue; }
    if (c.cmd === 'drop') {
      for (const s of sessions) dropLink(s, 'command');
    } else if (c.cmd === 'enquire_link' || c.cmd === 'raw') {
      let n = 0;
      for (const s of sessions) {
        if (!s.bound) continue;
        if (c.cmd === 'raw') s.socket.write(Buffer.from(c.hex, 'hex'));
        else s.enquire_link();
        n++;
      }
      out({ event: c.cmd + '_sent', sessions: n });
    } else if (c.cmd === 'mo') {
      let n = 0;
      for (const s of sessions) {
        if (s.bound !== 'bind_transceiver' && s.bound !== 'bind_receiver') continue;
        const f = { source_addr_ton: 1, source_addr_npi: 1, source_addr: c.from,
          dest_addr_ton: 0, dest_addr_npi: 0, destination_addr: c.to || '',
          esm_class: c.esm || 0, data_coding: c.dcs || 0 };
        f.short_message = c.sm_hex !== undefined ? Buffer.from(c.sm_hex, 'hex') : { message: c.text };
        s.deliver_sm(f);
        n++;
      }
      out({ event: 'mo_sent', sessions: n });
    } else {
      out({ event: 'bad_command', line });
    }
  }
});
// The test closes stdin (or kills us) to stop.
process.stdin.on('end', () => { server.close(); for (const s of sessions) s.destroy(); process.exit(0); });
process.on('SIGTERM', () => process.exit(0));
