import { closeSync, fstatSync, openSync } from "node:fs";
import { join } from "node:path";
import { checkBatch } from "../../checks/batch.js";
import { bytesPerValue, npyDescr, type OutputDtype, storedType } from "../../output/dtype.js";
import { readNpyLayout } from "../../output/npy.js";
import type { CheckContext, FileChecker, FileReport } from "../context.js";
import { NpyRows, type StoredValues } from "../npy-rows.js";

/**
 * A .npy in the metadata's output_dtype: header (dtype and shape (rows,
 * width) against the metadata), size, and the rows streamed in chunks:
 * float32/float16 rows finite and non-zero (a float32 row of norm 1 for a
 * normalizing model), binary rows with the padding bits of their last byte
 * clear. int8/uint8 bytes are all valid values: the JSONL, Parquet and a
 * sample check those.
 */
export const npyChecker: FileChecker = {
  async check(name: string, ctx: CheckContext): Promise<FileReport> {
    const path = join(ctx.dir, name);
    const { rows, dim, width, normalize, outputDtype } = ctx.metadata;
    const fd = openSync(path, "r");
    let layout: ReturnType<typeof readNpyLayout>;
    let size: number;
    try {
      layout = readNpyLayout(fd);
      size = fstatSync(fd).size;
    } finally {
      closeSync(fd);
    }
    if (typeof layout === "string") return fail(`${name}: ${layout}`);
    const stored = storedType(outputDtype);
    const descr = npyDescr(outputDtype);
    if (layout.descr !== descr) {
      return fail(
        `${name}: dtype ${layout.descr}, the metadata's output_dtype ${outputDtype} is stored as ${descr} (${stored})`,
      );
    }
    if (layout.fortranOrder) return fail(`${name}: Fortran order, embed-multi writes C order`);
    const shape = `(${layout.shape.join(", ")})`;
    if (layout.shape.length !== 2 || layout.shape[0] !== rows || layout.shape[1] !== width) {
      return fail(`${name}: shape ${shape}, the metadata says (${rows}, ${width})`);
    }
    const expected = layout.dataOffset + rows * width * bytesPerValue(outputDtype);
    if (size !== expected) {
      const how = size < expected ? "truncated" : "has trailing bytes";
      return fail(`${name}: ${size} bytes, a ${shape} ${stored} matrix takes ${expected} (${how})`);
    }
    const matrix = new NpyRows(path, rows, width, layout.dataOffset, outputDtype);
    for (let first = 0; first < rows; first += matrix.rowsPerBlock) {
      const count = Math.min(matrix.rowsPerBlock, rows - first);
      const problem = rowsProblem(
        matrix.block(first, count),
        count,
        dim,
        width,
        outputDtype,
        normalize,
      );
      if (problem) {
        matrix.close();
        const row = first + problem.row;
        const where = ctx.input ? ` (input line ${ctx.input.lineOf(row)})` : "";
        return fail(`${name} row ${row}${where}: ${problem.message.replace(/^row \d+: /, "")}`);
      }
    }
    ctx.reference?.close();
    ctx.reference = matrix;
    const kind = stored === outputDtype ? stored : `${stored} (${outputDtype}: packed bits)`;
    return { problems: [], checked: `${name} ${shape} ${kind}` };
  },
};

/** The first problem of a block of rows in the output dtype, or null. */
function rowsProblem(
  values: StoredValues,
  count: number,
  dim: number,
  width: number,
  dtype: OutputDtype,
  normalize: boolean,
): { row: number; message: string } | null {
  if (values instanceof Float32Array) {
    // float16 rounding moves a norm by up to ~1e-3: only float32 rows are held to norm 1.
    return checkBatch(values, count, dim, normalize && dtype === "float32");
  }
  if ((dtype === "binary" || dtype === "ubinary") && dim % 8 !== 0) {
    // packbits pads the last byte with zero bits; binary stores the byte minus 128.
    const padMask = (1 << (8 - (dim % 8))) - 1;
    const offset = dtype === "binary" ? 128 : 0;
    for (let r = 0; r < count; r++) {
      const last = ((values[r * width + width - 1] as number) + offset) & 0xff;
      if ((last & padMask) !== 0) {
        return {
          row: r,
          message: `padding bits set in the last byte (dim ${dim} leaves ${8 - (dim % 8)} unused bits, packbits clears them)`,
        };
      }
    }
  }
  return null;
}

function fail(problem: string): FileReport {
  return { problems: [problem], checked: null };
}
