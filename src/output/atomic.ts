import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from "node:fs";
import { dirname } from "node:path";

/** The name a file has while it is being written; never mistaken for a finished output. */
export function partialPath(path: string): string {
  return `${path}.partial`;
}

/** Makes a rename durable: the directory entry is flushed too. */
export function syncDirectory(path: string): void {
  const fd = openSync(dirname(path), "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Renames a finished temporary file to its final name, durably. */
export function commitFile(tempPath: string, finalPath: string): void {
  renameSync(tempPath, finalPath);
  syncDirectory(finalPath);
}

/** Writes a whole small file atomically: readers see the old file or the new one, never half. */
export function writeFileAtomic(path: string, content: string): void {
  const temp = partialPath(path);
  const fd = openSync(temp, "w");
  try {
    const bytes = Buffer.from(content, "utf8");
    let written = 0;
    while (written < bytes.length) {
      written += writeSync(fd, bytes, written, bytes.length - written);
    }
    fsyncSync(fd);
  } catch (err) {
    closeSync(fd);
    rmSync(temp, { force: true });
    throw err;
  }
  closeSync(fd);
  commitFile(temp, path);
}
