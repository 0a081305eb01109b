// A `wx` global for Node: wx.request on fetch with the Mini Program's rules (data encoding,
// JSON parsing, success/fail/complete, errMsg), wx.login handing out codes the fake WeChat
// accepts, and the sync storage API. `log` records every request and its answer.

/** wx.request's data rules: GET gets a query string; JSON body unless form-encoded. */
function encode(method, url, header, data) {
  if (data === undefined || data === null) return { url, body: undefined }
  const ct = Object.keys(header).find((k) => k.toLowerCase() === 'content-type')
  const type = ct ? header[ct] : 'application/json'
  // encodeURIComponent(k)=encodeURIComponent(v)&..., as wx.request's documentation says
  const form = (obj) =>
    Object.entries(obj).map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join('&')
  if (method === 'GET') {
    const q = typeof data === 'string' ? data : form(data)
    return { url: q ? `${url}${url.includes('?') ? '&' : '?'}${q}` : url, body: undefined }
  }
  if (typeof data === 'string' || data instanceof ArrayBuffer) return { url, body: data }
  return { url, body: type.includes('x-www-form-urlencoded') ? form(data) : JSON.stringify(data) }
}

export function makeWx({ wechat, appid, user = 'alice' }) {
  const storage = new Map()
  const log = []
  const wx = {
    log,
    storage,
    /** Called with the request options before sending; may change them (a meddling proxy). */
    tamper: null,
    /** How many times wx.login was called. */
    logins: 0,
    user,
    getAccountInfoSync: () => ({ miniProgram: { appId: appid, envVersion: 'develop' } }),
    getStorageSync: (k) => (storage.has(k) ? structuredClone(storage.get(k)) : ''),
    setStorageSync: (k, v) => void storage.set(k, structuredClone(v)),
    removeStorageSync: (k) => void storage.delete(k),
    /** Set to make wx.login fail (no network, the user's WeChat refusing). */
    loginFails: false,
    login({ success, fail, complete }) {
      wx.logins++
      const ok = !wx.loginFails
      const res = ok ? { code: wechat.issue(wx.user), errMsg: 'login:ok' } : { errMsg: 'login:fail timeout' }
      setTimeout(() => {
        if (ok) success && success(res)
        else fail && fail(res)
        complete && complete(res)
      }, 0)
    },
    request(opts) {
      const o = { method: 'GET', dataType: 'json', responseType: 'text', header: {}, ...opts }
      o.header = { ...o.header }
      if (wx.tamper) wx.tamper(o)
      const method = o.method.toUpperCase()
      if (!Object.keys(o.header).some((k) => k.toLowerCase() === 'content-type')) {
        o.header['content-type'] = 'application/json'
      }
      const { url, body } = encode(method, o.url, o.header, o.data)
      const entry = { method, url, header: o.header }
      log.push(entry)
      const ctrl = new AbortController()
      const timer = setTimeout(() => ctrl.abort(), o.timeout || 60000)
      fetch(url, { method, headers: o.header, body, signal: ctrl.signal })
        .then(async (r) => {
          const header = {}
          r.headers.forEach((v, k) => (header[k] = v))
          let data
          if (o.responseType === 'arraybuffer') data = await r.arrayBuffer()
          else {
            data = await r.text()
            if (o.dataType === 'json') {
              try {
                data = JSON.parse(data)
              } catch {}
            }
          }
          clearTimeout(timer)
          entry.statusCode = r.status
          entry.requestId = header['x-cloudbase-request-id']
          const res = { data, statusCode: r.status, header, cookies: [], errMsg: 'request:ok' }
          o.success && o.success(res)
          o.complete && o.complete(res)
        })
        .catch((e) => {
          clearTimeout(timer)
          const res = { errMsg: `request:fail ${ctrl.signal.aborted ? 'timeout' : e.message}`, errno: 600001 }
          entry.failed = res.errMsg
          o.fail && o.fail(res)
          o.complete && o.complete(res)
        })
    },
  }
  return wx
}
