import assert from "node:assert/strict";
import { chmodSync, existsSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { cliArgs } from "./cli-args.js";
import {
  type CliResult,
  corpusSlice,
  errorLines,
  freePort,
  runCli,
  tempDir,
  writeLines,
} from "./helpers.js";

const good = (i: number) =>
  JSON.stringify({ paper_id: "2212.0001", paragraph_index: i, text: `Paragraph number ${i}.` });

/** One line on stderr, naming the problem; a non-zero exit; no stack trace. */
function assertOneLineError(result: CliResult, pattern: RegExp): void {
  assert.notEqual(result.code, 0, "non-zero exit");
  const lines = errorLines(result.stderr);
  const errors = lines.filter((l) => l.startsWith("embed-multi: error: "));
  assert.equal(errors.length, 1, `one error line, got:\n${result.stderr}`);
  assert.match(errors[0] ?? "", pattern);
  assert.ok(!/\n\s+at /.test(result.stderr), `no stack trace:\n${result.stderr}`);
}

/** Nothing in the output folder looks like a finished output. */
function assertNoCompleteOutput(outDir: string): void {
  if (!existsSync(outDir)) return;
  const finished = readdirSync(outDir).filter((f) => /\.(npy|jsonl|metadata\.json)$/.test(f));
  assert.deepEqual(finished, [], "no output file that looks complete");
}

async function runOn(
  lines: string[],
  extra: string[] = [],
): Promise<{ result: CliResult; out: string }> {
  const dir = tempDir("cli-err");
  const input = writeLines(join(dir, "in.jsonl"), lines);
  const out = join(dir, "out");
  const result = await runCli([...cliArgs(input, out, "all-MiniLM-L6-v2"), ...extra]);
  return { result, out };
}

test("malformed JSON: the line number and the problem", async () => {
  const { result, out } = await runOn([
    good(0),
    good(1),
    '{"paper_id": "x", "text": "oops"',
    good(3),
  ]);
  assertOneLineError(result, /in\.jsonl:3: malformed JSON/);
  assertNoCompleteOutput(out);
});

test("missing text", async () => {
  const { result, out } = await runOn([
    good(0),
    JSON.stringify({ paper_id: "x", paragraph_index: 1 }),
  ]);
  assertOneLineError(result, /in\.jsonl:2: missing field "text"/);
  assertNoCompleteOutput(out);
});

test("non-string text", async () => {
  const { result, out } = await runOn([
    JSON.stringify({ paper_id: "x", paragraph_index: 0, text: ["a"] }),
    good(1),
  ]);
  assertOneLineError(result, /in\.jsonl:1: field "text" must be a string, got an array/);
  assertNoCompleteOutput(out);
});

test("empty text", async () => {
  const { result, out } = await runOn([
    good(0),
    good(1),
    good(2),
    JSON.stringify({ paper_id: "x", paragraph_index: 3, text: "" }),
  ]);
  assertOneLineError(result, /in\.jsonl:4: field "text" is empty/);
  assertNoCompleteOutput(out);
});

test("huge text", async () => {
  const { result, out } = await runOn([
    good(0),
    JSON.stringify({ paper_id: "x", paragraph_index: 1, text: "word ".repeat(30_000) }),
  ]);
  assertOneLineError(
    result,
    /in\.jsonl:2: field "text" has 150000 characters, over the limit of 100000/,
  );
  assertNoCompleteOutput(out);
});

test("invalid UTF-8", async () => {
  const dir = tempDir("cli-utf8");
  const input = join(dir, "in.jsonl");
  writeFileSync(
    input,
    Buffer.concat([
      Buffer.from(`${good(0)}\n{"paper_id":"x","paragraph_index":1,"text":"`),
      Buffer.from([0xc3, 0x28]),
      Buffer.from('"}\n'),
    ]),
  );
  const result = await runCli([...cliArgs(input, join(dir, "out"), "all-MiniLM-L6-v2")]);
  assertOneLineError(result, /in\.jsonl:2: invalid UTF-8/);
});

test("missing input file", async () => {
  const dir = tempDir("cli-missing");
  const result = await runCli([
    ...cliArgs(join(dir, "nope.jsonl"), join(dir, "out"), "all-MiniLM-L6-v2"),
  ]);
  assertOneLineError(result, /cannot read input file .*nope\.jsonl: no such file or directory/);
});

test("output directory not writable", async () => {
  const dir = tempDir("cli-readonly");
  const input = writeLines(join(dir, "in.jsonl"), [good(0)]);
  let out: string;
  if (process.getuid?.() === 0) {
    // root ignores permission bits; sysfs refuses new files even to root.
    out = "/sys/kernel";
  } else {
    out = join(dir, "locked");
    mkdirSync(out);
    chmodSync(out, 0o555);
  }
  const result = await runCli([...cliArgs(input, out, "all-MiniLM-L6-v2")]);
  assertOneLineError(
    result,
    /cannot write to output directory .*: (permission denied|operation not permitted|read-only)/,
  );
  // An output directory under a regular file cannot even be created.
  const blocked = await runCli([...cliArgs(input, join(input, "sub"), "all-MiniLM-L6-v2")]);
  assertOneLineError(
    blocked,
    /cannot create output directory .*: (a parent is not a directory|no such file)/,
  );
});

test("unreachable --servers address: a clear error after --server_timeout, and nothing written", async () => {
  const port = await freePort();
  const { result, out } = await runOn(
    [good(0), good(1)],
    ["--servers", `127.0.0.1:${port}`, "--server_timeout", "1"],
  );
  assertOneLineError(
    result,
    new RegExp(`server 127\\.0\\.0\\.1:${port} is unreachable .*after 1 s \\(--server_timeout\\)`),
  );
  assertNoCompleteOutput(out);
});

test("unknown model: NOT_FOUND from the real server, named in one line", async () => {
  const { result, out } = await runOn(corpusSlice(3), ["--models", "no-such-org/no-such-model"]);
  assertOneLineError(result, /loading model "no-such-org\/no-such-model".*not found/);
  assertNoCompleteOutput(out);
});

test("bad flags are one line and exit 2", async () => {
  const unknownFlag = await runCli([...cliArgs("x", "y", "m"), "--bogus"]);
  assert.equal(unknownFlag.code, 2);
  assertOneLineError(unknownFlag, /Unknown argument: bogus/);
  const badValue = await runCli([...cliArgs("x", "y", "m"), "--batch_size", "0"]);
  assert.equal(badValue.code, 2);
  assertOneLineError(badValue, /--batch_size must be from 1 to 1000000 \(got 0\)/);
});
