/**
 * A real `relayguard serve` with its web service on an ephemeral loopback port and an admin account, for web and
 * browser tests: startServe (serve-process.ts) with `web.enabled`, `relayguard admin add` through the real CLI, the
 * base URLs from the 'web listening' log lines, and an optional API token for checks over plain HTTP.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { CLI, NODE, startServe, type ServeOptions, type ServeProcess } from './serve-process.ts';

export interface WebServe {
  readonly serve: ServeProcess;
  /** http://127.0.0.1:PORT of the admin listener. */
  readonly base: string;
  /** http://ADDRESS:PORT of the public listener, when web.public is configured. */
  readonly publicBase: string | null;
  readonly admin: { readonly name: string; readonly password: string };
  /** A bearer token of the admin (options.token), else ''. */
  readonly token: string;
  /** Runs `relayguard ARGS --config <the serve's file>`. */
  cli(args: readonly string[], input?: string): Promise<{ code: number | null; out: string; err: string }>;
  /** GET (or another method) on the admin listener with the bearer token; JSON parsed when it is JSON. */
  api(path: string, init?: { method?: string; body?: unknown }): Promise<{ status: number; body: string; json: any }>;
  /** Stops serve and removes its data directory. */
  stop(): Promise<void>;
}

export interface WebServeOptions extends ServeOptions {
  readonly admin?: { readonly name: string; readonly password: string };
  /** Create an API token for `api()`. */
  readonly token?: boolean;
}

export async function startWebServe(options: WebServeOptions = {}): Promise<WebServe> {
  const cfg = (options.config ?? {}) as Record<string, unknown>;
  const serve = await startServe({ ...options, config: { ...cfg, web: { port: 0, ...(cfg['web'] as object | undefined), enabled: true } } });
  try {
    const listening = (surface: string): string | null => {
      const l = serve.logs.find((x) => x['msg'] === 'web listening' && x['surface'] === surface);
      return l ? String(l['url']).replace(/\/$/, '') : null;
    };
    const base = listening('admin');
    assert.ok(base, 'serve logs where the web service listens');
    const cli = (args: readonly string[], input?: string): Promise<{ code: number | null; out: string; err: string }> => new Promise((resolve) => {
      const c = spawn(NODE, [CLI, ...args, '--config', serve.configFile], { stdio: ['pipe', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      c.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
      c.stderr.setEncoding('utf8').on('data', (d: string) => { err += d; });
      c.on('close', (code) => resolve({ code, out, err }));
      c.stdin.on('error', () => {});
      c.stdin.end(input);
    });
    const admin = options.admin ?? { name: 'alice', password: 'correct horse battery' };
    const add = await cli(['admin', 'add', admin.name, '--password-stdin'], `${admin.password}\n`);
    assert.equal(add.code, 0, `admin add: ${add.err}`);
    let token = '';
    if (options.token) {
      const t = await cli(['admin', 'token', 'add', 'tests', '--admin', admin.name]);
      assert.equal(t.code, 0, `admin token add: ${t.err}`);
      token = t.out.trim();
    }
    return {
      serve, base, publicBase: listening('public'), admin, token, cli,
      async api(path, init = {}) {
        const r = await fetch(`${base}${path}`, {
          method: init.method ?? 'GET',
          headers: { authorization: `Bearer ${token}`, ...(init.body !== undefined ? { 'content-type': 'application/json' } : {}) },
          ...(init.body !== undefined ? { body: JSON.stringify(init.body) } : {}),
        });
        const body = await r.text();
        let json: unknown = null;
        try { json = JSON.parse(body); } catch { /* not JSON */ }
        return { status: r.status, body, json };
      },
      async stop() {
        await serve.stop();
        await serve.cleanup();
      },
    };
  } catch (err) {
    await serve.stop();
    await serve.cleanup();
    throw err;
  }
}
