import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { RelayguardError } from '../core/errors.ts';
import { ConfigError, formatKeyPath, loadConfig, parseConfig, parseConfigText } from './load.ts';

function withDir(fn: (dir: string) => void): void {
  const dir = mkdtempSync(path.join(tmpdir(), 'relayguard-config-'));
  try {
    fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function configError(text: string): ConfigError {
  try {
    parseConfigText(text, { file: '/etc/relayguard/relayguard.yaml' });
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    assert.equal(err.code, 'ERR_CONFIG_INVALID');
    assert.ok(err instanceof RelayguardError);
    return err;
  }
  assert.fail('expected a ConfigError');
}

test('load: no file gives the defaults, relative to cwd', () => {
  const c = loadConfig({ cwd: '/srv/x' });
  assert.equal(c.dataDir, '/srv/x/relayguard-data');
  assert.equal(c.configFile, null);
  assert.equal(c.listeners.length, 3);
});

test('load: a file is read, relative paths resolve against its folder', () => {
  withDir((dir) => {
    mkdirSync(path.join(dir, 'etc'));
    writeFileSync(path.join(dir, 'etc', 'relayguard.yaml'), [
      'hostname: Mail.Example.ORG',
      'dataDir: ../data',
      'tls: { cert: certs/cert.pem, key: /abs/key.pem, minVersion: TLSv1.3 }',
      'listeners:',
      '  - { role: mx, address: 0.0.0.0, port: 25 }',
      '  - { role: submission, address: "::", tls: implicit }',
      '  - { name: sub2, role: submission, port: 587, proxyProtocol: true }',
      'trustedNetworks: [127.0.0.0/8, "::1", 10.0.0.0/8, 10.0.0.0/8, "::ffff:192.168.0.0/112"]',
      'trustedProxies: [10.1.2.3]',
      'localDomains: [Example.ORG., bücher.example]',
      'limits: { messageSize: 10MiB, idleTimeout: 5m, dataTimeout: 900, authFailureWindow: 2m }',
      'delivery: { smartHost: "[192.0.2.25]:2525", retry: { minimalBackoff: 1m } }',
      'relayRules:',
      '  - { match: { network: 192.168.5.0/24, recipientDomain: partner.example }, action: relay }',
      '  - action: reject',
      '',
    ].join('\n'));
    const c = loadConfig({ file: 'etc/relayguard.yaml', cwd: dir });
    assert.equal(c.configFile, path.join(dir, 'etc', 'relayguard.yaml'));
    assert.equal(c.hostname, 'mail.example.org');
    assert.equal(c.dataDir, path.join(dir, 'data'));
    assert.deepEqual(c.tls, { cert: path.join(dir, 'etc', 'certs', 'cert.pem'), key: '/abs/key.pem', minVersion: 'TLSv1.3' });
    assert.deepEqual(c.listeners, [
      { name: 'mx-25', role: 'mx', address: '0.0.0.0', port: 25, tls: 'starttls', proxyProtocol: false },
      { name: 'submission-2465', role: 'submission', address: '::', port: 2465, tls: 'implicit', proxyProtocol: false },
      { name: 'sub2', role: 'submission', address: '127.0.0.1', port: 587, tls: 'starttls', proxyProtocol: true },
    ]);
    assert.deepEqual(c.trustedNetworks, ['127.0.0.0/8', '::1/128', '10.0.0.0/8', '192.168.0.0/16']);
    assert.deepEqual(c.trustedProxies, ['10.1.2.3/32']);
    assert.deepEqual(c.localDomains, ['example.org', 'xn--bcher-kva.example']);
    assert.equal(c.limits.messageSize, 10 * 1024 * 1024);
    assert.equal(c.limits.idleTimeout, 300_000);
    assert.equal(c.limits.dataTimeout, 900_000);
    assert.equal(c.limits.authFailureWindow, 120_000);
    assert.equal(c.limits.recipients, 1000);
    assert.deepEqual(c.delivery.smartHost, { host: '192.0.2.25', port: 2525 });
    assert.equal(c.delivery.retry.minimalBackoff, 60_000);
    assert.deepEqual(c.relayRules, [
      { match: { network: '192.168.5.0/24', recipientDomain: 'partner.example' }, action: 'relay' },
      { match: {}, action: 'reject' },
    ]);
  });
});

test('load: an empty file or a comment-only file gives the defaults', () => {
  assert.equal(parseConfigText('', { file: '/x/relayguard.yaml' }).dataDir, '/x/relayguard-data');
  assert.equal(parseConfigText('# nothing yet\n', { file: '/x/relayguard.yaml' }).listeners.length, 3);
});

test('load: schema errors name the file, the key path and the problem, one line each', () => {
  const err = configError([
    'listeners:',
    '  - { role: mx }',
    '  - { role: submission, port: 70000 }',
    'limits:',
    '  idleTimeout: soon',
    '  recipients: 1.5',
    '',
  ].join('\n'));
  assert.equal(err.file, '/etc/relayguard/relayguard.yaml');
  const lines = err.message.split('\n');
  assert.equal(lines[0], 'Invalid configuration in /etc/relayguard/relayguard.yaml:');
  assert.ok(lines.includes('  listeners[1].port: must be at most 65535, got 70000 (line 3)'), err.message);
  assert.ok(lines.some((l) => l.startsWith('  limits.idleTimeout: "soon" is not a duration') && l.endsWith('(line 5)')), err.message);
  assert.ok(lines.includes('  limits.recipients: expected an integer, got 1.5 (line 6)'), err.message);
  assert.equal(lines.length, 4);
  // In file order.
  assert.deepEqual(err.issues.map((i) => i.path), ['listeners[1].port', 'limits.idleTimeout', 'limits.recipients']);
});

test('load: unknown keys are errors, with a suggestion for typos', () => {
  const err = configError('trustedNetwork: [10.0.0.0/8]\nlimits: { message_size: 1000, bogus: 1 }\nlisteners: [{ role: mx, tsl: none }]\n');
  assert.match(err.message, /^ {2}trustedNetwork: unknown key \(did you mean "trustedNetworks"\?\) \(line 1\)$/m);
  assert.match(err.message, /^ {2}limits\.message_size: unknown key \(did you mean "messageSize"\?\) \(line 2\)$/m);
  assert.match(err.message, /^ {2}limits\.bogus: unknown key \(line 2\)$/m);
  assert.match(err.message, /^ {2}listeners\[0\]\.tsl: unknown key \(did you mean "tls"\?\) \(line 3\)$/m);
});

test('load: enum, type and required errors read well', () => {
  const err = configError('listeners: [{ address: 127.0.0.1 }, { role: relay }]\nsmtp: { bareLineEndings: fix, requireTlsForAuth: "yes" }\nlocalDomains: localhost\n');
  assert.match(err.message, /listeners\[0\]\.role: is required/);
  assert.match(err.message, /listeners\[1\]\.role: must be one of "mx", "submission", got "relay"/);
  assert.match(err.message, /smtp\.bareLineEndings: must be one of "reject", "normalize", got "fix"/);
  assert.match(err.message, /smtp\.requireTlsForAuth: expected true or false, got "yes"/);
  assert.match(err.message, /localDomains: expected a list, got "localhost"/);
});

test('load: value grammar errors', () => {
  const err = configError([
    'trustedNetworks: [10.0.0.1/8, 127.1/8]',
    'localDomains: ["bad domain", "-x.example"]',
    'listeners: [{ role: mx, address: localhost }]',
    'limits: { messageSize: 25M, commandLineLength: 100 }',
    'tls: { cert: a.pem }',
    'delivery: { smartHost: "2001:db8::1", retry: { minimalBackoff: 5h } }',
  ].join('\n'));
  assert.match(err.message, /trustedNetworks\[0\]: "10\.0\.0\.1\/8" has host bits set; write 10\.0\.0\.0\/8 for the network or 10\.0\.0\.1\/32/);
  assert.match(err.message, /trustedNetworks\[1\]: "127\.1\/8" is not a network/);
  assert.match(err.message, /localDomains\[0\]: "bad domain" is not a valid mail domain/);
  assert.match(err.message, /localDomains\[1\]: "-x\.example" is not a valid mail domain/);
  assert.match(err.message, /listeners\[0\]\.address: "localhost" is not an IP address/);
  assert.match(err.message, /limits\.messageSize: "25M" is not a size/);
  assert.match(err.message, /limits\.commandLineLength: must be at least 512, got 100/);
  assert.match(err.message, /tls\.key: must be set together with tls\.cert/);
  assert.match(err.message, /delivery\.smartHost: "2001:db8::1" is not "host", "host:port" or "\[ip\]:port"/);
  assert.match(err.message, /delivery\.retry\.minimalBackoff: must not exceed delivery\.retry\.maximalBackoff/);
});

test('load: duplicate listener names and port clashes are caught before start', () => {
  const err = configError([
    'listeners:',
    '  - { name: a, role: mx, port: 25 }',
    '  - { name: a, role: submission, port: 587 }',
    '  - { role: submission, address: 0.0.0.0, port: 25 }',
    'web: { port: 587 }',
    '',
  ].join('\n'));
  assert.match(err.message, /listeners\[1\]\.name: duplicate listener name "a" \(also listeners\[0\]\)/);
  assert.match(err.message, /listeners\[2\]\.port: port 25 on 0\.0\.0\.0 is already used by listeners\[0\]/);
  assert.match(err.message, /web\.port: port 587 on 127\.0\.0\.1 is already used by listeners\[1\]/);
  // Port 0 (ephemeral) never clashes, and a disabled service does not bind.
  const ok = parseConfigText('listeners: [{ role: mx, port: 0 }, { role: submission, port: 0 }]\nweb: { enabled: false, port: 0 }\n');
  assert.equal(ok.listeners.length, 2);
});

test('load: the web tester\'s probe sink clashes with the ORDB\'s on the same port; web.tester keys are typed', () => {
  const err = configError('dnsbl: { probeDomain: probes.example.org }\nweb: { tester: { proof: { probeDomain: web-probes.example.org } } }\n');
  assert.match(err.message, /web\.tester\.proof\.sink\.port: port 25 on 0\.0\.0\.0 is already used by dnsbl\.sink/);
  const bad = configError('web: { tester: { maxConcurrent: 0, allowTargets: [not-a-network], budget: soon } }\n');
  assert.match(bad.message, /web\.tester\.maxConcurrent/);
  assert.match(bad.message, /web\.tester\.allowTargets\[0\]/);
  assert.match(bad.message, /web\.tester\.budget/);
  const ok = parseConfigText('web: { tester: { allowTargets: [127.0.0.0/8], proof: { probeDomain: p.example.org, sink: { port: 2526 }, wait: 10s } } }\n');
  assert.deepEqual(ok.web.tester.allowTargets, ['127.0.0.0/8']);
  assert.deepEqual(ok.web.tester.proof, { probeDomain: 'p.example.org', sink: { address: '0.0.0.0', port: 2526 }, wait: 10_000 });
});

test('load: YAML syntax errors, duplicate keys, tags and multiple documents', () => {
  let err = configError('listeners: [\n');
  assert.match(err.message, /^ {2}\(top level\): YAML: .+\(line \d+\)$/m);
  err = configError('hostname: a.example\nhostname: b.example\n');
  assert.match(err.message, /YAML: Map keys must be unique at line 2, column 1 \(line 2\)/);
  err = configError('hostname: !!js/function "f"\n');
  assert.match(err.message, /YAML: Unresolved tag/);
  err = configError('hostname: a.example\n---\nhostname: b.example\n');
  assert.match(err.message, /multiple documents/);
});

test('load: a top level that is not a mapping is refused', () => {
  assert.match(configError('- a\n- b\n').message, /\(top level\): expected a mapping of keys, got a list/);
  assert.match(configError('just text\n').message, /\(top level\): expected a mapping of keys, got "just text"/);
});

test('load: __proto__ keys cannot pollute anything', () => {
  const err = configError('__proto__: { requireTlsForAuth: false }\nsmtp: { __proto__: { x: 1 } }\n');
  assert.match(err.message, /unknown key/);
  assert.equal(({} as Record<string, unknown>).requireTlsForAuth, undefined);
});

test('load: missing and unreadable files have their own codes', () => {
  withDir((dir) => {
    assert.throws(() => loadConfig({ file: 'nope.yaml', cwd: dir }), (e: unknown) => e instanceof RelayguardError && e.code === 'ERR_CONFIG_NOT_FOUND' && e.message.includes(path.join(dir, 'nope.yaml')));
    assert.throws(() => loadConfig({ file: dir }), (e: unknown) => e instanceof RelayguardError && e.code === 'ERR_CONFIG_READ');
  });
});

test('load: parseConfig validates plain objects', () => {
  const c = parseConfig({ limits: { messageSize: '1MB' } }, { baseDir: '/base' });
  assert.equal(c.limits.messageSize, 1_000_000);
  assert.equal(c.dataDir, '/base/relayguard-data');
  assert.throws(() => parseConfig({ limits: { messageSize: 10 } }), /Invalid configuration:\n {2}limits\.messageSize: "?10"? is too small/);
});

test('load: long issue lists are capped', () => {
  const many = Array.from({ length: 60 }, (_, i) => `k${i}: 1`).join('\n');
  const err = configError(many);
  assert.equal(err.issues.length, 60);
  assert.match(err.message, /\.\.\. and 10 more$/);
});

test('load: formatKeyPath', () => {
  assert.equal(formatKeyPath(['listeners', 1, 'port']), 'listeners[1].port');
  assert.equal(formatKeyPath(['a b', 0]), '["a b"][0]');
  assert.equal(formatKeyPath([]), '');
});
