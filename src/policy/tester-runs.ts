/**
 * Tester runs as data: the store port for the open-relay tests started from the web (src/web/tester.ts), one row
 * per run with its state, verdict and report (the `relayguard test --json` document).
 * Purpose: list past runs, show a report, and never lose a run silently: a run still queued or running when its
 * node stops (or crashed) is marked 'aborted' (finishUnfinished at start and at stop).
 * Trust: the rows hold what a remote server answered (banners, replies, transcripts): values only, rendered
 * escaped by the web layer.
 *
 *   TesterRunStore  the port (store/sqlite-tester-runs.ts: dataDir/tester-runs.db; store/postgres-tester-runs.ts:
 *                   table tester_runs, migration 007). Contract: tester-runs.case.ts.
 * States: running -> done | failed | aborted. A finished run never changes again (finish() on it is false).
 */

export type TesterRunState = 'running' | 'done' | 'failed' | 'aborted';

export const FINISHED_STATES: readonly TesterRunState[] = ['done', 'failed', 'aborted'];

export interface NewTesterRun {
  /** Public id: 16 lower-case hex digits. */
  readonly id: string;
  /** The node that runs it (config `node`). */
  readonly node: string;
  /** Who started it, as in the audit log. */
  readonly actor: string;
  /** The target as typed (host, address or mail domain). */
  readonly target: string;
  /** The run's options as requested (plain JSON). */
  readonly options: unknown;
  /** The addresses the target resolved to and that the run tests. */
  readonly addresses: readonly string[];
  /** Epoch ms. */
  readonly createdAt: number;
}

export interface TesterRunSummary extends NewTesterRun {
  /** Increasing per store: the paging cursor. */
  readonly seq: number;
  readonly state: TesterRunState;
  /** OPEN, CLOSED or INCONCLUSIVE once done; null otherwise. */
  readonly verdict: string | null;
  readonly exitCode: number | null;
  /** Why a run failed or was aborted. */
  readonly error: string | null;
  readonly finishedAt: number | null;
}

export interface TesterRunRecord extends TesterRunSummary {
  /** The report (schema relayguard-tester/2) once done; null otherwise. */
  readonly report: unknown;
}

export interface TesterRunOutcome {
  readonly state: Exclude<TesterRunState, 'running'>;
  readonly verdict: string | null;
  readonly exitCode: number | null;
  readonly error: string | null;
  readonly report: unknown;
  readonly finishedAt: number;
}

export interface TesterRunStore {
  /** Records a new run in state 'running'. Throws when the id exists. */
  create(run: NewTesterRun): Promise<void>;
  /** Finishes a running run; false when it is unknown or already finished (nothing changes then). */
  finish(id: string, outcome: TesterRunOutcome): Promise<boolean>;
  get(id: string): Promise<TesterRunRecord | null>;
  /** Runs newest first (seq descending), without their reports; `before`: only seq < before. */
  list(filter: { readonly limit: number; readonly before?: number; readonly state?: TesterRunState }): Promise<TesterRunSummary[]>;
  /** Marks every running run of `node` aborted with `error`; returns how many. */
  abortRunning(node: string, error: string, at: number): Promise<number>;
  /** Deletes the oldest finished runs beyond the newest `keep`; returns how many. */
  prune(keep: number): Promise<number>;
  close(): Promise<void>;
}
