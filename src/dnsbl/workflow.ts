/**
 * The ORDB listing workflow: submit -> test -> list -> retest -> delist (relay-testers.md 3.4, hostile-inputs DB-06).
 *
 *   submit(ip, submitter)    rate limited per submitter; refused for excluded, non-global and test-point addresses;
 *                            a no-op when the address is listed or pending already; otherwise a pending entry,
 *                            due for a test at once.
 *   runDue()                 tests the due pending entries and the listings due for a retest (single addresses of
 *                            the tested categories, open-relay and open-proxy: a network or a honeypot listing is
 *                            not the tester's to judge).
 *   requestDelisting(ip)     (rate limited) schedules an immediate retest of a listed address.
 *   scheduleRetest(ip)       the administrator's version: any pending or listed address, no limit.
 *   testNow(ip)              runs the test for one entry now (the CLI's --now).
 *   runJob(ip, {commit})     runs the test of a job from the job queue (jobs.ts, worker.ts: tests spread over worker
 *                            processes with leases); the result is recorded through the job's fenced commit.
 *
 * Decisions (decide(), pure):
 *   pending + OPEN, proved               -> listed (evidence kept), retest after retestIntervalMs
 *   pending + relaying accepted, not proved (safe mode, or the probe never arrived)
 *                                        -> stays pending, flagged for a human; retried after retryIntervalMs in
 *                                           proof mode (the probe may be late), parked (no retest) in safe mode:
 *                                           only proof lists automatically
 *   pending + CLOSED                     -> delisted (never listed; the test is in the history and the evidence)
 *   pending + INCONCLUSIVE               -> stays pending, retried after retryIntervalMs; after maxPendingAttempts
 *                                           tries it is parked, flagged
 *   listed  + OPEN                       -> stays listed, next retest after retestIntervalMs
 *   listed  + CLOSED                     -> delisted
 *   listed  + anything else              -> stays listed, retried after retestIntervalMs (a relay that tarpits or
 *                                           firewalls the tester must not get itself delisted that way); flagged
 *                                           'client-blocked' when the relay refused the tester's own address (it
 *                                           blocklists the tester, maybe by this very zone: field report H1)
 *
 * Checks (issue 13): a submission names the tester checks to run (smtp: the relay battery, proxy: the open-proxy
 * battery; default smtp); they are kept with the entry (ListingStore checks) and every test and retest runs each
 * (HostTester with `check`). combineChecks() makes one result of them: a proved OPEN of any check wins and lists
 * the address in that check's category (smtp -> open-relay, proxy -> open-proxy; open-relay first when both are
 * proved); a listed entry is judged by its own category's check (an open proxy that turns CLOSED is delisted even
 * when the host has no SMTP service to test); a pending entry is CLOSED only when every check is. An open proxy is
 * proved by arrival at the tester's proxy sink, which safe mode does too (it never sends a message): so proxies are
 * listed from safe mode, relays only from proof mode. An open Usenet server (nntp -> open-nntp) is proved only when
 * the tagged test article posted without AUTHINFO reads back, which needs a test group the administrator names
 * (dnsbl.nntpGroup); without one the check is safe (a 340 to POST is "accepted, not proved"), and never lists.
 * A host whose every port refused the connection is not "closed" (reason no-service / unreachable): it may be down
 * or may be blocking the tester; it is INCONCLUSIVE here. So is a CLOSED that names a reason the tester counts as
 * inconclusive (client-blocked, control-refused): only a refusal seen next to an accepted control delists.
 *
 * The tester is injected (src/dnsbl imports only src/core): the CLI passes a function that runs src/tester in proof
 * mode when a probe domain is configured, else in safe mode. Tests run concurrently up to `concurrency`, one at a
 * time per address; stop() aborts the running ones and records nothing for them.
 */
import { canonicalIp } from '../core/canonical.ts';
import ipaddr from 'ipaddr.js';
import { SYSTEM_CLOCK, type Clock } from '../core/clock.ts';
import { NULL_LOGGER, type Logger } from '../core/log.ts';
import { isNetworkError, parseAddress, parseNetwork, type Network } from './network.ts';
import type { ListingCategory } from './categories.ts';
import type { Listing, ListingStore } from './store.ts';

export type TestVerdict = 'OPEN' | 'CLOSED' | 'INCONCLUSIVE';

/** The tester checks the workflow can run: smtp (open relay), proxy (open proxy), nntp (open Usenet server). */
export type TestCheck = 'smtp' | 'proxy' | 'nntp';
export const TEST_CHECKS: readonly TestCheck[] = ['smtp', 'proxy', 'nntp'];

/** The category a proved check lists under, and the check a listed category is retested with. */
const CHECK_CATEGORY: Readonly<Record<TestCheck, ListingCategory>> = { smtp: 'open-relay', proxy: 'open-proxy', nntp: 'open-nntp' };

/** Categories the tester judges (single addresses of these are tested and retested; others never are). */
export const TESTED_CATEGORIES: readonly ListingCategory[] = ['open-relay', 'open-proxy', 'open-nntp'];

export function categoryOfCheck(check: TestCheck): ListingCategory {
  return CHECK_CATEGORY[check];
}

/** The check whose proof a category stands for (null: not a tested category). */
export function checkOfCategory(category: ListingCategory): TestCheck | null {
  return TEST_CHECKS.find((c) => CHECK_CATEGORY[c] === category) ?? null;
}

/** The checks an entry is tested with: those its submission asked for, else its category's own. */
export function checksOf(listing: Pick<Listing, 'checks' | 'category'>): TestCheck[] {
  const asked = (listing.checks ?? []).filter((c): c is TestCheck => (TEST_CHECKS as readonly string[]).includes(c));
  if (asked.length > 0) return asked;
  return [checkOfCategory(listing.category) ?? 'smtp'];
}

/** Vets a submitter's check list: known names, each once, in the battery order; null = not valid. */
export function parseChecks(checks: readonly string[] | undefined): TestCheck[] | null {
  if (checks === undefined || checks.length === 0) return ['smtp'];
  const out: TestCheck[] = [];
  for (const raw of checks) {
    const c = String(raw).trim().toLowerCase();
    if (!(TEST_CHECKS as readonly string[]).includes(c)) return null;
    if (!out.includes(c as TestCheck)) out.push(c as TestCheck);
  }
  return TEST_CHECKS.filter((c) => out.includes(c));
}

/**
 * What a proved open proxy is listed with (the evidence page shows it): the attempt that got through, the
 * proxy's reply to it and the address the sink saw the connection come from.
 */
export interface ProxyEvidence {
  /** The proxy's address, as tested. */
  readonly testedAddress: string;
  /** Where the proved connection came from (the proxy's egress; differs behind a chain or on a multi-homed proxy). */
  readonly egressAddress: string | null;
  readonly port: number;
  /** The attempt's method: http-connect, http-post, http-get, socks4, socks4a, socks5, telnet, ... */
  readonly method: string;
  /** The battery's attempt id (P01 ... T01, src/tester/proxy/probes.ts) and its title. */
  readonly attempt?: string | undefined;
  readonly title: string;
  /** What the proxy was asked to reach ("192.0.2.7:25"). */
  readonly destination: string | null;
  /** The proxy's reply line. */
  readonly reply: string | null;
  /** The line that carried the probe's tag at the sink. */
  readonly sinkLine: string | null;
  /** Every attempt that got through: "port id method". */
  readonly openAttempts: readonly string[];
}

/**
 * What a proved open Usenet server is listed with: the tagged test article it took without AUTHINFO and served
 * back (never from a 340 alone: safe mode posts nothing and so proves nothing).
 */
export interface NntpEvidence {
  readonly testedAddress: string;
  readonly port: number;
  /** POST (reader) or IHAVE (transit). */
  readonly path: string;
  readonly group: string;
  readonly messageId: string;
  /** The replies to the command and to the article ("340 ...", "240 ..."). */
  readonly command: string | null;
  readonly posted: string | null;
  /** How the article was read back: ARTICLE, HEAD, GROUP/STAT. */
  readonly readBack: readonly string[];
  /** Path and Injection-Info / NNTP-Posting-Host of the article as read back. */
  readonly pathHeader: string | null;
  readonly injectionInfo: string | null;
  /** The test article was cancelled afterwards (and gone). */
  readonly cancelled: boolean;
}

/** One check's result as kept in the evidence. */
export interface CheckSummary {
  readonly check: TestCheck;
  readonly verdict: TestVerdict;
  readonly reason: string | null;
  readonly proved: boolean;
  readonly detail: string | null;
}

export interface HostTestResult {
  readonly verdict: TestVerdict;
  /** The probe reached the sink (proof mode). OPEN without proof never lists. */
  readonly proved: boolean;
  /** The tester's reason ("proved", "refused", "accepted-not-proved", "no-service", ...). */
  readonly reason?: string | undefined;
  readonly detail?: string | undefined;
  readonly mode?: 'prove' | 'safe' | undefined;
  /**
   * Which battery produced the verdict (tester schema 2: 'smtp' relay battery, 'proxy' open-proxy battery; absent =
   * 'smtp'). A proxy verdict OPEN 'proved' (the proxy's connection reached the tester's sink) lists the address
   * under 'open-proxy'.
   */
  readonly check?: 'smtp' | 'proxy' | 'nntp' | undefined;
  /** The address the proved connection came from, when it differs from the tested one (a proxy's egress). */
  readonly egressAddress?: string | undefined;
  /** A proxy check's evidence (the attempt that proved it), when proved. */
  readonly proxy?: ProxyEvidence | undefined;
  /** An nntp check's evidence (the article read back), when proved. */
  readonly nntp?: NntpEvidence | undefined;
  /** With several checks: each one's summary (combineChecks). */
  readonly checks?: readonly CheckSummary[] | undefined;
  /** The tester's JSON report (docs/tester-json.md). */
  readonly report: unknown;
}

/**
 * How a job's result is recorded (worker.ts): runs `apply` (the store update; it returns the outcome kept with the
 * job) in the transaction that finishes the job, if the worker still holds its lease; false (nothing applied) when
 * the lease was taken over.
 */
export type JobCommit = (apply: () => TestOutcome) => boolean;

/** Runs one check (default 'smtp') against one address. */
export type HostTester = (ip: string, options: { readonly prove: boolean; readonly signal: AbortSignal; readonly check?: TestCheck }) => Promise<HostTestResult>;

export interface OrdbWorkflowOptions {
  readonly store: ListingStore;
  readonly test: HostTester;
  /** Proof mode is available (a probe domain is configured). Default false: safe mode, nothing listed automatically. */
  readonly prove?: boolean | undefined;
  readonly clock?: Clock | undefined;
  readonly logger?: Logger | undefined;
  /** Submissions (and delisting requests) per submitter per hour. Default 10; 0 = no limit. */
  readonly rateLimit?: { readonly perSubmitterPerHour: number; readonly maxSubmitters?: number } | undefined;
  /** Retest of listed addresses. Default 7 days. */
  readonly retestIntervalMs?: number | undefined;
  /** Retry of a pending address whose test was inconclusive. Default 1 hour. */
  readonly retryIntervalMs?: number | undefined;
  /** Tests of a pending address before it is parked for a human. Default 3. */
  readonly maxPendingAttempts?: number | undefined;
  /** Networks never tested or listed (besides the store's excluded entries). */
  readonly excluded?: readonly string[] | undefined;
  /** Accept loopback, private and reserved addresses (tests, labs). Default false. */
  readonly allowNonGlobal?: boolean | undefined;
  /** Tests at once. Default 2. */
  readonly concurrency?: number | undefined;
  /** Entries taken per runDue(). Default 20. */
  readonly batch?: number | undefined;
  /** Called after every change to the store (the zone is rebuilt). */
  readonly onChange?: (() => void) | undefined;
  /**
   * testNow() through the job queue (OrdbWorker.runNow): the outcome, or null when another worker is testing the
   * address right now. Default: testNow() tests directly.
   */
  readonly testNowVia?: ((address: string, kind: 'submit' | 'retest') => Promise<TestOutcome | null>) | undefined;
}

/** The evidence kept with a listing (ListingStore evidence column). */
export interface OrdbEvidence {
  readonly schema: 'relayguard-ordb-evidence/1';
  readonly submittedBy: string | null;
  readonly submittedAt: string | null;
  /** Tests since the submission. */
  readonly attempts: number;
  readonly testedAt: string | null;
  readonly mode: 'prove' | 'safe' | null;
  readonly verdict: TestVerdict | null;
  readonly reason: string | null;
  readonly detail: string | null;
  readonly proved: boolean;
  /** Why a human should look at this entry, or null. */
  readonly flagged: string | null;
  readonly report: unknown;
  /** The check whose result decided (absent in evidence from before checks: smtp). */
  readonly check?: TestCheck | undefined;
  /** With several checks: each one's result. */
  readonly checks?: readonly CheckSummary[] | undefined;
  /** A proved open proxy: the attempt that got through. */
  readonly proxy?: ProxyEvidence | undefined;
  /** A proved open Usenet server: the test article read back. */
  readonly nntp?: NntpEvidence | undefined;
}

export type WorkflowRefusal =
  | 'ERR_DNSBL_RATE_LIMIT' | 'ERR_DNSBL_EXCLUDED' | 'ERR_DNSBL_NOT_GLOBAL' | 'ERR_DNSBL_NETWORK' | 'ERR_DNSBL_NOT_HOST'
  | 'ERR_DNSBL_NOT_LISTED' | 'ERR_DNSBL_NOT_FOUND' | 'ERR_DNSBL_NOT_TESTABLE' | 'ERR_DNSBL_BUSY' | 'ERR_DNSBL_STOPPED'
  | 'ERR_DNSBL_CHECK';

export interface Refused {
  readonly ok: false;
  readonly code: WorkflowRefusal;
  readonly message: string;
  /** ERR_DNSBL_RATE_LIMIT: when the submitter may try again. */
  readonly retryAfterMs?: number;
}

export type SubmitResult =
  | { readonly ok: true; readonly status: 'queued' | 'already-listed' | 'already-pending'; readonly listing: Listing | null }
  | Refused;

export type RetestResult = { readonly ok: true; readonly status: 'retest-scheduled'; readonly listing: Listing } | Refused;

export type Action = 'list' | 'keep-listed' | 'delist' | 'keep-pending' | 'park' | 'not-listed';

export interface Decision {
  readonly action: Action;
  /** The state afterwards. */
  readonly state: 'listed' | 'pending' | 'delisted';
  /** When to test again (null: not scheduled). */
  readonly nextRetest: number | null;
  readonly flagged: string | null;
  readonly detail: string;
  /** The category the entry is listed under after a proved OPEN (that check's), else absent (unchanged). */
  readonly category?: ListingCategory | undefined;
}

export interface TestOutcome {
  readonly network: string;
  readonly before: Listing['state'];
  readonly after: Listing['state'];
  readonly action: Action | 'skipped';
  readonly verdict: TestVerdict | null;
  readonly detail: string;
}

export interface DecideContext {
  readonly now: number;
  readonly prove: boolean;
  /** Tests of this pending entry including this one. */
  readonly attempts: number;
  readonly retestIntervalMs: number;
  readonly retryIntervalMs: number;
  readonly maxPendingAttempts: number;
}

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const MAX_SUBMITTER = 128;
const UNREACHABLE = new Set(['no-service', 'unreachable']);
/** Reasons that say the tester, not relaying, was refused: never read as CLOSED. */
const NOT_ABOUT_RELAYING = new Set(['client-blocked', 'control-refused']);
const RELAY_ACCEPTED = new Set(['accepted-not-proved', 'accepts-all-recipients']);

/** The verdict the workflow acts on: CLOSED only for a host that answered and refused; OPEN only when proved. */
export function effectiveVerdict(r: HostTestResult): 'OPEN' | 'SUSPECT' | 'CLOSED' | 'INCONCLUSIVE' {
  if (r.verdict === 'OPEN') return r.proved ? 'OPEN' : 'SUSPECT';
  if (r.verdict === 'CLOSED') return r.reason !== undefined && (UNREACHABLE.has(r.reason) || NOT_ABOUT_RELAYING.has(r.reason)) ? 'INCONCLUSIVE' : 'CLOSED';
  return r.reason !== undefined && RELAY_ACCEPTED.has(r.reason) ? 'SUSPECT' : 'INCONCLUSIVE';
}

function checkOf(r: HostTestResult): TestCheck {
  return r.check === 'proxy' || r.check === 'nntp' ? r.check : 'smtp';
}

/**
 * One result from the results of several checks on one address (pure); `category` is the listed entry's, or null
 * for a pending one.
 *   any check proved OPEN          -> that result (the listed category's own check first, then smtp, proxy)
 *   listed, its check was run      -> that check's result (CLOSED delists; anything else keeps it listed)
 *   otherwise                      -> the first suspect (accepted, not proved), else the first inconclusive, else
 *                                     CLOSED (every check closed)
 * The chosen result carries every check's summary (`checks`) and, with more than one, their verdicts in its detail.
 */
export function combineChecks(results: readonly HostTestResult[], category: ListingCategory | null): HostTestResult {
  if (results.length === 0) return { verdict: 'INCONCLUSIVE', proved: false, reason: 'not-tested', detail: 'no check ran', report: null };
  if (results.length === 1) return results[0]!;
  const own = category === null ? null : checkOfCategory(category);
  const open = results.filter((r) => effectiveVerdict(r) === 'OPEN');
  let chosen: HostTestResult | undefined = open.find((r) => checkOf(r) === own) ?? open[0];
  if (chosen === undefined && own !== null) chosen = results.find((r) => checkOf(r) === own);
  chosen ??= results.find((r) => effectiveVerdict(r) === 'SUSPECT')
    ?? results.find((r) => effectiveVerdict(r) === 'INCONCLUSIVE')
    ?? results[0]!;
  const checks: CheckSummary[] = results.map((r) => ({ check: checkOf(r), verdict: r.verdict, reason: r.reason ?? null, proved: r.proved, detail: r.detail ?? null }));
  const others = checks.filter((c) => c.check !== checkOf(chosen)).map((c) => `${c.check} ${c.verdict}${c.reason ? ` (${c.reason})` : ''}`).join(', ');
  return { ...chosen, check: checkOf(chosen), checks, detail: `${checkOf(chosen)}: ${chosen.detail ?? ''}${others ? `; also ${others}` : ''}` };
}

/** What to do with an entry after a test (pure). */
export function decide(state: 'pending' | 'listed', r: HostTestResult, ctx: DecideContext): Decision {
  const v = effectiveVerdict(r);
  const why = `${r.verdict}${r.reason ? ` (${r.reason})` : ''}${r.detail ? `: ${r.detail}` : ''}`.slice(0, 400);
  if (state === 'listed') {
    if (v === 'CLOSED') return { action: 'delist', state: 'delisted', nextRetest: null, flagged: null, detail: `retest found it closed, delisted; ${why}` };
    if (v === 'OPEN') return { action: 'keep-listed', state: 'listed', nextRetest: ctx.now + ctx.retestIntervalMs, flagged: null, detail: `retest proved it still open; ${why}`, category: categoryOfCheck(checkOf(r)) };
    const blocked = r.reason === 'client-blocked';
    return {
      action: 'keep-listed', state: 'listed', nextRetest: ctx.now + ctx.retestIntervalMs,
      flagged: v === 'SUSPECT' ? null : blocked
        ? 'retest refused the tester\'s own address (client-blocked): still listed; retest from an address the relay does not block'
        : 'retest inconclusive: still listed',
      detail: `retest did not show it closed${blocked ? ' (the relay refused the tester\'s address, not relaying)' : ''}, still listed; ${why}`,
    };
  }
  if (v === 'OPEN') return { action: 'list', state: 'listed', nextRetest: ctx.now + ctx.retestIntervalMs, flagged: null, detail: `proved open by the tester${checkOf(r) === 'proxy' ? ' (open proxy, proved by arrival at the sink)' : checkOf(r) === 'nntp' ? ' (open Usenet server, its test article read back)' : ''}, listed; ${why}`, category: categoryOfCheck(checkOf(r)) };
  if (v === 'CLOSED') return { action: 'not-listed', state: 'delisted', nextRetest: null, flagged: null, detail: `tested closed, not listed; ${why}` };
  if (v === 'SUSPECT') {
    const flag = checkOf(r) === 'nntp'
      ? 'took a post without AUTHINFO but no test article was read back: not listed (only an article read back lists; dnsbl.nntpGroup names the test group)'
      : ctx.prove
        ? 'accepted relaying but the probe never arrived: not listed (only proved relays are listed)'
        : 'accepted relaying in safe mode (no proof): not listed automatically; a human or a proof-mode test must confirm';
    if (ctx.prove && ctx.attempts < ctx.maxPendingAttempts) {
      return { action: 'keep-pending', state: 'pending', nextRetest: ctx.now + ctx.retryIntervalMs, flagged: flag, detail: `not proved, retry later; ${why}` };
    }
    return { action: 'park', state: 'pending', nextRetest: null, flagged: flag, detail: `not proved, waiting for a human; ${why}` };
  }
  if (ctx.attempts < ctx.maxPendingAttempts) {
    return { action: 'keep-pending', state: 'pending', nextRetest: ctx.now + ctx.retryIntervalMs, flagged: null, detail: `inconclusive, retry later; ${why}` };
  }
  return {
    action: 'park', state: 'pending', nextRetest: null,
    flagged: `inconclusive after ${ctx.attempts} tests: waiting for a human`, detail: `inconclusive, gave up; ${why}`,
  };
}

function isEvidence(x: unknown): x is OrdbEvidence {
  return typeof x === 'object' && x !== null && (x as { schema?: unknown }).schema === 'relayguard-ordb-evidence/1';
}

/** The workflow's evidence of a listing, or null (manual listings, imports). */
export function ordbEvidence(listing: Listing): OrdbEvidence | null {
  return isEvidence(listing.evidence) ? listing.evidence : null;
}

function contains(net: Network, addr: Network): boolean {
  if (net.family !== addr.family) return false;
  return (addr.first as number | bigint) >= (net.first as number | bigint) && (addr.first as number | bigint) <= (net.last as number | bigint);
}

/** "global" for an address the workflow may test, else why not. */
function addressScope(a: Network): string {
  const text = a.text;
  if (text === '127.0.0.1' || text === '127.0.0.2') return 'an RFC 5782 test point';
  const range = ipaddr.parse(text).range();
  return range === 'unicast' ? 'global' : range;
}

function cleanSubmitter(s: string): string {
  const t = String(s).replace(/[^\x21-\x7e]/g, '?').slice(0, MAX_SUBMITTER);
  return t === '' ? 'unknown' : t;
}

/** A sliding one-hour window per key, bounded in keys. */
class HourlyLimiter {
  readonly #limit: number;
  readonly #maxKeys: number;
  readonly #hits = new Map<string, number[]>();
  constructor(limit: number, maxKeys: number) {
    this.#limit = limit;
    this.#maxKeys = maxKeys;
  }
  /** Records a hit, or returns how long to wait. */
  take(key: string, now: number): { ok: true } | { ok: false; retryAfterMs: number } {
    if (this.#limit <= 0) return { ok: true };
    const times = (this.#hits.get(key) ?? []).filter((t) => t > now - HOUR);
    if (times.length >= this.#limit) {
      this.#hits.set(key, times);
      return { ok: false, retryAfterMs: times[0]! + HOUR - now };
    }
    times.push(now);
    this.#hits.delete(key);
    this.#hits.set(key, times);
    // Least recently used keys go first (a re-inserted key moves to the end).
    for (const k of this.#hits.keys()) {
      if (this.#hits.size <= this.#maxKeys) break;
      this.#hits.delete(k);
    }
    return { ok: true };
  }
}

export class OrdbWorkflow {
  readonly #store: ListingStore;
  readonly #test: HostTester;
  readonly #prove: boolean;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #limiter: HourlyLimiter;
  readonly #retestMs: number;
  readonly #retryMs: number;
  readonly #maxAttempts: number;
  readonly #excluded: Network[];
  readonly #allowNonGlobal: boolean;
  readonly #concurrency: number;
  readonly #batch: number;
  readonly #onChange: () => void;
  readonly #testNowVia: OrdbWorkflowOptions['testNowVia'];
  readonly #inFlight = new Map<string, Promise<TestOutcome>>();
  readonly #abort = new AbortController();
  #running: Promise<TestOutcome[]> | null = null;

  constructor(options: OrdbWorkflowOptions) {
    this.#store = options.store;
    this.#test = options.test;
    this.#prove = options.prove ?? false;
    this.#clock = options.clock ?? SYSTEM_CLOCK;
    this.#log = options.logger ?? NULL_LOGGER;
    this.#limiter = new HourlyLimiter(options.rateLimit?.perSubmitterPerHour ?? 10, options.rateLimit?.maxSubmitters ?? 100_000);
    this.#retestMs = options.retestIntervalMs ?? 7 * DAY;
    this.#retryMs = options.retryIntervalMs ?? HOUR;
    this.#maxAttempts = Math.max(1, options.maxPendingAttempts ?? 3);
    this.#excluded = (options.excluded ?? []).map((n) => {
      const p = parseNetwork(n);
      if (isNetworkError(p)) throw new RangeError(`excluded network: ${p.error}`);
      return p;
    });
    this.#allowNonGlobal = options.allowNonGlobal ?? false;
    this.#concurrency = Math.max(1, options.concurrency ?? 2);
    this.#batch = Math.max(1, options.batch ?? 20);
    this.#onChange = options.onChange ?? (() => {});
    this.#testNowVia = options.testNowVia;
  }

  get proofMode(): boolean {
    return this.#prove;
  }

  #changed(): void {
    try { this.#onChange(); } catch (err) { this.#log.error('dnsbl onChange failed', { error: (err as Error).message }); }
  }

  /** Parses and vets one address: the canonical host, or why it cannot be tested. */
  #vet(ip: string): { ok: true; addr: Network } | Refused {
    const raw = String(ip).trim();
    const text = canonicalIp(raw) ?? raw;
    if (text.includes('/')) return { ok: false, code: 'ERR_DNSBL_NOT_HOST', message: `${text.slice(0, 64)} is a network: submit single addresses (an administrator can list networks with "dnsbl add")` };
    const addr = parseAddress(text);
    if (addr === null) return { ok: false, code: 'ERR_DNSBL_NETWORK', message: `not an IP address: ${JSON.stringify(text.slice(0, 64))}` };
    const ex = this.#excluded.find((n) => contains(n, addr));
    if (ex) return { ok: false, code: 'ERR_DNSBL_EXCLUDED', message: `${addr.text} is in the excluded network ${ex.text}: it is never tested or listed` };
    const inStore = this.#store.lookup(addr.text).matches.find((m) => m.state === 'excluded');
    if (inStore) return { ok: false, code: 'ERR_DNSBL_EXCLUDED', message: `${addr.text} is excluded (${inStore.network}${inStore.reason ? `: ${inStore.reason}` : ''}): it is never tested or listed` };
    const scope = addressScope(addr);
    if (scope === 'an RFC 5782 test point' || (scope !== 'global' && !this.#allowNonGlobal)) {
      return { ok: false, code: 'ERR_DNSBL_NOT_GLOBAL', message: `${addr.text} is ${scope === 'an RFC 5782 test point' ? scope : `not a global address (${scope})`}: not tested` };
    }
    return { ok: true, addr };
  }

  /** Submits an address for testing. Never throws for bad input: the result says why it was refused. */
  submit(ip: string, submitter: string, options: { readonly checks?: readonly string[] | undefined } = {}): SubmitResult {
    const who = cleanSubmitter(submitter);
    const checks = parseChecks(options.checks);
    if (checks === null) {
      return { ok: false, code: 'ERR_DNSBL_CHECK', message: `unknown check in ${JSON.stringify(options.checks).slice(0, 80)}: give ${TEST_CHECKS.join(', ')}` };
    }
    const now = this.#clock.now();
    const gate = this.#limiter.take(`submit\0${who}`, now);
    if (!gate.ok) {
      this.#log.warn('dnsbl submission rate limited', { submitter: who, retry_after_ms: gate.retryAfterMs });
      return { ok: false, code: 'ERR_DNSBL_RATE_LIMIT', message: `too many submissions from ${who}: try again in ${Math.ceil(gate.retryAfterMs / 60_000)} min`, retryAfterMs: gate.retryAfterMs };
    }
    const v = this.#vet(ip);
    if (!v.ok) {
      this.#log.info('dnsbl submission refused', { submitter: who, ip: String(ip).slice(0, 64), code: v.code });
      return v;
    }
    const net = v.addr.text;
    const found = this.#store.lookup(net);
    if (found.listed) return { ok: true, status: 'already-listed', listing: found.effective };
    const existing = this.#store.get(net);
    if (existing?.state === 'pending') {
      // A second submitter may ask for another check: the pending entry runs both.
      const have = checksOf(existing);
      const merged = TEST_CHECKS.filter((c) => have.includes(c) || checks.includes(c));
      if (merged.length === have.length) return { ok: true, status: 'already-pending', listing: existing };
      // ... tested again at once (a parked entry too: the new check may prove what the others could not)
      const l = this.#store.update(net, { checks: merged, nextRetest: now, detail: `checks ${merged.join(',')} asked by ${who}` });
      this.#changed();
      return { ok: true, status: 'already-pending', listing: l };
    }
    const evidence: OrdbEvidence = {
      schema: 'relayguard-ordb-evidence/1', submittedBy: who, submittedAt: new Date(now).toISOString(), attempts: 0,
      testedAt: null, mode: null, verdict: null, reason: null, detail: null, proved: false, flagged: null, report: null,
    };
    const listing = this.#store.add({
      network: net, state: 'pending', evidence, nextRetest: now, checks,
      detail: `submitted by ${who}${checks.join() === 'smtp' ? '' : ` (checks ${checks.join(',')})`}`,
    });
    this.#log.info('dnsbl submitted', { ip: net, submitter: who, checks });
    this.#changed();
    return { ok: true, status: 'queued', listing };
  }

  #retestable(ip: string, states: readonly Listing['state'][]): { ok: true; listing: Listing } | Refused {
    const addr = parseAddress(String(ip).trim());
    if (addr === null) return { ok: false, code: 'ERR_DNSBL_NETWORK', message: `not an IP address: ${JSON.stringify(String(ip).slice(0, 64))}` };
    const listing = this.#store.get(addr.text);
    if (listing === null || !states.includes(listing.state)) {
      const covering = this.#store.lookup(addr.text);
      if (covering.listed && covering.effective) {
        return { ok: false, code: 'ERR_DNSBL_NOT_TESTABLE', message: `${addr.text} is listed as part of ${covering.effective.network}: that listing is not retested automatically` };
      }
      return listing === null
        ? { ok: false, code: 'ERR_DNSBL_NOT_LISTED', message: `${addr.text} is not listed` }
        : { ok: false, code: 'ERR_DNSBL_NOT_LISTED', message: `${addr.text} is ${listing.state}, not ${states.join(' or ')}` };
    }
    if (!TESTED_CATEGORIES.includes(listing.category)) {
      return { ok: false, code: 'ERR_DNSBL_NOT_TESTABLE', message: `${addr.text} is listed as ${listing.category}: the tester cannot retest it` };
    }
    return { ok: true, listing };
  }

  /** A delisting request (rate limited per requester): schedules an immediate retest of a listed address. */
  requestDelisting(ip: string, requester = 'anonymous'): RetestResult {
    const who = cleanSubmitter(requester);
    const now = this.#clock.now();
    const gate = this.#limiter.take(`delist\0${who}`, now);
    if (!gate.ok) return { ok: false, code: 'ERR_DNSBL_RATE_LIMIT', message: `too many requests from ${who}: try again in ${Math.ceil(gate.retryAfterMs / 60_000)} min`, retryAfterMs: gate.retryAfterMs };
    const r = this.#retestable(ip, ['listed']);
    if (!r.ok) return r;
    const listing = this.#store.update(r.listing.network, { nextRetest: now, detail: `delisting requested by ${who}: retest scheduled` });
    this.#log.info('dnsbl delisting requested', { ip: listing.network, requester: who });
    this.#changed();
    return { ok: true, status: 'retest-scheduled', listing };
  }

  /** The administrator's retest: any pending or listed single address, now, without a rate limit. */
  scheduleRetest(ip: string, by = 'admin'): RetestResult {
    const r = this.#retestable(ip, ['listed', 'pending']);
    if (!r.ok) return r;
    const listing = this.#store.update(r.listing.network, { nextRetest: this.#clock.now(), detail: `retest scheduled by ${cleanSubmitter(by)}` });
    this.#changed();
    return { ok: true, status: 'retest-scheduled', listing };
  }

  /**
   * Tests one pending or listed address now (waits for a test already running for it). With `testNowVia` (a job
   * queue), the test runs as that address's job, so a worker elsewhere never tests it at the same time:
   * ERR_DNSBL_BUSY when one is testing it right now.
   */
  async testNow(ip: string): Promise<TestOutcome | Refused> {
    const r = this.#retestable(ip, ['listed', 'pending']);
    if (!r.ok) return r;
    if (this.#testNowVia) {
      const net = r.listing.network;
      const o = await this.#testNowVia(net, r.listing.state === 'pending' ? 'submit' : 'retest');
      return o ?? { ok: false, code: 'ERR_DNSBL_BUSY', message: `${net} is being tested by another worker right now: its result shows when that test ends` };
    }
    return this.#testOnce(r.listing);
  }

  /** Tests everything due: pending submissions and retests whose time has come. Overlapping calls share one run. */
  runDue(): Promise<TestOutcome[]> {
    this.#running ??= this.#runDue().finally(() => { this.#running = null; });
    return this.#running;
  }

  async #runDue(): Promise<TestOutcome[]> {
    if (this.#abort.signal.aborted) return [];
    const now = this.#clock.now();
    const due = this.#store.list({ state: ['pending', 'listed'], dueBefore: now, limit: this.#batch * 4 })
      .filter((l) => l.prefix === (l.family === 4 ? 32 : 128) && TESTED_CATEGORIES.includes(l.category) && !this.#inFlight.has(l.network))
      .slice(0, this.#batch);
    const out: TestOutcome[] = [];
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < due.length && !this.#abort.signal.aborted) {
        const l = due[next++]!;
        out.push(await this.#testOnce(l));
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.#concurrency, due.length) }, worker));
    return out;
  }

  #testOnce(listing: Listing): Promise<TestOutcome> {
    const running = this.#inFlight.get(listing.network);
    if (running) return running;
    const p = this.#run(listing).finally(() => this.#inFlight.delete(listing.network));
    this.#inFlight.set(listing.network, p);
    return p;
  }

  /**
   * Runs the test of a job a worker holds a lease on (worker.ts): the same test and decision as runDue(), but the
   * result is recorded only through `commit`, which applies it in the transaction that finishes the job, and only
   * while the lease is still the worker's (false: taken over, nothing recorded). Nothing is recorded either when
   * `signal` aborts (the worker stops, or lost its lease): the job goes back to the queue. A job whose entry is no
   * longer due (tested meanwhile, delisted, excluded) finishes without a test.
   */
  async runJob(address: string, options: { readonly signal: AbortSignal; readonly commit: JobCommit; readonly force?: boolean }): Promise<TestOutcome> {
    const listing = this.#store.get(address);
    const now = this.#clock.now();
    const stale = (detail: string): TestOutcome => {
      const o: TestOutcome = { network: address, before: listing?.state ?? 'delisted', after: listing?.state ?? 'delisted', action: 'skipped', verdict: null, detail };
      return options.commit(() => o) ? o : { ...o, detail: `lease lost: ${detail}` };
    };
    if (listing === null) return stale('not in the store: not tested');
    if (listing.state !== 'pending' && listing.state !== 'listed') return stale(`${listing.state}: not tested`);
    if (!TESTED_CATEGORIES.includes(listing.category) || listing.prefix !== (listing.family === 4 ? 32 : 128)) return stale(`not a single address of a tested category (${TESTED_CATEGORIES.join(', ')}): not tested`);
    if (options.force !== true && (listing.nextRetest === null || listing.nextRetest > now)) return stale('not due any more (tested meanwhile or rescheduled): not tested');
    const running = this.#inFlight.get(listing.network);
    if (running) {
      const o = await running;
      return stale(`tested by another request at the same time (${o.action}): not tested twice`);
    }
    const p = this.#run(listing, options).finally(() => this.#inFlight.delete(listing.network));
    this.#inFlight.set(listing.network, p);
    return p;
  }

  async #run(listing: Listing, job?: { readonly signal: AbortSignal; readonly commit: JobCommit }): Promise<TestOutcome> {
    const net = listing.network;
    const skipped = (detail: string, after: Listing['state'] = listing.state): TestOutcome => ({ network: net, before: listing.state, after, action: 'skipped', verdict: null, detail });
    const lost = (o: TestOutcome): TestOutcome => ({ ...o, detail: `lease lost to another worker: ${o.detail}; result not recorded` });
    // Without a job the store is written directly; with one, inside the transaction that finishes it (fenced).
    const record = (apply: () => TestOutcome): TestOutcome | null => {
      if (!job) return apply();
      let out: TestOutcome | null = null;
      return job.commit(() => (out = apply())) ? out : null;
    };
    const excluded = this.#excluded.find((n) => contains(n, parseAddress(net)!));
    if (excluded || this.#store.lookup(net).matches.some((m) => m.state === 'excluded')) {
      let changed = false;
      const o = record(() => {
        const cur = this.#store.get(net);
        if (cur !== null && cur.state !== 'excluded' && cur.nextRetest !== null) {
          this.#store.update(net, { nextRetest: null, detail: 'excluded: not tested' });
          changed = true;
        }
        return skipped('excluded: not tested');
      });
      if (changed) this.#changed();
      return o ?? lost(skipped('excluded: not tested'));
    }
    const signal = job ? AbortSignal.any([this.#abort.signal, job.signal]) : this.#abort.signal;
    const prove = this.#prove;
    const started = this.#clock.now();
    const checks = checksOf(listing);
    this.#log.info('dnsbl test started', { ip: net, state: listing.state, mode: prove ? 'prove' : 'safe', checks });
    const results: HostTestResult[] = [];
    for (const check of checks) {
      if (signal.aborted) break;
      try {
        const r = await this.#test(net, check === 'smtp' ? { prove, signal } : { prove, signal, check });
        results.push({ ...r, check: r.check ?? check });
      } catch (err) {
        results.push({ verdict: 'INCONCLUSIVE', proved: false, check, reason: 'error', detail: `the tester failed: ${(err as Error)?.message ?? String(err)}`, report: null });
      }
    }
    const result = combineChecks(results, listing.state === 'listed' ? listing.category : null);
    if (signal.aborted) return skipped('stopped while testing: nothing recorded');
    // The entry may have changed while the test ran (removed, excluded, listed by hand).
    const cur = this.#store.get(net);
    if (cur === null || (cur.state !== 'pending' && cur.state !== 'listed')) {
      this.#log.info('dnsbl test result dropped', { ip: net, state: cur?.state ?? null, verdict: result.verdict });
      const o = skipped(`changed to ${cur?.state ?? 'removed'} during the test: result not recorded`, cur?.state ?? listing.state);
      return record(() => o) ?? lost(o);
    }
    const now = this.#clock.now();
    const prev = ordbEvidence(cur);
    const attempts = (cur.state === 'pending' ? prev?.attempts ?? 0 : 0) + 1;
    const d = decide(cur.state, result, {
      now, prove, attempts, retestIntervalMs: this.#retestMs, retryIntervalMs: this.#retryMs, maxPendingAttempts: this.#maxAttempts,
    });
    const evidence: OrdbEvidence = {
      schema: 'relayguard-ordb-evidence/1',
      submittedBy: prev?.submittedBy ?? null,
      submittedAt: prev?.submittedAt ?? null,
      attempts,
      testedAt: new Date(now).toISOString(),
      mode: result.mode ?? (prove ? 'prove' : 'safe'),
      verdict: result.verdict,
      reason: result.reason ?? null,
      detail: result.detail ?? null,
      proved: result.proved,
      flagged: d.flagged,
      report: result.report ?? null,
      ...(result.check !== undefined ? { check: result.check } : {}),
      ...(result.checks ? { checks: result.checks } : {}),
      ...(result.proxy && effectiveVerdict(result) === 'OPEN' ? { proxy: result.proxy } : {}),
      ...(result.nntp && effectiveVerdict(result) === 'OPEN' ? { nntp: result.nntp } : {}),
    };
    // A listing keeps the evidence that listed it when a retest is inconclusive (the proof stays on show).
    const keepProof = cur.state === 'listed' && d.state === 'listed' && effectiveVerdict(result) !== 'OPEN' && prev?.proved === true;
    let outcome: TestOutcome | null;
    try {
      outcome = record(() => {
        // Read again inside the transaction: another process may have changed the entry since the read above.
        const now2 = this.#store.get(net);
        if (now2 === null || now2.state !== cur.state) {
          return skipped(`changed to ${now2?.state ?? 'removed'} during the test: result not recorded`, now2?.state ?? cur.state);
        }
        const after = this.#store.update(net, {
          state: d.state === cur.state ? undefined : d.state,
          ...(d.category !== undefined && d.category !== cur.category ? { category: d.category } : {}),
          evidence: keepProof ? { ...prev!, flagged: d.flagged } : evidence,
          lastTested: now,
          nextRetest: d.nextRetest,
          detail: d.detail,
        });
        return { network: net, before: cur.state, after: after.state, action: d.action, verdict: result.verdict, detail: d.detail };
      });
    } catch (err) {
      this.#log.error('dnsbl result not recorded', { err_code: 'ERR_DNSBL_RESULT', ip: net, error: (err as Error).message });
      return skipped(`not recorded: ${(err as Error).message}`);
    }
    if (outcome === null) {
      this.#log.warn('dnsbl result fenced off', { err_code: 'ERR_DNSBL_LEASE_LOST', ip: net, verdict: result.verdict });
      return lost({ network: net, before: cur.state, after: cur.state, action: d.action, verdict: result.verdict, detail: d.detail });
    }
    if (outcome.action === 'skipped') return outcome;
    this.#log.info('dnsbl tested', {
      ip: net, before: cur.state, after: outcome.after, action: d.action, verdict: result.verdict, reason: result.reason ?? null, check: result.check ?? 'smtp',
      ...(d.category !== undefined ? { category: d.category } : {}),
      proved: result.proved, flagged: d.flagged, next_retest: d.nextRetest, ms: now - started,
    });
    this.#changed();
    return outcome;
  }

  /** Aborts running tests (nothing is recorded for them) and waits for them to end. */
  async stop(): Promise<void> {
    this.#abort.abort();
    await Promise.allSettled([...this.#inFlight.values(), this.#running]);
  }
}
