/**
 * The daemon around the relay (field report 1: H2, H3, L8), against real `relayguard serve` processes:
 *   - SIGHUP re-reads the configuration and applies it without dropping a session: a listener added, one removed,
 *     one changed; a renewed certificate served to new connections; a broken file keeps the running configuration.
 *   - SIGTERM during a DATA transfer: the transaction completes with 250 and is in the queue (or the client gets a
 *     4xx), never a 250 for a message that is lost; the process exits 0.
 *   - SIGTERM to `npm start`'s PID leaves no process and no listening port; --pid-file; the process is named.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import * as tls from 'node:tls';
import { stringify } from 'yaml';
import { startServe, addMailboxes, type ServeProcess } from '../../src/testing/serve-process.ts';
import { freePort } from '../../src/testing/ports.ts';
import { generateSelfSigned } from '../../src/smtp/tls-cert.ts';
import { QueueStore } from '../../src/queue/index.ts';
import { NULL_LOGGER } from '../../src/core/log.ts';
import { p1, expectReply, sleep } from './hostile-helpers.ts';

const ROOT = resolve(import.meta.dirname, '..', '..');

async function waitLog(s: ServeProcess, msg: string, from: number, timeoutMs = 15_000): Promise<Record<string, unknown>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const hit = s.logs.slice(from).find((l) => l['msg'] === msg);
    if (hit) return hit;
    if (Date.now() > deadline) throw new Error(`no "${msg}" log within ${timeoutMs} ms; logs since: ${JSON.stringify(s.logs.slice(from))}; stderr: ${s.stderr()}`);
    await sleep(50);
  }
}

function refused(port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = netConnect({ host: '127.0.0.1', port });
    s.once('connect', () => { s.destroy(); res(false); });
    s.once('error', () => res(true));
  });
}

async function peerFingerprint(port: number): Promise<string> {
  return new Promise((res, rej) => {
    const s = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, servername: 'localhost' }, () => {
      const raw = s.getPeerCertificate().raw;
      s.destroy();
      res(createHash('sha256').update(raw).digest('hex'));
    });
    s.once('error', rej);
  });
}

test('SIGHUP: listeners added, removed and changed, certificate renewed, sessions in progress kept; a broken file keeps the running configuration', { timeout: 60_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'relayguard-hup-'));
  const certA = await generateSelfSigned('a.local.test');
  const certB = await generateSelfSigned('b.local.test');
  await writeFile(join(dir, 'cert.pem'), certA.cert);
  await writeFile(join(dir, 'key.pem'), certA.key, { mode: 0o600 });
  const ports = { mx: await freePort(), submission: await freePort(), submissions: await freePort() };
  const extra = await freePort();
  const base = {
    hostname: 'mx.local.test',
    dataDir: dir,
    localDomains: ['local.test'],
    delivery: { enabled: false },
    dnsbl: { enabled: false },
    web: { enabled: false },
    tls: { cert: join(dir, 'cert.pem'), key: join(dir, 'key.pem') },
  };
  const listeners = [
    { name: 'mx', role: 'mx', address: '127.0.0.1', port: ports.mx, tls: 'starttls' },
    { name: 'submission', role: 'submission', address: '127.0.0.1', port: ports.submission, tls: 'starttls' },
    { name: 'submissions', role: 'submission', address: '127.0.0.1', port: ports.submissions, tls: 'implicit' },
  ];
  const serve = await startServe({ dataDir: dir, ports, config: { ...base, listeners } });
  try {
    const before = await peerFingerprint(ports.submissions);
    // A transaction open across the reload.
    const open = await p1(ports.mx);
    expectReply(await open.cmd('MAIL FROM:<a@remote.test>'), 250, '2.1.0', open);
    expectReply(await open.cmd('RCPT TO:<u@local.test>'), 250, '2.1.5', open);

    // Reload: mx unchanged, submission removed, submissions changed (renamed), a new mx listener; new certificate.
    await writeFile(join(dir, 'cert.pem'), certB.cert);
    await writeFile(join(dir, 'key.pem'), certB.key, { mode: 0o600 });
    await writeFile(serve.configFile, stringify({
      ...base,
      listeners: [
        listeners[0],
        { ...listeners[2], name: 'submissions-465' },
        { name: 'mx-extra', role: 'mx', address: '127.0.0.1', port: extra, tls: 'none' },
      ],
    }));
    let mark = serve.logs.length;
    process.kill(serve.pid, 'SIGHUP');
    const done = await waitLog(serve, 'configuration reloaded', mark);
    assert.deepEqual(done['listeners_added'], ['mx-extra']);
    assert.deepEqual(done['listeners_removed'], ['submission']);
    assert.deepEqual(done['listeners_changed'], ['submissions-465']);
    assert.equal(done['certificate_reloaded'], true);

    // The session that was open goes on and its message is queued.
    expectReply(await open.cmd('DATA'), 354, undefined, open);
    expectReply(await open.cmd('Subject: across a reload\r\n\r\nx\r\n.'), 250, '2.0.0', open);
    open.close();
    // The new listener answers, the removed one is gone, the certificate is the new one.
    const e = await p1(extra);
    expectReply(await e.cmd('QUIT'), 221, undefined, e);
    e.close();
    assert.equal(await refused(ports.submission), true, 'the removed listener still accepts');
    const after = await peerFingerprint(ports.submissions);
    assert.notEqual(after, before, 'the renewed certificate is not served');
    assert.equal(after, createHash('sha256').update(new X509Certificate(certB.cert).raw).digest('hex'));

    // A broken file: logged, the running configuration stays.
    await writeFile(serve.configFile, 'listeners: [ {role: mx, port: notaport ]\n');
    mark = serve.logs.length;
    process.kill(serve.pid, 'SIGHUP');
    const failed = await waitLog(serve, 'reload failed; keeping the running configuration', mark);
    assert.equal(failed['level'], 'error');
    assert.match(String(failed['err_code']), /^ERR_CONFIG/);
    const still = await p1(extra);
    expectReply(await still.cmd('NOOP'), 250, undefined, still);
    still.close();
    // An open-relay hazard in the new file is refused too.
    await writeFile(serve.configFile, stringify({ ...base, listeners, trustedNetworks: ['0.0.0.0/0'] }));
    mark = serve.logs.length;
    process.kill(serve.pid, 'SIGHUP');
    await waitLog(serve, 'reload refused; keeping the running configuration', mark);
    assert.equal(await refused(ports.submission), true);
    assert.equal(serve.child.exitCode, null, 'serve died');
  } finally {
    await serve.stop();
    await rm(dir, { recursive: true, force: true });
  }
});

test('SIGTERM during a DATA transfer: the transaction completes with 250 and is queued; idle sessions get 421; exit 0', { timeout: 60_000 }, async () => {
  const serve = await startServe();
  const dataDir = serve.dataDir;
  try {
    const idle = await p1(serve.ports.mx);
    const c = await p1(serve.ports.mx);
    expectReply(await c.cmd('MAIL FROM:<a@remote.test>'), 250, '2.1.0', c);
    expectReply(await c.cmd('RCPT TO:<u@local.test>'), 250, '2.1.5', c);
    expectReply(await c.cmd('DATA'), 354, undefined, c);
    c.write('Subject: in flight\r\nMessage-ID: <sigterm-1@client.test>\r\n\r\nfirst half\r\n');
    await sleep(200);
    const mark = serve.logs.length;
    process.kill(serve.pid, 'SIGTERM');
    await waitLog(serve, 'stopping', mark);
    // The idle session is told at once.
    const bye = await idle.readReply();
    assert.equal(bye.code, 421, bye.lines.join(' '));
    // New connections are no longer accepted.
    assert.equal(await refused(serve.ports.mx), true);
    // The transfer in progress finishes and gets its 250; then the session is closed with 421.
    c.write('second half\r\n.\r\n');
    const r = await c.readReply();
    assert.equal(r.code, 250, r.lines.join(' '));
    const queueId = /queued as (\S+)/.exec(r.lines.join(' '))?.[1];
    assert.ok(queueId);
    const last = await c.readReply();
    assert.equal(last.code, 421);
    c.close();
    idle.close();
    assert.equal(await serve.stop(), 0);
    // After the stop the message is in the queue: a 250 was never given for a lost message.
    const q = QueueStore.open({ dataDir, logger: NULL_LOGGER });
    try {
      const m = q.get(queueId!);
      assert.ok(m, 'the 250 message is not in the queue');
      assert.deepEqual(m.recipients.map((x) => x.address), ['u@local.test']);
    } finally {
      await q.close();
    }
  } finally {
    await serve.stop();
    await serve.cleanup();
  }
});

test('SIGTERM to `npm start` leaves no process and no listening port; --pid-file; the process is named relayguard', { timeout: 60_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'relayguard-npm-'));
  const port = await freePort();
  await addMailboxes(join(dir, 'data'), []);
  const configFile = join(dir, 'relayguard.yaml');
  await writeFile(configFile, stringify({
    dataDir: join(dir, 'data'), listeners: [{ role: 'mx', address: '127.0.0.1', port }], dnsbl: { enabled: false }, web: { enabled: false },
  }));
  const npm = spawn('npm', ['start', '--silent', '--', '--pid-file', join(dir, 'serve.pid')], {
    cwd: ROOT, env: { ...process.env, RELAYGUARD_CONFIG: configFile }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  npm.stdout!.setEncoding('utf8').on('data', (d: string) => { out += d; });
  npm.stderr!.setEncoding('utf8').on('data', (d: string) => { out += d; });
  let pid = 0;
  try {
    const deadline = Date.now() + 30_000;
    while (!out.includes('"msg":"listening"')) {
      if (Date.now() > deadline || npm.exitCode !== null) throw new Error(`npm start did not come up:\n${out}`);
      await sleep(100);
    }
    pid = Number(/"pid":(\d+)/.exec(out)?.[1]);
    assert.ok(pid > 0);
    assert.equal(readFileSync(join(dir, 'serve.pid'), 'utf8').trim(), String(pid));
    assert.equal(readFileSync(`/proc/${pid}/comm`, 'utf8').trim(), 'relayguard');
    assert.match(out, /"config_source":"RELAYGUARD_CONFIG"/);
    npm.kill('SIGTERM');
    const gone = Date.now() + 15_000;
    while (existsSync(`/proc/${pid}`) || npm.exitCode === null) {
      if (Date.now() > gone) throw new Error(`serve (${pid}) still running after SIGTERM to npm:\n${out}`);
      await sleep(100);
    }
    assert.equal(await refused(port), true, 'the port is still open');
    assert.equal(existsSync(join(dir, 'serve.pid')), false, 'the pid file is left behind');
  } finally {
    if (pid > 0 && existsSync(`/proc/${pid}`)) process.kill(pid, 'SIGKILL');
    if (npm.exitCode === null) npm.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  }
});
