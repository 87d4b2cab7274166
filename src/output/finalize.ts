import { existsSync, readFileSync, renameSync, rmSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import type { OutputFormat, RunConfig, RunModel } from "../config.js";
import { describeFsError } from "../errors.js";
import type { RowReader } from "../input/rows.js";
import { commitFile, partialPath, writeAll, writeFileAtomic, writeThenCommit } from "./atomic.js";
import { digestFiles } from "./checksum.js";
import { Encoder, encodedChunks, ROWS_PER_CHUNK, rangesFor } from "./derive.js";
import { asDiskFull } from "./diskfull.js";
import { npyDescr, type OutputDtype, type Ranges, storedType } from "./dtype.js";
import { exportJsonl } from "./jsonl.js";
import { formatThreadCount } from "./jsonl-threads.js";
import type { MetadataBody, ModelMetadata, OutputFileEntry } from "./metadata.js";
import { NpyMatrixFile, npyHeader } from "./npy.js";
import { exportParquet } from "./parquet.js";

export interface OutputPaths {
  readonly npy: string;
  readonly jsonl: string;
  readonly parquet: string;
  readonly metadata: string;
  /** Each row's content hash (src/reuse/hashes.ts): what a later run reuses rows by. */
  readonly hashes: string;
  /** Where the float32 matrix lives while it is being filled (the checkpoint's copy). */
  readonly workingNpy: string;
}

/** What the run asked for: which files, in which dtype. */
export type OutputSpec = Pick<RunConfig, "outputFormat" | "outputDtype">;

export function outputPaths(outputDir: string, model: RunModel): OutputPaths {
  const base = join(outputDir, model.fileStem);
  return {
    npy: `${base}.npy`,
    jsonl: `${base}.jsonl`,
    parquet: `${base}.parquet`,
    metadata: `${base}.metadata.json`,
    hashes: `${base}.hashes`,
    workingNpy: partialPath(`${base}.npy`),
  };
}

function pathOf(paths: OutputPaths, format: OutputFormat): string {
  return paths[format];
}

/** Where a compact .npy is written before it takes the final name (the working copy has `.npy.partial`). */
function compactTemp(paths: OutputPaths): string {
  return partialPath(`${paths.npy}.compact`);
}

/** The files a finished model has for this spec, the metadata first. */
export function finalFiles(paths: OutputPaths, spec: OutputSpec): string[] {
  return [paths.metadata, ...spec.outputFormat.map((f) => pathOf(paths, f))];
}

/** Every file a model may leave in the output folder, finished or not (for --restart). */
export function allFiles(paths: OutputPaths): string[] {
  const finals = [paths.npy, paths.jsonl, paths.parquet, paths.hashes, paths.metadata];
  return [...finals, ...finals.map(partialPath), compactTemp(paths)];
}

/**
 * Whether the model's outputs are complete for this spec: the metadata (written
 * last) lists these files (at least) in this dtype, and they exist.
 */
export function isComplete(paths: OutputPaths, spec: OutputSpec): boolean {
  let meta: Partial<ModelMetadata>;
  try {
    meta = JSON.parse(readFileSync(paths.metadata, "utf8")) as Partial<ModelMetadata>;
  } catch {
    return false;
  }
  const expected = finalFiles(paths, spec);
  const listed = new Set((meta.outputs ?? []).map((f) => basename(f)));
  // More files than asked for (an npy,jsonl run asked again for npy) is complete too.
  return (
    (meta.output_dtype ?? "float32") === spec.outputDtype &&
    expected.every((f) => listed.has(basename(f)) && existsSync(f))
  );
}

/** What finalizing hands to the metadata. */
export interface FinalizedOutputs {
  readonly outputs: string[];
  readonly files: OutputFileEntry[];
  readonly ranges: Ranges | null;
  readonly jsonlSeconds: number | null;
}

/**
 * Turns a filled float32 matrix into the model's outputs. The float32 matrix
 * is the durable copy the checkpoint relies on: every output is derived from
 * it, chunk by chunk, in the output dtype (int8/uint8 ranges from one
 * streaming min/max pass first). Order: Parquet, JSONL, then the .npy under
 * its final name (the float32 matrix renamed, or the compact matrix written),
 * the metadata last, so a metadata file means the rest is complete; only
 * then is a float32 copy that is not itself an output deleted. Each step
 * writes a temporary file and renames it, and the same matrix gives the same
 * bytes: running it again after a crash redoes what is missing, identically.
 */
export async function finalizeModel(
  paths: OutputPaths,
  spec: OutputSpec,
  matrix: NpyMatrixFile,
  reader: RowReader,
  alias: string,
  metadata: (outputs: FinalizedOutputs) => MetadataBody,
  /** Files written beside the vectors before this call (the row hashes): listed and hashed too. */
  extraFiles: readonly string[] = [],
): Promise<void> {
  try {
    const dtype = spec.outputDtype;
    const formats = spec.outputFormat;
    matrix.sync();
    const ranges = rangesFor(dtype, matrix);
    const encoder = new Encoder(dtype, matrix.dim, ranges);
    const shape: [number, number] = [matrix.rows, encoder.width];
    const files: OutputFileEntry[] = [];
    const entry = (format: OutputFormat): OutputFileEntry => ({
      file: basename(pathOf(paths, format)),
      format,
      dtype: storedType(dtype),
      shape,
    });

    if (formats.includes("parquet")) {
      await exportParquet(paths.parquet, encodedChunks(matrix, encoder), encoder, reader, alias);
      files.push(entry("parquet"));
    }
    let jsonlSeconds: number | null = null;
    if (formats.includes("jsonl")) {
      const started = Date.now();
      await exportJsonl(
        paths.jsonl,
        encodedChunks(matrix, encoder),
        encoder,
        reader,
        alias,
        formatThreadCount(matrix.rows, ROWS_PER_CHUNK),
      );
      jsonlSeconds = (Date.now() - started) / 1000;
      files.push(entry("jsonl"));
    }
    const keepsWorkingCopy = formats.includes("npy") && dtype === "float32";
    if (formats.includes("npy")) {
      if (keepsWorkingCopy) commitFile(paths.workingNpy, paths.npy);
      else writeCompactNpy(paths, matrix, encoder, dtype);
      files.push(entry("npy"));
    }
    files.sort((a, b) => formats.indexOf(a.format) - formats.indexOf(b.format));
    const outputs = [...finalFiles(paths, spec), ...extraFiles];
    // Hashed under their final names, so the digests are of what stays.
    const complete: ModelMetadata = {
      ...metadata({ outputs, files, ranges, jsonlSeconds }),
      files: digestFiles(outputs.filter((f) => f !== paths.metadata)),
    };
    writeFileAtomic(paths.metadata, `${JSON.stringify(complete, null, 2)}\n`);
    discardWorkingCopy(paths, spec);
  } catch (err) {
    // A write error here names no file: the folder is where the room is missing.
    const full = asDiskFull(err, dirname(paths.metadata));
    throw describeFsError(full, "write the outputs of", alias);
  }
}

/** Deletes the float32 working copy once the outputs are complete, unless it is itself the .npy output. */
export function discardWorkingCopy(paths: OutputPaths, spec: OutputSpec): void {
  if (!(spec.outputFormat.includes("npy") && spec.outputDtype === "float32")) {
    rmSync(paths.workingNpy, { force: true });
  }
}

/** `<alias>.npy` in a compact dtype: (rows, width) of it, derived from the float32 matrix. */
function writeCompactNpy(
  paths: OutputPaths,
  matrix: NpyMatrixFile,
  encoder: Encoder,
  dtype: OutputDtype,
): void {
  const header = npyHeader(matrix.rows, encoder.width, npyDescr(dtype));
  writeThenCommit(
    paths.npy,
    (fd) => {
      writeAll(fd, header);
      for (const chunk of encodedChunks(matrix, encoder)) writeAll(fd, chunk.bytes);
    },
    compactTemp(paths),
  );
}

/**
 * After a crash between renaming the float32 matrix to its final name and
 * writing the metadata, the matrix is under `<alias>.npy`: move it back to
 * its working name. A compact `.npy` is never moved (it is not the matrix).
 */
export function recoverWorkingMatrix(paths: OutputPaths, rows: number, dim: number): void {
  if (existsSync(paths.workingNpy) || !existsSync(paths.npy)) return;
  const matrix = NpyMatrixFile.reopen(paths.npy, rows, dim);
  if (!matrix) return;
  matrix.close();
  renameSync(paths.npy, paths.workingNpy);
}
