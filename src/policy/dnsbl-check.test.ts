import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { formatReply } from '../core/reply.ts';
import { cleanReason, evaluateDnsbl, type DnsblZoneResult } from './dnsbl-check.ts';

const listed = (zone: string, weight = 1, txt: string | null = null): DnsblZoneResult => ({ zone, weight, kind: 'listed', codes: ['127.0.0.2'], txt });
const clean = (zone: string, weight = 1): DnsblZoneResult => ({ zone, weight, kind: 'not-listed' });

describe('evaluateDnsbl', () => {
  it('blocks a client listed in a zone of weight >= threshold, with the Postfix-style reply', () => {
    const d = evaluateDnsbl({ ip: '192.0.2.7', results: [clean('a.test'), listed('relays.test', 1, 'Open relay, see http://x/?ip=192.0.2.7')], threshold: 1 });
    assert.equal(d.blocked, true);
    assert.ok(d.blocked);
    assert.equal(d.zone, 'relays.test');
    assert.equal(d.score, 1);
    assert.equal(formatReply(d.reply), '554 5.7.1 Service unavailable; Client host [192.0.2.7] blocked using relays.test; Open relay, see http://x/?ip=192.0.2.7\r\n');
  });

  it('leaves "; REASON" out when the zone has no TXT', () => {
    const d = evaluateDnsbl({ ip: '2001:db8::1', results: [listed('relays.test')] });
    assert.ok(d.blocked);
    assert.equal(d.reply.text, 'Service unavailable; Client host [2001:db8::1] blocked using relays.test');
  });

  it('adds weights up to the threshold (postscreen): one light list alone does not block, two do', () => {
    const results = [listed('a.test', 1), clean('b.test', 1), listed('c.test', 2, 'c says so')];
    assert.equal(evaluateDnsbl({ ip: '192.0.2.1', results: [listed('a.test', 1)], threshold: 2 }).blocked, false);
    const d = evaluateDnsbl({ ip: '192.0.2.1', results, threshold: 3 });
    assert.ok(d.blocked);
    assert.equal(d.score, 3);
    assert.equal(d.zone, 'c.test', 'the heaviest listing zone is named');
    assert.deepEqual(d.listedIn, ['a.test', 'c.test']);
    assert.equal(evaluateDnsbl({ ip: '192.0.2.1', results, threshold: 3.5 }).blocked, false);
  });

  it('never blocks on DNS failures, broken answers or disabled zones (fail open)', () => {
    const results: DnsblZoneResult[] = [
      { zone: 'a.test', weight: 5, kind: 'error' },
      { zone: 'b.test', weight: 5, kind: 'broken' },
      { zone: 'c.test', weight: 5, kind: 'disabled' },
      clean('d.test', 5),
    ];
    const d = evaluateDnsbl({ ip: '192.0.2.1', results, threshold: 1 });
    assert.equal(d.blocked, false);
    assert.equal(d.score, 0);
    assert.deepEqual(d.ignored, ['a.test', 'b.test', 'c.test']);
  });

  it('never blocks trusted clients or authenticated users', () => {
    const results = [listed('relays.test', 10)];
    const t = evaluateDnsbl({ ip: '192.0.2.1', results, trusted: true });
    assert.equal(t.blocked, false);
    assert.ok(!t.blocked && t.exempt === 'trusted');
    const u = evaluateDnsbl({ ip: '192.0.2.1', results, user: 'alice' });
    assert.ok(!u.blocked && u.exempt === 'authenticated');
    const n = evaluateDnsbl({ ip: '192.0.2.1', results, user: null });
    assert.equal(n.blocked, true);
  });

  it('no listing, no block, whatever the threshold', () => {
    assert.equal(evaluateDnsbl({ ip: '192.0.2.1', results: [], threshold: 0.001 }).blocked, false);
    assert.throws(() => evaluateDnsbl({ ip: '192.0.2.1', results: [], threshold: 0 }), RangeError);
  });

  it('a hostile TXT cannot inject lines or control characters into the reply', () => {
    const d = evaluateDnsbl({ ip: '192.0.2.1', results: [listed('relays.test', 1, `bad\r\n250 OK\x00\x1b[31m${'x'.repeat(500)}`)] });
    assert.ok(d.blocked);
    const wire = formatReply(d.reply);
    assert.equal(wire.split('\r\n').length, 2, 'one line');
    assert.ok(!/[\x00-\x1f]/.test(wire.slice(0, -2)));
    assert.ok(d.reason!.length <= 200);
    assert.equal(cleanReason('  \t '), null);
    assert.equal(cleanReason('a\u00e9b'), 'a b');
  });
});
