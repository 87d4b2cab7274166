import { readFileSync, rmSync, type Stats, statSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { ExitError } from "../errors.js";
import { partialPath } from "./atomic.js";
import { allFiles, type OutputPaths } from "./paths.js";

/**
 * Refuses a run where any path it may write, rename over or remove is the
 * input file itself: compared by device and inode, so a hard link, a symbolic
 * link or another spelling of the name is caught as well as the same name.
 * `paths` are final names; the temporary name beside each is checked too.
 */
export function refuseInputAsOutput(inputFile: string, paths: readonly string[]): void {
  let input: Stats;
  try {
    input = statSync(inputFile);
  } catch {
    return; // The scan reports a missing or unreadable input, with its own message.
  }
  for (const path of new Set(paths.flatMap((p) => [p, partialPath(p)]))) {
    let found: Stats;
    try {
      found = statSync(path);
    } catch {
      continue;
    }
    if (found.dev === input.dev && found.ino === input.ino) {
      throw new ExitError(
        `${path} is the input file ${inputFile}: the run would overwrite or remove it; move the input out of the output folder, or choose another --output_dir or model name`,
      );
    }
  }
}

/**
 * The final output files (not the metadata) that `paths.metadata` lists, as
 * paths in the output folder; none when it is missing or unreadable. Only a
 * name the model may have is taken: the metadata is not trusted to name
 * other files.
 */
export function listedOutputs(paths: OutputPaths): string[] {
  let outputs: unknown;
  try {
    outputs = (JSON.parse(readFileSync(paths.metadata, "utf8")) as { outputs?: unknown }).outputs;
  } catch {
    return [];
  }
  if (!Array.isArray(outputs)) return [];
  const dir = dirname(paths.metadata);
  const ours = new Set([paths.npy, paths.jsonl, paths.parquet]);
  return outputs
    .filter((f): f is string => typeof f === "string")
    .map((f) => join(dir, basename(f)))
    .filter((f) => ours.has(f));
}

/** Removes the outputs an earlier metadata listed that `keep` no longer holds. */
export function removeUnlisted(previous: readonly string[], keep: readonly string[]): void {
  const kept = new Set(keep);
  for (const file of previous) if (!kept.has(file)) rmSync(file, { force: true });
}

/**
 * What --restart may remove of a model: the outputs its metadata lists and
 * the metadata; the working and temporary files when the checkpoint knows
 * the model (only a run of it makes them). Never a file of the same name
 * that this tool did not write.
 */
export function restartFiles(paths: OutputPaths, inCheckpoint: boolean): string[] {
  const listed = listedOutputs(paths);
  const finals = new Set([paths.npy, paths.jsonl, paths.parquet, paths.metadata]);
  const working = inCheckpoint ? allFiles(paths).filter((f) => !finals.has(f)) : [];
  const metadata = listed.length > 0 ? [paths.metadata] : [];
  return [...listed, ...metadata, ...working];
}
