/**
 * web: the HTTP face of a node. Purpose: the admin dashboard and JSON API (queue, audit, users and domains; OpenAPI 3.1 at
 * /api/openapi.json), Prometheus /metrics, and /health for load balancers, on an admin listener and an optional
 * public one. Trust: the admin surface is behind a login (session cookie + CSRF token, or a bearer API token) with
 * a per-address login throttle; every change is audited. It reads and changes the relay only through ports handed
 * in by the CLI (queue, admin store, health checks) and never speaks SMTP; the web tester (tester.ts) runs the
 * tester it is handed, only against addresses its SSRF guard (target-guard.ts) lets through.
 * Standards: RFC 9110 (HTTP semantics), RFC 6265 (cookies), OpenAPI 3.1, Prometheus text exposition 0.0.4.
 */
export { startWeb, WebError, allowedMethods, type QueueAccess, type RouteInfo, type RunningWeb, type WebOptions } from './server.ts';
export { RelayMetrics, observingLogger, type MetricSources, type OrdbDnsCounts, type OverviewTotals } from './metrics.ts';
export { overviewModule, type OverviewOptions } from './overview.ts';
export { OverviewSeries, type OverviewData } from './series.ts';
export { esc, html } from './html.ts';
export type { ApiRoute, Auth, NavEntry, PageRoute, PublicRoute, RouteInput, WebAsset, WebContext, WebModule } from './module.ts';
export { Markup, publicPage } from './html.ts';
export { testerModule, type PreparedRun, type RunHooks, type TesterEngine, type TesterModuleOptions, type TesterRequest } from './tester.ts';
