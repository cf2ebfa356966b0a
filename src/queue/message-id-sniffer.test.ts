import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MessageIdSniffer } from './message-id-sniffer.ts';

function sniff(text: string | Buffer, chunkSize = Infinity): string | null {
  const bytes = typeof text === 'string' ? Buffer.from(text) : text;
  const s = new MessageIdSniffer();
  for (let i = 0; i < bytes.length; i += Math.min(chunkSize, bytes.length)) s.push(bytes.subarray(i, i + chunkSize));
  s.end();
  return s.messageId;
}

test('message-id: found in the header section, any case, bare LF or CRLF', () => {
  assert.equal(sniff('Received: x\r\nMessage-ID: <a.b@c>\r\nSubject: s\r\n\r\nbody\r\n'), '<a.b@c>');
  assert.equal(sniff('message-id:<x@y>\n\nbody'), '<x@y>');
  assert.equal(sniff('MESSAGE-ID :   <x@y>  \r\n\r\n'), '<x@y>');
});

test('message-id: folded value and every chunk split', () => {
  const msg = 'Received: from a\r\n\tby b\r\nMessage-Id:\r\n   <folded@example.org>\r\nX: y\r\n\r\nbody';
  for (const size of [1, 2, 3, 7, 64]) assert.equal(sniff(msg, size), '<folded@example.org>', `chunk ${size}`);
});

test('message-id: the first one wins; one in the body or a continuation line is ignored', () => {
  assert.equal(sniff('Message-ID: <1@a>\r\nMessage-ID: <2@a>\r\n\r\n'), '<1@a>');
  assert.equal(sniff('Subject: s\r\n\r\nMessage-ID: <body@a>\r\n'), null);
  assert.equal(sniff('Subject: s\r\n Message-ID: <cont@a>\r\n\r\n'), null);
  assert.equal(sniff('X-Message-ID: <x@a>\r\n\r\n'), null);
});

test('message-id: a header section without a body, and without brackets', () => {
  assert.equal(sniff('Message-ID: <end@a>'), '<end@a>');
  assert.equal(sniff('Message-ID: no-brackets@a\r\n\r\n'), 'no-brackets@a');
  assert.equal(sniff('Message-ID:   \r\n\r\n'), null);
});

test('message-id: scanning is bounded (header cap and field cap)', () => {
  const filler = `X-Filler: ${'a'.repeat(998)}\r\n`.repeat(300); // ~300 KB of header before the id
  assert.equal(sniff(`${filler}Message-ID: <late@a>\r\n\r\n`, 65536), null);
  const long = `Message-ID: <${'b'.repeat(10000)}@a>\r\n\r\n`;
  const got = sniff(long);
  assert.ok(got === null || got.length <= 4096);
});

test('message-id: a field longer than the first buffer is kept whole (the buffer grows up to the field cap)', () => {
  const id = `<${'c'.repeat(700)}@example.org>`;
  const msg = `X-Long: ${'z'.repeat(900)}\r\nMessage-ID:\r\n ${id}\r\n\r\nbody\r\n`;
  assert.equal(sniff(msg), id);
  assert.equal(sniff(msg, 7), id, 'split into small chunks');
});
