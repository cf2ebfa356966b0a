/**
 * An in-process relayguard receive path for tests: the real SMTP server, relay policy, user store, AUTH
 * throttle and durable queue, on ephemeral loopback ports with a temporary data directory.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MemoryLogger, type LogRecord } from '../core/log.ts';
import { SmtpServer, type ListenerOptions } from '../smtp/server.ts';
import { generateSelfSigned } from '../smtp/tls-cert.ts';
import { QueueStore } from '../queue/index.ts';
import { UserStore } from '../policy/users.ts';
import { AuthThrottle } from '../policy/auth-throttle.ts';
import { NetworkList } from '../policy/networks.ts';
import { createReceiveHandler } from '../cli/receive-handler.ts';
import type { LineEndingMode } from '../smtp/data-reader.ts';

export interface HarnessOptions {
  trustedNetworks?: string[];
  trustedProxies?: string[];
  localDomains?: string[];
  relayDomains?: string[];
  users?: { name: string; password: string; addresses?: string[] }[];
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
}

export interface Harness {
  readonly ports: { mx: number; submission: number; submissions: number };
  readonly dataDir: string;
  readonly queue: QueueStore;
  readonly logs: LogRecord[];
  readonly users: UserStore;
  close(): Promise<void>;
}

let certCache: Promise<{ cert: string; key: string }> | null = null;

export async function startRelay(options: HarnessOptions = {}): Promise<Harness> {
  certCache ??= generateSelfSigned('localhost');
  const { cert, key } = await certCache;
  const dataDir = options.dataDir ?? (await mkdtemp(join(tmpdir(), 'relayguard-test-')));
  const logger = new MemoryLogger();
  const queue = QueueStore.open({ dataDir, logger });
  const users = new UserStore(':memory:');
  for (const u of options.users ?? []) await users.add(u.name, u.password, { addresses: u.addresses ?? [] });
  const trusted = new NetworkList(options.trustedNetworks ?? ['127.0.0.0/8', '::1/128']);
  const proxies = new NetworkList(options.trustedProxies ?? []);
  const local = new Set((options.localDomains ?? ['local.test']).map((d) => d.toLowerCase()));
  const limits = {
    messageSize: 10 * 1024 * 1024, recipients: 1000, errors: 20, idleTimeoutMs: 10_000, sessionTimeoutMs: 60_000,
    hopCount: 100, commandLineLength: 4096, connections: 5000, connectionsPerIp: 5000, proxyTimeoutMs: 2000,
    ...options.limits,
  };
  const handler = createReceiveHandler({
    hostname: 'mx.local.test',
    queue,
    logger,
    isTrusted: (ip) => trusted.contains(ip),
    localDomains: () => local,
    relayDomains: new Set(options.relayDomains ?? []),
    localAddresses: new Set(['127.0.0.1', '::1']),
    authenticate: async (u, p) => ((await users.authenticate(u, p)) ? u : null),
    owns: (u, a) => users.owns(u, a),
    throttle: new AuthThrottle({ maxFailures: options.authMaxFailures ?? 10 }),
    messageSizeLimit: limits.messageSize,
  });
  const listeners: ListenerOptions[] = [
    { name: 'mx', role: 'mx', address: '127.0.0.1', port: 0, tls: 'starttls', proxyProtocol: options.proxyProtocol ?? false },
    { name: 'submission', role: 'submission', address: '127.0.0.1', port: 0, tls: 'starttls' },
    { name: 'submissions', role: 'submission', address: '127.0.0.1', port: 0, tls: 'implicit' },
  ];
  const server = new SmtpServer({
    hostname: 'mx.local.test',
    listeners,
    handler,
    logger,
    limits,
    tls: { cert, key },
    isTrustedProxy: (ip) => proxies.contains(ip),
    lineEndings: options.lineEndings ?? 'reject',
    authRequiresTls: true,
    greetDelayMs: options.greetDelayMs ?? 0,
  });
  const bound = await server.listen();
  const port = (name: string): number => bound.find((b) => b.name === name)!.port;
  return {
    ports: { mx: port('mx'), submission: port('submission'), submissions: port('submissions') },
    dataDir,
    queue,
    logs: logger.records,
    users,
    async close() {
      await server.close({ graceMs: 1000 });
      await queue.close();
      users.close();
      if (!options.dataDir) await rm(dataDir, { recursive: true, force: true });
    },
  };
}
