import { closeSync, openSync, readSync } from "node:fs";

const CHUNK_BYTES = 4 << 20;

/**
 * Rows of a float32 C-order .npy read through a chunk buffer: streaming in
 * row order costs one 4 MiB read per chunk, and a random row one small read.
 */
export class NpyRows {
  private readonly fd: number;
  private readonly chunkRows: number;
  private chunk: Float32Array;
  private chunkFirst = -1;
  private chunkCount = 0;

  constructor(
    path: string,
    readonly rows: number,
    readonly dim: number,
    private readonly dataOffset: number,
  ) {
    this.fd = openSync(path, "r");
    this.chunkRows = Math.max(1, Math.floor(CHUNK_BYTES / Math.max(1, dim * 4)));
    this.chunk = new Float32Array(this.chunkRows * dim);
  }

  /** Rows [first, first + count) as one array (count ≤ chunkRows); a view, valid until the next call. */
  block(first: number, count: number): Float32Array {
    this.load(first, count);
    const offset = (first - this.chunkFirst) * this.dim;
    return this.chunk.subarray(offset, offset + count * this.dim);
  }

  /** One row; a view, valid until the next call. */
  row(index: number): Float32Array {
    if (index < this.chunkFirst || index >= this.chunkFirst + this.chunkCount) {
      this.load(index, Math.min(this.chunkRows, this.rows - index));
    }
    return this.block(index, 1);
  }

  get rowsPerBlock(): number {
    return this.chunkRows;
  }

  private load(first: number, count: number): void {
    if (first >= this.chunkFirst && first + count <= this.chunkFirst + this.chunkCount) return;
    const bytes = new Uint8Array(this.chunk.buffer, 0, count * this.dim * 4);
    let done = 0;
    while (done < bytes.length) {
      const got = readSync(
        this.fd,
        bytes,
        done,
        bytes.length - done,
        this.dataOffset + first * this.dim * 4 + done,
      );
      if (got === 0) throw new Error(`unexpected end of file at row ${first}`);
      done += got;
    }
    this.chunkFirst = first;
    this.chunkCount = count;
  }

  close(): void {
    closeSync(this.fd);
  }
}
