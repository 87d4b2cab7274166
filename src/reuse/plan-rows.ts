import { closeSync, openSync, readSync } from "node:fs";
import type { CopyJob } from "../model/records.js";
import type { PlannedBatch } from "../plan/planner.js";
import { HashIndex } from "./hash-index.js";
import { HASH_BYTES } from "./hashes.js";

/** Most rows per copy job (fewer with a shorter checkpoint interval): one ledger row each. */
export const COPY_ROWS = 4096;
/** Source hashes read at a time: the sources are streamed, never held. */
const SOURCE_CHUNK_ROWS = 65_536;

/** Which rows go to the servers; the others are copied. */
export interface RowPlan {
  /** Rows to embed, ascending: the first row of each distinct model input not reused. */
  readonly embed: Uint32Array;
  /** For every row, the row whose vector it takes (itself when embedded; -1 when reused). */
  readonly leaderOf: Int32Array;
  /** Rows copied from the sources, in jobs of up to COPY_ROWS rows, by source then row. */
  readonly copies: CopyJob[];
  readonly deduplicated: number;
  readonly reused: number;
}

/**
 * Decides each row's fate from the content hashes (N × 16 bytes): a row
 * whose hash a source holds copies that source's row (the first source
 * listed wins); otherwise the first row with its hash is embedded and, with
 * `dedupe`, every later row with the same hash takes its vector. Memory
 * beside the hashes: the index (≤ 16 bytes a row) and 10 bytes a row here;
 * the sources' hash files are streamed in chunks of 64 Ki rows.
 */
export function planRows(
  hashes: Buffer,
  dedupe: boolean,
  sourceHashFiles: readonly string[],
  /** Rows per copy job, at most COPY_ROWS. */
  jobRows = COPY_ROWS,
): RowPlan {
  const perJob = Math.max(1, Math.min(COPY_ROWS, jobRows));
  const rows = hashes.length / HASH_BYTES;
  const index = new HashIndex(hashes);
  // The first row of each hash, whatever `dedupe` says: a source matches a hash.
  const first = new Int32Array(rows);
  for (let r = 0; r < rows; r++) first[r] = index.add(r);
  const sourceRow = new Int32Array(rows).fill(-1);
  const sourceNo = new Uint16Array(rows);
  sourceHashFiles.forEach((file, no) => {
    streamHashes(file, (chunk, base, count) => {
      for (let j = 0; j < count; j++) {
        const lead = index.find(chunk, j * HASH_BYTES);
        if (lead >= 0 && (sourceRow[lead] ?? -1) < 0) {
          sourceRow[lead] = base + j;
          sourceNo[lead] = no;
        }
      }
    });
  });

  const leaderOf = new Int32Array(rows);
  const embed = new Uint32Array(rows);
  let embedded = 0;
  const copyRows: number[][] = sourceHashFiles.map(() => []);
  let deduplicated = 0;
  let reused = 0;
  for (let r = 0; r < rows; r++) {
    const lead = first[r] ?? r;
    if ((sourceRow[lead] ?? -1) >= 0) {
      leaderOf[r] = -1;
      copyRows[sourceNo[lead] ?? 0]?.push(r);
      reused++;
    } else if (dedupe && lead !== r) {
      leaderOf[r] = lead;
      deduplicated++;
    } else {
      leaderOf[r] = r;
      embed[embedded++] = r;
    }
  }
  const copies: CopyJob[] = [];
  copyRows.forEach((targets, no) => {
    for (let at = 0; at < targets.length; at += perJob) {
      const part = Uint32Array.from(targets.slice(at, at + perJob));
      const from = part.map((r) => sourceRow[first[r] ?? r] ?? 0);
      copies.push({ copyNo: copies.length, sourceNo: no, rows: part, sourceRows: from });
    }
  });
  return { embed: embed.slice(0, embedded), leaderOf, copies, deduplicated, reused };
}

/** Gives each planned batch the rows that take its rows' vectors (uint32 pairs: row, index). */
export function attachFollowers(
  batches: readonly PlannedBatch[],
  leaderOf: Int32Array,
): PlannedBatch[] {
  const rows = leaderOf.length;
  const batchOf = new Int32Array(rows).fill(-1);
  const indexIn = new Uint32Array(rows);
  for (const b of batches) {
    b.rows.forEach((r, i) => {
      batchOf[r] = b.batchNo;
      indexIn[r] = i;
    });
  }
  const pairs: number[][] = batches.map(() => []);
  for (let r = 0; r < rows; r++) {
    const lead = leaderOf[r] ?? r;
    if (lead < 0 || lead === r) continue;
    const b = batchOf[lead] ?? -1;
    if (b < 0) throw new Error(`row ${r} follows row ${lead}, which no batch embeds`);
    pairs[b]?.push(r, indexIn[lead] ?? 0);
  }
  return batches.map((b, i) => {
    const list = pairs[i] ?? [];
    return list.length > 0 ? { ...b, followers: Uint32Array.from(list) } : b;
  });
}

function streamHashes(
  file: string,
  take: (chunk: Buffer, base: number, count: number) => void,
): void {
  const fd = openSync(file, "r");
  const chunk = Buffer.allocUnsafe(SOURCE_CHUNK_ROWS * HASH_BYTES);
  try {
    let base = 0;
    for (;;) {
      const got = readSync(fd, chunk, 0, chunk.length, base * HASH_BYTES);
      const count = Math.floor(got / HASH_BYTES);
      if (count === 0) break;
      take(chunk, base, count);
      base += count;
    }
  } finally {
    closeSync(fd);
  }
}
