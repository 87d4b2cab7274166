import assert from "node:assert/strict";
import { test } from "node:test";
import { buildRunConfig } from "../src/config.js";
import { cliArgs } from "./cli-args.js";
import { corpusSlice, inputDir, onlyErrorLine, runCli, runVerify } from "./helpers.js";

test("numeric flags are checked with their ranges when the command line is parsed", async () => {
  const { input, out } = inputDir("numeric-flags", corpusSlice(4));
  const cases: [string, string, RegExp][] = [
    ["truncate_dim", "abc", /--truncate_dim must be an integer from 0 to 65536 \(got "abc"\)/],
    ["truncate_dim", "99999999999", /--truncate_dim must be from 0 to 65536 \(got 99999999999\)/],
    ["batch_size", "2.5", /--batch_size must be an integer/],
    ["max_workers", "0", /--max_workers must be from 1 to 1024/],
    ["batch_timeout", "1e12", /--batch_timeout must be above 0 and at most \d+ seconds/],
    ["probe_tolerance", "1.5", /--probe_tolerance must be above 0 and at most 1/],
  ];
  for (const [flag, value, expected] of cases) {
    const result = await runCli(cliArgs(input, out, "all-MiniLM-L6-v2", { [flag]: value }));
    assert.equal(result.code, 2, `${flag} ${value}: ${result.stderr}`);
    const line = onlyErrorLine(result.stderr);
    assert.match(line, expected);
    assert.doesNotMatch(result.stderr, /NaN|INTERNAL|starting/, "refused before any server");
  }
  const verified = await runVerify(["--output_dir", out, "--sample", "ten"]);
  assert.notEqual(verified.code, 0);
  assert.match(verified.stderr, /--sample must be an integer/);
});

test("a resume notes that the stored plan overrules batch limits only when the user set them", () => {
  const base = { input_file: "in.jsonl", output_dir: "out", models: ["m/x"] };
  assert.equal(buildRunConfig(base, {}).planLimitsGiven, false);
  assert.equal(buildRunConfig({ ...base, batch_size: 16 }, {}).planLimitsGiven, true);
  assert.equal(buildRunConfig({ ...base, max_batch_tokens: 0 }, {}).planLimitsGiven, true);
});
