#!/usr/bin/env node
// The published entry point: the built CLI when dist/ exists, else the TypeScript sources (Node >= 22.18 strips types).
// Plain JavaScript that any Node.js since 14 parses, so that an older Node gets a clear message instead of a crash.
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { isAbsolute, join } from 'node:path';
import { fileURLToPath } from 'node:url';

// The Node.js relayguard needs: type stripping without a flag, node:sqlite, import.meta.main, module.enableCompileCache.
// package.json has no `engines` field on purpose: npm compares it with the Node that runs npm, which in a checkout
// is not the one that runs relayguard (`npm ci` installs Node 24 into node_modules, and npx puts it first on PATH),
// so `npx relayguard` warned (EBADENGINE) on every machine whose system Node is older. The check is here instead,
// against the Node that actually runs relayguard.
const NEED = [22, 19];
const [major, minor] = process.versions.node.split('.').map(Number);
if (major < NEED[0] || (major === NEED[0] && minor < NEED[1])) {
  const local = fileURLToPath(new URL('../node_modules/.bin/node', import.meta.url));
  const here = fileURLToPath(new URL('..', import.meta.url)).replace(/\/$/, '');
  process.stderr.write(
    `relayguard: needs Node.js ${NEED.join('.')} or later; this is ${process.version} (${process.execPath}).\n` +
      (existsSync(local)
        ? `  This checkout has its own Node.js (installed by npm ci): run\n    npx relayguard ...            (in ${here})\n    ${local} ${join(here, 'bin/relayguard.js')} ...\n`
        : '  Install Node.js 24 (https://nodejs.org, or in a checkout `npm ci`, which installs it into node_modules).\n'),
  );
  process.exit(2);
}

// Cache the compiled (and type-stripped) modules between runs: a command starts in about a third of the time.
// The cache lives in the invoking user's cache directory, never in a shared /tmp; NODE_COMPILE_CACHE picks another
// directory, NODE_DISABLE_COMPILE_CACHE=1 turns it off. A directory that cannot be written is skipped silently.
// Not for `serve`: a daemon starts once, and should write nothing but its data directory.
const command = process.argv.slice(2).find((a) => !a.startsWith('-'));
const cacheHome = process.env.XDG_CACHE_HOME && isAbsolute(process.env.XDG_CACHE_HOME)
  ? process.env.XDG_CACHE_HOME
  : (() => { try { const h = homedir(); return isAbsolute(h) ? join(h, '.cache') : null; } catch { return null; } })();
const cacheDir = command === 'serve' ? null : process.env.NODE_COMPILE_CACHE || (cacheHome ? join(cacheHome, 'relayguard', 'node-compile-cache') : null);
if (cacheDir) {
  try {
    const { enableCompileCache } = await import('node:module');
    enableCompileCache(cacheDir);
  } catch { /* caching is an optimisation only */ }
}

const built = fileURLToPath(new URL('../dist/cli/main.js', import.meta.url));
const entry = existsSync(built) ? built : fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));
// A reader that goes away (`relayguard queue list | head`) ends the output quietly, as with other CLI tools.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err) => {
    if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw err;
  });
}
const { main } = await import(entry);
process.exitCode = await main(process.argv.slice(2));
