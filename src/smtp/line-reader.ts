/**
 * Command-line framing with hard caps. Lines end at LF; a line that ends in a bare LF (no CR) or carries a CR
 * anywhere else is reported, never silently accepted. Memory is bounded by maxLength: an overlong line is
 * discarded as it streams in and reported once when it ends.
 */

export type LineEvent =
  | { readonly kind: 'line'; readonly line: Buffer; readonly bareLf: boolean; readonly strayCr: boolean }
  | { readonly kind: 'too-long'; readonly length: number };

export class LineReader {
  readonly maxLength: number;
  #buf: Buffer = Buffer.alloc(0);
  /** Bytes of an overlong line dropped so far, or -1 when not discarding. */
  #discarded = -1;

  /** maxLength counts the line with its CRLF. */
  constructor(maxLength: number) {
    this.maxLength = maxLength;
  }

  /** Bytes received but not yet returned as lines. */
  get buffered(): number {
    return this.#buf.length;
  }

  /** Bytes of the current overlong line thrown away so far (0 when not discarding). */
  get discarding(): number {
    return this.#discarded < 0 ? 0 : this.#discarded + this.#buf.length;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.#buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk]);
  }

  /** Puts bytes back in front (left over after DATA or BDAT). */
  unshift(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.#buf = this.#buf.length === 0 ? chunk : Buffer.concat([chunk, this.#buf]);
  }

  /** Returns and forgets every buffered byte (mode switch to DATA/BDAT, or discard on STARTTLS). */
  takeAll(): Buffer {
    const b = this.#buf;
    this.#buf = Buffer.alloc(0);
    return b;
  }

  /** The next complete line, a too-long report, or null when more input is needed. */
  next(): LineEvent | null {
    const lf = this.#buf.indexOf(0x0a);
    if (this.#discarded >= 0) {
      if (lf < 0) {
        this.#discarded += this.#buf.length;
        this.#buf = Buffer.alloc(0);
        return null;
      }
      const length = this.#discarded + lf + 1;
      this.#discarded = -1;
      this.#buf = this.#buf.subarray(lf + 1);
      return { kind: 'too-long', length };
    }
    if (lf < 0) {
      if (this.#buf.length > this.maxLength) {
        // Start discarding now, so a client sending megabytes without a newline costs nothing.
        this.#discarded = this.#buf.length;
        this.#buf = Buffer.alloc(0);
      }
      return null;
    }
    if (lf + 1 > this.maxLength) {
      const length = lf + 1;
      this.#buf = this.#buf.subarray(lf + 1);
      return { kind: 'too-long', length };
    }
    const bareLf = lf === 0 || this.#buf[lf - 1] !== 0x0d;
    const line = this.#buf.subarray(0, bareLf ? lf : lf - 1);
    this.#buf = this.#buf.subarray(lf + 1);
    const strayCr = line.indexOf(0x0d) >= 0;
    // Copy so the line does not pin a large chunk in memory.
    return { kind: 'line', line: Buffer.from(line), bareLf, strayCr };
  }
}
