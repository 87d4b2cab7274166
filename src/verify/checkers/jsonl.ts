import { join } from "node:path";
import { forEachLine } from "../../input/lines.js";
import type { OutputDtype } from "../../output/dtype.js";
import { formatFloat32 } from "../../output/float.js";
import type { CheckContext, FileChecker, FileReport } from "../context.js";

type Category = "json" | "fields" | "model" | "shape" | "finite" | "order" | "values";

/**
 * A JSONL output, streamed line by line: every line parses, has dim finite
 * values and the model's name; with the input, line i holds the paper_id and
 * paragraph_index of input row i; with a sound .npy, every value reads back
 * as the float32 in the matrix. The first problem of each kind is reported.
 */
export const jsonlChecker: FileChecker = {
  async check(name: string, ctx: CheckContext): Promise<FileReport> {
    const { width, rows, alias, outputDtype } = ctx.metadata;
    const range = integerRange(outputDtype);
    const { input, reference } = ctx;
    const found = new Map<Category, string>();
    const report = (category: Category, line: number, what: string) => {
      if (!found.has(category)) found.set(category, `${name} line ${line}: ${what}`);
    };
    const take = (text: string, line: number) => {
      const row = line - 1;
      let value: unknown;
      try {
        value = JSON.parse(text);
      } catch {
        report("json", line, "not valid JSON (the file is damaged or cut short)");
        return;
      }
      if (typeof value !== "object" || value === null || Array.isArray(value)) {
        report("json", line, "not a JSON object");
        return;
      }
      const record = value as Record<string, unknown>;
      const { paper_id: paperId, paragraph_index: paragraphIndex, embedding, model } = record;
      if (
        (typeof paperId !== "string" && typeof paperId !== "number") ||
        typeof paragraphIndex !== "number" ||
        !Array.isArray(embedding)
      ) {
        report("fields", line, "lacks paper_id, paragraph_index or embedding");
        return;
      }
      if (model !== alias) {
        report("model", line, `model ${JSON.stringify(model)}, the metadata says "${alias}"`);
      }
      if (input && row < input.count) {
        const expected = input.paragraph(row);
        if (expected.paperId !== paperId || expected.paragraphIndex !== paragraphIndex) {
          report(
            "order",
            line,
            `paper_id ${JSON.stringify(paperId)} paragraph_index ${paragraphIndex}, but row ${row} of the input (line ${input.lineOf(row)}) is paper_id ${JSON.stringify(expected.paperId)} paragraph_index ${expected.paragraphIndex}: rows are out of order or from another input`,
          );
        }
      }
      if (embedding.length !== width) {
        const what = width === ctx.metadata.dim ? "dim" : `${outputDtype} packed bytes of dim`;
        report(
          "shape",
          line,
          `${embedding.length} values, the metadata says ${width} (${what} ${ctx.metadata.dim})`,
        );
        return;
      }
      const stored = reference && row < reference.rows ? reference.row(row) : null;
      for (let d = 0; d < width; d++) {
        const v = embedding[d];
        if (typeof v !== "number" || !Number.isFinite(v)) {
          // The JSONL writer turns NaN and Inf into null.
          report("finite", line, `value ${d} is ${JSON.stringify(v)}, not a finite number`);
          return;
        }
        if (range && !(Number.isInteger(v) && v >= range[0] && v <= range[1])) {
          report(
            "finite",
            line,
            `value ${d} is ${v}, not an integer in [${range[0]}, ${range[1]}] (output_dtype ${outputDtype})`,
          );
          return;
        }
        // Exact: a float16 or an integer is a float32 too.
        if (stored && Math.fround(v) !== stored[d]) {
          report(
            "values",
            line,
            `value ${d} is ${v}, but row ${row} of the .npy holds ${formatFloat32(stored[d] ?? 0)}: the two files disagree`,
          );
          return;
        }
      }
    };
    const scan = await forEachLine(join(ctx.dir, name), take);
    const problems = [...found.values()];
    if (!scan.endsWithNewline) {
      problems.push(`${name} line ${scan.lines}: no newline at the end (the file was cut short)`);
    }
    if (scan.lines !== rows) {
      const how = scan.lines < rows ? "missing rows (truncated?)" : "extra lines";
      problems.push(`${name}: ${scan.lines} lines, the metadata says ${rows} rows (${how})`);
    }
    if (problems.length > 0) return { problems, checked: null };
    const compared = reference ? ", equal to the .npy" : "";
    const ordered = input ? ", in input order" : "";
    return { problems: [], checked: `${name} ${rows} lines${compared}${ordered}` };
  },
};

/** The values an integer output dtype holds; null for float dtypes. */
function integerRange(dtype: OutputDtype): [number, number] | null {
  if (dtype === "int8" || dtype === "binary") return [-128, 127];
  if (dtype === "uint8" || dtype === "ubinary") return [0, 255];
  return null;
}
