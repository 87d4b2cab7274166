import type { RunConfig } from "./config.js";
import { RowReader } from "./input/rows.js";
import { scanInput } from "./input/scan.js";
import { closeLedger } from "./output/diskfull.js";
import { withFolderLock } from "./output/lock.js";
import { removeTokenStores } from "./plan/tokens.js";
import type { Progress } from "./progress.js";
import { embed, pendingWork } from "./run/embed.js";
import { finalizeAll, type RunSummary, summarize } from "./run/finalize.js";
import { type ModelRun, needsServers } from "./run/model-run.js";
import { planWithServers } from "./run/plan.js";
import { type ServerPool, startPool, stopPool } from "./run/pool.js";
import { openCheckpoint, openMatrix, prepareOutputDir } from "./run/prepare.js";
import { probePool } from "./run/probe.js";
import type { RunState } from "./run/state.js";
import type { EmbeddedServer } from "./server/embedded.js";

export type { ModelSummary, RunSummary } from "./run/finalize.js";
export { CHECKPOINT_FILE } from "./run/prepare.js";

/** What the run needs from its caller: where to report, how to be stopped. */
export interface RunContext {
  readonly progress: Progress;
  readonly signal: AbortSignal;
  /** Called with the embedded server once it runs, so a signal handler can kill it. */
  readonly onEmbeddedServer?: (server: EmbeddedServer | null) => void;
}

/** The whole job: scan, plan, embed through the servers, checkpoint, finalize. */
export function run(config: RunConfig, ctx: RunContext): Promise<RunSummary> {
  // Before anything in the folder is touched (--restart deletes): one run per folder.
  return withFolderLock(config.outputDir, () => runLocked(config, ctx));
}

async function runLocked(config: RunConfig, ctx: RunContext): Promise<RunSummary> {
  const { progress } = ctx;
  prepareOutputDir(config.outputDir);
  // Stores a killed run left: a resumed run sends texts.
  removeTokenStores(config.outputDir);
  const corpus = await scanInput(config.inputFile, {
    maxTextChars: config.maxTextChars,
    skipInvalid: config.skipInvalid,
  });
  if (corpus.skipped.length > 0) {
    progress.note(`skipped ${corpus.skipped.length} invalid lines (listed in the metadata)`);
  }
  const { ledger, models, existed } = openCheckpoint(config, corpus, progress);
  const startedAt = Date.now();
  const reader = new RowReader(corpus);
  const state: RunState = { config, ledger, reader, corpus, progress, signal: ctx.signal };
  let pool: ServerPool | null = null;
  let failure: unknown = null;
  try {
    const unfinished = models.filter((m) => !m.status.finalized);
    if (unfinished.length === 0) {
      progress.note(
        `nothing to do: every model's outputs in ${config.outputDir} are complete (use --restart to embed again)`,
      );
      return summarize(models, config, false);
    }
    // Matrices first: a lost one puts its batches back to work, which needs servers.
    for (const m of unfinished) if (m.stored) openMatrix(m, corpus.rows, ledger, progress);
    if (models.some((m) => needsServers(m.status))) {
      pool = await startPool(config, progress, ctx.signal, ctx.onEmbeddedServer);
      const { ready } = pool;
      await planWithServers(state, models, ready);
    }
    for (const m of unfinished) if (!m.matrix) openMatrix(m, corpus.rows, ledger, progress);

    const items = pendingWork(unfinished, ledger);
    const resumed = noteResume(models, existed, progress);
    for (const m of unfinished) progress.addModel(m.model.alias, m.status.rows, m.status.doneRows);
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
      await embed(state, unfinished, items, servers);
    }
    await finalizeAll(state, unfinished, (Date.now() - startedAt) / 1000);
    return summarize(models, config, resumed);
  } catch (err) {
    failure = err;
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

/** Says how far a resumed run had come; whether it is one. */
function noteResume(models: readonly ModelRun[], existed: boolean, progress: Progress): boolean {
  const done = models.reduce((n, m) => n + m.status.doneBatches, 0);
  if (!existed || done === 0) return false;
  const total = models.reduce((n, m) => n + m.status.batches, 0);
  progress.note(`resuming: ${done} of ${total} batches done`);
  return true;
}
