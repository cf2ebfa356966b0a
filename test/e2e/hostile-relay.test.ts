/**
 * RL-*: relay-bypass address tricks against a closed relay (hostile-inputs.md section 1.3), and the merged
 * open-relay tester battery V01-V22 (relay-testers.md section 1.8), from an untrusted client on the mx listener:
 * (a) a real untrusted source address (127.0.0.2, trusted networks = 127.0.0.1/32), and (b) an untrusted
 * source named by a trusted PROXY-protocol balancer (v1 text and v2 binary headers). Every test ends by
 * asserting that no queued message has a recipient outside local.test. Positive controls show the same clients
 * can deliver locally and a trusted client can relay, so the refusals are policy, not breakage.
 * RL-28 (MX pointing back at us) is an outbound-delivery case and not part of the receive path.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startRelay, type Harness } from '../../src/testing/relay-harness.ts';
import {
  RawSmtpClient, p1, expectReply, expectClass, expectNoMoreReplies, assertNothingRemoteQueued, queueIdOf, proxyV2,
} from './hostile-helpers.ts';

let direct: Harness; // (a) untrusted by source address
let proxied: Harness; // (b) untrusted by PROXY header
const OUTSIDE = '127.0.0.2';

before(async () => {
  direct = await startRelay({ trustedNetworks: ['127.0.0.1/32'], users: [{ name: 'alice@local.test', password: 'pw' }] });
  proxied = await startRelay({ proxyProtocol: true, trustedProxies: ['127.0.0.1/32'], trustedNetworks: ['127.0.0.1/32'] });
});

after(async () => {
  await direct?.close();
  await proxied?.close();
});

/** Runs a relay test and then checks the relay invariant on both harnesses. */
function rtest(name: string, fn: () => Promise<void>): void {
  test(name, async () => {
    await fn();
    assertNothingRemoteQueued(direct);
    assertNothingRemoteQueued(proxied);
  });
}

type Mode = 'direct' | 'proxy-v1' | 'proxy-v2';
const MODES: Mode[] = ['direct', 'proxy-v1', 'proxy-v2'];

/** P1 as an untrusted client in the given mode. */
async function outside(mode: Mode, helo = 'client.test'): Promise<RawSmtpClient> {
  if (mode === 'direct') return p1(direct.ports.mx, { localAddress: OUTSIDE, helo });
  const c = await RawSmtpClient.connect(proxied.ports.mx);
  c.write(mode === 'proxy-v1' ? 'PROXY TCP4 203.0.113.9 127.0.0.1 40000 25\r\n' : proxyV2('203.0.113.9', '127.0.0.1', 40000, 25));
  expectReply(await c.readReply(), 220, undefined, c);
  expectReply(await c.cmd(`EHLO ${helo}`), 250, undefined, c);
  return c;
}

function harnessOf(mode: Mode): Harness {
  return mode === 'direct' ? direct : proxied;
}

/** A RCPT must be refused (never 2xx); DATA afterwards must find no valid recipient; nothing queued. */
async function expectDenied(c: RawSmtpClient, rcpt: string, expected?: { code: number; enhanced: string }): Promise<void> {
  const r = await c.cmd(`RCPT TO:${rcpt}`);
  if (expected) expectReply(r, expected.code, expected.enhanced, c);
  else assert.ok(r.code >= 400, `RCPT TO:${rcpt} was accepted: ${r.lines.join(' | ')}`);
}

async function expectNoValidRecipients(c: RawSmtpClient): Promise<void> {
  const d = await c.cmd('DATA');
  assert.ok(d.code === 554 || d.code === 503, `DATA after refused recipients got ${d.lines.join(' | ')}`);
  assert.equal(d.enhanced, '5.5.1');
}

const DENY = { code: 554, enhanced: '5.7.1' } as const;
const SYNTAX = { code: 501, enhanced: '5.1.3' } as const;

// -------------------------------------------------------------------------------------------------------------
// RL rows (direct untrusted client)

async function rl(mailFrom: string, rcpts: [string, { code: number; enhanced: string } | undefined][]): Promise<void> {
  const c = await outside('direct');
  try {
    expectReply(await c.cmd(`MAIL FROM:${mailFrom}`), 250, '2.1.0', c);
    for (const [rcpt, exp] of rcpts) await expectDenied(c, rcpt, exp);
    await expectNoValidRecipients(c);
  } finally {
    c.close();
  }
}

rtest('RL-01 external -> external: 554 5.7.1 Relay access denied', () => rl('<x@remote.test>', [['<y@remote.test>', DENY]]));
rtest('RL-02 forged local sender does not grant relay', () => rl('<postmaster@local.test>', [['<y@remote.test>', DENY]]));
rtest('RL-03 null sender: MAIL 250, RCPT remote denied', () => rl('<>', [['<y@remote.test>', DENY]]));

rtest('RL-04 unqualified / localhost / own-literal senders: relay still denied', async () => {
  const c = await outside('direct');
  try {
    // <spamtest> is refused at MAIL (we never complete it with our domain), so no RCPT can follow.
    expectReply(await c.cmd('MAIL FROM:<spamtest>'), 501, '5.1.7', c);
    expectReply(await c.cmd('RCPT TO:<y@remote.test>'), 503, '5.5.1', c);
  } finally {
    c.close();
  }
  await rl('<spamtest@localhost>', [['<y@remote.test>', DENY]]);
  await rl('<spamtest@[127.0.0.1]>', [['<y@remote.test>', DENY]]);
});

rtest('RL-05 percent hack y%remote.test@local.test: denied', () => rl('<x@remote.test>', [['<y%remote.test@local.test>', DENY]]));
rtest('RL-06 percent hack via own literal: denied', () => rl('<x@remote.test>', [['<y%remote.test@[127.0.0.1]>', DENY]]));
rtest('RL-07 quoted "y@remote.test": denied', () => rl('<x@remote.test>', [['<"y@remote.test">', SYNTAX]]));
rtest('RL-08 quoted "y%remote.test": denied', () => rl('<x@remote.test>', [['<"y%remote.test">', SYNTAX]]));
rtest('RL-09 "y@remote.test"@local.test: denied (dequoted routing)', () => rl('<x@remote.test>', [['<"y@remote.test"@local.test>', DENY]]));
rtest('RL-10 double @ both ways: denied', () => rl('<x@remote.test>', [['<y@remote.test@local.test>', SYNTAX], ['<y@local.test@remote.test>', SYNTAX]]));
rtest('RL-11 y@remote.test@[127.0.0.1]: denied', () => rl('<x@remote.test>', [['<y@remote.test@[127.0.0.1]>', SYNTAX]]));
rtest('RL-12 source route @local.test:y@remote.test: route stripped, remote denied', () => rl('<x@remote.test>', [['<@local.test:y@remote.test>', DENY]]));
rtest('RL-14 bang path remote.test!y: denied', () => rl('<x@remote.test>', [['<remote.test!y>', SYNTAX]]));
rtest('RL-15 bang path via local domain and own literal: denied', () => rl('<x@remote.test>', [['<remote.test!y@local.test>', DENY], ['<remote.test!y@[127.0.0.1]>', DENY]]));

rtest('RL-16 trailing dot: y@remote.test. denied; u@local.test. is local and delivered', async () => {
  await rl('<x@remote.test>', [['<y@remote.test.>', DENY]]);
  const c = await outside('direct');
  try {
    expectReply(await c.cmd('MAIL FROM:<x@remote.test>'), 250, '2.1.0', c);
    expectReply(await c.cmd('RCPT TO:<u@local.test.>'), 250, '2.1.5', c);
    expectReply(await c.cmd('DATA'), 354, undefined, c);
    const r = await c.cmd('Subject: t\r\n\r\nx\r\n.');
    expectReply(r, 250, '2.0.0', c);
    assert.deepEqual(direct.queue.get(queueIdOf(r))!.recipients.map((x) => x.address), ['u@local.test']);
  } finally {
    c.close();
  }
});

rtest('RL-17 domain and local part case-insensitive (recipients.foldCase): one mailbox, one copy', async () => {
  const c = await outside('direct');
  try {
    expectReply(await c.cmd('MAIL FROM:<x@remote.test>'), 250, '2.1.0', c);
    expectReply(await c.cmd('RCPT TO:<u@LOCAL.TEST>'), 250, '2.1.5', c);
    expectReply(await c.cmd('RCPT TO:<U@local.test>'), 250, '2.1.5', c);
    expectReply(await c.cmd('DATA'), 354, undefined, c);
    const r = await c.cmd('Subject: t\r\n\r\nx\r\n.');
    expectReply(r, 250, '2.0.0', c);
    assert.deepEqual(direct.queue.get(queueIdOf(r))!.recipients.map((x) => x.address).sort(), ['u@local.test']);
  } finally {
    c.close();
  }
});

rtest('RL-19 IP literals: own address local (postmaster only, others 550 5.1.1); malformed literal and bare numeric domain 501 5.1.3; never relayed', async () => {
  const mark = direct.logs.length;
  const c = await outside('direct');
  try {
    expectReply(await c.cmd('MAIL FROM:<x@remote.test>'), 250, '2.1.0', c);
    expectReply(await c.cmd('RCPT TO:<y@[127.0.0.1]>'), 550, '5.1.1', c);
    expectReply(await c.cmd('RCPT TO:<y@[IPv6:::1]>'), 550, '5.1.1', c);
    expectReply(await c.cmd('RCPT TO:<postmaster@[127.0.0.1]>'), 250, '2.1.5', c);
    expectReply(await c.cmd('RCPT TO:<Postmaster@[IPv6:::1]>'), 250, '2.1.5', c);
    for (const bad of ['<y@[127.1]>', '<y@[0x7f.0.0.1]>', '<y@[2130706433]>', '<y@[1.2.3.4.5]>', '<y@[321.255.255.255]>', '<y@127.0.0.1>']) {
      expectReply(await c.cmd(`RCPT TO:${bad}`), 501, '5.1.3', c);
    }
    // Another address's literal is not ours: relay denied. (Every loopback address is this host: local.)
    expectReply(await c.cmd('RCPT TO:<y@[192.0.2.1]>'), 554, '5.7.1', c);
    expectReply(await c.cmd('RCPT TO:<y@[127.0.0.2]>'), 550, '5.1.1', c);
    expectReply(await c.cmd('RSET'), 250, '2.0.0', c);
  } finally {
    c.close();
  }
  const decisions = direct.logs.slice(mark).filter((l) => l.msg === 'relay decision' && /^<postmaster@\[/i.test(String(l.fields.rcpt)));
  assert.equal(decisions.length, 2);
  for (const d of decisions) assert.equal(d.fields.action, 'local', JSON.stringify(d.fields));
  const unknown = direct.logs.slice(mark).filter((l) => l.msg === 'relay decision' && l.fields.rule === 'unknown-recipient');
  assert.equal(unknown.length, 3, 'y@[127.0.0.1], y@[IPv6:::1], y@[127.0.0.2]: unknown users of our own literals');
});

rtest('RL-20 no SMTPUTF8: unicode address 553 5.6.7; invalid UTF-8 500 5.5.2', async () => {
  const c = await outside('direct');
  try {
    expectReply(await c.cmd('MAIL FROM:<x@remote.test>'), 250, '2.1.0', c);
    c.write(Buffer.concat([Buffer.from('RCPT TO:<y@ex'), Buffer.from('\u0430', 'utf8'), Buffer.from('mple.com>\r\n')]));
    expectReply(await c.readReply(), 553, '5.6.7', c);
    c.write(Buffer.from('RCPT TO:<y\xC3\xA9@local.test>\r\n', 'latin1'));
    expectReply(await c.readReply(), 553, '5.6.7', c);
    c.write(Buffer.from('RCPT TO:<y\xFF@local.test>\r\n', 'latin1'));
    expectReply(await c.readReply(), 500, '5.5.2', c);
    await expectNoValidRecipients(c);
  } finally {
    c.close();
  }
});

rtest('RL-21 with SMTPUTF8: a Cyrillic homograph of a local domain is compared as A-labels and denied', async () => {
  const h = await startRelay({ trustedNetworks: ['127.0.0.1/32'], localDomains: ['local.test', 'example.com'], mailboxes: ['y@example.com'] });
  try {
    const c = await p1(h.ports.mx, { localAddress: OUTSIDE });
    try {
      expectReply(await c.cmd('MAIL FROM:<x@remote.test> SMTPUTF8'), 250, '2.1.0', c);
      c.write(Buffer.concat([Buffer.from('RCPT TO:<y@ex'), Buffer.from('\u0430', 'utf8'), Buffer.from('mple.com>\r\n')]));
      expectReply(await c.readReply(), 554, '5.7.1', c);
      // Control: the real local domain is accepted.
      expectReply(await c.cmd('RCPT TO:<y@example.com>'), 250, '2.1.5', c);
      expectReply(await c.cmd('RSET'), 250, '2.0.0', c);
    } finally {
      c.close();
    }
    const d = h.logs.find((l) => l.msg === 'relay decision' && l.fields.action === 'reject');
    assert.equal(d?.fields.rcpt_canonical, 'y@xn--exmple-4nf.com');
    assert.equal(h.queue.list().length, 0);
  } finally {
    await h.close();
  }
});

rtest('RL-23 length limits: at the limit parsed, over it 501 5.1.3, 100 KB local part refused in linear time', async () => {
  const label = (n: number): string => 'a'.repeat(n);
  const c = await outside('direct');
  try {
    expectReply(await c.cmd('MAIL FROM:<x@remote.test>'), 250, '2.1.0', c);
    // 64 octets parse (and reach the recipient tables: no such user); 65 are a syntax error.
    expectReply(await c.cmd(`RCPT TO:<${label(64)}@local.test>`), 550, '5.1.1', c);
    expectReply(await c.cmd(`RCPT TO:<${label(65)}@local.test>`), 501, '5.1.3', c);
    // 63-octet label parses (remote: relay denied); 64 is a syntax error.
    expectReply(await c.cmd(`RCPT TO:<y@${label(63)}.test>`), 554, '5.7.1', c);
    expectReply(await c.cmd(`RCPT TO:<y@${label(64)}.test>`), 501, '5.1.3', c);
    // Path of exactly 256 octets (with <>) parses; 257 does not.
    const d252 = [63, 63, 63, 60].map(label).join('.');
    const d253 = [63, 63, 63, 61].map(label).join('.');
    assert.equal(`<y@${d252}>`.length, 256);
    expectReply(await c.cmd(`RCPT TO:<y@${d252}>`), 554, '5.7.1', c);
    expectReply(await c.cmd(`RCPT TO:<y@${d253}>`), 501, '5.1.3', c);
    // A 256-octet domain.
    const d256 = [63, 63, 63, 63].map(label).join('.') + '.b';
    expectReply(await c.cmd(`RCPT TO:<y@${d256.slice(0, 256)}>`), 501, '5.1.3', c);
    // A 3 000-octet local part (within the command line limit) and a 100 KB one (over it).
    const t0 = Date.now();
    expectReply(await c.cmd(`RCPT TO:<${label(3000)}@local.test>`), 501, '5.1.3', c);
    const big = await c.cmd(`RCPT TO:<${label(100 * 1024)}@remote.test>`);
    assert.ok(big.code === 500 || big.code === 501, big.lines.join(' | '));
    assert.ok(Date.now() - t0 < 1000, 'address parsing is not linear');
    expectReply(await c.cmd('RSET'), 250, '2.0.0', c);
  } finally {
    c.close();
  }
});

rtest('RL-24 several addresses or junk in one RCPT: 501, the second address never relayed', async () => {
  const c = await outside('direct');
  try {
    expectReply(await c.cmd('MAIL FROM:<x@remote.test>'), 250, '2.1.0', c);
    for (const arg of ['<a@local.test> <b@remote.test>', 'a@local.test,b@remote.test', '<a@local.test> (c)']) {
      const r = await c.cmd(`RCPT TO:${arg}`);
      expectReply(r, 501, r.enhanced, c);
      assert.match(r.enhanced ?? '', /^5\.(1\.3|5\.4)$/);
    }
    await expectNoValidRecipients(c);
  } finally {
    c.close();
  }
});

rtest('RL-25 <Postmaster> and <postmaster> accepted for local delivery from an untrusted client', async () => {
  const c = await outside('direct');
  try {
    expectReply(await c.cmd('MAIL FROM:<x@remote.test>'), 250, '2.1.0', c);
    expectReply(await c.cmd('RCPT TO:<Postmaster>'), 250, '2.1.5', c);
    expectReply(await c.cmd('RCPT TO:<postmaster>'), 250, '2.1.5', c);
    expectReply(await c.cmd('RSET'), 250, '2.0.0', c);
  } finally {
    c.close();
  }
});

rtest('RL-26 authenticated user sending as another user: 553 5.7.1; own address accepted', async () => {
  const c = await p1(direct.ports.submissions, { tls: true, localAddress: OUTSIDE });
  try {
    expectReply(await c.cmd(`AUTH PLAIN ${Buffer.from('\0alice@local.test\0pw').toString('base64')}`), 235, '2.7.0', c);
    expectReply(await c.cmd('MAIL FROM:<b@local.test>'), 553, '5.7.1', c);
    expectReply(await c.cmd('MAIL FROM:<alice@local.test>'), 250, '2.1.0', c);
    expectReply(await c.cmd('RSET'), 250, '2.0.0', c);
  } finally {
    c.close();
  }
});

rtest('RL-27 injection-shaped addresses (CVE-2020-7247, CVE-2019-10149): 501, never expanded', async () => {
  const c = await outside('direct');
  try {
    const t0 = Date.now();
    expectReply(await c.cmd('MAIL FROM:<;sleep 10;>'), 501, '5.1.7', c);
    assert.ok(Date.now() - t0 < 1000);
    expectReply(await c.cmd('MAIL FROM:<x@remote.test>'), 250, '2.1.0', c);
    expectReply(await c.cmd('RCPT TO:<${run{\x2Fbin\x2Fsh\t-c\t\x22id\x22}}@local.test>'), 501, '5.1.3', c);
    await expectNoValidRecipients(c);
    await expectNoMoreReplies(c, 50);
  } finally {
    c.close();
  }
  // The refused address is logged only as data: the bounded excerpt of its `command refused` event (issue 9),
  // escaped by the log sink; nowhere else.
  for (const rec of direct.logs) {
    const { excerpt, ...rest } = rec.fields;
    if (excerpt !== undefined) assert.ok(rec.msg === 'command refused' && String(excerpt).length <= 67, JSON.stringify(rec));
    assert.ok(!JSON.stringify({ ...rec, fields: rest }).includes('${run{'), 'injection string reached the logs');
  }
});

// -------------------------------------------------------------------------------------------------------------
// Relay battery V01-V22, every variant in every mode

const T = 'remote.test';
const H = 'mx.local.test';
const IP = '[127.0.0.1]';
const D = 'local.test';

const BATTERY: { id: string; name: string; from: string; rcpts: string[]; localOk?: boolean }[] = [
  { id: 'V01', name: 'null sender', from: '<>', rcpts: [`<u@${T}>`] },
  { id: 'V02', name: 'external -> external', from: `<s@${T}>`, rcpts: [`<u@${T}>`] },
  { id: 'V03', name: 'spoof target host', from: `<s@${H}>`, rcpts: [`<u@${T}>`] },
  { id: 'V04', name: 'spoof target IP literal', from: `<s@${IP}>`, rcpts: [`<u@${T}>`] },
  { id: 'V05', name: 'spoof target domain', from: `<s@${D}>`, rcpts: [`<u@${T}>`] },
  { id: 'V06', name: 'spoof localhost', from: '<s@localhost>', rcpts: [`<u@${T}>`] },
  { id: 'V07', name: 'unqualified sender', from: '<spamtest>', rcpts: [`<u@${T}>`] },
  { id: 'V08', name: 'percent hack via IP', from: `<s@${IP}>`, rcpts: [`<u%${T}@${IP}>`] },
  { id: 'V09', name: 'percent hack via host/domain', from: `<s@${IP}>`, rcpts: [`<u%${T}@${H}>`, `<u%${T}@${D}>`] },
  { id: 'V10', name: 'quoted local part with @', from: `<s@${IP}>`, rcpts: [`<"u@${T}">`] },
  { id: 'V11', name: 'quoted percent', from: `<s@${IP}>`, rcpts: [`<"u%${T}">`] },
  { id: 'V12', name: 'double @ via IP', from: `<s@${IP}>`, rcpts: [`<u@${T}@${IP}>`] },
  { id: 'V13', name: 'quoted then via IP/host', from: `<s@${IP}>`, rcpts: [`<"u@${T}"@${IP}>`, `<"u@${T}"@${H}>`] },
  { id: 'V14', name: 'double @ via host', from: `<s@${IP}>`, rcpts: [`<u@${T}@${H}>`] },
  { id: 'V15', name: 'source route via IP', from: `<s@${IP}>`, rcpts: [`<@${IP}:u@${T}>`] },
  { id: 'V16', name: 'source route via host', from: `<s@${IP}>`, rcpts: [`<@${H}:u@${T}>`] },
  { id: 'V17', name: 'bang path', from: `<s@${IP}>`, rcpts: [`<${T}!u>`] },
  { id: 'V18', name: 'bang path via IP', from: `<s@${IP}>`, rcpts: [`<${T}!u@${IP}>`] },
  { id: 'V19', name: 'bang path via host', from: `<s@${IP}>`, rcpts: [`<${T}!u@${H}>`] },
  { id: 'V20', name: 'trailing/empty domain', from: `<s@${IP}>`, rcpts: [`<u@${T}@>`, `<u%${T}@>`] },
  // Our own address literal is one of our domains (RL-19): acceptance is local delivery, not relaying.
  { id: 'V21', name: 'IP-literal recipient', from: `<s@${IP}>`, rcpts: [`<u@${IP}>`], localOk: true },
  { id: 'V22', name: 'unbracketed path', from: `<s@${T}>`, rcpts: [`u@${T}`] },
];

for (const mode of MODES) {
  for (const v of BATTERY) {
    rtest(`${v.id} ${v.name} [${mode}]: refused, nothing relayed`, async () => {
      const h = harnessOf(mode);
      const before = h.queue.list().length;
      const logMark = h.logs.length;
      const c = await outside(mode, 'tester.example');
      try {
        const m = await c.cmd(`MAIL FROM:${v.from}`);
        if (m.code !== 250) {
          // Refused at MAIL (unqualified sender): then no RCPT can run.
          expectClass(m, 5, c);
          expectReply(await c.cmd(`RCPT TO:${v.rcpts[0]!}`), 503, '5.5.1', c);
        } else {
          for (const rcpt of v.rcpts) {
            const r = await c.cmd(`RCPT TO:${rcpt}`);
            if (r.code === 250 && v.localOk) {
              const d = h.logs.slice(logMark).find((l) => l.msg === 'relay decision' && l.fields.rcpt === rcpt);
              assert.equal(d?.fields.action, 'local', `${rcpt} accepted but not as local: ${JSON.stringify(d?.fields)}`);
              assert.equal(d?.fields.rule, 'local-address-literal');
              continue;
            }
            assert.ok(r.code >= 500, `${v.id} RCPT TO:${rcpt} not refused: ${r.lines.join(' | ')}`);
          }
          if (!v.localOk) await expectNoValidRecipients(c);
        }
        expectReply(await c.cmd('RSET'), 250, '2.0.0', c);
      } finally {
        c.close();
      }
      assert.equal(h.queue.list().length, before);
      // The decision was taken on the client's real identity.
      for (const l of h.logs.slice(logMark)) {
        if (l.msg !== 'relay decision') continue;
        assert.equal(l.fields.client_ip, mode === 'direct' ? OUTSIDE : '203.0.113.9');
        assert.notEqual(l.fields.action, 'relay', JSON.stringify(l.fields));
      }
    });
  }

  rtest(`battery positive control [${mode}]: the same untrusted client delivers to u@local.test`, async () => {
    const h = harnessOf(mode);
    const c = await outside(mode);
    try {
      expectReply(await c.cmd('MAIL FROM:<s@remote.test>'), 250, '2.1.0', c);
      expectReply(await c.cmd('RCPT TO:<u@local.test>'), 250, '2.1.5', c);
      expectReply(await c.cmd('DATA'), 354, undefined, c);
      const r = await c.cmd('Subject: control\r\n\r\nx\r\n.');
      expectReply(r, 250, '2.0.0', c);
      const m = h.queue.get(queueIdOf(r))!;
      assert.deepEqual(m.recipients.map((x) => x.address), ['u@local.test']);
      assert.equal(m.clientIp, mode === 'direct' ? OUTSIDE : '203.0.113.9');
    } finally {
      c.close();
    }
  });
}

rtest('battery positive control: a trusted client (127.0.0.1, no PROXY) gets a remote recipient accepted', async () => {
  const c = await p1(direct.ports.mx);
  try {
    expectReply(await c.cmd('MAIL FROM:<s@local.test>'), 250, '2.1.0', c);
    expectReply(await c.cmd('RCPT TO:<u@remote.test>'), 250, '2.1.5', c);
    // Not sent: the invariant "nothing remote queued" covers the whole file.
    expectReply(await c.cmd('RSET'), 250, '2.0.0', c);
  } finally {
    c.close();
  }
  const d = direct.logs.findLast((l) => l.msg === 'relay decision');
  assert.equal(d?.fields.action, 'relay');
  assert.equal(d?.fields.rule, 'trusted-network');
});

rtest('battery positive control: a trusted source named by the PROXY header (v1 and v2) may relay', async () => {
  for (const header of ['PROXY TCP4 127.0.0.1 127.0.0.1 40000 25\r\n', proxyV2('127.0.0.1', '127.0.0.1', 40000, 25)]) {
    const c = await RawSmtpClient.connect(proxied.ports.mx);
    try {
      c.write(header);
      expectReply(await c.readReply(), 220, undefined, c);
      expectReply(await c.cmd('EHLO client.test'), 250, undefined, c);
      expectReply(await c.cmd('MAIL FROM:<s@local.test>'), 250, '2.1.0', c);
      expectReply(await c.cmd('RCPT TO:<u@remote.test>'), 250, '2.1.5', c);
      expectReply(await c.cmd('RSET'), 250, '2.0.0', c);
    } finally {
      c.close();
    }
  }
});

test('relay battery end state: nothing to a remote domain was ever queued', () => {
  assertNothingRemoteQueued(direct);
  assertNothingRemoteQueued(proxied);
  assert.ok(direct.queue.list().length >= 3, 'the positive controls should have queued local mail');
});
