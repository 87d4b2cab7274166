import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { RowReader } from "../src/input/rows.js";
import { scanInput } from "../src/input/scan.js";
import { Encoder, encodedChunks, rangesFor } from "../src/output/derive.js";
import type { OutputDtype } from "../src/output/dtype.js";
import { formatFloat32 } from "../src/output/float.js";
import { exportJsonl } from "../src/output/jsonl.js";
import { NpyMatrixFile } from "../src/output/npy.js";
import { tempDir, writeLines } from "./helpers.js";

test("the JSONL writer's bytes equal the previous exporter's (formatFloat32, JSON.stringify) for string and safe-integer ids", async () => {
  const dir = tempDir("jsonl-bytes");
  const rows = 2500; // more than two chunks of 1024
  const dim = 97;
  const lines = Array.from({ length: rows }, (_, i) =>
    JSON.stringify({
      paper_id: i % 3 === 0 ? i * 7 : `2212.${i}/é"\\`,
      paragraph_index: i % 50,
      text: `text ${i}`,
    }),
  );
  const input = writeLines(join(dir, "in.jsonl"), lines);
  const corpus = await scanInput(input, { maxTextChars: 1000, skipInvalid: false });
  const matrix = NpyMatrixFile.create(join(dir, "m.npy"), rows, dim);
  const values = new Float32Array(rows * dim);
  const bits = new Uint32Array(values.buffer);
  let seed = 99;
  for (let i = 0; i < values.length; i++) {
    seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
    // Half random bit patterns (every magnitude), half embedding-like values.
    if (i % 2 === 0) bits[i] = seed;
    else values[i] = Math.fround((seed / 2 ** 32 - 0.5) * 0.2);
    if (!Number.isFinite(values[i])) values[i] = 0;
  }
  matrix.writeRows(
    Array.from({ length: rows }, (_, i) => i),
    new Uint8Array(values.buffer),
  );
  const reader = new RowReader(corpus);
  const encoder = new Encoder("float32", dim, null);
  const path = join(dir, "out.jsonl");
  await exportJsonl(path, encodedChunks(matrix, encoder), encoder, reader, "org/model");

  const expected = lines
    .map((line, r) => {
      const p = JSON.parse(line) as { paper_id: string | number; paragraph_index: number };
      const row = Array.from(values.subarray(r * dim, (r + 1) * dim), formatFloat32);
      return `{"paper_id":${JSON.stringify(p.paper_id)},"paragraph_index":${p.paragraph_index},"embedding":[${row.join(",")}],"model":"org/model"}\n`;
    })
    .join("");
  const written = readFileSync(path, "utf8");
  assert.equal(written.length, expected.length);
  assert.ok(written === expected, "byte-identical to the previous exporter");
  reader.close();
  matrix.close();
});

test("the JSONL formatted in worker threads is byte-identical to the inline writer's, in every dtype", async () => {
  const dir = tempDir("jsonl-threads");
  const rows = 1300;
  const dim = 45; // not a multiple of 8: binary rows end in a padded byte
  const lines = Array.from({ length: rows }, (_, i) =>
    JSON.stringify({ paper_id: i % 2 ? i : `p${i}/"é`, paragraph_index: i % 9, text: `t ${i}` }),
  );
  const input = writeLines(join(dir, "in.jsonl"), lines);
  const corpus = await scanInput(input, { maxTextChars: 1000, skipInvalid: false });
  const matrix = NpyMatrixFile.create(join(dir, "m.npy"), rows, dim);
  const values = new Float32Array(rows * dim);
  let seed = 7;
  for (let i = 0; i < values.length; i++) {
    seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
    values[i] = Math.fround((seed / 2 ** 32 - 0.5) * 0.3);
  }
  matrix.writeRows(
    Array.from({ length: rows }, (_, i) => i),
    new Uint8Array(values.buffer),
  );
  const reader = new RowReader(corpus);
  for (const dtype of [
    "float32",
    "float16",
    "int8",
    "uint8",
    "binary",
    "ubinary",
  ] as OutputDtype[]) {
    const encoder = new Encoder(dtype, dim, rangesFor(dtype, matrix));
    const inline = join(dir, `${dtype}-inline.jsonl`);
    const threaded = join(dir, `${dtype}-threads.jsonl`);
    // Chunks of 64 rows: 21 jobs over 2 threads, more than fit in flight at once.
    await exportJsonl(inline, encodedChunks(matrix, encoder, 64), encoder, reader, "m", 0);
    await exportJsonl(threaded, encodedChunks(matrix, encoder, 64), encoder, reader, "m", 2);
    const a = readFileSync(inline);
    const b = readFileSync(threaded);
    assert.equal(a.toString("utf8").split("\n").length, rows + 1, dtype);
    assert.ok(a.equals(b), `${dtype}: threads wrote other bytes`);
  }
  reader.close();
  matrix.close();
});
