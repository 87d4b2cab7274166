import { closeSync, fstatSync, openSync } from "node:fs";
import { join } from "node:path";
import { checkBatch } from "../batch-check.js";
import type { CheckContext, FileChecker, FileReport } from "../context.js";
import { readNpyLayout } from "../npy-layout.js";
import { NpyRows } from "../npy-rows.js";

/**
 * A float32 .npy: header, shape against the metadata, size, and every row
 * finite and non-zero (of norm 1 for a normalizing model), streamed in chunks.
 */
export const npyChecker: FileChecker = {
  accepts: (name) => name.endsWith(".npy"),

  async check(name: string, ctx: CheckContext): Promise<FileReport> {
    const path = join(ctx.dir, name);
    const { rows, dim, normalize } = ctx.metadata;
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
    if (layout.descr !== "<f4") {
      return fail(`${name}: dtype ${layout.descr} is not one this version of verify can read`);
    }
    if (layout.fortranOrder) return fail(`${name}: Fortran order, embed-multi writes C order`);
    const shape = `(${layout.shape.join(", ")})`;
    if (layout.shape.length !== 2 || layout.shape[0] !== rows || layout.shape[1] !== dim) {
      return fail(`${name}: shape ${shape}, the metadata says (${rows}, ${dim})`);
    }
    const expected = layout.dataOffset + rows * dim * 4;
    if (size !== expected) {
      const how = size < expected ? "truncated" : "has trailing bytes";
      return fail(`${name}: ${size} bytes, a ${shape} float32 matrix takes ${expected} (${how})`);
    }
    const matrix = new NpyRows(path, rows, dim, layout.dataOffset);
    for (let first = 0; first < rows; first += matrix.rowsPerBlock) {
      const count = Math.min(matrix.rowsPerBlock, rows - first);
      const problem = checkBatch(matrix.block(first, count), count, dim, normalize);
      if (problem) {
        matrix.close();
        const row = first + problem.row;
        const where = ctx.input ? ` (input line ${ctx.input.lineOf(row)})` : "";
        return fail(`${name} row ${row}${where}: ${problem.message.replace(/^row \d+: /, "")}`);
      }
    }
    ctx.reference?.close();
    ctx.reference = matrix;
    return { problems: [], checked: `${name} ${shape} float32` };
  },
};

function fail(problem: string): FileReport {
  return { problems: [problem], checked: null };
}
