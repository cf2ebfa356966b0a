/**
 * One tester run: targets as typed → resolved addresses → the checks asked for on each (smtp: testTarget(), the
 * relay battery; proxy: testProxyTarget(), the open-proxy battery) → the RunResult with its overall verdict and
 * exit code (0 closed, 1 open, 2 inconclusive, 3 usage or network error). 'nntp' runs on its own (nntp/run.ts
 * runNntp) and is folded into the document by combineRun.
 */
import { isIP } from 'node:net';
import { performance } from 'node:perf_hooks';
import { RelayguardError } from '../core/errors.ts';
import { createTagger } from './proof.ts';
import { CHECKS, SCHEMA, type Check, type RunResult, type TargetResult } from './result.ts';
import { testTarget, type TesterOptions } from './runner.ts';
import { testProxyTarget, type ProxyTesterOptions } from './proxy/runner.ts';
import type { ProxyTargetResult } from './proxy/result.ts';
import { resolveTarget, type ResolvedTarget, type ResolveOptions } from './target.ts';
import { aggregate, exitCodeFor, type Reason, type Verdict } from './verdict.ts';

export const TESTER_VERSION = '0.1.0';

export interface RunOptions extends Omit<TesterOptions, 'tagger'> {
  readonly resolve?: ResolveOptions;
  /** Addresses tested at the same time. Default 1. */
  readonly concurrency?: number;
  /** Called as each address finishes. */
  readonly onTarget?: (result: TargetResult) => void;
  /** 8 hex digits; random by default. */
  readonly runId?: string;
  /** The checks to run, in order. Default ['smtp']. */
  readonly checks?: readonly Check[];
  /** The open-proxy battery's options (needed when checks includes 'proxy'). */
  readonly proxy?: Omit<ProxyTesterOptions, 'tagger' | 'signal' | 'sourceAddress' | 'testerDomain'>;
  /** Called as each address finishes the proxy battery. */
  readonly onProxyTarget?: (result: ProxyTargetResult) => void;
}

/**
 * Checks a list of checks: known names, each once. Throws RelayguardError ERR_USAGE for an unknown
 * or repeated name.
 */
export function validateChecks(checks: readonly string[]): Check[] {
  const out: Check[] = [];
  for (const raw of checks) {
    const c = raw.trim().toLowerCase();
    if (c === '') continue;
    if (!(CHECKS as readonly string[]).includes(c)) throw new RelayguardError('ERR_USAGE', `unknown check "${raw}": give ${CHECKS.join(', ')} (comma-separated)`);
    if (out.includes(c as Check)) throw new RelayguardError('ERR_USAGE', `check "${c}" given twice`);
    out.push(c as Check);
  }
  if (out.length === 0) throw new RelayguardError('ERR_USAGE', 'give at least one check (smtp, proxy, nntp)');
  return out;
}

/** True when the target could not be reached at all: every port failed to connect. */
export function unreachable(t: TargetResult): boolean {
  return t.ports.length > 0 && t.ports.every((p) => p.reason === 'no-service');
}

/**
 * The exit code of a run: OPEN wins, then errors and unreachable SMTP targets, then INCONCLUSIVE. A proxy target
 * where no proxy port answers is CLOSED 'no-service' (not a proxy), not a network error.
 */
export function runExitCode(targets: readonly TargetResult[], errors: number, proxies: readonly ProxyTargetResult[] = []): 0 | 1 | 2 | 3 {
  if (targets.some((t) => t.verdict === 'OPEN') || proxies.some((p) => p.verdict === 'OPEN')) return 1;
  if (errors > 0 || (targets.length === 0 && proxies.length === 0) || targets.some(unreachable)) return 3;
  return exitCodeFor(aggregate([...targets, ...proxies].map((t) => ({ verdict: t.verdict, reason: 'refused' as const, detail: t.detail }))).verdict);
}

export async function runTester(inputs: readonly string[], options: RunOptions): Promise<RunResult> {
  const started = performance.now();
  const startedAt = new Date().toISOString();
  const checks = validateChecks(options.checks ?? ['smtp']);
  if (checks.includes('proxy') && !options.proxy) throw new RelayguardError('ERR_USAGE', 'the proxy check needs a sink (RunOptions.proxy)');
  const tagger = createTagger(options.runId);
  const errors: { input: string; error: string }[] = [];
  const seenErrors = new Set<string>();
  // a source address binds the family: an IPv4 source cannot reach an IPv6 target
  const family = options.resolve?.family ?? (options.sourceAddress !== undefined ? (isIP(options.sourceAddress) as 4 | 6) : undefined);
  const resolveAll = async (mx: boolean | undefined): Promise<ResolvedTarget[]> => {
    const resolved: ResolvedTarget[] = [];
    for (const input of inputs) {
      try {
        resolved.push(...(await resolveTarget(input, { ...options.resolve, ...(mx === false ? { mx: false } : {}), ...(family ? { family } : {}), ...(options.domain ? { domain: options.domain } : {}) })));
      } catch (err) {
        if (seenErrors.has(input)) continue;
        seenErrors.add(input);
        errors.push({ input, error: err instanceof Error ? err.message : String(err) });
      }
    }
    return resolved;
  };
  const inParallel = async <R>(items: readonly ResolvedTarget[], fn: (t: ResolvedTarget) => Promise<R>): Promise<R[]> => {
    const results: R[] = new Array(items.length);
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < items.length) {
        const i = next++;
        results[i] = await fn(items[i]!);
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, Math.min(options.concurrency ?? 1, items.length)) }, worker));
    return results;
  };
  let results: TargetResult[] = [];
  let proxies: ProxyTargetResult[] = [];
  for (const check of checks) {
    if (check === 'smtp') {
      results = await inParallel(await resolveAll(options.resolve?.mx), async (t) => {
        const r = await testTarget(t, { ...options, tagger });
        options.onTarget?.(r);
        return r;
      });
    } else if (check === 'proxy') {
      // a proxy is a host: names are looked up as hosts (A/AAAA), never as mail domains
      proxies = await inParallel(await resolveAll(false), async (t) => {
        const r = await testProxyTarget({ input: t.input, address: t.address, family: t.family }, {
          ...options.proxy!, testerDomain: options.testerDomain, tagger,
          ...(options.sourceAddress !== undefined ? { sourceAddress: options.sourceAddress } : {}),
          ...(options.signal ? { signal: options.signal } : {}),
        });
        options.onProxyTarget?.(r);
        return r;
      });
    }
  }
  const agg = aggregateAll(results, proxies);
  return {
    schema: SCHEMA,
    tool: { name: 'relayguard', version: TESTER_VERSION },
    mode: options.proof ? 'prove' : 'safe',
    checks,
    runId: tagger.runId,
    testerDomain: options.testerDomain,
    startedAt,
    durationMs: Math.round(performance.now() - started),
    verdict: agg.verdict,
    reason: agg.reason,
    detail: agg.detail,
    exitCode: runExitCode(results, errors.length, proxies),
    targets: results,
    proxies,
    errors,
  };
}

/**
 * The run's verdict over both checks. The run-level `reason` is a relay-tester Reason (schema 1 field): for a
 * verdict that comes from a proxy it is the nearest one ('proved' for OPEN, 'refused' for CLOSED, 'not-tested'
 * for INCONCLUSIVE) and the detail names the proxy reason.
 */
function aggregateAll(results: readonly TargetResult[], proxies: readonly ProxyTargetResult[]): { verdict: Verdict; reason: Reason; detail: string } {
  const smtp = aggregate(results.map((t) => ({ verdict: t.verdict, reason: t.reason, detail: `${t.address}: ${t.detail}` })));
  if (proxies.length === 0) return smtp;
  const nearest = (v: Verdict): Reason => (v === 'OPEN' ? 'proved' : v === 'CLOSED' ? 'refused' : 'not-tested');
  const proxyOutcomes = proxies.map((p) => ({ verdict: p.verdict, reason: nearest(p.verdict), detail: `proxy ${p.address}: ${p.reason}: ${p.detail}` }));
  const smtpOutcomes = results.map((t) => ({ verdict: t.verdict, reason: t.reason, detail: `${t.address}: ${t.detail}` }));
  const all = aggregate([...smtpOutcomes, ...proxyOutcomes]);
  return { verdict: all.verdict, reason: all.reason, detail: all.detail };
}
