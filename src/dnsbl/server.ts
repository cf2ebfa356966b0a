/**
 * The ORDB DNS server: one authoritative zone over UDP and TCP on the same port (RFC 1035, RFC 7766), zone
 * transfers (AXFR, RFC 5936) over TCP to configured client networks, and NOTIFY (RFC 1996) to configured
 * secondaries when the zone's serial changes. The answers themselves come from wire.ts + zone.ts.
 *
 * Limits: UDP answers fit the client's EDNS size (capped at `ednsUdpSize`, 512 without EDNS) or come back with
 * TC set; TCP connections are capped in number, idle time and unanswered output; malformed messages get
 * FORMERR (12 bytes, never more than the query) or nothing.
 */
import { createSocket, type RemoteInfo, type Socket as UdpSocket } from 'node:dgram';
import { once } from 'node:events';
import { createServer, isIPv6, type Server as TcpServer, type Socket } from 'node:net';
import dnsPacket from 'dns-packet';
import ipaddr from 'ipaddr.js';
import { NULL_LOGGER, type Logger } from '../core/log.ts';
import type { Zone } from './zone.ts';
import { axfrMessages, FLAG_AA, OPCODE_NOTIFY, RCODE_REFUSED, respond, type Query } from './wire.ts';

export interface NotifyTarget {
  readonly address: string;
  readonly port?: number | undefined;
}

export interface DnsblServerOptions {
  readonly zone: Zone;
  /** Listen address, default 127.0.0.1. */
  readonly address?: string | undefined;
  /** UDP and TCP port, default 5353; 0 picks a free port (the same for both). */
  readonly port?: number | undefined;
  /** Largest UDP answer for EDNS clients, 512..4096, default 1232. */
  readonly ednsUdpSize?: number | undefined;
  /** Networks (CIDR or addresses) allowed to transfer the zone over TCP. Default: none. */
  readonly axfrAllow?: readonly string[] | undefined;
  /** Secondaries to NOTIFY when the serial changes. */
  readonly notify?: readonly NotifyTarget[] | undefined;
  /** NOTIFY attempts per secondary (default 5) and the first wait for an answer (default 2000 ms, doubling). */
  readonly notifyAttempts?: number | undefined;
  readonly notifyTimeoutMs?: number | undefined;
  /** TCP: idle timeout (default 10 s), open connections (default 128), unread output before pausing (256 KiB). */
  readonly tcpIdleTimeoutMs?: number | undefined;
  readonly maxTcpConnections?: number | undefined;
  readonly maxTcpOutput?: number | undefined;
  readonly logger?: Logger | undefined;
}

export interface DnsblServerStats {
  udpQueries: number;
  tcpQueries: number;
  answered: number;
  dropped: number;
  formerr: number;
  nxdomain: number;
  refused: number;
  truncated: number;
  transfers: number;
  tcpRejected: number;
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
  readonly #axfrAllow: Array<[ipaddr.IPv4 | ipaddr.IPv6, number]>;
  #udp: UdpSocket | null = null;
  #tcp: TcpServer | null = null;
  readonly #conns = new Set<Socket>();
  #port = 0;
  #notifyGeneration = 0;
  #notifying: Promise<NotifyResult[]> | null = null;
  readonly stats: DnsblServerStats = {
    udpQueries: 0, tcpQueries: 0, answered: 0, dropped: 0, formerr: 0, nxdomain: 0, refused: 0, truncated: 0,
    transfers: 0, tcpRejected: 0,
  };

  constructor(options: DnsblServerOptions) {
    this.#opts = options;
    this.#zone = options.zone;
    this.#log = options.logger ?? NULL_LOGGER;
    const size = options.ednsUdpSize ?? 1232;
    if (!Number.isInteger(size) || size < 512 || size > 4096) throw new RangeError(`ednsUdpSize ${size} not in 512..4096`);
    this.#ednsUdpSize = size;
    this.#axfrAllow = (options.axfrAllow ?? []).map((c) => (c.includes('/') ? ipaddr.parseCIDR(c) : (() => {
      const a = ipaddr.parse(c);
      return [a, a.kind() === 'ipv4' ? 32 : 128] as [ipaddr.IPv4 | ipaddr.IPv6, number];
    })()));
  }

  get zone(): Zone {
    return this.#zone;
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
    const want = this.#opts.port ?? 5353;
    for (let attempt = 0; ; attempt++) {
      const udp = createSocket({ type: isIPv6(address) ? 'udp6' : 'udp4' });
      try {
        await new Promise<void>((resolve, reject) => {
          udp.once('error', reject);
          udp.bind({ address, port: want, exclusive: true }, () => {
            udp.off('error', reject);
            resolve();
          });
        });
        const port = udp.address().port;
        const tcp = createServer({ noDelay: true }, (s) => this.#onTcp(s));
        await new Promise<void>((resolve, reject) => {
          tcp.once('error', reject);
          tcp.listen({ host: address, port, exclusive: true }, () => {
            tcp.off('error', reject);
            resolve();
          });
        });
        udp.on('error', (err) => this.#log.warn('dnsbl udp error', { error: err.message }));
        udp.on('message', (msg, rinfo) => this.#onUdp(msg, rinfo));
        tcp.on('error', (err) => this.#log.warn('dnsbl tcp error', { error: err.message }));
        this.#udp = udp;
        this.#tcp = tcp;
        this.#port = port;
        this.#log.info('dnsbl listening', { address, port, zone: this.#zone.apex, serial: this.#zone.serial });
        return;
      } catch (err) {
        udp.close();
        // With an ephemeral port, TCP may find that port taken: try another.
        if (want === 0 && (err as NodeJS.ErrnoException).code === 'EADDRINUSE' && attempt < 20) continue;
        throw err;
      }
    }
  }

  async stop(): Promise<void> {
    this.#notifyGeneration++;
    const udp = this.#udp;
    const tcp = this.#tcp;
    this.#udp = null;
    this.#tcp = null;
    for (const s of this.#conns) s.destroy();
    this.#conns.clear();
    await Promise.all([
      udp ? new Promise<void>((r) => udp.close(() => r())) : undefined,
      tcp ? new Promise<void>((r) => tcp.close(() => r())) : undefined,
    ]);
  }

  #count(rcode: number, truncated: boolean): void {
    this.stats.answered++;
    if (rcode === 1) this.stats.formerr++;
    else if (rcode === 3) this.stats.nxdomain++;
    else if (rcode === RCODE_REFUSED) this.stats.refused++;
    if (truncated) this.stats.truncated++;
  }

  #onUdp(msg: Buffer, rinfo: RemoteInfo): void {
    this.stats.udpQueries++;
    let r;
    try {
      r = respond(msg, this.#zone, { tcp: false, ednsUdpSize: this.#ednsUdpSize });
    } catch (err) {
      this.#log.error('dnsbl respond failed', { error: (err as Error).message });
      this.stats.dropped++;
      return;
    }
    if (r.kind !== 'reply') {
      // "xfr" over UDP can't happen (respond refuses it); "drop" is a response or a runt.
      this.stats.dropped++;
      return;
    }
    this.#count(r.rcode, r.truncated);
    this.#udp?.send(r.bytes, rinfo.port, rinfo.address, () => {});
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

  #onTcp(socket: Socket): void {
    const max = this.#opts.maxTcpConnections ?? 128;
    if (this.#conns.size >= max) {
      this.stats.tcpRejected++;
      socket.destroy();
      return;
    }
    this.#conns.add(socket);
    socket.setTimeout(this.#opts.tcpIdleTimeoutMs ?? 10_000, () => socket.destroy());
    socket.on('error', () => {});
    socket.on('close', () => this.#conns.delete(socket));
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
        return Promise.race([closed, drained]);
      }
      return true;
    };

    const pump = async (): Promise<void> => {
      if (busy) return;
      busy = true;
      socket.pause();
      try {
        while (pending.length >= 2 && !socket.destroyed) {
          const len = pending.readUInt16BE(0);
          if (len < 12) { socket.destroy(); return; } // nothing sensible is shorter than a header
          if (pending.length < 2 + len) break;
          const msg = Buffer.from(pending.subarray(2, 2 + len));
          pending = pending.subarray(2 + len);
          this.stats.tcpQueries++;
          const r = respond(msg, this.#zone, { tcp: true, ednsUdpSize: this.#ednsUdpSize, xfrAllowed });
          if (r.kind === 'drop') { this.stats.dropped++; continue; }
          if (r.kind === 'xfr') {
            if (!(await this.#transfer(msg, r.query, socket, write))) return;
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
      }
      if (!socket.destroyed) socket.resume();
    };

    socket.on('data', (chunk: Buffer) => {
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      if (pending.length > 2 + 65535 + 65536) { socket.destroy(); return; }
      void pump();
    });
  }

  async #transfer(msg: Buffer, q: Query, socket: Socket, write: (b: Buffer) => Promise<boolean>): Promise<boolean> {
    const zone = this.#zone;
    this.stats.transfers++;
    this.#log.info('dnsbl transfer', { client: socket.remoteAddress, serial: zone.serial });
    for (const m of axfrMessages(msg, q, zone)) {
      if (!(await write(m))) return false;
    }
    return true;
  }

  /** Sends NOTIFY for the current serial to every configured secondary; resolves when each acked or gave up. */
  async notify(): Promise<NotifyResult[]> {
    const targets = this.#opts.notify ?? [];
    if (targets.length === 0) return [];
    const generation = ++this.#notifyGeneration;
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
          const packet = dnsPacket.encode({
            type: 'query',
            id,
            flags: (OPCODE_NOTIFY << 11) | FLAG_AA,
            questions: [{ type: 'SOA', name: zone.apex, class: 'IN' }],
            answers: [{ type: 'SOA', name: zone.apex, ttl: zone.apexTtl, class: 'IN', data: { ...zone.soa } }],
          });
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
