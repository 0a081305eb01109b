// Prints the size of index.js as shipped, minified (terser) and minified + gzipped.
// `node scripts/size.mjs --json` prints the numbers as JSON (used by test/build.test.mjs).
import { readFileSync } from 'node:fs'
import { gzipSync } from 'node:zlib'
import { fileURLToPath } from 'node:url'
import { dirname, join } from 'node:path'
import { minify } from 'terser'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')

export async function sizes() {
  const source = readFileSync(join(root, 'index.js'), 'utf8')
  const { code } = await minify(source, { compress: true, mangle: true, module: false })
  return {
    source: Buffer.byteLength(source),
    minified: Buffer.byteLength(code),
    gzipped: gzipSync(code, { level: 9 }).length,
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const s = await sizes()
  if (process.argv.includes('--json')) console.log(JSON.stringify(s))
  else console.log(`index.js: ${s.source} bytes, minified ${s.minified} bytes, minified + gzip ${s.gzipped} bytes`)
}
