// The anygate console: plain DOM code over the admin API (/api/v1). Every value shown is set
// as text, never as HTML: paths and hosts come from clients.
'use strict';

const HISTORY = 300; // seconds on the chart
const REFRESH_MS = 5000;
const TOKEN_KEY = 'anygate-admin-token';

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem(TOKEN_KEY) || '';
let seconds = []; // [{requests, errors, p50Ms, p99Ms, routes, instances}]
let latest = null;
let generation = 0;
let streaming = false;

class Unauthorized extends Error {}

/** A fetch of the admin API, with the token when there is one. */
async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (token) headers.set('Authorization', 'Bearer ' + token);
  const res = await fetch(path, { ...options, headers, cache: 'no-store' });
  if (res.status === 401) {
    const body = await res.json().catch(() => ({}));
    askForToken(body.message);
    throw new Unauthorized(body.message || 'unauthorized');
  }
  return res;
}

async function json(path, options) {
  const res = await api(path, options);
  const body = await res.json();
  return { ok: res.ok, status: res.status, body };
}

/** `el('td', {class: 'x'}, 'text', child)` */
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'title') e.title = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function fill(tableId, rows) {
  const body = $(tableId).tBodies[0];
  body.replaceChildren(...rows);
  if (rows.length === 0) {
    const cols = $(tableId).tHead.rows[0].cells.length;
    body.append(el('tr', {}, el('td', { colspan: cols, class: 'muted' }, 'none')));
  }
}

const ms = (v) => (v === null || v === undefined ? '–' : v < 10 ? v.toFixed(2) + ' ms' : v.toFixed(0) + ' ms');
const badge = (text, kind) => el('span', { class: 'badge ' + kind }, text);
const when = (iso) => (iso ? new Date(iso).toLocaleString() : '–');

function askForToken(message) {
  $('login').hidden = false;
  $('main').hidden = true;
  if (message) $('login-why').textContent = message;
  $('token').focus();
}

$('login').addEventListener('submit', (e) => {
  e.preventDefault();
  token = $('token').value.trim();
  sessionStorage.setItem(TOKEN_KEY, token);
  $('login').hidden = true;
  $('main').hidden = false;
  refresh();
});

// ---- traffic: the server-sent events, read through fetch so the token can be sent ----

function liveSeries(list, name) {
  return (list || []).find((s) => s.name === name) || null;
}

function onSecond(s) {
  latest = s;
  seconds.push(s);
  if (seconds.length > HISTORY) seconds = seconds.slice(-HISTORY);
  paint();
  draw();
}

/** Shows the latest second in the overview and the tables' live cells. */
function paint() {
  const s = latest;
  if (!s) return;
  $('rps').textContent = String(s.requests);
  $('errors').textContent = s.requests ? ((100 * s.errors) / s.requests).toFixed(1) + ' %' : '0 %';
  $('p99').textContent = ms(s.p99Ms);
  $('p50').textContent = ms(s.p50Ms);
  for (const cell of document.querySelectorAll('[data-series]')) {
    const { series: kind, name, field } = cell.dataset;
    const v = liveSeries(kind === 'route' ? s.routes : s.instances, name);
    cell.textContent = field === 'rps' ? String(v ? v.requests : 0) : ms(v && v.p99Ms);
  }
}

function linePath(values, max) {
  const n = HISTORY;
  const offset = n - values.length;
  return values
    .map((v, i) => {
      const x = ((offset + i) / (n - 1)) * 300;
      const y = 98 - (max > 0 ? (v / max) * 94 : 0);
      return (i === 0 ? 'M' : 'L') + x.toFixed(1) + ' ' + y.toFixed(1);
    })
    .join(' ');
}

function draw() {
  const rps = seconds.map((s) => s.requests);
  const p99 = seconds.map((s) => s.p99Ms || 0);
  const rpsMax = Math.max(1, ...rps);
  const p99Max = Math.max(1, ...p99);
  $('rps-line').setAttribute('d', linePath(rps, rpsMax));
  $('p99-line').setAttribute('d', linePath(p99, p99Max));
  $('rps-max').textContent = 'max ' + rpsMax;
  $('p99-max').textContent = 'max ' + p99Max.toFixed(1);
}

async function stream() {
  streaming = true;
  try {
    const res = await api('/api/v1/traffic?history=' + HISTORY);
    if (!res.ok || !res.body) throw new Error('traffic stream: ' + res.status);
    seconds = [];
    $('live').classList.add('on');
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = event
          .split('\n')
          .filter((l) => l.startsWith('data: '))
          .map((l) => l.slice(6))
          .join('\n');
        if (data) onSecond(JSON.parse(data));
      }
    }
  } catch (e) {
    if (e instanceof Unauthorized) {
      streaming = false;
      return;
    }
  }
  $('live').classList.remove('on');
  setTimeout(stream, 2000);
}

// ---- the config and its state ----

function seriesCell(kind, name, field) {
  return el('td', { 'data-series': kind, 'data-name': name, 'data-field': field, class: 'num' }, '–');
}

function showRoutes(routes) {
  fill(
    'routes',
    routes.map((r) =>
      el('tr', {},
        el('td', {}, el('code', {}, r.name)),
        el('td', {}, r.host),
        el('td', {}, el('code', {}, r.path)),
        el('td', {}, r.instance),
        el('td', {}, r.auth),
        seriesCell('route', r.name, 'rps'),
        seriesCell('route', r.name, 'p99'))));
  paint();
}

function healthBadge(h) {
  if (!h) return badge('unknown', 'unknown');
  return badge(h.status, h.status);
}

function lastResult(h) {
  if (!h || !h.lastCheck) return el('span', { class: 'muted' }, 'no result yet');
  const c = h.lastCheck;
  const text = c.ok ? (c.status ? 'answered ' + c.status : 'answered') : c.error || 'failed';
  return el('span', { title: c.time }, text + ' · ' + when(c.time));
}

function showInstances(instances) {
  const up = instances.filter((i) => !i.health || i.health.status !== 'down').length;
  $('up').textContent = up + ' / ' + instances.length;
  fill(
    'instances',
    instances.map((i) =>
      el('tr', { 'data-instance': i.id },
        el('td', {}, el('code', {}, i.id)),
        el('td', {}, healthBadge(i.health)),
        el('td', {}, i.address),
        el('td', {}, i.healthCheck ? 'GET ' + i.healthCheck.path + ' every ' + i.healthCheck.interval : 'passive'),
        el('td', {}, lastResult(i.health)),
        seriesCell('instance', i.id, 'rps'),
        seriesCell('instance', i.id, 'p99'))));
  paint();
}

function showDomains(d) {
  const rows = [];
  const add = (name, c) => {
    if (!c) {
      rows.push(el('tr', {}, el('td', {}, name), el('td', { colspan: 4, class: 'muted' }, 'no certificate (HTTP only, or the default certificate)')));
      return;
    }
    const days = c.daysLeft;
    const kind = days === null ? 'unknown' : days < 7 ? 'down' : days < 30 ? 'warn' : 'up';
    rows.push(
      el('tr', {},
        el('td', {}, name),
        el('td', {}, c.source),
        el('td', {}, when(c.notAfter)),
        el('td', {}, badge(days === null ? '?' : String(days), kind)),
        el('td', {}, (c.sans || []).join(', '))));
  };
  for (const dom of d.domains) add(dom.name, dom.certificate);
  if (d.defaultCertificate) add('(default certificate)', d.defaultCertificate);
  fill('certificates', rows);
}

function showStatus(s) {
  $('env').textContent = s.env;
  const up = s.uptimeSeconds;
  const uptime = up < 60 ? up + ' s' : up < 3600 ? Math.floor(up / 60) + ' min'
    : Math.floor(up / 3600) + ' h ' + Math.floor((up % 3600) / 60) + ' min';
  $('about').textContent = 'v' + s.version + ' · up ' + uptime;
  $('generation').textContent = String(s.generation);
  fill(
    'reloads',
    s.reloads.map((r) =>
      el('tr', { class: r.result },
        el('td', {}, when(r.time)),
        el('td', {}, r.trigger),
        el('td', {}, badge(r.result, r.result === 'success' ? 'up' : 'down')),
        el('td', { class: 'num' }, String(r.generation)),
        el('td', {}, r.errors.length ? el('pre', { class: 'errors' }, r.errors.join('\n')) : ''))));
}

function requestRow(r) {
  const link = el('a', { href: '#' + r.requestId }, r.requestId || '–');
  link.addEventListener('click', (e) => {
    e.preventDefault();
    $('request-id').value = r.requestId;
    lookup(r.requestId);
  });
  return el('tr', {},
    el('td', {}, when(r.time)),
    el('td', {}, el('code', {}, link)),
    el('td', { class: 'num' }, String(r.status)),
    el('td', {}, r.error || ''),
    el('td', {}, r.route || '–'),
    el('td', {}, r.instance || '–'));
}

async function refresh() {
  try {
    // Status first: without the token it is the one call that answers 401.
    const status = await json('/api/v1/status');
    const [instances, domains, failures] = await Promise.all([
      json('/api/v1/instances'),
      json('/api/v1/domains'),
      json('/api/v1/requests?status=5xx&limit=10'),
    ]);
    showStatus(status.body);
    if (status.body.generation !== generation) {
      generation = status.body.generation;
      showRoutes((await json('/api/v1/routes')).body.routes);
    }
    showInstances(instances.body.instances);
    showDomains(domains.body);
    fill('failures', failures.body.requests.map(requestRow));
    $('main').hidden = false;
    if (!streaming) stream();
  } catch (e) {
    if (!(e instanceof Unauthorized)) console.warn('refresh failed:', e);
  }
}

// ---- request lookup ----

const FIELDS = [
  ['requestId', 'request id'], ['time', 'time'], ['status', 'status'], ['error', 'error'],
  ['upstreamError', 'instance failure'], ['entry', 'entry'], ['method', 'method'], ['host', 'host'],
  ['path', 'path'], ['route', 'route'], ['instance', 'instance'], ['clientIp', 'client IP'],
  ['upstreamStatus', 'upstream status'], ['upstreamTimecostMs', 'upstream time (ms)'],
  ['durationMs', 'total time (ms)'], ['generation', 'config generation'],
];

async function lookup(id) {
  const out = $('lookup-result');
  id = id.trim();
  if (!id) return;
  try {
    const { ok, body } = await json('/api/v1/requests/' + encodeURIComponent(id));
    if (!ok) {
      out.replaceChildren(el('p', { class: 'notice' }, body.code + ': ' + body.message));
      return;
    }
    const list = el('dl', { class: 'record' });
    for (const [key, label] of FIELDS) {
      const v = body[key];
      const cls = key === 'error' && v ? 'bad' : key === 'status' && v >= 500 ? 'bad' : '';
      list.append(el('dt', {}, label), el('dd', { class: cls, 'data-field': key }, v === null || v === undefined ? '–' : String(v)));
    }
    out.replaceChildren(list);
  } catch (e) {
    if (!(e instanceof Unauthorized)) out.replaceChildren(el('p', { class: 'notice' }, String(e)));
  }
}

$('lookup').addEventListener('submit', (e) => {
  e.preventDefault();
  lookup($('request-id').value);
});

$('reload').addEventListener('click', async () => {
  const out = $('reload-result');
  try {
    const { ok, body } = await json('/api/v1/reload', { method: 'POST' });
    out.replaceChildren(
      ok
        ? el('p', { class: 'notice' }, 'Reloaded: generation ' + body.generation)
        : el('p', { class: 'notice bad' }, body.message));
    refresh();
  } catch (e) {
    if (!(e instanceof Unauthorized)) out.replaceChildren(el('p', { class: 'notice bad' }, String(e)));
  }
});

if (location.hash.length > 1) {
  $('request-id').value = decodeURIComponent(location.hash.slice(1));
  lookup($('request-id').value);
}
refresh();
setInterval(() => {
  if ($('login').hidden) refresh();
}, REFRESH_MS);
