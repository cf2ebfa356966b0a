/**
 * Group commit: items submitted while a flush is in flight wait and go together in the next flush, so N
 * concurrent commits cost about one flush per in-flight period instead of N. One flush runs at a time.
 * Each submit() resolves only after the flush that carried its item succeeded.
 */

export interface GroupCommitStats {
  /** Flushes run (in the queue store: one database transaction + WAL fdatasync each, plus a directory fsync when
   *  the batch has a spool-file body). */
  readonly flushes: number;
  /** Items committed. */
  readonly items: number;
  /** Items whose flush failed. */
  readonly failedItems: number;
  readonly largestBatch: number;
}

interface Waiter<T> {
  readonly item: T;
  readonly resolve: () => void;
  readonly reject: (err: unknown) => void;
}

export class GroupCommit<T> {
  readonly #flush: (items: readonly T[]) => Promise<void>;
  readonly #maxBatch: number;
  readonly #retryAlone: (err: unknown) => boolean;
  #queue: Waiter<T>[] = [];
  #running: Promise<void> | null = null;
  #flushes = 0;
  #items = 0;
  #failedItems = 0;
  #largestBatch = 0;

  /**
   * @param flush writes one batch durably; it throws to fail the whole batch. When a batch of several items fails,
   *   each item is retried alone, so one bad item cannot fail its neighbours.
   * @param options.maxBatch largest batch per flush (default 512).
   * @param options.retryAlone whether a failed batch's items are retried one by one (default: always). A database
   *   that is down fails every item the same way: retrying each alone would only multiply the wait.
   */
  constructor(flush: (items: readonly T[]) => Promise<void>, options: { maxBatch?: number; retryAlone?: (err: unknown) => boolean } = {}) {
    this.#flush = flush;
    this.#maxBatch = options.maxBatch ?? 512;
    this.#retryAlone = options.retryAlone ?? (() => true);
  }

  submit(item: T): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.#queue.push({ item, resolve, reject });
      this.#running ??= this.#drain();
    });
  }

  /** Resolves when nothing is queued or in flight. */
  async idle(): Promise<void> {
    while (this.#running !== null) await this.#running;
  }

  stats(): GroupCommitStats {
    return { flushes: this.#flushes, items: this.#items, failedItems: this.#failedItems, largestBatch: this.#largestBatch };
  }

  async #drain(): Promise<void> {
    try {
      // Let commits that became ready in this same turn of the event loop join the first batch.
      await new Promise<void>((resolve) => setImmediate(resolve));
      while (this.#queue.length > 0) {
        const batch = this.#queue.splice(0, this.#maxBatch);
        await this.#run(batch);
      }
    } finally {
      this.#running = null;
    }
  }

  async #run(batch: Waiter<T>[]): Promise<void> {
    this.#largestBatch = Math.max(this.#largestBatch, batch.length);
    try {
      this.#flushes++;
      await this.#flush(batch.map((w) => w.item));
      this.#items += batch.length;
      for (const w of batch) w.resolve();
      return;
    } catch (err) {
      if (batch.length === 1 || !this.#retryAlone(err)) {
        this.#failedItems += batch.length;
        for (const w of batch) w.reject(err);
        return;
      }
    }
    for (const w of batch) await this.#run([w]);
  }
}
