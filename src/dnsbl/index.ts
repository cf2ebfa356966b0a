/**
 * ORDB: the open-relay DNS blocklist. Public surface of src/dnsbl (other modules import only this file).
 *
 *   ListingStore  listings + history in SQLite          (store.ts)
 *   buildZone     immutable RFC 5782 index + lookups      (zone.ts, pure)
 *   DnsblServer   authoritative UDP/TCP server, AXFR, NOTIFY (server.ts, wire.ts)
 *   exporters     rbldnsd ip4set/ip6trie, BIND master file (export.ts)
 *   OrdbWorkflow  submit -> test -> list -> retest -> delist, tester injected (workflow.ts)
 *   ZoneJournal   the zone's change history for IXFR (journal.ts)
 *   JobQueue      test jobs with leases, next to the listings (jobs.ts)
 *   OrdbWorker    takes jobs and runs them through the workflow (worker.ts)
 *   DnsblClient   the relay's DNSBL lookups: TTL cache, broken-answer detection, zone health checks (lookup.ts)
 */
import type { ListingStore, ZoneEntriesOptions } from './store.ts';
import { buildZone, type Zone, type ZoneOptions } from './zone.ts';

export {
  ListingStore,
  LISTING_STATES,
  MAX_REASON,
  type AddListingInput,
  type HistoryEvent,
  type HistoryEventType,
  type ListFilter,
  type Listing,
  type ListingState,
  type ListingStoreOptions,
  type LookupAnswer,
  type UpdateListingInput,
  type ZoneEntriesOptions,
} from './store.ts';
export { CATEGORIES, DEFAULT_EVIDENCE_URL, categoryCode, isCategory, txtTemplate, type ListingCategory } from './categories.ts';
export {
  Zone,
  ZoneBuilder,
  ZoneError,
  buildZone,
  escapeTxt,
  expandTxt,
  normalizeTxtTemplate,
  normalizeZoneName,
  DEFAULT_CODE,
  type LookupResult,
  type SoaFields,
  type ZoneEntry,
  type ZoneHost,
  type ZoneOptions,
  type ZoneRecord,
  type ZoneStats,
} from './zone.ts';
export { DnsblServer, type DnsblServerOptions, type DnsblServerStats, type NotifyResult, type NotifyTarget } from './server.ts';
export { diffZones, ZoneJournal, type JournalLimits, type JournalStore, type ZoneDiff } from './journal.ts';
export { tsigKey, type TsigKey } from './tsig.ts';
export { JobQueue, type ClaimedJob, type Job, type JobCounts, type JobKind, type JobLease, type JobState } from './jobs.ts';
export { OrdbWorker, type OrdbWorkerOptions, type WorkerStats } from './worker.ts';
export {
  bindZone,
  rbldnsdIp4set,
  rbldnsdIp6trie,
  toText,
  writeBindZone,
  writeRbldnsdFiles,
  type RbldnsdFiles,
} from './export.ts';
export { dnsblName, parseNetwork, parseAddress, type Family, type Network } from './network.ts';
export {
  OrdbWorkflow,
  decide,
  effectiveVerdict,
  ordbEvidence,
  combineChecks,
  checksOf,
  parseChecks,
  categoryOfCheck,
  checkOfCategory,
  TEST_CHECKS,
  TESTED_CATEGORIES,
  type CheckSummary,
  type ProxyEvidence,
  type NntpEvidence,
  type TestCheck,
  type Action,
  type DecideContext,
  type Decision,
  type HostTestResult,
  type HostTester,
  type JobCommit,
  type OrdbEvidence,
  type OrdbWorkflowOptions,
  type Refused,
  type RetestResult,
  type SubmitResult,
  type TestOutcome,
  type TestVerdict,
  type WorkflowRefusal,
} from './workflow.ts';
export {
  DnsblClient,
  brokenAnswer,
  queryName,
  type DnsblClientOptions,
  type DnsblErrorKind,
  type DnsblLookupResult,
  type DnsblResolver,
  type DnsblZoneConfig,
  type DnsblZoneLookup,
  type ZoneHealth,
  type ZoneHealthStatus,
} from './lookup.ts';

/** Builds the zone of a store: its listed and excluded entries, with the store's serial as the SOA serial. */
export function zoneFromStore(store: ListingStore, options: ZoneOptions & ZoneEntriesOptions): Zone {
  return buildZone(store.zoneEntries({ evidenceUrl: options.evidenceUrl }), {
    ...options,
    soa: { ...options.soa, serial: options.soa?.serial ?? Math.max(1, store.serial()) },
  });
}
