import { backendForAddress } from "../backend/select.js";
import { type Resolve, systemResolve } from "../backend/targets.js";
import type { Backend, LoadedModel, Vectors } from "../backend/types.js";
import { Committer } from "../checkpoint/committer.js";
import type { Ledger } from "../checkpoint/ledger.js";
import { checkBatch } from "../checks/batch.js";
import type { RunConfig } from "../config.js";
import { Dispatcher, ServerRefusedError, type WorkItem } from "../dispatch/dispatcher.js";
import { batchPayload } from "../dispatch/payload.js";
import { notYetSession, openSession } from "../dispatch/servers.js";
import type { CorpusIndex } from "../input/scan.js";
import { RUN_METRICS } from "../metrics/run-metrics.js";
import type { NpyMatrixFile } from "../output/npy.js";
import type { Progress } from "../progress.js";
import type { ModelRun, OpenModel } from "./model-run.js";
import { connectionOptions } from "./pool.js";
import type { ProbedPool, ProbeGuard } from "./probe.js";
import { dnsTargets, type Membership, ResolveLoop } from "./resolve-loop.js";
import { SpotSource } from "./spots.js";

/** How the run follows `dns:///` names while it embeds, and what changed. */
export interface Fleet {
  readonly resolve: Resolve;
  /** Filled with every server that joined or left. */
  readonly changes: Membership[];
}

/**
 * Re-resolves the run's `dns:///` targets every --resolve_interval: a new
 * address becomes a server (opened, health-checked, probed by the
 * dispatcher's reopen hook, then given work); a vanished one is drained.
 */
function followNames(
  config: RunConfig,
  pool: EmbedServers,
  fleet: Fleet,
  progress: Progress,
  dispatcher: Dispatcher,
  joined: Backend[],
): ResolveLoop {
  const fixed = new Set(config.servers.filter((t) => !t.startsWith("dns:///")));
  const initial = [...pool.ready, ...pool.waiting]
    .map((s) => s.target)
    .filter((t) => !fixed.has(t));
  const loop = new ResolveLoop(
    dnsTargets(config.servers),
    initial,
    fleet.resolve,
    config.resolveIntervalMs,
    {
      join: (address, authority) => {
        const backend = backendForAddress(address, authority, connectionOptions(config));
        joined.push(backend);
        dispatcher.addServer(notYetSession(backend));
      },
      leave: (address) => dispatcher.removeServer(address),
      note: (line) => progress.note(line),
    },
    fleet.changes,
  );
  loop.start();
  return loop;
}

import type { RunState } from "./state.js";

/** The pending batches of the models still to embed, in model order. */
export function pendingWork(runs: readonly ModelRun[], ledger: Ledger): WorkItem[] {
  return runs.flatMap((run) =>
    ledger.pendingBatches(run.model.alias).map((b) => ({
      alias: b.alias,
      batchNo: b.batchNo,
      rows: b.rows,
      priorAttempts: b.attempts,
      paddedTokens: b.paddedTokens,
      ...(b.followers ? { followers: b.followers } : {}),
    })),
  );
}

/** The servers that may embed, after the probe; `reference` is the models every one must hold. */
export interface EmbedServers extends Pick<ProbedPool, "ready" | "waiting"> {
  readonly reference: ReadonlyMap<string, LoadedModel>;
  readonly guard: ProbeGuard;
}

/**
 * Sends every pending batch through the servers and commits the answers that
 * pass the per-batch checks. What is written is kept, also after an error or
 * a signal.
 */
export async function embed(
  state: RunState,
  runs: readonly OpenModel[],
  items: readonly WorkItem[],
  pool: EmbedServers,
  fleet: Fleet = { resolve: systemResolve, changes: [] },
): Promise<void> {
  const { ledger, config, reader, corpus, progress, signal } = state;
  const byAlias = new Map(runs.map((r) => [r.model.alias, r]));
  const matrices = new Map<string, NpyMatrixFile>(runs.map((r) => [r.model.alias, r.matrix]));
  const committer = new Committer(ledger, matrices, config.checkpointInterval);
  const manyServers = pool.ready.length + pool.waiting.length > 1;
  // The probe texts' token counts (and ids, for batches of ids) from the first server's tokenizer.
  const counting = pool.ready[0];
  const spots = await SpotSource.open(
    {
      rate: config.spotCheck,
      tolerance: config.probeTolerance,
      timeoutMs: config.batchTimeoutMs,
      maxHeldRows: config.checkpointInterval,
    },
    byAlias,
    ledger,
    reader,
    corpus,
    (alias) => {
      const counter = counting?.backend.tokenCounter(signal);
      const modelKey = counting?.models.get(alias)?.modelKey;
      return counter && modelKey ? { counter, modelKey } : null;
    },
  );
  // --verbose: one line per batch answered and per failed attempt (never texts or the token).
  const debug = config.verbose ? (line: string) => progress.note(`debug: ${line}`) : null;
  const sentAt = new Map<WorkItem, number>();
  const answeredAt = new Map<WorkItem, number>();
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
        if (debug) sentAt.set(item, Date.now());
        return batchPayload(item.rows, run?.store ?? undefined, reader);
      },
      // Before anything of the batch is written or marked done.
      check: (item, embeddings) => {
        if (debug) answeredAt.set(item, Date.now());
        const run = byAlias.get(item.alias);
        return run ? batchProblem(item, embeddings, run.stored.normalize, corpus) : null;
      },
      retried: (item, server, problem) => {
        ledger.addRetried(item.alias);
        RUN_METRICS.retries.inc({ model: item.alias, reason: "check" });
        progress.note(
          `${describeBatch(item, corpus)}: the vectors from server ${server} failed the checks (${problem}); sending it again`,
        );
      },
      accept: (item, embeddings, server, attempts) => {
        committer.accept({ ...item, attempts }, embeddings, server);
        if (debug) {
          let tokens = 0;
          for (const n of embeddings.tokenCounts) tokens += n;
          const sent = sentAt.get(item) ?? Date.now();
          const seconds = ((answeredAt.get(item) ?? Date.now()) - sent) / 1000;
          sentAt.delete(item);
          answeredAt.delete(item);
          debug(
            `${describeBatch(item, corpus)}: server ${server}, ${item.rows.length} rows, ${tokens} tokens, ${seconds.toFixed(3)} s, attempt ${attempts}`,
          );
        }
        const run = byAlias.get(item.alias);
        if (run) {
          run.rowsThisRun += item.rows.length;
          if (run.window) run.window.last = Date.now();
        }
        if (manyServers) progress.servers(dispatcher.serverShares());
        progress.advance(item.alias, item.rows.length + (item.followers?.length ?? 0) / 2);
      },
      describe: (item, row) =>
        row === undefined ? describeBatch(item, corpus) : describeRow(item, row, corpus),
      attemptFailed: (item, attempts) => {
        debug?.(
          `${describeBatch(item, corpus)}: attempt ${attempts} of --max_attempts ${config.maxAttempts} failed; back in the queue`,
        );
        RUN_METRICS.retries.inc({ model: item.alias, reason: "error" });
        ledger.recordAttempts(item.alias, item.batchNo, attempts);
      },
      spots,
      serverChanged: (target, state, detail) => {
        debug?.(`server ${target}: now ${state}${detail ? ` (${detail})` : ""}`);
        // A probe refusal is a whole line of its own, naming the server.
        const refused = detail.startsWith(`server ${target} `);
        progress.note(
          refused ? detail : `server ${target} is ${state}${detail ? `: ${detail}` : ""}`,
        );
        progress.servers(dispatcher.serverShares());
      },
      // A server that joins or comes back embeds the probes before it gets work.
      reopen: async (session) => {
        const fresh = await openSession(
          session.backend,
          config.models,
          config.device,
          config.serverTimeoutMs,
          signal,
        );
        await pool.guard.check(fresh).catch((err: unknown) => {
          RUN_METRICS.probeFailures.inc({
            server: session.target,
            outcome: err instanceof ServerRefusedError ? "refused" : "retry",
          });
          throw err;
        });
        return fresh;
      },
    },
    pool.reference,
    pool.waiting,
  );
  RUN_METRICS.watchServers(() => dispatcher.serverShares());
  const joined: Backend[] = [];
  const loop = followNames(config, pool, fleet, progress, dispatcher, joined);
  let dispatchFailed = true;
  try {
    await dispatcher.run(items, signal);
    dispatchFailed = false;
  } finally {
    await loop.stop();
    for (const backend of joined) backend.close();
    // A flush failure must not hide the error that stopped the run.
    await committer.flush().catch((err: unknown) => {
      if (!dispatchFailed) throw err;
    });
  }
}

/** What is wrong with a batch's vectors, naming the input line of the row; null when nothing. */
export function batchProblem(
  item: WorkItem,
  embeddings: Vectors,
  normalizes: boolean,
  corpus: Pick<CorpusIndex, "lineNumbers">,
): string | null {
  const { rows, dim } = embeddings;
  const bytes = embeddings.data;
  // Copied when the message's buffer is not 4-byte aligned.
  const data =
    bytes.byteOffset % 4 === 0
      ? new Float32Array(bytes.buffer, bytes.byteOffset, Math.floor(bytes.byteLength / 4))
      : new Float32Array(new Uint8Array(bytes).buffer);
  const problem = checkBatch(data, rows, dim, normalizes);
  if (!problem) return null;
  const row = item.rows[problem.row];
  const line = row === undefined ? undefined : (corpus.lineNumbers[row] ?? row + 1);
  // checkBatch counts rows within the batch; the user knows lines.
  const what = problem.message.replace(/^row \d+: /, "");
  return line === undefined ? problem.message : `input line ${line}: ${what}`;
}

/** One row of a batch, by its input line. */
export function describeRow(
  item: WorkItem,
  row: number,
  corpus: Pick<CorpusIndex, "lineNumbers">,
): string {
  const r = item.rows[row];
  const line = r === undefined ? "?" : (corpus.lineNumbers[r] ?? r + 1);
  return `input line ${line} (batch ${item.batchNo} of ${item.alias})`;
}

export function describeBatch(item: WorkItem, corpus: Pick<CorpusIndex, "lineNumbers">): string {
  const lines = Array.from(item.rows, (r) => corpus.lineNumbers[r] ?? r + 1).sort((a, b) => a - b);
  const shown = lines.length > 8 ? `${lines.slice(0, 8).join(", ")}, …` : lines.join(", ");
  return `batch ${item.batchNo} of ${item.alias} (input lines ${shown})`;
}
