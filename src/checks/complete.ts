import { existsSync } from "node:fs";
import { basename } from "node:path";
import { finalFiles, type OutputPaths, type OutputSpec } from "../output/finalize.js";
import { readStoredMetadata } from "./metadata.js";

/**
 * Whether the model's outputs are complete for this spec: the metadata (written
 * last) is sound, lists these files (at least) in this dtype, and they exist.
 */
export function isComplete(paths: OutputPaths, spec: OutputSpec): boolean {
  const read = readStoredMetadata(paths.metadata, basename(paths.metadata));
  if (!read.ok) return false;
  const expected = finalFiles(paths, spec);
  const listed = new Set(read.metadata.outputs);
  // More files than asked for (an npy,jsonl run asked again for npy) is complete too.
  return (
    read.metadata.outputDtype === spec.outputDtype &&
    expected.every((f) => listed.has(basename(f)) && existsSync(f))
  );
}
