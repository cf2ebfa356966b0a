/** Time as a dependency, so schedules and throttles can be tested with an injected clock. */
export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
}

export const SYSTEM_CLOCK: Clock = { now: () => Date.now() };

/** A clock tests move by hand. */
export class ManualClock implements Clock {
  #t: number;
  constructor(start = 0) { this.#t = start; }
  now(): number { return this.#t; }
  advance(ms: number): void { this.#t += ms; }
  set(ms: number): void { this.#t = ms; }
}
