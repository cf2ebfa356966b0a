/**
 * The main admin views in a real browser (playwright-core driving Debian's chromium, src/testing/browser.ts) against
 * a real `relayguard serve` with each module holding a little data: the ORDB (dnsbl on, an excluded network and a
 * pending submission), users and domains (a user added through the API), the tester (one run of the serve's own mx
 * listener from the untrusted 127.0.0.2: CLOSED), the self-audit (one run, blocklist and DNS checks off so nothing
 * leaves loopback) and the decision log (a relay attempt refused by swaks from 127.0.0.2).
 *
 *   - at phone width (375x667): no view scrolls sideways, every table sits in a wrapper that scrolls, the nav fits;
 *   - every form field has a label (an accessible name);
 *   - keyboard only: Tab goes through the nav links and Log out, then every link, field and button of the view in
 *     document order, each with a visible focus indicator; Enter on a nav link opens its view;
 *   - a screenshot of each view (laptop and phone) in $RELAYGUARD_TEST_OUTPUT (default <tmp>/relayguard-screens).
 * Every page must load without a console error, page error, dialog or CSP violation (the harness fails it otherwise).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Page } from 'playwright-core';
import { horizontalOverflow, launchBrowser, login, processesOf, screenshot, tab, type Focused, type PageOptions, type RelayguardBrowser } from '../../src/testing/browser.ts';
import { freePort } from '../../src/testing/ports.ts';
import { startWebServe, type WebServe } from '../../src/testing/web-serve.ts';
import { OUTSIDE, SWAKS, explain, requirePeer, run } from '../interop/peers.ts';

const PHONE = { width: 375, height: 667 };
let browser: RelayguardBrowser;
let web: WebServe;
let runId = '';

/** The views: path and screenshot name. */
const VIEWS: { path: () => string; name: string }[] = [
  { path: () => '/ordb', name: 'ordb' },
  { path: () => '/ordb/entry?network=192.0.2.0/24', name: 'ordb-entry' },
  { path: () => '/users', name: 'users' },
  { path: () => '/tester', name: 'tester' },
  { path: () => `/tester/runs/${runId}`, name: 'tester-run' },
  { path: () => '/self-audit', name: 'self-audit' },
  { path: () => `/decisions?client=${OUTSIDE}&rcpt=victim@elsewhere.example`, name: 'decisions-filtered' },
];

before(async () => {
  requirePeer(SWAKS, 'swaks');
  const [dnsblSink, auditSink, testPort] = [await freePort(), await freePort(), await freePort()];
  // One after the other, each assigned at once: after() stops whatever started, also when a later start fails.
  web = await startWebServe({
    token: true,
    config: {
      trustedNetworks: ['127.0.0.1/32'],
      dnsbl: {
        zone: 'relays.test', listen: { address: '127.0.0.1', port: 0 }, ttl: 1, probeDomain: 'probes.test',
        sink: { address: '127.0.0.1', port: dnsblSink }, testPorts: [testPort], sourceAddress: OUTSIDE, allowPrivateTargets: true, schedulerInterval: 0,
      },
      web: { tester: { allowTargets: ['127.0.0.1/32'], sourceAddress: OUTSIDE } },
      audit: { blocklists: [], mailDomains: false, relay: { sink: { address: '127.0.0.1', port: auditSink }, probeWait: '2s' } },
    },
  });
  browser = await launchBrowser();
  const ok = (r: { status: number; body: string }, what: string): void => assert.ok(r.status >= 200 && r.status < 300, `${what}: ${r.status} ${r.body}`);
  ok(await web.api('/api/ordb/exclude', { method: 'POST', body: { network: '192.0.2.0/24', reason: 'documentation network' } }), 'exclude');
  ok(await web.api('/api/ordb/submissions', { method: 'POST', body: { ip: '127.0.0.77' } }), 'submission');
  ok(await web.api('/api/users', { method: 'POST', body: { name: 'carol@local.test', password: 'a long enough password', addresses: ['@local.test'] } }), 'add user');
  const relay = await run(SWAKS, ['--server', `127.0.0.1:${web.serve.ports.mx}`, '--local-interface', OUTSIDE, '--timeout', '10s',
    '--helo', 'stranger.example', '--from', 'spammer@example.org', '--to', 'victim@elsewhere.example'], { timeoutMs: 20_000 });
  assert.equal(relay.code, 24, explain(relay));
  const started = await web.api('/api/tester/runs', { method: 'POST', body: { host: '127.0.0.1', ports: [`${web.serve.ports.mx}:mx`], tricks: ['V01', 'V02', 'V03'] } });
  assert.equal(started.status, 202, started.body);
  runId = started.json.id;
  const audit = await web.api('/api/self-audit/run', { method: 'POST', body: { wait: true } });
  ok(audit, 'self-audit run');
  for (const deadline = Date.now() + 60_000; ;) {
    const r = await web.api(`/api/tester/runs/${runId}`);
    if (r.json.state !== 'running') { assert.equal(r.json.verdict, 'CLOSED', r.body); break; }
    assert.ok(Date.now() < deadline, 'the tester run finished');
    await new Promise((res) => setTimeout(res, 100));
  }
  for (const deadline = Date.now() + 5000; (await web.api(`/api/decisions?client=${OUTSIDE}`)).json.decisions.length === 0;) {
    assert.ok(Date.now() < deadline, 'the refusal reached the decision log');
    await new Promise((res) => setTimeout(res, 50));
  }
});

after(async () => {
  const dir = browser?.userDataDir;
  await browser?.close();
  await web?.stop();
  if (dir) assert.deepEqual(processesOf(dir), [], 'every chromium process of this file has exited');
});

let session: PageOptions['storageState'] | undefined;
async function loggedIn(t: Parameters<RelayguardBrowser['page']>[0], viewport?: { width: number; height: number }): Promise<Page> {
  const page = await browser.page(t, { baseURL: web.base, ...(viewport ? { viewport } : {}), ...(session ? { storageState: session } : {}) });
  if (session) {
    await page.goto('/');
    assert.equal(new URL(page.url()).pathname, '/', 'the saved session is still valid');
  } else {
    await login(page, web.admin.name, web.admin.password);
    session = await page.context().storageState();
  }
  return page;
}

test('the nav names every main view', async (t) => {
  const page = await loggedIn(t);
  const nav = await page.getByRole('navigation', { name: 'Main' }).getByRole('link').evaluateAll((as) => as.map((a) => (a as any).getAttribute('href')));
  for (const href of ['/', '/ordb', '/users', '/tester', '/self-audit', '/decisions']) assert.ok(nav.includes(href), `nav: ${nav.join(' ')} lacks ${href}`);
});

test('each view holds its data; laptop screenshots', async (t) => {
  const page = await loggedIn(t);
  const expect: Record<string, RegExp> = {
    ordb: /192\.0\.2\.0\/24[\s\S]*127\.0\.0\.77|127\.0\.0\.77[\s\S]*192\.0\.2\.0\/24/,
    'ordb-entry': /documentation network/,
    users: /carol@local\.test/,
    tester: /127\.0\.0\.1[\s\S]*CLOSED/,
    'tester-run': /Verdict: CLOSED/,
    'self-audit': /Run the audit now/,
    'decisions-filtered': /victim@elsewhere\.example/,
  };
  for (const v of VIEWS) {
    const res = await page.goto(v.path());
    assert.equal(res?.status(), 200, v.path());
    assert.match(await page.locator('main').innerText(), expect[v.name]!, v.path());
    await screenshot(page, v.name);
  }
});

test('phone width (375x667): no view scrolls sideways, every table scrolls inside its wrapper, the nav fits', async (t) => {
  const page = await loggedIn(t, PHONE);
  for (const v of VIEWS) {
    const path = v.path();
    await page.goto(path);
    const o = await horizontalOverflow(page);
    assert.ok(o.scrollWidth <= o.clientWidth, `${path}: the page scrolls sideways (${o.scrollWidth} > ${o.clientWidth}): ${o.culprits.join(', ')}`);
    for (const link of await page.getByRole('navigation', { name: 'Main' }).getByRole('link').all()) {
      const box = (await link.boundingBox())!;
      assert.ok(box.x >= 0 && box.x + box.width <= PHONE.width, `${path}: nav link ${await link.innerText()} is off screen`);
    }
    const tables = await page.evaluate(() => {
      const w = globalThis as any;
      return Array.from(w.document.querySelectorAll('main table') as ArrayLike<any>).map((tb: any) => ({
        wrapped: tb.parentElement.classList.contains('table-wrap') && ['auto', 'scroll'].includes(w.getComputedStyle(tb.parentElement).overflowX),
        caption: (tb.caption?.textContent ?? tb.querySelector('th')?.textContent ?? '').slice(0, 40),
      }));
    });
    assert.ok(tables.length > 0, `${path} has a table`);
    for (const tb of tables) assert.equal(tb.wrapped, true, `${path}: the table "${tb.caption}" is outside a scrolling .table-wrap`);
    await screenshot(page, `phone-${v.name}`);
  }
});

test('every form field of the views has a label', async (t) => {
  const page = await loggedIn(t);
  for (const v of VIEWS) {
    await page.goto(v.path());
    const unlabeled = await page.evaluate(() => {
      const d = (globalThis as any).document;
      return Array.from(d.querySelectorAll('input:not([type=hidden]), select, textarea') as ArrayLike<any>)
        .filter((el: any) => el.labels.length === 0 && !el.getAttribute('aria-label') && !el.getAttribute('aria-labelledby'))
        .map((el: any) => el.outerHTML.slice(0, 100));
    });
    assert.deepEqual(unlabeled, [], `${v.path()}: fields without a label`);
  }
});

test('keyboard only: Tab reaches the nav, Log out and every control of each view in order, focus visible; Enter opens a view', async (t) => {
  const page = await loggedIn(t);
  const nav = (await page.getByRole('navigation', { name: 'Main' }).getByRole('link').allInnerTexts()).map((s) => s.trim());
  for (const v of VIEWS) {
    const path = v.path();
    await page.goto(path);
    // What a keyboard user must reach in main, in document order.
    const controls = await page.evaluate(() => {
      const d = (globalThis as any).document;
      const w = globalThis as any;
      return Array.from(d.querySelectorAll('main a[href], main button, main input:not([type=hidden]), main select, main textarea, main summary') as ArrayLike<any>)
        .filter((el: any) => !el.disabled && el.tabIndex >= 0 && w.getComputedStyle(el).visibility !== 'hidden' && el.getClientRects().length > 0)
        .map((el: any) => `${el.tagName.toLowerCase()} ${(el.getAttribute('aria-label') ?? (el.textContent || el.value) ?? '').trim().replace(/\s+/g, ' ').slice(0, 80)}`);
    });
    const stops: Focused[] = [];
    for (let i = 0; i < 400; i++) {
      const f = await tab(page);
      if (f.tag === 'body' || (i > 0 && f.text === stops[0]!.text && f.href === stops[0]!.href)) break;
      stops.push(f);
    }
    assert.deepEqual(stops.slice(0, nav.length + 1).map((f) => f.text), [...nav, 'Log out'], `${path}: the header first`);
    for (const [i, f] of stops.entries()) assert.ok(f.focusVisible && f.indicator, `${path}: tab stop ${i + 1} (${f.tag} "${f.text}") has no visible focus indicator`);
    const reached = stops.slice(nav.length + 1).map((f) => `${f.tag} ${f.text}`);
    assert.deepEqual(reached, controls, `${path}: every control of the view, in document order`);
  }
  // Enter on a nav link opens that view.
  for (const [label, path] of [['ORDB', '/ordb'], ['Users', '/users'], ['Tester', '/tester'], ['Audit', '/self-audit'], ['Decisions', '/decisions']] as const) {
    await page.goto('/');
    let f: Focused;
    do f = await tab(page); while (f.href !== path && f.tag !== 'body');
    assert.equal(f.href, path, `the nav link to ${path} (${label})`);
    await Promise.all([page.waitForURL((u) => u.pathname === path), page.keyboard.press('Enter')]);
  }
});
