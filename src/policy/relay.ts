/**
 * The relay decision: may this recipient be accepted, and is it ours (local) or someone else's (relay)?
 * Pure functions, no I/O. Ordered rules, the first decisive one wins, deny by default. Every decision is taken on
 * the canonical address (src/core/address.ts), the same one delivery will use, so quoting, case, trailing dots,
 * source routes and IDNA forms cannot make the decision and the delivery disagree.
 *
 * Rules, in order (the rule name goes to the logs):
 *   submission-auth        role 'submission' and no authenticated user: 530 5.7.0 (defence in depth; the engine
 *                          already demands AUTH before MAIL on a submission listener)
 *   routed-address         the local part carries "@", "%" or "!" (percent hack, bang path, quoted "u@remote"),
 *                          also after NFKC (look-alikes such as U+FF05 fold to "%"):
 *                          never accepted, whoever asks. 554 5.7.1 Relay access denied for an untrusted client;
 *                          553 5.1.3 Sender-specified routing is not supported for a trusted or authenticated one
 *   postmaster             the unqualified <postmaster>: local (RFC 5321 section 4.1.1.3)
 *   unqualified            any other address without a domain: 553 5.1.3 (parsePath refuses these already)
 *   local-domain           the domain is one of ours: local
 *   local-address-literal  [ip] naming this host (one of its addresses, any loopback or the unspecified address,
 *                          IPv4-mapped IPv6 folded): local, exactly as delivery routes it (core/locality.ts)
 *   relay-domain           the domain is one we relay for (backup MX): relay
 *   trusted-network        the client is in trustedNetworks: relay
 *   authenticated          the client authenticated: relay
 *   default-deny           554 5.7.1 Relay access denied
 *
 * Local and relay domains are checked before the client's privileges, so a trusted client's mail to a local
 * domain is reported as 'local' (not 'relay'); the accept/reject outcome is the same in either order.
 */
import type { CanonicalAddress } from '../core/address.ts';
import { isPostmaster } from '../core/address.ts';
import { isRoutedLocalPart } from '../core/canonical.ts';
import { createLocality, type Locality } from '../core/locality.ts';
import type { Reply } from '../core/reply.ts';

export interface RelayContext {
  /** The listener's role. On 'submission' a recipient without an authenticated user is refused (530). */
  readonly role: 'mx' | 'submission';
  /** The client address is in trustedNetworks (computed elsewhere). */
  readonly trusted: boolean;
  /** The authenticated user, or null. */
  readonly user: string | null;
  /** Domains we are final for: canonical lower-case A-labels, no trailing dot (used when `locality` is absent). */
  readonly localDomains?: ReadonlySet<string>;
  /** Domains we relay for (backup MX): same form as localDomains. */
  readonly relayDomains: ReadonlySet<string>;
  /** The server's own IP addresses: a literal [ip] of one of these counts as a local domain. Any textual form. */
  readonly localAddresses?: ReadonlySet<string>;
  /**
   * The one locality answer shared with delivery (core/locality.ts). When given it decides "is this domain ours"
   * instead of localDomains/localAddresses, which then only serve as documentation for callers that build a
   * context by hand (tests).
   */
  readonly locality?: Locality;
  /** Admin-written relay rules, in order; the first that matches decides (after local and relay domains, trusted networks and authentication). */
  readonly rules?: readonly RelayRuleMatcher[];
  /** The client address, for rules that match on a network. */
  readonly clientIp?: string;
  /** The canonical domain of MAIL FROM ("" for <>), for rules that match on it. */
  readonly senderDomain?: string;
}

/** A compiled admin rule (see relay-rules.ts). */
export interface RelayRuleMatcher {
  readonly name: string;
  readonly action: 'relay' | 'reject';
  matches(query: { readonly clientIp: string; readonly senderDomain: string; readonly recipientDomain: string }): boolean;
}

export type RelayDecision =
  | { readonly action: 'local'; readonly rule: string; readonly reason: string }
  | { readonly action: 'relay'; readonly rule: string; readonly reason: string }
  | { readonly action: 'reject'; readonly rule: string; readonly reason: string; readonly reply: Reply };

function localityOf(ctx: RelayContext): Locality {
  if (ctx.locality) return ctx.locality;
  const domains = ctx.localDomains ?? new Set<string>();
  const own = ctx.localAddresses ?? new Set<string>();
  return createLocality({ domains: () => domains, ownAddresses: () => own });
}

function reject(rule: string, reason: string, code: number, enhanced: string, text: string): RelayDecision {
  return { action: 'reject', rule, reason, reply: { code, enhanced, text } };
}

function relayDenied(rule: string, reason: string, address: string): RelayDecision {
  return reject(rule, reason, 554, '5.7.1', `<${address}>: Relay access denied`);
}

/** Decides one recipient. See the module header for the rules and their order. */
export function decideRecipient(rcpt: CanonicalAddress, ctx: RelayContext): RelayDecision {
  const address = rcpt.address;
  const privileged = ctx.trusted || ctx.user !== null;

  if (ctx.role === 'submission' && ctx.user === null) {
    return reject('submission-auth', 'submission listener without authentication', 530, '5.7.0', 'Authentication required');
  }

  // Recomputed from the local part as well, in case a caller built the address by hand.
  if (rcpt.routed || isRoutedLocalPart(rcpt.localPart)) {
    if (!privileged) return relayDenied('routed-address', 'local part carries routing characters', address);
    return reject(
      'routed-address',
      'local part carries routing characters',
      553,
      '5.1.3',
      `<${address}>: Sender-specified routing is not supported`,
    );
  }

  if (rcpt.domain === '') {
    if (isPostmaster(rcpt)) return { action: 'local', rule: 'postmaster', reason: 'unqualified postmaster' };
    return reject('unqualified', 'recipient has no domain', 553, '5.1.3', `<${address}>: Recipient address must be fully qualified`);
  }

  const locality = localityOf(ctx);
  if (rcpt.literal === null && locality.isLocal(rcpt.domain)) {
    return { action: 'local', rule: 'local-domain', reason: `domain ${rcpt.domain} is local` };
  }
  if (rcpt.literal !== null && locality.isOwnLiteral(rcpt.domain)) {
    return { action: 'local', rule: 'local-address-literal', reason: `literal ${rcpt.domain} is one of our addresses` };
  }
  if (ctx.relayDomains.has(rcpt.domain)) {
    return { action: 'relay', rule: 'relay-domain', reason: `domain ${rcpt.domain} is a relay domain` };
  }
  if (ctx.trusted) return { action: 'relay', rule: 'trusted-network', reason: 'client is in trusted networks' };
  if (ctx.user !== null) return { action: 'relay', rule: 'authenticated', reason: `client authenticated as ${ctx.user}` };
  for (const r of ctx.rules ?? []) {
    if (!r.matches({ clientIp: ctx.clientIp ?? '', senderDomain: ctx.senderDomain ?? '', recipientDomain: rcpt.domain })) continue;
    if (r.action === 'relay') return { action: 'relay', rule: r.name, reason: `relay rule ${r.name} matched` };
    return relayDenied(r.name, `relay rule ${r.name} matched`, address);
  }
  return relayDenied('default-deny', 'no rule permits this destination', address);
}

/**
 * An authenticated user may send only as an address they own (Postfix reject_sender_login_mismatch, RL-26).
 * `owned` receives the canonical address (local part case kept, domain lower-case A-labels). The null sender
 * <> is allowed, as in Postfix: bounces and notifications use it.
 */
export function checkSenderOwnership(
  sender: CanonicalAddress | null,
  user: string,
  owned: (address: string) => boolean,
): { ok: true } | { ok: false; reply: Reply } {
  if (sender === null) return { ok: true };
  if (owned(sender.address)) return { ok: true };
  return {
    ok: false,
    reply: {
      code: 553,
      enhanced: '5.7.1',
      text: `<${sender.address}>: Sender address rejected: not owned by user ${user}`,
    },
  };
}
