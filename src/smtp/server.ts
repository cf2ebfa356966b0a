/**
 * SMTP listeners: plain (with STARTTLS), implicit TLS, and the PROXY protocol (v1/v2) honoured only from
 * trusted balancer addresses. Enforces connection limits in total and per client address, and stops
 * gracefully (421 to every open session, nothing half-accepted).
 */
import * as net from 'node:net';
import * as tls from 'node:tls';
import type { Logger } from '../core/log.ts';
import { canonicalPeer } from '../core/canonical.ts';
import { formatReply } from '../core/reply.ts';
import type { LineEndingMode } from './data-reader.ts';
import type { ConnectionInfo, ListenerRole, SessionHandler, TlsMode } from './handler.ts';
import { parseProxyHeader } from './proxy-protocol.ts';
import { SmtpSession, nextSessionId, type SessionLimits } from './session.ts';

export interface ListenerOptions {
  readonly name: string;
  readonly role: ListenerRole;
  readonly address: string;
  readonly port: number;
  readonly tls: TlsMode;
  /** Expect a PROXY header from trusted proxies on this listener. */
  readonly proxyProtocol?: boolean;
}

export interface ServerLimits extends SessionLimits {
  /** Concurrent connections in total. */
  readonly connections: number;
  /** Concurrent connections per client address. */
  readonly connectionsPerIp: number;
  /** Deadline for a PROXY header, ms. */
  readonly proxyTimeoutMs?: number;
}

export interface SmtpServerOptions {
  readonly hostname: string;
  readonly listeners: readonly ListenerOptions[];
  readonly handler: SessionHandler;
  readonly logger: Logger;
  readonly limits: ServerLimits;
  /** Certificate and key (PEM) for STARTTLS and implicit TLS; null disables TLS. */
  readonly tls: { readonly cert: string; readonly key: string; readonly minVersion?: 'TLSv1.2' | 'TLSv1.3' } | null;
  readonly isTrustedProxy: (ip: string) => boolean;
  readonly lineEndings: LineEndingMode;
  readonly authRequiresTls: boolean;
  readonly greetDelayMs?: number;
  /** Counts concurrent connections per client (for example grouping IPv6 by /64); default: per exact address. */
  readonly connectionLimiter?: ConnectionLimiter;
}

/** Admission of a client address against per-client and total connection limits. */
export interface ConnectionLimiter {
  tryAcquire(ip: string): 'ok' | 'per-ip' | 'total';
  release(ip: string): void;
}

/** The default limiter: concurrent connections per exact client address and in total. */
function simpleLimiter(perIp: number, total: number): ConnectionLimiter {
  const counts = new Map<string, number>();
  let all = 0;
  return {
    tryAcquire(ip) {
      if (all >= total) return 'total';
      const c = counts.get(ip) ?? 0;
      if (c >= perIp) return 'per-ip';
      counts.set(ip, c + 1);
      all++;
      return 'ok';
    },
    release(ip) {
      const c = (counts.get(ip) ?? 1) - 1;
      if (c <= 0) counts.delete(ip); else counts.set(ip, c);
      all = Math.max(0, all - 1);
    },
  };
}

export interface BoundListener {
  readonly name: string;
  readonly role: ListenerRole;
  readonly tls: TlsMode;
  readonly address: string;
  readonly port: number;
}

export class SmtpServer {
  readonly #o: SmtpServerOptions;
  readonly #servers: net.Server[] = [];
  readonly #sessions = new Set<SmtpSession>();
  readonly #sockets = new Set<net.Socket>();
  readonly #limiter: ConnectionLimiter;
  readonly #tlsContext: tls.SecureContext | null;
  #closing = false;

  constructor(options: SmtpServerOptions) {
    this.#o = options;
    this.#limiter = options.connectionLimiter ?? simpleLimiter(options.limits.connectionsPerIp, options.limits.connections);
    this.#tlsContext = options.tls
      ? tls.createSecureContext({ cert: options.tls.cert, key: options.tls.key, minVersion: options.tls.minVersion ?? 'TLSv1.2' })
      : null;
    for (const l of options.listeners) {
      if (l.tls !== 'none' && !this.#tlsContext) throw new RangeError(`Listener "${l.name}" needs TLS but no certificate is configured`);
    }
  }

  /** Open connections right now. */
  get connectionCount(): number { return this.#sockets.size; }

  async listen(): Promise<BoundListener[]> {
    const bound: BoundListener[] = [];
    for (const l of this.#o.listeners) {
      const server = net.createServer({ pauseOnConnect: true, noDelay: true }, (socket) => this.#accept(l, socket));
      server.maxConnections = this.#o.limits.connections + 64; // hard stop above our own 421 limit
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ host: l.address, port: l.port, backlog: 1024 }, () => { server.off('error', reject); resolve(); });
      });
      server.on('error', (err) => this.#o.logger.error('listener error', { listener: l.name, err: String(err) }));
      this.#servers.push(server);
      const a = server.address() as net.AddressInfo;
      bound.push({ name: l.name, role: l.role, tls: l.tls, address: a.address, port: a.port });
    }
    return bound;
  }

  /** Stops accepting, sends 421 to every session, waits up to graceMs, then drops what is left. */
  async close(options: { graceMs?: number } = {}): Promise<void> {
    this.#closing = true;
    const closed = this.#servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve())));
    for (const s of this.#sessions) s.shutdown();
    const deadline = Date.now() + (options.graceMs ?? 5000);
    while (this.#sockets.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    for (const s of this.#sockets) s.destroy();
    await Promise.all(closed);
  }

  #accept(l: ListenerOptions, socket: net.Socket): void {
    socket.on('error', () => { /* reported by the session; never crash on a reset */ });
    if (this.#closing) { socket.destroy(); return; }
    this.#sockets.add(socket);
    socket.once('close', () => this.#sockets.delete(socket));
    this.#start(l, socket).catch((err: unknown) => {
      this.#o.logger.error('connection setup failed', { listener: l.name, err: String(err) });
      socket.destroy();
    });
  }

  #refuse(socket: net.Socket, text: string): void {
    // Read (and drop) whatever the client sends, so its FIN is seen and the socket, which still counts
    // against the connection limit, closes as soon as the client goes, not only when the timer fires.
    socket.on('data', () => {});
    socket.resume();
    socket.end(formatReply({ code: 421, enhanced: '4.7.0', text: `${this.#o.hostname} ${text}` }));
    setTimeout(() => socket.destroy(), 1000).unref();
  }

  async #start(l: ListenerOptions, socket: net.Socket): Promise<void> {
    const peer = normalizeIp(socket.remoteAddress ?? '');
    if (this.#sockets.size > this.#o.limits.connections) {
      this.#o.logger.warn('connection refused', { listener: l.name, client_ip: peer, reason: 'too many connections' });
      return this.#refuse(socket, 'Error: too many connections');
    }
    let clientIp = peer;
    let clientPort = socket.remotePort ?? 0;
    let proxied = false;
    let initial: Buffer | undefined;
    socket.resume(); // pauseOnConnect: switch to paused-with-readable mode below
    socket.pause();
    if (l.proxyProtocol && this.#o.isTrustedProxy(peer)) {
      const res = await readProxyHeader(socket, this.#o.limits.proxyTimeoutMs ?? 5000);
      if (!res.ok) {
        this.#o.logger.warn('proxy header refused', { listener: l.name, client_ip: peer, reason: res.reason });
        return this.#refuse(socket, `Error: invalid PROXY header (${res.reason})`);
      }
      if (res.header.command === 'proxy' && res.header.sourceAddress) {
        clientIp = normalizeIp(res.header.sourceAddress);
        clientPort = res.header.sourcePort ?? 0;
        proxied = true;
      }
      if (res.rest.length > 0) initial = res.rest;
    }
    const admitted = this.#limiter.tryAcquire(clientIp);
    if (admitted !== 'ok') {
      const reason = admitted === 'per-ip' ? 'too many connections from ip' : 'too many connections';
      this.#o.logger.warn('connection refused', { listener: l.name, client_ip: clientIp, reason });
      return this.#refuse(socket, admitted === 'per-ip' ? `Error: too many connections from ${clientIp}` : 'Error: too many connections');
    }
    socket.once('close', () => this.#limiter.release(clientIp));

    let stream: net.Socket = socket;
    if (l.tls === 'implicit') {
      if (initial) { socket.unshift(initial); initial = undefined; }
      const secure = new tls.TLSSocket(socket, { isServer: true, secureContext: this.#tlsContext! });
      const ok = await new Promise<boolean>((resolve) => {
        const t = setTimeout(() => resolve(false), 30_000);
        t.unref();
        secure.once('secure', () => { clearTimeout(t); resolve(true); });
        secure.once('error', () => { clearTimeout(t); resolve(false); });
        secure.once('close', () => { clearTimeout(t); resolve(false); });
      });
      if (!ok) { secure.destroy(); socket.destroy(); return; }
      stream = secure;
    }
    const connection: ConnectionInfo = {
      id: nextSessionId(),
      remoteAddress: clientIp,
      remotePort: clientPort,
      localAddress: normalizeIp(socket.localAddress ?? ''),
      localPort: socket.localPort ?? 0,
      proxied,
      peerAddress: peer,
      listener: { name: l.name, role: l.role, tls: l.tls },
    };
    const session = new SmtpSession({
      socket: stream,
      connection,
      hostname: this.#o.hostname,
      handler: this.#o.handler,
      logger: this.#o.logger,
      limits: this.#o.limits,
      tlsContext: l.tls === 'starttls' ? this.#tlsContext : null,
      tlsActive: l.tls === 'implicit',
      lineEndings: this.#o.lineEndings,
      authRequiresTls: this.#o.authRequiresTls,
      greetDelayMs: this.#o.greetDelayMs ?? 0,
      ...(initial ? { initialData: initial } : {}),
    });
    this.#sessions.add(session);
    try {
      await session.run();
    } finally {
      this.#sessions.delete(session);
    }
  }
}

/** A socket or PROXY address in canonical form ("::ffff:1.2.3.4" -> "1.2.3.4", RFC 5952 IPv6): core/canonical.ts. */
export function normalizeIp(ip: string): string {
  return canonicalPeer(ip);
}

async function readProxyHeader(socket: net.Socket, timeoutMs: number): Promise<
  { ok: true; header: NonNullable<Extract<ReturnType<typeof parseProxyHeader>, { status: 'ok' }>['header']>; rest: Buffer } | { ok: false; reason: string }
> {
  let buf = Buffer.alloc(0);
  return new Promise((resolve) => {
    const finish = (r: Awaited<ReturnType<typeof readProxyHeader>>): void => {
      clearTimeout(timer);
      socket.off('readable', onReadable);
      socket.off('end', onEnd);
      socket.off('close', onEnd);
      resolve(r);
    };
    const onEnd = (): void => finish({ ok: false, reason: 'closed before PROXY header' });
    const onReadable = (): void => {
      for (let c = socket.read() as Buffer | null; c !== null; c = socket.read() as Buffer | null) {
        buf = Buffer.concat([buf, c]);
        const r = parseProxyHeader(buf);
        if (r.status === 'incomplete') {
          if (buf.length > 4096) return finish({ ok: false, reason: 'header too long' });
          continue;
        }
        if (r.status === 'error') return finish({ ok: false, reason: r.reason });
        return finish({ ok: true, header: r.header, rest: buf.subarray(r.consumed) });
      }
    };
    const timer = setTimeout(() => finish({ ok: false, reason: 'timeout' }), timeoutMs);
    timer.unref();
    socket.on('readable', onReadable);
    socket.on('end', onEnd);
    socket.on('close', onEnd);
    onReadable();
  });
}
