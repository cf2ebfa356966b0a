/**
 * Shared helpers for the interop tests (test/interop/*.test.ts): real SMTP clients (swaks, Python's smtplib,
 * nodemailer, nmap) against a real `relayguard serve` child process. Every child process runs under a timeout
 * (SIGKILL on expiry); a missing peer is a test failure with a clear message, never a skip.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { CLI, NODE, startServe, type ServeProcess } from '../../src/testing/serve-process.ts';

/** The "outside" client address: loopback, but outside trustedNetworks ['127.0.0.1/32']. */
export const OUTSIDE = '127.0.0.2';
/** Config for a relay that trusts only 127.0.0.1, so clients bound to OUTSIDE are untrusted. */
export const OUTSIDE_CONFIG = { trustedNetworks: ['127.0.0.1/32'] };

export const SWAKS = '/usr/bin/swaks';
export const NMAP = '/usr/bin/nmap';
/** The Debian python3 (not a pyenv one on PATH): smtplib is stdlib, so any python3 works, but be predictable. */
export const PYTHON = '/usr/bin/python3';

export interface RunResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly timedOut: boolean;
  /** The command line, for failure messages. */
  readonly command: string;
}

/** Fails (never skips) when a peer program is missing. */
export function requirePeer(path: string, debianPackage: string): void {
  try {
    accessSync(path, constants.X_OK);
  } catch {
    assert.fail(`interop peer ${path} is missing or not executable: install the Debian package "${debianPackage}" ` +
      '(.ci/run installs swaks, nmap and python3 for these tests)');
  }
}

/** Runs a program with a timeout (SIGKILL when it expires), capturing stdout and stderr. */
export function run(file: string, args: readonly string[], options: { timeoutMs?: number; input?: string; env?: Record<string, string> } = {}): Promise<RunResult> {
  const timeoutMs = options.timeoutMs ?? 20_000;
  const command = [file, ...args].map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : JSON.stringify(a))).join(' ');
  return new Promise((resolve, reject) => {
    const child = spawn(file, [...args], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, ...options.env },
    });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    const timer = setTimeout(() => { timedOut = true; child.kill('SIGKILL'); }, timeoutMs);
    child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    child.once('error', (err) => { clearTimeout(timer); reject(new Error(`cannot run ${command}: ${err.message}`)); });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, timedOut, command });
    });
    child.stdin.on('error', () => { /* the child may exit before reading its input */ });
    child.stdin.end(options.input ?? '');
  });
}

/** A one-line-per-stream summary of a run, for assertion messages. */
export function explain(r: RunResult): string {
  return `$ ${r.command}\nexit ${r.code}${r.signal ? ` (signal ${r.signal})` : ''}${r.timedOut ? ' TIMED OUT' : ''}\n` +
    `--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;
}

/** Runs `relayguard ARGS --config FILE` (the real CLI). */
export function cli(serve: ServeProcess, args: readonly string[], input?: string): Promise<RunResult> {
  return run(NODE, [CLI, ...args, '--config', serve.configFile], { timeoutMs: 20_000, ...(input !== undefined ? { input } : {}) });
}

/** `relayguard user add NAME --password-stdin` against the serve's config (the running server sees it at AUTH). */
export async function addUser(serve: ServeProcess, name: string, password: string): Promise<void> {
  const r = await cli(serve, ['user', 'add', name, '--password-stdin'], `${password}\n`);
  assert.equal(r.code, 0, `user add failed\n${explain(r)}`);
}

export interface QueuedMessage {
  readonly queueId: string;
  readonly sender: string;
  readonly messageId: string | null;
  readonly recipients: readonly string[];
  readonly state: string;
}

/** `relayguard queue list --json`, parsed. */
export async function queueList(serve: ServeProcess): Promise<QueuedMessage[]> {
  const r = await cli(serve, ['queue', 'list', '--json']);
  assert.equal(r.code, 0, `queue list failed\n${explain(r)}`);
  return r.stdout.split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as QueuedMessage);
}

/** The queued message whose Message-ID is `<id>`, asserting it exists once with exactly these recipients. */
export function expectQueued(queue: readonly QueuedMessage[], messageId: string, recipients: readonly string[], sender?: string): QueuedMessage {
  const found = queue.filter((m) => m.messageId === `<${messageId}>`);
  assert.equal(found.length, 1, `expected one queued message with Message-ID <${messageId}>, queue is:\n${JSON.stringify(queue, null, 1)}`);
  const m = found[0]!;
  assert.deepEqual([...m.recipients].sort(), [...recipients].sort(), `recipients of <${messageId}>`);
  if (sender !== undefined) assert.equal(m.sender, sender, `sender of <${messageId}>`);
  return m;
}

/**
 * The relay invariant over the whole queue: every message with a recipient outside local.test was submitted
 * by one of the authenticated senders, and nothing at all came from any of the refused relay attempts.
 */
export function assertNoOpenRelay(queue: readonly QueuedMessage[], authenticatedSenders: readonly string[], attemptSenders: readonly string[]): void {
  for (const m of queue) {
    assert.ok(!attemptSenders.includes(m.sender), `a refused relay attempt got queued: ${JSON.stringify(m)}`);
    const remote = m.recipients.filter((r) => !r.toLowerCase().endsWith('@local.test'));
    if (remote.length > 0) {
      assert.ok(authenticatedSenders.includes(m.sender), `relayed to ${remote.join(', ')} without AUTH: ${JSON.stringify(m)}`);
    }
  }
}

/** A relayguard serve child process that trusts only 127.0.0.1 (clients bound to 127.0.0.2 are outside). */
export function startOutsideServe(): Promise<ServeProcess> {
  return startServe({ config: OUTSIDE_CONFIG });
}

/** A unique Message-ID (without angle brackets) for one client and scenario. */
export function messageId(client: string, scenario: string): string {
  return `${client}-${scenario}-${process.pid}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}@interop.test`;
}

/** The `relay decision` log records of the serve process for one recipient. */
export function relayDecisions(serve: ServeProcess, rcpt: string): Record<string, unknown>[] {
  return serve.logs.filter((l) => l['msg'] === 'relay decision' && String(l['rcpt']).toLowerCase().includes(rcpt.toLowerCase()));
}

/** A position in the serve log: pass it to waitForLogs / expectAuthLogged to see only later records. */
export function logMark(serve: ServeProcess): number {
  return serve.logs.length;
}

/** Waits (up to 3 s: log lines arrive over a pipe) for serve log records after `mark` matching `pred`. */
export async function waitForLogs(serve: ServeProcess, mark: number, pred: (l: Record<string, unknown>) => boolean, timeoutMs = 3000): Promise<Record<string, unknown>[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = serve.logs.slice(mark).filter(pred);
    if (found.length > 0 || Date.now() >= deadline) return found;
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Asserts the serve logged (after `mark`) a successful AUTH with this mechanism for the user from the untrusted address. */
export async function expectAuthLogged(serve: ServeProcess, mark: number, user: string, mechanism: string): Promise<void> {
  const found = await waitForLogs(serve, mark, (l) => l['msg'] === 'auth succeeded' && l['user'] === user && l['mechanism'] === mechanism && l['client_ip'] === OUTSIDE);
  const auth = serve.logs.slice(mark).filter((l) => String(l['msg']).startsWith('auth')).map((l) => JSON.stringify(l));
  assert.ok(found.length > 0, `no "auth succeeded" (${mechanism}, ${user}, ${OUTSIDE}) in the serve log; AUTH records:\n${auth.join('\n')}`);
}
