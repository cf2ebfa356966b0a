/**
 * Purpose: the proxy battery's sink: the SMTP listener the tester asks proxies to connect to. It greets like a
 * mail server ("220 <name> ESMTP relayguard-sink <nonce>"; the nonce lets the tester tell its own sink from a
 * proxy that fakes a banner or connects it somewhere else), answers EHLO/HELO/NOOP/RSET/QUIT and refuses everything
 * else (500), and records each probe tag it sees on any line (an EHLO name through a tunnel, an HTTP request line
 * or an SMTP dialogue in a POST body) with the address the connection came from: the proxy's egress address.
 * Arrival at this sink is the only thing that makes a proxy OPEN.
 *
 * Why not the relay sink (sink.ts, the SmtpServer): a proxy forwards HTTP request lines before any SMTP, speaks
 * before the greeting (an early talker), and sends the tag in lines the SMTP engine never passes to a handler (a
 * GET path). This listener is deliberately tiny: it never accepts MAIL, so no message can be relayed through it,
 * and stores nothing on disk.
 * Trust: listens for untrusted proxies. Lines are capped at 1 KiB, connections at 64 lines, 20 s idle and 200 at
 * once; at most maxArrivals arrivals are kept.
 * Standards: RFC 5321 (greeting, EHLO, QUIT replies only).
 */
import { EventEmitter } from 'node:events';
import * as net from 'node:net';
import { randomBytes } from 'node:crypto';

/** Probe tags (proof.ts createTagger): "rg-" + 8 hex run id + "-" + a base-36 number. Same as sink.ts, which this
 * file does not import (it would load the SMTP server). */
const TAG_PATTERN = /rg-[0-9a-f]{8}-[0-9a-z]{1,8}/gi;

export interface ProxyArrival {
  readonly tag: string;
  /** The proxy's egress address (the connection's remote address at the sink). */
  readonly peerAddress: string;
  readonly peerPort: number;
  /** The sink listener it reached: its address, port and kind. */
  readonly sinkAddress: string;
  readonly sinkPort: number;
  readonly kind: 'mail' | 'control';
  /** The line that carried the tag (printable, capped). */
  readonly line: string;
  /** How the tag came: 'smtp' (EHLO/HELO), 'http' (a request line: GET/POST), 'other'. */
  readonly via: 'smtp' | 'http' | 'other';
  /** ms since the epoch. */
  readonly at: number;
}

export interface ProxySinkListen {
  readonly address: string;
  /** 0 = any free port. */
  readonly port: number;
  readonly kind: 'mail' | 'control';
}

export interface ProxySinkOptions {
  readonly listen: readonly ProxySinkListen[];
  /** Greeting name. Default "relayguard-sink". */
  readonly hostname?: string;
  /** Default 10 000. */
  readonly maxArrivals?: number;
  /** Idle time before the sink closes a connection, ms. Default 20 000. */
  readonly idleMs?: number;
}

export interface BoundListener { readonly address: string; readonly port: number; readonly kind: 'mail' | 'control'; readonly family: 4 | 6 }

interface SinkState { readonly events: EventEmitter; readonly sockets: Set<net.Socket>; connections: number }

const MAX_LINE = 1024;
const MAX_LINES = 64;

export class ProxySink {
  readonly nonce: string;
  readonly hostname: string;
  readonly listeners: readonly BoundListener[];
  readonly #servers: net.Server[];
  readonly #arrivals: ProxyArrival[];
  readonly #events: EventEmitter;
  readonly #state: SinkState;

  private constructor(servers: net.Server[], listeners: BoundListener[], nonce: string, hostname: string, arrivals: ProxyArrival[], state: SinkState) {
    this.#servers = servers;
    this.listeners = listeners;
    this.nonce = nonce;
    this.hostname = hostname;
    this.#arrivals = arrivals;
    this.#state = state;
    this.#events = state.events;
  }

  /** Connections seen (any listener). */
  get connections(): number { return this.#state.connections; }

  get arrivals(): readonly ProxyArrival[] { return this.#arrivals; }

  /** The greeting line the sink sends (without CRLF). */
  get banner(): string { return `220 ${this.hostname} ESMTP relayguard-sink ${this.nonce}`; }

  /** The listener of a family and kind, or undefined. */
  listener(family: 4 | 6, kind: 'mail' | 'control'): BoundListener | undefined {
    return this.listeners.find((l) => l.family === family && l.kind === kind);
  }

  static async start(options: ProxySinkOptions): Promise<ProxySink> {
    const nonce = randomBytes(6).toString('hex');
    const hostname = options.hostname ?? 'relayguard-sink';
    const maxArrivals = options.maxArrivals ?? 10_000;
    const idleMs = options.idleMs ?? 20_000;
    const arrivals: ProxyArrival[] = [];
    const servers: net.Server[] = [];
    const bound: BoundListener[] = [];
    const state: SinkState = { events: new EventEmitter(), sockets: new Set(), connections: 0 };
    state.events.setMaxListeners(0);
    const record = (a: ProxyArrival): void => {
      if (arrivals.length < maxArrivals) arrivals.push(a);
      state.events.emit('arrival', a);
    };
    try {
      for (const l of options.listen) {
        const server = net.createServer({ noDelay: true }, (socket) => {
          const me = bound.find((b) => b.port === (socket.address() as net.AddressInfo).port && b.kind === l.kind) ?? bound.find((b) => b.kind === l.kind)!;
          state.connections++;
          if (state.sockets.size >= 200) { socket.destroy(); return; }
          state.sockets.add(socket);
          socket.once('close', () => state.sockets.delete(socket));
          serve(socket, me, `220 ${hostname} ESMTP relayguard-sink ${nonce}`, hostname, idleMs, record);
        });
        await new Promise<void>((resolve, reject) => {
          server.once('error', reject);
          server.listen({ host: l.address, port: l.port, exclusive: true }, () => { server.off('error', reject); resolve(); });
        });
        servers.push(server);
        const a = server.address() as net.AddressInfo;
        bound.push({ address: a.address, port: a.port, kind: l.kind, family: net.isIPv6(a.address) ? 6 : 4 });
      }
    } catch (err) {
      for (const s of servers) s.close();
      throw err;
    }
    return new ProxySink(servers, bound, nonce, hostname, arrivals, state);
  }

  arrivalsFor(tag: string): ProxyArrival[] {
    const t = tag.toLowerCase();
    return this.#arrivals.filter((a) => a.tag === t);
  }

  /** Resolves with the arrivals of the tag as soon as there is one, or after waitMs (empty), or on abort. */
  async waitFor(tag: string, waitMs: number, signal?: AbortSignal): Promise<ProxyArrival[]> {
    const t = tag.toLowerCase();
    if (this.arrivalsFor(t).length > 0 || waitMs <= 0 || signal?.aborted) return this.arrivalsFor(t);
    await new Promise<void>((resolve) => {
      const finish = (): void => {
        clearTimeout(timer);
        this.#events.off('arrival', check);
        signal?.removeEventListener('abort', finish);
        resolve();
      };
      const check = (a: ProxyArrival): void => { if (a.tag === t) finish(); };
      const timer = setTimeout(finish, waitMs);
      this.#events.on('arrival', check);
      signal?.addEventListener('abort', finish, { once: true });
    });
    return this.arrivalsFor(t);
  }

  async close(): Promise<void> {
    for (const s of this.#state.sockets) s.destroy();
    await Promise.all(this.#servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }
}

function serve(socket: net.Socket, me: BoundListener, banner: string, hostname: string, idleMs: number, record: (a: ProxyArrival) => void): void {
  let buf = '';
  let lines = 0;
  socket.setTimeout(idleMs, () => socket.destroy());
  socket.on('error', () => { /* a proxy hanging up is its business */ });
  const reply = (s: string): void => { if (!socket.destroyed && socket.writable) socket.write(`${s}\r\n`); };
  reply(banner);
  const peerAddress = (socket.remoteAddress ?? '').replace(/^::ffff:/i, '');
  const peerPort = socket.remotePort ?? 0;
  socket.on('data', (chunk: Buffer) => {
    buf += chunk.toString('latin1');
    for (;;) {
      let i = buf.indexOf('\n');
      if (i < 0) {
        if (buf.length > MAX_LINE) { i = MAX_LINE; } else break;
      }
      const line = buf.slice(0, i).replace(/\r$/, '').slice(0, MAX_LINE);
      buf = buf.slice(i + 1);
      lines++;
      const tags = new Set<string>();
      for (const m of line.matchAll(TAG_PATTERN)) tags.add(m[0].toLowerCase());
      const verb = (/^\s*(\S+)/.exec(line)?.[1] ?? '').toUpperCase();
      const via: ProxyArrival['via'] = verb === 'EHLO' || verb === 'HELO' ? 'smtp' : /^(GET|POST|HEAD|PUT|CONNECT|OPTIONS)$/.test(verb) ? 'http' : 'other';
      for (const tag of tags) {
        record({ tag, peerAddress, peerPort, sinkAddress: me.address, sinkPort: me.port, kind: me.kind, line: line.replace(/[^\x20-\x7e]/g, '?').slice(0, 200), via, at: Date.now() });
      }
      if (verb === 'EHLO') reply(`250-${hostname}\r\n250 8BITMIME`);
      else if (verb === 'HELO' || verb === 'NOOP' || verb === 'RSET') reply(`250 2.0.0 ${hostname}`);
      else if (verb === 'QUIT') { reply('221 2.0.0 Bye'); socket.end(); return; }
      else if (line.trim() !== '') reply('500 5.5.2 relayguard-sink: only EHLO, HELO, NOOP, RSET and QUIT');
      if (lines >= MAX_LINES) { reply('421 4.7.0 too many lines'); socket.end(); return; }
    }
  });
}
