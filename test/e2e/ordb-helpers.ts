/**
 * Helpers for the ORDB end-to-end tests: an in-process relayguard relay whose receive handler sits behind the DNSBL
 * gate (createDnsblGate(...).wrap(createReceiveHandler(...)), exactly what `serve` does once wired), querying the
 * ORDB's own DNS server; and small Postfix controls (postconf + reload on a private instance).
 */
import { execFile } from 'node:child_process';
import { promises as dnsPromises } from 'node:dns';
import { mkdtemp, rm, utimes } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { MemoryLogger, type LogRecord } from '../../src/core/log.ts';
import { SmtpServer } from '../../src/smtp/server.ts';
import { QueueStore } from '../../src/queue/index.ts';
import { UserStore } from '../../src/policy/users.ts';
import { AuthThrottle } from '../../src/policy/auth-throttle.ts';
import { NetworkList } from '../../src/policy/networks.ts';
import { createReceiveHandler } from '../../src/cli/receive-handler.ts';
import { createDnsblGate, type DnsblGate } from '../../src/cli/ordb-service.ts';
import { testCert } from './tester-helpers.ts';

const execFileAsync = promisify(execFile);

export interface GatedRelay {
  readonly ports: { readonly mx: number; readonly submission: number };
  readonly logs: LogRecord[];
  readonly queue: QueueStore;
  readonly gate: DnsblGate;
  close(): Promise<void>;
}

export interface GatedRelayOptions {
  /** Where the DNSBL zones are served (the ORDB's DnsblServer). */
  readonly dnsPort: number;
  readonly zones: readonly { readonly zone: string; readonly weight: number }[];
  readonly threshold?: number;
  readonly trustedNetworks?: readonly string[];
  readonly localDomains?: readonly string[];
  readonly users?: readonly { readonly name: string; readonly password: string }[];
  /** Per-lookup timeout, ms. Default 1000. */
  readonly timeoutMs?: number;
}

/**
 * A relay on 127.0.0.1 (mx + submission with STARTTLS) that trusts only 127.0.0.1 by default. DNSBL answers are
 * cached for their TTL only (no minimum), not-listed answers not at all, so a test sees a delisting as soon as the
 * zone's TTL has passed.
 */
export async function startGatedRelay(options: GatedRelayOptions): Promise<GatedRelay> {
  const { cert, key } = await testCert();
  const dataDir = await mkdtemp(join(tmpdir(), 'relayguard-ordb-relay-'));
  const logger = new MemoryLogger();
  const queue = QueueStore.open({ dataDir, logger });
  const users = new UserStore(':memory:');
  for (const u of options.users ?? []) await users.add(u.name, u.password, { addresses: [] });
  const trusted = new NetworkList([...(options.trustedNetworks ?? ['127.0.0.1/32'])]);
  const local = new Set(options.localDomains ?? ['local.test']);
  const resolver = new dnsPromises.Resolver({ timeout: options.timeoutMs ?? 1000, tries: 1 });
  resolver.setServers([`127.0.0.1:${options.dnsPort}`]);
  const gate = createDnsblGate({
    zones: options.zones, threshold: options.threshold ?? 1, resolver, isTrusted: (ip) => trusted.contains(ip), logger,
    timeoutMs: options.timeoutMs ?? 1000, minTtlMs: 0, negativeTtlMs: 0, healthCheckIntervalMs: 0,
  });
  await gate.start();
  const handler = gate.wrap(createReceiveHandler({
    hostname: 'mx.local.test',
    queue,
    logger,
    isTrusted: (ip) => trusted.contains(ip),
    localDomains: () => local,
    relayDomains: new Set(),
    localAddresses: new Set(['127.0.0.1']),
    authenticate: async (u, p) => ((await users.authenticate(u, p)) ? u : null),
    owns: () => true,
    throttle: new AuthThrottle({ maxFailures: 10 }),
    messageSizeLimit: 10 * 1024 * 1024,
  }));
  const server = new SmtpServer({
    hostname: 'mx.local.test',
    listeners: [
      { name: 'mx', role: 'mx', address: '127.0.0.1', port: 0, tls: 'starttls' },
      { name: 'submission', role: 'submission', address: '127.0.0.1', port: 0, tls: 'starttls' },
    ],
    handler,
    logger,
    limits: {
      messageSize: 10 * 1024 * 1024, recipients: 100, errors: 20, idleTimeoutMs: 30_000, sessionTimeoutMs: 120_000,
      hopCount: 100, commandLineLength: 4096, connections: 100, connectionsPerIp: 100, proxyTimeoutMs: 2000,
    },
    tls: { cert, key },
    isTrustedProxy: () => false,
    lineEndings: 'reject',
    authRequiresTls: true,
    greetDelayMs: 0,
  });
  const bound = await server.listen();
  const port = (name: string): number => bound.find((b) => b.name === name)!.port;
  return {
    ports: { mx: port('mx'), submission: port('submission') },
    logs: logger.records,
    queue,
    gate,
    async close() {
      gate.stop();
      await server.close({ graceMs: 500 });
      await queue.close();
      users.close();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** Polls until fn() returns a value that is not undefined/false, or fails with `what`. */
export async function waitFor<T>(fn: () => T | undefined | false | Promise<T | undefined | false>, what: string, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Changes a private Postfix's main.cf (and master.cf with `services`) and reloads it. main.cf is backdated first:
 * Postfix distrusts a main.cf modified less than 2 s ago and stalls every command until it is older.
 */
export async function reconfigurePostfix(configDir: string, main: Record<string, string>, services: readonly string[] = []): Promise<void> {
  const postconf = async (...args: string[]): Promise<void> => {
    await execFileAsync('/usr/sbin/postconf', ['-c', configDir, ...args], { timeout: 30_000 });
    const past = new Date(Date.now() - 60_000);
    await utimes(join(configDir, 'main.cf'), past, past);
    await utimes(join(configDir, 'master.cf'), past, past);
  };
  if (Object.keys(main).length > 0) await postconf('-e', ...Object.entries(main).map(([k, v]) => `${k} = ${v}`));
  for (const s of services) await postconf('-M', s);
  await execFileAsync('/usr/sbin/postfix', ['-c', configDir, 'reload'], { timeout: 30_000 });
}
