// demo.js — Herald's demo launcher: an icon per web app with a badge of its undismissed
// messages; a click lists them, each with a dismiss button. Everything goes through the
// browser client the broker serves (/v1/client/herald.js).
import { Herald } from '/v1/client/herald.js';

const APPS = [
  { id: 'mail', name: 'Mail', color: '#2f6fed' },
  { id: 'news', name: 'News', color: '#e8590c' },
  { id: 'chat', name: 'Chat', color: '#2b8a3e' },
  { id: 'updates', name: 'Updates', color: '#7048e8' },
];

const params = new URLSearchParams(location.search);
const herald = new Herald({ url: location.origin, tenant: params.get('tenant') || 'default' });
window.herald = herald; // for the console (and the browser tests)

const messages = new Map(APPS.map((a) => [a.id, new Map()])); // app -> id -> message
let open = null; // the app whose list is shown

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function icon(name) {
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('aria-hidden', 'true');
  const use = document.createElementNS('http://www.w3.org/2000/svg', 'use');
  use.setAttribute('href', `icons.svg#${name}`);
  svg.append(use);
  return svg;
}

// A message's data is whatever the publisher sent: show title/body when it has them.
function describe(data) {
  if (data && typeof data === 'object' && !Array.isArray(data)) {
    const title = data.title ?? data.subject ?? '';
    const body = data.body ?? data.text ?? (title ? '' : JSON.stringify(data));
    return { title: String(title), body: String(body) };
  }
  return { title: typeof data === 'string' ? data : JSON.stringify(data), body: '' };
}

function renderLauncher() {
  const nav = $('launcher');
  nav.replaceChildren(...APPS.map((a) => {
    const n = messages.get(a.id).size;
    return el('button', {
      type: 'button', class: 'app' + (open === a.id ? ' open' : ''), 'data-app': a.id,
      'aria-label': `${a.name}, ${n} unread`, onclick: () => toggle(a.id),
    },
    el('span', { class: 'tile', style: `--c:${a.color}` }, icon(a.id),
       el('span', { class: 'badge', 'data-count': String(n) }, n > 99 ? '99+' : String(n))),
    el('span', { class: 'label' }, a.name));
  }));
}

function renderPanel() {
  const panel = $('panel');
  if (!open) {
    panel.hidden = true;
    return;
  }
  const app = APPS.find((a) => a.id === open);
  const list = [...messages.get(open).values()].sort((a, b) =>
    a.id.length - b.id.length || (a.id < b.id ? -1 : 1)).reverse();
  panel.hidden = false;
  panel.style.setProperty('--c', app.color);
  $('panel-title').textContent = app.name;
  $('empty').hidden = list.length > 0;
  $('dismiss-all').hidden = list.length === 0;
  $('messages').replaceChildren(...list.map((m) => {
    const { title, body } = describe(m.data);
    const when = new Date(m.created).toLocaleTimeString();
    return el('li', { 'data-id': m.id },
      el('div', { class: 'text' },
        el('strong', {}, title || '(no title)'),
        body ? el('p', {}, body) : '',
        el('time', { datetime: new Date(m.created).toISOString() }, `#${m.id} · ${when}`)),
      el('button', { type: 'button', class: 'dismiss', onclick: () => herald.dismiss(m.id) },
        'Dismiss'));
  }));
}

function render() {
  renderLauncher();
  renderPanel();
}

function toggle(app) {
  open = open === app ? null : app;
  render();
}

$('panel-close').addEventListener('click', () => toggle(open));
$('dismiss-all').addEventListener('click', () => {
  if (open) herald.dismiss([...messages.get(open).keys()]);
});

herald.addEventListener('dismiss', (e) => {
  for (const id of e.detail.ids) for (const m of messages.values()) m.delete(id);
  render();
});

const STATUS_TEXT = {
  connecting: 'connecting…', connected: 'connected', backoff: 'reconnecting…',
  offline: 'offline', closed: 'closed',
};
function showStatus() {
  const s = herald.status;
  $('status').dataset.status = s;
  $('status').querySelector('span').textContent =
    (STATUS_TEXT[s] || s) + (herald.isLeader ? ' · this tab pulls' : s === 'connected' ? ' · via another tab' : '');
}
herald.addEventListener('status', showStatus);
herald.addEventListener('leader', showStatus);

$('hint').textContent =
  `KEY=$(cat var/herald/tenants/default/publish.key)\n` +
  `curl -XPOST -H "Authorization: Bearer $KEY" ${location.origin}/v1/apps/mail/messages \\\n` +
  `     -d '{"data":{"title":"Hello","body":"from curl"}}'\n\n` +
  `build/release/herald publish --app news '{"title":"Extra!","body":"over ZeroMQ"}'`;

render();
const registered = await Promise.allSettled(APPS.map((a) =>
  herald.register(a.id, (m) => {
    messages.get(a.id).set(m.id, m);
    render();
  })));
const failed = registered.find((r) => r.status === 'rejected');
if (failed) {
  $('status').dataset.status = 'error';
  $('status').querySelector('span').textContent = `cannot register: ${failed.reason.message}`;
} else {
  $('device').textContent = registered[0].value.device;
}
document.body.dataset.ready = 'true';
