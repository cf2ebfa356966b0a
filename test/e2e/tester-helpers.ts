/**
 * Shared helpers for the tester's end-to-end tests: loopback targets, a tester run against one port, and
 * views of what a fake server received.
 */
import assert from 'node:assert/strict';
import { generateSelfSigned } from '../../src/smtp/tls-cert.ts';
import { SmtpServer } from '../../src/smtp/server.ts';
import { SmtpClient } from '../../src/smtp/client.ts';
import { canonicalize } from '../../src/core/address.ts';
import { NULL_LOGGER } from '../../src/core/log.ts';
import type { SessionHandler } from '../../src/smtp/handler.ts';
import type { FakeMta } from '../../src/testing/fake-mta.ts';
import { testTarget, type TesterOptions } from '../../src/tester/runner.ts';
import type { ResolvedTarget, PortRole } from '../../src/tester/target.ts';
import type { TargetResult, TransportResult, TrickResult } from '../../src/tester/result.ts';

/** The tester's "outside" address: servers trust 127.0.0.1 only. */
export const OUTSIDE = '127.0.0.2';

export function loopbackTarget(address = '127.0.0.1'): ResolvedTarget {
  return { input: address, address, family: address.includes(':') ? 6 : 4, hostName: null, domain: null, mx: null };
}

let certCache: Promise<{ cert: string; key: string }> | null = null;
export function testCert(): Promise<{ cert: string; key: string }> {
  certCache ??= generateSelfSigned('localhost');
  return certCache;
}

/** Runs the battery against one fake (or real) port, from OUTSIDE, with short timeouts. */
export function testPort(port: number, role: PortRole = 'mx', options: Partial<TesterOptions> = {}, address = '127.0.0.1'): Promise<TargetResult> {
  return testTarget(loopbackTarget(address), {
    ports: [{ port, role }],
    testerDomain: 'example.net',
    sourceAddress: address.includes(':') ? '::1' : OUTSIDE,
    timeouts: { connect: 2000, greeting: 2000, command: 2000 },
    budgetMs: 30_000,
    ...options,
  });
}

export function transport(r: TargetResult, name: TransportResult['transport']): TransportResult {
  const t = r.ports[0]?.transports.find((x) => x.transport === name);
  assert.ok(t, `no ${name} transport in ${JSON.stringify(r.ports[0]?.transports.map((x) => x.transport))}`);
  return t;
}

export function tricksWith(t: TransportResult, verdict: TrickResult['verdict']): string[] {
  return t.tricks.filter((x) => x.verdict === verdict).map((x) => x.id);
}

/** Every command line the fake received, over all sessions. */
export function allCommands(fake: FakeMta): string[] {
  return fake.sessions.flatMap((s) => s.commands);
}

/** A compact description for assertion messages. */
export function explainResult(r: TargetResult): string {
  const lines = [`${r.address}: ${r.verdict} ${r.reason} (${r.detail})`];
  for (const p of r.ports) {
    for (const t of p.transports) {
      lines.push(`  ${p.port} ${t.transport}: ${t.verdict} ${t.reason} (${t.detail}) connections=${t.connections}`);
      for (const k of t.tricks) lines.push(`    ${k.id} ${k.verdict} ${k.reason} ${k.detail} attempts=${k.attempts}`);
    }
  }
  return lines.join('\n');
}

// ---------------------------------------------------------------------------------------------------------
// A toy open relay: the project's SmtpServer with a handler that accepts the recipients a predicate picks,
// rewrites the percent hack (u%remote@here -> u@remote), adds a Received header naming the client address it
// saw, and forwards each message over SMTP to a next hop (the tester's sink). Like any mail server it accepts its
// own postmaster (with or without a domain: the tester's control), which it keeps (never forwarded). Loopback only.


export interface ToyRelay {
  readonly port: number;
  /** Messages forwarded so far. */
  readonly forwarded: { mailFrom: string; rcptTo: string[] }[];
  close(): Promise<void>;
}

export async function startToyRelay(options: { accept: (rcpt: string) => boolean; nextHop: { host: string; port: number }; claimClient?: string; address?: string }): Promise<ToyRelay> {
  const forwarded: { mailFrom: string; rcptTo: string[] }[] = [];
  const rewrite = (address: string): string => {
    const at = address.lastIndexOf('@');
    const local = at < 0 ? address : address.slice(0, at);
    const pct = local.lastIndexOf('%');
    return pct < 0 ? address : `${local.slice(0, pct)}@${local.slice(pct + 1)}`;
  };
  const handler: SessionHandler = {
    async onAuth() { return { ok: false, reply: { code: 535, enhanced: '5.7.8', text: 'no' } }; },
    async onMailFrom() { return { ok: true }; },
    async onRcptTo({ path }) {
      const address = path.mailbox ? canonicalize(path.mailbox).address : '';
      if (/^postmaster(@|$)/i.test(address)) return { ok: true, data: null };
      return options.accept(address) ? { ok: true, data: rewrite(address) } : { ok: false, reply: { code: 554, enhanced: '5.7.1', text: 'Relay access denied' } };
    },
    async onData({ session, body }) {
      const chunks: Buffer[] = [];
      for await (const c of body) chunks.push(c as Buffer);
      const client = options.claimClient ?? session.connection.remoteAddress;
      const received = `Received: from ${session.helo ?? 'unknown'} (${session.helo ?? 'unknown'} [${client}])\r\n\tby toy.relay.test with ESMTP; ${new Date().toUTCString()}\r\n`;
      const mailFrom = session.mailFrom?.mailbox ? canonicalize(session.mailFrom.mailbox).address : '';
      const rcptTo = session.recipients.filter((r) => r.data !== null && r.data !== undefined).map((r) => String(r.data));
      if (rcptTo.length === 0) return { ok: true, queueId: 'TOYLOCAL' };
      forwarded.push({ mailFrom, rcptTo });
      const c = await SmtpClient.connect({ host: options.nextHop.host, port: options.nextHop.port, timeouts: { command: 5000, connect: 2000, greeting: 2000 } });
      try {
        await c.ehlo('toy.relay.test');
        await c.mailFrom(`<${mailFrom}>`);
        for (const r of rcptTo) await c.rcptTo(`<${r}>`);
        await c.data(Buffer.concat([Buffer.from(received), ...chunks]));
      } finally {
        await c.quit();
      }
      return { ok: true, queueId: `TOY${forwarded.length}` };
    },
  };
  const server = new SmtpServer({
    hostname: 'toy.relay.test',
    listeners: [{ name: 'mx', role: 'mx', address: options.address ?? '127.0.0.1', port: 0, tls: 'none' }],
    handler,
    logger: NULL_LOGGER,
    limits: { messageSize: 1 << 20, recipients: 100, errors: 1000, idleTimeoutMs: 10_000, sessionTimeoutMs: 60_000, hopCount: 50, commandLineLength: 4096, connections: 100, connectionsPerIp: 100 },
    tls: null,
    isTrustedProxy: () => false,
    lineEndings: 'normalize',
    authRequiresTls: true,
  });
  const bound = await server.listen();
  return { port: bound[0]!.port, forwarded, close: () => server.close({ graceMs: 200 }) };
}
