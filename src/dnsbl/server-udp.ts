/**
 * The UDP side of the DNSBL server, shared by the main thread and the UDP worker threads (server-worker.ts):
 * a socket whose sends skip the name lookup, and the per-datagram handler (respondFast for the common query,
 * respond() for everything else) with its counters in a Float64Array that the main thread sums.
 *
 * Per datagram, Node itself allocates the message Buffer and the rinfo object and runs one callback; on the fast
 * path the handler writes the reply into one reused buffer and sends a view of it. Sends carry no callback, so
 * Node tries a synchronous sendmsg first; only when that could not finish (the socket's send buffer full) does
 * Node queue the reply, still pointing into the buffer: then the answerer takes a fresh buffer for the next
 * replies (getSendQueueCount() tells), so a queued reply is never overwritten.
 *
 * Where the time of a query goes (bench:dnsbl zone, perf on the server under dnsperf, 1 thread): ~60 % is the
 * kernel (sendmsg ~45 %, which on loopback also delivers the reply to the client; recvmsg ~11 %; being switched
 * out ~5 %), ~30 % Node's per-datagram machinery (libuv's callback into JS, the rinfo object and its address
 * string ~6 %, the message Buffer ~2 %, dgram's send path and its request object), ~8 % respondFast with the
 * index lookup, ~1 % respond() for the rest. rbldnsd pays about the kernel's part alone: per CPU second it answers
 * about twice as many queries. Socket buffers, the reused reply buffer and respondFast's IPv6 names are what
 * the profile left to this side.
 */
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { lookup } from 'node:dns/promises';
import { isIP, isIPv6 } from 'node:net';
import type { Zone } from './zone.ts';
import { FAST_OUT_BYTES, RCODE_FORMERR, RCODE_NXDOMAIN, RCODE_REFUSED, respond, respondFast, type RespondContext } from './wire.ts';
import type { TsigKey } from './tsig.ts';

/** Slots of a thread's UDP counters. */
export const C_QUERIES = 0;
export const C_ANSWERED = 1;
export const C_DROPPED = 2;
export const C_FORMERR = 3;
export const C_NXDOMAIN = 4;
export const C_REFUSED = 5;
export const C_TRUNCATED = 6;
/** Counter slots per thread. */
export const UDP_COUNTERS = 8;

/** The listen address as an IP literal (a host name is resolved once, as dgram would have for udp4/udp6). */
export async function listenIp(address: string): Promise<string> {
  if (isIP(address) !== 0) return address;
  return (await lookup(address, { family: isIPv6(address) ? 6 : 4 })).address;
}

/**
 * A UDP socket for an IP-literal listen address. dgram resolves every send's destination with dns.lookup
 * semantics (a nextTick even for literals); replies always go to the literal address a query came from, so the
 * socket's lookup hands it back at once.
 */
export function createUdpSocket(ip: string, reusePort: boolean): Socket {
  const family = isIPv6(ip) ? 6 : 4;
  return createSocket({
    type: family === 6 ? 'udp6' : 'udp4',
    reusePort,
    lookup: (address: string, _options: unknown, callback: (err: NodeJS.ErrnoException | null, address: string, family: number) => void): void => {
      callback(null, address, family);
    },
  });
}

/**
 * Socket buffer sizes asked for a UDP answering socket. A burst of queries larger than the default receive buffer
 * (rmem_default, 208 KiB on Linux) is dropped by the kernel, and every dropped query costs its client a timeout;
 * the kernel caps the request at net.core.rmem_max / wmem_max. Kernel memory, not the process's.
 */
export const UDP_RECV_BUFFER = 4 * 1024 * 1024;
export const UDP_SEND_BUFFER = 1024 * 1024;

/** Asks for larger socket buffers on a bound socket (best effort: the kernel caps them, an error is ignored). */
export function sizeUdpBuffers(socket: Socket): void {
  try { socket.setRecvBufferSize(UDP_RECV_BUFFER); } catch { /* capped or refused: the default stays */ }
  try { socket.setSendBufferSize(UDP_SEND_BUFFER); } catch { /* idem */ }
}

/** Binds a socket; rejects with the bind error. */
export function bindUdp(socket: Socket, ip: string, port: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind({ address: ip, port, exclusive: true }, () => {
      socket.off('error', reject);
      resolve();
    });
  });
}

/** Answers the datagrams of one socket. */
export class UdpAnswerer {
  zone: Zone;
  readonly #socket: Socket;
  readonly #c: Float64Array;
  readonly #ctx: RespondContext;
  readonly #edns: number;
  readonly #onError: (message: string) => void;
  /** The fast path's reply buffer, reused while every send completes at once. */
  #out = Buffer.allocUnsafeSlow(FAST_OUT_BYTES);
  /** Replies whose send was queued (a fresh reply buffer was taken after each). */
  queuedSends = 0;

  constructor(socket: Socket, zone: Zone, ednsUdpSize: number, counters: Float64Array, onError: (message: string) => void, tsigKeys?: ReadonlyMap<string, TsigKey>) {
    this.#socket = socket;
    this.zone = zone;
    this.#c = counters;
    this.#edns = ednsUdpSize;
    this.#ctx = { tcp: false, ednsUdpSize, ...(tsigKeys && tsigKeys.size > 0 ? { tsigKeys } : {}) };
    this.#onError = onError;
  }

  /** The socket's 'message' listener. */
  readonly onMessage = (msg: Buffer, rinfo: RemoteInfo): void => {
    const c = this.#c;
    c[C_QUERIES]!++;
    const out = this.#out;
    let n: number;
    try {
      n = respondFast(msg, this.zone, this.#edns, out);
    } catch (err) {
      this.#failed(err);
      return;
    }
    if (n > 0) {
      // The fast path answers NOERROR or NXDOMAIN, never with TC.
      const socket = this.#socket;
      socket.send(out, 0, n, rinfo.port, rinfo.address);
      // Sent at once unless Node had to queue it (send buffer full): a queued reply keeps pointing into `out`.
      if (socket.getSendQueueCount() !== 0) {
        this.#out = Buffer.allocUnsafeSlow(FAST_OUT_BYTES);
        this.queuedSends++;
      }
      c[C_ANSWERED]!++;
      if ((out[3]! & 0xf) === RCODE_NXDOMAIN) c[C_NXDOMAIN]!++;
      return;
    }
    let r: ReturnType<typeof respond>;
    try {
      r = respond(msg, this.zone, this.#ctx);
    } catch (err) {
      this.#failed(err);
      return;
    }
    if (r.kind !== 'reply') {
      // "xfr" over UDP can't happen (respond refuses it); "drop" is a response or a runt.
      c[C_DROPPED]!++;
      return;
    }
    this.#socket.send(r.bytes, rinfo.port, rinfo.address);
    c[C_ANSWERED]!++;
    if (r.truncated) c[C_TRUNCATED]!++;
    if (r.rcode === RCODE_NXDOMAIN) c[C_NXDOMAIN]!++;
    else if (r.rcode === RCODE_FORMERR) c[C_FORMERR]!++;
    else if (r.rcode === RCODE_REFUSED) c[C_REFUSED]!++;
  };

  #failed(err: unknown): void {
    this.#onError((err as Error).message);
    this.#c[C_DROPPED]!++;
  }
}
