/**
 * Shared pieces of the delivery tests (test/e2e/delivery-*.test.ts, test/interop/delivery-*.test.ts): jobs built
 * in memory, and a deliverer wired to a fake DNS on loopback.
 */
import { Readable } from 'node:stream';
import type { DeliveryJob, DeliveryRecipient } from '../../src/queue/deliverer.ts';
import type { EsmtpParams } from '../../src/queue/store.ts';
import { SmtpDeliverer, type DelivererOptions } from '../../src/delivery/index.ts';
import type { FakeDns } from '../../src/testing/fake-dns.ts';

export interface JobSpec {
  readonly sender?: string;
  readonly recipients: readonly (string | { address: string; params?: EsmtpParams })[];
  readonly body?: string | Buffer;
  readonly mailParams?: EsmtpParams;
  readonly queueId?: string;
  /** openBody() errors after this many bytes (a damaged spool file). */
  readonly failAfter?: number;
}

let seq = 0;

export const SIMPLE_BODY = 'From: a@src.test\r\nTo: b@peers.test\r\nSubject: hello\r\nMessage-ID: <m1@src.test>\r\n\r\nHello.\r\n';

export function makeJob(spec: JobSpec): DeliveryJob & { opened: number } {
  const body = Buffer.isBuffer(spec.body) ? spec.body : Buffer.from(spec.body ?? SIMPLE_BODY, 'utf8');
  const recipients: DeliveryRecipient[] = spec.recipients.map((r) =>
    typeof r === 'string' ? { address: r, params: {}, attempts: 0 } : { address: r.address, params: r.params ?? {}, attempts: 0 });
  const job = {
    queueId: spec.queueId ?? `TESTQ${String(++seq).padStart(15, '0')}`,
    sender: spec.sender ?? 'a@src.test',
    mailParams: spec.mailParams ?? {},
    receivedAt: Date.now() - 1000,
    size: body.length,
    messageId: '<m1@src.test>',
    clientIp: '127.0.0.1',
    helo: 'client.test',
    authUser: null,
    listener: 'mx',
    recipients,
    attempt: 1,
    opened: 0,
    openBody(): Readable {
      job.opened++;
      if (spec.failAfter === undefined) return Readable.from([body.subarray(0, Math.ceil(body.length / 2)), body.subarray(Math.ceil(body.length / 2))]);
      const cut = spec.failAfter;
      return new Readable({
        read() {
          this.push(body.subarray(0, cut));
          this.destroy(new Error('spool body is short'));
        },
      });
    },
  };
  return job;
}

export const FAST = { connect: 2000, greeting: 2000, command: 2000, dataBlock: 2000, dataDone: 2000 };

/** A deliverer for loopback tests: MX through `dns`, every MX port `port` (or a per-host function). */
export function testDeliverer(dns: FakeDns, port: number | ((host: string) => number), extra: Partial<DelivererOptions> = {}): SmtpDeliverer {
  return new SmtpDeliverer({
    hostname: 'relay.test',
    routing: { localDomains: ['local.test'] },
    resolver: dns.resolver(),
    mxPort: typeof port === 'number' ? port : (host) => port(host),
    allowLoopback: true,
    timeouts: FAST,
    connectionCache: false,
    ...extra,
  });
}

export function signal(ms = 20_000): AbortSignal {
  return AbortSignal.timeout(ms);
}
