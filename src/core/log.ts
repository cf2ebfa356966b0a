/**
 * The logger interface every module receives. Messages are fixed strings; data goes in snake_case fields.
 * The CLI supplies the JSON-lines implementation (pino); tests use a memory logger.
 */
export type LogFields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  child(fields: LogFields): Logger;
}

export interface LogRecord {
  level: 'debug' | 'info' | 'warn' | 'error';
  msg: string;
  fields: LogFields;
}

/** A logger that keeps records in memory (tests, `--quiet` runs). */
export class MemoryLogger implements Logger {
  readonly records: LogRecord[];
  readonly #bound: LogFields;
  constructor(records: LogRecord[] = [], bound: LogFields = {}) {
    this.records = records;
    this.#bound = bound;
  }
  #push(level: LogRecord['level'], msg: string, fields?: LogFields): void {
    this.records.push({ level, msg, fields: { ...this.#bound, ...fields } });
  }
  debug(msg: string, fields?: LogFields): void { this.#push('debug', msg, fields); }
  info(msg: string, fields?: LogFields): void { this.#push('info', msg, fields); }
  warn(msg: string, fields?: LogFields): void { this.#push('warn', msg, fields); }
  error(msg: string, fields?: LogFields): void { this.#push('error', msg, fields); }
  child(fields: LogFields): Logger { return new MemoryLogger(this.records, { ...this.#bound, ...fields }); }
}

/** A logger that drops everything. */
export const NULL_LOGGER: Logger = {
  debug() {}, info() {}, warn() {}, error() {},
  child() { return NULL_LOGGER; },
};
