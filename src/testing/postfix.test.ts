import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { hasBinary, postfixProcesses, smtpSource, startPostfix, type PostfixInstance } from './postfix.ts';
import { freePort } from './ports.ts';

const canRun = process.getuid?.() === 0 && hasBinary('/usr/sbin/postfix') && hasBinary('/usr/sbin/postconf');

/** A minimal line-at-a-time SMTP client: each call sends one line and returns the complete reply. */
async function smtpSession(port: number): Promise<{ send(line: string | null): Promise<string>; close(): void }> {
  const socket: Socket = connect({ host: '127.0.0.1', port });
  socket.setEncoding('latin1');
  let buf = '';
  let waiter: (() => void) | null = null;
  socket.on('data', (d: string) => { buf += d; waiter?.(); });
  socket.on('error', () => {});
  const readReply = async (): Promise<string> => {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const m = /^(?:\d{3}-[^\r\n]*\r\n)*\d{3} [^\r\n]*\r\n/.exec(buf);
      if (m) { buf = buf.slice(m[0].length); return m[0]; }
      if (Date.now() > deadline) throw new Error(`no reply, got ${JSON.stringify(buf)}`);
      await new Promise<void>((resolve) => { waiter = resolve; setTimeout(resolve, 100); });
      waiter = null;
    }
  };
  return {
    async send(line) {
      if (line !== null) socket.write(`${line}\r\n`);
      return readReply();
    },
    close() { socket.end(); },
  };
}

async function waitForLog(pf: PostfixInstance, pattern: RegExp, timeoutMs = 15_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const log = await pf.readLog();
    const line = log.split('\n').find((l) => pattern.test(l));
    if (line) return line;
    if (Date.now() > deadline) throw new Error(`log never matched ${pattern}:\n${log}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('private Postfix', () => {
  it('has what it needs: root and the Debian postfix package (.ci/run installs it)', () => {
    assert.ok(canRun, 'needs root and the Debian postfix package');
  });
  it('two instances coexist: relay-to forwards to a discarding one, relaying elsewhere is denied', { timeout: 60_000 }, async () => {
    const sink = await startPostfix({ mode: 'discard' });
    let front: PostfixInstance | null = null;
    try {
      front = await startPostfix({ mode: 'relay-to', relayHost: `127.0.0.1:${sink.port}`, relayDomains: ['peers.test', 'other.test'] });
      assert.notEqual(front.port, sink.port);
      assert.notEqual(front.queueDir, sink.queueDir);
      assert.ok(postfixProcesses(sink.configDir).length > 0);

      const s = await smtpSession(front.port);
      assert.match(await s.send(null), new RegExp(`^220 .*Postfix-peer ${front.bannerToken}\\r\\n$`));
      assert.match(await s.send('EHLO client.test'), /^250-/);
      assert.match(await s.send('MAIL FROM:<a@example.org>'), /^250 /);
      assert.match(await s.send('RCPT TO:<v@example.net>'), /^554 5\.7\.1 <v@example\.net>: Relay access denied/);
      assert.match(await s.send('RCPT TO:<u@peers.test>'), /^250 /);
      assert.match(await s.send('DATA'), /^354 /);
      const queued = await s.send('Subject: hello\r\n\r\nbody\r\n.');
      assert.match(queued, /^250 2\.0\.0 Ok: queued as /);
      assert.match(await s.send('QUIT'), /^221 /);
      s.close();

      // The front instance relays to the sink over SMTP; the sink discards.
      await waitForLog(front, new RegExp(`to=<u@peers\\.test>, relay=127\\.0\\.0\\.1\\[127\\.0\\.0\\.1\\]:${sink.port},.*status=sent`));
      await waitForLog(sink, /discard\[\d+\]: .*to=<u@peers\.test>.*status=sent/);

      if (hasBinary('/usr/sbin/smtp-source')) {
        const { wallMs } = await smtpSource({
          port: sink.port, sessions: 2, messages: 10, size: 100, reuse: true, from: 'a@example.org', to: 'u@peers.test',
        });
        assert.ok(wallMs > 0);
        await assert.rejects(
          smtpSource({ port: sink.port, sessions: 1, messages: 1, size: 10, reuse: false, from: 'a@example.org', to: 'v@example.net' }),
          /smtp-source .* exited/,
        );
      }
    } finally {
      const dirs = [sink.configDir, front?.configDir].filter((d): d is string => d !== undefined);
      await front?.stop();
      await sink.stop();
      await sink.stop(); // idempotent
      for (const d of dirs) {
        assert.deepEqual(postfixProcesses(d), [], `processes left for ${d}`);
        assert.equal(existsSync(d), false);
      }
    }
  });
});

describe('smtpSource', () => {
  it('refuses anything but 127.0.0.1 and odd arguments', async () => {
    const base = { port: 25, sessions: 1, messages: 1, size: 1, reuse: false, from: 'a@example.org', to: 'u@peers.test' };
    await assert.rejects(smtpSource({ ...base, host: '10.0.0.1' }), /only targets 127\.0\.0\.1/);
    await assert.rejects(smtpSource({ ...base, port: 0 }), /bad port/);
    await assert.rejects(smtpSource({ ...base, to: '-t evil' }), /plain addresses/);
    await assert.rejects(smtpSource({ ...base, sessions: 1.5 }), /positive integers/);
  });
});

describe('freePort and hasBinary', () => {
  it('work', async () => {
    const p = await freePort();
    assert.ok(Number.isInteger(p) && p > 0 && p < 65536);
    assert.equal(hasBinary('sh'), true);
    assert.equal(hasBinary('/bin/sh'), true);
    assert.equal(hasBinary('definitely-not-a-binary-relayguard'), false);
  });
});
