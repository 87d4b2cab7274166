import { createHash } from "node:crypto";
import type { RowReader } from "../input/rows.js";
import { writeAll, writeThenCommit } from "../output/atomic.js";

/**
 * A row's content hash: the first 16 bytes of sha256 over the UTF-8 of the
 * exact model input, the prefix then the text, as the server receives it.
 * 128 bits: a collision among 10^10 rows has odds below 10^-18.
 */
export const HASH_BYTES = 16;

/** The content hash of every row, row i at i × 16: N × 16 bytes in memory. */
export function rowHashes(reader: RowReader, rows: number, prefix: string): Buffer {
  const out = Buffer.allocUnsafe(rows * HASH_BYTES);
  for (let row = 0; row < rows; row++) hashInto(reader, row, prefix, out, row * HASH_BYTES);
  return out;
}

const WRITE_CHUNK_ROWS = 65_536;

/**
 * Writes `<alias>.hashes`: the content hash of every row, row i at byte
 * 16 × i, nothing else. A file of its own, not a Parquet column: it exists
 * whatever the output formats, is fixed-width (a later run streams it, or
 * seeks a row), and is listed and checksummed in the metadata like the
 * vectors, so a finished output folder can be a `--reuse` source.
 */
export function writeRowHashes(
  path: string,
  reader: RowReader,
  rows: number,
  prefix: string,
): void {
  writeThenCommit(path, (fd) => {
    const chunk = Buffer.allocUnsafe(WRITE_CHUNK_ROWS * HASH_BYTES);
    for (let first = 0; first < rows; first += WRITE_CHUNK_ROWS) {
      const count = Math.min(WRITE_CHUNK_ROWS, rows - first);
      for (let i = 0; i < count; i++) hashInto(reader, first + i, prefix, chunk, i * HASH_BYTES);
      writeAll(fd, chunk.subarray(0, count * HASH_BYTES));
    }
  });
}

function hashInto(reader: RowReader, row: number, prefix: string, out: Buffer, at: number): void {
  const hash = createHash("sha256");
  hash.update(prefix, "utf8");
  hash.update(reader.paragraph(row).text, "utf8");
  hash.digest().copy(out, at, 0, HASH_BYTES);
}
