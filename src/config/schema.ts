/**
 * The schema of relayguard.yaml: camelCase keys, every key optional, unknown keys refused (typos must not pass
 * silently in a security configuration). Defaults live here and nowhere else; docs/configuration.md is generated
 * from this schema by `renderConfigDocs` (a test keeps the file in sync).
 *
 * `configSchema` validates the input form (durations as "300s", sizes as "25MiB"); `buildConfig` turns its
 * output into the frozen `Config` the program uses (durations in ms, sizes in bytes, paths absolute).
 */
import { hostname as osHostname } from 'node:os';
import path from 'node:path';
import ipaddr from 'ipaddr.js';
import YAML from 'yaml';
import { z } from 'zod';
import { canonicalDomain, canonicalIp } from '../core/canonical.ts';

// ---------------------------------------------------------------------------------------------------------------
// Value grammars

/** setTimeout's ceiling: a longer delay fires at once, so timer-backed durations may not exceed it (~24.8 days). */
export const MAX_TIMER_MS = 2 ** 31 - 1;
const DAY_MS = 86_400_000;

const DURATION_UNITS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: DAY_MS, w: 7 * DAY_MS };
const DURATION_HINT = 'expected a duration such as "300s", "5m", "4h", "5d", "250ms", "1h30m" or a number of seconds';

/**
 * Parses a duration into milliseconds: a number of seconds (300, 0.25), or a string of number+unit groups
 * ("250ms", "300s", "5m", "4h", "5d", "2w", "1h30m"), or a plain decimal string of seconds. Returns null when the
 * input is not a duration.
 */
export function parseDuration(input: unknown): number | null {
  let ms: number;
  if (typeof input === 'number') {
    if (!Number.isFinite(input) || input < 0) return null;
    ms = input * 1000;
  } else if (typeof input === 'string') {
    const s = input.trim();
    if (/^\d+(?:\.\d+)?$/.test(s)) {
      ms = Number(s) * 1000;
    } else {
      if (s.length === 0 || s.length > 64 || !/^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+$/.test(s)) return null;
      ms = 0;
      for (const m of s.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d|w)/g)) ms += Number(m[1]) * DURATION_UNITS[m[2]!]!;
    }
  } else {
    return null;
  }
  ms = Math.round(ms);
  return Number.isSafeInteger(ms) ? ms : null;
}

/** A duration in ms as the shortest friendly string ("300s" -> "5m", 90_000 -> "90s"). */
export function formatDuration(ms: number): string {
  for (const [unit, size] of [['w', 7 * DAY_MS], ['d', DAY_MS], ['h', 3_600_000], ['m', 60_000], ['s', 1000]] as const) {
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}

const SIZE_UNITS: Readonly<Record<string, number>> = {
  b: 1, kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12, kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40,
};
const SIZE_HINT = 'expected a size such as 26214400 (bytes), "25MiB", "10MB", "512KiB"';

/** Parses a size into bytes: a number of bytes, or a string like "25MiB", "10MB", "512 KiB", "100B". Null if invalid. */
export function parseSize(input: unknown): number | null {
  let bytes: number;
  if (typeof input === 'number') {
    bytes = input;
  } else if (typeof input === 'string') {
    const m = /^(\d+(?:\.\d+)?)\s*([a-z]+)?$/i.exec(input.trim());
    if (!m) return null;
    const unit = SIZE_UNITS[(m[2] ?? 'b').toLowerCase()];
    if (unit === undefined) return null;
    bytes = Number(m[1]) * unit;
    if (Math.abs(bytes - Math.round(bytes)) < 1e-6) bytes = Math.round(bytes);
  } else {
    return null;
  }
  return Number.isSafeInteger(bytes) && bytes >= 0 ? bytes : null;
}

function show(v: unknown): string {
  const s = typeof v === 'string' ? JSON.stringify(v) : typeof v === 'object' && v !== null ? (Array.isArray(v) ? 'a list' : 'a mapping') : String(v);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

/** Lower-case A-label domain without trailing dot, or null (core/canonical.ts; "_" allowed for DNS owner names). */
export function normalizeDomainName(input: string): string | null {
  return canonicalDomain(input, { allowUnderscore: true });
}

function isStrictIp(s: string): boolean {
  return canonicalIp(s) !== null;
}

/** Canonical text of a strictly written IP address (IPv4-mapped IPv6 becomes IPv4), or null (core/canonical.ts). */
export function normalizeIpAddress(input: string): string | null {
  return canonicalIp(input);
}

/**
 * Canonical "network/prefix" for a CIDR or a bare address (a host route). IPv4-mapped IPv6 networks become IPv4.
 * Host bits must be clear: "10.0.0.1/8" is ambiguous and refused. Returns the canonical form or an error text.
 */
export function normalizeCidr(input: string): { ok: true; cidr: string } | { ok: false; message: string } {
  const slash = input.indexOf('/');
  const addrText = slash < 0 ? input : input.slice(0, slash);
  if (!isStrictIp(addrText)) return { ok: false, message: `${show(input)} is not a network: "${addrText}" is not an IP address` };
  let addr = ipaddr.parse(addrText);
  let max = addr.kind() === 'ipv4' ? 32 : 128;
  let prefix = max;
  if (slash >= 0) {
    const p = input.slice(slash + 1);
    if (!/^(?:0|[1-9]\d{0,2})$/.test(p)) return { ok: false, message: `${show(input)} is not a network: bad prefix length` };
    prefix = Number(p);
    if (prefix > max) return { ok: false, message: `${show(input)} is not a network: the prefix length must be at most ${max}` };
  }
  if (addr.kind() === 'ipv6' && (addr as ipaddr.IPv6).isIPv4MappedAddress()) {
    if (prefix < 96) return { ok: false, message: `${show(input)} is not a network: an IPv4-mapped network needs a prefix of at least 96` };
    addr = (addr as ipaddr.IPv6).toIPv4Address();
    prefix -= 96;
    max = 32;
  }
  const text = `${addr.toString()}/${prefix}`;
  const net = addr.kind() === 'ipv4' ? ipaddr.IPv4.networkAddressFromCIDR(text) : ipaddr.IPv6.networkAddressFromCIDR(text);
  if (net.toString() !== addr.toString()) {
    return {
      ok: false,
      message: `${show(input)} has host bits set; write ${net.toString()}/${prefix} for the network or ${addr.toString()}/${max} for the one address`,
    };
  }
  return { ok: true, cidr: text };
}

/** Parses "host", "host:port", "[ip-literal]:port" or "[ip-literal]". Default port 25. */
export function parseHostPort(input: string): { host: string; port: number } | null {
  let host: string;
  let portText: string | undefined;
  const bracket = /^\[([^\]]+)\](?::(\d+))?$/.exec(input);
  if (bracket) {
    host = bracket[1]!;
    portText = bracket[2];
    const ip = normalizeIpAddress(host);
    if (ip === null) return null;
    host = ip;
  } else {
    const colon = input.lastIndexOf(':');
    if (colon >= 0 && input.indexOf(':') !== colon) return null; // bare IPv6 needs brackets
    host = colon >= 0 ? input.slice(0, colon) : input;
    portText = colon >= 0 ? input.slice(colon + 1) : undefined;
    const h = normalizeIpAddress(host) ?? normalizeDomainName(host);
    if (h === null) return null;
    host = h;
  }
  const port = portText === undefined ? 25 : /^\d{1,5}$/.test(portText) ? Number(portText) : NaN;
  if (!(port >= 1 && port <= 65535)) return null;
  return { host, port };
}

// ---------------------------------------------------------------------------------------------------------------
// Field schemas

type Meta = { 'x-type'?: string; 'x-default'?: string };

function duration(options: { min?: number; max?: number } = {}) {
  const min = options.min ?? 1;
  const max = options.max ?? MAX_TIMER_MS;
  return z
    .union([z.number(), z.string()], { error: DURATION_HINT })
    .transform((v, ctx) => {
      const ms = parseDuration(v);
      if (ms === null) {
        ctx.addIssue({ code: 'custom', message: `${show(v)} is not a duration: ${DURATION_HINT}`, input: v });
        return z.NEVER;
      }
      if (ms < min || ms > max) {
        ctx.addIssue({ code: 'custom', message: `${show(v)} is out of range: must be from ${formatDuration(min)} to ${formatDuration(max)}`, input: v });
        return z.NEVER;
      }
      return ms;
    })
    .meta({ 'x-type': 'duration' } satisfies Meta);
}

function size(options: { min?: number } = {}) {
  const min = options.min ?? 1;
  return z
    .union([z.number(), z.string()], { error: SIZE_HINT })
    .transform((v, ctx) => {
      const bytes = parseSize(v);
      if (bytes === null) {
        ctx.addIssue({ code: 'custom', message: `${show(v)} is not a size: ${SIZE_HINT}`, input: v });
        return z.NEVER;
      }
      if (bytes < min) {
        ctx.addIssue({ code: 'custom', message: `${show(v)} is too small: must be at least ${min} bytes`, input: v });
        return z.NEVER;
      }
      return bytes;
    })
    .meta({ 'x-type': 'size' } satisfies Meta);
}

function count(min: number, max = Number.MAX_SAFE_INTEGER) {
  return z.int().min(min).max(max);
}

const port = () => z.int().min(0).max(65535).meta({ 'x-type': 'port' } satisfies Meta);

const ipAddress = () =>
  z
    .string()
    .transform((v, ctx) => {
      const ip = normalizeIpAddress(v);
      if (ip === null) {
        ctx.addIssue({ code: 'custom', message: `${show(v)} is not an IP address (host names are not allowed here)`, input: v });
        return z.NEVER;
      }
      return ip;
    })
    .meta({ 'x-type': 'IP address' } satisfies Meta);

const domain = () =>
  z
    .string()
    .transform((v, ctx) => {
      const d = normalizeDomainName(v);
      if (d === null) {
        ctx.addIssue({ code: 'custom', message: `${show(v)} is not a valid domain name`, input: v });
        return z.NEVER;
      }
      return d;
    })
    .meta({ 'x-type': 'domain' } satisfies Meta);

/** A mail domain: like domain() but strictly letters, digits and hyphens, as the address grammar accepts. */
const mailDomain = () =>
  z
    .string()
    .transform((v, ctx) => {
      const d = canonicalDomain(v);
      if (d === null) {
        ctx.addIssue({ code: 'custom', message: `${show(v)} is not a valid mail domain (letters, digits and hyphens; IDNA allowed)`, input: v });
        return z.NEVER;
      }
      return d;
    })
    .meta({ 'x-type': 'domain' } satisfies Meta);

/** A mail address "local@domain" with its domain in canonical form. */
const mailAddress = () =>
  z
    .string()
    .transform((v, ctx) => {
      const at = v.lastIndexOf('@');
      const local = at > 0 ? v.slice(0, at) : '';
      const d = at > 0 ? canonicalDomain(v.slice(at + 1)) : null;
      if (d === null || !/^[^\s\x00-\x1f\x7f"<>(),;:\\[\]@%!]+$/u.test(local) || local.length > 64) {
        ctx.addIssue({ code: 'custom', message: `${show(v)} is not a mail address (local@domain)`, input: v });
        return z.NEVER;
      }
      return `${local.normalize('NFC')}@${d}`;
    })
    .meta({ 'x-type': 'address' } satisfies Meta);

/** A DNS server: "ip", "ip:port" or "[ipv6]:port" (node:dns setServers forms; no host names). */
const dnsServer = () =>
  z
    .string()
    .refine((v) => {
      const hp = parseHostPort(v.includes(':') && !v.startsWith('[') && v.indexOf(':') !== v.lastIndexOf(':') ? `[${v}]` : v);
      return hp !== null && normalizeIpAddress(hp.host) !== null;
    }, 'must be a DNS server address: "ip", "ip:port" or "[ipv6]:port"')
    .meta({ 'x-type': 'ip[:port]' } satisfies Meta);

const cidr = () =>
  z
    .string()
    .transform((v, ctx) => {
      const r = normalizeCidr(v);
      if (!r.ok) {
        ctx.addIssue({ code: 'custom', message: r.message, input: v });
        return z.NEVER;
      }
      return r.cidr;
    })
    .meta({ 'x-type': 'CIDR' } satisfies Meta);

/** A list with duplicates removed (after normalization), order kept. */
function uniqueList<T extends z.ZodType<string>>(item: T, max: number) {
  return z.array(item).max(max).transform((list) => [...new Set(list)]);
}

const pathString = () =>
  z.string().min(1).refine((s) => !s.includes('\0'), 'must not contain NUL').meta({ 'x-type': 'path' } satisfies Meta);

/** A remote relayguard that tests this server's listeners over its API (audit.relay.vantage; src/audit/remote-vantage.ts). */
const remoteVantage = () =>
  z.strictObject({
    remote: z
      .strictObject({
        url: z
          .string()
          .refine((v) => publicUrlOk(v), 'must be an http(s) URL without credentials, query or fragment, e.g. "https://mx2.example.net:8025"')
          .describe('Base URL of the remote relayguard\'s web service (its admin listener), e.g. "https://mx2.example.net:8025".'),
        tokenFile: pathString().describe('File holding an API token of an admin of the remote (`relayguard admin token add NAME --admin ADMIN` there); read at every audit; keep it mode 0600. Relative to the config file.'),
        ca: pathString().nullable().prefault(null).describe('PEM file the remote\'s https certificate must chain to (its CA, or its self-signed certificate: dataDir/tls/cert.pem there). Null: the system CAs.'),
        proof: z.boolean().default(false).describe('Ask for proof mode (the remote needs web.tester.proof; mail from this server to its probe domain must reach its sink). False: safe mode.'),
        host: z
          .string()
          .nullable()
          .prefault(null)
          .refine((v) => v === null || normalizeIpAddress(v) !== null || normalizeDomainName(v) !== null, 'must be an IP address or a host name')
          .describe('The address or name the remote tests (this server as the Internet sees it: NAT, a load balancer). Null: each listener\'s bound address; a wildcard bind: the first of audit.addresses.'),
      })
      .describe('A remote relayguard tests this server with its web tester (its web.tester.allowTargets must allow our addresses).'),
  });
const vantageEntry = () => z.union([z.literal('local'), remoteVantage()]);

export const LISTENER_ROLES = ['mx', 'submission'] as const;
export type ListenerRole = (typeof LISTENER_ROLES)[number];
export const TLS_MODES = ['none', 'starttls', 'implicit'] as const;
export type TlsMode = (typeof TLS_MODES)[number];
export const LOG_LEVELS = ['debug', 'info', 'warn', 'error', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export const LOG_FORMATS = ['json', 'text'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];
export const RELAY_ACTIONS = ['relay', 'reject'] as const;
export type RelayAction = (typeof RELAY_ACTIONS)[number];

const LISTENER_NAME = /^[a-z0-9][a-z0-9_-]{0,31}$/i;

/** The port a listener gets when none is given. */
export function defaultListenerPort(role: ListenerRole, tls: TlsMode): number {
  if (role === 'mx') return 2525;
  return tls === 'implicit' ? 2465 : 2587;
}

const listenerSchema = z.strictObject({
  name: z
    .string()
    .regex(LISTENER_NAME, 'must be 1-32 letters, digits, "-" or "_", starting with a letter or digit')
    .optional()
    .describe('Unique name, used in logs and metrics.')
    .meta({ 'x-default': '"<role>-<port>"' } satisfies Meta),
  role: z
    .enum(LISTENER_ROLES)
    .describe('`mx`: inbound mail; relays only for trustedNetworks. `submission`: mail from your users; AUTH is always required.'),
  address: ipAddress().prefault('127.0.0.1').describe('Address to bind. `0.0.0.0` or `::` for all interfaces.'),
  port: port()
    .optional()
    .describe('TCP port; 0 picks a free port (tests).')
    .meta({ 'x-default': '2525 for mx; 2465 for submission with implicit TLS; else 2587' } satisfies Meta),
  tls: z
    .enum(TLS_MODES)
    .default('starttls')
    .describe('`starttls`: offered, not required (submission still needs TLS before AUTH); `implicit`: TLS from the first byte; `none`: no TLS.'),
  proxyProtocol: z
    .boolean()
    .default(false)
    .describe('Expect a PROXY v1/v2 header first. Honoured only from trustedProxies; other peers are refused.'),
});

type ListenerInput = z.output<typeof listenerSchema>;

function effectiveListener(l: ListenerInput): { name: string; port: number } {
  const p = l.port ?? defaultListenerPort(l.role, l.tls);
  return { name: l.name ?? `${l.role}-${p}`, port: p };
}

const DEFAULT_LISTENERS = [
  { name: 'mx', role: 'mx', address: '127.0.0.1', port: 2525, tls: 'starttls' },
  { name: 'submission', role: 'submission', address: '127.0.0.1', port: 2587, tls: 'starttls' },
  { name: 'submissions', role: 'submission', address: '127.0.0.1', port: 2465, tls: 'implicit' },
] as const;

const relayRuleSchema = z.strictObject({
  match: z
    .strictObject({
      network: cidr().optional().describe('Client address is inside this network.'),
      senderDomain: domain().optional().describe('Envelope sender domain (never grants relay on its own: it is forged at will).'),
      recipientDomain: domain().optional().describe('Recipient domain.'),
    })
    .prefault({})
    .describe('All given conditions must hold; an empty match matches everything.'),
  action: z.enum(RELAY_ACTIONS).describe('`relay` permits, `reject` denies with 554 5.7.1.'),
});

const WILDCARDS = new Set(['0.0.0.0', '::']);

export const configSchema = z
  .strictObject({
    hostname: z
      .string()
      .transform((v, ctx) => {
        const d = normalizeDomainName(v);
        if (d === null) {
          ctx.addIssue({ code: 'custom', message: `${show(v)} is not a valid host name`, input: v });
          return z.NEVER;
        }
        return d;
      })
      .optional()
      .describe('Name used in the greeting, EHLO reply and Received: headers. Should be a fully qualified name.')
      .meta({ 'x-type': 'domain', 'x-default': "the machine's name (os.hostname())" } satisfies Meta),
    node: z
      .string()
      .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, 'must be letters, digits, dots, dashes or underscores (at most 63)')
      .optional()
      .describe('This node\'s name in a cluster: recorded on each message it receives and on the messages it delivers (`queue list` and `show` print it).')
      .meta({ 'x-default': "the machine's name (os.hostname())" } satisfies Meta),
    dataDir: pathString()
      .default('./relayguard-data')
      .describe('SQLite database, spool and generated keys. Relative to the config file\'s folder (or the working directory without a file).'),
    store: z
      .strictObject({
        postgres: z
          .strictObject({
            url: z
              .string()
              .regex(/^postgres(ql)?:\/\/\S*$/, 'must be a postgres:// or postgresql:// URL')
              .describe('libpq-style connection URL, e.g. `postgresql://relayguard@db.example.org:5432/relayguard?sslmode=verify-full`. Keep the password out of it (`config show` prints the URL): use ~/.pgpass or $PGPASSWORD of the relayguard user.'),
            poolSize: count(1, 1000).default(10).describe('Connections each relayguard process keeps to PostgreSQL.'),
            leaseTime: duration({ min: 1000, max: 3_600_000 }).prefault('30s').describe('The mail queue on PostgreSQL: a node renews its heartbeat every third of this; the messages a node was delivering are taken over by the other nodes once its heartbeat is this old (a dead or partitioned node). Longer than any pause of a healthy node.'),
          })
          .nullable()
          .prefault(null)
          .describe('The mail queue, users, local domains, aliases and the AUTH failure counters in PostgreSQL, shared by every node (`serve`, the `queue`, `user`, `domain` and `alias` commands); run `relayguard db migrate` first, a node checks the schema when it starts. Null: the embedded SQLite database in dataDir. A node refuses a schema older or newer than its own.'),
      })
      .prefault({})
      .describe('Where shared state lives: the embedded SQLite database in dataDir (default), or PostgreSQL.'),
    user: z
      .string()
      .regex(/^[a-z_][a-z0-9_-]{0,31}\$?$/i, 'must be a user name')
      .nullable()
      .prefault(null)
      .describe('Started as root, `serve` binds its ports, hands dataDir to this user and drops to it (and `group`) before reading any client byte. Null: keep the identity it was started with (a warning when that is root).'),
    group: z
      .string()
      .regex(/^[a-z_][a-z0-9_-]{0,31}\$?$/i, 'must be a group name')
      .nullable()
      .prefault(null)
      .describe('Group to drop to with `user`. Null: the user\'s primary group.'),
    workers: z
      .union([z.literal('auto'), count(1, 256)])
      .default(1)
      .meta({ 'x-type': 'integer 1-256 or `auto`' } satisfies Meta)
      .describe('SMTP worker processes of `serve` (node:cluster): the primary holds the listening sockets and supervises, each worker accepts connections, runs the receive path and owns a queue shard (its own queue database, spool and queue runner: dataDir itself for worker 0, dataDir/shards/N for the others); users, domains and aliases stay shared in dataDir/relayguard.db, the ORDB runs in worker 0 only. `auto`: one per core. 1 (the default): one process, exactly as without workers. Changing it needs a restart. See docs/cluster.md.'),
    listeners: z
      .array(listenerSchema)
      .max(64)
      .superRefine((list, ctx) => {
        const names = new Map<string, number>();
        list.forEach((l, i) => {
          const { name } = effectiveListener(l);
          const prev = names.get(name);
          if (prev !== undefined) ctx.addIssue({ code: 'custom', path: [i, 'name'], message: `duplicate listener name "${name}" (also listeners[${prev}])` });
          else names.set(name, i);
        });
      })
      .prefault(DEFAULT_LISTENERS.map((l) => ({ ...l })))
      .describe('SMTP listeners. An empty list runs no SMTP service.'),
    trustedNetworks: uniqueList(cidr(), 1000)
      .prefault(['127.0.0.0/8', '::1/128'])
      .describe('Clients allowed to relay without AUTH (Postfix mynetworks). Keep it to loopback and your own private networks.'),
    trustedProxies: uniqueList(cidr(), 1000)
      .prefault([])
      .describe('Peers whose PROXY header is believed, on listeners with proxyProtocol. Only your load balancers.'),
    localDomains: uniqueList(mailDomain(), 10_000)
      .prefault(['localhost'])
      .describe('Domains delivered here. More can be managed in the database (`relayguard domain add`).'),
    relayDomains: uniqueList(mailDomain(), 10_000)
      .prefault([])
      .describe('Other domains accepted from anyone and relayed onwards (backup MX, internal hosts).'),
    recipients: z
      .strictObject({
        postmaster: mailAddress()
          .nullable()
          .prefault(null)
          .describe('Who receives postmaster@ and abuse@ of every local domain and own address literal (RFC 5321 4.5.1, RFC 2142). Null: the mailbox postmaster@<first local domain>.'),
        abuse: mailAddress().nullable().prefault(null).describe('Who receives abuse@. Null: the postmaster.'),
        delimiter: z
          .string()
          .max(8)
          .regex(/^[+\-=_.]*$/, 'must be made of + - = _ .')
          .default('+')
          .describe('Recipient delimiter: alice+tag@ is delivered to alice@ when alice+tag has no entry of its own. "" turns it off.'),
        foldCase: z.boolean().default(true).describe('Local parts are case-insensitive (Alice@ is alice@). False keeps them case-sensitive.'),
        aliasFiles: z
          .array(pathString())
          .max(64)
          .prefault([])
          .describe('Alias files in Postfix virtual(5)/aliases(5) form ("sales@example.org  alice@example.org, bob@example.org"; "@example.org  x@example.org" is a catch-all). Relative to the config file. Re-read when they change.'),
        allowRemoteAliasTargets: z
          .boolean()
          .default(false)
          .describe('Let alias files forward to addresses outside the local domains (the CLI asks for --remote per alias instead).'),
      })
      .prefault({})
      .describe('Local recipients: unknown users are refused at RCPT (550 5.1.1); users, aliases and the role accounts exist.'),
    relayRules: z
      .array(relayRuleSchema)
      .max(1000)
      .prefault([])
      .describe('Extra ordered relay rules, first match wins, evaluated after the built-in ones; relaying stays denied when none matches. The last rule must be a reject.'),
    tls: z
      .strictObject({
        cert: pathString().nullable().default(null).describe('PEM certificate chain. Null: a self-signed certificate is generated in dataDir on first start.'),
        key: pathString().nullable().default(null).describe('PEM private key; set together with cert.'),
        minVersion: z.enum(['TLSv1.2', 'TLSv1.3']).default('TLSv1.2').describe('Oldest TLS version accepted (TLS 1.0/1.1 are never accepted).'),
      })
      .superRefine((t, ctx) => {
        if ((t.cert === null) !== (t.key === null)) {
          const missing = t.cert === null ? 'cert' : 'key';
          ctx.addIssue({ code: 'custom', path: [missing], message: `must be set together with tls.${missing === 'cert' ? 'key' : 'cert'}` });
        }
      })
      .prefault({})
      .describe('Server certificate for STARTTLS and implicit TLS.'),
    smtp: z
      .strictObject({
        bareLineEndings: z
          .enum(['reject', 'normalize'])
          .default('reject')
          .describe('Bare CR or LF in DATA: `reject` the message (smuggling defence) or `normalize` it to CRLF.'),
        requireTlsForAuth: z
          .boolean()
          .default(true)
          .describe('Offer and accept AUTH only inside TLS. Setting it to false is a hazard `config check` reports.'),
        greetDelay: duration({ min: 0, max: 60_000 })
          .prefault(0)
          .describe('Wait this long before the 220 greeting; a client that talks first is disconnected with 554 5.5.0 (postscreen-style pregreet test). 0 turns it off.'),
      })
      .prefault({})
      .describe('Protocol behaviour.'),
    limits: z
      .strictObject({
        messageSize: size({ min: 1024 }).prefault(26_214_400).describe('Largest message accepted (SIZE).'),
        recipients: count(1, 100_000).default(1000).describe('Recipients per message.'),
        errors: count(1, 1000).default(20).describe('Protocol errors per session before 421 and close.'),
        connectionsPerIp: count(1, 1_000_000).default(50).describe('Concurrent connections per client (IPv4 address or IPv6 /64), counted by each relayguard process (node or worker); across a cluster, limit per client at the load balancer too (HAProxy stick table: conn_cur, conn_rate).'),
        connections: count(1, 1_000_000).default(10_000).describe('Concurrent connections in total.'),
        idleTimeout: duration({ min: 1000 }).prefault('300s').describe('Time allowed for the client to send a command.'),
        sessionTimeout: duration({ min: 1000 }).prefault('1h').describe('Longest session, whatever the activity.'),
        dataTimeout: duration({ min: 1000 }).prefault('10m').describe('Longest DATA or BDAT transfer of one message.'),
        proxyTimeout: duration({ min: 100 }).prefault('5s').describe('Time allowed for a PROXY header to arrive.'),
        hopCount: count(1, 10_000).default(100).describe('Most Received: headers before a message is rejected as looping.'),
        commandLineLength: count(512, 65_536)
          .default(2048)
          .describe('Longest command line in bytes including CRLF (at least 512, RFC 5321; ESMTP parameters need more).'),
        authFailuresPerIp: count(1, 1_000_000).default(10).describe('Failed AUTH attempts per client within authFailureWindow before AUTH is refused (450 4.7.1). With store.postgres the count is shared by every node (guesses spread over nodes meet the same limit).'),
        authFailureWindow: duration({ min: 1000 }).prefault('60s').describe('Sliding window for authFailuresPerIp.'),
        shutdownGrace: duration({ min: 0, max: 3_600_000 }).prefault('30s').describe('On SIGTERM/SIGINT, how long transactions in progress may finish (each session gets 421 as soon as it is between transactions) before the rest are cut with 421.'),
      })
      .prefault({})
      .describe('Resource limits (Postfix anvil and smtpd limits).'),
    log: z
      .strictObject({
        level: z.enum(LOG_LEVELS).default('info').describe('Lowest level written.'),
        format: z
          .enum(LOG_FORMATS)
          .default('json')
          .describe('`json`: one JSON object per line (for log shippers). `text`: one Postfix-like line per event for people and grep, `TIME relayguard[PID]: LEVEL: MESSAGE: client=[IP] helo=<...> from=<...> to=<...> reply="..."`. Both escape what clients typed and write the client address first; the fail2ban filter in deploy/fail2ban reads both.'),
      })
      .prefault({})
      .describe('Logging to stdout: one line per event.'),
    dnsblChecks: z
      .array(
        z.strictObject({
          zone: domain().describe('DNSBL zone to query.'),
          weight: z.number().positive().max(1000).default(1).describe('Score added when the client is listed.'),
        }),
      )
      .max(32)
      .superRefine((list, ctx) => {
        const seen = new Set<string>();
        list.forEach((c, i) => {
          if (seen.has(c.zone)) ctx.addIssue({ code: 'custom', path: [i, 'zone'], message: `duplicate zone "${c.zone}"` });
          seen.add(c.zone);
        });
      })
      .prefault([])
      .describe('DNS blocklists consulted for incoming connections.'),
    dnsblThreshold: z.number().positive().max(100_000).default(1).describe('Total weight of the dnsblChecks zones listing a client at which its mail is refused (postscreen-style scoring).'),
    dnsblResolver: z
      .strictObject({
        servers: z.array(z.string()).default([]).describe('DNS servers ("ip" or "ip:port") for DNSBL lookups. Empty: the system resolver.'),
        timeout: duration({ min: 100, max: 30_000 }).prefault('5s').describe('Lookup timeout; a lookup that times out never blocks.'),
        minTtl: duration({ min: 0 }).prefault('60s').describe('Shortest time a DNSBL answer is cached.'),
        maxTtl: duration({ min: 1000 }).prefault('1h').describe('Longest time a DNSBL answer is cached.'),
        negativeTtl: duration({ min: 0 }).prefault('60s').describe('Time a "not listed" answer is cached.'),
        healthCheckInterval: duration({ min: 1000 }).prefault('10m').describe('How often each zone is checked with the RFC 5782 test points; a zone that lists 127.0.0.1 (lists the world) or not 127.0.0.2 is disabled until it passes.'),
      })
      .prefault({})
      .describe('How the relay queries dnsblChecks zones.'),
    dnsbl: z
      .strictObject({
        enabled: z.boolean().default(true).describe('Run the ORDB DNS server and its tester worker (see schedulerInterval).'),
        zone: domain().prefault('relays.localhost').describe('Zone served (listings appear as <reversed-ip>.<zone>).'),
        listen: z
          .strictObject({
            address: ipAddress().prefault('127.0.0.1').describe('Address to bind (UDP and TCP).'),
            port: port().default(5353).describe('Port (UDP and TCP); 0 picks a free one.'),
          })
          .prefault({}),
        ttl: duration({ min: 0 }).prefault('35m').describe('TTL of listing answers (rbldnsd\'s default).'),
        evidenceUrl: z
          .string()
          .nullable()
          .optional()
          .describe('Evidence page named in TXT answers; "$" is the address. Null: no link. Unset: the public lookup page of this instance\'s web service, `<web.publicUrl>/dnsbl/lookup?ip=$`, else `http(s)://<web.public or the admin listener>/dnsbl/lookup?ip=$` (a wildcard address is replaced by `hostname`).')
          .meta({ 'x-default': 'the lookup page of the web service' } satisfies Meta),
        axfrAllow: uniqueList(cidr(), 1000).prefault([]).describe('Networks allowed to transfer the zone (AXFR over TCP).'),
        nameservers: z
          .array(z.strictObject({
            name: domain().describe('Name server host name.'),
            addresses: z.array(ipAddress()).max(16).prefault([]).describe('Its addresses: required (as glue) when the name lies inside the zone, ignored otherwise.'),
          }))
          .max(16)
          .prefault([])
          .describe('The zone\'s NS set: this server and its secondaries, as resolvers should see them. Empty: `hostname` alone (with `dnsbl.listen.address` as glue when `hostname` lies inside the zone).'),
        soa: z
          .strictObject({
            contact: z.string().regex(/^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+$/, 'an e-mail address whose local part has no dot, e.g. hostmaster@example.org').nullable().prefault(null)
              .describe('The zone\'s contact (SOA RNAME), as an e-mail address. Null: hostmaster@<zone>.'),
            refresh: duration({ min: 1000 }).prefault('1h').describe('SOA refresh: how often secondaries check the serial (NOTIFY makes them check at once).'),
            retry: duration({ min: 1000 }).prefault('10m').describe('SOA retry: how soon a secondary retries a failed refresh.'),
            expire: duration({ min: 1000 }).prefault('3d').describe('SOA expire: how long a secondary keeps answering without reaching the primary.'),
            minimum: duration({ min: 0 }).prefault('5m').describe('SOA minimum: the TTL of negative answers (RFC 2308).'),
          })
          .prefault({})
          .describe('SOA fields of the zone (the serial follows the listing store).'),
        notify: z.array(z.strictObject({
          address: ipAddress(),
          port: port().default(53),
          key: z.string().nullable().prefault(null).describe('Name of the TSIG key (of `dnsbl.tsigKeys`) that signs the NOTIFY. Null: unsigned.'),
        })).max(64).prefault([]).describe('Secondaries sent a NOTIFY when the zone changes (and at start-up).'),
        tsigKeys: z
          .array(z.strictObject({
            name: domain().describe('Key name, as the secondaries name it.'),
            algorithm: z.literal('hmac-sha256').default('hmac-sha256').describe('HMAC algorithm (RFC 8945): hmac-sha256.'),
            secret: z.string().refine((v) => /^[A-Za-z0-9+/]+={0,2}$/.test(v) && Buffer.from(v, 'base64').length >= 16, 'base64, at least 16 bytes (e.g. `openssl rand -base64 32` or `tsig-keygen`)').describe('The shared secret, base64.'),
          }))
          .max(64)
          .prefault([])
          .describe('TSIG keys (RFC 8945): signed queries and transfers are checked and answered signed; NOTIFY to a target with `key` is signed.'),
        transferRequiresTsig: z.boolean().nullable().prefault(null).describe('Zone transfers need a valid TSIG signature as well as an address in `axfrAllow`. Null: yes when `tsigKeys` is not empty.'),
        probeDomain: domain().nullable().prefault(null).describe('Proof mode: tagged probes go to this domain (you control it; its MX reaches dnsbl.sink). Null: safe mode, and nothing is listed automatically.'),
        sink: z
          .strictObject({ address: ipAddress().prefault('0.0.0.0'), port: port().default(25) })
          .prefault({})
          .describe('The proof-mode probe sink listener (only with probeDomain).'),
        probeWait: duration({ min: 1000 }).prefault('60s').describe('How long proof mode waits for a probe to arrive.'),
        testPorts: z.array(z.union([z.number(), z.string()])).min(1).max(16).prefault([25, 587, 465]).describe('Ports a submitted host is tested on (PORT or PORT:ROLE).'),
        proxySink: z
          .strictObject({ address: ipAddress().prefault('127.0.0.1'), port: port().default(0) })
          .prefault({})
          .describe('Where the open-proxy check\'s sink listens (submissions with the proxy check): an SMTP-like listener that proxies are asked to connect to; a proxy is OPEN only when its connection arrives here. Port 0: any free port. The default (loopback) only proves loopback proxies: for real ones give a public address, or 0.0.0.0 with `dnsbl.proxyProbeAddress`. A control listener on a free port of the same address is opened too.'),
        proxyProbeAddress: ipAddress().nullable().prefault(null).describe('The proxy sink\'s address as the proxies should reach it (an IPv4 address). Null: `dnsbl.proxySink.address` (when it is not a wildcard). A loopback address is only given to loopback proxies: a remote proxy would connect to itself, so it is reported inconclusive.'),
        nntpPorts: z.array(z.union([z.int().min(1).max(65535), z.string().regex(/^\d{1,5}(:(nntp|nntps))?$/i, 'PORT or PORT:nntp / PORT:nntps')])).min(1).max(16).prefault([119, 563]).describe('Ports a host submitted with the nntp check is tested on (PORT or PORT:nntp / PORT:nntps; 563 is implicit TLS).'),
        nntpGroup: z.string().min(1).max(200).regex(/^[A-Za-z0-9+_-]+(\.[A-Za-z0-9+_-]+)*$/, 'a newsgroup name').nullable().prefault(null).describe('The test group of the nntp check (you name one meant for tests): a tagged article is posted there without AUTHINFO, read back (ARTICLE/HEAD/GROUP) and cancelled; only an article read back lists a server under open-nntp. Null: the nntp check is safe (it posts nothing), so a server that answers POST with 340 is reported but never listed.'),
        proxyPorts: z.array(z.int().min(1).max(65535)).min(1).max(32).prefault([80, 81, 1080, 3128, 8000, 8080, 8081, 8888, 23]).describe('Ports a host submitted with the proxy check is tested on (HTTP CONNECT/POST/GET, SOCKS4/4a/5, telnet gateways on each).'),
        sourceAddress: ipAddress().nullable().prefault(null).describe('Source address of the tester. Null: the system\'s choice.'),
        testBudget: duration({ min: 1000 }).prefault('5m').describe('Time budget of one host test.'),
        retestInterval: duration({ min: 60_000 }).prefault('7d').describe('Listed hosts are retested this often (and on a delisting request).'),
        retryInterval: duration({ min: 1000 }).prefault('1h').describe('Retry delay after an inconclusive test.'),
        submissionsPerHour: count(1, 1_000_000).default(10).describe('Submissions accepted per submitter and hour.'),
        excluded: uniqueList(cidr(), 100_000).prefault([]).describe('Networks never tested and never listed.'),
        allowPrivateTargets: z.boolean().default(false).describe('Accept loopback, private and reserved addresses as submissions (labs and tests).'),
        schedulerInterval: duration({ min: 0 }).prefault('60s').describe('How often the tester worker inside `serve` looks for due tests and retests (test jobs); 0: `serve` runs no tests, leaving them to `relayguard dnsbl worker` processes. A worker with free slots claims again as soon as a test ends.'),
        testConcurrency: count(1, 64).default(2).describe('Host tests run at once by the worker inside `serve` (and by `relayguard dnsbl worker` unless --concurrency).'),
        jobLease: duration({ min: 2000, max: 3_600_000 }).prefault('60s').describe('How long a worker\'s claim on a test job lasts; it is renewed every third of this while the test runs. A worker killed mid-test loses its jobs to the other workers this long after its last renewal.'),
        udpThreads: count(1, 64).default(1).describe('UDP answering threads on the DNS port (SO_REUSEPORT); more than 1 helps on machines with spare cores.'),
        tcp: z
          .strictObject({
            maxConnections: count(1, 100_000).default(128).describe('Open DNS-over-TCP connections in total. When all are taken, a new client takes the slot of the connection idle longest.'),
            maxConnectionsPerClient: count(1, 100_000).default(16).describe('Open TCP connections per client (an IPv4 address or an IPv6 /64); more are refused at once.'),
            idleTimeout: duration({ min: 100, max: 3_600_000 }).prefault('10s').describe('Time a TCP connection has to complete a query after it opened or after its last answer. Bytes of an unfinished query do not extend it (RFC 7766).'),
            sessionTimeout: duration({ min: 100, max: 86_400_000 }).prefault('60s').describe('Longest life of a TCP connection, whatever it does (an answer or zone transfer in progress is finished first).'),
          })
          .prefault({})
          .describe('DNS over TCP limits against slow and greedy clients (RFC 7766 6.2.3).'),
      })
      .prefault({})
      .describe('The open-relay DNS blocklist this instance publishes.'),
    delivery: z
      .strictObject({
        enabled: z
          .boolean()
          .default(true)
          .describe('Run the queue runner in `serve`. False keeps accepted mail in the queue (like a stopped qmgr); `queue list` still shows it.'),
        localTransport: z
          .union([
            z.strictObject({ maildir: z.string().min(1).describe('Maildir root: ROOT/<domain>/<local part>/{tmp,new,cur}; relative to dataDir.') }),
            z.strictObject({ discard: z.literal(true).describe('Accept and drop local mail (benchmarks, sink domains), like Postfix discard(8).') }),
            z.strictObject({ lmtp: z.string().refine((v) => parseHostPort(v) !== null, 'must be "host:port"').describe('LMTP next hop "host:port".') }),
            z.strictObject({ smtp: z.string().refine((v) => parseHostPort(v) !== null, 'must be "host:port"').describe('SMTP next hop "host:port" (a mailbox server behind us).') }),
          ])
          .prefault({ maildir: 'mailboxes' })
          .describe('Where mail for local domains goes. Default: Maildir folders under dataDir/mailboxes.'),
        mxPort: z.number().int().min(1).max(65535).default(25).describe('TCP port used for MX and address-literal next hops.'),
        dnsServers: z
          .array(z.string())
          .default([])
          .describe('DNS servers ("ip" or "ip:port") for MX/A/AAAA/TLSA/TXT lookups. Empty: the system resolver configuration.'),
        allowPrivateMx: z
          .boolean()
          .default(false)
          .describe('Deliver to MX hosts with RFC 1918, ULA or link-local addresses (internal deployments). Loopback and our own listeners are always refused as loops.'),
        allowLoopbackMx: z
          .boolean()
          .default(false)
          .describe('Deliver to MX hosts on loopback (test rigs where the next hop runs on this machine). Our own MX listeners are still refused as loops.'),
        dkim: z
          .array(
            z.strictObject({
              domain: z.string().min(1),
              selector: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9-]*(\.[A-Za-z0-9][A-Za-z0-9-]*)*$/, 'must be a DNS label'),
              keyFile: z.string().min(1).describe('PEM private key; relative to dataDir (`relayguard dkim keygen` writes dkim/<domain>.<selector>.key).'),
            }),
          )
          .default([])
          .describe('DKIM signing keys: outgoing mail whose From: domain matches is signed.'),
        smartHost: z
          .string()
          .transform((v, ctx) => {
            const hp = parseHostPort(v);
            if (hp === null) {
              ctx.addIssue({ code: 'custom', message: `${show(v)} is not "host", "host:port" or "[ip]:port"`, input: v });
              return z.NEVER;
            }
            return hp;
          })
          .nullable()
          .prefault(null)
          .describe('Send all non-local mail through this host ("host", "host:port", "[ip]:port"; port 25 by default). Null: deliver by MX.')
          .meta({ 'x-type': 'host[:port]' } satisfies Meta),
        bounces: z
          .strictObject({
            perRecipient: count(0, 1_000_000).default(10).describe('Most delivery status notifications sent to one address per window; more are logged and dropped. 0: no limit.'),
            perDomain: count(0, 1_000_000).default(100).describe('Most notifications sent to one domain per window. 0: no limit.'),
            window: duration({ min: 1000 }).prefault('1h').describe('The rate-limit window.'),
          })
          .prefault({})
          .describe('Bounce (DSN) rate limits per destination, so bounces cannot be turned into a mail cannon.'),
        retry: z
          .strictObject({
            minimalBackoff: duration({ min: 1000 }).prefault('5m').describe('First retry delay; it doubles after each failure.'),
            maximalBackoff: duration({ min: 1000 }).prefault('4h').describe('Longest retry delay.'),
            lifetime: duration({ min: 60_000, max: 365 * DAY_MS }).prefault('5d').describe('Time in the queue before a message bounces.'),
          })
          .superRefine((r, ctx) => {
            if (r.minimalBackoff > r.maximalBackoff) ctx.addIssue({ code: 'custom', path: ['minimalBackoff'], message: 'must not exceed delivery.retry.maximalBackoff' });
            if (r.maximalBackoff > r.lifetime) ctx.addIssue({ code: 'custom', path: ['maximalBackoff'], message: 'must not exceed delivery.retry.lifetime' });
          })
          .prefault({}),
      })
      .prefault({})
      .describe('Outbound delivery.'),
    web: z
      .strictObject({
        enabled: z.boolean().default(true).describe('Run the web service: admin dashboard, HTTP API and /metrics (and the public listener when set). With `workers` > 1, worker 0 runs it.'),
        address: ipAddress().prefault('127.0.0.1').describe('Address of the admin listener (dashboard, /api, /metrics, /health).'),
        port: port().default(8025).describe('TCP port of the admin listener.'),
        tls: z.boolean().default(false).describe('Serve HTTPS on the web listeners, with the certificate of `tls` (the SMTP one; generated when none is set). Session cookies are then marked Secure.'),
        public: z
          .strictObject({
            address: ipAddress().describe('Address of the public listener.'),
            port: port().describe('TCP port of the public listener.'),
          })
          .nullable()
          .prefault(null)
          .describe('The public listener (/health; the public ORDB pages), apart from the admin one so the admin surface need not be published. null: none.'),
        publicUrl: z
          .string()
          .max(200)
          .refine((v) => publicUrlOk(v), 'must be an http:// or https:// URL without query or fragment, e.g. "https://ordb.example.org"')
          .transform((v) => v.replace(/\/+$/, ''))
          .nullable()
          .prefault(null)
          .describe('Where the world reaches the public pages (a reverse proxy in front of web.public), e.g. `https://ordb.example.org`: the default `dnsbl.evidenceUrl` links there. Null: the public listener\'s (else the admin listener\'s) own address.'),
        ordb: z
          .strictObject({
            lookupsPerMinute: count(1, 1_000_000).default(60).describe('Public ORDB lookups (/dnsbl/lookup and its JSON twin) per client address (IPv6: per /64) and minute; more get 429 with Retry-After.'),
            delistingPerClientPerHour: count(1, 1_000_000).default(5).describe('Public delisting requests (each starts a retest) per client address (IPv6: per /64) and hour.'),
            delistingPerAddressPerHour: count(1, 1_000_000).default(2).describe('Public delisting requests per listed address and hour, whoever asks (the relay is not hammered with tests).'),
          })
          .prefault({})
          .describe('The ORDB pages of the web service: the admin view and API (/ordb, /api/ordb) and the public lookup, delisting and policy pages (/dnsbl/...), served on web.public when set, else on the admin listener.'),
        sessionLifetime: duration({ min: 60_000, max: 30 * DAY_MS }).prefault('12h').describe('How long a dashboard login lasts.'),
        loginFailuresPerIp: count(1, 1000).default(5).describe('Failed logins (or bad API tokens) allowed per client address within loginFailureWindow; more get 429.'),
        loginFailureWindow: duration({ min: 1000 }).prefault('15m').describe('The login throttle window.'),
        decisionRetention: z
          .strictObject({
            maxAge: duration({ min: 60_000, max: 365 * DAY_MS }).prefault('7d').describe('Relay decisions older than this are deleted.'),
            maxRows: count(1000, 100_000_000).default(1_000_000).describe('At most this many relay decisions are kept (the newest).'),
          })
          .prefault({})
          .describe('How long the relay-decision log (`/api/decisions`: every recipient decision, written in batches to dataDir/decisions.db or the PostgreSQL table relay_decisions) is kept; pruned once a minute by whichever limit is reached first. About 300 bytes a row: the default stays under ~0.5 GB.'),
        tester: z
          .strictObject({
            enabled: z.boolean().default(true).describe('Offer the open-relay tester on the dashboard and at /api/tester/runs.'),
            maxConcurrent: count(1, 64).default(2).describe('Tester runs at the same time; one more is refused with 429 ERR_TESTER_BUSY (and Retry-After) until one ends.'),
            allowTargets: uniqueList(cidr(), 1000)
              .prefault([])
              .describe('Networks the web tester may test although they are loopback, private (RFC 1918, ULA), link-local, CGNAT, multicast or reserved; every other such address is refused (400 ERR_TESTER_TARGET_FORBIDDEN) so the form cannot reach into the operator\'s own network. Example: ["127.0.0.0/8"] for a lab.'),
            ports: z.array(z.union([z.number(), z.string()])).min(1).max(16).prefault([25, 587, 465]).describe('Ports tested when a run names none (PORT or PORT:ROLE, as `relayguard test --port`).'),
            sourceAddress: ipAddress().nullable().prefault(null).describe('Source address of the web tester. Null: the system\'s choice.'),
            budget: duration({ min: 1000, max: DAY_MS }).prefault('5m').describe('Longest a run may take per target address; a run may ask for less.'),
            keepRuns: count(10, 10_000_000).default(1000).describe('Finished runs kept (dataDir/tester-runs.db, or the PostgreSQL table tester_runs); older ones are deleted when a run starts.'),
            proof: z
              .strictObject({
                probeDomain: domain().describe('The domain the probes go to (you control it; its MX reaches the sink).'),
                sink: z
                  .strictObject({ address: ipAddress().prefault('0.0.0.0'), port: port().default(25) })
                  .prefault({})
                  .describe('Where the web tester\'s probe sink listens (not the ORDB\'s dnsbl.sink: give another port when both are on).'),
                wait: duration({ min: 1000, max: 3_600_000 }).prefault('30s').describe('How long a proof-mode run waits for its probes.'),
              })
              .nullable()
              .prefault(null)
              .describe('Proof mode for web runs (mode "prove": one tagged probe per accepted trick, OPEN only when it arrives). Null: only safe mode.'),
          })
          .prefault({})
          .describe('The web tester (an MX Toolbox that tells the truth): `relayguard test` from the dashboard and the API, with its verdicts streamed trick by trick.'),
      })
      .prefault({})
      .describe('The web service: admin dashboard and HTTP API behind a login (admins: `relayguard admin add`), Prometheus /metrics, /health.'),
    audit: z
      .strictObject({
        enabled: z.boolean().default(false).describe('Run the self-audit inside `serve` every `interval` (also on demand: POST /api/self-audit/run). `relayguard audit` runs it once whatever this says.'),
        interval: duration({ min: 60_000 }).prefault('1d').describe('Time between two scheduled audits (the first runs at start when none is stored for this node).'),
        timeout: duration({ min: 1000, max: 3_600_000 }).prefault('10m').describe('Time budget of each check; a check that takes longer is reported unreachable and the others still run.'),
        keep: count(1, 100_000).default(400).describe('Reports kept per node (dataDir/audit.db, or the PostgreSQL table audit_reports with store.postgres).'),
        addresses: uniqueList(ipAddress(), 1000)
          .prefault([])
          .describe('Addresses the server receives on and sends from, checked against the blocklists. Empty: the public addresses of the listeners (a wildcard bind: of the interfaces); loopback and private addresses are only checked when listed here.'),
        relay: z
          .strictObject({
            enabled: z.boolean().default(true).describe('Test every SMTP listener with the tester\'s full battery from an untrusted address.'),
            sourceAddress: ipAddress().nullable().prefault(null).describe('The IPv4 vantage address the tests of IPv4 listeners come from (must not be trusted). Null: the first loopback address outside every loopback or private trustedNetworks entry (127.0.0.2 with trustedNetworks 127.0.0.1/32).'),
            sourceAddress6: ipAddress().nullable().prefault(null).describe('The IPv6 vantage address for IPv6 listeners. Null: ::1 unless it is trusted (then IPv6 listeners are reported untested).'),
            probeDomain: domain().nullable().prefault(null).describe('Proof mode: probes go to this domain, whose mail must reach `sink`. Null: dnsbl.probeDomain; when that is null too, safe mode (an accepted relay recipient is still reported, but cannot be proved).'),
            sink: z
              .strictObject({
                address: ipAddress().prefault('127.0.0.1').describe('Address the sink listens on while the relay check runs.'),
                port: port().default(2526).describe('Its TCP port (where mail for the probe domain must arrive).'),
              })
              .prefault({})
              .describe('The probe sink the relay check starts while it runs (the tester\'s built-in sink).'),
            probeWait: duration({ min: 1000, max: 600_000 }).prefault('60s').describe('How long proof mode waits for the probes.'),
            vantage: z
              .union([vantageEntry(), z.array(vantageEntry()).min(1).max(8)])
              .default('local')
              .meta({ 'x-type': '`local`, `{remote: {...}}` or a list of them' } satisfies Meta)
              .describe('Where the relay is tested from. `local`: this host, from an untrusted loopback address (sourceAddress, probeDomain, sink, probeWait above). `{remote: {url, tokenFile, ca, proof, host}}`: another relayguard asked over its API (POST /api/tester/runs) to test every listener; `url` its web service (https, or http only on a network you trust), `tokenFile` a file with an API token of an admin there, `ca` the PEM its certificate must chain to (null: system CAs), `proof` proof mode (default false), `host` the address or name it tests (null: each listener\'s address). A remote that does not answer, refuses the token or the target, or times out is reported unreachable. A list: each tests every listener. See docs/audit.md.'),
          })
          .prefault({})
          .describe('Check 2: is the relay closed, proved from outside.'),
        mailDomains: z.boolean().default(true).describe('Check the DNS and TLS of every local domain (MX, FCrDNS, SPF, DMARC, MTA-STS, TLS-RPT, DANE, certificates, DKIM keys): check "dns", docs/audit-dns.md.'),
        blocklists: z
          .array(
            z.strictObject({
              zone: domain().describe('DNSBL zone.'),
              servers: z.array(dnsServer()).max(8).default([]).describe('DNS servers ("ip" or "ip:port") for this zone. Empty: audit.dnsServers.'),
              delistUrl: z.string().nullable().prefault(null).describe('Delisting page; "$" is the address. Null: the link in the zone\'s TXT reason.'),
              testPoints: z.enum(['rfc5782', 'unlisted-only']).default('rfc5782').describe('`rfc5782`: 127.0.0.2 must be listed and 127.0.0.1 not; `unlisted-only`: only 127.0.0.1 is checked (zones that do not list 127.0.0.2).'),
            }),
          )
          .max(64)
          .prefault([
            { zone: 'zen.spamhaus.org', delistUrl: 'https://check.spamhaus.org/results/?query=$' },
            { zone: 'bl.spamcop.net', delistUrl: 'https://www.spamcop.net/bl.shtml?$' },
            { zone: 'b.barracudacentral.org', delistUrl: 'https://www.barracudacentral.org/rbl/removal-request/$' },
            { zone: 'psbl.surriel.com', delistUrl: 'https://psbl.org/listing?ip=$' },
            { zone: 'bl.mailspike.net', delistUrl: 'https://mailspike.org/anubis/lookup.html' },
          ])
          .describe('Check 3: the DNSBL zones the addresses are looked up in, each health-checked with the RFC 5782 test points first (a dead zone is reported unreachable, a zone that lists 127.0.0.1 broken, never as a listing).'),
        dnsServers: z.array(dnsServer()).max(8).default([]).describe('DNS servers ("ip" or "ip:port") for the blocklist lookups. Empty: dnsblResolver.servers, else the system resolver (Spamhaus refuses queries that come through large public resolvers).'),
        dnsTimeout: duration({ min: 100, max: 60_000 }).prefault('5s').describe('Time allowed for one DNS answer.'),
      })
      .prefault({})
      .describe('The self-audit (`relayguard audit`, and periodically inside `serve`): configuration lint, open relay proved from outside, blocklists, with the trend since the last audit.'),
  })
  .superRefine((c, ctx) => {
    // A NOTIFY key must be one of the TSIG keys.
    const keyNames = new Set(c.dnsbl.tsigKeys.map((k) => k.name.toLowerCase()));
    c.dnsbl.notify.forEach((n, i) => {
      if (n.key !== null && !keyNames.has(n.key.toLowerCase())) {
        ctx.addIssue({ code: 'custom', path: ['dnsbl', 'notify', i, 'key'], message: `no key named "${n.key}" in dnsbl.tsigKeys` });
      }
    });
    // Two TCP services on one port: the second bind would fail at start.
    type Bind = { address: string; port: number; path: (string | number)[]; label: string };
    const binds: Bind[] = c.listeners.map((l, i) => ({
      address: l.address,
      port: effectiveListener(l).port,
      path: ['listeners', i, l.port === undefined ? 'address' : 'port'],
      label: `listeners[${i}]`,
    }));
    if (c.web.enabled) binds.push({ address: c.web.address, port: c.web.port, path: ['web', 'port'], label: 'web' });
    if (c.web.enabled && c.web.public) binds.push({ address: c.web.public.address, port: c.web.public.port, path: ['web', 'public', 'port'], label: 'web.public' });
    if (c.dnsbl.enabled) binds.push({ address: c.dnsbl.listen.address, port: c.dnsbl.listen.port, path: ['dnsbl', 'listen', 'port'], label: 'dnsbl.listen' });
    // The two probe sinks (ORDB and web tester) are SMTP listeners too.
    if (c.dnsbl.enabled && c.dnsbl.probeDomain !== null) binds.push({ address: c.dnsbl.sink.address, port: c.dnsbl.sink.port, path: ['dnsbl', 'sink', 'port'], label: 'dnsbl.sink' });
    if (c.dnsbl.enabled) binds.push({ address: c.dnsbl.proxySink.address, port: c.dnsbl.proxySink.port, path: ['dnsbl', 'proxySink', 'port'], label: 'dnsbl.proxySink' });
    const proof = c.web.enabled && c.web.tester.enabled ? c.web.tester.proof : null;
    if (proof) binds.push({ address: proof.sink.address, port: proof.sink.port, path: ['web', 'tester', 'proof', 'sink', 'port'], label: 'web.tester.proof.sink' });
    binds.forEach((b, i) => {
      if (b.port === 0) return;
      const clash = binds.slice(0, i).find((o) => o.port === b.port && (o.address === b.address || WILDCARDS.has(o.address) || WILDCARDS.has(b.address)));
      if (clash) ctx.addIssue({ code: 'custom', path: b.path, message: `port ${b.port} on ${b.address} is already used by ${clash.label}` });
    });
  });

export type ConfigInput = z.input<typeof configSchema>;
type ParsedConfig = z.output<typeof configSchema>;

// ---------------------------------------------------------------------------------------------------------------
// The program's view

export interface ListenerConfig {
  readonly name: string;
  readonly role: ListenerRole;
  readonly address: string;
  readonly port: number;
  readonly tls: TlsMode;
  readonly proxyProtocol: boolean;
}

export interface RelayRule {
  readonly match: {
    /** Canonical CIDR. */
    readonly network?: string;
    /** Lower-case A-label domain. */
    readonly senderDomain?: string;
    readonly recipientDomain?: string;
  };
  readonly action: RelayAction;
}

export interface LimitsConfig {
  /** Bytes. */
  readonly messageSize: number;
  readonly recipients: number;
  readonly errors: number;
  readonly connectionsPerIp: number;
  readonly connections: number;
  /** Milliseconds. */
  readonly idleTimeout: number;
  /** Milliseconds. */
  readonly sessionTimeout: number;
  /** Milliseconds. */
  readonly dataTimeout: number;
  /** Milliseconds. */
  readonly proxyTimeout: number;
  readonly hopCount: number;
  /** Bytes including CRLF. */
  readonly commandLineLength: number;
  readonly authFailuresPerIp: number;
  /** Milliseconds. */
  readonly authFailureWindow: number;
  /** Milliseconds. */
  readonly shutdownGrace: number;
}

export interface Config {
  /** Absolute path of the file this came from, or null for built-in defaults / an in-memory object. */
  readonly configFile: string | null;
  readonly hostname: string;
  /** Absolute. */
  readonly dataDir: string;
  /** Null postgres: the embedded SQLite database in dataDir. */
  readonly store: { readonly postgres: { readonly url: string; readonly poolSize: number; readonly leaseTime: number } | null };
  /** This node's name (default: the machine's name). */
  readonly node: string;
  /** Drop to this user (and group) after binding, when started as root. */
  readonly user: string | null;
  readonly group: string | null;
  /** SMTP worker processes of serve (1: a single process; 'auto': one per core). */
  readonly workers: number | 'auto';
  readonly listeners: readonly ListenerConfig[];
  /** Canonical CIDRs (IPv4-mapped networks folded to IPv4, duplicates removed). */
  readonly trustedNetworks: readonly string[];
  readonly trustedProxies: readonly string[];
  /** Lower-case A-label domains without trailing dot. */
  readonly localDomains: readonly string[];
  readonly relayDomains: readonly string[];
  readonly relayRules: readonly RelayRule[];
  readonly recipients: {
    readonly postmaster: string | null;
    readonly abuse: string | null;
    readonly delimiter: string;
    readonly foldCase: boolean;
    /** Absolute paths. */
    readonly aliasFiles: readonly string[];
    readonly allowRemoteAliasTargets: boolean;
  };
  readonly tls: {
    /** Absolute path or null (self-signed). */
    readonly cert: string | null;
    readonly key: string | null;
    readonly minVersion: 'TLSv1.2' | 'TLSv1.3';
  };
  readonly smtp: {
    readonly bareLineEndings: 'reject' | 'normalize';
    readonly requireTlsForAuth: boolean;
    /** Milliseconds; 0 = greet at once. */
    readonly greetDelay: number;
  };
  readonly limits: LimitsConfig;
  readonly log: { readonly level: LogLevel; readonly format: LogFormat };
  readonly dnsblChecks: readonly { readonly zone: string; readonly weight: number }[];
  readonly dnsblThreshold: number;
  /** Durations in ms. */
  readonly dnsblResolver: {
    readonly servers: readonly string[];
    readonly timeout: number;
    readonly minTtl: number;
    readonly maxTtl: number;
    readonly negativeTtl: number;
    readonly healthCheckInterval: number;
  };
  /** Durations in ms. */
  readonly dnsbl: {
    readonly enabled: boolean;
    readonly zone: string;
    readonly listen: { readonly address: string; readonly port: number };
    readonly ttl: number;
    readonly evidenceUrl: string | null;
    readonly axfrAllow: readonly string[];
    readonly nameservers: readonly { readonly name: string; readonly addresses: readonly string[] }[];
    /** Durations in ms. */
    readonly soa: { readonly contact: string | null; readonly refresh: number; readonly retry: number; readonly expire: number; readonly minimum: number };
    readonly notify: readonly { readonly address: string; readonly port: number; readonly key: string | null }[];
    readonly tsigKeys: readonly { readonly name: string; readonly algorithm: 'hmac-sha256'; readonly secret: string }[];
    readonly transferRequiresTsig: boolean | null;
    readonly probeDomain: string | null;
    readonly sink: { readonly address: string; readonly port: number };
    readonly probeWait: number;
    readonly testPorts: readonly (number | string)[];
    readonly proxySink: { readonly address: string; readonly port: number };
    readonly proxyProbeAddress: string | null;
    readonly proxyPorts: readonly number[];
    readonly nntpPorts: readonly (number | string)[];
    readonly nntpGroup: string | null;
    readonly sourceAddress: string | null;
    readonly testBudget: number;
    readonly retestInterval: number;
    readonly retryInterval: number;
    readonly submissionsPerHour: number;
    readonly excluded: readonly string[];
    readonly allowPrivateTargets: boolean;
    readonly schedulerInterval: number;
    readonly testConcurrency: number;
    readonly jobLease: number;
    readonly udpThreads: number;
    /** Durations in ms. */
    readonly tcp: { readonly maxConnections: number; readonly maxConnectionsPerClient: number; readonly idleTimeout: number; readonly sessionTimeout: number };
  };
  readonly delivery: {
    readonly enabled: boolean;
    /** Absolute maildir root, or an LMTP/SMTP next hop. */
    readonly localTransport:
      | { readonly kind: 'maildir'; readonly root: string }
      | { readonly kind: 'discard' }
      | { readonly kind: 'lmtp' | 'smtp'; readonly host: string; readonly port: number };
    readonly mxPort: number;
    readonly dnsServers: readonly string[];
    readonly allowPrivateMx: boolean;
    readonly allowLoopbackMx: boolean;
    /** keyFile absolute. */
    readonly dkim: readonly { readonly domain: string; readonly selector: string; readonly keyFile: string }[];
    readonly smartHost: { readonly host: string; readonly port: number } | null;
    /** window in ms. */
    readonly bounces: { readonly perRecipient: number; readonly perDomain: number; readonly window: number };
    readonly retry: {
      /** Milliseconds. */
      readonly minimalBackoff: number;
      /** Milliseconds. */
      readonly maximalBackoff: number;
      /** Milliseconds. */
      readonly lifetime: number;
    };
  };
  readonly web: {
    readonly enabled: boolean;
    /** The admin listener. */
    readonly address: string;
    readonly port: number;
    readonly tls: boolean;
    readonly public: { readonly address: string; readonly port: number } | null;
    /** Base URL of the public pages (no trailing slash), or null. */
    readonly publicUrl: string | null;
    readonly ordb: { readonly lookupsPerMinute: number; readonly delistingPerClientPerHour: number; readonly delistingPerAddressPerHour: number };
    /** Milliseconds. */
    readonly sessionLifetime: number;
    readonly loginFailuresPerIp: number;
    /** Milliseconds. */
    readonly loginFailureWindow: number;
    /** maxAge in milliseconds. */
    readonly decisionRetention: { readonly maxAge: number; readonly maxRows: number };
    readonly tester: {
      readonly enabled: boolean;
      readonly maxConcurrent: number;
      readonly allowTargets: readonly string[];
      readonly ports: readonly (number | string)[];
      readonly sourceAddress: string | null;
      /** Milliseconds. */
      readonly budget: number;
      readonly keepRuns: number;
      /** wait in milliseconds. */
      readonly proof: { readonly probeDomain: string; readonly sink: { readonly address: string; readonly port: number }; readonly wait: number } | null;
    };
  };
  /** Durations in ms. */
  readonly audit: {
    readonly enabled: boolean;
    readonly interval: number;
    readonly timeout: number;
    readonly keep: number;
    readonly addresses: readonly string[];
    readonly relay: {
      readonly enabled: boolean;
      readonly sourceAddress: string | null;
      readonly sourceAddress6: string | null;
      readonly probeDomain: string | null;
      readonly sink: { readonly address: string; readonly port: number };
      readonly probeWait: number;
      /** At least one; paths absolute. */
      readonly vantage: readonly AuditVantage[];
    };
    readonly blocklists: readonly { readonly zone: string; readonly servers: readonly string[]; readonly delistUrl: string | null; readonly testPoints: 'rfc5782' | 'unlisted-only' }[];
    readonly dnsServers: readonly string[];
    readonly dnsTimeout: number;
    readonly mailDomains: boolean;
  };
}

/** A vantage point of the audit's relay check (audit.relay.vantage, normalized to a list). */
export type AuditVantage =
  | { readonly kind: 'local' }
  | { readonly kind: 'remote'; readonly url: string; readonly tokenFile: string; readonly ca: string | null; readonly proof: boolean; readonly host: string | null };

function vantagesOf(v: ParsedConfig['audit']['relay']['vantage'], resolve: (p: string) => string): AuditVantage[] {
  return (Array.isArray(v) ? v : [v]).map((e): AuditVantage => (e === 'local'
    ? { kind: 'local' }
    : { kind: 'remote', url: e.remote.url, tokenFile: resolve(e.remote.tokenFile), ca: e.remote.ca === null ? null : resolve(e.remote.ca), proof: e.remote.proof, host: e.remote.host }));
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

function defaultHostname(): string {
  return normalizeDomainName(osHostname()) ?? 'localhost';
}

/**
 * Turns the schema's output into the frozen Config: fills computed defaults (hostname, listener names and
 * ports) and resolves paths against `baseDir`.
 */
function localTransportOf(t: ParsedConfig['delivery']['localTransport'], dataDir: string): Config['delivery']['localTransport'] {
  if ('maildir' in t) return { kind: 'maildir', root: path.resolve(dataDir, t.maildir) };
  if ('discard' in t) return { kind: 'discard' };
  const [kind, hostPort] = 'lmtp' in t ? (['lmtp', t.lmtp] as const) : (['smtp', t.smtp] as const);
  const hp = parseHostPort(hostPort)!; // validated by the schema
  return { kind, host: hp.host, port: hp.port };
}

export function buildConfig(parsed: ParsedConfig, options: { baseDir: string; configFile?: string | null }): Config {
  const resolve = (p: string) => path.resolve(options.baseDir, p);
  const config: Config = {
    configFile: options.configFile ?? null,
    hostname: parsed.hostname ?? defaultHostname(),
    dataDir: resolve(parsed.dataDir),
    store: { postgres: parsed.store.postgres === null ? null : { url: parsed.store.postgres.url, poolSize: parsed.store.postgres.poolSize, leaseTime: parsed.store.postgres.leaseTime } },
    node: parsed.node ?? (osHostname().split('.')[0] || 'relayguard').slice(0, 63),
    user: parsed.user,
    group: parsed.group,
    workers: parsed.workers,
    listeners: parsed.listeners.map((l) => {
      const { name, port: p } = effectiveListener(l);
      return { name, role: l.role, address: l.address, port: p, tls: l.tls, proxyProtocol: l.proxyProtocol };
    }),
    trustedNetworks: parsed.trustedNetworks,
    trustedProxies: parsed.trustedProxies,
    localDomains: parsed.localDomains,
    relayDomains: parsed.relayDomains,
    relayRules: parsed.relayRules.map((r) => {
      const match: { network?: string; senderDomain?: string; recipientDomain?: string } = {};
      if (r.match.network !== undefined) match.network = r.match.network;
      if (r.match.senderDomain !== undefined) match.senderDomain = r.match.senderDomain;
      if (r.match.recipientDomain !== undefined) match.recipientDomain = r.match.recipientDomain;
      return { match, action: r.action };
    }),
    recipients: { ...parsed.recipients, aliasFiles: parsed.recipients.aliasFiles.map(resolve) },
    tls: {
      cert: parsed.tls.cert === null ? null : resolve(parsed.tls.cert),
      key: parsed.tls.key === null ? null : resolve(parsed.tls.key),
      minVersion: parsed.tls.minVersion,
    },
    smtp: { ...parsed.smtp },
    limits: { ...parsed.limits },
    log: { ...parsed.log },
    dnsblChecks: parsed.dnsblChecks.map((c) => ({ zone: c.zone, weight: c.weight })),
    dnsblThreshold: parsed.dnsblThreshold,
    dnsblResolver: { ...parsed.dnsblResolver, servers: [...parsed.dnsblResolver.servers] },
    dnsbl: {
      ...parsed.dnsbl,
      evidenceUrl: parsed.dnsbl.evidenceUrl !== undefined ? parsed.dnsbl.evidenceUrl : defaultEvidenceUrl(parsed.web, parsed.hostname ?? defaultHostname()),
      listen: { ...parsed.dnsbl.listen },
      axfrAllow: [...parsed.dnsbl.axfrAllow],
      nameservers: parsed.dnsbl.nameservers.map((n) => ({ name: n.name.toLowerCase(), addresses: [...n.addresses] })),
      soa: { ...parsed.dnsbl.soa },
      notify: parsed.dnsbl.notify.map((n) => ({ ...n })),
      tsigKeys: parsed.dnsbl.tsigKeys.map((k) => ({ ...k, name: k.name.toLowerCase() })),
      sink: { ...parsed.dnsbl.sink },
      testPorts: [...parsed.dnsbl.testPorts],
      proxySink: { ...parsed.dnsbl.proxySink },
      proxyPorts: [...parsed.dnsbl.proxyPorts],
      nntpPorts: [...parsed.dnsbl.nntpPorts],
      excluded: [...parsed.dnsbl.excluded],
      tcp: { ...parsed.dnsbl.tcp },
    },
    delivery: {
      enabled: parsed.delivery.enabled,
      localTransport: localTransportOf(parsed.delivery.localTransport, resolve(parsed.dataDir)),
      mxPort: parsed.delivery.mxPort,
      dnsServers: [...parsed.delivery.dnsServers],
      allowPrivateMx: parsed.delivery.allowPrivateMx,
      allowLoopbackMx: parsed.delivery.allowLoopbackMx,
      dkim: parsed.delivery.dkim.map((k) => ({ domain: k.domain.toLowerCase(), selector: k.selector, keyFile: path.resolve(resolve(parsed.dataDir), k.keyFile) })),
      smartHost: parsed.delivery.smartHost === null ? null : { ...parsed.delivery.smartHost },
      bounces: { ...parsed.delivery.bounces },
      retry: { ...parsed.delivery.retry },
    },
    web: {
      ...parsed.web,
      public: parsed.web.public === null ? null : { ...parsed.web.public },
      ordb: { ...parsed.web.ordb },
      tester: {
        ...parsed.web.tester,
        allowTargets: [...parsed.web.tester.allowTargets],
        ports: [...parsed.web.tester.ports],
        proof: parsed.web.tester.proof === null ? null : { ...parsed.web.tester.proof, sink: { ...parsed.web.tester.proof.sink } },
      },
    },
    audit: {
      ...parsed.audit,
      addresses: [...parsed.audit.addresses],
      relay: { ...parsed.audit.relay, sink: { ...parsed.audit.relay.sink }, vantage: vantagesOf(parsed.audit.relay.vantage, resolve) },
      blocklists: parsed.audit.blocklists.map((b) => ({ zone: b.zone, servers: [...b.servers], delistUrl: b.delistUrl, testPoints: b.testPoints })),
      dnsServers: [...parsed.audit.dnsServers],
    },
  };
  return deepFreeze(config);
}

function publicUrlOk(v: string): boolean {
  try {
    const u = new URL(v);
    return (u.protocol === 'http:' || u.protocol === 'https:') && u.search === '' && u.hash === '' && u.username === '' && u.password === '' && !v.includes('$');
  } catch {
    return false;
  }
}

/**
 * The evidence page the TXT answers of the ORDB link to when dnsbl.evidenceUrl is not set: the public lookup page
 * of this instance's web service (web.publicUrl, else the public listener, else the admin listener; a wildcard
 * address becomes the hostname). Null when the web service is off and no publicUrl says where the pages are.
 */
export function defaultEvidenceUrl(
  web: { readonly enabled: boolean; readonly tls: boolean; readonly address: string; readonly port: number; readonly public: { readonly address: string; readonly port: number } | null; readonly publicUrl: string | null },
  hostname: string,
): string | null {
  const page = '/dnsbl/lookup?ip=$';
  if (web.publicUrl !== null) return `${web.publicUrl.replace(/\/+$/, '')}${page}`;
  if (!web.enabled) return null;
  const l = web.public ?? { address: web.address, port: web.port };
  const host = l.address === '0.0.0.0' || l.address === '::' ? hostname : l.address.includes(':') ? `[${l.address}]` : l.address;
  const scheme = web.tls ? 'https' : 'http';
  const port = (scheme === 'http' && l.port === 80) || (scheme === 'https' && l.port === 443) ? '' : `:${l.port}`;
  return `${scheme}://${host}${port}${page}`;
}

/** The built-in configuration (what `relayguard serve` runs without a file); paths resolve against `cwd`. */
export function defaultConfig(options: { cwd?: string } = {}): Config {
  return buildConfig(configSchema.parse({}), { baseDir: options.cwd ?? process.cwd() });
}

// ---------------------------------------------------------------------------------------------------------------
// Documentation

type JsonSchema = {
  type?: string | string[];
  description?: string;
  default?: unknown;
  enum?: unknown[];
  properties?: Record<string, JsonSchema>;
  required?: string[];
  items?: JsonSchema;
  anyOf?: JsonSchema[];
  minimum?: number;
  maximum?: number;
  'x-type'?: string;
  'x-default'?: string;
};

/** The input-side JSON Schema of relayguard.yaml (editors can use it for completion). */
export function configJsonSchema(): Record<string, unknown> {
  return z.toJSONSchema(configSchema, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
}

function nonNull(s: JsonSchema): JsonSchema {
  if (s.anyOf) {
    const rest = s.anyOf.filter((x) => x.type !== 'null');
    if (rest.length === 1) return { ...rest[0]!, ...pick(s) };
  }
  return s;
}

function pick(s: JsonSchema): JsonSchema {
  const out: JsonSchema = {};
  if (s.description !== undefined) out.description = s.description;
  if ('default' in s) out.default = s.default;
  if (s['x-type'] !== undefined) out['x-type'] = s['x-type'];
  if (s['x-default'] !== undefined) out['x-default'] = s['x-default'];
  return out;
}

function typeLabel(raw: JsonSchema): string {
  const s = nonNull(raw);
  const nullable = raw.anyOf?.some((x) => x.type === 'null') || (Array.isArray(raw.type) && raw.type.includes('null'));
  let label: string;
  if (s['x-type']) label = s['x-type'];
  else if (s.enum) label = s.enum.map((e) => `\`${String(e)}\``).join(' | ');
  else if (s.type === 'array') label = `list of ${s.items ? typeLabel(s.items) : 'values'}`;
  else if (s.type === 'integer') label = 'integer';
  else if (s.type === 'object') label = 'mapping';
  else if (Array.isArray(s.type)) label = s.type.filter((t) => t !== 'null').join(' or ');
  else label = s.type ?? 'value';
  if (s.type === 'integer' && s.minimum !== undefined && s.maximum !== undefined && s.maximum < Number.MAX_SAFE_INTEGER) label += ` ${s.minimum}-${s.maximum}`;
  return nullable ? `${label} or null` : label;
}

function inlineYaml(v: unknown): string {
  return YAML.stringify(v, { collectionStyle: 'flow', lineWidth: 0, flowCollectionPadding: false }).trim();
}

function defaultLabel(s: JsonSchema, required: boolean): string {
  if (s['x-default']) return s['x-default'];
  if ('default' in s) {
    const d = s.default;
    if (Array.isArray(d) && d.some((x) => typeof x === 'object' && x !== null)) return 'see [Defaults](#defaults)';
    if (typeof d === 'object' && d !== null && !Array.isArray(d) && Object.keys(d).length === 0) return '';
    return `\`${inlineYaml(d)}\``;
  }
  return required ? '**required**' : '';
}

function cell(s: string): string {
  return s.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

function rows(schema: JsonSchema, prefix: string, out: string[][], required = false): void {
  const s = nonNull(schema);
  if (s.type === 'object' && s.properties) {
    if (prefix && s.description) {
      // A mapping that is null by default (store.postgres) says so; its keys apply once it is set.
      const nullDefault = 'default' in s && s.default === null;
      out.push([`\`${prefix}\``, nullDefault ? 'mapping or null' : 'mapping', nullDefault ? '`null`' : '', s.description]);
    }
    for (const [k, child] of Object.entries(s.properties)) {
      rows(child, prefix ? `${prefix}.${k}` : k, out, s.required?.includes(k) ?? false);
    }
    return;
  }
  out.push([`\`${prefix}\``, typeLabel(schema), defaultLabel(s, required), s.description ?? '']);
  if (s.type === 'array' && s.items) {
    const item = nonNull(s.items);
    if (item.type === 'object' && item.properties) {
      for (const [k, child] of Object.entries(item.properties)) {
        rows(child, `${prefix}[].${k}`, out, item.required?.includes(k) ?? false);
      }
    }
  }
}

function defaultsOf(schema: JsonSchema): unknown {
  const s = nonNull(schema);
  if ('default' in s && s.default === null) return null;
  if (s.type === 'object' && s.properties) {
    const out: Record<string, unknown> = {};
    for (const [k, child] of Object.entries(s.properties)) {
      const v = defaultsOf(child);
      if (v !== undefined) out[k] = v;
    }
    return out;
  }
  return 'default' in s ? s.default : undefined;
}

export interface CheckDoc {
  readonly code: string;
  readonly severity: string;
  readonly summary: string;
}

/** Markdown for docs/configuration.md, generated from the schema (and the `config check` catalogue, if given). */
export function renderConfigDocs(options: { checks?: readonly CheckDoc[] } = {}): string {
  const json = configJsonSchema() as JsonSchema;
  const lines: string[] = [
    '# Configuration',
    '',
    '<!-- Generated from src/config/schema.ts by renderConfigDocs(); do not edit by hand.',
    '     Regenerate: RELAYGUARD_UPDATE_DOCS=1 node --test src/config/schema.test.ts -->',
    '',
    'relayguard runs without a configuration file. Every command accepts `--config FILE` to read `relayguard.yaml`',
    '(YAML, camelCase keys). Every key is optional; the defaults below are what runs without a file.',
    '',
    '- **Unknown keys are errors**, so a typo cannot silently leave a default (and a relay) in place.',
    '- **Relative paths** (`dataDir`, `tls.cert`, `tls.key`) resolve against the folder of the config file, or the',
    '  working directory when there is no file.',
    '- **Durations** are a number of seconds (`300`, `0.5`) or a string of number+unit groups: `250ms`, `300s`, `5m`,',
    '  `4h`, `5d`, `2w`, `1h30m`. Timer durations are capped at 24 days (the longest Node.js timer).',
    '- **Sizes** are a number of bytes (`26214400`) or a string with a unit: `B`, `KB`/`MB`/`GB` (powers of 1000),',
    '  `KiB`/`MiB`/`GiB` (powers of 1024), e.g. `25MiB`, `10MB`.',
    '- **Networks** are CIDRs (`10.0.0.0/8`, `fd00::/8`) or single addresses (`192.0.2.7` = `/32`). Host bits must be',
    '  clear (`10.0.0.1/8` is refused as ambiguous). IPv4-mapped IPv6 (`::ffff:10.0.0.0/104`) is folded to IPv4.',
    '- **Domains** are folded to lower-case ASCII (IDNA A-labels) without a trailing dot; duplicates in lists are dropped.',
    '',
    'Errors name the file, the key path and the problem, one line per problem:',
    '',
    '```',
    'Invalid configuration in /etc/relayguard/relayguard.yaml:',
    '  listeners[1].port: must be at most 65535, got 70000 (line 9)',
    '  trustedNetwork: unknown key (did you mean "trustedNetworks"?) (line 3)',
    '```',
    '',
    'Run `relayguard config check` before going live: it reports open-relay hazards (see [Checks](#checks)).',
    '',
    '## Keys',
    '',
  ];
  for (const [key, child] of Object.entries(json.properties ?? {})) {
    const s = nonNull(child);
    lines.push(`### \`${key}\``, '');
    const table: string[][] = [];
    if (s.type === 'object' && s.properties) {
      if (s.description) lines.push(s.description, '');
      for (const [k, grandchild] of Object.entries(s.properties)) rows(grandchild, `${key}.${k}`, table, s.required?.includes(k) ?? false);
    } else {
      rows(child, key, table);
    }
    lines.push('| Key | Type | Default | Description |', '|---|---|---|---|');
    for (const r of table) lines.push(`| ${r.map(cell).join(' | ')} |`);
    lines.push('');
  }
  lines.push(
    '## Defaults',
    '',
    'The built-in configuration, as a file (`hostname` defaults to the machine\'s name):',
    '',
    '```yaml',
    YAML.stringify(defaultsOf(json), { lineWidth: 0, flowCollectionPadding: false }).trimEnd(),
    '```',
    '',
  );
  if (options.checks && options.checks.length > 0) {
    lines.push(
      '## Checks',
      '',
      '`relayguard config check` lints a configuration. Errors are open-relay or credential hazards and make the',
      'command fail; warnings are worth a look.',
      '',
      '| Code | Severity | Meaning |',
      '|---|---|---|',
    );
    for (const c of options.checks) lines.push(`| \`${c.code}\` | ${c.severity} | ${cell(c.summary)} |`);
    lines.push('');
  }
  return lines.join('\n');
}
