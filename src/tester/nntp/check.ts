/**
 * The open-NNTP check of one (address, port): greeting (200 posting allowed / 201 no posting), CAPABILITIES,
 * IHAVE <new message-id> as a stranger (transit), MODE READER, CAPABILITIES again, LIST ACTIVE (groups counted by
 * flag y/m/n, never stored whole), POST without AUTHINFO. Safe mode (default) never sends an article: after a 340
 * or a 335 the tester closes the connection (a server that got no article terminator posts nothing). Proof mode
 * (a group the admin names) sends one tagged article per accepting path (POST, IHAVE), reads it back with
 * ARTICLE/HEAD <message-id> and GROUP + STAT/LAST, and then cancels it with a cancel control article carrying the
 * Cancel-Key of the article's Cancel-Lock. OPEN only when the article reads back.
 *
 * Every read has a deadline inside the per-target budget; endless lists stop at a cap; a connection that had to be
 * abandoned (a 340 left unanswered, a truncated list) is replaced by a fresh one for the next question.
 *
 * Trust: talks only to the address given, from the source address given. Nothing is written anywhere else.
 */
import { performance } from 'node:perf_hooks';
import { timeoutSignal } from '../../core/abort.ts';
import type { Tagger } from '../proof.ts';
import { aggregate, type Outcome } from '../verdict.ts';
import { articleMarker, buildCancelArticle, buildTestArticle, type TestArticle } from './article.ts';
import { NntpConnection, NntpError, type NntpResponse, type NntpTranscriptLine } from './client.ts';
import type { NntpGroups, NntpPortResult, NntpPortSpec, NntpProof, NntpReply, NntpServerKind, NntpStep, NntpCancel } from './result.ts';
import { classifyGreeting, classifyIhave, classifyNntpError, classifyPost, classifyPosted, classifyReadBack, step } from './verdict.ts';

export interface NntpTimeouts {
  /** TCP connect (+ TLS handshake). */
  readonly connect: number;
  readonly greeting: number;
  /** Each command's status line, and each multi-line block as a whole. */
  readonly command: number;
}

export const DEFAULT_NNTP_TIMEOUTS: NntpTimeouts = Object.freeze({ connect: 10_000, greeting: 30_000, command: 30_000 });

export interface NntpProofOptions {
  /** The group the admin named; the only group the tester posts to. */
  readonly group: string;
  /** How long to keep trying to read the article back, ms. Default 15 s. */
  readonly waitMs?: number;
  /** Cancel the test article afterwards. Default true. */
  readonly cancel?: boolean;
}

export interface NntpCheckOptions {
  readonly sourceAddress?: string;
  /** The domain of the test message-ids and From (the tester domain). */
  readonly testerDomain: string;
  readonly timeouts?: Partial<NntpTimeouts>;
  /** Per-target budget, ms (shared by all its ports when the caller passes one signal). Default 120 s. */
  readonly budgetMs?: number;
  readonly signal?: AbortSignal;
  readonly tagger: Tagger;
  readonly prove?: NntpProofOptions;
  /** LIST ACTIVE caps. Default 100 000 groups, 16 MiB. */
  readonly maxGroups?: number;
  readonly maxListBytes?: number;
  readonly transcript?: boolean;
  readonly tlsOptions?: import('node:tls').ConnectionOptions;
}

const sleep = (ms: number, signal?: AbortSignal): Promise<void> => new Promise((resolve) => {
  if (ms <= 0 || signal?.aborted) return resolve();
  const t = setTimeout(done, ms);
  function done(): void { clearTimeout(t); signal?.removeEventListener('abort', done); resolve(); }
  signal?.addEventListener('abort', done, { once: true });
});

const reply = (r: NntpResponse): NntpReply => ({ code: r.code, text: r.text.slice(0, 500) });

const NOT_TESTED = (what: string): NntpStep => ({ verdict: 'N/A', reason: 'not-applicable', detail: `${what} not tested`, reply: null });

/** Runs the check on one port of one address. Never throws for anything the server does. */
export async function checkNntpPort(address: string, spec: NntpPortSpec, options: NntpCheckOptions): Promise<NntpPortResult> {
  const started = performance.now();
  const timeouts = { ...DEFAULT_NNTP_TIMEOUTS, ...options.timeouts };
  const budget = timeoutSignal(options.signal, options.budgetMs ?? 120_000, 'NNTP check budget');
  const signal = budget.signal;
  const budgetEnd = performance.now() + (options.budgetMs ?? 120_000);
  const by = (ms: number): number => Math.min(performance.now() + ms, budgetEnd);
  const transcripts: { connection: number; lines: readonly NntpTranscriptLine[] }[] = [];
  const open: NntpConnection[] = [];
  let connections = 0;
  let localAddress: string | null = null;
  let greeting: NntpReply | null = null;
  let greetingMs: number | null = null;
  let tlsFacts: NntpPortResult['tls'] = null;
  let capabilities: string[] = [];
  let readerCapabilities: string[] | null = null;
  let modeReader: NntpReply | null = null;
  let groups: NntpGroups | null = null;
  let post: NntpStep = NOT_TESTED('POST');
  let ihave: NntpStep = NOT_TESTED('IHAVE');
  const proofs: NntpProof[] = [];
  let sessionFailure: Outcome | null = null;

  const retire = (c: NntpConnection): void => {
    c.destroy();
    const i = open.indexOf(c);
    if (i >= 0) open.splice(i, 1);
  };

  /** A fresh session: connect, greeting, and for reader work MODE READER. Throws an Outcome when none can be had. */
  const session = async (reader: boolean): Promise<NntpConnection> => {
    const n = connections++;
    let conn: NntpConnection;
    try {
      conn = await NntpConnection.open({
        host: address, port: spec.port, tls: spec.role === 'nntps', connectTimeoutMs: Math.min(timeouts.connect, Math.max(1, budgetEnd - performance.now())), signal,
        ...(options.sourceAddress !== undefined ? { localAddress: options.sourceAddress } : {}),
        ...(options.tlsOptions ? { tlsOptions: options.tlsOptions } : {}), transcript: options.transcript === true,
      });
    } catch (err) {
      if (err instanceof NntpError && err.code === 'ERR_NNTP_CONNECTION' && n === 0) throw { verdict: 'CLOSED', reason: 'no-service', detail: `port ${spec.port}: ${err.message}` } satisfies Outcome;
      throw classifyNntpError(`connect to port ${spec.port}`, err);
    }
    open.push(conn);
    if (options.transcript) transcripts.push({ connection: n, lines: conn.transcript });
    if (n === 0) { localAddress = conn.localAddress; tlsFacts = conn.tlsFacts; }
    const t0 = performance.now();
    let g: NntpResponse;
    try {
      g = await conn.readStatus(by(timeouts.greeting), 'the greeting', signal);
    } catch (err) {
      retire(conn);
      throw classifyNntpError('greeting', err);
    }
    if (n === 0) { greeting = reply(g); greetingMs = Math.round(performance.now() - t0); }
    const refused = classifyGreeting(g);
    if (refused) { retire(conn); throw refused; }
    if (reader) {
      const m = await conn.command('MODE READER', by(timeouts.command), signal);
      if (modeReader === null) modeReader = reply(m);
    }
    return conn;
  };

  const capabilityList = async (conn: NntpConnection): Promise<string[]> => {
    const r = await conn.command('CAPABILITIES', by(timeouts.command), signal);
    if (r.code !== 101) return [];
    const caps: string[] = [];
    const res = await conn.readBlock({ deadline: by(timeouts.command), maxLines: 200, maxBytes: 64 * 1024 }, (l) => { caps.push(l.slice(0, 200)); }, signal);
    if (!res.complete) throw new NntpError('ERR_NNTP_PROTOCOL', 'CAPABILITIES list longer than 200 lines / 64 KiB');
    return caps;
  };

  let ihaveArticle: TestArticle | null = null;
  let postArticle: TestArticle | null = null;
  const tagIhave = options.tagger.next();
  const tagPost = options.tagger.next();
  if (options.prove) {
    ihaveArticle = buildTestArticle({ tag: tagIhave, group: options.prove.group, domain: options.testerDomain, target: address, port: spec.port, path: 'IHAVE' });
    postArticle = buildTestArticle({ tag: tagPost, group: options.prove.group, domain: options.testerDomain, target: address, port: spec.port, path: 'POST' });
  }

  try {
    // --- session 1: greeting, CAPABILITIES, IHAVE (transit side, before MODE READER)
    let conn: NntpConnection | null = await session(false);
    try {
      capabilities = await capabilityList(conn);
    } catch (err) {
      throw classifyNntpError('CAPABILITIES', err);
    }
    const ihaveId = ihaveArticle?.messageId ?? `<${tagIhave}.ihave@${options.testerDomain}>`;
    let ihaveReply: NntpResponse | null = null;
    try {
      ihaveReply = await conn.command(`IHAVE ${ihaveId}`, by(timeouts.command), signal);
      ihave = step(classifyIhave(ihaveReply), reply(ihaveReply));
    } catch (err) {
      ihave = step(classifyNntpError('IHAVE', err), null);
      retire(conn);
      conn = null;
    }
    if (conn && ihaveReply?.code === 335) {
      if (ihaveArticle && options.prove) {
        const proof = await sendAndProve(conn, 'IHAVE', ihaveArticle, reply(ihaveReply));
        ihave = proof.step;
        proofs.push(proof.proof);
        conn = null; // sendAndProve retires it
      } else {
        retire(conn); // safe mode: no article; closing mid-transfer posts nothing
        conn = null;
      }
    }

    // --- reader side: MODE READER, CAPABILITIES, LIST ACTIVE, POST
    if (conn === null) conn = await session(true);
    else {
      const m = await conn.command('MODE READER', by(timeouts.command), signal);
      modeReader = reply(m);
    }
    if (modeReader && (modeReader as NntpReply).code >= 200 && (modeReader as NntpReply).code < 300) {
      try {
        const after = await capabilityList(conn);
        if (after.join('\n') !== capabilities.join('\n')) readerCapabilities = after;
      } catch {
        // a reader whose CAPABILITIES breaks: go on without them, on a fresh connection
        retire(conn);
        conn = await session(true);
      }
    }
    const listing: NntpConnection = conn;
    try {
      groups = await listActive(listing);
      if (!groups.complete) { retire(listing); conn = null; }
    } catch {
      groups = { reply: null, listed: 0, complete: false, posting: 0, moderated: 0, noPosting: 0, other: 0, postable: [], proofGroupFlag: null };
      retire(listing);
      conn = null;
    }
    if (conn === null) conn = await session(true);
    let postReply: NntpResponse | null = null;
    try {
      postReply = await conn.command('POST', by(timeouts.command), signal);
      post = step(classifyPost(postReply), reply(postReply));
    } catch (err) {
      post = step(classifyNntpError('POST', err), null);
      retire(conn);
      conn = null;
    }
    if (conn && postReply?.code === 340) {
      if (postArticle && options.prove) {
        const proof = await sendAndProve(conn, 'POST', postArticle, reply(postReply));
        post = proof.step;
        proofs.push(proof.proof);
      } else {
        retire(conn);
      }
      conn = null;
    }
    if (conn) await conn.quit(by(2000));
    // An IHAVE proof needs a reader to read back from: done inside sendAndProve.
  } catch (err) {
    sessionFailure = isOutcome(err) ? err : classifyNntpError('session', err);
  } finally {
    for (const c of [...open]) c.destroy();
    budget.release();
  }

  const outcomes: Outcome[] = [post, ihave].filter((s) => s.verdict !== 'N/A').map((s) => ({ verdict: s.verdict, reason: s.reason, detail: s.detail }));
  // a failure before POST was asked leaves the main question unanswered: it counts for the port
  if (sessionFailure && post.verdict === 'N/A') outcomes.push(sessionFailure);
  const agg = aggregate(outcomes);
  const caps = [...capabilities, ...(readerCapabilities ?? [])].map((c) => c.toUpperCase());
  return {
    port: spec.port,
    role: spec.role,
    verdict: agg.verdict,
    reason: agg.reason,
    detail: agg.detail,
    counts: agg.counts,
    greeting,
    greetingPostingAllowed: greeting === null ? null : (greeting as NntpReply).code === 200 ? true : (greeting as NntpReply).code === 201 ? false : null,
    greetingMs,
    kind: serverKind(capabilities, readerCapabilities, modeReader, ihave.reply),
    capabilities,
    modeReader,
    readerCapabilities,
    authinfoOffered: caps.some((c) => /^AUTHINFO\b/.test(c) || /^SASL\b/.test(c)),
    tls: tlsFacts,
    groups,
    post,
    ihave,
    proofs,
    localAddress,
    connections,
    durationMs: Math.round(performance.now() - started),
    transcripts: options.transcript ? transcripts : null,
  };

  // ---------------------------------------------------------------------------------------------------------

  async function listActive(conn: NntpConnection): Promise<NntpGroups> {
    const r = await conn.command('LIST ACTIVE', by(timeouts.command), signal);
    const counts = { posting: 0, moderated: 0, noPosting: 0, other: 0 };
    const postable: string[] = [];
    let proofGroupFlag: string | null = null;
    if (r.code !== 215) return { reply: reply(r), listed: 0, complete: true, ...counts, postable, proofGroupFlag };
    let listed = 0;
    let res: { complete: boolean };
    try {
      res = await conn.readBlock({ deadline: by(timeouts.command), maxLines: options.maxGroups ?? 100_000, maxBytes: options.maxListBytes ?? 16 * 1024 * 1024 }, (line) => {
        listed++;
        const f = line.split(/\s+/);
        const flag = f[3] ?? '';
        if (flag === 'y') { counts.posting++; if (postable.length < 20) postable.push((f[0] ?? '').slice(0, 100)); }
        else if (flag === 'm') counts.moderated++;
        else if (flag === 'n') counts.noPosting++;
        else counts.other++;
        if (options.prove && f[0] === options.prove.group) proofGroupFlag = flag.slice(0, 100);
      }, signal);
    } catch (err) {
      // a list that drips or breaks off: keep what was counted
      if (!(err instanceof NntpError)) throw err;
      res = { complete: false };
    }
    return { reply: reply(r), listed, complete: res.complete, ...counts, postable, proofGroupFlag };
  }

  async function sendAndProve(conn: NntpConnection, path: 'POST' | 'IHAVE', article: TestArticle, command: NntpReply): Promise<{ step: NntpStep; proof: NntpProof }> {
    const prove = options.prove!;
    const waitMs = prove.waitMs ?? 15_000;
    const base = { path, group: prove.group, tag: path === 'POST' ? tagPost : tagIhave, messageId: article.messageId, command };
    const empty = { articleReadBack: false, headReadBack: false, inGroup: false, articleNumber: null, latencyMs: null, waitedMs: 0, pathHeader: null, injectionInfo: null, cancel: null };
    let posted: NntpResponse;
    try {
      conn.sendArticle(article.lines);
      posted = await conn.readStatus(by(timeouts.command), `the reply to the ${path} article`, signal);
    } catch (err) {
      retire(conn);
      const o = classifyNntpError(`${path} article`, err);
      return { step: step(o, command), proof: { ...base, posted: null, ...empty } };
    }
    const rejected = classifyPosted(path, posted);
    if (rejected) {
      await conn.quit(by(2000));
      retire(conn);
      return { step: step(rejected, reply(posted)), proof: { ...base, posted: reply(posted), ...empty } };
    }
    const sentAt = performance.now();
    // read back on a reader session (the IHAVE connection is a transit one; a fresh one sees what others see)
    if (path === 'IHAVE') { await conn.quit(by(2000)); retire(conn); }
    let reader: NntpConnection | null = null;
    const back = { articleReadBack: false, headReadBack: false, inGroup: false, articleNumber: null as number | null, latencyMs: null as number | null, pathHeader: null as string | null, injectionInfo: null as string | null };
    let readError: Outcome | null = null;
    try {
      reader = path === 'POST' ? conn : await session(true);
      const waitUntil = Math.min(sentAt + waitMs, budgetEnd - 1000);
      for (;;) {
        const a = await reader.command(`ARTICLE ${article.messageId}`, by(timeouts.command), signal);
        if (a.code === 220) {
          let marked = false;
          let inHeaders = true;
          let folding: 'path' | 'injection' | null = null;
          const res = await reader.readBlock({ deadline: by(timeouts.command), maxLines: 5000, maxBytes: 1024 * 1024 }, (l) => {
            if (inHeaders) {
              if (l === '') inHeaders = false;
              else if (/^[ \t]/.test(l) && folding === 'injection') back.injectionInfo = `${back.injectionInfo} ${l.trim()}`.slice(0, 300);
              else if (/^[ \t]/.test(l) && folding === 'path') back.pathHeader = `${back.pathHeader}${l.trim()}`.slice(0, 300);
              else if (/^path:/i.test(l)) { back.pathHeader = l.slice(5).trim().slice(0, 300); folding = 'path'; }
              else if (/^(injection-info|nntp-posting-host):/i.test(l)) { back.injectionInfo = l.slice(l.indexOf(':') + 1).trim().slice(0, 300); folding = 'injection'; }
              else folding = null;
            } else if (l.includes(articleMarker(base.tag))) marked = true;
          }, signal);
          if (!res.complete) { reader = null; throw new NntpError('ERR_NNTP_PROTOCOL', 'the article read back was longer than 5000 lines / 1 MiB'); }
          if (marked) { back.articleReadBack = true; back.latencyMs = Math.round(performance.now() - sentAt); break; }
        } else if (a.code !== 430 && a.code !== 423) break;
        if (performance.now() + 500 > waitUntil) break;
        await sleep(500, signal);
      }
      if (back.articleReadBack) {
        const h = await reader.command(`HEAD ${article.messageId}`, by(timeouts.command), signal);
        if (h.code === 221) {
          const res = await reader.readBlock({ deadline: by(timeouts.command), maxLines: 500, maxBytes: 256 * 1024 }, () => {}, signal);
          back.headReadBack = res.complete;
          if (!res.complete) reader = null;
        }
      }
      if (back.articleReadBack && reader) await findInGroup(reader, article.messageId, back);
    } catch (err) {
      if (isOutcome(err)) readError = err;
      else readError = classifyNntpError('read-back', err);
      if (reader) retire(reader);
      reader = null;
    }
    const waitedMs = Math.round(performance.now() - sentAt);
    let cancel: NntpCancel | null = null;
    if (back.articleReadBack && prove.cancel !== false) cancel = await cancelArticle(reader, article, path === 'POST' ? tagPost : tagIhave);
    if (reader) { await reader.quit(by(2000)); retire(reader); }
    const outcome = readError && !back.articleReadBack ? { ...readError, detail: `${path} article ${posted.code} ${posted.text.slice(0, 100)}; read-back failed: ${readError.detail}` } : classifyReadBack(path, reply(posted), back.articleReadBack, prove.group, waitedMs);
    return { step: step(outcome, command), proof: { ...base, posted: reply(posted), ...back, waitedMs, cancel } };
  }

  async function findInGroup(reader: NntpConnection, messageId: string, back: { inGroup: boolean; articleNumber: number | null }): Promise<void> {
    const g = await reader.command(`GROUP ${options.prove!.group}`, by(timeouts.command), signal);
    if (g.code !== 211) return;
    const high = Number(g.text.split(/\s+/)[2]);
    if (!Number.isSafeInteger(high) || high <= 0) return;
    let r = await reader.command(`STAT ${high}`, by(timeouts.command), signal);
    for (let i = 0; i < 10; i++) {
      if (r.code === 223) {
        const [num, id] = r.text.split(/\s+/);
        if (id === messageId) { back.inGroup = true; back.articleNumber = Number(num); return; }
      } else if (r.code !== 423) return;
      r = await reader.command('LAST', by(timeouts.command), signal);
      if (r.code === 422 || r.code === 412 || r.code === 420) return;
    }
  }

  async function cancelArticle(reader: NntpConnection | null, article: TestArticle, tag: string): Promise<NntpCancel> {
    const c = buildCancelArticle({ target: article, group: options.prove!.group, domain: options.testerDomain, tag });
    let command: NntpReply | null = null;
    let posted: NntpReply | null = null;
    let removed = false;
    let conn = reader;
    try {
      conn ??= await session(true);
      const p = await conn.command('POST', by(timeouts.command), signal);
      command = reply(p);
      if (p.code === 340) {
        conn.sendArticle(c.lines);
        posted = reply(await conn.readStatus(by(timeouts.command), 'the reply to the cancel article', signal));
        if (posted.code === 240) {
          const until = Math.min(performance.now() + 5000, budgetEnd - 500);
          for (;;) {
            const s = await conn.command(`STAT ${article.messageId}`, by(timeouts.command), signal);
            if (s.code === 430) { removed = true; break; }
            if (performance.now() + 300 > until) break;
            await sleep(300, signal);
          }
        }
      }
    } catch {
      if (conn) retire(conn);
    }
    return { messageId: c.messageId, command, posted, removed };
  }
}

function isOutcome(x: unknown): x is Outcome {
  return typeof x === 'object' && x !== null && 'verdict' in x && 'reason' in x && 'detail' in x && !(x instanceof Error);
}

/** reader / transit from CAPABILITIES (READER, IHAVE, MODE-READER), else from the replies. */
export function serverKind(caps: readonly string[], readerCaps: readonly string[] | null, modeReader: NntpReply | null, ihave: NntpReply | null): NntpServerKind {
  const has = (list: readonly string[] | null, word: string): boolean => (list ?? []).some((c) => c.toUpperCase().split(/\s+/)[0] === word);
  let reader = has(caps, 'READER') || has(readerCaps, 'READER');
  let transit = has(caps, 'IHAVE') || has(caps, 'MODE-READER');
  if (caps.length === 0) {
    if (modeReader && (modeReader.code === 200 || modeReader.code === 201)) reader = true;
    if (ihave && (ihave.code === 335 || ihave.code === 435 || ihave.code === 436)) transit = true;
  }
  if (ihave && ihave.code === 335) transit = true;
  return reader && transit ? 'reader+transit' : reader ? 'reader' : transit ? 'transit' : 'unknown';
}
