/**
 * A relayguard cluster on loopback for the fault tests (test/e2e/cluster-*.test.ts) and bench:cluster: real
 * `relayguard serve` nodes (src/testing/serve-process.ts) on one PostgreSQL (store.postgres), each delivering to
 * its own loopback sink (src/testing/mail-sink.ts, through delivery.smartHost, so the sink tells which node sent
 * a copy), HAProxy 2.6 in front with docs/cluster.md's configuration as written (only the bind ports and server
 * addresses replaced, as test/interop/haproxy-cluster.test.ts does), and an SMTP load generator that records
 * the reply to every message by its Message-ID.
 *
 * Addresses: HAProxy connects to the nodes from 127.0.0.1 (trustedProxies); TRUSTED (127.0.0.3) is the only
 * client network that may relay (trustedNetworks, by its real address passed by PROXY v2); STRANGER (127.0.0.2)
 * is not trusted. Every process is stopped by stop(), also after a failed start.
 */
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import pg from 'pg';
import { migrate } from '../store/postgres-schema.ts';
import { startHaproxy, type HaproxyInstance } from './haproxy.ts';
import { startMailSink, type MailSink } from './mail-sink.ts';
import { freePort } from './ports.ts';
import { startServe, type ServeProcess } from './serve-process.ts';
import { p1 } from './smtp-client.ts';

const ROOT = resolve(import.meta.dirname, '..', '..');
export const TRUSTED = '127.0.0.3';
export const STRANGER = '127.0.0.2';
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The block between the BEGIN/END markers of docs/cluster.md, without its code fence. */
export function docsHaproxyConfig(): string {
  const md = readFileSync(join(ROOT, 'docs', 'cluster.md'), 'utf8');
  const m = /<!-- BEGIN haproxy-cluster\.cfg[^>]*-->\s*```haproxy\n([\s\S]*?)```\s*<!-- END haproxy-cluster\.cfg -->/.exec(md);
  if (m === null) throw new Error('docs/cluster.md has no BEGIN/END haproxy-cluster.cfg block');
  return m[1]!;
}

/** Replaces exactly what a test must (fails when a line it expects is gone from the docs). */
export function substitute(config: string, map: readonly [string, string][]): string {
  let out = config;
  for (const [from, to] of map) {
    if (!out.includes(from)) throw new Error(`docs/cluster.md's HAProxy block no longer contains "${from}"`);
    out = out.split(from).join(to);
  }
  return out;
}

/** `relayguard db migrate`'s work, on a database URL. */
export async function migrateUrl(url: string): Promise<void> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    await migrate(c);
  } finally {
    await c.end();
  }
}

/** One query on a fresh connection. */
export async function pgQuery<T extends pg.QueryResultRow>(url: string, sql: string, params: unknown[] = []): Promise<T[]> {
  const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000 });
  await c.connect();
  try {
    return (await c.query<T>(sql, params)).rows;
  } finally {
    await c.end().catch(() => undefined);
  }
}

export interface ClusterNode {
  readonly name: string;
  serve: ServeProcess;
  readonly sink: MailSink;
  readonly ports: { mx: number; submission: number; submissions: number };
  /** The node's public web listener: HAProxy's health check asks GET /health there (docs/cluster.md). */
  readonly webPort: number;
}

export interface NodeOptions {
  readonly name: string;
  readonly pgUrl: string;
  readonly sink: MailSink;
  readonly leaseTime: string;
  readonly ports?: { mx: number; submission: number; submissions: number };
  /** The public web listener's port (/health for HAProxy); default a free one. */
  readonly webPort?: number;
  readonly poolSize?: number;
  /** Extra config keys (merged last). */
  readonly config?: Record<string, unknown>;
}

/** One `relayguard serve` node on PostgreSQL with PROXY-protocol listeners, delivering to its sink. */
export async function startNode(o: NodeOptions): Promise<{ serve: ServeProcess; ports: { mx: number; submission: number; submissions: number }; webPort: number }> {
  const ports = o.ports ?? { mx: await freePort(), submission: await freePort(), submissions: await freePort() };
  const webPort = o.webPort ?? await freePort();
  const serve = await startServe({
    ports,
    mailboxes: [],
    config: {
      hostname: 'mx.local.test', // one name for the service on every node (docs/cluster.md)
      node: o.name,
      store: { postgres: { url: o.pgUrl, poolSize: o.poolSize ?? 6, leaseTime: o.leaseTime } },
      trustedProxies: ['127.0.0.1/32'],
      trustedNetworks: [`${TRUSTED}/32`],
      dnsbl: { enabled: false },
      // The admin listener on a free port, the public one (/health only) where HAProxy checks it.
      web: { enabled: true, port: 0, public: { address: '127.0.0.1', port: webPort } },
      log: { level: 'info' },
      listeners: [
        { name: 'mx', role: 'mx', address: '127.0.0.1', port: ports.mx, tls: 'none', proxyProtocol: true },
        { name: 'submission', role: 'submission', address: '127.0.0.1', port: ports.submission, tls: 'starttls', proxyProtocol: true },
      ],
      delivery: {
        enabled: true,
        smartHost: `[127.0.0.1]:${o.sink.port}`,
        retry: { minimalBackoff: '1s', maximalBackoff: '2s', lifetime: '60s' },
      },
      ...o.config,
    },
  });
  return { serve, ports, webPort };
}

export interface Cluster {
  readonly nodes: ClusterNode[];
  readonly haproxy: HaproxyInstance;
  /** HAProxy's mx frontend. */
  readonly port: number;
  /** Waits until HAProxy's health checks see these servers (mx1, mx2 ...) in the wanted state. */
  waitServers(state: 'UP' | 'DOWN', servers: readonly string[], timeoutMs?: number): Promise<void>;
  /** Stops HAProxy, every node and every sink (not the database). Safe to call twice. */
  stop(): Promise<void>;
}

export interface ClusterOptions {
  readonly pgUrl: string;
  readonly nodes?: readonly string[];
  readonly leaseTime?: string;
  readonly sinkDelayMs?: number;
  readonly poolSize?: number;
  readonly config?: Record<string, unknown>;
}

/** Two (or more) nodes on one PostgreSQL behind HAProxy; migrates the database first. */
export async function startCluster(o: ClusterOptions): Promise<Cluster> {
  const names = o.nodes ?? ['node-a', 'node-b'];
  if (names.length !== 2) throw new Error('docs/cluster.md\'s configuration names two servers (mx1, mx2)');
  const nodes: ClusterNode[] = [];
  let haproxy: HaproxyInstance | null = null;
  const sinks: MailSink[] = [];
  const stop = async (): Promise<void> => {
    await haproxy?.stop();
    for (const n of nodes) {
      await n.serve.stop(5000);
      await n.serve.cleanup();
    }
    for (const s of sinks) await s.close();
  };
  try {
    await migrateUrl(o.pgUrl);
    for (const name of names) {
      const sink = await startMailSink(name, { delayMs: o.sinkDelayMs ?? 0 });
      sinks.push(sink);
      const { serve, ports, webPort } = await startNode({
        name, pgUrl: o.pgUrl, sink, leaseTime: o.leaseTime ?? '3s',
        ...(o.poolSize !== undefined ? { poolSize: o.poolSize } : {}), ...(o.config !== undefined ? { config: o.config } : {}),
      });
      nodes.push({ name, serve, sink, ports, webPort });
    }
    const front = { mx: await freePort(), submission: await freePort() };
    const config = substitute(docsHaproxyConfig(), [
      ['bind :25\n', `bind 127.0.0.1:${front.mx}\n`],
      ['bind :587\n', `bind 127.0.0.1:${front.submission}\n`],
      // Both nodes on 127.0.0.1: each server line gets its node's web port for the check (overrides 8025).
      ['192.0.2.11:25\n', `127.0.0.1:${nodes[0]!.ports.mx} port ${nodes[0]!.webPort}\n`],
      ['192.0.2.12:25\n', `127.0.0.1:${nodes[1]!.ports.mx} port ${nodes[1]!.webPort}\n`],
      ['192.0.2.11:587\n', `127.0.0.1:${nodes[0]!.ports.submission} port ${nodes[0]!.webPort}\n`],
      ['192.0.2.12:587\n', `127.0.0.1:${nodes[1]!.ports.submission} port ${nodes[1]!.webPort}\n`],
    ]);
    haproxy = await startHaproxy({ config: `global\n    maxconn 4096\n\n${config}`, waitFor: [front.mx, front.submission] });
    const hap = haproxy;
    const waitServers = async (state: 'UP' | 'DOWN', servers: readonly string[], timeoutMs = 20_000): Promise<void> => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const stats = await hap.stats();
        const ok = servers.every((s) => stats.some((x) => x.proxy === 'relayguard_mx' && x.server === s && x.status.startsWith(state)));
        if (ok) return;
        if (Date.now() > deadline) throw new Error(`servers ${servers.join(', ')} not ${state}: ${JSON.stringify(stats)}\n${hap.output()}`);
        await sleep(100);
      }
    };
    await waitServers('UP', ['mx1', 'mx2']);
    return { nodes, haproxy: hap, port: front.mx, waitServers, stop };
  } catch (err) {
    await stop().catch(() => undefined);
    throw err;
  }
}

export interface SendResult {
  readonly messageId: string;
  /** The reply to the final dot, or null when the session broke before one came. */
  readonly code: number | null;
  readonly enhanced: string | null;
  readonly text: string;
  readonly at: number;
}

export interface LoadResult {
  readonly results: SendResult[];
  /** Connections that failed before the greeting and EHLO. */
  readonly refused: number;
}

export interface LoadOptions {
  readonly port: number;
  /** Parallel sessions. */
  readonly sessions: number;
  /**
   * Messages per connection before a new one (new connections spread over the nodes). Default 20: docs/cluster.md's
   * HAProxy stick table drops a client opening more than 300 connections per 10 s.
   */
  readonly perConnection?: number;
  /** Message-ID prefix (unique per run). */
  readonly prefix: string;
  /** Stop starting new messages when this returns true. */
  readonly stop: () => boolean;
  readonly from?: string;
  readonly rcptDomain?: string;
  /** Reply timeout per command, ms. Default 15000. */
  readonly replyTimeoutMs?: number;
}

/**
 * Sends messages from TRUSTED (relayed to rcptDomain, default remote.example) until stop(); each with a unique
 * Message-ID; records the reply to each final dot (null when the session broke first). A message whose MAIL or
 * RCPT is refused is recorded with that reply's code.
 */
export async function runLoad(o: LoadOptions): Promise<LoadResult> {
  const results: SendResult[] = [];
  let refused = 0;
  let seq = 0;
  const per = o.perConnection ?? 20;
  const timeout = o.replyTimeoutMs ?? 15_000;
  const loop = async (): Promise<void> => {
    while (!o.stop()) {
      let c;
      try {
        c = await p1(o.port, { localAddress: o.from ?? TRUSTED, helo: 'load.trusted.example' });
      } catch {
        // Refused or reset before the greeting (a node going down, HAProxy's per-client limits): counted.
        refused++;
        await sleep(50);
        continue;
      }
      try {
        for (let i = 0; i < per && !o.stop(); i++) {
          const messageId = `<${o.prefix}-${seq++}@load.trusted.example>`;
          let dotSent = false;
          try {
            const mail = await c.cmd('MAIL FROM:<load@trusted.example>', timeout);
            if (mail.code !== 250) { results.push({ messageId, code: mail.code, enhanced: mail.enhanced, text: mail.text, at: Date.now() }); break; }
            const rcpt = await c.cmd(`RCPT TO:<r${seq}@${o.rcptDomain ?? 'remote.example'}>`, timeout);
            if (rcpt.code !== 250) { results.push({ messageId, code: rcpt.code, enhanced: rcpt.enhanced, text: rcpt.text, at: Date.now() }); await c.cmd('RSET', timeout); continue; }
            const data = await c.cmd('DATA', timeout);
            if (data.code !== 354) { results.push({ messageId, code: data.code, enhanced: data.enhanced, text: data.text, at: Date.now() }); break; }
            dotSent = true;
            const end = await c.cmd(`From: <load@trusted.example>\r\nTo: <r@remote.example>\r\nMessage-ID: ${messageId}\r\nSubject: load\r\n\r\nbody of ${messageId}\r\n.`, timeout);
            results.push({ messageId, code: end.code, enhanced: end.enhanced, text: end.text, at: Date.now() });
            if (end.code !== 250 && end.code !== 451) break;
          } catch {
            // The session broke (a node killed): the message got no reply; a new connection goes on.
            if (dotSent) results.push({ messageId, code: null, enhanced: null, text: 'session broke', at: Date.now() });
            break;
          }
        }
        c.write('QUIT\r\n');
      } finally {
        c.close();
      }
    }
  };
  await Promise.all(Array.from({ length: o.sessions }, loop));
  return { results, refused };
}

/** Message-IDs and how often each arrived, over all sinks. */
export function arrivals(sinks: readonly MailSink[]): Map<string, number> {
  const count = new Map<string, number>();
  for (const s of sinks) for (const m of s.messages) count.set(m.messageId, (count.get(m.messageId) ?? 0) + 1);
  return count;
}
