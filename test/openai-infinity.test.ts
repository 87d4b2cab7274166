import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { embedBatch } from "../src/backend/openai/batch.js";
import { OpenAIClient } from "../src/backend/openai/client.js";
import { discoverModel } from "../src/backend/openai/discover.js";
import { INFINITY_SERVED_NAME, type RunningInfinity, startInfinity } from "./infinity.js";

/**
 * The openai backend against a real third-party server: infinity-emb (its own
 * venv, scripts/setup-infinity.sh) serving the offline all-MiniLM-L6-v2.
 */
describe("openai backend against infinity-emb", () => {
  let server: RunningInfinity;
  before(async () => {
    server = await startInfinity();
  });
  after(async () => {
    await server?.stop();
  });

  test("what infinity says of itself: served name, base64, dimensions cut without renormalizing", async () => {
    const client = new OpenAIClient({ baseUrl: server.url, apiKey: "", timeoutMs: 60_000 });
    assert.deepEqual(await client.models(), [INFINITY_SERVED_NAME]);
    const full = await discoverModel(client, "all-MiniLM-L6-v2-by-another-name", 0);
    assert.equal(full.name, INFINITY_SERVED_NAME);
    assert.equal(full.encoding, "base64");
    assert.equal(full.dim, 384);
    assert.equal(full.normalized, true);
    const cut = await discoverModel(client, INFINITY_SERVED_NAME, 128);
    assert.equal(cut.serverDimensions, true);
    assert.equal(cut.dim, 128);
    // infinity cuts after normalizing: the first 128 of a unit vector are shorter.
    assert.equal(cut.normalized, false);
    const settings = {
      model: INFINITY_SERVED_NAME,
      serverDimensions: 0,
      localDimensions: 0,
      normalize: false,
      maxInputs: 2048,
      maxTokens: 300_000,
    };
    const texts = ["The first text.", "A second, longer text about embeddings."];
    const b64 = await embedBatch(client, texts, [5, 9], { ...settings, encoding: "base64" });
    const flt = await embedBatch(client, texts, [5, 9], { ...settings, encoding: "float" });
    assert.equal(b64.dim, 384);
    // JSON floats are float32 printed as doubles: both forms are the same numbers.
    assert.deepEqual(b64.vectors, flt.vectors);
  });
});
