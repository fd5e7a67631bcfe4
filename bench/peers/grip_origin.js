// grip_origin.js PORT PUSHPIN_PUBLISH_URL — the origin behind Pushpin for the bench's long-poll
// workload: the application half of a GRIP deployment, in node with nothing but its http
// module. It owns each channel's message history (in memory) and is the only publisher.
//
//   GET  /lp/CH?since=N   (through Pushpin) messages of CH after id N, at once if there are any;
//                         otherwise a GRIP hold on CH with prev-id=N, so Pushpin itself asks
//                         again (a "recover" request) when it sees a publish whose prev-id is not
//                         the one the hold knows. Body: {"messages":[...], "cursor":"K"}.
//   POST /pub/CH          body = one message (JSON); it gets id K = last + 1, is stored, then
//                         published to Pushpin as item {channel CH, id K, prev-id K-1,
//                         http-response body {"messages":[msg], "cursor":"K"}}. Answered 200 once
//                         Pushpin accepted it.
//   GET  /stats/CH        {"holds": H}: how many GRIP holds on CH were handed out, so the bench
//                         knows when every subscriber is waiting (Pushpin has no such count).
//
// GRIP_TIMEOUT (seconds, default 60, as the other systems' long-polls) is the holds' timeout.
//
// Publishes go to Pushpin in id order over one keep-alive connection: whatever queued while a
// publish was in flight goes out as the next request's item list. Loopback only.
'use strict';
const http = require('http');

const port = Number(process.argv[2]);
const pubUrl = new URL(process.argv[3] || 'http://127.0.0.1:5561/publish/');
const holdTimeout = String(Number(process.env.GRIP_TIMEOUT) || 60);
const channels = new Map(); // name -> { msgs: [message JSON text], holds: count }
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
let queue = [];   // [{item, res}] not yet sent to Pushpin
let inFlight = false;

function chan(name) {
  let c = channels.get(name);
  if (!c) channels.set(name, (c = { msgs: [], holds: 0 }));
  return c;
}

function flush() {
  if (inFlight || queue.length === 0) return;
  const batch = queue;
  queue = [];
  inFlight = true;
  const body = JSON.stringify({ items: batch.map((b) => b.item) });
  const req = http.request(pubUrl, {
    method: 'POST', agent,
    headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) },
  }, (res) => {
    res.resume();
    res.on('end', () => {
      for (const b of batch) answer(b.res, res.statusCode === 200 ? 200 : 502, 'published\n');
      inFlight = false;
      flush();
    });
  });
  req.on('error', (e) => {
    for (const b of batch) answer(b.res, 502, String(e) + '\n');
    inFlight = false;
    flush();
  });
  req.end(body);
}

function answer(res, code, body, headers) {
  res.writeHead(code, Object.assign({ 'Content-Type': 'text/plain' }, headers || {}));
  res.end(body);
}

const server = http.createServer((req, res) => {
  const u = new URL(req.url, 'http://origin');
  const m = /^\/(lp|pub|stats)\/(\w+)$/.exec(u.pathname);
  if (!m) return answer(res, 404, 'no such path\n');
  const c = chan(m[2]);
  if (m[1] === 'stats') return answer(res, 200, '{"holds":' + c.holds + '}\n');
  if (m[1] === 'lp') {
    const since = Math.max(0, Math.min(Number(u.searchParams.get('since')) || 0, c.msgs.length));
    if (since < c.msgs.length) {
      const body = '{"messages":[' + c.msgs.slice(since).join(',') + '],"cursor":"' +
                   c.msgs.length + '"}';
      return answer(res, 200, body, { 'Content-Type': 'application/json' });
    }
    c.holds++;
    return answer(res, 200, '{"messages":[],"cursor":"' + since + '"}', {
      'Content-Type': 'application/json',
      'Grip-Hold': 'response',
      'Grip-Channel': m[2] + '; prev-id=' + since,
      'Grip-Timeout': holdTimeout,
    });
  }
  if (req.method !== 'POST') return answer(res, 405, 'POST only\n');
  const parts = [];
  req.on('data', (d) => parts.push(d));
  req.on('end', () => {
    const msg = Buffer.concat(parts).toString();
    try { JSON.parse(msg); } catch (e) { return answer(res, 400, 'not JSON\n'); }
    c.msgs.push(msg);
    const id = c.msgs.length;
    queue.push({
      res,
      item: {
        channel: m[2], id: String(id), 'prev-id': String(id - 1),
        formats: { 'http-response': {
          headers: { 'Content-Type': 'application/json' },
          body: '{"messages":[' + msg + '],"cursor":"' + id + '"}',
        } },
      },
    });
    flush();
  });
});
server.keepAliveTimeout = 120000;
server.headersTimeout = 121000;
server.listen(port, '127.0.0.1');
