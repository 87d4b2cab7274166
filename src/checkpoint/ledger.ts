import Database from "better-sqlite3";
import { CheckpointError } from "../errors.js";
import type { PlannedBatch } from "../plan/planner.js";

const SCHEMA_VERSION = "1";
const APPLICATION = "embed-multi";

/** What identifies the input: a changed file means different rows. */
export interface InputIdentity {
  readonly path: string;
  readonly size: number;
  readonly sha256: string;
  readonly rows: number;
}

/** A model as the ledger knows it: every setting that changes the numbers. */
export interface LedgerModel {
  readonly alias: string;
  readonly position: number;
  readonly modelId: string;
  /** The revision asked for ("" = any). */
  readonly requestedRevision: string;
  /** The revision the servers resolved and loaded. */
  readonly revision: string;
  readonly dim: number;
  readonly prefix: string;
  readonly normalize: boolean;
  /** max_length and dtype as asked for (0 / "" = the model's own)... */
  readonly requestedMaxLength: number;
  readonly requestedDtype: string;
  /** ...and as the servers resolved them. */
  readonly maxLength: number;
  readonly dtype: string;
  readonly pooling: string;
  readonly fileStem: string;
}

export interface BatchRecord {
  readonly alias: string;
  readonly batchNo: number;
  readonly rows: Uint32Array;
  readonly paddedTokens: number;
  readonly realTokens: number;
  readonly attempts: number;
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

export interface ModelTotals {
  readonly batches: number;
  readonly doneBatches: number;
  readonly rows: number;
  readonly doneRows: number;
  readonly tokens: number;
  readonly truncated: number;
  readonly realTokens: number;
  readonly paddedTokens: number;
  readonly servers: string[];
}

export interface RunRecord {
  readonly attempts: number;
  readonly processingSeconds: number;
  readonly createdAt: string;
}

/**
 * The checkpoint: one SQLite file (WAL) in the output directory holding the
 * run's input identity, each model's settings, and every batch of the plan
 * with its status. A batch becomes "done" only in markDone(), which the run
 * calls after the batch's rows are fsynced into the .npy.
 */
export class Ledger {
  private constructor(
    private readonly db: Database.Database,
    readonly path: string,
  ) {}

  /** Opens the checkpoint, or creates an empty one. Refuses files that are not ours. */
  static open(path: string): Ledger {
    let db: Database.Database;
    try {
      db = new Database(path);
      db.pragma("journal_mode = WAL");
      db.pragma("synchronous = FULL");
      db.pragma("busy_timeout = 5000");
    } catch (err) {
      throw corrupt(path, err);
    }
    const ledger = new Ledger(db, path);
    try {
      ledger.initialise();
    } catch (err) {
      db.close();
      throw err instanceof CheckpointError ? err : corrupt(path, err);
    }
    return ledger;
  }

  private initialise(): void {
    const tables = this.db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all() as {
      name: string;
    }[];
    if (tables.length === 0) {
      this.createSchema();
      return;
    }
    const names = new Set(tables.map((t) => t.name));
    if (!names.has("meta")) throw foreign(this.path);
    const meta = this.metaValues();
    if (meta.get("application") !== APPLICATION) throw foreign(this.path);
    if (meta.get("schema_version") !== SCHEMA_VERSION) {
      throw new CheckpointError(
        `checkpoint ${this.path} was written by another version of embed-multi (schema ${meta.get("schema_version")}); use --restart or another --output_dir`,
      );
    }
    for (const table of ["run", "models", "batches"]) {
      if (!names.has(table)) throw corrupt(this.path, `table ${table} is missing`);
    }
  }

  /** In one transaction: a run killed here leaves an empty file, not half a schema. */
  private createSchema(): void {
    this.db.transaction(() => this.createTables())();
  }

  private createTables(): void {
    this.db.exec(`
      CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
      CREATE TABLE run (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        input_path TEXT NOT NULL,
        input_size INTEGER NOT NULL,
        input_sha256 TEXT NOT NULL,
        input_rows INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        processing_seconds REAL NOT NULL DEFAULT 0
      );
      CREATE TABLE models (
        alias TEXT PRIMARY KEY,
        position INTEGER NOT NULL,
        model_id TEXT NOT NULL,
        requested_revision TEXT NOT NULL,
        revision TEXT NOT NULL,
        dim INTEGER NOT NULL,
        prefix TEXT NOT NULL,
        normalize INTEGER NOT NULL,
        requested_max_length INTEGER NOT NULL,
        requested_dtype TEXT NOT NULL,
        max_length INTEGER NOT NULL,
        dtype TEXT NOT NULL,
        pooling TEXT NOT NULL,
        file_stem TEXT NOT NULL,
        finalized_at TEXT
      );
      CREATE TABLE batches (
        alias TEXT NOT NULL REFERENCES models(alias),
        batch_no INTEGER NOT NULL,
        rows BLOB NOT NULL,
        row_count INTEGER NOT NULL,
        padded_tokens INTEGER NOT NULL,
        real_tokens INTEGER NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'done')),
        attempts INTEGER NOT NULL DEFAULT 0,
        -- How many times the batch went from pending to done: 1 at the end, whatever crashed.
        completions INTEGER NOT NULL DEFAULT 0,
        server TEXT,
        tokens INTEGER,
        truncated INTEGER,
        finished_at TEXT,
        PRIMARY KEY (alias, batch_no)
      );
    `);
    const put = this.db.prepare("INSERT INTO meta (key, value) VALUES (?, ?)");
    put.run("application", APPLICATION);
    put.run("schema_version", SCHEMA_VERSION);
  }

  private metaValues(): Map<string, string> {
    const rows = this.db.prepare("SELECT key, value FROM meta").all() as {
      key: string;
      value: string;
    }[];
    return new Map(rows.map((r) => [r.key, r.value]));
  }

  /** The input this checkpoint was made for, or null for a new checkpoint. */
  input(): InputIdentity | null {
    const row = this.db
      .prepare("SELECT input_path, input_size, input_sha256, input_rows FROM run WHERE id = 1")
      .get() as
      | { input_path: string; input_size: number; input_sha256: string; input_rows: number }
      | undefined;
    if (!row) return null;
    return {
      path: row.input_path,
      size: row.input_size,
      sha256: row.input_sha256,
      rows: row.input_rows,
    };
  }

  run(): RunRecord {
    const row = this.db
      .prepare("SELECT attempts, processing_seconds, created_at FROM run WHERE id = 1")
      .get() as { attempts: number; processing_seconds: number; created_at: string } | undefined;
    if (!row) throw corrupt(this.path, "no run record");
    return {
      attempts: row.attempts,
      processingSeconds: row.processing_seconds,
      createdAt: row.created_at,
    };
  }

  startRun(input: InputIdentity): void {
    this.db
      .prepare(
        `INSERT INTO run (id, input_path, input_size, input_sha256, input_rows, created_at, attempts)
         VALUES (1, ?, ?, ?, ?, ?, 1)
         ON CONFLICT(id) DO UPDATE SET attempts = attempts + 1, input_path = excluded.input_path`,
      )
      .run(input.path, input.size, input.sha256, input.rows, new Date().toISOString());
  }

  addProcessingTime(seconds: number): void {
    this.db
      .prepare("UPDATE run SET processing_seconds = processing_seconds + ? WHERE id = 1")
      .run(seconds);
  }

  models(): LedgerModel[] {
    const rows = this.db.prepare("SELECT * FROM models ORDER BY position").all() as Record<
      string,
      unknown
    >[];
    return rows.map((r) => ({
      alias: String(r.alias),
      position: Number(r.position),
      modelId: String(r.model_id),
      requestedRevision: String(r.requested_revision),
      revision: String(r.revision),
      dim: Number(r.dim),
      prefix: String(r.prefix),
      normalize: Number(r.normalize) === 1,
      requestedMaxLength: Number(r.requested_max_length),
      requestedDtype: String(r.requested_dtype),
      maxLength: Number(r.max_length),
      dtype: String(r.dtype),
      pooling: String(r.pooling),
      fileStem: String(r.file_stem),
    }));
  }

  /** Stores a model and its batch plan, all pending, in one transaction. */
  addModel(model: LedgerModel, batches: readonly PlannedBatch[]): void {
    const insertModel = this.db.prepare(
      `INSERT INTO models (alias, position, model_id, requested_revision, revision, dim, prefix,
         normalize, requested_max_length, requested_dtype, max_length, dtype, pooling, file_stem)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    const insertBatch = this.db.prepare(
      `INSERT INTO batches (alias, batch_no, rows, row_count, padded_tokens, real_tokens, status)
       VALUES (?, ?, ?, ?, ?, ?, 'pending')`,
    );
    this.db.transaction(() => {
      insertModel.run(
        model.alias,
        model.position,
        model.modelId,
        model.requestedRevision,
        model.revision,
        model.dim,
        model.prefix,
        model.normalize ? 1 : 0,
        model.requestedMaxLength,
        model.requestedDtype,
        model.maxLength,
        model.dtype,
        model.pooling,
        model.fileStem,
      );
      for (const b of batches) {
        const blob = Buffer.from(b.rows.buffer, b.rows.byteOffset, b.rows.byteLength);
        insertBatch.run(model.alias, b.batchNo, blob, b.rows.length, b.paddedTokens, b.realTokens);
      }
    })();
  }

  pendingBatches(alias: string): BatchRecord[] {
    const rows = this.db
      .prepare(
        `SELECT batch_no, rows, padded_tokens, real_tokens, attempts FROM batches
         WHERE alias = ? AND status = 'pending' ORDER BY batch_no`,
      )
      .all(alias) as {
      batch_no: number;
      rows: Buffer;
      padded_tokens: number;
      real_tokens: number;
      attempts: number;
    }[];
    return rows.map((r) => ({
      alias,
      batchNo: r.batch_no,
      rows: blobToRows(r.rows),
      paddedTokens: r.padded_tokens,
      realTokens: r.real_tokens,
      attempts: r.attempts,
    }));
  }

  /** Marks batches done, in one transaction: call only after their rows are durable. */
  markDone(batches: readonly FinishedBatch[]): void {
    if (batches.length === 0) return;
    const update = this.db.prepare(
      `UPDATE batches SET status = 'done', attempts = ?, server = ?, tokens = ?, truncated = ?,
         finished_at = ?, completions = completions + 1
       WHERE alias = ? AND batch_no = ? AND status = 'pending'`,
    );
    const now = new Date().toISOString();
    this.db.transaction(() => {
      for (const b of batches) {
        update.run(b.attempts, b.server, b.tokens, b.truncated, now, b.alias, b.batchNo);
      }
    })();
  }

  /** Records failed attempts of batches not done, so the bound on retries survives a restart. */
  recordAttempts(alias: string, batchNo: number, attempts: number): void {
    this.db
      .prepare(
        "UPDATE batches SET attempts = ? WHERE alias = ? AND batch_no = ? AND status = 'pending'",
      )
      .run(attempts, alias, batchNo);
  }

  /** Puts every batch of a model back to pending (its .npy was lost). */
  resetModel(alias: string): void {
    this.db.transaction(() => {
      this.db
        .prepare(
          `UPDATE batches SET status = 'pending', server = NULL, tokens = NULL, truncated = NULL,
             finished_at = NULL, completions = 0 WHERE alias = ?`,
        )
        .run(alias);
      this.db.prepare("UPDATE models SET finalized_at = NULL WHERE alias = ?").run(alias);
    })();
  }

  totals(alias: string): ModelTotals {
    const row = this.db
      .prepare(
        `SELECT COUNT(*) AS batches,
           SUM(status = 'done') AS done_batches,
           SUM(row_count) AS rows,
           SUM(CASE WHEN status = 'done' THEN row_count ELSE 0 END) AS done_rows,
           SUM(COALESCE(tokens, 0)) AS tokens,
           SUM(COALESCE(truncated, 0)) AS truncated,
           SUM(real_tokens) AS real_tokens,
           SUM(padded_tokens) AS padded_tokens
         FROM batches WHERE alias = ?`,
      )
      .get(alias) as Record<string, number | null>;
    const servers = this.db
      .prepare(
        "SELECT DISTINCT server FROM batches WHERE alias = ? AND server IS NOT NULL ORDER BY server",
      )
      .all(alias) as { server: string }[];
    return {
      batches: row.batches ?? 0,
      doneBatches: row.done_batches ?? 0,
      rows: row.rows ?? 0,
      doneRows: row.done_rows ?? 0,
      tokens: row.tokens ?? 0,
      truncated: row.truncated ?? 0,
      realTokens: row.real_tokens ?? 0,
      paddedTokens: row.padded_tokens ?? 0,
      servers: servers.map((s) => s.server),
    };
  }

  isFinalized(alias: string): boolean {
    const row = this.db.prepare("SELECT finalized_at FROM models WHERE alias = ?").get(alias) as
      | { finalized_at: string | null }
      | undefined;
    return Boolean(row?.finalized_at);
  }

  markFinalized(alias: string): void {
    this.db
      .prepare("UPDATE models SET finalized_at = ? WHERE alias = ?")
      .run(new Date().toISOString(), alias);
  }

  close(): void {
    this.db.close();
  }
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
