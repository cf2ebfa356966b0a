/**
 * Check 1, configuration: the lint of `relayguard config check` (config/check.ts) as audit findings. A lint error
 * (an open-relay or credential hazard) is 'critical', a lint warning a 'warning'; a clean lint is one 'ok'.
 */
import { checkConfig, type CheckOptions } from '../config/check.ts';
import type { Config } from '../config/schema.ts';
import type { Finding } from './finding.ts';
import type { AuditCheck } from './run.ts';

export function configCheck(config: Config, options: CheckOptions = {}): AuditCheck {
  return {
    name: 'config',
    async run() {
      const lint = checkConfig(config, options);
      if (lint.length === 0) {
        return [{ check: 'config.clean', subject: config.configFile ?? 'embedded defaults', severity: 'ok', summary: 'config check finds no hazard' }];
      }
      return lint.map((l): Finding => ({
        check: `config.${l.code}`,
        subject: l.key,
        severity: l.severity === 'error' ? 'critical' : 'warning',
        summary: l.message,
        detail: { code: l.code, key: l.key, lint: l.severity },
      }));
    },
  };
}
