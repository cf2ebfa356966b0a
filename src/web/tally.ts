/**
 * Metric families for the relay's hot path: an event adds to a plain number (a Map lookup at most), and the
 * family is turned into prom-client's shape only when /metrics is scraped (or the workers' sum collected). They
 * implement what prom-client's Registry asks of a metric (`name`, `get()`), so they sit in the same registry as
 * prom-client's own counters and gauges and come out in the same exposition, node label included.
 * prom-client's Counter.inc() with labels hashes and validates the labels on every call (about a microsecond);
 * per message that was several times the rest of the metrics code.
 */
import type { Registry } from 'prom-client';

interface Value { value: number; labels: Record<string, string | number>; metricName?: string }
interface MetricJson { name: string; help: string; type: string; values: Value[]; aggregator: 'sum' }

/** A counter family with up to two labels; values keyed by their label values. */
export class Tally {
  readonly name: string;
  readonly help: string;
  readonly type = 'counter';
  readonly aggregator = 'sum' as const;
  readonly #labelNames: readonly string[];
  readonly #values = new Map<string, { value: number; labels: Record<string, string> }>();
  #total = 0;

  constructor(o: { name: string; help: string; labelNames?: readonly string[]; registry: Registry }) {
    if (!o.name.endsWith('_total')) throw new Error(`counter ${o.name} must end in _total`);
    this.name = o.name;
    this.help = o.help;
    this.#labelNames = o.labelNames ?? [];
    if (this.#labelNames.length > 2) throw new Error('a Tally has at most two labels');
    o.registry.registerMetric(this as never);
  }

  /** Adds n (an unlabelled family). */
  add(n = 1): void {
    this.#total += n;
  }

  /** Adds n to the series of one (or two) label values. */
  addTo(a: string, b: string | number = 1, n = 1): void {
    let key = a;
    let by = n;
    if (this.#labelNames.length === 2) key = `${a}\u0000${b as string}`;
    else by = b as number;
    const v = this.#values.get(key);
    if (v !== undefined) { v.value += by; return; }
    const labels: Record<string, string> = { [this.#labelNames[0]!]: a };
    if (this.#labelNames.length === 2) labels[this.#labelNames[1]!] = b as string;
    this.#values.set(key, { value: by, labels });
  }

  /** The value of an unlabelled family, or of one series. */
  value(a?: string, b?: string): number {
    if (a === undefined) return this.#total;
    return this.#values.get(this.#labelNames.length === 2 ? `${a}\u0000${b}` : a)?.value ?? 0;
  }

  get(): MetricJson {
    const values: Value[] = this.#labelNames.length === 0
      ? [{ value: this.#total, labels: {} }]
      : [...this.#values.values()].map((v) => ({ value: v.value, labels: { ...v.labels } }));
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }

  reset(): void {
    this.#total = 0;
    this.#values.clear();
  }
}

/** An unlabelled histogram: observe() finds the bucket and adds one; cumulative counts are made at scrape time. */
export class TallyHistogram {
  readonly name: string;
  readonly help: string;
  readonly type = 'histogram';
  readonly aggregator = 'sum' as const;
  readonly #bounds: readonly number[];
  /** Per bucket, not cumulative; the last slot is +Inf. */
  readonly #counts: Float64Array;
  #sum = 0;
  #count = 0;

  constructor(o: { name: string; help: string; buckets: readonly number[]; registry: Registry }) {
    this.name = o.name;
    this.help = o.help;
    this.#bounds = [...o.buckets].sort((x, y) => x - y);
    this.#counts = new Float64Array(this.#bounds.length + 1);
    o.registry.registerMetric(this as never);
  }

  observe(v: number): void {
    const b = this.#bounds;
    let i = 0;
    while (i < b.length && v > b[i]!) i++;
    this.#counts[i]!++;
    this.#sum += v;
    this.#count++;
  }

  get(): MetricJson {
    const values: Value[] = [];
    let cumulative = 0;
    this.#bounds.forEach((le, i) => {
      cumulative += this.#counts[i]!;
      values.push({ value: cumulative, labels: { le }, metricName: `${this.name}_bucket` });
    });
    values.push({ value: this.#count, labels: { le: '+Inf' }, metricName: `${this.name}_bucket` });
    values.push({ value: this.#sum, labels: {}, metricName: `${this.name}_sum` });
    values.push({ value: this.#count, labels: {}, metricName: `${this.name}_count` });
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }

  reset(): void {
    this.#counts.fill(0);
    this.#sum = 0;
    this.#count = 0;
  }
}
