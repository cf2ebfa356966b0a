/**
 * A UDP worker thread of DnsblServer (options.udpThreads > 1): one more socket on the server's address and port
 * (SO_REUSEPORT, so the kernel spreads the clients over the sockets), answering from the same zone. The zone's
 * index arrays are SharedArrayBuffer views (Zone.toShared), so a worker holds no copy of the index.
 *
 * Protocol with the main thread (server.ts):
 *   workerData {ip, port, ednsUdpSize, counters, zone}  ->  {type: 'ready'} | {type: 'error', message, code}
 *   {type: 'zone', zone}  swaps the zone;  {type: 'log', level, message} goes the other way.
 * The main thread ends a worker with terminate().
 */
import { parentPort, workerData } from 'node:worker_threads';
import { Zone, type SharedZone } from './zone.ts';
import { bindUdp, createUdpSocket, sizeUdpBuffers, UdpAnswerer } from './server-udp.ts';

export interface UdpWorkerData {
  readonly ip: string;
  readonly port: number;
  readonly ednsUdpSize: number;
  /** This worker's counter slots (a view of the server's SharedArrayBuffer). */
  readonly counters: Float64Array;
  readonly zone: SharedZone;
  /** TSIG keys for signed queries (secrets as bytes). */
  readonly tsigKeys?: readonly { readonly name: string; readonly algorithm: 'hmac-sha256'; readonly secret: Uint8Array }[];
}

export type UdpWorkerMessage =
  | { readonly type: 'ready' }
  | { readonly type: 'error'; readonly message: string; readonly code: string | undefined }
  | { readonly type: 'log'; readonly level: 'warn' | 'error'; readonly message: string };

const port = parentPort;
if (port) {
  const data = workerData as UdpWorkerData;
  const post = (m: UdpWorkerMessage): void => port.postMessage(m);
  const socket = createUdpSocket(data.ip, true);
  const answerer = new UdpAnswerer(socket, Zone.fromShared(data.zone), data.ednsUdpSize, data.counters,
    (message) => post({ type: 'log', level: 'error', message: `dnsbl respond failed: ${message}` }),
    new Map((data.tsigKeys ?? []).map((k) => [k.name, { ...k, secret: Buffer.from(k.secret) }])));
  port.on('message', (m: { type: 'zone'; zone: SharedZone }) => {
    if (m.type === 'zone') answerer.zone = Zone.fromShared(m.zone);
  });
  bindUdp(socket, data.ip, data.port).then(
    () => {
      socket.on('error', (err) => post({ type: 'log', level: 'warn', message: `dnsbl udp error: ${err.message}` }));
      sizeUdpBuffers(socket);
      socket.on('message', answerer.onMessage);
      post({ type: 'ready' });
    },
    (err: NodeJS.ErrnoException) => {
      post({ type: 'error', message: err.message, code: err.code });
      socket.close();
      port.close();
    },
  );
}
