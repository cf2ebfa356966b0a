/**
 * The tester page in a real browser (playwright-core driving Debian's chromium, src/testing/browser.ts) against a
 * real `relayguard serve` (web.tester.allowTargets 127.0.0.2/32, the tester speaking from 127.0.0.3, proof mode with
 * its sink on 127.0.0.1) and real Postfix instances on 127.0.0.2 (src/testing/postfix.ts, as in
 * test/interop/web-tester-postfix.test.ts):
 *   - a Postfix that relays for 127.0.0.3 into the web tester's sink, tested in proof mode from the form: the
 *     verdicts arrive one by one on the run's page (Server-Sent Events; the rows appear spread over the run, not in
 *     one update), the final verdict is OPEN and equals the report the API gives; the full report has every trick;
 *   - a default Postfix (defer_unauth_destination), tested in safe mode: CLOSED, the same as the API's report, and a
 *     trick's dialogue (opened by keyboard) shows Postfix's 454 refusal;
 *   - the form refuses a private target the configuration does not allow (SSRF guard), with the error on the form.
 * Needs root and the Debian postfix package (scripts/peers.sh); fails with a clear message without them. Nothing
 * leaves loopback; every Postfix and chromium process is stopped in after().
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Page } from 'playwright-core';
import { launchBrowser, login, processesOf, screenshot, watchArrivals, type PageOptions, type RelayguardBrowser } from '../../src/testing/browser.ts';
import { freePort } from '../../src/testing/ports.ts';
import { hasBinary, postfixProcesses, startPostfix, type PostfixInstance } from '../../src/testing/postfix.ts';
import { startWebServe, type WebServe } from '../../src/testing/web-serve.ts';

const TARGET = '127.0.0.2';
const TESTER = '127.0.0.3';
let browser: RelayguardBrowser;
let web: WebServe;
let openPostfix: PostfixInstance;
let closedPostfix: PostfixInstance;

before(async () => {
  assert.ok(process.getuid?.() === 0 && hasBinary('/usr/sbin/postfix'), 'the Postfix peers need root and the Debian postfix package (scripts/peers.sh installs it)');
  const sinkPort = await freePort();
  // Each is assigned as soon as it runs, so after() stops whatever started also when another start fails; chromium
  // starts last (launching it alongside serve slows serve's start on a loaded machine).
  const started = await Promise.allSettled([
    startWebServe({
      token: true,
      config: { web: { tester: { allowTargets: [`${TARGET}/32`], sourceAddress: TESTER, proof: { probeDomain: 'probes.test', sink: { address: '127.0.0.1', port: sinkPort }, wait: '8s' } } } },
    }),
    startPostfix({
      mode: 'relay-to', relayHost: `127.0.0.1:${sinkPort}`, listenAddresses: [TARGET],
      extraMain: { mynetworks: `${TESTER}/32`, smtpd_relay_restrictions: 'permit_mynetworks, reject_unauth_destination', default_transport: `smtp:[127.0.0.1]:${sinkPort}` },
    }),
    startPostfix({
      mode: 'discard', listenAddresses: [TARGET],
      extraMain: { mynetworks: '127.0.0.1/32', smtpd_relay_restrictions: 'permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination' },
    }),
  ]);
  const [w, open, closed] = started;
  if (w.status === 'fulfilled') web = w.value;
  if (open.status === 'fulfilled') openPostfix = open.value;
  if (closed.status === 'fulfilled') closedPostfix = closed.value;
  for (const r of started) if (r.status === 'rejected') throw r.reason;
  browser = await launchBrowser();
});

after(async () => {
  const dir = browser?.userDataDir;
  await Promise.all([browser?.close(), web?.stop(), openPostfix?.stop(), closedPostfix?.stop()]);
  if (dir) assert.deepEqual(processesOf(dir), [], 'every chromium process of this file has exited');
  for (const p of [openPostfix, closedPostfix]) if (p) assert.deepEqual(postfixProcesses(p.configDir), [], 'every Postfix process has exited');
});

let session: PageOptions['storageState'] | undefined;
async function loggedIn(t: Parameters<RelayguardBrowser['page']>[0], options: PageOptions = {}): Promise<Page> {
  const page = await browser.page(t, { baseURL: web.base, timeoutMs: 15_000, ...options, ...(session ? { storageState: session } : {}) });
  if (session) {
    await page.goto('/tester');
    assert.equal(new URL(page.url()).pathname, '/tester', 'the saved session is still valid');
  } else {
    await login(page, web.admin.name, web.admin.password);
    session = await page.context().storageState();
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Tester' }).click();
    await page.waitForURL((u) => u.pathname === '/tester');
  }
  return page;
}

/** Fills the tester form and presses Test; returns the run's id (from the page it redirects to). */
async function startFromForm(page: Page, fields: { host: string; ports: string; mode: 'safe' | 'prove' }): Promise<string> {
  await page.getByLabel('Host, IP address or mail domain').fill(fields.host);
  await page.getByLabel('Ports').fill(fields.ports);
  await page.getByLabel('Mode').selectOption(fields.mode);
  await page.getByLabel('a name is a mail domain').uncheck();
  await Promise.all([
    page.waitForURL((u) => /^\/tester\/runs\/[0-9a-f]{16}$/.test(u.pathname)),
    page.getByRole('button', { name: 'Test', exact: true }).click(),
  ]);
  return new URL(page.url()).pathname.split('/').at(-1)!;
}

/** The tricks of a report, as "ID VERDICT", in report order. */
function reportTricks(report: any): string[] {
  return report.targets.flatMap((t: any) => t.ports.flatMap((p: any) => p.transports.flatMap((tr: any) => tr.tricks.map((k: any) => `${k.id} ${k.verdict}`))));
}

async function pageTricks(page: Page, table: string): Promise<string[]> {
  return page.locator(`${table} tr.trick`).evaluateAll((rows) => rows.map((r: any) => `${r.dataset.trick} ${r.dataset.verdict}`));
}

test('a Postfix open for the tester, tested from the form in proof mode: the verdicts arrive one by one, OPEN as in the API report', { timeout: 90_000 }, async (t) => {
  const page = await loggedIn(t);
  await page.getByLabel('Mode').selectOption('prove');
  const id = await startFromForm(page, { host: TARGET, ports: `${openPostfix.port}:mx`, mode: 'prove' });
  const arrivals = await watchArrivals(page, '#tester-tricks tr.trick');
  await page.locator('#tester-live').waitFor();
  await screenshot(page, 'tester-live');
  await page.locator('#tester-live[data-state="done"]').waitFor({ timeout: 60_000 });
  const times = await arrivals();
  const report = (await web.api(`/api/tester/runs/${id}/report`)).json;
  assert.equal(report.verdict, 'OPEN', `${report.reason}: ${report.detail}`);
  assert.equal(report.reason, 'proved');
  const expected = reportTricks(report);
  assert.ok(expected.length >= 5, expected.join(', '));

  // The live view: one row per trick; the rows came in over the run, not in one update.
  const live = await pageTricks(page, '#tester-tricks');
  assert.equal(live.length, expected.length, `one live row per trick: ${live.join(', ')}`);
  assert.deepEqual([...live].map((s) => s.split(' ')[0]).sort(), [...expected].map((s) => s.split(' ')[0]).sort());
  const distinct = new Set(times).size;
  t.diagnostic(`${times.length} row arrivals at ${times.join(', ')} ms; ${distinct} distinct`);
  // Several separate updates prove the rows came in as the run went (one update at the end would be one time);
  // how long the run takes depends on the machine (about 0.5 s quiet, seconds under load), so no duration is asked.
  assert.ok(distinct >= 3, `the rows arrived in ${distinct} update(s), not one by one: ${times.join(', ')}`);
  assert.ok(times.at(-1)! > times[0]!, `the rows arrived over the run, not at once: ${times.join(', ')}`);
  assert.equal(await page.locator('#tester-verdict').getAttribute('data-verdict'), report.verdict, 'the live verdict is the report\'s');
  assert.match(await page.locator('#tester-status').innerText(), new RegExp(`^Finished \\(done\\): ${expected.length} trick verdict\\(s\\)\\.$`));
  assert.match(await page.locator('#tester-verdict').innerText(), /^Verdict: OPEN proved/);
  await screenshot(page, 'tester-live-done');

  // The full report: every trick with the report's verdict, the proof.
  await Promise.all([page.waitForURL((u) => u.pathname === `/tester/runs/${id}`, { waitUntil: 'load' }), page.getByRole('link', { name: 'Show the full report' }).click()]);
  await page.locator('#tester-live').waitFor({ state: 'detached' });
  assert.equal(await page.locator('#tester-verdict').getAttribute('data-verdict'), 'OPEN');
  assert.deepEqual(await pageTricks(page, `section.target[data-address="${TARGET}"]`), expected, 'the report page shows the API report\'s tricks and verdicts');
  assert.equal(await page.locator('section.target tr.trick[data-trick="V02"] span.verdict').first().innerText(), 'OPEN');
  await screenshot(page, 'tester-report-open');

  // The run is listed on the tester page with its verdict.
  await page.goto('/tester');
  const row = page.locator('#tester-runs tbody tr', { has: page.locator(`a[href="/tester/runs/${id}"]`) });
  assert.equal(await row.locator('span.verdict').innerText(), 'OPEN');
});

test('a default Postfix tested in safe mode: CLOSED as in the API report; a dialogue opened by keyboard shows its 454', { timeout: 60_000 }, async (t) => {
  const page = await loggedIn(t);
  const id = await startFromForm(page, { host: TARGET, ports: `${closedPostfix.port}:mx`, mode: 'safe' });
  // A short run can finish before the page loads (the page is then the finished report) or while it follows.
  await page.locator('#tester-verdict:not([data-verdict=""])').waitFor({ timeout: 30_000 });
  const report = (await web.api(`/api/tester/runs/${id}/report`)).json;
  assert.equal(report.verdict, 'CLOSED', `${report.reason}: ${report.detail}`);
  assert.equal(await page.locator('#tester-verdict').getAttribute('data-verdict'), report.verdict);
  await page.goto(`/tester/runs/${id}`);
  assert.deepEqual(await pageTricks(page, 'section.target'), reportTricks(report));
  assert.ok(!reportTricks(report).some((s) => s.endsWith(' OPEN')));
  // Keyboard: focus the first trick's "dialogue" and open it with Enter.
  const summary = page.locator('section.target tr.trick').first().locator('summary');
  await summary.focus();
  await page.keyboard.press('Enter');
  const dialogue = page.locator('section.target tr.trick').first().locator('pre.transcript');
  await dialogue.waitFor();
  assert.match(await dialogue.innerText(), /S: 454 4\.7\.1 .*Relay access denied/);
  await screenshot(page, 'tester-report-closed');
});

test('the form refuses a private target the configuration does not allow, and says why', async (t) => {
  const page = await loggedIn(t, { allowConsole: [/status of 400/] });
  const before = (await web.api('/api/tester/runs')).json.runs.length;
  await page.getByLabel('Host, IP address or mail domain').fill('10.1.2.3');
  await page.getByLabel('a name is a mail domain').uncheck();
  await page.getByRole('button', { name: 'Test', exact: true }).click();
  await page.locator('#tester-error').waitFor();
  assert.match(await page.getByRole('alert').innerText(), /10\.1\.2\.3/);
  assert.equal(await page.getByLabel('Host, IP address or mail domain').inputValue(), '10.1.2.3', 'the form keeps what was typed');
  assert.equal((await web.api('/api/tester/runs')).json.runs.length, before, 'no run was started');
});
