/**
 * One SMTP session: an explicit state machine driven by the command table (commands.ts), with framing done by
 * LineReader / DataReader and every decision delegated to the injected SessionHandler. Replies follow
 * Postfix's wording where one exists. The session never stores anything itself. Replies are written corked and
 * leave together once per I/O callback (the reply flush below).
 */
import { PassThrough } from 'node:stream';
import * as tls from 'node:tls';
import type { Socket } from 'node:net';
import { addressErrorReply, formatPath, parsePath } from '../core/address.ts';
import type { Path } from '../core/address.ts';
import { formatReply, type Reply } from '../core/reply.ts';
import { toReply, errorCode } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import { COMMANDS, FORBIDDEN_VERBS, isVerb, splitCommand, parseParams, checkMailParams, checkRcptParams, type SmtpState, type Verb } from './commands.ts';
import { LineReader, type LineEvent } from './line-reader.ts';
import { DataReader, type LineEndingMode } from './data-reader.ts';
import { SocketInput, InputInterrupted } from './socket-input.ts';
import { decodeSaslPlain, decodeStrictBase64 } from './sasl.ts';
import type { AcceptedRecipient, ConnectionInfo, DataVerdict, SessionHandler, SessionState, SessionSummary } from './handler.ts';
import { excerpt, logRefusal, type RefusalReason } from './refusals.ts';

export interface SessionLimits {
  /** Maximum message size in octets (SIZE, DATA and BDAT). */
  readonly messageSize: number;
  /** Recipients per message. */
  readonly recipients: number;
  /** Error replies per session before 421 and close. */
  readonly errors: number;
  /** Idle time waiting for client input, ms. */
  readonly idleTimeoutMs: number;
  /** Idle time waiting for message content during DATA/BDAT, ms (default: idleTimeoutMs). */
  readonly dataTimeoutMs?: number;
  /** Total session lifetime, ms. */
  readonly sessionTimeoutMs: number;
  /** Received: header fields allowed in a message. */
  readonly hopCount: number;
  /** Longest command line accepted, octets including CRLF (RFC 5321 minimum 512). */
  readonly commandLineLength: number;
}

export interface SessionOptions {
  readonly socket: Socket;
  readonly connection: ConnectionInfo;
  readonly hostname: string;
  readonly handler: SessionHandler;
  readonly logger: Logger;
  readonly limits: SessionLimits;
  /** TLS context for STARTTLS, or null when the listener offers none. */
  readonly tlsContext: tls.SecureContext | null;
  /** True when the socket is already TLS (implicit TLS listener). */
  readonly tlsActive: boolean;
  readonly lineEndings: LineEndingMode;
  /** AUTH is offered and accepted only over TLS (default true). */
  readonly authRequiresTls: boolean;
  /** Wait this long before the greeting; input before it is a protocol violation (postscreen pregreet). */
  readonly greetDelayMs: number;
  /** Bytes already read from the socket (after a PROXY header). */
  readonly initialData?: Buffer;
  /** TLS handshake deadline, ms. */
  readonly tlsHandshakeTimeoutMs?: number;
}

const R = {
  ok: { code: 250, enhanced: '2.0.0', text: 'Ok' },
  mailOk: { code: 250, enhanced: '2.1.0', text: 'Ok' },
  rcptOk: { code: 250, enhanced: '2.1.5', text: 'Ok' },
  bye: { code: 221, enhanced: '2.0.0', text: 'Bye' },
  startData: { code: 354, text: 'End data with <CR><LF>.<CR><LF>' },
  sync: { code: 554, enhanced: '5.5.0', text: 'Error: SMTP protocol synchronization' },
  notRecognized: { code: 500, enhanced: '5.5.2', text: 'Error: command not recognized' },
  tooLong: { code: 500, enhanced: '5.5.2', text: 'Error: command line too long' },
  badUtf8: { code: 500, enhanced: '5.5.2', text: 'Error: bad UTF-8 syntax' },
  bareLfCommand: { code: 521, enhanced: '5.5.2', text: 'Error: bare <LF> received' },
  bareCrCommand: { code: 501, enhanced: '5.5.2', text: 'Error: bare <CR> received' },
  nulCommand: { code: 501, enhanced: '5.5.2', text: 'Error: NUL character in command' },
  heloFirst: { code: 503, enhanced: '5.5.1', text: 'Error: send HELO/EHLO first' },
  nestedMail: { code: 503, enhanced: '5.5.1', text: 'Error: nested MAIL command' },
  needMail: { code: 503, enhanced: '5.5.1', text: 'Error: need MAIL command' },
  needRcpt: { code: 503, enhanced: '5.5.1', text: 'Error: need RCPT command' },
  noValidRcpt: { code: 554, enhanced: '5.5.1', text: 'Error: no valid recipients' },
  authRequired: { code: 530, enhanced: '5.7.0', text: 'Authentication required' },
  startTlsFirst: { code: 530, enhanced: '5.7.0', text: 'Must issue a STARTTLS command first' },
  authNotEnabled: { code: 503, enhanced: '5.5.1', text: 'Error: authentication not enabled' },
  tooManyRcpts: { code: 452, enhanced: '4.5.3', text: 'Error: too many recipients' },
  sizeExceeded: { code: 552, enhanced: '5.3.4', text: 'Message size exceeds fixed limit' },
  tooBig: { code: 552, enhanced: '5.3.4', text: 'Error: message file too big' },
  tooManyHops: { code: 554, enhanced: '5.4.0', text: 'Error: too many hops' },
  bareLfData: { code: 550, enhanced: '5.5.2', text: 'Error: bare <LF> received' },
  bareCrData: { code: 550, enhanced: '5.5.2', text: 'Error: bare <CR> received' },
  nulData: { code: 550, enhanced: '5.6.0', text: 'Error: NUL character in message data' },
  notImplemented: { code: 502, enhanced: '5.5.1', text: 'Error: command not implemented' },
  vrfyDisabled: { code: 502, enhanced: '5.5.1', text: 'VRFY command is disabled' },
  expnDisabled: { code: 502, enhanced: '5.5.1', text: 'EXPN command is disabled' },
  insufficientAuth: { code: 550, enhanced: '5.7.0', text: 'Error: insufficient authorization' },
  tlsActive: { code: 554, enhanced: '5.5.1', text: 'Error: TLS already active' },
  readyTls: { code: 220, enhanced: '2.0.0', text: 'Ready to start TLS' },
  authAborted: { code: 501, enhanced: '5.7.0', text: 'Authentication aborted' },
  cannotDecode: { code: 501, enhanced: '5.5.2', text: 'Error: cannot decode response' },
  authLineTooLong: { code: 500, enhanced: '5.5.6', text: 'Authentication Exchange line is too long' },
  alreadyAuth: { code: 503, enhanced: '5.5.1', text: 'Error: already authenticated' },
  authInTx: { code: 503, enhanced: '5.5.1', text: 'Error: MAIL transaction in progress' },
  badMech: { code: 504, enhanced: '5.5.4', text: 'Unsupported authentication mechanism' },
  authOk: { code: 235, enhanced: '2.7.0', text: 'Authentication successful' },
  needUtf8: { code: 553, enhanced: '5.6.7', text: 'Must declare SMTPUTF8 to send unicode address' },
  bdatSyntax: { code: 521, enhanced: '5.5.4', text: 'Syntax: BDAT count [LAST]' },
  nullBdat: { code: 551, enhanced: '5.7.1', text: 'Null BDAT request' },
  dataAfterBdat: { code: 503, enhanced: '5.5.1', text: 'Error: DATA after BDAT' },
  mailAfterBdat: { code: 503, enhanced: '5.5.1', text: 'Error: MAIL after BDAT' },
  chunkTooBig: { code: 552, enhanced: '5.3.4', text: 'Chunk exceeds message size limit' },
  noChunking: { code: 521, enhanced: '5.5.1', text: 'Error: command not implemented' },
  gotoHell: { code: 221, enhanced: '2.7.0', text: 'Error: I can break rules, too. Goodbye.' },
  tlsOnPlain: { code: 421, enhanced: '4.7.0', text: 'Error: TLS handshake received on a plaintext connection' },
} as const satisfies Record<string, Reply>;

/**
 * Why each constant reply above refuses (the `reason` of the `command refused` event, refusals.ts); null for the
 * replies that refuse nothing. Replies built on the spot pass their reason to #send.
 */
const REASONS: { readonly [K in keyof typeof R]: RefusalReason | null } = {
  ok: null, mailOk: null, rcptOk: null, bye: null, startData: null, readyTls: null, authOk: null,
  sync: 'pipelining',
  notRecognized: 'unknown-command',
  tooLong: 'line-too-long',
  badUtf8: 'utf8',
  bareLfCommand: 'bare-lf',
  bareCrCommand: 'bare-cr',
  nulCommand: 'nul',
  heloFirst: 'sequence',
  nestedMail: 'sequence',
  needMail: 'sequence',
  needRcpt: 'sequence',
  noValidRcpt: 'sequence',
  authRequired: 'auth',
  startTlsFirst: 'tls',
  authNotEnabled: 'auth',
  tooManyRcpts: 'limit',
  sizeExceeded: 'size',
  tooBig: 'size',
  tooManyHops: 'hops',
  bareLfData: 'bare-lf',
  bareCrData: 'bare-cr',
  nulData: 'nul',
  notImplemented: 'not-implemented',
  vrfyDisabled: 'not-implemented',
  expnDisabled: 'not-implemented',
  insufficientAuth: 'auth',
  tlsActive: 'tls',
  authAborted: 'auth',
  cannotDecode: 'syntax',
  authLineTooLong: 'line-too-long',
  alreadyAuth: 'sequence',
  authInTx: 'sequence',
  badMech: 'auth',
  needUtf8: 'smtputf8',
  bdatSyntax: 'syntax',
  nullBdat: 'syntax',
  dataAfterBdat: 'sequence',
  mailAfterBdat: 'sequence',
  chunkTooBig: 'size',
  noChunking: 'sequence',
  gotoHell: 'not-smtp',
  tlsOnPlain: 'tls',
};
const REASON_OF = new Map<Reply, RefusalReason>(
  (Object.keys(R) as (keyof typeof R)[]).flatMap((k) => (REASONS[k] === null ? [] : [[R[k], REASONS[k]] as const])),
);
/** Verb strings interned, so that what the session keeps between commands never pins a client's line. */
const VERB_NAMES = new Map<string, string>(Object.keys(COMMANDS).map((v) => [v, v]));

const MAX_DISCARD = 1024 * 1024;
/** The parameters of no MAIL command (shared, never mutated). */
const NO_PARAMS: ReadonlyMap<string, string | true> = new Map();
/** Wire text of the constant replies above, rendered once. */
const WIRE = new Map<Reply, string>(Object.values(R).map((r) => [r, formatReply(r)]));
/** A verb that looks like a mail header field name ("Subject:"): the client is not speaking SMTP. */
const HEADER_NAME = /^[A-Za-z-]+:$/;
/** Commands answered from the input buffer before the session yields to the event loop. */
const BURST = 32;
let sessionCounter = 0;
let pidPrefix = '';
let pidOf = -1;

export function nextSessionId(): string {
  sessionCounter = (sessionCounter + 1) % Number.MAX_SAFE_INTEGER;
  if (pidOf !== process.pid) { pidOf = process.pid; pidPrefix = `${process.pid.toString(36)}.`; }
  return `${pidPrefix}${Date.now().toString(36)}.${sessionCounter.toString(36)}`;
}

/**
 * The reply flush. A session corks its socket when it writes a reply (or starts answering a pipelined group) and
 * registers here; one process.nextTick uncorks every registered session together, once the I/O callback that
 * caused the replies and all the promise work it set off have run (a group commit that completes, answering every
 * session waiting for it; a read holding a pipelined group). So the replies of a pipelined group leave in one
 * write, the replies one callback produced for many sessions in one burst (a write to a sleeping peer wakes it: one
 * burst wakes it once), and nothing is held past the callback: never while the process waits (RFC 2920 section
 * 3.2: flush before blocking for input, and before waiting for the data after 354), and not behind the next I/O
 * callback either (a flush later in the turn, at setImmediate, delayed replies behind other work and measured
 * slower with connection reuse). A session uncorks earlier itself where order or backpressure requires it: before
 * STARTTLS, at the end of the session, when output is over its high-water mark.
 */
const pendingFlush: SmtpSession[] = [];

function deferFlush(session: SmtpSession): void {
  if (pendingFlush.push(session) === 1) process.nextTick(flushReplies);
}

function flushReplies(): void {
  // Sessions added while flushing (none expected: uncork writes, it does not reply) go in the next flush.
  const n = pendingFlush.length;
  for (let i = 0; i < n; i++) SmtpSession.flush(pendingFlush[i]!);
  pendingFlush.splice(0, n);
  if (pendingFlush.length > 0) process.nextTick(flushReplies);
}

/**
 * Ends the session from deep inside command handling (QUIT, a violation that closes, a client gone mid-DATA).
 * Control flow, caught by run(): it carries no stack trace, whose capture was a measurable share of a short
 * session's CPU (every QUIT throws one).
 */
class CloseSession extends Error {
  readonly reason: string;
  constructor(reason: string) {
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    try {
      super(reason);
    } finally {
      Error.stackTraceLimit = limit;
    }
    this.reason = reason;
  }
}

export class SmtpSession {
  readonly #o: SessionOptions;
  #socket: Socket;
  #input: SocketInput;
  readonly #reader: LineReader;
  readonly #started = Date.now();
  #sessionTimer: NodeJS.Timeout | null = null;

  // Session state
  #state: SmtpState = 'greeting';
  #helo: string | null = null;
  #esmtp = false;
  #tls: boolean;
  #user: string | null = null;
  // Transaction state
  #mailFrom: Path | null = null;
  #mailParams: ReadonlyMap<string, string | true> = NO_PARAMS;
  #smtputf8 = false;
  #declaredSize: bigint | null = null;
  #recipients: AcceptedRecipient[] = [];
  #rcptAttempts = 0;
  // BDAT state
  #bdat: { body: PassThrough; verdict: Promise<DataVerdict>; size: number; failed: Reply | null; prevCr: boolean; received: ReceivedCounter; bareLf: boolean } | null = null;
  // Counters
  #errors = 0;
  #commands = 0;
  /** Replies sent by class (2xx, 3xx, 4xx, 5xx): one increment per reply, summed in the session's closing log line. */
  #replies: [number, number, number, number] = [0, 0, 0, 0];
  #messages = 0;
  #rcptAccepted = 0;
  #rcptRejected = 0;
  #rcptDeferred = 0;
  #bytesIn = 0;
  #closeReason = 'quit';
  /** The client sent QUIT (and got 221). */
  #quit = false;
  #closing = false;
  #corked = false;
  #burst = 0;
  #shutdown = false;
  #draining = false;
  /** Waiting for the client's next command line (not inside DATA, AUTH or a reply). */
  #awaitingCommand = false;
  // What a refusal is logged with (refusals.ts); the per-command fields are cleared after each command.
  /** The command being handled (interned verb, "UNKNOWN", or an HTTP verb), null between commands. */
  #verb: string | null = null;
  #lastVerb: string | null = null;
  /** The argument of HELO/EHLO/MAIL/RCPT, for the excerpt of a refusal. */
  #arg = '';
  /** The sender of the MAIL command or the recipient of the RCPT command being handled, once parsed. */
  #tryFrom: Path | null = null;
  #tryRcpt: Path | null = null;

  constructor(options: SessionOptions) {
    this.#o = options;
    this.#socket = options.socket;
    this.#input = new SocketInput(options.socket);
    this.#reader = new LineReader(Math.max(512, options.limits.commandLineLength));
    if (options.initialData) this.#reader.push(options.initialData);
    this.#tls = options.tlsActive;
  }

  get connection(): ConnectionInfo { return this.#o.connection; }

  get #dataTimeout(): number { return this.#o.limits.dataTimeoutMs ?? this.#o.limits.idleTimeoutMs; }

  /** Asks the session to end: 421 at the next opportunity; an unfinished message is abandoned. */
  shutdown(): void {
    this.#shutdown = true;
    this.#input.interrupt('shutdown');
  }

  /**
   * Asks the session to end gracefully: a transaction in progress (MAIL given, DATA/BDAT under way) may finish
   * and get its reply; then, or at once when the client is idle between transactions, 421 4.3.2 and close.
   * shutdown() after a deadline cuts what is still running.
   */
  drain(): void {
    this.#draining = true;
    if (this.#awaitingCommand && this.#mailFrom === null && this.#bdat === null) this.#input.interrupt('shutdown');
  }

  /** No transaction open: a draining session may be closed here. */
  get #idle(): boolean {
    return this.#mailFrom === null && this.#bdat === null;
  }

  #snapshot(): SessionState {
    return {
      connection: this.#o.connection,
      helo: this.#helo,
      esmtp: this.#esmtp,
      tls: this.#tls,
      user: this.#user,
      mailFrom: this.#mailFrom,
      mailParams: this.#mailParams,
      recipients: this.#recipients,
    };
  }

  async run(): Promise<void> {
    this.#sessionTimer = setTimeout(() => this.#input.interrupt('session-timeout'), this.#o.limits.sessionTimeoutMs);
    this.#sessionTimer.unref();
    try {
      await this.#greet();
      while (!this.#closing) {
        // A pipelined burst is handled synchronously, line by line; only a line that has to wait (for input,
        // for output to drain, for its turn, or for a handler) goes through the promise-based path.
        const now = this.#stepNow();
        if (now === undefined) {
          if (!(await this.#step())) {
            this.#closeReason = 'client closed';
            break;
          }
        } else if (now !== true) {
          await now;
        }
        this.#endCommand();
        if (this.#errors >= this.#o.limits.errors && !this.#closing) {
          this.#send({ code: 421, enhanced: '4.7.0', text: `${this.#o.hostname} Error: too many errors` }, 'limit');
          this.#closeReason = 'too many errors';
          break;
        }
      }
    } catch (err) {
      if (err instanceof CloseSession) {
        this.#closeReason = err.reason;
      } else if (err instanceof InputInterrupted) {
        if (err.reason === 'shutdown') {
          // Our decision, not the client's doing: no refusal logged (the session summary says "shutdown").
          this.#trySend({ code: 421, enhanced: '4.3.2', text: `${this.#o.hostname} Service shutting down, closing transmission channel` }, null);
        } else {
          this.#trySend({ code: 421, enhanced: '4.4.2', text: `${this.#o.hostname} Error: timeout exceeded` }, 'timeout');
        }
        this.#closeReason = err.reason;
      } else {
        this.#o.logger.error('session failed', { session_id: this.#o.connection.id, err_code: errorCode(err), err: String((err as Error)?.stack ?? err) });
        this.#trySend({ code: 421, enhanced: '4.3.0', text: `${this.#o.hostname} Error: internal error` }, null);
        this.#closeReason = 'internal error';
      }
    } finally {
      if (this.#bdat) this.#abortBdat(new Error('session ended'));
      if (this.#sessionTimer) clearTimeout(this.#sessionTimer);
      this.#end();
      const summary: SessionSummary = {
        connection: this.#o.connection,
        helo: this.#helo,
        tls: this.#tls,
        user: this.#user,
        messages: this.#messages,
        recipientsAccepted: this.#rcptAccepted,
        recipientsRejected: this.#rcptRejected,
        recipientsDeferred: this.#rcptDeferred,
        commands: this.#commands,
        replies: this.#replies,
        errors: this.#errors,
        bytesIn: this.#bytesIn,
        durationMs: Date.now() - this.#started,
        closeReason: this.#closeReason,
      };
      try { this.#o.handler.onClose?.(summary); } catch { /* a logging hook must not break the close */ }
    }
  }

  /*
   * Neither step keeps a line in run()'s own frame: run() stays suspended for as long as the session lives, and
   * V8 keeps a suspended frame's stale registers alive. A LineEvent held there by each of 2,000 idle sessions
   * makes V8 pretenure the LineEvent allocation site, after which every line of a pipelined flood is allocated
   * in old space and drags its young referents along (hundreds of MiB of garbage between full GCs).
   */

  /** Handles the next buffered line if it can go now: true when done, a promise when its handling goes on,
   *  undefined when there is none ready (or a wait comes first). */
  #stepNow(): true | Promise<void> | undefined {
    const ev = this.#lineNow();
    if (ev === undefined) return undefined;
    const pending = this.#handleLine(ev);
    return pending === undefined ? true : pending;
  }

  /** Waits for and handles one line; false at end of input. */
  async #step(): Promise<boolean> {
    const ev = await this.#nextLine();
    if (ev === null) return false;
    await this.#handleLine(ev);
    return true;
  }

  // ---------------------------------------------------------------------------------------------------
  // I/O

  #end(): void {
    this.#uncork();
    const s = this.#socket;
    if (s.destroyed) return;
    // After QUIT (RFC 5321 section 4.1.1.10: the server closes the channel once 221 is sent): when the 221 is wholly
    // in the kernel's send buffer and the client sent nothing after QUIT, close at once, as Postfix does. The kernel
    // still delivers the reply, then FIN; nothing is left to read, and a client that resets the connection after
    // reading 221 (smtp-source does) no longer costs a read error, a shutdown call and a drain timer here.
    // Over TLS the orderly path below sends close_notify first.
    if (this.#quit && this.#closeReason === 'quit' && !this.#tls && s.writableLength === 0 && !this.#hasPendingInput()) {
      this.#input.detach();
      s.destroy();
      return;
    }
    s.end();
    // Drop whatever the client still sends (pipelined input after a violation, the rest of a flood), so its
    // FIN is seen and the socket, which holds a connection slot, closes as soon as the client goes.
    this.#input.detach();
    s.on('error', () => { /* reset while draining */ });
    s.on('data', () => {});
    s.resume();
    const t = setTimeout(() => s.destroy(), 2000);
    t.unref();
    s.once('close', () => clearTimeout(t));
  }

  /** Holds writes back until the reply flush (flushReplies) or an earlier #uncork. */
  #cork(): void {
    if (!this.#corked) {
      this.#socket.cork();
      this.#corked = true;
      deferFlush(this);
    }
  }

  #uncork(): void {
    if (this.#corked) { this.#corked = false; this.#socket.uncork(); }
  }

  /** For the reply flush (flushReplies) only: what the session wrote since its last flush goes out now. */
  static flush(session: SmtpSession): void {
    session.#uncork();
  }

  /**
   * Writes a reply. A refusal (4xx/5xx, or a reply given a reason) is logged as `command refused` with `reason`,
   * else the reason of the constant reply (REASONS); null: not logged here, because the handler decided (and
   * logs) it, or it is not the client's doing. Nothing is logged for a client already gone: what it left in the
   * buffer is not answered, and the error limit, which bounds the refusals logged per session, counts only
   * replies that went out.
   */
  #send(reply: Reply, reason?: RefusalReason | null): void {
    if (this.#socket.destroyed || this.#socket.writableEnded) return;
    if (reason !== null && (reply.code >= 400 || reason !== undefined)) this.#logRefused(reply, reason ?? REASON_OF.get(reply) ?? 'protocol');
    // Corked until the reply flush (flushReplies), with the replies every other session writes in this callback:
    // one burst of writes instead of writes spread between the callback's other work.
    this.#cork();
    this.#socket.write(WIRE.get(reply) ?? formatReply(reply));
    const cls = ((reply.code / 100) | 0) - 2;
    if (cls >= 0 && cls <= 3) this.#replies[cls]!++;
    if (reply.code >= 400 && reply.code !== 421) this.#errors++;
  }

  #trySend(reply: Reply, reason?: RefusalReason | null): void {
    try { this.#send(reply, reason); } catch { /* socket gone */ }
  }

  /** Sends a reply and ends the session. */
  #sendAndClose(reply: Reply, closeReason: string, reason?: RefusalReason | null): never {
    this.#send(reply, reason);
    this.#closing = true;
    throw new CloseSession(closeReason);
  }

  #logRefused(reply: Reply, reason: RefusalReason): void {
    const c = this.#o.connection;
    const verb = this.#verb;
    const isMail = verb === 'MAIL';
    const isRcpt = verb === 'RCPT';
    const from = isMail && this.#tryFrom !== null ? this.#tryFrom : this.#mailFrom;
    const parsed = isMail ? this.#tryFrom !== null : isRcpt ? this.#tryRcpt !== null : false;
    const withArg = (isMail || isRcpt || verb === 'HELO' || verb === 'EHLO') && !parsed && this.#arg !== '';
    logRefusal(this.#o.logger, {
      clientIp: c.remoteAddress,
      sessionId: c.id,
      listener: c.listener.name,
      helo: this.#helo,
      mailFrom: from === null ? null : formatPath(from),
      ...(isRcpt ? { rcpt: this.#tryRcpt === null ? null : formatPath(this.#tryRcpt) } : {}),
      command: verb,
      ...(withArg ? { excerpt: excerpt(this.#arg) } : {}),
      ...(verb === null ? { after: this.#lastVerb } : {}),
      reply,
      reason,
    });
  }

  /** A command is done: forget what its refusal would have been logged with (nothing pins the client's line). */
  #endCommand(): void {
    if (this.#verb !== null) this.#lastVerb = this.#verb;
    this.#verb = null;
    this.#arg = '';
    this.#tryFrom = null;
    this.#tryRcpt = null;
  }

  /** Anything the client sent that we have not consumed. */
  #hasPendingInput(): boolean {
    return this.#reader.buffered > 0 || this.#input.pending > 0;
  }

  async #readChunk(timeoutMs: number = this.#o.limits.idleTimeoutMs): Promise<Buffer | null> {
    // Replies still corked go out at the reply flush (flushReplies), before the process waits for input again
    // (RFC 2920: flush before blocking); when the output is over its high-water mark, at once (waitWritable).
    if (this.#socket.writableNeedDrain) this.#uncork();
    // Wait for our replies to leave before reading more: a client that never reads cannot make us buffer.
    await this.#input.waitWritable(this.#o.limits.idleTimeoutMs);
    const chunk = await this.#input.read(timeoutMs);
    if (chunk) this.#bytesIn += chunk.length;
    return chunk;
  }

  /** The next buffered line when nothing has to be waited for first (see #nextLine); undefined otherwise. */
  #lineNow(): LineEvent | undefined {
    if (this.#burst + 1 >= BURST || this.#socket.writableNeedDrain) return undefined;
    const ev = this.#reader.next();
    if (ev === null) return undefined;
    this.#burst++;
    if (this.#reader.buffered > 0) this.#cork();
    return ev;
  }

  async #nextLine(): Promise<LineEvent | null> {
    for (;;) {
      const ev = this.#reader.next();
      if (ev) {
        // Pipelined input is answered from the buffer without reading the socket, so check output here too:
        // replies a client does not read stay bounded by the socket's high-water mark (PL-10).
        if (this.#socket.writableNeedDrain) {
          this.#uncork();
          await this.#input.waitWritable(this.#o.limits.idleTimeoutMs);
        }
        // And let other sessions run now and then while one works through a long pipelined burst.
        if (++this.#burst >= BURST) {
          this.#burst = 0;
          this.#uncork();
          await new Promise<void>((resolve) => setImmediate(resolve));
        }
        if (this.#reader.buffered > 0) this.#cork();
        return ev;
      }
      this.#burst = 0;
      if (this.#draining && this.#idle) throw new InputInterrupted('shutdown');
      this.#awaitingCommand = true;
      let chunk: Buffer | null;
      try {
        chunk = await this.#readChunk();
      } finally {
        this.#awaitingCommand = false;
      }
      if (chunk === null) return null;
      if (this.#commands === 0 && this.#reader.buffered === 0 && chunk[0] === 0x16 && !this.#tls) {
        this.#sendAndClose(R.tlsOnPlain, 'tls on plaintext port');
      }
      this.#reader.push(chunk);
      // An endless "line" (PL-03): memory is already bounded; stop reading garbage after 1 MiB.
      if (this.#reader.discarding > MAX_DISCARD) this.#sendAndClose(R.tooLong, 'endless command line');
    }
  }

  // ---------------------------------------------------------------------------------------------------
  // Greeting

  async #greet(): Promise<void> {
    const handler = this.#o.handler;
    if (handler.onConnect) {
      const v = await handler.onConnect({ connection: this.#o.connection });
      if (!v.ok) this.#sendAndClose(v.reply, 'rejected at connect', null);
    }
    if (this.#o.greetDelayMs > 0) {
      await new Promise<void>((resolve) => setTimeout(resolve, this.#o.greetDelayMs).unref());
    }
    if (this.#hasPendingInput()) this.#sendAndClose(R.sync, 'pregreet', 'pregreet');
    if (this.#shutdown) throw new InputInterrupted('shutdown');
    this.#send({ code: 220, text: `${this.#o.hostname} ESMTP relayguard` });
  }

  // ---------------------------------------------------------------------------------------------------
  // Command dispatch

  /** Returns a promise only for commands that wait for something (a handler, input, a TLS handshake). */
  #handleLine(ev: LineEvent): Promise<void> | void {
    if (ev.kind === 'too-long') {
      this.#verb = 'UNKNOWN';
      this.#send(R.tooLong);
      return;
    }
    this.#commands++;
    const { verb, arg } = splitCommand(ev.text);
    const known = isVerb(verb);
    this.#verb = known ? VERB_NAMES.get(verb)! : FORBIDDEN_VERBS.has(verb) ? verb : 'UNKNOWN';
    if (known && (verb === 'MAIL' || verb === 'RCPT' || verb === 'HELO' || verb === 'EHLO')) this.#arg = arg;
    if (ev.bareLf && this.#o.lineEndings === 'reject') this.#sendAndClose(R.bareLfCommand, 'bare LF in command');
    if (ev.strayCr) return this.#send(R.bareCrCommand);
    if (ev.nul) return this.#send(R.nulCommand);
    if (!ev.utf8) return this.#send(R.badUtf8);
    if (FORBIDDEN_VERBS.has(verb) || HEADER_NAME.test(verb)) this.#sendAndClose(R.gotoHell, 'not smtp', 'not-smtp');
    if (!known) return this.#send(R.notRecognized);
    const spec = COMMANDS[verb];
    if (spec.argument === 'none' && arg.trim() !== '' && verb !== 'BDAT') {
      return this.#send({ code: 501, enhanced: '5.5.4', text: `Syntax: ${verb}` }, 'syntax');
    }
    if (spec.argument === 'required' && arg.trim() === '') {
      return this.#send({ code: 501, enhanced: '5.5.4', text: `Syntax: ${syntaxOf(verb)}` }, 'syntax');
    }
    // RFC 2920: a command that ends a group must not be followed by more input before its reply.
    if (spec.endsGroup && verb !== 'STARTTLS' && verb !== 'QUIT' && this.#hasPendingInput()) {
      this.#sendAndClose(R.sync, `pipelining violation after ${verb}`, 'pipelining');
    }
    if (verb === 'BDAT') return this.#bdatCommand(arg);
    if (!spec.allowedIn.includes(this.#state)) return this.#send(this.#stateError(verb), 'sequence');
    switch (verb) {
      case 'EHLO': return this.#helo_(arg, true);
      case 'HELO': return this.#helo_(arg, false);
      case 'MAIL': return this.#mail(arg);
      case 'RCPT': return this.#rcpt(arg);
      case 'DATA': return this.#data();
      case 'RSET':
        this.#resetTransaction();
        return this.#send(R.ok);
      case 'NOOP': return this.#send(R.ok);
      case 'QUIT':
        this.#closeReason = 'quit';
        this.#quit = true;
        this.#sendAndClose(R.bye, 'quit');
      // falls through (never reached)
      case 'VRFY': return this.#send(R.vrfyDisabled);
      case 'EXPN': return this.#send(R.expnDisabled);
      case 'HELP': return this.#send({ code: 214, enhanced: '2.0.0', text: 'See RFC 5321' });
      case 'STARTTLS': return this.#startTls(arg);
      case 'AUTH': return this.#auth(arg);
      case 'XCLIENT':
      case 'XFORWARD':
        return this.#send(R.insufficientAuth);
      case 'PROXY':
        if (this.#commands === 1) {
          this.#sendAndClose({ code: 421, enhanced: '4.7.0', text: `${this.#o.hostname} Error: PROXY not allowed from ${this.#o.connection.peerAddress}` }, 'proxy not allowed', 'proxy');
        }
        return this.#send(R.notRecognized);
      case 'ETRN':
      case 'TURN':
        return this.#send(R.notImplemented);
    }
  }

  #stateError(verb: Verb): Reply {
    if (this.#state === 'greeting') return R.heloFirst;
    switch (verb) {
      case 'MAIL': return this.#bdat ? R.mailAfterBdat : R.nestedMail;
      case 'RCPT': return R.needMail;
      case 'DATA':
        if (this.#state === 'ready') return R.needMail;
        return this.#rcptAttempts > 0 ? R.noValidRcpt : R.needRcpt;
      default: return R.notImplemented;
    }
  }

  #resetTransaction(): void {
    // Allocates nothing when there is nothing to reset: a pipelined RSET/EHLO flood must not produce garbage
    // per command (an Error with its stack trace, a Map and an array each time).
    if (this.#bdat) this.#abortBdat(new Error('transaction reset'));
    this.#mailFrom = null;
    if (this.#mailParams.size > 0) this.#mailParams = NO_PARAMS;
    this.#smtputf8 = false;
    this.#declaredSize = null;
    if (this.#recipients.length > 0) this.#recipients = [];
    this.#rcptAttempts = 0;
    if (this.#state === 'mail' || this.#state === 'rcpt') this.#state = 'ready';
  }

  // ---------------------------------------------------------------------------------------------------
  // HELO / EHLO

  async #helo_(arg: string, esmtp: boolean): Promise<void> {
    const helo = arg.trim();
    if (!/^[\x21-\x7e\u0080-\uffff]+( [\x21-\x7e\u0080-\uffff]+)*$/.test(helo)) {
      return this.#send({ code: 501, enhanced: '5.5.2', text: `Syntax: ${esmtp ? 'EHLO' : 'HELO'} hostname` }, 'syntax');
    }
    if (this.#o.handler.onHelo) {
      const v = await this.#o.handler.onHelo({ session: this.#snapshot(), helo, esmtp });
      if (!v.ok) {
        if (v.close) this.#sendAndClose(v.reply, 'rejected at helo', null);
        return this.#send(v.reply, null);
      }
    }
    this.#resetTransaction();
    this.#helo = helo;
    this.#esmtp = esmtp;
    this.#state = 'ready';
    if (!esmtp) return this.#send({ code: 250, text: this.#o.hostname });
    const lines = [this.#o.hostname, 'PIPELINING', `SIZE ${this.#o.limits.messageSize}`];
    if (!this.#tls && this.#o.tlsContext) lines.push('STARTTLS');
    if (this.#user === null && this.#authAvailable()) lines.push('AUTH PLAIN LOGIN');
    lines.push('ENHANCEDSTATUSCODES', '8BITMIME', 'SMTPUTF8', 'CHUNKING', 'DSN');
    this.#send({ code: 250, text: lines });
  }

  #authAvailable(): boolean {
    return this.#tls || !this.#o.authRequiresTls;
  }

  // ---------------------------------------------------------------------------------------------------
  // MAIL / RCPT

  async #mail(arg: string): Promise<void> {
    if (this.#bdat) return this.#send(R.mailAfterBdat);
    if (!/^FROM:/i.test(arg)) return this.#send({ code: 501, enhanced: '5.5.4', text: 'Syntax: MAIL FROM:<address>' }, 'syntax');
    if (this.#o.connection.listener.role === 'submission' && this.#user === null) return this.#send(R.authRequired);
    const parsed = parsePath(arg.slice(5), { smtputf8: true, allowNull: true });
    if (!parsed.ok) return this.#send(addressErrorReply(parsed.error, 'mail'), parsed.error.code === 'need-smtputf8' ? 'smtputf8' : 'syntax');
    this.#tryFrom = parsed.path;
    const p = parseParams(parsed.rest);
    if (!p.ok) return this.#send({ code: 501, enhanced: '5.5.4', text: p.problem === 'duplicate' ? `Duplicate parameter ${p.param}` : 'Bad parameter syntax' }, 'syntax');
    const check = checkMailParams(p.params);
    if (!check.ok) return this.#send({ code: check.code, enhanced: check.enhanced, text: check.text }, 'syntax');
    if (!check.smtputf8 && (hasNonAscii(arg) || hasNonAscii(parsed.rest))) return this.#send(R.needUtf8);
    if (check.size !== null && check.size > BigInt(this.#o.limits.messageSize)) return this.#send(R.sizeExceeded);
    const v = await this.#o.handler.onMailFrom({ session: this.#snapshot(), path: parsed.path, params: p.params });
    if (!v.ok) {
      if (v.close) this.#sendAndClose(v.reply, 'rejected at mail', null);
      return this.#send(v.reply, null);
    }
    this.#mailFrom = parsed.path;
    this.#mailParams = p.params;
    this.#smtputf8 = check.smtputf8;
    this.#declaredSize = check.size;
    this.#recipients = [];
    this.#rcptAttempts = 0;
    this.#state = 'mail';
    this.#send(v.reply ?? R.mailOk);
  }

  async #rcpt(arg: string): Promise<void> {
    if (!/^TO:/i.test(arg)) return this.#send({ code: 501, enhanced: '5.5.4', text: 'Syntax: RCPT TO:<address>' }, 'syntax');
    this.#rcptAttempts++;
    const parsed = parsePath(arg.slice(3), { smtputf8: true, allowNull: false, allowUnqualifiedPostmaster: true });
    if (!parsed.ok) { this.#rcptRejected++; return this.#send(addressErrorReply(parsed.error, 'rcpt'), parsed.error.code === 'need-smtputf8' ? 'smtputf8' : 'syntax'); }
    this.#tryRcpt = parsed.path;
    if (!this.#smtputf8 && hasNonAscii(arg)) { this.#rcptRejected++; return this.#send(R.needUtf8); }
    const p = parseParams(parsed.rest);
    if (!p.ok) { this.#rcptRejected++; return this.#send({ code: 501, enhanced: '5.5.4', text: p.problem === 'duplicate' ? `Duplicate parameter ${p.param}` : 'Bad parameter syntax' }, 'syntax'); }
    const check = checkRcptParams(p.params);
    if (!check.ok) { this.#rcptRejected++; return this.#send({ code: check.code, enhanced: check.enhanced, text: check.text }, 'syntax'); }
    if (this.#recipients.length >= this.#o.limits.recipients) { this.#rcptDeferred++; return this.#send(R.tooManyRcpts); }
    const v = await this.#o.handler.onRcptTo({ session: this.#snapshot(), path: parsed.path, params: p.params });
    if (!v.ok) {
      if (v.reply.code < 500) this.#rcptDeferred++; else this.#rcptRejected++;
      if (v.close) this.#sendAndClose(v.reply, 'rejected at rcpt', null);
      return this.#send(v.reply, null);
    }
    this.#recipients.push({ path: parsed.path, params: p.params, data: v.data });
    this.#rcptAccepted++;
    this.#state = 'rcpt';
    this.#send(v.reply ?? R.rcptOk);
  }

  // ---------------------------------------------------------------------------------------------------
  // DATA

  #startMessage(): { body: PassThrough; verdict: Promise<DataVerdict> } {
    const body = new PassThrough({ highWaterMark: 64 * 1024 });
    body.on('error', () => { /* the handler sees the error through its own pipe */ });
    const verdict = Promise.resolve()
      .then(() => this.#o.handler.onData({ session: this.#snapshot(), body }))
      .catch((err: unknown): DataVerdict => {
        this.#o.logger.error('message store failed', { session_id: this.#o.connection.id, err_code: errorCode(err), err: String(err) });
        return { ok: false, reply: toReply(err) };
      });
    return { body, verdict };
  }

  async #writeBody(body: PassThrough, parts: readonly Buffer[]): Promise<void> {
    for (const part of parts) {
      if (body.destroyed || body.writableEnded) return;
      if (!body.write(part)) {
        await new Promise<void>((resolve) => {
          const done = (): void => { body.off('drain', done); body.off('close', done); resolve(); };
          body.on('drain', done);
          body.on('close', done);
        });
      }
    }
  }

  async #data(): Promise<void> {
    if (this.#bdat) return this.#send(R.dataAfterBdat);
    const { body, verdict } = this.#startMessage();
    this.#send(R.startData);
    const reader = new DataReader({ mode: this.#o.lineEndings, maxSize: this.#o.limits.messageSize });
    let aborted = false;
    const abort = (why: string): void => {
      if (aborted) return;
      aborted = true;
      body.destroy(new Error(why));
    };
    try {
      let chunk: Buffer | null = this.#reader.takeAll();
      for (;;) {
        if (chunk === null) {
          // Client went away mid-DATA: nothing is stored.
          abort('client disconnected during DATA');
          this.#closing = true;
          throw new CloseSession('disconnected during DATA');
        }
        if (chunk.length > 0) {
          const res = reader.feed(chunk);
          if (!aborted && reader.accepting) await this.#writeBody(body, res.out);
          if (!reader.accepting) abort('message rejected');
          if (res.done) {
            this.#reader.unshift(chunk.subarray(res.consumed));
            break;
          }
        }
        chunk = await this.#readChunk(this.#dataTimeout);
      }
    } catch (err) {
      abort('session ended during DATA');
      throw err;
    }
    let reply: Reply;
    /** undefined: the engine's own refusal (REASONS); null: the handler's verdict. */
    let reason: null | undefined;
    if (reader.violation !== null) {
      reply = reader.violation === 'bare-lf' ? R.bareLfData : reader.violation === 'bare-cr' ? R.bareCrData : R.nulData;
    } else if (reader.tooBig) {
      reply = R.tooBig;
    } else if (reader.receivedCount > this.#o.limits.hopCount) {
      abort('too many hops');
      reply = R.tooManyHops;
    } else if (this.#shutdown) {
      abort('shutdown');
      throw new InputInterrupted('shutdown');
    } else {
      body.end();
      const v = await verdict;
      reply = v.ok ? (v.reply ?? { code: 250, enhanced: '2.0.0', text: `Ok: queued as ${v.queueId}` }) : v.reply;
      reason = null;
      if (v.ok) this.#messages++;
      if (!v.ok && v.close) {
        this.#resetTransaction();
        this.#sendAndClose(v.reply, 'rejected at data', null);
      }
    }
    // Replied before the reset, so that a refusal is logged with the transaction's sender.
    this.#send(reply, reason);
    this.#resetTransaction();
  }

  // ---------------------------------------------------------------------------------------------------
  // BDAT (RFC 3030)

  async #bdatCommand(arg: string): Promise<void> {
    const m = /^([0-9]{1,20})( +LAST)? *$/i.exec(arg);
    if (!m) this.#sendAndClose(R.bdatSyntax, 'bad BDAT syntax');
    const count = Number(m[1]);
    const last = m[2] !== undefined;
    if (!this.#esmtp) this.#sendAndClose(R.noChunking, 'BDAT without EHLO');
    // A chunk we cannot even skip over: refuse and hang up, without allocating anything.
    if (!Number.isSafeInteger(count) || count > this.#o.limits.messageSize) this.#sendAndClose(R.chunkTooBig, 'BDAT chunk too big');
    if (this.#state !== 'rcpt' && !this.#bdat) {
      await this.#skipBytes(count);
      return this.#send(this.#state === 'greeting' ? R.heloFirst : this.#state === 'ready' ? R.needMail : this.#rcptAttempts > 0 ? R.noValidRcpt : R.needRcpt);
    }
    if (count === 0 && !last) return this.#send(R.nullBdat);
    if (!this.#bdat) {
      const { body, verdict } = this.#startMessage();
      this.#bdat = { body, verdict, size: 0, failed: null, prevCr: false, received: new ReceivedCounter(), bareLf: false };
    }
    const b = this.#bdat;
    if (b.failed === null && b.size + count > this.#o.limits.messageSize) {
      b.failed = R.chunkTooBig;
      b.body.destroy(new Error('message too big'));
      await this.#skipBytes(count);
      this.#send(R.chunkTooBig);
      if (last) { this.#bdat = null; this.#resetTransaction(); }
      return;
    }
    if (b.failed !== null) {
      await this.#skipBytes(count);
      this.#send({ code: 551, enhanced: '5.0.0', text: `Discarded ${count} bytes after earlier error` }, 'sequence');
      if (last) { this.#bdat = null; this.#resetTransaction(); }
      return;
    }
    await this.#readExactly(count, async (part) => {
      b.size += part.length;
      if (this.#o.lineEndings === 'reject' && !b.bareLf) {
        b.bareLf = hasBareLineEnding(part, b.prevCr);
        b.prevCr = part.length > 0 ? part[part.length - 1] === 0x0d : b.prevCr;
      }
      b.received.feed(part);
      await this.#writeBody(b.body, [part]);
    });
    if (!last) return this.#send({ code: 250, enhanced: '2.0.0', text: `Ok: ${count} octets received` });
    this.#bdat = null;
    let reply: Reply;
    /** undefined: the engine's own refusal (REASONS); null: the handler's verdict. */
    let reason: null | undefined;
    if (b.bareLf || (this.#o.lineEndings === 'reject' && b.prevCr)) {
      b.body.destroy(new Error('bare line ending'));
      reply = R.bareLfData;
    } else if (b.received.count > this.#o.limits.hopCount) {
      b.body.destroy(new Error('too many hops'));
      reply = R.tooManyHops;
    } else {
      b.body.end();
      const v = await b.verdict;
      reply = v.ok ? (v.reply ?? { code: 250, enhanced: '2.0.0', text: `Ok: queued as ${v.queueId}` }) : v.reply;
      reason = null;
      if (v.ok) this.#messages++;
    }
    // Replied before the reset, so that a refusal is logged with the transaction's sender.
    this.#send(reply, reason);
    this.#resetTransaction();
  }

  #abortBdat(err: Error): void {
    if (this.#bdat) {
      this.#bdat.body.destroy(err);
      this.#bdat = null;
    }
  }

  async #readExactly(count: number, sink: (part: Buffer) => Promise<void>): Promise<void> {
    let left = count;
    let chunk: Buffer | null = this.#reader.takeAll();
    while (left > 0) {
      if (chunk === null) {
        this.#abortBdat(new Error('client disconnected during BDAT'));
        this.#closing = true;
        throw new CloseSession('disconnected during BDAT');
      }
      if (chunk.length > 0) {
        const take = Math.min(left, chunk.length);
        await sink(chunk.subarray(0, take));
        left -= take;
        if (take < chunk.length) this.#reader.unshift(chunk.subarray(take));
        if (left === 0) break;
      }
      chunk = await this.#readChunk(this.#dataTimeout);
    }
  }

  #skipBytes(count: number): Promise<void> {
    return this.#readExactly(count, async () => {});
  }

  // ---------------------------------------------------------------------------------------------------
  // STARTTLS (RFC 3207)

  async #startTls(arg: string): Promise<void> {
    if (arg.trim() !== '') return this.#send({ code: 501, enhanced: '5.5.4', text: 'Syntax: STARTTLS' }, 'syntax');
    if (this.#tls) return this.#send(R.tlsActive);
    const ctx = this.#o.tlsContext;
    if (!ctx) return this.#send(R.notImplemented, 'tls');
    if (this.#state === 'mail' || this.#state === 'rcpt') this.#resetTransaction();
    // CVE-2011-0411: plaintext pipelined after STARTTLS must never be read as if it came over TLS.
    this.#reader.takeAll();
    this.#input.discardPending();
    this.#send(R.readyTls);
    this.#uncork();
    this.#input.detach();
    const plain = this.#socket;
    plain.on('error', () => { /* reported through the TLS socket */ });
    const secure = new tls.TLSSocket(plain, { isServer: true, secureContext: ctx, requestCert: false });
    this.#socket = secure;
    this.#input = new SocketInput(secure);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new CloseSession('tls handshake timeout')), this.#o.tlsHandshakeTimeoutMs ?? 30_000);
      timer.unref();
      secure.once('secure', () => { clearTimeout(timer); resolve(); });
      secure.once('error', (err) => { clearTimeout(timer); reject(new CloseSession(`tls handshake failed: ${(err as NodeJS.ErrnoException).code ?? err.message}`)); });
      secure.once('close', () => { clearTimeout(timer); reject(new CloseSession('closed during tls handshake')); });
    }).catch((err: unknown) => {
      this.#closing = true;
      secure.destroy();
      const c = this.#o.connection;
      // Not a refusal (the 220 went out): scanners and clients that dislike our certificate end up here.
      this.#o.logger.info('tls handshake failed', {
        client_ip: c.remoteAddress, session_id: c.id, listener: c.listener.name, command: 'STARTTLS', err: (err as Error).message,
      });
      throw err;
    });
    // RFC 3207 section 4.2: forget everything learned before TLS.
    this.#tls = true;
    this.#helo = null;
    this.#esmtp = false;
    this.#user = null;
    this.#state = 'greeting';
  }

  // ---------------------------------------------------------------------------------------------------
  // AUTH (RFC 4954; PLAIN RFC 4616; LOGIN)

  async #authResponse(challenge: string): Promise<string | Reply> {
    this.#send({ code: 334, text: challenge });
    const ev = await this.#nextLine();
    if (ev === null) throw new CloseSession('client closed during AUTH');
    if (ev.kind === 'too-long') return R.authLineTooLong;
    if (ev.bareLf && this.#o.lineEndings === 'reject') this.#sendAndClose(R.bareLfCommand, 'bare LF in command');
    // Base64 or "*": any non-ASCII octet makes it undecodable, whichever way the line was decoded.
    const line = ev.text;
    if (line === '*') return R.authAborted;
    return line;
  }

  async #auth(arg: string): Promise<void> {
    if (this.#user !== null) return this.#send(R.alreadyAuth);
    if (this.#state !== 'ready') return this.#send(R.authInTx);
    if (!this.#authAvailable()) return this.#send(this.#o.tlsContext ? R.startTlsFirst : R.authNotEnabled);
    const sp = arg.indexOf(' ');
    const mech = (sp < 0 ? arg : arg.slice(0, sp)).toUpperCase();
    let initial: string | null = sp < 0 ? null : arg.slice(sp + 1);
    if (mech !== 'PLAIN' && mech !== 'LOGIN') return this.#send(R.badMech);
    let authzid = '';
    let username: string;
    let password: string;
    if (mech === 'PLAIN') {
      if (initial === null) {
        const r = await this.#authResponse('');
        if (typeof r !== 'string') return this.#send(r);
        initial = r;
      }
      if (initial === '*') return this.#send(R.authAborted);
      const raw = initial === '=' ? Buffer.alloc(0) : decodeStrictBase64(initial);
      if (raw === null) return this.#send(R.cannotDecode);
      const creds = decodeSaslPlain(raw);
      if (!creds.ok) return this.#send(creds.reply, creds.reply.code === 500 ? 'line-too-long' : 'auth');
      ({ authzid, username, password } = creds);
    } else {
      let userB64 = initial;
      if (userB64 === null) {
        const r = await this.#authResponse('VXNlcm5hbWU6');
        if (typeof r !== 'string') return this.#send(r);
        userB64 = r;
      }
      if (userB64 === '*') return this.#send(R.authAborted);
      const u = decodeStrictBase64(userB64);
      if (u === null) return this.#send(R.cannotDecode);
      const pr = await this.#authResponse('UGFzc3dvcmQ6');
      if (typeof pr !== 'string') return this.#send(pr);
      const p = decodeStrictBase64(pr);
      if (p === null) return this.#send(R.cannotDecode);
      const creds = decodeSaslPlain(Buffer.concat([Buffer.from([0]), u, Buffer.from([0]), p]));
      if (!creds.ok) return this.#send(creds.reply, creds.reply.code === 500 ? 'line-too-long' : 'auth');
      ({ username, password } = creds);
    }
    const v = await this.#o.handler.onAuth({ session: this.#snapshot(), mechanism: mech, authzid, username, password });
    if (!v.ok) {
      if (v.close) this.#sendAndClose(v.reply, 'auth refused', null);
      return this.#send(v.reply, null);
    }
    this.#user = v.user;
    this.#send(R.authOk);
  }
}

// -----------------------------------------------------------------------------------------------------

function syntaxOf(verb: Verb): string {
  switch (verb) {
    case 'MAIL': return 'MAIL FROM:<address>';
    case 'RCPT': return 'RCPT TO:<address>';
    case 'EHLO': return 'EHLO hostname';
    case 'HELO': return 'HELO hostname';
    case 'AUTH': return 'AUTH mechanism';
    case 'BDAT': return 'BDAT count [LAST]';
    default: return verb;
  }
}

function hasNonAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7f) return true;
  return false;
}

/** True if the bytes hold a LF not preceded by CR, or a CR not followed by LF (across chunk edges via prevCr). */
function hasBareLineEnding(b: Buffer, prevCr: boolean): boolean {
  for (let i = 0; i < b.length; i++) {
    const c = b[i]!;
    const before = i === 0 ? prevCr : b[i - 1] === 0x0d;
    if (c === 0x0a && !before) return true;
    if (before && c !== 0x0a) return true;
  }
  return false;
}

/** Counts Received: header fields in a streamed message's header section (BDAT path). */
class ReceivedCounter {
  count = 0;
  #atLineStart = true;
  #match = 0;
  #inHeaders = true;
  #lineEmpty = true;
  feed(b: Buffer): void {
    if (!this.#inHeaders) return;
    const target = 'received:';
    for (let i = 0; i < b.length && this.#inHeaders; i++) {
      const c = b[i]!;
      if (c === 0x0a) {
        if (this.#lineEmpty) this.#inHeaders = false;
        this.#atLineStart = true;
        this.#lineEmpty = true;
        this.#match = 0;
        continue;
      }
      if (c !== 0x0d) this.#lineEmpty = false;
      if (this.#match >= 0 && c !== 0x0d) {
        const lower = c >= 0x41 && c <= 0x5a ? c + 0x20 : c;
        if (lower === target.charCodeAt(this.#match)) {
          this.#match++;
          if (this.#match === target.length) { this.count++; this.#match = -1; }
        } else {
          this.#match = -1;
        }
      }
      this.#atLineStart = false;
    }
  }
}
