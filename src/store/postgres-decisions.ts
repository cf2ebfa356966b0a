/**
 * The relay-decision store port (policy/decisions.ts) on PostgreSQL (migrations/postgres/006_decisions.sql): the
 * decisions of every node in one table. A batch is one INSERT ... SELECT FROM jsonb_to_recordset (one statement,
 * one round trip, atomic). Connection trouble rejects with ERR_STORE_UNAVAILABLE (the recorder drops the batch).
 */
import type { Pool } from 'pg';
import type { Logger } from '../core/log.ts';
import type { DecisionFilter, DecisionRecord, DecisionStore, NewDecision, Retention } from '../policy/decisions.ts';
import { openCheckedPool, poolQuery } from './postgres-pool.ts';
import type { Migration } from './postgres-schema.ts';
import { toRecord } from './sqlite-decisions.ts';

export interface PostgresDecisionOptions {
  readonly poolSize?: number;
  readonly logger?: Logger;
  readonly migrations?: readonly Migration[];
}

const COLUMNS = 'id, at, node, session_id, client_ip, listener, helo, "user", mail_from, rcpt, action, rule, reason, reply';

export class PostgresDecisionStore implements DecisionStore {
  readonly #pool: Pool;
  readonly #where: string;
  #closed: Promise<void> | null = null;

  private constructor(pool: Pool, where: string) {
    this.#pool = pool;
    this.#where = where;
  }

  static async open(url: string, options: PostgresDecisionOptions = {}): Promise<PostgresDecisionStore> {
    const { pool, where } = await openCheckedPool(url, {
      store: 'decisions', poolSize: options.poolSize ?? 2, connectTimeoutMs: 2000, queryTimeoutMs: 10_000,
      ...(options.migrations ? { migrations: options.migrations } : {}), ...(options.logger ? { logger: options.logger } : {}),
    });
    return new PostgresDecisionStore(pool, where);
  }

  #q(text: string, values: unknown[] = []): Promise<{ rows: Record<string, unknown>[]; rowCount: number }> {
    return poolQuery(this.#pool, this.#where, text, values);
  }

  async append(rows: readonly NewDecision[]): Promise<void> {
    if (rows.length === 0) return;
    const json = JSON.stringify(rows.map((r) => ({
      at: r.at, node: r.node, session_id: r.sessionId, client_ip: r.clientIp, listener: r.listener, helo: r.helo, user: r.user,
      mail_from: r.mailFrom, rcpt: r.rcpt, action: r.action, rule: r.rule, reason: r.reason, reply: r.reply,
    })));
    await this.#q(
      `INSERT INTO relay_decisions (${COLUMNS.slice(4)})
       SELECT at, node, session_id, client_ip, listener, helo, "user", mail_from, rcpt, action, rule, reason, reply
       FROM jsonb_to_recordset($1::jsonb) AS x(at bigint, node text, session_id text, client_ip text, listener text, helo text, "user" text,
         mail_from text, rcpt text, action text, rule text, reason text, reply text)`,
      [json],
    );
  }

  async search(f: DecisionFilter): Promise<DecisionRecord[]> {
    const where: string[] = [];
    const args: unknown[] = [];
    const eq = (col: string, v: string | number | undefined, op = '='): void => {
      if (v === undefined) return;
      args.push(v);
      where.push(`${col} ${op} $${args.length}`);
    };
    eq('client_ip', f.clientIp);
    eq('mail_from', f.sender?.toLowerCase());
    eq('rcpt', f.rcpt?.toLowerCase());
    eq('action', f.action);
    eq('rule', f.rule);
    eq('at', f.since, '>=');
    eq('at', f.until, '<');
    eq('id', f.before, '<');
    args.push(f.limit);
    const r = await this.#q(`SELECT ${COLUMNS} FROM relay_decisions${where.length ? ` WHERE ${where.join(' AND ')}` : ''} ORDER BY id DESC LIMIT $${args.length}`, args);
    return r.rows.map(toRecord);
  }

  async prune(r: Retention, now: number): Promise<number> {
    let n = (await this.#q('DELETE FROM relay_decisions WHERE at < $1', [now - r.maxAgeMs])).rowCount;
    // The newest maxRows by id, without walking them (ids only grow; a gap in the sequence keeps slightly fewer).
    const top = (await this.#q('SELECT MAX(id) AS id FROM relay_decisions')).rows[0]?.['id'];
    if (top != null && Number(top) > r.maxRows) n += (await this.#q('DELETE FROM relay_decisions WHERE id <= $1', [Number(top) - r.maxRows])).rowCount;
    return n;
  }

  async close(): Promise<void> {
    this.#closed ??= this.#pool.end();
    return this.#closed;
  }
}
