/**
 * `relayguard user` and `relayguard domain`, through main() as the command line runs them, and `user add -i`
 * (bulk import) also through a real process reading standard input. The CLI hashes with the production scrypt
 * cost (about 0.1 s a password), so the files stay small.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { testDirectory } from '../testing/directory.ts';
import { main } from './main.ts';
import { parseUserLines } from './user-commands.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function workDir(): { dir: string; config: string; db: string } {
  const dir = realpathSync(mkdtempSync(join(tmpdir(), 'relayguard-user-cli-')));
  dirs.push(dir);
  const config = join(dir, 'relayguard.yaml');
  writeFileSync(config, 'dataDir: ./data\nlocalDomains: [example.org]\n');
  return { dir, config, db: join(dir, 'data', 'relayguard.db') };
}

async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const line = (s: string): string => (s.endsWith('\n') ? s : `${s}\n`);
  const code = await main(['-q', ...args], { out: (s) => out.push(line(s)), err: (s) => err.push(line(s)) });
  return { code, out: out.join(''), err: err.join('') };
}

async function names(db: string): Promise<string[]> {
  if (!existsSync(db)) return [];
  const s = testDirectory(db);
  try { return (await s.list()).map((u) => u.name); } finally { await s.close(); }
}

async function authenticates(db: string, name: string, password: string): Promise<boolean> {
  const s = testDirectory(db);
  try { return await s.authenticate(name, password); } finally { await s.close(); }
}

const SECRETS = ['Alice-s3cret', 'bob pw with spaces', 'Carol#hash', 'x'.repeat(300), 'pw-of-the-bad-address-line', 'pw-of-the-repeat'];

describe('relayguard user add -i', () => {
  it('checks every line first: a bad line names its number, never a password, and nothing is added', async () => {
    const w = workDir();
    const file = join(w.dir, 'users.txt');
    writeFileSync(file, [
      '# name password addresses',
      `alice@example.org ${SECRETS[0]}`,
      '',
      `carol ${SECRETS[2]} carol@example.org @example.net`,
      'dave@example.org',
      `x@ ${SECRETS[4]}`,
      `erin ${SECRETS[3]}`,
      `frank ${SECRETS[4]} not-an-address`,
      `ALICE@example.org ${SECRETS[5]}`,
    ].join('\n'), { mode: 0o600 });
    const r = await cli(['user', 'add', '-i', file, '-c', w.config]);
    assert.equal(r.code, 1);
    assert.deepEqual(r.err.trimEnd().split('\n').map((l) => l.replace(/^relayguard: .*users\.txt: /, '')), [
      'line 5: no password: expected NAME PASSWORD [ADDRESS ...]',
      'line 6: the user name (first column) is not valid: it contains "@" but is not a valid address',
      'line 7: the password (second column) is not valid: it is longer than 255 bytes',
      'line 8: address 1 is not valid (expected local@domain or @domain)',
      'line 9: user alice@example.org is also on line 2',
    ]);
    assert.match(r.out, /^nothing imported from .*users\.txt: 2 good, 0 already there \(left unchanged\), 5 invalid; fix the lines above, or add --keep-going/);
    for (const s of SECRETS) assert.ok(!r.out.includes(s) && !r.err.includes(s), 'no password is printed');
    assert.deepEqual(await names(w.db), []);

    const k = await cli(['user', 'add', '-i', file, '--keep-going', '--json', '-c', w.config]);
    assert.equal(k.code, 1, 'bad lines still make the exit code 1');
    for (const s of SECRETS) assert.ok(!k.out.includes(s) && !k.err.includes(s), 'no password in the JSON report');
    const report = JSON.parse(k.out) as { applied: boolean; counts: Record<string, number>; lines: { line: number; user?: string; outcome: string }[] };
    assert.equal(report.applied, true);
    assert.deepEqual(report.counts, { added: 2, exists: 0, invalid: 5, skipped: 0 });
    assert.deepEqual(report.lines.filter((l) => l.outcome === 'added').map((l) => [l.line, l.user]), [[2, 'alice@example.org'], [4, 'carol']]);
    assert.deepEqual(await names(w.db), ['alice@example.org', 'carol']);
    assert.equal(await authenticates(w.db, 'alice@example.org', SECRETS[0]!), true);
    assert.equal(await authenticates(w.db, 'carol', SECRETS[2]!), true);
    const list = await cli(['user', 'list', '--json', '-c', w.config]);
    assert.deepEqual((JSON.parse(list.out) as { name: string; addresses: string[] }[]).find((u) => u.name === 'carol')?.addresses, ['@example.net', 'carol@example.org']);

    // Again, fixed: the users already there are left as they are, the rest added.
    writeFileSync(file, `alice@example.org\tanother-password\nbob\t${SECRETS[1]}\n`);
    const again = await cli(['user', 'add', '-i', file, '--format', 'tsv', '-c', w.config]);
    assert.equal(again.code, 0, again.err);
    assert.match(again.out, /^imported .*users\.txt: 1 user added in [\d.]+ s, 1 already there \(left unchanged\), 0 invalid$/m);
    assert.equal(await authenticates(w.db, 'alice@example.org', SECRETS[0]!), true, 'an existing user keeps the password');
    assert.equal(await authenticates(w.db, 'bob', SECRETS[1]!), true, 'tsv: a password with spaces');
  });

  it('reads standard input with "-" in a real process, and warns about a password file others can read', async () => {
    const w = workDir();
    const input = `# from a pipe\nzoe@example.org Zoe-pw-1\nyann Yann-pw-2 yann@example.org\n`;
    const r = spawnSync(process.execPath, [join(ROOT, 'bin', 'relayguard.js'), 'user', 'add', '-i', '-', '-c', w.config], { input, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^imported standard input: 2 users added in [\d.]+ s, 0 already there/);
    assert.equal(r.stderr, `relayguard: config ${w.config} (from --config); data ${join(w.dir, 'data')}\n`);
    assert.deepEqual(await names(w.db), ['yann', 'zoe@example.org']);

    const file = join(w.dir, 'open.txt');
    writeFileSync(file, 'zoe@example.org Zoe-pw-1\n');
    chmodSync(file, 0o644);
    const o = spawnSync(process.execPath, [join(ROOT, 'bin', 'relayguard.js'), '-q', 'user', 'add', '-i', file, '-c', w.config], { encoding: 'utf8' });
    assert.equal(o.status, 0);
    assert.match(o.stderr, /warning: .*open\.txt holds passwords and other users can read it: chmod 600 it/);
    assert.match(o.stdout, /nothing to add from .*: 1 already there/);
  });

  it('usage errors exit 2', async () => {
    const w = workDir();
    const file = join(w.dir, 'u.txt');
    writeFileSync(file, 'a b\n', { mode: 0o600 });
    for (const [args, pattern] of [
      [['user', 'add', 'someone', '-i', file], /a user name or --input FILE, not both/],
      [['user', 'add', '-i', file, '--password', 'x'], /the passwords and addresses come from the file/],
      [['user', 'add', '-i', file, '--jobs', '0'], /--jobs takes a whole number from 1 to 16/],
      [['user', 'add', '-i', file, '--format', 'csv'], /--format takes words or tsv/],
      [['user', 'add', 'someone', '--keep-going'], /--keep-going goes with --input FILE/],
      [['user', 'add'], /give a user name, or --input FILE/],
      [['user', 'add', '-i', join(w.dir, 'missing.txt')], /--input: cannot read .*missing\.txt: ENOENT/],
    ] as const) {
      const r = await cli([...args, '-c', w.config]);
      assert.equal(r.code, 2, args.join(' '));
      assert.match(r.err, pattern);
    }
    assert.ok(!existsSync(w.db), 'a usage error creates no database');
  });
});

describe('relayguard user and domain', () => {
  it('add, passwd, list, remove; domains add, list, remove', async () => {
    const w = workDir();
    assert.equal((await cli(['user', 'add', 'bob@example.org', '--password', 'pw-one', '--address', '@example.net', '-c', w.config])).out, 'added user bob@example.org\n');
    assert.equal((await cli(['user', 'passwd', 'bob@example.org', '--password', 'pw-two', '-c', w.config])).out, 'password changed for bob@example.org\n');
    assert.equal(await authenticates(w.db, 'bob@example.org', 'pw-two'), true);
    assert.equal((await cli(['user', 'list', '-c', w.config])).out, 'bob@example.org  @example.net bob@example.org\n');
    assert.equal((await cli(['domain', 'add', 'Example.NET', '-c', w.config])).out, 'added local domain example.net\n');
    assert.equal((await cli(['domain', 'list', '-c', w.config])).out, 'example.org  (config)\nexample.net  (database)\n');
    assert.equal((await cli(['domain', 'remove', 'example.net', '-c', w.config])).out, 'removed local domain example.net\n');
    assert.equal((await cli(['user', 'remove', 'bob@example.org', '-c', w.config])).out, 'removed user bob@example.org\n');
    const r = await cli(['user', 'remove', 'bob@example.org', '-c', w.config]);
    assert.equal(r.code, 2);
    assert.match(r.err, /ERR_USER_NOT_FOUND/);
  });
});

describe('parseUserLines', () => {
  it('words and tsv', () => {
    assert.deepEqual(parseUserLines('# c\r\n  alice  pw#1  a@x.org @y.org \r\n\nbob\n', 'words'), [
      { line: 2, name: 'alice', password: 'pw#1', addresses: ['a@x.org', '@y.org'] },
      { line: 4, name: 'bob', password: undefined, addresses: [] },
    ]);
    assert.deepEqual(parseUserLines('alice\tpw with spaces\ta@x.org, @y.org\n  # comment\nbob\n', 'tsv'), [
      { line: 1, name: 'alice', password: 'pw with spaces', addresses: ['a@x.org', '@y.org'] },
      { line: 3, name: 'bob', password: undefined, addresses: [] },
    ]);
  });
});
