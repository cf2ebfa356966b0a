/**
 * How a part of relayguard adds itself to the web service: a WebModule hands startWeb (server.ts) its JSON API
 * routes (authenticated, CSRF-checked on writes, validated by zod, described in the OpenAPI document), its admin
 * pages (authenticated HTML, linked from the navigation) and its public routes (no login: served on the public
 * listener when one is configured, and on the admin listener too, so the ORDB pages work on a single listener).
 *
 * A module is composed by the CLI (src/cli/web-service.ts) from the running relay's parts; the web service knows
 * nothing of the stores behind it. Each module lives in its own file (src/web/<name>.ts) with its own tests.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { z } from 'zod';
import type { Logger } from '../core/log.ts';
import type { Markup } from './html.ts';
import type { RelayMetrics } from './metrics.ts';

/** Who made an authenticated request. `session` is null for a bearer token. */
export interface Auth {
  readonly admin: string;
  /** As written to the audit log: "alice" or "alice (token ci)". */
  readonly actor: string;
  readonly session: { readonly id: string; readonly admin: string; readonly csrf: string } | null;
}

export interface RouteInput<P = any, Q = any, B = any> {
  readonly params: P;
  readonly query: Q;
  readonly body: B;
  readonly auth: Auth;
  readonly request: FastifyRequest;
  readonly reply: FastifyReply;
}

/** A JSON API route on the admin listener: the handler's return value is sent as JSON (200). */
export interface ApiRoute {
  readonly method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  readonly url: string;
  readonly summary: string;
  readonly params?: z.ZodObject;
  readonly query?: z.ZodType;
  readonly body?: z.ZodType;
  /**
   * The 200 answer's JSON (described in the OpenAPI document; the e2e tests validate recorded answers against it).
   * Absent: described as any JSON object.
   */
  readonly response?: z.ZodType;
  /** What the 200 answer is (text/event-stream for a Server-Sent Events route); default application/json. */
  readonly produces?: string;
  /**
   * The handler answers itself (e.g. Server-Sent Events: reply.hijack() and write to reply.raw); its return value
   * is then ignored.
   */
  readonly raw?: boolean;
  handler(input: RouteInput): Promise<unknown>;
}

/**
 * An admin page (HTML, login required): GET renders; POST is a form action (CSRF token in the `_csrf` field) that
 * answers with a redirect (303) to the page that shows its result.
 */
export interface PageRoute {
  readonly method: 'GET' | 'POST';
  readonly url: string;
  readonly params?: z.ZodObject;
  readonly query?: z.ZodType;
  readonly body?: z.ZodType;
  handler(input: RouteInput): Promise<Markup | { readonly redirect: string }>;
}

/** A route with no login (public ORDB pages and their JSON): the handler answers through `reply`. */
export interface PublicRoute {
  readonly method: 'GET' | 'POST';
  readonly url: string;
  readonly summary: string;
  handler(request: FastifyRequest, reply: FastifyReply): Promise<unknown>;
}

export interface WebAsset {
  /** Under /assets/, e.g. "tester.js". */
  readonly name: string;
  readonly type: string;
  readonly body: string | Buffer;
}

/** What the web service gives a module. */
export interface WebContext {
  readonly node: string;
  readonly logger: Logger;
  readonly metrics: RelayMetrics;
  now(): number;
  /** Records an admin action (who, what, when, from where) in the audit log; call it before answering. */
  audit(auth: Auth, request: FastifyRequest, action: string, target: string | null, detail: unknown): Promise<void>;
  /** A full admin page with the navigation around `body`. */
  page(title: string, body: Markup, auth: Auth): string;
  /** A full public page (no navigation, no login state). */
  publicPage(title: string, body: Markup): string;
}

/** A navigation entry of the admin pages. */
export interface NavEntry {
  readonly href: string;
  readonly label: string;
}

export interface WebModule {
  readonly name: string;
  /** Links in the admin navigation. */
  readonly nav?: readonly NavEntry[];
  api?(ctx: WebContext): readonly ApiRoute[];
  pages?(ctx: WebContext): readonly PageRoute[];
  publicRoutes?(ctx: WebContext): readonly PublicRoute[];
  /**
   * Static assets served without login under /assets/ (plain ES modules, CSS, a vendored chart library): the
   * Content-Security-Policy allows script only from 'self', never inline.
   */
  assets?(): readonly WebAsset[];
  /**
   * Called first when the web service stops, before its listeners close: end long-lived responses (Server-Sent
   * Events streams, which would otherwise hold the listener open) and cancel background work.
   */
  stop?(): Promise<void>;
  /** Called when the web service stops, after its listeners closed. */
  close?(): Promise<void>;
}
