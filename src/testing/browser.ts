/**
 * Browser tests with playwright-core driving Debian's chromium (/usr/bin/chromium, package "chromium", installed by
 * scripts/peers.sh): launch and close, a page that fails its test on any console error, uncaught page error, dialog
 * or Content-Security-Policy violation, screenshots written to the test output directory, and the login form.
 *
 *   const browser = await launchBrowser();                  // in before(); browser.close() in after()
 *   const page = await browser.page(t, { baseURL });         // a fresh context (no cookies): checked when t ends
 *   await login(page, 'alice', PASSWORD);
 *   await screenshot(page, 'queue');                         // $RELAYGUARD_TEST_OUTPUT or <tmp>/relayguard-screens
 *   const arrivals = await watchArrivals(page, 'tr.verdict'); // live pages (SSE): when each row appeared
 *   await horizontalOverflow(page);  await tab(page);         // phone width; keyboard navigation (focus visible?)
 *
 * A real relay for these tests: startWebServe (web-serve.ts). Pages may only use script and style from 'self' (the
 * Content-Security-Policy): an inline script, inline event handler or style attribute shows up as a problem here.
 *
 * Processes: chromium runs with a user-data-dir made for this launch (mkdtemp). close() closes the browser, then
 * SIGKILLs every process whose command line still names that directory (found in /proc, so only processes of this
 * launch), then removes the directory; a failed launch does the same; the test process's exit does the kill too.
 */
import assert from 'node:assert/strict';
import { accessSync, constants, readdirSync, readFileSync, rmSync } from 'node:fs';
import { mkdir, mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';

export const CHROMIUM = process.env['RELAYGUARD_CHROMIUM'] ?? '/usr/bin/chromium';

/** Where screenshots go: $RELAYGUARD_TEST_OUTPUT, else <tmp>/relayguard-screens. */
export function outputDir(): string {
  return process.env['RELAYGUARD_TEST_OUTPUT'] ?? join(tmpdir(), 'relayguard-screens');
}

export interface PageOptions {
  /** Relative page.goto() paths resolve against it, e.g. http://127.0.0.1:PORT. */
  readonly baseURL?: string;
  /** Default 1280x800; a phone: { width: 375, height: 667 }. */
  readonly viewport?: { readonly width: number; readonly height: number };
  /** Console errors matching one of these are expected (e.g. the 400 of a deliberately bad search) and not problems. */
  readonly allowConsole?: readonly RegExp[];
  /** Cookies to start with: `await page.context().storageState()` of a page that logged in (skips the login form). */
  readonly storageState?: Awaited<ReturnType<BrowserContext['storageState']>>;
  /** Per action and assertion; default 10 s (a browser file should stay well under a minute). */
  readonly timeoutMs?: number;
}

export interface RelayguardBrowser {
  readonly browser: Browser;
  readonly userDataDir: string;
  /**
   * A page in a fresh browser context (own cookies, own viewport). Every console error, page error, dialog and CSP
   * violation is recorded (problems(page)); when `t` ends its context is closed and the test fails if any was.
   */
  page(t: TestContext | null, options?: PageOptions): Promise<Page>;
  /** Stops chromium and every process it started, and removes its user-data-dir. Safe to call twice. */
  close(): Promise<void>;
}

const problemsByPage = new WeakMap<Page, string[]>();
const live = new Set<string>();
process.once('exit', () => { for (const dir of live) killLeftovers(dir); });

/** What went wrong on this page so far (console errors, page errors, dialogs, CSP violations). */
export function problems(page: Page): readonly string[] {
  return problemsByPage.get(page) ?? [];
}

/** Fails when the page has recorded a problem. */
export function assertClean(page: Page, what = 'the page'): void {
  const p = problems(page);
  assert.equal(p.length, 0, `${what} had ${p.length} problem(s):\n  ${p.join('\n  ')}`);
}

export async function launchBrowser(): Promise<RelayguardBrowser> {
  try {
    accessSync(CHROMIUM, constants.X_OK);
  } catch {
    assert.fail(`${CHROMIUM} is missing: install the Debian package "chromium" (scripts/peers.sh does), or set RELAYGUARD_CHROMIUM`);
  }
  const userDataDir = await mkdtemp(join(tmpdir(), 'relayguard-chromium-'));
  live.add(userDataDir);
  let persistent: BrowserContext;
  try {
    persistent = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      // As root in a container chromium's sandbox cannot start; the pages are our own, on loopback.
      args: ['--no-sandbox', '--disable-dev-shm-usage', '--no-first-run', '--disable-background-networking', '--disable-component-update'],
      timeout: 30_000,
    });
  } catch (err) {
    await cleanup(userDataDir);
    throw err;
  }
  const browser = persistent.browser()!;
  let closed = false;
  const contexts = new Set<BrowserContext>();
  return {
    browser,
    userDataDir,
    async page(t, options = {}) {
      const context = await browser.newContext({
        viewport: options.viewport ?? { width: 1280, height: 800 },
        ...(options.baseURL !== undefined ? { baseURL: options.baseURL } : {}),
        ...(options.storageState !== undefined ? { storageState: options.storageState } : {}),
      });
      contexts.add(context);
      context.setDefaultTimeout(options.timeoutMs ?? 10_000);
      context.setDefaultNavigationTimeout(options.timeoutMs ?? 10_000);
      const page = await context.newPage();
      const found: string[] = [];
      problemsByPage.set(page, found);
      const allowed = (text: string): boolean => (options.allowConsole ?? []).some((re) => re.test(text));
      // A CSP violation fires securitypolicyviolation in the page (also when nothing reaches the console): the
      // init script runs before the page's own (CDP, not subject to the page's CSP) and reports it here.
      await page.exposeBinding('__relayguardCspViolation', (_source, text: string) => { found.push(`CSP violation: ${text}`); });
      await page.addInitScript(() => {
        const w = globalThis as any; // the page's window (this project compiles without the DOM library)
        w.document.addEventListener('securitypolicyviolation', (e: any) => {
          w.__relayguardCspViolation(`${e.violatedDirective} blocked ${e.blockedURI || 'inline'} at ${e.sourceFile}:${e.lineNumber}`);
        });
      });
      page.on('console', (m) => {
        const text = m.text();
        const csp = /Content[- ]Security[- ]Policy/i.test(text);
        if ((m.type() === 'error' || csp) && !allowed(text)) found.push(`console ${m.type()}: ${text} (${m.location().url})`);
      });
      page.on('pageerror', (err) => { found.push(`page error: ${err.message}`); });
      page.on('dialog', (d) => {
        found.push(`dialog ${d.type()}: ${d.message()}`);
        void d.dismiss().catch(() => {});
      });
      page.on('crash', () => { found.push('page crashed'); });
      if (t !== null) {
        t.after(async () => {
          contexts.delete(context);
          await context.close().catch(() => {});
          assertClean(page, `page ${page.url()}`);
        });
      }
      return page;
    },
    async close() {
      if (closed) return;
      closed = true;
      for (const c of contexts) await c.close().catch(() => {});
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        persistent.close().catch(() => {}),
        new Promise((resolve) => { timer = setTimeout(resolve, 10_000); }),
      ]);
      clearTimeout(timer);
      await cleanup(userDataDir);
    },
  };
}

/** SIGKILLs what is left of a launch, waits (up to 5 s) until none of it runs, and removes its directory. */
async function cleanup(userDataDir: string): Promise<void> {
  killLeftovers(userDataDir);
  for (const deadline = Date.now() + 5000; processesOf(userDataDir).length > 0 && Date.now() < deadline;) {
    await new Promise((r) => setTimeout(r, 50));
    killLeftovers(userDataDir);
  }
  live.delete(userDataDir);
  rmSync(userDataDir, { recursive: true, force: true });
}

/**
 * Pids of running processes (zombies aside: they have exited) whose command line names `userDataDir` (chromium passes --user-data-dir to its children
 * or they inherit the browser's arguments): the processes of one launch, never anyone else's.
 */
export function processesOf(userDataDir: string): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      const cmd = readFileSync(`/proc/${name}/cmdline`, 'latin1');
      const stat = readFileSync(`/proc/${name}/stat`, 'latin1');
      if (cmd.includes(userDataDir) && !/^\d+ \(.*\) Z/.test(stat)) out.push(Number(name));
    } catch { /* gone meanwhile */ }
  }
  return out;
}

function killLeftovers(userDataDir: string): void {
  for (const pid of processesOf(userDataDir)) {
    try { process.kill(pid, 'SIGKILL'); } catch { /* exited meanwhile */ }
  }
}

/** Saves a PNG of the page as <outputDir>/<name>.png and returns its path. */
export async function screenshot(page: Page, name: string, options: { fullPage?: boolean; dir?: string } = {}): Promise<string> {
  const dir = options.dir ?? outputDir();
  await mkdir(dir, { recursive: true });
  const file = join(dir, `${name.replace(/[^A-Za-z0-9._-]+/g, '-')}.png`);
  await page.screenshot({ path: file, fullPage: options.fullPage ?? true });
  return file;
}

/** Logs in through the form at /login (relative to the page's baseURL) and waits for the overview. */
export async function login(page: Page, name: string, password: string): Promise<void> {
  await page.goto('/login');
  await page.getByLabel('Admin name').fill(name);
  await page.getByLabel('Password').fill(password);
  await Promise.all([
    page.waitForURL((u) => u.pathname === '/', { waitUntil: 'load' }),
    page.getByRole('button', { name: 'Log in' }).click(),
  ]);
}

/** Whether the page body scrolls sideways (it must not at phone width; a table may scroll inside its wrapper). */
export async function horizontalOverflow(page: Page): Promise<{ scrollWidth: number; clientWidth: number; culprits: string[] }> {
  return page.evaluate(() => {
    const { document, getComputedStyle } = globalThis as any;
    const root = document.scrollingElement ?? document.documentElement;
    const width = root.clientWidth;
    const culprits: string[] = [];
    for (const el of Array.from(document.querySelectorAll('body *')) as any[]) {
      const r = el.getBoundingClientRect();
      if (r.right > width + 1) {
        // Report the outermost element that sticks out (its children stick out with it).
        let inner = false;
        for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
          if (p.getBoundingClientRect().right > width + 1) { inner = true; break; }
          if (getComputedStyle(p).overflowX !== 'visible') { inner = true; break; }
        }
        if (!inner) culprits.push(`${el.tagName.toLowerCase()}${el.className ? `.${String(el.className).replace(/ /g, '.')}` : ''} right=${Math.round(r.right)}`);
      }
    }
    return { scrollWidth: root.scrollWidth, clientWidth: width, culprits: culprits.slice(0, 5) };
  });
}

/** What has the keyboard focus: tag, role-ish text and whether a focus indicator is drawn. */
export interface Focused {
  readonly tag: string;
  readonly text: string;
  readonly href: string | null;
  readonly focusVisible: boolean;
  /** An outline or box-shadow is drawn around it. */
  readonly indicator: boolean;
}

/** Presses Tab and describes the element that then has the focus. */
export async function tab(page: Page, key = 'Tab'): Promise<Focused> {
  await page.keyboard.press(key);
  return focused(page);
}

export async function focused(page: Page): Promise<Focused> {
  return page.evaluate(() => {
    const { document, getComputedStyle } = globalThis as any;
    const el = document.activeElement;
    if (!el || el === document.body) return { tag: 'body', text: '', href: null, focusVisible: false, indicator: false };
    const s = getComputedStyle(el);
    const outline = s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0;
    const shadow = s.boxShadow !== 'none' && s.boxShadow !== '';
    return {
      tag: el.tagName.toLowerCase(),
      text: (el.getAttribute('aria-label') ?? (el.textContent || el.value) ?? '').trim().replace(/\s+/g, ' ').slice(0, 80),
      href: el.getAttribute('href'),
      focusVisible: el.matches(':focus-visible'),
      indicator: outline || shadow,
    };
  });
}

/**
 * Records when elements matching `selector` appear in the page's current document (a MutationObserver, installed by
 * this call): for pages that update live (Server-Sent Events, polling), e.g. the tester's verdicts arriving one by
 * one. The returned function gives the arrival times (ms since the watch began), one per element, in order; elements
 * already there count as arriving at 0. Navigating away ends the watch.
 */
export async function watchArrivals(page: Page, selector: string): Promise<() => Promise<number[]>> {
  const key = `__relayguardArrivals${Math.random().toString(36).slice(2)}`;
  await page.evaluate(({ selector, key }) => {
    const w = globalThis as any;
    const t0 = w.performance.now();
    const seen = new w.WeakSet();
    const times: number[] = [];
    w[key] = times;
    const scan = (): void => {
      for (const el of Array.from(w.document.querySelectorAll(selector)) as any[]) {
        if (!seen.has(el)) { seen.add(el); times.push(Math.round(w.performance.now() - t0)); }
      }
    };
    scan();
    new w.MutationObserver(scan).observe(w.document.documentElement, { childList: true, subtree: true });
  }, { selector, key });
  return () => page.evaluate((key) => [...((globalThis as any)[key] as number[])], key);
}
