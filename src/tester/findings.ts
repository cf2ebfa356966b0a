/**
 * Port-aware expectations and exposure checks, as findings (pure). On an mx port (25) local domains must be
 * accepted and relaying refused; on submission ports (587, 465) AUTH must be required before MAIL, and AUTH
 * offered without TLS is flagged (RFC 6409, RFC 8314). Also: VRFY/EXPN exposure, certificate facts, a public MX
 * that requires TLS (RFC 3207 section 4: it must not), and, in proof mode, a relay that saw another client
 * address than the one the tester used (proxy, NAT or PROXY-protocol trust trouble). The verdicts are restated
 * as findings so that each says what to fix: a proved open relay, a bounce relay (or, in safe mode, the
 * acceptance pattern that makes one), a refusal of the tester's own address, a refused control, and a tester
 * speaking from an address the target may trust.
 *
 * Every finding carries a remediation line (REMEDIATION, by id: the Postfix and Exim settings where one applies;
 * an open relay's line grows with the hints of the tricks that worked, TRICK_HINTS). A check that depends on a
 * mail domain the tester only guessed is reported as uncertain, never as a violation.
 * Findings never change a verdict; they are listed in every report and are JUnit failures when violated.
 */
import ipaddr from 'ipaddr.js';
import { TRICKS } from './probes.ts';
import type { Finding, MailDomain, PortResult, TrickResult } from './result.ts';

export interface PortFacts {
  /** Some MAIL FROM got 2xx in a battery of this port (no AUTH was ever given). */
  readonly mailAccepted: boolean;
  /** AUTH mechanisms advertised before STARTTLS (starttls transport), or null when unknown. */
  readonly plainAuth: readonly string[] | null;
  readonly sourceAddress: string | null;
  /** The mail domain in use, and whether it was given or guessed. */
  readonly mailDomain?: MailDomain | null;
  readonly mode?: 'safe' | 'prove';
}

const OPEN_RELAY_FIX = 'Postfix: smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination, and keep mynetworks to your own hosts (postconf mynetworks). '
  + 'Exim: keep hostlist relay_from_hosts to your own hosts, and in acl_check_rcpt refuse other domains to clients that are neither there nor authenticated '
  + '(require message = relay not permitted / domains = +local_domains : +relay_to_domains, or deny message = relay not permitted with !domains = +local_domains : +relay_to_domains, !hosts = +relay_from_hosts, !authenticated = *), then require verify = recipient.';
const BOUNCE_FIX = 'Refuse unknown recipients at RCPT instead of accepting and bouncing them. Postfix: smtpd_reject_unlisted_recipient = yes (the default) with complete '
  + 'local_recipient_maps (and virtual_mailbox_maps, virtual_alias_maps, relay_recipient_maps for the domains you relay to). Exim: require verify = recipient in acl_check_rcpt. '
  + 'Mail for your own address literal must be refused or delivered locally, never routed on (Exim: allow_domain_literals = false, the default); a bounce to an unauthenticated sender should carry the headers only.';

/** What to fix, by finding id (Postfix and Exim settings where one applies). */
export const REMEDIATION: Readonly<Record<string, string>> = Object.freeze({
  'open-relay': OPEN_RELAY_FIX,
  'bounce-relay': BOUNCE_FIX,
  'bounce-relay-risk': BOUNCE_FIX,
  'backscatter': 'Refuse at RCPT what would bounce (Postfix: smtpd_reject_unlisted_recipient = yes with complete recipient maps; Exim: require verify = recipient): a bounce to a forged sender is backscatter.',
  'client-blocked': 'Not a fault of the target as far as relaying goes: it refuses the tester\'s own address (a DNSBL or a client rule). Test again from an address it does not block (--source-address), or have its admin exempt the tester '
    + '(Postfix: check_client_access with OK for the tester before reject_rbl_client; Exim: accept hosts = <tester> before the DNSBL check in acl_check_rcpt).',
  'control-refused': 'The target refused even postmaster in the tester\'s session, so its refusals say nothing about relaying. If the mail domain is right, postmaster must be accepted (RFC 5321 section 4.5.1: '
    + 'Postfix: the domain in mydestination or virtual_mailbox_domains and a postmaster alias; Exim: the domain in local_domains and a postmaster alias); otherwise give the real domain with --domain.',
  'tester-address-may-be-trusted': 'Test from an address outside the target\'s trusted networks (another network, --source-address): Postfix permits mynetworks (postconf mynetworks; mynetworks_style), Exim relay_from_hosts; '
    + 'if this address really is not meant to be trusted, narrow those settings.',
  'mx-refuses-local': 'An MX must accept mail for its own domains. Postfix: list the domain in mydestination (local), virtual_mailbox_domains or virtual_alias_domains, or relay_domains (with relay_recipient_maps); '
    + 'Exim: add it to domainlist local_domains (or relay_to_domains); and make postmaster exist (RFC 5321 section 4.5.1).',
  'mx-local-uncertain': 'Give the target\'s real mail domain with --domain so that local delivery (postmaster@domain) can be checked.',
  'mx-requires-tls': 'Offer STARTTLS on port 25 but do not require it: Postfix smtpd_tls_security_level = may (not encrypt); Exim: no TLS requirement in acl_check_rcpt for port 25.',
  'submission-mail-without-auth': 'Require AUTH on submission before MAIL/RCPT: Postfix master.cf submission -o smtpd_client_restrictions=permit_sasl_authenticated,reject (or smtpd_relay_restrictions=permit_sasl_authenticated,reject); '
    + 'Exim: in the ACL for the submission port, deny !authenticated = *.',
  'submission-no-starttls': 'Offer STARTTLS and require it on submission: Postfix master.cf submission -o smtpd_tls_security_level=encrypt with smtpd_tls_chain_files; Exim: tls_advertise_hosts = * with tls_certificate and tls_privatekey.',
  'auth-without-tls': 'Offer AUTH only after TLS: Postfix smtpd_tls_auth_only = yes; Exim: auth_advertise_hosts = ${if eq{$tls_in_cipher}{}{}{*}}.',
  'vrfy-exposed': 'Postfix: disable_vrfy_command = yes; Exim: leave acl_smtp_vrfy unset (VRFY refused).',
  'expn-exposed': 'Exim: leave acl_smtp_expn unset (EXPN refused); Postfix does not implement EXPN; Sendmail: PrivacyOptions=noexpn.',
  'tls-certificate-expired': 'Renew the certificate (Postfix smtpd_tls_chain_files; Exim tls_certificate / tls_privatekey).',
  'tls-certificate-self-signed': 'Senders that verify (MTA-STS, DANE) need a certificate from a CA or a TLSA record: Postfix smtpd_tls_chain_files; Exim tls_certificate.',
  'tls-certificate-name-mismatch': 'Use a certificate naming the host (its MX name) in its subjectAltName: Postfix smtpd_tls_chain_files; Exim tls_certificate.',
  'tls-old-protocol': 'Disable TLS 1.0 and 1.1: Postfix smtpd_tls_protocols = >=TLSv1.2 and smtpd_tls_mandatory_protocols = >=TLSv1.2; Exim: openssl_options = +no_tlsv1 +no_tlsv1_1.',
  'starttls-not-offered': 'Offer STARTTLS: Postfix smtpd_tls_security_level = may with smtpd_tls_chain_files; Exim: tls_advertise_hosts = * with tls_certificate and tls_privatekey.',
  'relay-saw-other-address': 'Something between the tester and the relay changed the client address (NAT, a proxy, PROXY protocol, XCLIENT). Trust only real client addresses: '
    + 'Postfix smtpd_upstream_proxy_protocol only behind your own proxy, smtpd_authorized_xclient_hosts empty or your proxies, mynetworks without the proxy\'s address; Exim: hosts_proxy and relay_from_hosts likewise.',
});

/** Extra lines for an open relay, by the tricks that worked. */
export const TRICK_HINTS: readonly { readonly ids: readonly string[]; readonly hint: string }[] = Object.freeze([
  { ids: ['V01'], hint: 'It relays for the null sender: bounces are delivered to local recipients, never relayed (no sender-based permit rules).' },
  { ids: ['V03', 'V04', 'V05', 'V06', 'V07'], hint: 'It relays for a forged sender: decide relaying on the client (mynetworks, SASL), never on the sender address (Postfix: no check_sender_access OK or permit_sender_* in smtpd_relay_restrictions; Exim: no accept senders = ... in acl_check_rcpt).' },
  { ids: ['V08', 'V09', 'V09b', 'V11', 'V20b'], hint: 'The percent hack works: Postfix allow_percent_hack = no; Exim: leave percent_hack_domains empty.' },
  { ids: ['V17', 'V18', 'V19'], hint: 'Bang paths are rewritten: Postfix swap_bangpath = no.' },
  { ids: ['V10', 'V12', 'V13', 'V13b', 'V14', 'V20', 'V22'], hint: 'A quoted or doubled @ is resolved as routing: Postfix resolve_dequoted_address = yes and resolve_null_domain = no (the defaults); other MTAs: parse the path strictly before the relay check.' },
  { ids: ['V15', 'V16', 'X01'], hint: 'A source route is honoured: strip it (RFC 5321 section 4.1.1.3) and apply the relay check to the final address.' },
  { ids: ['X09'], hint: 'XCLIENT is open: Postfix smtpd_authorized_xclient_hosts = (empty, or only your own proxies).' },
  { ids: ['X10'], hint: 'XFORWARD is open: Postfix smtpd_authorized_xforward_hosts = (empty, or only your own content filters).' },
]);

/** The remediation line of an open relay: the general fix plus the hints of the tricks that worked. */
export function openRelayRemediation(trickIds: readonly string[]): string {
  const hints = TRICK_HINTS.filter((h) => h.ids.some((id) => trickIds.includes(id))).map((h) => h.hint);
  return [OPEN_RELAY_FIX, ...hints].join(' ');
}

/** 'loopback', 'private' and the like for an address a server may well trust; null for a public one. */
export function trustedLookingRange(address: string): string | null {
  if (!ipaddr.isValid(address)) return null;
  let a = ipaddr.parse(address);
  if (a.kind() === 'ipv6' && (a as ipaddr.IPv6).isIPv4MappedAddress()) a = (a as ipaddr.IPv6).toIPv4Address();
  const range = a.range();
  const names: Record<string, string> = {
    loopback: 'loopback', private: 'private', linkLocal: 'link-local', uniqueLocal: 'unique local', carrierGradeNat: 'carrier-grade NAT', unspecified: 'unspecified',
  };
  return names[range] ?? null;
}

const tricksOf = (p: Omit<PortResult, 'findings'>): TrickResult[] => p.transports.flatMap((t) => t.tricks);
const idsOf = (list: readonly TrickResult[]): string[] => [...new Set(list.map((t) => t.id))];

export function portFindings(p: Omit<PortResult, 'findings'>, facts: PortFacts): Finding[] {
  const out: Finding[] = [];
  const add = (id: string, severity: Finding['severity'], ok: boolean, message: string, remediation: string | null = ok ? null : REMEDIATION[id] ?? null): void => {
    out.push({ id, severity, port: p.port, ok, message, remediation });
  };
  const tested = p.transports.filter((t) => t.verdict !== 'N/A' && t.session.banner !== null && t.session.banner.code === 220);
  const plain = p.transports.find((t) => t.transport === 'plain');
  const starttls = p.transports.find((t) => t.transport === 'starttls');

  const all = tricksOf(p);
  const proved = all.filter((t) => t.verdict === 'OPEN' && t.reason === 'proved');
  if (proved.length > 0) {
    const ids = idsOf(proved);
    add('open-relay', 'error', false, `relays mail for strangers: ${ids.join(', ')} (the tagged probe reached the sink)`, openRelayRemediation(ids));
  }
  const bounced = all.filter((t) => t.verdict === 'OPEN' && t.reason === 'bounce-relay');
  if (bounced.length > 0) {
    add('bounce-relay', 'error', false, `bounce relay: ${idsOf(bounced).join(', ')} came back to the forged sender with the message body (anyone can have this server deliver chosen content to any address)`);
  }
  const risky = all.filter((t) => t.kind === 'bounce' && t.accepted && t.verdict !== 'OPEN' && TRICKS.find((x) => x.id === t.id)?.riskIfAccepted === true && !t.proof?.bounced);
  if (risky.length > 0) {
    const how = facts.mode === 'prove' ? 'no bounce came back within the wait, but a late one would carry the message to whoever the sender claims to be' : 'a bounce would carry the message to whoever the sender claims to be; --prove shows whether it does';
    add('bounce-relay-risk', 'warning', false, `accepts mail from a stranger for a local recipient that does not exist (${idsOf(risky).join(', ')}): ${how}`);
  }
  const backscatter = all.filter((t) => t.kind === 'bounce' && t.proof?.bounced === true && !t.proof.bouncePayload);
  if (backscatter.length > 0) add('backscatter', 'warning', false, `bounced to the forged sender with the headers only (${idsOf(backscatter).join(', ')}): backscatter`);
  const blocked = [...p.transports.filter((t) => t.reason === 'client-blocked' && t.tricks.length === 0), ...all.filter((t) => t.reason === 'client-blocked')];
  if (blocked.length > 0) {
    const who = facts.sourceAddress ?? p.transports.find((t) => t.session.localAddress !== null)?.session.localAddress ?? 'the tester';
    add('client-blocked', 'warning', false, `refused the tester's own address (${who}): ${blocked[0]!.detail}; relaying was not tested from here`);
  }
  const refusedControl = all.filter((t) => t.reason === 'control-refused');
  if (refusedControl.length > 0) add('control-refused', 'warning', false, `refused even the local control recipient in the tester's session: ${refusedControl[0]!.detail}`);
  const suspicious = all.some((t) => t.verdict === 'OPEN' || t.reason === 'accepted-not-proved' || t.reason === 'accepts-all-recipients');
  if (suspicious) {
    const from = facts.sourceAddress ?? p.transports.find((t) => t.session.localAddress !== null)?.session.localAddress ?? null;
    const range = from !== null ? trustedLookingRange(from) : null;
    if (from !== null && range !== null) {
      add('tester-address-may-be-trusted', 'warning', false, `the tester connected from ${from}, a ${range} address: the target may trust it (Postfix mynetworks, Exim relay_from_hosts), so relaying seen from here may be an artifact of testing from inside`);
    }
  }

  if (p.role === 'mx') {
    const r = p.localDelivery?.reply;
    const domain = facts.mailDomain ?? null;
    const guessed = domain === null || domain.source.startsWith('guessed');
    if (r) {
      const cmd = p.localDelivery!.command;
      if (r.code >= 200 && r.code < 300) add('mx-accepts-local', 'info', true, `accepts mail for its own domain (${cmd}: ${r.code})`);
      else if (guessed && cmd.startsWith('RCPT')) {
        const what = domain === null ? 'no mail domain is known' : `${domain.name} was only guessed from the ${domain.source === 'guessed-from-banner' ? 'banner' : 'host name'}`;
        add('mx-local-uncertain', 'info', false, `${cmd} got ${r.code} ${r.text.split('\n')[0]}, but ${what}: whether it accepts mail for its own domains is uncertain (give --domain)`);
      } else add('mx-refuses-local', 'warning', false, `an MX must accept mail for its own domains, but ${cmd} got ${r.code} ${r.text.split('\n')[0]}`);
    }
    if (plain && plain.verdict === 'CLOSED' && plain.reason === 'tls-required') {
      add('mx-requires-tls', 'warning', false, 'a publicly referenced MX must not require STARTTLS (RFC 3207 section 4): plain SMTP was refused');
    }
  } else if (tested.length > 0) {
    if (facts.mailAccepted) {
      add('submission-mail-without-auth', 'error', false, `port ${p.port} is a submission port, but MAIL FROM was accepted without AUTH`);
    } else {
      add('submission-requires-auth', 'info', true, 'AUTH is required before MAIL');
    }
    if (p.role === 'submission' && plain && plain.session.banner?.code === 220 && !plain.session.starttlsOffered) {
      add('submission-no-starttls', 'warning', false, 'STARTTLS is not offered on a submission port: passwords would travel in clear');
    }
  }
  const plainAuth = facts.plainAuth ?? (plain && plain.session.authMechanisms.length > 0 ? plain.session.authMechanisms : null);
  if (plainAuth && plainAuth.length > 0 && p.role !== 'submissions') {
    add('auth-without-tls', 'warning', false, `AUTH (${plainAuth.join(' ')}) is offered before TLS: passwords can be sent in clear`);
  }
  const v = p.vrfy?.reply;
  if (v) {
    if (v.code === 250 || v.code === 251) add('vrfy-exposed', 'warning', false, `VRFY discloses mailboxes (${v.code} ${v.text.split('\n')[0]})`);
    else if (v.code === 252) add('vrfy-ambiguous', 'info', true, 'VRFY answers 252 (cannot verify): no disclosure');
    else add('vrfy-disabled', 'info', true, `VRFY refused (${v.code})`);
  }
  const e = p.expn?.reply;
  if (e) {
    if (e.code === 250) add('expn-exposed', 'warning', false, `EXPN expands lists (${e.code} ${e.text.split('\n')[0]})`);
    else add('expn-disabled', 'info', true, `EXPN refused (${e.code})`);
  }
  const tlsTransport = p.transports.find((t) => t.session.tls !== null);
  const cert = tlsTransport?.session.tls?.certificate;
  if (tlsTransport && cert) {
    if (cert.expired) add('tls-certificate-expired', 'warning', false, `the certificate is not valid now (${cert.validFrom} to ${cert.validTo})`);
    if (cert.selfSigned) add('tls-certificate-self-signed', 'info', false, `the certificate is self-signed (${cert.subject})`);
    if (cert.matchesHostName === false) add('tls-certificate-name-mismatch', 'info', false, `the certificate does not name the host (${cert.subject}; ${cert.subjectAltNames.join(', ')})`);
    const proto = tlsTransport.session.tls!.protocol;
    if (proto === 'TLSv1' || proto === 'TLSv1.1' || proto === 'SSLv3') add('tls-old-protocol', 'warning', false, `negotiated ${proto}`);
  } else if (starttls && starttls.verdict === 'N/A' && p.role === 'mx' && plain?.session.banner?.code === 220) {
    add('starttls-not-offered', 'info', false, 'STARTTLS is not offered');
  }
  for (const t of p.transports) {
    for (const trick of t.tricks) {
      const pr = trick.proof;
      if (!pr || !pr.arrived || pr.relaySawClient === null) continue;
      const sent = pr.sentFrom ?? facts.sourceAddress;
      if (sent !== null && pr.relaySawClient !== sent.toLowerCase()) {
        add('relay-saw-other-address', 'warning', false, `the relay recorded client address ${pr.relaySawClient}, but the tester connected from ${sent} (proxy, NAT or PROXY-protocol trust?)`);
        break;
      }
    }
  }
  return dedupe(out);
}

function dedupe(list: Finding[]): Finding[] {
  const seen = new Set<string>();
  return list.filter((f) => (seen.has(f.id) ? false : (seen.add(f.id), true)));
}

/** Every port's findings, in port order. */
export function targetFindings(ports: readonly PortResult[]): Finding[] {
  return ports.flatMap((p) => p.findings);
}
