import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { classifyDnsError, nodeResolver } from './dns.ts';
import { startFakeDns } from '../testing/fake-dns.ts';

describe('audit DNS client', () => {
  it('classifies node:dns errors', () => {
    const c = (code: string): string => { const a = classifyDnsError(Object.assign(new Error(code), { code })); return a.kind === 'none' ? `none:${a.reason}` : a.kind; };
    assert.equal(c('ENOTFOUND'), 'none:nxdomain');
    assert.equal(c('ENODATA'), 'none:nodata');
    for (const u of ['ETIMEOUT', 'ECONNREFUSED', 'ECANCELLED']) assert.equal(c(u), 'unreachable');
    for (const b of ['ESERVFAIL', 'EREFUSED', 'EBADRESP', 'EFORMERR', 'ENOTIMP', 'EWHATEVER']) assert.equal(c(b), 'broken');
  });

  it('maps real answers over UDP: records, NXDOMAIN, NODATA, SERVFAIL, REFUSED, timeout', async () => {
    const dns = await startFakeDns({
      zone: {
        'ok.test': { TXT: [['v=spf1 ', '-all']], MX: [{ preference: 10, exchange: 'mx.ok.test' }], A: ['192.0.2.1'] },
        'empty.test': { mode: 'EMPTY' },
        'sf.test': { mode: 'SERVFAIL' },
        'ref.test': { mode: 'REFUSED' },
        'slow.test': { mode: 'TIMEOUT' },
      },
    });
    try {
      const r = nodeResolver({ servers: [`${dns.host}:${dns.port}`], timeoutMs: 600 });
      assert.deepEqual(await r.txt('ok.test'), { kind: 'ok', records: ['v=spf1 -all'] });
      assert.deepEqual(await r.mx('ok.test'), { kind: 'ok', records: [{ exchange: 'mx.ok.test', priority: 10 }] });
      assert.deepEqual(await r.a('ok.test'), { kind: 'ok', records: ['192.0.2.1'] });
      assert.deepEqual(await r.txt('absent.test'), { kind: 'none', reason: 'nxdomain' });
      assert.deepEqual(await r.txt('empty.test'), { kind: 'none', reason: 'nodata' });
      assert.equal((await r.txt('sf.test')).kind, 'broken');
      assert.equal((await r.txt('ref.test')).kind, 'broken');
      const t0 = Date.now();
      assert.equal((await r.txt('slow.test')).kind, 'unreachable');
      assert.ok(Date.now() - t0 < 3000);
    } finally {
      await dns.close();
    }
  });

  it('a server that answers garbage is broken; an aborted audit is unreachable', async () => {
    const s = createSocket('udp4');
    s.on('message', (msg, rinfo) => {
      const out = Buffer.alloc(12); // the query id, "1 question and 5 answers", and nothing after the header
      msg.copy(out, 0, 0, 2);
      out.writeUInt16BE(0x8180, 2);
      out.writeUInt16BE(1, 4);
      out.writeUInt16BE(5, 6);
      s.send(out, rinfo.port, rinfo.address);
    });
    await new Promise<void>((resolve) => s.bind(0, '127.0.0.1', resolve));
    try {
      const port = (s.address() as { port: number }).port;
      const r = nodeResolver({ servers: [`127.0.0.1:${port}`], timeoutMs: 1000 });
      assert.equal((await r.txt('x.test')).kind, 'broken');
      assert.equal((await r.tlsa('_25._tcp.x.test')).kind, 'broken');
      const ac = new AbortController();
      ac.abort();
      const aborted = nodeResolver({ servers: [`127.0.0.1:${port}`], timeoutMs: 1000, signal: ac.signal });
      assert.equal((await aborted.txt('x.test')).kind, 'unreachable');
    } finally {
      s.close();
    }
  });
});
