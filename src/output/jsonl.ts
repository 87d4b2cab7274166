import { closeSync, fsyncSync, openSync, rmSync, writeSync } from "node:fs";
import type { RowReader } from "../input/rows.js";
import { commitFile, partialPath } from "./atomic.js";
import { formatFloat32 } from "./float.js";
import type { NpyMatrixFile } from "./npy.js";

const ROWS_PER_READ = 1024;
const FLUSH_BYTES = 1 << 20;

/**
 * Writes `<alias>.jsonl`: one line per paragraph in input order, its vector
 * read back from the finished .npy (so both files hold the same numbers).
 * Written under a temporary name and renamed when complete.
 */
export function exportJsonl(
  path: string,
  matrix: NpyMatrixFile,
  reader: RowReader,
  modelName: string,
  onProgress: (rowsDone: number) => void = () => {},
): void {
  const temp = partialPath(path);
  const fd = openSync(temp, "w");
  const modelJson = JSON.stringify(modelName);
  const chunk = Buffer.alloc(ROWS_PER_READ * matrix.rowBytes);
  const parts: string[] = [];
  let pendingBytes = 0;
  const flush = () => {
    const bytes = Buffer.from(parts.join(""), "utf8");
    let written = 0;
    while (written < bytes.length) written += writeSync(fd, bytes, written, bytes.length - written);
    parts.length = 0;
    pendingBytes = 0;
  };
  try {
    for (let first = 0; first < matrix.rows; first += ROWS_PER_READ) {
      const count = Math.min(ROWS_PER_READ, matrix.rows - first);
      const data = matrix.readRows(first, count, chunk);
      // Copy to an aligned buffer: a Float32Array view needs 4-byte alignment.
      const floats = new Float32Array(
        data.buffer.slice(data.byteOffset, data.byteOffset + data.length),
      );
      for (let r = 0; r < count; r++) {
        const p = reader.paragraph(first + r);
        const values = new Array<string>(matrix.dim);
        const base = r * matrix.dim;
        for (let d = 0; d < matrix.dim; d++) values[d] = formatFloat32(floats[base + d] ?? 0);
        const line = `{"paper_id":${JSON.stringify(p.paperId)},"paragraph_index":${p.paragraphIndex},"embedding":[${values.join(",")}],"model":${modelJson}}\n`;
        parts.push(line);
        pendingBytes += line.length;
        if (pendingBytes >= FLUSH_BYTES) flush();
      }
      onProgress(first + count);
    }
    flush();
    fsyncSync(fd);
  } catch (err) {
    closeSync(fd);
    rmSync(temp, { force: true });
    throw err;
  }
  closeSync(fd);
  commitFile(temp, path);
}
