import assert from "node:assert/strict";
import { test } from "node:test";
import { cliArgs } from "./cli-args.js";
import { inputDir, paragraphLines, serverForTests, sleep, spawnCli, testEnv } from "./helpers.js";

/** Far under the 15-minute LoadModel deadline the run used to sit out. */
const GENEROUS_BOUND_MS = 60_000;

const server = serverForTests(["--engine", "debug"], testEnv(), { hangLoad: true });

for (const [signal, code] of [
  ["SIGTERM", 143],
  ["SIGINT", 130],
] as const) {
  test(`${signal} while the only server hangs in LoadModel ends the run with ${code}`, async () => {
    const { input, out } = inputDir(
      "signal",
      paragraphLines(10, (i) => ["a", `text ${i}`]),
    );
    const run = spawnCli(cliArgs(input, out, "all-MiniLM-L6-v2", { servers: server.target }));
    // Health and Info answer at once; by now the run waits on LoadModel, which never answers.
    await sleep(3000);
    assert.equal(run.child.exitCode, null, "still waiting for the model");
    run.child.kill(signal);
    let timer: NodeJS.Timeout | undefined;
    const bound = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), GENEROUS_BOUND_MS);
    });
    const outcome = await Promise.race([run.done, bound]);
    clearTimeout(timer);
    if (outcome === "timeout") {
      run.child.kill("SIGKILL");
      assert.fail(`${signal} did not end the wait`);
    }
    assert.equal(outcome.code, code, outcome.stderr);
    assert.match(outcome.stderr, new RegExp(`interrupted by ${signal}`));
    assert.doesNotMatch(outcome.stderr, /this is a bug/);
  });
}
