import type { RowReader } from "../input/rows.js";
import { writeAll, writeThenCommit } from "./atomic.js";
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
): void {
  const modelJson = JSON.stringify(modelName);
  const chunk = Buffer.alloc(ROWS_PER_READ * matrix.rowBytes);
  writeThenCommit(path, (fd) => {
    const parts: string[] = [];
    let pendingBytes = 0;
    const flush = () => {
      writeAll(fd, Buffer.from(parts.join(""), "utf8"));
      parts.length = 0;
      pendingBytes = 0;
    };
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
    }
    flush();
  });
}
