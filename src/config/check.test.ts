import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CHECKS, checkConfig, formatFindings, hasErrors, type Finding } from './check.ts';
import { parseConfig } from './load.ts';

/** Lints a config given as the YAML-shaped object (hostname set so the FQDN warning stays out of the way). */
function lint(input: Record<string, unknown>): Finding[] {
  return checkConfig(parseConfig({ hostname: 'mail.example.org', ...input }, { baseDir: '/srv' }));
}

function codes(findings: readonly Finding[]): string[] {
  return findings.map((f) => `${f.severity}:${f.code}:${f.key}`);
}

test('check: the built-in defaults are clean', () => {
  assert.deepEqual(lint({}), []);
});

test('check: trusted networks outside private space are open-relay errors', () => {
  const findings = lint({
    trustedNetworks: ['0.0.0.0/0', '10.0.0.0/7', '8.8.8.0/24', '::/0', '2001:db8::/32', '10.20.0.0/16', '172.16.0.0/12', '192.168.1.0/24', 'fd00::/8', 'fe80::/64', '100.64.0.0/10', '127.0.0.1', '172.32.0.0/16'],
  });
  assert.deepEqual(codes(findings.filter((f) => f.code === 'trusted-network-public')), [
    'error:trusted-network-public:trustedNetworks[0]',
    'error:trusted-network-public:trustedNetworks[1]',
    'error:trusted-network-public:trustedNetworks[2]',
    'error:trusted-network-public:trustedNetworks[3]',
    'error:trusted-network-public:trustedNetworks[4]',
    'error:trusted-network-public:trustedNetworks[12]',
  ]);
  assert.match(findings[0]!.message, /every address on the Internet/);
  assert.equal(hasErrors(findings), true);
});

test('check: mapped IPv6 catch-all is folded and caught', () => {
  assert.deepEqual(codes(lint({ trustedNetworks: ['::ffff:0.0.0.0/96'] })), ['error:trusted-network-public:trustedNetworks[0]']);
});

test('check: AUTH without TLS', () => {
  assert.deepEqual(codes(lint({ smtp: { requireTlsForAuth: false } })), ['error:auth-without-tls:smtp.requireTlsForAuth']);
  const plainSubmission = { listeners: [{ role: 'submission', port: 2587, tls: 'none' }] };
  assert.deepEqual(codes(lint(plainSubmission)), ['warning:submission-without-tls:listeners[0].tls']);
  assert.match(lint(plainSubmission)[0]!.message, /can ever authenticate/);
  assert.deepEqual(codes(lint({ ...plainSubmission, smtp: { requireTlsForAuth: false } })), [
    'error:auth-without-tls:smtp.requireTlsForAuth',
    'error:submission-without-tls:listeners[0].tls',
  ]);
  // An mx listener without TLS is not a submission hazard.
  assert.deepEqual(lint({ listeners: [{ role: 'mx', tls: 'none' }] }), []);
});

test('check: relay rules must end in a catch-all reject', () => {
  assert.deepEqual(codes(lint({ relayRules: [{ match: { network: '10.5.0.0/16' }, action: 'relay' }] })), [
    'error:relay-rules-no-final-reject:relayRules[0]',
  ]);
  assert.deepEqual(codes(lint({ relayRules: [{ match: { recipientDomain: 'x.example' }, action: 'reject' }] })), [
    'error:relay-rules-no-final-reject:relayRules[0]',
  ]);
  assert.deepEqual(lint({ relayRules: [{ match: { network: '10.5.0.0/16' }, action: 'relay' }, { action: 'reject' }] }), []);
});

test('check: a sender domain never grants relay', () => {
  const findings = lint({
    relayRules: [
      { match: { senderDomain: 'example.org' }, action: 'relay' },
      { match: { senderDomain: 'example.org', network: '10.0.0.0/8' }, action: 'relay' },
      { match: { senderDomain: 'example.org', recipientDomain: 'partner.example' }, action: 'relay' },
      { match: { senderDomain: 'spam.example' }, action: 'reject' },
      { action: 'reject' },
    ],
  });
  assert.deepEqual(codes(findings), ['error:relay-rule-sender-only:relayRules[0].match.senderDomain']);
});

test('check: relay-for-all, public networks and unreachable rules', () => {
  const findings = lint({
    relayRules: [
      { match: { network: '203.0.113.0/24' }, action: 'relay' },
      { match: {}, action: 'relay' },
      { match: { network: '10.0.0.0/8' }, action: 'relay' },
      { action: 'reject' },
    ],
  });
  assert.deepEqual(codes(findings), [
    'error:relay-rule-public-network:relayRules[0].match.network',
    'error:relay-rule-matches-all:relayRules[1].match',
    'warning:relay-rule-unreachable:relayRules[2]',
    'warning:relay-rule-unreachable:relayRules[3]',
  ]);
});

test('check: PROXY protocol hazards', () => {
  const proxied = [{ role: 'mx', address: '0.0.0.0', port: 25, proxyProtocol: true }];
  const tls = { cert: 'c.pem', key: 'k.pem' };
  assert.deepEqual(codes(lint({ listeners: proxied, tls, trustedProxies: ['0.0.0.0/0'] })), ['error:trusted-proxy-any:trustedProxies[0]']);
  assert.deepEqual(codes(lint({ listeners: proxied, tls, trustedProxies: ['198.51.100.10'] })), ['warning:trusted-proxy-public:trustedProxies[0]']);
  assert.deepEqual(codes(lint({ listeners: proxied, tls, trustedProxies: ['10.0.0.5'] })), []);
  assert.deepEqual(codes(lint({ listeners: proxied, tls })), ['warning:proxy-without-trusted-proxies:listeners[0].proxyProtocol']);
  assert.deepEqual(codes(lint({ trustedProxies: ['10.0.0.5'] })), ['warning:trusted-proxies-unused:trustedProxies']);
  // Without a PROXY listener a catch-all proxy list is inert, but still worth a warning.
  assert.deepEqual(codes(lint({ trustedProxies: ['0.0.0.0/0'] })), [
    'warning:trusted-proxy-public:trustedProxies[0]',
    'warning:trusted-proxies-unused:trustedProxies',
  ]);
});

test('check: exposure warnings', () => {
  const tls = { cert: 'c.pem', key: 'k.pem' };
  assert.deepEqual(codes(lint({ listeners: [{ role: 'mx', address: '0.0.0.0', port: 25 }], trustedNetworks: ['127.0.0.0/8', '10.0.0.0/8'], tls })), [
    'warning:mx-public-trusted-networks:listeners[0].address',
  ]);
  assert.deepEqual(lint({ listeners: [{ role: 'mx', address: '0.0.0.0', port: 25 }], tls }), []);
  assert.deepEqual(codes(lint({ listeners: [{ role: 'mx', address: '192.0.2.1', port: 25 }] })), ['warning:self-signed-public:tls.cert']);
  assert.deepEqual(codes(lint({ listeners: [{ role: 'mx', port: 587 }, { role: 'submission', port: 25 }] })), [
    'warning:listener-port-role:listeners[0].role',
    'warning:listener-port-role:listeners[1].role',
  ]);
  assert.deepEqual(codes(lint({ listeners: [{ role: 'submission', port: 465, tls: 'starttls' }, { role: 'submission', port: 587, tls: 'implicit' }] })), [
    'warning:implicit-tls-port:listeners[0].tls',
    'warning:implicit-tls-port:listeners[1].tls',
  ]);
  assert.deepEqual(codes(lint({ listeners: [] })), ['warning:no-listeners:listeners']);
  assert.deepEqual(codes(lint({ web: { address: '0.0.0.0' } })), ['warning:web-public:web.address']);
});

test('check: domains, hostname and limits', () => {
  assert.deepEqual(codes(lint({ localDomains: ['example.org'], relayDomains: ['Example.org.'], recipients: { postmaster: 'pm@example.org' } })), ['warning:relay-local-overlap:relayDomains[0]']);
  assert.deepEqual(codes(lint({ localDomains: ['example.org'] })), ['warning:postmaster-unset:recipients.postmaster']);
  assert.deepEqual(codes(lint({ recipients: { allowRemoteAliasTargets: true } })), ['warning:remote-alias-targets:recipients.allowRemoteAliasTargets']);
  assert.deepEqual(codes(checkConfig(parseConfig({ hostname: 'mailhost' }))), ['warning:hostname-not-fqdn:hostname']);
  assert.deepEqual(codes(lint({ limits: { idleTimeout: '30s', recipients: 50, connectionsPerIp: 20, connections: 10 } })), [
    'warning:timeout-below-rfc:limits.idleTimeout',
    'warning:recipients-below-rfc:limits.recipients',
    'warning:limits-per-ip-over-total:limits.connectionsPerIp',
  ]);
});

test('check: errors come before warnings, and every code is catalogued', () => {
  const findings = lint({ listeners: [], trustedNetworks: ['8.8.8.8'] });
  assert.deepEqual(findings.map((f) => f.severity), ['error', 'warning']);
  assert.match(formatFindings(findings), /^error trustedNetworks\[0\] \[trusted-network-public\]: 8\.8\.8\.8\/32 covers public address space/);
  const catalogued = new Set(CHECKS.map((c) => c.code));
  const all = [
    ...lint({ trustedNetworks: ['0.0.0.0/0'], smtp: { requireTlsForAuth: false }, listeners: [{ role: 'submission', tls: 'none', port: 25, address: '0.0.0.0', proxyProtocol: true }], trustedProxies: ['0.0.0.0/0'] }),
    ...lint({ relayRules: [{ match: { senderDomain: 'a.example' }, action: 'relay' }, { action: 'relay' }, { action: 'reject' }] }),
  ];
  for (const f of all) assert.ok(catalogued.has(f.code), f.code);
});

test('check: a data directory open to its group or to others is a warning (F4)', () => {
  const config = parseConfig({ hostname: 'mail.example.org', dataDir: '/srv/rg' }, { baseDir: '/srv' });
  const at = (mode: number | null) => checkConfig(config, { statMode: (p) => (p === '/srv/rg' ? mode : null) });
  assert.deepEqual(at(null), [], 'a data directory that does not exist yet is created 0700');
  assert.deepEqual(at(0o700), []);
  assert.deepEqual(codes(at(0o750)), ['warning:data-dir-permissions:dataDir']);
  assert.match(at(0o750)[0]!.message, /mode 0750: its group can reach .*chmod 700 \/srv\/rg/);
  assert.match(at(0o755)[0]!.message, /mode 0755: every local user can reach/);
  assert.deepEqual(codes(at(0o701)), ['warning:data-dir-permissions:dataDir']);
});

test('check: the real data directory is stat()ed', () => {
  const dir = mkdtempSync(join(tmpdir(), 'relayguard-check-'));
  try {
    chmodSync(dir, 0o755);
    const config = parseConfig({ hostname: 'mail.example.org', dataDir: dir }, { baseDir: '/srv' });
    assert.deepEqual(codes(checkConfig(config)), ['warning:data-dir-permissions:dataDir']);
    chmodSync(dir, 0o700);
    assert.deepEqual(checkConfig(config), []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('check: a remote vantage point over plain http off loopback/private space, or a token file others can read, is a warning', () => {
  const remote = (url: string, tokenFile = 'token') => ({ remote: { url, tokenFile } });
  const config = parseConfig({
    hostname: 'mail.example.org',
    audit: { relay: { vantage: ['local', remote('http://mx2.example.net:8025'), remote('http://10.0.0.2:8025'), remote('https://mx3.example.net', '/etc/rg/t3')] } },
  }, { baseDir: '/srv' });
  const at = (modes: Record<string, number>) => checkConfig(config, { statMode: (p) => modes[p] ?? null });
  assert.deepEqual(codes(at({})), ['warning:audit-remote-plain-http:audit.relay.vantage[1].remote.url']);
  assert.match(at({})[0]!.message, /mx2\.example\.net: the API token .* in clear/);
  assert.deepEqual(codes(at({ '/srv/token': 0o600, '/etc/rg/t3': 0o644 })), [
    'warning:audit-remote-plain-http:audit.relay.vantage[1].remote.url', 'warning:audit-remote-token-permissions:audit.relay.vantage[3].remote.tokenFile',
  ]);
  assert.ok(CHECKS.some((c) => c.code === 'audit-remote-plain-http') && CHECKS.some((c) => c.code === 'audit-remote-token-permissions'));
  assert.deepEqual(codes(checkConfig(parseConfig({ hostname: 'mail.example.org', audit: { relay: { vantage: remote('http://127.0.0.1:8025') } } }, { baseDir: '/srv' }), { statMode: () => null })), []);
});
