/**
 * Purpose: open-proxy verdicts, pure. One attempt (what the proxy said, RawAttempt, and what the sink saw) →
 * OPEN / CLOSED / INCONCLUSIVE / N/A with a reason; then per port and per target.
 *
 * Rules:
 * - OPEN only by arrival: the sink recorded the attempt's tag ('proved'), from the proxy's egress address. A
 *   proxy's own word is never proof: nmap's http-open-proxy and socks-open-proxy decide from the proxy's reply.
 * - The proxy claimed success (HTTP 2xx to CONNECT, SOCKS granted, a gateway that "connected") but the sink saw
 *   nothing: INCONCLUSIVE 'lies' (a honeypot, a fake banner, a tunnel to somewhere else, or to the tester itself).
 *   A 2xx to GET or POST without arrival is CLOSED 'not-forwarded' (a web server answering for itself).
 * - HTTP 407, SOCKS5 choosing username/password, SOCKS4 identd failures: CLOSED 'auth-required'. HTTP 4xx/5xx
 *   (not 502/503/504), SOCKS4 0x5b, SOCKS5 0x02 (ruleset) or 0xff (no acceptable method): CLOSED 'refused'.
 *   3xx: CLOSED 'redirected'. HTTP 502/503/504, SOCKS5 0x01/0x03-0x06: INCONCLUSIVE 'destination-unreachable'
 *   (the proxy tried, or says it did, and could not reach the sink: it may still forward elsewhere).
 *   SOCKS5 0x07/0x08 (command or address type not supported): N/A 'not-supported'.
 * - The TCP connection to the proxy port refused: CLOSED 'no-service'. No reply within the step deadline:
 *   INCONCLUSIVE 'timeout'; some bytes but not a whole reply: 'tarpit' (slow drip); more than the read cap
 *   without an end (endless headers, a reply that never ends), binary garbage, a wrong SOCKS version or length:
 *   'protocol-error'; hung up: 'dropped'; the per-target budget ran out: 'budget-exhausted'.
 * - Per port: an attempt in a protocol the port does not speak (the port answered another protocol's attempt
 *   recognizably) is N/A 'wrong-protocol', so SOCKS probes on an HTTP proxy do not make it INCONCLUSIVE.
 * - Aggregation: any OPEN → OPEN; else any INCONCLUSIVE → INCONCLUSIVE (most telling reason first); else CLOSED
 *   (most frequent reason); nothing applicable → CLOSED 'no-service' when every connection was refused, else
 *   INCONCLUSIVE 'not-tested'.
 */
import type { Verdict } from '../verdict.ts';
import { protocolOf, type ProxyProbe, type ProxyProtocol, type RawAttempt } from './probes.ts';

export type ProxyReason =
  | 'proved'
  | 'refused' | 'auth-required' | 'redirected' | 'not-forwarded' | 'no-service'
  | 'lies' | 'destination-unreachable' | 'protocol-error' | 'timeout' | 'tarpit' | 'dropped' | 'budget-exhausted' | 'not-tested'
  | 'wrong-protocol' | 'not-supported' | 'no-destination' | 'no-prompt';

export interface ProxyOutcome {
  readonly verdict: Verdict | 'N/A';
  readonly reason: ProxyReason;
  readonly detail: string;
}

export const PROXY_REASON_TEXT: Readonly<Record<ProxyReason, string>> = {
  'proved': 'the proxy connected the tester to its sink (proved by arrival)',
  'refused': 'refused by the proxy',
  'auth-required': 'the proxy requires authentication',
  'redirected': 'redirected (not forwarded)',
  'not-forwarded': 'answered itself, nothing reached the sink',
  'no-service': 'nothing listens (connection refused)',
  'lies': 'the proxy claimed success but nothing reached the sink',
  'destination-unreachable': 'the proxy could not reach the sink (it may forward elsewhere)',
  'protocol-error': 'garbage or a malformed reply',
  'timeout': 'no reply in time (tarpit or dead)',
  'tarpit': 'a reply too slow to finish (slow drip)',
  'dropped': 'the proxy closed the connection',
  'budget-exhausted': 'the time budget ran out',
  'not-tested': 'nothing could be tested',
  'wrong-protocol': 'the port speaks another protocol',
  'not-supported': 'the proxy does not support this kind of request',
  'no-destination': 'no sink address for this destination',
  'no-prompt': 'no gateway prompt',
};

export interface SinkEvidence {
  readonly arrived: boolean;
  readonly egressAddress: string | null;
  readonly sinkKind: 'mail' | 'control' | null;
  readonly via: string | null;
}

/** The outcome of one attempt. */
export function classifyProxyAttempt(probe: ProxyProbe, raw: RawAttempt, sink: SinkEvidence): ProxyOutcome {
  const what = raw.reply ?? '';
  if (sink.arrived) {
    const where = sink.sinkKind === 'control' ? 'its non-mail control port' : 'its mail port';
    return { verdict: 'OPEN', reason: 'proved', detail: `${what ? `${what}; ` : ''}the sink saw the connection on ${where} from ${sink.egressAddress ?? '?'}${sink.via ? ` (${sink.via})` : ''}` };
  }
  const f = raw.failure;
  if (raw.claimed) {
    if (probe.method === 'http-get' || probe.method === 'http-post') {
      return { verdict: 'CLOSED', reason: 'not-forwarded', detail: `${what}: answered, but nothing reached the sink` };
    }
    const why = raw.bannerMatches === false ? `another server answered through the tunnel ("${raw.banner}")`
      : raw.banner === null ? `nothing came through the tunnel${f ? ` (${f.message})` : ''}` : 'the sink did not see the connection';
    return { verdict: 'INCONCLUSIVE', reason: 'lies', detail: `${what}: claimed success, but ${why}` };
  }
  if (raw.status !== null) {
    const s = raw.status;
    if (s === 407) return { verdict: 'CLOSED', reason: 'auth-required', detail: what };
    if (s >= 300 && s < 400) return { verdict: 'CLOSED', reason: 'redirected', detail: `${what}${raw.location ? ` to ${raw.location}` : ''}` };
    if (s === 502 || s === 503 || s === 504) return { verdict: 'INCONCLUSIVE', reason: 'destination-unreachable', detail: what };
    if (s >= 400) return { verdict: 'CLOSED', reason: 'refused', detail: what };
    return { verdict: 'INCONCLUSIVE', reason: 'protocol-error', detail: `${what}: an unexpected status` };
  }
  if (raw.socksMethod !== null && raw.socksMethod !== 0) {
    if (raw.socksMethod === 2) return { verdict: 'CLOSED', reason: 'auth-required', detail: what };
    if (raw.socksMethod === 0xff) return { verdict: 'CLOSED', reason: 'refused', detail: what };
  }
  if (raw.socksCode !== null && !f) {
    const c = raw.socksCode;
    if (raw.speaks === 'socks4') {
      if (c === 0x5c || c === 0x5d) return { verdict: 'CLOSED', reason: 'auth-required', detail: what };
      return { verdict: 'CLOSED', reason: 'refused', detail: what };
    }
    if (c === 2) return { verdict: 'CLOSED', reason: 'refused', detail: what };
    if (c === 7 || c === 8) return { verdict: 'N/A', reason: 'not-supported', detail: what };
    return { verdict: 'INCONCLUSIVE', reason: 'destination-unreachable', detail: what };
  }
  if (f) {
    switch (f.kind) {
      case 'refused': return { verdict: 'CLOSED', reason: 'no-service', detail: f.message };
      case 'timeout':
        if (probe.method === 'telnet' && raw.speaks === null) return { verdict: 'N/A', reason: 'no-prompt', detail: f.message };
        return { verdict: 'INCONCLUSIVE', reason: 'timeout', detail: f.message };
      case 'tarpit': return { verdict: 'INCONCLUSIVE', reason: 'tarpit', detail: f.message };
      case 'overflow': case 'garbage': case 'bad-version': case 'bad-length':
        return { verdict: 'INCONCLUSIVE', reason: 'protocol-error', detail: f.message };
      case 'closed': return { verdict: 'INCONCLUSIVE', reason: 'dropped', detail: f.message };
      case 'unreachable': return { verdict: 'INCONCLUSIVE', reason: 'timeout', detail: f.message };
      case 'aborted': return { verdict: 'INCONCLUSIVE', reason: 'budget-exhausted', detail: f.message };
    }
  }
  return { verdict: 'INCONCLUSIVE', reason: 'not-tested', detail: what || 'no reply' };
}

/**
 * Per port: attempts in a protocol the port does not speak become N/A 'wrong-protocol' (when the port answered
 * some other protocol recognizably and this attempt failed without a recognizable reply).
 */
export function applyPortProtocol<T extends { readonly probe: ProxyProbe; readonly raw: RawAttempt; readonly outcome: ProxyOutcome }>(attempts: readonly T[]): { protocols: ProxyProtocol[]; attempts: T[] } {
  const protocols = [...new Set(attempts.map((a) => a.raw.speaks).filter((p): p is ProxyProtocol => p !== null))];
  const out = attempts.map((a) => {
    if (protocols.length === 0 || a.outcome.verdict === 'OPEN' || a.outcome.verdict === 'N/A') return a;
    const mine = protocolOf(a.probe.method);
    if (protocols.includes(mine)) return a;
    if (a.outcome.reason === 'no-service' || a.outcome.reason === 'budget-exhausted') return a;
    return { ...a, outcome: { verdict: 'N/A' as const, reason: 'wrong-protocol' as const, detail: `the port speaks ${protocols.join(', ')}; ${a.outcome.detail}` } };
  });
  return { protocols, attempts: out };
}

const INCONCLUSIVE_ORDER: readonly ProxyReason[] = ['lies', 'destination-unreachable', 'protocol-error', 'tarpit', 'timeout', 'dropped', 'budget-exhausted', 'not-tested'];
const CLOSED_ORDER: readonly ProxyReason[] = ['auth-required', 'refused', 'redirected', 'not-forwarded', 'no-service'];

export interface ProxyCounts { OPEN: number; CLOSED: number; INCONCLUSIVE: number; 'N/A': number }

export function aggregateProxy(outcomes: readonly ProxyOutcome[]): ProxyOutcome & { readonly verdict: Verdict; readonly counts: ProxyCounts } {
  const counts: ProxyCounts = { OPEN: 0, CLOSED: 0, INCONCLUSIVE: 0, 'N/A': 0 };
  for (const o of outcomes) counts[o.verdict]++;
  const rank = (order: readonly ProxyReason[], r: ProxyReason): number => { const i = order.indexOf(r); return i < 0 ? order.length : i; };
  const open = outcomes.find((o) => o.verdict === 'OPEN');
  if (open) return { verdict: 'OPEN', reason: open.reason, detail: open.detail, counts };
  const inc = outcomes.filter((o) => o.verdict === 'INCONCLUSIVE').sort((a, b) => rank(INCONCLUSIVE_ORDER, a.reason) - rank(INCONCLUSIVE_ORDER, b.reason))[0];
  if (inc) return { verdict: 'INCONCLUSIVE', reason: inc.reason, detail: inc.detail, counts };
  const closed = outcomes.filter((o) => o.verdict === 'CLOSED');
  if (closed.length > 0) {
    const freq = new Map<ProxyReason, number>();
    for (const o of closed) freq.set(o.reason, (freq.get(o.reason) ?? 0) + 1);
    const best = [...freq.entries()].sort((a, b) => b[1] - a[1] || rank(CLOSED_ORDER, a[0]) - rank(CLOSED_ORDER, b[0]))[0]![0];
    return { verdict: 'CLOSED', reason: best, detail: closed.find((o) => o.reason === best)!.detail, counts };
  }
  return { verdict: 'INCONCLUSIVE', reason: 'not-tested', detail: 'nothing could be tested', counts };
}
