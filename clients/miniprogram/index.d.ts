// Types of the anygate Mini Program client (index.mjs / index.js).

/** anygate's error codes (SPEC §8) and the client's own. */
export type AnygateErrorCode =
  | 'SERVICE_NOT_FOUND'
  | 'INVALID_HOST'
  | 'INVALID_PATH'
  | 'UNAUTHENTICATED'
  | 'ACCESS_DENIED'
  | 'EXCEED_MAX_PAYLOAD_SIZE'
  | 'EXCEED_RATELIMIT'
  | 'REQUEST_SERVICE_FAILED'
  | 'SERVICE_TIMEOUT'
  | 'INVALID_REQUEST'
  | 'SYS_ERR'
  | 'NOT_FOUND'
  | 'INVALID_PARAM'
  | 'TIMEOUT'
  | 'NETWORK_ERROR'
  | 'WX_LOGIN_FAILED'
  | 'BAD_RESPONSE'

/** `errCode` for each `code`, numbered like wx.cloud's error codes. */
export declare const errCodes: Readonly<Record<AnygateErrorCode, number>>

/** What callContainer rejects with (or passes to `fail`): wx.cloud's errCode and errMsg, and more. */
export interface CallContainerError extends Error {
  /** A wx.cloud error code, e.g. -501009 for SERVICE_NOT_FOUND, 102002 for a timeout. */
  errCode: number
  /** `cloud.callContainer:fail <errCode> <code>: <message> (requestId: <id>)`; also `message`. */
  errMsg: string
  /** anygate's error code (or the client's own, for failures without a gateway answer). */
  code: AnygateErrorCode | string
  /** The gateway's X-Cloudbase-Request-Id: look the request up with it. Absent without an answer. */
  requestId?: string
  /** The HTTP status of the gateway's answer, when there was one. */
  statusCode?: number
  /** The answer's headers, when there was one. */
  header?: Record<string, string>
  /** The answer's body: anygate's `{code, message, requestId}`. */
  data?: unknown
}

/** What callContainer resolves with (or passes to `success`). */
export interface CallContainerResult<T = any> {
  /** The body: parsed JSON when dataType is 'json' and it parses, else a string or ArrayBuffer. */
  data: T
  statusCode: number
  header: Record<string, string>
  /** wx.request's cookies (Mini Programs only). */
  cookies?: string[]
  errMsg: 'cloud.callContainer:ok'
  /** X-Cloudbase-Request-Id of this request. */
  requestId?: string
  /** The same as requestId, under wx.cloud's name. */
  callID?: string
}

export interface CallContainerOptions<T = any> {
  /** `{ env }`: when init() was given `env` too, they must be equal. */
  config?: { env?: string; [key: string]: unknown }
  /** The path on the gateway, starting with `/`; a query string may follow. */
  path: string
  /** Default GET. */
  method?: 'GET' | 'POST' | 'PUT' | 'DELETE' | 'PATCH' | 'HEAD' | 'OPTIONS' | 'TRACE' | 'CONNECT' | string
  /** With `X-WX-SERVICE: tcbanyservice` and `X-Vm-Service: <instance>`: an SDK call. */
  header?: Record<string, string>
  /** GET: the query string; else the body (JSON unless the content-type says form). */
  data?: string | Record<string, any> | ArrayBuffer
  /** Milliseconds. */
  timeout?: number
  /** 'json' (default) parses the body; anything else keeps it as it came. */
  dataType?: 'json' | string
  /** 'text' (default) or 'arraybuffer'. */
  responseType?: 'text' | 'arraybuffer'
  success?: (res: CallContainerResult<T>) => void
  fail?: (err: CallContainerError) => void
  complete?: (res: CallContainerResult<T> | CallContainerError) => void
  /** Anything else is passed on to wx.request (enableHttp2, enableCache, ...). */
  [option: string]: unknown
}

/** The subset of `wx` the client uses. */
export interface WxLike {
  request(options: Record<string, any>): unknown
  login?(options: { success?: (res: { code: string }) => void; fail?: (err: { errMsg: string }) => void }): unknown
  getStorageSync?(key: string): any
  setStorageSync?(key: string, value: any): void
  removeStorageSync?(key: string): void
  getAccountInfoSync?(): { miniProgram: { appId: string } }
}

export interface InitOptions {
  /** The gateway's origin, e.g. `https://api.example.com`. */
  baseUrl: string
  /** The Mini Program's AppID, sent with the wx.login code. Default: the running Mini Program's. */
  appid?: string
  /** The CloudBase environment id; calls whose `config.env` names another env fail. */
  env?: string
  /**
   * Default instance: calls without `X-WX-SERVICE` become SDK calls to it, and SDK calls
   * without `X-Vm-Service` go to it. Without it, calls without `X-WX-SERVICE` are HTTP access.
   */
  instance?: string
  /**
   * WeChat Cloud Run service names to instances: a call with `X-WX-SERVICE: <name>` listed here
   * is sent as `X-WX-SERVICE: tcbanyservice` + `X-Vm-Service: <instance>`.
   */
  services?: Record<string, string>
  /** false: never log in (a gateway without session login); calls go anonymous. */
  login?: boolean
  /**
   * The page's own token (H5): called before each call, and with `{refresh: true}` once after
   * the gateway refused a token. Return null for an anonymous call.
   */
  getToken?: (options: { refresh: boolean }) => string | null | undefined | Promise<string | null | undefined>
  /** The `wx` object (default: the global); any object with wx.request's shape. */
  wx?: WxLike
  /** fetch to use when there is no `wx` (default: the global). */
  fetch?: typeof fetch
}

export interface SessionInfo {
  token: string
  openid: string
  /** Date.now() after which the token is renewed before use. */
  refreshAt: number
}

export interface Client {
  /** wx.cloud.callContainer through anygate: Promise style, or success/fail/complete. */
  callContainer<T = any>(options: CallContainerOptions<T> & { success: Function }): void
  callContainer<T = any>(options: CallContainerOptions<T> & { fail: Function }): void
  callContainer<T = any>(options: CallContainerOptions<T> & { complete: Function }): void
  callContainer<T = any>(options: CallContainerOptions<T>): Promise<CallContainerResult<T>>
  /** Logs in now, or reuses a fresh token; null without wx.login (H5, login: false). */
  login(): Promise<SessionInfo | null>
  /** Forgets the token, in memory and in storage. */
  logout(): void
  /** Resolves at once: for code written `await cloud.init()`. */
  init(): Promise<void>
}

export declare function init(options: InitOptions): Client
