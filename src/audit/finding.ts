/**
 * Purpose: the shape every self-audit check returns (issue 12). A check is a function that returns findings;
 * the runner (run.ts) times it and turns a failure or a hang into an 'unreachable' finding.
 * Trust: plain data, no I/O.
 */

/** ok: checked and fine; warning: works but should be fixed; critical: the server is abusable or listed;
 *  unreachable: could not be checked (timeout, refused, check failed); broken: the checked source answers garbage
 *  (e.g. a DNSBL zone that lists its 127.0.0.1 test point), so its answers are ignored. */
export type Severity = 'ok' | 'warning' | 'critical' | 'unreachable' | 'broken';

export interface Finding {
  /** e.g. 'relay.closed', 'blocklist.listed', 'dns.spf' */
  readonly check: string;
  /** what was checked: an address, a domain, a listener */
  readonly subject: string;
  readonly severity: Severity;
  readonly summary: string;
  readonly detail?: Record<string, unknown>;
}

export interface CheckResult {
  readonly check: string;
  readonly findings: readonly Finding[];
  readonly durationMs: number;
}
