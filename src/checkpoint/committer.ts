import type { Vectors } from "../backend/types.js";
import { describeFsError, ExitError } from "../errors.js";
import { asDiskFull } from "../output/diskfull.js";
import type { NpyMatrixFile } from "../output/npy.js";
import type { FinishedBatch, Ledger } from "./ledger.js";

export interface CommitBatch {
  readonly alias: string;
  readonly batchNo: number;
  readonly rows: Uint32Array;
  readonly attempts: number;
  /** Rows that take the vectors of rows of the batch: uint32 pairs (row, index in rows). */
  readonly followers?: Uint32Array;
}

/**
 * The durability order of the run: rows go into the .npy at their offsets;
 * every `interval` paragraphs the touched .npy files are fsynced, and only
 * then one transaction marks their batches done. A crash in between only
 * means those batches are done again.
 *
 * The fsync runs on the thread pool while results keep arriving: a commit
 * takes the batches written before it started, and rows written meanwhile
 * wait for the next one.
 */
export class Committer {
  private waiting: FinishedBatch[] = [];
  private dirty = new Set<NpyMatrixFile>();
  private rowsSinceCommit = 0;
  private inFlight: Promise<void> | null = null;
  private failure: Error | null = null;

  constructor(
    private readonly ledger: Ledger,
    private readonly matrices: ReadonlyMap<string, NpyMatrixFile>,
    private readonly interval: number,
    /** Test hook (EMBED_TEST_DISK_FULL_AFTER_ROWS): writes past this many rows fail with ENOSPC. */
    private readonly diskFullAfterRows = 0,
  ) {}

  private rowsWritten = 0;

  accept(batch: CommitBatch, embeddings: Vectors, server: string): void {
    if (this.failure) throw this.failure;
    const matrix = this.matrices.get(batch.alias);
    if (!matrix) throw new Error(`no output matrix for ${batch.alias}`);
    const expectedBytes = batch.rows.length * matrix.rowBytes;
    if (
      embeddings.rows !== batch.rows.length ||
      embeddings.dim !== matrix.dim ||
      embeddings.data.length !== expectedBytes
    ) {
      throw new ExitError(
        `server ${server} answered batch ${batch.batchNo} of ${batch.alias} with ${embeddings.rows}×${embeddings.dim} (${embeddings.data.length} bytes), expected ${batch.rows.length}×${matrix.dim}`,
      );
    }
    try {
      this.rowsWritten += batch.rows.length;
      if (this.diskFullAfterRows > 0 && this.rowsWritten > this.diskFullAfterRows) {
        throw Object.assign(new Error("ENOSPC: no space left on device, write"), {
          code: "ENOSPC",
        });
      }
      matrix.writeRows(batch.rows, embeddings.data);
      // Duplicates get the same bytes, durable with the batch (same fsync, same mark).
      if (batch.followers) writeFollowers(matrix, batch.followers, embeddings.data);
    } catch (err) {
      throw describeFsError(err, "write", matrix.path);
    }
    this.dirty.add(matrix);
    let truncated = 0;
    for (const t of embeddings.truncated) if (t) truncated++;
    let tokens = 0;
    for (const n of embeddings.tokenCounts) tokens += n;
    this.waiting.push({
      alias: batch.alias,
      batchNo: batch.batchNo,
      attempts: batch.attempts + 1,
      server,
      tokens,
      truncated,
    });
    this.rowsSinceCommit += batch.rows.length + (batch.followers?.length ?? 0) / 2;
    if (this.rowsSinceCommit >= this.interval && !this.inFlight) this.startCommit();
  }

  private startCommit(): void {
    const batches = this.waiting;
    const matrices = [...this.dirty];
    this.waiting = [];
    this.dirty = new Set();
    this.rowsSinceCommit = 0;
    this.inFlight = Promise.all(
      matrices.map((m) =>
        m.syncAsync().catch((err: unknown) => {
          throw describeFsError(err, "flush", m.path);
        }),
      ),
    )
      .then(() => this.ledger.markDone(batches))
      .catch((err: unknown) => {
        const shown = asDiskFull(err, this.ledger.path);
        this.failure = shown instanceof Error ? shown : new Error(String(shown));
      })
      .finally(() => {
        this.inFlight = null;
        if (!this.failure && this.rowsSinceCommit >= this.interval) this.startCommit();
      });
  }

  /** Waits for the commit under way, then commits everything written. Call at the end. */
  async flush(): Promise<void> {
    while (this.inFlight) await this.inFlight;
    if (!this.failure && (this.waiting.length > 0 || this.dirty.size > 0)) {
      this.startCommit();
      while (this.inFlight) await this.inFlight;
    }
    if (this.failure) throw this.failure;
  }
}

/** Writes each follower row the vector of its twin in the batch's answer. */
function writeFollowers(matrix: NpyMatrixFile, followers: Uint32Array, data: Uint8Array): void {
  const count = followers.length / 2;
  const rowBytes = matrix.rowBytes;
  const rows = new Uint32Array(count);
  const gathered = Buffer.allocUnsafe(count * rowBytes);
  for (let i = 0; i < count; i++) {
    rows[i] = followers[2 * i] ?? 0;
    const twin = followers[2 * i + 1] ?? 0;
    gathered.set(data.subarray(twin * rowBytes, (twin + 1) * rowBytes), i * rowBytes);
  }
  matrix.writeRows(rows, gathered);
}
