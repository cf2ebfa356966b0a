import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { VERSION, buildProgram } from './main.ts';
import { renderManPage } from './manpage.ts';
import { registerTesterCommands } from './tester-commands.ts';

const PAGE = join(import.meta.dirname, '..', '..', 'docs', 'relayguard.1');

test('docs/relayguard.1 is the manual page the command definitions give (RELAYGUARD_UPDATE_DOCS=1 rewrites it)', () => {
  const program = buildProgram({ out: () => {}, err: () => {} }, () => {}, { registerTester: registerTesterCommands });
  const page = renderManPage(program, { version: VERSION });
  if (process.env['RELAYGUARD_UPDATE_DOCS'] === '1') writeFileSync(PAGE, page);
  assert.equal(readFileSync(PAGE, 'utf8'), page, 'docs/relayguard.1 is out of date: RELAYGUARD_UPDATE_DOCS=1 node --test src/cli/manpage.test.ts');
  for (const section of ['.SH NAME', '.SH SYNOPSIS', '.SH "QUEUE COMMANDS"', '.SS "relayguard dnsbl add', '.SS "relayguard user add', '.SS "relayguard domain add']) {
    assert.ok(page.includes(section), section);
  }
});

test('the manual page formats without a warning (groff -man -ww)', () => {
  const r = spawnSync('groff', ['-man', '-ww', '-z', '-Tutf8', PAGE], { encoding: 'utf8' });
  assert.equal(r.error, undefined, 'groff (groff-base) is installed');
  assert.equal(r.status, 0);
  assert.equal(r.stderr, '');
  const text = spawnSync('nroff', ['-man', PAGE], { encoding: 'utf8', env: { ...process.env, MANWIDTH: '100' } }).stdout;
  assert.match(text.replace(/.\x08/g, ''), /relayguard queue list \[options\]/);
});
