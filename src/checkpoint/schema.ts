import type Database from "better-sqlite3";

/** The layout of version 1 (embed-multi 0.1.0): never changed, only migrated from. */
const VERSION_1 = `
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
`;

/**
 * Step N takes a checkpoint from version N + 1 to N + 2. A new column or
 * table is one more line here (`ALTER TABLE models ADD COLUMN x TEXT NOT NULL
 * DEFAULT ''`), with a default that reads right for checkpoints made before.
 * Steps are never edited once released: new checkpoints run them too.
 */
const MIGRATIONS: readonly string[] = [
  // 2: pending batches of a model are found without a scan of a million-batch table.
  "CREATE INDEX batches_by_status ON batches (alias, status)",
  // 3: Matryoshka truncate_dim (0 = not cut; older runs never cut), and the batch size
  // and token budget each model's plan was cut with (after the servers' caps), which
  // the metadata reports; NULL where planned before they were recorded.
  `ALTER TABLE models ADD COLUMN truncate_dim INTEGER NOT NULL DEFAULT 0;
   ALTER TABLE models ADD COLUMN plan_batch_size INTEGER;
   ALTER TABLE models ADD COLUMN plan_max_batch_tokens INTEGER;`,
  // 4: probes and per-batch checks (issue 12): each model's probe vectors (float32, row-major,
  // one row per probe text of the set `probe_set`), stored by the first server that served
  // it; and how many of its batches came back failing the checks and were sent again.
  `CREATE TABLE probes (
     alias TEXT PRIMARY KEY REFERENCES models(alias),
     probe_set TEXT NOT NULL,
     dim INTEGER NOT NULL,
     vectors BLOB NOT NULL,
     server TEXT NOT NULL,
     stored_at TEXT NOT NULL
   );
   ALTER TABLE models ADD COLUMN retried_batches INTEGER NOT NULL DEFAULT 0;`,
  // 5: incremental runs (issue 20). A batch also writes its rows' duplicates: `followers`
  // holds uint32 pairs (row, index of its twin in `rows`), counted in row_count. Rows
  // whose model input an earlier run's output embedded are copied from it by `copies`
  // (uint32 target rows and the source's rows), done only once fsynced, like batches.
  `ALTER TABLE batches ADD COLUMN followers BLOB;
   CREATE TABLE reuse_sources (
     alias TEXT NOT NULL REFERENCES models(alias),
     source_no INTEGER NOT NULL,
     dir TEXT NOT NULL,
     npy TEXT NOT NULL,
     npy_sha256 TEXT NOT NULL,
     npy_bytes INTEGER NOT NULL,
     PRIMARY KEY (alias, source_no)
   );
   CREATE TABLE copies (
     alias TEXT NOT NULL REFERENCES models(alias),
     copy_no INTEGER NOT NULL,
     source_no INTEGER NOT NULL,
     rows BLOB NOT NULL,
     source_rows BLOB NOT NULL,
     row_count INTEGER NOT NULL,
     status TEXT NOT NULL CHECK (status IN ('pending', 'done')),
     completions INTEGER NOT NULL DEFAULT 0,
     PRIMARY KEY (alias, copy_no)
   );`,
  // 6: spot checks (issue 16): how many failed on a model, and how many of its batches were
  // redone because the server that answered them failed one.
  `ALTER TABLE models ADD COLUMN spot_failures INTEGER NOT NULL DEFAULT 0;
   ALTER TABLE models ADD COLUMN spot_redone_batches INTEGER NOT NULL DEFAULT 0;`,
  // 7: --quantize (issue 22): "none" or "int8"; every run before it embedded unquantized.
  "ALTER TABLE models ADD COLUMN quantize TEXT NOT NULL DEFAULT 'none'",
];

export const SCHEMA_VERSION = MIGRATIONS.length + 1;

/** A new checkpoint: version 1, then every step, so old and new files end up alike. */
export function createSchema(db: Database.Database, application: string): void {
  db.exec(VERSION_1);
  const put = db.prepare("INSERT INTO meta (key, value) VALUES (?, ?)");
  put.run("application", application);
  put.run("schema_version", "1");
  migrate(db, 1);
}

/** Runs the steps from `version` on; the caller holds a transaction. */
export function migrate(db: Database.Database, version: number): void {
  for (const step of MIGRATIONS.slice(version - 1)) db.exec(step);
  db.prepare("UPDATE meta SET value = ? WHERE key = 'schema_version'").run(String(SCHEMA_VERSION));
}
