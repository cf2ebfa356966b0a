/**
 * Outcomes delivery makes up itself (DNS trouble, loops, TLS policy, lost connections), as opposed to a next
 * hop's reply. The queue derives a recipient's DSN status from reply.enhanced, so such an outcome carries a
 * locally generated reply whose enhanced code is the status, and `diagnostic` holds the same text: an outcome
 * with a diagnostic is ours, one without is the next hop's own reply (bounce.ts relies on this to write
 * "Diagnostic-Code: smtp; ..." only for real replies).
 */
import type { Reply } from '../core/reply.ts';
import type { SmtpReply } from '../smtp/client.ts';
import type { DeliveryOutcome, RecipientOutcome } from '../queue/deliverer.ts';

export interface LocalFailure {
  readonly outcome: Exclude<DeliveryOutcome, 'delivered'>;
  /** RFC 3463 status, class matching the outcome (4.x.x deferred, 5.x.x bounced). */
  readonly status: string;
  readonly text: string;
  readonly remoteMta?: string;
}

export function deferred(status: string, text: string, remoteMta?: string): LocalFailure {
  return { outcome: 'deferred', status, text, ...(remoteMta !== undefined ? { remoteMta } : {}) };
}

export function bounced(status: string, text: string, remoteMta?: string): LocalFailure {
  return { outcome: 'bounced', status, text, ...(remoteMta !== undefined ? { remoteMta } : {}) };
}

export function failureOutcome(address: string, f: LocalFailure): RecipientOutcome {
  const reply: Reply = { code: f.outcome === 'bounced' ? 550 : 451, enhanced: f.status, text: clean(f.text) };
  return {
    address, outcome: f.outcome, reply, diagnostic: clean(f.text),
    ...(f.remoteMta !== undefined ? { remoteMta: f.remoteMta } : {}),
  };
}

/** A next hop's reply as the queue stores it. */
export function toReply(r: SmtpReply): Reply {
  return { code: r.code, enhanced: r.enhanced ?? undefined, text: r.lines.length === 1 ? clean(r.lines[0]!) : r.lines.slice(0, 20).map(clean) };
}

/** The outcome a next hop's reply means for one recipient: 2xx delivered, 4xx deferred, 5xx bounced. */
export function replyOutcome(address: string, r: SmtpReply, remoteMta: string): RecipientOutcome {
  const outcome: DeliveryOutcome = r.code >= 200 && r.code < 300 ? 'delivered' : r.code >= 500 ? 'bounced' : 'deferred';
  return { address, outcome, reply: toReply(r), remoteMta };
}

/** "550 5.1.1 No such user" for diagnostics. */
export function replyLine(r: SmtpReply): string {
  return clean(`${r.code} ${r.lines.join(' ')}`).slice(0, 500);
}

/** Printable ASCII only, bounded: replies come from untrusted peers and end up in logs and DSNs. */
export function clean(s: string): string {
  return s.replace(/[^\x20-\x7e]/g, '?').slice(0, 1000);
}
