/**
 * Bulk scanning: targets from arguments, a file or stdin (IP addresses, CIDR ranges, host names), expanded to
 * addresses and tested with bounded concurrency and a rate limit, one JSON line per address. Safety first:
 *   - only addresses inside the ranges the user names (--allow, plus CIDRs/IPs given as arguments) are tested;
 *     everything else is reported as skipped 'not-allowed' (a name from a file cannot widen the scan);
 *   - an opt-out list (addresses and ranges, "#" comments) is honoured before anything is sent;
 *   - expansions larger than maxTargets are refused outright.
 * Resumable: the caller passes the addresses already done (read back from the previous JSON lines output).
 */
import { isIP } from 'node:net';
import { normalizeIp } from '../core/address.ts';
import { RelayguardError } from '../core/errors.ts';
import { createTagger } from './proof.ts';
import type { TargetResult } from './result.ts';
import { testTarget, type TesterOptions } from './runner.ts';
import { parseIpTarget, resolveTarget, type ResolveOptions } from './target.ts';

export interface IpRange {
  readonly text: string;
  readonly family: 4 | 6;
  readonly first: bigint;
  readonly last: bigint;
}

function toBig(ip: string): { family: 4 | 6; value: bigint } {
  if (isIP(ip) === 4) {
    return { family: 4, value: ip.split('.').reduce((acc, o) => (acc << 8n) | BigInt(Number(o)), 0n) };
  }
  let text = ip.toLowerCase();
  // an embedded IPv4 tail (::ffff:192.0.2.1)
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    const n = toBig(v4[1]!).value;
    text = `${text.slice(0, -v4[1]!.length)}${(n >> 16n).toString(16)}:${(n & 0xffffn).toString(16)}`;
  }
  const [head, tail] = text.includes('::') ? text.split('::') as [string, string] : [text, null];
  const h = head === '' ? [] : head.split(':');
  const t = tail === null || tail === '' ? [] : tail.split(':');
  const groups = tail === null ? h : [...h, ...new Array(8 - h.length - t.length).fill('0'), ...t];
  return { family: 6, value: groups.reduce((acc, g) => (acc << 16n) | BigInt(parseInt(g, 16)), 0n) };
}

function fromBig(family: 4 | 6, value: bigint): string {
  if (family === 4) return [24n, 16n, 8n, 0n].map((s) => String((value >> s) & 0xffn)).join('.');
  const groups: string[] = [];
  for (let s = 112n; s >= 0n; s -= 16n) groups.push(((value >> s) & 0xffffn).toString(16));
  return normalizeIp(groups.join(':'))!;
}

/** "192.0.2.0/24", "192.0.2.7", "2001:db8::/120", "[::1]". Throws RangeError. */
export function parseRange(text: string): IpRange {
  const t = text.trim();
  const slash = t.indexOf('/');
  const ipText = slash < 0 ? t : t.slice(0, slash);
  const ip = parseIpTarget(ipText);
  if (ip === null) throw new RangeError(`Bad address or range "${text}"`);
  const { family, value } = toBig(ip);
  const bits = family === 4 ? 32 : 128;
  const prefix = slash < 0 ? bits : Number(t.slice(slash + 1));
  if (!/^\d{1,3}$/.test(slash < 0 ? String(bits) : t.slice(slash + 1)) || !Number.isInteger(prefix) || prefix < 0 || prefix > bits) {
    throw new RangeError(`Bad prefix length in "${text}"`);
  }
  const hostBits = BigInt(bits - prefix);
  const first = (value >> hostBits) << hostBits;
  const last = first + (1n << hostBits) - 1n;
  return { text: t, family, first, last };
}

export function rangeSize(r: IpRange): bigint {
  return r.last - r.first + 1n;
}

export function inRanges(ip: string, ranges: readonly IpRange[]): boolean {
  const n = normalizeIp(ip);
  if (n === null) return false;
  const { family, value } = toBig(n);
  return ranges.some((r) => r.family === family && value >= r.first && value <= r.last);
}

/** Every address of a range, in order. */
export function* expandRange(r: IpRange): Generator<string> {
  for (let v = r.first; v <= r.last; v++) yield fromBig(r.family, v);
}

/** Lines of a target or opt-out list: one entry per line (or separated by spaces/commas), "#" comments. */
export function parseList(text: string): string[] {
  return text.split(/\r?\n/).map((l) => l.replace(/#.*$/, '')).flatMap((l) => l.split(/[\s,]+/)).filter((w) => w !== '');
}

/** True when the entry is an address or a CIDR range (not a name). */
export function isRangeEntry(entry: string): boolean {
  const slash = entry.indexOf('/');
  return parseIpTarget(slash < 0 ? entry : entry.slice(0, slash)) !== null;
}

export type ScanLine =
  | ({ readonly type: 'target' } & TargetResult)
  | { readonly type: 'skipped'; readonly input: string; readonly address: string | null; readonly reason: 'opted-out' | 'not-allowed' | 'unresolvable'; readonly detail: string }
  | { readonly type: 'summary'; readonly runId: string; readonly addresses: number; readonly tested: number; readonly resumed: number; readonly skipped: number; readonly open: number; readonly inconclusive: number; readonly closed: number; readonly durationMs: number; readonly msPerTarget: number | null };

export interface ScanProgress {
  readonly total: number;
  readonly done: number;
  readonly open: number;
  readonly inconclusive: number;
  readonly closed: number;
  readonly skipped: number;
  readonly startedAt: number;
}

export interface ScanOptions {
  readonly tester: Omit<TesterOptions, 'tagger' | 'signal'>;
  /** Ranges that may be scanned. */
  readonly allow: readonly IpRange[];
  readonly optOut?: readonly IpRange[];
  /** Addresses already done (resume). */
  readonly done?: ReadonlySet<string>;
  /** Addresses in flight at once. Default 10. */
  readonly concurrency?: number;
  /** New addresses started per second. Default 10; 0 = unlimited. */
  readonly ratePerSecond?: number;
  /** Refuse a scan of more addresses than this. Default 65 536. */
  readonly maxTargets?: number;
  readonly resolve?: ResolveOptions;
  readonly runId?: string;
  readonly signal?: AbortSignal;
  readonly onLine: (line: ScanLine) => void;
  readonly onProgress?: (p: ScanProgress) => void;
}

/** Targets → the addresses to consider (in input order, deduplicated), plus lines for the unresolvable. */
export async function expandTargets(inputs: readonly string[], options: { maxTargets: number; resolve?: ResolveOptions }): Promise<{ addresses: { input: string; address: string; hostName: string | null }[]; unresolvable: { input: string; detail: string }[] }> {
  const addresses: { input: string; address: string; hostName: string | null }[] = [];
  const unresolvable: { input: string; detail: string }[] = [];
  const seen = new Set<string>();
  let total = 0n;
  const push = (input: string, address: string, hostName: string | null): void => {
    if (seen.has(address)) return;
    seen.add(address);
    addresses.push({ input, address, hostName });
  };
  for (const input of inputs) {
    if (isRangeEntry(input)) {
      const r = parseRange(input);
      total += rangeSize(r);
      if (total > BigInt(options.maxTargets)) {
        throw new RelayguardError('ERR_USAGE', `Refusing to scan more than ${options.maxTargets} addresses (${input} takes it past the limit; raise --max-targets)`);
      }
      for (const a of expandRange(r)) push(input, a, null);
      continue;
    }
    try {
      for (const t of await resolveTarget(input, { ...options.resolve, mx: false })) push(input, t.address, t.hostName);
    } catch (err) {
      if (err instanceof RangeError) throw new RelayguardError('ERR_USAGE', err.message);
      unresolvable.push({ input, detail: err instanceof Error ? err.message : String(err) });
    }
    if (addresses.length > options.maxTargets) throw new RelayguardError('ERR_USAGE', `Refusing to scan more than ${options.maxTargets} addresses`);
  }
  return { addresses, unresolvable };
}

/** Runs the scan; resolves with the summary line (also passed to onLine). */
export async function runScan(inputs: readonly string[], options: ScanOptions): Promise<Extract<ScanLine, { type: 'summary' }>> {
  const startedAt = Date.now();
  const { addresses, unresolvable } = await expandTargets(inputs, { maxTargets: options.maxTargets ?? 65_536, ...(options.resolve ? { resolve: options.resolve } : {}) });
  const tagger = createTagger(options.runId);
  const done = options.done ?? new Set<string>();
  let open = 0, inconclusive = 0, closed = 0, skipped = 0, resumed = 0, tested = 0;
  for (const u of unresolvable) {
    skipped++;
    options.onLine({ type: 'skipped', input: u.input, address: null, reason: 'unresolvable', detail: u.detail });
  }
  const todo: typeof addresses = [];
  for (const a of addresses) {
    if (done.has(a.address)) { resumed++; continue; }
    if (options.optOut && inRanges(a.address, options.optOut)) {
      skipped++;
      options.onLine({ type: 'skipped', input: a.input, address: a.address, reason: 'opted-out', detail: 'on the opt-out list: never tested' });
      continue;
    }
    if (!inRanges(a.address, options.allow)) {
      skipped++;
      options.onLine({ type: 'skipped', input: a.input, address: a.address, reason: 'not-allowed', detail: 'outside the ranges named with --allow' });
      continue;
    }
    todo.push(a);
  }
  const total = todo.length;
  const progress = (): void => options.onProgress?.({ total, done: tested, open, inconclusive, closed, skipped, startedAt });
  progress();
  const rate = options.ratePerSecond ?? 10;
  const t0 = Date.now();
  let next = 0;
  let testMsTotal = 0;
  const worker = async (): Promise<void> => {
    while (next < todo.length && !options.signal?.aborted) {
      const i = next++;
      if (rate > 0) {
        const at = t0 + (i * 1000) / rate;
        const wait = at - Date.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      }
      const a = todo[i]!;
      const result = await testTarget(
        { input: a.input, address: a.address, family: a.address.includes(':') ? 6 : 4, hostName: a.hostName, domain: null, mx: null },
        { ...options.tester, tagger, ...(options.signal ? { signal: options.signal } : {}) },
      );
      tested++;
      testMsTotal += result.durationMs;
      if (result.verdict === 'OPEN') open++;
      else if (result.verdict === 'INCONCLUSIVE') inconclusive++;
      else closed++;
      options.onLine({ type: 'target', ...result });
      progress();
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(options.concurrency ?? 10, todo.length)) }, worker));
  const summary = {
    type: 'summary' as const, runId: tagger.runId, addresses: addresses.length + unresolvable.length, tested, resumed, skipped, open, inconclusive, closed,
    durationMs: Date.now() - startedAt, msPerTarget: tested > 0 ? Math.round(testMsTotal / tested) : null,
  };
  options.onLine(summary);
  return summary;
}

/** Addresses already reported in a previous JSON-lines output (for --resume). Ignores torn last lines. */
export function doneFromOutput(text: string): Set<string> {
  const done = new Set<string>();
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    try {
      const rec = JSON.parse(line) as { type?: unknown; address?: unknown; reason?: unknown };
      if (typeof rec.address !== 'string') continue;
      if (rec.type === 'target' || (rec.type === 'skipped' && rec.reason !== 'not-allowed')) done.add(rec.address);
    } catch {
      // a line cut short by an interrupted run: that address is simply tested again
    }
  }
  return done;
}

/** "[=====>     ] 120/500  24%  3.2/s  eta 2m  open 1  inconclusive 3" for a terminal line of `width` columns. */
export function renderProgress(p: ScanProgress, now: number, width = 80): string {
  const pct = p.total === 0 ? 1 : p.done / p.total;
  const elapsed = Math.max(0.001, (now - p.startedAt) / 1000);
  const rate = p.done / elapsed;
  const eta = rate > 0 ? Math.round((p.total - p.done) / rate) : null;
  const etaText = eta === null ? '?' : eta >= 120 ? `${Math.round(eta / 60)}m` : `${eta}s`;
  const tail = ` ${p.done}/${p.total} ${String(Math.floor(pct * 100)).padStart(3)}% ${rate.toFixed(1)}/s eta ${etaText} open ${p.open} inconcl ${p.inconclusive}`;
  const barWidth = Math.max(10, width - tail.length - 3);
  const filled = Math.min(barWidth, Math.floor(pct * barWidth));
  const bar = '='.repeat(filled) + (filled < barWidth ? '>' : '') + ' '.repeat(Math.max(0, barWidth - filled - 1));
  return `[${bar}]${tail}`.slice(0, width);
}
