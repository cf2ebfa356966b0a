/**
 * docs/relayguard.1, the manual page, written from the command definitions themselves (descriptions, options,
 * arguments, help epilogues), so it cannot drift from `--help`. manpage.test.ts compares the file with
 * renderManPage() and rewrites it with RELAYGUARD_UPDATE_DOCS=1.
 */
import type { Command, Help } from 'commander';

/** Text for roff: backslashes and hyphens escaped, no line starting with a control character. */
function roff(text: string): string {
  return text
    .replace(/\\/g, '\\e')
    .replace(/-/g, '\\-')
    .split('\n')
    .map((l) => (/^[.']/.test(l) ? `\\&${l}` : l))
    .join('\n');
}

/** Lines of a help epilogue as a literal block. */
function literal(text: string): string[] {
  const lines = text.replace(/^\n+|\n+$/g, '').split('\n');
  return ['.PP', '.nf', ...lines.map((l) => roff(l)), '.fi'];
}

/** The text commander adds after a command's help (addHelpText('after')), or ''. */
function epilogue(cmd: Command): string {
  let text = '';
  // addHelpText('after') listens for commander's afterHelp event (Command is an EventEmitter; its types do not say so).
  (cmd as unknown as NodeJS.EventEmitter).emit('afterHelp', { error: false, command: cmd, write: (s: string) => { text += s; } });
  return text;
}

function fullName(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c !== null; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

function commandSection(cmd: Command, help: Help): string[] {
  const out = [`.SS "${roff(`${fullName(cmd)} ${cmd.usage()}`)}"`, roff(cmd.description())];
  for (const a of cmd.registeredArguments) {
    out.push('.TP', `.I ${roff(a.name())}${a.variadic ? ' ...' : ''}`, roff(a.description));
  }
  for (const o of cmd.options) {
    out.push('.TP', `.B ${roff(o.flags)}`, roff(help.optionDescription(o)));
  }
  const after = epilogue(cmd);
  if (after.trim() !== '') out.push(...literal(after));
  return out;
}

/** Depth first: every command that runs something (groups are named by their subcommands). */
function leaves(cmd: Command): Command[] {
  return cmd.commands.flatMap((c) => (c.commands.length > 0 ? leaves(c) : [c]));
}

export function renderManPage(program: Command, options: { version: string }): string {
  const help = program.createHelp();
  const out: string[] = [
    '.\\" Generated from the command definitions by src/cli/manpage.ts: do not edit.',
    '.\\" Regenerate: RELAYGUARD_UPDATE_DOCS=1 node --test src/cli/manpage.test.ts',
    `.TH RELAYGUARD 1 "" "relayguard ${roff(options.version)}" "User Commands"`,
    '.SH NAME',
    `relayguard \\- ${roff(program.description().replace(/^A /, 'a '))}`,
    '.SH SYNOPSIS',
    '.B relayguard',
    '[\\fB\\-q\\fR] \\fIcommand\\fR [\\fIoptions\\fR] [\\fIarguments\\fR]',
    '.br',
    '.B relayguard help',
    '[\\fIcommand\\fR ...]',
    '.SH DESCRIPTION',
    roff(program.description()) + '.',
    'Every command answers bad input with a message on standard error and a non\\-zero exit status;',
    '.B \\-\\-json',
    'output goes to standard output alone.',
    '.SH GLOBAL OPTIONS',
  ];
  for (const o of program.options) out.push('.TP', `.B ${roff(o.flags)}`, roff(help.optionDescription(o)));
  for (const group of program.commands) {
    if (group.name() === 'help') continue;
    out.push(`.SH "${roff(group.name().toUpperCase())} COMMAND${group.commands.length > 0 ? 'S' : ''}"`);
    if (group.commands.length > 0) out.push(roff(group.description()));
    for (const cmd of group.commands.length > 0 ? leaves(group) : [group]) {
      if (cmd.name() === 'help') continue;
      out.push(...commandSection(cmd, help));
    }
  }
  const after = epilogue(program);
  out.push('.SH "CONFIGURATION AND EXIT STATUS"', ...literal(after));
  out.push(
    '.SH FILES',
    '.TP', '.I relayguard.yaml', 'The configuration (see CONFIGURATION); every key is described in docs/configuration.md.',
    '.TP', '.I dataDir/relayguard.db', 'Users, local domains, aliases and the DNS blocklist.',
    '.TP', '.I dataDir/queue.db, dataDir/spool/', 'The mail queue.',
    '.SH "SEE ALSO"',
    'docs/configuration.md, docs/relayguard.example.yaml, docs/tester\\-json.md,',
    '.BR postconf (5),',
    '.BR postqueue (1),',
    '.BR postsuper (1)',
  );
  return `${out.join('\n')}\n`;
}
