/**
 * Zone export: rbldnsd data files (ip4set for IPv4, ip6trie for IPv6) and a BIND master file.
 *
 * Both are written from the zone's flattened index, not from the raw listings, so overlaps and exclusions are
 * already resolved and the files mean the same thing whatever the reader's overlap rule is (rbldnsd applies
 * longest-prefix-wins to "!" exclusions too; relayguard lets an exclusion win outright). Each interval is written
 * as the fewest CIDR blocks (rbldnsd) or octet/nibble-aligned names and wildcards (BIND, see Zone.records()).
 * Known differences of the outputs (inherent to the formats):
 * - rbldnsd does not answer for IPv4-mapped IPv6 names, so the ::ffff:7f00:2 test point is not served there;
 *   rbldnsd has no TCP, and cuts TXT at 255 bytes.
 * - BIND wildcards can't substitute the queried address: the TXT names the block instead; wildcards also answer
 *   for names shorter than an address below them.
 */
import { rename, open as openFile } from 'node:fs/promises';
import { join } from 'node:path';
import { bigintToIpv6, numberToIpv4 } from './network.ts';
import type { Zone, ZoneRecord } from './zone.ts';

/** Splits [first, last] into the fewest CIDR blocks: [network, prefix][] (numbers for IPv4, bigints for IPv6). */
export function* cidrBlocks4(first: number, last: number): Generator<[number, number]> {
  let s = first;
  while (s <= last) {
    let bits = 0;
    while (bits < 32 && s % 2 ** (bits + 1) === 0 && s + 2 ** (bits + 1) - 1 <= last) bits++;
    yield [s, 32 - bits];
    s += 2 ** bits;
  }
}

export function* cidrBlocks6(first: bigint, last: bigint): Generator<[bigint, number]> {
  let s = first;
  while (s <= last) {
    let bits = 0;
    while (bits < 128) {
      const size = 1n << BigInt(bits + 1);
      if ((s & (size - 1n)) !== 0n || s + size - 1n > last) break;
      bits++;
    }
    yield [s, 128 - bits];
    s += 1n << BigInt(bits);
  }
}

/** rbldnsd treats a TXT starting with "=" specially (it drops the "="): double it so it survives. */
function rbldnsdTemplate(template: string | null): string {
  if (template === null) return '';
  return template.startsWith('=') ? `=${template}` : template;
}

function header(zone: Zone, kind: string): string[] {
  const s = zone.soa;
  return [
    `# relayguard ORDB zone ${zone.apex}, ${kind} dataset for rbldnsd, serial ${s.serial}`,
    `# generated: do not edit; load as ${zone.apex}:${kind}:FILE`,
    `$SOA ${zone.apexTtl} ${s.mname}. ${s.rname}. ${s.serial} ${s.refresh} ${s.retry} ${s.expire} ${s.minimum}`,
    `$NS ${zone.apexTtl} ${zone.ns.map((n) => `${n}.`).join(' ')}`,
    `$TTL ${zone.ttl}`,
  ];
}

/** Lines of the ip4set file (each ends without a newline). */
export function* rbldnsdIp4set(zone: Zone): Generator<string> {
  yield* header(zone, 'ip4set');
  for (const iv of zone.intervals()) {
    if (iv.family !== 4) continue;
    const value = ` :${iv.code}:${rbldnsdTemplate(iv.template)}`;
    for (const [net, prefix] of cidrBlocks4(iv.first as number, iv.last as number)) {
      yield `${numberToIpv4(net)}${prefix === 32 ? '' : `/${prefix}`}${value}`;
    }
  }
}

/** Lines of the ip6trie file. */
export function* rbldnsdIp6trie(zone: Zone): Generator<string> {
  yield* header(zone, 'ip6trie');
  for (const iv of zone.intervals()) {
    if (iv.family !== 6) continue;
    const value = ` :${iv.code}:${rbldnsdTemplate(iv.template)}`;
    for (const [net, prefix] of cidrBlocks6(iv.first as bigint, iv.last as bigint)) {
      yield `${bigintToIpv6(net)}/${prefix}${value}`;
    }
  }
}

/** A TXT value as BIND master-file character-strings: quoted, at most 255 bytes each, \" \\ and \DDD escapes. */
export function bindTxt(text: string): string {
  const bytes = Buffer.from(text, 'utf8');
  const parts: string[] = [];
  for (let i = 0; i < Math.max(1, bytes.length); i += 255) {
    let s = '"';
    for (const b of bytes.subarray(i, i + 255)) {
      if (b === 0x22 || b === 0x5c) s += `\\${String.fromCharCode(b)}`;
      else if (b < 0x20 || b > 0x7e) s += `\\${String(b).padStart(3, '0')}`;
      else s += String.fromCharCode(b);
    }
    parts.push(`${s}"`);
  }
  return parts.join(' ');
}

function bindRecord(r: ZoneRecord): string {
  const owner = r.name === '' ? '@' : r.name;
  switch (r.type) {
    case 'SOA': {
      const s = r.data;
      return `${owner}\t${r.ttl}\tIN\tSOA\t${s.mname}. ${s.rname}. ${s.serial} ${s.refresh} ${s.retry} ${s.expire} ${s.minimum}`;
    }
    case 'NS':
      return `${owner}\t${r.ttl}\tIN\tNS\t${r.data}.`;
    case 'TXT':
      return `${owner}\t${r.ttl}\tIN\tTXT\t${bindTxt(r.data)}`;
    default:
      return `${owner}\t${r.ttl}\tIN\t${r.type}\t${r.data}`;
  }
}

/** Lines of a BIND master file for the zone. */
export function* bindZone(zone: Zone): Generator<string> {
  yield `; relayguard ORDB zone ${zone.apex}, serial ${zone.serial}; generated, do not edit`;
  yield `$ORIGIN ${zone.apex}.`;
  for (const r of zone.records()) yield bindRecord(r);
}

/** Writes lines to `path` atomically (temp file, fsync, rename), as rbldnsd's manual asks. */
export async function writeLines(path: string, lines: Iterable<string>): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  const fh = await openFile(tmp, 'w', 0o644);
  try {
    let chunk = '';
    for (const line of lines) {
      chunk += `${line}\n`;
      if (chunk.length >= 1 << 16) { await fh.write(chunk); chunk = ''; }
    }
    if (chunk) await fh.write(chunk);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
}

export interface RbldnsdFiles {
  readonly ip4set: string;
  readonly ip6trie: string;
  /** The rbldnsd zone arguments: ["zone:ip4set:FILE", "zone:ip6trie:FILE"] with file names relative to dir. */
  readonly args: readonly string[];
}

/** Writes `<apex>.ip4set` and `<apex>.ip6trie` into dir. */
export async function writeRbldnsdFiles(zone: Zone, dir: string): Promise<RbldnsdFiles> {
  const ip4 = `${zone.apex}.ip4set`;
  const ip6 = `${zone.apex}.ip6trie`;
  await writeLines(join(dir, ip4), rbldnsdIp4set(zone));
  await writeLines(join(dir, ip6), rbldnsdIp6trie(zone));
  return { ip4set: join(dir, ip4), ip6trie: join(dir, ip6), args: [`${zone.apex}:ip4set:${ip4}`, `${zone.apex}:ip6trie:${ip6}`] };
}

export async function writeBindZone(zone: Zone, path: string): Promise<void> {
  await writeLines(path, bindZone(zone));
}

/** Whole text (small zones, tests). */
export function toText(lines: Iterable<string>): string {
  let s = '';
  for (const l of lines) s += `${l}\n`;
  return s;
}
