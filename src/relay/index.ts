/**
 * relay: the assembled receive path. Purpose: one function (assembleReceivePath) turns a Config into the listening
 * relay that `serve`, the tests and the benchmarks all run; the receive handler that ties the SMTP engine's hooks
 * to the relay policy, the abuse checks, the recipient tables and the queue; the abuse checks (DNSBL).
 * Trust: everything a client sends reaches the policy through here; nothing for a non-local domain is queued from
 * a client that is neither trusted nor authenticated. Standards: RFC 5321, RFC 3461 (RET), RFC 5782 (DNSBL).
 */
export { assembleReceivePath, databasePath, hostAddresses, type AssembleOptions, type ReceivePath, type ReloadSummary } from './assemble.ts';
export { createReceiveHandler, receivedHeader, type ReceiveDeps } from './receive-handler.ts';
export {
  createDnsblCheck, dnsblCheckFromConfig, trustedPredicate,
  type AbuseCheck, type DnsblCheck, type DnsblCheckOptions, type RecipientCheckRequest,
} from './abuse.ts';
