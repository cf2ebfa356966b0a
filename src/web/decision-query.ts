/**
 * The relay-decision queries of the web service, shared by the JSON API (server.ts: GET /api/decisions and
 * /api/decisions/why) and the decision log page (decisions-page.ts): the query schemas, the store filter they make,
 * the JSON shape of a decision and the "why was this refused?" answer, all from the DecisionStore's rows.
 */
import { isIP } from 'node:net';
import { z } from 'zod';
import { address as decisionAddress, type DecisionFilter, type DecisionRecord, type DecisionStore } from '../policy/decisions.ts';

/** A time: epoch milliseconds or an ISO 8601 date-time. */
const instant = z.string().max(40).refine((v) => toInstant(v) !== null, 'epoch milliseconds or an ISO 8601 date-time').transform((v) => toInstant(v)!);
function toInstant(v: string): number | null {
  if (/^\d{1,15}$/.test(v)) return Number(v);
  const t = Date.parse(v);
  return Number.isFinite(t) && /^\d{4}-\d{2}-\d{2}/.test(v) ? t : null;
}
export const decisionFields = {
  client: z.string().max(64).refine((v) => isIP(v) !== 0, 'an IP address').optional(),
  sender: z.string().max(322).optional(),
  rcpt: z.string().max(322).optional(),
};
export const decisionQuery = z.strictObject({
  ...decisionFields,
  action: z.enum(['reject', 'local', 'relay']).optional(),
  rule: z.string().max(64).optional(),
  since: instant.optional(),
  until: instant.optional(),
  before: z.coerce.number().int().min(1).optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
});
export const whyQuery = z.strictObject({ ...decisionFields, limit: z.coerce.number().int().min(1).max(50).default(5) })
  .refine((q) => q.client !== undefined || q.rcpt !== undefined || q.sender !== undefined, { message: 'name at least one of client, rcpt, sender', path: ['client'] });

export function decisionFilter(q: { client?: string | undefined; sender?: string | undefined; rcpt?: string | undefined; action?: string | undefined; rule?: string | undefined; since?: number | undefined; until?: number | undefined }): Omit<DecisionFilter, 'limit'> {
  return {
    ...(q.client !== undefined ? { clientIp: q.client } : {}),
    ...(q.sender !== undefined ? { sender: decisionAddress(q.sender) } : {}),
    ...(q.rcpt !== undefined ? { rcpt: decisionAddress(q.rcpt) } : {}),
    ...(q.action !== undefined ? { action: q.action } : {}),
    ...(q.rule !== undefined ? { rule: q.rule } : {}),
    ...(q.since !== undefined ? { since: q.since } : {}),
    ...(q.until !== undefined ? { until: q.until } : {}),
  };
}

export function decisionJson(d: DecisionRecord): Record<string, unknown> {
  return { ...d, time: new Date(d.at).toISOString() };
}

export function whyAnswer(latest: DecisionRecord | null, refusal: DecisionRecord | null): string {
  const refused = (d: DecisionRecord): string => `refused ${d.rcpt ? `<${d.rcpt}> ` : ''}from ${d.clientIp} at ${new Date(d.at).toISOString()} by rule "${d.rule}"${d.reason ? ` (${d.reason})` : ''}${d.reply ? `, reply "${d.reply}"` : ''}`;
  if (latest === null) return 'No relay decision recorded for this query (within the retention of web.decisionRetention).';
  if (latest.action === 'reject') return `The latest decision ${refused(latest)}.`;
  const accepted = `The latest decision accepted <${latest.rcpt}> from ${latest.clientIp} at ${new Date(latest.at).toISOString()} (${latest.action}, rule "${latest.rule}")`;
  return refusal === null ? `${accepted}; no refusal recorded.` : `${accepted}; before that, the last refusal: ${refused(refusal)}.`;
}

/** "Why was this refused?" for a client address, recipient and/or sender: the latest decision and the latest refusals. */
export async function explain(store: DecisionStore, q: z.infer<typeof whyQuery>): Promise<{ refused: boolean; answer: string; latest: DecisionRecord | null; refusals: DecisionRecord[] }> {
  const filter = decisionFilter(q);
  const [latest, refusals] = await Promise.all([
    store.search({ ...filter, limit: 1 }),
    store.search({ ...filter, action: 'reject', limit: q.limit }),
  ]);
  return { refused: latest[0]?.action === 'reject', answer: whyAnswer(latest[0] ?? null, refusals[0] ?? null), latest: latest[0] ?? null, refusals };
}
