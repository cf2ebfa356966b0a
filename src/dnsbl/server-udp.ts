/**
 * The UDP side of the DNSBL server, shared by the main thread and the UDP worker threads (server-worker.ts):
 * a socket whose sends skip the name lookup, and the per-datagram handler (respondFast for the common query,
 * respond() for everything else) with its counters in a Float64Array that the main thread sums.
 *
 * Per datagram, Node itself allocates the message Buffer and the rinfo object and runs one callback; the handler
 * adds one reply Buffer (a slice of Node's pool) on the fast path and nothing else. Sends carry no callback, so
 * Node tries a synchronous sendmsg first instead of allocating a completion request for every reply.
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
  readonly #out = Buffer.allocUnsafe(FAST_OUT_BYTES);

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
    let bytes: Buffer;
    let rcode: number;
    try {
      const n = respondFast(msg, this.zone, this.#edns, this.#out);
      if (n > 0) {
        bytes = Buffer.allocUnsafe(n);
        this.#out.copy(bytes, 0, 0, n);
        rcode = this.#out[3]! & 0xf;
      } else {
        const r = respond(msg, this.zone, this.#ctx);
        if (r.kind !== 'reply') {
          // "xfr" over UDP can't happen (respond refuses it); "drop" is a response or a runt.
          c[C_DROPPED]!++;
          return;
        }
        bytes = r.bytes;
        rcode = r.rcode;
        if (r.truncated) c[C_TRUNCATED]!++;
      }
    } catch (err) {
      this.#onError((err as Error).message);
      c[C_DROPPED]!++;
      return;
    }
    c[C_ANSWERED]!++;
    if (rcode === RCODE_NXDOMAIN) c[C_NXDOMAIN]!++;
    else if (rcode === RCODE_FORMERR) c[C_FORMERR]!++;
    else if (rcode === RCODE_REFUSED) c[C_REFUSED]!++;
    this.#socket.send(bytes, rinfo.port, rinfo.address);
  };
}
