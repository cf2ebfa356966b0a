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
import { logRefusal, type RefusalReason } from './refusals.ts';
import { createServerSecureContext } from './tls-cert.ts';

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
  /**
   * Accept connections but read and write nothing until release() (a server started as root binds its ports, drops
   * its privileges, then releases: no client byte is ever read as root). Default false.
   */
  readonly held?: boolean;
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

interface BoundEntry {
  readonly server: net.Server;
  /** The listener's current settings (a reload may change its name, role, TLS mode or PROXY setting). */
  spec: ListenerOptions;
  readonly port: number;
}

export interface ReconfigureResult {
  readonly listeners: BoundListener[];
  readonly added: readonly string[];
  readonly removed: readonly string[];
  readonly changed: readonly string[];
}

export class SmtpServer {
  #o: SmtpServerOptions;
  readonly #servers: net.Server[] = [];
  readonly #entries: BoundEntry[] = [];
  readonly #sessions = new Set<SmtpSession>();
  readonly #sockets = new Set<net.Socket>();
  #limiter: ConnectionLimiter;
  #tlsContext: tls.SecureContext | null;
  #closing = false;
  #release: () => void = () => {};
  readonly #gate: Promise<void>;

  constructor(options: SmtpServerOptions) {
    this.#o = options;
    this.#gate = options.held ? new Promise<void>((r) => { this.#release = r; }) : Promise.resolve();
    this.#limiter = options.connectionLimiter ?? simpleLimiter(options.limits.connectionsPerIp, options.limits.connections);
    this.#tlsContext = options.tls ? this.#secureContext(options.tls) : null;
    for (const l of options.listeners) {
      if (l.tls !== 'none' && !this.#tlsContext) throw new RangeError(`Listener "${l.name}" needs TLS but no certificate is configured`);
    }
  }

  /** Lets held connections proceed (see SmtpServerOptions.held). */
  release(): void {
    this.#release();
  }

  /** Open connections right now. */
  get connectionCount(): number { return this.#sockets.size; }

  async listen(): Promise<BoundListener[]> {
    const bound: BoundListener[] = [];
    for (const l of this.#o.listeners) bound.push(await this.#bind(l));
    return bound;
  }

  async #bind(l: ListenerOptions): Promise<BoundListener> {
    const entry: { server: net.Server | null; spec: ListenerOptions; local: LocalEnd | null } = { server: null, spec: l, local: null };
    const server = net.createServer({ pauseOnConnect: true, noDelay: true }, (socket) => this.#accept(entry.spec, socket, entry.local));
    entry.server = server;
    server.maxConnections = this.#o.limits.connections + 64; // hard stop above our own 421 limit
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: l.address, port: l.port, backlog: 1024 }, () => { server.off('error', reject); resolve(); });
    });
    server.on('error', (err) => this.#o.logger.error('listener error', { listener: entry.spec.name, err: String(err) }));
    this.#servers.push(server);
    const a = server.address() as net.AddressInfo;
    entry.local = localEnd(a);
    const e: BoundEntry = { server, port: a.port, get spec() { return entry.spec; }, set spec(v) { entry.spec = v; } };
    this.#entries.push(e);
    return { name: l.name, role: l.role, tls: l.tls, address: a.address, port: a.port };
  }

  /** The listeners bound now. */
  get listeners(): BoundListener[] {
    return this.#entries.map((e) => ({ name: e.spec.name, role: e.spec.role, tls: e.spec.tls, address: e.spec.address, port: e.port }));
  }

  /**
   * Applies new options without dropping a session (SIGHUP): listeners whose address and port stay are kept and
   * take their new settings for new connections; new ones are bound; removed ones stop accepting while their
   * sessions finish. The handler, limits, certificate and the rest apply to connections accepted from now on.
   * Throws before changing anything when the certificate is bad, and undoes new binds when one fails.
   */
  async reconfigure(next: SmtpServerOptions): Promise<ReconfigureResult> {
    if (this.#closing) throw new Error('server is closing');
    const ctx = next.tls ? this.#secureContext(next.tls) : null;
    for (const l of next.listeners) {
      if (l.tls !== 'none' && !ctx) throw new RangeError(`Listener "${l.name}" needs TLS but no certificate is configured`);
    }
    const key = (address: string, port: number): string => `${address}|${port}`;
    const current = new Map(this.#entries.map((e) => [key(e.spec.address, e.port), e]));
    const keep = new Map<BoundEntry, ListenerOptions>();
    const fresh: ListenerOptions[] = [];
    for (const l of next.listeners) {
      const e = l.port === 0 ? undefined : current.get(key(l.address, l.port));
      if (e && !keep.has(e)) keep.set(e, l);
      else fresh.push(l);
    }
    const added: string[] = [];
    const before = this.#entries.length;
    try {
      for (const l of fresh) {
        await this.#bind(l);
        added.push(l.name);
      }
    } catch (err) {
      for (const e of this.#entries.splice(before)) {
        e.server.close();
        this.#servers.splice(this.#servers.indexOf(e.server), 1);
      }
      throw err;
    }
    const changed: string[] = [];
    const removed: string[] = [];
    for (const e of [...this.#entries.slice(0, before)]) {
      const spec = keep.get(e);
      if (spec) {
        if (JSON.stringify(spec) !== JSON.stringify(e.spec)) changed.push(spec.name);
        e.spec = spec;
        continue;
      }
      removed.push(e.spec.name);
      e.server.close(); // stop accepting; its sessions go on
      this.#entries.splice(this.#entries.indexOf(e), 1);
      this.#servers.splice(this.#servers.indexOf(e.server), 1);
    }
    this.#o = next;
    this.#tlsContext = ctx;
    if (next.connectionLimiter) this.#limiter = next.connectionLimiter;
    for (const e of this.#entries) e.server.maxConnections = next.limits.connections + 64;
    return { listeners: this.listeners, added, removed, changed };
  }

  /** The one place TLS server settings are made (start and reload). */
  #secureContext(t: NonNullable<SmtpServerOptions['tls']>): tls.SecureContext {
    return createServerSecureContext(t); // no CBC, ECDHE only, server order, no client renegotiation (tls-cert.ts)
  }

  /**
   * Stops accepting. With drainMs, sessions first get that long to finish the transaction in progress (each is
   * closed with 421 as soon as it is between transactions); then every session left gets 421, up to graceMs
   * more, and what is still open is dropped.
   */
  async close(options: { graceMs?: number; drainMs?: number } = {}): Promise<void> {
    this.#closing = true;
    const closed = this.#servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve())));
    if ((options.drainMs ?? 0) > 0) {
      for (const s of this.#sessions) s.drain();
      const until = Date.now() + options.drainMs!;
      while (this.#sockets.size > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    }
    for (const s of this.#sessions) s.shutdown();
    const deadline = Date.now() + (options.graceMs ?? 5000);
    while (this.#sockets.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    for (const s of this.#sockets) s.destroy();
    await Promise.all(closed);
  }

  #accept(l: ListenerOptions, socket: net.Socket, local: LocalEnd | null): void {
    socket.on('error', () => { /* reported by the session; never crash on a reset */ });
    if (this.#closing) { socket.destroy(); return; }
    this.#sockets.add(socket);
    socket.once('close', () => this.#sockets.delete(socket));
    this.#start(l, socket, local).catch((err: unknown) => {
      this.#o.logger.error('connection setup failed', { listener: l.name, err: String(err) });
      socket.destroy();
    });
  }

  /** Refuses a connection before its session starts with 421, logged as `command refused` (refusals.ts). */
  #refuse(socket: net.Socket, l: ListenerOptions, clientIp: string, text: string, reason: RefusalReason): void {
    const reply = { code: 421, enhanced: '4.7.0', text: `${this.#o.hostname} ${text}` };
    logRefusal(this.#o.logger, { clientIp, sessionId: null, listener: l.name, helo: null, mailFrom: null, command: null, reply, reason });
    // Read (and drop) whatever the client sends, so its FIN is seen and the socket, which still counts
    // against the connection limit, closes as soon as the client goes, not only when the timer fires.
    socket.on('data', () => {});
    socket.resume();
    socket.end(formatReply(reply));
    setTimeout(() => socket.destroy(), 1000).unref();
  }

  async #start(l: ListenerOptions, socket: net.Socket, local: LocalEnd | null): Promise<void> {
    await this.#gate;
    if (socket.destroyed) return;
    const peer = normalizeIp(socket.remoteAddress ?? '');
    if (this.#sockets.size > this.#o.limits.connections) {
      return this.#refuse(socket, l, peer, 'Error: too many connections', 'limit');
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
        return this.#refuse(socket, l, peer, `Error: invalid PROXY header (${res.reason})`, 'proxy');
      }
      if (res.header.command === 'proxy' && res.header.sourceAddress) {
        clientIp = normalizeIp(res.header.sourceAddress);
        clientPort = res.header.sourcePort ?? 0;
        proxied = true;
      }
      if (res.rest.length > 0) initial = res.rest;
    }
    const admitted = this.#limiter.tryAcquire(clientIp);
    // (the limiter that admitted the client also releases it, even after a reload swapped in another)
    if (admitted !== 'ok') {
      return this.#refuse(socket, l, clientIp, admitted === 'per-ip' ? `Error: too many connections from ${clientIp}` : 'Error: too many connections', 'limit');
    }
    const limiter = this.#limiter;
    socket.once('close', () => limiter.release(clientIp));

    let stream: net.Socket = socket;
    if (l.tls === 'implicit') {
      if (initial) { socket.unshift(initial); initial = undefined; }
      const secure = new tls.TLSSocket(socket, { isServer: true, secureContext: this.#tlsContext! });
      const failure = await new Promise<string | null>((resolve) => {
        const t = setTimeout(() => resolve('tls handshake timeout'), 30_000);
        t.unref();
        secure.once('secure', () => { clearTimeout(t); resolve(null); });
        secure.once('error', (err) => { clearTimeout(t); resolve(err.message); });
        secure.once('close', () => { clearTimeout(t); resolve('closed during tls handshake'); });
      });
      if (failure !== null) {
        this.#o.logger.info('tls handshake failed', { client_ip: clientIp, listener: l.name, err: failure });
        secure.destroy();
        socket.destroy();
        return;
      }
      stream = secure;
    }
    const connection: ConnectionInfo = {
      id: nextSessionId(),
      remoteAddress: clientIp,
      remotePort: clientPort,
      // A listener bound to one address: its sockets' local end is that address and port (no getsockname call).
      localAddress: local?.address ?? normalizeIp(socket.localAddress ?? ''),
      localPort: local?.port ?? socket.localPort ?? 0,
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

/** The local end every connection accepted by a listener shares: known when it is bound to one address. */
interface LocalEnd { readonly address: string; readonly port: number }

function localEnd(a: net.AddressInfo): LocalEnd | null {
  if (a.address === '0.0.0.0' || a.address === '::' || a.address === '') return null; // wildcard: ask each socket
  return { address: normalizeIp(a.address), port: a.port };
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
