import { parentPort } from "node:worker_threads";
import { formatRows, type RowsJob } from "./jsonl-format.js";

/** A JSONL formatting thread: a chunk of rows in, its lines' bytes out (transferred, not copied). */
const port = parentPort;
if (port) {
  port.on("message", (job: RowsJob & { readonly seq: number }) => {
    const out = formatRows(job);
    const { buffer } = out;
    port.postMessage({ seq: job.seq, out }, buffer instanceof ArrayBuffer ? [buffer] : []);
  });
}
