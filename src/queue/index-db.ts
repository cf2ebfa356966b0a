/**
 * The queue index: envelopes, small message bodies and per-recipient delivery state in SQLite (WAL mode). A row
 * in `messages` is the commit record: a body in the spool without one does not exist. A body up to the store's
 * inline limit lives in `bodies` (same transaction as its record, so it can never be half there); a larger one
 * is a spool file named by `body_path` (which is '' for an inline body).
 *
 * Durability: a connection opened with `durability: 'wal-async'` (the receiving store) runs `synchronous =
 * NORMAL`: COMMIT writes the WAL without fsyncing it, and the WAL is fdatasynced on libuv's pool instead
 * (WalSync): the store awaits syncWal() after insertBatch before any 250 (the runner's removals of finished
 * messages ride on that transaction and sync); other transactions (the runner's, admin changes) get a sync soon
 * after, and one that removed a spool file's record is synced before it returns (so the caller's unlink can never
 * outlive a lost delete). Other connections (admin CLI) use synchronous = FULL:
 * each COMMIT fsyncs the WAL.
 * Recipients carry the state the queue runner needs: pending -> deferred (reason, next attempt) -> delivered or
 * bounced; a message can be held. All writes here are synchronous (node:sqlite), and no transaction ever spans
 * an await, so the receiver, the runner and admin commands can share one connection.
 *
 * Scheduling: `messages.next_run_at` is the earliest time the runner must look at a message (the earliest next
 * attempt of its open recipients, or "now" once none is open and it waits to be finished). The runner pages
 * through `(state, next_run_at, queue_id)` with a keyset cursor, so a queue of millions costs an index range scan.
 */
import { domainOfAddress } from '../core/canonical.ts';
import { DatabaseSync } from 'node:sqlite';
import { restrictSqliteFiles } from '../core/file-modes.ts';
import type { SQLInputValue, StatementSync } from 'node:sqlite';
import type { Reply } from '../core/reply.ts';
import { WalSync } from './wal-sync.ts';

export const SCHEMA_VERSION = 3;

/** Message states: `queued` (the runner may deliver), `hold` (kept until released), `corrupt` (body missing or bad). */
export type MessageState = 'queued' | 'hold' | 'corrupt';
export const MESSAGE_STATES: readonly MessageState[] = ['queued', 'hold', 'corrupt'];

export type RecipientState = 'pending' | 'deferred' | 'delivered' | 'bounced';
export const RECIPIENT_STATES: readonly RecipientState[] = ['pending', 'deferred', 'delivered', 'bounced'];

const SCHEMA = `
CREATE TABLE IF NOT EXISTS messages (
  queue_id        TEXT PRIMARY KEY,
  received_at     INTEGER NOT NULL,
  sender          TEXT NOT NULL,
  size            INTEGER NOT NULL,
  body_path       TEXT NOT NULL,
  message_id      TEXT,
  client_ip       TEXT NOT NULL,
  helo            TEXT,
  auth_user       TEXT,
  listener        TEXT NOT NULL,
  mail_params     TEXT NOT NULL DEFAULT '{}',
  state           TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'hold', 'corrupt')),
  state_reason    TEXT,
  updated_at      INTEGER NOT NULL,
  next_run_at     INTEGER,
  delay_warned_at INTEGER
) STRICT;
CREATE TABLE IF NOT EXISTS recipients (
  queue_id        TEXT NOT NULL REFERENCES messages (queue_id) ON DELETE CASCADE,
  idx             INTEGER NOT NULL,
  address         TEXT NOT NULL,
  domain          TEXT NOT NULL,
  params          TEXT NOT NULL DEFAULT '{}',
  state           TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'deferred', 'delivered', 'bounced')),
  attempts        INTEGER NOT NULL DEFAULT 0,
  next_attempt_at INTEGER,
  last_attempt_at INTEGER,
  last_reply      TEXT,
  updated_at      INTEGER NOT NULL,
  reply           TEXT,
  dsn_status      TEXT,
  remote_mta      TEXT,
  diagnostic      TEXT,
  notified_at     INTEGER,
  PRIMARY KEY (queue_id, idx)
) STRICT;
`;

/** Inline bodies (schema version 3). */
const BODIES = `
CREATE TABLE IF NOT EXISTS bodies (
  queue_id        TEXT PRIMARY KEY REFERENCES messages (queue_id) ON DELETE CASCADE,
  data            BLOB NOT NULL
) STRICT;
`;

/** messages_state (up to schema version 2) is dropped: messages_run's leading column serves `state = ?`, and each
 *  index costs a b-tree write on every insert and delete. */
const INDEXES = `
CREATE INDEX IF NOT EXISTS recipients_due ON recipients (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS recipients_domain ON recipients (domain);
CREATE INDEX IF NOT EXISTS messages_received_at ON messages (received_at);
CREATE INDEX IF NOT EXISTS messages_sender ON messages (sender);
CREATE INDEX IF NOT EXISTS messages_message_id ON messages (message_id);
CREATE INDEX IF NOT EXISTS messages_run ON messages (state, next_run_at, queue_id);
DROP INDEX IF EXISTS messages_state;
`;

/** Version 1 -> 2: the runner's columns. next_run_at starts at the earliest open next attempt. */
const MIGRATE_1_2 = `
ALTER TABLE messages ADD COLUMN next_run_at INTEGER;
ALTER TABLE messages ADD COLUMN delay_warned_at INTEGER;
ALTER TABLE recipients ADD COLUMN reply TEXT;
ALTER TABLE recipients ADD COLUMN dsn_status TEXT;
ALTER TABLE recipients ADD COLUMN remote_mta TEXT;
ALTER TABLE recipients ADD COLUMN diagnostic TEXT;
ALTER TABLE recipients ADD COLUMN notified_at INTEGER;
UPDATE messages SET next_run_at = coalesce(
  (SELECT min(next_attempt_at) FROM recipients r WHERE r.queue_id = messages.queue_id AND +r.state IN ('pending', 'deferred')),
  updated_at);
`;

/**
 * Recomputes a message's next_run_at from its open recipients (?1 = queue id, ?2 = the value when none is open).
 * Per-message recipient queries write `+r.state` so SQLite looks them up by primary key (queue_id, idx) and never
 * through the state index, which would scan every open recipient in the queue.
 */
const REFRESH_NEXT_RUN = `UPDATE messages SET next_run_at = coalesce(
  (SELECT min(next_attempt_at) FROM recipients r WHERE r.queue_id = ?1 AND +r.state IN ('pending', 'deferred')), ?2)
  WHERE queue_id = ?1`;

export interface MessageRecord {
  readonly queueId: string;
  readonly receivedAt: number;
  readonly sender: string;
  readonly size: number;
  /** The spool file, relative to the data directory; '' when the body is inline. */
  readonly bodyPath: string;
  /** The whole body when it is stored inline (then bodyPath is ''). */
  readonly body?: Uint8Array | null;
  readonly messageId: string | null;
  readonly clientIp: string;
  readonly helo: string | null;
  readonly authUser: string | null;
  readonly listener: string;
  readonly mailParams: Readonly<Record<string, string | true>>;
  readonly recipients: readonly { readonly address: string; readonly params: Readonly<Record<string, string | true>> }[];
}

export interface QueuedMessageSummary {
  readonly queueId: string;
  readonly receivedAt: number;
  readonly sender: string;
  readonly size: number;
  readonly messageId: string | null;
  readonly state: MessageState;
  readonly recipients: readonly string[];
  /** Recipients still to deliver (pending or deferred). */
  readonly recipientsOpen: number;
  /** Earliest next attempt among open recipients (ms since the epoch), or null. */
  readonly nextAttemptAt: number | null;
  /**
   * Why delivery is waiting (like the reason mailq prints): the last reply or error of the deferred recipients,
   * one entry per distinct reason in envelope order, with the recipients it applies to.
   */
  readonly deferred: readonly DeferredReason[];
}

export interface DeferredReason {
  /** The last reply or error, one line ("451 4.7.1 Greylisted"). */
  readonly reason: string;
  /** The host that gave it ("mx.example.net [192.0.2.7]"), or null (no reply, or a local error). */
  readonly remoteMta: string | null;
  readonly recipients: readonly string[];
}

/** Groups deferred recipients [address, last reply, remote MTA] (envelope order) by reason and host. */
export function groupDeferred(rows: readonly (readonly [string, string | null, string | null])[]): DeferredReason[] {
  const groups = new Map<string, { reason: string; remoteMta: string | null; recipients: string[] }>();
  for (const [address, reason, remoteMta] of rows) {
    if (reason === null) continue;
    const key = JSON.stringify([reason, remoteMta]);
    let g = groups.get(key);
    if (!g) groups.set(key, (g = { reason, remoteMta, recipients: [] }));
    g.recipients.push(address);
  }
  return [...groups.values()];
}

export interface QueuedRecipient {
  /** Position in the envelope (0-based). */
  readonly index: number;
  readonly address: string;
  readonly params: Record<string, string | true>;
  readonly state: RecipientState;
  readonly attempts: number;
  readonly nextAttemptAt: number | null;
  readonly lastAttemptAt: number | null;
  /** The last reply or error, one line, for people ("450 4.2.0 Mailbox busy"). */
  readonly lastReply: string | null;
  /** The last SMTP reply as received, if there was one. */
  readonly reply: Reply | null;
  /** The RFC 3463 status a DSN reports for this recipient ("5.1.1", "4.4.7"), once attempted. */
  readonly dsnStatus: string | null;
  /** The host that gave the reply ("mx.example.net [192.0.2.7]"). */
  readonly remoteMta: string | null;
  /** What went wrong when there was no reply (DNS, connection, timeout), or a note such as the expiry. */
  readonly diagnostic: string | null;
  /** For a bounced recipient: when the bounce was handed to the bouncer (null: not yet). */
  readonly notifiedAt: number | null;
}

export interface QueuedMessageDetail {
  readonly queueId: string;
  readonly receivedAt: number;
  readonly sender: string;
  readonly size: number;
  /** The spool file, relative to the data directory; '' when the body is stored inline in the index. */
  readonly bodyPath: string;
  /** True when the body is in the index (read it with readBody), not in a spool file. */
  readonly bodyInline: boolean;
  readonly messageId: string | null;
  readonly clientIp: string;
  readonly helo: string | null;
  readonly authUser: string | null;
  readonly listener: string;
  readonly mailParams: Record<string, string | true>;
  readonly state: MessageState;
  readonly stateReason: string | null;
  readonly updatedAt: number;
  /** When the runner next looks at the message (null in an index written before schema version 2). */
  readonly nextRunAt: number | null;
  /** When a delay warning went out, or null. */
  readonly delayWarnedAt: number | null;
  readonly recipients: readonly QueuedRecipient[];
}

/** The states counted by counts(): the message states, and `deferred` (messages with at least one deferred recipient). */
export const COUNTED_STATES = ['queued', 'deferred', 'hold', 'corrupt'] as const;
export type CountedState = (typeof COUNTED_STATES)[number];

/** Messages in one counted state and the oldest of them. */
export interface StateCount {
  readonly messages: number;
  /** received_at of the oldest message in the state, or null when there is none. */
  readonly oldestReceivedAt: number | null;
  /** How long ago that was (ms, by the queue's clock), or null. */
  readonly oldestAgeMs: number | null;
}

/** Message counts by state (queue port: MailQueue.counts()). */
export type QueueCounts = Readonly<Record<CountedState, StateCount>>;

/** QueueCounts from (state, count, oldest) rows; states without a row count 0. */
export function queueCounts(rows: readonly { state: string; messages: number; oldest: number | null }[], now: number): QueueCounts {
  const out = {} as Record<CountedState, StateCount>;
  for (const state of COUNTED_STATES) {
    const r = rows.find((x) => x.state === state);
    const oldest = r && r.messages > 0 && r.oldest !== null ? r.oldest : null;
    out[state] = { messages: r?.messages ?? 0, oldestReceivedAt: oldest, oldestAgeMs: oldest === null ? null : Math.max(0, now - oldest) };
  }
  return out;
}

export interface ListFilter {
  /** A message state (queued, hold, corrupt) or a recipient state (pending, deferred, delivered, bounced: messages
   *  with at least one recipient in it). */
  readonly state?: string;
  /** Exact envelope sender ('' for the null sender). */
  readonly sender?: string;
  /** Messages with at least one recipient in this domain (case-insensitive). */
  readonly recipientDomain?: string;
  /** The Message-ID header, with or without angle brackets. */
  readonly messageId?: string;
  /** Messages received at least this long ago. */
  readonly olderThanMs?: number;
  /** At most this many messages, oldest first (default: all). */
  readonly limit?: number;
  /**
   * Keyset paging: only messages after this one in the listing order (received_at, then queue id), so a deep page
   * costs what the first one does (an offset reads every row before it).
   */
  readonly after?: { readonly receivedAt: number; readonly queueId: string };
}

/** One recipient's result of a delivery attempt, as the runner records it. */
export interface RecipientUpdate {
  readonly index: number;
  readonly state: 'delivered' | 'deferred' | 'bounced';
  /** For 'deferred': when to try again. */
  readonly nextAttemptAt: number | null;
  readonly reply: Reply | null;
  readonly dsnStatus: string | null;
  readonly remoteMta: string | null;
  readonly diagnostic: string | null;
}

/** One message's attempt, for recordAttempts. */
export interface AttemptRecord {
  readonly queueId: string;
  readonly updates: readonly RecipientUpdate[];
  readonly now: number;
  /** Set the message aside as corrupt, for this reason. */
  readonly corruptReason: string | null;
  /**
   * The runner's word that this attempt leaves nothing to do: every update is 'delivered' and no other recipient
   * is open or has an unreported bounce (as of the get() before the attempt; only the runner changes recipient
   * states). The index may then remove a still-queued message with one DELETE instead of recording each update
   * first; a message held or deleted meanwhile takes the ordinary path. Optional: without it, the ordinary path.
   */
  readonly finishes?: boolean;
}

/** A message after its attempt was recorded. */
export interface AttemptResult {
  readonly state: MessageState;
  /** Recipients still open. */
  readonly open: number;
  /** Set when the message was finished and removed in the same transaction: unlink this body ('' when it was
   *  inline: nothing to unlink). */
  readonly removedBodyPath: string | null;
}

/** A page entry of due work. */
export interface DueEntry {
  readonly queueId: string;
  readonly nextRunAt: number;
}

/** What an admin command did, per message. */
export interface AdminResult {
  /** Messages the command changed. */
  readonly changed: string[];
  /** Messages it left alone, with their state and why. */
  readonly unchanged: { readonly queueId: string; readonly state: MessageState; readonly reason: string }[];
  /** Queue ids not in the queue. */
  readonly missing: string[];
}

/** The domain part used for per-domain queries, in the one canonical form (core/canonical.ts). */
export function recipientDomain(address: string): string {
  return domainOfAddress(address);
}

/** Longest reply or diagnostic text kept in the index; a hostile next hop may send far more. */
const MAX_TEXT = 2000;

/** A reply (or, without one, the diagnostic) as one printable line for `last_reply`. */
export function replyLine(reply: Reply | null, diagnostic: string | null): string | null {
  if (reply !== null) {
    const text = typeof reply.text === 'string' ? reply.text : reply.text.join(' ');
    return clip(`${reply.code}${reply.enhanced ? ` ${reply.enhanced}` : ''} ${text}`);
  }
  return diagnostic === null ? null : clip(diagnostic);
}

export function clip(s: string): string {
  // One line of printable text: no CR/LF/NUL reaches the index, logs or terminals from a remote reply.
  const one = s.replace(/[\x00-\x08\x0a-\x1f\x7f]/g, ' ');
  return one.length > MAX_TEXT ? `${one.slice(0, MAX_TEXT)}...` : one;
}

export function clipReply(reply: Reply | null): string | null {
  if (reply === null) return null;
  const lines = (typeof reply.text === 'string' ? [reply.text] : [...reply.text]).slice(0, 20).map(clip);
  return JSON.stringify({ code: reply.code, enhanced: reply.enhanced, text: lines.length === 1 ? lines[0] : lines });
}

const OPEN = `('pending', 'deferred')`;

export interface IndexDbOptions {
  readonly readOnly?: boolean;
  /**
   * 'full' (default): synchronous = FULL, every COMMIT fsyncs the WAL on the calling thread. 'wal-async':
   * synchronous = NORMAL plus WalSync; the caller awaits syncWal() where it needs durability (see the header).
   */
  readonly durability?: 'full' | 'wal-async';
  /** Told about failures of the background WAL syncs ('wal-async'). */
  readonly onSyncError?: (err: unknown) => void;
}

export class IndexDb {
  readonly #db: DatabaseSync;
  readonly #insertMessage: StatementSync | null;
  readonly #insertRecipient: StatementSync | null;
  readonly #insertBody: StatementSync | null;
  readonly #readOnly: boolean;
  readonly #statements = new Map<string, StatementSync>();
  readonly #wal: WalSync | null = null;
  readonly #onSyncError: (err: unknown) => void;
  /** Committed by insertBatch, WAL sync pending: hidden from due(). */
  readonly #unsynced = new Set<string>();
  /** A spool file's record was deleted in the transaction under way: sync before returning. */
  #fileRemoved = false;
  #commits = 0;

  constructor(path: string, options: IndexDbOptions = {}) {
    const readOnly = options.readOnly ?? false;
    this.#readOnly = readOnly;
    this.#onSyncError = options.onSyncError ?? (() => {});
    this.#db = new DatabaseSync(path, { readOnly, timeout: 5000, enableForeignKeyConstraints: true });
    if (readOnly) {
      this.#insertMessage = null;
      this.#insertRecipient = null;
      this.#insertBody = null;
      return;
    }
    restrictSqliteFiles(path); // 0600 before the first write: the -wal and -shm files get the same mode
    this.#db.exec('PRAGMA journal_mode = WAL');
    if (options.durability === 'wal-async') {
      this.#db.exec('PRAGMA synchronous = NORMAL');
      this.#wal = new WalSync(`${path}-wal`);
    } else {
      this.#db.exec('PRAGMA synchronous = FULL');
    }
    // The version is read inside the write transaction: two processes opening at once migrate once.
    this.#transaction(() => {
      const version = Number((this.#prepare('PRAGMA user_version').get() as { user_version: number }).user_version);
      if (version > SCHEMA_VERSION) throw new Error(`Queue index schema version ${version} is newer than this program (${SCHEMA_VERSION})`);
      if (version === 1) this.#db.exec(MIGRATE_1_2);
      else if (version === 0) this.#db.exec(SCHEMA);
      this.#db.exec(`${BODIES} ${INDEXES} PRAGMA user_version = ${SCHEMA_VERSION};`);
    });
    this.#insertMessage = this.#prepare(`INSERT INTO messages (queue_id, received_at, sender, size, body_path,
      message_id, client_ip, helo, auth_user, listener, mail_params, state, updated_at, next_run_at)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?)`);
    this.#insertRecipient = this.#prepare(`INSERT INTO recipients (queue_id, idx, address, domain, params, state,
      attempts, next_attempt_at, updated_at) VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?)`);
    this.#insertBody = this.#prepare('INSERT INTO bodies (queue_id, data) VALUES (?, ?)');
  }

  /** Database transactions committed by insertBatch. */
  get commits(): number {
    return this.#commits;
  }

  /** WAL fdatasyncs made off the event loop ('wal-async'). */
  get walSyncs(): number {
    return this.#wal?.syncs ?? 0;
  }

  /**
   * Inserts the commit records (and inline bodies) of a batch in one transaction. Throws (after rolling back) if
   * anything fails. With 'wal-async' the batch is durable only once syncWal() resolves: call it right after.
   * `finished`: the runner's attempts that finish messages, recorded in the same transaction (recordAttempts'
   * results, in order): one commit and one set of WAL pages for both, and the batch's sync makes them durable too
   * (a spool body of one of them may be unlinked only after that sync).
   */
  insertBatch(records: readonly MessageRecord[], finished: readonly AttemptRecord[] = []): (AttemptResult | null)[] {
    const im = this.#insertMessage;
    const ir = this.#insertRecipient;
    const ib = this.#insertBody;
    if (im === null || ir === null || ib === null) throw new Error('Queue index is read-only');
    const results = this.#transaction(() => {
      for (const r of records) {
        im.run(r.queueId, r.receivedAt, r.sender, r.size, r.bodyPath, r.messageId, r.clientIp, r.helo, r.authUser,
          r.listener, paramsJson(r.mailParams), r.receivedAt, r.receivedAt);
        for (let i = 0; i < r.recipients.length; i++) {
          const rcpt = r.recipients[i]!;
          ir.run(r.queueId, i, rcpt.address, recipientDomain(rcpt.address), paramsJson(rcpt.params), r.receivedAt,
            r.receivedAt);
        }
        if (r.body !== undefined && r.body !== null) ib.run(r.queueId, r.body);
      }
      return finished.map((a) => this.#recordOne(a));
    }, true);
    this.#commits++;
    return results;
  }

  /**
   * Resolves when every transaction committed so far is on disk: an fdatasync of the WAL on the thread pool
   * ('wal-async'; at once with 'full', where COMMIT itself synced). Call it right after the COMMIT it is for.
   */
  syncWal(): Promise<void> {
    return this.#wal === null ? Promise.resolve() : this.#wal.sync();
  }

  /** An inline body, or null when the message has none (unknown, deleted, or its body is a spool file). */
  readBody(queueId: string): Buffer | null {
    const r = this.#prepare('SELECT data FROM bodies WHERE queue_id = ?').get(queueId);
    if (r === undefined) return null;
    const d = r.data as Uint8Array;
    return Buffer.from(d.buffer, d.byteOffset, d.byteLength);
  }

  /** A message's state, or null when it is not in the queue (one indexed read: the runner's check before it
   *  delivers a message it was handed at commit). */
  stateOf(queueId: string): MessageState | null {
    const r = this.#prepare('SELECT state FROM messages WHERE queue_id = ?').get(queueId);
    return r === undefined ? null : (String(r.state) as MessageState);
  }

  has(queueId: string): boolean {
    return this.#prepare('SELECT 1 FROM messages WHERE queue_id = ?').get(queueId) !== undefined;
  }

  /** Removes a message's records (used when a commit failed in an uncertain way). */
  delete(queueId: string): void {
    this.#prepare('DELETE FROM messages WHERE queue_id = ?').run(queueId);
    this.#afterWrite();
  }

  /** Spool-file body paths and sizes of every message not yet marked corrupt, for recovery (inline bodies are
   *  committed with their record and need no check). */
  bodyPaths(): { queueId: string; bodyPath: string; size: number }[] {
    const rows = this.#prepare(`SELECT queue_id, body_path, size FROM messages WHERE state != 'corrupt' AND body_path != ''`).all();
    return rows.map((r) => ({ queueId: String(r.queue_id), bodyPath: String(r.body_path), size: Number(r.size) }));
  }

  markCorrupt(queueId: string, reason: string, now: number): void {
    this.#prepare(`UPDATE messages SET state = 'corrupt', state_reason = ?, updated_at = ? WHERE queue_id = ?`)
      .run(clip(reason), now, queueId);
    this.#afterWrite();
  }

  list(filter: ListFilter, now: number): QueuedMessageSummary[] {
    const { where, args } = this.#where(filter, now);
    let sql = `SELECT m.queue_id, m.received_at, m.sender, m.size, m.message_id, m.state,
        (SELECT json_group_array(address) FROM (SELECT address FROM recipients r WHERE r.queue_id = m.queue_id ORDER BY idx)) AS rcpts,
        (SELECT count(*) FROM recipients r WHERE r.queue_id = m.queue_id AND +r.state IN ${OPEN}) AS open,
        (SELECT min(next_attempt_at) FROM recipients r WHERE r.queue_id = m.queue_id AND +r.state IN ${OPEN}) AS next,
        (SELECT json_group_array(json_array(address, last_reply, remote_mta)) FROM (SELECT address, last_reply, remote_mta
          FROM recipients r WHERE r.queue_id = m.queue_id AND +r.state = 'deferred' ORDER BY idx)) AS deferred
      FROM messages m${where} ORDER BY m.received_at, m.queue_id`;
    if (filter.limit !== undefined) {
      sql += ' LIMIT ?';
      args.push(Math.max(0, Math.floor(filter.limit)));
    }
    return this.#prepare(sql).all(...args).map((r) => ({
      queueId: String(r.queue_id),
      receivedAt: Number(r.received_at),
      sender: String(r.sender),
      size: Number(r.size),
      messageId: r.message_id === null ? null : String(r.message_id),
      state: String(r.state) as MessageState,
      recipients: JSON.parse(String(r.rcpts)) as string[],
      recipientsOpen: Number(r.open),
      nextAttemptAt: r.next === null ? null : Number(r.next),
      deferred: groupDeferred(JSON.parse(String(r.deferred)) as [string, string | null, string | null][]),
    }));
  }

  /**
   * Messages by state with the oldest of each: one GROUP BY over messages (the state column leads messages_run)
   * and, for `deferred`, the deferred recipients through recipients_due; never a listing.
   */
  counts(now: number): QueueCounts {
    const rows = this.#prepare(`SELECT state, count(*) AS n, min(received_at) AS oldest FROM messages GROUP BY state
      UNION ALL
      SELECT 'deferred', count(*), min(received_at) FROM messages WHERE queue_id IN (SELECT queue_id FROM recipients WHERE state = 'deferred')`).all();
    return queueCounts(rows.map((r) => ({ state: String(r.state), messages: Number(r.n), oldest: r.oldest === null ? null : Number(r.oldest) })), now);
  }

  /** The queue ids a filter selects, oldest first (for admin commands over many messages). */
  ids(filter: ListFilter, now: number): string[] {
    const { where, args } = this.#where(filter, now);
    let sql = `SELECT m.queue_id FROM messages m${where} ORDER BY m.received_at, m.queue_id`;
    if (filter.limit !== undefined) {
      sql += ' LIMIT ?';
      args.push(Math.max(0, Math.floor(filter.limit)));
    }
    return this.#prepare(sql).all(...args).map((r) => String(r.queue_id));
  }

  get(queueId: string): QueuedMessageDetail | null {
    const m = this.#prepare('SELECT * FROM messages WHERE queue_id = ?').get(queueId);
    if (m === undefined) return null;
    const rcpts = this.#prepare('SELECT * FROM recipients WHERE queue_id = ? ORDER BY idx').all(queueId);
    return {
      queueId: String(m.queue_id),
      receivedAt: Number(m.received_at),
      sender: String(m.sender),
      size: Number(m.size),
      bodyPath: String(m.body_path),
      bodyInline: String(m.body_path) === '',
      messageId: nullableString(m.message_id),
      clientIp: String(m.client_ip),
      helo: nullableString(m.helo),
      authUser: nullableString(m.auth_user),
      listener: String(m.listener),
      mailParams: parseParams(m.mail_params),
      state: String(m.state) as MessageState,
      stateReason: nullableString(m.state_reason),
      updatedAt: Number(m.updated_at),
      nextRunAt: nullableNumber(m.next_run_at),
      delayWarnedAt: nullableNumber(m.delay_warned_at),
      recipients: rcpts.map((r) => ({
        index: Number(r.idx),
        address: String(r.address),
        params: parseParams(r.params),
        state: String(r.state) as RecipientState,
        attempts: Number(r.attempts),
        nextAttemptAt: nullableNumber(r.next_attempt_at),
        lastAttemptAt: nullableNumber(r.last_attempt_at),
        lastReply: nullableString(r.last_reply),
        reply: r.reply === null || r.reply === undefined ? null : (JSON.parse(String(r.reply)) as Reply),
        dsnStatus: nullableString(r.dsn_status),
        remoteMta: nullableString(r.remote_mta),
        diagnostic: nullableString(r.diagnostic),
        notifiedAt: nullableNumber(r.notified_at),
      })),
    };
  }

  // ---- the runner ----

  /**
   * Queued messages due at `now`, after the keyset cursor `after`, in (next_run_at, queue_id) order. Messages
   * committed by insertBatch whose WAL sync has not completed yet (see unsynced()) are left out: nothing is
   * delivered before it is durable (and acknowledged).
   */
  due(now: number, after: DueEntry | null, limit: number): DueEntry[] {
    const out: DueEntry[] = [];
    let cursor = after;
    for (;;) {
      const want = limit - out.length;
      const rows = cursor === null
        ? this.#prepare(`SELECT queue_id, next_run_at FROM messages WHERE state = 'queued' AND next_run_at <= ?
            ORDER BY next_run_at, queue_id LIMIT ?`).all(now, want)
        : this.#prepare(`SELECT queue_id, next_run_at FROM messages WHERE state = 'queued' AND next_run_at <= ?
            AND (next_run_at, queue_id) > (?, ?) ORDER BY next_run_at, queue_id LIMIT ?`).all(now, cursor.nextRunAt, cursor.queueId, want);
      for (const r of rows) {
        cursor = { queueId: String(r.queue_id), nextRunAt: Number(r.next_run_at) };
        if (!this.#unsynced.has(cursor.queueId)) out.push(cursor);
      }
      if (rows.length < want || out.length >= limit || this.#unsynced.size === 0) return out;
    }
  }

  /**
   * Marks messages committed but not yet durable (their batch's WAL sync is under way): due() skips them until
   * synced() (or the records are deleted after a failed sync, which calls synced() too).
   */
  unsynced(queueIds: readonly string[]): void {
    for (const id of queueIds) this.#unsynced.add(id);
  }

  synced(queueIds: readonly string[]): void {
    for (const id of queueIds) this.#unsynced.delete(id);
  }

  /** The earliest next_run_at of any queued message, or null when nothing is queued. Like due(), it leaves out
   *  messages whose WAL sync is under way (the store hands them to the runner once they are durable). */
  nextDue(): number | null {
    if (this.#unsynced.size === 0) {
      const r = this.#prepare(`SELECT min(next_run_at) AS t FROM messages WHERE state = 'queued'`).get();
      return nullableNumber(r?.t);
    }
    const rows = this.#prepare(`SELECT queue_id, next_run_at FROM messages WHERE state = 'queued'
      ORDER BY next_run_at, queue_id`).iterate();
    for (const r of rows) {
      if (this.#unsynced.has(String(r.queue_id))) continue;
      return nullableNumber(r.next_run_at);
    }
    return null;
  }

  /**
   * Records one attempt's outcomes in one transaction: only recipients still open change; the message's next run
   * is recomputed (`now` once none is open). With corruptReason the message is also set aside as corrupt.
   * A queued message left with no open recipient and no unreported bounce is removed in the same transaction
   * (its body path is returned for the caller to unlink). Returns null when the message is gone (deleted meanwhile).
   */
  recordAttempt(queueId: string, updates: readonly RecipientUpdate[], now: number, corruptReason: string | null): AttemptResult | null {
    return this.#transaction(() => this.#recordOne({ queueId, updates, now, corruptReason }));
  }

  /** recordAttempt for several messages in one transaction (one WAL fsync); all or nothing. */
  recordAttempts(attempts: readonly AttemptRecord[]): (AttemptResult | null)[] {
    return this.#transaction(() => attempts.map((a) => this.#recordOne(a)));
  }

  #recordOne({ queueId, updates, now, corruptReason, finishes }: AttemptRecord): AttemptResult | null {
    if (finishes === true && corruptReason === null) {
      // Finished (the runner says so; see AttemptRecord.finishes): its rows go at once, recipients and body with it
      // (ON DELETE CASCADE). Not queued any more (held meanwhile) or gone: the ordinary path below decides.
      const gone = this.#prepare(`DELETE FROM messages WHERE queue_id = ? AND state = 'queued' RETURNING body_path`).get(queueId);
      if (gone !== undefined) {
        const bodyPath = String(gone.body_path);
        if (bodyPath !== '') this.#fileRemoved = true;
        return { state: 'queued', open: 0, removedBodyPath: bodyPath };
      }
    }
    const m = this.#prepare('SELECT state, body_path FROM messages WHERE queue_id = ?').get(queueId);
    if (m === undefined) return null;
    const upd = this.#prepare(`UPDATE recipients SET state = ?, attempts = attempts + 1, next_attempt_at = ?,
        last_attempt_at = ?, last_reply = ?, reply = ?, dsn_status = ?, remote_mta = ?, diagnostic = ?, updated_at = ?
      WHERE queue_id = ? AND idx = ? AND +state IN ${OPEN}`);
    for (const u of updates) {
      upd.run(u.state, u.state === 'deferred' ? u.nextAttemptAt : null, now, replyLine(u.reply, u.diagnostic),
        clipReply(u.reply), u.dsnStatus, u.remoteMta === null ? null : clip(u.remoteMta),
        u.diagnostic === null ? null : clip(u.diagnostic), now, queueId, u.index);
    }
    let state = String(m.state) as MessageState;
    if (corruptReason !== null && state !== 'corrupt') {
      this.markCorrupt(queueId, corruptReason, now);
      state = 'corrupt';
    }
    const open = this.#openCount(queueId);
    if (state === 'queued' && open === 0 && this.#unreportedBounces(queueId) === 0) {
      // Finished: removed at once (no point recomputing the schedule of a row about to go).
      this.delete(queueId);
      if (m.body_path !== '') this.#fileRemoved = true;
      return { state, open, removedBodyPath: String(m.body_path) };
    }
    this.#prepare(REFRESH_NEXT_RUN).run(queueId, now);
    return { state, open, removedBodyPath: null };
  }

  /** Recomputes next_run_at from the open recipients (`fallback` when none is open). */
  refreshNextRun(queueId: string, fallback: number): void {
    this.#prepare(REFRESH_NEXT_RUN).run(queueId, fallback);
    this.#afterWrite();
  }

  setNextRun(queueId: string, at: number): void {
    this.#prepare('UPDATE messages SET next_run_at = ? WHERE queue_id = ?').run(at, queueId);
    this.#afterWrite();
  }

  /** Marks bounced recipients as reported (their DSN is queued). */
  markNotified(queueId: string, indexes: readonly number[], now: number): void {
    this.#transaction(() => {
      const st = this.#prepare(`UPDATE recipients SET notified_at = ? WHERE queue_id = ? AND idx = ? AND +state = 'bounced'`);
      for (const i of indexes) st.run(now, queueId, i);
    });
  }

  markDelayWarned(queueId: string, now: number): void {
    this.#prepare('UPDATE messages SET delay_warned_at = ? WHERE queue_id = ?').run(now, queueId);
    this.#afterWrite();
  }

  /** Removes a finished message (queued, no open recipient, every bounce reported) and returns its body path, or
   *  null if it is not one. */
  removeFinished(queueId: string): string | null {
    return this.#transaction(() => {
      const m = this.#prepare('SELECT state, body_path FROM messages WHERE queue_id = ?').get(queueId);
      if (m === undefined || m.state !== 'queued' || this.#openCount(queueId) > 0 || this.#unreportedBounces(queueId) > 0) return null;
      this.delete(queueId);
      if (m.body_path !== '') this.#fileRemoved = true;
      return String(m.body_path);
    });
  }

  // ---- admin commands (each call is one short transaction; callers chunk long lists) ----

  /** Puts queued messages on hold. */
  hold(ids: readonly string[], now: number): AdminResult {
    return this.#admin(ids, (id, state) => {
      if (state !== 'queued') return state === 'hold' ? 'already on hold' : `is ${state}`;
      this.#prepare(`UPDATE messages SET state = 'hold', state_reason = 'held by an administrator', updated_at = ?
        WHERE queue_id = ?`).run(now, id);
      return null;
    });
  }

  /** Releases held messages back to the queue, keeping their schedule. */
  release(ids: readonly string[], now: number): AdminResult {
    return this.#admin(ids, (id, state) => {
      if (state !== 'hold') return state === 'queued' ? 'not on hold' : `is ${state}`;
      this.#prepare(`UPDATE messages SET state = 'queued', state_reason = NULL, updated_at = ? WHERE queue_id = ?`).run(now, id);
      this.#prepare(REFRESH_NEXT_RUN).run(id, now);
      return null;
    });
  }

  /** Makes the open recipients of queued messages due now. */
  retry(ids: readonly string[], now: number): AdminResult {
    return this.#admin(ids, (id, state) => {
      if (state !== 'queued') return `is ${state}`;
      this.#prepare(`UPDATE recipients SET next_attempt_at = ?, updated_at = ? WHERE queue_id = ? AND +state IN ${OPEN}`)
        .run(now, now, id);
      this.#prepare('UPDATE messages SET next_run_at = ?, updated_at = ? WHERE queue_id = ?').run(now, now, id);
      return null;
    });
  }

  /** Deletes messages in any state; returns their spool-file body paths for the caller to unlink after the commit
   *  (inline bodies go with their records). */
  deleteMessages(ids: readonly string[]): AdminResult & { bodyPaths: string[] } {
    const bodyPaths: string[] = [];
    const result = this.#admin(ids, (id) => {
      const m = this.#prepare('SELECT body_path FROM messages WHERE queue_id = ?').get(id);
      this.delete(id);
      if (m !== undefined && m.body_path !== '') {
        bodyPaths.push(String(m.body_path));
        this.#fileRemoved = true;
      }
      return null;
    });
    return { ...result, bodyPaths };
  }

  /** Queued messages not due yet (for `queue flush`). */
  notDueIds(now: number): string[] {
    return this.#prepare(`SELECT queue_id FROM messages WHERE state = 'queued' AND next_run_at > ? ORDER BY next_run_at`)
      .all(now).map((r) => String(r.queue_id));
  }

  /** Closes the connection (SQLite checkpoints and syncs on the last close); a WAL sync under way finishes. */
  close(): void {
    this.#wal?.close();
    if (this.#db.isOpen) this.#db.close();
  }

  /** Prepared statements are cached: preparing costs more than running these small queries. */
  #prepare(sql: string): StatementSync {
    let st = this.#statements.get(sql);
    if (st === undefined) {
      st = this.#db.prepare(sql);
      this.#statements.set(sql, st);
    }
    return st;
  }

  /** After a write outside #transaction (autocommit, or inside one: then the transaction decides). */
  #afterWrite(): void {
    if (this.#wal !== null && !this.#db.isTransaction) this.#wal.syncSoon(this.#onSyncError);
  }

  #unreportedBounces(queueId: string): number {
    const r = this.#prepare(`SELECT count(*) AS n FROM recipients WHERE queue_id = ? AND +state = 'bounced' AND notified_at IS NULL`).get(queueId);
    return Number(r?.n ?? 0);
  }

  #openCount(queueId: string): number {
    const r = this.#prepare(`SELECT count(*) AS n FROM recipients WHERE queue_id = ? AND +state IN ${OPEN}`).get(queueId);
    return Number(r?.n ?? 0);
  }

  #admin(ids: readonly string[], apply: (id: string, state: MessageState) => string | null): AdminResult {
    if (this.#readOnly) throw new Error('Queue index is read-only');
    const result: AdminResult = { changed: [], unchanged: [], missing: [] };
    this.#transaction(() => {
      const get = this.#prepare('SELECT state FROM messages WHERE queue_id = ?');
      for (const id of ids) {
        const m = get.get(id);
        if (m === undefined) {
          result.missing.push(id);
          continue;
        }
        const state = String(m.state) as MessageState;
        const reason = apply(id, state);
        if (reason === null) result.changed.push(id);
        else result.unchanged.push({ queueId: id, state, reason });
      }
    });
    return result;
  }

  #where(filter: ListFilter, now: number): { where: string; args: SQLInputValue[] } {
    const where: string[] = [];
    const args: SQLInputValue[] = [];
    if (filter.state !== undefined) {
      if ((MESSAGE_STATES as readonly string[]).includes(filter.state)) {
        // Paging with `after` walks messages_received_at in order and stops at the limit; `+` keeps SQLite from
        // taking the state index instead, which would read and sort every message of the state for each page.
        where.push(filter.after !== undefined ? '+m.state = ?' : 'm.state = ?');
      } else if ((RECIPIENT_STATES as readonly string[]).includes(filter.state)) {
        where.push('m.queue_id IN (SELECT queue_id FROM recipients WHERE state = ?)');
      } else {
        throw new RangeError(`Unknown queue state "${filter.state}"`);
      }
      args.push(filter.state);
    }
    if (filter.sender !== undefined) {
      where.push('m.sender = ?');
      args.push(filter.sender);
    }
    if (filter.recipientDomain !== undefined) {
      where.push('m.queue_id IN (SELECT queue_id FROM recipients WHERE domain = ?)');
      args.push(recipientDomain(`@${filter.recipientDomain}`));
    }
    if (filter.messageId !== undefined) {
      const t = filter.messageId.trim();
      where.push('m.message_id IN (?, ?)');
      args.push(t, t.startsWith('<') ? t : `<${t}>`);
    }
    if (filter.olderThanMs !== undefined) {
      where.push('m.received_at <= ?');
      args.push(now - filter.olderThanMs);
    }
    if (filter.after !== undefined) {
      // A range on received_at (one index search), then the ties by queue id.
      where.push('m.received_at >= ? AND (m.received_at > ? OR m.queue_id > ?)');
      args.push(filter.after.receivedAt, filter.after.receivedAt, filter.after.queueId);
    }
    return { where: where.length > 0 ? ` WHERE ${where.join(' AND ')}` : '', args };
  }

  /**
   * Runs fn in BEGIN IMMEDIATE ... COMMIT; rolls back and rethrows on failure. Never spans an await. With
   * 'wal-async': a transaction that removed a spool file's record is synced before returning (the caller unlinks
   * the file next); others are synced soon, unless `callerSyncs` (insertBatch: the store awaits syncWal(), also
   * before anyone unlinks the spool body of a message it removed).
   */
  #transaction<T>(fn: () => T, callerSyncs = false): T {
    this.#db.exec('BEGIN IMMEDIATE');
    this.#fileRemoved = false;
    try {
      const out = fn();
      this.#db.exec('COMMIT');
      if (this.#wal !== null && !callerSyncs) {
        if (this.#fileRemoved) this.#wal.syncNow();
        else this.#wal.syncSoon(this.#onSyncError);
      }
      return out;
    } catch (err) {
      if (this.#db.isTransaction) {
        try {
          this.#db.exec('ROLLBACK');
        } catch {
          // The transaction is gone already (SQLite rolls back by itself on some I/O errors).
        }
      }
      throw err;
    }
  }
}

/** ESMTP parameters as stored: '{}' for none (most recipients) without a JSON.stringify. */
function paramsJson(params: Readonly<Record<string, string | true>>): string {
  for (const _ in params) return JSON.stringify(params);
  return '{}';
}

function parseParams(v: unknown): Record<string, string | true> {
  const s = String(v);
  return s === '{}' ? {} : (JSON.parse(s) as Record<string, string | true>);
}

function nullableString(v: unknown): string | null {
  return v === null || v === undefined ? null : String(v);
}

function nullableNumber(v: unknown): number | null {
  return v === null || v === undefined ? null : Number(v);
}
