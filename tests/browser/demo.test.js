// demo.test.js — the demo launcher at /demo/, as an operator would use it: badges count the
// undismissed messages of each app (in every tab), a click lists them, Dismiss removes one
// everywhere and at the broker, a reload shows what is left. Leaves a screenshot in
// <build>/artifacts/demo.png.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';

import { ARTIFACTS, Broker, Browser, SLOW, waitFor } from './lib/harness.js';

const TIMEOUT = 120000 * SLOW;

async function openDemo(browser, broker) {
  const page = await browser.page();
  await page.goto(`${broker.url}/demo/`);
  await page.waitForSelector('body[data-ready="true"]');
  await waitFor(() => page.evaluate(() => window.herald.status === 'connected'), { what: 'connected' });
  return page;
}

const badges = (page) => page.evaluate(() => Object.fromEntries(
  [...document.querySelectorAll('[data-app]')].map((e) => {
    const b = e.querySelector('.badge');
    return [e.dataset.app, getComputedStyle(b).display === 'none' ? 0 : Number(b.textContent)];
  })));

async function waitBadges(page, want) {
  return waitFor(async () => {
    const b = await badges(page);
    return JSON.stringify(b) === JSON.stringify(want) ? b : null;
  }, { what: `badges ${JSON.stringify(want)}` });
}

/* The client's IndexedDB records, read raw. */
const stored = (page) => page.evaluate(() => new Promise((resolve, reject) => {
  const rq = indexedDB.open(`herald:${location.origin}|default`);
  rq.onerror = () => reject(rq.error);
  rq.onsuccess = () => {
    const g = rq.result.transaction('messages').objectStore('messages').getAll();
    g.onsuccess = () => {
      rq.result.close();
      resolve(g.result.map((m) => m.id).sort());
    };
  };
}));

test('the demo launcher: badges, listing, dismissing, reload; screenshot', { timeout: TIMEOUT }, async () => {
  const broker = await Broker.start();
  let browser;
  try {
    browser = await Browser.launch();
    const page = await openDemo(browser, broker);
    // The page is served by the broker with the right types.
    let r = await fetch(`${broker.url}/demo/`);
    assert.equal(r.headers.get('content-type'), 'text/html; charset=utf-8');
    assert.equal(r.headers.get('cache-control'), 'no-cache');
    r = await fetch(`${broker.url}/v1/client/herald.js`);
    assert.equal(r.headers.get('content-type'), 'application/javascript; charset=utf-8');
    assert.equal(r.headers.get('cache-control'), 'public, max-age=300');
    const etag = r.headers.get('etag');
    assert.match(etag, /^"[0-9a-f]{24}"$/);
    r = await fetch(`${broker.url}/v1/client/herald.js`, { headers: { 'If-None-Match': etag } });
    assert.equal(r.status, 304);

    await waitBadges(page, { mail: 0, news: 0, chat: 0, updates: 0 });
    const m1 = await broker.publish('mail', { title: 'Quarterly report', body: 'The Q3 numbers are in: revenue up 12%.' });
    const m2 = await broker.publishZmq('mail', { title: 'Lunch?', body: 'Thai place at 12:30, booked for four.' });
    const m3 = await broker.publish('mail', { title: 'Build passed', body: 'release and ASan builds are green' });
    const n1 = await broker.publishZmq('news', { title: 'Herald 0.1 is out', body: 'Durable push for browsers and handsets' });
    const c1 = await broker.publish('chat', { title: 'Ana', body: 'are you joining the stand-up?' });
    await waitBadges(page, { mail: 3, news: 1, chat: 1, updates: 0 });

    // A second tab shows the same counts (one device, one store, one long-poll).
    const other = await openDemo(browser, broker);
    await waitBadges(other, { mail: 3, news: 1, chat: 1, updates: 0 });

    // Open Mail: newest first, a dismiss button each.
    await page.click('[data-app="mail"]');
    const listed = await page.$$eval('#messages li', (lis) => lis.map((li) => li.dataset.id));
    assert.deepEqual(listed, [m3, m2, m1]);
    assert.equal(await page.textContent('#messages li:first-child strong'), 'Build passed');
    await page.click(`#messages li[data-id="${m2}"] button.dismiss`);
    await waitBadges(page, { mail: 2, news: 1, chat: 1, updates: 0 });
    await waitBadges(other, { mail: 2, news: 1, chat: 1, updates: 0 });
    assert.deepEqual(await page.$$eval('#messages li', (lis) => lis.map((li) => li.dataset.id)), [m3, m1]);
    assert.deepEqual(await stored(page), [m1, m3, n1, c1].sort());
    const device = await page.textContent('#device');
    const token = await page.evaluate(() => new Promise((resolve) => {
      const rq = indexedDB.open(`herald:${location.origin}|default`);
      rq.onsuccess = () => {
        const g = rq.result.transaction('meta').objectStore('meta').get('token');
        g.onsuccess = () => { rq.result.close(); resolve(g.result); };
      };
    }));
    await waitFor(async () => !(await broker.pendingIds(device, token)).includes(m2),
                  { what: 'the broker to forget the dismissed message' });

    // Reload: the badges come back from IndexedDB.
    await page.reload();
    await page.waitForSelector('body[data-ready="true"]');
    await waitBadges(page, { mail: 2, news: 1, chat: 1, updates: 0 });

    // The screenshot: mail open, a fresh update arriving.
    await broker.publish('updates', { title: 'Update available', body: 'Version 2.4 is ready to install' });
    await waitBadges(page, { mail: 2, news: 1, chat: 1, updates: 1 });
    await page.click('[data-app="mail"]');
    await page.waitForSelector('#messages li');
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    const shot = path.join(ARTIFACTS, 'demo.png');
    await page.screenshot({ path: shot, fullPage: true });
    assert.ok(fs.statSync(shot).size > 10000, 'a real screenshot');

    // Dismiss all from the panel empties the app.
    await page.click('#dismiss-all');
    await waitBadges(page, { mail: 0, news: 1, chat: 1, updates: 1 });
    await waitBadges(other, { mail: 0, news: 1, chat: 1, updates: 1 });
    assert.equal(await page.isVisible('#empty'), true);
  } finally {
    try {
      if (browser) await browser.close();
    } finally {
      await broker.close();
    }
  }
});
