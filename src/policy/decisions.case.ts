/**
 * The contract of DecisionStore (decisions.ts), with the DecisionRecorder over it, as node:test tests registered
 * against any implementation: store/sqlite-decisions.test.ts and store/postgres-decisions.test.ts call decisionContract().
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NULL_LOGGER } from '../core/log.ts';
import { DecisionRecorder, decisionFromEvent, type DecisionStore, type NewDecision } from './decisions.ts';

export interface DecisionHarness {
  readonly name: string;
  /** An empty store. */
  fresh(): Promise<{ store: DecisionStore; dispose(): Promise<void> }>;
}

const T0 = 1_780_000_000_000;

function row(i: number, over: Partial<NewDecision> = {}): NewDecision {
  return {
    at: T0 + i * 1000, node: 'n1', sessionId: `s${i}`, clientIp: i % 2 === 0 ? '127.0.0.2' : '192.0.2.7', listener: 'mx', helo: 'h.example',
    user: null, mailFrom: `sender${i % 3}@example.org`, rcpt: `rcpt${i % 4}@example.net`,
    action: i % 5 === 0 ? 'local' : 'reject', rule: i % 5 === 0 ? 'local-domain' : 'default-deny',
    reason: `reason ${i}`, reply: i % 5 === 0 ? null : '554 5.7.1 Relay access denied', ...over,
  };
}

export function decisionContract(h: DecisionHarness): void {
  test(`decision store (${h.name}): append in batches, newest first, every filter, cursor paging`, async () => {
    const { store, dispose } = await h.fresh();
    try {
      const rows = Array.from({ length: 40 }, (_, i) => row(i));
      await store.append(rows.slice(0, 25));
      await store.append(rows.slice(25));
      await store.append([]);
      const all = await store.search({ limit: 100 });
      assert.equal(all.length, 40);
      assert.deepEqual(all.map((r) => r.sessionId), rows.map((r) => r.sessionId).reverse());
      assert.ok(all.every((r, i) => i === 0 || r.id < all[i - 1]!.id), 'ids strictly decrease');
      const { id, ...first } = all[0]!;
      assert.ok(id > 0);
      assert.deepEqual(first, rows[39]);

      const count = async (f: Omit<Parameters<DecisionStore['search']>[0], 'limit'>): Promise<number> => (await store.search({ ...f, limit: 1000 })).length;
      assert.equal(await count({ clientIp: '127.0.0.2' }), 20);
      assert.equal(await count({ clientIp: '127.0.0.9' }), 0);
      assert.equal(await count({ sender: 'SENDER1@example.org' }), rows.filter((r) => r.mailFrom === 'sender1@example.org').length);
      assert.equal(await count({ rcpt: 'rcpt2@EXAMPLE.net' }), 10);
      assert.equal(await count({ action: 'local' }), 8);
      assert.equal(await count({ rule: 'default-deny' }), 32);
      assert.equal(await count({ since: T0 + 10_000, until: T0 + 20_000 }), 10);
      assert.equal(await count({ clientIp: '127.0.0.2', action: 'reject', rcpt: 'rcpt2@example.net' }),
        rows.filter((r) => r.clientIp === '127.0.0.2' && r.action === 'reject' && r.rcpt === 'rcpt2@example.net').length);

      // Paging with the id cursor: pages of 7 cover everything once, newest first.
      const seen: number[] = [];
      let before: number | undefined;
      for (;;) {
        const page = await store.search({ limit: 7, ...(before !== undefined ? { before } : {}) });
        seen.push(...page.map((r) => r.id));
        if (page.length < 7) break;
        before = page.at(-1)!.id;
      }
      assert.deepEqual(seen, all.map((r) => r.id));
    } finally {
      await dispose();
    }
  });

  test(`decision store (${h.name}): retention by age and by row count keeps the newest`, async () => {
    const { store, dispose } = await h.fresh();
    try {
      await store.append(Array.from({ length: 30 }, (_, i) => row(i)));
      // Age: rows at or after T0+10 s survive a 20 s limit at T0+30 s.
      assert.equal(await store.prune({ maxAgeMs: 20_000, maxRows: 1000 }, T0 + 30_000), 10);
      assert.equal((await store.search({ limit: 100 })).length, 20);
      assert.equal(await store.prune({ maxAgeMs: 1e12, maxRows: 5 }, T0 + 30_000), 15);
      const left = await store.search({ limit: 100 });
      assert.deepEqual(left.map((r) => r.sessionId), ['s29', 's28', 's27', 's26', 's25']);
      assert.equal(await store.prune({ maxAgeMs: 1e12, maxRows: 5 }, T0 + 30_000), 0);
    } finally {
      await dispose();
    }
  });

  test(`decision recorder (${h.name}): batches rows (one append per batch), close flushes, stored rows come from log events`, async () => {
    const { store, dispose } = await h.fresh();
    const appends: number[] = [];
    const counting: DecisionStore = {
      append: async (rows) => { appends.push(rows.length); await store.append(rows); },
      search: (f) => store.search(f), prune: (r, n) => store.prune(r, n), close: async () => {},
    };
    try {
      const rec = new DecisionRecorder({ store: counting, logger: NULL_LOGGER, retention: { maxAgeMs: 1e12, maxRows: 1e9 }, flushMs: 50, batchRows: 100 });
      for (let i = 0; i < 250; i++) {
        const d = decisionFromEvent({
          session_id: `x${i}`, client_ip: '127.0.0.2', listener: 'mx', helo: 'stranger', user: null, mail_from: '<Someone@Example.ORG>',
          rcpt: '<Victim@Elsewhere.example>', rcpt_canonical: 'Victim@elsewhere.example', action: 'reject', rule: 'default-deny',
          reason: 'not trusted', reply: '554 5.7.1 <Victim@Elsewhere.example>: Relay access denied',
        }, 'n1', T0 + i);
        rec.record(d!);
      }
      await new Promise((r) => setTimeout(r, 400));
      assert.equal(rec.written, 250);
      assert.ok(appends.length <= 4 && appends.every((n) => n <= 100), `batches: ${appends.join(',')}`);
      rec.record(row(1000));
      await rec.close();
      assert.equal(rec.written, 251);
      const got = await store.search({ limit: 2 });
      assert.equal(got[0]!.sessionId, 's1000');
      assert.equal(got[1]!.mailFrom, 'someone@example.org');
      assert.equal(got[1]!.rcpt, 'victim@elsewhere.example');
      assert.equal(got[1]!.reply, '554 5.7.1 <Victim@Elsewhere.example>: Relay access denied');
      assert.equal(rec.dropped, 0);
    } finally {
      await dispose();
    }
  });
}
