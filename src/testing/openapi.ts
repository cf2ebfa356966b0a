/**
 * OpenAPI checks for the web e2e tests: the served document against the official OpenAPI 3.1 schema (vendored in
 * test/fixtures/openapi, source noted there), every schema in it compiled as JSON Schema 2020-12, and recorded API
 * answers against the document's response schema for their path, method and status.
 *
 * The validator is Ajv (ajv/dist/2020: JSON Schema 2020-12 with $dynamicRef), already installed as fastify's
 * dependency; no new package.
 */
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';

const SCHEMA_FILE = join(resolve(import.meta.dirname, '..', '..'), 'test', 'fixtures', 'openapi', 'schema-3.1-2022-10-07.json');

/** One API answer as a test saw it. */
export interface RecordedAnswer {
  readonly method: string;
  /** The request path, query string allowed. */
  readonly path: string;
  readonly status: number;
  readonly body: unknown;
}

type Doc = {
  openapi: string;
  paths: Record<string, Record<string, { responses: Record<string, { content?: Record<string, { schema: unknown }> }> }>>;
  components?: { schemas?: Record<string, unknown> };
};

const newAjv = (): Ajv2020 => new Ajv2020({ strict: false, allErrors: true, validateFormats: false });

/**
 * The OpenAPI 3.1 schema as Ajv can use it. Its schema objects are `{"$dynamicRef": "#meta"}`, which resolves to
 * `#/$defs/schema` (the only `$dynamicAnchor: meta`) unless a dialect extends it; Ajv's $dynamicRef resolves it to
 * the enclosing object instead (a parameter, a media type), so it is replaced by the plain $ref it stands for here.
 */
function openApiSchema(): object {
  return JSON.parse(readFileSync(SCHEMA_FILE, 'utf8').replaceAll('"$dynamicRef": "#meta"', '"$ref": "#/$defs/schema"')) as object;
}

/** Problems of the document against the OpenAPI 3.1 schema and of its schemas as JSON Schema 2020-12 ([] when valid). */
export function openApiProblems(doc: unknown): string[] {
  const ajv = newAjv();
  const validate = ajv.compile(openApiSchema());
  const problems: string[] = [];
  if (!validate(doc)) problems.push(...(validate.errors ?? []).map((e) => `document ${e.instancePath || '/'}: ${e.message ?? e.keyword}`));
  // Every schema object in it must itself be a valid JSON Schema 2020-12 (the OpenAPI schema does not check them).
  const d = doc as Doc;
  const schemaAjv = newAjv();
  for (const [path, ops] of Object.entries(d.paths ?? {})) {
    for (const [method, op] of Object.entries(ops)) {
      const schemas: [string, unknown][] = [];
      for (const p of (op as { parameters?: { name: string; schema: unknown }[] }).parameters ?? []) schemas.push([`parameter ${p.name}`, p.schema]);
      const body = (op as { requestBody?: { content: Record<string, { schema: unknown }> } }).requestBody;
      for (const [type, c] of Object.entries(body?.content ?? {})) schemas.push([`request body ${type}`, c.schema]);
      for (const [status, r] of Object.entries(op.responses ?? {})) for (const [type, c] of Object.entries(r.content ?? {})) schemas.push([`response ${status} ${type}`, c.schema]);
      for (const [where, s] of schemas) {
        try {
          schemaAjv.compile(inline(s, d) as object);
        } catch (err) {
          problems.push(`${method.toUpperCase()} ${path} ${where}: ${(err as Error).message}`);
        }
      }
    }
  }
  return problems;
}

/** The document's path template and operation for a request, or null. */
function operationOf(doc: Doc, method: string, path: string): { template: string; op: Doc['paths'][string][string] } | null {
  const p = path.split('?')[0]!;
  const candidates = Object.keys(doc.paths).filter((t) => new RegExp(`^${t.replace(/[.*+?^$()|[\]\\]/g, '\\$&').replace(/\{[^}]+\}/g, '[^/]+')}$`).test(p));
  // A static path wins over a templated one (as the router matches): fewest template segments first.
  candidates.sort((a, b) => (a.match(/\{/g)?.length ?? 0) - (b.match(/\{/g)?.length ?? 0));
  for (const template of candidates) {
    const op = doc.paths[template]![method.toLowerCase()];
    if (op) return { template, op };
  }
  return null;
}

/** The schema with the document's component $refs replaced by the components (so it compiles on its own). */
function inline(schema: unknown, doc: Doc): unknown {
  if (Array.isArray(schema)) return schema.map((s) => inline(s, doc));
  if (schema === null || typeof schema !== 'object') return schema;
  const ref = (schema as { $ref?: unknown }).$ref;
  if (typeof ref === 'string' && ref.startsWith('#/components/schemas/')) return inline(doc.components?.schemas?.[ref.slice('#/components/schemas/'.length)], doc);
  return Object.fromEntries(Object.entries(schema).map(([k, v]) => [k, inline(v, doc)]));
}

/**
 * Problems of recorded answers against the document: the operation must exist, the status must be described (or a
 * default response), and a JSON body must validate against the schema. Returns [] when all validate.
 */
export function answerProblems(doc: unknown, answers: readonly RecordedAnswer[]): string[] {
  const d = doc as Doc;
  const problems: string[] = [];
  const cache = new Map<unknown, ReturnType<Ajv2020['compile']>>();
  const ajv = newAjv();
  for (const a of answers) {
    const found = operationOf(d, a.method, a.path);
    let schema: unknown;
    if (found === null) {
      // No operation: only the router's own answers (404 unknown path, 405 wrong method) may come back, as an Error.
      if (a.status !== 404 && a.status !== 405) { problems.push(`${a.method} ${a.path}: no operation in the document`); continue; }
      schema = d.components?.schemas?.['Error'];
    } else {
      const response = found.op.responses[String(a.status)] ?? found.op.responses['default'];
      if (response === undefined) { problems.push(`${a.method} ${a.path} ${a.status}: status not described`); continue; }
      schema = response.content?.['application/json']?.schema;
    }
    if (schema === undefined) { problems.push(`${a.method} ${a.path} ${a.status}: no JSON schema`); continue; }
    let validate = cache.get(schema);
    if (validate === undefined) {
      validate = ajv.compile(inline(schema, d) as object);
      cache.set(schema, validate);
    }
    if (!validate(a.body)) {
      problems.push(`${a.method} ${a.path} ${a.status} (${found?.template ?? 'Error'}): ${(validate.errors ?? []).slice(0, 5).map((e) => `${e.instancePath || '/'} ${e.message ?? e.keyword}`).join('; ')}`);
    }
  }
  return problems;
}
