/**
 * Incremental runs, real model: corpus v1 = 3,000 fixture paragraphs
 * (derived deterministically, test/reuse-corpus.ts), v2 = v1 with 300
 * edited, 300 deleted, 600 new, shuffled (another size keeps the shares:
 * 10% edited, 10% deleted, 20% new). The v2 run with --reuse of v1's
 * output against the same run without it, on one inference server started
 * once (all-MiniLM-L6-v2, CPU unless the server finds a GPU), wall time of
 * the whole orchestrator process. The ceiling: the share of rows sent,
 * 900 / 3,300, makes at best a 3.67x ratio.
 *
 *   node dist/bench/reuse.js [v1 rows=3000] [rounds=1] [engine=sentence-transformers|debug]
 *
 * The debug engine (fake vectors at no cost) shows what reuse itself costs the orchestrator.
 */
import { mkdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { cliArgs } from "../test/cli-args.js";
import { startServer, writeLines } from "../test/helpers.js";
import { corpusVersions } from "../test/reuse-corpus.js";
import { CLI, report, table, timed, WORK } from "./common.js";

const size = Number(process.argv[2] ?? 3000);
const rounds = Number(process.argv[3] ?? 1);
const engine = process.argv[4] ?? "sentence-transformers";
const MODEL = "all-MiniLM-L6-v2";
const env = { ...process.env, HF_HUB_OFFLINE: "1" };

mkdirSync(WORK, { recursive: true });
const tenth = Math.round(size / 10);
const { v1, v2, changed } = corpusVersions(size, tenth, tenth, 2 * tenth);
const v1File = writeLines(join(WORK, "reuse-v1.jsonl"), v1);
const v2File = writeLines(join(WORK, "reuse-v2.jsonl"), v2);
const v1Out = join(WORK, "reuse-v1-out");
const out = join(WORK, "reuse-v2-out");

const server = await startServer(["--engine", engine]);
const runOnce = async (input: string, dir: string, extra: string[] = []) => {
  rmSync(dir, { recursive: true, force: true });
  const args = cliArgs(input, dir, MODEL, { servers: server.target, progress: "none" });
  const result = await timed(process.execPath, [CLI, ...args, ...extra], env);
  if (result.code !== 0) throw new Error(`embed-multi failed: ${result.stderr}`);
  return result.seconds;
};
const full: number[] = [];
const reusing: number[] = [];
let embedded = 0;
try {
  await runOnce(v1File, v1Out);
  for (let round = 0; round < rounds; round++) {
    full.push(await runOnce(v2File, out));
    reusing.push(await runOnce(v2File, out, ["--reuse", v1Out]));
    const meta = JSON.parse(readFileSync(join(out, `${MODEL}.metadata.json`), "utf8")) as {
      embedded_rows: number;
    };
    embedded = meta.embedded_rows;
  }
} finally {
  await server.stop();
}
rmSync(out, { recursive: true, force: true });
const median = (xs: number[]) =>
  [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)] ?? Number.NaN;
const f = median(full);
const r = median(reusing);
report(
  `Incremental run: v2 (${v2.length} paragraphs, ${changed} new or changed) with and without --reuse of v1 (${v1.length}), ${MODEL}, ${engine} engine`,
  table(
    ["run", "rows sent to the server", "wall s (median)", "rows/s of v2"],
    [
      ["v2 full", v2.length, f.toFixed(1), (v2.length / f).toFixed(0)],
      ["v2 --reuse v1", embedded, r.toFixed(1), (v2.length / r).toFixed(0)],
      ["ratio", "", `${(f / r).toFixed(2)}x`, ""],
    ],
  ),
  [
    `Ceiling: ${(v2.length / changed).toFixed(2)}x (${v2.length} / ${changed} rows sent), less the fixed cost of a run (start, scan, probe, hashing, outputs). ${rounds} round(s), one server started once for all runs.`,
  ],
);
