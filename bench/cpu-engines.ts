/**
 * CPU, real models, one table: embed-multi end to end (embedded server included) with each
 * CPU engine, against a bare float32 SentenceTransformer.encode(texts, batch_size=32) of the
 * same paragraphs (the first 600 of test/fixtures/unarxive-slice.jsonl), whole process
 * against whole process, run in turn (ST, then each engine) in every round so that the
 * machine's load falls on all alike. The min cosine of each engine's vectors to ST's, row
 * by row. Target: the default engine >= 2.0x at cosine >= 0.9999. Rows: all-MiniLM-L6-v2
 * with the default engine, torch and --quantize int8 (its speed and cosine, and the
 * fidelity its metadata reports on the calibration paragraphs); all-mpnet-base-v2 with the
 * default engine against its own encode, where models/ holds it.
 *
 *   node dist/bench/cpu-engines.js [rows=600] [rounds=2]
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import { cliArgs } from "../test/cli-args.js";
import { CLI, PYTHON, ROOT, report, summaryCell, table, timed, WORK } from "./common.js";

const rows = Number(process.argv[2] ?? 600);
const rounds = Number(process.argv[3] ?? 2);
const env = { ...process.env, HF_HUB_OFFLINE: "1", EMBED_SERVER_LOG: "1" };
const FIXTURE = join(ROOT, "test", "fixtures", "unarxive-slice.jsonl");
const MODEL_DIR = process.env.EMBED_MODEL_DIR ?? join(ROOT, "models");

/** A bare SentenceTransformer.encode of one model: the baseline of its rows. */
interface Baseline {
  readonly alias: string;
  /** st_encode.py's MODEL_PATH ("" = the bundled MiniLM). */
  readonly path: string;
  readonly vectors: string;
}

/** One embed-multi row: a model, its flags, and the baseline it is measured against. */
interface Variant {
  readonly key: string;
  readonly baseline: Baseline;
  readonly flags: readonly string[];
}

const minilm: Baseline = {
  alias: "all-MiniLM-L6-v2",
  path: "",
  vectors: join(WORK, "cpu-engines-st.npy"),
};
const mpnetPath = join(MODEL_DIR, "sentence-transformers", "all-mpnet-base-v2");
const mpnet: Baseline | null = existsSync(join(mpnetPath, "config.json"))
  ? { alias: "all-mpnet-base-v2", path: mpnetPath, vectors: join(WORK, "cpu-engines-st-mpnet.npy") }
  : null;
const baselines = [minilm, ...(mpnet ? [mpnet] : [])];
// sentence-transformers = the default (OpenVINO on a CPU where it passes its check).
const variants: Variant[] = [
  { key: "sentence-transformers", baseline: minilm, flags: ["--engine", "sentence-transformers"] },
  { key: "torch", baseline: minilm, flags: ["--engine", "torch"] },
  { key: "quantize int8", baseline: minilm, flags: ["--quantize", "int8"] },
  ...(mpnet ? [{ key: "mpnet default", baseline: mpnet, flags: [] }] : []),
];

mkdirSync(WORK, { recursive: true });
const input = join(WORK, `cpu-engines-${rows}.jsonl`);
const lines = readFileSync(FIXTURE, "utf8")
  .split("\n")
  .filter((l) => l.trim());
writeFileSync(input, `${lines.slice(0, rows).join("\n")}\n`);

const wall: Record<string, number[]> = {};
const steady: Record<string, number[]> = {};
const engineOf: Record<string, string> = {};
const cosine: Record<string, number> = {};
const fidelity: Record<string, string> = {};
for (const key of [...baselines.map((b) => b.alias), ...variants.map((v) => v.key)]) {
  wall[key] = [];
  steady[key] = [];
}

for (let round = 0; round < rounds; round++) {
  for (const baseline of baselines) {
    const b = await timed(
      PYTHON,
      [join(ROOT, "bench", "st_encode.py"), input, baseline.path, "32", baseline.vectors],
      env,
    );
    if (b.code !== 0) throw new Error(`st_encode ${baseline.alias} failed: ${b.stderr}`);
    wall[baseline.alias]?.push(b.seconds);
    steady[baseline.alias]?.push((JSON.parse(b.stdout) as { encode_s: number }).encode_s);
  }
  for (const variant of variants) {
    const { alias } = variant.baseline;
    const out = join(WORK, `cpu-engines-${variant.key.replaceAll(" ", "-")}`);
    rmSync(out, { recursive: true, force: true });
    const a = await timed(
      process.execPath,
      [
        CLI,
        ...cliArgs(input, out, alias),
        ...variant.flags,
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
    if (a.code !== 0) throw new Error(`embed-multi ${variant.key} failed: ${a.stderr}`);
    wall[variant.key]?.push(a.seconds);
    steady[variant.key]?.push(summaryCell(a.stdout, alias, "seconds"));
    engineOf[variant.key] = usedEngine(a.stderr);
    cosine[variant.key] = minCosine(join(out, `${alias}.npy`), variant.baseline.vectors);
    const meta = JSON.parse(readFileSync(join(out, `${alias}.metadata.json`), "utf8"));
    const f = meta.quantize_fidelity;
    if (f) {
      fidelity[variant.key] =
        `on its ${f.calibration_rows} calibration paragraphs: min ${f.min_cosine.toFixed(6)}, mean ${f.mean_cosine.toFixed(6)}`;
    }
  }
}

/** What made the vectors, from the plan line ("engine openvino int8") or the server's log. */
function usedEngine(stderr: string): string {
  const plan = /, engine (\S+) (\S+)\n/.exec(stderr);
  if (plan) return `${plan[1] === "openvino" ? "OpenVINO" : plan[1]} ${plan[2]}`;
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
const body: (string | number)[][] = [];
for (const baseline of baselines) {
  const stWall = median(wall[baseline.alias] ?? []);
  body.push([
    `${baseline.alias}: bare SentenceTransformer.encode, float32`,
    rate(stWall).toFixed(1),
    "1.00",
    rate(median(steady[baseline.alias] ?? [])).toFixed(1),
    "1.000000",
  ]);
  for (const variant of variants.filter((v) => v.baseline === baseline)) {
    const w = median(wall[variant.key] ?? []);
    const flags = variant.flags.length > 0 ? variant.flags.join(" ") : "(defaults)";
    const extra = fidelity[variant.key] ? `; metadata ${fidelity[variant.key]}` : "";
    body.push([
      `${baseline.alias}: embed-multi ${flags}: ${engineOf[variant.key] ?? "?"}${extra}`,
      rate(w).toFixed(1),
      (stWall / w).toFixed(2),
      rate(median(steady[variant.key] ?? [])).toFixed(1),
      (cosine[variant.key] ?? Number.NaN).toFixed(6),
    ]);
  }
}
report(
  `CPU engines: embed-multi end to end vs bare SentenceTransformer.encode (${rows} paragraphs of test/fixtures/unarxive-slice.jsonl, ${baselines.map((b) => b.alias).join(" and ")}, ${cpus().length} cores, medians of ${rounds} rounds)`,
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
    "Each round runs the encodes, then each embed-multi row, one after the other. The OpenVINO graphs (float32, and int8 with its quantization) are kept in the cache after their first round: the first round's whole process includes tracing and quantizing, later ones read them.",
    "--quantize int8 calibrates on up to 256 of the input's paragraphs; its min cosine to ST is over every row, the metadata's over the calibration paragraphs.",
  ],
);
