/**
 * The zone's journal for incremental transfers (IXFR, RFC 1995): what changed from one serial to the next, as
 * the records a secondary holds (Zone.records()), so a secondary one change behind gets those records and not the
 * whole zone.
 *
 *   diffZones(old, next)   the records to delete and to add, in one merge pass over both zones' ordered record
 *                          groups (Zone.recordGroups()): O(n) time, memory O(changes)
 *   ZoneJournal            the bounded history: entries by serial (at most maxEntries, at most maxBytes of record
 *                          data); since(serial) gives the chain of changes from a client's serial to the current
 *                          one, or null (too old, unknown, a gap) so the caller sends the whole zone instead
 *
 * Serials are compared by equality along the chain, so a serial that wrapped around 2^32 (RFC 1982) is no
 * different from any other. Persistence is the caller's (a JournalStore: the listing store's database), so a
 * restarted server still answers IXFR for changes made before it stopped.
 */
import type { SoaFields, Zone, ZoneRecord } from './zone.ts';

export interface ZoneDiff {
  /** The SOA of the version the change starts from, and of the version it makes. */
  readonly from: SoaFields;
  readonly to: SoaFields;
  readonly removed: readonly ZoneRecord[];
  readonly added: readonly ZoneRecord[];
}

/** Where journal entries survive a restart (oldest first). */
export interface JournalStore {
  loadJournal(): ZoneDiff[];
  appendJournal(diff: ZoneDiff, bytes: number): void;
  /** Drops the oldest entries, keeping the newest `keep`. */
  trimJournal(keep: number): void;
}

export interface JournalLimits {
  /** Entries kept (default 200). */
  readonly maxEntries?: number;
  /** Bytes of record data kept over all entries (default 64 MiB); one bigger change alone is not kept. */
  readonly maxBytes?: number;
}

/** The records to remove from `old` and to add to get `next` (the SOA is not part of the diff). */
export function diffZones(old: Zone, next: Zone): { removed: ZoneRecord[]; added: ZoneRecord[] } {
  const removed: ZoneRecord[] = [];
  const added: ZoneRecord[] = [];
  const apexOld = new Map<string, readonly ZoneRecord[]>();
  const apexNew = new Map<string, readonly ZoneRecord[]>();
  const a = listingGroups(old, apexOld);
  const b = listingGroups(next, apexNew);
  // The first step of each walk passes the apex groups (they come first) into the maps.
  let x = a.next();
  let y = b.next();
  for (const [k, recs] of apexOld) if (!apexNew.has(k)) removed.push(...recs);
  for (const [k, recs] of apexNew) if (!apexOld.has(k)) added.push(...recs);
  while (!x.done || !y.done) {
    if (y.done || (!x.done && x.value.key < y.value.key)) {
      removed.push(...x.value!.records);
      x = a.next();
    } else if (x.done || y.value.key < x.value.key) {
      added.push(...y.value.records);
      y = b.next();
    } else {
      if (!sameRecords(x.value.records, y.value.records)) {
        removed.push(...x.value.records);
        added.push(...y.value.records);
      }
      x = a.next();
      y = b.next();
    }
  }
  return { removed, added };
}

/** The listing groups of a zone in key order; apex groups go into `apex` on the way. */
function* listingGroups(zone: Zone, apex: Map<string, readonly ZoneRecord[]>): Generator<{ key: string; records: readonly ZoneRecord[] }> {
  for (const g of zone.recordGroups()) {
    if (g.key.startsWith('0')) apex.set(g.key, g.records);
    else yield g;
  }
}

function sameRecords(a: readonly ZoneRecord[], b: readonly ZoneRecord[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const p = a[i]!;
    const q = b[i]!;
    if (p.name !== q.name || p.type !== q.type || p.ttl !== q.ttl || p.data !== q.data) return false;
  }
  return true;
}

/** Approximate wire-independent size of a diff: what the journal's byte bound counts. */
export function diffBytes(d: Pick<ZoneDiff, 'removed' | 'added'>): number {
  let n = 0;
  for (const r of d.removed) n += r.name.length + (typeof r.data === 'string' ? r.data.length : 40) + 12;
  for (const r of d.added) n += r.name.length + (typeof r.data === 'string' ? r.data.length : 40) + 12;
  return n;
}

export class ZoneJournal {
  readonly #entries: { diff: ZoneDiff; bytes: number }[] = [];
  readonly #store: JournalStore | null;
  readonly #maxEntries: number;
  readonly #maxBytes: number;
  #bytes = 0;

  constructor(store: JournalStore | null = null, limits: JournalLimits = {}) {
    this.#store = store;
    this.#maxEntries = limits.maxEntries ?? 200;
    this.#maxBytes = limits.maxBytes ?? 64 * 1024 * 1024;
    for (const diff of store?.loadJournal() ?? []) this.#push(diff, diffBytes(diff));
  }

  /** Entries held, oldest first. */
  get entries(): readonly ZoneDiff[] {
    return this.#entries.map((e) => e.diff);
  }

  /**
   * Records the change from `old` to `next` (call it when the served zone is replaced). Returns the diff, or
   * null when the serial did not change. A change too big for the journal empties it: a secondary behind it then
   * gets the whole zone.
   */
  record(old: Zone, next: Zone): ZoneDiff | null {
    if (old.soa.serial === next.soa.serial) return null;
    const { removed, added } = diffZones(old, next);
    const diff: ZoneDiff = { from: old.soa, to: next.soa, removed, added };
    const bytes = diffBytes(diff);
    if (bytes > this.#maxBytes) {
      this.#entries.length = 0;
      this.#bytes = 0;
      this.#store?.trimJournal(0);
      return diff;
    }
    this.#store?.appendJournal(diff, bytes);
    const before = this.#entries.length;
    this.#push(diff, bytes);
    if (this.#entries.length < before + 1) this.#store?.trimJournal(this.#entries.length);
    return diff;
  }

  #push(diff: ZoneDiff, bytes: number): void {
    const last = this.#entries.at(-1);
    // A gap (changes made while nobody recorded them) breaks the chain: what came before is useless.
    if (last !== undefined && last.diff.to.serial !== diff.from.serial) {
      this.#entries.length = 0;
      this.#bytes = 0;
    }
    this.#entries.push({ diff, bytes });
    this.#bytes += bytes;
    while (this.#entries.length > this.#maxEntries || (this.#bytes > this.#maxBytes && this.#entries.length > 1)) {
      this.#bytes -= this.#entries.shift()!.bytes;
    }
  }

  /**
   * The changes that take a secondary from `serial` to `current`, oldest first; [] when it is current; null when
   * the journal cannot say (too old, a serial it never served, or a chain that does not end at `current`).
   */
  since(serial: number, current: number): readonly ZoneDiff[] | null {
    if (serial === current) return [];
    const e = this.#entries;
    if (e.length === 0 || e.at(-1)!.diff.to.serial !== current) return null;
    for (let i = e.length - 1; i >= 0; i--) {
      if (e[i]!.diff.from.serial === serial) return e.slice(i).map((x) => x.diff);
    }
    return null;
  }
}
