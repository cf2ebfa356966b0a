/**
 * Command-line framing with hard caps. Lines end at LF; a line that ends in a bare LF (no CR) or carries a CR
 * anywhere else is reported, never silently accepted. Memory is bounded by maxLength: an overlong line is
 * discarded as it streams in and reported once when it ends.
 *
 * A line comes out as a string (its own copy: it never pins the read chunk), and the reader walks its buffer by
 * offset, so a pipelined burst costs one string and one small event per line, nothing else.
 */

export type LineEvent =
  | {
    readonly kind: 'line';
    /** The line without its line ending: UTF-8 decoded, or latin1 when it is not valid UTF-8 (utf8 false). */
    readonly text: string;
    readonly utf8: boolean;
    readonly bareLf: boolean;
    readonly strayCr: boolean;
    /** The line holds a NUL octet. */
    readonly nul: boolean;
  }
  | { readonly kind: 'too-long'; readonly length: number };

const EMPTY = Buffer.alloc(0);
const UTF8 = new TextDecoder('utf-8', { fatal: true });

export class LineReader {
  readonly maxLength: number;
  /** Received bytes; those before #pos have been returned already. */
  #buf: Buffer = EMPTY;
  #pos = 0;
  /** Bytes that follow #buf (the rest of a chunk whose first line completed a partial one). */
  #next: Buffer = EMPTY;
  /** Bytes of an overlong line dropped so far, or -1 when not discarding. */
  #discarded = -1;

  /** maxLength counts the line with its CRLF. */
  constructor(maxLength: number) {
    this.maxLength = maxLength;
  }

  /** Bytes received but not yet returned as lines. */
  get buffered(): number {
    return this.#buf.length - this.#pos + this.#next.length;
  }

  /** Bytes of the current overlong line thrown away so far (0 when not discarding). */
  get discarding(): number {
    return this.#discarded < 0 ? 0 : this.#discarded + this.buffered;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    if (this.#next.length > 0) {
      this.#next = Buffer.concat([this.#next, chunk]);
      return;
    }
    if (this.buffered === 0) {
      this.#buf = chunk;
      this.#pos = 0;
      return;
    }
    const lf = chunk.indexOf(0x0a);
    if (lf < 0 || lf + 1 === chunk.length) {
      this.#buf = Buffer.concat([this.#buf.subarray(this.#pos), chunk]);
    } else {
      // Complete the partial line with the chunk's first line only (a few bytes copied, not the whole chunk);
      // the rest of the chunk is read in place once that line is out.
      this.#buf = Buffer.concat([this.#buf.subarray(this.#pos), chunk.subarray(0, lf + 1)]);
      this.#next = chunk.subarray(lf + 1);
    }
    this.#pos = 0;
  }

  /** Puts bytes back in front (left over after DATA or BDAT). */
  unshift(chunk: Buffer): void {
    if (chunk.length === 0) return;
    const rest = this.takeAll();
    this.#buf = rest.length === 0 ? chunk : Buffer.concat([chunk, rest]);
    this.#pos = 0;
  }

  /** Returns and forgets every buffered byte (mode switch to DATA/BDAT, or discard on STARTTLS). */
  takeAll(): Buffer {
    const head = this.#pos === 0 ? this.#buf : this.#buf.subarray(this.#pos);
    const b = this.#next.length === 0 ? head : head.length === 0 ? this.#next : Buffer.concat([head, this.#next]);
    this.#clear();
    return b;
  }

  /** The next complete line, a too-long report, or null when more input is needed. */
  next(): LineEvent | null {
    if (this.#next.length > 0 && this.#buf.indexOf(0x0a, this.#pos) < 0) {
      // Not reached in practice (#buf then ends with a line feed); kept so that any sequence of calls is safe.
      this.#buf = Buffer.concat([this.#buf.subarray(this.#pos), this.#next]);
      this.#pos = 0;
      this.#next = EMPTY;
    }
    const buf = this.#buf;
    const pos = this.#pos;
    const lf = buf.indexOf(0x0a, pos);
    if (this.#discarded >= 0) {
      if (lf < 0) {
        this.#discarded += buf.length - pos;
        this.#clear();
        return null;
      }
      const length = this.#discarded + lf - pos + 1;
      this.#discarded = -1;
      this.#consume(lf + 1);
      return { kind: 'too-long', length };
    }
    if (lf < 0) {
      if (buf.length - pos > this.maxLength) {
        // Start discarding now, so a client sending megabytes without a newline costs nothing.
        this.#discarded = buf.length - pos;
        this.#clear();
      }
      return null;
    }
    if (lf + 1 - pos > this.maxLength) {
      const length = lf + 1 - pos;
      this.#consume(lf + 1);
      return { kind: 'too-long', length };
    }
    const bareLf = lf === pos || buf[lf - 1] !== 0x0d;
    const end = bareLf ? lf : lf - 1;
    let ascii = true;
    let strayCr = false;
    let nul = false;
    for (let i = pos; i < end; i++) {
      const c = buf[i]!;
      if (c >= 0x80) ascii = false;
      else if (c === 0x0d) strayCr = true;
      else if (c === 0) nul = true;
    }
    let text: string;
    let utf8 = true;
    if (ascii) {
      text = buf.toString('latin1', pos, end);
    } else {
      try {
        text = UTF8.decode(buf.subarray(pos, end));
      } catch {
        utf8 = false;
        text = buf.toString('latin1', pos, end);
      }
    }
    this.#consume(lf + 1);
    return { kind: 'line', text, utf8, bareLf, strayCr, nul };
  }

  /** Marks the bytes before `to` as returned; lets go of the chunk once all of it is. */
  #consume(to: number): void {
    if (to < this.#buf.length) {
      this.#pos = to;
      return;
    }
    this.#buf = this.#next;
    this.#next = EMPTY;
    this.#pos = 0;
  }

  #clear(): void {
    this.#buf = EMPTY;
    this.#next = EMPTY;
    this.#pos = 0;
  }
}
