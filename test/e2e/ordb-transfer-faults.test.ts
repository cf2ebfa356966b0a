/**
 * Zone transfers under faults (issue 14, "Bad input and faults"): a secondary asking IXFR for a serial from the
 * future or from before the journal, over UDP, with a bad TSIG, from a network that is not allowed; and a client
 * that opens a transfer of a big zone and never reads: the server's memory stays bounded and the connection ends.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { createSocket } from 'node:dgram';
import dnsPacket from 'dns-packet';
import { DnsblServer, ListingStore, tsigKey, ZoneJournal, zoneFromStore } from '../../src/dnsbl/index.ts';
import { signMessage } from '../../src/dnsbl/tsig.ts';

const ZONE = 'relays.test';
const KEY = tsigKey('xfr', 'hmac-sha256', Buffer.alloc(32, 3).toString('base64'));
const stops: (() => Promise<void> | void)[] = [];
after(async () => { for (const s of stops.reverse()) await s(); });

async function primary(entries: number, extra: Partial<ConstructorParameters<typeof DnsblServer>[0]> = {}): Promise<{ server: DnsblServer; serials: number[] }> {
  const store = ListingStore.open(':memory:');
  const inputs = [];
  for (let i = 0; i < entries; i++) inputs.push({ network: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, reason: `open relay number ${i}, evidence at https://ordb.example/lookup` });
  store.addMany(inputs);
  const opts = { apex: ZONE, ttl: 300, evidenceUrl: null };
  const journal = new ZoneJournal(store);
  const server = new DnsblServer({ zone: zoneFromStore(store, opts), port: 0, axfrAllow: ['127.0.0.1'], journal, ...extra });
  await server.start();
  const serials = [server.zone.serial];
  for (const n of ['192.0.2.1', '192.0.2.2']) {
    store.add({ network: n });
    const next = zoneFromStore(store, opts);
    journal.record(server.zone, next);
    server.setZone(next);
    serials.push(next.serial);
  }
  stops.push(async () => { await server.stop(); store.close(); });
  return { server, serials };
}

function ixfr(serial: number | null, type: 'IXFR' | 'AXFR' = 'IXFR'): Buffer {
  return dnsPacket.encode({
    type: 'query', id: 77, questions: [{ type, name: ZONE, class: 'IN' }],
    ...(serial !== null ? { authorities: [{ type: 'SOA', name: ZONE, ttl: 0, data: { mname: 'a', rname: 'b', serial, refresh: 1, retry: 1, expire: 1, minimum: 1 } }] } : {}),
  });
}

/** One TCP exchange: every message until the transfer ends (SOA twice) or the server closes. */
function tcpExchange(port: number, query: Buffer, host = '127.0.0.1', localAddress?: string): Promise<Buffer[]> {
  return new Promise((resolve, reject) => {
    const s = connect({ host, port, ...(localAddress ? { localAddress } : {}) });
    const frame = Buffer.alloc(2 + query.length);
    frame.writeUInt16BE(query.length);
    query.copy(frame, 2);
    s.write(frame);
    let buf = Buffer.alloc(0);
    const msgs: Buffer[] = [];
    let soas = 0;
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        const m = buf.subarray(2, 2 + buf.readUInt16BE(0));
        buf = buf.subarray(2 + m.length);
        msgs.push(Buffer.from(m));
        const dec = dnsPacket.decode(m) as { rcode?: string; answers?: { type: string }[] };
        soas += (dec.answers ?? []).filter((a) => a.type === 'SOA').length;
        if (dec.rcode !== 'NOERROR' || soas >= 2 || (msgs.length === 1 && (dec.answers ?? []).length === 1 && soas === 1)) { s.end(); resolve(msgs); return; }
      }
    });
    s.on('error', reject);
    s.on('close', () => resolve(msgs));
  });
}

const answers = (msgs: Buffer[]): { type: string; data: unknown }[] => msgs.flatMap((m) => (dnsPacket.decode(m) as { answers?: { type: string; data: unknown }[] }).answers ?? []);

describe('transfer faults', () => {
  it('IXFR from a serial from the future: the current SOA alone (nothing newer to send); from before the journal: the whole zone', async () => {
    const { server, serials } = await primary(100);
    const future = answers(await tcpExchange(server.port, ixfr((serials.at(-1)! + 1000) >>> 0)));
    assert.deepEqual(future.map((a) => a.type), ['SOA']);
    assert.equal((future[0]!.data as { serial: number }).serial, serials.at(-1));
    const old = answers(await tcpExchange(server.port, ixfr(12345)));
    assert.equal(old.filter((a) => a.type === 'A').length, 100 + 2 + 2, 'the whole zone (listings, two additions, the two RFC 5782 test points)');
    const inc = answers(await tcpExchange(server.port, ixfr(serials[0]!)));
    assert.deepEqual(inc.filter((a) => a.type === 'SOA').map((a) => (a.data as { serial: number }).serial), [serials[2], serials[0], serials[1], serials[1], serials[2], serials[2]]);
  });

  it('IXFR and AXFR over UDP are REFUSED; from a network not in axfrAllow REFUSED over TCP', async () => {
    const { server } = await primary(10);
    for (const q of [ixfr(1), ixfr(null, 'AXFR')]) {
      const sock = createSocket('udp4');
      const reply = await new Promise<Buffer>((resolve) => { sock.once('message', resolve); sock.send(q, server.port, '127.0.0.1'); });
      sock.close();
      assert.equal((dnsPacket.decode(reply) as unknown as { rcode: string }).rcode, 'REFUSED');
    }
    const far = await tcpExchange(server.port, ixfr(1), '127.0.0.1', '127.0.0.9').catch(() => null);
    // 127.0.0.9 is not in axfrAllow (127.0.0.1 only).
    assert.ok(far !== null);
    assert.equal((dnsPacket.decode(far[0]!) as unknown as { rcode: string }).rcode, 'REFUSED');
  });

  it('a bad TSIG on a transfer request: NOTAUTH, and no zone data', async () => {
    const { server } = await primary(10, { tsigKeys: [KEY] });
    const wrong = tsigKey('xfr', 'hmac-sha256', Buffer.alloc(32, 4).toString('base64'));
    const msgs = await tcpExchange(server.port, signMessage(ixfr(null, 'AXFR'), wrong, { nowSeconds: Math.floor(Date.now() / 1000) }).bytes);
    assert.equal(msgs.length, 1);
    assert.equal(msgs[0]![3]! & 0x0f, 9, 'NOTAUTH');
    assert.equal(answers(msgs).length, 0);
    const unsigned = await tcpExchange(server.port, ixfr(null, 'AXFR'));
    assert.equal((dnsPacket.decode(unsigned[0]!) as unknown as { rcode: string }).rcode, 'REFUSED', 'keys configured: unsigned transfers refused');
    const good = await tcpExchange(server.port, signMessage(ixfr(null, 'AXFR'), KEY, { nowSeconds: Math.floor(Date.now() / 1000) }).bytes);
    assert.ok(answers(good).length > 10);
  });

  it('a client that asks for a big zone and never reads: bounded memory, the connection ends at the session deadline', async () => {
    const { server } = await primary(100_000, { tcpIdleTimeoutMs: 500, tcpSessionTimeoutMs: 2000, maxTcpOutput: 256 * 1024 });
    global.gc?.();
    const before = process.memoryUsage().rss;
    const s = connect({ host: '127.0.0.1', port: server.port });
    s.pause(); // never read
    const q = ixfr(null, 'AXFR');
    const frame = Buffer.alloc(2 + q.length);
    frame.writeUInt16BE(q.length);
    q.copy(frame, 2);
    s.write(frame);
    s.on('error', () => {});
    const t0 = Date.now();
    await new Promise((r) => setTimeout(r, 1500));
    const during = process.memoryUsage().rss;
    // The paused client cannot see the close (it reads nothing): watch the server's side.
    let at = -1;
    while (Date.now() - t0 < 10_000) {
      if (server.tcpConnections === 0) { at = Date.now(); break; }
      await new Promise((r) => setTimeout(r, 50));
    }
    s.destroy();
    assert.notEqual(at, -1, 'the server never closed the stalled transfer');
    assert.ok(at - t0 < 6000, `closed after ${at - t0} ms`);
    assert.ok(server.stats.tcpTimedOut >= 1);
    // A 100,000-entry AXFR is tens of MB on the wire; the stalled one holds at most the socket buffers + one message.
    assert.ok(during - before < 40 * 1024 * 1024, `rss grew ${((during - before) / 1048576).toFixed(1)} MB`);
  });
});
