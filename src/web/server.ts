/**
 * The web service of one node: fastify apps on the admin listener (dashboard, /api, /metrics, /health) and, when
 * configured, the public listener (/health). Reads and changes the relay only through the ports it is handed
 * (queue, admin store, health checks); never speaks SMTP.
 *
 * Authentication on the admin listener (every route but /health, /login and /assets): a session cookie from the
 * login form, or `Authorization: Bearer rgt_...` (an API token). A state-changing request made with the cookie
 * must carry the session's CSRF token (403 ERR_WEB_CSRF otherwise). Failed logins and bad tokens are counted per
 * client address (policy/auth-throttle.ts); past web.loginFailuresPerIp within the window: 429 with Retry-After.
 * Every change is written to the audit log (who, what, when, from where) before the answer.
 * Errors: JSON {error: {code, message}} with a 4xx status (400 names the field; 404 unknown path; 405 with Allow for
 * a known path asked with another method, on both listeners; 413 body too large).
 */
import fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';
import cookie from '@fastify/cookie';
import formbody from '@fastify/formbody';
import { z } from 'zod';
import { RelayguardError } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import { AuthThrottle } from '../policy/auth-throttle.ts';
import type { AdminAccounts } from '../policy/admin-accounts.ts';
import type { DecisionStore } from '../policy/decisions.ts';
import type { AdminResult, AdminTarget, ListFilter, NodeDetail, NodeSummary, QueueCounts } from '../queue/index.ts';
import { decisionFilter, decisionJson, decisionQuery, explain, whyQuery } from './decision-query.ts';
import { CSS, FAVICON, dashboardPage, loginPage, page as renderPage, publicPage } from './html.ts';
import type { ApiRoute, Auth, NavEntry, PageRoute, PublicRoute, WebContext, WebModule } from './module.ts';
import type { RelayMetrics } from './metrics.ts';
import * as schemas from './api-schemas.ts';
import { LOGIN_CSRF_COOKIE, SESSION_COOKIE, SessionStore, randomToken, sameToken } from './sessions.ts';

/** What the web service may do to the queue (MailQueue satisfies it; with shards, the CLI's sharded view). */
export interface QueueAccess {
  list(filter: ListFilter): Promise<readonly NodeSummary[]>;
  /** Messages by state and the oldest of each (MailQueue.counts: one aggregate query). */
  counts(): Promise<QueueCounts>;
  get(queueId: string): Promise<NodeDetail | null>;
  hold(target: AdminTarget): Promise<AdminResult>;
  release(target: AdminTarget): Promise<AdminResult>;
  retry(target: AdminTarget): Promise<AdminResult>;
  delete(target: AdminTarget): Promise<AdminResult>;
  flush(): Promise<AdminResult>;
}

export interface WebOptions {
  readonly node: string;
  readonly logger: Logger;
  readonly metrics: RelayMetrics;
  readonly admins: AdminAccounts;
  readonly queue: QueueAccess;
  /** The relay-decision log (policy/decisions.ts); null or absent: /api/decisions answers 503 ERR_DECISIONS_UNAVAILABLE. */
  readonly decisions?: DecisionStore | null;
  /** Named readiness checks (queue store, directory, listeners): each resolves when healthy, rejects otherwise. */
  readonly checks: Readonly<Record<string, () => Promise<void> | void>>;
  readonly admin: { readonly address: string; readonly port: number };
  readonly public: { readonly address: string; readonly port: number } | null;
  readonly tls: { readonly cert: string; readonly key: string } | null;
  readonly sessionLifetimeMs: number;
  readonly loginFailuresPerIp: number;
  readonly loginFailureWindowMs: number;
  readonly now?: () => number;
  /** Per health check. Default 2000 ms. */
  readonly checkTimeoutMs?: number;
  /** The parts that add API routes, pages and public routes (module.ts): ORDB, tester, directory, ... */
  readonly modules?: readonly WebModule[];
}

export interface RunningWeb {
  readonly admin: { readonly address: string; readonly port: number };
  readonly public: { readonly address: string; readonly port: number } | null;
  /** Every route of the admin listener as fastify registered it (HEAD included): public or not, page or not. */
  readonly routes: readonly RouteInfo[];
  close(): Promise<void>;
}

interface RouteEntry {
  readonly method: string;
  readonly url: string;
}

/** A route of the admin listener (RunningWeb.routes, GET /api/routes). */
export interface RouteInfo extends RouteEntry {
  /** Served without login (/health, /login, assets, modules' public routes). */
  readonly public: boolean;
  /** An HTML page: an anonymous request is redirected (303) to /login rather than answered 401. */
  readonly page: boolean;
}

export class WebError extends RelayguardError {
  readonly status: number;
  constructor(status: number, code: string, message: string) {
    super(code, message);
    this.status = status;
  }
}


const SECURITY_HEADERS = {
  'content-security-policy': "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
};

/** The admin listener's routes that need no authentication (modules' public routes are added to it). */
const BASE_PUBLIC_ROUTES = ['/health', '/login', '/assets/app.css', '/assets/favicon.svg'];

const QUEUE_ID = z.string().regex(/^[0-9A-Za-z]{6,40}$/, 'a queue id');
const ACTIONS = ['hold', 'release', 'retry', 'delete'] as const;
/** Paging reads offset+limit rows from the queue; past this, narrow the filter instead. */
const MAX_WINDOW = 10_000;

export async function startWeb(o: WebOptions): Promise<RunningWeb> {
  const now = o.now ?? Date.now;
  const sessions = new SessionStore({ lifetimeMs: o.sessionLifetimeMs, now });
  const throttle = new AuthThrottle({ maxFailures: o.loginFailuresPerIp, windowMs: o.loginFailureWindowMs, clock: { now } });
  const secure = o.tls !== null;
  const log = o.logger;
  const modules = o.modules ?? [];
  const nav: NavEntry[] = [{ href: '/', label: 'Overview' }, ...modules.flatMap((m) => m.nav ?? [])];
  const PUBLIC_ROUTES = new Set(BASE_PUBLIC_ROUTES);

  const health = async (): Promise<{ status: number; body: unknown }> => {
    const results = await Promise.all(Object.entries(o.checks).map(async ([name, check]) => {
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          Promise.resolve().then(check),
          new Promise((_, reject) => { timer = setTimeout(() => reject(new Error('timed out')), o.checkTimeoutMs ?? 2000); }),
        ]);
        return [name, { ok: true }] as const;
      } catch (err) {
        return [name, { ok: false, error: String((err as Error)?.message ?? err).slice(0, 200), code: (err as { code?: unknown })?.code ?? null }] as const;
      } finally {
        clearTimeout(timer);
      }
    }));
    const healthy = results.every(([, r]) => r.ok);
    return { status: healthy ? 200 : 503, body: { status: healthy ? 'ok' : 'unavailable', node: o.node, checks: Object.fromEntries(results) } };
  };

  const audit = async (auth: Auth, request: FastifyRequest, action: string, target: string | null, detail: unknown): Promise<void> => {
    const entry = { at: now(), actor: auth.actor, action, target, detail: detail === undefined ? null : JSON.stringify(detail).slice(0, 2000), clientIp: request.socket.remoteAddress ?? null };
    await o.admins.store.appendAudit(entry);
    log.info('admin action', { actor: entry.actor, action, target, client_ip: entry.clientIp });
  };

  const ctx: WebContext = {
    node: o.node, logger: log, metrics: o.metrics, now,
    audit: (auth, request, action, target, detail) => audit(auth, request, action, target, detail),
    page: (title, body, auth) => renderPage(title, body, { admin: auth.admin, csrf: auth.session?.csrf ?? '' }, nav),
    publicPage: (title, body) => publicPage(title, body),
  };
  const publicRoutes: PublicRoute[] = modules.flatMap((m) => [...(m.publicRoutes?.(ctx) ?? [])]);
  for (const m of modules) {
    for (const a of m.assets?.() ?? []) {
      if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(a.name)) throw new Error(`web module ${m.name}: bad asset name ${a.name}`);
      publicRoutes.push({
        method: 'GET', url: `/assets/${a.name}`, summary: `asset ${a.name}`,
        handler: async (_req, reply) => reply.header('cache-control', 'max-age=300').type(a.type).send(a.body),
      });
    }
  }
  for (const r of publicRoutes) PUBLIC_ROUTES.add(r.url);

  /** Registers the handlers both listeners share; returns the listener's routes as its router has them (filled as
   *  routes are added). A known path asked with another method: 405 with Allow; an unknown path: 404. */
  const common = (app: FastifyInstance): RouteEntry[] => {
    const known: RouteEntry[] = [];
    app.addHook('onRoute', (r) => {
      for (const method of [r.method].flat()) known.push({ method, url: r.url });
    });
    app.addHook('onSend', async (_req, reply, payload) => {
      for (const [k, v] of Object.entries(SECURITY_HEADERS)) reply.header(k, v);
      if (!reply.hasHeader('cache-control')) reply.header('cache-control', 'no-store');
      return payload;
    });
    app.setNotFoundHandler((req, reply) => {
      const path = req.url.split('?')[0]!;
      const allow = allowedMethods(known, path);
      if (allow.length > 0) {
        void reply.code(405).header('allow', allow.join(', ')).send({
          error: { code: 'ERR_WEB_METHOD_NOT_ALLOWED', message: `${req.method} is not allowed on ${path.slice(0, 200)} (allowed: ${allow.join(', ')})` },
        });
        return;
      }
      void reply.code(404).send({ error: { code: 'ERR_WEB_NOT_FOUND', message: `No route ${req.method} ${path.slice(0, 200)}` } });
    });
    app.setErrorHandler((err: unknown, _req, reply) => {
      if (err instanceof WebError) return reply.code(err.status).send({ error: { code: err.code, message: err.message } });
      const e = err as { statusCode?: number; code?: string; message?: string };
      if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) {
        return reply.code(e.statusCode).send({ error: { code: e.statusCode === 413 ? 'ERR_WEB_TOO_LARGE' : 'ERR_WEB_BAD_REQUEST', message: String(e.message ?? 'bad request') } });
      }
      const code = typeof e.code === 'string' && e.code.startsWith('ERR_') ? e.code : 'ERR_WEB_INTERNAL';
      log.error('web request failed', { err_code: code, err: String(e.message ?? err) });
      return reply.code(code === 'ERR_STORE_UNAVAILABLE' ? 503 : 500).send({ error: { code, message: 'internal error' } });
    });
    // The stylesheet and icon of every page, the public ones (publicPage) included.
    app.get('/assets/app.css', async (_req, reply) => reply.header('cache-control', 'max-age=3600').type('text/css').send(CSS));
    app.get('/assets/favicon.svg', async (_req, reply) => reply.header('cache-control', 'max-age=86400').type('image/svg+xml').send(FAVICON));
    app.get('/health', async (_req, reply) => {
      const h = await health();
      return reply.code(h.status).send(h.body);
    });
    for (const r of publicRoutes) app.route({ method: r.method, url: r.url, handler: (req, reply) => r.handler(req, reply) });
    return known;
  };

  // --- admin listener -------------------------------------------------------------------------------------------
  const admin = fastify({ logger: false, bodyLimit: 64 * 1024, ...(o.tls ? { https: { cert: o.tls.cert, key: o.tls.key } } : {}) });
  await admin.register(cookie);
  await admin.register(formbody, { bodyLimit: 16 * 1024 });
  // Every route as the router has it (tests check that each non-public one refuses an anonymous request).
  const adminRoutes = common(admin);
  /** HTML pages (GET): an anonymous request is sent to the login form instead of a 401. */
  const PAGE_URLS = new Set(['/']);
  const routeList = (): RouteInfo[] => adminRoutes.map((r) => ({
    ...r, public: PUBLIC_ROUTES.has(r.url), page: (r.method === 'GET' || r.method === 'HEAD') && PAGE_URLS.has(r.url),
  }));
  const clientIp = (req: FastifyRequest): string => req.socket.remoteAddress ?? 'unknown';

  const throttled = (req: FastifyRequest): void => {
    const gate = throttle.check(clientIp(req));
    if (!gate.allowed) {
      o.metrics.login('throttled');
      const err = new WebError(429, 'ERR_WEB_THROTTLED', `Too many failed logins from this address; try again in ${Math.ceil(gate.retryAfterMs / 1000)} s`);
      (err as WebError & { retryAfter?: number }).retryAfter = Math.ceil(gate.retryAfterMs / 1000);
      throw err;
    }
  };

  /** Who is asking, or null. A bad bearer token counts as a failed login. */
  const authenticate = async (req: FastifyRequest): Promise<Auth | null> => {
    const h = req.headers.authorization;
    if (h !== undefined) {
      throttled(req);
      const m = /^Bearer (\S+)$/.exec(h);
      const owner = m ? await o.admins.authenticateToken(m[1]!) : null;
      if (owner === null) {
        throttle.recordFailure(clientIp(req));
        o.metrics.login('failure');
        log.warn('web token refused', { client_ip: clientIp(req) });
        return null;
      }
      return { admin: owner.admin, actor: `${owner.admin} (token ${owner.name})`, session: null };
    }
    const s = sessions.get(req.cookies[SESSION_COOKIE]);
    if (s === null) return null;
    if ((await o.admins.store.passwordHash(s.admin)) !== s.stamp) {
      sessions.delete(s.id); // password changed or admin removed since the login
      return null;
    }
    return { admin: s.admin, actor: s.admin, session: s };
  };

  const requireAuth = async (req: FastifyRequest, write: boolean): Promise<Auth> => {
    const auth = await authenticate(req);
    if (auth === null) throw new WebError(401, 'ERR_WEB_UNAUTHENTICATED', 'Log in or send Authorization: Bearer <token>');
    if (write && auth.session !== null) {
      const sent = (req.headers['x-csrf-token'] as string | undefined) ?? ((req.body as Record<string, unknown> | undefined)?.['_csrf'] as string | undefined);
      if (!sameToken(sent, auth.session.csrf)) throw new WebError(403, 'ERR_WEB_CSRF', 'Missing or wrong CSRF token');
    }
    return auth;
  };

  admin.addHook('onError', async (_req, reply, err) => {
    const r = (err as { retryAfter?: number }).retryAfter;
    if (r !== undefined) reply.header('retry-after', String(r));
  });



  admin.get('/login', async (_req, reply) => {
    const csrf = randomToken();
    void reply.setCookie(LOGIN_CSRF_COOKIE, csrf, { httpOnly: true, sameSite: 'strict', secure, path: '/login' });
    return reply.type('text/html').send(loginPage(csrf, null));
  });

  admin.post('/login', async (req, reply) => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    if (!sameToken(typeof body['_csrf'] === 'string' ? body['_csrf'] : undefined, req.cookies[LOGIN_CSRF_COOKIE])) {
      throw new WebError(403, 'ERR_WEB_CSRF', 'Missing or wrong CSRF token (reload the login page)');
    }
    const name = typeof body['name'] === 'string' ? body['name'] : '';
    const password = typeof body['password'] === 'string' ? body['password'] : '';
    const ip = clientIp(req);
    if (!throttle.acquire(ip).allowed) throttled(req); // throws 429
    const who = await o.admins.verify(name, password);
    if (who === null) {
      throttle.recordFailure(ip);
      o.metrics.login('failure');
      log.warn('web login failed', { client: `[${ip}]`, client_ip: ip, admin: name.slice(0, 64) });
      const csrf = randomToken();
      void reply.setCookie(LOGIN_CSRF_COOKIE, csrf, { httpOnly: true, sameSite: 'strict', secure, path: '/login' });
      return reply.code(401).type('text/html').send(loginPage(csrf, 'Wrong name or password'));
    }
    throttle.recordSuccess(ip);
    o.metrics.login('success');
    const s = sessions.create(who, (await o.admins.store.passwordHash(who)) ?? '');
    await audit({ admin: who, actor: who, session: s }, req, 'admin.login', null, undefined);
    void reply.clearCookie(LOGIN_CSRF_COOKIE, { path: '/login' });
    void reply.setCookie(SESSION_COOKIE, s.id, { httpOnly: true, sameSite: 'strict', secure, path: '/', maxAge: Math.floor(sessions.lifetimeMs / 1000) });
    return reply.redirect('/', 303);
  });

  admin.post('/logout', async (req, reply) => {
    const auth = await requireAuth(req, true);
    if (auth.session) sessions.delete(auth.session.id);
    await audit(auth, req, 'admin.logout', null, undefined);
    void reply.clearCookie(SESSION_COOKIE, { path: '/' });
    return reply.redirect('/login', 303);
  });

  /** Messages by state (the dashboard's cards and /api/queue/summary's counts). */
  const queueCounts = async (): Promise<Record<string, number>> => {
    const c = await o.queue.counts();
    return Object.fromEntries(Object.entries(c).map(([state, n]) => [state, n.messages]));
  };

  admin.get('/', async (req, reply) => {
    const auth = await authenticate(req);
    if (auth === null) return reply.redirect('/login', 303);
    const [counts, messages, auditLog, refusals] = await Promise.all([
      queueCounts(), o.queue.list({ limit: 100 }), o.admins.store.auditLog({ limit: 50 }),
      // The page still renders when the decision log cannot answer (the table is left out).
      o.decisions ? o.decisions.search({ action: 'reject', limit: 20 }).catch(() => null) : Promise.resolve(null),
    ]);
    return reply.type('text/html').send(dashboardPage({
      node: o.node, counts, messages, audit: auditLog, refusals, who: { admin: auth.admin, csrf: auth.session?.csrf ?? '' }, nav,
      charts: PUBLIC_ROUTES.has('/assets/overview.js'), // the overview module (overview.ts) serves the charts' script and data
    }));
  });

  admin.post('/queue/:id/:action', async (req, reply) => {
    await requireAuth(req, true).then(async (auth) => {
      const p = z.object({ id: QUEUE_ID, action: z.enum(ACTIONS) }).safeParse(req.params);
      if (!p.success) throw badInput(p.error, 'params');
      const result = await o.queue[p.data.action]({ queueIds: [p.data.id] });
      await audit(auth, req, `queue.${p.data.action}`, p.data.id, summarize(result));
    });
    return reply.redirect('/', 303);
  });

  admin.get('/metrics', async (req, reply) => {
    await requireAuth(req, false);
    return reply.type(o.metrics.contentType).send(await o.metrics.text());
  });

  // --- JSON API ---------------------------------------------------------------------------------------------------
  const listQuery = z.strictObject({
    state: z.enum(['queued', 'hold', 'corrupt', 'pending', 'deferred', 'delivered', 'bounced']).optional(),
    sender: z.string().max(320).optional(),
    domain: z.string().max(255).optional(),
    messageId: z.string().max(998).optional(),
    olderThanSeconds: z.coerce.number().int().min(0).optional(),
    limit: z.coerce.number().int().min(1).max(1000).default(100),
    offset: z.coerce.number().int().min(0).default(0),
    /** Keyset paging: the `next` of the previous page ("<receivedAt>.<queueId>"); costs the same at any depth. */
    after: z.string().regex(/^\d{1,15}\.[0-9A-Za-z]{6,40}$/, 'the `next` of the previous page').optional(),
  });
  const decisionStore = (): DecisionStore => {
    if (!o.decisions) throw new WebError(503, 'ERR_DECISIONS_UNAVAILABLE', 'The relay-decision log is not available on this node');
    return o.decisions;
  };
  const api: ApiRoute[] = [
    {
      method: 'GET', url: '/api/me', summary: 'Who the request is authenticated as.', response: schemas.me,
      handler: async ({ auth }) => ({ admin: auth.admin, actor: auth.actor, csrfToken: auth.session?.csrf ?? null, node: o.node }),
    },
    {
      method: 'GET', url: '/api/queue', summary: 'Queued messages, oldest first, with filters and paging.', query: listQuery, response: schemas.queueList,
      handler: async ({ query }) => {
        const q = query as z.infer<typeof listQuery>;
        if (q.offset + q.limit > MAX_WINDOW) throw new WebError(400, 'ERR_WEB_BAD_INPUT', `offset + limit must not exceed ${MAX_WINDOW}: narrow the filter, or page with after=<next>`);
        if (q.after !== undefined && q.offset > 0) throw new WebError(400, 'ERR_WEB_BAD_INPUT', 'query field "after": give after or offset, not both');
        const cut = q.after?.indexOf('.') ?? -1;
        const filter: ListFilter = {
          ...(q.state ? { state: q.state } : {}), ...(q.sender !== undefined ? { sender: q.sender } : {}),
          ...(q.domain ? { recipientDomain: q.domain } : {}), ...(q.messageId ? { messageId: q.messageId } : {}),
          ...(q.olderThanSeconds !== undefined ? { olderThanMs: q.olderThanSeconds * 1000 } : {}),
          ...(q.after !== undefined ? { after: { receivedAt: Number(q.after.slice(0, cut)), queueId: q.after.slice(cut + 1) } } : {}),
          limit: q.offset + q.limit + 1,
        };
        const rows = await o.queue.list(filter);
        const page = rows.slice(q.offset, q.offset + q.limit);
        const more = rows.length > q.offset + q.limit;
        const last = page.at(-1);
        return { node: o.node, offset: q.offset, limit: q.limit, more, next: more && last ? `${last.receivedAt}.${last.queueId}` : null, messages: page };
      },
    },
    {
      method: 'GET', url: '/api/queue/summary', summary: 'Message counts by state, and the oldest message of each state (received at, age).', response: schemas.queueSummary,
      handler: async () => {
        const states = await o.queue.counts();
        return { node: o.node, counts: Object.fromEntries(Object.entries(states).map(([state, n]) => [state, n.messages])), states };
      },
    },
    {
      method: 'GET', url: '/api/queue/:id', summary: 'One message with its recipients and their attempt history.', params: z.strictObject({ id: QUEUE_ID }), response: schemas.queueMessage,
      handler: async ({ params }) => {
        const d = await o.queue.get(params.id);
        if (d === null) throw new WebError(404, 'ERR_QUEUE_NOT_FOUND', `No message ${params.id} in the queue`);
        return d;
      },
    },
    {
      method: 'POST', url: '/api/queue/:id/:action', summary: 'Hold, release, retry or delete one message.', response: schemas.adminResult,
      params: z.strictObject({ id: QUEUE_ID, action: z.enum(ACTIONS) }),
      handler: async ({ params, auth, request }) => {
        const result = await o.queue[params.action as (typeof ACTIONS)[number]]({ queueIds: [params.id] });
        await audit(auth, request, `queue.${params.action}`, params.id, summarize(result));
        if (result.missing.length > 0) throw new WebError(404, 'ERR_QUEUE_NOT_FOUND', `No message ${params.id} in the queue`);
        return result;
      },
    },
    {
      method: 'POST', url: '/api/queue/flush', summary: 'Try every deferred message now.', response: schemas.adminResult,
      handler: async ({ auth, request }) => {
        const result = await o.queue.flush();
        await audit(auth, request, 'queue.flush', null, summarize(result));
        return result;
      },
    },
    {
      method: 'GET', url: '/api/decisions', summary: 'Relay decisions (one per recipient), newest first, with filters; page with before=<next of the previous page>.',
      query: decisionQuery, response: schemas.decisionList,
      handler: async ({ query }) => {
        const q = query as z.infer<typeof decisionQuery>;
        const rows = await decisionStore().search({ ...decisionFilter(q), ...(q.before !== undefined ? { before: q.before } : {}), limit: q.limit + 1 });
        const page = rows.slice(0, q.limit);
        return { node: o.node, decisions: page.map(decisionJson), next: rows.length > q.limit ? page.at(-1)!.id : null };
      },
    },
    {
      method: 'GET', url: '/api/decisions/why', summary: 'Why was this refused? The latest decisions for a client address, recipient and/or sender, with the rule, reason and reply of the refusals.',
      query: whyQuery, response: schemas.whyAnswer,
      handler: async ({ query }) => {
        const w = await explain(decisionStore(), query as z.infer<typeof whyQuery>);
        return { node: o.node, refused: w.refused, answer: w.answer, latest: w.latest ? decisionJson(w.latest) : null, refusals: w.refusals.map(decisionJson) };
      },
    },
    {
      method: 'GET', url: '/api/audit', summary: 'The audit log of admin actions, newest first.', response: schemas.auditList,
      query: z.strictObject({ limit: z.coerce.number().int().min(1).max(1000).default(100), before: z.coerce.number().int().min(1).optional() }),
      handler: async ({ query }) => ({ entries: await o.admins.store.auditLog({ limit: query.limit, beforeId: query.before }) }),
    },
    {
      method: 'GET', url: '/api/routes', summary: 'Every route of the admin listener as its router has it (HEAD included): public or not, HTML page or not.', response: schemas.routeList,
      handler: async () => ({ routes: routeList() }),
    },
    {
      method: 'GET', url: '/api/openapi.json', summary: 'This API as an OpenAPI 3.1 document.', response: schemas.openApi,
      handler: async () => openapi,
    },
  ];
  for (const m of modules) api.push(...(m.api?.(ctx) ?? []));
  // Static paths before parameterized ones of the same shape (fastify matches static segments first anyway).
  const parse = (schema: z.ZodType | undefined, value: unknown, where: string): unknown => {
    if (schema === undefined) return value;
    const p = schema.safeParse(value ?? {});
    if (!p.success) throw badInput(p.error, where);
    return p.data;
  };
  for (const r of api) {
    const write = r.method !== 'GET';
    admin.route({
      method: r.method,
      url: r.url,
      handler: async (req, reply) => {
        const auth = await requireAuth(req, write);
        const params = parse(r.params, req.params, 'path');
        const query = parse(r.query, req.query, 'query');
        const body = write && r.body !== undefined ? parse(r.body, req.body, 'body') : req.body;
        const result = await r.handler({ params, query, body, auth, request: req, reply });
        return r.raw ? reply : reply.send(result);
      },
    });
  }
  // Admin pages of the modules: HTML behind the login; a POST is a form action (CSRF in _csrf) that redirects.
  const pages: PageRoute[] = modules.flatMap((m) => [...(m.pages?.(ctx) ?? [])]);
  for (const r of pages) if (r.method === 'GET') PAGE_URLS.add(r.url);
  for (const r of pages) {
    admin.route({
      method: r.method,
      url: r.url,
      handler: async (req, reply) => {
        if (r.method === 'GET') {
          const a = await authenticate(req);
          if (a === null) return reply.redirect('/login', 303);
        }
        const auth = await requireAuth(req, r.method !== 'GET');
        const params = parse(r.params, req.params, 'path');
        const query = parse(r.query, req.query, 'query');
        const body = r.method !== 'GET' && r.body !== undefined ? parse(r.body, req.body, 'body') : req.body;
        const out = await r.handler({ params, query, body, auth, request: req, reply });
        if ('redirect' in out) return reply.redirect(out.redirect, 303);
        return reply.type('text/html').send(out.text);
      },
    });
  }
  const openapi = openApiDocument(api, o.node);

  // --- listen -----------------------------------------------------------------------------------------------------
  const started: FastifyInstance[] = [];
  let pub: FastifyInstance | null = null;
  try {
    await admin.listen({ host: o.admin.address, port: o.admin.port });
    started.push(admin);
    if (o.public) {
      pub = fastify({ logger: false, bodyLimit: 16 * 1024, ...(o.tls ? { https: { cert: o.tls.cert, key: o.tls.key } } : {}) });
      // Public forms (the ORDB delisting request) post urlencoded bodies and carry a double-submit CSRF cookie.
      await pub.register(cookie);
      await pub.register(formbody, { bodyLimit: 16 * 1024 });
      common(pub);
      await pub.listen({ host: o.public.address, port: o.public.port });
      started.push(pub);
    }
  } catch (err) {
    await Promise.all(started.map((a) => a.close()));
    await Promise.all(modules.map((m) => m.close?.()));
    throw err;
  }
  const portOf = (a: FastifyInstance): number => (a.server.address() as { port: number }).port;
  return {
    admin: { address: o.admin.address, port: portOf(admin) },
    public: pub && o.public ? { address: o.public.address, port: portOf(pub) } : null,
    routes: routeList(),
    async close() {
      await Promise.all(modules.map((m) => m.stop?.()));
      await Promise.all(started.map((a) => a.close()));
      await Promise.all(modules.map((m) => m.close?.()));
    },
  };
}

/** The methods a listener's routes answer on a path (fastify's `:param` and `*` patterns), sorted; [] for none. */
const patterns = new Map<string, RegExp>();
export function allowedMethods(routes: readonly RouteEntry[], path: string): string[] {
  const out = new Set<string>();
  for (const r of routes) {
    let re = patterns.get(r.url);
    if (re === undefined) {
      const src = r.url.split(/(:[A-Za-z0-9_]+|\*)/).map((part) => (part === '*' ? '.*' : part.startsWith(':') ? '[^/]+' : part.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))).join('');
      re = new RegExp(`^${src}$`);
      patterns.set(r.url, re);
    }
    if (re.test(path)) out.add(r.method);
  }
  return [...out].sort();
}

function badInput(error: z.ZodError, where: string): WebError {
  const issue = error.issues[0]!;
  const field = issue.path.length > 0 ? issue.path.join('.') : where;
  return new WebError(400, 'ERR_WEB_BAD_INPUT', `${where} field "${field}": ${issue.message}`);
}

function summarize(r: AdminResult): { changed: number; unchanged: number; missing: number } {
  return { changed: r.changed.length, unchanged: r.unchanged.length, missing: r.missing.length };
}

/** A 200 answer's schema: JSON Schema 2020-12 of the zod output type (the OpenAPI 3.1 dialect), without $schema. */
function responseSchema(schema: z.ZodType): unknown {
  const { $schema: _, ...rest } = z.toJSONSchema(schema, { io: 'output', unrepresentable: 'any' }) as Record<string, unknown>;
  return rest;
}

/** OpenAPI 3.1 from the route table (JSON Schema 2020-12 from the zod schemas). */
function openApiDocument(routes: readonly ApiRoute[], node: string): unknown {
  const paths: Record<string, Record<string, unknown>> = {};
  const error = { $ref: '#/components/schemas/Error' };
  for (const r of routes) {
    const path = r.url.replace(/:([A-Za-z]+)/g, '{$1}');
    const parameters: unknown[] = [];
    for (const [where, schema] of [['path', r.params], ['query', r.query]] as const) {
      if (!schema) continue;
      const js = z.toJSONSchema(schema as z.ZodType, { io: 'input', unrepresentable: 'any' }) as { properties?: Record<string, unknown>; required?: string[] };
      for (const [name, s] of Object.entries(js.properties ?? {})) {
        parameters.push({ name, in: where, required: where === 'path' || (js.required ?? []).includes(name), schema: s });
      }
    }
    (paths[path] ??= {})[r.method.toLowerCase()] = {
      summary: r.summary,
      operationId: `${r.method.toLowerCase()}${path.replace(/[^A-Za-z]+(.)?/g, (_m, c: string | undefined) => (c ?? '').toUpperCase())}`,
      ...(parameters.length > 0 ? { parameters } : {}),
      ...(r.body ? { requestBody: { required: true, content: { 'application/json': { schema: z.toJSONSchema(r.body, { io: 'input', unrepresentable: 'any' }) } } } } : {}),
      responses: {
        200: { description: 'OK', content: { [r.produces ?? 'application/json']: { schema: r.produces === 'text/event-stream' ? { type: 'string' } : r.response ? responseSchema(r.response) : { type: 'object' } } } },
        400: { description: 'Bad input', content: { 'application/json': { schema: error } } },
        401: { description: 'Not authenticated', content: { 'application/json': { schema: error } } },
        ...(r.method !== 'GET' ? { 403: { description: 'Missing CSRF token (cookie sessions)', content: { 'application/json': { schema: error } } } } : {}),
        404: { description: 'Not found', content: { 'application/json': { schema: error } } },
        ...(r.method !== 'GET' ? { 413: { description: 'Body too large', content: { 'application/json': { schema: error } } } } : {}),
        default: { description: 'Error (405 wrong method, 409 exists, 429 throttled, 503 store unavailable, ...)', content: { 'application/json': { schema: error } } },
      },
    };
  }
  return {
    openapi: '3.1.0',
    info: { title: 'relayguard admin API', version: '1', description: `Node ${node}. Authenticate with a session cookie (and X-CSRF-Token on writes) or Authorization: Bearer.` },
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer' }, cookie: { type: 'apiKey', in: 'cookie', name: SESSION_COOKIE } },
      schemas: {
        Error: {
          type: 'object', required: ['error'],
          properties: { error: { type: 'object', required: ['code', 'message'], properties: { code: { type: 'string' }, message: { type: 'string' } } } },
        },
      },
    },
    security: [{ bearer: [] }, { cookie: [] }],
    paths,
  };
}

