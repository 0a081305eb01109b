// Test harness: the real anygate binary (gateway and `anygate echo` upstream), a fake WeChat
// jscode2session server, a Node upstream for the cases echo cannot play, all on 127.0.0.1
// ephemeral ports. Every wait polls with a deadline.
import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, openSync, closeSync } from 'node:fs'
import { createServer } from 'node:http'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
export const repoRoot = resolve(here, '../../..')

export const OWNER = 'wx1234567890abcdef'
export const OWNER_SECRET = 'owner-app-secret'
export const STRANGER = 'wx0000000000000000' // an app the gateway does not list
export const KEY_A = 'key-a-0123456789abcdef0123456789abcdef'
export const KEY_B = 'key-b-fedcba9876543210fedcba9876543210'
const START_DEADLINE_MS = 20000
const STOP_DEADLINE_MS = 5000

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/** The gateway binary: $ANYGATE_BIN, else the workspace's debug build. */
export function anygateBin() {
  const bin = process.env.ANYGATE_BIN || join(repoRoot, 'target', 'debug', 'anygate')
  if (!existsSync(bin)) {
    throw new Error(`no anygate binary at ${bin}: run \`cargo build -p anygate\` first ` +
      '(.ci/run builds it with the cargo tests), or set ANYGATE_BIN')
  }
  return bin
}

/** A free port on 127.0.0.1 (bound to :0, read, released). */
export function freePort() {
  return new Promise((resolvePort, reject) => {
    const srv = net.createServer()
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolvePort(port))
    })
  })
}

function canConnect(port) {
  return new Promise((res) => {
    const sock = net.connect({ host: '127.0.0.1', port })
    sock.once('connect', () => {
      sock.destroy()
      res(true)
    })
    sock.once('error', () => res(false))
  })
}

/** Polls until `cond()` is true; throws `what` after `deadlineMs`. */
export async function waitFor(what, cond, deadlineMs = START_DEADLINE_MS) {
  const end = Date.now() + deadlineMs
  for (;;) {
    if (await cond()) return
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await sleep(20)
  }
}

/** Every process started here, killed if this process ends without stopping them. */
const children = new Set()
const dirs = new Set()
function killChildren() {
  for (const c of children) c.kill('SIGKILL')
  children.clear()
  for (const d of dirs) rmSync(d, { recursive: true, force: true })
  dirs.clear()
}
process.on('exit', killChildren)
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(sig, () => {
    killChildren()
    process.kill(process.pid, sig)
  })
}

/** A child process with its output in files, stopped by `stop()`. */
class Proc {
  constructor(name, args, env, dir) {
    this.name = name
    this.dir = dir
    this.out = join(dir, `${name}.out.log`)
    this.err = join(dir, `${name}.err.log`)
    const o = openSync(this.out, 'w')
    const e = openSync(this.err, 'w')
    this.child = spawn(anygateBin(), args, {
      cwd: dir,
      env: { ...process.env, RUST_LOG: 'info', ...env },
      stdio: ['ignore', o, e],
    })
    closeSync(o)
    closeSync(e)
    this.exited = false
    children.add(this.child)
    this.child.on('exit', () => {
      this.exited = true
      children.delete(this.child)
    })
  }

  logs() {
    const read = (f) => (existsSync(f) ? readFileSync(f, 'utf8') : '')
    return `--- ${this.name} stderr ---\n${read(this.err)}\n--- stdout ---\n${read(this.out)}`
  }

  async waitListening(port) {
    await waitFor(`${this.name} on 127.0.0.1:${port}`, async () => {
      if (this.exited) throw new Error(`${this.name} exited early\n${this.logs()}`)
      return canConnect(port)
    })
  }

  signal(sig) {
    if (!this.exited) this.child.kill(sig)
  }

  async stop() {
    if (this.exited) return
    this.child.kill('SIGINT')
    const end = Date.now() + STOP_DEADLINE_MS
    while (!this.exited && Date.now() < end) await sleep(20)
    if (!this.exited) this.child.kill('SIGKILL')
  }
}

function tempDir() {
  const dir = mkdtempSync(join(tmpdir(), 'anygate-miniprogram-'))
  dirs.add(dir)
  return dir
}

/** `anygate echo` on a free port. */
export async function startEcho() {
  const dir = tempDir()
  const port = await freePort()
  const proc = new Proc('echo', ['echo', '--listen', `127.0.0.1:${port}`], {}, dir)
  await proc.waitListening(port)
  return {
    addr: `127.0.0.1:${port}`,
    stop: async () => {
      await proc.stop()
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

function listen(server) {
  return new Promise((res, rej) => {
    server.once('error', rej)
    server.listen(0, '127.0.0.1', () => res(server.address().port))
  })
}

/**
 * A fake WeChat jscode2session. `issue()` makes a code, as wx.login does; each code is accepted
 * once (a reused one gets 40163, like WeChat), with the app's right secret only. `exchanges`
 * counts the codes exchanged: the number of logins the gateway made.
 */
export async function startWeChat() {
  const issued = new Set()
  let next = 0
  const state = { exchanges: 0, requests: 0 }
  const secrets = { [OWNER]: OWNER_SECRET }
  const server = createServer((req, res) => {
    state.requests++
    const url = new URL(req.url, 'http://x')
    const q = (k) => url.searchParams.get(k) || ''
    const reply = (obj) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify(obj))
    }
    if (url.pathname !== '/sns/jscode2session' || q('grant_type') !== 'authorization_code') {
      res.writeHead(404)
      return res.end()
    }
    if (secrets[q('appid')] !== q('secret')) return reply({ errcode: 40125, errmsg: 'invalid appsecret' })
    const code = q('js_code')
    if (!issued.has(code)) return reply({ errcode: 40163, errmsg: 'code been used' })
    issued.delete(code)
    state.exchanges++
    const user = code.split('-')[1]
    reply({ openid: `o-${user}`, session_key: 'SESSION-KEY-never-leaves', unionid: `u-${user}` })
  })
  const port = await listen(server)
  return {
    addr: `127.0.0.1:${port}`,
    state,
    /** A new wx.login code for `user` (the openid becomes `o-<user>`). */
    issue(user = 'alice') {
      const code = `c${++next}-${user}`
      issued.add(code)
      return code
    },
    close: () => new Promise((r) => server.close(r)),
  }
}

/**
 * An upstream written in Node for what echo cannot do: `/hang` never answers (SERVICE_TIMEOUT),
 * `/fail` answers 500 with a body shaped like anygate's error (must stay the backend's answer).
 */
export async function startNodeUpstream() {
  const hanging = new Set()
  const server = createServer((req, res) => {
    if (req.url.endsWith('/hang')) {
      hanging.add(res)
      return
    }
    res.writeHead(500, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ code: 'BACKEND_DOWN', message: 'the database is down', requestId: 'backend-1' }))
  })
  const port = await listen(server)
  return {
    addr: `127.0.0.1:${port}`,
    close: () => {
      for (const r of hanging) r.destroy()
      server.closeAllConnections()
      return new Promise((r) => server.close(r))
    },
  }
}

/** The session-mode gateway config used by the tests. */
export function gatewayConfig({ port, echo, node, down, wechat, keysEnv = 'KEYS_A', ttl = '2h' }) {
  return `
env: test-env
listen: { http: "127.0.0.1:${port}" }
server: { threads: 1 }
timeouts: { sdk: 800ms, http: 800ms }   # a client timeout of 100ms fires well before
instances:
  - { id: lhins-echo, address: "${echo}" }
  - { id: lhins-node, address: "${node}" }
  - { id: lhins-down, address: "${down}" }
routes:
  - { domain: "*", path: /api, instance: lhins-echo }
  - { domain: "*", path: /private, instance: lhins-echo, auth: required }
  - { domain: "*", path: /node, instance: lhins-node }
plugins:
  - name: request_id
  - name: identity
    mode: session
    session:
      apps:
        - { appid: ${OWNER}, secret_env: WX_SECRET_OWNER, role: owner }
      code2session_url: "http://${wechat}/sns/jscode2session"
      token_keys_env: ${keysEnv}
      token_ttl: ${ttl}
  - name: routing
  - name: forwarded_for
  - name: upstream_info
  - name: access_log
    path: stdout
`
}

export const gatewayEnv = { WX_SECRET_OWNER: OWNER_SECRET, KEYS_A: KEY_A, KEYS_B: KEY_B }

/** `anygate run` on a config built by `render(port)`; `reconfigure` rewrites it and SIGHUPs. */
export async function startGateway(render) {
  const dir = tempDir()
  const config = join(dir, 'anygate.yaml')
  let lastError
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort()
    writeFileSync(config, render(port))
    const proc = new Proc('gateway', ['run', '-c', config], gatewayEnv, dir)
    try {
      await proc.waitListening(port)
    } catch (e) {
      lastError = e
      await proc.stop()
      if (/in use/i.test(proc.logs())) continue
      throw e
    }
    return {
      port,
      baseUrl: `http://127.0.0.1:${port}`,
      dir,
      logs: () => proc.logs(),
      /** The access log (the gateway's stdout). */
      accessLog: () => (existsSync(proc.out) ? readFileSync(proc.out, 'utf8') : ''),
      reconfigure(text) {
        writeFileSync(config, text)
        proc.signal('SIGHUP')
      },
      /** Mints a token with the config's key, as a page's own server would (`anygate token`). */
      mintToken(openid) {
        return runToken(config, openid, dir)
      },
      stop: async () => {
        await proc.stop()
        rmSync(dir, { recursive: true, force: true })
      },
    }
  }
  throw lastError
}

function runToken(config, openid, dir) {
  return new Promise((res, rej) => {
    const child = spawn(anygateBin(), ['token', '-c', config, '--openid', openid], {
      cwd: dir,
      env: { ...process.env, ...gatewayEnv },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    let err = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (err += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), START_DEADLINE_MS)
    child.on('exit', (code) => {
      clearTimeout(timer)
      if (code === 0) res(out.trim())
      else rej(new Error(`anygate token failed (${code}): ${err}`))
    })
  })
}

/**
 * Everything the client tests need, started once per test file: echo, the Node upstream, a
 * closed port, the fake WeChat and the gateway.
 */
export async function startWorld() {
  const echo = await startEcho()
  const node = await startNodeUpstream()
  const wechat = await startWeChat()
  const down = `127.0.0.1:${await freePort()}`
  const params = { echo: echo.addr, node: node.addr, down, wechat: wechat.addr }
  const gw = await startGateway((port) => gatewayConfig({ port, ...params }))
  return {
    echo,
    node,
    wechat,
    gw,
    params,
    baseUrl: gw.baseUrl,
    async stop() {
      await gw.stop()
      await echo.stop()
      await node.close()
      await wechat.close()
    },
  }
}
