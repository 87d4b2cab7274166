import { readSync } from "node:fs";

const MAGIC = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]); // \x93NUMPY

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
