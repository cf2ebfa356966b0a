import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import dnsPacket from 'dns-packet';
import { parseTsig, signMessage, tsigKey, verifyRequest, TSIG_BADKEY, TSIG_BADSIG, TSIG_BADTIME } from './tsig.ts';
import { parseQuery, respond } from './wire.ts';
import { buildZone } from './zone.ts';

const KEY = tsigKey('xfr-key', 'hmac-sha256', Buffer.alloc(32, 7).toString('base64'));
const OTHER = tsigKey('xfr-key', 'hmac-sha256', Buffer.alloc(32, 8).toString('base64'));
const keys = new Map([[KEY.name, KEY]]);
const NOW = 1_800_000_000;
const zone = buildZone([{ network: '192.0.2.1', txt: 'listed $' }], { apex: 'relays.test', soa: { serial: 5 } });

function signedQuery(type: dnsPacket.RecordType, key = KEY, now = NOW): Buffer {
  const q = dnsPacket.encode({ type: 'query', id: 4242, questions: [{ type, name: 'relays.test', class: 'IN' }] });
  return signMessage(q, key, { nowSeconds: now }).bytes;
}

describe('TSIG (RFC 8945, hmac-sha256)', () => {
  it('a signed request verifies; its TSIG is parsed back field by field', () => {
    const m = signedQuery('SOA');
    const p = parseQuery(m);
    assert.ok(p.kind === 'query' && p.query.tsig);
    const t = p.query.tsig;
    assert.deepEqual([t.keyName, t.algorithm, t.timeSigned, t.fudge, t.mac.length, t.originalId, t.error], ['xfr-key', 'hmac-sha256', NOW, 300, 32, 4242, 0]);
    assert.deepEqual(verifyRequest(m, t, keys, NOW + 10), { ok: true, key: KEY });
  });

  it('BADKEY for an unknown key, BADSIG for a wrong secret or a changed byte, BADTIME outside the fudge', () => {
    const check = (m: Buffer, now: number): number | true => {
      const p = parseQuery(m);
      assert.ok(p.kind === 'query' && p.query.tsig);
      const v = verifyRequest(m, p.query.tsig, keys, now);
      return v.ok ? true : v.error;
    };
    assert.equal(check(signedQuery('SOA', tsigKey('stranger', 'hmac-sha256', Buffer.alloc(32, 1).toString('base64'))), NOW), TSIG_BADKEY);
    assert.equal(check(signedQuery('SOA', OTHER), NOW), TSIG_BADSIG);
    const tampered = signedQuery('SOA');
    tampered[13] = tampered[13]! ^ 0x20; // "Relays.test": the digest covers the question byte for byte
    assert.equal(check(tampered, NOW), TSIG_BADSIG);
    assert.equal(check(signedQuery('SOA'), NOW + 301), TSIG_BADTIME);
  });

  it('respond(): a signed query is answered signed with the request MAC chained; a bad one is NOTAUTH with the TSIG error', () => {
    const m = signedQuery('SOA');
    const r = respond(m, zone, { tcp: false, ednsUdpSize: 1232, tsigKeys: keys, nowSeconds: NOW });
    assert.ok(r.kind === 'reply');
    const d = dnsPacket.decode(r.bytes) as unknown as { rcode: string; answers: { type: string }[] };
    assert.equal(d.rcode, 'NOERROR');
    assert.equal(d.answers[0]!.type, 'SOA');
    // The answer's MAC is over (request MAC, answer, variables): recompute it independently of signMessage's chain.
    const reqTsig = (parseQuery(m) as { query: { tsig: { mac: Buffer } } }).query.tsig;
    const answerTsig = parseTsig(r.bytes, findTsigStart(r.bytes))!;
    const unsignedAnswer = Buffer.from(r.bytes.subarray(0, answerTsig.start));
    unsignedAnswer.writeUInt16BE(unsignedAnswer.readUInt16BE(10) - 1, 10);
    assert.deepEqual(signMessage(unsignedAnswer, KEY, { nowSeconds: answerTsig.timeSigned, requestMac: reqTsig.mac }).mac, answerTsig.mac);
    const bad = respond(signedQuery('SOA', OTHER), zone, { tcp: false, ednsUdpSize: 1232, tsigKeys: keys, nowSeconds: NOW });
    assert.ok(bad.kind === 'reply');
    assert.equal(bad.bytes[3]! & 0x0f, 9, 'NOTAUTH');
    const badTsig = parseTsig(bad.bytes, findTsigStart(bad.bytes))!;
    assert.equal(badTsig.error, TSIG_BADSIG);
    assert.equal(badTsig.mac.length, 0, 'BADSIG answers are not signed');
  });

  it('transfers: REFUSED unsigned when keys are required; xfr with the signer when signed', () => {
    const unsigned = dnsPacket.encode({ type: 'query', id: 1, questions: [{ type: 'AXFR', name: 'relays.test', class: 'IN' }] });
    const r = respond(unsigned, zone, { tcp: true, ednsUdpSize: 1232, xfrAllowed: true, tsigKeys: keys, xfrNeedsTsig: true, nowSeconds: NOW });
    assert.ok(r.kind === 'reply');
    assert.equal(r.bytes[3]! & 0x0f, 5);
    const s = respond(signedQuery('AXFR'), zone, { tcp: true, ednsUdpSize: 1232, xfrAllowed: true, tsigKeys: keys, xfrNeedsTsig: true, nowSeconds: NOW });
    assert.ok(s.kind === 'xfr' && s.tsig?.key.name === 'xfr-key');
  });
});

/** Offset of the TSIG record: the last additional record of a message we built (no compression in its owner). */
function findTsigStart(m: Buffer): number {
  const d = dnsPacket.decode(m) as { additionals: unknown[] };
  assert.ok(d.additionals.length > 0);
  // Walk back from the end: the key name is uncompressed, so search for "\x07xfr-key\x00\x00\xfa".
  const needle = Buffer.concat([Buffer.from([7]), Buffer.from('xfr-key'), Buffer.from([0, 0, 250])]);
  const at = m.lastIndexOf(needle);
  assert.ok(at > 0);
  return at;
}
