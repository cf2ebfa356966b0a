/**
 * `relayguard scan`: CIDR expansion inside the named ranges only, the opt-out list, JSON lines, bounded
 * concurrency and rate, resuming from a previous output, targets from stdin, and the refusals (no named range,
 * too many addresses). One SmtpServer listens on several loopback addresses (127.0.1.1-4) on one port: 127.0.1.3
 * accepts every recipient, the others refuse relaying; the rest of the range has nothing listening.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { testerMain } from '../../src/cli/tester-commands.ts';
import { NULL_LOGGER } from '../../src/core/log.ts';
import { SmtpServer } from '../../src/smtp/server.ts';
import type { SessionHandler } from '../../src/smtp/handler.ts';
import { freePort } from '../../src/testing/ports.ts';
import { OUTSIDE } from './tester-helpers.ts';

const ROOT = resolve(import.meta.dirname, '..', '..');
const HOSTS = ['127.0.1.1', '127.0.1.2', '127.0.1.3', '127.0.1.4'];
let server: SmtpServer;
let port: number;
let dir: string;
let live = 0;
let maxLive = 0;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'relayguard-scan-'));
  port = await freePort();
  const handler: SessionHandler = {
    async onConnect() { live++; maxLive = Math.max(maxLive, live); return { ok: true }; },
    onClose() { live--; },
    async onAuth() { return { ok: false, reply: { code: 535, enhanced: '5.7.8', text: 'no' } }; },
    async onMailFrom() { return { ok: true }; },
    async onRcptTo({ session }) {
      if (session.connection.localAddress === '127.0.1.3') return { ok: true };
      return { ok: false, reply: { code: 554, enhanced: '5.7.1', text: 'Relay access denied' } };
    },
    async onData() { return { ok: false, reply: { code: 554, enhanced: '5.7.1', text: 'no' } }; },
  };
  server = new SmtpServer({
    hostname: 'scan.test', handler, logger: NULL_LOGGER, tls: null, isTrustedProxy: () => false, lineEndings: 'reject', authRequiresTls: true,
    listeners: HOSTS.map((h, i) => ({ name: `l${i}`, role: 'mx' as const, address: h, port, tls: 'none' as const })),
    limits: { messageSize: 1 << 20, recipients: 100, errors: 100, idleTimeoutMs: 10_000, sessionTimeoutMs: 60_000, hopCount: 50, commandLineLength: 4096, connections: 100, connectionsPerIp: 100 },
  });
  await server.listen();
});
after(async () => {
  await server.close({ graceMs: 200 });
  await rm(dir, { recursive: true, force: true });
});

async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await testerMain(args, { out: (s) => { out += s.endsWith('\n') ? s : `${s}\n`; }, err: (s) => { err += s.endsWith('\n') ? s : `${s}\n`; } });
  return { code, out, err };
}

type Line = { type: string; address?: string; verdict?: string; reason?: string; tested?: number; resumed?: number; skipped?: number; msPerTarget?: number | null };
const lines = (text: string): Line[] => text.split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as Line);
const common = (): string[] => ['-p', `${port}:mx`, '--no-starttls', '--source-address', OUTSIDE, '--timeout', '2', '--tricks', 'V01,V02,V08,V21'];

describe('relayguard scan', () => {
  it('scans a named range: one JSON line per address, opt-out honoured, bounded concurrency, exit 2 for the accept-all host', async () => {
    const optOut = join(dir, 'optout.txt');
    await writeFile(optOut, '# never test\n127.0.1.2\n');
    const out = join(dir, 'scan.jsonl');
    maxLive = 0;
    const started = Date.now();
    const r = await cli(['scan', '127.0.1.0/29', ...common(), '--opt-out', optOut, '-o', out, '--concurrency', '2', '--rate', '20']);
    const elapsed = Date.now() - started;
    assert.equal(r.code, 2, r.err);
    const ls = lines(await readFile(out, 'utf8'));
    const targets = ls.filter((l) => l.type === 'target');
    assert.deepEqual(targets.map((t) => t.address).sort(), ['127.0.1.0', '127.0.1.1', '127.0.1.3', '127.0.1.4', '127.0.1.5', '127.0.1.6', '127.0.1.7']);
    assert.deepEqual(ls.filter((l) => l.type === 'skipped').map((l) => [l.address, l.reason]), [['127.0.1.2', 'opted-out']]);
    const by = new Map(targets.map((t) => [t.address, t]));
    assert.equal(by.get('127.0.1.1')!.verdict, 'CLOSED');
    assert.equal(by.get('127.0.1.3')!.verdict, 'INCONCLUSIVE');
    assert.equal(by.get('127.0.1.3')!.reason, 'accepts-all-recipients');
    assert.equal(by.get('127.0.1.6')!.reason, 'no-service');
    const summary = ls[ls.length - 1]!;
    assert.equal(summary.type, 'summary');
    assert.equal(summary.tested, 7);
    assert.equal(summary.skipped, 1);
    assert.ok(maxLive <= 2, `${maxLive} connections at once with --concurrency 2`);
    assert.ok(elapsed >= 250, `7 addresses at 20/s took only ${elapsed} ms`);
    assert.match(r.err, /scanned 7 address/);
  });

  it('resumes: addresses already in the output are not tested again', async () => {
    const out = join(dir, 'resume.jsonl');
    const first = await cli(['scan', '127.0.1.0/30', ...common(), '-o', out, '--rate', '0']);
    assert.equal(first.code, 2, first.err); // 127.0.1.3 accepts everything
    // keep two finished addresses and a torn line, as after an interrupted run
    const kept = (await readFile(out, 'utf8')).split('\n').filter((l) => l.includes('"type":"target"')).slice(0, 2);
    await writeFile(out, `${kept.join('\n')}\n{"type":"target","addr`);
    const again = await cli(['scan', '127.0.1.0/30', ...common(), '-o', out, '--resume', '--rate', '0']);
    assert.equal(again.code, kept.some((l) => l.includes('"127.0.1.3"')) ? 0 : 2, again.err);
    const ls = lines((await readFile(out, 'utf8')).split('\n').filter((l) => !l.includes('"addr"') && !l.endsWith('"addr')).join('\n'));
    const summary = ls[ls.length - 1]!;
    assert.equal(summary.resumed, 2);
    assert.equal(summary.tested, 2);
    const addrs = ls.filter((l) => l.type === 'target').map((l) => l.address).sort();
    assert.deepEqual(addrs, ['127.0.1.0', '127.0.1.1', '127.0.1.2', '127.0.1.3']);
  });

  it('refuses anything outside the named ranges, and scans without a named range at all', async () => {
    const list = join(dir, 'targets.txt');
    await writeFile(list, '127.0.1.1\n127.0.1.4\n');
    const none = await cli(['scan', '--input', list, ...common()]);
    assert.equal(none.code, 3);
    assert.match(none.err, /name the ranges you may scan/);
    const partial = await cli(['scan', '--input', list, '--allow', '127.0.1.0/30', ...common(), '--rate', '0']);
    assert.equal(partial.code, 0, partial.err);
    const ls = lines(partial.out);
    assert.deepEqual(ls.filter((l) => l.type === 'target').map((l) => l.address), ['127.0.1.1']);
    assert.deepEqual(ls.filter((l) => l.type === 'skipped').map((l) => [l.address, l.reason]), [['127.0.1.4', 'not-allowed']]);
  });

  it('refuses huge expansions and bad ranges (exit 3)', async () => {
    const big = await cli(['scan', '10.0.0.0/8', ...common()]);
    assert.equal(big.code, 3);
    assert.match(big.err, /Refusing to scan more than 65536 addresses/);
    const bad = await cli(['scan', '127.0.1.0/33', ...common()]);
    assert.equal(bad.code, 3);
    assert.match(bad.err, /prefix length/);
  });

  it('reads targets from stdin (a real process), JSON lines on stdout', async () => {
    const script = `import { testerMain } from ${JSON.stringify(join(ROOT, 'src/cli/tester-commands.ts'))};
process.exitCode = await testerMain(process.argv.slice(1), { out: (s) => process.stdout.write(s.endsWith('\\n') ? s : s + '\\n'), err: (s) => process.stderr.write(s.endsWith('\\n') ? s : s + '\\n') });`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script, 'scan', '--input', '-', '--allow', '127.0.1.0/24', ...common(), '--rate', '0'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
    child.stdin.end('127.0.1.1\n127.0.1.4 # comment\n');
    const code = await new Promise<number | null>((res) => child.on('close', res));
    assert.equal(code, 0, out);
    // Targets run concurrently: lines come in completion order.
    assert.deepEqual(lines(out).filter((l) => l.type === 'target').map((l) => l.address).sort(), ['127.0.1.1', '127.0.1.4']);
  });
});
