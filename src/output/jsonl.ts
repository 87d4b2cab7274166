import { paperIdJson } from "../input/ids.js";
import type { RowReader } from "../input/rows.js";
import { writeAll, writeThenCommit } from "./atomic.js";
import type { EncodedChunk } from "./derive.js";
import { type Encoder, float16Value } from "./dtype.js";
import { writeFloat32 } from "./float-text.js";

const FLUSH_BYTES = 1 << 20;
/** The longest text of one value ("-1.2345678e-30"), with its comma. */
const VALUE_ROOM = 16;

const utf8 = new TextEncoder();

/**
 * Writes `<alias>.jsonl`: one line per paragraph in input order, its vector
 * as the output dtype holds it (floats as the shortest text that reads back
 * as the same float32; integers for int8/uint8 and the packed bytes of
 * binary/ubinary), ids exactly as written in the input. Bytes go straight
 * into one buffer: no string per value. Written under a temporary name and
 * renamed when complete.
 */
export function exportJsonl(
  path: string,
  chunks: Iterable<EncodedChunk>,
  encoder: Encoder,
  reader: RowReader,
  modelName: string,
): void {
  const tail = utf8.encode(`],"model":${JSON.stringify(modelName)}}\n`);
  const rowRoom = encoder.width * VALUE_ROOM + tail.length + 64;
  let out = new Uint8Array(FLUSH_BYTES + rowRoom);
  writeThenCommit(path, (fd) => {
    let pos = 0;
    for (const chunk of chunks) {
      const values = valuesOf(encoder, chunk.bytes);
      for (let r = 0; r < chunk.count; r++) {
        const ids = reader.ids(chunk.first + r);
        const head = `{"paper_id":${paperIdJson(ids.paperId)},"paragraph_index":${ids.paragraphIndex},"embedding":[`;
        // Ids are short, but nothing bounds them: make room for this row.
        const need = pos + head.length * 3 + rowRoom;
        if (need > out.length) {
          const bigger = new Uint8Array(need * 2);
          bigger.set(out.subarray(0, pos));
          out = bigger;
        }
        pos += utf8.encodeInto(head, out.subarray(pos)).written;
        pos = values(out, pos, r);
        out.set(tail, pos);
        pos += tail.length;
        if (pos >= FLUSH_BYTES) {
          writeAll(fd, out.subarray(0, pos));
          pos = 0;
        }
      }
    }
    writeAll(fd, out.subarray(0, pos));
  });
}

type RowWriter = (out: Uint8Array, pos: number, row: number) => number;

/** Writes row `row` of the chunk's values, comma-separated. */
function valuesOf(encoder: Encoder, bytes: Uint8Array): RowWriter {
  const width = encoder.width;
  switch (encoder.dtype) {
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
