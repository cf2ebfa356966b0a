#!/usr/bin/env node
// The published entry point: the built CLI when dist/ exists, else the TypeScript sources (Node >= 22.18 strips types).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const built = fileURLToPath(new URL('../dist/cli/main.js', import.meta.url));
const entry = existsSync(built) ? built : fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));
// A reader that goes away (`relayguard queue list | head`) ends the output quietly, as with other CLI tools.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err) => {
    if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw err;
  });
}
const { main } = await import(entry);
process.exitCode = await main(process.argv.slice(2));
