import { float16Value, type OutputDtype } from "./dtype.js";
import { writeFloat32 } from "./float-text.js";

/** The longest text of one value ("-1.2345678e-30"), with its comma. */
const VALUE_ROOM = 16;

const utf8 = new TextEncoder();

/** What formatting a chunk of rows needs: plain data, so that it can cross to a worker thread. */
export interface RowsJob {
  readonly dtype: OutputDtype;
  /** Values per row (packed bytes for binary/ubinary). */
  readonly width: number;
  readonly count: number;
  /** count rows of the output dtype, row-major. */
  readonly bytes: Uint8Array;
  /** Each row's line up to its first value: `{"paper_id":…,"paragraph_index":…,"embedding":[`. */
  readonly heads: readonly string[];
  /** What ends every line: `],"model":"…"}\n`. */
  readonly tail: string;
}

/**
 * The JSONL lines of a chunk of rows, as bytes: floats as the shortest text
 * that reads back as the same float32, integers for int8/uint8 and the packed
 * bytes of binary/ubinary. Bytes go straight into one buffer: no string per
 * value. The same function runs inline and in the worker threads, so both
 * give the same bytes.
 */
export function formatRows(job: RowsJob): Uint8Array {
  const tail = utf8.encode(job.tail);
  const rowRoom = job.width * VALUE_ROOM + tail.length;
  let headBytes = 0;
  // A UTF-16 unit is at most 3 UTF-8 bytes.
  for (const head of job.heads) headBytes += head.length * 3;
  const out = new Uint8Array(headBytes + job.count * rowRoom);
  const values = valuesOf(job.dtype, job.width, job.bytes);
  let pos = 0;
  for (let r = 0; r < job.count; r++) {
    pos += utf8.encodeInto(job.heads[r] ?? "", out.subarray(pos)).written;
    pos = values(out, pos, r);
    out.set(tail, pos);
    pos += tail.length;
  }
  return out.subarray(0, pos);
}

type RowWriter = (out: Uint8Array, pos: number, row: number) => number;

/** Writes row `row` of the chunk's values, comma-separated. */
function valuesOf(dtype: OutputDtype, width: number, bytes: Uint8Array): RowWriter {
  switch (dtype) {
    case "float32": {
      const v = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4);
      return (out, pos, row) => {
        let p = pos;
        const base = row * width;
        for (let i = 0; i < width; i++) {
          if (i > 0) out[p++] = 0x2c;
          p = writeFloat32(out, p, v[base + i] as number);
        }
        return p;
      };
    }
    case "float16": {
      // A float16 is a float32 too: its float32 text reads back as it exactly.
      const v = new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.length / 2);
      const halves = halfValues();
      return (out, pos, row) => {
        let p = pos;
        const base = row * width;
        for (let i = 0; i < width; i++) {
          if (i > 0) out[p++] = 0x2c;
          p = writeFloat32(out, p, halves[v[base + i] as number] as number);
        }
        return p;
      };
    }
    case "int8":
    case "binary":
      return intWriter(new Int8Array(bytes.buffer, bytes.byteOffset, bytes.length), width);
    case "uint8":
    case "ubinary":
      return intWriter(bytes, width);
  }
}

let halfTable: Float32Array | null = null;

/** Every float16 value by its bits (256 KB, made once): no Math.pow per value. */
function halfValues(): Float32Array {
  halfTable ??= Float32Array.from({ length: 65536 }, (_, h) => float16Value(h));
  return halfTable;
}

function intWriter(v: Int8Array | Uint8Array, width: number): RowWriter {
  return (out, pos, row) => {
    let p = pos;
    const base = row * width;
    for (let i = 0; i < width; i++) {
      if (i > 0) out[p++] = 0x2c;
      let x = v[base + i] as number;
      if (x < 0) {
        out[p++] = 0x2d;
        x = -x;
      }
      if (x >= 100) out[p++] = 0x30 + ((x / 100) | 0);
      if (x >= 10) out[p++] = 0x30 + (((x / 10) | 0) % 10);
      out[p++] = 0x30 + (x % 10);
    }
    return p;
  };
}
