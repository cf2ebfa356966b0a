import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { DotStuffer, dotStuff } from './dot-stuffer.ts';
import { DataReader } from './data-reader.ts';

/** The reference transformation (non-streaming): drop NUL, CRLF kept, bare LF -> CRLF, bare CR -> SP, end with CRLF. */
function expectedContent(body: Buffer): Buffer {
  const s = body.toString('latin1').replace(/\0/g, '').replace(/\r\n|\r|\n/g, (m) => (m === '\r' ? ' ' : '\r\n'));
  return Buffer.from(s === '' || s.endsWith('\r\n') ? s : `${s}\r\n`, 'latin1');
}

/** Reads wire bytes back with our server's strict DataReader. */
function readBack(wire: Buffer): { content: Buffer; done: boolean; consumed: number; violation: string | null } {
  const r = new DataReader({ mode: 'reject', maxSize: 1 << 30 });
  const res = r.feed(wire);
  return { content: Buffer.concat(res.out), done: res.done, consumed: res.consumed, violation: r.violation };
}

function assertWireClean(wire: Buffer): void {
  for (let i = 0; i < wire.length; i++) {
    const c = wire[i]!;
    assert.notEqual(c, 0, `NUL at ${i}`);
    if (c === 0x0d) assert.equal(wire[i + 1], 0x0a, `bare CR at ${i}`);
    if (c === 0x0a) assert.equal(wire[i - 1], 0x0d, `bare LF at ${i}`);
  }
  assert.ok(wire.subarray(-3).equals(Buffer.from('.\r\n')));
  const t = wire.indexOf('\r\n.\r\n');
  assert.ok(t === -1 ? wire.equals(Buffer.from('.\r\n')) : t === wire.length - 5, 'exactly one terminator, at the end');
}

test('dot-stuffer: examples (SM-16 sequences cannot make a terminator)', () => {
  const cases: [string, string][] = [
    ['', '.\r\n'],
    ['a', 'a\r\n.\r\n'],
    ['a\r\n', 'a\r\n.\r\n'],
    ['.', '..\r\n.\r\n'],
    ['.\r\n', '..\r\n.\r\n'],
    ['a\n.\r\nb', 'a\r\n..\r\nb\r\n.\r\n'],
    ['a\r.\rb', 'a . b\r\n.\r\n'],
    ['a\n.\nb', 'a\r\n..\r\nb\r\n.\r\n'],
    ['x\0\r\n.\0\r\n', 'x\r\n..\r\n.\r\n'],
    ['\0.x', '..x\r\n.\r\n'],
    ['a\r', 'a \r\n.\r\n'],
    ['a\r\r\n', 'a \r\n.\r\n'],
    ['\r\n\r\n', '\r\n\r\n.\r\n'],
    ['..\r\n...', '...\r\n....\r\n.\r\n'],
    ['\0\0', '.\r\n'],
  ];
  for (const [input, wire] of cases) {
    assert.equal(dotStuff(Buffer.from(input, 'latin1')).toString('latin1'), wire, JSON.stringify(input));
  }
});

test('dot-stuffer: a CR at a chunk boundary is decided by the next chunk', () => {
  const s = new DotStuffer();
  const out = Buffer.concat([s.push(Buffer.from('a\r')), s.push(Buffer.from('\n.b\r')), s.push(Buffer.from('c')), s.end()]);
  assert.equal(out.toString('latin1'), 'a\r\n..b c\r\n.\r\n');
  assert.equal(s.bytesIn, 7);
  assert.equal(s.bytesOut, out.length);
  assert.throws(() => s.end());
});

test('dot-stuffer property: any body, any split, reads back through DataReader(reject) with no violation and one terminator', () => {
  const byte = fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom(0x0d, 0x0a, 0x2e, 0x00) },
    { weight: 2, arbitrary: fc.integer({ min: 0, max: 255 }) },
  );
  fc.assert(fc.property(fc.array(byte, { maxLength: 300 }), fc.array(fc.nat(), { maxLength: 8 }), (bytes, cuts) => {
    const body = Buffer.from(bytes);
    const points = [...new Set(cuts.map((c) => c % (body.length + 1)))].sort((a, b) => a - b);
    const s = new DotStuffer();
    const parts: Buffer[] = [];
    let prev = 0;
    for (const p of [...points, body.length]) {
      parts.push(s.push(body.subarray(prev, p)));
      prev = p;
    }
    parts.push(s.end());
    const wire = Buffer.concat(parts);
    assert.ok(wire.equals(dotStuff(body)), 'streaming equals one-shot');
    assertWireClean(wire);
    const back = readBack(wire);
    assert.equal(back.violation, null);
    assert.equal(back.done, true);
    assert.equal(back.consumed, wire.length, 'the terminator is the last thing on the wire');
    assert.ok(back.content.equals(expectedContent(body)), 'content equals the normalization');
  }), { numRuns: 2000 });
});

test('dot-stuffer: a large body streams in bounded pieces', () => {
  const s = new DotStuffer();
  const chunk = Buffer.from('.line\n'.repeat(10_000));
  let max = 0;
  for (let i = 0; i < 50; i++) max = Math.max(max, s.push(chunk).length);
  assert.ok(max <= chunk.length * 2 + 2);
  assert.equal(s.bytesIn, chunk.length * 50);
});
