import { createHash } from "node:crypto";
import { type Stats, statSync } from "node:fs";
import { describeFsError, ExitError, InputError } from "../errors.js";
import { Growable } from "./growable.js";
import { forEachLineBytes } from "./lines.js";
import { checkLine } from "./validate.js";

export interface SkippedLine {
  readonly line: number;
  readonly problem: string;
}

/** Where a shard's rows lie in the whole input: decided from the input alone. */
export interface ShardRange {
  readonly index: number;
  readonly count: number;
  /** First row (0-based, after skipped lines) of the shard in the whole input. */
  readonly firstRow: number;
  readonly rows: number;
  /** Rows of the whole input. */
  readonly totalRows: number;
}

/**
 * Where each paragraph of the input is, without holding any text: the run
 * reads a batch's texts back from the file by offset. A million rows cost
 * about 16 MB here, whatever the paragraphs' size.
 */
export interface CorpusIndex {
  readonly file: string;
  readonly size: number;
  readonly mtimeMs: number;
  readonly sha256: string;
  readonly rows: number;
  /** Byte offset of each row's line. */
  readonly offsets: Float64Array;
  /** Byte length of each row's line, without the newline. */
  readonly byteLengths: Uint32Array;
  /** Characters of each row's text: the planner's length when tokens are not counted. */
  readonly textChars: Uint32Array;
  /** 1-based line number of each row. */
  readonly lineNumbers: Uint32Array;
  readonly skipped: readonly SkippedLine[];
  readonly blankLines: number;
  /** Set when these rows are one shard of the input (sizes and digests stay the whole file's). */
  readonly shard?: ShardRange;
}

export interface ScanOptions {
  readonly maxTextChars: number;
  /** Skip bad lines (listed in the metadata) instead of stopping. */
  readonly skipInvalid: boolean;
}

const BOM = [0xef, 0xbb, 0xbf];

function hasByteOrderMark(bytes: Uint8Array): boolean {
  return BOM.every((b, i) => bytes[i] === b);
}

/** Reads the input once as a stream: validates every line, hashes the bytes, indexes the rows. */
export async function scanInput(file: string, options: ScanOptions): Promise<CorpusIndex> {
  let stat: ReturnType<typeof statSync>;
  try {
    stat = statSync(file);
  } catch (err) {
    throw describeFsError(err, "read input file", file);
  }
  if (!stat.isFile()) throw notRegular(file, stat);

  const hash = createHash("sha256");
  const offsets = new Growable(Float64Array);
  const byteLengths = new Growable(Uint32Array);
  const textChars = new Growable(Uint32Array);
  const lineNumbers = new Growable(Uint32Array);
  const skipped: SkippedLine[] = [];
  let blankLines = 0;

  const takeLine = (line: Uint8Array, lineOffset: number, lineNumber: number): void => {
    // A UTF-8 byte-order mark (Windows tools write one) is not part of the first row: the
    // row starts after it, so every reader by offset skips it too.
    const mark = lineOffset === 0 && hasByteOrderMark(line) ? BOM.length : 0;
    const bytes = line.subarray(mark);
    const offset = lineOffset + mark;
    let end = bytes.length;
    if (end > 0 && bytes[end - 1] === 0x0d) end--; // CRLF files
    const body = bytes.subarray(0, end);
    if (isBlank(body)) {
      blankLines++;
      return;
    }
    const checked = checkLine(body, options.maxTextChars);
    if (!checked.ok) {
      if (!options.skipInvalid) throw new InputError(file, lineNumber, checked.problem);
      skipped.push({ line: lineNumber, problem: checked.problem });
      return;
    }
    offsets.push(offset);
    byteLengths.push(end);
    textChars.push(checked.paragraph.text.length);
    lineNumbers.push(lineNumber);
  };

  let position = 0;
  try {
    position = (await forEachLineBytes(file, takeLine, (chunk) => hash.update(chunk))).bytes;
  } catch (err) {
    if (err instanceof ExitError) throw err;
    throw describeFsError(err, "read input file", file);
  }
  const after = statAfterScan(file);
  if (after.size !== position || after.mtimeMs !== stat.mtimeMs || position !== stat.size) {
    throw new ExitError(
      `${file} changed while it was being read (an editor or another program writing it); run again once it is finished`,
    );
  }

  if (offsets.length === 0) {
    const why = skipped.length > 0 ? ` (all ${skipped.length} lines were invalid)` : "";
    throw new ExitError(`input file ${file} has no paragraphs${why}`);
  }
  return {
    file,
    size: position,
    mtimeMs: stat.mtimeMs,
    sha256: hash.digest("hex"),
    rows: offsets.length,
    offsets: offsets.finish(),
    byteLengths: byteLengths.finish(),
    textChars: textChars.finish(),
    lineNumbers: lineNumbers.finish(),
    skipped,
    blankLines,
  };
}

function isBlank(bytes: Uint8Array): boolean {
  for (const b of bytes) {
    if (b !== 0x20 && b !== 0x09 && b !== 0x0d) return false;
  }
  return true;
}

/** The run reads the input twice (scan, then texts and JSONL by offset): a pipe cannot be. */
function notRegular(file: string, stat: Stats): ExitError {
  const kind = stat.isDirectory()
    ? "a directory"
    : stat.isFIFO()
      ? "a pipe"
      : stat.isCharacterDevice()
        ? "a terminal or device"
        : stat.isSocket()
          ? "a socket"
          : "not a regular file";
  return new ExitError(
    `--input_file ${file} is ${kind}; it needs a regular file: it is read twice (save the input to a file first)`,
  );
}

function statAfterScan(file: string): Stats {
  try {
    return statSync(file);
  } catch (err) {
    throw describeFsError(err, "read input file", file);
  }
}
