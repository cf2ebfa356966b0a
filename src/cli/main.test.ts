/**
 * The command line as a whole: help text for every command and option, `help <command...>`, the stderr line that
 * names the configuration and data directory (and its discovery order), what start-up loads, the Node.js version
 * check of bin/relayguard.js, npx without engine warnings, and the example configuration.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Command } from 'commander';
import { loadConfig } from '../config/load.ts';
import { checkConfig } from '../config/check.ts';
import { CONFIG_HELP, buildProgram, configNotice, main } from './main.ts';
import { registerTesterCommands } from './tester-commands.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const BIN = join(ROOT, 'bin', 'relayguard.js');
const EXAMPLE = join(ROOT, 'docs', 'relayguard.example.yaml');
const run = promisify(execFile);

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
function tempDir(): string {
  const d = realpathSync(mkdtempSync(join(tmpdir(), 'relayguard-main-')));
  dirs.push(d);
  return d;
}

async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const line = (s: string): string => (s.endsWith('\n') ? s : `${s}\n`);
  const code = await main(args, { out: (s) => out.push(line(s)), err: (s) => err.push(line(s)) });
  return { code, out: out.join(''), err: err.join('') };
}

/** Every command under `program`, depth first, with its full name. */
function commands(program: Command, prefix = ''): { name: string; cmd: Command }[] {
  const out: { name: string; cmd: Command }[] = [];
  for (const c of program.commands) {
    const name = `${prefix}${c.name()}`;
    out.push({ name, cmd: c }, ...commands(c, `${name} `));
  }
  return out;
}

describe('help', () => {
  it('every command, option and argument has help text', () => {
    const program = buildProgram({ out: () => {}, err: () => {} }, () => {}, { registerTester: registerTesterCommands });
    const all = commands(program);
    const names = all.map((c) => c.name);
    for (const expected of ['serve', 'queue list', 'test', 'scan', 'dnsbl add', 'user add', 'domain add', 'domain remove', 'domain list', 'alias add', 'dkim keygen', 'config show', 'config check']) {
      assert.ok(names.includes(expected), `${expected} is a command`);
    }
    const missing: string[] = [];
    for (const { name, cmd } of all) {
      if (cmd.description().trim() === '') missing.push(`${name}: no description`);
      for (const o of cmd.options) if ((o.description ?? '').trim() === '') missing.push(`${name} ${o.flags}: no description`);
      for (const a of cmd.registeredArguments) if ((a.description ?? '').trim() === '') missing.push(`${name} <${a.name()}>: no description`);
    }
    for (const o of program.options) if ((o.description ?? '').trim() === '') missing.push(`relayguard ${o.flags}: no description`);
    assert.deepEqual(missing, []);
  });

  it('relayguard help <command...> is <command...> --help; the top-level help documents the configuration search', async () => {
    for (const words of [['queue', 'list'], ['domain', 'add'], ['dnsbl', 'add'], ['user', 'add'], ['test'], ['config']]) {
      const viaHelp = await cli(['help', ...words]);
      const viaOption = await cli([...words, '--help']);
      assert.equal(viaHelp.code, 0, words.join(' '));
      assert.match(viaHelp.out, new RegExp(`^Usage: relayguard ${words.join(' ')} `));
      assert.equal(viaHelp.out, viaOption.out);
    }
    const top = await cli(['help']);
    assert.equal(top.code, 0);
    for (const c of ['serve', 'queue', 'test', 'scan', 'dnsbl', 'user', 'domain', 'alias', 'dkim', 'config']) assert.match(top.out, new RegExp(`\\n  ${c} `));
    assert.ok(top.out.includes(CONFIG_HELP.trim().split('\n')[0]!));
    assert.match(top.out, /1\. --config FILE\n {2}2\. \$RELAYGUARD_CONFIG\n {2}3\. \.\/relayguard\.yaml/);
    const sub = await cli(['queue', 'list', '--help']);
    assert.match(sub.out, /-q, --quiet/, 'subcommand help shows the global -q');
    assert.equal((await cli(['help', 'nosuch'])).code, 2);
  });

  it('README documents the configuration search order', () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    assert.match(readme, /--config FILE.*\$RELAYGUARD_CONFIG.*\.\/relayguard\.yaml.*embedded defaults/s);
    assert.match(readme, /-q/);
  });
});

describe('the configuration and data directory line (stderr)', () => {
  const saved = { cwd: process.cwd(), env: process.env['RELAYGUARD_CONFIG'] };
  after(() => {
    process.chdir(saved.cwd);
    if (saved.env === undefined) delete process.env['RELAYGUARD_CONFIG'];
    else process.env['RELAYGUARD_CONFIG'] = saved.env;
  });

  it('names the file, how it was found and the data directory; stdout stays clean for --json; -q leaves it out', async () => {
    delete process.env['RELAYGUARD_CONFIG'];
    const d = tempDir();
    const file = join(d, 'relayguard.yaml');
    writeFileSync(file, 'dataDir: ./spool\n');
    const empty = tempDir();
    process.chdir(empty);

    let r = await cli(['queue', 'list', '--json', '-c', file]);
    assert.equal(r.code, 0);
    assert.equal(r.out, '', 'nothing but JSON on stdout (an empty queue: no lines)');
    assert.equal(r.err, `relayguard: config ${file} (from --config); data ${join(d, 'spool')}\n`);

    r = await cli(['-q', 'queue', 'list', '-c', file]);
    assert.equal(r.err, '');
    assert.equal(r.out, 'Mail queue is empty\n');
    r = await cli(['queue', 'list', '--quiet', '-c', file]);
    assert.equal(r.err, '', '-q works after the command too');

    process.env['RELAYGUARD_CONFIG'] = file;
    r = await cli(['dnsbl', 'list']);
    assert.equal(r.err.split('\n')[0], `relayguard: config ${file} (from $RELAYGUARD_CONFIG); data ${join(d, 'spool')}`);
    delete process.env['RELAYGUARD_CONFIG'];

    process.chdir(d);
    r = await cli(['queue', 'list']);
    assert.equal(r.err, `relayguard: config ${file} (found in the working directory); data ${join(d, 'spool')}\n`);

    process.chdir(empty);
    r = await cli(['queue', 'list']);
    assert.equal(r.err, `relayguard: config embedded defaults (no --config, no $RELAYGUARD_CONFIG, no ./relayguard.yaml); data ${join(empty, 'relayguard-data')}\n`);
    process.chdir(saved.cwd);
  });

  it('the user command of field report M4 says which database it wrote', async () => {
    const d = tempDir();
    const file = join(d, 'relayguard.yaml');
    writeFileSync(file, 'dataDir: ./data\n');
    const r = await cli(['user', 'add', 'carol@example.test', '--password', 'a-good-password', '-c', file]);
    assert.equal(r.code, 0, r.err);
    assert.equal(r.out, 'added user carol@example.test\n');
    assert.equal(r.err, `relayguard: config ${file} (from --config); data ${join(d, 'data')}\n`);
  });

  it('configNotice for each source', () => {
    const c = { configFile: '/etc/relayguard/relayguard.yaml', dataDir: '/var/lib/relayguard' };
    assert.equal(configNotice('--config', c), 'relayguard: config /etc/relayguard/relayguard.yaml (from --config); data /var/lib/relayguard');
    assert.equal(configNotice('RELAYGUARD_CONFIG', c), 'relayguard: config /etc/relayguard/relayguard.yaml (from $RELAYGUARD_CONFIG); data /var/lib/relayguard');
  });
});

describe('start-up', () => {
  /** The modules a real `relayguard ARGS` process loads (a module hook writes each URL to a file). */
  async function modulesLoaded(args: string[], cwd: string): Promise<string[]> {
    const out = join(cwd, `modules-${Math.random().toString(36).slice(2)}.txt`);
    const hook = join(cwd, 'record-modules.mjs');
    writeFileSync(hook, `import { registerHooks } from 'node:module';
import { appendFileSync } from 'node:fs';
registerHooks({ load(url, context, next) { appendFileSync(process.env.RECORD_MODULES, url + '\\n'); return next(url, context); } });
`);
    const r = await run(process.execPath, ['--import', hook, BIN, ...args], { cwd, env: { ...process.env, RECORD_MODULES: out, NODE_DISABLE_COMPILE_CACHE: '1' } });
    assert.equal(r.stderr, '');
    return readFileSync(out, 'utf8').split('\n').filter((l) => l !== '');
  }

  it('queue list, dnsbl add and --version load neither the relay nor the tester nor the heavy packages', async () => {
    const d = tempDir();
    writeFileSync(join(d, 'relayguard.yaml'), 'dataDir: ./data\n');
    const heavy = ['/node_modules/mailauth/', '/node_modules/pino/', '/node_modules/selfsigned/', '/node_modules/dns-packet/', '/src/tester/', '/src/relay/', '/src/smtp/', '/src/delivery/', 'cli/serve.ts', 'cli/ordb-service.ts', 'cli/tester-commands.ts'];
    const queue = await modulesLoaded(['-q', 'queue', 'list'], d);
    assert.ok(queue.some((u) => u.includes('/src/queue/')), 'the recorder sees the modules');
    assert.deepEqual(queue.filter((u) => heavy.some((h) => u.includes(h)) || u.includes('/src/dnsbl/')), []);
    const dnsbl = await modulesLoaded(['-q', 'dnsbl', 'add', '192.0.2.1'], d);
    const heavyForDnsbl = [...heavy.filter((h) => h !== '/node_modules/dns-packet/'), '/src/queue/']; // the zone server's wire format comes with the dnsbl module
    assert.deepEqual(dnsbl.filter((u) => heavyForDnsbl.some((h) => u.includes(h))), []);
    const version = await modulesLoaded(['--version'], d);
    assert.deepEqual(version.filter((u) => [...heavy, '/node_modules/zod/', '/node_modules/yaml/', '/src/config/', '/src/queue/', '/src/dnsbl/', '/src/policy/'].some((h) => u.includes(h))), []);
  });

  it('bin/relayguard.js refuses an older Node.js with a message that names the way out, before loading anything', () => {
    const d = tempDir();
    const old = join(d, 'old-node.mjs');
    writeFileSync(old, "Object.defineProperty(process.versions, 'node', { value: '20.20.2' });\n");
    const r = spawnSync(process.execPath, ['--import', old, BIN, '--version'], { encoding: 'utf8' });
    assert.equal(r.status, 2);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /^relayguard: needs Node\.js 22\.19 or later; this is v\d+\.\d+\.\d+ /);
    assert.match(r.stderr, /npx relayguard \.\.\./);
    assert.match(r.stderr, new RegExp(`${join(ROOT, 'node_modules/.bin/node').replace(/[.]/g, '\\.')} ${BIN.replace(/[.]/g, '\\.')} \\.\\.\\.`));
  });

  it('npx relayguard prints no npm engine warning (EBADENGINE), even from a fresh npx cache', async () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { engines?: { node?: string } };
    assert.equal(pkg.engines?.node, undefined, 'npm compares engines.node with the Node that runs npm: the check is in bin/relayguard.js');
    const cache = tempDir();
    const r = await run('npx', ['relayguard', '--version'], {
      cwd: ROOT,
      env: { ...process.env, npm_config_cache: cache, npm_config_offline: 'true', npm_config_update_notifier: 'false', npm_config_yes: 'true' },
    });
    assert.equal(r.stdout.trim(), (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version);
    assert.doesNotMatch(r.stderr, /EBADENGINE|EBADDEVENGINES/);
    assert.equal(r.stderr, '');
  });
});

describe('docs/relayguard.example.yaml', () => {
  it('is valid for the real schema and config check finds nothing in it', async () => {
    const config = loadConfig({ file: EXAMPLE });
    assert.equal(config.hostname, 'mail.example.org');
    assert.deepEqual(config.listeners.map((l) => [l.role, l.port, l.tls]), [['mx', 25, 'starttls'], ['submission', 587, 'starttls'], ['submission', 465, 'implicit']]);
    assert.deepEqual(config.trustedNetworks, ['127.0.0.0/8', '::1/128']);
    assert.deepEqual(config.localDomains, ['example.org', 'example.net']);
    assert.equal(config.recipients.postmaster, 'alice@example.org');
    assert.deepEqual(config.recipients.aliasFiles, ['/etc/relayguard/aliases']);
    assert.equal(config.tls.cert, '/etc/letsencrypt/live/mail.example.org/fullchain.pem');
    assert.deepEqual(config.dnsblChecks.map((c) => c.zone), ['zen.spamhaus.org', 'bl.spamcop.net']);
    assert.equal(config.delivery.dkim.length, 1);
    assert.deepEqual(checkConfig(config), [], 'no errors and no warnings');
    const r = await cli(['config', 'check', '-c', EXAMPLE]);
    assert.equal(r.code, 0, r.out + r.err);
    assert.equal(r.out, `${EXAMPLE}: no hazards found\n`);
    const show = await cli(['-q', 'config', 'show', '-n', '--json', '-c', EXAMPLE]);
    assert.equal(show.code, 0);
    assert.equal((JSON.parse(show.out) as { config: { dataDir: string } }).config.dataDir, '/var/lib/relayguard');
  });

  it('every block it sets starts with a comment', () => {
    const lines = readFileSync(EXAMPLE, 'utf8').split('\n');
    for (let i = 0; i < lines.length; i++) {
      const top = /^([a-zA-Z]+):/.exec(lines[i]!);
      if (top === null) continue;
      let start = i;
      while (start > 0 && lines[start - 1]!.trim() !== '') start--;
      assert.match(lines[start]!, /^# /, `the paragraph with ${top[1]} starts with a comment`);
    }
  });
});

describe('serve with store.postgres', () => {
  it('exits 2 with ERR_STORE_UNAVAILABLE (never the password) when PostgreSQL cannot be reached, instead of falling back to the embedded database', async () => {
    const d = tempDir();
    const file = join(d, 'relayguard.yaml');
    writeFileSync(file, `dataDir: ${join(d, 'data')}\nstore: { postgres: { url: "postgresql://relayguard:s3cret-pw@127.0.0.1:1/relayguard" } }\nlisteners: []\ndnsbl: { enabled: false }\n`);
    const r = await cli(['serve', '--config', file]);
    assert.equal(r.code, 2);
    assert.match(r.err, /ERR_STORE_UNAVAILABLE/);
    assert.doesNotMatch(r.err + r.out, /s3cret-pw/);
  });
});
