import assert from "node:assert/strict";
import {
  existsSync,
  linkSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { cliArgs } from "./cli-args.js";
import { corpusSlice, onlyErrorLine, runCli, runVerify, tempDir, writeLines } from "./helpers.js";

const STEM = "all-MiniLM-L6-v2";

/** A folder `od` holding the input `corpus.jsonl` and a config naming a model `corpus`. */
function inputInOutput(name: string): { od: string; input: string; config: string } {
  const dir = tempDir(name);
  const od = join(dir, "od");
  const input = writeLines(join(dir, "corpus.jsonl"), corpusSlice(40));
  const config = writeLines(join(dir, "models.yaml"), [
    "models:",
    "  corpus:",
    "    model_id: sentence-transformers/all-MiniLM-L6-v2",
  ]);
  return { od, input, config };
}

test("an input inside the output folder, under an output's name, is refused at once and left as it was", async () => {
  const { od, input, config } = inputInOutput("own-input");
  const first = await runCli(cliArgs(input, od, "corpus", { config, engine: "debug" }));
  assert.equal(first.code, 0, first.stderr);
  const inside = join(od, "corpus.jsonl");
  // The earlier run's JSONL output is replaced by the input itself.
  writeFileSync(inside, readFileSync(input));
  const before = readFileSync(inside);
  const variants: Record<string, true>[] = [{}, { restart: true }];
  for (const flags of variants) {
    const result = await runCli(
      cliArgs(inside, od, "corpus", { config, engine: "debug", progress: "none", ...flags }),
    );
    assert.notEqual(result.code, 0, result.stderr);
    assert.match(onlyErrorLine(result.stderr), /is the input file/);
    assert.doesNotMatch(result.stderr, /starting the embedded/, "refused before any work");
    assert.ok(readFileSync(inside).equals(before), "the input is untouched");
  }
});

test("an input hard-linked under an output's name is the input too (compared by inode, not by name)", async () => {
  const { od, input, config } = inputInOutput("own-input-link");
  const first = await runCli(cliArgs(input, od, "corpus", { config, engine: "debug" }));
  assert.equal(first.code, 0, first.stderr);
  rmSync(join(od, "corpus.jsonl"));
  linkSync(input, join(od, "corpus.jsonl"));
  const before = readFileSync(input);
  const result = await runCli(
    cliArgs(input, od, "corpus", { config, engine: "debug", restart: true }),
  );
  assert.notEqual(result.code, 0, result.stderr);
  assert.match(onlyErrorLine(result.stderr), /is the input file/);
  assert.ok(readFileSync(join(od, "corpus.jsonl")).equals(before), "the link is still the input");
});

test("--restart removes only the files this folder's checkpoint or metadata lists", async () => {
  const dir = tempDir("own-restart");
  const out = join(dir, "out");
  const input = writeLines(join(dir, "in.jsonl"), corpusSlice(20));
  const first = await runCli(cliArgs(input, out, STEM, { engine: "debug", output_format: "npy" }));
  assert.equal(first.code, 0, first.stderr);
  // A file of the user's under a name the tool could write, never written by it.
  const theirs = join(out, `${STEM}.parquet`);
  writeFileSync(theirs, "the user's own file\n");
  const again = await runCli(
    cliArgs(input, out, STEM, { engine: "debug", output_format: "npy", restart: true }),
  );
  assert.equal(again.code, 0, again.stderr);
  assert.equal(readFileSync(theirs, "utf8"), "the user's own file\n");
});

test("a symbolic link in place of the checkpoint is refused and its target left unchanged", async () => {
  const dir = tempDir("own-checkpoint-link");
  const out = join(dir, "out");
  const input = writeLines(join(dir, "in.jsonl"), corpusSlice(20));
  const target = join(dir, "target.sqlite");
  writeFileSync(target, "");
  mkdirSync(out);
  symlinkSync(target, join(out, "embed-multi.checkpoint.sqlite"));
  const result = await runCli(cliArgs(input, out, STEM, { engine: "debug" }));
  assert.notEqual(result.code, 0, result.stderr);
  assert.match(onlyErrorLine(result.stderr), /symbolic link/);
  assert.equal(readFileSync(target).length, 0, "the link's target is untouched");
  assert.deepEqual(
    readdirSync(dir).filter((f) => f.startsWith("target.sqlite-")),
    [],
    "no WAL files beside the target",
  );
});

for (const [firstFlags, secondFlags, gone] of [
  [
    { output_dtype: "int8", output_format: "npy,jsonl,parquet" },
    { output_dtype: "float32", output_format: "npy,jsonl" },
    ["parquet"],
  ],
  [
    { output_dtype: "float32", output_format: "npy,jsonl,parquet" },
    { output_dtype: "int8", output_format: "npy" },
    ["jsonl", "parquet"],
  ],
] as const) {
  test(`after ${firstFlags.output_dtype} ${firstFlags.output_format}, a run for ${secondFlags.output_dtype} ${secondFlags.output_format} leaves only what its metadata lists`, async () => {
    const dir = tempDir("own-stale");
    const out = join(dir, "out");
    const input = writeLines(join(dir, "in.jsonl"), corpusSlice(30));
    const base = { engine: "debug", batch_size: 8 };
    const first = await runCli(cliArgs(input, out, STEM, { ...base, ...firstFlags }));
    assert.equal(first.code, 0, first.stderr);
    const second = await runCli(cliArgs(input, out, STEM, { ...base, ...secondFlags }));
    assert.equal(second.code, 0, second.stderr);
    for (const ext of gone) {
      assert.equal(existsSync(join(out, `${STEM}.${ext}`)), false, `the ${ext} file is removed`);
    }
    const meta = JSON.parse(readFileSync(join(out, `${STEM}.metadata.json`), "utf8"));
    const listed = (meta.outputs as string[]).map((f) => f.split("/").pop());
    const ours = readdirSync(out).filter((f) => f.startsWith(STEM));
    assert.deepEqual(ours.sort(), [...listed].sort());
    const verified = await runVerify(["--output_dir", out]);
    assert.equal(verified.code, 0, verified.stderr + verified.stdout);
  });
}

test("verify fails on an output file of ours that the metadata does not list", async () => {
  const dir = tempDir("own-verify-unlisted");
  const out = join(dir, "out");
  const input = writeLines(join(dir, "in.jsonl"), corpusSlice(30));
  const first = await runCli(
    cliArgs(input, out, STEM, { engine: "debug", output_format: "npy,parquet" }),
  );
  assert.equal(first.code, 0, first.stderr);
  const second = await runCli(
    cliArgs(input, out, STEM, { engine: "debug", output_format: "npy,jsonl", restart: true }),
  );
  assert.equal(second.code, 0, second.stderr);
  // As an older version left it: the first run's Parquet file beside the new outputs.
  const elsewhere = join(dir, "elsewhere");
  const third = await runCli(
    cliArgs(input, elsewhere, STEM, { engine: "debug", output_format: "parquet" }),
  );
  assert.equal(third.code, 0, third.stderr);
  writeFileSync(join(out, `${STEM}.parquet`), readFileSync(join(elsewhere, `${STEM}.parquet`)));
  const verified = await runVerify(["--output_dir", out]);
  assert.notEqual(verified.code, 0, verified.stdout);
  assert.match(verified.stdout + verified.stderr, /not listed in its metadata/);
});
