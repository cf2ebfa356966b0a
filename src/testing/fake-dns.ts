/**
 * A scriptable DNS server on 127.0.0.1 (UDP) for delivery tests (hostile-inputs.md 2.3 item 6): answers MX, A,
 * AAAA, TLSA and TXT from a zone table, and on demand NXDOMAIN, SERVFAIL, REFUSED, an empty NOERROR answer, no
 * answer at all (timeout), or a late one. Point a resolver at it:
 *
 *   const dns = await startFakeDns({ zone: { 'peers.test': { MX: [{ preference: 10, exchange: 'mx.peers.test' }] } } });
 *   const resolver = dns.resolver(); // dns.promises.Resolver({ timeout: 300, tries: 1 }) with setServers
 *
 * Names are matched case-insensitively, without a trailing dot. A name absent from the zone is NXDOMAIN; a name
 * present without records of the asked type is an empty NOERROR answer (Node: ENODATA). Null MX (RFC 7505) is
 * `MX: [{ preference: 0, exchange: '.' }]`.
 */
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { once } from 'node:events';
import { promises as dnsPromises } from 'node:dns';
import dnsPacket from 'dns-packet';

export type FakeDnsMode = 'NXDOMAIN' | 'SERVFAIL' | 'REFUSED' | 'EMPTY' | 'TIMEOUT';
export type FakeDnsType = 'MX' | 'A' | 'AAAA' | 'TLSA' | 'TXT';

export interface FakeTlsa {
  readonly usage: number;
  readonly selector: number;
  readonly matchingType: number;
  readonly certificate: Buffer;
}

export interface FakeDnsEntry {
  readonly MX?: readonly { readonly preference: number; readonly exchange: string }[];
  readonly A?: readonly string[];
  readonly AAAA?: readonly string[];
  readonly TLSA?: readonly FakeTlsa[];
  /** Each record is one string or its character-strings. */
  readonly TXT?: readonly (string | readonly string[])[];
  /** Answers every query for this name this way. */
  readonly mode?: FakeDnsMode;
  /** Per type, overrides mode and the records. */
  readonly modes?: Partial<Record<FakeDnsType, FakeDnsMode>>;
  /** Answer this late (ms). */
  readonly delayMs?: number;
}

export interface FakeDnsQuery {
  readonly name: string;
  readonly type: string;
}

export interface FakeDns {
  readonly host: string;
  readonly port: number;
  /** The zone, mutable: set(), delete() and clear() take effect for the next query. */
  readonly zone: Map<string, FakeDnsEntry>;
  /** Every question received, in order. */
  readonly queries: FakeDnsQuery[];
  set(name: string, entry: FakeDnsEntry): void;
  /** A Resolver pointed at this server (timeout 300 ms, one try, unless overridden). */
  resolver(options?: { timeout?: number; tries?: number }): dnsPromises.Resolver;
  close(): Promise<void>;
}

/** RFC 1035 rcodes, carried in the low four bits of the header flags. */
const RCODE: Record<Exclude<FakeDnsMode, 'EMPTY' | 'TIMEOUT'>, number> = { SERVFAIL: 2, NXDOMAIN: 3, REFUSED: 5 };
const FLAGS = dnsPacket.AUTHORITATIVE_ANSWER | dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE;

function canonical(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}

export async function startFakeDns(options: { zone?: Readonly<Record<string, FakeDnsEntry>>; host?: string; port?: number } = {}): Promise<FakeDns> {
  const host = options.host ?? '127.0.0.1';
  const zone = new Map<string, FakeDnsEntry>();
  for (const [k, v] of Object.entries(options.zone ?? {})) zone.set(canonical(k), v);
  const queries: FakeDnsQuery[] = [];
  const timers = new Set<NodeJS.Timeout>();
  const socket: Socket = createSocket('udp4');
  socket.on('message', (msg: Buffer, rinfo: RemoteInfo) => {
    let query: dnsPacket.Packet;
    try {
      query = dnsPacket.decode(msg);
    } catch {
      return;
    }
    const q = query.questions?.[0];
    if (!q) return;
    queries.push({ name: canonical(q.name), type: q.type });
    const entry = zone.get(canonical(q.name));
    const send = (): void => {
      const answer = respond(query, q, entry);
      if (answer !== null) socket.send(answer, rinfo.port, rinfo.address);
    };
    if (entry?.delayMs) {
      const t = setTimeout(() => { timers.delete(t); send(); }, entry.delayMs);
      timers.add(t);
    } else {
      send();
    }
  });
  socket.bind(options.port ?? 0, host);
  await once(socket, 'listening');
  const port = socket.address().port;
  return {
    host,
    port,
    zone,
    queries,
    set(name, entry) { zone.set(canonical(name), entry); },
    resolver(o = {}) {
      const r = new dnsPromises.Resolver({ timeout: o.timeout ?? 300, tries: o.tries ?? 1 });
      r.setServers([`${host}:${port}`]);
      return r;
    },
    async close() {
      for (const t of timers) clearTimeout(t);
      timers.clear();
      await new Promise<void>((resolve) => socket.close(() => resolve()));
    },
  };
}

function respond(query: dnsPacket.Packet, q: dnsPacket.Question, entry: FakeDnsEntry | undefined): Buffer | null {
  const base = { id: query.id ?? 0, type: 'response' as const, flags: FLAGS, questions: [q] };
  const mode: FakeDnsMode | undefined = entry === undefined ? 'NXDOMAIN' : (entry.modes?.[q.type as FakeDnsType] ?? entry.mode);
  if (mode === 'TIMEOUT') return null;
  if (mode === 'NXDOMAIN' || mode === 'SERVFAIL' || mode === 'REFUSED') {
    return dnsPacket.encode({ ...base, flags: FLAGS | RCODE[mode] });
  }
  const answers: dnsPacket.Answer[] = [];
  if (mode !== 'EMPTY' && entry !== undefined) {
    const name = q.name;
    switch (q.type) {
      case 'MX':
        for (const mx of entry.MX ?? []) answers.push({ type: 'MX', name, ttl: 60, data: { preference: mx.preference, exchange: mx.exchange === '.' ? '' : mx.exchange } });
        break;
      case 'A':
        for (const a of entry.A ?? []) answers.push({ type: 'A', name, ttl: 60, data: a });
        break;
      case 'AAAA':
        for (const a of entry.AAAA ?? []) answers.push({ type: 'AAAA', name, ttl: 60, data: a });
        break;
      case 'TLSA':
        for (const t of entry.TLSA ?? []) answers.push({ type: 'TLSA', name, ttl: 60, data: { usage: t.usage, selector: t.selector, matchingType: t.matchingType, certificate: t.certificate } });
        break;
      case 'TXT':
        for (const t of entry.TXT ?? []) answers.push({ type: 'TXT', name, ttl: 60, data: typeof t === 'string' ? [t] : [...t] });
        break;
      default:
        break;
    }
  }
  return dnsPacket.encode({ ...base, answers });
}
