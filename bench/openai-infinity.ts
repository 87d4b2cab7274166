/**
 * The openai backend against a real third-party server: the same corpus
 * through infinity-emb (CPU, all-MiniLM-L6-v2) by embed-multi
 * (`--servers openai:URL`), and by a plain client of the server (HTTP
 * requests of the same batch size in input order, one after the other:
 * bench/http_client.py), alternated A B A B against one server.
 *
 *   node dist/bench/openai-infinity.js [rows=600] [rounds=2] [batch_size=32]
 */
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";
import { cliArgs } from "../test/cli-args.js";
import { INFINITY_SERVED_NAME, INFINITY_VENV, startInfinity } from "../test/infinity.js";
import { CLI, CORPUS, ROOT, report, summaryCell, table, timed, WORK } from "./common.js";

const rows = Number(process.argv[2] ?? 600);
const rounds = Number(process.argv[3] ?? 2);
const batchSize = Number(process.argv[4] ?? 32);
const env = { ...process.env, HF_HUB_OFFLINE: "1" };

mkdirSync(WORK, { recursive: true });
const input = join(WORK, `openai-${rows}.jsonl`);
// The shared unarXive sample where it lies beside the checkout, else the slice the tests use.
const corpus = existsSync(CORPUS) ? CORPUS : join(ROOT, "test", "fixtures", "unarxive-slice.jsonl");
const lines = readFileSync(corpus, "utf8")
  .split("\n")
  .filter((l) => l.trim());
writeFileSync(input, `${lines.slice(0, rows).join("\n")}\n`);
const out = join(WORK, "openai-out");
const loadBefore = loadavg().map((l) => l.toFixed(1));

const server = await startInfinity();
const ours: number[] = [];
const oursSteady: number[] = [];
const theirs: number[] = [];
try {
  // One warm-up request each way, so neither side pays infinity's first-call costs.
  await timed(join(INFINITY_VENV, "bin", "python"), [
    join(ROOT, "bench", "http_client.py"),
    server.url,
    input,
    INFINITY_SERVED_NAME,
    String(batchSize),
  ]);
  for (let round = 0; round < rounds; round++) {
    rmSync(out, { recursive: true, force: true });
    const a = await timed(
      process.execPath,
      [
        CLI,
        ...cliArgs(input, out, "all-MiniLM-L6-v2", {
          servers: `openai:${server.url}`,
          batch_size: batchSize,
          output_format: "npy",
          progress: "none",
        }),
      ],
      env,
    );
    if (a.code !== 0) throw new Error(`embed-multi failed: ${a.stderr}`);
    ours.push(a.seconds);
    oursSteady.push(summaryCell(a.stdout, "all-MiniLM-L6-v2", "seconds"));
    const b = await timed(join(INFINITY_VENV, "bin", "python"), [
      join(ROOT, "bench", "http_client.py"),
      server.url,
      input,
      INFINITY_SERVED_NAME,
      String(batchSize),
    ]);
    if (b.code !== 0) throw new Error(`http_client.py failed: ${b.stderr}`);
    theirs.push((JSON.parse(b.stdout) as { seconds: number }).seconds);
  }
} finally {
  await server.stop();
  rmSync(out, { recursive: true, force: true });
}

const median = (xs: number[]) =>
  [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)] ?? Number.NaN;
const rate = (s: number) => rows / s;
const body: (string | number)[][] = ours.map((s, i) => [
  i + 1,
  rate(s).toFixed(1),
  rate(oursSteady[i] ?? Number.NaN).toFixed(1),
  rate(theirs[i] ?? Number.NaN).toFixed(1),
]);
body.push([
  "ratio (median, embed-multi / client)",
  (rate(median(ours)) / rate(median(theirs))).toFixed(2),
  (rate(median(oursSteady)) / rate(median(theirs))).toFixed(2),
  "",
]);
report(
  `openai backend: infinity-emb by embed-multi vs a plain HTTP client (${rows} unarXive paragraphs, all-MiniLM-L6-v2, batch ${batchSize})`,
  table(
    [
      "round",
      "embed-multi paragraphs/s (whole process)",
      "embed-multi paragraphs/s (embedding only)",
      "plain client paragraphs/s (requests only)",
    ],
    body,
  ),
  [
    `One infinity-emb 0.0.78 (torch, CPU, --no-model-warmup) serves both; it is up before either starts. embed-multi: default flags (--max_workers ${4}, base64, length-sorted batches of at most ${batchSize} texts and 16,384 tokens); whole process includes Node start-up, tokenizer.json counting, the probe and the .npy. The plain client (bench/http_client.py, requests): batches of ${batchSize} in input order, encoding_format float, one request after the other, its time is the requests alone.`,
    `Load average ${loadBefore.join(", ")} at the start (2 cores, shared with other sessions).`,
  ],
);
