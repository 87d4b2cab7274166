import assert from "node:assert/strict";
import {
  closeSync,
  cpSync,
  openSync,
  readFileSync,
  rmSync,
  truncateSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import { before, test } from "node:test";
import { hashFile } from "../src/output/checksum.js";
import { readNpyShape } from "../src/output/npy.js";
import { cliArgs } from "./cli-args.js";
import {
  corpusSlice,
  errorLines,
  runCli,
  runVerify,
  tempDir,
  testEnv,
  withServer,
  writeLines,
} from "./helpers.js";

const ROWS = 40;
const DIM = 16;
let root = "";
let input = "";
let clean = "";

before(async () => {
  root = tempDir("verify");
  input = writeLines(join(root, "in.jsonl"), corpusSlice(ROWS, 7));
  clean = join(root, "clean");
  const result = await runCli(
    cliArgs(input, clean, ["dbg", "other"], { engine: "debug", debug_dim: DIM, batch_size: 8 }),
  );
  assert.equal(result.code, 0, result.stderr);
});

/** A debug-engine run of bge-small-en-v1.5 (a normalizing model) writing `format`. */
function bgeArgs(out: string, format: string): string[] {
  return cliArgs(input, out, "bge-small-en-v1.5", {
    engine: "debug",
    debug_dim: DIM,
    output_format: format,
  });
}

/** A copy of the clean outputs to damage. */
function copyOutputs(name: string): string {
  const dir = join(root, name);
  cpSync(clean, dir, { recursive: true });
  return dir;
}

function verifyCli(dir: string, ...extra: string[]) {
  return runVerify(["--output_dir", dir, ...extra]);
}

function dataOffset(path: string): number {
  const fd = openSync(path, "r");
  try {
    const shape = readNpyShape(fd);
    assert.ok(shape);
    return shape.dataOffset;
  } finally {
    closeSync(fd);
  }
}

function jsonlLines(path: string): string[] {
  return readFileSync(path, "utf8").split("\n").slice(0, -1);
}

test("the metadata records the sha256 and size of every output file", () => {
  const meta = JSON.parse(readFileSync(join(clean, "dbg.metadata.json"), "utf8")) as {
    files: Record<string, { sha256: string; bytes: number }>;
  };
  assert.deepEqual(Object.keys(meta.files).sort(), ["dbg.hashes", "dbg.jsonl", "dbg.npy"]);
  for (const name of ["dbg.npy", "dbg.jsonl", "dbg.hashes"]) {
    assert.deepEqual(meta.files[name], hashFile(join(clean, name)));
  }
});

test("clean outputs pass, with and without the input: one verdict line per model, exit 0", async () => {
  const bare = await verifyCli(clean);
  assert.equal(bare.code, 0, bare.stdout + bare.stderr);
  const withInput = await verifyCli(clean, "--input_file", input);
  assert.equal(withInput.code, 0, withInput.stdout + withInput.stderr);
  const lines = withInput.stdout.trim().split("\n");
  assert.equal(lines.length, 3, withInput.stdout);
  for (const [i, stem] of ["dbg", "other"].entries()) {
    assert.equal(
      lines[i],
      `ok    ${stem}: checksums; ${stem}.npy (${ROWS}, ${DIM}) float32; ${stem}.jsonl ${ROWS} lines, equal to the .npy, in input order; ${stem}.hashes ${ROWS} rows, each the hash of its input`,
    );
  }
  assert.match(lines[2] ?? "", /verified 2 models in .*: all ok/);
  assert.equal(withInput.stderr, "");
});

test("a flipped byte in the .npy fails: hash mismatch, and the row where the JSONL disagrees", async () => {
  const dir = copyOutputs("flipped");
  const npy = join(dir, "dbg.npy");
  const fd = openSync(npy, "r+");
  // The lowest mantissa byte of value 3 of row 5: a small change that stays finite.
  const at = dataOffset(npy) + (5 * DIM + 3) * 4;
  const byte = Buffer.alloc(1);
  byte[0] = (readFileSync(npy)[at] ?? 0) ^ 0x01;
  writeSync(fd, byte, 0, 1, at);
  closeSync(fd);
  const result = await verifyCli(dir, "--input_file", input);
  assert.equal(result.code, 1);
  assert.match(result.stdout, /^FAIL {2}dbg: dbg\.npy: sha256 differs from the metadata/m);
  assert.match(
    result.stdout,
    /dbg\.jsonl line 6: value 3 is .*row 5 of the \.npy holds .*disagree/,
  );
  assert.match(result.stdout, /^ok {4}other:/m, "the other model still passes");
  assert.match(result.stdout, /1 of 2 models failed verification/);
});

test("a truncated JSONL fails, naming the cut line and the missing rows", async () => {
  const dir = copyOutputs("truncated");
  const jsonl = join(dir, "dbg.jsonl");
  const size = readFileSync(jsonl).length;
  truncateSync(jsonl, Math.floor(size / 2));
  const result = await verifyCli(dir);
  assert.equal(result.code, 1);
  assert.match(result.stdout, /dbg\.jsonl: \d+ bytes, the metadata says \d+ \(truncated\)/);
  assert.match(result.stdout, /dbg\.jsonl line \d+: not valid JSON/);
  assert.match(
    result.stdout,
    /dbg\.jsonl line \d+: no newline at the end \(the file was cut short\)/,
  );
  assert.match(
    result.stdout,
    new RegExp(`dbg\\.jsonl: \\d+ lines, the metadata says ${ROWS} rows`),
  );
});

test("a missing metadata file fails, found through the checkpoint or through the .npy", async () => {
  const dir = copyOutputs("no-metadata");
  rmSync(join(dir, "other.metadata.json"));
  const result = await verifyCli(dir);
  assert.equal(result.code, 1);
  assert.match(
    result.stdout,
    /^FAIL {2}other: other\.metadata\.json is missing \(the model is in the checkpoint/m,
  );
  assert.match(result.stdout, /^ok {4}dbg:/m);
  // Copied without the checkpoint (to another machine): the orphan .npy gives it away.
  rmSync(join(dir, "embed-multi.checkpoint.sqlite"));
  const copied = await verifyCli(dir);
  assert.equal(copied.code, 1);
  assert.match(
    copied.stdout,
    /^FAIL {2}other: other\.metadata\.json is missing \(the model is in other\.jsonl\)/m,
  );
});

test("a shuffled JSONL fails, naming the first line out of input order", async () => {
  const dir = copyOutputs("shuffled");
  const jsonl = join(dir, "dbg.jsonl");
  const lines = jsonlLines(jsonl);
  const swapped = [...lines];
  [swapped[2], swapped[3]] = [lines[3] ?? "", lines[2] ?? ""];
  writeFileSync(jsonl, swapped.map((l) => `${l}\n`).join(""));
  const result = await verifyCli(dir, "--input_file", input);
  assert.equal(result.code, 1);
  assert.match(result.stdout, /dbg\.jsonl: sha256 differs from the metadata/);
  assert.match(
    result.stdout,
    /dbg\.jsonl line 3: paper_id .* paragraph_index \d+, but row 2 of the input \(line 3\) is .*out of order/,
  );
  assert.match(result.stdout, /dbg\.jsonl line 3: value 0 is .*disagree/);
});

test("a NaN row is found and named even when the digests were recomputed over it", async () => {
  const dir = copyOutputs("nan");
  const npy = join(dir, "dbg.npy");
  const fd = openSync(npy, "r+");
  const nan = Buffer.alloc(4);
  nan.writeFloatLE(Number.NaN);
  writeSync(fd, nan, 0, 4, dataOffset(npy) + (7 * DIM + 2) * 4);
  closeSync(fd);
  const metaPath = join(dir, "dbg.metadata.json");
  const meta = JSON.parse(readFileSync(metaPath, "utf8")) as { files: Record<string, unknown> };
  meta.files["dbg.npy"] = hashFile(npy);
  writeFileSync(metaPath, JSON.stringify(meta));
  const result = await verifyCli(dir, "--input_file", input);
  assert.equal(result.code, 1);
  assert.match(result.stdout, /^FAIL {2}dbg: dbg\.npy row 7 \(input line 8\): NaN at dimension 2/m);
  assert.doesNotMatch(result.stdout, /dbg\.npy: sha256/);
});

test("another input than the one embedded fails", async () => {
  const other = writeLines(join(root, "other.jsonl"), corpusSlice(ROWS, 200));
  const result = await verifyCli(clean, "--input_file", other);
  assert.equal(result.code, 1);
  assert.match(result.stdout, /other\.jsonl is not the input these outputs were made from/);
  assert.match(result.stdout, /dbg\.jsonl line 1: paper_id .*out of order or from another input/);
});

test("--sample re-embeds rows on the embedded server and on a given one; a perturbed server fails", async () => {
  const embedded = await verifyCli(clean, "--input_file", input, "--sample", "6", "--seed", "11");
  assert.equal(embedded.code, 0, embedded.stdout + embedded.stderr);
  assert.match(
    embedded.stdout,
    /^ok {4}dbg: .*; sample on 127\.0\.0\.1:\d+: 6 rows \(seed 11\), worst cosine 1\.000000$/m,
  );
  const serverArgs = ["--engine", "debug", "--debug-dim", String(DIM)];
  await withServer(serverArgs, (good) =>
    withServer(
      serverArgs,
      async (bent) => {
        const same = await verifyCli(
          clean,
          "--input_file",
          input,
          "--sample",
          "5",
          "--servers",
          good.target,
        );
        assert.equal(same.code, 0, same.stdout + same.stderr);
        assert.match(same.stdout, /5 rows \(seed \d+\), worst cosine/);
        const off = await verifyCli(
          clean,
          "--input_file",
          input,
          "--sample",
          "5",
          "--seed",
          "3",
          "--servers",
          bent.target,
        );
        assert.equal(off.code, 1, off.stdout);
        assert.match(
          off.stdout,
          new RegExp(
            `^FAIL  dbg: sample on ${bent.target.replaceAll(".", "\\.")}: row \\d+ \\(input line \\d+\\) has cosine 0\\.\\d+ with the stored vector, below --tolerance 0\\.999 \\(5 rows, seed 3\\)`,
            "m",
          ),
        );
        // Both at once: the good one passes, the perturbed one is named.
        const both = await verifyCli(
          clean,
          "--input_file",
          input,
          "--sample",
          "4",
          "--servers",
          `${good.target},${bent.target}`,
        );
        assert.equal(both.code, 1);
        assert.ok(both.stdout.includes(`sample on ${bent.target}: row`));
        assert.ok(!both.stdout.includes(`sample on ${good.target}: row`));
        // A loose enough tolerance lets the perturbed server pass: the threshold is the flag's.
        const loose = await verifyCli(
          clean,
          "--input_file",
          input,
          "--sample",
          "4",
          "--tolerance",
          "0.1",
          "--servers",
          bent.target,
        );
        assert.equal(loose.code, 0, loose.stdout);
      },
      testEnv(),
      { perturb: 1 },
    ),
  );
});

test("bad verify flags: one line, exit 2; a folder without outputs: one line, exit 1", async () => {
  const cases: [string[], RegExp, number][] = [
    [[], /--output_dir is required/, 2],
    [["--output_dir", clean, "--sample", "3"], /--sample needs --input_file/, 2],
    [
      ["--output_dir", clean, "--input_file", input, "--sample", "0"],
      /--sample must be from 1 to \d+ \(got 0\)/,
      2,
    ],
    [["--output_dir", clean, "--bogus"], /Unknown argument: bogus/, 2],
    [["--output_dir", join(root, "nowhere")], /is not a folder/, 1],
    [["--output_dir", tempDir("empty-out")], /no embed-multi outputs in/, 1],
  ];
  for (const [args, message, code] of cases) {
    const result = await runVerify(args);
    assert.equal(result.code, code, `${args.join(" ")}: ${result.stderr}`);
    const lines = errorLines(result.stderr);
    assert.equal(lines.length, 1, result.stderr);
    assert.match(lines[0] ?? "", /^embed-multi verify: error: /);
    assert.match(lines[0] ?? "", message);
  }
  const help = await runVerify(["--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /--sample/);
  assert.match(help.stdout, /--tolerance/);
  const mainHelp = await runCli(["--help"]);
  assert.match(mainHelp.stdout, /verify --output_dir DIR/);
});

test("JSONL-only outputs verify and sample against the JSONL; a normalizing model's norms are checked", async () => {
  const dir = join(root, "jsonl-only");
  const run = await runCli(bgeArgs(dir, "jsonl"));
  assert.equal(run.code, 0, run.stderr);
  const ok = await verifyCli(dir, "--input_file", input, "--sample", "5", "--seed", "2");
  assert.equal(ok.code, 0, ok.stdout + ok.stderr);
  assert.match(
    ok.stdout,
    /^ok {4}bge-small-en-v1\.5: checksums; bge-small-en-v1\.5\.jsonl 40 lines, in input order; bge-small-en-v1\.5\.hashes 40 rows, each the hash of its input; sample on \S+: 5 rows \(seed 2\), worst cosine 1\.000000$/m,
  );

  // The same model as .npy: its rows are normalized, and a row that is not is named.
  const npyDir = join(root, "normalized");
  const npyRun = await runCli(bgeArgs(npyDir, "npy"));
  assert.equal(npyRun.code, 0, npyRun.stderr);
  assert.equal((await verifyCli(npyDir)).code, 0);
  const npy = join(npyDir, "bge-small-en-v1.5.npy");
  const at = dataOffset(npy) + 9 * DIM * 4;
  const row = readFileSync(npy).subarray(at, at + DIM * 4);
  const scaled = Buffer.alloc(DIM * 4);
  for (let d = 0; d < DIM; d++) scaled.writeFloatLE(row.readFloatLE(d * 4) * 1.01, d * 4);
  const fd = openSync(npy, "r+");
  writeSync(fd, scaled, 0, scaled.length, at);
  closeSync(fd);
  const bad = await verifyCli(npyDir);
  assert.equal(bad.code, 1);
  assert.match(
    bad.stdout,
    /bge-small-en-v1\.5\.npy row 9: norm 1\.01\d*, not 1 ± 0\.001 \(the model normalizes\)/,
  );
});
