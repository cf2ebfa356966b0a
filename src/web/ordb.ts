/**
 * The ORDB's face (a WebModule, src/web/module.ts): the admin API and pages of the listing store and workflow, and
 * the public pages an abuse desk or a listed host's owner uses.
 *
 *   admin API (login or token; writes need the session's CSRF token; zod schemas -> OpenAPI; every write audited)
 *     GET  /api/ordb/summary                      zone, mode, counts by state
 *     GET  /api/ordb/lookup?ip=                   what the zone says about one address, with every covering entry
 *     GET  /api/ordb/listings?state&category&since&limit&offset   entries with evidence and history, paged
 *     GET  /api/ordb/entry?network=               one entry (404 when the store has none)
 *     POST /api/ordb/submissions {ip, testNow, checks}  the workflow's submission (tested by the scheduler, or now)
 *                                                with the checks asked for (smtp, proxy, nntp; default smtp)
 *     POST /api/ordb/retest {ip, wait}            retest a listed or pending address now (wait: answer with the outcome)
 *     POST /api/ordb/delist {network, reason}     take an entry off the list
 *     POST /api/ordb/exclude {network, reason}    never list a network; POST /api/ordb/unexclude {network} lifts it
 *   admin pages: /ordb (search, filters, table), /ordb/entry?network= (evidence, history, buttons), POST /ordb/action
 *   public pages (no login; on web.public when set, else on the admin listener):
 *     GET  /dnsbl/lookup?ip=  and /dnsbl/lookup.json?ip=   listed or not, since when, category, evidence
 *     POST /dnsbl/delist  (ip, _csrf)             retest of a LISTED address through the workflow -> 303 to its status
 *     GET  /dnsbl/delist/status?ip=&at=  (+ .json)  the result once the retest is done
 *     GET  /dnsbl/policy                           what is listed, return codes, TTLs, how to get delisted
 *
 * Trust: the public routes take an address from anyone. They never start a test of an address that is not listed
 * (the workflow's requestDelisting refuses it too), are rate limited per client address (IPv6 per /64) and per
 * listed address (web.ordb), and their form is protected by a double-submit token (cookie rg_ordb_csrf, SameSite
 * Strict, and a form field). Everything rendered is escaped (html.ts). When the ORDB does not run on this node
 * (dnsbl disabled, or not worker 0) the API answers 503 ERR_ORDB_UNAVAILABLE and the public pages 503.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { canonicalIp } from '../core/canonical.ts';
import type { HistoryEvent, Listing, ListingState, ListingStore, OrdbWorkflow, Refused, TestOutcome } from '../dnsbl/index.ts';
import { Markup, html } from './html.ts';
import type { ApiRoute, Auth, PageRoute, PublicRoute, WebContext, WebModule } from './module.ts';
import { evidenceView, listingView, type EvidenceView, type ListingView } from './ordb-evidence.ts';
import {
  adminEntryBody, adminListBody, delistStatusBody, lookupForm, policyBody, publicLookupBody, reverse, type CategoryInfo,
} from './ordb-pages.ts';
import { randomToken, sameToken } from './sessions.ts';
import { WebError } from './server.ts';
import { WindowLimiter, clientKey } from './window-limiter.ts';

/** What the module needs of the running ORDB (src/cli/ordb-service.ts RunningOrdb provides it). */
export interface OrdbAccess {
  readonly zone: string;
  readonly ttlSeconds: number;
  readonly retestIntervalMs: number;
  readonly proofMode: boolean;
  /** Networks excluded by the configuration (dnsbl.excluded): not lifted from here. */
  readonly configExcluded: readonly string[];
  readonly store: Pick<ListingStore, 'get' | 'lookup' | 'list' | 'history' | 'exclude' | 'delist' | 'count'>;
  readonly workflow: Pick<OrdbWorkflow, 'submit' | 'requestDelisting' | 'scheduleRetest' | 'testNow'>;
  /** Rebuilds the zone now (after a change made outside the workflow). */
  rebuild(): void;
}

export interface OrdbLimits {
  readonly lookupsPerMinute: number;
  readonly delistingPerClientPerHour: number;
  readonly delistingPerAddressPerHour: number;
}

export interface OrdbModuleOptions {
  /** The ORDB of this node, or null; asked on each request (a reload may restart it). */
  readonly ordb: () => OrdbAccess | null;
  readonly categories: Readonly<Record<string, CategoryInfo>>;
  readonly limits: OrdbLimits;
  /** dnsbl.evidenceUrl ("$" = the address): linked from the admin entry page. */
  readonly evidenceUrl: string | null;
}

export const ORDB_CSRF_COOKIE = 'rg_ordb_csrf';
const STATES: readonly ListingState[] = ['pending', 'listed', 'delisted', 'excluded'];
const MINUTE = 60_000;
const HOUR = 3_600_000;

const ipField = z.string().trim().max(64).refine((v) => canonicalIp(v) !== null, 'an IP address (IPv4 or IPv6)').transform((v) => canonicalIp(v)!);
/** An address or a CIDR network, as the store takes it (the store canonicalizes and checks the host bits). */
const networkField = z.string().trim().min(1).max(64).regex(/^[0-9A-Fa-f.:]+(\/\d{1,3})?$/, 'an IP address or a network (CIDR)');
const reasonField = z.string().trim().max(512).regex(/^[^\x00-\x1f\x7f]*$/, 'no control characters').optional();
const instant = z.string().max(40).refine((v) => toInstant(v) !== null, 'epoch milliseconds or an ISO 8601 date-time').transform((v) => toInstant(v)!);
function toInstant(v: string): number | null {
  if (/^\d{1,15}$/.test(v)) return Number(v);
  const t = Date.parse(v);
  return Number.isFinite(t) && /^\d{4}-\d{2}-\d{2}/.test(v) ? t : null;
}
const boolish = z.union([z.boolean(), z.enum(['true', 'false']).transform((v) => v === 'true')]);

/** Maps a workflow refusal to an HTTP error. */
function refusal(r: Refused, notInStore: boolean): WebError {
  const status = r.code === 'ERR_DNSBL_RATE_LIMIT' ? 429
    : r.code === 'ERR_DNSBL_NOT_LISTED' || r.code === 'ERR_DNSBL_NOT_FOUND' ? (notInStore ? 404 : 409)
    : r.code === 'ERR_DNSBL_EXCLUDED' || r.code === 'ERR_DNSBL_NOT_TESTABLE' ? 409
    : r.code === 'ERR_DNSBL_BUSY' || r.code === 'ERR_DNSBL_STOPPED' ? 503
    : 400;
  const err = new WebError(status, r.code, r.message);
  if (r.retryAfterMs !== undefined) (err as WebError & { retryAfter?: number }).retryAfter = Math.ceil(r.retryAfterMs / 1000);
  return err;
}

/** Store errors (bad network, bad reason) are the caller's: 400 naming the field. */
function storeCall<T>(field: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (code === 'ERR_DNSBL_NETWORK' || code === 'ERR_DNSBL_REASON') throw new WebError(400, 'ERR_WEB_BAD_INPUT', `body field "${field}": ${(err as Error).message}`);
    if (code === 'ERR_DNSBL_NOT_FOUND') throw new WebError(404, 'ERR_ORDB_NOT_FOUND', (err as Error).message);
    throw err;
  }
}

/**
 * An entry as the API answers it: the listing, its evidence as the pages show it (trick, proof, transcript) and its
 * history; with `raw`, also the evidence as stored (the workflow's record with the tester's full JSON report).
 */
function entryJson(o: OrdbAccess, l: Listing, raw: boolean): Record<string, unknown> {
  const history = o.store.history(l.network);
  return { ...listingView(l, history), evidence: evidenceView(l), history: history.map(historyJson), ...(raw ? { rawEvidence: l.evidence } : {}) };
}

function historyJson(h: HistoryEvent): Record<string, unknown> {
  return { ...h, time: new Date(h.at).toISOString() };
}

export function ordbWebModule(options: OrdbModuleOptions): WebModule {
  const lookups = new WindowLimiter({ limit: options.limits.lookupsPerMinute, windowMs: MINUTE });
  const perClient = new WindowLimiter({ limit: options.limits.delistingPerClientPerHour, windowMs: HOUR });
  const perAddress = new WindowLimiter({ limit: options.limits.delistingPerAddressPerHour, windowMs: HOUR });
  /** Retests started here, by address (their outcome lands in the store; the status page reads it there). */
  const running = new Map<string, Promise<TestOutcome | Refused>>();
  let log: WebContext['logger'] | null = null;

  const need = (): OrdbAccess => {
    const o = options.ordb();
    if (o === null) throw new WebError(503, 'ERR_ORDB_UNAVAILABLE', 'The ORDB does not run on this node (dnsbl.enabled is false, or this is not worker 0)');
    return o;
  };

  const retestNow = (o: OrdbAccess, ip: string): Promise<TestOutcome | Refused> => {
    const cur = running.get(ip);
    if (cur) return cur;
    const p = o.workflow.testNow(ip).catch((err: unknown): Refused => {
      log?.error('ordb retest failed', { ip, err: String((err as Error)?.message ?? err) });
      return { ok: false, code: 'ERR_DNSBL_STOPPED', message: 'the retest failed' };
    }).finally(() => running.delete(ip));
    running.set(ip, p);
    return p;
  };

  /** The entry a public page shows for an address: the deciding one, else the address's own entry. */
  const publicEntry = (o: OrdbAccess, ip: string): Listing | null => {
    const a = o.store.lookup(ip);
    if (a.effective !== null) return a.effective;
    const own = a.matches.find((m) => m.network === ip);
    return own && own.state !== 'pending' ? own : null;
  };

  const tooMany = (reply: FastifyReply, retryAfterMs: number, what: string, json: boolean, ctx: WebContext): FastifyReply => {
    const secs = Math.ceil(retryAfterMs / 1000);
    void reply.code(429).header('retry-after', String(secs));
    const message = `Too many ${what}; try again in ${secs} s`;
    return json
      ? reply.send({ error: { code: 'ERR_ORDB_RATE_LIMIT', message } })
      : reply.type('text/html').send(ctx.publicPage('Slow down', html`<p class="error" role="alert">${message}</p>`));
  };

  const publicError = (reply: FastifyReply, status: number, code: string, message: string, json: boolean, ctx: WebContext, body: Markup | string = ''): FastifyReply => {
    void reply.code(status);
    return json
      ? reply.send({ error: { code, message } })
      : reply.type('text/html').send(ctx.publicPage(status === 503 ? 'ORDB unavailable' : 'ORDB lookup', html`${body}<p class="error" role="alert">${message}</p>`));
  };

  /** The public form's token: the visitor's cookie if it has one, else a new one (set on the reply). */
  const formToken = (request: FastifyRequest, reply: FastifyReply): string => {
    const have = request.cookies?.[ORDB_CSRF_COOKIE];
    if (typeof have === 'string' && /^[A-Za-z0-9_-]{43}$/.test(have)) return have;
    const t = randomToken();
    void reply.setCookie(ORDB_CSRF_COOKIE, t, { httpOnly: true, sameSite: 'strict', secure: request.protocol === 'https', path: '/dnsbl' });
    return t;
  };

  const api = (ctx: WebContext): ApiRoute[] => {
    log = ctx.logger;
    const auditWrite = (auth: Auth, request: FastifyRequest, action: string, target: string, detail: unknown): Promise<void> => ctx.audit(auth, request, action, target, detail);
    const listQuery = z.strictObject({
      state: z.enum(STATES as [ListingState, ...ListingState[]]).optional(),
      category: z.string().max(32).refine((c) => Object.hasOwn(options.categories, c), `one of ${Object.keys(options.categories).join(', ')}`).optional(),
      since: instant.optional(),
      limit: z.coerce.number().int().min(1).max(200).default(50),
      offset: z.coerce.number().int().min(0).max(1_000_000).default(0),
    });
    return [
      {
        method: 'GET', url: '/api/ordb/summary', summary: 'The ORDB of this node: zone, mode, entry counts by state.',
        handler: async () => {
          const o = need();
          return { zone: o.zone, ttlSeconds: o.ttlSeconds, proofMode: o.proofMode, retestIntervalMs: o.retestIntervalMs, counts: Object.fromEntries(STATES.map((s) => [s, o.store.count(s)])) };
        },
      },
      {
        method: 'GET', url: '/api/ordb/lookup', summary: 'What the zone says about one address: listed or not, the deciding entry and every stored entry covering it, with evidence and history.',
        query: z.strictObject({ ip: ipField }),
        handler: async ({ query }) => {
          const o = need();
          const a = o.store.lookup(query.ip);
          return { address: query.ip, zone: o.zone, listed: a.listed, effective: a.effective ? entryJson(o, a.effective, true) : null, matches: a.matches.map((m) => entryJson(o, m, false)) };
        },
      },
      {
        method: 'GET', url: '/api/ordb/listings', summary: 'Entries (listed, pending, delisted, excluded) with filters by state, category and change time (since: epoch ms or ISO 8601), paged with limit/offset; each with its evidence (as the pages show it) and history. The full tester report: /api/ordb/entry.',
        query: listQuery,
        handler: async ({ query }) => {
          const o = need();
          const q = query as z.infer<typeof listQuery>;
          const rows = o.store.list({
            ...(q.state ? { state: q.state } : {}), ...(q.category ? { category: q.category as Listing['category'] } : {}),
            ...(q.since !== undefined ? { updatedSince: q.since } : {}), limit: q.limit + 1, offset: q.offset,
          });
          return { zone: o.zone, offset: q.offset, limit: q.limit, more: rows.length > q.limit, listings: rows.slice(0, q.limit).map((l) => entryJson(o, l, false)) };
        },
      },
      {
        method: 'GET', url: '/api/ordb/entry', summary: 'One stored entry (an address or a network) with its evidence and history.',
        query: z.strictObject({ network: networkField }),
        handler: async ({ query }) => {
          const o = need();
          const l = o.store.get(query.network);
          if (l === null) throw new WebError(404, 'ERR_ORDB_NOT_FOUND', `${query.network} is not in the ORDB`);
          return entryJson(o, l, true);
        },
      },
      {
        method: 'POST', url: '/api/ordb/submissions', summary: 'Submit an address for testing (the workflow: refused for excluded, non-global and test-point addresses; a no-op when listed, a pending entry gains the checks asked for). testNow: test it now instead of at the next scheduler run. checks: the tester checks to run, smtp (open relay, listed under open-relay when proved) and proxy (open proxy, listed under open-proxy when a connection reaches the tester\'s sink), nntp (open Usenet server, listed under open-nntp only when a test article posted to dnsbl.nntpGroup reads back); default smtp.',
        body: z.strictObject({ ip: ipField, testNow: boolish.default(false), checks: z.array(z.enum(['smtp', 'proxy', 'nntp'])).min(1).max(3).optional() }),
        handler: async ({ body, auth, request }) => {
          const o = need();
          const r = o.workflow.submit(body.ip, `admin:${auth.admin}`, body.checks ? { checks: body.checks } : {});
          await auditWrite(auth, request, 'ordb.submit', body.ip, r.ok ? { status: r.status, ...(body.checks ? { checks: body.checks } : {}) } : { refused: r.code });
          if (!r.ok) throw refusal(r, false);
          if (body.testNow && r.status !== 'already-listed') void retestNow(o, body.ip);
          return { status: r.status, testing: running.has(body.ip), listing: r.listing ? entryJson(o, r.listing, false) : null };
        },
      },
      {
        method: 'POST', url: '/api/ordb/retest', summary: 'Retest a listed or pending address now (no rate limit). wait: answer when the test is done, with its outcome.',
        body: z.strictObject({ ip: ipField, wait: boolish.default(false) }),
        handler: async ({ body, auth, request }) => {
          const o = need();
          const r = o.workflow.scheduleRetest(body.ip, `admin:${auth.admin}`);
          await auditWrite(auth, request, 'ordb.retest', body.ip, r.ok ? { status: r.status } : { refused: r.code });
          if (!r.ok) throw refusal(r, o.store.get(body.ip) === null);
          const p = retestNow(o, body.ip);
          if (!body.wait) return { status: 'testing', listing: entryJson(o, r.listing, false) };
          const outcome = await p;
          const now = o.store.get(body.ip);
          return { status: 'done', outcome, listing: now ? entryJson(o, now, true) : null };
        },
      },
      {
        method: 'POST', url: '/api/ordb/delist', summary: 'Take an entry (address or network) off the list; it stays in the store with its history.',
        body: z.strictObject({ network: networkField, reason: reasonField }),
        handler: async ({ body, auth, request }) => {
          const o = need();
          const cur = storeCall('network', () => o.store.get(body.network));
          if (cur === null) throw new WebError(404, 'ERR_ORDB_NOT_FOUND', `${body.network} is not in the ORDB`);
          if (cur.state === 'excluded') throw new WebError(409, 'ERR_ORDB_EXCLUDED', `${cur.network} is excluded, not listed: lift the exclusion with /api/ordb/unexclude`);
          const l = storeCall('network', () => o.store.delist(cur.network, { detail: `delisted by ${auth.actor}${body.reason ? `: ${body.reason}` : ''}` }));
          o.rebuild();
          await auditWrite(auth, request, 'ordb.delist', l.network, { before: cur.state, reason: body.reason ?? null });
          return entryJson(o, l, false);
        },
      },
      {
        method: 'POST', url: '/api/ordb/exclude', summary: 'Exclude an address or network: never tested, never listed (wins over any listing inside it).',
        body: z.strictObject({ network: networkField, reason: reasonField }),
        handler: async ({ body, auth, request }) => {
          const o = need();
          const before = storeCall('network', () => o.store.get(body.network));
          const l = storeCall('network', () => o.store.exclude(body.network, { reason: body.reason ?? null, detail: `excluded by ${auth.actor}` }));
          o.rebuild();
          await auditWrite(auth, request, 'ordb.exclude', l.network, { before: before?.state ?? null, reason: body.reason ?? null });
          return entryJson(o, l, false);
        },
      },
      {
        method: 'POST', url: '/api/ordb/unexclude', summary: 'Lift an exclusion made here or with the CLI (the entry becomes delisted; not for dnsbl.excluded networks).',
        body: z.strictObject({ network: networkField }),
        handler: async ({ body, auth, request }) => {
          const o = need();
          const cur = storeCall('network', () => o.store.get(body.network));
          if (cur === null) throw new WebError(404, 'ERR_ORDB_NOT_FOUND', `${body.network} is not in the ORDB`);
          if (cur.state !== 'excluded') throw new WebError(409, 'ERR_ORDB_NOT_EXCLUDED', `${cur.network} is ${cur.state}, not excluded`);
          if (o.configExcluded.some((n) => storeCall('network', () => o.store.get(n))?.network === cur.network)) {
            throw new WebError(409, 'ERR_ORDB_CONFIG_EXCLUDED', `${cur.network} is excluded by the configuration (dnsbl.excluded): remove it there`);
          }
          const l = o.store.delist(cur.network, { detail: `exclusion lifted by ${auth.actor}` });
          o.rebuild();
          await auditWrite(auth, request, 'ordb.unexclude', l.network, {});
          return entryJson(o, l, false);
        },
      },
    ];
  };

  const pages = (ctx: WebContext): PageRoute[] => [
    {
      method: 'GET', url: '/ordb',
      query: z.object({
        state: z.union([z.enum(STATES as [ListingState, ...ListingState[]]), z.literal('')]).optional(),
        category: z.string().max(32).optional(),
        offset: z.coerce.number().int().min(0).max(1_000_000).default(0),
        msg: z.string().max(300).optional(),
      }),
      handler: async ({ query, auth, reply }) => {
        const o = options.ordb();
        if (o === null) return unavailablePage(ctx, auth, reply);
        const limit = 100;
        const category = query.category && Object.hasOwn(options.categories, query.category) ? query.category : '';
        const rows = o.store.list({ ...(query.state ? { state: query.state } : {}), ...(category ? { category: category as Listing['category'] } : {}), limit: limit + 1, offset: query.offset });
        const views = rows.slice(0, limit).map((l) => listingView(l, o.store.history(l.network)));
        return new Markup(ctx.page(`ORDB ${o.zone}`, adminListBody({
          zone: o.zone, counts: Object.fromEntries(STATES.map((s) => [s, o.store.count(s)])), rows: views,
          filter: { state: query.state ?? '', category, ip: '' }, states: STATES, categories: Object.keys(options.categories),
          offset: query.offset, limit, more: rows.length > limit, csrf: auth.session?.csrf ?? '', message: query.msg ?? null,
        }), auth));
      },
    },
    {
      method: 'GET', url: '/ordb/entry',
      query: z.object({ network: networkField, msg: z.string().max(300).optional() }),
      handler: async ({ query, auth, reply }) => {
        const o = options.ordb();
        if (o === null) return unavailablePage(ctx, auth, reply);
        const l = o.store.get(query.network);
        if (l === null) {
          // An address inside a listed or excluded network: show the deciding entry.
          const ip = canonicalIp(query.network);
          const covering = ip ? o.store.lookup(ip).effective : null;
          if (covering) return { redirect: `/ordb/entry?network=${encodeURIComponent(covering.network)}` };
          return { redirect: `/ordb?msg=${encodeURIComponent(`${query.network} is not in the ORDB`)}` };
        }
        const history = o.store.history(l.network);
        return new Markup(ctx.page(`ORDB ${l.network}`, adminEntryBody({
          zone: o.zone, listing: listingView(l, history), evidence: evidenceView(l), history, csrf: auth.session?.csrf ?? '',
          message: query.msg ?? null, evidenceUrl: options.evidenceUrl && !l.network.includes('/') ? options.evidenceUrl.replace('$', encodeURIComponent(l.network)) : null,
        }), auth));
      },
    },
    {
      method: 'POST', url: '/ordb/action',
      body: z.object({ action: z.enum(['submit', 'retest', 'delist', 'exclude', 'unexclude']), network: networkField, reason: reasonField }),
      handler: async ({ body, auth, request }) => {
        const o = need();
        const back = (network: string, msg: string | null): { redirect: string } => ({ redirect: `/ordb/entry?network=${encodeURIComponent(network)}${msg ? `&msg=${encodeURIComponent(msg)}` : ''}` });
        const single = canonicalIp(body.network);
        try {
          switch (body.action) {
            case 'submit': {
              if (single === null) return { redirect: `/ordb?msg=${encodeURIComponent('Submit single addresses (a network can be listed with the CLI)')}` };
              const r = o.workflow.submit(single, `admin:${auth.admin}`);
              await ctx.audit(auth, request, 'ordb.submit', single, r.ok ? { status: r.status } : { refused: r.code });
              if (!r.ok) return { redirect: `/ordb?msg=${encodeURIComponent(r.message)}` };
              if (r.status === 'queued') void retestNow(o, single);
              return back(single, r.status === 'queued' ? 'Submitted: the test is running' : `Not submitted: ${r.status}`);
            }
            case 'retest': {
              if (single === null) return back(body.network, 'Only single addresses are retested');
              const r = o.workflow.scheduleRetest(single, `admin:${auth.admin}`);
              await ctx.audit(auth, request, 'ordb.retest', single, r.ok ? { status: r.status } : { refused: r.code });
              if (!r.ok) return back(single, r.message);
              void retestNow(o, single);
              return back(single, 'Retest started: reload this page in a moment');
            }
            case 'delist': {
              const cur = storeCall('network', () => o.store.get(body.network));
              if (cur === null || cur.state === 'excluded') return back(body.network, cur === null ? 'Not in the ORDB' : 'Excluded, not listed');
              const l = o.store.delist(cur.network, { detail: `delisted by ${auth.actor}${body.reason ? `: ${body.reason}` : ''}` });
              o.rebuild();
              await ctx.audit(auth, request, 'ordb.delist', l.network, { before: cur.state, reason: body.reason ?? null });
              return back(l.network, 'Delisted');
            }
            case 'exclude': {
              const l = storeCall('network', () => o.store.exclude(body.network, { reason: body.reason ?? null, detail: `excluded by ${auth.actor}` }));
              o.rebuild();
              await ctx.audit(auth, request, 'ordb.exclude', l.network, { reason: body.reason ?? null });
              return back(l.network, 'Excluded');
            }
            case 'unexclude': {
              const cur = storeCall('network', () => o.store.get(body.network));
              if (cur === null || cur.state !== 'excluded') return back(body.network, 'Not excluded');
              if (o.configExcluded.some((n) => o.store.get(n)?.network === cur.network)) return back(cur.network, 'Excluded by the configuration (dnsbl.excluded): remove it there');
              const l = o.store.delist(cur.network, { detail: `exclusion lifted by ${auth.actor}` });
              o.rebuild();
              await ctx.audit(auth, request, 'ordb.unexclude', l.network, {});
              return back(l.network, 'Exclusion lifted');
            }
          }
        } catch (err) {
          if (err instanceof WebError && err.status < 500) return back(body.network, err.message);
          throw err;
        }
        return back(body.network, null);
      },
    },
  ];

  const publicRoutes = (ctx: WebContext): PublicRoute[] => {
    log = ctx.logger;
    const lookup = (json: boolean) => async (request: FastifyRequest, reply: FastifyReply): Promise<unknown> => {
      const raw = (request.query as Record<string, unknown> | undefined)?.['ip'];
      const o = options.ordb();
      if (o === null) return publicError(reply, 503, 'ERR_ORDB_UNAVAILABLE', 'The ORDB does not run on this node', json, ctx);
      if (raw === undefined || raw === '') {
        if (json) return publicError(reply, 400, 'ERR_WEB_BAD_INPUT', 'query field "ip": required', true, ctx);
        return reply.type('text/html').send(ctx.publicPage(`${o.zone} lookup`, html`${lookupForm('')}<p><a href="/dnsbl/policy">How ${o.zone} works</a></p>`));
      }
      const ip = typeof raw === 'string' && raw.length <= 64 ? canonicalIp(raw.trim()) : null;
      if (ip === null) return publicError(reply, 400, 'ERR_WEB_BAD_INPUT', 'query field "ip": not an IP address', json, ctx, json ? '' : lookupForm(typeof raw === 'string' ? raw.slice(0, 64) : ''));
      const gate = lookups.take(clientKey(request.socket.remoteAddress), ctx.now());
      if (!gate.ok) return tooMany(reply, gate.retryAfterMs, 'lookups from your address', json, ctx);
      const entry = publicEntry(o, ip);
      const history = entry ? o.store.history(entry.network) : [];
      const view = entry ? listingView(entry, history) : null;
      const evidence = entry && (entry.state === 'listed' || entry.state === 'delisted') ? evidenceView(entry) : null;
      const retestable = entry !== null && entry.state === 'listed' && entry.network === ip && entry.category === 'open-relay';
      if (json) {
        return reply.send({
          address: ip, zone: o.zone, query: `${reverse(ip)}.${o.zone}`, listed: view?.status === 'listed',
          listing: view && view.status !== 'not-listed' ? view : null,
          evidence: evidence === null ? null : { ...evidence, report: (entry!.evidence as { report?: unknown } | null)?.report ?? null },
          history: view && view.status !== 'not-listed' ? history.map(historyJson) : [],
          delisting: retestable ? { method: 'POST', url: '/dnsbl/delist', fields: ['ip', '_csrf'] } : null,
        });
      }
      return reply.type('text/html').send(ctx.publicPage(`${ip} in ${o.zone}`, publicLookupBody({
        zone: o.zone, ip, listing: view, evidence, history, categories: options.categories, csrf: retestable ? formToken(request, reply) : null,
      })));
    };

    const status = (json: boolean) => async (request: FastifyRequest, reply: FastifyReply): Promise<unknown> => {
      const q = (request.query ?? {}) as Record<string, unknown>;
      const o = options.ordb();
      if (o === null) return publicError(reply, 503, 'ERR_ORDB_UNAVAILABLE', 'The ORDB does not run on this node', json, ctx);
      const ip = typeof q['ip'] === 'string' && q['ip'].length <= 64 ? canonicalIp(q['ip']) : null;
      if (ip === null) return publicError(reply, 400, 'ERR_WEB_BAD_INPUT', 'query field "ip": not an IP address', json, ctx);
      const at = typeof q['at'] === 'string' && /^\d{1,15}$/.test(q['at']) ? Number(q['at']) : null;
      if (at === null) return publicError(reply, 400, 'ERR_WEB_BAD_INPUT', 'query field "at": epoch milliseconds', json, ctx);
      const l = o.store.get(ip);
      if (l === null || l.state === 'pending' || l.state === 'excluded') return publicError(reply, 404, 'ERR_ORDB_NOT_FOUND', `${ip} is not listed`, json, ctx);
      const events = o.store.history(ip).filter((h) => h.at >= at);
      const done = l.lastTested !== null && l.lastTested >= at && !running.has(ip);
      const phase = done ? 'done' : running.has(ip) ? 'testing' : 'waiting';
      const view = listingView(l, o.store.history(ip));
      const evidence: EvidenceView | null = done ? evidenceView(l) : null;
      if (!done) void reply.header('refresh', '5');
      if (json) return reply.send({ address: ip, requestedAt: new Date(at).toISOString(), phase, listed: view.status === 'listed', listing: view, evidence, history: events.map(historyJson) });
      return reply.type('text/html').send(ctx.publicPage(`Delisting ${ip}`, delistStatusBody({ ip, zone: o.zone, requestedAt: at, phase, listing: view, evidence, events })));
    };

    return [
      { method: 'GET', url: '/dnsbl/lookup', summary: 'Public lookup page', handler: lookup(false) },
      { method: 'GET', url: '/dnsbl/lookup.json', summary: 'Public lookup (JSON)', handler: lookup(true) },
      { method: 'GET', url: '/dnsbl/delist/status', summary: 'Delisting request status page', handler: status(false) },
      { method: 'GET', url: '/dnsbl/delist/status.json', summary: 'Delisting request status (JSON)', handler: status(true) },
      {
        method: 'POST', url: '/dnsbl/delist', summary: 'Delisting request: retest of a listed address',
        handler: async (request, reply) => {
          const body = (typeof request.body === 'object' && request.body !== null ? request.body : {}) as Record<string, unknown>;
          const json = !String(request.headers['content-type'] ?? '').startsWith('application/x-www-form-urlencoded');
          const o = options.ordb();
          if (o === null) return publicError(reply, 503, 'ERR_ORDB_UNAVAILABLE', 'The ORDB does not run on this node', json, ctx);
          const token = typeof body['_csrf'] === 'string' ? body['_csrf'] : undefined;
          if (!sameToken(token, request.cookies?.[ORDB_CSRF_COOKIE])) {
            return publicError(reply, 403, 'ERR_WEB_CSRF', 'Missing or wrong form token: open the lookup page and use its button', json, ctx);
          }
          const ip = typeof body['ip'] === 'string' && body['ip'].length <= 64 ? canonicalIp(body['ip'].trim()) : null;
          if (ip === null) return publicError(reply, 400, 'ERR_WEB_BAD_INPUT', 'body field "ip": not an IP address', json, ctx);
          const client = clientKey(request.socket.remoteAddress);
          const now = ctx.now();
          const byClient = perClient.check(client, now);
          if (!byClient.ok) return tooMany(reply, byClient.retryAfterMs, 'delisting requests from your address', json, ctx);
          // Only a listed single address of the tester's category is ever tested from here.
          const l = o.store.get(ip);
          const answer = o.store.lookup(ip);
          if (l === null || l.state !== 'listed' || !answer.listed || answer.effective?.network !== ip || l.category !== 'open-relay') {
            perClient.take(client, now);
            return publicError(reply, l === null && !answer.listed ? 404 : 409, 'ERR_ORDB_NOT_LISTED',
              answer.listed ? `${ip} is listed as part of ${answer.effective!.network} (or not as an open relay): it cannot be retested from here` : `${ip} is not listed: there is nothing to delist`, json, ctx);
          }
          const byAddress = perAddress.check(ip, now);
          if (!byAddress.ok) return tooMany(reply, byAddress.retryAfterMs, `delisting requests for ${ip}`, json, ctx);
          if (running.has(ip)) {
            return reply.redirect(`/dnsbl/delist/status?ip=${encodeURIComponent(ip)}&at=${now}`, 303);
          }
          const r = o.workflow.requestDelisting(ip, `web:${client}`);
          if (!r.ok) {
            const status = r.code === 'ERR_DNSBL_RATE_LIMIT' ? 429 : 409;
            if (status === 429) return tooMany(reply, r.retryAfterMs ?? HOUR, 'delisting requests from your address', json, ctx);
            return publicError(reply, status, r.code, r.message, json, ctx);
          }
          perClient.take(client, now);
          perAddress.take(ip, now);
          ctx.logger.info('ordb delisting requested', { ip, client_ip: request.socket.remoteAddress ?? null });
          void retestNow(o, ip);
          const url = `/dnsbl/delist/status?ip=${encodeURIComponent(ip)}&at=${now}`;
          return json ? reply.code(202).header('location', url).send({ status: 'testing', address: ip, statusUrl: url }) : reply.redirect(url, 303);
        },
      },
      {
        method: 'GET', url: '/dnsbl/policy', summary: 'Policy of the zone',
        handler: async (_request, reply) => {
          const o = options.ordb();
          if (o === null) return publicError(reply, 503, 'ERR_ORDB_UNAVAILABLE', 'The ORDB does not run on this node', false, ctx);
          return reply.type('text/html').send(ctx.publicPage(`Policy of ${o.zone}`, policyBody({
            zone: o.zone, ttlSeconds: o.ttlSeconds, retestIntervalMs: o.retestIntervalMs, proofMode: o.proofMode, categories: options.categories, limits: options.limits,
          })));
        },
      },
    ];
  };

  return {
    name: 'ordb',
    nav: [{ href: '/ordb', label: 'ORDB' }],
    api,
    pages,
    publicRoutes,
    async close() {
      // Running retests finish (or are aborted by the ORDB's own stop); nothing to wait for here.
    },
  };
}

function unavailablePage(ctx: WebContext, auth: Auth, reply: FastifyReply): Markup {
  void reply.code(503);
  return new Markup(ctx.page('ORDB', html`<p class="error" role="alert">The ORDB does not run on this node (dnsbl.enabled is false, or this is not worker 0).</p>`, auth));
}
