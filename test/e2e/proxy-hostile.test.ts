/**
 * The open-proxy battery against scripted proxies (src/testing/fake-proxy.ts): honest open ones are OPEN only
 * through the sink (with the egress address, also behind a chain), and every hostile one (endless headers, a
 * CONNECT reply that never ends, binary garbage, a SOCKS reply with a wrong version or length, a tunnel back to a
 * fake server of its own, redirects, a 200 with nothing behind it, slow drips, a silent tarpit) ends with a
 * verdict and a reason within the per-target budget, with bounded reads, and nothing reaching the sink.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { ProxySink, testProxyTarget, type ProxyTargetResult, type ProxyTesterOptions } from '../../src/tester/proxy/index.ts';
import { startFakeProxy, type FakeProxy, type FakeProxyBehavior } from '../../src/testing/fake-proxy.ts';

let sink: ProxySink;
before(async () => {
  sink = await ProxySink.start({ listen: [
    { address: '127.0.0.1', port: 0, kind: 'mail' }, { address: '::1', port: 0, kind: 'mail' }, { address: '127.0.0.1', port: 0, kind: 'control' },
  ] });
});
after(async () => { await sink.close(); });

const STEP = 1500;
const BUDGET = 8000;
const CAP = 16 * 1024;

async function run(fake: FakeProxy, extra: Partial<ProxyTesterOptions> = {}): Promise<{ r: ProxyTargetResult; ms: number }> {
  const t0 = Date.now();
  const r = await testProxyTarget({ input: fake.address, address: fake.address, family: 4 }, {
    ports: [fake.port], sink, testerDomain: 'probe.test', budgetMs: BUDGET, timeouts: { step: STEP, prompt: 800, arrival: 1000 }, ...extra,
  });
  return { r, ms: Date.now() - t0 };
}

async function withFake<T>(behavior: FakeProxyBehavior, fn: (f: FakeProxy) => Promise<T>, more: { egressAddress?: string; address?: string } = {}): Promise<T> {
  const f = await startFakeProxy({ behavior, ...more });
  try { return await fn(f); } finally { await f.close(); }
}

describe('open-proxy battery: honest open proxies are OPEN through the sink', () => {
  it('HTTP CONNECT/POST/GET: OPEN proved, egress = the address the sink saw, IPv4, IPv6 and control', async () => {
    await withFake('http-open', async (f) => {
      const { r } = await run(f);
      assert.equal(r.verdict, 'OPEN', JSON.stringify(r, null, 1));
      const byId = new Map(r.ports[0]!.attempts.map((a) => [a.id, a]));
      for (const id of ['P01', 'P02', 'P03', 'P04', 'P05']) assert.equal(byId.get(id)!.verdict, 'OPEN', `${id}: ${byId.get(id)!.detail}`);
      assert.equal(byId.get('P01')!.proof!.egressAddress, '127.0.0.9');
      assert.equal(byId.get('P02')!.proof!.egressAddress, '::1');
      assert.equal(byId.get('P03')!.proof!.sinkKind, 'control');
      assert.equal(byId.get('P01')!.smtp!.bannerMatches, true);
      assert.match(byId.get('P01')!.smtp!.ehlo ?? '', /^250/);
      assert.match(byId.get('P05')!.proof!.sinkLine ?? '', /^GET \/rg-/);
      for (const id of ['S01', 'S03', 'T01']) assert.equal(byId.get(id)!.verdict, 'N/A', `${id} on an HTTP proxy: ${byId.get(id)!.detail}`);
      assert.deepEqual(r.ports[0]!.protocols, ['http']);
      assert.ok(r.ports[0]!.findings.some((x) => x.id === 'open-proxy'));
    }, { egressAddress: '127.0.0.9' });
  });

  it('SOCKS4, SOCKS4a and SOCKS5 (IPv4, IPv6, by name, control): OPEN proved', async () => {
    await withFake('socks-open', async (f) => {
      const { r } = await run(f);
      const v = Object.fromEntries(r.ports[0]!.attempts.map((a) => [a.id, a.verdict]));
      assert.deepEqual([v.S01, v.S02, v.S03, v.S04, v.S05, v.S06], ['OPEN', 'OPEN', 'OPEN', 'OPEN', 'OPEN', 'OPEN'], JSON.stringify(r.ports[0]!.attempts.map((a) => [a.id, a.detail])));
      assert.equal(v.P01, 'N/A');
    });
  });

  it('a Wingate-style telnet gateway (host:port at its prompt): OPEN proved', async () => {
    await withFake('wingate', async (f) => {
      const { r } = await run(f);
      const t = r.ports[0]!.attempts.find((a) => a.id === 'T01')!;
      assert.equal(t.verdict, 'OPEN', t.detail);
      assert.deepEqual(r.ports[0]!.protocols, ['telnet']);
    });
  });

  it('a proxy on an IPv6 address (::1) is tested the same way', async () => {
    const f = await startFakeProxy({ behavior: 'http-open', address: '::1' });
    try {
      const r = await testProxyTarget({ input: '::1', address: '::1', family: 6 }, { ports: [f.port], sink, testerDomain: 'probe.test', budgetMs: BUDGET, timeouts: { step: STEP } });
      assert.equal(r.verdict, 'OPEN', r.detail);
      assert.equal(r.family, 6);
      assert.ok(r.ports[0]!.attempts.find((a) => a.id === 'P02')!.proof!.arrived);
    } finally { await f.close(); }
  });

  it('a chain (a proxy that forwards through another): the egress address differs from the tested one and is reported', async () => {
    const upstream = await startFakeProxy({ behavior: 'http-open', address: '127.0.0.21', egressAddress: '127.0.0.22' });
    try {
      const front = await startFakeProxy({ behavior: 'chain', address: '127.0.0.20', upstream: { host: upstream.address, port: upstream.port } });
      try {
        const { r } = await run(front);
        const p01 = r.ports[0]!.attempts.find((a) => a.id === 'P01')!;
        assert.equal(p01.verdict, 'OPEN', p01.detail);
        assert.equal(p01.proof!.egressAddress, '127.0.0.22');
        assert.equal(r.address, '127.0.0.20');
        assert.ok(r.egress.includes('127.0.0.22'));
        const f = r.ports[0]!.findings.find((x) => x.id === 'egress-differs');
        assert.ok(f, JSON.stringify(r.ports[0]!.findings));
        assert.match(f.message, /127\.0\.0\.22.*127\.0\.0\.20/);
      } finally { await front.close(); }
    } finally { await upstream.close(); }
  });
});

interface Case { behavior: FakeProxyBehavior; verdict: string; reason: string; detail?: RegExp }
const HOSTILE: Case[] = [
  { behavior: 'http-auth', verdict: 'CLOSED', reason: 'auth-required', detail: /407/ },
  { behavior: 'http-forbidden', verdict: 'CLOSED', reason: 'refused', detail: /403/ },
  { behavior: 'socks5-userpass', verdict: 'CLOSED', reason: 'auth-required', detail: /username\/password/ },
  { behavior: 'socks-refuse', verdict: 'CLOSED', reason: 'refused' },
  { behavior: 'endless-headers', verdict: 'INCONCLUSIVE', reason: 'protocol-error', detail: /more than 16384 bytes/ },
  { behavior: 'never-ending-reply', verdict: 'INCONCLUSIVE', reason: 'protocol-error', detail: /more than 16384 bytes/ },
  { behavior: 'garbage', verdict: 'INCONCLUSIVE', reason: 'protocol-error' },
  { behavior: 'socks-bad-version', verdict: 'INCONCLUSIVE', reason: 'protocol-error', detail: /version/ },
  { behavior: 'socks-bad-length', verdict: 'INCONCLUSIVE', reason: 'tarpit', detail: /bound address/ },
  { behavior: 'connect-back', verdict: 'INCONCLUSIVE', reason: 'lies', detail: /another server answered/ },
  { behavior: 'redirect', verdict: 'CLOSED', reason: 'redirected', detail: /portal\.example/ },
  { behavior: 'claims-200', verdict: 'INCONCLUSIVE', reason: 'lies', detail: /nothing came through the tunnel/ },
  { behavior: 'socks-claims', verdict: 'INCONCLUSIVE', reason: 'lies' },
  { behavior: 'slow-drip', verdict: 'INCONCLUSIVE', reason: 'tarpit', detail: /slow drip/ },
  { behavior: 'tarpit', verdict: 'INCONCLUSIVE', reason: 'timeout' },
];

describe('open-proxy battery: hostile proxies end with a verdict and a reason, within the budget, bounded', () => {
  for (const c of HOSTILE) {
    it(`${c.behavior}: ${c.verdict} ${c.reason}`, async () => {
      const before = sink.arrivals.length;
      await withFake(c.behavior, async (f) => {
        const { r, ms } = await run(f);
        assert.equal(r.verdict, c.verdict, `${c.behavior}: ${r.reason} ${r.detail}`);
        assert.equal(r.reason, c.reason, `${c.behavior}: ${r.detail}`);
        if (c.detail) assert.match(r.detail, c.detail);
        assert.ok(ms < BUDGET, `finished in ${ms} ms (budget ${BUDGET})`);
        assert.ok(ms < STEP * 2 + 1500, `finished in ${ms} ms, about one step deadline (${STEP} ms)`);
        assert.deepEqual(r.egress, [], 'nothing reached the sink');
        for (const a of r.ports[0]!.attempts) assert.ok(a.bytesIn <= CAP + 128 * 1024, `${a.id} read ${a.bytesIn} bytes`);
        // the tester hung up: a flooding fake stops writing
        const w1 = f.bytesWritten();
        await new Promise((res) => setTimeout(res, 300));
        const w2 = f.bytesWritten();
        assert.ok(w2 - w1 < 64 * 1024, `${c.behavior} kept writing ${w2 - w1} bytes after the verdict`);
      });
      assert.equal(sink.arrivals.length, before);
    });
  }

  it('the per-target budget ends a tarpit early: INCONCLUSIVE budget-exhausted', async () => {
    await withFake('tarpit', async (f) => {
      const t0 = Date.now();
      const r = await testProxyTarget({ input: f.address, address: f.address, family: 4 }, { ports: [f.port], sink, testerDomain: 'probe.test', budgetMs: 700, timeouts: { step: 10_000, prompt: 10_000 } });
      assert.ok(Date.now() - t0 < 2000, `took ${Date.now() - t0} ms`);
      assert.deepEqual([r.verdict, r.reason], ['INCONCLUSIVE', 'budget-exhausted'], r.detail);
    });
  });

  it('nothing listening: CLOSED no-service', async () => {
    const f = await startFakeProxy({ behavior: 'tarpit' });
    const port = f.port;
    await f.close();
    const r = await testProxyTarget({ input: '127.0.0.1', address: '127.0.0.1', family: 4 }, { ports: [port], sink, testerDomain: 'probe.test', budgetMs: 3000 });
    assert.deepEqual([r.verdict, r.reason], ['CLOSED', 'no-service']);
  });

  it('many hostile proxies at once: the heap stays bounded', async () => {
    const fakes = await Promise.all((['endless-headers', 'never-ending-reply', 'garbage'] as const).flatMap((b) => [0, 1, 2, 3].map(() => startFakeProxy({ behavior: b }))));
    try {
      global.gc?.();
      const h0 = process.memoryUsage().heapUsed;
      const results = await Promise.all(fakes.map((f) => run(f)));
      for (const { r } of results) assert.equal(r.verdict, 'INCONCLUSIVE');
      const grown = process.memoryUsage().heapUsed - h0;
      assert.ok(grown < 64 * 1024 * 1024, `heap grew ${grown} bytes for ${fakes.length} flooding proxies`);
    } finally { await Promise.all(fakes.map((f) => f.close())); }
  });
});
