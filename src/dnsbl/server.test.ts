import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import dnsPacket from 'dns-packet';
import { DnsblServer } from './server.ts';
import { buildZone, type ZoneEntry } from './zone.ts';

const ENTRIES: ZoneEntry[] = [
  { network: '10.1.2.3', code: '127.0.0.7', txt: 'single $' },
  { network: '192.0.2.0/24', txt: 'net $' },
];
const zoneWith = (serial: number, extra: ZoneEntry[] = []): ReturnType<typeof buildZone> =>
  buildZone([...ENTRIES, ...extra], { apex: 'relays.test', soa: { serial } });

type Decoded = dnsPacket.Packet & { rcode?: string; flag_aa?: boolean };

function q(name: string, type: string, id = 7): Buffer {
  return dnsPacket.encode({ type: 'query', id, questions: [{ type: type as dnsPacket.RecordType, name, class: 'IN' }] });
}

async function udp(port: number, msg: Buffer, timeoutMs = 1000): Promise<Buffer | null> {
  const s = createSocket('udp4');
  try {
    s.send(msg, port, '127.0.0.1');
    const timer = new Promise<null>((r) => setTimeout(() => r(null), timeoutMs));
    const got = once(s, 'message').then(([m]) => m as Buffer);
    return await Promise.race([got, timer]);
  } finally {
    s.close();
  }
}

/** Sends raw bytes on a new TCP connection and collects length-prefixed messages until `count` or close. */
async function tcp(port: number, raw: Buffer, count: number, timeoutMs = 2000): Promise<{ msgs: Buffer[]; closed: boolean }> {
  const sock: Socket = connect({ host: '127.0.0.1', port });
  await once(sock, 'connect');
  sock.write(raw);
  const msgs: Buffer[] = [];
  let buf = Buffer.alloc(0);
  let closed = false;
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, timeoutMs);
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        msgs.push(buf.subarray(2, 2 + buf.readUInt16BE(0)));
        buf = buf.subarray(2 + buf.readUInt16BE(0));
      }
      if (msgs.length >= count) { clearTimeout(timer); resolve(); }
    });
    sock.on('close', () => { closed = true; clearTimeout(timer); resolve(); });
    sock.on('error', () => {});
  });
  sock.destroy();
  return { msgs, closed };
}

const frame = (m: Buffer): Buffer => Buffer.concat([Buffer.from([m.length >> 8, m.length & 255]), m]);

describe('DnsblServer', () => {
  let server: DnsblServer;
  let secondary: UdpSocket;
  const notifies: Decoded[] = [];

  before(async () => {
    secondary = createSocket('udp4');
    secondary.on('message', (m, r) => {
      const d = dnsPacket.decode(m) as Decoded;
      notifies.push(d);
      // Acknowledge: same id, QR set, opcode NOTIFY.
      const ack = Buffer.from(m.subarray(0, 12));
      ack.writeUInt16BE(0x8000 | (4 << 11) | 0x0400, 2);
      ack.writeUInt32BE(0, 4);
      ack.writeUInt32BE(0, 8);
      secondary.send(ack, r.port, r.address);
    });
    await new Promise<void>((r) => secondary.bind(0, '127.0.0.1', () => r()));
    server = new DnsblServer({
      zone: zoneWith(1),
      port: 0,
      axfrAllow: ['127.0.0.0/8'],
      notify: [{ address: '127.0.0.1', port: secondary.address().port }],
      notifyTimeoutMs: 100,
      tcpIdleTimeoutMs: 500,
      maxTcpConnections: 4,
    });
    await server.start();
  });

  after(async () => {
    await server.stop();
    secondary.close();
  });

  it('answers over UDP and TCP on the same port', async () => {
    const u = dnsPacket.decode((await udp(server.port, q('3.2.1.10.relays.test', 'A')))!) as Decoded;
    assert.equal((u.answers?.[0] as { data: string }).data, '127.0.0.7');
    const t = await tcp(server.port, frame(q('3.2.1.10.relays.test', 'TXT')), 1);
    assert.deepEqual(((dnsPacket.decode(t.msgs[0]!) as Decoded).answers?.[0] as { data: Buffer[] }).data.map(String), ['single 10.1.2.3']);
  });

  it('answers pipelined TCP queries in order, even split across writes', async () => {
    const raw = Buffer.concat([frame(q('3.2.1.10.relays.test', 'A', 1)), frame(q('4.2.1.10.relays.test', 'A', 2)), frame(q('relays.test', 'SOA', 3))]);
    const t = await tcp(server.port, raw, 3);
    assert.deepEqual(t.msgs.map((m) => (dnsPacket.decode(m) as Decoded).id), [1, 2, 3]);
    assert.deepEqual(t.msgs.map((m) => (dnsPacket.decode(m) as Decoded).rcode), ['NOERROR', 'NXDOMAIN', 'NOERROR']);
  });

  it('transfers the zone over TCP to allowed clients', async () => {
    const t = await tcp(server.port, frame(q('relays.test', 'AXFR')), 1);
    const recs = t.msgs.flatMap((m) => (dnsPacket.decode(m) as Decoded).answers ?? []);
    assert.equal(recs[0]?.type, 'SOA');
    assert.equal(recs.at(-1)?.type, 'SOA');
    assert.ok(recs.some((r) => r.name === '3.2.1.10.relays.test' && r.type === 'A'));
  });

  it('refuses transfers to other clients', async () => {
    const s = new DnsblServer({ zone: zoneWith(1), port: 0, axfrAllow: ['192.0.2.0/24'] });
    await s.start();
    try {
      const t = await tcp(s.port, frame(q('relays.test', 'AXFR')), 1);
      assert.equal((dnsPacket.decode(t.msgs[0]!) as Decoded).rcode, 'REFUSED');
      assert.equal(t.msgs.length, 1);
    } finally {
      await s.stop();
    }
  });

  it('closes TCP connections that send junk lengths or stay idle; caps connections', async () => {
    const junk = await tcp(server.port, Buffer.from([0, 3, 1, 2, 3]), 1);
    assert.equal(junk.closed, true);
    const idle = await tcp(server.port, Buffer.alloc(0), 1, 2000);
    assert.equal(idle.closed, true);
    const socks: Socket[] = [];
    for (let i = 0; i < 6; i++) socks.push(connect({ host: '127.0.0.1', port: server.port }).on('error', () => {}));
    await Promise.all(socks.map((s) => once(s, 'connect').catch(() => {})));
    await new Promise((r) => setTimeout(r, 100));
    assert.ok(server.stats.tcpRejected + server.stats.tcpEvicted >= 2, JSON.stringify(server.stats));
    assert.ok(server.tcpConnections <= 4);
    for (const s of socks) s.destroy();
    await new Promise((r) => setTimeout(r, 50));
  });

  it('switches zones at once and NOTIFYs the secondaries on a new serial', async () => {
    notifies.length = 0;
    server.setZone(zoneWith(2, [{ network: '10.1.2.4', txt: 'new $' }]));
    const u = dnsPacket.decode((await udp(server.port, q('4.2.1.10.relays.test', 'A')))!) as Decoded;
    assert.equal(u.rcode, 'NOERROR');
    const results = await server.notifying;
    assert.deepEqual(results?.map((r) => r.acknowledged), [true]);
    const n = notifies[0]!;
    assert.equal((n as { opcode?: string }).opcode, 'NOTIFY');
    assert.equal(n.flag_aa, true);
    assert.deepEqual(n.questions, [{ name: 'relays.test', type: 'SOA', class: 'IN' }]);
    assert.equal((n.answers?.[0] as { data: { serial: number } }).data.serial, 2);
    // Same serial: no NOTIFY.
    const before = notifies.length;
    server.setZone(zoneWith(2));
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(notifies.length, before);
  });

  it('gives up on a silent secondary after the configured attempts', async () => {
    const silent = createSocket('udp4');
    await new Promise<void>((r) => silent.bind(0, '127.0.0.1', () => r()));
    let seen = 0;
    silent.on('message', () => seen++);
    const s = new DnsblServer({ zone: zoneWith(1), port: 0, notify: [{ address: '127.0.0.1', port: silent.address().port }], notifyAttempts: 3, notifyTimeoutMs: 20 });
    await s.start();
    try {
      const r = await s.notify();
      assert.deepEqual(r.map((x) => [x.acknowledged, x.attempts]), [[false, 3]]);
      assert.equal(seen, 3);
    } finally {
      await s.stop();
      silent.close();
    }
  });
});

describe('DnsblServer with UDP worker threads', () => {
  it('answers from every thread, swaps the zone in all of them, sums the counters, stops', async () => {
    const s = new DnsblServer({ zone: zoneWith(1), port: 0, udpThreads: 3 });
    await s.start();
    try {
      assert.equal(s.udpThreads, 3);
      // Many client sockets (the kernel spreads them over the threads by source port).
      const ask = async (name: string, type: string): Promise<Decoded[]> => Promise.all(Array.from({ length: 40 }, async (_, i) =>
        dnsPacket.decode((await udp(s.port, q(name, type, i)))!) as Decoded));
      const a = await ask('3.2.1.10.relays.test', 'A');
      assert.ok(a.every((d) => d.rcode === 'NOERROR' && (d.answers?.[0] as { data: string }).data === '127.0.0.7'));
      const t = await ask('7.2.0.192.relays.test', 'TXT');
      assert.ok(t.every((d) => (d.answers?.[0] as { data: Buffer[] }).data.map(String).join('') === 'net 192.0.2.7'));
      const before = await ask('4.2.1.10.relays.test', 'A');
      assert.ok(before.every((d) => d.rcode === 'NXDOMAIN'));
      s.setZone(zoneWith(2, [{ network: '10.1.2.4', txt: 'new $' }]));
      await new Promise((r) => setTimeout(r, 100)); // the workers get the zone by message
      const after = await ask('4.2.1.10.relays.test', 'A');
      assert.ok(after.every((d) => d.rcode === 'NOERROR'), 'every thread serves the new zone');
      const st = s.stats;
      assert.equal(st.udpQueries, 160);
      assert.equal(st.udpQueriesByThread.length, 3);
      assert.ok(st.udpQueriesByThread.filter((n) => n > 0).length >= 2, `spread: ${st.udpQueriesByThread.join(' ')}`);
      assert.equal(st.answered, 160);
      assert.equal(st.nxdomain, 40);
    } finally {
      await s.stop();
    }
    assert.equal(s.udpThreads, 0);
    // The port is free again: a single-threaded server can bind it.
    const again = new DnsblServer({ zone: zoneWith(1), port: s.port });
    await again.start();
    await again.stop();
  });

  it('a second server on the same port fails even with threads (TCP stays exclusive)', async () => {
    const s = new DnsblServer({ zone: zoneWith(1), port: 0, udpThreads: 2 });
    await s.start();
    try {
      const other = new DnsblServer({ zone: zoneWith(1), port: s.port, udpThreads: 2 });
      await assert.rejects(other.start(), { code: 'EADDRINUSE' });
      const single = new DnsblServer({ zone: zoneWith(1), port: s.port });
      await assert.rejects(single.start(), { code: 'EADDRINUSE' });
    } finally {
      await s.stop();
    }
  });

  it('refuses a bad thread count', () => {
    assert.throws(() => new DnsblServer({ zone: zoneWith(1), udpThreads: 0 }), RangeError);
    assert.throws(() => new DnsblServer({ zone: zoneWith(1), udpThreads: 1.5 }), RangeError);
  });
});
