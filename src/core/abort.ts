/**
 * A signal that aborts when a parent signal does or after a timeout, and that can be released when the work ends.
 *
 * Not `AbortSignal.any([parent, AbortSignal.timeout(ms)])`: Node 24's any() pins every timeout signal passed to it
 * (internal gcPersistentSignals, nodejs/node#57867) until its timer fires, so each use kept an AbortSignal, a
 * Timeout, a WeakRef and a finalizer cell (~0.5 KB) alive for the whole timeout: with an hour's job timeout the
 * queue runner's heap grew with every message (field report 1, LK).
 */
export interface ReleasableSignal {
  readonly signal: AbortSignal;
  /** Clears the timer and the parent listener (call it when the work ends, aborted or not). */
  release(): void;
}

/** Aborts with the parent's reason, or after timeoutMs with a TimeoutError DOMException (as AbortSignal.timeout). */
export function timeoutSignal(parent: AbortSignal | null | undefined, timeoutMs: number, what = 'operation'): ReleasableSignal {
  const controller = new AbortController();
  if (parent?.aborted) {
    controller.abort(parent.reason);
    return { signal: controller.signal, release: () => {} };
  }
  const onAbort = (): void => controller.abort(parent!.reason);
  parent?.addEventListener('abort', onAbort, { once: true });
  const timer = setTimeout(() => controller.abort(new DOMException(`${what} timed out after ${timeoutMs} ms`, 'TimeoutError')), timeoutMs);
  timer.unref();
  return {
    signal: controller.signal,
    release: () => {
      clearTimeout(timer);
      parent?.removeEventListener('abort', onAbort);
    },
  };
}
