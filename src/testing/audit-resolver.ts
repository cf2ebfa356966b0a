/**
 * An in-memory AuditResolver (src/audit/dns.ts) for unit tests of the self-audit: names absent from the zone are
 * NXDOMAIN, a name without records of the asked type is NODATA, mode 'TIMEOUT' answers unreachable and 'SERVFAIL'
 * broken. PTR names are "d.c.b.a.in-addr.arpa" (IPv4 only). Every question is recorded in `queries`.
 */
import type { AuditResolver, DnsAnswer, MxRecord, TlsaRecord } from '../audit/dns.ts';

export interface MemoryZoneEntry {
  TXT?: string[];
  A?: string[];
  AAAA?: string[];
  MX?: MxRecord[];
  PTR?: string[];
  TLSA?: TlsaRecord[];
  mode?: 'TIMEOUT' | 'SERVFAIL';
}

export function memoryResolver(zone: Record<string, MemoryZoneEntry>): AuditResolver & { queries: string[] } {
  const queries: string[] = [];
  const get = <T>(name: string, type: 'TXT' | 'A' | 'AAAA' | 'MX' | 'PTR' | 'TLSA'): Promise<DnsAnswer<T>> => {
    queries.push(`${type} ${name}`);
    const e = zone[name.toLowerCase().replace(/\.$/, '')];
    if (e === undefined) return Promise.resolve({ kind: 'none', reason: 'nxdomain' });
    if (e.mode === 'TIMEOUT') return Promise.resolve({ kind: 'unreachable', code: 'ETIMEOUT', detail: 'timeout' });
    if (e.mode === 'SERVFAIL') return Promise.resolve({ kind: 'broken', code: 'ESERVFAIL', detail: 'servfail' });
    const v = e[type] as unknown as T[] | undefined;
    return Promise.resolve(v === undefined || v.length === 0 ? { kind: 'none', reason: 'nodata' } : { kind: 'ok', records: v as unknown as T });
  };
  const rev = (ip: string): string => `${ip.split('.').reverse().join('.')}.in-addr.arpa`;
  return {
    queries,
    txt: (n) => get(n, 'TXT'), a: (n) => get(n, 'A'), aaaa: (n) => get(n, 'AAAA'), mx: (n) => get(n, 'MX'),
    ptr: (ip) => get(rev(ip), 'PTR'), tlsa: (n) => get(n, 'TLSA'),
  };
}

