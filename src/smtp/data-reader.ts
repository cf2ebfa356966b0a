/**
 * The DATA reader (RFC 5321 section 4.1.1.4): only CRLF "." CRLF ends the data; dot-stuffing is removed;
 * a bare CR, bare LF or NUL is a violation in strict mode (the default, as Postfix "reject") and is
 * rewritten in normalize mode (bare LF becomes CRLF, bare CR becomes SP, NUL is dropped), so that no
 * smuggling sequence is ever stored. Work is linear in the input; memory is constant (output slices point
 * into the input chunk). It also counts Received: header fields for the hop limit.
 */

export type LineEndingMode = 'reject' | 'normalize';
export type DataViolation = 'bare-lf' | 'bare-cr' | 'nul';

const S_LINE_START = 0; // at the start of a line reached by CRLF (a "." here is special)
const S_IN_LINE = 1;
const S_CR = 2; // saw CR, expecting LF
const S_DOT = 3; // saw "." at a real line start
const S_DOT_CR = 4; // saw "." CR at a real line start
const S_BARE_START = 5; // normalize mode: line start reached by a bare LF ("." is plain content here)

const RECEIVED = Buffer.from('received:');

export interface DataFeedResult {
  /** Unstuffed message bytes to store, in order (slices of the input). */
  readonly out: Buffer[];
  /** Input bytes consumed: all of them, or up to and including the terminator. */
  readonly consumed: number;
  /** True when the terminator was found. */
  readonly done: boolean;
}

export class DataReader {
  readonly mode: LineEndingMode;
  readonly maxSize: number;
  #state = S_LINE_START;
  #size = 0;
  #violation: DataViolation | null = null;
  #tooBig = false;
  #inHeaders = true;
  #hdrMatch = 0;
  #received = 0;
  /** A CR at the very end of the previous chunk, held back until we know whether LF follows. */
  #pendingCr = false;

  constructor(options: { mode: LineEndingMode; maxSize: number }) {
    this.mode = options.mode;
    this.maxSize = options.maxSize;
  }

  /** The first line-ending or NUL violation seen (strict mode only), else null. */
  get violation(): DataViolation | null { return this.#violation; }
  /** True once the message grew past maxSize (the rest is read and discarded). */
  get tooBig(): boolean { return this.#tooBig; }
  /** Bytes of message content stored so far. */
  get size(): number { return this.#size; }
  /** Received: header fields seen in the header section. */
  get receivedCount(): number { return this.#received; }
  /** True while the reader should still hand out content (no violation, not too big). */
  get accepting(): boolean { return this.#violation === null && !this.#tooBig; }

  feed(chunk: Buffer): DataFeedResult {
    const out: Buffer[] = [];
    const strict = this.mode === 'reject';
    let state = this.#state;
    let segStart = 0; // start of the pending output slice of chunk
    let i = 0;
    const n = chunk.length;

    const flush = (end: number): void => {
      if (end > segStart) this.#emit(out, chunk.subarray(segStart, end));
    };
    const emitConst = (b: Buffer): void => { this.#emit(out, b); };
    const violate = (v: DataViolation): void => { if (this.#violation === null) this.#violation = v; };
    // Positions of the next CR, LF and NUL at or after some index <= i+1 (n when there is none), found with
    // Buffer#indexOf (memchr) and kept until passed: inside a line nothing else changes state, so the loop
    // jumps from one of these bytes to the next instead of visiting every byte of the content.
    let nextCr = -1;
    let nextLf = -1;
    let nextNul = -1;

    for (; i < n; i++) {
      const c = chunk[i]!;
      switch (state) {
        case S_LINE_START:
        case S_BARE_START:
          if (c === 0x2e && state === S_LINE_START) {
            flush(i);
            segStart = i + 1; // drop the dot (stuffing or the terminator's dot)
            state = S_DOT;
            continue;
          }
          if (this.#inHeaders) {
            if (c === 0x0d || c === 0x0a) this.#inHeaders = false; // empty line ends the header section
            else this.#hdrMatch = 0;
          }
          // fall through to in-line handling
          state = S_IN_LINE;
          i--; // reprocess this byte as in-line
          continue;
        case S_IN_LINE:
          if (c === 0x0d) { state = S_CR; continue; }
          if (c === 0x0a) {
            // bare LF
            if (strict) { violate('bare-lf'); state = S_BARE_START; continue; }
            flush(i);
            emitConst(CRLF);
            segStart = i + 1;
            state = S_BARE_START;
            this.#endHeaderLine();
            continue;
          }
          if (c === 0x00) {
            if (strict) { violate('nul'); continue; }
            flush(i);
            segStart = i + 1;
            continue;
          }
          if (this.#inHeaders && this.#hdrMatch >= 0) {
            this.#matchHeader(c);
            continue;
          }
          if (nextCr <= i) nextCr = indexOrEnd(chunk, 0x0d, i + 1);
          if (nextLf <= i) nextLf = indexOrEnd(chunk, 0x0a, i + 1);
          if (nextNul <= i) nextNul = indexOrEnd(chunk, 0x00, i + 1);
          i = Math.min(nextCr, nextLf, nextNul) - 1; // the loop's i++ lands on that byte (or ends the chunk)
          continue;
        case S_CR:
          if (c === 0x0a) {
            state = S_LINE_START;
            this.#endHeaderLine();
            continue;
          }
          // bare CR: the CR is at i-1
          if (strict) { violate('bare-cr'); state = S_IN_LINE; i--; continue; }
          flush(i - 1);
          this.#pendingCr = false; // a CR held back from the previous chunk is the bare one
          emitConst(SP);
          segStart = i;
          state = S_IN_LINE;
          i--;
          continue;
        case S_DOT:
          if (c === 0x0d) { state = S_DOT_CR; continue; }
          // The dot was stuffing; it stays dropped. The line goes on with this byte.
          if (c === 0x0a) {
            if (strict) { violate('bare-lf'); state = S_BARE_START; continue; }
            // ".<LF>" is not an end of data; store it as an empty line.
            emitConst(CRLF);
            segStart = i + 1;
            state = S_BARE_START;
            this.#endHeaderLine();
            continue;
          }
          segStart = i;
          state = S_IN_LINE;
          i--;
          continue;
        case S_DOT_CR:
          if (c === 0x0a) {
            // CRLF "." CRLF: the end of data. Nothing of the terminator is content.
            this.#state = S_LINE_START;
            return { out, consumed: i + 1, done: true };
          }
          // ".<CR>x": bare CR after a stuffing dot
          if (strict) { violate('bare-cr'); segStart = i; state = S_IN_LINE; i--; continue; }
          emitConst(SP);
          segStart = i;
          state = S_IN_LINE;
          i--;
          continue;
      }
    }
    // End of chunk: a pending CR (S_CR) stays unemitted until we know what follows; so does a pending dot.
    if (state === S_CR) {
      flush(n - 1);
      this.#state = state;
      this.#pendingCr = true;
      return { out, consumed: n, done: false };
    }
    if (state === S_DOT_CR) {
      this.#state = state;
      return { out, consumed: n, done: false };
    }
    flush(n);
    this.#state = state;
    return { out, consumed: n, done: false };
  }

  #emit(out: Buffer[], b: Buffer): void {
    if (b.length === 0) return;
    if (this.#pendingCr) {
      // A CR held back at the end of the previous chunk: it belongs before this output.
      this.#pendingCr = false;
      this.#emit(out, CR);
    }
    if (this.#violation !== null || this.#tooBig) return;
    if (this.#size + b.length > this.maxSize) {
      this.#tooBig = true;
      return;
    }
    this.#size += b.length;
    out.push(b);
  }

  #matchHeader(c: number): void {
    const lower = c >= 0x41 && c <= 0x5a ? c + 0x20 : c;
    if (lower === RECEIVED[this.#hdrMatch]) {
      this.#hdrMatch++;
      if (this.#hdrMatch === RECEIVED.length) {
        this.#received++;
        this.#hdrMatch = -1;
      }
    } else {
      this.#hdrMatch = -1;
    }
  }

  #endHeaderLine(): void {
    this.#hdrMatch = 0;
  }
}

/** The index of the first `byte` at or after `from`, or the buffer's length when there is none. */
function indexOrEnd(b: Buffer, byte: number, from: number): number {
  const at = b.indexOf(byte, from);
  return at < 0 ? b.length : at;
}

const CRLF = Buffer.from('\r\n');
const CR = Buffer.from('\r');
const SP = Buffer.from(' ');
