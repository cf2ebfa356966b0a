/**
 * The web modules of `relayguard serve` (src/web/module.ts), composed from the running relay's parts: one line per
 * module. Each module's stores are opened here and closed by the module's close().
 */
import type { Config } from '../config/schema.ts';
import type { Logger } from '../core/log.ts';
import type { DecisionStore } from '../policy/decisions.ts';
import type { ReceivePath } from '../relay/index.ts';
import type { WebModule } from '../web/index.ts';
import { decisionsModule } from '../web/decisions-page.ts';
import type { RunningOrdb } from './ordb-service.ts';

export interface WebModuleDeps {
  readonly receive: ReceivePath;
  readonly logger: Logger;
  /** The ORDB of this node, or null (dnsbl disabled, or not worker 0); a reload may restart it: ask each time. */
  readonly ordb: () => RunningOrdb | null;
  /** The relay-decision log (the web service's DecisionRecorder's store; closed by the web service, not by a module). */
  readonly decisions: DecisionStore;
}

export async function webModules(_config: Config, deps: WebModuleDeps): Promise<WebModule[]> {
  const modules: WebModule[] = [];
  modules.push(decisionsModule(deps.decisions));
  return modules;
}
