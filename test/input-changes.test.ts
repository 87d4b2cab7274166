import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import {
  closeSync,
  existsSync,
  openSync,
  readFileSync,
  truncateSync,
  utimesSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { InputChangedError, RowReader } from "../src/input/rows.js";
import { scanInput } from "../src/input/scan.js";
import { cliArgs } from "./cli-args.js";
import {
  CLI,
  errorLines,
  inputDir,
  paragraphLines,
  safeDone,
  serverForTests,
  sleep,
  spawnCli,
  tempDir,
  testEnv,
} from "./helpers.js";

const STEM = "all-MiniLM-L6-v2";
const OPTIONS = { maxTextChars: 100_000, skipInvalid: false };

const server = serverForTests();

function lines(count: number): string[] {
  return paragraphLines(count, (i) => [
    `paper-${String(i).padStart(6, "0")}`,
    `Paragraph ${i} ${"y".repeat(i % 30)}`,
  ]);
}

/** Overwrites bytes in place: same size, new mtime. */
function patch(path: string, search: string, replacement: string): void {
  assert.equal(search.length, replacement.length);
  const offset = readFileSync(path).indexOf(search);
  assert.ok(offset >= 0);
  const fd = openSync(path, "r+");
  writeSync(fd, Buffer.from(replacement), 0, replacement.length, offset);
  closeSync(fd);
}

test("a same-size edit after the scan stops the next read", async () => {
  const { input } = inputDir("changed", lines(50));
  const corpus = await scanInput(input, OPTIONS);
  const reader = new RowReader(corpus);
  try {
    assert.equal(reader.texts([0, 1]).length, 2);
    patch(input, "paper-000010", "paper-99999X");
    utimesSync(input, new Date(), new Date(Date.now() + 5000));
    assert.throws(() => reader.texts([10]), InputChangedError);
  } finally {
    reader.close();
  }
});

test("an edit that keeps size and mtime is caught by the sha256 before the metadata", async () => {
  const { input } = inputDir("changed-hash", lines(50));
  // Whole seconds, so that the mtime can be put back exactly.
  utimesSync(input, 1_700_000_000, 1_700_000_000);
  const corpus = await scanInput(input, OPTIONS);
  const reader = new RowReader(corpus);
  try {
    patch(input, "paper-000020", "paper-00002X");
    utimesSync(input, 1_700_000_000, 1_700_000_000);
    assert.doesNotThrow(() => reader.checkUnchanged());
    assert.throws(() => reader.verifyUnchanged(), /changed during the run \(its contents differ/);
  } finally {
    reader.close();
  }
});

test("a truncated file is named as changed, not a bug", async () => {
  const { input } = inputDir("truncated", lines(50));
  const reader = new RowReader(await scanInput(input, OPTIONS));
  try {
    truncateSync(input, 100);
    assert.throws(
      () => reader.paragraph(40),
      /in\.jsonl changed during the run \(size \d+ → 100 bytes\)/,
    );
  } finally {
    reader.close();
  }
});

async function editDuringRun(edit: (input: string) => void): Promise<void> {
  const { input, out } = inputDir("changed-run", lines(20_000));
  const run = spawnCli(
    cliArgs(input, out, STEM, {
      servers: server.target,
      batch_size: 4,
      max_workers: 1,
      checkpoint_interval: 8,
    }),
  );
  // Once batches are being done, the input is edited under the run.
  for (let i = 0; i < 2400 && safeDone(out) === 0; i++) await sleep(25);
  assert.equal(run.child.exitCode, null, "the run is still embedding");
  edit(input);
  const result = await run.done;
  assert.equal(result.code, 1, result.stderr);
  const errors = errorLines(result.stderr).filter((l) => l.startsWith("embed-multi: error:"));
  assert.equal(errors.length, 1, result.stderr);
  assert.match(errors[0] ?? "", /in\.jsonl changed during the run \(/);
  assert.doesNotMatch(result.stderr, /this is a bug/);
  assert.ok(!existsSync(join(out, `${STEM}.metadata.json`)), "nothing falsely complete");
}

test("a same-size edit during a run stops it with one plain line", async () => {
  await editDuringRun((input) => patch(input, "paper-019990", "paper-01999X"));
});

test("a truncation during a run stops it with one plain line", async () => {
  await editDuringRun((input) => truncateSync(input, 1000));
});

test("--input_file /dev/stdin (a pipe) is refused at once: it is read twice", async () => {
  const out = join(tempDir("stdin"), "out");
  const child = spawn(
    process.execPath,
    [CLI, "--progress", "none", ...cliArgs("/dev/stdin", out, STEM, { engine: "debug" })],
    { env: testEnv(), stdio: ["pipe", "pipe", "pipe"] },
  );
  let stderr = "";
  child.stderr.on("data", (d) => {
    stderr += d;
  });
  child.stdin.write(`${lines(3).join("\n")}\n`);
  child.stdin.end();
  const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
  assert.equal(code, 1, stderr);
  const errors = errorLines(stderr);
  assert.equal(errors.length, 1, stderr);
  assert.match(
    errors[0] ?? "",
    /--input_file \/dev\/stdin is a (pipe|socket); it needs a regular file: it is read twice/,
  );
});
