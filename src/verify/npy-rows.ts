import { closeSync, openSync, readSync } from "node:fs";
import { bytesPerValue, float16Value, type OutputDtype } from "../output/dtype.js";

const CHUNK_BYTES = 4 << 20;

/** A row's values as the file stores them; float16 comes decoded to float32 (exactly). */
export type StoredValues = Float32Array | Int8Array | Uint8Array;

let halfTable: Float32Array | null = null;

/** Every float16 value by its bits. */
function halfValues(): Float32Array {
  halfTable ??= Float32Array.from({ length: 65536 }, (_, h) => float16Value(h));
  return halfTable;
}

/**
 * Rows of a C-order .npy in an output dtype, read through a chunk buffer:
 * streaming in row order costs one 4 MiB read per chunk, and a random row
 * one small read. `width` is values per row (packed bytes for binary dtypes).
 */
export class NpyRows {
  private readonly fd: number;
  private readonly chunkRows: number;
  private readonly raw: Uint8Array;
  private readonly values: StoredValues;
  private readonly halves: Uint16Array | null;
  private readonly valueBytes: number;
  private chunkFirst = -1;
  private chunkCount = 0;

  constructor(
    path: string,
    readonly rows: number,
    readonly width: number,
    private readonly dataOffset: number,
    readonly dtype: OutputDtype = "float32",
  ) {
    this.fd = openSync(path, "r");
    this.valueBytes = bytesPerValue(dtype);
    const rowBytes = Math.max(1, width * this.valueBytes);
    this.chunkRows = Math.max(1, Math.floor(CHUNK_BYTES / rowBytes));
    const buffer = new ArrayBuffer(this.chunkRows * width * this.valueBytes);
    this.raw = new Uint8Array(buffer);
    this.halves = dtype === "float16" ? new Uint16Array(buffer) : null;
    switch (dtype) {
      case "float32":
        this.values = new Float32Array(buffer);
        break;
      case "float16":
        this.values = new Float32Array(this.chunkRows * width);
        break;
      case "int8":
      case "binary":
        this.values = new Int8Array(buffer);
        break;
      case "uint8":
      case "ubinary":
        this.values = this.raw;
        break;
    }
  }

  /** Rows [first, first + count) as one array (count ≤ rowsPerBlock); a view, valid until the next call. */
  block(first: number, count: number): StoredValues {
    this.load(first, count);
    const offset = (first - this.chunkFirst) * this.width;
    return this.values.subarray(offset, offset + count * this.width);
  }

  /** One row; a view, valid until the next call. */
  row(index: number): StoredValues {
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
    const rowBytes = this.width * this.valueBytes;
    const bytes = this.raw.subarray(0, count * rowBytes);
    let done = 0;
    while (done < bytes.length) {
      const got = readSync(
        this.fd,
        bytes,
        done,
        bytes.length - done,
        this.dataOffset + first * rowBytes + done,
      );
      if (got === 0) throw new Error(`unexpected end of file at row ${first}`);
      done += got;
    }
    if (this.halves) {
      const table = halfValues();
      for (let i = 0; i < count * this.width; i++) {
        this.values[i] = table[this.halves[i] as number] as number;
      }
    }
    this.chunkFirst = first;
    this.chunkCount = count;
  }

  close(): void {
    closeSync(this.fd);
  }
}
