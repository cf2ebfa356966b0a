import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  MAX_TIMER_MS, buildConfig, configSchema, defaultConfig, formatDuration, normalizeCidr, parseDuration, parseHostPort, parseSize,
  renderConfigDocs,
} from './schema.ts';
import { CHECKS } from './check.ts';

const DOCS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../docs/configuration.md');

test('schema: durations', () => {
  const cases: [unknown, number | null][] = [
    [300, 300_000], [0.25, 250], ['300s', 300_000], ['5m', 300_000], ['4h', 14_400_000], ['5d', 432_000_000],
    ['250ms', 250], ['1h30m', 5_400_000], ['2w', 1_209_600_000], ['1.5s', 1500], ['300', 300_000], [' 5m ', 300_000],
    ['5M', null], ['5 m', null], ['m', null], ['', null], ['-5s', null], [-1, null], [Number.NaN, null],
    [Infinity, null], ['5y', null], [true, null], [null, null], ['1e3s', null],
  ];
  for (const [input, expected] of cases) assert.equal(parseDuration(input), expected, String(input));
  assert.equal(formatDuration(300_000), '5m');
  assert.equal(formatDuration(90_000), '90s');
  assert.equal(formatDuration(250), '250ms');
});

test('schema: sizes', () => {
  const cases: [unknown, number | null][] = [
    [26214400, 26214400], ['25MiB', 26_214_400], ['10MB', 10_000_000], ['512 KiB', 524_288], ['100B', 100],
    ['1.5KB', 1500], ['25mib', 26_214_400], ['1000', 1000], ['25M', null], ['0x10', null], ['1e3', null],
    [-1, null], [1.5, null], ['0.1B', null], ['', null], [{}, null],
  ];
  for (const [input, expected] of cases) assert.equal(parseSize(input), expected, String(input));
});

test('schema: networks are canonical and host bits are refused', () => {
  assert.deepEqual(normalizeCidr('10.0.0.0/8'), { ok: true, cidr: '10.0.0.0/8' });
  assert.deepEqual(normalizeCidr('192.0.2.7'), { ok: true, cidr: '192.0.2.7/32' });
  assert.deepEqual(normalizeCidr('::1'), { ok: true, cidr: '::1/128' });
  assert.deepEqual(normalizeCidr('2001:DB8::/32'), { ok: true, cidr: '2001:db8::/32' });
  assert.deepEqual(normalizeCidr('::ffff:10.0.0.0/104'), { ok: true, cidr: '10.0.0.0/8' });
  for (const bad of ['10.0.0.1/8', '10.0.0.0/33', '127.1/8', '010.0.0.0/8', 'x', '10.0.0.0/', '::ffff:10.0.0.0/64', 'fe80::1%eth0/128']) {
    assert.equal(normalizeCidr(bad).ok, false, bad);
  }
  const r = normalizeCidr('10.0.0.1/8');
  assert.ok(!r.ok && r.message.includes('10.0.0.0/8') && r.message.includes('10.0.0.1/32'));
});

test('schema: smart host forms', () => {
  assert.deepEqual(parseHostPort('smtp.example.org'), { host: 'smtp.example.org', port: 25 });
  assert.deepEqual(parseHostPort('SMTP.Example.org:587'), { host: 'smtp.example.org', port: 587 });
  assert.deepEqual(parseHostPort('[192.0.2.1]:2525'), { host: '192.0.2.1', port: 2525 });
  assert.deepEqual(parseHostPort('[2001:db8::1]'), { host: '2001:db8::1', port: 25 });
  for (const bad of ['2001:db8::1', 'host:0', 'host:99999', 'ho st', '[nothost]:25', '']) assert.equal(parseHostPort(bad), null, bad);
});

test('schema: defaultConfig is complete, in ms and bytes, absolute and deeply frozen', () => {
  const c = defaultConfig({ cwd: '/srv/relay' });
  assert.equal(c.configFile, null);
  assert.equal(c.dataDir, '/srv/relay/relayguard-data');
  assert.ok(c.hostname.length > 0);
  assert.deepEqual(c.listeners, [
    { name: 'mx', role: 'mx', address: '127.0.0.1', port: 2525, tls: 'starttls', proxyProtocol: false },
    { name: 'submission', role: 'submission', address: '127.0.0.1', port: 2587, tls: 'starttls', proxyProtocol: false },
    { name: 'submissions', role: 'submission', address: '127.0.0.1', port: 2465, tls: 'implicit', proxyProtocol: false },
  ]);
  assert.deepEqual(c.trustedNetworks, ['127.0.0.0/8', '::1/128']);
  assert.deepEqual(c.trustedProxies, []);
  assert.deepEqual(c.localDomains, ['localhost']);
  assert.deepEqual(c.tls, { cert: null, key: null, minVersion: 'TLSv1.2' });
  assert.deepEqual(c.smtp, { bareLineEndings: 'reject', requireTlsForAuth: true, greetDelay: 0 });
  assert.deepEqual(c.log, { level: 'info', format: 'json' });
  assert.deepEqual(c.store, { postgres: null });
  assert.deepEqual(c.limits, {
    messageSize: 26_214_400, recipients: 1000, errors: 20, connectionsPerIp: 50, connections: 10_000,
    idleTimeout: 300_000, sessionTimeout: 3_600_000, dataTimeout: 600_000, proxyTimeout: 5000, hopCount: 100,
    commandLineLength: 2048, authFailuresPerIp: 10, authFailureWindow: 60_000, shutdownGrace: 30_000,
  });
  assert.deepEqual(c.delivery, {
    enabled: true,
    localTransport: { kind: 'maildir', root: path.join(c.dataDir, 'mailboxes') },
    mxPort: 25,
    dnsServers: [],
    allowPrivateMx: false,
    allowLoopbackMx: false,
    dkim: [],
    smartHost: null,
    bounces: { perRecipient: 10, perDomain: 100, window: 3_600_000 },
    retry: { minimalBackoff: 300_000, maximalBackoff: 14_400_000, lifetime: 432_000_000 },
  });
  assert.deepEqual(c.web, {
    enabled: true, address: '127.0.0.1', port: 8025, tls: false, public: null, publicUrl: null,
    ordb: { lookupsPerMinute: 60, delistingPerClientPerHour: 5, delistingPerAddressPerHour: 2 },
    sessionLifetime: 43_200_000, loginFailuresPerIp: 5, loginFailureWindow: 900_000,
    decisionRetention: { maxAge: 604_800_000, maxRows: 1_000_000 },
    tester: { enabled: true, maxConcurrent: 2, allowTargets: [], ports: [25, 587, 465], sourceAddress: null, budget: 300_000, keepRuns: 1000, proof: null },
  });
  assert.deepEqual(c.dnsbl, {
    enabled: true, zone: 'relays.localhost', listen: { address: '127.0.0.1', port: 5353 },
    ttl: 2_100_000, evidenceUrl: 'http://127.0.0.1:8025/dnsbl/lookup?ip=$', axfrAllow: [], nameservers: [], soa: { contact: null, refresh: 3_600_000, retry: 600_000, expire: 259_200_000, minimum: 300_000 }, notify: [], tsigKeys: [], transferRequiresTsig: null,
    probeDomain: null, sink: { address: '0.0.0.0', port: 25 }, probeWait: 60_000, testPorts: [25, 587, 465],
    proxySink: { address: '127.0.0.1', port: 0 }, proxyProbeAddress: null, proxyPorts: [80, 81, 1080, 3128, 8000, 8080, 8081, 8888, 23],
    nntpPorts: [119, 563], nntpGroup: null,
    sourceAddress: null, testBudget: 300_000, retestInterval: 604_800_000, retryInterval: 3_600_000,
    submissionsPerHour: 10, excluded: [], allowPrivateTargets: false, schedulerInterval: 60_000, testConcurrency: 2, jobLease: 60_000, udpThreads: 1,
    tcp: { maxConnections: 128, maxConnectionsPerClient: 16, idleTimeout: 10_000, sessionTimeout: 60_000 },
  });
  assert.equal(c.dnsblThreshold, 1);
  assert.deepEqual(c.dnsblResolver, { servers: [], timeout: 5000, minTtl: 60_000, maxTtl: 3_600_000, negativeTtl: 60_000, healthCheckInterval: 600_000 });
  assert.ok(Object.isFrozen(c) && Object.isFrozen(c.listeners) && Object.isFrozen(c.listeners[0]) && Object.isFrozen(c.limits));
  assert.throws(() => { (c.trustedNetworks as string[]).push('0.0.0.0/0'); }, TypeError);
  // A fresh object each time: no shared mutable state between callers.
  assert.notEqual(defaultConfig(), defaultConfig());
});

test('schema: timer durations are capped at the longest Node.js timer', () => {
  assert.equal(configSchema.safeParse({ limits: { idleTimeout: '24d' } }).success, true);
  assert.equal(configSchema.safeParse({ limits: { idleTimeout: '25d' } }).success, false);
  assert.equal(MAX_TIMER_MS, 2_147_483_647);
  assert.equal(configSchema.safeParse({ delivery: { retry: { lifetime: '30d' } } }).success, true);
});

test('schema: log.format is json or text', () => {
  assert.equal(configSchema.safeParse({ log: { format: 'text' } }).success, true);
  assert.equal(configSchema.safeParse({ log: { format: 'json', level: 'debug' } }).success, true);
  assert.equal(configSchema.safeParse({ log: { format: 'syslog' } }).success, false);
});

test('schema: store.postgres is null (embedded SQLite) or a postgres URL with a pool size', () => {
  const parse = (store: unknown) => configSchema.safeParse({ store });
  assert.equal(parse({}).success, true);
  assert.equal(parse({ postgres: null }).success, true);
  const ok = parse({ postgres: { url: 'postgresql://relayguard@db.example.org:5432/relayguard?sslmode=verify-full' } });
  assert.ok(ok.success);
  assert.deepEqual(ok.data.store.postgres, { url: 'postgresql://relayguard@db.example.org:5432/relayguard?sslmode=verify-full', poolSize: 10, leaseTime: 30_000 });
  assert.equal(parse({ postgres: { url: 'postgres://x', leaseTime: '2m' } }).data?.store.postgres?.leaseTime, 120_000);
  assert.equal(parse({ postgres: { url: 'postgres://x', leaseTime: '10ms' } }).success, false, 'a lease shorter than 1 s');
  assert.equal(parse({ postgres: { url: 'postgres:///relayguard?host=/run/postgresql', poolSize: 4 } }).success, true);
  for (const bad of [{ postgres: {} }, { postgres: { url: 'mysql://x' } }, { postgres: { url: 'postgres://a b' } }, { postgres: { url: 'postgres://x', poolSize: 0 } }, { postgres: { url: 'postgres://x', pool: 1 } }, { sqlite: {} }]) {
    assert.equal(parse(bad).success, false, JSON.stringify(bad));
  }
});

test('schema: docs/configuration.md is generated from the schema and up to date', () => {
  const expected = renderConfigDocs({ checks: CHECKS });
  if (process.env.RELAYGUARD_UPDATE_DOCS === '1') {
    mkdirSync(path.dirname(DOCS), { recursive: true });
    writeFileSync(DOCS, expected);
  }
  const actual = readFileSync(DOCS, 'utf8');
  assert.equal(actual, expected, 'docs/configuration.md is stale: run RELAYGUARD_UPDATE_DOCS=1 node --test src/config/schema.test.ts');
  // Every top-level key and every check code is documented.
  for (const key of Object.keys(configSchema.shape)) assert.ok(actual.includes(`### \`${key}\``), key);
  for (const c of CHECKS) assert.ok(actual.includes(`\`${c.code}\``), c.code);
});

test('dnsbl.evidenceUrl: an explicit value (or null) wins; unset, the lookup page of web.publicUrl, web.public or the admin listener', () => {
  const url = (input: Record<string, unknown>): string | null => buildConfig(configSchema.parse({ hostname: 'mx.example.org', ...input }), { baseDir: '/tmp' }).dnsbl.evidenceUrl;
  assert.equal(url({}), 'http://127.0.0.1:8025/dnsbl/lookup?ip=$');
  assert.equal(url({ dnsbl: { evidenceUrl: 'https://bl.example/e?$' } }), 'https://bl.example/e?$');
  assert.equal(url({ dnsbl: { evidenceUrl: null } }), null);
  assert.equal(url({ web: { public: { address: '192.0.2.5', port: 8080 } } }), 'http://192.0.2.5:8080/dnsbl/lookup?ip=$');
  assert.equal(url({ web: { tls: true, public: { address: '0.0.0.0', port: 443 } } }), 'https://mx.example.org/dnsbl/lookup?ip=$');
  assert.equal(url({ web: { public: { address: '2001:db8::5', port: 80 } } }), 'http://[2001:db8::5]/dnsbl/lookup?ip=$');
  assert.equal(url({ web: { publicUrl: 'https://ordb.example.org/', public: { address: '192.0.2.5', port: 8080 } } }), 'https://ordb.example.org/dnsbl/lookup?ip=$');
  assert.equal(url({ web: { enabled: false } }), null, 'no web service, no page to link');
  assert.equal(url({ web: { enabled: false, publicUrl: 'https://ordb.example.org' } }), 'https://ordb.example.org/dnsbl/lookup?ip=$');
  for (const bad of ['ftp://ordb.example.org', 'https://ordb.example.org/?x=1', 'ordb.example.org', 'https://u:p@ordb.example.org']) {
    assert.equal(configSchema.safeParse({ web: { publicUrl: bad } }).success, false, bad);
  }
});

test('schema: audit.relay.vantage is local, a remote, or a list; paths resolve against the config folder', () => {
  const parse = (vantage: unknown) => buildConfig(configSchema.parse({ audit: { relay: { vantage } } }), { baseDir: '/etc/rg' }).audit.relay.vantage;
  assert.deepEqual(defaultConfig().audit.relay.vantage, [{ kind: 'local' }]);
  assert.deepEqual(parse('local'), [{ kind: 'local' }]);
  assert.deepEqual(parse({ remote: { url: 'https://mx2.example.net:8025', tokenFile: 'mx2.token', ca: '/etc/ssl/mx2.pem', proof: true } }), [
    { kind: 'remote', url: 'https://mx2.example.net:8025', tokenFile: '/etc/rg/mx2.token', ca: '/etc/ssl/mx2.pem', proof: true, host: null },
  ]);
  assert.deepEqual(parse(['local', { remote: { url: 'http://10.0.0.2:8025', tokenFile: '/t', host: '192.0.2.7' } }]), [
    { kind: 'local' }, { kind: 'remote', url: 'http://10.0.0.2:8025', tokenFile: '/t', ca: null, proof: false, host: '192.0.2.7' },
  ]);
  for (const bad of ['remote', { remote: { url: 'ftp://x.example', tokenFile: '/t' } }, { remote: { url: 'https://u:p@x.example', tokenFile: '/t' } },
    { remote: { url: 'https://x.example' } }, { remote: { url: 'https://x.example', tokenFile: '/t', token: 'rgt_x' } }, [],
    { remote: { url: 'https://x.example', tokenFile: '/t', host: 'not a host' } }]) {
    assert.equal(configSchema.safeParse({ audit: { relay: { vantage: bad } } }).success, false, JSON.stringify(bad));
  }
});
