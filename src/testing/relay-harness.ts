/**
 * An in-process relayguard receive path for tests: exactly what `relayguard serve` assembles
 * (src/relay/assemble.ts: the real SMTP server, relay policy, abuse checks, recipient tables, user store, AUTH
 * throttle and durable queue), from a Config parsed by the real schema, on ephemeral loopback ports with a
 * temporary data directory. The options below are config keys under friendlier names; the only things that are
 * not config are a shared test certificate and limits below the config minimums (short timeouts).
 */
import { rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MemoryLogger, type LogRecord } from '../core/log.ts';
import { parseConfig } from '../config/load.ts';
import type { Config, LimitsConfig } from '../config/schema.ts';
import { generateSelfSigned } from '../smtp/tls-cert.ts';
import { SqliteMailQueue, type QueueStore } from '../queue/index.ts';
import { randomBytes } from 'node:crypto';
import type { CounterStore } from '../policy/counters.ts';
import { UserAccounts, type DirectoryStore } from '../policy/directory.ts';
import type { LineEndingMode } from '../smtp/data-reader.ts';
import { assembleReceivePath, type ReceivePath } from '../relay/index.ts';
import type { DnsblResolver } from '../dnsbl/index.ts';

export interface HarnessOptions {
  trustedNetworks?: string[];
  trustedProxies?: string[];
  localDomains?: string[];
  relayDomains?: string[];
  /** Users (who may AUTH); a user whose name is an address is also a mailbox. */
  users?: { name: string; password: string; addresses?: string[] }[];
  /** Extra mailboxes (users with a random password). Default: u@, user@, v@ and rcpt@ the first local domain. */
  mailboxes?: string[];
  /** Aliases added to the database: key -> targets. */
  aliases?: Record<string, string[]>;
  /** Any other config keys (recipients, dnsblChecks, ...), merged over the harness's own. */
  config?: Record<string, unknown>;
  limits?: Partial<{
    messageSize: number; recipients: number; errors: number; idleTimeoutMs: number; sessionTimeoutMs: number;
    hopCount: number; commandLineLength: number; connections: number; connectionsPerIp: number; proxyTimeoutMs: number;
  }>;
  lineEndings?: LineEndingMode;
  greetDelayMs?: number;
  authMaxFailures?: number;
  /** Listen with PROXY protocol on the mx listener too. */
  proxyProtocol?: boolean;
  dataDir?: string;
  /** This host's addresses for own-literal decisions (default 127.0.0.1 and ::1; loopback always counts). */
  ownAddresses?: string[];
  dnsblResolver?: DnsblResolver;
  /** Shared AUTH failure counters (AssembleOptions.counters); the caller closes them. */
  counters?: CounterStore;
}

export interface Harness {
  readonly ports: { mx: number; submission: number; submissions: number };
  readonly dataDir: string;
  readonly queue: QueueStore;
  readonly logs: LogRecord[];
  /** Users with passwords (add, setPassword, authenticate) over the relay's directory. */
  readonly users: UserAccounts;
  /** The relay's directory store (writes show in the recipient tables at once). */
  readonly directory: DirectoryStore;
  readonly config: Config;
  readonly receive: ReceivePath;
  close(): Promise<void>;
}

let certCache: Promise<{ cert: string; key: string }> | null = null;

/** Data directories this harness made: removed when the test process exits, also when a test skipped stop(). */
const madeDirs = new Set<string>();
process.once('exit', () => {
  for (const d of madeDirs) {
    try { rmSync(d, { recursive: true, force: true }); } catch { /* best effort at exit */ }
  }
});

export async function startRelay(options: HarnessOptions = {}): Promise<Harness> {
  certCache ??= generateSelfSigned('localhost');
  const tlsMaterial = await certCache;
  const dataDir = options.dataDir ?? (await mkdtemp(join(tmpdir(), 'relayguard-test-')));
  if (!options.dataDir) madeDirs.add(dataDir);
  const logger = new MemoryLogger();
  const localDomains = options.localDomains ?? ['local.test'];
  const parsed = parseConfig({
    hostname: 'mx.local.test',
    dataDir,
    listeners: [
      { name: 'mx', role: 'mx', address: '127.0.0.1', port: 0, tls: 'starttls', proxyProtocol: options.proxyProtocol ?? false },
      { name: 'submission', role: 'submission', address: '127.0.0.1', port: 0, tls: 'starttls' },
      { name: 'submissions', role: 'submission', address: '127.0.0.1', port: 0, tls: 'implicit' },
    ],
    trustedNetworks: options.trustedNetworks ?? ['127.0.0.0/8', '::1/128'],
    trustedProxies: options.trustedProxies ?? [],
    localDomains,
    relayDomains: options.relayDomains ?? [],
    smtp: { bareLineEndings: options.lineEndings ?? 'reject', greetDelay: `${options.greetDelayMs ?? 0}ms` },
    limits: { authFailuresPerIp: options.authMaxFailures ?? 10 },
    dnsbl: { enabled: false },
    delivery: { enabled: false },
    web: { enabled: false },
    ...options.config,
  });
  const o = options.limits ?? {};
  const limits: LimitsConfig = {
    ...parsed.limits,
    messageSize: o.messageSize ?? 10 * 1024 * 1024,
    recipients: o.recipients ?? 1000,
    errors: o.errors ?? 20,
    idleTimeout: o.idleTimeoutMs ?? 10_000,
    sessionTimeout: o.sessionTimeoutMs ?? 60_000,
    hopCount: o.hopCount ?? 100,
    commandLineLength: o.commandLineLength ?? 4096,
    connections: o.connections ?? 5000,
    connectionsPerIp: o.connectionsPerIp ?? 5000,
    proxyTimeout: o.proxyTimeoutMs ?? 2000,
  };
  const config: Config = { ...parsed, limits };
  const receive = await assembleReceivePath(config, {
    logger,
    tlsMaterial,
    ownAddresses: () => options.ownAddresses ?? ['127.0.0.1', '::1'],
    ...(options.dnsblResolver ? { dnsblResolver: options.dnsblResolver } : {}),
    ...(options.counters ? { counters: options.counters } : {}),
  });
  const users = receive.accounts;
  for (const u of options.users ?? []) await users.add(u.name, u.password, { addresses: u.addresses ?? [] });
  const first = localDomains[0];
  const mailboxes = options.mailboxes ?? (first ? ['u', 'user', 'v', 'rcpt'].map((l) => `${l}@${first}`) : []);
  // Through the relay's own directory, so the recipient tables have them at once (FAST scrypt: random passwords).
  const quick = new UserAccounts(receive.directory, { scrypt: { N: 1024, r: 8, p: 1 } });
  for (const m of mailboxes) if (!(await receive.directory.isMailbox(m))) await quick.add(m, randomBytes(12).toString('hex'));
  for (const [key, targets] of Object.entries(options.aliases ?? {})) await receive.directory.addAlias(key, targets);
  let bound;
  try {
    bound = await receive.listen();
  } catch (err) {
    await receive.close({ graceMs: 0 });
    throw err;
  }
  const port = (name: string): number => bound.find((b) => b.name === name)!.port;
  return {
    ports: { mx: port('mx'), submission: port('submission'), submissions: port('submissions') },
    dataDir,
    /** The embedded queue, read synchronously by tests (on PostgreSQL use receive.queue, the port). */
    get queue(): QueueStore {
      if (receive.queue instanceof SqliteMailQueue) return receive.queue.store;
      throw new Error('this relay runs the PostgreSQL queue: use receive.queue');
    },
    logs: logger.records,
    users,
    directory: receive.directory,
    config,
    receive,
    async close() {
      await receive.close({ graceMs: 1000 });
      if (!options.dataDir) await rm(dataDir, { recursive: true, force: true });
    },
  };
}
