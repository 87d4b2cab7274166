import { DiskFullError } from "../errors.js";

/** ENOSPC/EDQUOT from the OS, or SQLite's SQLITE_FULL ("database or disk is full"). */
export function isDiskFull(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code;
  if (code === "ENOSPC" || code === "EDQUOT" || code === "SQLITE_FULL") return true;
  return err instanceof Error && /database or disk is full/.test(err.message);
}

/** The error to show for `err`: the disk-full message naming `where`, or `err` itself. */
export function asDiskFull(err: unknown, where: string): unknown {
  if (err instanceof DiskFullError || !isDiskFull(err)) return err;
  const quota = (err as { code?: unknown }).code === "EDQUOT";
  return new DiskFullError(where, quota ? "disk quota exceeded" : "no space left on device");
}

/** What closeLedger needs: the last two things a run does with its checkpoint. */
export interface ClosableLedger {
  readonly path: string;
  addProcessingTime(seconds: number): void;
  close(): void;
}

/**
 * Adds the run's time and closes the checkpoint. When the run already failed,
 * a failure here (a full disk fails every write) is dropped: the first error
 * is the one the user must see. On an otherwise good run it is reported.
 */
export function closeLedger(ledger: ClosableLedger, seconds: number, failure: unknown): void {
  try {
    ledger.addProcessingTime(seconds);
  } catch (err) {
    if (failure === null) {
      closeQuietly(ledger);
      throw asDiskFull(err, ledger.path);
    }
  }
  ledger.close();
}

function closeQuietly(ledger: ClosableLedger): void {
  try {
    ledger.close();
  } catch {
    // The error being thrown says more.
  }
}
