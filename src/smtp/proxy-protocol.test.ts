import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { formatIPv6, parseProxyHeader, V1_MAX_LENGTH, V2_MAX_PAYLOAD, type ProxyParseResult } from './proxy-protocol.ts';

const SIG = Buffer.from('\r\n\r\n\0\r\nQUIT\n', 'latin1');

function v2(verCmd: number, fam: number, payload: Buffer | number[], lengthOverride?: number): Buffer {
  const body = Buffer.from(payload);
  const len = Buffer.alloc(2);
  len.writeUInt16BE(lengthOverride ?? body.length);
  return Buffer.concat([SIG, Buffer.from([verCmd, fam]), len, body]);
}

function ipv4Payload(src: number[], dst: number[], sport: number, dport: number): Buffer {
  const b = Buffer.alloc(12);
  Buffer.from(src).copy(b, 0);
  Buffer.from(dst).copy(b, 4);
  b.writeUInt16BE(sport, 8);
  b.writeUInt16BE(dport, 10);
  return b;
}

function expectOk(r: ProxyParseResult): Extract<ProxyParseResult, { status: 'ok' }> {
  assert.equal(r.status, 'ok', r.status === 'error' ? r.reason : 'incomplete');
  return r as Extract<ProxyParseResult, { status: 'ok' }>;
}

function expectError(r: ProxyParseResult): void {
  assert.equal(r.status, 'error');
}

const parseText = (s: string): ProxyParseResult => parseProxyHeader(Buffer.from(s, 'latin1'));

/** Feeds buf one byte at a time: every strict prefix of the header must be 'incomplete', then the answer is final. */
function feedByteByByte(buf: Buffer): ProxyParseResult {
  let last: ProxyParseResult = { status: 'incomplete' };
  for (let n = 1; n <= buf.length; n++) {
    const r = parseProxyHeader(buf.subarray(0, n));
    if (r.status !== 'incomplete') {
      // Once decided, more bytes never change the decision.
      for (let m = n + 1; m <= buf.length; m++) assert.deepEqual(parseProxyHeader(buf.subarray(0, m)), r);
      return r;
    }
    last = r;
  }
  return last;
}

describe('PROXY v1', () => {
  it('parses TCP4 and leaves the rest of the stream alone', () => {
    const line = 'PROXY TCP4 192.0.2.10 10.0.0.1 56324 25\r\n';
    const r = expectOk(parseText(`${line}EHLO client.test\r\n`));
    assert.equal(r.consumed, line.length);
    assert.deepEqual(r.header, {
      version: 1, command: 'proxy', family: 'tcp4',
      sourceAddress: '192.0.2.10', sourcePort: 56324, destinationAddress: '10.0.0.1', destinationPort: 25,
    });
  });

  it('parses TCP6, including an IPv4-mapped address', () => {
    const r = expectOk(parseText('PROXY TCP6 2001:db8::1 ::ffff:10.0.0.1 0 65535\r\n'));
    assert.equal(r.header.family, 'tcp6');
    assert.equal(r.header.sourceAddress, '2001:db8::1');
    assert.equal(r.header.destinationAddress, '::ffff:10.0.0.1');
    assert.equal(r.header.sourcePort, 0);
    assert.equal(r.header.destinationPort, 65535);
  });

  it('parses UNKNOWN with or without trailing fields, and gives no addresses', () => {
    for (const s of ['PROXY UNKNOWN\r\n', 'PROXY UNKNOWN ffff:f::1 ::1 1 2\r\n']) {
      const r = expectOk(parseText(s));
      assert.deepEqual(r.header, { version: 1, command: 'proxy', family: 'unknown' });
      assert.equal(r.consumed, s.length);
    }
  });

  it('accepts the longest legal line (107 bytes) and refuses 108', () => {
    const max = 'PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n';
    assert.equal(max.length, V1_MAX_LENGTH);
    assert.equal(expectOk(parseText(max)).consumed, 107);
    const tooLong = max.replace('UNKNOWN ', 'UNKNOWN  ');
    assert.equal(tooLong.length, 108);
    expectError(parseText(tooLong));
    expectError(parseText(tooLong.slice(0, 107))); // CR is byte 107: CRLF cannot fit
  });

  it('PX-02: invalid formats are errors', () => {
    const bad = [
      'PROXY TCP4 999.1.1.1 10.0.0.1 1 25\r\n',
      'PROXY TCP9 1.2.3.4 10.0.0.1 1 25\r\n',
      'PROXY tcp4 1.2.3.4 10.0.0.1 1 25\r\n',
      'PROXY TCP4 01.2.3.4 10.0.0.1 1 25\r\n', // leading zero
      'PROXY TCP4 1.2.3 10.0.0.1 1 25\r\n',
      'PROXY TCP4 127.1 10.0.0.1 1 25\r\n',
      'PROXY TCP4 0x7f.0.0.1 10.0.0.1 1 25\r\n',
      'PROXY TCP4 1.2.3.4 10.0.0.1 65536 25\r\n',
      'PROXY TCP4 1.2.3.4 10.0.0.1 025 25\r\n',
      'PROXY TCP4 1.2.3.4 10.0.0.1 -1 25\r\n',
      'PROXY TCP4 1.2.3.4 10.0.0.1 1 +25\r\n',
      'PROXY TCP4 1.2.3.4 10.0.0.1 1 2 5\r\n',
      'PROXY TCP4 1.2.3.4  10.0.0.1 1 25\r\n', // double space
      'PROXY TCP4 1.2.3.4 10.0.0.1 1 25 \r\n', // trailing space
      'PROXY TCP4 1.2.3.4 10.0.0.1 1\r\n',
      'PROXY TCP4 ::1 10.0.0.1 1 25\r\n', // family mismatch
      'PROXY TCP6 1.2.3.4 ::1 1 25\r\n',
      'PROXY TCP6 fe80::1%eth0 ::1 1 25\r\n',
      'PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 25\r\n',
      'PROXY TCP6 ::ffff:01.2.3.4 ::1 1 25\r\n',
      'PROXY TCP4\r\n',
      'PROXY \r\n',
      'PROXY  TCP4 1.2.3.4 10.0.0.1 1 25\r\n',
      'PROXY TCP4 1.2.3.4 10.0.0.1 1 25\n', // bare LF
      'PROXY TCP4 1.2.3.4 10.0.0.1 1 25\rX', // bare CR
      'PROXY TCP4 1.2.3.4\t10.0.0.1 1 25\r\n',
      'PROXY TCP4 1.2.3.4 10.0.0.1 1 2\x005\r\n',
      'PROXY TCP4 1.2.3.\xe4 10.0.0.1 1 25\r\n',
    ];
    for (const s of bad) {
      const r = parseText(s);
      assert.equal(r.status, 'error', JSON.stringify(s));
    }
  });

  it('PX-02: no CRLF within 107 bytes is an error, and so is 107 bytes of text with no end', () => {
    expectError(parseText(`PROXY TCP4 ${'1'.repeat(200)}\r\n`));
    expectError(parseText(`PROXY ${'A'.repeat(101)}`));
    assert.equal(parseText(`PROXY ${'A'.repeat(100)}`).status, 'incomplete');
  });

  it('byte-at-a-time feeding gives incomplete until the CRLF', () => {
    const line = 'PROXY TCP6 2001:db8::1 2001:db8::2 1234 587\r\n';
    const r = expectOk(feedByteByByte(Buffer.from(`${line}QUIT\r\n`, 'latin1')));
    assert.equal(r.consumed, line.length);
    for (let n = 1; n < line.length; n++) assert.equal(parseText(line.slice(0, n)).status, 'incomplete', `prefix ${n}`);
  });
});

describe('PROXY v2', () => {
  it('parses PROXY TCP4 and skips TLVs', () => {
    const tlv = Buffer.from([0x04, 0x00, 0x03, 0x61, 0x62, 0x63]); // PP2_TYPE_NOOP, 3 bytes
    const payload = Buffer.concat([ipv4Payload([192, 0, 2, 10], [10, 0, 0, 1], 56324, 25), tlv]);
    const h = v2(0x21, 0x11, payload);
    const r = expectOk(parseProxyHeader(Buffer.concat([h, Buffer.from('EHLO x\r\n')])));
    assert.equal(r.consumed, h.length);
    assert.deepEqual(r.header, {
      version: 2, command: 'proxy', family: 'tcp4',
      sourceAddress: '192.0.2.10', sourcePort: 56324, destinationAddress: '10.0.0.1', destinationPort: 25,
    });
  });

  it('parses PROXY TCP6', () => {
    const p = Buffer.alloc(36);
    Buffer.from('20010db8000000000000000000000001', 'hex').copy(p, 0);
    Buffer.from('00000000000000000000ffff0a000001', 'hex').copy(p, 16);
    p.writeUInt16BE(1, 32);
    p.writeUInt16BE(465, 34);
    const r = expectOk(parseProxyHeader(v2(0x21, 0x21, p)));
    assert.deepEqual(r.header, {
      version: 2, command: 'proxy', family: 'tcp6',
      sourceAddress: '2001:db8::1', sourcePort: 1, destinationAddress: '::ffff:10.0.0.1', destinationPort: 465,
    });
    assert.equal(r.consumed, 16 + 36);
  });

  it('LOCAL ignores the family and the address block', () => {
    for (const fam of [0x00, 0x11, 0x21, 0x31, 0x12, 0x77]) {
      const r = expectOk(parseProxyHeader(v2(0x20, fam, [1, 2, 3])));
      assert.deepEqual(r.header, { version: 2, command: 'local', family: 'unknown' });
      assert.equal(r.consumed, 19);
    }
    assert.equal(expectOk(parseProxyHeader(v2(0x20, 0x00, []))).consumed, 16);
  });

  it('PROXY with UNSPEC or a unix stream socket gives family unknown', () => {
    assert.deepEqual(expectOk(parseProxyHeader(v2(0x21, 0x00, []))).header, { version: 2, command: 'proxy', family: 'unknown' });
    assert.equal(expectOk(parseProxyHeader(v2(0x21, 0x31, Buffer.alloc(216)))).header.family, 'unknown');
  });

  it('PX-03: bad version, command, family, length and garbage after the signature are errors', () => {
    const ok4 = ipv4Payload([1, 2, 3, 4], [5, 6, 7, 8], 1, 25);
    expectError(parseProxyHeader(v2(0x11, 0x11, ok4))); // version 1 in a v2 header
    expectError(parseProxyHeader(v2(0x31, 0x11, ok4))); // version 3
    expectError(parseProxyHeader(v2(0x22, 0x11, ok4))); // command 2
    expectError(parseProxyHeader(v2(0x21, 0x12, ok4))); // UDP over IPv4
    expectError(parseProxyHeader(v2(0x21, 0x22, Buffer.alloc(36)))); // UDP over IPv6
    expectError(parseProxyHeader(v2(0x21, 0x32, Buffer.alloc(216)))); // unix datagram
    expectError(parseProxyHeader(v2(0x21, 0x13, ok4))); // unknown transport
    expectError(parseProxyHeader(v2(0x21, 0x11, ok4.subarray(0, 11)))); // too short for TCP4
    expectError(parseProxyHeader(v2(0x21, 0x21, Buffer.alloc(35)))); // too short for TCP6
    expectError(parseProxyHeader(v2(0x21, 0x11, [], V2_MAX_PAYLOAD + 1))); // oversized: error before the body
    expectError(parseProxyHeader(v2(0x21, 0x11, [], 0xffff)));
    expectError(parseProxyHeader(Buffer.concat([SIG, Buffer.from('garbage garbage')])));
    expectError(parseProxyHeader(Buffer.concat([SIG.subarray(0, 7), Buffer.from('garbage')])));
  });

  it('PX-03: a header cut off half-way stays incomplete (the caller closes on EOF or timeout)', () => {
    const h = v2(0x21, 0x11, ipv4Payload([1, 2, 3, 4], [5, 6, 7, 8], 1, 25));
    for (let n = 1; n < h.length; n++) assert.equal(parseProxyHeader(h.subarray(0, n)).status, 'incomplete', `prefix ${n}`);
    const big = v2(0x21, 0x11, Buffer.alloc(V2_MAX_PAYLOAD)); // max size, all TLV space zero
    assert.equal(parseProxyHeader(big.subarray(0, big.length - 1)).status, 'incomplete');
    assert.equal(expectOk(parseProxyHeader(big)).consumed, 16 + V2_MAX_PAYLOAD);
  });

  it('byte-at-a-time feeding decides exactly at the last header byte', () => {
    const h = v2(0x21, 0x11, Buffer.concat([ipv4Payload([1, 2, 3, 4], [5, 6, 7, 8], 1, 25), Buffer.alloc(20)]));
    const r = expectOk(feedByteByByte(Buffer.concat([h, Buffer.from('EHLO x\r\n')])));
    assert.equal(r.consumed, h.length);
    expectError(feedByteByByte(v2(0x21, 0x12, Buffer.alloc(12))));
  });
});

describe('neither signature', () => {
  it('SMTP, TLS and empty input', () => {
    assert.equal(parseProxyHeader(Buffer.alloc(0)).status, 'incomplete');
    expectError(parseText('EHLO client.test\r\n'));
    expectError(parseText('E'));
    expectError(parseText('PROXX'));
    expectError(parseText('\r\n\r\nX'));
    expectError(parseProxyHeader(Buffer.from([0x16, 0x03, 0x01, 0x00])));
    assert.equal(parseText('PROX').status, 'incomplete');
    assert.equal(parseText('\r\n\r\n\0').status, 'incomplete');
  });
});

describe('formatIPv6', () => {
  it('follows RFC 5952', () => {
    const f = (hex: string): string => formatIPv6(Buffer.from(hex, 'hex'), 0);
    assert.equal(f('00000000000000000000000000000000'), '::');
    assert.equal(f('00000000000000000000000000000001'), '::1');
    assert.equal(f('20010db8000000010000000000000001'), '2001:db8:0:1::1');
    assert.equal(f('20010db8000000000001000000000001'), '2001:db8::1:0:0:1');
    assert.equal(f('20010db8000100010001000100010001'), '2001:db8:1:1:1:1:1:1');
    assert.equal(f('20010db8000000010001000100010000'), '2001:db8:0:1:1:1:1:0');
    assert.equal(f('00000000000000000000ffff7f000001'), '::ffff:127.0.0.1');
  });
});

describe('properties', () => {
  const headerish = fc.oneof(
    fc.uint8Array({ maxLength: 200 }),
    fc.uint8Array({ maxLength: 120 }).map((b) => Buffer.concat([Buffer.from('PROXY '), b])),
    fc.uint8Array({ maxLength: 120 }).map((b) => Buffer.concat([SIG, b])),
    fc.string({ maxLength: 110, unit: fc.constantFrom(...'PROXY TCP46UNKNOW0123456789abcdef:. \r\n'.split('')) })
      .map((s) => Buffer.from(`PROXY ${s}`, 'latin1')),
  );

  it('random bytes never throw, and a decision never changes as bytes are added', () => {
    fc.assert(
      fc.property(headerish, fc.uint8Array({ maxLength: 20 }), (a, more) => {
        const buf = Buffer.from(a);
        const r = parseProxyHeader(buf);
        assert.ok(['incomplete', 'ok', 'error'].includes(r.status));
        if (r.status === 'ok') {
          assert.ok(r.consumed > 0 && r.consumed <= buf.length);
          assert.deepEqual(parseProxyHeader(Buffer.concat([buf, more])), r);
          assert.deepEqual(parseProxyHeader(buf.subarray(0, r.consumed)), r);
        }
        if (r.status === 'error') assert.equal(parseProxyHeader(Buffer.concat([buf, more])).status, 'error');
      }),
      { numRuns: 5000 },
    );
  });

  it('v1 and v2 round-trip generated TCP4 headers', () => {
    const octets = fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 4, maxLength: 4 });
    const port = fc.integer({ min: 0, max: 65535 });
    fc.assert(
      fc.property(octets, octets, port, port, (s, d, sp, dp) => {
        const expected = {
          family: 'tcp4', command: 'proxy',
          sourceAddress: s.join('.'), destinationAddress: d.join('.'), sourcePort: sp, destinationPort: dp,
        };
        const one = expectOk(parseText(`PROXY TCP4 ${s.join('.')} ${d.join('.')} ${sp} ${dp}\r\n`));
        assert.deepEqual(one.header, { version: 1, ...expected });
        const two = expectOk(parseProxyHeader(v2(0x21, 0x11, ipv4Payload(s, d, sp, dp))));
        assert.deepEqual(two.header, { version: 2, ...expected });
      }),
    );
  });

  it('v2 TCP6 addresses come back in a form v1 accepts', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), (bytes) => {
        const p = Buffer.alloc(36);
        Buffer.from(bytes).copy(p, 0);
        const r = expectOk(parseProxyHeader(v2(0x21, 0x21, p)));
        const line = `PROXY TCP6 ${r.header.sourceAddress} ${r.header.destinationAddress} 0 0\r\n`;
        const back = expectOk(parseText(line));
        assert.equal(back.header.sourceAddress, r.header.sourceAddress);
      }),
    );
  });
});
