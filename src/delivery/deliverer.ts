/**
 * The Deliverer the queue runner calls (src/queue/deliverer.ts): routes a job's recipients (routing.ts), resolves
 * MX next hops (mx.ts), picks the TLS policy per destination (tls-policy.ts), signs with DKIM when configured
 * (dkim.ts), and delivers each destination in one session (outbound.ts) or to the local transport
 * (local-transport.ts). Destinations of one job run concurrently (bounded). One outcome per job recipient, in job
 * order; nothing here throws for a delivery problem: only an abort (the signal's reason) or a bug rejects.
 *
 * Trust: talks to untrusted next hops and an untrusted DNS; every remote text is cleaned and bounded before it
 * reaches an outcome or a log. Standards: RFC 5321, 3207, 7505, 8461 (MTA-STS), 7672 (DANE for SMTP).
 */
import type { Readable } from 'node:stream';
import { NULL_LOGGER, type Logger } from '../core/log.ts';
import type { SmtpTimeouts } from '../smtp/client.ts';
import type { Deliverer, DeliveryJob, DeliveryRecipient, RecipientOutcome } from '../queue/deliverer.ts';
import { ConnectionCache, type ConnectionCacheOptions } from './connection-cache.ts';
import { deliverLocalMaildir } from './local-transport.ts';
import { resolveNextHops, type MxResolver, type SelfEndpoint } from './mx.ts';
import { deferred, failureOutcome } from './outcome.ts';
import { deliverToHops, type DestinationResult, type HopTlsPolicy, type OutboundMessage } from './outbound.ts';
import { Router, type Route, type RoutingConfig, type TlsMode } from './routing.ts';
import { StaticTlsPolicy, type TlsPolicySource } from './tls-policy.ts';
import type { DkimSigner } from './dkim.ts';

export interface DelivererOptions {
  /** Our name: EHLO, Reporting-MTA, Maildir file names. */
  readonly hostname: string;
  readonly routing: RoutingConfig;
  /** MX / A / AAAA (and TLSA, TXT for DANE and MTA-STS) lookups: a dns.promises.Resolver fits. */
  readonly resolver: MxResolver;
  /** Port for MX next hops. Default 25 (tests: the fake peer's port, or a function of the MX host). */
  readonly mxPort?: number | ((host: string, address: string) => number);
  /** Our MX listeners, for loop detection. */
  readonly self?: readonly SelfEndpoint[];
  /** Loopback next hops are not loops (tests). Default false. */
  readonly allowLoopback?: boolean;
  /** RFC 1918 / ULA / link-local next hops allowed. Default false. */
  readonly allowPrivate?: boolean;
  readonly families?: 'ipv4' | 'ipv6' | 'any';
  /** TLS towards MX hosts. Default: opportunistic ('may') everywhere. */
  readonly tlsPolicy?: TlsPolicySource;
  readonly timeouts?: Partial<SmtpTimeouts>;
  /** Recipients per SMTP transaction. Default 50. */
  readonly maxRecipientsPerTransaction?: number;
  /** Idle connection reuse; false disables it. */
  readonly connectionCache?: ConnectionCacheOptions | false;
  /** Destinations of one job delivered at once. Default 4. */
  readonly concurrency?: number;
  readonly dkim?: DkimSigner | null;
  /** Known local recipients (Maildir transport): unknown ones bounce with 5.1.1, no mailbox is created. */
  readonly isLocalRecipient?: (address: string) => boolean;
  /** Maildir line endings. Default 'lf'. */
  readonly maildirLineEndings?: 'lf' | 'crlf';
  readonly maxReplyLineLength?: number;
  readonly maxReplyLines?: number;
  readonly localAddress?: string;
  readonly logger?: Logger;
}

export class SmtpDeliverer implements Deliverer {
  readonly #options: DelivererOptions;
  readonly #router: Router;
  readonly #cache: ConnectionCache | null;
  readonly #tls: TlsPolicySource;
  readonly #logger: Logger;

  constructor(options: DelivererOptions) {
    if (typeof options.hostname !== 'string' || !/^[A-Za-z0-9.-]+$|^\[[0-9A-Fa-f:.IPv]+\]$/.test(options.hostname)) {
      throw new TypeError(`Bad hostname ${JSON.stringify(options.hostname)}`);
    }
    this.#options = options;
    this.#router = new Router(options.routing);
    this.#cache = options.connectionCache === false ? null : new ConnectionCache(options.connectionCache ?? {});
    this.#tls = options.tlsPolicy ?? new StaticTlsPolicy();
    this.#logger = options.logger ?? NULL_LOGGER;
  }

  get router(): Router { return this.#router; }

  async deliver(job: DeliveryJob, signal: AbortSignal): Promise<readonly RecipientOutcome[]> {
    signal.throwIfAborted();
    const logger = this.#logger.child({ queue_id: job.queueId });
    const message = await this.#prepare(job, signal, logger);
    const groups = this.#router.group(job.recipients);
    const byRecipient = new Map<DeliveryRecipient, RecipientOutcome>();
    let bodyFailed = false;
    const queue = [...groups];
    const worker = async (): Promise<void> => {
      for (let g = queue.shift(); g !== undefined; g = queue.shift()) {
        signal.throwIfAborted();
        if (bodyFailed) {
          for (const r of g.recipients) byRecipient.set(r, failureOutcome(r.address, deferred('4.3.0', 'message body unreadable: delivery stopped')));
          continue;
        }
        const res = await this.#deliverGroup(g.route, g.recipients, message, signal, logger);
        if (res.bodyFailed) bodyFailed = true;
        const route = g.route.kind;
        g.recipients.forEach((r, i) => { byRecipient.set(r, { ...res.outcomes[i]!, route }); });
      }
    };
    const n = Math.max(1, Math.min(this.#options.concurrency ?? 4, groups.length));
    await Promise.all(Array.from({ length: n }, worker));
    signal.throwIfAborted();
    return job.recipients.map((r) => byRecipient.get(r) ?? failureOutcome(r.address, deferred('4.3.0', 'not attempted')));
  }

  /** Closes idle cached connections. */
  async close(): Promise<void> {
    await this.#cache?.close();
  }

  async #prepare(job: DeliveryJob, signal: AbortSignal, logger: Logger): Promise<OutboundMessage> {
    const base: OutboundMessage = { queueId: job.queueId, sender: job.sender, mailParams: job.mailParams, size: job.size, openBody: () => job.openBody() };
    const dkim = this.#options.dkim;
    if (!dkim) return base;
    let header: string | null = null;
    try {
      header = await dkim.sign(job.sender, () => job.openBody(), signal);
    } catch (err) {
      signal.throwIfAborted();
      // Unsigned mail is better than no mail; a body that cannot be read shows up again when sending.
      logger.warn('dkim signing failed; sending unsigned', { error: (err as Error).message });
    }
    if (header === null) return base;
    const prefix = Buffer.from(header, 'latin1');
    return {
      ...base,
      size: job.size + prefix.length,
      openBody: () => prepend(prefix, job.openBody()),
    };
  }

  async #deliverGroup(route: Route, recipients: DeliveryRecipient[], message: OutboundMessage, signal: AbortSignal, logger: Logger): Promise<DestinationResult> {
    const o = this.#options;
    const common = {
      heloName: o.hostname, signal, logger,
      cache: this.#cache,
      ...(o.timeouts ? { timeouts: o.timeouts } : {}),
      ...(o.maxRecipientsPerTransaction !== undefined ? { maxRecipients: o.maxRecipientsPerTransaction } : {}),
      ...(o.maxReplyLineLength !== undefined ? { maxReplyLineLength: o.maxReplyLineLength } : {}),
      ...(o.maxReplyLines !== undefined ? { maxReplyLines: o.maxReplyLines } : {}),
      ...(o.localAddress !== undefined ? { localAddress: o.localAddress } : {}),
    };
    switch (route.kind) {
      case 'local': {
        const t = route.transport;
        if (t === null) {
          logger.warn('no local transport configured; local mail deferred', { rcpts: recipients.map((r) => r.address) });
          return { outcomes: recipients.map((r) => failureOutcome(r.address, deferred('4.3.5', 'no local transport configured'))), bodyFailed: false };
        }
        if (t.kind === 'discard') {
          logger.info('discarded', { queue_id: message.queueId, rcpts: recipients.map((r) => r.address) });
          return { outcomes: recipients.map((r) => ({ address: r.address, outcome: 'delivered' as const, diagnostic: 'discarded by local transport' })), bodyFailed: false };
        }
        if (t.kind === 'maildir') {
          return deliverLocalMaildir({
            root: t.root, hostname: o.hostname, lineEndings: o.maildirLineEndings ?? 'lf',
            ...(o.isLocalRecipient ? { isKnown: o.isLocalRecipient } : {}),
          }, message, recipients);
        }
        const hop = { host: t.host, address: t.host, port: t.port };
        const mode: TlsMode = t.kind === 'smtp' ? (t.tls ?? 'none') : 'none';
        return deliverToHops([hop], () => ({ mode, source: 'local transport' }), message, recipients, {
          ...common, lmtp: t.kind === 'lmtp', ...(t.kind === 'smtp' && t.auth ? { auth: t.auth } : {}),
        });
      }
      case 'smarthost': {
        const hop = { host: route.host, address: route.host, port: route.port };
        const policy: HopTlsPolicy = { mode: route.tls, verify: route.verifyCertificate, ca: route.ca, source: 'smart host policy' };
        return deliverToHops([hop], () => policy, message, recipients, { ...common, ...(route.auth ? { auth: route.auth } : {}) });
      }
      case 'mx': {
        const mx = await resolveNextHops(route.domain, {
          resolver: o.resolver, signal,
          ...(o.mxPort !== undefined ? { port: o.mxPort } : {}),
          ...(o.self ? { self: o.self } : {}),
          ...(o.allowLoopback !== undefined ? { allowLoopback: o.allowLoopback } : {}),
          ...(o.allowPrivate !== undefined ? { allowPrivate: o.allowPrivate } : {}),
          ...(o.families ? { families: o.families } : {}),
        });
        if (!mx.ok) {
          logger.info('next hop lookup failed', { domain: route.domain, status: mx.failure.status, reason: mx.failure.text });
          return { outcomes: recipients.map((r) => failureOutcome(r.address, mx.failure)), bodyFailed: false };
        }
        const tls = await this.#tls.policyFor(route.domain, mx.hops, signal);
        if ('failure' in tls) return { outcomes: recipients.map((r) => failureOutcome(r.address, tls.failure)), bodyFailed: false };
        const hops = tls.hops ?? mx.hops;
        if (hops.length === 0) {
          const f = deferred('4.7.5', `no MX host of ${route.domain} is allowed by its ${tls.source ?? 'TLS'} policy`);
          return { outcomes: recipients.map((r) => failureOutcome(r.address, f)), bodyFailed: false };
        }
        return deliverToHops(hops, tls.forHop, message, recipients, common);
      }
    }
  }
}

async function* prepend(prefix: Buffer, body: Readable | AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  try {
    yield prefix;
    for await (const chunk of body as AsyncIterable<Uint8Array>) yield chunk;
  } finally {
    if (typeof (body as Readable).destroy === 'function') (body as Readable).destroy();
  }
}
