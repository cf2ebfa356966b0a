#!/usr/bin/env node
// The published entry point: the built CLI when dist/ exists, else the TypeScript sources (Node >= 22.18 strips types).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const built = fileURLToPath(new URL('../dist/cli/main.js', import.meta.url));
const entry = existsSync(built) ? built : fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));
const { main } = await import(entry);
process.exitCode = await main(process.argv.slice(2));
