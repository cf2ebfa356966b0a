/**
 * Check 2, open relay proved from outside: the tester's full battery (src/tester) against every SMTP listener of
 * this server, from a vantage point the server does not trust. Findings per listener: 'relay.closed' (ok),
 * 'relay.open' (critical: relayed, or accepted a relay recipient), 'relay.inconclusive' (unreachable: could not be
 * proved either way).
 *
 * Vantage points (Vantage): the local one (LocalVantage: a loopback source address the configuration does not mean
 * to trust, proof mode with the tester's built-in sink when a probe domain is configured), and a remote relayguard
 * asked over its API (remote-vantage.ts: POST /api/tester/runs). With several vantage points each tests every
 * listener (at once) and the findings' subjects name the vantage point.
 *
 * Which loopback address stands for a stranger: one outside every trustedNetworks entry and every relay-rule network
 * that lies in loopback or private space. An entry that reaches into public space (0.0.0.0/0, the hazard the lint
 * reports) is trust given to every Internet host, so an address it matches is still a stranger's.
 *
 * Trust: connects only to this server's own listeners, from a local address; proof-mode probes are addressed to the
 * configured probe domain (mail to it must reach the sink this check starts).
 */
import { isIP } from 'node:net';
import ipaddr from 'ipaddr.js';
import type { Config } from '../config/schema.ts';
import { RelayguardError } from '../core/errors.ts';
import { NetworkList } from '../policy/networks.ts';
import { ProbeSink, runTester, type PortRole, type RunResult, type TesterTimeouts } from '../tester/index.ts';
import type { Finding } from './finding.ts';
import type { AuditCheck } from './run.ts';

export const ERR_AUDIT_NO_VANTAGE = 'ERR_AUDIT_NO_VANTAGE';

/** One SMTP listener of this server, as the tester must reach it. */
export interface RelayTarget {
  readonly listener: string;
  readonly role: 'mx' | 'submission';
  readonly tls: 'none' | 'starttls' | 'implicit';
  /** The bound address (a wildcard is reached over loopback). */
  readonly address: string;
  readonly port: number;
  /** The listener expects a PROXY header (only from trustedProxies): a direct test is refused. */
  readonly proxyProtocol?: boolean;
}

export interface VantageOutcome {
  readonly target: RelayTarget;
  readonly verdict: 'OPEN' | 'CLOSED' | 'INCONCLUSIVE';
  readonly reason: string;
  readonly detail: string;
  /** The relay tricks that relayed (proved) or were accepted. */
  readonly acceptedTricks: readonly string[];
  readonly mode: 'safe' | 'prove';
  /** Where the test came from (the source address, or the remote vantage's name). */
  readonly from: string;
  /** The tester's JSON result (schema relayguard-tester/2), when available. */
  readonly report?: RunResult;
}

/** Where the relay is tested from. test() throws (ERR_AUDIT_NO_VANTAGE, ...) when the vantage point cannot test at all. */
export interface Vantage {
  readonly name: string;
  test(targets: readonly RelayTarget[], signal: AbortSignal): Promise<VantageOutcome[]>;
}

const PRIVATE = ['127.0.0.0/8', '10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '100.64.0.0/10', '169.254.0.0/16', '::1/128', 'fc00::/7', 'fe80::/10']
  .map((c) => ipaddr.parseCIDR(c));

/** True when the network lies inside loopback or private space (the config lint's rule). */
export function isPrivateNetwork(cidr: string): boolean {
  try {
    const [addr, prefix] = ipaddr.parseCIDR(cidr.includes('/') ? cidr : `${cidr}/${cidr.includes(':') ? 128 : 32}`);
    return PRIVATE.some(([r, rp]) => r.kind() === addr.kind() && prefix >= rp && addr.match(r, rp));
  } catch {
    return false;
  }
}

/** The networks the configuration deliberately trusts: private trustedNetworks entries and private relay-rule networks. */
export function deliberateTrust(config: Pick<Config, 'trustedNetworks' | 'relayRules'>): NetworkList {
  const nets = [
    ...config.trustedNetworks,
    ...config.relayRules.filter((r) => r.action === 'relay' && r.match.network !== undefined).map((r) => r.match.network!),
  ].filter(isPrivateNetwork);
  return new NetworkList(nets);
}

/**
 * The source address of the local vantage point: `configured` when given (refused when the configuration trusts it),
 * else the first of 127.0.0.2 ... 127.0.0.254, 127.0.1.1 ... outside the deliberately trusted networks.
 * Throws ERR_AUDIT_NO_VANTAGE when there is none.
 */
export function chooseSourceAddress(config: Pick<Config, 'trustedNetworks' | 'relayRules'>, configured: string | null = null): string {
  const trusted = deliberateTrust(config);
  if (configured !== null) {
    if (trusted.contains(configured)) {
      throw new RelayguardError(ERR_AUDIT_NO_VANTAGE, `audit.relay.sourceAddress ${configured} is inside trustedNetworks or a relay rule: a test from it proves nothing`);
    }
    return configured;
  }
  for (let b = 0; b < 256; b++) {
    for (let c = b === 0 ? 2 : 1; c < 255; c++) {
      const ip = `127.0.${b}.${c}`;
      if (!trusted.contains(ip)) return ip;
    }
  }
  throw new RelayguardError(ERR_AUDIT_NO_VANTAGE, 'every loopback address is in trustedNetworks (or a relay rule): no local address can stand for a stranger. Narrow trustedNetworks (e.g. 127.0.0.1/32), set audit.relay.sourceAddress to an address of this host that is not trusted, or audit from a remote vantage point');
}

/** The IPv6 source of the local vantage point: `configured`, else ::1 unless deliberately trusted; null when none. */
export function chooseSourceAddress6(config: Pick<Config, 'trustedNetworks' | 'relayRules'>, configured: string | null = null): string | null {
  const candidate = configured ?? '::1';
  return deliberateTrust(config).contains(candidate) ? null : candidate;
}

/** The listeners of a configuration as targets (bound ports, when the caller knows them, come from `bound`). */
export function targetsOf(listeners: readonly { name: string; role: 'mx' | 'submission'; tls: 'none' | 'starttls' | 'implicit'; address: string; port: number; proxyProtocol?: boolean }[]): RelayTarget[] {
  return listeners.map((l) => ({ listener: l.name, role: l.role, tls: l.tls, address: l.address, port: l.port, proxyProtocol: l.proxyProtocol === true }));
}

/** The address to connect to for a listener: a wildcard bind is reached over loopback of the source's family. */
export function connectAddress(bound: string, source: string): string {
  if (bound === '0.0.0.0') return '127.0.0.1';
  if (bound === '::') return isIP(source) === 6 ? '::1' : '127.0.0.1';
  return bound;
}

function portRole(t: RelayTarget): PortRole {
  if (t.role === 'mx') return 'mx';
  return t.tls === 'implicit' ? 'submissions' : 'submission';
}

export interface LocalVantageOptions {
  readonly sourceAddress: string;
  /** The source for IPv6 listeners (::1 when the configuration does not trust it), or null: they are not tested. */
  readonly sourceAddress6?: string | null;
  /** Proof mode when set: probes go to this domain, whose mail must reach the sink. */
  readonly probeDomain: string | null;
  readonly sink: { readonly address: string; readonly port: number };
  readonly probeWaitMs: number;
  /** This server's host name and mail domain (the tester's H and D). */
  readonly hostName: string;
  readonly domain: string | null;
  /** Budget of one listener's battery, ms. */
  readonly budgetMs: number;
  readonly timeouts?: Partial<TesterTimeouts>;
}

/** The local vantage point: the tester on this machine, from an untrusted loopback source address. */
export class LocalVantage implements Vantage {
  readonly name: string;
  readonly #o: LocalVantageOptions;

  constructor(options: LocalVantageOptions) {
    this.#o = options;
    this.name = `local ${options.sourceAddress}`;
  }

  async test(targets: readonly RelayTarget[], signal: AbortSignal): Promise<VantageOutcome[]> {
    const o = this.#o;
    const sink = o.probeDomain === null ? null : await ProbeSink.start({
      address: o.sink.address, port: o.sink.port, probeDomain: o.probeDomain, hostname: `audit-sink.${o.probeDomain}`,
    });
    try {
      const out: VantageOutcome[] = [];
      for (const target of targets) {
        const six = target.address !== '::' && isIP(target.address) === 6;
        const source = six ? (o.sourceAddress6 ?? null) : o.sourceAddress;
        if (source === null || isIP(source) !== (six ? 6 : 4)) {
          out.push({
            target, verdict: 'INCONCLUSIVE', reason: 'not-tested', acceptedTricks: [], mode: sink ? 'prove' : 'safe', from: source ?? 'none',
            detail: `no untrusted IPv${six ? 6 : 4} source address to test this IPv${six ? 6 : 4} listener from (::1 is in trustedNetworks: set audit.relay.sourceAddress6)`,
          });
          continue;
        }
        const address = connectAddress(target.address, source);
        const run = await runTester([address], {
          ports: [{ port: target.port, role: portRole(target) }],
          testerDomain: o.probeDomain ?? 'example.net',
          sourceAddress: source,
          hostName: o.hostName,
          ...(o.domain !== null ? { domain: o.domain } : {}),
          ...(sink ? { proof: { collector: sink, waitMs: o.probeWaitMs } } : {}),
          ...(o.timeouts ? { timeouts: o.timeouts } : {}),
          budgetMs: o.budgetMs,
          signal,
          resolve: { mx: false },
        });
        out.push(outcomeOf(target, run, source));
      }
      return out;
    } finally {
      await sink?.close();
    }
  }
}

/** The outcome of one listener from the tester's report of it (a LocalVantage run, or a remote's report). */
export function outcomeOf(target: RelayTarget, run: RunResult, from: string): VantageOutcome {
  const t = run.targets[0];
  if (t === undefined) {
    return { target, verdict: 'INCONCLUSIVE', reason: 'error', detail: run.errors.map((e) => e.error).join('; ') || 'not tested', acceptedTricks: [], mode: run.mode, from, report: run };
  }
  const tricks = t.ports.flatMap((p) => p.transports.flatMap((tr) => tr.tricks.map((k) => ({ k, transport: tr.transport }))));
  const accepted = tricks.filter(({ k }) => k.kind === 'relay' && (k.verdict === 'OPEN' || k.accepted)).map(({ k, transport }) => `${k.id}/${transport}`);
  // A listener that refused the connection is not "closed": nothing was tested (a firewall must not pass the audit).
  const unreachable = t.ports.length === 0 || t.ports.some((p) => p.reason === 'no-service');
  return {
    target, verdict: unreachable ? 'INCONCLUSIVE' : t.verdict, reason: unreachable ? 'unreachable' : t.reason, detail: t.detail, acceptedTricks: [...new Set(accepted)], mode: run.mode, from, report: run,
  };
}

/** Reasons of an INCONCLUSIVE verdict that mean this relay accepted relay recipients from a stranger. */
const ACCEPTED = new Set(['accepted-not-proved', 'accepts-all-recipients']);

const subjectOf = (t: RelayTarget): string => `listener ${t.listener} ${t.address.includes(':') ? `[${t.address}]` : t.address}:${t.port}`;

/** The findings of one listener's outcome (`via`: the vantage point's name, in the subject, when there are several). */
export function relayFinding(o: VantageOutcome, via?: string): Finding {
  const t = o.target;
  const subject = via === undefined ? subjectOf(t) : `${subjectOf(t)} via ${via}`;
  const detail = {
    listener: t.listener, role: t.role, tls: t.tls, verdict: o.verdict, reason: o.reason, mode: o.mode, from: o.from,
    acceptedTricks: o.acceptedTricks, testDetail: o.detail,
  };
  if (o.verdict === 'OPEN') {
    return {
      check: 'relay.open', subject, severity: 'critical', detail,
      summary: `open relay: ${o.reason === 'bounce-relay' ? 'bounced a probe\'s content to a third party' : 'relayed a probe to the sink'} for an untrusted client (${o.from}); tricks ${o.acceptedTricks.join(', ') || '?'}`,
    };
  }
  if (o.verdict === 'INCONCLUSIVE' && ACCEPTED.has(o.reason)) {
    return {
      check: 'relay.open', subject, severity: 'critical', detail,
      summary: `accepted relay recipients from an untrusted client (${o.from}) (${o.mode === 'safe' ? 'safe mode: set audit.relay.probeDomain to prove it' : 'the probes did not arrive'}); tricks ${o.acceptedTricks.join(', ') || '?'}`,
    };
  }
  if (o.verdict === 'CLOSED') {
    return { check: 'relay.closed', subject, severity: 'ok', detail, summary: `closed: refused every relay trick from ${o.from} (${o.mode} mode; ${o.reason})` };
  }
  return { check: 'relay.inconclusive', subject, severity: 'unreachable', detail, summary: `not proved closed from ${o.from}: ${o.reason}: ${o.detail}` };
}

export interface RelayCheckOptions {
  /** The listeners to test, asked at each run (serve passes the bound ones). */
  readonly targets: () => readonly RelayTarget[];
  /**
   * The vantage point(s), built at each run (a local source address may be refused: that is the check's finding).
   * Several: each tests every listener, at once.
   */
  readonly vantage: () => Vantage | readonly (() => Vantage)[];
  readonly timeoutMs?: number;
}

function vantageFailure(err: unknown): Finding {
  return {
    check: 'relay.vantage', subject: (err as { code?: unknown }).code === 'ERR_AUDIT_REMOTE' ? 'remote vantage point' : 'local vantage point', severity: 'unreachable',
    summary: `cannot test the relay from outside: ${(err as Error).message}`, detail: { code: (err as { code?: unknown }).code ?? null },
  };
}

export function relayCheck(options: RelayCheckOptions): AuditCheck {
  return {
    name: 'relay',
    ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
    async run({ signal }) {
      const all = options.targets();
      const proxied = all.filter((t) => t.proxyProtocol === true);
      const targets = all.filter((t) => t.proxyProtocol !== true);
      const skipped = proxied.map((t): Finding => ({
        check: 'relay.behind-proxy', subject: subjectOf(t), severity: 'warning',
        summary: 'expects a PROXY header from a trusted proxy: test it through the load balancer (a remote vantage point); not tested from here',
      }));
      if (targets.length === 0 && skipped.length > 0) return skipped;
      if (targets.length === 0) return [{ check: 'relay.no-listeners', subject: 'listeners', severity: 'ok', summary: 'no SMTP listener to test' }];
      let built: Vantage | readonly (() => Vantage)[];
      try {
        built = options.vantage();
      } catch (err) {
        return [vantageFailure(err), ...skipped];
      }
      if (!Array.isArray(built)) return [...(await (built as Vantage).test(targets, signal)).map((o) => relayFinding(o)), ...skipped];
      const several = (built as readonly (() => Vantage)[]).length > 1;
      const each = await Promise.all((built as readonly (() => Vantage)[]).map(async (make): Promise<Finding[]> => {
        let vantage: Vantage;
        try {
          vantage = make();
        } catch (err) {
          return [vantageFailure(err)];
        }
        return (await vantage.test(targets, signal)).map((o) => relayFinding(o, several ? vantage.name : undefined));
      }));
      return [...each.flat(), ...skipped];
    },
  };
}
