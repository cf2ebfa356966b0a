/**
 * DNS over TCP under slow and greedy clients (RFC 7766 6.2.3 and 10): a per-client connection cap, an idle timeout
 * that the bytes of an unfinished query do not extend, a session deadline, and the oldest idle connection making
 * room for a new client when every slot is taken. Clients bind different loopback addresses (127.0.0.2, .3, ...),
 * so each is its own client.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import dnsPacket from 'dns-packet';
import { DnsblServer, tcpClientKey } from './server.ts';
import { buildZone } from './zone.ts';

const zone = buildZone([{ network: '10.1.2.3', code: '127.0.0.7', txt: 'single $' }], { apex: 'relays.test', soa: { serial: 1 } });

function frame(m: Buffer): Buffer {
  return Buffer.concat([Buffer.from([m.length >> 8, m.length & 255]), m]);
}

function query(id: number): Buffer {
  return frame(dnsPacket.encode({ type: 'query', id, questions: [{ type: 'A', name: '3.2.1.10.relays.test', class: 'IN' }] }));
}

/** A TCP client from a chosen loopback address that records the answers and whether the server closed. */
class Client {
  readonly socket: Socket;
  readonly answers: Buffer[] = [];
  closed = false;
  readonly #closedP: Promise<void>;
  #buf = Buffer.alloc(0);
  #waiters: (() => void)[] = [];

  constructor(port: number, localAddress: string) {
    this.socket = connect({ host: '127.0.0.1', port, localAddress });
    this.socket.on('error', () => {});
    this.#closedP = new Promise((resolve) => this.socket.once('close', () => { this.closed = true; this.#wake(); resolve(); }));
    this.socket.on('data', (d: Buffer) => {
      this.#buf = Buffer.concat([this.#buf, d]);
      while (this.#buf.length >= 2 && this.#buf.length >= 2 + this.#buf.readUInt16BE(0)) {
        this.answers.push(this.#buf.subarray(2, 2 + this.#buf.readUInt16BE(0)));
        this.#buf = this.#buf.subarray(2 + this.#buf.readUInt16BE(0));
      }
      this.#wake();
    });
  }

  #wake(): void {
    for (const w of this.#waiters.splice(0)) w();
  }

  async connected(): Promise<boolean> {
    try {
      await once(this.socket, 'connect');
      return true;
    } catch {
      return false;
    }
  }

  /** Resolves when `n` answers arrived or the connection closed; rejects after `limitMs` (a hang guard only). */
  async waitAnswers(n: number, limitMs = 10_000): Promise<void> {
    const deadline = Date.now() + limitMs;
    while (this.answers.length < n && !this.closed) {
      if (Date.now() > deadline) throw new Error(`no answer within ${limitMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 50);
        this.#waiters.push(() => { clearTimeout(t); resolve(); });
      });
    }
  }

  /** Resolves when the server closed the connection; rejects after `limitMs` (a hang guard only). */
  async waitClosed(limitMs = 10_000): Promise<void> {
    let t: NodeJS.Timeout | undefined;
    const guard = new Promise<never>((_, reject) => { t = setTimeout(() => reject(new Error(`still open after ${limitMs} ms`)), limitMs); });
    try {
      await Promise.race([this.#closedP, guard]);
    } finally {
      clearTimeout(t);
    }
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/** Opens connections from `address` that each send a 0xFFFF length prefix and then one byte every `everyMs`. */
function tricklers(port: number, address: string, count: number, everyMs: number): { clients: Client[]; sent: () => number; stop: () => void } {
  const clients: Client[] = [];
  let sent = 0;
  for (let i = 0; i < count; i++) {
    const c = new Client(port, address);
    c.socket.once('connect', () => { c.socket.write(Buffer.from([0xff, 0xff])); });
    clients.push(c);
  }
  const timer = setInterval(() => {
    for (const c of clients) {
      if (!c.closed && c.socket.writable && !c.socket.connecting) {
        c.socket.write(Buffer.from([0x41]));
        sent++;
      }
    }
  }, everyMs);
  return {
    clients,
    sent: () => sent,
    stop: () => {
      clearInterval(timer);
      for (const c of clients) c.destroy();
    },
  };
}

async function settle(clients: Client[]): Promise<void> {
  await Promise.all(clients.map((c) => c.connected()));
  await new Promise((r) => setTimeout(r, 100));
}

function answerId(b: Buffer): number {
  return dnsPacket.decode(b).id ?? -1;
}

describe('DnsblServer over TCP: slow and greedy clients', () => {
  it('tcpClientKey: IPv4 alone (mapped folded), IPv6 by /64', () => {
    assert.equal(tcpClientKey('127.0.0.2'), '127.0.0.2');
    assert.equal(tcpClientKey('::ffff:127.0.0.2'), '127.0.0.2');
    assert.equal(tcpClientKey('2001:db8:1:2:3:4:5:6'), '2001:db8:1:2::/64');
    assert.equal(tcpClientKey('2001:db8:1:2::9'), '2001:db8:1:2::/64');
    assert.equal(tcpClientKey(undefined), '');
  });

  it('rejects bad limits', () => {
    assert.throws(() => new DnsblServer({ zone, maxTcpConnectionsPerClient: 0 }), RangeError);
    assert.throws(() => new DnsblServer({ zone, tcpSessionTimeoutMs: 1.5 }), RangeError);
  });

  describe('with the default limits', () => {
    let server: DnsblServer;
    before(async () => {
      server = new DnsblServer({ zone, port: 0 });
      await server.start();
    });
    after(async () => { await server.stop(); });

    it('130 trickling connections from 127.0.0.2 do not stop a TCP query from 127.0.0.3 (F3)', async () => {
      const attack = tricklers(server.port, '127.0.0.2', 130, 100);
      try {
        await settle(attack.clients);
        const c = new Client(server.port, '127.0.0.3');
        try {
          assert.ok(await c.connected());
          c.socket.write(query(4242));
          await c.waitAnswers(1);
          assert.deepEqual(c.answers.map(answerId), [4242], 'the query from 127.0.0.3 was answered');
        } finally {
          c.destroy();
        }
        assert.ok(attack.sent() > 0, 'the attackers trickled bytes');
        const open = attack.clients.filter((x) => !x.closed).length;
        assert.ok(open <= 16, `${open} connections from 127.0.0.2 are open; the per-client cap is 16`);
        assert.ok(server.stats.tcpRejected >= 130 - 16, `rejected ${server.stats.tcpRejected}`);
      } finally {
        attack.stop();
      }
    });
  });

  it('when every slot is taken, a new client gets the slot of the oldest idle connection', async () => {
    // No per-client cap worth the name: only the total limit and the eviction protect the new client.
    const server = new DnsblServer({ zone, port: 0, maxTcpConnections: 128, maxTcpConnectionsPerClient: 1000 });
    await server.start();
    const attack = tricklers(server.port, '127.0.0.2', 130, 100);
    try {
      await settle(attack.clients);
      assert.ok(server.tcpConnections <= 128);
      const c = new Client(server.port, '127.0.0.3');
      try {
        assert.ok(await c.connected());
        c.socket.write(query(7));
        await c.waitAnswers(1);
        assert.deepEqual(c.answers.map(answerId), [7]);
      } finally {
        c.destroy();
      }
      assert.ok(server.stats.tcpEvicted >= 1, `evicted ${server.stats.tcpEvicted}`);
    } finally {
      attack.stop();
      await server.stop();
    }
  });

  it('evicts the connection that made progress least recently, not a busy or a fresher one', async () => {
    const server = new DnsblServer({ zone, port: 0, maxTcpConnections: 3 });
    await server.start();
    const clients: Client[] = [];
    try {
      for (const addr of ['127.0.0.11', '127.0.0.12', '127.0.0.13']) {
        const c = new Client(server.port, addr);
        clients.push(c);
        assert.ok(await c.connected());
        await new Promise((r) => setTimeout(r, 20));
      }
      // The oldest connection asks a query now, so it made progress most recently; .12 is the stalest.
      clients[0]!.socket.write(query(1));
      await clients[0]!.waitAnswers(1);
      const d = new Client(server.port, '127.0.0.14');
      clients.push(d);
      assert.ok(await d.connected());
      d.socket.write(query(2));
      await d.waitAnswers(1);
      assert.deepEqual(d.answers.map(answerId), [2]);
      await clients[1]!.waitClosed();
      assert.equal(clients[0]!.closed, false, 'the connection that answered a query last stays');
      assert.equal(clients[2]!.closed, false);
      assert.equal(server.stats.tcpEvicted, 1);
    } finally {
      for (const c of clients) c.destroy();
      await server.stop();
    }
  });

  it('caps connections per client; other clients are unaffected', async () => {
    const server = new DnsblServer({ zone, port: 0, maxTcpConnectionsPerClient: 3 });
    await server.start();
    const greedy: Client[] = [];
    try {
      for (let i = 0; i < 5; i++) greedy.push(new Client(server.port, '127.0.0.2'));
      await settle(greedy);
      await Promise.all(greedy.slice(3).map((c) => c.waitClosed()));
      assert.deepEqual(greedy.map((c) => c.closed), [false, false, false, true, true]);
      assert.equal(server.stats.tcpRejected, 2);
      // A connection of the greedy client still works, and so does another client.
      greedy[0]!.socket.write(query(11));
      await greedy[0]!.waitAnswers(1);
      assert.deepEqual(greedy[0]!.answers.map(answerId), [11]);
      const other = new Client(server.port, '127.0.0.3');
      greedy.push(other);
      other.socket.write(query(12));
      await other.waitAnswers(1);
      assert.deepEqual(other.answers.map(answerId), [12]);
    } finally {
      for (const c of greedy) c.destroy();
      await server.stop();
    }
  });

  it('trickled bytes of an unfinished query do not extend the idle timeout', async () => {
    const server = new DnsblServer({ zone, port: 0, tcpIdleTimeoutMs: 300 });
    await server.start();
    const slow = tricklers(server.port, '127.0.0.2', 1, 40);
    try {
      await slow.clients[0]!.waitClosed();
      assert.ok(slow.sent() >= 3, `the client trickled ${slow.sent()} bytes before it was closed`);
      assert.equal(server.stats.tcpTimedOut, 1);
      assert.equal(server.tcpConnections, 0);
    } finally {
      slow.stop();
      await server.stop();
    }
  });

  it('answered queries restart the idle timeout, but the session deadline ends the connection anyway', async () => {
    const server = new DnsblServer({ zone, port: 0, tcpIdleTimeoutMs: 2000, tcpSessionTimeoutMs: 600 });
    await server.start();
    const c = new Client(server.port, '127.0.0.2');
    let id = 0;
    const timer = setInterval(() => { if (!c.closed && !c.socket.connecting) c.socket.write(query(++id)); }, 50);
    try {
      await c.waitClosed();
      assert.ok(c.answers.length >= 3, `${c.answers.length} answers before the deadline`);
      assert.deepEqual(c.answers.map(answerId), c.answers.map((_, i) => i + 1), 'every answer arrived, in order');
      assert.equal(server.stats.tcpTimedOut, 1);
    } finally {
      clearInterval(timer);
      c.destroy();
      await server.stop();
    }
  });
});
