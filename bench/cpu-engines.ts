/**
 * CPU, real model, one table: embed-multi end to end (embedded server included) with each
 * CPU engine, against a bare float32 SentenceTransformer.encode(texts, batch_size=32) of the
 * same paragraphs (the first 600 of test/fixtures/unarxive-slice.jsonl), whole process
 * against whole process, run in turn (ST, then each engine) in every round so that the
 * machine's load falls on all alike. The min cosine of each engine's vectors to ST's, row
 * by row. Target: the default engine >= 2.0x at cosine >= 0.9999.
 *
 *   node dist/bench/cpu-engines.js [rows=600] [rounds=2]
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import { cliArgs } from "../test/cli-args.js";
import { CLI, PYTHON, ROOT, report, summaryCell, table, timed, WORK } from "./common.js";

const rows = Number(process.argv[2] ?? 600);
const rounds = Number(process.argv[3] ?? 2);
const env = { ...process.env, HF_HUB_OFFLINE: "1", EMBED_SERVER_LOG: "1" };
const FIXTURE = join(ROOT, "test", "fixtures", "unarxive-slice.jsonl");
// sentence-transformers = the default (OpenVINO on a CPU where it passes its check).
const ENGINES = ["sentence-transformers", "torch"] as const;

mkdirSync(WORK, { recursive: true });
const input = join(WORK, `cpu-engines-${rows}.jsonl`);
const lines = readFileSync(FIXTURE, "utf8")
  .split("\n")
  .filter((l) => l.trim());
writeFileSync(input, `${lines.slice(0, rows).join("\n")}\n`);
const stVectors = join(WORK, "cpu-engines-st.npy");

const wall: Record<string, number[]> = { st: [] };
const steady: Record<string, number[]> = { st: [] };
const engineOf: Record<string, string> = {};
const cosine: Record<string, number> = {};
for (const engine of ENGINES) {
  wall[engine] = [];
  steady[engine] = [];
}

for (let round = 0; round < rounds; round++) {
  const b = await timed(
    PYTHON,
    [join(ROOT, "bench", "st_encode.py"), input, "", "32", stVectors],
    env,
  );
  if (b.code !== 0) throw new Error(`st_encode failed: ${b.stderr}`);
  wall.st?.push(b.seconds);
  steady.st?.push((JSON.parse(b.stdout) as { encode_s: number }).encode_s);
  for (const engine of ENGINES) {
    const out = join(WORK, `cpu-engines-${engine}`);
    rmSync(out, { recursive: true, force: true });
    const a = await timed(
      process.execPath,
      [
        CLI,
        ...cliArgs(input, out, "all-MiniLM-L6-v2"),
        "--engine",
        engine,
        "--output_format",
        "npy",
        "--progress",
        "none",
        // Start-up on 2 shared cores can take over a minute: the bench measures, not waits.
        "--server_timeout",
        "600",
      ],
      env,
    );
    if (a.code !== 0) throw new Error(`embed-multi --engine ${engine} failed: ${a.stderr}`);
    wall[engine]?.push(a.seconds);
    steady[engine]?.push(summaryCell(a.stdout, "all-MiniLM-L6-v2", "seconds"));
    engineOf[engine] = usedEngine(a.stderr);
    cosine[engine] = minCosine(join(out, "all-MiniLM-L6-v2.npy"), stVectors);
  }
}

/** What the server's log says computed the vectors (the embedded server logs to stderr). */
function usedEngine(stderr: string): string {
  if (/openvino engine on/.test(stderr)) return "OpenVINO float32";
  if (/openvino engine off/.test(stderr)) return "torch float32 (OpenVINO fell back)";
  return "torch float32";
}

function minCosine(a: string, b: string): number {
  const script =
    "import sys, numpy as np\n" +
    "a, b = (np.load(p).astype(np.float64) for p in sys.argv[1:3])\n" +
    "c = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))\n" +
    "print(c.min())\n";
  const run = spawnSync(PYTHON, ["-c", script, a, b], { encoding: "utf8" });
  if (run.status !== 0) throw new Error(`cosine failed: ${run.stderr}`);
  return Number(run.stdout.trim());
}

const median = (xs: number[]) =>
  [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)] ?? Number.NaN;
const rate = (seconds: number) => rows / seconds;
const stWall = median(wall.st ?? []);
const stSteady = median(steady.st ?? []);
const body: (string | number)[][] = [
  [
    "bare SentenceTransformer.encode, float32",
    rate(stWall).toFixed(1),
    "1.00",
    rate(stSteady).toFixed(1),
    "1.000000",
  ],
];
for (const engine of ENGINES) {
  const w = median(wall[engine] ?? []);
  body.push([
    `embed-multi --engine ${engine}: ${engineOf[engine] ?? "?"}`,
    rate(w).toFixed(1),
    (stWall / w).toFixed(2),
    rate(median(steady[engine] ?? [])).toFixed(1),
    (cosine[engine] ?? Number.NaN).toFixed(6),
  ]);
}
report(
  `CPU engines: embed-multi end to end vs bare SentenceTransformer.encode (${rows} paragraphs of test/fixtures/unarxive-slice.jsonl, all-MiniLM-L6-v2, ${cpus().length} cores, medians of ${rounds} rounds)`,
  table(
    [
      "path",
      "paragraphs/s (whole process)",
      "× ST (whole process)",
      "paragraphs/s (embedding only)",
      "min cosine to ST float32",
    ],
    body,
  ),
  [
    "Whole process: from start to exit, Python/torch start-up and model load included (embed-multi also starts its server, checks the engine at load, counts tokens and writes the .npy). Embedding only: embed-multi's first to last batch vs the encode() call.",
    "Each round runs ST, then each engine, one after the other.",
  ],
);
