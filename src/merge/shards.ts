import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { LedgerReader } from "../checkpoint/ledger.js";
import { describeFsError, ExitError } from "../errors.js";
import { hashFile } from "../output/checksum.js";
import type { ModelMetadata } from "../output/metadata.js";
import { CHECKPOINT_FILE } from "../run/prepare.js";
import { parseShardFolder, type ShardSpec, shardFolderName } from "../shard/shard.js";

const METADATA_SUFFIX = ".metadata.json";

/** One model's finished outputs in one shard's folder. */
export interface ShardModel {
  readonly metadata: ModelMetadata;
  /** The shard's float32 `<stem>.npy`. */
  readonly npy: string;
}

export interface FoundShard {
  readonly spec: ShardSpec;
  readonly folder: string;
  readonly dir: string;
  /** By file stem. */
  readonly models: ReadonlyMap<string, ShardModel>;
}

/** The shards of a parent folder, all finished, of one split, in index order; or a refusal naming them. */
export function findShards(parent: string): FoundShard[] {
  let names: string[];
  try {
    names = readdirSync(parent);
  } catch (err) {
    throw describeFsError(err, "read output directory", parent);
  }
  const specs = names
    .map((name) => ({ name, spec: parseShardFolder(name) }))
    .filter((s): s is { name: string; spec: ShardSpec } => s.spec !== null)
    .filter((s) => statSync(join(parent, s.name)).isDirectory());
  if (specs.length === 0) {
    throw new ExitError(
      `no shard folders (shard-KKKKK-of-NNNNN) in ${parent}: run embed-multi --shard K/N --output_dir ${parent} first`,
    );
  }
  const counts = [...new Set(specs.map((s) => s.spec.count))].sort((a, b) => a - b);
  if (counts.length > 1) {
    throw new ExitError(
      `${parent} holds shards of ${counts.length} different splits (of ${counts.join(", ")}): keep one split's folders`,
    );
  }
  const count = counts[0] ?? 0;
  const byIndex = new Map(specs.map((s) => [s.spec.index, s.name]));
  const missing: string[] = [];
  for (let k = 0; k < count; k++) {
    if (!byIndex.has(k)) missing.push(shardFolderName({ index: k, count }));
  }
  const unfinished: string[] = [...missing.map((m) => `${m} (not started)`)];
  const shards: FoundShard[] = [];
  for (let k = 0; k < count; k++) {
    const folder = byIndex.get(k);
    if (!folder) continue;
    const dir = join(parent, folder);
    const state = shardState(dir);
    if (state.problem) unfinished.push(`${folder} (${state.problem})`);
    else shards.push({ spec: { index: k, count }, folder, dir, models: state.models });
  }
  if (unfinished.length > 0) {
    throw new ExitError(
      `${unfinished.length} of ${count} shards are not finished: ${unfinished.join("; ")}; run (or resume) them, then merge again`,
    );
  }
  return shards;
}

/** A shard is finished when its checkpoint says every model is finalized and each has its float32 .npy. */
function shardState(dir: string): { problem: string | null; models: Map<string, ShardModel> } {
  const models = new Map<string, ShardModel>();
  const fail = (problem: string) => ({ problem, models });
  const checkpoint = join(dir, CHECKPOINT_FILE);
  if (!existsSync(checkpoint)) return fail("no checkpoint");
  let reader: LedgerReader;
  try {
    reader = LedgerReader.openReadOnly(checkpoint);
  } catch (err) {
    return fail(err instanceof Error ? err.message : String(err));
  }
  try {
    const stored = reader.models();
    if (stored.length === 0) return fail("nothing planned yet");
    const left: string[] = [];
    for (const m of stored) {
      const status = reader.status(m.alias);
      if (!status.finalized) {
        left.push(`${m.alias}: ${status.doneBatches} of ${status.batches} batches done`);
      }
    }
    if (left.length > 0) return fail(left.join(", "));
  } finally {
    reader.close();
  }
  for (const name of readdirSync(dir)) {
    if (!name.endsWith(METADATA_SUFFIX)) continue;
    const stem = name.slice(0, -METADATA_SUFFIX.length);
    let metadata: ModelMetadata;
    try {
      metadata = JSON.parse(readFileSync(join(dir, name), "utf8")) as ModelMetadata;
    } catch {
      return fail(`${name} is not readable JSON`);
    }
    const npy = join(dir, `${stem}.npy`);
    if (metadata.output_dtype !== "float32" || !existsSync(npy)) {
      return fail(`${name}: no float32 ${stem}.npy`);
    }
    models.set(stem, { metadata, npy });
  }
  if (models.size === 0) return fail("no finished model outputs");
  return { problem: null, models };
}

/** Same bytes as its metadata recorded: a shard's .npy changed after the run is not merged. */
export function checkShardNpy(shard: FoundShard, stem: string, model: ShardModel): void {
  const recorded = model.metadata.files?.[`${stem}.npy`];
  const found = hashFile(model.npy);
  if (!recorded || recorded.sha256 !== found.sha256 || recorded.bytes !== found.bytes) {
    throw new ExitError(
      `${shard.folder}/${stem}.npy does not match the checksum in its metadata (changed after the shard finished); run that shard again with --restart`,
    );
  }
}
