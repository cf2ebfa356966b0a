/**
 * Errors with stable codes a user can search for (ERR_SMTP_..., ERR_QUEUE_..., ERR_CONFIG_...), and the one
 * mapper from any error to an SMTP reply at the protocol boundary.
 */
import type { Reply } from './reply.ts';

export class RelayguardError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'RelayguardError';
    this.code = code;
  }
}

/** An error that carries the SMTP reply the client should see. Temporary iff the code is 4xx. */
export class SmtpReplyError extends RelayguardError {
  readonly reply: Reply;
  constructor(reply: Reply, options?: { cause?: unknown; code?: string }) {
    const text = typeof reply.text === 'string' ? reply.text : reply.text.join(' ');
    super(options?.code ?? 'ERR_SMTP_REPLY', `${reply.code} ${text}`, options);
    this.name = 'SmtpReplyError';
    this.reply = reply;
  }
  get temporary(): boolean {
    return this.reply.code >= 400 && this.reply.code < 500;
  }
}

/** Maps an error to the reply a client sees. Client-visible text stays generic: no paths, hosts or config. */
export function toReply(err: unknown): Reply {
  if (err instanceof SmtpReplyError) return err.reply;
  const code = (err as { code?: unknown } | null)?.code;
  if (code === 'ENOSPC' || code === 'EDQUOT') return { code: 452, enhanced: '4.3.1', text: 'Insufficient system storage' };
  if (code === 'ETIMEDOUT' || code === 'ABORT_ERR' || (err as Error | null)?.name === 'AbortError') {
    return { code: 451, enhanced: '4.4.5', text: 'Error: timeout while processing' };
  }
  return { code: 451, enhanced: '4.3.0', text: 'Error: internal error, try again later' };
}

/** The stable code of an error, for logs. */
export function errorCode(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : 'ERR_INTERNAL';
}
