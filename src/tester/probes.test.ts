import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { TRICKS, addressLiteral, controlRecipients, fillTemplate, mixedCase, renderTrick, selectTricks, type ProbeContext } from './probes.ts';

const CTX: ProbeContext = { sender: 'relaytest', recipient: 'rcpt', testerDomain: 'example.net', hostName: 'mx.target.test', domain: 'target.test', address: '192.0.2.25', unknownLocal: 'nosuchuser-abc123' };

describe('probes: the battery table', () => {
  it('has every catalogue variant V01-V22 (with the alternative forms) and the section-5 extras, ids unique', () => {
    const ids = TRICKS.map((t) => t.id);
    assert.equal(new Set(ids).size, ids.length);
    for (let i = 1; i <= 22; i++) assert.ok(ids.includes(`V${String(i).padStart(2, '0')}`), `V${i} missing`);
    for (const extra of ['V09b', 'V13b', 'V20b']) assert.ok(ids.includes(extra));
    for (let i = 1; i <= 11; i++) assert.ok(ids.includes(`X${String(i).padStart(2, '0')}`), `X${i} missing`);
    for (let i = 1; i <= 4; i++) assert.ok(ids.includes(`B0${i}`), `B0${i} missing`);
    for (const t of TRICKS) {
      assert.ok(t.title && t.exercises && t.seenIn, `${t.id} lacks a description`);
      assert.ok(t.rcptTo.length >= 1);
    }
  });

  it('renders every trick with no placeholder left and no CR, LF or NUL', () => {
    for (const t of TRICKS) {
      const r = renderTrick(t, CTX);
      assert.ok(r.ok, t.id);
      const all = [r.rendered.mailFrom, ...r.rendered.mailParams, ...r.rendered.rcptTo.flatMap((x) => [x.path, ...x.params]), ...r.rendered.preCommands].join(' ');
      assert.doesNotMatch(all, /[{}\r\n\0]/, `${t.id}: ${all}`);
    }
  });

  it('renders the classic forms exactly (nmap-compatible, but with our names)', () => {
    const get = (id: string) => { const r = renderTrick(TRICKS.find((t) => t.id === id)!, CTX); assert.ok(r.ok); return r.rendered; };
    assert.equal(get('V01').mailFrom, '<>');
    assert.equal(get('V08').rcptTo[0]!.path, '<rcpt%example.net@[192.0.2.25]>');
    assert.equal(get('V09').rcptTo[0]!.path, '<rcpt%example.net@mx.target.test>');
    assert.equal(get('V09b').rcptTo[0]!.path, '<rcpt%example.net@target.test>');
    assert.equal(get('V10').rcptTo[0]!.path, '<"rcpt@example.net">');
    assert.equal(get('V13').rcptTo[0]!.path, '<"rcpt@example.net"@[192.0.2.25]>');
    assert.equal(get('V15').rcptTo[0]!.path, '<@[192.0.2.25]:rcpt@example.net>');
    assert.equal(get('V17').rcptTo[0]!.path, '<example.net!rcpt>');
    assert.equal(get('V20').rcptTo[0]!.path, '<rcpt@example.net@>');
    assert.equal(get('V22').rcptTo[0]!.path, 'rcpt@example.net');
    assert.equal(get('V05').mailFrom, '<relaytest@target.test>');
    assert.equal(get('X03').rcptTo[0]!.path, '<rcpt@ExAmPlE.nEt>');
    assert.deepEqual(get('X05').rcptTo.map((r) => r.path), ['<postmaster>', '<rcpt@example.net>']);
    assert.deepEqual(get('X06').rcptTo[0]!.params, ['NOTIFY=NEVER', 'ORCPT=rfc822;rcpt@example.net']);
    assert.deepEqual(get('X09').preCommands, ['XCLIENT ADDR=192.0.2.25 NAME=localhost']);
  });

  it('writes IPv6 literals the RFC 5321 way: [IPv6:...] (nmap writes [2001:db8::1])', () => {
    assert.equal(addressLiteral('2001:db8::25'), '[IPv6:2001:db8::25]');
    assert.equal(addressLiteral('192.0.2.1'), '[192.0.2.1]');
    const r = renderTrick(TRICKS.find((t) => t.id === 'V08')!, { ...CTX, address: '2001:db8::25' });
    assert.ok(r.ok);
    assert.equal(r.rendered.mailFrom, '<relaytest@[IPv6:2001:db8::25]>');
    assert.equal(r.rendered.rcptTo[0]!.path, '<rcpt%example.net@[IPv6:2001:db8::25]>');
    const x = renderTrick(TRICKS.find((t) => t.id === 'X09')!, { ...CTX, address: '2001:db8::25' });
    assert.ok(x.ok);
    assert.equal(x.rendered.preCommands[0], 'XCLIENT ADDR=IPV6:2001:db8::25 NAME=localhost');
  });

  it('skips (not applicable) tricks that need a host name or domain the target lacks', () => {
    const noNames = { ...CTX, hostName: null, domain: null };
    const v03 = renderTrick(TRICKS.find((t) => t.id === 'V03')!, noNames);
    assert.equal(v03.ok, false);
    assert.match(!v03.ok ? v03.reason : '', /host name/);
    const v05 = renderTrick(TRICKS.find((t) => t.id === 'V05')!, noNames);
    assert.equal(v05.ok, false);
    assert.match(!v05.ok ? v05.reason : '', /domain/);
    assert.equal(renderTrick(TRICKS.find((t) => t.id === 'V08')!, noNames).ok, true);
    assert.equal(fillTemplate('<{u}@{H}>', noNames), null);
  });

  it('mixedCase keeps the domain, changes the bytes', () => {
    assert.equal(mixedCase('example.net'), 'ExAmPlE.nEt');
    assert.equal(mixedCase('example.net').toLowerCase(), 'example.net');
  });

  it('selectTricks picks by id, in battery order, and names unknown ids', () => {
    assert.deepEqual(selectTricks(['v08', 'V01']).map((t) => t.id), ['V01', 'V08']);
    assert.equal(selectTricks(undefined), TRICKS);
    assert.throws(() => selectTricks(['V99', 'nope']), /Unknown trick id "V99", "nope"/);
  });

  it('bounce tricks: a third-party sender ({u}@T: the tag in proof mode) and an unknown local recipient, IPv6 literal included', () => {
    const get = (id: string, ctx: ProbeContext = CTX) => { const r = renderTrick(TRICKS.find((t) => t.id === id)!, ctx); assert.ok(r.ok); return r.rendered; };
    assert.equal(get('B01').mailFrom, '<rcpt@example.net>');
    assert.equal(get('B01').rcptTo[0]!.path, '<nosuchuser-abc123@target.test>');
    assert.equal(get('B02').rcptTo[0]!.path, '<nosuchuser-abc123@[192.0.2.25]>');
    assert.equal(get('B03').rcptTo[0]!.path, '<postmaster@[192.0.2.25]>');
    assert.deepEqual(get('B04').mailParams, ['RET=FULL']);
    assert.equal(get('B02', { ...CTX, address: '2001:db8::25' }).rcptTo[0]!.path, '<nosuchuser-abc123@[IPv6:2001:db8::25]>');
    for (const t of TRICKS.filter((x) => x.kind === 'bounce')) assert.equal(t.mailFrom, '<{u}@{T}>', t.id);
  });

  it('control recipients: postmaster at the domain, the host, unqualified, the literal; unknown names left out', () => {
    assert.deepEqual(controlRecipients(CTX), ['<postmaster@target.test>', '<postmaster@mx.target.test>', '<postmaster>', '<postmaster@[192.0.2.25]>']);
    assert.deepEqual(controlRecipients({ ...CTX, hostName: null, domain: null, address: '::1' }), ['<postmaster>', '<postmaster@[IPv6:::1]>']);
    assert.deepEqual(controlRecipients({ ...CTX, hostName: 'target.test' }), ['<postmaster@target.test>', '<postmaster>', '<postmaster@[192.0.2.25]>']);
  });
});
