import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compileRelayRules } from './relay-rules.ts';
import { decideRecipient, type RelayContext } from './relay.ts';
import { canonicalize, parsePath } from '../core/address.ts';

const rcpt = (s: string) => {
  const p = parsePath(s, { smtputf8: false, allowNull: false });
  assert.ok(p.ok);
  return canonicalize(p.path.mailbox!);
};
const base: RelayContext = { role: 'mx', trusted: false, user: null, localDomains: new Set(['local.test']), relayDomains: new Set(), localAddresses: new Set() };

test('relay rules: network rule relays, order decides, default still denies', () => {
  const rules = compileRelayRules([
    { match: { network: '192.0.2.0/24', recipientDomain: 'blocked.test' }, action: 'reject' },
    { match: { network: '192.0.2.0/24' }, action: 'relay' },
  ]);
  assert.equal(decideRecipient(rcpt('<u@remote.test>'), { ...base, rules, clientIp: '192.0.2.7' }).action, 'relay');
  assert.equal(decideRecipient(rcpt('<u@blocked.test>'), { ...base, rules, clientIp: '192.0.2.7' }).action, 'reject');
  assert.equal(decideRecipient(rcpt('<u@remote.test>'), { ...base, rules, clientIp: '198.51.100.1' }).action, 'reject');
  // Routed addresses are refused before any rule.
  assert.equal(decideRecipient(rcpt('<u%remote.test@local.test>'), { ...base, rules, clientIp: '192.0.2.7' }).action, 'reject');
  // Local domains are accepted whatever the rules say.
  assert.equal(decideRecipient(rcpt('<u@local.test>'), { ...base, rules, clientIp: '192.0.2.7' }).action, 'local');
});

test('relay rules: a sender-only relay rule is refused', () => {
  assert.throws(() => compileRelayRules([{ match: { senderDomain: 'example.org' }, action: 'relay' }]), /sender alone/);
});
