/**
 * The public ORDB pages in a real browser (playwright-core driving Debian's chromium, src/testing/browser.ts) against
 * a real `relayguard serve` (ORDB in proof mode with its built-in sink for probes.test, the tester speaking from
 * 127.0.0.2; the admin web listener and a separate public listener on loopback) and a real Postfix on 127.0.0.5
 * (src/testing/postfix.ts) configured as an open relay for the tester, delivering into the ORDB's sink:
 *   - the address is submitted through the admin API, proved open and listed; the admin ORDB view lists it;
 *   - the public lookup page, used through its form, says it is listed and shows the evidence: the trick that got
 *     through, the address the relay saw (the tester's), the probe's Received chain written by Postfix, the
 *     transcript; the same as lookup.json;
 *   - Postfix is reconfigured closed (postconf + postfix reload: only 127.0.0.1 may relay); the delisting button
 *     (reached and pressed by keyboard, from the lookup form on) retests it and the status page (reloading itself)
 *     ends with "delisted"; the lookup page then says not listed;
 *   - the lookup, status and policy pages at phone width (375x667): nothing scrolls sideways, tables in wrappers.
 * Screenshots in $RELAYGUARD_TEST_OUTPUT (default <tmp>/relayguard-screens). Needs root and the Debian postfix package
 * (scripts/peers.sh); fails with a clear message without them. Nothing leaves loopback; every process is stopped.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Page } from 'playwright-core';
import { SmtpClient } from '../../src/smtp/client.ts';
import { horizontalOverflow, launchBrowser, login, processesOf, screenshot, tab, type RelayguardBrowser } from '../../src/testing/browser.ts';
import { freePort } from '../../src/testing/ports.ts';
import { hasBinary, postfixProcesses, startPostfix, type PostfixInstance } from '../../src/testing/postfix.ts';
import { startWebServe, type WebServe } from '../../src/testing/web-serve.ts';

const execFileAsync = promisify(execFile);
const TESTER = '127.0.0.2';
const RELAY = '127.0.0.5';
const PHONE = { width: 375, height: 667 };
let browser: RelayguardBrowser;
let web: WebServe;
let postfix: PostfixInstance;
let pub = '';

before(async () => {
  assert.ok(process.getuid?.() === 0 && hasBinary('/usr/sbin/postfix'), 'the Postfix peer needs root and the Debian postfix package (scripts/peers.sh installs it)');
  const [sinkPort, publicPort] = [await freePort(), await freePort()];
  // One after the other, each assigned at once: after() stops whatever started, also when a later start fails.
  postfix = await startPostfix({
    mode: 'relay-to', relayHost: `127.0.0.1:${sinkPort}`, listenAddresses: [RELAY],
    extraMain: { mynetworks: `${TESTER}/32`, smtpd_relay_restrictions: 'permit_mynetworks, reject_unauth_destination', default_transport: `smtp:[127.0.0.1]:${sinkPort}` },
  });
  web = await startWebServe({
    token: true,
    config: {
      trustedNetworks: ['127.0.0.1/32'],
      dnsbl: {
        zone: 'relays.test', listen: { address: '127.0.0.1', port: 0 }, ttl: 1,
        probeDomain: 'probes.test', sink: { address: '127.0.0.1', port: sinkPort }, probeWait: '5s',
        testPorts: [postfix.port], sourceAddress: TESTER, allowPrivateTargets: true, testBudget: '60s', schedulerInterval: 0,
      },
      web: { public: { address: '127.0.0.1', port: publicPort } },
    },
  });
  assert.ok(web.publicBase, 'serve logs its public listener');
  pub = web.publicBase;
  browser = await launchBrowser();
});

after(async () => {
  const dir = browser?.userDataDir;
  await Promise.all([browser?.close(), web?.stop(), postfix?.stop()]);
  if (dir) assert.deepEqual(processesOf(dir), [], 'every chromium process of this file has exited');
  if (postfix) assert.deepEqual(postfixProcesses(postfix.configDir), [], 'every Postfix process has exited');
});

/** RCPT TO an outside address through the Postfix, from the tester's address: the reply code. */
async function relayReply(): Promise<number> {
  const c = await SmtpClient.connect({ host: RELAY, port: postfix.port, localAddress: TESTER, timeouts: { connect: 2000, greeting: 5000, command: 5000 } });
  try {
    await c.ehlo('check.example');
    await c.mailFrom('<check@example.net>');
    return (await c.rcptTo('<someone@elsewhere.example>')).code;
  } finally {
    await c.quit().catch(() => {});
  }
}

/** Postfix reconfigured closed: only 127.0.0.1 may relay; `postfix reload`, then wait until it refuses the tester. */
async function closePostfix(): Promise<void> {
  await execFileAsync('/usr/sbin/postconf', ['-c', postfix.configDir, '-e', 'mynetworks = 127.0.0.1/32']);
  // Postfix distrusts a main.cf changed less than ~2 s ago (it waits for it to settle): backdate it.
  const past = new Date(Date.now() - 60_000);
  await utimes(join(postfix.configDir, 'main.cf'), past, past);
  await execFileAsync('/usr/sbin/postfix', ['-c', postfix.configDir, 'reload']);
  for (const deadline = Date.now() + 15_000; ;) {
    const code = await relayReply();
    if (code >= 500) return;
    assert.ok(Date.now() < deadline, `Postfix still relays for the tester after the reload (${code})`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function noSidewaysScroll(page: Page, what: string): Promise<void> {
  const o = await horizontalOverflow(page);
  assert.ok(o.scrollWidth <= o.clientWidth, `${what}: the page scrolls sideways (${o.scrollWidth} > ${o.clientWidth}): ${o.culprits.join(', ')}`);
  const tables = await page.evaluate(() => {
    const w = globalThis as any;
    return Array.from(w.document.querySelectorAll('main table') as ArrayLike<any>).map((tb: any) =>
      tb.parentElement.classList.contains('table-wrap') && ['auto', 'scroll'].includes(w.getComputedStyle(tb.parentElement).overflowX));
  });
  assert.ok(!tables.includes(false), `${what}: a table outside a scrolling .table-wrap`);
}

test('a Postfix open relay is proved and listed; the public lookup page shows it listed with its evidence', { timeout: 90_000 }, async (t) => {
  assert.equal(await relayReply(), 250, 'the Postfix relays for the tester');
  assert.equal((await web.api('/api/ordb/submissions', { method: 'POST', body: { ip: RELAY } })).status, 200);
  const r = await web.api('/api/ordb/retest', { method: 'POST', body: { ip: RELAY, wait: true } });
  assert.equal(r.status, 200, r.body);
  assert.equal(r.json.listing.state, 'listed', JSON.stringify(r.json.outcome));

  // The admin view lists it.
  const admin = await browser.page(t, { baseURL: web.base });
  await login(admin, web.admin.name, web.admin.password);
  await admin.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'ORDB' }).click();
  await admin.waitForURL((u) => u.pathname === '/ordb');
  const row = admin.locator('main tbody tr', { has: admin.getByRole('link', { name: RELAY, exact: true }) });
  assert.equal((await row.locator('td').nth(1).innerText()).trim(), 'listed');
  await screenshot(admin, 'ordb-admin-listed');

  // The public page, through its form.
  const page = await browser.page(t, { baseURL: pub });
  await page.goto('/dnsbl/lookup');
  await page.getByRole('search').getByLabel('IP address').fill(RELAY);
  await Promise.all([page.waitForURL((u) => u.searchParams.get('ip') === RELAY), page.getByRole('button', { name: 'Look up' }).click()]);
  const json = (await (await fetch(`${pub}/dnsbl/lookup.json?ip=${RELAY}`)).json()) as any;
  assert.equal(json.listed, true);
  assert.match(await page.getByRole('status').innerText(), new RegExp(`^${RELAY.replace(/\./g, '\\.')} is listed in relays\\.test since \\d{4}-\\d\\d-\\d\\d .*category open-relay, answer 127\\.0\\.0\\.2`));
  const evidence = page.getByRole('region', { name: 'Evidence' });
  const cell = async (header: string): Promise<string> => (await evidence.locator('tr', { has: page.locator('th', { hasText: header }) }).locator('td').innerText()).trim();
  assert.equal(await cell('Verdict'), 'OPEN (proved)');
  assert.equal(await cell('The relay saw the tester as'), TESTER);
  assert.equal(await cell('The relay saw the tester as'), json.evidence.proof.relaySawClient);
  assert.match(await cell('Trick'), new RegExp(`^${json.evidence.trick.id} `));
  assert.equal(await cell('RCPT TO'), json.evidence.trick.rcptTo.join('\n'));
  const received = await evidence.locator('pre.received').innerText();
  assert.ok(received.includes('(Postfix'), `the probe's Received chain has Postfix's header:\n${received}`);
  assert.ok(received.includes(`[${TESTER}]`), `Postfix recorded the tester's address in its Received header:\n${received}`);
  assert.equal(received, json.evidence.proof.received.join('\n'));
  const transcript = await evidence.locator('pre.transcript').innerText();
  assert.match(transcript, new RegExp(`S: 220 .*Postfix-peer ${postfix.bannerToken}`));
  assert.match(transcript, / ms C: MAIL FROM:/);
  assert.equal(await page.getByRole('button', { name: `Retest ${RELAY} and delist it if closed` }).count(), 1);
  await screenshot(page, 'ordb-lookup-listed');

  const phone = await browser.page(t, { baseURL: pub, viewport: PHONE });
  for (const [path, name] of [[`/dnsbl/lookup?ip=${RELAY}`, 'phone-ordb-lookup-listed'], ['/dnsbl/policy', 'phone-ordb-policy']] as const) {
    await phone.goto(path);
    await noSidewaysScroll(phone, path);
    await screenshot(phone, name);
  }
});

test('the Postfix is closed; the delisting button retests it and the status page ends with "delisted"', { timeout: 90_000 }, async (t) => {
  await closePostfix();
  const page = await browser.page(t, { baseURL: pub, timeoutMs: 15_000 });
  // By keyboard: the address typed into the lookup form, Enter; then Tab to the delisting button, Enter.
  await page.goto('/dnsbl/lookup');
  let f = await tab(page);
  assert.deepEqual([f.tag, f.focusVisible, f.indicator], ['input', true, true], 'the address field is the first stop, focus visible');
  await page.keyboard.type(RELAY);
  await Promise.all([page.waitForURL((u) => u.searchParams.get('ip') === RELAY), page.keyboard.press('Enter')]);
  for (let i = 0; i < 40 && !(f.tag === 'button' && f.text.startsWith('Retest')); i++) f = await tab(page);
  assert.equal(f.text, `Retest ${RELAY} and delist it if closed`);
  assert.ok(f.focusVisible && f.indicator, 'the delisting button shows its focus');
  await Promise.all([
    page.waitForURL((u) => u.pathname === '/dnsbl/delist/status' && u.searchParams.get('ip') === RELAY),
    page.keyboard.press('Enter'),
  ]);
  const first = await page.getByRole('status').innerText();
  assert.match(first, new RegExp(`retest of ${RELAY.replace(/\./g, '\\.')} requested at .* is (running|waiting for its turn)|is delisted\\.`));
  // The page reloads itself (every 5 s) until the retest is done.
  await page.getByText(`${RELAY} is delisted.`).waitFor({ timeout: 60_000 });
  const evidence = page.getByRole('region', { name: 'Evidence' });
  assert.match((await evidence.locator('tr', { has: page.locator('th', { hasText: 'Verdict' }) }).locator('td').innerText()).trim(), /^CLOSED/);
  assert.ok((await page.locator('main table:has(caption:text("History"))').innerText()).includes('delisted'));
  await screenshot(page, 'ordb-delisted');
  const status = new URL(page.url());
  const json = (await (await fetch(`${pub}/dnsbl/lookup.json?ip=${RELAY}`)).json()) as any;
  assert.equal(json.listed, false);
  assert.equal(json.listing.state, 'delisted');

  await page.getByRole('link', { name: `Look up ${RELAY}` }).click();
  await page.waitForURL((u) => u.pathname === '/dnsbl/lookup');
  assert.match(await page.getByRole('status').innerText(), new RegExp(`^${RELAY.replace(/\./g, '\\.')} is not listed in relays\\.test\\. It was delisted on `));
  assert.equal(await page.getByRole('button', { name: /^Retest/ }).count(), 0, 'nothing left to retest');

  const phone = await browser.page(t, { baseURL: pub, viewport: PHONE });
  for (const [path, name] of [[`${status.pathname}${status.search}`, 'phone-ordb-delisted'], [`/dnsbl/lookup?ip=${RELAY}`, 'phone-ordb-lookup-delisted']] as const) {
    await phone.goto(path);
    await noSidewaysScroll(phone, path);
    await screenshot(phone, name);
  }
});
