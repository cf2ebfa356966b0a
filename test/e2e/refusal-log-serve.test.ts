/**
 * Field report 1, M1, against a real `relayguard serve`: a bad sender (501 5.1.7), a message over the size limit
 * (552 5.3.4) and a bare LF in the data (550 5.5.2) each leave a `command refused` line with the client, HELO,
 * sender and reply, in the JSON format and in the text format (log.format: text), hostile HELO characters
 * escaped in both.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServe, type ServeProcess } from '../../src/testing/serve-process.ts';
import { RawSmtpClient } from '../../src/testing/smtp-client.ts';

let json: ServeProcess;
let text: ServeProcess;
before(async () => {
  [json, text] = await Promise.all([
    startServe({ config: { limits: { messageSize: 20_000 } } }),
    startServe({ config: { limits: { messageSize: 20_000 }, log: { format: 'text' } } }),
  ]);
});
after(async () => {
  await Promise.all([json?.stop(), text?.stop()]);
  await Promise.all([json?.cleanup(), text?.cleanup()]);
});

/** EHLO with U+2028 and U+202E in the name (the client writes latin1: pass the UTF-8 octets). */
const HELO = 'm1\u2028\u202e.example';

/** The M1 reproduction: three refusals on the mx port. */
async function m1(serve: ServeProcess): Promise<void> {
  const c = await RawSmtpClient.connect(serve.ports.mx);
  try {
    assert.equal((await c.readReply()).code, 220);
    assert.equal((await c.cmd(Buffer.from(`EHLO ${HELO}`, 'utf8').toString('latin1'))).code, 250, c.transcript);
    assert.equal((await c.cmd('MAIL FROM:<a b@client.test>')).enhanced, '5.1.7', c.transcript);
    const size = await c.cmd('MAIL FROM:<big@client.test> SIZE=50000');
    assert.deepEqual([size.code, size.enhanced], [552, '5.3.4'], c.transcript);
    assert.equal((await c.cmd('MAIL FROM:<lf@client.test>')).code, 250, c.transcript);
    assert.equal((await c.cmd('RCPT TO:<u@local.test>')).code, 250, c.transcript);
    assert.equal((await c.cmd('DATA')).code, 354, c.transcript);
    c.write('Subject: lf\r\n\r\nbare\nlf\r\n.\r\n');
    const lf = await c.readReply();
    assert.deepEqual([lf.code, lf.enhanced], [550, '5.5.2'], c.transcript);
    await c.cmd('QUIT');
  } finally {
    c.close();
  }
}

async function waitFor<T>(what: string, get: () => T | undefined, dump: () => string): Promise<T> {
  for (let i = 0; i < 200; i++) {
    const v = get();
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`${what} never logged; log:\n${dump()}`);
}

test('M1 (JSON): each refusal is one `command refused` record, client first, HELO escaped', async () => {
  await m1(json);
  const records = await waitFor('three refusals', () => {
    const r = json.logs.filter((l) => l['msg'] === 'command refused');
    return r.length >= 3 ? r : undefined;
  }, () => json.logs.map((l) => JSON.stringify(l)).join('\n'));
  assert.equal(records.length, 3);
  const helo = 'm1\\u2028\\u202e.example';
  const pick = (r: Record<string, unknown>): unknown[] => [r['level'], r['client_ip'], r['helo'], r['mail_from'], r['command'], r['reply'], r['reason']];
  assert.deepEqual(records.map(pick), [
    ['warn', '127.0.0.1', helo, null, 'MAIL', '501 5.1.7 Bad sender address syntax', 'syntax'],
    ['warn', '127.0.0.1', helo, '<big@client.test>', 'MAIL', '552 5.3.4 Message size exceeds fixed limit', 'size'],
    ['warn', '127.0.0.1', helo, '<lf@client.test>', 'DATA', '550 5.5.2 Error: bare <LF> received', 'bare-lf'],
  ]);
  assert.equal(records[0]!['excerpt'], 'FROM:<a b@client.test>');
  for (const r of records) {
    const keys = Object.keys(r);
    assert.deepEqual(keys.slice(0, 4), ['level', 'time', 'service', 'client_ip'], `field order: ${keys.join(', ')}`);
    assert.equal(keys.at(-1), 'msg');
  }
});

test('M1 (log.format: text): one Postfix-like line per refusal', async () => {
  await m1(text);
  const lines = await waitFor('three refusals', () => {
    const r = text.lines.filter((l) => l.includes(': command refused: '));
    return r.length >= 3 ? r : undefined;
  }, () => text.lines.join('\n'));
  assert.equal(lines.length, 3);
  const prefix = String.raw`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z relayguard\[${text.pid}\]: warn: command refused: client=\[127\.0\.0\.1\] session_id=\S+ listener=mx helo=<m1\\u2028\\u202e\.example> `;
  assert.match(lines[0]!, new RegExp(`${prefix}command=MAIL excerpt="FROM:<a b@client\\.test>" reply="501 5\\.1\\.7 Bad sender address syntax" reason=syntax$`));
  assert.match(lines[1]!, new RegExp(`${prefix}from=<big@client\\.test> command=MAIL reply="552 5\\.3\\.4 Message size exceeds fixed limit" reason=size$`));
  assert.match(lines[2]!, new RegExp(`${prefix}from=<lf@client\\.test> command=DATA reply="550 5\\.5\\.2 Error: bare <LF> received" reason=bare-lf$`));
  // Every line of the text log is one event in the same shape, none of them JSON.
  for (const l of text.lines) assert.match(l, /^\d{4}-\d\d-\d\dT[\d:.]+Z relayguard\[\d+\]: (?:debug|info|warn|error): /, l);
  assert.equal(text.logs.length, 0);
});
