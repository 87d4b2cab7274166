import assert from "node:assert/strict";
import { test } from "node:test";
import { dnsTargets, ResolveLoop } from "../src/run/resolve-loop.js";

test("re-resolving a dns:/// name joins new addresses and drains vanished ones; a failed or empty answer changes nothing", async () => {
  let answer: string[] | Error = ["127.0.0.2"];
  const events: string[] = [];
  const notes: string[] = [];
  const loop = new ResolveLoop(
    dnsTargets(["dns:///pods.example:50051", "10.0.0.9:50051"]),
    ["127.0.0.2:50051"],
    async (host) => {
      assert.equal(host, "pods.example");
      if (answer instanceof Error) throw answer;
      return answer;
    },
    1000,
    {
      join: (address, authority) => events.push(`join ${address} ${authority}`),
      leave: (address) => events.push(`leave ${address}`),
      note: (line) => notes.push(line),
    },
  );
  await loop.tick();
  assert.deepEqual(events, [], "the same answer: nothing changes");
  answer = ["127.0.0.3", "127.0.0.2"];
  await loop.tick();
  assert.deepEqual(events, ["join 127.0.0.3:50051 pods.example"]);
  answer = Object.assign(new Error("timeout"), { code: "ETIMEOUT" });
  await loop.tick();
  answer = [];
  await loop.tick();
  assert.equal(events.length, 1, "a DNS failure or an empty answer drains nobody");
  assert.match(
    notes.join("\n"),
    /cannot resolve pods\.example again \(ETIMEOUT\); keeping its servers/,
  );
  answer = ["127.0.0.3"];
  await loop.tick();
  assert.deepEqual(events.slice(1), ["leave 127.0.0.2:50051"]);
  assert.deepEqual(
    loop.changes.map((c) => `${c.change} ${c.target}`),
    ["joined 127.0.0.3:50051", "left 127.0.0.2:50051"],
  );
});
