/**
 * Interop with `openssl s_client` against a real `relayguard serve` (field report 1, F2 and F9): typing "R" to
 * renegotiate over implicit TLS and over `-starttls smtp` fails and ends the client, a normal session on the same
 * listeners still works, a TLS 1.2 client offering only CBC suites is refused, and GCM or ChaCha20 clients are
 * served, the server choosing the suite.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ServeProcess } from '../../src/testing/serve-process.ts';
import { requirePeer, run, startOutsideServe } from './peers.ts';

const OPENSSL = '/usr/bin/openssl';

let serve: ServeProcess;
before(async () => {
  requirePeer(OPENSSL, 'openssl');
  serve = await startOutsideServe();
});
after(async () => {
  await serve?.stop();
  await serve?.cleanup();
});

type Mode = 'implicit' | 'starttls';

function target(mode: Mode): string[] {
  return mode === 'implicit'
    ? ['-connect', `127.0.0.1:${serve.ports.submissions}`]
    : ['-connect', `127.0.0.1:${serve.ports.mx}`, '-starttls', 'smtp'];
}

/** Output that shows the session is up: the 220 greeting inside TLS, or (STARTTLS) the end of the handshake summary. */
function readyMark(mode: Mode): RegExp {
  return mode === 'implicit' ? /^220 .*ESMTP/m : /Extended master secret|Verify return code/;
}

/**
 * Runs s_client interactively: each step waits until the output since the previous step matches `after`, then
 * types `send`; then waits for s_client to exit. SIGKILL after 15 s (a hang guard: s_client that renegotiated
 * keeps running, which the assertions then report).
 */
function interact(args: readonly string[], steps: readonly { after: RegExp; send: string }[]): Promise<{ code: number | null; output: string; killed: boolean }> {
  return new Promise((resolve, reject) => {
    const child = spawn(OPENSSL, ['s_client', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    let next = 0;
    let from = 0; // each step looks only at the output after the previous step's input
    let killed = false;
    const onData = (d: Buffer): void => {
      output += d.toString('latin1');
      while (next < steps.length && steps[next]!.after.test(output.slice(from))) {
        from = output.length;
        child.stdin.write(steps[next++]!.send);
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.stdin.on('error', () => {});
    const guard = setTimeout(() => { killed = true; child.kill('SIGKILL'); }, 15_000);
    child.once('error', (err) => { clearTimeout(guard); reject(err); });
    child.once('close', (code) => { clearTimeout(guard); resolve({ code, output, killed }); });
  });
}

for (const mode of ['implicit', 'starttls'] as const) {
  test(`F2 openssl s_client ${mode === 'implicit' ? 'on implicit TLS' : '-starttls smtp'}: "R" renegotiation is refused`, async () => {
    const r = await interact([...target(mode), '-tls1_2', '-crlf', '-servername', 'localhost'], [{ after: readyMark(mode), send: 'R\n' }]);
    assert.equal(r.killed, false, `s_client still ran 15 s after "R" (renegotiated?):\n${r.output.slice(-2000)}`);
    assert.match(r.output, /RENEGOTIATING/, 'the renegotiation was attempted');
    assert.match(r.output, /no renegotiation/i, `renegotiation not refused:\n${r.output.slice(-2000)}`);
    assert.notEqual(r.code, 0);
  });

  test(`F2 openssl s_client ${mode}: a normal session still works`, async () => {
    // Lower-case "quit": s_client reads a line starting with "Q" as its own quit command.
    const r = await interact([...target(mode), '-crlf', '-servername', 'localhost'], [
      { after: readyMark(mode), send: 'EHLO client.test\n' },
      // The whole EHLO reply (with -starttls, s_client also prints the last line of its own EHLO's reply).
      { after: /^250-mx\.local\.test[\s\S]*^250 /m, send: 'NOOP\n' },
      { after: /^250 2\.0\.0 Ok/m, send: 'quit\n' },
    ]);
    assert.equal(r.killed, false, r.output.slice(-2000));
    assert.match(r.output, /^250 2\.0\.0 Ok/m, r.output.slice(-2000));
    assert.match(r.output, /^221 2\.0\.0/m, r.output.slice(-2000));
  });
}

/** One s_client handshake with TLS 1.2 and a cipher list; the negotiated cipher, or null when it failed. */
async function negotiated(mode: Mode, cipher: string): Promise<{ cipher: string | null; output: string }> {
  const r = await run(OPENSSL, ['s_client', ...target(mode), '-tls1_2', '-cipher', cipher, '-servername', 'localhost', '-brief'], {
    input: 'QUIT\n', timeoutMs: 15_000,
  });
  const output = `${r.stdout}\n${r.stderr}`;
  const m = /Ciphersuite: (\S+)/.exec(output) ?? /Cipher is (\S+)/.exec(output);
  return { cipher: m && m[1] !== '(NONE)' ? m[1]! : null, output };
}

for (const mode of ['implicit', 'starttls'] as const) {
  test(`F9 openssl s_client -tls1_2 ${mode}: CBC-only clients fail, GCM and ChaCha20 work, server order wins`, async () => {
    for (const cbc of ['AES128-SHA', 'ECDHE-RSA-AES128-SHA', 'ECDHE-ECDSA-AES128-SHA', 'ECDHE-ECDSA-AES256-SHA384']) {
      const r = await negotiated(mode, cbc);
      assert.equal(r.cipher, null, `${cbc} was accepted:\n${r.output}`);
      assert.match(r.output, /handshake failure|no shared cipher|alert/i, r.output);
    }
    for (const good of ['ECDHE-ECDSA-AES128-GCM-SHA256', 'ECDHE-ECDSA-AES256-GCM-SHA384', 'ECDHE-ECDSA-CHACHA20-POLY1305']) {
      const r = await negotiated(mode, good);
      assert.equal(r.cipher, good, r.output);
    }
    const ordered = await negotiated(mode, 'ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-SHA');
    assert.equal(ordered.cipher, 'ECDHE-ECDSA-AES256-GCM-SHA384', ordered.output);
  });
}
