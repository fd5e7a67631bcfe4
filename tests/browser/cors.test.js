// cors.test.js — a web app on another origin uses the broker through CORS: the client library
// loads cross-origin, registers, polls (preflighted: it sends a bearer token) and acks; the
// allowed origins are per tenant; an origin no tenant allows is refused before any handler.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Broker, Browser, SLOW, serveOrigin, testPage, waitFor } from './lib/harness.js';

const TIMEOUT = 120000 * SLOW;
const ACME_KEY = 'acme-publish-key-0123456789-abcdefghijkl';

test('a page on an allowed origin uses the broker; other origins are refused', { timeout: TIMEOUT }, async () => {
  // Two other origins: "app" is allowed for the tenant default, "acme" only for tenant acme.
  // Their page needs the broker's URL, known once it runs: the map is filled in then.
  const pages = {};
  const appSrv = await serveOrigin(pages);
  const acmeSrv = await serveOrigin(pages);
  const broker = await Broker.start({
    allowedOrigins: [appSrv.origin],
    extra: ['[tenant acme]', `publish_key = ${ACME_KEY}`, 'self_register = *',
      'self_register_per_min = 0', `allowed_origins = ${acmeSrv.origin}`].join('\n'),
  });
  pages['/'] = testPage(broker.url);
  let browser;
  try {
    browser = await Browser.launch();

    // --- the allowed origin: the whole client works ---
    const p = await browser.page();
    await p.goto(`${appSrv.origin}/?apps=mail,news`);
    await p.waitForFunction(() => window.ready === true, null, { timeout: 30000 * SLOW });
    await waitFor(() => p.evaluate(() => window.herald.status === 'connected'), { what: 'connected' });
    const m = await broker.publish('mail', { title: 'cross-origin' });
    const n = await broker.publishZmq('news', { title: 'cross-origin too' });
    await waitFor(() => p.evaluate(() => window.got.mail.length === 1 && window.got.news.length === 1),
                  { what: 'both messages in the cross-origin page' });
    assert.deepEqual(await p.evaluate(() => [window.got.mail[0].id, window.got.news[0].id]), [m, n]);
    assert.equal(await p.evaluate((id) => window.herald.dismiss(id), m), true, 'ack went through');
    const meta = await p.evaluate(() => window.idb('meta'));
    assert.deepEqual(await broker.pendingIds(meta.device, meta.token), [n]);

    // What the broker sends: the origin echoed, Vary, nothing more.
    let r = await fetch(`${broker.url}/v1/devices/${meta.device}/messages?wait=0`, {
      headers: { Origin: appSrv.origin, Authorization: `Bearer ${meta.token}` },
    });
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('access-control-allow-origin'), appSrv.origin);
    assert.match(r.headers.get('vary'), /Origin/);
    assert.equal(r.headers.get('access-control-allow-credentials'), null);
    assert.equal(r.headers.get('access-control-expose-headers'), null);
    r = await fetch(`${broker.url}/v1/devices/${meta.device}/messages`, {
      method: 'OPTIONS',
      headers: { Origin: appSrv.origin, 'Access-Control-Request-Method': 'GET',
        'Access-Control-Request-Headers': 'authorization' },
    });
    assert.equal(r.status, 204);
    assert.equal(r.headers.get('access-control-allow-origin'), appSrv.origin);
    assert.equal(r.headers.get('access-control-allow-methods'), 'GET');
    assert.equal(r.headers.get('access-control-allow-headers'), 'Authorization, Content-Type, Herald-Tenant');
    assert.equal(r.headers.get('access-control-max-age'), '600');
    r = await fetch(`${broker.url}/v1/devices/${meta.device}/messages`, {
      method: 'OPTIONS',
      headers: { Origin: 'http://evil.example', 'Access-Control-Request-Method': 'GET' },
    });
    assert.equal(r.status, 403);
    assert.equal(r.headers.get('access-control-allow-origin'), null);
    r = await fetch(`${broker.url}/v1/nothing/here`, {
      method: 'OPTIONS', headers: { Origin: appSrv.origin, 'Access-Control-Request-Method': 'GET' },
    });
    assert.equal(r.status, 404);

    // --- the acme origin: allowed for tenant acme only ---
    const q = await browser.page();
    await q.goto(`${acmeSrv.origin}/`);
    await q.waitForFunction(() => window.ready === true, null, { timeout: 30000 * SLOW });
    // The library itself is public: it loaded (window.Herald is there).
    assert.equal(await q.evaluate(() => typeof window.Herald), 'function');
    const before = (await broker.metrics()).herald_registrations_total;
    const outcome = await q.evaluate(async (url) => {
      const out = {};
      for (const t of ['default', 'acme']) {
        try {
          const res = await fetch(`${url}/v1/apps/mail/registrations?tenant=${t}`, { method: 'POST' });
          out[t] = res.status;
        } catch (e) {
          out[t] = e.name; // blocked by CORS: the page sees a network error
        }
      }
      return out;
    }, broker.url);
    assert.deepEqual(outcome, { default: 'TypeError', acme: 201 });
    // The refused request never reached the registration handler: one registration, acme's.
    assert.equal((await broker.metrics()).herald_registrations_total, before + 1);
    // A device token names its tenant: default's device is off limits for this origin, even
    // with the right token (the request is preflighted and the answer refused).
    const stolen = await q.evaluate(async ([url, dev, tok]) => {
      try {
        await fetch(`${url}/v1/devices/${dev}/messages?wait=0`, { headers: { Authorization: `Bearer ${tok}` } });
        return 'read';
      } catch (e) {
        return e.name;
      }
    }, [broker.url, meta.device, meta.token]);
    assert.equal(stolen, 'TypeError');

  } finally {
    try {
      if (browser) await browser.close();
    } finally {
      await appSrv.close();
      await acmeSrv.close();
      await broker.close();
    }
  }
});
