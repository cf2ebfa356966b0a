/**
 * The receive path's in-memory copy of the directory: what the per-RCPT path asks several times per recipient
 * (is this a mailbox, alias targets, database-managed local domains) answered from memory, synchronously, and
 * kept fresh:
 * - at once for changes made through this process (the `store` this view hands out refreshes after each write);
 * - for changes made by another process or node: on SQLite (DirectoryStore.sync) the version (PRAGMA data_version)
 *   is compared on every lookup, at most once per event-loop turn, so a CLI change applies to the next RCPT; on
 *   PostgreSQL a NOTIFY (LISTEN relayguard_directory) triggers a refresh at once, and the version (a counter bumped
 *   by triggers) is compared every `refreshMs` as the fallback for a lost listener: within seconds at worst.
 * A refresh that fails (database unreachable) keeps the last good copy, logs one error event
 * (ERR_DIRECTORY_REFRESH) per outage and one info event when a later refresh succeeds again.
 */
import type { Logger } from '../core/log.ts';
import { readRecipientSnapshot, type AliasTarget, type DirectoryStore, type RecipientSnapshot } from '../policy/directory.ts';
import { normalizeOwnedAddress } from '../policy/users.ts';

export const ERR_DIRECTORY_REFRESH = 'ERR_DIRECTORY_REFRESH';

/** The write methods of DirectoryStore: after each, the view re-reads (changes made here show at once). */
const WRITES = new Set<string>([
  'addUser', 'addUsers', 'removeUser', 'setPasswordHash', 'setDisabled', 'addAddress', 'removeAddress',
  'addDomain', 'removeDomain', 'addAlias', 'removeAlias',
]);

export interface DirectoryView {
  /** The store, with writes that refresh this view before they resolve. */
  readonly store: DirectoryStore;
  isMailbox(address: string): boolean;
  lookupAlias(key: string): readonly AliasTarget[] | null;
  /** Database-managed local domains now. */
  domains(): ReadonlySet<string>;
  /** Re-reads when the version changed (or always, with force). Never throws. */
  refresh(force?: boolean): Promise<void>;
  /** Called after the copy changed. */
  onChange(listener: () => void): void;
  /** Stops the timer and the listener (the store is closed by its owner). */
  stop(): void;
}

export interface DirectoryViewOptions {
  readonly logger: Logger;
  /** How often version() is compared. Default 5000 ms. */
  readonly refreshMs?: number;
}

/** Reads the first copy (rejects when the store cannot be read: the relay does not start on nothing). */
export async function openDirectoryView(store: DirectoryStore, options: DirectoryViewOptions): Promise<DirectoryView> {
  const logger = options.logger;
  let snap: RecipientSnapshot = await readRecipientSnapshot(store);
  let failing = false;
  let running: Promise<void> | null = null;
  let again = false;
  const listeners: (() => void)[] = [];

  const ok = (): void => {
    if (failing) { failing = false; logger.info('directory refresh recovered', { store: store.kind }); }
  };
  const failed = (err: unknown): void => {
    if (failing) return;
    failing = true;
    logger.error('directory refresh failed', {
      store: store.kind, err_code: ERR_DIRECTORY_REFRESH, cause_code: (err as { code?: unknown })?.code ?? null, err: String((err as Error)?.message ?? err),
    });
  };
  const replace = (next: RecipientSnapshot): void => {
    snap = next;
    for (const l of listeners) l();
  };
  const load = async (force: boolean): Promise<void> => {
    try {
      if (!force && (await store.version()) === snap.version) { ok(); return; }
      replace(await readRecipientSnapshot(store));
      ok();
    } catch (err) {
      failed(err);
    }
  };
  // Embedded stores (SQLite): the version is compared on every lookup, at most once per turn of the event loop
  // (one RCPT's lookups share one check), so another process's change applies to the next RCPT.
  const sync = store.sync;
  let checked = false;
  const fresh = (): void => {
    if (sync === undefined || checked) return;
    checked = true;
    queueMicrotask(() => { checked = false; });
    try {
      if (sync.version() !== snap.version) replace(sync.snapshot());
      ok();
    } catch (err) {
      failed(err);
    }
  };
  // One refresh at a time; a request while one runs makes it run once more (a forced one re-reads).
  let forceNext = false;
  const refresh = (force = false): Promise<void> => {
    if (running) {
      again = true;
      forceNext ||= force;
      return running;
    }
    running = (async () => {
      let f = force;
      do {
        again = false;
        await load(f);
        f = forceNext;
        forceNext = false;
      } while (again);
      running = null;
    })();
    return running;
  };

  const timer = setInterval(() => { void refresh(false); }, options.refreshMs ?? 5000);
  timer.unref();
  const unwatch = store.watch?.(() => { void refresh(false); }) ?? null;

  const wrapped = new Proxy(store, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver) as unknown;
      if (typeof value !== 'function') return value;
      if (typeof prop === 'string' && WRITES.has(prop)) {
        return async (...args: unknown[]) => {
          try {
            return await (value as (...a: unknown[]) => Promise<unknown>).apply(target, args);
          } finally {
            await refresh(true);
          }
        };
      }
      return (value as (...a: unknown[]) => unknown).bind(target);
    },
  });

  return {
    store: wrapped,
    isMailbox(address) {
      fresh();
      const a = normalizeOwnedAddress(address);
      return a !== null && !a.startsWith('@') && snap.mailboxes.has(a);
    },
    lookupAlias(key) {
      fresh();
      return snap.aliases.get(key) ?? null;
    },
    domains() {
      fresh();
      return snap.domains;
    },
    refresh,
    onChange: (l) => { listeners.push(l); },
    stop() {
      clearInterval(timer);
      unwatch?.();
    },
  };
}
