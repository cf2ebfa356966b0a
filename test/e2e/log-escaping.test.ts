/**
 * F8 (field report 1): what clients type reaches the log of a real `relayguard serve` (JSON lines) escaped, and
 * the client's address is written before any field a client chose. An EHLO name and an AUTH user name carry
 * U+2028/U+2029, the C1 controls U+009B (CSI) and U+0085, and the bidi controls U+202E and U+2066, and the user
 * name holds a fake "[1.2.3.4]" for fail2ban's first-bracket filters. (C0 controls never get that far: the session
 * refuses them in both.)
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServe, type ServeProcess } from '../../src/testing/serve-process.ts';
import { RawSmtpClient } from '../../src/testing/smtp-client.ts';

let serve: ServeProcess;
before(async () => { serve = await startServe(); });
after(async () => {
  await serve?.stop();
  await serve?.cleanup();
});

/** Octets the session lets through in an EHLO name and an AUTH user name (C0 controls are refused earlier). */
const HOSTILE = '\u2028\u2029\u009b31m\u202eevil\u2066\u0085';
const HOSTILE_HELO = `helo${HOSTILE}.example`;
/** None of these may appear raw in any logged value. */
const RAW = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;

async function waitFor(pred: (l: Record<string, unknown>) => boolean): Promise<Record<string, unknown>> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const found = serve.logs.find(pred);
    if (found) return found;
    if (Date.now() > deadline) throw new Error(`no such log record; log:\n${serve.logs.map((l) => JSON.stringify(l)).join('\n')}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

function assertNoRaw(rec: Record<string, unknown>): void {
  const walk = (v: unknown, path: string): void => {
    if (typeof v === 'string') assert.doesNotMatch(v, RAW, `raw control or bidi character in ${path}: ${JSON.stringify(v)}`);
    else if (v !== null && typeof v === 'object') for (const [k, x] of Object.entries(v)) walk(x, `${path}.${k}`);
  };
  walk(rec, 'record');
}

test('F8 hostile EHLO and AUTH user names are escaped in the log; the client address comes first', async () => {
  const c = await RawSmtpClient.connect(serve.ports.submissions, { tls: true });
  try {
    assert.equal((await c.readReply()).code, 220);
    // The client writes latin1: pass the UTF-8 octets one per character.
    const ehlo = await c.cmd(Buffer.from(`EHLO ${HOSTILE_HELO}`, 'utf8').toString('latin1'));
    assert.equal(ehlo.code, 250, ehlo.lines.join(' | '));
    const user = `[1.2.3.4]${HOSTILE}@local.test`;
    const auth = await c.cmd(`AUTH PLAIN ${Buffer.from(`\0${user}\0wrong`, 'utf8').toString('base64')}`);
    assert.equal(auth.code, 535, auth.lines.join(' | '));
    await c.cmd('QUIT');
    const failed = await waitFor((l) => l['msg'] === 'auth failed');
    assertNoRaw(failed);
    assert.equal(failed['sasl_username'], '[1.2.3.4]\\u2028\\u2029\\x9b31m\\u202eevil\\u2066\\x85@local.test');
    const keys = Object.keys(failed);
    assert.ok(keys.indexOf('client') >= 0 && keys.indexOf('client') < keys.indexOf('sasl_username'), `field order: ${keys.join(', ')}`);
    assert.ok(keys.indexOf('client_ip') < keys.indexOf('sasl_username'), `field order: ${keys.join(', ')}`);
    // A first-bracket parser (fail2ban) finds the real client, not the address typed into the user name.
    assert.match(JSON.stringify(failed), /^[^[]*\[127\.0\.0\.1\]/);
    const closed = await waitFor((l) => l['msg'] === 'session closed' && typeof l['helo'] === 'string' && String(l['helo']).startsWith('helo'));
    assertNoRaw(closed);
    assert.equal(closed['helo'], 'helo\\u2028\\u2029\\x9b31m\\u202eevil\\u2066\\x85.example');
    const ckeys = Object.keys(closed);
    assert.ok(ckeys.indexOf('client_ip') < ckeys.indexOf('helo'), `field order: ${ckeys.join(', ')}`);
  } finally {
    c.close();
  }
  for (const rec of serve.logs) assertNoRaw(rec);
});
