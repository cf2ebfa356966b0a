/**
 * The queue index: envelopes and per-recipient delivery state in SQLite (WAL, synchronous=FULL, so each COMMIT
 * fsyncs the WAL). A row in `messages` is the commit record: a body in the spool without one does not exist.
 * Recipients carry the state the queue runner needs: pending -> deferred (reason, next attempt) -> delivered or
 * bounced; a message can be held. All writes here are synchronous (node:sqlite).
 */
import { DatabaseSync } from 'node:sqlite';
import type { SQLInputValue, StatementSync } from 'node:sqlite';

export const SCHEMA_VERSION = 1;

/** Message states: `queued` (the runner may deliver), `hold` (kept until released), `corrupt` (body missing or bad). */
export type MessageState = 'queued' | 'hold' | 'corrupt';
export const MESSAGE_STATES: readonly MessageState[] = ['queued', 'hold', 'corrupt'];

export type RecipientState = 'pending' | 'deferred' | 'delivered' | 'bounced';
export const RECIPIENT_STATES: readonly RecipientState[] = ['pending', 'deferred', 'delivered', 'bounced'];

const SCHEMA = `
CREATE TABLE IF NOT EXISTS messages (
  queue_id     TEXT PRIMARY KEY,
  received_at  INTEGER NOT NULL,
  sender       TEXT NOT NULL,
  size         INTEGER NOT NULL,
  body_path    TEXT NOT NULL,
  message_id   TEXT,
  client_ip    TEXT NOT NULL,
  helo         TEXT,
  auth_user    TEXT,
  listener     TEXT NOT NULL,
  mail_params  TEXT NOT NULL DEFAULT '{}',
  state        TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'hold', 'corrupt')),
  state_reason TEXT,
  updated_at   INTEGER NOT NULL
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
  PRIMARY KEY (queue_id, idx)
) STRICT;
CREATE INDEX IF NOT EXISTS recipients_due ON recipients (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS recipients_domain ON recipients (domain);
CREATE INDEX IF NOT EXISTS messages_received_at ON messages (received_at);
CREATE INDEX IF NOT EXISTS messages_sender ON messages (sender);
CREATE INDEX IF NOT EXISTS messages_message_id ON messages (message_id);
CREATE INDEX IF NOT EXISTS messages_state ON messages (state);
`;

export interface MessageRecord {
  readonly queueId: string;
  readonly receivedAt: number;
  readonly sender: string;
  readonly size: number;
  /** Relative to the data directory. */
  readonly bodyPath: string;
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
}

export interface QueuedRecipient {
  readonly address: string;
  readonly params: Record<string, string | true>;
  readonly state: RecipientState;
  readonly attempts: number;
  readonly nextAttemptAt: number | null;
  readonly lastAttemptAt: number | null;
  readonly lastReply: string | null;
}

export interface QueuedMessageDetail {
  readonly queueId: string;
  readonly receivedAt: number;
  readonly sender: string;
  readonly size: number;
  /** Relative to the data directory. */
  readonly bodyPath: string;
  readonly messageId: string | null;
  readonly clientIp: string;
  readonly helo: string | null;
  readonly authUser: string | null;
  readonly listener: string;
  readonly mailParams: Record<string, string | true>;
  readonly state: MessageState;
  readonly stateReason: string | null;
  readonly updatedAt: number;
  readonly recipients: readonly QueuedRecipient[];
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
}

/** The domain part used for per-domain queries: after the last '@', lower case, no trailing dot. */
export function recipientDomain(address: string): string {
  const at = address.lastIndexOf('@');
  return (at < 0 ? '' : address.slice(at + 1)).toLowerCase().replace(/\.$/, '');
}

export class IndexDb {
  readonly #db: DatabaseSync;
  readonly #insertMessage: StatementSync | null;
  readonly #insertRecipient: StatementSync | null;
  #commits = 0;

  constructor(path: string, options: { readOnly?: boolean } = {}) {
    const readOnly = options.readOnly ?? false;
    this.#db = new DatabaseSync(path, { readOnly, timeout: 5000, enableForeignKeyConstraints: true });
    if (readOnly) {
      this.#insertMessage = null;
      this.#insertRecipient = null;
      return;
    }
    this.#db.exec('PRAGMA journal_mode = WAL');
    this.#db.exec('PRAGMA synchronous = FULL');
    const version = Number((this.#db.prepare('PRAGMA user_version').get() as { user_version: number }).user_version);
    if (version > SCHEMA_VERSION) throw new Error(`Queue index schema version ${version} is newer than this program (${SCHEMA_VERSION})`);
    this.#db.exec(`BEGIN IMMEDIATE; ${SCHEMA} PRAGMA user_version = ${SCHEMA_VERSION}; COMMIT`);
    this.#insertMessage = this.#db.prepare(`INSERT INTO messages (queue_id, received_at, sender, size, body_path,
      message_id, client_ip, helo, auth_user, listener, mail_params, state, updated_at)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?)`);
    this.#insertRecipient = this.#db.prepare(`INSERT INTO recipients (queue_id, idx, address, domain, params, state,
      attempts, next_attempt_at, updated_at) VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?)`);
  }

  /** Database transactions committed by insertBatch (each one WAL fsync under synchronous=FULL). */
  get commits(): number {
    return this.#commits;
  }

  /** Inserts the commit records of a batch in one transaction. Throws (after rolling back) if anything fails. */
  insertBatch(records: readonly MessageRecord[]): void {
    const im = this.#insertMessage;
    const ir = this.#insertRecipient;
    if (im === null || ir === null) throw new Error('Queue index is read-only');
    this.#db.exec('BEGIN IMMEDIATE');
    try {
      for (const r of records) {
        im.run(r.queueId, r.receivedAt, r.sender, r.size, r.bodyPath, r.messageId, r.clientIp, r.helo, r.authUser,
          r.listener, JSON.stringify(r.mailParams), r.receivedAt);
        r.recipients.forEach((rcpt, i) => {
          ir.run(r.queueId, i, rcpt.address, recipientDomain(rcpt.address), JSON.stringify(rcpt.params), r.receivedAt,
            r.receivedAt);
        });
      }
      this.#db.exec('COMMIT');
      this.#commits++;
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

  has(queueId: string): boolean {
    return this.#db.prepare('SELECT 1 FROM messages WHERE queue_id = ?').get(queueId) !== undefined;
  }

  /** Removes a message's records (used when a commit failed in an uncertain way). */
  delete(queueId: string): void {
    this.#db.prepare('DELETE FROM messages WHERE queue_id = ?').run(queueId);
  }

  /** Body paths of every message not yet marked corrupt, for recovery. */
  bodyPaths(): { queueId: string; bodyPath: string }[] {
    const rows = this.#db.prepare(`SELECT queue_id, body_path FROM messages WHERE state != 'corrupt'`).all();
    return rows.map((r) => ({ queueId: String(r.queue_id), bodyPath: String(r.body_path) }));
  }

  markCorrupt(queueId: string, reason: string, now: number): void {
    this.#db.prepare(`UPDATE messages SET state = 'corrupt', state_reason = ?, updated_at = ? WHERE queue_id = ?`)
      .run(reason, now, queueId);
  }

  list(filter: ListFilter, now: number): QueuedMessageSummary[] {
    const where: string[] = [];
    const args: SQLInputValue[] = [];
    if (filter.state !== undefined) {
      if ((MESSAGE_STATES as readonly string[]).includes(filter.state)) {
        where.push('m.state = ?');
      } else if ((RECIPIENT_STATES as readonly string[]).includes(filter.state)) {
        where.push('EXISTS (SELECT 1 FROM recipients x WHERE x.queue_id = m.queue_id AND x.state = ?)');
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
      where.push('EXISTS (SELECT 1 FROM recipients x WHERE x.queue_id = m.queue_id AND x.domain = ?)');
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
    let sql = `SELECT m.queue_id, m.received_at, m.sender, m.size, m.message_id, m.state,
        (SELECT json_group_array(address) FROM (SELECT address FROM recipients r WHERE r.queue_id = m.queue_id ORDER BY idx)) AS rcpts,
        (SELECT count(*) FROM recipients r WHERE r.queue_id = m.queue_id AND r.state IN ('pending', 'deferred')) AS open,
        (SELECT min(next_attempt_at) FROM recipients r WHERE r.queue_id = m.queue_id AND r.state IN ('pending', 'deferred')) AS next
      FROM messages m`;
    if (where.length > 0) sql += ` WHERE ${where.join(' AND ')}`;
    sql += ' ORDER BY m.received_at, m.queue_id';
    if (filter.limit !== undefined) {
      sql += ' LIMIT ?';
      args.push(Math.max(0, Math.floor(filter.limit)));
    }
    return this.#db.prepare(sql).all(...args).map((r) => ({
      queueId: String(r.queue_id),
      receivedAt: Number(r.received_at),
      sender: String(r.sender),
      size: Number(r.size),
      messageId: r.message_id === null ? null : String(r.message_id),
      state: String(r.state) as MessageState,
      recipients: JSON.parse(String(r.rcpts)) as string[],
      recipientsOpen: Number(r.open),
      nextAttemptAt: r.next === null ? null : Number(r.next),
    }));
  }

  get(queueId: string): QueuedMessageDetail | null {
    const m = this.#db.prepare('SELECT * FROM messages WHERE queue_id = ?').get(queueId);
    if (m === undefined) return null;
    const rcpts = this.#db.prepare('SELECT * FROM recipients WHERE queue_id = ? ORDER BY idx').all(queueId);
    return {
      queueId: String(m.queue_id),
      receivedAt: Number(m.received_at),
      sender: String(m.sender),
      size: Number(m.size),
      bodyPath: String(m.body_path),
      messageId: nullableString(m.message_id),
      clientIp: String(m.client_ip),
      helo: nullableString(m.helo),
      authUser: nullableString(m.auth_user),
      listener: String(m.listener),
      mailParams: JSON.parse(String(m.mail_params)) as Record<string, string | true>,
      state: String(m.state) as MessageState,
      stateReason: nullableString(m.state_reason),
      updatedAt: Number(m.updated_at),
      recipients: rcpts.map((r) => ({
        address: String(r.address),
        params: JSON.parse(String(r.params)) as Record<string, string | true>,
        state: String(r.state) as RecipientState,
        attempts: Number(r.attempts),
        nextAttemptAt: nullableNumber(r.next_attempt_at),
        lastAttemptAt: nullableNumber(r.last_attempt_at),
        lastReply: nullableString(r.last_reply),
      })),
    };
  }

  close(): void {
    if (this.#db.isOpen) this.#db.close();
  }
}

function nullableString(v: unknown): string | null {
  return v === null || v === undefined ? null : String(v);
}

function nullableNumber(v: unknown): number | null {
  return v === null || v === undefined ? null : Number(v);
}
