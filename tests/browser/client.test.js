// client.test.js — the browser client (clients/js/herald.js, as heraldd serves it) in Debian's
// headless Chromium against a real heraldd: registration and routing by app, HTTP and ZeroMQ
// publishing, IndexedDB storage and dismissal, replay before the network on reload, one pull
// shared by many tabs, leader takeover, broker restarts, offline/online, interval mode.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Broker, Browser, SLOW, openTestPage, waitFor } from './lib/harness.js';

const TIMEOUT = 120000 * SLOW;

/* Run fn with a fresh broker and browser; both are closed (and checked) whatever happens. */
async function withSetup(opts, fn) {
  const broker = await Broker.start(opts);
  let browser;
  let failure;
  try {
    browser = await Browser.launch();
    await fn(broker, browser);
  } catch (e) {
    failure = e;
  }
  for (const c of [browser, broker]) {
    try {
      if (c) await c.close();
    } catch (e) {
      failure = failure || e;
    }
  }
  if (failure) {
    if (process.env.HERALD_TEST_VERBOSE || !failure.logged)
      failure.message += `\n--- heraldd log (last 40 lines) ---\n${broker.logs.slice(-40).join('\n')}`;
    throw failure;
  }
}

const got = (page, app) => page.evaluate((a) => (window.got[a] || []).map((m) => m.id), app);

async function gotIds(page, app, want, what) {
  return waitFor(async () => {
    const g = await got(page, app);
    return g.length >= want.length ? g : null;
  }, { what: what || `${app} to get ${want}` });
}

/* The tab holding the long-poll for all of them (exactly one must, once settled). */
async function leaders(pages) {
  const flags = await Promise.all(pages.map((p) => p.evaluate(() => window.herald.isLeader)));
  return pages.filter((_, i) => flags[i]);
}

async function connected(page) {
  await waitFor(() => page.evaluate(() => window.herald.status === 'connected'),
                { what: 'the client to be connected' });
}

test('each app handler gets only its own messages, over HTTP and ZeroMQ; an app without a handler is kept', { timeout: TIMEOUT }, async () => {
  await withSetup({}, async (broker, browser) => {
    const page = await openTestPage(browser, broker, 'apps=mail,news');
    await connected(page);
    const meta = await page.evaluate(() => window.idb('meta'));
    assert.match(meta.device, /^[A-Za-z0-9_-]{16,}$/, 'the broker made up the device id');
    assert.deepEqual(meta.apps, ['mail', 'news']);
    // The same device carries both apps: one registration created it, the second added to it.
    const regs = browser.requestsOf(page, '/registrations');
    assert.equal(regs.length, 2);

    // "chat" is registered for the device by the back end, but this page has no handler for it.
    await broker.provision('chat', meta.device);
    const m1 = await broker.publish('mail', { title: 'mail over http' });
    const n1 = await broker.publishZmq('news', { title: 'news over zmq' });
    const c1 = await broker.publish('chat', { title: 'nobody listens' });
    const m2 = await broker.publishZmq('mail', { title: 'mail over zmq' });
    const n2 = await broker.publish('news', { title: 'news over http' });
    const other = await broker.publish('weather', { title: 'not registered at all' });

    assert.deepEqual(await gotIds(page, 'mail', [m1, m2]), [m1, m2]);
    assert.deepEqual(await gotIds(page, 'news', [n1, n2]), [n1, n2]);
    const mail = await page.evaluate(() => window.got.mail.map((m) => [m.app, m.data.title]));
    assert.deepEqual(mail, [['mail', 'mail over http'], ['mail', 'mail over zmq']]);
    const news = await page.evaluate(() => window.got.news.map((m) => [m.app, m.data.title]));
    assert.deepEqual(news, [['news', 'news over zmq'], ['news', 'news over http']]);

    // Everything received is in IndexedDB, the chat message too (kept for a page that wants it),
    // and nothing was acked: the broker still has all of them.
    const stored = await waitFor(async () => {
      const s = (await page.evaluate(() => window.idb('messages'))).map((m) => m.id);
      return s.includes(c1) ? s : null;
    }, { what: 'the chat message to be stored' });
    assert.deepEqual(stored.sort(), [m1, m2, n1, n2, c1].sort());
    assert.ok(!stored.includes(other));
    assert.deepEqual((await broker.pendingIds(meta.device, meta.token)).sort(),
                     [m1, m2, n1, n2, c1].sort());
    // Handlers ran once each; no handler ever saw the chat message.
    const log = await page.evaluate(() => window.log.filter((e) => e[0] === 'msg'));
    assert.equal(log.length, 4);

    // A handler registered later gets the kept message at once, from IndexedDB.
    await page.evaluate(() => {
      window.got.chat = [];
      return window.herald.register('chat', (m) => window.got.chat.push(m));
    });
    assert.deepEqual(await gotIds(page, 'chat', [c1]), [c1]);
  });
});

test('dismiss deletes the IndexedDB record and the broker never returns the message again', { timeout: TIMEOUT }, async () => {
  await withSetup({}, async (broker, browser) => {
    const page = await openTestPage(browser, broker, 'apps=mail');
    const other = await openTestPage(browser, broker, 'apps=mail');
    await connected(page);
    const a = await broker.publish('mail', { title: 'a' });
    const b = await broker.publish('mail', { title: 'b' });
    await gotIds(page, 'mail', [a, b]);
    await gotIds(other, 'mail', [a, b]);

    assert.equal(await page.evaluate((id) => window.herald.dismiss(id), a), true,
                 'the broker acknowledged the dismissal');
    const stored = (await page.evaluate(() => window.idb('messages'))).map((m) => m.id);
    assert.deepEqual(stored, [b]);
    const tomb = await page.evaluate(() => window.idb('dismissed'));
    assert.deepEqual(tomb.map((d) => [d.id, d.acked]), [[a, true]]);
    // The other tab heard of it.
    await waitFor(() => other.evaluate((id) => window.dismissed.includes(id), a),
                  { what: 'the other tab to get the dismiss event' });

    const meta = await page.evaluate(() => window.idb('meta'));
    assert.deepEqual(await broker.pendingIds(meta.device, meta.token), [b]);
    // Also after a restart of the broker: the ack is durable.
    await broker.restart();
    assert.deepEqual(await broker.pendingIds(meta.device, meta.token), [b]);
    assert.deepEqual(await page.evaluate(() => window.herald.list('mail')).then((l) => l.map((m) => m.id)), [b]);
  });
});

test('on reload, stored messages reach their handlers before any request; each is shown once', { timeout: TIMEOUT }, async () => {
  await withSetup({}, async (broker, browser) => {
    const page = await openTestPage(browser, broker, 'apps=mail,news');
    await connected(page);
    const m1 = await broker.publish('mail', { title: 'kept' });
    const m2 = await broker.publish('mail', { title: 'dismissed' });
    const n1 = await broker.publish('news', { title: 'kept too' });
    await gotIds(page, 'mail', [m1, m2]);
    await gotIds(page, 'news', [n1]);
    await page.evaluate((id) => window.herald.dismiss(id), m2);
    const device = (await page.evaluate(() => window.idb('meta'))).device;

    await page.reload();
    await page.waitForFunction(() => window.ready === true);
    const log = await page.evaluate(() => window.log);
    const firstFetch = log.findIndex((e) => e[0] === 'fetch');
    const shown = log.filter((e) => e[0] === 'msg');
    assert.deepEqual(shown.map((e) => e[2]).sort(), [m1, n1].sort(), 'undismissed ones, once each');
    assert.ok(firstFetch === -1 || log.indexOf(shown[shown.length - 1]) < firstFetch,
              `handlers ran before the first request: ${JSON.stringify(log)}`);
    // Known apps are not registered again; the device is the same.
    await connected(page);
    const fetches = (await page.evaluate(() => window.log)).filter((e) => e[0] === 'fetch');
    assert.ok(fetches.length > 0 && fetches.every((e) => /\/messages\?/.test(e[1])),
              `only polls after a reload: ${JSON.stringify(fetches)}`);
    assert.match(fetches[0][1], /[?&]cursor=\d+/, 'the poll resumes from the stored cursor');
    assert.equal((await page.evaluate(() => window.idb('meta'))).device, device);

    // A second tab, reloaded while the first one pulls: it follows, so it makes no request
    // at all, and its handlers get the stored messages from IndexedDB.
    const follower = await openTestPage(browser, broker, 'apps=mail,news');
    await gotIds(follower, 'mail', [m1]);
    await follower.reload();
    await follower.waitForFunction(() => window.ready === true);
    assert.deepEqual((await gotIds(follower, 'mail', [m1])), [m1]);
    assert.deepEqual((await gotIds(follower, 'news', [n1])), [n1]);
    assert.equal(await follower.evaluate(() => window.herald.isLeader), false);
    assert.deepEqual(await follower.evaluate(() => window.log.filter((e) => e[0] === 'fetch')), []);
    await follower.close();

    // A client that lost its cursor polls without one: the broker returns every pending
    // message again, and the ones already here are not shown twice.
    await page.evaluate(() => window.idbDelete('meta', 'cursor'));
    await page.reload();
    await page.waitForFunction(() => window.ready === true);
    await connected(page);
    const m3 = await broker.publish('mail', { title: 'new' });
    await gotIds(page, 'mail', [m1, m3]);
    const after = await page.evaluate(() => window.log);
    const polls = after.filter((e) => e[0] === 'fetch');
    assert.doesNotMatch(polls[0][1], /cursor=/, 'first poll without a cursor');
    assert.deepEqual(after.filter((e) => e[0] === 'msg').map((e) => e[2]).sort(), [m1, m3, n1].sort());
  });
});

test('three tabs hold exactly one long-poll; closing the leader hands over with nothing lost', { timeout: TIMEOUT }, async () => {
  await withSetup({}, async (broker, browser) => {
    const pages = [];
    for (let i = 0; i < 3; i++) pages.push(await openTestPage(browser, broker, 'apps=mail'));
    const [leader] = await waitFor(async () => {
      const l = await leaders(pages);
      return l.length === 1 ? l : null;
    }, { what: 'one leader among three tabs' });
    await connected(leader);
    await waitFor(async () => {
      const h = await broker.held();
      return h.longpoll === 1 && h.http === 1;
    }, { what: 'one held long-poll at the broker' });
    // Only the leader ever polled; every tab has the same device.
    for (const p of pages)
      assert.equal(browser.requestsOf(p, '/messages?').length > 0, p === leader,
                   'only the leader tab polls');
    const devices = await Promise.all(pages.map((p) => p.evaluate(() => window.idb('meta').then((m) => m.device))));
    assert.equal(new Set(devices).size, 1, 'one device for all tabs');

    const a = await broker.publish('mail', { title: 'to all tabs' });
    for (const p of pages) assert.deepEqual(await gotIds(p, 'mail', [a]), [a]);
    // The leader polls again after each answer: right after a message there may be a moment
    // with none held, never more than one.
    const h = await broker.held();
    assert.ok(h.longpoll <= 1 && h.http <= 1, `at most one held poll after a message: ${JSON.stringify(h)}`);
    await waitFor(async () => {
      const held = await broker.held();
      assert.ok(held.longpoll <= 1 && held.http <= 1, `at most one held poll: ${JSON.stringify(held)}`);
      return held.longpoll === 1 && held.http === 1;
    }, { what: 'still one held poll after a message' });

    // Close the leader; publish while the others elect a new one.
    await leader.close({ runBeforeUnload: false });
    const rest = pages.filter((p) => p !== leader);
    const b = await broker.publish('mail', { title: 'during the handover' });
    const c = await broker.publishZmq('mail', { title: 'right after' });
    const [next] = await waitFor(async () => {
      const l = await leaders(rest);
      return l.length === 1 ? l : null;
    }, { what: 'a new leader' });
    await connected(next);
    for (const p of rest) assert.deepEqual(await gotIds(p, 'mail', [a, b, c]), [a, b, c]);
    await waitFor(async () => {
      const held = await broker.held();
      return held.longpoll === 1 && held.http === 1;
    }, { what: 'one held long-poll again' });
  });
});

test('the client reconnects after a broker restart mid-poll and shows each message once', { timeout: TIMEOUT }, async () => {
  await withSetup({}, async (broker, browser) => {
    const page = await openTestPage(browser, broker, 'apps=mail');
    await connected(page);
    const a = await broker.publish('mail', { title: 'before, dismissed while down' });
    const b = await broker.publish('mail', { title: 'before, kept' });
    await gotIds(page, 'mail', [a, b]);
    await waitFor(async () => (await broker.held()).longpoll === 1, { what: 'a held poll' });
    const meta = await page.evaluate(() => window.idb('meta'));

    await broker.stop();
    await waitFor(() => page.evaluate(() => window.statuses.includes('backoff')),
                  { what: 'the client to back off' });
    // While the broker is down: dismiss "a" (the ack cannot go out: it stays pending), and
    // make the client forget its cursor, so that after the restart the broker hands it "a"
    // and "b" again. Neither may be shown again; the pending ack must reach the broker.
    assert.equal(await page.evaluate((id) => window.herald.dismiss(id), a), false, 'ack pending');
    await page.evaluate(() => window.idbDelete('meta', 'cursor'));
    await broker.start();
    const c = await broker.publish('mail', { title: 'after' });
    const d = await broker.publishZmq('mail', { title: 'after, zmq' });
    assert.deepEqual(await gotIds(page, 'mail', [a, b, c, d]), [a, b, c, d]);
    await connected(page);
    const shown = (await page.evaluate(() => window.log)).filter((e) => e[0] === 'msg').map((e) => e[2]);
    assert.deepEqual(shown, [a, b, c, d]);
    const polls = browser.requestsOf(page, '/messages?');
    assert.ok(polls.some((r) => !/cursor=/.test(r.url)), 'polled without a cursor after the restart');
    await waitFor(async () => !(await broker.pendingIds(meta.device, meta.token)).includes(a),
                  { what: 'the pending ack to reach the broker' });
    assert.deepEqual((await page.evaluate(() => window.herald.list())).map((m) => m.id), [b, c, d]);

    // A reload shows the undismissed ones, once.
    await page.reload();
    await page.waitForFunction(() => window.ready === true);
    await connected(page);
    const again = (await page.evaluate(() => window.log)).filter((e) => e[0] === 'msg').map((e) => e[2]);
    assert.deepEqual(again, [b, c, d]);
  });
});

test('offline pauses pulling and online resumes it', { timeout: TIMEOUT }, async () => {
  await withSetup({}, async (broker, browser) => {
    const page = await openTestPage(browser, broker, 'apps=mail');
    await connected(page);
    await browser.ctx.setOffline(true);
    await waitFor(() => page.evaluate(() => window.herald.status === 'offline'),
                  { what: 'status offline' });
    await waitFor(async () => (await broker.held()).longpoll === 0,
                  { what: 'the held poll to be dropped' });
    const a = await broker.publish('mail', { title: 'while offline' });
    await browser.ctx.setOffline(false);
    assert.deepEqual(await gotIds(page, 'mail', [a]), [a]);
    await connected(page);
  });
});

test('interval mode pulls without holding', { timeout: TIMEOUT }, async () => {
  await withSetup({}, async (broker, browser) => {
    const page = await openTestPage(browser, broker, 'apps=mail&mode=interval&interval=1');
    await connected(page);
    const a = await broker.publish('mail', { title: 'pulled' });
    assert.deepEqual(await gotIds(page, 'mail', [a]), [a]);
    const polls = browser.requestsOf(page, '/messages?');
    assert.ok(polls.length >= 2 && polls.every((r) => /[?&]wait=0\b/.test(r.url)), 'polls with wait=0');
    assert.equal((await broker.held()).longpoll, 0);
  });
});

test('without Web Locks, tabs elect a leader over BroadcastChannel', { timeout: TIMEOUT }, async () => {
  await withSetup({}, async (broker, browser) => {
    const pages = [];
    for (let i = 0; i < 2; i++) pages.push(await openTestPage(browser, broker, 'apps=mail&election=broadcast'));
    const [leader] = await waitFor(async () => {
      const l = await leaders(pages);
      return l.length === 1 ? l : null;
    }, { what: 'one leader' });
    await connected(leader);
    await waitFor(async () => (await broker.held()).longpoll === 1, { what: 'one held poll' });
    const a = await broker.publish('mail', { title: 'x' });
    for (const p of pages) await gotIds(p, 'mail', [a]);
    await leader.close({ runBeforeUnload: true });
    const rest = pages.filter((p) => p !== leader);
    const b = await broker.publish('mail', { title: 'y' });
    await waitFor(async () => (await leaders(rest)).length === 1, { what: 'the other tab to lead' });
    assert.deepEqual(await gotIds(rest[0], 'mail', [a, b]), [a, b]);
    await waitFor(async () => (await broker.held()).longpoll === 1, { what: 'one held poll again' });
  });
});
