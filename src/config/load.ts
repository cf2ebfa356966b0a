/**
 * Reads relayguard.yaml (or takes an object) and returns the frozen Config, or throws a ConfigError
 * (code ERR_CONFIG_INVALID) whose message names the file and lists one line per problem:
 *
 *   Invalid configuration in /etc/relayguard/relayguard.yaml:
 *     listeners[1].port: must be at most 65535, got 70000 (line 9)
 *     trustedNetwork: unknown key (did you mean "trustedNetworks"?) (line 3)
 *
 * No file is searched for: without `file` the built-in defaults apply (the CLI decides about --config).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import YAML, { LineCounter, type Document } from 'yaml';
import type { z } from 'zod';
import { RelayguardError } from '../core/errors.ts';
import { buildConfig, configJsonSchema, configSchema, type Config } from './schema.ts';

export interface ConfigIssue {
  /** Key path such as "listeners[1].port"; "" for the document itself. */
  readonly path: string;
  readonly message: string;
  /** 1-based line in the file, when known. */
  readonly line?: number;
}

export class ConfigError extends RelayguardError {
  readonly file: string | null;
  readonly issues: readonly ConfigIssue[];
  constructor(file: string | null, issues: readonly ConfigIssue[], options?: { cause?: unknown }) {
    super('ERR_CONFIG_INVALID', formatIssues(file, issues), options);
    this.name = 'ConfigError';
    this.file = file;
    this.issues = Object.freeze([...issues]);
  }
}

export interface LoadConfigOptions {
  /** Path of relayguard.yaml, relative to `cwd`. Without it the built-in defaults apply. */
  readonly file?: string;
  /** Base for a relative `file`, and for relative paths in the config when there is no file. Default process.cwd(). */
  readonly cwd?: string;
}

const MAX_LISTED_ISSUES = 50;

function formatIssues(file: string | null, issues: readonly ConfigIssue[]): string {
  const head = file === null ? 'Invalid configuration:' : `Invalid configuration in ${file}:`;
  const shown = issues.slice(0, MAX_LISTED_ISSUES).map((i) => {
    const where = i.path === '' ? '(top level)' : i.path;
    return `  ${where}: ${i.message}${i.line !== undefined ? ` (line ${i.line})` : ''}`;
  });
  if (issues.length > MAX_LISTED_ISSUES) shown.push(`  ... and ${issues.length - MAX_LISTED_ISSUES} more`);
  return [head, ...shown].join('\n');
}

/** "listeners[1].port" for ["listeners", 1, "port"]. */
export function formatKeyPath(keys: readonly PropertyKey[]): string {
  let out = '';
  for (const k of keys) {
    if (typeof k === 'number') out += `[${k}]`;
    else if (typeof k === 'string' && /^[A-Za-z_$][\w$]*$/.test(k)) out += out === '' ? k : `.${k}`;
    else out += `[${JSON.stringify(String(k))}]`;
  }
  return out;
}

/** Loads and validates the config file (or the defaults without one). Throws ConfigError / RelayguardError. */
export function loadConfig(options: LoadConfigOptions = {}): Config {
  const cwd = path.resolve(options.cwd ?? process.cwd());
  if (options.file === undefined) return parseConfig({}, { baseDir: cwd });
  const file = path.resolve(cwd, options.file);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new RelayguardError('ERR_CONFIG_NOT_FOUND', `Config file ${file} does not exist`, { cause: err });
    throw new RelayguardError('ERR_CONFIG_READ', `Cannot read config file ${file}: ${(err as Error).message}`, { cause: err });
  }
  return parseConfigText(text, { file });
}

/** Parses YAML text. `file` (absolute) names the source in errors and is the base for relative paths. */
export function parseConfigText(text: string, options: { file?: string | null; baseDir?: string } = {}): Config {
  const file = options.file ?? null;
  const baseDir = options.baseDir ?? (file !== null ? path.dirname(file) : process.cwd());
  const lineCounter = new LineCounter();
  const doc = YAML.parseDocument(text, { prettyErrors: true, lineCounter, uniqueKeys: true });
  const problems = [...doc.errors, ...doc.warnings];
  if (problems.length > 0) {
    throw new ConfigError(file, problems.map((e) => ({
      path: '',
      message: `YAML: ${(e.message.split('\n')[0] ?? '').replace(/:$/, '')}`,
      ...(e.linePos ? { line: e.linePos[0].line } : {}),
    })));
  }
  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    throw new ConfigError(file, [{ path: '', message: `YAML: ${(err as Error).message}` }], { cause: err });
  }
  return validate(value ?? {}, { file, baseDir, doc, lineCounter });
}

/** Validates an already-parsed object (for tests and embedding). Relative paths resolve against `baseDir`. */
export function parseConfig(input: unknown, options: { baseDir?: string; configFile?: string | null } = {}): Config {
  return validate(input, { file: options.configFile ?? null, baseDir: options.baseDir ?? process.cwd() });
}

interface Source {
  readonly file: string | null;
  readonly baseDir: string;
  readonly doc?: Document;
  readonly lineCounter?: LineCounter;
}

function validate(input: unknown, source: Source): Config {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new ConfigError(source.file, [{ path: '', message: `expected a mapping of keys, got ${describe(input)}` }]);
  }
  const result = configSchema.safeParse(input, { reportInput: true });
  if (!result.success) {
    const issues: ConfigIssue[] = [];
    for (const issue of result.error.issues) issues.push(...toConfigIssues(issue, source));
    // File order reads best; issues without a line keep their place at the end.
    issues.sort((a, b) => (a.line ?? Infinity) - (b.line ?? Infinity));
    throw new ConfigError(source.file, issues, { cause: result.error });
  }
  return buildConfig(result.data, { baseDir: source.baseDir, configFile: source.file });
}

function describe(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  if (typeof v === 'string') {
    const s = JSON.stringify(v);
    return s.length > 60 ? `${s.slice(0, 57)}..."` : s;
  }
  return String(v);
}

const TYPE_NAMES: Readonly<Record<string, string>> = {
  int: 'an integer', number: 'a number', string: 'a string', boolean: 'true or false', array: 'a list',
  object: 'a mapping', null: 'null',
};

type Issue = z.core.$ZodIssue;

function toConfigIssues(issue: Issue, source: Source): ConfigIssue[] {
  const keys = issue.path as PropertyKey[];
  const at = (p: PropertyKey[], message: string): ConfigIssue => {
    const line = lineOf(source, p);
    return { path: formatKeyPath(p), message, ...(line !== undefined ? { line } : {}) };
  };
  const input = (issue as { input?: unknown }).input;
  if (input === undefined && (issue.code === 'invalid_type' || issue.code === 'invalid_value' || issue.code === 'invalid_union')) {
    return [at(keys, 'is required')];
  }
  switch (issue.code) {
    case 'unrecognized_keys':
      return issue.keys.map((k) => {
        const hint = suggestKey(keys, k);
        return at([...keys, k], `unknown key${hint ? ` (did you mean "${hint}"?)` : ''}`);
      });
    case 'invalid_type':
      return [at(keys, `expected ${TYPE_NAMES[issue.expected] ?? issue.expected}, got ${describe(input)}`)];
    case 'too_big': {
      const what = issue.origin === 'array' || issue.origin === 'set' ? ' items' : issue.origin === 'string' ? ' characters' : '';
      const bound = `${issue.inclusive === false ? 'less than' : 'at most'} ${String(issue.maximum)}${what}`;
      return [at(keys, `must be ${bound}${what === '' && input !== undefined ? `, got ${describe(input)}` : ''}`)];
    }
    case 'too_small': {
      const what = issue.origin === 'array' || issue.origin === 'set' ? ' items' : issue.origin === 'string' ? ' characters' : '';
      const bound = `${issue.inclusive === false ? 'more than' : 'at least'} ${String(issue.minimum)}${what}`;
      return [at(keys, `must be ${bound}${what === '' && input !== undefined ? `, got ${describe(input)}` : ''}`)];
    }
    case 'invalid_value':
      return [at(keys, `must be one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}, got ${describe(input)}`)];
    case 'invalid_format':
      return [at(keys, `${describe(input)} ${issue.message}`)];
    case 'invalid_union':
      return [at(keys, `${issue.message}, got ${describe(input)}`)];
    default:
      return [at(keys, issue.message)];
  }
}

function lineOf(source: Source, keys: readonly PropertyKey[]): number | undefined {
  if (!source.doc || !source.lineCounter) return undefined;
  for (let n = keys.length; n >= 0; n--) {
    const node = n === 0 ? source.doc.contents : source.doc.getIn(keys.slice(0, n) as unknown[], true);
    const range = (node as { range?: [number, number, number] } | null | undefined)?.range;
    if (range) return source.lineCounter.linePos(range[0]).line;
  }
  return undefined;
}

// Key suggestions for typos: the known keys at the same level, from the schema.

type SchemaNode = { properties?: Record<string, SchemaNode>; items?: SchemaNode; anyOf?: SchemaNode[] };

let jsonSchema: SchemaNode | undefined;

function knownKeys(keys: readonly PropertyKey[]): string[] {
  jsonSchema ??= configJsonSchema() as SchemaNode;
  let node: SchemaNode | undefined = jsonSchema;
  const unwrap = (n: SchemaNode | undefined) => n?.anyOf?.find((x) => x.properties || x.items) ?? n;
  for (const k of keys) {
    node = unwrap(node);
    node = typeof k === 'number' ? node?.items : node?.properties?.[String(k)];
  }
  return Object.keys(unwrap(node)?.properties ?? {});
}

function fold(s: string): string {
  return s.toLowerCase().replace(/[-_\s]/g, '');
}

/** Edit distance counting an adjacent transposition ("tsl" -> "tls") as one edit (optimal string alignment). */
function distance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  }
  return d[a.length]![b.length]!;
}

function suggestKey(keys: readonly PropertyKey[], unknown: string): string | undefined {
  const candidates = knownKeys(keys);
  const f = fold(unknown);
  const exact = candidates.find((c) => fold(c) === f);
  if (exact) return exact;
  let best: string | undefined;
  let bestDistance = Math.max(1, Math.floor(f.length / 4)) + 1;
  for (const c of candidates) {
    const d = distance(f, fold(c));
    if (d < bestDistance) {
      best = c;
      bestDistance = d;
    }
  }
  return best;
}
