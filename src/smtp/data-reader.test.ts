import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { DataReader, type LineEndingMode } from './data-reader.ts';

function runAll(chunks: Buffer[], mode: LineEndingMode = 'reject', maxSize = 1 << 20) {
  const r = new DataReader({ mode, maxSize });
  const out: Buffer[] = [];
  let leftover: Buffer | null = null;
  let terminators = 0;
  for (const c of chunks) {
    if (leftover) { leftover = Buffer.concat([leftover, c]); continue; }
    const res = r.feed(c);
    out.push(...res.out);
    if (res.done) { terminators++; leftover = c.subarray(res.consumed); }
  }
  return { body: Buffer.concat(out).toString('latin1'), leftover: leftover?.toString('latin1') ?? null, terminators, reader: r };
}

const enc = (s: string) => Buffer.from(s, 'latin1');

function stuff(lines: string[]): string {
  return lines.map((l) => (l.startsWith('.') ? '.' + l : l) + '\r\n').join('') + '.\r\n';
}

test('data: dot-unstuffing keeps .a, b, .. (SM-15)', () => {
  const { body, terminators } = runAll([enc('Subject: t\r\n\r\n..a\r\n.b\r\n...\r\n.\r\n')]);
  assert.equal(terminators, 1);
  assert.equal(body, 'Subject: t\r\n\r\n.a\r\nb\r\n..\r\n');
});

test('data: empty message (SM-18)', () => {
  const { body, terminators, leftover } = runAll([enc('.\r\nQUIT\r\n')]);
  assert.equal(terminators, 1);
  assert.equal(body, '');
  assert.equal(leftover, 'QUIT\r\n');
});

const SMUGGLING = ['\n.\n', '\n.\r\n', '\r.\r', '\r.\n', '\n.\r', '\r.\r\n', '\r\n.\n', '\r\n.\r', '\r\n\x00.\r\n', '\r\n.\x00\r\n'];
for (const e of SMUGGLING) {
  test(`data: smuggling sequence ${JSON.stringify(e)} never ends data; strict flags it`, () => {
    const input = 'Subject: t\r\n\r\nbody' + e + 'MAIL FROM:<s@evil.test>\r\nRCPT TO:<u@local.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nx\r\n.\r\n';
    const strict = runAll([enc(input)], 'reject');
    assert.equal(strict.terminators, 1);
    assert.equal(strict.leftover, '');
    assert.notEqual(strict.reader.violation, null);
    const norm = runAll([enc(input)], 'normalize');
    assert.equal(norm.terminators, 1);
    assert.equal(norm.leftover, '');
    assert.equal(norm.reader.violation, null);
    // Normalized content has no bare CR, bare LF or NUL, and still holds the smuggled text as data.
    assert.doesNotMatch(norm.body.replace(/\r\n/g, ''), /[\r\n\x00]/);
    assert.match(norm.body, /MAIL FROM:<s@evil\.test>/);
  });
}

test('data: too big is flagged and discarded, terminator still found (PL-16, SM-20)', () => {
  const big = 'x'.repeat(100) + '\r\n';
  const { reader, terminators, body } = runAll([enc(big.repeat(20) + 'MAIL FROM:<a@b>\r\n.\r\n')], 'reject', 500);
  assert.equal(terminators, 1);
  assert.equal(reader.tooBig, true);
  assert.ok(body.length <= 500);
});

test('data: counts Received: headers only in the header section', () => {
  const msg = 'Received: a\r\nreceived: b\r\nRECEIVED:c\r\nX-Received: no\r\n\r\nReceived: body\r\n.\r\n';
  const { reader } = runAll([enc(msg)]);
  assert.equal(reader.receivedCount, 3);
});

test('property: exactly one terminator at every chunk split, body identical (SM-17)', () => {
  const line = fc.string({ unit: fc.constantFrom('a', '.', ' ', 'Z', 'é', '\t'), maxLength: 12 });
  fc.assert(
    fc.property(fc.array(line, { maxLength: 8 }), fc.array(fc.nat(), { maxLength: 5 }), (lines, cuts) => {
      const wire = enc(stuff(lines) + 'NEXT');
      const points = [...new Set(cuts.map((c) => c % (wire.length + 1)))].sort((a, b) => a - b);
      const chunks: Buffer[] = [];
      let prev = 0;
      for (const p of points) { chunks.push(wire.subarray(prev, p)); prev = p; }
      chunks.push(wire.subarray(prev));
      for (const mode of ['reject', 'normalize'] as const) {
        const r = runAll(chunks, mode);
        assert.equal(r.terminators, 1);
        assert.equal(r.body, lines.map((l) => l + '\r\n').join(''));
        assert.equal(r.leftover, 'NEXT');
        assert.equal(r.reader.violation, null);
      }
    }),
    { numRuns: 500 },
  );
});

test('property: every two-way split of the smuggling inputs behaves like the whole', () => {
  for (const e of SMUGGLING) {
    const wire = enc('Subject: t\r\n\r\nbody' + e + 'tail\r\n.\r\n');
    const whole = runAll([wire], 'normalize');
    for (let k = 0; k <= wire.length; k++) {
      const split = runAll([wire.subarray(0, k), wire.subarray(k)], 'normalize');
      assert.equal(split.body, whole.body, `split at ${k} of ${JSON.stringify(e)}`);
      assert.equal(split.terminators, 1);
      const strict = runAll([wire.subarray(0, k), wire.subarray(k)], 'reject');
      assert.notEqual(strict.reader.violation, null);
      assert.equal(strict.terminators, 1);
    }
  }
});

test('property: random bytes never throw and never yield more than one terminator', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), fc.nat(300), (bytes, cut) => {
      const b = Buffer.from(bytes);
      const k = cut % (b.length + 1);
      const r = runAll([b.subarray(0, k), b.subarray(k)], 'normalize');
      assert.ok(r.terminators <= 1);
      const s = r.body.replace(/\r\n/g, '');
      assert.doesNotMatch(s, /[\r\n\x00]/);
    }),
    { numRuns: 500 },
  );
});

test('data: whole chunks (the reader jumps from CR/LF/NUL to the next) give exactly what one byte at a time gives', () => {
  // One-byte chunks never skip ahead, so they are the byte-by-byte reference for the jumping fast path.
  const piece = fc.constantFrom('\r\n', '\r', '\n', '\0', '.', '..', '\r\n.\r\n', 'Received: x', 'received:', 'Subject: y', 'abc', ' ', 'é');
  fc.assert(fc.property(fc.array(piece, { maxLength: 60 }), fc.constantFrom<LineEndingMode>('reject', 'normalize'), fc.integer({ min: 0, max: 400 }), (parts, mode, max) => {
    const input = enc(parts.join(''));
    const whole = runAll([input], mode, max);
    const bytes = runAll([...input].map((b) => Buffer.from([b])), mode, max);
    // (Of a message refused for a violation or its size, how much was handed out before depends on where chunks end,
    // with or without the fast path; nothing of it is stored, so the content is compared for accepted messages.)
    const facts = (r: ReturnType<typeof runAll>) => [r.leftover, r.terminators, r.reader.violation, r.reader.receivedCount,
      ...(r.reader.violation === null ? [r.reader.tooBig] : []), ...(r.reader.accepting ? [r.body, r.reader.size] : [])];
    assert.deepEqual(facts(whole), facts(bytes));
  }), { numRuns: 3000 });
});
