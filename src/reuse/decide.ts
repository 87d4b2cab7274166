import type { RunConfig, RunModel } from "../config.js";
import type { RowReader } from "../input/rows.js";
import type { ModelIdentity } from "../model/identity.js";
import type { ReuseSourceRecord } from "../model/records.js";
import type { Progress } from "../progress.js";
import { rowHashes } from "./hashes.js";
import { planRows, type RowPlan } from "./plan-rows.js";
import { examineSource, type ReuseSource } from "./sources.js";

export interface ReuseDecision {
  readonly rows: RowPlan;
  readonly sources: ReuseSourceRecord[];
  /** The sources used, for the plan line. */
  readonly used: readonly ReuseSource[];
}

/**
 * The planning hook: which rows of a model new to the checkpoint go to the
 * servers. Null when neither reuse nor deduplication is on (every row is
 * embedded). `identity` is the model as the first server loaded it: a source
 * must have been made with exactly it.
 */
export function decideRows(
  model: RunModel,
  identity: ModelIdentity,
  config: Pick<RunConfig, "reuse" | "dedupe" | "outputDir" | "checkpointInterval">,
  reader: RowReader,
  rows: number,
  progress: Progress,
): ReuseDecision | null {
  if (!config.dedupe && config.reuse.length === 0) return null;
  const used: ReuseSource[] = [];
  for (const dir of config.reuse) {
    const verdict = examineSource(dir, model.fileStem, identity, config.outputDir);
    if (verdict.ok) used.push(verdict.source);
    else progress.note(`--reuse ${dir}: not used for ${model.alias} (${verdict.why})`);
  }
  // The prefix the checkpoint stores, as finalize hashes it into <alias>.hashes.
  const hashes = rowHashes(reader, rows, model.prefix);
  const plan = planRows(
    hashes,
    config.dedupe,
    used.map((s) => s.hashes),
    // A job is marked done at once: jobs of the checkpoint interval keep its promise.
    config.checkpointInterval,
  );
  const sources = used.map((s, sourceNo) => ({
    sourceNo,
    dir: s.dir,
    npy: s.npy,
    npySha256: s.npySha256,
    npyBytes: s.npyBytes,
  }));
  return { rows: plan, sources, used };
}

/** "900 of 3000 paragraphs go to the servers (1800 reused from old/, 300 duplicates)". */
export function decisionNote(decision: ReuseDecision, rows: number): string {
  const { embed, reused, deduplicated, copies } = decision.rows;
  const parts: string[] = [];
  if (reused > 0) {
    const from = decision.sources
      .map((s) => {
        const n = copies
          .filter((c) => c.sourceNo === s.sourceNo)
          .reduce((sum, c) => sum + c.rows.length, 0);
        return n > 0 ? `${n} from ${s.dir}` : null;
      })
      .filter((x) => x !== null);
    parts.push(`${reused} reused: ${from.join(", ")}`);
  }
  if (deduplicated > 0) parts.push(`${deduplicated} duplicates of other rows`);
  const why = parts.length > 0 ? ` (${parts.join("; ")})` : "";
  return `${embed.length} of ${rows} paragraphs go to the servers${why}`;
}
