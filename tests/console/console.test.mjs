// The console page (SPEC §12 `GET /`) in a real browser: Debian's Chromium, headless, driven
// by playwright-core. A real gateway and a real upstream (`anygate echo`) on loopback ports.
//
//   ANYGATE_BIN   the gateway binary (default: target/debug/anygate of this checkout)
//   SCREENSHOT    where to save the desktop screenshot (default: tests/console/out/)
//   TRAFFIC_SECONDS  keep a trickle of requests going this long before the screenshots, so
//                 the chart has a shape (default 0: the test is about behaviour)
//
// Run: `npm ci && npm test` in tests/console (after `cargo build -p anygate`).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, mkdirSync, writeFileSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '..', '..');
const BIN = process.env.ANYGATE_BIN || join(ROOT, 'target', 'debug', 'anygate');
const CHROMIUM = '/usr/bin/chromium';
const OUT = join(HERE, 'out');
const TOKEN = 'console-test-token-0123456789';
const HOST = 'test-env.service.tcloudbase.com';
const WAIT = 15_000;

const procs = [];
let dir, browser, ports, config;

function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

function start(args, env = {}) {
  const p = spawn(BIN, args, {
    cwd: dir,
    env: { ...process.env, RUST_LOG: 'info', ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  p.stderr.on('data', (d) => { err += d; });
  p.output = () => err;
  procs.push(p);
  return p;
}

async function until(what, fn, timeout = WAIT) {
  const deadline = Date.now() + timeout;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch { /* not yet */ }
    if (Date.now() > deadline) throw new Error('timed out waiting for ' + what);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A request through the gateway (node's fetch cannot set `Host`). */
function get(port, path, headers = {}) {
  return new Promise((ok, fail) => {
    const req = http.request({ host: '127.0.0.1', port, path, headers: { Host: HOST, ...headers } }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => ok({ status: res.statusCode, headers: res.headers, body }));
    });
    req.setTimeout(10_000, () => req.destroy(new Error('request timed out')));
    req.on('error', fail);
    req.end();
  });
}

function yaml(broken = false) {
  return `env: test-env
listen: { http: "127.0.0.1:${ports.http}", https: "127.0.0.1:${ports.https}", admin: "127.0.0.1:${ports.admin}" }
server: { threads: 1, grace_period: 1s, graceful_shutdown_timeout: 1s }
admin: { token_env: ANYGATE_ADMIN_TOKEN }
domains:
  - name: api.example.com
    tls: { cert: api.pem, key: api.key }
instances:
  - id: lhins-echo
    address: "127.0.0.1:${ports.echo}"
    health_check: { path: /healthz, interval: 500ms, timeout: 400ms }
  - { id: lhins-down, address: "127.0.0.1:${ports.closed}" }
routes:
  - { domain: default, path: /api, instance: lhins-echo }
  - { domain: api.example.com, path: /, instance: lhins-echo }
  - { domain: default, path: /down, instance: ${broken ? 'lhins-missing' : 'lhins-down'} }
plugins:
  - name: request_id
  - name: routing
  - name: upstream_info
  - name: metrics
`;
}

before(async () => {
  assert.ok(existsSync(BIN), `no gateway binary at ${BIN}: run \`cargo build -p anygate\` first`);
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: .ci/run should install Debian's chromium`);
  dir = mkdtempSync(join(tmpdir(), 'anygate-console-'));
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '90',
    '-subj', '/CN=api.example.com', '-addext', 'subjectAltName=DNS:api.example.com,DNS:www.example.com',
    '-keyout', join(dir, 'api.key'), '-out', join(dir, 'api.pem'),
  ], { stdio: 'ignore' });
  ports = {
    http: await freePort(), https: await freePort(), admin: await freePort(),
    echo: await freePort(), closed: await freePort(),
  };
  config = join(dir, 'anygate.yaml');
  writeFileSync(config, yaml());
  start(['echo', '--listen', `127.0.0.1:${ports.echo}`]);
  const gw = start(['run', '-c', config], { ANYGATE_ADMIN_TOKEN: TOKEN });
  await until('the admin listener (' + gw.output() + ')', async () => {
    const r = await fetch(`http://127.0.0.1:${ports.admin}/readyz`);
    return r.ok;
  });
  const userData = mkdtempSync(join(tmpdir(), 'anygate-chromium-'));
  browser = await chromium.launchPersistentContext(userData, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1280, height: 900 },
  });
});

after(async () => {
  if (browser) await browser.close();
  for (const p of procs) p.kill('SIGKILL');
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('the console shows the running config, finds requests by id and shows a failed reload', async () => {
  // Traffic first: one good request, one that fails (nothing listens on lhins-down's port).
  const ok = await get(ports.http, '/api/hello?x=1');
  assert.equal(ok.status, 200);
  const okId = ok.headers['x-cloudbase-request-id'];
  const failed = await get(ports.http, '/down/x');
  assert.equal(failed.status, 502);
  const failedId = failed.headers['x-cloudbase-request-id'];

  const page = browser.pages()[0] || (await browser.newPage());
  // Chromium logs every 4xx answer as a console error. The API's deliberate ones, which this
  // test provokes (no token yet, an unknown request id, a broken config), are counted apart;
  // anything else (a script error, a CSP violation, a missing file) is a failure.
  const problems = [];
  const apiAnswers = [];
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    const network = /^Failed to load resource: the server responded with a status of (\d+)/.exec(m.text());
    const url = m.location().url || '';
    if (network && new URL(url).pathname.startsWith('/api/v1/')) {
      apiAnswers.push(network[1] + ' ' + new URL(url).pathname);
    } else {
      problems.push('console: ' + m.text() + ' at ' + url);
    }
  });
  page.on('pageerror', (e) => problems.push('page error: ' + e.message));
  await page.goto(`http://127.0.0.1:${ports.admin}/`);

  // The API answers 401: the page asks for the token, then shows the gateway.
  await page.locator('#login').waitFor({ state: 'visible', timeout: WAIT });
  await page.fill('#token', TOKEN);
  await page.click('#login button[type=submit]');
  await page.locator('#main').waitFor({ state: 'visible', timeout: WAIT });

  const routes = page.locator('#routes tbody');
  await routes.getByText('default/api', { exact: true }).waitFor({ timeout: WAIT });
  await routes.getByText('api.example.com/', { exact: true }).waitFor({ timeout: WAIT });
  const echoRow = page.locator('#instances tr[data-instance="lhins-echo"]');
  await echoRow.locator('.badge.up').waitFor({ timeout: WAIT });
  await page.locator('#instances tr[data-instance="lhins-down"]').waitFor({ timeout: WAIT });
  const certs = page.locator('#certificates tbody');
  await certs.getByText('api.example.com, www.example.com').first().waitFor({ timeout: WAIT });
  assert.match(await certs.textContent(), /file/);

  // Look the good request up by the id its response carried.
  await page.fill('#request-id', okId);
  await page.click('#lookup button[type=submit]');
  const field = (name) => page.locator(`#lookup-result dd[data-field="${name}"]`);
  await field('requestId').getByText(okId).waitFor({ timeout: WAIT });
  assert.equal(await field('route').textContent(), 'default/api');
  assert.equal(await field('instance').textContent(), 'lhins-echo');
  assert.equal(await field('status').textContent(), '200');
  assert.equal(await field('path').textContent(), '/api/hello');
  assert.equal(await field('upstreamTimecostMs').textContent(), ok.headers['x-cloudbase-upstream-timecost']);

  // The failed one shows its error code.
  await page.fill('#request-id', failedId);
  await page.click('#lookup button[type=submit]');
  await field('requestId').getByText(failedId).waitFor({ timeout: WAIT });
  assert.equal(await field('error').textContent(), 'REQUEST_SERVICE_FAILED');
  assert.equal(await field('upstreamError').textContent(), 'connect_refused');

  // An unknown id says so.
  await page.fill('#request-id', '01000000-0000-7000-8000-000000000000');
  await page.click('#lookup button[type=submit]');
  await page.locator('#lookup-result').getByText(/NOT_FOUND/).waitFor({ timeout: WAIT });

  // The chart fills from the traffic stream.
  await until('the chart', async () => (await page.getAttribute('#rps-line', 'd')).length > 0);
  await page.locator('#live.on').waitFor({ timeout: WAIT });

  // A broken config: "Reload now" shows why, and the history keeps the error text.
  writeFileSync(config, yaml(true));
  await page.click('#reload');
  await page.locator('#reload-result .bad').getByText(/not reloaded/).waitFor({ timeout: WAIT });
  const failure = page.locator('#reloads tr.failure pre.errors').first();
  await failure.waitFor({ timeout: WAIT });
  assert.match(await failure.textContent(), /anygate\.yaml:\d+:\d+: route names instance `lhins-missing`/);
  writeFileSync(config, yaml());

  // Screenshots for the manual: a laptop and a phone.
  const trickle = Number(process.env.TRAFFIC_SECONDS || 0) * 1000;
  for (const end = Date.now() + trickle; Date.now() < end;) {
    const n = 1 + Math.floor(((Date.now() / 1000) % 20) / 2);
    await Promise.all(Array.from({ length: n }, (_, i) => get(ports.http, i === 0 && n > 8 ? '/down/y' : '/api/page')));
    await new Promise((r) => setTimeout(r, 120));
  }
  await page.fill('#request-id', failedId);
  await page.click('#lookup button[type=submit]');
  await field('requestId').getByText(failedId).waitFor({ timeout: WAIT });
  mkdirSync(OUT, { recursive: true });
  const desktop = process.env.SCREENSHOT || join(OUT, 'console.png');
  await page.screenshot({ path: desktop, fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: join(dirname(desktop), 'console-phone.png'), fullPage: false });
  assert.ok(readFileSync(desktop).length > 10_000, 'a real screenshot');

  assert.deepEqual(problems, []);
  assert.deepEqual(apiAnswers, [
    '401 /api/v1/status',
    '404 /api/v1/requests/01000000-0000-7000-8000-000000000000',
    '400 /api/v1/reload',
  ]);
});
