import { type Resolve, systemResolve } from "./backend/targets.js";
import { checkFidelity } from "./checks/quantize.js";
import type { RunConfig } from "./config.js";
import { InterruptedError } from "./errors.js";
import { withCalibration } from "./input/calibration.js";
import { RowReader } from "./input/rows.js";
import { scanInput } from "./input/scan.js";
import { closeLedger } from "./output/diskfull.js";
import { type FolderLock, withFolderLock } from "./output/lock.js";
import { refuseInputAsOutput } from "./output/own-files.js";
import { removeTokenStores } from "./plan/tokens.js";
import type { Progress } from "./progress.js";
import { embed, pendingWork } from "./run/embed.js";
import { finalizeAll, type RunSummary, summarize } from "./run/finalize.js";
import {
  allBatchesDone,
  isOpen,
  isPlanned,
  type ModelRun,
  needsServers,
  refresh,
} from "./run/model-run.js";
import { planWithServers } from "./run/plan.js";
import { type ServerPool, startPool, stopPool } from "./run/pool.js";
import { openCheckpoint, openMatrix, prepareOutputDir, runPaths } from "./run/prepare.js";
import { probePool } from "./run/probe.js";
import type { Membership } from "./run/resolve-loop.js";
import { copyReusedRows } from "./run/reuse.js";
import type { RunState } from "./run/state.js";
import type { EmbeddedServer } from "./server/embedded.js";
import { describeRange, shardCorpus, shardRange } from "./shard/shard.js";

export type { ModelSummary, RunSummary } from "./run/finalize.js";
export { CHECKPOINT_FILE } from "./run/prepare.js";

/** What the run needs from its caller: where to report, how to be stopped. */
export interface RunContext {
  readonly progress: Progress;
  readonly signal: AbortSignal;
  /** Called with the embedded servers once they run (and [] once stopped), so a signal handler can kill them. */
  readonly onEmbeddedServer?: (servers: readonly EmbeddedServer[]) => void;
  /** How `dns:///` names are resolved, at the start and every --resolve_interval (tests inject one). */
  readonly resolve?: Resolve;
}

/** The whole job: scan, plan, embed through the servers, checkpoint, finalize. */
export async function run(config: RunConfig, ctx: RunContext): Promise<RunSummary> {
  // Before anything in the folder is touched (--restart deletes): one run per folder.
  refuseInputAsOutput(config.inputFile, runPaths(config));
  return await withFolderLock(config.outputDir, (lock) => runLocked(config, ctx, lock));
}

async function runLocked(given: RunConfig, ctx: RunContext, lock: FolderLock): Promise<RunSummary> {
  const checkLock = () => lock.assertHeld();
  const { progress } = ctx;
  prepareOutputDir(given.outputDir);
  // Stores a killed run left: a resumed run sends texts.
  removeTokenStores(given.outputDir);
  const whole = await scanInput(given.inputFile, {
    maxTextChars: given.maxTextChars,
    skipInvalid: given.skipInvalid,
  });
  // A quantized model's calibration sample, from the whole input (every shard alike).
  const config = { ...given, models: withCalibration(given.models, whole) };
  const corpus = config.shard ? shardCorpus(whole, shardRange(config.shard, whole.rows)) : whole;
  if (corpus.shard) progress.note(describeRange(corpus.shard));
  if (corpus.skipped.length > 0) {
    progress.note(`skipped ${corpus.skipped.length} invalid lines (listed in the metadata)`);
  }
  const { ledger, models, existed } = openCheckpoint(config, corpus, progress);
  const startedAt = Date.now();
  const reader = new RowReader(corpus);
  const state: RunState = { config, ledger, reader, corpus, progress, signal: ctx.signal };
  let pool: ServerPool | null = null;
  let failure: unknown = null;
  const membership: Membership[] = [];
  try {
    const unfinished = models.filter((m) => !m.status.finalized);
    if (unfinished.length === 0) {
      progress.note(
        `nothing to do: every model's outputs in ${config.outputDir} are complete (use --restart to embed again)`,
      );
      return summarize(models, config, false);
    }
    // Matrices first: a lost one puts its batches back to work, which needs servers.
    for (const m of unfinished) if (isPlanned(m)) openMatrix(m, corpus.rows, ledger, progress);
    let planned = models.filter(isPlanned);
    if (models.some(needsServers)) {
      pool = await startPool(config, progress, ctx.signal, ctx.onEmbeddedServer, ctx.resolve);
      checkFidelity(pool.ready, config.models, config.quantizeMinCosine);
      planned = await planWithServers(state, models, pool.ready);
    }
    // Every model is planned by now: one that was not started the servers that planned it.
    const working = planned
      .filter((m) => !m.status.finalized)
      .map((m) => (isOpen(m) ? m : openMatrix(m, corpus.rows, ledger, progress)));

    const items = pendingWork(working, ledger);
    const resumed = noteResume(models, existed, progress);
    for (const m of working) progress.addModel(m.model.alias, m.status.rows, m.status.doneRows);
    copyReusedRows(working, ledger, config, progress);
    if (items.length > 0) {
      const reference = pool?.ready[0]?.models;
      if (!pool || !reference) throw new Error("batches left but no server was started");
      const settings = {
        tolerance: config.probeTolerance,
        timeoutMs: config.batchTimeoutMs,
        signal: ctx.signal,
      };
      const aliases = items.map((item) => item.alias);
      const probed = await probePool(pool, aliases, ledger, settings, progress);
      const servers = { ...probed, reference };
      const fleet = { resolve: ctx.resolve ?? systemResolve, changes: membership };
      await embed(state, working, items, servers, fleet);
    }
    await finalizeAll(state, working, (Date.now() - startedAt) / 1000, checkLock);
    return { ...summarize(models, config, resumed), membership };
  } catch (err) {
    failure = err;
    // A model whose batches are all done gets its outputs even when another stops the run;
    // a signal means stop now.
    if (!(err instanceof InterruptedError)) {
      await finalizeFinished(state, unfinishedOf(models), startedAt, checkLock);
    }
    throw err;
  } finally {
    for (const m of models) {
      m.matrix?.close();
      m.store?.remove();
    }
    reader.close();
    if (pool) await stopPool(pool, ctx.onEmbeddedServer);
    // Bookkeeping on a full disk fails too: it must not hide the error that stopped the run.
    closeLedger(ledger, (Date.now() - startedAt) / 1000, failure);
  }
}

function unfinishedOf(models: readonly ModelRun[]): ModelRun[] {
  return models.filter((m) => !m.status.finalized);
}

/** Finalizes the models that are complete and still open, after the run failed; never throws. */
async function finalizeFinished(
  state: RunState,
  models: readonly ModelRun[],
  startedAt: number,
  checkLock: () => void,
): Promise<void> {
  try {
    const finished = models.filter(isOpen).filter((m) => allBatchesDone(refresh(m, state.ledger)));
    if (finished.length === 0) return;
    await finalizeAll(state, finished, (Date.now() - startedAt) / 1000, checkLock);
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    state.progress.note(`could not write the outputs of the finished models: ${why}`);
  }
}

/** Says how far a resumed run had come; whether it is one. */
function noteResume(models: readonly ModelRun[], existed: boolean, progress: Progress): boolean {
  const sum = (f: (m: ModelRun) => number) => models.reduce((n, m) => n + f(m), 0);
  const done = sum((m) => m.status.doneBatches);
  const copied = sum((m) => m.status.doneCopies);
  if (!existed || done + copied === 0) return false;
  const total = sum((m) => m.status.batches);
  const copies = sum((m) => m.status.copies);
  const jobs = copies > 0 ? ` and ${copied} of ${copies} copy jobs` : "";
  progress.note(`resuming: ${done} of ${total} batches${jobs} done`);
  return true;
}
