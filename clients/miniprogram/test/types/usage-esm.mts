// The same package seen from an ES module (its `import` condition).
import { init, type Client } from 'anygate-miniprogram'

const cloud: Client = init({ baseUrl: 'https://api.example.com' })
const res = await cloud.callContainer<{ path: string }>({ path: '/api/x' })
const path: string = res.data.path
void path
