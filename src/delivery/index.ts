/**
 * Delivery: routing, MX resolution, outbound SMTP/LMTP sessions, local Maildir delivery, TLS policy (MTA-STS,
 * DANE), DSN bounces and DKIM signing. The queue runner sees only Deliverer and Bouncer (src/queue/deliverer.ts).
 */
export { SmtpDeliverer, type DelivererOptions } from './deliverer.ts';
export { Router, domainOf, type Route, type RoutingConfig, type LocalTransportConfig, type SmartHostConfig, type SmtpAuthConfig, type TlsMode } from './routing.ts';
export { resolveNextHops, type MxResolver, type MxOptions, type MxResult, type NextHop, type SelfEndpoint } from './mx.ts';
export { deliverToHops, type HopTarget, type HopTlsPolicy, type OutboundMessage, type OutboundOptions } from './outbound.ts';
export { ConnectionCache, type ConnectionCacheOptions } from './connection-cache.ts';
export { deliverToMaildir, deliverLocalMaildir, maildirPath, type MaildirOptions } from './local-transport.ts';
export {
  StaticTlsPolicy, TlsPolicy, MtaSts, parseMtaStsPolicy, mxMatches, parseStsTxt, daneMatches, daneCheck, usableTlsa,
  type TlsPolicySource, type TlsPolicyDecision, type DomainTlsMode, type StaticTlsPolicyOptions, type TlsPolicyOptions,
  type MtaStsOptions, type MtaStsPolicy, type MtaStsResolver, type DaneResolver, type TlsaRecordLike,
} from './tls-policy.ts';
export { DsnBouncer, type BouncerOptions, type BounceEnvelope } from './bounce.ts';
export type { DkimSigner } from './dkim.ts';
export { MailauthDkimSigner, generateDkimKey, writeDkimKey, fromHeaderDomain, type DkimKey, type DkimSignerOptions, type GeneratedDkimKey } from './dkim.ts';
