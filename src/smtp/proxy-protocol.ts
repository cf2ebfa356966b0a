/**
 * HAProxy PROXY protocol, versions 1 (text) and 2 (binary): a pure, incremental parser.
 *
 * The caller appends bytes read from a trusted balancer to a buffer and calls parseProxyHeader after every
 * read. The answer is 'incomplete' (read more, within the proxy timeout), 'ok' (the header is `consumed` bytes
 * long; whatever follows is the client's SMTP stream) or 'error' (close the connection). Bytes that cannot begin
 * either signature are an error at once, so a client that talks SMTP straight away is dropped without waiting.
 *
 * Reference: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt
 */
import { isIPv6 } from 'node:net';

export type ProxyFamily = 'tcp4' | 'tcp6' | 'unknown';

export interface ProxyHeader {
  version: 1 | 2;
  /** 'local': a health check by the balancer itself; use the socket's own endpoints. */
  command: 'proxy' | 'local';
  /** 'unknown' for v1 UNKNOWN, v2 UNSPEC / AF_UNIX stream, and every v2 LOCAL header: no addresses then. */
  family: ProxyFamily;
  sourceAddress?: string;
  sourcePort?: number;
  destinationAddress?: string;
  destinationPort?: number;
}

export type ProxyParseResult =
  | { status: 'incomplete' }
  | { status: 'ok'; consumed: number; header: ProxyHeader }
  | { status: 'error'; reason: string };

/** The longest v1 line, CRLF included (proxy-protocol.txt section 2.1). */
export const V1_MAX_LENGTH = 107;
/** The largest v2 address-plus-TLV block accepted (the length field may announce up to 65535). */
export const V2_MAX_PAYLOAD = 1024;

const V1_SIGNATURE = Buffer.from('PROXY ', 'latin1');
const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const V2_HEADER_LENGTH = 16;

const INCOMPLETE: ProxyParseResult = Object.freeze({ status: 'incomplete' });

function fail(reason: string): ProxyParseResult {
  return { status: 'error', reason };
}

/** True when the first min(buf.length, sig.length) bytes of buf equal the start of sig. */
function matchesPrefix(buf: Buffer, sig: Buffer): boolean {
  const n = Math.min(buf.length, sig.length);
  for (let i = 0; i < n; i++) if (buf[i] !== sig[i]) return false;
  return true;
}

/**
 * Parses a PROXY header at the start of buf. Never throws; never reads past the header.
 */
export function parseProxyHeader(buf: Buffer): ProxyParseResult {
  if (buf.length === 0) return INCOMPLETE;
  if (matchesPrefix(buf, V1_SIGNATURE)) return parseV1(buf);
  if (matchesPrefix(buf, V2_SIGNATURE)) return parseV2(buf);
  return fail('not a PROXY protocol header');
}

// ---------------------------------------------------------------------------------------------------------
// Version 1

const PORT = /^(?:0|[1-9][0-9]{0,4})$/;
const OCTET = /^(?:0|[1-9][0-9]{0,2})$/;
const IPV6_CHARS = /^[0-9A-Fa-f:.]+$/;

function parseV1(buf: Buffer): ProxyParseResult {
  // Scan for CRLF within the first 107 bytes, refusing anything that is not printable ASCII on the way so
  // that binary garbage fails before 107 bytes have arrived.
  const limit = Math.min(buf.length, V1_MAX_LENGTH);
  let end = -1;
  for (let i = 0; i < limit; i++) {
    const c = buf[i]!;
    if (c === 0x0d) {
      if (i + 1 >= V1_MAX_LENGTH) return fail('v1 header has no CRLF within 107 bytes');
      if (i + 1 >= buf.length) return INCOMPLETE;
      if (buf[i + 1] !== 0x0a) return fail('v1 header has a bare CR');
      end = i;
      break;
    }
    if (c === 0x0a) return fail('v1 header has a bare LF');
    if (c < 0x20 || c > 0x7e) return fail('v1 header has a non-printable byte');
  }
  if (end < 0) return buf.length >= V1_MAX_LENGTH ? fail('v1 header has no CRLF within 107 bytes') : INCOMPLETE;
  const consumed = end + 2;
  const line = buf.toString('latin1', 0, end);
  const parts = line.split(' ');
  const proto = parts[1];
  if (proto === 'UNKNOWN') {
    // "the receiver must ignore anything presented before the CRLF is found" (section 2.1).
    return { status: 'ok', consumed, header: { version: 1, command: 'proxy', family: 'unknown' } };
  }
  if (proto !== 'TCP4' && proto !== 'TCP6') return fail('v1 header has an unknown protocol');
  if (parts.length !== 6) return fail('v1 header must have exactly six single-space separated fields');
  const [, , src, dst, sport, dport] = parts as [string, string, string, string, string, string];
  const family: ProxyFamily = proto === 'TCP4' ? 'tcp4' : 'tcp6';
  const validAddress = family === 'tcp4' ? isStrictIPv4 : isStrictIPv6;
  if (!validAddress(src)) return fail(`v1 source address is not a valid ${proto} address`);
  if (!validAddress(dst)) return fail(`v1 destination address is not a valid ${proto} address`);
  const sourcePort = parsePort(sport);
  const destinationPort = parsePort(dport);
  if (sourcePort === null) return fail('v1 source port is invalid');
  if (destinationPort === null) return fail('v1 destination port is invalid');
  return {
    status: 'ok',
    consumed,
    header: { version: 1, command: 'proxy', family, sourceAddress: src, sourcePort, destinationAddress: dst, destinationPort },
  };
}

function parsePort(s: string): number | null {
  if (!PORT.test(s)) return null;
  const n = Number(s);
  return n <= 65535 ? n : null;
}

/** Dotted quad, four decimal octets 0-255, no leading zeros, no other forms (127.1, 0x7f.0.0.1). */
export function isStrictIPv4(s: string): boolean {
  const octets = s.split('.');
  if (octets.length !== 4) return false;
  for (const o of octets) {
    if (!OCTET.test(o) || Number(o) > 255) return false;
  }
  return true;
}

/** An IPv6 address in text form without a zone index; an embedded IPv4 tail must itself be strict. */
export function isStrictIPv6(s: string): boolean {
  if (s.length < 2 || s.length > 45 || !IPV6_CHARS.test(s)) return false;
  if (!isIPv6(s)) return false;
  const lastColon = s.lastIndexOf(':');
  const tail = s.slice(lastColon + 1);
  if (tail.includes('.') && !isStrictIPv4(tail)) return false;
  return true;
}

// ---------------------------------------------------------------------------------------------------------
// Version 2

function parseV2(buf: Buffer): ProxyParseResult {
  if (buf.length <= V2_SIGNATURE.length) return INCOMPLETE;
  const verCmd = buf[12]!;
  if (verCmd >> 4 !== 0x2) return fail('v2 header has an unsupported version');
  const cmd = verCmd & 0x0f;
  if (cmd !== 0x0 && cmd !== 0x1) return fail('v2 header has an unknown command');
  if (buf.length < 14) return INCOMPLETE;
  const famByte = buf[13]!;
  const command = cmd === 0x1 ? 'proxy' : 'local';
  let family: ProxyFamily;
  let addressLength = 0;
  if (command === 'local') {
    // LOCAL: "the receiver must ... discard the protocol block including the family" (section 2.2).
    family = 'unknown';
  } else if (famByte === 0x11) {
    family = 'tcp4';
    addressLength = 12;
  } else if (famByte === 0x21) {
    family = 'tcp6';
    addressLength = 36;
  } else if (famByte === 0x00 || famByte === 0x31) {
    // UNSPEC, or a unix stream socket: no usable client address.
    family = 'unknown';
  } else if (famByte === 0x12 || famByte === 0x22 || famByte === 0x32) {
    return fail('v2 header announces a datagram transport');
  } else {
    return fail('v2 header has an unknown address family');
  }
  if (buf.length < V2_HEADER_LENGTH) return INCOMPLETE;
  const length = buf.readUInt16BE(14);
  if (length > V2_MAX_PAYLOAD) return fail(`v2 header longer than ${V2_MAX_PAYLOAD} bytes`);
  if (length < addressLength) return fail('v2 header too short for its address family');
  const consumed = V2_HEADER_LENGTH + length;
  if (buf.length < consumed) return INCOMPLETE;
  if (family === 'unknown') return { status: 'ok', consumed, header: { version: 2, command, family } };
  const p = V2_HEADER_LENGTH;
  // TLVs after the addresses are skipped.
  if (family === 'tcp4') {
    return {
      status: 'ok',
      consumed,
      header: {
        version: 2,
        command,
        family,
        sourceAddress: formatIPv4(buf, p),
        destinationAddress: formatIPv4(buf, p + 4),
        sourcePort: buf.readUInt16BE(p + 8),
        destinationPort: buf.readUInt16BE(p + 10),
      },
    };
  }
  return {
    status: 'ok',
    consumed,
    header: {
      version: 2,
      command,
      family,
      sourceAddress: formatIPv6(buf, p),
      destinationAddress: formatIPv6(buf, p + 16),
      sourcePort: buf.readUInt16BE(p + 32),
      destinationPort: buf.readUInt16BE(p + 34),
    },
  };
}

function formatIPv4(buf: Buffer, at: number): string {
  return `${buf[at]}.${buf[at + 1]}.${buf[at + 2]}.${buf[at + 3]}`;
}

/** RFC 5952 text form; IPv4-mapped addresses as ::ffff:a.b.c.d (the form Node uses for socket addresses). */
export function formatIPv6(buf: Buffer, at: number): string {
  const groups: number[] = [];
  for (let i = 0; i < 8; i++) groups.push(buf.readUInt16BE(at + i * 2));
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    return `::ffff:${formatIPv4(buf, at + 12)}`;
  }
  // Longest run of two or more zero groups; the first one wins a tie.
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) { bestStart = i; bestLen = j - i; }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestLen < 2) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}
