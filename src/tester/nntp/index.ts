/**
 * Purpose: the open-Usenet (NNTP) check of the tester (`relayguard test --check nntp`): reader or transit server,
 * POST without AUTHINFO, the groups open to posting, IHAVE from strangers; proof mode posts one tagged article to a
 * group the admin names, reads it back, and cancels it.
 * Trust: a client of untrusted servers; connects only to the targets given. Safe mode never sends an article.
 * Standards: RFC 3977 (NNTP), RFC 4643 (AUTHINFO), RFC 4642 / 8143 (TLS), RFC 5536 / 5537 (articles, cancel), RFC 8315 (Cancel-Lock).
 */
export { checkNntpPort, serverKind, DEFAULT_NNTP_TIMEOUTS, type NntpCheckOptions, type NntpProofOptions, type NntpTimeouts } from './check.ts';
export { runNntp, checkNntpTarget, combineRun, parseNntpPortSpec, DEFAULT_NNTP_PORTS, type NntpRun, type NntpRunOptions, type CombineMeta } from './run.ts';
export { isGroupName, buildTestArticle, buildCancelArticle, cancelLockPair } from './article.ts';
export { NntpConnection, NntpError, type NntpResponse } from './client.ts';
export { renderNntpText, renderNntpJUnit } from './report.ts';
export type * from './result.ts';
