/**
 * A strict parser of the Prometheus text exposition format 0.0.4 for the tests of /metrics: HELP and TYPE before a
 * family's samples, each family's samples contiguous, metric and label names well formed, label values escaped,
 * no duplicate series, counters named _total and never negative, histogram buckets ascending and cumulative with
 * +Inf last and equal to _count. Any violation fails the calling test with the line it found.
 */
import assert from 'node:assert/strict';

export interface PromSample { readonly name: string; readonly labels: Readonly<Record<string, string>>; readonly value: number }
export interface PromFamily { readonly name: string; type: string | null; help: string | null; readonly samples: PromSample[] }

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

function parseValue(s: string, where: string): number {
  if (s === '+Inf') return Infinity;
  if (s === '-Inf') return -Infinity;
  // Prometheus parses values with Go's ParseFloat: NaN in any case (prom-client writes "Nan" for an empty mean).
  if (/^nan$/i.test(s)) return NaN;
  assert.match(s, /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/, `${where}: bad value ${JSON.stringify(s)}`);
  return Number(s);
}

/** The family a sample name belongs to (histogram/summary suffixes folded). */
export function familyOf(name: string, families: Map<string, PromFamily>): PromFamily | undefined {
  if (families.has(name)) return families.get(name);
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (name.endsWith(suffix)) {
      const f = families.get(name.slice(0, -suffix.length));
      if (f && (f.type === 'histogram' || f.type === 'summary')) return f;
    }
  }
  return undefined;
}

export function parseProm(text: string): Map<string, PromFamily> {
  assert.ok(text.endsWith('\n'), 'the exposition ends with a line feed');
  const families = new Map<string, PromFamily>();
  const closed = new Set<string>();
  let current: string | null = null;
  const seen = new Set<string>();
  const lines = text.split('\n');
  lines.pop();
  for (const [i, line] of lines.entries()) {
    const where = `line ${i + 1} ${JSON.stringify(line.slice(0, 120))}`;
    if (line === '') continue;
    const meta = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
    if (meta) {
      const [, kind, name, rest] = meta as unknown as [string, string, string, string];
      assert.match(name, METRIC_NAME, where);
      assert.ok(!closed.has(name), `${where}: family ${name} appears twice`);
      if (current !== null && current !== name) closed.add(current);
      current = name;
      const f: PromFamily = families.get(name) ?? { name, type: null, help: null, samples: [] };
      families.set(name, f);
      if (kind === 'TYPE') {
        assert.ok(TYPES.has(rest), `${where}: unknown type`);
        assert.equal(f.type, null, `${where}: second TYPE`);
        assert.equal(f.samples.length, 0, `${where}: TYPE after samples`);
        f.type = rest;
      } else {
        assert.equal(f.help, null, `${where}: second HELP`);
        f.help = rest;
      }
      continue;
    }
    assert.ok(!line.startsWith('#'), `${where}: a comment that is not HELP or TYPE`);
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)( -?\d+)?$/.exec(line);
    assert.ok(m, `${where}: not a sample line`);
    const [, name, , labelText, valueText] = m as unknown as [string, string, string | undefined, string | undefined, string];
    const labels: Record<string, string> = {};
    if (labelText !== undefined && labelText !== '') {
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)/y;
      let pos = 0;
      while (pos < labelText.length) {
        re.lastIndex = pos;
        const l = re.exec(labelText);
        assert.ok(l, `${where}: bad label at ${pos}`);
        assert.match(l[1]!, LABEL_NAME, where);
        assert.ok(!(l[1]! in labels), `${where}: label ${l[1]} twice`);
        labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_x, c: string) => (c === 'n' ? '\n' : c));
        pos = re.lastIndex;
      }
    }
    const f = familyOf(name, families);
    assert.ok(f, `${where}: sample without a HELP/TYPE family`);
    assert.equal(f.name, current, `${where}: samples of ${f.name} not contiguous`);
    const key = `${name}${JSON.stringify(Object.entries(labels).sort())}`;
    assert.ok(!seen.has(key), `${where}: duplicate series`);
    seen.add(key);
    f.samples.push({ name, labels, value: parseValue(valueText, where) });
  }
  for (const f of families.values()) {
    assert.ok(f.type !== null && f.help !== null, `${f.name}: HELP and TYPE`);
    if (f.type === 'counter') {
      assert.match(f.name, /_total$/, `counter ${f.name} is named _total`);
      for (const s of f.samples) assert.ok(s.value >= 0, `${f.name}: negative counter`);
    }
    if (f.type === 'histogram') {
      // Per label set (le aside): buckets cumulative and ascending, +Inf equal to _count.
      const groups = new Map<string, { le: number; v: number }[]>();
      const counts = new Map<string, number>();
      for (const s of f.samples) {
        const { le, ...rest } = s.labels;
        const k = JSON.stringify(Object.entries(rest).sort());
        if (s.name === `${f.name}_bucket`) {
          assert.ok(le !== undefined, `${f.name}_bucket without le`);
          (groups.get(k) ?? groups.set(k, []).get(k)!).push({ le: parseValue(le, f.name), v: s.value });
        } else if (s.name === `${f.name}_count`) counts.set(k, s.value);
      }
      for (const [k, buckets] of groups) {
        for (let i = 1; i < buckets.length; i++) {
          assert.ok(buckets[i]!.le > buckets[i - 1]!.le, `${f.name}: le ascending`);
          assert.ok(buckets[i]!.v >= buckets[i - 1]!.v, `${f.name}: buckets cumulative`);
        }
        assert.equal(buckets.at(-1)!.le, Infinity, `${f.name}: +Inf bucket last`);
        assert.equal(buckets.at(-1)!.v, counts.get(k), `${f.name}: +Inf bucket equals _count`);
      }
    }
  }
  return families;
}

/** The value of one series (0 when absent): labels must match exactly those given (node aside). */
export function value(fams: Map<string, PromFamily>, name: string, labels: Record<string, string> = {}): number {
  const f = familyOf(name, fams);
  const s = f?.samples.find((x) => {
    if (x.name !== name) return false;
    const { node: _n, ...rest } = x.labels;
    return Object.keys(rest).length === Object.keys(labels).length && Object.entries(labels).every(([k, v]) => rest[k] === v);
  });
  return s?.value ?? 0;
}

