/**
 * The relay's receive path on the PostgreSQL queue (store.postgres), end to end over SMTP: a message gets its 250
 * only once it is in PostgreSQL (received_by = the node); with the database stopped the reply after DATA is
 * 451 4.3.0 (never a 250, never a 5xx); once it is back the next message is accepted again, without a restart.
 * (serve itself still refuses store.postgres, ERR_STORE_NOT_WIRED, until the directory is wired too: this test
 * assembles the receive path as serve does.)
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Client } from 'pg';
import { migrate } from '../../src/store/postgres-schema.ts';
import { startPostgres, type PostgresInstance } from '../../src/testing/postgres.ts';
import { bringUp, stopRestarted, takeDown } from '../../src/testing/postgres-outage.ts';
import { startRelay, type Harness } from '../../src/testing/relay-harness.ts';
import { p1, p2, queueIdOf } from './hostile-helpers.ts';

let pg: PostgresInstance;
let h: Harness;

before(async () => {
  pg = await startPostgres();
  const c = new Client(pg.url);
  await c.connect();
  await migrate(c);
  await c.end();
  h = await startRelay({ config: { node: 'mx-a', store: { postgres: { url: pg.url, poolSize: 4, leaseTime: '5s' } } } });
});

after(async () => {
  await h?.close();
  if (pg !== undefined) {
    await stopRestarted(pg);
    await pg.stop();
  }
});

async function send(subject: string): Promise<{ code: number; enhanced: string | null; text: string; queueId: string | null }> {
  const c = await p1(h.ports.mx);
  try {
    await p2(c);
    c.write(`Message-ID: <${subject}@client.test>\r\nSubject: ${subject}\r\n\r\nHello\r\n.\r\n`);
    const r = await c.readReply(15_000);
    return { code: r.code, enhanced: r.enhanced ?? null, text: r.text, queueId: r.code === 250 ? queueIdOf(r) : null };
  } finally {
    c.close();
  }
}

test('queue on PostgreSQL over SMTP: 250 once stored, 451 4.3.0 while the database is down, 250 again when it is back', async () => {
  const q = h.receive.queue;
  assert.equal(q.backend, 'postgres');
  const ok = await send('first');
  assert.equal(ok.code, 250, ok.text);
  const d = (await q.get(ok.queueId!))!;
  assert.equal(d.receivedBy, 'mx-a');
  assert.match((await q.readBody(ok.queueId!))!.toString('latin1'), /^Received: from client\.test[\s\S]*Subject: first\r\n\r\nHello\r\n$/);

  takeDown(pg);
  const down = await send('down');
  assert.equal(down.code, 451, down.text);
  assert.equal(down.enhanced, '4.3.0');
  assert.ok(h.logs.some((l) => l.msg === 'message not queued' && l.fields.err_code === 'ERR_QUEUE_WRITE'), 'logged with ERR_QUEUE_WRITE');

  await bringUp(pg);
  const again = await send('again'); // no restart: the pool dropped the connections the shutdown killed
  assert.equal(again.code, 250, again.text);
  const ids = (await q.list()).map((m) => m.queueId);
  assert.deepEqual(ids.sort(), [ok.queueId!, again.queueId!].sort());
});

test('two serve-level nodes on one PostgreSQL queue: every accepted message reaches the next hop exactly once', async () => {
  const { mkdtemp, rm } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const { parseConfig } = await import('../../src/config/load.ts');
  const { MemoryLogger } = await import('../../src/core/log.ts');
  const { startRelay: startServeRelay } = await import('../../src/cli/serve.ts');
  const { startFakeMta } = await import('../../src/testing/fake-mta.ts');
  const mta = await startFakeMta();
  const dirs: string[] = [];
  const nodes: Awaited<ReturnType<typeof startServeRelay>>[] = [];
  const logs: InstanceType<typeof MemoryLogger>[] = [];
  try {
    for (const name of ['node-a', 'node-b']) {
      const dataDir = await mkdtemp(join(tmpdir(), `relayguard-${name}-`));
      dirs.push(dataDir);
      const config = parseConfig({
        hostname: `${name}.local.test`,
        node: name,
        dataDir,
        store: { postgres: { url: pg.url, poolSize: 4, leaseTime: '3s' } },
        listeners: [{ name: 'mx', role: 'mx', address: '127.0.0.1', port: 0, tls: 'none' }],
        trustedNetworks: ['127.0.0.0/8'],
        localDomains: ['local.test'],
        dnsbl: { enabled: false },
        web: { enabled: false },
        delivery: { enabled: true, smartHost: `[127.0.0.1]:${mta.port}`, localTransport: { discard: true } },
      });
      const logger = new MemoryLogger();
      logs.push(logger);
      nodes.push(await startServeRelay(config, logger));
    }
    assert.ok(logs.every((l) => l.records.some((r) => r.msg === 'queue runner started' && r.fields.backend === 'postgres')));
    const total = 30;
    const sent: string[] = [];
    await Promise.all(Array.from({ length: total }, async (_, i) => {
      const node = nodes[i % 2]!;
      const c = await p1(node.listeners[0]!.port);
      try {
        await p2(c, 'a@client.test', `r${i}@remote.example`);
        c.write(`Message-ID: <two-${i}@client.test>\r\nSubject: ${i}\r\n\r\nHello\r\n.\r\n`);
        const r = await c.readReply(15_000);
        assert.equal(r.code, 250, r.text);
        sent.push(`<two-${i}@client.test>`);
      } finally {
        c.close();
      }
    }));
    const deadline = Date.now() + 30_000;
    const seen = (): string[] => mta.sessions.flatMap((s) => s.messages.map((m) => /Message-ID: (<[^>]+>)/i.exec(m.toString('latin1'))?.[1] ?? '?'));
    while (Date.now() < deadline && (seen().length < total || (await nodes[0]!.queue.list()).length > 0)) await new Promise((r) => setTimeout(r, 50));
    const got = seen();
    assert.equal(got.length, total, `delivered ${got.length} of ${total}`);
    assert.deepEqual([...new Set(got)].sort(), [...sent].sort(), 'each message once');
    assert.deepEqual(await nodes[1]!.queue.list(), []);
  } finally {
    for (const n of nodes) await n.close();
    await mta.close();
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  }
});
