import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseIpTarget, parsePortSpec, resolveTarget, transportsFor, type TargetResolver } from './target.ts';

function fakeResolver(mx: Record<string, { exchange: string; priority: number }[]>, hosts: Record<string, string[]>): TargetResolver & { asked: string[] } {
  const asked: string[] = [];
  return {
    asked,
    async resolveMx(name) {
      asked.push(`MX ${name}`);
      const r = mx[name];
      if (!r) throw Object.assign(new Error('no data'), { code: 'ENODATA' });
      return r;
    },
    async lookup(name) {
      asked.push(`A ${name}`);
      const r = hosts[name];
      if (!r) throw Object.assign(new Error('not found'), { code: 'ENOTFOUND' });
      return r.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));
    },
  };
}

describe('target: ports', () => {
  it('knows the well-known roles and takes PORT:ROLE for others', () => {
    assert.deepEqual(parsePortSpec('25'), { port: 25, role: 'mx' });
    assert.deepEqual(parsePortSpec('587'), { port: 587, role: 'submission' });
    assert.deepEqual(parsePortSpec('465'), { port: 465, role: 'submissions' });
    assert.deepEqual(parsePortSpec('2525'), { port: 2525, role: 'mx' });
    assert.deepEqual(parsePortSpec('2465:submissions'), { port: 2465, role: 'submissions' });
    for (const bad of ['0', '65536', 'x', '25:relay', '-1', '']) assert.throws(() => parsePortSpec(bad), RangeError, bad);
  });
  it('plain + STARTTLS on mx and submission, implicit TLS on submissions', () => {
    assert.deepEqual(transportsFor('mx'), ['plain', 'starttls']);
    assert.deepEqual(transportsFor('submission', { tlsOnly: true }), ['starttls']);
    assert.deepEqual(transportsFor('mx', { noStartTls: true }), ['plain']);
    assert.deepEqual(transportsFor('submissions'), ['implicit']);
  });
});

describe('target: resolution', () => {
  it('IP targets in every spelling, IPv6 normalized', async () => {
    assert.equal(parseIpTarget('[IPv6:2001:DB8:0::1]'), '2001:db8::1');
    assert.equal(parseIpTarget('[::1]'), '::1');
    assert.equal(parseIpTarget('127.0.0.1'), '127.0.0.1');
    assert.equal(parseIpTarget('127.1'), null);
    const r = await resolveTarget('[2001:db8::25]', { resolver: fakeResolver({}, {}) });
    assert.deepEqual(r.map((t) => [t.address, t.family]), [['2001:db8::25', 6]]);
  });
  it('a mail domain: every MX by priority, every A and AAAA of each, tested separately', async () => {
    const res = fakeResolver(
      { 'example.org': [{ exchange: 'mx2.example.org', priority: 20 }, { exchange: 'mx1.example.org', priority: 10 }] },
      { 'mx1.example.org': ['192.0.2.1', '2001:db8::1'], 'mx2.example.org': ['192.0.2.2'] },
    );
    const r = await resolveTarget('Example.ORG.', { resolver: res });
    assert.deepEqual(r.map((t) => [t.address, t.hostName, t.domain, t.mx?.priority]), [
      ['192.0.2.1', 'mx1.example.org', 'example.org', 10],
      ['2001:db8::1', 'mx1.example.org', 'example.org', 10],
      ['192.0.2.2', 'mx2.example.org', 'example.org', 20],
    ]);
    const v6 = await resolveTarget('example.org', { resolver: res, family: 6 });
    assert.deepEqual(v6.map((t) => t.address), ['2001:db8::1']);
  });
  it('a host without MX (or with mx: false) is tested on its own addresses', async () => {
    const res = fakeResolver({ 'example.org': [{ exchange: 'mx1.example.org', priority: 10 }] }, { 'mail.example.com': ['192.0.2.9'], 'example.org': ['192.0.2.80'] });
    const r = await resolveTarget('mail.example.com', { resolver: res });
    assert.deepEqual(r.map((t) => [t.address, t.hostName, t.domain, t.mx]), [['192.0.2.9', 'mail.example.com', null, null]]);
    const noMx = await resolveTarget('example.org', { resolver: res, mx: false });
    assert.deepEqual(noMx.map((t) => t.address), ['192.0.2.80']);
    assert.ok(!res.asked.includes('MX example.org') || res.asked.filter((a) => a === 'MX example.org').length === 0);
  });
  it('a null MX means no mail: falls back to the name itself; no address at all is an error', async () => {
    const res = fakeResolver({ 'nomail.example': [{ exchange: '', priority: 0 }] }, {});
    await assert.rejects(resolveTarget('nomail.example', { resolver: res }), (e: Error & { code?: string }) => e.code === 'ERR_TESTER_RESOLVE');
  });
  it('refuses malformed targets', async () => {
    await assert.rejects(resolveTarget('not a host', { resolver: fakeResolver({}, {}) }), RangeError);
    await assert.rejects(resolveTarget('-bad-.example', { resolver: fakeResolver({}, {}) }), RangeError);
  });
});
