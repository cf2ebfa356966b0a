import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ReplyReader, SmtpProtocolError, enhancedOf, formatSmtpReply, type SmtpReply } from './reply-reader.ts';

function readAll(input: string | Buffer, options?: ConstructorParameters<typeof ReplyReader>[0]): SmtpReply[] {
  const r = new ReplyReader(options);
  r.push(typeof input === 'string' ? Buffer.from(input, 'latin1') : input);
  const out: SmtpReply[] = [];
  for (let x = r.next(); x; x = r.next()) out.push(x);
  return out;
}

function expectProtocolError(input: string | Buffer, pattern: RegExp, options?: ConstructorParameters<typeof ReplyReader>[0]): void {
  assert.throws(() => readAll(input, options), (err: unknown) => {
    assert.ok(err instanceof SmtpProtocolError);
    assert.equal(err.code, 'ERR_SMTP_PROTOCOL');
    assert.match(err.message, pattern);
    return true;
  });
}

test('reply-reader: single and multi-line replies, enhanced codes, bare code, LF endings', () => {
  const rs = readAll('220 mx.test ESMTP\r\n250-mx.test\r\n250-PIPELINING\r\n250 SIZE 100\r\n550 5.1.1 <u@x>: no such user\r\n354\r\n221 2.0.0 Bye\n');
  assert.deepEqual(rs, [
    { code: 220, enhanced: null, lines: ['mx.test ESMTP'] },
    { code: 250, enhanced: null, lines: ['mx.test', 'PIPELINING', 'SIZE 100'] },
    { code: 550, enhanced: '5.1.1', lines: ['5.1.1 <u@x>: no such user'] },
    { code: 354, enhanced: null, lines: [''] },
    { code: 221, enhanced: '2.0.0', lines: ['2.0.0 Bye'] },
  ]);
  assert.equal(formatSmtpReply(rs[2]!), '550 5.1.1 <u@x>: no such user');
});

test('reply-reader: enhanced code only when its class matches the reply code', () => {
  assert.equal(enhancedOf(550, '5.7.1 Relay access denied'), '5.7.1');
  assert.equal(enhancedOf(450, '5.7.1 mismatched'), null);
  assert.equal(enhancedOf(250, '2.0.0'), '2.0.0');
  assert.equal(enhancedOf(250, '2.0.0x'), null);
  assert.equal(enhancedOf(250, '2.1000.0 x'), null);
});

test('reply-reader: UTF-8 text is decoded', () => {
  const [r] = readAll(Buffer.concat([Buffer.from('250 '), Buffer.from('grüße', 'utf8'), Buffer.from('\r\n')]));
  assert.deepEqual(r!.lines, ['grüße']);
});

test('reply-reader OB-06: malformed codes, NUL, CR, changed code', () => {
  expectProtocolError('2500 ok\r\n', /Malformed reply code/);
  expectProtocolError('25\r\n', /Malformed reply code/);
  expectProtocolError('\r\n', /Malformed reply code/);
  expectProtocolError('abc ok\r\n', /Malformed reply code/);
  expectProtocolError('150 ok\r\n', /Malformed reply code/);
  expectProtocolError('650 ok\r\n', /Malformed reply code/);
  expectProtocolError('25a ok\r\n', /Malformed reply code/);
  expectProtocolError(' 250 ok\r\n', /Malformed reply code/);
  expectProtocolError('250 o\0k\r\n', /NUL/);
  expectProtocolError('250 o\rk\r\n', /Bare CR/);
  expectProtocolError('250-a\r\n251 b\r\n', /changed from 250 to 251/);
  expectProtocolError('250-a\r\n550 b\r\n', /changed/);
});

test('reply-reader OB-06: line and line-count bounds, with bounded buffering', () => {
  expectProtocolError(`250 ${'x'.repeat(3000)}\r\n`, /longer than 2048/);
  expectProtocolError(`250-x\r\n`.repeat(201), /more than 200 lines/);
  assert.equal(readAll(`250-x\r\n`.repeat(199) + '250 x\r\n')[0]!.lines.length, 200);
  expectProtocolError(`250-x\r\n`.repeat(5) + '250 y\r\n', /more than 3 lines/, { maxLines: 3 });
  // A 1 MB line without LF, fed in small pieces: the error comes as soon as the bound is passed.
  const r = new ReplyReader({ maxLineLength: 512 });
  let fed = 0;
  const piece = Buffer.alloc(100, 0x61);
  r.push(Buffer.from('250 '));
  assert.throws(() => {
    for (;;) {
      r.push(piece);
      fed += piece.length;
      assert.ok(r.buffered <= 512 + piece.length);
      r.next();
      if (fed > 1024 * 1024) assert.fail('reader buffered a megabyte');
    }
  }, SmtpProtocolError);
  assert.ok(fed < 1000, `failed only after ${fed} bytes`);
});

test('reply-reader: exactly maxLineLength octets with CRLF is accepted, one more is not', () => {
  const line = (n: number): string => `250 ${'a'.repeat(n - 6)}\r\n`;
  assert.equal(readAll(line(100), { maxLineLength: 100 }).length, 1);
  expectProtocolError(line(101), /longer than 100/, { maxLineLength: 100 });
});

test('reply-reader: discard() forgets buffered bytes and partial replies', () => {
  const r = new ReplyReader();
  r.push(Buffer.from('220 ready\r\n250-INJECTED\r\n'));
  assert.equal(r.next()!.code, 220);
  assert.equal(r.next(), null);
  assert.ok(r.partial);
  assert.equal(r.discard(), 0); // the continuation line was consumed into the partial reply...
  assert.equal(r.partial, false); // ...and is gone too
  r.push(Buffer.from('250 real\r\n'));
  assert.deepEqual(r.next(), { code: 250, enhanced: null, lines: ['real'] });
});

test('reply-reader property: any split of valid replies parses the same', () => {
  const replyArb = fc.record({
    code: fc.integer({ min: 200, max: 599 }),
    lines: fc.array(fc.stringMatching(/^[ -~]{0,30}$/), { minLength: 1, maxLength: 5 }),
  });
  fc.assert(fc.property(fc.array(replyArb, { minLength: 1, maxLength: 5 }), fc.array(fc.nat(), { maxLength: 10 }), (replies, cuts) => {
    const wire = Buffer.from(replies.map((r) => r.lines.map((l, i) => `${r.code}${i === r.lines.length - 1 ? ' ' : '-'}${l}\r\n`).join('')).join(''), 'latin1');
    const points = [...new Set(cuts.map((c) => c % (wire.length + 1)))].sort((a, b) => a - b);
    const reader = new ReplyReader();
    const got: SmtpReply[] = [];
    let prev = 0;
    for (const p of [...points, wire.length]) {
      reader.push(wire.subarray(prev, p));
      prev = p;
      for (let x = reader.next(); x; x = reader.next()) got.push(x);
    }
    assert.deepEqual(got.map((g) => ({ code: g.code, lines: g.lines })), replies.map((r) => ({ code: r.code, lines: [...r.lines] })));
    assert.equal(reader.partial, false);
  }));
});
