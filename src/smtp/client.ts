/**
 * The SMTP client used by delivery (outbound MTA) and by the open-relay tester. Byte-level control where the
 * tester needs it (paths and raw command lines are sent verbatim), with three guarantees the peer cannot
 * break: no command ever carries CR, LF or NUL (TypeError before anything is written), replies are parsed
 * strictly with bounded memory (reply-reader.ts, OB-06), and message bodies leave as CRLF-only, dot-stuffed
 * data with exactly one terminator (dot-stuffer.ts, SM-16).
 *
 * Trust: talks to untrusted servers. Every wait has a deadline (Postfix-like defaults), every failure is an
 * SmtpClientError with a stable code and the phase it happened in, and a failed connection is closed at once.
 * STARTTLS discards whatever the server sent after its 220 (response injection, TLS-12) and forgets the
 * capabilities learned before TLS (RFC 3207 section 4.2). Certificates are not verified unless tlsOptions says
 * so (opportunistic TLS, like Postfix "may"); the facts are returned so the caller can judge.
 *
 * Standards: RFC 5321, 1869 (ESMTP), 2920 (PIPELINING), 3207 (STARTTLS), 4954 + 4616 (AUTH PLAIN) and LOGIN,
 * 3030 (BDAT), 3463 (enhanced codes).
 *
 * Not concurrent: one command (or pipelined group) at a time; a second call while one runs throws.
 */
import * as net from 'node:net';
import * as tls from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { DotStuffer } from './dot-stuffer.ts';
import { ReplyReader, SmtpClientError, SmtpProtocolError, type SmtpPhase, type SmtpReply } from './reply-reader.ts';

export { SmtpClientError, SmtpProtocolError, type SmtpPhase, type SmtpReply } from './reply-reader.ts';

// ---------------------------------------------------------------------------------------------------------
// Errors

/** No complete reply (or no drain, or no connect) within the deadline (ERR_SMTP_TIMEOUT). */
export class SmtpTimeoutError extends SmtpClientError {
  readonly timeoutMs: number;
  constructor(message: string, options: { phase: SmtpPhase; timeoutMs: number }) {
    super('ERR_SMTP_TIMEOUT', message, options);
    this.name = 'SmtpTimeoutError';
    this.timeoutMs = options.timeoutMs;
  }
}

/** The connection could not be made, or was closed or reset (ERR_SMTP_CONNECTION). */
export class SmtpConnectionError extends SmtpClientError {
  constructor(message: string, options: { phase: SmtpPhase; cause?: unknown }) {
    super('ERR_SMTP_CONNECTION', message, options);
    this.name = 'SmtpConnectionError';
  }
}

/** The TLS handshake failed (ERR_SMTP_TLS); phase 'tls'. */
export class SmtpTlsError extends SmtpClientError {
  constructor(message: string, options: { phase: SmtpPhase; cause?: unknown }) {
    super('ERR_SMTP_TLS', message, options);
    this.name = 'SmtpTlsError';
  }
}

/** The caller's AbortSignal fired (ERR_SMTP_ABORTED). */
export class SmtpAbortedError extends SmtpClientError {
  constructor(message: string, options: { phase: SmtpPhase; cause?: unknown }) {
    super('ERR_SMTP_ABORTED', message, options);
    this.name = 'SmtpAbortedError';
  }
}

/** The message body source failed; nothing was terminated, the connection is closed (ERR_SMTP_BODY). */
export class SmtpBodyError extends SmtpClientError {
  constructor(message: string, options: { phase: SmtpPhase; cause?: unknown }) {
    super('ERR_SMTP_BODY', message, options);
    this.name = 'SmtpBodyError';
  }
}

// ---------------------------------------------------------------------------------------------------------
// Options and results

export interface SmtpTimeouts {
  /** TCP connect, plus the handshake for implicit TLS. Default 30 s (Postfix smtp_connect_timeout). */
  readonly connect: number;
  /** The 220 greeting. Default 300 s (smtp_helo_timeout). */
  readonly greeting: number;
  /** Each command's complete reply (also the STARTTLS handshake). Default 300 s. */
  readonly command: number;
  /** Each wait for the socket to drain while sending the body. Default 180 s (smtp_data_xfer_timeout). */
  readonly dataBlock: number;
  /** The reply to the final dot (and to BDAT LAST). Default 600 s (smtp_data_done_timeout). */
  readonly dataDone: number;
}

export const DEFAULT_TIMEOUTS: SmtpTimeouts = Object.freeze({
  connect: 30_000, greeting: 300_000, command: 300_000, dataBlock: 180_000, dataDone: 600_000,
});

export interface SmtpConnectOptions {
  readonly host: string;
  readonly port: number;
  /** Source address (the tester runs from 127.0.0.2 and the like). */
  readonly localAddress?: string;
  readonly family?: 4 | 6;
  /** 'implicit': TLS from the first byte (port 465). Default 'none' (plaintext, STARTTLS possible). */
  readonly tls?: 'implicit' | 'none';
  /** SNI name. Default: host, unless it is an IP address. */
  readonly servername?: string;
  /** More tls.connect options (ca, rejectUnauthorized: true, minVersion...). Default: rejectUnauthorized false. */
  readonly tlsOptions?: tls.ConnectionOptions;
  /** Milliseconds; see SmtpTimeouts for defaults. */
  readonly timeouts?: Partial<SmtpTimeouts>;
  readonly signal?: AbortSignal;
  /** Record every line both ways in client.transcript (AUTH payloads redacted, body summarized). */
  readonly transcript?: boolean;
  /** Longest reply line, octets with CRLF. Default 2048. */
  readonly maxReplyLineLength?: number;
  /** Most lines in one reply. Default 200. */
  readonly maxReplyLines?: number;
}

export interface TranscriptEntry {
  /** Milliseconds since connect() started. */
  readonly t: number;
  readonly dir: 'C' | 'S';
  readonly line: string;
}

export interface PeerCertificateInfo {
  /** "CN=mx.example.com, O=Example" */
  readonly subject: string;
  readonly issuer: string;
  readonly validFrom: Date;
  readonly validTo: Date;
  /** ["DNS:mx.example.com", "IP Address:192.0.2.1"] */
  readonly subjectAltNames: readonly string[];
  readonly fingerprint256: string;
  readonly serialNumber: string;
  /** Issued by itself and signed with its own key. */
  readonly selfSigned: boolean;
  /** The leaf certificate, DER. */
  readonly raw: Buffer;
  /** DER certificates as the peer sent them, the leaf first (DANE-TA matches against the rest). */
  readonly chain: readonly Buffer[];
}

export interface TlsInfo {
  /** "TLSv1.3" */
  readonly protocol: string | null;
  readonly cipher: { readonly name: string; readonly standardName: string; readonly version: string };
  /** The chain verified against the trusted CAs and the name matched (servername or host). */
  readonly authorized: boolean;
  /** Why not ("DEPTH_ZERO_SELF_SIGNED_CERT", "ERR_TLS_CERT_ALTNAME_INVALID"...), or null. */
  readonly authorizationError: string | null;
  readonly peerCertificate: PeerCertificateInfo | null;
}

export interface StartTlsResult {
  /** The reply to STARTTLS. TLS is active iff tls is not null (reply 220 and a completed handshake). */
  readonly reply: SmtpReply;
  readonly tls: TlsInfo | null;
  /** Bytes the server sent after its 220 and before the handshake, thrown away unread (TLS-12). */
  readonly discardedBytes: number;
}

/** ESMTP parameters: ["SIZE=100", "BODY=8BITMIME"] or { SIZE: 100, BODY: '8BITMIME', SMTPUTF8: true }. */
export type SmtpParams = readonly string[] | Readonly<Record<string, string | number | true>>;

export interface EnvelopeOptions {
  /** Sent verbatim after "MAIL FROM:" ("<a@b>", "<>", or something malformed on purpose). */
  readonly mailFrom: string;
  readonly mailParams?: SmtpParams;
  /** Each sent verbatim after "RCPT TO:"; a string, or a path with its parameters. */
  readonly rcptTo: readonly (string | { readonly path: string; readonly params?: SmtpParams })[];
  /** Also send DATA in the group (RFC 2920); then call data() iff the DATA reply is 354. */
  readonly data?: boolean;
}

export interface EnvelopeReplies {
  readonly mailFrom: SmtpReply;
  /** One per recipient, in order. */
  readonly rcptTo: readonly SmtpReply[];
  /** The reply to DATA; null if not asked for, or skipped (no PIPELINING and no recipient accepted). */
  readonly data: SmtpReply | null;
}

export interface DataResult {
  /** 'data': the DATA command was refused and reply is that refusal; 'dot': reply answers the final dot. */
  readonly phase: 'data' | 'dot';
  readonly reply: SmtpReply;
}

export type DataBody = Uint8Array | AsyncIterable<Uint8Array | string> | Iterable<Uint8Array>;

// ---------------------------------------------------------------------------------------------------------

const FORBIDDEN = /[\r\n\0]/;
const CHUNK = 64 * 1024;
const HELO_FALLBACK = new Set([500, 502, 504, 550]);
const PHASE_OF_VERB: Readonly<Record<string, SmtpPhase>> = {
  EHLO: 'ehlo', HELO: 'helo', STARTTLS: 'starttls', AUTH: 'auth', MAIL: 'mail', RCPT: 'rcpt', DATA: 'data',
  BDAT: 'bdat', RSET: 'rset', NOOP: 'noop', VRFY: 'vrfy', EXPN: 'expn', QUIT: 'quit',
};
const DOING: Readonly<Record<SmtpPhase, string>> = {
  connect: 'while connecting', tls: 'during the TLS handshake', greeting: 'while receiving the initial server greeting',
  ehlo: 'while performing the EHLO handshake', helo: 'while performing the HELO handshake', starttls: 'while sending STARTTLS',
  auth: 'while authenticating', mail: 'while sending MAIL FROM', rcpt: 'while sending RCPT TO',
  data: 'while sending message body', dot: 'while sending end of data -- message may be sent more than once',
  bdat: 'while sending message body (BDAT)', rset: 'while sending RSET', noop: 'while sending NOOP',
  vrfy: 'while sending VRFY', expn: 'while sending EXPN', quit: 'while sending QUIT', command: 'while sending a command',
};

function assertSafe(value: string, what: string): void {
  if (typeof value !== 'string') throw new TypeError(`${what} must be a string`);
  if (FORBIDDEN.test(value)) throw new TypeError(`Refusing ${what} that contains CR, LF or NUL`);
}

function formatParams(params: SmtpParams | undefined): string {
  if (params === undefined) return '';
  const words: string[] = [];
  if (isStringArray(params)) {
    words.push(...params);
  } else {
    for (const [k, v] of Object.entries(params)) words.push(v === true ? k : `${k}=${v}`);
  }
  for (const w of words) {
    assertSafe(w, 'an ESMTP parameter');
    if (w === '' || w.includes(' ')) throw new TypeError(`Bad ESMTP parameter "${w}"`);
  }
  return words.length > 0 ? ` ${words.join(' ')}` : '';
}

function isStringArray(p: SmtpParams): p is readonly string[] {
  return Array.isArray(p);
}

function phaseOf(command: string): SmtpPhase {
  const verb = /^[A-Za-z]+/.exec(command)?.[0]?.toUpperCase() ?? '';
  return PHASE_OF_VERB[verb] ?? 'command';
}

/** EHLO reply lines after the first → keyword (upper case) → parameters. "AUTH=LOGIN" counts as AUTH. */
export function parseCapabilities(lines: readonly string[]): Map<string, string[]> {
  const caps = new Map<string, string[]>();
  for (const line of lines.slice(1)) {
    const words = line.trim().split(/\s+/).filter((w) => w !== '');
    const first = words[0];
    if (first === undefined) continue;
    let keyword = first.toUpperCase();
    let params = words.slice(1);
    if (keyword.startsWith('AUTH=')) {
      params = [keyword.slice(5), ...params];
      keyword = 'AUTH';
    }
    if (keyword === 'AUTH') params = params.map((p) => p.toUpperCase()).filter((p) => p !== '');
    const have = caps.get(keyword);
    if (have) {
      for (const p of params) if (!have.includes(p)) have.push(p);
    } else {
      caps.set(keyword, params);
    }
  }
  return caps;
}

function describeCause(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string') return code;
  return err instanceof Error ? err.message : String(err);
}

function dnLine(dn: string): string {
  return dn.split('\n').filter((s) => s !== '').join(', ');
}

function tlsInfoOf(s: tls.TLSSocket): TlsInfo {
  const cipher = s.getCipher();
  const x = s.getPeerX509Certificate();
  let peerCertificate: PeerCertificateInfo | null = null;
  if (x) {
    peerCertificate = x509Info(x, peerChain(s, x.raw));
  }
  const err = s.authorizationError as unknown;
  return {
    protocol: s.getProtocol(),
    cipher: { name: cipher.name, standardName: cipher.standardName, version: cipher.version },
    authorized: s.authorized,
    authorizationError: err === undefined || err === null ? null : err instanceof Error ? ((err as NodeJS.ErrnoException).code ?? err.message) : String(err),
    peerCertificate,
  };
}

/** The X509 facts of a PEM certificate, as startTls() reports them for the peer. */
export function certificateInfo(pem: string | Buffer): PeerCertificateInfo {
  const x = new X509Certificate(pem);
  return x509Info(x, [x.raw]);
}

/** The certificates the peer presented, leaf first, following issuerCertificate links (bounded, cycle-safe). */
function peerChain(s: tls.TLSSocket, leaf: Buffer): Buffer[] {
  const chain: Buffer[] = [leaf];
  let c = s.getPeerCertificate(true) as tls.DetailedPeerCertificate | undefined;
  const seen = new Set<tls.DetailedPeerCertificate>();
  while (c && c.issuerCertificate && c.issuerCertificate !== c && !seen.has(c) && chain.length < 10) {
    seen.add(c);
    c = c.issuerCertificate;
    if (c.raw) chain.push(c.raw);
  }
  return chain;
}

function x509Info(x: X509Certificate, chain: readonly Buffer[]): PeerCertificateInfo {
  // Self-signed: issuer = subject and the signature verifies with its own key. (checkIssued() would also
  // demand keyCertSign, which leaf certificates such as ours do not carry.)
  let selfSigned = false;
  try {
    selfSigned = x.issuer === x.subject && x.verify(x.publicKey);
  } catch {
    selfSigned = false;
  }
  return {
    subject: dnLine(x.subject),
    issuer: dnLine(x.issuer),
    validFrom: new Date(x.validFrom),
    validTo: new Date(x.validTo),
    subjectAltNames: x.subjectAltName ? x.subjectAltName.split(/, (?=[A-Za-z][A-Za-z ]*:)/) : [],
    fingerprint256: x.fingerprint256,
    serialNumber: x.serialNumber,
    raw: x.raw,
    chain,
    selfSigned,
  };
}

// ---------------------------------------------------------------------------------------------------------

export class SmtpClient {
  readonly host: string;
  readonly port: number;
  readonly timeouts: SmtpTimeouts;
  readonly #start = performance.now();
  readonly #signal: AbortSignal | undefined;
  readonly #transcript: TranscriptEntry[] | null;
  readonly #reader: ReplyReader;
  readonly #servername: string | undefined;
  readonly #tlsOptions: tls.ConnectionOptions;
  #socket: net.Socket;
  #greeting: SmtpReply | null = null;
  #capabilities = new Map<string, string[]>();
  #esmtp = false;
  #tls: TlsInfo | null = null;
  /** DATA got 354 (pipelined or via send) and the body has not been sent yet. */
  #awaitingBody = false;
  #busy = false;
  // Socket state
  #connected = false;
  #tcpConnected = false;
  #ended = false;
  #socketError: Error | null = null;
  #closedLocally = false;
  #aborted = false;
  #wake: (() => void) | null = null;

  readonly #notify = (): void => {
    const w = this.#wake;
    this.#wake = null;
    w?.();
  };
  readonly #onEnd = (): void => { this.#ended = true; this.#notify(); };
  readonly #onError = (err: Error): void => { this.#socketError ??= err; this.#ended = true; this.#notify(); };
  readonly #onAbort = (): void => {
    this.#aborted = true;
    this.#socket.destroy();
    this.#notify();
  };

  private constructor(socket: net.Socket, options: SmtpConnectOptions) {
    this.host = options.host;
    this.port = options.port;
    this.timeouts = { ...DEFAULT_TIMEOUTS, ...options.timeouts };
    this.#signal = options.signal;
    this.#transcript = options.transcript ? [] : null;
    this.#servername = options.servername ?? (net.isIP(options.host) ? undefined : options.host);
    this.#tlsOptions = options.tlsOptions ?? {};
    this.#reader = new ReplyReader({
      maxLineLength: options.maxReplyLineLength ?? 2048,
      maxLines: options.maxReplyLines ?? 200,
      ...(this.#transcript ? { onLine: (line: string) => this.#record('S', line) } : {}),
    });
    this.#socket = socket;
    this.#attach(socket);
    this.#signal?.addEventListener('abort', this.#onAbort, { once: true });
  }

  /**
   * Connects and reads the greeting. Resolves with the client whatever the greeting code (client.greeting;
   * a 421 or 554 greeting is the caller's to handle, e.g. quit() and try the next MX).
   */
  static async connect(options: SmtpConnectOptions): Promise<SmtpClient> {
    if (typeof options.host !== 'string' || options.host === '') throw new TypeError('host must be a non-empty string');
    if (!Number.isInteger(options.port) || options.port < 1 || options.port > 65535) throw new RangeError(`Bad port ${options.port}`);
    if (options.signal?.aborted) throw new SmtpAbortedError('Aborted before connecting', { phase: 'connect', cause: options.signal.reason });
    const base: net.TcpNetConnectOpts = {
      host: options.host,
      port: options.port,
      ...(options.localAddress !== undefined ? { localAddress: options.localAddress } : {}),
      ...(options.family !== undefined ? { family: options.family } : {}),
    };
    let socket: net.Socket;
    if (options.tls === 'implicit') {
      const servername = options.servername ?? (net.isIP(options.host) ? undefined : options.host);
      socket = tls.connect({ rejectUnauthorized: false, ...options.tlsOptions, ...base, ...(servername !== undefined ? { servername } : {}) });
    } else {
      socket = net.connect(base);
    }
    const client = new SmtpClient(socket, options);
    try {
      await client.#connect(options.tls === 'implicit');
      client.#greeting = await client.#readReply('greeting', client.timeouts.greeting);
    } catch (err) {
      client.#destroy();
      throw err;
    }
    return client;
  }

  // -------------------------------------------------------------------------------------------------------
  // State

  /** The server's greeting (220, or 421/554 and the like). */
  get greeting(): SmtpReply { return this.#greeting!; }
  /** Capabilities from the last successful EHLO (forgotten by STARTTLS); empty after HELO. */
  get capabilities(): ReadonlyMap<string, readonly string[]> { return this.#capabilities; }
  /** True after a successful EHLO (false after HELO fallback or STARTTLS). */
  get esmtp(): boolean { return this.#esmtp; }
  /** TLS facts once TLS is active (implicit or STARTTLS), else null. */
  get tls(): TlsInfo | null { return this.#tls; }
  /** The recorded dialogue (empty unless options.transcript). */
  get transcript(): readonly TranscriptEntry[] { return this.#transcript ?? []; }
  /** True once the connection is closed or lost. */
  get closed(): boolean { return this.#ended || this.#socket.destroyed; }
  get localAddress(): string | undefined { return this.#socket.localAddress; }
  get localPort(): number | undefined { return this.#socket.localPort; }
  get remoteAddress(): string | undefined { return this.#socket.remoteAddress; }

  hasCapability(keyword: string): boolean { return this.#capabilities.has(keyword.toUpperCase()); }

  // -------------------------------------------------------------------------------------------------------
  // Commands

  /** EHLO; on 500/502/504/550 falls back to HELO (client.esmtp tells which worked). Returns the last reply. */
  async ehlo(name: string): Promise<SmtpReply> {
    assertSafe(name, 'an EHLO name');
    return this.#op('ehlo', async () => {
      this.#capabilities = new Map();
      this.#esmtp = false;
      const r = await this.#command(`EHLO ${name}`, 'ehlo');
      if (r.code === 250) {
        this.#esmtp = true;
        this.#capabilities = parseCapabilities(r.lines);
        return r;
      }
      if (!HELO_FALLBACK.has(r.code)) return r;
      return this.#command(`HELO ${name}`, 'helo');
    });
  }

  /** HELO only (no capabilities). */
  async helo(name: string): Promise<SmtpReply> {
    assertSafe(name, 'a HELO name');
    return this.#op('helo', async () => {
      this.#capabilities = new Map();
      this.#esmtp = false;
      return this.#command(`HELO ${name}`, 'helo');
    });
  }

  /**
   * STARTTLS. On 220: the bytes buffered after the 220 are discarded (never parsed as replies), the socket is
   * upgraded, and capabilities are forgotten: call ehlo() again. On any other reply TLS is not active.
   */
  async startTls(options: { servername?: string; tlsOptions?: tls.ConnectionOptions } = {}): Promise<StartTlsResult> {
    if (this.#tls) throw new Error('TLS is already active');
    return this.#op('starttls', async () => {
      const reply = await this.#command('STARTTLS', 'starttls');
      if (reply.code !== 220) return { reply, tls: null, discardedBytes: 0 };
      // TLS-12: nothing the server sent in plaintext after its 220 may be read as a reply.
      let discarded = this.#reader.discard();
      const plain = this.#socket;
      for (let c = plain.read() as Buffer | null; c !== null; c = plain.read() as Buffer | null) discarded += c.length;
      this.#detach(plain);
      plain.on('error', () => { /* reported through the TLS socket */ });
      this.#capabilities = new Map();
      this.#esmtp = false;
      const servername = options.servername ?? this.#servername;
      const secure = tls.connect({
        rejectUnauthorized: false,
        ...this.#tlsOptions,
        ...options.tlsOptions,
        socket: plain,
        ...(servername !== undefined ? { servername } : {}),
      });
      this.#socket = secure;
      this.#attach(secure);
      await this.#waitHandshake(secure, this.timeouts.command);
      return { reply, tls: this.#tls, discardedBytes: discarded };
    });
  }

  /** AUTH PLAIN (initial response) or LOGIN. Returns the final reply (235 on success). Payloads are redacted. */
  async auth(mechanism: 'PLAIN' | 'LOGIN', username: string, password: string): Promise<SmtpReply> {
    if (mechanism !== 'PLAIN' && mechanism !== 'LOGIN') throw new TypeError(`Unsupported AUTH mechanism "${String(mechanism)}"`);
    if (typeof username !== 'string' || typeof password !== 'string') throw new TypeError('username and password must be strings');
    if (username.includes('\0') || password.includes('\0')) throw new TypeError('Refusing credentials that contain NUL');
    const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');
    return this.#op('auth', async () => {
      if (mechanism === 'PLAIN') {
        const r = await this.#command(`AUTH PLAIN ${b64(`\0${username}\0${password}`)}`, 'auth', 'AUTH PLAIN <redacted>');
        // A server that asks again after an initial response gets a cancel (RFC 4954 section 4).
        if (r.code === 334) return this.#command('*', 'auth');
        return r;
      }
      let r = await this.#command('AUTH LOGIN', 'auth');
      if (r.code !== 334) return r;
      r = await this.#command(b64(username), 'auth', '<redacted>');
      if (r.code !== 334) return r;
      return this.#command(b64(password), 'auth', '<redacted>');
    });
  }

  /** MAIL FROM:<pathText verbatim>[ params]. */
  async mailFrom(pathText: string, params?: SmtpParams): Promise<SmtpReply> {
    return this.send(`MAIL FROM:${this.#pathArg(pathText)}${formatParams(params)}`);
  }

  /** RCPT TO:<pathText verbatim>[ params]. */
  async rcptTo(pathText: string, params?: SmtpParams): Promise<SmtpReply> {
    return this.send(`RCPT TO:${this.#pathArg(pathText)}${formatParams(params)}`);
  }

  async rset(): Promise<SmtpReply> { return this.send('RSET'); }
  async noop(): Promise<SmtpReply> { return this.send('NOOP'); }

  async vrfy(arg: string): Promise<SmtpReply> {
    assertSafe(arg, 'a VRFY argument');
    return this.send(`VRFY ${arg}`);
  }

  async expn(arg: string): Promise<SmtpReply> {
    assertSafe(arg, 'an EXPN argument');
    return this.send(`EXPN ${arg}`);
  }

  /** QUIT, then close. Tolerates a server that closes first; returns its reply, or null if none came. */
  async quit(): Promise<SmtpReply | null> {
    // After a 354 "QUIT" would be message content: just close.
    if (this.closed || this.#awaitingBody) {
      this.close();
      return null;
    }
    try {
      return await this.#op('quit', () => this.#command('QUIT', 'quit'));
    } catch (err) {
      if (err instanceof SmtpClientError) return null;
      throw err;
    } finally {
      if (!this.#busy) this.close();
    }
  }

  /** Sends one raw command line (CRLF added; CR, LF and NUL refused) and reads its reply. */
  async send(command: string): Promise<SmtpReply> {
    assertSafe(command, 'a command');
    const phase = phaseOf(command);
    return this.#op(phase, () => this.#command(command, phase));
  }

  /**
   * Sends the commands as one write when the server advertised PIPELINING (else one by one) and returns the
   * replies in order (RFC 2920). The caller keeps RFC 2920's rules: only the last command may be one that
   * changes the dialogue (DATA, EHLO, STARTTLS, AUTH, QUIT, NOOP).
   */
  async pipeline(commands: readonly string[]): Promise<SmtpReply[]> {
    for (const c of commands) assertSafe(c, 'a command');
    if (commands.length === 0) return [];
    return this.#op(phaseOf(commands[0]!), () => this.#pipeline(commands));
  }

  /** MAIL + RCPTs (+ DATA), pipelined when possible. */
  async sendEnvelope(envelope: EnvelopeOptions): Promise<EnvelopeReplies> {
    const commands = [`MAIL FROM:${this.#pathArg(envelope.mailFrom)}${formatParams(envelope.mailParams)}`];
    for (const r of envelope.rcptTo) {
      const path = typeof r === 'string' ? r : r.path;
      const params = typeof r === 'string' ? undefined : r.params;
      commands.push(`RCPT TO:${this.#pathArg(path)}${formatParams(params)}`);
    }
    return this.#op('mail', async () => {
      const pipelined = this.hasCapability('PIPELINING');
      // RFC 2920: DATA may end the group; without PIPELINING it is sent only if a recipient was accepted.
      if (envelope.data && pipelined) commands.push('DATA');
      const replies = await this.#pipeline(commands);
      const rcptTo = replies.slice(1, 1 + envelope.rcptTo.length);
      let data: SmtpReply | null = replies[1 + envelope.rcptTo.length] ?? null;
      if (envelope.data && !pipelined && rcptTo.some((r) => r.code >= 200 && r.code < 300)) {
        data = await this.#command('DATA', 'data');
      }
      return { mailFrom: replies[0]!, rcptTo, data };
    });
  }

  /**
   * Sends DATA (unless a pipelined DATA already got 354), waits for 354, streams the body through the
   * DotStuffer with backpressure, and reads the reply to the final dot (timeouts.dataDone).
   */
  async data(body: DataBody): Promise<DataResult> {
    return this.#op('data', async () => {
      if (!this.#awaitingBody) {
        const r = await this.#command('DATA', 'data');
        if (r.code !== 354) return { phase: 'data', reply: r };
      }
      this.#awaitingBody = false;
      const stuffer = new DotStuffer();
      try {
        for await (const chunk of chunksOf(body)) {
          const out = stuffer.push(chunk);
          if (out.length > 0) await this.#writeBody(out);
        }
      } catch (err) {
        if (err instanceof SmtpClientError) throw err;
        // Never terminate a message whose source failed: the server would accept a truncated message.
        throw new SmtpBodyError(`Cannot read the message body: ${describeCause(err)}`, { phase: 'data', cause: err });
      }
      this.#record('C', `[message body: ${stuffer.bytesIn} octets]`);
      this.#record('C', '.');
      await this.#writeBody(stuffer.end());
      return { phase: 'dot', reply: await this.#readReply('dot', this.timeouts.dataDone) };
    }, { whileAwaitingBody: true });
  }

  /**
   * One BDAT chunk (RFC 3030), sent as is: the caller supplies CRLF-clean bytes (no dot-stuffing with BDAT).
   * The reply to the LAST chunk is awaited with timeouts.dataDone.
   */
  async bdat(chunk: Uint8Array, options: { last?: boolean } = {}): Promise<SmtpReply> {
    const line = `BDAT ${chunk.length}${options.last ? ' LAST' : ''}`;
    return this.#op('bdat', async () => {
      this.#record('C', line);
      this.#record('C', `[${chunk.length} octets]`);
      this.#checkWritable('bdat');
      this.#socket.write(Buffer.from(`${line}\r\n`, 'latin1'));
      if (chunk.length > 0) await this.#writeBody(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength), 'bdat');
      return this.#readReply('bdat', options.last ? this.timeouts.dataDone : this.timeouts.command);
    });
  }

  /** Destroys the socket at once (no QUIT); pending operations fail with SmtpConnectionError. No timers remain. */
  close(): void {
    if (!this.#socket.destroyed) this.#closedLocally = true;
    this.#destroy();
  }

  // -------------------------------------------------------------------------------------------------------
  // Internals

  #pathArg(pathText: string): string {
    assertSafe(pathText, 'a path');
    return pathText;
  }

  async #op<T>(phase: SmtpPhase, fn: () => Promise<T>, options: { whileAwaitingBody?: boolean } = {}): Promise<T> {
    if (this.#busy) throw new Error('Another SMTP command is still in progress on this connection');
    if (this.#awaitingBody && !options.whileAwaitingBody) {
      throw new Error('The server accepted DATA; send the message body with data() (or close) before any other command');
    }
    if (this.#aborted) throw new SmtpAbortedError(`Aborted ${DOING[phase]}`, { phase, cause: this.#signal?.reason });
    if (this.closed) throw new SmtpConnectionError(`Connection with ${this.#peer()} is already closed`, { phase });
    this.#busy = true;
    try {
      return await fn();
    } catch (err) {
      if (err instanceof SmtpClientError) this.#destroy();
      throw err;
    } finally {
      this.#busy = false;
    }
  }

  async #pipeline(commands: readonly string[]): Promise<SmtpReply[]> {
    const replies: SmtpReply[] = [];
    if (!this.hasCapability('PIPELINING') || commands.length === 1) {
      for (const c of commands) replies.push(await this.#command(c, phaseOf(c)));
      return replies;
    }
    this.#checkWritable(phaseOf(commands[0]!));
    for (const c of commands) this.#record('C', c);
    this.#socket.write(Buffer.from(commands.map((c) => `${c}\r\n`).join(''), 'utf8'));
    for (const c of commands) {
      const r = await this.#readReply(phaseOf(c), this.timeouts.command);
      this.#afterReply(c, r);
      replies.push(r);
    }
    return replies;
  }

  /** Writes one command line and reads its reply. */
  async #command(line: string, phase: SmtpPhase, shown: string = line): Promise<SmtpReply> {
    this.#checkWritable(phase);
    this.#record('C', shown);
    this.#socket.write(Buffer.from(`${line}\r\n`, 'utf8'));
    const r = await this.#readReply(phase, this.timeouts.command);
    this.#afterReply(line, r);
    return r;
  }

  #afterReply(command: string, r: SmtpReply): void {
    if (r.code === 354 && command.trim().toUpperCase() === 'DATA') this.#awaitingBody = true;
  }

  #checkWritable(phase: SmtpPhase): void {
    if (this.#aborted) throw new SmtpAbortedError(`Aborted ${DOING[phase]}`, { phase, cause: this.#signal?.reason });
    if (this.#ended || this.#socket.destroyed || !this.#socket.writable) throw this.#lost(phase);
  }

  async #writeBody(buf: Buffer, phase: SmtpPhase = 'data'): Promise<void> {
    this.#checkWritable(phase);
    this.#socket.write(buf);
    if (this.#socket.writableNeedDrain) {
      await this.#until(() => !this.#socket.writableNeedDrain, phase, this.timeouts.dataBlock, 'waiting for the server to take message data');
    }
  }

  async #readReply(phase: SmtpPhase, timeoutMs: number): Promise<SmtpReply> {
    let reply: SmtpReply | null = null;
    const ready = (): boolean => {
      for (;;) {
        reply = this.#reader.next(phase);
        if (reply) return true;
        const chunk = this.#socket.read() as Buffer | null;
        if (chunk === null) return false;
        this.#reader.push(chunk);
      }
    };
    await this.#until(ready, phase, timeoutMs, 'waiting for a reply');
    return reply!;
  }

  async #connect(implicitTls: boolean): Promise<void> {
    await this.#until(() => this.#connected, 'connect', this.timeouts.connect, implicitTls ? 'connecting (TLS)' : 'connecting');
    if (implicitTls) this.#tls = tlsInfoOf(this.#socket as tls.TLSSocket);
  }

  async #waitHandshake(secure: tls.TLSSocket, timeoutMs: number): Promise<void> {
    let done = false;
    secure.once('secureConnect', () => { done = true; this.#notify(); });
    await this.#until(() => done, 'tls', timeoutMs, 'in the TLS handshake');
    this.#tls = tlsInfoOf(secure);
  }

  /** Waits until ready() (checked after every socket event), the deadline, an abort, or the connection's end. */
  async #until(ready: () => boolean, phase: SmtpPhase, timeoutMs: number, waitingFor: string): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    let timedOut = false;
    try {
      for (;;) {
        if (ready()) return;
        if (this.#aborted) throw new SmtpAbortedError(`Aborted ${DOING[phase]}`, { phase, cause: this.#signal?.reason });
        if (this.#ended || this.#socket.destroyed) throw this.#lost(phase);
        if (timedOut) {
          throw new SmtpTimeoutError(`Timed out after ${timeoutMs} ms ${waitingFor} from ${this.#peer()} ${DOING[phase]}`, { phase, timeoutMs });
        }
        timer ??= setTimeout(() => { timedOut = true; this.#notify(); }, timeoutMs);
        await new Promise<void>((resolve) => { this.#wake = resolve; });
      }
    } finally {
      if (timer) clearTimeout(timer);
      this.#wake = null;
    }
  }

  #lost(phase: SmtpPhase): SmtpClientError {
    const cause = this.#socketError ?? undefined;
    if (this.#aborted) return new SmtpAbortedError(`Aborted ${DOING[phase]}`, { phase, cause: this.#signal?.reason });
    if (phase === 'tls' || (phase === 'connect' && this.#tcpConnected)) {
      return new SmtpTlsError(`TLS handshake with ${this.#peer()} failed${cause ? `: ${describeCause(cause)}` : ' (connection closed)'}`, { phase: 'tls', cause });
    }
    if (phase === 'connect') {
      return new SmtpConnectionError(`Cannot connect to ${this.#peer()}${cause ? `: ${describeCause(cause)}` : ''}`, { phase, cause });
    }
    if (this.#reader.partial && !this.#closedLocally) {
      return new SmtpProtocolError(`Connection with ${this.#peer()} closed in the middle of a reply ${DOING[phase]}`, { phase, cause });
    }
    const how = this.#closedLocally ? 'Connection closed locally' : cause ? `Lost connection (${describeCause(cause)})` : 'Lost connection';
    return new SmtpConnectionError(`${how} with ${this.#peer()} ${DOING[phase]}`, { phase, cause });
  }

  #peer(): string {
    return `${this.host}[${this.#socket.remoteAddress ?? this.host}]:${this.port}`;
  }

  #attach(socket: net.Socket): void {
    socket.on('readable', this.#notify);
    socket.on('drain', this.#notify);
    socket.on('end', this.#onEnd);
    socket.on('close', this.#onEnd);
    socket.on('error', this.#onError);
    if (!this.#connected) {
      socket.once('connect', () => { this.#tcpConnected = true; this.#notify(); });
      socket.once(socket instanceof tls.TLSSocket ? 'secureConnect' : 'connect', () => {
        this.#connected = true;
        socket.setNoDelay(true);
        this.#notify();
      });
    }
  }

  #detach(socket: net.Socket): void {
    socket.off('readable', this.#notify);
    socket.off('drain', this.#notify);
    socket.off('end', this.#onEnd);
    socket.off('close', this.#onEnd);
    socket.off('error', this.#onError);
  }

  #destroy(): void {
    this.#signal?.removeEventListener('abort', this.#onAbort);
    this.#awaitingBody = false;
    if (!this.#socket.destroyed) this.#socket.destroy();
    this.#notify();
  }

  #record(dir: 'C' | 'S', line: string): void {
    this.#transcript?.push({ t: Math.round(performance.now() - this.#start), dir, line });
  }
}

/** Body chunks of at most CHUNK bytes, from a Buffer, an async iterable (Readable) or an iterable. */
async function* chunksOf(body: DataBody): AsyncGenerator<Uint8Array> {
  if (body instanceof Uint8Array) {
    for (let i = 0; i < body.length; i += CHUNK) yield body.subarray(i, i + CHUNK);
    return;
  }
  for await (const c of body as AsyncIterable<Uint8Array | string>) {
    const b = typeof c === 'string' ? Buffer.from(c, 'utf8') : c;
    for (let i = 0; i < b.length; i += CHUNK) yield b.subarray(i, i + CHUNK);
  }
}
