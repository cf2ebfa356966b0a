/**
 * Proof-mode probes: the per-attempt tag and the message that carries it. The tag is the recipient's local part
 * (so it survives the percent hack, bang paths, quoting and source routes: every trick rewrites to tag@T) and
 * is repeated in a header, the Subject and the body so that a bounce about the probe can be matched too. The body
 * ends with a payload line (payloadLine()): a bounce that carries it returned the probe's content, not only its
 * headers. For the bounce tricks the tag is the sender's local part instead, so the bounce itself comes to the sink.
 */
import { randomBytes } from 'node:crypto';

export interface Tagger {
  readonly runId: string;
  next(): string;
}

/** Tags "rg-<runId>-<n base 36>"; runId is 8 hex digits (random when not given). */
export function createTagger(runId: string = randomBytes(4).toString('hex')): Tagger {
  if (!/^[0-9a-f]{8}$/.test(runId)) throw new RangeError(`runId must be 8 lower-case hex digits, got "${runId}"`);
  let n = 0;
  return { runId, next: () => `rg-${runId}-${(n++).toString(36)}` };
}

export interface ProbeMessageOptions {
  readonly tag: string;
  readonly trickId: string;
  readonly testerDomain: string;
  readonly target: string;
  readonly port: number;
  readonly transport: string;
  /** MAIL FROM and RCPT TO as sent (for the body's explanation). */
  readonly mailFrom: string;
  readonly rcptTo: string;
  readonly date?: Date;
}

/**
 * The probe's payload line: in the body only, so a message that carries it carries the probe's content (a bounce
 * with the headers only does not). The sink looks for it, case-insensitively.
 */
export function payloadLine(tag: string): string {
  return `relayguard probe payload ${tag.toLowerCase()}`;
}

/** The probe message, CRLF line endings, 7-bit. */
export function buildProbeMessage(o: ProbeMessageOptions): Buffer {
  const date = (o.date ?? new Date()).toUTCString().replace('GMT', '+0000');
  const safe = (s: string): string => s.replace(/[^\x20-\x7e]/g, '?');
  const lines = [
    `From: relayguard open-relay tester <relaytest@${o.testerDomain}>`,
    `To: <${o.tag}@${o.testerDomain}>`,
    `Subject: relayguard open-relay probe ${o.tag}`,
    `Date: ${date}`,
    `Message-ID: <${o.tag}.${randomBytes(4).toString('hex')}@${o.testerDomain}>`,
    `X-Relayguard-Probe: ${o.tag}`,
    `X-Relayguard-Trick: ${safe(o.trickId)} via ${safe(o.target)} port ${o.port} ${safe(o.transport)}`,
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=us-ascii',
    '',
    `This is an open-relay test probe (tag ${o.tag}) sent by relayguard's tester.`,
    `It was handed to ${safe(o.target)} port ${o.port} (${safe(o.transport)}) with`,
    `  MAIL FROM:${safe(o.mailFrom)}`,
    `  RCPT TO:${safe(o.rcptTo)}`,
    `for delivery to a mailbox of ${o.testerDomain}, a domain the tester controls.`,
    'If you are reading this anywhere else, that server relayed it: please close it.',
    '',
    payloadLine(o.tag),
    '',
  ];
  return Buffer.from(lines.join('\r\n'), 'latin1');
}
