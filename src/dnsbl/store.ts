/**
 * The ORDB listing store (node:sqlite; the database may be shared with other stores, tables are prefixed).
 *
 *   dnsbl_listings(id, network UNIQUE canonical CIDR, family, prefix, state, category, code, reason, first_seen,
 *                  last_tested, next_retest, evidence JSON, times_listed, updated_at,
 *                  checks)                                   -- the tester checks asked for ("smtp,proxy"; NULL: the
 *                                                               category's own); added to older databases at open
 *   dnsbl_history(id, listing_id, at, event, state, detail)     -- every change, so repeat offenders show
 *   dnsbl_meta(key, value)                                      -- "serial": the zone's SOA serial
 *   dnsbl_journal(...)                                          -- the zone's changes, for IXFR (journal.ts)
 *   dnsbl_jobs(...)                                             -- test jobs with leases (jobs.ts, same database, so a
 *                                                                  job finishes in the transaction that records its result)
 *
 * States: pending (submitted, not confirmed: not in the zone), listed, delisted (kept with its history),
 * excluded (never listed; wins over any listing it covers, whatever the prefix lengths).
 * Times are milliseconds since the epoch. Every mutation runs in one transaction and bumps the serial
 * (max(serial + 1, unix seconds), so serials follow the clock and never go backwards).
 */
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { SYSTEM_CLOCK, type Clock } from '../core/clock.ts';
import { RelayguardError } from '../core/errors.ts';
import { restrictSqliteFiles } from '../core/file-modes.ts';
import { categoryCode, isCategory, txtTemplate, type ListingCategory } from './categories.ts';
import { coveringNetworks, isNetworkError, parseAddress, parseNetwork, type Family } from './network.ts';
import type { ZoneEntry } from './zone.ts';
import type { ZoneDiff } from './journal.ts';

export type ListingState = 'pending' | 'listed' | 'delisted' | 'excluded';
export const LISTING_STATES: readonly ListingState[] = ['pending', 'listed', 'delisted', 'excluded'];

export type HistoryEventType = 'submitted' | 'listed' | 'updated' | 'tested' | 'delisted' | 'excluded' | 'suppressed';

export interface Listing {
  readonly id: number;
  /** Canonical text: "192.0.2.1", "192.0.2.0/24", "2001:db8::/32". */
  readonly network: string;
  readonly family: Family;
  readonly prefix: number;
  readonly state: ListingState;
  readonly category: ListingCategory;
  /** A record value of the category, e.g. "127.0.0.2". */
  readonly code: string;
  /** Human reason (plain text; the TXT adds the evidence link), or null for the category's default. */
  readonly reason: string | null;
  readonly firstSeen: number;
  readonly lastTested: number | null;
  readonly nextRetest: number | null;
  /** The tester's JSON report and transcript, as given. */
  readonly evidence: unknown;
  /** How many times the network entered the "listed" state. */
  readonly timesListed: number;
  readonly updatedAt: number;
  /** The tester checks a submission asked for ("smtp", "proxy", ...), or null: the category's own check. */
  readonly checks: readonly string[] | null;
}

export interface HistoryEvent {
  readonly at: number;
  readonly event: HistoryEventType;
  /** State after the event. */
  readonly state: ListingState;
  readonly detail: string | null;
}

export interface AddListingInput {
  readonly network: string;
  /** Default "open-relay". */
  readonly category?: ListingCategory | undefined;
  /** "listed" (default) or "pending" (submitted, awaiting the test). */
  readonly state?: 'listed' | 'pending' | undefined;
  readonly reason?: string | null | undefined;
  readonly evidence?: unknown;
  readonly lastTested?: number | null | undefined;
  readonly nextRetest?: number | null | undefined;
  /** Free text for the history entry. */
  readonly detail?: string | undefined;
  /** The tester checks to run (submissions); null or absent: the category's own. */
  readonly checks?: readonly string[] | null | undefined;
}

export interface UpdateListingInput {
  readonly state?: 'listed' | 'pending' | 'delisted' | undefined;
  readonly category?: ListingCategory | undefined;
  readonly reason?: string | null | undefined;
  readonly evidence?: unknown;
  readonly lastTested?: number | null | undefined;
  readonly nextRetest?: number | null | undefined;
  readonly detail?: string | undefined;
  readonly checks?: readonly string[] | null | undefined;
}

export interface ListFilter {
  readonly state?: ListingState | readonly ListingState[] | undefined;
  readonly category?: ListingCategory | undefined;
  readonly family?: Family | undefined;
  /** Only listings whose next_retest is set and <= this time. */
  readonly dueBefore?: number | undefined;
  /** Only entries changed (updated_at) at or after this time. */
  readonly updatedSince?: number | undefined;
  readonly limit?: number | undefined;
  readonly offset?: number | undefined;
}

export interface LookupAnswer {
  /** The entry that decides: an exclusion if any covers the address, else the most specific listed network. */
  readonly effective: Listing | null;
  readonly listed: boolean;
  /** Every stored network that contains the address, any state, most specific first. */
  readonly matches: readonly Listing[];
}

export interface ListingStoreOptions {
  readonly clock?: Clock | undefined;
}

export interface ZoneEntriesOptions {
  /** Evidence page URL template ("$" = address), or null for no link. Default DEFAULT_EVIDENCE_URL. */
  readonly evidenceUrl?: string | null | undefined;
}

/** The longest reason a listing keeps (characters). */
export const MAX_REASON = 512;
const MAX_EVIDENCE = 4 * 1024 * 1024;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS dnsbl_listings (
  id INTEGER PRIMARY KEY,
  network TEXT NOT NULL UNIQUE,
  family INTEGER NOT NULL CHECK (family IN (4, 6)),
  prefix INTEGER NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('pending', 'listed', 'delisted', 'excluded')),
  category TEXT NOT NULL,
  code TEXT NOT NULL,
  reason TEXT,
  first_seen INTEGER NOT NULL,
  last_tested INTEGER,
  next_retest INTEGER,
  evidence TEXT,
  times_listed INTEGER NOT NULL DEFAULT 0,
  updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS dnsbl_listings_state ON dnsbl_listings (state);
CREATE INDEX IF NOT EXISTS dnsbl_listings_retest ON dnsbl_listings (next_retest) WHERE next_retest IS NOT NULL;
CREATE TABLE IF NOT EXISTS dnsbl_history (
  id INTEGER PRIMARY KEY,
  listing_id INTEGER NOT NULL REFERENCES dnsbl_listings (id) ON DELETE CASCADE,
  at INTEGER NOT NULL,
  event TEXT NOT NULL,
  state TEXT NOT NULL,
  detail TEXT
);
CREATE INDEX IF NOT EXISTS dnsbl_history_listing ON dnsbl_history (listing_id, id);
CREATE TABLE IF NOT EXISTS dnsbl_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS dnsbl_journal (
  seq INTEGER PRIMARY KEY,
  serial_from INTEGER NOT NULL,
  serial_to INTEGER NOT NULL,
  bytes INTEGER NOT NULL,
  body TEXT NOT NULL
);
`;

interface Row {
  id: number;
  network: string;
  family: number;
  prefix: number;
  state: string;
  category: string;
  code: string;
  reason: string | null;
  first_seen: number;
  last_tested: number | null;
  next_retest: number | null;
  evidence: string | null;
  times_listed: number;
  updated_at: number;
  checks: string | null;
}

function fail(code: string, message: string): never {
  throw new RelayguardError(code, message);
}

function canonical(network: string): { text: string; family: Family; prefix: number } {
  const n = parseNetwork(network);
  if (isNetworkError(n)) fail('ERR_DNSBL_NETWORK', n.error);
  return { text: n.text, family: n.family, prefix: n.prefix };
}

function cleanReason(reason: string | null | undefined): string | null {
  if (reason === null || reason === undefined) return null;
  const r = String(reason).trim();
  if (r.length === 0) return null;
  if (r.length > MAX_REASON) fail('ERR_DNSBL_REASON', `reason longer than ${MAX_REASON} characters`);
  if (/[\x00-\x1f\x7f]/.test(r)) fail('ERR_DNSBL_REASON', 'reason contains a control character');
  return r;
}

function evidenceJson(evidence: unknown): string | null {
  if (evidence === undefined || evidence === null) return null;
  const s = JSON.stringify(evidence);
  if (s === undefined) fail('ERR_DNSBL_EVIDENCE', 'evidence is not JSON');
  if (s.length > MAX_EVIDENCE) fail('ERR_DNSBL_EVIDENCE', `evidence larger than ${MAX_EVIDENCE} bytes`);
  return s;
}

/** Check names: lower-case words, at most 8 of them (the workflow vets the names it runs). */
function checksText(checks: readonly string[] | null | undefined): string | null {
  if (checks === null || checks === undefined || checks.length === 0) return null;
  if (checks.length > 8 || checks.some((c) => !/^[a-z][a-z0-9-]{0,15}$/.test(c))) fail('ERR_DNSBL_CHECKS', `bad check list ${JSON.stringify(checks).slice(0, 80)}`);
  return [...new Set(checks)].join(',');
}

function time(t: number | null | undefined, what: string): number | null {
  if (t === null || t === undefined) return null;
  if (!Number.isFinite(t) || t < 0) fail('ERR_DNSBL_TIME', `bad ${what} ${t}`);
  return Math.floor(t);
}

function toListing(r: Row): Listing {
  return {
    id: r.id,
    network: r.network,
    family: r.family as Family,
    prefix: r.prefix,
    state: r.state as ListingState,
    category: r.category as ListingCategory,
    code: r.code,
    reason: r.reason,
    firstSeen: r.first_seen,
    lastTested: r.last_tested,
    nextRetest: r.next_retest,
    evidence: r.evidence === null ? null : JSON.parse(r.evidence),
    timesListed: r.times_listed,
    updatedAt: r.updated_at,
    checks: r.checks ? r.checks.split(',') : null,
  };
}

export class ListingStore {
  readonly #db: DatabaseSync;
  readonly #ownsDb: boolean;
  readonly #clock: Clock;
  readonly #get: StatementSync;
  readonly #insert: StatementSync;
  readonly #history: StatementSync;
  readonly #serialGet: StatementSync;
  readonly #serialSet: StatementSync;
  #txDepth = 0;

  /** Opens (creating if needed) a database file, or ":memory:". */
  static open(path: string, options: ListingStoreOptions = {}): ListingStore {
    const db = new DatabaseSync(path, { timeout: 5000, enableForeignKeyConstraints: true });
    restrictSqliteFiles(path); // relayguard.db also holds the password hashes: 0600 before the first write
    if (path !== ':memory:') db.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;');
    return new ListingStore(db, options, true);
  }

  constructor(db: DatabaseSync, options: ListingStoreOptions = {}, ownsDb = false) {
    this.#db = db;
    this.#ownsDb = ownsDb;
    this.#clock = options.clock ?? SYSTEM_CLOCK;
    db.exec(SCHEMA);
    // Databases from before the checks column get it (NULL everywhere: each listing's category's own check).
    const cols = db.prepare('PRAGMA table_info(dnsbl_listings)').all() as { name: string }[];
    if (!cols.some((c) => c.name === 'checks')) db.exec('ALTER TABLE dnsbl_listings ADD COLUMN checks TEXT');
    this.#get = db.prepare('SELECT * FROM dnsbl_listings WHERE network = ?');
    this.#insert = db.prepare(`INSERT INTO dnsbl_listings
      (network, family, prefix, state, category, code, reason, first_seen, last_tested, next_retest, evidence, times_listed, updated_at, checks)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *`);
    this.#history = db.prepare('INSERT INTO dnsbl_history (listing_id, at, event, state, detail) VALUES (?, ?, ?, ?, ?)');
    this.#serialGet = db.prepare("SELECT value FROM dnsbl_meta WHERE key = 'serial'");
    this.#serialSet = db.prepare("INSERT INTO dnsbl_meta (key, value) VALUES ('serial', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value");
  }

  close(): void {
    if (this.#ownsDb) this.#db.close();
  }

  /**
   * The database the store lives in, for tables kept next to the listings in the same transactions (jobs.ts, the
   * test job queue). Not for the listing tables: those change only through the methods here.
   */
  get database(): DatabaseSync {
    return this.#db;
  }

  /**
   * Runs fn in one write transaction (BEGIN IMMEDIATE: it waits for, then excludes, every other writer of the file)
   * without moving the serial; the store's own mutations called inside join it (and move the serial once each).
   * fn must be synchronous. Nested calls join the outer transaction.
   */
  atomically<T>(fn: () => T): T {
    if (this.#txDepth > 0) return fn();
    this.#db.exec('BEGIN IMMEDIATE');
    this.#txDepth++;
    try {
      const out = fn();
      this.#db.exec('COMMIT');
      return out;
    } catch (err) {
      this.#db.exec('ROLLBACK');
      throw err;
    } finally {
      this.#txDepth--;
    }
  }

  // --- the zone journal (journal.ts JournalStore): the served zone's changes, for IXFR after a restart ----------
  loadJournal(): ZoneDiff[] {
    const rows = this.#db.prepare('SELECT body FROM dnsbl_journal ORDER BY seq').all() as { body: string }[];
    const out: ZoneDiff[] = [];
    for (const r of rows) {
      try { out.push(JSON.parse(r.body) as ZoneDiff); } catch { out.length = 0; } // a damaged entry breaks the chain
    }
    return out;
  }

  appendJournal(diff: ZoneDiff, bytes: number): void {
    this.#db.prepare('INSERT INTO dnsbl_journal (serial_from, serial_to, bytes, body) VALUES (?, ?, ?, ?)')
      .run(diff.from.serial, diff.to.serial, bytes, JSON.stringify(diff));
  }

  trimJournal(keep: number): void {
    this.#db.prepare('DELETE FROM dnsbl_journal WHERE seq NOT IN (SELECT seq FROM dnsbl_journal ORDER BY seq DESC LIMIT ?)').run(keep);
  }

  #tx<T>(fn: () => T): T {
    return this.atomically(() => {
      const out = fn();
      this.#bumpSerial();
      return out;
    });
  }

  #bumpSerial(): void {
    const cur = this.serial();
    const next = Math.max(cur + 1, Math.floor(this.#clock.now() / 1000)) % 2 ** 32;
    this.#serialSet.run(next);
  }

  /** The zone's SOA serial: changes with every mutation. 0 for an empty store never written to. */
  serial(): number {
    const r = this.#serialGet.get() as { value: number } | undefined;
    return r ? Number(r.value) : 0;
  }

  #row(network: string): Row | undefined {
    return this.#get.get(network) as Row | undefined;
  }

  #log(id: number, event: HistoryEventType, state: ListingState, detail: string | null | undefined, at: number): void {
    this.#history.run(id, at, event, state, detail ?? null);
  }

  #add(input: AddListingInput): Listing {
    const net = canonical(input.network);
    const category = input.category ?? 'open-relay';
    if (!isCategory(category)) fail('ERR_DNSBL_CATEGORY', `unknown category "${String(category)}"`);
    const state = input.state ?? 'listed';
    if (state !== 'listed' && state !== 'pending') fail('ERR_DNSBL_STATE', `add() takes "listed" or "pending", not "${String(state)}"`);
    const reason = cleanReason(input.reason);
    const evidence = evidenceJson(input.evidence);
    const lastTested = time(input.lastTested, 'lastTested');
    const nextRetest = time(input.nextRetest, 'nextRetest');
    const checks = checksText(input.checks);
    const now = this.#clock.now();
    const old = this.#row(net.text);
    if (!old) {
      const r = this.#insert.get(
        net.text, net.family, net.prefix, state, category, categoryCode(category), reason, now, lastTested, nextRetest,
        evidence, state === 'listed' ? 1 : 0, now, checks,
      ) as unknown as Row;
      this.#log(r.id, state === 'listed' ? 'listed' : 'submitted', state, input.detail, now);
      return toListing(r);
    }
    // An exclusion stays: the new evidence is kept, the state is not changed.
    const newState: ListingState = old.state === 'excluded' ? 'excluded' : state;
    const event: HistoryEventType = old.state === 'excluded'
      ? 'suppressed'
      : state === 'listed' ? (old.state === 'listed' ? 'updated' : 'listed') : 'submitted';
    const r = this.#db.prepare(`UPDATE dnsbl_listings SET state = ?, category = ?, code = ?,
        reason = COALESCE(?, reason), evidence = COALESCE(?, evidence),
        last_tested = COALESCE(?, last_tested), next_retest = ?, times_listed = times_listed + ?, updated_at = ?,
        checks = ? WHERE id = ? RETURNING *`).get(
      newState, category, categoryCode(category), reason, evidence, lastTested,
      input.nextRetest === undefined ? old.next_retest : nextRetest,
      event === 'listed' ? 1 : 0, now, input.checks === undefined ? old.checks : checks, old.id,
    ) as unknown as Row;
    this.#log(r.id, event, newState, input.detail, now);
    return toListing(r);
  }

  /**
   * Adds a network as listed (default) or pending, or moves an existing one there ("listed" again counts as a
   * new listing: timesListed goes up). An excluded network stays excluded; the attempt is kept in its history.
   */
  add(input: AddListingInput): Listing {
    return this.#tx(() => this.#add(input));
  }

  /** Many adds in one transaction (imports, benchmarks). */
  addMany(inputs: Iterable<AddListingInput>): number {
    return this.#tx(() => {
      let n = 0;
      for (const i of inputs) { this.#add(i); n++; }
      return n;
    });
  }

  /** Changes fields of an existing entry; a state change is recorded as its own event. */
  update(network: string, patch: UpdateListingInput): Listing {
    return this.#tx(() => {
      const net = canonical(network);
      const old = this.#row(net.text) ?? fail('ERR_DNSBL_NOT_FOUND', `${net.text} is not in the store`);
      const category = patch.category ?? (old.category as ListingCategory);
      if (!isCategory(category)) fail('ERR_DNSBL_CATEGORY', `unknown category "${String(category)}"`);
      let state = old.state as ListingState;
      if (patch.state !== undefined) {
        if (!['listed', 'pending', 'delisted'].includes(patch.state)) fail('ERR_DNSBL_STATE', `bad state "${String(patch.state)}"`);
        if (old.state === 'excluded' && patch.state !== 'delisted') {
          fail('ERR_DNSBL_EXCLUDED', `${net.text} is excluded; delist it first to lift the exclusion`);
        }
        state = patch.state;
      }
      const reason = patch.reason === undefined ? old.reason : cleanReason(patch.reason);
      const evidence = patch.evidence === undefined ? old.evidence : evidenceJson(patch.evidence);
      const lastTested = patch.lastTested === undefined ? old.last_tested : time(patch.lastTested, 'lastTested');
      const nextRetest = patch.nextRetest === undefined ? old.next_retest : time(patch.nextRetest, 'nextRetest');
      const checks = patch.checks === undefined ? old.checks : checksText(patch.checks);
      const now = this.#clock.now();
      const event: HistoryEventType = state !== old.state
        ? state === 'listed' ? 'listed' : state === 'pending' ? 'submitted' : 'delisted'
        : patch.lastTested !== undefined && patch.lastTested !== null ? 'tested' : 'updated';
      const r = this.#db.prepare(`UPDATE dnsbl_listings SET state = ?, category = ?, code = ?, reason = ?, evidence = ?,
          last_tested = ?, next_retest = ?, times_listed = times_listed + ?, updated_at = ?, checks = ? WHERE id = ? RETURNING *`).get(
        state, category, categoryCode(category), reason, evidence, lastTested, nextRetest, event === 'listed' ? 1 : 0, now, checks, old.id,
      ) as unknown as Row;
      this.#log(r.id, event, state, patch.detail, now);
      return toListing(r);
    });
  }

  /** Marks a network as never listed (creating the entry if needed). Wins over every listing inside it. */
  exclude(network: string, options: { reason?: string | null; detail?: string } = {}): Listing {
    return this.#tx(() => {
      const net = canonical(network);
      const reason = cleanReason(options.reason);
      const now = this.#clock.now();
      const old = this.#row(net.text);
      let r: Row;
      if (!old) {
        r = this.#insert.get(net.text, net.family, net.prefix, 'excluded', 'open-relay', categoryCode('open-relay'), reason,
          now, null, null, null, 0, now, null) as unknown as Row;
      } else {
        r = this.#db.prepare(`UPDATE dnsbl_listings SET state = 'excluded', reason = COALESCE(?, reason), next_retest = NULL,
            updated_at = ? WHERE id = ? RETURNING *`).get(reason, now, old.id) as unknown as Row;
      }
      this.#log(r.id, 'excluded', 'excluded', options.detail, now);
      return toListing(r);
    });
  }

  /** Takes a network off the list (or lifts its exclusion); the entry and its history stay. */
  delist(network: string, options: { detail?: string } = {}): Listing {
    return this.#tx(() => {
      const net = canonical(network);
      const old = this.#row(net.text) ?? fail('ERR_DNSBL_NOT_FOUND', `${net.text} is not in the store`);
      const now = this.#clock.now();
      const r = this.#db.prepare(`UPDATE dnsbl_listings SET state = 'delisted', next_retest = NULL, updated_at = ?
          WHERE id = ? RETURNING *`).get(now, old.id) as unknown as Row;
      this.#log(r.id, 'delisted', 'delisted', options.detail, now);
      return toListing(r);
    });
  }

  get(network: string): Listing | null {
    const n = parseNetwork(network);
    if (isNetworkError(n)) return null;
    const r = this.#row(n.text);
    return r ? toListing(r) : null;
  }

  history(network: string): HistoryEvent[] {
    const n = parseNetwork(network);
    if (isNetworkError(n)) return [];
    const rows = this.#db.prepare(`SELECT h.at, h.event, h.state, h.detail FROM dnsbl_history h
        JOIN dnsbl_listings l ON l.id = h.listing_id WHERE l.network = ? ORDER BY h.id`).all(n.text) as unknown as HistoryEvent[];
    return rows.map((h) => ({ at: h.at, event: h.event, state: h.state, detail: h.detail }));
  }

  /** What the store says about one address (same rule as the zone: exclusions win, then the most specific). */
  lookup(address: string): LookupAnswer {
    const a = parseAddress(address);
    if (a === null) fail('ERR_DNSBL_NETWORK', `not an address: "${address}"`);
    const candidates = coveringNetworks(a);
    const rows = this.#db.prepare(`SELECT * FROM dnsbl_listings WHERE network IN (${candidates.map(() => '?').join(',')})
        ORDER BY prefix DESC`).all(...candidates) as unknown as Row[];
    const matches = rows.map(toListing);
    const exclusion = matches.find((m) => m.state === 'excluded');
    const listed = matches.find((m) => m.state === 'listed');
    const effective = exclusion ?? listed ?? null;
    return { effective, listed: exclusion === undefined && listed !== undefined, matches };
  }

  list(filter: ListFilter = {}): Listing[] {
    const where: string[] = [];
    const args: Array<string | number> = [];
    if (filter.state !== undefined) {
      const states = typeof filter.state === 'string' ? [filter.state] : [...filter.state];
      where.push(`state IN (${states.map(() => '?').join(',')})`);
      args.push(...states);
    }
    if (filter.category !== undefined) { where.push('category = ?'); args.push(filter.category); }
    if (filter.family !== undefined) { where.push('family = ?'); args.push(filter.family); }
    if (filter.dueBefore !== undefined) { where.push('next_retest IS NOT NULL AND next_retest <= ?'); args.push(filter.dueBefore); }
    if (filter.updatedSince !== undefined) { where.push('updated_at >= ?'); args.push(filter.updatedSince); }
    const limit = Math.max(0, Math.min(filter.limit ?? 1000, 100_000));
    const offset = Math.max(0, filter.offset ?? 0);
    const sql = `SELECT * FROM dnsbl_listings ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
        ORDER BY ${filter.dueBefore !== undefined ? 'next_retest, id' : 'id'} LIMIT ? OFFSET ?`;
    return (this.#db.prepare(sql).all(...args, limit, offset) as unknown as Row[]).map(toListing);
  }

  count(state?: ListingState): number {
    const r = (state === undefined
      ? this.#db.prepare('SELECT COUNT(*) AS n FROM dnsbl_listings').get()
      : this.#db.prepare('SELECT COUNT(*) AS n FROM dnsbl_listings WHERE state = ?').get(state)) as { n: number };
    return Number(r.n);
  }

  /** The entries the zone is built from (listed and excluded), streamed. */
  *zoneEntries(options: ZoneEntriesOptions = {}): Generator<ZoneEntry> {
    const url = options.evidenceUrl === undefined ? undefined : options.evidenceUrl;
    const stmt = this.#db.prepare(`SELECT network, state, category, code, reason FROM dnsbl_listings
        WHERE state IN ('listed', 'excluded')`);
    for (const r of stmt.iterate() as Iterable<{ network: string; state: string; category: string; code: string; reason: string | null }>) {
      if (r.state === 'excluded') {
        yield { network: r.network, excluded: true };
      } else {
        const category = isCategory(r.category) ? r.category : 'open-relay';
        yield { network: r.network, code: r.code, txt: txtTemplate(category, r.reason, url) };
      }
    }
  }
}
