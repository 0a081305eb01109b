// The client in an H5 page: no `wx` global, so it sends with fetch, and the page gives the
// token (here minted by `anygate token` with the gateway's key, as the page's own server would).
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { startWorld } from './harness.mjs'
import { init } from '../index.mjs'

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$/

let world
let token
const realFetch = globalThis.fetch
/** Every request the client sends, by counting calls to the global fetch. */
const sent = []

before(async () => {
  assert.equal(typeof globalThis.wx, 'undefined', 'no wx global in a page')
  world = await startWorld()
  token = await world.gw.mintToken('o-page-user')
  globalThis.fetch = (url, init) => {
    sent.push({ url: String(url), init })
    return realFetch(url, init)
  }
})
after(async () => {
  globalThis.fetch = realFetch
  if (world) await world.stop()
})

async function rejection(promise) {
  try {
    await promise
  } catch (e) {
    return e
  }
  assert.fail('expected the call to fail')
}

test('an SDK call through fetch, with the token from getToken', async () => {
  const asked = []
  const cloud = init({
    baseUrl: world.baseUrl,
    instance: 'lhins-echo',
    getToken: (o) => {
      asked.push(o)
      return Promise.resolve(token)
    },
  })
  const res = await cloud.callContainer({ path: '/api/user/info', method: 'POST', data: { userId: 123 } })
  assert.equal(res.statusCode, 200)
  assert.equal(res.errMsg, 'cloud.callContainer:ok')
  assert.equal(res.data.path, '/api/user/info')
  assert.equal(res.data.method, 'POST')
  assert.equal(res.data.bodyBytes, JSON.stringify({ userId: 123 }).length)
  assert.equal(res.data.headers['content-type'], 'application/json')
  assert.equal(res.data.headers['x-wx-openid'], 'o-page-user')
  assert.equal(res.data.headers.authorization, undefined)
  assert.match(res.requestId, UUID)
  assert.equal(res.header['x-cloudbase-request-id'], res.requestId)
  assert.deepEqual(asked, [{ refresh: false }])
})

test('HTTP access through fetch: query from GET data, form and text bodies, dataType and responseType', async () => {
  const cloud = init({ baseUrl: `${world.baseUrl}/`, getToken: () => token })
  const get = await cloud.callContainer({ path: '/api/list', data: { q: 'a b', page: 2 } })
  assert.equal(get.data.path, '/list')
  assert.equal(get.data.query, 'q=a%20b&page=2')
  assert.equal(get.data.headers['x-wx-openid'], 'o-page-user')
  const form = await cloud.callContainer({
    path: '/api/form',
    method: 'post',
    header: { 'Content-Type': 'application/x-www-form-urlencoded' },
    data: { a: '1', b: 'x y' },
  })
  assert.equal(form.data.method, 'POST')
  assert.equal(form.data.bodyBytes, 'a=1&b=x%20y'.length)
  assert.equal(form.data.headers['content-type'], 'application/x-www-form-urlencoded')
  const text = await cloud.callContainer({ path: '/api/t', method: 'PUT', data: 'raw', dataType: 'text' })
  assert.equal(typeof text.data, 'string')
  assert.equal(JSON.parse(text.data).bodyBytes, 3)
  const bin = await cloud.callContainer({ path: '/api/b', responseType: 'arraybuffer' })
  assert.ok(bin.data instanceof ArrayBuffer)
  assert.equal(JSON.parse(new TextDecoder().decode(bin.data)).path, '/b')
})

test('UNAUTHENTICATED asks getToken({refresh: true}) once and retries once', async () => {
  const asked = []
  const cloud = init({
    baseUrl: world.baseUrl,
    getToken: (o) => {
      asked.push(o)
      return o.refresh ? token : `${token}stale`
    },
  })
  const mark = sent.length
  const res = await cloud.callContainer({ path: '/api/retry' })
  assert.equal(res.data.headers['x-wx-openid'], 'o-page-user')
  assert.deepEqual(asked, [{ refresh: false }, { refresh: true }])
  assert.equal(sent.length - mark, 2)

  // A getToken that throws fails the call (it does not throw from callContainer).
  const broken = init({ baseUrl: world.baseUrl, getToken: () => { throw new Error('no session') } })
  const thrown = await rejection(broken.callContainer({ path: '/api/x' }))
  assert.equal(thrown.message, 'no session')

  // A getToken that only has bad tokens: the call fails after one retry.
  const bad = init({ baseUrl: world.baseUrl, getToken: () => 'v1.bad.token' })
  const before = sent.length
  const err = await rejection(bad.callContainer({ path: '/api/retry' }))
  assert.equal(err.code, 'UNAUTHENTICATED')
  assert.equal(err.errCode, -401001)
  assert.equal(sent.length - before, 2, 'the call and one retry, no loop')
})

test('anygate errors through fetch carry the request id', async () => {
  const cloud = init({ baseUrl: world.baseUrl })
  const err = await rejection(
    cloud.callContainer({ path: '/x', header: { 'X-WX-SERVICE': 'tcbanyservice', 'X-Vm-Service': 'lhins-nope' } })
  )
  assert.ok(err instanceof Error)
  assert.equal(err.code, 'SERVICE_NOT_FOUND')
  assert.equal(err.errCode, -501009)
  assert.equal(err.statusCode, 404)
  assert.match(err.requestId, UUID)
  assert.equal(err.header['x-cloudbase-request-id'], err.requestId)
  assert.ok(err.errMsg.endsWith(`(requestId: ${err.requestId})`))
  // No token at all: anonymous, and an auth: required route refuses without a retry.
  const before = sent.length
  const anon = await rejection(cloud.callContainer({ path: '/private/me' }))
  assert.equal(anon.code, 'UNAUTHENTICATED')
  assert.equal(sent.length - before, 1)
  const open = await cloud.callContainer({ path: '/api/open' })
  assert.equal(open.data.headers['x-wx-openid'], undefined)
})

test('timeout and callbacks through fetch', async () => {
  const cloud = init({ baseUrl: world.baseUrl })
  const err = await rejection(cloud.callContainer({ path: '/node/hang', timeout: 100 }))
  assert.equal(err.code, 'TIMEOUT')
  assert.equal(err.errCode, 102002)
  const res = await new Promise((resolve, reject) =>
    cloud.callContainer({ path: '/api/cb', success: resolve, fail: reject })
  )
  assert.equal(res.data.path, '/cb')
})
