import assert from "node:assert/strict";
import { copyFileSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { cliArgs } from "./cli-args.js";
import {
  inputDir,
  pythonJson,
  type RunningServer,
  readCorpusLines,
  readLedger,
  runCli,
  runVerify,
  spawnBare,
  spawnCli,
  startServer,
  testEnv,
  waitForDone,
} from "./helpers.js";

const STEM = "all-MiniLM-L6-v2";
const ROWS = 2000;
const SHARDS = 4;

/**
 * 2,000 rows made from the fixture: row i is 12 words of fixture line i mod
 * n, from word 7i mod its length, with paragraph_index i. Short texts keep
 * 4,000 real forwards (sharded and not) affordable on two CPU cores; the same rows every time.
 */
function derivedRows(): string[] {
  const lines = readCorpusLines().map((l) => JSON.parse(l) as { paper_id: string; text: string });
  return Array.from({ length: ROWS }, (_, i) => {
    const src = lines[i % lines.length] as { paper_id: string; text: string };
    const words = src.text.split(/\s+/).filter((w) => w.length > 0);
    const start = (7 * i) % words.length;
    const text = [...words, ...words].slice(start, start + 12).join(" ");
    return JSON.stringify({ paper_id: src.paper_id, paragraph_index: i, text });
  });
}

const servers: RunningServer[] = [];
before(async () => {
  for (let i = 0; i < 2; i++) servers.push(await startServer(["--threads", "1"]));
});
after(async () => {
  for (const s of servers) await s.stop();
});

interface RowReport {
  shape: number[];
  reference_shape: number[];
  min_cos: number;
  identical_rows: number;
  ids_equal: boolean;
}

interface QuantReport {
  npy_equal: boolean;
  jsonl_equal: boolean;
  parquet_equal: boolean;
  ranges_equal: boolean;
  ranges_reproduce: boolean;
}

const shardFolder = (k: number) =>
  `shard-${String(k).padStart(5, "0")}-of-${String(SHARDS).padStart(5, "0")}`;

test("four shards side by side on two real servers, one killed -9 and resumed alone: the merge is one run's files; int8 from ranges over all rows", async () => {
  const { dir, input } = inputDir("shards-real", derivedRows());
  const out = join(dir, "sharded");
  const args = (target: string, flags: Record<string, string>) =>
    cliArgs(input, target, STEM, {
      servers: servers.map((s) => s.target).join(","),
      batch_size: 32,
      checkpoint_interval: 64,
      max_workers: 2,
      ...flags,
    });
  const runs = Array.from({ length: SHARDS }, (_, k) =>
    spawnCli(args(out, { shard: `${k}/${SHARDS}` })),
  );
  const victim = runs[2];
  assert.ok(victim);
  await waitForDone(join(out, shardFolder(2)), 4, victim.done, 600_000);
  victim.child.kill("SIGKILL");
  const killed = await victim.done;
  assert.equal(killed.signal, "SIGKILL");
  const results = await Promise.all(runs.filter((r) => r !== victim).map((r) => r.done));
  for (const r of results) assert.equal(r.code, 0, r.stderr);
  const left = readLedger(join(out, shardFolder(2)));
  assert.ok(left.done < left.batches, "shard 2 was killed mid-run");

  const early = await spawnBare(["merge", "--output_dir", out], testEnv()).done;
  assert.equal(early.code, 1);
  assert.match(
    early.stderr,
    /1 of 4 shards are not finished: shard-00002-of-00004 \(all-MiniLM-L6-v2: \d+ of \d+ batches done\)/,
  );

  const resumed = await runCli(args(out, { shard: `2/${SHARDS}` }));
  assert.equal(resumed.code, 0, resumed.stderr);
  assert.match(resumed.stderr, /resuming: \d+ of \d+ batches done/);

  const merged = await spawnBare(["merge", "--output_dir", out], testEnv()).done;
  assert.equal(merged.code, 0, merged.stderr);
  const reference = join(dir, "reference");
  const ref = await runCli(args(reference, {}));
  assert.equal(ref.code, 0, ref.stderr);
  const report = pythonJson<RowReport>("compare_rows.py", [
    join(out, `${STEM}.npy`),
    join(reference, `${STEM}.npy`),
    join(out, `${STEM}.jsonl`),
    join(reference, `${STEM}.jsonl`),
  ]);
  process.stderr.write(`merged vs unsharded: ${JSON.stringify(report)}\n`);
  assert.deepEqual(report.shape, [ROWS, 384]);
  assert.deepEqual(report.reference_shape, [ROWS, 384]);
  assert.ok(report.ids_equal, "JSONL ids in the same order");
  // Batches are cut over each shard's rows, not the whole input's: a row meets other
  // neighbours and another padded length, which moves float32 sums in the last bits.
  assert.ok(report.min_cos >= 0.99999, `least cosine ${report.min_cos}`);
  const verified = await runVerify(["--output_dir", out, "--input_file", input]);
  assert.equal(verified.code, 0, verified.stdout + verified.stderr);

  const floats = join(dir, "merged-float32.npy");
  copyFileSync(join(out, `${STEM}.npy`), floats);
  const int8 = await spawnBare(
    [
      "merge",
      "--output_dir",
      out,
      "--output_dtype",
      "int8",
      "--output_format",
      "npy,jsonl,parquet",
    ],
    testEnv(),
  ).done;
  assert.equal(int8.code, 0, int8.stderr);
  const quant = pythonJson<QuantReport>("check_outputs.py", [floats, out, STEM, "int8"]);
  assert.ok(quant.npy_equal && quant.jsonl_equal && quant.parquet_equal, JSON.stringify(quant));
  assert.ok(quant.ranges_equal && quant.ranges_reproduce, "ranges over all rows of all shards");
  const meta = JSON.parse(readFileSync(join(out, `${STEM}.metadata.json`), "utf8"));
  assert.equal(meta.merged_from.ranges_from, "all shards (computed at the merge)");
  const v8 = await runVerify(["--output_dir", out, "--input_file", input]);
  assert.equal(v8.code, 0, v8.stdout + v8.stderr);
});
