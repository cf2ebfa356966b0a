/**
 * The open-NNTP check against scripted fakes (src/testing/fake-nntp.ts): open, closed and auth-required servers,
 * proof by read-back (and a server that lies about it), and the hostile cases of issue 13: endless LIST output, a
 * greeting that never ends, binary garbage, a 340 then silence, slow drips and tarpits. Each ends with a verdict
 * and a reason inside its budget.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { startFakeNntp, type FakeNntpOptions, type FakeNntp } from '../../testing/fake-nntp.ts';
import { freePort } from '../../testing/ports.ts';
import { createTagger } from '../proof.ts';
import { checkNntpPort, serverKind, type NntpCheckOptions } from './check.ts';
import { articleMarker } from './article.ts';

const CAPS = '101 Capability list:\r\nVERSION 2\r\nREADER\r\nPOST\r\nIHAVE\r\nLIST ACTIVE\r\n.\r\n';
const ACTIVE = '215 list follows\r\nlocal.test 0000000002 0000000001 y\r\nlocal.mod 0000000000 0000000001 m\r\ncontrol 0000000000 0000000001 n\r\nalias.x 0 1 =local.test\r\n.\r\n';

function base(overrides: Partial<NntpCheckOptions> = {}): NntpCheckOptions {
  return {
    testerDomain: 'relayguard.test', tagger: createTagger('0badc0de'), budgetMs: 10_000,
    timeouts: { connect: 3000, greeting: 2500, command: 2500 }, ...overrides,
  };
}

async function withFake(options: FakeNntpOptions, fn: (fake: FakeNntp) => Promise<void>): Promise<void> {
  const fake = await startFakeNntp(options);
  try { await fn(fake); } finally { await fake.close(); }
}

const OPEN_SERVER: FakeNntpOptions = {
  commands: {
    CAPABILITIES: CAPS,
    IHAVE: { reply: '335 send it\r\n', then: 'article' },
    MODE: '200 reader ready (posting ok)\r\n',
    LIST: ACTIVE,
    POST: { reply: '340 send article\r\n', then: 'article' },
  },
};

test('safe mode: an open server is INCONCLUSIVE accepted-not-proved, and no article is ever sent', async () => {
  await withFake(OPEN_SERVER, async (fake) => {
    const r = await checkNntpPort('127.0.0.1', { port: fake.port, role: 'nntp' }, base());
    assert.equal(r.verdict, 'INCONCLUSIVE');
    assert.equal(r.reason, 'accepted-not-proved');
    assert.equal(r.post.reply?.code, 340);
    assert.equal(r.ihave.reply?.code, 335);
    assert.equal(r.ihave.reason, 'accepted-not-proved');
    assert.equal(r.kind, 'reader+transit');
    assert.equal(r.greetingPostingAllowed, true);
    assert.deepEqual(r.proofs, []);
    assert.equal(r.groups?.listed, 4);
    assert.equal(r.groups?.posting, 1);
    assert.equal(r.groups?.moderated, 1);
    assert.equal(r.groups?.noPosting, 1);
    assert.equal(r.groups?.other, 1);
    assert.deepEqual(r.groups?.postable, ['local.test']);
    // IHAVE 335 → connection closed (no article), a new one for the reader side
    assert.equal(r.connections, 2);
    await new Promise((res) => setTimeout(res, 50));
    assert.equal(fake.articles.length, 0, 'safe mode sent an article');
    assert.ok(fake.commands.includes('POST'));
    assert.ok(fake.commands.some((c) => /^IHAVE <rg-0badc0de-\d+\.ihave@relayguard\.test>$/.test(c)));
  });
});

test('closed: 201 greeting, POST 440, IHAVE 435 → CLOSED posting-not-permitted', async () => {
  await withFake({
    greeting: '201 fake.test no posting\r\n',
    commands: { CAPABILITIES: CAPS, IHAVE: '435 not wanted\r\n', MODE: '201 no posting\r\n', LIST: ACTIVE, POST: '440 posting not permitted\r\n' },
  }, async (fake) => {
    const r = await checkNntpPort('127.0.0.1', { port: fake.port, role: 'nntp' }, base());
    assert.equal(r.verdict, 'CLOSED');
    assert.equal(r.reason, 'posting-not-permitted');
    assert.equal(r.greetingPostingAllowed, false);
    assert.equal(r.ihave.verdict, 'CLOSED');
    assert.equal(r.connections, 1);
  });
});

test('auth required: POST 480 and IHAVE 480 → CLOSED auth-required; AUTHINFO offered is reported', async () => {
  await withFake({
    commands: {
      CAPABILITIES: '101 caps\r\nVERSION 2\r\nREADER\r\nAUTHINFO USER\r\n.\r\n', IHAVE: '480 authentication required\r\n',
      MODE: '200 ready\r\n', LIST: '480 authentication required\r\n', POST: '480 authentication required\r\n',
    },
  }, async (fake) => {
    const r = await checkNntpPort('127.0.0.1', { port: fake.port, role: 'nntp' }, base());
    assert.equal(r.verdict, 'CLOSED');
    assert.equal(r.reason, 'auth-required');
    assert.equal(r.authinfoOffered, true);
    assert.equal(r.groups?.reply?.code, 480);
  });
});

test('greeting 502 → CLOSED refused; 400 → INCONCLUSIVE banner-refused; nothing listening → CLOSED no-service', async () => {
  await withFake({ greeting: { reply: '502 access denied\r\n', then: 'close' } }, async (fake) => {
    const r = await checkNntpPort('127.0.0.1', { port: fake.port, role: 'nntp' }, base());
    assert.equal(r.verdict, 'CLOSED');
    assert.equal(r.reason, 'refused');
    assert.equal(r.greeting?.code, 502);
  });
  await withFake({ greeting: { reply: '400 too busy\r\n', then: 'close' } }, async (fake) => {
    const r = await checkNntpPort('127.0.0.1', { port: fake.port, role: 'nntp' }, base());
    assert.equal(r.verdict, 'INCONCLUSIVE');
    assert.equal(r.reason, 'banner-refused');
  });
  const port = await freePort();
  const r = await checkNntpPort('127.0.0.1', { port, role: 'nntp' }, base());
  assert.equal(r.verdict, 'CLOSED');
  assert.equal(r.reason, 'no-service');
});

/** An honest open server: keeps posted articles and serves them back by message-id; honours cancels. */
function honestServer(): FakeNntpOptions {
  const store = new Map<string, string>();
  const idOf = (a: string): string => /^Message-ID: (<[^>]+>)/im.exec(a)?.[1] ?? '';
  const keep = (a: string): string => {
    const cancel = /^Control: cancel (<[^>]+>)/im.exec(a)?.[1];
    if (cancel) store.delete(cancel); else store.set(idOf(a), a);
    return `240 article received ${idOf(a)}\r\n`;
  };
  return {
    commands: {
      CAPABILITIES: CAPS, IHAVE: '435 not wanted\r\n', MODE: '200 ready\r\n', LIST: ACTIVE,
      POST: { reply: '340 send\r\n', then: 'article', article: keep },
      ARTICLE: (id) => (store.has(id) ? `220 0 ${id}\r\n${store.get(id)!.replace(/\r\n$/, '')}\r\n.\r\n` : '430 no such article\r\n'),
      HEAD: (id) => (store.has(id) ? `221 0 ${id}\r\n${store.get(id)!.split('\r\n\r\n')[0]}\r\n.\r\n` : '430 no such article\r\n'),
      GROUP: () => `211 ${store.size} 1 ${store.size} local.test\r\n`,
      STAT: (arg) => {
        if (arg.startsWith('<')) return store.has(arg) ? `223 0 ${arg}\r\n` : '430 no such article\r\n';
        const id = [...store.keys()][Number(arg) - 1];
        return id ? `223 ${arg} ${id}\r\n` : '423 no such number\r\n';
      },
      LAST: '422 no previous article\r\n',
    },
  };
}

test('proof mode: the tagged article is read back (ARTICLE, HEAD, GROUP/STAT) → OPEN article-read-back, then cancelled', async () => {
  await withFake(honestServer(), async (fake) => {
    const r = await checkNntpPort('127.0.0.1', { port: fake.port, role: 'nntp' }, base({ prove: { group: 'local.test', waitMs: 2000 } }));
    assert.equal(r.verdict, 'OPEN', r.detail);
    assert.equal(r.reason, 'article-read-back');
    assert.equal(r.proofs.length, 1);
    const p = r.proofs[0]!;
    assert.equal(p.path, 'POST');
    assert.equal(p.posted?.code, 240);
    assert.equal(p.articleReadBack, true);
    assert.equal(p.headReadBack, true);
    assert.equal(p.inGroup, true);
    assert.equal(p.articleNumber, 1);
    assert.equal(p.cancel?.posted?.code, 240);
    assert.equal(p.cancel?.removed, true);
    assert.equal(fake.articles.length, 2);
    assert.ok(fake.articles[0]!.includes(articleMarker(p.tag)));
    assert.match(fake.articles[0]!, /^Newsgroups: local\.test$/m);
    assert.match(fake.articles[0]!, /^Cancel-Lock: sha256:/m);
    assert.match(fake.articles[1]!, /^Control: cancel <rg-0badc0de-\d+@relayguard\.test>$/m);
    assert.match(fake.articles[1]!, /^Cancel-Key: sha256:/m);
  });
});

test('proof mode: 240 but the article never appears → INCONCLUSIVE not-read-back (a lie), within the wait', async () => {
  await withFake({
    commands: { CAPABILITIES: CAPS, IHAVE: '480 no\r\n', MODE: '200 ready\r\n', LIST: ACTIVE, POST: { reply: '340 send\r\n', then: 'article' }, ARTICLE: '430 no such article\r\n' },
  }, async (fake) => {
    const t0 = performance.now();
    const r = await checkNntpPort('127.0.0.1', { port: fake.port, role: 'nntp' }, base({ prove: { group: 'local.test', waitMs: 1200 } }));
    assert.equal(r.verdict, 'INCONCLUSIVE');
    assert.equal(r.reason, 'not-read-back');
    assert.equal(r.proofs[0]?.articleReadBack, false);
    assert.equal(r.proofs[0]?.cancel, null);
    assert.ok(performance.now() - t0 < 6000);
    assert.ok(fake.commands.filter((c) => c.startsWith('ARTICLE ')).length >= 2, 'polled the article');
  });
});

test('proof mode: IHAVE 335 from a stranger, article 235, read back on a reader session → OPEN', async () => {
  const opts = honestServer();
  const keepPost = (opts.commands!['POST'] as { article: (a: string) => string }).article;
  await withFake({ ...opts, commands: { ...opts.commands, IHAVE: { reply: '335 send it\r\n', then: 'article', article: (a) => { keepPost(a); return '235 ok\r\n'; } }, POST: '440 no posting\r\n' } }, async (fake) => {
    const r = await checkNntpPort('127.0.0.1', { port: fake.port, role: 'nntp' }, base({ prove: { group: 'local.test', waitMs: 1000, cancel: false } }));
    assert.equal(r.verdict, 'OPEN', r.detail);
    assert.equal(r.ihave.reason, 'article-read-back');
    assert.equal(r.post.reason, 'posting-not-permitted');
    assert.equal(r.proofs[0]?.path, 'IHAVE');
    assert.match(fake.articles[0]!, /^Path: relayguard-tester!not-for-mail$/m);
  });
});

test('hostile: endless LIST ACTIVE stops at the cap; POST is asked on a fresh connection', async () => {
  await withFake({
    commands: {
      CAPABILITIES: CAPS, IHAVE: '480 no\r\n', MODE: '200 ready\r\n', POST: '440 no\r\n',
      LIST: { reply: '215 here\r\n', endless: (n) => `group.${n} 0000000000 0000000001 y\r\n` },
    },
  }, async (fake) => {
    const t0 = performance.now();
    const r = await checkNntpPort('127.0.0.1', { port: fake.port, role: 'nntp' }, base({ maxGroups: 5000 }));
    assert.equal(r.groups?.complete, false);
    assert.equal(r.groups?.listed, 5000);
    assert.equal(r.groups?.postable.length, 20);
    assert.equal(r.verdict, 'CLOSED');
    assert.equal(r.post.reason, 'posting-not-permitted');
    assert.equal(r.connections, 2);
    assert.ok(performance.now() - t0 < 8000);
  });
});

test('hostile: a LIST that drips forever ends at the command deadline, still a verdict', async () => {
  await withFake({
    commands: { CAPABILITIES: CAPS, IHAVE: '480 no\r\n', MODE: '200 ready\r\n', POST: '480 auth\r\n', LIST: { reply: `215 here\r\n${'a 1 1 y\r\n'.repeat(10)}.\r\n`, dripMs: 100 } },
  }, async (fake) => {
    const t0 = performance.now();
    const r = await checkNntpPort('127.0.0.1', { port: fake.port, role: 'nntp' }, base());
    assert.equal(r.groups?.complete, false);
    assert.equal(r.reason, 'auth-required');
    assert.ok(performance.now() - t0 < 8000);
  });
});

test('hostile: a greeting that never ends → INCONCLUSIVE malformed-reply at the line cap, bounded memory', async () => {
  await withFake({ greeting: { reply: '200 ', endless: () => 'x'.repeat(4096) } }, async (fake) => {
    const heap0 = process.memoryUsage().heapUsed;
    const t0 = performance.now();
    const r = await checkNntpPort('127.0.0.1', { port: fake.port, role: 'nntp' }, base());
    assert.equal(r.verdict, 'INCONCLUSIVE');
    assert.equal(r.reason, 'malformed-reply');
    assert.match(r.detail, /longer than 8192 bytes/);
    assert.ok(performance.now() - t0 < 3000);
    assert.ok(process.memoryUsage().heapUsed - heap0 < 32 * 1024 * 1024);
  });
});

test('hostile: binary garbage as the greeting → INCONCLUSIVE malformed-reply', async () => {
  const garbage = Buffer.from([0x00, 0xff, 0x13, 0x37, 0x0a, 0x80, 0x81, 0x0d, 0x0a, 0x16, 0x03, 0x01]);
  await withFake({ greeting: { reply: garbage, then: 'hang' } }, async (fake) => {
    const r = await checkNntpPort('127.0.0.1', { port: fake.port, role: 'nntp' }, base());
    assert.equal(r.verdict, 'INCONCLUSIVE');
    assert.equal(r.reason, 'malformed-reply');
  });
  await withFake({ commands: { CAPABILITIES: CAPS, IHAVE: '480 no\r\n', MODE: '200 ok\r\n', LIST: ACTIVE, POST: { reply: Buffer.from('\x00\x01garbage\r\n', 'latin1') } } }, async (fake) => {
    const r = await checkNntpPort('127.0.0.1', { port: fake.port, role: 'nntp' }, base());
    assert.equal(r.post.reason, 'malformed-reply');
    assert.equal(r.verdict, 'INCONCLUSIVE');
  });
});

test('hostile: 340 then silence in proof mode → INCONCLUSIVE timeout at the command deadline', async () => {
  await withFake({ commands: { CAPABILITIES: CAPS, IHAVE: '480 no\r\n', MODE: '200 ok\r\n', LIST: ACTIVE, POST: { reply: '340 go ahead\r\n', then: 'silent' } } }, async (fake) => {
    const t0 = performance.now();
    const r = await checkNntpPort('127.0.0.1', { port: fake.port, role: 'nntp' }, base({ prove: { group: 'local.test', waitMs: 1000 } }));
    assert.equal(r.verdict, 'INCONCLUSIVE');
    assert.equal(r.reason, 'timeout');
    assert.equal(r.proofs[0]?.posted, null);
    assert.ok(performance.now() - t0 < 8000);
  });
});

test('hostile: slow-drip greeting and a tarpit end at the deadline; a hang ends within the budget', async () => {
  await withFake({ greeting: { reply: `200 ${'a'.repeat(300)}\r\n`, dripMs: 30 } }, async (fake) => {
    const t0 = performance.now();
    const r = await checkNntpPort('127.0.0.1', { port: fake.port, role: 'nntp' }, base());
    assert.equal(r.reason, 'timeout');
    assert.ok(performance.now() - t0 < 5000);
  });
  await withFake({ greeting: { delayMs: 8000, reply: '200 late\r\n' } }, async (fake) => {
    const r = await checkNntpPort('127.0.0.1', { port: fake.port, role: 'nntp' }, base());
    assert.equal(r.reason, 'timeout');
  });
  await withFake({ commands: { CAPABILITIES: { then: 'hang' } } }, async (fake) => {
    const t0 = performance.now();
    const r = await checkNntpPort('127.0.0.1', { port: fake.port, role: 'nntp' }, base({ budgetMs: 600, timeouts: { connect: 2000, greeting: 5000, command: 5000 } }));
    assert.equal(r.verdict, 'INCONCLUSIVE');
    assert.ok(['timeout', 'budget-exhausted'].includes(r.reason), r.reason);
    assert.ok(performance.now() - t0 < 3000, `took ${performance.now() - t0} ms`);
  });
});

test('serverKind: from capabilities, else from the replies', () => {
  assert.equal(serverKind(['VERSION 2', 'READER'], null, null, null), 'reader');
  assert.equal(serverKind(['VERSION 2', 'IHAVE', 'MODE-READER'], ['VERSION 2', 'READER', 'POST'], null, null), 'reader+transit');
  assert.equal(serverKind(['VERSION 2', 'IHAVE'], null, null, null), 'transit');
  assert.equal(serverKind([], null, { code: 201, text: '' }, { code: 502, text: '' }), 'reader');
  assert.equal(serverKind([], null, null, null), 'unknown');
});
