/**
 * Port-aware expectations and exposure checks, as findings (pure). On an mx port (25) local domains must be
 * accepted and relaying refused; on submission ports (587, 465) AUTH must be required before MAIL, and AUTH
 * offered without TLS is flagged (RFC 6409, RFC 8314). Also: VRFY/EXPN exposure, certificate facts, a public MX
 * that requires TLS (RFC 3207 section 4: it must not), and, in proof mode, a relay that saw another client
 * address than the one the tester used (proxy, NAT or PROXY-protocol trust trouble).
 * Findings never change a verdict; they are listed in every report and are JUnit failures when violated.
 */
import type { Finding, PortResult } from './result.ts';

export interface PortFacts {
  /** Some MAIL FROM got 2xx in a battery of this port (no AUTH was ever given). */
  readonly mailAccepted: boolean;
  /** AUTH mechanisms advertised before STARTTLS (starttls transport), or null when unknown. */
  readonly plainAuth: readonly string[] | null;
  readonly sourceAddress: string | null;
}

export function portFindings(p: Omit<PortResult, 'findings'>, facts: PortFacts): Finding[] {
  const out: Finding[] = [];
  const add = (id: string, severity: Finding['severity'], ok: boolean, message: string): void => {
    out.push({ id, severity, port: p.port, ok, message });
  };
  const tested = p.transports.filter((t) => t.verdict !== 'N/A' && t.session.banner !== null && t.session.banner.code === 220);
  const plain = p.transports.find((t) => t.transport === 'plain');
  const starttls = p.transports.find((t) => t.transport === 'starttls');

  if (p.role === 'mx') {
    const r = p.localDelivery?.reply;
    if (r) {
      if (r.code >= 200 && r.code < 300) add('mx-accepts-local', 'info', true, `accepts mail for its own domain (${p.localDelivery!.command}: ${r.code})`);
      else add('mx-refuses-local', 'warning', false, `an MX must accept mail for its own domains, but ${p.localDelivery!.command} got ${r.code} ${r.text.split('\n')[0]}`);
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
