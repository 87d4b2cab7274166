import assert from "node:assert/strict";
import { test } from "node:test";
import { embeddedDevices } from "../src/server/devices.js";

test("--device cuda is every visible GPU, a list is those devices, bad lists are refused", () => {
  assert.deepEqual(
    embeddedDevices("cuda", () => 4),
    ["cuda:0", "cuda:1", "cuda:2", "cuda:3"],
  );
  assert.deepEqual(
    embeddedDevices("cuda", () => 1),
    ["cuda"],
  );
  assert.deepEqual(
    embeddedDevices("cuda", () => null),
    ["cuda"],
  );
  assert.deepEqual(
    embeddedDevices("cuda:0,cuda:2", () => 4),
    ["cuda:0", "cuda:2"],
  );
  assert.deepEqual(embeddedDevices("cpu,cpu,cpu"), ["cpu", "cpu", "cpu"]);
  assert.deepEqual(embeddedDevices(""), [""]);
  assert.throws(() => embeddedDevices("cuda,cuda:1"), /"cuda" already means every visible GPU/);
  assert.throws(() => embeddedDevices("cuda:1,cuda:1"), /cuda:1 is listed twice/);
  assert.throws(() => embeddedDevices("gpu0"), /"gpu0" is not cpu, cuda or cuda:N/);
});
