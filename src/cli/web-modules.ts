/**
 * The web modules of `relayguard serve` (src/web/module.ts), composed from the running relay's parts: one line per
 * module. Each module's stores are opened here and closed by the module's close().
 */
import type { Config } from '../config/schema.ts';
import type { Logger } from '../core/log.ts';
import { CATEGORIES } from '../dnsbl/index.ts';
import type { DecisionStore } from '../policy/decisions.ts';
import type { ReceivePath } from '../relay/index.ts';
import { overviewModule, type WebModule } from '../web/index.ts';
import { decisionsModule } from '../web/decisions-page.ts';
import { directoryModule } from '../web/directory.ts';
import { ordbWebModule, type OrdbAccess } from '../web/ordb.ts';
import type { RunningOrdb } from './ordb-service.ts';
import { testerWebModule } from './tester-engine.ts';
import type { AuditService } from '../audit/index.ts';
import { auditWebModule } from '../web/audit.ts';

export interface WebModuleDeps {
  readonly receive: ReceivePath;
  readonly logger: Logger;
  /** The ORDB of this node, or null (dnsbl disabled, or not worker 0); a reload may restart it: ask each time. */
  readonly ordb: () => RunningOrdb | null;
  /** The relay-decision log (the web service's DecisionRecorder's store; closed by the web service, not by a module). */
  readonly decisions: DecisionStore;
  /** The self-audit service, or null before it runs; a reload may restart it: ask each time. */
  readonly audit: () => AuditService | null;
}

export async function webModules(config: Config, deps: WebModuleDeps): Promise<WebModule[]> {
  const modules: WebModule[] = [];
  modules.push(overviewModule());
  modules.push(ordbWebModule({ ordb: () => ordbAccess(deps.ordb()), categories: CATEGORIES, limits: config.web.ordb, evidenceUrl: config.dnsbl.evidenceUrl }));
  // Users, local domains and aliases through the relay's own directory (its writes refresh the relay's view at once).
  modules.push(directoryModule({ store: deps.receive.directory, accounts: deps.receive.accounts, localDomains: deps.receive.localDomains }));
  if (config.web.tester.enabled) modules.push(await testerWebModule(config, deps.logger));
  modules.push(decisionsModule(deps.decisions));
  modules.push(auditWebModule({ service: deps.audit }));
  return modules;
}

/** What the ORDB web module sees of the running ORDB. */
function ordbAccess(o: RunningOrdb | null): OrdbAccess | null {
  if (o === null) return null;
  return {
    zone: o.settings.zone, ttlSeconds: o.settings.ttlSeconds, retestIntervalMs: o.settings.retestIntervalMs,
    proofMode: o.workflow.proofMode, configExcluded: o.settings.excluded,
    store: o.store, workflow: o.workflow, rebuild: () => { o.rebuild(); },
  };
}
