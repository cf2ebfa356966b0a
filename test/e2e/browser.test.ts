/**
 * The admin dashboard in a real browser: playwright-core drives Debian's chromium (src/testing/browser.ts) against a
 * real `relayguard serve` (web on an ephemeral loopback port, trusted networks 127.0.0.1/32 only), and mail comes
 * from swaks. Every page must load without a console error, page error, dialog or CSP violation (the harness fails
 * the test otherwise).
 *
 *   - log in through the form (a wrong password first: the form again, with the error);
 *   - swaks mails a local user from 127.0.0.1: the message is in the queue view; hold and release it with its
 *     buttons (the queue, the API and the audit log agree); its acceptance is in the decision log;
 *   - swaks tries to relay from 127.0.0.2 (untrusted): 554 5.7.1, and the decision log page shows it refused with
 *     the rule serve logged; the filters, paging, the "why was this refused?" box and a bad search work;
 *   - hostile EHLO, sender and recipient (`<script>` and `"><img src=x onerror=...>` forms) render as text;
 *   - at phone width (375x667) no page scrolls sideways (tables scroll inside their wrapper) and the nav fits;
 *   - keyboard only: Tab reaches the nav links, the log-out button and the action buttons in order, each with a
 *     visible focus indicator, and Enter follows links, submits forms and presses buttons.
 * Screenshots of each view go to $RELAYGUARD_TEST_OUTPUT (default <tmp>/relayguard-screens).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Page } from 'playwright-core';
import { focused, horizontalOverflow, launchBrowser, login, processesOf, screenshot, tab, type Focused, type PageOptions, type RelayguardBrowser } from '../../src/testing/browser.ts';
import { startWebServe, type WebServe } from '../../src/testing/web-serve.ts';
import { OUTSIDE, SWAKS, explain, requirePeer, run, type RunResult } from '../interop/peers.ts';

let browser: RelayguardBrowser;
let web: WebServe;
const PHONE = { width: 375, height: 667 };
const XSS_HELO = '<script>alert("helo")</script>';
const XSS_SENDER = '"\\"><img src=x onerror=alert(document.domain)>"@evil.example';
const XSS_RCPT = '"<script>alert(2)</script>"@elsewhere.example';

before(async () => {
  requirePeer(SWAKS, 'swaks');
  // One after the other, each assigned as soon as it runs: if serve fails to start, after() still stops chromium
  // (with Promise.all a failed start left chromium unassigned and running, and the test process never ended).
  web = await startWebServe({ config: { trustedNetworks: ['127.0.0.1/32'] }, token: true });
  browser = await launchBrowser();
});

after(async () => {
  const dir = browser?.userDataDir;
  await browser?.close();
  await web?.stop();
  if (dir) assert.deepEqual(processesOf(dir), [], 'every chromium process of this file has exited');
});

/** swaks to the serve's mx listener (from `from`: 127.0.0.1 is trusted, OUTSIDE is not). */
function swaks(args: readonly string[], from = '127.0.0.1'): Promise<RunResult> {
  return run(SWAKS, ['--server', `127.0.0.1:${web.serve.ports.mx}`, '--local-interface', from, '--timeout', '10s', ...args], { timeoutMs: 20_000 });
}

/** Mails u@local.test from the trusted address; returns the queue id. */
async function mailLocalUser(subject: string, from = 'sender@example.net'): Promise<string> {
  const r = await swaks(['--helo', 'client.example', '--from', from, '--to', 'u@local.test', '--header', `Subject: ${subject}`]);
  assert.equal(r.code, 0, explain(r));
  const id = /250 2\.0\.0 Ok: queued as (\S+)/.exec(r.stdout)?.[1];
  assert.ok(id, explain(r));
  return id;
}

/** Waits until the decision log has a row for this API query (the recorder writes every ~250 ms). */
async function decisions(query: string, n = 1): Promise<any[]> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const r = await web.api(`/api/decisions?${query}`);
    assert.equal(r.status, 200, r.body);
    if (r.json.decisions.length >= n) return r.json.decisions;
    assert.ok(Date.now() < deadline, `no decision for ${query} within 5 s`);
    await new Promise((res) => setTimeout(res, 50));
  }
}

let session: PageOptions['storageState'] | undefined;
/** A page with a logged-in session: the first logs in through the form, the others start with its cookie. */
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

/** The cells of the row of `table` (the first one in main by default) that contains `text`, as the user reads them. */
async function rowCells(page: Page, text: string, table = 'main table'): Promise<string[]> {
  const row = page.locator(`${table} tbody tr`, { hasText: text });
  await row.first().waitFor();
  assert.equal(await row.count(), 1, `one row with ${text}`);
  return (await row.locator('td').allInnerTexts()).map((s) => s.trim());
}

async function headers(page: Page, table: string): Promise<string[]> {
  return (await page.locator(`${table} thead th`).allInnerTexts()).map((s) => s.replace(/\s+/g, ' ').trim());
}

test('log in through the form: a wrong password shows the form again; the right one opens the overview', async (t) => {
  const page = await browser.page(t, { baseURL: web.base, allowConsole: [/status of 401/] });
  await page.goto('/');
  assert.equal(new URL(page.url()).pathname, '/login', 'anonymous: sent to the login form');
  await screenshot(page, 'login');
  await page.getByLabel('Admin name').fill(web.admin.name);
  await page.getByLabel('Password').fill('not the password');
  await page.getByRole('button', { name: 'Log in' }).click();
  assert.equal(await page.getByRole('alert').innerText(), 'Wrong name or password');
  assert.equal(await page.getByLabel('Password').inputValue(), '', 'the password is not echoed back');
  await login(page, web.admin.name, web.admin.password);
  assert.equal(await page.locator('header').getByText(web.admin.name, { exact: true }).count(), 1);
  const nav = await page.getByRole('navigation', { name: 'Main' }).getByRole('link').allInnerTexts();
  assert.deepEqual(nav.slice(0, 1), ['Overview']);
  assert.ok(nav.includes('Decisions'), nav.join(', '));
  await screenshot(page, 'overview');
  // Log out: the session is gone.
  await page.getByRole('button', { name: 'Log out' }).click();
  await page.waitForURL((u) => u.pathname === '/login');
  await page.goto('/decisions');
  assert.equal(new URL(page.url()).pathname, '/login');
});

test('a message from swaks is in the queue view; hold and release it with the buttons', async (t) => {
  const id = await mailLocalUser('browser hold test');
  const page = await loggedIn(t);
  await page.goto('/');
  const queue = 'main table:has(caption:text-matches("messages"))';
  const cols = await headers(page, queue);
  const state = cols.indexOf('State');
  assert.ok(state >= 0, cols.join(', '));
  let cells = await rowCells(page, id, queue);
  assert.equal(cells[cols.indexOf('Sender')], 'sender@example.net');
  assert.equal(cells[cols.indexOf('Recipients')], 'u@local.test');
  assert.equal(cells[state], 'queued');
  await screenshot(page, 'queue');

  const row = page.locator(`${queue} tbody tr`, { hasText: id });
  await row.getByRole('button', { name: 'hold', exact: true }).click();
  await row.getByRole('button', { name: 'release', exact: true }).waitFor();
  cells = await rowCells(page, id, queue);
  assert.equal(cells[state], 'hold');
  assert.equal((await web.api(`/api/queue/${id}`)).json.state, 'hold', 'the queue agrees');
  await screenshot(page, 'queue-held');

  await row.getByRole('button', { name: 'release', exact: true }).click();
  await row.getByRole('button', { name: 'hold', exact: true }).waitFor();
  assert.equal((await rowCells(page, id, queue))[state], 'queued');
  assert.equal((await web.api(`/api/queue/${id}`)).json.state, 'queued');

  // Both actions are in the audit log on the overview, by the admin who clicked.
  const audit = page.locator('main table', { has: page.locator('th', { hasText: 'Who' }) });
  const actions = await audit.locator('tbody tr', { hasText: id }).allInnerTexts();
  assert.ok(actions.some((r) => /queue\.hold/.test(r) && r.includes(web.admin.name)), actions.join('\n'));
  assert.ok(actions.some((r) => /queue\.release/.test(r)), actions.join('\n'));

  // The acceptance is in the decision log.
  await decisions('rcpt=u@local.test&client=127.0.0.1');
  await page.getByRole('link', { name: 'Decisions' }).click();
  await page.getByLabel('Recipient').first().fill('u@local.test');
  await page.getByRole('button', { name: 'Search' }).click();
  await page.waitForURL(/rcpt=u%40local\.test/);
  const dcols = await headers(page, 'main table');
  const rows = page.locator('main tbody tr', { hasText: 'u@local.test' });
  await rows.first().waitFor();
  const first = (await rows.first().locator('td').allInnerTexts()).map((s) => s.trim());
  assert.equal(first[dcols.indexOf('Client')]!.split('\n')[0], '127.0.0.1');
  assert.equal(first[dcols.indexOf('Verdict')], 'accepted (local)');
});

test('a relay attempt from an untrusted address is refused, and the decision log page shows it with its rule', async (t) => {
  const r = await swaks(['--helo', 'stranger.example', '--from', 'spammer@example.org', '--to', 'victim@elsewhere.example'], OUTSIDE);
  assert.equal(r.code, 24, `swaks: no recipient accepted\n${explain(r)}`);
  assert.match(r.stdout, /<\*\* +554 5\.7\.1 <victim@elsewhere\.example>: Relay access denied/, explain(r));
  const logged = web.serve.logs.find((l) => l['msg'] === 'relay decision' && l['client_ip'] === OUTSIDE && String(l['rcpt']).includes('victim@elsewhere.example'));
  assert.ok(logged, 'serve logged the decision');
  const rule = String(logged['rule']);
  assert.notEqual(rule, 'none');
  await decisions(`client=${OUTSIDE}&rcpt=victim@elsewhere.example`);

  const page = await loggedIn(t);
  await page.getByRole('link', { name: 'Decisions' }).click();
  await page.waitForURL((u) => u.pathname === '/decisions');
  const search = page.getByRole('search');
  await search.getByLabel('Client address').fill(OUTSIDE);
  await search.getByLabel('Verdict').selectOption({ label: 'refused' });
  await search.getByRole('button', { name: 'Search' }).click();
  await page.waitForURL((u) => u.searchParams.get('client') === OUTSIDE && u.searchParams.get('action') === 'reject');
  const cols = await headers(page, 'main table');
  const cells = await rowCells(page, 'victim@elsewhere.example');
  assert.equal(cells[cols.indexOf('Client')], `${OUTSIDE}\non mx`, 'the client address and the listener');
  assert.equal(cells[cols.indexOf('HELO')], 'stranger.example');
  assert.equal(cells[cols.indexOf('Sender')], 'spammer@example.org');
  assert.equal(cells[cols.indexOf('Verdict')], 'refused');
  assert.equal(cells[cols.indexOf('Rule')], rule);
  assert.match(cells[cols.indexOf('Reason and reply')]!, /554 5\.7\.1 <victim@elsewhere\.example>: Relay access denied/);
  // Only refusals from the stranger are listed.
  for (const row of await page.locator('main tbody tr').all()) {
    const c = (await row.locator('td').allInnerTexts()).map((s) => s.trim());
    assert.deepEqual([c[cols.indexOf('Client')]!.split('\n')[0], c[cols.indexOf('Verdict')]], [OUTSIDE, 'refused']);
  }
  assert.equal(await search.getByLabel('Client address').inputValue(), OUTSIDE, 'the form keeps the search');
  await screenshot(page, 'decisions');

  // The rule filter narrows to that rule.
  await page.goto(`/decisions?rule=${encodeURIComponent(rule)}`);
  const byRule = (await page.locator('main tbody tr').all()).length;
  assert.ok(byRule >= 1);
  for (const c of await page.locator(`main tbody td:nth-child(${cols.indexOf('Rule') + 1})`).allInnerTexts()) assert.equal(c.trim(), rule);

  // "why?" on the row answers from the data.
  await page.goto(`/decisions?client=${OUTSIDE}&rcpt=victim@elsewhere.example`);
  await page.locator('main tbody tr', { hasText: 'victim@elsewhere.example' }).getByRole('link', { name: 'why?' }).click();
  await page.waitForURL((u) => u.pathname === '/decisions/why');
  const answer = await page.locator('section.answer p').innerText();
  assert.match(answer, new RegExp(`refused <victim@elsewhere\\.example> from 127\\.0\\.0\\.2 at .* by rule "${rule}"`));
  assert.match(answer, /554 5\.7\.1/);
  assert.equal(answer, (await web.api(`/api/decisions/why?client=${OUTSIDE}&rcpt=victim@elsewhere.example`)).json.answer, 'the page says what the API says');
  await screenshot(page, 'why');

  // The box, filled by hand: by sender alone; then an address the relay never saw.
  const box = page.getByRole('region', { name: 'Why was this refused?' });
  await box.getByLabel('Client address').fill('');
  await box.getByLabel('Recipient').fill('');
  await box.getByLabel('Sender').fill('Spammer@Example.org');
  await box.getByRole('button', { name: 'Explain' }).click();
  await page.waitForURL((u) => u.searchParams.get('sender') === 'Spammer@Example.org' && u.searchParams.get('client') === '');
  assert.match(await page.locator('section.answer p').innerText(), /^The latest decision refused <victim@elsewhere\.example> from 127\.0\.0\.2/);
  await box.getByLabel('Sender').fill('');
  await box.getByLabel('Client address').fill('192.0.2.1');
  await box.getByRole('button', { name: 'Explain' }).click();
  await page.waitForURL((u) => u.searchParams.get('client') === '192.0.2.1');
  assert.match(await page.locator('section.answer p').innerText(), /^No relay decision recorded/);
  assert.equal(await page.locator('main table').count(), 0);
});

test('decision log paging: newest first, "Older decisions" and "Newest" links', async (t) => {
  for (const n of [1, 2]) assert.equal((await swaks(['--from', 'pager@example.org', '--to', `page${n}@elsewhere.example`], OUTSIDE)).code, 24);
  await decisions('sender=pager@example.org', 2);
  const api = (await web.api('/api/decisions?limit=3')).json.decisions.map((d: any) => `${d.clientIp} ${d.rcpt}`);
  const page = await loggedIn(t);
  const seen: string[] = [];
  await page.goto('/decisions?limit=1');
  for (let i = 0; i < Math.min(api.length, 3); i++) {
    const cols = await headers(page, 'main table');
    const row = (await page.locator('main tbody tr').first().locator('td').allInnerTexts()).map((s) => s.trim());
    assert.equal(await page.locator('main tbody tr').count(), 1);
    seen.push(`${row[cols.indexOf('Client')]!.split('\n')[0]} ${row[cols.indexOf('Recipient')]}`);
    if (i > 0) assert.equal(await page.getByRole('link', { name: 'Newest' }).count(), 1);
    const older = page.getByRole('link', { name: 'Older decisions' });
    if (i + 1 < Math.min(api.length, 3)) {
      await older.click();
      await page.waitForURL((u) => u.searchParams.has('before') && u.searchParams.get('limit') === '1');
    }
  }
  assert.deepEqual(seen, api.slice(0, seen.length), 'the same order as the API: newest first');
});

test('a bad search answers 400 with the form and the error, no list', async (t) => {
  const page = await browser.page(t, { baseURL: web.base, allowConsole: [/status of 400/] });
  await login(page, web.admin.name, web.admin.password);
  const res = await page.goto('/decisions?client=not-an-address');
  assert.equal(res?.status(), 400);
  assert.match(await page.getByRole('alert').innerText(), /client: an IP address/);
  assert.equal(await page.locator('main table').count(), 0);
  assert.equal(await page.getByRole('search').getByLabel('Client address').inputValue(), 'not-an-address');
});

test('hostile EHLO, sender and recipient render as text and run nothing', async (t) => {
  const r = await swaks(['--helo', XSS_HELO, '--from', XSS_SENDER, '--to', XSS_RCPT], OUTSIDE);
  assert.equal(r.code, 24, explain(r));
  const local = await swaks(['--helo', XSS_HELO, '--from', XSS_SENDER, '--to', 'u@local.test'], '127.0.0.1');
  assert.equal(local.code, 0, explain(local));
  const id = /queued as (\S+)/.exec(local.stdout)![1]!;
  const [refused] = await decisions(`client=${OUTSIDE}&action=reject&rcpt=${encodeURIComponent(XSS_RCPT)}`);
  assert.equal(refused.helo, XSS_HELO);

  const page = await loggedIn(t);
  await page.goto(`/decisions?client=${OUTSIDE}`);
  const cols = await headers(page, 'main table');
  const cells = await rowCells(page, 'alert(2)');
  assert.equal(cells[cols.indexOf('HELO')], XSS_HELO);
  assert.equal(cells[cols.indexOf('Sender')], refused.mailFrom);
  assert.ok(cells[cols.indexOf('Sender')]!.includes('<img src=x onerror=alert(document.domain)>'), cells.join(' | '));
  assert.equal(cells[cols.indexOf('Recipient')], refused.rcpt);
  await screenshot(page, 'xss-decisions');
  await page.goto(`/decisions/why?client=${OUTSIDE}&rcpt=${encodeURIComponent(XSS_RCPT)}`);
  assert.ok((await page.locator('section.answer p').innerText()).includes('<script>alert(2)</script>'));
  await page.goto('/');
  assert.ok((await rowCells(page, id, 'main table:has(caption:text-matches("messages"))')).some((c) => c.includes('<img src=x onerror=alert(document.domain)>')));
  await screenshot(page, 'xss-overview');
  for (const path of ['/', `/decisions?client=${OUTSIDE}`, `/decisions/why?client=${OUTSIDE}`]) {
    await page.goto(path);
    // Nothing the clients sent became an element: no image, no script, no event handler attribute.
    const made = await page.evaluate(() => {
      const d = (globalThis as any).document;
      return {
        img: d.querySelectorAll('img').length,
        // The pages' own modules (/assets/*.js) are the only scripts; nothing else, nothing inline.
        script: Array.from(d.querySelectorAll('script') as ArrayLike<any>).filter((e: any) => !/^\/assets\/[a-z-]+\.js$/.test(e.getAttribute('src') ?? '')).length,
        handlers: Array.from(d.querySelectorAll('*') as ArrayLike<any>).filter((e: any) => Array.from(e.attributes as ArrayLike<any>).some((a: any) => a.name.startsWith('on'))).length,
      };
    });
    assert.deepEqual(made, { img: 0, script: 0, handlers: 0 }, path);
  }
  // (The harness fails the test on any dialog, console error or CSP violation of this page.)
});

test('phone width (375x667): no page scrolls sideways, tables scroll inside their wrapper, the nav fits', async (t) => {
  const relay = await swaks(['--helo', 'phone.example', '--from', 'phone@example.org', '--to', 'phone@elsewhere.example'], OUTSIDE);
  assert.equal(relay.code, 24, explain(relay));
  await mailLocalUser('phone test');
  await decisions(`client=${OUTSIDE}&rcpt=phone@elsewhere.example`);
  const page = await loggedIn(t, PHONE);
  for (const [path, name] of [['/', 'phone-overview'], ['/decisions', 'phone-decisions'], [`/decisions/why?client=${OUTSIDE}`, 'phone-why']] as const) {
    await page.goto(path);
    const o = await horizontalOverflow(page);
    assert.ok(o.scrollWidth <= o.clientWidth, `${path}: the page scrolls sideways (${o.scrollWidth} > ${o.clientWidth}): ${o.culprits.join(', ')}`);
    for (const link of await page.getByRole('navigation', { name: 'Main' }).getByRole('link').all()) {
      const box = (await link.boundingBox())!;
      assert.ok(box.x >= 0 && box.x + box.width <= PHONE.width, `${path}: nav link ${await link.innerText()} is off screen`);
    }
    // Each table is inside a wrapper that scrolls (when it is wider than the phone).
    const tables = await page.evaluate(() => {
      const w = globalThis as any;
      // uPlot's legends (table.u-legend) sit inside their chart's own box, which is as wide as the page.
      return Array.from(w.document.querySelectorAll('main table:not(.u-legend)') as ArrayLike<any>).map((tb: any) => ({
        wrapped: ['auto', 'scroll'].includes(w.getComputedStyle(tb.parentElement).overflowX),
        wider: tb.parentElement.scrollWidth > tb.parentElement.clientWidth,
      }));
    });
    assert.ok(tables.length > 0, path);
    for (const tb of tables) assert.equal(tb.wrapped, true, `${path}: a table outside a scrolling wrapper`);
    await screenshot(page, name);
  }
});

test('keyboard only: Tab reaches the nav links, Log out and the action buttons in order; focus is visible; Enter activates', async (t) => {
  const id = await mailLocalUser('keyboard test');
  const relay = await swaks(['--helo', 'keyboard.example', '--from', 'keys@example.org', '--to', 'keys@elsewhere.example'], OUTSIDE);
  assert.equal(relay.code, 24, explain(relay));
  await decisions(`client=${OUTSIDE}&rcpt=keys@elsewhere.example`);
  const page = await browser.page(t, { baseURL: web.base });
  // The login form by keyboard: the name field has the focus.
  await page.goto('/login');
  // autofocus is applied after the page loads: wait for it rather than racing it.
  await page.waitForFunction(() => (globalThis as any).document.activeElement?.name === 'name');
  await page.keyboard.type(web.admin.name);
  await page.keyboard.press('Tab');
  await page.keyboard.type(web.admin.password);
  await Promise.all([page.waitForURL((u) => u.pathname === '/'), page.keyboard.press('Enter')]);

  const nav = (await page.getByRole('navigation', { name: 'Main' }).getByRole('link').allInnerTexts()).map((s) => s.trim());
  const visible = (f: Focused, what: string): void => {
    assert.ok(f.focusVisible && f.indicator, `${what} (${f.tag} "${f.text}") has no visible focus indicator`);
  };
  // Tab from the top of the page through the whole page: each nav link in order, then Log out, then (with whatever
  // else the overview holds in between) the action buttons of the queue, row by row; every stop shows its focus.
  const buttons = (await page.locator('main tbody button').allInnerTexts()).map((s) => s.trim());
  assert.ok(buttons.length >= 2);
  const stops: Focused[] = [];
  for (let i = 0; i < 200; i++) {
    const f = await tab(page);
    if (f.tag === 'body' || (i > 0 && f.text === stops[0]!.text && f.href === stops[0]!.href)) break; // wrapped around
    stops.push(f);
  }
  assert.deepEqual(stops.slice(0, nav.length + 1).map((f) => f.text), [...nav, 'Log out']);
  stops.forEach((f, i) => visible(f, `tab stop ${i + 1}`));
  const reached = stops.slice(nav.length + 1).filter((f) => f.tag === 'button').map((f) => f.text);
  assert.deepEqual(reached.slice(0, buttons.length), buttons, 'the action buttons in the order of the rows');

  // Enter presses "hold" on our message's row, then "release".
  const row = page.locator('main tbody tr', { hasText: id }).filter({ has: page.getByRole('button') });
  await row.getByRole('button', { name: 'hold', exact: true }).focus();
  await page.keyboard.press('Enter');
  await row.getByRole('button', { name: 'release', exact: true }).waitFor();
  assert.equal((await web.api(`/api/queue/${id}`)).json.state, 'hold');
  await row.getByRole('button', { name: 'release', exact: true }).focus();
  await page.keyboard.press('Enter');
  await row.getByRole('button', { name: 'hold', exact: true }).waitFor();
  assert.equal((await web.api(`/api/queue/${id}`)).json.state, 'queued');

  // Enter on the "Decisions" nav link opens the decision log; the search form is next in the tab order.
  await page.goto('/');
  let f: Focused;
  do f = await tab(page); while (f.text !== 'Decisions' && f.tag !== 'body');
  assert.equal(f.href, '/decisions');
  await Promise.all([page.waitForURL((u) => u.pathname === '/decisions'), page.keyboard.press('Enter')]);
  for (let i = 0; i < nav.length + 1; i++) await tab(page);
  f = await tab(page);
  assert.deepEqual([f.tag, f.focusVisible, f.indicator], ['input', true, true], 'the client address field follows the header');
  await page.keyboard.type(OUTSIDE);
  await Promise.all([page.waitForURL((u) => u.searchParams.get('client') === OUTSIDE), page.keyboard.press('Enter')]);
  // Tab on to the first "why?" link and follow it with Enter.
  do f = await tab(page); while (f.text !== 'why?' && f.tag !== 'body');
  assert.equal(f.text, 'why?');
  visible(f, 'the why? link');
  await Promise.all([page.waitForURL((u) => u.pathname === '/decisions/why'), page.keyboard.press('Enter')]);
  assert.match(await page.locator('section.answer p').innerText(), /refused/);
  await screenshot(page, 'keyboard-why');
});
