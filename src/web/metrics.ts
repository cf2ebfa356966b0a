/**
 * Prometheus metrics of one node (prom-client), every series labelled `node`. Nothing in the relay calls
 * prom-client: the counters are fed by the relay's own structured log events (observingLogger wraps the logger the
 * relay is given: one switch on the fixed message per event), and the gauges are read at scrape time from what the
 * running parts already expose (connection count, queue counts, the ORDB's DNS counters). So src/smtp, src/policy
 * and src/queue stay free of metrics code, and a new metric needs only a case here (and, if the event lacks the
 * number, a field on the event). The per-message families are Tally/TallyHistogram (tally.ts: plain additions,
 * turned into prom-client's shape at scrape time); rare events use prom-client's Counter. With workers, /metrics
 * is the sum over the workers (cli/cluster-metrics.ts through setAggregate). The full list: docs/metrics.md.
 */
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { Tally, TallyHistogram } from './tally.ts';
import type { LogFields, Logger } from '../core/log.ts';
import type { QueueCounts } from '../queue/index.ts';

/** Values read at scrape time. Each may throw or be slow; a failure leaves the gauge out of that scrape. */
export interface MetricSources {
  /** SMTP connections open now. */
  connections(): number;
  /** Messages in the queue by state (queued, hold, corrupt; deferred: with a deferred recipient), and the oldest of each. */
  queueCounts(): Promise<QueueCounts>;
  /** The ORDB's DNS server counters since it started (dnsbl/server.ts stats), or null when it does not run here. */
  ordbDns?(): OrdbDnsCounts | null;
}

/** What the ORDB's DNS server counted (a subset of DnsblServerStats). */
export interface OrdbDnsCounts {
  /** Every query answered (any rcode). */
  readonly answered: number;
  readonly formerr: number;
  readonly nxdomain: number;
  readonly refused: number;
  /** Queries not answered (malformed beyond a reply, rate-limited, over capacity). */
  readonly dropped: number;
}

/**
 * Cumulative counts since start, kept as plain numbers next to the Prometheus counters (one more increment per
 * event) so the overview's per-minute ring (series.ts) reads them without walking the registry.
 */
export interface OverviewTotals {
  /** Messages accepted (250 after DATA). */
  received: number;
  /** Recipient delivery attempts by outcome. */
  delivered: number;
  deferred: number;
  bounced: number;
  /** SMTP sessions ended (a session is one connection). */
  sessions: number;
  /** DNSBL lookups made by the receive path (cache hits included). */
  dnsblLookups: number;
  /** Refused recipients by rule. */
  readonly refusedByRule: Record<string, number>;
}

/** Seconds: accept latency is milliseconds (a group commit), delivery latency minutes to days. */
const ACCEPT_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
const DELIVERY_BUCKETS = [0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, 5 * 24 * 3600];
/** More distinct refusal rules than this in the overview totals are summed under "other" (rules come from config). */
const MAX_RULES = 64;

export class RelayMetrics {
  readonly registry: Registry;
  readonly #sessions: Tally;
  readonly #accepted: Tally;
  readonly #acceptedRecipients: Tally;
  readonly #notQueued: Counter<'reason'>;
  readonly #decisions: Tally;
  readonly #deliveries: Tally;
  readonly #deliveryLatency: TallyHistogram;
  readonly #acceptedBytes: Tally;
  readonly #acceptLatency: TallyHistogram;
  readonly #commands: Tally;
  readonly #replies: Tally;
  readonly #dnsblLookups: Tally;
  readonly #totals: OverviewTotals = { received: 0, delivered: 0, deferred: 0, bounced: 0, sessions: 0, dnsblLookups: 0, refusedByRule: {} };
  readonly #auth: Counter<'result'>;
  readonly #logins: Counter<'result'>;
  readonly #bounces: Tally;
  readonly #decisionsDropped: Counter;
  readonly #testerRuns: Counter<'verdict'>;
  readonly #auditStatus: Gauge<'check'>;
  readonly #auditLastRun: Gauge;
  #sources: MetricSources | null = null;
  /** Open SMTP connections of this process, set by serve in every process (web or not): summed over workers. */
  #connections: (() => number) | null = null;
  /** With workers: the whole cluster's exposition (cli/cluster-metrics.ts); null: this registry's. */
  #aggregate: (() => Promise<string>) | null = null;

  constructor(node: string, options: { processMetrics?: boolean } = {}) {
    const registry = new Registry();
    registry.setDefaultLabels({ node });
    this.registry = registry;
    if (options.processMetrics !== false) collectDefaultMetrics({ register: registry });
    const reg = [registry];
    const self = this;
    this.#sessions = new Tally({ name: 'relayguard_smtp_sessions_total', help: 'SMTP sessions ended, by listener.', labelNames: ['listener'], registry });
    this.#accepted = new Tally({ name: 'relayguard_messages_accepted_total', help: 'Messages accepted (250 after DATA: durable in the queue).', registry });
    this.#acceptedRecipients = new Tally({ name: 'relayguard_messages_accepted_recipients_total', help: 'Recipients of accepted messages.', registry });
    this.#notQueued = new Counter({
      name: 'relayguard_messages_refused_total', help: 'Messages refused after DATA or at MAIL for a queue reason (4xx), by reason.', labelNames: ['reason'], registers: reg,
    });
    this.#decisions = new Tally({ name: 'relayguard_relay_decisions_total', help: 'Recipient decisions, by action and rule.', labelNames: ['action', 'rule'], registry });
    this.#acceptedBytes = new Tally({ name: 'relayguard_messages_accepted_bytes_total', help: 'Octets of accepted messages (as queued: our Received header included).', registry });
    this.#acceptLatency = new TallyHistogram({
      name: 'relayguard_accept_latency_seconds', help: 'End of data (the final dot) to the 250 reply: the durable queue commit.', buckets: ACCEPT_BUCKETS, registry,
    });
    this.#commands = new Tally({ name: 'relayguard_smtp_commands_total', help: 'SMTP command lines received (counted when the session ends).', registry });
    this.#replies = new Tally({
      name: 'relayguard_smtp_replies_total', help: 'SMTP replies sent, by class (2xx, 3xx, 4xx, 5xx; counted when the session ends).', labelNames: ['class'], registry,
    });
    this.#deliveries = new Tally({
      name: 'relayguard_delivery_attempts_total', help: 'Recipient delivery attempts, by outcome (delivered, deferred, bounced, expired) and destination class (local, smarthost, mx).',
      labelNames: ['outcome', 'destination'], registry,
    });
    this.#deliveryLatency = new TallyHistogram({
      name: 'relayguard_delivery_latency_seconds', help: 'Time from acceptance to delivery, per delivered recipient.', buckets: DELIVERY_BUCKETS, registry,
    });
    this.#bounces = new Tally({ name: 'relayguard_bounces_total', help: 'Bounce messages (DSN) queued.', registry });
    this.#auth = new Counter({ name: 'relayguard_smtp_auth_total', help: 'SMTP AUTH attempts, by result (success, failure, throttled, unavailable).', labelNames: ['result'], registers: reg });
    this.#logins = new Counter({ name: 'relayguard_web_logins_total', help: 'Dashboard logins and API token checks, by result.', labelNames: ['result'], registers: reg });
    this.#dnsblLookups = new Tally({
      name: 'relayguard_dnsbl_lookups_total', help: 'DNSBL lookups of the receive path, by zone and result (listed, not-listed, broken, error; cache hits included).',
      labelNames: ['zone', 'result'], registry,
    });
    new Counter({
      name: 'relayguard_ordb_dns_queries_total', help: 'DNS queries the ORDB zone answered, by rcode (noerror, nxdomain, formerr, refused); dropped: not answered.',
      labelNames: ['rcode'], registers: reg,
      collect() {
        const d = self.#sources?.ordbDns?.() ?? null;
        this.reset();
        if (d === null) return;
        const noerror = Math.max(0, d.answered - d.nxdomain - d.formerr - d.refused);
        for (const [rcode, n] of [['noerror', noerror], ['nxdomain', d.nxdomain], ['formerr', d.formerr], ['refused', d.refused], ['dropped', d.dropped]] as const) {
          this.inc({ rcode }, n);
        }
      },
    });
    this.#decisionsDropped = new Counter({
      name: 'relayguard_decisions_dropped_total', help: 'Relay decisions not recorded in the decision log (store write failed or buffer full); SMTP is never affected.', registers: reg,
    });
    this.#testerRuns = new Counter({
      name: 'relayguard_tester_runs_total', help: 'Web tester runs ended, by verdict (OPEN, CLOSED, INCONCLUSIVE; failed or aborted when no report).',
      labelNames: ['verdict'], registers: reg,
    });
    this.#auditStatus = new Gauge({
      name: 'relayguard_audit_check_status', help: 'Self-audit result per check (relayguard audit): 0 ok, 1 warning, 2 broken, 3 unreachable, 4 critical (abusable or listed).',
      labelNames: ['check'], registers: reg,
    });
    this.#auditLastRun = new Gauge({ name: 'relayguard_audit_last_run_timestamp_seconds', help: 'When the last self-audit of this node started (Unix time).', registers: reg });
    new Gauge({
      name: 'relayguard_smtp_connections', help: 'SMTP connections open now.', registers: reg,
      collect() {
        const c = self.#connections ?? self.#sources?.connections;
        if (c) this.set(c());
      },
    });
    new Gauge({
      name: 'relayguard_queue_messages', help: 'Messages in the queue by state (queued, hold, corrupt; deferred: messages with a deferred recipient).',
      labelNames: ['state'], registers: reg,
      async collect() {
        if (!self.#sources) return;
        this.reset();
        const counts = await self.#sources.queueCounts();
        for (const [state, n] of Object.entries(counts)) this.set({ state }, n.messages);
      },
    });
    new Gauge({
      name: 'relayguard_queue_oldest_age_seconds', help: 'Age of the oldest message in each queue state (0 when the state is empty).',
      labelNames: ['state'], registers: reg,
      async collect() {
        if (!self.#sources) return;
        this.reset();
        const counts = await self.#sources.queueCounts();
        for (const [state, n] of Object.entries(counts)) this.set({ state }, (n.oldestAgeMs ?? 0) / 1000);
      },
    });
    for (const r of ['success', 'failure', 'throttled']) this.#logins.inc({ result: r }, 0);
    for (const r of ['success', 'failure', 'throttled', 'unavailable']) this.#auth.inc({ result: r }, 0);
    for (const v of ['OPEN', 'CLOSED', 'INCONCLUSIVE', 'failed', 'aborted']) this.#testerRuns.inc({ verdict: v }, 0);
    for (const c of ['2xx', '3xx', '4xx', '5xx']) this.#replies.addTo(c, 0);
    this.#notQueued.inc({ reason: 'insufficient-space' }, 0);
    for (const o of ['delivered', 'deferred', 'bounced', 'expired']) this.#deliveries.addTo(o, 'local', 0);
  }

  /** Where the gauges read from (set once the relay runs). */
  setSources(sources: MetricSources | null): void {
    this.#sources = sources;
  }

  /** A web tester run ended: its verdict, or 'failed' / 'aborted'. */
  testerRun(verdict: 'OPEN' | 'CLOSED' | 'INCONCLUSIVE' | 'failed' | 'aborted'): void {
    this.#testerRuns.inc({ verdict });
  }

  /** The worst severity of each check of the latest self-audit (src/audit), and when it started (ms). */
  auditReport(checks: readonly { check: string; severity: string }[], startedAt: number): void {
    this.#auditStatus.reset();
    for (const c of checks) this.#auditStatus.set({ check: label(c.check) }, AUDIT_LEVEL[c.severity] ?? 3);
    this.#auditLastRun.set(Math.floor(startedAt / 1000));
  }

  /** Where the open-connections gauge reads from in this process (serve sets it in every process). */
  setConnectionSource(fn: (() => number) | null): void {
    this.#connections = fn;
  }

  /** Makes text() answer another exposition: the sum over the workers of a node (cli/cluster-metrics.ts). */
  setAggregate(fn: (() => Promise<string>) | null): void {
    this.#aggregate = fn;
  }

  login(result: 'success' | 'failure' | 'throttled'): void {
    this.#logins.inc({ result });
  }

  /** One relay log event. */
  observe(msg: string, fields: LogFields | undefined): void {
    switch (msg) {
      case 'relay decision': {
        const rule = label(fields?.['rule']);
        const action = label(fields?.['action']);
        this.#decisions.addTo(action, rule);
        if (action === 'reject') {
          const by = this.#totals.refusedByRule;
          const key = rule in by || Object.keys(by).length < MAX_RULES ? rule : 'other';
          by[key] = (by[key] ?? 0) + 1;
        }
        return;
      }
      case 'message accepted': {
        this.#accepted.add();
        this.#totals.received++;
        this.#acceptedRecipients.add(num(fields?.['rcpts']));
        this.#acceptedBytes.add(num(fields?.['bytes']));
        const ms = fields?.['accept_ms'];
        if (typeof ms === 'number' && ms >= 0) this.#acceptLatency.observe(ms / 1000);
        return;
      }
      case 'message not queued':
      case 'queue unavailable':
        this.#notQueued.inc({ reason: label(fields?.['err_code']) });
        return;
      case 'insufficient queue space':
        this.#notQueued.inc({ reason: 'insufficient-space' });
        return;
      case 'session closed':
        this.#sessions.addTo(label(fields?.['listener']));
        this.#totals.sessions++;
        this.#commands.add(num(fields?.['commands']));
        this.#replies.addTo('2xx', num(fields?.['replies_2xx']));
        this.#replies.addTo('3xx', num(fields?.['replies_3xx']));
        this.#replies.addTo('4xx', num(fields?.['replies_4xx']));
        this.#replies.addTo('5xx', num(fields?.['replies_5xx']));
        return;
      case 'auth succeeded': this.#auth.inc({ result: 'success' }); return;
      case 'auth failed': this.#auth.inc({ result: 'failure' }); return;
      case 'auth throttled': this.#auth.inc({ result: 'throttled' }); return;
      case 'auth unavailable': this.#auth.inc({ result: 'unavailable' }); return;
      case 'recipient delivered': {
        this.#deliveries.addTo('delivered', label(fields?.['route']));
        this.#totals.delivered++;
        const ms = fields?.['delay_ms'];
        if (typeof ms === 'number' && ms >= 0) this.#deliveryLatency.observe(ms / 1000);
        return;
      }
      case 'recipient deferred':
        this.#deliveries.addTo('deferred', label(fields?.['route']));
        this.#totals.deferred++;
        return;
      case 'recipient bounced':
      case 'recipient expired':
        this.#deliveries.addTo(msg === 'recipient bounced' ? 'bounced' : 'expired', label(fields?.['route']));
        this.#totals.bounced++;
        return;
      case 'bounce queued': this.#bounces.add(); return;
      case 'decisions dropped': this.#decisionsDropped.inc(typeof fields?.['rows'] === 'number' ? fields['rows'] : 1); return;
      case 'dnsbl lookup':
        this.#dnsblLookups.addTo(label(fields?.['zone']), label(fields?.['result']));
        this.#totals.dnsblLookups++;
        return;
      default:
    }
  }

  /** The cumulative counts the overview charts (a copy). */
  totals(): OverviewTotals {
    const t = this.#totals;
    return { ...t, refusedByRule: { ...t.refusedByRule } };
  }

  /** SMTP connections open now in this process (null: no relay attached). */
  connectionsNow(): number | null {
    const c = this.#connections ?? this.#sources?.connections;
    return c ? c() : null;
  }

  /** Messages in the queue by state (null: no relay attached). Walks the queue unless the source caches: call it seldom. */
  async queueNow(): Promise<Record<string, number> | null> {
    if (!this.#sources) return null;
    const counts = await this.#sources.queueCounts();
    return Object.fromEntries(Object.entries(counts).map(([state, c]) => [state, c.messages]));
  }

  /** DNS queries the ORDB answered since it started (null: no ORDB here). */
  ordbDnsNow(): OrdbDnsCounts | null {
    return this.#sources?.ordbDns?.() ?? null;
  }

  /** The Prometheus exposition: this registry's, or with workers the node's sum (setAggregate). */
  async text(): Promise<string> {
    if (this.#aggregate !== null) return this.#aggregate();
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

const AUDIT_LEVEL: Readonly<Record<string, number>> = { ok: 0, warning: 1, broken: 2, unreachable: 3, critical: 4 };
const num = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : 0);

/** A label value from a log field: bounded length, 'none' when absent. */
function label(v: unknown): string {
  if (v === null || v === undefined || v === '') return 'none';
  const s = String(v);
  return s.length > 64 ? s.slice(0, 64) : s;
}

/** The logger the relay gets: every event goes to `observe` and then to `base` unchanged. */
export function observingLogger(base: Logger, observe: (msg: string, fields: LogFields | undefined) => void): Logger {
  return {
    debug(msg, fields) { observe(msg, fields); base.debug(msg, fields); },
    info(msg, fields) { observe(msg, fields); base.info(msg, fields); },
    warn(msg, fields) { observe(msg, fields); base.warn(msg, fields); },
    error(msg, fields) { observe(msg, fields); base.error(msg, fields); },
    child(fields) { return observingLogger(base.child(fields), observe); },
  };
}
