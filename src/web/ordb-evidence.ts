/**
 * What the ORDB's pages show of a listing: the public view of a store entry and of the evidence the workflow kept
 * (OrdbEvidence, 'relayguard-ordb-evidence/1', with the tester's report 'relayguard-tester/2' (or /1 from before) inside): when it was
 * tested, in which mode, the trick that got through (its MAIL FROM / RCPT TO and the replies), the proof (the
 * probe's Received chain, the client address the relay wrote into it, the address that delivered it) and the
 * dialogue of that connection; for an open proxy (check 'proxy') the attempt that got through: its method, the
 * tested and the egress address, the proxy's reply and the line our sink saw; for an open Usenet server (check
 * 'nntp') the test article: group, message-id, the replies to POST/IHAVE and to the article, how it was read back.
 * Pure functions over stored JSON: every field is checked before use (the evidence column may hold anything an
 * import or an older version wrote), nothing throws.
 */
import type { HistoryEvent, Listing, OrdbEvidence } from '../dnsbl/index.ts';

export interface TrickView {
  readonly id: string;
  readonly title: string;
  readonly port: number | null;
  readonly transport: string | null;
  readonly mailFrom: string | null;
  readonly rcptTo: readonly string[];
  /** "RCPT 250 2.1.5 Ok" lines, in order. */
  readonly replies: readonly string[];
}

export interface ProofView {
  readonly received: readonly string[];
  /** The client address the relay wrote into its Received header (what it thought the tester was). */
  readonly relaySawClient: string | null;
  readonly sentFrom: string | null;
  /** The address that delivered the probe to the sink. */
  readonly deliveredBy: string | null;
  readonly latencyMs: number | null;
}

export interface TranscriptView {
  readonly startedAt: string | null;
  readonly localAddress: string | null;
  readonly lines: readonly { readonly t: number; readonly dir: 'C' | 'S'; readonly line: string }[];
  /** Lines left out (the view keeps the first MAX_TRANSCRIPT_LINES). */
  readonly omitted: number;
}

/** A proved open proxy: the attempt whose connection reached the tester's sink. */
export interface ProxyView {
  /** CONNECT / POST / GET / SOCKS4 / SOCKS4A / SOCKS5 / TELNET ... (from the attempt's method). */
  readonly method: string;
  readonly methodId: string;
  /** The battery's attempt id (P01 ...), or null. */
  readonly attempt: string | null;
  readonly title: string;
  readonly port: number | null;
  readonly testedAddress: string | null;
  readonly egressAddress: string | null;
  readonly destination: string | null;
  readonly reply: string | null;
  readonly sinkLine: string | null;
  readonly openAttempts: readonly string[];
}

/** A proved open Usenet server: the test article it took from a stranger and served back. */
export interface NntpView {
  readonly testedAddress: string | null;
  readonly port: number | null;
  readonly path: string | null;
  readonly group: string | null;
  readonly messageId: string | null;
  readonly command: string | null;
  readonly posted: string | null;
  readonly readBack: readonly string[];
  readonly pathHeader: string | null;
  readonly injectionInfo: string | null;
  readonly cancelled: boolean;
}

/** One check's result, when a test ran several. */
export interface CheckView {
  readonly check: string;
  readonly verdict: string | null;
  readonly reason: string | null;
  readonly proved: boolean;
}

export interface EvidenceView {
  /** The check whose result decided: smtp (open relay) or proxy (open proxy). */
  readonly check: string;
  readonly checks: readonly CheckView[];
  readonly proxy: ProxyView | null;
  readonly nntp: NntpView | null;
  readonly testedAt: string | null;
  readonly mode: string | null;
  readonly verdict: string | null;
  readonly reason: string | null;
  readonly detail: string | null;
  readonly proved: boolean;
  readonly flagged: string | null;
  readonly submittedAt: string | null;
  /** The greeting of the tested port. */
  readonly banner: string | null;
  /** The trick that got through (an OPEN verdict, a proved one first), or null. */
  readonly trick: TrickView | null;
  readonly proof: ProofView | null;
  /** The dialogue of the trick's connection, else of the first connection of the test. */
  readonly transcript: TranscriptView | null;
}

export interface ListingView {
  readonly network: string;
  /** listed | not-listed (pending entries are not public) | delisted | excluded. */
  readonly status: 'listed' | 'not-listed' | 'delisted' | 'excluded';
  readonly state: Listing['state'];
  readonly category: string;
  readonly code: string;
  readonly reason: string | null;
  readonly firstSeen: string;
  /** When it entered the "listed" state last, or null. */
  readonly listedSince: string | null;
  readonly delistedAt: string | null;
  readonly lastTested: string | null;
  readonly nextRetest: string | null;
  readonly timesListed: number;
  readonly updatedAt: string;
}

export const MAX_TRANSCRIPT_LINES = 400;

const iso = (ms: number | null | undefined): string | null => (typeof ms === 'number' && Number.isFinite(ms) ? new Date(ms).toISOString() : null);
const str = (v: unknown): string | null => (typeof v === 'string' ? v : null);
const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);
const arr = (v: unknown): readonly unknown[] => (Array.isArray(v) ? v : []);
const obj = (v: unknown): Record<string, unknown> | null => (typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : null);

/** The workflow's evidence of a listing, or null (manual listings, imports). */
export function workflowEvidence(listing: Listing): OrdbEvidence | null {
  const e = obj(listing.evidence);
  return e !== null && e['schema'] === 'relayguard-ordb-evidence/1' ? (e as unknown as OrdbEvidence) : null;
}

export function listingView(listing: Listing, history: readonly HistoryEvent[]): ListingView {
  const lastOf = (event: string): number | null => {
    for (let i = history.length - 1; i >= 0; i--) if (history[i]!.event === event) return history[i]!.at;
    return null;
  };
  const status = listing.state === 'pending' ? 'not-listed' : listing.state === 'listed' ? 'listed' : listing.state;
  return {
    network: listing.network,
    status,
    state: listing.state,
    category: listing.category,
    code: listing.code,
    reason: listing.reason,
    firstSeen: iso(listing.firstSeen)!,
    listedSince: listing.state === 'listed' ? iso(lastOf('listed') ?? listing.firstSeen) : null,
    delistedAt: listing.state === 'delisted' ? iso(lastOf('delisted') ?? listing.updatedAt) : null,
    lastTested: iso(listing.lastTested),
    nextRetest: iso(listing.nextRetest),
    timesListed: listing.timesListed,
    updatedAt: iso(listing.updatedAt)!,
  };
}

function reply(label: string, r: unknown): string | null {
  const o = obj(r);
  if (o === null || num(o['code']) === null) return null;
  const text = (str(o['text']) ?? '').replace(/\n/g, ' / ');
  const enhanced = str(o['enhanced']);
  // The tester keeps the enhanced code in the text as received; add it only when it is not there.
  return `${label} ${o['code']}${enhanced && !text.startsWith(enhanced) ? ` ${enhanced}` : ''} ${text}`.trim();
}

function transcriptOf(t: unknown): TranscriptView | null {
  const o = obj(t);
  if (o === null) return null;
  const lines = arr(o['lines']).flatMap((l) => {
    const x = obj(l);
    if (x === null || typeof x['line'] !== 'string') return [];
    return [{ t: num(x['t']) ?? 0, dir: x['dir'] === 'C' ? 'C' as const : 'S' as const, line: x['line'] }];
  });
  return {
    startedAt: str(o['startedAt']), localAddress: str(o['localAddress']),
    lines: lines.slice(0, MAX_TRANSCRIPT_LINES), omitted: Math.max(0, lines.length - MAX_TRANSCRIPT_LINES),
  };
}

const METHOD_NAMES: Readonly<Record<string, string>> = {
  'http-connect': 'HTTP CONNECT', 'http-post': 'HTTP POST', 'http-get': 'HTTP GET (absolute URI)', socks4: 'SOCKS4', socks4a: 'SOCKS4a',
  socks5: 'SOCKS5', telnet: 'telnet / Wingate',
};

function proxyOf(v: unknown): ProxyView | null {
  const p = obj(v);
  if (p === null) return null;
  const id = str(p['method']) ?? '?';
  return {
    method: METHOD_NAMES[id] ?? Object.entries(METHOD_NAMES).find(([k]) => id.startsWith(k))?.[1] ?? id, methodId: id,
    attempt: str(p['attempt']), title: str(p['title']) ?? '', port: num(p['port']), testedAddress: str(p['testedAddress']), egressAddress: str(p['egressAddress']),
    destination: str(p['destination']), reply: str(p['reply']), sinkLine: str(p['sinkLine']),
    openAttempts: arr(p['openAttempts']).filter((x): x is string => typeof x === 'string').slice(0, 32),
  };
}

function nntpOf(v: unknown): NntpView | null {
  const p = obj(v);
  if (p === null) return null;
  return {
    testedAddress: str(p['testedAddress']), port: num(p['port']), path: str(p['path']), group: str(p['group']), messageId: str(p['messageId']),
    command: str(p['command']), posted: str(p['posted']), readBack: arr(p['readBack']).filter((x): x is string => typeof x === 'string').slice(0, 8),
    pathHeader: str(p['pathHeader']), injectionInfo: str(p['injectionInfo']), cancelled: p['cancelled'] === true,
  };
}

/** The evidence view of a listing (null when it has no workflow evidence). */
export function evidenceView(listing: Listing): EvidenceView | null {
  const e = workflowEvidence(listing);
  if (e === null) return null;
  const report = obj(e.report);
  let best: { trick: Record<string, unknown>; port: Record<string, unknown>; transport: Record<string, unknown>; score: number } | null = null;
  let first: { port: Record<string, unknown>; transport: Record<string, unknown> } | null = null;
  for (const target of arr(report?.['targets'])) {
    for (const port of arr(obj(target)?.['ports'])) {
      const p = obj(port);
      if (p === null) continue;
      for (const transport of arr(p['transports'])) {
        const t = obj(transport);
        if (t === null) continue;
        first ??= { port: p, transport: t };
        for (const trick of arr(t['tricks'])) {
          const k = obj(trick);
          if (k === null || k['verdict'] !== 'OPEN') continue;
          const score = obj(k['proof'])?.['arrived'] === true ? 2 : 1;
          if (best === null || score > best.score) best = { trick: k, port: p, transport: t, score };
        }
      }
    }
  }
  const where = best ?? first;
  const session = obj(where?.transport['session']);
  const banner = obj(session?.['banner']);
  const transcripts = arr(where?.transport['transcripts']);
  const connection = best ? num(best.trick['connection']) : null;
  const transcript = transcriptOf(transcripts.find((c) => connection !== null && obj(c)?.['connection'] === connection) ?? transcripts[0]);
  let trick: TrickView | null = null;
  let proof: ProofView | null = null;
  if (best !== null) {
    const k = best.trick;
    const replies = obj(k['replies']);
    trick = {
      id: str(k['id']) ?? '?', title: str(k['title']) ?? '', port: num(best.port['port']), transport: str(best.transport['transport']),
      mailFrom: str(k['mailFrom']), rcptTo: arr(k['rcptTo']).filter((r): r is string => typeof r === 'string'),
      replies: [
        reply('MAIL', replies?.['mail']), ...arr(replies?.['rcpt']).map((r) => reply('RCPT', r)),
        reply('DATA', replies?.['data']), reply('end of data', replies?.['dot']),
      ].filter((r): r is string => r !== null),
    };
    const p = obj(k['proof']);
    if (p !== null && p['arrived'] === true) {
      proof = {
        received: arr(p['received']).filter((r): r is string => typeof r === 'string'),
        relaySawClient: str(p['relaySawClient']), sentFrom: str(p['sentFrom']), deliveredBy: str(p['deliveredBy']), latencyMs: num(p['latencyMs']),
      };
    }
  }
  const checks = arr((e as { checks?: unknown }).checks).flatMap((c) => {
    const x = obj(c);
    return x === null || typeof x['check'] !== 'string' ? [] : [{ check: x['check'], verdict: str(x['verdict']), reason: str(x['reason']), proved: x['proved'] === true }];
  });
  return {
    check: str((e as { check?: unknown }).check) ?? 'smtp', checks, proxy: proxyOf((e as { proxy?: unknown }).proxy),
    nntp: nntpOf((e as { nntp?: unknown }).nntp),
    testedAt: str(e.testedAt), mode: str(e.mode), verdict: str(e.verdict), reason: str(e.reason), detail: str(e.detail),
    proved: e.proved === true, flagged: str(e.flagged), submittedAt: str(e.submittedAt),
    banner: banner ? reply('', banner)?.trim() ?? null : null,
    trick, proof, transcript,
  };
}
