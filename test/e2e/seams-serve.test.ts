/**
 * The seams, against a real `relayguard serve` process (field report 1: F1, H4), from an untrusted address
 * (127.0.0.2; trustedNetworks is 127.0.0.1/32), with delivery running and every non-local route pointed at a
 * sink we control (delivery.smartHost). The whole-system invariant, checked after every suite: nothing addressed
 * to a non-local domain is queued from the stranger (no 'relay' decision for it), nothing reaches the sink,
 * whatever happens after acceptance (deliveries and bounces included), and no mailbox exists but the known ones.
 *
 *   F1  bounce relay: x@[own address] in every form (IPv4, IPv6, IPv4-mapped, loopback, unspecified, interface
 *       addresses), with RET=FULL and RET=HDRS and a forged third-party sender: refused at RCPT (550 5.1.1);
 *       postmaster@[own address] is accepted and delivered locally to the postmaster; no DSN leaves.
 *   H4  real local recipients: unknown user 550 5.1.1, alias, list, postmaster, abuse, +tag, case, no new mailboxes.
 *   The relay-trick battery and a bounded stateful fuzzer with the same invariant.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { startServe, addMailboxes, type ServeProcess } from '../../src/testing/serve-process.ts';
import { startFakeMta, type FakeMta } from '../../src/testing/fake-mta.ts';
import { SqliteDirectoryStore } from '../../src/store/index.ts';
import { p1, expectReply, sleep, type RawSmtpClient } from './hostile-helpers.ts';

const OUTSIDE = '127.0.0.2';
let serve: ServeProcess;
let sink: FakeMta;
let dataDir: string;
let accepted = 0; // messages accepted from the stranger (each to local mailboxes only)

/** Our own address literals, in every form the grammar accepts. */
function ownLiterals(): string[] {
  const out = ['[127.0.0.1]', '[IPv6:::1]', '[IPv6:::ffff:127.0.0.1]', '[IPv6:0:0:0:0:0:FFFF:7F00:1]', '[127.0.0.2]', '[127.9.9.9]', '[0.0.0.0]', '[IPv6:::]'];
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) {
      if (a.internal || a.address.includes('%')) continue;
      out.push(a.family === 'IPv4' ? `[${a.address}]` : `[IPv6:${a.address}]`);
    }
  }
  return out;
}

before(async () => {
  sink = await startFakeMta();
  dataDir = await mkdtemp(join(tmpdir(), 'relayguard-seams-'));
  await addMailboxes(dataDir, ['alice@local.test', 'bob@local.test', 'carol@local.test']);
  const aliases = new SqliteDirectoryStore(join(dataDir, 'relayguard.db'));
  await aliases.addAlias('sales@local.test', ['alice@local.test']);
  await aliases.addAlias('team@local.test', ['alice@local.test', 'bob@local.test']);
  await aliases.close();
  serve = await startServe({
    dataDir,
    mailboxes: [],
    config: {
      trustedNetworks: ['127.0.0.1/32'],
      recipients: { postmaster: 'carol@local.test' },
      dnsbl: { enabled: false },
      delivery: {
        enabled: true,
        // Every non-local route goes here: the sink must never see a connection.
        smartHost: `[127.0.0.1]:${sink.port}`,
        retry: { minimalBackoff: '1s', maximalBackoff: '2s', lifetime: '60s' },
      },
    },
  });
});

after(async () => {
  await serve?.stop();
  await sink?.close();
  await rm(dataDir, { recursive: true, force: true });
});

async function stranger(): Promise<RawSmtpClient> {
  return p1(serve.ports.mx, { localAddress: OUTSIDE, helo: 'attacker.example' });
}

function mailboxDirs(): string[] {
  const root = join(dataDir, 'mailboxes');
  if (!existsSync(root)) return [];
  const out: string[] = [];
  for (const d of readdirSync(root)) for (const l of readdirSync(join(root, d))) out.push(`${l}@${d}`);
  return out.sort();
}

function mailboxTexts(address: string): string[] {
  const [local, domain] = address.split('@');
  const dir = join(dataDir, 'mailboxes', domain!, local!, 'new');
  if (!existsSync(dir)) return [];
  return readdirSync(dir).map((f) => readFileSync(join(dir, f), 'utf8'));
}

async function waitDelivered(n: number): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (serve.logs.filter((l) => l['msg'] === 'recipient delivered').length < n) {
    if (Date.now() > deadline) throw new Error(`only ${serve.logs.filter((l) => l['msg'] === 'recipient delivered').length} of ${n} deliveries`);
    await sleep(50);
  }
}

/** The invariant: nothing relayed for the stranger, nothing sent outward, no bounce, only known mailboxes. */
async function assertInvariant(): Promise<void> {
  await sleep(300); // let the runner pick up anything just committed
  const relayed = serve.logs.filter((l) => l['msg'] === 'relay decision' && l['client_ip'] === OUTSIDE && l['action'] === 'relay');
  assert.deepEqual(relayed, [], 'a relay decision for the stranger');
  const accepts = serve.logs.filter((l) => l['msg'] === 'message accepted' && l['client_ip'] === OUTSIDE);
  assert.ok(accepts.every((l) => l['relay'] === false), 'a stranger\'s message with a relayed recipient');
  assert.equal(sink.sessions.length, 0, 'something left for a non-local destination');
  assert.deepEqual(serve.logs.filter((l) => l['msg'] === 'bounce queued' || l['msg'] === 'DSN queued'), [], 'a bounce was generated');
  for (const m of mailboxDirs()) assert.ok(['alice@local.test', 'bob@local.test', 'carol@local.test'].includes(m), `unexpected mailbox ${m}`);
}

test('F1: x@[own address] in every form, RET=FULL and RET=HDRS, forged sender: 550 5.1.1 at RCPT; postmaster@[own] delivered locally; nothing leaves', async () => {
  const forms = ownLiterals();
  for (const form of forms) {
    for (const ret of ['FULL', 'HDRS']) {
      const c = await stranger();
      try {
        expectReply(await c.cmd(`MAIL FROM:<victim@example.net> RET=${ret}`), 250, '2.1.0', c);
        expectReply(await c.cmd(`RCPT TO:<x@${form}>`), 550, '5.1.1', c);
        expectReply(await c.cmd(`RCPT TO:<x%victim.example@${form}>`), 554, '5.7.1', c);
        expectReply(await c.cmd(`RCPT TO:<@${form}:x@victim.example>`), 554, '5.7.1', c);
        expectReply(await c.cmd(`RCPT TO:<postmaster@${form}>`), 250, '2.1.5', c);
        expectReply(await c.cmd('DATA'), 354, undefined, c);
        expectReply(await c.cmd(`Subject: f1 ${form}\r\n\r\nPAYLOAD ${form} ${ret}\r\n.`), 250, '2.0.0', c);
        accepted++;
      } finally {
        c.close();
      }
    }
  }
  await waitDelivered(accepted);
  const texts = mailboxTexts('carol@local.test').join('\n');
  for (const form of forms) assert.ok(texts.includes(`PAYLOAD ${form} FULL`), `postmaster@${form} reached the postmaster`);
  await assertInvariant();
});

test('H4: unknown users 550 5.1.1; alias, list, postmaster, abuse, +tag and case reach the right mailboxes; no new mailbox', async () => {
  const before = serve.logs.filter((l) => l['msg'] === 'recipient delivered').length;
  const c = await stranger();
  try {
    expectReply(await c.cmd('MAIL FROM:<someone@example.net>'), 250, '2.1.0', c);
    const unknown = await c.cmd('RCPT TO:<nobody@local.test>');
    expectReply(unknown, 550, '5.1.1', c);
    assert.equal(unknown.lines.join(''), '550 5.1.1 <nobody@local.test>: Recipient address rejected: User unknown');
    for (const rcpt of ['sales@local.test', 'team@local.test', 'postmaster@local.test', 'abuse@local.test', 'ALICE@Local.Test', 'bob+newsletter@local.test', 'postmaster']) {
      expectReply(await c.cmd(`RCPT TO:<${rcpt}>`), 250, '2.1.5', c);
    }
    expectReply(await c.cmd('DATA'), 354, undefined, c);
    expectReply(await c.cmd('Subject: h4\r\n\r\nH4 BODY\r\n.'), 250, '2.0.0', c);
  } finally {
    c.close();
  }
  // alice (sales, team, ALICE), bob (team, +newsletter), carol (postmaster, abuse, <postmaster>): one copy each.
  await waitDelivered(before + 3);
  for (const m of ['alice@local.test', 'bob@local.test', 'carol@local.test']) {
    assert.equal(mailboxTexts(m).filter((t) => t.includes('H4 BODY')).length, 1, `one copy for ${m}`);
  }
  // A stranger guessing names creates nothing: every guess is refused, the session ends at the error limit.
  const g = await stranger();
  try {
    expectReply(await g.cmd('MAIL FROM:<x@example.net>'), 250, '2.1.0', g);
    let refused = 0;
    for (let i = 0; i < 30; i++) {
      const r = await g.cmd(`RCPT TO:<guess${i}@local.test>`);
      if (r.code === 421) break;
      expectReply(r, 550, '5.1.1', g);
      refused++;
    }
    assert.ok(refused >= 19, `refused ${refused}`);
  } finally {
    g.close();
  }
  assert.deepEqual(mailboxDirs(), ['alice@local.test', 'bob@local.test', 'carol@local.test']);
  await assertInvariant();
});

/** Relay tricks (hostile-inputs 1.3 and the V01-V22 battery) aimed at victim.example through every own form. */
const TRICKS = [
  '<u@victim.example>', '<u%victim.example@local.test>', '<u%victim.example@[127.0.0.1]>', '<"u@victim.example">',
  '<"u@victim.example"@local.test>', '<u@victim.example@local.test>', '<@local.test:u@victim.example>',
  '<@[127.0.0.1]:u@victim.example>', '<victim.example!u@local.test>', '<victim.example!u>', '<u@victim.example.>',
  '<U@VICTIM.EXAMPLE>', '<u@[192.0.2.1]>', '<u@[IPv6:2001:db8::1]>', '<u%victim.example@[IPv6:::ffff:127.0.0.1]>',
  '<"u%victim.example"@[127.0.0.1]>', '<u@xn--victim-0ta.example>', '<postmaster@victim.example>', '<u@local.test.victim.example>',
];

test('the relay-trick battery from a stranger against serve: every trick refused, nothing queued for a non-local domain or sent', async () => {
  for (const rcpt of TRICKS) {
    const c = await stranger();
    try {
      expectReply(await c.cmd('MAIL FROM:<x@local.test>'), 250, '2.1.0', c);
      const r = await c.cmd(`RCPT TO:${rcpt}`);
      assert.ok(r.code >= 500 && r.code < 600, `${rcpt}: ${r.lines.join(' | ')}`);
      const d = await c.cmd('DATA');
      assert.ok(d.code >= 500, `${rcpt}: DATA got ${d.code}`);
    } finally {
      c.close();
    }
  }
  // Look-alikes of the routing characters (NFKC folds them to % @ !) are routing too.
  const c = await stranger();
  try {
    expectReply(await c.cmd('MAIL FROM:<x@local.test> SMTPUTF8'), 250, '2.1.0', c);
    for (const ch of ['\uFF05', '\uFE6B', '\uFF20', '\uFF01']) {
      c.write(Buffer.from(`RCPT TO:<u${ch}victim.example@local.test>\r\n`, 'utf8'));
      const r = await c.readReply();
      assert.equal(r.code, 554, `${ch}: ${r.lines.join(' | ')}`);
    }
  } finally {
    c.close();
  }
  await assertInvariant();
});

/** A stateful fuzzer: random sessions of commands built from hostile pieces; the invariant must hold after all. */
test('bounded stateful fuzzer against serve from a stranger: the invariant holds (nothing relayed, nothing sent, no unknown mailbox)', { timeout: 180_000 }, async () => {
  const local = fc.constantFrom('alice', 'bob', 'x', 'postmaster', 'abuse', 'ALICE', 'alice+t', 'u%victim.example', 'victim.example!u', '"u@victim.example"', 'a.b', 'sales');
  const domain = fc.constantFrom('local.test', 'LOCAL.TEST.', 'victim.example', '[127.0.0.1]', '[IPv6:::1]', '[IPv6:::ffff:127.0.0.1]', '[192.0.2.7]', 'local.test.victim.example', 'xn--lcal-test-q0a.example');
  const address = fc.oneof(
    fc.tuple(local, domain).map(([l, d]) => `<${l}@${d}>`),
    fc.tuple(domain, local, domain).map(([r, l, d]) => `<@${r}:${l}@${d}>`),
    fc.constantFrom('<>', '<postmaster>', '<a@b@c>', '<u@>', 'u@victim.example', '<u@[127.1]>'),
  );
  const params = fc.constantFrom('', ' RET=FULL', ' RET=HDRS', ' NOTIFY=FAILURE,DELAY', ' SIZE=1000', ' BODY=8BITMIME', ' SMTPUTF8', ' ORCPT=rfc822;u@victim.example', ' XFOO=1');
  const command = fc.oneof(
    fc.tuple(address, params).map(([a, p]) => `MAIL FROM:${a}${p}`),
    fc.tuple(address, params).map(([a, p]) => `RCPT TO:${a}${p}`),
    fc.tuple(address, address).map(([a, b]) => `RCPT TO:${a}\r\nRCPT TO:${b}`),
    fc.constantFrom('DATA', 'RSET', 'NOOP', 'HELO x', 'EHLO y', 'VRFY alice', 'EXPN team', 'BDAT 5 LAST', 'AUTH PLAIN AGFsaWNlAHB3', 'STARTTLS', 'QUIT'),
  );
  const body = fc.constantFrom('Subject: fz\r\n\r\nFUZZ\r\n.', 'Subject: fz\r\n\r\n..\r\n.', 'To: u@victim.example\r\n\r\nx\r\n.', '.');
  let sessions = 0;
  await fc.assert(
    fc.asyncProperty(fc.array(command, { minLength: 1, maxLength: 8 }), body, async (cmds, data) => {
      sessions++;
      const c = await stranger();
      try {
        for (const cmd of cmds) {
          const lines = cmd.split('\r\n');
          let last = null;
          for (const line of lines) {
            last = await c.cmd(line).catch(() => null);
            if (last === null) return; // closed by the server
          }
          if (cmd === 'DATA' && last !== null && last.code === 354) await c.cmd(data).catch(() => null);
          if (cmd === 'QUIT' || cmd === 'STARTTLS' || cmd.startsWith('BDAT')) return; // the session is over or out of step
        }
      } finally {
        c.close();
      }
    }),
    { numRuns: Number(process.env['SEAMS_FUZZ_RUNS'] ?? 50), seed: process.env['SEAMS_FUZZ_SEED'] ? Number(process.env['SEAMS_FUZZ_SEED']) : undefined },
  );
  assert.ok(sessions > 0);
  await assertInvariant();
});
