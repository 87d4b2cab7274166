import { closeSync, openSync, readSync } from "node:fs";
import { describeFsError } from "../errors.js";
import { type RawIds, scanIds } from "./ids.js";
import type { CorpusIndex } from "./scan.js";
import { checkLine, type Paragraph } from "./validate.js";

/**
 * Reads paragraphs back from the input by row number, through the index made
 * by the scan. The scan validated every line, so a line that no longer
 * parses means the file changed under us.
 */
export class RowReader {
  private readonly fd: number;
  private scratch = Buffer.alloc(64 * 1024);

  constructor(private readonly index: CorpusIndex) {
    try {
      this.fd = openSync(index.file, "r");
    } catch (err) {
      throw describeFsError(err, "read input file", index.file);
    }
  }

  paragraph(row: number): Paragraph {
    const length = this.index.byteLengths[row] ?? 0;
    if (this.scratch.length < length) this.scratch = Buffer.alloc(length * 2);
    const bytes = this.scratch.subarray(0, length);
    readSync(this.fd, bytes, 0, length, this.index.offsets[row] ?? 0);
    const checked = checkLine(bytes, Number.MAX_SAFE_INTEGER);
    if (!checked.ok) {
      const line = this.index.lineNumbers[row];
      throw new Error(`${this.index.file}:${line} changed during the run (${checked.problem})`);
    }
    return checked.paragraph;
  }

  /**
   * The raw JSON text of a row's ids, for the outputs: no full parse of the
   * line (its text is not needed), which keeps exports fast.
   */
  ids(row: number): RawIds {
    const length = this.index.byteLengths[row] ?? 0;
    if (this.scratch.length < length) this.scratch = Buffer.alloc(length * 2);
    const bytes = this.scratch.subarray(0, length);
    readSync(this.fd, bytes, 0, length, this.index.offsets[row] ?? 0);
    const ids = scanIds(bytes);
    if (!ids) {
      const line = this.index.lineNumbers[row];
      throw new Error(
        `${this.index.file}:${line} changed during the run (no paper_id and paragraph_index)`,
      );
    }
    return ids;
  }

  texts(rows: ArrayLike<number>): string[] {
    const out = new Array<string>(rows.length);
    for (let i = 0; i < rows.length; i++) out[i] = this.paragraph(rows[i] ?? 0).text;
    return out;
  }

  close(): void {
    closeSync(this.fd);
  }
}
