/**
 * `relayguard config check`: lints a valid Config for open-relay and credential hazards before it goes live.
 * Errors are hazards (the command fails); warnings are worth a look. The only I/O is one stat of the data
 * directory (injectable for tests).
 */
import { statSync } from 'node:fs';
import ipaddr from 'ipaddr.js';
import type { Config } from './schema.ts';

export type Severity = 'error' | 'warning';

export interface Finding {
  readonly severity: Severity;
  /** Key path of the offending setting, e.g. "trustedNetworks[2]". */
  readonly key: string;
  /** Stable code, see CHECKS. */
  readonly code: string;
  readonly message: string;
}

export interface CheckDescription {
  readonly code: string;
  readonly severity: Severity | 'error or warning';
  readonly summary: string;
}

/** Every finding `checkConfig` can report (also rendered into docs/configuration.md). */
export const CHECKS: readonly CheckDescription[] = Object.freeze([
  { code: 'trusted-network-public', severity: 'error', summary: 'A trustedNetworks entry is not inside loopback or private space (127/8, ::1, 10/8, 172.16/12, 192.168/16, 100.64/10, 169.254/16, fc00::/7, fe80::/10): every host in it may relay. 0.0.0.0/0 is an open relay.' },
  { code: 'auth-without-tls', severity: 'error', summary: 'smtp.requireTlsForAuth is false: passwords may cross the network in clear text.' },
  { code: 'submission-without-tls', severity: 'error or warning', summary: 'A submission listener has tls: none. Error when AUTH without TLS is allowed; otherwise a warning that AUTH (and so submission) can never succeed there.' },
  { code: 'relay-rules-no-final-reject', severity: 'error', summary: 'relayRules does not end with a catch-all reject (a rule whose match is empty).' },
  { code: 'relay-rule-sender-only', severity: 'error', summary: 'A relay rule matches only on senderDomain: envelope senders are forged at will, so it is an open relay for anyone who names that domain.' },
  { code: 'relay-rule-matches-all', severity: 'error', summary: 'A relay rule has an empty match: it relays for everyone.' },
  { code: 'relay-rule-public-network', severity: 'error', summary: 'A relay rule grants relay to a network outside loopback and private space.' },
  { code: 'relay-rule-unreachable', severity: 'warning', summary: 'A relay rule follows a catch-all rule and can never match.' },
  { code: 'trusted-proxy-any', severity: 'error', summary: 'trustedProxies contains 0.0.0.0/0 or ::/0 while a listener accepts PROXY headers: any client can claim to be 127.0.0.1 and relay.' },
  { code: 'trusted-proxy-public', severity: 'warning', summary: 'A trustedProxies entry is a public range; PROXY headers from it decide client identity (and relay permission).' },
  { code: 'proxy-without-trusted-proxies', severity: 'warning', summary: 'A listener has proxyProtocol on but trustedProxies is empty: every connection to it will be refused.' },
  { code: 'trusted-proxies-unused', severity: 'warning', summary: 'trustedProxies is set but no listener has proxyProtocol.' },
  { code: 'mx-public-trusted-networks', severity: 'warning', summary: 'An mx listener binds a non-loopback address while trustedNetworks reaches beyond loopback: hosts in those networks relay without AUTH from the outside-facing port.' },
  { code: 'relay-local-overlap', severity: 'warning', summary: 'A domain is in both localDomains and relayDomains.' },
  { code: 'listener-port-role', severity: 'warning', summary: 'A listener role does not match its well-known port (mx on 587/465, submission on 25).' },
  { code: 'implicit-tls-port', severity: 'warning', summary: 'Port 465 without implicit TLS, or implicit TLS on port 25/587.' },
  { code: 'self-signed-public', severity: 'warning', summary: 'A non-loopback TLS listener would use the generated self-signed certificate (tls.cert is null).' },
  { code: 'no-listeners', severity: 'warning', summary: 'listeners is empty: no SMTP service runs.' },
  { code: 'hostname-not-fqdn', severity: 'warning', summary: 'hostname is not a fully qualified domain name; other servers may refuse its EHLO.' },
  { code: 'timeout-below-rfc', severity: 'warning', summary: 'limits.idleTimeout is below the 5 minutes RFC 5321 section 4.5.3.2.7 asks of a server.' },
  { code: 'recipients-below-rfc', severity: 'warning', summary: 'limits.recipients is below the 100 recipients RFC 5321 section 4.5.3.1.8 requires.' },
  { code: 'limits-per-ip-over-total', severity: 'warning', summary: 'limits.connectionsPerIp exceeds limits.connections.' },
  { code: 'web-public', severity: 'warning', summary: 'The admin dashboard and API bind a non-loopback address without web.tls.' },
  { code: 'postmaster-unset', severity: 'warning', summary: 'Real local domains are configured but recipients.postmaster is not set: postmaster@ and abuse@ mail (RFC 5321, RFC 2142) is kept in the mailbox postmaster@<first local domain>, which nobody may read.' },
  { code: 'remote-alias-targets', severity: 'warning', summary: 'recipients.allowRemoteAliasTargets is on: alias files may forward mail outside, and a mistake there forwards a stranger\'s mail to a third party.' },
  { code: 'audit-remote-plain-http', severity: 'warning', summary: 'A remote vantage point of the audit (audit.relay.vantage) is reached over plain http at a host that is not a loopback or private address: its API token crosses the network in clear.' },
  { code: 'audit-remote-token-permissions', severity: 'warning', summary: 'The token file of a remote vantage point is readable by its group or other users (an admin token of the remote relayguard); it should be mode 0600.' },
  { code: 'data-dir-permissions', severity: 'warning', summary: 'The data directory (password hashes, queued mail, TLS key) is accessible to its group or to other users; it should be mode 0700 (like `postfix check`).' },
]);

export interface CheckOptions {
  /** The permission bits of a path, or null when it does not exist (default: fs.statSync). */
  readonly statMode?: (path: string) => number | null;
}

function statMode(path: string): number | null {
  try {
    return statSync(path).mode & 0o7777;
  } catch {
    return null;
  }
}

// Address space a trusted network may lie in: loopback, RFC 1918, CGNAT, link-local, unique-local.
const PRIVATE_RANGES = [
  '127.0.0.0/8', '10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '100.64.0.0/10', '169.254.0.0/16',
  '::1/128', 'fc00::/7', 'fe80::/10',
].map((c) => ipaddr.parseCIDR(c));
const LOOPBACK_RANGES = ['127.0.0.0/8', '::1/128'].map((c) => ipaddr.parseCIDR(c));

function within(cidr: string, ranges: readonly [ipaddr.IPv4 | ipaddr.IPv6, number][]): boolean {
  let net: [ipaddr.IPv4 | ipaddr.IPv6, number];
  try {
    net = ipaddr.parseCIDR(cidr.includes('/') ? cidr : `${cidr}/${cidr.includes(':') ? 128 : 32}`);
  } catch {
    return false;
  }
  const [addr, prefix] = net;
  return ranges.some(([r, rp]) => r.kind() === addr.kind() && prefix >= rp && addr.match(r, rp));
}

const isPrivate = (cidr: string): boolean => within(cidr, PRIVATE_RANGES);
const isLoopback = (cidr: string): boolean => within(cidr, LOOPBACK_RANGES);
const isCatchAll = (cidr: string): boolean => cidr.endsWith('/0');

/** Lints a parsed config. Findings are ordered: errors first, then warnings, each in key order. */
export function checkConfig(config: Config, options: CheckOptions = {}): Finding[] {
  const out: Finding[] = [];
  const add = (severity: Severity, key: string, code: string, message: string) => out.push({ severity, key, code, message });

  // Trusted networks: the relay permission that needs no password.
  config.trustedNetworks.forEach((n, i) => {
    if (isPrivate(n)) return;
    const what = isCatchAll(n) ? 'every address on the Internet' : 'public address space';
    add('error', `trustedNetworks[${i}]`, 'trusted-network-public', `${n} covers ${what}: every host in it may relay without AUTH (open relay). Limit trustedNetworks to loopback and your private networks`);
  });

  // AUTH and TLS.
  if (!config.smtp.requireTlsForAuth) {
    add('error', 'smtp.requireTlsForAuth', 'auth-without-tls', 'AUTH is accepted without TLS: passwords can be read off the network. Set smtp.requireTlsForAuth: true');
  }
  config.listeners.forEach((l, i) => {
    if (l.role !== 'submission' || l.tls !== 'none') return;
    if (config.smtp.requireTlsForAuth) {
      add('warning', `listeners[${i}].tls`, 'submission-without-tls', `Submission listener "${l.name}" has no TLS, and AUTH requires TLS: no one can ever authenticate (and so submit) there`);
    } else {
      add('error', `listeners[${i}].tls`, 'submission-without-tls', `Submission listener "${l.name}" has no TLS: AUTH happens in clear text`);
    }
  });

  // Relay rules.
  const rules = config.relayRules;
  let catchAllAt = -1;
  rules.forEach((r, i) => {
    const key = `relayRules[${i}]`;
    const { network, senderDomain, recipientDomain } = r.match;
    const empty = network === undefined && senderDomain === undefined && recipientDomain === undefined;
    if (catchAllAt >= 0) {
      add('warning', key, 'relay-rule-unreachable', `Rule ${i} can never match: relayRules[${catchAllAt}] matches everything before it`);
    }
    if (r.action === 'relay') {
      if (empty) add('error', `${key}.match`, 'relay-rule-matches-all', `Rule ${i} relays for everyone (empty match): open relay`);
      else if (network === undefined && recipientDomain === undefined) {
        add('error', `${key}.match.senderDomain`, 'relay-rule-sender-only', `Rule ${i} relays on the sender domain "${senderDomain}" alone; senders are forged at will, so anyone can relay. Match a network or a recipient domain`);
      }
      if (network !== undefined && !isPrivate(network)) {
        add('error', `${key}.match.network`, 'relay-rule-public-network', `Rule ${i} relays for ${network}, which is public address space`);
      }
    }
    if (empty && catchAllAt < 0) catchAllAt = i;
  });
  if (rules.length > 0) {
    const last = rules[rules.length - 1]!;
    const m = last.match;
    const lastIsCatchAllReject = last.action === 'reject' && m.network === undefined && m.senderDomain === undefined && m.recipientDomain === undefined;
    if (!lastIsCatchAllReject) {
      add('error', `relayRules[${rules.length - 1}]`, 'relay-rules-no-final-reject', 'relayRules must end with a catch-all reject, e.g. "- action: reject"');
    }
  }

  // PROXY protocol: the header decides the client address, and so trustedNetworks membership.
  const proxyListeners = config.listeners.filter((l) => l.proxyProtocol);
  config.trustedProxies.forEach((n, i) => {
    if (isCatchAll(n) && proxyListeners.length > 0) {
      add('error', `trustedProxies[${i}]`, 'trusted-proxy-any', `${n} lets any client send a PROXY header and claim a trusted address (open relay)`);
    } else if (!isPrivate(n)) {
      add('warning', `trustedProxies[${i}]`, 'trusted-proxy-public', `${n} is public address space; only your own load balancers should be trusted proxies`);
    }
  });
  if (proxyListeners.length > 0 && config.trustedProxies.length === 0) {
    config.listeners.forEach((l, i) => {
      if (l.proxyProtocol) add('warning', `listeners[${i}].proxyProtocol`, 'proxy-without-trusted-proxies', `Listener "${l.name}" expects PROXY headers but trustedProxies is empty: every connection will be refused`);
    });
  }
  if (proxyListeners.length === 0 && config.trustedProxies.length > 0) {
    add('warning', 'trustedProxies', 'trusted-proxies-unused', 'trustedProxies is set but no listener has proxyProtocol: true');
  }

  // Exposure.
  const trustedBeyondLoopback = config.trustedNetworks.filter((n) => !isLoopback(n));
  config.listeners.forEach((l, i) => {
    const publicBind = !isLoopback(l.address);
    if (l.role === 'mx' && publicBind && trustedBeyondLoopback.length > 0) {
      add('warning', `listeners[${i}].address`, 'mx-public-trusted-networks', `MX listener "${l.name}" binds ${l.address} and trustedNetworks includes ${trustedBeyondLoopback.join(', ')}: those hosts relay without AUTH through it`);
    }
    if (l.role === 'mx' && (l.port === 587 || l.port === 465)) {
      add('warning', `listeners[${i}].role`, 'listener-port-role', `Listener "${l.name}" on submission port ${l.port} has role mx (no AUTH required); use role: submission`);
    }
    if (l.role === 'submission' && l.port === 25) {
      add('warning', `listeners[${i}].role`, 'listener-port-role', `Listener "${l.name}" on port 25 has role submission: other servers cannot deliver to it (AUTH required)`);
    }
    if (l.port === 465 && l.tls !== 'implicit') {
      add('warning', `listeners[${i}].tls`, 'implicit-tls-port', `Listener "${l.name}" on port 465 should use tls: implicit (RFC 8314)`);
    }
    if ((l.port === 25 || l.port === 587) && l.tls === 'implicit') {
      add('warning', `listeners[${i}].tls`, 'implicit-tls-port', `Listener "${l.name}" on port ${l.port} uses implicit TLS; clients expect STARTTLS there`);
    }
    if (publicBind && l.tls !== 'none' && config.tls.cert === null) {
      add('warning', 'tls.cert', 'self-signed-public', `Listener "${l.name}" binds ${l.address} with a self-signed certificate; set tls.cert and tls.key`);
    }
  });
  if (config.listeners.length === 0) add('warning', 'listeners', 'no-listeners', 'No SMTP listeners are configured');
  if (config.web.enabled && !isLoopback(config.web.address) && !config.web.tls) {
    add('warning', 'web.address', 'web-public', `The admin dashboard binds ${config.web.address} without web.tls: admin passwords and session cookies would cross the network in clear; set web.tls or keep it on loopback (publish the public pages with web.public)`);
  }

  // Recipients.
  if (config.recipients.postmaster === null && config.localDomains.some((d) => d !== 'localhost')) {
    add('warning', 'recipients.postmaster', 'postmaster-unset', `recipients.postmaster is not set: postmaster@ and abuse@ go to the mailbox postmaster@${config.localDomains[0] ?? '<first local domain>'}; set it to a person who reads mail`);
  }
  if (config.recipients.allowRemoteAliasTargets) {
    add('warning', 'recipients.allowRemoteAliasTargets', 'remote-alias-targets', 'Alias files may forward to remote addresses; check each such entry (the CLI asks --remote per alias instead)');
  }

  // Domains.
  const local = new Set(config.localDomains);
  config.relayDomains.forEach((d, i) => {
    if (local.has(d)) add('warning', `relayDomains[${i}]`, 'relay-local-overlap', `"${d}" is in both localDomains and relayDomains; it is treated as local`);
  });
  if (!config.hostname.includes('.')) {
    add('warning', 'hostname', 'hostname-not-fqdn', `hostname "${config.hostname}" is not fully qualified; set hostname to the name your MX and PTR records use`);
  }

  // Limits.
  if (config.limits.idleTimeout < 300_000) {
    add('warning', 'limits.idleTimeout', 'timeout-below-rfc', `limits.idleTimeout is ${config.limits.idleTimeout / 1000}s; RFC 5321 asks servers to wait at least 5 minutes`);
  }
  if (config.limits.recipients < 100) {
    add('warning', 'limits.recipients', 'recipients-below-rfc', `limits.recipients is ${config.limits.recipients}; RFC 5321 requires accepting at least 100`);
  }
  if (config.limits.connectionsPerIp > config.limits.connections) {
    add('warning', 'limits.connectionsPerIp', 'limits-per-ip-over-total', 'limits.connectionsPerIp exceeds limits.connections');
  }

  // Files: the data directory holds the password hashes, the queue and the TLS key.
  const mode = (options.statMode ?? statMode)(config.dataDir);
  if (mode !== null && (mode & 0o077) !== 0) {
    const who = (mode & 0o007) !== 0 ? 'every local user' : 'its group';
    add('warning', 'dataDir', 'data-dir-permissions', `The data directory ${config.dataDir} is mode ${(mode & 0o777).toString(8).padStart(4, '0')}: ${who} can reach the queue and the password database; chmod 700 ${config.dataDir}`);
  }

  // The audit's remote vantage points: their API tokens.
  config.audit.relay.vantage.forEach((v, i) => {
    if (v.kind !== 'remote') return;
    const key = `audit.relay.vantage${config.audit.relay.vantage.length > 1 ? `[${i}]` : ''}.remote`;
    const url = new URL(v.url);
    const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
    if (url.protocol === 'http:' && !(ipaddr.isValid(host) && isPrivate(host))) {
      add('warning', `${key}.url`, 'audit-remote-plain-http', `${v.url} is plain http to ${host}: the API token of the remote relayguard crosses the network in clear; use https (web.tls there, and ca here)`);
    }
    const tokenMode = (options.statMode ?? statMode)(v.tokenFile);
    if (tokenMode !== null && (tokenMode & 0o077) !== 0) {
      add('warning', `${key}.tokenFile`, 'audit-remote-token-permissions', `${v.tokenFile} is mode ${(tokenMode & 0o777).toString(8).padStart(4, '0')}: other local users can read the remote's admin token; chmod 600 ${v.tokenFile}`);
    }
  });

  return [...out.filter((f) => f.severity === 'error'), ...out.filter((f) => f.severity === 'warning')];
}

/** True when any finding is an error. */
export function hasErrors(findings: readonly Finding[]): boolean {
  return findings.some((f) => f.severity === 'error');
}

/** One line per finding: "error trustedNetworks[0] [trusted-network-public]: ...". */
export function formatFindings(findings: readonly Finding[]): string {
  return findings.map((f) => `${f.severity} ${f.key} [${f.code}]: ${f.message}`).join('\n');
}
