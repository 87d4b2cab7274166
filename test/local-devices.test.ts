import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { cliArgs } from "./cli-args.js";
import { assertSameOutputs, corpusSlice, inputDir, onlyErrorLine, runCli } from "./helpers.js";

const STEM = "all-MiniLM-L6-v2";

test("no --servers and a device list: one embedded server per device, each with work, the same bytes as one server", async () => {
  const { dir, input } = inputDir("local-devices", corpusSlice(600));
  const flags = { engine: "debug", batch_size: 4, checkpoint_interval: 16, max_workers: 2 };
  const out = join(dir, "three");
  // Three CPU servers stand in for three GPUs (--device cuda:0,cuda:1,cuda:2 on a GPU host).
  const many = await runCli(cliArgs(input, out, STEM, { ...flags, device: "cpu,cpu,cpu" }));
  assert.equal(many.code, 0, many.stderr);
  assert.match(
    many.stderr,
    /starting 3 embedded inference servers \(cpu, cpu, cpu\), one per device/,
  );
  const meta = JSON.parse(readFileSync(join(out, `${STEM}.metadata.json`), "utf8"));
  assert.equal(new Set(meta.servers).size, 3, `every server embedded batches: ${meta.servers}`);

  const one = join(dir, "one");
  const single = await runCli(cliArgs(input, one, STEM, { ...flags, device: "cpu" }));
  assert.equal(single.code, 0, single.stderr);
  assertSameOutputs(one, out, STEM);

  const bad = await runCli(
    cliArgs(input, join(dir, "bad"), STEM, { ...flags, device: "cuda,cuda:1" }),
  );
  assert.equal(bad.code, 2);
  assert.match(onlyErrorLine(bad.stderr), /"cuda" already means every visible GPU/);
  const remote = await runCli(
    cliArgs(input, join(dir, "bad"), STEM, { servers: "127.0.0.1:1", device: "cuda:0,cuda:1" }),
  );
  assert.equal(remote.code, 2);
  assert.match(onlyErrorLine(remote.stderr), /with --servers give one device/);
});
