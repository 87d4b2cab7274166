import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import type { RowsJob } from "./jsonl-format.js";

/** At most this many formatting threads: past it, writing the file is the limit. */
const MAX_THREADS = 4;

/** Formatting threads for an export of `rows` rows: none for one chunk or one core (a thread costs its start-up). */
export function formatThreadCount(rows: number, rowsPerChunk: number): number {
  const cores = availableParallelism();
  if (rows <= rowsPerChunk || cores < 2) return 0;
  return Math.min(cores, MAX_THREADS);
}

interface Waiting {
  resolve(out: Uint8Array): void;
  reject(err: unknown): void;
}

/**
 * Worker threads that turn chunks of rows into JSONL bytes (formatting the
 * numbers is nearly all of an export's CPU), while the calling thread reads
 * the matrix and writes the file. Jobs go round-robin; each answer is matched
 * to its job by number, so the caller can write them in order.
 */
export class FormatThreads {
  private readonly workers: Worker[];
  private readonly waiting = new Map<number, Waiting>();
  private sent = 0;
  private failure: unknown = null;
  private closing = false;

  constructor(count: number) {
    this.workers = Array.from({ length: count }, () => {
      const worker = new Worker(new URL("./jsonl-worker.js", import.meta.url));
      worker.on("message", (answer: { seq: number; out: Uint8Array }) => {
        const waiter = this.waiting.get(answer.seq);
        this.waiting.delete(answer.seq);
        waiter?.resolve(answer.out);
      });
      worker.on("error", (err) => this.fail(err));
      worker.on("exit", (code) => {
        if (!this.closing)
          this.fail(new Error(`a JSONL formatting thread stopped (exit code ${code})`));
      });
      return worker;
    });
  }

  /** Formats the job on the next thread; its `bytes` are moved there (the caller's copy is emptied). */
  format(job: RowsJob): Promise<Uint8Array> {
    if (this.failure) return Promise.reject(this.failure);
    const seq = this.sent++;
    const worker = this.workers[seq % this.workers.length];
    if (!worker) return Promise.reject(new Error("no formatting threads"));
    return new Promise((resolve, reject) => {
      this.waiting.set(seq, { resolve, reject });
      const { buffer } = job.bytes;
      worker.postMessage({ ...job, seq }, buffer instanceof ArrayBuffer ? [buffer] : []);
    });
  }

  async close(): Promise<void> {
    this.closing = true;
    await Promise.all(this.workers.map((w) => w.terminate()));
  }

  private fail(err: unknown): void {
    this.failure ??= err;
    for (const waiter of this.waiting.values()) waiter.reject(this.failure);
    this.waiting.clear();
  }
}
