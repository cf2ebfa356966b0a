/**
 * The HTTPS GET the audit uses for MTA-STS policy files (RFC 8461 section 3.3): the host name resolved through the
 * audit's resolver (so tests point it at a loopback server), certificate verified (system CAs plus `ca`), no
 * redirects followed, 64 KiB at most, one deadline for the whole request.
 *
 * Trust: talks to the policy host of an audited domain; the body is untrusted text.
 */
import { request } from 'node:https';
import { isIP, type LookupFunction } from 'node:net';
import { rootCertificates } from 'node:tls';
import type { AuditResolver } from './dns.ts';

export type HttpsFetchResult =
  | { readonly kind: 'response'; readonly status: number; readonly contentType: string; readonly location: string | null; readonly body: string }
  /** Could not connect, resolve or finish in time. */
  | { readonly kind: 'unreachable'; readonly error: string }
  /** TLS failed: untrusted chain, wrong name, handshake error. */
  | { readonly kind: 'tls'; readonly error: string }
  /** Too large, or not HTTP. */
  | { readonly kind: 'broken'; readonly error: string };

export type HttpsFetch = (url: string, signal?: AbortSignal) => Promise<HttpsFetchResult>;

export interface HttpsFetchOptions {
  readonly resolver: AuditResolver;
  /** Port for every URL (tests); default the URL's port or 443. */
  readonly port?: number;
  /** Extra trusted CA certificates (PEM), on top of the system store. */
  readonly ca?: readonly string[];
  readonly timeoutMs?: number;
  readonly maxBytes?: number;
}

const TLS_CODES = /^(ERR_TLS_|CERT_|DEPTH_ZERO|SELF_SIGNED|UNABLE_TO_|ERR_SSL_|EPROTO)/;

export function makeHttpsFetch(options: HttpsFetchOptions): HttpsFetch {
  const maxBytes = options.maxBytes ?? 64 * 1024;
  const timeoutMs = options.timeoutMs ?? 10_000;
  const lookup: LookupFunction = (hostname, opts, callback) => {
    void (async () => {
      const a = await options.resolver.a(hostname);
      const list = a.kind === 'ok' ? a.records : [];
      const six = list.length === 0 ? await options.resolver.aaaa(hostname) : null;
      const all = list.length > 0 ? list : six?.kind === 'ok' ? six.records : [];
      if (all.length === 0) {
        const why = a.kind === 'unreachable' ? 'ETIMEOUT' : 'ENOTFOUND';
        callback(Object.assign(new Error(`cannot resolve ${hostname} (${why})`), { code: why }), '', 4);
        return;
      }
      if ((opts as { all?: boolean }).all) (callback as unknown as (e: null, a: { address: string; family: number }[]) => void)(null, all.map((x) => ({ address: x, family: isIP(x) })));
      else callback(null, all[0]!, isIP(all[0]!));
    })();
  };
  return (url, signal) => new Promise<HttpsFetchResult>((resolve) => {
    const u = new URL(url);
    let done = false;
    const finish = (r: HttpsFetchResult): void => { if (!done) { done = true; clearTimeout(timer); resolve(r); } };
    const timer = setTimeout(() => { req.destroy(); finish({ kind: 'unreachable', error: `no complete answer within ${timeoutMs} ms` }); }, timeoutMs);
    const req = request({
      host: u.hostname, servername: u.hostname, port: options.port ?? (u.port === '' ? 443 : Number(u.port)), path: `${u.pathname}${u.search}`, method: 'GET',
      lookup, agent: false, rejectUnauthorized: true,
      ...(options.ca ? { ca: [...rootCertificates, ...options.ca] } : {}),
      ...(signal ? { signal } : {}), headers: { 'user-agent': 'relayguard-audit' },
    }, (res) => {
      const parts: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > maxBytes) { req.destroy(); finish({ kind: 'broken', error: `body larger than ${maxBytes} bytes` }); return; }
        parts.push(c);
      });
      res.on('end', () => finish({
        kind: 'response', status: res.statusCode ?? 0, contentType: String(res.headers['content-type'] ?? ''),
        location: typeof res.headers.location === 'string' ? res.headers.location : null, body: Buffer.concat(parts).toString('utf8'),
      }));
      res.on('error', (err) => finish({ kind: 'broken', error: err.message }));
    });
    req.on('error', (err: NodeJS.ErrnoException) => {
      const code = err.code ?? '';
      finish(TLS_CODES.test(code) || /certificate|altname|self.signed/i.test(err.message) ? { kind: 'tls', error: `${code} ${err.message}`.trim() } : { kind: 'unreachable', error: `${code} ${err.message}`.trim() });
    });
    req.end();
  });
}
