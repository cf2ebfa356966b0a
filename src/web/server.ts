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
 * Errors: JSON {error: {code, message}} with a 4xx status (400 names the field).
 */
import fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';
import cookie from '@fastify/cookie';
import formbody from '@fastify/formbody';
import { z } from 'zod';
import { RelayguardError } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import { AuthThrottle } from '../policy/auth-throttle.ts';
import type { AdminAccounts } from '../policy/admin-accounts.ts';
import { address as decisionAddress, type DecisionFilter, type DecisionRecord, type DecisionStore } from '../policy/decisions.ts';
import { isIP } from 'node:net';
import type { AdminResult, AdminTarget, ListFilter, NodeDetail, NodeSummary } from '../queue/index.ts';
import { CSS, dashboardPage, loginPage, page as renderPage, publicPage } from './html.ts';
import type { ApiRoute, Auth, NavEntry, PageRoute, PublicRoute, WebContext, WebModule } from './module.ts';
import type { RelayMetrics } from './metrics.ts';
import { LOGIN_CSRF_COOKIE, SESSION_COOKIE, SessionStore, randomToken, sameToken } from './sessions.ts';

/** What the web service may do to the queue (MailQueue satisfies it; with shards, the CLI's sharded view). */
export interface QueueAccess {
  list(filter: ListFilter): Promise<readonly NodeSummary[]>;
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
  /** Every route of the admin listener as fastify registered it (HEAD included), and whether it is public. */
  readonly routes: readonly { method: string; url: string; public: boolean }[];
  close(): Promise<void>;
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
const BASE_PUBLIC_ROUTES = ['/health', '/login', '/assets/app.css'];

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

  const common = (app: FastifyInstance): void => {
    app.addHook('onSend', async (_req, reply, payload) => {
      for (const [k, v] of Object.entries(SECURITY_HEADERS)) reply.header(k, v);
      if (!reply.hasHeader('cache-control')) reply.header('cache-control', 'no-store');
      return payload;
    });
    app.setNotFoundHandler((req, reply) => {
      void reply.code(404).send({ error: { code: 'ERR_WEB_NOT_FOUND', message: `No route ${req.method} ${req.url.split('?')[0]!.slice(0, 200)}` } });
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
    app.get('/health', async (_req, reply) => {
      const h = await health();
      return reply.code(h.status).send(h.body);
    });
    for (const r of publicRoutes) app.route({ method: r.method, url: r.url, handler: (req, reply) => r.handler(req, reply) });
  };

  // --- admin listener -------------------------------------------------------------------------------------------
  const admin = fastify({ logger: false, bodyLimit: 64 * 1024, ...(o.tls ? { https: { cert: o.tls.cert, key: o.tls.key } } : {}) });
  await admin.register(cookie);
  await admin.register(formbody, { bodyLimit: 16 * 1024 });
  // Every route as the router has it (tests check that each non-public one refuses an anonymous request).
  const routes: { method: string; url: string; public: boolean }[] = [];
  admin.addHook('onRoute', (r) => {
    for (const method of [r.method].flat()) routes.push({ method, url: r.url, public: PUBLIC_ROUTES.has(r.url) });
  });
  common(admin);
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


  admin.get('/assets/app.css', async (_req, reply) => reply.header('cache-control', 'max-age=3600').type('text/css').send(CSS));

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

  const queueCounts = async (): Promise<Record<string, number>> => {
    const out: Record<string, number> = {};
    for (const state of ['queued', 'deferred', 'hold', 'corrupt']) out[state] = (await o.queue.list({ state })).length;
    return out;
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
  });
  const decisionStore = (): DecisionStore => {
    if (!o.decisions) throw new WebError(503, 'ERR_DECISIONS_UNAVAILABLE', 'The relay-decision log is not available on this node');
    return o.decisions;
  };
  const api: ApiRoute[] = [
    {
      method: 'GET', url: '/api/me', summary: 'Who the request is authenticated as.',
      handler: async ({ auth }) => ({ admin: auth.admin, actor: auth.actor, csrfToken: auth.session?.csrf ?? null, node: o.node }),
    },
    {
      method: 'GET', url: '/api/queue', summary: 'Queued messages, oldest first, with filters and paging.', query: listQuery,
      handler: async ({ query }) => {
        const q = query as z.infer<typeof listQuery>;
        if (q.offset + q.limit > MAX_WINDOW) throw new WebError(400, 'ERR_WEB_BAD_INPUT', `offset + limit must not exceed ${MAX_WINDOW}: narrow the filter`);
        const filter: ListFilter = {
          ...(q.state ? { state: q.state } : {}), ...(q.sender !== undefined ? { sender: q.sender } : {}),
          ...(q.domain ? { recipientDomain: q.domain } : {}), ...(q.messageId ? { messageId: q.messageId } : {}),
          ...(q.olderThanSeconds !== undefined ? { olderThanMs: q.olderThanSeconds * 1000 } : {}),
          limit: q.offset + q.limit + 1,
        };
        const rows = await o.queue.list(filter);
        return { node: o.node, offset: q.offset, limit: q.limit, more: rows.length > q.offset + q.limit, messages: rows.slice(q.offset, q.offset + q.limit) };
      },
    },
    {
      method: 'GET', url: '/api/queue/summary', summary: 'Message counts by state.',
      handler: async () => ({ node: o.node, counts: await queueCounts() }),
    },
    {
      method: 'GET', url: '/api/queue/:id', summary: 'One message with its recipients and their attempt history.', params: z.strictObject({ id: QUEUE_ID }),
      handler: async ({ params }) => {
        const d = await o.queue.get(params.id);
        if (d === null) throw new WebError(404, 'ERR_QUEUE_NOT_FOUND', `No message ${params.id} in the queue`);
        return d;
      },
    },
    {
      method: 'POST', url: '/api/queue/:id/:action', summary: 'Hold, release, retry or delete one message.',
      params: z.strictObject({ id: QUEUE_ID, action: z.enum(ACTIONS) }),
      handler: async ({ params, auth, request }) => {
        const result = await o.queue[params.action as (typeof ACTIONS)[number]]({ queueIds: [params.id] });
        await audit(auth, request, `queue.${params.action}`, params.id, summarize(result));
        if (result.missing.length > 0) throw new WebError(404, 'ERR_QUEUE_NOT_FOUND', `No message ${params.id} in the queue`);
        return result;
      },
    },
    {
      method: 'POST', url: '/api/queue/flush', summary: 'Try every deferred message now.',
      handler: async ({ auth, request }) => {
        const result = await o.queue.flush();
        await audit(auth, request, 'queue.flush', null, summarize(result));
        return result;
      },
    },
    {
      method: 'GET', url: '/api/decisions', summary: 'Relay decisions (one per recipient), newest first, with filters; page with before=<next of the previous page>.',
      query: decisionQuery,
      handler: async ({ query }) => {
        const q = query as z.infer<typeof decisionQuery>;
        const rows = await decisionStore().search({ ...decisionFilter(q), ...(q.before !== undefined ? { before: q.before } : {}), limit: q.limit + 1 });
        const page = rows.slice(0, q.limit);
        return { node: o.node, decisions: page.map(decisionJson), next: rows.length > q.limit ? page.at(-1)!.id : null };
      },
    },
    {
      method: 'GET', url: '/api/decisions/why', summary: 'Why was this refused? The latest decisions for a client address, recipient and/or sender, with the rule, reason and reply of the refusals.',
      query: whyQuery,
      handler: async ({ query }) => {
        const q = query as z.infer<typeof whyQuery>;
        const filter = decisionFilter(q);
        const [latest, refusals] = await Promise.all([
          decisionStore().search({ ...filter, limit: 1 }),
          decisionStore().search({ ...filter, action: 'reject', limit: q.limit }),
        ]);
        return { node: o.node, refused: latest[0]?.action === 'reject', answer: whyAnswer(latest[0] ?? null, refusals[0] ?? null), latest: latest[0] ? decisionJson(latest[0]) : null, refusals: refusals.map(decisionJson) };
      },
    },
    {
      method: 'GET', url: '/api/audit', summary: 'The audit log of admin actions, newest first.',
      query: z.strictObject({ limit: z.coerce.number().int().min(1).max(1000).default(100), before: z.coerce.number().int().min(1).optional() }),
      handler: async ({ query }) => ({ entries: await o.admins.store.auditLog({ limit: query.limit, beforeId: query.before }) }),
    },
    {
      method: 'GET', url: '/api/openapi.json', summary: 'This API as an OpenAPI 3.1 document.',
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
    routes,
    async close() {
      await Promise.all(started.map((a) => a.close()));
      await Promise.all(modules.map((m) => m.close?.()));
    },
  };
}

// --- relay decisions ----------------------------------------------------------------------------------------------
/** A time: epoch milliseconds or an ISO 8601 date-time. */
const instant = z.string().max(40).refine((v) => toInstant(v) !== null, 'epoch milliseconds or an ISO 8601 date-time').transform((v) => toInstant(v)!);
function toInstant(v: string): number | null {
  if (/^\d{1,15}$/.test(v)) return Number(v);
  const t = Date.parse(v);
  return Number.isFinite(t) && /^\d{4}-\d{2}-\d{2}/.test(v) ? t : null;
}
const decisionFields = {
  client: z.string().max(64).refine((v) => isIP(v) !== 0, 'an IP address').optional(),
  sender: z.string().max(322).optional(),
  rcpt: z.string().max(322).optional(),
};
const decisionQuery = z.strictObject({
  ...decisionFields,
  action: z.enum(['reject', 'local', 'relay']).optional(),
  rule: z.string().max(64).optional(),
  since: instant.optional(),
  until: instant.optional(),
  before: z.coerce.number().int().min(1).optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
});
const whyQuery = z.strictObject({ ...decisionFields, limit: z.coerce.number().int().min(1).max(50).default(5) })
  .refine((q) => q.client !== undefined || q.rcpt !== undefined || q.sender !== undefined, { message: 'name at least one of client, rcpt, sender', path: ['client'] });

function decisionFilter(q: { client?: string | undefined; sender?: string | undefined; rcpt?: string | undefined; action?: string | undefined; rule?: string | undefined; since?: number | undefined; until?: number | undefined }): Omit<DecisionFilter, 'limit'> {
  return {
    ...(q.client !== undefined ? { clientIp: q.client } : {}),
    ...(q.sender !== undefined ? { sender: decisionAddress(q.sender) } : {}),
    ...(q.rcpt !== undefined ? { rcpt: decisionAddress(q.rcpt) } : {}),
    ...(q.action !== undefined ? { action: q.action } : {}),
    ...(q.rule !== undefined ? { rule: q.rule } : {}),
    ...(q.since !== undefined ? { since: q.since } : {}),
    ...(q.until !== undefined ? { until: q.until } : {}),
  };
}

function decisionJson(d: DecisionRecord): Record<string, unknown> {
  return { ...d, time: new Date(d.at).toISOString() };
}

function whyAnswer(latest: DecisionRecord | null, refusal: DecisionRecord | null): string {
  const refused = (d: DecisionRecord): string => `refused ${d.rcpt ? `<${d.rcpt}> ` : ''}from ${d.clientIp} at ${new Date(d.at).toISOString()} by rule "${d.rule}"${d.reason ? ` (${d.reason})` : ''}${d.reply ? `, reply "${d.reply}"` : ''}`;
  if (latest === null) return 'No relay decision recorded for this query (within the retention of web.decisionRetention).';
  if (latest.action === 'reject') return `The latest decision ${refused(latest)}.`;
  const accepted = `The latest decision accepted <${latest.rcpt}> from ${latest.clientIp} at ${new Date(latest.at).toISOString()} (${latest.action}, rule "${latest.rule}")`;
  return refusal === null ? `${accepted}; no refusal recorded.` : `${accepted}; before that, the last refusal: ${refused(refusal)}.`;
}

function badInput(error: z.ZodError, where: string): WebError {
  const issue = error.issues[0]!;
  const field = issue.path.length > 0 ? issue.path.join('.') : where;
  return new WebError(400, 'ERR_WEB_BAD_INPUT', `${where} field "${field}": ${issue.message}`);
}

function summarize(r: AdminResult): { changed: number; unchanged: number; missing: number } {
  return { changed: r.changed.length, unchanged: r.unchanged.length, missing: r.missing.length };
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
        200: { description: 'OK', content: { [r.produces ?? 'application/json']: { schema: r.produces === 'text/event-stream' ? { type: 'string' } : { type: 'object' } } } },
        400: { description: 'Bad input', content: { 'application/json': { schema: error } } },
        401: { description: 'Not authenticated', content: { 'application/json': { schema: error } } },
        ...(r.method !== 'GET' ? { 403: { description: 'Missing CSRF token (cookie sessions)', content: { 'application/json': { schema: error } } } } : {}),
        404: { description: 'Not found', content: { 'application/json': { schema: error } } },
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

