/** Free TCP ports on the loopback interface, for tests and benchmarks. */
import { createServer, type AddressInfo } from 'node:net';

/** Ports this process handed out lately: the kernel may offer a just-closed port again at once. */
const recent: number[] = [];
const RECENT_MAX = 512;

function probe(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen({ port: 0, host: '127.0.0.1', exclusive: true }, () => {
      const { port } = server.address() as AddressInfo;
      server.close((err) => (err ? reject(err) : resolve(port)));
    });
  });
}

/**
 * Returns a TCP port that is free on 127.0.0.1 right now (bind port 0, read it, close), and never one this process
 * handed out among its last 512 (three calls in a row for one relay's listeners must give three ports). Another
 * process may take it before the caller binds it, so callers that hand it to a third party should retry on
 * EADDRINUSE.
 */
export async function freePort(): Promise<number> {
  for (let i = 0; ; i++) {
    const port = await probe();
    if (!recent.includes(port) || i >= 50) {
      recent.push(port);
      if (recent.length > RECENT_MAX) recent.shift();
      return port;
    }
  }
}
