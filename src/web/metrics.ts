/**
 * Prometheus metrics of one node (prom-client), every series labelled `node`. Nothing in the relay calls
 * prom-client: the counters are fed by the relay's own structured log events (observingLogger wraps the logger the
 * relay is given: one switch on the fixed message per event), and the gauges are read at scrape time from what the
 * running parts already expose (connection count, queue counts). So src/smtp, src/policy and src/queue stay free of
 * metrics code, and a new metric needs only a case here.
 */
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { LogFields, Logger } from '../core/log.ts';
import type { QueueCounts } from '../queue/index.ts';

/** Values read at scrape time. Each may throw or be slow; a failure leaves the gauge out of that scrape. */
export interface MetricSources {
  /** SMTP connections open now. */
  connections(): number;
  /** Messages in the queue by state (queued, hold, corrupt; deferred: with a deferred recipient), and the oldest of each. */
  queueCounts(): Promise<QueueCounts>;
}

export class RelayMetrics {
  readonly registry: Registry;
  readonly #sessions: Counter<'listener'>;
  readonly #accepted: Counter;
  readonly #acceptedRecipients: Counter;
  readonly #notQueued: Counter<'reason'>;
  readonly #decisions: Counter<'action' | 'rule'>;
  readonly #deliveries: Counter<'outcome'>;
  readonly #auth: Counter<'result'>;
  readonly #logins: Counter<'result'>;
  readonly #bounces: Counter;
  readonly #dnsblFailures: Counter<'zone'>;
  readonly #decisionsDropped: Counter;
  readonly #testerRuns: Counter<'verdict'>;
  readonly #auditStatus: Gauge<'check'>;
  readonly #auditLastRun: Gauge;
  #sources: MetricSources | null = null;

  constructor(node: string, options: { processMetrics?: boolean } = {}) {
    const registry = new Registry();
    registry.setDefaultLabels({ node });
    this.registry = registry;
    if (options.processMetrics !== false) collectDefaultMetrics({ register: registry });
    const reg = [registry];
    this.#sessions = new Counter({ name: 'relayguard_smtp_sessions_total', help: 'SMTP sessions ended, by listener.', labelNames: ['listener'], registers: reg });
    this.#accepted = new Counter({ name: 'relayguard_messages_accepted_total', help: 'Messages accepted (250 after DATA: durable in the queue).', registers: reg });
    this.#acceptedRecipients = new Counter({ name: 'relayguard_messages_accepted_recipients_total', help: 'Recipients of accepted messages.', registers: reg });
    this.#notQueued = new Counter({
      name: 'relayguard_messages_refused_total', help: 'Messages refused after DATA or at MAIL for a queue reason (4xx), by reason.', labelNames: ['reason'], registers: reg,
    });
    this.#decisions = new Counter({ name: 'relayguard_relay_decisions_total', help: 'Recipient decisions, by action and rule.', labelNames: ['action', 'rule'], registers: reg });
    this.#deliveries = new Counter({ name: 'relayguard_delivery_recipients_total', help: 'Recipient delivery outcomes.', labelNames: ['outcome'], registers: reg });
    this.#bounces = new Counter({ name: 'relayguard_bounces_total', help: 'Bounce messages (DSN) queued.', registers: reg });
    this.#auth = new Counter({ name: 'relayguard_smtp_auth_total', help: 'SMTP AUTH attempts, by result (success, failure, throttled, unavailable).', labelNames: ['result'], registers: reg });
    this.#logins = new Counter({ name: 'relayguard_web_logins_total', help: 'Dashboard logins and API token checks, by result.', labelNames: ['result'], registers: reg });
    this.#dnsblFailures = new Counter({
      name: 'relayguard_dnsbl_lookup_failures_total', help: 'DNSBL lookups that got no answer (timeout, SERVFAIL), by zone. Listed clients show as relay decisions with the DNSBL rule.',
      labelNames: ['zone'], registers: reg,
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
    const self = this;
    new Gauge({
      name: 'relayguard_smtp_connections', help: 'SMTP connections open now.', registers: reg,
      collect() { if (self.#sources) this.set(self.#sources.connections()); },
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
    for (const o of ['delivered', 'deferred', 'bounced', 'expired']) this.#deliveries.inc({ outcome: o }, 0);
    for (const v of ['OPEN', 'CLOSED', 'INCONCLUSIVE', 'failed', 'aborted']) this.#testerRuns.inc({ verdict: v }, 0);
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

  login(result: 'success' | 'failure' | 'throttled'): void {
    this.#logins.inc({ result });
  }

  /** One relay log event. */
  observe(msg: string, fields: LogFields | undefined): void {
    switch (msg) {
      case 'relay decision':
        this.#decisions.inc({ action: label(fields?.['action']), rule: label(fields?.['rule']) });
        return;
      case 'message accepted':
        this.#accepted.inc();
        this.#acceptedRecipients.inc(typeof fields?.['rcpts'] === 'number' ? fields['rcpts'] : 0);
        return;
      case 'message not queued':
      case 'queue unavailable':
        this.#notQueued.inc({ reason: label(fields?.['err_code']) });
        return;
      case 'insufficient queue space':
        this.#notQueued.inc({ reason: 'insufficient-space' });
        return;
      case 'session closed':
        this.#sessions.inc({ listener: label(fields?.['listener']) });
        return;
      case 'auth succeeded': this.#auth.inc({ result: 'success' }); return;
      case 'auth failed': this.#auth.inc({ result: 'failure' }); return;
      case 'auth throttled': this.#auth.inc({ result: 'throttled' }); return;
      case 'auth unavailable': this.#auth.inc({ result: 'unavailable' }); return;
      case 'recipient delivered': this.#deliveries.inc({ outcome: 'delivered' }); return;
      case 'recipient deferred': this.#deliveries.inc({ outcome: 'deferred' }); return;
      case 'recipient bounced': this.#deliveries.inc({ outcome: 'bounced' }); return;
      case 'recipient expired': this.#deliveries.inc({ outcome: 'expired' }); return;
      case 'bounce queued': this.#bounces.inc(); return;
      case 'decisions dropped': this.#decisionsDropped.inc(typeof fields?.['rows'] === 'number' ? fields['rows'] : 1); return;
      case 'dnsbl lookup failed': this.#dnsblFailures.inc({ zone: label(fields?.['zone']) }); return;
      default:
    }
  }

  async text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

const AUDIT_LEVEL: Readonly<Record<string, number>> = { ok: 0, warning: 1, broken: 2, unreachable: 3, critical: 4 };

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
