import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ManualClock } from '../core/clock.ts';
import { ListingStore } from './store.ts';
import { zoneFromStore } from './index.ts';

const T0 = Date.UTC(2026, 0, 1);

function fresh(): { store: ListingStore; clock: ManualClock } {
  const clock = new ManualClock(T0);
  return { store: ListingStore.open(':memory:', { clock }), clock };
}

describe('ListingStore', () => {
  it('adds a listing with canonical network, category code, evidence and history', () => {
    const { store } = fresh();
    const l = store.add({
      network: '2001:DB8:0:0::/32', category: 'open-relay', reason: 'Relayed to <x@remote.test>',
      evidence: { report: { verdict: 'OPEN', tests: 3 }, transcript: '220 hi\r\n' }, lastTested: T0, nextRetest: T0 + 86_400_000,
    });
    assert.equal(l.network, '2001:db8::/32');
    assert.equal(l.family, 6);
    assert.equal(l.state, 'listed');
    assert.equal(l.code, '127.0.0.2');
    assert.equal(l.firstSeen, T0);
    assert.equal(l.timesListed, 1);
    assert.deepEqual(l.evidence, { report: { verdict: 'OPEN', tests: 3 }, transcript: '220 hi\r\n' });
    assert.deepEqual(store.get('2001:db8::/32'), l);
    assert.deepEqual(store.history('2001:db8::/32').map((h) => [h.event, h.state]), [['listed', 'listed']]);
    const proxy = store.add({ network: '192.0.2.9', category: 'open-proxy' });
    assert.equal(proxy.code, '127.0.0.3');
    assert.equal(store.add({ network: '192.0.2.10', category: 'honeypot' }).code, '127.0.0.4');
  });

  it('refuses bad input with stable codes', () => {
    const { store } = fresh();
    assert.throws(() => store.add({ network: '192.0.2.1/24' }), { code: 'ERR_DNSBL_NETWORK' });
    assert.throws(() => store.add({ network: 'example.org' }), { code: 'ERR_DNSBL_NETWORK' });
    assert.throws(() => store.add({ network: '192.0.2.1', category: 'spam' as never }), { code: 'ERR_DNSBL_CATEGORY' });
    assert.throws(() => store.add({ network: '192.0.2.1', reason: 'a\r\nb' }), { code: 'ERR_DNSBL_REASON' });
    assert.throws(() => store.update('192.0.2.77', { reason: 'x' }), { code: 'ERR_DNSBL_NOT_FOUND' });
    assert.equal(store.count(), 0); // failed transactions left nothing behind
  });

  it('shows a repeat offender: listed, delisted, listed again', () => {
    const { store, clock } = fresh();
    store.add({ network: '198.51.100.7', state: 'pending', detail: 'submitted by abuse@example.org' });
    clock.advance(1000);
    store.update('198.51.100.7', { state: 'listed', lastTested: clock.now(), evidence: { verdict: 'OPEN' } });
    clock.advance(1000);
    store.update('198.51.100.7', { lastTested: clock.now() });
    clock.advance(1000);
    store.delist('198.51.100.7', { detail: 'retest: closed' });
    clock.advance(1000);
    const again = store.add({ network: '198.51.100.7', evidence: { verdict: 'OPEN', run: 2 } });
    assert.equal(again.timesListed, 2);
    assert.equal(again.firstSeen, T0);
    assert.deepEqual(again.evidence, { verdict: 'OPEN', run: 2 });
    assert.deepEqual(store.history('198.51.100.7').map((h) => h.event), ['submitted', 'listed', 'tested', 'delisted', 'listed']);
    assert.equal(store.history('198.51.100.7')[3]?.detail, 'retest: closed');
  });

  it('an exclusion wins over listings inside it, whatever the prefix lengths', () => {
    const { store } = fresh();
    store.add({ network: '203.0.113.0/24' });
    store.add({ network: '203.0.113.5' });
    store.exclude('203.0.113.0/28', { reason: 'our customers' });
    assert.equal(store.lookup('203.0.113.5').listed, false);
    assert.equal(store.lookup('203.0.113.5').effective?.network, '203.0.113.0/28');
    assert.deepEqual(store.lookup('203.0.113.5').matches.map((m) => m.network), ['203.0.113.5', '203.0.113.0/28', '203.0.113.0/24']);
    assert.equal(store.lookup('203.0.113.99').listed, true);
    assert.equal(store.lookup('203.0.113.99').effective?.network, '203.0.113.0/24');
    // Adding an excluded network keeps the exclusion and records the attempt.
    const kept = store.add({ network: '203.0.113.0/28', evidence: { verdict: 'OPEN' } });
    assert.equal(kept.state, 'excluded');
    assert.deepEqual(store.history('203.0.113.0/28').map((h) => h.event), ['excluded', 'suppressed']);
    assert.throws(() => store.update('203.0.113.0/28', { state: 'listed' }), { code: 'ERR_DNSBL_EXCLUDED' });
    // The zone agrees with the store.
    const zone = zoneFromStore(store, { apex: 'relays.test' });
    assert.equal(zone.lookupAddress('203.0.113.5').kind, 'nxdomain');
    assert.equal(zone.lookupAddress('203.0.113.99').kind, 'listed');
  });

  it('lists by state, category and due retests; pending and delisted are not in the zone', () => {
    const { store, clock } = fresh();
    store.add({ network: '192.0.2.1', nextRetest: T0 + 10 });
    store.add({ network: '192.0.2.2', nextRetest: T0 + 5, category: 'open-proxy' });
    store.add({ network: '192.0.2.3', state: 'pending' });
    store.add({ network: '192.0.2.4' });
    store.delist('192.0.2.4');
    clock.advance(100);
    assert.deepEqual(store.list({ dueBefore: clock.now() }).map((l) => l.network), ['192.0.2.2', '192.0.2.1']);
    assert.deepEqual(store.list({ state: 'listed', category: 'open-proxy' }).map((l) => l.network), ['192.0.2.2']);
    assert.deepEqual(store.list({ state: ['pending', 'delisted'] }).map((l) => l.network), ['192.0.2.3', '192.0.2.4']);
    assert.equal(store.count('listed'), 2);
    const zone = zoneFromStore(store, { apex: 'relays.test', evidenceUrl: 'https://ordb.test/e/$' });
    const r = zone.lookupAddress('192.0.2.2');
    assert.equal(r.kind === 'listed' && `${r.code} ${r.txt}`, '127.0.0.3 Open proxy, see https://ordb.test/e/192.0.2.2');
    assert.equal(zone.lookupAddress('192.0.2.3').kind, 'nxdomain');
    assert.equal(zone.lookupAddress('192.0.2.4').kind, 'nxdomain');
  });

  it('escapes "$" in reasons so the TXT shows it literally', () => {
    const { store } = fresh();
    store.add({ network: '192.0.2.8', reason: 'Sold for $5' });
    const r = zoneFromStore(store, { apex: 'relays.test', evidenceUrl: null }).lookupAddress('192.0.2.8');
    assert.equal(r.kind === 'listed' && r.txt, 'Sold for $5');
  });

  it('bumps the serial on every change, following the clock, never backwards', () => {
    const { store, clock } = fresh();
    assert.equal(store.serial(), 0);
    store.add({ network: '192.0.2.1' });
    const s1 = store.serial();
    assert.equal(s1, T0 / 1000);
    store.add({ network: '192.0.2.2' });
    assert.equal(store.serial(), s1 + 1);
    clock.set(T0 - 1_000_000);
    store.delist('192.0.2.2');
    assert.equal(store.serial(), s1 + 2);
    assert.equal(zoneFromStore(store, { apex: 'relays.test' }).serial, s1 + 2);
  });

  it('persists in a file and shares a database with other tables', () => {
    const dir = mkdtempSync(join(tmpdir(), 'dnsbl-store-'));
    try {
      const path = join(dir, 'db.sqlite');
      const a = ListingStore.open(path);
      a.addMany([{ network: '192.0.2.1' }, { network: '192.0.2.0/24', state: 'pending' }]);
      a.close();
      const b = ListingStore.open(path);
      assert.equal(b.count(), 2);
      assert.equal(b.get('192.0.2.1')?.state, 'listed');
      b.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
