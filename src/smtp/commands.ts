/**
 * The one command table: for every verb, the states it is legal in, whether it may run before TLS on a
 * listener that requires it, whether it must end a pipelined group (RFC 2920), and how errors count.
 * "Legal when?" is answered here and nowhere else.
 */

export type SmtpState = 'greeting' | 'ready' | 'mail' | 'rcpt';

export type Verb =
  | 'HELO' | 'EHLO' | 'MAIL' | 'RCPT' | 'DATA' | 'BDAT' | 'RSET' | 'NOOP' | 'QUIT'
  | 'VRFY' | 'EXPN' | 'HELP' | 'STARTTLS' | 'AUTH' | 'XCLIENT' | 'XFORWARD' | 'PROXY' | 'ETRN' | 'TURN';

export interface CommandSpec {
  /** States in which the command may run; elsewhere the engine answers with the state's 503. */
  readonly allowedIn: readonly SmtpState[];
  /** RFC 2920: the command must be the last of a pipelined group (nothing may follow before its reply). */
  readonly endsGroup: boolean;
  /** Whether the command takes an argument: 'none' (must not), 'required', 'optional'. */
  readonly argument: 'none' | 'required' | 'optional';
}

const ANY: readonly SmtpState[] = ['greeting', 'ready', 'mail', 'rcpt'];
const SESSION: readonly SmtpState[] = ['ready', 'mail', 'rcpt'];

export const COMMANDS: Readonly<Record<Verb, CommandSpec>> = {
  HELO: { allowedIn: ANY, endsGroup: true, argument: 'required' },
  EHLO: { allowedIn: ANY, endsGroup: true, argument: 'required' },
  MAIL: { allowedIn: ['ready'], endsGroup: false, argument: 'required' },
  RCPT: { allowedIn: ['mail', 'rcpt'], endsGroup: false, argument: 'required' },
  DATA: { allowedIn: ['rcpt'], endsGroup: true, argument: 'none' },
  BDAT: { allowedIn: ['rcpt'], endsGroup: false, argument: 'required' },
  RSET: { allowedIn: ANY, endsGroup: false, argument: 'none' },
  NOOP: { allowedIn: ANY, endsGroup: true, argument: 'optional' },
  QUIT: { allowedIn: ANY, endsGroup: true, argument: 'none' },
  VRFY: { allowedIn: ANY, endsGroup: true, argument: 'optional' },
  EXPN: { allowedIn: ANY, endsGroup: true, argument: 'optional' },
  HELP: { allowedIn: ANY, endsGroup: false, argument: 'optional' },
  STARTTLS: { allowedIn: ANY, endsGroup: true, argument: 'none' },
  AUTH: { allowedIn: SESSION, endsGroup: true, argument: 'required' },
  XCLIENT: { allowedIn: ANY, endsGroup: true, argument: 'optional' },
  XFORWARD: { allowedIn: ANY, endsGroup: true, argument: 'optional' },
  PROXY: { allowedIn: ANY, endsGroup: true, argument: 'optional' },
  ETRN: { allowedIn: ANY, endsGroup: true, argument: 'optional' },
  TURN: { allowedIn: ANY, endsGroup: true, argument: 'optional' },
};

/** Verbs that betray a client that is not speaking SMTP at all (HTTP through a proxy, a browser). */
export const FORBIDDEN_VERBS: ReadonlySet<string> = new Set(['GET', 'POST', 'PUT', 'HEAD', 'CONNECT', 'OPTIONS', 'DELETE', 'PATCH']);

export function isVerb(s: string): s is Verb {
  return Object.hasOwn(COMMANDS, s);
}

/** Splits "VERB rest" at the first space; the verb is upper-cased, the rest kept as sent. */
export function splitCommand(line: string): { verb: string; arg: string } {
  const sp = line.indexOf(' ');
  if (sp < 0) return { verb: line.toUpperCase(), arg: '' };
  return { verb: line.slice(0, sp).toUpperCase(), arg: line.slice(sp + 1) };
}

// ---------------------------------------------------------------------------------------------------------
// ESMTP parameters (RFC 5321 section 4.1.2 esmtp-param), DSN (RFC 3461) and SIZE (RFC 1870)

export type ParamResult =
  | { readonly ok: true; readonly params: Map<string, string | true> }
  | { readonly ok: false; readonly problem: 'syntax' | 'duplicate'; readonly param: string };

const KEYWORD = /^[A-Za-z0-9][A-Za-z0-9-]*$/;

/** Parses " KEY=VALUE KEY" after a path. Keys are upper-cased; values must be printable ASCII without "=" or SP. */
export function parseParams(rest: string): ParamResult {
  const params = new Map<string, string | true>();
  if (rest.length === 0) return { ok: true, params };
  if (rest[0] !== ' ') return { ok: false, problem: 'syntax', param: rest.slice(0, 40) };
  for (const token of rest.split(' ')) {
    if (token === '') continue; // tolerate double spaces
    const eq = token.indexOf('=');
    const key = (eq < 0 ? token : token.slice(0, eq));
    if (!KEYWORD.test(key)) return { ok: false, problem: 'syntax', param: token.slice(0, 40) };
    const upper = key.toUpperCase();
    if (params.has(upper)) return { ok: false, problem: 'duplicate', param: upper };
    if (eq < 0) { params.set(upper, true); continue; }
    const value = token.slice(eq + 1);
    // esmtp-value = 1*(%d33-60 / %d62-126); UTF-8 is allowed only with SMTPUTF8, checked by the caller per key.
    if (value.length === 0 || !/^[\x21-\x3c\x3e-\x7e\u0080-\uffff]+$/.test(value)) {
      return { ok: false, problem: 'syntax', param: token.slice(0, 40) };
    }
    params.set(upper, value);
  }
  return { ok: true, params };
}

/** RFC 3461 xtext: printable ASCII except "+" and "=", with "+XX" upper-case hex escapes. Returns the decoded text or null. */
export function decodeXtext(s: string): string | null {
  let out = '';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x2b) {
      const hex = s.slice(i + 1, i + 3);
      if (!/^[0-9A-F]{2}$/.test(hex)) return null;
      const v = parseInt(hex, 16);
      if (v < 0x20 || v === 0x7f) return null; // no control characters, even escaped
      out += String.fromCharCode(v);
      i += 2;
      continue;
    }
    if (c < 0x21 || c > 0x7e || c === 0x3d) return null;
    out += s[i];
  }
  return out;
}

/** RFC 1870 SIZE value: 1 to 20 decimal digits, nothing else (no "1e3", "0x10", "-1"). */
export function parseSize(value: string | true): bigint | null {
  if (value === true || !/^[0-9]{1,20}$/.test(value)) return null;
  return BigInt(value);
}

export type MailParamCheck =
  | { readonly ok: true; readonly size: bigint | null; readonly smtputf8: boolean }
  | { readonly ok: false; readonly code: number; readonly enhanced: string; readonly text: string };

/** Checks MAIL FROM parameters: SIZE, BODY, SMTPUTF8, RET, ENVID, AUTH. Anything else is 555. */
export function checkMailParams(params: ReadonlyMap<string, string | true>): MailParamCheck {
  let size: bigint | null = null;
  let smtputf8 = false;
  for (const [key, value] of params) {
    switch (key) {
      case 'SIZE':
        size = parseSize(value);
        if (size === null) return { ok: false, code: 501, enhanced: '5.5.4', text: 'Bad message size syntax' };
        break;
      case 'BODY':
        if (value === true || !/^(7BIT|8BITMIME)$/i.test(value)) return { ok: false, code: 501, enhanced: '5.5.4', text: 'Bad BODY keyword' };
        break;
      case 'SMTPUTF8':
        if (value !== true) return { ok: false, code: 501, enhanced: '5.5.4', text: 'Bad SMTPUTF8 syntax' };
        smtputf8 = true;
        break;
      case 'RET':
        if (value === true || !/^(FULL|HDRS)$/i.test(value)) return { ok: false, code: 501, enhanced: '5.5.4', text: 'Bad RET parameter syntax' };
        break;
      case 'ENVID': {
        const v = value === true ? null : decodeXtext(value);
        if (v === null || value === true || value.length > 100) return { ok: false, code: 501, enhanced: '5.5.4', text: 'Bad ENVID parameter syntax' };
        break;
      }
      case 'AUTH': {
        // RFC 4954 section 5: accepted and not trusted; must be xtext.
        if (value === true || (value !== '<>' && decodeXtext(value) === null)) return { ok: false, code: 501, enhanced: '5.5.4', text: 'Bad AUTH parameter syntax' };
        break;
      }
      default:
        return { ok: false, code: 555, enhanced: '5.5.4', text: `Unsupported option: ${key}` };
    }
  }
  return { ok: true, size, smtputf8 };
}

/** Checks RCPT TO parameters: NOTIFY and ORCPT (RFC 3461). Anything else is 555. */
export function checkRcptParams(params: ReadonlyMap<string, string | true>): { ok: true } | { ok: false; code: number; enhanced: string; text: string } {
  for (const [key, value] of params) {
    switch (key) {
      case 'NOTIFY': {
        if (value === true) return { ok: false, code: 501, enhanced: '5.5.4', text: 'Bad NOTIFY parameter syntax' };
        const parts = value.toUpperCase().split(',');
        const okParts = parts.every((p) => p === 'SUCCESS' || p === 'FAILURE' || p === 'DELAY' || p === 'NEVER');
        const never = parts.includes('NEVER');
        if (!okParts || (never && parts.length > 1) || new Set(parts).size !== parts.length) {
          return { ok: false, code: 501, enhanced: '5.5.4', text: 'Bad NOTIFY parameter syntax' };
        }
        break;
      }
      case 'ORCPT': {
        if (value === true) return { ok: false, code: 501, enhanced: '5.5.4', text: 'Bad ORCPT parameter syntax' };
        const semi = value.indexOf(';');
        const type = semi > 0 ? value.slice(0, semi) : '';
        const addr = semi > 0 ? decodeXtext(value.slice(semi + 1)) : null;
        if (!/^[A-Za-z0-9-]+$/.test(type) || addr === null || addr.length === 0 || value.length > 500) {
          return { ok: false, code: 501, enhanced: '5.5.4', text: 'Bad ORCPT parameter syntax' };
        }
        break;
      }
      default:
        return { ok: false, code: 555, enhanced: '5.5.4', text: `Unsupported option: ${key}` };
    }
  }
  return { ok: true };
}
