/** The JSON-lines logger (pino) behind the project's Logger interface. Only the CLI builds one. */
import { pino, type Logger as Pino } from 'pino';
import { EscapingLogger, type Logger, type LogFields } from '../core/log.ts';

class PinoLogger implements Logger {
  readonly #p: Pino;
  constructor(p: Pino) { this.#p = p; }
  debug(msg: string, fields?: LogFields): void { this.#p.debug(fields ?? {}, msg); }
  info(msg: string, fields?: LogFields): void { this.#p.info(fields ?? {}, msg); }
  warn(msg: string, fields?: LogFields): void { this.#p.warn(fields ?? {}, msg); }
  error(msg: string, fields?: LogFields): void { this.#p.error(fields ?? {}, msg); }
  child(fields: LogFields): Logger { return new PinoLogger(this.#p.child(fields)); }
}

/** Logs JSON lines to the given file descriptor (stdout by default). */
export function createLogger(options: { level?: string; fd?: number } = {}): Logger {
  const p = pino(
    {
      level: options.level ?? 'info',
      base: { service: 'relayguard' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    pino.destination({ fd: options.fd ?? 1, sync: false }),
  );
  // Attacker-controlled strings are escaped and the client's address is written first (core/log.ts).
  return new EscapingLogger(new PinoLogger(p));
}
