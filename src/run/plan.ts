import type { LoadedModel, TokenCounter } from "../backend/types.js";
import { checkSameWeights } from "../checkpoint/compat.js";
import type { PlanLimitsUsed } from "../checkpoint/ledger.js";
import { ledgerModelOf } from "../checkpoint/model-row.js";
import type { RunConfig } from "../config.js";
import { checkAgreement, type ServerSession } from "../dispatch/servers.js";
import { checkServerTextLimit } from "../input/server-limit.js";
import { identityOf } from "../model/identity.js";
import { batchLimits } from "../plan/limits.js";
import { measureTokens } from "../plan/measure.js";
import { paddingEfficiency, planBatches } from "../plan/planner.js";
import { TokenStore, tokenStorePath } from "../plan/tokens.js";
import { decideRows, decisionNote } from "../reuse/decide.js";
import { attachFollowers } from "../reuse/plan-rows.js";
import { isPlanned, type ModelRun, type PlannedModel, refresh } from "./model-run.js";
import type { RunState } from "./state.js";

/** A counter that cannot count: the planner estimates lengths from characters, and says so. */
const NO_COUNTER: TokenCounter = { countTokens: async () => null };

/** The plan line's note on where the lengths came from (nothing: the server counted). */
function countedWith(counted: boolean, counter: TokenCounter, modelKey: string): string {
  if (!counted) return " (lengths estimated)";
  const what = counter.describe?.(modelKey);
  return what ? ` (tokens counted with ${what})` : "";
}

/** The plan line's note on what computes the vectors, when the server says. */
function engineNote(info: LoadedModel): string {
  if (!info.engine) return "";
  return `, engine ${info.engine}${info.precision ? ` ${info.precision}` : ""}`;
}

/**
 * Gives each model the first server's view of it, then plans the batches of
 * models new to the checkpoint and stores them, all pending, with the limits
 * they were cut with. A model planned before keeps its plan: if this run's
 * limits would cut it otherwise, one note says so. Returns every model, planned.
 */
export async function planModels(
  state: Omit<RunState, "signal">,
  runs: readonly ModelRun[],
  first: ServerSession,
  counter: TokenCounter,
): Promise<PlannedModel[]> {
  const { ledger, config, reader, corpus, progress } = state;
  const overruled: { alias: string; plan: PlanLimitsUsed }[] = [];
  const planned: PlannedModel[] = [];
  for (const [position, run] of runs.entries()) {
    const info = first.models.get(run.model.alias);
    if (!info) throw new Error(`server ${first.target} did not load ${run.model.alias}`);
    run.server = info;
    const limits = batchLimits(config, first.info?.limits ?? undefined, info.dim);
    if (isPlanned(run)) {
      checkSameWeights(run.stored, info);
      const plan = run.stored.plannedWith;
      if (plan && !run.status.finalized && !samePlanLimits(plan, limits)) {
        overruled.push({ alias: run.model.alias, plan });
      }
      planned.push(run);
      continue;
    }
    // Rows reused from earlier outputs or duplicating another row are not sent.
    const decided = decideRows(run.model, identityOf(info), config, reader, corpus.rows, progress);
    const only = decided?.rows.embed;
    // The ids come along, so that the batches of this run carry them (the run
    // ends by removing the store, also on failure).
    run.store = TokenStore.available
      ? TokenStore.create(tokenStorePath(config.outputDir, run.model.fileStem), corpus.rows)
      : null;
    const measured = await measureTokens(
      counter,
      info.modelKey,
      info.maxLength,
      reader,
      corpus.textChars,
      {
        maxMessageBytes: limits.maxMessageBytes,
        store: run.store,
        prefix: run.model.prefix,
        ...(only ? { only } : {}),
      },
    );
    if (run.store && !measured.stored) {
      run.store.remove();
      run.store = null;
    }
    const plan = planBatches(
      measured.lengths,
      {
        ...limits,
        // A resumed run sends texts: each batch's lines (longer than their texts) must fit.
        rowBytes: corpus.byteLengths,
      },
      only,
    );
    const batches = decided ? attachFollowers(plan.batches, decided.rows.leaderOf) : plan.batches;
    const sent = decided ? `${decisionNote(decided, corpus.rows)}, ` : "";
    progress.note(
      `${run.model.alias}: ${sent}${plan.batches.length} batches of up to ${limits.batchSize} paragraphs, padding efficiency ${paddingEfficiency(plan).toFixed(3)}${countedWith(measured.counted, counter, info.modelKey)}${engineNote(info)}`,
    );
    const plannedWith = { batchSize: limits.batchSize, maxBatchTokens: limits.maxBatchTokens };
    const stored = ledgerModelOf(run.model, info, position, plannedWith);
    ledger.addModel(
      stored,
      batches,
      decided ? { sources: decided.sources, copies: decided.rows.copies } : undefined,
    );
    planned.push(Object.assign(run, { stored }));
    refresh(run, ledger);
  }
  // Only limits the user set are "not used": the defaults are no request.
  if (overruled.length > 0 && config.planLimitsGiven) {
    progress.note(storedPlanNote(config, overruled));
  }
  return planned;
}

function samePlanLimits(a: PlanLimitsUsed, b: PlanLimitsUsed): boolean {
  return a.batchSize === b.batchSize && a.maxBatchTokens === b.maxBatchTokens;
}

/** One line for every resumed model whose stored plan this run's limits would cut otherwise. */
export function storedPlanNote(
  config: Pick<RunConfig, "batchSize" | "maxBatchTokens">,
  overruled: readonly { alias: string; plan: PlanLimitsUsed }[],
): string {
  const plans = overruled.map(({ alias, plan }) => {
    const tokens = plan.maxBatchTokens > 0 ? `${plan.maxBatchTokens} tokens` : "no token budget";
    const which = overruled.length > 1 ? ` (${alias})` : "";
    return `${plan.batchSize} paragraphs / ${tokens}${which}`;
  });
  return `--batch_size ${config.batchSize} --max_batch_tokens ${config.maxBatchTokens} not used: the stored plan wins: batches of up to ${plans.join(", ")}, from the first run; --restart to plan again`;
}

/**
 * With the servers of the run known: they must agree on every model, every
 * paragraph must fit their text limit, and models new to the checkpoint are
 * measured on the first one and planned. Returns every model, planned.
 */
export async function planWithServers(
  state: RunState,
  runs: readonly ModelRun[],
  ready: readonly ServerSession[],
): Promise<PlannedModel[]> {
  const [first] = ready;
  // The pool has one at least (it stops the run with none).
  if (!first) throw new Error("no server is ready to plan with");
  checkAgreement(ready, state.config.models);
  checkServerTextLimit(
    state.corpus,
    state.reader,
    ready.map((s) => s.info?.limits?.maxTextChars ?? 0),
  );
  const counter = first.backend.tokenCounter(state.signal) ?? NO_COUNTER;
  return await planModels(state, runs, first, counter);
}
