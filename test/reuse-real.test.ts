import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { cliArgs } from "./cli-args.js";
import { inputDir, readNpy, runCli, tokenizedRows, withServer } from "./helpers.js";
import { corpusVersions } from "./reuse-corpus.js";

const MODEL = "all-MiniLM-L6-v2";

function texts(lines: readonly string[]): string[] {
  return lines.map((l) => (JSON.parse(l) as { text: string }).text);
}

function row(m: { dim: number; data: Float32Array }, i: number): Float32Array {
  return m.data.subarray(i * m.dim, (i + 1) * m.dim);
}

function bytesOf(values: Float32Array): Buffer {
  return Buffer.from(values.buffer, values.byteOffset, values.byteLength);
}

function cosine(a: Float32Array, b: Float32Array): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += (a[i] ?? 0) * (b[i] ?? 0);
    na += (a[i] ?? 0) ** 2;
    nb += (b[i] ?? 0) ** 2;
  }
  return dot / Math.sqrt(na * nb);
}

// The real model on a real server (CPU): v1 = 200 paragraphs, v2 = 20 edited,
// 20 deleted, 40 new, shuffled (bench/reuse.ts runs the 3,000-paragraph version).
test("real model: v2 reusing v1 sends only the new and changed texts; reused rows are the source's bytes, all rows match a full run", async () => {
  const { v1, v2, changed } = corpusVersions(200, 20, 20, 40);
  const a = inputDir("reuse-real-v1", v1);
  const b = inputDir("reuse-real-v2", v2);
  const full = join(b.dir, "full");
  await withServer([], async (server) => {
    const runOn = async (input: string, out: string, flags: Record<string, string> = {}) => {
      const before = await tokenizedRows(server.target);
      const result = await runCli(cliArgs(input, out, MODEL, { servers: server.target, ...flags }));
      assert.equal(result.code, 0, result.stderr);
      return { stderr: result.stderr, tokenized: (await tokenizedRows(server.target)) - before };
    };
    await runOn(a.input, a.out);
    const whole = await runOn(b.input, full);
    const reusing = await runOn(b.input, b.out, { reuse: a.out });
    // The probes are tokenized in both runs; the rows of v2 that v1 holds only in the first.
    assert.equal(whole.tokenized - reusing.tokenized, v2.length - changed);
    assert.match(
      reusing.stderr,
      new RegExp(`${changed} of ${v2.length} paragraphs go to the servers`),
    );
  });
  const meta = JSON.parse(readFileSync(join(b.out, `${MODEL}.metadata.json`), "utf8")) as {
    embedded_rows: number;
    reused_rows: number;
  };
  assert.equal(meta.embedded_rows, changed);
  assert.equal(meta.reused_rows, v2.length - changed);

  const source = readNpy(join(a.out, `${MODEL}.npy`));
  const ours = readNpy(join(b.out, `${MODEL}.npy`));
  const reference = readNpy(join(full, `${MODEL}.npy`));
  const sourceRow = new Map(texts(v1).map((t, i) => [t, i]));
  let reused = 0;
  let least = 1;
  texts(v2).forEach((t, i) => {
    const j = sourceRow.get(t);
    if (j !== undefined) {
      assert.ok(bytesOf(row(ours, i)).equals(bytesOf(row(source, j))), `row ${i}`);
      reused++;
    }
    least = Math.min(least, cosine(row(ours, i), row(reference, i)));
  });
  assert.equal(reused, v2.length - changed);
  assert.ok(least >= 0.99999, `least cosine to the full run ${least}`);
});
