import { openAsBlob } from "node:fs";
import { join } from "node:path";
import { type Data, FixedSizeList, type RecordBatch, tableFromIPC } from "apache-arrow";
import { ParquetFile } from "parquet-wasm/node";
import { float16Value, type OutputDtype, storedType } from "../../output/dtype.js";
import { formatFloat32 } from "../../output/float.js";
import type { CheckContext, FileChecker, FileReport } from "../context.js";

type Category = "schema" | "model" | "order" | "finite" | "values" | "read";

/** Arrow's name of the element type each stored type is written as. */
const ARROW_TYPE: Record<ReturnType<typeof storedType>, string> = {
  float32: "Float32",
  float16: "Float16",
  int8: "Int8",
  uint8: "Uint8",
};

/**
 * A Parquet output, read one row group at a time with parquet-wasm (the
 * library that wrote it) into apache-arrow batches, never the whole file in
 * memory: the columns and the embedding's fixed-size list of the stored type,
 * the row count, every row's model, with the input every row's paper_id and
 * paragraph_index, and with a sound .npy every value equal to the matrix's.
 * A damaged file is reported where its reading fails. The first problem of
 * each kind is reported.
 */
export const parquetChecker: FileChecker = {
  async check(name: string, ctx: CheckContext): Promise<FileReport> {
    const { rows, width, alias, outputDtype } = ctx.metadata;
    const { input, reference } = ctx;
    const found = new Map<Category, string>();
    const report = (category: Category, where: string, what: string) => {
      if (!found.has(category)) found.set(category, `${name}${where}: ${what}`);
    };
    let file: ParquetFile;
    try {
      file = await ParquetFile.fromFile(await openAsBlob(join(ctx.dir, name)));
    } catch (err) {
      return fail(`${name}: cannot be read as Parquet (${reason(err)})`);
    }
    let row = 0;
    try {
      const groups = file.metadata().numRowGroups();
      for (let g = 0; g < groups && found.size === 0; g++) {
        let batches: RecordBatch[];
        try {
          const wasm = await file.read({ rowGroups: [g] });
          batches = tableFromIPC(wasm.intoIPCStream()).batches;
        } catch (err) {
          report("read", ` row group ${g}`, `cannot be read (${reason(err)})`);
          break;
        }
        for (const batch of batches) {
          const columns = columnsOf(batch, width, outputDtype);
          if (typeof columns === "string") {
            report("schema", "", columns);
            break;
          }
          for (let r = 0; r < batch.numRows; r++, row++) {
            const where = ` row ${row}`;
            const model = columns.model.get(r);
            if (model !== alias) {
              report(
                "model",
                where,
                `model ${JSON.stringify(model)}, the metadata says "${alias}"`,
              );
            }
            if (input && row < input.count) {
              const expected = input.paragraph(row);
              const paperId = columns.paperId.get(r);
              const index = columns.paragraphIndex.get(r);
              if (!sameId(paperId, expected.paperId) || Number(index) !== expected.paragraphIndex) {
                report(
                  "order",
                  where,
                  `paper_id ${JSON.stringify(paperId)} paragraph_index ${index}, but row ${row} of the input (line ${input.lineOf(row)}) is paper_id ${JSON.stringify(expected.paperId)} paragraph_index ${expected.paragraphIndex}: rows are out of order or from another input`,
                );
              }
            }
            const values = columns.row(r);
            const stored = reference && row < reference.rows ? reference.row(row) : null;
            for (let d = 0; d < width; d++) {
              const v = values[d] as number;
              if (!Number.isFinite(v)) {
                report("finite", where, `value ${d} is ${v}, not a finite number`);
                break;
              }
              if (stored && v !== stored[d]) {
                report(
                  "values",
                  where,
                  `value ${d} is ${formatFloat32(v)}, but row ${row} of the .npy holds ${formatFloat32(stored[d] ?? 0)}: the two files disagree`,
                );
                break;
              }
            }
          }
        }
      }
    } catch (err) {
      report("read", "", `cannot be read as Parquet (${reason(err)})`);
    } finally {
      file.free();
    }
    const problems = [...found.values()];
    if (problems.length === 0 && row !== rows) {
      const how = row < rows ? "missing rows" : "extra rows";
      problems.push(`${name}: ${row} rows, the metadata says ${rows} (${how})`);
    }
    if (problems.length > 0) return { problems, checked: null };
    const compared = reference ? ", equal to the .npy" : "";
    const ordered = input ? ", ids in input order" : "";
    return { problems: [], checked: `${name} ${rows} rows${compared}${ordered}` };
  },
};

interface Columns {
  paperId: { get(i: number): unknown };
  paragraphIndex: { get(i: number): unknown };
  model: { get(i: number): unknown };
  /** Row r's embedding values as numbers (float16 decoded); a view, valid until the next call. */
  row(r: number): ArrayLike<number>;
}

/** The batch's columns as embed-multi writes them, or what is wrong with its schema. */
function columnsOf(batch: RecordBatch, width: number, dtype: OutputDtype): Columns | string {
  const paperId = batch.getChild("paper_id");
  const paragraphIndex = batch.getChild("paragraph_index");
  const model = batch.getChild("model");
  const embedding = batch.getChild("embedding");
  if (!paperId || !paragraphIndex || !model || !embedding) {
    return "lacks one of the columns paper_id, paragraph_index, model, embedding";
  }
  const type = embedding.type;
  const element = ARROW_TYPE[storedType(dtype)];
  if (!(type instanceof FixedSizeList) || type.listSize !== width) {
    return `embedding is ${String(type)}, not a fixed-size list of ${width} values`;
  }
  const [data] = embedding.data as Data<FixedSizeList>[];
  const child = data?.children[0];
  if (!data || embedding.data.length !== 1 || !child || String(child.type) !== element) {
    return `embedding holds ${String(child?.type)}, the metadata's output_dtype ${dtype} is stored as ${element}`;
  }
  const values: unknown = child.values;
  if (
    !(
      values instanceof Float32Array ||
      values instanceof Uint16Array ||
      values instanceof Int8Array ||
      values instanceof Uint8Array
    )
  ) {
    return `embedding values of an unexpected layout (${String(child.type)})`;
  }
  const decoded = dtype === "float16" ? new Float32Array(width) : null;
  return {
    paperId,
    paragraphIndex,
    model,
    row(r) {
      const start = child.offset + (data.offset + r) * width;
      if (!decoded) return values.subarray(start, start + width);
      for (let d = 0; d < width; d++) decoded[d] = float16Value(values[start + d] as number);
      return decoded;
    },
  };
}

/** A string id is stored as itself, a number id as its JSON text. */
function sameId(stored: unknown, expected: string | number): boolean {
  if (typeof stored !== "string") return false;
  if (typeof expected === "string") return stored === expected;
  return /^-?\d/.test(stored) && Number(stored) === expected;
}

function reason(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function fail(problem: string): FileReport {
  return { problems: [problem], checked: null };
}
