/**
 * One tester run: targets as typed → resolved addresses → testTarget() on each → the RunResult with its overall
 * verdict and exit code (0 closed, 1 open, 2 inconclusive, 3 usage or network error).
 */
import { isIP } from 'node:net';
import { performance } from 'node:perf_hooks';
import { createTagger } from './proof.ts';
import { SCHEMA, type RunResult, type TargetResult } from './result.ts';
import { testTarget, type TesterOptions } from './runner.ts';
import { resolveTarget, type ResolvedTarget, type ResolveOptions } from './target.ts';
import { aggregate, exitCodeFor } from './verdict.ts';

export const TESTER_VERSION = '0.1.0';

export interface RunOptions extends Omit<TesterOptions, 'tagger'> {
  readonly resolve?: ResolveOptions;
  /** Addresses tested at the same time. Default 1. */
  readonly concurrency?: number;
  /** Called as each address finishes. */
  readonly onTarget?: (result: TargetResult) => void;
  /** 8 hex digits; random by default. */
  readonly runId?: string;
}

/** True when the target could not be reached at all: every port failed to connect. */
export function unreachable(t: TargetResult): boolean {
  return t.ports.length > 0 && t.ports.every((p) => p.reason === 'no-service');
}

/** The exit code of a run: OPEN wins, then errors and unreachable targets, then INCONCLUSIVE. */
export function runExitCode(targets: readonly TargetResult[], errors: number): 0 | 1 | 2 | 3 {
  if (targets.some((t) => t.verdict === 'OPEN')) return 1;
  if (errors > 0 || targets.length === 0 || targets.some(unreachable)) return 3;
  return exitCodeFor(aggregate(targets.map((t) => ({ verdict: t.verdict, reason: t.reason, detail: t.detail }))).verdict);
}

export async function runTester(inputs: readonly string[], options: RunOptions): Promise<RunResult> {
  const started = performance.now();
  const startedAt = new Date().toISOString();
  const tagger = createTagger(options.runId);
  const errors: { input: string; error: string }[] = [];
  const resolved: ResolvedTarget[] = [];
  for (const input of inputs) {
    try {
      // a source address binds the family: an IPv4 source cannot reach an IPv6 target
      const family = options.resolve?.family ?? (options.sourceAddress !== undefined ? (isIP(options.sourceAddress) as 4 | 6) : undefined);
      resolved.push(...(await resolveTarget(input, { ...options.resolve, ...(family ? { family } : {}), ...(options.domain ? { domain: options.domain } : {}) })));
    } catch (err) {
      errors.push({ input, error: err instanceof Error ? err.message : String(err) });
    }
  }
  const results: TargetResult[] = new Array(resolved.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < resolved.length) {
      const i = next++;
      const r = await testTarget(resolved[i]!, { ...options, tagger });
      results[i] = r;
      options.onTarget?.(r);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(options.concurrency ?? 1, resolved.length)) }, worker));
  const agg = aggregate(results.map((t) => ({ verdict: t.verdict, reason: t.reason, detail: `${t.address}: ${t.detail}` })));
  return {
    schema: SCHEMA,
    tool: { name: 'relayguard', version: TESTER_VERSION },
    mode: options.proof ? 'prove' : 'safe',
    runId: tagger.runId,
    testerDomain: options.testerDomain,
    startedAt,
    durationMs: Math.round(performance.now() - started),
    verdict: agg.verdict,
    reason: agg.reason,
    detail: agg.detail,
    exitCode: runExitCode(results, errors.length),
    check: ['smtp'],
    targets: results,
    errors,
  };
}
