/**
 * Idle SMTP sessions kept for reuse by the next message to the same next hop (Postfix scache): bounded in
 * count, in idle time and in uses. A session is checked out (removed) while in use, so two deliveries never
 * share one; a checked-out session is probed with RSET before its first new transaction (see outbound.ts).
 */
import type { SmtpClient } from '../smtp/client.ts';

export interface CachedSession {
  readonly client: SmtpClient;
  /** Transactions completed on this connection. */
  uses: number;
  /** True when TLS is active (for logs). */
  readonly tls: boolean;
  /**
   * The client's own abort switch. A connection outlives the job that opened it, so it is never bound to a job's
   * signal: each job using it links its signal to this controller while it holds the session (outbound.ts).
   */
  readonly abort: AbortController;
}

export interface ConnectionCacheOptions {
  /** Idle sessions kept in all. Default 20; 0 disables the cache. */
  readonly maxIdle?: number;
  /** Close an idle session after this long. Default 5000 ms (Postfix: 2 s). */
  readonly idleTimeoutMs?: number;
  /** Transactions per connection before it is closed. Default 100. */
  readonly maxUses?: number;
}

interface Entry {
  readonly key: string;
  readonly session: CachedSession;
  readonly timer: NodeJS.Timeout;
}

export class ConnectionCache {
  readonly maxIdle: number;
  readonly idleTimeoutMs: number;
  readonly maxUses: number;
  readonly #entries: Entry[] = [];
  #closed = false;

  constructor(options: ConnectionCacheOptions = {}) {
    this.maxIdle = options.maxIdle ?? 20;
    this.idleTimeoutMs = options.idleTimeoutMs ?? 5000;
    this.maxUses = options.maxUses ?? 100;
  }

  get size(): number { return this.#entries.length; }

  /** An idle session for this key (most recently used first), or null. */
  take(key: string): CachedSession | null {
    for (let i = this.#entries.length - 1; i >= 0; i--) {
      const e = this.#entries[i]!;
      if (e.key !== key) continue;
      this.#entries.splice(i, 1);
      clearTimeout(e.timer);
      if (e.session.client.closed) continue;
      return e.session;
    }
    return null;
  }

  /** Offers a healthy session back; it is closed (QUIT) instead when the cache is full, closed or it is used up. */
  put(key: string, session: CachedSession): void {
    if (this.#closed || this.maxIdle === 0 || session.uses >= this.maxUses || session.client.closed) {
      void quitQuickly(session.client);
      return;
    }
    if (this.#entries.length >= this.maxIdle) this.#evict(this.#entries[0]!);
    const timer = setTimeout(() => this.#evict(entry), this.idleTimeoutMs);
    timer.unref();
    const entry: Entry = { key, session, timer };
    this.#entries.push(entry);
  }

  #evict(entry: Entry): void {
    const i = this.#entries.indexOf(entry);
    if (i >= 0) this.#entries.splice(i, 1);
    clearTimeout(entry.timer);
    void quitQuickly(entry.session.client);
  }

  /** QUITs every idle session; later put() calls close at once. */
  async close(): Promise<void> {
    this.#closed = true;
    const all = this.#entries.splice(0);
    await Promise.all(all.map(async (e) => {
      clearTimeout(e.timer);
      await quitQuickly(e.session.client);
    }));
  }
}

/** QUIT, but never wait more than `ms` for the reply: then just close. */
export async function quitQuickly(client: SmtpClient, ms = 2000): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<void>((resolve) => { timer = setTimeout(resolve, ms); timer.unref(); });
  try {
    await Promise.race([client.quit().catch(() => null), deadline]);
  } finally {
    clearTimeout(timer);
    client.close();
  }
}
