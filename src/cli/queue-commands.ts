/**
 * `relayguard queue list|show|flush|retry|hold|release|delete`: the mail queue from the command line (mailq,
 * postqueue and postsuper in one), on the queue the configuration names (store.postgres: the shared PostgreSQL
 * queue of every node; else the embedded SQLite queue in dataDir). Reads go through a read-only queue; changes
 * through an admin queue, which works next to a running `relayguard serve` (short transactions; the queue runners
 * see them at their next poll, within about a second). On PostgreSQL, list and show name the node holding each
 * message (delivering it, else the one that received it). Exit codes: 0 done, 1 some queue id was unknown or malformed, 2 usage.
 * Everything printed for people passes through printable(): addresses, replies and headers come from strangers
 * and must not drive the terminal.
 */
import type { Command } from 'commander';
import type { Config } from '../config/schema.ts';
import { RelayguardError } from '../core/errors.ts';
import { isQueueId } from '../core/queue-id.ts';
import type { AdminResult, AdminTarget, ListFilter, QueuedMessageSummary, QueuedRecipient } from '../queue/index.ts';
import { ShardedQueueAdmin, ShardedQueueReader, type ShardedDetail, type ShardedSummary } from './queue-shards.ts';

/** The queue module, loaded by the actions that need it (start-up time: other commands never load it). */
type QueueModule = typeof import('../queue/index.ts');
const loadQueue = (): Promise<QueueModule> => import('../queue/index.ts');

/**
 * The states `--state` takes, as the help text names them (queue/index.ts MESSAGE_STATES and RECIPIENT_STATES;
 * queue-commands.test.ts keeps them equal, so the help never needs the queue module loaded).
 */
export const STATE_HELP = {
  message: ['queued', 'hold', 'corrupt'],
  recipient: ['pending', 'deferred', 'delivered', 'bounced'],
} as const;

export interface QueueCommandIo {
  out(s: string): void;
  err(s: string): void;
}

export interface QueueCommandOptions {
  /** The time used for ages and --older-than (tests fix it). Default Date.now. */
  readonly now?: () => number;
}

interface CommonOpts {
  config?: string;
  json?: boolean;
}

interface FilterOpts {
  state?: string;
  sender?: string;
  domain?: string;
  olderThan?: string;
}

type ChangeAction = 'hold' | 'release' | 'retry' | 'delete';

const DONE: Record<ChangeAction, string> = {
  hold: 'placed on hold',
  release: 'released from hold',
  retry: 'scheduled for immediate delivery',
  delete: 'deleted',
};

const DESCRIBE: Record<ChangeAction, string> = {
  hold: 'put messages on hold: the relay keeps them and does not deliver them until released (like postsuper -h)',
  release: 'release held messages; they keep their retry schedule (like postsuper -H)',
  retry: 'try the open recipients of messages again now',
  delete: 'delete messages without a bounce, whatever their state (like postsuper -d)',
};

/** Adds the `queue` command and its subcommands to the program. */
export function registerQueueCommands(
  program: Command,
  io: QueueCommandIo,
  setExit: (code: number) => void,
  configFrom: (opts: { config?: string }) => Config,
  options: QueueCommandOptions = {},
): Command {
  const now = options.now ?? Date.now;
  const queue = program.command('queue').description('inspect and manage the mail queue');

  const withFilters = (cmd: Command): Command =>
    cmd
      .option('--state <state>', `only messages in this state: ${STATE_HELP.message.join(', ')}, or with a recipient in this state: ${STATE_HELP.recipient.join(', ')}`)
      .option('--sender <address>', 'only messages from this envelope sender ("<>" for the null sender)')
      .option('--domain <domain>', 'only messages with a recipient at this domain')
      .option('--older-than <age>', 'only messages queued at least this long ago: seconds, or a number with s, m, h or d');

  withFilters(
    queue
      .command('list')
      .description('list queued messages, oldest first, with the reason delivery is waiting (like mailq)')
      .option('-c, --config <file>', 'relayguard.yaml to use')
      .option('--json', 'one JSON object per message, one per line')
      .option('--limit <n>', 'at most n messages'),
  ).action(async (opts: CommonOpts & FilterOpts & { limit?: string }) => {
    const q = await loadQueue();
    const filter = { ...filterFrom(q, opts), ...(opts.limit !== undefined ? { limit: wholeNumber(opts.limit, '--limit') } : {}) };
    const store = await openReader(configFrom(opts), now);
    if (store === null) {
      if (!opts.json) io.out('Mail queue is empty');
      return;
    }
    try {
      const rows = await store.list(filter);
      const cluster = store.backend === 'postgres';
      if (opts.json) {
        for (const r of rows) io.out(JSON.stringify(r));
        return;
      }
      if (rows.length === 0) {
        io.out('Mail queue is empty');
        return;
      }
      const t = now();
      io.out(`Queue ID             Size  Age   State    ${cluster ? 'Node         ' : ''}Sender / Recipients`);
      for (const r of rows) {
        const node = cluster ? `${printable(r.node ?? '-').padEnd(12)} ` : '';
        // With several queue shards (workers), each entry names the one holding it.
        const shard = store.shardCount > 1 ? `  [shard ${r.shard}]` : '';
        io.out(`${r.queueId} ${String(r.size).padStart(7)} ${formatAge(t - r.receivedAt).padStart(5)} ${r.state.padEnd(8)} ${node}${printable(showSender(r.sender))}${shard}`);
        for (const line of recipientLines(r)) io.out(line);
      }
      io.out(`-- ${rows.length} message${rows.length === 1 ? '' : 's'}`);
    } finally {
      await store.close();
    }
  });

  queue
    .command('show')
    .description('show messages: envelope, per-recipient state, attempts, next attempt, last reply, and the headers')
    .argument('<queue-id...>', 'queue ids')
    .option('-c, --config <file>', 'relayguard.yaml to use')
    .option('--json', 'one JSON object per message, one per line')
    .option('--no-headers', 'leave out the message headers')
    .action(async (ids: string[], opts: CommonOpts & { headers: boolean }) => {
      const store = await openReader(configFrom(opts), now);
      try {
        let first = true;
        for (const raw of ids) {
          const id = raw.toUpperCase();
          const detail = isQueueId(id) && store !== null ? await store.get(id) : null;
          if (detail === null) {
            io.err(`relayguard: ${printable(raw)}: ${isQueueId(id) ? 'no such message in the queue' : 'not a queue id'}`);
            setExit(1);
            continue;
          }
          let headers: string | null = null;
          let headersError: string | null = null;
          let truncated = false;
          if (opts.headers) {
            try {
              const h = await store!.readHeaders(id);
              headers = h?.headers ?? null;
              truncated = h?.truncated ?? false;
            } catch (err) {
              headersError = (err as Error).message;
            }
          }
          if (opts.json) {
            io.out(JSON.stringify({ ...detail, ...(opts.headers ? { headers, headersTruncated: truncated, headersError } : {}) }));
            continue;
          }
          if (!first) io.out('');
          first = false;
          showDetail(io, detail, now(), store!.backend === 'postgres');
          if (opts.headers) {
            io.out('Headers:');
            if (headersError !== null) io.out(`  (body unreadable: ${printable(headersError)})`);
            for (const line of (headers ?? '').split(/\r?\n/)) if (line !== '') io.out(`  ${printable(line)}`);
            if (truncated) io.out('  (headers cut off)');
          }
        }
      } finally {
        await store?.close();
      }
    });

  queue
    .command('flush')
    .description('try every queued message that is waiting for its next attempt now (like postqueue -f)')
    .option('-c, --config <file>', 'relayguard.yaml to use')
    .option('--json', 'the result as JSON')
    .action(async (opts: CommonOpts) => {
      const store = await openAdmin(configFrom(opts), now);
      let result: AdminResult;
      try {
        result = store === null ? { changed: [], unchanged: [], missing: [] } : await store.flush();
      } finally {
        await store?.close();
      }
      if (opts.json) io.out(JSON.stringify({ action: 'flush', ...result }));
      else io.out(`${plural(result.changed.length)} scheduled for immediate delivery`);
    });

  for (const action of ['retry', 'hold', 'release', 'delete'] as const) {
    withFilters(
      queue
        .command(action)
        .description(DESCRIBE[action])
        .argument('[queue-id...]', 'queue ids')
        .option('-c, --config <file>', 'relayguard.yaml to use')
        .option('--all', 'every message, or every one the filters select')
        .option('--json', 'the result as JSON'),
    ).action(async (ids: string[], opts: CommonOpts & FilterOpts & { all?: boolean }) => {
      const q = await loadQueue();
      const filter = filterFrom(q, opts);
      const filtered = Object.keys(filter).length > 0;
      if (opts.all && ids.length > 0) throw usage(`give queue ids or --all, not both`);
      if (!opts.all && ids.length === 0) throw usage(`give queue ids, or --all (with filters to narrow it)`);
      if (!opts.all && filtered) throw usage(`--state, --sender, --domain and --older-than select messages only with --all`);
      const malformed = ids.filter((i) => !isQueueId(i.toUpperCase()));
      const target: AdminTarget = opts.all ? { filter } : { queueIds: ids.map((i) => i.toUpperCase()).filter(isQueueId) };
      const store = await openAdmin(configFrom(opts), now);
      let result: AdminResult;
      try {
        result = store === null
          ? { changed: [], unchanged: [], missing: 'queueIds' in target ? [...target.queueIds] : [] }
          : await store.change(action, target);
      } finally {
        await store?.close();
      }
      if (opts.json) {
        io.out(JSON.stringify({ action, ...result, ...(malformed.length > 0 ? { malformed } : {}) }));
      } else {
        if (!opts.all) for (const id of result.changed) io.out(`${id}: ${DONE[action]}`);
        for (const u of result.unchanged) io.out(`${u.queueId}: not changed: ${u.reason}`);
        io.out(`${plural(result.changed.length)} ${DONE[action]}`);
      }
      for (const id of malformed) io.err(`relayguard: ${printable(id)}: not a queue id`);
      for (const id of result.missing) io.err(`relayguard: ${id}: no such message in the queue`);
      if (malformed.length > 0 || result.missing.length > 0) setExit(1);
    });
  }
  return queue;
}

/** The configured queue for reading: every SQLite shard of dataDir as one queue, or the shared PostgreSQL queue;
 *  null when there is no embedded queue yet (nothing was ever queued). */
async function openReader(config: Config, now: () => number): Promise<ShardedQueueReader | null> {
  if (config.store.postgres === null) return ShardedQueueReader.open(await loadQueue(), config.dataDir, now, config.node);
  return ShardedQueueReader.shared(await openShared(config, now, 'read'));
}

async function openAdmin(config: Config, now: () => number): Promise<ShardedQueueAdmin | null> {
  if (config.store.postgres === null) return ShardedQueueAdmin.open(await loadQueue(), config.dataDir, now, config.node);
  return ShardedQueueAdmin.shared(await openShared(config, now, 'admin'));
}

async function openShared(config: Config, now: () => number, role: 'read' | 'admin'): Promise<import('../queue/index.ts').MailQueue> {
  const { openQueue } = await import('../store/index.ts');
  return openQueue({ dataDir: config.dataDir, postgres: config.store.postgres, node: config.node, role, clock: { now } });
}

function usage(message: string): RelayguardError {
  return new RelayguardError('ERR_USAGE', message);
}

function filterFrom(q: QueueModule, opts: FilterOpts): ListFilter {
  const f: { -readonly [K in keyof ListFilter]: ListFilter[K] } = {};
  if (opts.state !== undefined) {
    const states: readonly string[] = [...q.MESSAGE_STATES, ...q.RECIPIENT_STATES];
    if (!states.includes(opts.state)) throw usage(`--state takes one of ${states.join(', ')}; got "${opts.state}"`);
    f.state = opts.state;
  }
  if (opts.sender !== undefined) f.sender = opts.sender === '<>' ? '' : opts.sender.replace(/^<(.*)>$/, '$1');
  if (opts.domain !== undefined) f.recipientDomain = opts.domain.toLowerCase();
  if (opts.olderThan !== undefined) f.olderThanMs = parseAge(opts.olderThan);
  return f;
}

const UNITS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "3600" (seconds), "90s", "30m", "2h", "5d" -> milliseconds. */
export function parseAge(v: string): number {
  const m = /^([0-9]{1,9})([smhd]?)$/.exec(v.trim());
  if (m === null) throw usage(`--older-than takes seconds or a number with s, m, h or d (e.g. 30m, 2h, 5d); got "${v}"`);
  return Number(m[1]) * UNITS[m[2] || 's']!;
}

function wholeNumber(v: string, name: string): number {
  if (!/^[0-9]{1,12}$/.test(v)) throw usage(`${name} takes a whole number, got "${v}"`);
  return Number(v);
}

function plural(n: number): string {
  return `${n} message${n === 1 ? '' : 's'}`;
}

function showSender(s: string): string {
  return s === '' ? '<>' : s;
}

export function formatAge(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  if (s < 172800) return `${Math.round(s / 3600)}h`;
  return `${Math.round(s / 86400)}d`;
}

function when(t: number | null, now: number): string {
  if (t === null) return '-';
  const iso = new Date(t).toISOString().replace(/\.\d{3}Z$/, 'Z');
  return t >= now ? `${iso} (in ${formatAge(t - now)})` : `${iso} (${formatAge(now - t)} ago)`;
}

function params(p: Readonly<Record<string, string | true>>): string {
  return Object.entries(p).map(([k, v]) => (v === true ? k : `${k}=${v}`)).join(' ');
}

/**
 * Text safe for a terminal: C0 and C1 controls (ESC included), DEL and the bidirectional overrides become
 * visible escapes, so a hostile header or reply cannot move the cursor, recolour or reorder the screen.
 */
export function printable(s: string): string {
  return s.replace(/[\x00-\x08\x0a-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g, (c) => {
    const n = c.charCodeAt(0);
    return n <= 0xff ? `\\x${n.toString(16).padStart(2, '0')}` : `\\u${n.toString(16).padStart(4, '0')}`;
  });
}

const RECIPIENT_INDENT = ' '.repeat(45);

/**
 * The recipient lines under a `queue list` entry, like mailq: the recipients without a deferral reason first, then
 * each distinct reason once, in parentheses ("host said: reply" when a host gave it), followed by its recipients.
 */
export function recipientLines(r: QueuedMessageSummary): string[] {
  const deferred = new Set(r.deferred.flatMap((d) => d.recipients));
  const lines = r.recipients.filter((rc) => !deferred.has(rc)).map((rc) => `${RECIPIENT_INDENT}${printable(rc)}`);
  for (const d of r.deferred) {
    lines.push(`(${printable(d.remoteMta === null ? d.reason : `${d.remoteMta} said: ${d.reason}`)})`);
    for (const rc of d.recipients) lines.push(`${RECIPIENT_INDENT}${printable(rc)}`);
  }
  return lines;
}

/**
 * The `note:` under a recipient's `last:` line, or null when it would repeat it: a diagnostic the queue derived
 * from the reply itself, or an expiry note that ends with the same last error.
 */
function noteFor(r: QueuedRecipient): string | null {
  if (r.diagnostic === null || r.reply === null) return null; // without a reply, last: already is the diagnostic
  const last = r.lastReply ?? '';
  let note = r.diagnostic;
  const tail = `; last error: ${last}`;
  if (last !== '' && note.endsWith(tail)) note = note.slice(0, -tail.length);
  if (note === '' || last.includes(note)) return null;
  return note;
}

function showDetail(io: QueueCommandIo, d: ShardedDetail, now: number, cluster: boolean): void {
  const open = d.recipients.filter((r) => r.state === 'pending' || r.state === 'deferred').length;
  io.out(`Queue ID:    ${d.queueId}`);
  io.out(`State:       ${d.state}${d.stateReason ? ` (${printable(d.stateReason)})` : ''}`);
  io.out(`Received:    ${when(d.receivedAt, now)}`);
  io.out(`From:        ${printable(d.helo ?? '(no HELO)')} [${printable(d.clientIp)}] on ${printable(d.listener)}${d.authUser ? `, user ${printable(d.authUser)}` : ''}`);
  io.out(`Sender:      <${printable(d.sender)}>${Object.keys(d.mailParams).length > 0 ? ` ${printable(params(d.mailParams))}` : ''}`);
  io.out(`Size:        ${d.size} bytes`);
  io.out(`Message-ID:  ${d.messageId === null ? '-' : printable(d.messageId)}`);
  if (cluster) io.out(`Node:        received by ${printable(d.receivedBy ?? '-')}${d.deliveringNode === null ? '' : `, being delivered by ${printable(d.deliveringNode)}`}`);
  if (d.state === 'queued' && open > 0) io.out(`Next run:    ${when(d.nextRunAt, now)}`);
  if (d.delayWarnedAt !== null) io.out(`Delay warning sent ${when(d.delayWarnedAt, now)}`);
  io.out(`Recipients:  ${d.recipients.length} (${open} open)`);
  for (const r of d.recipients) {
    const extra = Object.keys(r.params).length > 0 ? ` ${printable(params(r.params))}` : '';
    io.out(`  <${printable(r.address)}>${extra}`);
    let line = `    ${r.state}, ${r.attempts} attempt${r.attempts === 1 ? '' : 's'}`;
    if (r.state === 'pending' || r.state === 'deferred') line += `, next ${when(r.nextAttemptAt, now)}`;
    else if (r.lastAttemptAt !== null) line += `, at ${when(r.lastAttemptAt, now)}`;
    if (r.dsnStatus !== null) line += `, status ${printable(r.dsnStatus)}`;
    io.out(line);
    if (r.lastReply !== null) io.out(`    last: ${printable(r.lastReply)}${r.remoteMta ? ` (${printable(r.remoteMta)})` : ''}`);
    const note = noteFor(r);
    if (note !== null) io.out(`    note: ${printable(note)}`);
  }
}
