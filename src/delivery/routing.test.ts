import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Router, domainOf } from './routing.ts';

describe('routing', () => {
  it('domainOf: canonical domain after the last @', () => {
    assert.equal(domainOf('u@Example.ORG.'), 'example.org');
    assert.equal(domainOf('"a@b"@x.test'), 'x.test');
    assert.equal(domainOf('u@[ipv6:::1]'), '[IPv6:::1]');
    assert.equal(domainOf('postmaster'), '');
  });

  it('local domains → local transport; others → MX; per-domain overrides first', () => {
    const r = new Router({ localDomains: ['Local.Test'], localTransport: { kind: 'maildir', root: '/m' }, transports: { 'lmtp.test': { kind: 'lmtp', host: '127.0.0.1', port: 24 } } });
    assert.deepEqual(r.route('u@local.test.'), { kind: 'local', key: 'local:maildir:/m', transport: { kind: 'maildir', root: '/m' } });
    assert.equal(r.route('postmaster').kind, 'local');
    assert.deepEqual(r.route('u@remote.test'), { kind: 'mx', key: 'mx:remote.test', domain: 'remote.test' });
    assert.equal(r.route('u@lmtp.test').kind, 'local');
    assert.equal(r.route('u@[192.0.2.1]').kind, 'mx');
  });

  it('a smart host takes every non-local recipient; TLS required by default with AUTH', () => {
    const r = new Router({ localDomains: ['local.test'], smartHost: { host: 'smtp.isp.test', port: 587, auth: { username: 'u', password: 'p' } }, transports: { 'direct.test': 'mx' } });
    const s = r.route('x@remote.test');
    assert.equal(s.kind, 'smarthost');
    assert.ok(s.kind === 'smarthost' && s.tls === 'required' && s.verifyCertificate && s.port === 587);
    assert.equal(r.route('x@direct.test').kind, 'mx');
    assert.equal(r.route('x@local.test').kind, 'local');
    const noauth = new Router({ localDomains: [], smartHost: { host: 'relay.isp.test' } }).route('x@y.test');
    assert.ok(noauth.kind === 'smarthost' && noauth.tls === 'may' && !noauth.verifyCertificate && noauth.port === 25);
  });

  it('groups recipients by destination, keeping envelope order', () => {
    const r = new Router({ localDomains: ['local.test'] });
    const g = r.group([{ address: 'a@x.test' }, { address: 'b@y.test' }, { address: 'c@X.test' }, { address: 'd@local.test' }]);
    assert.deepEqual(g.map((x) => [x.route.key, x.recipients.map((y) => y.address)]), [
      ['mx:x.test', ['a@x.test', 'c@X.test']], ['mx:y.test', ['b@y.test']], ['local:none', ['d@local.test']],
    ]);
  });

  it('refuses a bad smart host', () => {
    assert.throws(() => new Router({ localDomains: [], smartHost: { host: 'a b', port: 25 } }));
    assert.throws(() => new Router({ localDomains: [], smartHost: { host: 'a', port: 70000 } }));
  });
});
