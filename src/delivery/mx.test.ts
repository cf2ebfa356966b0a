import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { resolveNextHops, type MxResolver } from './mx.ts';

function err(code: string): Error {
  return Object.assign(new Error(code), { code });
}

/** A resolver from a table: name → { MX, A, AAAA } or an error code per type. */
function table(t: Record<string, { MX?: [number, string][] | string; A?: string[] | string; AAAA?: string[] | string }>): MxResolver {
  const get = async <T>(name: string, type: 'MX' | 'A' | 'AAAA', map: (v: never) => T): Promise<T> => {
    const e = t[name];
    if (!e) throw err('ENOTFOUND');
    const v = e[type];
    if (v === undefined) throw err('ENODATA');
    if (typeof v === 'string') throw err(v);
    return map(v as never);
  };
  return {
    resolveMx: (n) => get(n, 'MX', (v: [number, string][]) => v.map(([priority, exchange]) => ({ priority, exchange }))),
    resolve4: (n) => get(n, 'A', (v: string[]) => v),
    resolve6: (n) => get(n, 'AAAA', (v: string[]) => v),
  };
}

const PUBLIC = { allowPrivate: false };

describe('resolveNextHops', () => {
  it('preference order, equal preferences shuffled, IPv4 before IPv6 per host', async () => {
    const resolver = table({
      'x.test': { MX: [[20, 'b.x.test'], [10, 'a1.x.test'], [10, 'a2.x.test']] },
      'a1.x.test': { A: ['1.1.1.1'] }, 'a2.x.test': { A: ['1.1.1.2'], AAAA: ['2a00:1450::2'] }, 'b.x.test': { A: ['1.1.1.3'] },
    });
    const r = await resolveNextHops('x.test', { resolver, random: () => 0.5, ...PUBLIC, maxAddresses: 10 });
    assert.ok(r.ok);
    assert.deepEqual(r.hops.map((h) => h.address).slice(-1), ['1.1.1.3']);
    assert.deepEqual(new Set(r.hops.slice(0, 3).map((h) => h.host)), new Set(['a1.x.test', 'a2.x.test']));
    const a2 = r.hops.filter((h) => h.host === 'a2.x.test').map((h) => h.address);
    assert.deepEqual(a2, ['1.1.1.2', '2a00:1450::2']);
    assert.equal(r.hops[0]!.port, 25);
    let seq = [0.5, 0.9, 0.1];
    const r2 = await resolveNextHops('x.test', { resolver, random: () => seq.shift() ?? 0, ...PUBLIC });
    seq = [0.5, 0.1, 0.9];
    const r3 = await resolveNextHops('x.test', { resolver, random: () => seq.shift() ?? 0, ...PUBLIC });
    assert.ok(r2.ok && r3.ok);
    assert.notEqual(r2.hops[0]!.host, r3.hops[0]!.host, 'equal preferences are shuffled');
  });

  it('maps DNS failures: NXDOMAIN 5.4.4, SERVFAIL/timeout/REFUSED 4.4.3, null MX 5.1.10, ENODATA → implicit MX', async () => {
    const resolver = table({
      'sf.test': { MX: 'ESERVFAIL' }, 'to.test': { MX: 'ETIMEOUT' }, 'rf.test': { MX: 'EREFUSED' },
      'null.test': { MX: [[0, '']] }, 'impl.test': { A: ['1.1.1.9'] }, 'none.test': {},
      'mxnx.test': { MX: [[10, 'gone.mxnx.test']] }, 'mxsf.test': { MX: [[10, 'sf.mxsf.test']] }, 'sf.mxsf.test': { A: 'ESERVFAIL', AAAA: 'ENODATA' },
    });
    const st = async (d: string) => {
      const r = await resolveNextHops(d, { resolver, ...PUBLIC });
      return r.ok ? `ok ${r.implicit} ${r.hops.map((h) => h.address).join(',')}` : `${r.failure.outcome} ${r.failure.status}`;
    };
    assert.equal(await st('nx.test'), 'bounced 5.4.4');
    assert.equal(await st('sf.test'), 'deferred 4.4.3');
    assert.equal(await st('to.test'), 'deferred 4.4.3');
    assert.equal(await st('rf.test'), 'deferred 4.4.3');
    assert.equal(await st('null.test'), 'bounced 5.1.10');
    assert.equal(await st('impl.test'), 'ok true 1.1.1.9');
    assert.equal(await st('none.test'), 'bounced 5.4.4');
    assert.equal(await st('mxnx.test'), 'bounced 5.4.4');
    assert.equal(await st('mxsf.test'), 'deferred 4.4.3');
  });

  it('loops: loopback, our own listener, private space; backup-MX truncation', async () => {
    const resolver = table({
      'lo.test': { MX: [[10, 'mx.lo.test']] }, 'mx.lo.test': { A: ['127.0.0.1'] },
      'priv.test': { A: ['192.168.1.1'] },
      'bk.test': { MX: [[10, 'p.bk.test'], [20, 'me.bk.test'], [30, 'w.bk.test']] }, 'p.bk.test': { A: ['1.1.1.1'] }, 'me.bk.test': { A: ['9.9.9.5'] }, 'w.bk.test': { A: ['1.1.1.30'] },
      'best.test': { MX: [[10, 'me.bk.test'], [20, 'p.bk.test']] },
    });
    const self = [{ address: '9.9.9.5', port: 25 }];
    let r = await resolveNextHops('lo.test', { resolver });
    assert.ok(!r.ok && r.failure.status === '5.4.6' && /loops back to myself/.test(r.failure.text));
    r = await resolveNextHops('lo.test', { resolver, allowLoopback: true });
    assert.ok(r.ok);
    r = await resolveNextHops('lo.test', { resolver, allowLoopback: true, self: [{ address: '::', port: 25 }] });
    assert.ok(!r.ok && r.failure.status === '5.4.6', 'an unspecified listener address covers loopback');
    r = await resolveNextHops('lo.test', { resolver, allowLoopback: true, self: [{ address: '127.0.0.1', port: 2525 }] });
    assert.ok(r.ok, 'another port is not us');
    r = await resolveNextHops('priv.test', { resolver });
    assert.ok(!r.ok && r.failure.status === '5.4.6');
    r = await resolveNextHops('priv.test', { resolver, allowPrivate: true });
    assert.ok(r.ok);
    r = await resolveNextHops('bk.test', { resolver, self });
    assert.ok(r.ok);
    assert.deepEqual(r.hops.map((h) => h.host), ['p.bk.test']);
    r = await resolveNextHops('best.test', { resolver, self });
    assert.ok(!r.ok && r.failure.status === '5.4.6', 'we are the best MX');
  });

  it('address literals skip DNS; the loop check still applies', async () => {
    const resolver = table({});
    const r = await resolveNextHops('[1.1.1.1]', { resolver });
    assert.ok(r.ok && r.hops[0]!.address === '1.1.1.1');
    const l = await resolveNextHops('[127.0.0.1]', { resolver });
    assert.ok(!l.ok && l.failure.status === '5.4.6');
  });

  it('an aborted signal rejects at once', async () => {
    const resolver: MxResolver = { resolveMx: () => new Promise(() => {}), resolve4: async () => [], resolve6: async () => [] };
    const ac = new AbortController();
    const p = resolveNextHops('x.test', { resolver, signal: ac.signal });
    ac.abort(new Error('stop'));
    await assert.rejects(p, /stop/);
  });
});
