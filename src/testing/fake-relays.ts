/**
 * Purpose: loopback fake SMTP servers that answer like closed relays, one listener per address on one shared port
 * (the ORDB tester tests every target on the same configured ports), counting connections per address. For the
 * ORDB job-queue tests and bench/workers.ts: each address stands for one submitted host, so "every job done exactly
 * once" is "every address saw exactly one test's worth of connections".
 *   closed (default)  greeting after `delayMs`, then EHLO/HELO/MAIL 250, RCPT 250 for postmaster (the tester's
 *                     control recipient), 554 5.7.1 "Relay access denied" for everything else, RSET/NOOP 250,
 *                     QUIT 221: the tester's verdict is CLOSED.
 *   tarpit            (addresses in `tarpit`) accepts the connection and never says anything: only the tester's
 *                     budget or timeouts end the test.
 * Trust: test code only; loopback addresses only (127.0.0.0/8, ::1).
 */
import * as net from 'node:net';

export interface FakeRelaysOptions {
  /** Loopback addresses to listen on (127.0.0.x); each is one fake host. */
  readonly addresses: readonly string[];
  /** The port on every address; default a port free on all of them. */
  readonly port?: number | undefined;
  /** Pause before the greeting (the test's time then dominates the work). Default 0. */
  readonly delayMs?: number | undefined;
  /** Addresses that accept and never answer (a tarpit). */
  readonly tarpit?: readonly string[] | undefined;
}

export interface FakeRelays {
  readonly port: number;
  /** Connections accepted per address so far. */
  connections(address: string): number;
  /** Every address's count. */
  counts(): Map<string, number>;
  close(): Promise<void>;
}

function isLoopback(a: string): boolean {
  return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(a) || a === '::1';
}

function listen(server: net.Server, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once('error', onError);
    server.listen({ host, port, exclusive: true }, () => {
      server.off('error', onError);
      resolve((server.address() as net.AddressInfo).port);
    });
  });
}

function closeServer(server: net.Server): Promise<void> {
  return new Promise((resolve) => { if (!server.listening) { resolve(); return; } server.close(() => resolve()); });
}

/** One SMTP dialogue of a closed relay (line based; DATA is never reached: every relay recipient is refused). */
function closedRelay(socket: net.Socket, delayMs: number): void {
  let buf = '';
  let greeted = false;
  const pending: string[] = [];
  const answer = (line: string): void => {
    const verb = line.split(/\s/, 1)[0]!.toUpperCase();
    const arg = line.slice(verb.length).trim();
    switch (verb) {
      case 'EHLO': socket.write('250-closed.fake.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n'); break;
      case 'HELO': socket.write('250 closed.fake.test\r\n'); break;
      case 'MAIL': socket.write('250 2.1.0 Ok\r\n'); break;
      case 'RCPT': socket.write(/^TO:\s*<postmaster(@[^>]*)?>/i.test(arg) ? '250 2.1.5 Ok\r\n' : '554 5.7.1 Relay access denied\r\n'); break;
      case 'RSET': case 'NOOP': socket.write('250 2.0.0 Ok\r\n'); break;
      case 'QUIT': socket.end('221 2.0.0 Bye\r\n'); break;
      case 'DATA': socket.write('554 5.5.1 Error: no valid recipients\r\n'); break;
      default: socket.write('502 5.5.2 Error: command not recognized\r\n');
    }
  };
  socket.setEncoding('latin1');
  socket.on('data', (d: string) => {
    buf += d;
    if (buf.length > 65_536) { socket.destroy(); return; }
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i).replace(/\r$/, '');
      buf = buf.slice(i + 1);
      if (greeted) answer(line); else pending.push(line);
    }
  });
  const greet = (): void => {
    if (socket.destroyed) return;
    greeted = true;
    socket.write('220 closed.fake.test ESMTP\r\n');
    for (const l of pending.splice(0)) answer(l);
  };
  if (delayMs > 0) {
    const t = setTimeout(greet, delayMs);
    socket.once('close', () => clearTimeout(t));
  } else {
    greet();
  }
}

export async function startFakeRelays(options: FakeRelaysOptions): Promise<FakeRelays> {
  const addresses = [...new Set(options.addresses)];
  if (addresses.length === 0) throw new RangeError('startFakeRelays: no addresses');
  for (const a of addresses) if (!isLoopback(a)) throw new RangeError(`startFakeRelays: ${a} is not a loopback address`);
  const tarpit = new Set(options.tarpit ?? []);
  const delayMs = options.delayMs ?? 0;
  const counts = new Map<string, number>(addresses.map((a) => [a, 0]));
  const sockets = new Set<net.Socket>();
  const servers: net.Server[] = [];
  const make = (address: string): net.Server => net.createServer((socket) => {
    counts.set(address, (counts.get(address) ?? 0) + 1);
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => { /* the tester may reset */ });
    if (tarpit.has(address)) { socket.resume(); return; }
    closedRelay(socket, delayMs);
  });
  const closeAll = async (): Promise<void> => {
    for (const s of sockets) s.destroy();
    await Promise.all(servers.map(closeServer));
  };
  for (let attempt = 0; ; attempt++) {
    servers.length = 0;
    try {
      const first = make(addresses[0]!);
      servers.push(first);
      const port = await listen(first, addresses[0]!, options.port ?? 0);
      for (const a of addresses.slice(1)) {
        const s = make(a);
        servers.push(s);
        await listen(s, a, port);
      }
      return {
        port,
        connections: (a) => counts.get(a) ?? 0,
        counts: () => new Map(counts),
        close: closeAll,
      };
    } catch (err) {
      await closeAll();
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || options.port !== undefined || attempt >= 20) throw err;
    }
  }
}
