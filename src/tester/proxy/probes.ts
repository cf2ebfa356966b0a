/**
 * Purpose: the open-proxy battery as data (PROXY_PROBES) and the dialogue of each method: HTTP CONNECT, HTTP POST
 * with an SMTP dialogue in the body, absolute-URI GET, SOCKS4, SOCKS4a, SOCKS5 (offering "no auth" and
 * "username/password", so the reply says which one the proxy wants), and a telnet/Wingate-style `host:port`
 * prompt. Each asks the proxy for the tester's sink (a mail port, or a non-mail control port) over IPv4, IPv6 or
 * by name, and through a tunnel that the proxy says is open speaks the safe SMTP exchange (banner, EHLO with the
 * probe tag, QUIT): never MAIL, never a message.
 * The functions only report what the proxy said (RawAttempt); verdict.ts judges, and only the sink's record of
 * the tag makes an attempt OPEN.
 * Trust: the proxy is hostile (wire.ts bounds every read). Destinations are only the sink's addresses.
 * Standards: RFC 9110 (CONNECT, absolute-form request targets, 407), RFC 9112, SOCKS4 and SOCKS4a (NEC/OpenSSH
 * protocol notes), RFC 1928 (SOCKS5), RFC 1929 (username/password), RFC 5321 (greeting, EHLO, QUIT).
 */
import { isIP } from 'node:net';
import { HEADER_END, LINE, SMTP_REPLY, Wire, WireError, printable } from './wire.ts';

export type ProxyMethod = 'http-connect' | 'http-post' | 'http-get' | 'socks4' | 'socks4a' | 'socks5' | 'telnet';
export type ProxyProtocol = 'http' | 'socks4' | 'socks5' | 'telnet';
/** mail4/mail6: the sink's mail port by IPv4/IPv6 literal; control4: its non-mail port; name: the mail port by host name. */
export type DestinationKind = 'mail4' | 'mail6' | 'control4' | 'name';

export interface ProxyProbe {
  readonly id: string;
  readonly method: ProxyMethod;
  readonly dest: DestinationKind;
  readonly title: string;
}

export const PROXY_PROBES: readonly ProxyProbe[] = Object.freeze(([
  { id: 'P01', method: 'http-connect', dest: 'mail4', title: 'HTTP CONNECT to the mail port (IPv4)' },
  { id: 'P02', method: 'http-connect', dest: 'mail6', title: 'HTTP CONNECT to the mail port (IPv6)' },
  { id: 'P03', method: 'http-connect', dest: 'control4', title: 'HTTP CONNECT to a non-mail port (control)' },
  { id: 'P04', method: 'http-post', dest: 'mail4', title: 'HTTP POST with an SMTP dialogue in the body' },
  { id: 'P05', method: 'http-get', dest: 'mail4', title: 'absolute-URI GET to the mail port' },
  { id: 'S01', method: 'socks4', dest: 'mail4', title: 'SOCKS4 CONNECT (IPv4)' },
  { id: 'S02', method: 'socks4a', dest: 'name', title: 'SOCKS4a CONNECT by name' },
  { id: 'S03', method: 'socks5', dest: 'mail4', title: 'SOCKS5 CONNECT, no auth (IPv4)' },
  { id: 'S04', method: 'socks5', dest: 'mail6', title: 'SOCKS5 CONNECT, no auth (IPv6)' },
  { id: 'S05', method: 'socks5', dest: 'name', title: 'SOCKS5 CONNECT, no auth (by name)' },
  { id: 'S06', method: 'socks5', dest: 'control4', title: 'SOCKS5 CONNECT to a non-mail port (control)' },
  { id: 'T01', method: 'telnet', dest: 'mail4', title: 'telnet/Wingate host:port prompt' },
] satisfies ProxyProbe[]).map((p) => Object.freeze(p)));

export function protocolOf(m: ProxyMethod): ProxyProtocol {
  return m.startsWith('http') ? 'http' : m === 'socks5' ? 'socks5' : m === 'telnet' ? 'telnet' : 'socks4';
}

export interface Destination {
  /** IP literal or host name. */
  readonly host: string;
  readonly port: number;
  readonly kind: 'mail' | 'control';
}

export interface StepTimeouts {
  /** Each reply from the proxy (the whole of it: a slow drip past this is a tarpit). */
  readonly step: number;
  /** telnet: how long to wait for a prompt. */
  readonly prompt: number;
}

/** What the proxy said, before any judgement. */
export interface RawAttempt {
  /** The protocol the port answered in (recognized bytes), or null. */
  speaks: ProxyProtocol | null;
  /** The proxy's reply in one line ("HTTP/1.1 403 Forbidden", "SOCKS5 method 0x02", "SOCKS4 0x5b"). */
  reply: string | null;
  /** HTTP status code, when there was one. */
  status: number | null;
  /** SOCKS reply code (SOCKS4 CD or SOCKS5 REP), or the SOCKS5 method chosen when it was not "no auth". */
  socksCode: number | null;
  socksMethod: number | null;
  /** The proxy claimed the tunnel/request succeeded (HTTP 2xx, SOCKS granted, a telnet "connected"). */
  claimed: boolean;
  /** The first line that came back through the tunnel, and whether it carried the sink's nonce. */
  banner: string | null;
  bannerMatches: boolean | null;
  /** Replies to EHLO and QUIT through the tunnel. */
  ehlo: string | null;
  quit: string | null;
  /** Location of a 3xx. */
  location: string | null;
  /** The failure that ended the dialogue, if any. */
  failure: { kind: WireError['kind'] | 'garbage' | 'bad-version' | 'bad-length'; message: string } | null;
  /** The tester's local address on this connection. */
  localAddress: string | null;
  /** Bytes read from the proxy (all of the connection). */
  bytesIn: number;
}

export function emptyRaw(): RawAttempt {
  return {
    speaks: null, reply: null, status: null, socksCode: null, socksMethod: null, claimed: false, banner: null, bannerMatches: null,
    ehlo: null, quit: null, location: null, failure: null, localAddress: null, bytesIn: 0,
  };
}

export interface ExchangeContext {
  readonly wire: Wire;
  readonly probe: ProxyProbe;
  readonly dest: Destination;
  readonly tag: string;
  /** The EHLO name: `<tag>.<tester domain>`. */
  readonly heloName: string;
  /** The sink's greeting nonce. */
  readonly nonce: string;
  readonly timeouts: StepTimeouts;
  readonly raw: RawAttempt;
  /** Called when the port's reply is recognized as a protocol (the runner stops other protocols' waits). */
  readonly onSpeaks?: (p: ProxyProtocol) => void;
}

function speak(c: ExchangeContext, p: ProxyProtocol): void {
  if (c.raw.speaks === null) c.raw.speaks = p;
  c.onSpeaks?.(p);
}

function authority(d: Destination): string {
  return isIP(d.host) === 6 ? `[${d.host}]:${d.port}` : `${d.host}:${d.port}`;
}

const HTTP_STATUS = /^HTTP\/(\d)\.(\d)\s+(\d{3})(?:\s+([^\r\n]*))?/;

function parseHttpHead(head: Buffer, c: ExchangeContext): boolean {
  const raw = c.raw;
  const text = head.toString('latin1');
  const first = text.split(/\r?\n/, 1)[0] ?? '';
  const m = HTTP_STATUS.exec(first);
  if (!m) {
    raw.failure = { kind: 'garbage', message: `not an HTTP reply: "${printable(first, 80)}"` };
    return false;
  }
  speak(c, 'http');
  raw.status = Number(m[3]);
  raw.reply = printable(first, 120);
  const loc = /^location:\s*([^\r\n]*)/im.exec(text);
  if (loc) raw.location = printable(loc[1]!.trim(), 200);
  return true;
}

/** Reads the SMTP greeting through an open tunnel, checks the nonce, then EHLO <tag> and QUIT. */
async function smtpThroughTunnel(c: ExchangeContext): Promise<void> {
  const { wire, raw, timeouts } = c;
  // Bytes that came with the proxy's reply stay buffered and belong to the tunnel; a liar may send a fake banner.
  const greeting = (await wire.read(SMTP_REPLY, timeouts.step, 'greeting through the tunnel')).toString('latin1');
  raw.banner = printable(greeting.split('\n')[0] ?? '', 160);
  raw.bannerMatches = greeting.includes(c.nonce);
  if (!raw.bannerMatches) return; // someone else answered: do not talk to it
  wire.write(`EHLO ${c.heloName}\r\n`);
  raw.ehlo = printable((await wire.read(SMTP_REPLY, timeouts.step, 'EHLO reply through the tunnel')).toString('latin1').split('\n')[0] ?? '', 120);
  wire.write('QUIT\r\n');
  try {
    raw.quit = printable((await wire.read(SMTP_REPLY, timeouts.step, 'QUIT reply through the tunnel')).toString('latin1').split('\n')[0] ?? '', 120);
  } catch { /* the proof is the sink's record; a lost 221 changes nothing */ }
}

async function httpConnect(c: ExchangeContext): Promise<void> {
  const a = authority(c.dest);
  c.wire.write(`CONNECT ${a} HTTP/1.1\r\nHost: ${a}\r\nUser-Agent: relayguard-proxy-tester\r\n\r\n`);
  const head = await c.wire.read(HEADER_END, c.timeouts.step, 'CONNECT reply');
  if (!parseHttpHead(head, c)) return;
  if (c.raw.status! < 200 || c.raw.status! >= 300) return;
  c.raw.claimed = true;
  await smtpThroughTunnel(c);
}

async function httpPost(c: ExchangeContext): Promise<void> {
  const a = authority(c.dest);
  const body = `EHLO ${c.heloName}\r\nQUIT\r\n`;
  c.wire.write(`POST http://${a}/ HTTP/1.0\r\nHost: ${a}\r\nUser-Agent: relayguard-proxy-tester\r\nContent-Type: text/plain\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
  await readHttpReply(c, 'POST reply');
}

async function httpGet(c: ExchangeContext): Promise<void> {
  const a = authority(c.dest);
  c.wire.write(`GET http://${a}/${c.tag} HTTP/1.0\r\nHost: ${a}\r\nUser-Agent: relayguard-proxy-tester\r\n\r\n`);
  await readHttpReply(c, 'GET reply');
}

async function readHttpReply(c: ExchangeContext, what: string): Promise<void> {
  // A proxy that forwards to the sink gets its SMTP greeting back: some pass it on as an HTTP/0.9 body, some
  // turn it into a 502. Either way the proof is the sink's record, not this reply.
  const first = await c.wire.read((b) => {
    if (b.length < 5 && !b.includes(0x0a)) return -1;
    return looksHttp(b) ? HEADER_END(b) : LINE(b);
  }, c.timeouts.step, what);
  const text = first.toString('latin1');
  if (/^HTTP\//.test(text)) {
    if (!parseHttpHead(first, c)) return;
    if (c.raw.status! >= 200 && c.raw.status! < 300) c.raw.claimed = true;
    // A 2xx whose body is our sink's greeting: the proxy relayed the sink's bytes (HTTP/0.9 style).
    const body = c.wire.takeBuffered().toString('latin1');
    if (body.includes(c.nonce)) { c.raw.banner = printable(body.split('\n')[0] ?? '', 160); c.raw.bannerMatches = true; }
    return;
  }
  if (text.includes(c.nonce)) {
    // the bare SMTP greeting relayed as HTTP/0.9
    speak(c, 'http');
    c.raw.claimed = true;
    c.raw.reply = 'HTTP/0.9 (no status line)';
    c.raw.banner = printable(text.split('\n')[0] ?? '', 160);
    c.raw.bannerMatches = true;
    return;
  }
  c.raw.failure = { kind: 'garbage', message: `not an HTTP reply: "${printable(text, 80)}"` };
}

function ipv4Bytes(ip: string): Buffer {
  return Buffer.from(ip.split('.').map((o) => Number(o)));
}

function ipv6Bytes(ip: string): Buffer {
  const [head, tail] = ip.includes('::') ? ip.split('::') as [string, string] : [ip, null];
  const h = head === '' ? [] : head.split(':');
  const t = tail === null || tail === '' ? [] : tail.split(':');
  const groups = tail === null ? h : [...h, ...new Array(8 - h.length - t.length).fill('0'), ...t];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

function port2(p: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(p);
  return b;
}

function looksHttp(b: Buffer): boolean {
  return b.subarray(0, 5).toString('latin1') === 'HTTP/';
}

async function socks4(c: ExchangeContext, a: boolean): Promise<void> {
  const user = Buffer.from('relayguard\0', 'latin1');
  const req = a
    ? Buffer.concat([Buffer.from([4, 1]), port2(c.dest.port), Buffer.from([0, 0, 0, 1]), user, Buffer.from(`${c.dest.host}\0`, 'latin1')])
    : Buffer.concat([Buffer.from([4, 1]), port2(c.dest.port), ipv4Bytes(c.dest.host), user]);
  c.wire.write(req);
  const reply = await c.wire.readBytes(8, c.timeouts.step, 'SOCKS4 reply');
  if (looksHttp(reply)) { speak(c, 'http'); c.raw.failure = { kind: 'garbage', message: `an HTTP reply to SOCKS4: "${printable(reply, 40)}"` }; return; }
  if (reply[0] !== 0) {
    c.raw.failure = { kind: 'bad-version', message: `SOCKS4 reply version ${reply[0]} (must be 0): ${reply.toString('hex')}` };
    return;
  }
  const cd = reply[1]!;
  if (cd < 0x5a || cd > 0x5d) {
    c.raw.failure = { kind: 'garbage', message: `SOCKS4 reply code 0x${cd.toString(16)} is not one of 0x5a-0x5d` };
    return;
  }
  speak(c, 'socks4');
  c.raw.socksCode = cd;
  c.raw.reply = `SOCKS4 0x${cd.toString(16)} (${{ 0x5a: 'granted', 0x5b: 'rejected or failed', 0x5c: 'identd unreachable', 0x5d: 'identd mismatch' }[cd]})`;
  if (cd !== 0x5a) return;
  c.raw.claimed = true;
  await smtpThroughTunnel(c);
}

const SOCKS5_REP: Readonly<Record<number, string>> = {
  0: 'succeeded', 1: 'general failure', 2: 'not allowed by ruleset', 3: 'network unreachable', 4: 'host unreachable',
  5: 'connection refused', 6: 'TTL expired', 7: 'command not supported', 8: 'address type not supported',
};

async function socks5(c: ExchangeContext): Promise<void> {
  // Offer "no auth" and "username/password": the method chosen tells whether the proxy is open or wants a login.
  c.wire.write(Buffer.from([5, 2, 0, 2]));
  const sel = await c.wire.readBytes(2, c.timeouts.step, 'SOCKS5 method selection');
  if (looksHttp(Buffer.concat([sel, c.wire.takeBuffered()]))) { speak(c, 'http'); c.raw.failure = { kind: 'garbage', message: 'an HTTP reply to SOCKS5' }; return; }
  if (sel[0] !== 5) { c.raw.failure = { kind: 'bad-version', message: `SOCKS5 method reply version ${sel[0]} (must be 5): ${sel.toString('hex')}` }; return; }
  speak(c, 'socks5');
  c.raw.socksMethod = sel[1]!;
  if (sel[1] !== 0) {
    c.raw.reply = sel[1] === 2 ? 'SOCKS5 method 0x02 (username/password only)' : sel[1] === 0xff ? 'SOCKS5 method 0xff (no acceptable method)' : `SOCKS5 method 0x${sel[1]!.toString(16)} (not offered)`;
    if (sel[1] !== 2 && sel[1] !== 0xff) c.raw.failure = { kind: 'garbage', message: `chose method 0x${sel[1]!.toString(16)}, which the tester did not offer` };
    return;
  }
  const fam = isIP(c.dest.host);
  const addr = fam === 4 ? Buffer.concat([Buffer.from([1]), ipv4Bytes(c.dest.host)])
    : fam === 6 ? Buffer.concat([Buffer.from([4]), ipv6Bytes(c.dest.host)])
      : Buffer.concat([Buffer.from([3, c.dest.host.length]), Buffer.from(c.dest.host, 'latin1')]);
  c.wire.write(Buffer.concat([Buffer.from([5, 1, 0]), addr, port2(c.dest.port)]));
  const head = await c.wire.readBytes(5, c.timeouts.step, 'SOCKS5 reply');
  if (head[0] !== 5) { c.raw.failure = { kind: 'bad-version', message: `SOCKS5 reply version ${head[0]} (must be 5): ${head.toString('hex')}` }; return; }
  const rep = head[1]!;
  c.raw.socksCode = rep;
  c.raw.reply = `SOCKS5 reply 0x${rep.toString(16)} (${SOCKS5_REP[rep] ?? 'unknown'})`;
  const atyp = head[3]!;
  const restLen = atyp === 1 ? 4 - 1 + 2 : atyp === 4 ? 16 - 1 + 2 : atyp === 3 ? head[4]! + 2 : -1;
  if (head[2] !== 0 || restLen < 0) {
    c.raw.failure = { kind: 'bad-length', message: `SOCKS5 reply with reserved byte ${head[2]} and address type ${atyp}: ${head.toString('hex')}` };
    return;
  }
  await c.wire.readBytes(restLen, c.timeouts.step, 'SOCKS5 bound address');
  if (rep !== 0) return;
  c.raw.claimed = true;
  await smtpThroughTunnel(c);
}

const PROMPT = /(wingate|host|connect|telnet|gateway|enter|>\s*$|:\s*$)/i;

async function telnet(c: ExchangeContext): Promise<void> {
  let prompt: Buffer;
  try {
    prompt = await c.wire.read((b) => (PROMPT.test(b.toString('latin1')) || b.includes(0x0a) ? b.length : -1), c.timeouts.prompt, 'telnet prompt');
  } catch (err) {
    if (err instanceof WireError && err.kind === 'timeout') { c.raw.failure = { kind: 'timeout', message: `no prompt within ${c.timeouts.prompt} ms` }; return; }
    throw err;
  }
  const text = prompt.toString('latin1');
  if (/^HTTP\//.test(text)) { speak(c, 'http'); c.raw.failure = { kind: 'garbage', message: 'an HTTP reply instead of a prompt' }; return; }
  if (/^220[ -]/.test(text)) { c.raw.failure = { kind: 'garbage', message: `an SMTP greeting, not a gateway prompt: "${printable(text, 60)}"` }; return; }
  if (!PROMPT.test(text)) { c.raw.failure = { kind: 'garbage', message: `not a gateway prompt: "${printable(text, 60)}"` }; return; }
  speak(c, 'telnet');
  c.raw.reply = `prompt "${printable(text.trim(), 60)}"`;
  c.wire.write(`${c.dest.host}:${c.dest.port}\r\n`);
  // Gateways echo and chatter ("Connecting to host...") before the far end speaks: skip lines until the
  // greeting (bounded by the wire's cap and the step deadline).
  await c.wire.read((b) => {
    const i = b.toString('latin1').search(/(^|\n)220[ -]/);
    if (i < 0) return -1;
    return i === 0 && b[0] === 0x32 ? 0 : i + 1;
  }, c.timeouts.step, 'greeting through the gateway');
  c.raw.claimed = true;
  await smtpThroughTunnel(c);
}

/** Runs one probe's dialogue on an open connection; fills c.raw. WireErrors propagate to the caller. */
export async function exchange(c: ExchangeContext): Promise<void> {
  switch (c.probe.method) {
    case 'http-connect': return httpConnect(c);
    case 'http-post': return httpPost(c);
    case 'http-get': return httpGet(c);
    case 'socks4': return socks4(c, false);
    case 'socks4a': return socks4(c, true);
    case 'socks5': return socks5(c);
    case 'telnet': return telnet(c);
  }
}
