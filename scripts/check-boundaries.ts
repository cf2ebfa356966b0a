/**
 * Checks the import rules of the layout (DESIGN.md "Layout and boundaries"): which module may import which.
 * Exits 1 with one line per violation. Run by `npm test`.
 */
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join, relative, resolve, dirname, sep } from 'node:path';

const ROOT = resolve(import.meta.dirname, '..');
const SRC = join(ROOT, 'src');

/** module -> modules it may import (itself always allowed). `type:` prefix = type-only imports allowed. */
const ALLOWED: Record<string, readonly string[]> = {
  core: [],
  config: ['core'],
  smtp: ['core'],
  policy: ['core'],
  queue: ['core'],
  delivery: ['core', 'smtp', 'type:queue'],
  tester: ['core', 'smtp'],
  dnsbl: ['core'],
  relay: ['core', 'config', 'smtp', 'policy', 'queue', 'dnsbl', 'store'],
  web: ['core', 'policy', 'type:queue', 'type:dnsbl', 'type:tester', 'type:audit'],
  audit: ['core', 'config', 'smtp', 'policy', 'tester', 'dnsbl'],
  store: ['core', 'policy', 'queue'],
  cli: ['*'],
  testing: ['*'],
};

function walk(dir: string, out: string[] = []): string[] {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p, out);
    else if (p.endsWith('.ts')) out.push(p);
  }
  return out;
}

const IMPORT = /^\s*(import|export)\s+(type\s+)?[^'"]*?from\s+['"]([^'"]+)['"]|^\s*import\s+['"]([^'"]+)['"]/gm;
const problems: string[] = [];

for (const file of walk(SRC)) {
  const rel = relative(SRC, file);
  const mod = rel.split(sep)[0]!;
  const isTest = file.endsWith('.test.ts');
  const text = readFileSync(file, 'utf8');
  for (const m of text.matchAll(IMPORT)) {
    const spec = m[3] ?? m[4]!;
    const typeOnly = m[2] !== undefined;
    if (!spec.startsWith('.')) continue;
    const target = relative(SRC, resolve(dirname(file), spec));
    if (target.startsWith('..')) { problems.push(`${rel}: imports outside src: ${spec}`); continue; }
    const tmod = target.split(sep)[0]!;
    if (tmod === mod) continue;
    if (tmod === 'testing' && !isTest && mod !== 'testing') {
      problems.push(`${rel}: only tests may import src/testing (${spec})`);
      continue;
    }
    if (isTest) continue; // tests may reach into what they test
    const allowed = ALLOWED[mod];
    if (!allowed) { problems.push(`${rel}: unknown module "${mod}"`); continue; }
    if (allowed.includes('*') || allowed.includes(tmod)) continue;
    if (typeOnly && allowed.includes(`type:${tmod}`)) continue;
    problems.push(`${rel}: module "${mod}" may not import "${tmod}" (${spec})`);
  }
}

if (problems.length > 0) {
  process.stderr.write(`Import boundary violations:\n${problems.map((p) => `  ${p}`).join('\n')}\n`);
  process.exit(1);
}
process.stdout.write('import boundaries: ok\n');
