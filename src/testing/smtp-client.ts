/**
 * A byte-exact SMTP test client: send any bytes, read replies one at a time, see when the server closes.
 * Used by the protocol, hostile-input and relay-battery tests (the Exim test-DSL idea: exact bytes in,
 * reply class and state out).
 */
import * as net from 'node:net';
import * as tls from 'node:tls';

export interface TestReply {
  readonly code: number;
  readonly lines: readonly string[];
  /** All lines joined with "\n", without codes. */
  readonly text: string;
  /** The enhanced status code of the last line, if any. */
  readonly enhanced: string | null;
}

export class RawSmtpClient {
  #socket: net.Socket;
  #buf = '';
  #closed = false;
  #waiters: (() => void)[] = [];
  /** Every byte received, for debugging failed assertions. */
  transcript = '';

  private constructor(socket: net.Socket) {
    this.#socket = socket;
    this.#attach(socket);
  }

  static connect(port: number, options: { host?: string; localAddress?: string; tls?: boolean; timeoutMs?: number } = {}): Promise<RawSmtpClient> {
    const host = options.host ?? '127.0.0.1';
    return new Promise((resolve, reject) => {
      const opts = { host, port, ...(options.localAddress ? { localAddress: options.localAddress } : {}) };
      const socket = options.tls
        ? tls.connect({ ...opts, rejectUnauthorized: false, servername: 'localhost' })
        : net.connect(opts);
      const onErr = (e: Error): void => reject(e);
      socket.once('error', onErr);
      socket.once(options.tls ? 'secureConnect' : 'connect', () => {
        socket.off('error', onErr);
        resolve(new RawSmtpClient(socket));
      });
    });
  }

  #attach(socket: net.Socket): void {
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => { this.#buf += d; this.transcript += d; this.#wake(); });
    socket.on('close', () => { this.#closed = true; this.#wake(); });
    socket.on('error', () => { this.#closed = true; this.#wake(); });
  }

  #wake(): void {
    const w = this.#waiters;
    this.#waiters = [];
    for (const f of w) f();
  }

  get closed(): boolean { return this.#closed; }
  get socket(): net.Socket { return this.#socket; }

  write(data: string | Buffer): void {
    if (!this.#socket.destroyed) this.#socket.write(typeof data === 'string' ? Buffer.from(data, 'latin1') : data);
  }

  /** Reads one complete reply (multi-line aware). Rejects on timeout or when the server closes first. */
  async readReply(timeoutMs = 5000): Promise<TestReply> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = this.#takeReply();
      if (r) return r;
      if (this.#closed) throw new Error(`Connection closed while waiting for a reply; transcript:\n${this.transcript}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`Timed out waiting for a reply; transcript:\n${this.transcript}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.#waiters.push(() => { clearTimeout(t); resolve(); });
      });
    }
  }

  #takeReply(): TestReply | null {
    const lines: string[] = [];
    let pos = 0;
    for (;;) {
      const nl = this.#buf.indexOf('\r\n', pos);
      if (nl < 0) return null;
      const line = this.#buf.slice(pos, nl);
      lines.push(line);
      pos = nl + 2;
      if (line.length < 4 || line[3] !== '-') break;
    }
    this.#buf = this.#buf.slice(pos);
    const last = lines[lines.length - 1]!;
    const code = Number(last.slice(0, 3));
    const texts = lines.map((l) => l.slice(4));
    const m = /^([245]\.\d{1,3}\.\d{1,3}) /.exec(texts[texts.length - 1] ?? '');
    return { code, lines, text: texts.join('\n'), enhanced: m ? m[1]! : null };
  }

  /** Sends a command line (CRLF added) and reads its reply. */
  async cmd(line: string, timeoutMs = 5000): Promise<TestReply> {
    this.write(line + '\r\n');
    return this.readReply(timeoutMs);
  }

  /** Resolves true when the server closes within the time. */
  async waitClosed(timeoutMs = 3000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.#closed) {
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.#waiters.push(() => { clearTimeout(t); resolve(); });
      });
    }
    return true;
  }

  /** Bytes received but not yet consumed as replies. */
  get unread(): string { return this.#buf; }

  /** Upgrades to TLS after a 220 reply to STARTTLS. */
  async startTls(options: tls.ConnectionOptions = {}): Promise<void> {
    const plain = this.#socket;
    plain.removeAllListeners('data');
    plain.removeAllListeners('close');
    const secure = tls.connect({ socket: plain, rejectUnauthorized: false, servername: 'localhost', ...options });
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', () => resolve());
      secure.once('error', reject);
    });
    this.#socket = secure;
    this.#attach(secure);
  }

  close(): void {
    this.#socket.destroy();
  }
}

/** Connects, reads the greeting and sends EHLO (the P1 prefix of the hostile-input catalogue). */
export async function p1(port: number, options: { host?: string; localAddress?: string; tls?: boolean; helo?: string } = {}): Promise<RawSmtpClient> {
  const c = await RawSmtpClient.connect(port, options);
  const greeting = await c.readReply();
  if (greeting.code !== 220) throw new Error(`Unexpected greeting ${greeting.lines.join(' | ')}`);
  const ehlo = await c.cmd(`EHLO ${options.helo ?? 'client.test'}`);
  if (ehlo.code !== 250) throw new Error(`EHLO refused: ${ehlo.lines.join(' | ')}`);
  return c;
}
