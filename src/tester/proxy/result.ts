/**
 * The open-proxy battery's result model: plain data, the `proxies` part of the tester's JSON document (schema
 * relayguard-tester/2, docs/tester-json.md). Every entry carries `check: 'proxy'`.
 */
import type { Verdict } from '../verdict.ts';
import type { DestinationKind, ProxyMethod, ProxyProtocol } from './probes.ts';
import type { ProxyCounts, ProxyReason } from './verdict.ts';

export interface ProxyProof {
  readonly tag: string;
  readonly arrived: boolean;
  /** The address the sink saw the connection come from: the proxy's egress address. */
  readonly egressAddress: string | null;
  /** The sink listener it reached. */
  readonly sinkKind: 'mail' | 'control' | null;
  /** The line that carried the tag at the sink ("EHLO rg-...", "GET /rg-... HTTP/1.1"). */
  readonly sinkLine: string | null;
  /** How long after the request the sink saw it, ms. */
  readonly latencyMs: number | null;
}

export interface ProxySmtpExchange {
  /** The greeting that came back through the tunnel, whether it was the sink's (its nonce), EHLO and QUIT replies. */
  readonly banner: string | null;
  readonly bannerMatches: boolean | null;
  readonly ehlo: string | null;
  readonly quit: string | null;
}

export interface ProxyAttemptResult {
  readonly id: string;
  readonly title: string;
  readonly method: ProxyMethod;
  /** What the proxy was asked to reach: host (literal or name), port, and which sink listener that is. */
  readonly destination: { readonly kind: DestinationKind; readonly host: string; readonly port: number } | null;
  readonly verdict: Verdict | 'N/A';
  readonly reason: ProxyReason;
  readonly detail: string;
  /** The proxy's reply in one line, or null. */
  readonly reply: string | null;
  /** The proxy said the request succeeded. */
  readonly claimed: boolean;
  readonly smtp: ProxySmtpExchange | null;
  readonly proof: ProxyProof | null;
  /** The tester's local address on this connection. */
  readonly localAddress: string | null;
  readonly bytesIn: number;
  readonly ms: number;
}

export interface ProxyFinding {
  readonly id: string;
  readonly severity: 'error' | 'warning' | 'info';
  readonly message: string;
  readonly remediation: string | null;
}

export interface ProxyPortResult {
  readonly port: number;
  /** Protocols the port answered in. */
  readonly protocols: readonly ProxyProtocol[];
  readonly verdict: Verdict;
  readonly reason: ProxyReason;
  readonly detail: string;
  readonly counts: ProxyCounts;
  /** Distinct egress addresses the sink saw for this port. */
  readonly egress: readonly string[];
  readonly attempts: readonly ProxyAttemptResult[];
  readonly findings: readonly ProxyFinding[];
  readonly durationMs: number;
}

export interface ProxyTargetResult {
  readonly check: 'proxy';
  readonly input: string;
  /** The tested address (the proxy's). */
  readonly address: string;
  readonly family: 4 | 6;
  readonly sourceAddress: string | null;
  readonly verdict: Verdict;
  readonly reason: ProxyReason;
  readonly detail: string;
  readonly counts: ProxyCounts;
  /** Every egress address the sink saw (differs from `address` behind a chain or on a multi-homed proxy). */
  readonly egress: readonly string[];
  readonly ports: readonly ProxyPortResult[];
  readonly startedAt: string;
  readonly durationMs: number;
}
