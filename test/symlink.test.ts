import assert from "node:assert/strict";
import { lstatSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { cliArgs } from "./cli-args.js";
import { inputDir, paragraphLines, runCli } from "./helpers.js";

const STEM = "all-MiniLM-L6-v2";

test("links planted at outputs' partial and final paths are replaced, their targets untouched", async () => {
  const { dir, input, out } = inputDir(
    "symlink",
    paragraphLines(30, (i) => ["a", `text ${i}`]),
  );
  mkdirSync(out);
  const victims: string[] = [];
  for (const name of [
    `${STEM}.npy.partial`,
    `${STEM}.jsonl.partial`,
    `${STEM}.metadata.json.partial`,
    `${STEM}.jsonl`,
  ]) {
    const victim = join(dir, `victim-${name}`);
    writeFileSync(victim, "precious\n");
    symlinkSync(victim, join(out, name));
    victims.push(victim);
  }
  const result = await runCli(
    cliArgs(input, out, STEM, { engine: "debug", output_format: "both" }),
  );
  assert.equal(result.code, 0, result.stderr);
  for (const victim of victims) assert.equal(readFileSync(victim, "utf8"), "precious\n", victim);
  for (const name of [`${STEM}.npy`, `${STEM}.jsonl`, `${STEM}.metadata.json`]) {
    assert.ok(lstatSync(join(out, name)).isFile(), `${name} is a regular file`);
  }
  assert.equal(readFileSync(join(out, `${STEM}.jsonl`), "utf8").split("\n").length, 31);
});
