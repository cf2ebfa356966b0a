/**
 * The remote vantage point of check 2 (relay-check.ts's Vantage): another relayguard, run by the same admin on
 * another host, asked over its authenticated API to test this server's listeners with its web tester, so an
 * operator with two hosts audits each from the other (and through NAT, firewalls and load balancers, as a stranger
 * on the Internet sees them).
 *
 *   per listener:  POST {url}/api/tester/runs  {host, ports: ["PORT:ROLE"], mode, mx: false, hostName, domain}
 *                  GET  {url}/api/tester/runs/:id   polled until the run is no longer 'running' (within the budget)
 *                  the report (schema relayguard-tester/1) -> VantageOutcome -> relay.closed / relay.open / ...
 *
 * A remote that cannot test is never "closed": it is INCONCLUSIVE (relay.inconclusive, unreachable) with the reason:
 *   remote-unreachable      no answer (refused, reset, DNS, TLS failure: the CA file does not match, ...)
 *   remote-timeout          no answer within a request's time, or the audit's budget ran out during the run
 *   remote-unauthorized     401 (the token file's token is wrong, expired or revoked)
 *   remote-forbidden        403
 *   remote-target-forbidden 400 ERR_TESTER_TARGET_FORBIDDEN (the address is outside the remote's web.tester.allowTargets)
 *   remote-proof-unavailable 400 ERR_TESTER_PROOF_UNAVAILABLE (proof: true, the remote has no web.tester.proof)
 *   remote-busy             429 ERR_TESTER_BUSY until the budget ran out (retried after Retry-After meanwhile)
 *   remote-no-tester        404 on the run route (web.tester.enabled: false, or not a relayguard)
 *   remote-run-failed       the run ended 'failed' or 'aborted' on the remote (its error is the detail)
 *   remote-error            any other answer, or a report that does not have the shape of relayguard-tester/1
 * A failure that concerns the remote rather than one target (no answer, timeout, 401/403/404, proof unavailable) ends
 * the remaining listeners with the same reason at once (one failed login on the remote, not one per listener).
 *
 * Trust: the remote is trusted to tell the truth about our relay (it is the admin's own host), not to be well-formed:
 * its answers are size-capped, parsed defensively, and a run id is checked before it goes into a URL; redirects are
 * not followed. The token is read from a file at every audit (rotation without a restart) and sent only to `url`;
 * https with `ca` (a PEM file, the remote's certificate or its CA) verifies the remote, else the system CAs; plain
 * http sends the token in clear (only on a network you trust).
 */
import { readFile } from 'node:fs/promises';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { isIP } from 'node:net';
import { RelayguardError } from '../core/errors.ts';
import type { RunResult } from '../tester/index.ts';
import { outcomeOf, type RelayTarget, type Vantage, type VantageOutcome } from './relay-check.ts';

export const ERR_AUDIT_REMOTE = 'ERR_AUDIT_REMOTE';

export interface RemoteVantageOptions {
  /** Base URL of the remote relayguard's web service (admin listener): https://host:port or http://host:port. */
  readonly url: string;
  /** A file holding an API token of an admin of the remote (`relayguard admin token add` there). */
  readonly tokenFile: string;
  /** PEM file of the CA (or the self-signed certificate) the remote's https certificate must chain to; null: system CAs. */
  readonly ca?: string | null;
  /** Ask for proof mode (the remote needs web.tester.proof, and our relay's mail to its probe domain must reach its sink). */
  readonly proof?: boolean;
  /**
   * The address (or name) the remote tests; null: each listener's bound address, a wildcard bind's first of
   * `addresses` of its family.
   */
  readonly host?: string | null;
  /** This server's addresses (audit.addresses), for wildcard binds. */
  readonly addresses?: readonly string[];
  /** This server's host name and mail domain (the tester's H and D). */
  readonly hostName: string;
  readonly domain: string | null;
  /** Budget of one listener's run on the remote, ms (the remote caps it with its web.tester.budget). */
  readonly budgetMs: number;
  /** Time allowed for one HTTP exchange, ms. Default 30 000. */
  readonly requestTimeoutMs?: number;
  /** First poll interval, ms (grows to 3 s). Default 500. */
  readonly pollMs?: number;
}

/** Largest answer read from the remote (a report with transcripts off is a few hundred KB). */
const MAX_BODY = 32 * 1024 * 1024;
const RUN_ID = /^[0-9a-f]{16}$/;

/** Why a remote could not test: the outcome's reason, its detail, and whether the remaining listeners share it. */
class RemoteFailure extends Error {
  readonly reason: string;
  readonly fatal: boolean;
  constructor(reason: string, message: string, fatal: boolean) {
    super(message);
    this.reason = reason;
    this.fatal = fatal;
  }
}

interface Answer {
  readonly status: number;
  readonly headers: IncomingMessage['headers'];
  readonly json: unknown;
  readonly text: string;
}

function portRole(t: RelayTarget): string {
  if (t.role === 'mx') return 'mx';
  return t.tls === 'implicit' ? 'submissions' : 'submission';
}

const sleep = (ms: number, signal: AbortSignal): Promise<void> => new Promise((resolve) => {
  if (signal.aborted) return resolve();
  const done = (): void => { clearTimeout(timer); signal.removeEventListener('abort', done); resolve(); };
  const timer = setTimeout(done, ms);
  signal.addEventListener('abort', done, { once: true });
});

/** The remote's error object ({error: {code, message}}), as text. */
function remoteError(a: Answer): { code: string | null; text: string } {
  const e = (a.json as { error?: { code?: unknown; message?: unknown } } | null)?.error;
  const code = typeof e?.code === 'string' ? e.code.slice(0, 80) : null;
  const message = typeof e?.message === 'string' ? e.message.slice(0, 500) : a.text.slice(0, 200).replace(/\s+/g, ' ');
  return { code, text: `HTTP ${a.status}${code ? ` ${code}` : ''}${message ? `: ${message}` : ''}` };
}

/** Checks that a remote report has the fields the outcome is read from (relay-check.ts outcomeOf); else a message. */
export function reportProblem(r: unknown): string | null {
  const o = r as Partial<RunResult> | null;
  if (typeof o !== 'object' || o === null) return 'the report is not an object';
  // /1: a remote of an older relayguard; /2 adds the checks (proxy, nntp) and keeps every /1 field of a relay test.
  const schema = (o as { schema?: unknown }).schema;
  if (schema !== 'relayguard-tester/1' && schema !== 'relayguard-tester/2') return `the report's schema is ${JSON.stringify(schema)}, not relayguard-tester/1 or /2`;
  if (o.mode !== 'safe' && o.mode !== 'prove') return 'the report has no mode';
  if (!Array.isArray(o.targets) || !Array.isArray(o.errors)) return 'the report has no targets';
  for (const t of o.targets) {
    if (typeof t !== 'object' || t === null || typeof t.verdict !== 'string' || typeof t.reason !== 'string' || !Array.isArray(t.ports)) return 'a target of the report is malformed';
    for (const p of t.ports) {
      if (typeof p !== 'object' || p === null || typeof p.port !== 'number' || !Array.isArray(p.transports)) return 'a port of the report is malformed';
      for (const tr of p.transports) {
        if (typeof tr !== 'object' || tr === null || !Array.isArray(tr.tricks)) return 'a transport of the report is malformed';
        for (const k of tr.tricks) if (typeof k !== 'object' || k === null || typeof k.id !== 'string' || typeof k.kind !== 'string') return 'a trick of the report is malformed';
      }
    }
  }
  return null;
}

/** A remote relayguard's web tester, over its API. */
export class RemoteVantage implements Vantage {
  readonly name: string;
  readonly #o: RemoteVantageOptions;
  readonly #url: URL;

  constructor(options: RemoteVantageOptions) {
    let url: URL;
    try {
      url = new URL(options.url);
    } catch {
      throw new RelayguardError(ERR_AUDIT_REMOTE, `the remote vantage point's url "${options.url}" is not a URL`);
    }
    if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new RelayguardError(ERR_AUDIT_REMOTE, `the remote vantage point's url must be http(s), got ${url.protocol}`);
    this.#o = options;
    this.#url = url;
    this.name = `remote ${url.origin}`;
  }

  async test(targets: readonly RelayTarget[], signal: AbortSignal): Promise<VantageOutcome[]> {
    const mode = this.#o.proof === true ? 'prove' : 'safe';
    const out: VantageOutcome[] = [];
    const fail = (target: RelayTarget, reason: string, detail: string): VantageOutcome => ({
      target, verdict: 'INCONCLUSIVE', reason, detail, acceptedTricks: [], mode, from: this.name,
    });
    let fatal: RemoteFailure | null = null;
    let setup: { token: string; ca: string | null };
    try {
      setup = await this.#setup();
    } catch (err) {
      return targets.map((t) => fail(t, 'remote-unusable', (err as Error).message));
    }
    for (const target of targets) {
      if (fatal !== null) {
        out.push(fail(target, fatal.reason, fatal.message));
        continue;
      }
      if (signal.aborted) {
        fatal = new RemoteFailure('remote-timeout', `the audit's budget ran out before ${this.name} tested this listener`, true);
        out.push(fail(target, fatal.reason, fatal.message));
        continue;
      }
      const host = this.#hostFor(target);
      if (host === null) {
        out.push(fail(target, 'not-tested', `bound to ${target.address}: no address to give ${this.name} (set the remote vantage point's host, or audit.addresses)`));
        continue;
      }
      try {
        const report = await this.#run(target, host, mode, setup, signal);
        out.push(this.#outcome(target, host, report));
      } catch (err) {
        const f = err instanceof RemoteFailure ? err : new RemoteFailure('remote-error', (err as Error).message, false);
        if (f.fatal) fatal = f;
        out.push(fail(target, f.reason, f.message));
      }
    }
    return out;
  }

  async #setup(): Promise<{ token: string; ca: string | null }> {
    let token: string;
    try {
      token = (await readFile(this.#o.tokenFile, 'utf8')).trim();
    } catch (err) {
      throw new RelayguardError(ERR_AUDIT_REMOTE, `cannot read the token file ${this.#o.tokenFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    if (!/^[\x21-\x7e]{8,512}$/.test(token)) throw new RelayguardError(ERR_AUDIT_REMOTE, `the token file ${this.#o.tokenFile} does not hold one API token`);
    let ca: string | null = null;
    if (this.#o.ca) {
      try {
        ca = await readFile(this.#o.ca, 'utf8');
      } catch (err) {
        throw new RelayguardError(ERR_AUDIT_REMOTE, `cannot read the CA file ${this.#o.ca}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      }
    }
    return { token, ca };
  }

  #hostFor(t: RelayTarget): string | null {
    if (this.#o.host) return this.#o.host;
    if (t.address !== '0.0.0.0' && t.address !== '::') return t.address;
    const family = t.address === '::' ? [4, 6] : [4];
    return (this.#o.addresses ?? []).find((a) => family.includes(isIP(a))) ?? null;
  }

  async #run(target: RelayTarget, host: string, mode: 'safe' | 'prove', setup: { token: string; ca: string | null }, signal: AbortSignal): Promise<RunResult> {
    const body = {
      host, ports: [`${target.port}:${portRole(target)}`], mode, mx: false, hostName: this.#o.hostName,
      ...(this.#o.domain !== null ? { domain: this.#o.domain } : {}),
      transcript: false, budgetSeconds: Math.max(1, Math.min(86_400, Math.round(this.#o.budgetMs / 1000))),
    };
    // Start the run (a busy remote is asked again after its Retry-After, within the budget).
    let id: string;
    for (;;) {
      const a = await this.#call('POST', '/api/tester/runs', setup, signal, body);
      if (a.status === 202 || a.status === 200 || a.status === 201) {
        const got = (a.json as { id?: unknown } | null)?.id;
        if (typeof got !== 'string' || !RUN_ID.test(got)) throw new RemoteFailure('remote-error', `${this.name} started a run but answered no run id`, true);
        id = got;
        break;
      }
      const e = remoteError(a);
      if (a.status === 429 && e.code === 'ERR_TESTER_BUSY') {
        const wait = Math.min(30, Math.max(1, Number(a.headers['retry-after']) || 5)) * 1000;
        await sleep(wait, signal);
        if (signal.aborted) throw new RemoteFailure('remote-busy', `${this.name} stayed busy (${e.text}) until the audit's budget ran out`, true);
        continue;
      }
      throw this.#refusal(a, e);
    }
    // Follow it.
    let interval = this.#o.pollMs ?? 500;
    for (;;) {
      await sleep(interval, signal);
      if (signal.aborted) throw new RemoteFailure('remote-timeout', `the audit's budget ran out while ${this.name} was testing (run ${id})`, true);
      interval = Math.min(3000, Math.round(interval * 1.5));
      const a = await this.#call('GET', `/api/tester/runs/${id}`, setup, signal);
      if (a.status !== 200) throw this.#refusal(a, remoteError(a));
      const run = a.json as { state?: unknown; error?: unknown; report?: unknown } | null;
      const state = run?.state;
      if (state === 'running') continue;
      if (state === 'done') {
        const problem = reportProblem(run?.report);
        if (problem !== null) throw new RemoteFailure('remote-error', `${this.name} run ${id}: ${problem}`, false);
        return run!.report as RunResult;
      }
      if (state === 'failed' || state === 'aborted') {
        throw new RemoteFailure('remote-run-failed', `${this.name} run ${id} ${state}: ${typeof run?.error === 'string' ? run.error.slice(0, 500) : 'no reason given'}`, false);
      }
      throw new RemoteFailure('remote-error', `${this.name} run ${id} is in an unknown state ${JSON.stringify(state)?.slice(0, 40)}`, false);
    }
  }

  /** A refusal as a failure (fatal when it concerns the remote, not the target). */
  #refusal(a: Answer, e: { code: string | null; text: string }): RemoteFailure {
    const said = `${this.name} refused: ${e.text}`;
    if (a.status === 401) return new RemoteFailure('remote-unauthorized', `${said} (check the token in ${this.#o.tokenFile})`, true);
    if (a.status === 403) return new RemoteFailure('remote-forbidden', said, true);
    if (a.status === 404 && e.code !== 'ERR_TESTER_RUN_NOT_FOUND') return new RemoteFailure('remote-no-tester', `${said} (is web.tester enabled there?)`, true);
    if (e.code === 'ERR_TESTER_TARGET_FORBIDDEN') return new RemoteFailure('remote-target-forbidden', `${said} (add this address to web.tester.allowTargets there)`, false);
    if (e.code === 'ERR_TESTER_PROOF_UNAVAILABLE') return new RemoteFailure('remote-proof-unavailable', `${said} (configure web.tester.proof there, or set proof: false)`, true);
    return new RemoteFailure(a.status === 429 ? 'remote-busy' : 'remote-error', said, a.status >= 500 || a.status === 429);
  }

  #outcome(target: RelayTarget, host: string, report: RunResult): VantageOutcome {
    const from = (s: string | null): string => `${this.name}${s ? ` (${s})` : ''}`;
    const t = report.targets[0];
    const p = t?.ports.find((x) => x.port === target.port);
    if (t === undefined || p === undefined || t.ports.length !== 1 || (isIP(host) !== 0 && t.address !== host)) {
      return {
        target, verdict: 'INCONCLUSIVE', reason: t === undefined ? 'error' : 'remote-error', mode: report.mode, from: from(t?.sourceAddress ?? null), acceptedTricks: [], report,
        detail: t === undefined ? (report.errors.map((e) => e.error).join('; ') || 'not tested') : `${this.name} reported on ${t.address} port(s) ${t.ports.map((x) => x.port).join(', ')}, not ${host}:${target.port}`,
      };
    }
    return outcomeOf(target, report, from(t.sourceAddress));
  }

  /** One HTTP exchange with the remote; connection-level failures become fatal RemoteFailures. */
  #call(method: 'GET' | 'POST', path: string, setup: { token: string; ca: string | null }, signal: AbortSignal, body?: unknown): Promise<Answer> {
    const url = new URL(path, this.#url.href.endsWith('/') ? this.#url.href : `${this.#url.href}/`);
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const timeoutMs = this.#o.requestTimeoutMs ?? 30_000;
    const https = url.protocol === 'https:';
    return new Promise<Answer>((resolve, reject) => {
      if (signal.aborted) {
        reject(new RemoteFailure('remote-timeout', `the audit's budget ran out before ${this.name} answered`, true));
        return;
      }
      const options = {
        method,
        headers: {
          authorization: `Bearer ${setup.token}`, accept: 'application/json',
          ...(payload ? { 'content-type': 'application/json', 'content-length': String(payload.length) } : {}),
        },
        signal,
        ...(https && setup.ca !== null ? { ca: setup.ca } : {}),
      };
      let settled = false;
      const done = (fn: () => void): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        fn();
      };
      const req = (https ? httpsRequest : httpRequest)(url, options, (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > MAX_BODY) {
            req.destroy();
            done(() => reject(new RemoteFailure('remote-error', `${this.name} answered more than ${MAX_BODY} bytes`, true)));
            return;
          }
          chunks.push(c);
        });
        res.on('end', () => done(() => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json: unknown = null;
          try { json = JSON.parse(text); } catch { /* not JSON: remoteError shows the text */ }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, json, text });
        }));
        res.on('error', (err) => done(() => reject(this.#netFailure(err, signal))));
      });
      const timer = setTimeout(() => {
        req.destroy();
        done(() => reject(new RemoteFailure('remote-timeout', `${this.name} did not answer ${method} ${url.pathname} within ${Math.round(timeoutMs / 1000)} s`, true)));
      }, timeoutMs);
      req.on('error', (err) => done(() => reject(this.#netFailure(err, signal))));
      req.end(payload);
    });
  }

  #netFailure(err: Error, signal: AbortSignal): RemoteFailure {
    if (signal.aborted) return new RemoteFailure('remote-timeout', `the audit's budget ran out while waiting for ${this.name}`, true);
    const code = (err as NodeJS.ErrnoException).code;
    return new RemoteFailure('remote-unreachable', `${this.name} does not answer: ${code ? `${code} ` : ''}${err.message}`.slice(0, 500), true);
  }
}
