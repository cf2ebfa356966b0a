/**
 * The web tester's runs (tester.ts is the module, tester-page.ts its pages): the request schema, the engine port
 * the CLI fills in, the runs in progress with their events and subscribers, the concurrency limit, the SSRF guard
 * (target-guard.ts) and the event stream. See tester.ts for the routes and their answers.
 */
import { randomBytes } from 'node:crypto';
import { isIP } from 'node:net';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { TesterRunRecord, TesterRunState, TesterRunStore, TesterRunSummary } from '../policy/tester-runs.ts';
import type { RunResult, TargetResult, TrickProgress, TrickResult } from '../tester/index.ts';
import type { Auth, WebContext } from './module.ts';
import { WebError } from './server.ts';
import { TargetGuard, ERR_TESTER_TARGET_FORBIDDEN } from './target-guard.ts';

export const ERR_TESTER_BUSY = 'ERR_TESTER_BUSY';
export const ERR_TESTER_RESOLVE = 'ERR_TESTER_RESOLVE';
export const ERR_TESTER_PROOF_UNAVAILABLE = 'ERR_TESTER_PROOF_UNAVAILABLE';
export const ERR_TESTER_RUN_NOT_FOUND = 'ERR_TESTER_RUN_NOT_FOUND';
export { ERR_TESTER_TARGET_FORBIDDEN };

/** A run as requested (validated); the engine turns it into the tester's options. */
export interface TesterRequest {
  /** IP address, host name or mail domain. */
  readonly host: string;
  /** "25", "2525:mx", ...; absent: web.tester.ports. */
  readonly ports?: readonly string[] | undefined;
  readonly mode: 'safe' | 'prove';
  /** Trick ids (a subset of the battery); absent: all. */
  readonly tricks?: readonly string[] | undefined;
  /** Look up MX records for a name (false: the name is a host). */
  readonly mx: boolean;
  readonly family?: 4 | 6 | undefined;
  readonly domain?: string | undefined;
  readonly hostName?: string | undefined;
  readonly helo?: string | undefined;
  readonly tlsOnly: boolean;
  readonly starttls: boolean;
  readonly paceMs: number;
  /** Per target address; capped by web.tester.budget. */
  readonly budgetSeconds?: number | undefined;
  readonly timeoutSeconds: number;
  readonly errorsPerSession: number;
  readonly transcript: boolean;
}

export interface RunHooks {
  readonly signal: AbortSignal;
  onTrick(progress: TrickProgress): void;
  onTarget(result: TargetResult): void;
}

export interface PreparedRun {
  /** Every address the target resolved to: the run tests these and no other. */
  readonly addresses: readonly string[];
  run(hooks: RunHooks): Promise<RunResult>;
}

/** The tester as this module sees it (src/cli/tester-engine.ts). */
export interface TesterEngine {
  /** Proof mode is available (web.tester.proof: a probe domain and a running sink). */
  readonly proofAvailable: boolean;
  /**
   * Resolves the target as the run will (MX, then A/AAAA) and checks the options. Throws a RelayguardError:
   * ERR_TESTER_RESOLVE (no address), ERR_TESTER_BAD_INPUT with `field` (a bad port, trick or name).
   */
  prepare(request: TesterRequest): Promise<PreparedRun>;
}

export interface TesterModuleOptions {
  readonly store: TesterRunStore;
  readonly engine: TesterEngine;
  readonly maxConcurrent: number;
  readonly allowTargets: readonly string[];
  readonly keepRuns: number;
  /** Closed with the module (the proof sink). */
  readonly onClose?: () => Promise<void>;
  /** How long close() waits for cancelled runs to settle before marking them aborted anyway. Default 5 s. */
  readonly stopGraceMs?: number;
}

// --- input ----------------------------------------------------------------------------------------------------------
const NAME = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$/;
const hostText = z.string().trim().min(1).max(255).refine((v) => {
  const bare = v.replace(/^\[(?:IPv6:)?(.*)\]$/i, '$1');
  return isIP(bare) !== 0 || (NAME.test(v) && !/^[0-9.]+$/.test(v));
}, 'an IP address, a host name or a mail domain');
const nameText = z.string().trim().max(253).regex(NAME, 'a domain name');
const portSpec = z.union([z.int().min(1).max(65535), z.string().trim().regex(/^\d{1,5}(:(mx|submission|submissions))?$/i, 'PORT or PORT:ROLE (mx, submission, submissions)')])
  .transform((v) => String(v).toLowerCase());

export const runRequestSchema = z.strictObject({
  host: hostText,
  ports: z.array(portSpec).min(1).max(8).optional(),
  mode: z.enum(['safe', 'prove']).default('safe'),
  tricks: z.array(z.string().regex(/^[A-Za-z0-9]{1,8}$/, 'a trick id (see relayguard test --list-tricks)')).min(1).max(200).optional(),
  mx: z.boolean().default(true),
  family: z.union([z.literal(4), z.literal(6)]).optional(),
  domain: nameText.optional(),
  hostName: nameText.optional(),
  helo: nameText.optional(),
  tlsOnly: z.boolean().default(false),
  starttls: z.boolean().default(true),
  paceMs: z.int().min(0).max(10_000).default(0),
  budgetSeconds: z.number().min(1).max(86_400).optional(),
  timeoutSeconds: z.number().min(0.05).max(300).default(30),
  errorsPerSession: z.int().min(1).max(100).default(8),
  transcript: z.boolean().default(true),
}).refine((r) => !(r.tlsOnly && !r.starttls), { message: 'tlsOnly needs starttls', path: ['tlsOnly'] });


// --- events ---------------------------------------------------------------------------------------------------------
export interface RunEvent {
  /** 1, 2, 3, ... per run. */
  readonly seq: number;
  readonly type: 'run' | 'trick' | 'target' | 'done';
  readonly data: unknown;
}

type Line = { readonly t: number; readonly dir: 'C' | 'S'; readonly line: string };

/** At most this many events are kept per run (a battery of ~100 tricks on 5 units of 4 addresses is ~2,000). */
const MAX_EVENTS = 20_000;
const MAX_LINES_PER_TRICK = 100;

/** The dialogue of a trick rebuilt from what the report keeps (when no transcript lines were recorded). */
export function trickLines(t: TrickResult): Line[] {
  const out: Line[] = [];
  const reply = (r: { code: number; enhanced?: string | null; text?: string } | null): void => {
    if (r) out.push({ t: 0, dir: 'S', line: `${r.code}${r.enhanced ? ` ${r.enhanced}` : ''}${r.text ? ` ${r.text}` : ''}` });
  };
  if (t.mailFrom !== null) out.push({ t: 0, dir: 'C', line: `MAIL FROM:${t.mailFrom}` });
  reply(t.replies.mail as never);
  t.rcptTo.forEach((r, i) => {
    out.push({ t: 0, dir: 'C', line: `RCPT TO:${r}` });
    reply((t.replies.rcpt[i] ?? null) as never);
  });
  if (t.replies.data) { out.push({ t: 0, dir: 'C', line: 'DATA' }); reply(t.replies.data as never); }
  if (t.replies.dot) { out.push({ t: 0, dir: 'C', line: '<probe message>' }); reply(t.replies.dot as never); }
  return out;
}

function trickEvent(where: { address: string; port: number; role: string; transport: string; index: number; total: number }, t: TrickResult, lines: readonly Line[]): unknown {
  const got = lines.length > 0 ? lines : trickLines(t);
  return {
    ...where, id: t.id, title: t.title, kind: t.kind, verdict: t.verdict, reason: t.reason, detail: t.detail, accepted: t.accepted,
    attempts: t.attempts, ms: t.ms, mailFrom: t.mailFrom, rcptTo: t.rcptTo,
    lines: got.slice(0, MAX_LINES_PER_TRICK).map((l) => ({ t: l.t, dir: l.dir, line: l.line.slice(0, 2000) })),
  };
}

function targetEvent(t: TargetResult): unknown {
  return { address: t.address, hostName: t.hostName, verdict: t.verdict, reason: t.reason, detail: t.detail, counts: t.counts };
}

function runEvent(s: TesterRunSummary): unknown {
  return { id: s.id, target: s.target, addresses: s.addresses, options: s.options, actor: s.actor, node: s.node, createdAt: new Date(s.createdAt).toISOString() };
}

function doneEvent(s: { id: string; state: TesterRunState; verdict: string | null; exitCode: number | null; error: string | null }, report: RunResult | null): unknown {
  return {
    id: s.id, state: s.state, verdict: s.verdict, exitCode: s.exitCode, error: s.error,
    reason: report?.reason ?? null, detail: report?.detail ?? null,
  };
}

/** Every event of a finished run, rebuilt from its record (trick verdicts as in the report). */
export function eventsFromRecord(r: TesterRunRecord): RunEvent[] {
  const out: RunEvent[] = [];
  const add = (type: RunEvent['type'], data: unknown): void => { out.push({ seq: out.length + 1, type, data }); };
  add('run', runEvent(r));
  const report = (r.report ?? null) as RunResult | null;
  for (const t of report?.targets ?? []) {
    for (const p of t.ports) {
      for (const tr of p.transports) {
        tr.tricks.forEach((k, index) => add('trick', trickEvent({ address: t.address, port: p.port, role: p.role, transport: tr.transport, index, total: tr.tricks.length }, k, [])));
      }
    }
    add('target', targetEvent(t));
  }
  if (r.state !== 'running') add('done', doneEvent(r, report));
  return out;
}

export function formatEvent(e: RunEvent): string {
  return `id: ${e.seq}\nevent: ${e.type}\ndata: ${JSON.stringify(e.data)}\n\n`;
}

interface LiveRun {
  readonly summary: TesterRunSummary;
  readonly events: RunEvent[];
  readonly listeners: Set<(e: RunEvent) => void>;
  readonly controller: AbortController;
  finished: boolean;
  settled: Promise<void>;
}

/** The runs in progress on this node, their events and subscribers, and the concurrency limit. */
export class TesterRuns {
  readonly #o: TesterModuleOptions;
  readonly #guard: TargetGuard;
  readonly #live = new Map<string, LiveRun>();
  #reserved = 0;
  #stopping = false;
  /** Ends each open event stream (stop() ends them all, so the listener can close). */
  readonly #streams = new Set<() => void>();
  #ctx: WebContext | null = null;

  constructor(o: TesterModuleOptions) {
    this.#o = o;
    this.#guard = new TargetGuard(o.allowTargets);
  }

  get store(): TesterRunStore { return this.#o.store; }
  get proofAvailable(): boolean { return this.#o.engine.proofAvailable; }
  get running(): number { return this.#live.size; }

  bind(ctx: WebContext): void { this.#ctx = ctx; }

  #context(): WebContext {
    if (!this.#ctx) throw new Error('tester module used before the web service bound it');
    return this.#ctx;
  }

  live(id: string): LiveRun | undefined { return this.#live.get(id); }

  /** Validates, resolves, checks every address, records and launches a run; throws WebError for the client. */
  async start(request: TesterRequest, auth: Auth, http: FastifyRequest): Promise<TesterRunSummary> {
    const ctx = this.#context();
    const log = ctx.logger;
    if (this.#stopping) throw new WebError(503, 'ERR_WEB_STOPPING', 'The web service is stopping');
    if (request.mode === 'prove' && !this.#o.engine.proofAvailable) {
      throw new WebError(400, ERR_TESTER_PROOF_UNAVAILABLE, 'body field "mode": proof mode needs web.tester.proof (a probe domain and its sink) in the configuration');
    }
    if (this.#live.size + this.#reserved >= this.#o.maxConcurrent) {
      const err = new WebError(429, ERR_TESTER_BUSY, `${this.#o.maxConcurrent} tester run(s) are going (web.tester.maxConcurrent); try again when one ends`);
      (err as WebError & { retryAfter?: number }).retryAfter = 10;
      throw err;
    }
    this.#reserved++;
    let reserved = true;
    try {
      let prepared: PreparedRun;
      try {
        prepared = await this.#o.engine.prepare(request);
      } catch (err) {
        const e = err as { code?: unknown; message?: string; field?: unknown };
        if (e.code === ERR_TESTER_RESOLVE) throw new WebError(400, ERR_TESTER_RESOLVE, String(e.message));
        if (e.code === 'ERR_TESTER_BAD_INPUT') throw new WebError(400, 'ERR_WEB_BAD_INPUT', `body field "${String(e.field ?? 'host')}": ${String(e.message)}`);
        throw err;
      }
      const refused = prepared.addresses.map((a) => this.#guard.refusal(a)).filter((r): r is string => r !== null);
      if (refused.length > 0) {
        log.warn('tester target refused', { actor: auth.actor, target: request.host, addresses: prepared.addresses, err_code: ERR_TESTER_TARGET_FORBIDDEN, client_ip: http.socket.remoteAddress ?? null });
        throw new WebError(400, ERR_TESTER_TARGET_FORBIDDEN, `Target "${request.host}" not tested: ${refused.join('; ')} (allowed only inside web.tester.allowTargets)`);
      }
      const summary: TesterRunSummary = {
        seq: 0, id: randomBytes(8).toString('hex'), node: ctx.node, actor: auth.actor, target: request.host, options: request,
        addresses: prepared.addresses, createdAt: ctx.now(), state: 'running', verdict: null, exitCode: null, error: null, finishedAt: null,
      };
      await this.#o.store.create(summary);
      try {
        await ctx.audit(auth, http, 'tester.run', request.host, { id: summary.id, addresses: prepared.addresses, mode: request.mode, ports: request.ports ?? null });
      } catch (err) {
        // Not audited, not run: the row must not stay 'running'.
        await this.#o.store.finish(summary.id, { state: 'failed', verdict: null, exitCode: null, error: 'not started: the audit log could not be written', report: null, finishedAt: ctx.now() }).catch(() => false);
        throw err;
      }
      this.#reserved--;
      reserved = false;
      this.#launch(summary, prepared);
      this.#o.store.prune(this.#o.keepRuns).catch((err: unknown) => log.warn('tester runs not pruned', { err: String((err as Error)?.message ?? err) }));
      return summary;
    } finally {
      if (reserved) this.#reserved--;
    }
  }

  #launch(summary: TesterRunSummary, prepared: PreparedRun): void {
    const ctx = this.#context();
    const live: LiveRun = { summary, events: [], listeners: new Set(), controller: new AbortController(), finished: false, settled: Promise.resolve() };
    this.#live.set(summary.id, live);
    const emit = (type: RunEvent['type'], data: unknown): void => {
      if (live.events.length >= MAX_EVENTS && type !== 'done') return;
      const e: RunEvent = { seq: live.events.length + 1, type, data };
      live.events.push(e);
      for (const l of live.listeners) l(e);
    };
    emit('run', runEvent(summary));
    ctx.logger.info('tester run started', { run_id: summary.id, actor: summary.actor, target: summary.target, addresses: summary.addresses });
    live.settled = (async () => {
      let report: RunResult | null = null;
      let error: string | null = null;
      try {
        report = await prepared.run({
          signal: live.controller.signal,
          onTrick: (p) => emit('trick', trickEvent({ address: p.address, port: p.port, role: p.role, transport: p.transport, index: p.index, total: p.total }, p.trick, p.lines)),
          onTarget: (t) => emit('target', targetEvent(t)),
        });
      } catch (err) {
        error = String((err as Error)?.message ?? err).slice(0, 1000);
      }
      const aborted = live.controller.signal.aborted;
      const state: Exclude<TesterRunState, 'running'> = aborted ? 'aborted' : report ? 'done' : 'failed';
      const outcome = {
        state,
        verdict: state === 'done' ? report!.verdict : null,
        exitCode: state === 'done' ? report!.exitCode : null,
        error: aborted ? 'serve stopped during the run' : error,
        report,
        finishedAt: ctx.now(),
      };
      try {
        await this.#o.store.finish(summary.id, outcome);
      } catch (err) {
        ctx.logger.error('tester run not recorded', { run_id: summary.id, err_code: (err as { code?: string }).code ?? 'ERR_TESTER_STORE', err: String((err as Error)?.message ?? err) });
      }
      ctx.metrics.testerRun(state === 'done' ? (report!.verdict as 'OPEN' | 'CLOSED' | 'INCONCLUSIVE') : state);
      ctx.logger.info('tester run finished', { run_id: summary.id, target: summary.target, state, verdict: outcome.verdict, exit_code: outcome.exitCode, err: outcome.error });
      live.finished = true;
      emit('done', doneEvent({ id: summary.id, ...outcome }, report));
      live.listeners.clear();
      this.#live.delete(summary.id);
    })();
  }

  /** Cancels every run of this node and waits (bounded) for them to be recorded as aborted. */
  async stop(): Promise<void> {
    this.#stopping = true;
    const runs = [...this.#live.values()];
    for (const r of runs) r.controller.abort(new Error('serve stopped during the run'));
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all(runs.map((r) => r.settled)),
      new Promise<void>((resolve) => { timer = setTimeout(resolve, this.#o.stopGraceMs ?? 5000); }),
    ]);
    clearTimeout(timer);
    for (const end of [...this.#streams]) end();
    const ctx = this.#ctx;
    if (ctx) await this.#o.store.abortRunning(ctx.node, 'serve stopped during the run', ctx.now()).catch(() => 0);
  }

  /** Answers GET .../events: replays, then follows (hijacks the reply). */
  async stream(id: string, request: FastifyRequest, reply: FastifyReply): Promise<void> {
    if (this.#stopping) throw new WebError(503, 'ERR_WEB_STOPPING', 'The web service is stopping');
    const live = this.#live.get(id);
    const record = live ? null : await this.#o.store.get(id);
    if (!live && !record) throw new WebError(404, ERR_TESTER_RUN_NOT_FOUND, `No tester run ${id}`);
    const last = Number(request.headers['last-event-id']);
    let sent = Number.isInteger(last) && last > 0 ? last : 0;
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', 'x-accel-buffering': 'no',
      'x-content-type-options': 'nosniff', 'content-security-policy': "default-src 'none'",
    });
    res.write('retry: 3000\n\n');
    const send = (e: RunEvent): void => {
      if (e.seq <= sent || res.destroyed) return;
      sent = e.seq;
      res.write(formatEvent(e));
    };
    let closed = false;
    const cleanups: (() => void)[] = [];
    const finish = (): void => {
      if (closed) return;
      closed = true;
      for (const c of cleanups) c();
      if (!res.writableEnded) res.end();
    };
    res.on('close', finish);
    this.#streams.add(finish);
    cleanups.push(() => this.#streams.delete(finish));
    const heartbeat = setInterval(() => { if (!res.destroyed) res.write(': keep-alive\n\n'); }, 15_000);
    cleanups.push(() => clearInterval(heartbeat));
    if (live) {
      for (const e of live.events) send(e);
      if (live.finished) { finish(); return; }
      const listener = (e: RunEvent): void => {
        send(e);
        if (e.type === 'done') finish();
      };
      live.listeners.add(listener);
      cleanups.push(() => live.listeners.delete(listener));
      return;
    }
    // A finished run (from the store), or one running on another node (shared PostgreSQL): poll until it ends.
    let r = record!;
    if (r.state === 'running') {
      send({ seq: 1, type: 'run', data: runEvent(r) });
      const poll = setInterval(() => {
        void this.#o.store.get(id).then((now) => {
          if (closed || now === null || now.state === 'running') return;
          r = now;
          for (const e of eventsFromRecord(r)) send(e);
          finish();
        }).catch(() => { /* try again at the next tick */ });
      }, 2000);
      cleanups.push(() => clearInterval(poll));
      return;
    }
    for (const e of eventsFromRecord(r)) send(e);
    finish();
  }
}

