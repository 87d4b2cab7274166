import assert from "node:assert/strict";
import { cpSync, existsSync, readFileSync, renameSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { cliArgs } from "./cli-args.js";
import {
  type CliResult,
  corpusSlice,
  inputDir,
  onlyErrorLine,
  readLedger,
  runCli,
  runVerify,
  seededRandom,
  serverForTests,
  sleep,
  spawnBare,
  testEnv,
} from "./helpers.js";

const STEM = "all-MiniLM-L6-v2";
const server = serverForTests();

function shardArgs(input: string, out: string, flags: Record<string, string | number> = {}) {
  return cliArgs(input, out, STEM, {
    servers: server.target,
    batch_size: 8,
    checkpoint_interval: 16,
    ...flags,
  });
}

function runMerge(args: readonly string[]): Promise<CliResult> {
  return spawnBare(["merge", ...args], testEnv()).done;
}

const shardFolder = (k: number, n: number) =>
  `shard-${String(k).padStart(5, "0")}-of-${String(n).padStart(5, "0")}`;

test("shards split the rows into contiguous ranges from the input alone; the merge equals one run, byte for byte", async () => {
  const { dir, input } = inputDir("shards", corpusSlice(203, 100));
  const out = join(dir, "sharded");
  const rows: number[] = [];
  for (let k = 0; k < 3; k++) {
    const r = await runCli(shardArgs(input, out, { shard: `${k}/3` }));
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, new RegExp(`shard ${k}/3: rows \\d+-\\d+ of 203`));
    const meta = JSON.parse(
      readFileSync(join(out, shardFolder(k, 3), `${STEM}.metadata.json`), "utf8"),
    );
    assert.equal(
      meta.shard.first_row,
      rows.reduce((a, b) => a + b, 0),
    );
    rows.push(meta.shard.rows);
  }
  assert.deepEqual(rows, [67, 68, 68], "floor(k·203/3) bounds");
  // The same split on every retry: a shard run again is complete, nothing redone.
  const again = await runCli(shardArgs(input, out, { shard: "1/3" }));
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stderr, /nothing to do/);

  const merged = await runMerge(["--output_dir", out]);
  assert.equal(merged.code, 0, merged.stderr);
  const reference = join(dir, "reference");
  const ref = await runCli(shardArgs(input, reference));
  assert.equal(ref.code, 0, ref.stderr);
  for (const file of [`${STEM}.npy`, `${STEM}.jsonl`]) {
    assert.ok(readFileSync(join(out, file)).equals(readFileSync(join(reference, file))), file);
  }
  const meta = JSON.parse(readFileSync(join(out, `${STEM}.metadata.json`), "utf8"));
  assert.equal(meta.num_paragraphs, 203);
  assert.deepEqual(
    meta.merged_from.folders,
    [0, 1, 2].map((k) => shardFolder(k, 3)),
  );
  const verified = await runVerify(["--output_dir", out, "--input_file", input]);
  assert.equal(verified.code, 0, verified.stdout + verified.stderr);

  // Another format and dtype at the merge: int8 from ranges over all rows, as one int8 run.
  const int8 = await runMerge([
    "--output_dir",
    out,
    "--output_dtype",
    "int8",
    "--output_format",
    "npy,parquet",
  ]);
  assert.equal(int8.code, 0, int8.stderr);
  const refInt8 = join(dir, "reference-int8");
  const r8 = await runCli(
    shardArgs(input, refInt8, { output_dtype: "int8", output_format: "npy,parquet" }),
  );
  assert.equal(r8.code, 0, r8.stderr);
  assert.ok(
    readFileSync(join(out, `${STEM}.npy`)).equals(readFileSync(join(refInt8, `${STEM}.npy`))),
  );
  assert.ok(
    !existsSync(join(out, `${STEM}.jsonl`)),
    "the earlier merge's JSONL is not left behind",
  );
  const v8 = await runVerify(["--output_dir", out, "--input_file", input]);
  assert.equal(v8.code, 0, v8.stdout + v8.stderr);
});

test("--num_shards takes the index from JOB_COMPLETION_INDEX; bad shard flags are one clear line", async () => {
  const { dir, input } = inputDir("shards-index", corpusSlice(40));
  const out = join(dir, "out");
  const env = testEnv({ JOB_COMPLETION_INDEX: "1" });
  const r = await spawnBare(
    ["--progress", "none", ...shardArgs(input, out, { num_shards: 2 })],
    env,
  ).done;
  assert.equal(r.code, 0, r.stderr);
  assert.ok(existsSync(join(out, shardFolder(1, 2), `${STEM}.npy`)));
  const cases: [Record<string, string | number>, NodeJS.ProcessEnv, RegExp][] = [
    [{ shard: "4/4" }, testEnv(), /shard index 4 is not below the count 4/],
    [{ shard: "two" }, testEnv(), /--shard must be K\/N/],
    [{ num_shards: 2 }, testEnv({ JOB_COMPLETION_INDEX: "" }), /JOB_COMPLETION_INDEX/],
    [
      { shard: "0/2", output_dtype: "int8" },
      testEnv(),
      /a shard writes a float32 \.npy for the merge/,
    ],
  ];
  for (const [flags, caseEnv, expected] of cases) {
    const bad = await spawnBare(
      ["--progress", "none", ...shardArgs(input, join(dir, "bad"), flags)],
      caseEnv,
    ).done;
    assert.equal(bad.code, 2, bad.stderr);
    assert.match(onlyErrorLine(bad.stderr), expected);
  }
});

test("a shard's checkpoint refuses another split, naming the difference; the merge refuses unfinished shards, naming them", async () => {
  const { dir, input } = inputDir("shards-refuse", corpusSlice(60));
  const out = join(dir, "out");
  const first = await runCli(shardArgs(input, out, { shard: "1/4" }));
  assert.equal(first.code, 0, first.stderr);
  // The folder of shard 1/4 passed off as shard 1/3.
  renameSync(join(out, shardFolder(1, 4)), join(out, shardFolder(1, 3)));
  const other = await runCli(shardArgs(input, out, { shard: "1/3" }));
  assert.equal(other.code, 1, other.stderr);
  assert.match(
    onlyErrorLine(other.stderr),
    /made for another split of the input \(shard count 4 → 3, rows 15\+15 → 20\+20\)/,
  );
  renameSync(join(out, shardFolder(1, 3)), join(out, shardFolder(1, 4)));

  const refused = await runMerge(["--output_dir", out]);
  assert.equal(refused.code, 1, refused.stderr);
  assert.match(
    onlyErrorLine(refused.stderr),
    /3 of 4 shards are not finished: shard-00000-of-00004 \(not started\); shard-00002-of-00004 \(not started\); shard-00003-of-00004 \(not started\)/,
  );
  assert.ok(!existsSync(join(out, `${STEM}.npy`)), "no merged file claims to be complete");
});

test("a merge killed with SIGKILL at random moments and run again gives the same bytes", async () => {
  const { dir, input } = inputDir("shards-merge-kill", corpusSlice(2400));
  const out = join(dir, "out");
  for (let k = 0; k < 2; k++) {
    const r = await runCli(
      shardArgs(input, out, { shard: `${k}/2`, batch_size: 64, checkpoint_interval: 512 }),
    );
    assert.equal(r.code, 0, r.stderr);
  }
  const clean = join(dir, "clean");
  cpSync(out, clean, { recursive: true });
  const m = await runMerge(["--output_dir", clean, "--output_format", "npy,jsonl,parquet"]);
  assert.equal(m.code, 0, m.stderr);

  const next = seededRandom(20261201);
  let kills = 0;
  for (let attempt = 0; attempt < 3; attempt++) {
    const { child, done } = spawnBare(
      ["merge", "--output_dir", out, "--output_format", "npy,jsonl,parquet"],
      testEnv(),
    );
    await sleep(150 + Math.round(next() * 600));
    const killed = child.kill("SIGKILL");
    const result = await done;
    // Killed before its metadata was written: the merge was stopped halfway.
    if (killed && result.signal === "SIGKILL" && !existsSync(join(out, `${STEM}.metadata.json`)))
      kills++;
  }
  const finish = await runMerge(["--output_dir", out, "--output_format", "npy,jsonl,parquet"]);
  assert.equal(finish.code, 0, finish.stderr);
  assert.ok(kills >= 1, "at least one kill landed mid-merge");
  for (const ext of [".npy", ".jsonl", ".parquet"]) {
    const file = `${STEM}${ext}`;
    assert.ok(readFileSync(join(out, file)).equals(readFileSync(join(clean, file))), file);
  }
  assert.equal(readLedger(join(out, shardFolder(0, 2))).batches > 0, true);
  const verified = await runVerify(["--output_dir", out, "--input_file", input]);
  assert.equal(verified.code, 0, verified.stdout + verified.stderr);
});
