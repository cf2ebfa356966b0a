/**
 * Outbound SMTP (and LMTP) sessions for one destination: its next hops are tried in order until every
 * recipient has an outcome (RFC 5321 sections 4.5.4, 5.1; Postfix smtp(8) behaviour where the RFC leaves room).
 *
 * Per hop: connect, greeting (not 2xx, e.g. 421/554: next hop, OB-03), EHLO with HELO fallback, STARTTLS when
 * offered (opportunistic) or demanded (policy 'required': not offered, refused, failed handshake or a
 * certificate the policy rejects → 4.7.x and the next hop; never plaintext, TLS-13), EHLO again inside TLS (the
 * client discards injected bytes and the pre-TLS capabilities, TLS-12), AUTH for a smart host (only inside TLS
 * unless allowed). Then transactions of at most `maxRecipients` recipients: MAIL, RCPTs and DATA pipelined when
 * the server offers PIPELINING; SIZE announced and respected (5.3.4 when the message is larger than the hop's
 * limit); per-recipient replies: 2xx on, 4xx deferred, 5xx bounced; 452/552 to a RCPT while others were accepted
 * → those go in the next transaction (OB-07). The body goes through the client's DotStuffer (CRLF only,
 * dot-stuffed, one terminator: SM-16).
 *
 * Faults: a lost connection, timeout or malformed reply (OB-04, OB-06) before the final dot leaves the
 * transaction's recipients for the next hop; after the final dot was sent (OB-05: no reply) they are deferred,
 * never retried elsewhere in the same attempt (the message may have arrived). When all hops fail the rest are
 * deferred with the last diagnostic. A body that cannot be read (the spool file is damaged) defers everything and
 * stops: no hop ever gets half a message.
 *
 * Trust: every peer is untrusted; replies are parsed by the client with bounded memory, and only a cleaned,
 * bounded copy of their text reaches outcomes and logs.
 */
import { isIP } from 'node:net';
import type { Readable } from 'node:stream';
import type { ConnectionOptions } from 'node:tls';
import { NULL_LOGGER, type Logger } from '../core/log.ts';
import {
  SmtpAbortedError, SmtpBodyError, SmtpClient, SmtpClientError, SmtpProtocolError, SmtpTimeoutError, SmtpTlsError,
  type SmtpReply, type SmtpTimeouts, type TlsInfo,
} from '../smtp/client.ts';
import type { DeliveryRecipient, RecipientOutcome } from '../queue/deliverer.ts';
import type { EsmtpParams } from '../queue/store.ts';
import { ConnectionCache, quitQuickly, type CachedSession } from './connection-cache.ts';
import { bounced, clean, deferred, failureOutcome, replyLine, replyOutcome, type LocalFailure } from './outcome.ts';
import type { SmtpAuthConfig, TlsMode } from './routing.ts';

export interface HopTarget {
  /** Name for SNI, certificate checks and diagnostics. */
  readonly host: string;
  /** Where to connect: an IP address (MX) or a name (smart host, resolved by the system). */
  readonly address: string;
  readonly port: number;
}

export interface HopTlsPolicy {
  readonly mode: TlsMode | 'implicit';
  /** Require an authorized certificate (chain to a trusted CA, name matches servername). */
  readonly verify?: boolean;
  /** SNI and the name the certificate must match. Default hop.host. */
  readonly servername?: string;
  readonly ca?: readonly string[];
  /** More checks after the handshake (DANE, MTA-STS); returns why the TLS session is not acceptable, or null. */
  readonly check?: (tls: TlsInfo, hop: HopTarget) => string | null;
  /** Shown in diagnostics: "MTA-STS", "DANE", "smart host policy". */
  readonly source?: string;
}

/** The message as a transaction needs it. */
export interface OutboundMessage {
  readonly queueId: string;
  /** '' for <>. */
  readonly sender: string;
  readonly mailParams: EsmtpParams;
  /** Octets that openBody() yields. */
  readonly size: number;
  /** A fresh body stream per transaction (CRLF line ends, not dot-stuffed). */
  openBody(): Readable | AsyncIterable<Uint8Array>;
}

export interface OutboundOptions {
  /** EHLO / LHLO name. */
  readonly heloName: string;
  readonly timeouts?: Partial<SmtpTimeouts>;
  /** Recipients per transaction. Default 50 (Postfix smtp_destination_recipient_limit). LMTP: always 1. */
  readonly maxRecipients?: number;
  readonly auth?: SmtpAuthConfig | null;
  /** Send AUTH over a plaintext connection. Default false. */
  readonly allowPlaintextAuth?: boolean;
  /** Speak LMTP (RFC 2033): LHLO, no TLS, one recipient per transaction. */
  readonly lmtp?: boolean;
  readonly cache?: ConnectionCache | null;
  readonly logger?: Logger;
  readonly signal?: AbortSignal;
  /** Longest reply line / most lines accepted from a peer. */
  readonly maxReplyLineLength?: number;
  readonly maxReplyLines?: number;
  /** Source address for outgoing connections. */
  readonly localAddress?: string;
}

export interface DestinationResult {
  readonly outcomes: RecipientOutcome[];
  /** The body could not be read: the message is damaged, stop delivering it. */
  readonly bodyFailed: boolean;
}

interface Session extends CachedSession {
  readonly key: string;
  readonly hop: HopTarget;
  readonly remoteMta: string;
  /** False once something went wrong: never cached. */
  healthy: boolean;
  /** A transaction may be open (MAIL sent without a completed DATA): RSET before the next one. */
  dirty: boolean;
  /** Unlinks the current job's signal from the session's abort controller. */
  readonly unlink: () => void;
}

type OpenResult = { session: Session } | { failure: LocalFailure; retryPlain?: boolean };

const DEFAULT_MAX_RCPT = 50;

function isAscii(s: string): boolean {
  return /^[\x00-\x7f]*$/.test(s);
}

function remoteMtaOf(hop: HopTarget): string {
  return hop.host === hop.address ? `[${hop.address}]` : `${hop.host} [${hop.address}]`;
}

function peer(hop: HopTarget): string {
  return `${hop.host}[${hop.address}]:${hop.port}`;
}

/** "4.x.y" from a reply's enhanced code, class forced to 4 (we defer on it). */
function softStatus(r: SmtpReply, fallback: string): string {
  return r.enhanced ? `4${r.enhanced.slice(1)}` : fallback;
}

function sessionKey(hop: HopTarget, tls: HopTlsPolicy, options: OutboundOptions): string {
  return [
    options.lmtp ? 'lmtp' : 'smtp', hop.host, hop.address, hop.port, tls.mode, tls.verify ? 'v' : '-', tls.servername ?? '',
    tls.source ?? '', options.auth?.username ?? '', options.heloName, options.localAddress ?? '',
  ].join('|');
}

/** Status and text for a client error, by phase. */
function faultFailure(err: SmtpClientError, hop: HopTarget): LocalFailure {
  const text = clean(err.message);
  const mta = remoteMtaOf(hop);
  if (err instanceof SmtpProtocolError) return deferred('4.5.0', `protocol error: ${text}`, mta);
  if (err.phase === 'connect') return deferred('4.4.1', `connect to ${peer(hop)}: ${text}`);
  if (err instanceof SmtpTlsError) return deferred('4.7.5', `Cannot start TLS: ${text}`, mta);
  if (err instanceof SmtpTimeoutError) return deferred('4.4.2', text, mta);
  return deferred('4.4.2', text, mta);
}

/** Delivers `message` to `recipients` through the first hops that take them. */
export async function deliverToHops(
  hops: readonly HopTarget[],
  tlsFor: (hop: HopTarget) => HopTlsPolicy,
  message: OutboundMessage,
  recipients: readonly DeliveryRecipient[],
  options: OutboundOptions,
): Promise<DestinationResult> {
  const logger = options.logger ?? NULL_LOGGER;
  const outcomes = new Map<DeliveryRecipient, RecipientOutcome>();
  let pending: DeliveryRecipient[] = [...recipients];
  let last: LocalFailure = deferred('4.4.1', 'no next hop could be reached');
  let bodyFailed = false;

  const settle = (list: readonly DeliveryRecipient[], f: LocalFailure): void => {
    for (const r of list) outcomes.set(r, failureOutcome(r.address, f));
  };

  hopLoop:
  for (const hop of hops) {
    if (pending.length === 0) break;
    throwIfAborted(options.signal);
    const policy = tlsFor(hop);
    let opened = await openSession(hop, policy, options);
    if ('failure' in opened && opened.retryPlain) {
      // Opportunistic TLS failed in the handshake: Postfix retries the same host in plaintext.
      logger.info('TLS handshake failed, retrying in plaintext', { host: hop.host, address: hop.address, reason: opened.failure.text });
      opened = await openSession(hop, { ...policy, mode: 'none' }, options);
    }
    if ('failure' in opened) {
      last = opened.failure;
      logger.info('next hop failed', { host: hop.host, address: hop.address, port: hop.port, status: last.status, reason: last.text });
      continue;
    }
    const session = opened.session;
    try {
      while (pending.length > 0) {
        throwIfAborted(options.signal);
        const limit = options.lmtp ? 1 : Math.max(1, options.maxRecipients ?? DEFAULT_MAX_RCPT);
        const batch = pending.slice(0, limit);
        const rest = pending.slice(limit);
        const t = await transaction(session, message, batch, options);
        for (const [r, o] of t.done) outcomes.set(r, o);
        if (t.messageFailure) {
          // Permanent for the message at this hop (too big, needs SMTPUTF8): every remaining recipient.
          settle([...t.retry, ...rest], t.messageFailure);
          pending = [];
          break;
        }
        if (t.bodyFailed) {
          bodyFailed = true;
          settle([...t.retry, ...rest], deferred('4.3.0', 'message body unreadable: delivery stopped'));
          pending = [];
          break hopLoop;
        }
        if (t.hostFailure) {
          last = t.hostFailure;
          pending = [...t.retry, ...rest];
          logger.info('next hop failed', { host: hop.host, address: hop.address, port: hop.port, status: last.status, reason: last.text });
          continue hopLoop;
        }
        if (t.retry.length > 0 && t.accepted === 0) {
          // 452 to every recipient: the hop takes no more now; try later rather than loop.
          settle(t.retry, t.retryFailure ?? deferred('4.5.3', 'too many recipients'));
          pending = rest;
          continue;
        }
        pending = [...t.retry, ...rest];
      }
    } finally {
      release(session, options);
    }
  }
  if (pending.length > 0) settle(pending, last);
  return { outcomes: recipients.map((r) => outcomes.get(r) ?? failureOutcome(r.address, last)), bodyFailed };
}

/** Aborts `controller` when `signal` does, until the returned function is called. */
function linkAbort(controller: AbortController, signal: AbortSignal | undefined): () => void {
  if (!signal) return () => {};
  if (signal.aborted) {
    controller.abort(signal.reason);
    return () => {};
  }
  const onAbort = (): void => controller.abort(signal.reason);
  signal.addEventListener('abort', onAbort, { once: true });
  return () => signal.removeEventListener('abort', onAbort);
}

function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw signal.reason instanceof Error ? signal.reason : new SmtpAbortedError('Aborted', { phase: 'command', cause: signal.reason });
}

function release(session: Session, options: OutboundOptions): void {
  session.unlink();
  if (session.healthy && !session.dirty && !session.client.closed && options.cache && !options.signal?.aborted) {
    const { client, uses, tls, abort } = session;
    options.cache.put(session.key, { client, uses, tls, abort });
  } else if (session.healthy && !session.client.closed) {
    void quitQuickly(session.client);
  } else {
    session.client.close();
  }
}

async function openSession(hop: HopTarget, policy: HopTlsPolicy, options: OutboundOptions): Promise<OpenResult> {
  const key = sessionKey(hop, policy, options);
  // A cached session first, probed with RSET (the server may have dropped it while idle).
  const cached = options.cache?.take(key) ?? null;
  if (cached) {
    const unlink = linkAbort(cached.abort, options.signal);
    try {
      const r = await cached.client.rset();
      if (r.code === 250) {
        return { session: { ...cached, key, hop, remoteMta: remoteMtaOf(hop), healthy: true, dirty: false, unlink: linkAbort(cached.abort, options.signal) } };
      }
    } catch (err) {
      if (err instanceof SmtpAbortedError) { cached.client.close(); throw err; }
    } finally {
      unlink();
    }
    cached.client.close();
  }
  let client: SmtpClient;
  const abort = new AbortController();
  const unlink = linkAbort(abort, options.signal);
  // No SNI with an IP address (RFC 6066); the certificate is then checked against the address itself.
  const sni = policy.servername ?? hop.host;
  const servername = isIP(sni) === 0 ? sni : undefined;
  const tlsOptions: ConnectionOptions = {
    rejectUnauthorized: false,
    minVersion: 'TLSv1.2',
    ...(policy.ca && policy.ca.length > 0 ? { ca: [...policy.ca] } : {}),
  };
  try {
    client = await SmtpClient.connect({
      host: hop.address, port: hop.port,
      ...(options.localAddress !== undefined ? { localAddress: options.localAddress } : {}),
      ...(policy.mode === 'implicit' ? { tls: 'implicit' as const } : {}),
      ...(servername !== undefined ? { servername } : {}), tlsOptions,
      ...(options.timeouts ? { timeouts: options.timeouts } : {}),
      signal: abort.signal,
      ...(options.maxReplyLineLength !== undefined ? { maxReplyLineLength: options.maxReplyLineLength } : {}),
      ...(options.maxReplyLines !== undefined ? { maxReplyLines: options.maxReplyLines } : {}),
    });
  } catch (err) {
    unlink();
    if (err instanceof SmtpAbortedError) throw err;
    if (err instanceof SmtpClientError) {
      if (policy.mode === 'implicit' && err instanceof SmtpTlsError) return { failure: deferred('4.7.5', `Cannot start TLS with ${peer(hop)}: ${clean(err.message)}`) };
      return { failure: faultFailure(err, hop) };
    }
    throw err;
  }
  const mta = remoteMtaOf(hop);
  const fail = (f: LocalFailure, extra: { retryPlain?: boolean } = {}): OpenResult => {
    unlink();
    if (client.closed) client.close();
    else void quitQuickly(client);
    return { failure: f, ...extra };
  };
  try {
    const g = client.greeting;
    if (g.code < 200 || g.code > 299) {
      return fail(deferred(softStatus(g, '4.3.0'), `host ${peer(hop)} refused to talk to me: ${replyLine(g)}`, mta));
    }
    const hello = async (): Promise<SmtpReply> => (options.lmtp ? client.send(`LHLO ${options.heloName}`) : client.ehlo(options.heloName));
    let r = await hello();
    if (r.code !== 250) return fail(deferred(softStatus(r, '4.3.0'), `host ${peer(hop)} refused to talk to me: ${replyLine(r)}`, mta));
    const source = policy.source ?? 'TLS policy';
    if (!options.lmtp && policy.mode !== 'none' && policy.mode !== 'implicit') {
      const required = policy.mode === 'required';
      if (!client.hasCapability('STARTTLS')) {
        if (required) return fail(deferred('4.7.4', `TLS is required (${source}), but was not offered by host ${peer(hop)}`, mta));
      } else {
        let st;
        try {
          st = await client.startTls({ ...(servername !== undefined ? { servername } : {}), tlsOptions });
        } catch (err) {
          if (err instanceof SmtpTlsError) {
            if (required) return fail(deferred('4.7.5', `Cannot start TLS with ${peer(hop)}: handshake failure (${clean(err.message)})`, mta));
            return fail(deferred('4.7.5', `Cannot start TLS with ${peer(hop)}: ${clean(err.message)}`, mta), { retryPlain: true });
          }
          throw err;
        }
        if (st.tls === null) {
          if (required) return fail(deferred('4.7.4', `TLS is required (${source}), but host ${peer(hop)} refused to start TLS: ${replyLine(st.reply)}`, mta));
          // 'may': on in plaintext (RFC 3207 allows it; Postfix "may" does the same).
        } else {
          r = await hello();
          if (r.code !== 250) return fail(deferred(softStatus(r, '4.3.0'), `host ${peer(hop)} refused to talk to me after STARTTLS: ${replyLine(r)}`, mta));
        }
      }
    }
    const tls = client.tls;
    if (tls !== null) {
      if (policy.verify && !tls.authorized) {
        return fail(deferred('4.7.5', `Server certificate not trusted (${source}): ${peer(hop)}: ${tls.authorizationError ?? 'unverified'}`, mta));
      }
      const why = policy.check?.(tls, hop) ?? null;
      if (why !== null) return fail(deferred('4.7.5', `Server certificate not accepted (${source}): ${peer(hop)}: ${clean(why)}`, mta));
    } else if (policy.mode === 'required' || policy.mode === 'implicit') {
      return fail(deferred('4.7.4', `TLS is required (${source}) but not active with ${peer(hop)}`, mta));
    }
    if (options.auth) {
      const f = await authenticate(client, options.auth, options, hop);
      if (f !== null) return fail(f);
    }
    return { session: { client, key, hop, remoteMta: mta, healthy: true, dirty: false, uses: 0, tls: tls !== null, abort, unlink } };
  } catch (err) {
    if (err instanceof SmtpAbortedError) { unlink(); client.close(); throw err; }
    if (err instanceof SmtpClientError) return fail(faultFailure(err, hop));
    unlink();
    client.close();
    throw err;
  }
}

async function authenticate(client: SmtpClient, auth: SmtpAuthConfig, options: OutboundOptions, hop: HopTarget): Promise<LocalFailure | null> {
  const mta = remoteMtaOf(hop);
  if (client.tls === null && !options.allowPlaintextAuth) {
    return deferred('4.7.0', `refusing to send credentials to ${peer(hop)} without TLS`, mta);
  }
  const offered = client.capabilities.get('AUTH') ?? [];
  const mechanism = auth.mechanism ?? (offered.includes('PLAIN') ? 'PLAIN' : offered.includes('LOGIN') ? 'LOGIN' : null);
  if (mechanism === null || !offered.includes(mechanism)) {
    return deferred('4.7.0', `host ${peer(hop)} offers no usable AUTH mechanism (${offered.join(' ') || 'none'})`, mta);
  }
  const r = await client.auth(mechanism, auth.username, auth.password);
  if (r.code === 235) return null;
  return deferred(softStatus(r, '4.7.0'), `SASL authentication failed; server ${peer(hop)} said: ${replyLine(r)}`, mta);
}

interface TransactionResult {
  readonly done: Map<DeliveryRecipient, RecipientOutcome>;
  /** Recipients to send again (452/552 to RCPT, or the hop failed before the dot). */
  readonly retry: DeliveryRecipient[];
  /** Recipients accepted at RCPT. */
  readonly accepted: number;
  readonly retryFailure?: LocalFailure;
  /** The connection failed before any outcome was final: the retry list goes to the next hop. */
  readonly hostFailure?: LocalFailure;
  /** Permanent failure for the whole message at this hop. */
  readonly messageFailure?: LocalFailure;
  readonly bodyFailed?: boolean;
}

function mailParamsFor(session: Session, message: OutboundMessage): Record<string, string | true> {
  const c = session.client;
  const p = message.mailParams;
  const out: Record<string, string | true> = {};
  if (c.hasCapability('SIZE')) out['SIZE'] = String(message.size);
  const body = typeof p['BODY'] === 'string' ? p['BODY'].toUpperCase() : null;
  if (body === '8BITMIME' && c.hasCapability('8BITMIME')) out['BODY'] = '8BITMIME';
  if (p['SMTPUTF8'] !== undefined && c.hasCapability('SMTPUTF8')) out['SMTPUTF8'] = true;
  if (c.hasCapability('DSN')) {
    const ret = typeof p['RET'] === 'string' ? p['RET'].toUpperCase() : null;
    if (ret === 'FULL' || ret === 'HDRS') out['RET'] = ret;
    if (typeof p['ENVID'] === 'string' && /^[\x21-\x7e]{1,100}$/.test(p['ENVID']) && !p['ENVID'].includes('=')) out['ENVID'] = p['ENVID'];
  }
  return out;
}

function rcptParamsFor(session: Session, r: DeliveryRecipient): Record<string, string | true> {
  const out: Record<string, string | true> = {};
  if (!session.client.hasCapability('DSN')) return out;
  const notify = r.params['NOTIFY'];
  if (typeof notify === 'string' && /^(NEVER|(SUCCESS|FAILURE|DELAY)(,(SUCCESS|FAILURE|DELAY))*)$/i.test(notify)) out['NOTIFY'] = notify.toUpperCase();
  const orcpt = r.params['ORCPT'];
  if (typeof orcpt === 'string' && /^[\x21-\x7e]{1,500}$/.test(orcpt) && !orcpt.includes(' ')) out['ORCPT'] = orcpt;
  return out;
}

async function transaction(session: Session, message: OutboundMessage, batch: DeliveryRecipient[], options: OutboundOptions): Promise<TransactionResult> {
  const c = session.client;
  const hop = session.hop;
  const mta = session.remoteMta;
  const done = new Map<DeliveryRecipient, RecipientOutcome>();
  // Message-level limits this hop announced.
  const sizeCap = Number(c.capabilities.get('SIZE')?.[0] ?? '0');
  if (Number.isFinite(sizeCap) && sizeCap > 0 && message.size > sizeCap) {
    return { done, retry: batch, accepted: 0, messageFailure: bounced('5.3.4', `message size ${message.size} exceeds size limit ${sizeCap} of server ${peer(hop)}`, mta) };
  }
  if (message.mailParams['SMTPUTF8'] !== undefined && !c.hasCapability('SMTPUTF8') && (!isAscii(message.sender) || batch.some((r) => !isAscii(r.address)))) {
    return { done, retry: batch, accepted: 0, messageFailure: bounced('5.6.7', `SMTPUTF8 is required, but was not offered by host ${peer(hop)}`, mta) };
  }
  let body: Readable | AsyncIterable<Uint8Array> | null = null;
  let dotSent = false;
  try {
    if (session.dirty) {
      const r = await c.rset();
      if (r.code !== 250) return { done, retry: batch, accepted: 0, hostFailure: deferred(softStatus(r, '4.3.0'), `host ${peer(hop)} said: ${replyLine(r)} (in reply to RSET)`, mta) };
      session.dirty = false;
    }
    session.dirty = true;
    const env = await c.sendEnvelope({
      mailFrom: `<${message.sender}>`,
      mailParams: mailParamsFor(session, message),
      rcptTo: batch.map((r) => ({ path: `<${r.address}>`, params: rcptParamsFor(session, r) })),
      data: true,
    });
    if (env.mailFrom.code < 200 || env.mailFrom.code > 299) {
      if (env.data?.code === 354) session.healthy = false; // a hostile server accepting DATA anyway: drop it
      if (env.mailFrom.code >= 500) {
        for (const r of batch) done.set(r, replyOutcome(r.address, env.mailFrom, mta));
        return { done, retry: [], accepted: 0 };
      }
      return { done, retry: batch, accepted: 0, hostFailure: deferred(softStatus(env.mailFrom, '4.3.0'), `host ${peer(hop)} said: ${replyLine(env.mailFrom)} (in reply to MAIL FROM command)`, mta) };
    }
    const accepted: DeliveryRecipient[] = [];
    const retry: DeliveryRecipient[] = [];
    let retryFailure: LocalFailure | undefined;
    batch.forEach((r, i) => {
      const reply = env.rcptTo[i];
      if (reply === undefined) { retry.push(r); return; }
      if (reply.code >= 200 && reply.code < 300) { accepted.push(r); return; }
      // OB-07: "too many recipients" (452, and 552 per RFC 5321 4.5.3.1.10): later, in another transaction.
      if (reply.code === 452 || reply.code === 552) {
        retry.push(r);
        retryFailure ??= deferred(softStatus(reply, '4.5.3'), `host ${peer(hop)} said: ${replyLine(reply)} (in reply to RCPT TO command)`, mta);
        return;
      }
      done.set(r, replyOutcome(r.address, reply, mta));
    });
    if (accepted.length === 0) {
      if (env.data?.code === 354) session.healthy = false;
      return { done, retry, accepted: 0, ...(retryFailure ? { retryFailure } : {}) };
    }
    const dataReply = env.data;
    if (dataReply !== null && dataReply.code !== 354) {
      for (const r of accepted) done.set(r, replyOutcome(r.address, dataReply, mta));
      return { done, retry, accepted: accepted.length, ...(retryFailure ? { retryFailure } : {}) };
    }
    body = message.openBody();
    const result = await c.data(body);
    dotSent = result.phase === 'dot';
    if (result.phase === 'dot') session.dirty = false;
    for (const r of accepted) done.set(r, replyOutcome(r.address, result.reply, mta));
    session.uses++;
    return { done, retry, accepted: accepted.length, ...(retryFailure ? { retryFailure } : {}) };
  } catch (err) {
    session.healthy = false;
    if (err instanceof SmtpAbortedError) throw err;
    if (err instanceof SmtpBodyError) {
      options.logger?.error('message body unreadable during delivery', { queue_id: message.queueId, error: clean(err.message) });
      return { done, retry: batch.filter((r) => !done.has(r)), accepted: 0, bodyFailed: true };
    }
    if (err instanceof SmtpClientError) {
      const f = faultFailure(err, hop);
      const open = batch.filter((r) => !done.has(r));
      if (err.phase === 'dot' || dotSent) {
        // The final dot went out: the message may have been delivered. Defer, never resend elsewhere now.
        for (const r of open) done.set(r, failureOutcome(r.address, f));
        return { done, retry: [], accepted: 0, hostFailure: f };
      }
      return { done, retry: open, accepted: 0, hostFailure: f };
    }
    throw err;
  } finally {
    if (body !== null) closeBody(body);
  }
}

function closeBody(body: Readable | AsyncIterable<Uint8Array>): void {
  if (typeof (body as Readable).destroy === 'function') (body as Readable).destroy();
  else void (body as AsyncGenerator<Uint8Array>).return?.(undefined)?.catch(() => {});
}
