/**
 * Scripted proxies for the open-proxy battery's tests and benchmark: honest open ones (HTTP CONNECT/GET/POST,
 * SOCKS4/4a/5, a Wingate-style telnet gateway, a chain that forwards through another proxy) and hostile ones
 * (endless headers, a CONNECT reply that never ends, binary garbage, a SOCKS reply with a wrong version or length,
 * a tunnel back to a fake server of its own, redirects, a 200 with nothing behind it, slow drips, a silent tarpit).
 * Loopback only: every fake listens on a 127/8 or ::1 address and forwards only to 127/8 or ::1 (anything else
 * is refused), so a test can never send traffic off the machine.
 */
import * as net from 'node:net';

export type FakeProxyBehavior =
  | 'http-open' | 'socks-open' | 'wingate' | 'chain'
  | 'http-auth' | 'http-forbidden' | 'socks5-userpass' | 'socks-refuse'
  | 'endless-headers' | 'never-ending-reply' | 'garbage' | 'socks-bad-version' | 'socks-bad-length'
  | 'connect-back' | 'redirect' | 'claims-200' | 'slow-drip' | 'tarpit' | 'socks-claims';

export interface FakeProxyOptions {
  readonly behavior: FakeProxyBehavior;
  /** Listen address (127/8 or ::1). Default 127.0.0.1. */
  readonly address?: string;
  /** 0 = any free port. */
  readonly port?: number;
  /** Bind outgoing connections here (the egress address the sink should see). */
  readonly egressAddress?: string;
  /** 'chain': the upstream HTTP proxy that CONNECTs are passed to. */
  readonly upstream?: { readonly host: string; readonly port: number };
  /** 'slow-drip': ms between bytes. Default 200. */
  readonly dripMs?: number;
}

export interface FakeProxy {
  readonly address: string;
  readonly port: number;
  /** Connections accepted so far. */
  readonly connections: () => number;
  /** Bytes the hostile fakes wrote (to check the tester stopped reading). */
  readonly bytesWritten: () => number;
  close(): Promise<void>;
}

function loopback(host: string): boolean {
  if (host === 'localhost') return true;
  if (net.isIPv4(host)) return host.startsWith('127.');
  if (net.isIPv6(host)) return host === '::1' || host === '0:0:0:0:0:0:0:1';
  return false;
}

function resolveLoopback(host: string): string | null {
  if (host === 'localhost') return '127.0.0.1';
  return loopback(host) ? host : null;
}

function splitAuthority(a: string): { host: string; port: number } | null {
  const m = /^(?:\[([^\]]+)\]|([^:/]+)):(\d{1,5})$/.exec(a);
  if (!m) return null;
  return { host: m[1] ?? m[2]!, port: Number(m[3]) };
}

/** Reads until CRLF CRLF (at most 16 KiB), then calls back with the head and the bytes after it. */
function readHead(socket: net.Socket, cb: (head: string, rest: Buffer) => void): void {
  let buf = Buffer.alloc(0);
  const onData = (c: Buffer): void => {
    buf = Buffer.concat([buf, c]);
    const i = buf.indexOf('\r\n\r\n');
    if (i >= 0) {
      socket.off('data', onData);
      cb(buf.subarray(0, i).toString('latin1'), buf.subarray(i + 4));
    } else if (buf.length > 16384) socket.destroy();
  };
  socket.on('data', onData);
}

function readBytes(socket: net.Socket, initial: Buffer, want: (b: Buffer) => number, cb: (msg: Buffer, rest: Buffer) => void): void {
  let buf = initial;
  const check = (): boolean => {
    const n = want(buf);
    if (n < 0) return false;
    socket.off('data', onData);
    cb(buf.subarray(0, n), buf.subarray(n));
    return true;
  };
  const onData = (c: Buffer): void => { buf = Buffer.concat([buf, c]); if (buf.length > 4096) { socket.destroy(); return; } check(); };
  socket.on('data', onData);
  check();
}

function pipeTo(client: net.Socket, host: string, port: number, egress: string | undefined, first: Buffer, onOpen: () => void, onFail: () => void): void {
  const target = resolveLoopback(host);
  if (target === null) { onFail(); return; }
  const sameFamily = egress !== undefined && net.isIPv6(egress) === net.isIPv6(target);
  const up = net.connect({ host: target, port, ...(sameFamily ? { localAddress: egress } : {}) });
  up.once('connect', () => {
    onOpen();
    if (first.length > 0) up.write(first);
    client.pipe(up);
    up.pipe(client);
  });
  up.on('error', () => { onFail(); client.destroy(); });
  client.on('error', () => up.destroy());
  client.on('close', () => up.destroy());
  up.on('close', () => client.destroy());
}

function httpOpen(socket: net.Socket, o: FakeProxyOptions): void {
  readHead(socket, (head, rest) => {
    const [line = '', ...headers] = head.split('\r\n');
    const [method = '', target = ''] = line.split(' ');
    if (method === 'CONNECT') {
      const a = splitAuthority(target);
      if (!a) { socket.end('HTTP/1.1 400 Bad Request\r\n\r\n'); return; }
      if (o.behavior === 'chain' && o.upstream) {
        // pass the CONNECT to the upstream proxy and relay its answer
        const up = net.connect({ host: o.upstream.host, port: o.upstream.port, ...(o.egressAddress ? { localAddress: o.egressAddress } : {}) });
        up.once('connect', () => { up.write(`${head}\r\n\r\n`); if (rest.length) up.write(rest); socket.pipe(up); up.pipe(socket); });
        up.on('error', () => socket.destroy());
        socket.on('error', () => up.destroy());
        socket.on('close', () => up.destroy());
        up.on('close', () => socket.destroy());
        return;
      }
      pipeTo(socket, a.host, a.port, o.egressAddress, rest, () => socket.write('HTTP/1.1 200 Connection established\r\n\r\n'), () => { if (!socket.destroyed) socket.end('HTTP/1.1 502 Bad Gateway\r\n\r\n'); });
      return;
    }
    const m = /^http:\/\/([^/]+)(\/.*)?$/.exec(target);
    if (!m) { socket.end('HTTP/1.1 400 Bad Request\r\n\r\n'); return; }
    const a = splitAuthority(m[1]!) ?? { host: m[1]!, port: 80 };
    const kept = headers.filter((h) => !/^(proxy-|connection)/i.test(h));
    const req = Buffer.concat([Buffer.from(`${method} ${m[2] ?? '/'} HTTP/1.0\r\n${kept.join('\r\n')}\r\nConnection: close\r\n\r\n`, 'latin1'), rest]);
    pipeTo(socket, a.host, a.port, o.egressAddress, req, () => {}, () => { if (!socket.destroyed) socket.end('HTTP/1.1 502 Bad Gateway\r\n\r\n'); });
  });
}

function socksOpen(socket: net.Socket, o: FakeProxyOptions, claimsOnly: boolean): void {
  readBytes(socket, Buffer.alloc(0), (b) => (b.length >= 1 ? 1 : -1), (v, rest) => {
    if (v[0] === 4) {
      readBytes(socket, rest, (b) => {
        if (b.length < 8) return -1;
        const z1 = b.indexOf(0, 7);
        if (z1 < 0) return -1;
        const isA = b[3] === 0 && b[4] === 0 && b[5] === 0 && b[6] !== 0;
        if (!isA) return z1 + 1;
        const z2 = b.indexOf(0, z1 + 1);
        return z2 < 0 ? -1 : z2 + 1;
      }, (req, tail) => {
        const port = req.readUInt16BE(1);
        const isA = req[3] === 0 && req[4] === 0 && req[5] === 0 && req[6] !== 0;
        const host = isA ? req.subarray(req.indexOf(0, 7) + 1, req.length - 1).toString('latin1') : [...req.subarray(3, 7)].join('.');
        const ok = Buffer.from([0, 0x5a, 0, 0, 0, 0, 0, 0]);
        if (claimsOnly) { socket.write(ok); return; }
        pipeTo(socket, host, port, o.egressAddress, tail, () => socket.write(ok), () => { if (!socket.destroyed) socket.end(Buffer.from([0, 0x5b, 0, 0, 0, 0, 0, 0])); });
      });
      return;
    }
    if (v[0] !== 5) { socket.destroy(); return; }
    readBytes(socket, rest, (b) => (b.length >= 1 && b.length >= 1 + b[0]! ? 1 + b[0]! : -1), (methods, r2) => {
      if (!methods.subarray(1).includes(0)) { socket.end(Buffer.from([5, 0xff])); return; }
      socket.write(Buffer.from([5, 0]));
      readBytes(socket, r2, (b) => {
        if (b.length < 5) return -1;
        const len = b[3] === 1 ? 4 : b[3] === 4 ? 16 : b[3] === 3 ? 1 + b[4]! : -1;
        if (len < 0) return 4;
        return b.length >= 4 + len + 2 ? 4 + len + 2 : -1;
      }, (req, tail) => {
        const atyp = req[3];
        let host: string;
        if (atyp === 1) host = [...req.subarray(4, 8)].join('.');
        else if (atyp === 4) { const g: string[] = []; for (let i = 0; i < 8; i++) g.push(req.readUInt16BE(4 + i * 2).toString(16)); host = g.join(':'); }
        else if (atyp === 3) host = req.subarray(5, 5 + req[4]!).toString('latin1');
        else { socket.end(Buffer.from([5, 8, 0, 1, 0, 0, 0, 0, 0, 0])); return; }
        const port = req.readUInt16BE(req.length - 2);
        const ok = Buffer.from([5, 0, 0, 1, 127, 0, 0, 1, 0, 0]);
        if (claimsOnly) { socket.write(ok); return; }
        pipeTo(socket, host, port, o.egressAddress, tail, () => socket.write(ok), () => { if (!socket.destroyed) socket.end(Buffer.from([5, 5, 0, 1, 0, 0, 0, 0, 0, 0])); });
      });
    });
  });
}

function wingate(socket: net.Socket, o: FakeProxyOptions): void {
  socket.write('WinGate>');
  let buf = '';
  const onData = (c: Buffer): void => {
    buf += c.toString('latin1');
    const i = buf.indexOf('\n');
    if (i < 0) { if (buf.length > 1024) socket.destroy(); return; }
    socket.off('data', onData);
    const line = buf.slice(0, i).trim();
    const m = /^(\S+?)[: ](\d{1,5})$/.exec(line);
    if (!m) { socket.end('Bad request\r\n'); return; }
    socket.write(`Connecting to host ${m[1]}...Connected\r\n`);
    pipeTo(socket, m[1]!, Number(m[2]), o.egressAddress, Buffer.from(buf.slice(i + 1), 'latin1'), () => {}, () => { if (!socket.destroyed) socket.end('Connection refused\r\n'); });
  };
  socket.on('data', onData);
}

/** Starts one fake proxy. */
export async function startFakeProxy(o: FakeProxyOptions): Promise<FakeProxy> {
  const address = o.address ?? '127.0.0.1';
  if (!loopback(address)) throw new Error(`fake proxies listen on loopback only, not ${address}`);
  let connections = 0;
  let written = 0;
  const sockets = new Set<net.Socket>();
  const timers = new Set<NodeJS.Timeout>();
  const write = (s: net.Socket, b: string | Buffer): void => { if (!s.destroyed && s.writable) { written += b.length; s.write(b); } };
  let ownBanner: net.Server | null = null;
  if (o.behavior === 'connect-back') {
    // the "tunnel" goes to a server of the proxy's own that fakes an SMTP greeting
    ownBanner = net.createServer((s) => { s.on('error', () => {}); s.end('220 mail.honeypot.example ESMTP ready\r\n'); });
    await new Promise<void>((r) => ownBanner!.listen(0, '127.0.0.1', () => r()));
  }
  const server = net.createServer((socket) => {
    connections++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    switch (o.behavior) {
      case 'http-open': case 'chain': httpOpen(socket, o); return;
      case 'socks-open': socksOpen(socket, o, false); return;
      case 'socks-claims': socksOpen(socket, o, true); return;
      case 'wingate': wingate(socket, o); return;
      case 'http-auth': readHead(socket, () => socket.end('HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="x"\r\nContent-Length: 0\r\n\r\n')); socket.on('data', () => {}); return;
      case 'http-forbidden': readHead(socket, () => socket.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n')); return;
      case 'redirect': readHead(socket, () => socket.end('HTTP/1.1 302 Found\r\nLocation: http://portal.example/login\r\nContent-Length: 0\r\n\r\n')); return;
      case 'claims-200': readHead(socket, () => write(socket, 'HTTP/1.1 200 Connection established\r\n\r\n')); return; // then nothing
      case 'socks5-userpass':
        socket.once('data', (b) => { if (b[0] === 5) socket.end(Buffer.from([5, b.subarray(2, 2 + b[1]!).includes(2) ? 2 : 0xff])); else socket.destroy(); });
        return;
      case 'socks-refuse':
        socket.once('data', (b) => {
          if (b[0] === 4) socket.end(Buffer.from([0, 0x5b, 0, 0, 0, 0, 0, 0]));
          else if (b[0] === 5) { socket.write(Buffer.from([5, 0])); socket.once('data', () => socket.end(Buffer.from([5, 2, 0, 1, 0, 0, 0, 0, 0, 0]))); }
          else socket.destroy();
        });
        return;
      case 'endless-headers': {
        write(socket, 'HTTP/1.1 200 OK\r\n');
        const t = setInterval(() => { if (socket.destroyed) { clearInterval(t); timers.delete(t); return; } write(socket, `X-Filler-${written}: ${'a'.repeat(1000)}\r\n`); }, 1);
        timers.add(t);
        return;
      }
      case 'never-ending-reply': {
        readHead(socket, () => {
          write(socket, 'HTTP/1.1 200 Connection established\r\nX-Pad: ');
          const t = setInterval(() => { if (socket.destroyed) { clearInterval(t); timers.delete(t); return; } write(socket, 'x'.repeat(4096)); }, 1);
          timers.add(t);
        });
        return;
      }
      case 'garbage': {
        const junk = Buffer.alloc(64 * 1024);
        for (let i = 0; i < junk.length; i++) junk[i] = (i * 7919 + 13) & 0xff;
        socket.once('data', () => { write(socket, junk); });
        return;
      }
      case 'socks-bad-version':
        socket.once('data', (b) => { write(socket, b[0] === 4 ? Buffer.from([4, 0x5a, 0, 0, 0, 0, 0, 0]) : Buffer.from([4, 0])); });
        return;
      case 'socks-bad-length':
        socket.once('data', (b) => {
          if (b[0] !== 5) { socket.destroy(); return; }
          write(socket, Buffer.from([5, 0]));
          // a reply that names address type 3 (a name) of 200 bytes and then sends only 3
          socket.once('data', () => write(socket, Buffer.from([5, 0, 0, 3, 200, 1, 2, 3])));
        });
        return;
      case 'connect-back':
        readHead(socket, (head, rest) => {
          if (!head.startsWith('CONNECT ')) { socket.end('HTTP/1.1 400 Bad Request\r\n\r\n'); return; }
          const a = ownBanner!.address() as net.AddressInfo;
          pipeTo(socket, '127.0.0.1', a.port, undefined, rest, () => socket.write('HTTP/1.1 200 Connection established\r\n\r\n'), () => socket.destroy());
        });
        return;
      case 'slow-drip': {
        const text = 'HTTP/1.1 200 Connection established\r\nX-Slow: yes\r\n\r\n';
        let i = 0;
        socket.once('data', () => {
          const t = setInterval(() => {
            if (socket.destroyed || i >= text.length) { clearInterval(t); timers.delete(t); return; }
            write(socket, text[i++]!);
          }, o.dripMs ?? 200);
          timers.add(t);
        });
        return;
      }
      case 'tarpit':
        socket.on('data', () => {}); // accept, read, never answer
        return;
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: address, port: o.port ?? 0 }, () => { server.off('error', reject); resolve(); });
  });
  const a = server.address() as net.AddressInfo;
  return {
    address: a.address,
    port: a.port,
    connections: () => connections,
    bytesWritten: () => written,
    close: async () => {
      for (const t of timers) clearInterval(t);
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
      if (ownBanner) { await new Promise<void>((r) => ownBanner!.close(() => r())); }
    },
  };
}
