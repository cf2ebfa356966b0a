/**
 * Helpers for the ORDB end-to-end tests: an in-process relayguard relay, assembled exactly as `serve` assembles it
 * (src/testing/relay-harness.ts -> src/relay/assemble.ts) with a DNSBL abuse check querying the ORDB's own DNS
 * server; and small Postfix controls (postconf + reload on a private instance).
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { utimes } from 'node:fs/promises';
import { promisify } from 'node:util';
import type { LogRecord } from '../../src/core/log.ts';
import type { QueueStore } from '../../src/queue/index.ts';
import type { DnsblCheck } from '../../src/relay/index.ts';
import { startRelay } from '../../src/testing/relay-harness.ts';

const execFileAsync = promisify(execFile);

export interface GatedRelay {
  readonly ports: { readonly mx: number; readonly submission: number };
  readonly logs: LogRecord[];
  readonly queue: QueueStore;
  readonly gate: DnsblCheck;
  close(): Promise<void>;
}

export interface GatedRelayOptions {
  /** Where the DNSBL zones are served (the ORDB's DnsblServer). */
  readonly dnsPort: number;
  readonly zones: readonly { readonly zone: string; readonly weight: number }[];
  readonly threshold?: number;
  readonly trustedNetworks?: readonly string[];
  readonly localDomains?: readonly string[];
  readonly users?: readonly { readonly name: string; readonly password: string; readonly addresses?: readonly string[] }[];
  /** Per-lookup timeout, ms. Default 1000. */
  readonly timeoutMs?: number;
}

/**
 * A relay on 127.0.0.1 that trusts only 127.0.0.1 by default. DNSBL answers are cached for their TTL only (no
 * minimum), not-listed answers not at all, so a test sees a delisting as soon as the zone's TTL has passed.
 */
export async function startGatedRelay(options: GatedRelayOptions): Promise<GatedRelay> {
  const h = await startRelay({
    trustedNetworks: [...(options.trustedNetworks ?? ['127.0.0.1/32'])],
    localDomains: [...(options.localDomains ?? ['local.test'])],
    users: (options.users ?? []).map((u) => ({ name: u.name, password: u.password, addresses: [...(u.addresses ?? [])] })),
    limits: { recipients: 100, idleTimeoutMs: 30_000, sessionTimeoutMs: 120_000, connections: 100, connectionsPerIp: 100 },
    config: {
      dnsblChecks: options.zones.map((z) => ({ zone: z.zone, weight: z.weight })),
      dnsblThreshold: options.threshold ?? 1,
      dnsblResolver: { servers: [`127.0.0.1:${options.dnsPort}`], timeout: `${options.timeoutMs ?? 1000}ms`, minTtl: 0, negativeTtl: 0 },
    },
  });
  return {
    ports: { mx: h.ports.mx, submission: h.ports.submission },
    logs: h.logs,
    queue: h.queue,
    gate: h.receive.dnsbl!,
    close: () => h.close(),
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
