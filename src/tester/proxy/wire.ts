/**
 * Purpose: the proxy battery's byte layer: one TCP connection to an untrusted proxy with a bounded read buffer,
 * per-step deadlines and an abort signal. Every read either completes, or ends with a typed failure the verdicts
 * can explain: 'timeout' (nothing came), 'tarpit' (something came, slower than the deadline: a slow drip),
 * 'overflow' (more than the cap without the expected end: endless headers, a CONNECT reply that never ends),
 * 'closed' (the peer hung up), 'aborted' (the per-target budget ran out).
 * Trust: the peer is hostile. Memory per connection is bounded by the cap plus one socket chunk; the socket is
 * destroyed on every failure; nothing waits without a deadline.
 * Standards: none (TCP).
 */
import * as net from 'node:net';
import { performance } from 'node:perf_hooks';

export type WireFailure = 'timeout' | 'tarpit' | 'overflow' | 'closed' | 'aborted' | 'refused' | 'unreachable';

export class WireError extends Error {
  readonly kind: WireFailure;
  /** Bytes received in the step that failed (a prefix, for the report). */
  readonly partial: Buffer;
  constructor(kind: WireFailure, message: string, partial: Buffer = Buffer.alloc(0)) {
    super(message);
    this.name = 'WireError';
    this.kind = kind;
    this.partial = partial;
  }
}

export interface ConnectOptions {
  readonly host: string;
  readonly port: number;
  readonly localAddress?: string;
  readonly timeoutMs: number;
  readonly signal: AbortSignal;
  /** Read-buffer cap, bytes. Default 16 KiB. */
  readonly maxBuffer?: number;
}

/** A matcher over the buffered bytes: the number of bytes that make up the awaited unit, or -1 (need more). */
export type Matcher = (buf: Buffer) => number;

export class Wire {
  readonly socket: net.Socket;
  readonly maxBuffer: number;
  readonly signal: AbortSignal;
  #buf: Buffer = Buffer.alloc(0);
  #closed = false;
  #error: Error | null = null;
  #wake: (() => void) | null = null;
  bytesIn = 0;
  bytesOut = 0;
  /** performance.now() of the first byte received, or null. */
  firstDataAt: number | null = null;
  readonly startedAt = performance.now();

  private constructor(socket: net.Socket, maxBuffer: number, signal: AbortSignal) {
    this.socket = socket;
    this.maxBuffer = maxBuffer;
    this.signal = signal;
    socket.on('data', (chunk: Buffer) => {
      this.firstDataAt ??= performance.now();
      this.bytesIn += chunk.length;
      // Keep at most the cap plus one chunk: a flood beyond it is an overflow the next read reports.
      if (this.#buf.length <= this.maxBuffer) this.#buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk]);
      if (this.#buf.length > this.maxBuffer) socket.pause();
      this.#notify();
    });
    socket.on('end', () => { this.#closed = true; this.#notify(); });
    socket.on('close', () => { this.#closed = true; this.#notify(); });
    socket.on('error', (err) => { this.#error = err; this.#closed = true; this.#notify(); });
  }

  #notify(): void {
    const w = this.#wake;
    this.#wake = null;
    w?.();
  }

  static connect(o: ConnectOptions): Promise<Wire> {
    return new Promise((resolve, reject) => {
      if (o.signal.aborted) { reject(new WireError('aborted', 'the time budget ran out before connecting')); return; }
      const socket = net.connect({ host: o.host, port: o.port, ...(o.localAddress ? { localAddress: o.localAddress } : {}), noDelay: true });
      const done = (err: WireError | null): void => {
        clearTimeout(timer);
        o.signal.removeEventListener('abort', onAbort);
        socket.off('connect', onConnect);
        socket.off('error', onError);
        if (err) { socket.destroy(); reject(err); return; }
        resolve(new Wire(socket, o.maxBuffer ?? 16 * 1024, o.signal));
      };
      const onConnect = (): void => done(null);
      const onError = (err: NodeJS.ErrnoException): void => {
        const kind: WireFailure = err.code === 'ECONNREFUSED' ? 'refused' : err.code === 'ECONNRESET' ? 'closed' : 'unreachable';
        done(new WireError(kind, `connect to ${o.host}:${o.port}: ${err.code ?? err.message}`));
      };
      const onAbort = (): void => done(new WireError('aborted', 'the time budget ran out while connecting'));
      const timer = setTimeout(() => done(new WireError('timeout', `no TCP connection to ${o.host}:${o.port} within ${o.timeoutMs} ms`)), o.timeoutMs);
      socket.once('connect', onConnect);
      socket.once('error', onError);
      o.signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  get localAddress(): string | null { return this.socket.localAddress ?? null; }
  get closed(): boolean { return this.#closed; }

  write(data: Buffer | string): void {
    if (this.#closed || this.socket.destroyed) return;
    const b = typeof data === 'string' ? Buffer.from(data, 'latin1') : data;
    this.bytesOut += b.length;
    this.socket.write(b);
  }

  /** Bytes already buffered, without waiting (consumed). */
  takeBuffered(): Buffer {
    const b = this.#buf;
    this.#buf = Buffer.alloc(0);
    if (this.socket.isPaused()) this.socket.resume();
    return b;
  }

  /**
   * Waits until the matcher finds a complete unit in the buffered bytes and returns it (consumed), within
   * timeoutMs in total (not per byte: a slow drip ends as 'tarpit'). Throws WireError.
   */
  async read(match: Matcher, timeoutMs: number, what: string): Promise<Buffer> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const n = this.#buf.length > 0 ? match(this.#buf.subarray(0, Math.min(this.#buf.length, this.maxBuffer))) : -1;
      if (n >= 0) {
        const out = this.#buf.subarray(0, n);
        this.#buf = this.#buf.subarray(n);
        if (this.socket.isPaused() && this.#buf.length <= this.maxBuffer) this.socket.resume();
        return Buffer.from(out);
      }
      if (this.#buf.length >= this.maxBuffer) {
        const partial = Buffer.from(this.#buf.subarray(0, 256));
        this.destroy();
        throw new WireError('overflow', `${what}: more than ${this.maxBuffer} bytes without an end`, partial);
      }
      if (this.signal.aborted) { this.destroy(); throw new WireError('aborted', `${what}: the time budget ran out`, Buffer.from(this.#buf.subarray(0, 256))); }
      if (this.#closed) {
        const partial = Buffer.from(this.#buf.subarray(0, 256));
        throw new WireError('closed', `${what}: the connection was closed${this.#buf.length > 0 ? ` after ${this.#buf.length} bytes` : ' without a reply'}${this.#error ? ` (${(this.#error as NodeJS.ErrnoException).code ?? this.#error.message})` : ''}`, partial);
      }
      const left = deadline - performance.now();
      if (left <= 0) {
        const partial = Buffer.from(this.#buf.subarray(0, 256));
        const had = this.#buf.length;
        this.destroy();
        if (had > 0) throw new WireError('tarpit', `${what}: only ${had} bytes within ${timeoutMs} ms (slow drip or tarpit)`, partial);
        throw new WireError('timeout', `${what}: no reply within ${timeoutMs} ms`, partial);
      }
      await new Promise<void>((resolve) => {
        const finish = (): void => { clearTimeout(t); this.signal.removeEventListener('abort', finish); this.#wake = null; resolve(); };
        const t = setTimeout(finish, left);
        this.#wake = finish;
        this.signal.addEventListener('abort', finish, { once: true });
      });
    }
  }

  /** Exactly n bytes. */
  readBytes(n: number, timeoutMs: number, what: string): Promise<Buffer> {
    return this.read((b) => (b.length >= n ? n : -1), timeoutMs, what);
  }

  destroy(): void {
    this.#closed = true;
    this.socket.destroy();
    this.#notify();
  }
}

/** Matches a header section ending in CRLF CRLF (or LF LF). */
export const HEADER_END: Matcher = (b) => {
  const crlf = b.indexOf('\r\n\r\n');
  const lf = b.indexOf('\n\n');
  if (crlf < 0 && lf < 0) return -1;
  if (crlf < 0) return lf + 2;
  if (lf < 0) return crlf + 4;
  return Math.min(crlf + 4, lf + 2);
};

/** Matches one line ending in LF. */
export const LINE: Matcher = (b) => {
  const i = b.indexOf('\n');
  return i < 0 ? -1 : i + 1;
};

/** Matches a complete SMTP reply (multi-line "250-" ... "250 "). */
export const SMTP_REPLY: Matcher = (b) => {
  let start = 0;
  for (;;) {
    const i = b.indexOf('\n', start);
    if (i < 0) return -1;
    const line = b.subarray(start, i).toString('latin1');
    if (!/^\d{3}-/.test(line)) return i + 1;
    start = i + 1;
  }
};

/** Printable text of untrusted bytes for a report: control bytes as "?", at most n characters. */
export function printable(b: Buffer | string, n = 160): string {
  const s = (typeof b === 'string' ? b : b.toString('latin1')).replace(/[\r\n]+$/, '');
  const t = s.replace(/\r?\n/g, '\\n').replace(/[^\x20-\x7e]/g, '?');
  return t.length > n ? `${t.slice(0, n)}...` : t;
}
