/**
 * The open-NNTP check against real INN 2 (Debian inn2, private instances in temp dirs on loopback, src/testing/inn.ts):
 * open (any stranger posts), closed (read only: 201, POST 440), auth (480 until AUTHINFO) and transit (IHAVE 335 from a
 * feeding peer). Safe mode never sends an article (the spool stays empty); proof mode posts one tagged article to
 * local.test, reads it back from INN, and cancels it with its Cancel-Key; `relayguard test --check nntp` end to end
 * (JSON schema relayguard-tester/2, exit codes).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { startInn, type InnInstance } from '../../src/testing/inn.ts';
import { checkNntpPort } from '../../src/tester/nntp/check.ts';
import { createTagger } from '../../src/tester/proof.ts';
import { testerMain } from '../../src/cli/tester-commands.ts';
import { generateSelfSigned } from '../../src/smtp/tls-cert.ts';
import type { RunResult } from '../../src/tester/result.ts';

const opts = (extra: object = {}) => ({
  testerDomain: 'relayguard.test', tagger: createTagger(), budgetMs: 60_000, timeouts: { connect: 5000, greeting: 10_000, command: 10_000 }, ...extra,
});

/** Articles in the instance's spool (tradspool: one file per article under spool/articles/<group path>/<n>). */
function spoolCount(inn: InnInstance): number {
  const walk = (d: string): number => readdirSync(d, { withFileTypes: true }).reduce((n, e) => n + (e.isDirectory() ? walk(join(d, e.name)) : /^\d+$/.test(e.name) ? 1 : 0), 0);
  return walk(join(inn.dir, 'spool/articles'));
}

async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await testerMain(args, { out: (s) => { out += `${s}\n`; }, err: (s) => { err += `${s}\n`; } });
  return { code, out, err };
}

describe('open-NNTP check against INN 2', { timeout: 180_000 }, () => {
  const inns: Partial<Record<'open' | 'closed' | 'auth' | 'transit', InnInstance>> = {};
  before(async () => {
    const cert = await generateSelfSigned('nntp.peers.test');
    const [open, closed, auth, transit] = await Promise.all([startInn('open', { tls: cert }), startInn('closed'), startInn('auth'), startInn('transit')]);
    Object.assign(inns, { open, closed, auth, transit });
  });
  after(async () => {
    await Promise.all(Object.values(inns).map((i) => i?.stop()));
  });

  it('open INN, safe mode: POST 340 to a stranger is INCONCLUSIVE accepted-not-proved, and nothing is posted', async () => {
    const inn = inns.open!;
    const r = await checkNntpPort('127.0.0.1', { port: inn.port, role: 'nntp' }, opts());
    assert.equal(r.verdict, 'INCONCLUSIVE', r.detail);
    assert.equal(r.reason, 'accepted-not-proved');
    assert.equal(r.greeting?.code, 200);
    assert.equal(r.post.reply?.code, 340);
    assert.equal(r.ihave.verdict, 'CLOSED');
    assert.equal(r.kind, 'reader');
    assert.equal(r.groups?.complete, true);
    assert.deepEqual(r.groups?.postable, ['local.test']);
    assert.equal(r.groups?.moderated, 1);
    await new Promise((res) => setTimeout(res, 300));
    assert.equal(spoolCount(inn), 0, 'safe mode posted an article');
  });

  it('open INN, proof mode: the tagged article is posted, read back (ARTICLE, HEAD, GROUP/STAT) → OPEN, then cancelled', async () => {
    const inn = inns.open!;
    const r = await checkNntpPort('127.0.0.1', { port: inn.port, role: 'nntp' }, opts({ prove: { group: 'local.test', waitMs: 10_000 } }));
    assert.equal(r.verdict, 'OPEN', r.detail);
    assert.equal(r.reason, 'article-read-back');
    const p = r.proofs[0]!;
    assert.equal(p.path, 'POST');
    assert.equal(p.posted?.code, 240);
    assert.equal(p.articleReadBack, true);
    assert.equal(p.headReadBack, true);
    assert.equal(p.inGroup, true);
    assert.match(p.pathHeader ?? '', /nntp\.peers\.test/);
    assert.match(p.injectionInfo ?? '', /posting-host="[^"]*127\.0\.0\.1/);
    assert.equal(p.cancel?.posted?.code, 240, JSON.stringify(p.cancel));
    assert.equal(p.cancel?.removed, true, 'INN honoured the Cancel-Key of the tester\'s own article');
  });

  it('open INN over NNTPS (nnrpd -S, implicit TLS): TLS facts reported, proved OPEN', async () => {
    const inn = inns.open!;
    const r = await checkNntpPort('127.0.0.1', { port: inn.tlsPort!, role: 'nntps' }, opts({ prove: { group: 'local.test', waitMs: 10_000 } }));
    assert.equal(r.verdict, 'OPEN', r.detail);
    assert.match(r.tls?.protocol ?? '', /^TLSv1\.[23]$/);
    assert.equal(r.tls?.subject, 'CN=nntp.peers.test');
    assert.equal(r.tls?.authorized, false);
    assert.equal(r.proofs[0]?.cancel?.removed, true);
    // the plain port of the same server, spoken to as NNTPS: a TLS failure, not a verdict about posting
    const wrong = await checkNntpPort('127.0.0.1', { port: inn.port, role: 'nntps' }, opts({ timeouts: { connect: 2000, greeting: 2000, command: 2000 } }));
    assert.equal(wrong.verdict, 'INCONCLUSIVE');
    assert.match(wrong.reason, /tls-failed|timeout/);
  });

  it('open INN, proof mode, a group it does not carry: 441 → INCONCLUSIVE; a moderated group: 240 but never appears → not-read-back', async () => {
    const inn = inns.open!;
    const missing = await checkNntpPort('127.0.0.1', { port: inn.port, role: 'nntp' }, opts({ prove: { group: 'no.such.group', waitMs: 2000 } }));
    assert.equal(missing.verdict, 'INCONCLUSIVE', missing.detail);
    assert.equal(missing.reason, 'accepted-not-proved');
    assert.equal(missing.proofs[0]?.posted?.code, 441);
    const moderated = await checkNntpPort('127.0.0.1', { port: inn.port, role: 'nntp' }, opts({ prove: { group: 'local.moderated', waitMs: 2000 } }));
    assert.equal(moderated.groups?.proofGroupFlag, 'm');
    assert.equal(moderated.verdict, 'INCONCLUSIVE', moderated.detail);
    assert.equal(moderated.reason, 'not-read-back');
    assert.equal(moderated.proofs[0]?.posted?.code, 240);
    assert.equal(moderated.proofs[0]?.articleReadBack, false);
  });

  it('closed INN (read only): greeting 201, POST 440 → CLOSED posting-not-permitted, also in proof mode (nothing sent)', async () => {
    const inn = inns.closed!;
    for (const prove of [undefined, { group: 'local.test', waitMs: 2000 }]) {
      const r = await checkNntpPort('127.0.0.1', { port: inn.port, role: 'nntp' }, opts(prove ? { prove } : {}));
      assert.equal(r.verdict, 'CLOSED', r.detail);
      assert.equal(r.post.reason, 'posting-not-permitted');
      assert.equal(r.post.reply?.code, 440);
      assert.equal(r.greetingPostingAllowed, false);
      assert.deepEqual(r.proofs, []);
    }
    assert.equal(spoolCount(inn), 0);
  });

  it('auth INN: POST 480 → CLOSED auth-required', async () => {
    const inn = inns.auth!;
    const r = await checkNntpPort('127.0.0.1', { port: inn.port, role: 'nntp' }, opts({ prove: { group: 'local.test', waitMs: 2000 } }));
    assert.equal(r.verdict, 'CLOSED', r.detail);
    assert.equal(r.reason, 'auth-required');
    assert.equal(r.post.reply?.code, 480);
    assert.equal(spoolCount(inn), 0);
  });

  it('transit INN (127.0.0.1 a feeding peer): IHAVE 335 in safe mode (no article), proved by read-back in proof mode', async () => {
    const inn = inns.transit!;
    const safe = await checkNntpPort('127.0.0.1', { port: inn.port, role: 'nntp' }, opts());
    assert.equal(safe.ihave.reply?.code, 335, JSON.stringify(safe.ihave));
    assert.equal(safe.ihave.reason, 'accepted-not-proved');
    assert.equal(safe.verdict, 'INCONCLUSIVE');
    assert.match(safe.kind, /transit/);
    assert.equal(spoolCount(inn), 0);
    const proved = await checkNntpPort('127.0.0.1', { port: inn.port, role: 'nntp' }, opts({ prove: { group: 'local.test', waitMs: 10_000, cancel: false } }));
    assert.equal(proved.ihave.reason, 'article-read-back', proved.ihave.detail);
    assert.equal(proved.verdict, 'OPEN');
    assert.equal(proved.post.reason, 'posting-not-permitted');
    assert.equal(spoolCount(inn), 1);
  });

  it('relayguard test --check nntp: JSON (schema relayguard-tester/2), exit 2 / 1 / 0, text report', async () => {
    const safe = await cli(['test', '127.0.0.1', '--check', 'nntp', '--nntp-port', String(inns.open!.port), '--json', '--timeout', '10']);
    assert.equal(safe.code, 2, safe.err);
    const doc = JSON.parse(safe.out) as RunResult;
    assert.equal(doc.schema, 'relayguard-tester/2');
    assert.deepEqual(doc.checks, ['nntp']);
    assert.deepEqual(doc.targets, []);
    assert.equal(doc.nntp?.mode, 'safe');
    assert.equal(doc.nntp?.targets[0]?.ports[0]?.post.reply?.code, 340);
    const proved = await cli(['test', '127.0.0.1', '--check', 'nntp', '--nntp-port', String(inns.open!.port), '--prove', '--nntp-group', 'local.test']);
    assert.equal(proved.code, 1, proved.err);
    assert.match(proved.out, /POST +OPEN +POST without AUTHINFO: the tagged test article was accepted/);
    assert.match(proved.out, /article removed/);
    const closed = await cli(['test', '127.0.0.1', '--check', 'nntp', '--nntp-port', String(inns.closed!.port)]);
    assert.equal(closed.code, 0, closed.out);
    assert.match(closed.out, /POST +CLOSED +POST 440/);
  });
});
