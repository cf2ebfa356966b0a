/**
 * The JSON answers of the built-in admin API routes (server.ts) as zod schemas: the OpenAPI document describes each
 * 200 answer with them, and the e2e tests validate the answers they record against that document, so a field that
 * changes shape or goes missing fails a test instead of a client.
 */
import { z } from 'zod';

const int = z.number().int();
const params = z.record(z.string(), z.union([z.string(), z.literal(true)]));
const messageState = z.enum(['queued', 'hold', 'corrupt']);

const deferredReason = z.object({ reason: z.string(), remoteMta: z.string().nullable(), recipients: z.array(z.string()) });

export const queueRow = z.object({
  queueId: z.string(), receivedAt: int, sender: z.string(), size: int, messageId: z.string().nullable(), state: messageState,
  recipients: z.array(z.string()), recipientsOpen: int, nextAttemptAt: int.nullable(), deferred: z.array(deferredReason),
  node: z.string().nullable(),
  /** With several SQLite shards (`workers` > 1): the shard holding the message. */
  shard: int.optional(),
});

export const queueList = z.object({ node: z.string(), offset: int, limit: int, more: z.boolean(), next: z.string().nullable(), messages: z.array(queueRow) });

const reply = z.object({ code: int, enhanced: z.string().optional(), text: z.union([z.string(), z.array(z.string())]) });

const queueRecipient = z.object({
  index: int, address: z.string(), params, state: z.enum(['pending', 'deferred', 'delivered', 'bounced']), attempts: int,
  nextAttemptAt: int.nullable(), lastAttemptAt: int.nullable(), lastReply: z.string().nullable(), reply: reply.nullable(),
  dsnStatus: z.string().nullable(), remoteMta: z.string().nullable(), diagnostic: z.string().nullable(), notifiedAt: int.nullable(),
});

export const queueMessage = z.object({
  queueId: z.string(), receivedAt: int, sender: z.string(), size: int, bodyPath: z.string(), bodyInline: z.boolean(),
  messageId: z.string().nullable(), clientIp: z.string(), helo: z.string().nullable(), authUser: z.string().nullable(), listener: z.string(),
  mailParams: params, state: messageState, stateReason: z.string().nullable(), updatedAt: int, nextRunAt: int.nullable(),
  delayWarnedAt: int.nullable(), recipients: z.array(queueRecipient),
  node: z.string().nullable(), receivedBy: z.string().nullable(), deliveringNode: z.string().nullable(), shard: int.optional(),
});

export const adminResult = z.object({
  changed: z.array(z.string()),
  unchanged: z.array(z.object({ queueId: z.string(), state: messageState, reason: z.string() })),
  missing: z.array(z.string()),
});

const stateCount = z.object({ messages: int, oldestReceivedAt: int.nullable(), oldestAgeMs: int.nullable() });

export const queueSummary = z.object({
  node: z.string(),
  /** Messages by state. */
  counts: z.record(z.string(), int),
  /** Messages by state with the oldest of each. */
  states: z.object({ queued: stateCount, deferred: stateCount, hold: stateCount, corrupt: stateCount }),
});

export const decision = z.object({
  id: int, at: int, time: z.string(), node: z.string(), sessionId: z.string().nullable(), clientIp: z.string(), listener: z.string().nullable(),
  helo: z.string().nullable(), user: z.string().nullable(), mailFrom: z.string().nullable(), rcpt: z.string(),
  action: z.string(), rule: z.string(), reason: z.string().nullable(), reply: z.string().nullable(),
});

export const decisionList = z.object({ node: z.string(), decisions: z.array(decision), next: int.nullable() });

export const whyAnswer = z.object({
  node: z.string(), refused: z.boolean(), answer: z.string(), latest: decision.nullable(), refusals: z.array(decision),
});

export const auditList = z.object({
  entries: z.array(z.object({
    id: int, at: int, actor: z.string(), action: z.string(), target: z.string().nullable(), detail: z.string().nullable(), clientIp: z.string().nullable(),
  })),
});

export const me = z.object({ admin: z.string(), actor: z.string(), csrfToken: z.string().nullable(), node: z.string() });

export const routeList = z.object({
  routes: z.array(z.object({ method: z.string(), url: z.string(), public: z.boolean(), page: z.boolean() })),
});

export const openApi = z.looseObject({ openapi: z.string(), info: z.looseObject({}), paths: z.record(z.string(), z.unknown()) });
