/**
 * Pull-style reading from a socket: the session asks for the next chunk when it wants one, so a client that
 * floods us is held back by TCP flow control instead of filling memory. Each wait has an idle deadline; the
 * server can interrupt a wait (shutdown, session deadline).
 */
import type { Socket } from 'node:net';

export class InputInterrupted extends Error {
  readonly reason: 'timeout' | 'shutdown' | 'session-timeout';
  constructor(reason: 'timeout' | 'shutdown' | 'session-timeout') {
    super(`Input interrupted: ${reason}`);
    this.name = 'InputInterrupted';
    this.reason = reason;
  }
}

interface Waiter {
  resolve(chunk: Buffer | null): void;
  reject(err: Error): void;
}

export class SocketInput {
  readonly socket: Socket;
  #waiter: Waiter | null = null;
  #ended = false;
  #interrupted: InputInterrupted | null = null;
  #timer: NodeJS.Timeout | null = null;
  #timeoutMs = 0;
  readonly #onReadable = (): void => this.#wake();
  readonly #onEnd = (): void => { this.#ended = true; this.#wake(); };
  readonly #onError = (): void => { this.#ended = true; this.#wake(); };

  constructor(socket: Socket) {
    this.socket = socket;
    socket.on('readable', this.#onReadable);
    socket.on('end', this.#onEnd);
    socket.on('close', this.#onEnd);
    socket.on('error', this.#onError);
  }

  /** True once the peer closed or the socket failed. */
  get ended(): boolean { return this.#ended; }

  /** Bytes the socket has buffered that we have not read yet. */
  get pending(): number { return this.socket.readableLength; }

  /** The next chunk, or null at end of input. Rejects with InputInterrupted on timeout or interrupt. */
  read(timeoutMs: number): Promise<Buffer | null> {
    if (this.#interrupted) return Promise.reject(this.#interrupted);
    const chunk = this.socket.read() as Buffer | null;
    if (chunk !== null) return Promise.resolve(chunk);
    if (this.#ended || this.socket.destroyed || this.socket.readableEnded) return Promise.resolve(null);
    return new Promise((resolve, reject) => {
      this.#waiter = { resolve, reject };
      this.#arm(timeoutMs);
    });
  }

  /**
   * Waits until the socket's output buffer drains (or the socket closes). A client that does not read its
   * replies cannot hold the session forever: the wait ends with InputInterrupted('timeout') after timeoutMs,
   * and an interrupt (shutdown, session deadline) ends it too.
   */
  waitWritable(timeoutMs: number): Promise<void> {
    if (this.#interrupted) return Promise.reject(this.#interrupted);
    const s = this.socket;
    if (!s.writableNeedDrain || s.destroyed) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const done = (err?: Error): void => {
        clearTimeout(timer);
        s.off('drain', onDrain);
        s.off('close', onDrain);
        this.#drainWaiter = null;
        if (err) reject(err); else resolve();
      };
      const onDrain = (): void => done();
      const timer = setTimeout(() => done(new InputInterrupted('timeout')), timeoutMs);
      timer.unref();
      s.on('drain', onDrain);
      s.on('close', onDrain);
      this.#drainWaiter = done;
    });
  }

  #drainWaiter: ((err?: Error) => void) | null = null;

  /** Reads and throws away whatever the socket holds now (STARTTLS: plaintext sent before the handshake). */
  discardPending(): number {
    let n = 0;
    for (let c = this.socket.read() as Buffer | null; c !== null; c = this.socket.read() as Buffer | null) n += c.length;
    return n;
  }

  /** Makes the pending wait (and every later one) fail with the reason. */
  interrupt(reason: 'timeout' | 'shutdown' | 'session-timeout'): void {
    if (this.#interrupted) return;
    this.#interrupted = new InputInterrupted(reason);
    const w = this.#waiter;
    this.#waiter = null;
    this.#disarm();
    w?.reject(this.#interrupted);
    this.#drainWaiter?.(this.#interrupted);
  }

  /** Stops listening (before the socket is handed to TLS). */
  detach(): void {
    this.#disarm();
    this.socket.off('readable', this.#onReadable);
    this.socket.off('end', this.#onEnd);
    this.socket.off('close', this.#onEnd);
    this.socket.off('error', this.#onError);
    const w = this.#waiter;
    this.#waiter = null;
    w?.resolve(null);
  }

  #arm(timeoutMs: number): void {
    if (timeoutMs <= 0) return;
    if (this.#timer && this.#timeoutMs === timeoutMs) {
      this.#timer.refresh();
      return;
    }
    this.#disarm();
    this.#timeoutMs = timeoutMs;
    this.#timer = setTimeout(() => {
      const w = this.#waiter;
      if (!w) return;
      this.#waiter = null;
      w.reject(new InputInterrupted('timeout'));
    }, timeoutMs);
    this.#timer.unref();
  }

  #disarm(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
  }

  #wake(): void {
    const w = this.#waiter;
    if (!w) return;
    const chunk = this.socket.read() as Buffer | null;
    if (chunk !== null) {
      this.#waiter = null;
      w.resolve(chunk);
      return;
    }
    if (this.#ended || this.socket.destroyed || this.socket.readableEnded) {
      this.#waiter = null;
      w.resolve(null);
    }
  }
}
