import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { doneFromOutput, expandRange, expandTargets, inRanges, isRangeEntry, parseList, parseRange, rangeSize, renderProgress } from './scan.ts';

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
  it('progress line fits the terminal', () => {
    const line = renderProgress({ total: 500, done: 120, open: 1, inconclusive: 3, closed: 116, skipped: 0, startedAt: 0 }, 10_000, 80);
    assert.ok(line.length <= 80);
    assert.match(line, /^\[=+> *\] 120\/500 +24% 12\.0\/s eta 32s open 1 inconcl 3/);
  });
});
