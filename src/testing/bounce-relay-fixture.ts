/**
 * A deliberately bounce-relaying mail server for tests (field report F1, issue 8): an SMTP server on loopback that
 * refuses to relay (554 5.7.1 for other domains and routed local parts such as u%remote) but accepts ANY local part at its own domain and at its own
 * address literal ([127.0.0.1], [IPv6:::1]) and the unqualified <postmaster>, from anyone; after each accepted
 * message it replies 250, then, like a queue that finds the mailbox missing, sends a delivery status
 * notification (RFC 3464 multipart/report) from the null sender to the message's MAIL FROM address, carrying the
 * full original message (or only its header section with `headersOnly`, or when the client asked for RET=HDRS).
 * Every DSN goes to the one next hop the test gives (the tester's sink), whatever the sender's domain: nothing
 * ever leaves loopback.
 *
 * That is an open relay by another name: anyone can have it deliver chosen content to any address by forging
 * the sender. The tester must call it OPEN ('bounce-relay') in proof mode.
 */
import { NULL_LOGGER } from '../core/log.ts';
import { canonicalize } from '../core/address.ts';
import { SmtpClient } from '../smtp/client.ts';
import { SmtpServer } from '../smtp/server.ts';
import type { SessionHandler } from '../smtp/handler.ts';

export interface BounceRelayFixtureOptions {
  /** Its mail domain: every local part there is accepted. Default "bounce.test". */
  readonly domain?: string;
  /** Listen address (also its own address literal). Default 127.0.0.1. */
  readonly address?: string;
  /** Where every DSN is delivered (the tester's sink), loopback only. */
  readonly bounceVia: { readonly host: string; readonly port: number };
  /** Return only the header section of the message, always. Default false (the full message unless RET=HDRS). */
  readonly headersOnly?: boolean;
}

export interface FixtureBounce {
  /** The DSN's recipient (the original MAIL FROM). */
  readonly to: string;
  /** The original recipients it reports as failed. */
  readonly failed: readonly string[];
  readonly full: boolean;
  /** The next hop's reply to the end of data, or the error. */
  readonly result: string;
}

export interface BounceRelayFixture {
  readonly address: string;
  readonly port: number;
  readonly domain: string;
  /** Messages accepted: envelope and size. */
  readonly accepted: readonly { readonly mailFrom: string; readonly rcptTo: readonly string[]; readonly bytes: number }[];
  /** DSNs sent so far. */
  readonly bounces: readonly FixtureBounce[];
  /** Resolves when every DSN started so far has been handed over (or failed). */
  settled(): Promise<void>;
  close(): Promise<void>;
}

const LOOPBACK = /^(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|::1)$/;

/** The DSN: multipart/report with a text part, message/delivery-status, and the returned message or its headers. */
function buildDsn(o: { domain: string; to: string; failed: readonly string[]; original: Buffer; full: boolean }): Buffer {
  const boundary = `dsn-${Date.now().toString(36)}`;
  const text = o.original.toString('latin1');
  const headerEnd = text.search(/\r?\n\r?\n/);
  const returned = o.full ? text : (headerEnd < 0 ? text : text.slice(0, headerEnd)) + '\r\n';
  const lines = [
    `From: Mail Delivery System <MAILER-DAEMON@${o.domain}>`,
    `To: <${o.to}>`,
    'Subject: Undelivered Mail Returned to Sender',
    `Date: ${new Date().toUTCString().replace('GMT', '+0000')}`,
    'MIME-Version: 1.0',
    `Content-Type: multipart/report; report-type=delivery-status; boundary="${boundary}"`,
    '',
    `--${boundary}`,
    'Content-Type: text/plain; charset=us-ascii',
    '',
    `This is the mail system at ${o.domain}. Your message could not be delivered:`,
    ...o.failed.map((r) => `<${r}>: unknown user`),
    '',
    `--${boundary}`,
    'Content-Type: message/delivery-status',
    '',
    `Reporting-MTA: dns; mx.${o.domain}`,
    '',
    ...o.failed.flatMap((r) => [`Final-Recipient: rfc822; ${r}`, 'Action: failed', 'Status: 5.1.1', '']),
    `--${boundary}`,
    `Content-Type: ${o.full ? 'message/rfc822' : 'text/rfc822-headers'}`,
    '',
    returned.replace(/\r?\n$/, ''),
    '',
    `--${boundary}--`,
    '',
  ];
  // dot-stuffing is the client's job (SmtpClient.data); line endings are CRLF already
  return Buffer.from(lines.join('\r\n').replace(/\r?\n/g, '\r\n'), 'latin1');
}

export async function startBounceRelayFixture(options: BounceRelayFixtureOptions): Promise<BounceRelayFixture> {
  const address = options.address ?? '127.0.0.1';
  if (!LOOPBACK.test(address) || !LOOPBACK.test(options.bounceVia.host)) throw new Error('the bounce-relay fixture stays on loopback');
  const domain = (options.domain ?? 'bounce.test').toLowerCase();
  const ownDomains = new Set([domain, `[${address}]`, `[ipv6:${address}]`]);
  const accepted: { mailFrom: string; rcptTo: string[]; bytes: number }[] = [];
  const bounces: FixtureBounce[] = [];
  const pending = new Set<Promise<void>>();

  const sendDsn = async (to: string, failed: string[], original: Buffer, full: boolean): Promise<void> => {
    let result: string;
    try {
      const c = await SmtpClient.connect({ host: options.bounceVia.host, port: options.bounceVia.port, timeouts: { connect: 2000, greeting: 5000, command: 5000 } });
      try {
        await c.ehlo(`mx.${domain}`);
        const m = await c.mailFrom('<>');
        const r = await c.rcptTo(`<${to}>`);
        if (m.code !== 250 || r.code !== 250) result = `refused: MAIL ${m.code}, RCPT ${r.code}`;
        else result = String((await c.data(buildDsn({ domain, to, failed, original, full }))).reply.code);
      } finally {
        await c.quit().catch(() => {});
      }
    } catch (err) {
      result = `error: ${(err as Error).message}`;
    }
    bounces.push({ to, failed, full, result });
  };

  const handler: SessionHandler = {
    async onAuth() { return { ok: false, reply: { code: 535, enhanced: '5.7.8', text: 'Authentication failed' } }; },
    async onMailFrom() { return { ok: true }; },
    async onRcptTo({ path }) {
      const c = path.mailbox ? canonicalize(path.mailbox) : null;
      // a routed local part (u%remote, remote!u, "u@remote") is a relay attempt: refused like any other
      const local = c !== null && !c.routed && (ownDomains.has(c.domain.toLowerCase()) || (c.domain === '' && c.localPart.toLowerCase() === 'postmaster'));
      if (local) return { ok: true, data: c!.address };
      return { ok: false, reply: { code: 554, enhanced: '5.7.1', text: 'Relay access denied' } };
    },
    async onData({ session, body }) {
      const chunks: Buffer[] = [];
      for await (const chunk of body) chunks.push(chunk as Buffer);
      const original = Buffer.concat(chunks);
      const mailFrom = session.mailFrom?.mailbox ? canonicalize(session.mailFrom.mailbox).address : '';
      const rcptTo = session.recipients.map((r) => String(r.data));
      accepted.push({ mailFrom, rcptTo, bytes: original.length });
      if (mailFrom !== '') {
        // accepted now, bounced later: the mailbox "turns out" not to exist
        const ret = session.mailParams.get('RET');
        const full = !options.headersOnly && !(typeof ret === 'string' && ret.toUpperCase() === 'HDRS');
        const p = sendDsn(mailFrom, rcptTo, original, full);
        pending.add(p);
        void p.finally(() => pending.delete(p));
      }
      return { ok: true, queueId: `BOUNCE${accepted.length}` };
    },
  };
  const server = new SmtpServer({
    hostname: `mx.${domain}`,
    listeners: [{ name: 'mx', role: 'mx', address, port: 0, tls: 'none' }],
    handler,
    logger: NULL_LOGGER,
    limits: {
      messageSize: 1 << 20, recipients: 100, errors: 1000, idleTimeoutMs: 10_000, sessionTimeoutMs: 60_000, hopCount: 50,
      commandLineLength: 4096, connections: 100, connectionsPerIp: 100,
    },
    tls: null,
    isTrustedProxy: () => false,
    lineEndings: 'normalize',
    authRequiresTls: true,
  });
  const bound = await server.listen();
  return {
    address,
    port: bound[0]!.port,
    domain,
    accepted,
    bounces,
    async settled() { while (pending.size > 0) await Promise.allSettled([...pending]); },
    async close() {
      await server.close({ graceMs: 200 });
      while (pending.size > 0) await Promise.allSettled([...pending]);
    },
  };
}
