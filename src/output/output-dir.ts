import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describeFsError } from "../errors.js";

/**
 * Creates the output directory and proves it writable: find out now, in the
 * OS's words, not after an hour of GPU time (SQLite would say only "unable
 * to open database file").
 */
export function ensureWritableDir(dir: string): void {
  try {
    mkdirSync(dir, { recursive: true });
  } catch (err) {
    throw describeFsError(err, "create output directory", dir);
  }
  const probe = join(dir, `.embed-multi-write-test-${process.pid}`);
  try {
    writeFileSync(probe, "", { flag: "wx" }); // O_EXCL: a planted link is not followed
    rmSync(probe);
  } catch (err) {
    throw describeFsError(err, "write to output directory", dir);
  }
}
