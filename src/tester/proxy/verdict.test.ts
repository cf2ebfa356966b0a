import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { PROXY_PROBES, emptyRaw, type RawAttempt } from './probes.ts';
import { aggregateProxy, applyPortProtocol, classifyProxyAttempt, type ProxyOutcome } from './verdict.ts';

const probe = (id: string) => PROXY_PROBES.find((p) => p.id === id)!;
const raw = (o: Partial<RawAttempt>): RawAttempt => ({ ...emptyRaw(), ...o });
const none = { arrived: false, egressAddress: null, sinkKind: null, via: null } as const;

describe('proxy verdicts', () => {
  it('OPEN only by arrival, with the egress address', () => {
    const o = classifyProxyAttempt(probe('P01'), raw({ speaks: 'http', status: 200, claimed: true, reply: 'HTTP/1.1 200 OK' }), { arrived: true, egressAddress: '192.0.2.9', sinkKind: 'mail', via: 'EHLO' });
    assert.equal(o.verdict, 'OPEN');
    assert.equal(o.reason, 'proved');
    assert.match(o.detail, /192\.0\.2\.9/);
  });
  it('a claimed tunnel without arrival is INCONCLUSIVE lies (fake banner or silence)', () => {
    const fake = classifyProxyAttempt(probe('P01'), raw({ speaks: 'http', status: 200, claimed: true, banner: '220 honeypot', bannerMatches: false }), none);
    assert.deepEqual([fake.verdict, fake.reason], ['INCONCLUSIVE', 'lies']);
    assert.match(fake.detail, /another server answered/);
    const silent = classifyProxyAttempt(probe('S03'), raw({ speaks: 'socks5', socksCode: 0, socksMethod: 0, claimed: true }), none);
    assert.deepEqual([silent.verdict, silent.reason], ['INCONCLUSIVE', 'lies']);
  });
  it('a 2xx to GET or POST without arrival is CLOSED not-forwarded (a web server answering itself)', () => {
    const o = classifyProxyAttempt(probe('P05'), raw({ speaks: 'http', status: 200, claimed: true }), none);
    assert.deepEqual([o.verdict, o.reason], ['CLOSED', 'not-forwarded']);
  });
  it('HTTP statuses: 407 auth, 403 refused, 302 redirected, 502 destination-unreachable', () => {
    const s = (status: number): ProxyOutcome => classifyProxyAttempt(probe('P01'), raw({ speaks: 'http', status, reply: `HTTP/1.1 ${status}`, location: status === 302 ? 'http://x/' : null }), none);
    assert.equal(s(407).reason, 'auth-required');
    assert.equal(s(403).reason, 'refused');
    assert.equal(s(302).reason, 'redirected');
    assert.match(s(302).detail, /http:\/\/x\//);
    assert.deepEqual([s(502).verdict, s(502).reason], ['INCONCLUSIVE', 'destination-unreachable']);
  });
  it('SOCKS codes: 5a claimed, 5b refused, 5c auth; SOCKS5 method 02 auth, ff refused, rep 02 refused, rep 05 unreachable, rep 08 N/A', () => {
    assert.equal(classifyProxyAttempt(probe('S01'), raw({ speaks: 'socks4', socksCode: 0x5b }), none).reason, 'refused');
    assert.equal(classifyProxyAttempt(probe('S01'), raw({ speaks: 'socks4', socksCode: 0x5c }), none).reason, 'auth-required');
    assert.equal(classifyProxyAttempt(probe('S03'), raw({ speaks: 'socks5', socksMethod: 2 }), none).reason, 'auth-required');
    assert.equal(classifyProxyAttempt(probe('S03'), raw({ speaks: 'socks5', socksMethod: 0xff }), none).reason, 'refused');
    assert.equal(classifyProxyAttempt(probe('S03'), raw({ speaks: 'socks5', socksMethod: 0, socksCode: 2 }), none).reason, 'refused');
    assert.equal(classifyProxyAttempt(probe('S03'), raw({ speaks: 'socks5', socksMethod: 0, socksCode: 5 }), none).reason, 'destination-unreachable');
    assert.equal(classifyProxyAttempt(probe('S04'), raw({ speaks: 'socks5', socksMethod: 0, socksCode: 8 }), none).verdict, 'N/A');
  });
  it('wire failures: refused no-service, timeout, tarpit, overflow/garbage/bad version protocol-error, closed dropped, aborted budget', () => {
    const f = (kind: NonNullable<RawAttempt['failure']>['kind']): string => classifyProxyAttempt(probe('P01'), raw({ failure: { kind, message: kind } }), none).reason;
    assert.equal(f('refused'), 'no-service');
    assert.equal(f('timeout'), 'timeout');
    assert.equal(f('tarpit'), 'tarpit');
    assert.equal(f('overflow'), 'protocol-error');
    assert.equal(f('garbage'), 'protocol-error');
    assert.equal(f('bad-version'), 'protocol-error');
    assert.equal(f('bad-length'), 'protocol-error');
    assert.equal(f('closed'), 'dropped');
    assert.equal(f('aborted'), 'budget-exhausted');
    assert.equal(classifyProxyAttempt(probe('T01'), raw({ failure: { kind: 'timeout', message: 'x' } }), none).reason, 'no-prompt');
  });
  it('attempts in a protocol the port does not speak become N/A wrong-protocol', () => {
    const mk = (id: string, r: RawAttempt) => ({ probe: probe(id), raw: r, outcome: classifyProxyAttempt(probe(id), r, none) });
    const { protocols, attempts } = applyPortProtocol([
      mk('P01', raw({ speaks: 'http', status: 403, reply: 'HTTP/1.1 403' })),
      mk('S03', raw({ failure: { kind: 'garbage', message: 'an HTTP reply to SOCKS5' }, speaks: 'http' })),
      mk('S01', raw({ failure: { kind: 'timeout', message: 'no reply' } })),
    ]);
    assert.deepEqual(protocols, ['http']);
    assert.deepEqual(attempts.map((a) => a.outcome.verdict), ['CLOSED', 'N/A', 'N/A']);
    const agg = aggregateProxy(attempts.map((a) => a.outcome).filter((o) => o.verdict !== 'N/A'));
    assert.deepEqual([agg.verdict, agg.reason], ['CLOSED', 'refused']);
  });
  it('aggregation: OPEN wins, then INCONCLUSIVE (lies first), then the most frequent CLOSED reason', () => {
    const o = (verdict: ProxyOutcome['verdict'], reason: ProxyOutcome['reason']): ProxyOutcome => ({ verdict, reason, detail: reason });
    assert.equal(aggregateProxy([o('CLOSED', 'refused'), o('OPEN', 'proved')]).verdict, 'OPEN');
    assert.equal(aggregateProxy([o('INCONCLUSIVE', 'timeout'), o('INCONCLUSIVE', 'lies'), o('CLOSED', 'refused')]).reason, 'lies');
    assert.equal(aggregateProxy([o('CLOSED', 'refused'), o('CLOSED', 'auth-required'), o('CLOSED', 'auth-required')]).reason, 'auth-required');
    assert.deepEqual([aggregateProxy([]).verdict, aggregateProxy([]).reason], ['INCONCLUSIVE', 'not-tested']);
  });
});
