/**
 * Shared helpers for the durability and overload e2e suites (test/e2e/durability.test.ts, overload.test.ts):
 * a seeded PRNG, one SMTP transaction over the byte-exact client, queue inspection by Message-ID, RSS sampling
 * from /proc, tmpfs mounts that are always undone, and file-descriptor limits.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QueueStore } from '../../src/queue/index.ts';
import { RawSmtpClient, p1, type TestReply } from '../../src/testing/smtp-client.ts';

export { RawSmtpClient, p1, type TestReply };

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** mulberry32: a small deterministic PRNG, so a failing run can be replayed from the printed seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The seed from $name when set (replay), else a fresh one. */
export function seedFrom(name: string): number {
  const env = process.env[name];
  if (env !== undefined && env !== '') return Number(env) >>> 0;
  return (Date.now() ^ (process.pid << 16)) >>> 0;
}

/** A message with the Message-ID header and a body of about `bodyBytes` octets (lines of 76, dot-safe). */
export function messageText(messageId: string, bodyBytes = 200): string {
  const line = 'x'.repeat(76) + '\r\n';
  const lines = Math.max(1, Math.ceil(bodyBytes / line.length));
  return `Message-ID: <${messageId}>\r\nFrom: <a@client.test>\r\nTo: <u@local.test>\r\nSubject: load\r\n\r\n${line.repeat(lines)}`;
}

export interface TransactionOptions {
  readonly from?: string;
  readonly to?: string;
  readonly bodyBytes?: number;
  /** Per-reply timeout (the final reply waits for fsyncs). */
  readonly timeoutMs?: number;
  /** Called right after the end-of-data dot was written, before its reply is read. */
  readonly onDot?: () => void;
}

export type TransactionResult =
  | { readonly stage: 'MAIL' | 'RCPT' | 'DATA'; readonly reply: TestReply }
  | { readonly stage: 'END'; readonly reply: TestReply };

/** MAIL / RCPT / DATA / body / "." on an open session, each step after the previous reply; returns the first
 *  refusal or the reply to the final dot. Throws when the connection dies or a reply times out. */
export async function transaction(c: RawSmtpClient, messageId: string, o: TransactionOptions = {}): Promise<TransactionResult> {
  const t = o.timeoutMs ?? 10_000;
  const mail = await c.cmd(`MAIL FROM:<${o.from ?? 'a@client.test'}>`, t);
  if (mail.code !== 250) return { stage: 'MAIL', reply: mail };
  const rcpt = await c.cmd(`RCPT TO:<${o.to ?? 'u@local.test'}>`, t);
  if (rcpt.code !== 250) return { stage: 'RCPT', reply: rcpt };
  const data = await c.cmd('DATA', t);
  if (data.code !== 354) return { stage: 'DATA', reply: data };
  c.write(messageText(messageId, o.bodyBytes) + '.\r\n');
  o.onDot?.();
  return { stage: 'END', reply: await c.readReply(t) };
}

/** Every queue entry: Message-ID (without brackets) and state. */
export function queuedMessages(dataDir: string): { messageId: string; state: string }[] {
  const store = QueueStore.open({ dataDir, readOnly: true });
  try {
    return store.list().map((m) => ({ messageId: (m.messageId ?? '').replace(/^<|>$/g, ''), state: m.state }));
  } finally {
    void store.close();
  }
}

/** Queue entries (state) for one Message-ID. */
export function queuedById(dataDir: string, messageId: string): { queueId: string; state: string }[] {
  const store = QueueStore.open({ dataDir, readOnly: true });
  try {
    return store.list({ messageId }).map((m) => ({ queueId: m.queueId, state: m.state }));
  } finally {
    void store.close();
  }
}

export function spoolEntries(dataDir: string, sub: 'tmp' | 'msg'): string[] {
  const dir = join(dataDir, 'spool', sub);
  return existsSync(dir) ? readdirSync(dir) : [];
}

/** VmRSS of a process in bytes (null when it is gone). */
export function rssBytes(pid: number): number | null {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

export const mib = (bytes: number | null): string => (bytes === null ? 'n/a' : `${(bytes / 1048576).toFixed(1)} MiB`);

/** Samples a process's RSS every `everyMs` until stopped; keeps the peak. */
export function rssSampler(pid: number, everyMs = 100): { readonly peak: number; stop(): number } {
  let peak = rssBytes(pid) ?? 0;
  const timer = setInterval(() => { peak = Math.max(peak, rssBytes(pid) ?? 0); }, everyMs);
  timer.unref();
  return {
    get peak() { return peak; },
    stop() {
      clearInterval(timer);
      peak = Math.max(peak, rssBytes(pid) ?? 0);
      return peak;
    },
  };
}

/** True while the process exists (and is not a zombie). */
export function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^\d+ \(.*\) Z /.test(stat);
  } catch {
    return false;
  }
}

/** The soft and hard RLIMIT_NOFILE of a process, from /proc/PID/limits. */
export function nofile(pid: number | 'self' = 'self'): { soft: number; hard: number } {
  const m = /^Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)/m.exec(readFileSync(`/proc/${pid}/limits`, 'utf8'));
  assert.ok(m, 'cannot read the open-file limit');
  const n = (s: string): number => (s === 'unlimited' ? Number.MAX_SAFE_INTEGER : Number(s));
  return { soft: n(m[1]!), hard: n(m[2]!) };
}

/** Raises this process's soft open-file limit to `want` with prlimit(1) when it is lower (the hard limit cannot
 *  be raised without CAP_SYS_RESOURCE, which a container's root may lack). */
export function ensureNofile(want: number): { soft: number; hard: number } {
  const before = nofile();
  if (before.soft >= want) return before;
  assert.ok(before.hard >= want, `this test needs ${want} open files; the hard limit is ${before.hard}`);
  execFileSync('prlimit', ['--pid', String(process.pid), `--nofile=${want}:${before.hard}`], { stdio: 'pipe' });
  const now = nofile();
  assert.ok(now.soft >= want, `could not raise the open-file limit to ${want} (now ${now.soft})`);
  return now;
}

/** Pids of the processes (other than this one) with `arg` as one of their argv elements, e.g. a unique config
 *  path: finds the process a wrapper such as strace started, so it can be stopped by its id. */
export function pidsWithArg(arg: string): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${name}/cmdline`, 'latin1').split('\0').includes(arg)) out.push(Number(name));
    } catch { /* gone */ }
  }
  return out;
}

/** Mounts a tmpfs on a fresh temp directory; `unmount` is idempotent and falls back to a lazy unmount. */
export function mountTmpfs(options: string): { dir: string; unmount(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'relayguard-tmpfs-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', options, 'tmpfs', dir], { stdio: 'pipe' });
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`This test needs root to mount a tmpfs (mount -t tmpfs -o ${options}): ${String(err)}`);
  }
  let mounted = true;
  return {
    dir,
    unmount() {
      if (!mounted) return;
      try {
        execFileSync('umount', [dir], { stdio: 'pipe' });
      } catch {
        execFileSync('umount', ['-l', dir], { stdio: 'pipe' });
      }
      mounted = false;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Asserts a fresh connection is served: greeting, EHLO and NOOP. */
export async function assertServing(port: number, what = 'server'): Promise<void> {
  const c = await p1(port);
  try {
    const noop = await c.cmd('NOOP');
    assert.equal(noop.code, 250, `${what} does not answer NOOP: ${noop.lines.join(' | ')}`);
  } finally {
    c.close();
  }
}
