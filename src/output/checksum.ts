import { createHash } from "node:crypto";
import { closeSync, openSync, readSync } from "node:fs";
import { basename } from "node:path";

/** What the metadata records of one output file. */
export interface FileDigest {
  readonly sha256: string;
  readonly bytes: number;
}

const CHUNK_BYTES = 4 << 20;

/** The sha256 and size of a file, read in chunks: a file of any size costs 4 MiB of memory. */
export function hashFile(path: string): FileDigest {
  const hash = createHash("sha256");
  const chunk = Buffer.allocUnsafe(CHUNK_BYTES);
  const fd = openSync(path, "r");
  let bytes = 0;
  try {
    for (;;) {
      const got = readSync(fd, chunk, 0, CHUNK_BYTES, null);
      if (got === 0) break;
      hash.update(chunk.subarray(0, got));
      bytes += got;
    }
  } finally {
    closeSync(fd);
  }
  return { sha256: hash.digest("hex"), bytes };
}

/**
 * The digests of output files, keyed by their names without the folder: the
 * outputs stay checkable after they are copied elsewhere.
 */
export function digestFiles(paths: readonly string[]): Record<string, FileDigest> {
  const files: Record<string, FileDigest> = {};
  for (const path of paths) files[basename(path)] = hashFile(path);
  return files;
}
