import { join } from "node:path";
import { partialPath } from "./atomic.js";
import type { OutputDtype } from "./dtype.js";
import { FORMAT_EXTENSIONS, OUTPUT_FORMATS, type OutputFormat } from "./formats.js";

/** Where each format's file of a model goes, and its metadata. */
export interface OutputPaths extends Readonly<Record<OutputFormat, string>> {
  readonly metadata: string;
  /** Each row's content hash (src/reuse/hashes.ts): what a later run reuses rows by. */
  readonly hashes: string;
  /** Where the float32 matrix lives while it is being filled (the checkpoint's copy). */
  readonly workingNpy: string;
}

/** What the run asked for: which files, in which dtype (as its config says). */
export interface OutputSpec {
  readonly outputFormat: readonly OutputFormat[];
  readonly outputDtype: OutputDtype;
}

/** The files of a model, named after its file stem. */
export function outputPaths(outputDir: string, model: { readonly fileStem: string }): OutputPaths {
  const base = join(outputDir, model.fileStem);
  const files = Object.fromEntries(
    OUTPUT_FORMATS.map((f) => [f, `${base}${FORMAT_EXTENSIONS[f]}`]),
  ) as Record<OutputFormat, string>;
  return {
    ...files,
    metadata: `${base}.metadata.json`,
    hashes: `${base}.hashes`,
    workingNpy: partialPath(files.npy),
  };
}

export function pathOf(paths: OutputPaths, format: OutputFormat): string {
  return paths[format];
}

/** Where a compact .npy is written before it takes the final name (the working copy has `.npy.partial`). */
export function compactTemp(paths: OutputPaths): string {
  return partialPath(`${paths.npy}.compact`);
}

/** The files a finished model has for this spec, the metadata first. */
export function finalFiles(paths: OutputPaths, spec: OutputSpec): string[] {
  return [paths.metadata, ...spec.outputFormat.map((f) => pathOf(paths, f))];
}

/** Every file a model may leave in the output folder, finished or not (for --restart). */
export function allFiles(paths: OutputPaths): string[] {
  const finals = [...OUTPUT_FORMATS.map((f) => pathOf(paths, f)), paths.hashes, paths.metadata];
  return [...finals, ...finals.map(partialPath), compactTemp(paths)];
}
