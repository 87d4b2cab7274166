import { Committer } from "../checkpoint/committer.js";
import type { Ledger } from "../checkpoint/ledger.js";
import type { RunConfig } from "../config.js";
import { Dispatcher, type WorkItem } from "../dispatch/dispatcher.js";
import { batchPayload } from "../dispatch/payload.js";
import { openSession } from "../dispatch/servers.js";
import { EmbedStream } from "../dispatch/stream.js";
import type { RowReader } from "../input/rows.js";
import type { CorpusIndex } from "../input/scan.js";
import type { NpyMatrixFile } from "../output/npy.js";
import type { Progress } from "../progress.js";
import type { ModelRun } from "./model-run.js";
import type { ServerPool } from "./pool.js";

/** The pending batches of the models still to embed, in model order. */
export function pendingWork(runs: readonly ModelRun[], ledger: Ledger): WorkItem[] {
  return runs.flatMap((run) =>
    ledger.pendingBatches(run.model.alias).map((b) => ({
      alias: b.alias,
      batchNo: b.batchNo,
      rows: b.rows,
      priorAttempts: b.attempts,
    })),
  );
}

/**
 * Sends every pending batch through the servers and commits the answers.
 * What is written is kept, also after an error or a signal.
 */
export async function embed(
  runs: readonly ModelRun[],
  items: readonly WorkItem[],
  pool: ServerPool,
  ledger: Ledger,
  config: RunConfig,
  reader: RowReader,
  corpus: CorpusIndex,
  progress: Progress,
  signal: AbortSignal,
): Promise<void> {
  const byAlias = new Map(runs.map((r) => [r.model.alias, r]));
  const matrices = new Map<string, NpyMatrixFile>();
  for (const r of runs) if (r.matrix) matrices.set(r.model.alias, r.matrix);
  const committer = new Committer(
    ledger,
    matrices,
    config.checkpointInterval,
    config.testDiskFullAfterRows,
  );
  const manyServers = pool.ready.length + pool.waiting.length > 1;
  const [first] = pool.ready;
  if (!first) throw new Error("no server ready");
  const dispatcher = new Dispatcher(
    pool.ready,
    {
      maxWorkers: config.maxWorkers,
      batchTimeoutMs: config.batchTimeoutMs,
      serverTimeoutMs: config.serverTimeoutMs,
      maxAttempts: config.maxAttempts,
    },
    {
      payload: (item) => {
        const run = byAlias.get(item.alias);
        // A model's time runs from its first batch sent to its last batch written.
        if (run && !run.window) run.window = { first: Date.now(), last: Date.now() };
        return batchPayload(item.rows, run?.store ?? undefined, reader);
      },
      // The place for a per-batch check of the answer before it is written.
      accept: (item, embeddings, server, attempts) => {
        committer.accept({ ...item, attempts }, embeddings, server);
        const run = byAlias.get(item.alias);
        if (run) {
          run.rowsThisRun += item.rows.length;
          if (run.window) run.window.last = Date.now();
        }
        if (manyServers) progress.servers(dispatcher.serverShares());
        progress.advance(item.alias, item.rows.length);
      },
      describe: (item) => describeBatch(item, corpus),
      attemptFailed: (item, attempts) => ledger.recordAttempts(item.alias, item.batchNo, attempts),
      serverChanged: (target, state, detail) => {
        progress.note(`server ${target} is ${state}${detail ? `: ${detail}` : ""}`);
        progress.servers(dispatcher.serverShares());
      },
      // The place for a probe check when a server joins or rejoins.
      reopen: (session) =>
        openSession(
          session.connection,
          config.models,
          config.device,
          config.serverTimeoutMs,
          signal,
        ),
    },
    first.models,
    pool.waiting,
    { openStream: (session, onBroken) => new EmbedStream(session.connection, onBroken) },
  );
  let dispatchFailed = true;
  try {
    await dispatcher.run(items, signal);
    dispatchFailed = false;
  } finally {
    // A flush failure must not hide the error that stopped the run.
    await committer.flush().catch((err: unknown) => {
      if (!dispatchFailed) throw err;
    });
  }
}

export function describeBatch(item: WorkItem, corpus: Pick<CorpusIndex, "lineNumbers">): string {
  const lines = Array.from(item.rows, (r) => corpus.lineNumbers[r] ?? r + 1).sort((a, b) => a - b);
  const shown = lines.length > 8 ? `${lines.slice(0, 8).join(", ")}, …` : lines.join(", ");
  return `batch ${item.batchNo} of ${item.alias} (input lines ${shown})`;
}
