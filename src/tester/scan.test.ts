import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { RelayguardError } from '../core/errors.ts';
import {
  MAX_SCAN_TARGETS, checkTargets, doneFromOutput, expandRange, expandTargets, inRanges, isRangeEntry, looksLikeAddressRange, parseAddressRange,
  parseList, parseRange, parseRanges, previousFromOutput, rangeSize, renderProgress, renderProgressLine, scanExitCode, scanStatus, type ScanProgress,
} from './scan.ts';
import type { TargetResolver } from './target.ts';

/** A resolver that records every lookup: range targets must never reach it. */
function recordingResolver(): TargetResolver & { calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    async resolveMx(name) { calls.push(`MX ${name}`); return []; },
    async lookup(name) { calls.push(`A ${name}`); return name === 'mail-1.example.org' ? [{ address: '192.0.2.9', family: 4 }] : []; },
  };
}

const addressesOf = (text: string): string[] => [...parseAddressRange(text).ranges()].flatMap((r) => [...expandRange(r)]);

describe('scan: ranges', () => {
  it('parses CIDRs and single addresses, v4 and v6', () => {
    const r = parseRange('192.0.2.77/30');
    assert.equal(rangeSize(r), 4n);
    assert.deepEqual([...expandRange(r)], ['192.0.2.76', '192.0.2.77', '192.0.2.78', '192.0.2.79']);
    assert.deepEqual([...expandRange(parseRange('2001:db8::fe/127'))], ['2001:db8::fe', '2001:db8::ff']);
    assert.deepEqual([...expandRange(parseRange('[::1]'))], ['::1']);
    assert.equal(rangeSize(parseRange('10.0.0.0/8')), 16777216n);
    for (const bad of ['192.0.2.0/33', '192.0.2/24', 'example.com/24', '2001:db8::/129', '1.2.3.4/x']) assert.throws(() => parseRange(bad), RangeError, bad);
  });
  it('membership', () => {
    const allow = [parseRange('127.0.0.0/8'), parseRange('2001:db8::/32')];
    assert.ok(inRanges('127.1.2.3', allow));
    assert.ok(inRanges('2001:DB8::5', allow));
    assert.ok(!inRanges('128.0.0.1', allow));
    assert.ok(!inRanges('::ffff:127.0.0.1', [parseRange('2001:db8::/32')]));
    assert.ok(!inRanges('garbage', allow));
  });
  it('lists: comments, blank lines, commas and spaces', () => {
    assert.deepEqual(parseList('# header\n127.0.0.1\n\n127.0.0.2/31, mail.example # trailing\n'), ['127.0.0.1', '127.0.0.2/31', 'mail.example']);
    assert.ok(isRangeEntry('10.0.0.0/8'));
    assert.ok(isRangeEntry('::1'));
    assert.ok(!isRangeEntry('mail.example'));
  });
  it('expansion is deduplicated and capped', async () => {
    const { addresses } = await expandTargets(['127.0.0.1', '127.0.0.0/30'], { maxTargets: 100 });
    assert.deepEqual(addresses.map((a) => a.address), ['127.0.0.1', '127.0.0.0', '127.0.0.2', '127.0.0.3']);
    await assert.rejects(expandTargets(['10.0.0.0/8'], { maxTargets: 65_536 }), /Refusing to scan more than 65536/);
  });
  it('resume: addresses already in the output are done; torn lines are ignored', () => {
    const text = [
      JSON.stringify({ type: 'target', address: '127.0.0.1', verdict: 'CLOSED' }),
      JSON.stringify({ type: 'skipped', address: '127.0.0.2', reason: 'opted-out' }),
      JSON.stringify({ type: 'skipped', address: '127.0.0.9', reason: 'not-allowed' }),
      JSON.stringify({ type: 'summary' }),
      '{"type":"target","addre',
    ].join('\n');
    assert.deepEqual([...doneFromOutput(text)].sort(), ['127.0.0.1', '127.0.0.2']);
  });
  it('resume: statuses come back from the file (status field, or verdict and ports in older files)', () => {
    const noService = { reason: 'no-service' };
    const text = [
      JSON.stringify({ type: 'target', status: 'inconclusive', address: '127.0.0.1', verdict: 'INCONCLUSIVE' }),
      JSON.stringify({ type: 'target', address: '127.0.0.2', verdict: 'CLOSED', ports: [noService, noService] }),
      JSON.stringify({ type: 'target', address: '127.0.0.3', verdict: 'CLOSED', ports: [{ reason: 'refused' }, noService] }),
      JSON.stringify({ type: 'target', address: '127.0.0.4', verdict: 'OPEN', ports: [] }),
      JSON.stringify({ type: 'target', status: 'no-service', address: '127.0.0.5', verdict: 'CLOSED' }),
      JSON.stringify({ type: 'skipped', address: '127.0.0.6', reason: 'opted-out' }),
      JSON.stringify({ type: 'skipped', address: null, input: 'no.such.example', reason: 'unresolvable' }),
      JSON.stringify({ type: 'summary', open: 0 }),
      'null',
      '{"type":"target","address":"127.0.0.7","verd',
    ].join('\n');
    assert.deepEqual(Object.fromEntries(previousFromOutput(text)), {
      '127.0.0.1': 'inconclusive', '127.0.0.2': 'no-service', '127.0.0.3': 'closed', '127.0.0.4': 'open', '127.0.0.5': 'no-service', '127.0.0.6': 'skipped',
    });
  });

  it('status and exit code: nothing listening is no-service, not closed; open beats inconclusive beats the rest', () => {
    const port = (reason: string) => ({ reason }) as never;
    assert.equal(scanStatus({ verdict: 'CLOSED', ports: [port('no-service'), port('no-service')] }), 'no-service');
    assert.equal(scanStatus({ verdict: 'CLOSED', ports: [port('refused'), port('no-service'), port('no-service')] }), 'closed');
    assert.equal(scanStatus({ verdict: 'CLOSED', ports: [] }), 'closed');
    assert.equal(scanStatus({ verdict: 'INCONCLUSIVE', ports: [port('timeout')] }), 'inconclusive');
    assert.equal(scanStatus({ verdict: 'OPEN', ports: [port('proved')] }), 'open');
    assert.equal(scanExitCode({ open: 1, inconclusive: 3 }), 1);
    assert.equal(scanExitCode({ open: 0, inconclusive: 1 }), 2);
    assert.equal(scanExitCode({ open: 0, inconclusive: 0 }), 0);
  });
});

describe('scan: a-b ranges', () => {
  it('full addresses, the last octet, nmap octet ranges and IPv6 full addresses', () => {
    assert.deepEqual(addressesOf('127.0.0.1-127.0.0.4'), ['127.0.0.1', '127.0.0.2', '127.0.0.3', '127.0.0.4']);
    assert.deepEqual(addressesOf('127.0.0.254-127.0.1.1'), ['127.0.0.254', '127.0.0.255', '127.0.1.0', '127.0.1.1']);
    assert.deepEqual(addressesOf('127.0.0.1-3'), ['127.0.0.1', '127.0.0.2', '127.0.0.3']);
    assert.deepEqual(addressesOf('192.0.2.5-5'), ['192.0.2.5']);
    assert.deepEqual(addressesOf('192.0.1-2.7-8'), ['192.0.1.7', '192.0.1.8', '192.0.2.7', '192.0.2.8']);
    assert.deepEqual(addressesOf('10-11.0.0.1'), ['10.0.0.1', '11.0.0.1']);
    assert.deepEqual(addressesOf('[127.0.0.1]-[127.0.0.2]'), ['127.0.0.1', '127.0.0.2']);
    assert.deepEqual(addressesOf('2001:db8::fe-2001:db8::101'), ['2001:db8::fe', '2001:db8::ff', '2001:db8::100', '2001:db8::101']);
    assert.deepEqual(addressesOf('[::1]-[IPv6:::2]'), ['::1', '::2']);
    const nmap = parseAddressRange('192.0.1-3.1-254');
    assert.equal(nmap.size, 762n);
    assert.equal(nmap.pieces, 3n);
    assert.equal(nmap.family, 4);
  });

  it('huge ranges are sized without being expanded, and refused past --max-targets', () => {
    assert.equal(parseAddressRange('0.0.0.0-255.255.255.255').size, 1n << 32n);
    assert.equal(parseAddressRange('0-255.0-255.0-255.0-255').size, 1n << 32n);
    assert.equal(parseAddressRange('::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff').size, 1n << 128n);
    for (const big of ['10.0.0.0-10.255.255.255', '10.0-255.0-255.0-255', '2001:db8::-2001:db8::1:0', '::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff']) {
      assert.throws(() => checkTargets([big], { maxTargets: 65_536 }), (err: unknown) => err instanceof RelayguardError && err.code === 'ERR_USAGE' && /Refusing to scan more than 65536 addresses \(.* holds \d+/.test(err.message), big);
    }
    // the limit is on the sum of the targets
    checkTargets(['127.0.0.1-127.0.0.100', '127.0.1.0/25'], { maxTargets: 228 });
    assert.throws(() => checkTargets(['127.0.0.1-127.0.0.100', '127.0.1.0/25', '127.0.2.1-2'], { maxTargets: 229 }), /Refusing to scan more than 229/);
    assert.ok(MAX_SCAN_TARGETS >= 65_536);
  });

  it('malformed ranges are RangeErrors with the forms to use', () => {
    const bad = [
      '127.0.0.1-', '-127.0.0.1', '127.0.0.1-300', '127.0.0.20-127.0.0.1', '127.0.0.20-1', '127.0.0.1-2-3', '127.0.0-1', '127.0.0.0.1-2',
      '127.0.0.01-5', '127.0.0.1-05', '127.0.0.1-127.0.0.300', '127.0.0.01-127.0.0.5', '127.0.0.1-127.0.0', '127.0.0.1-::1', '::1-127.0.0.1', '2001:db8::1-ff', '2001:db8::1-2001:db8::g',
      '127.0.0.1-5/24', '127.0.0.1 -5', '1-2.3.4', '256-257.0.0.1', '127.0.0.x-5', '',
    ];
    for (const text of bad) assert.throws(() => parseAddressRange(text), RangeError, text);
    assert.throws(() => parseAddressRange('2001:db8::1-ff'), /IPv6 range needs a full address at both ends/);
    assert.throws(() => parseAddressRange('127.0.0.20-127.0.0.1'), /comes before the first/);
    assert.throws(() => parseAddressRange('127.0.0.9-1'), /runs backwards/);
    assert.throws(() => parseAddressRange('127.0.0.1-300'), /"300" is not an octet/);
    assert.throws(() => parseAddressRange('127.0.0.1-127.0.0.300'), /"127\.0\.0\.300" is not an IP address/);
    assert.throws(() => parseAddressRange('2001:db8::1-2001:db8::g'), /"2001:db8::g" is not an IP address/);
  });

  it('what looks like a range never goes to the resolver: malformed is a usage error, names stay names', async () => {
    for (const t of ['127.0.0.1-127.0.0.20', '127.0.0.1-20', '192.0.2.1-5', '10-11.0.0.1', '2001:db8::1-2001:db8::2', '127.0.0.1-300', '127.0.0.1-5/24', '127.0.0.1-127.0.0', '2001:db8::1-ff', '1.2-x', '-']) {
      assert.ok(looksLikeAddressRange(t), t);
    }
    for (const t of ['mail-1.example.org', '1-800-flowers.example', 'a-b', '127.0.0.1', '192.0.2.0/24', 'xn--bcher-kva.example']) assert.ok(!looksLikeAddressRange(t), t);
    for (const t of ['127.0.0.1-300', '127.0.0.20-127.0.0.1', '2001:db8::1-ff', '127.0.0.1-5/24', '127.0.0.1-127.0.0', '127.0.0.1/33']) {
      const resolver = recordingResolver();
      await assert.rejects(expandTargets([t], { maxTargets: 100, resolve: { resolver } }), (err: unknown) => err instanceof RelayguardError && err.code === 'ERR_USAGE', t);
      assert.deepEqual(resolver.calls, [], t);
    }
    const resolver = recordingResolver();
    const { addresses } = await expandTargets(['127.0.0.1-3', '127.0.0.2-127.0.0.4', 'mail-1.example.org'], { maxTargets: 100, resolve: { resolver } });
    assert.deepEqual(addresses.map((a) => [a.input, a.address]), [
      ['127.0.0.1-3', '127.0.0.1'], ['127.0.0.1-3', '127.0.0.2'], ['127.0.0.1-3', '127.0.0.3'], ['127.0.0.2-127.0.0.4', '127.0.0.4'], ['mail-1.example.org', '192.0.2.9'],
    ]);
    assert.deepEqual(resolver.calls, ['A mail-1.example.org']);
  });

  it('a malformed or oversized target fails before anything is resolved, wherever it is in the list', async () => {
    const resolver = recordingResolver();
    await assert.rejects(expandTargets(['mail-1.example.org', '127.0.0.1-300'], { maxTargets: 100, resolve: { resolver } }), /Bad range/);
    await assert.rejects(expandTargets(['mail-1.example.org', '10.0.0.0-10.0.1.0'], { maxTargets: 100, resolve: { resolver } }), /Refusing to scan more than 100/);
    assert.deepEqual(resolver.calls, []);
  });

  it('--allow and opt-out entries: addresses, CIDRs and a-b ranges', () => {
    const allow = ['127.0.0.1-127.0.0.3', '192.0.1-2.7-8', '2001:db8::/127'].flatMap(parseRanges);
    for (const ip of ['127.0.0.1', '127.0.0.3', '192.0.2.8', '2001:db8::1']) assert.ok(inRanges(ip, allow), ip);
    for (const ip of ['127.0.0.4', '192.0.1.9', '192.0.3.7', '2001:db8::2']) assert.ok(!inRanges(ip, allow), ip);
    assert.equal(parseRanges('192.0.1-2.7-8').length, 2);
    assert.equal(parseRanges('0.0.0.0-255.255.255.255').length, 1);
    assert.throws(() => parseRanges('0-255.0-255.2-255.1'), /pieces; give it as CIDR ranges/);
    assert.throws(() => parseRanges('127.0.0.1-300'), RangeError);
    assert.throws(() => parseRanges('mail.example'), RangeError);
  });
});

describe('scan: progress', () => {
  const p: ScanProgress = { total: 500, done: 120, open: 1, inconclusive: 3, closed: 100, noService: 16, skipped: 2, startedAt: 0 };

  it('a bar one column short of the terminal, with every count', () => {
    for (const width of [80, 120, 200]) {
      const line = renderProgress(p, 10_000, width);
      assert.equal(line.length, width - 1, `${width}: ${line}`);
      assert.match(line, /^\[=+> *\] 120\/500 +24% /);
      assert.match(line, /closed 100 open 1 inconcl 3 no-svc 16 skip 2$/);
    }
    assert.match(renderProgress(p, 10_000, 80), /\] 120\/500 +24% eta 32s closed/);
    assert.match(renderProgress(p, 10_000, 120), /\] 120\/500 +24% 12\.0\/s eta 32s closed/);
  });

  it('an unknown width (undefined, 0, NaN: a pty without a size, as under script -qfc) is 80 columns', () => {
    const at80 = renderProgress(p, 10_000, 80);
    for (const width of [undefined, 0, Number.NaN, -5]) assert.equal(renderProgress(p, 10_000, width), at80, String(width));
    assert.ok(at80.trim().length > 40);
  });

  it('a narrow terminal drops the rate, the ETA, then the bar; the counts stay as long as they fit', () => {
    const mid = renderProgress(p, 10_000, 72);
    assert.equal(mid.length, 71);
    assert.match(mid, /^\[=*>? *\] 120\/500 +24% closed 100/);
    const narrow = renderProgress(p, 10_000, 62);
    assert.equal(narrow.length, 61);
    assert.match(narrow, /^120\/500 +24% closed 100 open 1 inconcl 3 no-svc 16 skip 2 *$/);
    assert.equal(renderProgress(p, 10_000, 20).length, 19);
  });

  it('done, nothing to do, and the plain line for logs', () => {
    assert.match(renderProgress({ ...p, done: 500 }, 10_000, 80), /^\[=+\] 500\/500 100%/);
    assert.match(renderProgress({ ...p, total: 0, done: 0 }, 10_000, 80), /^\[=+\] 0\/0 100%/);
    assert.equal(renderProgressLine(p, 10_000), 'relayguard scan: 120/500 24% 12.0/s eta 32s closed 100 open 1 inconclusive 3 no-service 16 skipped 2');
  });
});
