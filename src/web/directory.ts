/**
 * Users, local domains and aliases of the directory as a web module (module.ts): the JSON API (/api/users,
 * /api/domains, /api/aliases) and the admin page "Users & domains" (/users) with its forms.
 *
 * Trust: admin only (login or bearer token; CSRF on every write, checked by server.ts). Every change goes through
 * the directory port (policy/directory.ts) of the running relay: the store the receive path's in-memory view hands
 * out (relay/directory-view.ts), whose writes refresh the view before they resolve, so a user added here can AUTH
 * at once and a removed domain is refused at the next RCPT on this node; other processes and nodes see it through
 * the store's change detection (SQLite data_version, PostgreSQL NOTIFY). Passwords are hashed and checked by
 * UserAccounts (the same code as `relayguard user add|passwd`), never stored or logged in clear: the audit entry of
 * a write names the user, never the password. Alias locality is checked as `relayguard alias add` does
 * (policy/aliases.ts checkAliasLocality).
 *
 * Users are listed a page at a time by the store (DirectoryStore.searchUsers: one query for the page, one for the
 * count), never the whole table.
 *
 * Errors: the store's codes as HTTP statuses (ERR_*_INVALID 400, ERR_*_EXISTS 409, ERR_*_NOT_FOUND 404); a form
 * action that fails redirects back to the page with the message, and changes nothing.
 */
import { z } from 'zod';
import { RelayguardError } from '../core/errors.ts';
import { createLocality } from '../core/locality.ts';
import { checkAliasLocality, ERR_ALIAS_INVALID, type AliasEntry } from '../policy/aliases.ts';
import type { DirectoryStore, UserAccounts, UserInfo } from '../policy/directory.ts';
import { html, Markup } from './html.ts';
import type { ApiRoute, PageRoute, RouteInput, WebContext, WebModule } from './module.ts';
import { WebError } from './server.ts';

export interface DirectoryModuleDeps {
  /** The relay's directory (the store its view hands out: writes refresh the view at once). */
  readonly store: DirectoryStore;
  /** Passwords over that store (hashing and the password rules of `relayguard user add|passwd`). */
  readonly accounts: UserAccounts;
  /** The local domains now, config and database (the relay's own answer). */
  readonly localDomains: () => ReadonlySet<string>;
}

const STATUS: Readonly<Record<string, number>> = {
  ERR_USER_INVALID: 400, ERR_DOMAIN_INVALID: 400, ERR_ALIAS_INVALID: 400,
  ERR_USER_EXISTS: 409, ERR_DOMAIN_EXISTS: 409,
  ERR_USER_NOT_FOUND: 404, ERR_DOMAIN_NOT_FOUND: 404, ERR_ALIAS_NOT_FOUND: 404,
};

/** A refused change of the directory, as the client should see it (status, code, message), or null. */
function refusal(err: unknown): WebError | null {
  if (err instanceof WebError) return err;
  if (!(err instanceof RelayguardError)) return null;
  const status = STATUS[err.code];
  return status === undefined ? null : new WebError(status, err.code, err.message);
}

async function mapped<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw refusal(err) ?? err;
  }
}

/** Up to 100 addresses, given as a list or as one string split at spaces and commas (the form's field). */
const addressList = z.union([z.array(z.string().max(320)).max(100), z.string().max(16_000)])
  .transform((v) => (Array.isArray(v) ? v : v.split(/[\s,]+/)).map((a) => a.trim()).filter((a) => a !== ''));

const userJson = z.object({
  name: z.string(), createdAt: z.number().int(), disabled: z.boolean(), addresses: z.array(z.string()),
});
const aliasJson = z.object({ key: z.string(), target: z.string(), remote: z.boolean() });
const userName = z.strictObject({ name: z.string().min(1).max(320) });
const ok = z.object({ ok: z.literal(true) });

const userQuery = z.strictObject({
  search: z.string().max(320).optional(),
  offset: z.coerce.number().int().min(0).default(0),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
});

export const PAGE_SIZE = 100;

const userOut = (u: UserInfo): z.infer<typeof userJson> => ({ name: u.name, createdAt: u.createdAt, disabled: u.disabled, addresses: [...u.addresses] });
const aliasOut = (a: AliasEntry): z.infer<typeof aliasJson> => ({ key: a.key, target: a.target, remote: a.remote });

export function directoryModule(deps: DirectoryModuleDeps): WebModule {
  const { store, accounts } = deps;
  const locality = createLocality({ domains: deps.localDomains, ownAddresses: () => [] });

  // --- the changes, shared by the API and the forms (each audited after it succeeded; never with a password) ----
  const ops = (ctx: WebContext) => ({
    async addUser(input: RouteInput, name: string, password: string, addresses: readonly string[], disabled: boolean): Promise<UserInfo> {
      const user = await accounts.add(name, password, { addresses, disabled });
      await ctx.audit(input.auth, input.request, 'user.add', user.name, { addresses: user.addresses, disabled: user.disabled });
      return user;
    },
    async removeUser(input: RouteInput, name: string): Promise<void> {
      await store.removeUser(name);
      await ctx.audit(input.auth, input.request, 'user.remove', name, undefined);
    },
    async setPassword(input: RouteInput, name: string, password: string): Promise<void> {
      await accounts.setPassword(name, password);
      await ctx.audit(input.auth, input.request, 'user.password', name, undefined);
    },
    async setDisabled(input: RouteInput, name: string, disabled: boolean): Promise<void> {
      await store.setDisabled(name, disabled);
      await ctx.audit(input.auth, input.request, disabled ? 'user.disable' : 'user.enable', name, undefined);
    },
    async addDomain(input: RouteInput, domain: string): Promise<string> {
      const d = await store.addDomain(domain);
      await ctx.audit(input.auth, input.request, 'domain.add', d, undefined);
      return d;
    },
    async removeDomain(input: RouteInput, domain: string): Promise<void> {
      await store.removeDomain(domain);
      await ctx.audit(input.auth, input.request, 'domain.remove', domain, undefined);
    },
    async addAlias(input: RouteInput, address: string, targets: readonly string[], remote: boolean): Promise<AliasEntry[]> {
      if (targets.length === 0) throw new RelayguardError(ERR_ALIAS_INVALID, 'Give at least one target');
      checkAliasLocality(address, targets, (d) => locality.isLocal(d), remote, 'allow remote targets (remote: true)');
      const added = await store.addAlias(address, targets, { remote });
      await ctx.audit(input.auth, input.request, 'alias.add', added[0]?.key ?? address, { targets: added.map((a) => a.target), remote });
      return added;
    },
    async removeAlias(input: RouteInput, address: string, target: string | undefined): Promise<number> {
      const n = await store.removeAlias(address, target);
      await ctx.audit(input.auth, input.request, 'alias.remove', address, { target: target ?? null, removed: n });
      return n;
    },
  });

  return {
    name: 'directory',
    nav: [{ href: '/users', label: 'Users & domains' }],

    api(ctx: WebContext): readonly ApiRoute[] {
      const op = ops(ctx);
      return [
        {
          method: 'GET', url: '/api/users', summary: 'Mail users (SMTP AUTH) sorted by name; search matches the name or an owned address; paged with offset and limit.',
          query: userQuery,
          response: z.object({ total: z.number().int(), offset: z.number().int(), limit: z.number().int(), more: z.boolean(), users: z.array(userJson) }),
          handler: async ({ query }) => {
            const q = query as z.infer<typeof userQuery>;
            const page = await store.searchUsers({ offset: q.offset, limit: q.limit, ...(q.search !== undefined ? { search: q.search } : {}) });
            return { total: page.total, offset: q.offset, limit: q.limit, more: q.offset + page.users.length < page.total, users: page.users.map(userOut) };
          },
        },
        {
          method: 'GET', url: '/api/users/:name', summary: 'One mail user.', params: userName, response: userJson,
          handler: async ({ params }) => {
            const u = await store.getUser(params.name);
            if (u === null) throw new WebError(404, 'ERR_USER_NOT_FOUND', 'No such user');
            return userOut(u);
          },
        },
        {
          method: 'POST', url: '/api/users', summary: 'Adds a mail user with a password (hashed with scrypt; the rules of `relayguard user add`).',
          body: z.strictObject({ name: z.string().min(1).max(320), password: z.string().min(1).max(1024), addresses: addressList.optional(), disabled: z.boolean().optional() }),
          response: userJson,
          handler: async (input) => {
            const b = input.body as { name: string; password: string; addresses?: string[]; disabled?: boolean };
            return userOut(await mapped(() => op.addUser(input, b.name, b.password, b.addresses ?? [], b.disabled === true)));
          },
        },
        {
          method: 'DELETE', url: '/api/users/:name', summary: 'Removes a mail user and the addresses they own.', params: userName, response: ok,
          handler: async (input) => {
            await mapped(() => op.removeUser(input, input.params.name));
            return { ok: true };
          },
        },
        {
          method: 'POST', url: '/api/users/:name/password', summary: "Resets a mail user's password.", params: userName,
          body: z.strictObject({ password: z.string().min(1).max(1024) }), response: ok,
          handler: async (input) => {
            await mapped(() => op.setPassword(input, input.params.name, (input.body as { password: string }).password));
            return { ok: true };
          },
        },
        {
          method: 'POST', url: '/api/users/:name/:action', summary: 'Disables or re-enables a mail user (a disabled user cannot AUTH and has no mailbox).',
          params: z.strictObject({ name: z.string().min(1).max(320), action: z.enum(['disable', 'enable']) }), response: ok,
          handler: async (input) => {
            await mapped(() => op.setDisabled(input, input.params.name, input.params.action === 'disable'));
            return { ok: true };
          },
        },
        {
          method: 'GET', url: '/api/domains', summary: 'Local domains: from the configuration (localDomains) and from the database (changed here).',
          response: z.object({ config: z.array(z.string()), database: z.array(z.string()) }),
          handler: async () => {
            const database = await store.listDomains();
            const db = new Set(database);
            return { config: [...deps.localDomains()].filter((d) => !db.has(d)).sort(), database };
          },
        },
        {
          method: 'POST', url: '/api/domains', summary: 'Adds a local domain to the database (IDN allowed; stored as lower-case A-labels).',
          body: z.strictObject({ domain: z.string().min(1).max(255) }), response: z.object({ domain: z.string() }),
          handler: async (input) => ({ domain: await mapped(() => op.addDomain(input, (input.body as { domain: string }).domain)) }),
        },
        {
          method: 'DELETE', url: '/api/domains/:domain', summary: 'Removes a local domain from the database (domains of the configuration stay).',
          params: z.strictObject({ domain: z.string().min(1).max(255) }), response: ok,
          handler: async (input) => {
            await mapped(() => op.removeDomain(input, input.params.domain));
            return { ok: true };
          },
        },
        {
          method: 'GET', url: '/api/aliases', summary: 'Database aliases (alias files are not listed), sorted by alias then target.',
          response: z.object({ aliases: z.array(aliasJson) }),
          handler: async () => ({ aliases: (await store.listAliases()).map(aliasOut) }),
        },
        {
          method: 'POST', url: '/api/aliases', summary: 'Adds targets to an alias in a local domain; targets outside the local domains need remote: true.',
          body: z.strictObject({ address: z.string().min(1).max(320), targets: addressList, remote: z.boolean().optional() }),
          response: z.object({ aliases: z.array(aliasJson) }),
          handler: async (input) => {
            const b = input.body as { address: string; targets: string[]; remote?: boolean };
            return { aliases: (await mapped(() => op.addAlias(input, b.address, b.targets, b.remote === true))).map(aliasOut) };
          },
        },
        {
          method: 'DELETE', url: '/api/aliases/:address', summary: 'Removes one target of an alias (?target=), or the whole alias.',
          params: z.strictObject({ address: z.string().min(1).max(320) }), query: z.strictObject({ target: z.string().min(1).max(320).optional() }),
          response: z.object({ removed: z.number().int() }),
          handler: async (input) => ({ removed: await mapped(() => op.removeAlias(input, input.params.address, (input.query as { target?: string }).target)) }),
        },
      ];
    },

    pages(ctx: WebContext): readonly PageRoute[] {
      const op = ops(ctx);
      const field = z.string().max(1024).default('');
      /** A form action: its outcome (or the refusal) is shown on the page it redirects to. */
      const action = (url: string, body: z.ZodType, run: (input: RouteInput) => Promise<string>): PageRoute => ({
        method: 'POST', url, body,
        handler: async (input) => {
          try {
            return { redirect: `/users?${new URLSearchParams({ done: await run(input) })}` };
          } catch (err) {
            const r = refusal(err);
            if (r === null) throw err;
            return { redirect: `/users?${new URLSearchParams({ error: `${r.message} [${r.code}]` })}` };
          }
        },
      });
      const form = <T extends Record<string, z.ZodType>>(fields: T) => z.object({ ...fields, _csrf: z.string().optional() });
      return [
        {
          method: 'GET', url: '/users',
          query: z.object({ search: z.string().max(320).optional(), offset: z.coerce.number().int().min(0).default(0), done: z.string().max(2000).optional(), error: z.string().max(2000).optional() }),
          handler: async ({ query, auth }) => {
            const q = query as { search?: string; offset: number; done?: string; error?: string };
            const [found, domains, aliases] = await Promise.all([
              store.searchUsers({ offset: q.offset, limit: PAGE_SIZE, ...(q.search !== undefined ? { search: q.search } : {}) }),
              store.listDomains(), store.listAliases(),
            ]);
            const db = new Set(domains);
            const config = [...deps.localDomains()].filter((d) => !db.has(d)).sort();
            return new Markup(ctx.page('Users & domains', directoryPage({
              csrf: auth.session?.csrf ?? '', search: q.search ?? '', offset: q.offset, total: found.total,
              users: found.users, domains, config, aliases, done: q.done ?? null, error: q.error ?? null,
            }), auth));
          },
        },
        action('/users/add', form({ name: field, password: field, addresses: z.string().max(16_000).default('') }), async (input) => {
          const b = input.body as { name: string; password: string; addresses: string };
          const u = await op.addUser(input, b.name, b.password, b.addresses.split(/[\s,]+/).filter((a) => a !== ''), false);
          return `Added user ${u.name}`;
        }),
        action('/users/remove', form({ name: field }), async (input) => {
          const { name } = input.body as { name: string };
          await op.removeUser(input, name);
          return `Removed user ${name}`;
        }),
        action('/users/password', form({ name: field, password: field }), async (input) => {
          const b = input.body as { name: string; password: string };
          await op.setPassword(input, b.name, b.password);
          return `Password changed for ${b.name}`;
        }),
        action('/users/disable', form({ name: field }), async (input) => {
          const { name } = input.body as { name: string };
          await op.setDisabled(input, name, true);
          return `Disabled user ${name}`;
        }),
        action('/users/enable', form({ name: field }), async (input) => {
          const { name } = input.body as { name: string };
          await op.setDisabled(input, name, false);
          return `Enabled user ${name}`;
        }),
        action('/domains/add', form({ domain: field }), async (input) => `Added local domain ${await op.addDomain(input, (input.body as { domain: string }).domain)}`),
        action('/domains/remove', form({ domain: field }), async (input) => {
          const { domain } = input.body as { domain: string };
          await op.removeDomain(input, domain);
          return `Removed local domain ${domain}`;
        }),
        action('/aliases/add', form({ address: field, targets: z.string().max(16_000).default(''), remote: z.string().max(10).optional() }), async (input) => {
          const b = input.body as { address: string; targets: string; remote?: string };
          const added = await op.addAlias(input, b.address, b.targets.split(/[\s,]+/).filter((t) => t !== ''), b.remote !== undefined);
          return `Alias ${added[0]?.key ?? b.address}: ${added.map((a) => a.target).join(', ')}`;
        }),
        action('/aliases/remove', form({ address: field, target: field }), async (input) => {
          const b = input.body as { address: string; target: string };
          const n = await op.removeAlias(input, b.address, b.target === '' ? undefined : b.target);
          return `Removed ${n} alias entr${n === 1 ? 'y' : 'ies'} of ${b.address}`;
        }),
      ];
    },
  };
}

interface PageData {
  readonly csrf: string;
  readonly search: string;
  readonly offset: number;
  readonly total: number;
  readonly users: readonly UserInfo[];
  readonly domains: readonly string[];
  readonly config: readonly string[];
  readonly aliases: readonly AliasEntry[];
  readonly done: string | null;
  readonly error: string | null;
}

/** The page body (every value escaped by `html`). */
export function directoryPage(d: PageData): Markup {
  const csrf = html`<input type="hidden" name="_csrf" value="${d.csrf}">`;
  const post = (action: string, fields: Record<string, string>, label: string): Markup => html`<form class="inline" method="post" action="${action}">${csrf}${Object.entries(fields).map(([k, v]) => html`<input type="hidden" name="${k}" value="${v}">`)}<button>${label}</button></form>`;
  const iso = (ms: number): string => new Date(ms).toISOString().slice(0, 10);
  const pageLink = (offset: number, label: string): Markup => html`<a href="/users?${new URLSearchParams({ ...(d.search ? { search: d.search } : {}), offset: String(offset) }).toString()}">${label}</a>`;
  return html`
${d.done === null ? '' : html`<p role="status">${d.done}</p>`}${d.error === null ? '' : html`<p class="error" role="alert">${d.error}</p>`}
<h2 id="users">Users</h2>
<form method="get" action="/users" role="search"><label>Search <input name="search" value="${d.search}" type="search"></label> <button>Search</button></form>
<div class="table-wrap"><table><caption>${d.total} user${d.total === 1 ? '' : 's'}${d.search ? html` matching “${d.search}”` : ''}${d.total > d.users.length ? html`, ${d.offset + 1}–${d.offset + d.users.length} shown` : ''}</caption>
<thead><tr><th>Name</th><th>May send as</th><th>Created</th><th>State</th><th>Actions</th></tr></thead>
<tbody>${d.users.map((u) => html`<tr><td>${u.name}</td><td>${u.addresses.join(' ')}</td><td>${iso(u.createdAt)}</td><td>${u.disabled ? 'disabled' : 'enabled'}</td>
<td>${post('/users/remove', { name: u.name }, 'Remove')} ${u.disabled ? post('/users/enable', { name: u.name }, 'Enable') : post('/users/disable', { name: u.name }, 'Disable')}
<form class="inline" method="post" action="/users/password">${csrf}<input type="hidden" name="name" value="${u.name}"><label>New password <input name="password" type="password" autocomplete="new-password" required></label> <button>Reset</button></form></td></tr>`)}</tbody></table></div>
<p>${d.offset > 0 ? pageLink(Math.max(0, d.offset - PAGE_SIZE), 'Previous') : ''} ${d.offset + d.users.length < d.total ? pageLink(d.offset + PAGE_SIZE, 'Next') : ''}</p>
<form method="post" action="/users/add">${csrf}<fieldset><legend>Add a user</legend>
<label>Login name (an address owns itself) <input name="name" required autocomplete="off"></label>
<label>Password <input name="password" type="password" autocomplete="new-password" required></label>
<label>Further addresses (local@domain or @domain, space separated) <input name="addresses"></label>
<button>Add user</button></fieldset></form>
<h2 id="domains">Local domains</h2>
<div class="table-wrap"><table><thead><tr><th>Domain</th><th>Source</th><th>Actions</th></tr></thead>
<tbody>${d.config.map((x) => html`<tr><td>${x}</td><td>configuration (localDomains)</td><td></td></tr>`)}${d.domains.map((x) => html`<tr><td>${x}</td><td>database</td><td>${post('/domains/remove', { domain: x }, 'Remove')}</td></tr>`)}</tbody></table></div>
<form method="post" action="/domains/add">${csrf}<label>Domain <input name="domain" required></label> <button>Add domain</button></form>
<h2 id="aliases">Aliases</h2>
<div class="table-wrap"><table><thead><tr><th>Alias</th><th>Target</th><th>Remote</th><th>Actions</th></tr></thead>
<tbody>${d.aliases.map((a) => html`<tr><td>${a.key}</td><td>${a.target}</td><td>${a.remote ? 'yes' : ''}</td><td>${post('/aliases/remove', { address: a.key, target: a.target }, 'Remove')}</td></tr>`)}</tbody></table></div>
<form method="post" action="/aliases/add">${csrf}<fieldset><legend>Add an alias</legend>
<label>Alias (local@domain, or @domain for a catch-all) <input name="address" required></label>
<label>Targets (space separated) <input name="targets" required></label>
<label><input type="checkbox" name="remote" value="1"> Allow targets outside the local domains</label>
<button>Add alias</button></fieldset></form>`;
}

