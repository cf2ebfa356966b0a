/**
 * Open Usenet servers in the ORDB (issue 13, category open-nntp, 127.0.0.5) against real INN 2 instances
 * (src/testing/inn.ts, Debian inn2) on loopback. INN binds 127.0.0.1, an RFC 5782 test point the ORDB never lists,
 * so the tests reach each INN through a loopback TCP forwarder on 127.0.0.119 (one port per INN):
 *   - safe mode (no dnsbl.nntpGroup): the open INN answers POST with 340, the ORDB's tester reports "accepted, not
 *     proved", posts nothing, and the workflow does not list it;
 *   - `relayguard serve` with dnsbl.nntpGroup local.test and the ports of an open and a closed INN: the address is
 *     submitted with `dnsbl submit --check nntp`, the tagged article is posted, read back and cancelled: listed
 *     under open-nntp; dig shows 127.0.0.5 and the TXT; the public lookup page shows the article evidence;
 *   - the open INN's port closes (only the closed one answers: 440 to POST): a retest delists it.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdirSync } from 'node:fs';
import * as net from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createTestHost } from '../../src/cli/ordb-service.ts';
import { NULL_LOGGER } from '../../src/core/log.ts';
import { decide } from '../../src/dnsbl/index.ts';
import { startInn, type InnInstance } from '../../src/testing/inn.ts';
import { startWebServe, type WebServe } from '../../src/testing/web-serve.ts';

const execFileAsync = promisify(execFile);
const SERVER = '127.0.0.119';

let open: InnInstance | null = null;
let closed: InnInstance | null = null;
let openFwd: Forwarder | null = null;
let closedFwd: Forwarder | null = null;

interface Forwarder { readonly port: number; close(): Promise<void> }

/** A loopback TCP forwarder: SERVER:<free port> -> 127.0.0.1:<to>. close() stops listening and drops its connections. */
async function forward(to: number): Promise<Forwarder> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((c) => {
    const u = net.connect(to, '127.0.0.1');
    for (const s of [c, u]) { sockets.add(s); s.on('close', () => sockets.delete(s)); s.on('error', () => { c.destroy(); u.destroy(); }); }
    c.pipe(u).pipe(c);
  });
  await new Promise<void>((res, rej) => { server.once('error', rej); server.listen(0, SERVER, () => res()); });
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () => new Promise<void>((res) => { for (const s of sockets) s.destroy(); server.close(() => res()); }),
  };
}
let web: WebServe | null = null;
let dnsPort = 0;

function spoolCount(inn: InnInstance): number {
  const walk = (d: string): number => readdirSync(d, { withFileTypes: true }).reduce((n, e) => n + (e.isDirectory() ? walk(join(d, e.name)) : /^\d+$/.test(e.name) ? 1 : 0), 0);
  return walk(join(inn.dir, 'spool/articles'));
}

async function dig(name: string, type: 'A' | 'TXT'): Promise<string> {
  const { stdout } = await execFileAsync('dig', ['@127.0.0.1', '-p', String(dnsPort), '+short', '+tries=1', '+time=2', name, type], { timeout: 10_000 });
  return stdout.trim();
}

before(async () => {
  [open, closed] = await Promise.all([startInn('open'), startInn('closed')]);
  [openFwd, closedFwd] = await Promise.all([forward(open.port), forward(closed.port)]);
});

after(async () => {
  await web?.stop();
  await Promise.all([openFwd?.close(), closedFwd?.close()]);
  await Promise.all([open?.stop(), closed?.stop()]);
});

describe('open Usenet servers in the ORDB', { timeout: 240_000 }, () => {
  it('safe mode (no test group): the open INN\'s 340 is "accepted, not proved", nothing is posted, nothing listed', async () => {
    const host = await createTestHost({
      probeDomain: null, sink: { address: '127.0.0.1', port: 0 }, probeWaitMs: 1000, testPorts: [], sourceAddress: null, testBudgetMs: 60_000,
      nntpPorts: [{ port: openFwd!.port, role: 'nntp' }], nntpGroup: null,
    }, NULL_LOGGER);
    try {
      const r = await host.test(SERVER, { prove: false, signal: new AbortController().signal, check: 'nntp' });
      assert.equal(r.check, 'nntp');
      assert.equal(r.verdict, 'INCONCLUSIVE', r.detail);
      assert.equal(r.reason, 'accepted-not-proved');
      assert.equal(r.proved, false);
      assert.equal(r.mode, 'safe');
      assert.equal(r.nntp, undefined);
      const d = decide('pending', r, { now: 0, prove: false, attempts: 1, retestIntervalMs: 1, retryIntervalMs: 1, maxPendingAttempts: 3 });
      assert.equal(d.action, 'park', 'never listed from a 340');
      await new Promise((res) => setTimeout(res, 300));
      assert.equal(spoolCount(open!), 0, 'safe mode posted nothing');
    } finally { await host.close(); }
  });

  it('proof mode through serve: dnsbl submit --check nntp; the article is read back; listed under open-nntp with the evidence', async () => {
    web = await startWebServe({
      token: true,
      config: {
        dnsbl: {
          enabled: true, zone: 'news.test', listen: { address: '127.0.0.1', port: 0 }, ttl: 1, allowPrivateTargets: true, schedulerInterval: 0,
          testBudget: '60s', nntpPorts: [openFwd!.port, closedFwd!.port], nntpGroup: 'local.test',
        },
        web: { public: { address: '127.0.0.1', port: 0 } },
      },
    });
    const dnsLine = web.serve.logs.find((l) => l['msg'] === 'dnsbl listening');
    assert.ok(dnsLine);
    dnsPort = Number(dnsLine['port']);
    const sub = await web.cli(['dnsbl', 'submit', SERVER, '--check', 'nntp']);
    assert.equal(sub.code, 0, sub.err);
    const r = await web.api('/api/ordb/retest', { method: 'POST', body: { ip: SERVER, wait: true } });
    assert.equal(r.status, 200, r.body);
    assert.equal(r.json.outcome.action, 'list', r.body);
    const l = r.json.listing;
    assert.equal(l.category, 'open-nntp');
    assert.equal(l.code, '127.0.0.5');
    assert.equal(l.evidence.check, 'nntp');
    assert.equal(l.evidence.mode, 'prove');
    const n = l.evidence.nntp;
    assert.equal(n.port, openFwd!.port);
    assert.equal(n.group, 'local.test');
    assert.equal(n.path, 'POST');
    assert.match(n.command, /^340 /);
    assert.match(n.posted, /^240 /);
    assert.ok(n.readBack.includes('ARTICLE'), n.readBack.join());
    assert.match(n.messageId, /^<rg-[0-9a-f]{8}-/);
    assert.match(n.injectionInfo ?? '', /127\.0\.0\.1/, 'INN saw the post come from the forwarder');

    assert.equal(await dig('119.0.0.127.news.test', 'A'), '127.0.0.5');
    assert.match(await dig('119.0.0.127.news.test', 'TXT'), /^"Open Usenet \(NNTP\) server, see http:\/\/[^"]*\/dnsbl\/lookup\?ip=127\.0\.0\.119"$/);
    const page = await (await fetch(`${web.publicBase}/dnsbl/lookup?ip=${SERVER}`)).text();
    assert.match(page, /Proof: the server took our test article and served it back/);
    assert.ok(page.includes(`<code>${n.messageId.replace(/</g, '&#60;').replace(/>/g, '&#62;')}</code>`), 'the message-id, escaped');
    assert.match(page, /Posted with<\/th><td>POST to <code>local\.test<\/code>/);
  });

  it('the open INN\'s port closes (only the closed one answers, 440 to POST): a retest delists the server', async () => {
    await openFwd!.close();
    openFwd = null;
    const r = await web!.api('/api/ordb/retest', { method: 'POST', body: { ip: SERVER, wait: true } });
    assert.equal(r.status, 200, r.body);
    assert.equal(r.json.outcome.action, 'delist', r.body);
    assert.equal(r.json.listing.state, 'delisted');
    const deadline = Date.now() + 15_000;
    while ((await dig('119.0.0.127.news.test', 'A')) !== '') {
      assert.ok(Date.now() < deadline, 'the delisting reaches DNS');
      await new Promise((res) => setTimeout(res, 200));
    }
  });
});
