import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import {
  SmtpClient, SmtpAbortedError, SmtpConnectionError, SmtpProtocolError, SmtpTimeoutError, SmtpTlsError, SmtpBodyError,
  parseCapabilities, certificateInfo, type SmtpConnectOptions,
} from './client.ts';
import { dotStuff } from './dot-stuffer.ts';
import { generateSelfSigned } from './tls-cert.ts';
import { startRelay, type Harness } from '../testing/relay-harness.ts';
import { startFakeMta, type FakeMta, type FakeMtaOptions, type FakeSession } from '../testing/fake-mta.ts';
import { freePort } from '../testing/ports.ts';
import { hasBinary, startPostfix } from '../testing/postfix.ts';

const SHORT = { connect: 3000, greeting: 3000, command: 3000, dataBlock: 3000, dataDone: 3000 };
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function connectTo(port: number, extra: Partial<SmtpConnectOptions> = {}): Promise<SmtpClient> {
  return SmtpClient.connect({ host: '127.0.0.1', port, timeouts: SHORT, transcript: true, ...extra, ...(extra.timeouts ? { timeouts: { ...SHORT, ...extra.timeouts } } : {}) });
}

async function withFake(options: FakeMtaOptions, fn: (fake: FakeMta) => Promise<void>): Promise<void> {
  const fake = await startFakeMta(options);
  try {
    await fn(fake);
  } finally {
    await fake.close();
  }
}

function isErr<T extends Error>(cls: new (...a: never[]) => T, check: (e: T) => void = () => {}): (err: unknown) => boolean {
  return (err: unknown) => {
    assert.ok(err instanceof cls, `expected ${cls.name}, got ${String((err as Error)?.stack ?? err)}`);
    check(err);
    return true;
  };
}

/** The reference normalization of a body (what the receiver stores after un-stuffing). */
function normalized(body: string): string {
  const s = body.replace(/\0/g, '').replace(/\r\n|\r|\n/g, (m) => (m === '\r' ? ' ' : '\r\n'));
  return s === '' || s.endsWith('\r\n') ? s : `${s}\r\n`;
}

function assertWireClean(wire: Buffer): void {
  for (let i = 0; i < wire.length; i++) {
    const c = wire[i]!;
    assert.notEqual(c, 0, `NUL at ${i}`);
    if (c === 0x0d) assert.equal(wire[i + 1], 0x0a, `bare CR at ${i}`);
    if (c === 0x0a) assert.equal(wire[i - 1], 0x0d, `bare LF at ${i}`);
  }
  const first = wire.indexOf('\r\n.\r\n');
  assert.equal(first, wire.length - 5, 'exactly one CRLF.CRLF, at the very end');
}

const TRICKY = 'Subject: tricky\r\n\r\n.leading dot\r\nsmuggle1\n.\r\nsmuggle2\r.\rNUL\0here\r\n.\r\nlast line no eol';

// ---------------------------------------------------------------------------------------------------------
// Against our own server

describe('client against relayguard', () => {
  let h: Harness;
  before(async () => {
    h = await startRelay({ users: [{ name: 'alice', password: 'secret', addresses: ['alice@local.test'] }] });
  });
  after(async () => { await h.close(); });

  test('client: EHLO capabilities from our server', async () => {
    const c = await connectTo(h.ports.mx);
    assert.equal(c.greeting.code, 220);
    const r = await c.ehlo('client.test');
    assert.equal(r.code, 250);
    assert.equal(c.esmtp, true);
    for (const k of ['PIPELINING', 'STARTTLS', 'ENHANCEDSTATUSCODES', '8BITMIME', 'SMTPUTF8', 'CHUNKING', 'DSN']) assert.ok(c.hasCapability(k), k);
    assert.deepEqual(c.capabilities.get('SIZE'), ['10485760']);
    assert.equal(c.hasCapability('AUTH'), false, 'no AUTH before TLS');
    assert.equal((await c.noop()).code, 250);
    assert.equal((await c.rset()).code, 250);
    assert.equal((await c.vrfy('alice')).code, 502);
    assert.equal((await c.expn('staff')).code, 502);
    assert.equal((await c.quit())?.code, 221);
    assert.equal(c.closed, true);
  });

  test('client: STARTTLS then AUTH PLAIN on the submission port, message accepted', async () => {
    const c = await connectTo(h.ports.submission, { servername: 'localhost' });
    await c.ehlo('client.test');
    assert.ok(c.hasCapability('STARTTLS'));
    const st = await c.startTls();
    assert.equal(st.reply.code, 220);
    assert.equal(st.discardedBytes, 0);
    assert.ok(st.tls);
    assert.match(st.tls.protocol ?? '', /^TLSv1\.[23]$/);
    assert.equal(st.tls.authorized, false);
    assert.equal(st.tls.authorizationError, 'DEPTH_ZERO_SELF_SIGNED_CERT');
    const cert = st.tls.peerCertificate!;
    assert.equal(cert.selfSigned, true);
    assert.equal(cert.subject, 'CN=localhost');
    assert.ok(cert.subjectAltNames.includes('DNS:localhost'), cert.subjectAltNames.join(','));
    assert.ok(cert.subjectAltNames.includes('IP Address:127.0.0.1'));
    assert.match(cert.fingerprint256, /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
    assert.ok(cert.validTo.getTime() > Date.now());
    assert.equal(c.capabilities.size, 0, 'pre-TLS capabilities forgotten');
    assert.equal(c.esmtp, false);
    await c.ehlo('client.test');
    assert.equal(c.hasCapability('STARTTLS'), false);
    assert.deepEqual(c.capabilities.get('AUTH'), ['PLAIN', 'LOGIN']);
    assert.equal((await c.auth('PLAIN', 'alice', 'secret')).code, 235);
    const env = await c.sendEnvelope({ mailFrom: '<alice@local.test>', rcptTo: ['<bob@remote.test>'], data: true });
    assert.equal(env.mailFrom.code, 250);
    assert.equal(env.rcptTo[0]!.code, 250);
    assert.equal(env.data?.code, 354);
    const d = await c.data(Buffer.from('Subject: hi\r\n\r\nhello\r\n'));
    assert.equal(d.phase, 'dot');
    assert.equal(d.reply.code, 250);
    await c.quit();
    const secretB64 = Buffer.from('\0alice\0secret').toString('base64');
    assert.ok(c.transcript.some((e) => e.dir === 'C' && e.line === 'AUTH PLAIN <redacted>'));
    assert.ok(!c.transcript.some((e) => e.line.includes(secretB64) || e.line.includes('secret')));
  });

  test('client: AUTH LOGIN works and a wrong password gets 535', async () => {
    const c = await connectTo(h.ports.submission);
    await c.ehlo('client.test');
    await c.startTls();
    await c.ehlo('client.test');
    assert.equal((await c.auth('LOGIN', 'alice', 'wrong')).code, 535);
    assert.equal((await c.auth('LOGIN', 'alice', 'secret')).code, 235);
    assert.equal(c.transcript.filter((e) => e.line === '<redacted>').length, 4);
    await c.quit();
  });

  test('client: implicit TLS on the submissions port', async () => {
    const c = await connectTo(h.ports.submissions, { tls: 'implicit' });
    assert.equal(c.greeting.code, 220);
    assert.ok(c.tls);
    assert.equal(c.tls.peerCertificate?.selfSigned, true);
    await c.ehlo('client.test');
    assert.equal(c.hasCapability('STARTTLS'), false);
    assert.ok(c.hasCapability('AUTH'));
    await c.quit();
  });

  test('client: pipelined envelope, the stored body is the un-stuffed normalized body after our Received header', async () => {
    const c = await connectTo(h.ports.mx);
    await c.ehlo('client.test');
    const env = await c.sendEnvelope({ mailFrom: '<a@client.test>', mailParams: { BODY: '8BITMIME' }, rcptTo: ['<u@local.test>', '<v@local.test>'], data: true });
    assert.deepEqual([env.mailFrom.code, ...env.rcptTo.map((r) => r.code), env.data?.code], [250, 250, 250, 354]);
    const d = await c.data(Readable.from([Buffer.from(TRICKY.slice(0, 40)), Buffer.from(TRICKY.slice(40))]));
    assert.equal(d.reply.code, 250, JSON.stringify(d.reply));
    const id = /queued as (\S+)/.exec(d.reply.lines[0]!)?.[1];
    assert.ok(id);
    await c.quit();
    const detail = h.queue.get(id);
    assert.ok(detail);
    const stored = h.queue.readBody(detail.queueId)!.toString('latin1');
    const body = normalized(TRICKY);
    assert.ok(stored.endsWith(body), JSON.stringify(stored));
    const head = stored.slice(0, stored.length - body.length);
    assert.match(head, /^Received: from client\.test \(\[127\.0\.0\.1\]\)\r\n\tby mx\.local\.test \(relayguard\) with ESMTP id \S+;\r\n\t[^\r\n]+\r\n$/);
    // The wire transcript shows the group was sent before any reply was read.
    const t = c.transcript.map((e) => `${e.dir} ${e.line}`);
    const i = t.indexOf('C MAIL FROM:<a@client.test> BODY=8BITMIME');
    assert.deepEqual(t.slice(i, i + 4), ['C MAIL FROM:<a@client.test> BODY=8BITMIME', 'C RCPT TO:<u@local.test>', 'C RCPT TO:<v@local.test>', 'C DATA']);
  });

  test('client: BDAT chunks to our server', async () => {
    const c = await connectTo(h.ports.mx);
    await c.ehlo('client.test');
    assert.ok(c.hasCapability('CHUNKING'));
    assert.equal((await c.mailFrom('<a@client.test>')).code, 250);
    assert.equal((await c.rcptTo('<u@local.test>')).code, 250);
    assert.equal((await c.bdat(Buffer.from('Subject: b\r\n\r\n'))).code, 250);
    const r = await c.bdat(Buffer.from('.body\r\n'), { last: true });
    assert.equal(r.code, 250);
    const id = /queued as (\S+)/.exec(r.lines[0]!)![1]!;
    const stored = h.queue.readBody(id)!.toString('latin1');
    assert.ok(stored.endsWith('Subject: b\r\n\r\n.body\r\n'));
    await c.quit();
  });
});

// ---------------------------------------------------------------------------------------------------------
// Against the fake MTA

test('client: EHLO refused with 502 falls back to HELO; 421 does not', async () => {
  await withFake({ commands: { EHLO: '502 5.5.1 Error: command not implemented\r\n' } }, async (fake) => {
    const c = await connectTo(fake.port);
    const r = await c.ehlo('client.test');
    assert.equal(r.code, 250);
    assert.equal(c.esmtp, false);
    assert.equal(c.capabilities.size, 0);
    const s = await fake.session();
    assert.deepEqual(s.commands.slice(0, 2), ['EHLO client.test', 'HELO client.test']);
    await c.quit();
  });
  await withFake({ commands: { EHLO: '421 4.3.2 go away\r\n' } }, async (fake) => {
    const c = await connectTo(fake.port);
    assert.equal((await c.ehlo('client.test')).code, 421);
    assert.deepEqual((await fake.session()).commands, ['EHLO client.test']);
    c.close();
  });
});

test('client: capability parsing (AUTH= form, merging, case)', () => {
  const caps = parseCapabilities(['mx', 'pipelining', 'AUTH=LOGIN', 'AUTH plain login', 'SIZE 100', '  ', 'X-FOO a b']);
  assert.deepEqual([...caps.entries()], [['PIPELINING', []], ['AUTH', ['LOGIN', 'PLAIN']], ['SIZE', ['100']], ['X-FOO', ['a', 'b']]]);
});

test('client TLS-12: bytes after the 220 to STARTTLS are discarded, never parsed as a reply', async () => {
  const { cert, key } = await generateSelfSigned('localhost');
  await withFake({ tls: { cert, key }, commands: { STARTTLS: { reply: '220 ready\r\n250-INJECTED\r\n', then: 'starttls' } } }, async (fake) => {
    const c = await connectTo(fake.port);
    await c.ehlo('client.test');
    assert.ok(c.hasCapability('STARTTLS'));
    const st = await c.startTls();
    assert.equal(st.reply.code, 220);
    assert.equal(st.discardedBytes, '250-INJECTED\r\n'.length);
    assert.ok(st.tls);
    assert.equal(c.capabilities.size, 0);
    const r = await c.ehlo('client.test');
    assert.deepEqual(r.lines, ['fake.test', 'PIPELINING', 'SIZE 10240000', '8BITMIME']);
    assert.equal(c.hasCapability('STARTTLS'), false);
    assert.equal((await c.noop()).code, 250);
    assert.ok(!c.transcript.some((e) => e.line.includes('INJECTED')), 'the injected line was never read as a reply');
    const s = await fake.session();
    assert.equal(s.tls, true);
    assert.deepEqual(s.commands, ['EHLO client.test', 'STARTTLS', 'EHLO client.test', 'NOOP']);
    await c.quit();
  });
});

test('client TLS-12: injected plaintext arriving after the 220 breaks the handshake, never a reply', async () => {
  const { cert, key } = await generateSelfSigned('localhost');
  await withFake({
    tls: { cert, key },
    commands: {
      STARTTLS: async (_cmd, s) => {
        s.write('220 ready\r\n');
        await sleep(100);
        return { reply: '250-INJECTED\r\n250 more\r\n', then: 'starttls' };
      },
    },
  }, async (fake) => {
    const c = await connectTo(fake.port);
    await c.ehlo('client.test');
    await assert.rejects(c.startTls(), isErr(SmtpTlsError, (e) => { assert.equal(e.phase, 'tls'); assert.equal(e.code, 'ERR_SMTP_TLS'); }));
    assert.equal(c.closed, true);
    assert.ok(!c.transcript.some((e) => e.line.includes('INJECTED')));
  });
});

test('client TLS-13: 454 to STARTTLS leaves TLS off and the caller decides', async () => {
  await withFake({ commands: { STARTTLS: '454 4.7.0 TLS not available due to local problem\r\n' } }, async (fake) => {
    const c = await connectTo(fake.port);
    await c.ehlo('client.test');
    const st = await c.startTls();
    assert.equal(st.reply.code, 454);
    assert.equal(st.tls, null);
    assert.equal(c.tls, null);
    assert.ok(c.hasCapability('PIPELINING'), 'capabilities kept when TLS did not start');
    await c.quit();
  });
});

test('client: certificate verification on request (ca + rejectUnauthorized) and refusal of an untrusted one', async () => {
  const { cert, key } = await generateSelfSigned('localhost');
  await withFake({ tls: { cert, key }, implicitTls: true }, async (fake) => {
    const ok = await connectTo(fake.port, { tls: 'implicit', servername: 'localhost', tlsOptions: { ca: cert, rejectUnauthorized: true } });
    assert.equal(ok.tls?.authorized, true);
    assert.equal(ok.tls?.authorizationError, null);
    assert.deepEqual(ok.tls?.peerCertificate, certificateInfo(cert));
    ok.close();
    await assert.rejects(connectTo(fake.port, { tls: 'implicit', tlsOptions: { rejectUnauthorized: true } }), isErr(SmtpTlsError, (e) => assert.equal(e.phase, 'tls')));
  });
});

describe('client OB-06: hostile replies are protocol errors with bounded memory', () => {
  const cases: [string, FakeMtaOptions['commands'], RegExp][] = [
    ['2500 ok', { EHLO: { reply: '2500 ok\r\n', then: 'hang' } }, /Malformed reply code/],
    ['25 then CRLF', { EHLO: { reply: '25\r\n', then: 'hang' } }, /Malformed reply code/],
    ['NUL in a reply', { EHLO: { reply: '250-fake\r\n250 PIPE\0LINING\r\n', then: 'hang' } }, /NUL/],
    ['code changes mid-reply', { EHLO: { reply: '250-fake\r\n220 PIPELINING\r\n', then: 'hang' } }, /changed/],
    ['1 MB reply line', { EHLO: { reply: `250 ${'x'.repeat(1 << 20)}\r\n`, then: 'hang' } }, /longer than 2048/],
    ['no CRLF before close', { EHLO: { reply: '250 fake.test', then: 'close' } }, /closed in the middle of a reply/],
    ['partial multi-line then close', { EHLO: { reply: '250-fake.test\r\n250-PIPELINING\r\n', then: 'close' } }, /closed in the middle of a reply/],
  ];
  for (const [name, commands, pattern] of cases) {
    test(`client OB-06: ${name}`, async () => {
      await withFake({ commands }, async (fake) => {
        const c = await connectTo(fake.port);
        await assert.rejects(c.ehlo('client.test'), isErr(SmtpProtocolError, (e) => {
          assert.equal(e.code, 'ERR_SMTP_PROTOCOL');
          assert.equal(e.phase, 'ehlo');
          assert.match(e.message, pattern);
        }));
        assert.equal(c.closed, true, 'the connection is dropped after a protocol error');
        await assert.rejects(c.noop(), isErr(SmtpConnectionError));
      });
    });
  }

  test('client OB-06: endless 250- continuations stop at maxReplyLines, the server is cut off', async () => {
    let written = 0;
    await withFake({
      commands: {
        EHLO: async (_cmd, s) => {
          let closed = false;
          void s.closed.then(() => { closed = true; });
          const block = '250-endless continuation line\r\n'.repeat(1000);
          while (!closed && written < 200 * 1024 * 1024) {
            s.write(block);
            written += block.length;
            await sleep(1);
          }
          return { then: 'hang' };
        },
      },
    }, async (fake) => {
      const c = await connectTo(fake.port, { maxReplyLines: 50 });
      const before = process.memoryUsage().arrayBuffers;
      await assert.rejects(c.ehlo('client.test'), isErr(SmtpProtocolError, (e) => assert.match(e.message, /more than 50 lines/)));
      assert.ok(process.memoryUsage().arrayBuffers - before < 32 * 1024 * 1024);
      await (await fake.session()).closed;
      assert.ok(written < 200 * 1024 * 1024, 'the client hung up; the fake stopped writing');
    });
  });

  test('client OB-06: a hostile greeting fails connect() with phase greeting', async () => {
    await withFake({ greeting: '2200 hi\r\n' }, async (fake) => {
      await assert.rejects(connectTo(fake.port), isErr(SmtpProtocolError, (e) => assert.equal(e.phase, 'greeting')));
    });
  });
});

test('client OB-03: a 421 or 554 greeting is returned to the caller', async () => {
  await withFake({ greeting: { reply: '421 4.3.2 Service not available\r\n', then: 'close' } }, async (fake) => {
    const c = await connectTo(fake.port);
    assert.equal(c.greeting.code, 421);
    assert.equal(c.greeting.enhanced, '4.3.2');
    assert.equal(await c.quit(), null, 'QUIT tolerates the server closing first');
    assert.equal(c.closed, true);
  });
  await withFake({ greeting: '554 5.7.1 No SMTP service here\r\n' }, async (fake) => {
    const c = await connectTo(fake.port);
    assert.equal(c.greeting.code, 554);
    assert.deepEqual(c.greeting.lines, ['5.7.1 No SMTP service here']);
    assert.equal((await c.quit())?.code, 221);
  });
});

/** A large body as a stream of 64 KiB chunks. */
function bigBody(total: number): Readable {
  const line = Buffer.from(`${'x'.repeat(78)}\r\n`);
  const chunk = Buffer.concat(Array.from({ length: Math.ceil(65536 / line.length) }, () => line));
  let sent = 0;
  return new Readable({
    read() {
      if (sent >= total) { this.push(null); return; }
      sent += chunk.length;
      this.push(chunk);
    },
  });
}

test('client OB-04: connection closed after 354 half-way through the body is phase data', async () => {
  await withFake({ commands: { DATA: { reply: '354 go\r\n', then: 'data', data: { closeAfterBytes: 1000 } } } }, async (fake) => {
    const c = await connectTo(fake.port);
    await c.ehlo('client.test');
    await c.sendEnvelope({ mailFrom: '<a@b.test>', rcptTo: ['<c@d.test>'] });
    await assert.rejects(c.data(bigBody(64 * 1024 * 1024)), isErr(SmtpConnectionError, (e) => {
      assert.equal(e.code, 'ERR_SMTP_CONNECTION');
      assert.equal(e.phase, 'data');
      assert.match(e.message, /while sending message body/);
    }));
    assert.equal(c.closed, true);
  });
});

test('client OB-04: TCP RST mid-body and mid-session', async () => {
  await withFake({ commands: { DATA: { reply: '354 go\r\n', then: 'data', data: { resetAfterBytes: 5000 } } } }, async (fake) => {
    const c = await connectTo(fake.port);
    await c.ehlo('client.test');
    await c.sendEnvelope({ mailFrom: '<a@b.test>', rcptTo: ['<c@d.test>'] });
    await assert.rejects(c.data(bigBody(64 * 1024 * 1024)), isErr(SmtpConnectionError, (e) => assert.equal(e.phase, 'data')));
  });
  await withFake({ commands: { RCPT: { then: 'reset' } } }, async (fake) => {
    const c = await connectTo(fake.port);
    await c.ehlo('client.test');
    assert.equal((await c.mailFrom('<a@b.test>')).code, 250);
    await assert.rejects(c.rcptTo('<c@d.test>'), isErr(SmtpConnectionError, (e) => {
      assert.equal(e.phase, 'rcpt');
      assert.equal((e.cause as NodeJS.ErrnoException | undefined)?.code, 'ECONNRESET');
    }));
  });
  await withFake({ greeting: { delayMs: 50, then: 'reset' } }, async (fake) => {
    await assert.rejects(connectTo(fake.port), isErr(SmtpConnectionError, (e) => assert.equal(e.phase, 'greeting')));
  });
});

test('client OB-05: no reply to the final dot times out (dataDone) in phase dot', async () => {
  await withFake({ commands: { DATA: { reply: '354 go\r\n', then: 'data', data: { end: 'none' } } } }, async (fake) => {
    const c = await connectTo(fake.port, { timeouts: { dataDone: 300 } });
    await c.ehlo('client.test');
    await c.sendEnvelope({ mailFrom: '<a@b.test>', rcptTo: ['<c@d.test>'] });
    const t0 = Date.now();
    await assert.rejects(c.data(Buffer.from('hello\r\n')), isErr(SmtpTimeoutError, (e) => {
      assert.equal(e.code, 'ERR_SMTP_TIMEOUT');
      assert.equal(e.phase, 'dot');
      assert.equal(e.timeoutMs, 300);
      assert.match(e.message, /may be sent more than once/);
    }));
    assert.ok(Date.now() - t0 >= 280);
    assert.equal(c.closed, true);
    const s = await fake.session();
    assert.equal(s.messages[0]!.toString('latin1'), 'hello\r\n.\r\n');
  });
});

test('client: slow replies within the timeout succeed; a slow drip past the deadline times out', async () => {
  await withFake({
    commands: {
      MAIL: { delayMs: 200, reply: '250 2.1.0 slow\r\n' },
      RCPT: { reply: '250 2.1.5 drip\r\n', dripMs: 10 },
      NOOP: { reply: '250 2.0.0 very slow drip\r\n', dripMs: 30 },
    },
  }, async (fake) => {
    const c = await connectTo(fake.port, { timeouts: { command: 1000 } });
    await c.ehlo('client.test');
    assert.equal((await c.mailFrom('<a@b.test>')).code, 250);
    assert.deepEqual((await c.rcptTo('<c@d.test>')).lines, ['2.1.5 drip']);
    const c2 = await connectTo(fake.port, { timeouts: { command: 300 } });
    // 26 bytes at 30 ms each: each byte comes well within 300 ms, the whole reply does not (per-command deadline).
    await assert.rejects(c2.noop(), isErr(SmtpTimeoutError, (e) => assert.equal(e.phase, 'noop')));
    await c.quit();
  });
});

test('client: greeting timeout and connection refused', async () => {
  await withFake({ greeting: null }, async (fake) => {
    await assert.rejects(connectTo(fake.port, { timeouts: { greeting: 200 } }), isErr(SmtpTimeoutError, (e) => assert.equal(e.phase, 'greeting')));
  });
  const port = await freePort();
  await assert.rejects(connectTo(port), isErr(SmtpConnectionError, (e) => {
    assert.equal(e.phase, 'connect');
    assert.equal((e.cause as NodeJS.ErrnoException).code, 'ECONNREFUSED');
  }));
});

test('client SM-16: the body on the wire is CRLF-only, dot-stuffed, with exactly one terminator', async () => {
  await withFake({}, async (fake) => {
    const c = await connectTo(fake.port);
    await c.ehlo('client.test');
    await c.sendEnvelope({ mailFrom: '<a@b.test>', rcptTo: ['<c@d.test>'] });
    const body = 'a\n.\r\nb\r.\rc\0d\r\n.\r\n.\n.';
    const d = await c.data(Buffer.from(body, 'latin1'));
    assert.equal(d.reply.code, 250);
    await c.quit();
    const s = await fake.session();
    const wire = s.messages[0]!;
    assertWireClean(wire);
    assert.equal(wire.toString('latin1'), 'a\r\n..\r\nb . cd\r\n..\r\n..\r\n..\r\n.\r\n');
    assert.ok(wire.equals(dotStuff(Buffer.from(body, 'latin1'))));
    // Everything the client sent, byte-exact.
    assert.equal(s.received().toString('latin1'),
      'EHLO client.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n' + wire.toString('latin1') + 'QUIT\r\n');
  });
});

test('client SM-16: a large streamed body arrives intact with backpressure', async () => {
  await withFake({}, async (fake) => {
    const c = await connectTo(fake.port);
    await c.ehlo('client.test');
    await c.sendEnvelope({ mailFrom: '<a@b.test>', rcptTo: ['<c@d.test>'] });
    const d = await c.data(bigBody(8 * 1024 * 1024));
    assert.equal(d.reply.code, 250);
    await c.quit();
    const wire = (await fake.session()).messages[0]!;
    assert.ok(wire.length >= 8 * 1024 * 1024);
    assertWireClean(wire);
  });
});

test('client: a failing body source never sends the terminator', async () => {
  await withFake({}, async (fake) => {
    const c = await connectTo(fake.port);
    await c.ehlo('client.test');
    await c.sendEnvelope({ mailFrom: '<a@b.test>', rcptTo: ['<c@d.test>'] });
    async function* broken(): AsyncGenerator<Buffer> {
      yield Buffer.from('first part\r\n');
      throw new Error('disk read failed');
    }
    await assert.rejects(c.data(broken()), isErr(SmtpBodyError, (e) => assert.equal(e.phase, 'data')));
    const s = await fake.session();
    await s.closed;
    assert.equal(s.messages[0]!.toString('latin1'), 'first part\r\n');
  });
});

test('client: CR, LF or NUL in any argument is refused before anything is written', async () => {
  await withFake({}, async (fake) => {
    const c = await connectTo(fake.port);
    await c.ehlo('client.test');
    await assert.rejects(c.mailFrom('<a@b.test>\r\nRCPT TO:<x@y.test>'), TypeError);
    await assert.rejects(c.rcptTo('<a@b.test>\n'), TypeError);
    await assert.rejects(c.rcptTo('<a@b.test>', ['NOTIFY=NEVER\r\nDATA']), TypeError);
    await assert.rejects(c.rcptTo('<a@b.test>', { ORCPT: 'x\0' }), TypeError);
    await assert.rejects(c.send('NOOP\0'), TypeError);
    await assert.rejects(c.send('NOOP\rRSET'), TypeError);
    await assert.rejects(c.ehlo('x\r'), TypeError);
    await assert.rejects(c.vrfy('a\nb'), TypeError);
    await assert.rejects(c.expn('a\nb'), TypeError);
    await assert.rejects(c.pipeline(['NOOP', 'RSET\r\nQUIT']), TypeError);
    await assert.rejects(c.sendEnvelope({ mailFrom: '<a@b>', rcptTo: ['<c@d>\r\n'] }), TypeError);
    await assert.rejects(c.auth('PLAIN', 'a\0b', 'c'), TypeError);
    assert.equal((await c.noop()).code, 250);
    await c.quit();
    assert.deepEqual((await fake.session()).commands, ['EHLO client.test', 'NOOP', 'QUIT']);
  });
});

test('client: paths and raw commands are sent verbatim (malformed on purpose)', async () => {
  await withFake({}, async (fake) => {
    const c = await connectTo(fake.port);
    await c.ehlo('client.test');
    await c.mailFrom('<u@T@H>');
    await c.rcptTo('u@T');
    await c.rcptTo('<"to@domain">', ['NOTIFY=NEVER']);
    await c.rcptTo('<@[127.0.0.1]:to@domain>', { NOTIFY: 'SUCCESS,FAILURE', ORCPT: 'rfc822;to@domain' });
    await c.mailFrom(' <spaced>', { SMTPUTF8: true, SIZE: 10 });
    await c.send('XYZZY plugh');
    await c.quit();
    assert.deepEqual((await fake.session()).commands, [
      'EHLO client.test', 'MAIL FROM:<u@T@H>', 'RCPT TO:u@T', 'RCPT TO:<"to@domain"> NOTIFY=NEVER',
      'RCPT TO:<@[127.0.0.1]:to@domain> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;to@domain', 'MAIL FROM: <spaced> SMTPUTF8 SIZE=10',
      'XYZZY plugh', 'QUIT',
    ]);
  });
});

test('client RFC 2920: with PIPELINING the envelope goes in one write; without it, one command at a time', async () => {
  await withFake({}, async (fake) => {
    const c = await connectTo(fake.port);
    await c.ehlo('client.test');
    const env = await c.sendEnvelope({ mailFrom: '<a@b.test>', rcptTo: ['<c@d.test>', { path: '<e@f.test>', params: ['NOTIFY=NEVER'] }], data: true });
    assert.deepEqual([env.mailFrom.code, ...env.rcptTo.map((r) => r.code), env.data?.code], [250, 250, 250, 354]);
    const d = await c.data(Buffer.from('x'));
    assert.equal(d.reply.code, 250);
    const replies = await c.pipeline(['RSET', 'NOOP']);
    assert.deepEqual(replies.map((r) => r.code), [250, 250]);
    await c.quit();
    const s = await fake.session();
    const chunks = s.chunks.map((b) => b.toString('latin1'));
    assert.ok(chunks.includes('MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nRCPT TO:<e@f.test> NOTIFY=NEVER\r\nDATA\r\n'), JSON.stringify(chunks));
    assert.ok(chunks.includes('RSET\r\nNOOP\r\n'));
    assert.equal(s.commands.filter((x) => x === 'DATA').length, 1, 'data() did not send DATA again');
  });
  await withFake({ capabilities: ['8BITMIME'], commands: { RCPT: '550 5.1.1 no such user\r\n' } }, async (fake) => {
    const c = await connectTo(fake.port);
    await c.ehlo('client.test');
    const env = await c.sendEnvelope({ mailFrom: '<a@b.test>', rcptTo: ['<c@d.test>', '<e@f.test>'], data: true });
    assert.deepEqual(env.rcptTo.map((r) => r.code), [550, 550]);
    assert.equal(env.data, null, 'no DATA without PIPELINING when no recipient was accepted');
    await c.quit();
    const s = await fake.session();
    assert.deepEqual(s.chunks.map((b) => b.toString('latin1')), ['EHLO client.test\r\n', 'MAIL FROM:<a@b.test>\r\n', 'RCPT TO:<c@d.test>\r\n', 'RCPT TO:<e@f.test>\r\n', 'QUIT\r\n']);
  });
});

test('client: after a 354 only the body may follow; quit() then just closes', async () => {
  await withFake({}, async (fake) => {
    const c = await connectTo(fake.port);
    await c.ehlo('client.test');
    assert.equal((await c.sendEnvelope({ mailFrom: '<a@b.test>', rcptTo: ['<c@d.test>'], data: true })).data?.code, 354);
    await assert.rejects(c.rset(), /send the message body/);
    assert.equal(await c.quit(), null);
    const s = await fake.session();
    await s.closed;
    assert.equal(s.commands.includes('RSET'), false);
    assert.equal(s.commands.includes('QUIT'), false);
  });
});

test('client: DATA refused is returned as phase data; a second call while one runs throws', async () => {
  await withFake({ commands: { DATA: '554 5.5.1 Error: no valid recipients\r\n', NOOP: { delayMs: 100, reply: '250 ok\r\n' } } }, async (fake) => {
    const c = await connectTo(fake.port);
    await c.ehlo('client.test');
    const d = await c.data(Buffer.from('x'));
    assert.equal(d.phase, 'data');
    assert.equal(d.reply.code, 554);
    const p = c.noop();
    await assert.rejects(c.noop(), /still in progress/);
    assert.equal((await p).code, 250);
    await c.quit();
  });
});

test('client: AUTH transcript redaction against a scripted server', async () => {
  let step = 0;
  await withFake({
    commands: {
      AUTH: '334 VXNlcm5hbWU6\r\n',
      '*': () => (++step === 1 ? '334 UGFzc3dvcmQ6\r\n' : '235 2.7.0 Authentication successful\r\n'),
    },
  }, async (fake) => {
    const c = await connectTo(fake.port);
    await c.ehlo('client.test');
    assert.equal((await c.auth('LOGIN', 'alice', 'pa ss')).code, 235);
    await c.quit();
    const s = await fake.session();
    assert.deepEqual(s.commands.slice(1, 4), ['AUTH LOGIN', Buffer.from('alice').toString('base64'), Buffer.from('pa ss').toString('base64')]);
    const lines = c.transcript.map((e) => `${e.dir} ${e.line}`);
    assert.deepEqual(lines.slice(lines.indexOf('C AUTH LOGIN'), lines.indexOf('C AUTH LOGIN') + 6), [
      'C AUTH LOGIN', 'S 334 VXNlcm5hbWU6', 'C <redacted>', 'S 334 UGFzc3dvcmQ6', 'C <redacted>', 'S 235 2.7.0 Authentication successful',
    ]);
    assert.ok(c.transcript.every((e, i, a) => i === 0 || e.t >= a[i - 1]!.t));
  });
});

test('client: AbortSignal stops a pending command and a connect', async () => {
  await withFake({ commands: { NOOP: { then: 'hang' } } }, async (fake) => {
    const ac = new AbortController();
    const c = await connectTo(fake.port, { signal: ac.signal });
    setTimeout(() => ac.abort(), 50);
    await assert.rejects(c.noop(), isErr(SmtpAbortedError, (e) => { assert.equal(e.phase, 'noop'); assert.equal(e.code, 'ERR_SMTP_ABORTED'); }));
    assert.equal(c.closed, true);
    await assert.rejects(connectTo(fake.port, { signal: AbortSignal.abort() }), isErr(SmtpAbortedError, (e) => assert.equal(e.phase, 'connect')));
  });
});

test('client: close() fails the pending command and leaves no timers behind', async () => {
  await withFake({ commands: { NOOP: { then: 'hang' } } }, async (fake) => {
    const timers = (): number => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    const c = await connectTo(fake.port);
    const idle = timers();
    const p = c.noop();
    await sleep(20);
    const armed = timers();
    assert.equal(armed, idle + 1, 'the command deadline is armed');
    c.close();
    await assert.rejects(p, isErr(SmtpConnectionError, (e) => { assert.equal(e.phase, 'noop'); assert.match(e.message, /closed locally/); }));
    assert.equal(timers(), armed - 1, 'and cleared');
    assert.equal(await c.quit(), null);
  });
});

test('client: localAddress sets the source address', async () => {
  await withFake({}, async (fake) => {
    const c = await connectTo(fake.port, { localAddress: '127.0.0.2' });
    assert.equal(c.localAddress, '127.0.0.2');
    const s: FakeSession = await fake.session();
    assert.equal(s.remoteAddress, '127.0.0.2');
    await c.quit();
  });
});

// ---------------------------------------------------------------------------------------------------------
// Interop: a private Postfix (root and the Debian postfix package; fails without them — CI installs them)

const canRunPostfix = process.getuid?.() === 0 && hasBinary('/usr/sbin/postfix') && hasBinary('/usr/sbin/postconf');

test('client against Postfix: STARTTLS, pipelined envelope with a refused recipient, tricky body queued', { timeout: 60_000 }, async () => {
  assert.ok(canRunPostfix, 'this interop test needs root and the Debian postfix package (.ci/run installs it)');
  const dir = await mkdtemp(join(tmpdir(), 'relayguard-client-pf-'));
  const { cert, key } = await generateSelfSigned('localhost');
  await writeFile(join(dir, 'cert.pem'), cert);
  await writeFile(join(dir, 'key.pem'), key, { mode: 0o600 });
  const pf = await startPostfix({
    mode: 'discard',
    extraMain: { smtpd_tls_cert_file: join(dir, 'cert.pem'), smtpd_tls_key_file: join(dir, 'key.pem'), smtpd_tls_security_level: 'may' },
  });
  try {
    const c = await connectTo(pf.port, { servername: 'localhost' });
    assert.equal(c.greeting.code, 220);
    assert.match(c.greeting.lines[0]!, new RegExp(`Postfix-peer ${pf.bannerToken}$`));
    await c.ehlo('client.test');
    for (const k of ['PIPELINING', 'SIZE', '8BITMIME', 'ENHANCEDSTATUSCODES', 'STARTTLS']) assert.ok(c.hasCapability(k), k);
    const st = await c.startTls();
    assert.equal(st.reply.code, 220);
    assert.equal(st.tls?.peerCertificate?.selfSigned, true);
    assert.equal((await c.ehlo('client.test')).code, 250);
    assert.equal(c.hasCapability('STARTTLS'), false);
    const env = await c.sendEnvelope({ mailFrom: '<a@example.org>', rcptTo: ['<v@example.net>', '<u@peers.test>'], data: true });
    assert.deepEqual([env.mailFrom.code, ...env.rcptTo.map((r) => r.code), env.data?.code], [250, 554, 250, 354]);
    assert.equal(env.rcptTo[0]!.enhanced, '5.7.1');
    const d = await c.data(Buffer.from(TRICKY, 'latin1'));
    assert.equal(d.phase, 'dot');
    assert.match(d.reply.lines[0]!, /^2\.0\.0 Ok: queued as /);
    assert.equal((await c.quit())?.code, 221);
  } finally {
    await pf.stop();
    await rm(dir, { recursive: true, force: true });
  }
});
