/**
 * Dashboard login sessions: an opaque random id in an HttpOnly, SameSite=Strict cookie (Secure over TLS), mapped in
 * this process's memory to the admin, a CSRF token and an expiry. Kept in memory on purpose: the web service runs
 * in one process per node (worker 0), and a restart only means logging in again. Each request made with the
 * cookie compares the admin's password hash with the one at login (one indexed read), so `relayguard admin passwd`
 * or `admin remove`, made from any process or node, ends the admin's sessions at once. The CSRF token is per session
 * and must come back with every state-changing request made with the cookie (form field `_csrf` or header
 * `X-CSRF-Token`); requests authenticated with a bearer token carry no ambient credential and need none.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';

export const SESSION_COOKIE = 'rg_session';
/** The login form's own CSRF token (double submit: cookie and form field must match; no session exists yet). */
export const LOGIN_CSRF_COOKIE = 'rg_login_csrf';

export interface WebSession {
  readonly id: string;
  readonly admin: string;
  readonly csrf: string;
  readonly expiresAt: number;
  /** The admin's password hash at login: a session ends when it changes (passwd) or is gone (admin removed). */
  readonly stamp: string;
}

export class SessionStore {
  readonly #sessions = new Map<string, WebSession>();
  readonly #lifetimeMs: number;
  readonly #now: () => number;
  /** Most sessions kept; the oldest goes first. */
  readonly #max: number;

  constructor(options: { lifetimeMs: number; now?: () => number; max?: number }) {
    this.#lifetimeMs = options.lifetimeMs;
    this.#now = options.now ?? Date.now;
    this.#max = options.max ?? 10_000;
  }

  create(admin: string, stamp: string): WebSession {
    const s: WebSession = { id: randomToken(), admin, csrf: randomToken(), expiresAt: this.#now() + this.#lifetimeMs, stamp };
    this.#sessions.set(s.id, s);
    if (this.#sessions.size > this.#max) this.#sessions.delete(this.#sessions.keys().next().value!);
    return s;
  }

  get(id: string | undefined): WebSession | null {
    if (id === undefined || id.length > 100) return null;
    const s = this.#sessions.get(id);
    if (s === undefined) return null;
    if (s.expiresAt <= this.#now()) {
      this.#sessions.delete(id);
      return null;
    }
    return s;
  }

  delete(id: string): void {
    this.#sessions.delete(id);
  }

  get lifetimeMs(): number { return this.#lifetimeMs; }
}

export function randomToken(): string {
  return randomBytes(32).toString('base64url');
}

/** Constant-time comparison of two tokens (false for a missing one). */
export function sameToken(a: string | undefined, b: string | undefined): boolean {
  if (typeof a !== 'string' || typeof b !== 'string' || a.length === 0) return false;
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}
