import { InputError } from "../errors.js";
import type { RowReader } from "./rows.js";
import type { CorpusIndex } from "./scan.js";

/**
 * Every paragraph against the longest text the servers accept (Info's
 * max_text_chars, 0 = not said), before any work: a text over it would fail
 * its batch again and again. Python counts code points, the scan UTF-16 units,
 * so a text over the limit in units is counted again in code points.
 */
export function checkServerTextLimit(
  corpus: CorpusIndex,
  reader: RowReader,
  limits: readonly number[],
): void {
  const known = limits.filter((n) => n > 0);
  if (known.length === 0) return;
  const limit = Math.min(...known);
  for (let row = 0; row < corpus.rows; row++) {
    if ((corpus.textChars[row] ?? 0) <= limit) continue;
    const chars = codePoints(reader.paragraph(row).text);
    if (chars <= limit) continue;
    throw new InputError(
      corpus.file,
      corpus.lineNumbers[row] ?? row + 1,
      `text has ${chars} characters, over the server's limit ${limit} (to skip such lines: --max_text_chars ${limit} --skip_invalid --restart)`,
    );
  }
}

function codePoints(text: string): number {
  let n = 0;
  for (const _ of text) n++;
  return n;
}
