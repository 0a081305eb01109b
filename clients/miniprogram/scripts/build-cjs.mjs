// Generates index.js (CommonJS, what Mini Programs `require`) from index.mjs (the ES module).
// `node scripts/build-cjs.mjs` writes it; `--check` exits 1 when the committed file differs.
import { readFileSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { dirname, join } from 'node:path'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')

/** The CommonJS text for an ES module source that only uses `export function|const NAME`. */
export function toCommonJs(source) {
  const names = []
  const body = source.replace(/^export (function|const|let|class) ([A-Za-z_$][\w$]*)/gm,
    (_, kind, name) => {
      names.push(name)
      return `${kind} ${name}`
    })
  const left = body.match(/^\s*(import|export)\b.*$/m)
  if (left) throw new Error(`index.mjs: cannot convert this line to CommonJS: ${left[0]}`)
  return "'use strict'\n" +
    '// GENERATED from index.mjs by scripts/build-cjs.mjs: do not edit, run `npm run build`.\n' +
    body +
    '\n' + names.map((n) => `exports.${n} = ${n}`).join('\n') + '\n'
}

export function generated() {
  return toCommonJs(readFileSync(join(root, 'index.mjs'), 'utf8'))
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const out = generated()
  const target = join(root, 'index.js')
  if (process.argv.includes('--check')) {
    let current = ''
    try {
      current = readFileSync(target, 'utf8')
    } catch {}
    if (current !== out) {
      console.error('index.js is not generated from the current index.mjs: run `npm run build`')
      process.exit(1)
    }
  } else {
    writeFileSync(target, out)
  }
}
