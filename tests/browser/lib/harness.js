// harness.js — what Herald's browser tests share: a real heraldd, publishers (HTTP and
// ZeroMQ), metrics, and Debian's headless Chromium driven by playwright-core.
//
//  - Broker: starts build/<type>/heraldd (HERALD_BUILD, like the Python integration tests) on a
//    config written for the test (loopback, port 0, a temp data dir, a known publish key),
//    waits for its `event=started` line and reads the real ports from it; restart() keeps the
//    data dir and the HTTP port; stop() sends SIGTERM and asserts exit code 0; check() fails the
//    test on any `level=error` line or sanitizer report in its log.
//  - Browser: one Chromium per test with a fresh --user-data-dir, the flags that keep it off the
//    network (no background services, no QUIC, every name resolving to nothing and every
//    non-loopback URL sent to a dead local proxy); every request it makes is recorded and
//    close() fails the test if one went anywhere but 127.0.0.1, or if a page threw.
//  - waitFor(): polls with a generous deadline (x4 on a sanitizer build). No timing assertions.
import { spawn, execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const HERE = path.dirname(fileURLToPath(import.meta.url));
export const SRC = process.env.HERALD_SRC || path.resolve(HERE, '..', '..', '..');
export const BUILD = process.env.HERALD_BUILD || path.join(SRC, 'build', 'release');
export const CHROMIUM = process.env.HERALD_CHROMIUM || '/usr/bin/chromium';
export const ARTIFACTS = path.join(BUILD, 'artifacts');

function sanitized() {
  try {
    const cache = fs.readFileSync(path.join(BUILD, 'CMakeCache.txt'), 'utf8');
    return /^HERALD_SANITIZE:BOOL=(ON|TRUE|1)\s*$/m.test(cache);
  } catch {
    return false;
  }
}

export const SANITIZED = sanitized();
/** Every deadline is multiplied by this: generous, never a performance assertion. */
export const SLOW = SANITIZED ? 4 : 1;

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Poll fn() until it returns a truthy value (returned) or the deadline passes (throws, naming
 * what was awaited and the last value seen).
 */
export async function waitFor(fn, { timeout = 15000, interval = 50, what = 'condition' } = {}) {
  const end = Date.now() + timeout * SLOW;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() > end)
      throw new Error(`timed out after ${timeout * SLOW} ms waiting for ${what}; last: ` +
                      JSON.stringify(last));
    await sleep(interval);
  }
}

/* ------------------------------------------------------------------------------------------ */
/* the broker */

const LIVE = new Set();
process.on('exit', () => {
  for (const p of LIVE) p.kill('SIGKILL');
});

const SANITIZER_RE = /ERROR: (Address|Leak|Memory|Thread)Sanitizer|runtime error:|SUMMARY: \w+Sanitizer/;

export class Broker {
  /**
   * @param {object} [o]
   * @param {string[]} [o.allowedOrigins] allowed_origins of the tenant "default"
   * @param {string} [o.extra] more config text, appended
   */
  constructor(o = {}) {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-browser-'));
    this.key = randomBytes(32).toString('base64url');
    this.tenant = 'default';
    this.allowedOrigins = o.allowedOrigins || [];
    this.extra = o.extra || '';
    this.listen = '127.0.0.1:0';
    this.logs = [];
    this.proc = null;
    this.expectedErrors = [];
  }

  /** Start a broker, wait until it serves. */
  static async start(o) {
    const b = new Broker(o);
    await b.start();
    return b;
  }

  config() {
    return [
      `data_dir = ${path.join(this.dir, 'data')}`,
      'log_level = info',
      '[http]',
      `listen = ${this.listen}`,
      '[zmq]',
      'ingress = tcp://127.0.0.1:*',
      'events = tcp://127.0.0.1:*',
      '[tenant default]',
      `publish_key = ${this.key}`,
      'apps = *',
      'self_register = *',
      'self_register_per_min = 0',
      `allowed_origins = ${this.allowedOrigins.join(', ')}`,
      this.extra,
      '',
    ].join('\n');
  }

  async start() {
    const conf = path.join(this.dir, 'herald.conf');
    fs.writeFileSync(conf, this.config());
    const exe = path.join(BUILD, 'heraldd');
    if (!fs.existsSync(exe)) throw new Error(`no heraldd at ${exe}: build first (make build)`);
    // setpriv --pdeathsig: heraldd dies with this test process, even when it is killed.
    const proc = spawn('setpriv', ['--pdeathsig', 'KILL', '--', exe, '-c', conf], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, ASAN_OPTIONS: process.env.ASAN_OPTIONS || 'detect_leaks=1' },
    });
    this.proc = proc;
    LIVE.add(proc);
    const exited = new Promise((resolve) => proc.on('exit', (code, sig) => {
      LIVE.delete(proc);
      resolve({ code, sig });
    }));
    this.exited = exited;
    let buf = '';
    const started = new Promise((resolve, reject) => {
      proc.stderr.setEncoding('utf8');
      proc.stderr.on('data', (d) => {
        buf += d;
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          this.logs.push(line);
          if (process.env.HERALD_TEST_VERBOSE) process.stderr.write(`heraldd: ${line}\n`);
          const m = /\bevent=started\b.*\bhttp=(\S+):(\d+)\b.*\bzmq_ingress=(\S+)/.exec(line);
          if (m) resolve({ port: Number(m[2]), zmq: m[3] });
        }
      });
      exited.then(({ code, sig }) =>
        reject(new Error(`heraldd exited (${code ?? sig}) before starting:\n${this.logs.join('\n')}`)));
    });
    const timer = setTimeout(() => proc.kill('SIGKILL'), 30000 * SLOW);
    try {
      const { port, zmq } = await started;
      this.port = port;
      this.url = `http://127.0.0.1:${port}`;
      this.zmq = zmq;
      this.listen = `127.0.0.1:${port}`; // a restart keeps the port, so pages can reconnect
    } finally {
      clearTimeout(timer);
    }
  }

  /** SIGTERM; the daemon must exit 0 within the deadline. */
  async stop() {
    if (!this.proc) return;
    const proc = this.proc;
    this.proc = null;
    proc.kill('SIGTERM');
    const timer = setTimeout(() => proc.kill('SIGKILL'), 30000 * SLOW);
    const { code, sig } = await this.exited;
    clearTimeout(timer);
    if (code !== 0)
      throw new Error(`heraldd exited with ${code ?? sig}, not 0:\n${this.logs.slice(-30).join('\n')}`);
  }

  /** Stop and start again on the same data dir and HTTP port. */
  async restart() {
    await this.stop();
    await this.start();
  }

  /** Lines that fail a test: level=error, sanitizer reports. */
  errors() {
    return this.logs.filter((l) => (/\blevel=error\b/.test(l) || SANITIZER_RE.test(l)) &&
      !this.expectedErrors.some((re) => re.test(l)));
  }

  /** Stop, remove the temp dir, and fail on error lines in the log. */
  async close() {
    try {
      await this.stop();
    } finally {
      const errs = this.errors();
      if (!errs.length) fs.rmSync(this.dir, { recursive: true, force: true });
      if (errs.length) throw new Error(`heraldd logged errors:\n${errs.join('\n')}`);
    }
  }

  /** Publish over HTTP; returns the message id. */
  async publish(app, data, { to, ttl } = {}) {
    const body = { data };
    if (to) body.to = to;
    if (ttl) body.ttl = ttl;
    const r = await fetch(`${this.url}/v1/apps/${encodeURIComponent(app)}/messages`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${this.key}`, 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
    const j = await r.json();
    if (r.status !== 202) throw new Error(`publish ${app}: ${r.status} ${JSON.stringify(j)}`);
    return j.id;
  }

  /** Publish over ZeroMQ with the herald CLI; returns the message id. */
  publishZmq(app, data, { to } = {}) {
    const args = ['--zmq', this.zmq, '--key', this.key, '--tenant', this.tenant, 'publish',
      '--app', app];
    if (to) args.push('--to', to);
    args.push(JSON.stringify(data));
    return new Promise((resolve, reject) => {
      execFile(path.join(BUILD, 'herald'), args, { timeout: 30000 * SLOW }, (err, out, errOut) => {
        if (err) return reject(new Error(`herald publish: ${err.message}\n${errOut}`));
        const m = /"id"\s*:\s*"?(\d+)/.exec(out) || /\b(\d+)\b/.exec(out);
        if (!m) return reject(new Error(`herald publish printed no id: ${out}`));
        resolve(m[1]);
      });
    });
  }

  /** Provision: register an existing device for an app with the publish key. */
  async provision(app, device) {
    const r = await fetch(`${this.url}/v1/apps/${encodeURIComponent(app)}/registrations`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${this.key}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ device }),
    });
    if (r.status !== 201) throw new Error(`provision ${app}: ${r.status} ${await r.text()}`);
    return r.json();
  }

  /** What the broker would hand the device now (no cursor: everything pending), as ids. */
  async pendingIds(device, token) {
    const r = await fetch(`${this.url}/v1/devices/${encodeURIComponent(device)}/messages?wait=0`,
                          { headers: { Authorization: `Bearer ${token}` } });
    if (r.status !== 200) throw new Error(`poll: ${r.status} ${await r.text()}`);
    return (await r.json()).messages.map((m) => m.id);
  }

  /** /metrics as {"name{labels}": number}. */
  async metrics() {
    const text = await (await fetch(`${this.url}/metrics`)).text();
    const out = {};
    for (const line of text.split('\n')) {
      if (!line || line.startsWith('#')) continue;
      const sp = line.lastIndexOf(' ');
      out[line.slice(0, sp)] = Number(line.slice(sp + 1));
    }
    return out;
  }

  /** herald_longpoll_held and herald_held_polls, the two views of held long-polls. */
  async held() {
    const m = await this.metrics();
    return { longpoll: m.herald_longpoll_held, http: m.herald_held_polls };
  }
}

/* ------------------------------------------------------------------------------------------ */
/* a second origin: a plain HTTP server on another port */

/** Serve `pages` ({"/path": html}) on 127.0.0.1:<free port>. Returns {origin, close()}. */
export async function serveOrigin(pages) {
  const srv = http.createServer((req, res) => {
    const body = pages[new URL(req.url, 'http://x').pathname];
    if (body === undefined) {
      res.writeHead(404).end('not found');
      return;
    }
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
    res.end(body);
  });
  await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const origin = `http://127.0.0.1:${srv.address().port}`;
  return {
    origin,
    close: () => new Promise((resolve) => {
      srv.closeAllConnections?.();
      srv.close(() => resolve());
    }),
  };
}

/* ------------------------------------------------------------------------------------------ */
/* the browser */

export const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-quic',
  '--disable-default-apps',
  '--disable-domain-reliability',
  '--disable-breakpad',
  '--no-pings',
  '--metrics-recording-only',
  // Nothing leaves the machine: no name resolves, and every non-loopback URL goes to a
  // closed local port instead (loopback bypasses the proxy).
  '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
  '--proxy-server=http://127.0.0.1:9',
];

function isLoopback(u) {
  try {
    const url = new URL(u);
    if (url.protocol === 'data:' || url.protocol === 'blob:' || url.protocol === 'about:') return true;
    return url.hostname === '127.0.0.1' || url.hostname === '[::1]';
  } catch {
    return false;
  }
}

let playwright;
async function loadPlaywright() {
  if (playwright) return playwright;
  try {
    playwright = await import('playwright-core');
  } catch (e) {
    throw new Error('playwright-core is not installed: run `make browser-deps` ' +
                    `(npm ci in tests/browser): ${e.message}`);
  }
  if (!fs.existsSync(CHROMIUM))
    throw new Error(`no Chromium at ${CHROMIUM}: run scripts/deps.sh (apt-get install chromium)`);
  return playwright;
}

export class Browser {
  static async launch() {
    const { chromium } = await loadPlaywright();
    const b = new Browser();
    b.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-chromium-'));
    b.ctx = await chromium.launchPersistentContext(b.dir, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_FLAGS,
      viewport: { width: 900, height: 760 },
      timeout: 60000 * SLOW,
    });
    b.ctx.setDefaultTimeout(30000 * SLOW);
    b.requests = [];
    b.offsite = [];
    b.pageErrors = [];
    b.ctx.on('request', (r) => {
      b.requests.push({ method: r.method(), url: r.url(), page: r.frame()?.page() });
      if (!isLoopback(r.url())) b.offsite.push(r.url());
    });
    const watch = (p) => {
      p.on('pageerror', (e) => b.pageErrors.push(String(e && e.stack || e)));
      if (process.env.HERALD_TEST_VERBOSE) p.on('console', (m) => process.stderr.write(`page: ${m.text()}\n`));
    };
    b.ctx.pages().forEach(watch);
    b.ctx.on('page', watch);
    return b;
  }

  /** A page: the first (blank) one of the context, then new tabs. */
  async page() {
    const blank = this.ctx.pages().find((p) => p.url() === 'about:blank' && !p._heraldUsed);
    const p = blank || await this.ctx.newPage();
    p._heraldUsed = true;
    return p;
  }

  /** Requests a page made whose URL contains `part`. */
  requestsOf(page, part) {
    return this.requests.filter((r) => r.page === page && r.url.includes(part));
  }

  async close() {
    try {
      await this.ctx.close();
    } finally {
      fs.rmSync(this.dir, { recursive: true, force: true });
    }
    if (this.offsite.length) throw new Error(`Chromium tried to reach the network: ${this.offsite.join(', ')}`);
    if (this.pageErrors.length) throw new Error(`uncaught errors in pages:\n${this.pageErrors.join('\n')}`);
  }
}

/* ------------------------------------------------------------------------------------------ */
/* the test page */

/**
 * A page that loads herald.js from `broker` and, from its query string, makes a Herald and
 * registers apps: ?apps=mail,news&mode=&wait=&interval=&election=. Each handler records the
 * message in window.got[app] and an entry in window.log, where every fetch() the page makes is
 * also logged (so the order of "handler called" and "first request" is observable).
 * window.idb(store) reads an IndexedDB store of the client raw.
 */
export function testPage(brokerUrl) {
  return `<!doctype html>
<meta charset="utf-8"><title>herald test page</title><link rel="icon" href="data:,">
<script type="module">
window.log = [];
window.got = {};
const realFetch = window.fetch;
window.fetch = (input, init) => {
  log.push(['fetch', ((init && init.method) || 'GET') + ' ' + String(input)]);
  return realFetch(input, init);
};
const BROKER = ${JSON.stringify(brokerUrl)};
const { Herald, HeraldError } = await import(BROKER + '/v1/client/herald.js');
window.Herald = Herald;
window.HeraldError = HeraldError;
const DB = 'herald:' + new URL(BROKER).origin + '|default';
const done = (rq) => new Promise((res, rej) => { rq.onsuccess = () => res(rq.result); rq.onerror = () => rej(rq.error); });
// Only once the client has created the database: opening it first would create it empty.
window.idb = async (store) => {
  const db = await done(indexedDB.open(DB));
  try {
    const s = db.transaction(store).objectStore(store);
    if (store !== 'meta') return await done(s.getAll());
    const [k, v] = await Promise.all([done(s.getAllKeys()), done(s.getAll())]);
    return Object.fromEntries(k.map((x, i) => [x, v[i]]));
  } finally {
    db.close();
  }
};
window.idbDelete = async (store, key) => {
  const db = await done(indexedDB.open(DB));
  const t = db.transaction(store, 'readwrite');
  t.objectStore(store).delete(key);
  await new Promise((res, rej) => { t.oncomplete = res; t.onerror = () => rej(t.error); });
  db.close();
};
const q = new URLSearchParams(location.search);
const apps = (q.get('apps') || '').split(',').filter(Boolean);
if (apps.length) {
  const opts = { url: BROKER };
  for (const k of ['mode', 'election']) if (q.get(k)) opts[k] = q.get(k);
  for (const k of ['wait', 'interval']) if (q.get(k)) opts[k] = Number(q.get(k));
  const herald = new Herald(opts);
  window.herald = herald;
  window.statuses = [];
  herald.addEventListener('status', (e) => statuses.push(e.detail.status));
  window.dismissed = [];
  herald.addEventListener('dismiss', (e) => dismissed.push(...e.detail.ids));
  for (const app of apps) {
    got[app] = [];
    await herald.register(app, (m) => { log.push(['msg', app, m.id]); got[app].push(m); });
  }
  log.push(['registered']);
}
window.ready = true;
</script>`;
}

/**
 * Open the test page on the broker's own origin (fulfilled by the browser itself at
 * <broker>/__test__/page, so the broker serves nothing extra). Waits until it is ready.
 */
export async function openTestPage(browser, broker, query = '') {
  const page = await browser.page();
  const url = `${broker.url}/__test__/page`;
  await page.route(url + '*', (route) => route.fulfill({
    status: 200, contentType: 'text/html; charset=utf-8', body: testPage(broker.url),
  }));
  await page.goto(`${url}${query ? '?' + query : ''}`);
  await page.waitForFunction(() => window.ready === true, null, { timeout: 30000 * SLOW });
  return page;
}
