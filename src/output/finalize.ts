import { existsSync, renameSync, rmSync } from "node:fs";
import { basename, dirname } from "node:path";
import { describeFsError } from "../errors.js";
import type { RowReader } from "../input/rows.js";
import { commitFile, writeAll, writeFileAtomic, writeThenCommit } from "./atomic.js";
import { digestFiles } from "./checksum.js";
import { Encoder, encodedChunks, ROWS_PER_CHUNK, rangesFor } from "./derive.js";
import { asDiskFull } from "./diskfull.js";
import { npyDescr, type OutputDtype, type Ranges, storedType } from "./dtype.js";
import type { OutputFormat } from "./formats.js";
import { exportJsonl } from "./jsonl.js";
import { formatThreadCount } from "./jsonl-threads.js";
import type { MetadataBody, ModelMetadata, OutputFileEntry } from "./metadata.js";
import { NpyMatrixFile, npyHeader } from "./npy.js";
import { listedOutputs, removeUnlisted } from "./own-files.js";
import { compactTemp, finalFiles, type OutputPaths, type OutputSpec, pathOf } from "./paths.js";

export {
  allFiles,
  finalFiles,
  type OutputPaths,
  type OutputSpec,
  outputPaths,
} from "./paths.js";

import { exportParquet } from "./parquet.js";

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
    // What an earlier finalizing of this model wrote: what this one does not write again goes.
    const previous = listedOutputs(paths);
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

    const job: WriteJob = { paths, matrix, encoder, reader, alias, dtype };
    const seconds = new Map<OutputFormat, number>();
    // The writers that take the working matrix's place go after those that read it.
    const order = [...formats].sort((a, b) => Number(WRITERS[a].last) - Number(WRITERS[b].last));
    for (const format of order) {
      const started = Date.now();
      await WRITERS[format].write(job);
      seconds.set(format, (Date.now() - started) / 1000);
      files.push(entry(format));
    }
    const jsonlSeconds = seconds.get("jsonl") ?? null;
    files.sort((a, b) => formats.indexOf(a.format) - formats.indexOf(b.format));
    const outputs = [...finalFiles(paths, spec), ...extraFiles];
    // Hashed under their final names, so the digests are of what stays.
    const complete: ModelMetadata = {
      ...metadata({ outputs, files, ranges, jsonlSeconds }),
      files: digestFiles(outputs.filter((f) => f !== paths.metadata)),
    };
    // Before the metadata: a crash in between leaves the old metadata, naming what to remove.
    removeUnlisted(previous, outputs);
    writeFileAtomic(paths.metadata, `${JSON.stringify(complete, null, 2)}\n`);
    discardWorkingCopy(paths, spec);
  } catch (err) {
    // A write error here names no file: the folder is where the room is missing.
    const full = asDiskFull(err, dirname(paths.metadata));
    throw describeFsError(full, "write the outputs of", alias);
  }
}

/** What a format's writer gets: the finished float32 matrix, encoded to the run's dtype. */
interface WriteJob {
  readonly paths: OutputPaths;
  readonly matrix: NpyMatrixFile;
  readonly encoder: Encoder;
  readonly reader: RowReader;
  readonly alias: string;
  readonly dtype: OutputDtype;
}

interface FormatWriter {
  /** Written after the others: it may take the working matrix's place, which they read. */
  readonly last: boolean;
  write(job: WriteJob): Promise<void> | void;
}

/** One writer per output format (src/output/formats.ts): the compiler asks for a new one's. */
const WRITERS: Readonly<Record<OutputFormat, FormatWriter>> = {
  npy: {
    last: true,
    write: ({ paths, matrix, encoder, dtype }) => {
      // A float32 .npy is the working matrix itself, renamed into place.
      if (dtype === "float32") commitFile(paths.workingNpy, paths.npy);
      else writeCompactNpy(paths, matrix, encoder, dtype);
    },
  },
  jsonl: {
    last: false,
    write: ({ paths, matrix, encoder, reader, alias }) =>
      exportJsonl(
        paths.jsonl,
        encodedChunks(matrix, encoder),
        encoder,
        reader,
        alias,
        formatThreadCount(matrix.rows, ROWS_PER_CHUNK),
      ),
  },
  parquet: {
    last: false,
    write: ({ paths, matrix, encoder, reader, alias }) =>
      exportParquet(paths.parquet, encodedChunks(matrix, encoder), encoder, reader, alias),
  },
};

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
