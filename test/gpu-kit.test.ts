import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { ROOT, tempDir } from "./helpers.js";

const LIMIT_MIB = 60;
const BUDGET = join(ROOT, "bench", "gpu", "kit-budget.txt");

function budgets(): Map<string, number> {
  const parts = new Map<string, number>();
  for (const line of readFileSync(BUDGET, "utf8").split("\n")) {
    const fields = line.trim().split(/\s+/);
    if (line.startsWith("#") || fields.length !== 2) continue;
    parts.set(fields[0] as string, Number(fields[1]));
  }
  return parts;
}

test("the GPU kit's part ceilings add up to at most 60 MiB", () => {
  const parts = budgets();
  assert.ok(parts.has("orchestrator.tar.xz") && parts.has("node.xz"), BUDGET);
  const total = [...parts.values()].reduce((a, b) => a + b, 0);
  assert.ok(total <= LIMIT_MIB, `the ceilings add up to ${total} MiB`);
});

test("the GPU kit's orchestrator archive stays under its ceiling (gzip, an upper bound of xz -9)", () => {
  const out = tempDir("gpu-kit");
  const done = spawnSync("bash", ["bench/gpu/prepare.sh", "--orchestrator-only", out, "--fast"], {
    cwd: ROOT,
    encoding: "utf8",
    timeout: 300_000,
  });
  assert.equal(done.status, 0, done.stderr);
  const archive = join(out, "orchestrator.tar.gz");
  const mib = statSync(archive).size / 1024 / 1024;
  const ceiling = budgets().get("orchestrator.tar.xz") ?? 0;
  assert.ok(mib <= ceiling, `${mib.toFixed(1)} MiB, over ${ceiling}`);
  // It holds what the benchmark loads: the CLI, the ceiling benchmark, the SQLite addon.
  const listing = spawnSync("tar", ["-tzf", archive], { encoding: "utf8" }).stdout;
  for (const path of [
    "orchestrator/bin/embed-multi.js",
    "orchestrator/dist/bench/ceiling.js",
    "orchestrator/dist/bench/gpu/plan.js",
    "orchestrator/dist/test/cli-args.js",
    "orchestrator/node_modules/better-sqlite3/build/Release/better_sqlite3.node",
  ]) {
    assert.ok(listing.includes(path), `${path} is not in the archive`);
  }
  assert.ok(!existsSync(join(out, "orchestrator")), "the unpacked copy is left behind");
});
