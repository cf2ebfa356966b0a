/**
 * Purpose: the open-proxy battery (issue 13): probes (HTTP CONNECT/POST/GET, SOCKS4/4a/5, telnet/Wingate) against
 * every proxy port of an address, proof by arrival at the tester's own SMTP sink (proxy/sink.ts), pure verdicts
 * with reasons, and the result model (the `proxies` part of the tester's JSON, schema relayguard-tester/2).
 * Trust: a client of untrusted proxies; it asks them only for the sink's addresses and never sends a message.
 * Standards: RFC 9110/9112 (CONNECT, absolute-form), RFC 1928/1929 (SOCKS5), SOCKS4/4a, RFC 5321 (greeting, EHLO, QUIT).
 */
export { PROXY_PROBES, protocolOf, type ProxyProbe, type ProxyMethod, type ProxyProtocol, type DestinationKind } from './probes.ts';
export { ProxySink, type ProxyArrival, type ProxySinkOptions, type ProxySinkListen, type BoundListener } from './sink.ts';
export {
  testProxyTarget, DEFAULT_PROXY_PORTS, DEFAULT_PROXY_TIMEOUTS, type ProxyTesterOptions, type ProxyTimeouts, type ProbeAddresses, type ProxyTargetInput,
} from './runner.ts';
export { aggregateProxy, classifyProxyAttempt, PROXY_REASON_TEXT, type ProxyOutcome, type ProxyReason, type ProxyCounts } from './verdict.ts';
export type { ProxyTargetResult, ProxyPortResult, ProxyAttemptResult, ProxyFinding, ProxyProof, ProxySmtpExchange } from './result.ts';
