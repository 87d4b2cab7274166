import { Encoder, needsRanges, type OutputDtype, RangeAccumulator, type Ranges } from "./dtype.js";
import type { NpyMatrixFile } from "./npy.js";

/** Rows of the output dtype, read back from the float32 matrix a chunk at a time. */
export interface EncodedChunk {
  /** Row number of the first row. */
  readonly first: number;
  readonly count: number;
  /** count × encoder.rowBytes bytes, valid until the next chunk is read. */
  readonly bytes: Uint8Array;
}

/** Rows read back at a time: also a Parquet row group. */
export const ROWS_PER_CHUNK = 1024;

/** The float32 rows of the matrix, a chunk at a time (the view is reused). */
export function* floatChunks(
  matrix: NpyMatrixFile,
  rowsPerChunk = ROWS_PER_CHUNK,
): Generator<{ first: number; count: number; floats: Float32Array }> {
  // Its own ArrayBuffer: a Float32Array view needs 4-byte alignment.
  const raw = Buffer.from(new ArrayBuffer(rowsPerChunk * matrix.rowBytes));
  for (let first = 0; first < matrix.rows; first += rowsPerChunk) {
    const count = Math.min(rowsPerChunk, matrix.rows - first);
    matrix.readRows(first, count, raw);
    yield { first, count, floats: new Float32Array(raw.buffer, 0, count * matrix.dim) };
  }
}

/** The per-dimension ranges of the whole matrix when the dtype needs them (one streaming pass). */
export function rangesFor(dtype: OutputDtype, matrix: NpyMatrixFile): Ranges | null {
  if (!needsRanges(dtype)) return null;
  const acc = new RangeAccumulator(matrix.dim);
  for (const chunk of floatChunks(matrix)) acc.add(chunk.floats, chunk.count);
  return acc.finish();
}

/** The matrix's rows in the encoder's dtype, in row order. */
export function* encodedChunks(
  matrix: NpyMatrixFile,
  encoder: Encoder,
  rowsPerChunk = ROWS_PER_CHUNK,
): Generator<EncodedChunk> {
  const into = new Uint8Array(new ArrayBuffer(rowsPerChunk * encoder.rowBytes));
  for (const chunk of floatChunks(matrix, rowsPerChunk)) {
    yield {
      first: chunk.first,
      count: chunk.count,
      bytes: encoder.encode(chunk.floats, chunk.count, into),
    };
  }
}

export { Encoder };
