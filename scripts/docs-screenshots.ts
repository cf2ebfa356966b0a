/**
 * Regenerates the dashboard screenshots of the README (docs/screenshots/*.png) from a real `relayguard serve` with a
 * little traffic (swaks: a local delivery, a relay attempt from an untrusted address, an unknown local user), driven
 * by Debian's chromium through the browser test harness (src/testing/browser.ts). Viewport-sized, so the files stay
 * small. Needs swaks and chromium (scripts/peers.sh) and the loopback address 127.0.0.2.
 *
 *   ./node_modules/.bin/node scripts/docs-screenshots.ts [output dir, default docs/screenshots]
 */
import { execFileSync } from 'node:child_process';
import { resolve } from 'node:path';
import { launchBrowser, login, screenshot } from '../src/testing/browser.ts';
import { startWebServe } from '../src/testing/web-serve.ts';

const dir = resolve(process.argv[2] ?? resolve(import.meta.dirname, '..', 'docs', 'screenshots'));
const web = await startWebServe({ config: { trustedNetworks: ['127.0.0.1/32'], node: 'mx1' } });
const browser = await launchBrowser();
try {
  const swaks = (from: string, args: string[]): void => {
    try {
      execFileSync('swaks', ['--server', `127.0.0.1:${web.serve.ports.mx}`, '--local-interface', from, '--timeout', '10s', ...args], { stdio: 'ignore', timeout: 20_000 });
    } catch { /* refusals exit non-zero: that is the point */ }
  };
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
  const phone = await browser.page(null, { baseURL: web.base, viewport: { width: 375, height: 667 } });
  await login(phone, web.admin.name, web.admin.password);
  await phone.goto('/decisions?action=reject');
  out.push(await screenshot(phone, 'phone-decisions', { dir, fullPage: false }));
  process.stdout.write(`${out.join('\n')}\n`);
} finally {
  await browser.close();
  await web.stop();
}
