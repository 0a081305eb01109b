// `npm run demo`: the client against a real gateway on loopback, as docs/miniprogram-client.md
// shows it. The gateway (target/debug/anygate, or $ANYGATE_BIN) runs in session mode with an
// `anygate echo` instance; a stand-in for WeChat's jscode2session and a `wx` global whose
// request runs on fetch play the Mini Program's side (the test harness's).
import { startWorld, waitFor, OWNER } from '../test/harness.mjs'
import { makeWx } from '../test/fakewx.mjs'

const world = await startWorld()
try {
  globalThis.wx = makeWx({ wechat: world.wechat, appid: OWNER })
  const { init } = await import('../index.mjs')
  const show = (title, value) => console.log(`// ${title}\n${JSON.stringify(value, null, 2)}\n`)

  const cloud = init({ baseUrl: world.baseUrl, env: 'test-env' })
  const res = await cloud.callContainer({
    config: { env: 'test-env' },
    header: { 'X-WX-SERVICE': 'tcbanyservice', 'X-Vm-Service': 'lhins-echo' },
    path: '/api/user/info',
    method: 'POST',
    data: { userId: 123 },
  })
  const { 'x-wx-openid': openid, 'x-wx-appid': appid, 'x-wx-env': env } = res.data.headers
  show('an SDK call: what the instance received, and the result', {
    instanceSaw: { method: res.data.method, path: res.data.path, 'x-wx-openid': openid, 'x-wx-appid': appid, 'x-wx-env': env },
    statusCode: res.statusCode,
    errMsg: res.errMsg,
    requestId: res.requestId,
  })

  const http = await cloud.callContainer({ path: '/api/orders', data: { page: 2 } })
  show('HTTP access (no X-WX-SERVICE): the trigger path /api is stripped', {
    instanceSaw: { method: http.data.method, path: http.data.path, query: http.data.query },
  })

  await Promise.all([1, 2, 3, 4, 5].map((i) => cloud.callContainer({ path: `/api/item/${i}` })))
  show('logins for 7 calls (5 of them concurrent), counted at jscode2session', world.wechat.state.exchanges)

  try {
    await cloud.callContainer({
      header: { 'X-WX-SERVICE': 'tcbanyservice', 'X-Vm-Service': 'lhins-nope' },
      path: '/api/user/info',
    })
  } catch (err) {
    console.log(`// an error: err.errMsg\n${err.errMsg}\n`)
    show('err.errCode, err.code, err.statusCode, err.requestId', [err.errCode, err.code, err.statusCode, err.requestId])
    const find = () => world.gw.accessLog().split('\n').find((l) => l.includes(err.requestId))
    await waitFor('the access log line', () => Boolean(find()), 5000) // written in batches
    const line = find()
    console.log(`// the gateway's access log line for that id\n${line}`)
  }
} finally {
  await world.stop()
}
