/**
 * Proof-mode articles: the tagged test article (sent with POST or IHAVE to the one group the admin named) and the
 * cancel control article that withdraws it. The test article carries a Cancel-Lock (RFC 8315) whose key only the
 * tester knows, so servers that process only authenticated cancels ("docancels: require-auth", INN's default)
 * still accept the tester's cancel of its own article. 7-bit text, lines without line endings.
 *
 * Standards: RFC 5536 (Netnews article format), RFC 5537 (cancel control messages), RFC 8315 (Cancel-Lock).
 */
import { createHash, randomBytes } from 'node:crypto';

export interface TestArticleOptions {
  readonly tag: string;
  readonly group: string;
  /** The domain of From and Message-ID (the tester domain). */
  readonly domain: string;
  readonly target: string;
  readonly port: number;
  readonly path: 'POST' | 'IHAVE';
  readonly date?: Date;
}

export interface TestArticle {
  readonly messageId: string;
  readonly lines: readonly string[];
  /** The Cancel-Key header value that withdraws it ("sha256:..."). */
  readonly cancelKey: string;
}

/** RFC 5322 date "Thu, 03 Dec 2026 18:00:00 +0000". */
function rfcDate(d: Date): string {
  return d.toUTCString().replace('GMT', '+0000');
}

/** The body line the read-back looks for. */
export function articleMarker(tag: string): string {
  return `relayguard open-nntp test article ${tag}`;
}

/** Cancel-Lock and Cancel-Key (RFC 8315 section 4): c-key = base64(random); c-lock = base64(sha256(c-key)). */
export function cancelLockPair(): { lock: string; key: string } {
  const key = randomBytes(32).toString('base64');
  const lock = createHash('sha256').update(key, 'latin1').digest('base64');
  return { lock: `sha256:${lock}`, key: `sha256:${key}` };
}

export function buildTestArticle(o: TestArticleOptions): TestArticle {
  const messageId = `<${o.tag}@${o.domain}>`;
  const { lock, key } = cancelLockPair();
  const date = rfcDate(o.date ?? new Date());
  const lines = [
    ...(o.path === 'IHAVE' ? [`Path: relayguard-tester!not-for-mail`] : []),
    `From: relayguard open-NNTP tester <nntp-test@${o.domain}>`,
    `Newsgroups: ${o.group}`,
    `Subject: relayguard open-NNTP test ${o.tag} (please ignore)`,
    `Message-ID: ${messageId}`,
    `Date: ${date}`,
    ...(o.path === 'IHAVE' ? [`Injection-Date: ${date}`] : []),
    `Cancel-Lock: ${lock}`,
    `X-Relayguard-Test: ${o.tag}`,
    'Mime-Version: 1.0',
    'Content-Type: text/plain; charset=us-ascii',
    '',
    articleMarker(o.tag),
    '',
    `This article was sent with ${o.path} to ${o.target} port ${o.port} by the relayguard open-NNTP tester, without`,
    'AUTHINFO, at the request of the server\'s administrator, to find out whether the server accepts articles',
    'from strangers. The tester reads it back and then cancels it.',
  ];
  return { messageId, lines, cancelKey: key };
}

export interface CancelArticleOptions {
  readonly target: TestArticle;
  readonly group: string;
  readonly domain: string;
  readonly tag: string;
  readonly date?: Date;
}

/** The cancel control article (RFC 5537 section 5.3) for a test article, with its Cancel-Key. */
export function buildCancelArticle(o: CancelArticleOptions): { messageId: string; lines: readonly string[] } {
  const messageId = `<cancel.${o.tag}@${o.domain}>`;
  return {
    messageId,
    lines: [
      `From: relayguard open-NNTP tester <nntp-test@${o.domain}>`,
      `Newsgroups: ${o.group}`,
      `Subject: cmsg cancel ${o.target.messageId}`,
      `Control: cancel ${o.target.messageId}`,
      `Message-ID: ${messageId}`,
      `Date: ${rfcDate(o.date ?? new Date())}`,
      `Cancel-Key: ${o.target.cancelKey}`,
      '',
      `The relayguard open-NNTP tester withdraws its test article ${o.target.messageId}.`,
    ],
  };
}

/** A group name the tester may post to: RFC 3977 wildmat-free, printable, no whitespace or commas. */
export function isGroupName(s: string): boolean {
  return /^[a-z0-9+_-]+(\.[a-z0-9+_-]+)*$/i.test(s) && s.length <= 200;
}
