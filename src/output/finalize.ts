import { existsSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import type { OutputFormat, RunModel } from "../config.js";
import { describeFsError } from "../errors.js";
import type { RowReader } from "../input/rows.js";
import { commitFile, partialPath, writeFileAtomic } from "./atomic.js";
import { asDiskFull } from "./diskfull.js";
import { exportJsonl } from "./jsonl.js";
import type { ModelMetadata } from "./metadata.js";
import type { NpyMatrixFile } from "./npy.js";

export interface OutputPaths {
  readonly npy: string;
  readonly jsonl: string;
  readonly metadata: string;
  /** Where the matrix lives while it is being filled. */
  readonly workingNpy: string;
}

export function outputPaths(outputDir: string, model: RunModel): OutputPaths {
  const base = join(outputDir, model.fileStem);
  return {
    npy: `${base}.npy`,
    jsonl: `${base}.jsonl`,
    metadata: `${base}.metadata.json`,
    workingNpy: partialPath(`${base}.npy`),
  };
}

/** The files a finished model has for this output format. */
export function finalFiles(paths: OutputPaths, format: OutputFormat): string[] {
  const files = [paths.metadata];
  if (format !== "jsonl") files.push(paths.npy);
  if (format !== "npy") files.push(paths.jsonl);
  return files;
}

export function isComplete(paths: OutputPaths, format: OutputFormat): boolean {
  return finalFiles(paths, format).every((f) => existsSync(f));
}

/**
 * Turns a filled matrix into the model's outputs: JSONL (from the matrix),
 * then the .npy under its final name, then the metadata last, so a
 * metadata file means the rest is complete. Each step writes a temporary
 * file and renames it; running it again after a crash redoes what is missing.
 */
export function finalizeModel(
  paths: OutputPaths,
  format: OutputFormat,
  matrix: NpyMatrixFile,
  reader: RowReader,
  alias: string,
  metadata: (outputs: string[], jsonlSeconds: number | null) => ModelMetadata,
): void {
  try {
    let jsonlSeconds: number | null = null;
    if (format !== "npy") {
      const started = Date.now();
      exportJsonl(paths.jsonl, matrix, reader, alias);
      jsonlSeconds = (Date.now() - started) / 1000;
    }
    matrix.sync();
    if (format === "jsonl") rmSync(paths.workingNpy, { force: true });
    else commitFile(paths.workingNpy, paths.npy);
    const outputs = finalFiles(paths, format);
    writeFileAtomic(
      paths.metadata,
      `${JSON.stringify(metadata(outputs, jsonlSeconds), null, 2)}\n`,
    );
  } catch (err) {
    // A write error here names no file: the folder is where the room is missing.
    const full = asDiskFull(err, dirname(paths.metadata));
    throw describeFsError(full, "write the outputs of", alias);
  }
}
