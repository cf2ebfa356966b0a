/** Free TCP ports on the loopback interface, for tests and benchmarks. */
import { createServer, type AddressInfo } from 'node:net';

/**
 * Returns a TCP port that is free on 127.0.0.1 right now (bind port 0, read it, close). Another process may
 * take it before the caller binds it, so callers that hand it to a third party should retry on EADDRINUSE.
 */
export function freePort(): Promise<number> {
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
