import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import { NpyMatrixFile, npyHeader } from "../src/output/npy.js";
import { pythonJson, tempDir } from "./helpers.js";

test("the NPY header is padded so the data starts at a multiple of 64 bytes", () => {
  for (const [rows, dim] of [
    [1, 1],
    [5967, 384],
    [1_000_000, 1024],
    [123456789, 4096],
  ] as const) {
    const header = npyHeader(rows, dim);
    assert.equal(header.length % 64, 0);
    assert.equal(header.subarray(1, 6).toString("latin1"), "NUMPY");
    assert.equal(header[header.length - 1], 0x0a);
    assert.equal(header.readUInt16LE(8), header.length - 10);
  }
});

test("rows written at their offsets in any order read back in numpy at those rows", () => {
  const dir = tempDir("npy");
  const path = join(dir, "m.npy");
  const rows = 7;
  const dim = 3;
  const matrix = NpyMatrixFile.create(path, rows, dim);
  // Rows 5, 6 (a consecutive run), then 0, then 3.
  const order = Uint32Array.from([5, 6, 0, 3]);
  const values = new Float32Array(order.length * dim);
  order.forEach((row, i) => {
    for (let d = 0; d < dim; d++) values[i * dim + d] = row + d / 10;
  });
  matrix.writeRows(order, new Uint8Array(values.buffer));
  matrix.sync();
  matrix.close();

  const info = pythonJson<{ shape: number[]; dtype: string; rows: Record<string, number[]> }>(
    "npy_info.py",
    [path, "0", "1", "3", "5", "6"],
  );
  assert.deepEqual(info.shape, [rows, dim]);
  assert.equal(info.dtype, "float32");
  for (const row of [0, 3, 5, 6]) {
    const expected = [0, 1, 2].map((d) => Math.fround(row + d / 10));
    assert.deepEqual(info.rows[String(row)], expected);
  }
  assert.deepEqual(info.rows["1"], [0, 0, 0], "an unwritten row stays zero");
});

test("reopen accepts the same shape and refuses another", () => {
  const dir = tempDir("npy-reopen");
  const path = join(dir, "m.npy");
  NpyMatrixFile.create(path, 10, 4).close();
  const same = NpyMatrixFile.reopen(path, 10, 4);
  assert.ok(same);
  same.close();
  assert.equal(NpyMatrixFile.reopen(path, 11, 4), null);
  assert.equal(NpyMatrixFile.reopen(path, 10, 8), null);
  assert.equal(NpyMatrixFile.reopen(join(dir, "missing.npy"), 10, 4), null);
});
