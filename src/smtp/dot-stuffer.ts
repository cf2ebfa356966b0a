/**
 * Turns a message body into DATA wire bytes (RFC 5321 section 4.5.2; SM-16): the output is CRLF-only, with no
 * bare CR, bare LF or NUL, dot-stuffed, and ends with exactly one CRLF "." CRLF. Rules, in this order:
 *
 *   1. NUL is dropped, as if it had never been there (our DataReader's normalize mode drops it too; a remote
 *      server in Postfix-style "reject" mode would refuse the whole message otherwise).
 *   2. CRLF stays; a bare LF becomes CRLF; a bare CR becomes SP (Postfix cleanup_replace_stray_cr_lf).
 *   3. A line that starts with "." gets a second "." in front.
 *   4. end(): if the body does not end with a line ending, CRLF is added; then ".\r\n".
 *
 * Incremental and correct across chunk boundaries: the only state is "at line start" and "held-back CR", so
 * memory is constant and each push() returns at most 2 * chunk.length + 2 bytes. A smuggling sequence such as
 * "\n.\r\n" or "\r.\r" in the input can never produce a terminator: it becomes "\r\n..\r\n" or " . ".
 */

const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;
const NUL = 0x00;
const SP = 0x20;

export class DotStuffer {
  /** At the start of a line (the body start counts). */
  #lineStart = true;
  /** The previous chunk ended with a CR whose fate (CRLF or bare) depends on the next byte. */
  #pendingCr = false;
  #ended = false;
  #bytesIn = 0;
  #bytesOut = 0;

  /** Body octets seen so far. */
  get bytesIn(): number { return this.#bytesIn; }
  /** Wire octets produced so far (including stuffing and, after end(), the terminator). */
  get bytesOut(): number { return this.#bytesOut; }

  /** Wire bytes for the next body chunk (possibly empty). */
  push(chunk: Uint8Array): Buffer {
    if (this.#ended) throw new Error('DotStuffer already ended');
    this.#bytesIn += chunk.length;
    const out = Buffer.allocUnsafe(chunk.length * 2 + 2);
    let o = 0;
    let lineStart = this.#lineStart;
    let pendingCr = this.#pendingCr;
    for (let i = 0; i < chunk.length; i++) {
      const c = chunk[i]!;
      if (c === NUL) continue;
      if (pendingCr) {
        pendingCr = false;
        if (c === LF) {
          out[o++] = CR;
          out[o++] = LF;
          lineStart = true;
          continue;
        }
        // The held CR was bare: it becomes a space, which is line content.
        out[o++] = SP;
        lineStart = false;
      }
      if (c === CR) { pendingCr = true; continue; }
      if (c === LF) {
        out[o++] = CR;
        out[o++] = LF;
        lineStart = true;
        continue;
      }
      if (lineStart && c === DOT) out[o++] = DOT;
      out[o++] = c;
      lineStart = false;
    }
    this.#lineStart = lineStart;
    this.#pendingCr = pendingCr;
    this.#bytesOut += o;
    return out.subarray(0, o);
  }

  /** The final bytes: a held-back bare CR (as SP), a CRLF if the body did not end with one, and ".\r\n". */
  end(): Buffer {
    if (this.#ended) throw new Error('DotStuffer already ended');
    this.#ended = true;
    let tail = '';
    if (this.#pendingCr) {
      tail += ' ';
      this.#lineStart = false;
      this.#pendingCr = false;
    }
    if (!this.#lineStart) tail += '\r\n';
    tail += '.\r\n';
    this.#bytesOut += tail.length;
    return Buffer.from(tail, 'latin1');
  }
}

/** The whole transformation in one call (tests, small bodies). */
export function dotStuff(body: Uint8Array): Buffer {
  const s = new DotStuffer();
  return Buffer.concat([s.push(body), s.end()]);
}
