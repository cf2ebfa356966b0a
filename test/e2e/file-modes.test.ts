/**
 * F4 (field report 1): everything relayguard creates holding secrets or mail is 0600, its directories 0700, with
 * umask 022 and inside a data directory the administrator made 0755 beforehand: relayguard.db (password hashes,
 * listings) and queue.db with their -wal/-shm, the receiver lock, spool files, the generated TLS key. The only
 * exceptions are the public certificate and the pre-made directory itself, which `serve` reports (the
 * data-dir-permissions finding of `config check`).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmod, lstat, mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { CLI, NODE, startServe, type ServeProcess } from '../../src/testing/serve-process.ts';
import { RawSmtpClient } from '../../src/testing/smtp-client.ts';

/** Runs argv under `umask 022` (sh), so the result does not depend on the test runner's umask. */
const UMASK_022 = ['sh', '-c', 'umask 022; exec "$@"', 'sh'];

const roots: string[] = [];
let serve: ServeProcess | undefined;
after(async () => {
  await serve?.stop();
  for (const r of roots) await rm(r, { recursive: true, force: true });
});

function cli(args: string[], input: string): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const argv = [...UMASK_022, NODE, CLI, ...args];
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => { out += d; });
    child.stderr.on('data', (d: Buffer) => { out += d; });
    const t = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.once('error', reject);
    child.once('close', (code) => { clearTimeout(t); resolve({ code, out }); });
    child.stdin.end(input);
  });
}

/** Every path under root with its permission bits, as "0600 relative/path". */
async function modes(root: string): Promise<Map<string, { mode: number; dir: boolean }>> {
  const found = new Map<string, { mode: number; dir: boolean }>();
  const walk = async (dir: string): Promise<void> => {
    for (const name of await readdir(dir)) {
      const p = join(dir, name);
      const s = await lstat(p);
      found.set(relative(root, p), { mode: s.mode & 0o7777, dir: s.isDirectory() });
      if (s.isDirectory()) await walk(p);
    }
  };
  await walk(root);
  return found;
}

async function send(port: number, body: string): Promise<void> {
  const c = await RawSmtpClient.connect(port, { timeoutMs: 30_000 });
  try {
    const expect = async (code: number, line?: string): Promise<void> => {
      // Generous waits: a hang guard on a loaded machine, not a timing assertion.
      const r = line === undefined ? await c.readReply(30_000) : await c.cmd(line, 30_000);
      assert.equal(r.code, code, `${line ?? 'greeting'}: ${r.lines.join(' | ')}`);
    };
    await expect(220);
    await expect(250, 'EHLO client.test');
    await expect(250, 'MAIL FROM:<sender@client.test>');
    await expect(250, 'RCPT TO:<alice@local.test>');
    await expect(354, 'DATA');
    await expect(250, `${body}\r\n.`);
    await expect(221, 'QUIT');
  } finally {
    c.close();
  }
}

test('F4 files 0600 and directories 0700 in a pre-made 0755 data directory with umask 022', async () => {
  const root = await mkdtemp(join(tmpdir(), 'relayguard-modes-'));
  roots.push(root);
  const dataDir = join(root, 'data');
  await mkdir(dataDir);
  await chmod(dataDir, 0o755);

  serve = await startServe({ dataDir, wrap: UMASK_022 });
  const added = await cli(['user', 'add', 'alice@local.test', '--password-stdin', '--config', serve.configFile], 'correct horse\n');
  assert.equal(added.code, 0, added.out);
  const dnsbl = await cli(['dnsbl', 'list', '--config', serve.configFile], '');
  assert.equal(dnsbl.code, 0, dnsbl.out);
  // One small message (stored inline in queue.db) and one over the 64 KiB inline limit (a spool file).
  await send(serve.ports.mx, 'Subject: small\r\n\r\nhello');
  await send(serve.ports.mx, `Subject: large\r\n\r\n${'x'.repeat(76)}\r\n`.repeat(2000));

  const found = await modes(dataDir);
  const names = [...found.keys()];
  // The files this test is about exist (while serve runs, SQLite keeps its -wal and -shm).
  for (const must of ['relayguard.db', 'relayguard.db-wal', 'relayguard.db-shm', 'queue.db', 'queue.db-wal', 'queue.db-shm', 'receiver.lock', 'tls/key.pem', 'tls/cert.pem']) {
    assert.ok(found.has(must), `${must} missing; found ${names.join(', ')}`);
  }
  assert.ok(names.some((n) => n.startsWith('spool/') && !found.get(n)!.dir), `no spool file; found ${names.join(', ')}`);

  const wrong: string[] = [];
  for (const [name, { mode, dir }] of found) {
    if (name === 'relayguard.yaml') continue; // written by the test harness, not by relayguard
    if (name === 'tls/cert.pem') {
      if ((mode & 0o022) !== 0) wrong.push(`${mode.toString(8)} ${name} (a certificate is public, but never writable by others)`);
      continue;
    }
    const want = dir ? 0o700 : 0o600;
    if (mode !== want) wrong.push(`${mode.toString(8).padStart(4, '0')} ${name}${dir ? '/' : ''} (want ${want.toString(8).padStart(4, '0')})`);
  }
  assert.deepEqual(wrong, [], `modes:\n${[...found].map(([n, m]) => `${m.mode.toString(8).padStart(4, '0')} ${n}`).join('\n')}`);

  // The pre-made directory keeps the administrator's mode, and serve warns about it.
  assert.equal((await lstat(dataDir)).mode & 0o777, 0o755);
  assert.ok(
    serve.logs.some((l) => l['msg'] === 'config finding' && l['code'] === 'data-dir-permissions'),
    `serve did not warn about the 0755 data directory; log: ${serve.logs.map((l) => JSON.stringify(l)).join('\n')}`,
  );
  const check = await cli(['config', 'check', '--config', serve.configFile], '');
  assert.match(check.out, /warning dataDir \[data-dir-permissions\]: The data directory .* is mode 0755/);
});

test('F4 an existing 0644 database (an older version, another umask) is narrowed on the next open', async () => {
  const root = await mkdtemp(join(tmpdir(), 'relayguard-modes-'));
  roots.push(root);
  const dataDir = join(root, 'data');
  await mkdir(dataDir, { mode: 0o700 });
  const config = join(root, 'relayguard.yaml');
  const { writeFile } = await import('node:fs/promises');
  await writeFile(config, `dataDir: ${JSON.stringify(dataDir)}\n`);
  assert.equal((await cli(['user', 'add', 'bob@local.test', '--password-stdin', '--config', config], 'pw-bob\n')).code, 0);
  await chmod(join(dataDir, 'relayguard.db'), 0o644);
  assert.equal((await cli(['user', 'add', 'carol@local.test', '--password-stdin', '--config', config], 'pw-carol\n')).code, 0);
  assert.equal((await lstat(join(dataDir, 'relayguard.db'))).mode & 0o777, 0o600);
});
