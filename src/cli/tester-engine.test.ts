/**
 * The web tester's engine: the run tests exactly the addresses prepare() resolved (the SSRF guard checked those):
 * a resolver that answers differently the second time (DNS rebinding) changes nothing; options reach the tester
 * (ports, tricks, transcript, progress per trick); bad ports and tricks name their field.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { startFakeMta, type FakeMta } from '../testing/fake-mta.ts';
import type { TargetResolver } from '../tester/index.ts';
import type { TesterRequest } from '../web/index.ts';
import { createTesterEngine } from './tester-engine.ts';

const fakes: FakeMta[] = [];
after(async () => { await Promise.all(fakes.map((f) => f.close())); });

const request = (over: Partial<TesterRequest>): TesterRequest => ({
  host: '127.0.0.1', mode: 'safe', mx: false, tlsOnly: false, starttls: false, paceMs: 0, timeoutSeconds: 2, errorsPerSession: 8, transcript: true, ...over,
});

test('rebinding: the run replays the answers prepare() got; a second lookup is never made', async () => {
  const good = await startFakeMta({ commands: { RCPT: (c) => (/^TO:<postmaster(@[^>]*)?>/i.test(c.arg) ? '250 2.1.5 Ok\r\n' : '554 5.7.1 Relay access denied\r\n') } });
  fakes.push(good);
  let lookups = 0;
  const resolver: TargetResolver = {
    resolveMx: async () => { throw Object.assign(new Error('no MX'), { code: 'ENODATA' }); },
    // First answer: 127.0.0.1 (what the guard sees); any later answer: 127.0.0.9 (where nothing listens).
    lookup: async () => { lookups++; return [{ address: lookups === 1 ? '127.0.0.1' : '127.0.0.9', family: 4 }]; },
  };
  const engine = createTesterEngine({ defaultPorts: [String(good.port)], sourceAddress: null, budgetMs: 30_000, proof: null, resolver });
  const prepared = await engine.prepare(request({ host: 'flip.example', tricks: ['V02'] }));
  assert.deepEqual(prepared.addresses, ['127.0.0.1']);
  const progress: string[] = [];
  const report = await prepared.run({ signal: new AbortController().signal, onTrick: (p) => progress.push(`${p.address} ${p.trick.id} ${p.trick.verdict} ${p.lines.length > 0}`), onTarget: () => {} });
  assert.equal(lookups, 1, 'no second lookup');
  assert.deepEqual(report.targets.map((t) => t.address), ['127.0.0.1']);
  assert.equal(report.targets[0]!.hostName, 'flip.example');
  assert.equal(good.sessions.length > 0, true, 'the checked address was tested');
  assert.deepEqual(progress, ['127.0.0.1 V02 CLOSED true'], 'one progress call per trick, with its dialogue');
  assert.equal(report.targets[0]!.ports[0]!.transports[0]!.transcripts!.length > 0, true, 'transcripts kept');
});

test('bad ports and tricks are ERR_TESTER_BAD_INPUT naming the field; an unresolvable name is ERR_TESTER_RESOLVE', async () => {
  const resolver: TargetResolver = {
    resolveMx: async () => { throw Object.assign(new Error('no MX'), { code: 'ENODATA' }); },
    lookup: async (n) => { throw Object.assign(new Error(`ENOTFOUND ${n}`), { code: 'ENOTFOUND' }); },
  };
  const engine = createTesterEngine({ defaultPorts: [25], sourceAddress: null, budgetMs: 30_000, proof: null, resolver });
  await assert.rejects(engine.prepare(request({ ports: ['0'] })), (e: Error & { code?: string; field?: string }) => e.code === 'ERR_TESTER_BAD_INPUT' && e.field === 'ports');
  await assert.rejects(engine.prepare(request({ tricks: ['ZZ99'] })), (e: Error & { code?: string; field?: string }) => e.code === 'ERR_TESTER_BAD_INPUT' && e.field === 'tricks');
  await assert.rejects(engine.prepare(request({ host: 'nowhere.example' })), (e: Error & { code?: string }) => e.code === 'ERR_TESTER_RESOLVE');
  assert.equal(engine.proofAvailable, false);
});
