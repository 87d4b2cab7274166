import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { closeSync, openSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { checkBatch, NORM_TOLERANCE } from "../src/checks/batch.js";
import { compareProbes, DEFAULT_PROBE_TOLERANCE, probeRefusal } from "../src/checks/probe.js";
import { PROBE_SET_ID, PROBE_TEXTS } from "../src/checks/probe-texts.js";
import type { Matrix } from "../src/checks/vectors.js";
import { forEachLine } from "../src/input/lines.js";
import { digestFiles, hashFile } from "../src/output/checksum.js";
import { npyHeader, readNpyLayout } from "../src/output/npy.js";
import { sampleRows } from "../src/verify/sample.js";
import { tempDir } from "./helpers.js";

/** Rows of a seeded pseudo-random matrix, each normalized to norm 1 when asked. */
function randomMatrix(rows: number, dim: number, seed: number, normalize = true): Matrix {
  const data = new Float32Array(rows * dim);
  let s = seed;
  for (let i = 0; i < data.length; i++) {
    s = (s * 1103515245 + 12345) % 2147483648;
    data[i] = s / 1073741824 - 1;
  }
  if (normalize) {
    for (let r = 0; r < rows; r++) {
      let sum = 0;
      for (let d = 0; d < dim; d++) sum += (data[r * dim + d] ?? 0) ** 2;
      for (let d = 0; d < dim; d++) data[r * dim + d] = (data[r * dim + d] ?? 0) / Math.sqrt(sum);
    }
  }
  return { rows, dim, data };
}

test("checkBatch passes sound batches, normalized or not", () => {
  const m = randomMatrix(64, 384, 1);
  assert.equal(checkBatch(m.data, m.rows, m.dim, true), null);
  const raw = randomMatrix(64, 384, 2, false);
  assert.equal(checkBatch(raw.data, raw.rows, raw.dim, false), null);
  assert.ok(
    checkBatch(raw.data, raw.rows, raw.dim, true),
    "unnormalized rows fail a normalizing model",
  );
});

test("checkBatch names the first NaN, Inf, zero row and wrong norm", () => {
  const m = randomMatrix(10, 8, 3);
  const nan = Float32Array.from(m.data);
  nan[5 * 8 + 2] = Number.NaN;
  nan[7 * 8] = Number.NaN;
  assert.deepEqual(checkBatch(nan, 10, 8, true), {
    row: 5,
    kind: "non-finite",
    message: "row 5: NaN at dimension 2",
  });
  const inf = Float32Array.from(m.data);
  inf[3 * 8 + 7] = Number.NEGATIVE_INFINITY;
  assert.equal(checkBatch(inf, 10, 8, false)?.message, "row 3: -Infinity at dimension 7");
  const zero = Float32Array.from(m.data);
  zero.fill(0, 4 * 8, 5 * 8);
  assert.deepEqual(checkBatch(zero, 10, 8, false), {
    row: 4,
    kind: "zero-norm",
    message: "row 4: zero vector",
  });
  const scaled = Float32Array.from(m.data);
  for (let d = 0; d < 8; d++)
    scaled[6 * 8 + d] = (scaled[6 * 8 + d] ?? 0) * (1 + 3 * NORM_TOLERANCE);
  const problem = checkBatch(scaled, 10, 8, true);
  assert.equal(problem?.row, 6);
  assert.equal(problem?.kind, "norm");
  assert.match(problem?.message ?? "", /^row 6: norm 1\.003/);
  assert.equal(checkBatch(scaled, 10, 8, false), null, "norms are free for other models");
  const within = Float32Array.from(m.data);
  for (let d = 0; d < 8; d++) within[d] = (within[d] ?? 0) * (1 + NORM_TOLERANCE / 2);
  assert.equal(checkBatch(within, 10, 8, true), null);
});

test("checkBatch refuses a buffer shorter than rows × dim", () => {
  assert.equal(checkBatch(new Float32Array(10), 2, 8, false)?.kind, "non-finite");
});

test("compareProbes: identical and nearly identical pass, perturbed fail at the worst probe", () => {
  const stored = randomMatrix(13, 32, 4);
  const same = compareProbes(stored, { ...stored, data: Float32Array.from(stored.data) }, 0.999);
  assert.equal(same.pass, true);
  assert.ok(same.worstCosine > 0.999999);
  const noisy = Float32Array.from(stored.data);
  noisy[2 * 32] = (noisy[2 * 32] ?? 0) + 1e-3; // a float16-sized difference
  assert.equal(compareProbes(stored, { ...stored, data: noisy }, 0.999).pass, true);
  const bent = Float32Array.from(stored.data);
  for (let d = 0; d < 32; d++) bent[9 * 32 + d] = (bent[9 * 32 + d] ?? 0) + (d % 2 ? 0.2 : -0.2);
  const result = compareProbes(stored, { ...stored, data: bent }, 0.999);
  assert.equal(result.pass, false);
  assert.equal(result.worstProbe, 9);
  assert.ok(result.worstCosine < 0.999);
  assert.equal(compareProbes(stored, { ...stored, data: bent }, result.worstCosine).pass, true);
});

test("compareProbes fails NaN vectors and other shapes, never passing them", () => {
  const stored = randomMatrix(4, 8, 5);
  const nan = Float32Array.from(stored.data);
  nan[1 * 8 + 3] = Number.NaN;
  const r = compareProbes(stored, { ...stored, data: nan }, -1);
  assert.equal(r.pass, false);
  assert.equal(r.worstProbe, 1);
  assert.ok(Number.isNaN(r.worstCosine));
  const other = compareProbes(stored, randomMatrix(4, 16, 5), 0.5);
  assert.equal(other.pass, false);
  assert.match(other.shapeProblem ?? "", /4 vectors of dim 16, stored 4 of dim 8/);
});

test("probeRefusal is one line naming the server, the model, the worst cosine and the causes", () => {
  const stored = randomMatrix(3, 8, 6);
  const bent = randomMatrix(3, 8, 7);
  const c = compareProbes(stored, bent, DEFAULT_PROBE_TOLERANCE);
  const line = probeRefusal("10.0.0.2:50051", "bge-large-en-v1.5", c, DEFAULT_PROBE_TOLERANCE);
  assert.doesNotMatch(line, /\n/);
  assert.match(line, /^server 10\.0\.0\.2:50051 is kept out for model "bge-large-en-v1\.5"/);
  assert.ok(line.includes(`worst cosine ${c.worstCosine.toFixed(6)} (probe ${c.worstProbe})`));
  assert.match(line, /--probe_tolerance 0\.999/);
  assert.match(line, /weights revision, pooling, dtype or device/);
  const nan = probeRefusal(
    "h:1",
    "m",
    { pass: false, worstCosine: Number.NaN, worstProbe: 2, shapeProblem: null },
    0.999,
  );
  assert.match(nan, /probe 2 is not finite or zero/);
});

test("the probe texts cover short, truncated, non-ASCII, emoji, code and numbers", () => {
  assert.ok(PROBE_TEXTS.length >= 10 && PROBE_TEXTS.length <= 16);
  assert.equal(new Set(PROBE_TEXTS).size, PROBE_TEXTS.length, "no duplicates");
  assert.ok(PROBE_TEXTS.every((t) => t.trim().length > 0));
  assert.ok(
    PROBE_TEXTS.some((t) => t.length <= 10),
    "a short text",
  );
  // Over 512 tokens for any tokenizer: at least 600 whitespace-separated words.
  assert.ok(
    PROBE_TEXTS.some((t) => t.split(/\s+/).length > 600),
    "a text past 512 tokens",
  );
  assert.ok(
    PROBE_TEXTS.some((t) => /[\u4e00-\u9fff]/.test(t)),
    "CJK",
  );
  assert.ok(
    PROBE_TEXTS.some((t) => /\p{Extended_Pictographic}/u.test(t)),
    "emoji",
  );
  assert.ok(
    PROBE_TEXTS.some((t) => /[\u0590-\u06ff]/.test(t)),
    "right-to-left scripts",
  );
  assert.ok(
    PROBE_TEXTS.some((t) => t.includes("def ") && t.includes("\n")),
    "code",
  );
  assert.ok(
    PROBE_TEXTS.some((t) => /\d+\.\d+e\d+/.test(t)),
    "numbers",
  );
  assert.ok(Object.isFrozen(PROBE_TEXTS));
  const id = createHash("sha256").update(JSON.stringify(PROBE_TEXTS)).digest("hex").slice(0, 16);
  assert.equal(PROBE_SET_ID, id);
});

test("hashFile streams any size and matches a one-shot sha256; digestFiles keys by file name", () => {
  const dir = tempDir("checksum");
  const big = Buffer.alloc((4 << 20) * 2 + 12345);
  for (let i = 0; i < big.length; i++) big[i] = (i * 31) & 0xff;
  const path = join(dir, "big.bin");
  writeFileSync(path, big);
  const expected = createHash("sha256").update(big).digest("hex");
  assert.deepEqual(hashFile(path), { sha256: expected, bytes: big.length });
  writeFileSync(join(dir, "empty"), "");
  const files = digestFiles([path, join(dir, "empty")]);
  assert.deepEqual(Object.keys(files), ["big.bin", "empty"]);
  assert.equal(files.empty?.sha256, createHash("sha256").digest("hex"));
});

test("sampleRows is seeded, distinct, sorted and in range", () => {
  const a = sampleRows(1000, 20, 42);
  assert.deepEqual(a, sampleRows(1000, 20, 42));
  assert.notDeepEqual(a, sampleRows(1000, 20, 43));
  assert.equal(new Set(a).size, 20);
  assert.deepEqual(
    a,
    [...a].sort((x, y) => x - y),
  );
  assert.ok(a.every((r) => r >= 0 && r < 1000 && Number.isInteger(r)));
  assert.deepEqual(sampleRows(3, 10, 1), [0, 1, 2]);
});

test("readNpyLayout reads embed-multi's header and refuses other files", () => {
  const dir = tempDir("npy-layout");
  const path = join(dir, "m.npy");
  const header = npyHeader(7, 5);
  writeFileSync(path, header);
  const fd = openSync(path, "r");
  assert.deepEqual(readNpyLayout(fd), {
    descr: "<f4",
    fortranOrder: false,
    shape: [7, 5],
    dataOffset: header.length,
  });
  closeSync(fd);
  writeFileSync(path, "not numpy at all");
  const bad = openSync(path, "r");
  assert.equal(readNpyLayout(bad), "not an NPY file (bad magic)");
  closeSync(bad);
});

test("forEachLine numbers lines across chunks and notices a missing final newline", async () => {
  const dir = tempDir("lines");
  const long = "x".repeat((1 << 20) + 10);
  const path = join(dir, "a.txt");
  writeFileSync(path, `one\n${long}\nthree`);
  const seen: [number, number][] = [];
  const scan = await forEachLine(path, (line, n) => seen.push([n, line.length]));
  assert.deepEqual(seen, [
    [1, 3],
    [2, long.length],
    [3, 5],
  ]);
  assert.deepEqual(scan, { lines: 3, bytes: 4 + long.length + 1 + 5, endsWithNewline: false });
  writeFileSync(path, "one\ntwo\n");
  assert.deepEqual(await forEachLine(path, () => {}), {
    lines: 2,
    bytes: 8,
    endsWithNewline: true,
  });
});
