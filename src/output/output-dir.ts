import { mkdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { describeFsError, ExitError } from "../errors.js";

/**
 * Creates the output directory and proves it writable: find out now, in the
 * OS's words, not after an hour of GPU time (SQLite would say only "unable
 * to open database file").
 */
export function ensureWritableDir(dir: string): void {
  makeDirs(dir);
  const probe = join(dir, `.embed-multi-write-test-${process.pid}`);
  try {
    writeFileSync(probe, "", { flag: "wx" }); // O_EXCL: a planted link is not followed
    rmSync(probe);
  } catch (err) {
    throw describeFsError(err, "write to output directory", dir);
  }
}

/**
 * mkdir -p, one level at a time. Node's recursive mkdir reports a level it
 * cannot make on a read-only mount (EROFS) or without permission (EACCES) as
 * "no such file or directory": it stats the missing folder and returns that
 * error. Made level by level, the OS's own reason comes back, with the folder
 * that could not be made. `mkdirOne` makes one level (a seam for the tests,
 * which run as root, where no mode refuses a write).
 */
export function makeDirs(
  dir: string,
  mkdirOne: (path: string) => void = (p) => mkdirSync(p),
): void {
  const missing: string[] = [];
  for (let p = resolve(dir); !isDir(p); p = dirname(p)) {
    missing.unshift(p);
    if (dirname(p) === p) break;
  }
  for (const level of missing) {
    try {
      mkdirOne(level);
    } catch (err) {
      // Made meanwhile by another process: fine.
      if ((err as NodeJS.ErrnoException)?.code === "EEXIST") {
        if (isDir(level)) continue;
        throw new ExitError(
          `cannot create output directory ${dir}: a parent is not a directory (${level} is a file)`,
        );
      }
      const described = describeFsError(err, "create output directory", dir);
      throw level === resolve(dir) || described.constructor !== ExitError
        ? described
        : new ExitError(`${described.message} (creating ${level})`);
    }
  }
}

function isDir(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}
