/**
 * The mail queue on PostgreSQL (`store: { postgres: { url } }`): one queue shared by every node, behind the
 * queue's MailQueue port (queue/port.ts). Tables: migrations/postgres/002_queue.sql.
 *
 * Intake (group commit): a body is collected in memory while it arrives (SpoolFile with no inline limit); commit()
 * submits the record to a GroupCommit, and each batch is ONE statement (a data-modifying CTE inserting messages,
 * recipients and bodies from arrays), run in autocommit with synchronous_commit = on: one round trip and one WAL
 * flush per batch, and commit() resolves (the SMTP layer says 250) only after that statement returned. Any failure
 * rejects with ERR_QUEUE_WRITE (451 4.3.0, never a 5xx); a database that is down fails the batch at once (no
 * per-message retries). The pg Pool opens new connections as needed, so intake recovers by itself when the
 * database returns; a slow database only makes the batches slower (and larger).
 *
 * Leases (several nodes, one queue): each node's runner registers an incarnation in queue_nodes and renews its
 * heartbeat every leaseTime/3. due() claims due messages with UPDATE ... WHERE queue_id IN (SELECT ... FOR UPDATE
 * SKIP LOCKED) RETURNING: a message is claimable when it has no lease or its holder's heartbeat is older than the
 * lease time (or gone). The runner's reads before a delivery and its writes after it are fenced: they apply only
 * while the message's lease_owner is still the incarnation that claimed it AND that incarnation's heartbeat is
 * fresh. A node that finds its heartbeat expired (long partition, paused process) drops the old incarnation and
 * starts a new one; the outcomes of deliveries made under the old one are dropped (the runner counts them as
 * possible duplicates), so it never records over, or delivers again, a message another node has taken over.
 * Remaining window, inherent in at-least-once: a delivery that started under a valid lease and ran past the lease
 * time while another node took the message over can be sent by both.
 *
 * Admin (hold, release, retry, flush, delete, list, show) works from any process (the CLI): short transactions
 * with row locks; runners see the changes at their next poll.
 */
import { randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import pg, { type Pool, type PoolClient, type QueryResultRow } from 'pg';
import { SYSTEM_CLOCK, type Clock } from '../core/clock.ts';
import { RelayguardError } from '../core/errors.ts';
import { NULL_LOGGER, type Logger } from '../core/log.ts';
import { newQueueId } from '../core/queue-id.ts';
import type { Reply } from '../core/reply.ts';
import {
  clip, clipReply, ERR_QUEUE_BODY, ERR_QUEUE_CLOSED, ERR_QUEUE_READONLY, ERR_QUEUE_STATE, GroupCommit, groupDeferred, Incoming,
  LEASE_LOST, MESSAGE_STATES, queueCounts, RECIPIENT_STATES, recipientDomain, replyLine, SpoolFile, toQueueWriteError,
  type AdminResult, type AdminTarget, type AttemptRecord, type AttemptResult, type DueEntry, type IncomingMessage, type ListFilter,
  type MailQueue, type MessageRecord, type MessageState, type NodeDetail, type NodeSummary, type QueuedMessageDetail, type QueueCounts, type QueueStats,
  type RecipientState, type RunnerBackend, type SpaceVerdict, type StoreHooks,
} from '../queue/index.ts';
import { isUnavailable } from './postgres-directory.ts';
import { checkSchema, describePostgresUrl, loadMigrations, type Migration } from './postgres-schema.ts';

export interface PostgresQueueOptions {
  /** This node's name: recorded on each message it receives and on the leases it takes. */
  readonly node: string;
  /** A runner's lease: messages of a node whose heartbeat is older than this are taken over. Default 30 s. */
  readonly leaseTimeMs?: number;
  /** Connections in the pool. Default 10. */
  readonly poolSize?: number;
  /** Longest wait for a connection. Default 5000 ms. */
  readonly connectTimeoutMs?: number;
  /** Longest a statement may run (server statement_timeout). Default 30000 ms. */
  readonly queryTimeoutMs?: number;
  /** Largest group-commit batch. Default 256. */
  readonly maxBatch?: number;
  /** 'receive' (default): intake and runner; 'admin': list, show and the admin commands only (the CLI). */
  readonly role?: 'receive' | 'admin';
  readonly logger?: Logger;
  readonly clock?: Clock;
  /** The migrations the schema must match (tests). */
  readonly migrations?: readonly Migration[];
}

const ADMIN_CHUNK = 500;
/** Bodies up to this size come with the runner's read of the message (one round trip less per delivery). */
const SMALL_BODY = 64 * 1024;
const OPEN = `('pending', 'deferred')`;

interface Counters {
  committed: number;
  failed: number;
  aborted: number;
  bytes: number;
  dbCommits: number;
  leasesLost: number;
  incarnations: number;
  roundTrips: number;
}

export class PostgresMailQueue implements MailQueue {
  readonly backend = 'postgres';
  readonly node: string;
  readonly #pool: Pool;
  readonly #where: string;
  readonly #logger: Logger;
  readonly #clock: Clock;
  readonly #leaseMs: number;
  readonly #role: 'receive' | 'admin';
  readonly #groupCommit: GroupCommit<MessageRecord>;
  readonly #inFlight = new Set<Incoming>();
  readonly #workListeners = new Set<() => void>();
  readonly #c: Counters = { committed: 0, failed: 0, aborted: 0, bytes: 0, dbCommits: 0, leasesLost: 0, incarnations: 0, roundTrips: 0 };
  #runner: PgRunner | null = null;
  #closed = false;
  #closing: Promise<void> | null = null;
  readonly #hooks: StoreHooks = {
    now: () => this.#clock.now(),
    commitRecord: (record) => this.#groupCommit.submit(record),
    forget: (queueId) => {
      // The batch may have committed before its connection failed (we said 451): take it back if we still can.
      this.#pool.query('DELETE FROM queue_messages WHERE queue_id = $1', [queueId]).catch(() => {});
    },
    settle: (msg, outcome, fields) => {
      this.#inFlight.delete(msg);
      if (outcome === 'committed') {
        this.#c.committed++;
        this.#c.bytes += Number(fields.size ?? 0);
        this.#logger.debug('message queued', { queue_id: msg.queueId, ...fields });
      } else if (outcome === 'failed') {
        this.#c.failed++;
        this.#logger.warn('message not queued', { queue_id: msg.queueId, ...fields });
      } else {
        this.#c.aborted++;
      }
    },
  };

  private constructor(pool: Pool, where: string, options: PostgresQueueOptions) {
    this.#pool = pool;
    this.#where = where;
    this.node = options.node;
    this.#logger = options.logger ?? NULL_LOGGER;
    this.#clock = options.clock ?? SYSTEM_CLOCK;
    this.#leaseMs = options.leaseTimeMs ?? 30_000;
    this.#role = options.role ?? 'receive';
    this.#groupCommit = new GroupCommit((records) => this.#flush(records), {
      maxBatch: options.maxBatch ?? 256,
      // A batch that failed because the database is away fails as a whole: retrying each message alone would only
      // multiply the wait. Other failures (one bad record) are retried one by one.
      retryAlone: (err) => !isUnavailable(err),
    });
  }

  /**
   * Connects and checks the schema (ERR_STORE_SCHEMA_OLD / _NEWER / _MODIFIED: run `relayguard db migrate`;
   * ERR_STORE_UNAVAILABLE when the database cannot be reached).
   */
  static async open(url: string, options: PostgresQueueOptions): Promise<PostgresMailQueue> {
    if (typeof options.node !== 'string' || options.node === '') throw new RangeError('The queue needs a node name');
    const where = describePostgresUrl(url);
    const logger = options.logger ?? NULL_LOGGER;
    const pool = new pg.Pool({
      connectionString: url,
      max: options.poolSize ?? 10,
      connectionTimeoutMillis: options.connectTimeoutMs ?? 5000,
      idleTimeoutMillis: 30_000,
      application_name: `relayguard queue ${options.node}`.slice(0, 63),
      keepAlive: true,
      // Durability does not depend on the database's defaults: every COMMIT waits for its WAL flush.
      // A node paused or cut off in the middle of a transaction must not keep its row locks: the claim of the other
      // nodes skips locked rows (SKIP LOCKED), so locks held by a stopped process would block the takeover of those
      // messages for as long as the server keeps the session. The server ends a transaction left idle for half the
      // lease (our transactions are a few statements long), and its TCP keepalives find a vanished node in ~25 s.
      options: `-c synchronous_commit=on -c statement_timeout=${options.queryTimeoutMs ?? 30_000}`
        + ` -c idle_in_transaction_session_timeout=${Math.max(500, Math.floor((options.leaseTimeMs ?? 30_000) / 2))}`
        + ' -c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3',
    });
    // A connection that dies while idle (server restart, network): logged; the pool replaces it on demand.
    pool.on('error', (err) => logger.warn('queue database connection lost', { where, error: String(err) }));
    // And while checked out between two statements (a transaction): the statement under way, or the next, fails.
    pool.on('connect', (client) => client.on('error', (err) => logger.warn('queue database connection lost', { where, error: String(err) })));
    try {
      await checkSchema(pool, options.migrations ?? loadMigrations());
    } catch (err) {
      await pool.end().catch(() => {});
      if (isUnavailable(err) && !(err instanceof RelayguardError)) {
        throw new RelayguardError('ERR_STORE_UNAVAILABLE', `PostgreSQL (${where}) is unavailable: ${(err as Error).message}`, { cause: err });
      }
      throw err;
    }
    return new PostgresMailQueue(pool, where, options);
  }

  async beginMessage(): Promise<IncomingMessage> {
    this.#requireOpen();
    if (this.#role !== 'receive') throw new RelayguardError(ERR_QUEUE_READONLY, 'Queue is open for admin commands only');
    const queueId = newQueueId(this.#clock.now());
    // No inline limit: the body stays in memory and goes into queue_bodies with its record; never a file.
    const spool = new SpoolFile(`/nonexistent/${queueId}`, `/nonexistent/${queueId}`, Number.MAX_SAFE_INTEGER);
    const msg = new Incoming(queueId, spool, this.#hooks);
    this.#inFlight.add(msg);
    return msg;
  }

  /** The database's disk is not ours to measure: a full one fails the commit (451). */
  checkSpace(): SpaceVerdict {
    return 'ok';
  }

  async #flush(records: readonly MessageRecord[]): Promise<void> {
    const ids: string[] = [], received: number[] = [], senders: string[] = [], sizes: number[] = [], mids: (string | null)[] = [];
    const ips: string[] = [], helos: (string | null)[] = [], users: (string | null)[] = [], listeners: string[] = [], mparams: string[] = [];
    const bodies: Buffer[] = [];
    const rIds: string[] = [], rIdx: number[] = [], rAddr: string[] = [], rDom: string[] = [], rParams: string[] = [], rAt: number[] = [];
    for (const r of records) {
      ids.push(r.queueId); received.push(r.receivedAt); senders.push(r.sender); sizes.push(r.size); mids.push(r.messageId);
      ips.push(r.clientIp); helos.push(r.helo); users.push(r.authUser); listeners.push(r.listener); mparams.push(JSON.stringify(r.mailParams));
      const b = r.body;
      bodies.push(b === undefined || b === null ? Buffer.alloc(0) : Buffer.from(b.buffer, b.byteOffset, b.byteLength));
      r.recipients.forEach((rc, i) => {
        rIds.push(r.queueId); rIdx.push(i); rAddr.push(rc.address); rDom.push(recipientDomain(rc.address));
        rParams.push(JSON.stringify(rc.params)); rAt.push(r.receivedAt);
      });
    }
    try {
      this.#c.roundTrips++;
      await this.#pool.query({
        name: 'queue-intake',
        text: `WITH m AS (
            INSERT INTO queue_messages (queue_id, received_at, sender, size, message_id, client_ip, helo, auth_user, listener,
              mail_params, updated_at, next_run_at, received_by)
            SELECT t.id, t.ra, t.s, t.sz, t.mid, t.ip, t.h, t.au, t.l, t.mp, t.ra, t.ra, $11
            FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::text[], $8::text[],
              $9::text[], $10::text[]) AS t(id, ra, s, sz, mid, ip, h, au, l, mp)
            RETURNING 1
          ), r AS (
            INSERT INTO queue_recipients (queue_id, idx, address, domain, params, next_attempt_at, updated_at)
            SELECT u.id, u.i, u.a, u.d, u.p, u.at, u.at
            FROM unnest($12::text[], $13::int[], $14::text[], $15::text[], $16::text[], $17::bigint[]) AS u(id, i, a, d, p, at)
            RETURNING 1
          )
          INSERT INTO queue_bodies (queue_id, data) SELECT b.id, b.data FROM unnest($1::text[], $18::bytea[]) AS b(id, data)`,
        values: [ids, received, senders, sizes, mids, ips, helos, users, listeners, mparams, this.node,
          rIds, rIdx, rAddr, rDom, rParams, rAt, bodies],
      });
    } catch (err) {
      throw toQueueWriteError(err, `committing to PostgreSQL (${this.#where})`);
    }
    this.#c.dbCommits++;
    for (const l of this.#workListeners) {
      try {
        l();
      } catch (err) {
        this.#logger.error('queue work listener failed', { error: String(err) });
      }
    }
  }

  // ---- reads ----

  async list(filter: ListFilter = {}): Promise<NodeSummary[]> {
    this.#requireOpen();
    const { where, args } = whereOf(filter, this.#clock.now());
    let sql = `SELECT m.queue_id, m.received_at, m.sender, m.size, m.message_id, m.state, coalesce(m.lease_node, m.received_by) AS node,
        (SELECT coalesce(json_agg(address ORDER BY idx), '[]') FROM queue_recipients r WHERE r.queue_id = m.queue_id) AS rcpts,
        (SELECT count(*) FROM queue_recipients r WHERE r.queue_id = m.queue_id AND r.state IN ${OPEN}) AS open,
        (SELECT min(next_attempt_at) FROM queue_recipients r WHERE r.queue_id = m.queue_id AND r.state IN ${OPEN}) AS next,
        (SELECT coalesce(json_agg(json_build_array(address, last_reply, remote_mta) ORDER BY idx), '[]')
          FROM queue_recipients r WHERE r.queue_id = m.queue_id AND r.state = 'deferred') AS deferred
      FROM queue_messages m${where} ORDER BY m.received_at, m.queue_id`;
    if (filter.limit !== undefined) {
      args.push(Math.max(0, Math.floor(filter.limit)));
      sql += ` LIMIT $${args.length}`;
    }
    const rows = await this.#q(sql, args);
    return rows.map((r) => ({
      queueId: String(r.queue_id),
      receivedAt: Number(r.received_at),
      sender: String(r.sender),
      size: Number(r.size),
      messageId: r.message_id === null ? null : String(r.message_id),
      state: String(r.state) as MessageState,
      recipients: r.rcpts as string[],
      recipientsOpen: Number(r.open),
      nextAttemptAt: r.next === null ? null : Number(r.next),
      deferred: groupDeferred(r.deferred as [string, string | null, string | null][]),
      node: r.node === null ? null : String(r.node),
    }));
  }

  /** Messages by state and the oldest of each: one GROUP BY (queue_messages_run leads with state) and the deferred
   *  recipients through queue_recipients_state. */
  async counts(): Promise<QueueCounts> {
    this.#requireOpen();
    const rows = await this.#q(`SELECT state, count(*) AS n, min(received_at) AS oldest FROM queue_messages GROUP BY state
      UNION ALL
      SELECT 'deferred', count(*), min(received_at) FROM queue_messages WHERE queue_id IN (SELECT queue_id FROM queue_recipients WHERE state = 'deferred')`, []);
    return queueCounts(rows.map((r) => ({ state: String(r.state), messages: Number(r.n), oldest: r.oldest === null ? null : Number(r.oldest) })), this.#clock.now());
  }

  async get(queueId: string): Promise<NodeDetail | null> {
    this.#requireOpen();
    try {
      return await this.#detail(this.#pool, queueId, null);
    } catch (err) {
      throw this.#unavailable(err);
    }
  }

  /**
   * The message with its recipients; with `fence`, only while that incarnation holds a live lease on it, and then
   * with its body when it is small (the runner delivers it next: one round trip for both).
   */
  async #detail(db: Pool | PoolClient, queueId: string, fence: string | null): Promise<NodeDetail | null> {
    return (await this.#detailAndBody(db, queueId, fence)).detail;
  }

  async #detailAndBody(db: Pool | PoolClient, queueId: string, fence: string | null): Promise<{ detail: NodeDetail | null; body: Buffer | null }> {
    const fenced = fence !== null;
    this.#c.roundTrips++;
    const r = await db.query(`SELECT m.*,
        (SELECT coalesce(json_agg(r ORDER BY r.idx), '[]') FROM queue_recipients r WHERE r.queue_id = m.queue_id) AS rcpts
        ${fenced ? `, CASE WHEN m.size <= ${SMALL_BODY} THEN (SELECT data FROM queue_bodies b WHERE b.queue_id = m.queue_id) END AS body` : ''}
      FROM queue_messages m WHERE m.queue_id = $1${fenced ? ` AND m.lease_owner = $2 AND ${LIVE('$2', '$3')}` : ''}`,
    fenced ? [queueId, fence, this.#leaseMs] : [queueId]);
    const m = r.rows[0];
    return m === undefined ? { detail: null, body: null } : { detail: detailOf(m), body: (m.body ?? null) as Buffer | null };
  }

  async readBody(queueId: string): Promise<Buffer | null> {
    this.#requireOpen();
    const r = await this.#q('SELECT data FROM queue_bodies WHERE queue_id = $1', [queueId]);
    if (r.length === 0) {
      if ((await this.#q('SELECT 1 FROM queue_messages WHERE queue_id = $1', [queueId])).length === 0) return null;
      throw new RelayguardError(ERR_QUEUE_BODY, `Body of ${queueId} is missing`);
    }
    return r[0]!.data as Buffer;
  }

  async readHeaders(queueId: string, maxBytes = 64 * 1024): Promise<{ headers: string; truncated: boolean } | null> {
    this.#requireOpen();
    const r = await this.#q('SELECT m.size, substring(b.data FROM 1 FOR $2) AS head FROM queue_messages m LEFT JOIN queue_bodies b USING (queue_id) WHERE m.queue_id = $1', [queueId, maxBytes]);
    if (r.length === 0) return null;
    if (r[0]!.head === null) throw new RelayguardError(ERR_QUEUE_BODY, `Body of ${queueId} is missing`);
    const bytes = r[0]!.head as Buffer;
    const crlf = bytes.indexOf('\r\n\r\n');
    const lf = bytes.indexOf('\n\n');
    const ends = [crlf < 0 ? -1 : crlf + 2, lf < 0 ? -1 : lf + 1].filter((e) => e >= 0);
    if (ends.length > 0) return { headers: bytes.subarray(0, Math.min(...ends)).toString('utf8'), truncated: false };
    return { headers: bytes.toString('utf8'), truncated: bytes.length < Number(r[0]!.size) };
  }

  // ---- admin ----

  hold(target: AdminTarget): Promise<AdminResult> {
    return this.#admin('hold', target, async (c, ids, states, now) => {
      const ok = ids.filter((id) => states.get(id) === 'queued');
      await c.query(`UPDATE queue_messages SET state = 'hold', state_reason = 'held by an administrator', updated_at = $2 WHERE queue_id = ANY($1)`, [ok, now]);
      return (id, s) => (s === 'queued' ? null : s === 'hold' ? 'already on hold' : `is ${s}`);
    });
  }

  release(target: AdminTarget): Promise<AdminResult> {
    return this.#admin('release', target, async (c, ids, states, now) => {
      const ok = ids.filter((id) => states.get(id) === 'hold');
      await c.query(`UPDATE queue_messages m SET state = 'queued', state_reason = NULL, updated_at = $2,
          next_run_at = coalesce((SELECT min(next_attempt_at) FROM queue_recipients r WHERE r.queue_id = m.queue_id AND r.state IN ${OPEN}), $2)
        WHERE queue_id = ANY($1)`, [ok, now]);
      return (id, s) => (s === 'hold' ? null : s === 'queued' ? 'not on hold' : `is ${s}`);
    }, true);
  }

  retry(target: AdminTarget): Promise<AdminResult> {
    return this.#admin('retry', target, async (c, ids, states, now) => {
      const ok = ids.filter((id) => states.get(id) === 'queued');
      await c.query(`UPDATE queue_recipients SET next_attempt_at = $2, updated_at = $2 WHERE queue_id = ANY($1) AND state IN ${OPEN}`, [ok, now]);
      await c.query('UPDATE queue_messages SET next_run_at = $2, updated_at = $2 WHERE queue_id = ANY($1)', [ok, now]);
      return (id, s) => (s === 'queued' ? null : `is ${s}`);
    }, true);
  }

  async flush(): Promise<AdminResult> {
    this.#requireOpen();
    const rows = await this.#q(`SELECT queue_id FROM queue_messages WHERE state = 'queued' AND next_run_at > $1 ORDER BY next_run_at`, [this.#clock.now()]);
    return this.retry({ queueIds: rows.map((r) => String(r.queue_id)) });
  }

  delete(target: AdminTarget): Promise<AdminResult> {
    return this.#admin('delete', target, async (c, ids) => {
      await c.query('DELETE FROM queue_messages WHERE queue_id = ANY($1)', [ids]);
      return () => null;
    });
  }

  async #admin(action: string, target: AdminTarget,
    apply: (c: PoolClient, ids: string[], states: Map<string, MessageState>, now: number) => Promise<(id: string, s: MessageState) => string | null>,
    wakes = false): Promise<AdminResult> {
    this.#requireOpen();
    const now = this.#clock.now();
    let ids: string[];
    if ('queueIds' in target) {
      ids = [...new Set(target.queueIds)];
    } else {
      const { where, args } = whereOf(target.filter, now);
      let sql = `SELECT m.queue_id FROM queue_messages m${where} ORDER BY m.received_at, m.queue_id`;
      if (target.filter.limit !== undefined) {
        args.push(Math.max(0, Math.floor(target.filter.limit)));
        sql += ` LIMIT $${args.length}`;
      }
      ids = (await this.#q(sql, args)).map((r) => String(r.queue_id));
    }
    const out: AdminResult = { changed: [], unchanged: [], missing: [] };
    for (let i = 0; i < ids.length; i += ADMIN_CHUNK) {
      const chunk = ids.slice(i, i + ADMIN_CHUNK);
      await this.#tx(async (c) => {
        const r = await c.query('SELECT queue_id, state FROM queue_messages WHERE queue_id = ANY($1) FOR UPDATE', [chunk]);
        const states = new Map(r.rows.map((row) => [String(row.queue_id), String(row.state) as MessageState]));
        const verdict = await apply(c, chunk.filter((id) => states.has(id)), states, now);
        for (const id of chunk) {
          const s = states.get(id);
          if (s === undefined) {
            out.missing.push(id);
            continue;
          }
          const reason = verdict(id, s);
          if (reason === null) out.changed.push(id);
          else out.unchanged.push({ queueId: id, state: s, reason });
        }
      });
    }
    if (out.changed.length > 0) {
      this.#logger.info(`queue ${action}`, { changed: out.changed.length, queue_ids: out.changed.slice(0, 100) });
      if (wakes) for (const l of this.#workListeners) l();
    }
    return out;
  }

  stats(): QueueStats & { readonly roundTrips: number } {
    const gc = this.#groupCommit.stats();
    return {
      messagesCommitted: this.#c.committed,
      messagesFailed: this.#c.failed,
      messagesAborted: this.#c.aborted,
      bytesCommitted: this.#c.bytes,
      inFlight: this.#inFlight.size,
      dbCommits: this.#c.dbCommits,
      walSyncs: this.#c.dbCommits,
      dirSyncs: 0,
      inlineBodies: this.#c.committed,
      batches: gc.flushes,
      largestBatch: gc.largestBatch,
      roundTrips: this.#c.roundTrips,
    };
  }

  attachRunner(): RunnerBackend {
    this.#requireOpen();
    if (this.#role !== 'receive') throw new RelayguardError(ERR_QUEUE_READONLY, 'Only a receiving queue can run the queue');
    if (this.#runner !== null) throw new RelayguardError(ERR_QUEUE_STATE, 'The queue already has a runner');
    const runner = new PgRunner(this, this.#pool, this.#logger, this.#leaseMs, this.#c, this.#workListeners, () => { this.#runner = null; });
    this.#runner = runner;
    return runner;
  }

  /** For tests: the runner's incarnation (queue_nodes.incarnation), or null. */
  get incarnation(): string | null {
    return this.#runner?.incarnation ?? null;
  }

  /**
   * For tests: stops as a killed process would: no more heartbeats, leases are NOT given back, the pool is closed.
   * Another node takes the messages over once the lease time has passed.
   */
  async abandon(): Promise<void> {
    this.#runner?.abandon();
    this.#closed = true;
    await this.#pool.end().catch(() => {});
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#closed = true;
      await Promise.all([...this.#inFlight].map((m) => m.abort(new RelayguardError(ERR_QUEUE_CLOSED, 'Queue is closing'))));
      await this.#groupCommit.idle();
      await this.#runner?.detach();
      await this.#pool.end().catch(() => {});
    })();
    return this.#closing;
  }

  async #q(text: string, values: unknown[]): Promise<QueryResultRow[]> {
    this.#c.roundTrips++;
    try {
      return (await this.#pool.query(text, values)).rows;
    } catch (err) {
      throw this.#unavailable(err);
    }
  }

  /** The connection's or server's fault -> ERR_STORE_UNAVAILABLE (the CLI says so); others pass through. */
  #unavailable(err: unknown): unknown {
    if (err instanceof RelayguardError || !isUnavailable(err)) return err;
    return new RelayguardError('ERR_STORE_UNAVAILABLE', `PostgreSQL (${this.#where}) is unavailable: ${(err as Error)?.message ?? String(err)}`, { cause: err });
  }

  async #tx<T>(fn: (c: PoolClient) => Promise<T>): Promise<T> {
    let c: PoolClient;
    try {
      c = await this.#pool.connect();
    } catch (err) {
      throw this.#unavailable(err);
    }
    try {
      await c.query('BEGIN');
      const out = await fn(c);
      await c.query('COMMIT');
      return out;
    } catch (err) {
      await c.query('ROLLBACK').catch(() => {});
      throw this.#unavailable(err);
    } finally {
      c.release();
    }
  }

  #requireOpen(): void {
    if (this.#closed) throw new RelayguardError(ERR_QUEUE_CLOSED, 'Queue is closed');
  }

  /** Used by PgRunner. */
  detailFenced(db: Pool | PoolClient, queueId: string, incarnation: string): Promise<{ detail: NodeDetail | null; body: Buffer | null }> {
    return this.#detailAndBody(db, queueId, incarnation);
  }

  /** Used by PgRunner: the fenced details (and small bodies) of several messages in one round trip. */
  async detailsFenced(db: Pool | PoolClient, queueIds: readonly string[], incarnation: string): Promise<Map<string, { detail: NodeDetail; body: Buffer | null }>> {
    this.#c.roundTrips++;
    const r = await db.query(`SELECT m.*,
        (SELECT coalesce(json_agg(r ORDER BY r.idx), '[]') FROM queue_recipients r WHERE r.queue_id = m.queue_id) AS rcpts,
        CASE WHEN m.size <= ${SMALL_BODY} THEN (SELECT data FROM queue_bodies b WHERE b.queue_id = m.queue_id) END AS body
      FROM queue_messages m WHERE m.queue_id = ANY($1::text[]) AND m.lease_owner = $2 AND ${LIVE('$2', '$3')}`,
    [[...queueIds], incarnation, this.#leaseMs]);
    return new Map(r.rows.map((m) => [String(m.queue_id), { detail: detailOf(m), body: (m.body ?? null) as Buffer | null }]));
  }
}

/** How long a detail read with the claim may stand in for the read before the attempt (see PgRunner.get). */
const PREFETCH_FRESH_MS = 250;
/** At most this many of a claimed page are read with the claim: the ones the runner starts at once. */
const PREFETCH_MAX = 32;

/** SQL: incarnation $inc has a heartbeat younger than $ms milliseconds. */
const LIVE = (inc: string, ms: string): string =>
  `EXISTS (SELECT 1 FROM queue_nodes n WHERE n.incarnation = ${inc} AND n.heartbeat_at > clock_timestamp() - make_interval(secs => ${ms}::double precision / 1000))`;

/** The runner's half on PostgreSQL: claims, fenced reads and writes, heartbeats. */
class PgRunner implements RunnerBackend {
  readonly logger: Logger;
  readonly #queue: PostgresMailQueue;
  readonly #pool: Pool;
  readonly #leaseMs: number;
  readonly #c: Counters;
  readonly #work: Set<() => void>;
  readonly #onDetach: () => void;
  /** queue id -> the incarnation that claimed it (fencing uses the claiming one, not the current one). */
  readonly #claims = new Map<string, string>();
  /** Small bodies read with their message for the delivery under way; dropped at release(). */
  readonly #bodies = new Map<string, Buffer>();
  /** Details read right after the claim, for the attempts that start at once (queue id -> detail, when read). */
  readonly #prefetched = new Map<string, { detail: QueuedMessageDetail; body: Buffer | null; at: number }>();
  #incarnation: string | null = null;
  #registering: Promise<string> | null = null;
  #lastBeat = 0;
  #timer: NodeJS.Timeout | null = null;
  #detached = false;

  constructor(queue: PostgresMailQueue, pool: Pool, logger: Logger, leaseMs: number, c: Counters, work: Set<() => void>, onDetach: () => void) {
    this.#queue = queue;
    this.#pool = pool;
    this.logger = logger;
    this.#leaseMs = leaseMs;
    this.#c = c;
    this.#work = work;
    this.#onDetach = onDetach;
    this.#timer = setInterval(() => void this.#beat().catch(() => {}), Math.max(50, Math.floor(leaseMs / 3)));
    this.#timer.unref();
  }

  get incarnation(): string | null {
    return this.#incarnation;
  }

  /** This node's live incarnation: registers one at first use, and a new one when the last heartbeat expired. */
  async #live(): Promise<string> {
    if (this.#incarnation !== null && Date.now() - this.#lastBeat < this.#leaseMs / 2) return this.#incarnation;
    await this.#beat();
    return this.#incarnation!;
  }

  /** Renews the heartbeat; starts a new incarnation when the current one expired (or never existed). */
  async #beat(): Promise<void> {
    if (this.#detached) return;
    const inc = this.#incarnation;
    if (inc !== null) {
      const started = Date.now();
      const r = await this.#pool.query(`UPDATE queue_nodes SET heartbeat_at = clock_timestamp() WHERE incarnation = $1
        AND heartbeat_at > clock_timestamp() - make_interval(secs => $2::double precision / 1000) RETURNING 1`, [inc, this.#leaseMs]);
      if (r.rowCount === 1) {
        this.#lastBeat = started;
        return;
      }
      // Expired: other nodes may have taken our messages over. Everything claimed under it is void.
      this.logger.warn('queue node lease expired; starting a new incarnation', { node: this.#queue.node, incarnation: inc });
      this.#incarnation = null;
      await this.#pool.query('DELETE FROM queue_nodes WHERE incarnation = $1', [inc]).catch(() => {});
    }
    this.#registering ??= (async () => {
      const id = randomUUID();
      const started = Date.now();
      await this.#pool.query('INSERT INTO queue_nodes (incarnation, node) VALUES ($1, $2)', [id, this.#queue.node]);
      // Rows of incarnations long dead (killed nodes): their leases are void already; the rows only take space.
      await this.#pool.query(`DELETE FROM queue_nodes WHERE heartbeat_at < clock_timestamp() - make_interval(secs => $1::double precision / 100)`,
        [this.#leaseMs]).catch(() => {});
      this.#incarnation = id;
      this.#lastBeat = started;
      this.#c.incarnations++;
      this.logger.info('queue node registered', { node: this.#queue.node, incarnation: id, lease_ms: this.#leaseMs });
      return id;
    })().finally(() => { this.#registering = null; });
    await this.#registering;
  }

  async due(now: number, _after: DueEntry | null, limit: number): Promise<DueEntry[]> {
    const inc = await this.#live();
    this.#c.roundTrips++;
    const r = await this.#pool.query(`UPDATE queue_messages m SET lease_owner = $1, lease_node = $2
      WHERE m.queue_id IN (
        SELECT q.queue_id FROM queue_messages q
        WHERE q.state = 'queued' AND q.next_run_at <= $3
          AND (q.lease_owner IS NULL
            OR (q.lease_owner <> $1 AND NOT ${LIVE('q.lease_owner', '$5')})
            -- Ours but not in hand (its release failed, say, when the database went away): take it up again.
            OR (q.lease_owner = $1 AND q.queue_id <> ALL($6::text[])))
        ORDER BY q.next_run_at, q.queue_id LIMIT $4
        FOR UPDATE SKIP LOCKED)
      AND ${LIVE('$1', '$5')}
      RETURNING m.queue_id, m.next_run_at`, [inc, this.#queue.node, now, limit, this.#leaseMs, [...this.#claims.keys()]]);
    const out = r.rows.map((row) => ({ queueId: String(row.queue_id), nextRunAt: Number(row.next_run_at) }))
      .sort((a, b) => a.nextRunAt - b.nextRunAt || (a.queueId < b.queueId ? -1 : a.queueId > b.queueId ? 1 : 0));
    for (const e of out) this.#claims.set(e.queueId, inc);
    const stale = Date.now() - PREFETCH_FRESH_MS;
    for (const [id, p] of this.#prefetched) if (p.at < stale) this.#prefetched.delete(id);
    if (out.length > 0) {
      // The first messages of the page start at once: read them (fenced, small bodies included) in the same breath
      // as the claim, one round trip instead of one per message. A read failure only means get() reads alone.
      const first = out.slice(0, PREFETCH_MAX).map((e) => e.queueId);
      try {
        const at = Date.now();
        for (const [id, d] of await this.#queue.detailsFenced(this.#pool, first, inc)) this.#prefetched.set(id, { ...d, at });
      } catch { /* get() reads each */ }
    }
    return out;
  }

  async nextDue(): Promise<number | null> {
    this.#c.roundTrips++;
    const r = await this.#pool.query(`SELECT min(next_run_at) AS t FROM queue_messages WHERE state = 'queued'`);
    const t = r.rows[0]?.t;
    return t === null || t === undefined ? null : Number(t);
  }

  #claim(queueId: string): string {
    return this.#claims.get(queueId) ?? 'none';
  }

  /**
   * The message before an attempt, fenced on this node's lease. A detail read with the claim is used when it is at
   * most PREFETCH_FRESH_MS old: the same guarantee as a read now (an administrator's hold made after the read is
   * not seen either way; the lease is checked again when the outcome is recorded).
   */
  async get(queueId: string): Promise<QueuedMessageDetail | null> {
    const pre = this.#prefetched.get(queueId);
    if (pre !== undefined) {
      this.#prefetched.delete(queueId);
      if (Date.now() - pre.at <= PREFETCH_FRESH_MS) {
        if (pre.body !== null) this.#bodies.set(queueId, pre.body);
        return pre.detail;
      }
    }
    const { detail, body } = await this.#queue.detailFenced(this.#pool, queueId, this.#claim(queueId));
    if (body !== null) this.#bodies.set(queueId, body);
    return detail;
  }

  async #fenced(sql: string, values: unknown[]): Promise<void> {
    this.#c.roundTrips++;
    await this.#pool.query(sql, values);
  }

  refreshNextRun(queueId: string, fallback: number): Promise<void> {
    return this.#fenced(`UPDATE queue_messages m SET next_run_at = coalesce((SELECT min(next_attempt_at) FROM queue_recipients r
        WHERE r.queue_id = m.queue_id AND r.state IN ${OPEN}), $2)
      WHERE m.queue_id = $1 AND m.lease_owner = $3 AND ${LIVE('$3', '$4')}`, [queueId, fallback, this.#claim(queueId), this.#leaseMs]);
  }

  setNextRun(queueId: string, at: number): Promise<void> {
    return this.#fenced(`UPDATE queue_messages SET next_run_at = $2 WHERE queue_id = $1 AND lease_owner = $3 AND ${LIVE('$3', '$4')}`,
      [queueId, at, this.#claim(queueId), this.#leaseMs]);
  }

  markNotified(queueId: string, indexes: readonly number[], now: number): Promise<void> {
    return this.#fenced(`UPDATE queue_recipients SET notified_at = $3 WHERE queue_id = $1 AND idx = ANY($2) AND state = 'bounced'
      AND EXISTS (SELECT 1 FROM queue_messages m WHERE m.queue_id = $1 AND m.lease_owner = $4) AND ${LIVE('$4', '$5')}`,
    [queueId, [...indexes], now, this.#claim(queueId), this.#leaseMs]);
  }

  markDelayWarned(queueId: string, now: number): Promise<void> {
    return this.#fenced(`UPDATE queue_messages SET delay_warned_at = $2 WHERE queue_id = $1 AND lease_owner = $3 AND ${LIVE('$3', '$4')}`,
      [queueId, now, this.#claim(queueId), this.#leaseMs]);
  }

  async removeFinished(queueId: string): Promise<string | null> {
    this.#c.roundTrips++;
    const r = await this.#pool.query(`DELETE FROM queue_messages m WHERE m.queue_id = $1 AND m.state = 'queued'
        AND m.lease_owner = $2 AND ${LIVE('$2', '$3')}
        AND NOT EXISTS (SELECT 1 FROM queue_recipients r WHERE r.queue_id = $1 AND (r.state IN ${OPEN} OR (r.state = 'bounced' AND r.notified_at IS NULL)))
      RETURNING 1`, [queueId, this.#claim(queueId), this.#leaseMs]);
    if (r.rowCount !== 1) return null;
    this.#claims.delete(queueId); // removed with its lease: release() has nothing to give back
    return '';
  }

  async removeBody(): Promise<void> {
    // Bodies live in queue_bodies and go with their record.
  }

  async recordAttempts(records: readonly AttemptRecord[]): Promise<(AttemptResult | null | typeof LEASE_LOST)[]> {
    const c = await this.#pool.connect();
    try {
      this.#c.roundTrips++;
      await c.query('BEGIN');
      const out: (AttemptResult | null | typeof LEASE_LOST)[] = [];
      for (const rec of records) out.push(await this.#recordOne(c, rec));
      this.#c.roundTrips++;
      await c.query('COMMIT');
      records.forEach((rec, i) => {
        const r = out[i];
        if (r === LEASE_LOST) this.#c.leasesLost++;
        // Removed with its lease (or gone): nothing to give back.
        else if (r === null || r?.removedBodyPath != null) this.#claims.delete(rec.queueId);
      });
      return out;
    } catch (err) {
      await c.query('ROLLBACK').catch(() => {});
      throw err;
    } finally {
      c.release();
    }
  }

  /**
   * One message's outcomes inside the caller's transaction, in ONE statement (one round trip): lock the row and
   * check the lease and the incarnation; update the open recipients the attempt settled; mark the message corrupt
   * when the body was; then remove the message when nothing is left to do (the recipients go with it), else
   * recompute its next run. Every write is gated on the lease check. The counts combine the recipients the update
   * returned with the untouched ones (a data-modifying CTE's changes are invisible to the statement's other parts).
   */
  async #recordOne(c: PoolClient, { queueId, updates, now, corruptReason }: AttemptRecord): Promise<AttemptResult | null | typeof LEASE_LOST> {
    const inc = this.#claim(queueId);
    this.#c.roundTrips++;
    const r = await c.query(`WITH m AS (
        SELECT state, lease_owner = $3 AS held FROM queue_messages WHERE queue_id = $1 FOR UPDATE
      ), alive AS (
        SELECT ${LIVE('$3', '$4')} AS live
      ), ok AS (
        SELECT coalesce((SELECT held FROM m), false) AND (SELECT live FROM alive) AS yes
      ), upd AS (
        UPDATE queue_recipients r SET state = u.state, attempts = r.attempts + 1,
          next_attempt_at = CASE WHEN u.state = 'deferred' THEN u.next ELSE NULL END, last_attempt_at = $2, last_reply = u.last,
          reply = u.reply, dsn_status = u.dsn, remote_mta = u.mta, diagnostic = u.diag, updated_at = $2
        FROM unnest($5::int[], $6::text[], $7::bigint[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[])
          AS u(idx, state, next, last, reply, dsn, mta, diag)
        WHERE r.queue_id = $1 AND r.idx = u.idx AND r.state IN ${OPEN} AND (SELECT yes FROM ok)
        RETURNING r.idx, r.state, r.notified_at, r.next_attempt_at
      ), rec AS (
        SELECT q.state, q.notified_at, q.next_attempt_at FROM queue_recipients q
          WHERE q.queue_id = $1 AND q.idx NOT IN (SELECT idx FROM upd)
        UNION ALL SELECT state, notified_at, next_attempt_at FROM upd
      ), c AS (
        SELECT count(*) FILTER (WHERE state IN ${OPEN}) AS open,
          count(*) FILTER (WHERE state = 'bounced' AND notified_at IS NULL) AS unreported,
          min(next_attempt_at) FILTER (WHERE state IN ${OPEN}) AS next
        FROM rec
      ), st AS (
        SELECT CASE WHEN $13::text IS NOT NULL THEN 'corrupt' ELSE (SELECT state FROM m) END AS state
      ), finished AS (
        SELECT (SELECT yes FROM ok) AND (SELECT state FROM st) = 'queued' AND open = 0 AND unreported = 0 AS yes FROM c
      ), d AS (
        DELETE FROM queue_messages WHERE queue_id = $1 AND (SELECT yes FROM finished) RETURNING 1
      ), u2 AS (
        UPDATE queue_messages SET next_run_at = coalesce((SELECT next FROM c), $2),
          state_reason = CASE WHEN $13::text IS NOT NULL AND state <> 'corrupt' THEN $13::text ELSE state_reason END,
          updated_at = CASE WHEN $13::text IS NOT NULL AND state <> 'corrupt' THEN $2 ELSE updated_at END,
          state = (SELECT state FROM st)
        WHERE queue_id = $1 AND (SELECT yes FROM ok) AND NOT (SELECT yes FROM finished) RETURNING 1
      )
      SELECT (SELECT count(*) FROM m) AS found, (SELECT yes FROM ok) AS ok, (SELECT live FROM alive) AS live,
        (SELECT state FROM st) AS state, (SELECT open FROM c) AS open, (SELECT count(*) FROM d) AS removed,
        (SELECT count(*) FROM u2) AS updated`, [
      queueId, now, inc, this.#leaseMs,
      updates.map((u) => u.index), updates.map((u) => u.state), updates.map((u) => u.nextAttemptAt),
      updates.map((u) => replyLine(u.reply, u.diagnostic)), updates.map((u) => clipReply(u.reply)), updates.map((u) => u.dsnStatus),
      updates.map((u) => (u.remoteMta === null ? null : clip(u.remoteMta))), updates.map((u) => (u.diagnostic === null ? null : clip(u.diagnostic))),
      corruptReason === null ? null : clip(corruptReason),
    ]);
    const row = r.rows[0]!;
    // Gone. With our incarnation expired, the node that took it over may have delivered it (a lost lease);
    // otherwise an administrator deleted it.
    if (Number(row.found) === 0) return row.live === true ? null : LEASE_LOST;
    if (row.ok !== true) return LEASE_LOST;
    const state = String(row.state) as MessageState;
    const open = Number(row.open);
    return { state, open, removedBodyPath: Number(row.removed) > 0 ? '' : null };
  }

  openBody(detail: QueuedMessageDetail, onFault: (err: Error) => void): Readable {
    const pool = this.#pool;
    const cached = this.#bodies.get(detail.queueId);
    const load = (): Promise<Buffer | null> => (cached !== undefined
      ? Promise.resolve(cached)
      : pool.query('SELECT data FROM queue_bodies WHERE queue_id = $1', [detail.queueId]).then((r) => (r.rows[0]?.data ?? null) as Buffer | null));
    if (cached === undefined) this.#c.roundTrips++;
    let started = false;
    return new Readable({
      highWaterMark: 64 * 1024,
      read() {
        if (started) return;
        started = true;
        load().then((body) => {
          const seen = body?.length ?? 0;
          const what = body === null ? 'is missing' : seen < detail.size ? 'is truncated' : seen > detail.size ? 'is too long' : null;
          if (what !== null) {
            const err = new RelayguardError(ERR_QUEUE_BODY, `Body ${what}: expected ${detail.size} bytes, read ${seen}`);
            onFault(err);
            this.destroy(err);
            return;
          }
          for (let off = 0; off < seen; off += 64 * 1024) this.push(body!.subarray(off, off + 64 * 1024));
          this.push(null);
        }, (err: unknown) => {
          // The database, not the body: the attempt is deferred, the message is not set aside.
          this.destroy(err instanceof Error ? err : new Error(String(err)));
        });
      },
    });
  }

  async release(queueId: string): Promise<void> {
    this.#bodies.delete(queueId);
    this.#prefetched.delete(queueId);
    const inc = this.#claims.get(queueId);
    this.#claims.delete(queueId);
    if (inc === undefined) return;
    try {
      this.#c.roundTrips++;
      await this.#pool.query('UPDATE queue_messages SET lease_owner = NULL, lease_node = NULL WHERE queue_id = $1 AND lease_owner = $2', [queueId, inc]);
    } catch (err) {
      // The lease expires by itself.
      this.logger.warn('queue lease not released', { queue_id: queueId, error: String(err) });
    }
  }

  onWork(listener: () => void): () => void {
    this.#work.add(listener);
    return () => this.#work.delete(listener);
  }

  leaseStats(): { leasesLost: number; incarnations: number } {
    return { leasesLost: this.#c.leasesLost, incarnations: this.#c.incarnations };
  }

  abandon(): void {
    this.#detached = true;
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#onDetach();
  }

  async detach(): Promise<void> {
    if (this.#detached) return;
    this.#detached = true;
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#onDetach();
    const inc = this.#incarnation;
    if (inc === null) return;
    try {
      // Stopped cleanly: our leases and our heartbeat row go now, so other nodes need not wait for the lease time.
      await this.#pool.query('UPDATE queue_messages SET lease_owner = NULL, lease_node = NULL WHERE lease_owner = $1', [inc]);
      await this.#pool.query('DELETE FROM queue_nodes WHERE incarnation = $1', [inc]);
    } catch (err) {
      this.logger.warn('queue leases not released at stop; they expire by themselves', { error: String(err) });
    }
  }
}

function whereOf(filter: ListFilter, now: number): { where: string; args: unknown[] } {
  const where: string[] = [];
  const args: unknown[] = [];
  const p = (v: unknown): string => {
    args.push(v);
    return `$${args.length}`;
  };
  if (filter.state !== undefined) {
    if ((MESSAGE_STATES as readonly string[]).includes(filter.state)) where.push(`m.state = ${p(filter.state)}`);
    else if ((RECIPIENT_STATES as readonly string[]).includes(filter.state)) where.push(`m.queue_id IN (SELECT queue_id FROM queue_recipients WHERE state = ${p(filter.state)})`);
    else throw new RangeError(`Unknown queue state "${filter.state}"`);
  }
  if (filter.sender !== undefined) where.push(`m.sender = ${p(filter.sender)}`);
  if (filter.recipientDomain !== undefined) {
    where.push(`m.queue_id IN (SELECT queue_id FROM queue_recipients WHERE domain = ${p(recipientDomain(`@${filter.recipientDomain}`))})`);
  }
  if (filter.messageId !== undefined) {
    const t = filter.messageId.trim();
    where.push(`m.message_id IN (${p(t)}, ${p(t.startsWith('<') ? t : `<${t}>`)})`);
  }
  if (filter.olderThanMs !== undefined) where.push(`m.received_at <= ${p(now - filter.olderThanMs)}`);
  // Keyset paging in the listing order; (received_at, queue_id) is indexed (queue_messages_received_at).
  if (filter.after !== undefined) where.push(`(m.received_at, m.queue_id) > (${p(filter.after.receivedAt)}, ${p(filter.after.queueId)})`);
  return { where: where.length > 0 ? ` WHERE ${where.join(' AND ')}` : '', args };
}

const num = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));
const str = (v: unknown): string | null => (v === null || v === undefined ? null : String(v));

function detailOf(m: QueryResultRow): NodeDetail {
  const rcpts = m.rcpts as QueryResultRow[];
  return {
    queueId: String(m.queue_id),
    receivedAt: Number(m.received_at),
    sender: String(m.sender),
    size: Number(m.size),
    bodyPath: '',
    bodyInline: true,
    messageId: str(m.message_id),
    clientIp: String(m.client_ip),
    helo: str(m.helo),
    authUser: str(m.auth_user),
    listener: String(m.listener),
    mailParams: JSON.parse(String(m.mail_params)) as Record<string, string | true>,
    state: String(m.state) as MessageState,
    stateReason: str(m.state_reason),
    updatedAt: Number(m.updated_at),
    nextRunAt: num(m.next_run_at),
    delayWarnedAt: num(m.delay_warned_at),
    node: str(m.lease_node) ?? str(m.received_by),
    receivedBy: str(m.received_by),
    deliveringNode: str(m.lease_node),
    recipients: rcpts.map((r) => ({
      index: Number(r.idx),
      address: String(r.address),
      params: JSON.parse(String(r.params)) as Record<string, string | true>,
      state: String(r.state) as RecipientState,
      attempts: Number(r.attempts),
      nextAttemptAt: num(r.next_attempt_at),
      lastAttemptAt: num(r.last_attempt_at),
      lastReply: str(r.last_reply),
      reply: r.reply === null || r.reply === undefined ? null : (JSON.parse(String(r.reply)) as Reply),
      dsnStatus: str(r.dsn_status),
      remoteMta: str(r.remote_mta),
      diagnostic: str(r.diagnostic),
      notifiedAt: num(r.notified_at),
    })),
  };
}
