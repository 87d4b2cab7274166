import type { Ledger } from "../checkpoint/ledger.js";
import { describeFsError } from "../errors.js";
import type { NpyMatrixFile } from "../output/npy.js";
import type { Progress } from "../progress.js";
import { SourceMatrix } from "./sources.js";

/** What the copy phase needs of a model of the run. */
export interface CopyTarget {
  readonly alias: string;
  readonly dim: number;
  readonly matrix: NpyMatrixFile;
}

/**
 * The committing hook for reused rows: each pending copy job reads its rows
 * from the source's float32 matrix (bytes as they are, never re-derived),
 * writes them at their offsets, and after an fsync every `interval` rows one
 * transaction marks the jobs done: durable exactly like a batch. A source
 * checked again (sha256) when opened and watched while read: changed or
 * gone, the run stops with one line.
 */
export function copyReused(
  targets: readonly CopyTarget[],
  ledger: Ledger,
  interval: number,
  progress: Progress,
): void {
  for (const target of targets) {
    const pending = ledger.pendingCopies(target.alias);
    if (pending.length === 0) continue;
    const records = new Map(ledger.reuseSources(target.alias).map((s) => [s.sourceNo, s]));
    const opened = new Map<number, SourceMatrix>();
    let done: number[] = [];
    let rows = 0;
    const commit = () => {
      try {
        target.matrix.sync();
      } catch (err) {
        throw describeFsError(err, "flush", target.matrix.path);
      }
      for (const source of opened.values()) source.checkUnchanged();
      ledger.markCopiesDone(target.alias, done);
      progress.advance(target.alias, rows);
      done = [];
      rows = 0;
    };
    try {
      for (const job of pending) {
        let source = opened.get(job.sourceNo);
        if (!source) {
          const record = records.get(job.sourceNo);
          if (!record) throw new Error(`copy ${job.copyNo} of ${target.alias} has no source`);
          source = SourceMatrix.open(record.npy, target.dim, record.npySha256, record.npyBytes);
          opened.set(job.sourceNo, source);
        }
        const data = source.readRows(job.sourceRows);
        try {
          target.matrix.writeRows(job.rows, data);
        } catch (err) {
          throw describeFsError(err, "write", target.matrix.path);
        }
        done.push(job.copyNo);
        rows += job.rows.length;
        if (rows >= interval) commit();
      }
      if (done.length > 0) commit();
    } finally {
      for (const source of opened.values()) source.close();
    }
  }
}
