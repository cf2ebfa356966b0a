import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { readFileSync } from 'node:fs';
import dnsPacket from 'dns-packet';
import { buildZone } from './zone.ts';
import { respond } from './wire.ts';
import {
  C_ANSWERED, C_DROPPED, C_FORMERR, C_NXDOMAIN, C_QUERIES, C_REFUSED, sizeUdpBuffers, UDP_COUNTERS, UDP_RECV_BUFFER, UdpAnswerer,
} from './server-udp.ts';

const zone = buildZone([
  { network: '10.1.2.3', code: '127.0.0.7', txt: 'single $' },
  { network: '192.0.2.0/24', txt: 'net $' },
  { network: '2001:db8::/64', txt: 'six $' },
], { apex: 'relays.test', soa: { serial: 1 } });

const RINFO: RemoteInfo = { address: '127.0.0.1', family: 'IPv4', port: 5300, size: 0 };

function q(name: string, type: string, id: number): Buffer {
  return dnsPacket.encode({ type: 'query', id, questions: [{ type: type as dnsPacket.RecordType, name, class: 'IN' }] });
}

/** Two views over the same bytes. */
const sameMemory = (a: Buffer, b: Buffer): boolean => a.buffer === b.buffer && a.byteOffset === b.byteOffset;

/** What a send handed to the socket: the view it got, and a copy of its bytes at the time of the call. */
interface Sent { view: Buffer; atSend: Buffer; port: number; address: string }

/** A stand-in for the dgram socket: records sends; `queued` says whether Node would have queued the next ones. */
function fakeSocket(): { socket: Socket; sent: Sent[]; setQueued(q: boolean): void } {
  const sent: Sent[] = [];
  let queued = false;
  const socket = {
    send(buf: Buffer, a: number, b?: number | string, c?: number | string, d?: string): void {
      // send(buf, port, address) or send(buf, offset, length, port, address), as dgram takes them.
      const [view, port, address] = typeof b === 'string' ? [buf, a, b] : [buf.subarray(a, a + (b as number)), c as number, d!];
      sent.push({ view, atSend: Buffer.from(view), port, address });
    },
    getSendQueueCount: (): number => (queued ? 1 : 0),
  } as unknown as Socket;
  return { socket, sent, setQueued: (x) => { queued = x; } };
}

describe('UdpAnswerer', () => {
  const queries = [
    q('3.2.1.10.relays.test', 'A', 1), // fast path, listed
    q('3.2.1.10.relays.test', 'TXT', 2),
    q('9.9.9.9.relays.test', 'A', 3), // fast path, NXDOMAIN
    q('5.2.0.192.relays.test', 'TXT', 4),
    q(`${'0.'.repeat(16)}8.b.d.0.1.0.0.2.relays.test`.replace('0.0.', '1.0.'), 'TXT', 5), // IPv6: general path
    q('example.org', 'A', 6), // outside the zone: REFUSED, general path
  ];
  const expected = queries.map((m) => {
    const r = respond(m, zone, { tcp: false, ednsUdpSize: 1232 });
    assert.equal(r.kind, 'reply');
    return (r as { bytes: Buffer }).bytes;
  });

  it('answers every query byte for byte as respond() does, to the sender, and counts', () => {
    const { socket, sent } = fakeSocket();
    const counters = new Float64Array(UDP_COUNTERS);
    const a = new UdpAnswerer(socket, zone, 1232, counters, (m) => assert.fail(m));
    for (const m of queries) a.onMessage(m, RINFO);
    assert.equal(sent.length, queries.length);
    sent.forEach((s, i) => {
      assert.deepEqual(s.atSend, expected[i], `query ${i}`);
      assert.equal(s.port, RINFO.port);
      assert.equal(s.address, RINFO.address);
    });
    assert.equal(counters[C_QUERIES], queries.length);
    assert.equal(counters[C_ANSWERED], queries.length);
    assert.equal(counters[C_NXDOMAIN], 1);
    assert.equal(counters[C_REFUSED], 1);
    assert.equal(counters[C_FORMERR], 0);
    assert.equal(a.queuedSends, 0);
  });

  it('reuses one reply buffer while sends complete at once', () => {
    const { socket, sent } = fakeSocket();
    const a = new UdpAnswerer(socket, zone, 1232, new Float64Array(UDP_COUNTERS), (m) => assert.fail(m));
    a.onMessage(queries[0]!, RINFO);
    a.onMessage(queries[1]!, RINFO);
    assert.ok(sameMemory(sent[0]!.view, sent[1]!.view), 'the fast path replies share the reused buffer');
  });

  it('never overwrites a reply that Node queued (send buffer full): the next replies go to a fresh buffer', () => {
    const { socket, sent, setQueued } = fakeSocket();
    const a = new UdpAnswerer(socket, zone, 1232, new Float64Array(UDP_COUNTERS), (m) => assert.fail(m));
    setQueued(true);
    a.onMessage(queries[1]!, RINFO); // queued: its view must keep its bytes
    a.onMessage(queries[3]!, RINFO); // queued too
    setQueued(false);
    for (let i = 0; i < 50; i++) a.onMessage(queries[i % 4]!, RINFO);
    assert.equal(a.queuedSends, 2);
    assert.deepEqual(sent[0]!.view, expected[1], 'the first queued reply still holds its bytes');
    assert.deepEqual(sent[1]!.view, expected[3], 'the second queued reply still holds its bytes');
    assert.ok(!sameMemory(sent[0]!.view, sent[1]!.view));
    assert.ok(!sameMemory(sent[1]!.view, sent[2]!.view));
    assert.ok(sameMemory(sent[2]!.view, sent[3]!.view), 'reuse resumes once sends complete at once');
    for (let i = 2; i < sent.length; i++) assert.deepEqual(sent[i]!.atSend, expected[(i - 2) % 4]);
  });

  it('drops responses and runts without sending, and counts them', () => {
    const { socket, sent } = fakeSocket();
    const counters = new Float64Array(UDP_COUNTERS);
    const a = new UdpAnswerer(socket, zone, 1232, counters, (m) => assert.fail(m));
    const response = Buffer.from(expected[0]!);
    a.onMessage(response, RINFO);
    a.onMessage(Buffer.from([1, 2, 3]), RINFO);
    assert.equal(sent.length, 0);
    assert.equal(counters[C_DROPPED], 2);
    assert.equal(counters[C_ANSWERED], 0);
  });
});

describe('sizeUdpBuffers', () => {
  it('raises the receive buffer of a bound socket up to what the kernel allows', async () => {
    const s = createSocket('udp4');
    try {
      await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
      const before = s.getRecvBufferSize();
      sizeUdpBuffers(s);
      let max = Infinity;
      try { max = Number(readFileSync('/proc/sys/net/core/rmem_max', 'utf8').trim()); } catch { /* not Linux */ }
      const want = Math.min(UDP_RECV_BUFFER, max);
      assert.ok(s.getRecvBufferSize() >= Math.max(before, want), `receive buffer ${s.getRecvBufferSize()} (was ${before}, want >= ${want})`);
    } finally {
      s.close();
    }
  });
});
