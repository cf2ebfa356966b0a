/**
 * Self-audit check 4 (issue 12): DNS and TLS of the mail domains. For each local domain: MX records, SPF (RFC 7208),
 * DMARC (RFC 7489), MTA-STS (RFC 8461), TLS-RPT (RFC 8460), DANE TLSA (RFC 6698/7672) of each MX host against the
 * certificate each MX listener serves, DKIM keys (RFC 6376/8463); for each sending address forward-confirmed reverse
 * DNS against the HELO name; for each TLS listener certificate expiry, names and chain.
 *
 * Severities: 'unreachable' when DNS or a listener does not answer (a DNS timeout is never clean), 'broken' when an
 * answer is garbage (SERVFAIL, FORMERR), 'critical' for a setup that makes mail fail or lie (SPF permerror, a policy
 * that names the wrong MX, an expired certificate, a TLSA record that does not match), 'warning' for weak settings.
 *
 * Trust: asks only the configured DNS servers, the policy hosts of the audited domains (HTTPS) and this server's own
 * listeners (SMTP, as a client). Never sends mail: SMTP probes stop after STARTTLS (EHLO, STARTTLS, QUIT).
 * Standards: RFC 7208, 7489, 8461, 8460, 6698, 7672, 6376, 8463, 5321 section 5 (MX), 6125 (names).
 */
import { X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import { performance } from 'node:perf_hooks';
import ipaddr from 'ipaddr.js';
import { SmtpClient } from '../smtp/client.ts';
import { certCoversHost, certDnsNames, expiryOf, tlsaVerdict } from './certificate.ts';
import { dkimKeyMatches, parseDkimKey } from './dkim-key.ts';
import { externalDestinations, isDmarcRecord, organizationalDomain, parseDmarc } from './dmarc.ts';
import { nodeResolver, normName, type AuditResolver, type DnsAnswer } from './dns.ts';
import type { CheckResult, Finding, Severity } from './finding.ts';
import { makeHttpsFetch, type HttpsFetch } from './https-fetch.ts';
import { isStsRecord, parseStsPolicy, parseStsTxt, stsMxMatches, type StsPolicy } from './mta-sts.ts';
import { evaluateSpf, parseSpf, type SpfEvaluation } from './spf.ts';
import { isTlsRptRecord, parseTlsRpt } from './tls-rpt.ts';

export interface AuditListener {
  readonly name: string;
  /** 'mx' listeners are the ones MX records, MTA-STS and DANE are about. Default 'mx'. */
  readonly role?: 'mx' | 'submission';
  /** Where the audit connects. */
  readonly address: string;
  readonly port: number;
  readonly tls: 'none' | 'starttls' | 'implicit';
  /** The port the world reaches it on (the TLSA name "_PORT._tcp.MX"); default 25 for mx, else `port`. */
  readonly publicPort?: number;
}

export interface AuditDkimKey {
  readonly domain: string;
  readonly selector: string;
  readonly privateKeyPem: string;
}

export interface MailDomainsInput {
  /** Local domains (each audited). */
  readonly domains: readonly string[];
  /** Public addresses this server sends from (SPF, FCrDNS). */
  readonly sendingAddresses: readonly string[];
  /** The name this server gives in EHLO (FCrDNS must match it; MX listeners' certificates should cover it). */
  readonly heloName: string;
  /** Addresses MX records must point at; default sendingAddresses plus the addresses of mx listeners. */
  readonly serverAddresses?: readonly string[];
  readonly listeners: readonly AuditListener[];
  readonly dkimKeys: readonly AuditDkimKey[];
  /** DNS: servers ("ip" or "ip:port") for node:dns, or an AuditResolver (tests, a shared client). */
  readonly resolver: { readonly servers: readonly string[] } | AuditResolver;
  /** HTTPS GET for MTA-STS policies; default node:https through `resolver` (see https-fetch.ts). */
  readonly httpsFetch?: HttpsFetch;
  /** For the default httpsFetch: the port of every policy host (tests; default 443). */
  readonly httpsPort?: number;
  /** Extra trusted CAs (PEM) for policy hosts and for judging the listeners' chains (tests, private CAs). */
  readonly ca?: readonly string[];
  /** Per DNS query, HTTPS fetch and SMTP step, ms. */
  readonly timeoutMs: number;
  /** Clock for certificate expiry; default Date.now. */
  readonly now?: () => number;
}

export const CHECK_NAME = 'mail-domains';

interface Probe {
  readonly listener: AuditListener;
  readonly chain: readonly Buffer[] | null;
  readonly authorized: boolean;
  readonly authorizationError: string | null;
  readonly error: { readonly severity: Severity; readonly summary: string } | null;
}

function f(check: string, subject: string, severity: Severity, summary: string, detail?: Record<string, unknown>): Finding {
  return detail === undefined ? { check, subject, severity, summary } : { check, subject, severity, summary, detail };
}

function dnsFailure(check: string, subject: string, what: string, a: DnsAnswer<unknown>): Finding | null {
  if (a.kind === 'unreachable') return f(check, subject, 'unreachable', `${what}: no answer from DNS (${a.code})`, { error: a.detail });
  if (a.kind === 'broken') return f(check, subject, 'broken', `${what}: DNS answered with an error or garbage (${a.code})`, { error: a.detail });
  return null;
}

function isResolver(r: MailDomainsInput['resolver']): r is AuditResolver {
  return typeof (r as AuditResolver).txt === 'function';
}

function sameIp(a: string, b: string): boolean {
  try {
    let x = ipaddr.parse(a);
    let y = ipaddr.parse(b);
    if (x.kind() === 'ipv6' && (x as ipaddr.IPv6).isIPv4MappedAddress()) x = (x as ipaddr.IPv6).toIPv4Address();
    if (y.kind() === 'ipv6' && (y as ipaddr.IPv6).isIPv4MappedAddress()) y = (y as ipaddr.IPv6).toIPv4Address();
    return x.kind() === y.kind() && x.toNormalizedString() === y.toNormalizedString();
  } catch {
    return false;
  }
}

/**
 * Runs check 4 of the self-audit. Never throws for what it finds (DNS, TLS, HTTP failures are findings); rejects
 * only on a programming error or bad input (TypeError).
 */
export async function checkMailDomains(input: MailDomainsInput, signal?: AbortSignal): Promise<CheckResult> {
  const start = performance.now();
  if (!Array.isArray(input.domains) || typeof input.heloName !== 'string') throw new TypeError('checkMailDomains: domains and heloName are required');
  for (const ip of input.sendingAddresses) if (isIP(ip) === 0) throw new TypeError(`checkMailDomains: "${ip}" is not an IP address`);
  const resolver = isResolver(input.resolver) ? input.resolver : nodeResolver({ servers: input.resolver.servers, timeoutMs: input.timeoutMs, ...(signal ? { signal } : {}) });
  const fetch = input.httpsFetch ?? makeHttpsFetch({ resolver, timeoutMs: input.timeoutMs, ...(input.httpsPort !== undefined ? { port: input.httpsPort } : {}), ...(input.ca ? { ca: input.ca } : {}) });
  const now = input.now ?? Date.now;
  const helo = normName(input.heloName);
  const mxListeners = input.listeners.filter((l) => (l.role ?? 'mx') === 'mx');
  const ours = [...new Set([...(input.serverAddresses ?? [...input.sendingAddresses, ...mxListeners.map((l) => l.address)])])];

  const findings: Finding[] = [];
  const probes = await Promise.all(input.listeners.filter((l) => l.tls !== 'none').map((l) => probeListener(l, helo, input.timeoutMs, input.ca, signal)));
  findings.push(...listenerFindings(probes, helo, now()));
  findings.push(...(await Promise.all(input.sendingAddresses.map((ip) => checkFcrdns(resolver, ip, helo)))).flat());
  const perDomain = await Promise.all(input.domains.map((d) => auditDomain(normName(d), { input, resolver, fetch, ours, signal, probes: probes.filter((p) => (p.listener.role ?? 'mx') === 'mx') })));
  for (const list of perDomain) findings.push(...list);
  findings.push(...(await Promise.all(input.dkimKeys.map((k) => checkDkim(resolver, k)))).flat());
  return { check: CHECK_NAME, findings, durationMs: Math.round(performance.now() - start) };
}

// ---------------------------------------------------------------------------------------------------------
// Listeners and certificates

async function probeListener(l: AuditListener, helo: string, timeoutMs: number, ca: readonly string[] | undefined, signal?: AbortSignal): Promise<Probe> {
  const subject = `${l.name} (${l.address}:${l.port})`;
  const tlsOptions = { servername: helo, ...(ca ? { ca: [...ca] } : {}) };
  let client: SmtpClient | null = null;
  try {
    client = await SmtpClient.connect({
      host: l.address, port: l.port, tls: l.tls === 'implicit' ? 'implicit' : 'none', servername: helo, tlsOptions,
      timeouts: { connect: timeoutMs, greeting: timeoutMs, command: timeoutMs }, ...(signal ? { signal } : {}),
    });
    let tls = client.tls;
    if (l.tls === 'starttls') {
      const e = await client.ehlo(helo);
      if (e.code !== 250) return { listener: l, chain: null, authorized: false, authorizationError: null, error: { severity: 'critical', summary: `${subject}: EHLO refused (${e.code})` } };
      if (!client.hasCapability('STARTTLS')) return { listener: l, chain: null, authorized: false, authorizationError: null, error: { severity: 'critical', summary: `${subject}: STARTTLS is not offered` } };
      const r = await client.startTls({ servername: helo, tlsOptions });
      if (r.tls === null) return { listener: l, chain: null, authorized: false, authorizationError: null, error: { severity: 'critical', summary: `${subject}: STARTTLS refused (${r.reply.code})` } };
      tls = r.tls;
    }
    await client.quit().catch(() => null);
    const cert = tls?.peerCertificate ?? null;
    if (cert === null) return { listener: l, chain: null, authorized: false, authorizationError: null, error: { severity: 'critical', summary: `${subject}: no certificate presented` } };
    return { listener: l, chain: cert.chain.length > 0 ? cert.chain : [cert.raw], authorized: tls!.authorized, authorizationError: tls!.authorizationError, error: null };
  } catch (err) {
    const code = (err as { code?: string }).code ?? '';
    const severity: Severity = code === 'ERR_SMTP_TLS' ? 'critical' : code === 'ERR_SMTP_TIMEOUT' || code === 'ERR_SMTP_CONNECTION' || code === 'ERR_SMTP_ABORTED' ? 'unreachable' : 'broken';
    return { listener: l, chain: null, authorized: false, authorizationError: null, error: { severity, summary: `${subject}: ${(err as Error).message}` } };
  } finally {
    client?.close();
  }
}

function listenerFindings(probes: readonly Probe[], helo: string, now: number): Finding[] {
  const out: Finding[] = [];
  for (const p of probes) {
    const subject = `${p.listener.name} (${p.listener.address}:${p.listener.port})`;
    if (p.error !== null || p.chain === null) {
      out.push(f('tls.certificate', subject, p.error?.severity ?? 'broken', p.error?.summary ?? 'no certificate'));
      continue;
    }
    const x = new X509Certificate(p.chain[0]!);
    const exp = expiryOf(new Date(x.validFrom), new Date(x.validTo), now);
    const names = certDnsNames(p.chain[0]!);
    const detail = { subject: x.subject, issuer: x.issuer, validTo: new Date(x.validTo).toISOString(), daysLeft: exp.daysLeft, names, authorized: p.authorized, authorizationError: p.authorizationError, fingerprint256: x.fingerprint256 };
    out.push(f('tls.certificate', subject, exp.severity, exp.summary, detail));
    if (!certCoversHost(p.chain[0]!, helo)) {
      out.push(f('tls.names', subject, 'warning', `certificate does not cover the HELO name ${helo} (names: ${names.join(', ') || 'none'})`, { names }));
    } else {
      out.push(f('tls.names', subject, 'ok', `certificate covers ${helo}`, { names }));
    }
    if (!p.authorized && p.authorizationError !== 'ERR_TLS_CERT_ALTNAME_INVALID') {
      out.push(f('tls.chain', subject, 'warning', `certificate chain is not trusted (${p.authorizationError ?? 'unknown'}): MTA-STS senders refuse it`, { authorizationError: p.authorizationError }));
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Forward-confirmed reverse DNS

async function checkFcrdns(resolver: AuditResolver, ip: string, helo: string): Promise<Finding[]> {
  const check = 'dns.fcrdns';
  const ptr = await resolver.ptr(ip);
  const fail = dnsFailure(check, ip, `PTR lookup of ${ip}`, ptr);
  if (fail) return [fail];
  if (ptr.kind !== 'ok') return [f(check, ip, 'critical', `${ip} has no PTR record (many receivers refuse mail from it)`)];
  const fam = isIP(ip) === 4 ? 4 : 6;
  const confirmed: string[] = [];
  const unconfirmed: string[] = [];
  for (const n of ptr.records.map(normName)) {
    const a = fam === 4 ? await resolver.a(n) : await resolver.aaaa(n);
    const fail2 = dnsFailure(check, ip, `forward lookup of ${n}`, a);
    if (fail2) return [fail2];
    if (a.kind === 'ok' && a.records.some((x) => sameIp(x, ip))) confirmed.push(n);
    else unconfirmed.push(n);
  }
  const detail = { ptr: ptr.records.map(normName), confirmed, unconfirmed, helo };
  if (confirmed.length === 0) return [f(check, ip, 'critical', `reverse DNS of ${ip} (${ptr.records.map(normName).join(', ')}) is not forward-confirmed: no name resolves back to ${ip}`, detail)];
  if (!confirmed.includes(helo)) return [f(check, ip, 'warning', `forward-confirmed name of ${ip} is ${confirmed.join(', ')}, not the HELO name ${helo}`, detail)];
  if (ptr.records.length > 1) return [f(check, ip, 'warning', `${ip} has ${ptr.records.length} PTR records (one is expected); ${helo} is confirmed`, detail)];
  return [f(check, ip, 'ok', `${ip} -> ${helo} -> ${ip} (forward-confirmed, matches HELO)`, detail)];
}

// ---------------------------------------------------------------------------------------------------------
// Per domain

interface DomainContext {
  readonly input: MailDomainsInput;
  readonly resolver: AuditResolver;
  readonly fetch: HttpsFetch;
  readonly ours: readonly string[];
  readonly probes: readonly Probe[];
  readonly signal: AbortSignal | undefined;
}

interface MxFacts {
  /** MX host names (lower case, no dot) in preference order. */
  readonly hosts: readonly string[];
  /** The ones that resolve to one of our addresses. */
  readonly oursHosts: readonly string[];
}

async function auditDomain(domain: string, c: DomainContext): Promise<Finding[]> {
  const out: Finding[] = [];
  const mx = await checkMx(domain, c, out);
  const [spf, dmarc, sts, rpt, dane] = await Promise.all([
    checkSpf(domain, c), checkDmarc(domain, c), checkMtaSts(domain, c, mx), checkTlsRpt(domain, c), checkDane(domain, c, mx),
  ]);
  return [...out, ...spf, ...dmarc, ...sts, ...rpt, ...dane];
}

async function checkMx(domain: string, c: DomainContext, out: Finding[]): Promise<MxFacts> {
  const check = 'dns.mx';
  const ans = await c.resolver.mx(domain);
  const fail = dnsFailure(check, domain, `MX lookup of ${domain}`, ans);
  if (fail) { out.push(fail); return { hosts: [], oursHosts: [] }; }
  if (ans.kind !== 'ok') {
    out.push(f(check, domain, 'critical', ans.kind === 'none' && ans.reason === 'nxdomain' ? `${domain} does not exist in DNS` : `${domain} has no MX record`));
    return { hosts: [], oursHosts: [] };
  }
  const sorted = [...ans.records].sort((a, b) => a.priority - b.priority);
  const hosts = sorted.map((r) => normName(r.exchange));
  if (hosts.length === 1 && (hosts[0] === '' || hosts[0] === '.')) {
    out.push(f(check, domain, 'critical', `${domain} publishes a null MX (RFC 7505): it accepts no mail, yet it is a local domain`));
    return { hosts: [], oursHosts: [] };
  }
  const oursHosts: string[] = [];
  const elsewhere: Record<string, string[]> = {};
  let unanswered = 0;
  for (const h of hosts) {
    if (isIP(h) !== 0) { out.push(f(check, domain, 'critical', `MX ${h} is an IP address, not a host name (RFC 5321 section 5.1)`)); continue; }
    const [a4, a6] = await Promise.all([c.resolver.a(h), c.resolver.aaaa(h)]);
    if (a4.kind !== 'ok' && a6.kind !== 'ok') {
      const failed = dnsFailure(check, domain, `address lookup of MX ${h}`, a4) ?? dnsFailure(check, domain, `address lookup of MX ${h}`, a6);
      if (failed) { out.push(failed); unanswered++; continue; }
    }
    const addrs = [...(a4.kind === 'ok' ? a4.records : []), ...(a6.kind === 'ok' ? a6.records : [])];
    if (addrs.length === 0) { out.push(f(check, domain, 'critical', `MX ${h} has no address (A/AAAA)`)); continue; }
    if (addrs.some((x) => c.ours.some((o) => sameIp(o, x)))) oursHosts.push(h);
    else elsewhere[h] = addrs;
  }
  const detail = { mx: sorted.map((r) => ({ priority: r.priority, exchange: normName(r.exchange) })), ours: oursHosts, elsewhere, serverAddresses: c.ours };
  if (oursHosts.length === 0 && unanswered > 0) return { hosts, oursHosts }; // unknown, reported as unreachable/broken above
  if (oursHosts.length === 0) out.push(f(check, domain, 'critical', `no MX host of ${domain} points at this server (${c.ours.join(', ')})`, detail));
  else if (Object.keys(elsewhere).length > 0) out.push(f(check, domain, 'warning', `MX hosts ${Object.keys(elsewhere).join(', ')} of ${domain} point elsewhere (backup MX?)`, detail));
  else out.push(f(check, domain, 'ok', `MX ${oursHosts.join(', ')} point at this server`, detail));
  return { hosts, oursHosts };
}

async function checkSpf(domain: string, c: DomainContext): Promise<Finding[]> {
  const check = 'dns.spf';
  const out: Finding[] = [];
  const sender = `postmaster@${domain}`;
  const helo = normName(c.input.heloName);
  const firstIp = c.input.sendingAddresses[0] ?? '192.0.2.1';
  const all = await evaluateSpf(c.resolver, domain, { ip: firstIp, sender, helo }, { exhaustive: true });
  const record = all.records[domain] ?? null;
  const dnsProblems = all.problems.filter((p) => p.kind === 'dns');
  for (const p of dnsProblems) out.push(f(check, domain, p.dns ?? 'unreachable', `SPF: ${p.error}`, { domain: p.domain }));
  if (dnsProblems.some((p) => p.domain === domain) && record === null) return out;
  if (record === null && !all.problems.some((p) => p.kind === 'multiple' && p.domain === domain)) {
    const hasDkim = c.input.dkimKeys.some((k) => normName(k.domain) === domain);
    out.push(f(check, domain, hasDkim ? 'warning' : 'critical', `${domain} has no SPF record`));
    return out;
  }
  for (const p of all.problems) {
    if (p.kind === 'dns') continue;
    const what = { syntax: 'syntax error', multiple: 'has multiple records', missing: 'include/redirect target missing', loop: 'include/redirect loop', limit: 'limit exceeded', void: 'limit exceeded' }[p.kind];
    out.push(f(check, domain, 'critical', `SPF ${what} in ${p.domain}: ${p.error}`,
      { kind: p.kind, domain: p.domain, record: p.record, error: p.error }));
  }
  if (record === null) return out;
  const parsed = parseSpf(record);
  if (parsed.ok) {
    const allTerm = parsed.record.terms.find((t) => t.kind === 'mechanism' && t.name === 'all');
    if (allTerm && allTerm.kind === 'mechanism' && allTerm.qualifier === '+') out.push(f(check, domain, 'critical', `SPF record of ${domain} ends in "+all": it authorizes every host on the Internet`, { record }));
    else if (allTerm && allTerm.kind === 'mechanism' && allTerm.qualifier === '?') out.push(f(check, domain, 'warning', `SPF record of ${domain} ends in "?all" (neutral): it protects nothing`, { record }));
    else if (!allTerm && parsed.record.redirect === null) out.push(f(check, domain, 'warning', `SPF record of ${domain} has no "all" mechanism and no redirect (default neutral)`, { record }));
  }
  if (all.warnings.length > 0) out.push(f(check, domain, 'warning', `SPF: ${all.warnings.join('; ')}`, { record, warnings: all.warnings }));
  out.push(f(check, domain, all.lookups > 10 || all.voidLookups > 2 ? 'critical' : 'ok', `SPF needs ${all.lookups} DNS lookups (limit 10), ${all.voidLookups} void (limit 2)`, { lookups: all.lookups, voidLookups: all.voidLookups, record }));
  const evals: Array<[string, SpfEvaluation]> = await Promise.all(c.input.sendingAddresses.map(async (ip) => [ip, await evaluateSpf(c.resolver, domain, { ip, sender, helo })] as [string, SpfEvaluation]));
  for (const [ip, e] of evals) {
    const detail = { ip, result: e.result, matched: e.matched, lookups: e.lookups, record };
    const subject = `${domain} ${ip}`;
    if (e.result === 'pass') out.push(f(check, subject, 'ok', `SPF passes ${ip} (${e.matched?.term} in ${e.matched?.domain})`, detail));
    else if (e.result === 'temperror') out.push(f(check, subject, e.problems.find((p) => p.kind === 'dns')?.dns ?? 'unreachable', `SPF of ${domain} for ${ip}: temperror`, detail));
    else if (e.result === 'fail' || e.result === 'permerror') out.push(f(check, subject, 'critical', `SPF of ${domain} gives ${e.result} for the sending address ${ip}`, detail));
    else out.push(f(check, subject, 'warning', `SPF of ${domain} does not authorize the sending address ${ip} (${e.result})`, detail));
  }
  return out;
}

async function checkDmarc(domain: string, c: DomainContext): Promise<Finding[]> {
  const check = 'dns.dmarc';
  let name = `_dmarc.${domain}`;
  let ans = await c.resolver.txt(name);
  const fail = dnsFailure(check, domain, `TXT lookup of ${name}`, ans);
  if (fail) return [fail];
  let records = ans.kind === 'ok' ? ans.records.filter(isDmarcRecord) : [];
  let inherited = false;
  const org = organizationalDomain(domain);
  if (records.length === 0 && org !== domain) {
    name = `_dmarc.${org}`;
    ans = await c.resolver.txt(name);
    const fail2 = dnsFailure(check, domain, `TXT lookup of ${name}`, ans);
    if (fail2) return [fail2];
    records = ans.kind === 'ok' ? ans.records.filter(isDmarcRecord) : [];
    inherited = true;
  }
  if (records.length === 0) {
    const near = ans.kind === 'ok' ? ans.records.filter((r) => /^\s*v\s*=\s*dmarc/i.test(r)) : [];
    if (near.length > 0) return [f(check, domain, 'critical', `DMARC record at ${name} is malformed: "${near[0]}" (must start with "v=DMARC1")`, { record: near[0] })];
    return [f(check, domain, 'warning', `${domain} has no DMARC record`)];
  }
  if (records.length > 1) return [f(check, domain, 'critical', `${records.length} DMARC records at ${name}: receivers ignore them all (RFC 7489 section 6.6.3)`, { records })];
  const record = records[0]!;
  const parsed = parseDmarc(record);
  if (!parsed.ok) return [f(check, domain, 'critical', `DMARC syntax error at ${name}: ${parsed.error}`, { record, error: parsed.error })];
  const out: Finding[] = [];
  const r = parsed.record;
  const effective = inherited ? r.sp ?? r.p : r.p;
  const detail = { record, name, inherited, policy: effective };
  const unrelated = ans.kind === 'ok' ? ans.records.filter((x) => !isDmarcRecord(x)) : [];
  if (unrelated.length > 0) out.push(f(check, domain, 'warning', `unrelated TXT record(s) at ${name}: ${unrelated.map((x) => JSON.stringify(x.slice(0, 60))).join(', ')}`, { ...detail, unrelated }));
  const root = await c.resolver.txt(domain);
  if (root.kind === 'ok' && root.records.some(isDmarcRecord)) out.push(f(check, domain, 'warning', `a DMARC record at ${domain} itself has no effect (it belongs at _dmarc.${domain})`, detail));
  for (const w of parsed.warnings) out.push(f(check, domain, 'warning', `DMARC at ${name}: ${w}`, detail));
  if (effective === 'none') out.push(f(check, domain, 'warning', `DMARC policy is p=none (monitoring only): spoofed mail is delivered`, detail));
  if (r.pct < 100) out.push(f(check, domain, 'warning', `DMARC pct=${r.pct}: the policy applies to ${r.pct}% of failing mail only`, detail));
  if (!inherited && r.sp === 'none' && r.p !== 'none') out.push(f(check, domain, 'warning', `DMARC sp=none leaves subdomains unprotected while p=${r.p}`, detail));
  if (r.rua.length === 0) out.push(f(check, domain, 'warning', 'DMARC has no rua: no aggregate reports are sent', detail));
  const owner = inherited ? org : domain;
  for (const dest of externalDestinations(owner, r)) {
    const authName = `${owner}._report._dmarc.${dest}`;
    const a = await c.resolver.txt(authName);
    const fail3 = dnsFailure(check, domain, `TXT lookup of ${authName}`, a);
    if (fail3) { out.push(fail3); continue; }
    const ok = a.kind === 'ok' && a.records.some((x) => /^v=DMARC1\s*(;|$)/.test(x));
    if (!ok) out.push(f(check, domain, 'warning', `DMARC report destination ${dest} is outside ${owner} and has not authorized it (no v=DMARC1 TXT at ${authName}): its reports are not sent`, { ...detail, destination: dest, authorization: authName }));
  }
  const destinations = [...new Set([...r.rua, ...r.ruf].flatMap((u) => (u.domain === null ? [] : [u.domain])))];
  for (const dest of destinations) {
    const m = await c.resolver.mx(dest);
    if (m.kind === 'ok') continue;
    if (m.kind !== 'none') { out.push(dnsFailure(check, domain, `MX lookup of report destination ${dest}`, m)!); continue; }
    const a = await c.resolver.a(dest);
    if (a.kind === 'none') out.push(f(check, domain, 'warning', `DMARC report destination ${dest} has no MX and no address: reports cannot be delivered`, { ...detail, destination: dest }));
    else if (a.kind !== 'ok') out.push(dnsFailure(check, domain, `address lookup of report destination ${dest}`, a)!);
  }
  if (out.length === 0) out.push(f(check, domain, 'ok', `DMARC p=${effective}${inherited ? ` (from ${org})` : ''}`, detail));
  return out;
}

async function checkMtaSts(domain: string, c: DomainContext, mx: MxFacts): Promise<Finding[]> {
  const check = 'dns.mta-sts';
  const name = `_mta-sts.${domain}`;
  const ans = await c.resolver.txt(name);
  const fail = dnsFailure(check, domain, `TXT lookup of ${name}`, ans);
  if (fail) return [fail];
  const records = ans.kind === 'ok' ? ans.records.filter(isStsRecord) : [];
  if (records.length === 0) {
    const near = ans.kind === 'ok' ? ans.records.filter((r) => /^\s*v\s*=\s*sts/i.test(r)) : [];
    if (near.length > 0) return [f(check, domain, 'critical', `MTA-STS record at ${name} is malformed: "${near[0]}"`, { record: near[0] })];
    return [f(check, domain, 'warning', `${domain} publishes no MTA-STS policy (senders can be downgraded to plaintext)`)];
  }
  if (records.length > 1) return [f(check, domain, 'critical', `${records.length} MTA-STS records at ${name} (RFC 8461 section 3.1: senders treat this as no policy)`, { records })];
  const txt = parseStsTxt(records[0]!);
  if (!txt.ok) return [f(check, domain, 'critical', `MTA-STS syntax error at ${name}: ${txt.error}`, { record: records[0], error: txt.error })];
  const out: Finding[] = [];
  if (txt.warnings.length > 0) out.push(f(check, domain, 'warning', `MTA-STS record: ${txt.warnings.join('; ')}`, { record: records[0] }));
  const unrelated = ans.kind === 'ok' ? ans.records.filter((x) => !isStsRecord(x)) : [];
  if (unrelated.length > 0) out.push(f(check, domain, 'warning', `unrelated TXT record(s) at ${name}: ${unrelated.map((x) => JSON.stringify(x.slice(0, 60))).join(', ')}`, { unrelated }));
  const url = `https://mta-sts.${domain}/.well-known/mta-sts.txt`;
  const res = await c.fetch(url, c.signal);
  if (res.kind === 'unreachable') return [...out, f(check, domain, 'unreachable', `MTA-STS policy ${url} could not be fetched: ${res.error}`, { url })];
  if (res.kind === 'tls') return [...out, f(check, domain, 'critical', `MTA-STS policy host mta-sts.${domain} fails TLS verification: ${res.error}`, { url })];
  if (res.kind === 'broken') return [...out, f(check, domain, 'broken', `MTA-STS policy ${url}: ${res.error}`, { url })];
  if (res.status >= 300 && res.status < 400) return [...out, f(check, domain, 'critical', `MTA-STS policy ${url} answers with a redirect (HTTP ${res.status}); senders must not follow it`, { url, location: res.location })];
  if (res.status !== 200) return [...out, f(check, domain, 'critical', `MTA-STS policy ${url} answers HTTP ${res.status}`, { url })];
  if (!/^text\/plain\s*(;|$)/i.test(res.contentType)) out.push(f(check, domain, 'warning', `MTA-STS policy is served as "${res.contentType}", not text/plain`, { url }));
  const p = parseStsPolicy(res.body);
  if (!p.ok) return [...out, f(check, domain, 'critical', `MTA-STS policy syntax error in ${url}: ${p.error}`, { url, error: p.error, body: res.body.slice(0, 2000) })];
  const policy: StsPolicy = p.policy;
  const detail = { url, id: txt.id, mode: policy.mode, mx: policy.mx, maxAge: policy.maxAge };
  for (const w of p.warnings) out.push(f(check, domain, 'warning', `MTA-STS policy: ${w}`, detail));
  if (policy.mode === 'none') { out.push(f(check, domain, 'warning', 'MTA-STS mode is none (policy withdrawn)', detail)); return out; }
  if (policy.mode === 'testing') out.push(f(check, domain, 'warning', 'MTA-STS mode is testing: failures are reported, not enforced', detail));
  const bad: Severity = policy.mode === 'enforce' ? 'critical' : 'warning';
  const unmatched = mx.hosts.filter((h) => !policy.mx.some((pat) => stsMxMatches(h, pat)));
  if (unmatched.length > 0) out.push(f(check, domain, bad, `MX ${unmatched.join(', ')} of ${domain} match no "mx" pattern of the MTA-STS policy (${policy.mx.join(', ')}): senders ${policy.mode === 'enforce' ? 'refuse to deliver there' : 'report failures'}`, { ...detail, unmatched }));
  for (const host of mx.oursHosts.filter((h) => !unmatched.includes(h))) {
    for (const pr of c.probes) {
      if (pr.chain === null) continue;
      const subject = `${domain} ${host} ${pr.listener.name}`;
      if (!certCoversHost(pr.chain[0]!, host)) out.push(f(check, subject, bad, `listener ${pr.listener.name} serves a certificate that does not cover MX ${host} (names: ${certDnsNames(pr.chain[0]!).join(', ') || 'none'}): MTA-STS senders refuse it`, detail));
      else if (!pr.authorized && pr.authorizationError !== 'ERR_TLS_CERT_ALTNAME_INVALID') out.push(f(check, subject, bad, `listener ${pr.listener.name} serves a certificate that is not trusted (${pr.authorizationError}): MTA-STS senders refuse it`, detail));
    }
  }
  if (!out.some((x) => x.severity !== 'ok')) out.push(f(check, domain, 'ok', `MTA-STS ${policy.mode}, mx ${policy.mx.join(', ')}, consistent with MX and certificates`, detail));
  return out;
}

async function checkTlsRpt(domain: string, c: DomainContext): Promise<Finding[]> {
  const check = 'dns.tls-rpt';
  const name = `_smtp._tls.${domain}`;
  const ans = await c.resolver.txt(name);
  const fail = dnsFailure(check, domain, `TXT lookup of ${name}`, ans);
  if (fail) return [fail];
  const records = ans.kind === 'ok' ? ans.records.filter(isTlsRptRecord) : [];
  if (records.length === 0) {
    const near = ans.kind === 'ok' ? ans.records.filter((r) => /^\s*v\s*=\s*tlsrpt/i.test(r)) : [];
    if (near.length > 0) return [f(check, domain, 'critical', `TLS-RPT record at ${name} is malformed: "${near[0]}"`, { record: near[0] })];
    return [f(check, domain, 'warning', `${domain} publishes no TLS-RPT record (no reports of TLS failures)`)];
  }
  if (records.length > 1) return [f(check, domain, 'critical', `${records.length} TLS-RPT records at ${name} (RFC 8460 section 3: senders use none)`, { records })];
  const p = parseTlsRpt(records[0]!);
  if (!p.ok) return [f(check, domain, 'critical', `TLS-RPT syntax error at ${name}: ${p.error}`, { record: records[0], error: p.error })];
  const out = p.warnings.map((w) => f(check, domain, 'warning', `TLS-RPT: ${w}`, { record: records[0] }));
  out.push(f(check, domain, 'ok', `TLS-RPT reports go to ${p.rua.join(', ')}`, { record: records[0], rua: p.rua }));
  return out;
}

async function checkDane(domain: string, c: DomainContext, mx: MxFacts): Promise<Finding[]> {
  const check = 'dns.dane';
  const out: Finding[] = [];
  for (const host of mx.oursHosts) {
    for (const pr of c.probes) {
      const port = pr.listener.publicPort ?? 25;
      const name = `_${port}._tcp.${host}`;
      const subject = `${name} (${pr.listener.name})`;
      const ans = await c.resolver.tlsa(name);
      const fail = dnsFailure(check, subject, `TLSA lookup of ${name} (DANE senders defer mail when it fails)`, ans);
      if (fail) { out.push(fail); continue; }
      if (ans.kind !== 'ok') continue; // no TLSA: DANE not in use for this host
      if (pr.chain === null) { out.push(f(check, subject, 'critical', `TLSA records published for ${name} but listener ${pr.listener.name} serves no certificate`)); continue; }
      const v = tlsaVerdict(ans.records, pr.chain);
      const detail = { records: ans.records.map((r) => `${r.certUsage} ${r.selector} ${r.match} ${Buffer.from(r.data).toString('hex')}`), unusable: v.unusable, suggested: v.suggested, dnssec: 'not validated (the resolver does not report the AD bit)' };
      if (v.matchedIndex >= 0) out.push(f(check, subject, 'ok', `TLSA record ${detail.records[v.matchedIndex]!.split(' ').slice(0, 3).join(' ')} matches the certificate of ${pr.listener.name}`, detail));
      else if (v.usable === 0) out.push(f(check, subject, 'critical', `no TLSA record at ${name} is usable for SMTP: ${v.unusable.join('; ')}`, detail));
      else out.push(f(check, subject, 'critical', `no TLSA record at ${name} matches the certificate of ${pr.listener.name} (DANE senders refuse to deliver); publish ${v.suggested}`, detail));
    }
  }
  if (out.length === 0 && mx.oursHosts.length > 0) out.push(f(check, domain, 'ok', `no TLSA records for the MX hosts of ${domain} (DANE not used)`));
  return out;
}

async function checkDkim(resolver: AuditResolver, key: AuditDkimKey): Promise<Finding[]> {
  const check = 'dns.dkim';
  const name = `${key.selector}._domainkey.${normName(key.domain)}`;
  const ans = await resolver.txt(name);
  const fail = dnsFailure(check, name, `TXT lookup of ${name}`, ans);
  if (fail) return [fail];
  if (ans.kind !== 'ok') return [f(check, name, 'critical', `no DKIM key record at ${name}: signatures by this key fail`)];
  const records = ans.records.filter((r) => /(^|;)\s*p\s*=/.test(r));
  if (records.length === 0) return [f(check, name, 'critical', `TXT at ${name} is not a DKIM key record`, { records: ans.records })];
  if (records.length > 1) return [f(check, name, 'critical', `${records.length} DKIM key records at ${name}: verifiers may pick the wrong one`, { records })];
  const p = parseDkimKey(records[0]!);
  if (!p.ok) return [f(check, name, 'critical', `DKIM key record syntax error at ${name}: ${p.error}`, { record: records[0], error: p.error })];
  if (p.record.p === '') return [f(check, name, 'critical', `DKIM key at ${name} is revoked (empty p=)`, { record: records[0] })];
  let matches: boolean;
  try {
    matches = dkimKeyMatches(p.record, key.privateKeyPem);
  } catch (err) {
    return [f(check, name, 'broken', `the configured private key for ${name} cannot be read: ${(err as Error).message}`)];
  }
  if (!matches) return [f(check, name, 'critical', `DKIM key at ${name} does not match the configured private key: signatures fail`, { k: p.record.k })];
  const out = p.warnings.map((w) => f(check, name, 'warning', `DKIM key at ${name}: ${w}`));
  out.push(f(check, name, 'ok', `DKIM key at ${name} matches the signing key (${p.record.k})`));
  return out;
}
