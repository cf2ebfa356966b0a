/**
 * The receive path's decisions: wires the SMTP engine's hooks to the relay policy, the abuse checks, the local
 * recipient tables, the user store, the AUTH throttle and the durable queue. Per recipient, in order:
 *   1. the relay decision (policy/relay.ts): reject, local or relay;
 *   2. the abuse checks, in their configured order (DNSBL, ...): the first refusal wins;
 *   3. for a local recipient, the recipient tables (policy/recipients.ts): unknown users get 550 5.1.1, known ones
 *      are expanded (aliases, lists, extensions, role accounts) to the mailboxes that are queued.
 * One structured log event per relay decision (with its rule and reason), one per AUTH outcome, one per accepted
 * message, and one summary line per connection.
 *
 * Bounces to strangers (field report 1, F1): a message from a client that is neither trusted nor authenticated is
 * queued with RET=FULL turned into RET=HDRS, so a delivery status notification about it never carries more than
 * its headers to a sender we cannot vouch for; the DSN generator also rate-limits reports per destination.
 */
import type { Readable, Writable } from 'node:stream';
import { canonicalize, formatPath, type CanonicalAddress, type Path } from '../core/address.ts';
import type { Logger } from '../core/log.ts';
import { errorCode, toReply } from '../core/errors.ts';
import { replyToString } from '../core/reply.ts';
import type { AuthVerdict, DataVerdict, SessionHandler, SessionState, Verdict } from '../smtp/handler.ts';
import type { Locality } from '../core/locality.ts';
import { decideRecipient, checkSenderOwnership, type RelayContext, type RelayRuleMatcher } from '../policy/relay.ts';
import { unknownUserReply, type RecipientResolver } from '../policy/recipients.ts';
import type { ThrottleResult } from '../policy/auth-throttle.ts';
import type { AuthGate } from '../policy/shared-auth-throttle.ts';
import type { MailQueue } from '../queue/index.ts';
import type { AbuseCheck } from './abuse.ts';

export interface ReceiveDeps {
  readonly hostname: string;
  /** The durable queue (embedded SQLite or shared PostgreSQL: only the port). */
  readonly queue: MailQueue;
  readonly logger: Logger;
  readonly isTrusted: (ip: string) => boolean;
  /** Local domains (config plus database) and own address literals: the same answer delivery routes with. */
  readonly locality: Locality;
  readonly relayDomains: ReadonlySet<string>;
  /** Admin relay rules, compiled. */
  readonly relayRules?: readonly RelayRuleMatcher[];
  /** The local recipient tables (users, aliases, role accounts). */
  readonly recipients: RecipientResolver;
  /** Run in order after the relay decision accepted a recipient. */
  readonly abuseChecks?: readonly AbuseCheck[];
  /** The user name when the password is right; rejects when the user store cannot answer (454 4.7.0). */
  readonly authenticate: (username: string, password: string) => Promise<string | null>;
  /** Whether the user may send as the address; rejects when the user store cannot answer (451 4.3.0). */
  readonly owns: (user: string, address: string) => Promise<boolean>;
  /** AUTH failure throttle: this process's (AuthThrottle) or the cluster's (SharedAuthThrottle). */
  readonly throttle: AuthGate;
  readonly messageSizeLimit: number;
}

interface RecipientData {
  readonly canonical: CanonicalAddress;
  readonly action: 'local' | 'relay';
  /** Where the mail goes: the mailboxes a local address expands to, or the relayed address itself. */
  readonly targets: readonly string[];
}

export function createReceiveHandler(deps: ReceiveDeps): SessionHandler {
  const log = deps.logger;

  const checks = deps.abuseChecks ?? [];
  /** Refunds the attempt the throttle counted; a shared throttle's refund is a round trip the reply does not wait for. */
  const refund = (ip: string): void => {
    try {
      const r = deps.throttle.recordSuccess(ip);
      if (r instanceof Promise) r.catch((err: unknown) => log.warn('auth refund failed', { client_ip: ip, err_code: (err as { code?: unknown })?.code ?? 'ERR_STORE_UNAVAILABLE' }));
    } catch { /* a refund is best effort */ }
  };
  const context = (s: SessionState): RelayContext => ({
    role: s.connection.listener.role,
    trusted: deps.isTrusted(s.connection.remoteAddress),
    user: s.user,
    locality: deps.locality,
    relayDomains: deps.relayDomains,
    rules: deps.relayRules ?? [],
    clientIp: s.connection.remoteAddress,
    senderDomain: s.mailFrom?.mailbox ? canonicalize(s.mailFrom.mailbox).domain : '',
  });

  return {
    async onConnect({ connection }): Promise<Verdict> {
      if (checks.length > 0 && !deps.isTrusted(connection.remoteAddress)) for (const c of checks) c.onConnect?.(connection);
      return { ok: true };
    },

    async onAuth(req): Promise<AuthVerdict> {
      const ip = req.session.connection.remoteAddress;
      const fields = { session_id: req.session.connection.id, client_ip: ip, mechanism: req.mechanism, sasl_username: req.username };
      // The throttle and the user store may be shared databases: when either cannot answer, the client is told to
      // try later (RFC 4954 454 4.7.0), never 235 and never 535 (a wrong password it did not send).
      const unavailable = (err: unknown, what: string): AuthVerdict => {
        log.error('auth unavailable', { ...fields, part: what, err_code: (err as { code?: unknown })?.code ?? 'ERR_STORE_UNAVAILABLE', err: String((err as Error)?.message ?? err) });
        return { ok: false, reply: { code: 454, enhanced: '4.7.0', text: 'Temporary authentication failure' } };
      };
      let gate: ThrottleResult;
      try {
        gate = await deps.throttle.acquire(ip);
      } catch (err) {
        return unavailable(err, 'throttle');
      }
      if (!gate.allowed) {
        log.warn('auth throttled', { ...fields, retry_after_ms: gate.retryAfterMs });
        return { ok: false, reply: { code: 450, enhanced: '4.7.1', text: `Error: too many AUTH failures from ${ip}, try again later` } };
      }
      let user: string | null;
      try {
        user = await deps.authenticate(req.username, req.password);
      } catch (err) {
        refund(ip); // an outage is not the client's failure
        return unavailable(err, 'users');
      }
      if (user === null) {
        const confirmed = deps.throttle.recordFailure(ip);
        if (confirmed instanceof Promise) confirmed.catch(() => { /* counted by acquire() already */ });
        // `client: "[ip]"` (written first, core/log.ts) is what deploy/fail2ban/filter.d/relayguard.conf anchors on.
        log.warn('auth failed', { ...fields, client: `[${ip}]` });
        return { ok: false, reply: { code: 535, enhanced: '5.7.8', text: 'Error: authentication failed' } };
      }
      refund(ip);
      log.info('auth succeeded', { ...fields, user });
      return { ok: true, user };
    },

    async onMailFrom({ session, path }): Promise<Verdict> {
      const declared = Number(session.mailParams.get('SIZE') ?? 0) || 0;
      const space = deps.queue.checkSpace(Math.max(declared, deps.messageSizeLimit));
      if (space !== 'ok') {
        log.warn('insufficient queue space', { session_id: session.connection.id, client_ip: session.connection.remoteAddress });
        return { ok: false, reply: { code: 452, enhanced: '4.3.1', text: 'Insufficient system storage' } };
      }
      if (session.user !== null) {
        const sender = path.mailbox ? canonicalize(path.mailbox) : null;
        let owned = false;
        if (sender !== null) {
          try {
            owned = await deps.owns(session.user, sender.address);
          } catch (err) {
            log.error('sender ownership unavailable', {
              session_id: session.connection.id, client_ip: session.connection.remoteAddress, user: session.user,
              err_code: (err as { code?: unknown })?.code ?? 'ERR_STORE_UNAVAILABLE', err: String((err as Error)?.message ?? err),
            });
            return { ok: false, reply: { code: 451, enhanced: '4.3.0', text: 'Temporary lookup failure, try again later' } };
          }
        }
        const check = checkSenderOwnership(sender, session.user, () => owned);
        if (!check.ok) {
          log.warn('sender rejected', {
            session_id: session.connection.id, client_ip: session.connection.remoteAddress, user: session.user,
            mail_from: sender?.address ?? '', rule: 'sender-login-mismatch', reply: replyToString(check.reply),
          });
          return { ok: false, reply: check.reply };
        }
      }
      return { ok: true };
    },

    async onRcptTo({ session, path }): Promise<Verdict> {
      const canonical = canonicalize(path.mailbox!);
      const ctx = context(session);
      const decision = decideRecipient(canonical, ctx);
      const fields = {
        session_id: session.connection.id,
        client_ip: session.connection.remoteAddress,
        listener: session.connection.listener.name,
        helo: session.helo,
        user: session.user,
        mail_from: session.mailFrom ? formatPath(session.mailFrom) : null,
        rcpt: formatPath(path),
        rcpt_canonical: canonical.address,
        action: decision.action as string,
        rule: decision.rule,
        reason: decision.reason,
      };
      if (decision.action === 'reject') {
        log.warn('relay decision', { ...fields, reply: replyToString(decision.reply) });
        return { ok: false, reply: decision.reply };
      }
      for (const check of checks) {
        const refused = await check.checkRecipient({ session, rcpt: canonical, decision, trusted: ctx.trusted });
        if (refused !== null) {
          log.warn('relay decision', { ...fields, ...refused.fields, action: 'reject', rule: check.name, reason: refused.reason, reply: replyToString(refused.reply) });
          return { ok: false, reply: refused.reply };
        }
      }
      let targets: readonly string[] = [canonical.address];
      if (decision.action === 'local') {
        const r = deps.recipients.resolve(canonical);
        if (!r.known) {
          const reply = unknownUserReply(canonical.address);
          log.warn('relay decision', { ...fields, action: 'reject', rule: 'unknown-recipient', reason: r.reason, reply: replyToString(reply) });
          return { ok: false, reply };
        }
        targets = r.targets;
        log.info('relay decision', { ...fields, reason: `${decision.reason}; ${r.via}`, delivered_to: targets.length <= 10 ? targets : [...targets.slice(0, 10), `(+${targets.length - 10})`] });
      } else {
        log.info('relay decision', fields);
      }
      const data: RecipientData = { canonical, action: decision.action, targets };
      return { ok: true, data };
    },

    async onData({ session, body }): Promise<DataVerdict> {
      let msg;
      try {
        msg = await deps.queue.beginMessage();
      } catch (err) {
        body.resume();
        log.error('queue unavailable', { session_id: session.connection.id, err_code: errorCode(err), err: String(err) });
        return { ok: false, reply: toReply(err) };
      }
      const trace = receivedHeader(session, deps.hostname, msg.queueId);
      let copied: Copied;
      try {
        copied = await copyBody(Buffer.from(trace, 'utf8'), body, msg.body);
        const recipients = queuedRecipients(session);
        const vouched = deps.isTrusted(session.connection.remoteAddress) || session.user !== null;
        const mailParams = Object.fromEntries(session.mailParams) as Record<string, string | true>;
        // RET=FULL only for senders we can vouch for: a stranger's message never comes back whole in a DSN.
        if (!vouched && typeof mailParams['RET'] === 'string' && mailParams['RET'].toUpperCase() === 'FULL') mailParams['RET'] = 'HDRS';
        await msg.commit({
          sender: session.mailFrom?.mailbox ? canonicalize(session.mailFrom.mailbox).address : '',
          recipients,
          clientIp: session.connection.remoteAddress,
          helo: session.helo,
          user: session.user,
          listener: session.connection.listener.name,
          mailParams,
        });
      } catch (err) {
        await msg.abort(err).catch(() => {});
        if (body.destroyed && !(err as { code?: string })?.code?.startsWith?.('ERR_QUEUE')) {
          // The engine abandoned the message (limit, bare LF, disconnect): it replies itself.
          return { ok: false, reply: { code: 451, enhanced: '4.3.0', text: 'Error: message abandoned' } };
        }
        log.error('message not queued', { session_id: session.connection.id, queue_id: msg.queueId, err_code: errorCode(err), err: String(err) });
        return { ok: false, reply: toReply(err) };
      }
      log.info('message accepted', {
        session_id: session.connection.id,
        queue_id: msg.queueId,
        client_ip: session.connection.remoteAddress,
        mail_from: session.mailFrom ? formatPath(session.mailFrom) : null,
        rcpts: session.recipients.length,
        relay: session.recipients.some((r) => (r.data as RecipientData).action === 'relay'),
        bytes: copied.bytes,
        // End of data (the client's final dot) to here, where the 250 goes out: the queue's durable commit.
        accept_ms: Math.round((performance.now() - copied.endedAt) * 1000) / 1000,
      });
      return { ok: true, queueId: msg.queueId };
    },

    onClose(s) {
      for (const c of checks) c.onClose?.(s.connection.id);
      log.info('session closed', {
        session_id: s.connection.id,
        client_ip: s.connection.remoteAddress,
        proxied: s.connection.proxied,
        listener: s.connection.listener.name,
        helo: s.helo,
        tls: s.tls,
        user: s.user,
        messages: s.messages,
        rcpt_accepted: s.recipientsAccepted,
        rcpt_rejected: s.recipientsRejected,
        rcpt_deferred: s.recipientsDeferred,
        commands: s.commands,
        replies_2xx: s.replies[0],
        replies_3xx: s.replies[1],
        replies_4xx: s.replies[2],
        replies_5xx: s.replies[3],
        errors: s.errors,
        bytes_in: s.bytesIn,
        elapsed_ms: s.durationMs,
        close_reason: s.closeReason,
      });
    },
  };
}

/**
 * The queue's recipients for a transaction: each accepted recipient's targets (a local address expands to its
 * mailboxes, with an ORCPT naming the address the client used), duplicates merged, envelope order kept.
 */
function queuedRecipients(session: SessionState): { address: string; params: Record<string, string | true> }[] {
  const out = new Map<string, { address: string; params: Record<string, string | true> }>();
  for (const r of session.recipients) {
    const data = r.data as RecipientData;
    const params = Object.fromEntries(r.params) as Record<string, string | true>;
    for (const t of data.targets) {
      if (out.has(t)) continue;
      const p = { ...params };
      if (t !== data.canonical.address && p['ORCPT'] === undefined) p['ORCPT'] = `rfc822;${xtext(data.canonical.address)}`;
      out.set(t, { address: t, params: p });
    }
  }
  return [...out.values()];
}

/** RFC 3461 xtext: "+", "=" and characters outside "!".."~" as "+XX". */
function xtext(s: string): string {
  let out = '';
  for (const b of Buffer.from(s, 'utf8')) out += b < 0x21 || b > 0x7e || b === 0x2b || b === 0x3d ? `+${b.toString(16).toUpperCase().padStart(2, '0')}` : String.fromCharCode(b);
  return out;
}

/**
 * Writes `head`, then everything `src` yields, into `dst` with backpressure, ends `dst` and resolves once it
 * finished (for the queue: the body is complete, and fsynced if it is a file). Like pipeline(), but without its
 * per-call AbortController and async iteration: when either side fails or closes early, the other is destroyed
 * with the error and the promise rejects with it.
 */
/** What copyBody saw: octets written (trace header included) and when the client's end of data arrived (performance.now()). */
interface Copied { readonly bytes: number; readonly endedAt: number }

function copyBody(head: Buffer, src: Readable, dst: Writable): Promise<Copied> {
  return new Promise<Copied>((resolve, reject) => {
    let bytes = head.length;
    let endedAt = 0;
    let settled = false;
    const done = (err?: Error): void => {
      if (settled) return;
      settled = true;
      src.off('data', onData);
      src.off('end', onEnd);
      src.off('error', onSrcError);
      src.off('close', onSrcClose);
      dst.off('drain', onDrain);
      dst.off('finish', onFinish);
      dst.off('error', onDstError);
      dst.off('close', onDstClose);
      if (err === undefined) resolve({ bytes, endedAt });
      else reject(err);
    };
    const failSrc = (err: Error): void => {
      if (!dst.destroyed) dst.destroy(err);
      done(err);
    };
    const failDst = (err: Error): void => {
      if (!src.destroyed) src.destroy(err);
      done(err);
    };
    const onData = (chunk: Buffer): void => {
      bytes += chunk.length;
      if (!dst.write(chunk)) src.pause();
    };
    const onDrain = (): void => {
      src.resume();
    };
    const onEnd = (): void => {
      endedAt = performance.now();
      dst.end();
    };
    const onFinish = (): void => done();
    const onSrcError = (err: Error): void => failSrc(err);
    const onSrcClose = (): void => {
      if (!src.readableEnded) failSrc(src.errored ?? prematureClose());
    };
    const onDstError = (err: Error): void => failDst(err);
    const onDstClose = (): void => {
      if (!dst.writableFinished) failDst(dst.errored ?? prematureClose());
    };
    if (src.destroyed) return failSrc(src.errored ?? prematureClose());
    if (dst.destroyed) return failDst(dst.errored ?? prematureClose());
    dst.on('drain', onDrain);
    dst.on('finish', onFinish);
    dst.on('error', onDstError);
    dst.on('close', onDstClose);
    src.on('end', onEnd);
    src.on('error', onSrcError);
    src.on('close', onSrcClose);
    if (!dst.write(head)) src.pause();
    src.on('data', onData);
    if (!dst.writableNeedDrain) src.resume();
  });
}

function prematureClose(): Error {
  return Object.assign(new Error('Premature close'), { code: 'ERR_STREAM_PREMATURE_CLOSE' });
}

/** RFC 5321 section 4.4 trace header, with the RFC 3848 "with" keyword. Field text is already safe ASCII. */
export function receivedHeader(s: SessionState, hostname: string, queueId: string): string {
  const helo = (s.helo ?? 'unknown').replace(/[^\x21-\x7e]/g, '?').slice(0, 255);
  const ip = s.connection.remoteAddress;
  const literal = ip.includes(':') ? `IPv6:${ip}` : ip;
  let proto = s.esmtp ? 'ESMTP' : 'SMTP';
  if (s.esmtp && s.mailParams.has('SMTPUTF8')) proto = 'UTF8' + (proto === 'ESMTP' ? 'SMTP' : 'SMTP');
  if (s.tls) proto += 'S';
  if (s.user !== null) proto += 'A';
  const only = s.recipients.length === 1 ? `\r\n\tfor ${formatPath((s.recipients[0] as { path: Path }).path)}` : '';
  const date = receivedDate(Date.now());
  return `Received: from ${helo} ([${literal}])\r\n\tby ${hostname} (relayguard) with ${proto} id ${queueId}${only};\r\n\t${date}\r\n`;
}

let dateSecond = -1;
let dateText = '';

/** The trace header's date ("Thu, 03 Dec 2026 14:00:00 +0000"), formatted once per second, not once per message. */
function receivedDate(nowMs: number): string {
  const second = Math.floor(nowMs / 1000);
  if (second !== dateSecond) {
    dateSecond = second;
    dateText = new Date(second * 1000).toUTCString().replace('GMT', '+0000');
  }
  return dateText;
}
