// Checked by `tsc --noEmit -p test/types` (test/build.test.mjs): the types accept the calls
// the README shows and refuse wrong ones (each @ts-expect-error must be an error).
import { init, errCodes, type CallContainerError, type CallContainerResult } from 'anygate-miniprogram'

interface User {
  openid: string
}

const cloud = init({ baseUrl: 'https://api.example.com', env: 'test-1a2b3c', instance: 'lhins-abc123', services: { 'hello-world': 'lhins-abc123' } })

async function promiseStyle(): Promise<string> {
  const res = await cloud.callContainer<User>({
    config: { env: 'test-1a2b3c' },
    header: { 'X-WX-SERVICE': 'tcbanyservice', 'X-Vm-Service': 'lhins-abc123' },
    path: '/api/user/info',
    method: 'POST',
    data: { userId: 123 },
    timeout: 5000,
    dataType: 'json',
    responseType: 'text',
  })
  const status: number = res.statusCode
  const id: string | undefined = res.requestId
  void status
  void id
  return res.data.openid
}

function callbackStyle(): void {
  const nothing: void = cloud.callContainer({
    path: '/api/user/info',
    success: (res: CallContainerResult) => console.log(res.data),
    fail: (err: CallContainerError) => console.error(err.errCode, err.errMsg, err.requestId),
  })
  void nothing
}

async function errors(): Promise<void> {
  try {
    await cloud.callContainer({ path: '/x' })
  } catch (e) {
    const err = e as CallContainerError
    if (err.code === 'UNAUTHENTICATED' || err.errCode === errCodes.SERVICE_TIMEOUT) return
  }
}

const page = init({ baseUrl: 'https://api.example.com', getToken: ({ refresh }) => (refresh ? null : 'v1.x.y') })
void page.login().then((s) => s && s.openid)

// @ts-expect-error baseUrl is required
init({ appid: 'wx1234567890abcdef' })
// @ts-expect-error path is required
void cloud.callContainer({ method: 'GET' })
// @ts-expect-error responseType is text or arraybuffer
void cloud.callContainer({ path: '/', responseType: 'blob' })

void promiseStyle
void callbackStyle
void errors
