import { createHash } from "node:crypto";
import { closeSync, openSync, readSync, statSync } from "node:fs";
import { basename } from "node:path";
import { HASH_BYTES } from "./hashes.js";

const CHUNK_ROWS = 65_536;

/** What `verify --input_file` needs of the input: each row's text and its line. */
export interface HashedRows {
  readonly count: number;
  lineOf(row: number): number;
  paragraph(row: number): { readonly text: string };
}

/**
 * Every row's stored hash against the hash of its model input (prefix +
 * text, from the input file): a later run reuses vectors by these, so a
 * wrong one would hand a row another text's vector. Streamed: 1 MiB at a time.
 */
export function checkRowHashes(path: string, rows: HashedRows, prefix: string): string | null {
  const name = basename(path);
  const size = statSync(path).size;
  if (size !== rows.count * HASH_BYTES) {
    return `${name}: ${size} bytes, expected ${rows.count} rows of ${HASH_BYTES}`;
  }
  const fd = openSync(path, "r");
  const chunk = Buffer.allocUnsafe(CHUNK_ROWS * HASH_BYTES);
  try {
    for (let first = 0; first < rows.count; first += CHUNK_ROWS) {
      const count = Math.min(CHUNK_ROWS, rows.count - first);
      readSync(fd, chunk, 0, count * HASH_BYTES, first * HASH_BYTES);
      for (let i = 0; i < count; i++) {
        const want = createHash("sha256")
          .update(prefix, "utf8")
          .update(rows.paragraph(first + i).text, "utf8")
          .digest()
          .subarray(0, HASH_BYTES);
        if (!want.equals(chunk.subarray(i * HASH_BYTES, (i + 1) * HASH_BYTES))) {
          return `${name}: input line ${rows.lineOf(first + i)}: the stored hash is not that of its text`;
        }
      }
    }
  } finally {
    closeSync(fd);
  }
  return null;
}
