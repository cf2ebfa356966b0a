/**
 * Purpose: the open-relay tester. A data table of relay and bounce-relay tricks (probes.ts), a session driver (runner.ts) that
 * runs them on 25/587/465 over plain SMTP, after STARTTLS and over implicit TLS, pure verdicts (verdict.ts,
 * findings.ts), a proof-of-relay sink (sink.ts), renderers (report.ts: text, JSON, JUnit) and a bulk scanner
 * (scan.ts); and the open-proxy battery (proxy/: HTTP CONNECT/POST/GET, SOCKS4/4a/5, telnet gateways, proved by
 * arrival at its own SMTP sink).
 * Trust: a client of untrusted servers; it connects only to the targets given (and, in scan mode, only inside
 * the ranges the user names, never to opted-out addresses). Safe mode never sends DATA; proof mode sends one
 * tagged probe per accepted trick, addressed to the user's own probe domain. The sink listens for the relays'
 * deliveries and stores nothing on disk.
 * Standards: RFC 5321 (paths, address literals incl. [IPv6:...], RSET, HELO fallback), RFC 3207 (STARTTLS),
 * RFC 8314 (implicit TLS), RFC 6409 (submission), RFC 4954 (AUTH), RFC 2920, 3030, 3461, 6531 (extra tricks).
 */
export { TRICKS, CONTROL_RECIPIENTS, controlRecipients, renderTrick, selectTricks, addressLiteral, type Trick, type TrickKind, type ProbeContext } from './probes.ts';
export {
  aggregate, classifyAttempt, classifyError, classifyReply, clientBlockEvidence, exitCodeFor, requireControl, REASON_TEXT,
  type ControlCheck, type Outcome, type Reason, type ReplyContext, type ReplyInfo, type Verdict,
} from './verdict.ts';
export { REMEDIATION, openRelayRemediation } from './findings.ts';
export { testTarget, DEFAULT_TESTER_TIMEOUTS, type TesterOptions, type TesterTimeouts, type ProofOptions, type TrickProgress } from './runner.ts';
export { runTester, runExitCode, validateChecks, TESTER_VERSION, type RunOptions } from './run.ts';
export {
  DEFAULT_PORTS, isHostName, parsePortSpec, parseIpTarget, resolveTarget, transportsFor, SYSTEM_RESOLVER,
  type PortRole, type PortSpec, type ResolvedTarget, type TargetResolver, type Transport,
} from './target.ts';
export { ProbeSink, type ProbeArrival, type ProofCollector, type SinkOptions, type WaitOptions } from './sink.ts';
export { renderJson, renderJUnit, renderText, type TextOptions } from './report.ts';
export { SCHEMA, CHECKS, type Check, type RunResult, type TargetResult, type PortResult, type TransportResult, type TrickResult, type Finding, type MailDomain } from './result.ts';
export {
  doneFromOutput, expandRange, inRanges, isRangeEntry, parseList, parseRange, renderProgress, runScan,
  checkTargets, parseRanges, previousFromOutput, renderProgressLine, scanExitCode, MAX_SCAN_TARGETS,
  type IpRange, type ScanLine, type ScanOptions, type ScanProgress, type PreviousStatus,
} from './scan.ts';
export {
  ProxySink, testProxyTarget, DEFAULT_PROXY_PORTS, DEFAULT_PROXY_TIMEOUTS, PROXY_PROBES, PROXY_REASON_TEXT, aggregateProxy,
  type ProxyArrival, type ProxySinkListen, type ProxyTesterOptions, type ProxyTimeouts, type ProbeAddresses, type ProxyProbe,
  type ProxyTargetResult, type ProxyPortResult, type ProxyAttemptResult, type ProxyReason,
} from './proxy/index.ts';
