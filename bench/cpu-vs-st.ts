/**
 * CPU, real model: embed-multi end to end (embedded server included) on
 * 1,000 paragraphs of the unarXive sample with all-MiniLM-L6-v2, against a
 * bare SentenceTransformer.encode(texts, batch_size=32) in one Python process,
 * alternated A B A B on the same machine. Target: ratio >= 1.0.
 *
 *   node dist/bench/cpu-vs-st.js [rows=1000] [rounds=2]
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { cliArgs } from "../test/cli-args.js";
import { CLI, CORPUS, PYTHON, ROOT, report, summaryCell, table, timed, WORK } from "./common.js";

const rows = Number(process.argv[2] ?? 1000);
const rounds = Number(process.argv[3] ?? 2);
const env = { ...process.env, HF_HUB_OFFLINE: "1" };

mkdirSync(WORK, { recursive: true });
const input = join(WORK, `cpu-${rows}.jsonl`);
const lines = readFileSync(CORPUS, "utf8")
  .split("\n")
  .filter((l) => l.trim());
writeFileSync(input, `${lines.slice(0, rows).join("\n")}\n`);
const out = join(WORK, "cpu-out");

interface Sample {
  wall: number;
  steady: number;
}
const ours: Sample[] = [];
const theirs: Sample[] = [];
for (let round = 0; round < rounds; round++) {
  rmSync(out, { recursive: true, force: true });
  const a = await timed(
    process.execPath,
    [
      CLI,
      ...cliArgs(input, out, "all-MiniLM-L6-v2"),
      "--output_format",
      "npy",
      "--progress",
      "none",
    ],
    env,
  );
  if (a.code !== 0) throw new Error(`embed-multi failed: ${a.stderr}`);
  ours.push({ wall: a.seconds, steady: summaryCell(a.stdout, "all-MiniLM-L6-v2", "seconds") });

  const b = await timed(PYTHON, [join(ROOT, "bench", "st_encode.py"), input], env);
  if (b.code !== 0) throw new Error(`st_encode failed: ${b.stderr}`);
  const st = JSON.parse(b.stdout) as { encode_s: number };
  theirs.push({ wall: b.seconds, steady: st.encode_s });
}
rmSync(out, { recursive: true, force: true });

const median = (xs: number[]) =>
  [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)] ?? Number.NaN;
const rate = (s: number) => rows / s;
const rowsOut: (string | number)[][] = [];
for (let i = 0; i < rounds; i++) {
  const a = ours[i] as Sample;
  const b = theirs[i] as Sample;
  rowsOut.push([
    i + 1,
    rate(a.wall).toFixed(1),
    rate(b.wall).toFixed(1),
    rate(a.steady).toFixed(1),
    rate(b.steady).toFixed(1),
  ]);
}
const wallRatio = rate(median(ours.map((s) => s.wall))) / rate(median(theirs.map((s) => s.wall)));
const steadyRatio =
  rate(median(ours.map((s) => s.steady))) / rate(median(theirs.map((s) => s.steady)));
rowsOut.push(["ratio (median)", wallRatio.toFixed(2), "", steadyRatio.toFixed(2), ""]);
report(
  `CPU: embed-multi vs bare SentenceTransformer.encode (${rows} unarXive paragraphs, all-MiniLM-L6-v2)`,
  table(
    [
      "round",
      "embed-multi paragraphs/s (whole process)",
      "ST encode paragraphs/s (whole process)",
      "embed-multi paragraphs/s (embedding only)",
      "ST paragraphs/s (encode only)",
    ],
    rowsOut,
  ),
  [
    "Whole process: from start to exit, including Python/torch start-up and model load (embed-multi also starts its server, counts tokens and writes the .npy). Embedding only: embed-multi's first to last batch vs the encode() call.",
    "Runs alternate A B A B. Target: ratio >= 1.0.",
  ],
);
