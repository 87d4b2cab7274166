import type { StoredMetadata } from "../checks/metadata.js";
import type { Paragraph } from "../input/validate.js";
import type { NpyRows } from "./npy-rows.js";

/** The rows the outputs should hold, from the input file given with --input_file. */
export interface ExpectedRows {
  readonly file: string;
  readonly count: number;
  /** The 1-based input line of a row, for messages. */
  lineOf(row: number): number;
  paragraph(row: number): Paragraph;
}

/** What the checkers of one model share. */
export interface CheckContext {
  readonly dir: string;
  readonly metadata: StoredMetadata;
  readonly input: ExpectedRows | null;
  /**
   * The model's float32 matrix once a .npy checker found it sound; later
   * checkers compare their own copies of the vectors with it.
   */
  reference: NpyRows | null;
}

/** What one checker found in one file. */
export interface FileReport {
  readonly problems: string[];
  /** Set when the file was read and found sound. */
  readonly checked: string | null;
}

/** Reads one output format's file (verify.ts holds one per format). */
export interface FileChecker {
  check(name: string, ctx: CheckContext): Promise<FileReport>;
}
