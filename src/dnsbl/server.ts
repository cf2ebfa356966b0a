/**
 * The ORDB DNS server: one authoritative zone over UDP and TCP on the same port (RFC 1035, RFC 7766), zone
 * transfers (AXFR, RFC 5936) over TCP to configured client networks, and NOTIFY (RFC 1996) to configured
 * secondaries when the zone's serial changes. The answers themselves come from wire.ts + zone.ts.
 *
 * Limits: UDP answers fit the client's EDNS size (capped at `ednsUdpSize`, 512 without EDNS) or come back with
 * TC set; malformed messages get FORMERR (12 bytes, never more than the query) or nothing. TCP (RFC 7766 6.2.3
 * and 10): connections are capped in total and per client (an IPv4 address, or an IPv6 /64); a connection must
 * complete a query (or make write progress on an answer) within the idle timeout of opening or of its last
 * answer, so trickled bytes never extend it; every connection ends at the session deadline whatever it does
 * (after the answer in progress); when every slot is taken, a new client takes the slot of the connection that
 * made progress least recently (the oldest idle one), so slow clients cannot starve fast ones; unread output
 * pauses reading.
 *
 * UDP threads: with `udpThreads` N > 1 the main thread and N - 1 worker threads (server-worker.ts) each bind a
 * socket to the port with SO_REUSEPORT; the kernel spreads clients (by address and port) over the sockets, and
 * every thread answers from the same zone index (SharedArrayBuffers, no copies). TCP, AXFR and NOTIFY stay on
 * the main thread. A worker that dies is replaced after a second.
 */
import { createSocket, type RemoteInfo, type Socket as UdpSocket } from 'node:dgram';
import { once } from 'node:events';
import { createServer, isIPv6, type Server as TcpServer, type Socket } from 'node:net';
import { Worker } from 'node:worker_threads';
import ipaddr from 'ipaddr.js';
import { NULL_LOGGER, type Logger } from '../core/log.ts';
import type { Zone } from './zone.ts';
import { axfrMessages, FLAG_AA, ixfrMessages, OPCODE_NOTIFY, RCODE_REFUSED, respond, signedTransfer, TYPE_IXFR, type Query, type TsigSigner } from './wire.ts';
import type { ZoneDiff } from './journal.ts';
import { signMessage, type TsigKey } from './tsig.ts';
import {
  bindUdp, C_ANSWERED, C_DROPPED, C_FORMERR, C_NXDOMAIN, C_QUERIES, C_REFUSED, C_TRUNCATED, createUdpSocket, listenIp,
  sizeUdpBuffers, UDP_COUNTERS, UdpAnswerer,
} from './server-udp.ts';
import type { UdpWorkerData, UdpWorkerMessage } from './server-worker.ts';

/** The worker script next to this file (.ts when run from the sources, .js when built). */
const WORKER_URL = new URL(`./server-worker${import.meta.url.endsWith('.ts') ? '.ts' : '.js'}`, import.meta.url);
const MAX_UDP_THREADS = 64;

export interface NotifyTarget {
  readonly address: string;
  readonly port?: number | undefined;
  /** Name of the TSIG key (of `tsigKeys`) the NOTIFY is signed with. */
  readonly key?: string | undefined;
}

export interface DnsblServerOptions {
  readonly zone: Zone;
  /** Listen address, default 127.0.0.1. */
  readonly address?: string | undefined;
  /** UDP and TCP port, default 5353; 0 picks a free port (the same for both). */
  readonly port?: number | undefined;
  /** Largest UDP answer for EDNS clients, 512..4096, default 1232. */
  readonly ednsUdpSize?: number | undefined;
  /**
   * Threads answering UDP, 1..64, default 1 (the main thread alone). N > 1 adds N - 1 worker threads on the same
   * port (SO_REUSEPORT); each costs about 10 MB, the zone index is shared.
   */
  readonly udpThreads?: number | undefined;
  /** Networks (CIDR or addresses) allowed to transfer the zone over TCP. Default: none. */
  readonly axfrAllow?: readonly string[] | undefined;
  /**
   * The zone's change history (journal.ts ZoneJournal): an IXFR from a secondary whose serial it knows gets the
   * changes since; without it, or for a serial it does not know, IXFR sends the whole zone (RFC 1995 section 4).
   */
  readonly journal?: { since(serial: number, current: number): readonly ZoneDiff[] | null } | undefined;
  /**
   * TSIG keys (RFC 8945, hmac-sha256): signed queries are checked and answered signed, transfers are signed
   * message by message, NOTIFY to a target with a key is signed.
   */
  readonly tsigKeys?: readonly TsigKey[] | undefined;
  /** Transfers need a valid signature by one of tsigKeys as well as an allowed address. Default: true when keys are set. */
  readonly xfrRequireTsig?: boolean | undefined;
  /** Secondaries to NOTIFY when the serial changes. */
  readonly notify?: readonly NotifyTarget[] | undefined;
  /** NOTIFY attempts per secondary (default 5) and the first wait for an answer (default 2000 ms, doubling). */
  readonly notifyAttempts?: number | undefined;
  readonly notifyTimeoutMs?: number | undefined;
  /**
   * TCP: time a connection has to complete a query after it opened or after its last answer (default 10 s; bytes
   * of an unfinished query do not extend it), open connections in total (default 128) and per client (default 16),
   * the deadline of a whole connection (default 60 s; an answer being written is finished first), and unread
   * output before reading pauses (256 KiB).
   */
  readonly tcpIdleTimeoutMs?: number | undefined;
  readonly maxTcpConnections?: number | undefined;
  readonly maxTcpConnectionsPerClient?: number | undefined;
  readonly tcpSessionTimeoutMs?: number | undefined;
  readonly maxTcpOutput?: number | undefined;
  readonly logger?: Logger | undefined;
}

export interface DnsblServerStats {
  udpQueries: number;
  /** UDP queries per thread (index 0: the main thread), to see how the kernel spreads the clients. */
  udpQueriesByThread: number[];
  tcpQueries: number;
  answered: number;
  dropped: number;
  formerr: number;
  nxdomain: number;
  refused: number;
  truncated: number;
  transfers: number;
  /** TCP connections refused at once (the client's own cap, or every slot busy answering). */
  tcpRejected: number;
  /** Idle TCP connections closed to make room for a new client. */
  tcpEvicted: number;
  /** TCP connections closed by the idle timeout or the session deadline. */
  tcpTimedOut: number;
}

/** One open DNS-over-TCP connection. */
interface TcpConn {
  readonly socket: Socket;
  /** The client it counts against: an IPv4 address or an IPv6 /64. */
  readonly client: string;
  /** When it last made progress (opened, a complete query read, an answer written or drained). */
  progressAt: number;
  /** Answering (reading stopped until the answers are written). */
  busy: boolean;
  /** The session deadline passed while it was busy: close once the answer in progress is written. */
  expired: boolean;
  idleTimer: NodeJS.Timeout | null;
  sessionTimer: NodeJS.Timeout | null;
}

/** The key TCP connections are counted under per client: IPv4 alone (mapped IPv6 folded), IPv6 by its /64. */
export function tcpClientKey(address: string | undefined): string {
  if (address === undefined) return '';
  try {
    const a = ipaddr.process(address);
    if (a.kind() === 'ipv4') return a.toString();
    const bytes = a.toByteArray().slice(0, 8);
    return `${ipaddr.fromByteArray([...bytes, 0, 0, 0, 0, 0, 0, 0, 0]).toString()}/64`;
  } catch {
    return address;
  }
}

export interface NotifyResult {
  readonly target: string;
  readonly acknowledged: boolean;
  readonly attempts: number;
}

export class DnsblServer {
  #zone: Zone;
  readonly #opts: DnsblServerOptions;
  readonly #log: Logger;
  readonly #ednsUdpSize: number;
  readonly #udpThreads: number;
  readonly #axfrAllow: Array<[ipaddr.IPv4 | ipaddr.IPv6, number]>;
  readonly #tsigKeys: ReadonlyMap<string, TsigKey>;
  readonly #xfrNeedsTsig: boolean;
  #udp: UdpSocket | null = null;
  #answerer: UdpAnswerer | null = null;
  #tcp: TcpServer | null = null;
  readonly #conns = new Map<Socket, TcpConn>();
  /** Open TCP connections per client key. */
  readonly #perClient = new Map<string, number>();
  #port = 0;
  #ip = '';
  /** Worker threads by slot (slot 0 is the main thread's socket). */
  readonly #workers: Array<Worker | null> = [];
  #running = false;
  #notifyGeneration = 0;
  #notifying: Promise<NotifyResult[]> | null = null;
  /** UDP counters, UDP_COUNTERS per thread (slot 0: main thread), shared with the workers. */
  readonly #udpCounters: Float64Array;
  /** TCP counters (main thread only). */
  readonly #tcpStats = {
    queries: 0, answered: 0, dropped: 0, formerr: 0, nxdomain: 0, refused: 0, truncated: 0, transfers: 0, rejected: 0, evicted: 0, timedOut: 0,
  };
  readonly #tcpLimits: { idleMs: number; sessionMs: number; total: number; perClient: number };

  constructor(options: DnsblServerOptions) {
    this.#opts = options;
    this.#zone = options.zone;
    this.#log = options.logger ?? NULL_LOGGER;
    const size = options.ednsUdpSize ?? 1232;
    if (!Number.isInteger(size) || size < 512 || size > 4096) throw new RangeError(`ednsUdpSize ${size} not in 512..4096`);
    this.#ednsUdpSize = size;
    const threads = options.udpThreads ?? 1;
    if (!Number.isInteger(threads) || threads < 1 || threads > MAX_UDP_THREADS) throw new RangeError(`udpThreads ${threads} not in 1..${MAX_UDP_THREADS}`);
    this.#udpThreads = threads;
    this.#udpCounters = new Float64Array(new SharedArrayBuffer(threads * UDP_COUNTERS * 8));
    const positive = (v: number | undefined, fallback: number, name: string): number => {
      const n = v ?? fallback;
      if (!Number.isSafeInteger(n) || n < 1) throw new RangeError(`${name} must be a positive integer, got ${n}`);
      return n;
    };
    this.#tcpLimits = {
      idleMs: positive(options.tcpIdleTimeoutMs, 10_000, 'tcpIdleTimeoutMs'),
      sessionMs: positive(options.tcpSessionTimeoutMs, 60_000, 'tcpSessionTimeoutMs'),
      total: positive(options.maxTcpConnections, 128, 'maxTcpConnections'),
      perClient: positive(options.maxTcpConnectionsPerClient, 16, 'maxTcpConnectionsPerClient'),
    };
    this.#tsigKeys = new Map((options.tsigKeys ?? []).map((k) => [k.name, k]));
    this.#xfrNeedsTsig = options.xfrRequireTsig ?? this.#tsigKeys.size > 0;
    for (const t of options.notify ?? []) {
      if (t.key !== undefined && !this.#tsigKeys.has(t.key.toLowerCase())) throw new RangeError(`NOTIFY target ${t.address}: no TSIG key named ${t.key}`);
    }
    this.#axfrAllow = (options.axfrAllow ?? []).map((c) => (c.includes('/') ? ipaddr.parseCIDR(c) : (() => {
      const a = ipaddr.parse(c);
      return [a, a.kind() === 'ipv4' ? 32 : 128] as [ipaddr.IPv4 | ipaddr.IPv6, number];
    })()));
  }

  get zone(): Zone {
    return this.#zone;
  }

  /** Counters since start (a snapshot: UDP counters are summed over the threads). */
  get stats(): DnsblServerStats {
    const c = this.#udpCounters;
    const sum = (slot: number): number => {
      let n = 0;
      for (let i = slot; i < c.length; i += UDP_COUNTERS) n += c[i]!;
      return n;
    };
    const t = this.#tcpStats;
    return {
      udpQueries: sum(C_QUERIES),
      udpQueriesByThread: Array.from({ length: this.#udpThreads }, (_, i) => c[i * UDP_COUNTERS + C_QUERIES]!),
      tcpQueries: t.queries,
      answered: sum(C_ANSWERED) + t.answered,
      dropped: sum(C_DROPPED) + t.dropped,
      formerr: sum(C_FORMERR) + t.formerr,
      nxdomain: sum(C_NXDOMAIN) + t.nxdomain,
      refused: sum(C_REFUSED) + t.refused,
      truncated: sum(C_TRUNCATED) + t.truncated,
      transfers: t.transfers,
      tcpRejected: t.rejected,
      tcpEvicted: t.evicted,
      tcpTimedOut: t.timedOut,
    };
  }

  /** Threads answering UDP (the main thread included) right now. */
  get udpThreads(): number {
    return (this.#udp ? 1 : 0) + this.#workers.filter((w) => w !== null).length;
  }

  get port(): number {
    return this.#port;
  }

  get address(): string {
    return this.#opts.address ?? '127.0.0.1';
  }

  /** Replaces the zone (answers switch at once); NOTIFYs the secondaries when the serial changed. */
  setZone(zone: Zone): void {
    const old = this.#zone;
    this.#zone = zone;
    if (this.#answerer) this.#answerer.zone = zone;
    if (this.#workers.some((w) => w !== null)) {
      const shared = zone.toShared();
      for (const w of this.#workers) w?.postMessage({ type: 'zone', zone: shared });
    }
    if (old.serial !== zone.serial && (this.#opts.notify?.length ?? 0) > 0 && this.#udp) {
      this.#notifying = this.notify();
      this.#notifying.catch(() => {});
    }
  }

  /** The NOTIFY round started by the last setZone, if any (tests wait on it). */
  get notifying(): Promise<NotifyResult[]> | null {
    return this.#notifying;
  }

  async start(): Promise<void> {
    const address = this.address;
    const ip = await listenIp(address);
    const want = this.#opts.port ?? 5353;
    // SO_REUSEPORT only with worker threads: else a second server on the port fails as before.
    const reusePort = this.#udpThreads > 1;
    for (let attempt = 0; ; attempt++) {
      let port = want;
      if (want === 0 && reusePort) {
        // Port 0 with SO_REUSEPORT could join another reuseport group of this user: take a port nobody holds.
        const probe = createUdpSocket(ip, false);
        await bindUdp(probe, ip, 0);
        port = probe.address().port;
        await new Promise<void>((r) => probe.close(() => r()));
      }
      const udp = createUdpSocket(ip, reusePort);
      let tcp: TcpServer | null = null;
      try {
        await bindUdp(udp, ip, port);
        port = udp.address().port;
        const server = createServer({ noDelay: true }, (s) => this.#onTcp(s));
        tcp = server;
        await new Promise<void>((resolve, reject) => {
          server.once('error', reject);
          server.listen({ host: address, port, exclusive: true }, () => {
            server.off('error', reject);
            resolve();
          });
        });
      } catch (err) {
        udp.close();
        if (tcp?.listening) tcp.close();
        // With an ephemeral port, TCP may find that port taken: try another.
        if (want === 0 && (err as NodeJS.ErrnoException).code === 'EADDRINUSE' && attempt < 20) continue;
        throw err;
      }
      udp.on('error', (err) => this.#log.warn('dnsbl udp error', { error: err.message }));
      sizeUdpBuffers(udp);
      const answerer = new UdpAnswerer(udp, this.#zone, this.#ednsUdpSize, this.#udpCounters.subarray(0, UDP_COUNTERS),
        (message) => this.#log.error('dnsbl respond failed', { error: message }), this.#tsigKeys);
      udp.on('message', answerer.onMessage);
      tcp.on('error', (err) => this.#log.warn('dnsbl tcp error', { error: err.message }));
      this.#udp = udp;
      this.#answerer = answerer;
      this.#tcp = tcp;
      this.#port = port;
      this.#ip = ip;
      this.#running = true;
      try {
        await Promise.all(Array.from({ length: this.#udpThreads - 1 }, (_, i) => this.#startWorker(i + 1)));
      } catch (err) {
        await this.stop();
        throw err;
      }
      this.#log.info('dnsbl listening', { address, port, zone: this.#zone.apex, serial: this.#zone.serial, udpThreads: this.#udpThreads });
      return;
    }
  }

  async stop(): Promise<void> {
    this.#notifyGeneration++;
    this.#running = false;
    const udp = this.#udp;
    const tcp = this.#tcp;
    const workers = this.#workers.splice(0);
    this.#udp = null;
    this.#answerer = null;
    this.#tcp = null;
    for (const c of [...this.#conns.values()]) this.#closeConn(c);
    await Promise.all([
      ...workers.map((w) => w?.terminate()),
      udp ? new Promise<void>((r) => udp.close(() => r())) : undefined,
      tcp ? new Promise<void>((r) => tcp.close(() => r())) : undefined,
    ]);
  }

  /** Starts the UDP worker of a slot (1..udpThreads-1); resolves when its socket is bound. */
  #startWorker(slot: number): Promise<void> {
    const data: UdpWorkerData = {
      ip: this.#ip,
      port: this.#port,
      ednsUdpSize: this.#ednsUdpSize,
      counters: this.#udpCounters.subarray(slot * UDP_COUNTERS, (slot + 1) * UDP_COUNTERS),
      zone: this.#zone.toShared(),
      tsigKeys: [...this.#tsigKeys.values()].map((k) => ({ name: k.name, algorithm: k.algorithm, secret: new Uint8Array(k.secret) })),
    };
    // A worker's heap holds little but each datagram's garbage: a small young generation keeps its RSS down
    // (about 10 MB less than V8's default under load) and scavenging dead datagrams stays cheap.
    const worker = new Worker(WORKER_URL, { workerData: data, name: `dnsbl-udp-${slot}`, resourceLimits: { maxYoungGenerationSizeMb: 4 } });
    this.#workers[slot] = worker;
    return new Promise<void>((resolve, reject) => {
      let ready = false;
      worker.on('message', (m: UdpWorkerMessage) => {
        if (m.type === 'ready') { ready = true; resolve(); }
        else if (m.type === 'error') reject(Object.assign(new Error(`dnsbl udp worker: ${m.message}`), { code: m.code }));
        else if (m.type === 'log') this.#log[m.level](m.message, { worker: slot });
      });
      worker.on('error', (err) => {
        this.#log.error('dnsbl udp worker failed', { worker: slot, error: err.message });
        if (!ready) reject(err);
      });
      worker.on('exit', (code) => {
        if (this.#workers[slot] !== worker) return; // stopped, or already replaced
        this.#workers[slot] = null;
        if (!ready) { reject(new Error(`dnsbl udp worker exited (${code})`)); return; }
        if (!this.#running) return;
        this.#log.warn('dnsbl udp worker exited, restarting it in 1 s', { worker: slot, code });
        setTimeout(() => {
          if (this.#running && this.#workers[slot] === null) {
            this.#startWorker(slot).catch((err: Error) => this.#log.error('dnsbl udp worker restart failed', { worker: slot, error: err.message }));
          }
        }, 1000).unref();
      });
    });
  }

  #count(rcode: number, truncated: boolean): void {
    const t = this.#tcpStats;
    t.answered++;
    if (rcode === 1) t.formerr++;
    else if (rcode === 3) t.nxdomain++;
    else if (rcode === RCODE_REFUSED) t.refused++;
    if (truncated) t.truncated++;
  }

  #xfrAllowed(remote: string | undefined): boolean {
    if (!remote || this.#axfrAllow.length === 0) return false;
    let a: ipaddr.IPv4 | ipaddr.IPv6;
    try {
      a = ipaddr.process(remote);
    } catch {
      return false;
    }
    return this.#axfrAllow.some(([net, len]) => a.kind() === net.kind() && a.match(net, len));
  }

  /** Open TCP connections (all clients). */
  get tcpConnections(): number {
    return this.#conns.size;
  }

  /** Forgets a connection (once) and destroys its socket. */
  #closeConn(c: TcpConn): void {
    if (c.idleTimer) { clearTimeout(c.idleTimer); c.idleTimer = null; }
    if (c.sessionTimer) { clearTimeout(c.sessionTimer); c.sessionTimer = null; }
    if (this.#conns.get(c.socket) === c) {
      this.#conns.delete(c.socket);
      const n = (this.#perClient.get(c.client) ?? 1) - 1;
      if (n <= 0) this.#perClient.delete(c.client);
      else this.#perClient.set(c.client, n);
    }
    c.socket.destroy();
  }

  /** The connection that made progress least recently among those not answering, or null when all are busy. */
  #oldestIdle(): TcpConn | null {
    let oldest: TcpConn | null = null;
    for (const c of this.#conns.values()) {
      if (!c.busy && (oldest === null || c.progressAt < oldest.progressAt)) oldest = c;
    }
    return oldest;
  }

  /** A connection made progress: the idle timer starts again (bytes of an unfinished query are not progress). */
  #progress(c: TcpConn): void {
    c.progressAt = performance.now();
    c.idleTimer?.refresh();
  }

  #onTcp(socket: Socket): void {
    socket.on('error', () => {});
    const limits = this.#tcpLimits;
    const client = tcpClientKey(socket.remoteAddress);
    if ((this.#perClient.get(client) ?? 0) >= limits.perClient) {
      this.#tcpStats.rejected++;
      socket.destroy();
      return;
    }
    if (this.#conns.size >= limits.total) {
      const victim = this.#oldestIdle();
      if (victim === null) {
        this.#tcpStats.rejected++;
        socket.destroy();
        return;
      }
      this.#tcpStats.evicted++;
      this.#closeConn(victim);
    }
    const conn: TcpConn = { socket, client, progressAt: performance.now(), busy: false, expired: false, idleTimer: null, sessionTimer: null };
    this.#conns.set(socket, conn);
    this.#perClient.set(client, (this.#perClient.get(client) ?? 0) + 1);
    conn.idleTimer = setTimeout(() => {
      this.#tcpStats.timedOut++;
      this.#closeConn(conn);
    }, limits.idleMs);
    conn.sessionTimer = setTimeout(() => {
      conn.sessionTimer = null;
      if (conn.busy) { conn.expired = true; return; }
      this.#tcpStats.timedOut++;
      this.#closeConn(conn);
    }, limits.sessionMs);
    socket.on('close', () => this.#closeConn(conn));
    const maxOutput = this.#opts.maxTcpOutput ?? 256 * 1024;
    const xfrAllowed = this.#xfrAllowed(socket.remoteAddress);
    let pending: Buffer = Buffer.alloc(0);
    let busy = false;

    const write = async (payload: Buffer): Promise<boolean> => {
      const frame = Buffer.allocUnsafe(payload.length + 2);
      frame.writeUInt16BE(payload.length, 0);
      payload.copy(frame, 2);
      if (socket.destroyed) return false;
      if (!socket.write(frame) || socket.writableLength > maxOutput) {
        const closed = once(socket, 'close').then(() => false);
        const drained = once(socket, 'drain').then(() => true);
        const ok = await Promise.race([closed, drained]);
        if (ok) this.#progress(conn);
        return ok;
      }
      this.#progress(conn);
      return true;
    };

    const pump = async (): Promise<void> => {
      if (busy) return;
      busy = true;
      conn.busy = true;
      socket.pause();
      try {
        while (pending.length >= 2 && !socket.destroyed) {
          const len = pending.readUInt16BE(0);
          if (len < 12) { socket.destroy(); return; } // nothing sensible is shorter than a header
          if (pending.length < 2 + len) break;
          const msg = Buffer.from(pending.subarray(2, 2 + len));
          pending = pending.subarray(2 + len);
          this.#progress(conn);
          this.#tcpStats.queries++;
          const r = respond(msg, this.#zone, { tcp: true, ednsUdpSize: this.#ednsUdpSize, xfrAllowed, tsigKeys: this.#tsigKeys, xfrNeedsTsig: this.#xfrNeedsTsig });
          if (r.kind === 'drop') { this.#tcpStats.dropped++; continue; }
          if (r.kind === 'xfr') {
            if (!(await this.#transfer(msg, r.query, socket, write, r.tsig))) return;
            continue;
          }
          this.#count(r.rcode, r.truncated);
          if (!(await write(r.bytes))) return;
        }
      } catch (err) {
        this.#log.error('dnsbl tcp failed', { error: (err as Error).message });
        socket.destroy();
        return;
      } finally {
        busy = false;
        conn.busy = false;
      }
      if (conn.expired) {
        this.#tcpStats.timedOut++;
        this.#closeConn(conn);
        return;
      }
      if (!socket.destroyed) socket.resume();
    };

    socket.on('data', (chunk: Buffer) => {
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      if (pending.length > 2 + 65535 + 65536) { socket.destroy(); return; }
      void pump();
    });
  }

  async #transfer(msg: Buffer, q: Query, socket: Socket, write: (b: Buffer) => Promise<boolean>, tsig?: TsigSigner): Promise<boolean> {
    const zone = this.#zone;
    this.#tcpStats.transfers++;
    const diffs = q.qtype === TYPE_IXFR && q.ixfrSerial != null ? this.#opts.journal?.since(q.ixfrSerial, zone.serial) ?? null : null;
    this.#log.info('dnsbl transfer', {
      client: socket.remoteAddress, serial: zone.serial, kind: diffs !== null ? 'ixfr' : q.qtype === TYPE_IXFR ? 'ixfr-as-axfr' : 'axfr',
      ...(q.ixfrSerial != null ? { client_serial: q.ixfrSerial } : {}), ...(diffs !== null ? { changes: diffs.length } : {}),
      ...(tsig ? { tsig_key: tsig.key.name } : {}),
    });
    // Streamed: one message at a time, the next built only after the last one was written (bounded memory).
    const messages = diffs !== null ? ixfrMessages(msg, q, zone, diffs) : axfrMessages(msg, q, zone);
    for (const m of tsig ? signedTransfer(messages, tsig, () => Math.floor(Date.now() / 1000)) : messages) {
      if (!(await write(m))) return false;
    }
    return true;
  }

  /** Sends NOTIFY for the current serial to every configured secondary; resolves when each acked or gave up. */
  async notify(): Promise<NotifyResult[]> {
    const targets = this.#opts.notify ?? [];
    if (targets.length === 0) return [];
    const generation = ++this.#notifyGeneration;
    // dns-packet only for NOTIFY: a server without secondaries never loads it (1.6 MB of RSS, bench:dnsbl).
    const { default: dnsPacket } = await import('dns-packet');
    if (generation !== this.#notifyGeneration) return targets.map((t) => ({ target: `${t.address}:${t.port ?? 53}`, acknowledged: false, attempts: 0 }));
    const zone = this.#zone;
    const attempts = this.#opts.notifyAttempts ?? 5;
    const firstWait = this.#opts.notifyTimeoutMs ?? 2000;
    const results = await Promise.all(targets.map(async (t): Promise<NotifyResult> => {
      const port = t.port ?? 53;
      const label = `${t.address}:${port}`;
      const sock = createSocket({ type: isIPv6(t.address) ? 'udp6' : 'udp4' });
      sock.on('error', () => {});
      try {
        for (let i = 1; i <= attempts; i++) {
          if (generation !== this.#notifyGeneration) return { target: label, acknowledged: false, attempts: i - 1 };
          const id = Math.floor(Math.random() * 65536);
          const unsigned = dnsPacket.encode({
            type: 'query',
            id,
            flags: (OPCODE_NOTIFY << 11) | FLAG_AA,
            questions: [{ type: 'SOA', name: zone.apex, class: 'IN' }],
            answers: [{ type: 'SOA', name: zone.apex, ttl: zone.apexTtl, class: 'IN', data: { ...zone.soa } }],
          });
          const key = t.key !== undefined ? this.#tsigKeys.get(t.key.toLowerCase()) : undefined;
          const packet = key ? signMessage(unsigned, key, { nowSeconds: Math.floor(Date.now() / 1000) }).bytes : unsigned;
          const acked = new Promise<boolean>((resolve) => {
            const timer = setTimeout(() => { sock.off('message', onMessage); resolve(false); }, firstWait * 2 ** (i - 1));
            const onMessage = (m: Buffer, r: RemoteInfo): void => {
              if (r.port !== port) return;
              try {
                const d = dnsPacket.decode(m);
                if (d.id !== id || d.type !== 'response' || ((d.flags ?? 0) >> 11 & 0xf) !== OPCODE_NOTIFY) return;
              } catch {
                return;
              }
              clearTimeout(timer);
              sock.off('message', onMessage);
              resolve(true);
            };
            sock.on('message', onMessage);
          });
          sock.send(packet, port, t.address);
          if (await acked) {
            this.#log.info('dnsbl notify acknowledged', { target: label, serial: zone.serial, attempts: i });
            return { target: label, acknowledged: true, attempts: i };
          }
        }
        this.#log.warn('dnsbl notify not acknowledged', { target: label, serial: zone.serial, attempts });
        return { target: label, acknowledged: false, attempts };
      } finally {
        sock.close();
      }
    }));
    return results;
  }
}
