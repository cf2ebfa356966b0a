/**
 * A scripted fake NNTP server for the open-NNTP check's tests: a loopback net server whose greeting and answer to
 * each command come from a table. Hostile behaviours are steps: any bytes (binary garbage), slow drips, endless
 * output (a generator of lines written as fast as the client reads, or until the socket closes), a hang, a close.
 * After a 340 (POST) or 335 (IHAVE) it reads an article up to CRLF "." CRLF, then answers `article` (default
 * 240/235), unless the step says 'hang'. It records every command line and every article it received.
 *
 * Loopback only: it binds 127.0.0.1 on an ephemeral port.
 */
import * as net from 'node:net';
import type { AddressInfo } from 'node:net';

export interface FakeNntpStep {
  readonly delayMs?: number;
  /** Bytes to send, verbatim (include CRLFs). */
  readonly reply?: string | Buffer;
  /** Send the reply one byte at a time with this pause (a slow drip). */
  readonly dripMs?: number;
  /** Then write what this returns (verbatim: add CRLFs for lines) for ever, as fast as the socket drains, until it closes. */
  readonly endless?: (n: number) => string;
  /**
   * 'close' (FIN), 'hang' (never answer again), 'article' (read an article, then answer with `article`), 'silent'
   * (read the article, answer nothing ever).
   */
  readonly then?: 'close' | 'hang' | 'article' | 'silent';
  /** The answer to the article (then: 'article'). Default "240 article received" / "235 article transferred". */
  readonly article?: string | ((article: string) => string);
}

export type FakeNntpAnswer = string | FakeNntpStep;
export type FakeNntpHandler = FakeNntpAnswer | ((arg: string, conn: FakeNntpConnection) => FakeNntpAnswer);

export interface FakeNntpOptions {
  /** Default "200 fake.test NNTP ready (posting ok)\r\n". */
  readonly greeting?: FakeNntpAnswer;
  /** Upper-case verbs ("POST", "LIST", "MODE"); '*' answers anything else (default "500 unknown command"). */
  readonly commands?: Readonly<Record<string, FakeNntpHandler>>;
}

export interface FakeNntpConnection {
  readonly index: number;
  readonly commands: string[];
  readonly articles: string[];
  bytesOut: number;
}

export interface FakeNntp {
  readonly port: number;
  readonly connections: FakeNntpConnection[];
  /** Every command line of every connection, in order. */
  readonly commands: string[];
  /** Every article received (all connections). */
  readonly articles: string[];
  /** Total bytes the fake wrote. */
  bytesOut(): number;
  close(): Promise<void>;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => { setTimeout(r, ms).unref(); });

export async function startFakeNntp(options: FakeNntpOptions = {}): Promise<FakeNntp> {
  const connections: FakeNntpConnection[] = [];
  const commands: string[] = [];
  const articles: string[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    const conn: FakeNntpConnection = { index: connections.length, commands: [], articles: [], bytesOut: 0 };
    connections.push(conn);
    void serve(socket, conn);
  });

  async function write(socket: net.Socket, conn: FakeNntpConnection, data: string | Buffer, dripMs?: number): Promise<void> {
    const buf = typeof data === 'string' ? Buffer.from(data, 'latin1') : data;
    if (!dripMs) { conn.bytesOut += buf.length; socket.write(buf); return; }
    for (const b of buf) {
      if (socket.destroyed) return;
      conn.bytesOut++;
      socket.write(Buffer.of(b));
      await sleep(dripMs);
    }
  }

  async function endless(socket: net.Socket, conn: FakeNntpConnection, gen: (n: number) => string): Promise<void> {
    for (let n = 0; !socket.destroyed; n++) {
      const line = gen(n);
      conn.bytesOut += line.length;
      if (!socket.write(line, 'latin1')) await new Promise<void>((r) => { socket.once('drain', r); socket.once('close', r); });
    }
  }

  async function serve(socket: net.Socket, conn: FakeNntpConnection): Promise<void> {
    let buffered = '';
    let mode: 'command' | 'article' | 'dead' = 'command';
    let articleStep: FakeNntpStep | null = null;
    let articleVerb = 'POST';
    let busy = false;

    const act = async (answer: FakeNntpAnswer): Promise<void> => {
      const step: FakeNntpStep = typeof answer === 'string' ? { reply: answer } : answer;
      if (step.delayMs) await sleep(step.delayMs);
      if (socket.destroyed) return;
      if (step.reply !== undefined) await write(socket, conn, step.reply, step.dripMs);
      if (step.endless) { mode = 'dead'; await endless(socket, conn, step.endless); return; }
      if (step.then === 'close') { mode = 'dead'; socket.end(); }
      else if (step.then === 'hang') mode = 'dead';
      else if (step.then === 'article' || step.then === 'silent') { mode = 'article'; articleStep = step; }
    };

    // one pump at a time, in order: a command's answer (and the mode it sets) is settled before the next line
    const pump = async (): Promise<void> => {
      if (busy) return;
      busy = true;
      try {
        for (;;) {
          if (mode === 'dead' || socket.destroyed) { buffered = ''; return; }
          if (mode === 'article') {
            const end = buffered.indexOf('\r\n.\r\n');
            if (end < 0) { if (buffered.length > 4 * 1024 * 1024) socket.destroy(); return; }
            const article = buffered.slice(0, end + 2);
            buffered = buffered.slice(end + 5);
            conn.articles.push(article);
            articles.push(article);
            const step = articleStep!;
            mode = 'command';
            if (step.then === 'silent') { mode = 'dead'; return; }
            const ok = articleVerb === 'IHAVE' ? '235 article transferred OK\r\n' : '240 article received OK\r\n';
            await write(socket, conn, typeof step.article === 'function' ? step.article(article) : step.article ?? ok);
            continue;
          }
          const lf = buffered.indexOf('\n');
          if (lf < 0) { if (buffered.length > 64 * 1024) socket.destroy(); return; }
          const line = buffered.slice(0, lf).replace(/\r$/, '');
          buffered = buffered.slice(lf + 1);
          conn.commands.push(line);
          commands.push(line);
          const sp = line.indexOf(' ');
          const verb = (sp < 0 ? line : line.slice(0, sp)).toUpperCase();
          const arg = sp < 0 ? '' : line.slice(sp + 1);
          const table = options.commands ?? {};
          const handler = table[verb] ?? DEFAULTS[verb] ?? table['*'] ?? '500 unknown command\r\n';
          articleVerb = verb;
          await act(typeof handler === 'function' ? handler(arg, conn) : handler);
        }
      } finally {
        busy = false;
      }
    };

    socket.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('latin1');
      void pump();
    });
    busy = true;
    try {
      await act(options.greeting ?? '200 fake.test NNTP ready (posting ok)\r\n');
    } finally {
      busy = false;
    }
    void pump();
  }

  const DEFAULTS: Record<string, FakeNntpHandler> = {
    QUIT: { reply: '205 bye\r\n', then: 'close' },
  };

  await new Promise<void>((resolve) => server.listen({ port: 0, host: '127.0.0.1' }, resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    connections,
    commands,
    articles,
    bytesOut: () => connections.reduce((n, c) => n + c.bytesOut, 0),
    close: () => new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    }),
  };
}
