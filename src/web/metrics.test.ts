import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryLogger } from '../core/log.ts';
import { RelayMetrics, observingLogger } from './metrics.ts';
import { queueCounts } from '../queue/index.ts';

test('metrics: relay log events become node-labelled series; gauges are read at scrape time; the log is unchanged', async () => {
  const m = new RelayMetrics('mx-a', { processMetrics: false });
  const base = new MemoryLogger();
  const log = observingLogger(base, (msg, f) => m.observe(msg, f)).child({ component: 'x' });
  log.info('relay decision', { action: 'local', rule: 'local-domain' });
  log.warn('relay decision', { action: 'reject', rule: 'default-deny' });
  log.info('message accepted', { rcpts: 3, bytes: 2048, accept_ms: 3.5 });
  log.warn('auth failed', {});
  log.info('recipient delivered', { route: 'mx', delay_ms: 2500 });
  log.info('recipient deferred', { route: 'smarthost' });
  log.info('session closed', { listener: 'mx', commands: 6, replies_2xx: 5, replies_3xx: 1, replies_4xx: 0, replies_5xx: 1 });
  log.debug('dnsbl lookup', { zone: 'bl.example', result: 'listed', cached: false });
  log.debug('dnsbl lookup', { zone: 'bl.example', result: 'not-listed', cached: true });
  log.error('decisions dropped', { err_code: 'ERR_DECISIONS_WRITE', rows: 12 });
  m.setSources({
    connections: () => 7, queueCounts: async () => queueCounts([{ state: 'queued', messages: 2, oldest: 1000 }, { state: 'hold', messages: 1, oldest: 5000 }], 95_000),
    ordbDns: () => ({ answered: 10, nxdomain: 6, formerr: 1, refused: 0, dropped: 2 }),
  });
  const text = await m.text();
  for (const l of text.split('\n')) if (l !== '' && !l.startsWith('#')) assert.match(l, /node="mx-a"/, l);
  assert.match(text, /^relayguard_relay_decisions_total\{action="local",rule="local-domain",node="mx-a"\} 1$/m);
  assert.match(text, /^relayguard_relay_decisions_total\{action="reject",rule="default-deny",node="mx-a"\} 1$/m);
  assert.match(text, /^relayguard_messages_accepted_total\{node="mx-a"\} 1$/m);
  assert.match(text, /^relayguard_messages_accepted_recipients_total\{node="mx-a"\} 3$/m);
  assert.match(text, /^relayguard_smtp_auth_total\{result="failure",node="mx-a"\} 1$/m);
  assert.match(text, /^relayguard_delivery_attempts_total\{outcome="delivered",destination="mx",node="mx-a"\} 1$/m);
  assert.match(text, /^relayguard_delivery_attempts_total\{outcome="deferred",destination="smarthost",node="mx-a"\} 1$/m);
  assert.match(text, /^relayguard_delivery_latency_seconds_bucket\{le="1",node="mx-a"\} 0$/m);
  assert.match(text, /^relayguard_delivery_latency_seconds_bucket\{le="5",node="mx-a"\} 1$/m);
  assert.match(text, /^relayguard_messages_accepted_bytes_total\{node="mx-a"\} 2048$/m);
  assert.match(text, /^relayguard_accept_latency_seconds_bucket\{le="0.0025",node="mx-a"\} 0$/m);
  assert.match(text, /^relayguard_accept_latency_seconds_bucket\{le="0.005",node="mx-a"\} 1$/m);
  assert.match(text, /^relayguard_accept_latency_seconds_count\{node="mx-a"\} 1$/m);
  assert.match(text, /^relayguard_smtp_commands_total\{node="mx-a"\} 6$/m);
  assert.match(text, /^relayguard_smtp_replies_total\{class="2xx",node="mx-a"\} 5$/m);
  assert.match(text, /^relayguard_smtp_replies_total\{class="5xx",node="mx-a"\} 1$/m);
  assert.match(text, /^relayguard_dnsbl_lookups_total\{zone="bl.example",result="listed",node="mx-a"\} 1$/m);
  assert.match(text, /^relayguard_dnsbl_lookups_total\{zone="bl.example",result="not-listed",node="mx-a"\} 1$/m);
  assert.match(text, /^relayguard_ordb_dns_queries_total\{rcode="noerror",node="mx-a"\} 3$/m);
  assert.match(text, /^relayguard_ordb_dns_queries_total\{rcode="nxdomain",node="mx-a"\} 6$/m);
  assert.match(text, /^relayguard_ordb_dns_queries_total\{rcode="dropped",node="mx-a"\} 2$/m);
  assert.match(text, /^relayguard_smtp_sessions_total\{listener="mx",node="mx-a"\} 1$/m);
  assert.match(text, /^relayguard_smtp_connections\{node="mx-a"\} 7$/m);
  assert.match(text, /^relayguard_queue_messages\{state="hold",node="mx-a"\} 1$/m);
  assert.match(text, /^relayguard_queue_messages\{state="corrupt",node="mx-a"\} 0$/m);
  assert.match(text, /^relayguard_queue_oldest_age_seconds\{state="queued",node="mx-a"\} 94$/m);
  assert.match(text, /^relayguard_queue_oldest_age_seconds\{state="hold",node="mx-a"\} 90$/m);
  assert.match(text, /^relayguard_queue_oldest_age_seconds\{state="deferred",node="mx-a"\} 0$/m);
  assert.match(text, /^relayguard_decisions_dropped_total\{node="mx-a"\} 12$/m);
  assert.equal(base.records.length, 10);
  assert.deepEqual(base.records[2], { level: 'info', msg: 'message accepted', fields: { component: 'x', rcpts: 3, bytes: 2048, accept_ms: 3.5 } });
  const t = m.totals();
  assert.deepEqual({ ...t, refusedByRule: { ...t.refusedByRule } }, {
    received: 1, delivered: 1, deferred: 1, bounced: 0, sessions: 1, dnsblLookups: 2, refusedByRule: { 'default-deny': 1 },
  });
  assert.equal(m.connectionsNow(), 7);
  assert.deepEqual(m.ordbDnsNow(), { answered: 10, nxdomain: 6, formerr: 1, refused: 0, dropped: 2 });
});
