import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { join } from "node:path";
import { test } from "node:test";
import { cliArgs } from "./cli-args.js";
import { CLI, corpusSlice, runCli, tempDir, testEnv, writeLines } from "./helpers.js";

/** Runs the CLI with `args`, its stdout closed by the reader at once (as `| head -0` does). */
function withClosedStdout(
  args: readonly string[],
): Promise<{ code: number | null; stderr: string }> {
  const child = spawn(process.execPath, [CLI, ...args], { env: testEnv() });
  child.stdout.destroy();
  let stderr = "";
  child.stderr.on("data", (d) => {
    stderr += d;
  });
  return new Promise((resolve) => child.on("close", (code) => resolve({ code, stderr })));
}

test("a closed stdout ends a command quietly, as a closed pipe would", async () => {
  const dir = tempDir("closed-pipe");
  const input = writeLines(join(dir, "in.jsonl"), corpusSlice(8));
  const out = join(dir, "out");
  const made = await runCli(cliArgs(input, out, "all-MiniLM-L6-v2", { engine: "debug" }));
  assert.equal(made.code, 0, made.stderr);
  for (const args of [["verify", "--output_dir", out], ["--help"]]) {
    const result = await withClosedStdout(args);
    assert.doesNotMatch(result.stderr, /EPIPE|Error|at /, `${args[0]}: no stack trace`);
    assert.ok(result.code === 0 || result.code === 141, `${args[0]}: exit ${result.code}`);
  }
});
