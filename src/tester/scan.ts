/**
 * Bulk scanning: targets from arguments, a file or stdin (IP addresses, CIDR ranges, nmap-style a-b ranges, host
 * names), expanded to addresses and tested with bounded concurrency and a rate limit, one JSON line per address.
 * A target that looks like an address range is never sent to a resolver: it parses or it is a usage error.
 * Safety first:
 *   - only addresses inside the ranges the user names (--allow, plus CIDRs/IPs given as arguments) are tested;
 *     everything else is reported as skipped 'not-allowed' (a name from a file cannot widen the scan);
 *   - an opt-out list (addresses and ranges, "#" comments) is honoured before anything is sent;
 *   - expansions larger than maxTargets are refused outright, before anything is expanded or sent.
 * Each tested address is open, closed, inconclusive or no-service (nothing listens on any port: not a closed
 * relay). Resumable: the caller passes the addresses already done with their status (read back from the previous
 * JSON lines output), so the summary and the exit code describe the whole scan, resumed addresses included.
 * One check per scan: 'smtp' (the relay battery, default), 'proxy' (the open-proxy battery; each target line is
 * then a ProxyTargetResult, `check: 'proxy'`) or 'nntp' (open news servers, safe mode: no article is ever posted
 * by a scan; each line an NntpTargetResult, `check: 'nntp'`), under the same rules.
 */
import { isIP } from 'node:net';
import { normalizeIp } from '../core/address.ts';
import { RelayguardError } from '../core/errors.ts';
import { createTagger } from './proof.ts';
import type { TargetResult } from './result.ts';
import { unreachable } from './run.ts';
import { testTarget, type TesterOptions } from './runner.ts';
import { testProxyTarget, type ProxyTesterOptions } from './proxy/runner.ts';
import { checkNntpTarget, type NntpRunOptions } from './nntp/run.ts';
import type { NntpTargetResult } from './nntp/result.ts';
import type { ProxyTargetResult } from './proxy/result.ts';
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

/** The most addresses a scan may ever be asked to expand (--max-targets cannot go higher): 2^20. */
export const MAX_SCAN_TARGETS = 1_048_576;

/** An a-b range: its size, and its contiguous pieces produced lazily (an nmap octet range has many). */
export interface AddressRangeSpec {
  readonly text: string;
  readonly family: 4 | 6;
  /** Addresses in the range. */
  readonly size: bigint;
  /** Contiguous pieces: 1, or for nmap octet ranges the product of the first three octets' widths. */
  readonly pieces: bigint;
  ranges(): Generator<IpRange>;
}

const RANGE_FORMS = 'give FIRST-LAST (192.0.2.1-192.0.2.20, 2001:db8::1-2001:db8::ff), a last-octet range (192.0.2.1-20) or nmap octet ranges (192.0.1-3.1-254)';

/**
 * True when the entry is meant as an a-b address range (and so must never go to a resolver): it contains "-" and
 * either a ":" (no host name has one), only digits, dots, dashes and slashes, or starts with an IPv4-like
 * "d.d" run followed by "-". Host names such as 1-800-flowers.example or mail-1.example.org are not ranges.
 */
export function looksLikeAddressRange(entry: string): boolean {
  const t = entry.trim();
  if (!t.includes('-')) return false;
  return t.includes(':') || /^[\d.\-/[\]]+$/.test(t) || /^\[?\d{1,3}(?:\.\d{1,3}){1,3}-/.test(t);
}

function octet(text: string, whole: string): number {
  if (!/^(?:0|[1-9]\d{0,2})$/.test(text) || Number(text) > 255) throw new RangeError(`Bad range "${whole}": "${text}" is not an octet (0-255)`);
  return Number(text);
}

/** Parses an a-b address range (see RANGE_FORMS); nothing is expanded. Throws RangeError. */
export function parseAddressRange(text: string): AddressRangeSpec {
  const t = text.trim();
  if (!t.includes('-') || /[/\s]/.test(t)) throw new RangeError(`Bad range "${text}": ${RANGE_FORMS}`);
  const ends = t.split('-');
  if (ends.length === 2) {
    const a = parseIpTarget(ends[0]!);
    const b = parseIpTarget(ends[1]!);
    if (a !== null && b !== null) {
      const first = toBig(a);
      const last = toBig(b);
      if (first.family !== last.family) throw new RangeError(`Bad range "${text}": both ends must be IPv4 or both IPv6`);
      if (last.value < first.value) throw new RangeError(`Bad range "${text}": the last address comes before the first`);
      const range: IpRange = { text: t, family: first.family, first: first.value, last: last.value };
      return { text: t, family: first.family, size: rangeSize(range), pieces: 1n, *ranges() { yield range; } };
    }
    // FIRST-LAST with a bad end: name it ("127.0.0.1-127.0.0.300")
    const full = /^\[?\d+(?:\.\d+){3}\]?$/;
    for (const [end, ip] of [[ends[0]!, a], [ends[1]!, b]] as const) {
      if (ip === null && (full.test(end) || end.includes(':')) && (a !== null || b !== null)) throw new RangeError(`Bad range "${text}": "${end}" is not an IP address`);
    }
  }
  if (t.includes(':')) throw new RangeError(`Bad range "${text}": an IPv6 range needs a full address at both ends (2001:db8::1-2001:db8::ff)`);
  // nmap octet ranges: four octets, each N or N-M (192.0.2.1-20 is the last-octet form)
  const octets = t.replace(/^\[(.*)\]$/, '$1').split('.');
  if (octets.length !== 4) throw new RangeError(`Bad range "${text}": ${RANGE_FORMS}`);
  const bounds = octets.map((o) => {
    const m = /^([^-]*)(?:-([^-]*))?$/.exec(o);
    if (!m) throw new RangeError(`Bad range "${text}": ${RANGE_FORMS}`);
    const lo = octet(m[1]!, text);
    const hi = m[2] === undefined ? lo : octet(m[2], text);
    if (hi < lo) throw new RangeError(`Bad range "${text}": ${lo}-${hi} runs backwards`);
    return [lo, hi] as const;
  });
  const width = (i: number): bigint => BigInt(bounds[i]![1] - bounds[i]![0] + 1);
  const pieces = width(0) * width(1) * width(2);
  return {
    text: t, family: 4, size: pieces * width(3), pieces,
    *ranges() {
      const [[a0, a1], [b0, b1], [c0, c1], [d0, d1]] = bounds as [readonly [number, number], readonly [number, number], readonly [number, number], readonly [number, number]];
      for (let a = a0; a <= a1; a++) {
        for (let b = b0; b <= b1; b++) {
          for (let c = c0; c <= c1; c++) {
            const base = (BigInt(a) << 24n) | (BigInt(b) << 16n) | (BigInt(c) << 8n);
            yield { text: t, family: 4, first: base | BigInt(d0), last: base | BigInt(d1) };
          }
        }
      }
    },
  };
}

/**
 * An --allow or opt-out entry: an address, a CIDR range or an a-b range, as contiguous ranges. Throws RangeError
 * (also for an nmap octet range of more than 65,536 pieces).
 */
export function parseRanges(text: string): IpRange[] {
  if (isRangeEntry(text) || !looksLikeAddressRange(text)) return [parseRange(text)];
  const spec = parseAddressRange(text);
  if (spec.pieces > 65_536n) throw new RangeError(`Range "${text}" has ${spec.pieces} pieces; give it as CIDR ranges`);
  return [...spec.ranges()];
}

type TargetKind = { kind: 'range'; size: bigint; ranges: () => Iterable<IpRange> } | { kind: 'name' };

function classifyTarget(input: string): TargetKind {
  try {
    if (isRangeEntry(input)) {
      const r = parseRange(input);
      return { kind: 'range', size: rangeSize(r), ranges: () => [r] };
    }
    if (looksLikeAddressRange(input)) {
      const spec = parseAddressRange(input);
      return { kind: 'range', size: spec.size, ranges: () => spec.ranges() };
    }
    return { kind: 'name' };
  } catch (err) {
    if (err instanceof RangeError) throw new RelayguardError('ERR_USAGE', err.message);
    throw err;
  }
}

function tooMany(maxTargets: number, input: string, size: bigint): RelayguardError {
  return new RelayguardError('ERR_USAGE', `Refusing to scan more than ${maxTargets} addresses (${input} holds ${size} and takes the scan past the limit; raise --max-targets, at most ${MAX_SCAN_TARGETS})`);
}

/**
 * Checks the targets without expanding or resolving anything: malformed addresses and ranges, and more range
 * addresses than maxTargets, are usage errors (RelayguardError ERR_USAGE). Names are not looked at.
 */
export function checkTargets(inputs: readonly string[], options: { maxTargets: number }): void {
  let total = 0n;
  for (const input of inputs) {
    const k = classifyTarget(input);
    if (k.kind !== 'range') continue;
    total += k.size;
    if (total > BigInt(options.maxTargets)) throw tooMany(options.maxTargets, input, k.size);
  }
}

/**
 * What a scanned address came to: the verdict, except that a CLOSED address where nothing listens on any port
 * (every port 'no-service') is 'no-service', not a closed relay.
 */
export type ScanStatus = 'open' | 'closed' | 'inconclusive' | 'no-service';

export function scanStatus(t: { readonly verdict: TargetResult['verdict']; readonly ports: readonly { readonly reason: string }[] }): ScanStatus {
  if (t.verdict === 'OPEN') return 'open';
  if (t.verdict === 'INCONCLUSIVE') return 'inconclusive';
  return unreachable(t as TargetResult) ? 'no-service' : 'closed';
}

export type ScanLine =
  | ({ readonly type: 'target'; readonly status: ScanStatus } & (TargetResult | ProxyTargetResult | (NntpTargetResult & { readonly check: 'nntp' })))
  | { readonly type: 'skipped'; readonly input: string; readonly address: string | null; readonly reason: 'opted-out' | 'not-allowed' | 'unresolvable'; readonly detail: string }
  | {
    readonly type: 'summary'; readonly runId: string; readonly addresses: number; readonly tested: number; readonly resumed: number;
    /** These five count every address of the scan, resumed ones included (they add up to `addresses`). */
    readonly skipped: number; readonly open: number; readonly inconclusive: number; readonly closed: number; readonly noService: number;
    readonly durationMs: number; readonly msPerTarget: number | null;
  };

export type ScanSummary = Extract<ScanLine, { type: 'summary' }>;

export interface ScanProgress {
  /** Addresses this run tests, and how many of them are done. */
  readonly total: number;
  readonly done: number;
  /** The scan so far, resumed addresses included. */
  readonly open: number;
  readonly inconclusive: number;
  readonly closed: number;
  readonly noService: number;
  readonly skipped: number;
  readonly startedAt: number;
}

/** What a previous output says about an address: its status, or 'skipped' (opted out). */
export type PreviousStatus = ScanStatus | 'skipped';

export interface ScanOptions {
  readonly tester: Omit<TesterOptions, 'tagger' | 'signal'>;
  /** What each address is tested for. Default 'smtp'. */
  readonly check?: 'smtp' | 'proxy' | 'nntp';
  /** The NNTP check's options (check 'nntp'): ports, budget, timeouts; safe mode only (no article in a scan). */
  readonly nntp?: Pick<NntpRunOptions, 'ports' | 'budgetMs' | 'timeouts'>;
  /** The open-proxy battery's options (check 'proxy'). */
  readonly proxy?: Omit<ProxyTesterOptions, 'tagger' | 'signal' | 'testerDomain' | 'sourceAddress'>;
  /** Ranges that may be scanned. */
  readonly allow: readonly IpRange[];
  readonly optOut?: readonly IpRange[];
  /**
   * Addresses already done (resume). With a map (previousFromOutput()) their statuses count in the summary, so a
   * resumed scan reports and exits for the whole file; with a set they only count as resumed.
   */
  readonly done?: ReadonlySet<string> | ReadonlyMap<string, PreviousStatus>;
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
  checkTargets(inputs, options); // malformed ranges and oversized scans fail here, before anything is expanded
  const addresses: { input: string; address: string; hostName: string | null }[] = [];
  const unresolvable: { input: string; detail: string }[] = [];
  const seen = new Set<string>();
  const push = (input: string, address: string, hostName: string | null): void => {
    if (seen.has(address)) return;
    seen.add(address);
    addresses.push({ input, address, hostName });
  };
  for (const input of inputs) {
    const k = classifyTarget(input);
    if (k.kind === 'range') {
      for (const r of k.ranges()) for (const a of expandRange(r)) push(input, a, null);
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

/** The exit code of a scan: 1 when any address is open, else 2 when any is inconclusive, else 0. */
export function scanExitCode(summary: Pick<ScanSummary, 'open' | 'inconclusive'>): 0 | 1 | 2 {
  return summary.open > 0 ? 1 : summary.inconclusive > 0 ? 2 : 0;
}

/** Runs the scan; resolves with the summary line (also passed to onLine). */
export async function runScan(inputs: readonly string[], options: ScanOptions): Promise<ScanSummary> {
  const startedAt = Date.now();
  if (options.check === 'proxy' && !options.proxy) throw new RelayguardError('ERR_USAGE', 'a proxy scan needs the proxy sink (ScanOptions.proxy)');
  const { addresses, unresolvable } = await expandTargets(inputs, { maxTargets: options.maxTargets ?? 65_536, ...(options.resolve ? { resolve: options.resolve } : {}) });
  const tagger = createTagger(options.runId);
  const done = options.done ?? new Set<string>();
  const counts: Record<PreviousStatus, number> = { open: 0, inconclusive: 0, closed: 0, 'no-service': 0, skipped: 0 };
  let resumed = 0, tested = 0;
  for (const u of unresolvable) {
    counts.skipped++;
    options.onLine({ type: 'skipped', input: u.input, address: null, reason: 'unresolvable', detail: u.detail });
  }
  const todo: typeof addresses = [];
  for (const a of addresses) {
    if (done.has(a.address)) {
      resumed++;
      const previous = done instanceof Map ? (done as ReadonlyMap<string, PreviousStatus>).get(a.address) : undefined;
      if (previous !== undefined) counts[previous]++;
      continue;
    }
    if (options.optOut && inRanges(a.address, options.optOut)) {
      counts.skipped++;
      options.onLine({ type: 'skipped', input: a.input, address: a.address, reason: 'opted-out', detail: 'on the opt-out list: never tested' });
      continue;
    }
    if (!inRanges(a.address, options.allow)) {
      counts.skipped++;
      options.onLine({ type: 'skipped', input: a.input, address: a.address, reason: 'not-allowed', detail: 'outside the ranges named with --allow' });
      continue;
    }
    todo.push(a);
  }
  const total = todo.length;
  const progress = (): void => options.onProgress?.({
    total, done: tested, open: counts.open, inconclusive: counts.inconclusive, closed: counts.closed, noService: counts['no-service'], skipped: counts.skipped, startedAt,
  });
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
      const family = a.address.includes(':') ? 6 : 4;
      const result: TargetResult | ProxyTargetResult | (NntpTargetResult & { readonly check: 'nntp' }) = options.check === 'nntp'
        ? { check: 'nntp' as const, ...await checkNntpTarget({ input: a.input, address: a.address, family, hostName: a.hostName, domain: null, mx: null } as Parameters<typeof checkNntpTarget>[0], {
          ...options.nntp, testerDomain: options.tester.testerDomain, tagger,
          ...(options.tester.sourceAddress !== undefined ? { sourceAddress: options.tester.sourceAddress } : {}),
          ...(options.signal ? { signal: options.signal } : {}),
        }) }
        : options.check === 'proxy'
        ? await testProxyTarget({ input: a.input, address: a.address, family }, {
          ...options.proxy!, testerDomain: options.tester.testerDomain, tagger,
          ...(options.tester.sourceAddress !== undefined ? { sourceAddress: options.tester.sourceAddress } : {}),
          ...(options.signal ? { signal: options.signal } : {}),
        })
        : await testTarget(
          { input: a.input, address: a.address, family, hostName: a.hostName, domain: null, mx: null },
          { ...options.tester, tagger, ...(options.signal ? { signal: options.signal } : {}) },
        );
      tested++;
      testMsTotal += result.durationMs;
      const status = scanStatus(result);
      counts[status]++;
      options.onLine({ type: 'target', status, ...result });
      progress();
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(options.concurrency ?? 10, todo.length)) }, worker));
  const summary: ScanSummary = {
    type: 'summary', runId: tagger.runId, addresses: addresses.length + unresolvable.length, tested, resumed, skipped: counts.skipped,
    open: counts.open, inconclusive: counts.inconclusive, closed: counts.closed, noService: counts['no-service'],
    durationMs: Date.now() - startedAt, msPerTarget: tested > 0 ? Math.round(testMsTotal / tested) : null,
  };
  options.onLine(summary);
  return summary;
}

/**
 * What a previous JSON-lines output (for --resume) says about each address: the status of its target line (read
 * from `status`, or for older files worked out from the verdict and ports), or 'skipped' for an opted-out one.
 * Not-allowed lines do not count (the allowed ranges may have changed); unresolvable names are looked up again;
 * torn lines are ignored (that address is simply tested again). The last line about an address wins.
 */
export function previousFromOutput(text: string): Map<string, PreviousStatus> {
  const previous = new Map<string, PreviousStatus>();
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    let rec: { type?: unknown; address?: unknown; reason?: unknown; status?: unknown; verdict?: unknown; ports?: unknown };
    try {
      rec = JSON.parse(line) as typeof rec;
    } catch {
      continue; // a line cut short by an interrupted run
    }
    if (rec === null || typeof rec !== 'object' || typeof rec.address !== 'string') continue;
    if (rec.type === 'skipped' && rec.reason !== 'not-allowed') previous.set(rec.address, 'skipped');
    if (rec.type !== 'target') continue;
    if (rec.status === 'open' || rec.status === 'closed' || rec.status === 'inconclusive' || rec.status === 'no-service') {
      previous.set(rec.address, rec.status);
    } else if (rec.verdict === 'OPEN' || rec.verdict === 'CLOSED' || rec.verdict === 'INCONCLUSIVE') {
      previous.set(rec.address, scanStatus({ verdict: rec.verdict, ports: Array.isArray(rec.ports) ? rec.ports as TargetResult['ports'] : [] }));
    } else {
      previous.set(rec.address, 'inconclusive'); // a target line without a verdict: not something to call closed
    }
  }
  return previous;
}

/** Addresses already reported in a previous JSON-lines output (for --resume). Ignores torn last lines. */
export function doneFromOutput(text: string): Set<string> {
  return new Set(previousFromOutput(text).keys());
}

function progressParts(p: ScanProgress, now: number, counts: string): { head: string; rate: string; eta: string; counts: string } {
  const pct = p.total === 0 ? 1 : p.done / p.total;
  const elapsed = Math.max(0.001, (now - p.startedAt) / 1000);
  const rate = p.done / elapsed;
  const eta = rate > 0 ? Math.round((p.total - p.done) / rate) : null;
  const etaText = eta === null ? '?' : eta >= 120 ? `${Math.round(eta / 60)}m` : `${eta}s`;
  return { head: `${p.done}/${p.total} ${String(Math.floor(pct * 100)).padStart(3)}%`, rate: `${rate.toFixed(1)}/s`, eta: `eta ${etaText}`, counts };
}

/**
 * "[=====>     ] 120/500  24% 3.2/s eta 32s closed 100 open 1 inconcl 3 no-svc 16 skip 0": one terminal line of
 * exactly width - 1 columns (so it never wraps and each redraw covers the last). An unknown width (undefined, 0,
 * as on a pty without a size under `script`) is 80. When the line is tight the rate goes first, then the ETA,
 * then the bar; the counts stay.
 */
export function renderProgress(p: ScanProgress, now: number, width?: number): string {
  const cols = width !== undefined && Number.isFinite(width) && width >= 1 ? Math.floor(width) : 80;
  const room = Math.max(1, cols - 1);
  const parts = progressParts(p, now, `closed ${p.closed} open ${p.open} inconcl ${p.inconclusive} no-svc ${p.noService} skip ${p.skipped}`);
  const tails = [
    [parts.head, parts.rate, parts.eta, parts.counts],
    [parts.head, parts.eta, parts.counts],
    [parts.head, parts.counts],
  ].map((t) => ` ${t.join(' ')}`);
  const pct = p.total === 0 ? 1 : p.done / p.total;
  for (const tail of tails) {
    const barWidth = room - tail.length - 2;
    if (barWidth < 10) continue;
    const filled = Math.min(barWidth, Math.floor(pct * barWidth));
    const bar = '='.repeat(filled) + (filled < barWidth ? '>' : '') + ' '.repeat(Math.max(0, barWidth - filled - 1));
    return `[${bar}]${tail}`;
  }
  return tails[tails.length - 1]!.slice(1, room + 1).padEnd(room);
}

/** The plain form for a log or a pipe (progress forced without a terminal): one line, no bar, no redraw. */
export function renderProgressLine(p: ScanProgress, now: number): string {
  const parts = progressParts(p, now, `closed ${p.closed} open ${p.open} inconclusive ${p.inconclusive} no-service ${p.noService} skipped ${p.skipped}`);
  return `relayguard scan: ${parts.head.replace(/ +/g, ' ')} ${parts.rate} ${parts.eta} ${parts.counts}`;
}
