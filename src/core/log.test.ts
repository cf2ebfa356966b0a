import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EscapingLogger, MemoryLogger, escapeLogFields, escapeLogText } from './log.ts';

test('log: escapeLogText writes controls, line separators and bidi controls as visible escapes (F8)', () => {
  assert.equal(escapeLogText('plain ascii, émoji 😀 and 中文'), 'plain ascii, émoji 😀 and 中文');
  assert.equal(escapeLogText('a\r\nb\tc\x00d\x1b[2Je\x7f'), 'a\\x0d\\x0ab\\x09c\\x00d\\x1b[2Je\\x7f');
  assert.equal(escapeLogText('csi\u009b31m nel\u0085'), 'csi\\x9b31m nel\\x85');
  assert.equal(escapeLogText('ls\u2028ps\u2029'), 'ls\\u2028ps\\u2029');
  for (const c of ['\u202a', '\u202b', '\u202c', '\u202d', '\u202e', '\u2066', '\u2067', '\u2068', '\u2069', '\u200e', '\u200f', '\u061c']) {
    assert.equal(escapeLogText(`x${c}y`), `x\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}y`);
  }
  // The backslash is escaped too: a client typing "\u202e" literally is told apart from a real U+202E.
  assert.equal(escapeLogText('typed \\u202e'), 'typed \\\\u202e');
  assert.notEqual(escapeLogText('typed \\u202e'), escapeLogText('typed \u202e'));
});

test('log: escapeLogFields escapes deeply and writes the client address first', () => {
  const out = escapeLogFields({
    session_id: 's1', sasl_username: '[1.2.3.4]\u202e', nested: { 'k\n': ['v\u2028', 3, null] }, client: '[192.0.2.7]', client_ip: '192.0.2.7',
    err: new Error('kept'), n: 5,
  });
  assert.deepEqual(Object.keys(out), ['client', 'client_ip', 'session_id', 'sasl_username', 'nested', 'err', 'n']);
  assert.equal(out['sasl_username'], '[1.2.3.4]\\u202e');
  assert.deepEqual(out['nested'], { 'k\\x0a': ['v\\u2028', 3, null] });
  assert.ok(out['err'] instanceof Error, 'non-plain objects are left to the serializer');
  // The first bracketed address of the serialized line is the client's.
  assert.match(JSON.stringify(out), /^[^[]*\[192\.0\.2\.7\]/);
});

test('log: EscapingLogger escapes messages, fields and child bindings before the sink sees them', () => {
  const sink = new MemoryLogger();
  const log = new EscapingLogger(sink);
  log.warn('auth failed', { session_id: 'x', sasl_username: 'evil\u2028\u009b', client: '[127.0.0.1]' });
  log.child({ helo: 'h\u202e' }).info('m\r\n', { client_ip: '::1' });
  assert.deepEqual(sink.records, [
    { level: 'warn', msg: 'auth failed', fields: { client: '[127.0.0.1]', session_id: 'x', sasl_username: 'evil\\u2028\\x9b' } },
    { level: 'info', msg: 'm\\x0d\\x0a', fields: { helo: 'h\\u202e', client_ip: '::1' } },
  ]);
});
