/**
 * The NNTP client's framing: dot-stuffing both ways, strict status lines, commands that cannot carry CR/LF/NUL,
 * and the bounded reader (a long multi-line block read line by line with the socket paused, not buffered whole).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { startFakeNntp } from '../../testing/fake-nntp.ts';
import { NntpConnection, NntpError } from './client.ts';

const soon = (ms = 2000): number => performance.now() + ms;

test('dot-stuffing: an article line starting with "." leaves as "..", a block line ".." comes back as "."', async () => {
  const fake = await startFakeNntp({
    commands: {
      POST: { reply: '340 go\r\n', then: 'article' },
      BODY: '222 0 <x@y>\r\n..hidden\r\nplain\r\n...\r\n.\r\n',
    },
  });
  try {
    const c = await NntpConnection.open({ host: '127.0.0.1', port: fake.port, connectTimeoutMs: 2000 });
    assert.equal((await c.readStatus(soon(), 'greeting')).code, 200);
    assert.equal((await c.command('POST', soon())).code, 340);
    c.sendArticle(['Subject: x', '', '.leading dot', '.', 'end']);
    assert.equal((await c.readStatus(soon(), 'article')).code, 240);
    assert.equal(fake.articles[0], 'Subject: x\r\n\r\n..leading dot\r\n..\r\nend\r\n');
    assert.equal((await c.command('BODY 1', soon())).code, 222);
    const lines: string[] = [];
    const r = await c.readBlock({ deadline: soon(), maxLines: 100, maxBytes: 10_000 }, (l) => { lines.push(l); });
    assert.deepEqual(lines, ['.hidden', 'plain', '..']);
    assert.equal(r.complete, true);
    assert.throws(() => c.send('LIST\r\nPOST'), TypeError);
    assert.throws(() => c.sendArticle(['a\rb']), TypeError);
    await c.quit(soon());
    assert.equal(c.closed, true);
  } finally {
    await fake.close();
  }
});

test('status lines are strict: "2000 x", "20", text without a code and a NUL are ERR_NNTP_PROTOCOL', async () => {
  for (const bad of ['2000 x\r\n', '20\r\n', 'hello\r\n', '200 a\x00b\r\n', '600 x\r\n']) {
    const fake = await startFakeNntp({ greeting: { reply: bad, then: 'hang' } });
    try {
      const c = await NntpConnection.open({ host: '127.0.0.1', port: fake.port, connectTimeoutMs: 2000 });
      await assert.rejects(c.readStatus(soon(), 'the greeting'), (e: unknown) => e instanceof NntpError && e.code === 'ERR_NNTP_PROTOCOL', JSON.stringify(bad));
      c.destroy();
    } finally {
      await fake.close();
    }
  }
});

test('a 200 000-line block is read line by line under the caps; a stop leaves the connection closed', async () => {
  const fake = await startFakeNntp({ commands: { LIST: { reply: '215 x\r\n', endless: (n) => `g.${n} 1 1 y\r\n` } } });
  try {
    const c = await NntpConnection.open({ host: '127.0.0.1', port: fake.port, connectTimeoutMs: 2000 });
    await c.readStatus(soon(10_000), 'greeting');
    assert.equal((await c.command('LIST', soon(10_000))).code, 215);
    let seen = 0;
    const r = await c.readBlock({ deadline: soon(30_000), maxLines: 200_000, maxBytes: 64 * 1024 * 1024 }, () => { seen++; });
    assert.equal(r.complete, false);
    assert.equal(seen, 200_000);
    assert.equal(c.closed, true);
    await assert.rejects(c.command('QUIT', soon()), NntpError);
  } finally {
    await fake.close();
  }
});
