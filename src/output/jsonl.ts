import { paperIdJson } from "../input/ids.js";
import type { RowReader } from "../input/rows.js";
import { writeAll, writeThenCommitAsync } from "./atomic.js";
import type { EncodedChunk } from "./derive.js";
import type { Encoder } from "./dtype.js";
import { formatRows, type RowsJob } from "./jsonl-format.js";
import { FormatThreads } from "./jsonl-threads.js";

/**
 * Writes `<alias>.jsonl`: one line per paragraph in input order, its vector
 * as the output dtype holds it, ids exactly as written in the input (see
 * formatRows). With `threads` > 0 the chunks are formatted in that many
 * worker threads, up to two chunks each in flight, while this thread reads
 * the next chunks and writes the answers in order: the same bytes as inline.
 * Written under a temporary name and renamed when complete.
 */
export async function exportJsonl(
  path: string,
  chunks: Iterable<EncodedChunk>,
  encoder: Encoder,
  reader: RowReader,
  modelName: string,
  threads = 0,
): Promise<void> {
  const tail = `],"model":${JSON.stringify(modelName)}}\n`;
  const job = (chunk: EncodedChunk, bytes: Uint8Array): RowsJob => {
    const heads: string[] = [];
    for (let r = 0; r < chunk.count; r++) {
      const ids = reader.ids(chunk.first + r);
      heads.push(
        `{"paper_id":${paperIdJson(ids.paperId)},"paragraph_index":${ids.paragraphIndex},"embedding":[`,
      );
    }
    return { dtype: encoder.dtype, width: encoder.width, count: chunk.count, bytes, heads, tail };
  };
  await writeThenCommitAsync(path, async (fd) => {
    if (threads <= 0) {
      for (const chunk of chunks) writeAll(fd, formatRows(job(chunk, chunk.bytes)));
      return;
    }
    const pool = new FormatThreads(threads);
    try {
      const inFlight: Promise<Uint8Array>[] = [];
      for (const chunk of chunks) {
        // A copy of its own: the chunk's view is reused, and the copy moves to the thread.
        const formatted = pool.format(job(chunk, chunk.bytes.slice()));
        // Awaited in order below; until then a failure must not count as unhandled.
        formatted.catch(() => undefined);
        inFlight.push(formatted);
        const oldest = inFlight.length >= threads * 2 ? inFlight.shift() : undefined;
        if (oldest) writeAll(fd, await oldest);
      }
      for (const formatted of inFlight) writeAll(fd, await formatted);
    } finally {
      await pool.close();
    }
  });
}
