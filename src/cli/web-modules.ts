/**
 * The web modules of `relayguard serve` (src/web/module.ts), composed from the running relay's parts: one line per
 * module. Each module's stores are opened here and closed by the module's close().
 */
import type { Config } from '../config/schema.ts';
import type { Logger } from '../core/log.ts';
import type { ReceivePath } from '../relay/index.ts';
import { overviewModule, type WebModule } from '../web/index.ts';
import type { RunningOrdb } from './ordb-service.ts';

export interface WebModuleDeps {
  readonly receive: ReceivePath;
  readonly logger: Logger;
  /** The ORDB of this node, or null (dnsbl disabled, or not worker 0); a reload may restart it: ask each time. */
  readonly ordb: () => RunningOrdb | null;
}

export async function webModules(_config: Config, _deps: WebModuleDeps): Promise<WebModule[]> {
  const modules: WebModule[] = [];
  modules.push(overviewModule());
  return modules;
}
