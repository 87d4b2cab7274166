import { lstatSync, readFileSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { describeFsError, ExitError } from "../errors.js";
import { writeFileAtomic } from "./atomic.js";
import { ensureWritableDir } from "./output-dir.js";

/** Beside the checkpoint, so that listings that skip `embed-multi.checkpoint*` skip it too. */
export const LOCK_FILE = "embed-multi.checkpoint.lock";
const PID_WAIT_MS = 2000;

/** Another run holds the output folder. */
export class FolderLockedError extends ExitError {}

/**
 * The output folder's exclusive lock, held for the whole run.
 *
 * Node has no flock(); SQLite does the same with POSIX fcntl locks: an open
 * EXCLUSIVE transaction on a small SQLite file. The kernel drops the lock
 * when the process dies, however it dies (kill -9 included), so a lock can
 * never be left stuck. The holder's pid goes into a separate file (the locked
 * database cannot be read by the run that is refused), written after the lock
 * is taken: it is only ever read while the lock is held by someone.
 */
export class FolderLock {
  private constructor(
    private readonly db: Database.Database,
    readonly path: string,
    /** The locked file's identity: a file deleted and made again at the path is another. */
    private readonly identity: { dev: number; ino: number },
  ) {}

  /**
   * Throws unless the file at the path is still the one this run locked. A
   * lock file deleted during the run lets a second run lock a new one; the
   * first must then stop before it writes what the second writes too.
   */
  assertHeld(): void {
    let now: { dev: number; ino: number } | null = null;
    try {
      now = lstatSync(this.path);
    } catch {
      // Gone.
    }
    if (!now || now.dev !== this.identity.dev || now.ino !== this.identity.ino) {
      throw new FolderLockedError(
        `the lock file ${this.path} was deleted or replaced during the run, so another run may be using the folder; stopping without writing outputs: run the same command again once no other embed-multi uses it`,
      );
    }
  }

  static acquire(dir: string): FolderLock {
    const path = join(dir, LOCK_FILE);
    refuseLink(path);
    let db: Database.Database;
    try {
      // No busy timeout: a held lock is refused at once. The file stays in SQLite's default
      // rollback-journal mode, where an EXCLUSIVE lock keeps out readers as well as writers.
      db = new Database(path, { timeout: 0 });
    } catch (err) {
      throw lockFailure(err, path);
    }
    let identity: { dev: number; ino: number };
    try {
      db.exec("BEGIN EXCLUSIVE");
      identity = lstatSync(path);
    } catch (err) {
      db.close();
      if (isBusy(err)) {
        const pid = readPid(path);
        throw new FolderLockedError(
          `${dir} is in use by another embed-multi run (pid ${pid ?? "unknown"}); wait for it to finish or use another --output_dir`,
        );
      }
      throw lockFailure(err, path);
    }
    try {
      writeFileAtomic(pidPath(path), `${process.pid}\n`);
    } catch (err) {
      db.close();
      throw describeFsError(err, "write", pidPath(path));
    }
    return new FolderLock(db, path, identity);
  }

  /** Lets the next run in. The files stay: removing them would race with a run opening them. */
  release(): void {
    if (!this.db.open) return;
    try {
      this.db.exec("ROLLBACK");
    } finally {
      this.db.close();
    }
  }
}

function pidPath(lockPath: string): string {
  return `${lockPath}.pid`;
}

/** The holder writes its pid just after taking the lock: give it a moment. */
function readPid(lockPath: string): number | null {
  const until = Date.now() + PID_WAIT_MS;
  for (;;) {
    try {
      const pid = Number.parseInt(readFileSync(pidPath(lockPath), "utf8"), 10);
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && alive(pid)) return pid;
    } catch {
      // Not written yet.
    }
    if (Date.now() >= until) return null;
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

function refuseLink(path: string): void {
  try {
    if (lstatSync(path).isSymbolicLink()) {
      throw new ExitError(`${path} is a symbolic link; remove it (embed-multi never follows one)`);
    }
  } catch (err) {
    if (err instanceof ExitError) throw err;
  }
}

function isBusy(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code;
  return code === "SQLITE_BUSY" || code === "SQLITE_LOCKED";
}

function lockFailure(err: unknown, path: string): ExitError {
  if ((err as { code?: unknown })?.code === "SQLITE_NOTADB") {
    return new ExitError(`${path} is not embed-multi's lock file; move it away`);
  }
  return describeFsError(err, "lock the output folder with", path);
}

/** Runs `work` holding the lock of `dir` (made if missing); released however `work` ends. */
export async function withFolderLock<T>(
  dir: string,
  work: (lock: FolderLock) => Promise<T>,
): Promise<T> {
  ensureWritableDir(dir);
  const lock = FolderLock.acquire(dir);
  try {
    return await work(lock);
  } finally {
    lock.release();
  }
}
