import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { cliArgs } from "./cli-args.js";
import { corpusSlice, inputDir, runCli, runVerify } from "./helpers.js";

const STEM = "all-MiniLM-L6-v2";
const SERVER_NOTE = "starting the embedded inference server";
const DERIVED = /deriving them from its complete float32 all-MiniLM-L6-v2\.npy, without embedding/;

function runArgs(input: string, out: string, ...extra: string[]): string[] {
  return [
    ...cliArgs(input, out, STEM, { engine: "debug", debug_dim: 100, batch_size: 16 }),
    ...extra,
  ];
}

function bytes(dir: string, suffix: string): Buffer {
  return readFileSync(join(dir, `${STEM}${suffix}`));
}

interface Meta {
  output_dtype: string;
  outputs: string[];
  files: Record<string, { sha256: string; bytes: number }>;
}

/** The metadata lists exactly these files and the row hashes, with the digests of what is on disk. */
function assertMetadataDescribes(dir: string, dtype: string, formats: string[]): void {
  const suffixes = [...formats, ".hashes"];
  const meta = JSON.parse(bytes(dir, ".metadata.json").toString("utf8")) as Meta;
  assert.equal(meta.output_dtype, dtype);
  assert.deepEqual(Object.keys(meta.files).sort(), suffixes.map((s) => `${STEM}${s}`).sort());
  for (const suffix of suffixes) {
    const data = bytes(dir, suffix);
    const digest = meta.files[`${STEM}${suffix}`];
    assert.equal(digest?.bytes, data.length, suffix);
    assert.equal(digest?.sha256, createHash("sha256").update(data).digest("hex"), suffix);
  }
}

test("a finished float32 .npy is re-exported, not re-embedded: new formats, a deleted JSONL, another dtype", async () => {
  const { dir, input } = inputDir("reexport", corpusSlice(150, 40));
  const direct = join(dir, "direct");
  const first = await runCli(runArgs(input, direct, "--output_format", "both"));
  assert.equal(first.code, 0, first.stderr);
  assert.ok(first.stderr.includes(SERVER_NOTE), "the direct run embeds");

  const out = join(dir, "out");
  const npyOnly = await runCli(runArgs(input, out, "--output_format", "npy"));
  assert.equal(npyOnly.code, 0, npyOnly.stderr);

  // Asking for JSONL after an npy run.
  const both = await runCli(runArgs(input, out, "--output_format", "both"));
  assert.equal(both.code, 0, both.stderr);
  assert.match(both.stderr, DERIVED);
  assert.ok(!both.stderr.includes(SERVER_NOTE), `no server: ${both.stderr}`);
  assert.ok(bytes(out, ".jsonl").equals(bytes(direct, ".jsonl")), "JSONL as a direct run's");
  assert.ok(bytes(out, ".npy").equals(bytes(direct, ".npy")), ".npy unchanged");
  assertMetadataDescribes(out, "float32", [".npy", ".jsonl"]);

  // Only the JSONL deleted.
  rmSync(join(out, `${STEM}.jsonl`));
  const again = await runCli(runArgs(input, out, "--output_format", "both"));
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stderr, DERIVED);
  assert.ok(!again.stderr.includes(SERVER_NOTE), `no server: ${again.stderr}`);
  assert.ok(bytes(out, ".jsonl").equals(bytes(direct, ".jsonl")), "the JSONL re-exported");
  assertMetadataDescribes(out, "float32", [".npy", ".jsonl"]);

  // Another dtype, from the float32 run.
  const formats = ["--output_format", "npy,jsonl,parquet", "--output_dtype", "int8"];
  const directInt8 = join(dir, "direct-int8");
  const int8Run = await runCli(runArgs(input, directInt8, ...formats));
  assert.equal(int8Run.code, 0, int8Run.stderr);
  const derived = await runCli(runArgs(input, out, ...formats));
  assert.equal(derived.code, 0, derived.stderr);
  assert.match(derived.stderr, DERIVED);
  assert.ok(!derived.stderr.includes(SERVER_NOTE), `no server: ${derived.stderr}`);
  for (const suffix of [".npy", ".jsonl", ".parquet"]) {
    assert.ok(
      bytes(out, suffix).equals(bytes(directInt8, suffix)),
      `${suffix} as a direct int8 run's`,
    );
  }
  assertMetadataDescribes(out, "int8", [".npy", ".jsonl", ".parquet"]);
  const meta = (d: string) =>
    JSON.parse(bytes(d, ".metadata.json").toString("utf8")) as {
      quantization: unknown;
    };
  assert.deepEqual(meta(out).quantization, meta(directInt8).quantization);
  const checked = await runVerify(["--output_dir", out, "--input_file", input]);
  assert.equal(checked.code, 0, checked.stdout + checked.stderr);
  assert.match(checked.stdout, /\.parquet 150 rows, equal to the \.npy, ids in input order/);

  // A compact run keeps no float32 copy: float32 again means embedding again, and says why.
  const back = await runCli(runArgs(input, out, "--output_format", "npy"));
  assert.equal(back.code, 0, back.stderr);
  assert.match(
    back.stderr,
    /cannot be derived \(the run wrote int8, and no float32 copy is kept\): embedding it again/,
  );
  assert.ok(back.stderr.includes(SERVER_NOTE));
  assert.ok(bytes(out, ".npy").equals(bytes(direct, ".npy")));
});

test("a float32 .npy that does not match its metadata's checksum is not trusted: the model is embedded again", async () => {
  const { input, out } = inputDir("reexport-damaged", corpusSlice(40, 10));
  const first = await runCli(runArgs(input, out, "--output_format", "npy"));
  assert.equal(first.code, 0, first.stderr);
  const good = bytes(out, ".npy");
  const damaged = Buffer.from(good);
  damaged[damaged.length - 3] = (damaged[damaged.length - 3] ?? 0) ^ 0x40;
  writeFileSync(join(out, `${STEM}.npy`), damaged);

  const both = await runCli(runArgs(input, out, "--output_format", "both"));
  assert.equal(both.code, 0, both.stderr);
  assert.match(both.stderr, /does not match the checksum in its metadata\): embedding it again/);
  assert.ok(both.stderr.includes(SERVER_NOTE));
  assert.ok(bytes(out, ".npy").equals(good), "embedded again, the damage is gone");
});
