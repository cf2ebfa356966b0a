/**
 * The relay-trick battery as data: one row per trick, with an id, what it exercises, and the MAIL FROM / RCPT TO
 * templates sent verbatim. V01-V22 are the merged catalogue of nmap, Metasploit, MAPS, mailradar and friends
 * (reference relay-testers.md section 1.8; V09b, V13b and V20b are that catalogue's alternative forms); X01-X11
 * are the variants section 5 lists as missing from every tester.
 *
 * Placeholders, filled by renderTrick():
 *   {s}  sender local part          {u}  recipient local part (in proof mode: the probe tag)
 *   {T}  tester domain              {Tx} the tester domain in mIxEd case
 *   {H}  target host name (banner, PTR or given); tricks that need it are skipped when it is unknown
 *   {D}  target mail domain; tricks that need it are skipped when it is unknown
 *   {IP} target address literal: "[192.0.2.1]" or, RFC 5321 section 4.1.3, "[IPv6:2001:db8::1]"
 *   {ip} the bare target address        {xip} the same in XCLIENT/XFORWARD form ("IPV6:..." for IPv6)
 *   {x}  a local part that surely does not exist at the target ("nosuchuser-<run id>")
 *
 * Proof mode sends the probe (DATA) only for accepted 'relay' and 'bounce' tricks; for X05 it also reaches the
 * target's own postmaster (the local first recipient), which is the point of that trick.
 *
 * kind 'relay': acceptance of the probe recipient is a relay suspicion. kind 'local': the recipient is local to
 * the target (its own address literal, an unqualified name); acceptance says the server takes unknown local
 * users (a catch-all or a sink), which is what separates "accepts all recipients" from "accepts relay tricks".
 * kind 'bounce' (B01-B04, the bounce-relay class, field report F1): a local recipient that does not exist (or
 * postmaster at the server's own address literal) with a third-party sender, {u}@{T}; in proof mode {u} is the
 * probe tag, so a delivery status notification carrying the probe back to that sender lands at the sink. A
 * server that accepts such mail and then bounces it with the content delivers chosen content to any address:
 * an open relay by another name. Safe mode only sees the acceptance, reported as a risk (riskIfAccepted).
 *
 * CONTROL_RECIPIENTS: the local recipients the runner tries, in each session of an mx port, before the battery:
 * a refusal of the relay tricks only shows a closed relay when the same session accepted one of them.
 */

export type TrickKind = 'relay' | 'local' | 'bounce';

/** ESMTP extensions a trick needs; it is skipped (not applicable) when the server does not advertise one. */
export type TrickRequirement = 'DSN' | 'SMTPUTF8' | 'CHUNKING' | 'PIPELINING' | 'XCLIENT' | 'XFORWARD';

export interface Trick {
  /** Stable id: V01-V22 (+ V09b, V13b, V20b) from the catalogue, X01-X11 for the extra variants, B01-B04 bounce relay. */
  readonly id: string;
  readonly title: string;
  /** What the trick exercises: the server feature or bug it would reveal. */
  readonly exercises: string;
  readonly kind: TrickKind;
  /** MAIL FROM argument template (path, verbatim), without parameters. */
  readonly mailFrom: string;
  readonly mailParams?: readonly string[];
  /** RCPT TO argument templates, in order; the last one is the probe recipient. */
  readonly rcptTo: readonly { readonly path: string; readonly params?: readonly string[] }[];
  readonly requires?: readonly TrickRequirement[];
  /** Commands sent before MAIL (each must get 2xx; an XCLIENT 220 greeting is followed by a new EHLO). */
  readonly preCommands?: readonly string[];
  /** Needs a connection of its own (it changes the session, e.g. XCLIENT); the connection is closed after it. */
  readonly isolate?: boolean;
  /** Send MAIL and the RCPTs as one pipelined group (RFC 2920). */
  readonly pipeline?: boolean;
  /** In proof mode, send the probe with BDAT (RFC 3030) instead of DATA. */
  readonly bodyVia?: 'data' | 'bdat';
  /** Where the trick comes from (catalogue column "seen in", or the section-5 proposal). */
  readonly seenIn: string;
  /** A 'bounce' trick whose acceptance at RCPT is a risk by itself (an unknown user accepted from a stranger). */
  readonly riskIfAccepted?: boolean;
}

const r = (path: string, params?: readonly string[]): { path: string; params?: readonly string[] } => (params ? { path, params } : { path });

/** The battery, in the order it runs. */
export const TRICKS: readonly Trick[] = Object.freeze([
  { id: 'V01', title: 'null sender', exercises: 'relay allowed for bounces (MAIL FROM:<>)', kind: 'relay', mailFrom: '<>', rcptTo: [r('<{u}@{T}>')], seenIn: 'nmap 1, MSF x1, MAPS 5' },
  { id: 'V02', title: 'external to external', exercises: 'plain third-party relay', kind: 'relay', mailFrom: '<{s}@{T}>', rcptTo: [r('<{u}@{T}>')], seenIn: 'nmap 2, MSF default, MX Toolbox, rlytest' },
  { id: 'V03', title: 'spoofed target host sender', exercises: 'relay decided on a sender claiming the target host', kind: 'relay', mailFrom: '<{s}@{H}>', rcptTo: [r('<{u}@{T}>')], seenIn: 'nmap 3, MSF x3' },
  { id: 'V04', title: 'spoofed target IP-literal sender', exercises: 'relay decided on a sender at the target address literal', kind: 'relay', mailFrom: '<{s}@{IP}>', rcptTo: [r('<{u}@{T}>')], seenIn: 'nmap 4, MSF PR#105, mailradar' },
  { id: 'V05', title: 'spoofed target domain sender', exercises: 'relay decided on a sender in the target mail domain', kind: 'relay', mailFrom: '<{s}@{D}>', rcptTo: [r('<{u}@{T}>')], seenIn: 'MSF PR#105, MAPS quote/6, rlytest default' },
  { id: 'V06', title: 'spoofed localhost sender', exercises: 'relay decided on a sender at localhost', kind: 'relay', mailFrom: '<{s}@localhost>', rcptTo: [r('<{u}@{T}>')], seenIn: 'MAPS 3' },
  { id: 'V07', title: 'unqualified sender', exercises: 'an unqualified sender completed with a local domain', kind: 'relay', mailFrom: '<{s}>', rcptTo: [r('<{u}@{T}>')], seenIn: 'MAPS 4, MSF PR#105' },
  { id: 'V08', title: 'percent hack via IP literal', exercises: 'user%remote@local rewriting (Postfix allow_percent_hack)', kind: 'relay', mailFrom: '<{s}@{IP}>', rcptTo: [r('<{u}%{T}@{IP}>')], seenIn: 'nmap 5, MSF x5, MSF PR#105' },
  { id: 'V09', title: 'percent hack via host name', exercises: 'user%remote@host rewriting', kind: 'relay', mailFrom: '<{s}@{IP}>', rcptTo: [r('<{u}%{T}@{H}>')], seenIn: 'nmap 6, MSF x6' },
  { id: 'V09b', title: 'percent hack via mail domain', exercises: 'user%remote@domain rewriting', kind: 'relay', mailFrom: '<{s}@{IP}>', rcptTo: [r('<{u}%{T}@{D}>')], seenIn: 'MSF PR#105' },
  { id: 'V10', title: 'quoted local part with @', exercises: 'dequoting "user@remote" into a remote address (resolve_dequoted_address)', kind: 'relay', mailFrom: '<{s}@{IP}>', rcptTo: [r('<"{u}@{T}">')], seenIn: 'nmap 7, MSF x7, MAPS quote' },
  { id: 'V11', title: 'quoted percent', exercises: 'dequoting "user%remote" then the percent hack', kind: 'relay', mailFrom: '<{s}@{IP}>', rcptTo: [r('<"{u}%{T}">')], seenIn: 'nmap 8, MSF x8, mailradar 8' },
  { id: 'V12', title: 'double @ via IP literal', exercises: 'user@remote@local parsed as routing', kind: 'relay', mailFrom: '<{s}@{IP}>', rcptTo: [r('<{u}@{T}@{IP}>')], seenIn: 'nmap 9, MSF x9' },
  { id: 'V13', title: 'quoted @ via IP literal', exercises: '"user@remote"@local dequoted into routing', kind: 'relay', mailFrom: '<{s}@{IP}>', rcptTo: [r('<"{u}@{T}"@{IP}>')], seenIn: 'nmap 10, MSF x10' },
  { id: 'V13b', title: 'quoted @ via host name', exercises: '"user@remote"@host dequoted into routing', kind: 'relay', mailFrom: '<{s}@{IP}>', rcptTo: [r('<"{u}@{T}"@{H}>')], seenIn: 'MSF PR#105' },
  { id: 'V14', title: 'double @ via host name', exercises: 'user@remote@host parsed as routing', kind: 'relay', mailFrom: '<{s}@{IP}>', rcptTo: [r('<{u}@{T}@{H}>')], seenIn: 'nmap 11, MSF x11' },
  { id: 'V15', title: 'source route via IP literal', exercises: 'honouring an RFC 821 source route @local:user@remote', kind: 'relay', mailFrom: '<{s}@{IP}>', rcptTo: [r('<@{IP}:{u}@{T}>')], seenIn: 'nmap 12, MSF x12' },
  { id: 'V16', title: 'source route via host name', exercises: 'honouring a source route @host:user@remote', kind: 'relay', mailFrom: '<{s}@{IP}>', rcptTo: [r('<@{H}:{u}@{T}>')], seenIn: 'nmap 13, MSF x13' },
  { id: 'V17', title: 'bang path', exercises: 'UUCP remote!user rewriting (Postfix swap_bangpath)', kind: 'relay', mailFrom: '<{s}@{IP}>', rcptTo: [r('<{T}!{u}>')], seenIn: 'nmap 14, MSF x14' },
  { id: 'V18', title: 'bang path via IP literal', exercises: 'remote!user@local rewriting', kind: 'relay', mailFrom: '<{s}@{IP}>', rcptTo: [r('<{T}!{u}@{IP}>')], seenIn: 'nmap 15, MSF x15' },
  { id: 'V19', title: 'bang path via host name', exercises: 'remote!user@host rewriting', kind: 'relay', mailFrom: '<{s}@{IP}>', rcptTo: [r('<{T}!{u}@{H}>')], seenIn: 'nmap 16, MSF x16' },
  { id: 'V20', title: 'trailing @ (empty domain)', exercises: 'user@remote@ with an empty final domain (resolve_null_domain)', kind: 'relay', mailFrom: '<{s}@{IP}>', rcptTo: [r('<{u}@{T}@>')], seenIn: 'mailradar 18' },
  { id: 'V20b', title: 'percent with empty domain', exercises: 'user%remote@ with an empty final domain', kind: 'relay', mailFrom: '<{s}@{IP}>', rcptTo: [r('<{u}%{T}@>')], seenIn: 'mailradar clones' },
  { id: 'V21', title: 'unknown user at the IP literal (control)', exercises: 'whether unknown local users are accepted (catch-all or sink)', kind: 'local', mailFrom: '<{s}@{IP}>', rcptTo: [r('<{u}@{IP}>')], seenIn: 'MSF x4' },
  { id: 'V22', title: 'unbracketed path', exercises: 'lenient parsing of RCPT TO:user@remote without <>', kind: 'relay', mailFrom: '<{s}@{T}>', rcptTo: [r('{u}@{T}')], seenIn: 'mailradar clones, MSF 2013' },
  { id: 'X01', title: 'multi-hop source route', exercises: 'a two-hop source route @a,@b:user@remote', kind: 'relay', mailFrom: '<{s}@{IP}>', rcptTo: [r('<@{IP},@localhost:{u}@{T}>')], seenIn: 'section 5 proposal' },
  { id: 'X02', title: 'trailing-dot domain', exercises: 'user@remote. not matched by a remote-domain check', kind: 'relay', mailFrom: '<{s}@{IP}>', rcptTo: [r('<{u}@{T}.>')], seenIn: 'section 5 proposal' },
  { id: 'X03', title: 'mixed-case domain', exercises: 'case-sensitive domain comparison in the relay check', kind: 'relay', mailFrom: '<{s}@{IP}>', rcptTo: [r('<{u}@{Tx}>')], seenIn: 'section 5 proposal' },
  { id: 'X04', title: 'SMTPUTF8 recipient', exercises: 'a UTF-8 local part taking another parsing path (RFC 6531)', kind: 'relay', mailFrom: '<{s}@{IP}>', mailParams: ['SMTPUTF8'], rcptTo: [r('<{u}-\u00fc@{T}>')], requires: ['SMTPUTF8'], seenIn: 'section 5 proposal' },
  { id: 'X05', title: 'external after a local recipient', exercises: 'a relay check done only on the first RCPT', kind: 'relay', mailFrom: '<{s}@{T}>', rcptTo: [r('<postmaster>'), r('<{u}@{T}>')], seenIn: 'section 5 proposal' },
  { id: 'X06', title: 'DSN parameters', exercises: 'RCPT parameters (NOTIFY, ORCPT) taking another code path (RFC 3461)', kind: 'relay', mailFrom: '<{s}@{IP}>', rcptTo: [r('<{u}@{T}>', ['NOTIFY=NEVER', 'ORCPT=rfc822;{u}@{T}'])], requires: ['DSN'], seenIn: 'section 5 proposal' },
  { id: 'X07', title: 'BDAT instead of DATA', exercises: 'CHUNKING path (RFC 3030); in proof mode the probe goes with BDAT', kind: 'relay', mailFrom: '<{s}@{IP}>', rcptTo: [r('<{u}@{T}>')], requires: ['CHUNKING'], bodyVia: 'bdat', seenIn: 'section 5 proposal' },
  { id: 'X08', title: 'pipelined envelope', exercises: 'MAIL and RCPT in one PIPELINING group (RFC 2920)', kind: 'relay', mailFrom: '<{s}@{IP}>', rcptTo: [r('<{u}@{T}>')], requires: ['PIPELINING'], pipeline: true, seenIn: 'section 5 proposal' },
  { id: 'X09', title: 'XCLIENT source spoofing', exercises: 'XCLIENT open to anyone: claiming the target\'s own address', kind: 'relay', preCommands: ['XCLIENT ADDR={xip} NAME=localhost'], mailFrom: '<{s}@{T}>', rcptTo: [r('<{u}@{T}>')], requires: ['XCLIENT'], isolate: true, seenIn: 'section 5 proposal' },
  { id: 'X10', title: 'XFORWARD source spoofing', exercises: 'XFORWARD open to anyone: claiming the target\'s own address', kind: 'relay', preCommands: ['XFORWARD ADDR={xip} NAME=localhost'], mailFrom: '<{s}@{T}>', rcptTo: [r('<{u}@{T}>')], requires: ['XFORWARD'], isolate: true, seenIn: 'section 5 proposal' },
  { id: 'X11', title: 'unqualified recipient (control)', exercises: 'whether an unqualified unknown user is accepted', kind: 'local', mailFrom: '<{s}@{T}>', rcptTo: [r('<{u}>')], seenIn: 'section 5 proposal' },
  { id: 'B01', title: 'bounce via unknown user at the domain', exercises: 'accept-then-bounce for a nonexistent user of the mail domain (backscatter carrying the message to a forged sender)', kind: 'bounce', mailFrom: '<{u}@{T}>', rcptTo: [r('<{x}@{D}>')], riskIfAccepted: true, seenIn: 'field report H4, backscatter' },
  { id: 'B02', title: 'bounce via unknown user at own literal', exercises: 'accepting x@[own address] and bouncing it to a forged sender', kind: 'bounce', mailFrom: '<{u}@{T}>', rcptTo: [r('<{x}@{IP}>')], riskIfAccepted: true, seenIn: 'field report F1' },
  { id: 'B03', title: 'bounce via postmaster at own literal', exercises: 'postmaster@[own address] routed outward (a loop) and bounced to a forged sender', kind: 'bounce', mailFrom: '<{u}@{T}>', rcptTo: [r('<postmaster@{IP}>')], seenIn: 'field report F1' },
  { id: 'B04', title: 'bounce via own literal, RET=FULL', exercises: 'a DSN returning the full message (RFC 3461 RET=FULL) to a forged sender', kind: 'bounce', mailFrom: '<{u}@{T}>', mailParams: ['RET=FULL'], rcptTo: [r('<{x}@{IP}>', ['NOTIFY=FAILURE'])], requires: ['DSN'], riskIfAccepted: true, seenIn: 'field report F1' },
] satisfies Trick[]);

/**
 * The control: local recipients that every mail server must accept (RFC 5321 section 4.5.1: postmaster at each
 * of its domains, and "postmaster" without a domain), in the order tried. Templates needing an unknown {D} or
 * {H} are left out.
 */
export const CONTROL_RECIPIENTS: readonly string[] = Object.freeze(['<postmaster@{D}>', '<postmaster@{H}>', '<postmaster>', '<postmaster@{IP}>']);

/** The control recipients for one target, in order, without duplicates. */
export function controlRecipients(ctx: ProbeContext): string[] {
  const out: string[] = [];
  for (const t of CONTROL_RECIPIENTS) {
    const path = fillTemplate(t, ctx);
    if (path !== null && !out.some((p) => p.toLowerCase() === path.toLowerCase())) out.push(path);
  }
  return out;
}

/** The values the placeholders take for one target. */
export interface ProbeContext {
  /** Sender local part ({s}). */
  readonly sender: string;
  /** Recipient local part ({u}); in proof mode the per-attempt tag. */
  readonly recipient: string;
  /** Tester domain ({T}). */
  readonly testerDomain: string;
  /** Target host name ({H}), or null when unknown. */
  readonly hostName: string | null;
  /** Target mail domain ({D}), or null when unknown. */
  readonly domain: string | null;
  /** The target address, bare ("192.0.2.1", "2001:db8::1"). */
  readonly address: string;
  /** {x}: a local part that does not exist at the target. Default "nosuchuser". */
  readonly unknownLocal?: string;
}

export interface RenderedTrick {
  readonly trick: Trick;
  readonly mailFrom: string;
  readonly mailParams: readonly string[];
  readonly rcptTo: readonly { readonly path: string; readonly params: readonly string[] }[];
  readonly preCommands: readonly string[];
}

export type RenderResult = { readonly ok: true; readonly rendered: RenderedTrick } | { readonly ok: false; readonly reason: string };

/** "[192.0.2.1]" or "[IPv6:2001:db8::1]" (RFC 5321 section 4.1.3). */
export function addressLiteral(address: string): string {
  return address.includes(':') ? `[IPv6:${address}]` : `[${address}]`;
}

/** "example.net" -> "ExAmPlE.NeT": same domain, different bytes. */
export function mixedCase(domain: string): string {
  let upper = true;
  let out = '';
  for (const ch of domain) {
    if (/[a-z]/i.test(ch)) {
      out += upper ? ch.toUpperCase() : ch.toLowerCase();
      upper = !upper;
    } else {
      out += ch;
    }
  }
  return out;
}

const PLACEHOLDER = /\{(s|u|x|T|Tx|H|D|IP|ip|xip)\}/g;

/** Fills a template; null when it needs {H} or {D} and the context has none. */
export function fillTemplate(template: string, ctx: ProbeContext): string | null {
  let missing = false;
  const out = template.replace(PLACEHOLDER, (_m, name: string) => {
    switch (name) {
      case 's': return ctx.sender;
      case 'u': return ctx.recipient;
      case 'x': return ctx.unknownLocal ?? 'nosuchuser';
      case 'T': return ctx.testerDomain;
      case 'Tx': return mixedCase(ctx.testerDomain);
      case 'IP': return addressLiteral(ctx.address);
      case 'ip': return ctx.address;
      case 'xip': return ctx.address.includes(':') ? `IPV6:${ctx.address}` : ctx.address;
      case 'H': if (ctx.hostName === null) missing = true; return ctx.hostName ?? '';
      case 'D': if (ctx.domain === null) missing = true; return ctx.domain ?? '';
      default: return '';
    }
  });
  return missing ? null : out;
}

/** The commands of one trick for one target. Not applicable when it needs a host name or domain we lack. */
export function renderTrick(trick: Trick, ctx: ProbeContext): RenderResult {
  const all = [trick.mailFrom, ...(trick.mailParams ?? []), ...trick.rcptTo.flatMap((x) => [x.path, ...(x.params ?? [])]), ...(trick.preCommands ?? [])];
  const needs = all.join(' ');
  if (ctx.hostName === null && needs.includes('{H}')) return { ok: false, reason: 'needs the target host name, which is unknown (give --host-name)' };
  if (ctx.domain === null && needs.includes('{D}')) return { ok: false, reason: 'needs the target mail domain, which is unknown (give --domain)' };
  const f = (t: string): string => fillTemplate(t, ctx)!;
  return {
    ok: true,
    rendered: {
      trick,
      mailFrom: f(trick.mailFrom),
      mailParams: (trick.mailParams ?? []).map(f),
      rcptTo: trick.rcptTo.map((x) => ({ path: f(x.path), params: (x.params ?? []).map(f) })),
      preCommands: (trick.preCommands ?? []).map(f),
    },
  };
}

/** Tricks by id (case-insensitive); throws RangeError naming unknown ids. */
export function selectTricks(ids: readonly string[] | undefined): readonly Trick[] {
  if (ids === undefined || ids.length === 0) return TRICKS;
  const byId = new Map(TRICKS.map((t) => [t.id.toLowerCase(), t]));
  const out: Trick[] = [];
  const unknown: string[] = [];
  for (const id of ids) {
    const t = byId.get(id.toLowerCase());
    if (!t) unknown.push(id);
    else if (!out.includes(t)) out.push(t);
  }
  if (unknown.length > 0) throw new RangeError(`Unknown trick id ${unknown.map((u) => `"${u}"`).join(', ')} (see --list-tricks)`);
  return TRICKS.filter((t) => out.includes(t));
}
