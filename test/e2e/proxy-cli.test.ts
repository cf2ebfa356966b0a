/**
 * `relayguard test --check ...` and `relayguard scan --check proxy` on the command line: the open-proxy battery
 * in the JSON document (schema relayguard-tester/2: `checks`, `check` per entry, `proxies`), the text report and
 * JUnit; the exit codes; unknown checks refused; `scan --check nntp` in safe mode; a loopback probe address refused for
 * remote targets; scan's responsible-use rules (named ranges, opt-out) for proxies. Loopback only.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { testerMain } from '../../src/cli/tester-commands.ts';
import { startFakeMta, type FakeMta } from '../../src/testing/fake-mta.ts';
import { startFakeProxy, type FakeProxy } from '../../src/testing/fake-proxy.ts';
import { startFakeNntp } from '../../src/testing/fake-nntp.ts';
import { freePort } from '../../src/testing/ports.ts';
import type { RunResult } from '../../src/tester/result.ts';
import type { ProxyTargetResult } from '../../src/tester/proxy/result.ts';

let dir: string;
let open: FakeProxy;
let forbidden: FakeProxy;
let closedMta: FakeMta;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'relayguard-proxy-cli-'));
  open = await startFakeProxy({ behavior: 'http-open' });
  forbidden = await startFakeProxy({ behavior: 'http-forbidden' });
  closedMta = await startFakeMta({ commands: { RCPT: (c) => (/^TO:<postmaster[@>]/i.test(c.arg) ? '250 2.1.5 Ok\r\n' : '554 5.7.1 Relay access denied\r\n') } });
});
after(async () => {
  await Promise.all([open.close(), forbidden.close(), closedMta.close()]);
  await rm(dir, { recursive: true, force: true });
});

async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await testerMain(args, { out: (s) => { out += s.endsWith('\n') ? s : `${s}\n`; }, err: (s) => { err += s.endsWith('\n') ? s : `${s}\n`; } });
  return { code, out, err };
}

const SINK = ['--proxy-sink', '127.0.0.1:0', '--proxy-sink', '[::1]:0', '--proxy-timeout', '2'];

describe('relayguard test --check proxy', () => {
  it('an open proxy: exit 1, JSON schema 2 with checks, check per entry, the proof and the egress address', async () => {
    const r = await cli(['test', '127.0.0.1', '--check', 'proxy', '--proxy-port', String(open.port), ...SINK, '--json']);
    assert.equal(r.code, 1, r.err + r.out);
    const doc = JSON.parse(r.out) as RunResult;
    assert.equal(doc.schema, 'relayguard-tester/2');
    assert.deepEqual(doc.checks, ['proxy']);
    assert.deepEqual(doc.targets, []);
    assert.equal(doc.verdict, 'OPEN');
    const p = doc.proxies[0] as ProxyTargetResult;
    assert.equal(p.check, 'proxy');
    assert.equal(p.address, '127.0.0.1');
    assert.equal(p.verdict, 'OPEN');
    assert.deepEqual([...p.egress].sort(), ['127.0.0.1', '::1']);
    const p01 = p.ports[0]!.attempts.find((a) => a.id === 'P01')!;
    assert.equal(p01.proof?.arrived, true);
    assert.equal(p01.smtp?.bannerMatches, true);
  });

  it('text and JUnit reports carry the proxy verdicts', async () => {
    const junit = join(dir, 'proxy.xml');
    const r = await cli(['test', '127.0.0.1', '--check', 'proxy', '--proxy-port', `${open.port},${forbidden.port}`, ...SINK, '--junit', junit, '--no-color']);
    assert.equal(r.code, 1, r.err);
    assert.match(r.out, /checks proxy/);
    assert.match(r.out, new RegExp(`port ${open.port} http\\s+OPEN`));
    assert.match(r.out, new RegExp(`port ${forbidden.port} http\\s+CLOSED\\s+refused by the proxy`));
    assert.match(r.out, /proof: the sink saw "EHLO rg-[0-9a-f]{8}-\w+\.example\.net" from 127\.0\.0\.1 on its mail port/);
    assert.match(r.out, /verdict: OPEN the proxy connected the tester to its sink/);
    const xml = await readFile(junit, 'utf8');
    assert.match(xml, new RegExp(`<testsuite name="proxy 127.0.0.1:${open.port}" tests="12" failures="5"`));
    assert.match(xml, /<failure type="OPEN"/);
  });

  it('--check smtp,proxy: both batteries in one document; a closed relay and a refusing proxy exit 0', async () => {
    const r = await cli(['test', '127.0.0.1', '--check', 'smtp,proxy', '-p', `${closedMta.port}:mx`, '--source-address', '127.0.0.2', '--no-starttls', '--timeout', '2',
      '--proxy-port', String(forbidden.port), ...SINK, '--json']);
    assert.equal(r.code, 0, r.err + r.out);
    const doc = JSON.parse(r.out) as RunResult;
    assert.deepEqual(doc.checks, ['smtp', 'proxy']);
    assert.equal(doc.targets[0]!.check, 'smtp');
    assert.equal(doc.targets[0]!.verdict, 'CLOSED');
    assert.equal(doc.proxies[0]!.verdict, 'CLOSED');
    assert.equal(doc.proxies[0]!.reason, 'refused');
  });

  it('unknown checks are usage errors (exit 3); scan runs one check at a time', async () => {
    const u = await cli(['test', '127.0.0.1', '--check', 'ftp']);
    assert.equal(u.code, 3);
    assert.match(u.err, /unknown check "ftp"/);
    const two = await cli(['scan', '127.0.0.1', '--check', 'smtp,nntp']);
    assert.equal(two.code, 3);
    assert.match(two.err, /one check at a time/);
  });

  it('scan --check nntp: one JSON line per address with its ports, safe mode (no article is ever posted)', async () => {
    const openNews = await startFakeNntp({ commands: { CAPABILITIES: '500 what\r\n', IHAVE: '435 no\r\n', MODE: '200 ok\r\n', LIST: '215 x\r\nlocal.test 1 1 y\r\n.\r\n', POST: { reply: '340 send it\r\n', then: 'article' } } });
    const readOnly = await startFakeNntp({ greeting: '201 read only\r\n', commands: { CAPABILITIES: '500 what\r\n', IHAVE: '435 no\r\n', MODE: '201 ok\r\n', LIST: '215 x\r\n.\r\n', POST: '440 posting not permitted\r\n' } });
    try {
      const out = join(dir, 'news.jsonl');
      const r = await cli(['scan', '127.0.0.1', '--check', 'nntp', '--nntp-port', String(openNews.port), '--nntp-port', String(readOnly.port), '--timeout', '5', '-o', out, '--no-progress']);
      const lines = (await readFile(out, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
      const target = lines.find((l) => l['type'] === 'target')!;
      assert.equal(target['check'], 'nntp');
      assert.equal(target['address'], '127.0.0.1');
      const ports = target['ports'] as { port: number; verdict: string; reason: string }[];
      assert.deepEqual(ports.map((p) => [p.port, p.verdict]), [[openNews.port, 'INCONCLUSIVE'], [readOnly.port, 'CLOSED']]);
      assert.equal(target['verdict'], 'INCONCLUSIVE', 'a 340 without proof is not OPEN');
      assert.equal(r.code, 2, r.err);
      assert.deepEqual(openNews.articles, [], 'a scan never posts an article');
      assert.equal(lines.at(-1)!['type'], 'summary');
    } finally {
      await Promise.all([openNews.close(), readOnly.close()]);
    }
  });

  it('a loopback probe address for a remote target is a usage error (the proxy would connect to itself); nothing is sent', async () => {
    const r = await cli(['test', '192.0.2.1', '--check', 'proxy', '--proxy-port', '3128', '--proxy-sink', '127.0.0.1:0']);
    assert.equal(r.code, 3);
    assert.match(r.err, /loopback address: a remote proxy would connect to itself/);
    const w = await cli(['test', '192.0.2.1', '--check', 'proxy', '--proxy-port', '3128']);
    assert.equal(w.code, 3);
    assert.match(w.err, /give --probe-address/);
  });
});

describe('relayguard scan --check proxy', () => {
  it('scans named loopback ranges for open proxies, honours the opt-out list, one JSON line per address', async () => {
    const port = await freePort();
    const fakes: FakeProxy[] = [];
    try {
      for (let i = 1; i <= 6; i++) fakes.push(await startFakeProxy({ behavior: i % 2 === 1 ? 'http-open' : 'http-forbidden', address: `127.0.3.${i}`, port }));
      const optOut = join(dir, 'never.txt');
      await writeFile(optOut, '# never\n127.0.3.5\n');
      const out = join(dir, 'scan.jsonl');
      const r = await cli(['scan', '127.0.3.1-6', '--allow', '127.0.3.0/29', '--opt-out', optOut, '--check', 'proxy', '--proxy-port', String(port),
        '--proxy-sink', '127.0.0.1:0', '--proxy-timeout', '2', '--rate', '0', '-o', out]);
      assert.equal(r.code, 1, r.err);
      const lines = (await readFile(out, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { type: string; check?: string; address?: string; status?: string; reason?: string; open?: number; closed?: number; skipped?: number });
      const targets = lines.filter((l) => l.type === 'target');
      assert.equal(targets.length, 5);
      for (const t of targets) assert.equal(t.check, 'proxy');
      const status = Object.fromEntries(targets.map((t) => [t.address, t.status]));
      assert.deepEqual(status, { '127.0.3.1': 'open', '127.0.3.2': 'closed', '127.0.3.3': 'open', '127.0.3.4': 'closed', '127.0.3.6': 'closed' });
      assert.ok(lines.some((l) => l.type === 'skipped' && l.address === '127.0.3.5' && l.reason === 'opted-out'));
      assert.equal(fakes[4]!.connections(), 0, 'the opted-out address was never contacted');
      const summary = lines.at(-1)!;
      assert.equal(summary.type, 'summary');
      assert.deepEqual([summary.open, summary.closed, summary.skipped], [2, 3, 1]);
    } finally { await Promise.all(fakes.map((f) => f.close())); }
  });

  it('scan refuses more than one check and unnamed ranges', async () => {
    const two = await cli(['scan', '127.0.3.0/30', '--check', 'smtp,proxy', '--proxy-sink', '127.0.0.1:0']);
    assert.equal(two.code, 3);
    assert.match(two.err, /one check at a time/);
    const unnamed = await cli(['scan', '127.0.3.1-3', '--check', 'proxy', '--proxy-sink', '127.0.0.1:0']);
    assert.equal(unnamed.code, 3);
    assert.match(unnamed.err, /name the ranges/);
  });
});
