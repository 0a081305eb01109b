// The client inside a Mini Program: a `wx` global (wx.request on fetch, wx.login with codes the
// fake WeChat accepts, sync storage) against the real gateway, a real echo upstream and a fake
// jscode2session that counts the logins.
import { after, before, describe, mock, test } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import { gatewayConfig, OWNER, STRANGER, startWorld, waitFor } from './harness.mjs'
import { makeWx } from './fakewx.mjs'

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$/
const SDK = { 'X-WX-SERVICE': 'tcbanyservice', 'X-Vm-Service': 'lhins-echo' }
const HOUR = 3600 * 1000

let world
before(async () => {
  world = await startWorld()
})
after(async () => {
  delete globalThis.wx
  if (world) await world.stop()
})

let loaded = 0
/** A fresh copy of the module (as after an app restart): no login shared with earlier tests. */
function freshModule() {
  return import(`../index.mjs?copy=${++loaded}`)
}

/** A new `wx` global and a client of a fresh module, as an app's `init` line makes it. */
async function app(initOptions = {}, wx = null) {
  const mod = await freshModule()
  globalThis.wx = wx || makeWx({ wechat: world.wechat, appid: OWNER })
  const cloud = mod.init({ baseUrl: world.baseUrl, env: 'test-env', ...initOptions })
  return { cloud, wx: globalThis.wx, mod }
}

const logins = () => world.wechat.state.exchanges
const apiCalls = (wx) => wx.log.filter((e) => !e.url.endsWith('/.anygate/login'))
const loginCalls = (wx) => wx.log.filter((e) => e.url.endsWith('/.anygate/login'))

async function rejection(promise) {
  try {
    await promise
  } catch (e) {
    return e
  }
  assert.fail('expected the call to fail')
}

/** The shape wx.cloud.callContainer's errors have, plus the gateway's request id. */
function assertGatewayError(err, { code, errCode, statusCode }, wx) {
  assert.ok(err instanceof Error, 'an Error')
  assert.equal(err.code, code)
  assert.equal(err.errCode, errCode)
  assert.equal(err.statusCode, statusCode)
  assert.equal(err.errMsg, err.message)
  assert.match(err.requestId, UUID)
  assert.ok(err.errMsg.startsWith(`cloud.callContainer:fail ${errCode} ${code}: `), err.errMsg)
  assert.ok(err.errMsg.endsWith(`(requestId: ${err.requestId})`), err.errMsg)
  assert.equal(err.data.requestId, err.requestId, 'the body names the same id')
  if (wx) assert.equal(wx.log.at(-1).requestId, err.requestId, 'the id of the answer received')
}

describe('routing', () => {
  test('an SDK call (X-WX-SERVICE + X-Vm-Service) reaches the instance, path unchanged, with the identity', async () => {
    const { cloud, wx } = await app()
    const before = logins()
    const res = await cloud.callContainer({
      config: { env: 'test-env' },
      header: SDK,
      path: '/api/user/info',
      method: 'POST',
      data: { userId: 123 },
    })
    assert.equal(res.statusCode, 200)
    assert.equal(res.errMsg, 'cloud.callContainer:ok')
    assert.equal(res.data.method, 'POST')
    assert.equal(res.data.path, '/api/user/info', 'an SDK call keeps its path')
    assert.equal(res.data.bodyBytes, JSON.stringify({ userId: 123 }).length)
    const h = res.data.headers
    assert.equal(h['x-wx-openid'], 'o-alice')
    assert.equal(h['x-wx-appid'], OWNER)
    assert.equal(h['x-wx-unionid'], 'u-alice')
    assert.equal(h['x-wx-env'], 'test-env')
    assert.equal(h['content-type'], 'application/json')
    assert.equal(h.authorization, undefined, 'the token is not forwarded')
    assert.match(res.requestId, UUID)
    assert.equal(res.callID, res.requestId)
    assert.equal(res.header['x-cloudbase-request-id'], res.requestId)
    assert.equal(res.header['x-cloudbase-upstream-status-code'], '200')
    assert.equal(h['x-cloudbase-request-id'], res.requestId, 'the instance saw the same id')
    assert.deepEqual(res.cookies, [], 'wx.request cookies are passed on')
    assert.equal(logins() - before, 1)
    const [login, call] = wx.log
    assert.ok(login.url.endsWith('/.anygate/login'))
    assert.equal(login.method, 'POST')
    assert.match(call.header.Authorization, /^Bearer v1\./)
  })

  test('init({instance}) makes header-less calls SDK calls to that instance; explicit headers win', async () => {
    const { cloud, wx } = await app({ instance: 'lhins-echo' })
    const res = await cloud.callContainer({ path: '/api/user/info', method: 'POST', data: { a: 1 } })
    assert.equal(res.data.path, '/api/user/info', 'SDK call: the trigger prefix is kept')
    assert.equal(res.data.headers['x-wx-openid'], 'o-alice')
    const sent = apiCalls(wx)[0].header
    assert.equal(sent['X-WX-SERVICE'], 'tcbanyservice')
    assert.equal(sent['X-Vm-Service'], 'lhins-echo')
    // A call naming another instance goes there (here: one the gateway does not know).
    const err = await rejection(
      cloud.callContainer({ path: '/x', header: { 'x-wx-service': 'tcbanyservice', 'x-vm-service': 'lhins-nope' } })
    )
    assert.equal(err.code, 'SERVICE_NOT_FOUND')
    assert.equal(apiCalls(wx)[1].header['X-Vm-Service'], undefined, 'no second X-Vm-Service added')
  })

  test('init({services}) turns a WeChat Cloud Run service name into an SDK call to its instance', async () => {
    const { cloud, wx } = await app({ services: { 'hello-world': 'lhins-echo' } })
    const res = await cloud.callContainer({ path: '/api/hello', header: { 'X-WX-SERVICE': 'hello-world' } })
    assert.equal(res.data.path, '/api/hello', 'SDK call: path kept')
    assert.equal(res.data.headers['x-wx-openid'], 'o-alice')
    const sent = apiCalls(wx)[0].header
    assert.equal(sent['X-WX-SERVICE'], 'tcbanyservice')
    assert.equal(sent['X-Vm-Service'], 'lhins-echo')
    // A name that is not mapped goes as written: anygate knows no such service.
    const err = await rejection(cloud.callContainer({ path: '/api/x', header: { 'X-WX-SERVICE': 'other' } }))
    assert.equal(err.code, 'SERVICE_NOT_FOUND')
  })

  test('a call without X-WX-SERVICE is HTTP access: trigger path stripped, GET data as the query', async () => {
    const { cloud } = await app()
    const res = await cloud.callContainer({ path: '/api/user/info', data: { q: 'a b', n: 1 } })
    assert.equal(res.statusCode, 200)
    assert.equal(res.data.method, 'GET')
    assert.equal(res.data.path, '/user/info', 'the trigger path /api is stripped')
    assert.equal(res.data.query, 'q=a%20b&n=1')
    assert.equal(res.data.headers['x-wx-openid'], 'o-alice')
  })

  test('dataType text and responseType arraybuffer are passed to wx.request', async () => {
    const { cloud } = await app({ instance: 'lhins-echo' })
    const text = await cloud.callContainer({ path: '/api/t', dataType: 'text' })
    assert.equal(typeof text.data, 'string')
    assert.equal(JSON.parse(text.data).path, '/api/t')
    const bin = await cloud.callContainer({ path: '/api/b', responseType: 'arraybuffer' })
    assert.ok(bin.data instanceof ArrayBuffer)
    assert.equal(JSON.parse(new TextDecoder().decode(bin.data)).path, '/api/b')
    // An anygate error is still decoded from an ArrayBuffer answer.
    const err = await rejection(
      cloud.callContainer({ path: '/b', header: { 'X-Vm-Service': 'lhins-nope' }, responseType: 'arraybuffer' })
    )
    assert.equal(err.code, 'SERVICE_NOT_FOUND')
    assert.match(err.requestId, UUID)
  })
})

describe('login and tokens', () => {
  test('one login serves many calls, and an app restart reuses the stored token', async () => {
    const { cloud, wx } = await app({ instance: 'lhins-echo' })
    const before = logins()
    for (let i = 0; i < 6; i++) {
      const res = await cloud.callContainer({ path: `/api/n/${i}`, method: i % 2 ? 'POST' : 'GET', data: { i } })
      assert.equal(res.data.headers['x-wx-openid'], 'o-alice')
    }
    assert.equal(logins() - before, 1, 'one code2session exchange for six calls')
    assert.equal(wx.logins, 1)
    const tokens = new Set(apiCalls(wx).map((e) => e.header.Authorization))
    assert.equal(tokens.size, 1, 'the same token every time')
    const stored = [...wx.storage.values()]
    assert.equal(stored.length, 1)
    assert.equal(`Bearer ${stored[0].token}`, [...tokens][0], 'the token is in wx storage')
    const info = await cloud.login()
    assert.equal(info.openid, 'o-alice')

    // The app is closed and opened again: a new module, the same storage.
    const restarted = await app({ instance: 'lhins-echo' }, wx)
    await restarted.cloud.callContainer({ path: '/api/again' })
    assert.equal(logins() - before, 1, 'no new login after a restart')
    assert.equal(wx.logins, 1)

    // logout() forgets it: the next call logs in again.
    restarted.cloud.logout()
    assert.equal(wx.storage.size, 0)
    await restarted.cloud.callContainer({ path: '/api/after-logout' })
    assert.equal(logins() - before, 2)
  })

  test('concurrent first calls share one login', async () => {
    const { cloud, wx } = await app({ instance: 'lhins-echo' })
    const before = logins()
    const results = await Promise.all(
      Array.from({ length: 8 }, (_, i) => cloud.callContainer({ path: `/api/c/${i}`, method: 'POST', data: { i } }))
    )
    for (const r of results) assert.equal(r.data.headers['x-wx-openid'], 'o-alice')
    assert.equal(logins() - before, 1, 'eight calls, one code2session exchange')
    assert.equal(wx.logins, 1)
    assert.equal(loginCalls(wx).length, 1)
  })

  test('a token near its expiry (by the client clock) is renewed before the call', async (t) => {
    t.after(() => mock.timers.reset())
    mock.timers.enable({ apis: ['Date'], now: Date.now() })
    const { cloud, wx } = await app({ instance: 'lhins-echo' })
    const before = logins()
    await cloud.callContainer({ path: '/api/1' })
    mock.timers.tick(HOUR) // token_ttl is 2h: still fresh
    await cloud.callContainer({ path: '/api/2' })
    assert.equal(logins() - before, 1)
    mock.timers.tick(HOUR - 4 * 60 * 1000) // 4 minutes left: renewed (5 min ahead for a 2h token)
    await cloud.callContainer({ path: '/api/3' })
    assert.equal(logins() - before, 2, 'renewed before it expired')
    assert.ok(wx.log.every((e) => e.statusCode === 200), 'never refused by the gateway')
    // (Tokens are compared by order, not value: two logins in one second sign the same token.)
    const order = wx.log.map((e) => (e.url.endsWith('/.anygate/login') ? 'login' : new URL(e.url).pathname))
    assert.deepEqual(order, ['login', '/api/1', '/api/2', 'login', '/api/3'])

    // Opened again three hours later: the stored token is stale, a login comes first.
    mock.timers.tick(3 * HOUR)
    const restarted = await app({ instance: 'lhins-echo' }, wx)
    await restarted.cloud.callContainer({ path: '/api/4' })
    assert.equal(logins() - before, 3)
    assert.ok(wx.log.every((e) => e.statusCode === 200))
  })

  test('UNAUTHENTICATED (keys rotated) gets one new login and one retry, shared by concurrent calls', async () => {
    const { cloud, wx } = await app({ instance: 'lhins-echo' })
    await cloud.callContainer({ path: '/api/warm' })
    const old = wx.log.at(-1).header.Authorization
    // The operator rotates the token key and drops the old one.
    // (Later tests log in afresh, so they get tokens signed with the new key.)
    world.gw.reconfigure(gatewayConfig({ port: world.gw.port, ...world.params, keysEnv: 'KEYS_B' }))
    await waitFor('the old token to be refused', async () => {
      const r = await fetch(`${world.baseUrl}/api/probe`, { headers: { Authorization: old } })
      return r.status === 401
    })
    const before = logins()
    const mark = wx.log.length
    const results = await Promise.all(
      Array.from({ length: 5 }, (_, i) => cloud.callContainer({ path: `/api/r/${i}` }))
    )
    for (const r of results) assert.equal(r.data.headers['x-wx-openid'], 'o-alice')
    assert.equal(logins() - before, 1, 'one new login for five refused calls')
    const since = wx.log.slice(mark)
    const refused = since.filter((e) => e.statusCode === 401)
    assert.equal(refused.length, 5, 'each call was refused once')
    assert.ok(refused.every((e) => e.header.Authorization === old))
    assert.equal(loginCalls({ log: since }).length, 1)
    const retried = since.filter((e) => e.statusCode === 200 && !e.url.endsWith('/.anygate/login'))
    assert.equal(retried.length, 5, 'each call retried once')
    assert.ok(retried.every((e) => e.header.Authorization !== old))
  })

  test('a token refused again after the new login fails the call: never a loop', { timeout: 10000 }, async () => {
    const wx = makeWx({ wechat: world.wechat, appid: OWNER })
    // Something between the app and the gateway mangles every token.
    wx.tamper = (o) => {
      if (o.header.Authorization) o.header.Authorization += 'x'
    }
    const { cloud } = await app({ instance: 'lhins-echo' }, wx)
    const before = logins()
    const err = await rejection(cloud.callContainer({ path: '/api/loop' }))
    assertGatewayError(err, { code: 'UNAUTHENTICATED', errCode: -401001, statusCode: 401 }, wx)
    assert.equal(apiCalls(wx).length, 2, 'the call and one retry')
    assert.equal(logins() - before, 2, 'the first login and one more')
  })

  test('a login the gateway refuses fails the call with its code and request id', async () => {
    const { cloud, wx } = await app({ appid: STRANGER })
    const err = await rejection(cloud.callContainer({ path: '/api/x' }))
    assertGatewayError(err, { code: 'ACCESS_DENIED', errCode: -401001, statusCode: 403 }, wx)
    assert.match(err.errMsg, /ACCESS_DENIED: login: /)
    assert.equal(apiCalls(wx).length, 0, 'no call without a token')
  })

  test('a failed wx.login fails the call with WX_LOGIN_FAILED; the next call tries again', async () => {
    const wx = makeWx({ wechat: world.wechat, appid: OWNER })
    wx.loginFails = true
    const { cloud } = await app({}, wx)
    const err = await rejection(cloud.callContainer({ path: '/api/x' }))
    assert.equal(err.code, 'WX_LOGIN_FAILED')
    assert.equal(err.errCode, -1)
    assert.match(err.errMsg, /login:fail timeout/)
    assert.equal(wx.log.length, 0)
    wx.loginFails = false
    const res = await cloud.callContainer({ path: '/api/x' })
    assert.equal(res.data.headers['x-wx-openid'], 'o-alice')
    assert.equal(wx.logins, 2)
  })

  test('the appid defaults to the running Mini Program (wx.getAccountInfoSync)', async () => {
    const mod = await freshModule()
    globalThis.wx = makeWx({ wechat: world.wechat, appid: OWNER })
    const cloud = mod.init({ baseUrl: world.baseUrl })
    const res = await cloud.callContainer({ path: '/api/who' })
    assert.equal(res.data.headers['x-wx-appid'], OWNER)
  })
})

describe('errors', () => {
  test('anygate errors become errCode/errMsg errors carrying X-Cloudbase-Request-Id', async () => {
    const { cloud, wx } = await app()
    const cases = [
      [{ header: { ...SDK, 'X-Vm-Service': 'lhins-nope' }, path: '/x' }, 'SERVICE_NOT_FOUND', -501009, 404],
      [{ path: '/nope' }, 'INVALID_PATH', -501000, 404],
      [{ header: SDK, path: '/big', method: 'POST', data: 'x'.repeat(101 * 1024) }, 'EXCEED_MAX_PAYLOAD_SIZE', -606001, 413],
      [{ path: '/node/hang' }, 'SERVICE_TIMEOUT', 102002, 504],
      [{ header: { ...SDK, 'X-Vm-Service': 'lhins-down' }, path: '/x' }, 'REQUEST_SERVICE_FAILED', -501001, 502],
    ]
    const ids = []
    for (const [options, code, errCode, statusCode] of cases) {
      const err = await rejection(cloud.callContainer(options))
      assertGatewayError(err, { code, errCode, statusCode }, wx)
      assert.equal(err.header['x-cloudbase-upstream-status-code'], '-')
      ids.push([err.requestId, code])
    }
    // The id in the error is the one the gateway logged: a bug report leads to the log line.
    const logged = () => world.gw.accessLog().split('\n').filter(Boolean).map((l) => JSON.parse(l))
    await waitFor('the access log lines', () => ids.every(([id]) => logged().some((l) => l.request_id === id)), 5000)
    for (const [id, code] of ids) assert.equal(logged().find((l) => l.request_id === id).error, code)
  })

  test("an instance's own error status resolves like wx.request, even with an anygate-like body", async () => {
    const { cloud } = await app()
    const res = await cloud.callContainer({ path: '/node/fail' })
    assert.equal(res.statusCode, 500)
    assert.equal(res.data.code, 'BACKEND_DOWN')
    assert.equal(res.header['x-cloudbase-upstream-status-code'], '500')
    assert.match(res.requestId, UUID)
  })

  test('anonymous client (login: false): UNAUTHENTICATED on an auth: required route, no retry', async () => {
    const { cloud, wx } = await app({ login: false })
    const open = await cloud.callContainer({ path: '/api/open' })
    assert.equal(open.data.headers['x-wx-openid'], undefined)
    assert.equal(open.data.headers['x-wx-env'], 'test-env')
    const err = await rejection(cloud.callContainer({ path: '/private/me' }))
    assertGatewayError(err, { code: 'UNAUTHENTICATED', errCode: -401001, statusCode: 401 }, wx)
    assert.equal(wx.logins, 0)
    assert.equal(wx.log.length, 2)
  })

  test('client-side errors: bad options, another env, timeout, no connection', async () => {
    const { cloud, wx } = await app({ login: false })
    let err = await rejection(cloud.callContainer({ header: SDK }))
    assert.equal(err.code, 'INVALID_PARAM')
    assert.equal(err.errCode, -401002)
    assert.match(err.errMsg, /^cloud\.callContainer:fail -401002 INVALID_PARAM: `path` must be/)
    err = await rejection(cloud.callContainer({ config: { env: 'prod-env' }, path: '/api/x' }))
    assert.equal(err.code, 'INVALID_PARAM')
    assert.match(err.errMsg, /prod-env/)
    assert.equal(wx.log.length, 0, 'nothing sent')
    err = await rejection(cloud.callContainer({ path: '/node/hang', timeout: 100 }))
    assert.equal(err.code, 'TIMEOUT')
    assert.equal(err.errCode, 102002)
    assert.match(err.errMsg, /request:fail timeout/)
    const closed = (await freshModule()).init({ baseUrl: `http://${world.params.down}`, login: false })
    err = await rejection(closed.callContainer({ path: '/x' }))
    assert.equal(err.code, 'NETWORK_ERROR')
    assert.equal(err.errCode, -1)
    assert.equal(err.requestId, undefined)
  })
})

describe('callback style', () => {
  test('success/complete get the result, fail/complete the error, and nothing is returned', async () => {
    const { cloud } = await app({ instance: 'lhins-echo' })
    const seen = []
    const done = new Promise((resolve) => {
      const ret = cloud.callContainer({
        path: '/api/cb',
        method: 'POST',
        data: { x: 1 },
        success: (res) => seen.push(['success', res]),
        fail: (err) => seen.push(['fail', err]),
        complete: (res) => {
          seen.push(['complete', res])
          resolve()
        },
      })
      assert.equal(ret, undefined)
    })
    await done
    assert.deepEqual(seen.map((s) => s[0]), ['success', 'complete'])
    assert.equal(seen[0][1].data.path, '/api/cb')
    assert.equal(seen[0][1], seen[1][1])

    const failed = []
    await new Promise((resolve) => {
      cloud.callContainer({
        path: '/x',
        header: { 'X-Vm-Service': 'lhins-nope' },
        success: (res) => failed.push(['success', res]),
        fail: (err) => failed.push(['fail', err]),
        complete: (res) => {
          failed.push(['complete', res])
          resolve()
        },
      })
    })
    assert.deepEqual(failed.map((s) => s[0]), ['fail', 'complete'])
    assert.equal(failed[0][1].code, 'SERVICE_NOT_FOUND')
    assert.match(failed[0][1].requestId, UUID)
  })

  test('the CommonJS build (what a Mini Program requires) works the same', async () => {
    const cjs = createRequire(import.meta.url)('../index.js')
    globalThis.wx = makeWx({ wechat: world.wechat, appid: OWNER })
    const cloud = cjs.init({ baseUrl: world.baseUrl, instance: 'lhins-echo' })
    const res = await new Promise((resolve, reject) =>
      cloud.callContainer({ path: '/api/cjs', success: resolve, fail: reject })
    )
    assert.equal(res.data.path, '/api/cjs')
    assert.equal(res.data.headers['x-wx-openid'], 'o-alice')
    await cloud.init() // `await c1.init()` in code written for wx.cloud.Cloud keeps working
  })
})
