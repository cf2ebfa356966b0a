import { describe, it, after, before } from 'node:test';
import assert from 'node:assert/strict';
import * as net from 'node:net';
import { ProxySink } from './sink.ts';

let sink: ProxySink;
before(async () => { sink = await ProxySink.start({ listen: [{ address: '127.0.0.1', port: 0, kind: 'mail' }, { address: '127.0.0.1', port: 0, kind: 'control' }], idleMs: 2000 }); });
after(async () => { await sink.close(); });

function talk(port: number, lines: string[], localAddress = '127.0.0.1'): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port, localAddress });
    let got = '';
    s.on('data', (d) => { got += d.toString('latin1'); });
    s.on('connect', () => s.write(lines.map((l) => `${l}\r\n`).join('')));
    s.on('close', () => resolve(got));
    s.on('error', reject);
    setTimeout(() => s.end(), 400);
  });
}

describe('proxy sink', () => {
  it('greets with its nonce, records a tag from EHLO with the egress address and listener kind, answers QUIT', async () => {
    const mail = sink.listener(4, 'mail')!;
    const got = await talk(mail.port, ['EHLO rg-0123abcd-1.probe.test', 'QUIT'], '127.0.0.7');
    assert.match(got, new RegExp(`^220 relayguard-sink ESMTP relayguard-sink ${sink.nonce}\r\n250-`));
    assert.match(got, /221 2\.0\.0 Bye/);
    const a = sink.arrivalsFor('rg-0123abcd-1');
    assert.equal(a.length, 1);
    assert.deepEqual([a[0]!.peerAddress, a[0]!.kind, a[0]!.via], ['127.0.0.7', 'mail', 'smtp']);
  });

  it('records tags in HTTP request lines (a forwarded GET or POST) on the control port, and refuses MAIL', async () => {
    const control = sink.listener(4, 'control')!;
    const got = await talk(control.port, ['GET /rg-0123abcd-2 HTTP/1.1', 'Host: x', '', 'MAIL FROM:<a@b>', 'QUIT']);
    assert.match(got, /500 5\.5\.2 relayguard-sink/);
    assert.doesNotMatch(got, /^250 .*MAIL/m);
    const a = sink.arrivalsFor('rg-0123abcd-2')[0]!;
    assert.deepEqual([a.kind, a.via], ['control', 'http']);
  });

  it('caps lines (1 KiB) and lines per connection (64), and waitFor resolves on arrival or after the wait', async () => {
    const mail = sink.listener(4, 'mail')!;
    const long = `NOOP ${'x'.repeat(5000)}`;
    const got = await talk(mail.port, [long, ...Array.from({ length: 80 }, () => 'NOOP')]);
    assert.match(got, /421 4\.7\.0 too many lines/);
    const t0 = Date.now();
    assert.deepEqual(await sink.waitFor('rg-0123abcd-ff', 150), []);
    assert.ok(Date.now() - t0 >= 140);
    const pending = sink.waitFor('rg-0123abcd-3', 5000);
    await talk(mail.port, ['HELO rg-0123abcd-3', 'QUIT']);
    assert.equal((await pending).length, 1);
  });
});
