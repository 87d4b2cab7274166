import { lstatSync } from "node:fs";
import Database from "better-sqlite3";
import type { Matrix } from "../checks/vectors.js";
import { CheckpointError } from "../errors.js";
import type {
  CopyJob,
  LedgerModel,
  ModelTotals,
  PlanLimitsUsed,
  ReuseSourceRecord,
  RunRecord,
} from "../model/records.js";
import type { PlannedBatch } from "../plan/planner.js";
import { modelColumns, modelFromRow, modelToRow } from "./model-row.js";
import { createSchema, migrate, SCHEMA_VERSION } from "./schema.js";

export type { CopyJob, LedgerModel, ModelTotals, PlanLimitsUsed, ReuseSourceRecord, RunRecord };

const APPLICATION = "embed-multi";

/** What identifies the input: a changed file means different rows. */
export interface InputIdentity {
  readonly path: string;
  readonly size: number;
  readonly sha256: string;
  readonly rows: number;
}

export interface BatchRecord {
  readonly alias: string;
  readonly batchNo: number;
  readonly rows: Uint32Array;
  readonly paddedTokens: number;
  readonly realTokens: number;
  readonly attempts: number;
  /** Rows that take the vectors of rows of the batch: uint32 pairs (row, index in rows). */
  readonly followers?: Uint32Array;
}

/** A batch that a server answered and whose rows are written, to be marked done. */
export interface FinishedBatch {
  readonly alias: string;
  readonly batchNo: number;
  readonly attempts: number;
  readonly server: string;
  readonly tokens: number;
  readonly truncated: number;
}

/** One model's progress, read in one go: everything the run decides from. */
export interface ModelStatus extends ModelTotals {
  /** In the ledger at all (planned). */
  readonly planned: boolean;
  /** Its outputs were written and it was marked finalized. */
  readonly finalized: boolean;
}

type Row = Record<string, unknown>;

/** The statements of a connection, prepared once. */
function statements(db: Database.Database) {
  return {
    input: db.prepare(
      "SELECT input_path, input_size, input_sha256, input_rows FROM run WHERE id = 1",
    ),
    run: db.prepare("SELECT attempts, processing_seconds, created_at FROM run WHERE id = 1"),
    models: db.prepare("SELECT * FROM models ORDER BY position"),
    finalized: db.prepare("SELECT finalized_at FROM models WHERE alias = ?"),
    totals: db.prepare(
      `SELECT COUNT(*) AS batches,
         SUM(status = 'done') AS done_batches,
         SUM(row_count) AS rows,
         SUM(CASE WHEN status = 'done' THEN row_count ELSE 0 END) AS done_rows,
         SUM(COALESCE(tokens, 0)) AS tokens,
         SUM(COALESCE(truncated, 0)) AS truncated,
         SUM(real_tokens) AS real_tokens,
         SUM(padded_tokens) AS padded_tokens,
         SUM(COALESCE(length(followers), 0)) / 8 AS deduplicated
       FROM batches WHERE alias = ?`,
    ),
    copyTotals: db.prepare(
      `SELECT COUNT(*) AS copies, SUM(status = 'done') AS done_copies, SUM(row_count) AS rows,
         SUM(CASE WHEN status = 'done' THEN row_count ELSE 0 END) AS done_rows
       FROM copies WHERE alias = ?`,
    ),
    reusedFrom: db.prepare(
      `SELECT s.dir AS dir, SUM(c.row_count) AS rows FROM copies c
       JOIN reuse_sources s ON s.alias = c.alias AND s.source_no = c.source_no
       WHERE c.alias = ? GROUP BY c.source_no ORDER BY c.source_no`,
    ),
    sources: db.prepare(
      "SELECT source_no, dir, npy, npy_sha256, npy_bytes FROM reuse_sources WHERE alias = ? ORDER BY source_no",
    ),
    pendingCopies: db.prepare(
      `SELECT copy_no, source_no, rows, source_rows FROM copies
       WHERE alias = ? AND status = 'pending' ORDER BY copy_no`,
    ),
    doneCopies: db.prepare(
      `SELECT copy_no, source_no, rows, source_rows FROM copies
       WHERE alias = ? AND status = 'done' ORDER BY copy_no`,
    ),
    retried: db.prepare(
      "SELECT retried_batches, spot_failures, spot_redone_batches FROM models WHERE alias = ?",
    ),
    probes: db.prepare("SELECT probe_set, dim, vectors, server FROM probes WHERE alias = ?"),
    servers: db.prepare(
      "SELECT DISTINCT server FROM batches WHERE alias = ? AND server IS NOT NULL ORDER BY server",
    ),
    batches: db.prepare(
      `SELECT alias, batch_no, rows, padded_tokens, real_tokens, attempts, status, completions, followers
       FROM batches WHERE alias = ? ORDER BY batch_no`,
    ),
    allBatches: db.prepare(
      `SELECT alias, batch_no, rows, padded_tokens, real_tokens, attempts, status, completions, followers
       FROM batches ORDER BY alias, batch_no`,
    ),
    pending: db.prepare(
      `SELECT alias, batch_no, rows, padded_tokens, real_tokens, attempts, status, completions, followers
       FROM batches WHERE alias = ? AND status = 'pending' ORDER BY batch_no`,
    ),
  };
}

/** A model's probe vectors as the checkpoint holds them. */
export interface StoredProbes {
  /** PROBE_SET_ID of the texts they embed. */
  readonly probeSet: string;
  /** The server that computed them. */
  readonly server: string;
  readonly vectors: Matrix;
}

/** A batch as stored, with its status: what tests and tools read. */
export interface StoredBatch extends BatchRecord {
  readonly done: boolean;
  /** How many times it went from pending to done: 1 at the end, whatever crashed. */
  readonly completions: number;
}

/**
 * Reads a checkpoint. Opened read-only it is safe beside a running run (WAL);
 * the Ledger below is the same reader plus the writes.
 */
export class LedgerReader {
  protected readonly read: ReturnType<typeof statements>;

  protected constructor(
    protected readonly db: Database.Database,
    readonly path: string,
  ) {
    this.read = statements(db);
  }

  /** Opens an existing checkpoint read-only, refusing one it cannot read. */
  static openReadOnly(path: string): LedgerReader {
    return openChecked(
      path,
      () => new Database(path, { readonly: true, fileMustExist: true }),
      false,
      (db) => new LedgerReader(db, path),
    );
  }

  /** The input this checkpoint was made for, or null for a new checkpoint. */
  input(): InputIdentity | null {
    const row = this.read.input.get() as Row | undefined;
    if (!row) return null;
    return {
      path: String(row.input_path),
      size: Number(row.input_size),
      sha256: String(row.input_sha256),
      rows: Number(row.input_rows),
    };
  }

  run(): RunRecord {
    const row = this.read.run.get() as Row | undefined;
    if (!row) throw corrupt(this.path, "no run record");
    return {
      attempts: Number(row.attempts),
      processingSeconds: Number(row.processing_seconds),
      createdAt: String(row.created_at),
    };
  }

  models(): LedgerModel[] {
    return (this.read.models.all() as Row[]).map(modelFromRow);
  }

  pendingBatches(alias: string): BatchRecord[] {
    return (this.read.pending.all(alias) as Row[]).map(batchFromRow);
  }

  /** Every batch of a model, or of all models, with its status. */
  batches(alias?: string): StoredBatch[] {
    const rows = (
      alias === undefined ? this.read.allBatches.all() : this.read.batches.all(alias)
    ) as Row[];
    return rows.map(batchFromRow);
  }

  /** One model's progress in one snapshot. */
  status(alias: string): ModelStatus {
    const row = this.read.totals.get(alias) as Record<string, number | null>;
    const servers = this.read.servers.all(alias) as { server: string }[];
    const finalized = this.read.finalized.get(alias) as { finalized_at: string | null } | undefined;
    const retried = this.read.retried.get(alias) as
      | { retried_batches: number; spot_failures: number; spot_redone_batches: number }
      | undefined;
    const copies = this.read.copyTotals.get(alias) as Record<string, number | null>;
    const reusedFrom = this.read.reusedFrom.all(alias) as { dir: string; rows: number }[];
    return {
      planned: finalized !== undefined,
      finalized: Boolean(finalized?.finalized_at),
      batches: row.batches ?? 0,
      doneBatches: row.done_batches ?? 0,
      rows: (row.rows ?? 0) + (copies.rows ?? 0),
      doneRows: (row.done_rows ?? 0) + (copies.done_rows ?? 0),
      copies: copies.copies ?? 0,
      doneCopies: copies.done_copies ?? 0,
      reusedRows: copies.rows ?? 0,
      reusedFrom: reusedFrom.map((r) => ({ dir: String(r.dir), rows: Number(r.rows) })),
      deduplicatedRows: row.deduplicated ?? 0,
      tokens: row.tokens ?? 0,
      truncated: row.truncated ?? 0,
      realTokens: row.real_tokens ?? 0,
      paddedTokens: row.padded_tokens ?? 0,
      servers: servers.map((s) => s.server),
      retriedBatches: retried?.retried_batches ?? 0,
      spotFailures: retried?.spot_failures ?? 0,
      spotRedoneBatches: retried?.spot_redone_batches ?? 0,
    };
  }

  /** The earlier outputs a model's plan copies rows from. */
  reuseSources(alias: string): ReuseSourceRecord[] {
    return (this.read.sources.all(alias) as Row[]).map((r) => ({
      sourceNo: Number(r.source_no),
      dir: String(r.dir),
      npy: String(r.npy),
      npySha256: String(r.npy_sha256),
      npyBytes: Number(r.npy_bytes),
    }));
  }

  pendingCopies(alias: string): CopyJob[] {
    return (this.read.pendingCopies.all(alias) as Row[]).map(copyJobOf);
  }

  /** Copy jobs whose rows are durable: with the done batches, they cover the model's rows. */
  doneCopies(alias: string): CopyJob[] {
    return (this.read.doneCopies.all(alias) as Row[]).map(copyJobOf);
  }

  /** The probe vectors stored for a model, or null before its first server embedded them. */
  probes(alias: string): StoredProbes | null {
    const row = this.read.probes.get(alias) as Row | undefined;
    if (!row) return null;
    const blob = row.vectors as Buffer;
    const dim = Number(row.dim);
    // A damaged blob is the checkpoint's fault, not the server's it is compared with.
    const corrupt = (why: string) =>
      new CheckpointError(
        `the checkpoint ${this.path} holds corrupt probe vectors for model "${alias}" (${why}); run again with --restart to start over`,
      );
    if (!Number.isInteger(dim) || dim <= 0) throw corrupt(`dim ${String(row.dim)}`);
    if (!Buffer.isBuffer(blob) || blob.length % (4 * dim) !== 0) {
      throw corrupt(
        `${Buffer.isBuffer(blob) ? blob.length : "no"} bytes, not rows of ${dim} float32`,
      );
    }
    // Copied: the blob's bytes need not be 4-byte aligned.
    const data = new Float32Array(new Uint8Array(blob).buffer);
    if (!data.every(Number.isFinite)) throw corrupt("a value is NaN or infinite");
    return {
      probeSet: String(row.probe_set),
      server: String(row.server),
      vectors: { rows: dim > 0 ? data.length / dim : 0, dim, data },
    };
  }

  close(): void {
    this.db.close();
  }
}

function writeStatements(db: Database.Database) {
  return {
    startRun: db.prepare(
      `INSERT INTO run (id, input_path, input_size, input_sha256, input_rows, created_at, attempts)
       VALUES (1, ?, ?, ?, ?, ?, 1)
       ON CONFLICT(id) DO UPDATE SET attempts = attempts + 1, input_path = excluded.input_path`,
    ),
    addTime: db.prepare("UPDATE run SET processing_seconds = processing_seconds + ? WHERE id = 1"),
    // The identity's columns come from its one definition (src/model/identity.ts).
    insertModel: db.prepare(
      `INSERT INTO models (${modelColumns().join(", ")})
       VALUES (${modelColumns()
         .map((c) => `@${c}`)
         .join(", ")})`,
    ),
    insertBatch: db.prepare(
      `INSERT INTO batches (alias, batch_no, rows, row_count, padded_tokens, real_tokens, status,
         followers)
       VALUES (?, ?, ?, ?, ?, ?, 'pending', ?)`,
    ),
    insertSource: db.prepare(
      `INSERT INTO reuse_sources (alias, source_no, dir, npy, npy_sha256, npy_bytes)
       VALUES (?, ?, ?, ?, ?, ?)`,
    ),
    insertCopy: db.prepare(
      `INSERT INTO copies (alias, copy_no, source_no, rows, source_rows, row_count, status)
       VALUES (?, ?, ?, ?, ?, ?, 'pending')`,
    ),
    copyDone: db.prepare(
      `UPDATE copies SET status = 'done', completions = completions + 1
       WHERE alias = ? AND copy_no = ? AND status = 'pending'`,
    ),
    resetCopies: db.prepare(
      "UPDATE copies SET status = 'pending', completions = 0 WHERE alias = ?",
    ),
    markDone: db.prepare(
      `UPDATE batches SET status = 'done', attempts = ?, server = ?, tokens = ?, truncated = ?,
         finished_at = ?, completions = completions + 1
       WHERE alias = ? AND batch_no = ? AND status = 'pending'`,
    ),
    attempts: db.prepare(
      "UPDATE batches SET attempts = ? WHERE alias = ? AND batch_no = ? AND status = 'pending'",
    ),
    resetBatches: db.prepare(
      `UPDATE batches SET status = 'pending', server = NULL, tokens = NULL, truncated = NULL,
         finished_at = NULL, completions = 0 WHERE alias = ?`,
    ),
    storeProbes: db.prepare(
      `INSERT INTO probes (alias, probe_set, dim, vectors, server, stored_at)
       VALUES (?, ?, ?, ?, ?, ?)
       ON CONFLICT(alias) DO UPDATE SET probe_set = excluded.probe_set, dim = excluded.dim,
         vectors = excluded.vectors, server = excluded.server, stored_at = excluded.stored_at`,
    ),
    addRetried: db.prepare(
      "UPDATE models SET retried_batches = retried_batches + 1 WHERE alias = ?",
    ),
    addSpotFailure: db.prepare(
      "UPDATE models SET spot_failures = spot_failures + 1 WHERE alias = ?",
    ),
    addSpotRedone: db.prepare(
      "UPDATE models SET spot_redone_batches = spot_redone_batches + 1 WHERE alias = ?",
    ),
    unfinalize: db.prepare("UPDATE models SET finalized_at = NULL WHERE alias = ?"),
    finalize: db.prepare("UPDATE models SET finalized_at = ? WHERE alias = ?"),
  };
}

/**
 * The checkpoint: one SQLite file (WAL) in the output directory holding the
 * run's input identity, each model's settings, and every batch of the plan
 * with its status. A batch becomes "done" only in markDone(), which the run
 * calls after the batch's rows are fsynced into the .npy.
 */
export class Ledger extends LedgerReader {
  private readonly write: ReturnType<typeof writeStatements>;

  private constructor(db: Database.Database, path: string) {
    super(db, path);
    this.write = writeStatements(db);
  }

  /**
   * Opens the checkpoint, or creates an empty one; a checkpoint of an older
   * schema is migrated. Refuses files that are not ours or from a newer version.
   */
  static open(path: string): Ledger {
    // Before SQLite opens it: opening for write switches a link's target to WAL mode.
    refuseLink(path);
    return openChecked(
      path,
      () => {
        const db = new Database(path);
        db.pragma("journal_mode = WAL");
        db.pragma("synchronous = FULL");
        db.pragma("busy_timeout = 5000");
        return db;
      },
      true,
      (db) => new Ledger(db, path),
    );
  }

  startRun(input: InputIdentity): void {
    this.write.startRun.run(
      input.path,
      input.size,
      input.sha256,
      input.rows,
      new Date().toISOString(),
    );
  }

  /** A free-form setting of the checkpoint (e.g. the shard it holds), or null. */
  metaValue(key: string): string | null {
    const row = this.db.prepare("SELECT value FROM meta WHERE key = ?").get(key) as
      | { value: string }
      | undefined;
    return row ? row.value : null;
  }

  setMetaValue(key: string, value: string): void {
    this.db
      .prepare(
        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
      )
      .run(key, value);
  }

  addProcessingTime(seconds: number): void {
    this.write.addTime.run(seconds);
  }

  /**
   * Stores a model and its plan, all pending, in one transaction: the batches
   * for the servers, and the rows copied from earlier outputs.
   */
  addModel(
    model: LedgerModel,
    batches: readonly PlannedBatch[],
    reuse: { sources: readonly ReuseSourceRecord[]; copies: readonly CopyJob[] } = {
      sources: [],
      copies: [],
    },
  ): void {
    this.db.transaction(() => {
      this.write.insertModel.run(modelToRow(model));
      for (const b of batches) {
        const followers = b.followers && b.followers.length > 0 ? b.followers : null;
        this.write.insertBatch.run(
          model.alias,
          b.batchNo,
          rowsToBlob(b.rows),
          b.rows.length + (followers ? followers.length / 2 : 0),
          b.paddedTokens,
          b.realTokens,
          followers ? rowsToBlob(followers) : null,
        );
      }
      for (const s of reuse.sources) {
        this.write.insertSource.run(model.alias, s.sourceNo, s.dir, s.npy, s.npySha256, s.npyBytes);
      }
      for (const c of reuse.copies) {
        this.write.insertCopy.run(
          model.alias,
          c.copyNo,
          c.sourceNo,
          rowsToBlob(c.rows),
          rowsToBlob(c.sourceRows),
          c.rows.length,
        );
      }
    })();
  }

  /** Marks copy jobs done, in one transaction: call only after their rows are durable. */
  markCopiesDone(alias: string, copyNos: readonly number[]): void {
    if (copyNos.length === 0) return;
    this.db.transaction(() => {
      for (const copyNo of copyNos) this.write.copyDone.run(alias, copyNo);
    })();
  }

  /** Marks batches done, in one transaction: call only after their rows are durable. */
  markDone(batches: readonly FinishedBatch[]): void {
    if (batches.length === 0) return;
    const now = new Date().toISOString();
    this.db.transaction(() => {
      for (const b of batches) {
        this.write.markDone.run(
          b.attempts,
          b.server,
          b.tokens,
          b.truncated,
          now,
          b.alias,
          b.batchNo,
        );
      }
    })();
  }

  /** Records failed attempts of batches not done, so the bound on retries survives a restart. */
  recordAttempts(alias: string, batchNo: number, attempts: number): void {
    this.write.attempts.run(attempts, alias, batchNo);
  }

  /** Stores (or replaces) the probe vectors of a model, computed by `server`. */
  storeProbes(alias: string, probeSet: string, vectors: Matrix, server: string): void {
    const { data } = vectors;
    const blob = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    this.write.storeProbes.run(
      alias,
      probeSet,
      vectors.dim,
      blob,
      server,
      new Date().toISOString(),
    );
  }

  /** Counts a batch of the model whose vectors failed the checks and that is sent again. */
  addRetried(alias: string): void {
    this.write.addRetried.run(alias);
  }

  /** A spot check failed on the model (issue 16). */
  addSpotFailure(alias: string): void {
    this.write.addSpotFailure.run(alias);
  }

  /** One of its batches is redone because its server failed a spot check. */
  addSpotRedone(alias: string): void {
    this.write.addSpotRedone.run(alias);
  }

  /** Puts every batch of a model back to pending (its .npy was lost). */
  resetModel(alias: string): void {
    this.db.transaction(() => {
      this.write.resetBatches.run(alias);
      this.write.resetCopies.run(alias);
      this.write.unfinalize.run(alias);
    })();
  }

  /** Its outputs are to be written again from its complete matrix (its batches stay done). */
  markUnfinalized(alias: string): void {
    this.write.unfinalize.run(alias);
  }

  markFinalized(alias: string): void {
    this.write.finalize.run(new Date().toISOString(), alias);
  }
}

/**
 * Creates the schema of an empty file, migrates an older one (when writable),
 * and refuses anything else with one line saying what to do.
 */
/**
 * Opens the checkpoint with `connect`, checks its schema version and wraps
 * it with `wrap`; any failure is a CheckpointError and leaves no handle open
 * once the file is open.
 */
function refuseLink(path: string): void {
  let link = false;
  try {
    link = lstatSync(path).isSymbolicLink();
  } catch {
    // Missing: SQLite creates it.
  }
  if (link) {
    throw new CheckpointError(
      `checkpoint ${path} is a symbolic link; remove it (embed-multi never writes through one)`,
    );
  }
}

function openChecked<T>(
  path: string,
  connect: () => Database.Database,
  writable: boolean,
  wrap: (db: Database.Database) => T,
): T {
  let db: Database.Database;
  try {
    db = connect();
  } catch (err) {
    throw corrupt(path, err);
  }
  try {
    checkVersion(db, path, writable);
    return wrap(db);
  } catch (err) {
    db.close();
    throw err instanceof CheckpointError ? err : corrupt(path, err);
  }
}

function checkVersion(db: Database.Database, path: string, writable: boolean): void {
  const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all() as {
    name: string;
  }[];
  if (tables.length === 0) {
    if (!writable) throw corrupt(path, "empty file");
    // In one transaction: a run killed here leaves an empty file, not half a schema.
    db.transaction(() => createSchema(db, APPLICATION))();
    return;
  }
  const names = new Set(tables.map((t) => t.name));
  if (!names.has("meta")) throw foreign(path);
  const meta = new Map(
    (db.prepare("SELECT key, value FROM meta").all() as { key: string; value: string }[]).map(
      (r) => [r.key, r.value],
    ),
  );
  if (meta.get("application") !== APPLICATION) throw foreign(path);
  for (const table of ["run", "models", "batches"]) {
    if (!names.has(table)) throw corrupt(path, `table ${table} is missing`);
  }
  const stored = meta.get("schema_version");
  const version = Number(stored);
  if (!Number.isInteger(version) || version < 1) {
    throw corrupt(
      path,
      `its schema version is ${JSON.stringify(stored ?? null)}, not a version number`,
    );
  }
  if (version > SCHEMA_VERSION) {
    throw new CheckpointError(
      `checkpoint ${path} has schema version ${meta.get("schema_version")}, newer than this embed-multi reads (${SCHEMA_VERSION}); use the embed-multi that wrote it, or --restart or another --output_dir`,
    );
  }
  if (version < SCHEMA_VERSION) {
    if (!writable) {
      throw new CheckpointError(
        `checkpoint ${path} has schema version ${version}; run embed-multi on it once to migrate it to ${SCHEMA_VERSION}`,
      );
    }
    db.transaction(() => migrate(db, version))();
  }
}

function batchFromRow(r: Row): StoredBatch {
  const followers = r.followers ? blobToRows(r.followers as Buffer) : undefined;
  return {
    ...(followers ? { followers } : {}),
    alias: String(r.alias),
    batchNo: Number(r.batch_no),
    rows: blobToRows(r.rows as Buffer),
    paddedTokens: Number(r.padded_tokens),
    realTokens: Number(r.real_tokens),
    attempts: Number(r.attempts),
    done: r.status === "done",
    completions: Number(r.completions),
  };
}

function rowsToBlob(rows: Uint32Array): Buffer {
  return Buffer.from(rows.buffer, rows.byteOffset, rows.byteLength);
}

function copyJobOf(r: Row): CopyJob {
  return {
    copyNo: Number(r.copy_no),
    sourceNo: Number(r.source_no),
    rows: blobToRows(r.rows as Buffer),
    sourceRows: blobToRows(r.source_rows as Buffer),
  };
}

function blobToRows(blob: Buffer): Uint32Array {
  // Copy: the blob's bytes need not be 4-byte aligned.
  const copy = new Uint8Array(blob.length);
  copy.set(blob);
  return new Uint32Array(copy.buffer, 0, blob.length / 4);
}

function corrupt(path: string, err: unknown): CheckpointError {
  const detail = err instanceof Error ? err.message : String(err);
  return new CheckpointError(
    `checkpoint ${path} is unreadable (${detail}); move it away or use --restart to start over`,
  );
}

function foreign(path: string): CheckpointError {
  return new CheckpointError(
    `${path} is not an embed-multi checkpoint; move it away or use another --output_dir`,
  );
}
