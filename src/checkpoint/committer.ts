import { describeFsError, ExitError } from "../errors.js";
import type { Embeddings } from "../gen/embedmulti/v1/inference.js";
import type { NpyMatrixFile } from "../output/npy.js";
import type { FinishedBatch, Ledger } from "./ledger.js";

export interface CommitBatch {
  readonly alias: string;
  readonly batchNo: number;
  readonly rows: Uint32Array;
  readonly attempts: number;
}

/**
 * The durability order of the run: rows go into the .npy at their offsets;
 * every `interval` paragraphs the touched .npy files are fsynced, and only
 * then one transaction marks their batches done. A crash in between only
 * means those batches are done again.
 */
export class Committer {
  private waiting: FinishedBatch[] = [];
  private dirty = new Set<NpyMatrixFile>();
  private rowsSinceCommit = 0;

  constructor(
    private readonly ledger: Ledger,
    private readonly matrices: ReadonlyMap<string, NpyMatrixFile>,
    private readonly interval: number,
    private readonly onCommit: (batches: readonly FinishedBatch[]) => void = () => {},
  ) {}

  accept(batch: CommitBatch, embeddings: Embeddings, server: string): void {
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
      matrix.writeRows(batch.rows, embeddings.data);
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
    this.rowsSinceCommit += batch.rows.length;
    if (this.rowsSinceCommit >= this.interval) this.commit();
  }

  /** fsync, then mark done. Safe to call at any time, also with nothing waiting. */
  commit(): void {
    for (const matrix of this.dirty) {
      try {
        matrix.sync();
      } catch (err) {
        throw describeFsError(err, "flush", matrix.path);
      }
    }
    this.dirty.clear();
    const batches = this.waiting;
    this.waiting = [];
    this.rowsSinceCommit = 0;
    this.ledger.markDone(batches);
    this.onCommit(batches);
  }
}
