/**
 * The web tester's engine (web/tester.ts's TesterEngine) composed from src/tester, and the tester web module of
 * `relayguard serve` (web.tester):
 *   - prepare(): the options of `relayguard test` checked (ports, tricks) and the target resolved exactly as the run
 *     will (MX, then A/AAAA, through a recording resolver); run() replays those recorded answers, so the addresses
 *     the SSRF guard checked are the addresses tested (no second lookup a DNS rebinding could change).
 *   - proof mode when web.tester.proof is set: one ProbeSink for the web tester's runs (tags are unique per run, so
 *     runs share it), started with the module and closed with it.
 *   - the run store (store.postgres: table tester_runs; else dataDir/tester-runs.db); runs this node left
 *     'running' (a crash, a kill -9) are marked aborted when the module starts.
 */
import { isIP } from 'node:net';
import type { Config } from '../config/schema.ts';
import { RelayguardError } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import { generateSelfSigned } from '../smtp/tls-cert.ts';
import { openTesterRunStore } from '../store/index.ts';
import {
  ProbeSink, SYSTEM_RESOLVER, parsePortSpec, resolveTarget, runTester, selectTricks,
  type PortSpec, type TargetResolver, type Trick,
} from '../tester/index.ts';
import { testerModule, type PreparedRun, type TesterEngine, type TesterRequest, type WebModule } from '../web/index.ts';

function badInput(field: string, message: string): RelayguardError {
  return Object.assign(new RelayguardError('ERR_TESTER_BAD_INPUT', message), { field });
}

type Answer<T> = { ok: true; value: T } | { ok: false; error: unknown };

/** A resolver that records every answer of `base`, and one that replays them (unknown names: ENOTFOUND). */
function recordingResolver(base: TargetResolver): { record: TargetResolver; replay: TargetResolver } {
  const mx = new Map<string, Answer<{ exchange: string; priority: number }[]>>();
  const addr = new Map<string, Answer<{ address: string; family: number }[]>>();
  const remember = async <T>(map: Map<string, Answer<T>>, key: string, fn: () => Promise<T>): Promise<T> => {
    try {
      const value = await fn();
      map.set(key, { ok: true, value });
      return value;
    } catch (error) {
      map.set(key, { ok: false, error });
      throw error;
    }
  };
  const replay = async <T>(map: Map<string, Answer<T>>, key: string): Promise<T> => {
    const a = map.get(key);
    if (!a) throw Object.assign(new Error(`queryA ENOTFOUND ${key}`), { code: 'ENOTFOUND' });
    if (!a.ok) throw a.error;
    return a.value;
  };
  return {
    record: { resolveMx: (n) => remember(mx, n, () => base.resolveMx(n)), lookup: (n) => remember(addr, n, () => base.lookup(n)) },
    replay: { resolveMx: (n) => replay(mx, n), lookup: (n) => replay(addr, n) },
  };
}

export interface TesterEngineSettings {
  readonly defaultPorts: readonly (number | string)[];
  readonly sourceAddress: string | null;
  /** Per target address, ms (a run may ask for less). */
  readonly budgetMs: number;
  readonly proof: { readonly sink: ProbeSink; readonly probeDomain: string; readonly waitMs: number } | null;
  /** DNS for the targets; default the system resolver. */
  readonly resolver?: TargetResolver;
}

export function createTesterEngine(s: TesterEngineSettings): TesterEngine {
  const base = s.resolver ?? SYSTEM_RESOLVER;
  return {
    proofAvailable: s.proof !== null,
    async prepare(r: TesterRequest): Promise<PreparedRun> {
      let ports: PortSpec[];
      try {
        ports = (r.ports ?? s.defaultPorts.map(String)).map(parsePortSpec);
      } catch (err) {
        throw badInput(r.ports ? 'ports' : 'web.tester.ports', (err as Error).message);
      }
      let tricks: readonly Trick[] | undefined;
      try {
        tricks = r.tricks ? selectTricks([...r.tricks]) : undefined;
      } catch (err) {
        throw badInput('tricks', (err as Error).message);
      }
      const proving = r.mode === 'prove' && s.proof !== null;
      const family = r.family ?? (s.sourceAddress !== null ? (isIP(s.sourceAddress) as 4 | 6) : undefined);
      const { record, replay } = recordingResolver(base);
      const resolveOptions = { mx: r.mx, ...(family ? { family } : {}) };
      let addresses: string[];
      try {
        const resolved = await resolveTarget(r.host, { ...resolveOptions, resolver: record, ...(r.domain ? { domain: r.domain } : {}) });
        addresses = resolved.map((t) => t.address);
      } catch (err) {
        if (err instanceof RangeError) throw badInput('host', err.message);
        throw err; // ERR_TESTER_RESOLVE
      }
      if (addresses.length === 0) throw new RelayguardError('ERR_TESTER_RESOLVE', `${r.host} has no IPv${family} address to test`);
      const timeout = Math.round(r.timeoutSeconds * 1000);
      return {
        addresses,
        run: (hooks) => runTester([r.host], {
          ports,
          ...(tricks ? { tricks } : {}),
          testerDomain: proving ? s.proof!.probeDomain : 'example.net',
          ...(r.domain ? { domain: r.domain } : {}),
          ...(r.hostName ? { hostName: r.hostName } : {}),
          ...(r.helo ? { heloName: r.helo } : {}),
          ...(r.tlsOnly ? { tlsOnly: true } : {}),
          ...(r.starttls ? {} : { noStartTls: true }),
          ...(s.sourceAddress !== null ? { sourceAddress: s.sourceAddress } : {}),
          ...(proving ? { proof: { collector: s.proof!.sink, waitMs: s.proof!.waitMs } } : {}),
          paceMs: r.paceMs,
          budgetMs: Math.min(s.budgetMs, r.budgetSeconds !== undefined ? r.budgetSeconds * 1000 : Infinity),
          timeouts: { connect: Math.min(10_000, timeout), greeting: timeout, command: timeout },
          errorsPerSession: r.errorsPerSession,
          transcript: r.transcript,
          resolve: { ...resolveOptions, resolver: replay },
          signal: hooks.signal,
          onTrick: hooks.onTrick,
          onTarget: hooks.onTarget,
        }),
      };
    },
  };
}

/** The tester module of `serve` (web.tester): its store, its engine (and proof sink), composed. */
export async function testerWebModule(config: Config, logger: Logger): Promise<WebModule> {
  const t = config.web.tester;
  const log = logger.child({ component: 'web-tester' });
  const store = await openTesterRunStore({ dataDir: config.dataDir, postgres: config.store.postgres, logger: log });
  let sink: ProbeSink | null = null;
  try {
    const stale = await store.abortRunning(config.node, 'serve stopped during the run (found running at start)', Date.now());
    if (stale > 0) log.warn('tester runs aborted', { runs: stale, reason: 'left running by an earlier serve' });
    if (t.proof) {
      sink = await ProbeSink.start({
        address: t.proof.sink.address, port: t.proof.sink.port, probeDomain: t.proof.probeDomain,
        hostname: `sink.${t.proof.probeDomain}`, tls: await generateSelfSigned(t.proof.probeDomain),
      });
      log.info('web tester probe sink listening', { address: sink.address, port: sink.port, probe_domain: t.proof.probeDomain });
    }
  } catch (err) {
    await store.close();
    throw err;
  }
  const engine = createTesterEngine({
    defaultPorts: t.ports, sourceAddress: t.sourceAddress, budgetMs: t.budget,
    proof: sink && t.proof ? { sink, probeDomain: t.proof.probeDomain, waitMs: t.proof.wait } : null,
  });
  return testerModule({
    store, engine, maxConcurrent: t.maxConcurrent, allowTargets: t.allowTargets, keepRuns: t.keepRuns,
    onClose: async () => { await sink?.close(); },
  }, log);
}
