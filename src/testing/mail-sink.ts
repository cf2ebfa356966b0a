/**
 * A loopback SMTP sink for the cluster fault tests and bench:cluster: it accepts every transaction, records each
 * message it took (its Message-ID, which sink took it, when the transaction started and when the 250 to the final
 * dot went out on a live session: a message whose client vanished before that reply is not taken, as a real MTA
 * discards it), and can be slowed down (delayMs before the reply to the final dot, changeable while it runs)
 * so that deliveries are in flight when a test kills a node. One sink per relayguard node (each node's smartHost
 * points at its own sink) tells which node delivered each copy.
 *
 * It also knows which transactions were open at a given moment (openAt): begun (MAIL) and either not finished or
 * finished but not followed by anything else on a session that was still open then; that is the most a node that
 * dies at that moment can have delivered without recording it (the at-least-once window).
 *
 * Minimal SMTP: 220, EHLO/HELO (PIPELINING, 8BITMIME, SIZE), MAIL, RCPT, DATA, RSET, NOOP, QUIT; lines end in LF.
 */
import * as net from 'node:net';

export interface SinkMessage {
  readonly sink: string;
  readonly messageId: string;
  /** When MAIL FROM arrived (ms since the epoch). */
  readonly startedAt: number;
  /** When the 250 to the final dot was sent (the message was taken). */
  readonly receivedAt: number;
  readonly session: number;
}

export interface SinkTransaction {
  readonly session: number;
  /** When MAIL FROM arrived. */
  readonly startedAt: number;
  /** The Message-ID, once the final dot arrived (null before, or when the client vanished earlier). */
  messageId: string | null;
  receivedAt: number | null;
  /** When the session did anything after this transaction (next MAIL, RSET, QUIT) or closed. */
  endedAt: number | null;
}
type Txn = SinkTransaction;

export interface MailSink {
  readonly name: string;
  readonly port: number;
  /** Messages received completely, in order. */
  readonly messages: readonly SinkMessage[];
  /** Every transaction begun (MAIL), in order, taken or not. */
  readonly transactions: readonly SinkTransaction[];
  /** Delay before the reply to the final dot, ms (change it any time). */
  delayMs: number;
  /** Transactions (MAIL seen) that were open at time t: not ended by the session before t (see the header). */
  openAt(t: number): number;
  /** Sessions currently connected. */
  readonly connected: number;
  close(): Promise<void>;
}

const MESSAGE_ID = /^Message-ID:\s*(<[^>\r\n]+>)/im;

export async function startMailSink(name: string, options: { delayMs?: number } = {}): Promise<MailSink> {
  const messages: SinkMessage[] = [];
  const txns: Txn[] = [];
  const sockets = new Set<net.Socket>();
  let sessions = 0;
  const server = net.createServer((socket) => {
    const session = sessions++;
    sockets.add(socket);
    socket.setNoDelay(true);
    let buf = Buffer.alloc(0);
    let inData = false;
    let current: Txn | null = null;
    let startedAt = 0;
    const finish = (): void => {
      if (current !== null && current.endedAt === null) current.endedAt = Date.now();
      current = null;
    };
    socket.on('close', () => { finish(); sockets.delete(socket); });
    socket.on('error', () => { /* a killed node resets its connections */ });
    const reply = (line: string): void => { if (!socket.destroyed) socket.write(line); };
    reply(`220 ${name}.sink.test ESMTP sink\r\n`);
    const onLine = (line: string): void => {
      const verb = line.slice(0, 4).toUpperCase();
      if (verb === 'EHLO') reply(`250-${name}.sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 52428800\r\n`);
      else if (verb === 'HELO') reply(`250 ${name}.sink.test\r\n`);
      else if (verb === 'MAIL') {
        finish();
        startedAt = Date.now();
        current = { session, startedAt, messageId: null, receivedAt: null, endedAt: null };
        txns.push(current);
        reply('250 2.1.0 Ok\r\n');
      } else if (verb === 'RCPT') reply('250 2.1.5 Ok\r\n');
      else if (verb === 'DATA') { inData = true; reply('354 End data with <CR><LF>.<CR><LF>\r\n'); }
      else if (verb === 'RSET') { finish(); reply('250 2.0.0 Ok\r\n'); }
      else if (verb === 'NOOP') reply('250 2.0.0 Ok\r\n');
      else if (verb === 'QUIT') { finish(); reply('221 2.0.0 Bye\r\n'); socket.end(); }
      else reply('502 5.5.2 Error: command not recognized\r\n');
    };
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      for (;;) {
        if (inData) {
          const end = buf.indexOf('\r\n.\r\n');
          if (end < 0) return;
          const body = buf.subarray(0, end + 2).toString('latin1');
          buf = buf.subarray(end + 5);
          inData = false;
          const txn = current;
          const begun = startedAt;
          const messageId = MESSAGE_ID.exec(body)?.[1] ?? '?';
          if (txn !== null) txn.messageId = messageId;
          // Taken (recorded) only when the 250 goes out on a live session, as a real MTA that discards what a
          // client abandoned before the reply.
          const answer = (): void => {
            if (socket.destroyed) return;
            const receivedAt = Date.now();
            if (txn !== null) txn.receivedAt = receivedAt;
            messages.push({ sink: name, messageId, startedAt: begun, receivedAt, session });
            reply('250 2.0.0 Ok: queued\r\n');
          };
          if (sink.delayMs > 0) setTimeout(answer, sink.delayMs);
          else answer();
          continue;
        }
        const nl = buf.indexOf('\n');
        if (nl < 0) return;
        const line = buf.subarray(0, nl).toString('latin1').replace(/\r$/, '');
        buf = buf.subarray(nl + 1);
        onLine(line);
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: 0 }, () => { server.off('error', reject); resolve(); });
  });
  const sink: MailSink = {
    name,
    port: (server.address() as net.AddressInfo).port,
    messages,
    transactions: txns,
    delayMs: options.delayMs ?? 0,
    openAt: (t) => txns.filter((x) => x.startedAt <= t && (x.endedAt === null || x.endedAt > t)).length,
    get connected() { return sockets.size; },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  return sink;
}
