/**
 * File modes of what relayguard keeps on disk. Everything holding secrets or mail (the databases with their -wal
 * and -shm files, spool files, private keys, mailboxes) is 0600 and its directories 0700, whatever the umask and
 * whatever the mode of a data directory the administrator made beforehand.
 *
 * SQLite creates a database file with 0644 & ~umask, and its -wal, -shm and -journal files with the database
 * file's own mode (it fchmods them to match, umask or not). So chmod the database file right after opening it and
 * before the first write (`PRAGMA journal_mode = WAL` is one): the side files then follow. Chmod is by path, never
 * through a second descriptor: closing a descriptor of a database file drops every POSIX lock this process holds
 * on it (SQLite's locks included).
 */
import { chmodSync } from 'node:fs';

export const PRIVATE_FILE_MODE = 0o600;
export const PRIVATE_DIR_MODE = 0o700;

/** chmod `path` to `mode`; a missing file is fine, and so is a file we may not chmod (someone else's). */
export function restrictMode(path: string, mode: number): void {
  try {
    chmodSync(path, mode);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT' && code !== 'EPERM') throw err;
  }
}

/**
 * Makes an SQLite database and its side files (-wal, -shm, -journal, when present) 0600. Call it right after
 * opening a database that may have just been created, before the first write. ":memory:" and "" are ignored.
 */
export function restrictSqliteFiles(dbPath: string): void {
  if (dbPath === '' || dbPath === ':memory:' || dbPath.startsWith('file:')) return;
  for (const suffix of ['', '-wal', '-shm', '-journal']) restrictMode(`${dbPath}${suffix}`, PRIVATE_FILE_MODE);
}

/** The permission bits group and others have on a mode (0 when only the owner has any). */
export function groupOrOtherBits(mode: number): number {
  return mode & 0o077;
}
