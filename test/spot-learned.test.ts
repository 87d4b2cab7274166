import assert from "node:assert/strict";
import { test } from "node:test";
import type { Vectors } from "../src/backend/types.js";
import type { Ledger } from "../src/checkpoint/ledger.js";
import type { RowReader } from "../src/input/rows.js";
import type { ModelRun } from "../src/run/model-run.js";
import { SpotSource } from "../src/run/spots.js";

test("a learned known row is that row's vector alone, also from an answer held in a Node Buffer", async () => {
  const dim = 4;
  const rows = 3;
  // As gRPC hands answers over: a Buffer that is a view into a larger message.
  const message = Buffer.alloc(4096);
  const at = 1024;
  const floats = Float32Array.from({ length: rows * dim }, (_, i) => i + 1);
  message.set(new Uint8Array(floats.buffer), at);
  const answer: Vectors = {
    rows,
    dim,
    data: message.subarray(at, at + rows * dim * 4),
    tokenCounts: [5, 6, 7],
    truncated: [false, false, false],
  };
  const ledger = { probes: () => null } as unknown as Ledger;
  const reader = { texts: (ids: ArrayLike<number>) => Array.from(ids, (r) => `row ${r}`) };
  const runs = new Map([["m", { store: null } as unknown as ModelRun]]);
  const source = await SpotSource.open(
    { rate: 0.005, tolerance: 0.999, timeoutMs: 1000, maxHeldRows: 0 },
    runs,
    ledger,
    reader as unknown as RowReader,
    { lineNumbers: Uint32Array.from([10, 11, 12]) },
    () => null,
  );
  const item = {
    alias: "m",
    batchNo: 0,
    rows: Uint32Array.from([0, 1, 2]),
    priorAttempts: 0,
  };
  source.learned(item, answer, "a:1");
  const [known] = source.checkBatch("m", "b:1");
  assert.ok(known, "the row another server may be checked with");
  assert.equal(known.label, "input line 11");
  assert.deepEqual(Array.from(known.vector), [5, 6, 7, 8], "row 1's vector, and only it");
  assert.deepEqual(source.checkBatch("m", "a:1"), [], "never the server's own row");
});
