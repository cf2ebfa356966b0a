/**
 * Least privilege for `relayguard serve` started as root (issue 9, F6): resolve the configured user and group,
 * hand the data directory to them, and drop to them once every port is bound, before any client byte is read
 * (the SMTP server holds accepted connections until then). Postfix's master does the same with mail_owner.
 */
import { execFileSync } from 'node:child_process';
import { lchownSync, lstatSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { RelayguardError } from '../core/errors.ts';

export const ERR_PRIVILEGES = 'ERR_PRIVILEGES';

export interface Identity {
  readonly user: string;
  readonly uid: number;
  readonly group: string;
  readonly gid: number;
}

function getent(db: 'passwd' | 'group', key: string): string[] | null {
  try {
    const line = execFileSync('getent', [db, key], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).split('\n')[0] ?? '';
    return line === '' ? null : line.split(':');
  } catch {
    return null;
  }
}

/** The uid and gid of `user` (and `group`, else the user's primary group); throws ERR_PRIVILEGES when unknown. */
export function resolveIdentity(user: string, group: string | null): Identity {
  const pw = getent('passwd', user);
  if (pw === null || pw.length < 4) throw new RelayguardError(ERR_PRIVILEGES, `No such user "${user}" (config key user)`);
  const uid = Number(pw[2]);
  let gid = Number(pw[3]);
  let groupName = getent('group', String(gid))?.[0] ?? String(gid);
  if (group !== null) {
    const gr = getent('group', group);
    if (gr === null || gr.length < 3) throw new RelayguardError(ERR_PRIVILEGES, `No such group "${group}" (config key group)`);
    gid = Number(gr[2]);
    groupName = gr[0]!;
  }
  if (!Number.isInteger(uid) || !Number.isInteger(gid)) throw new RelayguardError(ERR_PRIVILEGES, `Cannot read the ids of ${user}`);
  if (uid === 0) throw new RelayguardError(ERR_PRIVILEGES, `user "${user}" is root: pick an unprivileged user`);
  return { user, uid, group: groupName, gid };
}

/**
 * Gives a directory tree to uid:gid (symbolic links themselves, never what they point to). Returns entries changed.
 * An entry that vanishes during the walk is skipped (with workers, another process's spool files come and go).
 */
export function chownTree(dir: string, uid: number, gid: number): number {
  let n = 0;
  const walk = (p: string): void => {
    try {
      const st = lstatSync(p);
      if (st.uid !== uid || st.gid !== gid) {
        lchownSync(p, uid, gid);
        n++;
      }
      if (st.isDirectory()) for (const name of readdirSync(p)) walk(join(p, name));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  };
  walk(dir);
  return n;
}

/** Drops the whole process to the identity (supplementary groups first, then gid, then uid); verifies it. */
export function dropPrivileges(id: Identity): void {
  if (!process.setgroups || !process.setgid || !process.setuid) throw new RelayguardError(ERR_PRIVILEGES, 'this platform cannot change the process identity');
  process.setgroups([id.gid]);
  process.setgid(id.gid);
  process.setuid(id.uid);
  if (process.getuid!() !== id.uid || process.geteuid!() !== id.uid || process.getgid!() !== id.gid) {
    throw new RelayguardError(ERR_PRIVILEGES, 'privileges were not dropped');
  }
}

/** True when this process runs as root. */
export function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}
