/**
 * Admin-written relay rules (relayRules in relayguard.yaml) compiled into matchers for decideRecipient.
 * A rule matches when every condition it names matches. `config check` refuses rules that relay on the
 * sender alone (the sender never grants relay); compileRelayRules refuses them too, as a second lock.
 */
import { RelayguardError } from '../core/errors.ts';
import { NetworkList } from './networks.ts';
import type { RelayRuleMatcher } from './relay.ts';

export interface RelayRuleSpec {
  readonly match: { readonly network?: string; readonly senderDomain?: string; readonly recipientDomain?: string };
  readonly action: 'relay' | 'reject';
}

export function compileRelayRules(rules: readonly RelayRuleSpec[]): RelayRuleMatcher[] {
  return rules.map((rule, i) => {
    const { network, senderDomain, recipientDomain } = rule.match;
    if (rule.action === 'relay' && network === undefined && recipientDomain === undefined) {
      throw new RelayguardError('ERR_CONFIG_HAZARD', `relayRules[${i}] relays on the sender alone; the sender never grants relay`);
    }
    const nets = network === undefined ? null : new NetworkList([network]);
    const sd = senderDomain?.toLowerCase();
    const rd = recipientDomain?.toLowerCase();
    return {
      name: `relay-rule-${i + 1}`,
      action: rule.action,
      matches(q) {
        if (nets && !nets.contains(q.clientIp)) return false;
        if (sd !== undefined && q.senderDomain !== sd) return false;
        if (rd !== undefined && q.recipientDomain !== rd) return false;
        return true;
      },
    };
  });
}
