/**
 * Finds the first Message-ID header of a message while its bytes stream past, in bounded memory: only the header
 * section is looked at (up to a byte cap), and only one header field at a time is buffered (up to a field cap).
 */

const MAX_FIELD_BYTES = 4096;
const MAX_HEADER_BYTES = 256 * 1024;
const MAX_ID_LENGTH = 998;
const NAME = /^message-id[ \t]*:/i;
const BRACKETED = /<[^<>\s]{1,996}>/;

/** A field buffer's first size: most header fields fit; it doubles up to MAX_FIELD_BYTES (small buffers come from
 *  Node's shared pool, so a message costs no allocation of its own for them). */
const FIRST_FIELD_BYTES = 256;

export class MessageIdSniffer {
  #field = Buffer.allocUnsafe(FIRST_FIELD_BYTES);
  #fieldLength = 0;
  #lineLength = 0;
  #seen = 0;
  #done = false;
  #messageId: string | null = null;

  /** The Message-ID found so far (the first one in the header section), or null. */
  get messageId(): string | null {
    return this.#messageId;
  }

  /** True once the header section ended, a Message-ID was found, or the byte cap was reached. */
  get done(): boolean {
    return this.#done;
  }

  push(chunk: Uint8Array): void {
    if (this.#done) return;
    const n = Math.min(chunk.length, MAX_HEADER_BYTES - this.#seen);
    for (let i = 0; i < n && !this.#done; i++) this.#byte(chunk[i]!);
    this.#seen += n;
    if (this.#seen >= MAX_HEADER_BYTES) this.#done = true;
  }

  /** Call at the end of the message: a header section without a body still ends here. */
  end(): void {
    if (!this.#done) this.#finishField();
    this.#done = true;
  }

  #byte(b: number): void {
    if (b === 0x0d) return; // CR: line ends are recognised by LF alone
    if (b === 0x0a) {
      if (this.#lineLength === 0) {
        this.#finishField(); // empty line: end of the header section
        this.#done = true;
      }
      this.#lineLength = 0;
      return;
    }
    if (this.#lineLength === 0 && b !== 0x20 && b !== 0x09) this.#finishField(); // a new field starts
    this.#lineLength++;
    if (this.#fieldLength < MAX_FIELD_BYTES) {
      if (this.#fieldLength === this.#field.length) {
        const grown = Buffer.allocUnsafe(Math.min(MAX_FIELD_BYTES, this.#field.length * 2));
        this.#field.copy(grown, 0, 0, this.#fieldLength);
        this.#field = grown;
      }
      this.#field[this.#fieldLength++] = b;
    }
  }

  #finishField(): void {
    if (this.#fieldLength === 0) return;
    const text = this.#field.toString('utf8', 0, this.#fieldLength);
    this.#fieldLength = 0;
    const name = NAME.exec(text);
    if (name === null) return;
    const value = text.slice(name[0].length).replace(/[ \t]+/g, ' ').trim();
    const bracketed = BRACKETED.exec(value);
    const id = bracketed !== null ? bracketed[0] : value.slice(0, MAX_ID_LENGTH);
    if (id === '') return;
    this.#messageId = id;
    this.#done = true;
  }
}

/** The form a Message-ID is stored and matched in: angle brackets, no surrounding space. */
export function normalizeMessageId(id: string): string {
  const t = id.trim();
  return t.startsWith('<') ? t : `<${t}>`;
}
