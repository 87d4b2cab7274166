/**
 * Orchestrator ceiling: the debug engine (no model compute) with 1024-dim
 * vectors, so what is measured is the orchestrator, gRPC and the .npy
 * writes. Targets: >= 50,000 paragraphs/s; peak RSS < 300 MB at 1,000,000 rows.
 *
 *   node dist/bench/ceiling.js [rows=200000] [rssRows=1000000] [--no-jsonl]
 *
 * rssRows 0 skips the RSS run; --no-jsonl skips the JSONL export setting (minutes at ~1,000
 * rows/s): the GPU benchmark (bench/gpu/run.sh) runs `200000 0 --no-jsonl` within its budget.
 */

import { once } from "node:events";
import { createWriteStream, mkdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { cliArgs } from "../test/cli-args.js";
import { CLI, report, summaryCell, table, timed, WORK } from "./common.js";

const flags = process.argv.slice(2).filter((a) => a.startsWith("--"));
const positional = process.argv.slice(2).filter((a) => !a.startsWith("--"));
const rows = Number(positional[0] ?? 200_000);
const rssRows = Number(positional[1] ?? 1_000_000);
const jsonl = !flags.includes("--no-jsonl");
const DIM = 1024;

/** Paragraph-like texts of 40 to 400 characters, all different. */
async function generate(path: string, count: number): Promise<void> {
  const words =
    "the model of a latent variable with data we estimate method results show that for each".split(
      " ",
    );
  const out = createWriteStream(path);
  for (let i = 0; i < count; i++) {
    const length = 8 + ((i * 7919) % 70);
    const text = Array.from({ length }, (_, k) => words[(i + k * 13) % words.length]).join(" ");
    const line = `{"paper_id":"gen.${Math.floor(i / 100)}","paragraph_index":${i % 100},"text":"${text} #${i}"}\n`;
    if (!out.write(line)) await once(out, "drain");
  }
  out.end();
  await once(out, "finish");
}

interface Metadata {
  processing_time: number;
  jsonl_export_time?: number;
}

async function runOnce(input: string, out: string, extra: string[]) {
  rmSync(out, { recursive: true, force: true });
  const result = await timed(process.execPath, [
    CLI,
    ...cliArgs(input, out, "ceiling/debug-1024"),
    "--engine",
    "debug",
    "--debug_dim",
    String(DIM),
    "--progress",
    "none",
    ...extra,
  ]);
  if (result.code !== 0) throw new Error(`run failed: ${result.stderr}`);
  const meta = JSON.parse(
    readFileSync(join(out, "ceiling__debug-1024.metadata.json"), "utf8"),
  ) as Metadata;
  return {
    wall: result.seconds,
    embedSeconds: summaryCell(result.stdout, "ceiling/debug-1024", "seconds"),
    embedRate: summaryCell(result.stdout, "ceiling/debug-1024", "rows/s"),
    jsonlSeconds: meta.jsonl_export_time ?? Number.NaN,
    peakRssMb: result.peakRssMb,
  };
}

mkdirSync(WORK, { recursive: true });
const input = join(WORK, `ceiling-${rows}.jsonl`);
await generate(input, rows);
/** Larger batches and window than the defaults: what a throughput run would use. */
const WIDE = ["--batch_size", "256", "--max_batch_tokens", "0", "--max_workers", "8"];
const allSettings: [string, string[]][] = [
  ["defaults (batch 32, 4 in flight)", ["--output_format", "npy"]],
  ["batch 256, 8 in flight", [...WIDE, "--output_format", "npy"]],
  ["batch 256, 8 in flight, + JSONL", [...WIDE, "--checkpoint_interval", "20000"]],
];
const settings = allSettings.filter(([name]) => jsonl || !name.includes("JSONL"));
const lines: (string | number)[][] = [];
for (const [name, extra] of settings) {
  const r = await runOnce(input, join(WORK, "ceiling-out"), extra);
  lines.push([
    name,
    rows,
    r.embedSeconds.toFixed(2),
    Math.round(r.embedRate),
    Number.isNaN(r.jsonlSeconds) ? "-" : Math.round(rows / r.jsonlSeconds),
    r.wall.toFixed(1),
    r.peakRssMb.toFixed(0),
  ]);
}
rmSync(input, { force: true });

if (rssRows > 0) {
  const bigInput = join(WORK, `ceiling-${rssRows}.jsonl`);
  await generate(bigInput, rssRows);
  const big = await runOnce(bigInput, join(WORK, "ceiling-out"), [
    ...WIDE,
    "--output_format",
    "npy",
    "--checkpoint_interval",
    "20000",
  ]);
  lines.push([
    "RSS run, batch 256, 8 in flight",
    rssRows,
    big.embedSeconds.toFixed(2),
    Math.round(big.embedRate),
    "-",
    big.wall.toFixed(1),
    big.peakRssMb.toFixed(0),
  ]);
  rmSync(bigInput, { force: true });
}
rmSync(join(WORK, "ceiling-out"), { recursive: true, force: true });

report(
  `Orchestrator ceiling (debug engine, dim ${DIM})`,
  table(
    [
      "settings",
      "rows",
      "embed s",
      "paragraphs/s into .npy",
      "JSONL export rows/s",
      "wall s",
      "orchestrator peak RSS MB",
    ],
    lines,
  ),
  [
    "Targets: >= 50,000 paragraphs/s into the .npy; peak RSS < 300 MB at 1,000,000 rows.",
    "Embed seconds and rates are from the CLI's summary (first to last batch); wall includes the input scan, server start, token counting and finalizing.",
  ],
);
