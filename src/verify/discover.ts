import { closeSync, existsSync, openSync, readdirSync, readSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { safeFileStem } from "../config/registry.js";
import { describeFsError, ExitError } from "../errors.js";

export const CHECKPOINT_FILE = "embed-multi.checkpoint.sqlite";
const METADATA_SUFFIX = ".metadata.json";

/** A model whose outputs are in the folder, found through any of its files. */
export interface FoundModel {
  readonly stem: string;
  /** The metadata file name; the file itself may be missing. */
  readonly metadataName: string;
  /** Where the model was seen: why verify expects its metadata. */
  readonly seenIn: string;
}

/**
 * The models of an output folder: every `<stem>.metadata.json`, plus every
 * model the checkpoint lists and every embedding file without its metadata,
 * so a deleted or never-written metadata file is a failure, not a model
 * silently left out.
 */
export function discoverModels(dir: string): FoundModel[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (err) {
    throw describeFsError(err, "read output directory", dir);
  }
  const found = new Map<string, string>();
  const note = (stem: string, where: string) => {
    if (!found.has(stem)) found.set(stem, where);
  };
  for (const name of names) {
    if (name.endsWith(METADATA_SUFFIX)) note(name.slice(0, -METADATA_SUFFIX.length), name);
  }
  for (const alias of checkpointAliases(join(dir, CHECKPOINT_FILE))) {
    note(safeFileStem(alias), `the checkpoint ${CHECKPOINT_FILE}`);
  }
  for (const name of names) {
    if (name.endsWith(".npy")) note(name.slice(0, -4), name);
    else if (name.endsWith(".jsonl") && looksLikeEmbeddings(join(dir, name))) {
      note(name.slice(0, -6), name);
    }
  }
  if (found.size === 0) {
    throw new ExitError(
      `no embed-multi outputs in ${dir} (no *.metadata.json, *.npy or checkpoint)`,
    );
  }
  return [...found.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([stem, seenIn]) => ({ stem, metadataName: `${stem}${METADATA_SUFFIX}`, seenIn }));
}

/** The model aliases a checkpoint lists; none when there is no readable checkpoint. */
function checkpointAliases(path: string): string[] {
  let db: Database.Database | null = null;
  try {
    db = new Database(path, { readonly: true, fileMustExist: true });
    const rows = db.prepare("SELECT alias FROM models").all() as { alias: unknown }[];
    return rows.map((r) => r.alias).filter((a): a is string => typeof a === "string");
  } catch {
    // Outputs copied without their checkpoint are the common case on another machine.
    return [];
  } finally {
    db?.close();
  }
}

/** An embed-multi JSONL output (and not, say, the input kept in the same folder). */
function looksLikeEmbeddings(path: string): boolean {
  let fd: number | null = null;
  try {
    fd = openSync(path, "r");
    const head = Buffer.alloc(4096);
    const got = readSync(fd, head, 0, head.length, 0);
    return head.subarray(0, got).toString("utf8").includes('"embedding":');
  } catch {
    return false;
  } finally {
    if (fd !== null) closeSync(fd);
  }
}

/**
 * Output files of the model `stem` in `dir` that its metadata does not list
 * (`listed`): an earlier run's, left beside the new ones. A JSONL file that
 * holds no embeddings (the input, say) is not ours.
 */
export function unlistedOutputs(dir: string, stem: string, listed: readonly string[]): string[] {
  const problems: string[] = [];
  for (const ext of [".npy", ".jsonl", ".parquet"]) {
    const name = `${stem}${ext}`;
    const path = join(dir, name);
    if (listed.includes(name) || !existsSync(path)) continue;
    if (ext === ".jsonl" && !looksLikeEmbeddings(path)) continue;
    problems.push(
      `${name} is an output file of ${stem} not listed in its metadata (an earlier run's, or copied in): remove it, or run embed-multi again to finish the folder`,
    );
  }
  return problems;
}
