import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { deliverLocalMaildir, deliverToMaildir, maildirPath } from './local-transport.ts';

const dirs: string[] = [];
after(async () => { for (const d of dirs) await rm(d, { recursive: true, force: true }); });

async function root(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'rg-maildir-'));
  dirs.push(d);
  return d;
}

const BODY = 'Subject: hi\r\n\r\nline 1\r\n.dot\r\nsplit CR';

function msg(body: string | Buffer = BODY, chunks = 7) {
  const b = Buffer.isBuffer(body) ? body : Buffer.from(body, 'utf8');
  return {
    queueId: 'Q1', sender: 'a@src.test',
    openBody: () => {
      const parts: Buffer[] = [];
      for (let i = 0; i < b.length; i += chunks) parts.push(b.subarray(i, i + chunks));
      return Readable.from(parts);
    },
  };
}

describe('maildir', () => {
  it('paths cannot escape the root', () => {
    assert.equal(maildirPath('/m', 'User.Name@Local.Test'), '/m/local.test/User.Name');
    assert.equal(maildirPath('/m', '"../../etc"@local.test'), '/m/local.test/%22..%2F..%2Fetc%22');
    assert.equal(maildirPath('/m', '.hidden@local.test'), '/m/local.test/%2Ehidden');
    assert.equal(maildirPath('/m', 'a/b@local.test'), '/m/local.test/a%2Fb');
  });

  it('writes tmp → new with LF line ends, Return-Path and Delivered-To on top; tmp/ left empty', async () => {
    const r = await root();
    const file = await deliverToMaildir({ root: r }, msg(Buffer.from('Subject: hi\r\n\r\nline 1\r\n.dot\r\nlast\r\n')), 'u@local.test');
    assert.ok(file.startsWith(join(r, 'local.test', 'u', 'new')));
    assert.equal(await readFile(file, 'utf8'), 'Return-Path: <a@src.test>\nDelivered-To: u@local.test\nSubject: hi\n\nline 1\n.dot\nlast\n');
    assert.deepEqual(await readdir(join(r, 'local.test', 'u', 'tmp')), []);
    assert.deepEqual(await readdir(join(r, 'local.test', 'u', 'cur')), []);
  });

  it('CRLF split across chunks still becomes LF; crlf mode keeps the wire form', async () => {
    const r = await root();
    const body = 'A: b\r\n\r\nx\r\ny\r\n';
    for (let n = 1; n < 6; n++) {
      const f = await deliverToMaildir({ root: r }, msg(body, n), `u${n}@local.test`);
      assert.equal(await readFile(f, 'utf8'), `Return-Path: <a@src.test>\nDelivered-To: u${n}@local.test\nA: b\n\nx\ny\n`);
    }
    const f = await deliverToMaildir({ root: r, lineEndings: 'crlf' }, msg(body, 3), 'c@local.test');
    assert.equal(await readFile(f, 'utf8'), `Return-Path: <a@src.test>\r\nDelivered-To: c@local.test\r\n${body}`);
  });

  it('a body that fails: no file in new/, the temp file removed, every recipient deferred', async () => {
    const r = await root();
    const bad = { queueId: 'Q', sender: '', openBody: () => new Readable({ read() { this.push(Buffer.from('Subject: x\r\n')); this.destroy(new Error('short')); } }) };
    const res = await deliverLocalMaildir({ root: r }, bad, [{ address: 'a@local.test', params: {}, attempts: 0 }, { address: 'b@local.test', params: {}, attempts: 0 }]);
    assert.equal(res.bodyFailed, true);
    assert.deepEqual(res.outcomes.map((o) => o.outcome), ['deferred', 'deferred']);
    assert.deepEqual(await readdir(join(r, 'local.test', 'a', 'new')), []);
    assert.deepEqual(await readdir(join(r, 'local.test', 'a', 'tmp')), []);
  });

  it('one copy per recipient, each delivered', async () => {
    const r = await root();
    const res = await deliverLocalMaildir({ root: r }, msg(), [{ address: 'a@local.test', params: {}, attempts: 0 }, { address: 'b@local.test', params: {}, attempts: 0 }]);
    assert.deepEqual(res.outcomes.map((o) => o.outcome), ['delivered', 'delivered']);
    assert.equal((await readdir(join(r, 'local.test', 'b', 'new'))).length, 1);
  });
});
