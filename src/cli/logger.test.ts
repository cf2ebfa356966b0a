/**
 * Golden tests of the text log format (log.format: text): exact lines for a few events, hostile characters
 * escaped as in the JSON format, the client's address first whatever the field order or child bindings.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createTextLogger, formatTextLine } from './logger.ts';

const TIME = new Date('2026-12-03T12:00:00.000Z');

function capture(level = 'info'): { lines: string[]; log: ReturnType<typeof createTextLogger> } {
  const lines: string[] = [];
  const log = createTextLogger({ write: (l) => { lines.push(l); }, now: () => TIME, pid: 4242 }, { level });
  return { lines, log };
}

test('text log: a refused command reads like Postfix NOQUEUE', () => {
  const { lines, log } = capture();
  log.warn('command refused', {
    client_ip: '192.0.2.9', session_id: 'k6.mx7.1', listener: 'mx', helo: 'client.example', mail_from: '<a@example.net>',
    rcpt: '<b@example.org>', command: 'RCPT', reply: '452 4.5.3 Error: too many recipients', reason: 'limit',
  });
  log.warn('command refused', {
    client_ip: '2001:db8::7', session_id: 'k6.mx7.2', listener: 'mx', helo: null, mail_from: null, command: 'MAIL',
    excerpt: 'FROM:<a b@c>', reply: '501 5.1.7 Bad sender address syntax', reason: 'syntax',
  });
  log.info('command refused', { client_ip: '192.0.2.9', session_id: null, listener: 'mx', helo: null, mail_from: null, command: null, after: 'RCPT', reply: '421 4.4.2 mx.example Error: timeout exceeded', reason: 'timeout' });
  assert.deepEqual(lines, [
    '2026-12-03T12:00:00.000Z relayguard[4242]: warn: command refused: client=[192.0.2.9] session_id=k6.mx7.1 listener=mx helo=<client.example> from=<a@example.net> to=<b@example.org> command=RCPT reply="452 4.5.3 Error: too many recipients" reason=limit\n',
    '2026-12-03T12:00:00.000Z relayguard[4242]: warn: command refused: client=[2001:db8::7] session_id=k6.mx7.2 listener=mx command=MAIL excerpt="FROM:<a b@c>" reply="501 5.1.7 Bad sender address syntax" reason=syntax\n',
    '2026-12-03T12:00:00.000Z relayguard[4242]: info: command refused: client=[192.0.2.9] listener=mx after=RCPT reply="421 4.4.2 mx.example Error: timeout exceeded" reason=timeout\n',
  ]);
});

test('text log: an AUTH failure with a hostile user name: escaped, and the real client first', () => {
  const { lines, log } = capture();
  // As the relay handler logs it: the user name before `client` in the call.
  log.warn('auth failed', {
    session_id: 's1', client_ip: '127.0.0.2', mechanism: 'PLAIN',
    sasl_username: '[6.6.6.6] "client_ip":"6.6.6.6" client=[6.6.6.6]\u2028\u009b31m\u202eevil\\x\r\nwarn: auth failed: client=[6.6.6.6]',
    client: '[127.0.0.2]',
  });
  assert.deepEqual(lines, [
    '2026-12-03T12:00:00.000Z relayguard[4242]: warn: auth failed: client=[127.0.0.2] session_id=s1 mechanism=PLAIN ' +
      'sasl_username="[6.6.6.6] \\"client_ip\\":\\"6.6.6.6\\" client=[6.6.6.6]\\u2028\\x9b31m\\u202eevil\\\\x\\x0d\\x0awarn: auth failed: client=[6.6.6.6]"\n',
  ]);
  assert.equal(lines[0]!.split('\n').length, 2, 'one line');
  assert.match(lines[0]!, /^[^[]*\[[^\]]*\][^[]*\[127\.0\.0\.2\]/, 'the first address in brackets after the pid is the client');
});

test('text log: hostile HELO and addresses keep their brackets but never break the line or hide a field', () => {
  const { lines, log } = capture();
  log.warn('relay decision', {
    session_id: 's2', client_ip: '127.0.0.2', listener: 'mx', helo: 'evil\u2066 helo', user: null, mail_from: '<"x y"@example.net>',
    rcpt: '<victim@remote.example>', action: 'reject', rule: 'default', reason: 'not local, not a relay domain',
    reply: '554 5.7.1 <victim@remote.example>: Relay access denied',
  });
  log.info('sender rejected', { client_ip: '127.0.0.2', mail_from: 'plain@example.net', empty: '', n: 3, ok: true, list: ['a@x', 'b@y'] });
  assert.deepEqual(lines, [
    '2026-12-03T12:00:00.000Z relayguard[4242]: warn: relay decision: client=[127.0.0.2] session_id=s2 listener=mx helo="<evil\\u2066 helo>" from="<\\"x y\\"@example.net>" to=<victim@remote.example> action=reject rule=default reason="not local, not a relay domain" reply="554 5.7.1 <victim@remote.example>: Relay access denied"\n',
    '2026-12-03T12:00:00.000Z relayguard[4242]: info: sender rejected: client=[127.0.0.2] from=<plain@example.net> empty="" n=3 ok=true list=a@x,b@y\n',
  ]);
});

test('text log: child bindings, nested objects, errors, levels and an event without fields', () => {
  const { lines, log } = capture('info');
  const child = log.child({ component: 'queue-runner', queue_id: 'Q1' });
  child.warn('delivery deferred', { client_ip: '192.0.2.1', reply: { code: 451, text: 'try\nlater' }, err: new Error('boom\u202e') });
  log.debug('not written at info');
  log.info('listening');
  log.error('stop failed', { err: 'Error: x' });
  assert.deepEqual(lines, [
    '2026-12-03T12:00:00.000Z relayguard[4242]: warn: delivery deferred: client=[192.0.2.1] component=queue-runner queue_id=Q1 reply.code=451 reply.text=try\\x0alater err="Error: boom\\u202e"\n',
    '2026-12-03T12:00:00.000Z relayguard[4242]: info: listening\n',
    '2026-12-03T12:00:00.000Z relayguard[4242]: error: stop failed: err="Error: x"\n',
  ]);
  const quiet = capture('silent');
  quiet.log.error('never');
  assert.deepEqual(quiet.lines, []);
});

test('text log: formatTextLine keeps client and client_ip apart when they differ', () => {
  assert.equal(
    formatTextLine('T', 1, 'info', 'm', { client_ip: '192.0.2.1', client: '[192.0.2.2]', a: 'b' }),
    'T relayguard[1]: info: m: client=[192.0.2.2] client_ip=192.0.2.1 a=b\n',
  );
  assert.equal(formatTextLine('T', 1, 'info', 'm', { client: 'not an address' }), 'T relayguard[1]: info: m: client="not an address"\n');
});
