/**
 * DNS messages on the query path: a bounded, allocation-light parser for queries and a writer for the answers
 * (pure functions, no sockets). Hand-written rather than dns-packet's decode/encode because
 * - the question must be echoed byte for byte (DNS 0x20 case randomisation), and dns-packet decodes labels into
 *   UTF-8 strings (bytes >= 0x80 and dots inside labels do not survive a round trip);
 * - answers use compression pointers into the echoed question (dns-packet's encoder does not compress), which
 *   keeps answers small (no amplification) and under 512 bytes where possible;
 * - every query costs one pass over at most 512 (UDP) or 65535 (TCP) bytes, with no pointer chasing in the
 *   question and bounded pointer chasing elsewhere.
 * dns-packet is used where its model fits: NOTIFY messages, and the tests' clients.
 */
import type { LookupResult, SoaFields, Zone, ZoneRecord } from './zone.ts';
import type { ZoneDiff } from './journal.ts';
import { appendUnsignedTsig, parseTsig, RCODE_NOTAUTH, signMessage, TSIG_BADTIME, TYPE_TSIG, verifyRequest, type TsigKey, type TsigRecord } from './tsig.ts';

export const FLAG_QR = 0x8000;
export const FLAG_AA = 0x0400;
export const FLAG_TC = 0x0200;
export const FLAG_RD = 0x0100;
export const FLAG_CD = 0x0010;
export const OPCODE_QUERY = 0;
export const OPCODE_NOTIFY = 4;

export const RCODE_NOERROR = 0;
export const RCODE_FORMERR = 1;
export const RCODE_SERVFAIL = 2;
export const RCODE_NXDOMAIN = 3;
export const RCODE_NOTIMP = 4;
export const RCODE_REFUSED = 5;
/** Extended rcode 16 (RFC 6891): upper 8 bits in the OPT TTL, lower 4 bits (0) in the header. */
export const RCODE_BADVERS = 16;

export const TYPE_A = 1;
export const TYPE_NS = 2;
export const TYPE_SOA = 6;
export const TYPE_TXT = 16;
export const TYPE_AAAA = 28;
export const TYPE_OPT = 41;
export const TYPE_IXFR = 251;
export const TYPE_AXFR = 252;
export const TYPE_ANY = 255;
export const CLASS_IN = 1;
export const CLASS_ANY = 255;

const MAX_NAME = 255;
const MAX_ADDITIONAL = 4;
const MAX_POINTER_HOPS = 64;

export interface Edns {
  readonly udpSize: number;
  readonly version: number;
  readonly dnssecOk: boolean;
}

export interface Query {
  readonly id: number;
  readonly flags: number;
  readonly opcode: number;
  /** Offsets of the length byte of each QNAME label, most specific first (the root label excluded). */
  readonly labelStarts: readonly number[];
  /** Offset just past the QNAME's root label. */
  readonly qnameEnd: number;
  /** Offset just past QTYPE and QCLASS: bytes 12..questionEnd are echoed as they came. */
  readonly questionEnd: number;
  readonly qtype: number;
  readonly qclass: number;
  readonly edns: Edns | null;
  /**
   * IXFR only (RFC 1995 section 3): the serial of the SOA the client sent in the authority section (the version it
   * has), or null when it sent none.
   */
  readonly ixfrSerial?: number | null;
  /** The TSIG record (RFC 8945) that ends the message, if it is signed. */
  readonly tsig?: TsigRecord;
}

export type ParseResult =
  | { readonly kind: 'query'; readonly query: Query }
  | { readonly kind: 'drop'; readonly reason: string }
  | { readonly kind: 'error'; readonly rcode: number; readonly id: number; readonly flags: number; readonly reason: string };

/** Offset past a (possibly compressed) name that starts at `off`, or -1 when it is malformed. */
function skipName(msg: Uint8Array, off: number): number {
  let pos = off;
  let end = -1;
  let hops = 0;
  let total = 0;
  for (;;) {
    if (pos >= msg.length) return -1;
    const len = msg[pos]!;
    if (len === 0) return end < 0 ? pos + 1 : end;
    const kind = len & 0xc0;
    if (kind === 0xc0) {
      if (pos + 1 >= msg.length) return -1;
      const target = ((len & 0x3f) << 8) | msg[pos + 1]!;
      if (end < 0) end = pos + 2;
      if (target >= pos || ++hops > MAX_POINTER_HOPS) return -1; // only backwards: no loops
      pos = target;
      continue;
    }
    if (kind !== 0) return -1;
    total += len + 1;
    if (total > MAX_NAME) return -1;
    pos += len + 1;
  }
}

/** Parses a query. Never throws; bounded by the message length. */
export function parseQuery(msg: Uint8Array): ParseResult {
  if (msg.length < 12) return { kind: 'drop', reason: 'short header' };
  const id = (msg[0]! << 8) | msg[1]!;
  const flags = (msg[2]! << 8) | msg[3]!;
  if (flags & FLAG_QR) return { kind: 'drop', reason: 'response' };
  const opcode = (flags >> 11) & 0xf;
  const qd = (msg[4]! << 8) | msg[5]!;
  const an = (msg[6]! << 8) | msg[7]!;
  const ns = (msg[8]! << 8) | msg[9]!;
  const ar = (msg[10]! << 8) | msg[11]!;
  const err = (rcode: number, reason: string): ParseResult => ({ kind: 'error', rcode, id, flags, reason });
  if (opcode !== OPCODE_QUERY) return err(RCODE_NOTIMP, `opcode ${opcode}`);
  if (qd !== 1) return err(RCODE_FORMERR, `QDCOUNT ${qd}`);
  // An IXFR query carries the client's SOA in the authority section (RFC 1995 section 3): checked below.
  if (an !== 0 || ns > 1) return err(RCODE_FORMERR, 'answer or authority records in a query');
  if (ar > MAX_ADDITIONAL) return err(RCODE_FORMERR, `ARCOUNT ${ar}`);

  const labelStarts: number[] = [];
  let pos = 12;
  let total = 1;
  for (;;) {
    if (pos >= msg.length) return err(RCODE_FORMERR, 'truncated question');
    const len = msg[pos]!;
    if (len === 0) { pos++; break; }
    if (len & 0xc0) return err(RCODE_FORMERR, 'compressed or extended label in the question');
    total += len + 1;
    if (total > MAX_NAME) return err(RCODE_FORMERR, 'name too long');
    labelStarts.push(pos);
    pos += len + 1;
  }
  const qnameEnd = pos;
  if (pos + 4 > msg.length) return err(RCODE_FORMERR, 'truncated question');
  const qtype = (msg[pos]! << 8) | msg[pos + 1]!;
  const qclass = (msg[pos + 2]! << 8) | msg[pos + 3]!;
  pos += 4;
  const questionEnd = pos;

  let ixfrSerial: number | null = null;
  if (ns === 1) {
    if (qtype !== TYPE_IXFR) return err(RCODE_FORMERR, 'authority records in a query other than IXFR');
    const after = skipName(msg, pos);
    if (after < 0 || after + 10 > msg.length) return err(RCODE_FORMERR, 'bad authority record');
    const type = (msg[after]! << 8) | msg[after + 1]!;
    const rdlen = (msg[after + 8]! << 8) | msg[after + 9]!;
    const next = after + 10 + rdlen;
    if (type !== TYPE_SOA || next > msg.length) return err(RCODE_FORMERR, 'the IXFR authority record is not an SOA');
    // SOA RDATA: MNAME, RNAME (names, possibly compressed), then SERIAL and four more 32-bit fields.
    const mnameEnd = skipName(msg, after + 10);
    const rnameEnd = mnameEnd < 0 ? -1 : skipName(msg, mnameEnd);
    if (rnameEnd < 0 || rnameEnd + 20 !== next) return err(RCODE_FORMERR, 'bad SOA in the IXFR authority section');
    ixfrSerial = ((msg[rnameEnd]! << 24) | (msg[rnameEnd + 1]! << 16) | (msg[rnameEnd + 2]! << 8) | msg[rnameEnd + 3]!) >>> 0;
    pos = next;
  }

  let edns: Edns | null = null;
  let tsig: TsigRecord | undefined;
  for (let i = 0; i < ar; i++) {
    const nameStart = pos;
    const after = skipName(msg, pos);
    if (after < 0 || after + 10 > msg.length) return err(RCODE_FORMERR, 'bad additional record');
    const type = (msg[after]! << 8) | msg[after + 1]!;
    const rdlen = (msg[after + 8]! << 8) | msg[after + 9]!;
    const next = after + 10 + rdlen;
    if (next > msg.length) return err(RCODE_FORMERR, 'truncated additional record');
    if (type === TYPE_TSIG) {
      // RFC 8945 section 5.1: the last record of the additional section, or FORMERR.
      const t = i === ar - 1 ? parseTsig(msg.subarray(0, next), nameStart) : null;
      if (t === null) return err(RCODE_FORMERR, 'bad or misplaced TSIG record');
      tsig = t;
    } else if (type === TYPE_OPT) {
      if (edns !== null) return err(RCODE_FORMERR, 'two OPT records');
      if (msg[nameStart] !== 0) return err(RCODE_FORMERR, 'OPT owner is not the root');
      // Options: walk them to check their framing (RFC 6891 section 6.1.2); none is acted upon.
      for (let o = after + 10; o < next; ) {
        if (o + 4 > next) return err(RCODE_FORMERR, 'bad EDNS option');
        o += 4 + ((msg[o + 2]! << 8) | msg[o + 3]!);
        if (o > next) return err(RCODE_FORMERR, 'bad EDNS option');
      }
      edns = {
        udpSize: (msg[after + 2]! << 8) | msg[after + 3]!,
        version: msg[after + 5]!,
        dnssecOk: (msg[after + 6]! & 0x80) !== 0,
      };
    }
    pos = next;
  }
  // Bytes after the last record are ignored, as BIND and rbldnsd do (field report D4): the message parsed whole.
  return { kind: 'query', query: { id, flags, opcode, labelStarts, qnameEnd, questionEnd, qtype, qclass, edns, ...(qtype === TYPE_IXFR ? { ixfrSerial } : {}), ...(tsig ? { tsig } : {}) } };
}

// ---------------------------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------------------------

/** A growable big-endian writer; one per in-flight response (no shared scratch buffer). */
export class Writer {
  buf: Buffer;
  pos = 0;
  constructor(size = 512) {
    this.buf = Buffer.allocUnsafe(size);
  }
  #need(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const b = Buffer.allocUnsafe(size);
    this.buf.copy(b, 0, 0, this.pos);
    this.buf = b;
  }
  u8(v: number): void { this.#need(1); this.buf[this.pos++] = v; }
  u16(v: number): void { this.#need(2); this.buf.writeUInt16BE(v, this.pos); this.pos += 2; }
  u32(v: number): void { this.#need(4); this.buf.writeUInt32BE(v >>> 0, this.pos); this.pos += 4; }
  bytes(b: Uint8Array, start = 0, end = b.length): void {
    this.#need(end - start);
    this.buf.set(b.subarray(start, end), this.pos);
    this.pos += end - start;
  }
  setU16(at: number, v: number): void { this.buf.writeUInt16BE(v, at); }
  /** A copy of the bytes written so far. */
  take(): Buffer { return Buffer.from(this.buf.subarray(0, this.pos)); }
}

/**
 * A domain name encoded for a zone: its labels in wire form, and whether it ends with the apex (then the
 * writer appends a pointer to the apex, else a root label).
 */
interface EncodedName {
  readonly head: Buffer;
  readonly underApex: boolean;
}

interface ZoneWire {
  readonly mname: EncodedName;
  readonly rname: EncodedName;
  readonly ns: readonly EncodedName[];
  readonly apexLabels: readonly Buffer[];
}

const wireCache = new WeakMap<Zone, ZoneWire>();

function labelsToWire(labels: readonly string[]): Buffer {
  const parts: Buffer[] = [];
  for (const l of labels) {
    const b = Buffer.from(l, 'latin1');
    parts.push(Buffer.from([b.length]), b);
  }
  return Buffer.concat(parts);
}

function encodeName(name: string, zone: Zone): EncodedName {
  if (name === zone.apex) return { head: Buffer.alloc(0), underApex: true };
  if (name.endsWith(`.${zone.apex}`)) {
    return { head: labelsToWire(name.slice(0, -zone.apex.length - 1).split('.')), underApex: true };
  }
  return { head: labelsToWire(name.split('.')), underApex: false };
}

function zoneWire(zone: Zone): ZoneWire {
  let w = wireCache.get(zone);
  if (!w) {
    w = {
      mname: encodeName(zone.soa.mname, zone),
      rname: encodeName(zone.soa.rname, zone),
      ns: zone.ns.map((n) => encodeName(n, zone)),
      apexLabels: zone.apexLabels.map((l) => Buffer.from(l, 'latin1')),
    };
    wireCache.set(zone, w);
  }
  return w;
}

function writeName(w: Writer, n: EncodedName, apexOffset: number): void {
  w.bytes(n.head);
  if (n.underApex) w.u16(0xc000 | apexOffset);
  else w.u8(0);
}

function writeSoaRdata(w: Writer, zw: ZoneWire, soa: SoaFields, apexOffset: number): void {
  const lenAt = w.pos;
  w.u16(0);
  writeName(w, zw.mname, apexOffset);
  writeName(w, zw.rname, apexOffset);
  w.u32(soa.serial);
  w.u32(soa.refresh);
  w.u32(soa.retry);
  w.u32(soa.expire);
  w.u32(soa.minimum);
  w.setU16(lenAt, w.pos - lenAt - 2);
}

/** TXT rdata: the text's UTF-8 bytes as character-strings of at most 255 bytes each. */
function writeTxtRdata(w: Writer, text: string): void {
  const bytes = Buffer.from(text, 'utf8');
  const chunks = Math.max(1, Math.ceil(bytes.length / 255));
  w.u16(bytes.length + chunks);
  for (let i = 0; i < chunks; i++) {
    const part = bytes.subarray(i * 255, Math.min(bytes.length, (i + 1) * 255));
    w.u8(part.length);
    w.bytes(part);
  }
}

function rrHeader(w: Writer, ownerOffset: number, type: number, ttl: number): void {
  w.u16(0xc000 | ownerOffset);
  w.u16(type);
  w.u16(CLASS_IN);
  w.u32(ttl);
}

/** Is the QNAME's suffix starting at label index i equal to the apex (ASCII case-insensitive)? */
function apexMatchesAt(msg: Uint8Array, q: Query, zw: ZoneWire): number {
  const n = q.labelStarts.length;
  const k = zw.apexLabels.length;
  if (n < k) return -1;
  for (let j = 0; j < k; j++) {
    const start = q.labelStarts[n - k + j]!;
    const want = zw.apexLabels[j]!;
    if (msg[start] !== want.length) return -1;
    for (let b = 0; b < want.length; b++) {
      let c = msg[start + 1 + b]!;
      if (c >= 65 && c <= 90) c += 32;
      if (c !== want[b]) return -1;
    }
  }
  return n - k;
}

export interface RespondContext {
  readonly tcp: boolean;
  /** Largest UDP payload we send when the client offers EDNS (RFC 9715 / DNS flag day 2020: 1232). */
  readonly ednsUdpSize: number;
  /** The client may transfer the zone (checked by the caller; only honoured over TCP). */
  readonly xfrAllowed?: boolean | undefined;
  /** TSIG keys (RFC 8945): signed requests are checked and answered signed; unknown keys get NOTAUTH/BADKEY. */
  readonly tsigKeys?: ReadonlyMap<string, TsigKey> | undefined;
  /** Transfers need a valid TSIG signature as well as an allowed address. */
  readonly xfrNeedsTsig?: boolean | undefined;
  /** The clock TSIG checks use (seconds since the epoch); default the system clock. */
  readonly nowSeconds?: number | undefined;
}

/** A verified signed request: the key, and the request MAC the answer's signature chains on. */
export interface TsigSigner {
  readonly key: TsigKey;
  readonly requestMac: Buffer;
}

export type Response =
  | { readonly kind: 'reply'; readonly bytes: Buffer; readonly rcode: number; readonly truncated: boolean }
  | { readonly kind: 'drop'; readonly reason: string }
  | { readonly kind: 'xfr'; readonly query: Query; readonly tsig?: TsigSigner };

/** Writes a response header: opcode, RD and CD copied from the request; `set` adds AA / TC. */
function header(w: Writer, id: number, reqFlags: number, rcode: number, set: number, qd: number, an: number, ns: number, ar: number): void {
  const flags = FLAG_QR | (reqFlags & (0x7800 | FLAG_RD | FLAG_CD)) | set | (rcode & 0xf);
  w.u16(id);
  w.u16(flags);
  w.u16(qd);
  w.u16(an);
  w.u16(ns);
  w.u16(ar);
}

function writeOpt(w: Writer, udpSize: number, extRcode: number, dnssecOk: boolean): void {
  w.u8(0);
  w.u16(TYPE_OPT);
  w.u16(udpSize);
  w.u8(extRcode >> 4);
  w.u8(0); // version 0
  w.u16(dnssecOk ? 0x8000 : 0);
  w.u16(0);
}

function errorReply(id: number, flags: number, rcode: number): Response {
  const w = new Writer(12);
  // NOTIMP (an opcode we do not implement) echoes the opcode and nothing else of the request's flags: RD and CD
  // belong to QUERY (field report D4, ISC genreport "opcodeflg").
  header(w, id, rcode === RCODE_NOTIMP ? flags & 0x7800 : flags, rcode, 0, 0, 0, 0, 0);
  return { kind: 'reply', bytes: w.take(), rcode, truncated: false };
}

/**
 * Answers one query message for one zone. Returns the reply bytes, "drop" (no reply at all: responses, runts),
 * or "xfr" when the caller (TCP only, after its access check) should stream a zone transfer.
 */
export function respond(msg: Buffer, zone: Zone, ctx: RespondContext): Response {
  const p = parseQuery(msg);
  if (p.kind === 'drop') return p;
  if (p.kind === 'error') return errorReply(p.id, p.flags, p.rcode);
  const q = p.query;
  if (q.tsig === undefined) {
    if ((q.qtype === TYPE_AXFR || q.qtype === TYPE_IXFR) && ctx.xfrNeedsTsig === true) return answer(msg, q, zone, { ...ctx, xfrAllowed: false });
    return answer(msg, q, zone, ctx);
  }
  // Signed (RFC 8945 section 5.2): check, then answer signed; a failure is NOTAUTH with the TSIG error.
  const now = ctx.nowSeconds ?? Math.floor(Date.now() / 1000);
  const v = verifyRequest(msg, q.tsig, ctx.tsigKeys ?? new Map(), now);
  if (!v.ok) {
    const w = new Writer(q.questionEnd + 64);
    header(w, q.id, q.flags, RCODE_NOTAUTH, 0, 1, 0, 0, 0);
    w.bytes(msg, 12, q.questionEnd);
    const bytes = w.take();
    if (v.error === TSIG_BADTIME && v.key !== null) {
      const other = Buffer.alloc(6);
      other.writeUIntBE(now, 0, 6);
      return { kind: 'reply', bytes: signMessage(bytes, v.key, { nowSeconds: now, requestMac: q.tsig.mac, error: TSIG_BADTIME, other }).bytes, rcode: RCODE_NOTAUTH, truncated: false };
    }
    return { kind: 'reply', bytes: appendUnsignedTsig(bytes, q.tsig.keyName, q.tsig.algorithm, now, v.error), rcode: RCODE_NOTAUTH, truncated: false };
  }
  const signer: TsigSigner = { key: v.key, requestMac: q.tsig.mac };
  const r = answer(msg, q, zone, ctx);
  if (r.kind === 'xfr') return { ...r, tsig: signer };
  if (r.kind !== 'reply') return r;
  return { ...r, bytes: signMessage(r.bytes, signer.key, { nowSeconds: now, requestMac: signer.requestMac }).bytes };
}

/** The answer to a parsed query (unsigned; respond() adds the TSIG). */
function answer(msg: Buffer, q: Query, zone: Zone, ctx: RespondContext): Response {
  const zw = zoneWire(zone);
  const limit = ctx.tcp ? 65535 : q.edns ? Math.min(Math.max(q.edns.udpSize, 512), ctx.ednsUdpSize) : 512;
  const ar = q.edns ? 1 : 0;

  const w = new Writer(q.edns ? Math.min(limit, 1232) : 512);
  const finish = (rcode: number, aa: boolean, an: number, ns: number, build: () => void, extRcode = 0): Response => {
    header(w, q.id, q.flags, rcode, aa ? FLAG_AA : 0, 1, an, ns, ar);
    w.bytes(msg, 12, q.questionEnd);
    build();
    if (q.edns) writeOpt(w, ctx.ednsUdpSize, extRcode, q.edns.dnssecOk);
    if (w.pos > limit) {
      // Too long for this transport: header, question and OPT only, with TC set (RFC 2181 section 9).
      const t = new Writer(q.questionEnd + 11);
      header(t, q.id, q.flags, rcode, (aa ? FLAG_AA : 0) | FLAG_TC, 1, 0, 0, ar);
      t.bytes(msg, 12, q.questionEnd);
      if (q.edns) writeOpt(t, ctx.ednsUdpSize, extRcode, q.edns.dnssecOk);
      return { kind: 'reply', bytes: t.take(), rcode, truncated: true };
    }
    return { kind: 'reply', bytes: w.take(), rcode, truncated: false };
  };

  if (q.edns && q.edns.version > 0) return finish(0, false, 0, 0, () => {}, RCODE_BADVERS);
  if (q.qclass !== CLASS_IN && q.qclass !== CLASS_ANY) return finish(RCODE_REFUSED, false, 0, 0, () => {});
  if (q.qtype === TYPE_OPT) return finish(RCODE_FORMERR, false, 0, 0, () => {});
  const below = apexMatchesAt(msg, q, zw);
  if (below < 0) return finish(RCODE_REFUSED, false, 0, 0, () => {});
  const apexOffset = q.labelStarts[below]!;

  if (q.qtype === TYPE_AXFR || q.qtype === TYPE_IXFR) {
    if (ctx.tcp && ctx.xfrAllowed === true && below === 0) {
      // IXFR from a client that already has this version (or a newer one, RFC 1982): the current SOA alone
      // (RFC 1995 section 4). Otherwise the whole zone, as AXFR would send it (allowed by RFC 1995 section 4).
      if (q.qtype === TYPE_IXFR && q.ixfrSerial != null && serialAtLeast(q.ixfrSerial, zone.soa.serial)) {
        return finish(RCODE_NOERROR, true, 1, 0, () => {
          rrHeader(w, apexOffset, TYPE_SOA, zone.apexTtl);
          writeSoaRdata(w, zw, zone.soa, apexOffset);
        });
      }
      return { kind: 'xfr', query: q };
    }
    return finish(RCODE_REFUSED, true, 0, 0, () => {});
  }

  let result: LookupResult;
  if (below === 0) {
    result = zone.lookupLabels([], false);
  } else {
    const labels: string[] = new Array(below);
    let odd = false;
    for (let i = 0; i < below; i++) {
      const s = q.labelStarts[i]!;
      const l = msg[s]!;
      // latin1 keeps one char per byte; a label with a dot in it can't be a name of this zone.
      const text = msg.toString('latin1', s + 1, s + 1 + l);
      if (text.includes('.')) odd = true;
      labels[i] = text;
    }
    result = odd ? { kind: 'nxdomain' } : zone.lookupLabels(labels, q.qtype === TYPE_TXT);
  }

  const negative = (rcode: number): Response =>
    finish(rcode, true, 0, 1, () => {
      rrHeader(w, apexOffset, TYPE_SOA, zone.negativeTtl);
      writeSoaRdata(w, zw, zone.soa, apexOffset);
    });

  switch (result.kind) {
    case 'refused':
      return finish(RCODE_REFUSED, false, 0, 0, () => {});
    case 'nxdomain':
      return negative(RCODE_NXDOMAIN);
    case 'nodata':
      return negative(RCODE_NOERROR);
    case 'apex': {
      if (q.qtype === TYPE_SOA || q.qtype === TYPE_ANY) {
        // ANY gets one RRset (RFC 8482): the SOA.
        return finish(RCODE_NOERROR, true, 1, 0, () => {
          rrHeader(w, apexOffset, TYPE_SOA, zone.apexTtl);
          writeSoaRdata(w, zw, zone.soa, apexOffset);
        });
      }
      if (q.qtype === TYPE_NS) {
        return finish(RCODE_NOERROR, true, zw.ns.length, 0, () => {
          for (const n of zw.ns) {
            rrHeader(w, apexOffset, TYPE_NS, zone.apexTtl);
            const lenAt = w.pos;
            w.u16(0);
            writeName(w, n, apexOffset);
            w.setU16(lenAt, w.pos - lenAt - 2);
          }
        });
      }
      return negative(RCODE_NOERROR);
    }
    case 'host': {
      const wantA = q.qtype === TYPE_A || q.qtype === TYPE_ANY;
      const wantAAAA = q.qtype === TYPE_AAAA || (q.qtype === TYPE_ANY && result.a.length === 0);
      const count = (wantA ? result.a.length : 0) + (wantAAAA ? result.aaaa.length : 0);
      if (count === 0) return negative(RCODE_NOERROR);
      return finish(RCODE_NOERROR, true, count, 0, () => {
        if (wantA) for (const a of result.a) { rrHeader(w, 12, TYPE_A, zone.apexTtl); w.u16(4); w.u32(a); }
        if (wantAAAA) for (const a of result.aaaa) { rrHeader(w, 12, TYPE_AAAA, zone.apexTtl); w.u16(16); w.bytes(a); }
      });
    }
    case 'listed': {
      if (q.qtype === TYPE_A || q.qtype === TYPE_ANY) {
        // ANY: the A record alone (RFC 8482 minimal answer; A is what "listed" means).
        return finish(RCODE_NOERROR, true, 1, 0, () => {
          rrHeader(w, 12, TYPE_A, zone.ttl);
          w.u16(4);
          w.u32(result.a);
        });
      }
      if (q.qtype === TYPE_TXT && result.txt !== null) {
        const txt = result.txt;
        return finish(RCODE_NOERROR, true, 1, 0, () => {
          rrHeader(w, 12, TYPE_TXT, zone.ttl);
          writeTxtRdata(w, txt);
        });
      }
      return negative(RCODE_NOERROR);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// UDP fast path
// ---------------------------------------------------------------------------------------------------------------

/** Per-zone data of the fast path, encoded once: the apex in wire form, the SOA RR, the values' answers. */
interface FastWire {
  /** The apex labels in wire form, lower case, with the root label. */
  readonly apex: Uint8Array;
  /** The negative answer's SOA RR after its owner: TYPE CLASS TTL RDLENGTH RDATA, apex pointers left as 0. */
  readonly soa: Uint8Array;
  /** Offsets in `soa` where a 2-byte pointer to the apex goes. */
  readonly soaPatches: readonly number[];
  /** Per value: A record value, and the TXT template's parts as UTF-8 (null: no TXT). */
  readonly a: Uint32Array;
  readonly txt: ReadonlyArray<readonly Uint8Array[] | null>;
  /** Per value: bytes of the TXT text without the addresses. */
  readonly txtFixed: Uint32Array;
}

const fastCache = new WeakMap<Zone, FastWire>();

function fastWire(zone: Zone): FastWire {
  let f = fastCache.get(zone);
  if (f) return f;
  const zw = zoneWire(zone);
  const apex = Buffer.concat([labelsToWire(zone.apexLabels), Buffer.from([0])]);
  const w = new Writer(512);
  const soaPatches: number[] = [];
  w.u16(TYPE_SOA);
  w.u16(CLASS_IN);
  w.u32(zone.negativeTtl);
  const lenAt = w.pos;
  w.u16(0);
  for (const n of [zw.mname, zw.rname]) {
    w.bytes(n.head);
    if (n.underApex) { soaPatches.push(w.pos); w.u16(0xc000); } else w.u8(0);
  }
  const soa = zone.soa;
  for (const v of [soa.serial, soa.refresh, soa.retry, soa.expire, soa.minimum]) w.u32(v);
  w.setU16(lenAt, w.pos - lenAt - 2);
  const count = zone.valueCount;
  const a = new Uint32Array(count);
  const txt: Array<Uint8Array[] | null> = [];
  const txtFixed = new Uint32Array(count);
  for (let i = 0; i < count; i++) {
    const v = zone.value(i);
    a[i] = v.a;
    const parts = v.parts === null ? null : v.parts.map((p) => Buffer.from(p, 'utf8'));
    txt.push(parts);
    txtFixed[i] = parts === null ? 0 : parts.reduce((n, p) => n + p.length, 0);
  }
  f = { apex, soa: w.take(), soaPatches, a, txt, txtFixed };
  fastCache.set(zone, f);
  return f;
}

/** Bytes of `out` that respondFast needs at least. */
export const FAST_OUT_BYTES = 4096;

/** The IPv6 address fastV6Name parsed, as four 32-bit words, most significant first. */
const FAST_V6 = new Uint32Array(4);

/**
 * A full reversed IPv6 name at offset 12 (32 labels of one hex digit, either case, least significant nibble
 * first): fills FAST_V6 and returns the offset after the labels, or 0.
 */
function fastV6Name(msg: Uint8Array, len: number): number {
  if (12 + 64 > len) return 0;
  let w0 = 0;
  let w1 = 0;
  let w2 = 0;
  let w3 = 0;
  for (let k = 0; k < 32; k++) {
    const p = 12 + 2 * k;
    if (msg[p] !== 1) return 0;
    const c = msg[p + 1]!;
    let nib: number;
    if (c >= 48 && c <= 57) nib = c - 48;
    else if (c >= 97 && c <= 102) nib = c - 87;
    else if (c >= 65 && c <= 70) nib = c - 55;
    else return 0;
    // Label k holds nibble 31 - k counted from the most significant one.
    const j = 31 - k;
    const v = nib << ((7 - (j & 7)) * 4);
    const w = j >> 3;
    if (w === 0) w0 |= v;
    else if (w === 1) w1 |= v;
    else if (w === 2) w2 |= v;
    else w3 |= v;
  }
  FAST_V6[0] = w0;
  FAST_V6[1] = w1;
  FAST_V6[2] = w2;
  FAST_V6[3] = w3;
  return 12 + 64;
}

/** Does the apex (lower-case wire form, root label included) start at `pos`, ASCII case-insensitively? */
function apexAt(msg: Uint8Array, pos: number, apex: Uint8Array, len: number): boolean {
  if (pos + apex.length + 4 > len) return false;
  for (let i = 0; i < apex.length; i++) {
    let c = msg[pos + i]!;
    if (c >= 65 && c <= 90) c += 32;
    if (c !== apex[i]) return false;
  }
  return true;
}

/**
 * The common query, answered without allocating: A or TXT, class IN, for a reversed IPv4 name (four canonical
 * decimal labels) or a full reversed IPv6 name (32 nibble labels; A and negative answers only, TXT goes the
 * general way since its text carries the formatted address) of this zone, no EDNS or one valid version-0 OPT.
 * Writes the reply into `out` (at least FAST_OUT_BYTES long) and returns its length; returns 0 for anything else
 * (including answers that would need TC), which the caller hands to respond(). For the queries it answers, the
 * bytes are exactly respond()'s.
 */
export function respondFast(msg: Uint8Array, zone: Zone, ednsUdpSize: number, out: Uint8Array): number {
  const len = msg.length;
  if (len < 17) return 0;
  const reqFlags = (msg[2]! << 8) | msg[3]!;
  // QR clear, opcode QUERY; QDCOUNT 1, ANCOUNT 0, NSCOUNT 0, ARCOUNT 0 or 1.
  if ((reqFlags & 0xf800) !== 0 || msg[4] !== 0 || msg[5] !== 1 || msg[6] !== 0 || msg[7] !== 0 || msg[8] !== 0 || msg[9] !== 0 || msg[10] !== 0) return 0;
  const ar = msg[11]!;
  if (ar > 1) return 0;

  // Four decimal labels, least significant octet first; else 32 nibble labels (IPv6). Then the apex.
  const fw = fastWire(zone);
  const apex = fw.apex;
  let pos = 12;
  let ip = 0;
  let singleDigits = true;
  let v4 = false;
  decimal: {
    let scale = 1;
    for (let k = 0; k < 4; k++) {
      const l = msg[pos]!;
      if (!(l >= 1 && l <= 3)) break decimal;
      let v = 0;
      for (let b = 1; b <= l; b++) {
        const c = msg[pos + b]! - 48;
        if (!(c >= 0 && c <= 9)) break decimal;
        v = v * 10 + c;
      }
      if (v > 255 || (l > 1 && msg[pos + 1] === 48)) break decimal;
      if (l > 1) singleDigits = false;
      ip += v * scale;
      scale *= 256;
      pos += l + 1;
    }
    v4 = apexAt(msg, pos, apex, len);
  }
  if (!v4) {
    pos = fastV6Name(msg, len);
    if (pos === 0 || !apexAt(msg, pos, apex, len)) return 0;
  }
  const apexOffset = pos;
  pos += apex.length;
  if (pos - 12 > MAX_NAME) return 0;
  const qtype = (msg[pos]! << 8) | msg[pos + 1]!;
  if ((qtype !== TYPE_A && qtype !== TYPE_TXT) || msg[pos + 2] !== 0 || msg[pos + 3] !== CLASS_IN) return 0;
  const questionEnd = pos + 4;

  let limit = 512;
  let dnssecOk = false;
  if (ar === 0) {
    if (questionEnd !== len) return 0;
  } else {
    // One OPT: root owner, TYPE 41, version 0, options framed exactly to the end of the message.
    const o = questionEnd;
    if (o + 11 > len || msg[o] !== 0 || msg[o + 1] !== 0 || msg[o + 2] !== TYPE_OPT || msg[o + 6] !== 0) return 0;
    const next = o + 11 + ((msg[o + 9]! << 8) | msg[o + 10]!);
    if (next !== len) return 0;
    for (let p = o + 11; p < next; ) {
      if (p + 4 > next) return 0;
      p += 4 + ((msg[p + 2]! << 8) | msg[p + 3]!);
      if (p > next) return 0;
    }
    limit = Math.min(Math.max((msg[o + 3]! << 8) | msg[o + 4]!, 512), ednsUdpSize);
    dnssecOk = (msg[o + 7]! & 0x80) !== 0;
  }

  const vi = v4 ? zone.v4Value(ip) : zone.v6Value(FAST_V6[0]!, FAST_V6[1]!, FAST_V6[2]!, FAST_V6[3]!);
  let rcode = RCODE_NOERROR;
  let answer = 0; // 0: negative (SOA), TYPE_A, TYPE_TXT
  let txtLen = 0;
  let addrLen = 0;
  if (vi < 0) {
    // Host names and IPv6 nibble prefixes (four single-digit labels) are the general path's business.
    if (zone.hasHosts || (v4 && singleDigits)) return 0;
    rcode = RCODE_NXDOMAIN;
  } else if (qtype === TYPE_A) {
    answer = TYPE_A;
  } else if (fw.txt[vi] !== null) {
    // The text of an IPv6 entry carries its formatted address: the general path writes it.
    if (!v4) return 0;
    answer = TYPE_TXT;
    addrLen = apexOffset - 12 - 1; // "d.c.b.a": the four labels' bytes and three dots
    txtLen = fw.txtFixed[vi]! + (fw.txt[vi]!.length - 1) * addrLen;
  }
  const chunks = Math.max(1, Math.ceil(txtLen / 255));
  const size = questionEnd + (answer === TYPE_A ? 16 : answer === TYPE_TXT ? 12 + chunks + txtLen : 2 + fw.soa.length) + (ar === 1 ? 11 : 0);
  if (size > limit || size > out.length) return 0;

  // Header.
  const flags = FLAG_QR | (reqFlags & (FLAG_RD | FLAG_CD)) | FLAG_AA | rcode;
  out[0] = msg[0]!;
  out[1] = msg[1]!;
  out[2] = flags >> 8;
  out[3] = flags & 0xff;
  out[4] = 0; out[5] = 1;
  out[6] = 0; out[7] = answer === 0 ? 0 : 1;
  out[8] = 0; out[9] = answer === 0 ? 1 : 0;
  out[10] = 0; out[11] = ar;
  for (let i = 12; i < questionEnd; i++) out[i] = msg[i]!;
  let p = questionEnd;
  if (answer === 0) {
    out[p++] = 0xc0 | (apexOffset >> 8);
    out[p++] = apexOffset & 0xff;
    const soa = fw.soa;
    out.set(soa, p);
    for (const at of fw.soaPatches) {
      out[p + at] = 0xc0 | (apexOffset >> 8);
      out[p + at + 1] = apexOffset & 0xff;
    }
    p += soa.length;
  } else {
    const ttl = zone.ttl;
    out[p++] = 0xc0; out[p++] = 12;
    out[p++] = 0; out[p++] = answer;
    out[p++] = 0; out[p++] = CLASS_IN;
    out[p++] = ttl >>> 24; out[p++] = (ttl >>> 16) & 0xff; out[p++] = (ttl >>> 8) & 0xff; out[p++] = ttl & 0xff;
    if (answer === TYPE_A) {
      const a = fw.a[vi]!;
      out[p++] = 0; out[p++] = 4;
      out[p++] = a >>> 24; out[p++] = (a >>> 16) & 0xff; out[p++] = (a >>> 8) & 0xff; out[p++] = a & 0xff;
    } else {
      const rdlen = txtLen + chunks;
      out[p++] = rdlen >> 8; out[p++] = rdlen & 0xff;
      // The text: parts joined by the address, cut into character-strings of at most 255 bytes.
      const parts = fw.txt[vi]!;
      // The address is the question's labels 3, 2, 1, 0 joined by dots.
      const s0 = 12;
      const s1 = s0 + msg[s0]! + 1;
      const s2 = s1 + msg[s1]! + 1;
      const s3 = s2 + msg[s2]! + 1;
      let lenAt = p++;
      let inChunk = 0;
      for (let i = 0; i < parts.length; i++) {
        if (i > 0) {
          for (let k = 3; k >= 0; k--) {
            const s = k === 3 ? s3 : k === 2 ? s2 : k === 1 ? s1 : s0;
            const l = msg[s]!;
            const end = k > 0 ? l + 1 : l;
            for (let b = 1; b <= end; b++) {
              if (inChunk === 255) { out[lenAt] = 255; lenAt = p++; inChunk = 0; }
              out[p++] = b <= l ? msg[s + b]! : 46;
              inChunk++;
            }
          }
        }
        const part = parts[i]!;
        for (let b = 0; b < part.length; b++) {
          if (inChunk === 255) { out[lenAt] = 255; lenAt = p++; inChunk = 0; }
          out[p++] = part[b]!;
          inChunk++;
        }
      }
      out[lenAt] = inChunk;
    }
  }
  if (ar === 1) {
    out[p++] = 0;
    out[p++] = 0; out[p++] = TYPE_OPT;
    out[p++] = ednsUdpSize >> 8; out[p++] = ednsUdpSize & 0xff;
    out[p++] = 0; out[p++] = 0;
    out[p++] = dnssecOk ? 0x80 : 0; out[p++] = 0;
    out[p++] = 0; out[p++] = 0;
  }
  return p;
}

// ---------------------------------------------------------------------------------------------------------------
// Zone transfer messages
// ---------------------------------------------------------------------------------------------------------------

function parseIpv4(s: string): number {
  const p = s.split('.').map(Number);
  return (((p[0]! << 24) >>> 0) + (p[1]! << 16) + (p[2]! << 8) + p[3]!) >>> 0;
}

function ipv6Bytes(s: string): Buffer {
  // Expand "::" and write eight 16-bit groups.
  const [head, tail] = s.includes('::') ? s.split('::') as [string, string] : [s, null];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === null ? h : [...h, ...new Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const b = Buffer.alloc(16);
  groups.forEach((g, i) => b.writeUInt16BE(parseInt(g, 16), i * 2));
  return b;
}

/** RFC 1982 serial number arithmetic: a >= b in the 32-bit serial space (a == b, or a is less than 2^31 ahead). */
export function serialAtLeast(a: number, b: number): boolean {
  const d = ((a >>> 0) - (b >>> 0) + 0x1_0000_0000) % 0x1_0000_0000;
  return d === 0 || d < 0x8000_0000;
}

/**
 * Encodes zone records into AXFR messages of about `maxBytes` each (RFC 5936): every message echoes the
 * question, so owner names compress against the apex at offset 12.
 */
export function* axfrMessages(msg: Uint8Array, q: Query, zone: Zone, maxBytes = 16384): Generator<Buffer> {
  yield* xfrMessages(msg, q, zone, axfrRecords(zone), maxBytes);
}

function* axfrRecords(zone: Zone): Generator<ZoneRecord> {
  let soa: ZoneRecord | null = null;
  for (const r of zone.records()) {
    if (soa === null && r.type === 'SOA') soa = r;
    yield r;
  }
  if (soa) yield soa;
}

/**
 * An incremental transfer (RFC 1995 section 4): the current SOA, then per change the SOA it starts from, the
 * records it removes, the SOA it makes and the records it adds, then the current SOA again. `diffs` chain from
 * the client's serial to the zone's (journal.ts ZoneJournal.since); [] makes the one-SOA "you are current" answer.
 */
export function* ixfrMessages(msg: Uint8Array, q: Query, zone: Zone, diffs: readonly ZoneDiff[], maxBytes = 16384): Generator<Buffer> {
  function* records(): Generator<ZoneRecord> {
    const soa = (data: SoaFields): ZoneRecord => ({ name: '', type: 'SOA', ttl: zone.apexTtl, data });
    yield soa(zone.soa);
    if (diffs.length === 0) return;
    for (const d of diffs) {
      yield soa(d.from);
      yield* d.removed;
      yield soa(d.to);
      yield* d.added;
    }
    yield soa(zone.soa);
  }
  yield* xfrMessages(msg, q, zone, records(), maxBytes);
}

/**
 * Signs the messages of a transfer answer (RFC 8945 section 5.3.1): the first with the request MAC, each later one
 * with the MAC before it and the timers only. Every message is signed (allowed: at most 99 may go unsigned).
 */
export function* signedTransfer(messages: Iterable<Buffer>, signer: TsigSigner, nowSeconds: () => number): Generator<Buffer> {
  let prior: Buffer | undefined;
  for (const m of messages) {
    const s = signMessage(m, signer.key, prior === undefined ? { nowSeconds: nowSeconds(), requestMac: signer.requestMac } : { nowSeconds: nowSeconds(), priorMac: prior });
    prior = s.mac;
    yield s.bytes;
  }
}

/** Writes a record sequence as transfer messages of about `maxBytes` each; every message echoes the question. */
function* xfrMessages(msg: Uint8Array, q: Query, zone: Zone, seq: Iterable<ZoneRecord>, maxBytes: number): Generator<Buffer> {
  const zw = zoneWire(zone);
  const relCache = new Map<string, Buffer>();
  let w: Writer | null = null;
  let count = 0;
  const start = (): Writer => {
    const nw = new Writer(maxBytes + 1024);
    header(nw, q.id, q.flags, RCODE_NOERROR, FLAG_AA, 1, 0, 0, 0);
    nw.bytes(msg, 12, q.questionEnd);
    count = 0;
    return nw;
  };
  const flush = (): Buffer => {
    w!.setU16(6, count);
    const b = w!.take();
    w = null;
    return b;
  };
  const owner = (wr: Writer, rel: string): void => {
    if (rel === '') { wr.u16(0xc00c); return; }
    let head = relCache.get(rel);
    if (!head) {
      head = labelsToWire(rel.split('.'));
      if (relCache.size < 4096) relCache.set(rel, head);
    }
    wr.bytes(head);
    wr.u16(0xc00c);
  };
  const write = (r: ZoneRecord): void => {
    const wr = w!;
    owner(wr, r.name);
    const type = r.type === 'SOA' ? TYPE_SOA : r.type === 'NS' ? TYPE_NS : r.type === 'A' ? TYPE_A : r.type === 'AAAA' ? TYPE_AAAA : TYPE_TXT;
    wr.u16(type);
    wr.u16(CLASS_IN);
    wr.u32(r.ttl);
    if (r.type === 'SOA') writeSoaRdata(wr, zw, r.data, 12);
    else if (r.type === 'NS') {
      const lenAt = wr.pos;
      wr.u16(0);
      writeName(wr, encodeName(r.data, zone), 12);
      wr.setU16(lenAt, wr.pos - lenAt - 2);
    } else if (r.type === 'A') { wr.u16(4); wr.u32(parseIpv4(r.data)); }
    else if (r.type === 'AAAA') { wr.u16(16); wr.bytes(ipv6Bytes(r.data)); }
    else writeTxtRdata(wr, r.data);
    count++;
  };
  for (const r of seq) {
    if (w === null) w = start();
    write(r);
    if ((w as Writer).pos >= maxBytes) yield flush();
  }
  if (w !== null) yield flush();
}
