/**
 * A scripted fake SMTP server for client tests (hostile-inputs.md 2.3 item 7, "faulty next hop"): a loopback
 * net server whose answer to each command comes from a table of steps or functions. It can send any greeting,
 * answer anything with any bytes (hostile replies, injected lines), wait, hang, close, reset (RST), switch to
 * TLS, and in DATA close after N bytes or never answer the final dot. It records everything the client sent,
 * byte-exact (after STARTTLS: the decrypted bytes), per connection.
 *
 * Commands are lines ending in LF; DATA content runs until CRLF "." CRLF (the DATA line's own CRLF counts).
 */
import * as net from 'node:net';
import * as tls from 'node:tls';

/** What the fake does for one command (or the greeting, or the end of DATA). */
export interface FakeStep {
  /** Wait this long first. */
  readonly delayMs?: number;
  /** Bytes to send, verbatim (include the CRLFs). Nothing is sent when absent. */
  readonly reply?: string | Buffer;
  /** Send the reply bytes one at a time with this pause between them (a slow drip). */
  readonly dripMs?: number;
  /**
   * Then: 'close' (FIN), 'reset' (RST via resetAndDestroy), 'hang' (read on, never answer anything again),
   * 'starttls' (discard buffered plaintext and become a TLS server), 'data' (read message content; see data).
   */
  readonly then?: 'close' | 'reset' | 'hang' | 'starttls' | 'data';
  /** For then: 'data'. */
  readonly data?: FakeDataStep;
}

export interface FakeDataStep {
  /** Close (FIN) once this many content bytes have arrived, without answering. */
  readonly closeAfterBytes?: number;
  /** Reset (RST) once this many content bytes have arrived, without answering. */
  readonly resetAfterBytes?: number;
  /** Answer to the final dot; default "250 2.0.0 Ok: queued as FAKE<n>\r\n". 'none' never answers it. */
  readonly end?: FakeStep | 'none';
}

export interface FakeCommand {
  /** The verb in upper case ("MAIL"), or '' for an empty line. */
  readonly verb: string;
  /** The rest of the line after the verb and one space. */
  readonly arg: string;
  /** The line as received, without its line ending (latin1). */
  readonly line: string;
}

export type FakeAnswer = string | Buffer | FakeStep;
export type FakeHandler = FakeAnswer | ((cmd: FakeCommand, session: FakeSession) => FakeAnswer | Promise<FakeAnswer>);

export interface FakeMtaOptions {
  /** The greeting; default "220 fake.test ESMTP fake\r\n". null sends nothing (and waits for commands). */
  readonly greeting?: FakeAnswer | null;
  /** Per-verb behaviour (upper-case keys); '*' answers anything not listed. Merged over the defaults. */
  readonly commands?: Readonly<Record<string, FakeHandler>>;
  /** Certificate and key for STARTTLS (advertised by the default EHLO) or implicit TLS. */
  readonly tls?: { readonly cert: string; readonly key: string };
  /** TLS from the first byte. */
  readonly implicitTls?: boolean;
  /** Default EHLO capabilities after the first line. Default PIPELINING, SIZE, 8BITMIME (+ STARTTLS). */
  readonly capabilities?: readonly string[];
  readonly host?: string;
}

export interface FakeSession {
  readonly index: number;
  readonly remoteAddress: string;
  readonly remotePort: number;
  /** Every byte the client sent, in order (plaintext before TLS, decrypted after). */
  received(): Buffer;
  /** The received bytes as they arrived, chunk by chunk (to see what was written together). */
  readonly chunks: readonly Buffer[];
  /** Command lines, without line endings (latin1). */
  readonly commands: readonly string[];
  /** Each DATA content exactly as on the wire, from after the DATA line through the terminator (if seen). */
  readonly messages: readonly Buffer[];
  /** Plaintext bytes thrown away at STARTTLS. */
  readonly discardedAtStartTls: number;
  readonly tls: boolean;
  /** Resolves when the connection is closed. */
  readonly closed: Promise<void>;
  write(bytes: string | Buffer): void;
  end(): void;
  reset(): void;
}

export interface FakeMta {
  readonly host: string;
  readonly port: number;
  readonly sessions: readonly FakeSession[];
  /** The next session to connect (or the n-th, counting from 0). */
  session(index?: number): Promise<FakeSession>;
  close(): Promise<void>;
}

const MAX_RECORD = 64 * 1024 * 1024;

export async function startFakeMta(options: FakeMtaOptions = {}): Promise<FakeMta> {
  const host = options.host ?? '127.0.0.1';
  const sessions: Session[] = [];
  const waiters: { index: number; resolve: (s: FakeSession) => void }[] = [];
  const sockets = new Set<net.Socket>();
  const ctx = options.tls ? tls.createSecureContext({ cert: options.tls.cert, key: options.tls.key }) : null;
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => { /* the client may reset */ });
    const s = new Session(sessions.length, socket, options, ctx);
    sessions.push(s);
    for (const w of waiters.filter((x) => x.index === s.index)) w.resolve(s);
    s.run().catch(() => s.destroy());
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port: 0 }, () => { server.off('error', reject); resolve(); });
  });
  const port = (server.address() as net.AddressInfo).port;
  let next = 0;
  return {
    host,
    port,
    sessions,
    session(index?: number): Promise<FakeSession> {
      const i = index ?? next++;
      const have = sessions[i];
      if (have) return Promise.resolve(have);
      return new Promise((resolve) => waiters.push({ index: i, resolve }));
    },
    async close(): Promise<void> {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sessions) s.destroy();
      for (const so of sockets) so.destroy();
      await closed;
    },
  };
}

// -------------------------------------------------------------------------------------------------------

function defaultHandlers(options: FakeMtaOptions): Record<string, FakeHandler> {
  return {
    EHLO: (_c, s) => {
      const caps = [...(options.capabilities ?? ['PIPELINING', 'SIZE 10240000', '8BITMIME'])];
      if (options.tls && !s.tls && !options.capabilities) caps.push('STARTTLS');
      const lines = ['fake.test', ...caps];
      return lines.map((l, i) => `250${i === lines.length - 1 ? ' ' : '-'}${l}\r\n`).join('');
    },
    HELO: '250 fake.test\r\n',
    MAIL: '250 2.1.0 Ok\r\n',
    RCPT: '250 2.1.5 Ok\r\n',
    DATA: { reply: '354 End data with <CR><LF>.<CR><LF>\r\n', then: 'data' },
    RSET: '250 2.0.0 Ok\r\n',
    NOOP: '250 2.0.0 Ok\r\n',
    VRFY: '252 2.0.0 Maybe\r\n',
    EXPN: '502 5.5.1 Error: command not implemented\r\n',
    QUIT: { reply: '221 2.0.0 Bye\r\n', then: 'close' },
    STARTTLS: () => (options.tls ? { reply: '220 2.0.0 Ready to start TLS\r\n', then: 'starttls' } : '502 5.5.1 Error: command not implemented\r\n'),
    AUTH: '535 5.7.8 Error: authentication failed\r\n',
    '*': '502 5.5.2 Error: command not recognized\r\n',
  };
}

class Session implements FakeSession {
  readonly index: number;
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly chunks: Buffer[] = [];
  readonly commands: string[] = [];
  readonly messages: Buffer[] = [];
  discardedAtStartTls = 0;
  tls: boolean;
  readonly closed: Promise<void>;
  readonly #options: FakeMtaOptions;
  readonly #handlers: Record<string, FakeHandler>;
  readonly #ctx: tls.SecureContext | null;
  #socket: net.Socket;
  #buf: Buffer = Buffer.alloc(0);
  #recorded = 0;
  #ended = false;
  #wake: (() => void) | null = null;
  #hung = false;
  #onData = (d: Buffer): void => {
    if (this.#recorded < MAX_RECORD) {
      this.chunks.push(d);
      this.#recorded += d.length;
    }
    this.#buf = this.#buf.length === 0 ? d : Buffer.concat([this.#buf, d]);
    this.#notify();
  };
  #onEnd = (): void => { this.#ended = true; this.#notify(); };
  #resolveClosed!: () => void;

  constructor(index: number, socket: net.Socket, options: FakeMtaOptions, ctx: tls.SecureContext | null) {
    this.index = index;
    this.remoteAddress = socket.remoteAddress ?? '';
    this.remotePort = socket.remotePort ?? 0;
    this.#options = options;
    this.#handlers = { ...defaultHandlers(options), ...options.commands };
    this.#ctx = ctx;
    this.tls = false;
    this.closed = new Promise((resolve) => { this.#resolveClosed = resolve; });
    socket.once('close', () => this.#resolveClosed());
    this.#socket = socket;
  }

  received(): Buffer { return Buffer.concat(this.chunks); }

  write(bytes: string | Buffer): void {
    if (!this.#socket.destroyed && this.#socket.writable) this.#socket.write(typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes);
  }

  end(): void {
    this.#ended = true;
    this.#socket.end();
    this.#notify();
  }

  reset(): void {
    this.#ended = true;
    if (!this.#socket.destroyed) this.#socket.resetAndDestroy();
    this.#notify();
  }

  destroy(): void {
    this.#ended = true;
    this.#socket.destroy();
    this.#notify();
  }

  async run(): Promise<void> {
    if (this.#options.implicitTls) {
      if (!this.#ctx) throw new Error('implicitTls needs tls');
      await this.#startTls(false);
    } else {
      this.#listen(this.#socket);
    }
    const greeting = this.#options.greeting === undefined ? '220 fake.test ESMTP fake\r\n' : this.#options.greeting;
    if (greeting !== null && !(await this.#perform(greeting))) return;
    for (;;) {
      const line = await this.#nextLine();
      if (line === null) return;
      this.commands.push(line);
      if (this.#hung) continue;
      const m = /^([A-Za-z]*)(?: (.*))?$/s.exec(line);
      const verb = (m?.[1] ?? '').toUpperCase();
      const cmd: FakeCommand = { verb, arg: m?.[2] ?? '', line };
      const h = this.#handlers[verb] ?? this.#handlers['*']!;
      const answer = typeof h === 'function' ? await h(cmd, this) : h;
      if (!(await this.#perform(answer))) return;
    }
  }

  /** Carries out a step; false when the session is over. */
  async #perform(answer: FakeAnswer): Promise<boolean> {
    const step: FakeStep = typeof answer === 'string' || Buffer.isBuffer(answer) ? { reply: answer } : answer;
    if (step.delayMs) await sleep(step.delayMs);
    if (step.reply !== undefined) {
      const bytes = typeof step.reply === 'string' ? Buffer.from(step.reply, 'latin1') : step.reply;
      if (step.dripMs) {
        for (let i = 0; i < bytes.length && !this.#socket.destroyed; i++) {
          this.write(bytes.subarray(i, i + 1));
          await sleep(step.dripMs);
        }
      } else {
        this.write(bytes);
      }
    }
    switch (step.then) {
      case 'close': this.end(); return false;
      case 'reset': this.reset(); return false;
      case 'hang': this.#hung = true; return true;
      case 'starttls': await this.#startTls(true); return !this.#socket.destroyed;
      case 'data': return this.#data(step.data ?? {});
      default: return true;
    }
  }

  async #data(d: FakeDataStep): Promise<boolean> {
    // State of the terminator search: the DATA line's CRLF counts as the one before ".".
    let matched = 2; // bytes of "\r\n.\r\n" matched so far
    const TERM = Buffer.from('\r\n.\r\n');
    const parts: Buffer[] = [];
    let size = 0;
    const limit = d.closeAfterBytes ?? d.resetAfterBytes;
    for (;;) {
      if (this.#buf.length === 0) {
        if (this.#ended) { this.messages.push(Buffer.concat(parts)); return false; }
        await this.#wait();
        continue;
      }
      const chunk = this.#buf;
      let take = chunk.length;
      let done = false;
      for (let i = 0; i < chunk.length; i++) {
        const c = chunk[i]!;
        if (c === TERM[matched]) matched++;
        else matched = c === 0x0d ? 1 : 0;
        if (matched === TERM.length) { take = i + 1; done = true; break; }
      }
      if (limit !== undefined && size + take >= limit) {
        parts.push(chunk.subarray(0, limit - size));
        this.messages.push(Buffer.concat(parts));
        this.#buf = Buffer.alloc(0);
        if (d.resetAfterBytes !== undefined) this.reset(); else this.destroy();
        return false;
      }
      parts.push(chunk.subarray(0, take));
      size += take;
      this.#buf = chunk.subarray(take);
      if (done) break;
    }
    this.messages.push(Buffer.concat(parts));
    if (d.end === 'none') {
      this.#hung = true;
      return true;
    }
    return this.#perform(d.end ?? `250 2.0.0 Ok: queued as FAKE${this.messages.length}\r\n`);
  }

  async #startTls(plaintextFirst: boolean): Promise<void> {
    if (!this.#ctx) throw new Error('STARTTLS needs tls');
    const plain = this.#socket;
    if (plaintextFirst) {
      // What the client pipelined after STARTTLS is thrown away (CVE-2011-0411 discipline on the fake's side).
      this.discardedAtStartTls += this.#buf.length;
      this.#buf = Buffer.alloc(0);
      plain.off('data', this.#onData);
      plain.off('end', this.#onEnd);
      plain.off('close', this.#onEnd);
      plain.pause();
    }
    const secure = new tls.TLSSocket(plain, { isServer: true, secureContext: this.#ctx });
    secure.on('error', () => { /* the client may abort the handshake */ });
    this.#socket = secure;
    await new Promise<void>((resolve, reject) => {
      secure.once('secure', () => resolve());
      secure.once('close', () => reject(new Error('closed during TLS handshake')));
    });
    this.tls = true;
    this.#listen(secure);
  }

  #listen(s: net.Socket): void {
    s.on('data', this.#onData);
    s.on('end', this.#onEnd);
    s.on('close', this.#onEnd);
  }

  async #nextLine(): Promise<string | null> {
    for (;;) {
      const lf = this.#buf.indexOf(0x0a);
      if (lf >= 0) {
        const end = lf > 0 && this.#buf[lf - 1] === 0x0d ? lf - 1 : lf;
        const line = this.#buf.subarray(0, end).toString('latin1');
        this.#buf = this.#buf.subarray(lf + 1);
        return line;
      }
      if (this.#ended) return null;
      await this.#wait();
    }
  }

  #wait(): Promise<void> {
    return new Promise((resolve) => { this.#wake = resolve; });
  }

  #notify(): void {
    const w = this.#wake;
    this.#wake = null;
    w?.();
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
