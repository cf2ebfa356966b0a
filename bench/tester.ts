/**
 * `npm run bench:tester` (node bench/tester.ts): the open-relay tester's speed, in the same run as nmap.
 *
 *  1. Full battery against a loopback Postfix 3.7 (private instance, Postfix's default relay restrictions
 *     `permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination`, mynetworks 127.0.0.1/32, STARTTLS
 *     offered, plus an implicit-TLS listener): `relayguard test` as a child process (node start-up included), all
 *     tricks over plain, STARTTLS and implicit TLS, vs `nmap --script smtp-open-relay` (16 tricks, plain only) on
 *     the same port. Both connect from 127.0.0.2, outside mynetworks. Rounds interleave the tools; medians are
 *     reported. Goal: relayguard's wall time below nmap's. A third column runs relayguard with
 *     --errors-per-session 1000 (one session per transport, as nmap does) to show what the proactive reconnect
 *     buys against Postfix's error throttle (smtpd_soft_error_limit 10, smtpd_error_sleep_time 1 s).
 *  2. A scan of N loopback targets (default 500): relayguard's SMTP engine with a closed-relay handler listening on
 *     127.0.2.x/127.0.3.x (one child process; `relayguard serve` takes at most 64 listeners), scanned with
 *     `relayguard scan` from 127.0.0.2 (full battery, plain + STARTTLS): wall time, wall time per target and the
 *     mean per-target test time.
 *
 * A benchmark, not a test: it prints figures and PASS/MISS against the goal. Everything runs on 127.0.0.0/8.
 * Options: --rounds=N (3), --targets=N (500), --concurrency=N (20), --quick (1 round, 100 targets);
 * env BENCH_ROUNDS, BENCH_TARGETS, BENCH_CONCURRENCY, BENCH_QUICK=1.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { generateSelfSigned } from '../src/smtp/tls-cert.ts';
import { freePort } from '../src/testing/ports.ts';
import { hasBinary, startPostfix, type PostfixInstance } from '../src/testing/postfix.ts';
import { cleanupAll, installSignalHandlers, median, onCleanup, sleep } from './lib.ts';

const ROOT = resolve(import.meta.dirname, '..');
const NMAP = '/usr/bin/nmap';
const OUTSIDE = '127.0.0.2';
const POSTCONF = '/usr/sbin/postconf';
const POSTFIX = '/usr/sbin/postfix';

interface Options { rounds: number; targets: number; concurrency: number }

function options(argv: readonly string[], env: NodeJS.ProcessEnv): Options {
  const args = new Map<string, string>();
  for (const a of argv) {
    const m = /^--([a-z]+)(?:=(\d+))?$/.exec(a);
    if (!m || !['rounds', 'targets', 'concurrency', 'quick'].includes(m[1]!)) throw new Error(`unknown argument ${JSON.stringify(a)}; see the header of bench/tester.ts`);
    args.set(m[1]!, m[2] ?? '1');
  }
  const quick = args.has('quick') || env['BENCH_QUICK'] === '1';
  const int = (k: string, dflt: number): number => {
    const v = args.get(k) ?? env[`BENCH_${k.toUpperCase()}`];
    if (v === undefined || v === '') return dflt;
    if (!/^\d+$/.test(v) || Number(v) < 1) throw new Error(`--${k} must be a positive integer`);
    return Number(v);
  };
  return { rounds: int('rounds', quick ? 1 : 3), targets: int('targets', quick ? 100 : 500), concurrency: int('concurrency', 20) };
}

const SCRIPT = `import { testerMain } from ${JSON.stringify(join(ROOT, 'src/cli/tester-commands.ts'))};
process.exitCode = await testerMain(process.argv.slice(1), { out: (s) => process.stdout.write(s.endsWith('\\n') ? s : s + '\\n'), err: (s) => process.stderr.write(s.endsWith('\\n') ? s : s + '\\n') });`;

/** Runs a command, returns wall ms, exit code and stdout. */
function timed(file: string, args: readonly string[], timeoutMs = 600_000): Promise<{ ms: number; code: number | null; stdout: string; stderr: string }> {
  return new Promise((res, rej) => {
    const t0 = performance.now();
    const child = spawn(file, [...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { if (stderr.length < 65_536) stderr += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', rej);
    child.on('close', (code) => { clearTimeout(timer); res({ ms: performance.now() - t0, code, stdout, stderr }); });
  });
}

function relayguard(args: readonly string[]): ReturnType<typeof timed> {
  return timed(process.execPath, ['--input-type=module', '-e', SCRIPT, ...args]);
}

async function startTlsPostfix(dir: string): Promise<{ pf: PostfixInstance; implicitPort: number }> {
  const { cert, key } = await generateSelfSigned('localhost');
  writeFileSync(join(dir, 'cert.pem'), cert);
  writeFileSync(join(dir, 'key.pem'), key, { mode: 0o600 });
  const pf = await startPostfix({
    mode: 'discard',
    extraMain: {
      mynetworks: '127.0.0.1/32',
      smtpd_relay_restrictions: 'permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination',
      smtpd_tls_security_level: 'may', smtpd_tls_cert_file: join(dir, 'cert.pem'), smtpd_tls_key_file: join(dir, 'key.pem'),
    },
  });
  onCleanup(() => pf.stop());
  const implicitPort = await freePort();
  execFileSync(POSTCONF, ['-c', pf.configDir, '-M', `127.0.0.1:${implicitPort}/inet = 127.0.0.1:${implicitPort} inet n - n - - smtpd -o smtpd_tls_wrappermode=yes`]);
  execFileSync(POSTFIX, ['-c', pf.configDir, 'reload']);
  // master picks up the new service after the reload; wait until it answers (TLS from the first byte)
  const deadline = Date.now() + 20_000;
  for (;;) {
    const probe = await relayguard(['test', '127.0.0.1', '-p', `${implicitPort}:submissions`, '--tricks', 'V01', '--json', '--timeout', '2']);
    if (probe.code !== 3) break;
    if (Date.now() > deadline) throw new Error(`Postfix implicit-TLS listener did not come up: ${probe.stdout}${probe.stderr}`);
    await sleep(250);
  }
  return { pf, implicitPort };
}

interface TesterDoc {
  verdict: string; reason: string; durationMs: number;
  targets: { ports: { transports: { transport: string; tricks: unknown[]; verdict: string; connections: number }[] }[] }[];
}

async function batteryVsNmap(o: Options, dir: string): Promise<boolean> {
  console.log('\n== 1. full battery vs nmap smtp-open-relay, loopback Postfix (default relay restrictions, tester outside mynetworks)');
  const { pf, implicitPort } = await startTlsPostfix(dir);
  const rgArgs = ['test', '127.0.0.1', '-p', `${pf.port}:mx`, '-p', `${implicitPort}:submissions`, '--source-address', OUTSIDE, '--json'];
  const nmapArgs = ['-n', '-Pn', '-p', String(pf.port), '--script', '+smtp-open-relay', '--script-args', 'smtp-open-relay.domain=example.net,smtp-open-relay.ip=127.0.0.1', '-S', OUTSIDE, '-e', 'lo', '127.0.0.1'];
  const rg: number[] = [];
  const rgOne: number[] = [];
  const nm: number[] = [];
  let tricks = 0;
  let transports = '';
  let verdicts = '';
  for (let round = 0; round < o.rounds; round++) {
    // the one-session variant only in round 1: Postfix's throttle makes it slow and it is only an illustration
    const order = round === 0 ? ['rg', 'nmap', 'rg1'] : round % 2 === 0 ? ['rg', 'nmap'] : ['nmap', 'rg'];
    for (const who of order) {
      if (who === 'nmap') {
        const r = await timed(NMAP, nmapArgs);
        if (r.code !== 0) throw new Error(`nmap failed: ${r.stderr}`);
        nm.push(r.ms);
        verdicts = `${verdicts.split(' | ')[0] ?? ''} | nmap: ${/smtp-open-relay: (.*)/.exec(r.stdout)?.[1] ?? '?'}`;
      } else {
        const r = await relayguard(who === 'rg' ? rgArgs : [...rgArgs, '--errors-per-session', '1000']);
        if (r.code === 3 || r.code === null) throw new Error(`relayguard test failed: ${r.stderr}`);
        const doc = JSON.parse(r.stdout) as TesterDoc;
        (who === 'rg' ? rg : rgOne).push(r.ms);
        if (who === 'rg') {
          const ts = doc.targets[0]!.ports.flatMap((p) => p.transports);
          tricks = ts.reduce((n, t) => n + t.tricks.length, 0);
          transports = ts.map((t) => `${t.transport} (${t.tricks.length} tricks, ${t.connections} connections)`).join(', ');
          verdicts = `relayguard: ${doc.verdict} ${doc.reason}${verdicts.includes(' | ') ? ` |${verdicts.split(' |')[1]}` : ''}`;
        }
      }
      console.log(`   round ${round + 1} ${who.padEnd(5)} ${(who === 'nmap' ? nm : who === 'rg' ? rg : rgOne).at(-1)!.toFixed(0).padStart(7)} ms`);
    }
  }
  const mRg = median(rg);
  const mNm = median(nm);
  const mOne = median(rgOne);
  console.log(`   relayguard: ${transports}; ${tricks} tries in all`);
  console.log(`   ${verdicts}`);
  console.log('');
  console.log('   | tool | what | wall time, median | vs nmap |');
  console.log('   |---|---|---|---|');
  console.log(`   | nmap 7.93 smtp-open-relay | 16 tricks, plain only, one session | ${(mNm / 1000).toFixed(2)} s | 1.00 |`);
  console.log(`   | relayguard test | ${tricks} tries: plain + STARTTLS + implicit TLS | ${(mRg / 1000).toFixed(2)} s | ${(mRg / mNm).toFixed(3)} |`);
  console.log(`   | relayguard test --errors-per-session 1000 (round 1 only) | same, one session per transport | ${(mOne / 1000).toFixed(2)} s | ${(mOne / mNm).toFixed(3)} |`);
  const pass = mRg < mNm;
  console.log(`   goal: full battery (22+ tricks, all three transports) faster than nmap's 16 tricks over one: ${pass ? 'PASS' : 'MISS'} (${(mNm / mRg).toFixed(1)}x faster)`);
  await pf.stop();
  return pass;
}

async function scan500(o: Options, dir: string): Promise<void> {
  console.log(`\n== 2. scan of ${o.targets} loopback targets (relayguard's SMTP engine on each address, full battery, plain + STARTTLS)`);
  const addresses: string[] = [];
  for (let i = 0; addresses.length < o.targets; i++) {
    const third = 2 + Math.floor(i / 254);
    if (third > 250) throw new Error('too many targets');
    addresses.push(`127.0.${third}.${(i % 254) + 1}`);
  }
  const port = await freePort();
  const server = await startScanTargets(port, addresses);
  const list = join(dir, 'targets.txt');
  writeFileSync(list, `${addresses.join('\n')}\n`);
  const out = join(dir, 'scan.jsonl');
  const r = await relayguard(['scan', '--input', list, '--allow', '127.0.0.0/8', '-p', `${port}:mx`, '--source-address', OUTSIDE, '-o', out,
    '--concurrency', String(o.concurrency), '--rate', '0', '--no-progress']);
  if (r.code === 3 || r.code === null) throw new Error(`scan failed (${r.code}): ${r.stderr}`);
  const lines = readFileSync(out, 'utf8').split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as { type: string; verdict?: string; durationMs?: number; tested?: number; msPerTarget?: number });
  const summary = lines.find((l) => l.type === 'summary')!;
  const verdicts = new Map<string, number>();
  for (const l of lines) if (l.type === 'target') verdicts.set(l.verdict!, (verdicts.get(l.verdict!) ?? 0) + 1);
  console.log(`   ${summary.tested} targets in ${(r.ms / 1000).toFixed(2)} s wall (process included), concurrency ${o.concurrency}`);
  console.log(`   wall time per target: ${(r.ms / summary.tested!).toFixed(1)} ms; mean test time per target: ${summary.msPerTarget} ms; verdicts: ${[...verdicts].map(([k, v]) => `${k} ${v}`).join(', ')}`);
  await server.stop();
}

/**
 * The scan targets: a child process running relayguard's SMTP engine (SmtpServer, STARTTLS, the same session
 * code as `relayguard serve`) on every address, with a closed-relay handler (peers.test accepted, anything else
 * 554 5.7.1 Relay access denied). `relayguard serve` itself allows at most 64 listeners per process.
 */
async function startScanTargets(port: number, addresses: readonly string[]): Promise<{ stop(): Promise<void> }> {
  const child = spawn(process.execPath, [import.meta.filename, 'scan-targets', String(port), ...addresses], { stdio: ['ignore', 'pipe', 'inherit'] });
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
  };
  onCleanup(stop);
  await new Promise<void>((res, rej) => {
    child.stdout!.setEncoding('utf8').on('data', (d: string) => { if (d.includes('ready')) res(); });
    child.once('exit', (code) => rej(new Error(`scan-targets exited with ${code}`)));
  });
  return { stop };
}

async function scanTargetsMain(port: number, addresses: readonly string[]): Promise<void> {
  const { SmtpServer } = await import('../src/smtp/server.ts');
  const { NULL_LOGGER } = await import('../src/core/log.ts');
  const { canonicalize } = await import('../src/core/address.ts');
  const { cert, key } = await generateSelfSigned('localhost');
  const server = new SmtpServer({
    hostname: 'mx.peers.test', logger: NULL_LOGGER, tls: { cert, key }, isTrustedProxy: () => false, lineEndings: 'reject', authRequiresTls: true,
    listeners: addresses.map((a, i) => ({ name: `mx${i}`, role: 'mx' as const, address: a, port, tls: 'starttls' as const })),
    limits: { messageSize: 1 << 20, recipients: 100, errors: 20, idleTimeoutMs: 30_000, sessionTimeoutMs: 120_000, hopCount: 50, commandLineLength: 4096, connections: 10_000, connectionsPerIp: 10_000 },
    handler: {
      async onAuth() { return { ok: false, reply: { code: 535, enhanced: '5.7.8', text: 'Authentication failed' } }; },
      async onMailFrom() { return { ok: true }; },
      async onRcptTo({ path }) {
        const c = path.mailbox ? canonicalize(path.mailbox) : null;
        if (c && c.domain === 'peers.test' && !c.routed) return { ok: true };
        return { ok: false, reply: { code: 554, enhanced: '5.7.1', text: 'Relay access denied' } };
      },
      async onData({ body }) { for await (const _ of body) { /* drain */ } return { ok: true, queueId: 'BENCH' }; },
    },
  });
  await server.listen();
  process.stdout.write('ready\n');
  await new Promise<void>((res) => process.once('SIGTERM', () => res()));
  await server.close({ graceMs: 500 });
}

async function main(): Promise<void> {
  const o = options(process.argv.slice(2), process.env);
  installSignalHandlers();
  for (const [bin, pkg] of [[NMAP, 'nmap'], [POSTFIX, 'postfix']] as const) {
    if (!hasBinary(bin)) throw new Error(`${bin} is missing: install the Debian package ${pkg}`);
  }
  if (process.getuid?.() !== 0) throw new Error('needs root (private Postfix, nmap -S)');
  console.log(`bench:tester on ${cpus().length} x ${cpus()[0]?.model ?? '?'}, load ${loadavg().map((l) => l.toFixed(2)).join(' ')}; rounds ${o.rounds}, targets ${o.targets}`);
  const dir = mkdtempSync(join(tmpdir(), 'relayguard-bench-tester-'));
  onCleanup(async () => rmSync(dir, { recursive: true, force: true }));
  try {
    await batteryVsNmap(o, dir);
    await scan500(o, dir);
  } finally {
    await cleanupAll();
  }
}

if (process.argv[2] === 'scan-targets') {
  await scanTargetsMain(Number(process.argv[3]), process.argv.slice(4));
} else {
  main().catch(async (err: unknown) => {
    console.error(err);
    await cleanupAll();
    process.exitCode = 1;
  });
}
