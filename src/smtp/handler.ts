/**
 * The contract between the SMTP protocol engine and whatever decides and stores (policy, queue).
 * The engine knows nothing of storage or policy: it parses, enforces protocol rules and limits, and asks the
 * handler at each decision point. Every hook takes one options object and returns a promise.
 *
 * Logging: the engine logs each refusal it decides itself (syntax, limits, TLS, sequence...: one `command refused`
 * event, smtp/refusals.ts); a refusal the handler decides (a verdict with ok false) is the handler's to log, and
 * the engine never logs it again.
 */
import type { Readable } from 'node:stream';
import type { Path } from '../core/address.ts';
import type { Reply } from '../core/reply.ts';

export type ListenerRole = 'mx' | 'submission';
export type TlsMode = 'none' | 'starttls' | 'implicit';

export interface ConnectionInfo {
  /** Session id, unique per process lifetime, for logs. */
  readonly id: string;
  /** The client's address: the socket peer, or the PROXY-protocol source when the peer is a trusted balancer. */
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly localAddress: string;
  readonly localPort: number;
  /** True when remoteAddress came from a PROXY header. */
  readonly proxied: boolean;
  /** The socket peer (the balancer when proxied). */
  readonly peerAddress: string;
  readonly listener: { readonly name: string; readonly role: ListenerRole; readonly tls: TlsMode };
}

/** What the engine knows about the session when it asks the handler. */
export interface SessionState {
  readonly connection: ConnectionInfo;
  readonly helo: string | null;
  readonly esmtp: boolean;
  readonly tls: boolean;
  /** The authenticated user name, or null. */
  readonly user: string | null;
  readonly mailFrom: Path | null;
  readonly mailParams: ReadonlyMap<string, string | true>;
  /** Recipients accepted so far in this transaction. */
  readonly recipients: readonly AcceptedRecipient[];
}

export interface AcceptedRecipient {
  readonly path: Path;
  readonly params: ReadonlyMap<string, string | true>;
  /** Whatever the handler attached when it accepted the recipient (for example the canonical address). */
  readonly data?: unknown;
}

export type Verdict =
  | { readonly ok: true; readonly reply?: Reply; readonly data?: unknown }
  | { readonly ok: false; readonly reply: Reply; readonly close?: boolean };

export interface AuthRequest {
  readonly session: SessionState;
  readonly mechanism: 'PLAIN' | 'LOGIN';
  readonly authzid: string;
  readonly username: string;
  readonly password: string;
}

export type AuthVerdict =
  | { readonly ok: true; readonly user: string }
  | { readonly ok: false; readonly reply: Reply; readonly close?: boolean };

export interface DataRequest {
  readonly session: SessionState;
  /** The message bytes, dot-unstuffed (DATA) or concatenated chunks (BDAT). Destroyed with an error when the
   *  engine abandons the message (limit, bare LF, disconnect): the handler must then discard what it stored. */
  readonly body: Readable;
}

export type DataVerdict =
  | { readonly ok: true; readonly queueId: string; readonly reply?: Reply }
  | { readonly ok: false; readonly reply: Reply; readonly close?: boolean };

export interface SessionSummary {
  readonly connection: ConnectionInfo;
  readonly helo: string | null;
  readonly tls: boolean;
  readonly user: string | null;
  readonly messages: number;
  readonly recipientsAccepted: number;
  readonly recipientsRejected: number;
  readonly recipientsDeferred: number;
  readonly commands: number;
  /** Replies sent, by class: [2xx, 3xx, 4xx, 5xx] (the greeting and the 421 of a close included). */
  readonly replies: readonly [number, number, number, number];
  readonly errors: number;
  readonly bytesIn: number;
  readonly durationMs: number;
  readonly closeReason: string;
}

export interface SessionHandler {
  onConnect?(req: { connection: ConnectionInfo }): Promise<Verdict>;
  onHelo?(req: { session: SessionState; helo: string; esmtp: boolean }): Promise<Verdict>;
  onAuth(req: AuthRequest): Promise<AuthVerdict>;
  onMailFrom(req: { session: SessionState; path: Path; params: ReadonlyMap<string, string | true> }): Promise<Verdict>;
  onRcptTo(req: { session: SessionState; path: Path; params: ReadonlyMap<string, string | true> }): Promise<Verdict>;
  onData(req: DataRequest): Promise<DataVerdict>;
  onClose?(summary: SessionSummary): void;
}
