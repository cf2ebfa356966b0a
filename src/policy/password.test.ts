import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_SCRYPT_PARAMS, hashPassword, isPasswordHash, needsRehash, verifyPassword } from './password.ts';

const FAST = { N: 1024, r: 8, p: 1 };

test('password: hash has the documented encoding and verifies', async () => {
  const encoded = await hashPassword('correct horse', FAST);
  assert.match(encoded, /^scrypt\$1024\$8\$1\$[A-Za-z0-9+/]+={0,2}\$[A-Za-z0-9+/]+={0,2}$/);
  assert.equal(isPasswordHash(encoded), true);
  assert.equal(await verifyPassword('correct horse', encoded), true);
  assert.equal(await verifyPassword('correct horsE', encoded), false);
  assert.equal(await verifyPassword('', encoded), false);
});

test('password: the default parameters work (scrypt maxmem is raised)', async () => {
  const encoded = await hashPassword('s3cret');
  assert.ok(encoded.startsWith(`scrypt$${DEFAULT_SCRYPT_PARAMS.N}$8$1$`));
  assert.equal(await verifyPassword('s3cret', encoded), true);
  assert.equal(needsRehash(encoded), false);
});

test('password: salts differ, so equal passwords give different hashes', async () => {
  const a = await hashPassword('same', FAST);
  const b = await hashPassword('same', FAST);
  assert.notEqual(a, b);
  assert.equal(await verifyPassword('same', a), true);
  assert.equal(await verifyPassword('same', b), true);
});

test('password: Unicode normalization makes composed and decomposed forms equal', async () => {
  const encoded = await hashPassword('caf\u00e9', FAST);
  assert.equal(await verifyPassword('cafe\u0301', encoded), true);
});

test('password: malformed or hostile hashes never verify and never throw', async () => {
  const good = await hashPassword('pw', FAST);
  const parts = good.split('$');
  const bad = [
    '',
    'plain',
    'scrypt$1024$8$1$c2FsdA==',
    `bcrypt$1024$8$1$${parts[4]}$${parts[5]}`,
    `scrypt$1000$8$1$${parts[4]}$${parts[5]}`, // N not a power of two
    `scrypt$4194304$8$1$${parts[4]}$${parts[5]}`, // N too large (DoS)
    `scrypt$1024$0$1$${parts[4]}$${parts[5]}`,
    `scrypt$01024$8$1$${parts[4]}$${parts[5]}`,
    `scrypt$1024$8$1$${parts[4]}$!!!!`,
    `scrypt$1024$8$1$${parts[4]}$${parts[5]}$extra`,
    `scrypt$1024$8$1$${parts[4]}$AAAA`, // hash too short
  ];
  for (const encoded of bad) {
    assert.equal(isPasswordHash(encoded), false, encoded);
    assert.equal(await verifyPassword('pw', encoded), false, encoded);
  }
});

test('password: needsRehash flags weaker parameters', async () => {
  const weak = await hashPassword('pw', FAST);
  assert.equal(needsRehash(weak), true);
  assert.equal(needsRehash(weak, FAST), false);
  assert.equal(needsRehash('garbage'), true);
});

test('password: invalid parameters are refused when hashing', async () => {
  await assert.rejects(hashPassword('pw', { N: 1000, r: 8, p: 1 }), RangeError);
});
