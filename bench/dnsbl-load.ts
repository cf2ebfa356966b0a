/**
 * A loopback DNS load generator for bench/dnsbl.ts when dnsperf is not installed: the dnsperf options the bench
 * uses and the dnsperf summary lines it parses.
 *
 *   node bench/dnsbl-load.ts -s 127.0.0.1 -p PORT -d QUERYFILE -l SECONDS -c CLIENTS -q OUTSTANDING -t TIMEOUT
 *
 * CLIENTS UDP sockets share OUTSTANDING queries in flight, looping over the query file ("NAME TYPE" lines); a
 * query unanswered after TIMEOUT seconds is lost and replaced. One Node thread: it saturates well below dnsperf,
 * so its figures are a floor for any server, not a measure of the fastest ones.
 */
import { createSocket, type Socket } from 'node:dgram';
import { readFileSync } from 'node:fs';
import dnsPacket from 'dns-packet';

const RCODES = ['NOERROR', 'FORMERR', 'SERVFAIL', 'NXDOMAIN', 'NOTIMP', 'REFUSED'];

function arg(flag: string, dflt: string): string {
  const i = process.argv.indexOf(flag);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : dflt;
}

const server = arg('-s', '127.0.0.1');
const port = Number(arg('-p', '53'));
const file = arg('-d', '');
const seconds = Number(arg('-l', '10'));
const clients = Math.max(1, Number(arg('-c', '1')));
const outstanding = Math.max(clients, Number(arg('-q', '100')));
const timeoutMs = Number(arg('-t', '5')) * 1000;

const queries: Buffer[] = readFileSync(file, 'utf8').split('\n').filter((l) => l.trim() !== '').map((l) => {
  const [name, type] = l.trim().split(/\s+/) as [string, string | undefined];
  return dnsPacket.encode({ type: 'query', id: 0, questions: [{ type: (type ?? 'A') as dnsPacket.RecordType, name, class: 'IN' }] });
});
if (queries.length === 0) throw new Error(`no queries in ${file}`);

let next = 0;
let sent = 0;
let completed = 0;
let lost = 0;
let latencySum = 0;
const rcodes = new Map<number, number>();
let sending = true;

interface Client {
  sock: Socket;
  /** id -> send time (ms), -1 when free. */
  sentAt: Float64Array;
  free: number[];
}

function send(c: Client): void {
  const id = c.free.pop();
  if (id === undefined) return;
  const q = Buffer.from(queries[next]!);
  next = (next + 1) % queries.length;
  q.writeUInt16BE(id, 0);
  c.sentAt[id] = performance.now();
  sent++;
  c.sock.send(q, port, server);
}

const list: Client[] = [];
for (let i = 0; i < clients; i++) {
  const share = Math.floor(outstanding / clients) + (i < outstanding % clients ? 1 : 0);
  const c: Client = { sock: createSocket('udp4'), sentAt: new Float64Array(65536).fill(-1), free: [] };
  for (let id = share - 1; id >= 0; id--) c.free.push(id);
  c.sock.on('message', (m) => {
    if (m.length < 12) return;
    const id = m.readUInt16BE(0);
    const t = c.sentAt[id]!;
    if (t < 0) return;
    c.sentAt[id] = -1;
    c.free.push(id);
    completed++;
    latencySum += performance.now() - t;
    const rc = m[3]! & 0xf;
    rcodes.set(rc, (rcodes.get(rc) ?? 0) + 1);
    if (sending) send(c);
  });
  list.push(c);
}

await Promise.all(list.map((c) => new Promise<void>((r) => c.sock.bind(0, r))));
const t0 = performance.now();
for (const c of list) while (c.free.length > 0) send(c);

const sweep = setInterval(() => {
  const now = performance.now();
  for (const c of list) {
    for (let id = 0; id < c.sentAt.length; id++) {
      const t = c.sentAt[id]!;
      if (t >= 0 && now - t > timeoutMs) {
        c.sentAt[id] = -1;
        c.free.push(id);
        lost++;
        if (sending) send(c);
      }
    }
  }
}, 100);

await new Promise((r) => setTimeout(r, seconds * 1000));
sending = false;
const runTime = (performance.now() - t0) / 1000;
const deadline = performance.now() + timeoutMs;
while (performance.now() < deadline && list.some((c) => c.sentAt.some((t) => t >= 0))) await new Promise((r) => setTimeout(r, 20));
clearInterval(sweep);
for (const c of list) {
  for (const t of c.sentAt) if (t >= 0) lost++;
  c.sock.close();
}

const pct = (n: number): string => `${((100 * n) / Math.max(1, sent)).toFixed(2)}%`;
const codes = [...rcodes.entries()].sort((a, b) => a[0] - b[0]).map(([k, n]) => `${RCODES[k] ?? `RCODE${k}`} ${n} (${((100 * n) / Math.max(1, completed)).toFixed(2)}%)`);
console.log('Statistics (bench/dnsbl-load.ts):\n');
console.log(`  Queries sent:         ${sent}`);
console.log(`  Queries completed:    ${completed} (${pct(completed)})`);
console.log(`  Queries lost:         ${lost} (${pct(lost)})`);
console.log('');
console.log(`  Response codes:       ${codes.join(', ')}`);
console.log(`  Run time (s):         ${runTime.toFixed(6)}`);
console.log(`  Queries per second:   ${(completed / runTime).toFixed(6)}`);
console.log('');
console.log(`  Average Latency (s):  ${(latencySum / Math.max(1, completed) / 1000).toFixed(6)}`);
