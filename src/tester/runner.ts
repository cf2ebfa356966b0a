/**
 * The session driver. For one target address it runs the battery on every (port, transport) unit: plain, after
 * STARTTLS, or over implicit TLS. Per unit: one session, RSET between tries; a fresh connection when the server
 * drops one (the interrupted trick is retried once) and, proactively, after `errorsPerSession` error replies,
 * before Postfix-style error throttles (smtpd_soft_error_limit: 1 s per reply after 10 errors) or a hard error
 * limit kick in; tricks that change the session (XCLIENT) get a connection of their own. EHLO falls back to
 * HELO (SmtpClient.ehlo). Pacing between tries, a per-target time budget (AbortSignal), and command timeouts:
 * two timeouts in a row end the unit (a tarpit).
 *
 * On mx ports every session starts with a control (CONTROL_RECIPIENTS: postmaster at the mail domain, at the host
 * name, unqualified, at the address literal): a refusal of the relay tricks reads CLOSED only when the same
 * session accepted one of them (requireControl), and a refusal about the tester's own address is INCONCLUSIVE
 * 'client-blocked' (verdict.ts). The mail domain is the one given (--domain), the target's (an MX lookup), or one
 * guessed from the host name; the report says which.
 *
 * Safe mode (default) stops every transaction at RCPT and never sends DATA. Proof mode sends one tagged probe
 * per accepted relay or bounce trick (relay: to a mailbox of the probe domain; bounce: to the target's local
 * recipient, from a tagged sender at the probe domain), then waits for the collector (the sink) to see it or
 * its bounce.
 *
 * Trust: talks only to the target address given, from the source address given.
 */
import { timeoutSignal } from '../core/abort.ts';
import { performance } from 'node:perf_hooks';
import type { ConnectionOptions } from 'node:tls';
import { SmtpClient, SmtpClientError, type SmtpReply, type TlsInfo } from '../smtp/client.ts';
import { TRICKS, controlRecipients, renderTrick, type ProbeContext, type RenderedTrick, type Trick } from './probes.ts';
import { buildProbeMessage, createTagger, type Tagger } from './proof.ts';
import type { ProbeArrival, ProofCollector } from './sink.ts';
import { isHostName, transportsFor, type PortSpec, type ResolvedTarget, type Transport } from './target.ts';
import {
  aggregate, classifyAttempt, classifyError, classifyReply, finalizeProof, markAcceptAll, replyInfo, requireControl,
  type ControlCheck, type Outcome, type ReplyContext, type ReplyInfo,
} from './verdict.ts';
import { portFindings, targetFindings } from './findings.ts';
import type {
  CertificateFacts, ConnectionTranscript, Counts, MailDomain, PortResult, ProbeReply, ProofResult, SessionFacts, TargetResult,
  TlsFacts, TransportResult, TrickResult,
} from './result.ts';

export interface TesterTimeouts {
  /** TCP connect (+ implicit TLS handshake). Default 10 s. */
  readonly connect: number;
  /** The greeting. Default 30 s. */
  readonly greeting: number;
  /** Each command's reply (and the STARTTLS handshake). Default 30 s. */
  readonly command: number;
}

export const DEFAULT_TESTER_TIMEOUTS: TesterTimeouts = Object.freeze({ connect: 10_000, greeting: 30_000, command: 30_000 });

export interface ProofOptions {
  readonly collector: ProofCollector;
  /** How long to wait for the probes after the battery, ms. Default 30 s. */
  readonly waitMs?: number;
}

export interface TesterOptions {
  readonly ports: readonly PortSpec[];
  /** Only STARTTLS (no plain battery) on mx/submission ports. */
  readonly tlsOnly?: boolean;
  /** No STARTTLS battery. */
  readonly noStartTls?: boolean;
  /** Bind the client to this address (the "outside" address). */
  readonly sourceAddress?: string;
  /** T: the domain of the probe recipients. Safe mode: a reserved name by default; proof mode: the probe domain. */
  readonly testerDomain: string;
  /** Our EHLO name. Default: the tester domain. */
  readonly heloName?: string;
  /** Sender local part {s}. Default "relaytest". */
  readonly senderLocalPart?: string;
  /** H, overriding what the target's banner says. */
  readonly hostName?: string;
  /** D, overriding what the target or its host name says. */
  readonly domain?: string;
  readonly tricks?: readonly Trick[];
  /** Pause before each try, ms. Default 0. */
  readonly paceMs?: number;
  /** Time budget per target, ms. Default 300 s. */
  readonly budgetMs?: number;
  readonly timeouts?: Partial<TesterTimeouts>;
  /** Start a fresh connection after this many 4xx/5xx replies in one session. Default 8. */
  readonly errorsPerSession?: number;
  /** Parallel (port, transport) units per target. Default 4. */
  readonly parallel?: number;
  /** Keep full transcripts with timings. */
  readonly transcript?: boolean;
  readonly proof?: ProofOptions;
  /** Extra TLS options (ca, rejectUnauthorized...). Default: no verification, facts reported. */
  readonly tlsOptions?: ConnectionOptions;
  readonly signal?: AbortSignal;
  /** Shared across the targets of one run so probe tags stay unique. */
  readonly tagger?: Tagger;
  /**
   * Progress: called once per trick of every (port, transport) unit as its verdict is known, in order, before the
   * run ends (a unit that cannot open a session reports no trick). The verdict is the one the session gave; the
   * report's may still change after the battery (safe mode: an accepted trick becomes 'accepts-all-recipients' when
   * the same unit accepted an unknown local user; proof mode: when the probe arrives or not). A throwing callback
   * is ignored.
   */
  readonly onTrick?: (progress: TrickProgress) => void;
}

/** One trick's verdict as it arrives (TesterOptions.onTrick). */
export interface TrickProgress {
  readonly address: string;
  readonly port: number;
  readonly role: PortSpec['role'];
  readonly transport: Transport;
  /** Position of the trick in the battery (0-based) and the battery's length. */
  readonly index: number;
  readonly total: number;
  readonly trick: TrickResult;
  /** The dialogue lines of this trick's tries (empty unless options.transcript). */
  readonly lines: readonly { readonly t: number; readonly dir: 'C' | 'S'; readonly line: string }[];
}

const sleep = (ms: number, signal?: AbortSignal): Promise<void> => new Promise((resolve) => {
  if (ms <= 0 || signal?.aborted) return resolve();
  const t = setTimeout(done, ms);
  function done(): void { clearTimeout(t); signal?.removeEventListener('abort', done); resolve(); }
  signal?.addEventListener('abort', done, { once: true });
});

/** The host name a greeting or EHLO reply announces ("220 mx.example.com ESMTP" → mx.example.com), or null. */
export function announcedHostName(text: string): string | null {
  const first = text.trim().split(/\s+/)[0] ?? '';
  if (!isHostName(first) || !/[a-z]/i.test(first)) return null;
  if (/^(e?smtp|ready|service|welcome|hello|mail|postfix|exim|sendmail)$/i.test(first)) return null;
  if (/^[245]\.\d+\.\d+$/.test(first)) return null;
  return first.toLowerCase().replace(/\.$/, '');
}

/** The mail domain of a host name: mx.example.com → example.com; example.com → example.com; "vm" → null. */
export function domainOfHost(host: string | null): string | null {
  if (host === null) return null;
  const labels = host.split('.').filter((l) => l !== '');
  if (labels.length >= 3) return labels.slice(1).join('.');
  if (labels.length === 2) return labels.join('.');
  return null;
}

/** Does a certificate name this host? DNS SANs with a leading-label wildcard, IP SANs, else the subject CN. */
export function certificateMatches(host: string, subject: string, altNames: readonly string[]): boolean {
  const h = host.toLowerCase().replace(/\.$/, '');
  const dnsNames = altNames.filter((a) => a.startsWith('DNS:')).map((a) => a.slice(4).toLowerCase());
  const ips = altNames.filter((a) => a.startsWith('IP Address:')).map((a) => a.slice(11).toLowerCase());
  if (ips.includes(h)) return true;
  const names = dnsNames.length > 0 ? dnsNames : [...subject.matchAll(/(?:^|,\s*)CN=([^,]+)/g)].map((m) => m[1]!.trim().toLowerCase());
  return names.some((n) => n === h || (n.startsWith('*.') && h.endsWith(n.slice(1)) && !h.slice(0, -n.length + 1).includes('.')));
}

function tlsFacts(info: TlsInfo, hostName: string | null, now: number): TlsFacts {
  const c = info.peerCertificate;
  let certificate: CertificateFacts | null = null;
  if (c) {
    certificate = {
      subject: c.subject,
      issuer: c.issuer,
      validFrom: c.validFrom.toISOString(),
      validTo: c.validTo.toISOString(),
      subjectAltNames: c.subjectAltNames,
      fingerprint256: c.fingerprint256,
      selfSigned: c.selfSigned,
      expired: c.validTo.getTime() < now || c.validFrom.getTime() > now,
      matchesHostName: hostName === null ? null : certificateMatches(hostName, c.subject, c.subjectAltNames),
    };
  }
  return { protocol: info.protocol, cipher: info.cipher.standardName || info.cipher.name, authorized: info.authorized, authorizationError: info.authorizationError, certificate };
}

function capabilityList(client: SmtpClient): string[] {
  return [...client.capabilities.entries()].map(([k, v]) => (v.length > 0 ? `${k} ${v.join(' ')}` : k));
}

interface MutableFacts {
  banner: ReplyInfo | null;
  connectMs: number | null;
  greetingMs: number | null;
  hello: 'EHLO' | 'HELO' | null;
  capabilities: string[];
  authMechanisms: string[];
  starttlsOffered: boolean;
  tls: TlsFacts | null;
  localAddress: string | null;
}

interface PendingProof {
  readonly tag: string;
  /** The trick was a bounce trick: the tag is the sender, the expected arrival a bounce. */
  readonly bounce: boolean;
  readonly trickIndex: number;
  readonly sentAt: number;
  readonly sentFrom: string | null;
}

interface UnitOutput {
  readonly transport: Transport;
  readonly first: Outcome | null;
  readonly facts: MutableFacts;
  readonly plainAuth: string[] | null;
  readonly tricks: TrickResult[];
  readonly controls: boolean[];
  readonly pending: PendingProof[];
  readonly connections: number;
  readonly durationMs: number;
  readonly transcripts: ConnectionTranscript[] | null;
  readonly vrfy: ProbeReply | null;
  readonly expn: ProbeReply | null;
  readonly localDelivery: ProbeReply | null;
  readonly mailAccepted: boolean;
  /** The control of the first session (mx ports), or null. */
  readonly control: ControlCheck | null;
  readonly mailDomain: MailDomain | null;
}

interface Ctx {
  readonly target: ResolvedTarget;
  readonly spec: PortSpec;
  readonly transport: Transport;
  /** The first unit of its port: also probes VRFY, EXPN and local delivery. */
  readonly first: boolean;
  readonly o: TesterOptions;
  readonly tricks: readonly Trick[];
  readonly timeouts: TesterTimeouts;
  readonly signal: AbortSignal;
  readonly tagger: Tagger;
  /** Recipient local part in safe mode. */
  readonly safeRecipient: string;
  /** {x}: a local part that does not exist at the target. */
  readonly unknownLocal: string;
}

class UnitRunner {
  readonly #c: Ctx;
  #client: SmtpClient | null = null;
  #clientIndex = -1;
  #clientStarted = '';
  #clientLocal: { address: string | null; port: number | null } = { address: null, port: null };
  #errors = 0;
  #tx = 0;
  #connections = 0;
  #hostName: string | null;
  /** Where #hostName came from: given or resolved ('name'), or the server's own greeting ('banner'). */
  #hostNameSource: 'name' | 'banner' | null;
  #domain: string | null;
  /** The control of the current session, the first session's, and the control recipient last accepted. */
  #control: ControlCheck | null = null;
  #firstControl: ControlCheck | null = null;
  #controlPreferred: string | null = null;
  #controlTried = false;
  readonly #facts: MutableFacts = {
    banner: null, connectMs: null, greetingMs: null, hello: null, capabilities: [], authMechanisms: [], starttlsOffered: false, tls: null, localAddress: null,
  };
  #plainAuth: string[] | null = null;
  readonly #transcripts: ConnectionTranscript[] | null;

  constructor(c: Ctx) {
    this.#c = c;
    this.#hostName = c.o.hostName?.toLowerCase() ?? c.target.hostName;
    this.#hostNameSource = this.#hostName !== null ? 'name' : null;
    this.#domain = c.o.domain?.toLowerCase() ?? c.target.domain;
    this.#transcripts = c.o.transcript ? [] : null;
  }

  get #helo(): string { return this.#c.o.heloName ?? this.#c.o.testerDomain; }

  #count(r: SmtpReply | ReplyInfo | null | undefined): void {
    if (r && r.code >= 400) this.#errors++;
  }

  #saveTranscript(): void {
    const client = this.#client;
    if (!client || !this.#transcripts) return;
    this.#transcripts.push({
      connection: this.#clientIndex,
      localAddress: this.#clientLocal.address,
      localPort: this.#clientLocal.port,
      startedAt: this.#clientStarted,
      lines: client.transcript.map((e) => ({ t: e.t, dir: e.dir, line: e.line })),
    });
  }

  #drop(): void {
    if (!this.#client) return;
    this.#client.close();
    this.#saveTranscript();
    this.#client = null;
  }

  async #quit(): Promise<void> {
    if (!this.#client) return;
    const client = this.#client;
    await client.quit().catch(() => null);
    this.#saveTranscript();
    this.#client = null;
  }

  /** Opens a session ready for MAIL; null on success, else why not. */
  async #open(): Promise<Outcome | null> {
    this.#drop();
    const { target, spec, transport, timeouts, o } = this.#c;
    const index = this.#connections++;
    const t0 = performance.now();
    this.#clientStarted = new Date().toISOString();
    let client: SmtpClient;
    try {
      client = await SmtpClient.connect({
        host: target.address,
        port: spec.port,
        ...(o.sourceAddress !== undefined ? { localAddress: o.sourceAddress } : {}),
        tls: transport === 'implicit' ? 'implicit' : 'none',
        ...(target.hostName !== null ? { servername: target.hostName } : {}),
        ...(o.tlsOptions ? { tlsOptions: o.tlsOptions } : {}),
        timeouts: { connect: timeouts.connect, greeting: timeouts.greeting, command: timeouts.command, dataBlock: timeouts.command, dataDone: timeouts.command },
        signal: this.#c.signal,
        transcript: o.transcript === true,
      });
    } catch (err) {
      return classifyError(err as SmtpClientError);
    }
    this.#client = client;
    this.#clientIndex = index;
    this.#clientLocal = { address: client.localAddress ?? null, port: client.localPort ?? null };
    this.#control = null;
    const greeting = replyInfo(client.greeting);
    if (this.#facts.banner === null) {
      this.#facts.banner = greeting;
      this.#facts.greetingMs = Math.round(performance.now() - t0);
      this.#facts.connectMs = client.transcript[0]?.t ?? null;
      this.#facts.localAddress = this.#clientLocal.address;
    }
    this.#learnHostName(greeting.text);
    const refused = classifyReply(greeting, 'greeting', this.#replyContext());
    if (refused) {
      await this.#quit();
      return refused;
    }
    try {
      const hello = await client.ehlo(this.#helo);
      if (hello.code !== 250) {
        await this.#quit();
        return classifyReply(replyInfo(hello), 'helo', this.#replyContext()) ?? { verdict: 'INCONCLUSIVE', reason: 'helo-refused', detail: `HELO ${hello.code}` };
      }
      this.#learnHostName(hello.lines[0] ?? '');
      const plainCaps = capabilityList(client);
      const starttlsOffered = client.hasCapability('STARTTLS');
      if (index === 0) {
        this.#facts.hello = client.esmtp ? 'EHLO' : 'HELO';
        this.#facts.starttlsOffered = starttlsOffered || transport === 'implicit';
        this.#facts.capabilities = plainCaps;
        this.#facts.authMechanisms = [...(client.capabilities.get('AUTH') ?? [])];
        if (transport === 'implicit' && client.tls) this.#facts.tls = tlsFacts(client.tls, this.#hostName, Date.now());
      }
      if (transport === 'starttls') {
        if (index === 0) this.#plainAuth = [...(client.capabilities.get('AUTH') ?? [])];
        if (!starttlsOffered) {
          await this.#quit();
          return { verdict: 'N/A', reason: 'not-applicable', detail: 'STARTTLS not offered' };
        }
        const st = await client.startTls(this.#hostName !== null && target.hostName !== null ? { servername: target.hostName } : {});
        if (!st.tls) {
          await this.#quit();
          return classifyReply(replyInfo(st.reply), 'starttls', this.#replyContext()) ?? { verdict: 'INCONCLUSIVE', reason: 'tls-failed', detail: `STARTTLS ${st.reply.code}` };
        }
        this.#facts.tls ??= tlsFacts(st.tls, this.#hostName, Date.now());
        const again = await client.ehlo(this.#helo);
        if (again.code !== 250) {
          await this.#quit();
          return classifyReply(replyInfo(again), 'helo', this.#replyContext()) ?? { verdict: 'INCONCLUSIVE', reason: 'helo-refused', detail: `EHLO after STARTTLS ${again.code}` };
        }
        if (index === 0) {
          this.#facts.capabilities = capabilityList(client);
          this.#facts.authMechanisms = [...(client.capabilities.get('AUTH') ?? [])];
        }
      }
      this.#errors = 0;
      this.#tx = 0;
      if (this.#c.spec.role === 'mx') await this.#runControl();
    } catch (err) {
      this.#drop();
      return classifyError(err as SmtpClientError);
    }
    return null;
  }

  #learnHostName(text: string): void {
    if (this.#hostName !== null) return;
    this.#hostName = announcedHostName(text);
    if (this.#hostName !== null) this.#hostNameSource = 'banner';
  }

  /** What verdicts need to know about this session: the tester's own address, AUTH on a submission port. */
  #replyContext(): ReplyContext {
    const mine = [this.#clientLocal.address, this.#c.o.sourceAddress].filter((a): a is string => typeof a === 'string' && a !== '');
    const auth = this.#client !== null && (this.#client.capabilities.get('AUTH') ?? []).length > 0;
    return { clientAddresses: mine, submissionWithAuth: this.#c.spec.role !== 'mx' && auth };
  }

  /** The mail domain in use and where it came from. */
  #mailDomain(): MailDomain | null {
    const { o, target } = this.#c;
    if (o.domain !== undefined) return { name: o.domain.toLowerCase(), source: 'option' };
    if (target.domain !== null) return { name: target.domain, source: target.mx !== null ? 'target' : 'option' };
    const guess = domainOfHost(this.#hostName);
    if (guess === null) return null;
    return { name: guess, source: this.#hostNameSource === 'banner' ? 'guessed-from-banner' : 'guessed-from-host-name' };
  }

  /**
   * The control of this session: MAIL FROM the tester, then the control recipients until one is accepted. The
   * recipient accepted before goes first; when none ever was, later sessions try only the first one (each refusal
   * counts toward the server's error limits).
   */
  async #runControl(): Promise<void> {
    const client = this.#client!;
    const ctx = this.#context(this.#c.safeRecipient);
    const candidates = controlRecipients(ctx);
    const pref = this.#controlPreferred;
    const order = pref !== null ? [pref, ...candidates.filter((c) => c !== pref)] : this.#controlTried ? candidates.slice(0, 1) : candidates;
    const tries: { command: string; reply: ReplyInfo | null }[] = [];
    const from = `<${ctx.sender}@${ctx.testerDomain}>`;
    this.#tx++;
    const m = await client.mailFrom(from);
    this.#count(m);
    tries.push({ command: `MAIL FROM:${from}`, reply: replyInfo(m) });
    let accepted = false;
    if (m.code >= 200 && m.code < 300) {
      for (const path of order) {
        const r = await client.rcptTo(path);
        this.#count(r);
        tries.push({ command: `RCPT TO:${path}`, reply: replyInfo(r) });
        if (r.code >= 200 && r.code < 300) {
          accepted = true;
          this.#controlPreferred = path;
          break;
        }
        if (r.code === 421) break;
      }
    }
    this.#controlTried = true;
    this.#control = { accepted, tries };
    this.#firstControl ??= this.#control;
  }

  #context(recipient: string): ProbeContext {
    const { o, target } = this.#c;
    return {
      sender: o.senderLocalPart ?? 'relaytest',
      recipient,
      testerDomain: o.testerDomain,
      hostName: this.#hostName,
      domain: this.#domain ?? domainOfHost(this.#hostName),
      address: target.address,
      unknownLocal: this.#c.unknownLocal,
    };
  }

  /**
   * VRFY, EXPN and (mx role) local delivery, on the first session of the port. Local delivery is the first try of
   * that session's control: RCPT TO:<postmaster@D> when the mail domain is known (or the MAIL refusal).
   */
  async #portProbes(): Promise<{ vrfy: ProbeReply | null; expn: ProbeReply | null; localDelivery: ProbeReply | null }> {
    const client = this.#client!;
    const out: { vrfy: ProbeReply | null; expn: ProbeReply | null; localDelivery: ProbeReply | null } = { vrfy: null, expn: null, localDelivery: null };
    const control = this.#control;
    if (control !== null) {
      const first = control.tries.find((t) => t.command.startsWith('RCPT')) ?? control.tries[0];
      if (first) out.localDelivery = { command: first.command, reply: first.reply };
    }
    try {
      const v = await client.vrfy('postmaster');
      this.#count(v);
      out.vrfy = { command: 'VRFY postmaster', reply: replyInfo(v) };
      const e = await client.expn('postmaster');
      this.#count(e);
      out.expn = { command: 'EXPN postmaster', reply: replyInfo(e) };
    } catch (err) {
      if (!(err instanceof SmtpClientError)) throw err;
      this.#drop();
    }
    return out;
  }

  async run(): Promise<UnitOutput> {
    const started = performance.now();
    const { o, tricks, signal, tagger } = this.#c;
    const results: TrickResult[] = [];
    const controls: boolean[] = [];
    const pending: PendingProof[] = [];
    let mailAccepted = false;
    let probes: { vrfy: ProbeReply | null; expn: ProbeReply | null; localDelivery: ProbeReply | null } = { vrfy: null, expn: null, localDelivery: null };
    const output = (first: Outcome | null): UnitOutput => {
      const out: UnitOutput = {
        transport: this.#c.transport, first, facts: this.#facts, plainAuth: this.#plainAuth, tricks: results, controls, pending,
        connections: this.#connections, durationMs: Math.round(performance.now() - started), transcripts: this.#transcripts,
        ...probes, mailAccepted, control: this.#firstControl, mailDomain: this.#mailDomain(),
      };
      return out;
    };

    const firstOpen = await this.#open();
    if (firstOpen) return output(firstOpen);
    if (this.#c.first) probes = await this.#portProbes();

    const maxConnections = tricks.length * 3 + 5;
    let lines: { t: number; dir: 'C' | 'S'; line: string }[] = [];
    const push = (result: TrickResult): void => {
      results.push(result);
      const hook = o.onTrick;
      const got = lines;
      lines = [];
      if (!hook) return;
      try {
        hook({
          address: this.#c.target.address, port: this.#c.spec.port, role: this.#c.spec.role, transport: this.#c.transport,
          index: results.length - 1, total: tricks.length, trick: result, lines: got,
        });
      } catch { /* a progress callback never breaks the run */ }
    };
    let stop: Outcome | null = null;
    let droppedInARow = 0;
    let timeoutsInARow = 0;

    for (let i = 0; i < tricks.length; i++) {
      const trick = tricks[i]!;
      const base = { id: trick.id, title: trick.title, kind: trick.kind };
      const notRun = (oc: Outcome, detail = oc.detail): TrickResult => ({
        ...base, verdict: oc.verdict, reason: oc.reason, detail, mailFrom: null, rcptTo: [],
        replies: { mail: null, rcpt: [], data: null, dot: null }, accepted: false, attempts: 0, connection: -1, ms: 0, proof: null,
      });
      controls.push(trick.id === 'V21');
      if (!stop && signal.aborted) stop = { verdict: 'INCONCLUSIVE', reason: 'budget-exhausted', detail: 'not run: the time budget ran out' };
      if (stop) { push(notRun(stop)); continue; }
      const tag = o.proof ? tagger.next() : null;
      const rendered = renderTrick(trick, this.#context(tag ?? this.#c.safeRecipient));
      if (!rendered.ok) { push(notRun({ verdict: 'N/A', reason: 'not-applicable', detail: rendered.reason })); continue; }
      if (i > 0) await sleep(o.paceMs ?? 0, signal);

      let attempts = 0;
      let result: TrickResult | null = null;
      while (result === null) {
        const needFresh = !this.#client || this.#client.closed || this.#errors >= (o.errorsPerSession ?? 8) || (trick.isolate === true && this.#tx > 0);
        if (needFresh) {
          if (this.#connections >= maxConnections) {
            stop = { verdict: 'INCONCLUSIVE', reason: 'dropped', detail: `not run: gave up after ${this.#connections} connections` };
            result = notRun(stop);
            break;
          }
          const bad = await this.#open();
          if (bad) {
            stop = bad.verdict === 'N/A' ? { verdict: 'INCONCLUSIVE', reason: 'dropped', detail: bad.detail } : bad;
            result = notRun(stop, `not run: ${stop.detail}`);
            break;
          }
        }
        const missing = (trick.requires ?? []).filter((cap) => !this.#client!.hasCapability(cap));
        if (missing.length > 0) {
          result = notRun({ verdict: 'N/A', reason: 'not-applicable', detail: `the server does not advertise ${missing.join(', ')}` });
          break;
        }
        attempts++;
        const t0 = performance.now();
        const used = this.#client!;
        const mark = used.transcript.length;
        const attempt = await this.#attempt(rendered.rendered, tag);
        lines.push(...used.transcript.slice(mark));
        const ms = Math.round(performance.now() - t0);
        if (attempt.kind === 'reset-failed') continue; // the session was gone before this trick started: not a try
        const sent = { mailFrom: attempt.mailFromSent, rcptTo: attempt.rcptSent };
        if (attempt.kind === 'error') {
          const oc = classifyError(attempt.error);
          if (oc.reason === 'dropped' && attempts < 2) continue;
          result = { ...base, ...oc, ...sent, replies: attempt.replies, accepted: false, attempts, connection: this.#clientIndex, ms, proof: null };
          if (oc.reason === 'timeout') {
            timeoutsInARow++;
            if (timeoutsInARow >= 2) stop = { ...oc, detail: `not run: ${timeoutsInARow} timeouts in a row (tarpit?)` };
          }
          if (oc.reason === 'budget-exhausted') stop = { ...oc, detail: 'not run: the time budget ran out' };
          break;
        }
        const context = this.#replyContext();
        const classified = classifyAttempt(attempt.replies, trick.kind, rendered.rendered.rcptTo.length, context);
        const oc = this.#c.spec.role === 'mx' ? { ...classified, ...requireControl(classified, this.#control, context) } : classified;
        if (oc.reason === 'dropped' && attempts < 2) { this.#drop(); continue; }
        if (oc.mailAccepted) mailAccepted = true;
        timeoutsInARow = 0;
        result = {
          ...base, verdict: oc.verdict, reason: oc.reason, detail: oc.detail, ...sent, replies: attempt.replies,
          accepted: oc.accepted, attempts, connection: this.#clientIndex, ms, proof: null,
        };
        const delivered = attempt.replies.dot !== null && attempt.replies.dot.code >= 200 && attempt.replies.dot.code < 300;
        const awaiting = trick.kind === 'bounce' ? oc.reason === 'local-accepted' : oc.reason === 'accepted-not-proved';
        if (tag && delivered && awaiting) {
          pending.push({ tag, bounce: trick.kind === 'bounce', trickIndex: i, sentAt: Date.now(), sentFrom: this.#clientLocal.address ?? o.sourceAddress ?? null });
        }
        if (oc.reason === 'dropped') this.#drop();
        if (trick.isolate) await this.#quit();
      }
      if (result.reason === 'dropped') {
        droppedInARow++;
        if (droppedInARow >= 3 && !stop) stop = { verdict: 'INCONCLUSIVE', reason: 'dropped', detail: 'not run: the server dropped 3 tricks in a row' };
      } else {
        droppedInARow = 0;
      }
      push(result);
    }
    await this.#quit();
    return output(null);
  }

  /** One try of one trick on the open session. */
  async #attempt(t: RenderedTrick, tag: string | null): Promise<
    | { kind: 'ok'; replies: TrickResult['replies']; mailFromSent: string; rcptSent: string[] }
    | { kind: 'error'; error: SmtpClientError; replies: TrickResult['replies']; mailFromSent: string; rcptSent: string[] }
    | { kind: 'reset-failed' }
  > {
    const client = this.#client!;
    const { o } = this.#c;
    const mailFromSent = [t.mailFrom, ...t.mailParams].join(' ');
    const rcptSent = t.rcptTo.map((r) => [r.path, ...r.params].join(' '));
    const replies: { mail: ReplyInfo | null; rcpt: ReplyInfo[]; data: ReplyInfo | null; dot: ReplyInfo | null } = { mail: null, rcpt: [], data: null, dot: null };
    if (this.#tx > 0) {
      try {
        const rs = await client.rset();
        this.#count(rs);
        if (rs.code === 421 || rs.code >= 500) { this.#drop(); return { kind: 'reset-failed' }; }
      } catch (err) {
        if (!(err instanceof SmtpClientError)) throw err;
        this.#drop();
        if (err.code === 'ERR_SMTP_ABORTED' || err.code === 'ERR_SMTP_TIMEOUT') return { kind: 'error', error: err, replies, mailFromSent, rcptSent };
        return { kind: 'reset-failed' };
      }
    }
    this.#tx++;
    try {
      for (const pre of t.preCommands) {
        const r = await client.send(pre);
        this.#count(r);
        if (r.code === 220) {
          // XCLIENT answers with a new greeting: say hello again.
          const h = await client.ehlo(this.#helo);
          this.#count(h);
          if (h.code !== 250) { replies.mail = replyInfo(h); return { kind: 'ok', replies, mailFromSent: `${pre} / EHLO`, rcptSent: [] }; }
        } else if (r.code >= 400) {
          replies.mail = replyInfo(r);
          return { kind: 'ok', replies, mailFromSent: pre, rcptSent: [] };
        }
      }
      if (t.trick.pipeline) {
        const env = await client.sendEnvelope({
          mailFrom: t.mailFrom, mailParams: t.mailParams,
          rcptTo: t.rcptTo.map((r) => ({ path: r.path, params: r.params })),
        });
        replies.mail = replyInfo(env.mailFrom);
        this.#count(env.mailFrom);
        for (const r of env.rcptTo) { replies.rcpt.push(replyInfo(r)); this.#count(r); }
      } else {
        const m = await client.mailFrom(t.mailFrom, t.mailParams);
        replies.mail = replyInfo(m);
        this.#count(m);
        if (m.code < 200 || m.code >= 300) return { kind: 'ok', replies, mailFromSent, rcptSent };
        for (const r of t.rcptTo) {
          const rr = await client.rcptTo(r.path, r.params);
          replies.rcpt.push(replyInfo(rr));
          this.#count(rr);
          if (rr.code === 421) break;
        }
      }
      const last = replies.rcpt[t.rcptTo.length - 1];
      const accepted = replies.mail.code >= 200 && replies.mail.code < 300 && last !== undefined && last.code >= 200 && last.code < 300;
      if (o.proof && tag && accepted && (t.trick.kind === 'relay' || t.trick.kind === 'bounce')) {
        const body = buildProbeMessage({
          tag, trickId: t.trick.id, testerDomain: o.testerDomain, target: this.#c.target.address, port: this.#c.spec.port,
          transport: this.#c.transport, mailFrom: mailFromSent, rcptTo: rcptSent[rcptSent.length - 1] ?? '',
        });
        if (t.trick.bodyVia === 'bdat' && client.hasCapability('CHUNKING')) {
          const r = await client.bdat(body, { last: true });
          replies.dot = replyInfo(r);
          this.#count(r);
        } else {
          const d = await client.data(body);
          if (d.phase === 'data') replies.data = replyInfo(d.reply);
          else replies.dot = replyInfo(d.reply);
          this.#count(d.reply);
        }
      }
      return { kind: 'ok', replies, mailFromSent, rcptSent };
    } catch (err) {
      if (!(err instanceof SmtpClientError)) throw err;
      this.#drop();
      return { kind: 'error', error: err, replies, mailFromSent, rcptSent };
    }
  }
}

async function pool<T>(jobs: readonly (() => Promise<T>)[], limit: number): Promise<T[]> {
  const out: T[] = new Array(jobs.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < jobs.length) {
      const i = next++;
      out[i] = await jobs[i]!();
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, jobs.length)) }, worker));
  return out;
}

function proofResult(p: PendingProof, arrivals: readonly ProbeArrival[], waitedMs: number): ProofResult {
  // A bounce trick's tag is the probe's sender: whatever comes back to it is a bounce.
  const probe = p.bounce ? undefined : arrivals.find((a) => !a.bounce);
  const bounces = p.bounce ? arrivals : arrivals.filter((a) => a.bounce);
  const returned = bounces.find((a) => a.payload);
  return {
    tag: p.tag,
    arrived: probe !== undefined,
    bounced: bounces.length > 0,
    bouncePayload: returned !== undefined,
    bounceFrom: (returned ?? bounces[0])?.peerAddress ?? null,
    waitedMs,
    latencyMs: probe ? Math.max(0, probe.at - p.sentAt) : null,
    deliveredBy: probe?.peerAddress ?? null,
    received: probe?.received ?? [],
    relaySawClient: probe?.relaySawClient ?? null,
    sentFrom: p.sentFrom,
  };
}

/** Tests one address on every port and transport; resolves with its verdicts (never throws for network trouble). */
export async function testTarget(target: ResolvedTarget, options: TesterOptions): Promise<TargetResult> {
  const started = performance.now();
  const startedAt = new Date().toISOString();
  // A releasable budget (core/abort.ts): AbortSignal.any() would pin each target's timeout signal for the budget.
  const budget = timeoutSignal(options.signal, options.budgetMs ?? 300_000, 'Target test');
  const signal = budget.signal;
  const tagger = options.tagger ?? createTagger();
  const timeouts = { ...DEFAULT_TESTER_TIMEOUTS, ...options.timeouts };
  const tricks = options.tricks ?? TRICKS;
  const safeRecipient = `relaytest-${tagger.runId.slice(0, 6)}`;
  const unknownLocal = `nosuchuser-${tagger.runId.slice(0, 6)}`;
  const units: { spec: PortSpec; transport: Transport; first: boolean }[] = [];
  for (const spec of options.ports) {
    const ts = transportsFor(spec.role, { ...(options.tlsOnly ? { tlsOnly: true } : {}), ...(options.noStartTls ? { noStartTls: true } : {}) });
    ts.forEach((transport, i) => units.push({ spec, transport, first: i === 0 }));
  }
  const outputs = await pool(units.map((u) => () => new UnitRunner({
    target, spec: u.spec, transport: u.transport, first: u.first, o: options, tricks, timeouts, signal, tagger, safeRecipient, unknownLocal,
  }).run()), options.parallel ?? 4).finally(() => budget.release());

  // Safe-mode catch-all marking per unit, then proof.
  const trickSets = outputs.map((out) => markAcceptAll(out.tricks.map((t, i) => ({ ...t, outcome: { verdict: t.verdict, reason: t.reason, detail: t.detail }, control: out.controls[i] ?? false }))));
  if (options.proof) {
    const all = outputs.flatMap((out) => out.pending);
    const waitMs = options.proof.waitMs ?? 30_000;
    const t0 = performance.now();
    const arrived = all.length > 0
      ? await options.proof.collector.waitFor(all.filter((p) => !p.bounce).map((p) => p.tag), waitMs, options.signal, { bounceTags: all.filter((p) => p.bounce).map((p) => p.tag) })
      : new Map<string, ProbeArrival[]>();
    const waited = Math.round(performance.now() - t0);
    outputs.forEach((out, u) => {
      for (const p of out.pending) {
        const set = trickSets[u]!;
        const item = set[p.trickIndex]!;
        const proof = proofResult(p, arrived.get(p.tag) ?? [], waited);
        const outcome = finalizeProof(item.outcome, { arrived: proof.arrived, bounced: proof.bounced, bouncePayload: proof.bouncePayload, waitedMs: waitMs }, item.kind);
        set[p.trickIndex] = { ...item, outcome, proof };
      }
    });
  }

  const ports: PortResult[] = options.ports.map((spec) => {
    const mine = units.map((u, i) => ({ u, out: outputs[i]!, tricks: trickSets[i]! })).filter((x) => x.u.spec === spec);
    const transports: TransportResult[] = mine.map(({ out, tricks: set }) => {
      const tricksOut: TrickResult[] = set.map(({ outcome, control: _c, ...t }) => ({ ...t, verdict: outcome.verdict, reason: outcome.reason, detail: outcome.detail }));
      const agg: Outcome = out.first ?? aggregate(tricksOut);
      const counts: Counts = out.first ? { OPEN: 0, CLOSED: 0, INCONCLUSIVE: 0, 'N/A': 0 } : aggregate(tricksOut).counts;
      const session: SessionFacts = { ...out.facts };
      return {
        transport: out.transport, verdict: agg.verdict, reason: agg.reason, detail: agg.detail, counts, session,
        connections: out.connections, durationMs: out.durationMs, tricks: tricksOut, control: out.control, transcripts: out.transcripts,
      };
    });
    const agg = aggregate(transports.filter((t) => t.verdict !== 'N/A').map((t) => ({ verdict: t.verdict, reason: t.reason, detail: `${t.transport}: ${t.detail}` })));
    const firstOut = mine.find((x) => x.u.first)?.out;
    const port: Omit<PortResult, 'findings'> = {
      port: spec.port, role: spec.role, verdict: agg.verdict, reason: agg.reason, detail: agg.detail, counts: sumCounts(transports.map((t) => t.counts)),
      transports, vrfy: firstOut?.vrfy ?? null, expn: firstOut?.expn ?? null, localDelivery: firstOut?.localDelivery ?? null,
    };
    const plainAuth = mine.find((x) => x.out.plainAuth !== null)?.out.plainAuth ?? null;
    return {
      ...port,
      findings: portFindings(port, {
        mailAccepted: mine.some((x) => x.out.mailAccepted), plainAuth, sourceAddress: options.sourceAddress ?? null,
        mailDomain: mine.map((x) => x.out.mailDomain).find((d) => d !== null) ?? null, mode: options.proof ? 'prove' : 'safe',
      }),
    };
  });
  const agg = aggregate(ports.map((p) => ({ verdict: p.verdict, reason: p.reason, detail: `port ${p.port}: ${p.detail}` })));
  const domains = outputs.map((o) => o.mailDomain).filter((d): d is MailDomain => d !== null);
  return {
    check: 'smtp', input: target.input, address: target.address, family: target.family, hostName: target.hostName, domain: target.domain, mx: target.mx,
    mailDomain: domains.find((d) => !d.source.startsWith('guessed')) ?? domains[0] ?? null,
    sourceAddress: options.sourceAddress ?? null,
    verdict: agg.verdict, reason: agg.reason, detail: agg.detail, counts: sumCounts(ports.map((p) => p.counts)),
    ports, findings: targetFindings(ports), startedAt, durationMs: Math.round(performance.now() - started),
  };
}

function sumCounts(list: readonly { OPEN: number; CLOSED: number; INCONCLUSIVE: number; 'N/A': number }[]): { OPEN: number; CLOSED: number; INCONCLUSIVE: number; 'N/A': number } {
  const c = { OPEN: 0, CLOSED: 0, INCONCLUSIVE: 0, 'N/A': 0 };
  for (const x of list) { c.OPEN += x.OPEN; c.CLOSED += x.CLOSED; c.INCONCLUSIVE += x.INCONCLUSIVE; c['N/A'] += x['N/A']; }
  return c;
}
