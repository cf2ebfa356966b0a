/**
 * `relayguard scan`: CIDR and a-b range expansion inside the named ranges only, the opt-out list, JSON lines with
 * a status per address (no-service apart from closed), bounded concurrency and rate, resuming from a previous
 * output (counts and exit code for the whole file), targets from stdin, the progress bar on a pty without a size
 * and as plain lines, and the refusals (no named range, malformed ranges, too many addresses). One SmtpServer
 * listens on several loopback addresses (127.0.1.1-4) on one port: 127.0.1.3 accepts every recipient, the others
 * refuse relaying; the rest of the range has nothing listening.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
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
let connects = 0;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'relayguard-scan-'));
  port = await freePort();
  const handler: SessionHandler = {
    async onConnect() { live++; connects++; maxLive = Math.max(maxLive, live); return { ok: true }; },
    onClose() { live--; },
    async onAuth() { return { ok: false, reply: { code: 535, enhanced: '5.7.8', text: 'no' } }; },
    async onMailFrom() { return { ok: true }; },
    async onRcptTo({ session, path }) {
      if (session.connection.localAddress === '127.0.1.3') return { ok: true };
      // A closed relay accepts its own postmaster (the tester's control recipient) and refuses the rest.
      if (path.mailbox?.localPart.toLowerCase() === 'postmaster') return { ok: true };
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

type Line = {
  type: string; address?: string; verdict?: string; status?: string; reason?: string; addresses?: number; tested?: number; resumed?: number; skipped?: number;
  open?: number; inconclusive?: number; closed?: number; noService?: number; msPerTarget?: number | null;
};
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
    assert.deepEqual(Object.fromEntries(targets.map((t) => [t.address, t.status])), {
      '127.0.1.0': 'no-service', '127.0.1.1': 'closed', '127.0.1.3': 'inconclusive', '127.0.1.4': 'closed', '127.0.1.5': 'no-service', '127.0.1.6': 'no-service', '127.0.1.7': 'no-service',
    });
    const summary = ls[ls.length - 1]!;
    assert.equal(summary.type, 'summary');
    assert.equal(summary.tested, 7);
    assert.equal(summary.skipped, 1);
    assert.deepEqual([summary.open, summary.inconclusive, summary.closed, summary.noService], [0, 1, 2, 4]);
    assert.ok(maxLive <= 2, `${maxLive} connections at once with --concurrency 2`);
    assert.ok(elapsed >= 250, `7 addresses at 20/s took only ${elapsed} ms`);
    assert.match(r.err, /scan of 8 address\(es\): 0 open, 1 inconclusive, 2 closed, 4 no service, 1 skipped \(7 tested now, 0 resumed\)/);
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

  it('a-b ranges (full addresses, last octet) inside --allow; the part outside is skipped, never sent to', async () => {
    const before = connects;
    const r = await cli(['scan', '127.0.1.1-127.0.1.4', '127.0.1.6-9', '--allow', '127.0.1.0/29', ...common(), '--rate', '0']);
    assert.equal(r.code, 2, r.err); // 127.0.1.3 accepts everything
    const ls = lines(r.out);
    const targets = ls.filter((l) => l.type === 'target');
    assert.deepEqual(Object.fromEntries(targets.map((t) => [t.address, t.status])), {
      '127.0.1.1': 'closed', '127.0.1.2': 'closed', '127.0.1.3': 'inconclusive', '127.0.1.4': 'closed', '127.0.1.6': 'no-service', '127.0.1.7': 'no-service',
    });
    assert.deepEqual(ls.filter((l) => l.type === 'skipped').map((l) => [l.address, l.reason]), [['127.0.1.8', 'not-allowed'], ['127.0.1.9', 'not-allowed']]);
    const summary = ls[ls.length - 1]!;
    assert.deepEqual([summary.addresses, summary.tested, summary.open, summary.inconclusive, summary.closed, summary.noService, summary.skipped], [8, 6, 0, 1, 3, 2, 2]);
    assert.match(r.err, /scan of 8 address\(es\): 0 open, 1 inconclusive, 3 closed, 2 no service, 2 skipped/);
    assert.ok(connects - before >= 4, 'the four listening addresses were tested');
    // an a-b range is not a named range: without --allow nothing is scanned
    const unnamed = await cli(['scan', '127.0.1.1-4', ...common()]);
    assert.equal(unnamed.code, 3);
    assert.match(unnamed.err, /name the ranges you may scan.*an a-b range needs --allow/);
    // --allow takes a-b ranges too
    const allowRange = await cli(['scan', '127.0.1.1-2', '--allow', '127.0.1.2-127.0.1.3', ...common(), '--rate', '0']);
    assert.equal(allowRange.code, 0, allowRange.err);
    assert.deepEqual(lines(allowRange.out).filter((l) => l.type !== 'summary').map((l) => [l.address, l.status ?? l.reason]), [['127.0.1.1', 'not-allowed'], ['127.0.1.2', 'closed']]);
  });

  it('malformed and huge ranges are usage errors (exit 3) before anything is sent or the output touched', async () => {
    const out = join(dir, 'untouched.jsonl');
    await writeFile(out, 'previous results\n');
    const before = connects;
    const cases: [string[], RegExp][] = [
      [['127.0.1.1-300'], /Bad range "127\.0\.1\.1-300": "300" is not an octet/],
      [['127.0.1.9-127.0.1.1'], /the last address comes before the first/],
      [['127.0.1.1-127.0.1'], /Bad range .*FIRST-LAST/],
      [['2001:db8::1-ff'], /IPv6 range needs a full address at both ends/],
      [['127.0.1.1', '127.0.1.1-5/24'], /Bad range/],
      [['10.0.0.0-10.255.255.255'], /Refusing to scan more than 65536 addresses \(10\.0\.0\.0-10\.255\.255\.255 holds 16777216/],
      [['10.0-255.0-255.1-2'], /Refusing to scan more than 65536 addresses/],
      [['2001:db8::-2001:db8::ffff:ffff:ffff:ffff'], /Refusing to scan more than 65536 addresses .* holds 18446744073709551616/],
      [['127.0.1.1-2', '--max-targets', '2000000'], /--max-targets takes at most 1048576/],
    ];
    for (const [args, message] of cases) {
      const r = await cli(['scan', ...args, '--allow', '127.0.1.0/24', '--allow', '10.0.0.0/8', '--allow', '2001:db8::/32', ...common(), '-o', out]);
      assert.equal(r.code, 3, `${args.join(' ')}: ${r.err}`);
      assert.match(r.err, message, args.join(' '));
      assert.doesNotMatch(r.err, /resolve|ENOTFOUND|EAI_AGAIN|\n\s+at /, args.join(' '));
    }
    assert.equal(await readFile(out, 'utf8'), 'previous results\n');
    assert.equal(connects, before);
  });

  it('resume of a finished file: no new connection, the counts of the whole file, its exit code (2 inconclusive, 1 open)', async () => {
    const out = join(dir, 'finished.jsonl');
    const first = await cli(['scan', '127.0.1.1-127.0.1.6', '--allow', '127.0.1.0/29', ...common(), '-o', out, '--rate', '0']);
    assert.equal(first.code, 2, first.err);
    const before = connects;
    const again = await cli(['scan', '127.0.1.1-127.0.1.6', '--allow', '127.0.1.0/29', ...common(), '-o', out, '--resume']);
    assert.equal(again.code, 2, again.err);
    assert.equal(connects, before, 'a finished file is not scanned again');
    assert.match(again.err, /scan of 6 address\(es\): 0 open, 1 inconclusive, 3 closed, 2 no service, 0 skipped \(0 tested now, 6 resumed\)/);
    const summary = lines(await readFile(out, 'utf8')).at(-1)!;
    assert.deepEqual([summary.type, summary.addresses, summary.tested, summary.resumed, summary.open, summary.inconclusive, summary.closed, summary.noService], ['summary', 6, 0, 6, 0, 1, 3, 2]);
    // the same file with the inconclusive address dropped: all closed, exit 0
    const closedOnly = join(dir, 'closed-only.jsonl');
    const kept = (await readFile(out, 'utf8')).split('\n').filter((l) => l.includes('"type":"target"') && !l.includes('"127.0.1.3"'));
    await writeFile(closedOnly, `${kept.join('\n')}\n`);
    const closed = await cli(['scan', '127.0.1.1-2', '127.0.1.4-6', '--allow', '127.0.1.0/29', ...common(), '-o', closedOnly, '--resume']);
    assert.equal(closed.code, 0, closed.err);
    assert.match(closed.err, /0 open, 0 inconclusive, 3 closed, 2 no service/);
    // a file (older format: no status field) holding an open result: exit 1
    const withOpen = join(dir, 'open.jsonl');
    await writeFile(withOpen, `${kept.join('\n')}\n${JSON.stringify({ type: 'target', address: '127.0.1.3', verdict: 'OPEN', reason: 'proved', ports: [] })}\n`);
    const open = await cli(['scan', '127.0.1.1-127.0.1.6', '--allow', '127.0.1.0/29', ...common(), '-o', withOpen, '--resume']);
    assert.equal(open.code, 1, open.err);
    assert.match(open.err, /1 open, 0 inconclusive, 3 closed, 2 no service/);
    assert.equal(connects, before);
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

  it('progress forced without a terminal: plain lines on stderr with every count', async () => {
    const child = spawn(process.execPath, [await cliScript(), 'scan', '127.0.1.1-127.0.1.3', '127.0.1.6', '--allow', '127.0.1.0/29', ...common(), '--rate', '0', '--progress', '-o', join(dir, 'plain.jsonl')], { stdio: ['ignore', 'pipe', 'pipe'] });
    const { code, stdout, stderr } = await finished(child);
    assert.equal(code, 2, stderr);
    assert.equal(stdout, '');
    assert.doesNotMatch(stderr, /\r/);
    assert.match(stderr, /^relayguard scan: 0\/4 0% /m);
    assert.match(stderr, /^relayguard scan: 4\/4 100% \S+\/s eta 0s closed 2 open 0 inconclusive 1 no-service 1 skipped 0$/m);
  });

  it('a terminal without a known width (script -qefc): an 80-column bar with every count', async () => {
    const args = ['scan', '127.0.1.1-127.0.1.3', '127.0.1.6', '--allow', '127.0.1.0/29', ...common(), '--rate', '0', '-o', join(dir, 'pty.jsonl')];
    const child = spawn('script', ['-qefc', [process.execPath, await cliScript(), ...args].join(' '), '/dev/null'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const { code, stdout } = await finished(child);
    assert.equal(code, 2, stdout);
    const drawn = stdout.split(/[\r\n]+/).filter((l) => l.startsWith('['));
    assert.ok(drawn.length >= 1, JSON.stringify(stdout));
    const last = drawn.at(-1)!;
    assert.equal(last.length, 79, JSON.stringify(last));
    assert.match(last, /^\[=+\] 4\/4 100% .*closed 2 open 0 inconcl 1 no-svc 1 skip 0$/);
    assert.match(stdout, /scan of 4 address\(es\): 0 open, 1 inconclusive, 2 closed, 1 no service/);
  });
});

let scriptPath: string | null = null;
/** A file that runs testerMain as the CLI would (for child processes: stdin, non-TTY stderr, a pty). */
async function cliScript(): Promise<string> {
  if (scriptPath) return scriptPath;
  const p = join(dir, 'cli.mjs');
  await writeFile(p, `import { testerMain } from ${JSON.stringify(join(ROOT, 'src/cli/tester-commands.ts'))};
process.exitCode = await testerMain(process.argv.slice(2), { out: (s) => process.stdout.write(s.endsWith('\\n') ? s : s + '\\n'), err: (s) => process.stderr.write(s.endsWith('\\n') ? s : s + '\\n') });
`);
  scriptPath = p;
  return p;
}

/** Waits for a child (killed after 30 s so a hang fails the test instead of leaving a process behind). */
async function finished(child: ChildProcess): Promise<{ code: number | null; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
  child.stderr?.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  try {
    const code = await new Promise<number | null>((res) => child.on('close', res));
    return { code, stdout, stderr };
  } finally {
    clearTimeout(timer);
  }
}
