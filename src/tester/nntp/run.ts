/**
 * The open-NNTP check of a run: targets as typed → addresses (A/AAAA, never MX) → checkNntpPort() on each port
 * (default 119 plain and 563 implicit TLS) → NntpTargetResult; and combineRun(), which folds the NNTP section into
 * the tester's run document (field `check`, field `nntp`, overall verdict and exit code over every check).
 */
import { isIP } from 'node:net';
import { performance } from 'node:perf_hooks';
import { createTagger, type Tagger } from '../proof.ts';
import { SCHEMA, type Check, type RunResult, type TargetResult } from '../result.ts';
import { runExitCode, TESTER_VERSION } from '../run.ts';
import { resolveTarget, type ResolvedTarget, type ResolveOptions } from '../target.ts';
import { aggregate, exitCodeFor } from '../verdict.ts';
import { checkNntpPort, type NntpCheckOptions } from './check.ts';
import type { NntpPortSpec, NntpRunSection, NntpTargetResult } from './result.ts';

export const DEFAULT_NNTP_PORTS: readonly NntpPortSpec[] = Object.freeze([{ port: 119, role: 'nntp' }, { port: 563, role: 'nntps' }]);

/** "119", "563" (nntps by default), "8563:nntps", "1119:nntp". */
export function parseNntpPortSpec(text: string): NntpPortSpec {
  const m = /^(\d{1,5})(?::(nntp|nntps))?$/i.exec(text.trim());
  const port = Number(m?.[1]);
  if (!m || !Number.isInteger(port) || port < 1 || port > 65535) throw new RangeError(`Bad NNTP port "${text}": give PORT or PORT:nntp / PORT:nntps (implicit TLS)`);
  const role = (m[2]?.toLowerCase() as NntpPortSpec['role'] | undefined) ?? (port === 563 ? 'nntps' : 'nntp');
  return { port, role };
}

export interface NntpRunOptions extends Omit<NntpCheckOptions, 'tagger' | 'signal'> {
  readonly ports?: readonly NntpPortSpec[];
  readonly resolve?: ResolveOptions;
  readonly tagger?: Tagger;
  readonly signal?: AbortSignal;
  readonly concurrency?: number;
}

export interface NntpRun {
  readonly section: NntpRunSection;
  readonly errors: readonly { readonly input: string; readonly error: string }[];
  readonly runId: string;
}

/** Checks one resolved address on every port, inside one budget. */
export async function checkNntpTarget(target: ResolvedTarget, options: NntpRunOptions & { tagger: Tagger }): Promise<NntpTargetResult> {
  const started = performance.now();
  const startedAt = new Date().toISOString();
  const ports = [];
  const budgetEnd = performance.now() + (options.budgetMs ?? 120_000);
  for (const spec of options.ports ?? DEFAULT_NNTP_PORTS) {
    ports.push(await checkNntpPort(target.address, spec, { ...options, budgetMs: Math.max(1, budgetEnd - performance.now()) }));
  }
  const agg = aggregate(ports.map((p) => ({ verdict: p.verdict, reason: p.reason, detail: `port ${p.port}: ${p.detail}` })));
  return {
    input: target.input, address: target.address, family: target.family,
    verdict: agg.verdict, reason: agg.reason, detail: agg.detail, counts: agg.counts,
    ports, startedAt, durationMs: Math.round(performance.now() - started),
  };
}

export async function runNntp(inputs: readonly string[], options: NntpRunOptions): Promise<NntpRun> {
  const tagger = options.tagger ?? createTagger();
  const errors: { input: string; error: string }[] = [];
  const resolved: ResolvedTarget[] = [];
  for (const input of inputs) {
    try {
      const family = options.resolve?.family ?? (options.sourceAddress !== undefined ? (isIP(options.sourceAddress) as 4 | 6) : undefined);
      resolved.push(...(await resolveTarget(input, { ...options.resolve, mx: false, ...(family ? { family } : {}) })));
    } catch (err) {
      errors.push({ input, error: err instanceof Error ? err.message : String(err) });
    }
  }
  const results: NntpTargetResult[] = new Array(resolved.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < resolved.length) {
      const i = next++;
      results[i] = await checkNntpTarget(resolved[i]!, { ...options, tagger });
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(options.concurrency ?? 1, resolved.length)) }, worker));
  return { section: { mode: options.prove ? 'prove' : 'safe', group: options.prove?.group ?? null, targets: results }, errors, runId: tagger.runId };
}

/** True when no port of the target answered at all. */
function unreachable(t: NntpTargetResult): boolean {
  return t.ports.length > 0 && t.ports.every((p) => p.reason === 'no-service');
}

export interface CombineMeta {
  readonly checks: readonly Check[];
  readonly testerDomain: string;
  readonly startedAt: string;
  readonly durationMs: number;
  readonly mode: 'safe' | 'prove';
}

/**
 * The run document with the NNTP section folded in: `checks` lists the checks run, `nntp` holds the NNTP results,
 * the verdict and exit code cover every check (OPEN wins; then errors and unreachable targets: 3; then
 * INCONCLUSIVE). smtp is the run of the smtp and proxy checks (runTester), or null when neither was asked for.
 */
export function combineRun(smtp: RunResult | null, nntp: NntpRun, meta: CombineMeta): RunResult {
  const smtpTargets: readonly TargetResult[] = smtp?.targets ?? [];
  // a name that does not resolve fails both checks the same way: say it once
  const errors = [...(smtp?.errors ?? []), ...nntp.errors].filter((e, i, all) => all.findIndex((x) => x.input === e.input && x.error === e.error) === i);
  const proxies = smtp?.proxies ?? [];
  const outcomes = [
    ...smtpTargets.map((t) => ({ verdict: t.verdict, reason: t.reason, detail: `${t.address}: ${t.detail}` })),
    ...proxies.map((t) => ({ verdict: t.verdict, reason: (t.verdict === 'OPEN' ? 'proved' : t.verdict === 'CLOSED' ? 'refused' : 'no-service') as TargetResult['reason'], detail: `${t.address} proxy: ${t.detail}` })),
    ...nntp.section.targets.map((t) => ({ verdict: t.verdict, reason: t.reason, detail: `${t.address} nntp: ${t.detail}` })),
  ];
  const agg = aggregate(outcomes);
  let exitCode: 0 | 1 | 2 | 3;
  if (agg.verdict === 'OPEN') exitCode = 1;
  else if (errors.length > 0 || outcomes.length === 0 || nntp.section.targets.some(unreachable) || (smtp !== null && runExitCode(smtpTargets, 0) === 3)) exitCode = 3;
  else exitCode = exitCodeFor(agg.verdict);
  return {
    schema: SCHEMA,
    tool: { name: 'relayguard', version: TESTER_VERSION },
    mode: meta.mode,
    runId: smtp?.runId ?? nntp.runId,
    testerDomain: meta.testerDomain,
    startedAt: smtp?.startedAt ?? meta.startedAt,
    durationMs: meta.durationMs,
    verdict: agg.verdict,
    reason: agg.reason,
    detail: agg.detail,
    exitCode,
    checks: [...meta.checks],
    targets: smtpTargets,
    proxies,
    errors,
    nntp: nntp.section,
  };
}
