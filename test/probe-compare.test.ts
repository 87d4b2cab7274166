import assert from "node:assert/strict";
import { test } from "node:test";
import { compareCommon } from "../src/checks/probe.js";
import type { Matrix } from "../src/checks/vectors.js";

const m = (rows: number[][]): Matrix => ({
  rows: rows.length,
  dim: 2,
  data: Float32Array.from(rows.flat()),
});

test("probes a server did not take (over its max_text_chars) are left out; the worst probe keeps its number", () => {
  // The first server did not take probe 1 (a zero row); this one does not take probe 2.
  const stored = m([
    [1, 0],
    [0, 0],
    [0, 1],
    [1, 1],
  ]);
  const fresh = m([
    [1, 0],
    [5, 5],
    [0, 0],
    [1, 0.9],
  ]);
  const ok = compareCommon(stored, fresh, new Set([0, 1, 3]), 0.99);
  assert.equal(ok.pass, true);
  assert.equal(ok.worstProbe, 3, "numbered as in PROBE_TEXTS");
  const off = compareCommon(
    stored,
    m([
      [1, 0],
      [0, 0],
      [0, 0],
      [1, -1],
    ]),
    new Set([0, 3]),
    0.99,
  );
  assert.equal(off.pass, false);
  assert.equal(off.worstProbe, 3);
});

test("a zero vector for a probe the server took fails, never counted as skipped", () => {
  const stored = m([
    [1, 0],
    [0, 1],
  ]);
  const result = compareCommon(
    stored,
    m([
      [1, 0],
      [0, 0],
    ]),
    new Set([0, 1]),
    0.5,
  );
  assert.equal(result.pass, false);
  assert.equal(result.worstProbe, 1);
  assert.ok(Number.isNaN(result.worstCosine));
});
