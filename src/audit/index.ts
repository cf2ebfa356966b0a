/**
 * Purpose: the self-audit (issue 12): is this relay closed, is it listed anywhere, is its configuration sound, and
 * what changed since the last audit. A pluggable list of checks (each returns Findings, finding.ts) run by one frame
 * (run.ts: per-check budgets, a failing or hanging check reported 'unreachable', exit codes), the trend (trend.ts),
 * the periodic job of serve (service.ts), the history port (history.ts) and the text report (report.ts).
 * Checks here: configuration lint (config-check.ts), open relay proved from outside (relay-check.ts; from a local
 * source address, or a remote relayguard's tester API: remote-vantage.ts), blocklists with
 * RFC 5782 health checks (blocklist-check.ts). The DNS/TLS check of the mail domains slots in as another AuditCheck.
 * Trust: connects to this server's own SMTP listeners from a local address (tester), asks DNS servers about this
 * server's addresses; starts a probe sink on the configured address while the relay check runs; with a remote vantage
 * point, sends an API token (read from its file) to the configured remote relayguard over http(s). Writes nothing
 * but the reports (through the history port).
 * Standards: RFC 5782 (DNSBL test points), RFC 5321 (the tester's probes).
 */
export type { CheckResult, Finding, Severity } from './finding.ts';
export { runAudit, runCheck, auditExitCode, isBad, worst, SEVERITY_RANK, type AuditCheck, type AuditReport, type CheckContext, type RunAuditOptions } from './run.ts';
export { compareReports, findingKey, mergeHistory, type AuditChange } from './trend.ts';
export { configCheck } from './config-check.ts';
export {
  relayCheck, relayFinding, outcomeOf, LocalVantage, chooseSourceAddress, chooseSourceAddress6, deliberateTrust, isPrivateNetwork, connectAddress, targetsOf, ERR_AUDIT_NO_VANTAGE,
  type RelayTarget, type Vantage, type VantageOutcome, type LocalVantageOptions, type RelayCheckOptions,
} from './relay-check.ts';
export { RemoteVantage, reportProblem, ERR_AUDIT_REMOTE, type RemoteVantageOptions } from './remote-vantage.ts';
export {
  blocklistCheck, auditAddresses, isPublicAddress, linkIn, type BlocklistZone, type BlocklistCheckOptions, type TestPointPolicy,
} from './blocklist-check.ts';
export { MemoryAuditHistory, type AuditHistory } from './history.ts';
export { AuditService, auditErrorCode, turnedBad, type AuditServiceOptions } from './service.ts';
export { renderAuditText } from './report.ts';
export { checkMailDomains, CHECK_NAME as MAIL_DOMAINS_CHECK, type MailDomainsInput, type AuditListener, type AuditDkimKey } from './mail-domains.ts';
export { mailDomainsInputFromConfig, type MailDomainsConfigOptions } from './mail-domains-config.ts';
