/**
 * A minimal NNTP client for the open-Usenet check: one connection, plain TCP or implicit TLS (NNTPS, port 563),
 * status lines and dot-terminated multi-line blocks read strictly with bounded memory, and articles written
 * dot-stuffed with exactly one terminator.
 *
 * Trust: talks to untrusted servers. Every read has an absolute deadline (a slow drip cannot stretch it); a line
 * longer than the limit, a NUL, or a status line that is not "ddd[ text]" is an NntpError ERR_NNTP_PROTOCOL at
 * once (memory never holds more than one line plus one socket chunk); a multi-line block stops at a line and byte
 * cap (the caller learns it was truncated, and the connection is then unusable and is closed); when the caller
 * reads slower than the server writes, the socket is paused, so the queue of unread lines stays bounded. Lines are
 * decoded as latin1 (one byte, one character). Commands never carry CR, LF or NUL (TypeError before writing).
 *
 * Standards: RFC 3977 (NNTP: status lines, multi-line blocks, dot-stuffing), RFC 4642 / RFC 8143 (implicit TLS on 563).
 */
import * as net from 'node:net';
import * as tls from 'node:tls';
import { performance } from 'node:perf_hooks';
import { RelayguardError } from '../../core/errors.ts';

export type NntpErrorCode = 'ERR_NNTP_TIMEOUT' | 'ERR_NNTP_CONNECTION' | 'ERR_NNTP_TLS' | 'ERR_NNTP_PROTOCOL' | 'ERR_NNTP_ABORTED';

export class NntpError extends RelayguardError {
  declare readonly code: NntpErrorCode;
  constructor(code: NntpErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = 'NntpError';
  }
}

/** A status line: "340 Ok, send article" → { code: 340, text: 'Ok, send article' }. */
export interface NntpResponse {
  readonly code: number;
  readonly text: string;
}

export interface NntpTranscriptLine {
  /** ms since the connection started. */
  readonly t: number;
  readonly dir: 'C' | 'S';
  readonly line: string;
}

export interface NntpConnectOptions {
  readonly host: string;
  readonly port: number;
  /** Implicit TLS (NNTPS). */
  readonly tls?: boolean;
  readonly localAddress?: string;
  /** TCP connect plus the TLS handshake, ms. */
  readonly connectTimeoutMs: number;
  readonly signal?: AbortSignal;
  /** Extra tls.connect options. Default: no certificate verification (the facts are returned). */
  readonly tlsOptions?: tls.ConnectionOptions;
  /** Longest line accepted, bytes without the line ending. Default 8192. */
  readonly maxLineLength?: number;
  /** Keep a transcript (at most maxTranscriptLines lines, each cut to 300 characters). */
  readonly transcript?: boolean;
  readonly maxTranscriptLines?: number;
}

export interface NntpTlsFacts {
  readonly protocol: string | null;
  readonly cipher: string;
  readonly authorized: boolean;
  readonly subject: string | null;
  readonly issuer: string | null;
  readonly validTo: string | null;
}

export interface BlockOptions {
  /** Absolute deadline (performance.now() ms) for the whole block. */
  readonly deadline: number;
  readonly maxLines: number;
  readonly maxBytes: number;
}

export interface BlockResult {
  readonly lines: number;
  readonly bytes: number;
  /** The terminating "." was read. False: the cap was hit (the connection is then closed). */
  readonly complete: boolean;
}

const STATUS = /^([1-5]\d\d)(?:[ \t](.*))?$/;
const QUEUE_HIGH = 512;

/** One NNTP connection. Not concurrent: one command at a time. */
export class NntpConnection {
  readonly #socket: net.Socket;
  readonly #started: number;
  readonly #maxLine: number;
  readonly #lines: string[] = [];
  #partial: Buffer[] = [];
  #partialLength = 0;
  #error: NntpError | null = null;
  #closed = false;
  #wake: (() => void) | null = null;
  readonly #transcript: NntpTranscriptLine[] | null;
  readonly #maxTranscript: number;
  readonly tlsFacts: NntpTlsFacts | null;
  /** Bytes received so far. */
  bytesIn = 0;

  private constructor(socket: net.Socket, started: number, options: NntpConnectOptions, tlsFacts: NntpTlsFacts | null) {
    this.#socket = socket;
    this.#started = started;
    this.#maxLine = options.maxLineLength ?? 8192;
    this.#transcript = options.transcript ? [] : null;
    this.#maxTranscript = options.maxTranscriptLines ?? 400;
    this.tlsFacts = tlsFacts;
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('end', () => this.#onClose());
    socket.on('close', () => this.#onClose());
    socket.on('error', (err) => this.#fail(new NntpError('ERR_NNTP_CONNECTION', `connection error: ${err.message}`, { cause: err })));
  }

  /** Connects (and for TLS completes the handshake) within connectTimeoutMs. */
  static async open(options: NntpConnectOptions): Promise<NntpConnection> {
    const started = performance.now();
    const base = { host: options.host, port: options.port, ...(options.localAddress !== undefined ? { localAddress: options.localAddress } : {}) };
    return new Promise<NntpConnection>((resolve, reject) => {
      let socket: net.Socket;
      let done = false;
      const finish = (err: NntpError | null, conn?: NntpConnection): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        options.signal?.removeEventListener('abort', onAbort);
        socket.removeListener('error', onError);
        if (err) { socket.destroy(); reject(err); } else resolve(conn!);
      };
      const onAbort = (): void => finish(new NntpError('ERR_NNTP_ABORTED', 'aborted (time budget) while connecting'));
      const onError = (e: Error): void => finish(new NntpError(options.tls && !(e as NodeJS.ErrnoException).syscall ? 'ERR_NNTP_TLS' : 'ERR_NNTP_CONNECTION',
        `${options.tls && !(e as NodeJS.ErrnoException).syscall ? 'TLS handshake failed' : 'connect failed'}: ${e.message}`, { cause: e }));
      const timer = setTimeout(() => finish(new NntpError('ERR_NNTP_TIMEOUT', `no connection within ${options.connectTimeoutMs} ms`)), options.connectTimeoutMs);
      if (options.signal?.aborted) { socket = new net.Socket(); onAbort(); return; }
      options.signal?.addEventListener('abort', onAbort, { once: true });
      if (options.tls) {
        const s = tls.connect({ rejectUnauthorized: false, ...options.tlsOptions, ...base, ...(net.isIP(options.host) ? {} : { servername: options.host }) });
        socket = s;
        s.once('secureConnect', () => {
          const cert = s.getPeerCertificate();
          const has = cert && Object.keys(cert).length > 0;
          const name = (o: Record<string, unknown> | undefined): string | null => (o ? Object.entries(o).map(([k, v]) => `${k}=${String(v)}`).join(', ') : null);
          const facts: NntpTlsFacts = {
            protocol: s.getProtocol(),
            cipher: s.getCipher()?.standardName ?? s.getCipher()?.name ?? '',
            authorized: s.authorized,
            subject: has ? name(cert.subject as unknown as Record<string, unknown>) : null,
            issuer: has ? name(cert.issuer as unknown as Record<string, unknown>) : null,
            validTo: has && cert.valid_to ? new Date(cert.valid_to).toISOString() : null,
          };
          finish(null, new NntpConnection(s, started, options, facts));
        });
      } else {
        socket = net.connect(base);
        socket.once('connect', () => finish(null, new NntpConnection(socket, started, options, null)));
      }
      socket.on('error', onError);
    });
  }

  get localAddress(): string | null { return this.#socket.localAddress ?? null; }
  get closed(): boolean { return this.#closed; }
  get transcript(): readonly NntpTranscriptLine[] { return this.#transcript ?? []; }

  #note(dir: 'C' | 'S', line: string): void {
    if (!this.#transcript || this.#transcript.length >= this.#maxTranscript) return;
    this.#transcript.push({ t: Math.round(performance.now() - this.#started), dir, line: line.length > 300 ? `${line.slice(0, 300)}...` : line });
  }

  #onData(chunk: Buffer): void {
    if (this.#error) return;
    this.bytesIn += chunk.length;
    let start = 0;
    for (;;) {
      const lf = chunk.indexOf(0x0a, start);
      if (lf < 0) break;
      const piece = chunk.subarray(start, lf);
      if (this.#partialLength + piece.length > this.#maxLine + 1) return this.#tooLong();
      const line = this.#partialLength > 0 ? Buffer.concat([...this.#partial, piece]) : piece;
      this.#partial = [];
      this.#partialLength = 0;
      const text = line.toString('latin1');
      this.#lines.push(text.endsWith('\r') ? text.slice(0, -1) : text);
      start = lf + 1;
    }
    if (start < chunk.length) {
      const rest = chunk.subarray(start);
      if (this.#partialLength + rest.length > this.#maxLine + 1) return this.#tooLong();
      this.#partial.push(Buffer.from(rest));
      this.#partialLength += rest.length;
    }
    if (this.#lines.length > QUEUE_HIGH) this.#socket.pause();
    this.#notify();
  }

  #tooLong(): void {
    this.#fail(new NntpError('ERR_NNTP_PROTOCOL', `a line longer than ${this.#maxLine} bytes (or one that never ends)`));
    this.#socket.destroy();
  }

  #onClose(): void {
    this.#closed = true;
    this.#notify();
  }

  #fail(err: NntpError): void {
    if (!this.#error) this.#error = err;
    this.#notify();
  }

  #notify(): void {
    const w = this.#wake;
    this.#wake = null;
    w?.();
  }

  /** The next line, by the deadline (absolute, performance.now() ms). */
  async #nextLine(deadline: number, what: string, signal?: AbortSignal): Promise<string> {
    for (;;) {
      if (this.#lines.length > 0) {
        const line = this.#lines.shift()!;
        if (this.#lines.length < QUEUE_HIGH / 2 && this.#socket.isPaused()) this.#socket.resume();
        return line;
      }
      if (this.#error) throw this.#error;
      if (this.#closed) throw new NntpError('ERR_NNTP_CONNECTION', `connection closed by the server while waiting for ${what}`);
      if (signal?.aborted) throw new NntpError('ERR_NNTP_ABORTED', `aborted (time budget) while waiting for ${what}`);
      const left = deadline - performance.now();
      if (left <= 0) throw new NntpError('ERR_NNTP_TIMEOUT', `no complete ${what} within the deadline`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(done, left);
        const onAbort = (): void => done();
        signal?.addEventListener('abort', onAbort, { once: true });
        function done(): void { clearTimeout(t); signal?.removeEventListener('abort', onAbort); resolve(); }
        this.#wake = done;
      });
    }
  }

  /** Reads one status line ("ddd text"). */
  async readStatus(deadline: number, what: string, signal?: AbortSignal): Promise<NntpResponse> {
    const line = await this.#nextLine(deadline, what, signal);
    this.#note('S', line);
    if (line.includes('\0')) throw new NntpError('ERR_NNTP_PROTOCOL', `NUL byte in the ${what}`);
    const m = STATUS.exec(line);
    if (!m) throw new NntpError('ERR_NNTP_PROTOCOL', `not an NNTP status line as ${what}: ${JSON.stringify(line.slice(0, 80))}`);
    return { code: Number(m[1]), text: (m[2] ?? '').trim() };
  }

  /** Sends one command line and reads its status line. */
  async command(line: string, deadline: number, signal?: AbortSignal): Promise<NntpResponse> {
    this.send(line);
    return this.readStatus(deadline, `the reply to ${line.split(' ')[0]}`, signal);
  }

  /** Writes one command line (CRLF added). */
  send(line: string): void {
    if (/[\r\n\0]/.test(line)) throw new TypeError('an NNTP command must not contain CR, LF or NUL');
    this.#note('C', line);
    this.#socket.write(`${line}\r\n`, 'latin1');
  }

  /**
   * Reads a multi-line block after its status line, dot-unstuffed, giving each line to onLine (which returns false
   * to stop early: the rest is not read, and the connection is closed). Stops at maxLines or maxBytes as well.
   */
  async readBlock(options: BlockOptions, onLine: (line: string) => boolean | void, signal?: AbortSignal): Promise<BlockResult> {
    let lines = 0;
    let bytes = 0;
    for (;;) {
      const raw = await this.#nextLine(options.deadline, 'the end of a multi-line block', signal);
      if (raw === '.') return { lines, bytes, complete: true };
      const line = raw.startsWith('.') ? raw.slice(1) : raw;
      lines++;
      bytes += raw.length + 2;
      if (lines <= 3) this.#note('S', line);
      if (onLine(line) === false || lines >= options.maxLines || bytes >= options.maxBytes) {
        this.#note('S', `[stopped reading after ${lines} lines, ${bytes} bytes]`);
        this.destroy();
        return { lines, bytes, complete: false };
      }
    }
  }

  /** Sends an article (lines without line endings): dot-stuffed, CRLF, then the single terminator. */
  sendArticle(lines: readonly string[]): void {
    const out: string[] = [];
    for (const l of lines) {
      if (/[\r\n\0]/.test(l)) throw new TypeError('an article line must not contain CR, LF or NUL');
      out.push(l.startsWith('.') ? `.${l}` : l);
    }
    this.#note('C', `[article: ${lines.length} lines]`);
    this.#socket.write(`${out.join('\r\n')}\r\n.\r\n`, 'latin1');
  }

  /** QUIT without waiting long for the reply, then close. */
  async quit(deadline: number): Promise<void> {
    if (this.#closed || this.#error) return this.destroy();
    try {
      this.send('QUIT');
      await this.readStatus(Math.min(deadline, performance.now() + 2000), 'the reply to QUIT');
    } catch { /* the session is over either way */ }
    this.destroy();
  }

  /** Closes at once (RST not needed: a FIN is enough for a server that got no article terminator). */
  destroy(): void {
    this.#closed = true;
    this.#socket.destroy();
    this.#notify();
  }
}
