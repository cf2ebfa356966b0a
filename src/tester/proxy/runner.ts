/**
 * Purpose: runs the open-proxy battery against one address: every port, every probe (PROXY_PROBES), each on a
 * connection of its own, in parallel (bounded), under one per-target time budget. Each attempt asks the proxy for
 * the sink and is judged by what the sink saw (verdict.ts). When a port has answered one protocol, attempts of
 * other protocols that still have heard nothing are stopped after a short grace (an HTTP proxy never answers a
 * SOCKS greeting; waiting out the step deadline for it would only cost time) and reported N/A 'wrong-protocol'.
 * Trust: connects only to the target address and ports given, from the source address given; asks proxies only
 * for the sink's addresses. Safe: through a tunnel it speaks banner, EHLO and QUIT, never MAIL or a message.
 */
import { performance } from 'node:perf_hooks';
import { timeoutSignal } from '../../core/abort.ts';
import { normalizeIp } from '../../core/address.ts';
import { createTagger, type Tagger } from '../proof.ts';
import { PROXY_PROBES, emptyRaw, exchange, protocolOf, type Destination, type DestinationKind, type ProxyProbe, type ProxyProtocol, type RawAttempt } from './probes.ts';
import type { ProxyAttemptResult, ProxyFinding, ProxyPortResult, ProxyTargetResult } from './result.ts';
import type { ProxyArrival, ProxySink } from './sink.ts';
import { aggregateProxy, applyPortProtocol, classifyProxyAttempt, type ProxyOutcome } from './verdict.ts';
import { Wire, WireError } from './wire.ts';

/** The common open-proxy ports (pxytest, ORDB-era lists): HTTP 80, 81, 3128, 8000, 8080, 8081, 8888; SOCKS 1080; Wingate/telnet 23. */
export const DEFAULT_PROXY_PORTS: readonly number[] = Object.freeze([80, 81, 1080, 3128, 8000, 8080, 8081, 8888, 23]);

export interface ProxyTimeouts {
  /** TCP connect to the proxy. Default 5 s. */
  readonly connect: number;
  /** Each reply from the proxy, whole. Default 8 s. */
  readonly step: number;
  /** telnet: wait for a prompt. Default 2 s. */
  readonly prompt: number;
  /** After a claimed success: how long to wait for the sink to see the tag. Default 2 s. */
  readonly arrival: number;
  /**
   * After a recognized reply in another protocol: at most how long an attempt that heard nothing may go on
   * (three times the recognized reply's time, at least 200 ms). Default 2 s.
   */
  readonly otherProtocolGrace: number;
}

export const DEFAULT_PROXY_TIMEOUTS: ProxyTimeouts = Object.freeze({ connect: 5_000, step: 8_000, prompt: 2_000, arrival: 2_000, otherProtocolGrace: 2_000 });

/** What proxies are asked to connect to: the sink's addresses as the proxies should see them. */
export interface ProbeAddresses {
  /** IPv4 address of the sink (default: its IPv4 listener's address). */
  readonly v4?: string;
  /** IPv6 address of the sink (default: its IPv6 listener's address, if any). */
  readonly v6?: string;
  /** A host name that resolves to the sink (SOCKS4a, SOCKS5 by name). Default: the IPv4 address as text. */
  readonly name?: string;
}

export interface ProxyTesterOptions {
  readonly ports: readonly number[];
  readonly sink: ProxySink;
  readonly probeAddresses?: ProbeAddresses;
  /** EHLO names are `<tag>.<testerDomain>`. */
  readonly testerDomain: string;
  readonly probes?: readonly ProxyProbe[];
  readonly sourceAddress?: string;
  /** Per-target time budget, ms. Default 60 s. */
  readonly budgetMs?: number;
  readonly timeouts?: Partial<ProxyTimeouts>;
  /** Attempts in flight per target. Default 16. */
  readonly parallel?: number;
  /** Read cap per connection, bytes. Default 16 KiB. */
  readonly maxBuffer?: number;
  readonly signal?: AbortSignal;
  readonly tagger?: Tagger;
}

export interface ProxyTargetInput {
  readonly input: string;
  readonly address: string;
  readonly family: 4 | 6;
}

function destinations(o: ProxyTesterOptions): Record<DestinationKind, Destination | null> {
  const s = o.sink;
  const mail4 = s.listener(4, 'mail');
  const mail6 = s.listener(6, 'mail');
  const control4 = s.listener(4, 'control');
  const v4 = o.probeAddresses?.v4 ?? (mail4 && mail4.address !== '0.0.0.0' ? mail4.address : undefined);
  const v6 = o.probeAddresses?.v6 ?? (mail6 && mail6.address !== '::' ? mail6.address : undefined);
  return {
    mail4: mail4 && v4 ? { host: v4, port: mail4.port, kind: 'mail' } : null,
    mail6: mail6 && v6 ? { host: normalizeIp(v6) ?? v6, port: mail6.port, kind: 'mail' } : null,
    control4: control4 && v4 ? { host: v4, port: control4.port, kind: 'control' } : null,
    name: mail4 && (o.probeAddresses?.name ?? v4) ? { host: (o.probeAddresses?.name ?? v4)!, port: mail4.port, kind: 'mail' } : null,
  };
}

interface Done {
  readonly probe: ProxyProbe;
  readonly raw: RawAttempt;
  readonly outcome: ProxyOutcome;
  readonly result: Omit<ProxyAttemptResult, 'verdict' | 'reason' | 'detail'>;
}

class PortState {
  readonly recognized = new Set<ProxyProtocol>();
  readonly waiting = new Map<AbortController, { protocol: ProxyProtocol; wire: () => Wire | null }>();
  readonly stoppedFor = new WeakMap<AbortController, ProxyProtocol[]>();
  /**
   * A reply in protocol p came after tookMs: attempts of other protocols that have heard nothing get a grace of
   * three times that (at least minMs, at most maxMs) before they are stopped: a proxy that speaks both answers
   * both about as fast.
   */
  recognize(p: ProxyProtocol, tookMs: number, minMs: number, maxMs: number): void {
    if (this.recognized.has(p)) return;
    this.recognized.add(p);
    const graceMs = Math.min(maxMs, Math.max(minMs, 3 * tookMs));
    const t = setTimeout(() => {
      for (const [ctl, w] of this.waiting) {
        const wire = w.wire();
        if (this.recognized.has(w.protocol) || (wire !== null && wire.bytesIn > 0)) continue;
        // SOCKS4 and SOCKS5 are usually served together: one does not stop the other
        if (w.protocol.startsWith('socks') && [...this.recognized].some((r) => r.startsWith('socks'))) continue;
        this.stoppedFor.set(ctl, [...this.recognized]);
        ctl.abort(new DOMException('the port speaks another protocol', 'AbortError'));
      }
    }, graceMs);
    t.unref();
  }
}

async function runAttempt(target: ProxyTargetInput, port: number, probe: ProxyProbe, dest: Destination | null, o: ProxyTesterOptions,
  timeouts: ProxyTimeouts, budget: AbortSignal, tagger: Tagger, state: PortState): Promise<Done> {
  const t0 = performance.now();
  const raw = emptyRaw();
  const base = { id: probe.id, title: probe.title, method: probe.method };
  if (dest === null) {
    const outcome: ProxyOutcome = { verdict: 'N/A', reason: 'no-destination', detail: `no sink address for ${probe.dest} (give --probe-address${probe.dest === 'mail6' ? '6 or a sink on IPv6' : ''})` };
    return { probe, raw, outcome, result: { ...base, destination: null, reply: null, claimed: false, smtp: null, proof: null, localAddress: null, bytesIn: 0, ms: 0 } };
  }
  const tag = tagger.next();
  const ctl = new AbortController();
  const onBudget = (): void => ctl.abort(budget.reason);
  if (budget.aborted) ctl.abort(budget.reason); else budget.addEventListener('abort', onBudget, { once: true });
  let wire: Wire | null = null;
  state.waiting.set(ctl, { protocol: protocolOf(probe.method), wire: () => wire });
  const sentAt = Date.now();
  // A forwarded GET or POST is proved the moment the sink sees it; a proxy may then keep the tester waiting for
  // a reply (tinyproxy waits for HTTP headers the sink never sends). Stop reading once the proof is in.
  const forwarded = probe.method === 'http-get' || probe.method === 'http-post';
  let provedEarly = false;
  const watch = forwarded ? o.sink.waitFor(tag, 24 * 3600_000, ctl.signal).then((a) => {
    if (a.length > 0 && !ctl.signal.aborted) { provedEarly = true; ctl.abort(new DOMException('proved', 'AbortError')); }
  }) : null;
  try {
    wire = await Wire.connect({ host: target.address, port, ...(o.sourceAddress ? { localAddress: o.sourceAddress } : {}), timeoutMs: timeouts.connect, signal: ctl.signal, ...(o.maxBuffer ? { maxBuffer: o.maxBuffer } : {}) });
    raw.localAddress = wire.localAddress;
    const w = wire;
    const onSpeaks = (p: ProxyProtocol): void => {
      const took = (w.firstDataAt ?? performance.now()) - t0;
      state.recognize(p, took, Math.min(200, timeouts.otherProtocolGrace), timeouts.otherProtocolGrace);
    };
    await exchange({ wire, probe, dest, tag, heloName: `${tag}.${o.testerDomain}`, nonce: o.sink.nonce, timeouts, raw, onSpeaks });
  } catch (err) {
    if (!(err instanceof WireError)) throw err;
    const other = state.stoppedFor.get(ctl);
    if (provedEarly) { raw.speaks ??= 'http'; raw.reply ??= 'stopped reading the reply: the sink already saw the request'; }
    raw.failure = provedEarly ? null : other && err.kind === 'aborted' && !budget.aborted
      ? { kind: 'timeout', message: `no reply to ${probe.method} (stopped: the port answered ${other.join(', ')})` }
      : { kind: err.kind, message: err.message };
    // an endless or never-ending HTTP reply still says which protocol the port speaks
    if (raw.speaks === null && err.partial.subarray(0, 5).toString('latin1') === 'HTTP/') raw.speaks = 'http';
  } finally {
    if (!ctl.signal.aborted) ctl.abort(new DOMException('attempt over', 'AbortError'));
    await watch;
    state.waiting.delete(ctl);
    budget.removeEventListener('abort', onBudget);
    if (wire) { raw.bytesIn = wire.bytesIn; wire.destroy(); }
  }
  if (raw.speaks) state.recognize(raw.speaks, performance.now() - t0, Math.min(200, timeouts.otherProtocolGrace), timeouts.otherProtocolGrace);
  // The sink records a tag the moment it sees it; a claimed tunnel or a forwarded request may still be on its way.
  // Through a tunnel the tag travels only in EHLO, sent after the sink's own greeting came back: without that
  // greeting nothing can arrive. A forwarded GET or POST carries it in the request, which may overtake the reply
  // (a 5xx or a non-HTTP answer may come after forwarding; a 3xx or 4xx refusal did not forward).
  const waitMs = raw.bannerMatches === true ? timeouts.arrival
    : forwarded && raw.claimed ? timeouts.arrival
      : forwarded && raw.bytesIn > 0 && (raw.status === null || raw.status >= 500) ? Math.min(300, timeouts.arrival) : 0;
  const arrivals: ProxyArrival[] = await o.sink.waitFor(tag, budget.aborted ? 0 : waitMs, budget);
  const first = arrivals[0];
  const outcome = classifyProxyAttempt(probe, raw, {
    arrived: first !== undefined, egressAddress: first?.peerAddress ?? null, sinkKind: first?.kind ?? null, via: first ? `"${first.line.slice(0, 60)}"` : null,
  });
  return {
    probe, raw, outcome,
    result: {
      ...base,
      destination: { kind: probe.dest, host: dest.host, port: dest.port },
      reply: raw.reply,
      claimed: raw.claimed,
      smtp: raw.banner !== null ? { banner: raw.banner, bannerMatches: raw.bannerMatches, ehlo: raw.ehlo, quit: raw.quit } : null,
      proof: {
        tag, arrived: first !== undefined, egressAddress: first?.peerAddress ?? null, sinkKind: first?.kind ?? null, sinkLine: first?.line ?? null,
        latencyMs: first ? Math.max(0, first.at - sentAt) : null,
      },
      localAddress: raw.localAddress,
      bytesIn: raw.bytesIn,
      ms: Math.round(performance.now() - t0),
    },
  };
}

async function pool<T>(jobs: readonly (() => Promise<T>)[], limit: number): Promise<T[]> {
  const out: T[] = new Array(jobs.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < jobs.length) {
      const i = next++;
      out[i] = await jobs[i]!();
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, jobs.length)) }, worker));
  return out;
}

function portFindings(address: string, attempts: readonly ProxyAttemptResult[], egress: readonly string[]): ProxyFinding[] {
  const out: ProxyFinding[] = [];
  const open = attempts.filter((a) => a.verdict === 'OPEN');
  const mailOpen = open.some((a) => a.proof?.sinkKind === 'mail');
  if (open.length > 0) {
    out.push({
      id: 'open-proxy', severity: 'error',
      message: `open proxy: ${open.map((a) => a.id).join(', ')} reached the tester's sink${mailOpen ? ' (a mail port: spam can be sent through it)' : ' (a non-mail port only)'}`,
      remediation: 'allow only your own clients (squid: "http_access allow localnet" then "http_access deny all"; dante: "client pass { from: <your nets> }" and "socks pass" with "socksmethod: username"; tinyproxy: "Allow <your nets>"), and deny CONNECT to port 25 ("http_access deny CONNECT !SSL_ports")',
    });
  }
  if (!mailOpen && open.some((a) => a.proof?.sinkKind === 'control')) {
    out.push({ id: 'mail-port-blocked', severity: 'warning', message: 'the proxy forwards to other ports but not to the mail port: still an open proxy', remediation: null });
  }
  const family = (a: string): number => (a.includes(':') ? 6 : 4);
  const other = egress.filter((e) => e !== address && family(e) === family(address));
  const otherFamily = egress.filter((e) => family(e) !== family(address));
  if (otherFamily.length > 0) {
    out.push({ id: 'egress-other-family', severity: 'info', message: `it also connects out over IPv${family(otherFamily[0]!)} (from ${otherFamily.join(', ')})`, remediation: null });
  }
  if (other.length > 0) {
    out.push({ id: 'egress-differs', severity: 'warning', message: `connections left from ${other.join(', ')}, not from the tested address ${address}: a proxy chain or a multi-homed proxy; report both addresses`, remediation: null });
  }
  if (attempts.some((a) => a.reason === 'lies')) {
    out.push({ id: 'claims-without-arrival', severity: 'info', message: 'the proxy claimed success without the connection reaching the sink (a honeypot or a tunnel elsewhere); a tool that trusts the reply calls it open', remediation: null });
  }
  return out;
}

/** Tests one address on every proxy port; resolves with its verdicts (never throws for network trouble). */
export async function testProxyTarget(target: ProxyTargetInput, options: ProxyTesterOptions): Promise<ProxyTargetResult> {
  const started = performance.now();
  const startedAt = new Date().toISOString();
  const timeouts: ProxyTimeouts = { ...DEFAULT_PROXY_TIMEOUTS, ...options.timeouts };
  const budget = timeoutSignal(options.signal, options.budgetMs ?? 60_000, 'Proxy target test');
  const tagger = options.tagger ?? createTagger();
  const probes = options.probes ?? PROXY_PROBES;
  const dests = destinations(options);
  const states = new Map(options.ports.map((p) => [p, new PortState()]));
  const portStarted = new Map<number, number>();
  const jobs = options.ports.flatMap((port) => probes.map((probe) => () => {
    if (!portStarted.has(port)) portStarted.set(port, performance.now());
    return runAttempt(target, port, probe, dests[probe.dest], options, timeouts, budget.signal, tagger, states.get(port)!).then((d) => ({ port, d }));
  }));
  let done: { port: number; d: Done }[];
  try {
    done = await pool(jobs, options.parallel ?? 16);
  } finally {
    budget.release();
  }
  const ports: ProxyPortResult[] = options.ports.map((port) => {
    const mine = done.filter((x) => x.port === port).map((x) => x.d);
    const { protocols, attempts } = applyPortProtocol(mine);
    const results: ProxyAttemptResult[] = attempts.map((a) => ({ ...a.result, verdict: a.outcome.verdict, reason: a.outcome.reason, detail: a.outcome.detail }));
    const agg = aggregateProxy(attempts.map((a) => a.outcome).filter((o) => o.verdict !== 'N/A'));
    const allRefused = attempts.length > 0 && attempts.every((a) => a.outcome.reason === 'no-service' || a.outcome.reason === 'no-destination');
    const final = agg.reason === 'not-tested' && allRefused ? { ...agg, verdict: 'CLOSED' as const, reason: 'no-service' as const, detail: 'connection refused' } : agg;
    const egress = [...new Set(results.map((r) => r.proof?.egressAddress).filter((e): e is string => !!e))];
    const durations = results.map((r) => r.ms);
    return {
      port, protocols, verdict: final.verdict, reason: final.reason, detail: final.detail, counts: agg.counts, egress,
      attempts: results, findings: portFindings(target.address, results, egress), durationMs: durations.length ? Math.max(...durations) : 0,
    };
  });
  const agg = aggregateProxy(ports.map((p) => ({ verdict: p.verdict, reason: p.reason, detail: `port ${p.port}: ${p.detail}` })));
  const counts = { OPEN: 0, CLOSED: 0, INCONCLUSIVE: 0, 'N/A': 0 };
  for (const p of ports) for (const k of ['OPEN', 'CLOSED', 'INCONCLUSIVE', 'N/A'] as const) counts[k] += p.counts[k];
  return {
    check: 'proxy', input: target.input, address: target.address, family: target.family, sourceAddress: options.sourceAddress ?? null,
    verdict: agg.verdict, reason: agg.reason, detail: agg.detail, counts, egress: [...new Set(ports.flatMap((p) => p.egress))], ports, startedAt,
    durationMs: Math.round(performance.now() - started),
  };
}
