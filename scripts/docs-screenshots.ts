/**
 * Regenerates the dashboard screenshots of the README (docs/screenshots/*.png) from a real `relayguard serve` with a
 * little traffic and data, driven by Debian's chromium through the browser test harness (src/testing/browser.ts):
 * swaks mails (a local delivery, a relay attempt from an untrusted address, an unknown local user); a toy open relay
 * on 127.0.0.5 (test/e2e/tester-helpers.ts) proved open and listed by the ORDB, and a network excluded; a web tester
 * run of serve's own mx listener from 127.0.0.2; one self-audit (blocklist and DNS checks off: nothing leaves
 * loopback); a mail user added. Viewport-sized, so the files stay small. Needs swaks and chromium (scripts/peers.sh)
 * and the loopback addresses 127.0.0.2 and 127.0.0.5.
 *
 *   ./node_modules/.bin/node scripts/docs-screenshots.ts [output dir, default docs/screenshots]
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { resolve } from 'node:path';
import { launchBrowser, login, screenshot } from '../src/testing/browser.ts';
import { freePort } from '../src/testing/ports.ts';
import { startWebServe } from '../src/testing/web-serve.ts';
import { startToyRelay } from '../test/e2e/tester-helpers.ts';

const OUTSIDE = '127.0.0.2';
const RELAY = '127.0.0.5';
const dir = resolve(process.argv[2] ?? resolve(import.meta.dirname, '..', 'docs', 'screenshots'));
const [sinkPort, relayPort, auditSink, publicPort] = [await freePort(), await freePort(), await freePort(), await freePort()];
const relay = await startToyRelay({ address: RELAY, port: relayPort, accept: () => true, nextHop: { host: '127.0.0.1', port: sinkPort } });
const web = await startWebServe({
  token: true,
  config: {
    trustedNetworks: ['127.0.0.1/32'], node: 'mx1',
    dnsbl: {
      zone: 'relays.test', listen: { address: '127.0.0.1', port: 0 }, ttl: 1, probeDomain: 'probes.test', sink: { address: '127.0.0.1', port: sinkPort },
      probeWait: '3s', testPorts: [relayPort], sourceAddress: OUTSIDE, allowPrivateTargets: true, schedulerInterval: 0,
    },
    web: { public: { address: '127.0.0.1', port: publicPort }, tester: { allowTargets: ['127.0.0.1/32'], sourceAddress: OUTSIDE } },
    audit: { blocklists: [], mailDomains: false, relay: { sink: { address: '127.0.0.1', port: auditSink }, probeWait: '2s' } },
  },
}).catch(async (err: unknown) => { await relay.close(); throw err; });
const browser = await launchBrowser();
try {
  const swaks = (from: string, args: string[]): void => {
    try {
      execFileSync('swaks', ['--server', `127.0.0.1:${web.serve.ports.mx}`, '--local-interface', from, '--timeout', '10s', ...args], { stdio: 'ignore', timeout: 20_000 });
    } catch { /* refusals exit non-zero: that is the point */ }
  };
  const api = async (path: string, body: unknown): Promise<any> => {
    const r = await web.api(path, { method: 'POST', body });
    assert.ok(r.status >= 200 && r.status < 300, `${path}: ${r.status} ${r.body}`);
    return r.json;
  };
  await api('/api/users', { name: 'carol@local.test', password: 'a long enough password', addresses: ['@local.test'] });
  await api('/api/ordb/exclude', { network: '192.0.2.0/24', reason: 'documentation network' });
  await api('/api/ordb/submissions', { ip: RELAY });
  const listed = await api('/api/ordb/retest', { ip: RELAY, wait: true });
  assert.equal(listed.listing.state, 'listed', JSON.stringify(listed.outcome));
  const run = await api('/api/tester/runs', { host: '127.0.0.1', ports: [`${web.serve.ports.mx}:mx`] });
  await api('/api/self-audit/run', { wait: true });
  for (let i = 0; (await web.api(`/api/tester/runs/${run.id}`)).json.state === 'running'; i++) {
    assert.ok(i < 300, 'the tester run finished');
    await new Promise((r) => setTimeout(r, 100));
  }
  // The mail last: the decision log's newest rows (and the overview's latest refusals) are these, not the probes.
  swaks('127.0.0.1', ['--helo', 'app1.example.net', '--from', 'billing@example.net', '--to', 'u@local.test', '--header', 'Subject: invoice']);
  swaks('127.0.0.1', ['--helo', 'app2.example.net', '--from', 'alerts@example.net', '--to', 'user@local.test']);
  swaks('127.0.0.2', ['--helo', 'dynamic-198-51-100-7.example', '--from', 'promo@example.org', '--to', 'victim@elsewhere.example']);
  swaks('127.0.0.2', ['--helo', 'dynamic-198-51-100-7.example', '--from', 'promo@example.org', '--to', 'nobody@local.test']);
  await new Promise((r) => setTimeout(r, 600)); // the decision recorder writes every ~250 ms
  const page = await browser.page(null, { baseURL: web.base, viewport: { width: 1100, height: 640 } });
  await login(page, web.admin.name, web.admin.password);
  const held = page.locator('main tbody tr', { hasText: 'alerts@example.net' }).getByRole('button', { name: 'hold', exact: true });
  await held.click();
  await page.locator('main tbody tr', { hasText: 'alerts@example.net' }).getByRole('button', { name: 'release', exact: true }).waitFor();
  const out: string[] = [];
  out.push(await screenshot(page, 'overview', { dir, fullPage: false }));
  await page.goto('/decisions');
  out.push(await screenshot(page, 'decisions', { dir, fullPage: false }));
  await page.goto('/decisions/why?client=127.0.0.2&rcpt=victim@elsewhere.example');
  out.push(await screenshot(page, 'why', { dir, fullPage: false }));
  for (const [path, name] of [['/ordb', 'ordb'], [`/tester/runs/${run.id}`, 'tester-run'], ['/users', 'users'], ['/self-audit', 'self-audit']] as const) {
    await page.goto(path);
    out.push(await screenshot(page, name, { dir, fullPage: false }));
  }
  const lookup = await browser.page(null, { baseURL: web.publicBase!, viewport: { width: 1100, height: 640 } });
  await lookup.goto(`/dnsbl/lookup?ip=${RELAY}`);
  out.push(await screenshot(lookup, 'ordb-lookup', { dir, fullPage: false }));
  const phone = await browser.page(null, { baseURL: web.base, viewport: { width: 375, height: 667 } });
  await login(phone, web.admin.name, web.admin.password);
  await phone.goto('/decisions?action=reject');
  out.push(await screenshot(phone, 'phone-decisions', { dir, fullPage: false }));
  const phoneLookup = await browser.page(null, { baseURL: web.publicBase!, viewport: { width: 375, height: 667 } });
  await phoneLookup.goto(`/dnsbl/lookup?ip=${RELAY}`);
  out.push(await screenshot(phoneLookup, 'phone-ordb-lookup', { dir, fullPage: false }));
  process.stdout.write(`${out.join('\n')}\n`);
} finally {
  await browser.close();
  await web.stop();
  await relay.close();
}
