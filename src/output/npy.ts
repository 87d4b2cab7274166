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

/** What an NPY header says, whatever its dtype: verify reads files it did not write. */
export interface NpyLayout {
  readonly descr: string;
  readonly fortranOrder: boolean;
  readonly shape: readonly number[];
  readonly dataOffset: number;
}

/** Parses an NPY header (versions 1, 2 and 3); a string says what is wrong with it. */
export function readNpyLayout(fd: number): NpyLayout | string {
  const head = Buffer.alloc(12);
  const got = readSync(fd, head, 0, head.length, 0);
  if (got < 10 || !head.subarray(0, 6).equals(MAGIC)) return "not an NPY file (bad magic)";
  const major = head[6];
  const wide = major === 2 || major === 3;
  if (major !== 1 && !wide) return `NPY version ${major} is not known`;
  const length = wide ? head.readUInt32LE(8) : head.readUInt16LE(8);
  const start = wide ? 12 : 10;
  if (length > 1 << 20) return "NPY header is implausibly long";
  const text = Buffer.alloc(length);
  if (readSync(fd, text, 0, length, start) !== length) return "NPY header is cut short";
  const dict = text.toString("latin1");
  const descr = /'descr':\s*'([^']*)'/.exec(dict);
  const fortran = /'fortran_order':\s*(True|False)/.exec(dict);
  const shape = /'shape':\s*\(([^)]*)\)/.exec(dict);
  if (!descr || !fortran || !shape) return "NPY header lacks descr, fortran_order or shape";
  const dims = (shape[1] ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
    .map(Number);
  if (dims.some((d) => !Number.isInteger(d) || d < 0)) return "NPY header has a bad shape";
  return {
    descr: descr[1] ?? "",
    fortranOrder: fortran[1] === "True",
    shape: dims,
    dataOffset: start + length,
  };
}

/** The shape of a float32 C-order matrix (as npyHeader writes); null if the file is not one. */
export function readNpyShape(fd: number): { rows: number; dim: number; dataOffset: number } | null {
  const layout = readNpyLayout(fd);
  if (typeof layout === "string" || layout.descr !== "<f4" || layout.fortranOrder) return null;
  const [rows, dim, ...more] = layout.shape;
  if (rows === undefined || dim === undefined || more.length > 0) return null;
  return { rows, dim, dataOffset: layout.dataOffset };
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
