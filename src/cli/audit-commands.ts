/**
 * `relayguard audit`: the self-audit once (src/audit; the same checks serve runs with audit.enabled): config lint,
 * open relay proved from an untrusted local address, blocklists; the report says what changed since the last stored
 * audit of this node and is stored in turn (dataDir/audit.db or PostgreSQL's audit_reports; --no-store leaves the
 * history alone).
 *
 * Exit codes: 0 clean; 1 a finding that makes the server abusable, listed or could not be checked (critical,
 * unreachable, broken); 2 warnings only; 3 usage, configuration or storage error (2 is taken by "warnings").
 * Text report with colour on a terminal (--color / --no-color), or --json (schema relayguard-audit/1).
 */
import { Command, CommanderError, Option } from 'commander';
import type { Config } from '../config/schema.ts';
import { RelayguardError } from '../core/errors.ts';

interface Io {
  out(s: string): void;
  err(s: string): void;
}

const CHECK_NAMES = ['config', 'relay', 'blocklist', 'dns'] as const;

export function registerAuditCommand(program: Command, io: Io, setExit: (code: number) => void, configFor: (opts: { config?: string }) => Config): void {
  const usageExit = (err: CommanderError): never => {
    throw err.exitCode === 0 ? err : new CommanderError(3, err.code, err.message);
  };
  program
    .command('audit')
    .description('audit this relay once: config lint, open relay proved from an untrusted local address, blocklists (RFC 5782 health-checked), and what changed since the last audit; exits 0 clean, 1 abusable/listed/unreachable, 2 warnings only, 3 error')
    .option('-c, --config <file>', 'relayguard.yaml to use')
    .option('--json', 'the report as JSON (schema relayguard-audit/1)')
    .option('--only <checks>', `run only these checks (comma-separated: ${CHECK_NAMES.join(', ')})`)
    .option('--no-store', 'do not store the report (the trend still compares with the last stored one)')
    .addOption(new Option('--color', 'colour the text report (default: when stdout is a terminal)'))
    .addOption(new Option('--no-color', 'no colour'))
    .exitOverride(usageExit)
    .action(async (opts: { config?: string; json?: boolean; only?: string; store: boolean; color?: boolean }) => {
      let config: Config;
      let only: Set<string> | null = null;
      try {
        if (opts.only !== undefined) {
          only = new Set(opts.only.split(',').map((s) => s.trim()).filter((s) => s !== ''));
          const bad = [...only].filter((c) => !(CHECK_NAMES as readonly string[]).includes(c));
          if (bad.length > 0 || only.size === 0) throw new RelayguardError('ERR_USAGE', `--only takes ${CHECK_NAMES.join(', ')}; got "${opts.only}"`);
        }
        config = configFor(opts);
      } catch (err) {
        io.err(`relayguard: ${(err as Error).message}${err instanceof RelayguardError ? ` [${err.code}]` : ''}`);
        return setExit(3);
      }
      const [{ auditChecks, openAuditHistory }, { runAudit, renderAuditText, mergeHistory }] = await Promise.all([import('./audit-service.ts'), import('../audit/index.ts')]);
      let history;
      try {
        history = await openAuditHistory(config);
      } catch (err) {
        io.err(`relayguard: cannot open the audit history: ${(err as Error).message} [${(err as { code?: string }).code ?? 'ERR_AUDIT_HISTORY'}]`);
        return setExit(3);
      }
      try {
        const previous = mergeHistory(await history.list(config.node, 20));
        const checks = auditChecks(config).filter((c) => only === null || only.has(c.name));
        const report = await runAudit({ checks, node: config.node, trigger: 'cli', timeoutMs: config.audit.timeout, previous });
        if (opts.store) await history.save(report);
        if (opts.json) io.out(JSON.stringify(report));
        else io.out(renderAuditText(report, { colour: opts.color ?? (process.stdout.isTTY === true && !process.env['NO_COLOR']), hostname: config.hostname }));
        setExit(report.exitCode);
      } finally {
        await history.close();
      }
    });
}
