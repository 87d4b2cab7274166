import { RowReader } from "../input/rows.js";
import { type CorpusIndex, scanInput } from "../input/scan.js";
import type { ExpectedRows } from "./context.js";

/** The input given to verify, indexed once (offsets only, no text) and shared by every model. */
export class VerifyInput {
  private constructor(
    readonly index: CorpusIndex,
    private readonly reader: RowReader,
  ) {}

  static async open(file: string): Promise<VerifyInput> {
    // Every parseable line is a row here; each model's metadata says which the run skipped.
    const index = await scanInput(file, {
      maxTextChars: Number.MAX_SAFE_INTEGER,
      skipInvalid: true,
    });
    return new VerifyInput(index, new RowReader(index));
  }

  get sha256(): string {
    return this.index.sha256;
  }

  /** The rows a run that skipped these (1-based) lines embedded, in order. */
  rowsFor(skippedLines: ReadonlySet<number>): ExpectedRows {
    const { index, reader } = this;
    const kept: number[] = [];
    for (let i = 0; i < index.rows; i++) {
      if (!skippedLines.has(index.lineNumbers[i] ?? 0)) kept.push(i);
    }
    const map = Uint32Array.from(kept);
    return {
      file: index.file,
      count: map.length,
      lineOf: (row) => index.lineNumbers[map[row] ?? 0] ?? 0,
      paragraph: (row) => reader.paragraph(map[row] ?? 0),
    };
  }

  close(): void {
    this.reader.close();
  }
}
