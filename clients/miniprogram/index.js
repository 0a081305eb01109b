'use strict'
// GENERATED from index.mjs by scripts/build-cjs.mjs: do not edit, run `npm run build`.
// anygate client for WeChat Mini Programs and H5 pages: wx.cloud.callContainer's call shape,
// sent to an anygate gateway. No dependencies. Written in ES2015 plus Promise (no async/await,
// no optional chaining) so that every Mini Program base library runs it untranspiled.
// index.js (CommonJS) is generated from this file by scripts/build-cjs.mjs: edit this one.

const LOGIN_PATH = '/.anygate/login'
const STORAGE_PREFIX = 'anygate_session:'
const OK_MSG = 'cloud.callContainer:ok'
const FAIL_MSG = 'cloud.callContainer:fail'
/** A token is renewed this long before it expires: a tenth of its lifetime, at most 5 min. */
const EARLY_MAX_MS = 5 * 60 * 1000
/** How long wx.login may take (its own option). */
const LOGIN_TIMEOUT_MS = 10000
/** wx.request's own default timeout. */
const DEFAULT_TIMEOUT_MS = 60000

/**
 * `errCode` of each anygate error code (SPEC §8), from wx.cloud's own error code tables where
 * one means the same thing; `code` keeps anygate's name.
 */
const errCodes = {
  SERVICE_NOT_FOUND: -501009, // the resource does not exist
  INVALID_HOST: -501009,
  INVALID_PATH: -501000, // "Path access permission error"
  UNAUTHENTICATED: -401001, // no permission to use the API
  ACCESS_DENIED: -401001,
  EXCEED_MAX_PAYLOAD_SIZE: -606001, // "request body over 100KB"
  EXCEED_RATELIMIT: -501003, // request quota exceeded
  REQUEST_SERVICE_FAILED: -501001, // cloud system error
  SERVICE_TIMEOUT: 102002, // "request timed out"
  INVALID_REQUEST: -501007, // parameter error
  SYS_ERR: -501001,
  NOT_FOUND: -501009,
  // Raised by the client itself (no gateway answer to map):
  INVALID_PARAM: -401002, // an option of the call or of init() is wrong
  TIMEOUT: 102002, // `timeout` passed before an answer
  NETWORK_ERROR: -1, // the request could not be sent or had no answer
  WX_LOGIN_FAILED: -1, // wx.login failed
  BAD_RESPONSE: -1, // the login answered something that is not a token
}

/** Logins shared by every client of one app on one gateway: `appid@baseUrl` -> session. */
const sessions = {}

function has(obj, key) {
  return Object.prototype.hasOwnProperty.call(obj, key)
}

/** The value of header `name` (any case) in a plain header object, or undefined. */
function headerGet(header, name) {
  if (!header) return undefined
  const lower = name.toLowerCase()
  for (const k in header) {
    if (has(header, k) && k.toLowerCase() === lower) return header[k]
  }
  return undefined
}

function errorMessage(errCode, code, message, requestId) {
  return FAIL_MSG + ' ' + errCode + ' ' + code + ': ' + message +
    (requestId ? ' (requestId: ' + requestId + ')' : '')
}

/** The error callContainer rejects with: an Error carrying errCode and errMsg like wx.cloud's. */
function makeError(code, message, requestId, res) {
  const errCode = has(errCodes, code) ? errCodes[code] : -1
  const err = new Error(errorMessage(errCode, code, message, requestId))
  err.errCode = errCode
  err.errMsg = err.message
  err.code = code
  err.requestId = requestId
  if (res) {
    err.statusCode = res.statusCode
    err.header = res.header
    err.data = res.data
  }
  return err
}

function decodeText(data) {
  if (typeof data === 'string') return data
  if (data instanceof ArrayBuffer) {
    if (typeof TextDecoder === 'function') return new TextDecoder().decode(data)
    let s = ''
    const bytes = new Uint8Array(data)
    for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i])
    return s
  }
  return null
}

/**
 * anygate's own error answer (SPEC §8) as an Error, or null when the response is not one: a
 * status under 400, or an answer the instance gave (X-Cloudbase-Upstream-Status-Code is its
 * status then), which is the backend's own business and resolves like wx.request does.
 */
function gatewayError(res) {
  if (!(res.statusCode >= 400)) return null
  const upstream = headerGet(res.header, 'X-Cloudbase-Upstream-Status-Code')
  if (upstream !== undefined && /^\d+$/.test(String(upstream).trim())) return null
  let body = res.data
  if (!body || typeof body !== 'object' || body instanceof ArrayBuffer) {
    const text = decodeText(body)
    if (text === null) return null
    try {
      body = JSON.parse(text)
    } catch (e) {
      return null
    }
  }
  if (!body || typeof body.code !== 'string' || !/^[A-Z][A-Z_]*$/.test(body.code) ||
    typeof body.requestId !== 'string') {
    return null
  }
  const requestId = headerGet(res.header, 'X-Cloudbase-Request-Id') || body.requestId
  return makeError(body.code, String(body.message || body.code), requestId, res)
}

/** A failed request (no HTTP answer) as an Error. */
function transportError(e) {
  const msg = (e && (e.errMsg || e.message)) || String(e)
  return makeError(/timeout|timed out/i.test(msg) ? 'TIMEOUT' : 'NETWORK_ERROR', msg)
}

/** Sends through wx.request: the Mini Program does data encoding and JSON parsing itself. */
function wxTransport(wxApi) {
  return function send(req) {
    return new Promise(function (resolve, reject) {
      const args = {}
      for (const k in req) if (has(req, k) && req[k] !== undefined) args[k] = req[k]
      args.success = resolve
      args.fail = reject
      wxApi.request(args)
    })
  }
}

function queryString(data) {
  const parts = []
  for (const k in data) {
    if (has(data, k) && data[k] !== undefined) {
      parts.push(encodeURIComponent(k) + '=' + encodeURIComponent(data[k]))
    }
  }
  return parts.join('&')
}

function isBinary(data) {
  return data instanceof ArrayBuffer || ArrayBuffer.isView(data)
}

/** Sends through fetch (H5 pages, Node), with wx.request's encoding and decoding rules. */
function fetchTransport(fetchFn) {
  return function send(req) {
    const method = String(req.method || 'GET').toUpperCase()
    const header = {}
    let contentType = ''
    for (const k in req.header) {
      if (has(req.header, k)) {
        header[k] = String(req.header[k])
        if (k.toLowerCase() === 'content-type') contentType = header[k]
      }
    }
    if (!contentType) {
      contentType = 'application/json'
      header['content-type'] = contentType
    }
    let url = req.url
    let body
    const data = req.data
    if (data !== undefined && data !== null) {
      if (method === 'GET' || method === 'HEAD') {
        const q = typeof data === 'string' ? data : isBinary(data) ? '' : queryString(data)
        if (q) url += (url.indexOf('?') < 0 ? '?' : '&') + q
      } else if (typeof data === 'string' || isBinary(data)) {
        body = data
      } else if (/application\/x-www-form-urlencoded/i.test(contentType)) {
        body = queryString(data)
      } else {
        body = JSON.stringify(data)
      }
    }
    const controller = typeof AbortController === 'function' ? new AbortController() : null
    const init = { method: method, headers: header, body: body }
    if (controller) init.signal = controller.signal
    return new Promise(function (resolve, reject) {
      const timer = setTimeout(function () {
        if (controller) controller.abort()
        reject({ errMsg: 'request:fail timeout' })
      }, req.timeout > 0 ? req.timeout : DEFAULT_TIMEOUT_MS)
      fetchFn(url, init)
        .then(function (res) {
          const out = { statusCode: res.status, header: {} }
          res.headers.forEach(function (v, k) {
            out.header[k] = v
          })
          if (req.responseType === 'arraybuffer') {
            return res.arrayBuffer().then(function (buf) {
              out.data = buf
              return out
            })
          }
          return res.text().then(function (text) {
            out.data = text
            if (req.dataType === 'json') {
              try {
                out.data = JSON.parse(text)
              } catch (e) {
                // wx.request keeps the text when it is not JSON
              }
            }
            return out
          })
        })
        .then(
          function (out) {
            clearTimeout(timer)
            resolve(out)
          },
          function (e) {
            clearTimeout(timer)
            const cause = e && e.cause && (e.cause.code || e.cause.message)
            reject({ errMsg: 'request:fail ' + ((e && e.message) || e) + (cause ? ' (' + cause + ')' : '') })
          }
        )
    })
  }
}

/** wx.login as a Promise of the code. */
function wxLogin(wxApi) {
  return new Promise(function (resolve, reject) {
    wxApi.login({
      timeout: LOGIN_TIMEOUT_MS,
      success: function (res) {
        if (res && res.code) resolve(res.code)
        else reject(makeError('WX_LOGIN_FAILED', (res && res.errMsg) || 'wx.login gave no code'))
      },
      fail: function (e) {
        reject(makeError('WX_LOGIN_FAILED', (e && e.errMsg) || 'wx.login failed'))
      },
    })
  })
}

/**
 * One app's login on one gateway: the token in memory and in wx storage until shortly before
 * it expires, and at most one login in flight, which every waiting call shares.
 */
function loginSession(wxApi, send, baseUrl, appid) {
  const key = STORAGE_PREFIX + appid + '@' + baseUrl
  if (has(sessions, key)) return sessions[key]
  let current = null // { token, openid, refreshAt }
  let loaded = false
  let inFlight = null

  function load() {
    if (loaded) return
    loaded = true
    try {
      const s = wxApi.getStorageSync(key)
      if (s && typeof s.token === 'string' && typeof s.refreshAt === 'number') current = s
    } catch (e) {
      // no storage: memory only
    }
  }

  function store(s) {
    try {
      if (s) wxApi.setStorageSync(key, s)
      else wxApi.removeStorageSync(key)
    } catch (e) {
      // storage full or unavailable: the token still lives in memory
    }
  }

  function login() {
    return wxLogin(wxApi)
      .then(function (code) {
        return send({
          url: baseUrl + LOGIN_PATH,
          method: 'POST',
          header: { 'content-type': 'application/json' },
          data: { appid: appid, code: code },
          dataType: 'json',
          responseType: 'text',
        }).catch(function (e) {
          throw transportError(e)
        })
      })
      .then(function (res) {
        const err = gatewayError(res)
        if (err) {
          err.message = err.errMsg = err.errMsg.replace(err.code + ': ', err.code + ': login: ')
          throw err
        }
        const d = res.data
        if (res.statusCode !== 200 || !d || typeof d.token !== 'string' || !(d.expiresIn > 0)) {
          throw makeError('BAD_RESPONSE',
            'POST ' + LOGIN_PATH + ' answered HTTP ' + res.statusCode +
            ' without a token: is the identity plugin in session mode on this gateway?',
            headerGet(res.header, 'X-Cloudbase-Request-Id'), res)
        }
        const lifeMs = d.expiresIn * 1000
        return {
          token: d.token,
          openid: d.openid,
          refreshAt: Date.now() + lifeMs - Math.min(EARLY_MAX_MS, lifeMs / 10),
        }
      })
  }

  const session = {
    /** A token fresh enough to send, logging in when there is none. */
    token: function () {
      load()
      if (current && Date.now() < current.refreshAt) return Promise.resolve(current.token)
      if (!inFlight) {
        inFlight = login().then(
          function (s) {
            inFlight = null
            current = s
            store(s)
            return s.token
          },
          function (e) {
            inFlight = null
            throw e
          }
        )
      }
      return inFlight
    },
    /** The gateway refused `token`: forget it, unless another call already replaced it. */
    invalidate: function (token) {
      load()
      if (current && current.token === token) {
        current = null
        store(null)
      }
    },
    info: function () {
      return current && { token: current.token, openid: current.openid, refreshAt: current.refreshAt }
    },
    retry: true,
  }
  sessions[key] = session
  return session
}

/** The page's own token source (H5): getToken({refresh}) returns a token, null, or a Promise. */
function pageTokens(getToken) {
  let refresh = false
  return {
    token: function () {
      const r = refresh
      refresh = false
      return new Promise(function (resolve) {
        resolve(getToken({ refresh: r })) // a throwing getToken rejects the call
      }).then(function (t) {
        return t ? String(t) : null
      })
    },
    invalidate: function () {
      refresh = true
    },
    info: nothing,
    retry: true,
  }
}

function nothing() {
  return null
}

/** No login (no wx.login, or login: false): every call goes without a token. */
const anonymous = {
  token: function () {
    return Promise.resolve(null)
  },
  invalidate: nothing,
  info: nothing,
  retry: false,
}

/** Options of callContainer that are not passed on to wx.request. */
const OWN_OPTIONS = { config: 1, path: 1, success: 1, fail: 1, complete: 1, header: 1 }

/**
 * Creates a client. `baseUrl` is the gateway (`https://api.example.com`); `appid` defaults to
 * the running Mini Program's; `env` (optional) must match each call's `config.env` when both
 * are given; `instance` (optional) makes calls without `X-WX-SERVICE` SDK calls to that instance;
 * `services` (optional) maps WeChat Cloud Run service names in `X-WX-SERVICE` to instances.
 */
function init(options) {
  const opts = options || {}
  const baseUrl = String(opts.baseUrl || '').replace(/\/+$/, '')
  if (!/^https?:\/\/[^/?#]+$/.test(baseUrl)) {
    throw makeError('INVALID_PARAM',
      'init() needs `baseUrl`, the gateway\'s origin, like https://api.example.com (got ' +
      JSON.stringify(opts.baseUrl) + ')')
  }
  const wxApi = opts.wx || (typeof wx !== 'undefined' ? wx : null) // eslint-disable-line no-undef
  let send
  if (wxApi && typeof wxApi.request === 'function') {
    send = wxTransport(wxApi)
  } else {
    const f = opts.fetch || (typeof fetch === 'function' ? fetch : null)
    if (!f) throw makeError('INVALID_PARAM', 'no wx.request and no fetch: pass init({ fetch })')
    send = fetchTransport(f)
  }

  let auth = anonymous
  if (typeof opts.getToken === 'function') {
    auth = pageTokens(opts.getToken)
  } else if (opts.login !== false && wxApi && typeof wxApi.login === 'function') {
    let appid = opts.appid
    if (!appid && typeof wxApi.getAccountInfoSync === 'function') {
      try {
        appid = wxApi.getAccountInfoSync().miniProgram.appId
      } catch (e) {
        // left empty: reported below
      }
    }
    if (!appid) throw makeError('INVALID_PARAM', 'init() needs `appid` to log in')
    auth = loginSession(wxApi, send, baseUrl, String(appid))
  }
  const env = opts.env
  const instance = opts.instance
  const services = opts.services || {}

  function buildHeader(given) {
    const header = {}
    let service, serviceKey, vm
    for (const k in given) {
      if (!has(given, k)) continue
      header[k] = given[k]
      const lower = k.toLowerCase()
      if (lower === 'x-wx-service') {
        service = given[k]
        serviceKey = k
      } else if (lower === 'x-vm-service' || lower === 'x-anyservice-name') {
        vm = given[k]
      }
    }
    // A WeChat Cloud Run service name becomes an SDK call to the instance it is mapped to.
    if (service !== undefined && has(services, service)) {
      header[serviceKey] = 'tcbanyservice'
      if (vm === undefined) vm = header['X-Vm-Service'] = services[service]
    }
    if (instance) {
      if (service === undefined) header['X-WX-SERVICE'] = 'tcbanyservice'
      if (vm === undefined) header['X-Vm-Service'] = instance
    }
    return header
  }

  function run(o) {
    if (typeof o.path !== 'string' || o.path.charAt(0) !== '/') {
      return Promise.reject(makeError('INVALID_PARAM',
        '`path` must be a string starting with / (got ' + JSON.stringify(o.path) + ')'))
    }
    const callEnv = o.config && o.config.env
    if (env && callEnv && callEnv !== env) {
      return Promise.reject(makeError('INVALID_PARAM',
        'config.env ' + JSON.stringify(callEnv) + ' is not this client\'s env ' +
        JSON.stringify(env) + ': use another init() for that environment\'s gateway'))
    }
    const header = buildHeader(o.header || {})
    const ownAuth = headerGet(header, 'Authorization') !== undefined
    const base = {}
    for (const k in o) if (has(o, k) && !has(OWN_OPTIONS, k)) base[k] = o[k]
    base.url = baseUrl + o.path
    base.method = String(o.method || 'GET').toUpperCase()
    if (base.dataType === undefined) base.dataType = 'json'
    if (base.responseType === undefined) base.responseType = 'text'

    function attempt(token, retried) {
      const req = {}
      for (const k in base) req[k] = base[k]
      req.header = {}
      for (const k in header) req.header[k] = header[k]
      if (token && !ownAuth) req.header.Authorization = 'Bearer ' + token
      return send(req).then(
        function (res) {
          const err = gatewayError(res)
          if (err && err.code === 'UNAUTHENTICATED' && token && !ownAuth && !retried && auth.retry) {
            // One new login and one retry: an expired or rotated-out token. Never a loop.
            auth.invalidate(token)
            return auth.token().then(function (fresh) {
              return attempt(fresh, true)
            })
          }
          if (err) throw err
          const requestId = headerGet(res.header, 'X-Cloudbase-Request-Id')
          const out = {
            data: res.data,
            statusCode: res.statusCode,
            header: res.header,
            errMsg: OK_MSG,
            requestId: requestId,
            callID: requestId,
          }
          if (res.cookies) out.cookies = res.cookies
          return out
        },
        function (e) {
          throw transportError(e)
        }
      )
    }
    return auth.token().then(function (token) {
      return attempt(token, false)
    })
  }

  function callContainer(options) {
    const o = options || {}
    const p = run(o)
    if (typeof o.success !== 'function' && typeof o.fail !== 'function' &&
      typeof o.complete !== 'function') {
      return p
    }
    // Callback style, like wx APIs: nothing is returned and nothing rejects.
    p.then(
      function (res) {
        if (typeof o.success === 'function') o.success(res)
        if (typeof o.complete === 'function') o.complete(res)
      },
      function (err) {
        if (typeof o.fail === 'function') o.fail(err)
        if (typeof o.complete === 'function') o.complete(err)
      }
    )
    return undefined
  }

  return {
    callContainer: callContainer,
    /** Logs in now (or reuses a fresh token); resolves {token, openid, refreshAt} or null. */
    login: function () {
      return auth.token().then(function () {
        return auth.info()
      })
    },
    /** Forgets the token, in memory and in storage. */
    logout: function () {
      const info = auth.info()
      if (info) auth.invalidate(info.token)
    },
    /** For code written `await cloud.init()` after `new wx.cloud.Cloud(...)`: nothing to wait for. */
    init: function () {
      return Promise.resolve()
    },
  }
}

exports.errCodes = errCodes
exports.init = init
