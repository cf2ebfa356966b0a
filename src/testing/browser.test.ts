/**
 * The browser harness itself (browser.ts), against a tiny local HTTP server: a clean page has no problems; an
 * inline script or inline event handler blocked by the Content-Security-Policy, a console error, an uncaught error
 * and a dialog are each recorded as a problem (so a browser test fails on them); the allow-list lets an expected
 * console error through; screenshots are PNG files in the given directory; close() leaves no chromium process of
 * the launch and removes its user-data-dir.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { assertClean, launchBrowser, problems, processesOf, screenshot, watchArrivals, type RelayguardBrowser } from './browser.ts';

const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'";
const PAGES: Record<string, { csp: boolean; body: string; type?: string; status?: number }> = {
  '/clean': { csp: true, body: '<!doctype html><title>clean</title><p id="p">plain</p><script src="/ok.js"></script>' },
  '/ok.js': { csp: true, type: 'text/javascript', body: 'document.getElementById("p").textContent = "ran";' },
  '/inline-script': { csp: true, body: '<!doctype html><title>x</title><script>document.title = "pwned"</script>' },
  '/inline-handler': { csp: true, body: '<!doctype html><title>x</title><img src="/nothing.png" onerror="document.title=\'pwned\'">' },
  '/inline-style': { csp: true, body: '<!doctype html><title>x</title><p style="color:red">styled</p>' },
  '/nothing.png': { csp: true, status: 404, type: 'image/png', body: '' },
  '/console': { csp: true, body: '<!doctype html><title>x</title><script src="/console.js"></script>' },
  '/console.js': { csp: true, type: 'text/javascript', body: 'console.error("boom"); setTimeout(() => { throw new Error("thrown"); });' },
  '/dialog': { csp: false, body: '<!doctype html><title>x</title><script>alert("hi")</script>' },
  '/bad': { csp: true, status: 400, body: '<!doctype html><title>bad</title><p>bad request</p>' },
  '/live': { csp: true, body: '<!doctype html><title>live</title><button id="go">go</button><ul id="l"><li class="v">0</li></ul><script src="/live.js"></script>' },
  // Chained timeouts, not setInterval: a late tick under load must not bunch the next rows together.
  '/live.js': { csp: true, type: 'text/javascript', body: 'document.getElementById("go").onclick = () => { let n = 1; const add = () => { const li = document.createElement("li"); li.className = "v"; li.textContent = String(n); document.getElementById("l").append(li); if (++n < 4) setTimeout(add, 150); }; setTimeout(add, 150); };' },
};

let server: Server;
let base = '';
let browser: RelayguardBrowser;

before(async () => {
  server = createServer((req, res) => {
    const p = PAGES[req.url ?? ''];
    if (!p) { res.writeHead(204).end(); return; } // favicon
    res.writeHead(p.status ?? 200, { 'content-type': p.type ?? 'text/html', ...(p.csp ? { 'content-security-policy': CSP } : {}) }).end(p.body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await new Promise((resolve) => server?.close(resolve));
});

/** Whether a process runs (a zombie has exited: only its parent has not collected it yet). */
function running(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'latin1'));
  } catch {
    return false;
  }
}

const visit = async (path: string, allowConsole?: RegExp[]): Promise<readonly string[]> => {
  const page = await browser.page(null, { baseURL: base, ...(allowConsole ? { allowConsole } : {}) });
  await page.goto(path);
  await page.waitForTimeout(200); // late events (the thrown error, the blocked image handler)
  const found = [...problems(page)];
  await page.context().close();
  return found;
};

test('a clean page (its own script from self) has no problems', async (t) => {
  const page = await browser.page(t, { baseURL: base });
  await page.goto('/clean');
  assert.equal(await page.locator('#p').innerText(), 'ran');
  assert.deepEqual(problems(page), []);
  assert.doesNotThrow(() => assertClean(page));
});

test('an inline script blocked by the CSP is a problem (violation event and console)', async () => {
  const found = await visit('/inline-script');
  assert.ok(found.some((p) => /^CSP violation: script-src/.test(p)), found.join('\n'));
  assert.ok(found.some((p) => /^console error: .*Content Security Policy/.test(p)), found.join('\n'));
});

test('an inline event handler blocked by the CSP is a problem', async () => {
  const found = await visit('/inline-handler');
  assert.ok(found.some((p) => /^CSP violation: script-src/.test(p)), found.join('\n'));
});

test('an inline style attribute blocked by the CSP is a problem', async () => {
  const found = await visit('/inline-style');
  assert.ok(found.some((p) => /^CSP violation: style-src/.test(p)), found.join('\n'));
});

test('console.error and an uncaught error are problems', async () => {
  const found = await visit('/console');
  assert.ok(found.some((p) => /^console error: boom/.test(p)), found.join('\n'));
  assert.ok(found.some((p) => /^page error: thrown/.test(p)), found.join('\n'));
});

test('a dialog is a problem (and is dismissed)', async () => {
  const found = await visit('/dialog');
  assert.deepEqual(found, ['dialog alert: hi']);
});

test('an expected console error can be allowed; assertClean names the problems', async () => {
  assert.ok((await visit('/bad')).some((p) => /status of 400/.test(p)));
  assert.deepEqual(await visit('/bad', [/status of 400/]), []);
  const page = await browser.page(null, { baseURL: base });
  await page.goto('/console');
  await page.waitForTimeout(200);
  assert.throws(() => assertClean(page, 'the console page'), /the console page had 2 problem\(s\):\n {2}console error: boom/);
  await page.context().close();
});

test('watchArrivals: when live rows appear, one time per row, in order', async (t) => {
  const page = await browser.page(t, { baseURL: base });
  await page.goto('/live');
  const arrivals = await watchArrivals(page, 'li.v');
  await page.getByRole('button', { name: 'go' }).click();
  await page.locator('li.v').nth(3).waitFor();
  const times = await arrivals();
  assert.equal(times.length, 4, String(times));
  assert.equal(times[0], 0, 'a row already there arrived at 0');
  assert.deepEqual([...times].sort((a, b) => a - b), times);
  assert.ok(times[3]! - times[1]! >= 250, `the rows arrived apart (every 150 ms): ${times}`);
});

test('screenshot writes a PNG into the directory', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'relayguard-shots-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const page = await browser.page(t, { baseURL: base, viewport: { width: 320, height: 200 } });
  await page.goto('/clean');
  const file = await screenshot(page, 'a view/with odd:name', { dir });
  assert.equal(file, join(dir, 'a-view-with-odd-name.png'));
  assert.deepEqual([...readFileSync(file).subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
});

test('close() stops every chromium process of the launch and removes its user-data-dir', async () => {
  const b = await launchBrowser();
  const dir = b.userDataDir;
  const pids = processesOf(dir);
  assert.ok(pids.length >= 2, `the browser and its helpers name their user-data-dir: ${pids.join(', ')}`);
  const page = await b.page(null, { baseURL: base });
  await page.goto('/clean');
  await b.close();
  assert.deepEqual(processesOf(dir), []);
  for (const pid of pids) assert.ok(!running(pid), `pid ${pid} has exited`);
  assert.equal(existsSync(dir), false);
  await b.close(); // twice is fine
});

test('a page handed to a test fails that test when a problem happened on it', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'relayguard-harness-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'fixture.test.ts');
  await writeFile(file, `import { test } from 'node:test';
import { launchBrowser } from ${JSON.stringify(resolve(import.meta.dirname, 'browser.ts'))};
const b = await launchBrowser();
test('a dialog opens', async (t) => {
  t.after(() => b.close());
  const page = await b.page(t, { baseURL: ${JSON.stringify(base)} });
  await page.goto('/dialog');
});
`);
  const env = { ...process.env };
  delete env['NODE_TEST_CONTEXT']; // a test run inside a test: run the file, do not report to the outer runner
  const child = spawn(process.execPath, ['--test', '--test-reporter=spec', file], { stdio: ['ignore', 'pipe', 'pipe'], env });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
  child.stderr.setEncoding('utf8').on('data', (d: string) => { out += d; });
  const timer = setTimeout(() => child.kill('SIGKILL'), 40_000);
  const code = await new Promise<number | null>((r) => child.on('close', r));
  clearTimeout(timer);
  assert.equal(code, 1, out);
  assert.match(out, /had 1 problem\(s\):\n\s+dialog alert: hi/, out);
});
