/**
 * herald.js — the browser client of Herald, the push broker.
 *
 * A plain ES module with no dependencies and no build step. heraldd serves it at
 * `/v1/client/herald.js`; it can also be imported from a checkout (`clients/js`, a package with
 * `"type": "module"`).
 *
 * ```js
 * import { Herald } from 'http://127.0.0.1:8470/v1/client/herald.js';
 * const herald = new Herald({ url: 'http://127.0.0.1:8470' });
 * await herald.register('mail', (msg) => show(msg));   // msg: {id, app, data, created, to?}
 * await herald.dismiss(msg.id);                         // gone here, acked at the broker
 * ```
 *
 * What it does, in one page (see README.md beside this file for the whole story):
 *  - One device per browser profile, origin and broker/tenant: created at the first
 *    `register()` (the broker makes up the id and issues its token) and kept in IndexedDB.
 *    Each `register(appid, handler)` adds the app to that device (once; later page loads make
 *    no request for apps already registered) and routes the app's messages to `handler`.
 *  - Every message received is stored in IndexedDB until `dismiss(id)`, which deletes it and
 *    acknowledges it to the broker (acks that cannot be sent now are retried). When a page
 *    loads, stored messages go to their handlers first, before any network request.
 *  - One tab of the origin pulls for all of them: the tabs elect a leader (Web Locks, or
 *    heartbeats over BroadcastChannel where Web Locks are missing); only the leader holds the
 *    long-poll, and it passes what it receives to the other tabs over BroadcastChannel. When
 *    the leader's tab closes, another tab takes over, starting from the cursor it left in
 *    IndexedDB.
 *  - Messages are handed to each tab's handlers once (deduplicated by id, also across broker
 *    restarts that return a message again); a message for an app without a handler in a tab is
 *    kept (in IndexedDB, and unacknowledged on the broker) until some page registers one.
 *  - Failures back off exponentially with jitter (0.5 s doubling up to 30 s, reset on
 *    success); going offline pauses pulling and coming back online resumes it at once.
 */

const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 30000;
/* An answer to a long-poll is waited for this long past `wait` before the request is given up. */
const POLL_GRACE_MS = 20000;
/* Heartbeat election (only where Web Locks are missing). */
const HB_EVERY_MS = 1000;
const HB_LOST_MS = 3500;
const CLAIM_MS = 400;
/* How long dismissed ids are remembered after their ack, to drop a late duplicate. */
const TOMBSTONE_MS = 7 * 24 * 3600 * 1000;
const APP_ID = /^[A-Za-z0-9._:-]{1,64}$/;

/** An HTTP or network failure. `status` is 0 when no HTTP answer came. */
export class HeraldError extends Error {
  /**
   * @param {number} status HTTP status, or 0 for a network failure
   * @param {string} code the broker's error code ("unauthorized", ...) or "network"
   * @param {string} message
   */
  constructor(status, code, message) {
    super(message || code);
    this.name = 'HeraldError';
    this.status = status;
    this.code = code;
  }

  /** True when trying again later may succeed (network, 408, 429, 5xx). */
  get transient() {
    return this.status === 0 || this.status === 408 || this.status === 429 || this.status >= 500;
  }
}

/* Message ids are decimal strings without leading zeros: shorter is smaller. */
function idCompare(a, b) {
  return a.length - b.length || (a < b ? -1 : a > b ? 1 : 0);
}

function byId(a, b) {
  return idCompare(a.id, b.id);
}

function request(rq) {
  return new Promise((resolve, reject) => {
    rq.onsuccess = () => resolve(rq.result);
    rq.onerror = () => reject(rq.error);
  });
}

function openDb(name) {
  return new Promise((resolve, reject) => {
    const rq = indexedDB.open(name, 1);
    rq.onupgradeneeded = () => {
      const db = rq.result;
      db.createObjectStore('messages', { keyPath: 'id' }).createIndex('app', 'app');
      db.createObjectStore('dismissed', { keyPath: 'id' });
      db.createObjectStore('meta');
    };
    rq.onsuccess = () => resolve(rq.result);
    rq.onerror = () => reject(rq.error);
    rq.onblocked = () => reject(new Error('herald: IndexedDB upgrade blocked by another tab'));
  });
}

function defaultUrl() {
  try {
    const u = new URL(import.meta.url);
    if (u.protocol === 'http:' || u.protocol === 'https:') return u.origin;
  } catch (e) {
    /* not loaded from a URL */
  }
  throw new TypeError('Herald: options.url is required');
}

/**
 * A connection of this page to a Herald broker: the device, the message center and the pull.
 *
 * Events (it is an EventTarget): `dismiss` (detail `{ids}`: messages dismissed in any tab),
 * `message` (detail: a message just handed to a handler in this tab), `leader` (detail
 * `{leader}`: this tab started or stopped pulling for all tabs), `status` (detail `{status,
 * delay?, error?}` with status "connecting", "connected", "backoff", "offline" or "closed").
 */
export class Herald extends EventTarget {
  /**
   * @param {object} [options]
   * @param {string} [options.url] the broker's base URL, e.g. "http://127.0.0.1:8470"; default:
   *   the origin this module was loaded from
   * @param {string} [options.tenant="default"] the tenant whose apps these are
   * @param {"longpoll"|"interval"} [options.mode="longpoll"] hold a long-poll open, or pull
   *   every `interval` seconds
   * @param {number} [options.wait=25] seconds the broker may hold a long-poll
   * @param {number} [options.interval=30] seconds between pulls in "interval" mode
   * @param {"auto"|"locks"|"broadcast"} [options.election="auto"] how tabs pick the one that
   *   pulls: Web Locks when the browser has them ("auto"), or heartbeats over BroadcastChannel
   */
  constructor(options = {}) {
    super();
    const base = new URL(options.url || defaultUrl());
    this.url = base.href.replace(/\/+$/, '');
    this.tenant = options.tenant || 'default';
    this.mode = options.mode || 'longpoll';
    if (this.mode !== 'longpoll' && this.mode !== 'interval')
      throw new TypeError('Herald: mode must be "longpoll" or "interval"');
    this.wait = options.wait ?? 25;
    this.interval = options.interval ?? 30;
    const election = options.election || 'auto';
    this._useLocks = election !== 'broadcast' && typeof navigator !== 'undefined' &&
      !!navigator.locks;
    if (election === 'locks' && !this._useLocks)
      throw new TypeError('Herald: this browser has no Web Locks');

    this._key = `${base.origin}|${this.tenant}`;
    this._handlers = new Map();
    this._delivered = new Set();
    this._closed = false;
    this._leader = false;
    this._started = false;
    this._registering = 0;
    this._status = 'connecting';
    this._online = typeof navigator === 'undefined' || navigator.onLine !== false;
    this._poll = null; /* AbortController of the request in flight */
    this._wakers = new Set(); /* end the current sleeps early */
    this._acks = Promise.resolve(true);
    this._stop = new AbortController(); /* aborts everything at close() */
    this._db = openDb('herald:' + this._key);
    this._tabId = Math.random().toString(36).slice(2) + Date.now().toString(36);
    this._chan = new BroadcastChannel('herald:' + this._key);
    this._chan.onmessage = (e) => this._onChannel(e.data);

    this._onOnline = () => {
      this._online = true;
      this._poke();
    };
    this._onOffline = () => {
      this._online = false;
      this._setStatus('offline');
      this._poke();
    };
    this._onPageHide = () => {
      if (this._leader && !this._useLocks) this._post({ type: 'bye', id: this._tabId });
    };
    if (typeof addEventListener === 'function') {
      addEventListener('online', this._onOnline);
      addEventListener('offline', this._onOffline);
      addEventListener('pagehide', this._onPageHide);
    }
  }

  /** True while this tab is the one pulling for every tab of the origin. */
  get isLeader() {
    return this._leader;
  }

  /** "connecting", "connected", "backoff", "offline" or "closed". */
  get status() {
    return this._status;
  }

  /**
   * Register the app with the broker (the first call creates this browser's device) and route
   * its messages to `handler` in this page. Stored, undismissed messages of the app are handed
   * to the handler before any request is made. Registering again replaces the handler (what
   * this page already handed out is not handed out again).
   *
   * Pulling starts once no register() call is pending any more. A failure the broker may
   * recover from (network, 429, 5xx) is retried with backoff; others reject.
   *
   * @param {string} appid the app's id (1-64 of A-Z a-z 0-9 . _ : -)
   * @param {(message: {id: string, app: string, data: any, created: number, to?: string}) => void} handler
   *   called once per message in this page; the message stays until dismiss(message.id)
   * @returns {Promise<{device: string, app: string}>}
   */
  async register(appid, handler) {
    if (typeof appid !== 'string' || !APP_ID.test(appid))
      throw new TypeError('Herald: appid must be 1-64 of A-Z a-z 0-9 . _ : -');
    if (typeof handler !== 'function') throw new TypeError('Herald: handler must be a function');
    if (this._closed) throw new Error('Herald: closed');
    this._registering++;
    try {
      this._handlers.set(appid, handler);
      this._deliver(await this.list(appid));
      try {
        const device = await this._retry(() => this._lock('register', () => this._ensureApp(appid)));
        return { device, app: appid };
      } catch (e) {
        if (this._handlers.get(appid) === handler) this._handlers.delete(appid);
        throw e;
      }
    } finally {
      this._registering--;
      this._maybeStart();
    }
  }

  /**
   * The undismissed messages stored in this browser, oldest first.
   * @param {string} [appid] only this app's
   * @returns {Promise<Array<{id: string, app: string, data: any, created: number, to?: string}>>}
   */
  async list(appid) {
    const db = await this._db;
    const store = db.transaction('messages').objectStore('messages');
    const all = await request(appid === undefined ? store.getAll() : store.index('app').getAll(appid));
    return all.sort(byId);
  }

  /**
   * Dismiss messages: delete them from IndexedDB (in every tab: they get a `dismiss` event) and
   * acknowledge them to the broker, which then never returns them again. An ack that cannot be
   * sent now is kept and retried.
   * @param {string|string[]} ids
   * @returns {Promise<boolean>} whether the broker has acknowledged them yet
   */
  async dismiss(ids) {
    ids = [].concat(ids).map(String);
    if (!ids.length) return true;
    const db = await this._db;
    await this._tx(db, ['messages', 'dismissed'], 'readwrite', (t) => {
      const now = Date.now();
      for (const id of ids) {
        t.objectStore('messages').delete(id);
        t.objectStore('dismissed').put({ id, acked: false, at: now });
      }
    });
    this._post({ type: 'dismissed', ids });
    this._emit('dismiss', { ids });
    return this._flushAcks();
  }

  /** Stop pulling, leave the election and release every resource. The object is unusable after. */
  close() {
    if (this._closed) return;
    if (this._leader && !this._useLocks) this._post({ type: 'bye', id: this._tabId });
    this._closed = true;
    this._leader = false;
    this._stop.abort();
    this._poke();
    if (this._releaseLock) this._releaseLock();
    clearInterval(this._hbTimer);
    if (typeof removeEventListener === 'function') {
      removeEventListener('online', this._onOnline);
      removeEventListener('offline', this._onOffline);
      removeEventListener('pagehide', this._onPageHide);
    }
    this._chan.close();
    this._db.then((db) => db.close(), () => {});
    this._setStatus('closed');
  }

  /* ---------------------------------------------------------------------------------------- */
  /* the message center */

  /* Hand records to this page's handlers, each id once per page. */
  _deliver(records) {
    for (const m of [...records].sort(byId)) {
      if (this._delivered.has(m.id)) continue;
      const h = this._handlers.get(m.app);
      if (!h) continue; /* kept in IndexedDB for a page that registers a handler */
      this._delivered.add(m.id);
      try {
        h(m);
      } catch (e) {
        setTimeout(() => {
          throw e;
        });
      }
      this._emit('message', m);
    }
  }

  _onChannel(msg) {
    if (this._closed || !msg || typeof msg !== 'object') return;
    switch (msg.type) {
      case 'messages':
        this._deliver(msg.messages || []);
        break;
      case 'dismissed':
        this._emit('dismiss', { ids: msg.ids || [] });
        break;
      case 'apps':
        /* Another tab added an app to the device: a held poll does not watch it yet. */
        if (this._leader) this._poke();
        break;
      case 'status':
        if (!this._leader) this._setStatus(msg.status);
        break;
      case 'hello':
        if (this._leader) this._post({ type: 'status', status: this._status });
        break;
      case 'hb':
      case 'claim':
      case 'bye':
        this._onElection(msg);
        break;
    }
  }

  _post(msg) {
    if (!this._closed) this._chan.postMessage(msg);
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  /* The leader's status is every tab's: it is passed on to the followers. */
  _setStatus(status, extra = {}) {
    if (this._status === 'closed') return;
    const changed = this._status !== status;
    this._status = status;
    if (this._leader && changed) this._post({ type: 'status', status });
    this._emit('status', { status, ...extra });
  }

  /* ---------------------------------------------------------------------------------------- */
  /* storage */

  _tx(db, stores, mode, fn) {
    return new Promise((resolve, reject) => {
      const t = db.transaction(stores, mode);
      let out;
      t.oncomplete = () => resolve(out);
      t.onerror = () => reject(t.error);
      t.onabort = () => reject(t.error || new Error('herald: IndexedDB transaction aborted'));
      Promise.resolve(fn(t)).then((v) => (out = v), (e) => {
        try {
          t.abort();
        } catch (_) {
          /* already finished */
        }
        reject(e);
      });
    });
  }

  async _meta() {
    const db = await this._db;
    const s = db.transaction('meta').objectStore('meta');
    const [device, token, apps, cursor] = await Promise.all(
      ['device', 'token', 'apps', 'cursor'].map((k) => request(s.get(k))));
    return { device, token, apps: apps || [], cursor };
  }

  /* Store what a poll returned that is new here, and the cursor, in one transaction. */
  async _ingest(messages, cursor) {
    const db = await this._db;
    const fresh = await this._tx(db, ['messages', 'dismissed', 'meta'], 'readwrite', async (t) => {
      const ms = t.objectStore('messages');
      const ds = t.objectStore('dismissed');
      const meta = t.objectStore('meta');
      const out = [];
      const seen = await Promise.all(messages.map((m) =>
        Promise.all([request(ms.getKey(m.id)), request(ds.getKey(m.id))])));
      messages.forEach((m, i) => {
        if (seen[i][0] !== undefined || seen[i][1] !== undefined) return; /* a duplicate */
        const rec = { id: String(m.id), app: m.app, data: m.data, created: m.created };
        if (m.to !== undefined) rec.to = m.to;
        ms.put(rec);
        out.push(rec);
      });
      if (cursor !== undefined && cursor !== null) {
        const old = await request(meta.get('cursor'));
        if (old === undefined || idCompare(String(cursor), old) > 0) meta.put(String(cursor), 'cursor');
      }
      return out;
    });
    if (fresh.length) {
      this._post({ type: 'messages', messages: fresh });
      this._deliver(fresh);
    }
  }

  /* ---------------------------------------------------------------------------------------- */
  /* HTTP */

  async _http(method, path, { body, token, signal } = {}) {
    const headers = {};
    if (token) headers.Authorization = 'Bearer ' + token;
    const init = { method, headers, cache: 'no-store', signal: signal || this._stop.signal };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let r;
    try {
      r = await fetch(this.url + path, init);
    } catch (e) {
      if (e && e.name === 'AbortError') throw e;
      throw new HeraldError(0, 'network', String((e && e.message) || e));
    }
    let j = null;
    try {
      j = await r.json();
    } catch (e) {
      if (e && e.name === 'AbortError') throw e;
    }
    if (!r.ok) throw new HeraldError(r.status, (j && j.error) || 'http_' + r.status, j && j.message);
    return j;
  }

  /* Run fn under a lock shared by every tab of the origin (where Web Locks exist). */
  _lock(name, fn) {
    if (!this._useLocks) return fn();
    return navigator.locks.request(`herald-${name}-${this._key}`, { signal: this._stop.signal }, fn);
  }

  /* Retry fn while it fails transiently, backing off; other failures reject. */
  async _retry(fn) {
    for (let n = 1; ; n++) {
      try {
        return await fn();
      } catch (e) {
        if (this._closed || !(e instanceof HeraldError) || !e.transient) throw e;
        await this._sleep(backoff(n));
      }
    }
  }

  /* Make sure the device exists and is registered for appid. Returns the device id. Runs under
   * the 'register' lock; without Web Locks, a device another tab saved meanwhile wins and
   * ours is abandoned (compare-and-set on the stored device). */
  async _ensureApp(appid) {
    for (let attempt = 0; attempt < 5; attempt++) {
      const meta = await this._meta();
      if (meta.device && meta.apps.includes(appid)) return meta.device;
      let res;
      if (!meta.device) {
        const q = '?tenant=' + encodeURIComponent(this.tenant);
        res = await this._http('POST', `/v1/apps/${encodeURIComponent(appid)}/registrations${q}`);
      } else {
        try {
          res = await this._http('POST', `/v1/apps/${encodeURIComponent(appid)}/registrations`,
                                 { body: { device: meta.device }, token: meta.token });
        } catch (e) {
          if (!(e instanceof HeraldError) || e.status !== 401) throw e;
          /* The broker no longer knows the device (its token was revoked, or its data is
           * gone): start over with a new one, for every app the old one had. */
          const lost = await this._resetDevice(meta.token);
          const device = await this._ensureApp(appid);
          for (const other of lost) if (other !== appid) await this._ensureApp(other);
          return device;
        }
      }
      const db = await this._db;
      const ok = await this._tx(db, ['meta'], 'readwrite', async (t) => {
        const s = t.objectStore('meta');
        const [device, apps] = await Promise.all([request(s.get('device')), request(s.get('apps'))]);
        if (device !== meta.device) return false; /* another tab got there first */
        if (!device) s.delete('cursor');
        s.put(res.device, 'device');
        s.put(res.token, 'token');
        const list = device ? apps || [] : [];
        if (!list.includes(appid)) list.push(appid);
        s.put(list, 'apps');
        return true;
      });
      if (ok) {
        this._post({ type: 'apps' });
        if (this._leader) this._poke();
        return res.device;
      }
    }
    throw new Error('Herald: could not settle the device with the other tabs');
  }

  /* Forget the device whose token the broker refused (unless another tab already did), then
   * register the apps it had again. */
  async _resetDevice(badToken) {
    const db = await this._db;
    const apps = await this._tx(db, ['meta'], 'readwrite', async (t) => {
      const s = t.objectStore('meta');
      if ((await request(s.get('token'))) !== badToken) return null;
      const list = (await request(s.get('apps'))) || [];
      for (const k of ['device', 'token', 'apps', 'cursor']) s.delete(k);
      return list;
    });
    return apps || [];
  }

  /* ---------------------------------------------------------------------------------------- */
  /* acks */

  /* Send every unsent ack; returns whether all were acknowledged. Calls are serialized. */
  _flushAcks() {
    this._acks = this._acks.then(() => this._sendAcks(), () => this._sendAcks());
    return this._acks;
  }

  async _sendAcks() {
    if (this._closed) return false;
    const db = await this._db;
    const all = await request(db.transaction('dismissed').objectStore('dismissed').getAll());
    const pending = all.filter((d) => !d.acked).map((d) => d.id);
    if (!pending.length) return true;
    const meta = await this._meta();
    if (!meta.device) return false;
    try {
      for (let i = 0; i < pending.length; i += 1000) {
        const ids = pending.slice(i, i + 1000);
        await this._http('POST', `/v1/devices/${encodeURIComponent(meta.device)}/acks`,
                         { body: { ids }, token: meta.token });
        await this._tx(db, ['dismissed'], 'readwrite', (t) => {
          const now = Date.now();
          for (const id of ids) t.objectStore('dismissed').put({ id, acked: true, at: now });
        });
      }
      return true;
    } catch (e) {
      return false; /* kept: retried after the next successful poll */
    }
  }

  async _pruneTombstones() {
    const db = await this._db;
    const old = Date.now() - TOMBSTONE_MS;
    await this._tx(db, ['dismissed'], 'readwrite', async (t) => {
      const s = t.objectStore('dismissed');
      for (const d of await request(s.getAll())) if (d.acked && d.at < old) s.delete(d.id);
    });
  }

  /* ---------------------------------------------------------------------------------------- */
  /* leader election */

  _maybeStart() {
    if (this._started || this._closed) return;
    /* Wait for a moment without pending register() calls, so that a page registering several
     * apps one after the other gets all its stored messages before the first poll. */
    setTimeout(() => {
      if (this._started || this._closed || this._registering > 0 || this._handlers.size === 0)
        return;
      this._started = true;
      this._post({ type: 'hello' });
      this._elect();
    }, 0);
  }

  _elect() {
    if (this._useLocks) {
      navigator.locks.request(`herald-leader-${this._key}`, { signal: this._stop.signal }, () => {
        if (this._closed) return undefined;
        return new Promise((release) => {
          this._releaseLock = release;
          this._becomeLeader();
        });
      }).catch(() => {});
      return;
    }
    this._lastHb = 0;
    this._claiming = false;
    this._hbTimer = setInterval(() => this._electionTick(), HB_EVERY_MS);
    setTimeout(() => this._electionTick(), Math.random() * 200);
  }

  _electionTick() {
    if (this._closed) return;
    if (this._leader) {
      this._post({ type: 'hb', id: this._tabId });
    } else if (!this._claiming && Date.now() - this._lastHb > HB_LOST_MS) {
      this._claiming = true;
      this._post({ type: 'claim', id: this._tabId });
      setTimeout(() => {
        if (this._claiming && !this._closed) {
          this._claiming = false;
          this._post({ type: 'hb', id: this._tabId });
          this._becomeLeader();
        }
      }, CLAIM_MS);
    }
  }

  /* Heartbeat election: the highest tab id wins any contest. */
  _onElection(msg) {
    if (this._useLocks || !this._started || msg.id === this._tabId) return;
    const higher = msg.id > this._tabId;
    if (msg.type === 'bye') {
      this._lastHb = 0;
      setTimeout(() => this._electionTick(), Math.random() * 100);
    } else if (msg.type === 'hb') {
      this._lastHb = Date.now();
      if (higher) this._claiming = false;
      if (this._leader && higher) this._stepDown();
    } else if (msg.type === 'claim') {
      if (this._leader) this._post({ type: 'hb', id: this._tabId });
      else if (this._claiming && higher) {
        this._claiming = false;
        this._lastHb = Date.now();
      }
    }
  }

  _stepDown() {
    this._leader = false;
    this._emit('leader', { leader: false });
    this._restartPoll();
  }

  async _becomeLeader() {
    if (this._closed) return;
    this._leader = true;
    this._emit('leader', { leader: true });
    /* A leader that died between storing messages and broadcasting them: they are in
     * IndexedDB, so take them from there. */
    this._deliver(await this.list());
    this._pruneTombstones().catch(() => {});
    this._flushAcks();
    this._pollLoop().catch((e) => setTimeout(() => {
      throw e;
    }));
  }

  /* ---------------------------------------------------------------------------------------- */
  /* pulling (leader only) */

  /* Wake a sleep and abort the request in flight, so the loop looks at its state again. */
  _poke() {
    for (const wake of [...this._wakers]) wake();
    this._restartPoll();
  }

  _restartPoll() {
    if (this._poll) this._poll.abort();
  }

  _sleep(ms) {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this._wakers.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this._wakers.add(done);
    });
  }

  async _pollLoop() {
    let failures = 0;
    /* The first poll, and the first after a failure, does not wait: its answer says at once
     * that the broker is reachable (a held poll says nothing until it ends). */
    let primed = false;
    while (this._leader && !this._closed) {
      if (!this._online) {
        this._setStatus('offline');
        await this._sleep(BACKOFF_MAX_MS); /* until the online event pokes us */
        continue;
      }
      const meta = await this._meta();
      if (!meta.device) {
        /* The device was reset and not registered again yet: do it for this page's apps. */
        try {
          for (const app of [...this._handlers.keys()])
            await this._lock('register', () => this._ensureApp(app));
        } catch (e) {
          failures++;
          this._setStatus('backoff', { delay: backoff(failures), error: e });
          await this._sleep(backoff(failures));
        }
        continue;
      }
      const wait = this.mode === 'longpoll' && primed ? this.wait : 0;
      const q = new URLSearchParams({ wait: String(wait) });
      if (meta.cursor !== undefined) q.set('cursor', meta.cursor);
      const ctl = new AbortController();
      this._poll = ctl;
      const timer = setTimeout(() => ctl.abort(), wait * 1000 + POLL_GRACE_MS);
      if (failures === 0 && this._status !== 'connected') this._setStatus('connecting');
      try {
        const body = await this._http('GET',
          `/v1/devices/${encodeURIComponent(meta.device)}/messages?${q}`,
          { token: meta.token, signal: ctl.signal });
        await this._ingest(Array.isArray(body && body.messages) ? body.messages : [],
                           body && body.cursor);
        failures = 0;
        primed = true;
        this._setStatus('connected');
        this._flushAcks();
        if (this.mode === 'interval') await this._sleep(this.interval * 1000);
      } catch (e) {
        if (this._closed || !this._leader) break;
        /* Aborted on purpose (apps changed, online/offline, no answer in time): look again. */
        if (e && e.name === 'AbortError') continue;
        if (e instanceof HeraldError && e.status === 401) {
          /* The token is refused: a new device for every app the old one had. */
          try {
            await this._lock('register', async () => {
              const lost = await this._resetDevice(meta.token);
              for (const app of new Set([...lost, ...this._handlers.keys()]))
                await this._ensureApp(app);
            });
            continue;
          } catch (e2) {
            e = e2;
          }
        }
        failures++;
        primed = false;
        const delay = backoff(failures);
        this._setStatus('backoff', { delay, error: e });
        await this._sleep(delay);
      } finally {
        clearTimeout(timer);
        if (this._poll === ctl) this._poll = null;
      }
    }
  }
}

/* Exponential backoff with "equal jitter": half the step fixed, half random. */
function backoff(n) {
  const step = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** Math.min(n - 1, 16));
  return step / 2 + Math.random() * (step / 2);
}

export default Herald;
