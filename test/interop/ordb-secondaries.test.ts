/**
 * The ORDB as the primary of real secondaries (issue 14): BIND 9, NSD and Knot from Debian, each started with its
 * own configuration on loopback. Each loads the zone by AXFR, and after a one-address change (NOTIFY from the
 * primary) asks for IXFR and gets the change from the journal, not the whole zone; each then serves the new answer.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { MemoryLogger } from '../../src/core/log.ts';
import { DnsblServer, ListingStore, tsigKey, ZoneJournal, zoneFromStore } from '../../src/dnsbl/index.ts';
import { freePort } from '../../src/testing/ports.ts';
import { startSecondary, type Secondary, type SecondaryKind } from '../../src/testing/dns-secondary.ts';

const ZONE = 'relays.test';
const run = promisify(execFile);
const cleanups: (() => Promise<void> | void)[] = [];
after(async () => { for (const c of cleanups.reverse()) await c(); });

async function waitFor<T>(what: string, fn: () => Promise<T | null | undefined | false>, ms = 20_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const SECRET = Buffer.alloc(32, 0x5a).toString('base64');
const KEY = { name: 'ordb-xfr', algorithm: 'hmac-sha256' as const, secret: SECRET };

async function primaryWith(secondaryPort: number, entries: number, signed = false): Promise<{ store: ListingStore; server: DnsblServer; journal: ZoneJournal; logger: MemoryLogger; change(network: string, action?: 'add' | 'delist'): Promise<void> }> {
  const store = ListingStore.open(':memory:');
  const inputs = [];
  for (let i = 0; i < entries; i++) inputs.push({ network: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, reason: 'open relay' });
  store.addMany(inputs);
  const opts = { apex: ZONE, ttl: 300, evidenceUrl: 'http://ordb.test/lookup?ip=$', ns: ['ns.relays.test'], hosts: [{ name: 'ns', addresses: ['127.0.0.1'] }] };
  const journal = new ZoneJournal(store);
  const logger = new MemoryLogger();
  const server = new DnsblServer({
    zone: zoneFromStore(store, opts), port: 0, axfrAllow: ['127.0.0.1'], journal, logger,
    notify: [{ address: '127.0.0.1', port: secondaryPort, ...(signed ? { key: KEY.name } : {}) }], notifyTimeoutMs: 500,
    ...(signed ? { tsigKeys: [tsigKey(KEY.name, KEY.algorithm, KEY.secret)] } : {}),
  });
  await server.start();
  cleanups.push(async () => { await server.stop(); store.close(); });
  return {
    store, server, journal, logger,
    async change(network: string, action: 'add' | 'delist' = 'add') {
      if (action === 'add') store.add({ network, reason: 'open relay' });
      else store.delist(network);
      const next = zoneFromStore(store, opts);
      journal.record(server.zone, next);
      server.setZone(next);
    },
  };
}

const transfers = (l: MemoryLogger): string[] => l.records.filter((r) => r.msg === 'dnsbl transfer').map((r) => String(r.fields['kind']));

for (const [kind, signed] of [['bind', false], ['nsd', false], ['knot', false], ['bind', true], ['nsd', true], ['knot', true]] as [SecondaryKind, boolean][]) {
  describe(`${kind} as a secondary of the ORDB${signed ? ', with TSIG (hmac-sha256) on transfers and NOTIFY' : ''}`, () => {
    it('AXFR first, then IXFR of a one-address change after NOTIFY; serves the new answer', async () => {
      const port = await freePort();
      const p = await primaryWith(port, 2000, signed);
      const sec: Secondary = await startSecondary({ kind, zone: ZONE, primary: { address: '127.0.0.1', port: p.server.port }, port, ...(signed ? { tsig: KEY } : {}) });
      cleanups.push(() => sec.stop());
      await waitFor(`${kind} to load serial ${p.server.zone.serial}`, async () => (await sec.serial()) === p.server.zone.serial);
      assert.deepEqual(await sec.dig('5.0.0.10.relays.test', 'A'), ['127.0.0.2']);
      const started = Date.now();
      await p.change('192.0.2.77');
      await waitFor(`${kind} to serve the new listing`, async () => (await sec.dig('77.2.0.192.relays.test', 'A'))[0] === '127.0.0.2');
      const convergeMs = Date.now() - started;
      assert.equal(await sec.serial(), p.server.zone.serial);
      const kinds = transfers(p.logger);
      assert.equal(kinds.at(-1), 'ixfr', `${kind}'s last transfer was ${kinds.at(-1)} (all: ${kinds.join(', ')})\n${sec.log().slice(-2000)}`);
      const txt = await sec.dig('77.2.0.192.relays.test', 'TXT');
      assert.match(txt[0] ?? '', /192\.0\.2\.77/);
      // A delisting: the IXFR deletes the records.
      await p.change('10.0.0.5', 'delist');
      await waitFor(`${kind} to drop the delisted address`, async () => (await sec.dig('5.0.0.10.relays.test', 'A')).length === 0);
      assert.equal(transfers(p.logger).at(-1), 'ixfr');
      assert.deepEqual(await sec.dig('6.0.0.10.relays.test', 'A'), ['127.0.0.2'], 'the neighbours stay');
      if (kind === 'bind') {
        // The zone BIND holds after two IXFRs passes named-checkzone (BIND writes secondaries in raw format).
        const { stdout } = await run('named-checkzone', ['-f', 'raw', '-i', 'local', ZONE, join(sec.dir, `${ZONE}.db`)], { timeout: 20_000 });
        assert.match(stdout, /OK/);
      }
      if (signed) {
        const signedTransfers = p.logger.records.filter((r) => r.msg === 'dnsbl transfer' && r.fields['tsig_key'] === KEY.name).length;
        assert.equal(signedTransfers, transfers(p.logger).length, 'every transfer was signed');
      }
      process.stdout.write(`# ${kind}${signed ? ' (TSIG)' : ''}: converged ${convergeMs} ms after the change; transfers ${transfers(p.logger).join(', ')}\n`);
    });
  });
}

describe('dig ixfr=SERIAL against the primary', () => {
  it('shows exactly the journal\'s changes: old SOA, deletions, new SOA, additions', async () => {
    const p = await primaryWith(await freePort(), 50);
    const s0 = p.server.zone.serial;
    await p.change('192.0.2.8');
    await p.change('10.0.0.7', 'delist');
    const { stdout } = await run('dig', ['@127.0.0.1', '-p', String(p.server.port), '+nocookie', '+onesoa', ZONE, `IXFR=${s0}`], { timeout: 10_000 });
    const lines = stdout.split('\n').filter((l) => l !== '' && !l.startsWith(';')).map((l) => l.split(/\s+/));
    const shape = lines.map((f) => (f[3] === 'SOA' ? `SOA ${f[6]}` : `${f[3]} ${f[0]}`));
    const chain = p.journal.since(s0, p.server.zone.serial)!;
    assert.equal(chain.length, 2);
    const expected = [`SOA ${p.server.zone.serial}`];
    for (const d of chain) {
      expected.push(`SOA ${d.from.serial}`, ...d.removed.map((r) => `${r.type} ${r.name}.${ZONE}.`), `SOA ${d.to.serial}`, ...d.added.map((r) => `${r.type} ${r.name}.${ZONE}.`));
    }
    expected.push(`SOA ${p.server.zone.serial}`);
    assert.deepEqual(shape, expected);
    assert.ok(shape.includes(`A 8.2.0.192.${ZONE}.`) && shape.includes(`A 7.0.0.10.${ZONE}.`));
  });
});

describe('dig -y: TSIG on the ORDB primary (field report D3)', () => {
  it('a signed AXFR and a signed query verify in dig; unsigned transfers are REFUSED; a wrong secret gets NOTAUTH', async () => {
    const p = await primaryWith(await freePort(), 20, true);
    const digArgs = (...a: string[]): string[] => ['@127.0.0.1', '-p', String(p.server.port), '+nocookie', '+time=2', '+tries=1', ...a];
    const good = `hmac-sha256:${KEY.name}:${SECRET}`;
    const axfr = await run('dig', digArgs('-y', good, ZONE, 'AXFR'), { timeout: 10_000 });
    assert.match(axfr.stdout, /XFR size: \d+ records/);
    assert.doesNotMatch(axfr.stdout + axfr.stderr, /tsig verify failure|Transfer failed|BADSIG/i);
    assert.match(axfr.stdout, /ordb-xfr\.\s+0\s+ANY\s+TSIG\s+hmac-sha256\./, 'dig shows the TSIG of the answer');
    const soa = await run('dig', digArgs('-y', good, ZONE, 'SOA'), { timeout: 10_000 });
    assert.match(soa.stdout, /status: NOERROR/);
    assert.match(soa.stdout, /TSIG\s+hmac-sha256\./);
    const unsigned = await run('dig', digArgs(ZONE, 'AXFR'), { timeout: 10_000 });
    assert.match(unsigned.stdout, /Transfer failed|REFUSED/);
    const wrong = await run('dig', digArgs('-y', `hmac-sha256:${KEY.name}:${Buffer.alloc(32, 1).toString('base64')}`, ZONE, 'SOA'), { timeout: 10_000 }).catch((e: { stdout: string; stderr: string }) => e);
    assert.match(`${wrong.stdout}${wrong.stderr}`, /NOTAUTH|BADSIG/);
  });
});
