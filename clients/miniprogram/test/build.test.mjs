// The package itself: the CommonJS file is the ES module converted, the types check, and the
// module stays small.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, readFileSync } from 'node:fs'
import { spawnSync } from 'node:child_process'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { generated } from '../scripts/build-cjs.mjs'
import * as esm from '../index.mjs'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
/** Budget for the minified + gzipped module (it measured 3.5KB when written). */
const GZIP_BUDGET = 5 * 1024

function devTool(name) {
  const bin = join(root, 'node_modules', '.bin', name)
  assert.ok(existsSync(bin), `${bin} is missing: run \`npm ci\` in clients/miniprogram (.ci/run does)`)
  return bin
}

test('index.js is index.mjs converted to CommonJS (run `npm run build` after editing index.mjs)', () => {
  assert.equal(readFileSync(join(root, 'index.js'), 'utf8'), generated())
  const cjs = createRequire(import.meta.url)('../index.js')
  assert.deepEqual(Object.keys(cjs).sort(), Object.keys(esm).sort())
  assert.deepEqual(cjs.errCodes, esm.errCodes)
  assert.equal(typeof cjs.init, 'function')
})

test('the package has no runtime dependencies', () => {
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))
  assert.equal(pkg.dependencies, undefined)
  for (const f of ['index.js', 'index.mjs']) {
    const text = readFileSync(join(root, f), 'utf8')
    assert.doesNotMatch(text, /\brequire\(|^\s*import\b/m, `${f} loads nothing`)
  }
})

test('index.d.ts type-checks a usage file (tsc --noEmit)', () => {
  const r = spawnSync(process.execPath, [devTool('tsc'), '--noEmit', '-p', join(root, 'test', 'types')], {
    cwd: root,
    encoding: 'utf8',
    timeout: 60000,
  })
  assert.equal(r.status, 0, `tsc failed:\n${r.stdout}${r.stderr}`)
})

test(`minified + gzipped it stays under ${GZIP_BUDGET} bytes`, async () => {
  devTool('terser')
  const { sizes } = await import('../scripts/size.mjs')
  const s = await sizes()
  assert.ok(s.gzipped < GZIP_BUDGET, `gzipped ${s.gzipped} bytes`)
})
