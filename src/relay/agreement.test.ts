/**
 * Properties of the seams (field report 1): the parts that decide "is this address ours" must agree.
 *   1. For every address and client, the relay decision and the delivery route agree on local versus remote:
 *      a 'local' decision is routed to the local transport, a 'relay' decision never is, and every mailbox a
 *      local recipient expands to is routed locally too.
 *   2. A configured domain, a database domain and a recipient domain fold to the same form (or are all refused).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { canonicalize, parsePath } from '../core/address.ts';
import { createLocality } from '../core/locality.ts';
import { parseConfig } from '../config/load.ts';
import { decideRecipient, type RelayContext } from '../policy/relay.ts';
import { LocalRecipients } from '../policy/recipients.ts';
import { normalizeDomain } from '../policy/users.ts';
import { Router } from '../delivery/routing.ts';

const LOCAL = ['local.test', 'xn--bcher-kva.example'];
const OWN = ['192.0.2.10', '2001:db8::25'];

const domains = new Set(LOCAL);
const locality = createLocality({ domains: () => domains, ownAddresses: () => OWN });
const router = new Router({ localDomains: [], locality, localTransport: { kind: 'discard' }, smartHost: { host: 'smart.example', port: 25 } });
const recipients = new LocalRecipients(
  { aliases: (k) => (k === '@xn--bcher-kva.example' ? [{ address: 'alice@local.test', remote: false }] : null), isMailbox: (a) => a === 'alice@local.test' },
  { postmaster: null, abuse: null, delimiter: '+', foldCase: true, defaultDomain: () => 'local.test' },
  locality,
);

const upperSome = (s: string, mask: number): string => [...s].map((c, i) => ((mask >> (i % 30)) & 1 ? c.toUpperCase() : c)).join('');

const domainArb = fc.oneof(
  fc.tuple(fc.constantFrom(...LOCAL, 'Bücher.example', 'BU\u0308CHER.example', 'remote.test', 'local.test.remote.test', 'xn--lcal-test.example'), fc.nat(), fc.boolean())
    .map(([d, mask, dot]) => `${upperSome(d, mask)}${dot ? '.' : ''}`),
  fc.constantFrom(
    '[127.0.0.1]', '[127.8.9.10]', '[IPv6:::1]', '[ipv6:::FFFF:127.0.0.1]', '[IPv6:0:0:0:0:0:ffff:7f00:1]', '[0.0.0.0]', '[IPv6:::]',
    '[192.0.2.10]', '[IPv6:::ffff:192.0.2.10]', '[IPv6:2001:DB8:0:0::25]', '[192.0.2.11]', '[IPv6:2001:db8::26]', '[198.51.100.1]',
  ),
);
const localArb = fc.constantFrom('alice', 'ALICE', 'alice+x', 'bob', 'postmaster', 'Abuse', 'u%remote.test', 'remote.test!u', '"u@remote.test"', '"a b"', 'u\uFF05remote.test', 'jos\u00e9');
const ctxArb = fc.record({ trusted: fc.boolean(), user: fc.constantFrom(null, 'alice@local.test'), role: fc.constantFrom('mx' as const, 'submission' as const) });

test('property: the relay decision and the delivery route agree on local versus remote, for every address and client', () => {
  fc.assert(
    fc.property(localArb, domainArb, ctxArb, (local, domain, c) => {
      const p = parsePath(`<${local}@${domain}>`, { smtputf8: true, allowNull: false });
      fc.pre(p.ok);
      if (!p.ok) return;
      const rcpt = canonicalize(p.path.mailbox!);
      const ctx: RelayContext = { role: c.role, trusted: c.trusted, user: c.user, locality, relayDomains: new Set() };
      const d = decideRecipient(rcpt, ctx);
      const route = router.route(rcpt.address);
      if (d.action === 'local') {
        assert.equal(route.kind, 'local', `${rcpt.address}: local at RCPT, ${route.kind} at delivery`);
        const r = recipients.resolve(rcpt);
        if (r.known) for (const t of r.targets) assert.equal(router.route(t).kind, 'local', `${rcpt.address} -> ${t}`);
      } else if (d.action === 'relay') {
        assert.notEqual(route.kind, 'local', `${rcpt.address}: relayed at RCPT, local at delivery`);
        assert.ok(c.trusted || c.user !== null, `${rcpt.address}: relayed for a stranger`);
      }
      // Whatever the client: an own-address literal is never routed outward.
      if (rcpt.literal !== null && locality.isOwnLiteral(rcpt.domain)) assert.equal(route.kind, 'local');
    }),
    { numRuns: 3000 },
  );
});

const labelChars = fc.constantFrom(...'abcXYZ019-', 'ü', 'É', 'ß', '\u0430', 'u\u0308', '_');
const rawDomainArb = fc
  .tuple(fc.array(fc.array(labelChars, { minLength: 1, maxLength: 8 }).map((a) => a.join('')), { minLength: 1, maxLength: 3 }), fc.constantFrom('test', 'ORG', 'xn--p1ai', 'example', '123'), fc.boolean())
  .map(([labels, tld, dot]) => `${[...labels, tld].join('.')}${dot ? '.' : ''}`);

test('property: a configured domain, a database domain and a recipient domain fold to the same form, or are all refused', () => {
  fc.assert(
    fc.property(rawDomainArb, (raw) => {
      let fromConfig: string | null;
      try {
        fromConfig = parseConfig({ localDomains: [raw] }).localDomains[0] ?? null;
      } catch {
        fromConfig = null;
      }
      const fromDb = normalizeDomain(raw);
      const p = parsePath(`<x@${raw}>`, { smtputf8: true, allowNull: false });
      const fromRcpt = p.ok ? canonicalize(p.path.mailbox!).domain : null;
      assert.equal(fromConfig, fromDb, `config vs database for ${JSON.stringify(raw)}`);
      assert.equal(fromRcpt, fromDb, `recipient vs database for ${JSON.stringify(raw)}`);
    }),
    { numRuns: 3000 },
  );
});
