import type { CopyJob, StoredBatch } from "../checkpoint/ledger.js";
import { CheckpointError } from "../errors.js";
import type { CorpusIndex } from "../input/scan.js";
import type { NpyMatrixFile } from "../output/npy.js";

const ROWS_PER_READ = 4096;
const HOW = "the checkpoint was edited or damaged; run with --restart to embed it again";

/**
 * Before a model is finalized: its done batches (with the duplicate rows each
 * carries) and done copy jobs (rows reused from earlier outputs) cover every
 * input row exactly once, and no row of its matrix is still the zero it was created with (the
 * per-batch checks refuse a zero vector, so a zero row was never written).
 * A checkpoint edited by hand must not give outputs with rows never embedded.
 */
export function checkCoverage(
  alias: string,
  batches: readonly StoredBatch[],
  copies: readonly CopyJob[],
  matrix: NpyMatrixFile,
  corpus: Pick<CorpusIndex, "rows" | "lineNumbers">,
): void {
  const line = (row: number) => corpus.lineNumbers[row] ?? row + 1;
  const seen = new Uint8Array(corpus.rows);
  const cover = (rows: ArrayLike<number>, step: number, what: string) => {
    for (let i = 0; i < rows.length; i += step) {
      const row = rows[i] as number;
      if (row >= corpus.rows) {
        throw new CheckpointError(
          `${what} of ${alias} names row ${row}, past the input's ${corpus.rows} rows: ${HOW}`,
        );
      }
      if (seen[row]) {
        throw new CheckpointError(
          `input line ${line(row)} is in more than one done batch or copy of ${alias}: ${HOW}`,
        );
      }
      seen[row] = 1;
    }
  };
  for (const batch of batches) {
    if (!batch.done) continue;
    cover(batch.rows, 1, `batch ${batch.batchNo}`);
    // Followers are (row, index in the batch) pairs: the rows that took a batch row's vector.
    if (batch.followers) cover(batch.followers, 2, `batch ${batch.batchNo}`);
  }
  for (const copy of copies) cover(copy.rows, 1, `copy job ${copy.copyNo}`);
  const missing = seen.indexOf(0);
  if (missing >= 0) {
    throw new CheckpointError(
      `input line ${line(missing)} is not covered by any done batch of ${alias}: ${HOW}`,
    );
  }
  const zero = firstZeroRow(matrix);
  if (zero !== null) {
    throw new CheckpointError(
      `the vector of input line ${line(zero)} of ${alias} was never written, though its batch is marked done: ${HOW}`,
    );
  }
}

/** The first row of the matrix that is all zeros, or null. */
function firstZeroRow(matrix: NpyMatrixFile): number | null {
  const buffer = Buffer.alloc(Math.min(ROWS_PER_READ, matrix.rows) * matrix.rowBytes);
  for (let first = 0; first < matrix.rows; first += ROWS_PER_READ) {
    const count = Math.min(ROWS_PER_READ, matrix.rows - first);
    const bytes = matrix.readRows(first, count, buffer);
    // Whole 32-bit words: -0.0 is not zero bits, and is a written value.
    const words = new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
    for (let r = 0; r < count; r++) {
      let nonzero = false;
      for (let c = r * matrix.dim; c < (r + 1) * matrix.dim; c++) {
        if (words[c] !== 0) {
          nonzero = true;
          break;
        }
      }
      if (!nonzero) return first + r;
    }
  }
  return null;
}
