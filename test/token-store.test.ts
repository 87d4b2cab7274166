import assert from "node:assert/strict";
import { existsSync, readdirSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { planBatches } from "../src/plan/planner.js";
import { removeTokenStores, TokenStore, tokenStorePath } from "../src/plan/tokens.js";
import { tempDir } from "./helpers.js";

function tokenIds(rows: number[][], truncated: boolean[], misalign = false) {
  const flat = Uint32Array.from(rows.flat());
  const bytes = Buffer.from(flat.buffer);
  // A protobuf bytes field may start anywhere in its message's buffer.
  const ids = misalign ? Buffer.concat([Buffer.alloc(1), bytes]).subarray(1) : bytes;
  return { ids, lengths: rows.map((r) => r.length), truncated };
}

function rowsOf(ids: Uint8Array, lengths: readonly number[]): number[][] {
  const flat = new Uint32Array(ids.buffer.slice(ids.byteOffset, ids.byteOffset + ids.byteLength));
  let at = 0;
  return lengths.map((n) => {
    const row = Array.from(flat.subarray(at, at + n));
    at += n;
    return row;
  });
}

test("the token store gives back every row's ids, narrow and wide, in any order", () => {
  const dir = tempDir("token-store");
  const path = tokenStorePath(dir, "model-a");
  const store = TokenStore.create(path, 6);
  const rows = [
    [101, 7592, 102],
    [101, 70_000, 5, 102], // an id over 65535: stored wide
    [101, 102],
    [101, 65_535, 1, 2, 3, 102],
    [101, 3, 102],
    [4_000_000_000, 1],
  ];
  const truncated = [false, true, false, true, false, false];
  store.add([4, 0, 1], tokenIds([rows[4], rows[0], rows[1]] as number[][], [false, false, true]));
  store.add(
    [5, 3, 2],
    tokenIds([rows[5], rows[3], rows[2]] as number[][], [false, true, false], true),
  );
  assert.ok(store.holds([0, 1, 2, 3, 4, 5]));
  const order = [3, 1, 5, 0, 2, 4];
  const batch = store.batch(order);
  assert.deepEqual(
    batch.lengths,
    order.map((r) => (rows[r] as number[]).length),
  );
  assert.deepEqual(
    batch.truncated,
    order.map((r) => truncated[r]),
  );
  assert.deepEqual(
    rowsOf(batch.ids, batch.lengths),
    order.map((r) => rows[r]),
  );
  store.remove();
  assert.equal(existsSync(path), false);
});

test("a store holds only the rows it was given; stale stores are removed; links are refused", () => {
  const dir = tempDir("token-store-partial");
  const store = TokenStore.create(tokenStorePath(dir, "m"), 3);
  store.add([1], tokenIds([[1, 2]], [false]));
  assert.equal(store.holds([1]), true);
  assert.equal(store.holds([0, 1]), false);
  assert.throws(() => store.add([0, 2], tokenIds([[1, 2]], [false])), /ids of 1 texts for 2/);
  writeFileSync(join(dir, "keep.bin"), "");
  removeTokenStores(dir); // as a new run does: a killed run's store is useless
  assert.deepEqual(readdirSync(dir), ["keep.bin"]);
  store.remove();
  symlinkSync(join(dir, "keep.bin"), tokenStorePath(dir, "linked"));
  assert.throws(() => TokenStore.create(tokenStorePath(dir, "linked"), 1));
});

test("batches are cut by bytes when a row's bytes would overflow the message", () => {
  const lengths = Uint32Array.from({ length: 100 }, () => 256);
  const rowBytes = Uint32Array.from({ length: 100 }, (_, i) => 300_000 + i);
  const plan = planBatches(lengths, {
    batchSize: 64,
    maxBatchTokens: 0,
    maxBatchBytes: 1_000_000,
    rowBytes,
  });
  for (const batch of plan.batches) {
    const bytes = Array.from(batch.rows, (r) => rowBytes[r] ?? 0).reduce((a, b) => a + b, 0);
    assert.ok(bytes <= 1_000_000 || batch.rows.length === 1, `batch ${batch.batchNo}: ${bytes}`);
  }
  assert.equal(plan.batches.length, 34); // 3 rows of ~300 kB a batch
  const alone = planBatches(lengths, {
    batchSize: 64,
    maxBatchTokens: 0,
    maxBatchBytes: 1000,
    rowBytes,
  });
  assert.equal(alone.batches.length, 100); // a row over the cap goes alone
  const uncapped = planBatches(lengths, { batchSize: 64, maxBatchTokens: 0 });
  assert.equal(uncapped.batches.length, 2);
});
