import { closeSync, constants, fsyncSync, openSync, renameSync, rmSync, writeSync } from "node:fs";
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

/** Writes all of `bytes` at the file's position (a write may take less than asked). */
export function writeAll(fd: number, bytes: Uint8Array): void {
  let written = 0;
  while (written < bytes.length) written += writeSync(fd, bytes, written, bytes.length - written);
}

/**
 * Makes `path` by writing a temporary file through `write`, fsyncing it and
 * renaming it: readers see no file or the whole file, never half of one.
 */
export function writeThenCommit(
  path: string,
  write: (fd: number) => void,
  temp = partialPath(path),
): void {
  const fd = openFresh(temp, constants.O_WRONLY);
  try {
    write(fd);
    fsyncSync(fd);
  } catch (err) {
    closeSync(fd);
    rmSync(temp, { force: true });
    throw err;
  }
  closeSync(fd);
  commitFile(temp, path);
}

/** writeThenCommit for a writer that awaits (the file stays open across its awaits). */
export async function writeThenCommitAsync(
  path: string,
  write: (fd: number) => Promise<void>,
  temp = partialPath(path),
): Promise<void> {
  const fd = openFresh(temp, constants.O_WRONLY);
  try {
    await write(fd);
    fsyncSync(fd);
  } catch (err) {
    closeSync(fd);
    rmSync(temp, { force: true });
    throw err;
  }
  closeSync(fd);
  commitFile(temp, path);
}

/** Writes a whole small file atomically. */
export function writeFileAtomic(path: string, content: string): void {
  writeThenCommit(path, (fd) => writeAll(fd, Buffer.from(content, "utf8")));
}

/**
 * Creates `path` as a new, empty file: whatever is there (a stale partial
 * file, or a symbolic link planted to make us overwrite its target) is
 * unlinked first, and O_EXCL | O_NOFOLLOW make the open fail rather than
 * follow a link created in between. A rename onto a final name replaces a
 * link there too, never its target.
 */
export function openFresh(path: string, access: number): number {
  rmSync(path, { force: true });
  return openSync(
    path,
    access | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
    0o666,
  );
}
