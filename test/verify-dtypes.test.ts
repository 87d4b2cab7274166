import assert from "node:assert/strict";
import { closeSync, cpSync, openSync, readFileSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { before, test } from "node:test";
import { hashFile } from "../src/output/checksum.js";
import { readNpyLayout } from "../src/output/npy.js";
import { corpusSlice, runCli, runVerify, tempDir, writeLines } from "./helpers.js";

const STEM = "all-MiniLM-L6-v2";
const ROWS = 60;
/** Not a multiple of 8: binary rows end in a padded byte. */
const DIM = 100;
let root = "";
let input = "";
const clean = new Map<string, string>();

before(async () => {
  root = tempDir("verify-dtypes");
  input = writeLines(join(root, "in.jsonl"), corpusSlice(ROWS, 3));
  for (const dtype of ["int8", "binary"]) {
    const out = join(root, dtype);
    const result = await runCli([
      ...["--input_file", input, "--output_dir", out, "--models", STEM],
      ...["--engine", "debug", "--debug_dim", String(DIM), "--batch_size", "16"],
      ...["--output_dtype", dtype, "--output_format", "npy,jsonl,parquet"],
    ]);
    assert.equal(result.code, 0, result.stderr);
    clean.set(dtype, out);
  }
});

function copyOutputs(dtype: string, name: string): string {
  const dir = join(root, name);
  cpSync(clean.get(dtype) ?? "", dir, { recursive: true });
  return dir;
}

/** Flips the low bit of the byte at `at` (negative: from the end). */
function flipByte(path: string, at: number): void {
  const data = readFileSync(path);
  const offset = at < 0 ? data.length + at : at;
  const fd = openSync(path, "r+");
  writeSync(fd, Buffer.from([(data[offset] ?? 0) ^ 0x01]), 0, 1, offset);
  closeSync(fd);
}

/** Records the file's new digest in the metadata, as if the damage had happened before it was hashed. */
function rehash(dir: string, name: string): void {
  const metaPath = join(dir, `${STEM}.metadata.json`);
  const meta = JSON.parse(readFileSync(metaPath, "utf8")) as { files: Record<string, unknown> };
  meta.files[name] = hashFile(join(dir, name));
  writeFileSync(metaPath, JSON.stringify(meta));
}

/** embed-multi verify of the outputs in `dir`, checked against the input file. */
function verifyAgainstInput(dir: string, ...extra: string[]) {
  return runVerify(["--output_dir", dir, "--input_file", input, ...extra]);
}

test("clean int8 and binary outputs with Parquet pass: every file read, values equal, ids in input order, a sample compared after quantizing", async () => {
  const int8 = await verifyAgainstInput(clean.get("int8") ?? "", "--sample", "6");
  assert.equal(int8.code, 0, int8.stdout + int8.stderr);
  assert.match(
    int8.stdout,
    new RegExp(
      `^ok {4}${STEM}: checksums; ${STEM}\\.npy \\(${ROWS}, ${DIM}\\) int8; ${STEM}\\.jsonl ${ROWS} lines, equal to the \\.npy, in input order; ${STEM}\\.parquet ${ROWS} rows, equal to the \\.npy, ids in input order; ${STEM}\\.hashes ${ROWS} rows, each the hash of its input; sample on \\S+: 6 rows \\(seed \\d+\\), worst cosine 0\\.99\\d+ \\(int8 dequantized; re-quantized values at most 0 steps apart\\)$`,
      "m",
    ),
  );

  const binary = await verifyAgainstInput(clean.get("binary") ?? "", "--sample", "6");
  assert.equal(binary.code, 0, binary.stdout + binary.stderr);
  const width = Math.ceil(DIM / 8);
  assert.match(
    binary.stdout,
    new RegExp(`${STEM}\\.npy \\(${ROWS}, ${width}\\) int8 \\(binary: packed bits\\)`),
  );
  assert.match(binary.stdout, /\.parquet 60 rows, equal to the \.npy, ids in input order/);
  assert.match(binary.stdout, /worst row: 0\.00% of sign bits differ \(binary; at most 1\.42%/);
});

test("a flipped byte in the Parquet fails: by its checksum, and by the reader when the checksum was recomputed", async () => {
  const name = `${STEM}.parquet`;
  const dir = copyOutputs("int8", "parquet-flipped");
  const path = join(dir, name);
  flipByte(path, Math.floor(readFileSync(path).length / 2));
  const hashed = await verifyAgainstInput(dir);
  assert.equal(hashed.code, 1);
  assert.match(
    hashed.stdout,
    new RegExp(`^FAIL {2}${STEM}: ${STEM}\\.parquet: sha256 differs from the metadata`, "m"),
  );

  rehash(dir, name);
  const read = await verifyAgainstInput(dir);
  assert.equal(read.code, 1);
  assert.doesNotMatch(read.stdout, /sha256 differs/);
  assert.match(
    read.stdout,
    new RegExp(
      `${STEM}\\.parquet (row \\d+: value \\d+ is -?\\d+, but row \\d+ of the \\.npy holds -?\\d+: the two files disagree|row group \\d+: cannot be read)`,
    ),
  );

  // The footer's length damaged (a byte that carries no data, such as one of
  // the writer's name, is caught by the checksum alone): one line, no crash.
  const footer = copyOutputs("int8", "parquet-footer");
  flipByte(join(footer, name), -6);
  rehash(footer, name);
  const broken = await runVerify(["--output_dir", footer]);
  assert.equal(broken.code, 1, broken.stdout + broken.stderr);
  assert.match(broken.stdout, new RegExp(`^FAIL {2}${STEM}: ${STEM}\\.parquet`, "m"));
  assert.doesNotMatch(broken.stdout + broken.stderr, /this is a bug|\n\s+at /);
});

test("an int8 .npy whose values do not match the JSONL fails, naming the line and value", async () => {
  const dir = copyOutputs("int8", "npy-int8-changed");
  const npy = join(dir, `${STEM}.npy`);
  const fd = openSync(npy, "r");
  const shape = readNpyLayout(fd);
  closeSync(fd);
  assert.ok(typeof shape !== "string");
  flipByte(npy, shape.dataOffset + 4 * DIM + 9); // row 4, value 9
  rehash(dir, `${STEM}.npy`);
  const result = await verifyAgainstInput(dir);
  assert.equal(result.code, 1);
  assert.doesNotMatch(result.stdout, /sha256 differs/);
  assert.match(
    result.stdout,
    new RegExp(
      `${STEM}\\.jsonl line 5: value 9 is -?\\d+, but row 4 of the \\.npy holds -?\\d+: the two files disagree`,
    ),
  );
  assert.match(
    result.stdout,
    new RegExp(`${STEM}\\.parquet row 4: value 9 is -?\\d+, but row 4 of the \\.npy holds -?\\d+`),
  );
});

test("an .npy of another dtype than the metadata's output_dtype fails; so do binary padding bits", async () => {
  const dir = copyOutputs("binary", "binary-padding");
  const npy = join(dir, `${STEM}.npy`);
  const fd = openSync(npy, "r");
  const shape = readNpyLayout(fd);
  closeSync(fd);
  assert.ok(typeof shape !== "string");
  const width = Math.ceil(DIM / 8);
  flipByte(npy, shape.dataOffset + 2 * width + width - 1); // the last byte of row 2: a padding bit
  rehash(dir, `${STEM}.npy`);
  const padded = await runVerify(["--output_dir", dir]);
  assert.equal(padded.code, 1);
  assert.match(padded.stdout, new RegExp(`${STEM}\\.npy row 2: padding bits set in the last byte`));

  const other = copyOutputs("int8", "dtype-mismatch");
  const metaPath = join(other, `${STEM}.metadata.json`);
  const meta = JSON.parse(readFileSync(metaPath, "utf8")) as { output_dtype: string };
  meta.output_dtype = "uint8";
  writeFileSync(metaPath, JSON.stringify(meta));
  const mismatch = await runVerify(["--output_dir", other]);
  assert.equal(mismatch.code, 1);
  assert.match(
    mismatch.stdout,
    /\.npy: dtype \|i1, the metadata's output_dtype uint8 is stored as \|u1 \(uint8\)/,
  );
});
