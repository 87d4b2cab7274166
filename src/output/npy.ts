import {
  closeSync,
  constants,
  fdatasync,
  fdatasyncSync,
  fstatSync,
  ftruncateSync,
  openSync,
  readSync,
  writeSync,
} from "node:fs";
import { openFresh } from "./atomic.js";

const MAGIC = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]); // \x93NUMPY
const ALIGN = 64;

/**
 * A version 1.0 NPY header for a C-order matrix (float32 unless `descr`
 * says otherwise), padded so the data starts at a multiple of 64 bytes.
 */
export function npyHeader(rows: number, dim: number, descr = "<f4"): Buffer {
  const dict = `{'descr': '${descr}', 'fortran_order': False, 'shape': (${rows}, ${dim}), }`;
  const fixed = MAGIC.length + 2 + 2;
  const unpadded = fixed + dict.length + 1;
  const total = Math.ceil(unpadded / ALIGN) * ALIGN;
  const headerText = `${dict}${" ".repeat(total - unpadded)}\n`;
  const header = Buffer.alloc(total);
  MAGIC.copy(header, 0);
  header[6] = 1;
  header[7] = 0;
  header.writeUInt16LE(headerText.length, 8);
  header.write(headerText, fixed, "latin1");
  return header;
}

/** Reads the shape of a float32 NPY file written by npyHeader; null if it is not one. */
export function readNpyShape(fd: number): { rows: number; dim: number; dataOffset: number } | null {
  const head = Buffer.alloc(256);
  const got = readSync(fd, head, 0, head.length, 0);
  if (got < 10 || !head.subarray(0, 6).equals(MAGIC)) return null;
  const length = head.readUInt16LE(8);
  const text = head.subarray(10, Math.min(got, 10 + length)).toString("latin1");
  const match = /'descr': '<f4', 'fortran_order': False, 'shape': \((\d+), (\d+)\)/.exec(text);
  if (!match) return null;
  return { rows: Number(match[1]), dim: Number(match[2]), dataOffset: 10 + length };
}

/**
 * A preallocated (rows × dim) float32 matrix on disk that rows are written
 * into at their offsets, in any order. Nothing is durable until sync().
 */
export class NpyMatrixFile {
  private constructor(
    readonly path: string,
    private readonly fd: number,
    readonly rows: number,
    readonly dim: number,
    private readonly dataOffset: number,
  ) {}

  get rowBytes(): number {
    return this.dim * 4;
  }

  /** Creates (or truncates) the file with its header and zeroed rows. */
  static create(path: string, rows: number, dim: number): NpyMatrixFile {
    const header = npyHeader(rows, dim);
    const fd = openFresh(path, constants.O_RDWR);
    try {
      writeSync(fd, header, 0, header.length, 0);
      ftruncateSync(fd, header.length + rows * dim * 4);
      fdatasyncSync(fd);
    } catch (err) {
      closeSync(fd);
      throw err;
    }
    return new NpyMatrixFile(path, fd, rows, dim, header.length);
  }

  /** Reopens a file made by create(); null when it is missing or not of this shape. */
  static reopen(path: string, rows: number, dim: number): NpyMatrixFile | null {
    let fd: number;
    try {
      // A link is not reopened (ELOOP): create() then puts a fresh file in its place.
      fd = openSync(path, constants.O_RDWR | constants.O_NOFOLLOW);
    } catch {
      return null;
    }
    const shape = readNpyShape(fd);
    const size = fstatSync(fd).size;
    if (
      !shape ||
      shape.rows !== rows ||
      shape.dim !== dim ||
      size !== shape.dataOffset + rows * dim * 4
    ) {
      closeSync(fd);
      return null;
    }
    return new NpyMatrixFile(path, fd, rows, dim, shape.dataOffset);
  }

  /**
   * Writes consecutive rows of `data` (row-major float32 bytes, rows.length
   * rows) at the offsets of the given row numbers; runs of consecutive row
   * numbers go out in one write.
   */
  writeRows(rows: ArrayLike<number>, data: Uint8Array): void {
    const rowBytes = this.rowBytes;
    let i = 0;
    while (i < rows.length) {
      const first = rows[i] ?? 0;
      let run = 1;
      while (i + run < rows.length && rows[i + run] === first + run) run++;
      writeSync(this.fd, data, i * rowBytes, run * rowBytes, this.dataOffset + first * rowBytes);
      i += run;
    }
  }

  /** Reads `count` rows from `first` into `into` (count × rowBytes bytes). */
  readRows(first: number, count: number, into: Buffer): Buffer {
    const bytes = count * this.rowBytes;
    readSync(this.fd, into, 0, bytes, this.dataOffset + first * this.rowBytes);
    return into.subarray(0, bytes);
  }

  /** Makes every row written so far durable. */
  sync(): void {
    fdatasyncSync(this.fd);
  }

  /** sync() on the thread pool, so results keep arriving while the disk works. */
  syncAsync(): Promise<void> {
    return new Promise((resolve, reject) =>
      fdatasync(this.fd, (err) => (err ? reject(err) : resolve())),
    );
  }

  close(): void {
    closeSync(this.fd);
  }
}
