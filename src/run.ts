import { existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Committer } from "./checkpoint/committer.js";
import { checkSameInput, checkSameModels, checkSameWeights } from "./checkpoint/compat.js";
import { Ledger, type LedgerModel } from "./checkpoint/ledger.js";
import type { RunConfig, RunModel } from "./config.js";
import { ServerConnection } from "./dispatch/client.js";
import { Dispatcher, type WorkItem } from "./dispatch/dispatcher.js";
import { batchPayload } from "./dispatch/payload.js";
import {
  checkAgreement,
  openSession,
  type ServerSession,
  ServerUnreachableError,
} from "./dispatch/servers.js";
import { resolveTargets } from "./dispatch/targets.js";
import { describeFsError } from "./errors.js";
import type { InfoResponse, ModelInfo } from "./gen/embedmulti/v1/inference.js";
import { RowReader } from "./input/rows.js";
import { type CorpusIndex, scanInput } from "./input/scan.js";
import { checkServerTextLimit } from "./input/server-limit.js";
import { partialPath } from "./output/atomic.js";
import { finalizeModel, isComplete, type OutputPaths, outputPaths } from "./output/finalize.js";
import { buildMetadata } from "./output/metadata.js";
import { NpyMatrixFile } from "./output/npy.js";
import { measureTokens } from "./plan/measure.js";
import { paddingEfficiency, planBatches } from "./plan/planner.js";
import { removeTokenStores, TokenStore, tokenStorePath } from "./plan/tokens.js";
import type { Progress } from "./progress.js";
import { EmbeddedServer } from "./server/embedded.js";

export const CHECKPOINT_FILE = "embed-multi.checkpoint.sqlite";
/** Room for the protobuf framing around a batch's embeddings. */
const MESSAGE_HEADROOM = 0.9;
const DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

export interface ModelSummary {
  readonly alias: string;
  readonly rows: number;
  /** Rows embedded by this invocation (0 when everything was already done). */
  readonly rowsThisRun: number;
  readonly seconds: number;
  readonly truncated: number;
  readonly paddingEfficiency: number;
  readonly outputs: string[];
}

export interface RunSummary {
  readonly models: ModelSummary[];
  readonly resumed: boolean;
  readonly nothingToDo: boolean;
}

/** What the run needs from its caller: where to report, how to be stopped. */
export interface RunContext {
  readonly progress: Progress;
  readonly signal: AbortSignal;
  /** Called with the embedded server once it runs, so a signal handler can kill it. */
  readonly onEmbeddedServer?: (server: EmbeddedServer | null) => void;
}

/** The whole job: scan, plan, embed through the servers, checkpoint, finalize. */
export async function run(config: RunConfig, ctx: RunContext): Promise<RunSummary> {
  const { progress } = ctx;
  prepareOutputDir(config.outputDir);
  removeTokenStores(config.outputDir);
  const corpus = await scanInput(config.inputFile, {
    maxTextChars: config.maxTextChars,
    skipInvalid: config.skipInvalid,
  });
  if (corpus.skipped.length > 0) {
    progress.note(`skipped ${corpus.skipped.length} invalid lines (listed in the metadata)`);
  }

  const checkpointPath = join(config.outputDir, CHECKPOINT_FILE);
  if (config.restart) removeRunFiles(config, checkpointPath);
  const ledger = Ledger.open(checkpointPath);
  const startedAt = Date.now();
  let embedded: EmbeddedServer | null = null;
  const sessions: ServerSession[] = [];
  const waiting: ServerSession[] = [];
  const matrices = new Map<string, NpyMatrixFile>();
  const reader = new RowReader(corpus);
  const stores = new Map<string, TokenStore>();
  try {
    const stored = ledger.input();
    if (stored) {
      checkSameInput(stored, corpus);
      checkSameModels(ledger.models(), config.models);
    }
    ledger.startRun({
      path: corpus.file,
      size: corpus.size,
      sha256: corpus.sha256,
      rows: corpus.rows,
    });

    const paths = new Map(config.models.map((m) => [m.alias, outputPaths(config.outputDir, m)]));
    resetLostOutputs(ledger, config, paths, progress);
    const known = new Map(ledger.models().map((m) => [m.alias, m]));
    const needsServers = config.models.some(
      (m) =>
        !known.has(m.alias) || ledger.totals(m.alias).doneBatches < ledger.totals(m.alias).batches,
    );
    const unfinished = config.models.filter((m) => !ledger.isFinalized(m.alias));
    if (unfinished.length === 0) {
      progress.note(
        `nothing to do: every model's outputs in ${config.outputDir} are complete (use --restart to embed again)`,
      );
      return summarize(config, ledger, paths, new Map(), new Map(), false);
    }

    if (needsServers) {
      if (config.servers.length === 0) {
        progress.note("starting the embedded inference server");
        embedded = await EmbeddedServer.start(config.embedded, config.device);
        ctx.onEmbeddedServer?.(embedded);
      }
      const targets = embedded ? [embedded.target] : config.servers;
      const pool = await connectAll(targets, config, progress);
      sessions.push(...pool.ready);
      waiting.push(...pool.waiting);
      checkAgreement(sessions, config.models);
      checkServerTextLimit(
        corpus,
        reader,
        sessions.map((s) => s.info.limits?.maxTextChars ?? 0),
      );
      await planNewModels(config, ledger, known, sessions, reader, corpus, progress, stores);
    }

    const models = new Map(ledger.models().map((m) => [m.alias, m]));
    for (const model of config.models) {
      const stored = models.get(model.alias) as LedgerModel;
      if (sessions[0]) checkSameWeights(stored, sessions[0].models.get(model.alias) as ModelInfo);
      if (ledger.isFinalized(model.alias)) continue;
      matrices.set(
        model.alias,
        openMatrix(paths.get(model.alias) as OutputPaths, stored, corpus.rows, ledger, progress),
      );
    }

    const items = pendingWork(ledger, config.models);
    const totalBatches = config.models.reduce((n, m) => n + ledger.totals(m.alias).batches, 0);
    const doneBatches = config.models.reduce((n, m) => n + ledger.totals(m.alias).doneBatches, 0);
    const resumed = Boolean(stored) && doneBatches > 0;
    if (resumed) progress.note(`resuming: ${doneBatches} of ${totalBatches} batches done`);
    const rowsThisRun = new Map<string, number>();
    const activity = new Map<string, { first: number; last: number }>();
    for (const model of config.models) {
      if (ledger.isFinalized(model.alias)) continue;
      const t = ledger.totals(model.alias);
      progress.addModel(model.alias, t.rows, t.doneRows);
    }

    if (items.length > 0) {
      const committer = new Committer(ledger, matrices, config.checkpointInterval);
      const manyServers = sessions.length + waiting.length > 1;
      const dispatcher = new Dispatcher(
        sessions,
        {
          maxWorkers: config.maxWorkers,
          batchTimeoutMs: config.batchTimeoutMs,
          serverTimeoutMs: config.serverTimeoutMs,
          maxAttempts: config.maxAttempts,
        },
        {
          payload: (item) => {
            // A model's time runs from its first batch sent to its last batch written.
            if (!activity.has(item.alias)) {
              activity.set(item.alias, { first: Date.now(), last: Date.now() });
            }
            return batchPayload(item.rows, stores.get(item.alias), reader);
          },
          accept: (item, embeddings, server) => {
            committer.accept(item, embeddings, server);
            rowsThisRun.set(item.alias, (rowsThisRun.get(item.alias) ?? 0) + item.rows.length);
            const now = Date.now();
            const window = activity.get(item.alias);
            if (window) window.last = now;
            if (manyServers) progress.servers(dispatcher.serverShares());
            progress.advance(item.alias, item.rows.length);
          },
          describe: (item) => describeBatch(item, corpus),
          attemptFailed: (item) => ledger.recordAttempts(item.alias, item.batchNo, item.attempts),
          serverChanged: (target, state, detail) => {
            progress.note(`server ${target} is ${state}${detail ? `: ${detail}` : ""}`);
            progress.servers(dispatcher.serverShares());
          },
          reopen: (session) =>
            openSession(session.connection, config.models, config.device, config.serverTimeoutMs),
        },
        (sessions[0] as ServerSession).models,
        waiting,
      );
      let dispatchFailed = true;
      try {
        await dispatcher.run(items, ctx.signal);
        dispatchFailed = false;
      } finally {
        // Also after an error or a signal: what is written is kept. A flush
        // failure must not hide the error that stopped the run.
        await committer.flush().catch((err: unknown) => {
          if (!dispatchFailed) throw err;
        });
      }
    }

    for (const model of config.models) {
      if (ledger.isFinalized(model.alias)) continue;
      const totals = ledger.totals(model.alias);
      if (totals.doneBatches !== totals.batches) {
        throw new Error(`${model.alias} has ${totals.batches - totals.doneBatches} batches left`);
      }
      const modelPaths = paths.get(model.alias) as OutputPaths;
      if (config.outputFormat !== "npy") progress.note(`writing ${modelPaths.jsonl}`);
      const previous = ledger.run();
      const run = {
        ...previous,
        processingSeconds: previous.processingSeconds + secondsSince(startedAt),
      };
      finalizeModel(
        modelPaths,
        config.outputFormat,
        matrices.get(model.alias) as NpyMatrixFile,
        reader,
        model.alias,
        (outputs, jsonlSeconds) =>
          buildMetadata({
            config,
            model,
            ledgerModel: models.get(model.alias) as LedgerModel,
            totals,
            run,
            corpus,
            outputs,
            jsonlSeconds,
          }),
      );
      ledger.markFinalized(model.alias);
    }
    const seconds = new Map([...activity].map(([alias, a]) => [alias, (a.last - a.first) / 1000]));
    return summarize(config, ledger, paths, rowsThisRun, seconds, resumed);
  } finally {
    for (const matrix of matrices.values()) matrix.close();
    for (const store of stores.values()) store.remove();
    reader.close();
    for (const session of [...sessions, ...waiting]) session.connection.close();
    if (embedded) {
      await embedded.stop();
      ctx.onEmbeddedServer?.(null);
    }
    try {
      ledger.addProcessingTime(secondsSince(startedAt));
    } finally {
      ledger.close();
    }
  }
}

function secondsSince(start: number): number {
  return (Date.now() - start) / 1000;
}

function prepareOutputDir(dir: string): void {
  try {
    mkdirSync(dir, { recursive: true });
  } catch (err) {
    throw describeFsError(err, "create output directory", dir);
  }
  // Find out now, not after an hour of GPU time, that nothing can be written here.
  const probe = join(dir, `.embed-multi-write-test-${process.pid}`);
  try {
    writeFileSync(probe, "");
    rmSync(probe);
  } catch (err) {
    throw describeFsError(err, "write to output directory", dir);
  }
}

/** --restart: the checkpoint and this run's outputs go, finished or not. */
function removeRunFiles(config: RunConfig, checkpointPath: string): void {
  for (const suffix of ["", "-wal", "-shm"]) rmSync(`${checkpointPath}${suffix}`, { force: true });
  for (const model of config.models) {
    const p = outputPaths(config.outputDir, model);
    for (const file of [p.npy, p.jsonl, p.metadata]) {
      rmSync(file, { force: true });
      rmSync(partialPath(file), { force: true });
    }
  }
}

/** A model marked finished whose files were deleted since is embedded again. */
function resetLostOutputs(
  ledger: Ledger,
  config: RunConfig,
  paths: Map<string, OutputPaths>,
  progress: Progress,
): void {
  for (const model of config.models) {
    const p = paths.get(model.alias) as OutputPaths;
    if (ledger.isFinalized(model.alias) && !isComplete(p, config.outputFormat)) {
      progress.note(`outputs of ${model.alias} are missing: embedding it again`);
      ledger.resetModel(model.alias);
    }
  }
}

/** Servers ready to work, and servers not reachable yet that may join later. */
interface ServerPool {
  readonly ready: ServerSession[];
  readonly waiting: ServerSession[];
}

/** Once one server is ready, how long the others get before the run starts without them. */
const STRAGGLER_GRACE_MS = 5000;

type Opened = { ok: true; session: ServerSession } | { ok: false; error: unknown };

/**
 * Opens every server. The run starts once all are open, or once one is and
 * the others had a few more seconds: a server not reachable by then joins
 * when it comes up (the run says so). A server that answers no (unknown
 * model, bad token) stops the run, as do disagreeing servers.
 */
async function connectAll(
  targets: readonly string[],
  config: RunConfig,
  progress: Progress,
): Promise<ServerPool> {
  const options = {
    tls: config.tls,
    authToken: config.authToken,
    maxMessageBytes: 256 * 1024 * 1024,
  };
  const resolved = await resolveTargets(targets);
  const connections = resolved.map((t) => new ServerConnection(t.address, options, t.authority));
  const outcomes: (Opened | undefined)[] = connections.map(() => undefined);
  let anyReady: () => void = () => {};
  const firstReady = new Promise<void>((resolve) => {
    anyReady = resolve;
  });
  const all = Promise.all(
    connections.map((c, i) =>
      openSession(c, config.models, config.device, config.serverTimeoutMs).then(
        (session) => {
          outcomes[i] = { ok: true, session };
          anyReady();
        },
        (error: unknown) => {
          outcomes[i] = { ok: false, error };
        },
      ),
    ),
  );
  // unref: a pending grace timer must not keep a finished run alive.
  const grace = firstReady.then(
    () => new Promise<void>((resolve) => setTimeout(resolve, STRAGGLER_GRACE_MS).unref()),
  );
  await Promise.race([all, grace]);

  const ready: ServerSession[] = [];
  const waiting: ServerSession[] = [];
  let refusal: unknown = null;
  outcomes.forEach((outcome, i) => {
    const connection = connections[i] as ServerConnection;
    if (outcome?.ok) ready.push(outcome.session);
    else if (outcome && !(outcome.error instanceof ServerUnreachableError))
      refusal ??= outcome.error;
    else
      waiting.push({ target: connection.target, connection, info: emptyInfo(), models: new Map() });
  });
  if (refusal || ready.length === 0) {
    for (const c of connections) c.close();
    throw refusal ?? (outcomes.find((o) => o && !o.ok) as { error: unknown }).error;
  }
  for (const w of waiting) {
    progress.note(`server ${w.target} is not reachable yet; going on without it until it comes up`);
  }
  return { ready, waiting };
}

function emptyInfo(): InfoResponse {
  return { serverVersion: "", device: "", dtype: "", engine: "", models: [], limits: undefined };
}

/** Plans the batches of models new to the checkpoint and stores them, all pending. */
async function planNewModels(
  config: RunConfig,
  ledger: Ledger,
  known: ReadonlyMap<string, LedgerModel>,
  sessions: readonly ServerSession[],
  reader: RowReader,
  corpus: CorpusIndex,
  progress: Progress,
  stores: Map<string, TokenStore>,
): Promise<void> {
  const first = sessions[0] as ServerSession;
  const limits = first.info.limits;
  for (const [position, model] of config.models.entries()) {
    if (known.has(model.alias)) continue;
    const info = first.models.get(model.alias) as ModelInfo;
    const maxMessage = Number(limits?.maxMessageBytes || DEFAULT_MAX_MESSAGE_BYTES);
    const rowsPerMessage = Math.max(
      1,
      Math.floor((maxMessage * MESSAGE_HEADROOM) / (info.dim * 4)),
    );
    const batchSize = Math.min(
      config.batchSize,
      limits?.maxBatchSize || config.batchSize,
      rowsPerMessage,
    );
    const serverTokens = limits?.maxBatchTokens || 0;
    const maxBatchTokens =
      config.maxBatchTokens > 0 && serverTokens > 0
        ? Math.min(config.maxBatchTokens, serverTokens)
        : config.maxBatchTokens || serverTokens;
    // The ids come along, so that the batches of this run carry them (the run
    // ends by removing the store; the finally above also does on failure).
    const store = TokenStore.available
      ? TokenStore.create(tokenStorePath(config.outputDir, model.fileStem), corpus.rows)
      : null;
    if (store) stores.set(model.alias, store);
    const measured = await measureTokens(
      first.connection,
      info.modelKey,
      info.maxLength,
      reader,
      corpus.textChars,
      { maxMessageBytes: maxMessage, store, prefix: model.prefix },
    );
    if (store && !measured.stored) {
      store.remove();
      stores.delete(model.alias);
    }
    const plan = planBatches(measured.lengths, {
      batchSize,
      maxBatchTokens,
      // A resumed run sends texts: each batch's lines (longer than their texts) must fit.
      maxBatchBytes: Math.floor(maxMessage * MESSAGE_HEADROOM),
      rowBytes: corpus.byteLengths,
    });
    progress.note(
      `${model.alias}: ${plan.batches.length} batches of up to ${batchSize} paragraphs, padding efficiency ${paddingEfficiency(plan).toFixed(3)}${measured.counted ? "" : " (lengths estimated)"}`,
    );
    ledger.addModel(ledgerModel(model, info, position), plan.batches);
  }
}

function ledgerModel(model: RunModel, info: ModelInfo, position: number): LedgerModel {
  return {
    alias: model.alias,
    position,
    modelId: model.modelId,
    requestedRevision: model.revision,
    revision: info.revision,
    dim: info.dim,
    prefix: model.prefix,
    normalize: model.normalize,
    requestedMaxLength: model.maxLength,
    requestedDtype: model.dtype,
    maxLength: info.maxLength,
    dtype: info.dtype,
    pooling: info.pooling,
    fileStem: model.fileStem,
  };
}

/**
 * The working .npy of a model: reopened when resuming, created otherwise.
 * If it was lost while batches were marked done, those batches are redone.
 */
function openMatrix(
  paths: OutputPaths,
  model: LedgerModel,
  rows: number,
  ledger: Ledger,
  progress: Progress,
): NpyMatrixFile {
  const fail = (err: unknown) => describeFsError(err, "create", paths.workingNpy);
  // A crash during finalizing can leave the matrix under its final name.
  if (!existsSync(paths.workingNpy) && existsSync(paths.npy)) {
    try {
      renameSync(paths.npy, paths.workingNpy);
    } catch (err) {
      throw fail(err);
    }
  }
  const reopened = NpyMatrixFile.reopen(paths.workingNpy, rows, model.dim);
  if (reopened) return reopened;
  if (ledger.totals(model.alias).doneBatches > 0) {
    progress.note(`${paths.workingNpy} is missing or damaged: embedding ${model.alias} again`);
    ledger.resetModel(model.alias);
  }
  try {
    return NpyMatrixFile.create(paths.workingNpy, rows, model.dim);
  } catch (err) {
    throw fail(err);
  }
}

function pendingWork(ledger: Ledger, models: readonly RunModel[]): WorkItem[] {
  const items: WorkItem[] = [];
  for (const model of models) {
    if (ledger.isFinalized(model.alias)) continue;
    for (const b of ledger.pendingBatches(model.alias)) {
      items.push({ alias: b.alias, batchNo: b.batchNo, rows: b.rows, attempts: b.attempts });
    }
  }
  return items;
}

function describeBatch(item: WorkItem, corpus: CorpusIndex): string {
  const lines = Array.from(item.rows, (r) => corpus.lineNumbers[r] ?? r + 1).sort((a, b) => a - b);
  const shown = lines.length > 8 ? `${lines.slice(0, 8).join(", ")}, …` : lines.join(", ");
  return `batch ${item.batchNo} of ${item.alias} (input lines ${shown})`;
}

function summarize(
  config: RunConfig,
  ledger: Ledger,
  paths: Map<string, OutputPaths>,
  rowsThisRun: ReadonlyMap<string, number>,
  seconds: ReadonlyMap<string, number>,
  resumed: boolean,
): RunSummary {
  const models = config.models.map((m) => {
    const t = ledger.totals(m.alias);
    const p = paths.get(m.alias) as OutputPaths;
    return {
      alias: m.alias,
      rows: t.rows,
      rowsThisRun: rowsThisRun.get(m.alias) ?? 0,
      seconds: seconds.get(m.alias) ?? 0,
      truncated: t.truncated,
      paddingEfficiency: paddingEfficiency(t),
      outputs: isComplete(p, config.outputFormat) ? [p.metadata] : [],
    };
  });
  const nothingToDo = models.every((m) => m.rowsThisRun === 0) && !resumed;
  return { models, resumed, nothingToDo };
}
