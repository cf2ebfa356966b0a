/**
 * The proof-of-relay sink: a minimal SMTP listener (the project's own SmtpServer with a tiny handler) that
 * accepts mail only for the probe domain, keeps nothing on disk, relays nothing, and records every tagged
 * probe that arrives: who delivered it, its envelope, its Received chain, and the client address the relaying
 * server wrote into its own Received header (what it thought the tester's address was).
 *
 * Trust: listens on the network for mail from the relays under test (untrusted). Mail for any other domain is
 * refused (550 5.7.1); messages are capped in size and count; only the header section and the tag are kept.
 * Standards: RFC 5321 (Received "from" clause, section 4.4), RFC 3464 (a null-sender DSN about a probe is recorded
 * as a bounce, never as proof).
 */
import { EventEmitter } from 'node:events';
import { canonicalize } from '../core/address.ts';
import { NULL_LOGGER, type Logger } from '../core/log.ts';
import { SmtpServer } from '../smtp/server.ts';
import { payloadLine } from './proof.ts';
import type { SessionHandler } from '../smtp/handler.ts';

/** Probe tags: "rg-" + 8 hex run id + "-" + a base-36 sequence number. */
export const TAG_PATTERN = /rg-[0-9a-f]{8}-[0-9a-z]{1,8}/gi;

export interface ProbeArrival {
  /** The probe tag (lower case). */
  readonly tag: string;
  /** A delivery status notification about the probe, not the probe itself. */
  readonly bounce: boolean;
  /** The message carries the probe's payload line (its body): a bounce with it returned the content. */
  readonly payload: boolean;
  /** Milliseconds since the epoch. */
  readonly at: number;
  /** The address that delivered it to the sink (the relay's outbound address). */
  readonly peerAddress: string;
  readonly helo: string | null;
  readonly mailFrom: string;
  readonly rcptTo: readonly string[];
  /** Received header fields, unfolded, top (newest) first. */
  readonly received: readonly string[];
  /** The client address in the oldest Received header's "from" clause: what the relay saw of the tester. */
  readonly relaySawClient: string | null;
  readonly messageId: string | null;
}

/** Whatever receives the probes: the built-in sink, or an adapter over another mailbox (e.g. relayguard serve). */
export interface ProofCollector {
  /**
   * Resolves once every tag has a (non-bounce) arrival, or after waitMs; with every arrival seen per tag. Tags in
   * options.bounceTags (the bounce tricks: the tag is the sender) are done at their first arrival of any kind.
   */
  waitFor(tags: readonly string[], waitMs: number, signal?: AbortSignal, options?: WaitOptions): Promise<Map<string, ProbeArrival[]>>;
}

export interface WaitOptions {
  /** Tags whose expected arrival is a bounce (sent to the tag as the probe's sender). */
  readonly bounceTags?: readonly string[];
}

export interface SinkOptions {
  /** Listen address. Default 127.0.0.1. */
  readonly address?: string;
  /** Listen port; 0 picks a free one. */
  readonly port: number;
  /** Only mail for this domain is accepted. */
  readonly probeDomain: string;
  /** Greeting and EHLO name. Default "relayguard-sink". */
  readonly hostname?: string;
  /** STARTTLS certificate (offered when given). */
  readonly tls?: { readonly cert: string; readonly key: string } | null;
  /** Largest message accepted, octets. Default 1 MiB. */
  readonly maxMessageBytes?: number;
  /** Most arrivals kept. Default 10 000. */
  readonly maxArrivals?: number;
  readonly logger?: Logger;
}

/** Unfolded header fields of a message's header section. */
export function parseHeaders(message: string): { name: string; value: string }[] {
  const end = message.search(/\r?\n\r?\n/);
  const head = end < 0 ? message : message.slice(0, end);
  const out: { name: string; value: string }[] = [];
  for (const line of head.split(/\r?\n/)) {
    if (/^[ \t]/.test(line) && out.length > 0) {
      out[out.length - 1]!.value += ` ${line.trim()}`;
      continue;
    }
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    out.push({ name: line.slice(0, colon).trim(), value: line.slice(colon + 1).trim() });
  }
  return out;
}

/**
 * The client address of a Received field's "from" clause: the last "[...]" before " by " ("from helo (host
 * [192.0.2.1])" → 192.0.2.1, "[IPv6:2001:db8::1]" → 2001:db8::1), or null.
 */
export function receivedFromAddress(received: string): string | null {
  const m = /^\s*from\s+(.*?)(?:\s+by\s|;|$)/is.exec(received);
  if (!m) return null;
  const literals = [...m[1]!.matchAll(/\[(?:IPv6:)?([0-9A-Fa-f:.]+)\]/g)];
  const last = literals[literals.length - 1];
  return last ? last[1]!.toLowerCase() : null;
}

export class ProbeSink implements ProofCollector {
  readonly address: string;
  readonly port: number;
  readonly probeDomain: string;
  readonly #server: SmtpServer;
  readonly #arrivals: ProbeArrival[];
  readonly #events: EventEmitter;

  private constructor(server: SmtpServer, address: string, port: number, probeDomain: string, arrivals: ProbeArrival[], events: EventEmitter) {
    this.#server = server;
    this.address = address;
    this.port = port;
    this.probeDomain = probeDomain;
    this.#arrivals = arrivals;
    this.#events = events;
  }

  /** Everything recorded so far, oldest first. */
  get arrivals(): readonly ProbeArrival[] { return this.#arrivals; }

  static async start(options: SinkOptions): Promise<ProbeSink> {
    const probeDomain = options.probeDomain.toLowerCase().replace(/\.$/, '');
    const maxBytes = options.maxMessageBytes ?? 1024 * 1024;
    const maxArrivals = options.maxArrivals ?? 10_000;
    const arrivals: ProbeArrival[] = [];
    const events = new EventEmitter();
    const handler: SessionHandler = {
      async onAuth() { return { ok: false, reply: { code: 502, enhanced: '5.5.1', text: 'AUTH not available' } }; },
      async onMailFrom() { return { ok: true }; },
      async onRcptTo({ path }) {
        const domain = path.mailbox ? canonicalize(path.mailbox).domain : '';
        if (domain === probeDomain) return { ok: true };
        return { ok: false, reply: { code: 550, enhanced: '5.7.1', text: 'Relay access denied' } };
      },
      async onData({ session, body }) {
        const chunks: Buffer[] = [];
        let size = 0;
        for await (const c of body) {
          const b = c as Buffer;
          size += b.length;
          if (size <= maxBytes) chunks.push(b);
        }
        const text = Buffer.concat(chunks).toString('latin1');
        const mailFrom = session.mailFrom?.mailbox ? canonicalize(session.mailFrom.mailbox).address : '';
        const rcptTo = session.recipients.map((r) => (r.path.mailbox ? canonicalize(r.path.mailbox).address : ''));
        const headers = parseHeaders(text);
        const received = headers.filter((h) => h.name.toLowerCase() === 'received').map((h) => h.value);
        const oldest = received[received.length - 1];
        const messageId = headers.find((h) => h.name.toLowerCase() === 'message-id')?.value ?? null;
        // The probe itself carries its tag in the recipient (whatever the sender: V01 uses the null sender); a
        // DSN about it is addressed to the probe's sender and carries the tag only in its text.
        const tags = new Set<string>();
        for (const r of rcptTo) for (const t of r.matchAll(TAG_PATTERN)) tags.add(t[0].toLowerCase());
        const header = headers.find((h) => h.name.toLowerCase() === 'x-relayguard-probe')?.value;
        const nullSender = mailFrom === '' || /^mailer-daemon@/i.test(mailFrom);
        // RFC 3464: a null-sender multipart/report is a DSN even when it is addressed to a tag (a bounce trick's
        // forged sender).
        const contentType = headers.find((h) => h.name.toLowerCase() === 'content-type')?.value ?? '';
        const report = nullSender && /^\s*multipart\/report\b/i.test(contentType);
        if (tags.size === 0 && header && !nullSender) for (const t of header.matchAll(TAG_PATTERN)) tags.add(t[0].toLowerCase());
        const bounce = tags.size === 0 || report;
        if (bounce) for (const t of text.matchAll(TAG_PATTERN)) tags.add(t[0].toLowerCase());
        const lower = text.toLowerCase();
        for (const tag of tags) {
          if (arrivals.length >= maxArrivals) break;
          arrivals.push({
            tag, bounce, payload: lower.includes(payloadLine(tag)), at: Date.now(), peerAddress: session.connection.remoteAddress, helo: session.helo, mailFrom, rcptTo,
            received, relaySawClient: oldest === undefined ? null : receivedFromAddress(oldest), messageId,
          });
        }
        events.emit('arrival');
        return { ok: true, queueId: `SINK${arrivals.length}` };
      },
    };
    const address = options.address ?? '127.0.0.1';
    const server = new SmtpServer({
      hostname: options.hostname ?? 'relayguard-sink',
      listeners: [{ name: 'sink', role: 'mx', address, port: options.port, tls: options.tls ? 'starttls' : 'none' }],
      handler,
      logger: options.logger ?? NULL_LOGGER,
      limits: {
        messageSize: maxBytes, recipients: 100, errors: 20, idleTimeoutMs: 60_000, sessionTimeoutMs: 300_000, hopCount: 100,
        commandLineLength: 4096, connections: 200, connectionsPerIp: 50,
      },
      tls: options.tls ?? null,
      isTrustedProxy: () => false,
      lineEndings: 'normalize',
      authRequiresTls: true,
    });
    const bound = await server.listen();
    return new ProbeSink(server, bound[0]!.address, bound[0]!.port, probeDomain, arrivals, events);
  }

  /** Arrivals for one tag. */
  arrivalsFor(tag: string): ProbeArrival[] {
    const t = tag.toLowerCase();
    return this.#arrivals.filter((a) => a.tag === t);
  }

  async waitFor(tags: readonly string[], waitMs: number, signal?: AbortSignal, options: WaitOptions = {}): Promise<Map<string, ProbeArrival[]>> {
    const bounceTags = new Set((options.bounceTags ?? []).map((t) => t.toLowerCase()));
    const wanted = new Set([...tags.map((t) => t.toLowerCase()), ...bounceTags]);
    const done = (): boolean => [...wanted].every((t) => this.#arrivals.some((a) => a.tag === t && (bounceTags.has(t) || !a.bounce)));
    if (!done() && waitMs > 0 && !signal?.aborted) {
      await new Promise<void>((resolve) => {
        const finish = (): void => {
          clearTimeout(timer);
          this.#events.off('arrival', check);
          signal?.removeEventListener('abort', finish);
          resolve();
        };
        const check = (): void => { if (done()) finish(); };
        const timer = setTimeout(finish, waitMs);
        this.#events.on('arrival', check);
        signal?.addEventListener('abort', finish, { once: true });
      });
    }
    const out = new Map<string, ProbeArrival[]>();
    for (const t of wanted) out.set(t, this.arrivalsFor(t));
    return out;
  }

  async close(): Promise<void> {
    await this.#server.close({ graceMs: 500 });
  }
}
