/**
 * `relayguard test` on the command line: exit codes (0 closed, 1 open, 2 inconclusive, 3 usage or network
 * error), the JSON document, JUnit XML, transcripts, --list-tricks and usage errors. One run goes through a
 * real child process to check the process exit code and stdout.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { testerMain } from '../../src/cli/tester-commands.ts';
import { startFakeMta, type FakeMta } from '../../src/testing/fake-mta.ts';
import { freePort } from '../../src/testing/ports.ts';
import { TRICKS } from '../../src/tester/probes.ts';
import type { RunResult } from '../../src/tester/result.ts';
import { OUTSIDE, startToyRelay, type ToyRelay } from './tester-helpers.ts';

const ROOT = resolve(import.meta.dirname, '..', '..');
let dir: string;
let closed: FakeMta;
let acceptAll: FakeMta;
const closers: (() => Promise<void>)[] = [];

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'relayguard-tester-cli-'));
  // a closed MX: relaying refused, its postmaster (the tester's control) accepted
  closed = await startFakeMta({ commands: { RCPT: (c) => (/^TO:<postmaster[@>]/i.test(c.arg) ? '250 2.1.5 Ok\r\n' : '554 5.7.1 Relay access denied\r\n') } });
  acceptAll = await startFakeMta({});
});
after(async () => {
  await Promise.all([closed.close(), acceptAll.close(), ...closers.map((c) => c())]);
  await rm(dir, { recursive: true, force: true });
});

async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await testerMain(args, { out: (s) => { out += s.endsWith('\n') ? s : `${s}\n`; }, err: (s) => { err += s.endsWith('\n') ? s : `${s}\n`; } });
  return { code, out, err };
}

const base = (port: number): string[] => ['test', '127.0.0.1', '-p', `${port}:mx`, '--source-address', OUTSIDE, '--no-starttls', '--timeout', '2'];

describe('relayguard test (CLI)', () => {
  it('exit 0 and a JSON document with the documented schema for a closed relay', async () => {
    const r = await cli([...base(closed.port), '--json']);
    assert.equal(r.code, 0, r.err + r.out);
    const doc = JSON.parse(r.out) as RunResult;
    assert.equal(doc.schema, 'relayguard-tester/2');
    assert.deepEqual(doc.checks, ['smtp']);
    assert.deepEqual(doc.proxies, []);
    assert.equal(doc.mode, 'safe');
    assert.equal(doc.verdict, 'CLOSED');
    assert.equal(doc.exitCode, 0);
    assert.match(doc.runId, /^[0-9a-f]{8}$/);
    const t = doc.targets[0]!;
    assert.deepEqual(Object.keys(t).sort(), ['address', 'check', 'counts', 'detail', 'domain', 'durationMs', 'family', 'findings', 'hostName', 'input', 'mailDomain', 'mx', 'ports', 'reason', 'sourceAddress', 'startedAt', 'verdict'].sort());
    assert.deepEqual(t.mailDomain, { name: 'fake.test', source: 'guessed-from-banner' }, 'the domain is reported as guessed');
    const control = t.ports[0]!.transports[0]!.control;
    assert.ok(control?.accepted, JSON.stringify(control));
    assert.equal(control.tries.at(-1)!.command, 'RCPT TO:<postmaster@fake.test>');
    assert.ok(t.findings.every((f) => f.ok || f.remediation !== null), 'every violated finding says what to fix');
    assert.equal(t.sourceAddress, OUTSIDE);
    const tr = t.ports[0]!.transports[0]!;
    assert.equal(tr.tricks.length, TRICKS.length);
    assert.deepEqual(Object.keys(tr.tricks[0]!).sort(), ['accepted', 'attempts', 'connection', 'detail', 'id', 'kind', 'mailFrom', 'ms', 'proof', 'rcptTo', 'reason', 'replies', 'title', 'verdict'].sort());
    assert.equal(tr.transcripts, null);
  });

  it('exit 2 for an accept-everything server, with the reason in the text report', async () => {
    const r = await cli(base(acceptAll.port));
    assert.equal(r.code, 2, r.err + r.out);
    assert.match(r.out, /verdict: INCONCLUSIVE accepts all recipients/);
    assert.match(r.out, /run again with --prove/);
    assert.doesNotMatch(r.out, /\x1b\[/, 'no colour when not asked and not a terminal');
  });

  it('exit 1 in proof mode when the probe arrives at the built-in sink; JUnit marks the open tricks as failures', async () => {
    const sinkPort = await freePort();
    const relay: ToyRelay = await startToyRelay({ accept: () => true, nextHop: { host: '127.0.0.1', port: sinkPort } });
    closers.push(() => relay.close());
    const junit = join(dir, 'open.xml');
    const r = await cli([...base(relay.port), '--prove', '--probe-domain', 'probes.test', '--sink', `127.0.0.1:${sinkPort}`, '--wait', '3', '--tricks', 'V01,V02,V21', '--junit', junit, '--color']);
    assert.equal(r.code, 1, r.err + r.out);
    assert.match(r.out, /\x1b\[31m/, 'OPEN in red with --color');
    assert.match(r.out, /relay saw the tester as 127\.0\.0\.2/);
    assert.match(r.out, /Received: from probes\.test/);
    const xml = await readFile(junit, 'utf8');
    // 2 OPEN tricks + 2 findings: open-relay (error) and tester-address-may-be-trusted (the tester speaks from loopback)
    assert.match(xml, /^<\?xml version="1.0" encoding="UTF-8"\?>\n<testsuites name="relayguard tester" tests="\d+" failures="4" errors="0"/);
    assert.match(xml, /name="open-relay" time="0"><failure type="error" message="relays mail for strangers: V01, V02[^"]*">fix: Postfix: smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination/);
    assert.match(xml, /name="tester-address-may-be-trusted" time="0"><failure type="warning" message="the tester connected from 127\.0\.0\.2, a loopback address/);
    assert.match(r.out, /fix:\S* Postfix: smtpd_relay_restrictions = permit_mynetworks/, 'the text report says what to fix');
    assert.match(xml, /<testcase classname="relayguard\.tester\.127_0_0_1\.\d+\.plain" name="V02 external to external" time="[\d.]+"><failure type="OPEN"/);
    assert.equal(relay.forwarded.length, 2, 'one probe per accepted relay trick (V21 is local: no probe)');
  });

  it('--domain sets the mail domain (reported as given); a guessed one is said to be guessed', async () => {
    const given = await cli([...base(closed.port), '--domain', 'Example.Test', '--tricks', 'V05']);
    assert.equal(given.code, 0, given.err + given.out);
    assert.match(given.out, /domain +example\.test \(given\)/);
    const guessed = await cli([...base(closed.port), '--tricks', 'V05']);
    assert.match(guessed.out, /domain +fake\.test \(guessed from the banner: give --domain\)/);
    const doc = JSON.parse((await cli([...base(closed.port), '--domain', 'example.test', '--tricks', 'V05', '--json'])).out) as RunResult;
    assert.deepEqual(doc.targets[0]!.mailDomain, { name: 'example.test', source: 'option' });
    assert.equal(doc.targets[0]!.ports[0]!.localDelivery!.command, 'RCPT TO:<postmaster@example.test>');
  });

  it('--transcript keeps every line with timings', async () => {
    const r = await cli([...base(closed.port), '--json', '--transcript', '--tricks', 'V01']);
    assert.equal(r.code, 0, r.err);
    const doc = JSON.parse(r.out) as RunResult;
    const tr = doc.targets[0]!.ports[0]!.transports[0]!;
    assert.ok(tr.transcripts && tr.transcripts.length >= 1);
    const lines = tr.transcripts[0]!.lines;
    assert.equal(lines[0]!.dir, 'S');
    assert.match(lines[0]!.line, /^220 /);
    assert.ok(lines.some((l) => l.dir === 'C' && l.line === 'MAIL FROM:<>'));
    assert.ok(lines.every((l) => typeof l.t === 'number' && l.t >= 0));
    assert.equal(tr.transcripts[0]!.localAddress, OUTSIDE);
  });

  it('--list-tricks prints the battery', async () => {
    const r = await cli(['test', '--list-tricks']);
    assert.equal(r.code, 0);
    for (const t of TRICKS) assert.match(r.out, new RegExp(`^${t.id} `, 'm'));
  });

  it('exit 3 for usage errors, with a message', async () => {
    const cases: [string[], RegExp][] = [
      [['test'], /give at least one target/],
      [['test', '127.0.0.1', '-p', '99999'], /Bad port "99999"/],
      [['test', '127.0.0.1', '--tricks', 'V99'], /Unknown trick id "V99"/],
      [['test', '127.0.0.1', '--prove'], /--prove needs --probe-domain/],
      [['test', '127.0.0.1', '--probe-domain', 'x.test'], /need --prove/],
      [['test', '127.0.0.1', '--source-address', 'nope'], /--source-address takes an IP address/],
      [['test', '127.0.0.1', '--timeout', 'soon'], /--timeout takes a number of seconds/],
      [['test', '127.0.0.1', '--bogus-option'], /unknown option/],
    ];
    for (const [args, message] of cases) {
      const r = await cli(args);
      assert.equal(r.code, 3, `${args.join(' ')}: ${r.err}${r.out}`);
      assert.match(r.err, message, args.join(' '));
    }
  });

  it('exit 3 when nothing answers (network error) or a target cannot be resolved', async () => {
    const port = await freePort();
    const r = await cli(['test', '127.0.0.1', '-p', `${port}:mx`, '--source-address', OUTSIDE, '--json']);
    assert.equal(r.code, 3, r.out);
    assert.equal((JSON.parse(r.out) as RunResult).targets[0]!.reason, 'no-service');
    const bad = await cli(['test', 'not_a_host!', '-p', `${port}:mx`, '--json']);
    assert.equal(bad.code, 3);
    assert.match((JSON.parse(bad.out) as RunResult).errors[0]!.error, /Bad target/);
  });

  it('as a real process: stdout is the JSON document and the process exit code is the verdict', async () => {
    const script = `import { testerMain } from ${JSON.stringify(join(ROOT, 'src/cli/tester-commands.ts'))};
process.exitCode = await testerMain(process.argv.slice(1), { out: (s) => process.stdout.write(s.endsWith('\\n') ? s : s + '\\n'), err: (s) => process.stderr.write(s.endsWith('\\n') ? s : s + '\\n') });`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script, ...base(acceptAll.port), '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
    const code = await new Promise<number | null>((res) => child.on('close', res));
    assert.equal(code, 2, out);
    assert.equal((JSON.parse(out) as RunResult).verdict, 'INCONCLUSIVE');
  });
});
